/**
 * The GAN's compute on TensorFlow.js: forward passes, losses and gradients for one phase.
 * Weights come in and gradients go out as flat Float32Arrays in the layout of model.ts; every
 * tensor lives inside tf.tidy or is disposed explicitly, so a step leaves tf.memory() unchanged.
 */
import * as tf from '@tensorflow/tfjs-core';
// Registers the gradient functions (tfjs-core alone ships them only as ES modules).
import '@tensorflow/tfjs';
import { GanError } from '../wire/errors.js';
import { type ModelConfig, type Net, type NetLayout, auxClasses, conditionDim, dTakesLabel, isConditional, isProjection, matchingAware, netLayout, r1Weight } from './model.js';

// The R1 penalty differentiates D's gradient, and LeakyReLU's gradient selects with Greater, for
// which TensorFlow.js registers no gradient. A comparison is piecewise constant: its gradient is 0.
if (!tf.getGradient('Greater')) {
  tf.registerGradient({
    kernelName: 'Greater',
    inputsToSave: ['a', 'b'],
    gradFunc: (_dy, saved) => ({ a: () => tf.zerosLike(saved[0]!), b: () => tf.zerosLike(saved[1]!) }),
  });
}

/** What one worker computes on for one phase. Every array is row-major, n rows. */
export interface Batch {
  n: number;
  /** Real images scaled to [-1, 1], n x imageDim (D phase only). */
  real?: Float32Array;
  /** Digit labels, n (conditional models: the label of each real row and the digit asked of each fake row). */
  labels?: Uint8Array;
  /** Noise z ~ N(0, 1), n x noiseDim. */
  noise: Float32Array;
  /** Dropout keep-masks already scaled by 1/(1-p), one per D hidden layer, for D on real rows. */
  masksReal?: Float32Array[];
  /** The same for D on generated rows. */
  masksFake?: Float32Array[];
}

export interface PhaseResult {
  /** Mean gradient over the batch, flat in the net's layout. Valid until the next step. */
  grads: Float32Array;
  loss: number;
  /** Mean D(x) on the real rows (D phase). */
  dReal: number;
  /** Mean D(G(z)) on the generated rows. */
  dFake: number;
}

type Tensor2D = tf.Tensor2D;

/** Backends whose tf.tensor() copies the values at once. */
const COPYING_BACKENDS = new Set(['wasm', 'native', 'tensorflow']);

export class GanModel {
  readonly g: NetLayout;
  readonly d: NetLayout;
  private weights: Record<Net, tf.Tensor[]> = { G: [], D: [] };
  private gradBuf: Record<Net, Float32Array>;

  constructor(readonly cfg: ModelConfig) {
    this.g = netLayout(cfg, 'G');
    this.d = netLayout(cfg, 'D');
    this.gradBuf = { G: new Float32Array(this.g.total), D: new Float32Array(this.d.total) };
  }

  layout(net: Net): NetLayout {
    return net === 'G' ? this.g : this.d;
  }

  /** Replace a net's weights from a flat vector (copied into the backend). */
  setWeights(net: Net, flat: Float32Array): void {
    const l = this.layout(net);
    if (flat.length !== l.total) throw new GanError('E_SHAPE', `${net} weights have ${flat.length} values, model needs ${l.total}`);
    for (const t of this.weights[net]) t.dispose();
    // wasm (and the native backend on its heap) and tfjs-node copy the values into their own memory;
    // cpu keeps the array and webgl/webgpu upload it later, so they get a copy (the caller reuses it).
    const copy = !COPYING_BACKENDS.has(tf.getBackend());
    this.weights[net] = l.params.map((p) => tf.tensor(copy ? flat.slice(p.offset, p.offset + p.size) : flat.subarray(p.offset, p.offset + p.size), p.shape, 'float32'));
  }

  /** A net's current weights as one flat vector (a copy). */
  weightsOf(net: Net): Float32Array {
    const l = this.layout(net);
    const out = new Float32Array(l.total);
    this.weights[net].forEach((t, i) => out.set(t.dataSync() as Float32Array, l.params[i]!.offset));
    return out;
  }

  dispose(): void {
    for (const t of [...this.weights.G, ...this.weights.D]) t.dispose();
    this.weights = { G: [], D: [] };
  }

