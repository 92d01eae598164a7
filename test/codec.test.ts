import { describe, expect, it } from 'vitest';
import { Packr } from 'msgpackr';
import { COORDINATOR, Kind, NOBODY, PROTOCOL_VERSION, type Message, decode, encode } from '../shared/wire/codec.js';
import { fromHalf, halfToFloat, toHalf } from '../shared/numerics/half.js';
import { GanError } from '../shared/wire/errors.js';
import { defaultModelConfig } from '../shared/compute/model.js';

// The same msgpack settings as the codec, so hand-built frames differ from real ones only where a test means them to.
const raw = new Packr({ useRecords: false, moreTypes: false, variableMapSize: true });
const pack = (v: unknown): Buffer => Buffer.from(raw.pack(v));

function randomFloats(n: number, seed = 1): Float32Array {
  let s = seed >>> 0;
  const out = new Float32Array(n);
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = ((s / 2 ** 32) * 2 - 1) * 10 ** ((s % 13) - 6);
  }
  return out;
}

const nShard = 3;
const samples: Message[] = [
  { k: Kind.Challenge, v: PROTOCOL_VERSION, nonce: new Uint8Array(32).map((_, i) => i * 7), auth: true, model: { ...defaultModelConfig } },
  { k: Kind.Hello, v: PROTOCOL_VERSION, signature: 'gan;G:100x256;D:784x1024', backend: 'wasm (XNNPACK)', host: 'h1', pid: 4242, proof: new Uint8Array(32).fill(9) },
  { k: Kind.Hello, v: PROTOCOL_VERSION, signature: 'cgan;x', backend: 'cpu', host: 'h2', pid: 1 },
  { k: Kind.Welcome, workerId: 3, seed: 2 ** 32 - 1, wire: '16', maxPayload: 16 * 1024 * 1024 },
  {
    k: Kind.Shard, epoch: 2, reset: true, ids: new Uint32Array([5, 0, 4_000_000_000]),
    images: new Uint8Array(nShard * 784).map((_, i) => i % 256), labels: new Uint8Array([1, 9, 0]),
  },
  { k: Kind.Shard, epoch: 0, reset: false, ids: new Uint32Array(0), images: new Uint8Array(0), labels: new Uint8Array(0) },
  { k: Kind.Weights, net: 'G', version: 17, data: randomFloats(1001) },
  { k: Kind.Weights, net: 'D', version: 0, seeded: true, data: new Float32Array(0) },
  { k: Kind.Task, round: 12, epoch: 1, phase: 'D', dVersion: 12, gVersion: 11, ids: new Uint32Array([7, 8, 9, 10]) },
  { k: Kind.Report, round: 12, phase: 'D', count: 50, loss: 1.25, dReal: 0.5, dFake: 0.25, computeMs: 12.5 },
  { k: Kind.Report, round: 3, phase: 'G', count: 1, loss: 0.7, dReal: NaN, dFake: 0.1, computeMs: 0 },
  { k: Kind.Reduce, round: 3, phase: 'G', attempt: 2, total: 400, chunk: 65536, prev: COORDINATOR, next: 4, nextUrl: 'ws://10.0.0.4:40123', partial: true },
  { k: Kind.Reduce, round: 3, phase: 'D', attempt: 0, total: 100, chunk: 1024, prev: NOBODY, next: COORDINATOR, nextUrl: '', partial: false },
  {
    k: Kind.Reduce, round: 3, phase: 'D', attempt: 1, total: 30, chunk: 1024, prev: COORDINATOR, next: COORDINATOR, nextUrl: '', partial: true,
    group: new Uint32Array([1, 4, 9]), counts: new Uint32Array([10, 10, 5]), urls: ['ws://a:1', 'ws://b:2', 'ws://c:3'], owners: new Uint16Array([0xffff, 0, 1, 2, 0]),
  },
  { k: Kind.Chunk, round: 12, phase: 'D', attempt: 0, offset: 65536, partial: false, fp16: false, data: randomFloats(333, 2) },
  { k: Kind.Chunk, round: 3, phase: 'G', attempt: 1, offset: 0, partial: false, fp16: true, data: new Uint16Array([0, 0x3c00, 0x8000, 0x7bff, 1]) },
  { k: Kind.Chunk, round: 3, phase: 'G', attempt: 1, offset: 1024, partial: true, fp16: false, data: randomFloats(17, 5) },
  { k: Kind.Chunk, round: 3, phase: 'G', attempt: 1, offset: 1024, partial: true, fp16: true, data: new Uint16Array([0x3c00, 7]) },
  { k: Kind.Chunk, round: 5, phase: 'D', attempt: 0, offset: 0, partial: false, fp16: false, scales: new Float32Array([0.5, 2 ** -20]), data: new Int8Array([127, -127, 0, 3, -1]) },
  { k: Kind.WeightsChunk, net: 'G', version: 4, attempt: 0, offset: 512, fp16: true, data: new Uint16Array([1, 2, 3]) },
  { k: Kind.WeightsChunk, net: 'D', version: 9, attempt: 2, offset: 0, scales: new Float32Array([1e-4]), data: new Int8Array([1, -2, 127]) },
  { k: Kind.WeightsChunk, net: 'D', version: 9, attempt: 0, offset: 2048, data: randomFloats(100, 6) },
  { k: Kind.PeerLost, peer: 3, code: 'E_CONNECT', reason: 'link to worker 3 closed (1006)' },
  { k: Kind.PeerHello, v: PROTOCOL_VERSION, workerId: 2, signature: 'gan;x', proof: new Uint8Array(32).fill(1), nonce: new Uint8Array(32).fill(2) },
  { k: Kind.PeerHello, v: PROTOCOL_VERSION, workerId: 0, signature: 'gan;x', nonce: new Uint8Array(32) },
  { k: Kind.PeerWelcome, workerId: 5, proof: new Uint8Array(32).fill(3) },
  { k: Kind.Hello, v: PROTOCOL_VERSION, signature: 'gan;x', backend: 'native', host: 'h3', pid: 7, peerPort: 40123, peerHost: 'gpu-box.lan' },
  { k: Kind.Observe, v: PROTOCOL_VERSION, proof: new Uint8Array(32).fill(4) },
  { k: Kind.Observe, v: PROTOCOL_VERSION },
  { k: Kind.Update, body: new TextEncoder().encode('{"type":"delta"}') },
  { k: Kind.Grid, run: 0, name: 'epoch-001.png', png: new Uint8Array([0x89, 0x50, 0x4e, 0x47]) },
  { k: Kind.Refused, code: 'E_BACKOFF', reason: 'dropped for timeouts 2 times; come back in 2 s', retryAfterMs: 2000 },
  { k: Kind.Stop, reason: 'run finished' },
  { k: Kind.Stop, reason: 'preempted by SIGUSR1 at round 44', resumes: true },
  { k: Kind.Hello, v: PROTOCOL_VERSION, signature: 'gan;x', backend: 'native', host: 'h4', pid: 8, sameHost: true },
  { k: Kind.Welcome, workerId: 2, seed: 7, wire: 'fp32', maxPayload: 1 << 20, region: '/dev/shm/gan-ddp-1-abc/r', slot: '/dev/shm/gan-ddp-1-abc/s' },
  { k: Kind.Reduce, round: 1, phase: 'D', attempt: 0, total: 20, chunk: 65536, prev: NOBODY, next: COORDINATOR, nextUrl: '', partial: false, slot: true },
  { k: Kind.SameHost, proof: new Uint8Array(32).fill(5) },
  { k: Kind.SameHost, reason: 'EACCES: gan_native.mapFile: open /dev/shm/x: Permission denied' },
  { k: Kind.Posted, round: 4, phase: 'G', attempt: 1, values: 12345, fp16: true },
];

