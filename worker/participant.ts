/**
 * A worker's part in the rounds: it holds the weights and the shard, computes the gradient of the
 * phase it is asked for, and takes its place in the phase's reduction (sending its gradient to the
 * coordinator, or folding it into the partial sum of a relay chain), then takes in the new weights.
 * It never changes weights on its own authority: weights only come from the coordinator (directly
 * or relayed), and it computes only on the versions a task names, waiting for them while they are
 * still on their way and refusing a task that names older ones.
 *
 * Transport-free: frames go out through the `send` functions, so Node and browser workers share it.
 */
import { buildBatch, type SampleSource } from '../shared/compute/batch.js';
import {
  COORDINATOR, type ChunkMsg, Kind, type Message, NOBODY, type ReduceMsg, type ShardMsg, type TaskMsg, type WeightsChunkMsg, encode,
} from '../shared/wire/codec.js';
import { GanError } from '../shared/wire/errors.js';
import { chunkAt, chunkCount, chunkRange } from '../shared/numerics/chunks.js';
import { foldInto } from '../shared/numerics/fold.js';
import { allFinite } from '../shared/numerics/finite.js';
import { GanModel } from '../shared/compute/gan.js';
import { fromHalf, toHalf } from '../shared/numerics/half.js';
import {
  type WirePrecision, type WireValues, WireScratch, chunkScales, decodeValues, decodeWeights, encodeValues, isWirePrecision, quantizeWithFeedback,
} from '../shared/numerics/wire-format.js';
import type { ModelConfig, Net } from '../shared/compute/model.js';
import { digitBytes } from '../shared/data/digits.js';
import type { GradientSlot, WeightsRegion } from '../shared/wire/same-host.js';

export interface ParticipantOptions {
  model: ModelConfig;
  seed: number;
  /** Precision of gradients, partial sums and weights in frames (Welcome.wire). */
  wire: WirePrecision;
  /** A frame to the coordinator. */
  toCoordinator(frame: Uint8Array): void;
  /** A frame to a peer (dialing `url` when there is no link yet); absent for workers that do not relay. */
  toPeer?(peer: number, url: string | null, frame: Uint8Array): void;
  /** The coordinator's shared regions, when this worker proved it maps them (shared/wire/same-host.ts). */
  shared?: { region: WeightsRegion; slot: GradientSlot } | null;
  /** Told after each phase this worker computed (a page's status line). */
  onComputed?: (c: { round: number; phase: Net; count: number; computeMs: number }) => void;
}

class ShardStore implements SampleSource {
  private images = new Map<number, Uint8Array>();
  private labels = new Map<number, number>();
  add(m: ShardMsg): void {
    if (m.reset) {
      this.images.clear();
      this.labels.clear();
    }
    m.ids.forEach((id, i) => {
      this.images.set(id, digitBytes(m.images, i));
      this.labels.set(id, m.labels[i]!);
    });
  }
  image(id: number): Uint8Array {
    const img = this.images.get(id);
    if (!img) throw new GanError('E_UNEXPECTED', `task names sample ${id}, which this worker was not sent`);
    return img;
  }
  label(id: number): number {
    return this.labels.get(id) ?? 0;
  }
}

/** New weights arriving in chunks: applied when the last one is in. */
interface Staging {
  version: number;
  attempt: number;
  buf: Float32Array;
  got: Uint8Array;
  missing: number;
}

/** A computed phase, held until the next task: a retried reduction folds it again without recomputing. */
interface Held {
  round: number;
  phase: Net;
  count: number;
  /** Values in the gradient. */
  values: number;
  /** The gradient as computed. */
  raw: Float32Array;
  /**
   * The gradient as it crosses the wire, made once per phase when the first plan names the chunk
   * size: half bits, or 8-bit blocks with their scales; and as the sum sees it (decoded).
   */
  wire: { chunk: number; half: Uint16Array | null; q: Int8Array | null; scales: Float32Array | null; summed: Float32Array } | null;
  sentRaw: boolean;
  /** Partial sums received (and who sent each), by attempt and chunk offset; chunks already sent, by attempt. */
  partials: Map<number, Map<number, { data: Float32Array; from: number }>>;
  sent: Map<number, Set<number>>;
}

