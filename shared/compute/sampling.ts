/**
 * Sampling a generator outside training: the sample grids, `generate` and the evaluation all draw
 * seeded N(0, 1) noise and run G's weights forward on it with a model of their own.
 */
import { GanModel } from './gan.js';
import type { ModelConfig } from './model.js';
import { Stream, seededNoise } from './rng.js';

/**
 * Images (n x imageDim, in [-1, 1]) that G with `gWeights` makes from `noise` (n x noiseDim) and,
 * for conditional models, the digit asked of each row. Loads and disposes its own model.
 */
export function sampleGenerator(cfg: ModelConfig, gWeights: Float32Array, noise: Float32Array, labels?: Uint8Array): Float32Array {
  const g = new GanModel(cfg);
  try {
    g.setWeights('G', gWeights);
    return g.generate(noise, labels);
  } finally {
    g.dispose();
  }
}

/** Fixed noise (and labels: row r shows digit r % 10) for the sample grids of a run. */
export function fixedNoise(cfg: ModelConfig, seed: number, count: number): { noise: Float32Array; labels: Uint8Array } {
  const noise = seededNoise(count * cfg.noiseDim, seed, Stream.fixedNoise);
  const side = Math.round(Math.sqrt(count));
  const labels = new Uint8Array(count);
  for (let i = 0; i < count; i++) labels[i] = Math.floor(i / side) % cfg.numClasses;
  return { noise, labels };
}
