/**
 * Frames: how a protocol message (protocol.ts) becomes bytes and back. Tensors cross as raw
 * little-endian bytes in msgpack `bin` fields and come out as typed-array views of the received
 * frame when aligned (a single memcpy when not).
 *
 * Invariants:
 * - decode() checks the kind and every field's type before anything uses the message; sizes
 *   against the model are checked by the receiver, which knows the model.
 * - Encoders are stateless (no msgpack records), so a reconnecting peer needs no shared state.
 * - The same module runs in Node and in a browser: no Buffer, no Node imports.
 */
import { Packr } from 'msgpackr';
import { GanError } from './errors.js';
import { modelConfigProblem } from '../compute/model.js';
import { type ChallengeMsg, type FieldType, Kind, type LocalSteps, type Message, type ReduceMsg, SPECS, type ShardMsg, type TaskMsg, type WeightsMsg } from './protocol.js';
import { DIGIT_PIXELS } from '../data/digits.js';

export * from './protocol.js';

const packr = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });

function bytesOf(a: ArrayBufferView): Uint8Array {
  return new Uint8Array(a.buffer, a.byteOffset, a.byteLength);
}

const EMPTY = new Uint8Array(0);

/**
 * Room for a frame that is about to be filled completely. Node's Buffer.allocUnsafe skips the
 * zero-fill a Uint8Array pays (three times the cost of the copy for a 256 KiB chunk); a browser
 * has no Buffer and zero-fills.
 */
const allocFrame: (n: number) => Uint8Array = (globalThis as { Buffer?: { allocUnsafe(n: number): Uint8Array } }).Buffer?.allocUnsafe
  ? (n) => (globalThis as unknown as { Buffer: { allocUnsafe(n: number): Uint8Array } }).Buffer.allocUnsafe(n)
  : (n) => new Uint8Array(n);

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
  const frame = allocFrame(headLen + tail.byteLength);
  frame.set(head.subarray(0, head.length - 2), 0);
  frame[headLen - 5] = 0xc6;
  new DataView(frame.buffer, frame.byteOffset, frame.byteLength).setUint32(headLen - 4, tail.byteLength);
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

function checkField(kind: Kind, key: string, type: FieldType, val: unknown): void {
  const where = `${Kind[kind]}.${key}`;
  if (type.endsWith('?')) {
    if (val === undefined || val === null) return;
    type = type.slice(0, -1) as FieldType;
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
    case 'strings':
      if (!Array.isArray(val) || val.length > 4096 || val.some((x) => typeof x !== 'string' || x.length > 4096)) fail(`${where}: expected a list of at most 4096 strings`);
      return;
  }
}

