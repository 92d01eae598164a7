/**
 * A fault cluster for the failure-model tests, in the spirit of Horovod's elastic test harness: an
 * in-process coordinator (so faults fire at exact (round, phase) points through its phase hook,
 * which runs before that phase's tasks are sent) and workers as real processes, so they can be
 * SIGKILLed, SIGSTOPped/SIGCONTed and restarted.
 *
 * Worker ids are the coordinator's; the harness learns which process holds which id from the
 * coordinator's "worker N (host/pid, backend) connected" log line, since the Hello carries the pid.
 */
import { afterEach } from 'vitest';
import { Coordinator, type CoordinatorOptions, type RoundMetrics } from '../coordinator/coordinator.js';
import type { TrainConfig } from '../coordinator/config.js';
import type { Dataset } from '../shared/data/mnist.js';
import type { Net } from '../shared/compute/model.js';
import { tempDir, useWasm } from './helpers.js';
import { type EpochAccount, Lines, Proc, type WorkerProcOptions, epochsOf, metricsOf, requireBuild, sleep, spawnWorker, waitUntil } from './util-faults.js';

export type PhaseAction = (h: FaultCluster) => Promise<void> | void;

export interface FaultClusterOptions {
  /** Worker processes to start now (default config.workers). */
  workers?: number;
  worker?: WorkerProcOptions;
  scheme?: 'ws' | 'wss';
  coordinator?: Partial<CoordinatorOptions>;
}

/**
 * An in-process coordinator (so faults can be timed to its phases) and worker processes.
 * Register faults with at(round, phase, action) before train().
 */
export class FaultCluster {
  readonly procs: Proc[] = [];
  /** Gradients the coordinator received (before validation), in arrival order. */
  readonly received: { worker: number; round: number; phase: Net; count: number }[] = [];
  /** Phase boundaries seen, in order, as "round:phase". */
  readonly phases: string[] = [];
  private actions = new Map<string, PhaseAction[]>();
  private pidToId = new Map<number, number[]>();
  private readonly logLines = new Lines('coordinator log');
  private spawned = 0;
  coord!: Coordinator;
  url = '';

  private constructor(readonly config: TrainConfig, readonly data: Dataset, readonly opts: FaultClusterOptions) {}

  static async start(config: TrainConfig, data: Dataset, opts: FaultClusterOptions = {}): Promise<FaultCluster> {
    requireBuild();
    await useWasm();
    const h = new FaultCluster(config, data, opts);
    const user = opts.coordinator ?? {};
    h.coord = new Coordinator({
      config, host: '127.0.0.1', port: 0, out: tempDir('gan-ddp-faults-'), dataset: data, ...user,
      log: (l) => {
        h.onLog(l);
        user.log?.(l);
      },
      hooks: {
        ...user.hooks,
        phase: async (round, phase) => {
          h.phases.push(`${round}:${phase}`);
          for (const a of h.actions.get(`${round}:${phase}`) ?? []) await a(h);
          await user.hooks?.phase?.(round, phase);
        },
      },
    });
    // Record every gradient that reaches validation, to tell "never arrived" from "arrived, refused".
    h.coord.pool.on('report', (c, m) => h.received.push({ worker: c.id, round: m.round, phase: m.phase, count: m.count }));
    const port = await h.coord.start();
    h.url = `${opts.scheme ?? 'ws'}://127.0.0.1:${port}`;
    for (let i = 0; i < (opts.workers ?? config.workers); i++) h.addWorker();
    return h;
  }

  private onLog(l: string): void {
    if (process.env.FAULTS_VERBOSE) process.stderr.write(`[coord] ${l}\n`);
    const m = l.match(/^worker (\d+) \([^/]*\/(\d+), .*\) connected from/);
    if (m) {
      const pid = Number(m[2]);
      this.pidToId.set(pid, [...(this.pidToId.get(pid) ?? []), Number(m[1])]);
    }
    this.logLines.push(l);
  }

  /** The coordinator's log lines so far. */
  get logs(): string[] {
    return this.logLines.all;
  }

  waitLog(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return this.logLines.waitFor(re, timeoutMs);
  }

  addWorker(over: WorkerProcOptions = {}): Proc {
    const p = spawnWorker(this.url, `worker-proc-${this.spawned++}`, { ...this.opts.worker, ...over });
    this.procs.push(p);
    return p;
  }

  /** Run `action` at the boundary of (round, phase), before its tasks go out; the round waits for it. */
  at(round: number, phase: Net, action: PhaseAction): this {
    const k = `${round}:${phase}`;
    this.actions.set(k, [...(this.actions.get(k) ?? []), action]);
    return this;
  }

  /** The ids a process has held, oldest first (a process that reconnects gets a new id). */
  idsOf(p: Proc): number[] {
    return this.pidToId.get(p.pid) ?? [];
  }

  idOf(p: Proc): number {
    const ids = this.idsOf(p);
    if (!ids.length) throw new Error(`${p.name} (pid ${p.pid}) never joined`);
    return ids[ids.length - 1]!;
  }

  procOf(workerId: number): Proc {
    const p = this.procs.find((x) => this.idsOf(x).includes(workerId));
    if (!p) throw new Error(`no process holds worker id ${workerId}`);
    return p;
  }

  /** Wait until this process has joined (again): it holds `count` ids. */
  async joined(p: Proc, count = 1, timeoutMs = 20_000): Promise<number> {
    await waitUntil(() => this.idsOf(p).length >= count, timeoutMs, `${p.name} to connect (${count})`);
    return this.idOf(p);
  }

  /**
   * Kill a worker after its task of this phase is sent but before it can answer: freeze it now
   * (the task lands in its socket buffer, unread), then SIGKILL it once the tasks are out.
   */
  killMidPhase(p: Proc, afterMs = 100): void {
    p.pause();
    setTimeout(() => void p.kill('SIGKILL'), afterMs).unref();
  }

  get runDir(): string {
    return this.coord.runDir.path;
  }

  metrics(): RoundMetrics[] {
    return metricsOf(this.runDir);
  }

  epochs(): EpochAccount[] {
    return epochsOf(this.runDir);
  }

  /** Train to the end (or the error) and close the coordinator; worker processes are left to exit on Stop. */
  async train(): Promise<void> {
    try {
      await this.coord.train();
    } finally {
      await this.coord.close();
    }
  }

  /** Kill whatever is still running; safe to call twice and after failures. */
  async shutdown(): Promise<void> {
    await this.coord?.close().catch(() => {});
    await Promise.all(this.procs.map(async (p) => {
      p.resume();
      if (p.alive) await Promise.race([p.exited, sleep(3000)]);
      await p.kill('SIGKILL');
    }));
  }
}

/**
 * The fault clusters and processes a test file starts, shut down after each test: `cluster` starts
 * one, `procs` takes processes started by hand.
 */
export function faultHarness(): { cluster: (...args: Parameters<typeof FaultCluster.start>) => Promise<FaultCluster>; procs: Proc[] } {
  const clusters: FaultCluster[] = [];
  const procs: Proc[] = [];
  afterEach(async () => {
    await Promise.all(clusters.splice(0).map((c) => c.shutdown()));
    await Promise.all(procs.splice(0).map((p) => (p.resume(), p.kill('SIGKILL'))));
  });
  return {
    procs,
    async cluster(...args) {
      const c = await FaultCluster.start(...args);
      clusters.push(c);
      return c;
    },
  };
}
