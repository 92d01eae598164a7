#!/usr/bin/env node
/**
 * `coordinator`: listens for workers (or spawns them), trains, and writes the run directory.
 * Flags are parsed into options, run() does the work, errors become one line and a non-zero exit.
 */
import { readFileSync } from 'node:fs';
import { availableParallelism } from 'node:os';
import { join } from 'node:path';
import { Command, Option } from 'commander';
import { BACKEND_NAMES, type BackendName, initBackend } from '../shared/backend/choose.js';
import { EXIT_RESUMABLE, die, floatArg, intArg, isMain, listArg } from './args.js';
import { Coordinator, type Topology } from '../coordinator/coordinator.js';
import { TOPOLOGIES } from '../coordinator/topology.js';
import { MAX_SYNC_EVERY, RECIPES, type Recipe, type TrainConfig, defaultTrainConfig, kindDefaults, kindModel, recipeDefaults } from '../coordinator/config.js';
import { Progress } from './progress.js';
import { roundPlan } from '../coordinator/sharding.js';
import { type Arrangement, LocalWorkers, arrange, canPin, threadRegionsFor } from '../coordinator/spawn.js';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import { RemoteJudge } from '../eval/remote-judge.js';
import { MODEL_KINDS, MODEL_LIMITS, type ModelKind, modelConfigProblem } from '../shared/compute/model.js';
import { GanError } from '../shared/wire/errors.js';
import { WIRE_PRECISIONS, type WirePrecision } from '../shared/numerics/wire-format.js';

const d = defaultTrainConfig;
const m = d.model;

export interface CliOptions {
  workers: number; minWorkers: number; spawn: boolean; host: string; port: number; out?: string; resume?: string;
  data?: string; model: ModelKind; recipe: Recipe; epochs?: number; maxRounds: number; batchSize?: number;
  lr?: number; lrD?: number; lrG?: number; beta1: number; beta2: number; eps: number;
  gHidden: number[]; dHidden: number[]; noiseDim: number; dropout?: number; r1?: number; leak: number; seed: number;
  checkpointEvery: number; roundTimeout: number; wire: WirePrecision; fp16: boolean; token?: string; insecure: boolean;
  tlsCert?: string; tlsKey?: string; topology: Topology; shm: 'auto' | 'off'; backend: BackendName; threads?: number; evalEvery: number; heartbeat: number; ema?: number;
  syncEvery: number; outerLr: number; outerMomentum: number;
}

