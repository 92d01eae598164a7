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
 * - With --sync-every H > 1 a round is a sync: each D task names the samples of H local steps, a
 *   worker's "gradient" is its change of weights over them (worker/local-steps.ts), D's and then
 *   G's, and the step is the outer optimiser's.
 * - A dropped worker's gradient is never applied, so its samples of this round are not used; they
 *   and the rest of its queue are dealt again to the live workers (sharding.ts). New workers join
 *   at a round boundary: they get both nets' current weights and a shard.
 * - Training continues while at least --min-workers are live; below that the coordinator waits
 *   up to --round-timeout for workers to come (back), then checkpoints and fails.
 */
import { Kind, encode } from '../shared/wire/codec.js';
import type { EvalLine } from '../shared/wire/observe.js';
import { GanError } from '../shared/wire/errors.js';
import { type Dataset, loadMnist } from '../shared/data/mnist.js';
import { type Net, type NetLayout, modelSignature, netLayout } from '../shared/compute/model.js';
import type { TrainState } from './checkpoint.js';
import { type TrainConfig, localSteps } from './config.js';
import { type RoundMetrics, roundMetrics } from './metrics.js';
import { SampleGrids } from './grids.js';
import { ModelState } from './model-state.js';
import { resumeRun } from './resume.js';
import type { CoordinatorOptions } from './options.js';
import { type Assignment, type PhaseResult, PhaseRunner } from './phase.js';
import { type EpochAccount, RunDir } from './run-dir.js';
import { EpochPlan, roundPlan, shardFrames } from './sharding.js';
import { ObserverHub, RunView, noteRound, watchWorkers } from './dashboard/observers.js';
import { serveWeb } from './dashboard/web.js';
import { describeDescriptors, descriptorLimit } from './descriptors.js';
import { admissionLimits } from '../shared/wire/admission.js';
import { WorkerPool } from './worker-pool.js';
import { SameHostHub } from './same-host.js';

export { type CoordinatorOptions, REDUCE_CHUNK } from './options.js';
export type { Topology } from './topology.js';
export type { RunHooks } from './options.js';
export type { RoundMetrics } from './metrics.js';

export class Coordinator {
  readonly cfg: TrainConfig;
  readonly layouts: Record<Net, NetLayout>;
  readonly signature: string;
  readonly runDir: RunDir;
  /** Connections to the workers: membership, byte counters, and the `gradient` event for observers. */
  readonly pool: WorkerPool;
  /** Shared regions for workers on this host (null: frames for everyone). */
  readonly sameHost: SameHostHub | null;
  private readonly grids: SampleGrids;
  /** Both nets' weights and versions, both Adam states, the moving average of G. */
  model!: ModelState;
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
  /** What the dashboard shows of this run, and the observers watching it (after start()). */
  view: RunView | null = null;
  /** The dashboard's observers (after start(), unless the dashboard is off). */
  hub: ObserverHub | null = null;
  /** Runs each phase's reduction; told when a member leaves. */
  private readonly phases: PhaseRunner;
  private joinedThisRound: number[] = [];
  private droppedThisRound: number[] = [];
  private epochStartRound = 0;
  private readonly startedAt = Date.now();
  private closed = false;
  private readonly log: (line: string) => void;

