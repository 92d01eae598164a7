import { describe, expect, it } from 'vitest';
import { type AdamConfig, adamApply, adamHyper, adamState, adamStep, allFinite, emaUpdate, foldMeasured, magnitude, weightedAverage } from '../coordinator/optimizer.js';
import { foldMany } from '../shared/numerics/fold.js';
import { nativeAvailable, nativeMath } from '../shared/backend/addon.js';
import { fromHalf, toHalf } from '../shared/numerics/half.js';

// The addon must reproduce the JavaScript loops bit for bit, or a run's weights would depend on
// whether the coordinator's host could build it.
const math = nativeMath();
const skipReason = math ? '' : (nativeAvailable().reason ?? 'the built addon predates the array functions; rebuild with node scripts/build-native.mjs');
const title = math ? 'native math matches the JavaScript reference' : `native math (skipped: ${skipReason})`;

/** xorshift32: deterministic across runs so a failure reproduces. */
function rng(seed: number): () => number {
  let s = seed >>> 0 || 1;
  return () => {
    s ^= s << 13;
    s ^= s >>> 17;
    s ^= s << 5;
    return (s >>> 0) / 2 ** 32;
  };
}

/** Gradient-like values across many magnitudes, with exact zeros, -0 and subnormals mixed in. */
function gradients(n: number, r: () => number): Float32Array {
  const a = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    const u = r();
    if (u < 0.02) a[i] = 0;
    else if (u < 0.04) a[i] = -0;
    else if (u < 0.05) a[i] = (r() - 0.5) * 2 ** -130;
    else a[i] = (r() * 2 - 1) * 10 ** (r() * 12 - 9);
  }
  return a;
}

const bits = (a: Float32Array): Uint32Array => new Uint32Array(a.buffer, a.byteOffset, a.length);

/** First index where two arrays' bit patterns differ, for a readable failure. */
function firstDiff(a: Uint32Array | Uint16Array, b: Uint32Array | Uint16Array): number {
  if (a.length !== b.length) return -2;
  for (let i = 0; i < a.length; i++) if (a[i] !== b[i]) return i;
  return -1;
}

