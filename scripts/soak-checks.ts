/**
 * What the soak checks while faults are injected (soak.ts): every finished epoch used each sample
 * exactly once, every checkpoint the coordinator writes loads and holds only finite numbers, the
 * logged losses are finite, and the coordinator's memory and descriptors stay flat.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { join } from 'node:path';
import { decodeCheckpoint } from '../coordinator/checkpoint.js';
import { allFinite } from '../coordinator/optimizer.js';
import type { RoundMetrics } from '../coordinator/metrics.js';
import type { EpochAccount } from '../coordinator/run-dir.js';
import { median } from './stats.js';

function jsonl<T>(file: string): T[] {
  if (!existsSync(file)) return [];
  return readFileSync(file, 'utf8').split('\n').filter((l) => l.trim()).flatMap((l) => {
    try {
      return [JSON.parse(l) as T];
    } catch {
      return []; // a line cut short by a kill: the coordinator drops it on resume
    }
  });
}

/** A resource sample of one coordinator process. */
interface Sample {
  at: number;
  rssMiB: number;
  fds: number;
}

export class Invariants {
  readonly failures: string[] = [];
  checkpointsLoaded = 0;
  epochsChecked = 0;
  private lastCheckpoint = 0;
  /** Per coordinator process: its resource samples. */
  private readonly samples = new Map<number, { started: number; list: Sample[] }>();

  constructor(private readonly runDir: string, private readonly samplesPerEpoch: number) {}

  fail(what: string): void {
    if (!this.failures.includes(what)) this.failures.push(what);
  }

  /** The rounds logged so far (after a resume: up to the checkpoint, then on). */
  rounds(): number {
    const ms = jsonl<RoundMetrics>(join(this.runDir, 'metrics.jsonl'));
    return ms.length ? ms[ms.length - 1]!.round + 1 : 0;
  }

  /** Everything that can be checked from the run directory now. */
  check(): void {
    const epochs = jsonl<EpochAccount>(join(this.runDir, 'epochs.jsonl'));
    for (const e of epochs) {
      if (e.samples !== this.samplesPerEpoch || e.usedOnce !== e.samples || e.missing !== 0 || e.duplicated !== 0) {
        this.fail(`epoch ${e.epoch + 1}: ${e.usedOnce}/${e.samples} used once, ${e.missing} missing, ${e.duplicated} duplicated`);
      }
    }
    this.epochsChecked = Math.max(this.epochsChecked, epochs.length);
    for (const m of jsonl<RoundMetrics>(join(this.runDir, 'metrics.jsonl'))) {
      if (m.samples > 0 && !(Number.isFinite(m.d_loss) && Number.isFinite(m.g_loss))) this.fail(`round ${m.round}: losses not finite (${m.d_loss}, ${m.g_loss})`);
    }
    this.checkCheckpoint();
  }

  /** A checkpoint written since the last look must load, and hold only finite numbers. */
  private checkCheckpoint(): void {
    const file = join(this.runDir, 'checkpoint.bin');
    if (!existsSync(file)) return;
    let mtime: number;
    let buf: Buffer;
    try {
      mtime = statSync(file).mtimeMs;
      if (mtime === this.lastCheckpoint) return;
      buf = readFileSync(file);
    } catch {
      return; // replaced under us: the next look reads the new one
    }
    this.lastCheckpoint = mtime;
    try {
      const s = decodeCheckpoint(buf, file);
      const arrays = [s.weights.D, s.weights.G, s.adam.D.m, s.adam.D.v, s.adam.G.m, s.adam.G.v, ...(s.emaG ? [s.emaG] : [])];
      if (!arrays.every((a) => allFinite(a))) this.fail(`checkpoint at round ${s.round} holds NaN or Inf`);
      this.checkpointsLoaded++;
    } catch (e) {
      this.fail(`checkpoint does not load: ${(e as Error).message}`);
    }
  }

  /** Sample a coordinator process's resident memory and open descriptors (skipped while strangers flood it). */
  sample(pid: number, now: number): void {
    let rssKb: number;
    let fds: number;
    try {
      rssKb = Number(/^VmRSS:\s+(\d+)/m.exec(readFileSync(`/proc/${pid}/status`, 'utf8'))?.[1]);
      fds = readdirSync(`/proc/${pid}/fd`).length;
    } catch {
      return; // it just exited
    }
    let s = this.samples.get(pid);
    if (!s) this.samples.set(pid, (s = { started: now, list: [] }));
    s.list.push({ at: now, rssMiB: rssKb / 1024, fds });
  }

  /**
   * Growth of memory and descriptors within each coordinator process: its level 10-30 s into its
   * life (the median) against the most it reached later. Reported per process that lived long
   * enough to have both.
   */
  resources(): { processes: number; rssGrowthMiB: number; fdGrowth: number; rssMiB: number; fds: number } {
    let rssGrowthMiB = 0;
    let fdGrowth = 0;
    let processes = 0;
    let rssMiB = 0;
    let fds = 0;
    for (const { started, list } of this.samples.values()) {
      const early = list.filter((x) => x.at - started >= 10_000 && x.at - started < 30_000);
      const later = list.filter((x) => x.at - started >= 30_000);
      if (early.length < 3 || later.length < 3) continue;
      processes++;
      const base = { rss: median(early.map((x) => x.rssMiB)), fds: median(early.map((x) => x.fds)) };
      rssGrowthMiB = Math.max(rssGrowthMiB, Math.max(...later.map((x) => x.rssMiB)) - base.rss);
      fdGrowth = Math.max(fdGrowth, Math.max(...later.map((x) => x.fds)) - base.fds);
      rssMiB = Math.max(rssMiB, ...list.map((x) => x.rssMiB));
      fds = Math.max(fds, ...list.map((x) => x.fds));
    }
    return { processes, rssGrowthMiB, fdGrowth, rssMiB, fds };
  }
}
