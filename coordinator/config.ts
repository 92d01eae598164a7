/** The coordinator's effective configuration: saved to config.json and inside every checkpoint. */
import { type DLabel, type ModelConfig, type ModelKind, defaultModelConfig } from '../shared/model.js';

export interface TrainConfig {
  model: ModelConfig;
  /** Seeds data order, noise, dropout and initial weights. */
  seed: number;
  /** Target number of workers; the run starts when this many have joined, and accepts no more. */
  workers: number;
  /** Training continues while at least this many workers are live. */
  minWorkers: number;
  /** Samples per worker per round (as in DDP); the global batch is this times the live workers. */
  batchSize: number;
  epochs: number;
  /** Stop after this many rounds in all (0: no limit; the epochs decide). */
  maxRounds: number;
  lrD: number;
  lrG: number;
  beta1: number;
  beta2: number;
  epsilon: number;
  /** IDX directory, or null for the embedded digits. */
  data: string | null;
  /** Checkpoint every this many rounds (0: only at the end and on SIGINT/SIGTERM). */
  checkpointEvery: number;
  /** A worker that has not answered a phase within this many ms is dropped. */
  roundTimeoutMs: number;
  /** Workers send gradients as 16-bit floats. */
  fp16: boolean;
  /** Evaluate the generator every this many epochs (0: never). */
  evalEvery: number;
  /**
   * Decay of the exponential moving average of G's weights that sample grids, evaluation and
   * `generate` use (0: no average; they use G's latest weights).
   */
  emaDecay: number;
}

export const defaultTrainConfig: TrainConfig = {
  model: defaultModelConfig,
  seed: 1,
  workers: 4,
  minWorkers: 1,
  batchSize: 100,
  epochs: 30,
  maxRounds: 0,
  lrD: 2e-4,
  lrG: 2e-4,
  beta1: 0.5,
  beta2: 0.999,
  epsilon: 1e-8,
  data: null,
  checkpointEvery: 50,
  roundTimeoutMs: 60_000,
  fp16: false,
  evalEvery: 0,
  emaDecay: 0.999,
};

/**
 * What each model kind trains with when the flag is not given (`coordinator --model KIND` alone).
 * The seed's settings (defaultTrainConfig: batch 100, 2e-4 for both nets, 30 epochs) stay the base
 * for everything else; these were chosen by measurement (README, "Judging a GAN").
 */
export interface KindDefaults {
  epochs: number;
  batchSize: number;
  lrD: number;
  lrG: number;
  beta1: number;
  beta2: number;
  emaDecay: number;
  dropout: number;
  labelSmoothing: number;
  /** cgan only: how D sees the label. */
  dLabel?: DLabel;
}

export const kindDefaults: Record<ModelKind, KindDefaults> = {
  gan: { epochs: 30, batchSize: 50, lrD: 1e-3, lrG: 2e-3, beta1: 0.5, beta2: 0.999, emaDecay: 0.999, dropout: 0.3, labelSmoothing: 0 },
  cgan: { epochs: 30, batchSize: 50, lrD: 1e-3, lrG: 2e-3, beta1: 0.5, beta2: 0.999, emaDecay: 0.999, dropout: 0.3, labelSmoothing: 0, dLabel: 'projection' },
  acgan: { epochs: 30, batchSize: 50, lrD: 1e-3, lrG: 2e-3, beta1: 0.5, beta2: 0.999, emaDecay: 0.999, dropout: 0.3, labelSmoothing: 0 },
};
