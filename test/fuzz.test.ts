/**
 * Hostile input against a live coordinator: while honest in-process workers train, many
 * short-lived attacker connections send random and mutated frames, before and after a valid
 * handshake. The coordinator must drop each attacker with a close reason and keep training:
 * rounds advance, none stalls, the run completes with exact epoch accounting, memory stays flat.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { WebSocket } from 'ws';
import { type ChunkMsg, Kind, PROTOCOL_VERSION, type Message, type ReduceMsg, type ReportMsg, type TaskMsg, decode, encode } from '../shared/wire/codec.js';
import { modelSignature } from '../shared/compute/model.js';
import { smallData, startCluster, tinyConfig, tinyModel } from './helpers.js';
import { metricsOf } from './util-faults.js';

const FRAMES = Number(process.env.FUZZ_FRAMES ?? 10_000);
const TIME_BUDGET_MS = 100_000;
const PRE_LOOPS = 16;
const POST_LOOPS = 3;
// Smaller than tinyModel: full-size gradient frames are what most of the attack costs.
const fuzzModel = { ...tinyModel, gHidden: [16], dHidden: [16] };
const PACE_MS = Number(process.env.FUZZ_PACE_MS ?? 150);

import { type Rng, type Stats, gcFn, heapMb, open, pack, rng, settle } from './util-fuzz.js';

describe('fuzzing a live coordinator', () => {
  it(`survives ${FRAMES} random and mutated frames while training, then completes`, async () => {
    const seed = Number(process.env.FUZZ_SEED ?? Date.now() % 1_000_000);
    const gc = gcFn();
    const n = 200;
    const timeout = 4000;
    const config = tinyConfig({ model: fuzzModel, workers: 4, minWorkers: 2, batchSize: 10, epochs: 10_000, maxRounds: 1_000_000, roundTimeoutMs: timeout });
    const roundAt: number[] = [];
    let bootstrap: { crash(): void }[] = [];
    const c = await startCluster(config, smallData(n), {
      startWorkers: 4,
      heartbeatMs: 2000,
      // Thousands of short connections from this one address: what admission refuses is tested in hostile.test.ts.
      admission: { ratePerS: 1e9, burst: 1e9, perAddress: 1e9, pending: 1e9, penalty: 0 },
      log: process.env.FUZZ_LOG ? (l) => console.log(l) : undefined,
      hooks: {
        round: () => roundAt.push(Date.now()),
        // Two slots are only there so attackers can complete a handshake and become members.
        // The honest workers compute on this event loop; pacing the phases leaves it free for the attack.
        phase: async (round) => {
          if (round === 1) for (const w of bootstrap) w.crash();
          else if (round > 3) await new Promise((r) => setTimeout(r, PACE_MS));
        },
      },
    });
    bootstrap = c.workers.slice(2);
    const honest = c.workers.slice(0, 2);
    const coord = c.coord;
    const training = coord.train();
    training.catch(() => {});
    await new Promise<void>((r) => {
      const poll = setInterval(() => coord.round >= 3 && (clearInterval(poll), r()), 20);
    });
    const honestIds = honest.map((w) => w.id);
    expect(honestIds.every((id) => id >= 0)).toBe(true);

    const dTotal = coord.layouts.D.total;
    const gTotal = coord.layouts.G.total;
    const maxInbound = coord.pool.maxInbound;
    const signature = modelSignature(fuzzModel);
    const hello = (over: Record<string, unknown> = {}) => ({ k: Kind.Hello, v: PROTOCOL_VERSION, signature, backend: 'fuzz', host: 'fuzz', pid: 1, ...over });
    const report = (over: Partial<ReportMsg> = {}): ReportMsg => ({
      k: Kind.Report, round: coord.round, phase: 'D', count: 10, loss: 0.7, dReal: 0.5, dFake: 0.5, computeMs: 1, ...over,
    });
    const chunk = (over: Partial<ChunkMsg> = {}): ChunkMsg => ({
      k: Kind.Chunk, round: coord.round, phase: 'D', attempt: 0, offset: 0, partial: false, fp16: false, data: new Float32Array(dTotal), ...over,
    });
    let valid: { round: number; frames: Uint8Array[] } = { round: -1, frames: [] };
    const validFrames = () => {
      if (valid.round !== coord.round) {
        valid = { round: coord.round, frames: [encode(hello() as Message), encode(report()), encode(chunk()), encode(chunk({ phase: 'G', data: new Float32Array(gTotal) }))] };
      }
      return valid.frames;
    };

    // Content mutations: each is valid msgpack that is wrong in exactly one way, or several.
    const wrongContents = (r: Rng): Uint8Array => {
      const g = { ...chunk({ data: new Float32Array(0) }), data: Buffer.alloc(dTotal * 4) } as Record<string, unknown>;
      const rep = report() as unknown as Record<string, unknown>;
      const cases: (() => unknown)[] = [
        () => ({ k: r.pick([0, 9, 99, -1, 1.5, 2 ** 40]) }),
        () => ({ k: r.pick(['2', null, true, [2], { k: 2 }]) }),
        () => ({ k: r.pick([Kind.Challenge, Kind.Welcome, Kind.Shard, Kind.Weights, Kind.Task, Kind.Stop, Kind.Report, Kind.Chunk, Kind.Reduce, Kind.WeightsChunk, Kind.PeerHello]), v: 1 }),
        () => hello({ v: r.pick([0, 2, 999, -1, '1', 1.5]) }),
        () => hello({ signature: r.pick(['', 'x'.repeat(5000), 42, null, signature + '!']) }),
        () => hello({ pid: r.pick([-1, 'one', 2 ** 60, NaN, {}]) }),
        () => hello({ proof: r.pick([123, 'abc', [1, 2, 3], true]) }),
        () => hello({ host: 'h'.repeat(4097) }),
        () => hello({ extra: 1 }),
        () => hello({ p: 'toolong' }),
        () => ({ ...hello(), backend: undefined }),
        () => ({ ...g, data: Buffer.alloc(r.int(dTotal * 4 + 7)) }),
        () => ({ ...g, data: r.pick([[1, 2, 3], 'bytes', 5, null]) }),
        () => ({ ...g, phase: r.pick(['X', 'd', 0, null]) }),
        () => ({ ...g, round: r.pick([-1, 1.5, 'r', 2 ** 60]) }),
        () => ({ ...g, offset: r.pick([-10, 0.5, 'o']) }),
        () => ({ ...g, partial: r.pick([1, 'true', null]) }),
        () => ({ ...g, fp16: r.pick([1, 'true', null]) }),
        () => ({ ...rep, count: r.pick([-10, 0.5, 1e12]) }),
        () => ({ ...rep, loss: r.pick(['NaN', null, {}]) }),
        () => r.pick([null, 0, 'Hello', [1, 2, 3], true, 1.5]),
        () => ({ [r.bytes(4).toString('hex')]: r.bytes(8) }),
      ];
      return pack(r.pick(cases)());
    };

    const stats: Stats = { frames: 0, connections: 0, closeCodes: new Map(), welcomed: 0, tasks: 0, acceptedGrads: 0, afterDrop: 0 };
    const started = Date.now();
    const over = () => stats.frames >= FRAMES || Date.now() - started > TIME_BUDGET_MS;
    const mem: number[] = [];

    /** One random or mutated frame; `text` frames go out as WebSocket text. */
    const mutant = (r: Rng): { frame: Uint8Array; text: boolean } => {
      const kind = r.int(100);
      const valids = validFrames();
      if (kind < 20) return { frame: r.bytes(r.int(2048)), text: false };
      if (kind < 35) {
        const v = r.pick(valids);
        return { frame: v.subarray(0, r.int(v.length)), text: false };
      }
      if (kind < 55) {
        const v = Buffer.from(r.pick(valids));
        for (let i = 0, flips = 1 + r.int(4); i < flips; i++) {
          // Flips in the header hit field names and types; the float payload would mostly stay valid.
          const at = r.next() < 0.8 ? r.int(Math.min(v.length, 120)) : r.int(v.length);
          v[at] = v[at]! ^ (1 << r.int(8));
        }
        return { frame: v, text: false };
      }
      if (kind < 85) return { frame: wrongContents(r), text: false };
      if (kind < 90) return { frame: Buffer.from(r.pick(['{"k":2}', 'hello', ''])), text: true };
      if (kind < 93) return { frame: Buffer.alloc(maxInbound + 1 + r.int(1024), r.int(256)), text: false };
      if (kind < 97) return { frame: r.pick(replays.length ? replays : valids.slice(1)), text: false };
      return { frame: Buffer.alloc(0), text: false };
    };

    /**
     * A fresh connection and a bad frame before any handshake. Sometimes a burst follows at once,
     * written before the coordinator's close can arrive: frames reaching a dropped connection.
     */
    const preHandshake = async (r: Rng) => {
      const conn = await open(c.url);
      stats.connections++;
      if (!conn) return;
      const burst = r.next() < 0.25 ? 1 + r.int(4) : 0;
      for (let i = 0; i <= burst; i++) {
        const { frame, text } = mutant(r);
        conn.ws.send(frame, { binary: !text });
        stats.frames++;
        if (i > 0) stats.afterDrop++;
      }
      const got = await conn.next((m) => m.k === Kind.Welcome, 1000);
      // A mutation that still is a valid Hello is a legitimate join: leave at once.
      if (got) {
        stats.welcomed++;
        conn.ws.terminate();
      }
      await settle(conn, stats);
    };

    /** Complete the handshake honestly, then misbehave: as a joiner, or as a member with a task. */
    const postHandshake = async (r: Rng) => {
      const conn = await open(c.url);
      stats.connections++;
      if (!conn) return;
      conn.ws.send(encode(hello() as Message));
      stats.frames++;
      const welcome = await conn.next((m) => m.k === Kind.Welcome, 3000);
      if (!welcome) {
        await settle(conn, stats);
        return;
      }
      stats.welcomed++;
      const send = (b: Uint8Array) => {
        conn.ws.send(b);
        stats.frames++;
      };
      if (r.next() < 0.3) {
        send(r.pick([encode(hello() as Message), encode(report()), encode(chunk()), wrongContents(r), r.bytes(64), ...replays.slice(0, 1)]));
        await settle(conn, stats);
        return;
      }
      const task = (await conn.next((m) => m.k === Kind.Task, 3000)) as TaskMsg | null;
      const plan = task ? ((await conn.next((m) => m.k === Kind.Reduce, 3000)) as ReduceMsg | null) : null;
      if (!task || !plan) {
        conn.ws.terminate();
        await settle(conn, stats);
        return;
      }
      stats.tasks++;
      const size = task.phase === 'D' ? dTotal : gTotal;
      const rep = report({ round: task.round, phase: task.phase, count: task.ids.length, dReal: task.phase === 'D' ? 0.5 : NaN });
      const whole = chunk({ round: task.round, phase: task.phase, attempt: plan.attempt, data: new Float32Array(Math.min(size, plan.chunk)) });
      const nan = new Float32Array(whole.data.length);
      nan[r.int(nan.length)] = r.pick([NaN, Infinity, -Infinity]);
      // Taken in turn, not at random, so that every one is tried even in a run where few attackers
      // get a task (the slots are contended); the ones whose close codes are required come first.
      const attacks: (() => Uint8Array[])[] = [
        () => [encode(rep), encode({ ...whole, data: nan })],
        () => [encode(rep), encode({ ...whole, data: new Float32Array(whole.data.length + 1 + r.int(10)) })],
        // A valid report and chunk followed by the same chunk again: the second must be refused.
        () => {
          const f = encode(whole);
          stats.acceptedGrads++;
          return [encode(rep), f, f];
        },
        () => [encode(rep), encode({ ...whole, data: new Float32Array(Math.max(0, whole.data.length - 1 - r.int(10))) })],
        () => [encode({ ...rep, loss: task.phase === 'D' ? NaN : Infinity })],
        () => [encode({ ...rep, count: rep.count + 1 })],
        () => [encode(rep), encode({ ...whole, fp16: true, data: new Uint16Array(whole.data.length) })],
        () => [encode(rep), encode({ ...whole, offset: 1 + r.int(7) })],
        () => [encode(rep), encode({ ...whole, partial: true })],
        () => [encode({ ...rep, round: Math.max(0, task.round - 1 - r.int(3)) })],
        () => [encode({ ...rep, phase: task.phase === 'D' ? 'G' : 'D' })],
        () => replays.slice(0, 1 + r.int(2)),
        () => [wrongContents(r)],
      ];
      for (const f of attacks[(stats.tasks - 1) % attacks.length]!()) send(f);
      await settle(conn, stats);
    };

    // Honest gradients, captured off the wire, to replay from attackers later.
    const replays: Buffer[] = [];
    const origSend = WebSocket.prototype.send;
    WebSocket.prototype.send = function (this: WebSocket, data: unknown, ...rest: unknown[]) {
      if (replays.length < 8 && Buffer.isBuffer(data) && data.length > 1000) {
        try {
          if (decode(data).k === Kind.Chunk) replays.push(Buffer.from(data));
        } catch {
          // Not a frame of ours to keep.
        }
      }
      return (origSend as (...a: unknown[]) => void).call(this, data, ...rest);
    } as typeof origSend;

    const roundsAtStart = coord.round;
    const bytesInAtStart = coord.pool.bytes.in;
    const memSampler = setInterval(() => {
      if (stats.frames > 1000) mem.push(heapMb(gc));
    }, 5000);
    try {
      const loops: Promise<void>[] = [];
      for (let i = 0; i < PRE_LOOPS; i++) {
        const r = rng(seed * 31 + i);
        loops.push((async () => {
          while (!over()) await preHandshake(r);
        })());
      }
      for (let i = 0; i < POST_LOOPS; i++) {
        const r = rng(seed * 17 + 1000 + i);
        loops.push((async () => {
          while (!over()) await postHandshake(r);
        })());
      }
      await Promise.all(loops);
    } finally {
      clearInterval(memSampler);
      WebSocket.prototype.send = origSend;
    }
    const fuzzMs = Date.now() - started;
    const roundsDuringFuzz = coord.round - roundsAtStart;
    const mbIn = (coord.pool.bytes.in - bytesInAtStart) / 2 ** 20;
    mem.push(heapMb(gc));

    // Let the run reach its end at an epoch boundary, at least one epoch on and three whole epochs
    // in all (the accounting below must hold across epoch boundaries that fell inside the attack).
    // Counted in epochs, not rounds: attackers that joined and were dropped had their samples dealt
    // again, so an epoch may have taken more rounds than its share.
    coord.cfg.maxRounds = 0;
    coord.cfg.epochs = Math.max(coord.epoch + 1, 3);
    const outcome = await Promise.race([training.then(() => 'done'), new Promise((r) => setTimeout(() => r('stalled'), 3 * timeout))]);
    // Only the honest workers' connections remain: nothing of the attackers is retained.
    const connsLeft = coord.pool.connections;
    await coord.close();
    await Promise.allSettled(c.runs);
    for (const w of c.workers) w.model?.dispose();

    const summary = `seed ${seed}: ${stats.frames} frames on ${stats.connections} connections in ${fuzzMs} ms (${mbIn.toFixed(0)} MiB read by the coordinator), ` +
      `(${stats.afterDrop} behind a first bad one), ${stats.welcomed} handshakes, ${stats.tasks} tasks, ${roundsDuringFuzz} rounds; close codes ${JSON.stringify([...stats.closeCodes].sort((a, b) => a[0] - b[0]))}; heap MB ${mem.map((m) => m.toFixed(0)).join(',')}`;
    console.log(summary);

    expect(outcome, summary).toBe('done');
    expect(stats.frames, summary).toBeGreaterThanOrEqual(FRAMES);
    // Every attacker was turned away with a reason (or left by itself after a legitimate Welcome).
    const codes = [...stats.closeCodes.keys()];
    for (const code of codes) expect([1005, 1006, 1007, 1008, 1009, 4001, 4002, 4003, 4004, 4005, 4006, 4007, 4008], `${code}; ${summary}`).toContain(code);
    // An oversized frame before the handshake is cut off by the pre-authentication byte limit
    // (1006, a destroyed socket) before ws can answer it with 1009, so 1009 is allowed, not required.
    for (const code of [1007, 4002, 4004, 4005, 4006]) expect(stats.closeCodes.get(code) ?? 0, `close ${code} never seen; ${summary}`).toBeGreaterThan(0);
    expect(stats.tasks, summary).toBeGreaterThan(0);

    // Training kept moving the whole time: no gap between rounds reached the round timeout.
    expect(roundsDuringFuzz, summary).toBeGreaterThan(10);
    for (let i = 1; i < roundAt.length; i++) expect(roundAt[i]! - roundAt[i - 1]!, `gap before round ${i}; ${summary}`).toBeLessThan(timeout + 1000);
    const ms = metricsOf(coord.runDir.path);
    expect(ms.length).toBe(coord.round);
    for (const m of ms) expect(m.round_ms, `round ${m.round}; ${summary}`).toBeLessThan(timeout);
    // An honest worker is never dropped for what it sent. It may be dropped as a straggler: it
    // computes on this event loop, which the flood keeps busy, while members that joined through
    // the free slots can report at once; then it rejoins like any worker.
    const events = readFileSync(join(coord.runDir.path, 'events.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as { kind: string; worker?: number; code?: string });
    for (const e of events) if (e.kind === 'drop' && honestIds.includes(e.worker!)) expect(e.code, `honest worker ${e.worker} dropped; ${summary}`).toBe('E_TIMEOUT');
    expect(coord.epochLog.length).toBe(coord.cfg.epochs);
    expect(coord.epochLog.length).toBeGreaterThan(2);
    for (const e of coord.epochLog) expect(e, summary).toMatchObject({ samples: n, usedOnce: n, missing: 0, duplicated: 0 });

    expect(connsLeft, summary).toBe(honest.length);
    const first = mem[0]!;
    const last = mem[mem.length - 1]!;
    expect(last - first, summary).toBeLessThan(gc ? 40 : 150);
  }, 180_000);

  /**
   * A member that answers every task with a well-formed zero gradient, except that `poison` may
   * alter one answer. Resolves with the close code once the coordinator ends the connection.
   */
  function member(url: string, signature: string, poison: (t: TaskMsg, r: ReportMsg) => ReportMsg): Promise<{ code: number; reason: string }> {
    return new Promise((resolve) => {
      const ws = new WebSocket(url, { perMessageDeflate: false });
      let task: TaskMsg | null = null;
      ws.on('message', (d) => {
        const m = decode(d as Buffer);
        if (m.k === Kind.Challenge) {
          ws.send(encode({ k: Kind.Hello, v: PROTOCOL_VERSION, signature, backend: 'member', host: 'member', pid: 2 }));
        } else if (m.k === Kind.Task) {
          task = m;
        } else if (m.k === Kind.Reduce && task) {
          const total = m.phase === 'D' ? sizes.D : sizes.G;
          const rep: ReportMsg = { k: Kind.Report, round: m.round, phase: m.phase, count: task.ids.length, loss: 0.7, dReal: m.phase === 'D' ? 0.5 : NaN, dFake: 0.5, computeMs: 1 };
          ws.send(encode(poison(task, rep)));
          for (let off = 0; off < total; off += m.chunk) {
            ws.send(encode({ k: Kind.Chunk, round: m.round, phase: m.phase, attempt: m.attempt, offset: off, partial: false, fp16: false, data: new Float32Array(Math.min(m.chunk, total - off)) }));
          }
        }
      });
      ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() }));
      ws.on('error', () => {});
    });
  }
  const sizes = { D: 0, G: 0 };

  const poisons: [string, (t: TaskMsg, r: ReportMsg) => ReportMsg][] = [
    ['D-phase dReal NaN', (t, g) => (t.round === 1 && t.phase === 'D' ? { ...g, dReal: NaN } : g)],
    ['D-phase dFake Infinity', (t, g) => (t.round === 1 && t.phase === 'D' ? { ...g, dFake: Infinity } : g)],
    ['G-phase loss NaN', (t, g) => (t.round === 1 && t.phase === 'G' ? { ...g, loss: NaN } : g)],
    ['computeMs Infinity', (t, g) => (t.round === 1 && t.phase === 'D' ? { ...g, computeMs: Infinity } : g)],
  ];

  it.each(poisons)('a report whose %s is refused (E_NONFINITE) and the metrics stay finite', async (_name, poison) => {
    const c = await startCluster(tinyConfig({ model: fuzzModel, workers: 2, batchSize: 10, maxRounds: 4 }), smallData(100), { startWorkers: 1 });
    sizes.D = c.coord.layouts.D.total;
    sizes.G = c.coord.layouts.G.total;
    const closed = member(c.url, modelSignature(fuzzModel), poison);
    await c.finish();
    const r = await closed;
    const ms = metricsOf(c.coord.runDir.path);
    expect(ms).toHaveLength(4);
    const bad = ms.flatMap((m) => (['d_loss', 'g_loss', 'd_real', 'd_fake', 'compute_ms', 'transfer_ms'] as const)
      .filter((k) => !Number.isFinite(m[k])).map((k) => `round ${m.round} ${k}=${String(m[k])}`));
    expect(bad, 'non-finite values reached metrics.jsonl (written there as null)').toEqual([]);
    expect(r.code, `closed with ${r.code} ${r.reason}`).toBe(4005);
    expect(r.reason).toMatch(/^E_NONFINITE: /);
  }, 30_000);
});
