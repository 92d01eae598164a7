import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// Registers the gradient functions (tfjs-core alone ships them only as ES modules).
import '@tensorflow/tfjs';
import { hasWasmFastMatMul, registerWasmFastMatMul, unregisterWasmFastMatMul } from '../shared/backend/wasm-kernels.js';
import { values } from './helpers.js';

interface Result {
  shape: number[];
  data: Float32Array;
}

type Fn = (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** `f` on `backend` with fresh float inputs of `shapes` (seeded by position); every output as data. */
async function runOn(backend: string, shapes: number[][], f: Fn, seed = 1): Promise<Result[]> {
  await tf.setBackend(backend);
  const before = tf.memory().numTensors;
  // Read the data outside tidy: tidy walks its result, element by element for typed arrays.
  const ys = tf.tidy(() => {
    const xs = shapes.map((s, i) => tf.tensor(values(tf.util.sizeFromShape(s), seed * 7919 + i * 104729), s, 'float32'));
    const y = f(...xs);
    return Array.isArray(y) ? y : [y];
  });
  const out = ys.map((y) => ({ shape: y.shape, data: Float32Array.from(y.dataSync() as Float32Array) }));
  tf.dispose(ys);
  expect(tf.memory().numTensors).toBe(before);
  return out;
}

/** Largest absolute difference over the largest magnitude of the reference. */
function maxRelErr(got: Float32Array, want: Float32Array): number {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  return worst / Math.max(scale, 1e-30);
}

/** `f` on wasm (fast path registered) against `f` on cpu, output by output. */
async function expectLikeCpu(label: string, shapes: number[][], f: Fn, tol = 1e-5, backend = 'wasm'): Promise<void> {
  const want = await runOn('cpu', shapes, f);
  const got = await runOn(backend, shapes, f);
  expect(got.length, label).toBe(want.length);
  want.forEach((w, i) => {
    const g = got[i]!;
    expect(g.shape, `${label} output ${i}`).toEqual(w.shape);
    expect(g.data.every(Number.isFinite), `${label} output ${i} finite`).toBe(true);
    expect(maxRelErr(g.data, w.data), `${label} output ${i}`).toBeLessThanOrEqual(tol);
  });
}

const COMBOS = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;
const comboName = (ta: boolean, tb: boolean) => `${ta ? 'A^T' : 'A'}·${tb ? 'B^T' : 'B'}`;

/** Stored shapes of A and B for op(A) (m x k) times op(B) (k x n), with optional batch dims. */
function stored(m: number, k: number, n: number, ta: boolean, tb: boolean, outerA: number[] = [], outerB: number[] = []): number[][] {
  return [
    [...outerA, ...(ta ? [k, m] : [m, k])],
    [...outerB, ...(tb ? [n, k] : [k, n])],
  ];
}

/**
 * Every product the seed MLP GAN computes, as op(A) (m x k) times op(B) (k x n): per dense layer
 * X (rows x in), W (in x out): forward X·W, input gradient dY·W^T, weight gradient X^T·dY.
 */
function seedProducts(): { m: number; k: number; n: number; what: string }[] {
  const nets = [
    { name: 'D', rows: 200, widths: [784, 1024, 512, 256, 1] },
    { name: 'D', rows: 100, widths: [784, 1024, 512, 256, 1] },
    { name: 'G', rows: 100, widths: [100, 256, 512, 1024, 784] },
  ];
  const seen = new Map<string, { m: number; k: number; n: number; what: string }>();
  for (const { name, rows, widths } of nets) {
    for (let i = 0; i + 1 < widths.length; i++) {
      const [fi, fo] = [widths[i]!, widths[i + 1]!];
      const layer = `${name}${rows} ${fi}->${fo}`;
      for (const [m, k, n, role] of [
        [rows, fi, fo, 'X·W'],
        [rows, fo, fi, 'dY·W^T'],
        [fi, rows, fo, 'X^T·dY'],
      ] as const) {
        const key = `${m}x${k}x${n}`;
        if (!seen.has(key)) seen.set(key, { m, k, n, what: `${layer} ${role}` });
      }
    }
  }
  return [...seen.values()];
}

let origBmm: tf.KernelFunc;
let origFused: tf.KernelFunc;
/** What wasm's own product kernels were asked on the spy backend: [kernel, transposeA, transposeB, a.shape, b.shape]. */
const spyLog: [string, boolean, boolean, number[], number[]][] = [];
const SPY = 'wasm-fast-spy';

beforeAll(async () => {
  // A second wasm-based backend (as the project's 'native' is): wasm's kernels, with the two
  // product kernels recording what they are asked. Set up before the fast path exists anywhere.
  const factory = tf.findBackendFactory('wasm');
  if (!factory) throw new Error('wasm backend not registered');
  tf.registerBackend(SPY, factory, 0);
  for (const k of tf.getKernelsForBackend('wasm')) {
    const spied =
      k.kernelName === tf.BatchMatMul || k.kernelName === tf._FusedMatMul
        ? ((args: Parameters<tf.KernelFunc>[0]) => {
            const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
            const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
            spyLog.push([k.kernelName, !!transposeA, !!transposeB, [...a.shape], [...b.shape]]);
            return k.kernelFunc(args);
          }) as tf.KernelFunc
        : k.kernelFunc;
    tf.registerKernel({ ...k, backendName: SPY, kernelFunc: spied });
  }
  origBmm = tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc;
  origFused = tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc;
  registerWasmFastMatMul('wasm');
  await tf.setBackend('wasm');
});

afterAll(async () => {
  await tf.setBackend('cpu');
  tf.removeBackend(SPY);
});

describe('registration', () => {
  it('replaces the BatchMatMul and _FusedMatMul kernels of the named backend', () => {
    expect(hasWasmFastMatMul('wasm')).toBe(true);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).not.toBe(origBmm);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).not.toBe(origFused);
    // Keeps wasm's setup, which binds the wasm function the original kernel calls.
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').setupFunc).toBeTypeOf('function');
  });

  it('is idempotent: a second call neither re-wraps nor changes results', async () => {
    const bmm = tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc;
    const fused = tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc;
    registerWasmFastMatMul('wasm');
    registerWasmFastMatMul();
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(bmm);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).toBe(fused);
    await expectLikeCpu('after re-registering', stored(9, 7, 5, true, true), (a, b) => tf.matMul(a!, b!, true, true));
  });

  it('can be undone, putting back the exact original kernels', () => {
    unregisterWasmFastMatMul('wasm');
    expect(hasWasmFastMatMul('wasm')).toBe(false);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(origBmm);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).toBe(origFused);
    registerWasmFastMatMul('wasm');
    expect(hasWasmFastMatMul('wasm')).toBe(true);
  });

  it('refuses a backend without wasm kernels', () => {
    expect(() => registerWasmFastMatMul('no-such-backend')).toThrow(/no Transpose kernel/);
  });

  it('imports nothing from Node, so it runs in a browser', () => {
    const src = readFileSync(new URL('../shared/backend/wasm-kernels.ts', import.meta.url), 'utf8');
    const imports = [...src.matchAll(/^\s*import\s[^;]*?from\s+'([^']+)'/gm)].map((m) => m[1]);
    expect(imports).toEqual(['@tensorflow/tfjs-core']);
    expect(src).not.toMatch(/\brequire\(|\bprocess\.|\bBuffer\b/);
  });
});