  /** One-hot labels, n x numClasses, for a model whose G takes a label; null otherwise. */
  private condition(labels: Uint8Array | undefined, n: number): Tensor2D | null {
    if (!isConditional(this.cfg)) return null;
    const c = this.cfg.numClasses;
    if (!labels || labels.length !== n) throw new GanError('E_SHAPE', 'a conditional model needs one label per row');
    const oneHot = new Float32Array(n * c);
    for (let i = 0; i < n; i++) {
      const y = labels[i]!;
      if (y >= c) throw new GanError('E_MALFORMED', `label ${y} out of range 0..${c - 1}`);
      oneHot[i * c + y] = 1;
    }
    return tf.tensor2d(oneHot, [n, c]);
  }

  /**
   * The MLP both nets are: input (+ condition) through LeakyReLU hidden layers, each followed by
   * its dropout mask when given, to a linear output layer. `features` hands back the last hidden
   * layer (after its mask) as well.
   */
  private mlp(w: tf.Tensor[], x: Tensor2D, cond: Tensor2D | null, masks: Tensor2D[] | null, features?: (h: Tensor2D) => void): Tensor2D {
    let h: Tensor2D = cond ? tf.concat2d([x, cond], 1) : x;
    const layers = w.length / 2;
    for (let i = 0; i < layers; i++) {
      const last = i === layers - 1;
      if (last) features?.(h);
      h = tf.fused.matMul({
        a: h,
        b: w[2 * i] as Tensor2D,
        bias: w[2 * i + 1],
        activation: last ? 'linear' : 'leakyrelu',
        leakyreluAlpha: this.cfg.leak,
      }) as Tensor2D;
      if (!last && masks) h = tf.mul(h, masks[i]!) as Tensor2D;
    }
    return h;
  }

  /** G: noise (+ condition) -> image in [-1, 1]. */
  private gForward(w: tf.Tensor[], z: Tensor2D, cond: Tensor2D | null): Tensor2D {
    return tf.tanh(this.mlp(w, z, cond, null)) as Tensor2D;
  }

  /**
   * D: image (+ condition for a concat cgan) -> n x (1 + auxClasses) logits: real/fake first, then
   * (acgan) the class logits. `cond` is the one-hot label; only cgan's D reads it. A projection
   * cgan adds <embed(y), phi(x)> to the logit, phi(x) the last hidden layer (Miyato & Koyama 2018);
   * its embedding is the last weight tensor.
   */
  private dForward(w: tf.Tensor[], x: Tensor2D, cond: Tensor2D | null, masks: Tensor2D[] | null): Tensor2D {
    if (!isProjection(this.cfg)) return this.mlp(w, x, conditionDim(this.cfg, 'D') > 0 ? cond : null, masks);
    if (!cond) throw new GanError('E_INTERNAL', 'a projection discriminator needs the labels');
    let phi: Tensor2D | null = null;
    const out = this.mlp(w.slice(0, -1), x, null, masks, (h) => (phi = h));
    const embed = tf.matMul(cond, w[w.length - 1] as Tensor2D);
    return tf.add(out, tf.sum(tf.mul(embed, phi!), 1, true)) as Tensor2D;
  }

  /**
   * The loss terms D's logits give: mean sigmoid cross-entropy of the real/fake logit against
   * `target`, plus for acgan the mean softmax cross-entropy of the class logits against `cond`.
   * Also returns D's probability that each row is real.
   */
  private dLoss(logits: Tensor2D, target: Tensor2D, cond: Tensor2D | null): { loss: tf.Scalar; p: Tensor2D } {
    const n = logits.shape[0];
    const k = auxClasses(this.cfg);
    const source = k > 0 ? (logits.slice([0, 0], [n, 1]) as Tensor2D) : logits;
    let loss = tf.losses.sigmoidCrossEntropy(target, source) as tf.Scalar;
    if (k > 0) loss = tf.add(loss, tf.losses.softmaxCrossEntropy(cond!, logits.slice([0, 1], [n, k]))) as tf.Scalar;
    return { loss, p: tf.sigmoid(source) as Tensor2D };
  }

  private masks(n: number, flat: Float32Array[] | undefined): Tensor2D[] | null {
    if (!flat || this.cfg.dropout === 0) return null;
    return flat.map((m, i) => tf.tensor2d(m, [n, this.cfg.dHidden[i]!]));
  }

  private readGrads(net: Net, grads: tf.Tensor[]): Float32Array {
    const l = this.layout(net);
    const out = this.gradBuf[net];
    // On a wasm heap (wasm, native) the values are copied straight from it: dataSync() would make a
    // copy of each gradient first, megabytes a phase for the garbage collector.
    const heap = tf.backend() as { typedArrayFromHeap?: (t: tf.TensorInfo) => ArrayLike<number> };
    const direct = typeof heap.typedArrayFromHeap === 'function' && COPYING_BACKENDS.has(tf.getBackend()) && tf.getBackend() !== 'tensorflow';
    grads.forEach((g, i) => out.set((direct ? heap.typedArrayFromHeap!(g) : g.dataSync()) as Float32Array, l.params[i]!.offset));
    return out;
  }

