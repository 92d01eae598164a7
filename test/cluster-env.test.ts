/** The launch contract's reading of the environment (cli/cluster-env.ts): every source, and every way it can be wrong. */
import { describe, expect, it } from 'vitest';
import { writeFileSync } from 'node:fs';
import { join } from 'node:path';
import { type Env, expandHostList, launchPlan, launchToken, slurmPort } from '../cli/cluster-env.js';
import type { CliOptions } from '../cli/coordinator.js';
import { coordinatorOptions, program } from '../cli/launch.js';
import { tempDir } from './helpers.js';

const argsError = (env: Env, message: RegExp) => {
  let err: unknown;
  try {
    launchPlan(env);
  } catch (e) {
    err = e;
  }
  expect(err).toMatchObject({ code: 'E_ARGS', message: expect.stringMatching(message) });
};

describe('SLURM host lists', () => {
  it.each([
    ['node01', ['node01']],
    ['node[01-04,07]', ['node01', 'node02', 'node03', 'node04', 'node07']],
    ['a[8-11]', ['a8', 'a9', 'a10', 'a11']],
    ['gpu[001-003]', ['gpu001', 'gpu002', 'gpu003']],
    ['node[1-2],gpu3,cpu[07,09]', ['node1', 'node2', 'gpu3', 'cpu07', 'cpu09']],
    ['rack[1-2]-n[01-02]', ['rack1-n01', 'rack1-n02', 'rack2-n01', 'rack2-n02']],
    ['n[5]', ['n5']],
  ])('%s', (list, hosts) => {
    expect(expandHostList(list)).toEqual(hosts);
  });

  it.each(['node[01-04', 'node01]', 'node[a-b]', 'node[4-1]', 'a,,b', 'node[]'])('refuses %s with E_ARGS', (list) => {
    expect(() => expandHostList(list)).toThrow(expect.objectContaining({ code: 'E_ARGS' }));
  });

  it('gives a job a port of its own that a requeue keeps', () => {
    expect(slurmPort('123456')).toBe(20000 + 3456);
    expect(slurmPort('7')).toBe(20007);
  });
});

