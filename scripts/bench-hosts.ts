/**
 * `npm run bench:hosts` (same as `npm run bench -- --hosts`): the seed model across several "hosts"
 * on one LAN switch, built from Linux network namespaces. Needs root and iproute2 (ip, tc).
 *
 *   npm run bench:hosts                                   # rates 200mbit,1gbit; W = 1, 2, 4; wires fp32,16,8; 20 rounds
 *   npm run bench:hosts -- --rates 1gbit --workers 1,2 --wires fp32 --rounds 3    # a quick smoke run
 *   npm run bench:hosts -- --local                        # --sync-every rows judged by quality (bench-local.ts)
 *
 * Topology: namespace gbh-sw holds a Linux bridge (the switch); gbh-c (the coordinator, 10.77.0.1)
 * and gbh-w1..gbh-wW (workers, 10.77.0.11...) each reach it over one veth pair (eth0 in the host,
 * p-c / p-wI on the switch). Both ends of every veth carry an htb qdisc limited to RATE, so each
 * direction of each link is limited, as a machine's link to its switch is. No netem (this kernel
 * has none): the links add bandwidth limits and queueing only.
 *
 * Every host has a /dev/shm of its own (a private tmpfs mounted in the mount namespace `ip netns
 * exec` makes), as separate machines have: a worker cannot map the coordinator's shared memory and
 * falls back to frames by itself, as it would on another machine.
 *
 * For each rate and each W: the real coordinator (dist/cli/coordinator.js) in gbh-c and W real
 * workers (dist/cli/worker.js, --threads 1) in gbh-w1..gbh-wW, batch 100 per worker, 3 warm-up
 * rounds then --rounds timed rounds, for each --wire of --wires and each --topology of --topologies
 * (star, chain, sharded; with W = 1 relays do nothing, so that runs once). From metrics.jsonl: median round ms
 * and samples/s (sum of samples / sum of round seconds over the timed rounds). Link bytes are the
 * kernel's counters of each host's eth0 (the ones /sys/class/net/eth0/statistics/{rx,tx}_bytes
 * shows inside that namespace), read through /proc/PID/net/dev of a process parked in each
 * namespace so that no process has to start at the instant the timed rounds begin and end: read
 * when metrics.jsonl gets its 3rd line and its last, divided by the rounds in between. (A round
 * ends when the coordinator has handed the last weights to its sockets; what is still in flight
 * then, up to a few MB on a slow link, is counted in the next round, so single rounds wobble by
 * that much and the average over N rounds by that / N. The counters count a GSO packet's headers
 * once, so they show slightly less than a wire would.)
 * Then the PyTorch anchor (bench/pytorch_gan.py) on the same links when torch imports: rank R in
 * gbh-w(R+1), gloo master 10.77.0.11, W = 1 (one plain process), 2, 4, and for W > 1 once more
 * with DDP's fp16_compress_hook; bytes per iteration.
 *
 * Each row's busiest link is also given as a multiple of the least its topology must move per
 * round in each direction (minimumPerLink): the star's coordinator link W models, a chain's relay
 * links two (partial sums one way and weights the other, both ways), a sharded group's links what
 * its share of chunks gives them (topology.ts: 1.33 models at W = 2, 1.6 at W = 4, the least any
 * topology moves in which the coordinator steps every chunk), a ring all-reduce's links
 * 2(W-1)/W; a model at the row's wire precision, weights as large as gradients (fp32's weights
 * cross as XOR deltas, about 0.7 of that, so its rows can come out below 1).
 *
 * Writes bench/hosts.md and bench/hosts.json. Namespaces named gbh-* are deleted at the start
 * (left by an interrupted run), at the end, on failure and on SIGINT/SIGTERM.
 */
