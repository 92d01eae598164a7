/**
 * The wire protocol. Every frame is one binary WebSocket message holding one msgpack map with a
 * numeric `k` (Kind). Tensors cross as raw little-endian bytes in msgpack `bin` fields and come
 * out as typed-array views of the received frame when aligned (a single memcpy when not).
 *
 * Invariants:
 * - decode() checks the kind and every field's type before anything uses the message; sizes
 *   against the model are checked by the receiver, which knows the model.
 * - Encoders are stateless (no msgpack records), so a reconnecting peer needs no shared state.
 * - Protocol version and model signature are exchanged once, in Hello; a mismatch closes the
 *   connection with E_VERSION / E_MODEL.
 */
import { Packr } from 'msgpackr';
import { GanError } from './errors.js';
import { type ModelConfig, modelConfigProblem } from './model.js';
import { type NativeMath, nativeMath } from './backend/addon.js';

export const PROTOCOL_VERSION = 1;

export enum Kind {
  /** coordinator -> worker, first frame: protocol version and a nonce to prove the token over. */
  Challenge = 1,
  /** worker -> coordinator: version, model signature, backend, token proof. */
  Hello = 2,
  /** coordinator -> worker: accepted; id and training config. */
  Welcome = 3,
  /** coordinator -> worker: sample images (and labels) the worker will be asked to use. */
  Shard = 4,
  /** coordinator -> workers: one net's weights at a version (same bytes to every worker). */
  Weights = 5,
  /** coordinator -> worker: compute this phase of this round on these samples. */
  Task = 6,
  /** worker -> coordinator: mean gradient of a phase and its sample count. */
  Grad = 7,
  /** coordinator -> worker: the run is over. */
  Stop = 8,
}

export type NetName = 'D' | 'G';
export type PhaseName = 'D' | 'G';

/** The model configuration as it crosses the wire (validated field by field in decode). */
export type WireModelConfig = ModelConfig;

export interface ChallengeMsg {
  k: Kind.Challenge;
  v: number;
  nonce: Uint8Array;
  auth: boolean;
  /** The model the coordinator trains; the worker answers with the signature its own code derives. */
  model: WireModelConfig;
}
export interface HelloMsg {
  k: Kind.Hello;
  v: number;
  signature: string;
  backend: string;
  host: string;
  pid: number;
  /** HMAC-SHA256(token, nonce) when the coordinator asks for auth. */
  proof?: Uint8Array;
}
export interface WelcomeMsg {
  k: Kind.Welcome;
  workerId: number;
  seed: number;
  /** Send gradients as 16-bit floats. */
  fp16: boolean;
  /** The largest frame the coordinator will send. */
  maxPayload: number;
}
export interface ShardMsg {
  k: Kind.Shard;
  epoch: number;
  /** Drop every sample held so far (a new epoch) before adding these. */
  reset: boolean;
  ids: Uint32Array;
  images: Uint8Array;
  labels: Uint8Array;
}
export interface WeightsMsg { k: Kind.Weights; net: NetName; version: number; data: Float32Array }
export interface TaskMsg {
  k: Kind.Task;
  round: number;
  epoch: number;
  phase: PhaseName;
  /** Versions of D and G the worker must hold. */
  dVersion: number;
  gVersion: number;
  ids: Uint32Array;
}
export interface GradMsg {
  k: Kind.Grad;
  round: number;
  phase: PhaseName;
  count: number;
  loss: number;
  dReal: number;
  dFake: number;
  computeMs: number;
  /** Float32 (fp16 false) or IEEE half bits (fp16 true). */
  fp16: boolean;
  data: Float32Array | Uint16Array;
}
export interface StopMsg { k: Kind.Stop; reason: string }

export type Message = ChallengeMsg | HelloMsg | WelcomeMsg | ShardMsg | WeightsMsg | TaskMsg | GradMsg | StopMsg;

const packr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const EMPTY = new Uint8Array(0);

/**
 * Encode a message into one frame. Typed arrays are written as raw bytes; the largest one goes
 * last, as a bin32 whose bytes start at a multiple of 4 within the frame (a padding field `p`
 * shifts it there), so a receiver can view it as floats in place. The tail is copied once, into
 * the frame; only the small head goes through msgpack.
 */
