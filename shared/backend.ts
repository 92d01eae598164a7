/**
 * Choosing the TensorFlow.js backend, and the `native` backend: the wasm backend with its heaviest
 * kernels (matrix products and the elementwise work around them) replaced by an N-API addon that
 * calls OpenBLAS directly on the wasm heap. tfjs-node would be faster still but needs a prebuilt
 * libtensorflow that cannot always be installed; the addon needs only a C compiler and OpenBLAS.
 */
import { existsSync } from 'node:fs';
import { createRequire } from 'node:module';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-cpu';
import '@tensorflow/tfjs-backend-wasm';

export type BackendName = 'auto' | 'tensorflow' | 'native' | 'wasm' | 'cpu';
export const BACKEND_NAMES: readonly BackendName[] = ['auto', 'tensorflow', 'native', 'wasm', 'cpu'];

export interface BackendInfo {
  name: Exclude<BackendName, 'auto'>;
  /** What runs the kernels, e.g. 'OpenBLAS 0.3.21 (SkylakeX), 1 thread'. */
  detail: string;
}

export interface InitOptions {
  /**
   * Compute threads (OpenBLAS for `native`). Worker processes sharing a host want 1 each, which is
   * the default unless OPENBLAS_NUM_THREADS (or OMP_NUM_THREADS) says otherwise.
   */
  threads?: number;
  /** Where the one-line fallback notice goes; stderr by default. */
  log?: (line: string) => void;
}

/** The addon's surface; see native/src/gan_native.c for the argument conventions. */
interface NativeAddon {
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
  config(): string;
  weightedSum: NativeMath['weightedSum'];
  adamStep: NativeMath['adamStep'];
  allFinite: NativeMath['allFinite'];
  halfToFloat: NativeMath['halfToFloat'];
  floatToHalf: NativeMath['floatToHalf'];
}

/**
 * The addon's plain-array arithmetic for the coordinator's reduce and optimiser and the fp16 wire
 * format. Each function is bit-identical to its JavaScript reference (coordinator/adam.ts,
 * shared/codec.ts), so results never depend on whether the addon was built. Misuse (wrong array
 * types, mismatched lengths, overlapping buffers) throws a TypeError or RangeError.
 */
export interface NativeMath {
  /** out[i] = sum over k, in order, of scales[k] * parts[k][i]: double products and adds, rounded to float32 after each add. */
  weightedSum(out: Float32Array, parts: Float32Array[], scales: number[]): void;
  /** One Adam update in place; the hyperparameters are the ones coordinator/adam.ts derives. */
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
  ): void;
  allFinite(a: Float32Array): boolean;
  /** Converts src.length values; dst may be longer. */
  halfToFloat(src: Uint16Array, dst: Float32Array): void;
  /** Converts src.length values; dst may be longer. */
  floatToHalf(src: Float32Array, dst: Uint16Array): void;
}

export class BackendError extends Error {
  readonly code = 'E_BACKEND';
  override readonly name = 'BackendError';
}

// ---------------------------------------------------------------------------------------------
// Locating and loading the addon

const ADDON_REL = join('native', 'build', 'Release', 'gan_native.node');

/**
 * The package root, found by walking up from this file: it is `..` from shared/*.ts (vitest runs
 * the sources) and `../..` from dist/shared/*.js.
 */
function packageRoot(): string | null {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (let i = 0; i < 5; i++) {
    if (existsSync(join(dir, 'package.json')) && existsSync(join(dir, 'native'))) return dir;
    const up = dirname(dir);
    if (up === dir) break;
    dir = up;
  }
  return null;
}

let addonState: { addon: NativeAddon } | { error: string } | null = null;

