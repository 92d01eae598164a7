/**
 * The PyTorch anchor of the benchmarks (bench/pytorch_gan.py): find a Python that imports torch,
 * and run the script as one process or as a gloo world of several, optionally each rank inside a
 * network namespace. Used by scripts/bench.ts (loopback) and scripts/bench-hosts.ts (namespaces).
 */
import { type ChildProcess, spawn, spawnSync } from 'node:child_process';
import { join } from 'node:path';
import { packageRoot } from '../shared/paths.js';
import { lastLines } from './stats.js';

export interface TorchInfo {
  python: string;
  /** torch.__version__, and the BLAS library it ran a product on (a reference BLAS is 10x slower). */
  version: string;
}

// The BLAS that a product actually loads, from the process's own mappings: Debian's torch takes
// whichever libblas.so.3 the alternatives point to, the reference one unless OpenBLAS is installed.
const PROBE = [
  'import torch, re',
  'torch.ones(64, 64) @ torch.ones(64, 64)',
  "libs = sorted({l.split()[-1].split('/')[-2] + '/' + l.split()[-1].split('/')[-1] for l in open('/proc/self/maps') if re.search(r'lib(open)?blas[^/]*\\.so', l)})",
  "print(torch.__version__ + (', BLAS ' + ' '.join(libs) if libs else ''))",
].join('; ');

export interface TorchResult {
  mode: 'pytorch';
  world: number;
  samplesPerSec: number;
  msPerIter: number;
  threads: number;
  iters: number;
  /** DDP communication hook ('fp16': fp16_compress_hook). */
  hook?: string;
}

export const TORCH_SCRIPT = join(packageRoot() ?? '.', 'bench', 'pytorch_gan.py');

/**
 * The first of $PYTHON, python3 and /usr/bin/python3 that imports torch, or why none does. The
 * last one matters where python3 on the PATH is not Debian's (pyenv): python3-torch installs for
 * /usr/bin/python3 only.
 */
export function findTorch(): TorchInfo | { missing: string } {
  const tried: string[] = [];
  for (const python of [...new Set([process.env.PYTHON, 'python3', '/usr/bin/python3'].filter((p): p is string => !!p))]) {
    const r = spawnSync(python, ['-c', PROBE], { encoding: 'utf8' });
    const version = r.stdout?.trim() ?? '';
    if (r.status === 0 && version) return { python, version: /BLAS .*(openblas|mkl)/i.test(version) ? version : `${version} (no optimized BLAS: its products run about 10x slower; apt-get install libopenblas0-pthread)` };
    tried.push(`${python}: ${r.error ? (r.error as NodeJS.ErrnoException).code : (r.stderr.trim().split('\n').pop() ?? `exit ${r.status}`)}`);
  }
  return { missing: `no Python here imports torch (${tried.join('; ')}); apt-get install python3-torch` };
}

export interface TorchRun {
  python: string;
  world: number;
  threads: number;
  iters: number;
  warmup: number;
  /** ADDR:PORT of rank 0 (world > 1). */
  master?: string;
  /** DDP's fp16_compress_hook on both nets (world > 1). */
  hook?: 'fp16';
  /** GLOO_SOCKET_IFNAME for every rank (world > 1). */
  ifname?: string;
  /** Command prefix for a rank, e.g. ['ip', 'netns', 'exec', NS] (default none). */
  wrap?: (rank: number) => string[];
  /** Called when rank 0 starts its timed iterations (passes --marks). */
  onTimedStart?: () => void;
  /** Called with every process started, so that the caller can kill it on interruption. */
  track?: (p: ChildProcess) => void;
  timeoutMs: number;
}

/** Runs the anchor and resolves with rank 0's result; rejects with the failing rank's last output. */
export async function runTorch(o: TorchRun): Promise<TorchResult> {
  const procs: ChildProcess[] = [];
  const outputs: string[] = [];
  const got: { result?: TorchResult } = {};
  const exits: Promise<number | null>[] = [];
  for (let rank = 0; rank < o.world; rank++) {
    const args = [TORCH_SCRIPT, '--world', String(o.world), '--threads', String(o.threads), '--iters', String(o.iters), '--warmup', String(o.warmup)];
    if (o.world > 1) args.push('--rank', String(rank), '--master', o.master ?? '127.0.0.1:29500');
    if (o.world > 1 && o.hook) args.push('--hook', o.hook);
    if (rank === 0 && o.onTimedStart) args.push('--marks');
    const cmd = [...(o.wrap?.(rank) ?? []), o.python, ...args];
    const env = { ...process.env, ...(o.ifname ? { GLOO_SOCKET_IFNAME: o.ifname } : {}), OMP_NUM_THREADS: String(o.threads), OPENBLAS_NUM_THREADS: String(o.threads) };
    const p = spawn(cmd[0]!, cmd.slice(1), { env, stdio: ['ignore', 'pipe', 'pipe'] });
    procs.push(p);
    o.track?.(p);
    outputs[rank] = '';
    let pending = '';
    p.stdout!.on('data', (b: Buffer) => {
      outputs[rank] += b.toString();
      if (rank !== 0) return;
      pending += b.toString();
      let nl: number;
      while ((nl = pending.indexOf('\n')) >= 0) {
        const line = pending.slice(0, nl).trim();
        pending = pending.slice(nl + 1);
        if (!line.startsWith('{')) continue;
        const j = JSON.parse(line) as { event?: string } & TorchResult;
        if (j.event === 'timed-start') o.onTimedStart?.();
        else if (j.mode === 'pytorch') got.result = j;
      }
    });
    p.stderr!.on('data', (b: Buffer) => {
      outputs[rank] = (outputs[rank]! + b.toString()).slice(-4000);
    });
    exits.push(new Promise((res) => p.on('exit', (code) => res(code))));
  }
  const timer = setTimeout(() => procs.forEach((p) => p.kill('SIGKILL')), o.timeoutMs);
  try {
    const codes = await Promise.all(exits);
    const bad = codes.findIndex((c) => c !== 0);
    if (bad >= 0) throw new Error(`pytorch world ${o.world} rank ${bad} exited ${codes[bad] ?? 'on a signal (timeout?)'}: ${lastLines(outputs[bad] ?? '', 3, 600)}`);
  } finally {
    clearTimeout(timer);
  }
  if (!got.result) throw new Error(`pytorch world ${o.world}: rank 0 printed no result: ${lastLines(outputs[0] ?? '', 3, 600)}`);
  return got.result;
}