import { mkdirSync, mkdtempSync, readFileSync, rmSync, statSync, writeFileSync } from 'node:fs';
import { availableParallelism, cpus, release, tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command } from 'commander';
import { type BackendName, BACKEND_NAMES, initBackend } from '../shared/backend/choose.js';
import { defaultModelConfig, netLayout } from '../shared/compute/model.js';
import { die, intArg, isMain } from '../cli/args.js';
import type { RoundMetrics } from '../coordinator/metrics.js';
import { type TorchInfo, findTorch, runTorch } from './bench-torch.js';
import { DEV, Lan, type Net, type Snapshot } from './lan.js';
import { WIRE_PRECISIONS, type WirePrecision, bytesPerValue } from '../shared/numerics/wire-format.js';
import { chunkCount } from '../shared/numerics/chunks.js';
import { REDUCE_CHUNK } from '../coordinator/options.js';
import { shardLoads, shardOwners } from '../coordinator/topology.js';
import { SHARD_COORDINATOR } from '../shared/wire/protocol.js';
import { localMain } from './bench-local.js';
import { lastLines, median } from './stats.js';

const lan = new Lan('gbh-', '10.77.0');

const PORT = 8765;
const BATCH = 100;
const WARMUP = 3;
const modelBytes = () => 4 * (netLayout(defaultModelConfig, 'D').total + netLayout(defaultModelConfig, 'G').total);
const CLI = (name: string) => fileURLToPath(new URL(`../cli/${name}.js`, import.meta.url));

/** The project's --topology (star: every worker sends to the coordinator), or the PyTorch anchor. */
type Mode = 'star' | 'chain' | 'sharded' | 'pytorch';
const TOPOLOGY_MODES = ['star', 'chain', 'sharded'] as const;
type ProjectMode = (typeof TOPOLOGY_MODES)[number];
/** The project's --wire, or PyTorch's allreduce precision (fp16: fp16_compress_hook). */
type Wire = WirePrecision;

interface LinkBytes {
  /** Bytes into the host (rx of its eth0) and out of it (tx), per round. */
  in: number;
  out: number;
}

interface HostRow {
  rate: string;
  workers: number;
  mode: Mode;
  wire: Wire;
  /** Runs with W = 1 are direct and relayed at once. */
  note?: string;
  error?: string;
  rounds: number;
  samplesPerSec: number;
  /** Median round (PyTorch: mean iteration) in ms. */
  roundMs: number;
  /** Medians of the round's split (metrics.jsonl: the workers' compute, the coordinator's work); absent for PyTorch. */
  split?: { computeMs: number; coordinatorMs: number };
  coordinator: LinkBytes | null;
  workerLinks: LinkBytes[];
  busiest: (LinkBytes & { worker: number }) | null;
}

// ---------------------------------------------------------------------------------------------
// One configuration

/** Per-round link bytes between two snapshots, from each host's side. */
function perRound(a: Snapshot, b: Snapshot, withCoordinator: boolean): Pick<HostRow, 'coordinator' | 'workerLinks' | 'busiest'> {
  const n = Math.max(1, b.round - a.round);
  const link = (x: { rx: number; tx: number }, y: { rx: number; tx: number }) => ({ in: (y.rx - x.rx) / n, out: (y.tx - x.tx) / n });
  const workerLinks = b.workers.map((y, i) => link(a.workers[i]!, y));
  let busiest: HostRow['busiest'] = null;
  workerLinks.forEach((l, i) => {
    if (!busiest || l.in + l.out > busiest.in + busiest.out) busiest = { ...l, worker: i + 1 };
  });
  return { coordinator: withCoordinator ? link(a.coord, b.coord) : null, workerLinks, busiest };
}

async function withTimeout<T>(p: Promise<T>, ms: number, onTimeout: () => void): Promise<T> {
  let timer: NodeJS.Timeout | undefined;
  const t = new Promise<never>((_, rej) => {
    timer = setTimeout(() => {
      onTimeout();
      rej(new Error(`timed out after ${Math.round(ms / 1000)} s`));
    }, ms);
  });
  try {
    return await Promise.race([p, t]);
  } finally {
    clearTimeout(timer);
  }
}

/**
 * The least a row's busiest link must carry per round in each direction, in bytes: the star's
 * coordinator link W models (W gradients in, W weights out), a relay chain's inner links two
 * (partial sums and weights pass both ways), PyTorch's ring all-reduce 2(W-1)/W (nothing with
 * W = 1); one model at the wire's precision.
 */
