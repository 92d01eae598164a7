/**
 * `npm run bench:local`: low-communication training (--sync-every H) across hosts behind slow
 * links, judged by what it trains in a fixed wall time. Needs root and iproute2 (ip, tc).
 *
 *   npm run bench:local                                          # cgan, W = 4, 20mbit and 200mbit, H = 1, 4, 16, 64
 *   npm run bench:local -- --rates 20mbit --sync 1,16 --seconds 60   # a shorter run
 *
 * First the reference: synchronous training on one host (`coordinator --model KIND --workers W
 * --spawn`, every default, shared memory), run to its end; its wall time is the budget of every
 * other row unless --seconds sets one. Then, for each rate and each H, the coordinator and W workers
 * in network namespaces, each host behind its own link limited to RATE both ways (scripts/lan.ts:
 * htb, no netem; every host with its own /dev/shm, so nothing is shared but the links), the given
 * --wire and the topology auto chooses, every other setting the kind's default; after the budget the
 * coordinator gets SIGINT, checkpoints and stops. Each run is then scored by `evaluate` (the
 * project's own judge: Fréchet distance in classifier features, classifier score, digits covered,
 * and for conditional kinds the share of samples the judge reads as the digit asked for), with
 * nothing else running.
 *
 * Samples/s is the samples of every round over the sum of their round times (the rounds are syncs
 * when H > 1); a row's samples are what it used in the budget.
 *
 * Writes bench/local.md and bench/local.json. Namespaces named gbl-* are deleted at the start, at
 * the end, on failure and on SIGINT/SIGTERM.
 */
import { spawn } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { die, intArg, isMain } from '../cli/args.js';
import { evaluateRun } from '../cli/evaluate.js';
import type { RoundMetrics } from '../coordinator/metrics.js';
import { readJsonl } from '../coordinator/run-dir.js';
import { lastLines } from './stats.js';
import { MODEL_KINDS, type ModelKind } from '../shared/compute/model.js';
import { WIRE_PRECISIONS, type WirePrecision } from '../shared/numerics/wire-format.js';
import { Lan, type Spawned } from './lan.js';

const lan = new Lan('gbl-', '10.78.0');
const PORT = 8766;
const CLI = (name: string) => fileURLToPath(new URL(`../cli/${name}.js`, import.meta.url));

interface Quality {
  fd: number;
  fdFloor: number | null;
  classifierScore: number;
  coverage: number;
  conditionalAccuracy?: number;
}

interface LocalRow {
  /** 'one host' (the reference) or the link rate. */
  where: string;
  sync: number;
  wire: WirePrecision;
  seconds: number;
  rounds: number;
  samples: number;
  samplesPerSec: number;
  quality: Quality | null;
  error?: string;
}

/** Wait for `p` at most `ms`, then call `onTimeout` (and still wait for `p`). */
async function stopAfter(exit: Promise<number | null>, ms: number, stop: () => void): Promise<number | null> {
  const timer = setTimeout(stop, ms);
  try {
    return await exit;
  } finally {
    clearTimeout(timer);
  }
}

/** A finished run's row: its rounds from metrics.jsonl, its quality from `evaluate`. */
async function rowOf(where: string, sync: number, wire: WirePrecision, seconds: number, dir: string): Promise<LocalRow> {
  const ms = readJsonl<RoundMetrics>(join(dir, 'metrics.jsonl'));
  if (ms.length === 0) throw new Error('no round finished');
  const samples = ms.reduce((a, m) => a + m.samples, 0);
  const roundSecs = ms.reduce((a, m) => a + m.round_ms, 0) / 1000;
  const { result } = await evaluateRun(dir, { samples: 2000, seed: 0, backend: 'auto' }, () => {});
  const r = result as unknown as Quality;
  return {
    where, sync, wire, seconds, rounds: ms.length, samples, samplesPerSec: samples / roundSecs,
    quality: { fd: r.fd, fdFloor: r.fdFloor, classifierScore: r.classifierScore, coverage: r.coverage, conditionalAccuracy: r.conditionalAccuracy },
  };
}

