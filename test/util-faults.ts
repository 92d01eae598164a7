/**
 * Fault injection for the failure-model tests, in the spirit of Horovod's elastic test harness:
 * workers (and, where a test needs it, the coordinator) run as real processes so they can be
 * SIGKILLed, SIGSTOPped/SIGCONTed and restarted, and faults fire at exact (round, phase) points
 * through the coordinator's onPhase hook, which runs before that phase's tasks are sent.
 *
 * Worker ids are the coordinator's; the harness learns which process holds which id from the
 * coordinator's "worker N (host/pid, backend) connected" log line, since the Hello carries the pid.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Coordinator, type CoordinatorOptions, type RoundMetrics } from '../coordinator/coordinator.js';
import type { TrainConfig } from '../coordinator/config.js';
import type { Dataset } from '../shared/data/mnist.js';
import { encodeIdx } from '../shared/data/mnist.js';
import type { Net } from '../shared/compute/model.js';
import type { TrainState } from '../coordinator/checkpoint.js';
import { afterEach, expect } from 'vitest';
import { tempDir, useWasm } from './helpers.js';

export const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');
export const COORDINATOR_MAIN = join(ROOT, 'dist', 'cli', 'coordinator.js');
export const WORKER_MAIN = join(ROOT, 'dist', 'cli', 'worker.js');

/** The CLI tests run the compiled entry points; a missing build should say so, not time out. */
export function requireBuild(): void {
  for (const f of [COORDINATOR_MAIN, WORKER_MAIN]) {
    if (!existsSync(f)) throw new Error(`${f} is missing: run "npm run build" before these tests`);
  }
}

export const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

export async function waitUntil(pred: () => boolean, timeoutMs: number, what: string, stepMs = 20): Promise<void> {
  const end = Date.now() + timeoutMs;
  while (!pred()) {
    if (Date.now() > end) throw new Error(`timed out after ${timeoutMs} ms waiting for ${what}`);
    await sleep(stepMs);
  }
}

export function readJsonl<T = Record<string, unknown>>(file: string): T[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).map((l) => JSON.parse(l) as T);
}

export interface EpochAccount { epoch: number; samples: number; usedOnce: number; missing: number; duplicated: number; rounds: number }

export const metricsOf = (runDir: string) => readJsonl<RoundMetrics>(join(runDir, 'metrics.jsonl'));
export const epochsOf = (runDir: string) => readJsonl<EpochAccount>(join(runDir, 'epochs.jsonl'));

/** A port that was free a moment ago, for runs whose restarted coordinator must reuse it. */
export function freePort(host = '127.0.0.1'): Promise<number> {
  return new Promise((res, rej) => {
    const s = createServer();
    s.once('error', rej);
    s.listen(0, host, () => {
      const port = (s.address() as { port: number }).port;
      s.close(() => res(port));
    });
  });
}

/** Write the first n samples of `data` as an IDX directory for `--data` (the test split reuses them). */
export function writeIdxDir(data: Dataset, n = data.n): string {
  const dir = tempDir('gan-ddp-idx-');
  const { images, labels } = encodeIdx({ n, images: data.images, labels: data.labels });
  writeFileSync(join(dir, 'train-images-idx3-ubyte'), images);
  writeFileSync(join(dir, 'train-labels-idx1-ubyte'), labels);
  writeFileSync(join(dir, 't10k-images-idx3-ubyte'), images);
  writeFileSync(join(dir, 't10k-labels-idx1-ubyte'), labels);
  return dir;
}

/** Lines of output as they come, and waiting for one that matches. */
export class Lines {
  readonly all: string[] = [];
  private waiters: { re: RegExp; resolve: (m: RegExpMatchArray) => void }[] = [];

  /** `what` names the source in errors; `ended` (a process's exit) fails waits that can no longer be met. */
  constructor(private readonly what: string, private readonly ended?: Promise<unknown>) {}

  push(l: string): void {
    this.all.push(l);
    this.waiters = this.waiters.filter((w) => {
      const m = l.match(w.re);
      if (m) w.resolve(m);
      return !m;
    });
  }

