/**
 * A worker's computed phase and its part in that phase's reduction (the coordinator's plan, one per
 * attempt, says which): send its own gradient to the coordinator (in frames or through its slot),
 * fold it into a relay chain's partial sum and pass that on, or, in a sharded group, send its part
 * of each chunk to the chunk's owner and, for the chunks it owns, sum every member's part in id
 * order and send the sum to the coordinator. New weights are routed by weightsRoute().
 *
 * Invariants:
 * - The gradient is encoded for the wire once per phase (error feedback takes it in once): a
 *   retried attempt sends the same values, wherever they go.
 * - Each chunk of its own gradient goes to the coordinator at most once per phase (the
 *   coordinator keeps what it received across attempts); everything else is sent once per attempt.
 * - A partial sum or part is used only if its sender is the one the plan names, for a chunk of
 *   the plan, once; what arrives before its plan waits for it and is checked then.
 */
import {
  COORDINATOR, type ChunkMsg, Kind, NOBODY, type ReduceMsg, SHARD_COORDINATOR, encode,
} from '../shared/wire/codec.js';
import { GanError } from '../shared/wire/errors.js';
import { ChunkPool, chunkAt, chunkCount, chunkRange } from '../shared/numerics/chunks.js';
import { foldMany } from '../shared/numerics/fold.js';
import { allFinite } from '../shared/numerics/finite.js';
import { fromHalf, toHalf } from '../shared/numerics/half.js';
import {
  type WirePrecision, type WireValues, WireScratch, chunkScales, decodeValues, encodeValues, quantizeWithFeedback, scalesFor,
} from '../shared/numerics/wire-format.js';
import type { Net } from '../shared/compute/model.js';
import type { GradientSlot } from '../shared/wire/same-host.js';

/**
 * What a worker reuses for one net phase after phase instead of allocating it anew (garbage
 * collection was a tenth of a relaying worker's time): its gradient as the wire carries it, and
 * the decoded chunks it receives. Only the phase held uses them: a new phase of the net takes them
 * over (chunks.reset()), when the last one is over.
 */
export class PhaseBuffers {
  private half: Uint16Array | null = null;
  private eight: { q: Int8Array; scales: Float32Array; decoded: Float32Array } | null = null;
  private widened: Float32Array | null = null;
  /** The decoded chunks it receives. */
  readonly chunks = new ChunkPool();

  /** Room for the gradient's half bits and their widened values. */
  halves(n: number): { half: Uint16Array; widened: Float32Array } {
    if (!this.half || this.half.length < n) this.half = new Uint16Array(n);
    if (!this.widened || this.widened.length < n) this.widened = new Float32Array(n);
    return { half: this.half.subarray(0, n), widened: this.widened.subarray(0, n) };
  }

  /** Room for the gradient's 8-bit blocks, their scales and the values they decode to. */
  bytes(n: number, scales: number): { q: Int8Array; scales: Float32Array; decoded: Float32Array } {
    if (!this.eight || this.eight.q.length < n || this.eight.scales.length < scales) this.eight = { q: new Int8Array(n), scales: new Float32Array(scales), decoded: new Float32Array(n) };
    return this.eight;
  }
}

export interface ReductionIO {
  wire: WirePrecision;
  /** This worker's id in the run. */
  id: number;
  toCoordinator(frame: Uint8Array): void;
  /** A frame to a peer (dialing `url` when there is no link yet); absent for workers that do not relay. */
  toPeer?(peer: number, url: string | null, frame: Uint8Array): void;
  /** This worker's gradient slot, when it shares the coordinator's memory. */
  slot?: GradientSlot | null;
  /** What rounding to 8 bits has lost of each net's gradients so far (error feedback), kept across phases. */
  residual(net: Net, values: number): Float32Array;
  /** Each net's buffers, reused phase after phase. */
  buffers(net: Net): PhaseBuffers;
  /** Scratch for sums of one chunk. */
  scratch(n: number): Float32Array;
}

