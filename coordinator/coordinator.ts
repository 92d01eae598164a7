/**
 * The coordinator: owns the data, the authoritative weights of G and D, both Adam states, the
 * moving average of G, the run directory and all logging. It never computes model gradients.
 * train() is the whole round loop, top to bottom.
 *
 * Invariants of a round (one GAN iteration):
 * - D phase, then G phase. In each, every live worker of the round gets a task naming the round,
 *   the phase, the weight versions it must hold and the sample ids to use. Their gradients are
 *   summed weighted by sample count in worker-id order (never arrival order), chunk by chunk as
 *   they arrive, directly or relayed through workers (reduction.ts); one Adam step goes to that net
 *   alone, and its new weights go out chunk by chunk, the same bytes to every worker.
 * - A dropped worker's gradient is never applied, so its samples of this round are not used; they
 *   and the rest of its queue are dealt again to the live workers (sharding.ts). New workers join
 *   at a round boundary: they get both nets' current weights and a shard.
 * - Training continues while at least --min-workers are live; below that the coordinator waits
 *   up to --round-timeout for workers to come (back), then checkpoints and fails.
 */
import { Kind, type ReportMsg, encode } from '../shared/codec.js';
import { GanError } from '../shared/errors.js';
import { type Dataset, loadMnist } from '../shared/mnist.js';
import { type Net, type NetLayout, initWeights, isConditional, modelSignature, netLayout } from '../shared/model.js';
import { gridPng } from '../shared/png.js';
import { fixedNoise, sampleGenerator } from '../shared/sampling.js';
import type { TrainState } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { type RoundMetrics, roundMetrics } from './metrics.js';
import { type AdamState, adamHyper, adamState, emaUpdate } from './optimizer.js';
import { Reduction } from './reduction.js';
import { type EpochAccount, RunDir } from './run-dir.js';
import { EpochPlan } from './sharding.js';
import { SHARD_CHUNK, type WorkerConn, WorkerPool } from './worker-pool.js';

/** Floats per chunk of a reduction: small enough to pipeline over a few hops, large enough that per-chunk costs vanish. */
export const REDUCE_CHUNK = 65536;

/** When workers relay partial sums to each other: `auto` when at least three can and sit on other hosts than the coordinator. */
export type RelayPolicy = 'auto' | 'always' | 'never';

export type { RoundMetrics } from './metrics.js';

export interface CoordinatorOptions {
  config: TrainConfig;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Run directory. */
  out: string;
  /** Continue the run in `out` from its checkpoint. */
  resume?: boolean;
  token?: string;
  /** Allow listening beyond loopback without a token. */
  insecure?: boolean;
  tls?: { cert: Buffer; key: Buffer };
  /** Interval of WebSocket pings; a worker that misses three in a row is dropped. */
  heartbeatMs?: number;
  /** Data already loaded (tests), instead of config.data / the embedded digits. */
  dataset?: Dataset;
  /** Human-readable progress lines. */
  log?: (line: string) => void;
  /** Called after every round with its metrics (progress bar). */
  onRound?: (m: RoundMetrics, c: Coordinator) => void;
  /** Called at the end of every epoch, before the next begins (evaluation). */
  onEpoch?: (epoch: number, c: Coordinator) => Promise<void> | void;
  /** When workers relay partial sums (default auto). */
  relay?: RelayPolicy;
  /** Floats per reduction chunk (default REDUCE_CHUNK). */
  reduceChunk?: number;
  /** Test seam: awaited at each phase boundary before that phase's tasks go out (fault injection). */
  testBeforePhase?: (round: number, phase: Net) => Promise<void> | void;
}

/** One worker's applied gradient in a phase. */
interface Contribution {
  worker: WorkerConn;
  report: ReportMsg;
}

/** The samples one worker computes on this round. */
interface Assignment {
  worker: WorkerConn;
  ids: Uint32Array;
}