/** The reference: synchronous training on this host with every default, to its end (or the budget). */
async function oneHost(kind: ModelKind, w: number, budgetS: number | null, timeoutS: number): Promise<LocalRow> {
  const out = mkdtempSync(join(tmpdir(), 'gan-bench-local-'));
  try {
    const t0 = performance.now();
    const proc = spawn(process.execPath, [CLI('coordinator'), '--model', kind, '--workers', String(w), '--spawn', '--port', '0', '--out', out, '--checkpoint-every', '0'], { stdio: ['ignore', 'pipe', 'pipe'] });
    let log = '';
    for (const s of [proc.stdout, proc.stderr]) s.on('data', (b: Buffer) => (log = (log + b.toString()).slice(-6000)));
    const exit = new Promise<number | null>((res) => proc.on('exit', (code) => res(code)));
    const code = await stopAfter(exit, (budgetS ?? timeoutS) * 1000, () => proc.kill('SIGINT'));
    // It may finish before a budget given: its own time, then.
    const seconds = Math.min(budgetS ?? Infinity, (performance.now() - t0) / 1000);
    if (code !== 0) throw new Error(`coordinator exited ${code}: ${lastLines(log, 6)}`);
    return await rowOf('one host', 1, 'fp32', seconds, out);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
}

/** Coordinator and W workers in namespaces behind links of `rate`, for `budgetS` seconds. */
async function acrossHosts(kind: ModelKind, w: number, rate: string, sync: number, wire: WirePrecision, budgetS: number): Promise<LocalRow> {
  const out = mkdtempSync(join(tmpdir(), 'gan-bench-local-'));
  let procs: Spawned[] = [];
  try {
    const coord = lan.spawnIn(lan.coord, [process.execPath, CLI('coordinator'), '--model', kind, '--workers', String(w), '--host', '0.0.0.0', '--port', String(PORT),
      '--insecure', '--wire', wire, '--sync-every', String(sync), '--epochs', '1000', '--checkpoint-every', '0', '--round-timeout', '300', '--out', out], { privateShm: true });
    const workers = Array.from({ length: w }, (_, i) => lan.spawnIn(lan.workerNs(i + 1), [process.execPath, CLI('worker'),
      '--connect', `ws://${lan.coordIp}:${PORT}`, '--threads', '1', '--quiet'], { privateShm: true }));
    procs = [coord, ...workers];
    // The budget, then SIGINT: the coordinator ends the round, checkpoints and stops its workers. A
    // slow link's last sync may take a while to end: give it up to the budget again.
    const code = await stopAfter(coord.exit, budgetS * 1000, () => {
      coord.proc.kill('SIGINT');
      setTimeout(() => coord.proc.kill('SIGKILL'), budgetS * 1000 + 60_000).unref();
    });
    if (code !== 0) throw new Error(`coordinator exited ${code}: ${lastLines(coord.output(), 6)}`);
    await Promise.race([Promise.all(workers.map((x) => x.exit)), new Promise((r) => setTimeout(r, 20_000))]);
    for (const x of procs) x.proc.kill('SIGKILL');
    return await rowOf(rate, sync, wire, budgetS, out);
  } finally {
    for (const x of procs) x.proc.kill('SIGKILL');
    rmSync(out, { recursive: true, force: true });
  }
}

const f = (x: number | undefined | null, d: number) => (x === undefined || x === null || !Number.isFinite(x) ? '–' : x.toFixed(d));

function markdown(machine: string, kind: ModelKind, w: number, rows: LocalRow[], budget: number, given: boolean): string {
  const ref = rows.find((r) => r.where === 'one host' && !r.error);
  const lines = [
    `# bench:local: ${kind}, ${w} workers, ${budget.toFixed(0)} s each`,
    '',
    `${machine}. Each host behind its own link (both directions limited to the rate), its own /dev/shm; rows after the first stopped after ${given ? 'the budget --seconds gave' : "the first row's wall time"}. Quality by \`evaluate\` (2,000 samples).`,
    '',
    '| where | H | wire | samples/s | rounds | samples | FD (floor) | classifier score | digits | conditional accuracy | samples/s vs H = 1 | FD vs one host |',
    '|---|---:|---|---:|---:|---:|---:|---:|---:|---:|---:|---:|',
  ];
  for (const r of rows) {
    if (r.error) {
      lines.push(`| ${r.where} | ${r.sync} | ${r.wire} | failed: ${r.error.replace(/\|/g, '/')} |||||||||`);
      continue;
    }
    const base = rows.find((x) => x.where === r.where && x.sync === 1 && x.wire === r.wire && !x.error);
    const q = r.quality;
    lines.push(`| ${r.where} | ${r.sync} | ${r.wire} | ${r.samplesPerSec.toFixed(0)} | ${r.rounds} | ${r.samples} | ${f(q?.fd, 2)} (${f(q?.fdFloor, 2)}) | ${f(q?.classifierScore, 2)} | ${q?.coverage ?? '–'}/10 | ${q?.conditionalAccuracy === undefined ? '–' : `${(q.conditionalAccuracy * 100).toFixed(1)}%`} | ${base && r.where !== 'one host' ? `${(r.samplesPerSec / base.samplesPerSec).toFixed(2)}x` : '–'} | ${ref?.quality && q ? `${(q.fd / ref.quality.fd).toFixed(2)}x` : '–'} |`);
  }
  return lines.join('\n') + '\n';
}

export async function localMain(argv: string[]): Promise<void> {
  const cmd = new Command('bench:local')
    .description('Low-communication training (--sync-every) across namespaces behind slow links, judged by quality in the wall time synchronous training takes on one host.')
    .option('--model <kind>', `model kind (${MODEL_KINDS.join(', ')})`, 'cgan')
    .option('--workers <n>', 'workers', intArg(1, 16), 4)
    .option('--rates <list>', 'link rates (tc syntax)', '20mbit,200mbit')
    .option('--sync <list>', '--sync-every values to run at each rate', '1,4,16,64')
    .option('--wire <precision>', `the runs' --wire across hosts (${WIRE_PRECISIONS.join(', ')})`, '8')
    .option('--seconds <s>', "every row's budget (default: the one-host run's wall time)", intArg(5, 86400))
    .option('--out <dir>', 'where local.md and local.json go', 'bench');
  cmd.parse(argv);
  const o = cmd.opts<{ model: string; workers: number; rates: string; sync: string; wire: string; seconds?: number; out: string }>();
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('needs Linux and root (network namespaces)');
  if (!MODEL_KINDS.includes(o.model as ModelKind)) throw new Error(`--model ${o.model}: not one of ${MODEL_KINDS.join(', ')}`);
  if (!WIRE_PRECISIONS.includes(o.wire as WirePrecision)) throw new Error(`--wire ${o.wire}: not one of ${WIRE_PRECISIONS.join(', ')}`);
  const kind = o.model as ModelKind;
  const wire = o.wire as WirePrecision;
  const rates = o.rates.split(',').map((s) => s.trim()).filter(Boolean);
  const syncs = o.sync.split(',').map(Number);
  if (syncs.some((h) => !Number.isInteger(h) || h < 1)) throw new Error(`--sync ${o.sync}: expected whole numbers from 1`);
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, Linux ${release()}, Node ${process.version}`;
  process.stdout.write(`machine: ${machine}\n`);

  const onSignal = (sig: NodeJS.Signals) => {
    lan.cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  const rows: LocalRow[] = [];
  const say = (r: LocalRow) => process.stdout.write(r.error ? `${r.where} H=${r.sync}: FAILED: ${r.error}\n`
    : `${r.where} H=${r.sync} ${r.wire}: ${r.samplesPerSec.toFixed(0)} samples/s, ${r.rounds} rounds, ${r.samples} samples in ${r.seconds.toFixed(0)} s; FD ${f(r.quality?.fd, 2)}, score ${f(r.quality?.classifierScore, 2)}, ${r.quality?.coverage}/10 digits, conditional accuracy ${f((r.quality?.conditionalAccuracy ?? NaN) * 100, 1)}%\n`);
  const failed = (where: string, sync: number, w: WirePrecision, e: unknown): LocalRow => ({ where, sync, wire: w, seconds: 0, rounds: 0, samples: 0, samplesPerSec: NaN, quality: null, error: (e as Error).message });
  let budget = o.seconds ?? 0;
  try {
    const ref = await oneHost(kind, o.workers, o.seconds ?? null, 3600).catch((e) => failed('one host', 1, 'fp32', e));
    rows.push(ref);
    say(ref);
    budget ||= ref.seconds;
    if (!budget) throw new Error('the one-host run failed and --seconds is not given: no budget');
    lan.removeNamespaces();
    await lan.buildNet(o.workers);
    for (const rate of rates) {
      lan.shape(o.workers, rate);
      for (const h of syncs) {
        const row = await acrossHosts(kind, o.workers, rate, h, wire, budget).catch((e) => failed(rate, h, wire, e));
        lan.killAll();
        rows.push(row);
        say(row);
      }
    }
  } finally {
    lan.cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
  }
  mkdirSync(o.out, { recursive: true });
  const md = markdown(machine, kind, o.workers, rows, budget, o.seconds !== undefined);
  writeFileSync(join(o.out, 'local.md'), md);
  writeFileSync(join(o.out, 'local.json'), JSON.stringify({ machine, date: new Date().toISOString(), model: kind, workers: o.workers, budgetSeconds: budget, rows }, null, 2) + '\n');
  process.stdout.write(`\n${md}\nwrote ${join(o.out, 'local.md')} and ${join(o.out, 'local.json')}\n`);
}

if (isMain(import.meta.url)) localMain(process.argv).then(() => process.exit(0), (e) => { lan.cleanup(); die('bench:local', e); });
