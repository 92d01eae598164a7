/** The wasm fast path in use: gradients through it, another backend sharing its kernels, what it leaves alone, memory. */
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';
// Registers the gradient functions (tfjs-core alone ships them only as ES modules).
import '@tensorflow/tfjs';
import { hasWasmFastMatMul, registerWasmFastMatMul, unregisterWasmFastMatMul } from '../shared/backend/wasm-kernels.js';
import { values } from './helpers.js';
import { expectLikeCpu, COMBOS, comboName, stored, spyLog, SPY, useSpyBackend } from './util-kernels.js';

useSpyBackend();

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