describe('launch plans from each source', () => {
  it('the project\'s own variables', () => {
    expect(launchPlan({ GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '4' })).toMatchObject({ role: 'coordinator', rank: 0, worldSize: 4, minWorldSize: 4, port: 8765 });
    expect(launchPlan({ GAN_DDP_RANK: '2', GAN_DDP_WORLD_SIZE: '4', GAN_DDP_COORDINATOR: 'head:9000' }))
      .toMatchObject({ role: 'worker', rank: 2, coordinator: 'head', port: 9000, from: { coordinator: 'GAN_DDP_COORDINATOR', port: 'GAN_DDP_COORDINATOR' } });
    expect(launchPlan({ GAN_DDP_ROLE: 'worker', GAN_DDP_WORLD_SIZE: '3', GAN_DDP_COORDINATOR: 'c.svc', GAN_DDP_PORT: '7000' }))
      .toMatchObject({ role: 'worker', rank: null, coordinator: 'c.svc', port: 7000 });
  });

  it('PyTorch\'s (torchrun, a Kubeflow PyTorchJob)', () => {
    const env = { RANK: '3', WORLD_SIZE: '5', MASTER_ADDR: 'train-master-0', MASTER_PORT: '23456', LOCAL_RANK: '0' };
    expect(launchPlan(env)).toMatchObject({ role: 'worker', rank: 3, worldSize: 5, coordinator: 'train-master-0', port: 23456, localRank: 0, from: { rank: 'RANK', worldSize: 'WORLD_SIZE' } });
    expect(launchPlan({ ...env, RANK: '0' }).role).toBe('coordinator');
  });

  it('torchelastic\'s PET_ variables, with an elastic range', () => {
    expect(launchPlan({ PET_NODE_RANK: '1', PET_NNODES: '3', PET_MASTER_ADDR: 'm', PET_MASTER_PORT: '29500' }))
      .toMatchObject({ role: 'worker', rank: 1, worldSize: 3, minWorldSize: 3, coordinator: 'm', port: 29500 });
    expect(launchPlan({ PET_NODE_RANK: '0', PET_NNODES: '2:5', PET_MASTER_ADDR: 'm' })).toMatchObject({ worldSize: 5, minWorldSize: 2 });
  });

  it('SLURM\'s: the first host of the node list is rank 0\'s, the job id gives the port', () => {
    const env = { SLURM_PROCID: '2', SLURM_NTASKS: '4', SLURM_LOCALID: '1', SLURM_JOB_NODELIST: 'gpu[07-08,10]', SLURM_JOB_ID: '4242', SLURM_CPUS_PER_TASK: '2' };
    expect(launchPlan(env)).toMatchObject({ role: 'worker', rank: 2, worldSize: 4, coordinator: 'gpu07', port: 24242, localRank: 1, jobId: '4242', cpus: 2 });
    // Inside a step, the step's node list is where its task 0 runs.
    expect(launchPlan({ ...env, SLURM_STEP_NODELIST: 'gpu10' }).coordinator).toBe('gpu10');
    expect(launchPlan({ ...env, GAN_DDP_PORT: '9999' }).port).toBe(9999);
  });

  it('a Kubernetes Indexed Job: rank 0 is <job>-0.<service>', () => {
    const env = { JOB_COMPLETION_INDEX: '2', HOSTNAME: 'gan-ddp-2', GAN_DDP_SERVICE: 'gan-ddp', GAN_DDP_WORLD_SIZE: '4' };
    expect(launchPlan(env)).toMatchObject({ role: 'worker', rank: 2, worldSize: 4, coordinator: 'gan-ddp-0.gan-ddp', port: 8765 });
    expect(launchPlan({ ...env, JOB_COMPLETION_INDEX: '0', HOSTNAME: 'gan-ddp-0' }).role).toBe('coordinator');
  });

  it('a JobSet: the role given per replicated Job outranks its per-Job index', () => {
    const worker = { JOB_COMPLETION_INDEX: '0', GAN_DDP_ROLE: 'worker', GAN_DDP_WORLD_SIZE: '4', GAN_DDP_COORDINATOR: 'gan-ddp-coordinator-0-0.gan-ddp' };
    expect(launchPlan(worker)).toMatchObject({ role: 'worker', coordinator: 'gan-ddp-coordinator-0-0.gan-ddp' });
    expect(launchPlan({ ...worker, GAN_DDP_ROLE: 'coordinator' })).toMatchObject({ role: 'coordinator', rank: 0 });
  });

  it('the project\'s variables come first, then PyTorch\'s, then PET_, SLURM\'s and the Job index', () => {
    const all = {
      GAN_DDP_RANK: '1', RANK: '2', WORLD_SIZE: '6', MASTER_ADDR: 'torch-head', PET_NODE_RANK: '3', PET_NNODES: '7', PET_MASTER_ADDR: 'pet-head',
      SLURM_PROCID: '4', SLURM_NTASKS: '8', SLURM_JOB_NODELIST: 'slurm-head', JOB_COMPLETION_INDEX: '5',
    };
    expect(launchPlan(all)).toMatchObject({ rank: 1, worldSize: 6, coordinator: 'torch-head', from: { rank: 'GAN_DDP_RANK', worldSize: 'WORLD_SIZE' } });
    const { GAN_DDP_RANK: _a, RANK: _b, WORLD_SIZE: _c, MASTER_ADDR: _d, ...noTorch } = all;
    expect(launchPlan(noTorch)).toMatchObject({ rank: 3, worldSize: 7, coordinator: 'pet-head' });
    const { PET_NODE_RANK: _e, PET_NNODES: _f, PET_MASTER_ADDR: _g, ...noPet } = noTorch;
    expect(launchPlan(noPet)).toMatchObject({ rank: 4, worldSize: 8, coordinator: 'slurm-head' });
  });
});