export class Coordinator {
  readonly cfg: TrainConfig;
  readonly layouts: Record<Net, NetLayout>;
  readonly signature: string;
  readonly runDir: RunDir;
  /** Connections to the workers: membership, byte counters, and the `gradient` event for observers. */
  readonly pool: WorkerPool;
  weights!: Record<Net, Float32Array>;
  adam!: Record<Net, AdamState>;
  /** Moving average of G's weights (null with --ema 0), updated after every G step. */
  emaG: Float32Array | null = null;
  versions = { D: 0, G: 0 };
  round = 0;
  epoch = 0;
  /** Who uses which samples in the current epoch; null between epochs. */
  plan: EpochPlan | null = null;
  data!: Dataset;
  /** Per-epoch accounting, appended at each epoch end. */
  epochLog: EpochAccount[] = [];

  /** Membership changed since the epoch's samples were last dealt: deal the unused ones again. */
  private needsDeal = true;
  private stopping: string | null = null;
  private started = false;
  /** Scratch for a phase's running sums. */
  private acc: Record<Net, Float32Array>;
  /** Where a phase's Adam step writes the new weights and moments; swapped in when it commits. */
  private next!: Record<Net, { w: Float32Array; m: Float32Array; v: Float32Array }>;
  /** The phase being reduced (its frames go there), and the relay chains of the last committed one. */
  private reduction: Reduction | null = null;
  private lastChains: number[][] = [];
  private weightFrames: Record<Net, Uint8Array | null> = { D: null, G: null };
  private joinedThisRound: number[] = [];
  private droppedThisRound: number[] = [];
  private epochStartRound = 0;
  private readonly startedAt = Date.now();
  private readonly log: (line: string) => void;

  constructor(readonly opts: CoordinatorOptions) {
    this.cfg = opts.config;
    this.log = opts.log ?? (() => {});
    this.layouts = { G: netLayout(this.cfg.model, 'G'), D: netLayout(this.cfg.model, 'D') };
    this.signature = modelSignature(this.cfg.model);
    this.acc = { G: new Float32Array(this.layouts.G.total), D: new Float32Array(this.layouts.D.total) };
    this.runDir = new RunDir(opts.out);
    this.pool = new WorkerPool({
      host: opts.host, port: opts.port, token: opts.token, tls: opts.tls, heartbeatMs: opts.heartbeatMs ?? 10_000,
      model: this.cfg.model, signature: this.signature, seed: this.cfg.seed, fp16: this.cfg.fp16, capacity: this.cfg.workers, log: this.log,
    });
    this.pool.on('left', (c, wasLive) => {
      if (!wasLive) return;
      this.needsDeal = true;
      this.droppedThisRound.push(c.id);
      this.reduction?.lost(c);
      this.repairRelays(c.id);
    });
  }

  /** Load data and state, listen, and create the run directory. Resolves to the bound port. */
  async start(): Promise<number> {
    this.data = this.opts.dataset ?? loadMnist(this.cfg.data ?? undefined).train;
    if (this.opts.resume) this.restore();
    else this.fresh();
    // Listen before writing anything: a port in use must leave no half-made run directory.
    const port = await this.pool.listen(this.opts.insecure);
    this.runDir.create({ ...this.cfg, signature: this.signature, dataset: this.data.source, samples: this.data.n });
    return port;
  }

