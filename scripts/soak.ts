/**
 * `npm run soak -- --minutes 20`: a chaos soak of the failure model. The tiny model trains across
 * network namespaces (scripts/lan.ts: the coordinator and each worker on a host of its own, one
 * more host for a spare worker and for strangers) while a seeded schedule injects, one after
 * another and each kind in turn: a worker killed and restarted, a worker frozen (SIGSTOP) and
 * thawed, the coordinator killed and resumed (--resume), a worker's link taken down and up, a
 * relay killed mid-chain, bad frames from a worker that knows the token (soak-rogue.ts), a flood
 * of strangers before the handshake (scripts/strangers.mjs), and the run directory's disk filled
 * (the coordinator stops with E_DISK) and freed (resumed).
 *
 * All along it checks (soak-checks.ts): every finished epoch used each sample exactly once, every
 * checkpoint loads and holds only finite numbers, losses are finite, the coordinator's memory and
 * descriptors stay flat, and the run makes progress after each fault. It prints a table of the
 * faults injected and survived and exits non-zero if any invariant failed. Needs root and iproute2.
 *
 *   npm run soak -- --minutes 3 --seed 7
 */
import { execFileSync } from 'node:child_process';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync, openSync, writeSync, closeSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import { Command, Option } from 'commander';
import { WIRE_PRECISIONS, type WirePrecision } from '../shared/numerics/wire-format.js';
import { die, intArg, isMain } from '../cli/args.js';
import { Rng } from '../shared/compute/rng.js';
import { encodeIdx, loadEmbedded } from '../shared/data/mnist.js';
import { Lan, type Spawned } from './lan.js';
import { Invariants } from './soak-checks.js';

const PORT = 8765;
const TOKEN = 'soak-token-0123456789abcdef';
const SAMPLES = 400;
const here = (f: string) => fileURLToPath(new URL(f, import.meta.url));
const COORDINATOR = here('../cli/coordinator.js');
const WORKER = here('../cli/worker.js');
const ROGUE = here('./soak-rogue.js');
const STRANGERS = fileURLToPath(new URL('../../scripts/strangers.mjs', import.meta.url));
/** The coordinator's V8 heap cap (MiB): with it, its resident set stays near 160 MiB, floods included. */
const COORDINATOR_HEAP_MIB = 128;
const TINY = ['--g-hidden', '32,64', '--d-hidden', '64,32', '--noise-dim', '16'];

const FAULTS = [
  'worker killed and restarted',
  'worker frozen (SIGSTOP) and thawed',
  'coordinator killed and resumed',
  'link down and up',
  'relay killed mid-chain',
  'bad frames from an authenticated worker',
  'strangers flood before the handshake',
  'disk filled and freed',
] as const;
type Fault = (typeof FAULTS)[number];

export interface SoakOptions {
  minutes: number;
  workers: number;
  seed: number;
  /** The coordinator's --wire. */
  wire: WirePrecision;
}

const sleep = (ms: number) => new Promise<void>((r) => setTimeout(r, ms));

class Soak {
  readonly lan = new Lan('gsk-', '10.78.0');
  readonly rng: Rng;
  readonly mnt: string;
  readonly run: string;
  readonly data: string;
  readonly inv: Invariants;
  coord: Spawned | null = null;
  readonly workers: (Spawned | null)[] = [];
  /** Worker slots a fault holds down; every other worker that exits is started again, as a scheduler would. */
  private readonly held = new Set<number>();
  /** A flood is on, or ended less than its tarpit time ago: descriptor samples would show it. */
  floodUntil = 0;
  readonly tally = new Map<Fault, { injected: number; survived: number }>();
  private readonly began = Date.now();
  private ending = false;

  constructor(readonly o: SoakOptions) {
    this.rng = new Rng(o.seed, 0x50a6);
    const root = mkdtempSync(join(tmpdir(), 'gan-ddp-soak-'));
    this.mnt = join(root, 'disk');
    this.run = join(this.mnt, 'run');
    this.data = join(root, 'data');
    this.inv = new Invariants(this.run, SAMPLES);
    for (const f of FAULTS) this.tally.set(f, { injected: 0, survived: 0 });
  }

  /** The spare worker's host, where the rogue and the strangers come from too. */
  get spare(): number {
    return this.o.workers + 1;
  }

