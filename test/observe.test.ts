/**
 * Observers on the wire (the dashboard page drives the same protocol in test/dashboard.test.ts):
 * the handshake and token proof, a snapshot then deltas and grids, drops in the event log with
 * their codes, and an observer that never reads held back instead of holding the run.
 */
import { basename } from 'node:path';
import { afterEach, describe, expect, it } from 'vitest';
import { serve } from '../cli/dashboard.js';
import { WebSocket } from 'ws';
import { proveToken } from '../shared/wire/auth.js';
import { Kind, type Message, PROTOCOL_VERSION, decode, encode } from '../shared/wire/codec.js';
import type { Delta, ObserverUpdate, RunData, Snapshot } from '../shared/wire/observe.js';
import { ObserverHub, RunView } from '../coordinator/dashboard/observers.js';
import { type Cluster, smallData, startCluster, tinyConfig, tinyModel } from './helpers.js';

const clusters: Cluster[] = [];
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.coord.close().catch(() => {});
});

interface Watcher {
  updates: ObserverUpdate[];
  grids: { run: number; name: string; png: Uint8Array }[];
  closed: Promise<{ code: number; reason: string }>;
  ws: WebSocket;
}

/** Connect to /observe, answer the challenge (with `token`, or a wrong proof), collect what arrives. */
function watch(url: string, token: string | null, wrongProof = false): Watcher {
  const ws = new WebSocket(`${url}/observe`, { perMessageDeflate: false });
  const w: Watcher = { updates: [], grids: [], ws, closed: null as unknown as Promise<{ code: number; reason: string }> };
  w.closed = new Promise((resolve) => ws.on('close', (code, reason) => resolve({ code, reason: reason.toString() })));
  ws.on('message', (data) => {
    void (async () => {
      const m: Message = decode(data as Buffer);
      if (m.k === Kind.Challenge) {
        const proof = wrongProof ? new Uint8Array(32) : m.auth && token ? await proveToken(token, m.nonce) : undefined;
        ws.send(encode({ k: Kind.Observe, v: PROTOCOL_VERSION, proof }));
      } else if (m.k === Kind.Update) {
        w.updates.push(JSON.parse(new TextDecoder().decode(m.body)) as ObserverUpdate);
      } else if (m.k === Kind.Grid) {
        w.grids.push({ run: m.run, name: m.name, png: m.png.slice() });
      }
    })();
  });
  ws.on('error', () => {});
  return w;
}

/** The run as an observer sees it: the snapshot with every delta applied. */
function replay(updates: ObserverUpdate[]): RunData {
  const snap = updates.find((u): u is Snapshot => u.type === 'snapshot');
  if (!snap) throw new Error('no snapshot');
  const run = structuredClone(snap.runs[0]!);
  for (const d of updates.filter((u): u is Delta => u.type === 'delta')) {
    for (const [k, col] of Object.entries(d.metrics)) (run.metrics as unknown as Record<string, number[]>)[k]!.push(...(col as number[]));
    run.epochs.push(...d.epochs);
    run.evals.push(...d.evals);
    run.grids.push(...d.grids);
    run.events.push(...d.events);
    run.workers = d.workers;
    run.status = d.status;
  }
  return run;
}