function minimumPerLink(mode: Mode, wire: Wire, w: number): number {
  const model = (modelBytes() / 4) * bytesPerValue(wire);
  if (mode === 'pytorch') return w === 1 ? 0 : (2 * (w - 1) / w) * model;
  if (mode === 'chain' && w >= 2) return 2 * model;
  if (mode === 'sharded' && w >= 2) {
    // Per net, the busier of a member's link and the coordinator's at the plan's share of chunks, with weights as large as gradients.
    let member = 0;
    let coordinator = 0;
    for (const net of ['D', 'G'] as const) {
      const size = netLayout(defaultModelConfig, net).total;
      const load = { others: 0, seeded: false };
      const owners = shardOwners(chunkCount(size, REDUCE_CHUNK), w, load);
      const l = shardLoads(w, owners.filter((x) => x === SHARD_COORDINATOR).length / owners.length, load);
      member += l.member * size;
      coordinator += l.coordinator * size;
    }
    return Math.max(member, coordinator) * bytesPerValue(wire);
  }
  return w * model;
}

async function runProject(net: Net, rate: string, w: number, mode: ProjectMode, wire: Wire, rounds: number, backend: string, timeoutMs: number): Promise<HostRow> {
  const out = mkdtempSync(join(tmpdir(), 'gan-bench-hosts-'));
  const metricsFile = join(out, 'metrics.jsonl');
  // Every host with a /dev/shm of its own: workers find the coordinator's regions missing and use frames, as on other machines.
  const coord = lan.spawnIn(lan.coord, [process.execPath, CLI('coordinator'), '--workers', String(w), '--host', '0.0.0.0', '--port', String(PORT),
    '--insecure', '--wire', wire, '--topology', mode, '--batch-size', String(BATCH), '--epochs', '1000',
    '--max-rounds', String(WARMUP + rounds), '--checkpoint-every', '0', '--round-timeout', '120', '--out', out], { privateShm: true });
  const workers = Array.from({ length: w }, (_, i) => lan.spawnIn(lan.workerNs(i + 1), [process.execPath, CLI('worker'),
    '--connect', `ws://${lan.coordIp}:${PORT}`, '--backend', backend, '--threads', '1', '--quiet'], { privateShm: true }));
  // Counters at the end of the warm-up rounds and of the last round, as metrics.jsonl grows.
  const snap: { first?: Snapshot; last?: Snapshot } = {};
  let size = -1;
  const poll = setInterval(() => {
    let s: number;
    try {
      s = statSync(metricsFile).size;
    } catch {
      return;
    }
    if (s === size) return;
    size = s;
    const lines = readFileSync(metricsFile, 'utf8').split('\n').filter((l) => l.trim()).length;
    if (!snap.first && lines >= WARMUP) snap.first = lan.snapshot(net, w, lines);
    if (!snap.last && lines >= WARMUP + rounds) snap.last = lan.snapshot(net, w, lines);
  }, 2);
  try {
    const code = await withTimeout(coord.exit, timeoutMs, () => lan.killAll());
    if (code !== 0) throw new Error(`coordinator exited ${code}: ${lastLines(coord.output())}`);
    const codes = await withTimeout(Promise.all(workers.map((x) => x.exit)), 20_000, () => workers.forEach((x) => x.proc.kill('SIGKILL')));
    const bad = codes.findIndex((c) => c !== 0);
    if (bad >= 0) throw new Error(`worker ${bad + 1} exited ${codes[bad]}: ${lastLines(workers[bad]!.output())}`);
  } finally {
    clearInterval(poll);
    for (const x of [coord, ...workers]) x.proc.kill('SIGKILL');
  }
  let ms: RoundMetrics[];
  try {
    if (!snap.first || !snap.last) throw new Error(`metrics.jsonl never reached ${WARMUP + rounds} lines`);
    ms = readFileSync(metricsFile, 'utf8').trim().split('\n').map((l) => JSON.parse(l) as RoundMetrics);
  } finally {
    rmSync(out, { recursive: true, force: true });
  }
  const timed = ms.slice(WARMUP);
  const links = perRound(snap.first, snap.last, true);
  // Relayed, the coordinator receives less than one gradient per worker (a chain's partial sum; a group's parts and sums).
  const unrelayed = mode !== 'star' && w > 1 && links.coordinator!.in > 0.9 * minimumPerLink('star', wire, w);
  const shared = /shares this host/.test(coord.output());
  const secs = timed.reduce((a, m) => a + m.round_ms, 0) / 1000;
  const dropped = timed.filter((m) => m.dropped.length > 0 || m.joined.length > 0).length;
  return {
    rate, workers: w, mode, wire, rounds: timed.length,
    note: [w === 1 ? 'every topology is the star with one worker' : '', dropped ? `${dropped} rounds with drops or joins` : '',
      unrelayed ? 'relays did not engage: the coordinator received a gradient from every worker' : '',
      shared ? 'a worker mapped the coordinator\'s shared memory' : ''].filter(Boolean).join('; ') || undefined,
    samplesPerSec: timed.reduce((a, m) => a + m.samples, 0) / secs,
    roundMs: median(timed.map((m) => m.round_ms)),
    split: { computeMs: median(timed.map((m) => m.compute_ms)), coordinatorMs: median(timed.map((m) => m.reduce_ms)) },
    ...links,
  };
}

