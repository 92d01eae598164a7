/**
 * One phase's reduction on its own, with in-memory connections: what it sends each member, what
 * it sums and steps, and how it treats a lost member, a straggler and out-of-bounds chunks.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { type MemberConn, Reduction, type ReductionResult, Stage } from '../coordinator/reduction.js';
import { STRAGGLER_MIN_MS } from '../coordinator/bounds.js';
import { adamApply, adamChunkStep, adamHyper } from '../coordinator/optimizer.js';
import { chunkCount, chunkRange } from '../shared/numerics/chunks.js';
import { foldInto } from '../shared/numerics/fold.js';
import { COORDINATOR, Kind, type Message, NOBODY, type ReduceMsg, type ReportMsg, decode } from '../shared/wire/codec.js';
import type { GanError } from '../shared/wire/errors.js';
import { values } from './helpers.js';
import { chooseTopology, shardOwners } from '../coordinator/topology.js';
import { SHARD_COORDINATOR } from '../shared/wire/codec.js';

const SIZE = 10;
const CHUNK = 4;
const HYPER = adamHyper(1, { lr: 1e-3, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });

interface Conn extends MemberConn {
  got: Message[];
}

/** A phase among members with these sample counts (and relay abilities), on in-memory connections. */
function phase(counts: number[], o: { relay?: boolean[] } = {}) {
  const conns: Conn[] = counts.map((_, id) => ({ id, peerUrl: o.relay?.[id] ? `ws://peer-${id}` : '', got: [] }));
  const current = { w: values(SIZE, 1), m: new Float32Array(SIZE), v: new Float32Array(SIZE) };
  const next = { w: new Float32Array(SIZE), m: new Float32Array(SIZE), v: new Float32Array(SIZE) };
  const dropped: { id: number; code: string; message: string }[] = [];
  const logs: string[] = [];
  const r: Reduction<Conn> = new Reduction<Conn>({
    net: 'D', round: 7, version: 3, chunk: CHUNK, wire: 'fp32', view: { current: current.w, next: next.w },
    members: conns.map((conn, i) => ({ conn, count: counts[i]!, relay: !!o.relay?.[i] })),
    current, next, step: adamChunkStep(HYPER), acc: new Float32Array(SIZE),
    reportTimeoutMs: 60_000, stallMs: 10_000,
    send: (c, f) => c.got.push(decode(f)),
    // As the pool does: the dropped connection leaves, and the reduction hears of it.
    drop: (c, e: GanError) => {
      dropped.push({ id: c.id, code: e.code, message: e.message });
      r.lost(c);
    },
    log: (l) => logs.push(l),
  });
  running.push({ r, conns });
  const done = r.start();
  const report = (id: number, over: Partial<ReportMsg> = {}) => r.onMessage(conns[id]!, { k: Kind.Report, round: 7, phase: 'D', count: counts[id]!, loss: 0.5, dReal: 0.6, dFake: 0.4, computeMs: 5, ...over });
  const chunks = (id: number, g: Float32Array, o2: { partial?: boolean; attempt?: number } = {}) => {
    for (let c = 0; c < chunkCount(SIZE, CHUNK); c++) {
      const [s, e] = chunkRange(SIZE, CHUNK, c);
      r.onMessage(conns[id]!, { k: Kind.Chunk, round: 7, phase: 'D', attempt: o2.attempt ?? 0, offset: s, partial: !!o2.partial, fp16: false, data: g.slice(s, e) });
    }
  };
  const plans = (id: number) => conns[id]!.got.filter((m): m is ReduceMsg => m.k === Kind.Reduce);
  const weightsOut = (id: number, attempt: number) => {
    const w = new Float32Array(SIZE);
    for (const m of conns[id]!.got) if (m.k === Kind.WeightsChunk && m.attempt === attempt) w.set(m.data, m.offset);
    return w;
  };
  return { r, conns, current, next, dropped, logs, done, report, chunks, plans, weightsOut };
}

const running: { r: Reduction<Conn>; conns: Conn[] }[] = [];
afterEach(() => {
  // A phase a test left open must not keep its timers: every member leaves.
  for (const { r, conns } of running.splice(0)) for (const c of conns) r.lost(c);
});