describe(title, () => {
  it.skipIf(!math)('weightedAverage: 1 to 6 parts, random counts and sizes', () => {
    const r = rng(7);
    // Sizes around the addon's 2048-float block and JS's 4-part chunks, plus a model-sized one.
    const sizes = [0, 1, 3, 2047, 2048, 2049, 5000, 4096 * 3 + 17, 1_460_000];
    for (const n of sizes) {
      for (let k = 1; k <= 6; k++) {
        const parts = Array.from({ length: k }, () => ({ count: 1 + Math.floor(r() * 200), data: gradients(n, r) }));
        if (k > 1 && r() < 0.3) parts[Math.floor(r() * k)]!.count = 0;
        const js = new Float32Array(n).fill(Number.NaN);
        const nat = new Float32Array(n).fill(Number.NaN);
        expect(weightedAverage(js, parts, null)).toBe(weightedAverage(nat, parts, math));
        expect(firstDiff(bits(nat), bits(js)), `n=${n}, parts=${k}`).toBe(-1);
      }
    }
  });

  it.skipIf(!math)('weightedAverage: hundreds of workers', () => {
    const r = rng(3);
    const parts = Array.from({ length: 301 }, () => ({ count: 1 + Math.floor(r() * 100), data: gradients(777, r) }));
    const js = new Float32Array(777);
    const nat = new Float32Array(777);
    weightedAverage(js, parts, null);
    weightedAverage(nat, parts, math);
    expect(firstDiff(bits(nat), bits(js))).toBe(-1);
  });

  it.skipIf(!math)('weightedAverage: out may be one of the parts', () => {
    const mk = () => [3, 5, 7].map((count) => ({ count, data: gradients(3000, rng(count)) }));
    const js = mk();
    const nat = mk();
    weightedAverage(js[1]!.data, js, null);
    weightedAverage(nat[1]!.data, nat, math);
    expect(firstDiff(bits(nat[1]!.data), bits(js[1]!.data))).toBe(-1);
  });

  it.skipIf(!math)('adamStep: 20 steps evolve weights and moments identically', () => {
    const configs: AdamConfig[] = [
      { lr: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 },
      { lr: 1e-3, beta1: 0.9, beta2: 0.999, epsilon: 1e-7 },
      { lr: 0.0123, beta1: 0.37, beta2: 0.91, epsilon: 1e-3 },
    ];
    for (const [ci, c] of configs.entries()) {
      const r = rng(100 + ci);
      const n = ci === 0 ? 1_460_000 : 10_007;
      const w0 = gradients(n, r);
      const wJ = w0.slice();
      const wN = w0.slice();
      const sJ = adamState(n);
      const sN = adamState(n);
      for (let t = 0; t < 20; t++) {
        const g = gradients(n, r);
        if (t === 3) g.fill(0);
        adamStep(wJ, g, sJ, c, null);
        adamStep(wN, g, sN, c, math);
        expect(sN.t).toBe(sJ.t);
        expect(firstDiff(bits(wN), bits(wJ)), `config ${ci} step ${t}: w`).toBe(-1);
        expect(firstDiff(bits(sN.m), bits(sJ.m)), `config ${ci} step ${t}: m`).toBe(-1);
        expect(firstDiff(bits(sN.v), bits(sJ.v)), `config ${ci} step ${t}: v`).toBe(-1);
      }
    }
  });

  it.skipIf(!math)('adamApply out of place, chunk by chunk, equals the whole step in place; emaUpdate and magnitude match', () => {
    const r = rng(11);
    const n = 70_001;
    const w = gradients(n, r), g = gradients(n, r), m = gradients(n, r), v = gradients(n, r).map(Math.abs);
    const h = adamHyper(3, { lr: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });
    const ref = { w: w.slice(), m: m.slice(), v: v.slice() };
    adamApply(ref.w, g, ref.m, ref.v, h, undefined, null);
    const out = { w: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n) };
    for (let s = 0; s < n; s += 5000) {
      const e = Math.min(n, s + 5000);
      adamApply(w.subarray(s, e), g.subarray(s, e), m.subarray(s, e), v.subarray(s, e), h, { w: out.w.subarray(s, e), m: out.m.subarray(s, e), v: out.v.subarray(s, e) }, math);
    }
    for (const k of ['w', 'm', 'v'] as const) expect(firstDiff(bits(out[k]), bits(ref[k])), k).toBe(-1);
    const avgJs = w.slice();
    const avgNat = w.slice();
    for (let t = 0; t < 5; t++) {
      emaUpdate(avgJs, g, 0.999, t, null);
      emaUpdate(avgNat, g, 0.999, t, math);
    }
    expect(firstDiff(bits(avgNat), bits(avgJs))).toBe(-1);
    const big = g.slice();
    big[123] = 3e20;
    expect(magnitude(big, math).maxAbs).toBe(magnitude(big, null).maxAbs);
    expect(magnitude(big, math).rms).toBe(magnitude(big, null).rms);
    // Every length mod 4 (the tail goes to the first of the four sums), and the copy made in the same pass.
    for (const n of [0, 1, 2, 3, 4, 5, 1021, 1022, 1023]) {
      const part = big.subarray(0, n);
      const [cNat, cJs] = [new Float32Array(n), new Float32Array(n)];
      expect(magnitude(part, math, cNat)).toEqual(magnitude(part, null, cJs));
      expect(magnitude(part, math)).toEqual(magnitude(part, null));
      expect(firstDiff(bits(cNat), bits(part))).toBe(-1);
      expect(firstDiff(bits(cJs), bits(part))).toBe(-1);
    }
    big[5] = NaN;
    expect(Number.isNaN(magnitude(big, math).maxAbs) && Number.isNaN(magnitude(big, null).maxAbs)).toBe(true);
  });

  it.skipIf(!math)('adamApply out of place on a net-sized step (the addon streams its outputs): the same bits at every alignment of the arrays, the new weights in a second place too, and a non-finite output is found', () => {
    const r = rng(12);
    const n = 300_017;
    const h = adamHyper(7, { lr: 1e-3, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });
    const w = gradients(n + 16, r), g = gradients(n + 16, r), m = gradients(n + 16, r), v = gradients(n + 16, r).map(Math.abs);
    const outs = { w: new Float32Array(n + 16), m: new Float32Array(n + 16), v: new Float32Array(n + 16) };
    // Offsets in floats of the inputs and of each output: aligned together, the outputs apart from one another, all apart.
    for (const [i, ow, om, ov] of [[0, 0, 0, 0], [3, 5, 5, 5], [1, 0, 7, 13], [9, 15, 2, 11]] as const) {
      const at = (a: Float32Array, k: number) => a.subarray(k, k + n);
      const ref = { w: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n) };
      expect(adamApply(at(w, i), at(g, i), at(m, i), at(v, i), h, ref, null)).toBe(true);
      // The new weights also go to a second place (the shared region's copy), at its own alignment.
      const also = new Float32Array(n + 16).subarray(om, om + n);
      const out = { w: at(outs.w, ow), m: at(outs.m, om), v: at(outs.v, ov), wAlso: also };
      expect(adamApply(at(w, i), at(g, i), at(m, i), at(v, i), h, out, math)).toBe(true);
      for (const k of ['w', 'm', 'v'] as const) expect(firstDiff(bits(out[k]), bits(ref[k])), `${k} at offsets ${i}/${ow}/${om}/${ov}`).toBe(-1);
      expect(firstDiff(bits(also), bits(ref.w)), `wAlso at offsets ${i}/${ow}/${om}/${ov}`).toBe(-1);
      const small = { w: new Float32Array(1000), m: new Float32Array(1000), v: new Float32Array(1000), wAlso: new Float32Array(1000) };
      adamApply(at(w, i).subarray(0, 1000), at(g, i).subarray(0, 1000), at(m, i).subarray(0, 1000), at(v, i).subarray(0, 1000), h, small, math);
      expect(firstDiff(bits(small.wAlso), bits(ref.w.subarray(0, 1000)))).toBe(-1);
    }
    // A NaN anywhere (the middle of a block, the first and the last element) makes the step report it.
    for (const at of [0, 150_000, n - 1]) {
      const bad = w.subarray(0, n).slice();
      bad[at] = NaN;
      const out = { w: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n) };
      expect(adamApply(bad, g.subarray(0, n), m.subarray(0, n), v.subarray(0, n), h, out, math), `NaN at ${at}`).toBe(false);
    }
  });

  it.skipIf(!math)('a weighted sum that measures its parts as it reads them: the sum foldMany gives and the magnitudes magnitude gives, NaN and huge values included', () => {
    const r = rng(13);
    for (const [n, parts] of [[1, 2], [5, 3], [16_384, 2], [70_003, 4], [100_001, 5]] as const) {
      const gs = Array.from({ length: parts }, () => gradients(n, r));
      const scales = gs.map(() => r());
      if (n > 10) gs[1]![n - 3] = 3e20;
      if (parts > 2) gs[2]![n >> 1] = NaN;
      const ref = new Float32Array(n);
      foldMany(ref, gs, scales, true, null);
      const acc = new Float32Array(n).fill(7);
      const sizes = foldMeasured(acc, gs, scales, math);
      expect(firstDiff(bits(acc), bits(ref)), `n ${n}`).toBe(-1);
      expect(sizes, `n ${n}`).toEqual(gs.map((g) => magnitude(g, null)));
      expect(foldMeasured(new Float32Array(n), gs, scales, null)).toEqual(sizes);
    }
  });

  it.skipIf(!math)('fromHalf: all 65536 half values', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const js = fromHalf(all, undefined, null);
    const nat = fromHalf(all, undefined, math);
    expect(firstDiff(bits(nat), bits(js))).toBe(-1);
  });

  it.skipIf(!math)('toHalf: every half, the midpoints between halves, and random bit patterns', () => {
    const all = fromHalf(new Uint16Array(65536).map((_, i) => i), undefined, null);
    const u = new Uint32Array(65536 * 4 + 1_000_000);
    const r = rng(5);
    for (let h = 0; h < 65536; h++) {
      const x = bits(all)[h]!;
      // Each half exactly, one float32 ulp either side, and the next float32 up by half a half-ulp
      // (a tie at normal exponents): the rounding edges.
      u[4 * h] = x;
      u[4 * h + 1] = x + 1;
      u[4 * h + 2] = x - 1;
      u[4 * h + 3] = x + 0x1000;
    }
    // Random patterns cover NaN payloads, infinities, subnormal floats and overflow.
    for (let i = 65536 * 4; i < u.length; i++) u[i] = Math.floor(r() * 2 ** 32);
    const src = new Float32Array(u.buffer);
    // Ties between subnormal halves, where the addon rounds by a different route.
    for (let h = 0; h < 1025; h++) {
      src[65536 * 4 + 2 * h] = (h + 0.5) * 2 ** -24;
      src[65536 * 4 + 2 * h + 1] = -(h + 0.5) * 2 ** -24;
    }
    const js = toHalf(src, undefined, null);
    const nat = toHalf(src, undefined, math);
    expect(firstDiff(nat, js)).toBe(-1);
    const g = gradients(100_000, r);
    expect(firstDiff(toHalf(g, undefined, math), toHalf(g, undefined, null))).toBe(-1);
  });

  it.skipIf(!math)('toHalf / fromHalf: a longer dst is written up to src.length', () => {
    const dst = new Uint16Array(5).fill(0xabcd);
    toHalf(new Float32Array([1, 2, 3]), dst, math);
    expect(Array.from(dst)).toEqual([0x3c00, 0x4000, 0x4200, 0xabcd, 0xabcd]);
    const back = new Float32Array(4).fill(9);
    fromHalf(dst.subarray(0, 3), back, math);
    expect(Array.from(back)).toEqual([1, 2, 3, 9]);
  });

  it.skipIf(!math)('allFinite: NaN and infinities at random positions', () => {
    const r = rng(9);
    for (const n of [0, 1, 7, 4095, 4096, 4097, 100_003]) {
      const a = gradients(n, r);
      a[0] = 3.4028234663852886e38;
      expect(allFinite(a, math)).toBe(true);
      expect(allFinite(a, null)).toBe(true);
      for (const bad of [Number.NaN, Infinity, -Infinity]) {
        for (let trial = 0; trial < 5 && n > 0; trial++) {
          const b = a.slice();
          b[Math.floor(r() * n)] = bad;
          expect(allFinite(b, math)).toBe(false);
          expect(allFinite(b, null)).toBe(false);
        }
      }
    }
    // A NaN with a payload and the sign bit set is still caught.
    const u = new Uint32Array([0, 0xffc12345, 0]);
    expect(allFinite(new Float32Array(u.buffer), math)).toBe(false);
  });

  it.skipIf(!math)('misuse throws TypeError or RangeError', () => {
    const m = math!;
    const f = new Float32Array(4);
    expect(() => m.weightedSum(new Float64Array(4) as unknown as Float32Array, [f], [1])).toThrow(TypeError);
    expect(() => m.weightedSum(f, [new Float32Array(3)], [1])).toThrow(RangeError);
    expect(() => m.weightedSum(f, [f, f], [1])).toThrow(RangeError);
    expect(() => m.weightedSum(f, [f], ['1' as unknown as number])).toThrow(TypeError);
    expect(() => m.weightedSum(f, f as unknown as Float32Array[], [1])).toThrow(TypeError);
    const big = new Float32Array(8);
    expect(() => m.weightedSum(big.subarray(0, 4), [big.subarray(2, 6)], [1])).toThrow(RangeError);
    expect(() => m.adamStep(f, f.slice(), f.slice(), new Float32Array(5), 0.9, 0.999, 0.1, 0.001, 0.1, 0.001, 1e-3, 1e-8)).toThrow(RangeError);
    expect(() => m.adamStep(f, f, f.slice(), f.slice(), 0.9, 0.999, 0.1, 0.001, 0.1, 0.001, 1e-3, 1e-8)).toThrow(RangeError);
    expect(() => (m.adamStep as unknown as (...a: unknown[]) => void)(f, f.slice(), f.slice(), f.slice(), 0.9)).toThrow(TypeError);
    expect(() => m.allFinite([1, 2] as unknown as Float32Array)).toThrow(TypeError);
    expect(() => m.halfToFloat(new Uint16Array(4), new Float32Array(3))).toThrow(RangeError);
    expect(() => m.floatToHalf(new Float32Array(4), new Uint32Array(4) as unknown as Uint16Array)).toThrow(TypeError);
  });
});