/** A fresh gloo master port for every world, so that no run waits on the last one's sockets. */
let masterPort = 29500;

async function runPytorch(net: Net, torch: TorchInfo, rate: string, w: number, wire: 'fp32' | '16', rounds: number, timeoutMs: number): Promise<HostRow> {
  const snap: { first?: Snapshot } = {};
  const r = await runTorch({
    python: torch.python, world: w, threads: 1, iters: rounds, warmup: WARMUP, hook: wire === '16' ? 'fp16' : undefined,
    master: `${lan.workerIp(1)}:${masterPort++}`, ifname: DEV, wrap: (rank) => ['ip', 'netns', 'exec', lan.workerNs(rank + 1)],
    onTimedStart: () => {
      snap.first = lan.snapshot(net, w, 0);
    },
    track: (p) => lan.track(p), timeoutMs,
  });
  const last = lan.snapshot(net, w, r.iters);
  if (!snap.first) throw new Error('rank 0 never started its timed iterations');
  return {
    rate, workers: w, mode: 'pytorch', wire, rounds: r.iters,
    note: w === 1 ? 'one process, no torch.distributed' : undefined,
    samplesPerSec: r.samplesPerSec, roundMs: r.msPerIter,
    ...perRound(snap.first, last, false),
  };
}

// ---------------------------------------------------------------------------------------------
// Report

const MB = (x: number) => (x / 1e6).toFixed(2);
const xm = (x: number, model: number) => (x / model).toFixed(2);

function linkCell(l: LinkBytes | null, model: number): string {
  return l ? `${MB(l.in)} / ${MB(l.out)} (${xm(l.in, model)} / ${xm(l.out, model)})` : '–';
}

/** A wire as the tables name it. */
const wireName = (r: Pick<HostRow, 'mode' | 'wire'>) => (r.mode === 'pytorch' ? (r.wire === '16' ? 'fp16 hook' : 'fp32') : r.wire === 'fp32' ? 'fp32' : `${r.wire}-bit`);
const projectWire = (wire: Wire) => wireName({ mode: 'star', wire });

/** The busiest link of a row (the coordinator's or a worker's) and the least its topology must carry. */
function busiestLink(r: HostRow): { in: number; out: number; over: number } | null {
  const links = [r.coordinator, r.busiest].filter((l): l is LinkBytes => !!l);
  if (links.length === 0) return null;
  const top = links.reduce((a, b) => (b.in + b.out > a.in + a.out ? b : a));
  const min = minimumPerLink(r.mode, r.wire, r.workers);
  return { in: top.in, out: top.out, over: min > 0 ? Math.max(top.in, top.out) / min : NaN };
}

/**
 * The ratios the targets are stated in: for each worker count above one, the project's fastest
 * topology on each wire against PyTorch at the matching precision (fp32 gloo;
 * 16- and 8-bit against the fp16 hook), and each wire's largest W against fp32 W = 1.
 */
