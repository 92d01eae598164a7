/**
 * What the coordinator is the authority for: both nets' weights and versions, both Adam states,
 * the moving average of G, the view of the weights the workers hold, and the buffers a phase's
 * step is written into before it commits.
 *
 * The master weights, moments and average are float32 whatever the wire. On the fp32 wire the
 * workers' view is the master weights themselves; on a 16- or 8-bit wire it is what the wire
 * delivered (shared/numerics/wire-format.ts), kept here so that whole weights (a joiner, a repair,
 * the shared region) are the same bits the workers that followed every chunk hold.
 */
import { Kind, encode } from '../shared/wire/codec.js';
import { wholeView } from '../shared/numerics/wire-format.js';
import { type Net, type NetLayout, initWeights } from '../shared/compute/model.js';
import type { TrainState } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { type AdamState, type ChunkStep, adamChunkStep, adamHyper, adamState, emaUpdate, outerChunkStep } from './optimizer.js';

/** Weights and moments of one net, as a phase's step writes them. */
export interface NetBuffers {
  w: Float32Array;
  m: Float32Array;
  v: Float32Array;
}

/** Whether weights at `version` are the seeded initialisation of `layout`, bit for bit. */
function isSeededInit(layout: NetLayout, seed: number, version: number, w: Float32Array): boolean {
  if (version !== 0) return false;
  const init = initWeights(layout, seed);
  return init.length === w.length && init.every((x, i) => Object.is(x, w[i]));
}

export class ModelState {
  weights: Record<Net, Float32Array>;
  adam: Record<Net, AdamState>;
  /** Moving average of G's weights (null with --ema 0): see `emaG`. */
  private average: Float32Array | null;
  /** G committed a step the average has not taken in yet (flushAverage). */
  private averagePending = false;
  versions: { D: number; G: number };
  /** Where a phase's Adam step writes the new weights and moments; swapped in when it commits. */
  readonly next: Record<Net, NetBuffers>;
  /** The weights every worker holds (the master weights on the fp32 wire), and where a phase writes the next ones. */
  readonly view: Record<Net, Float32Array>;
  readonly nextView: Record<Net, Float32Array>;
  /** Scratch for a phase's running sums. */
  readonly acc: Record<Net, Float32Array>;
  private frames: Record<Net, Uint8Array | null> = { D: null, G: null };
  /** Version 0 of each net is the seeded initialisation, bit for bit (a checkpoint's is checked), so workers can derive it. */
  readonly seeded: Record<Net, boolean>;

  private constructor(private readonly cfg: TrainConfig, layouts: Record<Net, NetLayout>, s: Pick<ModelState, 'weights' | 'adam' | 'versions' | 'seeded'> & { emaG: Float32Array | null }) {
    this.weights = s.weights;
    this.adam = s.adam;
    this.average = s.emaG;
    this.versions = s.versions;
    this.seeded = s.seeded;
    const buffers = (n: number): NetBuffers => ({ w: new Float32Array(n), m: new Float32Array(n), v: new Float32Array(n) });
    this.next = { D: buffers(layouts.D.total), G: buffers(layouts.G.total) };
    this.acc = { D: new Float32Array(layouts.D.total), G: new Float32Array(layouts.G.total) };
    this.view = { D: wholeView(cfg.wire, this.weights.D), G: wholeView(cfg.wire, this.weights.G) };
    this.nextView = cfg.wire === 'fp32' ? { D: this.next.D.w, G: this.next.G.w } : { D: new Float32Array(layouts.D.total), G: new Float32Array(layouts.G.total) };
  }

  /** A new run: seeded initial weights, fresh Adam states, the average starting at G's weights. */
  static fresh(cfg: TrainConfig, layouts: Record<Net, NetLayout>): ModelState {
    const weights = { G: initWeights(layouts.G, cfg.seed), D: initWeights(layouts.D, cfg.seed) };
    return new ModelState(cfg, layouts, {
      weights,
      adam: { G: adamState(layouts.G.total), D: adamState(layouts.D.total) },
      emaG: cfg.emaDecay > 0 ? weights.G.slice() : null,
      versions: { D: 0, G: 0 },
      seeded: { D: true, G: true },
    });
  }