export function encode(m: Message): Uint8Array {
  const fields: Record<string, unknown> = {};
  let tailKey: string | null = null;
  let tail: ArrayBufferView | null = null;
  for (const [key, val] of Object.entries(m)) {
    if (val === undefined) continue;
    if (ArrayBuffer.isView(val) && (!tail || val.byteLength > tail.byteLength)) {
      if (tail && tailKey) fields[tailKey] = bytesOf(tail);
      tailKey = key;
      tail = val;
    } else {
      fields[key] = ArrayBuffer.isView(val) ? bytesOf(val) : val;
    }
  }
  if (!tail || !tailKey) return packr.pack(fields);
  // With an empty tail the head ends in its bin8 header (0xc4 0x00); the frame uses bin32 (0xc6 +
  // u32 length) instead, 3 bytes longer.
  let head = packr.pack({ ...fields, [tailKey]: EMPTY });
  let headLen = head.length - 2 + 5;
  if (headLen % 4 !== 0) {
    // `p: ""` adds 3 bytes (fixstr key "p", empty fixstr); each pad character one more.
    const padChars = (((1 - (headLen % 4)) % 4) + 4) % 4;
    head = packr.pack({ ...fields, p: ' '.repeat(padChars), [tailKey]: EMPTY });
    headLen = head.length - 2 + 5;
  }
  const frame = new Uint8Array(headLen + tail.byteLength);
  frame.set(head.subarray(0, head.length - 2), 0);
  frame[headLen - 5] = 0xc6;
  new DataView(frame.buffer).setUint32(headLen - 4, tail.byteLength);
  frame.set(bytesOf(tail), headLen);
  return frame;
}

function fail(message: string): never {
  throw new GanError('E_MALFORMED', message);
}

/** View bytes as a typed array without copying when aligned, with one memcpy when not. */
function view<T extends Float32Array | Uint32Array | Uint16Array>(
  bin: Uint8Array,
  Ctor: { new (b: ArrayBufferLike, off: number, len: number): T; BYTES_PER_ELEMENT: number },
  field: string,
): T {
  const size = Ctor.BYTES_PER_ELEMENT;
  if (bin.byteLength % size !== 0) fail(`${field}: ${bin.byteLength} bytes is not a whole number of ${size}-byte values`);
  if (bin.byteOffset % size === 0) return new Ctor(bin.buffer, bin.byteOffset, bin.byteLength / size);
  // A fresh ArrayBuffer (not a slice, which is a view and may sit in Node's unaligned Buffer pool).
  const copy = new Uint8Array(bin.byteLength);
  copy.set(bin);
  return new Ctor(copy.buffer, 0, copy.byteLength / size);
}

type Spec = Record<string, 'uint' | 'int' | 'number' | 'string' | 'bool' | 'bin' | 'net' | 'object' | 'uint?' | 'bin?'>;

const specs: Record<Kind, Spec> = {
  [Kind.Challenge]: { v: 'uint', nonce: 'bin', auth: 'bool', model: 'object' },
  [Kind.Hello]: { v: 'uint', signature: 'string', backend: 'string', host: 'string', pid: 'uint', proof: 'bin?' },
  [Kind.Welcome]: { workerId: 'uint', seed: 'uint', fp16: 'bool', maxPayload: 'uint' },
  [Kind.Shard]: { epoch: 'uint', reset: 'bool', ids: 'bin', images: 'bin', labels: 'bin' },
  [Kind.Weights]: { net: 'net', version: 'uint', data: 'bin' },
  [Kind.Task]: { round: 'uint', epoch: 'uint', phase: 'net', dVersion: 'uint', gVersion: 'uint', ids: 'bin' },
  [Kind.Grad]: {
    round: 'uint', phase: 'net', count: 'uint', loss: 'number', dReal: 'number', dFake: 'number',
    computeMs: 'number', fp16: 'bool', data: 'bin',
  },
  [Kind.Stop]: { reason: 'string' },
};

function checkField(kind: Kind, key: string, type: Spec[string], val: unknown): void {
  const where = `${Kind[kind]}.${key}`;
  if (type.endsWith('?')) {
    if (val === undefined || val === null) return;
    type = type.slice(0, -1) as Spec[string];
  }
  switch (type) {
    case 'uint':
      if (!Number.isSafeInteger(val) || (val as number) < 0) fail(`${where}: expected a non-negative integer`);
      return;
    case 'int':
      if (!Number.isSafeInteger(val)) fail(`${where}: expected an integer`);
      return;
    case 'number':
      // NaN losses are legal (G phase has no D(x)); only their type is checked here.
      if (typeof val !== 'number') fail(`${where}: expected a number`);
      return;
    case 'string':
      if (typeof val !== 'string' || val.length > 4096) fail(`${where}: expected a string of at most 4096 characters`);
      return;
    case 'bool':
      if (typeof val !== 'boolean') fail(`${where}: expected a boolean`);
      return;
    case 'bin':
      if (!(val instanceof Uint8Array)) fail(`${where}: expected binary data`);
      return;
    case 'net':
      if (val !== 'D' && val !== 'G') fail(`${where}: expected "D" or "G"`);
      return;
    case 'object':
      if (typeof val !== 'object' || val === null || Array.isArray(val) || val instanceof Uint8Array) fail(`${where}: expected a map`);
      return;
  }
}