describe('observers', () => {
  it('get a snapshot, then every round, epoch, grid and worker, with drops coded in the event log', async () => {
    const n = 60;
    const c = await startCluster(tinyConfig({ workers: 3, minWorkers: 1, batchSize: 10, epochs: 3, roundTimeoutMs: 1500 }), smallData(n), { startWorkers: 0 });
    clusters.push(c);
    c.addWorker();
    c.addWorker();
    // The third stalls in round 2 and is dropped for it (E_TIMEOUT).
    c.addWorker({ faults: { inbound: (m) => (m.k === Kind.Task && m.round === 2 ? new Promise((r) => setTimeout(r, 4000)) : undefined) } });
    const w = watch(c.url, null);
    await c.finish();
    await new Promise((r) => setTimeout(r, 100));
    const run = replay(w.updates);
    expect(run.live).toBe(true);
    expect(run.globalBatch).toBe(30);
    expect(run.metrics.round).toEqual(c.coord.runDir.metrics().map((m) => m.round));
    expect(run.metrics.d_loss.every((x) => Number.isFinite(x))).toBe(true);
    expect(run.epochs.map((e) => e.usedOnce)).toEqual([n, n, n]);
    expect(run.grids).toEqual(['epoch-001.png', 'epoch-002.png', 'epoch-003.png', 'final.png']);
    expect(w.grids.map((g) => g.name)).toEqual(run.grids);
    for (const g of w.grids) expect([...g.png.subarray(0, 8)]).toEqual([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
    expect(run.workers.map((x) => x.id).sort()).toEqual([0, 1, 2]);
    const drop = run.events.find((e) => e.kind === 'drop');
    expect(drop, JSON.stringify(run.events)).toMatchObject({ worker: 2, code: 'E_TIMEOUT' });
    expect(run.workers.find((x) => x.id === 2)).toMatchObject({ state: 'dropped', reason: 'E_TIMEOUT' });
    expect(run.workers.find((x) => x.id === 0)!.phases).toBeGreaterThan(0);
    expect(run.status.state).toBe('finished');
    expect(run.events.filter((e) => e.kind === 'epoch')).toHaveLength(3);
  }, 60_000);

  it('must prove the token: a wrong proof is refused with E_AUTH, the right one watches', async () => {
    const token = 'observer-secret';
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 3 }), smallData(30), { token, startWorkers: 0 });
    clusters.push(c);
    c.addWorker({ token });
    const wrong = watch(c.url, token, true);
    const none = watch(c.url, null);
    const right = watch(c.url, token);
    const refused = await wrong.closed;
    expect(refused.code).toBe(4003);
    expect(refused.reason).toMatch(/^E_AUTH: /);
    expect((await none.closed).code).toBe(4003);
    await c.finish();
    await new Promise((r) => setTimeout(r, 100));
    expect(wrong.updates).toEqual([]);
    expect(replay(right.updates).metrics.round).toEqual([0, 1, 2]);
  }, 60_000);

  it('may send nothing after the handshake', async () => {
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 200, epochs: 100 }), smallData(30));
    clusters.push(c);
    const w = watch(c.url, null);
    const training = c.finish();
    while (w.updates.length === 0) await new Promise((r) => setTimeout(r, 20));
    w.ws.send(encode({ k: Kind.Observe, v: PROTOCOL_VERSION }));
    expect((await w.closed).code).toBe(1008);
    c.coord.requestStop('test over');
    await training;
  }, 60_000);

  it('that never read are held back, not waited for: the run completes and the others see every round', async () => {
    const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 20 }), smallData(60));
    clusters.push(c);
    const stalled = watch(c.url, null);
    // Stop reading from the socket: its receive window fills, then the coordinator's send buffer.
    stalled.ws.on('open', () => (stalled.ws as unknown as { _socket: { pause(): void } })._socket.pause());
    const reader = watch(c.url, null);
    const coord = await c.finish();
    expect(coord.round).toBe(60);
    for (const e of coord.epochLog) expect(e).toMatchObject({ usedOnce: 60, missing: 0, duplicated: 0 });
    expect(replay(reader.updates).metrics.round).toHaveLength(60);
  }, 120_000);

  it('whose socket is full get nothing until it drains, then everything they missed in one update', async () => {
    const view = new RunView(0, 'r', true, { workers: 1, batchSize: 10, model: tinyModel }, {
      state: 'training', round: 0, epoch: 0, epochs: 1, totalRounds: 10, roundsPerEpoch: 10, etaS: null, startedAt: Date.now(), elapsedS: 0,
    });
    const hub = new ObserverHub({ model: tinyModel, runs: [view], intervalMs: 10_000, maxBufferedBytes: 1000 });
    const sock = fakeSocket();
    hub.accept(sock as unknown as WebSocket);
    sock.emit('message', encode({ k: Kind.Observe, v: PROTOCOL_VERSION }), true);
    await new Promise((r) => setTimeout(r, 20));
    expect(sock.sent.map((f) => decode(f).k)).toEqual([Kind.Challenge, Kind.Update]);
    sock.bufferedAmount = 5000;
    const round = (i: number) => ({ round: i, epoch: 0, workers: 1, samples: 10, global_batch: 10, d_loss: 1, g_loss: 1, d_real: 0.5, d_fake: 0.5, samples_per_s: 1, round_ms: 1, compute_ms: 1, transfer_ms: 0, reduce_ms: 0, bytes_in: 0, bytes_out: 0, dropped: [], joined: [], epoch_used: 0, epoch_samples: 10 });
    for (let i = 0; i < 5; i++) {
      view.addRound(round(i));
      hub.flush();
    }
    expect(sock.sent).toHaveLength(2);
    expect(hub.sent.skipped).toBe(5);
    sock.bufferedAmount = 0;
    hub.flush();
    expect(sock.sent).toHaveLength(3);
    const d = JSON.parse(new TextDecoder().decode((decode(sock.sent[2]!) as { body: Uint8Array }).body)) as Delta;
    expect(d.metrics.round).toEqual([0, 1, 2, 3, 4]);
    hub.close();
  });
});

