/**
 * `--eval-every`: the judge works in a process of its own, so the round loop never waits for it.
 * Its classifier trains (on digits the shipped judge was not made for) while the first rounds
 * run, and each epoch's evaluation is scored while the next epoch trains; every evaluation still
 * reaches eval.jsonl, in order, before the run ends. The shipped judge is the one a fresh
 * checkout uses for the embedded digits.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { getClassifier, judgeFileName, judgeKey, shippedJudgeDir } from '../eval/classifier.js';
import { loadMnist } from '../shared/data/mnist.js';
import { smallData, tempDir, useWasm } from './helpers.js';
import { TINY_MODEL_FLAGS, freePort, readJsonl, requireBuild, sleep, spawnCoordinator, spawnWorker, writeIdxDir } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';

const { procs } = faultHarness();

describe('evaluation beside the rounds', () => {
  it('the package ships the judge of the embedded digits, made by this code\'s default recipe', async () => {
    const file = join(shippedJudgeDir(), judgeFileName(judgeKey(loadMnist())));
    expect(existsSync(file), `${file}: npm run build:judge makes it`).toBe(true);
    await useWasm();
    const lines: string[] = [];
    const judge = await getClassifier({ data: loadMnist(), cacheDir: null, log: (l) => lines.push(l) });
    expect(judge.trained).toBe(false);
    expect(judge.cacheFile).toBe(file);
    expect(judge.testAccuracy).toBeGreaterThan(0.97);
    judge.dispose();
  });

  it('--eval-every 1: rounds go on while the judge trains and while it scores; every epoch is scored, in order, before the run ends', async () => {
    requireBuild();
    const n = 1000;
    const epochs = 4;
    const data = writeIdxDir(smallData(n));
    const out = join(tempDir(), 'run');
    // A cache of its own: the judge for these digits is trained in this run, never loaded from an earlier one.
    process.env.GAN_DDP_CACHE_DIR = tempDir('gan-ddp-cache-');
    const port = await freePort();
    const coordinator = spawnCoordinator([...TINY_MODEL_FLAGS, '--data', data, '--workers', '2', '--batch-size', '10', '--seed', '4',
      '--epochs', String(epochs), '--eval-every', '1', '--port', String(port), '--out', out], 'coordinator');
    procs.push(coordinator);
    await coordinator.port;
    for (const i of [0, 1]) procs.push(spawnWorker(`ws://127.0.0.1:${port}`, `w${i}`));

    // What a person watching the run directory sees, and when: rounds logged, evaluations recorded.
    const rounds = () => (existsSync(join(out, 'metrics.jsonl')) ? readFileSync(join(out, 'metrics.jsonl'), 'utf8').split('\n').filter(Boolean).length : 0);
    const evals = () => (existsSync(join(out, 'eval.jsonl')) ? readJsonl<{ epoch: number; round: number }>(join(out, 'eval.jsonl')) : []);
    const roundsWhenScored: number[] = [];
    let trainingFrom = -1;
    let trainingTo = -1;
    while (coordinator.alive) {
      const r = rounds();
      const lines = coordinator.lines;
      if (trainingFrom < 0 && lines.some((l) => /classifier: training/.test(l))) trainingFrom = r;
      if (trainingTo < 0 && lines.some((l) => /classifier: test accuracy/.test(l))) trainingTo = r;
      while (roundsWhenScored.length < evals().length) roundsWhenScored.push(r);
      await sleep(5);
    }
    expect(coordinator.exit?.code, coordinator.output).toBe(0);
    const scored = evals();
    expect(scored.map((e) => e.epoch)).toEqual([1, 2, 3, 4]);
    // The judge trained for these digits while rounds were being logged (a judge in the round loop
    // would have held them all until it was done).
    expect(trainingFrom).toBeGreaterThanOrEqual(0);
    expect(trainingTo - trainingFrom, coordinator.output).toBeGreaterThan(3);
    // The first epoch's evaluation was asked for at its round and answered rounds later.
    expect(roundsWhenScored[0]! - scored[0]!.round, coordinator.output).toBeGreaterThan(3);
    expect(coordinator.output).toMatch(/epoch 4 eval: FD [\d.]+ \(floor [\d.]+\), classifier score/);
  }, 120_000);
});
