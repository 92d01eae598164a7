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
import { type WirePrecision, quantize8 } from '../shared/numerics/wire-format.js';
import { COORDINATOR, type ChunkMsg, Kind, type Message, NOBODY, type ReduceMsg, decode } from '../shared/wire/codec.js';
import { Participant } from '../worker/participant.js';
import { smallData, tinyModel, useWasm } from './helpers.js';

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
async function participant(wire: WirePrecision = 'fp32') {
  const toCoord: Message[] = [];
  const toPeer: { peer: number; url: string | null; m: Message }[] = [];
  const p = new Participant({
    model: tinyModel, seed: SEED, wire,
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
