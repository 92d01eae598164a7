/**
 * Exact fp32 weights as packed XOR deltas (shared/numerics/bit-delta.ts): the weights come back
 * bit for bit, the addon writes the JavaScript's bytes, steps the size of Adam's take fewer bytes
 * than float32, and bytes that are not such a packing are refused with their code.
 */
import { describe, expect, it } from 'vitest';
import { GROUP, packDelta, packedBound, unpackDelta } from '../shared/numerics/bit-delta.js';
import { WireScratch, decodeWeights, encodeWeights } from '../shared/numerics/wire-format.js';
import { fromHalf, toHalf } from '../shared/numerics/half.js';
import { Kind, decode, encode } from '../shared/wire/codec.js';
import type { GanError } from '../shared/wire/errors.js';
import { type NativeMath, nativeMath } from '../shared/backend/addon.js';
import { codeOf } from './util-errors.js';

/** A small LCG's 32-bit words. */
function words(n: number, seed: number): Uint32Array {
  let s = seed >>> 0;
  const out = new Uint32Array(n);
  for (let i = 0; i < n; i++) out[i] = s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
  return out;
}

/** Weights near `scale`, and the same weights after one step of about `lr` each (an Adam step's size). */
function stepPair(n: number, seed: number, scale: number, lr: number): { before: Float32Array; after: Float32Array } {
  const r = words(2 * n, seed);
  const before = new Float32Array(n);
  const after = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    before[i] = ((r[i]! / 2 ** 32) * 2 - 1) * scale;
    after[i] = before[i]! + ((r[n + i]! / 2 ** 32) * 2 - 1) * lr;
  }
  return { before, after };
}

const bits = (a: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength);
const maths: [string, NativeMath | null][] = [['JavaScript', null], ...(nativeMath() ? [['the addon', nativeMath()] as [string, NativeMath]] : [])];

describe('a packed XOR delta', () => {
  it.each(maths)('gives back every bit pattern over any base, every length and width (%s)', (_, math) => {
    for (let n = 0; n <= 3 * GROUP + 3; n++) {
      for (const width of [0, 1, 7, 8, 9, 16, 23, 24, 25, 31, 32]) {
        const base = new Float32Array(words(n, 7 + n).buffer);
        const x = words(n, 100 + width);
        const w = new Float32Array(n);
        const wb = new Uint32Array(w.buffer);
        const yb = new Uint32Array(base.buffer);
        const mask = width === 32 ? 0xffffffff : 2 ** width - 1;
        for (let i = 0; i < n; i++) wb[i] = (yb[i]! ^ (x[i]! & mask)) >>> 0;
        const packed = packDelta(w, base, new Uint8Array(packedBound(n)), math);
        expect(packed.length).toBeLessThanOrEqual(Math.ceil(n / GROUP) * (1 + width));
        const back = unpackDelta(packed, base, new Float32Array(n), 'test', math);
        expect(bits(back).equals(bits(w))).toBe(true);
      }
    }
  });

  it.skipIf(!nativeMath())('is the same bytes from the addon as from the JavaScript, which each decodes', () => {
    for (const n of [1, 8, 1000, 65536 + 5]) {
      const { before, after } = stepPair(n, n, 0.05, 2e-4);
      const js = packDelta(after, before, new Uint8Array(packedBound(n)), null);
      const c = packDelta(after, before, new Uint8Array(packedBound(n)), nativeMath());
      expect(Buffer.from(c).equals(Buffer.from(js))).toBe(true);
      expect(bits(unpackDelta(js, before, new Float32Array(n), 'js', nativeMath())).equals(bits(after))).toBe(true);
      expect(bits(unpackDelta(c, before, new Float32Array(n), 'c', null)).equals(bits(after))).toBe(true);
    }
  });

  it('of an Adam-sized step takes about 0.7 of the float32 bytes; an unchanged chunk one byte in 32', () => {
    const n = 100_000;
    const { before, after } = stepPair(n, 3, 0.05, 2e-4);
    const packed = packDelta(after, before, new Uint8Array(packedBound(n)));
    expect(packed.length / (4 * n)).toBeGreaterThan(0.5);
    expect(packed.length / (4 * n)).toBeLessThan(0.8);
    expect(packDelta(before, before, new Uint8Array(packedBound(n))).length).toBe(n / GROUP);
  });

  it.each(maths)('refuses bytes that are not a packing of n values (%s)', (_, math) => {
    const n = 20;
    const { before, after } = stepPair(n, 5, 0.05, 2e-4);
    const good = packDelta(after, before, new Uint8Array(packedBound(n)), math).slice();
    const dst = new Float32Array(n);
    const refused = (bytes: Uint8Array) => {
      try {
        unpackDelta(bytes, before, dst, 'chunk', math);
      } catch (e) {
        return (e as GanError).message;
      }
      return 'accepted';
    };
    expect(refused(good)).toBe('accepted');
    expect(refused(good.subarray(0, 2))).toMatch(/shorter than its group widths/);
    const wide = good.slice();
    wide[1] = 33;
    expect(refused(wide)).toMatch(/a group width over the bits of its values/);
    expect(refused(good.subarray(0, good.length - 1))).toMatch(/length is not what the widths add up to/);
    expect(refused(new Uint8Array([...good, 0]))).toMatch(/length is not what the widths add up to/);
    // 20 values: the third group holds 4 and 4 of padding; set a bit past the last value.
    const padded = new Uint8Array([0, 0, 8, 0, 0, 0, 0, 0, 0, 0, 0x80]);
    expect(refused(padded)).toMatch(/padding bits past the last value are not zero/);
    expect(codeOf(() => unpackDelta(wide, before, dst, 'chunk', math))).toBe('E_MALFORMED');
  });
});