/** Typed arrays as (type, bytes) so that equality also checks the element type that comes out. */
function normalise(m: object): Record<string, unknown> {
  const out: Record<string, unknown> = {};
  for (const [k, v] of Object.entries(m)) {
    if (v === undefined) continue;
    if (ArrayBuffer.isView(v)) {
      const type = v instanceof Buffer ? 'Uint8Array' : v.constructor.name;
      out[k] = { type, hex: Buffer.from(v.buffer, v.byteOffset, v.byteLength).toString('hex') };
    } else out[k] = v;
  }
  return out;
}

function rejects(frame: Uint8Array, pattern: RegExp): GanError {
  let err: unknown = null;
  try {
    decode(frame);
  } catch (e) {
    err = e;
  }
  expect(err, `expected ${pattern} to be rejected`).toBeInstanceOf(GanError);
  const g = err as GanError;
  expect(g.code).toBe('E_MALFORMED');
  expect(g.message).toMatch(pattern);
  return g;
}

function bitsOf(a: Float32Array): Uint32Array {
  return new Uint32Array(a.buffer, a.byteOffset, a.length);
}

describe('codec round trip', () => {
  it('covers every message kind', () => {
    const kinds = new Set(samples.map((m) => m.k));
    const all = Object.values(Kind).filter((v): v is Kind => typeof v === 'number');
    expect([...kinds].sort()).toEqual(all.sort());
  });

  for (const m of samples) {
    it(`${Kind[m.k]} comes back with every field equal and typed arrays of the same type`, () => {
      const back = decode(encode(m));
      expect(normalise(back)).toEqual(normalise(m));
    });
  }

  it('Float32 payloads come out as Float32Array with the exact bits sent', () => {
    const special = new Float32Array([
      0, -0, 1, -1, 1.4e-45, -1.4e-45, 1.1754942e-38, 1.17549435e-38, 3.4028235e38, -3.4028235e38,
      Infinity, -Infinity, 1e-30, 123456.789, Math.PI, 2 ** -126 * 0.5,
    ]);
    const data = new Float32Array(special.length + 4096);
    data.set(special);
    data.set(randomFloats(4096, 7), special.length);
    for (const m of [
      { k: Kind.Weights, net: 'D', version: 1, data } as const,
      { k: Kind.Chunk, round: 0, phase: 'G', attempt: 0, offset: 0, partial: true, fp16: false, data } as const,
      { k: Kind.WeightsChunk, net: 'G', version: 3, attempt: 1, offset: 0, data } as const,
    ]) {
      const back = decode(encode(m));
      expect(back.k).toBe(m.k);
      const got = (back as { data: unknown }).data;
      expect(got).toBeInstanceOf(Float32Array);
      expect(Array.from(bitsOf(got as Float32Array))).toEqual(Array.from(bitsOf(data)));
    }
    // -0 survives as -0, not +0: the bit comparison above would not distinguish a lossy path that kept values equal.
    const back = decode(encode({ k: Kind.Weights, net: 'D', version: 1, data: new Float32Array([-0]) })) as { data: Float32Array };
    expect(Object.is(back.data[0], -0)).toBe(true);
  });

  it('a view of a larger typed array encodes only its own elements', () => {
    const big = randomFloats(100, 3);
    const part = big.subarray(10, 20);
    const back = decode(encode({ k: Kind.Weights, net: 'G', version: 0, data: part })) as { data: Float32Array };
    expect(Array.from(back.data)).toEqual(Array.from(part));
  });

  it('frames from the encoder put the float payload at a multiple of 4 for every payload length', () => {
    for (let n = 0; n < 70; n++) {
      const data = randomFloats(n, n + 1);
      const frame = encode({ k: Kind.Weights, net: 'G', version: n * 1000, data });
      const ab = new ArrayBuffer(frame.length);
      new Uint8Array(ab).set(frame);
      const back = decode(new Uint8Array(ab)) as { data: Float32Array };
      expect(back.data.buffer, `n=${n}`).toBe(ab);
      expect(back.data.byteOffset % 4).toBe(0);
      expect(Array.from(back.data)).toEqual(Array.from(data));
    }
  });

  it('decoding at an aligned offset is zero-copy; at an unaligned offset the values are still right', () => {
    const data = randomFloats(257, 11);
    const frame = encode({ k: Kind.Weights, net: 'D', version: 5, data });
    for (const offset of [0, 8, 64]) {
      const ab = new ArrayBuffer(frame.length + 128);
      new Uint8Array(ab, offset, frame.length).set(frame);
      const back = decode(new Uint8Array(ab, offset, frame.length)) as { data: Float32Array };
      expect(back.data.buffer).toBe(ab);
      // A view into the frame: a change to the frame bytes shows through.
      const before = back.data[0];
      const bytes = new Uint8Array(ab);
      bytes[back.data.byteOffset] = bytes[back.data.byteOffset]! ^ 0xff;
      expect(back.data[0]).not.toBe(before);
    }
    for (const offset of [1, 2, 3, 5]) {
      const ab = new ArrayBuffer(frame.length + 8);
      new Uint8Array(ab, offset, frame.length).set(frame);
      const back = decode(new Uint8Array(ab, offset, frame.length)) as { data: Float32Array };
      expect(back.data).toBeInstanceOf(Float32Array);
      expect(back.data.byteOffset % 4).toBe(0);
      expect(Array.from(bitsOf(back.data))).toEqual(Array.from(bitsOf(data)));
    }
    // Task ids and fp16 gradients go through the same path.
    const ids = new Uint32Array([1, 2, 3, 0xffffffff]);
    const t = encode({ k: Kind.Task, round: 1, epoch: 0, phase: 'G', dVersion: 1, gVersion: 0, ids });
    const ab = new ArrayBuffer(t.length + 1);
    new Uint8Array(ab, 1).set(t);
    expect(Array.from((decode(new Uint8Array(ab, 1, t.length)) as { ids: Uint32Array }).ids)).toEqual(Array.from(ids));
  });
});

