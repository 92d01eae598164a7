/**
 * One phase's reduction: every member's gradient summed in worker-id order, chunk by chunk as the
 * chunks arrive, one Adam step per chunk as soon as that chunk's sum is complete, and each chunk of
 * the new weights sent at once. Upload, reduction, Adam and download overlap instead of adding up.
 *
 * Members either send their own gradient here (direct) or belong to a relay chain: consecutive
 * members (in id order) that pass partial sums worker to worker, the last one sending the chain's
 * partial here, while new weights travel back down the same links. The coordinator folds direct
 * members itself and seeds a chain that does not start the sum with the partial so far. Either way
 * the sum is s0*g0 + s1*g1 + ... in id order, each add rounded to float32 (shared/numerics/fold.ts), so a
 * relayed reduction equals the direct one bit for bit.
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
 * - No step can poison the state. A gradient value beyond GRADIENT_LIMIT (where float32 squares
 *   would overflow Adam's second moment) or a direct member's chunk more than PEER_FACTOR times
 *   larger (root mean square) than the median of the others' is refused and its sender dropped
 *   (E_BOUNDS). A chain's partial sum out of bounds cannot name its culprit: the phase is reduced
 *   again with every gradient sent here, where it can. A step whose new weights or moments are not
 *   finite is never committed.
 * - A member that has not reported long after the others did is a straggler: once half have
 *   reported, it gets STRAGGLER_FACTOR times their median time (at least STRAGGLER_MIN_MS), then it
 *   is dropped (E_TIMEOUT) instead of holding the phase for the whole --round-timeout.
 */
import { isLoopback } from '../shared/wire/address.js';
import { GanError } from '../shared/wire/errors.js';
import { chunkCount, chunkRange, foldInto } from '../shared/numerics/fold.js';
import { fromHalf } from '../shared/numerics/half.js';
import type { Net } from '../shared/compute/model.js';
import { COORDINATOR, type ChunkMsg, Kind, type Message, NOBODY, type ReportMsg, encode } from '../shared/wire/codec.js';
import { type AdamHyper, adamApply, allFinite, magnitude } from './optimizer.js';
import type { WorkerConn } from './worker-pool.js';

/** Largest gradient value accepted: its square (about 1e30) stays far inside float32. */
export const GRADIENT_LIMIT = 1e15;
/** A direct member's chunk may be at most this many times larger than the median of its peers'. */
export const PEER_FACTOR = 1000;
/**
 * The smallest reference a chunk is compared with: peers whose gradients vanish (or are zero on
 * purpose) must not make an ordinary gradient look like an outlier.
 */
const PEER_FLOOR = 1e-3;
/** Stragglers get this many times the median report time of the members that reported, ... */
export const STRAGGLER_FACTOR = 8;
/** ... but never less than this. */
export const STRAGGLER_MIN_MS = 3000;

export interface ReductionMember {
  conn: WorkerConn;
  /** Samples of its task. */
  count: number;
  /** It may relay partial sums over peer links. */
  relay: boolean;
}

export interface ReductionOptions {
  net: Net;
  round: number;
  epoch: number;
  /** Members in worker-id order, each with its task's sample ids. */
  members: { member: ReductionMember; ids: Uint32Array }[];
  /** Versions of D and G the tasks name. */
  versions: { D: number; G: number };
  chunk: number;
  fp16: boolean;
  /** Current weights and moments (read only) and where the new ones go. */
  current: { w: Float32Array; m: Float32Array; v: Float32Array };
  next: { w: Float32Array; m: Float32Array; v: Float32Array };
  hyper: AdamHyper;
  /** Scratch of the net's size for the running sums. */
  acc: Float32Array;
  reportTimeoutMs: number;
  stallMs: number;
  send(c: WorkerConn, frame: Uint8Array): void;
  drop(c: WorkerConn, e: GanError): void;
  log(line: string): void;
}

export interface ReductionResult {
  /** Members whose gradients the step applied, in id order, with their reports (empty: no step). */
  applied: { conn: WorkerConn; report: ReportMsg }[];
  /** The coordinator's own work: folding, Adam, packing and handing chunks to the sockets. */
  busyMs: number;
  attempts: number;
  /** Chains of the committed attempt (member ids, in id order), for repairs if a link breaks later. */
  chains: number[][];
}

