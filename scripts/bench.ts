/**
 * `npm run bench`: throughput of the seed model, written as a markdown table and JSON.
 *
 * 1. One process, one GAN iteration (D and G gradients at batch 100), for every backend that
 *    initialises here; also with the coordinator's Adam step on both nets.
 * 2. The real coordinator with 1, 2 and 4 local worker processes, their tensors through shared
 *    memory (the default on one host) and through frames (--shm off): samples/s, the round split
 *    into compute / transfer / the coordinator's own work, and bytes per round beside the
 *    theoretical minimum for frames (4 bytes x parameters x workers, each way, per phase). Then 2
 *    workers with 16-bit gradients, both ways.
 * 3. What a checkpoint holds the round loop, written at once and in the background
 *    (scripts/bench-checkpoint.ts).
 * 4. The PyTorch anchor (bench/pytorch_gan.py), when a Python that imports torch is found ($PYTHON,
 *    python3, /usr/bin/python3; Debian: apt-get install python3-torch): one process with 1 and 2
 *    threads, and a gloo world of 2 processes on loopback with 1 thread each. Ratios: 2 workers
 *    vs PyTorch world 2, and 1 worker through the coordinator vs the best single process here.
 *
 * Each backend is measured in a child process of its own so that one backend's setup cannot
 * affect another's figures.
 *
 * `npm run bench -- --hosts [flags]` (or `npm run bench:hosts -- [flags]`) runs the multi-host
 * benchmark instead: hosts in network namespaces behind rate-limited links (scripts/bench-hosts.ts,
 * which documents its flags; needs root).
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { createServer } from 'node:net';
import { mkdirSync, mkdtempSync, readFileSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { adamState, adamStep } from '../coordinator/optimizer.js';
import { defaultTrainConfig } from '../coordinator/config.js';
import { Coordinator, type RoundMetrics } from '../coordinator/coordinator.js';
import { LocalWorkers, arrange, canPin, threadRegionsFor } from '../coordinator/spawn.js';
import { BACKEND_NAMES, type BackendName, initBackend } from '../shared/backend/choose.js';
import { buildBatch } from '../shared/compute/batch.js';
import { die, intArg } from '../cli/args.js';
import { GanModel } from '../shared/compute/gan.js';
import { loadEmbedded } from '../shared/data/mnist.js';
import { defaultModelConfig, initWeights, netLayout } from '../shared/compute/model.js';
import { hostsMain } from './bench-hosts.js';
import { type CheckpointCost, checkpointCost } from './bench-checkpoint.js';
import { type TorchInfo, type TorchResult, findTorch, runTorch } from './bench-torch.js';
import { digitBytes } from '../shared/data/digits.js';

interface SingleResult {
  backend: string;
  detail: string;
  iterations: number;
  msPerIter: number;
  samplesPerSec: number;
  msPerIterWithAdam: number;
  samplesPerSecWithAdam: number;
}

interface DistResult {
  workers: number;
  fp16: boolean;
  /** How tensors travelled: shared memory (same-host regions) or WebSocket frames. */
  tensors: 'shared memory' | 'frames';
  backend: string;
  threadsPerWorker: number;
  rounds: number;
  samplesPerSec: number;
  roundMs: number;
  computeMs: number;
  transferMs: number;
  reduceMs: number;
  reduceShare: number;
  bytesInPerRound: number;
  bytesOutPerRound: number;
  minBytesPerRound: number;
  inOverMin: number;
  outOverMin: number;
}

const BATCH = 100;

