import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { RoundMetrics } from '../coordinator/coordinator.js';
import { defaultTrainConfig } from '../coordinator/config.js';
import { loadEmbedded } from '../shared/data/mnist.js';
import { defaultModelConfig, initWeights, netLayout } from '../shared/compute/model.js';
import { smallData, startCluster, tinyConfig } from './helpers.js';

describe('the seed model at full size', () => {
  it('two workers complete 3 rounds with finite losses, moved weights and near-minimal bytes on the wire', async () => {
    const config = { ...defaultTrainConfig, workers: 2, maxRounds: 3, checkpointEvery: 0, roundTimeoutMs: 120_000 };
    // The brief's seed model: G 100-256-512-1024-784, D 784-1024-512-256-1, dropout 0.3, batch 100.
    expect(config.model).toEqual(defaultModelConfig);
    expect(config.model.gHidden).toEqual([256, 512, 1024]);
    expect(config.model.dHidden).toEqual([1024, 512, 256]);
    expect(config.model.dropout).toBe(0.3);
    expect(config.batchSize).toBe(100);

    const data = loadEmbedded().train;
    const rounds: RoundMetrics[] = [];
    const cluster = await startCluster(config, data, { hooks: { round: (m) => rounds.push(m) } });
    const coord = await cluster.finish();

    expect(coord.round).toBe(3);
    expect(rounds).toHaveLength(3);
    const lines = readFileSync(join(coord.runDir.path, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RoundMetrics);
    expect(lines).toEqual(rounds);
    for (const m of rounds) {
      expect(m.workers).toBe(2);
      expect(m.samples).toBe(200);
      for (const k of ['d_loss', 'g_loss', 'd_real', 'd_fake'] as const) expect(Number.isFinite(m[k]), `${k} round ${m.round}`).toBe(true);
      expect(m.d_real).toBeGreaterThan(0);
      expect(m.d_real).toBeLessThan(1);
    }

    const gL = netLayout(config.model, 'G');
    const dL = netLayout(config.model, 'D');
    expect(gL.total).toBe(1_486_352);
    expect(dL.total).toBe(1_460_225);
    for (const [net, l] of [['G', gL], ['D', dL]] as const) {
      const init = initWeights(l, config.seed);
      let moved = 0;
      for (let i = 0; i < l.total; i++) if (coord.model.weights[net][i] !== init[i]) moved++;
      // Adam moves every weight that got a non-zero gradient: nearly all of them.
      expect(moved / l.total, `${net} weights changed`).toBeGreaterThan(0.5);
      expect(coord.model.versions[net]).toBe(3);
    }

    // Per round each worker uploads one D and one G gradient, float32, and downloads one D and one
    // G weight vector as XOR deltas of the version it holds (exact, about 0.7 of float32's bytes).
    const minimum = 4 * (gL.total + dL.total) * config.workers;
    for (const m of rounds.slice(1)) {
      expect(m.bytes_in / minimum, `bytes_in round ${m.round}`).toBeGreaterThanOrEqual(1);
      expect(m.bytes_in / minimum, `bytes_in round ${m.round}`).toBeLessThan(1.01);
      expect(m.bytes_out / minimum, `bytes_out round ${m.round}`).toBeGreaterThan(0.5);
      expect(m.bytes_out / minimum, `bytes_out round ${m.round}`).toBeLessThan(0.85);
    }
    expect(rounds[0]!.bytes_in / minimum).toBeLessThan(1.01);
  }, 240_000);
});

describe('bytes on the wire', () => {
  it("the first round's bytes_out includes the shards shipped to the joining workers, and not the initial weights: they derive them from the seed", async () => {
    const config = tinyConfig({ workers: 2, batchSize: 10, maxRounds: 2 });
    const n = 200;
    const rounds: RoundMetrics[] = [];
    await (await startCluster(config, smallData(n), { hooks: { round: (m) => rounds.push(m) } })).finish();
    const perWorkerWeights = 4 * (netLayout(config.model, 'G').total + netLayout(config.model, 'D').total);
    const steady = rounds[1]!.bytes_out;
    // Both nets' new weights to each worker, as XOR deltas of the version it holds.
    expect(steady).toBeGreaterThan(perWorkerWeights * 2 * 0.4);
    expect(steady).toBeLessThan(perWorkerWeights * 2 * 1.01);
    // Each worker got every sample (784 pixels, a label, a 4-byte id) once, and version 0 of both
    // nets as a seeded frame of no data.
    const shipped = n * (784 + 1 + 4);
    expect(rounds[0]!.bytes_out - steady).toBeGreaterThanOrEqual(shipped);
    expect(rounds[0]!.bytes_out - steady).toBeLessThan(shipped + perWorkerWeights / 4);
  }, 60_000);
});
