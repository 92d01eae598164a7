/**
 * The failure model of DESIGN.md, exercised with real processes: workers killed mid-phase,
 * restarted, frozen past the round timeout; the coordinator killed and resumed; corrupt
 * checkpoints (authentication and TLS: security.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, existsSync, readFileSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import { Coordinator, type RoundMetrics } from '../coordinator/coordinator.js';
import { Kind } from '../shared/wire/codec.js';
import { smallData, startCluster, tempDir, tinyConfig } from './helpers.js';
import { Proc, TINY_MODEL_FLAGS, epochsOf, expectEveryEpochExact, expectSameState, freePort, metricsOf, requireBuild, sameBytes, spawnCoordinator, spawnWorker, waitUntil, writeIdxDir } from './util-faults.js';
import { FaultCluster, faultHarness } from './util-fault-cluster.js';

const { cluster, procs } = faultHarness();
const roundOf = (ms: RoundMetrics[], r: number) => {
  const m = ms.find((x) => x.round === r);
  if (!m) throw new Error(`no metrics for round ${r}`);
  return m;
};

describe('worker faults (in-process coordinator, worker processes)', () => {
  it('(a) a worker killed mid-D-phase: the round completes with the other 3, its gradient is never applied, every sample is used once', async () => {
    const n = 240;
    const h = await cluster(tinyConfig({ workers: 4, batchSize: 10, epochs: 2 }), smallData(n));
    let victim = -1;
    h.at(2, 'D', (h) => {
      victim = h.coord.pool.live()[1]!.id;
      h.killMidPhase(h.procOf(victim));
    });
    await h.train();
    const ms = h.metrics();
    const hit = roundOf(ms, 2);
    expect(hit.dropped).toEqual([victim]);
    // Only the three survivors' D gradients were averaged: 30 samples, not 40.
    expect(hit).toMatchObject({ workers: 3, samples: 30 });
    // Frozen before its task went out and killed while frozen, the victim never sent one at all.
    const round2 = h.received.filter((g) => g.round === 2 && g.phase === 'D').map((g) => g.worker).sort();
    expect(round2).toEqual(h.received.filter((g) => g.round === 0 && g.phase === 'D').map((g) => g.worker).filter((w) => w !== victim).sort());
    expect(h.received.some((g) => g.worker === victim && g.round >= 2)).toBe(false);
    expect(h.logs.some((l) => new RegExp(`^worker ${victim} .*disconnected`).test(l))).toBe(true);
    for (const m of ms.filter((x) => x.round < 2)) expect(m.workers).toBe(4);
    for (const m of ms.filter((x) => x.round > 2)) expect(m.workers).toBeLessThanOrEqual(3);
    // Training went on into the second epoch without the victim.
    expect(ms.filter((m) => m.epoch === 1).length).toBeGreaterThan(0);
    expectEveryEpochExact(h.epochs(), n, 2);
    expect(h.coord.epochLog).toEqual(h.epochs());
  }, 60_000);

  it('(b) two killed and one restarted: the newcomer joins at a round boundary and accounting holds', async () => {
    const n = 400;
    const h = await cluster(tinyConfig({ workers: 4, batchSize: 10, epochs: 1 }), smallData(n));
    let victims: number[] = [];
    let restarted: Proc | null = null;
    h.at(2, 'D', (h) => {
      victims = h.coord.pool.live().slice(1, 3).map((c) => c.id);
      for (const v of victims) h.killMidPhase(h.procOf(v));
      restarted = h.addWorker();
    });
    // Hold round 3 until the restarted worker has connected, so it must join at round 4's boundary.
    h.at(3, 'D', async (h) => {
      await h.joined(restarted!);
    });
    await h.train();
    const ms = h.metrics();
    expect(roundOf(ms, 2).dropped.sort()).toEqual([...victims].sort());
    expect(roundOf(ms, 2)).toMatchObject({ workers: 2, samples: 20 });
    const newId = h.idOf(restarted!);
    expect(newId).toBe(4);
    // It joined at a boundary after the kill (round 3 at the earliest, 4 at the latest since round 3
    // waited for its connection), and only then did the round have three workers again.
    const joinedAt = ms.filter((m) => m.joined.length > 0).map((m) => m.round);
    expect(joinedAt).toHaveLength(2);
    expect(joinedAt[0]).toBe(0);
    const j = joinedAt[1]!;
    expect(j).toBeGreaterThanOrEqual(3);
    expect(j).toBeLessThanOrEqual(4);
    expect(roundOf(ms, j)).toMatchObject({ joined: [newId], workers: 3, dropped: [] });
    for (const m of ms.filter((x) => x.round > 2 && x.round < j)) expect(m.workers).toBe(2);
    expectEveryEpochExact(h.epochs(), n, 1);
  }, 60_000);

  it('(d) a worker frozen (SIGSTOP) past --round-timeout is dropped, the round completes, and it rejoins after SIGCONT', async () => {
    const n = 300;
    const timeout = 1500;
    const h = await cluster(tinyConfig({ workers: 3, batchSize: 10, epochs: 1, roundTimeoutMs: timeout }), smallData(n));
    let frozen: Proc | null = null;
    let frozenId = -1;
    h.at(2, 'D', (h) => {
      frozenId = h.coord.pool.live()[0]!.id;
      frozen = h.procOf(frozenId);
      frozen.pause();
    });
    h.at(4, 'D', async (h) => {
      frozen!.resume();
      await h.joined(frozen!, 2);
    });
    await h.train();
    const ms = h.metrics();
    const hit = roundOf(ms, 2);
    expect(hit.dropped).toEqual([frozenId]);
    expect(hit).toMatchObject({ workers: 2, samples: 20 });
    expect(hit.round_ms).toBeGreaterThanOrEqual(timeout - 50);
    expect(hit.round_ms).toBeLessThan(timeout + 3000);
    expect(h.logs.some((l) => l.includes(`worker ${frozenId} `) && /dropped: E_TIMEOUT no D gradient for round 2/.test(l))).toBe(true);
    // Only the frozen round waited for the timeout (round 4 is held on purpose until the rejoin).
    for (const m of ms.filter((x) => x.round !== 2 && x.round !== 4)) expect(m.round_ms).toBeLessThan(timeout);
    // The thawed process reconnected by itself and was admitted under a new id at a boundary.
    const again = h.idOf(frozen!);
    expect(again).not.toBe(frozenId);
    expect(ms.some((m) => m.round >= 5 && m.joined.includes(again))).toBe(true);
    expectEveryEpochExact(h.epochs(), n, 1);
  }, 60_000);

  it('(d) an in-process worker whose beforeTask never resolves is dropped at the timeout', async () => {
    const n = 100;
    const timeout = 800;
    const c = await startCluster(tinyConfig({ workers: 3, batchSize: 10, epochs: 1, roundTimeoutMs: timeout }), smallData(n), { startWorkers: 2 });
    const stall = c.addWorker({ faults: { inbound: (m) => (m.k === Kind.Task && m.round === 1 ? 'stall' : undefined) } });
    const coord = c.coord;
    try {
      await coord.train();
    } finally {
      await coord.close();
      // Its message queue is stuck behind the hung task for good: end it rather than wait out its reconnects.
      stall.crash();
    }
    await Promise.allSettled(c.runs);
    const ms = metricsOf(coord.runDir.path);
    expect(roundOf(ms, 1).dropped).toEqual([stall.id]);
    expect(roundOf(ms, 1).round_ms).toBeGreaterThanOrEqual(timeout - 50);
    expectEveryEpochExact(coord.epochLog, n, 1);
  }, 30_000);

  it('(d) a worker frozen after the last round does not hold up the end of the run', async () => {
    let h!: FaultCluster;
    let frozen: Proc | null = null;
    h = await cluster(tinyConfig({ workers: 2, batchSize: 10, maxRounds: 3 }), smallData(100), {
      coordinator: {
        hooks: {
          round: (m) => {
            if (m.round === 2) (frozen = h.procs[0]!).pause();
          },
        },
      },
    });
    await h.coord.train();
    expect(frozen).not.toBeNull();
    const t0 = Date.now();
    const closed = await Promise.race([h.coord.close().then(() => 'closed'), new Promise((r) => setTimeout(() => r('still closing'), 5000))]);
    // The healthy worker was told to stop; the frozen one must be cut off, not waited for (ws's 30 s close timeout).
    expect(closed, `close() took more than ${Date.now() - t0} ms with one worker frozen`).toBe('closed');
    expect((await h.procs[1]!.waitExit(10_000)).code).toBe(0);
  }, 30_000);

  it('(e) below --min-workers the coordinator waits --round-timeout, then fails with E_WORKERS and a checkpoint', async () => {
    const timeout = 1500;
    const h = await cluster(tinyConfig({ workers: 3, minWorkers: 2, batchSize: 10, epochs: 1, roundTimeoutMs: timeout }), smallData(300));
    let killedAt = 0;
    h.at(2, 'D', (h) => {
      for (const c of h.coord.pool.live().slice(0, 2)) h.killMidPhase(h.procOf(c.id));
      killedAt = Date.now();
    });
    const err = await h.train().then(() => null, (e: unknown) => e as { code?: string; message: string });
    const waited = Date.now() - killedAt;
    expect(err).not.toBeNull();
    expect(err!.code).toBe('E_WORKERS');
    expect(err!.message).toMatch(/only 1 workers live, --min-workers is 2; checkpoint saved to .*checkpoint\.bin/);
    expect(waited).toBeGreaterThanOrEqual(timeout);
    expect(h.logs.some((l) => /waiting for 1 more worker\(s\) \(1\/2\)/.test(l))).toBe(true);
    // Round 2 still completed with the survivor; the checkpoint holds the state after it.
    const ms = h.metrics();
    expect(ms.map((m) => m.round)).toEqual([0, 1, 2]);
    expect(roundOf(ms, 2).workers).toBe(1);
    const ck = loadCheckpoint(h.runDir);
    expect(ck.round).toBe(3);
    expect(ck.round).toBe(h.coord.round);
    expect(ck.epochUses.reduce((a, u) => a + u, 0)).toBe(3 * 10 + 3 * 10 + 10);
    expect(sameBytes(ck.weights.D, h.coord.model.weights.D)).toBe(true);
  }, 60_000);
});

describe('coordinator faults (coordinator as a process)', () => {
  it('(c) SIGKILL mid-epoch and --resume give weights bit-identical to an uninterrupted run; workers reconnect by themselves', async () => {
    requireBuild();
    const data = writeIdxDir(smallData(300));
    const total = 40;
    const common = (port: number, out: string) => [
      ...TINY_MODEL_FLAGS, '--data', data, '--workers', '2', '--batch-size', '10', '--seed', '5', '--epochs', '5',
      '--max-rounds', String(total), '--checkpoint-every', '4', '--round-timeout', '20', '--port', String(port), '--out', out,
    ];
    const runWorkers = (port: number, tag: string) => [0, 1].map((i) => {
      const w = spawnWorker(`ws://127.0.0.1:${port}`, `${tag}-w${i}`, { connectTimeoutS: 30 });
      procs.push(w);
      return w;
    });

    // Reference: uninterrupted.
    const refPort = await freePort();
    const refOut = join(tempDir(), 'run');
    const ref = spawnCoordinator(common(refPort, refOut), 'ref-coordinator');
    procs.push(ref);
    await ref.port;
    const refWorkers = runWorkers(refPort, 'ref');
    expect((await ref.waitExit(60_000)).code).toBe(0);
    for (const w of refWorkers) expect((await w.waitExit(10_000)).code).toBe(0);

    // Interrupted: freeze the coordinator mid-epoch between two checkpoints, then SIGKILL it.
    const port = await freePort();
    const out = join(tempDir(), 'run');
    const first = spawnCoordinator(common(port, out), 'coordinator-1');
    procs.push(first);
    await first.port;
    const workers = runWorkers(port, 'run');
    // 15 rounds an epoch, a checkpoint every 4: stop two or three rounds past a checkpoint in epoch 1.
    await waitUntil(() => {
      const k = metricsOf(out).length;
      return k >= 6 && k % 4 >= 2;
    }, 60_000, 'round 6', 5);
    first.pause();
    const roundsAtKill = metricsOf(out).length;
    const saved = loadCheckpoint(out);
    await first.kill('SIGKILL');
    expect(saved.round).toBeGreaterThan(0);
    expect(saved.round % 4).toBe(0);
    // Rounds after the checkpoint were lost with the process and must be redone identically.
    expect(saved.round).toBeLessThan(roundsAtKill);
    expect(roundsAtKill).toBeLessThan(15);
    const used = saved.epochUses.reduce((a, u) => a + u, 0);
    expect(used).toBe(saved.round * 20);
    for (const w of workers) expect(w.alive).toBe(true);

    const second = spawnCoordinator(['--resume', out, ...common(port, out)], 'coordinator-2');
    procs.push(second);
    await second.waitFor(new RegExp(`resumed .* at round ${saved.round},`));
    expect((await second.waitExit(60_000)).code).toBe(0);
    // The same worker processes carried on: each reconnected on its own.
    for (const w of workers) {
      expect((await w.waitExit(10_000)).code).toBe(0);
      expect(w.output).toMatch(/connection lost .*retrying in \d+ ms/);
      expect(w.output.match(/joined as worker/g)?.length).toBe(2);
    }

    const a = loadCheckpoint(refOut);
    const b = loadCheckpoint(out);
    expect(a.round).toBe(total);
    expectSameState(a, b);
    // The resumed run crossed two epoch boundaries with every sample used once in each epoch.
    const exact = { samples: 300, usedOnce: 300, missing: 0, duplicated: 0 };
    expect(epochsOf(refOut)).toEqual([{ epoch: 0, ...exact, rounds: 15 }, { epoch: 1, ...exact, rounds: 15 }]);
    // Rounds are numbered across the whole run, so the resumed epoch counts the rounds before the kill too.
    expect(epochsOf(out)).toEqual(epochsOf(refOut));
  }, 120_000);

  it('(f) a checkpoint with one flipped byte is refused by --resume with a clear error and left byte-identical', async () => {
    requireBuild();
    const good = await (await startCluster(tinyConfig({ maxRounds: 3 }), smallData(100))).finish();
    const file = join(good.runDir.path, 'checkpoint.bin');
    const orig = readFileSync(file);
    for (const at of [20, Math.floor(orig.length / 2), orig.length - 1]) {
      const dir = tempDir();
      const bad = Buffer.from(orig);
      bad[at] = bad[at]! ^ 0x10;
      writeFileSync(join(dir, 'checkpoint.bin'), bad);
      const p = spawnCoordinator(['--resume', dir, '--port', '0'], `resume-corrupt-${at}`);
      procs.push(p);
      const r = await p.waitExit(30_000);
      expect(r.code).toBe(1);
      expect(p.output).toMatch(/^coordinator: error \[E_CHECKPOINT\]: .*checkpoint\.bin: corrupt \(checksum mismatch\): refusing to use it$/m);
      expect(readFileSync(join(dir, 'checkpoint.bin')).equals(bad)).toBe(true);
      // In-process too: start() refuses before writing anything into the run directory.
      const c = new Coordinator({ config: tinyConfig(), host: '127.0.0.1', port: 0, out: dir, resume: true, dataset: smallData(100) });
      await expect(c.start()).rejects.toThrow(/corrupt \(checksum mismatch\)/);
      expect(readFileSync(join(dir, 'checkpoint.bin')).equals(bad)).toBe(true);
      expect(existsSync(join(dir, 'config.json'))).toBe(false);
    }
    // The untouched copy still resumes.
    const dir = tempDir();
    copyFileSync(file, join(dir, 'checkpoint.bin'));
    expect(loadCheckpoint(dir).round).toBe(3);
  }, 60_000);
});
