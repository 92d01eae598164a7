/**
 * The launch contract: which part one task of a job plays and where the coordinator listens, read
 * from the variables a scheduler gives every task. Rank 0 is the coordinator, every other rank a
 * worker; the world is the coordinator plus its workers.
 *
 * Sources, in order (a value is taken from the first that has it):
 * 1. the project's own: GAN_DDP_ROLE (coordinator | worker), GAN_DDP_RANK, GAN_DDP_WORLD_SIZE,
 *    GAN_DDP_COORDINATOR (host or host:port of rank 0), GAN_DDP_PORT, GAN_DDP_SERVICE;
 * 2. PyTorch's (torchrun, a Kubeflow PyTorchJob or Trainer job): RANK, WORLD_SIZE, MASTER_ADDR,
 *    MASTER_PORT;
 * 3. torchelastic's as Kubeflow sets them: PET_NODE_RANK, PET_NNODES (N or MIN:MAX),
 *    PET_MASTER_ADDR, PET_MASTER_PORT;
 * 4. SLURM's (inside srun): SLURM_PROCID, SLURM_NTASKS, SLURM_LOCALID, the node list
 *    (SLURM_STEP_NODELIST, else SLURM_JOB_NODELIST, else SLURM_NODELIST: its first host is rank
 *    0's) and SLURM_JOB_ID (a port of its own when none is given);
 * 5. a Kubernetes Indexed Job's JOB_COMPLETION_INDEX: rank 0 is the pod `<job>-0`, reached as
 *    `<job>-0.<GAN_DDP_SERVICE>` (the headless Service that is the pods' subdomain); the world
 *    size is the Job's completions, given as GAN_DDP_WORLD_SIZE.
 *
 * A value that is missing, malformed or contradicts another is an E_ARGS error naming the
 * variable. The token is read by launchToken(): from GAN_DDP_TOKEN_FILE (a mounted Secret) or
 * GAN_DDP_TOKEN, never from a command line, which any user of the machine can read.
 */
import { readFileSync } from 'node:fs';
import { hostname } from 'node:os';
import { GanError } from '../shared/wire/errors.js';

export type Env = Record<string, string | undefined>;
export type Role = 'coordinator' | 'worker';

/** The port when no source names one: the coordinator's default. */
export const DEFAULT_PORT = 8765;

export interface LaunchPlan {
  role: Role;
  /** This task's rank (0: the coordinator); null for a worker told only its role. */
  rank: number | null;
  /** The coordinator and its workers. */
  worldSize: number;
  /** With an elastic range (PET_NNODES=MIN:MAX): the fewest to keep training with. */
  minWorldSize: number;
  /** Where workers reach rank 0. */
  coordinator: string;
  port: number;
  /** This task's index on its node (SLURM_LOCALID, LOCAL_RANK), when told. */
  localRank: number | null;
  /** The scheduler's job id (SLURM_JOB_ID), when there is one: a stable name for the run. */
  jobId: string | null;
  /** CPUs given to this task (SLURM_CPUS_PER_TASK), when told. */
  cpus: number | null;
  /** Which scheduler's variables the plan came from, for the one line launch prints. */
  source: string;
  /** The variable each of rank, worldSize, coordinator and port came from. */
  from: Record<'rank' | 'worldSize' | 'coordinator' | 'port', string>;
}

/** One value read from the environment, with the variable it came from. */
interface Read<T> {
  value: T;
  name: string;
}

function problem(msg: string): GanError {
  return new GanError('E_ARGS', msg);
}

function text(env: Env, name: string): Read<string> | null {
  const v = env[name]?.trim();
  return v ? { value: v, name } : null;
}

function whole(env: Env, name: string, min = 0, max = Number.MAX_SAFE_INTEGER): Read<number> | null {
  const t = text(env, name);
  if (!t) return null;
  const n = Number(t.value);
  if (!/^\d+$/.test(t.value) || !Number.isSafeInteger(n) || n < min || n > max) {
    throw problem(`${name}=${t.value}: expected a whole number${max < Number.MAX_SAFE_INTEGER ? ` from ${min} to ${max}` : ` of at least ${min}`}`);
  }
  return { value: n, name };
}

function port(env: Env, name: string): Read<number> | null {
  return whole(env, name, 1, 65535);
}

