/**
 * A real one-node SLURM cluster for the tests: munged, slurmctld and slurmd from Debian's
 * slurm-wlm and munge, started by hand with a generated slurm.conf (single node, processes
 * tracked without cgroups, oversubscription allowed, requeued jobs eligible again after 5 s), and
 * stopped at the end. Everything lives in a temporary directory; the daemons listen on free ports.
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { chownSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { join } from 'node:path';
import { tempDir } from './helpers.js';
import { freePort, haveCommand, sleep, waitUntil } from './util-faults.js';

const DAEMONS = ['munged', 'slurmctld', 'slurmd', 'sbatch', 'scontrol', 'scancel', 'srun'];

/** Why a cluster cannot run here, or null. */
export function slurmMissing(): string | null {
  if (process.platform !== 'linux') return 'not Linux';
  if (process.getuid?.() !== 0) return 'needs root';
  const missing = DAEMONS.filter((d) => !haveCommand(d) && !existsSync(`/usr/sbin/${d}`));
  if (missing.length) return `slurm-wlm and munge not installed (${missing.join(', ')}; .ci/run installs them)`;
  const node = hostname().split('.')[0]!;
  if (spawnSync('getent', ['hosts', node]).status !== 0) return `this host's name ${node} does not resolve (workers reach the coordinator by node name)`;
  return null;
}

function run(cmd: string, args: string[], env: NodeJS.ProcessEnv): string {
  return execFileSync(cmd, args, { env, encoding: 'utf8', stdio: ['ignore', 'pipe', 'pipe'], timeout: 30_000 });
}

export class SlurmCluster {
  readonly dir = tempDir('gan-ddp-slurm-');
  readonly node = hostname().split('.')[0]!;
  readonly env: NodeJS.ProcessEnv;
  private startedMunge = false;

  private constructor(conf: string) {
    this.env = { ...process.env, SLURM_CONF: conf };
  }

  static async start(): Promise<SlurmCluster> {
    const dir = tempDir('gan-ddp-slurm-conf-');
    const c = new SlurmCluster(join(dir, 'slurm.conf'));
    await c.startMunge();
    for (const sub of ['state', 'spool', 'log']) mkdirSync(join(c.dir, sub), { recursive: true });
    const [ctldPort, dPort] = [await freePort(), await freePort()];
    writeFileSync(join(dir, 'slurm.conf'), [
      'ClusterName=ganddptest',
      `SlurmctldHost=${c.node}(127.0.0.1)`,
      `SlurmctldPort=${ctldPort}`,
      `SlurmdPort=${dPort}`,
      'SlurmUser=root',
      'SlurmdUser=root',
      'AuthType=auth/munge',
      // How long a requeued job waits before it may start again (default 120 s).
      'AuthInfo=cred_expire=5',
      'CredType=cred/munge',
      `StateSaveLocation=${c.dir}/state`,
      `SlurmdSpoolDir=${c.dir}/spool`,
      `SlurmctldPidFile=${c.dir}/slurmctld.pid`,
      `SlurmdPidFile=${c.dir}/slurmd.pid`,
      `SlurmctldLogFile=${c.dir}/log/slurmctld.log`,
      `SlurmdLogFile=${c.dir}/log/slurmd.log`,
      'ProctrackType=proctrack/linuxproc',
      'TaskPlugin=task/none',
      'JobAcctGatherType=jobacct_gather/none',
      'AccountingStorageType=accounting_storage/none',
      'SelectType=select/cons_tres',
      'SelectTypeParameters=CR_CPU',
      'SchedulerType=sched/backfill',
      'SchedulerParameters=sched_interval=1',
      // The node declares more CPUs than the machine has: one task per coordinator and worker.
      'SlurmdParameters=config_overrides',
      'ReturnToService=2',
      'JobRequeue=1',
      'MpiDefault=none',
      `NodeName=${c.node} NodeAddr=127.0.0.1 CPUs=8 RealMemory=4000 State=UNKNOWN`,
      `PartitionName=test Nodes=${c.node} Default=YES MaxTime=INFINITE State=UP OverSubscribe=FORCE:8`,
    ].join('\n') + '\n');
    run('/usr/sbin/slurmctld', ['-i'], c.env);
    run('/usr/sbin/slurmd', ['-N', c.node], c.env);
    await waitUntil(() => /idle/.test(spawnSync('sinfo', ['-h', '-o', '%t'], { env: c.env, encoding: 'utf8' }).stdout ?? ''), 30_000, 'the node to be idle', 200);
    return c;
  }

