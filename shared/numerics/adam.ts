/**
 * Adam on flat Float32Arrays, in place, with no allocation per step. The update is the one
 * tf.train.adam applies (bias correction folded into the moments, epsilon added to sqrt(v̂)),
 * so a run's weights do not depend on where the optimiser runs: the coordinator's step of a
 * synchronous round, or a worker's local steps between syncs (--sync-every).
 */
import { type NativeMath, nativeMath } from '../backend/addon.js';
import { allFinite } from './finite.js';

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
 * is finite (the addon checks each range while it is still in cache). g is read as 0 + g: a -0
 * steps as the +0 a weighted sum gives, so a lone worker's gradient stepped where it lies is the
 * same bits as its average of one. `out.wAlso`, when given, gets the new weights too (the shared
 * region's copy of them: the addon writes both in the same pass).
 */
export function adamApply(
  w: Float32Array, g: Float32Array, m: Float32Array, v: Float32Array, h: AdamHyper,
  out: { w: Float32Array; m: Float32Array; v: Float32Array; wAlso?: Float32Array } = { w, m, v }, math: NativeMath | null = nativeMath(),
): boolean {
  const n = w.length;
  if (g.length !== n || m.length !== n || v.length !== n || out.w.length !== n || out.m.length !== n || out.v.length !== n || (out.wAlso && out.wAlso.length !== n)) {
    throw new Error('adam: weight, gradient and state sizes differ');
  }
  const { b1, b2, omb1, omb2, c1, c2, lr, eps } = h;
  if (math) {
    // An addon built from an older checkout returns nothing: check the outputs here.
    const finite = out.wAlso
      ? math.adamStep(w, g, m, v, b1, b2, omb1, omb2, c1, c2, lr, eps, out.w, out.m, out.v, out.wAlso)
      : math.adamStep(w, g, m, v, b1, b2, omb1, omb2, c1, c2, lr, eps, out.w, out.m, out.v);
    if (finite !== undefined) return finite;
    out.wAlso?.set(out.w);
    return allFinite(out.w) && allFinite(out.m) && allFinite(out.v);
  }
  const { w: wo, m: mo, v: vo } = out;
  // x * 0 is 0 for every finite x, NaN otherwise: the stored values are checked as they are written.
  let probe = 0;
  for (let i = 0; i < n; i++) {
    const gi = g[i]! + 0;
    const mi = m[i]! * b1 + gi * omb1;
    const vi = v[i]! * b2 + gi * gi * omb2;
    mo[i] = mi;
    vo[i] = vi;
    // The unrounded moments feed the update.
    wo[i] = w[i]! - (lr * (mi / c1)) / (Math.sqrt(vi / c2) + eps);
    probe += (wo[i]! + mo[i]! + vo[i]!) * 0;
  }
  out.wAlso?.set(wo);
  return probe === 0;
}

/** One whole Adam step in place: the step count advances, then every weight moves. */
export function adamStep(w: Float32Array, g: Float32Array, s: AdamState, c: AdamConfig, math: NativeMath | null = nativeMath()): void {
  if (w.length !== g.length || w.length !== s.m.length || w.length !== s.v.length) throw new Error('adam: weight, gradient and state sizes differ');
  s.t += 1;
  adamApply(w, g, s.m, s.v, adamHyper(s.t, c), undefined, math);
}