/** Child-process mode: time one backend and print one JSON line. */
async function single(backend: BackendName, seconds: number, threads: number): Promise<SingleResult> {
  const info = await initBackend(backend, { threads, log: () => {} });
  const cfg = defaultModelConfig;
  const model = new GanModel(cfg);
  const w = { G: initWeights(model.g, 1), D: initWeights(model.d, 1) };
  model.setWeights('G', w.G);
  model.setWeights('D', w.D);
  const data = loadEmbedded().train;
  const src = { image: (id: number) => digitBytes(data.images, id), label: (id: number) => data.labels[id]! };
  const adam = { G: adamState(model.g.total), D: adamState(model.d.total) };
  const ac = { lr: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8 };
  const iterate = (i: number, withAdam: boolean) => {
    const ids = Array.from({ length: BATCH }, (_, k) => (i * BATCH + k) % data.n);
    const d = model.dStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'D' }, ids, src));
    if (withAdam) {
      adamStep(w.D, d.grads, adam.D, ac);
      model.setWeights('D', w.D);
    }
    const g = model.gStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'G' }, ids, src));
    if (withAdam) {
      adamStep(w.G, g.grads, adam.G, ac);
      model.setWeights('G', w.G);
    }
  };
  const time = (withAdam: boolean) => {
    iterate(0, withAdam);
    iterate(1, withAdam);
    const t0 = performance.now();
    let n = 0;
    while (n < 3 || (performance.now() - t0 < seconds * 1000 && n < 200)) iterate(2 + n++, withAdam);
    return { n, ms: (performance.now() - t0) / n };
  };
  const plain = time(false);
  const full = time(true);
  model.dispose();
  return {
    backend: info.name, detail: info.detail, iterations: plain.n,
    msPerIter: plain.ms, samplesPerSec: (BATCH * 1000) / plain.ms,
    msPerIterWithAdam: full.ms, samplesPerSecWithAdam: (BATCH * 1000) / full.ms,
  };
}

async function distributed(workers: number, fp16: boolean, shm: boolean, backend: string, rounds: number): Promise<DistResult> {
  const out = mkdtempSync(join(tmpdir(), 'gan-bench-'));
  // As the one-process figures, the steady state: the first rounds carry the shards and warm the backends and caches up.
  const warmup = 10;
  // The coordinator samples a grid at the end of the run: it needs a backend too.
  const info = await initBackend('auto', { threads: 1, log: () => {} });
  // As --spawn: without the addon, wasm workers sharing memory are threads of this process.
  const inThreads = threadRegionsFor(shm, backend === 'auto' ? info.name : backend);
  // Laid out as --spawn lays them out (threads are not pinned).
  const { threads, pin } = arrange(workers, availableParallelism(), undefined, canPin() && inThreads === undefined);
  // The seed's recipe, as the one-process rows and PyTorch train it: no moving average of G.
  const config = { ...defaultTrainConfig, emaDecay: 0, workers, batchSize: BATCH, epochs: 1000, maxRounds: warmup + rounds, checkpointEvery: 0, wire: fp16 ? '16' as const : 'fp32' as const };
  const coord = new Coordinator({ config, host: '127.0.0.1', port: 0, out, sameHost: shm ? 'auto' : 'off', threadRegions: inThreads });
  const port = await coord.start();
  const local = new LocalWorkers({ url: `ws://127.0.0.1:${port}`, count: workers, backend, threads, pin, inThreads, log: (s) => process.stderr.write(`${s}\n`) });
  local.start();
  try {
    await coord.train();
    if (shm && !coord.sameHost) throw new Error('shared memory was asked for and is not available (the native addon is not built, and the workers are not wasm threads)');
  } finally {
    await coord.close();
    await local.stop();
  }
  const lines = readFileSync(join(out, 'metrics.jsonl'), 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RoundMetrics);
  rmSync(out, { recursive: true, force: true });
  const steady = lines.slice(warmup).filter((m) => m.dropped.length === 0 && m.joined.length === 0);
  const mean = (f: (m: RoundMetrics) => number) => steady.reduce((a, m) => a + f(m), 0) / steady.length;
  const params = netLayout(config.model, 'D').total + netLayout(config.model, 'G').total;
  const minBytes = 4 * params * workers;
  const roundMs = mean((m) => m.round_ms);
  const reduceMs = mean((m) => m.reduce_ms);
  const bytesIn = mean((m) => m.bytes_in);
  const bytesOut = mean((m) => m.bytes_out);
  return {
    workers, fp16, tensors: shm ? 'shared memory' : 'frames', backend, threadsPerWorker: threads, rounds: steady.length,
    samplesPerSec: mean((m) => m.samples) / (roundMs / 1000),
    roundMs, computeMs: mean((m) => m.compute_ms), transferMs: mean((m) => m.transfer_ms), reduceMs,
    reduceShare: reduceMs / roundMs,
    bytesInPerRound: bytesIn, bytesOutPerRound: bytesOut, minBytesPerRound: minBytes,
    inOverMin: bytesIn / minBytes, outOverMin: bytesOut / minBytes,
  };
}

function machine(): string {
  const c = cpus();
  let blas = '';
  try {
    blas = execFileSync('sh', ['-c', 'dpkg-query -W -f="${Version}" libopenblas0-pthread 2>/dev/null || true']).toString();
  } catch {
    blas = '';
  }
  return `${c[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, Node ${process.version}${blas ? `, OpenBLAS ${blas}` : ''}`;
}

