/**
 * The judge for generated digits: a small MNIST CNN, trained once per training set and cached on
 * disk. Its softmax drives the classifier score, coverage and conditional accuracy; its penultimate
 * layer is the feature space of the Fréchet distance.
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
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';
import * as tf from '@tensorflow/tfjs-core';
// Registers the gradient functions of the ops used below.
import '@tensorflow/tfjs';
import type { Dataset, MnistSplits } from '../shared/mnist.js';
import { byteToUnit } from '../shared/pixels.js';
import { Rng, permutation } from '../shared/rng.js';

/** Bump when the architecture, the training recipe or the file layout changes: old caches are ignored. */
export const CLASSIFIER_VERSION = 1;

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

export interface ClassifierOptions {
  data: MnistSplits;
  /** Default `<package root>/.cache/classifier`; null turns the disk cache off. */
  cacheDir?: string | null;
  log?: (line: string) => void;
  /** Passes over the training digits. */
  epochs?: number;
  /** Train on the first trainLimit training digits only (tests). */
  trainLimit?: number;
  seed?: number;
  arch?: ClassifierArch;
}

const DEFAULT_EPOCHS = 5;
const BATCH = 32;
const LR = 1.5e-3;
const DROPOUT = 0.3;
/** Training digits are shifted by up to this many pixels each way: 9k digits alone overfit. */
const MAX_SHIFT = 2;
const PREDICT_BATCH = 250;
const MAGIC = 'GANEVCLS';
const SHA_BYTES = 32;

/** The folder holding package.json, found upwards from this module so it works from dist/ too. */
export function packageRoot(): string {
  let dir = dirname(fileURLToPath(import.meta.url));
  for (;;) {
    if (existsSync(join(dir, 'package.json'))) return dir;
    const up = dirname(dir);
    if (up === dir) return process.cwd();
    dir = up;
  }
}

export function defaultCacheDir(): string {
  return join(packageRoot(), '.cache', 'classifier');
}

