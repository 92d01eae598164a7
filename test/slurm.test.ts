/**
 * deploy/slurm/train.sbatch on a real one-node SLURM cluster (util-slurm.ts): a coordinator and
 * three workers as the four tasks of one job. A job run through uses every sample once per epoch;
 * a job preempted with SIGUSR1 checkpoints, requeues itself, runs again, resumes and ends with the
 * weights of the uninterrupted job, bit for bit. Needs root, slurm-wlm and munge (.ci/run installs them).
 */
import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import { smallData, tempDir } from './helpers.js';
import { ROOT, epochsOf, expectEveryEpochExact, expectSameState, metricsOf, requireBuild, waitUntil, writeIdxDir } from './util-faults.js';
import { TINY_LAUNCH_FLAGS, tokenFile } from './util-launch.js';
import { SlurmCluster, slurmMissing } from './util-slurm.js';

const why = slurmMissing();
const SCRIPT = join(ROOT, 'deploy', 'slurm', 'train.sbatch');
const N = 300;
const EPOCHS = 12;

describe.skipIf(why !== null)(`SLURM${why ? ` [skipped: ${why}]` : ''}`, () => {
  let slurm: SlurmCluster;
  let data: string;
  let secret: { file: string };
  const work = tempDir('gan-ddp-slurm-jobs-');
  beforeAll(async () => {
    requireBuild();
    slurm = await SlurmCluster.start();
    data = writeIdxDir(smallData(N));
    secret = tokenFile();
  }, 60_000);
  afterAll(() => slurm?.stop());

  /** 1 coordinator + 3 workers, one CPU each, the tiny model; `out` is the run directory. */
  const submit = (name: string) => {
    const out = join(work, name);
    const job = slurm.sbatch(['--ntasks', '4', '--cpus-per-task', '1', '--output', join(work, `${name}.out`), '--chdir', ROOT, SCRIPT,
      ...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', String(EPOCHS), '--checkpoint-every', '0', '--out', out], { GAN_DDP_TOKEN_FILE: secret.file });
    return { job, out, output: () => readFileSync(join(work, `${name}.out`), 'utf8') };
  };

  let reference = '';
  it('sbatch runs the coordinator as task 0 and three workers; every sample is used once per epoch', async () => {
    const { job, out, output } = submit('whole');
    expect(await slurm.waitDone(job, 120_000), output() + slurm.log()).toBe('COMPLETED');
    expect(output()).toMatch(/launch: coordinator \(rank 0 of 4\) from SLURM/);
    expect(output().match(/launch: worker \(rank [1-3] of 4\) from SLURM/g)).toHaveLength(3);
    expectEveryEpochExact(epochsOf(out), N, EPOCHS);
    expect(metricsOf(out).every((m) => m.workers === 3)).toBe(true);
    reference = out;
  }, 150_000);

  it('SIGUSR1 mid-run: the coordinator checkpoints and requeues the job, which resumes by itself and ends with the uninterrupted weights, bit for bit', async () => {
    expect(reference).not.toBe('');
    const { job, out, output } = submit('preempted');
    await waitUntil(() => metricsOf(out).length >= 30, 90_000, 'round 30', 20);
    // To the batch shell and every task at once, as SLURM's --signal=USR1@90 warning comes before a time limit.
    slurm.signal(job, 'USR1', '--full');
    expect(await slurm.waitDone(job, 150_000), output() + slurm.log()).toBe('COMPLETED');
    expect(slurm.field(job, 'Restarts')).toBe('1');
    const log = output();
    expect(log).toMatch(/SIGUSR1: preempted; stopping at the end of this round/);
    const at = Number(/preempted: checkpoint at round (\d+)/.exec(log)?.[1]);
    expect(at).toBeGreaterThanOrEqual(30);
    expect(log).toMatch(/requeued SLURM job \d+: it resumes from the checkpoint/);
    expect(log).toMatch(/restart 1/);
    expect(log).toMatch(/holds a checkpoint: resuming from it/);
    expect(log).toMatch(new RegExp(`resumed .* at round ${at},`));
    const a = loadCheckpoint(reference);
    const b = loadCheckpoint(out);
    expectSameState(a, b);
    expect(epochsOf(out)).toEqual(epochsOf(reference));
  }, 240_000);
});
