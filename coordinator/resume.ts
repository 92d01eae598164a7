/** Continuing a run from its directory: the checkpoint checked against this run, and the logs cut back to it. */
import type { Dataset } from '../shared/data/mnist.js';
import { type Net, type NetLayout, modelSignature } from '../shared/compute/model.js';
import { GanError } from '../shared/wire/errors.js';
import type { TrainConfig } from './config.js';
import { ModelState } from './model-state.js';
import type { EpochAccount, RunDir } from './run-dir.js';
import { EpochPlan } from './sharding.js';

export interface Resumed {
  model: ModelState;
  round: number;
  epoch: number;
  /** The epoch in progress (null at an epoch boundary). */
  plan: EpochPlan | null;
  epochLog: EpochAccount[];
  /** The round the current epoch began with. */
  epochStartRound: number;
}

/**
 * Load `dir`'s checkpoint for a run of `cfg` on `data`: refused (E_CHECKPOINT) when it is for
 * another model, seed or data set. Rounds logged after the checkpoint were lost with the process:
 * they are cut from the logs, and will run again.
 */
export function resumeRun(dir: RunDir, cfg: TrainConfig, layouts: Record<Net, NetLayout>, data: Dataset, log: (line: string) => void): Resumed {
  const s = dir.loadCheckpoint();
  const sig = modelSignature(s.config.model);
  const signature = modelSignature(cfg.model);
  if (sig !== signature) throw new GanError('E_CHECKPOINT', `checkpoint in ${dir.path} is for model ${sig}, this run is ${signature}`);
  if (s.config.seed !== cfg.seed) throw new GanError('E_CHECKPOINT', `checkpoint seed ${s.config.seed} differs from --seed ${cfg.seed}`);
  if (s.epochUses.length !== data.n) throw new GanError('E_CHECKPOINT', `checkpoint was made on ${s.epochUses.length} samples, the data has ${data.n}`);
  const model = ModelState.restore(cfg, layouts, s);
  if (model.emaG && !s.emaG) log(`the checkpoint kept no moving average of G: starting one (decay ${cfg.emaDecay}) from the current weights`);
  const plan = s.epochUses.some((u) => u > 0) ? new EpochPlan(data.n, cfg.seed, s.epoch, s.epochUses) : null;
  dir.truncateForResume(s.round, s.epoch);
  const epochLog = dir.epochs();
  log(`resumed ${dir.path} at round ${s.round}, epoch ${s.epoch + 1} (${plan?.used ?? 0}/${data.n} samples of the epoch used)`);
  // Rounds are numbered across epochs, so the current epoch began after all completed ones.
  return { model, round: s.round, epoch: s.epoch, plan, epochLog, epochStartRound: epochLog.reduce((a, e) => a + e.rounds, 0) };
}