/** Where a weights chunk of a plan comes from, and who this worker passes it on to. */
export interface WeightsRoute {
  from: number;
  forward: { peer: number; url: string | null }[];
}

/** A sharded group's plan from this worker's seat. */
interface Seat {
  group: Uint32Array;
  counts: Uint32Array;
  urls: string[];
  owners: Uint16Array;
  /** This worker's index in the group. */
  index: number;
}

/** The plan's group with this worker's place in it; E_MALFORMED when the plan does not fit this phase. */
function seatOf(r: ReduceMsg, id: number, values: number, count: number): Seat | null {
  if (!r.group || !r.counts || !r.urls || !r.owners) return null;
  const index = r.group.indexOf(id);
  if (index < 0) throw new GanError('E_MALFORMED', `reduce plan of a group that does not hold worker ${id}`);
  if (r.owners.length !== chunkCount(values, r.chunk)) throw new GanError('E_MALFORMED', `reduce plan with ${r.owners.length} chunk owners for ${chunkCount(values, r.chunk)} chunks`);
  if (r.counts[index] !== count) throw new GanError('E_MALFORMED', `reduce plan says this worker has ${r.counts[index]} samples, its task had ${count}`);
  if (r.counts.reduce((a, x) => a + x, 0) > r.total) throw new GanError('E_MALFORMED', `reduce plan whose group holds more than its ${r.total} samples`);
  return { group: r.group, counts: r.counts, urls: r.urls, owners: r.owners, index };
}

/** Where chunk c's new weights come from under plan `r`, and where they go on from this worker. */
export function weightsRoute(r: ReduceMsg, id: number, c: number): WeightsRoute {
  if (r.group && r.owners && r.urls) {
    const owner = r.owners[c];
    if (owner === undefined) throw new GanError('E_SHAPE', `weights chunk ${c} is not a chunk of the plan`);
    if (owner === SHARD_COORDINATOR) return { from: COORDINATOR, forward: [] };
    if (r.group[owner] !== id) return { from: r.group[owner]!, forward: [] };
    // The owner gets them from the coordinator and passes them to every other member.
    return { from: COORDINATOR, forward: [...r.group].flatMap((peer, i) => (i === owner ? [] : [{ peer, url: r.urls![i]! }])) };
  }
  // Down a chain: from the next member (or the coordinator), on to the one before.
  return { from: r.next, forward: r.prev >= 0 ? [{ peer: r.prev, url: null }] : [] };
}

export class PhaseReduction {
  /** The gradient as it crosses the wire (half bits, or 8-bit blocks with their scales) and as the sum sees it (decoded). */
  private wire: { chunk: number; half: Uint16Array | null; q: Int8Array | null; scales: Float32Array | null; summed: Float32Array } | null = null;
  /** Chunks of its own gradient sent to the coordinator in this phase, and whether it was posted through the slot. */
  private readonly sentOwn = new Set<number>();
  private posted = false;
  /** Partial sums (a chain's, or the coordinator's seed of an owned chunk) by attempt and offset, with who sent each. */
  private readonly partials = new Map<number, Map<number, { data: Float32Array; from: number }>>();
  /** Members' parts of chunks this worker owns, by attempt, chunk and sender. */
  private readonly parts = new Map<number, Map<number, Map<number, Float32Array>>>();
  /** Chunks whose sum this worker has passed on, and attempts whose parts it has sent, by attempt. */
  private readonly sent = new Map<number, Set<number>>();
  private readonly partsSent = new Set<number>();
  private readonly wireScratch = new WireScratch();

  constructor(
    readonly round: number, readonly phase: Net, readonly count: number, readonly raw: Float32Array,
    private readonly io: ReductionIO, private readonly planOf: (attempt: number) => ReduceMsg | undefined,
  ) {
    this.buffers = io.buffers(phase);
    this.buffers.chunks.reset();
  }

