// One GAN iteration (D phase + G phase gradients, no Adam) at batch 100, timed.
// Usage: node scripts/_step.mjs [cpu|wasm|native|auto|tensorflow] [threads] [iterations]
import * as tf from '@tensorflow/tfjs-core';
import { GanModel } from '../dist/shared/gan.js';
import { defaultModelConfig, initWeights } from '../dist/shared/model.js';
import { buildBatch } from '../dist/shared/batch.js';
import { initBackend } from '../dist/shared/backend.js';

const threads = process.argv[3] ? Number(process.argv[3]) : undefined;
const iters = process.argv[4] ? Number(process.argv[4]) : 6;
const info = await initBackend(process.argv[2] ?? 'wasm', { threads });
console.log(`backend ${info.name}: ${info.detail}`);
const cfg = defaultModelConfig;
const m = new GanModel(cfg);
m.setWeights('G', initWeights(m.g, 1)); m.setWeights('D', initWeights(m.d, 1));
const src = { image: (id) => new Uint8Array(784).fill(id % 255), label: (id) => id % 10 };
const ids = Array.from({length: 100}, (_, i) => i);
const rates = [];
for (let it = 0; it < iters; it++) {
  const c0 = process.cpuUsage();
  const t0 = performance.now();
  const bd = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'D'}, ids, src);
  const bg = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'G'}, ids, src);
  const t1 = performance.now();
  const r1 = m.dStep(bd); const r2 = m.gStep(bg);
  const t2 = performance.now();
  const cu = process.cpuUsage(c0);
  rates.push(100 / ((t2 - t0) / 1000));
  // CPU time next to wall time: on a shared host the wall clock also counts other people's work.
  console.log(`batch ${(t1-t0).toFixed(1)}ms step ${(t2-t1).toFixed(1)}ms -> ${(100/((t2-t0)/1000)).toFixed(0)} samples/s (cpu ${((cu.user + cu.system) / 1000).toFixed(0)}ms)`, r1.loss.toFixed(3), r1.dReal.toFixed(3), r1.dFake.toFixed(3), r2.loss.toFixed(3), tf.memory().numTensors);
}
const steady = rates.slice(Math.min(2, rates.length - 1)).sort((a, b) => a - b);
console.log(`median after warm-up: ${steady[Math.floor(steady.length / 2)].toFixed(0)} samples/s`);
