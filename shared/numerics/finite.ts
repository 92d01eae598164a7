/** Whether a vector holds only finite values: the check every receiver of floats makes. */
import { type NativeMath, nativeMath } from '../backend/addon.js';

/** Whether every value is finite (no NaN, no ±Infinity). */
export function allFinite(a: Float32Array, math: NativeMath | null = nativeMath()): boolean {
  if (math) return math.allFinite(a);
  // x * 0 is 0 for every finite x and NaN for NaN and ±Infinity; one sum keeps the loop branch-free.
  let probe = 0;
  for (let i = 0; i < a.length; i++) probe += a[i]! * 0;
  return probe === 0;
}
