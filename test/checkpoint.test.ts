/** Checkpoints written while training goes on: the state as it was when taken, one at a time, failures reported. */
import { mkdirSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { join } from 'node:path';
import { describe, expect, it } from 'vitest';
import { type TrainState, encodeCheckpoint } from '../coordinator/checkpoint.js';
import { RunDir } from '../coordinator/run-dir.js';
import { initWeights, netLayout } from '../shared/compute/model.js';
import { tempDir, tinyConfig } from './helpers.js';

function state(round: number): TrainState {
  const config = tinyConfig({ emaDecay: 0.99 });
  const g = netLayout(config.model, 'G');
  const d = netLayout(config.model, 'D');
  const filled = (n: number, x: number) => new Float32Array(n).fill(x);
  return {
    config, round, epoch: 0, versions: { D: round, G: round }, adamSteps: { D: round, G: round }, epochUses: new Uint8Array(10).fill(1),
    weights: { G: initWeights(g, round), D: initWeights(d, round) }, emaG: initWeights(g, round + 1),
    adam: { G: { m: filled(g.total, 0.01), v: filled(g.total, 0.001) }, D: { m: filled(d.total, 0.02), v: filled(d.total, 0.002) } },
  };
}

describe('a checkpoint written in the background', () => {
  it('holds the bytes of one written at once, of the state as it was when taken, and leaves no temporary file', async () => {
    const dir = new RunDir(tempDir('gan-ddp-ckpt-'));
    const s = state(3);
    const expected = encodeCheckpoint(s);
    await dir.saveCheckpointInBackground(s);
    // Training goes on and moves the state while the file is written.
    s.weights.G.fill(9);
    s.adam.D.v.fill(9);
    await dir.checkpointWritten();
    expect(readFileSync(dir.checkpointFile).equals(expected)).toBe(true);
    expect(readdirSync(dir.path).filter((f) => f.includes('.tmp-'))).toEqual([]);
  });

  it('one at a time: the next (background or not) waits for it, and the file ends as the last one taken', async () => {
    const dir = new RunDir(tempDir('gan-ddp-ckpt-'));
    for (let round = 1; round <= 4; round++) await dir.saveCheckpointInBackground(state(round));
    await dir.saveCheckpoint(state(5));
    expect(readFileSync(dir.checkpointFile).equals(encodeCheckpoint(state(5)))).toBe(true);
    await dir.saveCheckpointInBackground(state(6));
    await dir.checkpointWritten();
    expect(readFileSync(dir.checkpointFile).equals(encodeCheckpoint(state(6)))).toBe(true);
  });

  it('fails the next checkpoint call, naming the file, and a state holding NaN is refused before anything is written', async () => {
    const path = tempDir('gan-ddp-ckpt-');
    const dir = new RunDir(path);
    await dir.saveCheckpoint(state(1));
    const bad = state(2);
    bad.adam.G.m[3] = NaN;
    await expect(dir.saveCheckpointInBackground(bad)).rejects.toThrow(/E_CHECKPOINT|NaN or Inf/);
    expect(readFileSync(dir.checkpointFile).equals(encodeCheckpoint(state(1)))).toBe(true);
    // The directory vanishes under the run: the write that was started fails, and says which file.
    const gone = new RunDir(join(path, 'gone'));
    mkdirSync(gone.path);
    rmSync(gone.path, { recursive: true });
    await gone.saveCheckpointInBackground(state(3));
    await expect(gone.checkpointWritten()).rejects.toThrow(/checkpoint\.bin/);
    await expect(gone.checkpointWritten()).resolves.toBeUndefined();
  });
});
