/**
 * Sample-quality metrics on plain arrays, free of TensorFlow.js: everything here is float64 and
 * deterministic, so the same predictions always give the same numbers.
 */

export const NUM_CLASSES = 10;

/**
 * A digit counts as covered when at least this share of the samples is classified as it (and at
 * least one sample). 1% is a tenth of the fair 10% share: a generator that makes a digit that
 * rarely has lost it for practical purposes, while classifier noise on a healthy sample set stays
 * well above it.
 */
export const COVERAGE_MIN_SHARE = 0.01;

export interface FeatureStats {
  n: number;
  dim: number;
  mean: Float64Array;
  /** dim x dim, row-major, normalised by n - 1. */
  cov: Float64Array;
}

/** Mean and (unbiased) covariance of n rows of dim features. */
export function featureStats(features: ArrayLike<number>, dim: number): FeatureStats {
  if (dim <= 0 || features.length % dim !== 0) throw new Error(`featureStats: ${features.length} values is not a whole number of ${dim}-dim rows`);
  const n = features.length / dim;
  if (n < 2) throw new Error('featureStats: need at least 2 rows for a covariance');
  const mean = new Float64Array(dim);
  for (let i = 0; i < n; i++) for (let j = 0; j < dim; j++) mean[j]! += features[i * dim + j]!;
  for (let j = 0; j < dim; j++) mean[j]! /= n;
  const cov = new Float64Array(dim * dim);
  const row = new Float64Array(dim);
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < dim; j++) row[j] = features[i * dim + j]! - mean[j]!;
    for (let a = 0; a < dim; a++) {
      const ra = row[a]!;
      if (ra === 0) continue;
      const off = a * dim;
      for (let b = a; b < dim; b++) cov[off + b]! += ra * row[b]!;
    }
  }
  for (let a = 0; a < dim; a++) {
    for (let b = a; b < dim; b++) {
      const v = cov[a * dim + b]! / (n - 1);
      cov[a * dim + b] = v;
      cov[b * dim + a] = v;
    }
  }
  return { n, dim, mean, cov };
}

/**
 * Eigen-decomposition of a symmetric matrix by cyclic Jacobi rotations: slow for big matrices but
 * accurate to working precision for the few hundred dimensions used here, and needs no library.
 * Returns eigenvalues and the eigenvectors as the columns of a row-major matrix.
 */
export function symmetricEigen(a: ArrayLike<number>, dim: number): { values: Float64Array; vectors: Float64Array } {
  const m = Float64Array.from(a as ArrayLike<number>);
  if (m.length !== dim * dim) throw new Error(`symmetricEigen: ${m.length} values for a ${dim}x${dim} matrix`);
  const v = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) v[i * dim + i] = 1;
  let scale = 0;
  for (let i = 0; i < m.length; i++) scale += m[i]! * m[i]!;
  const tol = 1e-30 * Math.max(scale, 1e-300);
  for (let sweep = 0; sweep < 100; sweep++) {
    let off = 0;
    for (let p = 0; p < dim; p++) for (let q = p + 1; q < dim; q++) off += m[p * dim + q]! * m[p * dim + q]!;
    if (off <= tol) break;
    for (let p = 0; p < dim - 1; p++) {
      for (let q = p + 1; q < dim; q++) {
        const apq = m[p * dim + q]!;
        if (apq === 0) continue;
        const app = m[p * dim + p]!;
        const aqq = m[q * dim + q]!;
        // Rotation angle from the stable formulas of Golub & Van Loan (tan of the smaller angle).
        const theta = (aqq - app) / (2 * apq);
        const t = Math.sign(theta || 1) / (Math.abs(theta) + Math.sqrt(theta * theta + 1));
        const c = 1 / Math.sqrt(t * t + 1);
        const s = t * c;
        for (let k = 0; k < dim; k++) {
          const mkp = m[k * dim + p]!;
          const mkq = m[k * dim + q]!;
          m[k * dim + p] = c * mkp - s * mkq;
          m[k * dim + q] = s * mkp + c * mkq;
        }
        for (let k = 0; k < dim; k++) {
          const mpk = m[p * dim + k]!;
          const mqk = m[q * dim + k]!;
          m[p * dim + k] = c * mpk - s * mqk;
          m[q * dim + k] = s * mpk + c * mqk;
        }
        m[p * dim + q] = 0;
        m[q * dim + p] = 0;
        for (let k = 0; k < dim; k++) {
          const vkp = v[k * dim + p]!;
          const vkq = v[k * dim + q]!;
          v[k * dim + p] = c * vkp - s * vkq;
          v[k * dim + q] = s * vkp + c * vkq;
        }
      }
    }
  }
  const values = new Float64Array(dim);
  for (let i = 0; i < dim; i++) values[i] = m[i * dim + i]!;
  return { values, vectors: v };
}

/** Square root of a symmetric positive semi-definite matrix; round-off negative eigenvalues count as 0. */
export function sqrtPsd(a: ArrayLike<number>, dim: number): Float64Array {
  const { values, vectors } = symmetricEigen(a, dim);
  const out = new Float64Array(dim * dim);
  for (let k = 0; k < dim; k++) {
    const r = Math.sqrt(Math.max(values[k]!, 0));
    if (r === 0) continue;
    for (let i = 0; i < dim; i++) {
      const vik = vectors[i * dim + k]! * r;
      if (vik === 0) continue;
      for (let j = 0; j < dim; j++) out[i * dim + j]! += vik * vectors[j * dim + k]!;
    }
  }
  return out;
}