function loadAddon(): { addon: NativeAddon } | { error: string } {
  if (addonState) return addonState;
  const root = packageRoot();
  const file = root ? join(root, ADDON_REL) : null;
  if (!file || !existsSync(file)) {
    addonState = { error: `native addon not built (${ADDON_REL} missing; needs libopenblas-dev and a C compiler at install)` };
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
    if ([a.weightedSum, a.adamStep, a.allFinite, a.halfToFloat, a.floatToHalf].every((f) => typeof f === 'function')) {
      math = {
        weightedSum: a.weightedSum,
        adamStep: a.adamStep,
        allFinite: a.allFinite,
        halfToFloat: a.halfToFloat,
        floatToHalf: a.floatToHalf,
      };
    }
  }
  mathState = { math };
  return math;
}

export function nativeAvailable(): { ok: boolean; reason?: string } {
  const s = loadAddon();
  return 'addon' in s ? { ok: true } : { ok: false, reason: s.error };
}

let nativeThreadsSet = false;

/** Set OpenBLAS's thread count for the native backend (takes effect on the next kernel). */
export function setNativeThreads(n: number): void {
  const s = loadAddon();
  if (!('addon' in s)) throw new BackendError(s.error);
  if (!Number.isInteger(n) || n < 1) throw new BackendError(`threads must be a positive integer, got ${n}`);
  s.addon.setThreads(n);
  nativeThreadsSet = true;
}

function nativeDetail(addon: NativeAddon): string {
  const cfg = addon.config();
  const version = /OpenBLAS\s+([\d.]+)/.exec(cfg)?.[1];
  const arch = cfg.split(/\s+/).find((w) => /^[A-Z][A-Za-z0-9]+$/.test(w) && !w.startsWith('NO_') && w !== 'DYNAMIC_ARCH' && w !== 'OpenBLAS');
  const t = addon.getThreads();
  return `OpenBLAS ${version ?? '?'}${arch ? ` (${arch})` : ''}, ${t} thread${t === 1 ? '' : 's'}`;
}

// ---------------------------------------------------------------------------------------------
// The native backend's kernels

/** The parts of tfjs-backend-wasm's BackendWasm these kernels touch. */
interface WasmBackendLike extends tf.KernelBackend {
  wasm: { HEAPU8: Uint8Array };
  incRef(dataId: tf.DataId): void;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number; shape: number[]; dtype: tf.DataType } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType): tf.TensorInfo;
}

const ACT: Record<string, number> = { linear: 0, relu: 1, relu6: 2, leakyrelu: 3, sigmoid: 4, elu: 5 };

// Re-read on every call: growing wasm memory detaches the previous ArrayBuffer.
const heapOf = (backend: WasmBackendLike): ArrayBuffer => backend.wasm.HEAPU8.buffer as ArrayBuffer;

function offsetOf(backend: WasmBackendLike, t: tf.TensorInfo): number {
  const d = backend.dataIdMap.get(t.dataId);
  if (!d) throw new Error('tensor is not on the native backend');
  return d.memoryOffset;
}

/**
 * out = act(op(a) x op(b) + bias) on the addon, or null when the case is one the addon does not
 * cover (then the caller runs the wasm kernel, which also produces tfjs's own error messages).
 */
