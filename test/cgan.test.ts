import { describe, expect, it } from 'vitest';
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { Kind } from '../shared/wire/codec.js';
import { digitBytes } from '../shared/data/digits.js';
import { GanModel, wrongLabels } from '../shared/compute/gan.js';
import { type SampleSource, buildBatch } from '../shared/compute/batch.js';
import { initWeights, modelConfigProblem, modelSignature, netLayout } from '../shared/compute/model.js';
import { centralDifference, smallData, startCluster, tinyConfig, tinyModel, useWasm } from './helpers.js';

/** The concat cGAN of older builds (no dLabel): the one-hot label beside D's input. */
const cgan = { ...tinyModel, kind: 'cgan' as const };
/** The projection cGAN new runs train (Miyato & Koyama 2018). */
const proj = { ...tinyModel, kind: 'cgan' as const, dLabel: 'projection' as const, dropout: 0 };
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
      // What this worker was shipped, read off its wire.
      const images = new Map<number, Uint8Array>();
      const labels = new Map<number, number>();
      const store: SampleSource = { image: (id) => images.get(id)!, label: (id) => labels.get(id)! };
      cluster.addWorker({ faults: { inbound: (m) => {
        if (m.k === Kind.Shard) m.ids.forEach((id, j) => (images.set(id, digitBytes(m.images, j).slice()), labels.set(id, m.labels[j]!)));
        if (m.k !== Kind.Task) return;
        // Build the batch exactly as the worker will, from what the worker was shipped.
        const b = buildBatch(cgan, { seed: 1, epoch: m.epoch, phase: m.phase }, m.ids, store);
        seen.push({ ids: [...m.ids], labels: [...b.labels!] });
        for (const id of m.ids) {
          if (!images.has(id) || !Buffer.from(store.image(id)).equals(Buffer.from(digitBytes(data.images, id)))) wrongImages.push(id);
        }
      } } });
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
    const { initWeights } = await import('../shared/compute/model.js');
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
    const { initWeights } = await import('../shared/compute/model.js');
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
      const fd = centralDifference(lossAt, wD, i, 1e-2);
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
  it('projection cgan: D takes the image alone, its layout ends with a 10 x (last hidden) embedding, and the signature says so', () => {
    const d = netLayout(proj, 'D');
    const g = netLayout(proj, 'G');
    expect(g.params[0]!.shape).toEqual([proj.noiseDim + 10, proj.gHidden[0]]);
    expect(d.params[0]!.shape).toEqual([784, proj.dHidden[0]]);
    expect(d.params.at(-2)!.shape).toEqual([1]);
    expect(d.params.at(-1)).toMatchObject({ name: 'D.embed', shape: [10, proj.dHidden.at(-1)] });
    expect(d.total).toBe(d.params.at(-1)!.offset + 10 * proj.dHidden.at(-1)!);
    // A concat checkpoint or worker cannot be mistaken for a projection one.
    expect(modelSignature(proj)).not.toBe(modelSignature(cgan));
    expect(modelSignature(proj)).toContain(`10x${proj.dHidden.at(-1)}`);
    // The embedding starts like the output layer it adds to: U(-1/sqrt(width), 1/sqrt(width)).
    const w = initWeights(d, 4);
    const e = d.params.at(-1)!;
    const bound = 1 / Math.sqrt(proj.dHidden.at(-1)!);
    const values = w.subarray(e.offset, e.offset + e.size);
    expect(Math.max(...values.map(Math.abs))).toBeLessThanOrEqual(bound);
    expect(Math.max(...values.map(Math.abs))).toBeGreaterThan(bound * 0.9);
    expect(modelConfigProblem({ ...proj, dLabel: 'sideways' })).toMatch(/dLabel must be one of concat, projection/);
    expect(modelConfigProblem(proj)).toBeNull();
    expect(modelConfigProblem(cgan)).toBeNull();
  });

  it('projection cgan: logit = psi(phi(x)) + <embed(y), phi(x)>, and the D and G gradients match finite differences', async () => {
    await useWasm();
    const m = new GanModel(proj);
    const wG = initWeights(m.g, 6);
    const wD = initWeights(m.d, 6);
    // A larger embedding than the initial one, so the projection term matters in the check.
    const e = m.d.params.at(-1)!;
    for (let i = 0; i < e.size; i++) wD[e.offset + i]! *= 8;
    m.setWeights('G', wG);
    m.setWeights('D', wD);
    const data = smallData(6);
    const ids = [0, 1, 2, 3, 4, 5];
    const n = ids.length;
    const src = { image: (id: number) => data.images.subarray(id * 784, id * 784 + 784), label: (id: number) => data.labels[id]! };
    const b = buildBatch(proj, { seed: 3, epoch: 0, phase: 'D' }, ids, src);
    const width = proj.dHidden.at(-1)!;
    // Reference in plain JavaScript: phi from the hidden layers, then the two terms.
    const logits = (w: Float32Array, x: Float32Array, labels: Uint8Array): number[] => {
      const rows = labels.length;
      const phi = dLogits(w, [784, ...proj.dHidden], x, rows, proj.leak).map((h) => h.map((v) => (v < 0 ? v * proj.leak : v)));
      const last = m.d.params.at(-3)!;
      const bias = w[m.d.params.at(-2)!.offset]!;
      return phi.map((h, r) => {
        let s = bias;
        for (let j = 0; j < width; j++) s += h[j]! * (w[last.offset + j]! + w[e.offset + labels[r]! * width + j]!);
        return s;
      });
    };
    const bce = (s: number, t: number) => Math.max(s, 0) - s * t + Math.log1p(Math.exp(-Math.abs(s)));
    const dLossAt = (w: Float32Array): number => {
      const fake = m.generate(b.noise, b.labels);
      const x = new Float32Array(2 * n * 784);
      x.set(b.real!);
      x.set(fake, n * 784);
      const both = new Uint8Array([...b.labels!, ...b.labels!]);
      return logits(w, x, both).reduce((a, s, r) => a + bce(s, r < n ? 1 : 0), 0) / n;
    };
    // discriminate() is D in evaluation mode on the labels the images claim.
    const p = m.discriminate(b.real!, b.labels);
    logits(wD, b.real!, b.labels!).forEach((s, r) => expect(p[r]).toBeCloseTo(1 / (1 + Math.exp(-s)), 5));
    const r = m.dStep(b);
    expect(r.loss).toBeCloseTo(dLossAt(wD), 4);
    for (const i of [e.offset, e.offset + 3, e.offset + 7 * width + 5, m.d.params.at(-3)!.offset + 2, m.d.params.at(-2)!.offset]) {
      const fd = centralDifference(dLossAt, wD, i, 1e-2);
      expect(Math.abs(fd - r.grads[i]!)).toBeLessThan(2e-3 + 2e-2 * Math.abs(fd));
    }
    // G's non-saturating loss goes through the same projection, with the digits asked for.
    const bg = buildBatch(proj, { seed: 3, epoch: 0, phase: 'G' }, ids, src);
    const rg = m.gStep(bg);
    const gl = logits(wD, m.generate(bg.noise, bg.labels), bg.labels!).reduce((a, s) => a + bce(s, 1), 0) / n;
    expect(rg.loss).toBeCloseTo(gl, 4);
    // The label changes D's answer on the same image.
    const other = b.labels!.map((y) => (y + 1) % 10);
    expect([...m.discriminate(b.real!, other)]).not.toEqual([...p]);
    m.dispose();
  });
  it('matching-aware projection cgan (Reed et al. 2016): D also sees real digits with a wrong label as fake, weighted as the fakes', async () => {
    await useWasm();
    const ma = { ...proj, matchingAware: true };
    expect(modelSignature(ma)).toContain(';matching-aware');
    expect(modelSignature({ ...ma, kind: 'acgan' as const })).not.toContain('matching-aware');
    expect(modelConfigProblem({ ...ma, matchingAware: 'yes' })).toMatch(/matchingAware/);
    const data = smallData(40);
    const ids = Array.from({ length: 40 }, (_, i) => i);
    const n = ids.length;
    const src = { image: (id: number) => data.images.subarray(id * 784, id * 784 + 784), label: (id: number) => data.labels[id]! };
    const b = buildBatch(ma, { seed: 4, epoch: 0, phase: 'D' }, ids, src);
    // Never the row's own label, every other label used, and a function of the row alone.
    const wrong = wrongLabels(b.labels!, b.noise, ma.noiseDim, 10);
    wrong.forEach((y, i) => expect(y).not.toBe(b.labels![i]));
    expect(new Set(wrong).size).toBe(10);
    const tail = wrongLabels(b.labels!.subarray(10), b.noise.subarray(10 * ma.noiseDim), ma.noiseDim, 10);
    expect([...tail]).toEqual([...wrong.subarray(10)]);
    const m = new GanModel(ma);
    m.setWeights('G', initWeights(m.g, 8));
    const wD = initWeights(m.d, 8);
    const e = m.d.params.at(-1)!;
    for (let i = 0; i < e.size; i++) wD[e.offset + i]! *= 8;
    m.setWeights('D', wD);
    // discriminate() is D without dropout: the reference loss from its probabilities.
    const bce = (p: number, t: number) => -(t * Math.log(p) + (1 - t) * Math.log(1 - p));
    const real = m.discriminate(b.real!, b.labels);
    const fake = m.discriminate(m.generate(b.noise, b.labels), b.labels);
    const mism = m.discriminate(b.real!, wrong);
    let expected = 0;
    for (let i = 0; i < n; i++) expected += bce(real[i]!, 1) / n + 0.5 * (bce(fake[i]!, 0) + bce(mism[i]!, 0)) / n;
    const r = m.dStep(b);
    expect(r.loss).toBeCloseTo(expected, 4);
    expect(r.dReal).toBeCloseTo(real.reduce((a, v) => a + v, 0) / n, 5);
    expect(r.dFake).toBeCloseTo(fake.reduce((a, v) => a + v, 0) / n, 5);
    // Off, the same batch gives the plain loss.
    const plain = new GanModel(proj);
    plain.setWeights('G', initWeights(m.g, 8));
    plain.setWeights('D', wD);
    let plainExpected = 0;
    for (let i = 0; i < n; i++) plainExpected += (bce(real[i]!, 1) + bce(fake[i]!, 0)) / n;
    expect(plain.dStep(b).loss).toBeCloseTo(plainExpected, 4);
    plain.dispose();
    m.dispose();
  });
});
