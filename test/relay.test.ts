/**
 * Relayed reductions, in both topologies that pass tensors between workers: a chain (partial sums
 * worker to worker in id order, new weights back down the same links) and a sharded group (each
 * worker sends its part of a chunk to the chunk's owner, which sums them and passes the chunk's
 * new weights to the others). They must give the direct reduction's bits, survive a relay dying at
 * any point, refuse peers without the token, and route around a peer that sends garbage.
 */
import { createHash } from 'node:crypto';
import { afterEach, describe, expect, it } from 'vitest';
import { WebSocket } from 'ws';
import type { Coordinator, Topology } from '../coordinator/coordinator.js';
import { Kind, PROTOCOL_VERSION, decode, encode } from '../shared/wire/codec.js';
import { type Net, modelSignature } from '../shared/compute/model.js';
import { type Cluster, smallData, startCluster, tinyConfig, tinyModel } from './helpers.js';
import type { RelayFrame } from './util-wire.js';
import type { WirePrecision } from '../shared/numerics/wire-format.js';
import { chunkCount } from '../shared/numerics/chunks.js';
import { shardOwners } from '../coordinator/topology.js';
import { SHARD_COORDINATOR } from '../shared/wire/codec.js';

const N = 120;
/** Many chunks per net (the tiny model's D has about 52,000 parameters). */
const CHUNK = 5000;

interface RunOptions {
  topology: Topology;
  wire?: WirePrecision;
  workers?: number;
  token?: string;
  /** Per worker index: whether to crash that worker before it passes this frame on. */
  crashAt?: Record<number, (f: RelayFrame) => boolean>;
  /** Per worker index: crash it before it computes (round, phase). */
  crashBefore?: Record<number, { round: number; phase: Net }>;
  /** Worker indexes started without a relay listener (as `worker --no-relay`). */
  noRelay?: number[];
}

const clusters: Cluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.coord.close().catch(() => {});
});

async function run(o: RunOptions): Promise<{ coord: Coordinator; logs: string[] }> {
  const logs: string[] = [];
  const workers = o.workers ?? 4;
  const c = await startCluster(tinyConfig({ workers, minWorkers: 1, batchSize: 10, epochs: 2, wire: o.wire ?? 'fp32' }), smallData(N), {
    topology: o.topology, reduceChunk: CHUNK, token: o.token, log: (l) => logs.push(l), startWorkers: 0,
  });
  clusters.push(c);
  for (let i = 0; i < workers; i++) {
    const at = o.crashAt?.[i];
    const stop = o.crashBefore?.[i];
    c.addWorker({
      token: o.token,
      relay: !o.noRelay?.includes(i),
      faults: {
        toPeer: at ? (f, crash) => at(f) && crash() : undefined,
        inbound: stop ? (m) => (m.k === Kind.Task && m.round === stop.round && m.phase === stop.phase ? 'crash' : undefined) : undefined,
      },
    });
  }
  const coord = await c.finish();
  return { coord, logs };
}

