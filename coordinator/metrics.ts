/** One round's metrics line (metrics.jsonl), assembled from what the round loop measured. */

export interface RoundMetrics {
  round: number;
  epoch: number;
  /** Workers whose D gradient was applied. */
  workers: number;
  /** Samples used this round (their D gradients were applied). */
  samples: number;
  /** Per-worker batch x live workers at the end of the round. */
  global_batch: number;
  d_loss: number;
  g_loss: number;
  /** Mean D(x) on the real rows. */
  d_real: number;
  /** Mean D(G(z)) on the generated rows of the D phase. */
  d_fake: number;
  samples_per_s: number;
  round_ms: number;
  /** Slowest worker's compute, D phase plus G phase. */
  compute_ms: number;
  /** What the round cost beyond compute and the coordinator's own work: the network and waiting. */
  transfer_ms: number;
  /** The coordinator's reduce, Adam and packing of the new weights. */
  reduce_ms: number;
  bytes_in: number;
  bytes_out: number;
  dropped: number[];
  joined: number[];
  epoch_used: number;
  epoch_samples: number;
}

/** What one worker reported with a phase's gradient. */
export interface PhaseReport {
  count: number;
  loss: number;
  dReal: number;
  dFake: number;
  computeMs: number;
}

export interface RoundInputs {
  round: number;
  epoch: number;
  /** Reports of the D phase and of the G phase, of the workers whose gradients were applied. */
  d: PhaseReport[];
  g: PhaseReport[];
  liveWorkers: number;
  batchSize: number;
  roundMs: number;
  reduceMs: number;
  bytesIn: number;
  bytesOut: number;
  dropped: number[];
  joined: number[];
  epochUsed: number;
  epochSamples: number;
}

/** Mean of `f` over the reports, weighted by sample count (NaN with no samples). */
function weightedMean(rs: PhaseReport[], f: (r: PhaseReport) => number): number {
  const n = rs.reduce((a, r) => a + r.count, 0);
  return n ? rs.reduce((a, r) => a + f(r) * r.count, 0) / n : NaN;
}

export function roundMetrics(x: RoundInputs): RoundMetrics {
  const samples = x.d.reduce((a, r) => a + r.count, 0);
  const slowest = (rs: PhaseReport[]) => (rs.length ? Math.max(...rs.map((r) => r.computeMs)) : 0);
  const computeMs = slowest(x.d) + slowest(x.g);
  return {
    round: x.round,
    epoch: x.epoch,
    workers: x.d.length,
    samples,
    global_batch: x.liveWorkers * x.batchSize,
    d_loss: weightedMean(x.d, (r) => r.loss),
    g_loss: weightedMean(x.g, (r) => r.loss),
    d_real: weightedMean(x.d, (r) => r.dReal),
    d_fake: weightedMean(x.d, (r) => r.dFake),
    samples_per_s: samples / (x.roundMs / 1000),
    round_ms: x.roundMs,
    compute_ms: computeMs,
    transfer_ms: Math.max(0, x.roundMs - computeMs - x.reduceMs),
    reduce_ms: x.reduceMs,
    bytes_in: x.bytesIn,
    bytes_out: x.bytesOut,
    dropped: x.dropped,
    joined: x.joined,
    epoch_used: x.epochUsed,
    epoch_samples: x.epochSamples,
  };
}
