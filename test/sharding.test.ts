import { describe, expect, it } from 'vitest';
import { EpochPlan } from '../coordinator/sharding.js';

/** Run rounds with a fixed membership until the epoch is used up or `maxRounds` pass; returns what each round used. */
function runRounds(plan: EpochPlan, workers: number[], b: number, maxRounds = Infinity): number[][] {
  const rounds: number[][] = [];
  while (plan.remaining > 0 && rounds.length < maxRounds) {
    const used: number[] = [];
    for (const w of workers) {
      const ids = plan.peek(w, b);
      used.push(...ids);
      plan.commit(w, ids.length);
    }
    if (used.length === 0) break;
    rounds.push(used);
  }
  return rounds;
}

function expectExactlyOnce(plan: EpochPlan): void {
  expect(plan.accounting()).toEqual({ samples: plan.n, usedOnce: plan.n, missing: 0, duplicated: 0 });
  expect(plan.remaining).toBe(0);
  expect(plan.used).toBe(plan.n);
}

describe('EpochPlan', () => {
  it('the permutation holds every sample once', () => {
    const plan = new EpochPlan(1000, 1, 0);
    expect([...plan.perm].sort((a, b) => a - b)).toEqual(Array.from({ length: 1000 }, (_, i) => i));
  });

  it("deals disjoint queues that together cover the epoch's samples exactly once", () => {
    const plan = new EpochPlan(103, 5, 0);
    const queues = plan.deal([2, 0, 7]);
    expect([...queues.keys()].sort()).toEqual([0, 2, 7]);
    const all = [...queues.values()].flatMap((q) => [...q]);
    expect(all).toHaveLength(103);
    expect(new Set(all).size).toBe(103);
    // Round-robin in id order: sizes differ by at most one, the lowest id first.
    expect([queues.get(0)!.length, queues.get(2)!.length, queues.get(7)!.length]).toEqual([35, 34, 34]);
  });

  it('with commits, an epoch uses every sample exactly once, the last round smaller', () => {
    const plan = new EpochPlan(95, 3, 0);
    plan.deal([0, 1, 2]);
    const rounds = runRounds(plan, [0, 1, 2], 10);
    expect(rounds.map((r) => r.length)).toEqual([30, 30, 30, 5]);
    const all = rounds.flat();
    expect(new Set(all).size).toBe(95);
    expectExactlyOnce(plan);
    // Nothing is left to peek once the epoch is used up.
    for (const w of [0, 1, 2]) expect(plan.peek(w, 10)).toHaveLength(0);
  });

  it('the order changes with the epoch and with the seed, and is the same for the same (seed, epoch)', () => {
    const a = new EpochPlan(500, 1, 0).perm;
    expect(Array.from(new EpochPlan(500, 1, 0).perm)).toEqual(Array.from(a));
    const others = [new EpochPlan(500, 1, 1).perm, new EpochPlan(500, 2, 0).perm, new EpochPlan(500, 2, 1).perm];
    for (const p of others) {
      let same = 0;
      for (let i = 0; i < 500; i++) if (p[i] === a[i]) same++;
      // A random permutation agrees with another in about one place.
      expect(same).toBeLessThan(20);
    }
    const shard = (seed: number, epoch: number) => {
      const plan = new EpochPlan(500, seed, epoch);
      return Array.from(plan.deal([0, 1]).get(0)!.subarray(0, 50));
    };
    expect(shard(1, 0)).toEqual(shard(1, 0));
    expect(shard(1, 1)).not.toEqual(shard(1, 0));
    expect(shard(2, 0)).not.toEqual(shard(1, 0));
  });

  it("the union of W workers' peeks is the next W*b entries of the permutation", () => {
    for (const [W, b] of [[1, 10], [2, 7], [3, 10], [5, 4]] as const) {
      const plan = new EpochPlan(200, 9, 2);
      const workers = Array.from({ length: W }, (_, i) => i * 3 + 1);
      plan.deal(workers);
      let pos = 0;
      for (let r = 0; r < 4; r++) {
        const union = workers.flatMap((w) => [...plan.peek(w, b)]);
        expect(union.sort((x, y) => x - y), `W=${W} b=${b} round ${r}`).toEqual([...plan.perm.subarray(pos, pos + W * b)].sort((x, y) => x - y));
        for (const w of workers) plan.commit(w, plan.peek(w, b).length);
        pos += W * b;
      }
    }
  });

  it('peek does not consume; commit does', () => {
    const plan = new EpochPlan(50, 1, 0);
    plan.deal([0]);
    const a = Array.from(plan.peek(0, 5));
    expect(Array.from(plan.peek(0, 5))).toEqual(a);
    expect(plan.used).toBe(0);
    plan.commit(0, 5);
    expect(plan.used).toBe(5);
    expect(Array.from(plan.peek(0, 5))).not.toEqual(a);
    expect(plan.peek(99, 5)).toHaveLength(0);
    expect(() => plan.commit(99, 1)).toThrow(/no queue/);
  });

  it('re-dealing after a worker leaves mid-epoch loses and duplicates nothing', () => {
    const plan = new EpochPlan(301, 4, 0);
    plan.deal([0, 1, 2]);
    runRounds(plan, [0, 1, 2], 10, 3);
    // Worker 1 was asked for a round but died before its gradient was applied: only 0 and 2 commit.
    const lost = Array.from(plan.peek(1, 10));
    for (const w of [0, 2]) plan.commit(w, plan.peek(w, 10).length);
    expect(plan.used).toBe(110);
    const queues = plan.deal([0, 2]);
    const requeued = [...queues.values()].flatMap((q) => [...q]);
    expect(requeued).toHaveLength(plan.remaining);
    for (const id of lost) expect(requeued).toContain(id);
    runRounds(plan, [0, 2], 10);
    expectExactlyOnce(plan);
  });

  it('re-dealing when workers join mid-epoch (and again when they leave) loses and duplicates nothing', () => {
    const plan = new EpochPlan(257, 8, 3);
    plan.deal([0]);
    runRounds(plan, [0], 16, 2);
    plan.deal([0, 1, 2, 3]);
    runRounds(plan, [0, 1, 2, 3], 16, 2);
    plan.deal([1, 3]);
    runRounds(plan, [1, 3], 16, 1);
    plan.deal([1, 3, 4]);
    runRounds(plan, [1, 3, 4], 16);
    expectExactlyOnce(plan);
  });

  it('after a re-deal the unused samples keep their permutation order', () => {
    const plan = new EpochPlan(120, 2, 0);
    plan.deal([0, 1]);
    runRounds(plan, [0, 1], 10, 2);
    plan.deal([5, 6, 7]);
    const union = [5, 6, 7].flatMap((w) => [...plan.peek(w, 10)]);
    const unused = [...plan.perm].filter((id) => plan.uses[id] === 0);
    expect(union.sort((a, b) => a - b)).toEqual(unused.slice(0, 30).sort((a, b) => a - b));
  });

  it('accounting reports the samples not used yet; re-dealing hands out only those', () => {
    const plan = new EpochPlan(20, 1, 0);
    plan.deal([0]);
    plan.commit(0, 5);
    expect(plan.accounting()).toEqual({ samples: 20, usedOnce: 5, missing: 15, duplicated: 0 });
    plan.deal([0]);
    const rest = Array.from(plan.peek(0, 100));
    expect(rest).toHaveLength(15);
    for (const id of rest) expect(plan.uses[id]).toBe(0);
  });

  it('resumes from saved use counts: the rest of the epoch is the unused samples only', () => {
    const plan = new EpochPlan(90, 6, 1);
    plan.deal([0, 1]);
    runRounds(plan, [0, 1], 10, 2);
    const resumed = new EpochPlan(90, 6, 1, plan.uses);
    expect(resumed.used).toBe(40);
    resumed.deal([0, 1, 2]);
    runRounds(resumed, [0, 1, 2], 10);
    expectExactlyOnce(resumed);
    expect(() => new EpochPlan(91, 6, 1, plan.uses)).toThrow(/90 samples, dataset has 91/);
  });
});
