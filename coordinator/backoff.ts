/**
 * A worker dropped for a timeout waits before it is admitted again: 1 s after its first such drop,
 * doubling with each next one, up to BACKOFF_MAX_MS (E_BACKOFF, with the wait in its Refused
 * frame), so a worker that holds rounds and rejoins cannot hold the run. A worker with no timeout
 * for BACKOFF_FORGET_MS starts again from the shortest wait.
 */
import { GanError } from '../shared/wire/errors.js';

export const BACKOFF_MAX_MS = 300_000;
const BACKOFF_FORGET_MS = 600_000;

/** What identifies a worker across reconnections, as far as the coordinator can tell. */
export interface WorkerIdentity {
  remoteIp: string;
  host: string;
  pid: number;
}

export class TimeoutBackoff {
  /** Timeout drops by worker identity: how many, and until when it is refused. */
  private readonly waits = new Map<string, { count: number; until: number; last: number }>();

  /** The worker was dropped for a timeout. */
  dropped(c: WorkerIdentity): void {
    const now = Date.now();
    const key = identity(c);
    const prev = this.waits.get(key);
    const count = prev && now - prev.last < BACKOFF_FORGET_MS ? prev.count + 1 : 1;
    this.waits.set(key, { count, last: now, until: now + Math.min(BACKOFF_MAX_MS, 1000 * 2 ** (count - 1)) });
  }

  /** E_BACKOFF if the worker must still wait, else null. */
  refusal(c: WorkerIdentity): GanError | null {
    const wait = this.waits.get(identity(c));
    if (!wait || Date.now() >= wait.until) return null;
    const ms = wait.until - Date.now();
    return new GanError('E_BACKOFF', `dropped for timeouts ${wait.count} time${wait.count === 1 ? '' : 's'}; come back in ${Math.ceil(ms / 1000)} s`, { retryAfterMs: ms });
  }
}

const identity = (c: WorkerIdentity) => `${c.remoteIp}/${c.host}/${c.pid}`;
