/**
 * The judge's network: a small MNIST CNN. Its softmax drives the classifier score, coverage and
 * conditional accuracy; its penultimate layer is the feature space of the Fréchet distance.
 *
 *   28x28x1 -conv5x5(C1)+ReLU-> maxpool2 -conv5x5(C2)+ReLU-> maxpool2 -> dense(H)+ReLU (features)
 *   -> dropout -> dense(10) softmax
 *
 * Written on tfjs-core ops rather than the layers API because the wasm backend has no kernel for
 * the filter gradient of Conv2D, and its matMul with transposed operands is an order of magnitude
 * slower than an explicit transpose followed by a plain matMul. The convolution and dense layers
 * therefore carry their own gradients, expressed in forward convolutions and plain products, which
 * every backend runs fast.
 */
import * as tf from '@tensorflow/tfjs-core';
// Registers the gradient functions of the ops used below.
import '@tensorflow/tfjs';
import type { Dataset } from '../shared/data/mnist.js';
import { byteToUnit } from '../shared/data/pixels.js';
import { Rng } from '../shared/compute/rng.js';
import { DIGIT_PIXELS, DIGIT_SIDE } from '../shared/data/digits.js';

export interface ClassifierArch {
  conv1: number;
  conv2: number;
  kernel: number;
  hidden: number;
}

export const defaultArch: ClassifierArch = { conv1: 16, conv2: 32, kernel: 5, hidden: 128 };

export interface Prediction {
  /** n x 10 softmax outputs. */
  probs: Float32Array;
  /** n x featureDim penultimate activations (after ReLU, before dropout). */
  features: Float32Array;
  featureDim: number;
}

export interface Classifier {
  /** Images n x 784 in [-1, 1] (the generator's scale). Batched; leaves no tensors behind. */
  predict(images: Float32Array): Prediction;
  /** Accuracy on the test split of the data it was built for. */
  readonly testAccuracy: number;
  readonly featureDim: number;
  /** Whether this instance was trained now (false: loaded from the cache). */
  readonly trained: boolean;
  /** Seconds the training took (when it was trained, possibly by an earlier process). */
  readonly trainSeconds: number;
  /** The cache file it was loaded from or saved to (null when caching is off). */
  readonly cacheFile: string | null;
  dispose(): void;
}

/** Training digits are shifted by up to this many pixels each way: 9k digits alone overfit. */
export const MAX_SHIFT = 2;
const PREDICT_BATCH = 250;

export interface ParamSpec {
  name: string;
  shape: number[];
  fanIn: number;
  bias: boolean;
}

export function paramSpecs(a: ClassifierArch): ParamSpec[] {
  const k = a.kernel;
  const flat = 7 * 7 * a.conv2;
  return [
    { name: 'conv1.W', shape: [k, k, 1, a.conv1], fanIn: k * k, bias: false },
    { name: 'conv1.b', shape: [a.conv1], fanIn: k * k, bias: true },
    { name: 'conv2.W', shape: [k, k, a.conv1, a.conv2], fanIn: k * k * a.conv1, bias: false },
    { name: 'conv2.b', shape: [a.conv2], fanIn: k * k * a.conv1, bias: true },
    { name: 'fc.W', shape: [flat, a.hidden], fanIn: flat, bias: false },
    { name: 'fc.b', shape: [a.hidden], fanIn: flat, bias: true },
    { name: 'out.W', shape: [a.hidden, 10], fanIn: a.hidden, bias: false },
    { name: 'out.b', shape: [10], fanIn: a.hidden, bias: true },
  ];
}

export const sizeOf = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

/** He-uniform weights and zero biases, from the seeded generator so a rebuild gives the same net. */
export function initParams(specs: ParamSpec[], seed: number): Float32Array[] {
  return specs.map((s, i) => {
    const out = new Float32Array(sizeOf(s.shape));
    if (s.bias) return out;
    const rng = new Rng(seed, 0x0c1a55, i);
    const bound = Math.sqrt(6 / s.fanIn);
    for (let j = 0; j < out.length; j++) out[j] = (rng.uniform() * 2 - 1) * bound;
    return out;
  });
}

