/**
 * The run directory: every file a run writes, their names and formats, in one place.
 *
 *   config.json        the effective configuration (written at start)
 *   metrics.jsonl      one line per round (RoundMetrics)
 *   epochs.jsonl       one line per finished epoch (EpochAccount)
 *   eval.jsonl         one line per --eval-every evaluation
 *   events.jsonl       what the dashboard's event log showed: joins, drops with their codes,
 *                      checkpoints, resumes, evaluations, the end (RunEvent)
 *   eval.json          `evaluate RUN_DIR` (eval-raw.json with --raw)
 *   samples/*.png      sample grids: epoch-NNN.png after each epoch, final.png at the end
 *   checkpoint.bin     the whole training state (checkpoint.ts), written atomically
 *   summary.json       written when the run ends (with the final worker table)
 *
 * Single files are replaced atomically (temporary file, fsync, rename, fsync of the directory), so
 * a crash leaves the previous version. The logs are opened once and kept open, and a training
 * run holds spare descriptors for its checkpoints (open-files.ts): connections that exhaust the
 * process's descriptors cannot stop it from logging or checkpointing. On resume, lines logged after the checkpoint (rounds and
 * epochs that will run again) are cut from the logs, so each round appears once.
 */
import { close, closeSync, existsSync, fsync, fsyncSync, mkdirSync, openSync, readFileSync, readdirSync, rename, renameSync, rmSync, statSync, statfsSync, write, writeSync } from 'node:fs';
import { dirname, join } from 'node:path';
import { promisify } from 'node:util';
import { CHECKPOINT_FILE, type TrainState, checkpointSnapshot, decodeCheckpoint, encodeCheckpoint } from './checkpoint.js';
import { GanError } from '../shared/wire/errors.js';
import { AppendFiles, DescriptorReserve } from './open-files.js';
import type { EpochLine, RunEvent } from '../shared/wire/observe.js';
import type { RoundMetrics } from './metrics.js';

/** Per-epoch accounting (epochs.jsonl): every sample must be used exactly once. */
export type EpochAccount = EpochLine;

/** Space errors: the disk is full, or the user's quota is. */
const NO_SPACE = new Set(['ENOSPC', 'EDQUOT']);

/** The error a failed write of `file` becomes: E_DISK, naming the file and what it needed, when space ran out. */
function writeError(e: unknown, file: string, bytes: number): Error {
  const code = (e as NodeJS.ErrnoException).code ?? '';
  if (NO_SPACE.has(code)) return new GanError('E_DISK', `${file}: no space left on its disk (${code}) for ${formatBytes(bytes)}; free some space, then --resume`, { cause: e });
  return e as Error;
}

export function formatBytes(n: number): string {
  return n >= 2 ** 20 ? `${(n / 2 ** 20).toFixed(1)} MiB` : n >= 1024 ? `${(n / 1024).toFixed(1)} KiB` : `${n} bytes`;
}

/** The temporary file a replace of `file` writes first (create() removes those a killed process left). */
const tempFileOf = (file: string) => `${file}.tmp-${process.pid}`;

/**
 * Write `data` to `file` atomically: temporary file, fsync, rename, fsync of the directory. If the
 * write fails (a full disk: E_DISK) the temporary file is removed and `file` keeps its last version.
 */