  /** Run until the epochs (or --max-rounds) are done, or a stop is requested. */
  async train(): Promise<void> {
    const cfg = this.cfg;
    await this.waitForWorkers();
    const grid = this.gridNoise();
    this.log(`training ${cfg.model.kind}: ${this.data.n} samples, ${cfg.workers} workers x batch ${cfg.batchSize} = global batch ${cfg.workers * cfg.batchSize}, ${cfg.epochs} epochs`);
    while (this.epoch < cfg.epochs && !(cfg.maxRounds > 0 && this.round >= cfg.maxRounds) && !this.stopping) {
      await this.waitForWorkers();
      if (this.stopping) break;
      const bytes0 = this.pool.bytes;
      this.startEpoch();
      this.admit();
      const plan = this.plan!;
      const t0 = performance.now();
      const assigned = this.pool.live().map((worker) => ({ worker, ids: plan.peek(worker.id, cfg.batchSize) })).filter((a) => a.ids.length > 0);
      if (assigned.length === 0) {
        this.needsDeal = true;
        continue;
      }

      // D phase: gradients of D's loss on real rows and fresh fakes, summed and stepped into D.
      const d = await this.phase('D', assigned);
      if (d.applied.length === 0) {
        this.log(`round ${this.round}: no D gradient arrived; retrying the round`);
        this.needsDeal = true;
        continue;
      }
      for (const { worker, report } of d.applied) plan.commit(worker.id, report.count);

      // G phase: the workers whose D gradient was applied, on the same samples' noise.
      const gAssigned = d.applied.filter((x) => x.worker.state === 'live').map((x) => ({ worker: x.worker, ids: assigned.find((a) => a.worker === x.worker)!.ids.subarray(0, x.report.count) }));
      const g = gAssigned.length ? await this.phase('G', gAssigned) : { applied: [], busyMs: 0 };
      const reduceMs = d.busyMs + g.busyMs;

      this.logRound(roundMetrics({
        round: this.round, epoch: this.epoch, d: d.applied.map((x) => x.report), g: g.applied.map((x) => x.report),
        liveWorkers: this.pool.live().length, batchSize: cfg.batchSize, roundMs: performance.now() - t0, reduceMs,
        bytesIn: this.pool.bytes.in - bytes0.in, bytesOut: this.pool.bytes.out - bytes0.out,
        dropped: this.droppedThisRound, joined: this.joinedThisRound, epochUsed: plan.used, epochSamples: plan.n,
      }));
      if (plan.remaining === 0) await this.endEpoch(grid);
      if (cfg.checkpointEvery > 0 && this.round % cfg.checkpointEvery === 0) this.checkpoint();
    }
    this.checkpoint();
    if (!this.stopping) this.writeGrid(grid, 'final.png');
  }

  // ---- The steps of a round, in the order train() takes them.

  /**
   * Before the first round: wait (without limit) for all --workers. Later: wait up to
   * --round-timeout for at least --min-workers, else checkpoint and fail.
   */
  private async waitForWorkers(): Promise<void> {
    const first = !this.started;
    const need = first ? this.cfg.workers : this.cfg.minWorkers;
    let announced = false;
    const deadline = Date.now() + (first ? Infinity : this.cfg.roundTimeoutMs);
    for (;;) {
      const have = this.pool.live().length + this.pool.joining().length;
      if (have >= need || this.stopping) {
        this.started = true;
        return;
      }
      if (Date.now() >= deadline) {
        const file = this.checkpoint();
        throw new GanError('E_WORKERS', `only ${this.pool.live().length} workers live, --min-workers is ${this.cfg.minWorkers}; checkpoint saved to ${file}`);
      }
      if (!announced) {
        this.log(`waiting for ${need - have} more worker(s) (${have}/${need})`);
        announced = true;
      }
      await this.pool.changed(Math.min(1000, deadline - Date.now()));
    }
  }

  /** A new epoch begins when the last one's samples are used up: a fresh seeded permutation. */
  private startEpoch(): void {
    if (this.plan) return;
    this.plan = new EpochPlan(this.data.n, this.cfg.seed, this.epoch);
    this.epochStartRound = this.round;
    this.needsDeal = true;
  }

  /** Joiners get both nets' weights and become live; then the epoch's unused samples are dealt again if membership changed. */
  private admit(): void {
    for (const c of this.pool.joining()) {
      this.pool.send(c, this.weightsFrame('D'));
      this.pool.send(c, this.weightsFrame('G'));
      this.pool.activate(c);
      this.joinedThisRound.push(c.id);
      this.needsDeal = true;
    }
    if (!this.needsDeal) return;
    const live = this.pool.live();
    const queues = this.plan!.deal(live.map((c) => c.id));
    for (const c of live) this.ship(c, queues.get(c.id)!);
    this.needsDeal = false;
  }

