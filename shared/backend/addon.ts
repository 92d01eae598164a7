/**
 * The optional N-API addon (native/): finding and loading it, and the plain-array arithmetic it
 * offers the coordinator (reduce, Adam, finiteness) and the wire format (16-bit floats). This
 * module does not import TensorFlow.js, so decoding a frame or stepping Adam never loads it; the
 * tfjs kernels the addon also provides are registered by native-kernels.ts.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { GanError } from '../wire/errors.js';
import { packageRoot } from '../paths.js';

/** The addon's surface; native/src/*.c document the argument conventions. */
export interface NativeAddon {
  gemm(
    heap: ArrayBuffer,
    batch: number,
    m: number,
    n: number,
    k: number,
    transA: number,
    transB: number,
    aOff: number,
    aStride: number,
    bOff: number,
    bStride: number,
    cOff: number,
    biasOff: number,
    act: number,
    alpha: number,
  ): void;
  binary(heap: ArrayBuffer, op: number, aOff: number, na: number, bOff: number, nb: number, outOff: number, n: number): void;
  unary(heap: ArrayBuffer, op: number, xOff: number, outOff: number, n: number, alpha: number): void;
  select(heap: ArrayBuffer, condOff: number, tOff: number, eOff: number, outOff: number, n: number): void;
  reduce(heap: ArrayBuffer, op: number, xOff: number, outer: number, inner: number, leading: number, outOff: number): void;
  setThreads(n: number): void;
  getThreads(): number;
  /** Which matrix-product library the addon was built with and what it runs on. */
  config(): string;
  weightedSum: NativeMath['weightedSum'];
  adamStep: NativeMath['adamStep'];
  allFinite: NativeMath['allFinite'];
  magnitude: NativeMath['magnitude'];
  emaUpdate: NativeMath['emaUpdate'];
  halfToFloat: NativeMath['halfToFloat'];
  floatToHalf: NativeMath['floatToHalf'];
  quantize8: NativeMath['quantize8'];
  quantize8Feedback: NativeMath['quantize8Feedback'];
  dequantize8: NativeMath['dequantize8'];
  quantizeDelta8: NativeMath['quantizeDelta8'];
  packDelta: NativeMath['packDelta'];
  unpackDelta: NativeMath['unpackDelta'];
  /** A file mapped into memory (native/src/shm.c): mode 0 creates it (0600, exclusive), 1 opens it to read and write, 2 read only. */
  mapFile?(path: string, bytes: number, mode: 0 | 1 | 2): ArrayBuffer;
}

/**
 * The addon's plain-array arithmetic for the coordinator's reduce and optimiser and the fp16 wire
 * format. Each function is bit-identical to its JavaScript reference (coordinator/optimizer.ts,
 * shared/wire/codec.ts), so results never depend on whether the addon was built. Misuse (wrong array
 * types, mismatched lengths, overlapping buffers) throws a TypeError or RangeError.
 */
export interface NativeMath {
  /** out[i] = sum over k, in order, of scales[k] * parts[k][i]: double products and adds, rounded to float32 after each add. */
  /** With `measures`, also each part's largest |x| and sum of squares as magnitude() takes them, at [2k] and [2k + 1]. */
  weightedSum(out: Float32Array, parts: Float32Array[], scales: number[], measures?: Float64Array): void;
  /** One Adam update (on several threads when the vector is large); whether every output is finite. The hyperparameters are the ones coordinator/optimizer.ts derives. */
  adamStep(
    w: Float32Array,
    g: Float32Array,
    m: Float32Array,
    v: Float32Array,
    b1: number,
    b2: number,
    omb1: number,
    omb2: number,
    c1: number,
    c2: number,
    lr: number,
    eps: number,
    /** Where the new weights and moments go (default: in place); each is its input or shares no memory with any array. */
    wOut?: Float32Array,
    mOut?: Float32Array,
    vOut?: Float32Array,
    /** The new weights written here too, in the same pass (the shared region's copy of them). */
    wAlso?: Float32Array,
  ): boolean | undefined;
  allFinite(a: Float32Array): boolean;
  /** out[0] = largest |a[i]|, out[1] = sum of squares in double, in blocks of four interleaved sums (NaN or Infinity when a holds one); with `copy`, a is copied there in the same pass. */
  magnitude(a: Float32Array, out: Float64Array, copy?: Float32Array): void;
  /** avg = d * avg + e * w in place, each element in double then rounded once. */
  emaUpdate(avg: Float32Array, w: Float32Array, d: number, e: number): void;
  /** Converts src.length values; dst may be longer. */
  halfToFloat(src: Uint16Array, dst: Float32Array): void;
  /** Converts src.length values; dst may be longer. */
  floatToHalf(src: Float32Array, dst: Uint16Array): void;
  /** The 8-bit wire format (shared/numerics/wire-format.ts): src in blocks of 256, one scale each. */
  quantize8(src: Float32Array, q: Int8Array, scales: Float32Array): void;
  /** g + residual encoded as quantize8 does; decoded = what it decodes to, residual = what it lost. */
  quantize8Feedback(g: Float32Array, residual: Float32Array, q: Int8Array, scales: Float32Array, decoded: Float32Array): void;
  /** dst = (base +) q * scale; the index of the first byte of -128 (which no encoder writes), or -1. */
  dequantize8(q: Int8Array, scales: Float32Array, dst: Float32Array, base?: Float32Array): number;
  /** w - view encoded as quantize8 does; nextView = view + its decoded value. */
  quantizeDelta8(w: Float32Array, view: Float32Array, q: Int8Array, scales: Float32Array, nextView: Float32Array): void;
  /** Weights (float32, or half bits) as the packed XOR of their bits with base's, of the same type (shared/numerics/bit-delta.ts); the bytes written to out. */
  packDelta(w: Float32Array | Uint16Array, base: Float32Array | Uint16Array, out: Uint8Array): number;
  /** The values packDelta's bytes describe over base, into dst (both of one type); 0, or the problem's code. */
  unpackDelta(packed: Uint8Array, base: Float32Array | Uint16Array, dst: Float32Array | Uint16Array): number;
}