function matMul(a: Float64Array, b: Float64Array, dim: number): Float64Array {
  const out = new Float64Array(dim * dim);
  for (let i = 0; i < dim; i++) {
    for (let k = 0; k < dim; k++) {
      const aik = a[i * dim + k]!;
      if (aik === 0) continue;
      for (let j = 0; j < dim; j++) out[i * dim + j]! += aik * b[k * dim + j]!;
    }
  }
  return out;
}

/**
 * Fréchet distance between the Gaussians fitted to two feature sets:
 *   ||mu1 - mu2||^2 + Tr(S1) + Tr(S2) - 2 Tr((S1^1/2 S2 S1^1/2)^1/2).
 * Tr((S1 S2)^1/2) is taken through the symmetric form S1^1/2 S2 S1^1/2, whose eigenvalues are real
 * and non-negative, rather than through a general matrix square root of S1 S2 that can go complex
 * with round-off. Clamped at 0, which round-off can undershoot for identical sets.
 */
export function frechetDistance(a: FeatureStats, b: FeatureStats): number {
  if (a.dim !== b.dim) throw new Error(`frechetDistance: feature dims differ (${a.dim} vs ${b.dim})`);
  const dim = a.dim;
  let meanTerm = 0;
  for (let j = 0; j < dim; j++) meanTerm += (a.mean[j]! - b.mean[j]!) ** 2;
  let trA = 0;
  let trB = 0;
  for (let j = 0; j < dim; j++) {
    trA += a.cov[j * dim + j]!;
    trB += b.cov[j * dim + j]!;
  }
  const rootA = sqrtPsd(a.cov, dim);
  const m = matMul(matMul(rootA, b.cov, dim), rootA, dim);
  for (let i = 0; i < dim; i++) {
    for (let j = i + 1; j < dim; j++) {
      const s = 0.5 * (m[i * dim + j]! + m[j * dim + i]!);
      m[i * dim + j] = s;
      m[j * dim + i] = s;
    }
  }
  const { values } = symmetricEigen(m, dim);
  let trRoot = 0;
  for (const l of values) trRoot += Math.sqrt(Math.max(l, 0));
  return Math.max(0, meanTerm + trA + trB - 2 * trRoot);
}

/** Fréchet distance straight from two feature arrays of the same width. */
export function frechetDistanceOf(a: ArrayLike<number>, b: ArrayLike<number>, dim: number): number {
  return frechetDistance(featureStats(a, dim), featureStats(b, dim));
}

const EPS = 1e-12;

function rows(probs: ArrayLike<number>, k: number): number {
  if (probs.length % k !== 0) throw new Error(`${probs.length} probabilities is not a whole number of ${k}-class rows`);
  return probs.length / k;
}

/**
 * Inception-Score style classifier score: exp(E_x KL(p(y|x) || p(y))), with p(y) the mean of the
 * rows. Between 1 (every image gets the same prediction, or every prediction is uniform) and k
 * (confident predictions spread evenly over all k classes).
 */
export function classifierScore(probs: ArrayLike<number>, k = NUM_CLASSES): number {
  const n = rows(probs, k);
  if (n === 0) return NaN;
  const py = new Float64Array(k);
  for (let i = 0; i < n; i++) for (let j = 0; j < k; j++) py[j]! += probs[i * k + j]!;
  for (let j = 0; j < k; j++) py[j]! /= n;
  let kl = 0;
  for (let i = 0; i < n; i++) {
    for (let j = 0; j < k; j++) {
      const p = probs[i * k + j]!;
      if (p > 0) kl += p * (Math.log(p + EPS) - Math.log(py[j]! + EPS));
    }
  }
  return Math.exp(kl / n);
}

/** Predicted-class counts (argmax of each row). */
export function classHistogram(probs: ArrayLike<number>, k = NUM_CLASSES): Uint32Array {
  const n = rows(probs, k);
  const counts = new Uint32Array(k);
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (probs[i * k + j]! > probs[i * k + best]!) best = j;
    counts[best]!++;
  }
  return counts;
}

/** Number of classes holding at least `minShare` of the predictions (and at least one). */
export function classCoverage(counts: ArrayLike<number>, minShare = COVERAGE_MIN_SHARE): number {
  let n = 0;
  for (let j = 0; j < counts.length; j++) n += counts[j]!;
  const need = Math.max(1, Math.ceil(minShare * n - 1e-9));
  let covered = 0;
  for (let j = 0; j < counts.length; j++) if (counts[j]! >= need) covered++;
  return covered;
}

/**
 * KL(histogram || uniform) in nats: 0 when every class is predicted equally often, ln k (2.303 for
 * digits) when all predictions fall in one class.
 */
export function klFromUniform(counts: ArrayLike<number>): number {
  const k = counts.length;
  let n = 0;
  for (let j = 0; j < k; j++) n += counts[j]!;
  if (n === 0) return NaN;
  let kl = 0;
  for (let j = 0; j < k; j++) {
    const p = counts[j]! / n;
    if (p > 0) kl += p * Math.log(p * k);
  }
  return Math.max(0, kl);
}

/** Share of rows whose argmax is the digit that was asked for. */
export function conditionalAccuracy(probs: ArrayLike<number>, asked: ArrayLike<number>, k = NUM_CLASSES): number {
  const n = rows(probs, k);
  if (asked.length !== n) throw new Error(`conditionalAccuracy: ${asked.length} requested digits for ${n} predictions`);
  if (n === 0) return NaN;
  let right = 0;
  for (let i = 0; i < n; i++) {
    let best = 0;
    for (let j = 1; j < k; j++) if (probs[i * k + j]! > probs[i * k + best]!) best = j;
    if (best === asked[i]) right++;
  }
  return right / n;
}
