/**
 * Lines that an attacker can make the coordinator print (refused connections, bad frames before a
 * handshake) are rate-limited: the first of each kind in a window is printed, the rest counted,
 * and the counts printed when the window closes.
 */
export class LogLimiter {
  private counts = new Map<string, number>();
  private timer: NodeJS.Timeout | null = null;

  constructor(private readonly log: (line: string) => void, private readonly windowMs = 10_000) {}

  /** Print `line` unless a line of the same `kind` was printed in this window; then count it. */
  line(kind: string, line: string): void {
    const n = this.counts.get(kind);
    if (n === undefined) {
      this.counts.set(kind, 0);
      this.log(line);
      this.timer ??= setTimeout(() => this.flush(), this.windowMs);
      this.timer.unref();
      return;
    }
    this.counts.set(kind, n + 1);
  }

  /** Print the counts of what was held back, and start a new window. */
  flush(): void {
    if (this.timer) clearTimeout(this.timer);
    this.timer = null;
    const held = [...this.counts].filter(([, n]) => n > 0);
    this.counts.clear();
    if (held.length) this.log(`... and ${held.map(([k, n]) => `${n} more ${k}`).join(', ')} in the last ${Math.round(this.windowMs / 1000)} s`);
  }
}
