/**
 * Checkpoints: one binary file holding the whole training state.
 *
 *   "GANDDP01" | u32 LE json length | json | zero padding to 4 | float32 sections | sha256 (32 bytes)
 *
 * Format 1 has the six sections of the nets and their Adam states; format 2 adds the moving
 * average of G as a seventh (written only by runs that keep one, so format 1 readers still load
 * every other checkpoint).
 *
 * The json names the sections (G and D weights, Adam m and v of both, and the moving average of
 * G's weights when the run keeps one) and carries the config, the
 * round, epoch and per-sample use counts of the current epoch. All randomness is keyed by (seed,
 * epoch, sample, phase), so the seed is the whole RNG state. Writes are atomic (temporary file,
 * fsync, rename, fsync of the directory; run-dir.ts): a crash leaves the previous checkpoint intact.
 * A file whose hash, sizes or model do not match is refused and never overwritten.
 */
import { createHash } from 'node:crypto';
import { modelConfigProblem, modelSignature, netLayout } from '../shared/compute/model.js';
import { isWirePrecision } from '../shared/numerics/wire-format.js';
import { type TrainConfig, defaultTrainConfig, syncProblem } from './config.js';
import { GanError } from '../shared/wire/errors.js';
import { allFinite } from './optimizer.js';

const MAGIC = Buffer.from('GANDDP01', 'ascii');
export const CHECKPOINT_FILE = 'checkpoint.bin';

export interface TrainState {
  config: TrainConfig;
  round: number;
  epoch: number;
  versions: { D: number; G: number };
  adamSteps: { D: number; G: number };
  /** Use count per sample in the current epoch (see EpochPlan). */
  epochUses: Uint8Array;
  weights: { G: Float32Array; D: Float32Array };
  /** Moving average of G's weights (runs with emaDecay > 0). */
  emaG?: Float32Array;
  adam: { G: { m: Float32Array; v: Float32Array }; D: { m: Float32Array; v: Float32Array } };
}

const SECTIONS = ['G.w', 'D.w', 'G.m', 'G.v', 'D.m', 'D.v'] as const;
const EMA_SECTION = 'G.ema';

/** Section names in file order: format 1 without the average, format 2 with it. */
function sectionNames(withAverage: boolean): string[] {
  return withAverage ? [...SECTIONS, EMA_SECTION] : [...SECTIONS];
}

function sections(s: TrainState): Float32Array[] {
  const out = [s.weights.G, s.weights.D, s.adam.G.m, s.adam.G.v, s.adam.D.m, s.adam.D.v];
  return s.emaG ? [...out, s.emaG] : out;
}

/** A checkpoint's bytes: its body (checkpointParts) and the SHA-256 of that, in one copy. */
export function encodeCheckpoint(s: TrainState): Buffer {
  const parts = checkpointParts(s);
  const hash = createHash('sha256');
  for (const p of parts) hash.update(p);
  return Buffer.concat([...parts, hash.digest()]);
}

/**
 * A checkpoint's bytes as its body, a copy of the state taken now (so training may go on while it
 * is written), and its SHA-256, computed a megabyte at a time between other work. The body is
 * copied into `into` when it is large enough, else into a new buffer with room to spare; `buffer`
 * is the one used, for the next snapshot (copying into pages already touched is several times
 * faster than into fresh ones).
 */
export function checkpointSnapshot(s: TrainState, into?: Buffer): { body: Buffer; digest: Promise<Uint8Array>; buffer: Buffer } {
  const parts = checkpointParts(s);
  const length = parts.reduce((n, p) => n + p.length, 0);
  const buffer = into && into.length >= length ? into : Buffer.allocUnsafe(length + 64 * 1024);
  let off = 0;
  for (const p of parts) (buffer.set(p, off), (off += p.length));
  const body = buffer.subarray(0, length);
  return { body, digest: hashInSlices(body), buffer };
}

async function hashInSlices(b: Buffer): Promise<Uint8Array> {
  const hash = createHash('sha256');
  for (let off = 0; off < b.length; off += 1 << 20) {
    hash.update(b.subarray(off, off + (1 << 20)));
    await new Promise((r) => setImmediate(r));
  }
  return hash.digest();
}

/** Everything in a checkpoint but its trailing digest, in parts (the arrays themselves, not copies); refuses a state that holds NaN or Inf. */
function checkpointParts(s: TrainState): Uint8Array[] {
  if (!!s.emaG !== s.config.emaDecay > 0) throw new Error(`checkpoint: emaDecay ${s.config.emaDecay} ${s.emaG ? 'with' : 'without'} a moving average`);
  const secs = sections(s);
  sectionNames(!!s.emaG).forEach((name, i) => {
    // The state must never carry a NaN or an infinity forward, not even into a file.
    if (!allFinite(secs[i]!)) throw new GanError('E_CHECKPOINT', `refusing to write a checkpoint holding NaN or Inf in ${name}`);
  });
  const meta = {
    format: s.emaG ? 2 : 1,
    signature: modelSignature(s.config.model),
    config: s.config,
    round: s.round,
    epoch: s.epoch,
    versions: s.versions,
    adamSteps: s.adamSteps,
    rng: { scheme: 'keyed-sfc32', seed: s.config.seed },
    epochUses: Buffer.from(s.epochUses).toString('base64'),
    sections: sectionNames(!!s.emaG).map((name, i) => ({ name, length: secs[i]!.length })),
  };
  const json = Buffer.from(JSON.stringify(meta));
  const headLen = MAGIC.length + 4 + json.length;
  const pad = (4 - (headLen % 4)) % 4;
  const head = Buffer.alloc(headLen + pad);
  MAGIC.copy(head, 0);
  head.writeUInt32LE(json.length, MAGIC.length);
  json.copy(head, MAGIC.length + 4);
  return [head, ...secs.map((a) => new Uint8Array(a.buffer, a.byteOffset, a.byteLength))];
}

