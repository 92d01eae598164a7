import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TaskMsg } from '../shared/codec.js';
import { GanModel } from '../shared/gan.js';
import { buildBatch } from '../shared/batch.js';
import { netLayout } from '../shared/model.js';
import { smallData, startCluster, tinyConfig, tinyModel, useWasm } from './helpers.js';

const cgan = { ...tinyModel, kind: 'cgan' as const };

describe('conditional GAN', () => {
  it('adds the one-hot label to the inputs of G and D', () => {
    const g = netLayout(cgan, 'G');
    const d = netLayout(cgan, 'D');
    expect(g.params[0]!.shape).toEqual([cgan.noiseDim + 10, cgan.gHidden[0]]);
    expect(d.params[0]!.shape).toEqual([784 + 10, cgan.dHidden[0]]);
    expect(netLayout(tinyModel, 'D').params[0]!.shape).toEqual([784, tinyModel.dHidden[0]]);
  });

  it('ships labels with the shard: every task row carries the true label of its sample', async () => {
    const data = smallData(60);
    const seen: { ids: number[]; labels: number[] }[] = [];
    const wrongImages: number[] = [];
    const cluster = await startCluster(tinyConfig({ model: cgan, workers: 2, batchSize: 10, epochs: 1 }), data, { startWorkers: 0 });
    for (let i = 0; i < 2; i++) {
      const w = cluster.addWorker({
        beforeTask: (t: TaskMsg) => {
          // Build the batch exactly as the worker will, from what the worker was shipped.
          const store = (w as unknown as { store: { label(id: number): number; image(id: number): Uint8Array } }).store;
          const b = buildBatch(cgan, { seed: 1, epoch: t.epoch, phase: t.phase }, t.ids, store);
          seen.push({ ids: [...t.ids], labels: [...b.labels!] });
          for (const id of t.ids) {
            if (!Buffer.from(store.image(id)).equals(Buffer.from(data.images.subarray(id * 784, id * 784 + 784)))) wrongImages.push(id);
          }
        },
      });
    }
    const coord = await cluster.finish();
    expect(coord.epochLog[0]).toMatchObject({ usedOnce: 60, missing: 0, duplicated: 0 });
    expect(seen.length).toBeGreaterThan(0);
    expect(wrongImages).toEqual([]);
    for (const s of seen) s.ids.forEach((id, i) => expect(s.labels[i]).toBe(data.labels[id]));
  });

  it('a label changes what G draws; labels out of range are refused', async () => {
    await useWasm();
    const m = new GanModel(cgan);
    const { initWeights } = await import('../shared/model.js');
    m.setWeights('G', initWeights(m.g, 3));
    m.setWeights('D', initWeights(m.d, 3));
    const noise = new Float32Array(2 * cgan.noiseDim).fill(0.5);
    const out = m.generate(noise, new Uint8Array([1, 7]));
    expect(out.subarray(0, 784)).not.toEqual(out.subarray(784));
    expect(() => m.generate(noise, new Uint8Array([1, 12]))).toThrow(/label 12 out of range/);
    expect(() => m.generate(noise)).toThrow(/needs one label per row/);
    m.dispose();
  });

  it('generate draws a chosen digit, one row per digit with --digit all, and refuses bad digits', async () => {
    const cluster = await startCluster(tinyConfig({ model: cgan, workers: 1, batchSize: 20, maxRounds: 2 }), smallData(40));
    const coord = await cluster.finish();
    expect(existsSync(join(coord.runDir, 'samples', 'final.png'))).toBe(true);
    const gen = join(process.cwd(), 'dist', 'coordinator', 'generate-main.js');
    const out = join(coord.runDir, 'sevens.png');
    execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir, '--digit', '7', '--count', '16', '--out', out, '--backend', 'wasm']);
    expect(readFileSync(out).subarray(1, 4).toString()).toBe('PNG');
    const all = join(coord.runDir, 'all.png');
    execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir, '--digit', 'all', '--count', '4', '--out', all, '--backend', 'wasm']);
    // 4 columns x 10 rows of 28 px with 2 px borders.
    const png = readFileSync(all);
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([4 * 30 + 2, 10 * 30 + 2]);
    for (const bad of ['12', '-1', 'seven']) {
      const r = spawnSync(process.execPath, [gen, '--checkpoint', coord.runDir, '--digit', bad, '--out', join(coord.runDir, 'x.png')], { encoding: 'utf8' });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/digit 0-9/);
      expect(existsSync(join(coord.runDir, 'x.png'))).toBe(false);
    }
  });
});