/** A host, or host:port, as in GAN_DDP_COORDINATOR. */
function hostPort(env: Env, name: string): { host: Read<string>; port: Read<number> | null } | null {
  const t = text(env, name);
  if (!t) return null;
  const m = /^(\[[^\]]+\]|[^:\s]+)(?::(\d+))?$/.exec(t.value);
  if (!m) throw problem(`${name}=${t.value}: expected HOST or HOST:PORT`);
  const p = m[2] === undefined ? null : port({ [name]: m[2] }, name);
  return { host: { value: m[1]!, name }, port: p };
}

/**
 * Expand a SLURM host list: `node[01-04,07],gpu3` is node01 node02 node03 node04 node07 gpu3.
 * Zero padding is kept as written; several bracket groups in one name multiply out.
 */
export function expandHostList(list: string): string[] {
  const out: string[] = [];
  // Split on commas outside brackets.
  let depth = 0;
  let start = 0;
  const items: string[] = [];
  for (let i = 0; i < list.length; i++) {
    const ch = list[i];
    if (ch === '[') depth++;
    else if (ch === ']') depth--;
    if (depth < 0) throw problem(`host list ${list}: unbalanced ]`);
    if (ch === ',' && depth === 0) {
      items.push(list.slice(start, i));
      start = i + 1;
    }
  }
  if (depth !== 0) throw problem(`host list ${list}: unbalanced [`);
  items.push(list.slice(start));
  for (const item of items) {
    if (!item.trim()) throw problem(`host list ${list}: an empty name`);
    out.push(...expandName(item.trim(), list));
  }
  return out;
}

function expandName(name: string, list: string): string[] {
  const open = name.indexOf('[');
  if (open < 0) return [name];
  const close = name.indexOf(']', open);
  const head = name.slice(0, open);
  const tails = expandName(name.slice(close + 1), list);
  const heads: string[] = [];
  for (const part of name.slice(open + 1, close).split(',')) {
    const m = /^(\d+)(?:-(\d+))?$/.exec(part.trim());
    if (!m) throw problem(`host list ${list}: "${part}" is not a number or a range`);
    const [a, b = a] = [m[1]!, m[2]];
    const from = Number(a);
    const to = Number(b);
    if (to < from) throw problem(`host list ${list}: range ${part} runs backwards`);
    if (to - from > 100_000) throw problem(`host list ${list}: range ${part} is too long`);
    const width = a.length;
    for (let n = from; n <= to; n++) heads.push(head + String(n).padStart(width, '0'));
  }
  return heads.flatMap((h) => tails.map((t) => h + t));
}

/** A port of the job's own, stable across its requeues, when SLURM names none: 20000 + job id mod 10000. */
export function slurmPort(jobId: string): number {
  const n = Number(/^\d+/.exec(jobId)?.[0] ?? NaN);
  if (!Number.isSafeInteger(n)) throw problem(`SLURM_JOB_ID=${jobId}: expected a number`);
  return 20000 + (n % 10000);
}

interface Found {
  source: string;
  /** The variables that would name the world size and rank 0's address, for the error that asks for them. */
  asks: { worldSize: string; address: string };
  rank?: Read<number>;
  worldSize?: Read<number>;
  minWorldSize?: number;
  coordinator?: Read<string>;
  port?: Read<number>;
  localRank?: number;
  jobId?: string;
  cpus?: number;
}