/** A hash of every state the coordinator owns: equal bits, equal hash. */
function fingerprint(c: Coordinator): string {
  const h = createHash('sha256');
  for (const a of [c.model.weights.D, c.model.weights.G, c.model.adam.D.m, c.model.adam.D.v, c.model.adam.G.m, c.model.adam.G.v, c.model.emaG!]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex');
}

function expectExactEpochs(c: Coordinator): void {
  expect(c.epochLog).toHaveLength(2);
  for (const e of c.epochLog) expect(e).toMatchObject({ samples: N, usedOnce: N, missing: 0, duplicated: 0 });
}

/**
 * Where worker 1 dies in round 1's D phase, per topology: before it passes anything on to a peer,
 * and halfway through what it sends peers. In both its gradient is never applied: the phase is
 * reduced again among the others, and the result equals a direct run in which it died before
 * computing that phase.
 */
function crashPoints(relayAs: 'chain' | 'sharded'): [string, (f: RelayFrame) => boolean][] {
  const what = relayAs === 'chain' ? 'partial' : 'part';
  let sent = 0;
  const mine = (f: RelayFrame) => f.round === 1 && f.phase === 'D' && f.what === what;
  return [
    ['before it passes anything on', (f) => mine(f) && (relayAs === 'sharded' || f.chunk === 0)],
    // A chain member sends every chunk on; a group member sends the chunks others own, about 3/4 of them with 4 members.
    ['halfway through what it sends peers', (f) => mine(f) && ++sent >= Math.floor((relayAs === 'chain' ? f.of : f.of / 2) / 2)],
  ];
}

describe.each(['chain', 'sharded'] as const)('relayed reductions (%s)', (relayAs) => {
  it('equal the direct reduction bit for bit over two epochs (fp32 wire), with 2, 3 and 4 workers', async () => {
    for (const workers of relayAs === 'chain' ? [4] : [2, 3, 4]) {
      const direct = await run({ topology: 'star', workers });
      const relayed = await run({ topology: relayAs, workers });
      expect(relayed.logs.filter((l) => /again|lost/.test(l))).toEqual([]);
      expect(relayed.logs.some((l) => l.startsWith(`topology: ${relayAs} among workers`)), relayed.logs.join('\n')).toBe(true);
      expect(relayed.coord.round).toBe(direct.coord.round);
      expect(relayed.coord.round).toBeGreaterThanOrEqual(6);
      expect(fingerprint(relayed.coord)).toBe(fingerprint(direct.coord));
      expectExactEpochs(relayed.coord);
      if (relayAs === 'sharded') {
        // The coordinator receives every member's part of the chunks it owns and one sum of each
        // other chunk; its share follows the weights' measured bytes (fp32's XOR deltas: 0.5 to 1 of a gradient's).
        const fp32In = (weights: number) => {
          const owners = shardOwners(chunkCount(relayed.coord.layouts.D.total, CHUNK), workers, { others: 0, seeded: false, weights });
          const f = owners.filter((o) => o === SHARD_COORDINATOR).length / owners.length;
          return (f * workers + 1 - f) / workers;
        };
        const ratio = relayed.coord.pool.bytes.in / direct.coord.pool.bytes.in;
        expect(ratio).toBeGreaterThan(0.9 * fp32In(0.5));
        expect(ratio).toBeLessThan(1.1 * fp32In(1) + 0.02);
      }
    }
  }, 180_000);

  // A 16- or 8-bit wire rounds each hop's partial sum once (a chain's every member, a group's
  // owners): relayed and direct runs differ by that rounding, not by more.
  it.each(['16', '8'] as const)('on the %s-bit wire: deterministic, every sample once, and within the rounding of each hop of the direct run', async (wire) => {
    const direct = await run({ topology: 'star', wire });
    const relayed = await run({ topology: relayAs, wire });
    const again = await run({ topology: relayAs, wire });
    expect(relayed.logs.filter((l) => /again|lost/.test(l))).toEqual([]);
    expect(fingerprint(again.coord)).toBe(fingerprint(relayed.coord));
    expect(relayed.coord.round).toBe(direct.coord.round);
    expectExactEpochs(relayed.coord);
    const lr = relayed.coord.cfg.lrD;
    for (const net of ['D', 'G'] as const) {
      const a = relayed.coord.model.weights[net];
      const b = direct.coord.model.weights[net];
      let max = 0;
      for (let i = 0; i < a.length; i++) max = Math.max(max, Math.abs(a[i]! - b[i]!));
      expect(max).toBeLessThanOrEqual(2 * lr * relayed.coord.model.adam[net].t);
    }
  }, 180_000);

  it('mixed with workers that cannot relay: they send directly in the same phase, and the bits are the direct reduction\'s', async () => {
    const direct = await run({ topology: 'star' });
    const mixed = await run({ topology: relayAs, noRelay: [1] });
    expect(mixed.logs.filter((l) => /again|lost/.test(l))).toEqual([]);
    expect(mixed.coord.round).toBe(direct.coord.round);
    expect(fingerprint(mixed.coord)).toBe(fingerprint(direct.coord));
    expectExactEpochs(mixed.coord);
    // Workers 2 and 3 still relayed among themselves (0 alone, 1 direct between them, so their
    // segment continues the coordinator's sum): the coordinator received less than four gradients per phase.
    const perRound = mixed.coord.pool.bytes.in / mixed.coord.round;
    const directPerRound = direct.coord.pool.bytes.in / direct.coord.round;
    expect(perRound / directPerRound).toBeGreaterThan(0.6);
    expect(perRound / directPerRound).toBeLessThan(0.9);
  }, 120_000);

  it.each(crashPoints(relayAs))('survive a relay that dies %s: exact accounting, the direct result', async (_name, at) => {
    const relayed = await run({ topology: relayAs, crashAt: { 1: at } });
    expectExactEpochs(relayed.coord);
    const died = relayed.coord.runDir.metrics().find((m) => m.dropped.length > 0)!;
    expect(died.round).toBe(1);
    const direct = await run({ topology: 'star', crashBefore: { 1: { round: 1, phase: 'D' } } });
    expectExactEpochs(direct.coord);
    expect(fingerprint(relayed.coord)).toBe(fingerprint(direct.coord));
  }, 180_000);

  it('survive a relay that dies while it passes new weights on: exact accounting, the result of a direct run it left before or after that step', async () => {
    // A chain's member passes the last chunk's weights after the step committed; a group's owner
    // passes its first chunk's weights while other chunks may still be summing.
    const at = (f: RelayFrame) => f.round === 1 && f.phase === 'D' && f.what === 'weights' && (relayAs === 'sharded' || f.chunk === f.of - 1);
    const relayed = await run({ topology: relayAs, crashAt: { 1: at } });
    expectExactEpochs(relayed.coord);
    expect(relayed.coord.runDir.metrics().find((m) => m.dropped.length > 0)!.round).toBe(1);
    const before = await run({ topology: 'star', crashBefore: { 1: { round: 1, phase: 'D' } } });
    const after = await run({ topology: 'star', crashBefore: { 1: { round: 1, phase: 'G' } } });
    const got = fingerprint(relayed.coord);
    if (relayAs === 'chain') expect(got).toBe(fingerprint(after.coord));
    else expect([fingerprint(before.coord), fingerprint(after.coord)]).toContain(got);
  }, 180_000);

  // On a compressed wire the retry's sum is rounded along other hops than a direct run's, so the
  // bits differ from it; what must hold is the accounting and the run.
  it.each(['16', '8'] as const)('on the %s-bit wire survive a relay that dies halfway through what it sends peers: exact accounting, a completed run', async (wire) => {
    const relayed = await run({ topology: relayAs, wire, crashAt: { 1: crashPoints(relayAs)[1]![1] } });
    expectExactEpochs(relayed.coord);
    const died = relayed.coord.runDir.metrics().find((m) => m.dropped.length > 0)!;
    expect(died.round).toBe(1);
    expect(relayed.logs.some((l) => /round 1 D: .*reducing again/.test(l)), relayed.logs.join('\n')).toBe(true);
    for (const a of [relayed.coord.model.weights.D, relayed.coord.model.weights.G, relayed.coord.model.view.D, relayed.coord.model.view.G]) expect(a.every((v) => Number.isFinite(v))).toBe(true);
  }, 120_000);
});

describe('peer links', () => {
  /** Dial a worker's relay listener as a stranger and report how the link ended. */
  function dialPeer(url: string, answer: (nonce: Uint8Array) => Uint8Array): Promise<{ code: number; reason: string }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      ws.on('message', (d) => {
        const m = decode(d as Buffer);
        if (m.k === Kind.Challenge) {
          ws.send(encode({ k: Kind.PeerHello, v: PROTOCOL_VERSION, workerId: 99, signature: modelSignature(tinyModel), proof: answer(m.nonce), nonce: new Uint8Array(32) }));
        }
      });
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      ws.on('error', () => {});
    });
  }

  it('refuse a peer that cannot prove the token', async () => {
    const token = 'peer-secret';
    const c = await startCluster(tinyConfig({ workers: 3, batchSize: 10, maxRounds: 200, epochs: 100 }), smallData(N), {
      topology: 'chain', reduceChunk: CHUNK, token, startWorkers: 0,
    });
    clusters.push(c);
    for (let i = 0; i < 3; i++) c.addWorker({ token });
    const training = c.finish();
    while (c.coord.round < 2) await new Promise((r) => setTimeout(r, 20));
    const url = c.coord.pool.live()[1]!.peerUrl;
    expect(url).toMatch(/^ws:\/\/127\.0\.0\.1:\d+$/);
    const wrong = await dialPeer(url, () => new Uint8Array(32).fill(7));
    expect(wrong.code).toBe(4003);
    expect(wrong.reason).toMatch(/^E_AUTH: /);
    const none = await dialPeer(url, () => new Uint8Array(0));
    expect(none.code).toBe(4003);
    c.coord.requestStop('test over');
    await training;
  }, 60_000);

  it('close a link that carries a malformed chunk with its code, and the phase completes', async () => {
    const direct = await run({ topology: 'star' });
    const logs: string[] = [];
    const c = await startCluster(tinyConfig({ workers: 4, minWorkers: 1, batchSize: 10, epochs: 2 }), smallData(N), {
      topology: 'chain', reduceChunk: CHUNK, log: (l) => logs.push(l), startWorkers: 0,
    });
    clusters.push(c);
    for (let i = 0; i < 4; i++) {
      // Worker 1 sends round 1's first D partial sum cut short: its peer must refuse it.
      c.addWorker(i !== 1 ? {} : { faults: { toPeer: (f) => {
        if (f.what === 'partial' && f.round === 1 && f.phase === 'D' && f.chunk === 0) truncateNextPeerFrame = true;
      } } });
    }
    const coord = await c.finish();
    expect(logs.some((l) => /round 1 D: worker \d lost its link to worker \d \(E_SHAPE /.test(l)), logs.join('\n')).toBe(true);
    expectExactEpochs(coord);
    expect(fingerprint(coord)).toBe(fingerprint(direct.coord));
  }, 120_000);
});

/** Set by a seam: the next frame a worker sends to a peer loses its last four bytes. */
let truncateNextPeerFrame = false;
const realSend = WebSocket.prototype.send;
WebSocket.prototype.send = function (this: WebSocket, data: unknown, ...rest: unknown[]) {
  if (truncateNextPeerFrame && data instanceof Uint8Array && data.length > 1000) {
    truncateNextPeerFrame = false;
    const frame = decode(data);
    if (frame.k === Kind.Chunk) data = encode({ ...frame, data: frame.data.subarray(0, frame.data.length - 1) } as typeof frame);
  }
  return (realSend as (...a: unknown[]) => void).call(this, data, ...rest);
} as typeof realSend;
