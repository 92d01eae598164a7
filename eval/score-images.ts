/**
 * Judging a set of generated digits against held-out real ones, with the real-vs-real figures
 * beside each number so that a reader can tell "good" from "as good as it gets".
 */
import type { Dataset } from '../shared/data/mnist.js';
import { bytesToUnit } from '../shared/data/pixels.js';
import { permutation } from '../shared/compute/rng.js';
import type { Classifier, Prediction } from './classifier.js';
import {
  COVERAGE_MIN_SHARE,
  type FeatureStats,
  NUM_CLASSES,
  classCoverage,
  classHistogram,
  classifierScore,
  conditionalAccuracy,
  featureStats,
  frechetDistance,
  klFromUniform,
} from './metrics.js';
import { DIGIT_PIXELS } from '../shared/data/digits.js';

export interface EvalResult {
  /** Generated images scored. */
  samples: number;
  /** Fréchet distance, generated vs the real test split, in the classifier's feature space. */
  fd: number;
  /** The same distance for `samples` real training digits vs the test split (null without `train`). */
  fdFloor: number | null;
  /** exp(E KL(p(y|x) || p(y))) on the generated images, 1..10. */
  classifierScore: number;
  /** The same score on the real test split. */
  realClassifierScore: number;
  /** Digits holding at least COVERAGE_MIN_SHARE of the predictions, 0..10. */
  coverage: number;
  /** KL of the predicted-digit histogram from uniform, nats, 0..ln 10. */
  klUniform: number;
  /** Predicted-digit counts, index = digit. */
  histogram: number[];
  /** Share of images classified as the digit asked for (conditional models). */
  conditionalAccuracy?: number;
  /** The classifier's accuracy on real test digits: how far its verdicts can be trusted. */
  classifierTestAccuracy: number;
  /** Where the real reference came from. */
  realSource: string;
}

export interface EvalOptions {
  classifier: Classifier;
  /** Held-out real digits (the test split). */
  real: Dataset;
  /** Real training digits, for the real-vs-real floor of the Fréchet distance. */
  train?: Dataset;
  /** Digit requested for each image (conditional models). */
  asked?: Uint8Array;
}

/** Bytes 0..255 -> [-1, 1], the scale generated images come in. */
export function datasetToUnit(ds: Dataset, ids?: ArrayLike<number>): Float32Array {
  const n = ids ? ids.length : ds.n;
  const out = new Float32Array(n * DIGIT_PIXELS);
  for (let i = 0; i < n; i++) {
    const off = (ids ? ids[i]! : i) * DIGIT_PIXELS;
    bytesToUnit(ds.images, off, out, i * DIGIT_PIXELS, DIGIT_PIXELS);
  }
  return out;
}

interface RealRef {
  stats: FeatureStats;
  score: number;
  /** Floor per sample count. */
  floors: Map<number, number>;
}

// Scoring the real digits costs as much as scoring the samples; a run evaluates every few epochs
// against the same split with the same classifier, so keep it per (classifier, split).
const refCache = new WeakMap<Classifier, WeakMap<Dataset, RealRef>>();

function realRef(classifier: Classifier, real: Dataset): RealRef {
  let perClassifier = refCache.get(classifier);
  if (!perClassifier) {
    perClassifier = new WeakMap();
    refCache.set(classifier, perClassifier);
  }
  let ref = perClassifier.get(real);
  if (!ref) {
    const p = classifier.predict(datasetToUnit(real));
    ref = { stats: featureStats(p.features, p.featureDim), score: classifierScore(p.probs), floors: new Map() };
    perClassifier.set(real, ref);
  }
  return ref;
}

/**
 * FD of `n` real training digits against the test split: what a perfect generator would score at
 * this sample count. FD is biased upwards for small samples, so the floor must use the same n.
 * The subset is a fixed seeded draw, so the floor is the same number every time.
 */