const f0 = (x: number) => x.toFixed(0);
const f1 = (x: number) => x.toFixed(1);
const pct = (x: number) => `${(x * 100).toFixed(1)}%`;
const mib = (x: number) => `${(x / 2 ** 20).toFixed(2)} MiB`;

interface TorchRow {
  label: string;
  processes: number;
  threads: number;
  result: TorchResult;
}

type TorchSection = { info: TorchInfo; rows: TorchRow[]; failed: string[] } | { missing: string };

interface Ratios {
  /** This project's 2 workers (fp32, shared memory) over PyTorch gloo world 2. */
  twoWorkersVsTorchWorld2: number | null;
  /** 1 worker through the coordinator (shared memory) over the best single process of this project (with Adam, all cores). */
  oneWorkerVsBestSingle: number | null;
  /** 4 workers (shared memory) over the same single process. */
  fourWorkersVsBestSingle: number | null;
  /** The same three through frames. */
  framed: { twoWorkersVsTorchWorld2: number | null; oneWorkerVsBestSingle: number | null; fourWorkersVsBestSingle: number | null };
  bestSingle: string | null;
}

function ratiosOf(singles: SingleResult[], dists: DistResult[], torch: TorchSection): Ratios {
  const t2 = 'rows' in torch ? torch.rows.find((r) => r.processes === 2)?.result : undefined;
  const best = [...singles].sort((a, b) => b.samplesPerSecWithAdam - a.samplesPerSecWithAdam)[0];
  const of = (tensors: DistResult['tensors']) => {
    const dist = (w: number) => dists.find((d) => d.workers === w && !d.fp16 && d.tensors === tensors);
    const vsBest = (w: number) => (dist(w) && best ? dist(w)!.samplesPerSec / best.samplesPerSecWithAdam : null);
    return { twoWorkersVsTorchWorld2: dist(2) && t2 ? dist(2)!.samplesPerSec / t2.samplesPerSec : null, oneWorkerVsBestSingle: vsBest(1), fourWorkersVsBestSingle: vsBest(4) };
  };
  return { ...of('shared memory'), framed: of('frames'), bestSingle: best ? `${best.backend} (${best.detail})` : null };
}

async function freePort(): Promise<number> {
  return new Promise((resolve, reject) => {
    const srv = createServer();
    srv.once('error', reject);
    srv.listen(0, '127.0.0.1', () => {
      const port = (srv.address() as { port: number }).port;
      srv.close(() => resolve(port));
    });
  });
}

/** PyTorch world 1 with 1 and 2 threads, then a gloo world of 2 on loopback, 1 thread each. */
async function pytorchAnchor(found: TorchInfo, iters: number): Promise<TorchSection> {
  const rows: TorchRow[] = [];
  const failed: string[] = [];
  const runs = [
    { label: 'PyTorch, one process', processes: 1, threads: 1 },
    { label: 'PyTorch, one process', processes: 1, threads: 2 },
    { label: 'PyTorch DDP, gloo on loopback', processes: 2, threads: 1 },
  ];
  for (const r of runs) {
    try {
      const result = await runTorch({
        python: found.python, world: r.processes, threads: r.threads, iters, warmup: 5,
        master: `127.0.0.1:${await freePort()}`, ifname: 'lo', timeoutMs: 60_000 + iters * 5_000,
      });
      rows.push({ ...r, result });
      process.stdout.write(`${r.label}, world ${r.processes}, ${r.threads} thread(s): ${f0(result.samplesPerSec)} samples/s (${f1(result.msPerIter)} ms/iteration)\n`);
    } catch (e) {
      failed.push((e as Error).message);
      process.stdout.write(`${r.label}, world ${r.processes}: failed: ${(e as Error).message}\n`);
    }
  }
  return { info: found, rows, failed };
}

