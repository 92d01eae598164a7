/**
 * Workers on the coordinator's host exchange weights and gradients through shared memory
 * (shared/wire/same-host.ts): the same bits as frames, the same refusals, no region for a stranger
 * or another user, and no region left behind by a coordinator that was killed.
 */
import { existsSync, mkdirSync, readdirSync, writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { spawnSync } from 'node:child_process';
import { afterAll, describe, expect, it } from 'vitest';
import { Kind, type Message, decode, encode } from '../shared/wire/codec.js';
import { fileMapper } from '../shared/backend/addon.js';
import { SameHostHub, regionBase } from '../coordinator/same-host.js';
import { type SameHostMapper, nodeSameHost } from '../worker/same-host.js';
import { WeightsRegion, weightsRegionBytes } from '../shared/wire/same-host.js';
import { type Connect } from '../worker/transport.js';
import { nodeWorkerOptions } from '../worker/node.js';
import { WorkerClient } from '../worker/worker.js';
import type { Coordinator } from '../coordinator/coordinator.js';
import type { TrainState } from '../coordinator/checkpoint.js';
import { type Cluster, smallData, startCluster, tinyConfig } from './helpers.js';
import {
  type Proc, TINY_MODEL_FLAGS, expectEveryEpochExact, expectSameState, requireBuild, spawnCoordinator, spawnWorker, waitUntil, writeIdxDir,
} from './util-faults.js';

const mapper = fileMapper();
const noAddon = mapper ? null : 'the native addon is not built';
const isRoot = process.getuid?.() === 0;

interface Outcome {
  state: TrainState;
  shared: number;
  framed: number;
  left: string[];
  coord: Coordinator;
}

/** Train on `n` samples with `workers` workers, each made by `make(i, self)`; what the run did. */
async function train(
  over: Parameters<typeof tinyConfig>[0],
  n: number,
  make: (c: Cluster, i: number) => void,
): Promise<Outcome> {
  const lines: string[] = [];
  const left: string[] = [];
  const c = await startCluster(tinyConfig({ minWorkers: 1, ...over }), smallData(n), { startWorkers: 0, log: (l) => lines.push(l) });
  c.coord.pool.on('left', (_w, live, reason) => void (live && reason !== 'E_DONE' && left.push(reason)));
  for (let i = 0; i < tinyConfig(over).workers; i++) make(c, i);
  const coord = await c.finish();
  return {
    state: coord.state(), coord, left,
    shared: lines.filter((l) => l.includes('shares this host')).length,
    framed: lines.filter((l) => / uses frames \(/.test(l)).length,
  };
}

/** A worker that crashes when it is asked to send its G gradient of round 2, if it is worker `victim`. */
function addWorker(c: Cluster, sameHost: boolean, victim: number | null): void {
  let id = -1;
  c.addWorker({
    sameHost,
    onJoined: (x) => (id = x),
    faults: { inbound: (m: Message) => (victim !== null && id === victim && m.k === Kind.Reduce && m.round === 2 && m.phase === 'G' ? 'crash' : undefined) },
  });
}

describe('the weights region', () => {
  it('the next version is written beside the current one, which stays whole for a worker copying it; a version being written, or never written, is refused', () => {
    const sizes = { D: 5, G: 3 };
    const region = new WeightsRegion(new ArrayBuffer(weightsRegionBytes(sizes)), sizes);
    region.init();
    const read = (v: number) => {
      let got: number[] = [];
      const r = region.read('D', v, (w) => (got = [...w]));
      return r === true ? got : r;
    };
    expect(read(0)).toBe('version');
    region.publish('D', 6, Float32Array.from([1, 2, 3, 4, 5]));
    expect(read(6)).toEqual([1, 2, 3, 4, 5]);
    // Version 7 is written into its own buffer, not over version 6.
    region.writing('D', 7);
    const next = region.buffer('D', 7);
    next.set([9, 9, 9, 9, 9]);
    expect(read(7)).toBe('version');
    expect(read(6)).toEqual([1, 2, 3, 4, 5]);
    region.publish('D', 7, next);
    expect(read(7)).toEqual([9, 9, 9, 9, 9]);
    // A copy during which its buffer starts to change is refused as torn; G's buffers are apart from D's.
    region.publish('G', 7, Float32Array.from([7, 8, 9]));
    expect(region.read('D', 7, () => region.writing('D', 9))).toBe('torn');
    let g: number[] = [];
    expect(region.read('G', 7, (w) => (g = [...w]))).toBe(true);
    expect(g).toEqual([7, 8, 9]);
  });
});

describe('same-host workers and framed workers train the same bits', () => {
  for (const wire of ['fp32', '16', '8'] as const) {
    for (const workers of wire === '8' ? [2, 4] : [1, 2, 4]) {
      it(`${workers} worker${workers > 1 ? 's' : ''}, ${wire} wire${noAddon ? ` [skipped: ${noAddon}]` : ''}`, async () => {
        if (noAddon) return;
        const over = { workers, wire, batchSize: 10, maxRounds: 6 };
        const framed = await train(over, 120, (c) => addWorker(c, false, null));
        const shared = await train(over, 120, (c) => addWorker(c, true, null));
        expect(framed.shared).toBe(0);
        expect(shared.shared).toBe(workers);
        expectSameState(framed.state, shared.state);
      }, 60_000);
    }
  }

  for (const wire of ['fp32', '16', '8'] as const) {
    it(`4 workers, one killed before it sends its G gradient of round 2, ${wire} wire: the same bits, every sample once${noAddon ? ` [skipped: ${noAddon}]` : ''}`, async () => {
      if (noAddon) return;
      const over = { workers: 4, wire, batchSize: 10, epochs: 1 };
      const framed = await train(over, 240, (c) => addWorker(c, false, 1));
      const shared = await train(over, 240, (c) => addWorker(c, true, 1));
      expect(shared.shared).toBe(4);
      expect(framed.left).toHaveLength(1);
      expect(shared.left).toHaveLength(1);
      expectSameState(framed.state, shared.state);
      expectEveryEpochExact(shared.coord.epochLog, 240, 1);
    }, 60_000);
  }
});

/** The real mapper, with the slot's contents changed after each honest write by `corrupt` (given the phase's values). */
function tampering(corrupt: (g: Float32Array | Uint16Array, slotFloats: (n: number) => Float32Array) => void): SameHostMapper {
  const real = nodeSameHost()!;
  return (region, slot, sizes) => {
    const m = real(region, slot, sizes);
    const write = m.slot.write.bind(m.slot);
    m.slot.write = (g) => {
      write(g);
      corrupt(g, (n) => m.slot.floats(n));
    };
    return m;
  };
}

/** A worker whose Posted messages are rewritten by `edit` on their way out. */
function rewritingPosted(c: Cluster, edit: (m: Extract<Message, { k: Kind.Posted }>) => void): WorkerClient {
  const base = nodeWorkerOptions({ url: c.url, backend: 'wasm', connectTimeoutMs: 5000, sameHost: true });
  const connect: Connect = (url, h) => {
    const link = base.connect(url, h);
    return {
      get open() {
        return link.open;
      },
      send(frame: Uint8Array) {
        const m = decode(frame);
        if (m.k === Kind.Posted) {
          edit(m);
          return link.send(encode(m));
        }
        link.send(frame);
      },
      close: link.close.bind(link),
      terminate: link.terminate.bind(link),
    };
  };
  const w = new WorkerClient({ ...base, connect });
  c.workers.push(w);
  const run = w.run();
  run.catch(() => {});
  c.runs.push(run);
  return w;
}

describe('what a slot holds is checked as a frame is', () => {
  const bad: { what: string; code: string; worker: (c: Cluster) => void }[] = [
    {
      what: 'a NaN', code: 'E_NONFINITE',
      worker: (c) => void c.addWorker({ sameHost: tampering((g, f) => void (f(g.length)[3] = NaN)) }),
    },
    {
      what: 'a value of 1e38', code: 'E_BOUNDS',
      worker: (c) => void c.addWorker({ sameHost: tampering((g, f) => void (f(g.length)[7] = 1e38)) }),
    },
    {
      what: 'the wrong number of values', code: 'E_SHAPE',
      worker: (c) => void rewritingPosted(c, (m) => void (m.values += 1)),
    },
  ];
  for (const b of bad) {
    it(`a slot holding ${b.what} is refused with ${b.code}; the phase completes with the honest worker and every sample is used once${noAddon ? ` [skipped: ${noAddon}]` : ''}`, async () => {
      if (noAddon) return;
      const lines: string[] = [];
      const left: string[] = [];
      const c = await startCluster(tinyConfig({ workers: 2, minWorkers: 1, batchSize: 10, epochs: 1 }), smallData(100), { startWorkers: 0, log: (l) => lines.push(l) });
      c.coord.pool.on('left', (_w, _live, reason) => left.push(reason));
      c.addWorker({ sameHost: true });
      b.worker(c);
      const coord = await c.finish();
      expect(lines.filter((l) => l.includes('shares this host'))).toHaveLength(2);
      expect(left[0]).toBe(b.code);
      expectEveryEpochExact(coord.epochLog, 100, 1);
    }, 60_000);
  }
});

describe('who gets a region', () => {
  it(`a worker with the wrong token is refused before any region is named to it; a proven worker gets a slot of its own${noAddon ? ` [skipped: ${noAddon}]` : ''}`, async () => {
    if (noAddon) return;
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 3 }), smallData(40), { startWorkers: 0, token: 'right-token' });
    const dir = c.coord.sameHost!.dir!;
    const seen: Message[] = [];
    c.addWorker({ token: 'wrong-token', sameHost: true, faults: { inbound: (m) => void seen.push(m) } });
    await expect(c.runs[0]).rejects.toThrow(/E_AUTH|token/);
    expect(seen.some((m) => m.k === Kind.Welcome)).toBe(false);
    expect(JSON.stringify(seen.map((m) => ({ ...m, model: undefined, nonce: undefined })))).not.toContain(dir);
    expect(readdirSync(dir)).toHaveLength(1); // the weights region only
    c.addWorker({ token: 'right-token', sameHost: true });
    await waitUntil(() => readdirSync(dir).length === 2, 10_000, 'a slot for the proven worker');
    const coord = await c.finish();
    expect(coord.round).toBe(3);
    expect(existsSync(dir)).toBe(false);
  }, 30_000);

  it(`a worker's mapping of the weights region is read only: writing to it kills that process, not the weights${noAddon ? ` [skipped: ${noAddon}]` : ''}`, () => {
    if (noAddon) return;
    requireBuild();
    const sizes = { D: 1024, G: 512 };
    const hub = SameHostHub.open(sizes, () => {})!;
    try {
      hub.publish('D', 3, new Float32Array(sizes.D).fill(0.5));
      const addon = join(process.cwd(), 'dist/shared/backend/addon.js');
      const script = `const { fileMapper } = await import(${JSON.stringify(addon)}); const b = fileMapper()(${JSON.stringify(hub.regionPath)}, ${weightsRegionBytes(sizes)}, 2); new Float32Array(b, 64, 4)[0] = 7; console.log('wrote');`;
      const r = spawnSync(process.execPath, ['--input-type=module', '-e', script], { encoding: 'utf8' });
      expect(r.stdout).not.toContain('wrote');
      expect(r.signal ?? r.status, r.stderr).toMatch(/SIGSEGV|SIGBUS/);
      let held: number[] = [];
      const region = new WeightsRegion(mapper!(hub.regionPath, weightsRegionBytes(sizes), 2), sizes);
      expect(region.read('D', 3, (w) => (held = [...w.subarray(0, 4)]))).toBe(true);
      expect(held).toEqual([0.5, 0.5, 0.5, 0.5]);
    } finally {
      hub.close();
    }
  });

  const procs: Proc[] = [];
  afterAll(async () => {
    await Promise.all(procs.map((p) => p.kill('SIGKILL')));
  });

  it.skipIf(!isRoot || !!noAddon)(`a worker running as another user cannot map the region: it trains through frames${isRoot ? '' : ' [skipped: needs root to run a worker as nobody]'}`, async () => {
    requireBuild();
    const lines: string[] = [];
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 4 }), smallData(40), { startWorkers: 0, log: (l) => lines.push(l) });
    const w = spawnWorker(c.url, 'nobody-worker', { wrap: ['setpriv', '--reuid=65534', '--regid=65534', '--clear-groups'] });
    procs.push(w);
    const coord = await c.finish();
    expect(coord.round).toBe(4);
    expect(lines.join('\n')).toMatch(/uses frames \(EACCES/);
    expect(lines.join('\n')).not.toMatch(/shares this host/);
    expect((await w.waitExit(15_000)).code, w.output).toBe(0);
  }, 60_000);
});

