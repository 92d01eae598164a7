/**
 * The run directory: every file a run writes, their names and formats, in one place.
 *
 *   config.json        the effective configuration (written at start)
 *   metrics.jsonl      one line per round (RoundMetrics)
 *   epochs.jsonl       one line per finished epoch (EpochAccount)
 *   eval.jsonl         one line per --eval-every evaluation
 *   eval.json          `evaluate RUN_DIR` (eval-raw.json with --raw)
 *   samples/*.png      sample grids: epoch-NNN.png after each epoch, final.png at the end
 *   checkpoint.bin     the whole training state (checkpoint.ts), written atomically
 *   summary.json       written when the run ends
 *
 * Single files are replaced atomically (temporary file, fsync, rename, fsync of the directory), so
 * a crash leaves the previous version. On resume, lines logged after the checkpoint (rounds and
 * epochs that will run again) are cut from the logs, so each round appears once.
 */
import { appendFileSync, closeSync, existsSync, fsyncSync, mkdirSync, openSync, readFileSync, renameSync, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { CHECKPOINT_FILE, type TrainState, decodeCheckpoint, encodeCheckpoint } from './checkpoint.js';
import { GanError } from '../shared/errors.js';
import type { RoundMetrics } from './metrics.js';

/** Per-epoch accounting: every sample must be used exactly once. */
export interface EpochAccount {
  epoch: number;
  samples: number;
  usedOnce: number;
  missing: number;
  duplicated: number;
  rounds: number;
}

/** Write `data` to `file` atomically: temporary file, fsync, rename, fsync of the directory. */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const tmp = `${file}.tmp-${process.pid}`;
  const fd = openSync(tmp, 'w');
  try {
    let off = 0;
    while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
    fsyncSync(fd);
  } finally {
    closeSync(fd);
  }
  renameSync(tmp, file);
  try {
    const dfd = openSync(dirname(file), 'r');
    try {
      fsyncSync(dfd);
    } finally {
      closeSync(dfd);
    }
  } catch {
    // Some filesystems refuse fsync on directories; the rename itself is still atomic.
  }
}

export function readJsonl<T>(file: string): T[] {
  if (!existsSync(file)) return [];
  const out: T[] = [];
  for (const line of readFileSync(file, 'utf8').split('\n')) {
    if (!line.trim()) continue;
    try {
      out.push(JSON.parse(line) as T);
    } catch {
      // A line cut short by a crash: the rest of the file is still good.
    }
  }
  return out;
}

/** Load a checkpoint from a run directory, or a checkpoint file given directly. */
export function loadCheckpoint(path: string): TrainState {
  const file = existsSync(join(path, CHECKPOINT_FILE)) ? join(path, CHECKPOINT_FILE) : path;
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new GanError('E_CHECKPOINT', `${file}: cannot read checkpoint (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return decodeCheckpoint(buf, file);
}

export class RunDir {
  constructor(readonly path: string) {}

  file(name: string): string {
    return join(this.path, name);
  }

  get checkpointFile(): string {
    return this.file(CHECKPOINT_FILE);
  }

  /** Whether a run (a checkpoint) is already here. */
  holdsRun(): boolean {
    return existsSync(this.checkpointFile);
  }

  /** Create the directory (and samples/) and write config.json. */
  create(config: object): void {
    mkdirSync(join(this.path, 'samples'), { recursive: true });
    writeFileAtomic(this.file('config.json'), JSON.stringify(config, null, 2) + '\n');
  }

  loadCheckpoint(): TrainState {
    return loadCheckpoint(this.path);
  }

  saveCheckpoint(s: TrainState): string {
    writeFileAtomic(this.checkpointFile, encodeCheckpoint(s));
    return this.checkpointFile;
  }

  appendMetrics(m: RoundMetrics): void {
    appendFileSync(this.file('metrics.jsonl'), JSON.stringify(m) + '\n');
  }

  metrics(): RoundMetrics[] {
    return readJsonl<RoundMetrics>(this.file('metrics.jsonl'));
  }

  appendEpoch(e: EpochAccount): void {
    appendFileSync(this.file('epochs.jsonl'), JSON.stringify(e) + '\n');
  }

  epochs(): EpochAccount[] {
    return readJsonl<EpochAccount>(this.file('epochs.jsonl'));
  }

  appendEval(line: object): void {
    appendFileSync(this.file('eval.jsonl'), JSON.stringify(line) + '\n');
  }

  /** `evaluate RUN_DIR` writes eval.json, or eval-raw.json for G's latest weights. */
  writeEvalResult(raw: boolean, result: object): string {
    const file = this.file(raw ? 'eval-raw.json' : 'eval.json');
    writeFileAtomic(file, JSON.stringify(result, null, 2) + '\n');
    return file;
  }

  /** `file` when it exists, else null. */
  existing(file: string): string | null {
    return existsSync(file) ? file : null;
  }

  gridFile(name: string): string {
    return join(this.path, 'samples', name);
  }

  writeGrid(name: string, png: Uint8Array): string {
    const file = this.gridFile(name);
    writeFileAtomic(file, png);
    return file;
  }

  writeSummary(summary: object): void {
    writeFileAtomic(this.file('summary.json'), JSON.stringify(summary, null, 2) + '\n');
  }

  /** Cut metrics and epoch lines logged after the checkpoint (round `round`, epoch `epoch`): they will run again. */
  truncateForResume(round: number, epoch: number): void {
    this.truncate('metrics.jsonl', (r) => (r.round as number) < round);
    this.truncate('epochs.jsonl', (r) => (r.epoch as number) < epoch);
  }

  private truncate(name: string, keep: (r: Record<string, unknown>) => boolean): void {
    const file = this.file(name);
    if (!existsSync(file)) return;
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    const kept = lines.filter((l) => {
      try {
        return keep(JSON.parse(l) as Record<string, unknown>);
      } catch {
        return false;
      }
    });
    if (kept.length !== lines.length) writeFileAtomic(file, kept.map((l) => l + '\n').join(''));
  }
}