/** Decode and validate one frame. Throws GanError E_MALFORMED with a clear message. */
export function decode(frame: Uint8Array): Message {
  if (frame.byteLength === 0) fail('empty frame');
  let raw: unknown;
  try {
    raw = packr.unpack(frame);
  } catch (e) {
    fail(`not valid msgpack (${(e as Error).message.slice(0, 80)})`);
  }
  if (typeof raw !== 'object' || raw === null || Array.isArray(raw) || raw instanceof Uint8Array) fail('frame is not a msgpack map');
  const m = raw as Record<string, unknown>;
  if (m.p !== undefined && (typeof m.p !== 'string' || m.p.length > 3)) fail('padding field "p" must be a string of at most 3 characters');
  delete m.p;
  const kind = m.k;
  if (typeof kind !== 'number' || !(kind in specs)) fail(`unknown message kind ${JSON.stringify(kind)}`);
  const spec = specs[kind as Kind];
  for (const key of Object.keys(m)) {
    if (key !== 'k' && key !== 'p' && !(key in spec)) fail(`${Kind[kind as Kind]}: unknown field "${key.slice(0, 40)}"`);
  }
  for (const [key, type] of Object.entries(spec)) checkField(kind as Kind, key, type, m[key]);

  switch (kind as Kind) {
    case Kind.Shard: {
      const ids = view(m.ids as Uint8Array, Uint32Array, 'Shard.ids');
      const images = m.images as Uint8Array;
      const labels = m.labels as Uint8Array;
      if (images.byteLength !== ids.length * 784) fail(`Shard: ${images.byteLength} image bytes for ${ids.length} samples`);
      if (labels.byteLength !== ids.length) fail(`Shard: ${labels.byteLength} labels for ${ids.length} samples`);
      return { ...(m as object), ids, images, labels } as ShardMsg;
    }
    case Kind.Weights:
      return { ...(m as object), data: view(m.data as Uint8Array, Float32Array, 'Weights.data') } as WeightsMsg;
    case Kind.Task:
      return { ...(m as object), ids: view(m.ids as Uint8Array, Uint32Array, 'Task.ids') } as TaskMsg;
    case Kind.Grad: {
      const bin = m.data as Uint8Array;
      const data = m.fp16 ? view(bin, Uint16Array, 'Grad.data') : view(bin, Float32Array, 'Grad.data');
      return { ...(m as object), data } as GradMsg;
    }
    case Kind.Challenge: {
      const problem = modelConfigProblem(m.model);
      if (problem) fail(`Challenge.model: not a valid model configuration (${problem})`);
      return m as unknown as ChallengeMsg;
    }
    default:
      return m as unknown as Message;
  }
}

/**
 * Float32 -> IEEE 754 half (round to nearest even), for 16-bit gradient upload. `math` is the
 * addon (the default when built) or null for this JavaScript loop, the reference it matches bit
 * for bit.
 */
export function toHalf(src: Float32Array, dst: Uint16Array = new Uint16Array(src.length), math: NativeMath | null = nativeMath()): Uint16Array {
  // A shorter dst drops the excess here, as typed-array stores do below; the addon refuses it.
  if (math && dst.length >= src.length) {
    math.floatToHalf(src, dst);
    return dst;
  }
  const u32 = new Uint32Array(src.buffer, src.byteOffset, src.length);
  for (let i = 0; i < src.length; i++) {
    const x = u32[i]!;
    const sign = (x >>> 16) & 0x8000;
    const exp = (x >>> 23) & 0xff;
    let mant = x & 0x7fffff;
    if (exp === 0xff) {
      dst[i] = sign | 0x7c00 | (mant ? 0x200 : 0);
      continue;
    }
    const e = exp - 127 + 15;
    if (e >= 0x1f) {
      dst[i] = sign | 0x7c00;
    } else if (e <= 0) {
      if (e < -10) {
        dst[i] = sign;
      } else {
        mant |= 0x800000;
        const shift = 14 - e;
        let h = mant >>> shift;
        const rem = mant & ((1 << shift) - 1);
        const half = 1 << (shift - 1);
        if (rem > half || (rem === half && (h & 1))) h++;
        dst[i] = sign | h;
      }
    } else {
      let h = (e << 10) | (mant >>> 13);
      const rem = mant & 0x1fff;
      if (rem > 0x1000 || (rem === 0x1000 && (h & 1))) h++;
      dst[i] = sign | h;
    }
  }
  return dst;
}

const halfTable = (() => {
  const t = new Float32Array(65536);
  for (let h = 0; h < 65536; h++) {
    const sign = h & 0x8000 ? -1 : 1;
    const e = (h >>> 10) & 0x1f;
    const m = h & 0x3ff;
    t[h] = e === 0 ? sign * m * 2 ** -24 : e === 31 ? (m ? NaN : sign * Infinity) : sign * (1 + m / 1024) * 2 ** (e - 15);
  }
  return t;
})();

/** IEEE half bits -> float value. */
export function halfToFloat(h: number): number {
  return halfTable[h & 0xffff]!;
}

export function fromHalf(src: Uint16Array, dst: Float32Array = new Float32Array(src.length), math: NativeMath | null = nativeMath()): Float32Array {
  if (math && dst.length >= src.length) {
    math.halfToFloat(src, dst);
    return dst;
  }
  for (let i = 0; i < src.length; i++) dst[i] = halfTable[src[i]!]!;
  return dst;
}
