/**
 * Adam on flat Float32Arrays, in place, with no allocation per step. The update is the one
 * tf.train.adam applies (bias correction folded into the moments, epsilon added to sqrt(v̂)),
 * so a run's weights do not depend on where the optimiser runs.
 */
import { type NativeMath, nativeMath } from '../shared/backend/addon.js';
import { allFinite } from '../shared/numerics/finite.js';

/** Re-exported: the coordinator's state checks (checkpoints) use it from here. */
export { allFinite };

export interface AdamConfig {
  lr: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}

export interface AdamState {
  m: Float32Array;
  v: Float32Array;
  /** Steps taken so far. */
  t: number;
}

export function adamState(size: number): AdamState {
  return { m: new Float32Array(size), v: new Float32Array(size), t: 0 };
}

/** Step t's constants: what adamApply needs, derived once per step (a chunked step shares them). */
export interface AdamHyper {
  b1: number;
  b2: number;
  omb1: number;
  omb2: number;
  c1: number;
  c2: number;
  lr: number;
  eps: number;
}

/** The constants of Adam's step number `t` (1 for the first step). */
export function adamHyper(t: number, c: AdamConfig): AdamHyper {
  const b1 = Math.fround(c.beta1);
  const b2 = Math.fround(c.beta2);
  // As tf.train.adam: beta^t accumulates by float32 multiplication, 1 - beta is taken in double.
  let acc1 = b1;
  let acc2 = b2;
  for (let i = 1; i < t; i++) {
    acc1 = Math.fround(acc1 * b1);
    acc2 = Math.fround(acc2 * b2);
  }
  return {
    b1, b2, omb1: Math.fround(1 - c.beta1), omb2: Math.fround(1 - c.beta2),
    c1: Math.fround(1 - acc1), c2: Math.fround(1 - acc2), lr: c.lr, eps: Math.fround(c.epsilon),
  };
}

/**
 * One Adam update of (w, m, v) by g, elementwise, written to `out` (default: in place). Moments
 * are stored in float32 like tf's; the arithmetic between loads and stores runs in double, which
 * keeps the result within float32 rounding of tf.train.adam at a fraction of the cost of emulating
 * every float32 operation. Elementwise, so a step taken chunk by chunk is the same bits as one
 * over the whole vector. `math` is the addon (the default when built) or null for the JavaScript
 * loop below, the reference it reproduces bit for bit. Returns whether every new weight and moment
 * is finite (the addon checks each range while it is still in cache).
 */
