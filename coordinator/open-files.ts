/**
 * The run directory's descriptors. The logs a run appends to every round are opened once and
 * kept open, and a few spare descriptors are held in reserve for the writes that must succeed
 * (a checkpoint: its temporary file and its directory's fsync), so a process whose descriptors
 * are exhausted by connections still logs every round and checkpoints.
 */
import { closeSync, openSync, writeSync } from 'node:fs';
import { devNull } from 'node:os';

const outOfDescriptors = (e: unknown) => ['EMFILE', 'ENFILE'].includes((e as NodeJS.ErrnoException).code ?? '');

/** Descriptors held open on the null device, given up for a moment when a write needs them. */
export class DescriptorReserve {
  private fds: number[] = [];

  constructor(private readonly size = 3) {
    this.refill();
  }

  /** Run `f` with the reserve given back to the system, then take it again (as far as possible). */
  around<T>(f: () => T): T {
    this.release();
    try {
      return f();
    } finally {
      this.refill();
    }
  }

  /** Open `file` with `flags`; when descriptors have run out, with one from the reserve. */
  open(file: string, flags: string): number {
    try {
      return openSync(file, flags);
    } catch (e) {
      if (!outOfDescriptors(e) || this.fds.length === 0) throw e;
      closeSync(this.fds.pop()!);
      return openSync(file, flags);
    }
  }

  close(): void {
    this.release();
  }

  private release(): void {
    for (const fd of this.fds.splice(0)) closeSync(fd);
  }

  private refill(): void {
    try {
      while (this.fds.length < this.size) this.fds.push(openSync(devNull, 'r'));
    } catch {
      // Out of descriptors now: the reserve is refilled after the next write that used it.
    }
  }
}

/** Files appended to line by line, each opened on first use and kept open. */
export class AppendFiles {
  private fds = new Map<string, number>();

  constructor(private readonly reserve: DescriptorReserve) {}

  append(file: string, line: string): void {
    let fd = this.fds.get(file);
    if (fd === undefined) {
      fd = this.reserve.open(file, 'a');
      this.fds.set(file, fd);
    }
    const bytes = Buffer.from(line + '\n');
    for (let off = 0; off < bytes.length;) off += writeSync(fd, bytes, off, bytes.length - off);
  }

  /** Close `file` (before it is replaced on disk) or every file. */
  close(file?: string): void {
    for (const [f, fd] of this.fds) {
      if (file !== undefined && f !== file) continue;
      closeSync(fd);
      this.fds.delete(f);
    }
  }
}
