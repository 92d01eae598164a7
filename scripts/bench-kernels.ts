/**
 * `node dist/scripts/bench-kernels.js`: what the wasm fast matMul path (shared/backend/wasm-kernels.ts)
 * buys on the seed model, and what is left.
 *
 * 1. Every matrix product of one GAN iteration (seed MLP, batch 100), timed on the wasm backend
 *    without and with the fast path: median ms and GFLOP/s per shape and transpose combination,
 *    the cost of materialising the transposed operand on its own, and the plain operand-copy
 *    route (copy, then an untransposed product) for comparison.
 * 2. One whole GAN iteration (dStep + gStep, 100 samples, as scripts/bench.ts times it) without and
 *    with the fast path, interleaved in rounds so that machine load hits both alike.
 * 3. A kernel profile of the iteration with the fast path: every kernel registered for wasm is
 *    wrapped with a timer (exclusive time: a kernel called from inside another, like the
 *    Transpose the fast path runs, is charged to itself only), then put back.
 *
 * Options: --seconds N (per mode for part 2, default 20), --rounds N (interleaved rounds, default 4),
 * --profile-iters N (default 6), --only shapes,iteration,profile, --json FILE.
 */
import { cpus } from 'node:os';
import { writeFileSync } from 'node:fs';
import { parseArgs } from 'node:util';
import * as tf from '@tensorflow/tfjs-core';
import '@tensorflow/tfjs-backend-wasm';
import { hasWasmFastMatMul, registerWasmFastMatMul, unregisterWasmFastMatMul } from '../shared/backend/wasm-kernels.js';
import { buildBatch } from '../shared/compute/batch.js';
import { GanModel } from '../shared/compute/gan.js';
import { loadEmbedded } from '../shared/data/mnist.js';
import { defaultModelConfig, initWeights } from '../shared/compute/model.js';
import { digitBytes } from '../shared/data/digits.js';
import { median } from './stats.js';

const BATCH = 100;

// ---------------------------------------------------------------------------------------------
// Helpers

const mean = (xs: number[]): number => xs.reduce((a, b) => a + b, 0) / xs.length;
const f1 = (x: number) => x.toFixed(1);
const f2 = (x: number) => x.toFixed(2);

function setFast(on: boolean): void {
  if (on) registerWasmFastMatMul('wasm');
  else unregisterWasmFastMatMul('wasm');
  if (hasWasmFastMatMul('wasm') !== on) throw new Error('fast path did not toggle');
}

/** Median ms of `f` (which returns tensors to dispose) over at least `minRuns` runs and about `budgetMs`. */
function timeMedian(f: () => tf.Tensor, minRuns: number, budgetMs: number): number {
  for (let i = 0; i < 2; i++) f().dispose();
  const times: number[] = [];
  const start = performance.now();
  while (times.length < minRuns || (performance.now() - start < budgetMs && times.length < 200)) {
    const t0 = performance.now();
    const y = f();
    times.push(performance.now() - t0);
    y.dispose();
  }
  return median(times);
}

// ---------------------------------------------------------------------------------------------
// 1. Per-shape products

type Combo = 'NN' | 'NT' | 'TN';
interface Product {
  layer: string;
  role: string;
  combo: Combo;
  m: number;
  k: number;
  n: number;
  /** How many times one iteration (dStep + gStep) runs this product. */
  perIter: number;
}

/**
 * The products of one iteration. Per dense layer X (rows x in), W (in x out): forward X·W (NN),
 * input gradient dY·W^T (NT), weight gradient X^T·dY (TN). dStep: G forward on 100 rows (no
 * gradient), D on 200 rows with D's weight and input gradients (not the first layer's input).
 * gStep: G and D on 100 rows; D's input gradients all the way into G, G's weight gradients.
 */
function seedProducts(): Product[] {
  const cfg = defaultModelConfig;
  const dW = [cfg.imageDim, ...cfg.dHidden, 1];
  const gW = [cfg.noiseDim, ...cfg.gHidden, cfg.imageDim];
  const out: Product[] = [];
  const add = (net: string, rows: number, widths: number[], nn: number, nt: (i: number) => number, tn: number) => {
    for (let i = 0; i + 1 < widths.length; i++) {
      const [fi, fo] = [widths[i]!, widths[i + 1]!];
      const layer = `${net}${rows} ${fi}->${fo}`;
      out.push({ layer, role: 'X·W', combo: 'NN', m: rows, k: fi, n: fo, perIter: nn });
      out.push({ layer, role: 'dY·W^T', combo: 'NT', m: rows, k: fo, n: fi, perIter: nt(i) });
      out.push({ layer, role: 'X^T·dY', combo: 'TN', m: fi, k: rows, n: fo, perIter: tn });
    }
  };
  add('D', 2 * BATCH, dW, 1, (i) => (i === 0 ? 0 : 1), 1);
  add('D', BATCH, dW, 1, () => 1, 0);
  add('G', BATCH, gW, 2, (i) => (i === 0 ? 0 : 1), 1);
  return out;
}

