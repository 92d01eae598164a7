/**
 * The regions a coordinator shares with the workers on its own host, so that weights and
 * gradients cross as memory instead of frames (the WebSocket then carries only control messages).
 *
 * - The weights region (one per run) holds two buffers per net, written by the coordinator only:
 *   version v of a net lives in buffer v % 2, so the next version is written (during the step, or
 *   when it commits) into the buffer the version before the current one left, its writing flag up,
 *   while the current one stays whole for any worker still copying it; it is published before the
 *   next task names it. A worker maps the region read only and copies a net out when a task names a
 *   version it does not hold yet. Each buffer has a header pair (writing flag, version); a copy that
 *   sees either change is refused.
 * - A slot (one per worker) holds that worker's gradient of the current phase, float32 or the run's
 *   16-bit halves. The worker writes it and then says so (Posted); the coordinator reads each value
 *   once (a copy, or the read that sums it) and validates what it read exactly as it validates a
 *   frame.
 * - Both live in a directory only the coordinator's user can enter, under random names a worker
 *   learns in its Welcome, after proving the token. The slot's header holds a random nonce: a
 *   worker that reads it back proves it maps the coordinator's memory (the same host and user),
 *   never inferred from an address.
 */
import type { Net } from '../compute/model.js';

/** Bytes before the data of a region or slot. */
export const HEADER_BYTES = 64;
/** The nonce at the start of a slot's header. */
export const NONCE_BYTES = 32;
const MAGIC = 0x5747_4e47; // "GNGW"
const NET_INDEX: Record<Net, number> = { D: 0, G: 1 };

export interface RegionSizes {
  D: number;
  G: number;
}

export const weightsRegionBytes = (s: RegionSizes) => HEADER_BYTES + 8 * (s.D + s.G);
export const slotBytes = (s: RegionSizes) => HEADER_BYTES + 4 * Math.max(s.D, s.G);

/** Why a copy out of the weights region was refused (the caller waits for frames or fails). */
export type PullRefusal = 'version' | 'torn';

/** The weights region's layout: the header's second word (a worker of another layout uses frames). */
const LAYOUT = 2;

/** The weights region, as the coordinator writes it and as a worker reads it. */
export class WeightsRegion {
  private readonly head: Uint32Array;
  private readonly buffers: Record<Net, [Float32Array, Float32Array]>;

  constructor(buf: ArrayBuffer, readonly sizes: RegionSizes) {
    if (buf.byteLength !== weightsRegionBytes(sizes)) throw new RangeError(`weights region is ${buf.byteLength} bytes, expected ${weightsRegionBytes(sizes)}`);
    this.head = new Uint32Array(buf, 0, HEADER_BYTES / 4);
    // D's two buffers, then G's.
    const at = (offset: number, values: number) => new Float32Array(buf, HEADER_BYTES + 4 * offset, values);
    const { D, G } = sizes;
    this.buffers = { D: [at(0, D), at(D, D)], G: [at(2 * D, G), at(2 * D + G, G)] };
  }

  /** Coordinator: a new region's header, every buffer refused until it is published. */
  init(): void {
    this.head[0] = MAGIC;
    this.head[1] = LAYOUT;
    for (const net of ['D', 'G'] as const) for (const v of [0, 1]) this.writing(net, v);
  }

  get valid(): boolean {
    return this.head[0] === MAGIC && this.head[1] === LAYOUT;
  }

  /** Index in the header of the (writing flag, version) pair of the buffer `version` of `net` lives in. */
  private headAt(net: Net, version: number): number {
    return 2 + 4 * NET_INDEX[net] + 2 * (version % 2);
  }

  /** The buffer `version` of `net` lives in. */
  buffer(net: Net, version: number): Float32Array {
    return this.buffers[net][version % 2]!;
  }

  /** Coordinator: the buffer of `version` is about to change (its writing flag is up until holds). */
  writing(net: Net, version: number): void {
    this.head[this.headAt(net, version)] = 1;
  }

  /** Coordinator: the buffer of `version` holds that version, whole. */
  private holds(net: Net, version: number): void {
    const i = this.headAt(net, version);
    this.head[i + 1] = version;
    this.head[i] = 0;
  }

  /** Coordinator: `net`'s weights of `version` into its buffer (null: a step already wrote them there, see writing). */
  publish(net: Net, version: number, w: Float32Array | null): void {
    this.writing(net, version);
    if (w) this.buffer(net, version).set(w);
    this.holds(net, version);
  }

  /** Whether the buffer of `version` of `net` holds exactly it, whole. */
  private whole(net: Net, version: number): boolean {
    const i = this.headAt(net, version);
    return this.head[i] === 0 && this.head[i + 1] === version;
  }

  /**
   * Worker: hand `net`'s weights to `use` (which must copy them, as creating tensors does) if the
   * region holds exactly `version`, and confirm they did not change while it ran.
   */
  read(net: Net, version: number, use: (w: Float32Array) => void): true | PullRefusal {
    if (!this.whole(net, version)) return 'version';
    use(this.buffer(net, version));
    return this.whole(net, version) ? true : 'torn';
  }
}

/** One worker's gradient slot. */
export class GradientSlot {
  readonly nonce: Uint8Array;
  private readonly bytes: Uint8Array;

  constructor(buf: ArrayBuffer, readonly sizes: RegionSizes) {
    if (buf.byteLength !== slotBytes(sizes)) throw new RangeError(`gradient slot is ${buf.byteLength} bytes, expected ${slotBytes(sizes)}`);
    this.nonce = new Uint8Array(buf, 0, NONCE_BYTES);
    this.bytes = new Uint8Array(buf, HEADER_BYTES);
  }

  /** Worker: its gradient (float32 values or 16-bit halves) into the slot. */
  write(g: Float32Array | Uint16Array): void {
    this.bytes.set(new Uint8Array(g.buffer, g.byteOffset, g.byteLength));
  }

  /** Coordinator: the slot's first `values` float32 values, or 16-bit halves, as they are now (views: copy before use). */
  floats(values: number): Float32Array {
    return new Float32Array(this.bytes.buffer, this.bytes.byteOffset, values);
  }

  halves(values: number): Uint16Array {
    return new Uint16Array(this.bytes.buffer, this.bytes.byteOffset, values);
  }
}
