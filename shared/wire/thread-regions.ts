/**
 * Same-host regions for workers that are threads of the coordinator's own process (`--spawn` where
 * the native addon, which maps files, is not built): SharedArrayBuffers, named as the addon's
 * files are, that a thread asks for by name over a MessagePort of its own. The same-host protocol
 * (shared/wire/same-host.ts) runs unchanged on them: the Welcome names the regions, the worker
 * proves it sees them by reading back its slot's nonce, the coordinator copies a slot before it
 * checks it.
 *
 * A worker maps regions synchronously, so a thread asks that way: it posts the name with a flag of
 * shared memory, sleeps on the flag (Atomics.wait), and takes the answer with receiveMessageOnPort;
 * the coordinator's thread answers from its event loop. A name this process never made (a worker
 * process offered a thread's region, a thread asking after the region went) is answered with
 * nothing, and the worker uses frames.
 */
import { type MessagePort, receiveMessageOnPort } from 'node:worker_threads';
import { randomBytes } from 'node:crypto';

/** What the same-host path maps a region with: mode 0 creates it, 1 opens it read-write, 2 read only. */
export type RegionMapper = (path: string, bytes: number, mode: 0 | 1 | 2) => ArrayBuffer;

const PREFIX = 'thread-region:';

/** How long a thread waits for the coordinator's thread to answer (it answers between its own tasks). */
const ANSWER_MS = 10_000;

/** What a coordinator gives the worker threads it starts (coordinator/spawn.ts, cli/worker-thread.ts). */
export interface WorkerThreadData {
  /** The worker command's arguments. */
  args: string[];
  /** Where the thread asks for the coordinator's regions. */
  regions: MessagePort;
}

interface Ask {
  path: string;
  flag: Int32Array;
}

/** The coordinator's side: the regions it made, by name, and the ports its worker threads ask on. */
export class ThreadRegions {
  private readonly buffers = new Map<string, SharedArrayBuffer>();

  /** Makes a region (mode 0) or finds one this process made; a name it did not make is ENOENT. */
  readonly map: RegionMapper = (path, bytes, mode) => {
    if (mode === 0) {
      const b = new SharedArrayBuffer(bytes);
      this.buffers.set(path, b);
      return b as unknown as ArrayBuffer;
    }
    const b = this.buffers.get(path);
    if (!b || b.byteLength !== bytes) throw Object.assign(new Error(`${path}: no such region`), { code: 'ENOENT' });
    return b as unknown as ArrayBuffer;
  };

  /** A fresh name, never guessed from another. */
  newPath(): string {
    return `${PREFIX}${randomBytes(16).toString('hex')}`;
  }

  /** The region goes: a thread that asks for it from now on gets nothing (mappings it holds stay valid). */
  remove(path: string): void {
    this.buffers.delete(path);
  }

  close(): void {
    this.buffers.clear();
  }

  /** Answer a worker thread's asks on `port` (unref'd: an idle port keeps no one alive). */
  serve(port: MessagePort): void {
    port.on('message', (m: Ask) => {
      if (typeof m?.path !== 'string' || !(m.flag instanceof Int32Array)) return;
      port.postMessage({ path: m.path, buffer: this.buffers.get(m.path) ?? null });
      Atomics.store(m.flag, 0, 1);
      Atomics.notify(m.flag, 0);
    });
    port.unref();
  }
}

/** Whether a name is one of a ThreadRegions' (a worker process need not try to open it as a file). */
export function isThreadRegion(path: string): boolean {
  return path.startsWith(PREFIX);
}

/** A worker thread's mapper: asks the coordinator's thread on `port` for the region of that name. */
export function threadMapper(port: MessagePort): RegionMapper {
  return (path, bytes) => {
    const flag = new Int32Array(new SharedArrayBuffer(4));
    port.postMessage({ path, flag } satisfies Ask);
    if (Atomics.wait(flag, 0, 0, ANSWER_MS) === 'timed-out') throw Object.assign(new Error(`${path}: the coordinator did not answer in ${ANSWER_MS / 1000} s`), { code: 'ETIMEDOUT' });
    // An answer that came after its ask timed out may be queued first: skipped.
    let buffer: SharedArrayBuffer | null = null;
    for (let m = receiveMessageOnPort(port); m; m = receiveMessageOnPort(port)) {
      const answer = m.message as { path: string; buffer: SharedArrayBuffer | null };
      if (answer.path === path) {
        buffer = answer.buffer;
        break;
      }
    }
    if (!buffer || buffer.byteLength !== bytes) throw Object.assign(new Error(`${path}: no such region`), { code: 'ENOENT' });
    return buffer as unknown as ArrayBuffer;
  };
}