interface ParamSpec {
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

const sizeOf = (shape: number[]): number => shape.reduce((a, b) => a * b, 1);

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
function toUnit(images: Uint8Array, ids: ArrayLike<number>, rng?: Rng): Float32Array {
  const x = new Float32Array(ids.length * 784).fill(-1);
  for (let i = 0; i < ids.length; i++) {
    const off = ids[i]! * 784;
    const dr = rng ? rng.below(2 * MAX_SHIFT + 1) - MAX_SHIFT : 0;
    const dc = rng ? rng.below(2 * MAX_SHIFT + 1) - MAX_SHIFT : 0;
    for (let r = Math.max(0, -dr); r < Math.min(28, 28 - dr); r++) {
      const src = off + r * 28;
      const dst = i * 784 + (r + dr) * 28 + dc;
      for (let c = Math.max(0, -dc); c < Math.min(28, 28 - dc); c++) x[dst + c] = byteToUnit(images[src + c]!);
    }
  }
  return x;
}

class CnnClassifier implements Classifier {
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
    if (images.length % 784 !== 0) throw new Error(`predict: ${images.length} values is not a whole number of 28x28 images`);
    const n = images.length / 784;
    const probs = new Float32Array(n * 10);
    const features = new Float32Array(n * this.featureDim);
    for (let s = 0; s < n; s += PREDICT_BATCH) {
      const m = Math.min(PREDICT_BATCH, n - s);
      const [p, f] = tf.tidy(() => {
        const x = tf.tensor4d(images.subarray(s * 784, (s + m) * 784), [m, 28, 28, 1]);
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

/** Adam with a cosine-decayed step; moments live next to the weights. */
class Adam {
  private m: tf.Variable[];
  private v: tf.Variable[];
  private t = 0;
  constructor(private readonly params: tf.Variable[]) {
    this.m = params.map((p) => tf.variable(tf.zerosLike(p), false));
    this.v = params.map((p) => tf.variable(tf.zerosLike(p), false));
  }

  step(grads: tf.Tensor[], lr: number): void {
    this.t++;
    const b1 = 0.9;
    const b2 = 0.999;
    const c1 = 1 - b1 ** this.t;
    const c2 = 1 - b2 ** this.t;
    tf.tidy(() => {
      grads.forEach((g, i) => {
        const m = this.m[i]!;
        const v = this.v[i]!;
        m.assign(tf.add(tf.mul(m, b1), tf.mul(g, 1 - b1)));
        v.assign(tf.add(tf.mul(v, b2), tf.mul(tf.square(g), 1 - b2)));
        const upd = tf.div(tf.mul(m, lr / c1), tf.add(tf.sqrt(tf.div(v, c2)), 1e-8));
        this.params[i]!.assign(tf.sub(this.params[i]!, upd));
      });
    });
  }

  dispose(): void {
    for (const t of [...this.m, ...this.v]) t.dispose();
  }
}

interface TrainSettings {
  epochs: number;
  trainLimit: number;
  seed: number;
  arch: ClassifierArch;
}

/**
 * Gives the event loop a turn every so often: training takes minutes, and a process that also
 * serves WebSockets (or a test runner's RPC) must not go silent that long.
 */
async function breathe(state: { last: number }): Promise<void> {
  const now = performance.now();
  if (now - state.last < 100) return;
  state.last = now;
  await new Promise<void>((resolve) => setImmediate(resolve));
}

async function train(data: MnistSplits, s: TrainSettings, log: (line: string) => void): Promise<CnnClassifier> {
  const start = performance.now();
  const specs = paramSpecs(s.arch);
  const net = new CnnClassifier(s.arch, initParams(specs, s.seed));
  const params = net.params();
  const opt = new Adam(params);
  const n = Math.min(s.trainLimit, data.train.n);
  const stepsPerEpoch = Math.ceil(n / BATCH);
  const total = stepsPerEpoch * s.epochs;
  const lossAndGrads = tf.valueAndGrads((...args: tf.Tensor[]) => {
    const [x, y, mask, ...w] = args as [tf.Tensor4D, tf.Tensor2D, tf.Tensor2D, ...tf.Tensor[]];
    return tf.losses.softmaxCrossEntropy(y, forward(w, x, mask).logits) as tf.Scalar;
  });
  const keep = 1 - DROPOUT;
  let step = 0;
  const pace = { last: performance.now() };
  try {
    for (let epoch = 0; epoch < s.epochs; epoch++) {
      const order = permutation(n, s.seed, 0x0c1a55, epoch);
      const dropRng = new Rng(s.seed, 0x0d1a55, epoch);
      const shiftRng = new Rng(s.seed, 0x5e1f7, epoch);
      let lossSum = 0;
      for (let b = 0; b < stepsPerEpoch; b++) {
        const ids = order.subarray(b * BATCH, Math.min(n, (b + 1) * BATCH));
        const m = ids.length;
        const x = toUnit(data.train.images, ids, shiftRng);
        const y = new Float32Array(m * 10);
        for (let i = 0; i < m; i++) y[i * 10 + data.train.labels[ids[i]!]!] = 1;
        const mask = new Float32Array(m * s.arch.hidden);
        for (let i = 0; i < mask.length; i++) mask[i] = dropRng.uniform() < keep ? 1 / keep : 0;
        // Cosine decay to zero over the whole run: fast early progress, a settled end.
        const lr = 0.5 * LR * (1 + Math.cos((Math.PI * step) / total));
        const loss = tf.tidy(() => {
          const { value, grads } = lossAndGrads([
            tf.tensor4d(x, [m, 28, 28, 1]),
            tf.tensor2d(y, [m, 10]),
            tf.tensor2d(mask, [m, s.arch.hidden]),
            ...params,
          ]);
          opt.step(grads.slice(3), lr);
          return value;
        });
        lossSum += loss.dataSync()[0]! * m;
        loss.dispose();
        step++;
        await breathe(pace);
      }
      const secs = (performance.now() - start) / 1000;
      log(`classifier: epoch ${epoch + 1}/${s.epochs} loss ${(lossSum / n).toFixed(4)} (${secs.toFixed(1)} s)`);
    }
  } finally {
    opt.dispose();
  }
  net.trainSeconds = (performance.now() - start) / 1000;
  net.testAccuracy = net.accuracy(data.test);
  net.trained = true;
  return net;
}

/** What the cache is keyed by: the exact digits, the recipe and the architecture. */
export function classifierKey(data: MnistSplits, s: TrainSettings): string {
  const h = createHash('sha256');
  h.update(`v${CLASSIFIER_VERSION};batch=${BATCH};lr=${LR};dropout=${DROPOUT};shift=${MAX_SHIFT};arch=${JSON.stringify(s.arch)};epochs=${s.epochs};limit=${s.trainLimit};seed=${s.seed};`);
  for (const ds of [data.train, data.test]) {
    h.update(`${ds.n};`);
    h.update(ds.images.subarray(0, ds.n * 784));
    h.update(ds.labels.subarray(0, ds.n));
  }
  return h.digest('hex');
}

interface CacheHeader {
  version: number;
  key: string;
  arch: ClassifierArch;
  testAccuracy: number;
  trainSeconds: number;
  params: { name: string; shape: number[] }[];
}

/**
 * Layout: MAGIC, u32 header length, JSON header, float32 weights, then the SHA-256 of everything
 * before it. Any mismatch (length, checksum, magic, key, shapes) means "not usable".
 */
function encodeCache(header: CacheHeader, values: Float32Array[]): Buffer {
  const json = Buffer.from(JSON.stringify(header), 'utf8');
  const weightBytes = values.reduce((a, v) => a + v.byteLength, 0);
  const body = Buffer.alloc(MAGIC.length + 4 + json.length + weightBytes);
  body.write(MAGIC, 0, 'latin1');
  body.writeUInt32LE(json.length, MAGIC.length);
  json.copy(body, MAGIC.length + 4);
  let off = MAGIC.length + 4 + json.length;
  for (const v of values) {
    Buffer.from(v.buffer, v.byteOffset, v.byteLength).copy(body, off);
    off += v.byteLength;
  }
  return Buffer.concat([body, createHash('sha256').update(body).digest()]);
}

function decodeCache(buf: Buffer, key: string, arch: ClassifierArch): { header: CacheHeader; values: Float32Array[] } {
  if (buf.length < MAGIC.length + 4 + SHA_BYTES) throw new Error(`only ${buf.length} bytes`);
  const body = buf.subarray(0, buf.length - SHA_BYTES);
  const sum = createHash('sha256').update(body).digest();
  if (!sum.equals(buf.subarray(buf.length - SHA_BYTES))) throw new Error('checksum mismatch (truncated or damaged)');
  if (body.toString('latin1', 0, MAGIC.length) !== MAGIC) throw new Error('not a classifier cache file');
  const jsonLen = body.readUInt32LE(MAGIC.length);
  const header = JSON.parse(body.toString('utf8', MAGIC.length + 4, MAGIC.length + 4 + jsonLen)) as CacheHeader;
  if (header.version !== CLASSIFIER_VERSION || header.key !== key) throw new Error('made for other data or another version');
  const specs = paramSpecs(arch);
  if (JSON.stringify(header.params.map((p) => p.shape)) !== JSON.stringify(specs.map((p) => p.shape))) {
    throw new Error('parameter shapes differ');
  }
  let off = MAGIC.length + 4 + jsonLen;
  const values = specs.map((p) => {
    const len = sizeOf(p.shape);
    const v = new Float32Array(len);
    Buffer.from(v.buffer).set(body.subarray(off, off + len * 4));
    off += len * 4;
    return v;
  });
  if (off !== body.length) throw new Error(`weights are ${body.length - MAGIC.length - 4 - jsonLen} bytes, expected ${off - MAGIC.length - 4 - jsonLen}`);
  return { header, values };
}

/**
 * The classifier for these digits: loaded from the cache when a valid file exists, otherwise
 * trained (seeded: the same data and backend give the same weights) and written to the cache.
 */
export async function getClassifier(opts: ClassifierOptions): Promise<Classifier> {
  const log = opts.log ?? (() => {});
  const settings: TrainSettings = {
    epochs: opts.epochs ?? DEFAULT_EPOCHS,
    trainLimit: Math.min(opts.trainLimit ?? opts.data.train.n, opts.data.train.n),
    seed: opts.seed ?? 1,
    arch: opts.arch ?? defaultArch,
  };
  await tf.ready();
  const key = classifierKey(opts.data, settings);
  const dir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
  const file = dir === null ? null : join(dir, `mnist-cnn-v${CLASSIFIER_VERSION}-${key.slice(0, 16)}.bin`);

  if (file && existsSync(file)) {
    try {
      const { header, values } = decodeCache(readFileSync(file), key, settings.arch);
      const net = new CnnClassifier(settings.arch, values);
      net.testAccuracy = header.testAccuracy;
      net.trainSeconds = header.trainSeconds;
      net.cacheFile = file;
      log(`classifier: loaded ${file} (test accuracy ${(header.testAccuracy * 100).toFixed(2)}%)`);
      return net;
    } catch (e) {
      log(`classifier: cache ${file} is unusable (${(e as Error).message}); retraining`);
    }
  }

  log(
    `classifier: training on ${settings.trainLimit} digits of ${opts.data.train.source}, ${settings.epochs} epochs, backend ${tf.getBackend()}`,
  );
  const net = await train(opts.data, settings, log);
  log(`classifier: test accuracy ${(net.testAccuracy * 100).toFixed(2)}% on ${opts.data.test.n} digits, trained in ${net.trainSeconds.toFixed(1)} s`);
  if (file) {
    const header: CacheHeader = {
      version: CLASSIFIER_VERSION,
      key,
      arch: settings.arch,
      testAccuracy: net.testAccuracy,
      trainSeconds: net.trainSeconds,
      params: paramSpecs(settings.arch).map((p) => ({ name: p.name, shape: p.shape })),
    };
    try {
      mkdirSync(dirname(file), { recursive: true });
      // Write then rename, so a concurrent reader never sees half a file.
      const tmp = `${file}.${process.pid}.tmp`;
      writeFileSync(tmp, encodeCache(header, net.values()));
      renameSync(tmp, file);
      net.cacheFile = file;
    } catch (e) {
      log(`classifier: could not write the cache ${file} (${(e as Error).message}); continuing without it`);
      try {
        unlinkSync(`${file}.${process.pid}.tmp`);
      } catch {
        // nothing left behind
      }
    }
  }
  return net;
}
