import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import type { TaskMsg } from '../shared/codec.js';
import { GanModel } from '../shared/gan.js';
import { type SampleSource, buildBatch } from '../shared/batch.js';
import { netLayout } from '../shared/model.js';
import { smallData, startCluster, tinyConfig, tinyModel, useWasm } from './helpers.js';

const cgan = { ...tinyModel, kind: 'cgan' as const };
const acgan = { ...tinyModel, kind: 'acgan' as const, dropout: 0 };

/** D of a dense net in plain JavaScript: LeakyReLU hidden layers, linear output. */
function dLogits(w: Float32Array, widths: number[], x: Float32Array, n: number, leak: number): Float64Array[] {
  const out: Float64Array[] = [];
  for (let r = 0; r < n; r++) {
    let h = Float64Array.from(x.subarray(r * widths[0]!, (r + 1) * widths[0]!));
    let off = 0;
    for (let l = 0; l + 1 < widths.length; l++) {
      const [fi, fo] = [widths[l]!, widths[l + 1]!];
      const next = new Float64Array(fo);
      for (let j = 0; j < fo; j++) {
        let s = w[off + fi * fo + j]!;
        for (let i = 0; i < fi; i++) s += h[i]! * w[off + i * fo + j]!;
        next[j] = l + 2 < widths.length && s < 0 ? s * leak : s;
      }
      off += fi * fo + fo;
      h = next;
    }
    out.push(h);
  }
  return out;
}

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
      cluster.addWorker({
        testBeforeTask: (t: TaskMsg, store: SampleSource) => {
          // Build the batch exactly as the worker will, from what the worker was shipped.
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

  it('acgan: G takes the label, D takes the image alone and answers real/fake plus 10 class logits', () => {
    const g = netLayout(acgan, 'G');
    const d = netLayout(acgan, 'D');
    expect(g.params[0]!.shape).toEqual([acgan.noiseDim + 10, acgan.gHidden[0]]);
    expect(d.params[0]!.shape).toEqual([784, acgan.dHidden[0]]);
    expect(d.params.at(-2)!.shape).toEqual([acgan.dHidden.at(-1), 11]);
  });

  it('acgan: the D loss is BCE real/fake plus the class cross-entropy on real and fake rows, and its gradient matches finite differences', async () => {
    await useWasm();
    const { initWeights } = await import('../shared/model.js');
    const m = new GanModel(acgan);
    const wG = initWeights(m.g, 5);
    const wD = initWeights(m.d, 5);
    m.setWeights('G', wG);
    m.setWeights('D', wD);
    const data = smallData(6);
    const ids = [0, 1, 2, 3, 4, 5];
    const src = { image: (id: number) => data.images.subarray(id * 784, id * 784 + 784), label: (id: number) => data.labels[id]! };
    const b = buildBatch(acgan, { seed: 2, epoch: 0, phase: 'D' }, ids, src);
    expect([...b.labels!]).toEqual(ids.map((id) => data.labels[id]));
    const n = ids.length;
    const lossAt = (w: Float32Array): number => {
      const fake = m.generate(b.noise, b.labels);
      const x = new Float32Array(2 * n * 784);
      x.set(b.real!);
      x.set(fake, n * 784);
      const logits = dLogits(w, m.d.widths, x, 2 * n, acgan.leak);
      let total = 0;
      logits.forEach((z, r) => {
        const s = z[0]!;
        const target = r < n ? 1 : 0;
        total += Math.max(s, 0) - s * target + Math.log1p(Math.exp(-Math.abs(s)));
        const cls = Array.from(z.subarray(1));
        const mx = Math.max(...cls);
        const lse = mx + Math.log(cls.reduce((a, v) => a + Math.exp(v - mx), 0));
        total += lse - cls[b.labels![r % n]!]!;
      });
      return total / n;
    };
    const r = m.dStep(b);
    expect(r.loss).toBeCloseTo(lossAt(wD), 4);
    // Central differences on a few weights of the output layer (the class logits included).
    const last = m.d.params.at(-2)!;
    for (const k of [0, 1, 5, 10, 11 * 3 + 7]) {
      const i = last.offset + k;
      const h = 1e-2;
      const up = wD.slice();
      up[i]! += h;
      const down = wD.slice();
      down[i]! -= h;
      const fd = (lossAt(up) - lossAt(down)) / (2 * h);
      expect(Math.abs(fd - r.grads[i]!)).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
    }
    // G's loss adds the class cross-entropy of its fakes against the digits asked for.
    const bg = buildBatch(acgan, { seed: 2, epoch: 0, phase: 'G' }, ids, src);
    const rg = m.gStep(bg);
    const logits = dLogits(wD, m.d.widths, m.generate(bg.noise, bg.labels), n, acgan.leak);
    let gl = 0;
    logits.forEach((z, r) => {
      const s = z[0]!;
      gl += Math.max(s, 0) - s + Math.log1p(Math.exp(-Math.abs(s)));
      const cls = Array.from(z.subarray(1));
      const mx = Math.max(...cls);
      gl += mx + Math.log(cls.reduce((a, v) => a + Math.exp(v - mx), 0)) - cls[bg.labels![r]!]!;
    });
    expect(rg.loss).toBeCloseTo(gl / n, 4);
    m.dispose();
  });

  it('generate draws a chosen digit, one row per digit with --digit all, and refuses bad digits', async () => {
    const cluster = await startCluster(tinyConfig({ model: cgan, workers: 1, batchSize: 20, maxRounds: 2 }), smallData(40));
    const coord = await cluster.finish();
    expect(existsSync(join(coord.runDir.path, 'samples', 'final.png'))).toBe(true);
    const gen = join(process.cwd(), 'dist', 'cli', 'generate.js');
    const out = join(coord.runDir.path, 'sevens.png');
    execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir.path, '--digit', '7', '--count', '16', '--out', out, '--backend', 'wasm']);
    expect(readFileSync(out).subarray(1, 4).toString()).toBe('PNG');
    const all = join(coord.runDir.path, 'all.png');
    execFileSync(process.execPath, [gen, '--checkpoint', coord.runDir.path, '--digit', 'all', '--count', '4', '--out', all, '--backend', 'wasm']);
    // 4 columns x 10 rows of 28 px with 2 px borders.
    const png = readFileSync(all);
    expect([png.readUInt32BE(16), png.readUInt32BE(20)]).toEqual([4 * 30 + 2, 10 * 30 + 2]);
    for (const bad of ['12', '-1', 'seven']) {
      const r = spawnSync(process.execPath, [gen, '--checkpoint', coord.runDir.path, '--digit', bad, '--out', join(coord.runDir.path, 'x.png')], { encoding: 'utf8' });
      expect(r.status).not.toBe(0);
      expect(r.stderr).toMatch(/digit 0-9/);
      expect(existsSync(join(coord.runDir.path, 'x.png'))).toBe(false);
    }
  });
});