interface Member extends ReductionMember {
  report: ReportMsg | null;
  /** When its report arrived (ms after the tasks went out). */
  reportedAfter: number;
  /** Its own gradient's chunks received here (float32), by chunk index, and their root mean squares. */
  raw: (Float32Array | null)[];
  rms: Float64Array;
  timer: NodeJS.Timeout | null;
  alive: boolean;
}

type Segment = { kind: 'direct'; m: Member } | { kind: 'chain'; ms: Member[]; tail: (Float32Array | null)[] };

export class Reduction {
  private readonly members: Member[];
  private readonly size: number;
  private readonly chunks: number;
  private attempt = 0;
  private segments: Segment[] = [];
  private total = 0;
  /** Per chunk: the segment the sum has reached, and whether that chain was seeded. */
  private pos: Int32Array;
  private seeded: Uint8Array;
  private stepped = 0;
  private relayAllowed = true;
  private busyMs = 0;
  private lastProgress = performance.now();
  private watchdog: NodeJS.Timeout | null = null;
  private settle: ((r: ReductionResult) => void) | null = null;
  private finished = false;
  private readonly startedAt = performance.now();

  constructor(private readonly o: ReductionOptions) {
    this.size = o.current.w.length;
    this.chunks = chunkCount(this.size, o.chunk);
    this.pos = new Int32Array(this.chunks);
    this.seeded = new Uint8Array(this.chunks);
    this.members = o.members.map(({ member }) => ({
      ...member, report: null, reportedAfter: 0, raw: new Array<Float32Array | null>(this.chunks).fill(null), rms: new Float64Array(this.chunks), timer: null, alive: true,
    }));
  }

  /** Send the tasks and the first plan; resolves when the step is committed or no member is left. */
  run(): Promise<ReductionResult> {
    return new Promise((resolve) => {
      this.settle = resolve;
      this.o.members.forEach(({ ids }, i) => {
        const m = this.members[i]!;
        m.timer = setTimeout(() => this.o.drop(m.conn, new GanError('E_TIMEOUT', `no ${this.o.net} gradient for round ${this.o.round} within ${this.o.reportTimeoutMs} ms`)), this.o.reportTimeoutMs);
        m.timer.unref();
        this.o.send(m.conn, encode({ k: Kind.Task, round: this.o.round, epoch: this.o.epoch, phase: this.o.net, dVersion: this.o.versions.D, gVersion: this.o.versions.G, ids }));
      });
      this.watchdog = setInterval(() => this.checkStall(), Math.max(50, Math.min(1000, this.o.stallMs / 4)));
      this.watchdog.unref();
      this.plan();
    });
  }

  /** A message from a worker while this phase is open. Throws GanError for anything invalid (the pool drops the sender). */
  onMessage(c: WorkerConn, msg: Message): void {
    const m = this.members.find((x) => x.conn === c && x.alive);
    if (msg.k === Kind.PeerLost) return this.onPeerLost(c, msg.peer, `${msg.code} ${msg.reason}`);
    if (msg.k !== Kind.Report && msg.k !== Kind.Chunk) throw new GanError('E_UNEXPECTED', `workers may not send ${Kind[msg.k] ?? msg.k} during a phase`);
    if (!m || msg.round !== this.o.round || msg.phase !== this.o.net) {
      throw new GanError('E_STALE', `${Kind[msg.k]} for round ${msg.round} phase ${msg.phase} is not open for this worker (duplicate or stale)`);
    }
    if (msg.k === Kind.Report) this.onReport(m, msg);
    else this.onChunk(m, msg);
  }

  /** A member's connection ended (any reason). */
  lost(c: WorkerConn): void {
    const m = this.members.find((x) => x.conn === c && x.alive);
    if (!m) return;
    m.alive = false;
    if (m.timer) clearTimeout(m.timer);
    if (this.finished) return;
    this.restart(`worker ${c.id} left`);
  }