  async setUp(): Promise<void> {
    this.lan.removeNamespaces();
    await this.lan.buildNet(this.spare);
    mkdirSync(this.mnt, { recursive: true });
    // A small disk of its own, so that it can be filled.
    execFileSync('mount', ['-t', 'tmpfs', '-o', 'size=48m', 'tmpfs', this.mnt]);
    mkdirSync(this.data, { recursive: true });
    const d = loadEmbedded().train;
    const idx = encodeIdx({ n: SAMPLES, images: d.images, labels: d.labels });
    for (const [name, bytes] of [['train-images-idx3-ubyte', idx.images], ['train-labels-idx1-ubyte', idx.labels], ['t10k-images-idx3-ubyte', idx.images], ['t10k-labels-idx1-ubyte', idx.labels]] as const) {
      writeFileSync(join(this.data, name), bytes);
    }
    process.env.GAN_DDP_TOKEN = TOKEN;
  }

  startCoordinator(resume: boolean): void {
    const args = [
      // V8 collects lazily where memory is plentiful: uncapped, the resident set of this small
      // coordinator wanders by hundreds of MiB of garbage between collections, which would read as
      // growth. With its heap capped, garbage is collected, resident growth is a real leak, and a
      // leak of the heap ends in an out-of-memory crash, which stops the run moving on.
      process.execPath, `--max-old-space-size=${COORDINATOR_HEAP_MIB}`, COORDINATOR,
      // Hosts in namespaces share this machine's memory; as separate machines they use frames (and relay).
      '--shm', 'off', '--host', this.lan.coordIp, '--port', String(PORT), '--workers', String(this.spare), '--min-workers', '1',
      '--backend', 'wasm', ...TINY, '--batch-size', '10', '--epochs', '100000', '--checkpoint-every', '10', '--round-timeout', '5', '--heartbeat', '1',
      '--data', this.data, '--wire', this.o.wire,
      ...(resume ? ['--resume', this.run] : ['--out', this.run]),
    ];
    this.coord = this.lan.spawnIn(this.lan.coord, args);
  }

  startWorker(i: number): void {
    this.held.delete(i);
    const w = this.lan.spawnIn(this.lan.workerNs(i), [
      process.execPath, WORKER, '--connect', `ws://${this.lan.coordIp}:${PORT}`, '--backend', 'wasm', '--threads', '1', '--connect-timeout', '86400', '--quiet',
    ]);
    this.workers[i] = w;
    // A worker ends when its run does (a coordinator that stopped on a full disk tells it so).
    void w.exit.then(() => {
      if (this.workers[i] === w) this.workers[i] = null;
    });
  }

  async stopWorker(i: number): Promise<void> {
    this.held.add(i);
    const w = this.workers[i];
    if (!w) return;
    w.proc.kill('SIGKILL');
    await w.exit;
    this.workers[i] = null;
  }

  async stopCoordinator(sig: NodeJS.Signals): Promise<number | null> {
    const c = this.coord;
    if (!c) return null;
    c.proc.kill(sig);
    const code = await c.exit;
    this.coord = null;
    return code;
  }

  /** Rounds logged so far; resolves when `more` more have been logged, or false after `ms`. */
  async progress(more: number, ms: number): Promise<boolean> {
    const start = this.inv.rounds();
    const end = Date.now() + ms;
    while (Date.now() < end) {
      await this.watch(500);
      // A resumed run re-logs from its checkpoint: progress is measured past where it was.
      if (this.inv.rounds() >= start + more) return true;
    }
    return false;
  }

  /** Check the invariants and sample the coordinator for `ms`. */
  async watch(ms: number): Promise<void> {
    const end = Date.now() + ms;
    while (Date.now() < end) {
      for (let i = 1; i <= this.spare; i++) if (!this.workers[i] && !this.held.has(i) && !this.ending) this.startWorker(i);
      this.inv.check();
      const pid = this.coord?.proc.pid;
      if (pid && Date.now() > this.floodUntil) this.inv.sample(pid, Date.now());
      await sleep(Math.min(500, Math.max(0, end - Date.now())));
    }
  }

  private pick(from: number, to: number): number {
    return from + Math.floor(this.rng.uniform() * (to - from + 1));
  }