/** The transpose of a rows x cols row-major matrix. */
function transposed(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = x[i * cols + j]!;
  return out;
}

describe('every product shape of the seed model, in all four transpose combinations', () => {
  for (const { m, k, n, what } of seedProducts()) {
    it(`${m}x${k} · ${k}x${n} (${what}) agrees with cpu within 1e-5`, async () => {
      // The same two matrices in every combination (stored transposed where flagged), so one cpu
      // product is the reference for all four.
      const a = values(m * k, m + 31 * k);
      const b = values(k * n, n + 17 * k);
      const [want] = await runOn('cpu', [], () => tf.matMul(tf.tensor2d(a, [m, k]), tf.tensor2d(b, [k, n])));
      for (const [ta, tb] of COMBOS) {
        const [got] = await runOn('wasm', [], () =>
          tf.matMul(tf.tensor2d(ta ? transposed(a, m, k) : a, ta ? [k, m] : [m, k]), tf.tensor2d(tb ? transposed(b, k, n) : b, tb ? [n, k] : [k, n]), ta, tb),
        );
        expect(got!.shape).toEqual([m, n]);
        expect(maxRelErr(got!.data, want!.data), comboName(ta, tb)).toBeLessThanOrEqual(1e-5);
      }
    });
  }
});

describe('batched products', () => {
  it('rank-3 batches in all transpose combinations agree with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`[4] ${comboName(ta, tb)}`, stored(33, 47, 21, ta, tb, [4], [4]), (a, b) => tf.matMul(a!, b!, ta, tb));
    }
  });

  it('a batch-1 operand broadcasts against a larger batch on either side, transposed or not', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`[1]x[3] ${comboName(ta, tb)}`, stored(13, 17, 11, ta, tb, [1], [3]), (a, b) => tf.matMul(a!, b!, ta, tb));
      await expectLikeCpu(`[3]x[1] ${comboName(ta, tb)}`, stored(13, 17, 11, ta, tb, [3], [1]), (a, b) => tf.matMul(a!, b!, ta, tb));
      await expectLikeCpu(`rank 2 x [3] ${comboName(ta, tb)}`, stored(13, 17, 11, ta, tb, [], [3]), (a, b) => tf.matMul(a!, b!, ta, tb));
      await expectLikeCpu(`[3] x rank 2 ${comboName(ta, tb)}`, stored(13, 17, 11, ta, tb, [3], []), (a, b) => tf.matMul(a!, b!, ta, tb));
    }
  });

  it('rank-4 batches agree with cpu', async () => {
    await expectLikeCpu('[2,3] x [2,3]', stored(6, 5, 4, true, true, [2, 3], [2, 3]), (a, b) => tf.matMul(a!, b!, true, true));
    await expectLikeCpu('[2,3] x [1,1]', stored(6, 5, 4, true, false, [2, 3], [1, 1]), (a, b) => tf.matMul(a!, b!, true, false));
  });

  it('vectors and single rows or columns agree with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      for (const [m, k, n] of [
        [1, 9, 7],
        [9, 1, 7],
        [9, 7, 1],
        [1, 1, 1],
      ] as const) {
        await expectLikeCpu(`${m}x${k}x${n} ${comboName(ta, tb)}`, stored(m, k, n, ta, tb), (a, b) => tf.matMul(a!, b!, ta, tb));
      }
    }
  });
});

