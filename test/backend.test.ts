import { spawnSync } from 'node:child_process';
import { describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { nativeAvailable } from '../shared/backend/addon.js';
import { BACKEND_NAMES, initBackend } from '../shared/backend/choose.js';
import { buildBatch } from '../shared/compute/batch.js';
import { type Batch, GanModel } from '../shared/compute/gan.js';
import { defaultModelConfig, initWeights } from '../shared/compute/model.js';
import { values } from './helpers.js';

const native = nativeAvailable();
const noNative = !native.ok;
/** Appended to the title of every test that needs the addon, so a skip says why. */
const needs = noNative ? ` [skipped: ${native.reason}]` : '';

async function tfjsNodeInstalled(): Promise<boolean> {
  const spec = '@tensorflow/tfjs-node';
  try {
    await import(spec);
    return true;
  } catch {
    return false;
  }
}

interface Spec {
  shape: number[];
  seed: number;
  dtype?: 'float32' | 'bool';
}

/** Run `f` on `backend` with fresh input tensors built from `specs`; return its output as data. */
async function runOn(backend: 'wasm' | 'native', specs: Spec[], f: (...xs: tf.Tensor[]) => tf.Tensor): Promise<{ shape: number[]; dtype: string; data: Float32Array }> {
  if (backend === 'native') await initBackend('native');
  else await tf.setBackend('wasm');
  const before = tf.memory().numTensors;
  const result = tf.tidy(() => {
    const xs = specs.map((s) => {
      const v = values(tf.util.sizeFromShape(s.shape), s.seed);
      return s.dtype === 'bool' ? tf.tensor(v.map((x) => (x > 0 ? 1 : 0)), s.shape, 'bool') : tf.tensor(v, s.shape, 'float32');
    });
    const y = f(...xs);
    return { shape: y.shape, dtype: y.dtype, data: Float32Array.from(y.dataSync() as ArrayLike<number>) };
  });
  expect(tf.memory().numTensors).toBe(before);
  return result;
}

function maxRelErr(got: Float32Array, want: Float32Array): number {
  let scale = 0;
  for (const v of want) scale = Math.max(scale, Math.abs(v));
  let worst = 0;
  for (let i = 0; i < want.length; i++) worst = Math.max(worst, Math.abs(got[i]! - want[i]!) / Math.max(scale, 1e-30));
  return worst;
}

type Fn = (...xs: tf.Tensor[]) => tf.Tensor;

/** `f` on native against `ref` (default `f`) on wasm. */
async function expectSame(label: string, specs: Spec[], f: Fn, tol = 1e-5, ref: Fn = f): Promise<void> {
  const want = await runOn('wasm', specs, ref);
  const got = await runOn('native', specs, f);
  expect(got.shape, label).toEqual(want.shape);
  expect(got.dtype, label).toBe(want.dtype);
  // Non-finite results (x / 0) must agree exactly; the rest within tolerance.
  const finite = want.data.map((v) => (Number.isFinite(v) ? 1 : 0));
  expect(Array.from(got.data, (v, i) => (Number.isFinite(v) ? v : String(v)) === (finite[i] ? v : String(want.data[i]))), label).not.toContain(false);
  expect(maxRelErr(got.data.filter((_, i) => finite[i]), want.data.filter((_, i) => finite[i])), label).toBeLessThanOrEqual(tol);
}

describe('backend selection', () => {
  it('lists the backend names', () => {
    expect(BACKEND_NAMES).toEqual(['auto', 'tensorflow', 'native', 'wasm', 'cpu']);
  });

  it('an explicit request for tfjs-node without it installed throws E_BACKEND', async () => {
    if (await tfjsNodeInstalled()) return expect(true).toBe(true);
    await expect(initBackend('tensorflow')).rejects.toMatchObject({ code: 'E_BACKEND', message: expect.stringMatching(/tfjs-node/) });
  });

  it('an unknown name throws E_BACKEND', async () => {
    await expect(initBackend('gpu' as never)).rejects.toMatchObject({ code: 'E_BACKEND' });
  });

  it('wasm and cpu can be requested explicitly', async () => {
    expect(await initBackend('cpu')).toMatchObject({ name: 'cpu' });
    expect(tf.getBackend()).toBe('cpu');
    const info = await initBackend('wasm');
    expect(info.name).toBe('wasm');
    expect(tf.getBackend()).toBe('wasm');
    expect(await initBackend('wasm')).toBe(info);
  });

  it.skipIf(noNative)(`auto picks native when tfjs-node is missing and says why in one line${needs}`, async () => {
    const lines: string[] = [];
    await tf.setBackend('cpu');
    const info = await initBackend('auto', { threads: 1, log: (l) => lines.push(l) });
    if (await tfjsNodeInstalled()) {
      expect(info.name).toBe('tensorflow');
      return;
    }
    expect(info.name).toBe('native');
    expect(tf.getBackend()).toBe('native');
    expect(info.detail).toMatch(/(built-in GEMM|OpenBLAS [\d.]+).*1 thread$/);
    expect(lines).toHaveLength(1);
    expect(lines[0]).toMatch(/^backend: native .*tfjs-node not installed/);
    // Idempotent: the same request again changes nothing and logs nothing.
    expect(await initBackend('auto', { log: (l) => lines.push(l) })).toEqual(info);
    expect(lines).toHaveLength(1);
  });

  it.skipIf(!noNative)('without the addon, native is refused with the reason and auto falls back to wasm', async () => {
    await expect(initBackend('native')).rejects.toMatchObject({ code: 'E_BACKEND' });
    const lines: string[] = [];
    const info = await initBackend('auto', { log: (l) => lines.push(l) });
    expect(info.name).toBe('wasm');
    expect(lines).toHaveLength(1);
  });

  it('without the addon, the one-line fallback notice says what builds it and what it needs', () => {
    // A process of its own: the addon is looked for once per process.
    const r = spawnSync(process.execPath, ['-e', "import('./dist/shared/backend/choose.js').then((m) => m.initBackend('auto')).then((i) => console.log(i.name))"], {
      encoding: 'utf8', cwd: process.cwd(), env: { ...process.env, GAN_NATIVE_ADDON: '/nonexistent/gan_native.node' },
    });
    expect(r.stdout.trim()).toBe('wasm');
    const notice = r.stderr.split('\n').filter((l) => l.startsWith('backend:'));
    expect(notice).toHaveLength(1);
    expect(notice[0]).toMatch(/^backend: wasm; .*native addon not built .*npm run build:native.*C compiler: apt-get install build-essential/);
  });

  it.skipIf(noNative)(`the thread count can be changed on the native backend${needs}`, async () => {
    expect((await initBackend('native', { threads: 2 })).detail).toMatch(/2 threads$/);
    expect((await initBackend('native', { threads: 1 })).detail).toMatch(/1 thread$/);
    await expect(initBackend('native', { threads: 0 })).rejects.toMatchObject({ code: 'E_BACKEND' });
  });
});

describe('native kernels match wasm', () => {
  const acts = ['linear', 'relu', 'leakyrelu', 'relu6', 'sigmoid', 'elu'] as const;

  it.skipIf(noNative)(`BatchMatMul, every transpose combination, odd sizes${needs}`, async () => {
    for (const [m, k, n] of [
      [3, 5, 7],
      [1, 1, 1],
      [17, 64, 9],
      [100, 784, 33],
    ] as const) {
      for (const ta of [false, true]) {
        for (const tb of [false, true]) {
          const a = { shape: ta ? [k, m] : [m, k], seed: m * 7 + k };
          const b = { shape: tb ? [n, k] : [k, n], seed: n * 13 + k };
          await expectSame(`${m}x${k}x${n} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'}`, [a, b], (x, y) => tf.matMul(x!, y!, ta, tb));
        }
      }
    }
  });

  it.skipIf(noNative)(`BatchMatMul with batch dimensions, including one side broadcast${needs}`, async () => {
    await expectSame('batch 4', [{ shape: [4, 3, 5], seed: 1 }, { shape: [4, 5, 7], seed: 2 }], (a, b) => tf.matMul(a!, b!));
    await expectSame('batch 2x3, transposeB', [{ shape: [2, 3, 5, 6], seed: 3 }, { shape: [2, 3, 7, 6], seed: 4 }], (a, b) => tf.matMul(a!, b!, false, true));
    await expectSame('batch 4 x broadcast 1, transposeA', [{ shape: [4, 5, 3], seed: 5 }, { shape: [1, 5, 7], seed: 6 }], (a, b) => tf.matMul(a!, b!, true, false));
    await expectSame('rank 2 x batch 4', [{ shape: [3, 5], seed: 7 }, { shape: [4, 5, 7], seed: 8 }], (a, b) => tf.matMul(a!, b!));
  });

  it.skipIf(noNative)(`_FusedMatMul with and without bias, each activation, every transpose${needs}`, async () => {
    const [m, k, n] = [3, 5, 7];
    for (const activation of acts) {
      for (const withBias of [false, true]) {
        for (const ta of [false, true]) {
          for (const tb of [false, true]) {
            const specs: Spec[] = [
              { shape: ta ? [k, m] : [m, k], seed: 11 },
              { shape: tb ? [n, k] : [k, n], seed: 12 },
              { shape: [n], seed: 13 },
            ];
            const fused: Fn = (a, b, bias) =>
              tf.fused.matMul({
                a: a as tf.Tensor2D,
                b: b as tf.Tensor2D,
                transposeA: ta,
                transposeB: tb,
                bias: withBias ? bias : undefined,
                activation,
                leakyreluAlpha: 0.3,
              });
            // The reference is the unfused chain: wasm's own _FusedMatMul adds the bias to the
            // wrong columns when a transpose is set (tfjs-backend-wasm 4.22).
            const unfused: Fn = (a, b, bias) => {
              const y = withBias ? tf.add(tf.matMul(a!, b!, ta, tb), bias!) : tf.matMul(a!, b!, ta, tb);
              switch (activation) {
                case 'linear':
                  return y;
                case 'leakyrelu':
                  return tf.leakyRelu(y, 0.3);
                default:
                  return tf[activation](y);
              }
            };
            await expectSame(`${activation} bias=${withBias} ${ta ? 'T' : 'N'}${tb ? 'T' : 'N'}`, specs, fused, 1e-5, unfused);
          }
        }
      }
    }
  });

  it.skipIf(noNative)(`_FusedMatMul at the GAN's shapes, and prelu through the wasm fallback${needs}`, async () => {
    await expectSame('G layer 1', [{ shape: [100, 784], seed: 21 }, { shape: [784, 1024], seed: 22 }, { shape: [1024], seed: 23 }], (a, b, bias) =>
      tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, bias, activation: 'leakyrelu', leakyreluAlpha: 0.2 }),
    );
    await expectSame('prelu', [{ shape: [6, 5], seed: 24 }, { shape: [5, 7], seed: 25 }, { shape: [7], seed: 26 }], (a, b, w) =>
      tf.fused.matMul({ a: a as tf.Tensor2D, b: b as tf.Tensor2D, activation: 'prelu', preluActivationWeights: w }),
    );
  });

  it.skipIf(noNative)(`elementwise kernels, broadcasts, reductions and their fallbacks${needs}`, async () => {
    const x = { shape: [4, 6], seed: 31 };
    const y = { shape: [4, 6], seed: 32 };
    const row = { shape: [6], seed: 33 };
    const col = { shape: [4, 1], seed: 34 };
    const scalar = { shape: [], seed: 35 };
    for (const op of [tf.add, tf.sub, tf.mul, tf.div, tf.maximum, tf.minimum, tf.greater, tf.less, tf.greaterEqual, tf.lessEqual]) {
      for (const other of [y, row, scalar, col]) {
        await expectSame(`${op.name} [4,6] with [${other.shape}]`, [x, other], (a, b) => op(a!, b!) as tf.Tensor);
        await expectSame(`${op.name} [${other.shape}] with [4,6]`, [other, x], (a, b) => op(a!, b!) as tf.Tensor);
      }
    }
    for (const op of [tf.relu, tf.tanh, tf.sigmoid, tf.square, tf.neg, tf.exp, tf.relu6, tf.elu]) {
      await expectSame(op.name, [{ shape: [3, 100], seed: 36 }], (a) => op(a!) as tf.Tensor, 2e-6);
    }
    await expectSame('leakyRelu', [x], (a) => tf.leakyRelu(a!, 0.2));
    await expectSame('where', [{ shape: [4, 6], seed: 37, dtype: 'bool' }, x, y], (c, a, b) => tf.where(c!, a!, b!));
    await expectSame('where, broadcast condition', [{ shape: [6], seed: 38, dtype: 'bool' }, x, y], (c, a, b) => tf.where(c!, a!, b!));
    const cube = { shape: [3, 4, 5], seed: 39 };
    for (const axis of [0, 1, 2, [0, 1], [1, 2], [0, 2], [0, 1, 2], -1]) {
      for (const keepDims of [false, true]) {
        await expectSame(`sum ${axis} ${keepDims}`, [cube], (a) => tf.sum(a!, axis, keepDims));
        await expectSame(`mean ${axis} ${keepDims}`, [cube], (a) => tf.mean(a!, axis, keepDims));
      }
    }
    await expectSame('cast to own dtype, clone', [x], (a) => tf.add(tf.cast(a!, 'float32'), tf.clone(a!)));
    await expectSame('cast through int32', [x], (a) => tf.cast(tf.cast(a!, 'int32'), 'float32'));
  });

  it.skipIf(noNative)(`tanh stays within a few ulp of Math.tanh over its whole range${needs}`, async () => {
    await initBackend('native');
    const n = 20001;
    const xs = new Float32Array(n);
    for (let i = 0; i < n; i++) xs[i] = ((i - 10000) / 10000) * 12 * ((i % 5) + 1) ** -2;
    const got = tf.tidy(() => tf.tanh(tf.tensor1d(xs)).dataSync());
    let worst = 0;
    for (let i = 0; i < n; i++) {
      const want = Math.tanh(xs[i]!);
      worst = Math.max(worst, Math.abs(got[i]! - want) / Math.max(Math.abs(want), 1e-30));
    }
    expect(worst).toBeLessThan(1e-6);
  });
});