export function program(): Command {
  return new Command('coordinator')
    .description('Train a GAN data-parallel: workers compute gradients, this process averages them, steps Adam and broadcasts weights.')
    .option('--workers <n>', 'workers to train with: the run starts when this many have joined, and accepts no more', intArg(1, 1024), 4)
    .option('--min-workers <n>', 'keep training while at least this many workers are live', intArg(1, 1024), 1)
    .option('--spawn', 'start the --workers workers as child processes on this host', false)
    .option('--host <addr>', 'address to listen on (use 0.0.0.0 for workers on other machines; needs --token or --insecure)', '127.0.0.1')
    .option('--port <n>', 'port to listen on (0 picks a free one)', intArg(0, 65535), 8765)
    .option('--out <dir>', 'run directory (default runs/<date-time>)')
    .option('--resume <run_dir>', 'continue the run in RUN_DIR from its checkpoint')
    .option('--data <dir>', 'MNIST IDX files (train-images-idx3-ubyte[.gz] etc.); default: the embedded 10,000 digits')
    .addOption(new Option('--model <kind>', 'gan (Goodfellow et al.), cgan (conditional, Mirza & Osindero; D sees the label through a projection, Miyato & Koyama, and is matching-aware, Reed et al.) or acgan (conditional, D also classifies: Odena et al.)').choices([...MODEL_KINDS]).default(m.kind))
    .addOption(new Option('--recipe <name>', 'defaults for what no flag sets: tuned (per model kind, below) or seed (the seed\'s settings: batch 100, both rates 2e-4, 30 epochs, dropout 0.3, no moving average)').choices([...RECIPES]).default('tuned'))
    .option('--epochs <n>', `passes over the training data (default per model: ${perKind('epochs')})`, intArg(0))
    .option('--max-rounds <n>', 'stop after this many rounds (0: no limit)', intArg(0), 0)
    .option('--batch-size <n>', `samples per worker per round, global batch = this x workers (default per model: ${perKind('batchSize')})`, intArg(1, 100000))
    .option('--lr <x>', 'learning rate of both nets', floatArg(0, 10, { exclusiveMin: true }))
    .option('--lr-d <x>', `discriminator learning rate (default per model: ${perKind('lrD')})`, floatArg(0, 10, { exclusiveMin: true }))
    .option('--lr-g <x>', `generator learning rate (default per model: ${perKind('lrG')})`, floatArg(0, 10, { exclusiveMin: true }))
    .option('--beta1 <x>', 'Adam beta1 (0.5 as in DCGAN: 0.9 makes GAN training oscillate)', floatArg(0, 0.999999), d.beta1)
    .option('--beta2 <x>', 'Adam beta2', floatArg(0, 0.999999), d.beta2)
    .option('--eps <x>', 'Adam epsilon', floatArg(0, 1, { exclusiveMin: true }), d.epsilon)
    .option('--g-hidden <widths>', 'generator hidden layer widths', listArg, m.gHidden)
    .option('--d-hidden <widths>', 'discriminator hidden layer widths', listArg, m.dHidden)
    .option('--noise-dim <n>', 'size of the noise vector z', intArg(1, 4096), m.noiseDim)
    .option('--dropout <p>', `dropout rate after each hidden layer of D, 0 turns it off (default per model: ${perKind('dropout')})`, floatArg(0, 0.95))
    .option('--r1 <gamma>', `weight of D's R1 penalty on real digits (Mescheder et al. 2018), 0 turns it off (default per model: ${perKind('r1')})`, floatArg(0, MODEL_LIMITS.maxR1))
    .option('--leak <x>', 'LeakyReLU negative slope', floatArg(0, 1), m.leak)
    .option('--seed <n>', 'seed for data order, noise, dropout and initial weights', intArg(0, 2 ** 32 - 1), d.seed)
    .option('--checkpoint-every <n>', 'checkpoint every N rounds (0: only at the end and on SIGINT/SIGTERM)', intArg(0), d.checkpointEvery)
    .option('--round-timeout <s>', 'drop a worker that has not answered a phase within this many seconds', floatArg(0.1, 86400), d.roundTimeoutMs / 1000)
    .option('--heartbeat <s>', 'ping workers this often; three missed pongs drop a worker', floatArg(0.1, 3600), 10)
    .addOption(new Option('--wire <precision>', 'precision of gradients, partial sums and weights in frames: fp32 (exact; the default, as on one host shared memory moves no bytes), 16 (IEEE half), 8 (blockwise 8-bit with error feedback; the fastest between machines in bench:hosts). Master weights and moments stay fp32').choices(WIRE_PRECISIONS as string[]).default(d.wire))
    .option('--fp16', 'the same as --wire 16', false)
    .option('--token <secret>', 'shared secret workers must prove (HMAC over a nonce; never sent); env GAN_DDP_TOKEN')
    .option('--insecure', 'allow listening beyond loopback without a token', false)
    .option('--tls-cert <file>', 'serve wss:// with this certificate (PEM)')
    .option('--tls-key <file>', 'private key (PEM) for --tls-cert')
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend for spawned workers and for sampling').choices(BACKEND_NAMES as string[]).default('auto'))
    .option('--threads <n>', 'compute threads per spawned worker (default: cores / workers, at least 1)', intArg(1, 256))
    .option('--ema <decay>', `keep a moving average of G's weights with this decay for sample grids, evaluation and generate, 0: off (default per model: ${perKind('emaDecay')})`, floatArg(0, 0.999999))
    .addOption(new Option('--shm <when>', 'workers on this host exchange weights and gradients through shared memory once they prove they map it: auto, or off (frames for everyone)').choices(['auto', 'off']).default('auto'))
    .addOption(new Option('--topology <kind>', 'how gradients and weights travel among workers on other hosts: auto (sharded from 2 of them, else star), star (every worker to the coordinator), chain (partial sums worker to worker), sharded (each worker sums a share of the chunks)').choices([...TOPOLOGIES]).default('auto'))
    .option('--sync-every <h>', `low-communication training for slow links: each worker takes H local steps of D and G with its own Adam between syncs, and the coordinator steps the average of their changes with the outer optimiser; a round is then a sync (1: synchronous, every step averaged; up to ${MAX_SYNC_EVERY})`, intArg(1, MAX_SYNC_EVERY), d.syncEvery)
    .option('--outer-lr <x>', 'with --sync-every above 1: the outer optimiser\'s learning rate (1 with --outer-momentum 0 is plain averaging of the workers\' weights)', floatArg(0, 10, { exclusiveMin: true }), d.outerLr)
    .option('--outer-momentum <x>', 'with --sync-every above 1: the outer optimiser\'s Nesterov momentum (DiLoCo: 0.9 with --outer-lr 0.7)', floatArg(0, 0.999), d.outerMomentum)
    .option('--eval-every <k>', 'score the generator every K epochs and after the last into eval.jsonl (FD, classifier score, coverage; 0: never)', intArg(0), d.evalEvery);
}