describe('_FusedMatMul', () => {
  const ACTS = ['linear', 'relu', 'relu6', 'leakyrelu', 'sigmoid', 'elu'] as const;

  it('bias + leakyrelu with every transpose combination agrees with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`leakyrelu ${comboName(ta, tb)}`, [...stored(200, 256, 64, ta, tb), [64]], (a, b, bias) =>
        tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation: 'leakyrelu', leakyreluAlpha: 0.2 }),
      );
    }
  });

  it('every activation, with a bias, transposed, agrees with cpu', async () => {
    for (const activation of ACTS) {
      for (const [ta, tb] of COMBOS) {
        await expectLikeCpu(`${activation} ${comboName(ta, tb)}`, [...stored(12, 10, 8, ta, tb), [8]], (a, b, bias) =>
          tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation, leakyreluAlpha: 0.3 }),
        );
      }
    }
  });

  it('prelu with per-column and per-element weights agrees with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      for (const w of [[8], [12, 8], [1]]) {
        await expectLikeCpu(`prelu ${w.join('x')} ${comboName(ta, tb)}`, [...stored(12, 10, 8, ta, tb), [8], w], (a, b, bias, alpha) =>
          tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation: 'prelu', preluActivationWeights: alpha }),
        );
      }
    }
  });

  it('a one-element bias broadcasts over every column, transposed or not', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`bias [1] ${comboName(ta, tb)}`, [...stored(12, 10, 8, ta, tb), [1]], (a, b, bias) =>
        tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation: 'relu' }),
      );
    }
  });

  it('no bias, transposed, agrees with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`no bias ${comboName(ta, tb)}`, stored(12, 10, 8, ta, tb), (a, b) =>
        tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, transposeA: ta, transposeB: tb, activation: 'elu' }),
      );
    }
  });

  it('batched, with broadcasting, bias, leakyrelu and transposes, agrees with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      for (const [oa, ob] of [
        [[3], [3]],
        [[1], [3]],
        [[3], [1]],
      ]) {
        await expectLikeCpu(`batched ${oa}x${ob} ${comboName(ta, tb)}`, [...stored(9, 7, 5, ta, tb, oa, ob), [5]], (a, b, bias) =>
          tf.fused.matMul({ a: a as tf.Tensor3D, b: b as tf.Tensor3D, bias, transposeA: ta, transposeB: tb, activation: 'leakyrelu', leakyreluAlpha: 0.2 }),
        );
      }
    }
  });
});

