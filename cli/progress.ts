/**
 * Progress output: a single redrawn line on a terminal; plain lines (one per epoch and every
 * `every` rounds) otherwise, so logs stay readable in files and CI.
 */
import type { RoundMetrics } from '../coordinator/coordinator.js';

export class Progress {
  private readonly tty: boolean;
  private last = 0;
  /** When the first round finished: waiting for workers does not count towards the ETA. */
  private t0 = 0;
  private first = 0;
  private samples = 0;

  constructor(
    private readonly totalRounds: number,
    private readonly out: NodeJS.WriteStream = process.stdout,
    private readonly every = 25,
  ) {
    this.tty = !!out.isTTY;
  }

  round(m: RoundMetrics, epochs: number): void {
    this.samples += m.samples;
    const done = m.round + 1;
    if (this.t0 === 0) {
      this.t0 = Date.now();
      this.first = done;
    }
    const elapsed = (Date.now() - this.t0) / 1000;
    const rate = elapsed > 0 ? (done - this.first) / elapsed : 0;
    const eta = this.totalRounds > done && rate > 0 ? (this.totalRounds - done) / rate : 0;
    const text =
      `epoch ${m.epoch + 1}/${epochs} round ${done}/${this.totalRounds} ` +
      `d_loss ${m.d_loss.toFixed(3)} g_loss ${m.g_loss.toFixed(3)} D(x) ${m.d_real.toFixed(2)} D(G(z)) ${m.d_fake.toFixed(2)} ` +
      `${Math.round(m.samples_per_s)} samples/s workers ${m.workers} ETA ${fmt(eta)}`;
    if (this.tty) {
      const width = this.out.columns ?? 120;
      const frac = Math.min(1, done / Math.max(1, this.totalRounds));
      const barW = 20;
      const bar = '#'.repeat(Math.round(frac * barW)).padEnd(barW, '.');
      this.out.write(`\r[${bar}] ${text}`.slice(0, width - 1).padEnd(width - 1));
    } else if (done % this.every === 0 || Date.now() - this.last > 30_000 || m.epoch_used === m.epoch_samples) {
      this.last = Date.now();
      this.out.write(text + '\n');
    }
  }

  line(s: string): void {
    this.out.write(this.tty ? `\r\x1b[K${s}\n` : `${s}\n`);
  }
}

function fmt(s: number): string {
  if (!Number.isFinite(s) || s <= 0) return '--';
  const m = Math.floor(s / 60);
  return m > 0 ? `${m}m${String(Math.round(s % 60)).padStart(2, '0')}s` : `${Math.round(s)}s`;
}
