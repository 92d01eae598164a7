/**
 * Adam on flat Float32Arrays, in place, with no allocation per step. The update is the one
 * tf.train.adam applies (bias correction folded into the moments, epsilon added to sqrt(v̂)),
 * so a run's weights do not depend on where the optimiser runs.
 */
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

export function adamStep(w: Float32Array, g: Float32Array, s: AdamState, c: AdamConfig): void {
  if (w.length !== g.length || w.length !== s.m.length) throw new Error('adam: weight, gradient and state sizes differ');
  s.t += 1;
  const { beta1, beta2, epsilon } = c;
  const b1 = Math.fround(beta1);
  const b2 = Math.fround(beta2);
  // As tf.train.adam: beta^t accumulates by float32 multiplication, 1 - beta is taken in double.
  let acc1 = b1;
  let acc2 = b2;
  for (let i = 1; i < s.t; i++) {
    acc1 = Math.fround(acc1 * b1);
    acc2 = Math.fround(acc2 * b2);
  }
  const c1 = Math.fround(1 - acc1);
  const c2 = Math.fround(1 - acc2);
  const omb1 = Math.fround(1 - beta1);
  const omb2 = Math.fround(1 - beta2);
  const lr = Math.fround(c.lr);
  const eps = Math.fround(epsilon);
  const { m, v } = s;
  for (let i = 0; i < w.length; i++) {
    const gi = g[i]!;
    const mi = Math.fround(Math.fround(m[i]! * b1) + Math.fround(gi * omb1));
    const vi = Math.fround(Math.fround(v[i]! * b2) + Math.fround(Math.fround(gi * gi) * omb2));
    m[i] = mi;
    v[i] = vi;
    const mHat = Math.fround(mi / c1);
    const vHat = Math.fround(vi / c2);
    w[i] = Math.fround(w[i]! - Math.fround(Math.fround(lr * mHat) / Math.fround(Math.fround(Math.sqrt(vHat)) + eps)));
  }
}

/**
 * Average gradients weighted by sample count, summing in the order given (worker-id order), never
 * arrival order, so the result does not depend on network timing.
 */
export function weightedAverage(out: Float32Array, parts: { count: number; data: Float32Array }[]): number {
  const total = parts.reduce((a, p) => a + p.count, 0);
  out.fill(0);
  if (total === 0) return 0;
  for (const p of parts) {
    if (p.data.length !== out.length) throw new Error('gradient size differs from the model');
    const s = p.count / total;
    const d = p.data;
    for (let i = 0; i < out.length; i++) out[i] = out[i]! + s * d[i]!;
  }
  return total;
}
