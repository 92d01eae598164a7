/**
 * What a peer that has not proved the token can cost a listening process (the coordinator, the
 * dashboard server, a worker's relay listener): bounded per address and in total, as sshd's
 * MaxStartups and nginx's limit_conn bound it.
 *
 * Invariants:
 * - Every TCP connection is counted as pending from its accept (before TLS, HTTP or WebSocket)
 *   until it proves the token or closes. Over the limits it is refused at once (destroyed before
 *   anything is read or sent): more than `perAddress` pending from its address, more than
 *   `pending` in all, or more new connections from its address than its rate allows.
 * - Addresses that have proved the token in this process (workers, dashboard pages) find room in
 *   a reserve of `reserved` more connections that strangers cannot take, so a flood from other
 *   addresses never keeps a worker from rejoining.
 * - After its upgrade, a pending connection can make this process read at most PRE_AUTH_BYTES,
 *   plus what one socket read brings in (at most 64 KiB), before it is destroyed.
 * - Failing to accept for want of descriptors (EMFILE, ENFILE) is back-pressure: logged, never fatal.
 * - What strangers make this process print is rate-limited: each kind of refusal once per window,
 *   then a count.
 */
import type { Server } from 'node:net';
import type { Socket } from 'node:net';
import { LogLimiter } from './log-limit.js';

/** The most a connection may send before proving the token: a Hello, Observe or PeerHello is well under 1 KiB. */
export const PRE_AUTH_BYTES = 8 * 1024;

export interface AdmissionLimits {
  /** Pending connections in all, from addresses that have not proved the token. */
  pending: number;
  /** Pending connections from one address. */
  perAddress: number;
  /** More pending connections, for addresses that have proved the token before. */
  reserved: number;
  /** New connections per second per address, and the burst allowed above that rate. */
  ratePerS: number;
  burst: number;
}

/**
 * Limits that leave most of the descriptors to authenticated peers and the run directory: a
 * quarter of what is left above a floor of 64 goes to strangers (at most 256), a sixteenth more to
 * the reserve. `descriptors` is the process's soft limit (null: unknown, taken as 1024).
 */
export function admissionLimits(descriptors: number | null): AdmissionLimits {
  const d = descriptors === null || descriptors < 0 ? 1024 : descriptors;
  const pending = Math.max(8, Math.min(256, Math.floor((d - 64) / 4)));
  return { pending, perAddress: Math.min(16, pending), reserved: Math.max(4, Math.floor(pending / 4)), ratePerS: 8, burst: 32 };
}

interface Entry {
  address: string;
  proven: boolean;
  /** It holds one of the reserve's places rather than a stranger's. */
  reserved: boolean;
  /** It no longer counts as pending (proved, or closed). */
  released: boolean;
}

interface Bucket {
  tokens: number;
  at: number;
}

export class Admission {
  private readonly byPeer = new Map<string, Entry>();
  private readonly pendingFrom = new Map<string, number>();
  private readonly known = new Set<string>();
  private readonly buckets = new Map<string, Bucket>();
  private pending = 0;
  private reservedInUse = 0;
  private readonly limited: LogLimiter;

  constructor(readonly limits: AdmissionLimits, log: (line: string) => void) {
    this.limited = new LogLimiter(log);
  }

  /** Watch a server's connections from their accept; its accept failures become back-pressure. */
  guard(server: Server): void {
    server.on('connection', (s: Socket) => this.admit(s));
    server.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EMFILE' || e.code === 'ENFILE') {
        this.limited.line('accept failures', `cannot accept a connection: ${e.code} (no file descriptor left); the connection waits in the kernel's queue`);
      } else {
        this.limited.line('listener errors', `listener error: ${e.code ?? ''} ${e.message}`);
      }
    });
  }

  /** A connection proved the token: it stops counting as pending, and its address is known from now on. */
  proven(s: { remoteAddress?: string; remotePort?: number }): void {
    const e = this.byPeer.get(key(s));
    if (!e || e.proven) return;
    e.proven = true;
    this.known.add(e.address);
    this.release(e);
  }

  /**
   * Destroy `socket` once it has sent more than PRE_AUTH_BYTES while `pending()` says its peer has
   * not proved itself; `refused` is told how many bytes it had sent. Counts raw bytes, before any
   * framing, so a huge frame is cut off as it arrives rather than buffered whole.
   */
  limitBytes(socket: Socket, pending: () => boolean, refused: (bytes: number) => void): void {
    let bytes = 0;
    const onData = (b: Buffer) => {
      if (!pending()) return socket.off('data', onData);
      bytes += b.length;
      if (bytes > PRE_AUTH_BYTES) {
        socket.off('data', onData);
        socket.destroy();
        refused(bytes);
      }
    };
    socket.on('data', onData);
  }

  /** Write out the counts of refusals held back. */
  flush(): void {
    this.limited.flush();
  }

  private admit(s: Socket): void {
    const address = s.remoteAddress;
    if (!address) return void s.destroy();
    const known = this.known.has(address);
    const from = this.pendingFrom.get(address) ?? 0;
    const L = this.limits;
    let refusal: string | null = null;
    let reserved = false;
    if (!this.take(address)) refusal = `more than ${L.burst} new connections at once, or ${L.ratePerS} a second, from one address`;
    else if (from >= L.perAddress) refusal = `${from} connections from ${address} have not proved the token (limit ${L.perAddress} per address)`;
    else if (this.pending >= L.pending) {
      if (known && this.reservedInUse < L.reserved) reserved = true;
      else refusal = `${this.pending} connections have not proved the token (limit ${L.pending}${known ? `, and the ${L.reserved} reserved for known addresses are taken` : ''})`;
    }
    if (refusal) {
      this.limited.line('connections refused before the handshake', `connection from ${address} refused before the handshake: ${refusal}`);
      s.destroy();
      return;
    }
    const e: Entry = { address, proven: false, reserved, released: false };
    const k = key(s);
    this.byPeer.set(k, e);
    if (reserved) this.reservedInUse++;
    else this.pending++;
    this.pendingFrom.set(address, from + 1);
    s.once('close', () => {
      this.release(e);
      if (this.byPeer.get(k) === e) this.byPeer.delete(k);
    });
  }

  /** The connection no longer counts as pending (proved, or gone); once only. */
  private release(e: Entry): void {
    if (e.released) return;
    e.released = true;
    if (e.reserved) this.reservedInUse--;
    else this.pending--;
    const n = (this.pendingFrom.get(e.address) ?? 1) - 1;
    if (n > 0) this.pendingFrom.set(e.address, n);
    else this.pendingFrom.delete(e.address);
  }

  /** One new connection from `address` within its rate (a token bucket). */
  private take(address: string): boolean {
    const now = Date.now();
    const L = this.limits;
    let b = this.buckets.get(address);
    if (!b) {
      // Forget idle addresses so the table stays small whoever connects.
      if (this.buckets.size >= 10_000) for (const [a, x] of this.buckets) if (now - x.at > 60_000) this.buckets.delete(a);
      if (this.buckets.size >= 10_000) this.buckets.clear();
      b = { tokens: L.burst, at: now };
      this.buckets.set(address, b);
    }
    b.tokens = Math.min(L.burst, b.tokens + ((now - b.at) / 1000) * L.ratePerS);
    b.at = now;
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }
}

const key = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}:${s.remotePort}`;
