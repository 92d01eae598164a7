/** Running the built command-line programs (and other processes) from tests. */
import { spawn } from 'node:child_process';
import { existsSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { fileURLToPath } from 'node:url';

export const repoRoot = join(dirname(fileURLToPath(import.meta.url)), '..');

export const dist = {
  coordinator: join(repoRoot, 'dist', 'cli', 'coordinator.js'),
  worker: join(repoRoot, 'dist', 'cli', 'worker.js'),
  generate: join(repoRoot, 'dist', 'cli', 'generate.js'),
  evaluate: join(repoRoot, 'dist', 'cli', 'evaluate.js'),
  dashboard: join(repoRoot, 'dist', 'cli', 'dashboard.js'),
  launch: join(repoRoot, 'dist', 'cli', 'launch.js'),
  ablate: join(repoRoot, 'dist', 'scripts', 'ablate.js'),
};

/** The CLI tests run the compiled programs: `npm test` builds first. */
export function requireDist(): void {
  for (const f of Object.values(dist)) {
    if (!existsSync(f)) throw new Error(`${f} not found: run "npm run build" first (npm test does)`);
  }
}

export interface ProcResult {
  code: number | null;
  signal: NodeJS.Signals | null;
  stdout: string;
  stderr: string;
  ms: number;
}

export interface RunOptions {
  cwd?: string;
  env?: NodeJS.ProcessEnv;
  input?: string;
  /** Kill the process (SIGKILL) after this long; the result then has signal SIGKILL. */
  timeoutMs?: number;
}

export function run(cmd: string, args: string[], o: RunOptions = {}): Promise<ProcResult> {
  const t0 = Date.now();
  return new Promise((resolve, reject) => {
    const child = spawn(cmd, args, { cwd: o.cwd, env: o.env ?? process.env, stdio: ['pipe', 'pipe', 'pipe'] });
    let stdout = '';
    let stderr = '';
    child.stdout.setEncoding('utf8').on('data', (s: string) => (stdout += s));
    child.stderr.setEncoding('utf8').on('data', (s: string) => (stderr += s));
    // A child that exits before reading its input closes the pipe under our write (EPIPE): that is
    // the child's outcome, which `close` reports, not an error of the test process.
    for (const pipe of [child.stdin, child.stdout, child.stderr]) pipe.on('error', () => {});
    const timer = setTimeout(() => child.kill('SIGKILL'), o.timeoutMs ?? 60_000);
    child.on('error', (e) => {
      clearTimeout(timer);
      reject(e);
    });
    child.on('close', (code, signal) => {
      clearTimeout(timer);
      resolve({ code, signal, stdout, stderr, ms: Date.now() - t0 });
    });
    child.stdin.end(o.input ?? '');
  });
}

export function runNode(script: string, args: string[], o: RunOptions = {}): Promise<ProcResult> {
  return run(process.execPath, [script, ...args], o);
}

/** Non-empty lines of a stream's output. */
export function lines(s: string): string[] {
  return s.split('\n').filter((l) => l.trim() !== '');
}
