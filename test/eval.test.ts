import { readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs';
import '@tensorflow/tfjs-backend-wasm';
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { type Classifier, getClassifier } from '../eval/classifier.js';
import { datasetToUnit, evaluateImages, formatEvalTable } from '../eval/score-images.js';
import {
  classCoverage,
  classHistogram,
  classifierScore,
  conditionalAccuracy,
  featureStats,
  frechetDistance,
  frechetDistanceOf,
  klFromUniform,
  sqrtPsd,
  symmetricEigen,
} from '../eval/metrics.js';
import { type Dataset, type MnistSplits, loadEmbedded } from '../shared/data/mnist.js';
import { Rng } from '../shared/compute/rng.js';
import { evaluateRun } from '../cli/evaluate.js';
import { smallData, startCluster, tempDir, tinyConfig, tinyModel } from './helpers.js';

beforeAll(async () => {
  await tf.setBackend('wasm');
  await tf.ready();
});

/** Rows of N(mean, L L^T) from a seeded generator. */
function gaussian(n: number, mean: number[], chol: number[][], seed: number): Float64Array {
  const d = mean.length;
  const rng = new Rng(seed, 77);
  const out = new Float64Array(n * d);
  const z = new Float64Array(d);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < d; j++) z[j] = rng.normal();
    for (let r = 0; r < d; r++) {
      let v = mean[r]!;
      for (let c = 0; c <= r; c++) v += chol[r]![c]! * z[c]!;
      out[i * d + r] = v;
    }
  }
  return out;
}

describe('metrics', () => {
  it('Jacobi eigen-decomposition reconstructs a symmetric matrix and its square root', () => {
    const dim = 6;
    const rng = new Rng(3);
    const b = Array.from({ length: dim * dim }, () => rng.normal());
    const a = new Float64Array(dim * dim);
    for (let i = 0; i < dim; i++) for (let j = 0; j < dim; j++) for (let k = 0; k < dim; k++) a[i * dim + j]! += b[i * dim + k]! * b[j * dim + k]!;
    const { values, vectors } = symmetricEigen(a, dim);
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        let v = 0;
        for (let k = 0; k < dim; k++) v += vectors[i * dim + k]! * values[k]! * vectors[j * dim + k]!;
        expect(v).toBeCloseTo(a[i * dim + j]!, 9);
      }
    }
    const r = sqrtPsd(a, dim);
    for (let i = 0; i < dim; i++) {
      for (let j = 0; j < dim; j++) {
        let v = 0;
        for (let k = 0; k < dim; k++) v += r[i * dim + k]! * r[k * dim + j]!;
        expect(v).toBeCloseTo(a[i * dim + j]!, 9);
      }
    }
  });

  it('Fréchet distance matches the closed form for known Gaussians', () => {
    // Diagonal covariances: FD = |mu1 - mu2|^2 + sum (sqrt(a_i) - sqrt(b_i))^2.
    const diag = (m: number[], v: number[]) => ({ n: 2, dim: m.length, mean: Float64Array.from(m), cov: Float64Array.from(v.flatMap((x, i) => v.map((_, j) => (i === j ? x : 0)))) });
    expect(frechetDistance(diag([0, 0, 0], [1, 4, 9]), diag([1, 2, 0], [4, 1, 9]))).toBeCloseTo(5 + 1 + 1, 10);
    // Non-commuting 2x2 covariances: Tr sqrt(X) = sqrt(Tr X + 2 sqrt(det X)) with X ~ S1 S2.
    const s1 = [2, 0.8, 0.8, 1];
    const s2 = [1, -0.5, -0.5, 3];
    const tr12 = s1[0]! * s2[0]! + s1[1]! * s2[2]! + s1[2]! * s2[1]! + s1[3]! * s2[3]!;
    const det12 = (s1[0]! * s1[3]! - s1[1]! * s1[2]!) * (s2[0]! * s2[3]! - s2[1]! * s2[2]!);
    const expected = 0.25 + 1 + 3 + 4 - 2 * Math.sqrt(tr12 + 2 * Math.sqrt(det12));
    const a = { n: 2, dim: 2, mean: Float64Array.from([0.5, 0]), cov: Float64Array.from(s1) };
    const b = { n: 2, dim: 2, mean: Float64Array.from([0, 1]), cov: Float64Array.from(s2) };
    expect(frechetDistance(a, b)).toBeCloseTo(expected, 10);
    expect(frechetDistance(b, a)).toBeCloseTo(expected, 10);
    // From samples: converges to the closed form.
    const xa = gaussian(100000, [0.5, 0], [[Math.sqrt(2), 0], [0.8 / Math.sqrt(2), Math.sqrt(1 - 0.32)]], 1);
    const xb = gaussian(100000, [0, 1], [[1, 0], [-0.5, Math.sqrt(3 - 0.25)]], 2);
    expect(Math.abs(frechetDistanceOf(xa, xb, 2) - expected)).toBeLessThan(0.05);
  });

  it('Fréchet distance of a set with itself is ~0 and grows with a shift', () => {
    const dim = 16;
    const chol = Array.from({ length: dim }, (_, r) => Array.from({ length: dim }, (_, c) => (c === r ? 1 : c < r ? 0.3 : 0)));
    const x = gaussian(500, new Array(dim).fill(0), chol, 5);
    const s = featureStats(x, dim);
    expect(frechetDistance(s, s)).toBeLessThan(1e-8);
    const shifted = x.map((v, i) => (i % dim === 0 ? v + 2 : v));
    expect(frechetDistanceOf(x, shifted, dim)).toBeCloseTo(4, 6);
  });

  it('classifier score, coverage, KL and conditional accuracy on known predictions', () => {
    const oneHot = (labels: number[]) => Float32Array.from(labels.flatMap((y) => Array.from({ length: 10 }, (_, j) => (j === y ? 1 : 0))));
    const spread = oneHot(Array.from({ length: 100 }, (_, i) => i % 10));
    expect(classifierScore(spread)).toBeCloseTo(10, 6);
    expect(classCoverage(classHistogram(spread))).toBe(10);
    expect(klFromUniform(classHistogram(spread))).toBeCloseTo(0, 12);
    const single = oneHot(new Array(50).fill(3));
    expect(classifierScore(single)).toBeCloseTo(1, 6);
    expect(classCoverage(classHistogram(single))).toBe(1);
    expect(klFromUniform(classHistogram(single))).toBeCloseTo(Math.log(10), 12);
    expect(classifierScore(new Float32Array(100).fill(0.1))).toBeCloseTo(1, 6);
    // 1% threshold: one 7 among 200 samples is below it, two reach it.
    const rare = (k: number) => oneHot([...Array.from({ length: 200 - k }, (_, i) => i % 9), ...new Array(k).fill(9)]);
    expect(classCoverage(classHistogram(rare(1)))).toBe(9);
    expect(classCoverage(classHistogram(rare(2)))).toBe(10);
    expect(conditionalAccuracy(spread, Uint8Array.from({ length: 100 }, (_, i) => (i < 80 ? i % 10 : 0)))).toBeCloseTo(0.82, 12);
  });
});