  private onReport(m: Member, r: ReportMsg): void {
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

  private onChunk(m: Member, x: ChunkMsg): void {
    const t0 = performance.now();
    if (x.offset % this.o.chunk !== 0 || x.offset >= this.size) throw new GanError('E_SHAPE', `chunk offset ${x.offset} is not a chunk boundary of ${this.o.net}`);
    const c = x.offset / this.o.chunk;
    const [start, end] = chunkRange(this.size, this.o.chunk, c);
    if (x.data.length !== end - start) throw new GanError('E_SHAPE', `chunk at ${x.offset} has ${x.data.length} values, expected ${end - start}`);
    let data: Float32Array;
    if (x.partial) {
      // An attempt that was given up may still have chunks on their way: they are not an error.
      if (x.attempt < this.attempt) return;
      const seg = this.segments.find((s): s is Extract<Segment, { kind: 'chain' }> => s.kind === 'chain' && s.ms[s.ms.length - 1] === m);
      if (!seg || x.attempt !== this.attempt) throw new GanError('E_STALE', `partial sum of attempt ${x.attempt} from a worker that is not the end of a chain of attempt ${this.attempt}`);
      if (x.fp16) throw new GanError('E_SHAPE', 'partial sums are float32');
      if (seg.tail[c]) throw new GanError('E_STALE', `second partial sum for chunk ${c}`);
      data = x.data as Float32Array;
      const { maxAbs } = magnitude(data);
      if (Number.isNaN(maxAbs)) throw new GanError('E_NONFINITE', `partial sum of ${this.o.net} has NaN or Inf values`);
      if (maxAbs > GRADIENT_LIMIT) {
        // Someone in the chain sent an outsized gradient; only a direct reduction can tell who.
        this.relayAllowed = false;
        this.restart(`a relayed partial sum of ${this.o.net} is out of bounds (|value| ${maxAbs.toExponential(2)}); reducing directly to find its source`);
        return;
      }
      seg.tail[c] = data;
    } else {
      if (x.fp16 !== this.o.fp16) throw new GanError('E_SHAPE', `gradient precision ${x.fp16 ? 'fp16' : 'fp32'} differs from the run's`);
      if (m.raw[c]) throw new GanError('E_STALE', `second gradient chunk at ${x.offset}`);
      data = x.data instanceof Uint16Array ? fromHalf(x.data) : x.data;
      const { maxAbs, rms } = magnitude(data);
      if (Number.isNaN(maxAbs)) throw new GanError('E_NONFINITE', `gradient for ${this.o.net} has NaN or Inf values`);
      if (maxAbs > GRADIENT_LIMIT) throw new GanError('E_BOUNDS', `gradient for ${this.o.net} has a value of ${maxAbs.toExponential(2)}, beyond ${GRADIENT_LIMIT.toExponential(0)}`);
      m.raw[c] = data;
      m.rms[c] = rms;
    }
    this.lastProgress = performance.now();
    this.busyMs += this.lastProgress - t0;
    this.advance(c);
  }

  /** Who relays in this attempt, with what scale; tell every member. */
  private plan(): void {
    const alive = this.members.filter((m) => m.alive);
    this.total = alive.reduce((a, m) => a + m.count, 0);
    this.segments = [];
    for (let i = 0; i < alive.length; ) {
      let j = i;
      while (this.relayAllowed && j < alive.length && alive[j]!.relay) j++;
      // A chain of one would only add a hop: it sends directly.
      if (j - i >= 2) {
        this.segments.push({ kind: 'chain', ms: alive.slice(i, j), tail: new Array<Float32Array | null>(this.chunks).fill(null) });
        i = j;
      } else {
        this.segments.push({ kind: 'direct', m: alive[i]! });
        i++;
      }
    }
    this.pos.fill(0);
    this.seeded.fill(0);
    this.stepped = 0;
    this.lastProgress = performance.now();
    this.segments.forEach((s, k) => {
      if (s.kind === 'direct') return this.sendReduce(s.m, NOBODY, COORDINATOR, '', false);
      s.ms.forEach((m, i) => {
        const prev = i > 0 ? s.ms[i - 1]!.conn.id : k > 0 ? COORDINATOR : NOBODY;
        const last = i === s.ms.length - 1;
        this.sendReduce(m, prev, last ? COORDINATOR : s.ms[i + 1]!.conn.id, last ? '' : s.ms[i + 1]!.conn.peerUrl, true);
      });
    });
    if (this.total === 0) return this.finish();
    for (let c = 0; c < this.chunks; c++) this.advance(c);
  }

  private sendReduce(m: Member, prev: number, next: number, nextUrl: string, partial: boolean): void {
    this.o.send(m.conn, encode({ k: Kind.Reduce, round: this.o.round, phase: this.o.net, attempt: this.attempt, total: this.total, chunk: this.o.chunk, prev, next, nextUrl, partial }));
  }

  /** Carry chunk c's sum as far as the data here allows; step it when it is complete. */
  private advance(c: number): void {
    if (this.finished) return;
    const t0 = performance.now();
    const [start, end] = chunkRange(this.size, this.o.chunk, c);
    const acc = this.o.acc.subarray(start, end);
    if (this.pos[c] === 0) {
      // Every direct member's chunk is here before any is folded: they are judged against each other.
      const direct = this.segments.flatMap((s) => (s.kind === 'direct' ? [s.m] : []));
      if (direct.some((m) => !m.raw[c])) return;
      const outlier = this.outlier(direct, c);
      if (outlier) {
        this.o.drop(outlier.conn, new GanError('E_BOUNDS', `${this.o.net} gradient chunk ${c} has root mean square ${outlier.rms[c]!.toExponential(2)}, over ${PEER_FACTOR} times its peers' median (${this.medianRms(direct, c, outlier).toExponential(2)})`));
        return;
      }
    }
    while (this.pos[c]! < this.segments.length) {
      const k = this.pos[c]!;
      const s = this.segments[k]!;
      if (s.kind === 'direct') {
        const g = s.m.raw[c];
        if (!g) break;
        foldInto(acc, g, s.m.count / this.total, k === 0);
      } else {
        if (k > 0 && !this.seeded[c]) {
          // The chain continues the sum so far.
          this.seeded[c] = 1;
          this.o.send(s.ms[0]!.conn, encode({ k: Kind.Chunk, round: this.o.round, phase: this.o.net, attempt: this.attempt, offset: start, partial: true, fp16: false, data: acc }));
        }
        const tail = s.tail[c];
        if (!tail) break;
        acc.set(tail);
      }
      this.pos[c] = k + 1;
    }
    if (this.pos[c] === this.segments.length) this.step(c, start, end);
    this.busyMs += performance.now() - t0;
  }

  /** The direct member whose chunk c is far larger than its peers', if one is. */
  private outlier(direct: Member[], c: number): Member | null {
    if (direct.length < 2) return null;
    const biggest = direct.reduce((a, m) => (m.rms[c]! > a.rms[c]! ? m : a));
    return biggest.rms[c]! > PEER_FACTOR * Math.max(PEER_FLOOR, this.medianRms(direct, c, biggest)) ? biggest : null;
  }

  private medianRms(direct: Member[], c: number, except: Member): number {
    const others = direct.filter((m) => m !== except).map((m) => m.rms[c]!).sort((a, b) => a - b);
    return others[Math.floor((others.length - 1) / 2)]!;
  }

  /** Adam on one chunk, into the next buffers, and its new weights out to every direct member and chain end. */
  private step(c: number, start: number, end: number): void {
    const { current: cur, next } = this.o;
    const g = this.o.acc.subarray(start, end);
    const out = { w: next.w.subarray(start, end), m: next.m.subarray(start, end), v: next.v.subarray(start, end) };
    adamApply(cur.w.subarray(start, end), g, cur.m.subarray(start, end), cur.v.subarray(start, end), this.o.hyper, out);
    if (!allFinite(out.w) || !allFinite(out.m) || !allFinite(out.v)) {
      // Bounded inputs cannot get here; if they ever do, this step must not be the one that poisons the state.
      const all = this.members.filter((m) => m.alive);
      const culprit = all.reduce((a, m) => (m.rms[c]! > a.rms[c]! ? m : a));
      this.o.drop(culprit.conn, new GanError('E_BOUNDS', `the ${this.o.net} step on chunk ${c} gave NaN or Inf weights or moments`));
      return;
    }
    this.pos[c] = this.segments.length + 1;
    const frame = encode({ k: Kind.WeightsChunk, net: this.o.net, version: this.o.versions[this.o.net] + 1, attempt: this.attempt, offset: start, data: next.w.subarray(start, end) });
    for (const s of this.segments) this.o.send(s.kind === 'direct' ? s.m.conn : s.ms[s.ms.length - 1]!.conn, frame);
    this.stepped++;
    this.maybeCommit();
  }

  private maybeCommit(): void {
    if (this.finished || this.stepped < this.chunks) return;
    if (this.members.some((m) => m.alive && !m.report)) return;
    this.finish();
  }

  private finish(): void {
    if (this.finished) return;
    this.finished = true;
    if (this.watchdog) clearInterval(this.watchdog);
    for (const m of this.members) if (m.timer) clearTimeout(m.timer);
    const applied = this.total === 0 ? [] : this.members.filter((m) => m.alive).map((m) => ({ conn: m.conn, report: m.report! }));
    const chains = this.segments.flatMap((s) => (s.kind === 'chain' ? [s.ms.map((m) => m.conn.id)] : []));
    this.settle?.({ applied, busyMs: this.busyMs, attempts: this.attempt + 1, chains });
  }

  /** Start over among the survivors: a new attempt, a new plan. */
  private restart(why: string): void {
    this.attempt++;
    this.o.log(`round ${this.o.round} ${this.o.net}: ${why}; reducing again among ${this.members.filter((m) => m.alive).length} (attempt ${this.attempt + 1})`);
    for (const s of this.segments) if (s.kind === 'chain') s.tail.fill(null);
    this.plan();
  }

  private onPeerLost(c: WorkerConn, peer: number, why: string): void {
    if (this.finished) return;
    // A link to a member that is gone was routed around when it left.
    if (!this.members.some((m) => m.alive && m.conn.id === peer)) return;
    // Neither end of a broken link relays again in this phase; a link already routed around costs nothing more.
    const ends = this.members.filter((m) => m.conn === c || m.conn.id === peer);
    if (!ends.some((m) => m.relay)) return;
    for (const m of ends) m.relay = false;
    this.restart(`worker ${c.id} lost its link to worker ${peer} (${why})`);
  }

  /** Drop members that are far behind those that reported; then relays or sends that stopped moving. */
  private checkStall(): void {
    if (this.finished) return;
    const alive = this.members.filter((m) => m.alive);
    const reported = alive.filter((m) => m.report).map((m) => m.reportedAfter).sort((a, b) => a - b);
    if (reported.length > 0 && reported.length * 2 >= alive.length && reported.length < alive.length) {
      const limit = Math.max(STRAGGLER_MIN_MS, STRAGGLER_FACTOR * reported[Math.floor((reported.length - 1) / 2)]!);
      const now = performance.now() - this.startedAt;
      if (now > limit) {
        for (const m of alive) {
          if (!m.report) this.o.drop(m.conn, new GanError('E_TIMEOUT', `straggler: no ${this.o.net} gradient ${Math.round(now)} ms after the task, ${reported.length} of ${alive.length} workers reported within ${Math.round(reported[reported.length - 1]!)} ms`));
        }
        return;
      }
    }
    if (performance.now() - this.lastProgress < this.o.stallMs) return;
    if (this.members.some((m) => m.alive && !m.report)) return; // still computing: the report timeout decides
    if (this.segments.some((s) => s.kind === 'chain')) {
      this.relayAllowed = false;
      this.restart(`relays made no progress for ${this.o.stallMs} ms; sending every gradient directly`);
      return;
    }
    for (const s of this.segments) {
      if (s.kind === 'direct' && s.m.raw.some((x) => !x)) this.o.drop(s.m.conn, new GanError('E_TIMEOUT', `stopped sending its ${this.o.net} gradient for ${this.o.stallMs} ms`));
    }
  }
}

/** When workers relay partial sums to each other: `auto` when at least three can and sit on other hosts than the coordinator. */
export type RelayPolicy = 'auto' | 'always' | 'never';

/**
 * Which of these workers relay in a phase. On one host relaying only adds copies, so `auto` relays
 * among workers on other hosts, and only when there are at least three of them (with two, a chain
 * saves the coordinator's link one copy of the model and costs each worker's link one).
 */
export function relayRoles(workers: WorkerConn[], policy: RelayPolicy): boolean[] {
  const able = workers.map((w) => w.peerUrl !== '');
  if (policy === 'never') return workers.map(() => false);
  if (policy === 'always') return able;
  const remote = workers.map((w, i) => able[i]! && !isLoopback(w.remoteIp));
  return remote.filter(Boolean).length >= 3 ? remote : workers.map(() => false);
}
