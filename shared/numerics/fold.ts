/**
 * The arithmetic every path of a reduction shares. The coordinator's sum of W gradients is, per
 * element, acc = s0*g0, then acc += s1*g1, ..., in worker-id order, each product and add in double
 * and acc rounded to float32 after every add (sk = countk / total). Folding chunk by chunk, on the
 * coordinator or along a chain of workers, gives the same bits as folding whole vectors.
 */
import { type NativeMath, nativeMath } from '../backend/addon.js';

/**
 * acc = (first ? 0 : acc) + scale * g, elementwise, rounded to float32: one member's turn in the
 * sum. `math` is the addon (the default when built) or null for the JavaScript loop it matches.
 */
export function foldInto(acc: Float32Array, g: Float32Array, scale: number, first: boolean, math: NativeMath | null = nativeMath()): void {
  if (acc.length !== g.length) throw new Error(`fold: ${g.length} values into ${acc.length}`);
  if (math) return foldMany(acc, [g], [scale], first, math);
  if (first) for (let i = 0; i < acc.length; i++) acc[i] = 0 + scale * g[i]!;
  else for (let i = 0; i < acc.length; i++) acc[i] = acc[i]! + scale * g[i]!;
}

/**
 * Several members' turns at once, in order: the same bits as foldInto for each in turn, in one
 * pass over memory (the addon sums a block of every member while it is in cache).
 */
export function foldMany(acc: Float32Array, gs: Float32Array[], scales: number[], first: boolean, math: NativeMath | null = nativeMath()): void {
  if (gs.length === 0) return;
  for (const g of gs) if (g.length !== acc.length) throw new Error(`fold: ${g.length} values into ${acc.length}`);
  if (math) {
    // acc is never -0 (0 + -0 is +0), so 1 * acc as the first term of the sum is acc itself.
    if (first) math.weightedSum(acc, gs, scales);
    else math.weightedSum(acc, [acc, ...gs], [1, ...scales]);
    return;
  }
  gs.forEach((g, k) => foldInto(acc, g, scales[k]!, first && k === 0, null));
}