/** A kind default as help text: `gan X, cgan Y, acgan Z`, or one value when all agree. */
function perKind(key: keyof typeof kindDefaults.gan): string {
  const v = MODEL_KINDS.map((k) => kindDefaults[k][key]);
  return v.every((x) => x === v[0]) ? String(v[0]) : MODEL_KINDS.map((k, i) => `${k} ${v[i]}`).join(', ');
}

/** The run's configuration: each flag given, else the recipe's default for the model kind. */
export function trainConfig(o: CliOptions): TrainConfig {
  if (o.fp16 && o.wire !== '16' && o.wire !== defaultTrainConfig.wire) throw new GanError('E_ARGS', `--fp16 is --wire 16; it contradicts --wire ${o.wire}`);
  const k = recipeDefaults(o.recipe ?? 'tuned', o.model);
  return {
    model: kindModel(o.model, { dropout: o.dropout ?? k.dropout, r1: o.r1 ?? k.r1 }, { ...m, gHidden: o.gHidden, dHidden: o.dHidden, noiseDim: o.noiseDim, leak: o.leak }),
    seed: o.seed,
    workers: o.workers,
    minWorkers: o.minWorkers,
    batchSize: o.batchSize ?? k.batchSize,
    epochs: o.epochs ?? k.epochs,
    maxRounds: o.maxRounds,
    lrD: o.lrD ?? o.lr ?? k.lrD,
    lrG: o.lrG ?? o.lr ?? k.lrG,
    beta1: o.beta1,
    beta2: o.beta2,
    epsilon: o.eps,
    data: o.data ?? null,
    checkpointEvery: o.checkpointEvery,
    roundTimeoutMs: Math.round(o.roundTimeout * 1000),
    wire: o.fp16 ? '16' : o.wire,
    evalEvery: o.evalEvery,
    emaDecay: o.ema ?? k.emaDecay,
    syncEvery: o.syncEvery ?? d.syncEvery,
    outerLr: o.outerLr ?? d.outerLr,
    outerMomentum: o.outerMomentum ?? d.outerMomentum,
  };
}