export class Participant {
  readonly model: GanModel;
  versions = { D: -1, G: -1 };
  tasksDone = 0;
  private store = new ShardStore();
  private staging: Record<Net, Staging | null> = { D: null, G: null };
  private waiting: TaskMsg | null = null;
  private held: Held | null = null;
  /** Plans and partial sums (with who sent them) that arrived before their phase was computed. */
  private early: { plans: ReduceMsg[]; partials: { x: ChunkMsg; from: number }[] } = { plans: [], partials: [] };
  private scratch: Float32Array | null = null;
  /** A partial sum's encoding, until the frame holds it. */
  private readonly wireScratch = new WireScratch();
  /** The weights held, on the 8-bit wire (its weights chunks are differences from them). */
  private view: Record<Net, Float32Array | null> = { D: null, G: null };
  /** What rounding to 8 bits has lost of each net's gradients so far, added to the next one (error feedback). */
  private residual: Record<Net, Float32Array | null> = { D: null, G: null };
  /**
   * The reduce plans of each net's latest reduction, by attempt: they route the phase's partial
   * sums, and its weights chunks, which may still be arriving down the chain after this worker
   * has moved on to the next phase.
   */
  private plans: Record<Net, { round: number; byAttempt: Map<number, ReduceMsg> }> = { D: { round: -1, byAttempt: new Map() }, G: { round: -1, byAttempt: new Map() } };

  constructor(private readonly o: ParticipantOptions) {
    if (!isWirePrecision(o.wire)) throw new GanError('E_MALFORMED', `wire precision ${JSON.stringify(o.wire)} is not one of fp32, 16, 8`);
    this.model = new GanModel(o.model);
  }

  dispose(): void {
    this.model.dispose();
  }

  /** A frame from the coordinator (or, for Chunk and WeightsChunk, from a peer: `from` >= 0). Throws GanError on anything invalid. */
  async handle(m: Message, from: number = COORDINATOR): Promise<void> {
    switch (m.k) {
      case Kind.Shard:
        return this.store.add(m);
      case Kind.Weights:
        return this.setWeights(m.net, m.version, m.data);
      case Kind.WeightsChunk:
        return this.onWeightsChunk(m, from);
      case Kind.Task:
        this.waiting = m;
        this.held = null;
        return this.startIfReady();
      case Kind.Reduce:
        return this.onReduce(m);
      case Kind.Chunk:
        return this.onPartial(m, from);
      default:
        throw new GanError('E_UNEXPECTED', `${Kind[m.k] ?? m.k} is not accepted here`);
    }
  }

  private setWeights(net: Net, version: number, data: Float32Array): Promise<void> {
    const l = this.model.layout(net);
    if (data.length !== l.total) throw new GanError('E_SHAPE', `${net} weights have ${data.length} values, the model has ${l.total}`);
    if (version > this.versions[net]) {
      this.model.setWeights(net, data);
      this.versions[net] = version;
      if (this.o.wire === '8') this.view[net] = data === this.staging[net]?.buf ? data : data.slice();
    }
    if (this.staging[net] && this.staging[net].version <= version) this.staging[net] = null;
    return this.startIfReady();
  }

  private async onWeightsChunk(m: WeightsChunkMsg, from: number): Promise<void> {
    const total = this.model.layout(m.net).total;
    const plan = this.plans[m.net].byAttempt.get(m.attempt);
    if (!plan) throw new GanError('E_STALE', `weights of ${m.net} attempt ${m.attempt} arrived outside its reduction`);
    if (from !== plan.next) throw new GanError('E_UNEXPECTED', `weights of ${m.net} from ${from}, expected them from ${plan.next}`);
    const { index: c, start } = chunkAt(total, plan.chunk, m.offset, m.data.length, `${m.net} weights chunk`);
    // Down the chain first: the members before this one wait for these bytes.
    if (plan.prev >= 0) this.o.toPeer?.(plan.prev, null, encode(m));
    if (m.version <= this.versions[m.net]) return;
    if (this.o.wire === '8' && m.version !== this.versions[m.net] + 1) {
      throw new GanError('E_STALE', `8-bit weights of ${m.net} v${m.version} are a difference from v${m.version - 1}, this worker holds v${this.versions[m.net]}`);
    }
    let st = this.staging[m.net];
    if (st && (st.version < m.version || (st.version === m.version && st.attempt < m.attempt))) st = null;
    if (st && (st.version > m.version || st.attempt > m.attempt)) return; // an attempt that was superseded
    if (!st) {
      const n = chunkCount(total, plan.chunk);
      st = { version: m.version, attempt: m.attempt, buf: new Float32Array(total), got: new Uint8Array(n), missing: n };
      this.staging[m.net] = st;
    }
    if (st.got[c]) throw new GanError('E_STALE', `weights chunk at ${m.offset} arrived twice`);
    const end = start + m.data.length;
    decodeWeights(this.o.wire, m, this.view[m.net]?.subarray(start, end) ?? null, st.buf.subarray(start, end), `${m.net} weights chunk at ${start}`);
    st.got[c] = 1;
    if (--st.missing === 0) await this.setWeights(m.net, st.version, st.buf);
  }

