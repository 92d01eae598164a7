/**
 * One phase's reduction, once the round loop has sent the tasks: every member's gradient summed in
 * worker-id order, chunk by chunk as the chunks arrive, one Adam step per chunk as soon as that
 * chunk's sum is complete, and each chunk of the new weights sent at once. Upload, reduction, Adam
 * and download overlap instead of adding up.
 *
 * Members either send their own gradient here (direct: in frames, or through their slot when they
 * share this host, coordinator/same-host.ts), belong to a relay chain, or to a sharded group
 * (topology.ts; the attempt's plan and routes are reduce-plan.ts). A chain passes partial sums
 * worker to worker, the last one sending the chain's partial here, while new weights travel back
 * down the same links. In a group each chunk has an owner: a member, which sums every member's
 * part of it and sends the sum here, then passes the chunk's new weights to the others; or the
 * coordinator, which the members send their parts to directly. The coordinator folds direct parts
 * itself and seeds a chain or an owner whose segment does not start the sum with the partial so
 * far. Either way the sum is s0*g0 + s1*g1 + ... in id order, each add rounded to float32
 * (shared/numerics/fold.ts), so a relayed or sharded reduction equals the direct one bit for bit.
 *
 * The phase's life is a Stage: Reducing (an attempt's plan is out; chunks are summed and stepped as
 * they arrive), AwaitingReports (every chunk is stepped, not every member has reported),
 * Committed; or Abandoned (no member left). A lost member, a stalled relay or a partial sum out of
 * bounds starts a new attempt: back to Reducing with a new plan.
 *
 * Invariants:
 * - Nothing is committed until every chunk's sum is complete and every member has reported: Adam
 *   writes the new weights and moments beside the current ones, which stay untouched until then.
 * - A member lost before the commit (disconnect, timeout, invalid frame, a broken peer link) costs
 *   an attempt: the sum starts over among the survivors, from the gradients they hold (direct
 *   members' chunks are kept here; chain members fold theirs again), and the next attempt's weights
 *   chunks supersede the last one's on every worker. A dropped member's gradient is never applied.
 * - Relays that stall (no progress for the stall time) are given up for this phase: the retry
 *   sends every gradient here directly.
 * - No step can poison the state (bounds.ts): a gradient out of bounds, or a direct member's chunk
 *   far larger than its peers', is refused and its sender dropped (E_BOUNDS). A chain's partial sum
 *   out of bounds cannot name its culprit: the phase is reduced again with every gradient sent
 *   here, where it can. A step whose new weights or moments are not finite is never committed.
 * - A straggler (bounds.ts) is dropped (E_TIMEOUT) instead of holding the phase for the whole
 *   --round-timeout.
 */
import { GanError } from '../shared/wire/errors.js';
import { ChunkPool, chunkAt, chunkCount, chunkRange } from '../shared/numerics/chunks.js';
import { foldMany } from '../shared/numerics/fold.js';
import { type WirePrecision, WireScratch, bytesPerValue, decodeValues, encodeValues, encodeWeights } from '../shared/numerics/wire-format.js';
import type { Net } from '../shared/compute/model.js';
import { type ChunkMsg, Kind, type Message, type PostedMsg, type ReportMsg, encode } from '../shared/wire/codec.js';
import { PEER_FACTOR, checkGradient, judgeMagnitude, outlier, partialOutOfBounds, stragglerLimitMs } from './bounds.js';
import { type ChunkStep, foldMeasured } from './optimizer.js';
import { nativeMath } from '../shared/backend/addon.js';
import {
  type Attempt, ChunkStage, type Member, type MemberConn, type ReductionMember, directParts, planAttempt, reduceFrames, relayedWeights, tailSender, weightsTargets,
} from './reduce-plan.js';

export type { MemberConn, ReductionMember } from './reduce-plan.js';

