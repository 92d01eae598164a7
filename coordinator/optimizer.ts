/**
 * The coordinator's optimisers and reductions on flat Float32Arrays: Adam (shared/numerics/adam.ts,
 * which workers' local steps use too), the outer step of a low-communication run, the weighted
 * average of gradients, the moving average of G and the size of a gradient.
 */
import { type NativeMath, nativeMath } from '../shared/backend/addon.js';
import { allFinite } from '../shared/numerics/finite.js';
import { foldMany } from '../shared/numerics/fold.js';

/** Re-exported: the coordinator's state checks (checkpoints) use it from here. */
export { allFinite };
export { type AdamConfig, type AdamHyper, type AdamState, adamApply, adamHyper, adamState, adamStep } from '../shared/numerics/adam.js';
import { type AdamHyper, adamApply } from '../shared/numerics/adam.js';

/** A net's weights and optimiser moments (chunks of them), as a step reads and writes them. */
export interface StepBuffers {
  w: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/**
 * One step on a chunk: new weights and moments from the current ones and the averaged gradient
 * `g`, written to `out` (the new weights to `out.wAlso` too, when given: the shared region's copy);
 * false when any new value is not finite. Elementwise, so a step taken chunk by chunk is the same
 * bits as one over the whole net.
 */
export type ChunkStep = (cur: StepBuffers, g: Float32Array, out: StepBuffers & { wAlso?: Float32Array }) => boolean;

/** Adam step `h` (a synchronous round's): the moments are Adam's. */
export function adamChunkStep(h: AdamHyper): ChunkStep {
  return (cur, g, out) => adamApply(cur.w, g, cur.m, cur.v, h, out);
}

/** The outer optimiser's settings (--outer-lr, --outer-momentum). */
export interface OuterConfig {
  lr: number;
  momentum: number;
}

/**
 * The outer step of a low-communication run (--sync-every H > 1), DiLoCo's (Douillard et al.
 * 2023): SGD with Nesterov momentum on the averaged change of weights since the last sync,
 * delta = synced - local, as torch.optim.SGD(nesterov=True) takes a gradient:
 * buf = momentum * buf + delta; w -= lr * (delta + momentum * buf). The momentum buffer lives
 * where Adam's first moment does (`m`); `v` is carried unchanged. With lr 1 and momentum 0 the new
 * weights are the average of the workers' local ones (local SGD, FedAvg). The change is read as
 * 0 + delta, as Adam reads a gradient.
 */
export function outerChunkStep(c: OuterConfig): ChunkStep {
  const lr = c.lr;
  const mu = c.momentum;
  return (cur, g, out) => {
    const n = g.length;
    if (cur.w.length !== n || cur.m.length !== n || out.w.length !== n || out.m.length !== n) throw new Error('outer step: weight, change and state sizes differ');
    const { w, m } = cur;
    const wo = out.w;
    const mo = out.m;
    for (let i = 0; i < n; i++) {
      const d = g[i]! + 0;
      const b = Math.fround(mu * m[i]! + d);
      mo[i] = b;
      wo[i] = w[i]! - lr * (d + mu * b);
    }
    if (out.v !== cur.v) out.v.set(cur.v);
    out.wAlso?.set(wo);
    return allFinite(wo) && allFinite(mo);
  };
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

/** Values per block of a magnitude's sum of squares (MAGNITUDE_BLOCK in the addon, whose blocks run on several threads). */
export const MAGNITUDE_BLOCK = 16384;

/**
 * How big a gradient (chunk) is: its largest |value| and its root mean square, NaN when it holds a
 * NaN or an infinity. With `copy`, `a` is copied there in the same pass and what is measured is
 * what was copied (a slot another process may still write). The sum of squares is taken in blocks
 * of MAGNITUDE_BLOCK values, each as four interleaved sums, (s0 + s1) + (s2 + s3), the blocks'
 * sums then added in order, here and in the addon alike. The addon does it when built.
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
    const x = copy ? (copy.set(a), copy) : a;
    for (let start = 0; start < x.length; start += MAGNITUDE_BLOCK) {
      const end = Math.min(x.length, start + MAGNITUDE_BLOCK);
      let s0 = 0;
      let s1 = 0;
      let s2 = 0;
      let s3 = 0;
      const body = end - ((end - start) % 4);
      for (let i = start; i < body; i += 4) {
        const v0 = x[i]!;
        const v1 = x[i + 1]!;
        const v2 = x[i + 2]!;
        const v3 = x[i + 3]!;
        maxAbs = Math.max(maxAbs, Math.abs(v0), Math.abs(v1), Math.abs(v2), Math.abs(v3));
        s0 += v0 * v0;
        s1 += v1 * v1;
        s2 += v2 * v2;
        s3 += v3 * v3;
      }
      // The tail past the last multiple of four goes to the first sum, as in the addon.
      for (let i = body; i < end; i++) {
        const v = x[i]!;
        maxAbs = Math.max(maxAbs, Math.abs(v));
        s0 += v * v;
      }
      sumSq += (s0 + s1) + (s2 + s3);
    }
  }
  return sized(maxAbs, sumSq, a.length);
}

/** A magnitude from its largest |value| and sum of squares over n values (maxAbs NaN when the sum is not finite). */
function sized(maxAbs: number, sumSq: number, n: number): { maxAbs: number; rms: number } {
  return { maxAbs: Number.isFinite(sumSq) ? maxAbs : NaN, rms: n ? Math.sqrt(sumSq / n) : 0 };
}

const measuresOut = new Float64Array(128);

/**
 * acc = the weighted sum of `gs` (foldMany with first), and the magnitude of each part measured in
 * the same read of it, so what is measured is what was summed (a part may be a slot another process
 * can write). The same sum and the same magnitudes as foldMany then magnitude of each part; the
 * addon does both in one pass.
 */
export function foldMeasured(acc: Float32Array, gs: Float32Array[], scales: number[], math: NativeMath | null = nativeMath()): { maxAbs: number; rms: number }[] {
  if (math && gs.length > 0 && gs.length <= 64) {
    for (const g of gs) if (g.length !== acc.length) throw new Error(`fold: ${g.length} values into ${acc.length}`);
    // An addon built before measures existed leaves them as they were: -1 is a largest |value| none can have.
    measuresOut.fill(-1, 0, 2 * gs.length);
    math.weightedSum(acc, gs, scales, measuresOut);
    if (measuresOut[0] !== -1) return gs.map((g, k) => sized(measuresOut[2 * k]!, measuresOut[2 * k + 1]!, g.length));
  }
  // One read per part here too: each is copied before it is measured and summed.
  const copies = gs.map((g) => g.slice());
  foldMany(acc, copies, scales, true, math);
  return copies.map((g) => magnitude(g, null));
}