describe('gradients (where the transposed products happen)', () => {
  it('tf.grads of tf.fused.matMul with a bias agrees with cpu', async () => {
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(
        `grads ${comboName(ta, tb)}`,
        [...stored(100, 256, 512, ta, tb), [512], [100, 512]],
        (a, b, bias, w) =>
          tf.grads((x: tf.Tensor, y: tf.Tensor, c: tf.Tensor) =>
            tf.sum(tf.mul(tf.fused.matMul({ a: x as tf.Tensor2D, b: y as tf.Tensor2D, bias: c, transposeA: ta, transposeB: tb }), w!)),
          )([a!, b!, bias!]),
      );
    }
  });

  it('tf.grads of a small dense net like the seed D (leakyrelu, dropout masks, sigmoid cross-entropy) agrees with cpu', async () => {
    const widths = [784, 256, 128, 1];
    const rows = 64;
    const params = widths.slice(1).flatMap((out, i) => [[widths[i]!, out], [out]]);
    await expectLikeCpu(
      'dense net',
      [[rows, 784], [rows, 256], [rows, 128], ...params],
      (x, m1, m2, ...w) =>
        tf.grads((...p: tf.Tensor[]) => {
          let h = x as tf.Tensor2D;
          const masks = [m1!, m2!];
          for (let i = 0; i < 3; i++) {
            const last = i === 2;
            h = tf.fused.matMul({ a: h, b: p[2 * i] as tf.Tensor2D, bias: p[2 * i + 1], activation: last ? 'linear' : 'leakyrelu', leakyreluAlpha: 0.2 }) as tf.Tensor2D;
            if (!last) h = tf.mul(h, tf.step(masks[i]!)) as tf.Tensor2D;
          }
          const target = tf.concat([tf.ones([rows / 2, 1]), tf.zeros([rows / 2, 1])]);
          return tf.losses.sigmoidCrossEntropy(target, h) as tf.Scalar;
        })(w),
      1e-5,
    );
  });

  it('batched matMul gradients agree with cpu', async () => {
    // (tfjs-core's BatchMatMul gradient does not reduce over broadcast batch dimensions, so equal batches.)
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`batched grads ${comboName(ta, tb)}`, [...stored(9, 7, 5, ta, tb, [4], [4]), [4, 9, 5]], (a, b, w) =>
        tf.grads((x: tf.Tensor, y: tf.Tensor) => tf.sum(tf.mul(tf.matMul(x, y, ta, tb), w!)))([a!, b!]),
      );
    }
  });
});

describe('another backend sharing wasm kernels', () => {
  it("hands the backend's own kernels only untransposed, batch-1 operands and still agrees with cpu, leaving 'wasm' as it was", async () => {
    const wasmBefore = [tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc, tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc];
    registerWasmFastMatMul(SPY);
    expect(hasWasmFastMatMul(SPY)).toBe(true);
    expect([tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc, tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc]).toEqual(wasmBefore);
    spyLog.length = 0;
    for (const [ta, tb] of COMBOS) {
      await expectLikeCpu(`${SPY} ${comboName(ta, tb)}`, stored(20, 30, 10, ta, tb), (a, b) => tf.matMul(a!, b!, ta, tb), 1e-5, SPY);
      await expectLikeCpu(`${SPY} batched ${comboName(ta, tb)}`, stored(6, 5, 4, ta, tb, [3], [3]), (a, b) => tf.matMul(a!, b!, ta, tb), 1e-5, SPY);
      await expectLikeCpu(
        `${SPY} fused ${comboName(ta, tb)}`,
        [...stored(20, 30, 10, ta, tb), [10]],
        (a, b, bias) => tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation: 'leakyrelu' }),
        1e-5,
        SPY,
      );
    }
    expect(spyLog.length).toBeGreaterThan(0);
    expect(spyLog.filter(([, ta, tb]) => ta || tb)).toEqual([]);
    // Single matrices (rank 2, or rank 3 with a batch of 1): the case wasm sends to XNNPACK.
    const single = (s: number[]) => s.length === 2 || (s.length === 3 && s[0] === 1);
    expect(spyLog.filter(([, , , sa, sb]) => !single(sa) || !single(sb))).toEqual([]);
    expect(new Set(spyLog.map(([k]) => k))).toEqual(new Set([tf.BatchMatMul, tf._FusedMatMul]));
  });

  it('computes dY·W^T for few rows as (W·dY^T)^T, so the stored W is the left operand and never copied', async () => {
    registerWasmFastMatMul(SPY);
    spyLog.length = 0;
    // dY: 4 x 48, W: 64 x 48 (a layer 64 -> 48), dX = dY·W^T: 4 x 64.
    await expectLikeCpu(`${SPY} dY·W^T`, [[4, 48], [64, 48]], (dy, w) => tf.matMul(dy!, w!, false, true), 1e-5, SPY);
    expect(spyLog).toEqual([[tf.BatchMatMul, false, false, [1, 64, 48], [1, 48, 4]]]);
    // And X^T·dY (the weight gradient) copies only X: X 4 x 64, dY 4 x 48.
    spyLog.length = 0;
    await expectLikeCpu(`${SPY} X^T·dY`, [[4, 64], [4, 48]], (x, dy) => tf.matMul(x!, dy!, true, false), 1e-5, SPY);
    expect(spyLog).toEqual([[tf.BatchMatMul, false, false, [1, 64, 4], [1, 4, 48]]]);
  });
});

