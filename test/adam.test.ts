import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
// Registers the gradient functions and the optimizers' kernels.
import '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-cpu';
import { type AdamConfig, adamApply, adamHyper, adamState, adamStep, weightedAverage } from '../coordinator/optimizer.js';
import { nativeMath } from '../shared/backend/addon.js';

beforeAll(async () => {
  await tf.setBackend('cpu');
  await tf.ready();
});

/** Deterministic pseudo-random floats in [-scale, scale). */
function rand(n: number, seed: number, scale = 1): Float32Array {
  let s = seed >>> 0 || 1;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    out[i] = ((s >>> 0) / 2 ** 32 * 2 - 1) * scale;
  }
  return out;
}

/** Largest difference relative to the largest magnitude of each parameter tensor. */
function relDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  shapes.forEach((_, p) => {
    let scale = 1e-30;
    let diff = 0;
    for (let i = offsets[p]!; i < offsets[p]! + sizes[p]!; i++) {
      scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!));
      diff = Math.max(diff, Math.abs(a[i]! - b[i]!));
    }
    worst = Math.max(worst, diff / scale);
  });
  return worst;
}

/** Several parameter tensors packed into one flat vector, as model.ts lays them out. */
const shapes = [[7, 5], [5], [5, 3], [3], [11]];
const sizes = shapes.map((s) => s.reduce((a, b) => a * b, 1));
const offsets = sizes.map((_, i) => sizes.slice(0, i).reduce((a, b) => a + b, 0));
const total = sizes.reduce((a, b) => a + b, 0);

function runBoth(c: AdamConfig, steps: number, seed: number): { ours: Float32Array; theirs: Float32Array; w0: Float32Array } {
  const w0 = rand(total, seed);
  const ours = w0.slice();
  const state = adamState(total);
  const vars = shapes.map((shape, i) => tf.variable(tf.tensor(w0.subarray(offsets[i]!, offsets[i]! + sizes[i]!), shape), true, `adam_test_${seed}_${i}`));
  const opt = tf.train.adam(c.lr, c.beta1, c.beta2, c.epsilon);
  try {
    for (let t = 0; t < steps; t++) {
      // Gradients of very different magnitudes, some exactly zero, changing sign from step to step.
      const g = rand(total, seed * 1000 + t + 1, 10 ** ((t % 5) - 2));
      for (let i = 0; i < total; i += 17) g[i] = 0;
      adamStep(ours, g, state, c);
      const named = vars.map((v, i) => ({ name: v.name, tensor: tf.tensor(g.subarray(offsets[i]!, offsets[i]! + sizes[i]!), shapes[i]!) }));
      opt.applyGradients(named);
      for (const { tensor } of named) tensor.dispose();
    }
    expect(state.t).toBe(steps);
    const theirs = new Float32Array(total);
    vars.forEach((v, i) => theirs.set(v.dataSync() as Float32Array, offsets[i]!));
    return { ours, theirs, w0 };
  } finally {
    opt.dispose();
    for (const v of vars) v.dispose();
  }
}