function nativeMatMul(
  addon: NativeAddon,
  backend: WasmBackendLike,
  a: tf.TensorInfo,
  b: tf.TensorInfo,
  transA: boolean,
  transB: boolean,
  bias: tf.TensorInfo | null,
  act: number,
  alpha: number,
): tf.TensorInfo | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32' || (bias && bias.dtype !== 'float32')) return null;
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  const m = transA ? a.shape[ra - 1]! : a.shape[ra - 2]!;
  const ka = transA ? a.shape[ra - 2]! : a.shape[ra - 1]!;
  const kb = transB ? b.shape[rb - 1]! : b.shape[rb - 2]!;
  const n = transB ? b.shape[rb - 2]! : b.shape[rb - 1]!;
  if (ka !== kb) return null;
  const outerA = a.shape.slice(0, -2);
  const outerB = b.shape.slice(0, -2);
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  // Equal batches, or one side a single matrix shared by all: anything else needs real broadcasting.
  let outer: number[];
  if (tf.util.arraysEqual(outerA, outerB)) outer = outerA;
  else if (batchA === 1 && outerA.length <= outerB.length) outer = outerB;
  else if (batchB === 1 && outerB.length <= outerA.length) outer = outerA;
  else return null;
  if (bias && tf.util.sizeFromShape(bias.shape) !== n) return null;
  const batch = Math.max(batchA, batchB);
  const out = backend.makeOutput([...outer, m, n], 'float32');
  // After makeOutput, which may have grown the heap.
  addon.gemm(
    heapOf(backend),
    batch,
    m,
    n,
    ka,
    transA ? 1 : 0,
    transB ? 1 : 0,
    offsetOf(backend, a),
    batchA === 1 ? 0 : m * ka,
    offsetOf(backend, b),
    batchB === 1 ? 0 : ka * n,
    offsetOf(backend, out),
    bias ? offsetOf(backend, bias) : -1,
    act,
    alpha,
  );
  return out;
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: WasmBackendLike;
  attrs?: tf.NamedAttrMap;
}

/** Whether `x` broadcasts to `out` by plain repetition: a scalar, or the trailing dims of `out`. */
function tiles(x: readonly number[], out: readonly number[]): boolean {
  const size = tf.util.sizeFromShape(x as number[]);
  if (size === 1 || size === tf.util.sizeFromShape(out as number[])) return true;
  let i = 0;
  while (i < x.length && x[i] === 1) i++;
  const rest = x.slice(i);
  if (rest.length > out.length) return false;
  const tail = out.slice(out.length - rest.length);
  return rest.every((d, j) => d === tail[j]);
}

const BIN: Record<string, number> = {
  [tf.Add]: 0,
  [tf.Sub]: 1,
  [tf.Multiply]: 2,
  [tf.RealDiv]: 3,
  [tf.Maximum]: 4,
  [tf.Minimum]: 5,
  [tf.Greater]: 6,
  [tf.Less]: 7,
  [tf.GreaterEqual]: 8,
  [tf.LessEqual]: 9,
};
const BOOL_OUT = new Set<string>([tf.Greater, tf.Less, tf.GreaterEqual, tf.LessEqual]);

const UN: Record<string, number> = {
  [tf.LeakyRelu]: 0,
  [tf.Relu]: 1,
  [tf.Tanh]: 2,
  [tf.Sigmoid]: 3,
  [tf.Square]: 4,
  [tf.Neg]: 5,
  [tf.Exp]: 6,
  [tf.Relu6]: 7,
  [tf.Elu]: 8,
};

/** Kernels without a heap copy: the output shares the input's buffer (as wasm's Reshape does). */
function alias(backend: WasmBackendLike, x: tf.TensorInfo): tf.TensorInfo {
  backend.incRef(x.dataId);
  return { dataId: x.dataId, shape: x.shape, dtype: x.dtype };
}