  private readonly buffers: PhaseBuffers;

  /** A received chunk's values as float32: the frame's own on the fp32 wire, else decoded into a reused chunk. */
  private decode(x: ChunkMsg, what: string): Float32Array {
    return decodeValues(this.io.wire, x, what, undefined, this.io.wire === 'fp32' ? undefined : this.buffers.chunks.take(x.data.length));
  }

  get values(): number {
    return this.raw.length;
  }

  /** The plan of an attempt of this phase has arrived (and been recorded for planOf). */
  onPlan(r: ReduceMsg): void {
    if (r.chunk < 1 || r.total < this.count) throw new GanError('E_MALFORMED', `reduce plan with chunk ${r.chunk} and total ${r.total}`);
    const seat = seatOf(r, this.io.id, this.values, this.count);
    this.encodeOwn(r.chunk);
    if (seat) return this.takeSeat(r, seat);
    if (!r.partial) return r.slot ? this.post(r) : this.sendOwn(r, null);
    for (let c = 0; c < chunkCount(this.values, r.chunk); c++) this.fold(r, c);
  }

  /** A partial sum (from the member before this one, or the coordinator's seed) or a peer's part of a chunk this worker owns. */
  onChunk(x: ChunkMsg, from: number): void {
    const plan = this.planOf(x.attempt);
    if (!x.partial) return this.onPart(x, from, plan);
    // Without its plan yet a partial sum is checked (and folded) when the plan comes.
    if (plan) {
      if (from !== plan.prev) throw new GanError('E_UNEXPECTED', `partial sum from ${from}, expected one from ${plan.prev}`);
      chunkAt(this.values, plan.chunk, x.offset, x.data.length, 'partial sum');
    }
    const data = this.decode(x, 'partial sum');
    if (!allFinite(data)) throw new GanError('E_NONFINITE', 'partial sum has NaN or Inf values');
    const byChunk = getOrMake(this.partials, x.attempt, () => new Map());
    if (byChunk.has(x.offset)) throw new GanError('E_STALE', `partial sum at ${x.offset} arrived twice`);
    byChunk.set(x.offset, { data, from });
    if (!plan) return;
    const seat = seatOf(plan, this.io.id, this.values, this.count);
    if (seat) this.sumOwned(plan, seat, x.offset / plan.chunk);
    else this.fold(plan, x.offset / plan.chunk);
  }

  private onPart(x: ChunkMsg, from: number, plan: ReduceMsg | undefined): void {
    if (from < 0) throw new GanError('E_UNEXPECTED', 'only partial sums reach a worker from the coordinator');
    const seat = plan ? seatOf(plan, this.io.id, this.values, this.count) : null;
    if (plan) {
      const { index: c } = chunkAt(this.values, plan.chunk, x.offset, x.data.length, 'gradient part');
      if (!seat || seat.owners[c] !== seat.index) throw new GanError('E_UNEXPECTED', `worker ${from} sent its part of chunk ${c}, which this worker does not own in attempt ${x.attempt}`);
      if (seat.group.indexOf(from) < 0) throw new GanError('E_UNEXPECTED', `worker ${from} is not a member of this group`);
    }
    const data = this.decode(x, 'gradient part');
    if (!allFinite(data)) throw new GanError('E_NONFINITE', 'gradient part has NaN or Inf values');
    const byChunk = getOrMake(this.parts, x.attempt, () => new Map());
    // Before its plan the chunk size is unknown: parts wait under their offset, re-keyed by chunk when the plan comes.
    const key = plan ? x.offset / plan.chunk : -1 - x.offset;
    const bySender = getOrMake(byChunk, key, () => new Map());
    if (bySender.has(from)) throw new GanError('E_STALE', `worker ${from}'s part at ${x.offset} arrived twice`);
    bySender.set(from, data);
    if (plan && seat) this.sumOwned(plan, seat, key);
  }