describe('codec rejects malformed frames with E_MALFORMED and a message naming the problem', () => {
  const weights = encode({ k: Kind.Weights, net: 'D', version: 5, data: randomFloats(64) });
  const task = { k: Kind.Task, round: 1, epoch: 0, phase: 'D', dVersion: 1, gVersion: 0, ids: Buffer.alloc(8) };

  it('an empty frame', () => {
    rejects(new Uint8Array(0), /empty frame/);
  });

  it('truncated frames, at every cut point', () => {
    for (let cut = 1; cut < weights.length; cut++) {
      const g = rejects(weights.subarray(0, cut), /./);
      expect(g.message, `cut at ${cut}`).toMatch(/not valid msgpack|end of|truncat|whole number|unknown message kind|expected/i);
    }
    rejects(weights.subarray(0, weights.length - 1), /not valid msgpack/);
  });

  it('trailing bytes after the message', () => {
    rejects(Buffer.concat([weights, Buffer.from([0x01, 0x02])]), /not valid msgpack/);
  });

  it('garbage bytes', () => {
    let s = 99;
    for (let i = 0; i < 200; i++) {
      const len = 1 + (i % 40);
      const junk = new Uint8Array(len).map(() => ((s = (Math.imul(s, 1103515245) + 12345) >>> 0) >>> 24));
      let decoded: Message | null = null;
      try {
        decoded = decode(junk);
      } catch (e) {
        expect(e).toBeInstanceOf(GanError);
        expect((e as GanError).code).toBe('E_MALFORMED');
      }
      expect(decoded, `junk ${Buffer.from(junk).toString('hex')} decoded`).toBeNull();
    }
    rejects(Buffer.from('hello, world'), /not valid msgpack|not a msgpack map|unknown message kind/);
  });

  it('a msgpack value that is not a map', () => {
    for (const v of [[1, 2, 3], 42, 'Weights', null, true, Buffer.from([1, 2, 3, 4])]) {
      rejects(pack(v), /not a msgpack map/);
    }
  });

  it('seeded weights that are not version 0 or carry data', () => {
    rejects(encode({ k: Kind.Weights, net: 'D', version: 3, seeded: true, data: new Float32Array(0) }), /seeded weights are version 0 and carry no data/);
    rejects(encode({ k: Kind.Weights, net: 'D', version: 0, seeded: true, data: new Float32Array(4) }), /seeded weights are version 0 and carry no data/);
  });

  it('unknown, missing or non-numeric kinds', () => {
    rejects(pack({ k: 99, reason: 'x' }), /unknown message kind 99/);
    rejects(pack({ k: 0 }), /unknown message kind 0/);
    rejects(pack({ k: '8', reason: 'x' }), /unknown message kind "8"/);
    rejects(pack({ reason: 'x' }), /unknown message kind/);
  });

  it('unknown fields', () => {
    rejects(pack({ k: Kind.Stop, reason: 'x', extra: 1 }), /Stop: unknown field "extra"/);
    rejects(pack({ ...task, idz: Buffer.alloc(4) }), /Task: unknown field "idz"/);
  });

  it('missing fields', () => {
    rejects(pack({ k: Kind.Stop }), /Stop\.reason/);
    rejects(pack({ k: Kind.Stop, reason: 'x', resumes: 1 }), /Stop\.resumes: expected a boolean/);
    const { round: _r, ...noRound } = task;
    rejects(pack(noRound), /Task\.round/);
  });

  it('wrong-typed fields', () => {
    rejects(pack({ ...task, round: '1' }), /Task\.round: expected a non-negative integer/);
    rejects(pack({ ...task, round: -1 }), /Task\.round: expected a non-negative integer/);
    rejects(pack({ ...task, round: 1.5 }), /Task\.round: expected a non-negative integer/);
    rejects(pack({ ...task, phase: 'X' }), /Task\.phase: expected "D" or "G"/);
    rejects(pack({ ...task, ids: [1, 2] }), /Task\.ids: expected binary data/);
    rejects(pack({ k: Kind.Weights, net: 'D', version: 1, data: 3 }), /Weights\.data: expected binary data/);
    rejects(pack({ k: Kind.Welcome, workerId: 0, seed: 1, wire: 16, maxPayload: 10 }), /Welcome\.wire: expected a string/);
    rejects(pack({ k: Kind.Report, round: 0, phase: 'D', count: 1, loss: '0.5', dReal: 0, dFake: 0, computeMs: 0 }), /Report\.loss: expected a number/);
    rejects(pack({ k: Kind.Reduce, round: 0, phase: 'D', attempt: 0, total: 1, chunk: 8, prev: 1.5, next: -2, nextUrl: '', partial: false }), /Reduce\.prev: expected an integer/);
    rejects(pack({ k: Kind.Hello, v: 1, signature: 's', backend: 'b', host: 'h', pid: 1, proof: 'abc' }), /Hello\.proof: expected binary data/);
    rejects(pack({ k: Kind.Challenge, v: 1, nonce: Buffer.alloc(4), auth: false, model: [1] }), /Challenge\.model: expected a map/);
  });

  it('oversize strings and padding', () => {
    rejects(pack({ k: Kind.Stop, reason: 'x'.repeat(5000) }), /Stop\.reason: expected a string of at most 4096/);
    rejects(pack({ k: Kind.Stop, p: '    ', reason: 'x' }), /padding field "p"/);
  });

  it('payloads whose size does not fit their element type or each other', () => {
    rejects(pack({ k: Kind.Weights, net: 'D', version: 1, data: Buffer.alloc(5) }), /Weights\.data: 5 bytes is not a whole number of 4-byte values/);
    rejects(pack({ ...task, ids: Buffer.alloc(6) }), /Task\.ids: 6 bytes/);
    rejects(pack({ k: Kind.Chunk, round: 0, phase: 'D', attempt: 0, offset: 0, partial: false, fp16: true, data: Buffer.alloc(3) }), /Chunk\.data: 3 bytes is not a whole number of 2-byte values/);
    rejects(pack({ k: Kind.Chunk, round: 0, phase: 'D', attempt: 0, offset: 0, partial: true, fp16: true, scales: Buffer.alloc(4), data: Buffer.alloc(4) }), /8-bit values \(scales\) cannot also be fp16/);
    rejects(pack({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: 0, scales: Buffer.alloc(3), data: Buffer.alloc(4) }), /WeightsChunk\.scales: 3 bytes is not a whole number of 4-byte values/);
    rejects(pack({ k: Kind.Shard, epoch: 0, reset: true, ids: Buffer.alloc(8), images: Buffer.alloc(784), labels: Buffer.alloc(2) }), /Shard: 784 image bytes for 2 samples/);
    rejects(pack({ k: Kind.Shard, epoch: 0, reset: true, ids: Buffer.alloc(4), images: Buffer.alloc(784), labels: Buffer.alloc(2) }), /Shard: 2 labels for 1 samples/);
  });

  it('a sharded group whose fields are incomplete, of different lengths, out of id order, or with an owner outside it', () => {
    const base = { k: Kind.Reduce, round: 0, phase: 'D', attempt: 0, total: 9, chunk: 8, prev: NOBODY, next: COORDINATOR, nextUrl: '', partial: true };
    const u32 = (...x: number[]) => Buffer.from(new Uint32Array(x).buffer);
    const u16 = (...x: number[]) => Buffer.from(new Uint16Array(x).buffer);
    const group = { group: u32(1, 2), counts: u32(4, 5), urls: ['ws://a:1', 'ws://b:2'], owners: u16(0, 1, 0xffff) };
    expect(() => decode(pack({ ...base, ...group }))).not.toThrow();
    rejects(pack({ ...base, ...group, urls: undefined }), /needs group, counts, urls, owners together/);
    rejects(pack({ ...base, ...group, counts: u32(4) }), /a group of 2 members with 1 counts/);
    rejects(pack({ ...base, ...group, group: u32(2, 1) }), /not in increasing id order/);
    rejects(pack({ ...base, ...group, group: u32(1), counts: u32(4), urls: ['ws://a:1'] }), /a group of 1 members/);
    rejects(pack({ ...base, ...group, owners: u16(0, 2) }), /owner 2 is not in the group of 2/);
    rejects(pack({ ...base, ...group, urls: ['ws://a:1', 7] }), /Reduce\.urls: expected a list of at most 4096 strings/);
  });

  it('an invalid model configuration in a Challenge', () => {
    const ok = { k: Kind.Challenge, v: 1, nonce: Buffer.alloc(32), auth: false, model: { ...defaultModelConfig } };
    expect(() => decode(pack(ok))).not.toThrow();
    for (const model of [
      { ...defaultModelConfig, kind: 'vae' },
      { ...defaultModelConfig, gHidden: [] },
      { ...defaultModelConfig, dHidden: [0, 5] },
      { ...defaultModelConfig, noiseDim: 1.5 },
      { ...defaultModelConfig, dropout: 1 },
      { ...defaultModelConfig, leak: 'x' },
    ]) {
      rejects(pack({ ...ok, model }), /Challenge\.model: not a valid model configuration/);
    }
  });
});

