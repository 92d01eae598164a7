/**
 * One attempt's plan of a phase's reduction (reduction.ts runs it): the segments of the sum in
 * worker-id order (topology.ts), who owns which chunk of a sharded group, the Reduce frame each
 * member is sent, and the routes that follow from them: who sends a segment's partial sum of a
 * chunk, who gets a chunk's new weights from the coordinator, who passed weights on to whom.
 */
import { COORDINATOR, Kind, NOBODY, type ReportMsg, SHARD_COORDINATOR, encode } from '../shared/wire/codec.js';
import type { Net } from '../shared/compute/model.js';
import { segments, shardOwners } from './topology.js';

/** What a reduction needs of a member's connection. */
export interface MemberConn {
  /** Worker id: the sum goes in this order. */
  id: number;
  /** Where peers reach its relay listener ('' when it has none). */
  peerUrl: string;
}

export interface ReductionMember<C extends MemberConn> {
  conn: C;
  /** Samples of its task. */
  count: number;
  /** It may relay partial sums over peer links. */
  relay: boolean;
  /** It shares this host: its gradient comes through its slot and its weights through the region, not in frames. */
  slot?: boolean;
}

export interface Member<C extends MemberConn> extends ReductionMember<C> {
  alive: boolean;
  report: ReportMsg | null;
  /** When its report arrived (ms after start()). */
  reportedAfter: number;
  /** Its own gradient's chunks received here (float32), by chunk index, kept across attempts; their root mean squares. */
  own: (Float32Array | null)[];
  rms: Float64Array;
  /**
   * A slot member's float32 gradient not yet checked: `own` views its slot, which it could still
   * write, so each chunk is measured in the read that sums it, or copied to `copy` and checked
   * there before anything else reads it (Reduction.advance).
   */
  unchecked?: { copy: Float32Array; from: Float32Array; chunks: Uint8Array };
  timer: NodeJS.Timeout | null;
}

export type Planned<C extends MemberConn> =
  | { kind: 'direct'; member: Member<C> }
  | { kind: 'chain'; members: Member<C>[]; /** The chain's partial sums, by chunk. */ tail: (Float32Array | null)[] }
  | {
    kind: 'group'; members: Member<C>[];
    /** Per chunk: SHARD_COORDINATOR, or the index in `members` of the member that sums it. */
    owners: Uint16Array;
    /** The group's partial sums of the chunks its members own, by chunk. */
    tail: (Float32Array | null)[];
  };

/** Where one chunk of the sum is in the current attempt. */
export enum ChunkStage {
  /** Members' contributions are folded in, segment by segment, as they arrive. */
  Summing,
  /** Adam has stepped it; its new weights are out. */
  Stepped,
}

export interface ChunkState {
  stage: ChunkStage;
  /** The segment whose contribution is folded next. */
  next: number;
  /** The segment at `next` has been sent the sum so far (segments that do not start the sum). */
  seeded: boolean;
  /**
   * The whole sum when it is one array already (a lone member's part, the last segment's partial
   * sum): the step reads it where it lies instead of a copy in the accumulator.
   */
  sum?: Float32Array;
}

export interface Attempt<C extends MemberConn> {
  n: number;
  segments: Planned<C>[];
  /** Samples of every member of the attempt: each member's scale is its count / total. */
  total: number;
  chunks: ChunkState[];
  stepped: number;
}

/** Attempt `n` among the live members (in id order): relay runs become chains or sharded groups. */
export function planAttempt<C extends MemberConn>(n: number, alive: Member<C>[], o: { relays: boolean; kind: 'chain' | 'group'; chunks: number; weights?: number }): Attempt<C> {
  const segs = segments(alive, o.relays, o.kind);
  const planned = segs.map((s, k): Planned<C> => {
    if (s.kind === 'direct') return s;
    const tail = new Array<Float32Array | null>(o.chunks).fill(null);
    if (s.kind === 'chain') return { ...s, tail };
    // What else crosses the coordinator's link: a model each way per direct member or chain.
    const others = segs.filter((x) => x.kind !== 'group').length;
    return { ...s, tail, owners: shardOwners(o.chunks, s.members.length, { others, seeded: k > 0, weights: o.weights }) };
  });
  return {
    n, segments: planned, total: alive.reduce((a, m) => a + m.count, 0), stepped: 0,
    chunks: Array.from({ length: o.chunks }, () => ({ stage: ChunkStage.Summing, next: 0, seeded: false })),
  };
}

