/**
 * A fast path for matrix products on tfjs-backend-wasm (4.22).
 *
 * The wasm backend hands a product to XNNPACK only when neither operand is transposed and both
 * are single matrices (batch 1); everything else runs a blocked scalar loop that is 10-40x slower.
 * A dense layer's gradient is exactly the transposed cases (dY·Wᵀ and Xᵀ·dY). The wrappers
 * registered here bring every product into the XNNPACK shape before calling wasm's own kernel:
 *
 *  - a transposed operand is first copied into its transpose with the backend's Transpose kernel
 *    (a memory-bound copy, far cheaper than the scalar product) and the kernel is called with that
 *    transpose flag false;
 *  - except that a plain product of two single matrices is computed the other way round,
 *    C^T = op(B)^T · op(A)^T followed by one Transpose of C, when that copies fewer floats: for
 *    dY·W^T (n rows << layer widths) it copies dY and C instead of the whole weight matrix, which
 *    XNNPACK would then repack a second time (about 3x faster on the seed model's big layers);
 *  - a batch of matrices against a single matrix is one tall product ([batch*m, k] x [k, n]);
 *  - a batch against a batch is one XNNPACK product per matrix, copied into the output.
 *
 * Every temporary (made by the Transpose kernel, by wasm's kernel or by backend.makeOutput) is
 * released with backend.disposeData before the wrapper returns: the engine never sees it and no
 * data id outlives the call.
 *
 * Two errors of wasm's own _FusedMatMul are corrected on the way, because the rerouting would
 * otherwise change which of them a caller hits: its scalar loop adds bias[n-1] instead of
 * bias[j] to every row after the first (so any transposed or batched product with a bias was
 * wrong), and its XNNPACK path reads n bias values from a one-element bias. A one-element bias is
 * expanded to n values here, and transposed or batched products no longer reach the scalar loop.
 *
 * Cases the wrappers do not cover (other dtypes, rank < 2, broadcasting that is not "equal
 * batches or one side single", mismatched inner sizes, a bias of rank other than 1, empty
 * operands) go to the original kernel unchanged, so they behave and fail exactly as before.
 *
 * No Node imports: this module also runs in the browser.
 */
import * as tf from '@tensorflow/tfjs-core';

/** The parts of tfjs-backend-wasm's BackendWasm used here and by the native kernels (native-kernels.ts). */
export interface WasmBackendLike extends tf.KernelBackend {
  wasm: { HEAPU8: Uint8Array };
  incRef(dataId: tf.DataId): void;
  dataIdMap: { get(id: tf.DataId): { memoryOffset: number; shape: number[]; dtype: tf.DataType } | undefined };
  makeOutput(shape: number[], dtype: tf.DataType, memoryOffset?: number, values?: tf.backend_util.BackendValues): tf.TensorInfo;
}

interface KernelArgs {
  inputs: tf.NamedTensorInfoMap;
  backend: WasmBackendLike;
  attrs?: tf.NamedAttrMap;
}

type AnyKernel = (args: KernelArgs) => tf.TensorInfo | tf.TensorInfo[];

/** Marks a wrapper and remembers the config it replaced (Symbol.for: survives a second copy of this module). */
const WRAPPED = Symbol.for('gan-ddp.wasmFastMatMul.original');
type Marked = tf.KernelFunc & { [WRAPPED]?: tf.KernelConfig };

const KERNELS = [tf.BatchMatMul, tf._FusedMatMul] as const;

// ---------------------------------------------------------------------------------------------
// Heap helpers. The heap's ArrayBuffer is re-read on every use: growing wasm memory (any
// allocation) detaches the previous one.

/** Where `t`'s data starts on the wasm heap, in bytes. */
export function offsetOf(backend: WasmBackendLike, t: tf.TensorInfo): number {
  const d = backend.dataIdMap.get(t.dataId);
  if (!d) throw new Error('tensor is not on this backend (its data is not on the wasm heap)');
  return d.memoryOffset;
}