  /** Compute the waiting task once the weights it names are here. */
  private async startIfReady(): Promise<void> {
    const t = this.waiting;
    if (!t) return;
    if (t.dVersion < this.versions.D || t.gVersion < this.versions.G) {
      throw new GanError('E_STALE', `task wants D v${t.dVersion} / G v${t.gVersion}, worker holds newer D v${this.versions.D} / G v${this.versions.G}`);
    }
    if (this.o.shared) this.pullShared(t);
    if (t.dVersion !== this.versions.D || t.gVersion !== this.versions.G) return; // still on their way
    this.waiting = null;
    this.compute(t);
  }

  /** Copy the nets whose named version this worker lacks out of the weights region (one that holds another version leaves them to frames). */
  private pullShared(t: TaskMsg): void {
    for (const [net, version] of [['D', t.dVersion], ['G', t.gVersion]] as const) {
      if (version === this.versions[net]) continue;
      // Making the tensors is the copy: the region is never held on to.
      const got = this.o.shared!.region.read(net, version, (w) => {
        this.model.setWeights(net, w);
        if (this.o.wire === '8') this.view[net] = w.slice();
      });
      if (got === 'version') continue;
      if (got === 'torn') throw new GanError('E_STALE', `${net} weights v${version} changed in the shared region while they were copied`);
      this.versions[net] = version;
      if (this.staging[net] && this.staging[net].version <= version) this.staging[net] = null;
    }
  }

  private compute(t: TaskMsg): void {
    const t0 = performance.now();
    const batch = buildBatch(this.model.cfg, { seed: this.o.seed, epoch: t.epoch, phase: t.phase }, t.ids, this.store);
    const r = t.phase === 'D' ? this.model.dStep(batch) : this.model.gStep(batch);
    const computeMs = performance.now() - t0;
    this.held = { round: t.round, phase: t.phase, count: t.ids.length, values: r.grads.length, raw: r.grads, wire: null, sentRaw: false, partials: new Map(), sent: new Map() };
    this.tasksDone++;
    this.o.onComputed?.({ round: t.round, phase: t.phase, count: t.ids.length, computeMs });
    this.o.toCoordinator(encode({ k: Kind.Report, round: t.round, phase: t.phase, count: t.ids.length, loss: r.loss, dReal: r.dReal, dFake: r.dFake, computeMs }));
    const early = this.early;
    this.early = { plans: [], partials: [] };
    for (const p of early.plans) this.onReduce(p);
    for (const { x, from } of early.partials) this.onPartial(x, from, true);
  }

  private isCurrent(round: number, phase: Net): boolean {
    return !!this.held && this.held.round === round && this.held.phase === phase;
  }

  private isWaitingFor(round: number, phase: Net): boolean {
    return !!this.waiting && this.waiting.round === round && this.waiting.phase === phase;
  }

  private onReduce(r: ReduceMsg): void {
    if (!this.isCurrent(r.round, r.phase)) {
      if (this.isWaitingFor(r.round, r.phase)) this.early.plans.push(r);
      return;
    }
    const h = this.held!;
    if (r.chunk < 1 || r.total < h.count) throw new GanError('E_MALFORMED', `reduce plan with chunk ${r.chunk} and total ${r.total}`);
    if (this.plans[r.phase].round !== r.round) this.plans[r.phase] = { round: r.round, byAttempt: new Map() };
    this.plans[r.phase].byAttempt.set(r.attempt, r);
    this.encodeOwn(h, r.chunk);
    if (!r.partial) return r.slot ? this.post(h, r) : this.sendRaw(h, r);
    for (let c = 0; c < chunkCount(h.values, r.chunk); c++) this.fold(h, r, c);
  }

  /** The plan of attempt `attempt` of the phase this worker holds, once it has arrived. */
  private planOf(h: Held, attempt: number): ReduceMsg | undefined {
    const p = this.plans[h.phase];
    return p.round === h.round ? p.byAttempt.get(attempt) : undefined;
  }

  /**
   * The gradient as the wire carries it and as the sum sees it, made once per phase (a retried
   * attempt sends the same values; error feedback takes each gradient in once).
   */
  private encodeOwn(h: Held, chunk: number): void {
    if (h.wire) {
      if (h.wire.chunk !== chunk) throw new GanError('E_MALFORMED', `reduce plan with chunk ${chunk}, this phase's chunks are ${h.wire.chunk}`);
      return;
    }
    if (this.o.wire === 'fp32') {
      h.wire = { chunk, half: null, q: null, scales: null, summed: h.raw };
    } else if (this.o.wire === '16') {
      const half = toHalf(h.raw);
      h.wire = { chunk, half, q: null, scales: null, summed: fromHalf(half) };
    } else {
      const residual = (this.residual[h.phase] ??= new Float32Array(h.values));
      const { q, scales, decoded } = quantizeWithFeedback(h.raw, residual, chunk);
      h.wire = { chunk, half: null, q, scales, summed: decoded };
    }
  }