describe('toHalf / fromHalf', () => {
  it('every half value survives half -> float -> half exactly (NaNs stay NaN, sign and payload not kept)', () => {
    const all = new Uint16Array(65536).map((_, i) => i);
    const back = toHalf(fromHalf(all));
    for (let h = 0; h < 65536; h++) {
      const isNan = (h & 0x7c00) === 0x7c00 && (h & 0x3ff) !== 0;
      if (isNan) {
        expect(Number.isNaN(halfToFloat(back[h]!)), `h=${h.toString(16)}`).toBe(true);
      } else if (back[h] !== h) {
        expect.fail(`half 0x${h.toString(16)} came back as 0x${back[h]!.toString(16)}`);
      }
    }
  });

  it('rounds normal values to the nearest half, within relative 2^-11', () => {
    const xs = randomFloats(20000, 5).map((x) => x % 60000);
    const back = fromHalf(toHalf(xs));
    for (let i = 0; i < xs.length; i++) {
      const x = xs[i]!;
      const y = back[i]!;
      if (Math.abs(x) < 2 ** -14) continue;
      expect(Math.abs(y - x), `x=${x} -> ${y}`).toBeLessThanOrEqual(Math.abs(x) * 2 ** -11);
    }
  });

  it('rounds ties to even', () => {
    // 1 + 2^-11 is halfway between 1 and 1 + 2^-10; 1 + 3*2^-11 is halfway between 1 + 2^-10 and 1 + 2^-9.
    const h = toHalf(new Float32Array([1 + 2 ** -11, 1 + 3 * 2 ** -11, 2 ** -25, 3 * 2 ** -25]));
    expect(Array.from(h)).toEqual([0x3c00, 0x3c02, 0x0000, 0x0002]);
  });

  it('handles infinities, NaN, overflow and underflow', () => {
    const h = toHalf(new Float32Array([Infinity, -Infinity, NaN, 65504, 65519, 65520, 1e6, -1e6, 3.4e38, 1e-10, -1e-10, 0, -0]));
    expect(Array.from(h.subarray(0, 2))).toEqual([0x7c00, 0xfc00]);
    expect(Number.isNaN(halfToFloat(h[2]!))).toBe(true);
    expect(halfToFloat(h[3]!)).toBe(65504);
    expect(halfToFloat(h[4]!)).toBe(65504);
    expect(Array.from(h.subarray(5, 9))).toEqual([0x7c00, 0x7c00, 0xfc00, 0x7c00]);
    expect(Array.from(h.subarray(9))).toEqual([0x0000, 0x8000, 0x0000, 0x8000]);
  });

  it('maps small values to subnormal halves within half an ulp (2^-25)', () => {
    const xs = new Float32Array(2000).map((_, i) => (i - 1000) * 2 ** -24 * 0.77);
    const back = fromHalf(toHalf(xs));
    for (let i = 0; i < xs.length; i++) expect(Math.abs(back[i]! - xs[i]!)).toBeLessThanOrEqual(2 ** -25);
    expect(fromHalf(toHalf(new Float32Array([2 ** -24, 2 ** -20, 2 ** -14])))).toEqual(new Float32Array([2 ** -24, 2 ** -20, 2 ** -14]));
  });

  it('writes into the given buffer and reads a view of a larger array', () => {
    const src = new Float32Array([9, 1, 2, 3, 9]).subarray(1, 4);
    const dst = new Uint16Array(3);
    expect(toHalf(src, dst)).toBe(dst);
    expect(Array.from(fromHalf(dst))).toEqual([1, 2, 3]);
  });
});
