#!/usr/bin/env node
/**
 * `launch [coordinator flags]`: the one command every task of a cluster job runs (srun, a
 * Kubernetes Indexed Job, a JobSet, a Kubeflow PyTorchJob, torchrun-style variables). The
 * environment says which task this is (cluster-env.ts): rank 0 runs the coordinator with its
 * dashboard, listening on all interfaces; every other rank a worker pointed at it. Workers wait for
 * the coordinator with their usual backoff, so the order tasks start in does not matter.
 *
 * Restarts are resumes: when the run directory (--out; under SLURM runs/job-<SLURM_JOB_ID> by
 * default) already holds a checkpoint, the coordinator continues from it. Preemption: SIGUSR1 (SLURM's
 * `--signal=USR1@90`) and SIGTERM (a pod's eviction) make the coordinator stop at the end of the
 * round, checkpoint, tell its workers the run resumes, and exit 75; under SLURM it then requeues
 * its own job (`scontrol requeue`), which starts again and resumes by itself.
 */
import { execFileSync } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { type CliOptions, program as coordinatorProgram, run as runCoordinator } from './coordinator.js';
import { run as runWorker } from './worker.js';
import { die, isMain } from './args.js';
import { type Env, type LaunchPlan, launchPlan, launchToken } from './cluster-env.js';
import { CHECKPOINT_FILE } from '../coordinator/checkpoint.js';
import { GanError } from '../shared/wire/errors.js';

/** How long a worker waits for its coordinator (it may start later, or be restarting), unless GAN_DDP_CONNECT_TIMEOUT says otherwise. */
export const LAUNCH_CONNECT_TIMEOUT_S = 600;

/** Flags `launch` decides itself, and why a user may not give them. */
const NOT_UNDER_LAUNCH: Record<string, string> = {
  token: 'the token comes from GAN_DDP_TOKEN_FILE or GAN_DDP_TOKEN, never the command line (any user of the machine can read a command line)',
  spawn: 'every task of the job is a process of its own; --spawn is for one machine',
  resume: 'a restarted job resumes from --out by itself',
};

export function program() {
  return coordinatorProgram()
    .name('launch')
    .description('Run one task of a cluster job: rank 0 the coordinator, every other rank a worker, read from the environment (GAN_DDP_*, torchrun/Kubeflow RANK and WORLD_SIZE, SLURM, a Kubernetes Indexed Job). Takes the coordinator\'s flags; --workers defaults to the world size less one.')
    .addHelpText('after', `
Environment (first source that has a value wins):
  GAN_DDP_ROLE, GAN_DDP_RANK, GAN_DDP_WORLD_SIZE, GAN_DDP_COORDINATOR (host[:port]), GAN_DDP_PORT, GAN_DDP_SERVICE
  RANK, WORLD_SIZE, MASTER_ADDR, MASTER_PORT            (torchrun, Kubeflow PyTorchJob)
  PET_NODE_RANK, PET_NNODES, PET_MASTER_ADDR, PET_MASTER_PORT
  SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, SLURM_JOB_NODELIST, SLURM_JOB_ID, SLURM_CPUS_PER_TASK
  JOB_COMPLETION_INDEX with GAN_DDP_SERVICE            (Kubernetes Indexed Job)
  GAN_DDP_TOKEN_FILE or GAN_DDP_TOKEN                  the run's token (never a flag)
  GAN_DDP_CA_FILE                                      CA the workers trust for wss:// (default: --tls-cert)
  GAN_DDP_CONNECT_TIMEOUT                              seconds a worker waits for the coordinator (default ${LAUNCH_CONNECT_TIMEOUT_S})
  GAN_DDP_REQUEUE=0                                    under SLURM, do not requeue the job after a preemption`);
}

/** The coordinator's options for rank 0: the flags given, the rest from the plan. */
export function coordinatorOptions(o: CliOptions, explicit: Set<string>, plan: LaunchPlan): { options: CliOptions; explicit: Set<string> } {
  const workers = plan.worldSize - 1;
  if (explicit.has('workers') && o.workers > workers) {
    throw new GanError('E_ARGS', `--workers ${o.workers} is more than the job's ${workers} worker tasks (world size ${plan.worldSize} from ${plan.from.worldSize}, less the coordinator)`);
  }
  const out = o.out ?? (plan.jobId ? join('runs', `job-${plan.jobId}`) : undefined);
  if (!out) throw new GanError('E_ARGS', 'launch needs --out (on storage that outlives the task): a restarted job resumes from the checkpoint there');
  const options: CliOptions = {
    ...o,
    workers: explicit.has('workers') ? o.workers : workers,
    // As the coordinator's own default, training goes on with one worker (restarted pods rejoin);
    // an elastic range (PET_NNODES=MIN:MAX) says how few it may go down to.
    minWorkers: explicit.has('minWorkers') ? o.minWorkers : plan.minWorldSize < plan.worldSize ? Math.max(1, plan.minWorldSize - 1) : 1,
    host: explicit.has('host') ? o.host : '0.0.0.0',
    port: listenPort(o, explicit, plan),
    out,
    token: undefined,
    spawn: false,
    resume: existsSync(join(out, CHECKPOINT_FILE)) ? out : undefined,
  };
  if (options.minWorkers > options.workers) throw new GanError('E_ARGS', `--min-workers ${options.minWorkers} is above the ${options.workers} workers of this job`);
  // On resume only these may differ from the checkpoint's config; the job's shape sets them every time.
  return { options, explicit: new Set([...explicit, 'workers', 'minWorkers']) };
}