/** The weighted sum in id order, rounded to float32 after every add, and Adam on it. */
function expected(grads: Float32Array[], counts: number[], current: { w: Float32Array; m: Float32Array; v: Float32Array }): Float32Array {
  const total = counts.reduce((a, b) => a + b, 0);
  const acc = new Float32Array(SIZE);
  grads.forEach((g, i) => foldInto(acc, g, counts[i]! / total, i === 0));
  const out = { w: new Float32Array(SIZE), m: new Float32Array(SIZE), v: new Float32Array(SIZE) };
  adamApply(current.w, acc, current.m, current.v, HYPER, out);
  return out.w;
}

const settled = async (p: Promise<ReductionResult<Conn>>) => p;

describe('a reduction', () => {
  it('direct: sums every member weighted by samples in id order, steps each chunk, sends the same new weights to all, commits after the reports', async () => {
    const counts = [3, 1];
    const p = phase(counts);
    expect(p.r.state).toBe(Stage.Reducing);
    for (const id of [0, 1]) expect(p.plans(id)).toMatchObject([{ attempt: 0, prev: NOBODY, next: COORDINATOR, partial: false, total: 4, chunk: CHUNK }]);
    const grads = [values(SIZE, 2), values(SIZE, 3)];
    // Arrival order does not change the sum: the later id's chunks first.
    p.chunks(1, grads[1]!);
    p.chunks(0, grads[0]!);
    expect(p.r.state).toBe(Stage.AwaitingReports);
    p.report(1);
    p.report(0);
    const res = await settled(p.done);
    expect(p.r.state).toBe(Stage.Committed);
    expect(res.applied.map((a) => a.conn.id)).toEqual([0, 1]);
    const want = expected(grads, counts, p.current);
    expect([...p.next.w]).toEqual([...want]);
    for (const id of [0, 1]) expect([...p.weightsOut(id, 0)]).toEqual([...want]);
    expect(p.conns[0]!.got.filter((m) => m.k === Kind.WeightsChunk).every((m) => m.k === Kind.WeightsChunk && m.version === 4)).toBe(true);
  });

  it('relayed: a chain passes partial sums member to member and only its last sends here; the result is the direct one, bit for bit', async () => {
    const counts = [2, 5, 3];
    const p = phase(counts, { relay: [true, true, true] });
    const [a, b, c] = [p.plans(0)[0]!, p.plans(1)[0]!, p.plans(2)[0]!];
    expect([a.prev, a.next, a.nextUrl]).toEqual([NOBODY, 1, 'ws://peer-1']);
    expect([b.prev, b.next, b.nextUrl]).toEqual([0, 2, 'ws://peer-2']);
    expect([c.prev, c.next, c.partial]).toEqual([1, COORDINATOR, true]);
    const grads = [values(SIZE, 4), values(SIZE, 5), values(SIZE, 6)];
    // What the chain computes: each member folds its own gradient into what it received.
    const partial = new Float32Array(SIZE);
    grads.forEach((g, i) => foldInto(partial, g, counts[i]! / 10, i === 0));
    p.chunks(2, partial, { partial: true });
    for (const id of [0, 1, 2]) p.report(id);
    await settled(p.done);
    expect([...p.next.w]).toEqual([...expected(grads, counts, p.current)]);
    // New weights go to the chain's end, which passes them down; the others get none from here.
    expect(p.weightsOut(2, 0).some((x) => x !== 0)).toBe(true);
    expect(p.conns[0]!.got.some((m) => m.k === Kind.WeightsChunk)).toBe(false);
  });

  it('a lost member costs an attempt: the survivors are planned again, its gradient is never applied, the step uses their samples only', async () => {
    const counts = [2, 2, 4];
    const p = phase(counts);
    const grads = [values(SIZE, 7), values(SIZE, 8), values(SIZE, 9)];
    for (const id of [0, 1, 2]) p.chunks(id, grads[id]!);
    p.report(0);
    p.report(2);
    // Member 1 goes away after its gradient arrived, before it reported.
    p.r.lost(p.conns[1]!);
    expect(p.plans(0).map((x) => [x.attempt, x.total])).toEqual([[0, 8], [1, 6]]);
    expect(p.plans(1)).toHaveLength(1);
    const res = await settled(p.done);
    expect(res.applied.map((x) => x.conn.id)).toEqual([0, 2]);
    expect([...p.next.w]).toEqual([...expected([grads[0]!, grads[2]!], [2, 4], p.current)]);
    // The new attempt's weights supersede the first's on every worker.
    expect([...p.weightsOut(0, 1)]).toEqual([...p.next.w]);
    expect(p.logs.some((l) => /worker 1 left; reducing again among 2 \(attempt 2\)/.test(l))).toBe(true);
  });

  it('no member left: abandoned, nothing applied', async () => {
    const p = phase([3]);
    p.r.lost(p.conns[0]!);
    expect((await settled(p.done)).applied).toEqual([]);
    expect(p.r.state).toBe(Stage.Abandoned);
  });

  it(`drops a straggler that has not reported ${STRAGGLER_MIN_MS / 1000} s after the others (E_TIMEOUT), and commits without it`, async () => {
    const counts = [1, 1, 1];
    const p = phase(counts);
    const grads = [values(SIZE, 10), values(SIZE, 11)];
    p.chunks(0, grads[0]!);
    p.chunks(1, grads[1]!);
    p.report(0);
    p.report(1);
    const t0 = performance.now();
    const res = await settled(p.done);
    expect(performance.now() - t0).toBeGreaterThan(STRAGGLER_MIN_MS - 200);
    expect(p.dropped).toMatchObject([{ id: 2, code: 'E_TIMEOUT', message: expect.stringMatching(/^straggler: no D gradient/) }]);
    expect(res.applied.map((x) => x.conn.id)).toEqual([0, 1]);
    expect([...p.next.w]).toEqual([...expected(grads, [1, 1], p.current)]);
  }, 10_000);

  it('refuses chunks out of bounds: off a chunk boundary or of the wrong length (E_SHAPE), a value beyond the limit (E_BOUNDS), NaN (E_NONFINITE), twice (E_STALE)', () => {
    const p = phase([1, 1]);
    const send = (offset: number, data: Float32Array) => () => p.r.onMessage(p.conns[0]!, { k: Kind.Chunk, round: 7, phase: 'D', attempt: 0, offset, partial: false, fp16: false, data });
    expect(send(1, new Float32Array(4))).toThrow(expect.objectContaining({ code: 'E_SHAPE', message: expect.stringMatching(/not a chunk boundary/) }));
    expect(send(12, new Float32Array(4))).toThrow(expect.objectContaining({ code: 'E_SHAPE' }));
    expect(send(8, new Float32Array(4))).toThrow(expect.objectContaining({ code: 'E_SHAPE', message: expect.stringMatching(/has 4 values, expected 2/) }));
    expect(send(0, new Float32Array([1, 2, 1e20, 3]))).toThrow(expect.objectContaining({ code: 'E_BOUNDS' }));
    expect(send(0, new Float32Array([1, NaN, 0, 3]))).toThrow(expect.objectContaining({ code: 'E_NONFINITE' }));
    send(0, new Float32Array(4))();
    expect(send(0, new Float32Array(4))).toThrow(expect.objectContaining({ code: 'E_STALE' }));
    const stale = () => p.r.onMessage(p.conns[1]!, { k: Kind.Report, round: 6, phase: 'D', count: 1, loss: 0, dReal: 0, dFake: 0, computeMs: 1 });
    expect(stale).toThrow(expect.objectContaining({ code: 'E_STALE' }));
  });

  it('drops a direct member whose chunk is a thousand times its peers\' (E_BOUNDS) and sums the others', async () => {
    const counts = [1, 1, 1];
    const p = phase(counts);
    const grads = [values(SIZE, 12), values(SIZE, 13).map((x) => x * 1e6), values(SIZE, 14)];
    for (const id of [0, 1, 2]) p.chunks(id, grads[id]!);
    expect(p.dropped).toMatchObject([{ id: 1, code: 'E_BOUNDS' }]);
    p.report(0);
    p.report(2);
    await settled(p.done);
    expect([...p.next.w]).toEqual([...expected([grads[0]!, grads[2]!], [1, 1], p.current)]);
  });

  it('a relayed partial sum out of bounds cannot name its culprit: the phase is reduced again with every gradient sent here', async () => {
    const p = phase([1, 1], { relay: [true, true] });
    const big = values(SIZE, 15).map((x) => x * 1e16);
    p.chunks(1, big, { partial: true });
    expect(p.plans(0).map((x) => [x.attempt, x.partial])).toEqual([[0, true], [1, false]]);
    expect(p.logs.some((l) => /out of bounds.*reducing directly/.test(l))).toBe(true);
    // Now the outsized gradient comes straight here, and its sender is named.
    expect(() => p.chunks(1, big)).toThrow(expect.objectContaining({ code: 'E_BOUNDS' }));
  });
});

