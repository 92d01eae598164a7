// Per-kernel wall time of one GAN iteration, to see what dominates after the matrix products.
// Usage (after npx tsc -p tsconfig.build.json): node native/tools/profile.mjs [native|wasm|cpu] [threads]
// N=iterations WARM=warm-up iterations TOP=rows to print
import * as tf from '@tensorflow/tfjs-core';
import { GanModel } from '../../dist/shared/gan.js';
import { defaultModelConfig, initWeights } from '../../dist/shared/model.js';
import { buildBatch } from '../../dist/shared/batch.js';
import { initBackend } from '../../dist/shared/backend.js';

const name = process.argv[2] ?? 'native';
await initBackend(name, { threads: process.argv[3] ? Number(process.argv[3]) : undefined });
const stats = new Map();
for (const k of tf.getKernelsForBackend(name)) {
  const f = k.kernelFunc;
  tf.unregisterKernel(k.kernelName, name);
  tf.registerKernel({ ...k, kernelFunc: (args) => {
    const t0 = performance.now();
    const out = f(args);
    const dt = performance.now() - t0;
    let key = k.kernelName;
    if (k.kernelName === 'BatchMatMul' || k.kernelName === '_FusedMatMul') key += ` ${args.inputs.a.shape}x${args.inputs.b.shape} ${args.attrs.transposeA ? 'T' : 'N'}${args.attrs.transposeB ? 'T' : 'N'}`;
    else key += ` ${Object.values(args.inputs).map((t) => t?.shape ? `[${t.shape}]` : '').join('')}`;
    const s = stats.get(key) ?? { n: 0, ms: 0 };
    s.n++; s.ms += dt; stats.set(key, s);
    return out;
  } });
}
await tf.setBackend(name);
const cfg = defaultModelConfig;
const m = new GanModel(cfg);
m.setWeights('G', initWeights(m.g, 1)); m.setWeights('D', initWeights(m.d, 1));
const src = { image: (id) => new Uint8Array(784).fill(id % 255), label: (id) => id % 10 };
const ids = Array.from({length: 100}, (_, i) => i);
const bd = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'D'}, ids, src);
const bg = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'G'}, ids, src);
const N = Number(process.env.N ?? 20);
for (let i = 0; i < Number(process.env.WARM ?? 3); i++) { m.dStep(bd); m.gStep(bg); }
stats.clear();
const t0 = performance.now();
for (let i = 0; i < N; i++) { m.dStep(bd); m.gStep(bg); }
const total = (performance.now() - t0) / N;
let sum = 0, calls = 0;
const rows = [...stats].map(([k, s]) => [k, s.n / N, s.ms / N]).sort((a, b) => b[2] - a[2]);
for (const [, n, ms] of rows) { sum += ms; calls += n; }
console.log(`step ${total.toFixed(2)} ms (${(100000 / total).toFixed(0)} samples/s w/o batch build); kernels ${sum.toFixed(2)} ms in ${calls} calls; other ${(total - sum).toFixed(2)} ms`);
for (const [k, n, ms] of rows.slice(0, Number(process.env.TOP ?? 40))) console.log(`${ms.toFixed(3).padStart(8)} ms ${String(n).padStart(4)}x  ${k}`);
