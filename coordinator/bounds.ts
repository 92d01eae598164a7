/**
 * What a gradient may be before it is summed: the rules that keep any step from poisoning the
 * coordinator's state, and the rule for how long a phase waits for a slow member.
 *
 * - A value beyond GRADIENT_LIMIT (where float32 squares would overflow Adam's second moment) is
 *   refused (E_BOUNDS); NaN or Inf anywhere is refused (E_NONFINITE).
 * - A direct member's chunk more than PEER_FACTOR times larger (root mean square) than the median
 *   of its peers' is an outlier (E_BOUNDS), with a floor so that peers whose gradients vanish do
 *   not make an ordinary one look huge.
 * - A member that has not reported long after the others did is a straggler: once half have
 *   reported, it gets STRAGGLER_FACTOR times their median time (at least STRAGGLER_MIN_MS).
 */
import type { Net } from '../shared/compute/model.js';
import { GanError } from '../shared/wire/errors.js';
import { magnitude } from './optimizer.js';
import { VALUE_LIMIT } from '../shared/numerics/wire-format.js';

/** Largest gradient value accepted: its square (about 1e30) stays far inside float32 (the wire's limit). */
export const GRADIENT_LIMIT = VALUE_LIMIT;
/** A direct member's chunk may be at most this many times larger than the median of its peers'. */
export const PEER_FACTOR = 1000;
/** The smallest reference a chunk is compared with. */
const PEER_FLOOR = 1e-3;
/** Stragglers get this many times the median report time of the members that reported, ... */
export const STRAGGLER_FACTOR = 8;
/** ... but never less than this. */
export const STRAGGLER_MIN_MS = 3000;

/**
 * A member's own gradient chunk: its root mean square, or E_NONFINITE / E_BOUNDS. With `from` (a
 * slot in shared memory), the chunk is copied from there into `data` in the same pass, and what is
 * checked is what was copied.
 */
export function checkGradient(data: Float32Array, net: Net, from?: Float32Array): number {
  return judgeMagnitude(magnitude(from ?? data, undefined, from ? data : undefined), net);
}

/** A gradient's measured magnitude within bounds: its root mean square; else E_NONFINITE or E_BOUNDS, as checkGradient. */
export function judgeMagnitude({ maxAbs, rms }: { maxAbs: number; rms: number }, net: Net): number {
  if (Number.isNaN(maxAbs)) throw new GanError('E_NONFINITE', `gradient for ${net} has NaN or Inf values`);
  if (maxAbs > GRADIENT_LIMIT) throw new GanError('E_BOUNDS', `gradient for ${net} has a value of ${maxAbs.toExponential(2)}, beyond ${GRADIENT_LIMIT.toExponential(0)}`);
  return rms;
}

/**
 * A relay chain's partial sum: E_NONFINITE when it holds NaN or Inf; otherwise the largest
 * magnitude when it is out of bounds (it cannot name its culprit), or null when it is fine.
 */
export function partialOutOfBounds(data: Float32Array, net: Net): number | null {
  const { maxAbs } = magnitude(data);
  if (Number.isNaN(maxAbs)) throw new GanError('E_NONFINITE', `partial sum of ${net} has NaN or Inf values`);
  return maxAbs > GRADIENT_LIMIT ? maxAbs : null;
}

/** Among chunks' root mean squares, the index of one far larger than the median of the others', with that median; or null. */
export function outlier(rms: number[]): { index: number; median: number } | null {
  if (rms.length < 2) return null;
  const index = rms.reduce((best, x, i) => (x > rms[best]! ? i : best), 0);
  const others = rms.filter((_, i) => i !== index).sort((a, b) => a - b);
  const median = others[Math.floor((others.length - 1) / 2)]!;
  return rms[index]! > PEER_FACTOR * Math.max(PEER_FLOOR, median) ? { index, median } : null;
}

/** How long after the tasks went out a member that has not reported is a straggler, given when the others reported (null: too few have). */
export function stragglerLimitMs(reportedAfter: number[], members: number): number | null {
  if (reportedAfter.length === 0 || reportedAfter.length * 2 < members || reportedAfter.length >= members) return null;
  const sorted = [...reportedAfter].sort((a, b) => a - b);
  return Math.max(STRAGGLER_MIN_MS, STRAGGLER_FACTOR * sorted[Math.floor((sorted.length - 1) / 2)]!);
}
