/**
 * Weights in fewer bytes, exactly: new weights as the XOR of their bits with the version every
 * receiver holds, packed. An Adam step moves a weight by about the learning rate, so the sign,
 * the exponent and the top of the mantissa rarely change: a float32's XOR has about 18
 * significant bits of 32 (the seed's model at round 300: 0.70 of the float32 bytes), a half's
 * (the 16-bit wire's view) a few of 16. Decoding gives the new bits exactly.
 *
 * Layout of n values: ceil(n / 8) width bytes, then for each group of 8 values (the last one
 * padded with zeros) its width b (0..32 for float32, 0..16 for halves: the significant bits of
 * the group's largest XOR) and b bytes: the 8 values' low b bits, value j at bits [j b, (j + 1) b)
 * of the group's little-endian bit string. A group of 8 values of b bits fills exactly b bytes, so
 * every group starts on a byte.
 *
 * The addon (native/src/bit_delta.c) runs these loops when it is built; the JavaScript ones are
 * its reference and stand in for it otherwise (browsers). Both write the same bytes.
 */
import { type NativeMath, nativeMath } from '../backend/addon.js';
import { GanError } from '../wire/errors.js';

/** Values per group (one width byte each). */
export const GROUP = 8;

/** The most bytes `n` values can take: every group 32 bits wide, plus the widths. */
export function packedBound(n: number): number {
  const groups = Math.ceil(n / GROUP);
  return groups + 32 * groups;
}

/** Float32 values as their bits; half bits as they are. */
type Words = Float32Array | Uint16Array;

function bitsOf(a: Words): Uint32Array | Uint16Array {
  return a instanceof Uint16Array ? a : new Uint32Array(a.buffer, a.byteOffset, a.length);
}

/** `w` as the packed XOR of its bits with `base`'s (of the same type), into `out` (at least packedBound(n) bytes); the bytes used. */
export function packDelta<T extends Words>(w: T, base: T, out: Uint8Array, math: NativeMath | null = nativeMath()): Uint8Array {
  const n = w.length;
  if (base.length < n || out.length < packedBound(n)) throw new RangeError(`packDelta: base or out too short for ${n} values`);
  if (math) return out.subarray(0, math.packDelta(w, base, out));
  const x = bitsOf(w);
  const y = bitsOf(base);
  const groups = Math.ceil(n / GROUP);
  const v = new Uint32Array(GROUP);
  let p = groups;
  for (let g = 0; g < groups; g++) {
    const start = g * GROUP;
    let or = 0;
    for (let j = 0; j < GROUP; j++) {
      const i = start + j;
      v[j] = i < n ? (x[i]! ^ y[i]!) >>> 0 : 0;
      or |= v[j]!;
    }
    const b = 32 - Math.clz32(or);
    out[g] = b;
    if (b === 0) continue;
    // Fewer than 8 bits are held between values and at most NARROW are added at once (a wider
    // value goes as its low 16 bits, then the rest): acc stays under 2^31, in an int32.
    let acc = 0;
    let bits = 0;
    for (let j = 0; j < GROUP; j++) {
      let val = v[j]!;
      let left = b;
      if (left > NARROW) {
        acc |= (val & 0xffff) << bits;
        bits += 16;
        for (; bits >= 8; bits -= 8, acc >>>= 8) out[p++] = acc & 0xff;
        val >>>= 16;
        left -= 16;
      }
      acc |= val << bits;
      bits += left;
      for (; bits >= 8; bits -= 8, acc >>>= 8) out[p++] = acc & 0xff;
    }
  }
  return out.subarray(0, p);
}

/** The most bits the loops add to (or take from) their int32 accumulator at once. */
const NARROW = 24;

/**
 * The values `packed` describes over `base`, into `dst` (n = dst.length values, of base's type).
 * Throws E_MALFORMED when the bytes are not such a packing of n values (a width over the word's
 * bits, a length that does not add up, padding that is not zero); whether the weights are finite
 * is the caller's check.
 */
export function unpackDelta<T extends Words>(packed: Uint8Array, base: T, dst: T, what: string, math: NativeMath | null = nativeMath()): T {
  const n = dst.length;
  if (base.length < n) throw new RangeError(`unpackDelta: base too short for ${n} values`);
  const problem = math ? math.unpackDelta(packed, base, dst) : unpackJs(packed, bitsOf(base), bitsOf(dst));
  if (problem !== 0) throw new GanError('E_MALFORMED', `${what}: not a packed delta of ${n} values (${PROBLEMS[problem] ?? `error ${problem}`})`);
  return dst;
}

/** unpackDelta's outcomes (the addon returns the same codes). */
const PROBLEMS: Record<number, string> = {
  1: 'shorter than its group widths',
  2: 'a group width over the bits of its values',
  3: 'its length is not what the widths add up to',
  4: 'padding bits past the last value are not zero',
};

function unpackJs(packed: Uint8Array, y: Uint32Array | Uint16Array, out: Uint32Array | Uint16Array): number {
  const n = out.length;
  const groups = Math.ceil(n / GROUP);
  const widest = out instanceof Uint16Array ? 16 : 32;
  if (packed.length < groups) return 1;
  let total = groups;
  for (let g = 0; g < groups; g++) {
    const b = packed[g]!;
    if (b > widest) return 2;
    total += b;
  }
  if (total !== packed.length) return 3;
  let p = groups;
  for (let g = 0; g < groups; g++) {
    const b = packed[g]!;
    const start = g * GROUP;
    // As packDelta's: fewer than 8 bits held between values, at most NARROW taken at once.
    let acc = 0;
    let bits = 0;
    for (let i = start; i < start + GROUP; i++) {
      let val = 0;
      let left = b;
      if (left > NARROW) {
        for (; bits < 16; bits += 8) acc |= packed[p++]! << bits;
        val = acc & 0xffff;
        acc >>>= 16;
        bits -= 16;
        left -= 16;
      }
      for (; bits < left; bits += 8) acc |= packed[p++]! << bits;
      const top = acc & ((1 << left) - 1);
      acc >>>= left;
      bits -= left;
      val = (b > NARROW ? val | (top << 16) : top) >>> 0;
      if (i < n) out[i] = (y[i]! ^ val) >>> 0;
      else if (val !== 0) return 4;
    }
  }
  return 0;
}