  /** Resolve at the first line (already seen or to come) matching `re`. */
  waitFor(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    for (const l of this.all) {
      const m = l.match(re);
      if (m) return Promise.resolve(m);
    }
    return new Promise((res, rej) => {
      const fail = (why: string) => {
        clearTimeout(t);
        this.waiters = this.waiters.filter((x) => x !== w);
        rej(new Error(`${this.what}: ${why} ${re}; output:\n${this.all.slice(-40).join('\n')}`));
      };
      const t = setTimeout(() => fail(`no line within ${timeoutMs} ms matching`), timeoutMs);
      const w = { re, resolve: (m: RegExpMatchArray) => (clearTimeout(t), res(m)) };
      this.waiters.push(w);
      // A process that exited prints nothing more.
      void this.ended?.then(() => setTimeout(() => this.waiters.includes(w) && fail('exited before printing'), 50));
    });
  }
}

/** A child process with its output captured line by line. */
export class Proc {
  readonly child: ChildProcess;
  readonly exited: Promise<{ code: number | null; signal: NodeJS.Signals | null }>;
  exit: { code: number | null; signal: NodeJS.Signals | null } | null = null;
  private readonly out: Lines;

  constructor(readonly name: string, cmd: string, args: string[]) {
    // A token in the test runner's environment must not leak into processes testing its absence.
    const env = { ...process.env };
    delete env.GAN_DDP_TOKEN;
    this.child = spawn(cmd, args, { stdio: ['ignore', 'pipe', 'pipe'], env, cwd: ROOT });
    this.exited = new Promise((res) => {
      this.child.once('exit', (code, signal) => {
        this.exit = { code, signal };
        res(this.exit);
      });
    });
    this.out = new Lines(name, this.exited);
    for (const stream of [this.child.stdout!, this.child.stderr!]) {
      // A pipe broken by the child's death is reported by `exit`, not thrown into the test process.
      stream.on('error', () => {});
      let partial = '';
      stream.setEncoding('utf8');
      stream.on('data', (s: string) => {
        const parts = (partial + s).split('\n');
        partial = parts.pop() ?? '';
        for (const l of parts) this.onLine(l);
      });
      stream.on('end', () => partial && this.onLine(partial));
    }
  }

  get pid(): number {
    return this.child.pid ?? -1;
  }

  get alive(): boolean {
    return this.exit === null;
  }

  get output(): string {
    return this.lines.join('\n');
  }

  get lines(): string[] {
    return this.out.all;
  }

  private onLine(l: string): void {
    if (process.env.FAULTS_VERBOSE) process.stderr.write(`[${this.name}] ${l}\n`);
    this.out.push(l);
  }

  /** Resolve at the first line (already printed or to come) matching `re`. */
  waitFor(re: RegExp, timeoutMs = 20_000): Promise<RegExpMatchArray> {
    return this.out.waitFor(re, timeoutMs);
  }

  signal(sig: NodeJS.Signals): void {
    if (this.alive) this.child.kill(sig);
  }

  /** Freeze the process: its sockets stay open, it answers nothing (a hung worker). */
  pause(): void {
    this.signal('SIGSTOP');
  }

  resume(): void {
    this.signal('SIGCONT');
  }

  async kill(sig: NodeJS.Signals = 'SIGKILL'): Promise<void> {
    if (!this.alive) return;
    this.child.kill(sig);
    await this.exited;
  }

  /** Resolve with the exit, or kill the process and fail if it outlives `timeoutMs`. */
  async waitExit(timeoutMs: number): Promise<{ code: number | null; signal: NodeJS.Signals | null }> {
    const t = setTimeout(() => this.child.kill('SIGKILL'), timeoutMs);
    const r = await this.exited;
    clearTimeout(t);
    return r;
  }
}

export interface WorkerProcOptions {
  token?: string;
  ca?: string;
  connectTimeoutS?: number;
  /** Prefix argv, e.g. ['ip', 'netns', 'exec', 'ns1']. */
  wrap?: string[];
  extra?: string[];
}