function nativeKernels(addon: NativeAddon, wasmKernel: (name: string) => tf.KernelFunc): Record<string, tf.KernelFunc> {
  const out: Record<string, tf.KernelFunc> = {};
  const fallbackBmm = wasmKernel(tf.BatchMatMul);
  out[tf.BatchMatMul] = ((args: KernelArgs) => {
    const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
    const { transposeA, transposeB } = args.attrs as unknown as tf.BatchMatMulAttrs;
    return nativeMatMul(addon, args.backend, a, b, !!transposeA, !!transposeB, null, 0, 0) ?? fallbackBmm(args as never);
  }) as tf.KernelFunc;

  const fallbackFused = wasmKernel(tf._FusedMatMul);
  out[tf._FusedMatMul] = ((args: KernelArgs) => {
    const { a, b, bias, preluActivationWeights } = args.inputs as {
      a: tf.TensorInfo;
      b: tf.TensorInfo;
      bias?: tf.TensorInfo;
      preluActivationWeights?: tf.TensorInfo;
    };
    const { transposeA, transposeB, activation, leakyreluAlpha } = args.attrs as unknown as tf._FusedMatMulAttrs;
    const act = ACT[activation ?? 'linear'];
    if (act === undefined || preluActivationWeights) return fallbackFused(args as never);
    return (
      nativeMatMul(addon, args.backend, a, b, !!transposeA, !!transposeB, bias ?? null, act, leakyreluAlpha ?? 0.2) ??
      fallbackFused(args as never)
    );
  }) as tf.KernelFunc;

  // tfjs clones tensors freely (tf.keep, gradient bookkeeping); wasm's Identity copies each one.
  out[tf.Identity] = ((args: KernelArgs) => alias(args.backend, args.inputs.x as tf.TensorInfo)) as tf.KernelFunc;
  const fallbackCast = wasmKernel(tf.Cast);
  out[tf.Cast] = ((args: KernelArgs) => {
    const x = args.inputs.x as tf.TensorInfo;
    const { dtype } = args.attrs as unknown as tf.CastAttrs;
    return x.dtype === dtype ? alias(args.backend, x) : fallbackCast(args as never);
  }) as tf.KernelFunc;

  for (const [name, op] of Object.entries(BIN)) {
    const fallback = wasmKernel(name);
    out[name] = ((args: KernelArgs) => {
      const { a, b } = args.inputs as { a: tf.TensorInfo; b: tf.TensorInfo };
      if (a.dtype !== 'float32' || b.dtype !== 'float32') return fallback(args as never);
      const shape = tf.backend_util.assertAndGetBroadcastShape(a.shape, b.shape);
      if (!tiles(a.shape, shape) || !tiles(b.shape, shape)) return fallback(args as never);
      const { backend } = args;
      const res = backend.makeOutput(shape, BOOL_OUT.has(name) ? 'bool' : 'float32');
      addon.binary(
        heapOf(backend),
        op,
        offsetOf(backend, a),
        tf.util.sizeFromShape(a.shape),
        offsetOf(backend, b),
        tf.util.sizeFromShape(b.shape),
        offsetOf(backend, res),
        tf.util.sizeFromShape(shape),
      );
      return res;
    }) as tf.KernelFunc;
  }

  for (const [name, op] of Object.entries(UN)) {
    const fallback = wasmKernel(name);
    out[name] = ((args: KernelArgs) => {
      const x = args.inputs.x as tf.TensorInfo;
      if (x.dtype !== 'float32') return fallback(args as never);
      const { backend } = args;
      const res = backend.makeOutput(x.shape, 'float32');
      const alpha = name === tf.LeakyRelu ? (args.attrs as unknown as tf.LeakyReluAttrs).alpha : 0;
      addon.unary(heapOf(backend), op, offsetOf(backend, x), offsetOf(backend, res), tf.util.sizeFromShape(x.shape), alpha);
      return res;
    }) as tf.KernelFunc;
  }

  const fallbackSelect = wasmKernel(tf.Select);
  out[tf.Select] = ((args: KernelArgs) => {
    const { condition, t, e } = args.inputs as { condition: tf.TensorInfo; t: tf.TensorInfo; e: tf.TensorInfo };
    const n = tf.util.sizeFromShape(t.shape);
    if (
      condition.dtype !== 'bool' ||
      t.dtype !== 'float32' ||
      e.dtype !== 'float32' ||
      tf.util.sizeFromShape(condition.shape) !== n ||
      !tf.util.arraysEqual(t.shape, e.shape)
    ) {
      return fallbackSelect(args as never);
    }
    const { backend } = args;
    const res = backend.makeOutput(t.shape, 'float32');
    addon.select(heapOf(backend), offsetOf(backend, condition), offsetOf(backend, t), offsetOf(backend, e), offsetOf(backend, res), n);
    return res;
  }) as tf.KernelFunc;

  for (const [name, op] of [
    [tf.Sum, 0],
    [tf.Mean, 1],
  ] as const) {
    const fallback = wasmKernel(name);
    out[name] = ((args: KernelArgs) => {
      const x = args.inputs.x as tf.TensorInfo;
      const { axis, keepDims } = args.attrs as unknown as tf.SumAttrs;
      if (x.dtype !== 'float32') return fallback(args as never);
      const axes = tf.util.parseAxisParam(axis, x.shape).sort((p, q) => p - q);
      const rank = x.shape.length;
      // Only a leading or a trailing block of axes maps onto one outer x inner pass.
      const leading = axes.every((ax, i) => ax === i);
      const trailing = axes.every((ax, i) => ax === rank - axes.length + i);
      if (axes.length === 0 || (!leading && !trailing)) return fallback(args as never);
      const [outShape, reduceShape] = tf.backend_util.computeOutAndReduceShapes(x.shape, axes);
      const reduced = tf.util.sizeFromShape(reduceShape);
      const kept = tf.util.sizeFromShape(outShape);
      const { backend } = args;
      const res = backend.makeOutput(keepDims ? tf.backend_util.expandShapeToKeepDim(outShape, axes) : outShape, 'float32');
      addon.reduce(
        heapOf(backend),
        op,
        offsetOf(backend, x),
        leading ? reduced : kept,
        leading ? kept : reduced,
        leading ? 1 : 0,
        offsetOf(backend, res),
      );
      return res;
    }) as tf.KernelFunc;
  }
  return out;
}