function markdown(m: string, singles: SingleResult[], dists: DistResult[], torch: TorchSection, ck: CheckpointCost): string {
  const rows = [
    `Machine: ${m}`,
    '',
    'One process, seed model, batch 100, D and G gradients (no Adam) and with Adam on both nets:',
    '',
    '| backend | ms / iteration | samples/s | with Adam: ms | with Adam: samples/s |',
    '|---|---:|---:|---:|---:|',
    ...singles.map((s) => `| ${s.backend} (${s.detail}) | ${f1(s.msPerIter)} | ${f0(s.samplesPerSec)} | ${f1(s.msPerIterWithAdam)} | ${f0(s.samplesPerSecWithAdam)} |`),
    '',
    'Real coordinator and local worker processes, batch 100 per worker (round = D phase + G phase):',
    '',
    '| workers | tensors | gradients | samples/s | round ms | compute ms | transfer ms | coordinator work ms (share of round) | bytes in / round (x min) | bytes out / round (x min) |',
    '|---:|---|---|---:|---:|---:|---:|---:|---:|---:|',
    ...dists.map((d) => `| ${d.workers} | ${d.tensors} | ${d.fp16 ? 'fp16' : 'fp32'} | ${f0(d.samplesPerSec)} | ${f1(d.roundMs)} | ${f1(d.computeMs)} | ${f1(d.transferMs)} | ${f1(d.reduceMs)} (${pct(d.reduceShare)}) | ${mib(d.bytesInPerRound)} (${d.inOverMin.toFixed(3)}) | ${mib(d.bytesOutPerRound)} (${d.outOverMin.toFixed(3)}) |`),
    '',
    'Minimum bytes per round each way = 4 bytes x (D + G parameters) x workers, for frames; through shared memory only control messages cross the socket. Transfer = the round less compute and the coordinator\'s work: moving tensors, messages, and waiting for the slowest worker. Coordinator work = its own CPU time in a round (copying and checking gradients, folding, Adam, packing or publishing weights); with frames it overlaps with the transfers, so the columns do not add up to the round.',
  ];
  rows.push('');
  if ('missing' in torch) {
    rows.push(`PyTorch anchor: not run (${torch.missing}).`);
  } else {
    rows.push(
      `PyTorch anchor (bench/pytorch_gan.py, PyTorch ${torch.info.version}, ${torch.info.python}): the same model, loss, Adam and batch 100 per process; world 2 = DistributedDataParallel on gloo over loopback:`,
      '',
      '| run | processes x threads | ms / iteration | samples/s |',
      '|---|---:|---:|---:|',
      ...torch.rows.map((r) => `| ${r.label} | ${r.processes} x ${r.threads} | ${f1(r.result.msPerIter)} | ${f0(r.result.samplesPerSec)} |`),
      ...torch.failed.map((f) => `| failed: ${f.replace(/\|/g, '/').slice(0, 300)} | | | |`),
    );
  }
  const q = ratiosOf(singles, dists, torch);
  const x = (v: number | null) => (v === null ? 'n/a' : `${v.toFixed(2)} x`);
  rows.push(
    '',
    'Ratios:',
    '',
    `- this project's 2 workers (fp32, shared memory) vs PyTorch gloo world 2: ${x(q.twoWorkersVsTorchWorld2)} (frames: ${x(q.framed.twoWorkersVsTorchWorld2)})`,
    `- 1 worker through the coordinator (shared memory) vs the best single process of this project (${q.bestSingle ?? 'none'}, with Adam): ${x(q.oneWorkerVsBestSingle)} (frames: ${x(q.framed.oneWorkerVsBestSingle)})`,
    `- 4 workers (shared memory) vs the same single process: ${x(q.fourWorkersVsBestSingle)} (frames: ${x(q.framed.fourWorkersVsBestSingle)})`,
    '',
    `A checkpoint of the gan defaults' state (${mib(ck.bytes)}; scripts/bench-checkpoint.ts, median of ${ck.repeats}): written at once, it holds the round loop ${f1(ck.atOnce.heldMs)} ms; taken in the background, as the round loop takes it, ${f1(ck.background.heldMs)} ms, and the file is in place ${f1(ck.background.writtenMs)} ms later.`,
  );
  return rows.join('\n') + '\n';
}