export interface ReductionOptions<C extends MemberConn> {
  net: Net;
  round: number;
  /** Members in worker-id order (their tasks are out). */
  members: ReductionMember<C>[];
  /** What runs of members that may relay become (topology.ts; default chain). */
  relayAs?: 'chain' | 'group';
  /** The version of `net` the tasks named; the new weights are the next one. */
  version: number;
  chunk: number;
  /** Precision of gradients, partial sums and weights in frames (shared/numerics/wire-format.ts). */
  wire: WirePrecision;
  /** Current weights and moments (read only) and where the new ones go. */
  current: { w: Float32Array; m: Float32Array; v: Float32Array };
  next: { w: Float32Array; m: Float32Array; v: Float32Array };
  /** The weights the workers hold (read only) and where the view of the new ones goes (the same as next.w on the fp32 wire). */
  view: { current: Float32Array; next: Float32Array };
  /** Where the step also writes the new weights as it takes them (the shared region's buffer of the next version; fp32 wire). */
  stepInto?: Float32Array;
  /** Bytes of new weights per byte of gradient in frames, as this net's last phase sent them (a sharded group's plan balances its links by it; default 1). */
  weightsRatio?: number;
  /** The step of the phase: Adam's next step, or the outer optimiser's in a low-communication run. */
  step: ChunkStep;
  /** Scratch of the net's size for the running sums. */
  acc: Float32Array;
  /** Where received chunks are decoded to on a 16- or 8-bit wire (reset here; the last phase of the net is over). */
  pool?: ChunkPool;
  reportTimeoutMs: number;
  stallMs: number;
  send(c: C, frame: Uint8Array): void;
  /** Where a slot member's posted gradient goes here, and the slot to copy it from (coordinator/same-host.ts). */
  take?(c: C, values: number, fp16: boolean): { data: Float32Array; from: Float32Array | null };
  /** Drop a member from the run (its connection); the owner answers with lost(c). */
  drop(c: C, e: GanError): void;
  log(line: string): void;
}

export interface ReductionResult<C extends MemberConn> {
  /** Members whose gradients the step applied, in id order, with their reports (empty: no step). */
  applied: { conn: C; report: ReportMsg }[];
  /** The coordinator's own work: folding, Adam, packing and handing chunks to the sockets. */
  busyMs: number;
  /** Who passed new weights on to whom in the committed attempt (worker ids), for repairs if one of them leaves later. */
  relayed: Map<number, number[]>;
  /** Bytes of the new weights' frames per byte their values would take as gradients (fp32: the XOR deltas' share); null when none went out. */
  weightsRatio: number | null;
  /** The attempt whose step was applied (the next tasks name it: workers wait for its weights, not an earlier attempt's). */
  attempt: number;
}

/** The life of a phase's reduction. */
export enum Stage {
  /** Built; start() has not run. */
  Idle = 'idle',
  /** An attempt's plan is out: chunks are summed and stepped as they arrive. */
  Reducing = 'reducing',
  /** Every chunk is stepped; some members have not reported yet. */
  AwaitingReports = 'awaiting reports',
  /** Every chunk stepped, every member reported: the step may be committed. */
  Committed = 'committed',
  /** No member is left: nothing to apply. */
  Abandoned = 'abandoned',
}

export class Reduction<C extends MemberConn> {
  private stage = Stage.Idle;
  private readonly members: Member<C>[];
  private readonly size: number;
  private readonly chunkTotal: number;
  private attempt: Attempt<C> = { n: -1, segments: [], total: 0, chunks: [], stepped: 0 };
  /** Relays are used unless they stalled or a relayed sum was out of bounds in this phase. */
  private relays = true;
  private busyMs = 0;
  /** Bytes of weights values sent, and what as many gradient values take (weightsRatio). */
  private weightsBytes = { sent: 0, raw: 0 };
  private lastProgress = performance.now();
  private readonly startedAt = performance.now();
  private watchdog: NodeJS.Timeout | null = null;
  private settle: ((r: ReductionResult<C>) => void) | null = null;
  /** Encoded chunks (seeds of chains, new weights) until their frame is packed. */
  private readonly wireScratch = new WireScratch();