function subset(ds: Dataset, keep: (label: number, i: number) => boolean): Dataset {
  const ids = Array.from({ length: ds.n }, (_, i) => i).filter((i) => keep(ds.labels[i]!, i));
  const images = new Uint8Array(ids.length * 784);
  ids.forEach((id, i) => images.set(ds.images.subarray(id * 784, id * 784 + 784), i * 784));
  return { ...ds, n: ids.length, images, labels: Uint8Array.from(ids, (i) => ds.labels[i]!), source: `${ds.source}[subset]` };
}

describe('classifier cache', () => {
  const dir = tempDir('gan-eval-');
  const data: MnistSplits = (() => {
    const e = loadEmbedded();
    return { train: subset(e.train, (_, i) => i < 300), test: subset(e.test, (_, i) => i < 100) };
  })();
  const opts = { data, cacheDir: dir, epochs: 1 };
  afterAll(() => rmSync(dir, { recursive: true, force: true }));

  it('trains once, then loads the cached weights; rebuilds a corrupt or truncated file', async () => {
    const lines: string[] = [];
    const log = (s: string) => lines.push(s);
    const first = await getClassifier({ ...opts, log });
    expect(first.trained).toBe(true);
    expect(lines.some((l) => l.includes('training'))).toBe(true);
    const files = readdirSync(dir).filter((f) => f.endsWith('.bin'));
    expect(files).toHaveLength(1);
    const file = join(dir, files[0]!);
    expect(first.cacheFile).toBe(file);

    const before = tf.memory().numTensors;
    const probe = datasetToUnit(data.test);
    const p1 = first.predict(probe);
    expect(tf.memory().numTensors).toBe(before);
    expect(p1.probs.length).toBe(100 * 10);
    expect(p1.features.length).toBe(100 * p1.featureDim);

    lines.length = 0;
    const second = await getClassifier({ ...opts, log });
    expect(second.trained).toBe(false);
    expect(lines.filter((l) => l.includes('training'))).toEqual([]);
    expect(lines.some((l) => l.includes('loaded'))).toBe(true);
    expect(second.testAccuracy).toBe(first.testAccuracy);
    expect(second.predict(probe).probs).toEqual(p1.probs);
    second.dispose();

    // Another training set: another file, not the cached one.
    lines.length = 0;
    const other = await getClassifier({ ...opts, data: { ...data, train: subset(loadEmbedded().train, (_, i) => i >= 300 && i < 500) }, log });
    expect(other.trained).toBe(true);
    other.dispose();
    expect(readdirSync(dir).filter((f) => f.endsWith('.bin'))).toHaveLength(2);

    const good = readFileSync(file);
    const flipped = Buffer.from(good);
    flipped[Math.floor(flipped.length / 2)]! ^= 0x40;
    for (const bad of [flipped, good.subarray(0, good.length - 100), Buffer.alloc(0)]) {
      writeFileSync(file, bad);
      lines.length = 0;
      const rebuilt = await getClassifier({ ...opts, log });
      expect(rebuilt.trained).toBe(true);
      expect(lines.filter((l) => l.includes('unusable'))).toHaveLength(1);
      // Same seed, same data, same backend: the same weights again.
      expect(rebuilt.predict(probe).probs).toEqual(p1.probs);
      rebuilt.dispose();
      const reloaded = await getClassifier({ ...opts, log });
      expect(reloaded.trained).toBe(false);
      reloaded.dispose();
    }
    first.dispose();
  }, 60_000);
});