/** The coordinator's port: --port when given (every task sees the same flags), else the scheduler's. */
function listenPort(o: CliOptions, explicit: Set<string>, plan: LaunchPlan): number {
  return explicit.has('port') ? o.port : plan.port;
}

/** Where a worker finds its coordinator. */
function coordinatorUrl(plan: LaunchPlan, o: CliOptions, explicit: Set<string>): string {
  const host = plan.coordinator.includes(':') && !plan.coordinator.startsWith('[') ? `[${plan.coordinator}]` : plan.coordinator;
  return `${o.tlsCert ? 'wss' : 'ws'}://${host}:${listenPort(o, explicit, plan)}`;
}

export async function run(argv: string[], env: Env): Promise<number> {
  const cmd = program();
  cmd.parse(argv);
  const o = cmd.opts<CliOptions>();
  const explicit = new Set(Object.keys(o).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
  for (const [flag, why] of Object.entries(NOT_UNDER_LAUNCH)) {
    if (explicit.has(flag)) throw new GanError('E_ARGS', `--${flag} is not taken by launch: ${why}`);
  }
  const plan = launchPlan(env);
  const token = launchToken(env);
  const say = (s: string) => process.stderr.write(`launch: ${s}\n`);
  say(`${plan.role}${plan.rank !== null ? ` (rank ${plan.rank} of ${plan.worldSize})` : ` (world ${plan.worldSize})`} from ${plan.source}; coordinator ${plan.coordinator}:${listenPort(o, explicit, plan)}`);

  if (plan.role === 'coordinator') {
    const { options, explicit: given } = coordinatorOptions(o, explicit, plan);
    if (options.resume) say(`${options.out} holds a checkpoint: resuming from it`);
    if (token) process.env.GAN_DDP_TOKEN = token;
    return runCoordinator(options, given, {
      preemptSignals: ['SIGUSR1', 'SIGTERM'],
      // SIGTERM is how SLURM cancels a job or ends it at its time limit: only USR1, its warning, requeues.
      onPreempted: (sig, log) => sig === 'SIGUSR1' && requeue(env, log),
    });
  }

  const timeout = env.GAN_DDP_CONNECT_TIMEOUT ? Number(env.GAN_DDP_CONNECT_TIMEOUT) : LAUNCH_CONNECT_TIMEOUT_S;
  if (!(timeout > 0)) throw new GanError('E_ARGS', `GAN_DDP_CONNECT_TIMEOUT=${env.GAN_DDP_CONNECT_TIMEOUT}: expected a number of seconds above 0`);
  const threads = explicit.has('threads') ? o.threads : (plan.cpus ?? undefined);
  return runWorker({
    connect: coordinatorUrl(plan, o, explicit),
    token,
    ca: o.tlsCert ? (env.GAN_DDP_CA_FILE || o.tlsCert) : undefined,
    backend: o.backend,
    threads,
    connectTimeout: timeout,
    maxPayload: 256,
    model: explicit.has('model') ? o.model : undefined,
    relay: true,
    tlsCert: o.tlsCert,
    tlsKey: o.tlsKey,
    quiet: false,
  }, { preemptSignals: ['SIGTERM'], ignoreSignals: ['SIGUSR1'] });
}

/** Under SLURM, put this job back in the queue after a preemption's checkpoint: it starts again and resumes. */
function requeue(env: Env, log: (line: string) => void): void {
  const job = env.SLURM_JOB_ID;
  if (!job || env.GAN_DDP_REQUEUE === '0') return;
  try {
    execFileSync('scontrol', ['requeue', job], { stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
    log(`requeued SLURM job ${job}: it resumes from the checkpoint when it runs again`);
  } catch (e) {
    const err = e as { stderr?: Buffer; message: string };
    log(`scontrol requeue ${job} failed (${err.stderr?.toString().trim() || err.message}); resubmit the job to resume`);
  }
}

export function main(argv: string[]): void {
  run(argv, process.env).then((code) => process.exit(code), (e) => die('launch', e));
}

if (isMain(import.meta.url)) main(process.argv);