  constructor(private readonly o: ReductionOptions<C>) {
    this.size = o.current.w.length;
    this.chunkTotal = chunkCount(this.size, o.chunk);
    o.pool?.reset();
    this.members = o.members.map((m) => ({
      ...m, alive: true, report: null, reportedAfter: 0, own: new Array<Float32Array | null>(this.chunkTotal).fill(null), rms: new Float64Array(this.chunkTotal), timer: null,
    }));
  }

  /** Where the phase is (observers, tests). */
  get state(): Stage {
    return this.stage;
  }

  /** Start the report timers and the first attempt; resolves when the step is committed or no member is left. */
  start(): Promise<ReductionResult<C>> {
    return new Promise((resolve) => {
      this.settle = resolve;
      for (const m of this.members) {
        m.timer = setTimeout(() => this.o.drop(m.conn, new GanError('E_TIMEOUT', `no ${this.o.net} gradient for round ${this.o.round} within ${this.o.reportTimeoutMs} ms`)), this.o.reportTimeoutMs);
        m.timer.unref();
      }
      this.watchdog = setInterval(() => this.checkStall(), Math.max(50, Math.min(1000, this.o.stallMs / 4)));
      this.watchdog.unref();
      this.plan();
    });
  }

  /** A message from a member while this phase is open. Throws GanError for anything invalid (the owner drops the sender). */
  onMessage(conn: C, msg: Message): void {
    const m = this.members.find((x) => x.conn === conn && x.alive);
    if (msg.k === Kind.PeerLost) return this.onPeerLost(conn, msg.peer, `${msg.code} ${msg.reason}`);
    if (msg.k !== Kind.Report && msg.k !== Kind.Chunk && msg.k !== Kind.Posted) throw new GanError('E_UNEXPECTED', `workers may not send ${Kind[msg.k] ?? msg.k} during a phase`);
    if (!m || msg.round !== this.o.round || msg.phase !== this.o.net) {
      throw new GanError('E_STALE', `${Kind[msg.k]} for round ${msg.round} phase ${msg.phase} is not open for this worker (duplicate or stale)`);
    }
    if (msg.k === Kind.Report) this.onReport(m, msg);
    else if (msg.k === Kind.Posted) this.onPosted(m, msg);
    else this.onChunk(m, msg);
  }

  /** A member's connection ended (any reason). */
  lost(conn: C): void {
    const m = this.members.find((x) => x.conn === conn && x.alive);
    if (!m) return;
    m.alive = false;
    if (m.timer) clearTimeout(m.timer);
    if (this.isOpen()) this.restart(`worker ${conn.id} left`);
  }

  private isOpen(): boolean {
    return this.stage === Stage.Reducing || this.stage === Stage.AwaitingReports;
  }

  private onReport(m: Member<C>, r: ReportMsg): void {
    if (m.report) throw new GanError('E_STALE', `second report for round ${r.round} phase ${r.phase}`);
    if (r.count !== m.count) throw new GanError('E_SHAPE', `report says ${r.count} samples, the task had ${m.count}`);
    // The G phase has no real rows: its dReal is NaN by definition and not checked.
    const stats = r.phase === 'D' ? { loss: r.loss, dReal: r.dReal, dFake: r.dFake } : { loss: r.loss, dFake: r.dFake };
    for (const [k, v] of Object.entries(stats)) if (!Number.isFinite(v)) throw new GanError('E_NONFINITE', `${r.phase} ${k} is not finite`);
    if (!Number.isFinite(r.computeMs) || r.computeMs < 0) throw new GanError('E_NONFINITE', 'computeMs is not a finite non-negative number');
    m.report = r;
    m.reportedAfter = performance.now() - this.startedAt;
    if (m.timer) clearTimeout(m.timer);
    m.timer = null;
    this.maybeCommit();
  }