export function writeFileAtomic(file: string, data: Uint8Array | string): void {
  const bytes = typeof data === 'string' ? Buffer.from(data) : data;
  const tmp = tempFileOf(file);
  try {
    const fd = openSync(tmp, 'w');
    try {
      let off = 0;
      while (off < bytes.length) off += writeSync(fd, bytes, off, bytes.length - off);
      fsyncSync(fd);
    } finally {
      closeSync(fd);
    }
    renameSync(tmp, file);
  } catch (e) {
    rmSync(tmp, { force: true });
    throw writeError(e, file, bytes.length);
  }
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

const writeP = promisify(write);
const fsyncP = promisify(fsync);
const closeP = promisify(close);
const renameP = promisify(rename);

/**
 * writeFileAtomic for `parts` in order, in the background: the temporary file and the directory
 * are opened before this returns (so the caller's descriptor reserve covers them), the rest
 * (waiting for the parts, writing, fsync, rename) happens on libuv's pool while the caller goes on.
 */
export function writeFileAtomicInBackground(file: string, parts: Promise<Uint8Array[]>): Promise<void> {
  const tmp = tempFileOf(file);
  let fd: number;
  try {
    fd = openSync(tmp, 'w');
  } catch (e) {
    return Promise.reject(writeError(e, file, 0));
  }
  let dir: number | null = null;
  try {
    dir = openSync(dirname(file), 'r');
  } catch {
    // As in writeFileAtomic: the rename is atomic without the directory's fsync.
  }
  return (async () => {
    // What the file needs, named in E_DISK as writeFileAtomic names it.
    let bytes = 0;
    try {
      try {
        const all = await parts;
        bytes = all.reduce((n, p) => n + p.length, 0);
        for (const p of all) {
          for (let off = 0; off < p.length; ) off += (await writeP(fd, p, off, p.length - off)).bytesWritten;
        }
        await fsyncP(fd);
      } finally {
        await closeP(fd);
      }
      await renameP(tmp, file);
    } catch (e) {
      rmSync(tmp, { force: true });
      if (dir !== null) closeSync(dir);
      throw writeError(e, file, bytes);
    }
    // As in writeFileAtomic, the directory's fsync makes the rename durable; a refusal is harmless.
    if (dir !== null) await fsyncP(dir).catch(() => {}).finally(() => closeSync(dir!));
  })();
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
  const isDir = existsSync(path) && statSync(path).isDirectory();
  if (isDir && !existsSync(join(path, CHECKPOINT_FILE))) throw new GanError('E_CHECKPOINT', `${path} holds no ${CHECKPOINT_FILE}: nothing to resume or read`);
  const file = isDir ? join(path, CHECKPOINT_FILE) : path;
  let buf: Buffer;
  try {
    buf = readFileSync(file);
  } catch (e) {
    throw new GanError('E_CHECKPOINT', `${file}: cannot read checkpoint (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  return decodeCheckpoint(buf, file);
}

/** Bytes free for this user on the disk holding `path` (null where the platform cannot tell). */
export function freeBytes(path: string): number | null {
  try {
    const st = statfsSync(path);
    return st.bavail * st.bsize;
  } catch {
    return null;
  }
}

export class RunDir {
  private readonly reserve: DescriptorReserve;
  private readonly logs: AppendFiles;
  /** The checkpoint being written in the background: resolves to its failure, or null. */
  private writing: Promise<unknown> | null = null;
  /** The last background checkpoint's bytes, reused by the next (they are written by then). */
  private snapshot?: Buffer;

  /** `reserve`: hold spare descriptors for the writes a training run must be able to make (open-files.ts). */
  constructor(readonly path: string, o: { reserve?: boolean } = {}) {
    this.reserve = new DescriptorReserve(o.reserve ? 3 : 0);
    this.logs = new AppendFiles(this.reserve);
  }

  /** Append a line to a log; on a full disk, E_DISK naming the file (a partial line is dropped on resume). */
  private appendLine(name: string, line: string): void {
    const file = this.file(name);
    try {
      this.logs.append(file, line);
    } catch (e) {
      throw writeError(e, file, line.length + 1);
    }
  }

  /** Replace a file atomically, with the reserved descriptors free for it. */
  private replace(file: string, data: Uint8Array | string): void {
    this.reserve.around(() => writeFileAtomic(file, data));
  }

  /** Close the logs and give back the reserve (the run has ended). */
  close(): void {
    this.logs.close();
    this.reserve.close();
  }

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

  /**
   * Create the directory (and samples/) and write config.json. Refuses (E_DISK) when its disk has
   * no room for `reserve` bytes (two checkpoints: the one written and the one it replaces), and
   * removes temporary files a process killed mid-write left behind.
   */
  create(config: object, reserve = 0): void {
    try {
      mkdirSync(join(this.path, 'samples'), { recursive: true });
    } catch (e) {
      throw writeError(e, this.path, 0);
    }
    const free = freeBytes(this.path);
    if (free !== null && free < reserve) {
      throw new GanError('E_DISK', `${this.path}: ${formatBytes(free)} free on its disk, a run needs at least ${formatBytes(reserve)} (two checkpoints); free some space or choose another --out`);
    }
    for (const dir of [this.path, join(this.path, 'samples')]) {
      for (const name of readdirSync(dir)) if (/\.tmp-\d+$/.test(name)) rmSync(join(dir, name), { force: true });
    }
    this.replace(this.file('config.json'), JSON.stringify(config, null, 2) + '\n');
  }

  loadCheckpoint(): TrainState {
    return loadCheckpoint(this.path);
  }

  /** Write the checkpoint now, after the one still being written in the background, if any. */
  async saveCheckpoint(s: TrainState): Promise<string> {
    await this.checkpointWritten();
    this.replace(this.checkpointFile, encodeCheckpoint(s));
    return this.checkpointFile;
  }

  /**
   * Take a checkpoint of `s` now and write it while training goes on: the state is copied before
   * this returns; its digest, a slice at a time, and the write happen afterwards. One at a time:
   * this waits for the last one first, and throws its failure (E_DISK naming the file), as
   * saveCheckpoint does. A crash during the write leaves the previous checkpoint whole, as with any replace.
   */
  async saveCheckpointInBackground(s: TrainState): Promise<string> {
    await this.checkpointWritten();
    const { body, digest, buffer } = checkpointSnapshot(s, this.snapshot);
    this.snapshot = buffer;
    const written = this.reserve.around(() => writeFileAtomicInBackground(this.checkpointFile, digest.then((d) => [body, d])));
    // Held until the next checkpoint or checkpointWritten(), whichever asks first; never unhandled.
    this.writing = written.then(() => null, (e: unknown) => e);
    return this.checkpointFile;
  }

  /** Wait for the checkpoint being written in the background, if any; throws its failure. */
  async checkpointWritten(): Promise<void> {
    const writing = this.writing;
    this.writing = null;
    const failure = await writing;
    if (failure) throw failure;
  }

  appendMetrics(m: RoundMetrics): void {
    this.appendLine('metrics.jsonl', JSON.stringify(m));
  }

  metrics(): RoundMetrics[] {
    return readJsonl<RoundMetrics>(this.file('metrics.jsonl'));
  }

  appendEpoch(e: EpochAccount): void {
    this.appendLine('epochs.jsonl', JSON.stringify(e));
  }

  epochs(): EpochAccount[] {
    return readJsonl<EpochAccount>(this.file('epochs.jsonl'));
  }

  appendEval(line: object): void {
    this.appendLine('eval.jsonl', JSON.stringify(line));
  }

  appendEvent(e: RunEvent): void {
    this.appendLine('events.jsonl', JSON.stringify(e));
  }

  /** `evaluate RUN_DIR` writes eval.json, or eval-raw.json for G's latest weights. */
  writeEvalResult(raw: boolean, result: object): string {
    const file = this.file(raw ? 'eval-raw.json' : 'eval.json');
    this.replace(file, JSON.stringify(result, null, 2) + '\n');
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
    this.replace(file, png);
    return file;
  }

  writeSummary(summary: object): void {
    this.replace(this.file('summary.json'), JSON.stringify(summary, null, 2) + '\n');
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
    if (kept.length === lines.length) return;
    // The log is replaced on disk: an open descriptor would still write to the old one.
    this.logs.close(file);
    this.replace(file, kept.map((l) => l + '\n').join(''));
  }
}