describe('fp32 weights chunks', () => {
  it('travel as an XOR delta over the view when that is smaller, as float32 otherwise, and decode to the same bits', () => {
    const n = 4096;
    const { before, after } = stepPair(n, 9, 0.05, 2e-4);
    const x = encodeWeights('fp32', after, before, after, new WireScratch());
    expect(x.xor).toBe(true);
    const m = decode(encode({ k: Kind.WeightsChunk, net: 'G', version: 2, attempt: 0, offset: 0, ...x, fp16: undefined }));
    if (m.k !== Kind.WeightsChunk || !m.xor) throw new Error('expected an XOR delta');
    expect(m.data).toBeInstanceOf(Uint8Array);
    expect(bits(decodeWeights('fp32', m, before, new Float32Array(n), 'weights')).equals(bits(after))).toBe(true);
    // Random bits change every bit: the delta would be larger than the floats.
    const noise = new Float32Array(words(n, 11).buffer).map((v) => (Number.isFinite(v) ? v : 0));
    const raw = encodeWeights('fp32', noise, before, noise);
    expect(raw.xor).toBeUndefined();
    expect(raw.data).toBe(noise);
  });

  it('are refused when the delta has no base, is of another wire\'s values, is also 8-bit, or gives weights that are not finite', () => {
    const n = 64;
    const { before, after } = stepPair(n, 13, 0.05, 2e-4);
    const x = encodeWeights('fp32', after, before, after);
    if (!x.xor) throw new Error('expected an XOR delta');
    expect(codeOf(() => decodeWeights('fp32', x, null, new Float32Array(n), 'w'))).toBe('E_STALE');
    expect(codeOf(() => decodeWeights('16', x, before, new Float32Array(n), 'w'))).toBe('E_SHAPE');
    expect(codeOf(() => decodeWeights('fp32', { ...x, fp16: true }, before, new Float32Array(n), 'w'))).toBe('E_SHAPE');
    const frame = encode({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: 0, xor: true, scales: new Float32Array(1), data: x.data } as never);
    expect(codeOf(() => decode(frame))).toBe('E_MALFORMED');
    const nan = after.slice();
    nan[5] = NaN;
    const bad = encodeWeights('fp32', nan, after, nan);
    if (!bad.xor) throw new Error('expected an XOR delta');
    expect(codeOf(() => decodeWeights('fp32', bad, after, new Float32Array(n), 'w'))).toBe('E_NONFINITE');
  });
});

describe('16-bit weights chunks', () => {
  it('travel as an XOR delta of the halves the workers hold, a fraction of the half bytes, and decode to the coordinator\'s view bit for bit', () => {
    const n = 4096;
    const { before, after } = stepPair(n, 17, 0.05, 2e-4);
    const view = fromHalf(toHalf(before));
    const next = new Float32Array(n);
    const x = encodeWeights('16', after, view, next, new WireScratch());
    expect(x).toMatchObject({ xor: true, fp16: true });
    expect(x.data.byteLength / (2 * n)).toBeLessThan(0.7);
    const m = decode(encode({ k: Kind.WeightsChunk, net: 'G', version: 2, attempt: 0, offset: 0, ...x }));
    if (m.k !== Kind.WeightsChunk) throw new Error('expected weights');
    expect(bits(decodeWeights('16', m, view, new Float32Array(n), 'weights')).equals(bits(next))).toBe(true);
    expect(bits(next).equals(bits(fromHalf(toHalf(after))))).toBe(true);
  });

  it.skipIf(!nativeMath())('pack to the same bytes in the addon as in the JavaScript; a width over 16 is refused', () => {
    const n = 1003;
    const a = new Uint16Array(words(n, 21).buffer.slice(0, 2 * n));
    const b = a.map((v, i) => v ^ (i % 5 === 0 ? 0x1f : i % 3));
    const js = packDelta(b, a, new Uint8Array(packedBound(n)), null);
    const c = packDelta(b, a, new Uint8Array(packedBound(n)), nativeMath());
    expect(Buffer.from(c).equals(Buffer.from(js))).toBe(true);
    for (const math of [null, nativeMath()]) {
      expect(Buffer.from(unpackDelta(js, a, new Uint16Array(n), 'h', math).buffer).equals(Buffer.from(b.buffer))).toBe(true);
      const wide = new Uint8Array(packedBound(8));
      wide[0] = 17;
      expect(codeOf(() => unpackDelta(wide.subarray(0, 18), new Uint16Array(8), new Uint16Array(8), 'h', math))).toBe('E_MALFORMED');
    }
  });
});
