/** Small helpers the benchmarks and the soak share. */

/** The middle value of `xs` (the mean of the middle two for an even count); NaN for none. */
export function median(xs: readonly number[]): number {
  if (xs.length === 0) return NaN;
  const s = [...xs].sort((a, b) => a - b);
  const h = s.length >> 1;
  return s.length % 2 ? s[h]! : (s[h - 1]! + s[h]!) / 2;
}

/** The last `n` lines of a process's output on one line, at most `max` characters: for an error message. */
export function lastLines(s: string, n = 4, max = 800): string {
  return s.trim().split('\n').slice(-n).join(' | ').slice(0, max);
}
