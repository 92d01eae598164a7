/**
 * How tensors travel at the run's wire precision (--wire), and how they are checked on arrival.
 *
 * - `fp32`: float32 as computed. Exact: every path gives the same bits.
 * - `16`: IEEE half (half.ts), round to nearest even: gradients, relayed partial sums and weights.
 *   The coordinator keeps float32 master weights, moments and the moving average; workers hold
 *   and compute on the half-rounded view of the weights.
 * - `8`: blockwise 8-bit: each block of BLOCK values (counted from the start of its chunk) is sent
 *   as one float32 scale and BLOCK signed bytes, value = q * scale with |q| <= 127. Gradients carry
 *   their rounding error into the worker's next gradient of that net (error feedback); weights
 *   travel as the difference between the new master weights and the view every worker holds, and
 *   what that difference loses stays in the next one, so the view never drifts further than one
 *   block step from the master weights.
 *
 * Every function here is plain float32 arithmetic in a fixed order, so encoding and decoding give
 * the same bits on every machine (the coordinator and the workers compute the view identically).
 * The addon (native/src/quant8.c) runs the 8-bit loops when it is built; these JavaScript loops
 * are the reference it matches bit for bit (`math` null), and stand in for it otherwise (browsers).
 */
import { GanError } from '../wire/errors.js';
import { fromHalf, toHalf } from './half.js';
import { type NativeMath, nativeMath } from '../backend/addon.js';
import { allFinite } from './finite.js';
import { packDelta, packedBound, unpackDelta } from './bit-delta.js';

export type WirePrecision = 'fp32' | '16' | '8';
export const WIRE_PRECISIONS: readonly WirePrecision[] = ['fp32', '16', '8'];

/** Values per 8-bit block (one float32 scale each: 1.6% of the bytes). */
export const BLOCK = 256;
/** Largest 8-bit magnitude: q is in [-127, 127], so the encoding is symmetric. */
const QMAX = 127;
/**
 * Smallest scale an encoder writes (a block of zeros, or of values too small to matter, gets this
 * one): a normal float32, so that a zero or denormal scale on the wire is always a forgery.
 */
export const MIN_SCALE = 2 ** -100;
/**
 * Largest magnitude of any value on the wire (a gradient, a partial sum, a weight difference): its
 * square (about 1e30) stays far inside float32, so Adam's second moment cannot overflow. 8-bit
 * scales are bounded by it / 127.
 */
export const VALUE_LIMIT = 1e15;

/** Values of one chunk as they cross the wire: float32, half bits, or 8-bit blocks with their scales. */
export interface WireValues {
  fp16?: boolean;
  scales?: Float32Array;
  data: Float32Array | Uint16Array | Int8Array;
}

/** New weights of one chunk as they cross the wire: as WireValues, or (fp32 and 16-bit) the packed XOR of their bits with the version the receivers hold (bit-delta.ts). */
export type WeightsValues = (WireValues & { xor?: undefined }) | { xor: true; fp16?: boolean; scales?: undefined; data: Uint8Array };

/**
 * Whole weights as the workers hold them when they have followed no chunk yet (a new or resumed
 * run's, and the seeded initial ones): the master weights as the wire delivers them, half's
 * rounding on the 16-bit wire (8-bit's later versions are differences from this one, so it starts
 * exact). `w` itself on fp32.
 */
export function wholeView(wire: WirePrecision, w: Float32Array): Float32Array {
  return wire === 'fp32' ? w : wire === '16' ? fromHalf(toHalf(w)) : w.slice();
}

export function isWirePrecision(x: unknown): x is WirePrecision {
  return typeof x === 'string' && (WIRE_PRECISIONS as readonly string[]).includes(x);
}

/** Scales for `n` values. */
export function blocksOf(n: number): number {
  return Math.ceil(n / BLOCK);
}

/** Bytes one value costs on the wire (8-bit counts its share of the scales). */
export function bytesPerValue(wire: WirePrecision): number {
  return wire === 'fp32' ? 4 : wire === '16' ? 2 : 1 + 4 / BLOCK;
}

/** Adding and subtracting 1.5 * 2^52 rounds a double of magnitude below 2^51 to an integer, ties to even (IEEE), without a call. */
const ROUNDER = 6755399441055744;

/**
 * A block's scale: max |x| / 127 in float32, at least MIN_SCALE; NaN when the block holds a NaN
 * (and Inf when it holds an Inf), so that the receiver refuses it (E_NONFINITE) as it refuses a
 * NaN in a float32 frame, instead of the NaN passing as a zero.
 */
function scaleOf(maxAbs: number, nan: boolean): number {
  return nan ? NaN : Math.max(MIN_SCALE, Math.fround(maxAbs / QMAX));
}

/**
 * Blockwise 8-bit encoding of `src`: scale = max |x| / 127 of each block (at least MIN_SCALE),
 * q = x / scale rounded to the nearest integer, ties to even.
 */
