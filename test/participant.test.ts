/**
 * A worker's part in a phase on its own, with in-memory connections: what it computes on, where
 * its gradient goes for each kind of plan, and what it refuses from the coordinator and its peers.
 */
import { afterEach, beforeAll, describe, expect, it } from 'vitest';
import { buildBatch } from '../shared/compute/batch.js';
import { GanModel } from '../shared/compute/gan.js';
import { initWeights, netLayout } from '../shared/compute/model.js';
import { digitBytes } from '../shared/data/digits.js';
import { chunkCount, chunkRange } from '../shared/numerics/chunks.js';
import { foldInto } from '../shared/numerics/fold.js';
import { type WirePrecision, encodeWeights, quantize8 } from '../shared/numerics/wire-format.js';
import { COORDINATOR, type ChunkMsg, Kind, type Message, NOBODY, type ReduceMsg, SHARD_COORDINATOR, decode, encode } from '../shared/wire/codec.js';
import { foldMany } from '../shared/numerics/fold.js';
import { Participant } from '../worker/participant.js';
import { smallData, tinyModel, useWasm, values } from './helpers.js';

const SEED = 5;
const CHUNK = 10_000;
const data = smallData(20);
const D = netLayout(tinyModel, 'D');
const G = netLayout(tinyModel, 'G');
const ids = new Uint32Array([3, 7, 11, 19]);

beforeAll(useWasm);
const made: Participant[] = [];
afterEach(() => {
  for (const p of made.splice(0)) p.dispose();
});

/** A participant holding the shard and both nets' weights (version 0); what it sends is recorded. */
async function participant(wire: WirePrecision = 'fp32', id = 5) {
  const toCoord: Message[] = [];
  const toPeer: { peer: number; url: string | null; m: Message }[] = [];
  const p = new Participant({
    model: tinyModel, seed: SEED, wire, id,
    toCoordinator: (f) => toCoord.push(decode(f)),
    toPeer: (peer, url, f) => toPeer.push({ peer, url, m: decode(f) }),
  });
  made.push(p);
  await p.handle({ k: Kind.Shard, epoch: 0, reset: true, ids: new Uint32Array(ids), images: concat([...ids].map((i) => digitBytes(data.images, i))), labels: new Uint8Array([...ids].map((i) => data.labels[i]!)) });
  await p.handle({ k: Kind.Weights, net: 'D', version: 0, data: initWeights(D, SEED) });
  await p.handle({ k: Kind.Weights, net: 'G', version: 0, data: initWeights(G, SEED) });
  return { p, toCoord, toPeer };
}

function concat(parts: Uint8Array[]): Uint8Array {
  const out = new Uint8Array(parts.reduce((a, x) => a + x.length, 0));
  let o = 0;
  for (const x of parts) (out.set(x, o), (o += x.length));
  return out;
}

/** The D gradient of this task, computed apart. */
function referenceGradient(): Float32Array {
  const m = new GanModel(tinyModel);
  m.setWeights('D', initWeights(D, SEED));
  m.setWeights('G', initWeights(G, SEED));
  const src = { image: (id: number) => digitBytes(data.images, id), label: (id: number) => data.labels[id]! };
  const g = m.dStep(buildBatch(tinyModel, { seed: SEED, epoch: 0, phase: 'D' }, ids, src)).grads.slice();
  m.dispose();
  return g;
}

const task = { k: Kind.Task, round: 0, epoch: 0, phase: 'D', dVersion: 0, gVersion: 0, ids } as const;
const plan = (over: Partial<ReduceMsg>): ReduceMsg => ({ k: Kind.Reduce, round: 0, phase: 'D', attempt: 0, total: 4, chunk: CHUNK, prev: NOBODY, next: COORDINATOR, nextUrl: '', partial: false, ...over });
const bits = (a: Float32Array) => [...new Uint32Array(a.buffer, a.byteOffset, a.length)];
const chunksOf = (ms: Message[]) => ms.filter((m): m is ChunkMsg => m.k === Kind.Chunk);
function assemble(cs: ChunkMsg[]): Float32Array {
  const out = new Float32Array(D.total);
  for (const c of cs) out.set(c.data as Float32Array, c.offset);
  return out;
}

