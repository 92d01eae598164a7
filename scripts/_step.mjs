import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import '@tensorflow/tfjs-backend-cpu';
import { GanModel } from '/work/main/dist/shared/gan.js';
import { defaultModelConfig, initWeights } from '/work/main/dist/shared/model.js';
import { buildBatch } from '/work/main/dist/shared/batch.js';
await tf.setBackend(process.argv[2] ?? 'wasm');
const cfg = defaultModelConfig;
const m = new GanModel(cfg);
m.setWeights('G', initWeights(m.g, 1)); m.setWeights('D', initWeights(m.d, 1));
const src = { image: (id) => new Uint8Array(784).fill(id % 255), label: (id) => id % 10 };
const ids = Array.from({length: 100}, (_, i) => i);
for (let it = 0; it < 6; it++) {
  const t0 = performance.now();
  const bd = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'D'}, ids, src);
  const bg = buildBatch(cfg, {seed: 1, epoch: 0, phase: 'G'}, ids, src);
  const t1 = performance.now();
  const r1 = m.dStep(bd); const r2 = m.gStep(bg);
  const t2 = performance.now();
  console.log(`batch ${(t1-t0).toFixed(1)}ms step ${(t2-t1).toFixed(1)}ms -> ${(100/((t2-t0)/1000)).toFixed(0)} samples/s`, r1.loss.toFixed(3), r1.dReal.toFixed(3), r1.dFake.toFixed(3), r2.loss.toFixed(3), tf.memory().numTensors);
}
