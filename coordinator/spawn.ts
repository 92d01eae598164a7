/** Local workers as child processes of the coordinator (`--spawn`), stopped when the run ends. */
import { type ChildProcess, spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { fileURLToPath } from 'node:url';

export interface SpawnOptions {
  url: string;
  count: number;
  backend: string;
  /** Compute threads per worker. */
  threads: number;
  token?: string;
  log: (line: string) => void;
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
      const child = spawn(process.execPath, [entry, '--connect', this.o.url, '--backend', this.o.backend, '--threads', String(this.o.threads), '--quiet'], {
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