describe('a participant', () => {
  it('computes the task on the versions it names, reports, and sends its own gradient to the coordinator chunk by chunk', async () => {
    const { p, toCoord } = await participant();
    await p.handle(task);
    await p.handle(plan({}));
    expect(toCoord[0]).toMatchObject({ k: Kind.Report, round: 0, phase: 'D', count: 4 });
    const cs = chunksOf(toCoord);
    expect(cs.map((c) => c.offset)).toEqual(Array.from({ length: chunkCount(D.total, CHUNK) }, (_, c) => c * CHUNK));
    expect(cs.every((c) => !c.partial && c.attempt === 0)).toBe(true);
    expect([...assemble(cs)]).toEqual([...referenceGradient()]);
  });

  it('first in a chain: scales its gradient by its share and passes the partial sum to the next member', async () => {
    const { p, toCoord, toPeer } = await participant();
    await p.handle(task);
    await p.handle(plan({ partial: true, total: 10, next: 4, nextUrl: 'ws://peer-4' }));
    expect(chunksOf(toCoord)).toEqual([]);
    expect(toPeer.every((x) => x.peer === 4 && x.url === 'ws://peer-4')).toBe(true);
    const want = new Float32Array(D.total);
    foldInto(want, referenceGradient(), 4 / 10, true);
    expect([...assemble(toPeer.map((x) => x.m as ChunkMsg))]).toEqual([...want]);
  });

  it('inside a chain: folds into the partial sum from the member before it, even one that came before its task was computed', async () => {
    const { p, toCoord } = await participant();
    const before = new Float32Array(D.total).fill(0.25);
    const partial = (c: number, from: number) => {
      const [s, e] = chunkRange(D.total, CHUNK, c);
      return p.handle({ k: Kind.Chunk, round: 0, phase: 'D', attempt: 0, offset: s, partial: true, fp16: false, data: before.slice(s, e) }, from);
    };
    // The first chunk arrives while the task still waits for its weights (a newer D is named).
    await p.handle({ ...task, dVersion: 1 });
    await partial(0, 2);
    await p.handle({ k: Kind.Weights, net: 'D', version: 1, data: initWeights(D, SEED) });
    await p.handle(plan({ partial: true, total: 10, prev: 2 }));
    for (let c = 1; c < chunkCount(D.total, CHUNK); c++) await partial(c, 2);
    const want = before.slice();
    foldInto(want, referenceGradient(), 4 / 10, false);
    expect([...assemble(chunksOf(toCoord))]).toEqual([...want]);
    // From anyone but the member before it, a partial sum is refused.
    await expect(partial(0, 3)).rejects.toMatchObject({ code: 'E_UNEXPECTED' });
  });

  it('takes new weights only from where its plan says, passes them down the chain first, and applies them when every chunk is in', async () => {
    const { p, toPeer } = await participant();
    await p.handle(task);
    await p.handle(plan({ partial: true, total: 10, prev: 1, next: 5, nextUrl: 'ws://peer-5' }));
    const w = initWeights(D, SEED + 1);
    const weights = (c: number, from: number) => {
      const [s, e] = chunkRange(D.total, CHUNK, c);
      return p.handle({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: s, data: w.slice(s, e) }, from);
    };
    await expect(weights(0, COORDINATOR)).rejects.toMatchObject({ code: 'E_UNEXPECTED' });
    const n = chunkCount(D.total, CHUNK);
    for (let c = 0; c < n; c++) await weights(c, 5);
    expect(p.versions.D).toBe(1);
    const down = toPeer.filter((x) => x.m.k === Kind.WeightsChunk);
    expect(down).toHaveLength(n);
    expect(down.every((x) => x.peer === 1)).toBe(true);
    await expect(p.handle({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: 3, data: w.slice(0, 10) }, 5)).rejects.toMatchObject({ code: 'E_SHAPE' });
  });

  it('takes a later attempt\'s chunks of the version it already put together from an earlier one, decoded against the version before, and computes the next task only on those', async () => {
    const { p, toCoord } = await participant();
    await p.handle(task);
    const v0 = initWeights(D, SEED);
    const deltas = (w: Float32Array, attempt: number) => {
      const out: Message[] = [];
      for (let c = 0; c < chunkCount(D.total, CHUNK); c++) {
        const [s, e] = chunkRange(D.total, CHUNK, c);
        const x = encodeWeights('fp32', w.subarray(s, e), v0.subarray(s, e), w.subarray(s, e));
        expect(x.xor).toBe(true);
        out.push(decode(encode({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt, offset: s, ...x, fp16: undefined })));
      }
      return out;
    };
    const step = (seed: number) => v0.map((x, i) => x + (values(D.total, seed)[i]! * 1e-3));
    const first = step(31);
    const second = step(32);
    await p.handle(plan({}));
    for (const m of deltas(first, 0)) await p.handle(m);
    expect(p.versions.D).toBe(1);
    expect(bits(p.model.weightsOf('D'))).toEqual(bits(first));
    // A member is lost before it reported: the phase reduces again and sends version 1 again.
    await p.handle(plan({ attempt: 1 }));
    const again = deltas(second, 1);
    const reports = () => toCoord.filter((m) => m.k === Kind.Report).length;
    const before = reports();
    // The G task names attempt 1's D: it waits while those chunks are on their way.
    await p.handle({ ...task, phase: 'G', dVersion: 1, dAttempt: 1 });
    expect(reports()).toBe(before);
    for (const m of again) await p.handle(m);
    expect(bits(p.model.weightsOf('D'))).toEqual(bits(second));
    expect(reports()).toBe(before + 1);
    // Late chunks of the superseded attempt change nothing.
    await p.handle(deltas(first, 0)[0]!);
    expect(bits(p.model.weightsOf('D'))).toEqual(bits(second));
  });

  it('refuses a task naming weights older than it holds (E_STALE), a sample it was not sent, and weights of the wrong size (E_SHAPE)', async () => {
    const { p } = await participant();
    await p.handle({ k: Kind.Weights, net: 'D', version: 2, data: initWeights(D, SEED) });
    await expect(p.handle(task)).rejects.toMatchObject({ code: 'E_STALE' });
    const q = (await participant()).p;
    await expect(q.handle({ ...task, ids: new Uint32Array([3, 4]) })).rejects.toMatchObject({ code: 'E_UNEXPECTED', message: expect.stringMatching(/sample 4/) });
    await expect(q.handle({ k: Kind.Weights, net: 'G', version: 1, data: new Float32Array(5) })).rejects.toMatchObject({ code: 'E_SHAPE' });
  });

  it('refuses a wire precision it does not know (E_MALFORMED), weights in another precision than the run\'s (E_SHAPE), and an 8-bit difference from a version it does not hold (E_STALE)', async () => {
    expect(() => new Participant({ model: tinyModel, seed: SEED, wire: '4' as never, toCoordinator: () => {} })).toThrow(/wire precision "4"/);
    const { p } = await participant();
    await p.handle(task);
    await p.handle(plan({ chunk: 1 << 20 }));
    const half = { k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: 0, fp16: true, data: new Uint16Array(D.total) } as const;
    await expect(p.handle(half)).rejects.toMatchObject({ code: 'E_SHAPE', message: expect.stringMatching(/16-bit values, the run's wire is fp32/) });
    const eight = (await participant('8')).p;
    await eight.handle(task);
    await eight.handle(plan({ chunk: 1 << 20 }));
    const diff = quantize8(new Float32Array(D.total));
    await expect(eight.handle({ k: Kind.WeightsChunk, net: 'D', version: 2, attempt: 0, offset: 0, scales: diff.scales, data: diff.q }))
      .rejects.toMatchObject({ code: 'E_STALE', message: expect.stringMatching(/difference from v1, this worker holds v0/) });
  });
});

describe('a participant in a sharded group', () => {
  // Workers 2, 5 (this one) and 7 with 3, 4 and 2 samples; the coordinator owns the first and last chunks.
  const n = chunkCount(D.total, CHUNK);
  const owners = Uint16Array.from({ length: n }, (_, c) => (c === 0 || c === n - 1 ? SHARD_COORDINATOR : (c - 1) % 3));
  const group = { group: new Uint32Array([2, 5, 7]), counts: new Uint32Array([3, 4, 2]), urls: ['ws://peer-2', 'ws://peer-5', 'ws://peer-7'], owners };
  const shardPlan = (over: Partial<ReduceMsg> = {}) => plan({ partial: true, total: 9, ...group, ...over });
  const part = (p: Participant, c: number, from: number, g: Float32Array, attempt = 0) => {
    const [s, e] = chunkRange(D.total, CHUNK, c);
    return p.handle({ k: Kind.Chunk, round: 0, phase: 'D', attempt, offset: s, partial: false, fp16: false, data: g.slice(s, e) }, from);
  };
  const mineOf = (who: number) => [...owners.keys()].filter((c) => owners[c] === who);

  it('sends its part of each chunk to the chunk\'s owner and the coordinator\'s chunks to the coordinator; sums the chunks it owns in id order once every part is in, even parts that came before its plan', async () => {
    const { p, toCoord, toPeer } = await participant();
    const g2 = values(D.total, 2);
    const g7 = values(D.total, 7);
    const mine = mineOf(1);
    // Worker 2's part of this worker's first chunk arrives before its task was even computed.
    await p.handle({ ...task, dVersion: 1 });
    await part(p, mine[0]!, 2, g2);
    await p.handle({ k: Kind.Weights, net: 'D', version: 1, data: initWeights(D, SEED) });
    await p.handle(shardPlan());
    const own = referenceGradient();
    // Its own parts: the coordinator's chunks to the coordinator, the others to their owners.
    expect(chunksOf(toCoord).filter((x) => !x.partial).map((x) => x.offset / CHUNK)).toEqual(mineOf(SHARD_COORDINATOR));
    expect(toPeer.map((x) => [x.peer, (x.m as ChunkMsg).offset / CHUNK])).toEqual([...owners.keys()].flatMap((c) => (owners[c] === 0 ? [[2, c]] : owners[c] === 2 ? [[7, c]] : [])));
    expect(toPeer.every((x) => !(x.m as ChunkMsg).partial && x.url === group.urls[group.group.indexOf(x.peer)])).toBe(true);
    // Nothing of its own chunks goes out until worker 7's parts are in too.
    expect(chunksOf(toCoord).filter((x) => x.partial)).toEqual([]);
    for (const c of mine.slice(1)) await part(p, c, 2, g2);
    for (const c of mine) await part(p, c, 7, g7);
    const sums = chunksOf(toCoord).filter((x) => x.partial);
    expect(sums.map((x) => x.offset / CHUNK)).toEqual(mine);
    for (const x of sums) {
      const [s, e] = chunkRange(D.total, CHUNK, x.offset / CHUNK);
      const want = new Float32Array(e - s);
      foldMany(want, [g2.subarray(s, e), own.subarray(s, e), g7.subarray(s, e)], [3 / 9, 4 / 9, 2 / 9], true, null);
      expect([...x.data]).toEqual([...want]);
    }
  });

  it('takes a chunk\'s new weights from its owner (from the coordinator for its own and the coordinator\'s chunks) and passes its own chunks\' weights to every other member', async () => {
    const { p, toPeer } = await participant();
    await p.handle(task);
    await p.handle(shardPlan());
    toPeer.length = 0;
    const w = initWeights(D, SEED + 1);
    const weights = (c: number, from: number) => {
      const [s, e] = chunkRange(D.total, CHUNK, c);
      return p.handle({ k: Kind.WeightsChunk, net: 'D', version: 1, attempt: 0, offset: s, data: w.slice(s, e) }, from);
    };
    const from = (c: number) => (owners[c] === SHARD_COORDINATOR || owners[c] === 1 ? COORDINATOR : group.group[owners[c]!]!);
    await expect(weights(mineOf(0)[0]!, COORDINATOR)).rejects.toMatchObject({ code: 'E_UNEXPECTED' });
    await expect(weights(mineOf(1)[0]!, 2)).rejects.toMatchObject({ code: 'E_UNEXPECTED' });
    for (let c = 0; c < n; c++) await weights(c, from(c));
    expect(p.versions.D).toBe(1);
    const passed = toPeer.filter((x) => x.m.k === Kind.WeightsChunk);
    expect(passed.map((x) => [x.peer, (x.m as { offset: number }).offset / CHUNK])).toEqual(mineOf(1).flatMap((c) => [[2, c], [7, c]]));
  });

  it('refuses a part from a worker outside its group or for a chunk it does not own (E_UNEXPECTED), a second one (E_STALE), and a plan of a group without it (E_MALFORMED)', async () => {
    const { p } = await participant();
    await p.handle(task);
    await p.handle(shardPlan());
    const g = values(D.total, 3);
    await expect(part(p, mineOf(1)[0]!, 3, g)).rejects.toMatchObject({ code: 'E_UNEXPECTED', message: expect.stringMatching(/not a member/) });
    await expect(part(p, mineOf(0)[0]!, 2, g)).rejects.toMatchObject({ code: 'E_UNEXPECTED', message: expect.stringMatching(/does not own/) });
    await expect(part(p, mineOf(SHARD_COORDINATOR)[0]!, 2, g)).rejects.toMatchObject({ code: 'E_UNEXPECTED' });
    await part(p, mineOf(1)[0]!, 2, g);
    await expect(part(p, mineOf(1)[0]!, 2, g)).rejects.toMatchObject({ code: 'E_STALE' });
    const q = (await participant('fp32', 6)).p;
    await q.handle(task);
    await expect(q.handle(shardPlan())).rejects.toMatchObject({ code: 'E_MALFORMED', message: expect.stringMatching(/does not hold worker 6/) });
    const r = (await participant()).p;
    await r.handle(task);
    await expect(r.handle(shardPlan({ counts: new Uint32Array([3, 5, 2]), total: 10 }))).rejects.toMatchObject({ code: 'E_MALFORMED', message: expect.stringMatching(/5 samples, its task had 4/) });
  });
});