let nativeRegistered = false;

/** Register backend 'native': a fresh wasm module, wasm's kernels, the addon's where they exist. */
function registerNative(addon: NativeAddon): void {
  if (nativeRegistered) return;
  const wasmFactory = tf.findBackendFactory('wasm');
  if (!wasmFactory) throw new BackendError('the wasm backend is not registered (is @tensorflow/tfjs-backend-wasm installed?)');
  const wasmConfigs = tf.getKernelsForBackend('wasm');
  const byName = new Map(wasmConfigs.map((k) => [k.kernelName, k]));
  const wasmKernel = (name: string): tf.KernelFunc => {
    const k = byName.get(name);
    if (!k) throw new BackendError(`the wasm backend has no ${name} kernel`);
    return k.kernelFunc;
  };
  const replaced = nativeKernels(addon, wasmKernel);
  // A second BackendWasm instance (its own heap) so 'wasm' stays usable beside 'native'. The wasm
  // kernels bind module-level functions in setupFunc, which the engine re-runs on every
  // setBackend, so sharing those configs between the two instances is safe.
  tf.registerBackend('native', wasmFactory, 0);
  for (const k of wasmConfigs) {
    tf.registerKernel({ ...k, backendName: 'native', kernelFunc: replaced[k.kernelName] ?? k.kernelFunc });
  }
  nativeRegistered = true;
}

// ---------------------------------------------------------------------------------------------
// Choosing

let last: { requested: BackendName; info: BackendInfo } | null = null;

function fail(msg: string): never {
  throw new BackendError(msg);
}

async function trySet(name: string): Promise<boolean> {
  // The engine logs a warning itself when a factory throws; a false return is enough here.
  return tf.setBackend(name);
}

async function initTensorflow(): Promise<BackendInfo> {
  const spec = '@tensorflow/tfjs-node';
  try {
    await import(spec);
  } catch (e) {
    const code = (e as { code?: string }).code;
    throw new BackendError(
      code === 'ERR_MODULE_NOT_FOUND' || code === 'MODULE_NOT_FOUND'
        ? 'tfjs-node not installed'
        : `tfjs-node failed to load: ${(e as Error).message.split('\n')[0]}`,
    );
  }
  if (!(await trySet('tensorflow'))) fail('tfjs-node is installed but its backend did not initialise');
  return { name: 'tensorflow', detail: 'libtensorflow via tfjs-node' };
}