  /** Send a worker the images of its queue that it does not hold yet. */
  private ship(c: WorkerConn, queue: Uint32Array): void {
    const reset = c.heldEpoch !== this.epoch;
    if (reset) {
      c.held.clear();
      c.heldEpoch = this.epoch;
    }
    const missing = queue.filter((id) => !c.held.has(id));
    for (let off = 0; off < missing.length || (reset && off === 0); off += SHARD_CHUNK) {
      const ids = missing.subarray(off, off + SHARD_CHUNK);
      const images = new Uint8Array(ids.length * 784);
      const labels = new Uint8Array(ids.length);
      ids.forEach((id, i) => {
        images.set(this.data.images.subarray(id * 784, (id + 1) * 784), i * 784);
        labels[i] = this.data.labels[id]!;
        c.held.add(id);
      });
      this.pool.send(c, encode({ k: Kind.Shard, epoch: this.epoch, reset: reset && off === 0, ids, images, labels }));
      if (ids.length === 0) break;
    }
  }

  /**
   * One phase: tasks out, gradients summed in worker-id order as their chunks arrive (directly or
   * relayed), Adam stepped and the new weights sent chunk by chunk (reduction.ts); then the step is
   * committed here. Returns whose gradients were applied and the coordinator's own time.
   */
  private async phase(net: Net, assigned: Assignment[]): Promise<{ applied: Contribution[]; busyMs: number }> {
    await this.opts.testBeforePhase?.(this.round, net);
    const live = assigned.filter((a) => a.worker.state === 'live');
    if (live.length === 0) return { applied: [], busyMs: 0 };
    const relay = this.relayMembers(live.map((a) => a.worker));
    const adam = this.adam[net];
    this.next ??= {
      D: { w: new Float32Array(this.layouts.D.total), m: new Float32Array(this.layouts.D.total), v: new Float32Array(this.layouts.D.total) },
      G: { w: new Float32Array(this.layouts.G.total), m: new Float32Array(this.layouts.G.total), v: new Float32Array(this.layouts.G.total) },
    };
    const reduction = new Reduction({
      net, round: this.round, epoch: this.epoch, versions: { ...this.versions },
      members: live.map((a, i) => ({ member: { conn: a.worker, count: a.ids.length, relay: relay[i]! }, ids: a.ids })),
      chunk: this.opts.reduceChunk ?? REDUCE_CHUNK, fp16: this.cfg.fp16,
      current: { w: this.weights[net], m: adam.m, v: adam.v }, next: this.next[net], acc: this.acc[net],
      hyper: adamHyper(adam.t + 1, { lr: net === 'D' ? this.cfg.lrD : this.cfg.lrG, beta1: this.cfg.beta1, beta2: this.cfg.beta2, epsilon: this.cfg.epsilon }),
      reportTimeoutMs: this.cfg.roundTimeoutMs, stallMs: Math.min(this.cfg.roundTimeoutMs, 10_000),
      send: (c, f) => this.pool.send(c, f), drop: (c, e) => this.pool.drop(c, e), log: this.log,
    });
    this.reduction = reduction;
    this.pool.route((c, m) => reduction.onMessage(c, m));
    const r = await reduction.run();
    this.reduction = null;
    this.pool.route(null);
    if (r.applied.length > 0) this.commit(net, r.chains);
    const applied = r.applied.map(({ conn, report }) => ({ worker: conn, report }));
    return { applied, busyMs: r.busyMs };
  }

