/**
 * One worker connection as the round loop sees it; the pool (worker-pool.ts) owns its life:
 * 'handshake' until its Hello proves itself, 'joining' until the round loop admits it at a round
 * boundary, 'live' while it is a member of the run, 'dead' for good.
 */
import type { WebSocket } from 'ws';
import type { HeldShard } from './sharding.js';

export type WorkerState = 'handshake' | 'joining' | 'live' | 'dead';

export class WorkerConn {
  id = -1;
  state: WorkerState = 'handshake';
  host = '?';
  pid = 0;
  backend = '?';
  /** Samples shipped to this worker in the current epoch (the round loop's bookkeeping). */
  readonly shard: HeldShard = { ids: new Set(), epoch: -1 };
  /** ws(s)://host:port where peers reach this worker's relay listener ('' when it has none). */
  peerUrl = '';
  missedPongs = 0;
  /** Frame bytes from and to this worker. */
  bytesIn = 0;
  bytesOut = 0;
  constructor(readonly ws: WebSocket, readonly addr: string, readonly remoteIp: string) {}
  get label(): string {
    return `worker ${this.id} (${this.host}/${this.pid}, ${this.backend})`;
  }
}