describe('a GAN iteration on native', () => {
  const cfg = defaultModelConfig;
  const ids = Array.from({ length: 100 }, (_, i) => i);
  const src = { image: (id: number) => new Uint8Array(784).map((_, k) => (id * 31 + k * 7) % 256), label: (id: number) => id % 10 };
  const batches = (): { d: Batch; g: Batch } => ({
    d: buildBatch(cfg, { seed: 3, epoch: 0, phase: 'D' }, ids, src),
    g: buildBatch(cfg, { seed: 3, epoch: 0, phase: 'G' }, ids, src),
  });

  function step(m: GanModel, b: { d: Batch; g: Batch }) {
    const d = m.dStep(b.d);
    const dGrads = d.grads.slice();
    const g = m.gStep(b.g);
    return { d: { ...d, grads: dGrads }, g: { ...g, grads: g.grads.slice() } };
  }

  function model(): GanModel {
    const m = new GanModel(cfg);
    m.setWeights('G', initWeights(m.g, 5));
    m.setWeights('D', initWeights(m.d, 6));
    return m;
  }

  function relNorm(got: Float32Array, want: Float32Array): number {
    let num = 0;
    let den = 0;
    for (let i = 0; i < want.length; i++) {
      num += (got[i]! - want[i]!) ** 2;
      den += want[i]! ** 2;
    }
    return Math.sqrt(num / den);
  }

  it.skipIf(noNative)(`dStep and gStep give the wasm backend's gradients within 1e-4${needs}`, async () => {
    const b = batches();
    await tf.setBackend('wasm');
    const mw = model();
    const want = step(mw, b);
    mw.dispose();
    await initBackend('native', { threads: 1 });
    const mn = model();
    const got = step(mn, b);
    mn.dispose();
    for (const phase of ['d', 'g'] as const) {
      expect(got[phase].grads.length).toBe(want[phase].grads.length);
      expect(relNorm(got[phase].grads, want[phase].grads)).toBeLessThan(1e-4);
      expect(maxRelErr(got[phase].grads, want[phase].grads)).toBeLessThan(1e-4);
      expect(got[phase].loss).toBeCloseTo(want[phase].loss, 4);
      expect(got[phase].dFake).toBeCloseTo(want[phase].dFake, 4);
    }
    expect(got.d.dReal).toBeCloseTo(want.d.dReal, 4);
  });

  it.skipIf(noNative)(`repeated steps leak no tensors and no heap buffers${needs}`, async () => {
    await initBackend('native', { threads: 1 });
    const b = batches();
    const m = model();
    step(m, b);
    const tensors = tf.memory().numTensors;
    const dataIds = tf.engine().backend.numDataIds();
    for (let i = 0; i < 3; i++) step(m, b);
    expect(tf.memory().numTensors).toBe(tensors);
    expect(tf.engine().backend.numDataIds()).toBe(dataIds);
    m.dispose();
  });
});