  /** The phase's step took: the next weights and moments become the current ones. */
  private commit(net: Net, chains: number[][]): void {
    const next = this.next[net];
    const adam = this.adam[net];
    this.next[net] = { w: this.weights[net], m: adam.m, v: adam.v };
    this.weights[net] = next.w;
    adam.m = next.m;
    adam.v = next.v;
    adam.t++;
    this.versions[net]++;
    this.weightFrames[net] = null;
    this.lastChains = chains;
    // Workers never see the average.
    if (net === 'G' && this.emaG) emaUpdate(this.emaG, this.weights.G, this.cfg.emaDecay, adam.t);
  }

  /** Which of these workers relay partial sums in this phase (see RelayPolicy). */
  private relayMembers(workers: WorkerConn[]): boolean[] {
    const policy = this.opts.relay ?? 'auto';
    const able = workers.map((w) => w.peerUrl !== '');
    if (policy === 'never') return workers.map(() => false);
    if (policy === 'always') return able;
    const remote = workers.map((w, i) => able[i]! && !isLoopbackIp(w.remoteIp));
    return remote.filter(Boolean).length >= 3 ? remote : workers.map(() => false);
  }

  /**
   * A worker that relayed weights in the last phase is gone: the members it forwarded to may be
   * missing them, so they get both nets' current weights directly (a worker keeps the newest).
   */
  private repairRelays(id: number): void {
    for (const chain of this.lastChains) {
      const at = chain.indexOf(id);
      if (at <= 0) continue;
      const orphans = new Set(chain.slice(0, at));
      for (const c of this.pool.live()) {
        if (!orphans.has(c.id)) continue;
        this.pool.send(c, this.weightsFrame('D'));
        this.pool.send(c, this.weightsFrame('G'));
      }
    }
  }

  private logRound(m: RoundMetrics): void {
    this.droppedThisRound = [];
    this.joinedThisRound = [];
    this.runDir.appendMetrics(m);
    this.round++;
    this.opts.onRound?.(m, this);
  }

  /** Every sample of the epoch has been used: record the accounting and the epoch's grid. */
  private async endEpoch(grid: GridNoise): Promise<void> {
    const plan = this.plan!;
    const acc = { epoch: this.epoch, ...plan.accounting(), rounds: this.round - this.epochStartRound };
    this.epochLog.push(acc);
    this.runDir.appendEpoch(acc);
    this.writeGrid(grid, `epoch-${String(this.epoch + 1).padStart(3, '0')}.png`);
    this.epoch++;
    this.plan = null;
    await this.opts.onEpoch?.(this.epoch, this);
  }

  checkpoint(): string {
    return this.runDir.saveCheckpoint(this.state());
  }

  // ---- State: a fresh run, a resumed one, and what a checkpoint holds.

  private fresh(): void {
    if (this.runDir.holdsRun()) {
      throw new GanError('E_EXISTS', `${this.runDir.path} already holds a run; use --resume ${this.runDir.path} to continue it or choose another --out`);
    }
    this.weights = { G: initWeights(this.layouts.G, this.cfg.seed), D: initWeights(this.layouts.D, this.cfg.seed) };
    this.adam = { G: adamState(this.layouts.G.total), D: adamState(this.layouts.D.total) };
    this.emaG = this.cfg.emaDecay > 0 ? this.weights.G.slice() : null;
  }