  private onChunk(m: Member<C>, x: ChunkMsg): void {
    const t0 = performance.now();
    const { index: chunk } = chunkAt(this.size, this.o.chunk, x.offset, x.data.length, `${this.o.net} chunk`);
    if (x.partial) {
      // An attempt that was given up may still have chunks on their way: they are not an error.
      if (x.attempt < this.attempt.n) return;
      const seg = this.attempt.segments.find((s) => tailSender(s, chunk) === m);
      if (!seg || seg.kind === 'direct' || x.attempt !== this.attempt.n) throw new GanError('E_STALE', `partial sum of chunk ${chunk} attempt ${x.attempt} from a worker that does not send it in attempt ${this.attempt.n}`);
      if (seg.tail[chunk]) throw new GanError('E_STALE', `second partial sum for chunk ${chunk}`);
      const data = this.decode(x, `partial sum of ${this.o.net}`);
      const maxAbs = partialOutOfBounds(data, this.o.net);
      if (maxAbs !== null) {
        // Someone in the chain sent an outsized gradient; only a direct reduction can tell who.
        this.relays = false;
        this.restart(`a relayed partial sum of ${this.o.net} is out of bounds (|value| ${maxAbs.toExponential(2)}); reducing directly to find its source`);
        return;
      }
      seg.tail[chunk] = data;
    } else {
      if (m.own[chunk]) throw new GanError('E_STALE', `second gradient chunk at ${x.offset}`);
      const data = this.decode(x, `${this.o.net} gradient`);
      m.rms[chunk] = checkGradient(data, this.o.net);
      m.own[chunk] = data;
    }
    this.lastProgress = performance.now();
    this.busyMs += this.lastProgress - t0;
    this.advance(chunk);
  }

  /** A received chunk's values as float32: the frame's own on the fp32 wire, else decoded (into the pool when there is one). */
  private decode(x: ChunkMsg, what: string): Float32Array {
    return decodeValues(this.o.wire, x, what, undefined, this.o.wire === 'fp32' ? undefined : this.o.pool?.take(x.data.length));
  }

  /** A slot member's whole gradient is in its slot: read once per chunk when the chunk is summed (advance), checked as a frame's chunks are. */
  private onPosted(m: Member<C>, x: PostedMsg): void {
    const t0 = performance.now();
    if (!m.slot || !this.o.take) throw new GanError('E_UNEXPECTED', 'Posted from a worker that sends its gradient in frames');
    if (x.attempt > this.attempt.n) throw new GanError('E_STALE', `Posted for attempt ${x.attempt}, the phase is at attempt ${this.attempt.n}`);
    if (m.own.some((c) => c)) throw new GanError('E_STALE', `second gradient of round ${x.round} phase ${x.phase}`);
    if (x.values !== this.size) throw new GanError('E_SHAPE', `${this.o.net} gradient of ${x.values} values in the slot, the model has ${this.size}`);
    // An 8-bit wire's slot holds the decoded float32 values: rounding and error feedback are the same as in frames.
    if (x.fp16 !== (this.o.wire === '16')) throw new GanError('E_SHAPE', `gradient precision ${x.fp16 ? 'fp16' : 'fp32'} in the slot differs from the run's wire (${this.o.wire})`);
    const { data, from } = this.o.take(m.conn, x.values, x.fp16);
    // A float32 slot is read once, when its chunk is summed or copied out (advance); 16-bit halves were widened into `data` just now.
    if (from) m.unchecked = { copy: data, from, chunks: new Uint8Array(this.chunkTotal).fill(1) };
    for (let c = 0; c < this.chunkTotal; c++) {
      const [start, end] = chunkRange(this.size, this.o.chunk, c);
      if (from) m.own[c] = from.subarray(start, end);
      else m.rms[c] = checkGradient((m.own[c] = data.subarray(start, end)), this.o.net);
    }
    this.lastProgress = performance.now();
    this.busyMs += this.lastProgress - t0;
    for (let c = 0; c < this.chunkTotal; c++) this.advance(c);
  }