export function quantize8(src: Float32Array, q: Int8Array = new Int8Array(src.length), scales: Float32Array = new Float32Array(blocksOf(src.length)), math: NativeMath | null = nativeMath()): { q: Int8Array; scales: Float32Array } {
  if (math) {
    math.quantize8(src, q, scales);
    return { q, scales };
  }
  const n = src.length;
  for (let b = 0, start = 0; start < n; b++, start += BLOCK) encodeBlock(src, start, Math.min(n, start + BLOCK) - start, q, start, scales, b);
  return { q, scales };
}

/** The float32 scale may round below max/127: what lands just outside [-127, 127] is brought back (an Int8Array would wrap 128). */
function clamp8(v: number): number {
  return v > QMAX ? QMAX : v < -QMAX ? -QMAX : v === v ? v : 0;
}

/** One block: x[from, from + n) into q[at, at + n) and scales[b]; returns the scale. */
function encodeBlock(x: Float32Array, from: number, n: number, q: Int8Array, at: number, scales: Float32Array, b: number): number {
  let maxAbs = 0;
  let nan = false;
  for (let i = from; i < from + n; i++) {
    const a = Math.abs(x[i]!);
    if (a > maxAbs) maxAbs = a;
    else if (a !== a) nan = true;
  }
  const scale = scaleOf(maxAbs, nan);
  scales[b] = scale;
  const inv = 1 / scale;
  for (let i = 0; i < n; i++) q[at + i] = clamp8(x[from + i]! * inv + ROUNDER - ROUNDER);
  return scale;
}

/** dst = (base ?? 0) + q * scale, each product and sum rounded to float32. */
export function dequantize8(q: Int8Array, scales: Float32Array, dst: Float32Array = new Float32Array(q.length), base?: Float32Array, math: NativeMath | null = nativeMath()): Float32Array {
  decode8(q, scales, dst, base, math);
  return dst;
}

/** dequantize8, and where the first byte of -128 is (-1: none; no encoder writes one). */
function decode8(q: Int8Array, scales: Float32Array, dst: Float32Array, base: Float32Array | undefined, math: NativeMath | null): number {
  if (math) return base ? math.dequantize8(q, scales, dst, base) : math.dequantize8(q, scales, dst);
  let bad = -1;
  const n = q.length;
  for (let b = 0, start = 0; start < n; b++, start += BLOCK) {
    const end = Math.min(n, start + BLOCK);
    const scale = scales[b]!;
    if (base) for (let i = start; i < end; i++) dst[i] = base[i]! + Math.fround(q[i]! * scale);
    else for (let i = start; i < end; i++) dst[i] = q[i]! * scale;
    for (let i = start; i < end && bad < 0; i++) if (q[i] === -128) bad = i;
  }
  return bad;
}

/**
 * Room for encoded values that live only until they are copied into a frame: one per sender, so
 * that a chunk's encoding allocates nothing (each call reuses the last one's memory).
 */
export class WireScratch {
  private halves = new Uint16Array(0);
  private bytes = new Int8Array(0);
  private blockScales = new Float32Array(0);
  private packedBytes = new Uint8Array(0);
  private heldHalves = new Uint16Array(0);
  half(n: number): Uint16Array {
    return (this.halves = grown(this.halves, n, Uint16Array)).subarray(0, n);
  }
  q(n: number): Int8Array {
    return (this.bytes = grown(this.bytes, n, Int8Array)).subarray(0, n);
  }
  scales(n: number): Float32Array {
    const b = blocksOf(n);
    return (this.blockScales = grown(this.blockScales, b, Float32Array)).subarray(0, b);
  }
  /** Half bits of the weights the workers hold (the base of a 16-bit XOR delta). */
  halfBase(n: number): Uint16Array {
    return (this.heldHalves = grown(this.heldHalves, n, Uint16Array)).subarray(0, n);
  }
  packed(n: number): Uint8Array {
    const b = packedBound(n);
    return (this.packedBytes = grown(this.packedBytes, b, Uint8Array)).subarray(0, b);
  }
}

/** `a`, or a new array of `n` when `a` is shorter. */
function grown<T extends Uint8Array | Int8Array | Uint16Array | Float32Array>(a: T, n: number, Ctor: new (n: number) => T): T {
  return a.length < n ? new Ctor(n) : a;
}

/** `src` as it crosses the wire at this precision (fp32: `src` itself); in `scratch` when given (valid until its next use). */
export function encodeValues(wire: WirePrecision, src: Float32Array, scratch?: WireScratch): WireValues & { fp16: boolean } {
  if (wire === 'fp32') return { fp16: false, data: src };
  const n = src.length;
  if (wire === '16') return { fp16: true, data: toHalf(src, scratch?.half(n)) };
  const { q, scales } = quantize8(src, scratch?.q(n), scratch?.scales(n));
  return { fp16: false, data: q, scales };
}

