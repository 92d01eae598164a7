import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { maxRelDiff, smallData, startCluster, tinyConfig } from './helpers.js';

describe('data-parallel training', () => {
  it.each(['gan', 'acgan'] as const)('%s: two workers at batch b/2 give the same weights after 5 rounds as one worker at batch b (dropout off)', async (kind) => {
    const data = smallData(200);
    const model = { ...tinyConfig().model, kind, dropout: 0 };
    const one = await (await startCluster(tinyConfig({ model, workers: 1, batchSize: 20, maxRounds: 5 }), data)).finish();
    const two = await (await startCluster(tinyConfig({ model, workers: 2, batchSize: 10, maxRounds: 5 }), data)).finish();
    expect(one.round).toBe(5);
    expect(two.round).toBe(5);
    for (const net of ['D', 'G'] as const) {
      expect(maxRelDiff(one.model.weights[net], two.model.weights[net])).toBeLessThan(1e-5);
    }
    // The weights moved: the comparison is not between two untouched initialisations.
    const fresh = await (await startCluster(tinyConfig({ model, workers: 1, batchSize: 20, maxRounds: 0, epochs: 0 }), data)).finish();
    expect(maxRelDiff(fresh.model.weights.D, one.model.weights.D)).toBeGreaterThan(1e-4);
  }, 60_000);

  it('the same seed and worker count give bit-identical weights; another seed does not', async () => {
    const data = smallData(120);
    const run = async (seed: number) => (await startCluster(tinyConfig({ seed, maxRounds: 8 }), data)).finish();
    const a = await run(7);
    const b = await run(7);
    const c = await run(8);
    expect(Buffer.from(a.model.weights.G.buffer).equals(Buffer.from(b.model.weights.G.buffer))).toBe(true);
    expect(Buffer.from(a.model.weights.D.buffer).equals(Buffer.from(b.model.weights.D.buffer))).toBe(true);
    expect(Buffer.from(a.model.weights.G.buffer).equals(Buffer.from(c.model.weights.G.buffer))).toBe(false);
  }, 60_000);

  it('uses every sample exactly once per epoch and writes metrics, grids and a checkpoint', async () => {
    const data = smallData(95);
    const coord = await (await startCluster(tinyConfig({ workers: 3, batchSize: 10, epochs: 2 }), data)).finish();
    expect(coord.epochLog).toHaveLength(2);
    for (const e of coord.epochLog) expect(e).toMatchObject({ samples: 95, usedOnce: 95, missing: 0, duplicated: 0, rounds: 4 });
    const lines = readFileSync(join(coord.runDir.path, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l));
    expect(lines).toHaveLength(8);
    // 95 samples over 3 workers at 10: three rounds of 30, then a last round of 5 (2+2+1).
    expect(lines.slice(0, 4).map((l) => l.samples)).toEqual([30, 30, 30, 5]);
    for (const l of lines) {
      for (const k of ['d_loss', 'g_loss', 'd_real', 'd_fake', 'samples_per_s', 'compute_ms', 'transfer_ms', 'reduce_ms', 'bytes_in', 'bytes_out']) {
        expect(Number.isFinite(l[k]), k).toBe(true);
      }
    }
    for (const f of ['config.json', 'checkpoint.bin', 'samples/epoch-001.png', 'samples/epoch-002.png', 'samples/final.png']) {
      expect(existsSync(join(coord.runDir.path, f)), f).toBe(true);
    }
  }, 60_000);
});