  /** A new attempt among the live members: who relays, with what scale; every member is told. */
  private plan(): void {
    const alive = this.members.filter((m) => m.alive);
    this.attempt = planAttempt(this.attempt.n + 1, alive, { relays: this.relays, kind: this.o.relayAs ?? 'chain', chunks: this.chunkTotal, weights: this.o.weightsRatio });
    this.stage = Stage.Reducing;
    this.lastProgress = performance.now();
    for (const [m, frame] of reduceFrames(this.attempt, { round: this.o.round, net: this.o.net, chunk: this.o.chunk })) this.o.send(m.conn, frame);
    if (this.attempt.total === 0) return this.finish(Stage.Abandoned);
    for (let c = 0; c < this.chunkTotal; c++) this.advance(c);
  }

  /** Carry chunk c's sum as far as the data here allows; step it when it is complete. */
  private advance(c: number): void {
    const a = this.attempt;
    const state = a.chunks[c]!;
    if (this.stage !== Stage.Reducing || state.stage !== ChunkStage.Summing) return;
    const t0 = performance.now();
    const [start, end] = chunkRange(this.size, this.o.chunk, c);
    const acc = this.o.acc.subarray(start, end);
    if (state.next === 0) {
      // Every direct part of this chunk is here before any is folded: they are judged against each other.
      const direct = a.segments.flatMap((s) => directParts(s, c));
      if (direct.some((m) => !m.own[c])) return;
      if (direct.some((m) => m.unchecked?.chunks[c])) {
        // Slots not yet read: when this is the whole sum of several parts, each is measured in the read that sums it; else copied out and checked first.
        if (direct.length > 1 && a.segments.every((s) => s.kind === 'direct') && nativeMath()) return this.sumMeasured(c, direct, acc, start, end, t0);
        for (const m of direct) if (!this.checkSlot(m, c, start, end)) return;
      }
      if (this.dropOutlier(c, direct)) return;
    }
    while (state.next < a.segments.length) {
      const s = a.segments[state.next]!;
      const sender = tailSender(s, c);
      if (!sender) {
        // Every direct part from here whose chunk is in, folded in one pass (segments fold whole or not at all).
        const run: Member<C>[] = [];
        let k = state.next;
        for (; k < a.segments.length; k++) {
          const parts = directParts(a.segments[k]!, c);
          if (parts.length === 0 || parts.some((m) => !m.own[c])) break;
          run.push(...parts);
        }
        if (run.length === 0) break;
        // A lone part holding every sample is its own sum (the step reads it as 0 + g, the bits a fold gives).
        if (state.next === 0 && k === a.segments.length && run.length === 1 && run[0]!.count === a.total) state.sum = run[0]!.own[c]!;
        else foldMany(acc, run.map((m) => m.own[c]!), run.map((m) => m.count / a.total), state.next === 0);
        state.next = k;
        continue;
      }
      if (state.next > 0 && !state.seeded) {
        // The chain, or the chunk's owner, continues the sum so far.
        state.seeded = true;
        const head = s.kind === 'chain' ? s.members[0]! : sender;
        this.o.send(head.conn, encode({ k: Kind.Chunk, round: this.o.round, phase: this.o.net, attempt: a.n, offset: start, partial: true, ...encodeValues(this.o.wire, acc, this.wireScratch) }));
      }
      const tail = (s as { tail: (Float32Array | null)[] }).tail[c];
      if (!tail) break;
      // The last segment's partial sum is the whole sum: stepped where it lies.
      if (state.next === a.segments.length - 1) state.sum = tail;
      else acc.set(tail);
      state.next++;
      state.seeded = false;
    }
    // Counted before the step, which may commit the phase and report its time.
    this.busyMs += performance.now() - t0;
    if (state.next === a.segments.length) this.step(c, start, end);
  }

