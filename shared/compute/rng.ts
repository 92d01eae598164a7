/**
 * Deterministic random numbers. Everything random in training (data order, noise, dropout masks,
 * initial weights) comes from here, keyed by the run seed and by *what* it is for (epoch, sample
 * id, phase), never by which worker or in which order it is drawn. That is what makes N workers at
 * batch b/N equal one worker at batch b, and a resumed run equal an uninterrupted one.
 */

/** 32-bit mix (murmur3 finaliser). */
export function mix32(h: number): number {
  h ^= h >>> 16;
  h = Math.imul(h, 0x85ebca6b);
  h ^= h >>> 13;
  h = Math.imul(h, 0xc2b2ae35);
  h ^= h >>> 16;
  return h >>> 0;
}

/** Hash a list of integers into one 32-bit key. */
export function hashKey(...parts: number[]): number {
  let h = 0x9e3779b9;
  for (const p of parts) {
    h = mix32((h ^ (p >>> 0)) + 0x7f4a7c15 + ((h << 6) >>> 0) + (h >>> 2));
  }
  return h >>> 0;
}

/** sfc32: small, fast, passes PractRand; state is four uint32. */
export class Rng {
  private a: number;
  private b: number;
  private c: number;
  private d: number;
  private spare = NaN;

  constructor(...key: number[]) {
    const s = hashKey(...key);
    this.a = 0x9e3779b9;
    this.b = s;
    this.c = mix32(s ^ 0x243f6a88);
    this.d = 1;
    for (let i = 0; i < 12; i++) this.nextU32();
  }

  nextU32(): number {
    const t = (((this.a + this.b) | 0) + this.d) | 0;
    this.d = (this.d + 1) | 0;
    this.a = this.b ^ (this.b >>> 9);
    this.b = (this.c + (this.c << 3)) | 0;
    this.c = (this.c << 21) | (this.c >>> 11);
    this.c = (this.c + t) | 0;
    return t >>> 0;
  }

  /** Uniform in [0, 1). */
  uniform(): number {
    return this.nextU32() / 4294967296;
  }

  /** Standard normal (Box-Muller, pairs cached). */
  normal(): number {
    if (!Number.isNaN(this.spare)) {
      const s = this.spare;
      this.spare = NaN;
      return s;
    }
    let u = this.uniform();
    while (u <= 1e-12) u = this.uniform();
    const v = this.uniform();
    const r = Math.sqrt(-2 * Math.log(u));
    this.spare = r * Math.sin(2 * Math.PI * v);
    return r * Math.cos(2 * Math.PI * v);
  }

  /** Integer in [0, n). */
  below(n: number): number {
    return Math.floor(this.uniform() * n);
  }
}

/** Seeded Fisher-Yates permutation of 0..n-1. */
export function permutation(n: number, ...key: number[]): Uint32Array {
  const rng = new Rng(...key);
  const p = new Uint32Array(n);
  for (let i = 0; i < n; i++) p[i] = i;
  for (let i = n - 1; i > 0; i--) {
    const j = rng.below(i + 1);
    const t = p[i]!;
    p[i] = p[j]!;
    p[j] = t;
  }
  return p;
}

/** Streams: what a random draw is for. Part of every key so that streams never overlap. */
export const Stream = {
  epochOrder: 1,
  noise: 2,
  dropout: 3,
  init: 4,
  fixedNoise: 5,
  labels: 6,
} as const;

/** `count` values of N(0, 1) from the stream keyed by `key` (the same key always gives the same noise). */
export function seededNoise(count: number, ...key: number[]): Float32Array {
  const rng = new Rng(...key);
  const noise = new Float32Array(count);
  for (let i = 0; i < count; i++) noise[i] = rng.normal();
  return noise;
}
