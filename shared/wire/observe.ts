/**
 * What observers (the dashboard page) receive: a snapshot of every run they watch, then deltas.
 * Both are JSON inside an Update frame; sample grids travel as PNG bytes in Grid frames. The live
 * coordinator and `dashboard RUN_DIR...` (finished runs read from disk) send the same shapes, so
 * the page has one data path.
 *
 * Observers are read-only: after their handshake (Observe, with the token proof when the run has a
 * token) they may send nothing; updates are throttled, and an observer that does not read loses
 * updates instead of slowing a round.
 */

/** The per-round series, as columns (uPlot's layout): index i of every array is one round. */
export interface MetricColumns {
  round: number[];
  epoch: number[];
  workers: number[];
  d_loss: number[];
  g_loss: number[];
  d_real: number[];
  d_fake: number[];
  samples_per_s: number[];
  round_ms: number[];
  compute_ms: number[];
  transfer_ms: number[];
  reduce_ms: number[];
}

export const METRIC_COLUMNS: (keyof MetricColumns)[] = [
  'round', 'epoch', 'workers', 'd_loss', 'g_loss', 'd_real', 'd_fake', 'samples_per_s', 'round_ms', 'compute_ms', 'transfer_ms', 'reduce_ms',
];

export type RunState = 'waiting' | 'training' | 'finished' | 'stopped' | 'failed';

export interface RunStatus {
  state: RunState;
  round: number;
  /** Epochs completed. */
  epoch: number;
  epochs: number;
  totalRounds: number;
  roundsPerEpoch: number;
  /** Seconds to the planned end at the recent pace (null before the first rounds or when finished). */
  etaS: number | null;
  /** Unix ms when the run (this process) started. */
  startedAt: number;
  /** Seconds since then (for finished runs: how long the run took). */
  elapsedS: number;
  /** Why it stopped or failed, with the error code when there is one. */
  detail?: string;
}

/** One finished epoch's accounting: every sample must be used exactly once. */
export interface EpochLine {
  epoch: number;
  samples: number;
  usedOnce: number;
  missing: number;
  duplicated: number;
  rounds: number;
}

export interface EvalLine {
  epoch: number;
  round: number;
  fd: number;
  fdFloor: number | null;
  classifierScore: number;
  coverage: number;
  klUniform?: number;
  conditionalAccuracy?: number;
}

export type WorkerRowState = 'joining' | 'live' | 'dropped' | 'left';

export interface WorkerRow {
  id: number;
  host: string;
  backend: string;
  state: WorkerRowState;
  /** Unix ms. */
  joinedAt: number;
  leftAt?: number;
  /** The error code it was dropped with (E_TIMEOUT, ...), or the close code when it left. */
  reason?: string;
  /** Its last reported compute time for a phase, ms. */
  lastComputeMs?: number;
  /** Its own samples per second over its last round (samples / round time). */
  samplesPerS?: number;
  bytesIn: number;
  bytesOut: number;
  /** Phases it computed. */
  phases: number;
}

export type RunEventKind = 'join' | 'drop' | 'leave' | 'checkpoint' | 'resume' | 'epoch' | 'eval' | 'retry' | 'stop' | 'start';

export interface RunEvent {
  /** Unix ms. */
  t: number;
  kind: RunEventKind;
  text: string;
  worker?: number;
  /** Error code for drops (E_TIMEOUT, E_AUTH, ...). */
  code?: string;
}

/** Everything the page shows of one run. */
export interface RunData {
  id: number;
  /** The run directory's name. */
  name: string;
  live: boolean;
  /** The effective configuration (config.json). */
  config: Record<string, unknown>;
  globalBatch: number;
  conditional: boolean;
  status: RunStatus;
  metrics: MetricColumns;
  epochs: EpochLine[];
  evals: EvalLine[];
  /** Names of the sample grids, in order (epoch-001.png, ..., final.png). */
  grids: string[];
  workers: WorkerRow[];
  events: RunEvent[];
}

export interface Snapshot {
  type: 'snapshot';
  runs: RunData[];
}

/** What changed in one run since the observer's last update: new rows appended, tables replaced. */
export interface Delta extends Pick<RunData, 'status' | 'metrics' | 'epochs' | 'evals' | 'grids' | 'workers' | 'events'> {
  type: 'delta';
  run: number;
}

export type ObserverUpdate = Snapshot | Delta;