export function adamApply(
  w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, h: AdamHyper,
  out: { w: Float32Array; m: Float32Array; v: Float32Array } = { w, m, v }, math: NativeMath | null = nativeMath(),
): boolean {
  const n = w.length;
  if (g.length !== n || m.length !== n || v.length !== n || out.w.length !== n || out.m.length !== n || out.v.length !== n) {
    throw new Error('adam: weight, gradient and state sizes differ');
  }
  const { b1, b2, omb1, omb2, c1, c2, lr, eps } = h;
  if (math) {
    // An addon built from an older checkout returns nothing: check the outputs here.
    return math.adamStep(w, g, m, v, b1, b2, omb1, omb2, c1, c2, lr, eps, out.w, out.m, out.v) ?? (allFinite(out.w) && allFinite(out.m) && allFinite(out.v));
  }
  const { w: wo, m: mo, v: vo } = out;
  for (let i = 0; i < n; i++) {
    const gi = g[i]!;
    const mi = m[i]! * b1 + gi * omb1;
    const vi = v[i]! * b2 + gi * gi * omb2;
    mo[i] = mi;
    vo[i] = vi;
    // The unrounded moments feed the update.
    wo[i] = w[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
  }
  return allFinite(wo, null) && allFinite(mo, null) && allFinite(vo, null);
}

/** One whole Adam step in place: the step count advances, then every weight moves. */
export function adamStep(w: Float32Array, g: Float32Array, s: AdamState, c: AdamConfig, math: NativeMath | null = nativeMath()): void {
  if (w.length !== g.length || w.length !== s.m.length || w.length !== s.v.length) throw new Error('adam: weight, gradient and state sizes differ');
  s.t += 1;
  adamApply(w, g, s.m, s.v, adamHyper(s.t, c), undefined, math);
}

/**
 * Average gradients weighted by sample count, summing in the order given (worker-id order), never
 * arrival order, so the result does not depend on network timing.
 */
export function weightedAverage(
  out: Float32Array,
  parts: { count: number; data: Float32Array }[],
  math: NativeMath | null = nativeMath(),
): number {
  const total = parts.reduce((a, p) => a + p.count, 0);
  if (total === 0 || parts.length === 0) {
    out.fill(0);
    return 0;
  }
  for (const p of parts) if (p.data.length !== out.length) throw new Error('gradient size differs from the model');
  if (math) {
    math.weightedSum(
      out,
      parts.map((p) => p.data),
      parts.map((p) => p.count / total),
    );
    return total;
  }
  const n = out.length;
  // One pass over memory per (up to) four workers; the additions still run in worker-id order.
  for (let first = 0; first < parts.length; first += 4) {
    const chunk = parts.slice(first, first + 4);
    const s = chunk.map((p) => p.count / total);
    const d = chunk.map((p) => p.data);
    const init = first === 0;
    switch (chunk.length) {
      case 1: {
        const [d0] = d as [Float32Array];
        const [s0] = s as [number];
        for (let i = 0; i < n; i++) out[i] = (init ? 0 : out[i]!) + s0 * d0[i]!;
        break;
      }
      case 2: {
        const [d0, d1] = d as [Float32Array, Float32Array];
        const [s0, s1] = s as [number, number];
        for (let i = 0; i < n; i++) out[i] = Math.fround((init ? 0 : out[i]!) + s0 * d0[i]!) + s1 * d1[i]!;
        break;
      }
      case 3: {
        const [d0, d1, d2] = d as [Float32Array, Float32Array, Float32Array];
        const [s0, s1, s2] = s as [number, number, number];
        for (let i = 0; i < n; i++) out[i] = Math.fround(Math.fround((init ? 0 : out[i]!) + s0 * d0[i]!) + s1 * d1[i]!) + s2 * d2[i]!;
        break;
      }
      default: {
        const [d0, d1, d2, d3] = d as [Float32Array, Float32Array, Float32Array, Float32Array];
        const [s0, s1, s2, s3] = s as [number, number, number, number];
        for (let i = 0; i < n; i++) {
          out[i] = Math.fround(Math.fround(Math.fround((init ? 0 : out[i]!) + s0 * d0[i]!) + s1 * d1[i]!) + s2 * d2[i]!) + s3 * d3[i]!;
        }
      }
    }
  }
  return total;
}

/**
 * The decay the moving average uses after `t` updates: min(decay, (1 + t) / (10 + t)), as
 * TensorFlow's ExponentialMovingAverage with num_updates, so the first averages follow the
 * weights instead of staying near their random initial values.
 */
export function emaDecayAt(decay: number, t: number): number {
  return Math.min(decay, (1 + t) / (10 + t));
}

/** avg = d * avg + (1 - d) * w, in place, with d = emaDecayAt(decay, t); the addon does it when built, to the same bits. */
export function emaUpdate(avg: Float32Array, w: Float32Array, decay: number, t: number, math: NativeMath | null = nativeMath()): void {
  if (avg.length !== w.length) throw new Error('moving average and weights differ in size');
  const d = emaDecayAt(decay, t);
  const e = 1 - d;
  if (math) return math.emaUpdate(avg, w, d, e);
  for (let i = 0; i < avg.length; i++) avg[i] = d * avg[i]! + e * w[i]!;
}

const magnitudeOut = new Float64Array(2);

/**
 * How big a gradient (chunk) is: its largest |value| and its root mean square, NaN when it holds a
 * NaN or an infinity. With `copy`, `a` is copied there in the same pass and what is measured is
 * what was copied (a slot another process may still write). The sum of squares runs as four
 * interleaved sums, (s0 + s1) + (s2 + s3), here and in the addon alike. The addon does it when built.
 */
export function magnitude(a: Float32Array, math: NativeMath | null = nativeMath(), copy?: Float32Array): { maxAbs: number; rms: number } {
  let maxAbs = 0;
  let sumSq = 0;
  if (copy && copy.length !== a.length) throw new Error(`magnitude: copy of ${copy.length} values for ${a.length}`);
  if (math) {
    if (copy) math.magnitude(a, magnitudeOut, copy);
    else math.magnitude(a, magnitudeOut);
    maxAbs = magnitudeOut[0]!;
    sumSq = magnitudeOut[1]!;
  } else {
    const s = new Float64Array(4);
    const n = a.length;
    const x = copy ? (copy.set(a), copy) : a;
    for (let i = 0; i < n; i++) {
      const v = x[i]!;
      const av = Math.abs(v);
      if (av > maxAbs) maxAbs = av;
      // The tail past the last multiple of four goes to the first sum, as in the addon.
      s[i < n - (n % 4) ? i % 4 : 0]! += v * v;
    }
    sumSq = (s[0]! + s[1]!) + (s[2]! + s[3]!);
  }
  const rms = a.length ? Math.sqrt(sumSq / a.length) : 0;
  return { maxAbs: Number.isFinite(sumSq) ? maxAbs : NaN, rms };
}
