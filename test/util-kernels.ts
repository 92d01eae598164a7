/**
 * Shared by the wasm fast-path tests: running a function on a backend with seeded inputs, comparing
 * with the cpu backend, the product shapes of the seed model, and a spy backend (wasm's kernels,
 * recording what its two product kernels are asked) set up before the fast path is registered.
 */
import { afterAll, beforeAll, expect } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// Registers the gradient functions.
import '@tensorflow/tfjs';
import { registerWasmFastMatMul } from '../shared/backend/wasm-kernels.js';
import { values } from './helpers.js';

export interface Result {
  shape: number[];
  data: Float32Array;
}

export type Fn = (...xs: tf.Tensor[]) => tf.Tensor | tf.Tensor[];

/** `f` on `backend` with fresh float inputs of `shapes` (seeded by position); every output as data. */
export async function runOn(backend: string, shapes: number[][], f: Fn, seed = 1): Promise<Result[]> {
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
export function maxRelErr(got: Float32Array, want: Float32Array): number {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!));
  return worst / Math.max(scale, 1e-30);
}

/** `f` on wasm (fast path registered) against `f` on cpu, output by output. */
export async function expectLikeCpu(label: string, shapes: number[][], f: Fn, tol = 1e-5, backend = 'wasm'): Promise<void> {
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

export const COMBOS = [
  [false, false],
  [false, true],
  [true, false],
  [true, true],
] as const;
export const comboName = (ta: boolean, tb: boolean) => `${ta ? 'A^T' : 'A'}·${tb ? 'B^T' : 'B'}`;

/** Stored shapes of A and B for op(A) (m x k) times op(B) (k x n), with optional batch dims. */
export function stored(m: number, k: number, n: number, ta: boolean, tb: boolean, outerA: number[] = [], outerB: number[] = []): number[][] {
  return [
    [...outerA, ...(ta ? [k, m] : [m, k])],
    [...outerB, ...(tb ? [n, k] : [k, n])],
  ];
}

/**
 * Every product the seed MLP GAN computes, as op(A) (m x k) times op(B) (k x n): per dense layer
 * X (rows x in), W (in x out): forward X·W, input gradient dY·W^T, weight gradient X^T·dY.
 */
export function seedProducts(): { m: number; k: number; n: number; what: string }[] {
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

/** The transpose of a rows x cols row-major matrix. */
export function transposed(x: Float32Array, rows: number, cols: number): Float32Array {
  const out = new Float32Array(x.length);
  for (let i = 0; i < rows; i++) for (let j = 0; j < cols; j++) out[j * rows + i] = x[i * cols + j]!;
  return out;
}

/** wasm's own product kernels, before the fast path replaced them. */
export const original: { bmm: tf.KernelFunc | null; fused: tf.KernelFunc | null } = { bmm: null, fused: null };
/** What wasm's own product kernels were asked on the spy backend: [kernel, transposeA, transposeB, a.shape, b.shape]. */
export const spyLog: [string, boolean, boolean, number[], number[]][] = [];
export const SPY = 'wasm-fast-spy';

/** Set up the spy backend and the fast path before this file's tests; remove the spy after. */
export function useSpyBackend(): void {
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
    original.bmm = tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc;
    original.fused = tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc;
    registerWasmFastMatMul('wasm');
    await tf.setBackend('wasm');
  });

  afterAll(async () => {
    await tf.setBackend('cpu');
    tf.removeBackend(SPY);
  });
}