/** Copy `count` floats from src[srcAt..] to dst[dstAt..] (element offsets). */
function copyFloats(backend: WasmBackendLike, src: tf.TensorInfo, srcAt: number, dst: tf.TensorInfo, dstAt: number, count: number): void {
  const from = offsetOf(backend, src) + 4 * srcAt;
  const to = offsetOf(backend, dst) + 4 * dstAt;
  backend.wasm.HEAPU8.copyWithin(to, from, from + 4 * count);
}

/** The same data under another shape of the same size: no copy, no new data id. */
const view = (t: tf.TensorInfo, shape: number[]): tf.TensorInfo => ({ dataId: t.dataId, shape, dtype: t.dtype });

// ---------------------------------------------------------------------------------------------
// Planning

interface Plan {
  m: number;
  k: number;
  n: number;
  batchA: number;
  batchB: number;
  batch: number;
  outShape: number[];
}

/**
 * Sizes of op(a) x op(b), or null when the wrappers leave the product to the original kernel
 * (which then also produces tfjs's own error messages).
 */
/**
 * op(a) is m x ka and op(b) is kb x n (the last two dimensions, transposed as asked), under batch
 * dimensions outerA and outerB; null when either has rank below 2.
 */
export function matMulDims(a: tf.TensorInfo, b: tf.TensorInfo, transA: boolean, transB: boolean):
  { m: number; ka: number; kb: number; n: number; outerA: number[]; outerB: number[] } | null {
  const ra = a.shape.length;
  const rb = b.shape.length;
  if (ra < 2 || rb < 2) return null;
  return {
    m: transA ? a.shape[ra - 1]! : a.shape[ra - 2]!,
    ka: transA ? a.shape[ra - 2]! : a.shape[ra - 1]!,
    kb: transB ? b.shape[rb - 1]! : b.shape[rb - 2]!,
    n: transB ? b.shape[rb - 2]! : b.shape[rb - 1]!,
    outerA: a.shape.slice(0, -2),
    outerB: b.shape.slice(0, -2),
  };
}

function plan(a: tf.TensorInfo, b: tf.TensorInfo, transposeA: boolean, transposeB: boolean): Plan | null {
  if (a.dtype !== 'float32' || b.dtype !== 'float32') return null;
  const dims = matMulDims(a, b, transposeA, transposeB);
  if (!dims) return null;
  const { m, ka, kb, n, outerA, outerB } = dims;
  if (ka !== kb || m === 0 || n === 0 || ka === 0) return null;
  let outer: number[];
  try {
    outer = tf.backend_util.assertAndGetBroadcastShape(outerA, outerB);
  } catch {
    return null;
  }
  const batchA = tf.util.sizeFromShape(outerA);
  const batchB = tf.util.sizeFromShape(outerB);
  const batch = tf.util.sizeFromShape(outer);
  // Equal batches laid out alike, or one side a single matrix shared by every batch. (Equal sizes
  // that also equal the broadcast size cannot hide a broadcast dimension.)
  if (!(batchA === 1 || batchB === 1 || (batchA === batch && batchB === batch))) return null;
  if (batch === 0) return null;
  return { m, k: ka, n, batchA, batchB, batch, outShape: [...outer, m, n] };
}

// ---------------------------------------------------------------------------------------------
// The wrapper

function kernelFor(name: string, backendName: string): tf.KernelConfig | undefined {
  return tf.getKernel(name, backendName) as tf.KernelConfig | undefined;
}

/**
 * op(a) x op(b) (+ bias, activation) through `original` with both transpose flags false and
 * batch-1 operands wherever possible. `fused` selects _FusedMatMul's extra inputs.
 */