describe('products it does not cover go to wasm unchanged', () => {
  it('mismatched inner sizes throw the same error as wasm', async () => {
    await tf.setBackend('wasm');
    const a = tf.zeros([4, 3]);
    const b = tf.zeros([4, 5]);
    const message = (f: () => unknown) => {
      try {
        f();
        return '';
      } catch (e) {
        return (e as Error).message;
      }
    };
    const fast = message(() => tf.engine().runKernel(tf.BatchMatMul, { a, b }, { transposeA: false, transposeB: true } as never));
    unregisterWasmFastMatMul('wasm');
    const plain = message(() => tf.engine().runKernel(tf.BatchMatMul, { a, b }, { transposeA: false, transposeB: true } as never));
    registerWasmFastMatMul('wasm');
    expect(fast).toMatch(/inner shapes/);
    expect(fast).toBe(plain);
    tf.dispose([a, b]);
  });
});

describe('memory', () => {
  it('leaks no tensors and no wasm data ids over repeated products and gradients', async () => {
    await tf.setBackend('wasm');
    const wasIsTest = tf.env().getBool('IS_TEST');
    // The engine then checks every kernel call for data ids it leaves behind.
    tf.env().set('IS_TEST', true);
    try {
      const x = tf.tensor(values(200 * 784, 1), [200, 784]);
      const w = tf.tensor(values(784 * 256, 2), [784, 256]);
      const bias = tf.tensor(values(256, 3), [256]);
      const one = tf.tensor([0.5]);
      const b3 = tf.tensor(values(3 * 784 * 16, 4), [3, 784, 16]);
      const work = () =>
        tf.tidy(() => {
          for (const [ta, tb] of COMBOS) {
            const a = ta ? tf.transpose(x) : x;
            const b = tb ? tf.transpose(w) : w;
            tf.matMul(a, b, ta, tb).dataSync();
            tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, transposeA: ta, transposeB: tb, activation: 'leakyrelu' }).dataSync();
            tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias: one, transposeA: ta, transposeB: tb, activation: 'relu' }).dataSync();
          }
          tf.matMul(tf.reshape(x, [1, 200, 784]), b3).dataSync();
          tf.matMul(b3, tf.reshape(x, [1, 200, 784]), true, true).dataSync();
          const g = tf.grads((p: tf.Tensor, q: tf.Tensor) =>
            tf.sum(tf.fused.matMul({ a: x as tf.Tensor2D, b: p as tf.Tensor2D, bias: q, activation: 'leakyrelu', leakyreluAlpha: 0.2 })),
          )([w, bias]);
          for (const t of g) t.dataSync();
        });
      work();
      const tensors = tf.memory().numTensors;
      const dataIds = tf.engine().backend.numDataIds();
      for (let i = 0; i < 3; i++) work();
      expect(tf.memory().numTensors).toBe(tensors);
      expect(tf.engine().backend.numDataIds()).toBe(dataIds);
      tf.dispose([x, w, bias, one, b3]);
    } finally {
      tf.env().set('IS_TEST', wasIsTest);
    }
  });
});
