/**
 * Local workers (`--spawn`), stopped when the run ends: child processes of the coordinator, or,
 * given `inThreads` (the addon, which maps shared files, is not built), threads of its own process,
 * which share memory with it through SharedArrayBuffers (shared/wire/thread-regions.ts) where
 * processes would exchange every tensor in frames.
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';
import { MessageChannel, Worker } from 'node:worker_threads';
import { fileMapper } from '../shared/backend/addon.js';
import { ThreadRegions, type WorkerThreadData } from '../shared/wire/thread-regions.js';

export interface SpawnOptions {
  url: string;
  count: number;
  backend: string;
  /** Compute threads per worker. */
  threads: number;
  /** The core each worker is pinned to (arrange()), or null to leave them to the scheduler. */
  pin?: number[] | null;
  token?: string;
  /** Start the workers as threads of this process, their same-host regions held here (pin is not used: arrange them unpinned). */
  inThreads?: ThreadRegions;
  log: (line: string) => void;
}

/** How `--spawn` lays workers out on this host. */
export interface Arrangement {
  /** Compute threads per worker. */
  threads: number;
  /** Worker i runs on core pin[i] only; null: the scheduler places them. */
  pin: number[] | null;
}

/**
 * Threads per worker: the cores shared out (at least one each), unless --threads says. When every
 * core is busy with single-threaded workers, each is pinned to one core, round robin: on the 2-core
 * machine, 4 workers x 1 thread pinned two per core gave rounds 4-12% shorter than unpinned (two
 * pairs of 300-round runs of the main job), workers no longer migrating between cores.
 */
export function arrange(workers: number, cores: number, threads: number | undefined, canPin: boolean): Arrangement {
  const t = threads ?? Math.max(1, Math.floor(cores / workers));
  const pin = canPin && cores > 1 && t === 1 && workers >= cores ? Array.from({ length: workers }, (_, i) => i % cores) : null;
  return { threads: t, pin };
}

/** Whether this host can pin a process to a core (Linux with util-linux's taskset). */
export function canPin(): boolean {
  return process.platform === 'linux' && spawnSync('taskset', ['--version'], { stdio: 'ignore' }).status === 0;
}

/**
 * Where --spawn's workers are threads: on the wasm backend, sharing memory (`sameHost`), and with
 * the addon, which maps shared files between processes, not built. Returns the registry that
 * holds the threads' regions for the coordinator and LocalWorkers, or undefined (processes).
 */
export function threadRegionsFor(sameHost: boolean, backend: string): ThreadRegions | undefined {
  return sameHost && backend === 'wasm' && !fileMapper() ? new ThreadRegions() : undefined;
}

/** The worker command's script, or, for a worker thread, the thread's (cli/worker-thread.ts). */
export function workerEntry(thread = false): string {
  // From dist/coordinator/spawn.js the worker is dist/cli/worker.js.
  const js = fileURLToPath(new URL(thread ? '../cli/worker-thread.js' : '../cli/worker.js', import.meta.url));
  if (!existsSync(js)) throw new Error(`${js} not found: run "npm run build" first`);
  return js;
}

/** A spawned worker, process or thread: how to ask it to end, and when it has. */
interface Local {
  done: boolean;
  exited: Promise<void>;
  /** Ask it to end (a process: SIGTERM; a thread: terminated). */
  end(): void;
  kill(): void;
}

export class LocalWorkers {
  private readonly locals: Local[] = [];
  private ending = false;

  constructor(private readonly o: SpawnOptions) {}

  start(): void {
    const entry = workerEntry(this.o.inThreads !== undefined);
    for (let i = 0; i < this.o.count; i++) {
      const args = ['--connect', this.o.url, '--backend', this.o.backend, '--threads', String(this.o.threads), '--quiet'];
      const env = { ...process.env, OPENBLAS_NUM_THREADS: String(this.o.threads), ...(this.o.token ? { GAN_DDP_TOKEN: this.o.token } : {}) };
      const local = this.o.inThreads ? this.thread(i, entry, args, env, this.o.inThreads) : this.process(i, entry, args, env);
      this.locals.push(local);
    }
  }

  private lines(i: number, s: string): void {
    for (const line of s.split('\n')) if (line.trim()) this.o.log(`[local worker ${i}] ${line}`);
  }

  private exitedWith(i: number, how: string | null): void {
    if (!this.ending && how !== null) this.o.log(`local worker ${i} exited (${how})`);
  }

  private process(i: number, entry: string, args: string[], env: NodeJS.ProcessEnv): Local {
    const core = this.o.pin?.[i];
    // taskset execs node in place: the child's pid is the worker's.
    const [cmd, argv] = core === undefined ? [process.execPath, [entry, ...args]] : ['taskset', ['-c', String(core), process.execPath, entry, ...args]];
    const child: ChildProcess = spawn(cmd, argv, { stdio: ['ignore', 'ignore', 'pipe'], env });
    child.stderr!.setEncoding('utf8');
    child.stderr!.on('data', (s: string) => this.lines(i, s));
    const local: Local = {
      done: false,
      exited: new Promise((resolve) => child.once('exit', (code, signal) => {
        local.done = true;
        this.exitedWith(i, code === 0 ? null : (signal ?? `code ${code}`));
        resolve();
      })),
      end: () => child.kill('SIGTERM'),
      kill: () => child.kill('SIGKILL'),
    };
    return local;
  }

  private thread(i: number, entry: string, args: string[], env: NodeJS.ProcessEnv, regions: ThreadRegions): Local {
    const { port1, port2 } = new MessageChannel();
    regions.serve(port1);
    const data: WorkerThreadData = { args, regions: port2 };
    const w = new Worker(entry, { workerData: data, transferList: [port2], env, stderr: true, stdout: true });
    w.stderr.setEncoding('utf8');
    w.stderr.on('data', (s: string) => this.lines(i, s));
    w.stdout.resume();
    w.on('error', (e) => this.lines(i, `failed: ${e.message}`));
    const local: Local = {
      done: false,
      exited: new Promise((resolve) => w.once('exit', (code) => {
        local.done = true;
        port1.close();
        this.exitedWith(i, code === 0 ? null : `code ${code}`);
        resolve();
      })),
      // No signals for a thread, and nothing of its own to save (the coordinator holds the run).
      end: () => void w.terminate(),
      kill: () => void w.terminate(),
    };
    return local;
  }

  /** Ask the workers to exit; kill any still running after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.ending = true;
    await Promise.all(this.locals.filter((l) => !l.done).map((l) => {
      const t = setTimeout(() => l.kill(), graceMs);
      l.end();
      return l.exited.then(() => clearTimeout(t));
    }));
  }
}