/** Every member's Reduce frame for this attempt. */
export function reduceFrames<C extends MemberConn>(a: Attempt<C>, o: { round: number; net: Net; chunk: number }): [Member<C>, Uint8Array][] {
  const base = { k: Kind.Reduce as const, round: o.round, phase: o.net, attempt: a.n, total: a.total, chunk: o.chunk };
  const out: [Member<C>, Uint8Array][] = [];
  a.segments.forEach((s, k) => {
    if (s.kind === 'direct') {
      out.push([s.member, encode({ ...base, prev: NOBODY, next: COORDINATOR, nextUrl: '', partial: false, slot: s.member.slot ? true : undefined })]);
    } else if (s.kind === 'chain') {
      s.members.forEach((m, i) => {
        const prev = i > 0 ? s.members[i - 1]!.conn.id : k > 0 ? COORDINATOR : NOBODY;
        const last = i === s.members.length - 1;
        out.push([m, encode({ ...base, prev, next: last ? COORDINATOR : s.members[i + 1]!.conn.id, nextUrl: last ? '' : s.members[i + 1]!.conn.peerUrl, partial: true })]);
      });
    } else {
      const shard = {
        group: Uint32Array.from(s.members, (m) => m.conn.id), counts: Uint32Array.from(s.members, (m) => m.count),
        urls: s.members.map((m) => m.conn.peerUrl), owners: s.owners,
      };
      const frame = encode({ ...base, prev: k > 0 ? COORDINATOR : NOBODY, next: COORDINATOR, nextUrl: '', partial: true, ...shard });
      for (const m of s.members) out.push([m, frame]);
    }
  });
  return out;
}

/** Who sends segment s's partial sum of chunk c here: a chain's last member, or the group member that owns c; null when s's members send their own chunks (direct, or a chunk the coordinator owns). */
export function tailSender<C extends MemberConn>(s: Planned<C>, c: number): Member<C> | null {
  if (s.kind === 'chain') return s.members[s.members.length - 1]!;
  if (s.kind === 'group' && s.owners[c] !== SHARD_COORDINATOR) return s.members[s.owners[c]!]!;
  return null;
}

/** The members whose own chunk c this attempt sums here (direct members, and a group's members for chunks the coordinator owns). */
export function directParts<C extends MemberConn>(s: Planned<C>, c: number): Member<C>[] {
  if (s.kind === 'direct') return [s.member];
  return s.kind === 'group' && s.owners[c] === SHARD_COORDINATOR ? s.members : [];
}

/** Who gets chunk c's new weights in frames from the coordinator (slot members read the region). */
export function weightsTargets<C extends MemberConn>(a: Attempt<C>, c: number): C[] {
  return a.segments.flatMap((s) => {
    if (s.kind === 'direct') return s.member.slot ? [] : [s.member.conn];
    const sender = tailSender(s, c);
    return sender ? [sender.conn] : s.members.map((m) => m.conn);
  });
}

/** Who passed new weights on to whom in this attempt (worker ids): repairs if one of them leaves after the commit. */
export function relayedWeights<C extends MemberConn>(a: Attempt<C>): Map<number, number[]> {
  const out = new Map<number, number[]>();
  for (const s of a.segments) {
    if (s.kind === 'direct') continue;
    const ids = s.members.map((m) => m.conn.id);
    // Down a chain each member passes them to every member before it; in a group an owner passes them to every other member.
    if (s.kind === 'chain') ids.forEach((id, i) => i > 0 && out.set(id, ids.slice(0, i)));
    else for (const id of ids) out.set(id, ids.filter((x) => x !== id));
  }
  return out;
}