  /**
   * D phase: gradient of BCE(D(x), 1) + BCE(D(G(z)), 0) w.r.t. D's weights only; for acgan plus
   * the class cross-entropy on real and fake rows (Odena et al.: D and G both maximise the
   * log-likelihood of the right class). G runs forward to make the fakes, outside the gradient.
   */
  dStep(b: Batch): PhaseResult {
    if (!b.real) throw new GanError('E_INTERNAL', 'the D phase needs real images');
    const { n } = b;
    const kept: tf.Tensor[] = [];
    const grads = tf.tidy(() => {
      const cond = this.condition(b.labels, n);
      const real = tf.tensor2d(b.real!, [n, this.cfg.imageDim]);
      const fake = this.gForward(this.weights.G, tf.tensor2d(b.noise, [n, this.cfg.noiseDim]), cond);
      // One pass of D over the real rows stacked on the fake rows: half the kernel launches of two
      // passes, and the same gradient. The mean over 2n rows is half the sum of the two means.
      const x = tf.concat2d([real, fake], 0);
      const c2 = cond ? tf.concat2d([cond, cond], 0) : null;
      const mReal = this.masks(n, b.masksReal);
      const mFake = this.masks(n, b.masksFake);
      const masks = mReal && mFake ? mReal.map((m, i) => tf.concat2d([m, mFake[i]!], 0)) : null;
      // Every D loss gains the R1 penalty on the real rows when the model has one.
      const penalised = (w: tf.Tensor[], loss: tf.Scalar): tf.Scalar => (r1Weight(this.cfg) > 0 ? (tf.add(loss, this.r1Penalty(w, real, cond, mReal)) as tf.Scalar) : loss);
      if (matchingAware(this.cfg)) return this.matchingAwareGrads(b, x, cond!, masks, kept, penalised);
      const target = tf.concat2d([tf.ones([n, 1]), tf.zeros([n, 1])], 0);
      const { value, grads } = tf.valueAndGrads((...w: tf.Tensor[]) => {
        const { loss, p } = this.dLoss(this.dForward(w, x, c2, masks), target, c2);
        kept.push(tf.keep(tf.mean(p.slice([0, 0], [n, 1]))), tf.keep(tf.mean(p.slice([n, 0], [n, 1]))));
        return penalised(w, tf.mul(loss, 2) as tf.Scalar);
      })(this.weights.D);
      kept.push(tf.keep(value));
      return grads;
    });
    return this.finish('D', grads, kept);
  }

  /**
   * R1 (Mescheder et al. 2018): gamma/2 times the mean over the real rows of |d logit / d x|^2.
   * It pushes D's surface flat around the real digits, so D cannot win by sharp boundaries that
   * give G no useful direction. A per-row mean, so workers' shares still average to the union's.
   */
  private r1Penalty(w: tf.Tensor[], real: Tensor2D, cond: Tensor2D | null, masks: Tensor2D[] | null): tf.Scalar {
    const n = real.shape[0];
    const dx = tf.grad((x: tf.Tensor) => tf.sum(this.dForward(w, x as Tensor2D, cond, masks).slice([0, 0], [n, 1])))(real);
    return tf.mul(tf.mean(tf.sum(tf.square(dx), 1)), r1Weight(this.cfg) / 2) as tf.Scalar;
  }