  /** Chunk [start, end) of this worker's own gradient as it crosses the wire. */
  private ownValues(h: Held, start: number, end: number): WireValues & { fp16: boolean } {
    const w = h.wire!;
    if (w.half) return { fp16: true, data: w.half.subarray(start, end) };
    if (w.q) return { fp16: false, data: w.q.subarray(start, end), scales: chunkScales(w.scales!, w.chunk, start, end) };
    return { fp16: false, data: h.raw.subarray(start, end) };
  }

  /** This worker sends its own gradient to the coordinator (once per phase, whatever the attempt). */
  private sendRaw(h: Held, r: ReduceMsg): void {
    if (h.sentRaw) return;
    h.sentRaw = true;
    const n = h.values;
    for (let c = 0; c < chunkCount(n, r.chunk); c++) {
      const [start, end] = chunkRange(n, r.chunk, c);
      this.o.toCoordinator(encode({ k: Kind.Chunk, round: h.round, phase: h.phase, attempt: r.attempt, offset: start, partial: false, ...this.ownValues(h, start, end) }));
    }
  }

  /** This worker's gradient into its slot, and a word to the coordinator that it is there (once per phase). */
  private post(h: Held, r: ReduceMsg): void {
    if (!this.o.shared) throw new GanError('E_UNEXPECTED', 'reduce plan names a slot this worker does not have');
    if (h.sentRaw) return;
    h.sentRaw = true;
    // Halves as they are; on the 8-bit wire the decoded values, which is what frames would have made of them.
    const half = h.wire!.half;
    this.o.shared.slot.write(half ?? h.wire!.summed);
    this.o.toCoordinator(encode({ k: Kind.Posted, round: h.round, phase: h.phase, attempt: r.attempt, values: h.values, fp16: !!half }));
  }

  /** A partial sum from the member before this one (or the coordinator's seed). */
  private onPartial(x: ChunkMsg, from: number, replay = false): void {
    if (!x.partial) throw new GanError('E_UNEXPECTED', 'only partial sums reach a worker');
    if (!this.isCurrent(x.round, x.phase)) {
      if (!replay && (this.isWaitingFor(x.round, x.phase) || (this.held && x.round > this.held.round))) this.early.partials.push({ x, from });
      return;
    }
    const h = this.held!;
    const plan = this.planOf(h, x.attempt);
    // Without its plan yet a partial sum is checked (and folded) when the plan comes.
    if (plan) {
      if (from !== plan.prev) throw new GanError('E_UNEXPECTED', `partial sum from ${from}, expected one from ${plan.prev}`);
      chunkAt(h.values, plan.chunk, x.offset, x.data.length, 'partial sum');
    }
    const data = decodeValues(this.o.wire, x, 'partial sum');
    if (!allFinite(data)) throw new GanError('E_NONFINITE', 'partial sum has NaN or Inf values');
    let byChunk = h.partials.get(x.attempt);
    if (!byChunk) h.partials.set(x.attempt, (byChunk = new Map()));
    if (byChunk.has(x.offset)) throw new GanError('E_STALE', `partial sum at ${x.offset} arrived twice`);
    byChunk.set(x.offset, { data, from });
    if (plan) this.fold(h, plan, x.offset / plan.chunk);
  }

  /** Fold this worker's gradient into chunk c of the sum and pass it on, once its input is here. */
  private fold(h: Held, r: ReduceMsg, c: number): void {
    let sent = h.sent.get(r.attempt);
    if (!sent) h.sent.set(r.attempt, (sent = new Set()));
    if (sent.has(c)) return;
    const [start, end] = chunkRange(h.values, r.chunk, c);
    const got = r.prev === NOBODY ? null : h.partials.get(r.attempt)?.get(start);
    if (r.prev !== NOBODY && !got) return;
    if (got && (got.from !== r.prev || got.data.length !== end - start)) {
      // It came before its plan and is not what the plan expects: the right one may still come.
      h.partials.get(r.attempt)!.delete(start);
      return;
    }
    const before = got?.data;
    if (!this.scratch || this.scratch.length < r.chunk) this.scratch = new Float32Array(r.chunk);
    const out = this.scratch.subarray(0, end - start);
    if (before) out.set(before);
    foldInto(out, h.wire!.summed.subarray(start, end), h.count / r.total, !before);
    sent.add(c);
    // On a 16- or 8-bit wire the partial sum is rounded to it here, once per hop.
    const frame = encode({ k: Kind.Chunk, round: h.round, phase: h.phase, attempt: r.attempt, offset: start, partial: true, ...encodeValues(this.o.wire, out, this.wireScratch) });
    if (r.next === COORDINATOR) this.o.toCoordinator(frame);
    else this.o.toPeer?.(r.next, r.nextUrl, frame);
  }
}