interface ShapeRow extends Product {
  msWithout: number;
  msWith: number;
  /** Time of the Transpose kernel alone on the transposed operand. */
  msTranspose: number;
  /** The transposed operand copied (tf.transpose), then an untransposed product: the plain operand-copy route. */
  msOperandCopy: number;
  gflopsWithout: number;
  gflopsWith: number;
}

function benchShapes(): ShapeRow[] {
  const rows: ShapeRow[] = [];
  for (const p of seedProducts()) {
    const { m, k, n, combo } = p;
    const ta = combo === 'TN';
    const tb = combo === 'NT';
    const a = tf.randomUniform(ta ? [k, m] : [m, k], -1, 1, 'float32', 1);
    const b = tf.randomUniform(tb ? [n, k] : [k, n], -1, 1, 'float32', 2);
    const f = () => tf.matMul(a, b, ta, tb);
    // Slow cases take up to ~0.5 s a run: fewer runs there.
    setFast(false);
    const msWithout = timeMedian(f, 5, 600);
    setFast(true);
    const msWith = timeMedian(f, 9, 600);
    const msTranspose = combo === 'NN' ? 0 : timeMedian(() => tf.transpose(ta ? a : b), 9, 200);
    const msOperandCopy =
      combo === 'NN' ? msWith : timeMedian(() => tf.tidy(() => tf.matMul(ta ? tf.transpose(a) : a, tb ? tf.transpose(b) : b)), 9, 300);
    tf.dispose([a, b]);
    const flop = 2 * m * k * n;
    rows.push({ ...p, msWithout, msWith, msTranspose, msOperandCopy, gflopsWithout: flop / msWithout / 1e6, gflopsWith: flop / msWith / 1e6 });
  }
  return rows;
}

function shapeTable(rows: ShapeRow[]): string {
  const lines = [
    '| layer | product | op(A) x op(B) | per iter | without: ms | GFLOP/s | with: ms | GFLOP/s | speed-up | operand transpose alone: ms | operand-copy route: ms |',
    '|---|---|---|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    lines.push(
      `| ${r.layer} | ${r.role} (${r.combo}) | ${r.m}x${r.k} · ${r.k}x${r.n} | ${r.perIter} | ${f2(r.msWithout)} | ${f2(r.gflopsWithout)} | ${f2(r.msWith)} | ${f2(r.gflopsWith)} | ${f1(r.msWithout / r.msWith)}x | ${r.combo === 'NN' ? '-' : f2(r.msTranspose)} | ${r.combo === 'NN' ? '-' : f2(r.msOperandCopy)} |`,
    );
  }
  const sum = (f: (r: ShapeRow) => number) => rows.reduce((s, r) => s + r.perIter * f(r), 0);
  const flop = sum((r) => 2 * r.m * r.k * r.n);
  const tw = sum((r) => r.msWithout);
  const tf_ = sum((r) => r.msWith);
  lines.push(
    '',
    `Sum over one iteration (each product x its count): ${f2(flop / 1e9)} GFLOP; without ${f1(tw)} ms (${f2(flop / tw / 1e6)} GFLOP/s), with ${f1(tf_)} ms (${f2(flop / tf_ / 1e6)} GFLOP/s); the operand-copy route alone would take ${f1(sum((r) => r.msOperandCopy))} ms, its operand transposes ${f1(sum((r) => r.msTranspose))} ms.`,
    'The fast path computes a plain product of two single matrices as (op(B)^T·op(A)^T)^T when that copies fewer floats (dY·W^T with few rows); otherwise it copies the transposed operand.',
  );
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------
// 2. Whole iteration

interface Iteration {
  /** dStep + gStep, 100 samples. */
  run(i: number): void;
  dispose(): void;
  /** For the profile: the batch building alone. */
  batches(i: number): void;
}

function ganIteration(): Iteration {
  const cfg = defaultModelConfig;
  const model = new GanModel(cfg);
  model.setWeights('G', initWeights(model.g, 1));
  model.setWeights('D', initWeights(model.d, 1));
  const data = loadEmbedded().train;
  const src = { image: (id: number) => digitBytes(data.images, id), label: (id: number) => data.labels[id]! };
  const ids = (i: number) => Array.from({ length: BATCH }, (_, k) => (i * BATCH + k) % data.n);
  return {
    run(i) {
      model.dStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'D' }, ids(i), src));
      model.gStep(buildBatch(cfg, { seed: 1, epoch: 0, phase: 'G' }, ids(i), src));
    },
    batches(i) {
      buildBatch(cfg, { seed: 1, epoch: 0, phase: 'D' }, ids(i), src);
      buildBatch(cfg, { seed: 1, epoch: 0, phase: 'G' }, ids(i), src);
    },
    dispose: () => model.dispose(),
  };
}