/** Fused conv + bias + ReLU ('same' padding, stride 1, odd kernel) with a hand-written gradient. */
function convRelu(needInputGrad: boolean) {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor4D;
    const w = args[1] as tf.Tensor4D;
    const b = args[2] as tf.Tensor1D;
    const save = args[3] as tf.GradSaveFunc;
    const y = tf.fused.conv2d({ x, filter: w, strides: 1, pad: 'same', bias: b, activation: 'relu' });
    save([x, w, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sx, sw, sy] = saved as [tf.Tensor4D, tf.Tensor4D, tf.Tensor4D];
        const [, , , ci] = sx.shape;
        const [k] = sw.shape;
        const p = (k - 1) / 2;
        const g = tf.mul(dy as tf.Tensor4D, tf.step(sy)) as tf.Tensor4D;
        const db = tf.sum(g, [0, 1, 2]);
        // dW[i,j,ci,co] = sum over n,h,w of xpad[n,h+i,w+j,ci] g[n,h,w,co]: a valid convolution with
        // the batch as the channel axis.
        const xT = tf.transpose(tf.pad(sx, [[0, 0], [p, p], [p, p], [0, 0]]), [3, 1, 2, 0]) as tf.Tensor4D;
        const gT = tf.transpose(g, [1, 2, 0, 3]) as tf.Tensor4D;
        const dw = tf.transpose(tf.conv2d(xT, gT, 1, 'valid'), [1, 2, 0, 3]);
        // dx: the same-padded convolution of g with the filter rotated 180 degrees, in/out swapped.
        const dx = needInputGrad
          ? tf.conv2d(g, tf.transpose(tf.reverse(sw, [0, 1]), [0, 1, 3, 2]) as tf.Tensor4D, 1, 'same')
          : tf.zeros([sx.shape[0], sx.shape[1], sx.shape[2], ci]);
        return [dx, dw, db];
      },
    };
  });
}

/**
 * 2x2 max pooling. The gradient routes dy to the maxima through an upsampled equality mask, split
 * evenly among ties: flat background gives windows of equal values, and sending the full gradient to
 * each of them would multiply it by up to four there.
 */
const maxPool2 = tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
  const x = args[0] as tf.Tensor4D;
  const save = args[1] as tf.GradSaveFunc;
  const y = tf.maxPool(x, 2, 2, 'valid');
  save([x, y]);
  return {
    value: y,
    gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
      const [sx, sy] = saved as [tf.Tensor4D, tf.Tensor4D];
      const size: [number, number] = [sx.shape[1], sx.shape[2]];
      const mask = tf.cast(tf.equal(sx, tf.image.resizeNearestNeighbor(sy, size)), 'float32') as tf.Tensor4D;
      const ties = tf.mul(tf.avgPool(mask, 2, 2, 'valid'), 4) as tf.Tensor4D;
      const share = tf.div(dy as tf.Tensor4D, ties) as tf.Tensor4D;
      return [tf.mul(tf.image.resizeNearestNeighbor(share, size), mask)];
    },
  };
});

/** x W + b (optionally ReLU) with plain products in the gradient. */
function dense(relu: boolean) {
  return tf.customGrad((...args: (tf.Tensor | tf.GradSaveFunc)[]) => {
    const x = args[0] as tf.Tensor2D;
    const w = args[1] as tf.Tensor2D;
    const b = args[2] as tf.Tensor1D;
    const save = args[3] as tf.GradSaveFunc;
    const y = tf.fused.matMul({ a: x, b: w, bias: b, activation: relu ? 'relu' : 'linear' });
    save([x, w, y]);
    return {
      value: y,
      gradFunc: (dy: tf.Tensor | tf.Tensor[], saved: tf.Tensor[]) => {
        const [sx, sw, sy] = saved as [tf.Tensor2D, tf.Tensor2D, tf.Tensor2D];
        const g = relu ? (tf.mul(dy as tf.Tensor2D, tf.step(sy)) as tf.Tensor2D) : (dy as tf.Tensor2D);
        return [tf.matMul(g, tf.transpose(sw)), tf.matMul(tf.transpose(sx), g), tf.sum(g, 0)];
      },
    };
  });
}

const conv1 = convRelu(false);
const conv2 = convRelu(true);
const fc = dense(true);
const out = dense(false);