export const ADDON_FILE = join('native', 'build', 'Release', 'gan_native.node');

let addonState: { addon: NativeAddon } | { error: string } | null = null;

/** The loaded addon, or why it is not available (loaded once per process). */
export function loadAddon(): { addon: NativeAddon } | { error: string } {
  if (addonState) return addonState;
  const root = packageRoot();
  // GAN_NATIVE_ADDON names another build of the addon (the benchmark compares its GEMMs this way).
  const file = process.env.GAN_NATIVE_ADDON ?? (root ? join(root, ADDON_FILE) : null);
  if (!file || !existsSync(file)) {
    addonState = {
      error: `native addon not built (${ADDON_FILE} missing; \`npm run build:native\` builds it, needing only a C compiler: apt-get install build-essential)`,
    };
  } else {
    try {
      addonState = { addon: createRequire(import.meta.url)(file) as NativeAddon };
    } catch (e) {
      addonState = { error: `native addon failed to load: ${(e as Error).message.split('\n')[0]}` };
    }
  }
  return addonState;
}

let mathState: { math: NativeMath | null } | null = null;

/**
 * The addon's array arithmetic, or null when the addon is not built or predates these functions.
 * Independent of the tfjs backend: the coordinator may never initialise 'native'.
 */
export function nativeMath(): NativeMath | null {
  if (mathState) return mathState.math;
  const s = loadAddon();
  let math: NativeMath | null = null;
  if ('addon' in s) {
    const a = s.addon;
    // An addon compiled from an older checkout loads fine but lacks these.
    if ([a.weightedSum, a.adamStep, a.allFinite, a.magnitude, a.emaUpdate, a.halfToFloat, a.floatToHalf, a.quantize8, a.quantize8Feedback, a.dequantize8, a.quantizeDelta8, a.packDelta, a.unpackDelta].every((f) => typeof f === 'function')) {
      math = {
        weightedSum: a.weightedSum,
        adamStep: a.adamStep,
        allFinite: a.allFinite,
        magnitude: a.magnitude,
        emaUpdate: a.emaUpdate,
        halfToFloat: a.halfToFloat,
        floatToHalf: a.floatToHalf,
        quantize8: a.quantize8,
        quantize8Feedback: a.quantize8Feedback,
        dequantize8: a.dequantize8,
        quantizeDelta8: a.quantizeDelta8,
        packDelta: a.packDelta,
        unpackDelta: a.unpackDelta,
      };
    }
  }
  mathState = { math };
  return math;
}

/**
 * Maps files into memory for the same-host regions (shared/wire/same-host.ts), or null when the
 * addon is not built (or predates mapFile): then every worker exchanges tensors in frames.
 */
export function fileMapper(): ((path: string, bytes: number, mode: 0 | 1 | 2) => ArrayBuffer) | null {
  const s = loadAddon();
  return 'addon' in s && typeof s.addon.mapFile === 'function' ? s.addon.mapFile : null;
}

export function nativeAvailable(): { ok: boolean; reason?: string } {
  const s = loadAddon();
  return 'addon' in s ? { ok: true } : { ok: false, reason: s.error };
}

let threadsSet = false;

/** Whether the compute thread count was set explicitly in this process. */
export function nativeThreadsSet(): boolean {
  return threadsSet;
}

/** Set the addon's matrix-product thread count (takes effect on the next kernel). */
export function setNativeThreads(n: number): void {
  const s = loadAddon();
  if (!('addon' in s)) throw new GanError('E_BACKEND', s.error);
  if (!Number.isInteger(n) || n < 1) throw new GanError('E_BACKEND', `threads must be a positive integer, got ${n}`);
  s.addon.setThreads(n);
  threadsSet = true;
}

/** One line for logs: the library, the CPU kernel it picked, the thread count. */
export function nativeDetail(addon: NativeAddon): string {
  const cfg = addon.config();
  const t = addon.getThreads();
  const threads = `${t} thread${t === 1 ? '' : 's'}`;
  const version = /OpenBLAS\s+([\d.]+)/.exec(cfg)?.[1];
  if (!version) return `${cfg}, ${threads}`;
  const arch = cfg.split(/\s+/).find((w) => /^[A-Z][A-Za-z0-9]+$/.test(w) && !w.startsWith('NO_') && w !== 'DYNAMIC_ARCH' && w !== 'OpenBLAS');
  return `OpenBLAS ${version}${arch ? ` (${arch})` : ''}, ${threads}`;
}