/** What a scheduler's variables say, or null when its rank variable is absent. */
const SCHEDULERS: ((env: Env) => Found | null)[] = [
  function pytorch(env) {
    const rank = whole(env, 'RANK');
    if (!rank) return null;
    const worldSize = whole(env, 'WORLD_SIZE', 1);
    const addr = text(env, 'MASTER_ADDR');
    return { source: 'PyTorch (RANK, WORLD_SIZE, MASTER_ADDR)', asks: { worldSize: 'WORLD_SIZE', address: 'MASTER_ADDR' }, rank, worldSize: worldSize ?? undefined, coordinator: addr ?? undefined, port: port(env, 'MASTER_PORT') ?? undefined, localRank: whole(env, 'LOCAL_RANK')?.value };
  },
  function torchelastic(env) {
    const rank = whole(env, 'PET_NODE_RANK');
    if (!rank) return null;
    const nn = text(env, 'PET_NNODES');
    let worldSize: Read<number> | undefined;
    let minWorldSize: number | undefined;
    if (nn) {
      const m = /^(\d+)(?::(\d+))?$/.exec(nn.value);
      if (!m) throw problem(`PET_NNODES=${nn.value}: expected N or MIN:MAX`);
      const lo = Number(m[1]);
      const hi = Number(m[2] ?? m[1]);
      if (lo < 1 || hi < lo) throw problem(`PET_NNODES=${nn.value}: expected 1 <= MIN <= MAX`);
      worldSize = { value: hi, name: 'PET_NNODES' };
      minWorldSize = lo;
    }
    return { source: 'torchelastic (PET_NODE_RANK, PET_NNODES, PET_MASTER_ADDR)', asks: { worldSize: 'PET_NNODES', address: 'PET_MASTER_ADDR' }, rank, worldSize, minWorldSize, coordinator: text(env, 'PET_MASTER_ADDR') ?? undefined, port: port(env, 'PET_MASTER_PORT') ?? undefined };
  },
  function slurm(env) {
    const rank = whole(env, 'SLURM_PROCID');
    if (!rank) return null;
    const worldSize = whole(env, 'SLURM_NTASKS', 1) ?? undefined;
    const listVar = ['SLURM_STEP_NODELIST', 'SLURM_JOB_NODELIST', 'SLURM_NODELIST'].map((n) => text(env, n)).find((t) => t);
    const jobId = text(env, 'SLURM_JOB_ID')?.value;
    const cpus = whole(env, 'SLURM_CPUS_PER_TASK', 1)?.value;
    return {
      source: 'SLURM (SLURM_PROCID, SLURM_NTASKS, node list)', asks: { worldSize: 'SLURM_NTASKS', address: 'SLURM_JOB_NODELIST' }, rank, worldSize,
      coordinator: listVar ? { value: expandHostList(listVar.value)[0]!, name: listVar.name } : undefined,
      port: jobId ? { value: slurmPort(jobId), name: 'SLURM_JOB_ID' } : undefined,
      localRank: whole(env, 'SLURM_LOCALID')?.value, jobId, cpus,
    };
  },
  function kubernetes(env) {
    const rank = whole(env, 'JOB_COMPLETION_INDEX');
    if (!rank) return null;
    // Pods of an Indexed Job with a subdomain are named <job>-<index>: rank 0 is <job>-0.<service>.
    const service = text(env, 'GAN_DDP_SERVICE');
    const host = text(env, 'HOSTNAME') ?? { value: hostname(), name: 'the hostname' };
    let coordinator: Read<string> | undefined;
    if (service) {
      const suffix = `-${rank.value}`;
      if (!host.value.endsWith(suffix)) {
        throw problem(`JOB_COMPLETION_INDEX=${rank.value} but ${host.name} ${host.value} does not end in ${suffix}: set GAN_DDP_COORDINATOR to rank 0's address`);
      }
      coordinator = { value: `${host.value.slice(0, -suffix.length)}-0.${service.value}`, name: `${host.name} and GAN_DDP_SERVICE` };
    }
    return {
      source: 'a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)',
      asks: { worldSize: 'GAN_DDP_WORLD_SIZE (the Job\'s completions)', address: 'GAN_DDP_SERVICE (the headless Service) or GAN_DDP_COORDINATOR' },
      rank, coordinator,
    };
  },
];

/**
 * The plan for this task, from `env`. Throws E_ARGS naming the variable when a value is missing,
 * malformed or contradicts another.
 */
