/** Local workers as child processes of the coordinator (`--spawn`), stopped when the run ends. */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface SpawnOptions {
  url: string;
  count: number;
  backend: string;
  /** Compute threads per worker. */
  threads: number;
  /** The core each worker is pinned to (arrange()), or null to leave them to the scheduler. */
  pin?: number[] | null;
  token?: string;
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

export function workerEntry(): string {
  // From dist/coordinator/spawn.js the worker is dist/cli/worker.js.
  const js = fileURLToPath(new URL('../cli/worker.js', import.meta.url));
  if (!existsSync(js)) throw new Error(`${js} not found: run "npm run build" first`);
  return js;
}

export class LocalWorkers {
  readonly children: ChildProcess[] = [];
  private ending = false;

  constructor(private readonly o: SpawnOptions) {}

  start(): void {
    const entry = workerEntry();
    for (let i = 0; i < this.o.count; i++) {
      const args = [entry, '--connect', this.o.url, '--backend', this.o.backend, '--threads', String(this.o.threads), '--quiet'];
      const core = this.o.pin?.[i];
      // taskset execs node in place: the child's pid is the worker's.
      const [cmd, argv] = core === undefined ? [process.execPath, args] : ['taskset', ['-c', String(core), process.execPath, ...args]];
      const child = spawn(cmd, argv, {
        stdio: ['ignore', 'ignore', 'pipe'],
        env: { ...process.env, OPENBLAS_NUM_THREADS: String(this.o.threads), ...(this.o.token ? { GAN_DDP_TOKEN: this.o.token } : {}) },
      });
      child.stderr!.setEncoding('utf8');
      child.stderr!.on('data', (s: string) => {
        for (const line of s.split('\n')) if (line.trim()) this.o.log(`[local worker ${i}] ${line}`);
      });
      child.on('exit', (code, signal) => {
        if (!this.ending && code !== 0) this.o.log(`local worker ${i} exited (${signal ?? `code ${code}`})`);
      });
      this.children.push(child);
    }
  }

  /** Ask the workers to exit; kill any still running after `graceMs`. */
  async stop(graceMs = 5000): Promise<void> {
    this.ending = true;
    const alive = this.children.filter((c) => c.exitCode === null && c.signalCode === null);
    await Promise.all(alive.map((c) => new Promise<void>((resolve) => {
      const t = setTimeout(() => {
        c.kill('SIGKILL');
        resolve();
      }, graceMs);
      c.once('exit', () => {
        clearTimeout(t);
        resolve();
      });
      c.kill('SIGTERM');
    })));
  }
}
