/**
 * Which path each member's gradient takes to the coordinator in a phase: straight there (direct),
 * or through a relay chain of consecutive members in id order that pass partial sums worker to
 * worker, the last one sending the chain's partial sum to the coordinator. Whatever the path, the
 * sum is the same bits (shared/numerics/fold.ts); only the bytes per link change.
 */
import { isLoopback } from '../shared/wire/address.js';

/** When workers relay partial sums to each other: `auto` when at least two can and sit on other hosts than the coordinator. */
export type RelayPolicy = 'auto' | 'always' | 'never';

/** What the topology needs to know of a worker. */
export interface RelayCandidate {
  /** Where peers reach its relay listener ('' when it has none). */
  peerUrl: string;
  /** The address the coordinator sees it at. */
  remoteIp: string;
}

/**
 * Which of these workers may relay in a phase. On one host relaying only adds copies, so `auto`
 * relays among workers on other hosts, from two of them: with two, a chain moves the same two
 * models per phase through the relay's link instead of the coordinator's, and the relay, not the
 * coordinator, adds the first gradient. Measured at 200 Mbit/s (bench:hosts, three runs, three
 * wires each), two relayed workers were 2-8% faster than two direct ones in eight of nine pairs,
 * and tied in the ninth.
 */
export function relayRoles(workers: RelayCandidate[], policy: RelayPolicy): boolean[] {
  const able = workers.map((w) => w.peerUrl !== '');
  if (policy === 'never') return workers.map(() => false);
  if (policy === 'always') return able;
  const remote = workers.map((w, i) => able[i]! && !isLoopback(w.remoteIp));
  return remote.filter(Boolean).length >= 2 ? remote : workers.map(() => false);
}

/** One stretch of the sum: a member that sends its own gradient, or a chain whose last member sends the partial sum. */
export type Segment<M> = { kind: 'direct'; member: M } | { kind: 'chain'; members: M[] };

/**
 * The members (in id order) as segments of the sum: maximal runs of members that may relay become
 * chains, everyone else sends directly. A chain of one would only add a hop: it sends directly.
 */
export function segments<M extends { relay: boolean }>(members: M[], relays: boolean): Segment<M>[] {
  const out: Segment<M>[] = [];
  for (let i = 0; i < members.length;) {
    let j = i;
    while (relays && j < members.length && members[j]!.relay) j++;
    if (j - i >= 2) {
      out.push({ kind: 'chain', members: members.slice(i, j) });
      i = j;
    } else {
      out.push({ kind: 'direct', member: members[i]! });
      i++;
    }
  }
  return out;
}