  /** From a checkpoint; a run that kept no average but wants one now starts it from G's weights. */
  static restore(cfg: TrainConfig, layouts: Record<Net, NetLayout>, s: TrainState): ModelState {
    return new ModelState(cfg, layouts, {
      weights: s.weights,
      adam: { G: { ...s.adam.G, t: s.adamSteps.G }, D: { ...s.adam.D, t: s.adamSteps.D } },
      emaG: cfg.emaDecay > 0 ? (s.emaG ?? s.weights.G.slice()) : null,
      versions: { ...s.versions },
      // A checkpoint at version 0 holds the seeded initialisation unless someone changed it: checked, bit for bit.
      seeded: { D: isSeededInit(layouts.D, cfg.seed, s.versions.D, s.weights.D), G: isSeededInit(layouts.G, cfg.seed, s.versions.G, s.weights.G) },
    });
  }

  /**
   * The next step of `net`: Adam's next one, or with --sync-every above 1 the outer optimiser's,
   * whose momentum lives in the first moment (`adam` then counts outer steps).
   */
  nextStep(net: Net): ChunkStep {
    const c = this.cfg;
    if (c.syncEvery > 1) return outerChunkStep({ lr: c.outerLr, momentum: c.outerMomentum });
    return adamChunkStep(adamHyper(this.adam[net].t + 1, { lr: net === 'D' ? c.lrD : c.lrG, beta1: c.beta1, beta2: c.beta2, epsilon: c.epsilon }));
  }

  /** The current weights and moments of `net` (read only during a phase). */
  current(net: Net): NetBuffers {
    return { w: this.weights[net], m: this.adam[net].m, v: this.adam[net].v };
  }

  /** A phase's step took: the next weights and moments become the current ones. */
  commit(net: Net): void {
    if (net === 'G') this.flushAverage();
    const next = this.next[net];
    const adam = this.adam[net];
    this.next[net] = { w: this.weights[net], m: adam.m, v: adam.v };
    this.weights[net] = next.w;
    adam.m = next.m;
    adam.v = next.v;
    adam.t++;
    if (this.cfg.wire === 'fp32') {
      this.view[net] = this.weights[net];
      this.nextView[net] = this.next[net].w;
    } else {
      [this.view[net], this.nextView[net]] = [this.nextView[net], this.view[net]];
    }
    this.versions[net]++;
    this.frames[net] = null;
    // Workers never see the average: it takes this step in later (flushAverage), off the path to the next task.
    if (net === 'G' && this.average) this.averagePending = true;
  }

  /** Moving average of G's weights (null with --ema 0), up to date with every committed G step. */
  get emaG(): Float32Array | null {
    this.flushAverage();
    return this.average;
  }

  /** Take G's last committed step into the moving average, if it has not been yet (the round loop calls it once the next tasks are out). */
  flushAverage(): void {
    if (!this.averagePending || !this.average) return;
    this.averagePending = false;
    // A sync of H local steps takes the decay of H steps once the warm-up (counted in syncs) allows it.
    emaUpdate(this.average, this.weights.G, this.cfg.emaDecay ** this.cfg.syncEvery, this.adam.G.t);
  }

  /**
   * One net's whole current weights, as the workers hold them, as a frame packed once per version.
   * Version 0 is the seeded initialisation every worker derives itself (Weights.seeded): over a
   * slow link a joiner of a new run starts without a whole model crossing it.
   */
  weightsFrame(net: Net): Uint8Array {
    this.frames[net] ??= this.versions[net] === 0 && this.seeded[net]
      ? encode({ k: Kind.Weights, net, version: 0, seeded: true, data: new Float32Array(0) })
      : encode({ k: Kind.Weights, net, version: this.versions[net], data: this.view[net] });
    return this.frames[net];
  }

  /** The generator weights to sample from: the moving average when kept, else the latest. */
  sampleWeights(): Float32Array {
    return this.emaG ?? this.weights.G;
  }

  /** The parts of a checkpoint this state holds. */
  checkpointParts(): Pick<TrainState, 'versions' | 'adamSteps' | 'weights' | 'emaG' | 'adam'> {
    return {
      versions: { ...this.versions },
      adamSteps: { D: this.adam.D.t, G: this.adam.G.t },
      weights: this.weights,
      emaG: this.emaG ?? undefined,
      adam: { G: { m: this.adam.G.m, v: this.adam.G.v }, D: { m: this.adam.D.m, v: this.adam.D.v } },
    };
  }
}