describe('missing or contradictory values are E_ARGS naming the variable', () => {
  it.each<[string, Env, RegExp]>([
    ['nothing at all', {}, /no launch environment: set GAN_DDP_RANK/],
    ['a rank without a world size', { RANK: '1', MASTER_ADDR: 'h' }, /RANK is set but the world size is not: set WORLD_SIZE/],
    ['SLURM without SLURM_NTASKS', { SLURM_PROCID: '0' }, /set SLURM_NTASKS/],
    ['an Indexed Job without its completions', { JOB_COMPLETION_INDEX: '1', HOSTNAME: 'j-1', GAN_DDP_SERVICE: 'j' }, /set GAN_DDP_WORLD_SIZE \(the Job's completions\)/],
    ['a rank past the world', { RANK: '4', WORLD_SIZE: '4', MASTER_ADDR: 'h' }, /RANK=4 is not below WORLD_SIZE=4/],
    ['a world of one', { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '1' }, /GAN_DDP_WORLD_SIZE=1: a run needs a coordinator and at least one worker/],
    ['a word for a rank', { RANK: 'two', WORLD_SIZE: '4' }, /RANK=two: expected a whole number/],
    ['a negative rank', { SLURM_PROCID: '-1', SLURM_NTASKS: '3' }, /SLURM_PROCID=-1: expected a whole number/],
    ['a port out of range', { RANK: '1', WORLD_SIZE: '2', MASTER_ADDR: 'h', MASTER_PORT: '70000' }, /MASTER_PORT=70000: expected a whole number from 1 to 65535/],
    ['a worker with no address', { RANK: '1', WORLD_SIZE: '2' }, /no coordinator address: set MASTER_ADDR/],
    ['an Indexed Job pod with no Service', { JOB_COMPLETION_INDEX: '1', GAN_DDP_WORLD_SIZE: '3' }, /set GAN_DDP_SERVICE/],
    ['a hostname that is not the Job\'s', { JOB_COMPLETION_INDEX: '1', HOSTNAME: 'other', GAN_DDP_SERVICE: 's', GAN_DDP_WORLD_SIZE: '3' }, /HOSTNAME other does not end in -1/],
    ['an unknown role', { GAN_DDP_ROLE: 'boss', GAN_DDP_WORLD_SIZE: '3' }, /GAN_DDP_ROLE=boss: expected coordinator or worker/],
    ['a role that contradicts the rank', { GAN_DDP_ROLE: 'worker', GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '3' }, /GAN_DDP_ROLE=worker contradicts GAN_DDP_RANK=0/],
    ['two ports', { GAN_DDP_RANK: '1', GAN_DDP_WORLD_SIZE: '2', GAN_DDP_COORDINATOR: 'h:1000', GAN_DDP_PORT: '2000' }, /GAN_DDP_PORT=2000 contradicts GAN_DDP_COORDINATOR/],
    ['a malformed address', { GAN_DDP_RANK: '1', GAN_DDP_WORLD_SIZE: '2', GAN_DDP_COORDINATOR: 'h:x:y' }, /GAN_DDP_COORDINATOR=h:x:y: expected HOST or HOST:PORT/],
    ['a backwards elastic range', { PET_NODE_RANK: '0', PET_NNODES: '5:2' }, /PET_NNODES=5:2: expected 1 <= MIN <= MAX/],
    ['a broken node list', { SLURM_PROCID: '0', SLURM_NTASKS: '2', SLURM_JOB_NODELIST: 'n[1-' }, /host list n\[1-: unbalanced \[/],
  ])('%s', (_, env, message) => argsError(env, message));
});

describe('the token', () => {
  it('comes from a file (a mounted Secret) without its trailing newline, or from GAN_DDP_TOKEN', () => {
    const file = join(tempDir(), 'token');
    writeFileSync(file, 's3cret\n');
    expect(launchToken({ GAN_DDP_TOKEN_FILE: file })).toBe('s3cret');
    expect(launchToken({ GAN_DDP_TOKEN_FILE: file, GAN_DDP_TOKEN: 's3cret' })).toBe('s3cret');
    expect(launchToken({ GAN_DDP_TOKEN: 'direct' })).toBe('direct');
    expect(launchToken({})).toBeUndefined();
  });

  it('a missing, empty or contradicted file is E_ARGS naming the variable', () => {
    const dir = tempDir();
    const empty = join(dir, 'empty');
    writeFileSync(empty, '');
    const file = join(dir, 'token');
    writeFileSync(file, 'a');
    expect(() => launchToken({ GAN_DDP_TOKEN_FILE: join(dir, 'none') })).toThrow(/GAN_DDP_TOKEN_FILE=.*none: ENOENT/);
    expect(() => launchToken({ GAN_DDP_TOKEN_FILE: empty })).toThrow(/GAN_DDP_TOKEN_FILE=.* is empty/);
    expect(() => launchToken({ GAN_DDP_TOKEN_FILE: file, GAN_DDP_TOKEN: 'b' })).toThrow(/both set and differ/);
  });
});

describe('the coordinator\'s options under launch', () => {
  const optionsFor = (argv: string[], env: Env) => {
    const cmd = program();
    cmd.parse(['node', 'launch', ...argv]);
    const explicit = new Set(Object.keys(cmd.opts()).filter((k) => cmd.getOptionValueSource(k) === 'cli'));
    return coordinatorOptions(cmd.opts<CliOptions>(), explicit, launchPlan(env)).options;
  };

  it('workers from the world, training on down to one worker unless an elastic range says otherwise, on all interfaces', () => {
    const out = tempDir();
    expect(optionsFor(['--out', out], { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '5' })).toMatchObject({ workers: 4, minWorkers: 1, host: '0.0.0.0', port: 8765, out, resume: undefined });
    expect(optionsFor(['--out', out], { PET_NODE_RANK: '0', PET_NNODES: '3:5', PET_MASTER_ADDR: 'm' })).toMatchObject({ workers: 4, minWorkers: 2 });
    expect(optionsFor(['--out', out, '--min-workers', '3', '--port', '9000'], { RANK: '0', WORLD_SIZE: '5', MASTER_ADDR: 'm' })).toMatchObject({ minWorkers: 3, port: 9000 });
    expect(optionsFor([], { SLURM_PROCID: '0', SLURM_NTASKS: '3', SLURM_JOB_NODELIST: 'n1', SLURM_JOB_ID: '77' })).toMatchObject({ out: join('runs', 'job-77'), port: 20077 });
  });

  it('refuses more workers than the job has tasks, and a run directory it cannot find again', () => {
    expect(() => optionsFor(['--workers', '5', '--out', tempDir()], { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '5' })).toThrow(/--workers 5 is more than the job's 4 worker tasks/);
    expect(() => optionsFor([], { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '5' })).toThrow(/launch needs --out/);
  });
});