describe('adamStep', () => {
  const configs: [string, AdamConfig][] = [
    ['the run defaults (lr 2e-4, beta1 0.5)', { lr: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 }],
    ['Adam defaults with a large lr', { lr: 0.05, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 }],
    ['a large epsilon', { lr: 0.01, beta1: 0.8, beta2: 0.99, epsilon: 1e-2 }],
  ];
  for (const [name, c] of configs) {
    it(`matches tf.train.adam over 10 steps on several tensors: ${name}`, () => {
      const { ours, theirs, w0 } = runBoth(c, 10, 3);
      expect(relDiff(ours, theirs)).toBeLessThan(1e-6);
      // The updates themselves agree, not only the (much larger) weights they were added to.
      const dOurs = ours.map((w, i) => w - w0[i]!);
      const dTheirs = theirs.map((w, i) => w - w0[i]!);
      let maxDelta = 0;
      for (const d of dTheirs) maxDelta = Math.max(maxDelta, Math.abs(d));
      expect(maxDelta).toBeGreaterThan(c.lr);
      for (let i = 0; i < total; i++) expect(Math.abs(dOurs[i]! - dTheirs[i]!)).toBeLessThan(maxDelta * 1e-3);
    });
  }

  it('applies bias correction: the first step moves each weight by about lr * sign(g)', () => {
    const w = new Float32Array([1, 1, 1]);
    const s = adamState(3);
    adamStep(w, new Float32Array([0.5, -3, 0]), s, { lr: 0.1, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });
    expect(w[0]).toBeCloseTo(0.9, 5);
    expect(w[1]).toBeCloseTo(1.1, 5);
    expect(w[2]).toBe(1);
  });

  it('keeps its moments in the state it is given', () => {
    const w = new Float32Array([0, 0]);
    const s = adamState(2);
    const c = { lr: 0.1, beta1: 0.5, beta2: 0.5, epsilon: 1e-8 };
    adamStep(w, new Float32Array([2, 0]), s, c);
    expect(Array.from(s.m)).toEqual([1, 0]);
    expect(Array.from(s.v)).toEqual([2, 0]);
    const again = adamState(2);
    const w2 = new Float32Array([0, 0]);
    adamStep(w2, new Float32Array([2, 0]), again, c);
    adamStep(w, new Float32Array([2, 0]), s, c);
    adamStep(w2, new Float32Array([2, 0]), again, c);
    expect(Array.from(w)).toEqual(Array.from(w2));
  });

  it('steps a gradient holding -0 as its average of one (where a -0 first moment would keep its sign), in JavaScript and in the addon', () => {
    // -0 against +0 only shows where the first moment is -0 too (a tiny negative moment underflowed).
    const n = 64;
    const w = rand(n, 3);
    w[0] = 0;
    w[1] = -0;
    const g = new Float32Array(n).fill(-0);
    for (let i = n / 2; i < n; i++) g[i] = rand(1, i + 7)[0]!;
    const m = new Float32Array(n).fill(-0);
    const v = new Float32Array(n);
    const averaged = new Float32Array(n);
    weightedAverage(averaged, [{ count: 5, data: g }], null);
    const h = adamHyper(4, { lr: 1e-3, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });
    const step = (grad: Float32Array, math: ReturnType<typeof nativeMath>) => {
      const out = { w: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n) };
      adamApply(w, grad, m, v, h, out, math);
      return new Uint32Array([...out.w, ...out.m, ...out.v].map((x) => new Uint32Array(new Float32Array([x]).buffer)[0]!));
    };
    const reference = step(averaged, null);
    expect(Object.is(averaged[0], 0)).toBe(true);
    expect([...step(g, null)]).toEqual([...reference]);
    const math = nativeMath();
    if (math) {
      expect([...step(g, math)]).toEqual([...reference]);
      expect([...step(averaged, math)]).toEqual([...reference]);
    }
  });

  it('refuses arrays of different sizes', () => {
    expect(() => adamStep(new Float32Array(3), new Float32Array(2), adamState(3), { lr: 1, beta1: 0.5, beta2: 0.9, epsilon: 1e-8 })).toThrow(/sizes differ/);
    expect(() => adamStep(new Float32Array(3), new Float32Array(3), adamState(4), { lr: 1, beta1: 0.5, beta2: 0.9, epsilon: 1e-8 })).toThrow(/sizes differ/);
  });
});

describe('weightedAverage', () => {
  it('weights each part by its sample count and returns the total count', () => {
    const out = new Float32Array(2);
    const n = weightedAverage(out, [
      { count: 1, data: new Float32Array([1, 10]) },
      { count: 3, data: new Float32Array([5, -2]) },
    ]);
    expect(n).toBe(4);
    expect(out[0]).toBeCloseTo((1 * 1 + 3 * 5) / 4, 6);
    expect(out[1]).toBeCloseTo((1 * 10 + 3 * -2) / 4, 6);
  });

  it('overwrites what the output held; zero samples give zeros', () => {
    const out = new Float32Array([7, 7]);
    expect(weightedAverage(out, [{ count: 2, data: new Float32Array([1, 1]) }])).toBe(2);
    expect(Array.from(out)).toEqual([1, 1]);
    expect(weightedAverage(out, [])).toBe(0);
    expect(Array.from(out)).toEqual([0, 0]);
  });

  it('refuses a part of the wrong size', () => {
    expect(() => weightedAverage(new Float32Array(2), [{ count: 1, data: new Float32Array(3) }])).toThrow(/size differs/);
  });

  it('sums in the order given, rounding to float32 after each part; reordering the parts can change the result', () => {
    // Equal counts: each part is scaled by 1/3. 1e8/3 absorbs the small part when it comes second.
    const a = { count: 1, data: new Float32Array([1e8]) };
    const b = { count: 1, data: new Float32Array([1]) };
    const c = { count: 1, data: new Float32Array([-1e8]) };
    const manual = (parts: (typeof a)[]) => {
      const total = parts.reduce((x, p) => x + p.count, 0);
      let acc = 0;
      for (const p of parts) acc = Math.fround(acc + (p.count / total) * p.data[0]!);
      return acc;
    };
    const out = new Float32Array(1);
    weightedAverage(out, [a, b, c]);
    const abc = out[0]!;
    weightedAverage(out, [a, c, b]);
    const acb = out[0]!;
    expect(abc).toBe(manual([a, b, c]));
    expect(acb).toBe(manual([a, c, b]));
    expect(abc).not.toBe(acb);
    // The same parts in the same order always give the same bits: the coordinator relies on that, passing worker-id order.
    weightedAverage(out, [a, b, c]);
    expect(out[0]).toBe(abc);
  });

  it('matches the manual float32 fold on random data with uneven counts', () => {
    const parts = [3, 50, 1, 17].map((count, i) => ({ count, data: rand(500, 40 + i, 10 ** i) }));
    const out = new Float32Array(500);
    weightedAverage(out, parts);
    const total = parts.reduce((x, p) => x + p.count, 0);
    for (let j = 0; j < 500; j++) {
      let acc = 0;
      for (const p of parts) acc = Math.fround(acc + (p.count / total) * p.data[j]!);
      expect(out[j]).toBe(acc);
    }
  });
});