  /** Inject fault `f` (its `n`-th time) and undo it; healing is judged by the caller. */
  async inject(f: Fault, n: number): Promise<void> {
    const W = this.o.workers;
    const i = this.pick(1, W);
    switch (f) {
      case 'worker killed and restarted':
        await this.stopWorker(i);
        await this.watch(this.pick(500, 3000));
        this.startWorker(i);
        break;
      case 'worker frozen (SIGSTOP) and thawed':
        this.workers[i]?.proc.kill('SIGSTOP');
        await this.watch(this.pick(2000, 8000));
        this.workers[i]?.proc.kill('SIGCONT');
        break;
      case 'coordinator killed and resumed':
        await this.stopCoordinator('SIGKILL');
        await this.watch(1000);
        this.startCoordinator(true);
        break;
      case 'link down and up':
        this.lan.setLink(this.lan.workerNs(i), false);
        await this.watch(this.pick(2000, 6000));
        this.lan.setLink(this.lan.workerNs(i), true);
        break;
      case 'relay killed mid-chain': {
        // A worker inside the chain (neither end of the id order), at some moment of a phase.
        const mid = this.pick(2, Math.max(2, W - 1));
        await this.watch(this.pick(0, 300));
        await this.stopWorker(mid);
        await this.watch(1000);
        this.startWorker(mid);
        break;
      }
      case 'bad frames from an authenticated worker': {
        await this.stopWorker(this.spare);
        const lie = (['shape', 'nan', 'bounds'] as const)[n % 3]!;
        const r = this.lan.spawnIn(this.lan.workerNs(this.spare), [process.execPath, ROGUE, `ws://${this.lan.coordIp}:${PORT}`, lie]);
        const closed = await Promise.race([r.exit.then(() => true), sleep(45_000).then(() => false)]);
        if (!closed) r.proc.kill('SIGKILL');
        // Half floats have no finite value beyond the bounds: the rogue's 1e30 arrives as Inf.
        const want = { shape: '4004', nan: '4005', bounds: this.o.wire === '16' ? '4005' : '4011' }[lie];
        if (!closed || !r.output().includes(`rogue closed: ${want}`)) this.inv.fail(`a rogue sending ${lie} was not refused with ${want}: ${r.output().trim() || 'no output'}`);
        this.startWorker(this.spare);
        break;
      }
      case 'strangers flood before the handshake': {
        const mode = n % 2 === 0 ? 'idle' : 'big';
        this.floodUntil = Number.POSITIVE_INFINITY;
        const s = this.lan.spawnIn(this.lan.workerNs(this.spare), ['bash', '-c', 'ulimit -n 8192 && exec "$0" "$@"', process.execPath, STRANGERS, mode, `${this.lan.coordIp}:${PORT}`, '400', '1', '200000']);
        await this.watch(8000);
        s.proc.kill('SIGKILL');
        await s.exit;
        // Held connections are let go within the tarpit time.
        this.floodUntil = Date.now() + 12_000;
        break;
      }
      case 'disk filled and freed': {
        const filler = join(this.mnt, 'filler');
        fill(filler);
        const c = this.coord;
        const code = c ? await Promise.race([c.exit, sleep(30_000).then(() => 'running' as const)]) : null;
        if (code === 'running') this.inv.fail('the coordinator kept running on a full disk for 30 s');
        else if (c && !/E_DISK/.test(c.output())) this.inv.fail(`the coordinator stopped on a full disk without E_DISK: ${c.output().slice(-300)}`);
        if (code === 'running') await this.stopCoordinator('SIGKILL');
        this.coord = null;
        rmSync(filler, { force: true });
        this.startCoordinator(true);
        break;
      }
    }
  }

  async main(): Promise<boolean> {
    await this.setUp();
    this.startCoordinator(false);
    for (let i = 1; i <= this.spare; i++) this.startWorker(i);
    if (!(await this.progress(20, 120_000))) throw new Error(`the run never started:\n${this.coord?.output() ?? ''}`);
    const end = Date.now() + this.o.minutes * 60_000;
    let order: Fault[] = [];
    for (let n = 0; Date.now() < end; n++) {
      if (order.length === 0) order = shuffled([...FAULTS], this.rng);
      const f = order.shift()!;
      const t = this.tally.get(f)!;
      t.injected++;
      await this.inject(f, t.injected - 1);
      // Healed: the run moves on (a resumed coordinator first re-runs the rounds after its checkpoint).
      this.say(`${f} (round ${this.inv.rounds()})`);
      if (await this.progress(10, 90_000)) t.survived++;
      else this.inv.fail(`no progress within 90 s after: ${f}; the coordinator said:\n${this.coord?.output().slice(-1500) ?? '(not running)'}`);
      await this.watch(this.pick(1000, 4000));
    }
    // The end: a clean stop (checkpoint), the workers told.
    this.ending = true;
    const code = await this.stopCoordinator('SIGTERM');
    if (code !== 0) this.inv.fail(`the coordinator stopped with exit code ${code}`);
    this.inv.check();
    return this.report();
  }