  constructor(readonly opts: CoordinatorOptions) {
    this.cfg = opts.config;
    this.log = opts.log ?? (() => {});
    this.layouts = { G: netLayout(this.cfg.model, 'G'), D: netLayout(this.cfg.model, 'D') };
    this.signature = modelSignature(this.cfg.model);
    this.runDir = new RunDir(opts.out, { reserve: true });
    this.grids = new SampleGrids(this.cfg.model, this.cfg.seed);
    // Strangers get a share of the descriptors; the run directory and the workers keep the rest.
    const descriptors = descriptorLimit();
    this.log(describeDescriptors(descriptors));
    this.sameHost = opts.sameHost === 'off' ? null : SameHostHub.open({ D: this.layouts.D.total, G: this.layouts.G.total }, this.log, undefined, opts.threadRegions);
    this.pool = new WorkerPool({
      host: opts.host, port: opts.port, token: opts.token, tls: opts.tls, heartbeatMs: opts.heartbeatMs ?? 10_000,
      model: this.cfg.model, signature: this.signature, seed: this.cfg.seed, wire: this.cfg.wire, local: localSteps(this.cfg), capacity: this.cfg.workers, sameHost: this.sameHost, log: this.log,
      onHttp: opts.dashboard === false ? undefined : serveWeb,
      onObserver: opts.dashboard === false ? undefined : (ws, proven) => this.hub?.accept(ws, proven),
      admission: { ...admissionLimits(descriptors.soft), ...opts.admission },
    });
    this.phases = new PhaseRunner({ cfg: this.cfg, opts, layouts: this.layouts, pool: this.pool, sameHost: this.sameHost, log: this.log });
    this.pool.on('left', (c, wasLive) => {
      if (!wasLive) return;
      this.needsDeal = true;
      this.droppedThisRound.push(c.id);
      this.phases.lost(c, this.model);
    });
  }

  /** Load data and state, listen, and create the run directory. Resolves to the bound port. */
  async start(): Promise<number> {
    this.data = this.opts.dataset ?? loadMnist(this.cfg.data ?? undefined).train;
    if (this.opts.resume) this.restore();
    else this.fresh();
    for (const net of ['D', 'G'] as const) this.sameHost?.publish(net, this.model.versions[net], this.model.view[net]);
    // Listen before writing anything: a port in use must leave no half-made run directory.
    const port = await this.pool.listen(this.opts.insecure);
    const config = { ...this.cfg, signature: this.signature, dataset: this.data.source, samples: this.data.n };
    // Room for two checkpoints: the new one is written beside the last before it replaces it.
    const params = this.layouts.G.total + this.layouts.D.total;
    const checkpointBytes = 4 * (3 * params + (this.cfg.emaDecay > 0 ? this.layouts.G.total : 0)) + 64 * 1024;
    this.runDir.create(config, 2 * checkpointBytes);
    this.watch(config);
    return port;
  }

  /** The dashboard's view of this run: fed from here and from the pool's events. */
  private watch(config: Record<string, unknown>): void {
    const { cfg } = this;
    const rounds = roundPlan(this.data.n, cfg);
    this.view = RunView.live(config, { round: this.round, epoch: this.epoch, totalRounds: rounds.total, roundsPerEpoch: rounds.perEpoch }, this.runDir, !!this.opts.resume);
    watchWorkers(this.view, this.pool);
    if (this.opts.dashboard !== false) this.hub = new ObserverHub({ token: this.opts.token, model: cfg.model, runs: [this.view], log: this.log });
  }

  /** Every epoch (or --max-rounds) is done: nothing is left to train. */
  get complete(): boolean {
    return this.epoch >= this.cfg.epochs || (this.cfg.maxRounds > 0 && this.round >= this.cfg.maxRounds);
  }

  /** Run until the epochs (or --max-rounds) are done, or a stop is requested. */
  async train(): Promise<void> {
    try {
      await this.rounds();
    } catch (e) {
      // A run that must stop keeps what it did: a checkpoint first (E_WORKERS has taken one).
      if (!(e instanceof GanError && e.code === 'E_WORKERS')) await this.lastCheckpoint(e);
      throw e;
    }
  }