describe('the topology of a phase', () => {
  const remote = (n: number, relay = true) => Array.from({ length: n }, (_, i) => ({ peerUrl: relay ? `ws://10.0.0.${i + 2}:9000` : '', remoteIp: `10.0.0.${i + 2}` }));
  const local = (n: number) => Array.from({ length: n }, () => ({ peerUrl: 'ws://127.0.0.1:9000', remoteIp: '127.0.0.1' }));

  it('auto: sharded among workers on other hosts from two of them, star on one host or with one remote worker', () => {
    expect(chooseTopology(remote(4), 'auto')).toMatchObject({ kind: 'sharded', relay: [true, true, true, true] });
    expect(chooseTopology(remote(2), 'auto').kind).toBe('sharded');
    expect(chooseTopology([...local(2), ...remote(1)], 'auto').kind).toBe('star');
    expect(chooseTopology(local(4), 'auto').kind).toBe('star');
    expect(chooseTopology([...local(1), ...remote(2)], 'auto')).toMatchObject({ kind: 'sharded', relay: [false, true, true] });
    expect(chooseTopology(remote(3, false), 'auto').kind).toBe('star');
    // Asked for, chains and groups use every worker that can relay, on this host too.
    expect(chooseTopology(local(3), 'chain')).toMatchObject({ kind: 'chain', relay: [true, true, true] });
    expect(chooseTopology(local(3), 'sharded').kind).toBe('sharded');
    expect(chooseTopology(remote(4), 'star').kind).toBe('star');
  });

  it('a sharded group gives the coordinator the share of chunks that balances its link against the members\' (1/3 with 2 members, 1/5 with 4, less when weights are smaller than gradients), spread evenly, the rest round robin', () => {
    const share = (owners: Uint16Array) => owners.filter((o) => o === SHARD_COORDINATOR).length / owners.length;
    const two = shardOwners(300, 2, { others: 0, seeded: false });
    expect(share(two)).toBeCloseTo(1 / 3, 2);
    expect(share(shardOwners(300, 4, { others: 0, seeded: false }))).toBeCloseTo(1 / 5, 2);
    // Weights smaller than gradients (fp32's XOR deltas) make a member's link lighter, the coordinator's share smaller.
    expect(share(shardOwners(300, 2, { others: 0, seeded: false, weights: 0.7 }))).toBeCloseTo(0.35 / 1.35, 2);
    expect(share(shardOwners(300, 4, { others: 0, seeded: false, weights: 0.7 }))).toBeCloseTo(0.525 / 3.525, 2);
    // Other members' traffic through the coordinator's link, or a seed, leave it less to own.
    expect(share(shardOwners(300, 4, { others: 1, seeded: true }))).toBe(0);
    // Evenly spread: no two of the coordinator's chunks are more than 3 apart with 2 members (a third of them).
    const mine = [...two.keys()].filter((c) => two[c] === SHARD_COORDINATOR);
    expect(Math.max(...mine.slice(1).map((c, i) => c - mine[i]!))).toBeLessThanOrEqual(3);
    const members = [...two].filter((o) => o !== SHARD_COORDINATOR);
    expect(members.every((o, i) => o === i % 2)).toBe(true);
  });
});