interface IterResult {
  mode: 'without' | 'with';
  iterations: number;
  medianMs: number;
  meanMs: number;
  samplesPerSecMedian: number;
  samplesPerSecMean: number;
}

function benchIterations(it: Iteration, seconds: number, rounds: number): IterResult[] {
  const times: Record<'without' | 'with', number[]> = { without: [], with: [] };
  let i = 0;
  const perRoundMs = (seconds * 1000) / rounds;
  for (let r = 0; r < rounds; r++) {
    for (const mode of ['without', 'with'] as const) {
      setFast(mode === 'with');
      it.run(i++); // warm-up after switching
      const start = performance.now();
      let n = 0;
      while (n < 2 || performance.now() - start < perRoundMs) {
        const t0 = performance.now();
        it.run(i++);
        times[mode].push(performance.now() - t0);
        n++;
      }
      process.stderr.write(`  round ${r + 1}/${rounds} ${mode}: ${n} iterations, median ${f1(median(times[mode]))} ms so far\n`);
    }
  }
  return (['without', 'with'] as const).map((mode) => {
    const t = times[mode];
    return {
      mode,
      iterations: t.length,
      medianMs: median(t),
      meanMs: mean(t),
      samplesPerSecMedian: (BATCH * 1000) / median(t),
      samplesPerSecMean: (BATCH * 1000) / mean(t),
    };
  });
}

// ---------------------------------------------------------------------------------------------
// 3. Kernel profile

interface ProfileRow {
  kernel: string;
  callsPerIter: number;
  msPerIter: number;
}

interface Profile {
  iterations: number;
  iterMs: number;
  buildBatchMs: number;
  kernelMs: number;
  rows: ProfileRow[];
}

function profileIteration(it: Iteration, iters: number): Profile {
  setFast(true);
  const saved = tf.getKernelsForBackend('wasm');
  const acc = new Map<string, { calls: number; ms: number }>();
  const stack: number[] = []; // child time accumulated per open frame
  let recording = false;
  const label = (cfg: tf.KernelConfig, attrs: tf.NamedAttrMap | undefined): string => {
    if (cfg.kernelName !== tf.BatchMatMul && cfg.kernelName !== tf._FusedMatMul) return cfg.kernelName;
    return `${cfg.kernelName} ${attrs?.transposeA ? 'T' : 'N'}${attrs?.transposeB ? 'T' : 'N'}`;
  };
  for (const cfg of saved) {
    const inner = cfg.kernelFunc;
    const timed: tf.KernelFunc = (args) => {
      if (!recording) return inner(args);
      stack.push(0);
      const t0 = performance.now();
      try {
        return inner(args);
      } finally {
        const total = performance.now() - t0;
        const children = stack.pop()!;
        if (stack.length) stack[stack.length - 1]! += total;
        const key = label(cfg, args.attrs);
        const a = acc.get(key) ?? { calls: 0, ms: 0 };
        a.calls++;
        a.ms += total - children;
        acc.set(key, a);
      }
    };
    tf.unregisterKernel(cfg.kernelName, 'wasm');
    tf.registerKernel({ ...cfg, kernelFunc: timed });
  }
  let iterMs = 0;
  let buildBatchMs = 0;
  try {
    it.run(1000);
    it.run(1001);
    recording = true;
    const t0 = performance.now();
    for (let i = 0; i < iters; i++) it.run(1002 + i);
    iterMs = (performance.now() - t0) / iters;
    recording = false;
    const t1 = performance.now();
    for (let i = 0; i < iters; i++) it.batches(1002 + i);
    buildBatchMs = (performance.now() - t1) / iters;
  } finally {
    recording = false;
    for (const cfg of saved) {
      tf.unregisterKernel(cfg.kernelName, 'wasm');
      tf.registerKernel(cfg);
    }
  }
  const rows = [...acc.entries()]
    .map(([kernel, a]) => ({ kernel, callsPerIter: a.calls / iters, msPerIter: a.ms / iters }))
    .sort((x, y) => y.msPerIter - x.msPerIter);
  return { iterations: iters, iterMs, buildBatchMs, kernelMs: rows.reduce((s, r) => s + r.msPerIter, 0), rows };
}

