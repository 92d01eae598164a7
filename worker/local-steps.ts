/**
 * A worker's local steps in a low-communication run (--sync-every H > 1): from the weights the
 * coordinator synced, H iterations of D then G on its task's batches with its own Adam, then the
 * change of each net's weights since the sync (synced - local), which the coordinator averages in
 * worker-id order and steps with its outer optimiser as it would a gradient.
 *
 * Invariants:
 * - What a worker computes depends only on the synced weights, the sample ids and the seed: its
 *   Adam starts fresh at every sync (its moments are not carried between syncs), so two runs with
 *   the same membership give the same bits, and a run resumed at a sync point continues as the
 *   run that went through would have.
 * - The model holds the synced weights again when the steps are done: the weights a task names
 *   are the ones the worker holds.
 */
import { buildBatch, type SampleSource } from '../shared/compute/batch.js';
import type { GanModel } from '../shared/compute/gan.js';
import type { Net } from '../shared/compute/model.js';
import { adamState, adamStep } from '../shared/numerics/adam.js';
import type { LocalSteps } from '../shared/wire/protocol.js';

/** The changes of both nets' weights over one sync's local steps, and the steps' mean statistics. */
export interface LocalResult {
  delta: Record<Net, Float32Array>;
  /** Means over the steps, as one phase's report would give them (D: loss, D(x), D(G(z)); G: loss, D(G(z))). */
  d: { loss: number; dReal: number; dFake: number };
  g: { loss: number; dFake: number };
  steps: number;
}

/** Back to the event loop for a moment: the socket answers the coordinator's pings between steps. */
const breathe = (): Promise<void> => new Promise((resolve) => ((globalThis as { setImmediate?: (f: () => void) => void }).setImmediate ?? ((f: () => void) => setTimeout(f, 0)))(resolve));

export async function localSteps(model: GanModel, src: SampleSource, key: { seed: number; epoch: number }, ids: Uint32Array, l: LocalSteps): Promise<LocalResult> {
  const synced = { D: model.weightsOf('D'), G: model.weightsOf('G') };
  const w = { D: synced.D.slice(), G: synced.G.slice() };
  const adam = { D: adamState(w.D.length), G: adamState(w.G.length) };
  const rates = { D: l.lrD, G: l.lrG };
  const mean = { dLoss: 0, dReal: 0, dFake: 0, gLoss: 0, gFake: 0 };
  let steps = 0;
  try {
    for (let start = 0; start < ids.length; start += l.batch) {
      const batch = ids.subarray(start, Math.min(ids.length, start + l.batch));
      for (const net of ['D', 'G'] as const) {
        const b = buildBatch(model.cfg, { seed: key.seed, epoch: key.epoch, phase: net }, batch, src);
        const r = net === 'D' ? model.dStep(b) : model.gStep(b);
        adamStep(w[net], r.grads, adam[net], { lr: rates[net], beta1: l.beta1, beta2: l.beta2, epsilon: l.epsilon });
        model.setWeights(net, w[net]);
        if (net === 'D') {
          mean.dLoss += r.loss;
          mean.dReal += r.dReal;
          mean.dFake += r.dFake;
        } else {
          mean.gLoss += r.loss;
          mean.gFake += r.dFake;
        }
      }
      steps++;
      // A sync may take minutes; a worker that answered no ping for three heartbeats would be dropped.
      // Its messages wait in order meanwhile (the worker handles one at a time).
      await breathe();
    }
  } finally {
    model.setWeights('D', synced.D);
    model.setWeights('G', synced.G);
  }
  // The change, synced - local, is what the outer step takes as its gradient; into `w` (no more copies).
  for (const net of ['D', 'G'] as const) {
    const s = synced[net];
    const x = w[net];
    for (let i = 0; i < x.length; i++) x[i] = s[i]! - x[i]!;
  }
  const k = Math.max(1, steps);
  return { delta: w, d: { loss: mean.dLoss / k, dReal: mean.dReal / k, dFake: mean.dFake / k }, g: { loss: mean.gLoss / k, dFake: mean.gFake / k }, steps };
}