  /** munged, unless one already answers; with a key, made if the package did not make one. */
  private async startMunge(): Promise<void> {
    if (spawnSync('sh', ['-c', 'munge -n | unmunge'], { stdio: 'ignore' }).status === 0) return;
    const key = '/etc/munge/munge.key';
    if (!existsSync(key)) run('/usr/sbin/mungekey', ['--create'], process.env);
    mkdirSync('/run/munge', { recursive: true });
    const uid = Number(run('id', ['-u', 'munge'], process.env));
    const gid = Number(run('id', ['-g', 'munge'], process.env));
    chownSync('/run/munge', uid, gid);
    run('runuser', ['-u', 'munge', '--', '/usr/sbin/munged'], process.env);
    this.startedMunge = true;
    await waitUntil(() => spawnSync('sh', ['-c', 'munge -n | unmunge'], { stdio: 'ignore' }).status === 0, 10_000, 'munged', 100);
  }

  private readonly jobs: string[] = [];

  /** Submit a batch script; resolves to the job id. */
  sbatch(args: string[], env: Record<string, string> = {}): string {
    const job = run('sbatch', ['--parsable', ...args], { ...this.env, ...env }).trim().split(';')[0]!;
    this.jobs.push(job);
    return job;
  }

  state(job: string): string {
    return /JobState=(\S+)/.exec(run('scontrol', ['show', 'job', job], this.env))?.[1] ?? 'UNKNOWN';
  }

  /** The value of `field` in `scontrol show job`. */
  field(job: string, field: string): string | undefined {
    return new RegExp(`\\b${field}=(\\S+)`).exec(run('scontrol', ['show', 'job', job], this.env))?.[1];
  }

  async waitDone(job: string, timeoutMs: number): Promise<string> {
    const end = Date.now() + timeoutMs;
    for (;;) {
      const s = this.state(job);
      if (['COMPLETED', 'FAILED', 'CANCELLED', 'TIMEOUT', 'NODE_FAIL', 'OUT_OF_MEMORY', 'BOOT_FAIL', 'DEADLINE'].includes(s)) return s;
      if (Date.now() > end) throw new Error(`job ${job} still ${s} after ${timeoutMs} ms`);
      await sleep(250);
    }
  }

  signal(job: string, sig: string, ...opts: string[]): void {
    run('scancel', [`--signal=${sig}`, ...opts, job], this.env);
  }

  /** Stop the daemons (and munged, if this cluster started it). */
  stop(): void {
    // Jobs of a failed test must not go on using the machine.
    if (this.jobs.length) spawnSync('scancel', ['--full', ...this.jobs], { env: this.env, stdio: 'ignore', timeout: 20_000 });
    spawnSync('scontrol', ['shutdown'], { env: this.env, stdio: 'ignore', timeout: 20_000 });
    for (const f of ['slurmctld.pid', 'slurmd.pid']) killPidFile(join(this.dir, f));
    if (this.startedMunge) killPidFile('/run/munge/munged.pid');
  }

  log(): string {
    return ['slurmctld', 'slurmd'].map((d) => {
      try {
        return readFileSync(join(this.dir, 'log', `${d}.log`), 'utf8').split('\n').slice(-20).join('\n');
      } catch {
        return '';
      }
    }).join('\n');
  }
}

function killPidFile(file: string): void {
  try {
    process.kill(Number(readFileSync(file, 'utf8').trim()), 'SIGTERM');
  } catch {
    // Already gone.
  }
}