  /** A slot member's chunk c copied out of its slot and checked there (what is checked is what is used); false when it was dropped for it. */
  private checkSlot(m: Member<C>, c: number, start: number, end: number): boolean {
    const u = m.unchecked;
    if (!u?.chunks[c]) return true;
    const g = u.copy.subarray(start, end);
    if (!this.judged(m, c, () => checkGradient(g, this.o.net, u.from.subarray(start, end)))) return false;
    m.own[c] = g;
    u.chunks[c] = 0;
    return true;
  }

  /**
   * Chunk c's whole sum, of direct parts only, some still in their slots: every part is measured in
   * the one read that sums it (the copy and the separate check of checkSlot are not needed: what
   * is measured is what is summed), then judged; a part out of bounds drops its member and the
   * phase reduces again among the rest, reading their slots again.
   */
  private sumMeasured(c: number, direct: Member<C>[], acc: Float32Array, start: number, end: number, t0: number): void {
    const a = this.attempt;
    const sizes = foldMeasured(acc, direct.map((m) => m.own[c]!), direct.map((m) => m.count / a.total));
    for (const [i, m] of direct.entries()) if (!this.judged(m, c, () => judgeMagnitude(sizes[i]!, this.o.net))) return;
    if (this.dropOutlier(c, direct)) return;
    a.chunks[c]!.next = a.segments.length;
    this.busyMs += performance.now() - t0;
    this.step(c, start, end);
  }

  /** m's chunk c judged by `judge` (its root mean square, or a GanError): kept in m.rms, else m is dropped for it and false. */
  private judged(m: Member<C>, c: number, judge: () => number): boolean {
    try {
      m.rms[c] = judge();
      return true;
    } catch (e) {
      if (!(e instanceof GanError)) throw e;
      this.o.drop(m.conn, e);
      return false;
    }
  }

  /** The outlier rule on chunk c's direct parts, judged against each other: whether it dropped one (the phase then reduces again). */
  private dropOutlier(c: number, direct: Member<C>[]): boolean {
    const big = outlier(direct.map((m) => m.rms[c]!));
    if (!big) return false;
    const m = direct[big.index]!;
    this.o.drop(m.conn, new GanError('E_BOUNDS', `${this.o.net} gradient chunk ${c} has root mean square ${m.rms[c]!.toExponential(2)}, over ${PEER_FACTOR} times its peers' median (${big.median.toExponential(2)})`));
    return true;
  }

  /** The step on one chunk (Adam, or the outer step), into the next buffers, and its new weights out to every direct member and chain end. */
  private step(c: number, start: number, end: number): void {
    const t0 = performance.now();
    const { current: cur, next } = this.o;
    const a = this.attempt;
    const g = a.chunks[c]!.sum ?? this.o.acc.subarray(start, end);
    const out = { w: next.w.subarray(start, end), m: next.m.subarray(start, end), v: next.v.subarray(start, end), wAlso: this.o.stepInto?.subarray(start, end) };
    if (!this.o.step({ w: cur.w.subarray(start, end), m: cur.m.subarray(start, end), v: cur.v.subarray(start, end) }, g, out)) {
      // Bounded inputs cannot get here; if they ever do, this step must not be the one that poisons the state.
      const alive = this.members.filter((m) => m.alive);
      const culprit = alive.reduce((x, m) => (m.rms[c]! > x.rms[c]! ? m : x));
      this.o.drop(culprit.conn, new GanError('E_BOUNDS', `the ${this.o.net} step on chunk ${c} gave NaN or Inf weights or moments`));
      return;
    }
    a.chunks[c]!.stage = ChunkStage.Stepped;
    // Slot members copy the new weights out of the region once the step commits.
    const to = weightsTargets(a, c);
    // What the workers will hold of this chunk: on a 16- or 8-bit wire written even when every
    // member reads the region (the view is the region's copy); packed only for frames.
    const values = encodeWeights(this.o.wire, out.w, this.o.view.current.subarray(start, end), this.o.view.next.subarray(start, end), this.wireScratch, undefined, to.length > 0);
    if (to.length > 0) {
      this.weightsBytes.sent += values.data.byteLength + (values.scales?.byteLength ?? 0);
      this.weightsBytes.raw += (end - start) * bytesPerValue(this.o.wire);
      const frame = encode({ k: Kind.WeightsChunk, net: this.o.net, version: this.o.version + 1, attempt: a.n, offset: start, ...values, fp16: values.fp16 || undefined });
      for (const c of to) this.o.send(c, frame);
    }
    if (++a.stepped === this.chunkTotal) this.stage = Stage.AwaitingReports;
    this.busyMs += performance.now() - t0;
    this.maybeCommit();
  }

