import { beforeAll, describe, expect, it } from 'vitest';
import * as tf from '@tensorflow/tfjs-core';
import { buildBatch, type SampleSource } from '../shared/compute/batch.js';
import { GanModel } from '../shared/compute/gan.js';
import { type ModelConfig, defaultModelConfig, initWeights } from '../shared/compute/model.js';
import { smallData, startCluster, tinyConfig, tinyModel, useWasm } from './helpers.js';

beforeAll(async () => {
  await useWasm();
});

const src: SampleSource = {
  image: (id) => new Uint8Array(784).fill((id * 37) % 256),
  label: (id) => id % 10,
};

function memory(): { tensors: number; bytes: number } {
  const m = tf.memory();
  return { tensors: m.numTensors, bytes: m.numBytes };
}

/** Tensors and bytes after each of `steps` D+G steps, after `warmup` steps that are not counted. */
function stepMemory(cfg: ModelConfig, batch: number, steps: number, warmup = 2): { tensors: number; bytes: number }[] {
  const model = new GanModel(cfg);
  try {
    model.setWeights('G', initWeights(model.g, 1));
    model.setWeights('D', initWeights(model.d, 1));
    const out: { tensors: number; bytes: number }[] = [];
    for (let s = 0; s < warmup + steps; s++) {
      const ids = Array.from({ length: batch }, (_, i) => s * batch + i);
      const d = model.dStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'D' }, ids, src));
      const g = model.gStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'G' }, ids, src));
      expect(Number.isFinite(d.loss) && Number.isFinite(g.loss)).toBe(true);
      if (s >= warmup) out.push(memory());
    }
    return out;
  } finally {
    model.dispose();
  }
}

describe('no tensor leak', () => {
  it('20 D+G steps of the tiny model leave tf.memory() unchanged after warm-up', () => {
    const before = memory();
    const mem = stepMemory(tinyModel, 16, 20);
    for (const m of mem) expect(m).toEqual(mem[0]);
    // The model's weights are the only tensors it holds between steps: 3 layers x (W, b) x 2 nets.
    expect(mem[0]!.tensors - before.tensors).toBe(12);
    expect(memory()).toEqual(before);
  });

  it.each(['cgan', 'acgan'] as const)('20 D+G steps of the conditional tiny model (%s) leave tf.memory() unchanged after warm-up', (kind) => {
    const before = memory();
    const mem = stepMemory({ ...tinyModel, kind, dropout: 0 }, 8, 20);
    for (const m of mem) expect(m).toEqual(mem[0]);
    expect(memory()).toEqual(before);
  });

  it('20 D+G steps of the seed model at full size leave tf.memory() unchanged after warm-up', () => {
    const before = memory();
    // Batch 4: the layer sizes are what matter for what is allocated, not the batch.
    const mem = stepMemory(defaultModelConfig, 4, 20, 1);
    for (const m of mem) expect(m).toEqual(mem[0]);
    expect(mem[0]!.tensors - before.tensors).toBe(16);
    expect(memory()).toEqual(before);
  }, 120_000);

  it('setWeights replaces a net without leaking the old tensors; generate and discriminate leave nothing behind', () => {
    const before = memory();
    const model = new GanModel(tinyModel);
    model.setWeights('G', initWeights(model.g, 1));
    model.setWeights('D', initWeights(model.d, 1));
    const loaded = memory();
    for (let i = 0; i < 20; i++) {
      model.setWeights(i % 2 ? 'G' : 'D', initWeights(i % 2 ? model.g : model.d, i));
      model.generate(new Float32Array(5 * tinyModel.noiseDim));
      model.discriminate(new Float32Array(5 * 784));
    }
    expect(memory()).toEqual(loaded);
    model.dispose();
    // The AC-GAN's D answers real/fake and the class: discriminate keeps only the first.
    const ac = new GanModel({ ...tinyModel, kind: 'acgan' });
    ac.setWeights('G', initWeights(ac.g, 1));
    ac.setWeights('D', initWeights(ac.d, 1));
    const acLoaded = memory();
    for (let i = 0; i < 5; i++) {
      expect(ac.generate(new Float32Array(5 * tinyModel.noiseDim), new Uint8Array(5).fill(i)).length).toBe(5 * 784);
      expect(ac.discriminate(new Float32Array(5 * 784)).length).toBe(5);
    }
    expect(memory()).toEqual(acLoaded);
    ac.dispose();
    expect(memory()).toEqual(before);
  });

  it('through WorkerClients in a small cluster: constant per round, and nothing left after the run', async () => {
    const before = memory();
    const perRound: number[] = [];
    const cluster = await startCluster(tinyConfig({ workers: 2, batchSize: 5, maxRounds: 20 }), smallData(300), {
      hooks: { round: () => perRound.push(tf.memory().numTensors) },
    });
    const coord = await cluster.finish();
    expect(coord.round).toBe(20);
    expect(perRound).toHaveLength(20);
    // Two in-process workers, each holding G and D (12 tensors): the count must not grow round after round.
    for (const n of perRound.slice(1)) expect(n).toBe(perRound[0]);
    expect(perRound[0]! - before.tensors).toBe(24);
    // finish() disposes the workers' models; the coordinator's sample grids dispose their own.
    expect(memory()).toEqual(before);
  }, 120_000);
});
