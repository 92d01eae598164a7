/**
 * `launch` as the tasks of a job run it, on this host: each task a process with only the
 * variables its scheduler would give it. Rank 0 coordinates, the others join it whatever order
 * they start in; a preempted coordinator checkpoints, exits 75, and its restart resumes to the
 * weights of an uninterrupted run (Kubernetes pods: cluster-k8s.test.ts; SLURM: slurm.test.ts).
 */
import { describe, expect, it } from 'vitest';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import type { Env } from '../cli/cluster-env.js';
import { smallData, tempDir } from './helpers.js';
import { type Proc, epochsOf, expectEveryEpochExact, expectSameState, freePort, metricsOf, requireBuild, waitUntil, writeIdxDir } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';
import { TINY_LAUNCH_FLAGS, spawnLaunch, tokenFile } from './util-launch.js';

const { procs } = faultHarness();
const N = 200;

function task(name: string, env: Env, args: string[]): Proc {
  const p = spawnLaunch(name, env, args);
  procs.push(p);
  return p;
}

/** A job's inputs: the data, a free port, the token's Secret file and a run directory. */
async function job() {
  requireBuild();
  return { data: writeIdxDir(smallData(N)), port: await freePort(), secret: tokenFile(), out: join(tempDir(), 'run') };
}

