/**
 * Processes for the failure-model tests: the built coordinator and workers as real processes (so
 * they can be SIGKILLed, SIGSTOPped/SIGCONTed and restarted) with their output line by line, run
 * directories read back, and what a test needs of the machine (a certificate, namespaces). The
 * fault cluster that times faults to phases is util-fault-cluster.ts.
 */
import { type ChildProcess, execFileSync, spawn } from 'node:child_process';
import { existsSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer } from 'node:net';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { RoundMetrics } from '../coordinator/coordinator.js';
import type { Dataset } from '../shared/data/mnist.js';
import { encodeIdx } from '../shared/data/mnist.js';
import type { TrainState } from '../coordinator/checkpoint.js';
import { expect } from 'vitest';
import { tempDir } from './helpers.js';

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

/** The same float32 values, bit for bit (NaNs and signed zeros included). */
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

/** Every one of `count` epochs used each of its `n` samples exactly once. */
export function expectEveryEpochExact(epochs: EpochAccount[], n: number, count: number): void {
  expect(epochs).toHaveLength(count);
  for (const e of epochs) expect(e).toMatchObject({ samples: n, usedOnce: n, missing: 0, duplicated: 0 });
}