function fastMatMul(args: KernelArgs, original: AnyKernel, backendName: string, fused: boolean): tf.TensorInfo | tf.TensorInfo[] {
  const { inputs, backend } = args;
  const attrs = (args.attrs ?? {}) as tf.NamedAttrMap;
  const a = inputs.a as tf.TensorInfo;
  const b = inputs.b as tf.TensorInfo;
  const transposeA = !!attrs.transposeA;
  const transposeB = !!attrs.transposeB;
  const p = plan(a, b, transposeA, transposeB);
  if (!p) return original(args);
  const { m, k, n, batchA, batchB, batch } = p;

  let bias = fused ? (inputs.bias as tf.TensorInfo | undefined) : undefined;
  const prelu = fused ? (inputs.preluActivationWeights as tf.TensorInfo | undefined) : undefined;
  let expandBias = false;
  if (bias) {
    const d = backend.dataIdMap.get(bias.dataId);
    // wasm's kernel checks the stored rank; let it throw its own error.
    if (!d || d.shape.length !== 1 || bias.dtype !== 'float32') return original(args);
    const size = tf.util.sizeFromShape(d.shape);
    if (size !== n && size !== 1) return original(args);
    expandBias = size === 1 && n > 1;
  }
  if (prelu && prelu.dtype !== 'float32') return original(args);
  const perMatrix = batchB > 1;
  // Per-matrix products apply PReLU to each m x n block: only right if its weights tile a block.
  if (perMatrix && prelu && (m * n) % tf.util.sizeFromShape(prelu.shape) !== 0) return original(args);
  // Already XNNPACK's case.
  if (!transposeA && !transposeB && batchA === 1 && batchB === 1 && !expandBias) return original(args);

  const transpose = kernelFor(tf.Transpose, backendName)?.kernelFunc as AnyKernel | undefined;
  if (!transpose) return original(args);
  const temps: tf.TensorInfo[] = [];
  const release = (t: tf.TensorInfo) => backend.disposeData(t.dataId);
  const swap = (x: tf.TensorInfo): tf.TensorInfo => {
    const t = transpose({ inputs: { x }, backend, attrs: { perm: [0, 2, 1] } }) as tf.TensorInfo;
    temps.push(t);
    return t;
  };
  // The other way round, C^T = op(B)^T · op(A)^T, then one transpose of C: a stored B^T is then
  // already the left operand. Worth it when that copies fewer floats, counting the XNNPACK packing
  // of the right operand; the product dY·W^T (m rows << the layer widths) is the case. No bias or
  // activation could be fused into C^T, so only for plain products of two single matrices.
  if (!fused && batchA === 1 && batchB === 1) {
    const direct = (transposeA ? m * k : 0) + (transposeB ? k * n : 0) + k * n;
    const flipped = (transposeA ? 0 : m * k) + (transposeB ? 0 : k * n) + m * n + k * m;
    if (flipped < direct) {
      try {
        const left = transposeB ? view(b, [1, n, k]) : swap(view(b, [1, k, n]));
        const right = transposeA ? view(a, [1, k, m]) : swap(view(a, [1, m, k]));
        const ct = original({ inputs: { a: left, b: right }, backend, attrs: { ...attrs, transposeA: false, transposeB: false } }) as tf.TensorInfo;
        temps.push(ct);
        const c = transpose({ inputs: { x: view(ct, [1, n, m]) }, backend, attrs: { perm: [0, 2, 1] } }) as tf.TensorInfo;
        return { dataId: c.dataId, shape: p.outShape, dtype: c.dtype };
      } finally {
        for (const t of temps) release(t);
      }
    }
  }
  try {
    // Rank-3 views of the operands as stored, then their transposes where flagged.
    const a3 = transposeA ? swap(view(a, [batchA, k, m])) : view(a, [batchA, m, k]);
    const b3 = transposeB ? swap(view(b, [batchB, n, k])) : view(b, [batchB, k, n]);
    if (bias && expandBias) {
      const v = new Float32Array(backend.wasm.HEAPU8.buffer, offsetOf(backend, bias), 1)[0]!;
      bias = backend.makeOutput([n], 'float32', undefined, new Float32Array(n).fill(v));
      temps.push(bias);
    }
    const callAttrs = { ...attrs, transposeA: false, transposeB: false };
    const call = (x: tf.TensorInfo, y: tf.TensorInfo): tf.TensorInfo => {
      const callInputs: tf.NamedTensorInfoMap = { a: x, b: y };
      if (bias) callInputs.bias = bias;
      if (prelu) callInputs.preluActivationWeights = prelu;
      return original({ inputs: callInputs, backend, attrs: callAttrs }) as tf.TensorInfo;
    };

    if (!perMatrix) {
      // One matrix on the right: every row of every left matrix meets the same weights.
      const out = call(view(a3, [1, batchA * m, k]), b3);
      return { dataId: out.dataId, shape: p.outShape, dtype: out.dtype };
    }

    // A batch on the right: one product per matrix, each copied into its place.
    const out = backend.makeOutput(p.outShape, 'float32');
    try {
      for (let i = 0; i < batch; i++) {
        const step: tf.TensorInfo[] = [];
        try {
          let ai = a3;
          if (batchA > 1) {
            ai = backend.makeOutput([1, m, k], 'float32');
            step.push(ai);
            copyFloats(backend, a3, i * m * k, ai, 0, m * k);
          }
          const bi = backend.makeOutput([1, k, n], 'float32');
          step.push(bi);
          copyFloats(backend, b3, i * k * n, bi, 0, k * n);
          const oi = call(batchA > 1 ? ai : view(a3, [1, m, k]), bi);
          step.push(oi);
          copyFloats(backend, oi, 0, out, i * m * n, m * n);
        } finally {
          for (const t of step) release(t);
        }
      }
    } catch (e) {
      release(out);
      throw e;
    }
    return out;
  } finally {
    for (const t of temps) release(t);
  }
}