  /**
   * The gradient as the wire carries it and as the sum sees it, made once per phase (a retried
   * attempt sends the same values; error feedback takes each gradient in once).
   */
  private encodeOwn(chunk: number): void {
    if (this.wire) {
      if (this.wire.chunk !== chunk) throw new GanError('E_MALFORMED', `reduce plan with chunk ${chunk}, this phase's chunks are ${this.wire.chunk}`);
      return;
    }
    const raw = this.raw;
    if (this.io.wire === 'fp32') {
      this.wire = { chunk, half: null, q: null, scales: null, summed: raw };
    } else if (this.io.wire === '16') {
      const room = this.buffers.halves(raw.length);
      const half = toHalf(raw, room.half);
      this.wire = { chunk, half, q: null, scales: null, summed: fromHalf(half, room.widened) };
    } else {
      const into = this.buffers.bytes(raw.length, scalesFor(raw.length, chunk));
      const { q, scales, decoded } = quantizeWithFeedback(raw, this.io.residual(this.phase, raw.length), chunk, undefined, into);
      this.wire = { chunk, half: null, q, scales, summed: decoded };
    }
  }

  /** Chunk [start, end) of this worker's own gradient as it crosses the wire. */
  private ownValues(start: number, end: number): WireValues & { fp16: boolean } {
    const w = this.wire!;
    if (w.half) return { fp16: true, data: w.half.subarray(start, end) };
    if (w.q) return { fp16: false, data: w.q.subarray(start, end), scales: chunkScales(w.scales!, w.chunk, start, end) };
    return { fp16: false, data: this.raw.subarray(start, end) };
  }

  private ownChunk(r: ReduceMsg, c: number): Uint8Array {
    const [start, end] = chunkRange(this.values, r.chunk, c);
    return encode({ k: Kind.Chunk, round: this.round, phase: this.phase, attempt: r.attempt, offset: start, partial: false, ...this.ownValues(start, end) });
  }

  /** Its own gradient's chunks to the coordinator (`only`: just those), each once per phase whatever the attempt. */
  private sendOwn(r: ReduceMsg, only: ((c: number) => boolean) | null): void {
    for (let c = 0; c < chunkCount(this.values, r.chunk); c++) {
      if (this.sentOwn.has(c) || (only && !only(c))) continue;
      this.sentOwn.add(c);
      this.io.toCoordinator(this.ownChunk(r, c));
    }
  }

  /** Its gradient into its slot, and a word to the coordinator that it is there (once per phase). */
  private post(r: ReduceMsg): void {
    if (!this.io.slot) throw new GanError('E_UNEXPECTED', 'reduce plan names a slot this worker does not have');
    if (this.posted) return;
    this.posted = true;
    // Halves as they are; on the 8-bit wire the decoded values, which is what frames would have made of them.
    const half = this.wire!.half;
    this.io.slot.write(half ?? this.wire!.summed);
    this.io.toCoordinator(encode({ k: Kind.Posted, round: this.round, phase: this.phase, attempt: r.attempt, values: this.values, fp16: !!half }));
  }

  /** Fold its gradient into chunk c of a chain's sum and pass it on, once its input is here. */
  private fold(r: ReduceMsg, c: number): void {
    const sent = getOrMake(this.sent, r.attempt, () => new Set<number>());
    if (sent.has(c)) return;
    const [start, end] = chunkRange(this.values, r.chunk, c);
    const before = r.prev === NOBODY ? null : this.partial(r, start, end);
    if (r.prev !== NOBODY && !before) return;
    sent.add(c);
    this.passOn(r, start, end, before, [this.wire!.summed.subarray(start, end)], [this.count / r.total]);
  }