describe('dashboard RUN_DIR...', () => {
  it('serves finished runs from their directories, several at once, as one snapshot with their grids', async () => {
    const a = await (await startCluster(tinyConfig({ workers: 1, batchSize: 10, epochs: 2 }), smallData(30))).finish();
    const b = await (await startCluster(tinyConfig({ workers: 2, batchSize: 5, epochs: 1, seed: 2 }), smallData(30))).finish();
    const { port, close } = await serve([a.runDir.path, b.runDir.path], { host: '127.0.0.1', port: 0, insecure: false });
    try {
      const w = watch(`ws://127.0.0.1:${port}`, null);
      while (w.grids.length < 5) await new Promise((r) => setTimeout(r, 20));
      const snap = w.updates[0] as Snapshot;
      expect(snap.type).toBe('snapshot');
      expect(snap.runs.map((r) => r.name)).toEqual([basename(a.runDir.path), basename(b.runDir.path)]);
      expect(snap.runs.map((r) => r.live)).toEqual([false, false]);
      expect(snap.runs[0]!.metrics.round).toEqual(a.runDir.metrics().map((m) => m.round));
      expect(snap.runs[1]!.metrics.round).toEqual(b.runDir.metrics().map((m) => m.round));
      expect(snap.runs.map((r) => r.status.state)).toEqual(['finished', 'finished']);
      expect(snap.runs[0]!.grids).toEqual(['epoch-001.png', 'epoch-002.png', 'final.png']);
      expect(w.grids.filter((g) => g.run === 1).map((g) => g.name)).toEqual(['epoch-001.png', 'final.png']);
      // The worker table and the event log as the live page last showed them.
      expect(snap.runs[1]!.workers.map((x) => [x.id, x.state])).toEqual([[0, 'left'], [1, 'left']]);
      expect(snap.runs[1]!.workers.every((x) => x.phases > 0 && x.backend !== '')).toBe(true);
      const kinds = snap.runs[0]!.events.map((e) => e.kind);
      expect(kinds[0]).toBe('start');
      expect(kinds.indexOf('stop')).toBeGreaterThan(kinds.lastIndexOf('epoch'));
      expect(kinds.filter((k) => k === 'epoch')).toHaveLength(2);
      expect(snap.runs[0]!.events.find((e) => e.kind === 'join')).toMatchObject({ worker: 0 });
      w.ws.close();
    } finally {
      await close();
    }
  }, 60_000);

  it('refuses a directory that is not a run, and listening beyond loopback without a token', async () => {
    await expect(serve(['/nonexistent-run'], { host: '127.0.0.1', port: 0, insecure: false })).rejects.toMatchObject({ code: 'E_ARGS' });
    await expect(serve([], { host: '0.0.0.0', port: 0, insecure: false })).rejects.toMatchObject({ code: 'E_INSECURE' });
  });
});

/** Enough of a ws socket for the hub: what it was sent, a settable send buffer, events. */
function fakeSocket() {
  const handlers = new Map<string, ((...a: unknown[]) => void)[]>();
  return {
    readyState: WebSocket.OPEN,
    bufferedAmount: 0,
    sent: [] as Uint8Array[],
    send(f: Uint8Array) {
      this.sent.push(f);
    },
    close() {},
    terminate() {},
    on(ev: string, f: (...a: unknown[]) => void) {
      handlers.set(ev, [...(handlers.get(ev) ?? []), f]);
    },
    emit(ev: string, ...a: unknown[]) {
      for (const f of handlers.get(ev) ?? []) f(...a);
    },
  };
}