function fdFloor(classifier: Classifier, ref: RealRef, train: Dataset, n: number): number {
  const m = Math.min(n, train.n);
  const cached = ref.floors.get(m);
  if (cached !== undefined) return cached;
  const ids = permutation(train.n, 0xf100, train.n).subarray(0, m);
  const p = classifier.predict(datasetToUnit(train, ids));
  const fd = frechetDistance(featureStats(p.features, p.featureDim), ref.stats);
  ref.floors.set(m, fd);
  return fd;
}

export function evaluatePrediction(p: Prediction, opts: EvalOptions): EvalResult {
  const samples = p.probs.length / NUM_CLASSES;
  if (samples < 2) throw new Error('evaluate: need at least 2 images');
  const ref = realRef(opts.classifier, opts.real);
  const counts = classHistogram(p.probs);
  const result: EvalResult = {
    samples,
    fd: frechetDistance(featureStats(p.features, p.featureDim), ref.stats),
    fdFloor: opts.train ? fdFloor(opts.classifier, ref, opts.train, samples) : null,
    classifierScore: classifierScore(p.probs),
    realClassifierScore: ref.score,
    coverage: classCoverage(counts),
    klUniform: klFromUniform(counts),
    histogram: Array.from(counts),
    classifierTestAccuracy: opts.classifier.testAccuracy,
    realSource: opts.real.source,
  };
  if (opts.asked) result.conditionalAccuracy = conditionalAccuracy(p.probs, opts.asked);
  return result;
}

/** Score generated images (n x 784 in [-1, 1]). */
export function evaluateImages(images: Float32Array, opts: EvalOptions): EvalResult {
  if (images.length % DIGIT_PIXELS !== 0) throw new Error(`evaluate: ${images.length} values is not a whole number of 28x28 images`);
  if (opts.asked && opts.asked.length !== images.length / DIGIT_PIXELS) {
    throw new Error(`evaluate: ${opts.asked.length} requested digits for ${images.length / DIGIT_PIXELS} images`);
  }
  return evaluatePrediction(opts.classifier.predict(images), opts);
}

const fmt = (x: number, digits: number): string => (Number.isFinite(x) ? x.toFixed(digits) : String(x));
const pct = (x: number): string => `${fmt(x * 100, 1)}%`;

/** An aligned table for a terminal: metric, value, and how to read it. */
export function formatEvalTable(r: EvalResult): string {
  const rows: [string, string, string][] = [
    ['samples', String(r.samples), `generated images scored against ${r.realSource}`],
    [
      'Fréchet distance',
      fmt(r.fd, 2),
      r.fdFloor === null
        ? 'lower is better; 0 = same feature statistics as real digits'
        : `lower is better; real-vs-real floor ${fmt(r.fdFloor, 2)} at this sample count`,
    ],
    ['classifier score', fmt(r.classifierScore, 2), `higher is better, max 10; real test digits score ${fmt(r.realClassifierScore, 2)}`],
    [
      'digits covered',
      `${r.coverage}/${NUM_CLASSES}`,
      `digits with >= ${fmt(COVERAGE_MIN_SHARE * 100, 0)}% of the samples; below 10 means modes are missing`,
    ],
    ['KL from uniform', fmt(r.klUniform, 3), 'nats; 0 = every digit equally often, 2.303 = one digit only'],
  ];
  if (r.conditionalAccuracy !== undefined) {
    rows.push(['conditional accuracy', pct(r.conditionalAccuracy), 'share classified as the digit asked for; higher is better']);
  }
  rows.push(['classifier accuracy', pct(r.classifierTestAccuracy), 'the judge on real test digits; the scores are only as good as this']);
  const w0 = Math.max(...rows.map((x) => x[0].length));
  const w1 = Math.max(...rows.map((x) => x[1].length));
  const lines = rows.map(([a, b, c]) => `${a.padEnd(w0)}  ${b.padStart(w1)}  ${c}`);
  lines.push(`${'classified as'.padEnd(w0)}  ${r.histogram.map((c, d) => `${d}:${c}`).join(' ')}`);
  return lines.join('\n');
}
