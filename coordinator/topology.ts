/**
 * Which path each member's gradient takes to the coordinator in a phase, and its new weights back:
 * - star: every member sends its own gradient to the coordinator and gets the weights from it;
 * - chain: consecutive members in id order pass partial sums worker to worker, the last one
 *   sending the chain's partial sum to the coordinator; the weights go back down the same links;
 * - sharded: a group of members splits the net's chunks among themselves and the coordinator.
 *   Each member sends its part of a chunk to the chunk's owner, which sums every member's part
 *   in id order and sends the sum to the coordinator; the coordinator steps it and sends the new
 *   weights to the owner, which passes them to the others (a reduce-scatter and an all-gather, as
 *   hivemind's butterfly all-reduce: each part decoded and encoded once). Chunks the coordinator
 *   owns itself travel as in the star, so its link takes a share of the load (shardOwners).
 * Whatever the path, the sum is the same bits (shared/numerics/fold.ts); only the bytes per link
 * change.
 */
import { isLoopback } from '../shared/wire/address.js';
import { SHARD_COORDINATOR } from '../shared/wire/protocol.js';

/** How a phase's sum travels: `auto` shards among workers on other hosts from two of them, else star. */
export type Topology = 'auto' | 'star' | 'chain' | 'sharded';
export const TOPOLOGIES: readonly Topology[] = ['auto', 'star', 'chain', 'sharded'];

/** What the topology needs to know of a worker. */
export interface RelayCandidate {
  /** Where peers reach its relay listener ('' when it has none). */
  peerUrl: string;
  /** The address the coordinator sees it at. */
  remoteIp: string;
}

export interface TopologyChoice {
  kind: 'star' | 'chain' | 'sharded';
  /** Which workers take part in chains or the sharded group. */
  relay: boolean[];
  /** Why, in a few words (logged when the choice changes). */
  why: string;
}

/**
 * The topology of a phase among these workers. On one host relaying only adds copies, so `auto`
 * shards among workers on other hosts, from two of them (bench:hosts: at 200 Mbit/s the sharded
 * plan moved the fewest bytes per link and was the fastest for W = 2 and 4 on every wire). An
 * explicit chain or sharded uses every worker that can relay, on this host too.
 */
export function chooseTopology(workers: RelayCandidate[], policy: Topology): TopologyChoice {
  const able = workers.map((w) => w.peerUrl !== '');
  const none = workers.map(() => false);
  if (policy === 'star') return { kind: 'star', relay: none, why: '--topology star' };
  if (policy === 'chain' || policy === 'sharded') {
    const n = able.filter(Boolean).length;
    return n >= 2 ? { kind: policy, relay: able, why: `--topology ${policy}, ${n} workers that relay` } : { kind: 'star', relay: none, why: `--topology ${policy}, but fewer than 2 workers relay` };
  }
  const remote = workers.map((w, i) => able[i]! && !isLoopback(w.remoteIp));
  const n = remote.filter(Boolean).length;
  return n >= 2 ? { kind: 'sharded', relay: remote, why: `${n} workers on other hosts relay` } : { kind: 'star', relay: none, why: n === 1 ? 'one worker on another host' : 'every worker on this host' };
}

/**
 * One stretch of the sum: a member that sends its own gradient, a chain whose last member sends
 * the partial sum, or a sharded group (every member sends its part of a chunk to the chunk's owner).
 */
export type Segment<M> = { kind: 'direct'; member: M } | { kind: 'chain'; members: M[] } | { kind: 'group'; members: M[] };

/**
 * The members (in id order) as segments of the sum: maximal runs of members that may relay become
 * chains or groups, everyone else sends directly. A run of one would only add a hop: it sends directly.
 */
export function segments<M extends { relay: boolean }>(members: M[], relays: boolean, kind: 'chain' | 'group' = 'chain'): Segment<M>[] {
  const out: Segment<M>[] = [];
  for (let i = 0; i < members.length;) {
    let j = i;
    while (relays && j < members.length && members[j]!.relay) j++;
    if (j - i >= 2) {
      out.push({ kind, members: members.slice(i, j) });
      i = j;
    } else {
      out.push({ kind: 'direct', member: members[i]! });
      i++;
    }
  }
  return out;
}

/** What a sharded group's plan must know besides its size: the rest of the coordinator's traffic and the weights' bytes. */
export interface ShardLoad {
  /** Direct members and chains beside the group (each a model through the coordinator's link each way). */
  others: number;
  /** The group's sum starts from a partial sum the coordinator sends its owners (members before it). */
  seeded: boolean;
  /** Bytes of new weights per byte of gradient on the wire (fp32's XOR deltas: about 0.7; default 1). */
  weights?: number;
}

/**
 * The busiest direction of a member's link and of the coordinator's, in models of the net, when
 * the coordinator owns the share `f` of a group of `k` members' chunks. A member sends its parts
 * ((1 - f)(k - 1)/k to other owners, f to the coordinator), the sums of its own chunks ((1 - f)/k)
 * and their weights to the other members (w (1 - f)(k - 1)/k); it receives the others' parts of its
 * chunks, every chunk's weights (w) and, seeded, its chunks' seeds. The coordinator receives the
 * sums of the members' chunks (1 - f) and every member's part of its own (f k), and sends weights
 * for as many, plus the seeds.
 */
export function shardLoads(k: number, f: number, o: ShardLoad): { member: number; coordinator: number } {
  const w = o.weights ?? 1;
  const passed = ((1 - f) * (k - 1)) / k;
  const member = Math.max(1 + w * passed, passed + w + (o.seeded ? (1 - f) / k : 0));
  const fan = o.others + (1 - f) + f * k;
  return { member, coordinator: Math.max(fan, w * fan + (o.seeded ? 1 - f : 0)) };
}

/**
 * Who owns each chunk of a sharded group of `k` members: SHARD_COORDINATOR or a member's index in
 * the group. The coordinator's share is the one that makes the busier of its link and a member's
 * least (shardLoads). Owned chunks are spread evenly through the net and the members' go round
 * robin, so every link is busy from the first chunk on.
 */
export function shardOwners(chunks: number, k: number, o: ShardLoad): Uint16Array {
  const load = (n: number) => {
    const l = shardLoads(k, n / chunks, o);
    return Math.max(l.member, l.coordinator);
  };
  let best = 0;
  for (let n = 1; n < chunks; n++) if (load(n) < load(best) - 1e-12) best = n;
  const owners = new Uint16Array(chunks);
  let member = 0;
  for (let c = 0; c < chunks; c++) {
    // The coordinator's chunks at even spacing: chunk c is its own when floor((c+1) best / chunks) steps up.
    const mine = Math.floor(((c + 1) * best) / chunks) > Math.floor((c * best) / chunks);
    owners[c] = mine ? SHARD_COORDINATOR : member++ % k;
  }
  return owners;
}