export function decodeCheckpoint(buf: Buffer, file: string): TrainState {
  const bad = (why: string): never => {
    throw new GanError('E_CHECKPOINT', `${file}: ${why}`);
  };
  if (buf.length < MAGIC.length + 4 + 32 || !buf.subarray(0, MAGIC.length).equals(MAGIC)) bad('not a checkpoint of this program (bad magic)');
  const body = buf.subarray(0, buf.length - 32);
  const digest = createHash('sha256').update(body).digest();
  if (!digest.equals(buf.subarray(buf.length - 32))) bad('corrupt (checksum mismatch): refusing to use it');
  const jsonLen = buf.readUInt32LE(MAGIC.length);
  let meta: Record<string, unknown>;
  try {
    meta = JSON.parse(buf.subarray(MAGIC.length + 4, MAGIC.length + 4 + jsonLen).toString('utf8')) as Record<string, unknown>;
  } catch {
    return bad('corrupt header');
  }
  if (meta.format !== 1 && meta.format !== 2) bad(`unsupported format ${String(meta.format)} (this program reads 1 and 2)`);
  const config = meta.config as TrainConfig;
  if (typeof config !== 'object' || config === null) bad('corrupt header (no config)');
  const problem = modelConfigProblem(config.model);
  if (problem) bad(`model configuration: ${problem}`);
  // Checkpoints from before the moving average existed have no emaDecay.
  config.emaDecay ??= 0;
  // Checkpoints from before --wire said whether gradients went as 16-bit floats.
  const legacy = config as TrainConfig & { fp16?: boolean };
  if (legacy.wire === undefined) config.wire = legacy.fp16 ? '16' : 'fp32';
  delete legacy.fp16;
  if (!isWirePrecision(config.wire)) bad(`wire precision ${JSON.stringify(config.wire)} is not one of fp32, 16, 8`);
  // Checkpoints from before --sync-every trained synchronously.
  config.syncEvery ??= 1;
  config.outerLr ??= defaultTrainConfig.outerLr;
  config.outerMomentum ??= defaultTrainConfig.outerMomentum;
  const sync = syncProblem(config);
  if (sync) bad(sync);
  const withAverage = meta.format === 2;
  if (withAverage !== config.emaDecay > 0) bad(`format ${String(meta.format)} does not match emaDecay ${config.emaDecay}`);
  if (meta.signature !== modelSignature(config.model)) bad('model signature does not match its own config');
  let off = MAGIC.length + 4 + jsonLen;
  off += (4 - (off % 4)) % 4;
  const secs = meta.sections as { name: string; length: number }[];
  const names = sectionNames(withAverage);
  if (!Array.isArray(secs) || secs.length !== names.length) bad(`expected ${names.length} sections`);
  const expect: Record<string, number> = {
    'G.w': netLayout(config.model, 'G').total, 'D.w': netLayout(config.model, 'D').total,
  };
  expect['G.m'] = expect['G.v'] = expect['G.w']!;
  expect['D.m'] = expect['D.v'] = expect['D.w']!;
  expect[EMA_SECTION] = expect['G.w']!;
  const arrays: Float32Array[] = [];
  names.forEach((name, i) => {
    const s = secs[i];
    if (!s || s.name !== name || s.length !== expect[name]) bad(`section ${name} missing or of the wrong size`);
    const bytes = s!.length * 4;
    if (off + bytes > body.length) bad('truncated');
    const a = new Float32Array(s!.length);
    new Uint8Array(a.buffer).set(body.subarray(off, off + bytes));
    arrays.push(a);
    off += bytes;
  });
  if (off !== body.length) bad('trailing bytes');
  const [gw, dw, gm, gv, dm, dv, ema] = arrays as [Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array, Float32Array?];
  return {
    config,
    round: meta.round as number,
    epoch: meta.epoch as number,
    versions: meta.versions as TrainState['versions'],
    adamSteps: meta.adamSteps as TrainState['adamSteps'],
    epochUses: new Uint8Array(Buffer.from(meta.epochUses as string, 'base64')),
    weights: { G: gw, D: dw },
    emaG: ema,
    adam: { G: { m: gm, v: gv }, D: { m: dm, v: dv } },
  };
}

/** The generator weights to sample: the moving average when the run kept one (unless `raw`). */
export function generatorWeights(s: TrainState, raw = false): Float32Array {
  return (!raw && s.emaG) || s.weights.G;
}