  private maybeCommit(): void {
    if (this.stage !== Stage.AwaitingReports) return;
    if (this.members.some((m) => m.alive && !m.report)) return;
    this.finish(Stage.Committed);
  }

  private finish(stage: Stage.Committed | Stage.Abandoned): void {
    this.stage = stage;
    if (this.watchdog) clearInterval(this.watchdog);
    for (const m of this.members) if (m.timer) clearTimeout(m.timer);
    const applied = stage === Stage.Abandoned ? [] : this.members.filter((m) => m.alive).map((m) => ({ conn: m.conn, report: m.report! }));
    const { sent, raw } = this.weightsBytes;
    this.settle?.({ applied, busyMs: this.busyMs, relayed: relayedWeights(this.attempt), weightsRatio: raw > 0 ? sent / raw : null, attempt: this.attempt.n });
  }

  /** Start over among the survivors: a new attempt, a new plan. */
  private restart(why: string): void {
    this.o.log(`round ${this.o.round} ${this.o.net}: ${why}; reducing again among ${this.members.filter((m) => m.alive).length} (attempt ${this.attempt.n + 2})`);
    this.plan();
  }

  private onPeerLost(conn: C, peer: number, why: string): void {
    if (!this.isOpen()) return;
    // A link to a member that is gone was routed around when it left.
    if (!this.members.some((m) => m.alive && m.conn.id === peer)) return;
    // Neither end of a broken link relays again in this phase; a link already routed around costs nothing more.
    const ends = this.members.filter((m) => m.conn === conn || m.conn.id === peer);
    if (!ends.some((m) => m.relay)) return;
    for (const m of ends) m.relay = false;
    this.restart(`worker ${conn.id} lost its link to worker ${peer} (${why})`);
  }

  /** Drop members that are far behind those that reported; then relays or sends that stopped moving. */
  private checkStall(): void {
    if (!this.isOpen()) return;
    const alive = this.members.filter((m) => m.alive);
    const reported = alive.filter((m) => m.report).map((m) => m.reportedAfter);
    const limit = stragglerLimitMs(reported, alive.length);
    const now = performance.now() - this.startedAt;
    if (limit !== null && now > limit) {
      for (const m of alive) {
        if (!m.report) this.o.drop(m.conn, new GanError('E_TIMEOUT', `straggler: no ${this.o.net} gradient ${Math.round(now)} ms after the task, ${reported.length} of ${alive.length} workers reported within ${Math.round(Math.max(...reported))} ms`));
      }
      return;
    }
    if (performance.now() - this.lastProgress < this.o.stallMs) return;
    if (this.members.some((m) => m.alive && !m.report)) return; // still computing: the report timeout decides
    const a = this.attempt;
    if (a.segments.some((s) => s.kind !== 'direct')) {
      this.relays = false;
      this.restart(`relays made no progress for ${this.o.stallMs} ms; sending every gradient directly`);
      return;
    }
    for (const s of a.segments) {
      if (s.kind === 'direct' && s.member.own.some((x) => !x)) this.o.drop(s.member.conn, new GanError('E_TIMEOUT', `stopped sending its ${this.o.net} gradient for ${this.o.stallMs} ms`));
    }
  }
}