describe('regions left behind', () => {
  it(`a region directory of a coordinator that is gone is removed by the next one; a live one's stays${noAddon ? ` [skipped: ${noAddon}]` : ''}`, () => {
    if (noAddon) return;
    const base = regionBase();
    const gone = spawnSync(process.execPath, ['-e', 'process.stdout.write(String(process.pid))'], { encoding: 'utf8' }).stdout;
    const stale = join(base, `gan-ddp-${gone}-test`);
    const live = join(base, `gan-ddp-${process.pid}-test`);
    for (const d of [stale, live]) {
      mkdirSync(d, { recursive: true });
      writeFileSync(join(d, 'region'), 'x');
    }
    const lines: string[] = [];
    const hub = SameHostHub.open({ D: 10, G: 10 }, (l) => lines.push(l), base)!;
    try {
      expect(existsSync(stale)).toBe(false);
      expect(existsSync(live)).toBe(true);
      expect(lines.join('\n')).toMatch(/removed 1 shared-memory region/);
    } finally {
      hub.close();
      spawnSync('rm', ['-rf', live]);
    }
    expect(existsSync(hub.dir!)).toBe(false);
  });

  it(`a coordinator killed with SIGKILL leaves its region; the next coordinator removes it${noAddon ? ` [skipped: ${noAddon}]` : ''}`, async () => {
    if (noAddon) return;
    requireBuild();
    const data = writeIdxDir(smallData(400));
    const coord = spawnCoordinator([...TINY_MODEL_FLAGS, '--port', '0', '--data', data, '--workers', '1', '--batch-size', '10', '--epochs', '50', '--out', join(data, 'run')], 'killed-coordinator');
    const worker = spawnWorker(`ws://127.0.0.1:${await coord.port}`, 'killed-coordinator-worker', { connectTimeoutS: 2 });
    try {
      await coord.waitFor(/shares this host/, 30_000);
      const pid = coord.child.pid!;
      const left = () => readdirSync(regionBase()).filter((n) => n.startsWith(`gan-ddp-${pid}-`));
      expect(left()).toHaveLength(1);
      coord.child.kill('SIGKILL');
      await coord.waitExit(10_000);
      expect(left()).toHaveLength(1);
      const hub = SameHostHub.open({ D: 10, G: 10 }, () => {})!;
      hub.close();
      expect(left()).toHaveLength(0);
    } finally {
      await worker.kill('SIGKILL');
      await coord.kill('SIGKILL');
    }
  }, 60_000);
});