/** The precision a frame's values say they are in. */
function precisionOf(x: WireValues): WirePrecision {
  return x.scales ? '8' : x.fp16 ? '16' : 'fp32';
}

/**
 * Check that `x` is in the run's precision and, for 8-bit, that its scales are what an encoder
 * writes (one per block, finite, at least MIN_SCALE, at most VALUE_LIMIT / 127); then its values as
 * float32, into `dst` when given (fp32 without `dst`: the frame's own floats). `base` (8-bit only)
 * makes them a difference added to it, as weights travel on that wire. What the values themselves
 * may be is the caller's rule (bounds.ts for gradients).
 */
export function decodeValues(wire: WirePrecision, x: WireValues, what: string, base?: Float32Array, dst?: Float32Array): Float32Array {
  const got = precisionOf(x);
  if (got !== wire) throw new GanError('E_SHAPE', `${what} in ${got === 'fp32' ? 'fp32' : `${got}-bit`} values, the run's wire is ${wire}`);
  if (wire === '16') return fromHalf(x.data as Uint16Array, dst);
  if (wire === 'fp32') return dst ? (dst.set(x.data as Float32Array), dst) : (x.data as Float32Array);
  const q = x.data as Int8Array;
  const scales = x.scales!;
  if (scales.length !== blocksOf(q.length)) throw new GanError('E_SHAPE', `${what}: ${scales.length} scales for ${q.length} 8-bit values (${blocksOf(q.length)} blocks of ${BLOCK})`);
  const maxScale = VALUE_LIMIT / QMAX;
  for (let b = 0; b < scales.length; b++) {
    const s = scales[b]!;
    if (!Number.isFinite(s)) throw new GanError('E_NONFINITE', `${what}: scale of block ${b} is ${s}`);
    if (!(s >= MIN_SCALE) || s > maxScale) throw new GanError('E_BOUNDS', `${what}: scale of block ${b} is ${s}, outside [${MIN_SCALE.toExponential(2)}, ${maxScale.toExponential(2)}]`);
  }
  const out = dst ?? new Float32Array(q.length);
  const bad = decode8(q, scales, out, base, nativeMath());
  if (bad >= 0) throw new GanError('E_BOUNDS', `${what}: 8-bit value -128 at ${bad} (encoders write -127..127)`);
  return out;
}

/**
 * A worker's gradient of one net on an 8-bit wire, with error feedback: what is sent is the
 * gradient plus what earlier rounding lost (`residual`), and what this rounding loses is kept for
 * the next time. Encodes `g` chunk by chunk (blocks count from each chunk's start, as the frames
 * do) into `q`/`scales`; returns the values the coordinator will sum (the decoded chunks). `into`
 * holds buffers to write into instead of new ones (a worker's, reused phase after phase).
 */
export function quantizeWithFeedback(
  g: Float32Array, residual: Float32Array, chunk: number, math: NativeMath | null = nativeMath(),
  into?: { q: Int8Array; scales: Float32Array; decoded: Float32Array },
): { q: Int8Array; scales: Float32Array; decoded: Float32Array } {
  const n = g.length;
  const q = into?.q.subarray(0, n) ?? new Int8Array(n);
  const scales = into?.scales.subarray(0, scalesFor(n, chunk)) ?? new Float32Array(scalesFor(n, chunk));
  const decoded = into?.decoded.subarray(0, n) ?? new Float32Array(n);
  for (let c = 0, s = 0; c < n; c += chunk) {
    const end = Math.min(n, c + chunk);
    const nb = blocksOf(end - c);
    const part = [g.subarray(c, end), residual.subarray(c, end), q.subarray(c, end), scales.subarray(s, s + nb), decoded.subarray(c, end)] as const;
    if (math) math.quantize8Feedback(...part);
    else feedback8(...part);
    s += nb;
  }
  return { q, scales, decoded };
}

/** One chunk of quantizeWithFeedback: x = g + residual (float32) encoded; decoded = what it decodes to; residual = what it lost. */
function feedback8(g: Float32Array, residual: Float32Array, q: Int8Array, scales: Float32Array, decoded: Float32Array): void {
  const x = new Float32Array(BLOCK);
  for (let b = 0, start = 0; start < g.length; b++, start += BLOCK) {
    const end = Math.min(g.length, start + BLOCK);
    for (let i = start; i < end; i++) x[i - start] = g[i]! + residual[i]!;
    const scale = encodeBlock(x, 0, end - start, q, start, scales, b);
    for (let i = start; i < end; i++) {
      const d = (decoded[i] = q[i]! * scale);
      residual[i] = x[i - start]! - Math.fround(d);
    }
  }
}