/** A Chunk's or WeightsChunk's values as typed arrays: float32, half bits, signed bytes with their float32 scales, or an XOR delta's bytes (of float32 or, with fp16, of halves). */
function wireValues(m: Record<string, unknown>, what: string): { data: Float32Array | Uint16Array | Int8Array | Uint8Array; scales?: Float32Array } {
  const bin = m.data as Uint8Array;
  if (m.xor) {
    if (m.scales !== undefined && m.scales !== null) fail(`${what}: an XOR delta (xor) cannot also be 8-bit`);
    return { data: bin };
  }
  if (m.scales !== undefined && m.scales !== null) {
    if (m.fp16) fail(`${what}: 8-bit values (scales) cannot also be fp16`);
    return { data: new Int8Array(bin.buffer, bin.byteOffset, bin.byteLength), scales: view(m.scales as Uint8Array, Float32Array, `${what}.scales`) };
  }
  return { data: m.fp16 ? view(bin, Uint16Array, `${what}.data`) : view(bin, Float32Array, `${what}.data`) };
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
  if (typeof kind !== 'number' || !(kind in SPECS)) fail(`unknown message kind ${JSON.stringify(kind)}`);
  const spec = SPECS[kind as Kind];
  for (const key of Object.keys(m)) {
    if (key !== 'k' && key !== 'p' && !(key in spec)) fail(`${Kind[kind as Kind]}: unknown field "${key.slice(0, 40)}"`);
  }
  for (const [key, type] of Object.entries(spec)) checkField(kind as Kind, key, type, m[key]);

  switch (kind as Kind) {
    case Kind.Shard: {
      const ids = view(m.ids as Uint8Array, Uint32Array, 'Shard.ids');
      const images = m.images as Uint8Array;
      const labels = m.labels as Uint8Array;
      if (images.byteLength !== ids.length * DIGIT_PIXELS) fail(`Shard: ${images.byteLength} image bytes for ${ids.length} samples`);
      if (labels.byteLength !== ids.length) fail(`Shard: ${labels.byteLength} labels for ${ids.length} samples`);
      return { ...(m as object), ids, images, labels } as ShardMsg;
    }
    case Kind.Weights:
      if (m.seeded && (m.version !== 0 || (m.data as Uint8Array).byteLength !== 0)) fail('Weights: seeded weights are version 0 and carry no data');
      return { ...(m as object), data: view(m.data as Uint8Array, Float32Array, 'Weights.data') } as WeightsMsg;
    case Kind.Task:
      return { ...(m as object), ids: view(m.ids as Uint8Array, Uint32Array, 'Task.ids') } as TaskMsg;
    case Kind.Reduce:
      return reducePlan(m);
    case Kind.Chunk:
    case Kind.WeightsChunk:
      return { ...(m as object), ...wireValues(m, Kind[kind as Kind]) } as Message;
    case Kind.Welcome: {
      const problem = m.local === undefined || m.local === null ? null : localStepsProblem(m.local as Record<string, unknown>);
      if (problem) fail(`Welcome.local: ${problem}`);
      return m as unknown as Message;
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

/** Most local steps, and samples per step (the coordinator's --batch-size limit), a Welcome may ask for. */
const LOCAL_LIMIT = { steps: 1 << 16, batch: 100_000 };

/** What is wrong with a Welcome's local steps, or null: whole counts, and rates a step can take. */
export function localStepsProblem(l: Record<string, unknown>): string | null {
  const keys: (keyof LocalSteps)[] = ['steps', 'batch', 'lrD', 'lrG', 'beta1', 'beta2', 'epsilon'];
  for (const key of Object.keys(l)) if (!(keys as string[]).includes(key)) return `unknown field "${key.slice(0, 40)}"`;
  for (const key of keys) if (typeof l[key] !== 'number' || !Number.isFinite(l[key])) return `${key} is not a finite number`;
  const x = l as unknown as LocalSteps;
  for (const key of ['steps', 'batch'] as const) if (!Number.isSafeInteger(x[key]) || x[key] < 1 || x[key] > LOCAL_LIMIT[key]) return `${key} ${x[key]} is not an integer from 1 to ${LOCAL_LIMIT[key]}`;
  if (!(x.lrD > 0 && x.lrG > 0 && x.epsilon > 0)) return 'rates and epsilon must be above 0';
  if (!(x.beta1 >= 0 && x.beta1 < 1 && x.beta2 >= 0 && x.beta2 < 1)) return 'betas must be in [0, 1)';
  return null;
}

/** A Reduce: a sharded group's four fields come together, of one length, in id order, with owners inside the group. */
function reducePlan(m: Record<string, unknown>): ReduceMsg {
  const keys = ['group', 'counts', 'urls', 'owners'] as const;
  const present = keys.filter((k) => m[k] !== undefined && m[k] !== null);
  if (present.length === 0) return m as unknown as ReduceMsg;
  if (present.length !== keys.length) fail(`Reduce: a sharded group needs ${keys.join(', ')} together, got ${present.join(', ')}`);
  const group = view(m.group as Uint8Array, Uint32Array, 'Reduce.group');
  const counts = view(m.counts as Uint8Array, Uint32Array, 'Reduce.counts');
  const owners = view(m.owners as Uint8Array, Uint16Array, 'Reduce.owners');
  const urls = m.urls as string[];
  if (group.length < 2 || counts.length !== group.length || urls.length !== group.length) fail(`Reduce: a group of ${group.length} members with ${counts.length} counts and ${urls.length} addresses`);
  for (let i = 1; i < group.length; i++) if (group[i]! <= group[i - 1]!) fail('Reduce.group: members are not in increasing id order');
  for (const o of owners) if (o !== 0xffff && o >= group.length) fail(`Reduce.owners: owner ${o} is not in the group of ${group.length}`);
  return { ...(m as object), group, counts, owners, urls } as ReduceMsg;
}