export function launchPlan(env: Env): LaunchPlan {
  const role = text(env, 'GAN_DDP_ROLE');
  if (role && role.value !== 'coordinator' && role.value !== 'worker') throw problem(`GAN_DDP_ROLE=${role.value}: expected coordinator or worker`);
  const own: Found = { source: 'GAN_DDP_* variables', asks: { worldSize: 'GAN_DDP_WORLD_SIZE', address: 'GAN_DDP_COORDINATOR' } };
  own.rank = whole(env, 'GAN_DDP_RANK') ?? undefined;
  own.worldSize = whole(env, 'GAN_DDP_WORLD_SIZE', 1) ?? undefined;
  const coord = hostPort(env, 'GAN_DDP_COORDINATOR');
  own.coordinator = coord?.host;
  own.port = port(env, 'GAN_DDP_PORT') ?? coord?.port ?? undefined;
  if (coord?.port && own.port && own.port.name === 'GAN_DDP_PORT' && coord.port.value !== own.port.value) {
    throw problem(`GAN_DDP_PORT=${own.port.value} contradicts GAN_DDP_COORDINATOR=${env.GAN_DDP_COORDINATOR}`);
  }
  const sched = SCHEDULERS.map((s) => s(env)).find((p) => p !== null) ?? null;

  // Told its role, a task does not take its rank from a scheduler whose index counts only its own
  // group (a JobSet's worker Job starts again at 0).
  const rank = own.rank ?? (role ? undefined : sched?.rank);
  const worldSize = own.worldSize ?? sched?.worldSize;
  const coordinator = own.coordinator ?? sched?.coordinator;
  const thePort = own.port ?? sched?.port ?? { value: DEFAULT_PORT, name: 'the default' };

  if (!rank && !role) {
    throw problem('no launch environment: set GAN_DDP_RANK (or GAN_DDP_ROLE) and GAN_DDP_WORLD_SIZE, or run under torchrun or Kubeflow (RANK), SLURM (srun: SLURM_PROCID) or a Kubernetes Indexed Job (JOB_COMPLETION_INDEX)');
  }
  const roleOf: Role = role ? (role.value as Role) : rank!.value === 0 ? 'coordinator' : 'worker';
  if (role && rank && (rank.value === 0) !== (roleOf === 'coordinator')) {
    throw problem(`GAN_DDP_ROLE=${role.value} contradicts ${rank.name}=${rank.value} (rank 0 is the coordinator)`);
  }
  if (!worldSize) throw problem(`${rank?.name ?? 'GAN_DDP_ROLE'} is set but the world size is not: set ${(sched ?? own).asks.worldSize}`);
  if (worldSize.value < 2) throw problem(`${worldSize.name}=${worldSize.value}: a run needs a coordinator and at least one worker (2 tasks)`);
  if (rank && rank.value >= worldSize.value) throw problem(`${rank.name}=${rank.value} is not below ${worldSize.name}=${worldSize.value}`);
  if (!coordinator && roleOf === 'worker') {
    throw problem(`this worker has no coordinator address: set ${(sched ?? own).asks.address}`);
  }
  const minWorldSize = own.worldSize ? worldSize.value : (sched?.minWorldSize ?? worldSize.value);
  return {
    role: roleOf,
    rank: roleOf === 'coordinator' ? 0 : (rank?.value ?? null),
    worldSize: worldSize.value,
    minWorldSize: Math.min(minWorldSize, worldSize.value),
    coordinator: coordinator?.value ?? 'localhost',
    port: thePort.value,
    localRank: sched?.localRank ?? null,
    jobId: sched?.jobId ?? null,
    cpus: sched?.cpus ?? null,
    source: own.rank || own.worldSize || role ? (sched ? `GAN_DDP_* variables and ${sched.source}` : 'GAN_DDP_* variables') : sched!.source,
    from: { rank: rank?.name ?? role!.name, worldSize: worldSize.name, coordinator: coordinator?.name ?? 'this host', port: thePort.name },
  };
}

/** The value deploy/k8s/secret.yaml ships with, refused so that no run is protected by a published token. */
export const EXAMPLE_TOKEN = 'replace-with-output-of-openssl-rand-hex-16';

/**
 * The run's token: the contents of GAN_DDP_TOKEN_FILE (a mounted Secret; one trailing newline is
 * not part of it), else GAN_DDP_TOKEN; undefined when neither is set.
 */
export function launchToken(env: Env): string | undefined {
  const file = text(env, 'GAN_DDP_TOKEN_FILE');
  const direct = env.GAN_DDP_TOKEN;
  if (direct === EXAMPLE_TOKEN) throw problem('GAN_DDP_TOKEN is the example token of deploy/k8s/secret.yaml: make one with openssl rand -hex 16');
  if (!file) return direct || undefined;
  let token: string;
  try {
    token = readFileSync(file.value, 'utf8').replace(/\r?\n$/, '');
  } catch (e) {
    throw problem(`GAN_DDP_TOKEN_FILE=${file.value}: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message}`);
  }
  if (!token) throw problem(`GAN_DDP_TOKEN_FILE=${file.value} is empty`);
  if (token === EXAMPLE_TOKEN) throw problem(`GAN_DDP_TOKEN_FILE=${file.value} holds the example token of deploy/k8s/secret.yaml: make one with openssl rand -hex 16`);
  if (direct && direct !== token) throw problem('GAN_DDP_TOKEN and GAN_DDP_TOKEN_FILE are both set and differ: set one');
  return token;
}