async function main(): Promise<void> {
  const at = process.argv.indexOf('--hosts');
  if (at >= 2) return hostsMain(process.argv.filter((_, i) => i !== at));
  const cmd = new Command('bench')
    .description('Measure the seed model: one process per backend, then the real coordinator with 1, 2 and 4 local workers (shared memory, then frames).')
    .option('--out <dir>', 'where bench.md and bench.json go', 'bench')
    .option('--seconds <n>', 'seconds of timing per single-process measurement', intArg(1, 600), 8)
    .option('--rounds <n>', 'timed rounds per distributed configuration', intArg(3, 10000), 50)
    .option('--workers <list>', 'worker counts for the distributed part', '1,2,4')
    .option('--backends <list>', 'backends for the single-process part', 'tensorflow,native,wasm,cpu')
    .option('--torch-iters <n>', 'timed iterations per PyTorch anchor run (0: skip the anchor)', intArg(0, 100000), 50)
    .option('--hosts', 'run the multi-host benchmark in network namespaces instead (see scripts/bench-hosts.ts)')
    .option('--single <backend>', '(internal) time one backend in this process and print JSON')
    .option('--threads <n>', '(internal) threads for --single', intArg(1, 256));
  cmd.parse();
  const o = cmd.opts<{ out: string; seconds: number; rounds: number; workers: string; backends: string; torchIters: number; single?: string; threads?: number }>();
  if (o.single) {
    const r = await single(o.single as BackendName, o.seconds, o.threads ?? availableParallelism());
    process.stdout.write(JSON.stringify(r) + '\n');
    return;
  }
  const m = machine();
  process.stdout.write(`machine: ${m}\n`);
  const found = o.torchIters > 0 ? findTorch() : { missing: 'skipped (--torch-iters 0)' };
  if ('missing' in found) process.stdout.write(`PyTorch anchor rows skipped: ${found.missing}\n`);
  const self = fileURLToPath(import.meta.url);
  const singles: SingleResult[] = [];
  for (const b of o.backends.split(',')) {
    if (!BACKEND_NAMES.includes(b as BackendName) || b === 'auto') throw new Error(`unknown backend ${b}`);
    // cpu is two orders of magnitude slower: fewer seconds still give several iterations.
    const secs = b === 'cpu' ? Math.min(o.seconds, 3) : o.seconds;
    const r = spawnSync(process.execPath, [self, '--single', b, '--seconds', String(secs)], { encoding: 'utf8' });
    const line = r.stdout.trim().split('\n').pop() ?? '';
    if (r.status !== 0 || !line.startsWith('{')) {
      process.stdout.write(`${b}: not available here (${(r.stderr.trim().split('\n').pop() ?? '').slice(0, 160)})\n`);
      continue;
    }
    const s = JSON.parse(line) as SingleResult;
    singles.push(s);
    process.stdout.write(`${b}: ${f0(s.samplesPerSec)} samples/s (${f1(s.msPerIter)} ms/iteration), with Adam ${f0(s.samplesPerSecWithAdam)}\n`);
  }
  const best = singles.filter((s) => s.backend !== 'cpu').sort((a, b) => b.samplesPerSec - a.samplesPerSec)[0]?.backend ?? 'cpu';
  const dists: DistResult[] = [];
  const counts = o.workers.split(',').map(Number);
  const two = counts.includes(2) ? 2 : counts[0]!;
  const configs = [true, false].flatMap((shm) => [...counts.map((w) => ({ w, fp16: false, shm })), { w: two, fp16: true, shm }]);
  for (const { w, fp16, shm } of configs) {
    const d = await distributed(w, fp16, shm, best, o.rounds);
    dists.push(d);
    process.stdout.write(`${w} workers (${d.tensors}, ${fp16 ? 'fp16' : 'fp32'}): ${f0(d.samplesPerSec)} samples/s, round ${f1(d.roundMs)} ms = compute ${f1(d.computeMs)} + transfer ${f1(d.transferMs)} + reduce ${f1(d.reduceMs)}; bytes in ${d.inOverMin.toFixed(3)}x min, out ${d.outOverMin.toFixed(3)}x min\n`);
  }
  const torch: TorchSection = 'python' in found ? await pytorchAnchor(found, o.torchIters) : found;
  const ck = await checkpointCost();
  process.stdout.write(`checkpoint: held ${f1(ck.atOnce.heldMs)} ms at once, ${f1(ck.background.heldMs)} ms in the background\n`);
  mkdirSync(o.out, { recursive: true });
  const md = markdown(m, singles, dists, torch, ck);
  writeFileSync(join(o.out, 'bench.md'), md);
  writeFileSync(join(o.out, 'bench.json'), JSON.stringify({
    machine: m, date: new Date().toISOString(), single: singles, distributed: dists,
    pytorch: 'rows' in torch ? { python: torch.info.python, version: torch.info.version, runs: torch.rows, failed: torch.failed } : { skipped: torch.missing },
    ratios: ratiosOf(singles, dists, torch), checkpoint: ck,
  }, null, 2) + '\n');
  process.stdout.write(`\n${md}\nwrote ${join(o.out, 'bench.md')} and ${join(o.out, 'bench.json')}\n`);
}

main().then(() => process.exit(0), (e) => die('bench', e));