async function initNative(threads: number | undefined): Promise<BackendInfo> {
  const s = loadAddon();
  if (!('addon' in s)) fail(s.error);
  // OpenBLAS would otherwise start one spinning thread per core in every process, and this
  // program usually runs several worker processes per host: one thread unless told otherwise.
  const fromEnv = process.env.OPENBLAS_NUM_THREADS ?? process.env.OMP_NUM_THREADS;
  if (threads !== undefined) setNativeThreads(threads);
  else if (!fromEnv && !nativeThreadsSet) setNativeThreads(1);
  registerNative(s.addon);
  if (!(await trySet('native'))) fail('the native backend did not initialise (wasm module failed to load)');
  return { name: 'native', detail: nativeDetail(s.addon) };
}

async function initWasm(): Promise<BackendInfo> {
  if (!(await trySet('wasm'))) fail('the wasm backend did not initialise (could not load its .wasm file)');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  return { name: 'wasm', detail: `XNNPACK${simd ? ' SIMD' : ''}, 1 thread` };
}

async function initCpu(): Promise<BackendInfo> {
  if (!(await trySet('cpu'))) fail('the cpu backend did not initialise');
  return { name: 'cpu', detail: 'plain JavaScript' };
}

async function initOne(name: Exclude<BackendName, 'auto'>, threads: number | undefined): Promise<BackendInfo> {
  switch (name) {
    case 'tensorflow':
      return initTensorflow();
    case 'native':
      return initNative(threads);
    case 'wasm':
      return initWasm();
    case 'cpu':
      return initCpu();
  }
}

const WHAT: Record<Exclude<BackendName, 'auto'>, string> = {
  tensorflow: 'tensorflow (libtensorflow)',
  native: 'native (OpenBLAS via wasm memory)',
  wasm: 'wasm',
  cpu: 'cpu (plain JavaScript)',
};

/**
 * Make `requested` the active tfjs backend. 'auto' takes the first that works of tensorflow,
 * native, wasm, cpu and, when that is not tensorflow, logs one line naming it and why the better
 * ones were passed over. An explicit name that cannot be used throws a BackendError (E_BACKEND).
 */
export async function initBackend(requested: BackendName, opts: InitOptions = {}): Promise<BackendInfo> {
  if (!BACKEND_NAMES.includes(requested)) fail(`unknown backend '${String(requested)}' (expected one of ${BACKEND_NAMES.join(', ')})`);
  if (opts.threads !== undefined && (!Number.isInteger(opts.threads) || opts.threads < 1)) {
    fail(`threads must be a positive integer, got ${opts.threads}`);
  }
  if (last && last.requested === requested && tf.getBackend() === last.info.name) {
    if (last.info.name === 'native' && opts.threads !== undefined) {
      setNativeThreads(opts.threads);
      const s = loadAddon();
      if ('addon' in s) last.info = { name: 'native', detail: nativeDetail(s.addon) };
    }
    return last.info;
  }
  const log = opts.log ?? ((line: string) => process.stderr.write(`${line}\n`));
  let info: BackendInfo;
  if (requested === 'auto') {
    const reasons: string[] = [];
    let found: BackendInfo | null = null;
    for (const name of ['tensorflow', 'native', 'wasm', 'cpu'] as const) {
      try {
        found = await initOne(name, opts.threads);
        break;
      } catch (e) {
        reasons.push(e instanceof BackendError ? e.message : `${name}: ${(e as Error).message}`);
      }
    }
    if (!found) fail(`no TensorFlow.js backend could be initialised: ${reasons.join('; ')}`);
    if (found.name !== 'tensorflow') log(`backend: ${WHAT[found.name]}; ${reasons.join('; ')}`);
    info = found;
  } else {
    info = await initOne(requested, opts.threads);
  }
  last = { requested, info };
  return info;
}