function ratios(rows: HostRow[], rate: string): { name: string; value: number | null }[] {
  const ok = rows.filter((r) => r.rate === rate && !r.error);
  const ws = [...new Set(ok.map((r) => r.workers))].sort((a, b) => a - b);
  const top = ws[ws.length - 1] ?? 1;
  const wires = [...new Set(ok.filter((r) => r.mode !== 'pytorch').map((r) => r.wire))];
  const best = (w: number, wire: Wire) => ok.filter((r) => r.mode !== 'pytorch' && r.workers === w && r.wire === wire).sort((a, b) => b.samplesPerSec - a.samplesPerSec)[0];
  const torch = (w: number, wire: Wire) => ok.find((r) => r.mode === 'pytorch' && r.workers === w && r.wire === (wire === 'fp32' ? 'fp32' : '16'));
  const one = best(1, 'fp32');
  const out: { name: string; value: number | null }[] = [];
  for (const wire of wires) {
    for (const w of ws.filter((x) => x > 1)) {
      const b = best(w, wire);
      const t = torch(w, wire);
      out.push({ name: `${projectWire(wire)} W=${w} (${b?.mode ?? '?'}) vs PyTorch ${t ? wireName(t) : (wire === 'fp32' ? 'fp32' : 'fp16 hook')} W=${w} samples/s`, value: b && t ? b.samplesPerSec / t.samplesPerSec : null });
    }
    const b = best(top, wire);
    out.push({ name: `${projectWire(wire)} W=${top} (${b?.mode ?? '?'}) vs fp32 W=1 samples/s`, value: b && one ? b.samplesPerSec / one.samplesPerSec : null });
  }
  return out;
}

function markdown(machine: string, rates: string[], rows: HostRow[], modelBytes: number, torchLine: string, rounds: number): string {
  const out = [
    `Machine: ${machine}`,
    '',
    `Hosts in network namespaces on one bridge, each behind its own link limited to RATE in each direction (htb on both veth ends, no added latency) and with a /dev/shm of its own; one host per worker or rank, workers as on the machine line; batch 100 per worker or rank; ${rounds} timed rounds after ${WARMUP} warm-up rounds. ${torchLine}`,
    '',
    `Link MB are per round (PyTorch: per iteration), in / out as the host sees them, and in parentheses as multiples of the fp32 model (4 bytes x (D + G parameters) = ${MB(modelBytes)} MB, one copy of both nets). "x minimum" is the busiest link's larger direction over the least its topology must move per round at that wire's precision (star: W models through the coordinator's link; chain: 2 through each relay's; sharded: what its share of chunks gives each link, 1.33 at W = 2 and 1.6 at W = 4; ring all-reduce: 2(W-1)/W), with the weights as many bytes as the gradients: fp32's weights go as XOR deltas of about 0.7 of that, so its rows can move less. Compute / coordinator ms: medians of metrics.jsonl's compute_ms (the slowest worker's gradient) and reduce_ms (the coordinator's own work: folding, Adam, packing, handing frames to sockets). Samples/s = samples / round time over the timed rounds; PyTorch: W x 100 x iterations / seconds, and its round is the mean iteration.`,
  ];
  for (const rate of rates) {
    out.push('', `### ${rate} per link`, '', '| W | run | wire | samples/s | median round ms | of which compute / coordinator ms | coordinator link MB in / out (x model) | busiest worker link MB in / out (x model) | busiest link x minimum |', '|---:|---|---|---:|---:|---:|---:|---:|---:|');
    for (const r of rows.filter((x) => x.rate === rate)) {
      const run = `${r.mode}${r.note ? ` (${r.note})` : ''}`;
      if (r.error) {
        out.push(`| ${r.workers} | ${run} | ${wireName(r)} | failed: ${r.error.replace(/\|/g, '/').slice(0, 300)} | | | | | |`);
        continue;
      }
      const b = busiestLink(r);
      out.push(`| ${r.workers} | ${run} | ${wireName(r)} | ${r.samplesPerSec.toFixed(0)} | ${r.roundMs.toFixed(1)} | ${r.split ? `${r.split.computeMs.toFixed(0)} / ${r.split.coordinatorMs.toFixed(0)}` : '–'} | ${linkCell(r.coordinator, modelBytes)} | ${r.busiest ? `w${r.busiest.worker}: ${linkCell(r.busiest, modelBytes)}` : '–'} | ${b && Number.isFinite(b.over) ? b.over.toFixed(2) : '–'} |`);
    }
    out.push('');
    for (const q of ratios(rows, rate)) out.push(`- ${q.name}: ${q.value === null ? 'n/a' : `${q.value.toFixed(2)} x`}`);
  }
  return out.join('\n') + '\n';
}

