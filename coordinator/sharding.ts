/**
 * Which samples each worker uses in an epoch.
 *
 * Invariants:
 * - An epoch is a seeded permutation of all samples (seed, epoch). Every sample is used exactly
 *   once per epoch: a sample counts as used when the D-phase gradient computed on it is applied.
 * - The unused samples, in permutation order, are dealt round-robin to the live workers in id
 *   order (worker k of W gets positions k, k+W, ...). With a fixed membership one round's samples
 *   across W workers at batch b are therefore exactly the next W*b samples of the permutation:
 *   the same samples one worker at batch W*b would use.
 * - When membership changes (a worker dies or joins), the unused samples are dealt again among
 *   the workers now live; nothing a dead worker was given and did not finish is lost.
 * - The last round of an epoch uses what is left (smaller batches, never repeated samples).
 */
import { Kind, encode } from '../shared/wire/codec.js';
import type { Dataset } from '../shared/data/mnist.js';
import { Stream, permutation } from '../shared/compute/rng.js';
import { DIGIT_PIXELS, digitBytes } from '../shared/data/digits.js';

export class EpochPlan {
  readonly perm: Uint32Array;
  /** How many times each sample's gradient was applied this epoch (must end at exactly 1). */
  readonly uses: Uint8Array;
  private queues = new Map<number, { ids: Uint32Array; next: number }>();
  private usedCount = 0;

  constructor(readonly n: number, readonly seed: number, readonly epoch: number, uses?: Uint8Array) {
    this.perm = permutation(n, seed, Stream.epochOrder, epoch);
    this.uses = uses ? uses.slice() : new Uint8Array(n);
    if (this.uses.length !== n) throw new Error(`epoch state has ${this.uses.length} samples, dataset has ${n}`);
    for (let i = 0; i < n; i++) if (this.uses[i]) this.usedCount++;
  }

  get used(): number {
    return this.usedCount;
  }

  get remaining(): number {
    return this.n - this.usedCount;
  }

  /** Deal every unused sample to `workers` (ids, ascending). Returns each worker's new queue. */
  deal(workers: number[]): Map<number, Uint32Array> {
    const order = [...workers].sort((a, b) => a - b);
    const unused: number[] = [];
    for (const id of this.perm) if (!this.uses[id]) unused.push(id);
    const out = new Map<number, Uint32Array>();
    const W = order.length;
    order.forEach((w, k) => {
      const q = new Uint32Array(Math.max(0, Math.ceil((unused.length - k) / W)));
      for (let j = 0, i = k; i < unused.length; i += W, j++) q[j] = unused[i]!;
      out.set(w, q);
    });
    this.queues = new Map([...out].map(([w, ids]) => [w, { ids, next: 0 }]));
    return out;
  }

  /** The next (up to) b samples of a worker's queue, without consuming them. */
  peek(worker: number, b: number): Uint32Array {
    const q = this.queues.get(worker);
    if (!q) return new Uint32Array(0);
    return q.ids.subarray(q.next, Math.min(q.ids.length, q.next + b));
  }

  /** The worker's gradient on these (its current peek) was applied: they are used. */
  commit(worker: number, count: number): void {
    const q = this.queues.get(worker);
    if (!q) throw new Error(`worker ${worker} has no queue`);
    for (let i = q.next; i < q.next + count; i++) {
      const id = q.ids[i]!;
      if (this.uses[id]! === 0) this.usedCount++;
      this.uses[id] = Math.min(255, this.uses[id]! + 1);
    }
    q.next += count;
  }

  /** Per-epoch accounting: how many samples were used once, never, more than once. */
  accounting(): { samples: number; usedOnce: number; missing: number; duplicated: number } {
    let once = 0, missing = 0, dup = 0;
    for (const u of this.uses) {
      if (u === 1) once++;
      else if (u === 0) missing++;
      else dup++;
    }
    return { samples: this.n, usedOnce: once, missing, duplicated: dup };
  }
}

/**
 * The rounds a run plans: an epoch of `samples` at `workers` x `batchSize` per round (x syncEvery
 * local steps in a low-communication run, whose rounds are syncs), cut at --max-rounds (0: no cut).
 */
export function roundPlan(samples: number, c: { workers: number; batchSize: number; epochs: number; maxRounds: number; syncEvery?: number }): { perEpoch: number; total: number } {
  const perEpoch = Math.ceil(samples / Math.max(1, c.workers * c.batchSize * (c.syncEvery ?? 1)));
  const all = perEpoch * c.epochs;
  return { perEpoch, total: c.maxRounds > 0 ? Math.min(c.maxRounds, all) : all };
}

/** Shards go out in pieces of this many samples. */
export const SHARD_CHUNK = 4096;

/** The samples a worker holds in an epoch (so a re-deal ships only what it lacks). */
export interface HeldShard {
  ids: Set<number>;
  epoch: number;
}

/**
 * Frames carrying the images (and labels) of `queue` that the worker does not hold yet; the first
 * frame of a new epoch tells it to drop what it held before.
 */
export function shardFrames(held: HeldShard, queue: Uint32Array, epoch: number, data: Dataset): Uint8Array[] {
  const reset = held.epoch !== epoch;
  if (reset) {
    held.ids.clear();
    held.epoch = epoch;
  }
  const missing = queue.filter((id) => !held.ids.has(id));
  const frames: Uint8Array[] = [];
  for (let off = 0; off < missing.length || (reset && off === 0); off += SHARD_CHUNK) {
    const ids = missing.subarray(off, off + SHARD_CHUNK);
    const images = new Uint8Array(ids.length * DIGIT_PIXELS);
    const labels = new Uint8Array(ids.length);
    ids.forEach((id, i) => {
      images.set(digitBytes(data.images, id), i * DIGIT_PIXELS);
      labels[i] = data.labels[id]!;
      held.ids.add(id);
    });
    frames.push(encode({ k: Kind.Shard, epoch, reset: reset && off === 0, ids, images, labels }));
    if (ids.length === 0) break;
  }
  return frames;
}