function profileTable(p: Profile): string {
  const pct = (x: number) => `${((100 * x) / p.iterMs).toFixed(1)}%`;
  const lines = [
    `One iteration with the fast path: ${f1(p.iterMs)} ms (${f1((BATCH * 1000) / p.iterMs)} samples/s while profiled), over ${p.iterations} iterations.`,
    '',
    '| kernel | calls / iter | ms / iter (exclusive) | share of iteration |',
    '|---|---:|---:|---:|',
    ...p.rows.filter((r) => r.msPerIter >= 0.05).map((r) => `| ${r.kernel} | ${f1(r.callsPerIter)} | ${f2(r.msPerIter)} | ${pct(r.msPerIter)} |`),
    `| (other kernels, < 0.05 ms each) | ${f1(p.rows.filter((r) => r.msPerIter < 0.05).reduce((s, r) => s + r.callsPerIter, 0))} | ${f2(p.rows.filter((r) => r.msPerIter < 0.05).reduce((s, r) => s + r.msPerIter, 0))} | |`,
    `| **all kernels** | ${f1(p.rows.reduce((s, r) => s + r.callsPerIter, 0))} | ${f2(p.kernelMs)} | ${pct(p.kernelMs)} |`,
    `| buildBatch (JS, D + G batches) | | ${f2(p.buildBatchMs)} | ${pct(p.buildBatchMs)} |`,
    `| engine, tape, tidy, reading gradients (the rest) | | ${f2(p.iterMs - p.kernelMs - p.buildBatchMs)} | ${pct(p.iterMs - p.kernelMs - p.buildBatchMs)} |`,
  ];
  return lines.join('\n');
}

// ---------------------------------------------------------------------------------------------

async function main(): Promise<void> {
  const { values: o } = parseArgs({
    options: {
      seconds: { type: 'string', default: '20' },
      rounds: { type: 'string', default: '4' },
      'profile-iters': { type: 'string', default: '6' },
      only: { type: 'string', default: 'shapes,iteration,profile' },
      json: { type: 'string' },
    },
  });
  const seconds = Number(o.seconds);
  const rounds = Number(o.rounds);
  const profileIters = Number(o['profile-iters']);
  if (!(seconds > 0) || !Number.isInteger(rounds) || rounds < 1 || !Number.isInteger(profileIters) || profileIters < 1) {
    throw new Error('--seconds must be positive, --rounds and --profile-iters positive integers');
  }
  const parts = new Set((o.only ?? '').split(','));

  if (!(await tf.setBackend('wasm'))) throw new Error('the wasm backend did not initialise');
  const simd = await tf.env().getAsync('WASM_HAS_SIMD_SUPPORT');
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${cpus().length} cores, Node ${process.version}, tfjs-core ${tf.version_core} (XNNPACK${simd ? ' SIMD' : ''}, 1 thread)`;
  process.stdout.write(`machine: ${machine}\n\n`);
  const report: Record<string, unknown> = { machine, date: new Date().toISOString() };

  if (parts.has('shapes')) {
    process.stderr.write('timing products...\n');
    const rows = benchShapes();
    report.shapes = rows;
    process.stdout.write(`## Products on wasm, without and with the fast path (median ms)\n\n${shapeTable(rows)}\n\n`);
  }

  const it = ganIteration();
  try {
    if (parts.has('iteration')) {
      process.stderr.write('timing whole iterations...\n');
      const res = benchIterations(it, seconds, rounds);
      report.iteration = res;
      const [wo, w] = res as [IterResult, IterResult];
      process.stdout.write(
        [
          `## One GAN iteration (dStep + gStep, batch ${BATCH}) on wasm, ${rounds} interleaved rounds, ~${seconds} s per mode`,
          '',
          '| fast path | iterations | median ms | mean ms | samples/s (median) | samples/s (mean) |',
          '|---|---:|---:|---:|---:|---:|',
          ...res.map((r) => `| ${r.mode} | ${r.iterations} | ${f1(r.medianMs)} | ${f1(r.meanMs)} | ${f1(r.samplesPerSecMedian)} | ${f1(r.samplesPerSecMean)} |`),
          '',
          `Speed-up: ${f2(wo.medianMs / w.medianMs)}x (medians).`,
          '',
        ].join('\n') + '\n',
      );
    }
    if (parts.has('profile')) {
      process.stderr.write('profiling kernels...\n');
      const p = profileIteration(it, profileIters);
      report.profile = p;
      process.stdout.write(`## Kernel profile with the fast path\n\n${profileTable(p)}\n`);
    }
  } finally {
    it.dispose();
  }
  if (o.json) writeFileSync(o.json, JSON.stringify(report, null, 2) + '\n');
}

main().then(
  () => process.exit(0),
  (e) => {
    process.stderr.write(`bench-kernels: ${(e as Error).stack ?? String(e)}\n`);
    process.exit(1);
  },
);