// ---------------------------------------------------------------------------------------------
// Registration

/**
 * Re-register `backendName`'s BatchMatMul and _FusedMatMul kernels with the fast path. The
 * backend must share tfjs-backend-wasm's kernels (its instances are BackendWasm). Calling it again
 * for the same backend does nothing. The backend need not be initialised yet.
 */
export function registerWasmFastMatMul(backendName: string = 'wasm'): void {
  if (!kernelFor(tf.Transpose, backendName)) {
    throw new Error(`registerWasmFastMatMul: backend '${backendName}' has no Transpose kernel (is it a wasm backend?)`);
  }
  for (const name of KERNELS) {
    const config = kernelFor(name, backendName);
    if (!config) throw new Error(`registerWasmFastMatMul: backend '${backendName}' has no ${name} kernel`);
    if ((config.kernelFunc as Marked)[WRAPPED]) continue;
    const original = config.kernelFunc as unknown as AnyKernel;
    const fused = name === tf._FusedMatMul;
    const wrapper = ((args: KernelArgs) => fastMatMul(args, original, backendName, fused)) as unknown as Marked;
    wrapper[WRAPPED] = config;
    tf.unregisterKernel(name, backendName);
    tf.registerKernel({ ...config, kernelFunc: wrapper });
  }
}

/** Put back the kernels registerWasmFastMatMul replaced (for measurements); a no-op if none. */
export function unregisterWasmFastMatMul(backendName: string = 'wasm'): void {
  for (const name of KERNELS) {
    const config = kernelFor(name, backendName);
    const original = config && (config.kernelFunc as Marked)[WRAPPED];
    if (!original) continue;
    tf.unregisterKernel(name, backendName);
    tf.registerKernel(original);
  }
}

/** Whether `backendName`'s matrix-product kernels currently carry the fast path. */
export function hasWasmFastMatMul(backendName: string = 'wasm'): boolean {
  return KERNELS.every((name) => !!(kernelFor(name, backendName)?.kernelFunc as Marked | undefined)?.[WRAPPED]);
}