function readPem(file: string, what: string): Buffer {
  try {
    return readFileSync(file);
  } catch (e) {
    throw new GanError('E_TLS', `${what} ${file}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
}

/** How a run started by `launch` differs: a scheduler's signals mean "checkpoint, resume later". */
export interface RunContext {
  /** Signals that preempt the run: it checkpoints, tells its workers it resumes, exits EXIT_RESUMABLE. */
  preemptSignals?: NodeJS.Signals[];
  /** Called with the signal once a preempted run has checkpointed and closed (SLURM: requeue the job). */
  onPreempted?: (signal: NodeJS.Signals, log: (line: string) => void) => void;
}

export async function run(o: CliOptions, explicit: Set<string>, ctx: RunContext = {}): Promise<number> {
  if (o.minWorkers > o.workers) throw new GanError('E_ARGS', `--min-workers ${o.minWorkers} is above --workers ${o.workers}`);
  if (!!o.tlsCert !== !!o.tlsKey) throw new GanError('E_ARGS', '--tls-cert and --tls-key go together');
  const token = o.token ?? process.env.GAN_DDP_TOKEN;
  let config = trainConfig(o);
  const problem = modelConfigProblem(config.model);
  if (problem) throw new GanError('E_ARGS', `model: ${problem}`);
  let out = o.out ?? join('runs', new Date().toISOString().replace(/[:.]/g, '-').slice(0, 19));
  if (o.resume) {
    // The checkpoint's config governs; flags given explicitly may change only what is safe to change
    // (the wire too: fp32 and 16-bit resume exactly, 8-bit starts its error feedback again).
    const saved = loadCheckpoint(o.resume).config;
    const flagOf: Record<string, keyof TrainConfig> = { epochs: 'epochs', maxRounds: 'maxRounds', checkpointEvery: 'checkpointEvery', roundTimeout: 'roundTimeoutMs', minWorkers: 'minWorkers', evalEvery: 'evalEvery', workers: 'workers', ema: 'emaDecay', wire: 'wire', fp16: 'wire' };
    const next = { ...saved };
    for (const [flag, key] of Object.entries(flagOf)) if (explicit.has(flag)) (next as Record<string, unknown>)[key] = config[key];
    config = next;
    out = o.resume;
  }
  const backend = await initBackend(o.backend, { threads: 1 });
  let bar = new Progress(0);
  const log = (s: string) => bar.line(s);
  log(`backend: ${backend.name} (${backend.detail})`);
  // Without the addon, processes on one host cannot share memory: spawned wasm workers are threads.
  const threadRegions = o.spawn ? threadRegionsFor(o.shm !== 'off', backend.name) : undefined;
  const coord = new Coordinator({
    config, host: o.host, port: o.port, out, resume: !!o.resume, token, insecure: o.insecure, threadRegions,
    tls: o.tlsCert && o.tlsKey ? { cert: readPem(o.tlsCert, 'certificate'), key: readPem(o.tlsKey, 'key') } : undefined,
    heartbeatMs: o.heartbeat * 1000,
    topology: o.topology,
    sameHost: o.shm,
    log,
    hooks: {
      round: (mx) => bar.round(mx, config.epochs),
      epoch: config.evalEvery > 0 ? (epoch, c) => evalEpoch(epoch, c) : undefined,
    },
  });
  // The judge is a process of its own, started now so that its classifier is ready (shipped,
  // cached, or trained meanwhile) by the first evaluation; the round loop never waits for it.
  const judge = config.evalEvery > 0 ? new RemoteJudge({ data: config.data, backend: o.backend, log }) : null;
  const evaluations: Promise<void>[] = [];
  const evalEpoch = (epoch: number, c: Coordinator) => {
    if (!judge || !evalDue(epoch, config.evalEvery, config.epochs)) return;
    const round = c.round;
    const weights = c.model.emaG ? 'average' : 'latest';
    // Whatever fails here (the judge, or writing eval.jsonl) costs this evaluation, never the run.
    evaluations.push(judge.evaluate(config.model, c.sampleWeights(), 1000, config.seed).then((r) => {
      c.recordEval({ epoch, round, weights, ...r });
      log(`epoch ${epoch} eval: FD ${r.fd.toFixed(2)} (floor ${r.fdFloor?.toFixed(2)}), classifier score ${r.classifierScore.toFixed(2)}, digits ${r.coverage}/10, KL ${r.klUniform.toFixed(3)}` +
        (r.conditionalAccuracy !== undefined ? `, conditional accuracy ${(r.conditionalAccuracy * 100).toFixed(1)}%` : ''));
    }).catch((e: Error) => log(`epoch ${epoch} eval: not scored (${e.message})`)));
  };
  const port = await coord.start();
  const { perEpoch, total: totalRounds } = roundPlan(coord.data.n, config);
  bar = new Progress(totalRounds);
  const scheme = o.tlsCert ? 'wss' : 'ws';
  log(`listening on ${scheme}://${o.host}:${port}; run directory ${out}`);
  const web = `${o.tlsCert ? 'https' : 'http'}://${o.host === '0.0.0.0' ? '127.0.0.1' : o.host}:${port}/`;
  log(`dashboard: ${web}${token ? '#token=<the token>' : ''}`);
  log(`global batch ${config.workers * config.batchSize} (${config.workers} workers x ${config.batchSize}); ${perEpoch} rounds per epoch, ${totalRounds} rounds planned`);

  let local: LocalWorkers | null = null;
  if (o.spawn) {
    // A thread cannot be pinned to a core as a process is (taskset).
    const plan = arrange(config.workers, availableParallelism(), o.threads, canPin() && threadRegions === undefined);
    log(spawnNotice(config.workers, plan, backend.name, threadRegions !== undefined));
    local = new LocalWorkers({ url: `${scheme}://127.0.0.1:${port}`, count: config.workers, backend: o.backend, threads: plan.threads, pin: plan.pin, token, inThreads: threadRegions, log });
    local.start();
  }
  const preempt = new Set(ctx.preemptSignals ?? []);
  let preempted: NodeJS.Signals | null = null;
  const onSignal = (sig: NodeJS.Signals) => {
    if (preempt.has(sig)) {
      preempted ??= sig;
      log(`${sig}: preempted; stopping at the end of this round, checkpointing, and telling the workers the run resumes`);
    } else {
      log(`${sig}: stopping at the end of this round and checkpointing`);
    }
    coord.requestStop(sig);
  };
  // A second Ctrl-C kills at once, as usual; a preemption signal may come twice (to the task and
  // forwarded by the job's shell) and must never kill before the checkpoint.
  for (const sig of new Set<NodeJS.Signals>(['SIGINT', 'SIGTERM', ...preempt])) process[preempt.has(sig) ? 'on' : 'once'](sig, () => onSignal(sig));
  let failed: unknown = null;
  try {
    await coord.train();
    // A preemption signal that came after the last round stops nothing: the run is done.
    if (coord.complete) preempted = null;
    // The last evaluations belong to a finished run: recorded before it closes. A preempted run
    // has a deadline to meet, so its pending evaluations are dropped (they run again on resume).
    if (!preempted) {
      if (judge?.pending) log(`waiting for ${judge.pending} evaluation(s)`);
      await Promise.all(evaluations);
    }
  } catch (e) {
    failed = e;
  } finally {
    await judge?.close();
    await Promise.all(evaluations);
    const reason = failed ? 'coordinator failed' : preempted ? `preempted by ${preempted} at round ${coord.round}` : 'run finished';
    await coord.close(reason, failed ? (failed as Error) : undefined, { resumes: !!preempted });
    await local?.stop();
  }
  const summary = coord.summary();
  if (failed) throw failed;
  if (preempted) {
    log(`preempted: checkpoint at round ${coord.round} in ${summary.checkpoint as string}; the run resumes from it (--resume ${out})`);
    ctx.onPreempted?.(preempted, log);
    return EXIT_RESUMABLE;
  }
  log(`done: ${coord.round} rounds, ${coord.epoch} epochs in ${(summary.seconds as number).toFixed(0)} s`);
  log(`metrics: ${coord.runDir.file('metrics.jsonl')}`);
  if (summary.final_grid) log(`samples: ${summary.final_grid as string}`);
  log(`checkpoint: ${summary.checkpoint as string}`);
  return 0;
}

/** Whether `--eval-every K` scores the generator after this epoch: every K-th, and the last. */
export function evalDue(epoch: number, every: number, epochs: number): boolean {
  return every > 0 && (epoch % every === 0 || epoch === epochs);
}

/**
 * One line on how spawned workers use this host: without the native backend each worker computes
 * on one thread (wasm), so the machine is used in full only with a worker per core.
 */
export function spawnNotice(workers: number, plan: Arrangement, backend: string, inThreads = false): string {
  const cores = availableParallelism();
  const pinned = plan.pin ? `, each pinned to one core (${Math.ceil(workers / cores)} per core)` : '';
  if (backend === 'native' || backend === 'tensorflow') return `spawning ${workers} workers x ${plan.threads} thread(s) on ${cores} cores, ${backend} backend${pinned}`;
  const use = Math.min(workers, cores);
  const how = inThreads ? ' as threads of this process, sharing its memory (SharedArrayBuffers: without the addon processes cannot map it),' : '';
  return `spawning ${workers} workers${how} on ${cores} cores with the ${backend} backend, one thread each (${use} of ${cores} cores busy${pinned})` +
    '; for the faster native backend run `npm run build:native` (needs only a C compiler)';
}

export function main(argv: string[]): void {
  const cmd = program();
  cmd.parse(argv);
  const opts = cmd.opts<CliOptions>();
  const explicit = new Set(Object.keys(opts).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
  run(opts, explicit).then((code) => process.exit(code), (e) => die('coordinator', e));
}

if (isMain(import.meta.url)) main(process.argv);