/** Scales of a vector of `n` values sent in chunks of `chunk`. */
export function scalesFor(n: number, chunk: number): number {
  const full = Math.floor(n / chunk);
  return full * blocksOf(chunk) + blocksOf(n - full * chunk);
}

/** The scales of chunk [start, end) within a vector's scales laid out by scalesFor. */
export function chunkScales(scales: Float32Array, chunk: number, start: number, end: number): Float32Array {
  const s = (start / chunk) * blocksOf(chunk);
  return scales.subarray(s, s + blocksOf(end - start));
}

/**
 * New weights `w` of one chunk as they travel, given the view of it every worker holds now
 * (`view`); writes the view they will hold once these values arrive into `nextView` (on the fp32
 * wire `w` itself is the view, and `nextView` is expected to be `w`). On fp32 and 16 bits they go
 * as the packed XOR of their bits with the view's (bit-delta.ts), or as they are where that is no
 * smaller; with `pack` false (nobody receives them) nothing is packed: only the next view is written.
 */
export function encodeWeights(wire: WirePrecision, w: Float32Array, view: Float32Array, nextView: Float32Array, scratch?: WireScratch, math: NativeMath | null = nativeMath(), pack = true): WeightsValues & { fp16: boolean } {
  if (wire === 'fp32') return pack ? smallerAsDelta(w, view, false, scratch, math) : { fp16: false, data: w };
  if (wire === '16') {
    // The view holds halves exactly: its half bits are the ones the workers hold (read before nextView is written).
    const held = pack ? toHalf(view, scratch?.halfBase(w.length)) : null;
    const h = toHalf(w, scratch?.half(w.length));
    fromHalf(h, nextView);
    return held ? smallerAsDelta(h, held, true, scratch, math) : { fp16: true, data: h };
  }
  // The difference w - view, rounded to float32, encoded block by block; the next view is what
  // decoding it onto this one gives (dequantize8 with a base, the same arithmetic as the workers').
  const n = w.length;
  const q = scratch?.q(n) ?? new Int8Array(n);
  const scales = scratch?.scales(n) ?? new Float32Array(blocksOf(n));
  if (math) {
    math.quantizeDelta8(w, view, q, scales, nextView);
    return { fp16: false, data: q, scales };
  }
  const x = new Float32Array(BLOCK);
  for (let b = 0, start = 0; start < n; b++, start += BLOCK) {
    const end = Math.min(n, start + BLOCK);
    for (let i = start; i < end; i++) x[i - start] = w[i]! - view[i]!;
    const scale = encodeBlock(x, 0, end - start, q, start, scales, b);
    for (let i = start; i < end; i++) nextView[i] = view[i]! + Math.fround(q[i]! * scale);
  }
  return { fp16: false, data: q, scales };
}

/** `words` (float32, or half bits with `fp16`) as the packed XOR of their bits with `held`'s where that is smaller, else as they are. */
function smallerAsDelta<T extends Float32Array | Uint16Array>(words: T, held: T, fp16: boolean, scratch: WireScratch | undefined, math: NativeMath | null): WeightsValues & { fp16: boolean } {
  const packed = packDelta(words, held, scratch?.packed(words.length) ?? new Uint8Array(packedBound(words.length)), math);
  return packed.length < words.byteLength ? { fp16, xor: true, data: packed } : { fp16, data: words };
}

/**
 * What a worker makes of a weights chunk: the new view of it (`view`: the one it holds, the base
 * of an 8-bit difference or an XOR delta); a 16-bit delta is unpacked in `scratch` when given.
 */
export function decodeWeights(wire: WirePrecision, x: WeightsValues, view: Float32Array | null, dst: Float32Array, what: string, scratch?: WireScratch): Float32Array {
  if (x.xor) {
    const of = x.fp16 ? '16' : 'fp32';
    if (wire !== of || x.scales) throw new GanError('E_SHAPE', `${what}: an XOR delta of ${of === 'fp32' ? 'fp32' : '16-bit'} weights, the run's wire is ${wire}`);
    if (!view) throw new GanError('E_STALE', `${what}: an XOR delta without the weights it applies to`);
    if (of === 'fp32') unpackDelta(x.data, view, dst, what);
    else fromHalf(unpackDelta(x.data, toHalf(view, scratch?.halfBase(dst.length)), scratch?.half(dst.length) ?? new Uint16Array(dst.length), what), dst);
    if (!allFinite(dst)) throw new GanError('E_NONFINITE', `${what}: weights are not finite`);
    return dst;
  }
  if (wire === '8' && !view) throw new GanError('E_STALE', `${what}: an 8-bit difference without the weights it applies to`);
  const out = decodeValues(wire, x, what, wire === '8' ? view! : undefined, dst);
  if (wire !== 'fp32' && !allFinite(out)) throw new GanError('E_NONFINITE', `${what}: weights are not finite`);
  return out;
}
