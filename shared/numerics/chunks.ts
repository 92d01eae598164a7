/**
 * How a net's flat vector is cut into the chunks a reduction moves: fixed offsets, `chunk` floats
 * each, the last one shorter. Every side checks a chunk it receives against this one rule.
 */
import { GanError } from '../wire/errors.js';

/** How many chunks of `chunk` floats a vector of `total` floats has. */
export function chunkCount(total: number, chunk: number): number {
  return Math.ceil(total / chunk);
}

/** [start, end) of chunk `c`. */
export function chunkRange(total: number, chunk: number, c: number): [number, number] {
  const start = c * chunk;
  return [start, Math.min(total, start + chunk)];
}

/**
 * The chunk a message says starts at `offset` and holds `length` values: its index and range, or
 * E_SHAPE naming `what` when the offset is not a chunk boundary of the vector or the length is not
 * that chunk's.
 */
export function chunkAt(total: number, chunk: number, offset: number, length: number | null, what: string): { index: number; start: number; end: number } {
  if (chunk < 1 || offset % chunk !== 0 || offset >= total) throw new GanError('E_SHAPE', `${what} offset ${offset} is not a chunk boundary`);
  const index = offset / chunk;
  const [start, end] = chunkRange(total, chunk, index);
  if (length !== null && length !== end - start) throw new GanError('E_SHAPE', `${what} at ${offset} has ${length} values, expected ${end - start}`);
  return { index, start, end };
}

/**
 * Float32 chunks handed out one after another and taken back all at once (reset()): what a phase
 * decodes received chunks into, reused phase after phase instead of allocated each time (the
 * garbage collector's share of a relaying worker's time fell from a tenth to a few percent).
 */
export class ChunkPool {
  private readonly chunks: Float32Array[] = [];
  private used = 0;

  /** Every chunk handed out is free again (the phase that held them is over). */
  reset(): void {
    this.used = 0;
  }

  /** A chunk of `n` values, valid until the next reset(). */
  take(n: number): Float32Array {
    let c = this.chunks[this.used];
    if (!c || c.length < n) this.chunks[this.used] = c = new Float32Array(n);
    this.used++;
    return c.subarray(0, n);
  }
}
