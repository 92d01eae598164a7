/**
 * The coordinator's side of the same-host path (shared/wire/same-host.ts): a private directory of
 * mapped files (or, for workers that are threads of this process, SharedArrayBuffers:
 * shared/wire/thread-regions.ts), the weights region it publishes every committed step into, and
 * one gradient slot per worker that asked for one. A worker uses its slot only once it has proved,
 * by reading back the slot's nonce, that it maps this process's memory; until then, and for every
 * worker that cannot (another host, another user, a browser), tensors travel in frames as before.
 *
 * Invariants:
 * - The directory is made by this process (mode 0700) under a random name, its files 0600 under
 *   random names (a thread's regions have random names too, and only this process's threads can
 *   ask for them); a name is sent only in the Welcome of a worker that proved the token.
 * - A slot is read once per phase: copied (or widened from halves) into memory of this process and
 *   validated there as a frame is, or, where a phase's sum is of several slots only, measured in
 *   the read that sums it (Reduction). No authoritative state (weights, moments, the moving
 *   average) lives in shared memory: the region holds a copy of the weights.
 * - The directory is removed when the run closes or the process exits; one left by a coordinator
 *   that was killed is removed by the next coordinator of the same user on this host.
 */
import { randomBytes, timingSafeEqual } from 'node:crypto';
import { accessSync, constants, mkdtempSync, readdirSync, rmSync, statSync, unlinkSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { fileMapper } from '../shared/backend/addon.js';
import type { Net } from '../shared/compute/model.js';
import { fromHalf } from '../shared/numerics/half.js';
import type { SameHostMsg } from '../shared/wire/codec.js';
import { GanError } from '../shared/wire/errors.js';
import type { RegionMapper, ThreadRegions } from '../shared/wire/thread-regions.js';
import { GradientSlot, NONCE_BYTES, type RegionSizes, WeightsRegion, slotBytes, weightsRegionBytes } from '../shared/wire/same-host.js';

/** Directories of this project's regions start with this, then the owning coordinator's pid. */
const PREFIX = 'gan-ddp-';

interface SlotState {
  path: string;
  slot: GradientSlot;
  proven: boolean;
  /** Where a posted gradient is copied to: this coordinator's own memory, reused every phase. */
  copy: Float32Array | null;
}

/** Where regions go: /dev/shm (memory) when this host has it, else the temporary directory. */
export function regionBase(): string {
  try {
    if (statSync('/dev/shm').isDirectory()) {
      accessSync('/dev/shm', constants.W_OK);
      return '/dev/shm';
    }
  } catch {
    // no /dev/shm here (macOS) or not writable: the temporary directory
  }
  return tmpdir();
}

function alive(pid: number): boolean {
  try {
    process.kill(pid, 0);
    return true;
  } catch (e) {
    return (e as NodeJS.ErrnoException).code === 'EPERM';
  }
}

/** Remove region directories of this user whose coordinator is gone; returns how many. */
export function removeStale(base: string): number {
  let removed = 0;
  const uid = process.getuid?.();
  for (const name of readdirSync(base)) {
    const m = new RegExp(`^${PREFIX}(\\d+)-`).exec(name);
    if (!m) continue;
    const path = join(base, name);
    try {
      const st = statSync(path);
      if (!st.isDirectory() || (uid !== undefined && st.uid !== uid) || alive(Number(m[1]))) continue;
      rmSync(path, { recursive: true, force: true });
      removed++;
    } catch {
      // gone meanwhile, or not ours to remove
    }
  }
  return removed;
}

/** Where a hub's regions live: mapped files in a directory, or a ThreadRegions' buffers. */
interface RegionStore {
  map: RegionMapper;
  newPath(): string;
  remove(path: string): void;
  close(): void;
}

/** Files in a private directory under `base`, mapped by the addon. */
function fileStore(map: RegionMapper, base: string): RegionStore & { dir: string } {
  const dir = mkdtempSync(join(base, `${PREFIX}${process.pid}-`));
  return {
    dir,
    map,
    newPath: () => join(dir, randomBytes(16).toString('hex')),
    remove: (path) => {
      try {
        unlinkSync(path);
      } catch {
        // already gone with the directory
      }
    },
    close: () => rmSync(dir, { recursive: true, force: true }),
  };
}

export class SameHostHub {
  /** The directory of the regions' files (null: they are a ThreadRegions' buffers). */
  readonly dir: string | null;
  readonly regionPath: string;
  private readonly region: WeightsRegion;
  private readonly slots = new Map<object, SlotState>();
  private readonly onExit = () => this.close();
  private closed = false;

  /**
   * Regions for a run whose nets have `sizes` values, or null (and a line saying why) when this
   * host cannot make them: then every worker uses frames. Without the addon, `threads` (the
   * registry of this process's worker threads, when it spawned its workers as threads) holds them.
   */
  static open(sizes: RegionSizes, log: (line: string) => void, base = regionBase(), threads?: ThreadRegions): SameHostHub | null {
    const map = fileMapper();
    if (!map && !threads) {
      log('same-host workers use frames: the native addon (which maps shared memory) is not built');
      return null;
    }
    try {
      if (!map) return new SameHostHub(sizes, threads!);
      const stale = removeStale(base);
      if (stale > 0) log(`removed ${stale} shared-memory region${stale === 1 ? '' : 's'} left by coordinators that are gone`);
      return new SameHostHub(sizes, fileStore(map, base));
    } catch (e) {
      log(`same-host workers use frames: no shared region ${map ? `in ${base}` : 'for worker threads'} (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
      return null;
    }
  }

  private constructor(readonly sizes: RegionSizes, private readonly store: RegionStore & { dir?: string }) {
    this.dir = store.dir ?? null;
    try {
      this.regionPath = store.newPath();
      this.region = new WeightsRegion(store.map(this.regionPath, weightsRegionBytes(sizes), 0), sizes);
      this.region.init();
    } catch (e) {
      store.close();
      throw e;
    }
    process.once('exit', this.onExit);
  }

  /** A worker that can map regions gets the paths of the weights region and of a new slot of its own (null: frames). */
  offer(worker: object): { region: string; slot: string } | null {
    if (this.closed) return null;
    const path = this.store.newPath();
    try {
      const slot = new GradientSlot(this.store.map(path, slotBytes(this.sizes), 0), this.sizes);
      slot.nonce.set(randomBytes(NONCE_BYTES));
      this.slots.set(worker, { path, slot, proven: false, copy: null });
      return { region: this.regionPath, slot: path };
    } catch {
      return null; // a full /dev/shm: this worker uses frames
    }
  }

  /** The worker's answer to its offer; returns whether it now uses its slot (else why not). */
  answer(worker: object, m: SameHostMsg): { shared: true } | { shared: false; why: string } {
    const s = this.slots.get(worker);
    if (!s) throw new GanError('E_UNEXPECTED', 'SameHost without an offer of shared regions');
    if (s.proven) throw new GanError('E_UNEXPECTED', 'second SameHost answer');
    if (m.proof && m.proof.length === NONCE_BYTES && timingSafeEqual(m.proof, s.slot.nonce)) {
      s.proven = true;
      s.copy = new Float32Array(Math.max(this.sizes.D, this.sizes.G));
      return { shared: true };
    }
    this.release(worker);
    return { shared: false, why: m.proof ? 'its slot\'s nonce did not match' : (m.reason ?? 'no reason given').slice(0, 200) };
  }

  /** Whether this worker proved it maps the regions. */
  shares(worker: object): boolean {
    return this.slots.get(worker)?.proven === true;
  }

  /**
   * Where the `values` values the worker says its slot holds go in this process's memory (`data`,
   * valid until the worker's next phase), and, for float32, the slot itself (`from`), read once by
   * the reduction: copied into `data` as it is checked, or measured as it is summed. 16-bit halves
   * are widened into `data` here.
   */
  take(worker: object, values: number, fp16: boolean): { data: Float32Array; from: Float32Array | null } {
    const s = this.slots.get(worker);
    if (!s?.proven || !s.copy) throw new GanError('E_UNEXPECTED', 'Posted from a worker without a proven slot');
    if (values > s.copy.length) throw new GanError('E_SHAPE', `slot said to hold ${values} values, it has room for ${s.copy.length}`);
    const data = s.copy.subarray(0, values);
    if (!fp16) return { data, from: s.slot.floats(values) };
    fromHalf(s.slot.halves(values), data);
    return { data, from: null };
  }

  /**
   * Where a phase's step writes the new weights of `version` of `net` as it takes them (beside its
   * own copy, in the same pass): the region's buffer of that version, refused to workers until it
   * is published. Null once the hub is closed.
   */
  stepInto(net: Net, version: number): Float32Array | null {
    if (this.closed) return null;
    this.region.writing(net, version);
    return this.region.buffer(net, version);
  }

  /** `net`'s committed weights of `version`, for workers to copy when a task names them (null: the step wrote them, stepInto). */
  publish(net: Net, version: number, w: Float32Array | null): void {
    if (!this.closed) this.region.publish(net, version, w);
  }

  /** The worker left: its slot goes (a worker that comes back gets a new one). */
  release(worker: object): void {
    const s = this.slots.get(worker);
    if (!s) return;
    this.slots.delete(worker);
    this.store.remove(s.path);
  }

  /** Remove the directory and every file in it (mappings stay valid until they are collected). */
  close(): void {
    if (this.closed) return;
    this.closed = true;
    this.slots.clear();
    process.removeListener('exit', this.onExit);
    this.store.close();
  }
}