export function spawnWorker(url: string, name: string, o: WorkerProcOptions = {}): Proc {
  const args = [WORKER_MAIN, '--connect', url, '--backend', 'wasm', '--threads', '1', '--connect-timeout', String(o.connectTimeoutS ?? 30)];
  if (o.token !== undefined) args.push('--token', o.token);
  if (o.ca) args.push('--ca', o.ca);
  args.push(...(o.extra ?? []));
  return o.wrap?.length ? new Proc(name, o.wrap[0]!, [...o.wrap.slice(1), process.execPath, ...args]) : new Proc(name, process.execPath, args);
}

/** The coordinator CLI as a process; `port` resolves from its "listening on" line. */
export function spawnCoordinator(args: string[], name = 'coordinator', wrap: string[] = []): Proc & { port: Promise<number> } {
  const full = [COORDINATOR_MAIN, '--backend', 'wasm', ...args];
  const p = wrap.length ? new Proc(name, wrap[0]!, [...wrap.slice(1), process.execPath, ...full]) : new Proc(name, process.execPath, full);
  const port = p.waitFor(/listening on wss?:\/\/\S+:(\d+);/, 30_000).then((m) => Number(m[1]));
  port.catch(() => {});
  return Object.assign(p, { port });
}

/** CLI flags for the tiny model the in-process tests use (test/helpers.ts tinyModel). */
export const TINY_MODEL_FLAGS = ['--g-hidden', '32,64', '--d-hidden', '64,32', '--noise-dim', '16', '--dropout', '0.3', '--leak', '0.2'];

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

/** Self-signed certificate for 127.0.0.1 / localhost, or null with the reason openssl failed. */
export function selfSignedCert(): { cert: string; key: string; dir: string } | { error: string } {
  const dir = tempDir('gan-ddp-tls-');
  const key = join(dir, 'key.pem');
  const cert = join(dir, 'cert.pem');
  try {
    execFileSync('openssl', [
      'req', '-x509', '-newkey', 'rsa:2048', '-nodes', '-keyout', key, '-out', cert, '-days', '1',
      '-subj', '/CN=localhost', '-addext', 'subjectAltName=IP:127.0.0.1,DNS:localhost',
    ], { stdio: 'pipe' });
    return { cert, key, dir };
  } catch (e) {
    return { error: `openssl req failed: ${(e as Error).message.split('\n')[0]}` };
  }
}

/** Why network namespaces cannot be made here (they need root and iproute2), or null. */
export function netnsMissing(): string | null {
  if (process.getuid?.() !== 0) return 'needs root';
  try {
    execFileSync('ip', ['netns', 'list'], { stdio: 'pipe' });
    return null;
  } catch {
    return 'needs iproute2 (ip netns)';
  }
}

export function haveCommand(cmd: string): boolean {
  try {
    execFileSync('sh', ['-c', `command -v ${cmd}`], { stdio: 'pipe' });
    return true;
  } catch {
    return false;
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

/** Every one of `count` epochs used each of its `n` samples exactly once. */
export const sameBytes = (a: Float32Array, b: Float32Array) => Buffer.from(a.buffer, a.byteOffset, a.byteLength).equals(Buffer.from(b.buffer, b.byteOffset, b.byteLength));

/**
 * Two runs' checkpoints hold the same training state, bit for bit: the round, both nets, both Adam
 * states, the moving average of G (which both must keep) and the current epoch's use of each sample.
 */
export function expectSameState(a: TrainState, b: TrainState): void {
  expect(b.round).toBe(a.round);
  for (const net of ['D', 'G'] as const) {
    expect(sameBytes(a.weights[net], b.weights[net]), `${net} weights`).toBe(true);
    expect(sameBytes(a.adam[net].m, b.adam[net].m) && sameBytes(a.adam[net].v, b.adam[net].v), `${net} Adam moments`).toBe(true);
  }
  expect(!!(a.emaG && b.emaG && sameBytes(a.emaG, b.emaG)), 'moving average of G').toBe(true);
  expect(Buffer.from(a.epochUses).equals(Buffer.from(b.epochUses)), 'epoch sample use').toBe(true);
}

export function expectEveryEpochExact(epochs: EpochAccount[], n: number, count: number): void {
  expect(epochs).toHaveLength(count);
  for (const e of epochs) expect(e).toMatchObject({ samples: n, usedOnce: n, missing: 0, duplicated: 0 });
}
