/**
 * Build a worker's batch for one phase from sample ids. Noise and dropout masks are drawn per
 * sample from (seed, epoch, sample id, phase), so the union of N workers' batches is exactly the
 * batch one worker would build from the union of their ids.
 */
import type { Batch } from './gan.js';
import { type ModelConfig, type Net, isConditional } from './model.js';
import { bytesToUnit } from '../data/pixels.js';
import { Rng, Stream } from './rng.js';

const phaseCode = (p: Net): number => (p === 'D' ? 0 : 1);

/** Images of the samples a worker holds, addressed by global sample id. */
export interface SampleSource {
  /** 784 bytes (0..255) of sample `id`. */
  image(id: number): Uint8Array;
  label(id: number): number;
}

export interface BatchKey {
  seed: number;
  epoch: number;
  phase: Net;
}

export function buildBatch(cfg: ModelConfig, key: BatchKey, ids: ArrayLike<number>, src: SampleSource | null): Batch {
  const n = ids.length;
  const { noiseDim, imageDim } = cfg;
  const noise = new Float32Array(n * noiseDim);
  const labels = new Uint8Array(n);
  const needReal = key.phase === 'D';
  const real = needReal ? new Float32Array(n * imageDim) : undefined;
  const p = cfg.dropout;
  const scale = p > 0 ? 1 / (1 - p) : 1;
  const masksFake = p > 0 ? cfg.dHidden.map((w) => new Float32Array(n * w)) : undefined;
  const masksReal = p > 0 && needReal ? cfg.dHidden.map((w) => new Float32Array(n * w)) : undefined;
  const pc = phaseCode(key.phase);

  for (let i = 0; i < n; i++) {
    const id = ids[i]!;
    if (src) labels[i] = src.label(id);
    const zr = new Rng(key.seed, Stream.noise, key.epoch, id, pc);
    for (let k = 0; k < noiseDim; k++) noise[i * noiseDim + k] = zr.normal();
    if (real && src) {
      const img = src.image(id);
      const off = i * imageDim;
      bytesToUnit(img, 0, real, off, imageDim);
    }
    if (masksFake || masksReal) {
      const mr = new Rng(key.seed, Stream.dropout, key.epoch, id, pc);
      for (const masks of [masksReal, masksFake]) {
        if (!masks) continue;
        masks.forEach((m, layer) => {
          const w = cfg.dHidden[layer]!;
          for (let k = 0; k < w; k++) m[i * w + k] = mr.uniform() < p ? 0 : scale;
        });
      }
    }
  }
  return { n, real, labels: isConditional(cfg) ? labels : undefined, noise, masksReal, masksFake };
}
