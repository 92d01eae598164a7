/**
 * What a checkpoint costs the round loop (part of `npm run bench`): the seed model's whole state
 * (weights, both Adam states and G's moving average, as the gan defaults keep) written into a
 * temporary run directory, at once (RunDir.saveCheckpoint: copy, digest, write, fsync, rename)
 * and in the background as the round loop takes it (saveCheckpointInBackground: the copy before
 * it returns, the rest while training goes on). "Held" is how long the caller waits; "written"
 * is when the file is in place.
 */
import { mkdtempSync, rmSync, statSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { TrainState } from '../coordinator/checkpoint.js';
import { defaultTrainConfig } from '../coordinator/config.js';
import { ModelState } from '../coordinator/model-state.js';
import { RunDir } from '../coordinator/run-dir.js';
import { netLayout } from '../shared/compute/model.js';
import { median } from './stats.js';

export interface CheckpointCost {
  bytes: number;
  repeats: number;
  /** Median milliseconds. */
  atOnce: { heldMs: number };
  background: { heldMs: number; writtenMs: number };
}

export async function checkpointCost(repeats = 7): Promise<CheckpointCost> {
  const config = { ...defaultTrainConfig, emaDecay: 0.999 };
  // As Coordinator.state() puts it together, for a fresh run over the 60,000 training digits.
  const model = ModelState.fresh(config, { G: netLayout(config.model, 'G'), D: netLayout(config.model, 'D') });
  const s: TrainState = { config, round: 1, epoch: 0, epochUses: new Uint8Array(60_000), ...model.checkpointParts() };
  const path = mkdtempSync(join(tmpdir(), 'gan-bench-checkpoint-'));
  const dir = new RunDir(path);
  const atOnce: number[] = [];
  const held: number[] = [];
  const written: number[] = [];
  let bytes = 0;
  try {
    // One of each first: the page cache and the reused snapshot buffer warm up.
    await dir.saveCheckpoint(s);
    await dir.saveCheckpointInBackground(s);
    await dir.checkpointWritten();
    for (let i = 0; i < repeats; i++) {
      let t = performance.now();
      await dir.saveCheckpoint(s);
      atOnce.push(performance.now() - t);
      t = performance.now();
      await dir.saveCheckpointInBackground(s);
      held.push(performance.now() - t);
      await dir.checkpointWritten();
      written.push(performance.now() - t);
    }
    bytes = statSync(dir.checkpointFile).size;
  } finally {
    dir.close();
    rmSync(path, { recursive: true, force: true });
  }
  return { bytes, repeats, atOnce: { heldMs: median(atOnce) }, background: { heldMs: median(held), writtenMs: median(written) } };
}
