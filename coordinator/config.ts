/** The coordinator's effective configuration: saved to config.json and inside every checkpoint. */
import { type ModelConfig, type ModelKind, defaultModelConfig } from '../shared/compute/model.js';
import type { WirePrecision } from '../shared/numerics/wire-format.js';
import type { LocalSteps } from '../shared/wire/protocol.js';

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
  /** Precision of gradients, partial sums and weights on the wire (shared/numerics/wire-format.ts). */
  wire: WirePrecision;
  /** Evaluate the generator every this many epochs (0: never). */
  evalEvery: number;
  /**
   * Decay of the exponential moving average of G's weights that sample grids, evaluation and
   * `generate` use (0: no average; they use G's latest weights).
   */
  emaDecay: number;
  /**
   * Local steps per sync (1: synchronous data-parallel training, every round one step of both
   * nets). Above 1, a round is a sync: each worker takes this many iterations of D and G on its
   * own batches with its own Adam, and the coordinator steps the average of their changes of
   * weights with the outer optimiser (outerLr, outerMomentum; coordinator/optimizer.ts).
   */
  syncEvery: number;
  outerLr: number;
  outerMomentum: number;
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
  wire: 'fp32',
  evalEvery: 0,
  emaDecay: 0.999,
  syncEvery: 1,
  // Plain averaging of the workers' weights: DiLoCo's Nesterov (0.7, 0.9) made the cgan collapse
  // at H = 16 where averaging matched synchronous training (docs/low-communication.md).
  outerLr: 1,
  outerMomentum: 0,
};

/** Most local steps per sync: a sync's tasks name every sample of its steps. */
export const MAX_SYNC_EVERY = 1024;

/** What is wrong with a run's low-communication settings, or null. */
export function syncProblem(c: Pick<TrainConfig, 'syncEvery' | 'outerLr' | 'outerMomentum'>): string | null {
  if (!Number.isSafeInteger(c.syncEvery) || c.syncEvery < 1 || c.syncEvery > MAX_SYNC_EVERY) return `syncEvery ${JSON.stringify(c.syncEvery)} is not an integer from 1 to ${MAX_SYNC_EVERY}`;
  if (typeof c.outerLr !== 'number' || !(c.outerLr > 0 && c.outerLr <= 10)) return `outerLr ${JSON.stringify(c.outerLr)} is not in (0, 10]`;
  if (typeof c.outerMomentum !== 'number' || !(c.outerMomentum >= 0 && c.outerMomentum < 1)) return `outerMomentum ${JSON.stringify(c.outerMomentum)} is not in [0, 1)`;
  return null;
}

/** What a low-communication run's Welcome tells every worker of its local steps (undefined: synchronous). */
export function localSteps(c: TrainConfig): LocalSteps | undefined {
  if (c.syncEvery <= 1) return undefined;
  return { steps: c.syncEvery, batch: c.batchSize, lrD: c.lrD, lrG: c.lrG, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon };
}

/**
 * The discriminator of every new cgan run: it sees the label through a projection (Miyato &
 * Koyama 2018) and is matching-aware (Reed et al. 2016: real digits with a wrong label count as
 * fake). Runs of older builds (the label concatenated to D's input) keep theirs in their checkpoint.
 */
export const CGAN_D: Pick<ModelConfig, 'dLabel' | 'matchingAware'> = { dLabel: 'projection', matchingAware: true };

/**
 * What a run trains with when the flag is not given: its model kind's tuned defaults (`coordinator
 * --model KIND` alone) or, with `--recipe seed`, the seed's settings for every kind. Everything
 * else comes from defaultTrainConfig.
 */
export interface KindDefaults {
  epochs: number;
  /** Per worker. */
  batchSize: number;
  lrD: number;
  lrG: number;
  emaDecay: number;
  dropout: number;
  /** Weight of D's R1 penalty (ModelConfig.r1; 0: none). */
  r1: number;
}

/**
 * Tuned per kind by measurement with 4 workers on the embedded digits (README, "Defaults per model
 * kind"): a batch of 50 per worker, D at 5e-4 or 1e-3 and G at twice D's rate, and the moving
 * average of G's weights.
 */
export const kindDefaults: Record<ModelKind, KindDefaults> = {
  gan: { epochs: 100, batchSize: 50, lrD: 1e-3, lrG: 1e-3, emaDecay: 0.999, dropout: 0, r1: 10 },
  cgan: { epochs: 15, batchSize: 50, lrD: 1e-3, lrG: 2e-3, emaDecay: 0.999, dropout: 0, r1: 0 },
  acgan: { epochs: 40, batchSize: 50, lrD: 5e-4, lrG: 1e-3, emaDecay: 0.999, dropout: 0.3, r1: 0 },
};

/** The seed's own settings: batch 100, Adam at 2e-4 for both nets, 30 epochs, dropout 0.3, no moving average, no penalty. */
export const seedRecipe: KindDefaults = { epochs: 30, batchSize: 100, lrD: 2e-4, lrG: 2e-4, emaDecay: 0, dropout: 0.3, r1: 0 };

/**
 * The model a new run of `kind` trains: `base` (the seed's network unless flags changed it) with
 * D's dropout and R1 weight; a cgan gets CGAN_D. The R1 field is absent when off, so a run without
 * it keeps the model signature it always had.
 */
export function kindModel(kind: ModelKind, d: { dropout: number; r1: number }, base: ModelConfig = defaultModelConfig): ModelConfig {
  return { ...base, kind, dropout: d.dropout, ...(kind === 'cgan' ? CGAN_D : {}), ...(d.r1 > 0 ? { r1: d.r1 } : {}) };
}

export const RECIPES = ['tuned', 'seed'] as const;
export type Recipe = (typeof RECIPES)[number];

export function recipeDefaults(recipe: Recipe, kind: ModelKind): KindDefaults {
  return recipe === 'seed' ? seedRecipe : kindDefaults[kind];
}
