/**
 * IEEE 754 half floats for the 16-bit gradient wire format (--fp16). The addon converts when it is
 * built; these JavaScript loops are the reference it matches bit for bit, and stand in otherwise.
 */
import { type NativeMath, nativeMath } from '../backend/addon.js';

/**
 * Float32 -> IEEE 754 half (round to nearest even), for 16-bit gradient upload. `math` is the
 * addon (the default when built) or null for this JavaScript loop, the reference it matches bit
 * for bit.
 */
export function toHalf(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length), math: NativeMath | null = nativeMath()): Uint16Array {
  // A shorter dst drops the excess here, as typed-array stores do below; the addon refuses it.
  if (math && dst.length >= src.length) {
    math.floatToHalf(src, dst);
    return dst;
  }
  const u32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u32[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      dst[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
      } else {
        mant |= 0x800000;
        const shift = 14 - e;
        let h = mant >>> shift;
        const rem = mant & ((1 << shift) - 1);
        const half = 1 << (shift - 1);
        if (rem > half || (rem === half && (h & 1))) h++;
        dst[i] = sign | h;
      }
    } else {
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
      dst[i] = sign | h;
    }
  }
  return dst;
}

const halfTable = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** IEEE half bits -> float value. */
export function halfToFloat(h: number): number {
  return halfTable[h & 0xffff]!;
}

export function fromHalf(src: Uint16Array, dst: Float32Array = new Float32Array(src.length), math: NativeMath | null = nativeMath()): Float32Array {
  if (math && dst.length >= src.length) {
    math.halfToFloat(src, dst);
    return dst;
  }
  for (let i = 0; i < src.length; i++) dst[i] = halfTable[src[i]!]!;
  return dst;
}
