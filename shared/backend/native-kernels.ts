/**
 * The `native` TensorFlow.js backend: a second instance of the wasm backend whose heaviest kernels
 * (matrix products and the elementwise work around them) run in the addon, in place on the wasm
 * heap, so tensors are never copied between JavaScript and C. Kernels the addon does not cover,
 * and cases it declines (odd broadcasts, other dtypes), run wasm's own implementation.
 */
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import { GanError } from '../wire/errors.js';
import type { NativeAddon } from './addon.js';
import { type WasmBackendLike, matMulDims, offsetOf } from './wasm-kernels.js';

const ACT: Record<string, number> = { linear: 0, relu: 1, relu6: 2, leakyrelu: 3, sigmoid: 4, elu: 5 };

// Re-read on every call: growing wasm memory detaches the previous ArrayBuffer.
const heapOf = (backend: WasmBackendLike): ArrayBuffer => backend.wasm.HEAPU8.buffer as ArrayBuffer;

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
  const dims = matMulDims(a, b, transA, transB);
  if (!dims) return null;
  const { m, ka, kb, n, outerA, outerB } = dims;
  if (ka !== kb) return null;
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
export function registerNativeBackend(addon: NativeAddon): void {
  if (nativeRegistered) return;
  const wasmFactory = tf.findBackendFactory('wasm');
  if (!wasmFactory) throw new GanError('E_BACKEND', 'the wasm backend is not registered (is @tensorflow/tfjs-backend-wasm installed?)');
  const wasmConfigs = tf.getKernelsForBackend('wasm');
  const byName = new Map(wasmConfigs.map((k) => [k.kernelName, k]));
  const wasmKernel = (name: string): tf.KernelFunc => {
    const k = byName.get(name);
    if (!k) throw new GanError('E_BACKEND', `the wasm backend has no ${name} kernel`);
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
