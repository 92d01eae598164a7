import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// Registers the gradient functions (tfjs-core alone ships them only as ES modules).
import '@tensorflow/tfjs';
import { hasWasmFastMatMul, registerWasmFastMatMul, unregisterWasmFastMatMul } from '../shared/backend/wasm-kernels.js';
import { values } from './helpers.js';
import { runOn, maxRelErr, expectLikeCpu, COMBOS, comboName, stored, seedProducts, transposed, original, useSpyBackend } from './util-kernels.js';

useSpyBackend();

describe('registration', () => {
  it('replaces the BatchMatMul and _FusedMatMul kernels of the named backend', () => {
    expect(hasWasmFastMatMul('wasm')).toBe(true);
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).not.toBe(original.bmm);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).not.toBe(original.fused);
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
    expect(tf.getKernel(tf.BatchMatMul, 'wasm').kernelFunc).toBe(original.bmm);
    expect(tf.getKernel(tf._FusedMatMul, 'wasm').kernelFunc).toBe(original.fused);
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