describe('launch on one host', () => {
  it('the project\'s variables: rank 0 coordinates on all interfaces with the token from a file, ranks 1-2 join it; each sample once per epoch', async () => {
    const { data, port, secret, out } = await job();
    const base = { GAN_DDP_WORLD_SIZE: '3', GAN_DDP_COORDINATOR: `127.0.0.1:${port}`, GAN_DDP_TOKEN_FILE: secret.file };
    const args = [...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', '2', '--out', out];
    const tasks = [0, 1, 2].map((r) => task(`rank${r}`, { ...base, GAN_DDP_RANK: String(r) }, args));
    await tasks[0]!.waitFor(/launch: coordinator \(rank 0 of 3\) from GAN_DDP_\* variables/);
    await tasks[0]!.waitFor(new RegExp(`listening on ws://0\\.0\\.0\\.0:${port};`));
    for (const t of tasks) expect((await t.waitExit(60_000)).code).toBe(0);
    expect(tasks[1]!.output).toMatch(/launch: worker \(rank 1 of 3\)/);
    expectEveryEpochExact(epochsOf(out), N, 2);
    expect(metricsOf(out).every((m) => m.workers === 2)).toBe(true);
  }, 90_000);

  it('--sync-every on every task: a low-communication run whose rounds are syncs of H local steps; each sample once per epoch', async () => {
    const { data, port, secret, out } = await job();
    const base = { GAN_DDP_WORLD_SIZE: '3', GAN_DDP_COORDINATOR: `127.0.0.1:${port}`, GAN_DDP_TOKEN_FILE: secret.file };
    const args = [...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', '2', '--sync-every', '4', '--out', out];
    const tasks = [0, 1, 2].map((r) => task(`sync-rank${r}`, { ...base, GAN_DDP_RANK: String(r) }, args));
    for (const t of tasks) expect((await t.waitExit(60_000)).code).toBe(0);
    expect(tasks[0]!.output).toMatch(/2 workers x batch 10 = global batch 20, 4 local steps per sync/);
    expectEveryEpochExact(epochsOf(out), N, 2);
    // 200 samples at 2 workers x 10 x 4 a sync: three syncs of 80, 80 and 40 an epoch.
    expect(metricsOf(out).map((m) => m.samples)).toEqual([80, 80, 40, 80, 80, 40]);
  }, 90_000);

  it('PyTorch\'s variables, workers started long before the coordinator: they wait for it with backoff', async () => {
    const { data, port, secret, out } = await job();
    const base = { WORLD_SIZE: '3', MASTER_ADDR: '127.0.0.1', MASTER_PORT: String(port), GAN_DDP_TOKEN_FILE: secret.file };
    const args = [...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', '1', '--out', out];
    const workers = [1, 2].map((r) => task(`rank${r}`, { ...base, RANK: String(r) }, args));
    await workers[0]!.waitFor(/retrying in \d+ ms/, 20_000);
    const coordinator = task('rank0', { ...base, RANK: '0' }, args);
    for (const t of [coordinator, ...workers]) expect((await t.waitExit(60_000)).code).toBe(0);
    expect(coordinator.output).toMatch(/from PyTorch \(RANK, WORLD_SIZE, MASTER_ADDR\)/);
    expectEveryEpochExact(epochsOf(out), N, 1);
  }, 90_000);

  it('wrong launches end with one E_ARGS line: no environment, a token on the command line, the example Secret', async () => {
    requireBuild();
    const none = task('none', {}, ['--out', tempDir()]);
    expect((await none.waitExit(20_000)).code).toBe(1);
    expect(none.output).toMatch(/^launch: error \[E_ARGS\]: no launch environment: set GAN_DDP_RANK/m);
    const flag = task('flag', { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '2' }, ['--token', 'abc', '--out', tempDir()]);
    expect((await flag.waitExit(20_000)).code).toBe(1);
    expect(flag.output).toMatch(/E_ARGS\]: --token is not taken by launch: the token comes from GAN_DDP_TOKEN_FILE or GAN_DDP_TOKEN/);
    const example = tokenFile('replace-with-output-of-openssl-rand-hex-16');
    const placeholder = task('placeholder', { GAN_DDP_RANK: '0', GAN_DDP_WORLD_SIZE: '2', GAN_DDP_TOKEN_FILE: example.file }, ['--out', tempDir()]);
    expect((await placeholder.waitExit(20_000)).code).toBe(1);
    expect(placeholder.output).toMatch(/E_ARGS\]: GAN_DDP_TOKEN_FILE=.* holds the example token of deploy\/k8s\/secret.yaml/);
  }, 60_000);

  it('a preempted coordinator (SIGTERM) checkpoints and exits 75, its workers wait, and its restart resumes to the weights of an uninterrupted run, bit for bit', async () => {
    requireBuild();
    const data = writeIdxDir(smallData(N));
    const secret = tokenFile();
    const run = async (tag: string, preempt: boolean) => {
      const port = await freePort();
      const out = join(tempDir(), 'run');
      const env = (r: number) => ({ GAN_DDP_RANK: String(r), GAN_DDP_WORLD_SIZE: '3', GAN_DDP_COORDINATOR: '127.0.0.1', GAN_DDP_PORT: String(port), GAN_DDP_TOKEN_FILE: secret.file });
      const args = [...TINY_LAUNCH_FLAGS, '--data', data, '--epochs', '6', '--checkpoint-every', '0', '--out', out];
      const workers = [1, 2].map((r) => task(`${tag}-rank${r}`, env(r), args));
      const first = task(`${tag}-rank0`, env(0), args);
      if (preempt) {
        // Mid-epoch, with no periodic checkpoint: only the preemption's checkpoint can make the resume exact.
        await waitUntil(() => metricsOf(out).length >= 13, 60_000, 'round 13', 5);
        // The workers are held while the signal lands, so the run cannot race past its end.
        for (const w of workers) w.pause();
        first.signal('SIGTERM');
        await first.waitFor(/SIGTERM: preempted/, 10_000);
        for (const w of workers) w.resume();
        expect((await first.waitExit(30_000)).code).toBe(75);
        expect(first.output).toMatch(/SIGTERM: preempted; stopping at the end of this round, checkpointing/);
        const saved = loadCheckpoint(out);
        // Stopped early in a 60-round run, most likely mid-epoch (10 rounds an epoch).
        expect(saved.round).toBeGreaterThanOrEqual(13);
        expect(saved.round).toBeLessThan(60);
        for (const w of workers) await w.waitFor(/the coordinator stopped to be resumed .*; waiting for it/, 10_000);
        const second = task(`${tag}-rank0-restarted`, env(0), args);
        await second.waitFor(/holds a checkpoint: resuming from it/);
        await second.waitFor(new RegExp(`resumed .* at round ${saved.round},`));
        expect((await second.waitExit(60_000)).code).toBe(0);
      } else {
        expect((await first.waitExit(60_000)).code).toBe(0);
      }
      for (const w of workers) expect((await w.waitExit(20_000)).code).toBe(0);
      return out;
    };
    const ref = await run('ref', false);
    const resumed = await run('preempted', true);
    const a = loadCheckpoint(ref);
    const b = loadCheckpoint(resumed);
    expectSameState(a, b);
    expect(epochsOf(resumed)).toEqual(epochsOf(ref));
    expectEveryEpochExact(epochsOf(resumed), N, 6);
    expect(existsSync(join(resumed, 'summary.json'))).toBe(true);
  }, 180_000);
});