  /** The partial sum at `start` this attempt expects (from plan.prev, of the chunk's length), or null while it has not come. */
  private partial(r: ReduceMsg, start: number, end: number): Float32Array | null {
    const byChunk = this.partials.get(r.attempt);
    const got = byChunk?.get(start);
    if (!got) return null;
    if (got.from !== r.prev || got.data.length !== end - start) {
      // It came before its plan and is not what the plan expects: the right one may still come.
      byChunk!.delete(start);
      return null;
    }
    return got.data;
  }

  /** acc = before + the scaled gradients, in order; rounded to the wire once and sent on (a chain's next member, or the coordinator). */
  private passOn(r: ReduceMsg, start: number, end: number, before: Float32Array | null, gs: Float32Array[], scales: number[]): void {
    const out = this.io.scratch(end - start);
    if (before) out.set(before);
    foldMany(out, gs, scales, !before);
    // On a 16- or 8-bit wire the partial sum is rounded to it here, once per hop.
    const frame = encode({ k: Kind.Chunk, round: this.round, phase: this.phase, attempt: r.attempt, offset: start, partial: true, ...encodeValues(this.io.wire, out, this.wireScratch) });
    if (r.next === COORDINATOR) this.io.toCoordinator(frame);
    else this.io.toPeer?.(r.next, r.nextUrl, frame);
  }

  /** A sharded group's plan: its parts out to their owners (or the coordinator), and the sums of its own chunks once their parts are in. */
  private takeSeat(r: ReduceMsg, seat: Seat): void {
    const n = chunkCount(this.values, r.chunk);
    // Parts that came before the plan waited under their offsets: now they are checked and keyed by chunk.
    const early = this.parts.get(r.attempt);
    if (early) {
      for (const [key, bySender] of [...early]) {
        if (key >= 0) continue;
        early.delete(key);
        const offset = -1 - key;
        const c = offset / r.chunk;
        const [start, end] = Number.isInteger(c) && c < n ? chunkRange(this.values, r.chunk, c) : [0, 0];
        if (seat.owners[c] !== seat.index) continue;
        for (const [from, data] of bySender) if (seat.group.indexOf(from) >= 0 && data.length === end - start) getOrMake(early, c, () => new Map()).set(from, data);
      }
    }
    this.sendOwn(r, (c) => seat.owners[c] === SHARD_COORDINATOR);
    if (!this.partsSent.has(r.attempt)) {
      this.partsSent.add(r.attempt);
      for (let c = 0; c < n; c++) {
        const owner = seat.owners[c]!;
        if (owner === SHARD_COORDINATOR || owner === seat.index) continue;
        this.io.toPeer?.(seat.group[owner]!, seat.urls[owner]!, this.ownChunk(r, c));
      }
    }
    for (let c = 0; c < n; c++) if (seat.owners[c] === seat.index) this.sumOwned(r, seat, c);
  }

  /** Chunk c is this worker's: once the seed (if any) and every member's part are in, their sum goes to the coordinator. */
  private sumOwned(r: ReduceMsg, seat: Seat, c: number): void {
    if (seat.owners[c] !== seat.index) return;
    const sent = getOrMake(this.sent, r.attempt, () => new Set<number>());
    if (sent.has(c)) return;
    const [start, end] = chunkRange(this.values, r.chunk, c);
    const before = r.prev === NOBODY ? null : this.partial(r, start, end);
    if (r.prev !== NOBODY && !before) return;
    const got = this.parts.get(r.attempt)?.get(c);
    const gs: Float32Array[] = [];
    for (let i = 0; i < seat.group.length; i++) {
      const g = i === seat.index ? this.wire!.summed.subarray(start, end) : got?.get(seat.group[i]!);
      if (!g) return;
      gs.push(g);
    }
    sent.add(c);
    this.passOn({ ...r, next: COORDINATOR }, start, end, before, gs, [...seat.counts].map((k) => k / r.total));
  }
}

function getOrMake<K, V>(m: Map<K, V>, k: K, make: () => V): V {
  let v = m.get(k);
  if (v === undefined) m.set(k, (v = make()));
  return v;
}
