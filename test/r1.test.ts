/**
 * The R1 penalty of the unconditional GAN's defaults (Mescheder et al. 2018): D's loss gains
 * gamma/2 times the mean over real rows of |d logit / d x|^2. Checked against the same sum
 * written out in plain JavaScript, and its gradient (a second derivative through D) against
 * finite differences, on the native and wasm backends.
 */
import { describe, expect, it } from 'vitest';
import { GanModel } from '../shared/compute/gan.js';
import { buildBatch } from '../shared/compute/batch.js';
import { initWeights, modelConfigProblem, modelSignature } from '../shared/compute/model.js';
import { initBackend } from '../shared/backend/choose.js';
import { centralDifference, maxRelDiff, smallData, startCluster, tinyConfig, tinyModel } from './helpers.js';

const GAMMA = 10;
const plain = { ...tinyModel, dropout: 0 };
const withR1 = { ...plain, r1: GAMMA };

/** The mean over rows of |d logit / d x|^2 of a dense LeakyReLU net, in double precision. */
function meanInputGradNorm(w: Float32Array, widths: number[], x: Float32Array, n: number, leak: number): number {
  let total = 0;
  for (let r = 0; r < n; r++) {
    // Forward, keeping each hidden layer's slope (1 or leak) for the backward pass.
    let h = Float64Array.from(x.subarray(r * widths[0]!, (r + 1) * widths[0]!));
    const slopes: Float64Array[] = [];
    const offsets: number[] = [];
    let off = 0;
    for (let l = 0; l + 1 < widths.length; l++) {
      const [fi, fo] = [widths[l]!, widths[l + 1]!];
      offsets.push(off);
      const next = new Float64Array(fo);
      const slope = new Float64Array(fo).fill(1);
      for (let j = 0; j < fo; j++) {
        let s = w[off + fi * fo + j]!;
        for (let i = 0; i < fi; i++) s += h[i]! * w[off + i * fo + j]!;
        if (l + 2 < widths.length && s < 0) slope[j] = leak;
        next[j] = s * slope[j]!;
      }
      slopes.push(slope);
      off += fi * fo + fo;
      h = next;
    }
    // Backward from the logit (the output layer's only unit) to the input.
    let g = Float64Array.of(1);
    for (let l = widths.length - 2; l >= 0; l--) {
      const [fi, fo] = [widths[l]!, widths[l + 1]!];
      const prev = new Float64Array(fi);
      for (let i = 0; i < fi; i++) {
        let s = 0;
        for (let j = 0; j < fo; j++) s += w[offsets[l]! + i * fo + j]! * g[j]! * slopes[l]![j]!;
        prev[i] = s;
      }
      g = prev;
    }
    total += g.reduce((a, v) => a + v * v, 0);
  }
  return total / n;
}

describe('the R1 penalty', () => {
  it('is part of the model configuration: validated, and in the signature the handshake compares', () => {
    expect(modelConfigProblem(withR1)).toBeNull();
    expect(modelConfigProblem({ ...plain, r1: -1 })).toMatch(/r1/);
    expect(modelConfigProblem({ ...plain, r1: Number.NaN })).toMatch(/r1/);
    expect(modelSignature(withR1)).not.toBe(modelSignature(plain));
    expect(modelSignature({ ...plain, r1: 0 })).toBe(modelSignature(plain));
  });

  it.each(['native', 'wasm'] as const)('adds gamma/2 mean |dD/dx|^2 on the real rows to D\'s loss, and its gradient matches finite differences (%s backend)', async (backend) => {
    await initBackend(backend, { log: () => {} });
    const a = new GanModel(plain);
    const b = new GanModel(withR1);
    const wG = initWeights(a.g, 3);
    const wD = initWeights(a.d, 3);
    for (const m of [a, b]) {
      m.setWeights('G', wG);
      m.setWeights('D', wD);
    }
    const data = smallData(5);
    const src = { image: (id: number) => data.images.subarray(id * 784, id * 784 + 784), label: (id: number) => data.labels[id]! };
    const batch = buildBatch(plain, { seed: 4, epoch: 0, phase: 'D' }, [0, 1, 2, 3, 4], src);
    const penalty = (w: Float32Array) => (GAMMA / 2) * meanInputGradNorm(w, a.d.widths, batch.real!, batch.n, plain.leak);

    const without = a.dStep(batch);
    const gradsWithout = without.grads.slice();
    const withPenalty = b.dStep(batch);
    expect(penalty(wD)).toBeGreaterThan(1e-3);
    expect(withPenalty.loss - without.loss).toBeCloseTo(penalty(wD), 4);
    // The penalty's gradient is the difference of the two D gradients; central differences of
    // the plain sum on weights of every layer (the output layer's bias has none: 0).
    const layers = a.d.params;
    for (const p of [layers[0]!, layers[1]!, layers[2]!, layers.at(-2)!, layers.at(-1)!]) {
      for (const k of [0, Math.floor(p.size / 2), p.size - 1]) {
        const i = p.offset + k;
        const fd = centralDifference(penalty, wD, i, 1e-3);
        const got = withPenalty.grads[i]! - gradsWithout[i]!;
        expect(Math.abs(got - fd), `${p.name}[${k}]`).toBeLessThan(2e-4 + 2e-2 * Math.abs(fd));
      }
    }
    a.dispose();
    b.dispose();
  });

  it.each([
    ['acgan', { ...plain, kind: 'acgan' as const }],
    ['cgan (projection, matching-aware)', { ...plain, kind: 'cgan' as const, dLabel: 'projection' as const, matchingAware: true }],
  ])('applies to the %s discriminator too: the same penalty on its real/fake logit', async (_name, model) => {
    await initBackend('native', { log: () => {} });
    const a = new GanModel(model);
    const b = new GanModel({ ...model, r1: GAMMA });
    for (const m of [a, b]) {
      m.setWeights('G', initWeights(a.g, 6));
      m.setWeights('D', initWeights(a.d, 6));
    }
    const data = smallData(4);
    const src = { image: (id: number) => data.images.subarray(id * 784, id * 784 + 784), label: (id: number) => data.labels[id]! };
    const batch = buildBatch(model, { seed: 4, epoch: 0, phase: 'D' }, [0, 1, 2, 3], src);
    const without = a.dStep(batch).loss;
    const withPenalty = b.dStep(batch);
    expect(withPenalty.loss - without).toBeGreaterThan(1e-4);
    expect(withPenalty.grads.every(Number.isFinite)).toBe(true);
    a.dispose();
    b.dispose();
  });

  it('keeps data parallelism: two workers at batch b/2 give the weights of one worker at batch b; the same seed the same bits', async () => {
    const data = smallData(200);
    const run = async (workers: number) => (await startCluster(tinyConfig({ model: withR1, workers, batchSize: 20 / workers, maxRounds: 5 }), data)).finish();
    const one = await run(1);
    const two = await run(2);
    const again = await run(2);
    const noR1 = await (await startCluster(tinyConfig({ model: plain, workers: 1, batchSize: 20, maxRounds: 5 }), data)).finish();
    for (const net of ['D', 'G'] as const) {
      expect(maxRelDiff(one.model.weights[net], two.model.weights[net])).toBeLessThan(1e-5);
      expect(Buffer.from(two.model.weights[net].buffer).equals(Buffer.from(again.model.weights[net].buffer))).toBe(true);
    }
    // The penalty changed D's steps.
    expect(maxRelDiff(noR1.model.weights.D, one.model.weights.D)).toBeGreaterThan(1e-5);
  }, 90_000);
});
