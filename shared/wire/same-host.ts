/**
 * The regions a coordinator shares with the workers on its own host, so that weights and
 * gradients cross as memory instead of frames (the WebSocket then carries only control messages).
 *
 * - The weights region (one per run) holds both nets' current weights, written by the coordinator
 *   only, after each step commits and before the next task names the new version. A worker maps
 *   it read only and copies a net out when a task names a version it does not hold yet. Each net
 *   has a header pair (writing flag, version); a copy that sees either change is refused.
 * - A slot (one per worker) holds that worker's gradient of the current phase, float32 or the run's
 *   16-bit halves. The worker writes it and then says so (Posted); the coordinator copies it out
 *   once, and validates the copy exactly as it validates a frame.
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

export const weightsRegionBytes = (s: RegionSizes) => HEADER_BYTES + 4 * (s.D + s.G);
export const slotBytes = (s: RegionSizes) => HEADER_BYTES + 4 * Math.max(s.D, s.G);

/** Why a copy out of the weights region was refused (the caller waits for frames or fails). */
export type PullRefusal = 'version' | 'torn';

/** The weights region, as the coordinator writes it and as a worker reads it. */
export class WeightsRegion {
  private readonly head: Uint32Array;
  private readonly nets: Record<Net, Float32Array>;

  constructor(buf: ArrayBuffer, readonly sizes: RegionSizes) {
    if (buf.byteLength !== weightsRegionBytes(sizes)) throw new RangeError(`weights region is ${buf.byteLength} bytes, expected ${weightsRegionBytes(sizes)}`);
    this.head = new Uint32Array(buf, 0, HEADER_BYTES / 4);
    this.nets = { D: new Float32Array(buf, HEADER_BYTES, sizes.D), G: new Float32Array(buf, HEADER_BYTES + 4 * sizes.D, sizes.G) };
  }

  /** Coordinator: a new region's header. */
  init(): void {
    this.head[0] = MAGIC;
    this.head[1] = 1;
  }

  get valid(): boolean {
    return this.head[0] === MAGIC && this.head[1] === 1;
  }

  /** Coordinator: `net`'s weights of `version` (the writing flag is up while they change). */
  publish(net: Net, version: number, w: Float32Array): void {
    const i = 2 + 2 * NET_INDEX[net];
    this.head[i] = 1;
    this.nets[net].set(w);
    this.head[i + 1] = version;
    this.head[i] = 0;
  }

  /** The version of `net` the region holds (-1 while it is being written). */
  version(net: Net): number {
    const i = 2 + 2 * NET_INDEX[net];
    return this.head[i] === 0 ? this.head[i + 1]! : -1;
  }

  /**
   * Worker: hand `net`'s weights to `use` (which must copy them, as creating tensors does) if the
   * region holds exactly `version`, and confirm they did not change while it ran.
   */
  read(net: Net, version: number, use: (w: Float32Array) => void): true | PullRefusal {
    if (this.version(net) !== version) return 'version';
    use(this.nets[net]);
    return this.version(net) === version ? true : 'torn';
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