  /**
   * The matching-aware D phase of a cgan (Reed et al. 2016, GAN-CLS): besides real digits with
   * their own label (target 1) and fakes with the label asked (target 0), D sees each real
   * digit again with a wrong label (target 0), so it learns directly that image and label must
   * agree. Loss BCE(real) + (BCE(fake) + BCE(real, wrong label)) / 2, each a mean over n rows.
   * The wrong label of a row is drawn from that row's own noise (never from other rows), so W
   * workers at batch b still compute what one worker at W*b would.
   */
  private matchingAwareGrads(
    b: Batch, x2: Tensor2D, cond: Tensor2D, masks2: Tensor2D[] | null, kept: tf.Tensor[], penalised: (w: tf.Tensor[], loss: tf.Scalar) => tf.Scalar,
  ): tf.Tensor[] {
    const { n } = b;
    const wrong = wrongLabels(b.labels!, b.noise, this.cfg.noiseDim, this.cfg.numClasses);
    const x = tf.concat2d([x2, x2.slice([0, 0], [n, this.cfg.imageDim])], 0);
    const c3 = tf.concat2d([cond, cond, this.condition(wrong, n)!], 0);
    const masks = masks2 ? masks2.map((m) => tf.concat2d([m, m.slice([0, 0], [n, m.shape[1]])], 0)) : null;
    const target = tf.concat2d([tf.ones([n, 1]), tf.zeros([2 * n, 1])], 0);
    const weight = tf.concat2d([tf.fill([n, 1], 1 / n), tf.fill([2 * n, 1], 0.5 / n)], 0);
    const { value, grads } = tf.valueAndGrads((...w: tf.Tensor[]) => {
      const logits = this.dForward(w, x, c3, masks);
      const p = tf.sigmoid(logits) as Tensor2D;
      kept.push(tf.keep(tf.mean(p.slice([0, 0], [n, 1]))), tf.keep(tf.mean(p.slice([n, 0], [n, 1]))));
      return penalised(w, tf.losses.sigmoidCrossEntropy(target, logits, weight, 0, tf.Reduction.SUM) as tf.Scalar);
    })(this.weights.D);
    kept.push(tf.keep(value));
    return grads;
  }

  /**
   * G phase: non-saturating loss BCE(D(G(z)), 1) w.r.t. G's weights only; for acgan plus the class
   * cross-entropy of D's class logits on the fakes against the digits asked for.
   */
  gStep(b: Batch): PhaseResult {
    const { n } = b;
    const kept: tf.Tensor[] = [];
    const grads = tf.tidy(() => {
      const cond = this.condition(b.labels, n);
      const z = tf.tensor2d(b.noise, [n, this.cfg.noiseDim]);
      const mFake = this.masks(n, b.masksFake);
      const ones = tf.ones([n, 1]) as Tensor2D;
      const { value, grads } = tf.valueAndGrads((...w: tf.Tensor[]) => {
        const { loss, p } = this.dLoss(this.dForward(this.weights.D, this.gForward(w, z, cond), cond, mFake), ones, cond);
        kept.push(tf.keep(tf.scalar(NaN)), tf.keep(tf.mean(p)));
        return loss;
      })(this.weights.G);
      kept.push(tf.keep(value));
      return grads;
    });
    return this.finish('G', grads, kept);
  }

  private finish(net: Net, grads: tf.Tensor[], kept: tf.Tensor[]): PhaseResult {
    try {
      const flat = this.readGrads(net, grads);
      const [dReal, dFake, loss] = kept.map((t) => t.dataSync()[0]!);
      return { grads: flat, loss: loss!, dReal: dReal!, dFake: dFake! };
    } finally {
      for (const t of grads) t.dispose();
      for (const t of kept) t.dispose();
    }
  }

  /** Images from noise (and labels for conditional models), n x imageDim in [-1, 1]. */
  generate(noise: Float32Array, labels?: Uint8Array): Float32Array {
    const n = noise.length / this.cfg.noiseDim;
    return tf.tidy(() => {
      const cond = this.condition(labels, n);
      const out = this.gForward(this.weights.G, tf.tensor2d(noise, [n, this.cfg.noiseDim]), cond);
      return out.dataSync() as Float32Array;
    });
  }

  /**
   * D's probability that each image is real, evaluation mode (no dropout). A cgan's D needs the
   * labels the images claim; other models ignore them.
   */
  discriminate(images: Float32Array, labels?: Uint8Array): Float32Array {
    const n = images.length / this.cfg.imageDim;
    return tf.tidy(() => {
      const cond = dTakesLabel(this.cfg) ? this.condition(labels, n) : null;
      const logits = this.dForward(this.weights.D, tf.tensor2d(images, [n, this.cfg.imageDim]), cond, null);
      return tf.sigmoid(logits.slice([0, 0], [n, 1])).dataSync() as Float32Array;
    });
  }
}

/**
 * A wrong label for each row, for the matching-aware D: label + 1 + k (mod classes), k in
 * 0..classes-2 taken from the low bits of the row's first noise value, so it depends on that row
 * alone and is never the row's own label.
 */
export function wrongLabels(labels: Uint8Array, noise: Float32Array, noiseDim: number, classes: number): Uint8Array {
  const out = new Uint8Array(labels.length);
  for (let i = 0; i < labels.length; i++) {
    const k = Math.floor(Math.abs(noise[i * noiseDim]!) * 65536) % (classes - 1);
    out[i] = (labels[i]! + 1 + k) % classes;
  }
  return out;
}