describe('evaluation against real digits', () => {
  let clf: Classifier;
  const data = loadEmbedded();
  const log: string[] = [];

  beforeAll(async () => {
    // Two passes over the embedded digits make a confident enough judge; cached under .cache/ like
    // the project's own classifier (different settings, so a different file).
    clf = await getClassifier({ data, epochs: 2, log: (s) => log.push(s) });
  }, 600_000);
  afterAll(() => clf?.dispose());

  it('scores real test digits near the ceiling and a one-digit set as one mode', () => {
    expect(clf.testAccuracy).toBeGreaterThan(0.93);
    const real = datasetToUnit(data.test);
    const r = evaluateImages(real, { classifier: clf, real: data.test, train: data.train, asked: data.test.labels });
    expect(r.samples).toBe(data.test.n);
    expect(r.classifierScore).toBeGreaterThan(8.5);
    expect(r.realClassifierScore).toBeCloseTo(r.classifierScore, 10);
    expect(r.coverage).toBe(10);
    expect(r.klUniform).toBeLessThan(0.01);
    expect(r.fd).toBeLessThan(1e-6);
    expect(r.fdFloor).not.toBeNull();
    expect(r.fdFloor!).toBeGreaterThan(0);
    expect(r.conditionalAccuracy).toBeCloseTo(clf.testAccuracy, 10);

    // ~900 zeros: the 1% threshold is 9 images, well above the judge's rare mistakes on zeros.
    const zeros = subset(data.train, (y) => y === 0);
    const s = evaluateImages(datasetToUnit(zeros), { classifier: clf, real: data.test, train: data.train });
    expect(s.coverage).toBe(1);
    expect(s.klUniform).toBeGreaterThan(2);
    expect(s.classifierScore).toBeLessThan(1.5);
    expect(s.fd).toBeGreaterThan(5 * s.fdFloor!);

    const table = formatEvalTable(s);
    expect(table).toMatch(/Fréchet distance/);
    expect(table).toMatch(/1\/10/);
    expect(table).not.toMatch(/conditional/);
  });

  it('evaluate RUN_DIR scores the moving average into eval.json and the latest weights into eval-raw.json', async () => {
    const coord = await (await startCluster(tinyConfig({ model: { ...tinyModel, kind: 'acgan' }, workers: 1, batchSize: 20, maxRounds: 3 }), smallData(60))).finish();
    const opts = { samples: 100, seed: 0, backend: 'wasm' as const };
    const lines: string[] = [];
    const avg = await evaluateRun(coord.runDir.path, opts, (s) => lines.push(s), { epochs: 2 });
    const raw = await evaluateRun(coord.runDir.path, { ...opts, raw: true }, (s) => lines.push(s), { epochs: 2 });
    expect(avg.file).toBe(join(coord.runDir.path, 'eval.json'));
    expect(raw.file).toBe(join(coord.runDir.path, 'eval-raw.json'));
    // The judge of the block above, from its cache: no second training.
    expect(lines.filter((l) => /classifier: loaded/.test(l))).toHaveLength(2);
    expect(lines.filter((l) => /classifier: epoch/.test(l))).toEqual([]);
    const saved = JSON.parse(readFileSync(join(coord.runDir.path, 'eval.json'), 'utf8')) as Record<string, unknown>;
    const savedRaw = JSON.parse(readFileSync(join(coord.runDir.path, 'eval-raw.json'), 'utf8')) as Record<string, unknown>;
    expect(saved).toEqual(avg.result);
    expect(savedRaw).toEqual(raw.result);
    expect(saved).toMatchObject({ model: 'acgan', round: 3, weights: 'average', emaDecay: 0.999, samples: 100 });
    expect(savedRaw).toMatchObject({ weights: 'latest' });
    expect(typeof saved.conditionalAccuracy).toBe('number');
    expect(saved.fd).not.toBe(savedRaw.fd);
  }, 120_000);

  it('ranks noise and blank images far from real digits', () => {
    const rng = new Rng(9);
    const noise = Float32Array.from({ length: 200 * 784 }, () => rng.uniform() * 2 - 1);
    const n = evaluateImages(noise, { classifier: clf, real: data.test, train: data.train });
    const halfReal = evaluateImages(datasetToUnit(subset(data.train, (_, i) => i < 200)), { classifier: clf, real: data.test, train: data.train });
    expect(n.fd).toBeGreaterThan(10 * halfReal.fd);
    expect(halfReal.fd).toBeLessThan(3 * halfReal.fdFloor!);
    expect(n.classifierScore).toBeLessThan(halfReal.classifierScore);
  });
});
