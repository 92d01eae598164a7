/**
 * One phase of a round, as the round loop (coordinator.ts) takes it: the tasks go out, the
 * topology of the phase's reduction is chosen (topology.ts), the reduction runs (reduction.ts) and
 * its step is committed to the model state, then published to the workers that share this host.
 *
 * Invariants:
 * - Nothing changes the model state but a committed reduction: an abandoned phase leaves the
 *   weights, moments and versions as they were.
 * - A worker lost after the commit that relayed weights to others in that phase leaves them
 *   without the new version: they get both nets' current weights directly (repair()).
 */
import { Kind, type ReportMsg, encode } from '../shared/wire/codec.js';
import { ChunkPool } from '../shared/numerics/chunks.js';
import type { Net, NetLayout } from '../shared/compute/model.js';
import type { TrainConfig } from './config.js';
import type { ModelState } from './model-state.js';
import { type CoordinatorOptions, REDUCE_CHUNK } from './options.js';
import { Reduction } from './reduction.js';
import { chooseTopology } from './topology.js';
import type { SameHostHub } from './same-host.js';
import type { WorkerConn, WorkerPool } from './worker-pool.js';

/** The samples one worker computes in a phase. */
export interface Assignment {
  worker: WorkerConn;
  ids: Uint32Array;
}

/** One worker's applied gradient in a phase. */
export interface Contribution {
  worker: WorkerConn;
  report: ReportMsg;
}

export interface PhaseResult {
  applied: Contribution[];
  /** The coordinator's own work in the phase, in ms. */
  busyMs: number;
}

export interface PhaseContext {
  cfg: TrainConfig;
  opts: CoordinatorOptions;
  layouts: Record<Net, NetLayout>;
  pool: WorkerPool;
  sameHost: SameHostHub | null;
  log: (line: string) => void;
}

export class PhaseRunner {
  /** The phase being reduced (the pool's frames go there). */
  private reduction: Reduction<WorkerConn> | null = null;
  /** Who passed new weights on to whom in the last committed phase (worker ids). */
  private relayed = new Map<number, number[]>();
  /** The last topology logged, so that a change is said once. */
  private said = '';
  /** What each net's phase decodes received chunks into. */
  private readonly pools = { D: new ChunkPool(), G: new ChunkPool() };
  /** The attempt of the reduction that made each net's current version (undefined: none in this process). */
  private readonly madeBy: Record<Net, number | undefined> = { D: undefined, G: undefined };
  /** Bytes of each net's new weights per byte of gradient in its last phase's frames (fp32: XOR deltas; shardOwners balances links by it). */
  private readonly weightsRatio = { D: 1, G: 1 };

  constructor(private readonly x: PhaseContext) {}

  /**
   * Tasks out, gradients summed in worker-id order as their chunks arrive (directly or relayed),
   * Adam stepped and the new weights sent chunk by chunk (reduction.ts); then the step is
   * committed into `model`. Returns whose gradients were applied and the coordinator's own time.
   */
  async run(model: ModelState, round: number, epoch: number, net: Net, assigned: Assignment[]): Promise<PhaseResult> {
    const { cfg, opts, pool, sameHost } = this.x;
    const live = assigned.filter((a) => a.worker.state === 'live');
    if (live.length === 0) return { applied: [], busyMs: 0 };
    const { D: dVersion, G: gVersion } = model.versions;
    const { D: dAttempt, G: gAttempt } = this.madeBy;
    for (const { worker, ids } of live) pool.send(worker, encode({ k: Kind.Task, round, epoch, phase: net, dVersion, gVersion, dAttempt, gAttempt, ids }));
    const slot = live.map((a) => sameHost?.shares(a.worker) ?? false);
    // A worker that shares this host never relays: its tensors do not cross a link at all.
    const topology = chooseTopology(live.map((a, i) => (slot[i] ? { ...a.worker, peerUrl: '' } : a.worker)), opts.topology ?? 'auto');
    const relay = topology.relay;
    const said = `${topology.kind} among ${live.filter((_, i) => relay[i]).map((a) => a.worker.id).join(',')}`;
    if (said !== this.said) {
      this.said = said;
      this.x.log(`topology: ${topology.kind}${topology.kind === 'star' ? '' : ` among workers ${live.filter((_, i) => relay[i]).map((a) => a.worker.id).join(', ')}`} (${topology.why})`);
    }
    // On the fp32 wire the step writes the new weights into the shared region too, in the same pass (published at commit).
    const stepInto = cfg.wire === 'fp32' ? sameHost?.stepInto(net, model.versions[net] + 1) ?? undefined : undefined;
    const reduction = new Reduction<WorkerConn>({
      net, round, version: model.versions[net],
      members: live.map((a, i) => ({ conn: a.worker, count: a.ids.length, relay: relay[i]!, slot: slot[i] })),
      relayAs: topology.kind === 'sharded' ? 'group' : 'chain',
      // Chunks pipeline frames; when every member posts through its slot the whole net is one chunk (one threaded Adam step).
      chunk: slot.every(Boolean) ? this.x.layouts[net].total : opts.reduceChunk ?? REDUCE_CHUNK, wire: cfg.wire,
      current: model.current(net), next: model.next[net], acc: model.acc[net], step: model.nextStep(net), pool: this.pools[net],
      view: { current: model.view[net], next: model.nextView[net] }, stepInto, weightsRatio: this.weightsRatio[net],
      // A sync's D task is H local steps: it gets H times the time one step's phase gets.
      reportTimeoutMs: cfg.roundTimeoutMs * (net === 'D' ? cfg.syncEvery : 1), stallMs: Math.min(cfg.roundTimeoutMs, 10_000),
      send: (c, f) => pool.send(c, f), drop: (c, e) => pool.drop(c, e), log: this.x.log,
      take: (c, values, fp16) => sameHost!.take(c, values, fp16),
    });
    this.reduction = reduction;
    pool.route((c, m) => reduction.onMessage(c, m));
    const done = reduction.start();
    // The workers are computing: the moving average takes G's last step now, not before their tasks.
    const t0 = performance.now();
    model.flushAverage();
    let busyMs = performance.now() - t0;
    const r = await done;
    this.reduction = null;
    pool.route(null);
    if (r.weightsRatio !== null) this.weightsRatio[net] = r.weightsRatio;
    if (r.applied.length > 0) {
      const t1 = performance.now();
      model.commit(net);
      this.madeBy[net] = r.attempt;
      // Before the next task names this version: slot members copy it from the region.
      sameHost?.publish(net, model.versions[net], stepInto ? null : model.view[net]);
      this.relayed = r.relayed;
      busyMs += performance.now() - t1;
    }
    const applied = r.applied.map(({ conn, report }) => ({ worker: conn, report }));
    return { applied, busyMs: busyMs + r.busyMs };
  }

  /** A member left the run: the open phase reduces again without it, and those it relayed weights to are repaired. */
  lost(c: WorkerConn, model: ModelState): void {
    this.reduction?.lost(c);
    this.repair(c.id, model);
  }

  /**
   * A worker that relayed weights in the last phase is gone: the members it forwarded to may be
   * missing them, so they get both nets' current weights directly (a worker keeps the newest).
   */
  private repair(id: number, model: ModelState): void {
    const { pool } = this.x;
    const orphans = new Set(this.relayed.get(id) ?? []);
    for (const c of pool.live()) {
      if (!orphans.has(c.id)) continue;
      pool.send(c, model.weightsFrame('D'));
      pool.send(c, model.weightsFrame('G'));
    }
  }
}