/** Logits and features; `mask` is the scaled dropout keep-mask on the features (training only). */
export function forward(w: tf.Tensor[], x: tf.Tensor4D, mask: tf.Tensor2D | null): { logits: tf.Tensor2D; features: tf.Tensor2D } {
  const n = x.shape[0];
  // [-1, 1] -> [0, 1]: a zero background keeps the first layer's response to empty space at its bias.
  const x01 = tf.mul(tf.add(x, 1), 0.5) as tf.Tensor4D;
  let h = maxPool2(conv1(x01, w[0]!, w[1]!) as tf.Tensor4D);
  h = maxPool2(conv2(h, w[2]!, w[3]!) as tf.Tensor4D);
  const features = fc(tf.reshape(h, [n, -1]), w[4]!, w[5]!) as tf.Tensor2D;
  const dropped = mask ? (tf.mul(features, mask) as tf.Tensor2D) : features;
  return { logits: out(dropped, w[6]!, w[7]!) as tf.Tensor2D, features };
}

/** Bytes 0..255 -> [-1, 1], the generator's output scale; `rng` shifts each digit at random. */
export function toUnit(images: Uint8Array, ids: ArrayLike<number>, rng?: Rng): Float32Array {
  const x = new Float32Array(ids.length * DIGIT_PIXELS).fill(-1);
  for (let i = 0; i < ids.length; i++) {
    const off = ids[i]! * DIGIT_PIXELS;
    const dr = rng ? rng.below(2 * MAX_SHIFT + 1) - MAX_SHIFT : 0;
    const dc = rng ? rng.below(2 * MAX_SHIFT + 1) - MAX_SHIFT : 0;
    for (let r = Math.max(0, -dr); r < Math.min(DIGIT_SIDE, DIGIT_SIDE - dr); r++) {
      const src = off + r * DIGIT_SIDE;
      const dst = i * DIGIT_PIXELS + (r + dr) * DIGIT_SIDE + dc;
      for (let c = Math.max(0, -dc); c < Math.min(DIGIT_SIDE, DIGIT_SIDE - dc); c++) x[dst + c] = byteToUnit(images[src + c]!);
    }
  }
  return x;
}

export class CnnClassifier implements Classifier {
  readonly featureDim: number;
  testAccuracy = NaN;
  trainSeconds = 0;
  cacheFile: string | null = null;
  trained = false;
  private weights: tf.Variable[];

  constructor(
    readonly arch: ClassifierArch,
    values: Float32Array[],
  ) {
    this.featureDim = arch.hidden;
    const specs = paramSpecs(arch);
    this.weights = specs.map((s, i) => tf.variable(tf.tensor(values[i]!, s.shape, 'float32'), true, undefined));
  }

  params(): tf.Variable[] {
    return this.weights;
  }

  values(): Float32Array[] {
    return this.weights.map((w) => w.dataSync() as Float32Array);
  }

  predict(images: Float32Array): Prediction {
    if (images.length % DIGIT_PIXELS !== 0) throw new Error(`predict: ${images.length} values is not a whole number of 28x28 images`);
    const n = images.length / DIGIT_PIXELS;
    const probs = new Float32Array(n * 10);
    const features = new Float32Array(n * this.featureDim);
    for (let s = 0; s < n; s += PREDICT_BATCH) {
      const m = Math.min(PREDICT_BATCH, n - s);
      const [p, f] = tf.tidy(() => {
        const x = tf.tensor4d(images.subarray(s * DIGIT_PIXELS, (s + m) * DIGIT_PIXELS), [m, DIGIT_SIDE, DIGIT_SIDE, 1]);
        const r = forward(this.weights, x, null);
        return [tf.softmax(r.logits), r.features];
      });
      try {
        probs.set(p.dataSync() as Float32Array, s * 10);
        features.set(f.dataSync() as Float32Array, s * this.featureDim);
      } finally {
        p.dispose();
        f.dispose();
      }
    }
    return { probs, features, featureDim: this.featureDim };
  }

  accuracy(ds: Dataset): number {
    const ids = Array.from({ length: ds.n }, (_, i) => i);
    const { probs } = this.predict(toUnit(ds.images, ids));
    let right = 0;
    for (let i = 0; i < ds.n; i++) if (argmax(probs, i * 10, 10) === ds.labels[i]) right++;
    return ds.n > 0 ? right / ds.n : NaN;
  }

  dispose(): void {
    for (const w of this.weights) w.dispose();
    this.weights = [];
  }
}

export function argmax(a: ArrayLike<number>, off: number, len: number): number {
  let best = 0;
  for (let j = 1; j < len; j++) if (a[off + j]! > a[off + best]!) best = j;
  return best;
}