  /** The round loop, top to bottom. */
  private async rounds(): Promise<void> {
    const cfg = this.cfg;
    await this.waitForWorkers();
    const local = cfg.syncEvery > 1 ? `, ${cfg.syncEvery} local steps per sync (outer lr ${cfg.outerLr}, momentum ${cfg.outerMomentum})` : '';
    this.log(`training ${cfg.model.kind}: ${this.data.n} samples, ${cfg.workers} workers x batch ${cfg.batchSize} = global batch ${cfg.workers * cfg.batchSize}${local}, ${cfg.epochs} epochs`);
    if (this.view) this.view.data.status.state = 'training';
    while (!this.complete && !this.stopping) {
      await this.waitForWorkers();
      if (this.stopping) break;
      const bytes0 = this.pool.bytes;
      this.startEpoch();
      this.admit();
      const plan = this.plan!;
      const t0 = performance.now();
      // A sync of a low-communication run hands each worker the samples of all its local steps.
      const assigned = this.pool.live().map((worker) => ({ worker, ids: plan.peek(worker.id, cfg.batchSize * cfg.syncEvery) })).filter((a) => a.ids.length > 0);
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
      }), new Map(d.applied.map((x) => [x.worker.id, x.report.count])));
      if (plan.remaining === 0) await this.endEpoch();
      // Written while the next rounds run: only the copy of the state is on this round's path.
      if (cfg.checkpointEvery > 0 && this.round % cfg.checkpointEvery === 0) this.noteCheckpoint(await this.runDir.saveCheckpointInBackground(this.state()));
    }
    await this.checkpoint();
    if (!this.stopping) this.writeGrid('final.png');
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
        const file = await this.checkpoint();
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
      this.pool.send(c, this.model.weightsFrame('D'));
      this.pool.send(c, this.model.weightsFrame('G'));
      this.pool.activate(c);
      this.joinedThisRound.push(c.id);
      this.needsDeal = true;
    }
    if (!this.needsDeal) return;
    const live = this.pool.live();
    const queues = this.plan!.deal(live.map((c) => c.id));
    for (const c of live) for (const f of shardFrames(c.shard, queues.get(c.id)!, this.epoch, this.data)) this.pool.send(c, f);
    this.needsDeal = false;
  }

  /** One phase (phase.ts): tasks out, the reduction, the step committed. */
  private async phase(net: Net, assigned: Assignment[]): Promise<PhaseResult> {
    await this.opts.hooks?.phase?.(this.round, net);
    return this.phases.run(this.model, this.round, this.epoch, net, assigned);
  }

  private logRound(m: RoundMetrics, counts: Map<number, number>): void {
    this.droppedThisRound = [];
    this.joinedThisRound = [];
    // The round's steps are committed: count it before anything can fail, so a checkpoint taken
    // after a failed write holds a state that resumes exactly.
    this.round++;
    this.runDir.appendMetrics(m);
    if (this.view) noteRound(this.view, this.pool, m, counts);
    this.opts.hooks?.round?.(m, this);
  }

  /** Every sample of the epoch has been used: record the accounting and the epoch's grid. */
  private async endEpoch(): Promise<void> {
    const plan = this.plan!;
    const acc = { epoch: this.epoch, ...plan.accounting(), rounds: this.round - this.epochStartRound };
    this.epochLog.push(acc);
    this.runDir.appendEpoch(acc);
    this.writeGrid(`epoch-${String(this.epoch + 1).padStart(3, '0')}.png`);
    this.view?.addEpoch(acc);
    this.view?.addEvent({ kind: 'epoch', text: `epoch ${this.epoch + 1}: ${acc.usedOnce}/${acc.samples} samples used once in ${acc.rounds} rounds` });
    this.epoch++;
    this.plan = null;
    await this.opts.hooks?.epoch?.(this.epoch, this);
  }

  /** Checkpoint before the run fails with `cause`, if the disk still takes it (the last good one stays otherwise). */
  private async lastCheckpoint(cause: unknown): Promise<void> {
    try {
      this.log(`checkpoint saved to ${await this.checkpoint()} before stopping (${(cause as Error).message})`);
    } catch (e) {
      this.log(`no checkpoint before stopping: ${(e as Error).message}; the last one is kept`);
    }
  }

  /** Checkpoint now, once any checkpoint still being written is; resolves to the file. */
  async checkpoint(): Promise<string> {
    return this.noteCheckpoint(await this.runDir.saveCheckpoint(this.state()));
  }

  private noteCheckpoint(file: string): string {
    this.view?.addEvent({ kind: 'checkpoint', text: `checkpoint at round ${this.round}` });
    return file;
  }

  /** An evaluation of the generator (--eval-every): into eval.jsonl and the dashboard. */
  recordEval(line: EvalLine & Record<string, unknown>): void {
    this.runDir.appendEval(line);
    this.view?.addEval(line);
    this.view?.addEvent({ kind: 'eval', text: `epoch ${line.epoch}: FD ${line.fd.toFixed(2)}, classifier score ${line.classifierScore.toFixed(2)}, ${line.coverage}/10 digits` });
  }

  // ---- State: a fresh run, a resumed one, and what a checkpoint holds.

  private fresh(): void {
    if (this.runDir.holdsRun()) {
      throw new GanError('E_EXISTS', `${this.runDir.path} already holds a run; use --resume ${this.runDir.path} to continue it or choose another --out`);
    }
    this.model = ModelState.fresh(this.cfg, this.layouts);
  }

  private restore(): void {
    ({ model: this.model, round: this.round, epoch: this.epoch, plan: this.plan, epochLog: this.epochLog, epochStartRound: this.epochStartRound } = resumeRun(this.runDir, this.cfg, this.layouts, this.data, this.log));
  }

  state(): TrainState {
    return {
      config: this.cfg, round: this.round, epoch: this.epoch,
      epochUses: this.plan ? this.plan.uses : new Uint8Array(this.data.n),
      ...this.model.checkpointParts(),
    };
  }

  // ---- Weights as frames, sample grids, the end of the run.

  /** The generator weights to sample from: the moving average when kept, else the latest. */
  sampleWeights(): Float32Array {
    return this.model.sampleWeights();
  }

  /** Sample the generator on the run's fixed noise into RUN/samples/NAME (and the dashboard). */
  private writeGrid(name: string): string {
    const png = this.grids.png(this.sampleWeights());
    this.view?.addGrid(name, png);
    return this.runDir.writeGrid(name, png);
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
      workers: this.view?.data.workers ?? [],
    };
  }

  /**
   * Tell workers and observers the run is over and close everything; `failure` marks a run that
   * failed, `resumes` one stopped to be resumed from its checkpoint (its workers wait for it).
   */
  async close(reason = 'run finished', failure?: Error, { resumes = false } = {}): Promise<void> {
    if (this.closed) return;
    this.closed = true;
    const state = failure ? 'failed' : this.stopping || !this.started ? 'stopped' : 'finished';
    this.view?.end(state, failure ? `${(failure as { code?: string }).code ?? 'error'}: ${failure.message}` : this.stopping ? `stopped: ${this.stopping}` : undefined);
    this.hub?.close();
    const code = failure ? ((failure as { code?: string }).code ?? 'E_INTERNAL') : undefined;
    await this.pool.close(encode({ k: Kind.Stop, reason, code, resumes: resumes && !failure ? true : undefined }), reason);
    this.sameHost?.close();
    // A run that failed between checkpoints may still be writing one; its failure was the run's.
    await this.runDir.checkpointWritten().catch(() => {});
    // Only a run whose directory exists has a summary to write (a port in use stops it before that).
    if (!this.view) return this.runDir.close();
    try {
      this.runDir.writeSummary({ ...this.summary(), state, error: failure ? { code: (failure as { code?: string }).code, message: failure.message } : undefined });
    } catch (e) {
      // A full disk that ended the run may refuse the summary too; the checkpoint already holds the state.
      this.log(`summary.json not written: ${(e as Error).message}`);
    }
    this.runDir.close();
  }
}
