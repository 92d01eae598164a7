/**
 * The judge for generated digits (the network is in cnn.ts): trained once per training set with
 * a fixed seeded recipe and cached on disk, keyed by the exact digits, the recipe and the
 * architecture, so every evaluation after the first costs seconds.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, unlinkSync, writeFileSync } from 'node:fs';
import { dirname, join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import type { MnistSplits } from '../shared/data/mnist.js';
import { packageRoot } from '../shared/paths.js';
import { Rng, permutation } from '../shared/compute/rng.js';
import { type Classifier, type ClassifierArch, CnnClassifier, MAX_SHIFT, defaultArch, forward, initParams, paramSpecs, sizeOf, toUnit } from './cnn.js';
import { DIGIT_PIXELS } from '../shared/data/digits.js';

export type { Classifier, ClassifierArch, Prediction } from './cnn.js';

/** Bump when the architecture, the training recipe or the file layout changes: old caches are ignored. */
export const CLASSIFIER_VERSION = 1;

export interface ClassifierOptions {
  data: MnistSplits;
  /** Default defaultCacheDir(); null turns the disk cache off. */
  cacheDir?: string | null;
  log?: (line: string) => void;
  /** Passes over the training digits. */
  epochs?: number;
  /** Train on the first trainLimit training digits only (tests). */
  trainLimit?: number;
  seed?: number;
  arch?: ClassifierArch;
  /** Also look for the judge shipped with the package (shippedJudgeDir()); default true. */
  shipped?: boolean;
}

const DEFAULT_EPOCHS = 5;
const BATCH = 32;
const LR = 1.5e-3;
const DROPOUT = 0.3;
const MAGIC = 'GANEVCLS';
const SHA_BYTES = 32;

/** GAN_DDP_CACHE_DIR, else `<package root>/.cache`, with the judges in `classifier/` below it. */
export function defaultCacheDir(): string {
  return join(process.env.GAN_DDP_CACHE_DIR || join(packageRoot() ?? process.cwd(), '.cache'), 'classifier');
}

/**
 * Where the package ships the judge of the embedded digits, trained by this module with its
 * default recipe (`npm run build:judge` makes it again): a fresh checkout evaluates without
 * training first, and every machine scores with the same judge.
 */
export function shippedJudgeDir(): string {
  return join(packageRoot() ?? process.cwd(), 'eval', 'judge');
}

/** The file name of the judge for `key`, in the cache or among the shipped ones. */
export function judgeFileName(key: string): string {
  return `mnist-cnn-v${CLASSIFIER_VERSION}-${key.slice(0, 16)}.bin`;
}

/** The key and settings of the judge getClassifier() would use for `data` with `opts`. */
export function judgeKey(data: MnistSplits, opts: Omit<ClassifierOptions, 'data'> = {}): string {
  return classifierKey(data, settingsOf({ data, ...opts }));
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
    h.update(ds.images.subarray(0, ds.n * DIGIT_PIXELS));
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
function settingsOf(opts: ClassifierOptions): TrainSettings {
  return {
    epochs: opts.epochs ?? DEFAULT_EPOCHS,
    trainLimit: Math.min(opts.trainLimit ?? opts.data.train.n, opts.data.train.n),
    seed: opts.seed ?? 1,
    arch: opts.arch ?? defaultArch,
  };
}

export async function getClassifier(opts: ClassifierOptions): Promise<Classifier> {
  const log = opts.log ?? (() => {});
  const settings = settingsOf(opts);
  await tf.ready();
  const key = classifierKey(opts.data, settings);
  const dir = opts.cacheDir === undefined ? defaultCacheDir() : opts.cacheDir;
  const file = dir === null ? null : join(dir, judgeFileName(key));
  const shipped = opts.shipped === false ? null : join(shippedJudgeDir(), judgeFileName(key));

  // The cache first (a judge trained here), then the one the package ships.
  for (const f of [file, shipped]) {
    if (!f || !existsSync(f)) continue;
    try {
      const { header, values } = decodeCache(readFileSync(f), key, settings.arch);
      const net = new CnnClassifier(settings.arch, values);
      net.testAccuracy = header.testAccuracy;
      net.trainSeconds = header.trainSeconds;
      net.cacheFile = f;
      log(`classifier: loaded ${f} (test accuracy ${(header.testAccuracy * 100).toFixed(2)}%)`);
      return net;
    } catch (e) {
      log(`classifier: ${f === shipped ? 'shipped judge' : 'cache'} ${f} is unusable (${(e as Error).message}); ${f === file && shipped && existsSync(shipped) ? 'trying the shipped one' : 'retraining'}`);
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
