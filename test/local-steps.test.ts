/**
 * Low-communication training (--sync-every H): the outer step, a worker's local steps, and runs
 * that sync every H steps: deterministic, every sample once per epoch, a worker lost between syncs,
 * resumed at a sync point, and H = 1 the synchronous run it always was.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { createHash } from 'node:crypto';
import { outerChunkStep } from '../coordinator/optimizer.js';
import { syncProblem } from '../coordinator/config.js';
import type { Coordinator } from '../coordinator/coordinator.js';
import { GanModel } from '../shared/compute/gan.js';
import { buildBatch } from '../shared/compute/batch.js';
import { initWeights } from '../shared/compute/model.js';
import { adamState, adamStep } from '../shared/numerics/adam.js';
import { digitBytes } from '../shared/data/digits.js';
import { Kind, decode, encode } from '../shared/wire/codec.js';
import { localSteps } from '../worker/local-steps.js';
import { type Cluster, smallData, startCluster, tempDir, tinyConfig, tinyModel, useWasm, values } from './helpers.js';
import { expectEveryEpochExact, sameBytes } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';

const LOCAL = { steps: 3, batch: 10, lrD: 1e-3, lrG: 2e-3, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 };

describe('the outer step', () => {
  it('at lr 1 and momentum 0 gives the weights minus the averaged change (the average of the local weights)', () => {
    const w = values(8, 1);
    const delta = values(8, 2).map((x) => x * 0.01);
    const out = { w: new Float32Array(8), m: new Float32Array(8), v: new Float32Array(8) };
    expect(outerChunkStep({ lr: 1, momentum: 0 })({ w, m: new Float32Array(8), v: new Float32Array(8) }, delta, out)).toBe(true);
    for (let i = 0; i < 8; i++) expect(out.w[i]).toBe(Math.fround(w[i]! - delta[i]!));
  });

  it('is SGD with Nesterov momentum as torch takes it, the buffer in the first moment, the second carried', () => {
    const [lr, mu] = [0.7, 0.9];
    const step = outerChunkStep({ lr, momentum: mu });
    let cur = { w: values(6, 3), m: new Float32Array(6), v: values(6, 4) };
    const want = { w: Float64Array.from(cur.w), buf: new Float64Array(6) };
    for (const seed of [5, 6, 7]) {
      const d = values(6, seed);
      const out = { w: new Float32Array(6), m: new Float32Array(6), v: new Float32Array(6) };
      expect(step(cur, d, out)).toBe(true);
      for (let i = 0; i < 6; i++) {
        want.buf[i] = Math.fround(mu * want.buf[i]! + d[i]!);
        want.w[i] = Math.fround(want.w[i]! - lr * (d[i]! + mu * want.buf[i]!));
      }
      expect(Array.from(out.m)).toEqual(Array.from(want.buf));
      expect(Array.from(out.w)).toEqual(Array.from(want.w));
      expect(sameBytes(out.v, cur.v)).toBe(true);
      cur = out;
    }
    const bad = { w: new Float32Array(1), m: new Float32Array(1), v: new Float32Array(1) };
    expect(step({ w: new Float32Array([3e38]), m: new Float32Array([3e38]), v: new Float32Array(1) }, new Float32Array([3e38]), bad)).toBe(false);
  });
});

describe('the settings of a run that syncs', () => {
  it('are checked where a checkpoint is read: whole H from 1, an outer rate above 0, a momentum below 1', () => {
    const ok = { syncEvery: 16, outerLr: 1, outerMomentum: 0 };
    expect(syncProblem(ok)).toBeNull();
    expect(syncProblem({ ...ok, syncEvery: 0 })).toMatch(/syncEvery 0 is not an integer from 1 to 1024/);
    expect(syncProblem({ ...ok, syncEvery: 2.5 })).toMatch(/syncEvery 2.5/);
    expect(syncProblem({ ...ok, outerLr: 0 })).toMatch(/outerLr 0 is not in \(0, 10\]/);
    expect(syncProblem({ ...ok, outerMomentum: 1 })).toMatch(/outerMomentum 1 is not in \[0, 1\)/);
    expect(syncProblem({ ...ok, outerMomentum: 'x' as never })).toMatch(/outerMomentum "x"/);
  });
});

describe("a worker's local steps", () => {
  it('are H iterations of D then G with a fresh Adam, leave the synced weights in the model, and repeat bit for bit', async () => {
    await useWasm();
    const data = smallData(30);
    const src = { image: (id: number) => digitBytes(data.images, id), label: (id: number) => data.labels[id]! };
    const model = new GanModel(tinyModel);
    const synced = { D: initWeights(model.d, 3), G: initWeights(model.g, 3) };
    model.setWeights('D', synced.D);
    model.setWeights('G', synced.G);
    const ids = Uint32Array.from({ length: 25 }, (_, i) => i + 2);
    const key = { seed: 9, epoch: 1 };
    const r = await localSteps(model, src, key, ids, LOCAL);
    expect(r.steps).toBe(3); // 10 + 10 + 5
    // The model holds the synced weights again.
    expect(sameBytes(model.weightsOf('D'), synced.D)).toBe(true);
    expect(sameBytes(model.weightsOf('G'), synced.G)).toBe(true);
    // By hand: the same batches, steps and Adam.
    const w = { D: synced.D.slice(), G: synced.G.slice() };
    const adam = { D: adamState(w.D.length), G: adamState(w.G.length) };
    for (const start of [0, 10, 20]) {
      const batch = ids.subarray(start, Math.min(25, start + 10));
      for (const net of ['D', 'G'] as const) {
        const b = buildBatch(tinyModel, { ...key, phase: net }, batch, src);
        const g = (net === 'D' ? model.dStep(b) : model.gStep(b)).grads;
        adamStep(w[net], g, adam[net], { lr: net === 'D' ? LOCAL.lrD : LOCAL.lrG, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 });
        model.setWeights(net, w[net]);
      }
    }
    for (const net of ['D', 'G'] as const) {
      const want = synced[net].map((s, i) => s - w[net][i]!);
      expect(sameBytes(r.delta[net], want)).toBe(true);
      expect(r.delta[net].some((x) => x !== 0)).toBe(true);
    }
    model.setWeights('D', synced.D);
    model.setWeights('G', synced.G);
    const again = await localSteps(model, src, key, ids, LOCAL);
    expect(sameBytes(again.delta.D, r.delta.D) && sameBytes(again.delta.G, r.delta.G)).toBe(true);
    expect(Number.isFinite(r.d.loss) && Number.isFinite(r.d.dReal) && Number.isFinite(r.g.loss)).toBe(true);
    model.dispose();
  });

  it("travel in the Welcome, checked like every field", () => {
    const welcome = { k: Kind.Welcome, workerId: 1, seed: 2, wire: 'fp32', maxPayload: 1 << 20, local: LOCAL } as const;
    expect(decode(encode(welcome))).toEqual(welcome);
    for (const [local, why] of [
      [{ ...LOCAL, steps: 0 }, /steps 0 is not an integer/],
      [{ ...LOCAL, batch: 2.5 }, /batch 2.5 is not an integer/],
      [{ ...LOCAL, batch: 100_001 }, /batch 100001 is not an integer from 1 to 100000/],
      [{ ...LOCAL, lrD: -1 }, /rates and epsilon must be above 0/],
      [{ ...LOCAL, beta2: 1 }, /betas must be in/],
      [{ ...LOCAL, lrG: 'x' }, /lrG is not a finite number/],
      [{ ...LOCAL, extra: 1 }, /unknown field "extra"/],
    ] as const) {
      expect(() => decode(encode({ ...welcome, local } as never)), JSON.stringify(local)).toThrow(why);
    }
  });
});

const clusters: Cluster[] = [];
const faults = faultHarness();
afterEach(async () => {
  for (const c of clusters.splice(0)) await c.coord.close().catch(() => {});
});

function fingerprint(c: Coordinator): string {
  const h = createHash('sha256');
  for (const a of [c.model.weights.D, c.model.weights.G, c.model.adam.D.m, c.model.adam.D.v, c.model.adam.G.m, c.model.adam.G.v]) h.update(new Uint8Array(a.buffer, a.byteOffset, a.byteLength));
  return h.digest('hex');
}

async function train(over: Parameters<typeof tinyConfig>[0], n: number, opts: Parameters<typeof startCluster>[2] = {}): Promise<Coordinator> {
  const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, ...over }), smallData(n), opts);
  clusters.push(c);
  return c.finish();
}

describe('a run that syncs every H steps', () => {
  it('H = 1 trains exactly as synchronous training did before local steps existed', async () => {
    // The fingerprint of this run (weights and Adam moments of both nets after 6 rounds) as the
    // synchronous code gave it before --sync-every was added.
    const coord = await train({ seed: 7, maxRounds: 6, syncEvery: 1 }, 120);
    expect(coord.round).toBe(6);
    expect(fingerprint(coord)).toBe(SYNCHRONOUS_FINGERPRINT);
  }, 60_000);

  it.each(['fp32', '8'] as const)('on the %s wire: rounds are syncs of H steps, every sample once per epoch, and two runs give the same bits', async (wire) => {
    const over = { syncEvery: 4, epochs: 2, wire, seed: 3 };
    const a = await train(over, 170);
    const b = await train(over, 170);
    expect(fingerprint(a)).toBe(fingerprint(b));
    // 170 samples, 2 workers x 10 x 4 per sync: 80, 80, then 10 (5 each).
    expectEveryEpochExact(a.epochLog, 170, 2);
    expect(a.epochLog.map((e) => e.rounds)).toEqual([3, 3]);
    expect(a.runDir.metrics().slice(0, 3).map((m) => m.samples)).toEqual([80, 80, 10]);
    // The outer step moved the weights and counts syncs; its momentum is in the first moment.
    expect(a.model.adam.D.t).toBe(6);
    expect(a.model.adam.D.m.some((x) => x !== 0)).toBe(true);
    expect(a.model.adam.D.v.every((x) => x === 0)).toBe(true);
    const sync = await train({ epochs: 2, wire, seed: 3 }, 170);
    expect(fingerprint(sync)).not.toBe(fingerprint(a));
  }, 120_000);

  it.each(['cgan', 'acgan'] as const)('%s takes local steps too: the same bits twice, every sample once, finite weights', async (kind) => {
    const over = { model: { ...tinyModel, kind }, syncEvery: 2, epochs: 1, seed: 4 };
    const a = await train(over, 90);
    const b = await train(over, 90);
    expect(fingerprint(a)).toBe(fingerprint(b));
    expectEveryEpochExact(a.epochLog, 90, 1);
    expect(a.model.weights.G.every(Number.isFinite) && a.model.weights.D.every(Number.isFinite)).toBe(true);
  }, 60_000);

  it('a worker lost after a sync has begun costs only its own local steps: its samples are dealt again', async () => {
    const c = await startCluster(tinyConfig({ workers: 3, minWorkers: 1, batchSize: 10, epochs: 2, syncEvery: 3 }), smallData(150), { startWorkers: 2 });
    clusters.push(c);
    // The third worker crashes as the task of sync 1 arrives, before it takes a local step.
    c.addWorker({ faults: { inbound: (m) => (m.k === Kind.Task && m.round === 1 && m.phase === 'D' ? 'crash' : undefined) } });
    const coord = await c.finish();
    const ms = coord.runDir.metrics();
    // 150 samples, 3 workers x 10 x 3 per sync: 90 in sync 0; in sync 1 the two left use their own
    // 20 each; the lost worker's 20 go to them in sync 2.
    expect(ms.slice(0, 3).map((m) => [m.samples, m.dropped.length])).toEqual([[90, 0], [40, 1], [20, 0]]);
    expectEveryEpochExact(coord.epochLog, 150, 2);
  }, 60_000);

  it('worker processes answer the heartbeat while they take a sync of many local steps', async () => {
    // 200 steps a sync take seconds; at a 100 ms heartbeat three unanswered pings would drop a worker.
    const h = await faults.cluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 1, syncEvery: 200 }), smallData(4000), { coordinator: { heartbeatMs: 100 } });
    await h.coord.train();
    const ms = h.coord.runDir.metrics();
    expect(ms.map((m) => [m.samples, m.dropped])).toEqual([[4000, []]]);
    expect(ms[0]!.compute_ms).toBeGreaterThan(500);
    expectEveryEpochExact(h.coord.epochLog, 4000, 1);
  }, 90_000);

  it('stopped at a sync point and resumed ends with the bits of a run that went through', async () => {
    const over = { syncEvery: 3, epochs: 2, seed: 5 };
    const through = await train(over, 130);
    const dir = tempDir();
    await train({ ...over, maxRounds: 4 }, 130, { out: dir });
    const resumed = await train(over, 130, { out: dir, resume: true });
    expect(resumed.round).toBe(through.round);
    expect(fingerprint(resumed)).toBe(fingerprint(through));
    expect(sameBytes(resumed.model.emaG!, through.model.emaG!)).toBe(true);
  }, 120_000);
});

const SYNCHRONOUS_FINGERPRINT = '7e8203902d83b19bb1b5558a985f725ad017e86d1243a6c1eb765b09783fe63e';