  private restore(): void {
    const s = this.runDir.loadCheckpoint();
    const sig = modelSignature(s.config.model);
    if (sig !== this.signature) throw new GanError('E_CHECKPOINT', `checkpoint in ${this.runDir.path} is for model ${sig}, this run is ${this.signature}`);
    if (s.config.seed !== this.cfg.seed) throw new GanError('E_CHECKPOINT', `checkpoint seed ${s.config.seed} differs from --seed ${this.cfg.seed}`);
    if (s.epochUses.length !== this.data.n) throw new GanError('E_CHECKPOINT', `checkpoint was made on ${s.epochUses.length} samples, the data has ${this.data.n}`);
    this.weights = s.weights;
    this.adam = { G: { ...s.adam.G, t: s.adamSteps.G }, D: { ...s.adam.D, t: s.adamSteps.D } };
    this.emaG = this.cfg.emaDecay > 0 ? (s.emaG ?? s.weights.G.slice()) : null;
    if (this.emaG && !s.emaG) this.log(`the checkpoint kept no moving average of G: starting one (decay ${this.cfg.emaDecay}) from the current weights`);
    this.versions = { ...s.versions };
    this.round = s.round;
    this.epoch = s.epoch;
    this.plan = s.epochUses.some((u) => u > 0) ? new EpochPlan(this.data.n, this.cfg.seed, this.epoch, s.epochUses) : null;
    // Rounds logged after this checkpoint were lost with the process: they will be run again.
    this.runDir.truncateForResume(this.round, this.epoch);
    this.epochLog = this.runDir.epochs();
    // Rounds are numbered across epochs, so the current epoch began after all completed ones.
    this.epochStartRound = this.epochLog.reduce((a, e) => a + e.rounds, 0);
    this.log(`resumed ${this.runDir.path} at round ${this.round}, epoch ${this.epoch + 1} (${this.plan?.used ?? 0}/${this.data.n} samples of the epoch used)`);
  }

  state(): TrainState {
    return {
      config: this.cfg,
      round: this.round,
      epoch: this.epoch,
      versions: { ...this.versions },
      adamSteps: { D: this.adam.D.t, G: this.adam.G.t },
      epochUses: this.plan ? this.plan.uses : new Uint8Array(this.data.n),
      weights: this.weights,
      emaG: this.emaG ?? undefined,
      adam: { G: { m: this.adam.G.m, v: this.adam.G.v }, D: { m: this.adam.D.m, v: this.adam.D.v } },
    };
  }

  // ---- Weights as frames, sample grids, the end of the run.

  private weightsFrame(net: Net): Uint8Array {
    this.weightFrames[net] ??= encode({ k: Kind.Weights, net, version: this.versions[net], data: this.weights[net] });
    return this.weightFrames[net];
  }

  /** The generator weights to sample from: the moving average when kept, else the latest. */
  sampleWeights(): Float32Array {
    return this.emaG ?? this.weights.G;
  }

  /** The run's fixed noise: an 8x8 grid, or 10x10 with one row per digit for conditional models. */
  gridNoise(): GridNoise {
    const cols = isConditional(this.cfg.model) ? 10 : 8;
    return { ...fixedNoise(this.cfg.model, this.cfg.seed, cols * cols), cols };
  }

  /** Sample the generator on the run's fixed noise into RUN/samples/NAME. */
  writeGrid(grid: GridNoise, name: string): string {
    const images = sampleGenerator(this.cfg.model, this.sampleWeights(), grid.noise, isConditional(this.cfg.model) ? grid.labels : undefined);
    return this.runDir.writeGrid(name, gridPng(images, grid.cols * grid.cols, grid.cols));
  }

  /** Ask the run to end at the next round boundary (SIGINT / SIGTERM): it checkpoints and returns. */
  requestStop(reason: string): void {
    this.stopping ??= reason;
    this.pool.poke();
  }

  summary(): Record<string, unknown> {
    const ms = this.runDir.metrics();
    const finalGrid = this.runDir.gridFile('final.png');
    return {
      rounds: this.round,
      epochs_completed: this.epoch,
      seconds: (Date.now() - this.startedAt) / 1000,
      stopped: this.stopping,
      last_round: ms[ms.length - 1] ?? null,
      epochs: this.epochLog,
      checkpoint: this.runDir.checkpointFile,
      final_grid: this.runDir.existing(finalGrid),
    };
  }

  /** Tell workers the run is over and close everything. */
  async close(reason = 'run finished'): Promise<void> {
    await this.pool.close(encode({ k: Kind.Stop, reason }), reason);
  }
}

const isLoopbackIp = (ip: string) => ip === '::1' || ip.startsWith('127.') || ip.startsWith('::ffff:127.');

export interface GridNoise {
  noise: Float32Array;
  labels: Uint8Array;
  cols: number;
}