// ---------------------------------------------------------------------------------------------

export async function hostsMain(argv: string[]): Promise<void> {
  // `--local`: the low-communication rows (bench-local.ts), judged by quality in a wall time.
  if (argv.includes('--local')) return localMain(argv.filter((a) => a !== '--local'));
  const cmd = new Command('bench:hosts')
    .description('Coordinator and workers (and the PyTorch anchor) in network namespaces behind rate-limited links to one bridge.')
    .option('--rates <list>', 'link rates (tc syntax), each run in turn', '200mbit,1gbit')
    .option('--workers <list>', 'worker counts', '1,2,4')
    .option('--wires <list>', `the project's --wire values to run (${WIRE_PRECISIONS.join(', ')})`, WIRE_PRECISIONS.join(','))
    .option('--topologies <list>', `the project's --topology values to run (${TOPOLOGY_MODES.join(', ')})`, TOPOLOGY_MODES.join(','))
    .option('--rounds <n>', 'timed rounds (PyTorch: iterations) after 3 warm-up rounds', intArg(1, 10000), 20)
    .option('--backend <name>', 'worker backend (default: the best that initialises here)')
    .option('--no-pytorch', 'skip the PyTorch anchor')
    .option('--out <dir>', 'where hosts.md and hosts.json go', 'bench')
    .option('--timeout <s>', 'give up on one configuration after this many seconds (default 120 + 30 x rounds)', intArg(10));
  cmd.parse(argv);
  const o = cmd.opts<{ rates: string; workers: string; wires: string; topologies: string; rounds: number; backend?: string; pytorch: boolean; out: string; timeout?: number }>();
  if (process.platform !== 'linux' || process.getuid?.() !== 0) throw new Error('needs Linux and root (network namespaces)');
  const rates = o.rates.split(',').map((s) => s.trim()).filter(Boolean);
  const counts = o.workers.split(',').map(Number);
  if (counts.some((w) => !Number.isInteger(w) || w < 1 || w > 200)) throw new Error(`--workers ${o.workers}: expected a list of counts from 1 to 200`);
  const maxW = Math.max(...counts);
  const wires = o.wires.split(',').map((s) => s.trim()) as Wire[];
  const badWire = wires.find((x) => !WIRE_PRECISIONS.includes(x));
  if (badWire !== undefined) throw new Error(`--wires ${o.wires}: ${badWire} is not one of ${WIRE_PRECISIONS.join(', ')}`);
  const topologies = o.topologies.split(',').map((s) => s.trim()) as ProjectMode[];
  const badTopology = topologies.find((x) => !TOPOLOGY_MODES.includes(x));
  if (badTopology !== undefined) throw new Error(`--topologies ${o.topologies}: ${badTopology} is not one of ${TOPOLOGY_MODES.join(', ')}`);
  const timeoutMs = (o.timeout ?? 120 + 30 * o.rounds) * 1000;
  const perEpoch = Math.floor(10000 / (BATCH * maxW));
  if (WARMUP + o.rounds > perEpoch) process.stdout.write(`note: with ${maxW} workers an epoch of the embedded 10,000 digits is ${perEpoch} rounds; the timed rounds cross an epoch boundary, whose new shards add to the link bytes\n`);

  if (o.backend && !BACKEND_NAMES.includes(o.backend as BackendName)) throw new Error(`unknown backend ${o.backend}`);
  const info = await initBackend((o.backend ?? 'auto') as BackendName, { threads: 1, log: () => {} });
  const backend = info.name;
  const torch = o.pytorch ? findTorch() : { missing: 'skipped (--no-pytorch)' };
  const torchLine = 'python' in torch ? `PyTorch ${torch.version} (${torch.python}), gloo, 1 thread per rank.` : `PyTorch rows skipped: ${torch.missing}.`;
  const machine = `${cpus()[0]?.model ?? 'unknown CPU'}, ${availableParallelism()} cores, Linux ${release()}, Node ${process.version}; workers: ${info.name} (${info.detail}), 1 thread each`;
  process.stdout.write(`machine: ${machine}\n${torchLine}\n`);

  const onSignal = (sig: NodeJS.Signals) => {
    process.stderr.write(`\nbench:hosts: ${sig}: removing the namespaces\n`);
    lan.cleanup();
    process.exit(sig === 'SIGINT' ? 130 : 143);
  };
  const onCrash = (e: unknown) => {
    lan.cleanup();
    die('bench:hosts', e);
  };
  process.once('SIGINT', onSignal);
  process.once('SIGTERM', onSignal);
  process.once('uncaughtException', onCrash);
  const rows: HostRow[] = [];
  try {
    for (const ns of lan.nsList()) process.stdout.write(`removing stale namespace ${ns}\n`);
    lan.removeNamespaces();
    const net = await lan.buildNet(maxW);
    for (const rate of rates) {
      lan.shape(maxW, rate);
      for (const w of counts) {
        const jobs: { mode: Mode; wire: Wire; run: () => Promise<HostRow> }[] = [
          ...wires.flatMap((wire) => (w > 1 ? topologies : topologies.slice(0, 1)).map((mode) => ({ mode, wire, run: () => runProject(net, rate, w, mode, wire, o.rounds, backend, timeoutMs) }))),
          ...('python' in torch ? (['fp32', '16'] as const).filter((x) => x === 'fp32' || w > 1).map((wire) => ({ mode: 'pytorch' as const, wire, run: () => runPytorch(net, torch, rate, w, wire, o.rounds, timeoutMs) })) : []),
        ];
        for (const job of jobs) {
          let row: HostRow;
          try {
            row = await job.run();
            const l = (x: LinkBytes | null) => (x ? `${MB(x.in)}/${MB(x.out)} MB` : '–');
            process.stdout.write(`${rate} W=${w} ${job.mode} ${wireName(row)}: ${row.samplesPerSec.toFixed(0)} samples/s, median round ${row.roundMs.toFixed(1)} ms; per round: coordinator link in/out ${l(row.coordinator)}, busiest worker link ${l(row.busiest)}\n`);
          } catch (e) {
            const error = (e as Error).message;
            row = { rate, workers: w, mode: job.mode, wire: job.wire, error, rounds: 0, samplesPerSec: NaN, roundMs: NaN, coordinator: null, workerLinks: [], busiest: null };
            process.stdout.write(`${rate} W=${w} ${job.mode} ${wireName(job)}: FAILED: ${error}\n`);
          }
          rows.push(row);
          lan.killAll();
        }
      }
    }
  } finally {
    lan.cleanup();
    process.off('SIGINT', onSignal);
    process.off('SIGTERM', onSignal);
    process.off('uncaughtException', onCrash);
  }
  mkdirSync(o.out, { recursive: true });
  const md = markdown(machine, rates, rows, modelBytes(), torchLine, o.rounds);
  writeFileSync(join(o.out, 'hosts.md'), md);
  writeFileSync(join(o.out, 'hosts.json'), JSON.stringify({
    machine, date: new Date().toISOString(), rates, workers: counts, wires, topologies, rounds: o.rounds, warmup: WARMUP, backend: info,
    pytorch: 'python' in torch ? torch : null, modelBytes: modelBytes(), rows,
    ratios: Object.fromEntries(rates.map((r) => [r, ratios(rows, r)])),
  }, null, 2) + '\n');
  process.stdout.write(`\n${md}\nwrote ${join(o.out, 'hosts.md')} and ${join(o.out, 'hosts.json')}\n`);
}

if (isMain(import.meta.url)) hostsMain(process.argv).then(() => process.exit(0), (e) => { lan.cleanup(); die('bench:hosts', e); });