  /** A line of what the soak is doing, with the time since it began. */
  say(line: string): void {
    process.stdout.write(`[${((Date.now() - this.began) / 1000).toFixed(0).padStart(5)} s] ${line}\n`);
  }

  report(): boolean {
    const lines = ['| fault | injected | survived |', '|---|---:|---:|'];
    for (const [f, t] of this.tally) lines.push(`| ${f} | ${t.injected} | ${t.survived} |`);
    const r = this.inv.resources();
    lines.push('', `rounds logged: ${this.inv.rounds()}; epochs, every one with each of its ${SAMPLES} samples used exactly once: ${this.inv.epochsChecked}; checkpoints loaded and finite: ${this.inv.checkpointsLoaded}`);
    lines.push(`coordinator (${r.processes} process${r.processes === 1 ? '' : 'es'} long enough to judge): at most ${r.rssMiB.toFixed(0)} MiB resident and ${r.fds} descriptors; growth after its first 30 s: ${r.rssGrowthMiB.toFixed(1)} MiB, ${r.fdGrowth} descriptors`);
    if (r.rssGrowthMiB > 64) this.inv.fail(`the coordinator's memory grew by ${r.rssGrowthMiB.toFixed(0)} MiB`);
    if (r.fdGrowth > 32) this.inv.fail(`the coordinator's descriptors grew by ${r.fdGrowth}`);
    const unsurvived = [...this.tally].filter(([, t]) => t.survived < t.injected);
    for (const f of this.inv.failures) lines.push(`FAILED: ${f}`);
    lines.push(this.inv.failures.length === 0 && unsurvived.length === 0 ? 'soak passed' : 'soak FAILED');
    process.stdout.write(lines.join('\n') + '\n');
    return this.inv.failures.length === 0 && unsurvived.length === 0;
  }

  cleanUp(): void {
    for (const p of [this.coord, ...this.workers]) p?.proc.kill('SIGKILL');
    this.lan.cleanup();
    try {
      execFileSync('umount', ['-l', this.mnt], { stdio: 'ignore' });
    } catch {
      // Not mounted (setup failed before).
    }
  }
}

/** Fill the disk holding `file` until it refuses more. */
function fill(file: string): void {
  const fd = openSync(file, 'w');
  const mib = Buffer.alloc(1 << 20, 1);
  try {
    for (;;) writeSync(fd, mib);
  } catch {
    // Full.
  } finally {
    closeSync(fd);
  }
}

function shuffled<T>(xs: T[], rng: Rng): T[] {
  for (let i = xs.length - 1; i > 0; i--) {
    const j = Math.floor(rng.uniform() * (i + 1));
    [xs[i], xs[j]] = [xs[j]!, xs[i]!];
  }
  return xs;
}

export async function soak(o: SoakOptions): Promise<boolean> {
  if (process.getuid?.() !== 0) throw new Error('the soak builds network namespaces and mounts a tmpfs: run it as root');
  const s = new Soak(o);
  const stop = () => {
    s.cleanUp();
    process.exit(130);
  };
  process.once('SIGINT', stop);
  process.once('SIGTERM', stop);
  try {
    return await s.main();
  } finally {
    s.cleanUp();
  }
}

export function main(argv: string[]): void {
  const cmd = new Command('soak')
    .description('Train the tiny model across network namespaces while faults are injected; check the invariants of the failure model.')
    .option('--minutes <n>', 'how long to inject faults', intArg(1, 24 * 60), 20)
    .option('--workers <n>', 'workers (one more, the spare, shares its host with the rogue and the strangers)', intArg(3, 8), 4)
    .option('--seed <n>', 'seed of the fault schedule', intArg(0), 1)
    .addOption(new Option('--wire <precision>', "the coordinator's --wire").choices(WIRE_PRECISIONS as string[]).default('fp32'));
  cmd.parse(argv);
  soak(cmd.opts<SoakOptions>()).then((ok) => process.exit(ok ? 0 : 1), (e) => die('soak', e));
}

if (isMain(import.meta.url)) main(process.argv);

