/**
 * What a peer that has not proved the token can cost a listening process (the coordinator, the
 * dashboard server, a worker's relay listener): bounded per address and in total, as sshd's
 * MaxStartups and nginx's limit_conn bound it.
 *
 * Invariants:
 * - This module owns the listening socket: a connection reaches the HTTP(S) server only once it
 *   is admitted, so a refused one costs an accept and nothing else (no TLS, no HTTP parser).
 * - Every TCP connection is counted as pending from its accept (before TLS, HTTP or WebSocket)
 *   until it proves the token or closes. Over the limits it is refused at once (destroyed before
 *   anything is read or sent): more than `perAddress` pending from its address, more than
 *   `pending` in all, or more new connections from its address than its rate allows.
 * - A connection refused after its accept (too many bytes, a bad or missing answer to the
 *   Challenge) costs its address `penalty` more connections of its rate, unless the address has
 *   proved the token before: an address that keeps failing gets few through, however many it opens.
 * - A refused connection is held, unread, for TARPIT_MS before it is closed, while there is room
 *   (below): a peer that reconnects as soon as it is closed waits instead of making this process
 *   accept and refuse in a tight loop.
 * - Addresses that have proved the token in this process (workers, dashboard pages) find room in
 *   a reserve of `reserved` more connections that strangers cannot take, so a flood from other
 *   addresses never keeps a worker from rejoining.
 * - With a token, a connection over any of these limits is not refused at its accept but put on
 *   probation (each for at most PROBATION_MS): it goes on if the request it opens with carries an
 *   admission ticket (auth.ts: a proof of the token bound to a moment and a nonce, each nonce
 *   taken once), and is refused like the rest otherwise. Workers dial with a ticket, so strangers
 *   that share a worker's address, or exhaust the limits from every address, cannot keep it out:
 *   a stranger costs a read of its request, a worker gets in on the first try.
 * - Room: strangers' connections (pending, on probation, held) take at most `pending + probing`
 *   descriptors together; a connection that would go past that is over the limits. A connection
 *   that needs probation when they are all taken makes room by closing the oldest held one
 *   (already judged), else the oldest on probation that has sent nothing for SILENT_GRACE_MS and
 *   through a whole turn of the event loop; only when neither exists is it refused at once. The
 *   connections accepted in one turn are all accepted before any of them is read, and may be
 *   accepted before the reads of the turn after, so the grace keeps a newer connection from
 *   putting out one whose request is waiting to be read. Every request is read as long as one
 *   turn's accepts fit in the room, which holds while the strangers have fewer connections than
 *   about twice the room (the tests: 1,100 of them against a room of 720 under `ulimit -n 1024`);
 *   beyond that, a worker's chance on each attempt is the room's share of one turn's accepts.
 * - After its upgrade, a pending connection can make this process read at most PRE_AUTH_BYTES,
 *   plus what one socket read brings in (at most 64 KiB), before it is destroyed.
 * - Failing to accept for want of descriptors (EMFILE, ENFILE) is back-pressure: logged, never fatal.
 * - What strangers make this process print is rate-limited: each kind of refusal once per window,
 *   then a count.
 */
import type { Server as HttpServer } from 'node:http';
import { type AddressInfo, type Socket, createServer } from 'node:net';
import { TICKET_MS, TICKET_PARAM, ticketNonce } from './auth.js';
import { LogLimiter } from './log-limit.js';

/** How long a refused connection is held, unread, before it is closed. */
export const TARPIT_MS = 10_000;

/** The most a connection may send before proving the token: a Hello, Observe or PeerHello is well under 1 KiB. */
export const PRE_AUTH_BYTES = 8 * 1024;

/** How long a connection on probation may take to send the request that shows its ticket. */
export const PROBATION_MS = 5_000;

/** How long a connection on probation keeps its place, however full, before its request comes (and at least a turn of the event loop). */
export const SILENT_GRACE_MS = 100;

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
  /** What a connection refused after its accept costs its address, in connections of its rate. */
  penalty: number;
  /**
   * More room, beyond `pending`, for connections over the other limits let through until their
   * request shows (or lacks) a ticket, and for refused ones held unread: strangers take at most
   * `pending + probing` descriptors in all, however they are counted.
   */
  probing: number;
}

/**
 * Limits that leave room for authenticated peers and the run directory: a quarter of what is left
 * above a floor of 64 (at most 256) for strangers that have not proved the token, twice that for
 * connections on probation and held refused ones (together, at most three quarters), a sixteenth
 * more for the reserve. `descriptors` is the process's soft limit (null: unknown, taken as 1024).
 */
export function admissionLimits(descriptors: number | null): AdmissionLimits {
  const d = descriptors === null || descriptors < 0 ? 1024 : descriptors;
  const pending = Math.max(8, Math.min(256, Math.floor((d - 64) / 4)));
  return { pending, perAddress: Math.min(16, pending), reserved: Math.max(4, Math.floor(pending / 4)), ratePerS: 8, burst: 32, penalty: 2, probing: 2 * pending };
}

/** A port being listened on through an Admission. */
export interface Listening {
  port: number;
  /** Stop listening and close every connection the server holds. */
  close(): Promise<void>;
}

interface Entry {
  address: string;
  proven: boolean;
  /** Where it counts while it has not proved the token: a stranger's place, the reserve's, or probation. */
  place: 'pending' | 'reserved' | 'probation';
  /** It no longer counts (proved, showed its ticket, or closed). */
  released: boolean;
  /** When it was accepted. */
  at: number;
  /** On probation: a whole turn of the event loop has passed since its accept, so it could have been read. */
  heard?: boolean;
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
  private onProbation = 0;
  /** Connections on probation whose request has not come yet, oldest first. */
  private readonly silent = new Map<Entry, Socket>();
  /** Refused connections held unread until TARPIT_MS, oldest first. */
  private readonly held = new Set<Socket>();
  /** Ticket nonces taken, with when: each is good once. */
  private readonly nonces = new Map<string, number>();
  private readonly limited: LogLimiter;

  /** `token`: the run's token, without which there is no probation (nothing to show). */
  constructor(readonly limits: AdmissionLimits, log: (line: string) => void, private readonly token?: string) {
    this.limited = new LogLimiter(log);
  }

  /**
   * Listen on host:port (0: any free port) for `server`: each connection is handed to it once
   * admitted. Rejects with the listen error (EADDRINUSE, ...); afterwards, accept failures for
   * want of descriptors are back-pressure, logged, never fatal.
   */
  async listen(server: HttpServer, host: string, port: number): Promise<Listening> {
    // Every socket accepted, so closing ends the held and pending ones too, not only the server's.
    const open = new Set<Socket>();
    const front = createServer((s) => {
      open.add(s);
      s.once('close', () => open.delete(s));
      if (this.admit(s)) server.emit('connection', s);
    });
    await new Promise<void>((resolve, reject) => {
      front.once('error', reject);
      front.listen(port, host, () => {
        front.off('error', reject);
        resolve();
      });
    });
    front.on('error', (e: NodeJS.ErrnoException) => {
      if (e.code === 'EMFILE' || e.code === 'ENFILE') {
        this.limited.line('accept failures', `cannot accept a connection: ${e.code} (no file descriptor left); the connection waits in the kernel's queue`);
      } else {
        this.limited.line('listener errors', `listener error: ${e.code ?? ''} ${e.message}`);
      }
    });
    return {
      port: (front.address() as AddressInfo).port,
      close: () => new Promise<void>((resolve) => {
        front.close(() => resolve());
        server.closeAllConnections();
        for (const s of open) s.destroy();
      }),
    };
  }

  /**
   * Whether the connection may go on with the request it opened with (`url`, its path and query):
   * always, unless it is on probation; then only if the request carries a ticket for the token
   * never shown before (it stops counting on probation); otherwise it is refused here, held unread
   * like one refused at its accept, and its address pays as for any refusal.
   */
  async vouch(s: Socket, url: string | undefined): Promise<boolean> {
    const e = this.byPeer.get(key(s));
    if (!e || e.place !== 'probation') return true;
    // Put out to make room for a newer connection before its request came (destroyed at once).
    if (s.destroyed) return false;
    // Its request came: it is no longer one that eviction may pick.
    this.silent.delete(e);
    const ticket = new URLSearchParams((url ?? '').split('?')[1] ?? '').get(TICKET_PARAM);
    const now = Date.now();
    const nonce = ticket && this.token ? await ticketNonce(this.token, ticket, now) : null;
    if (s.destroyed) return false;
    if (nonce === null || this.nonces.has(nonce)) {
      this.limited.line('connections refused before the handshake', `connection from ${e.address} refused before the handshake: over the limits for strangers, and its request carries no valid ticket`);
      this.release(e);
      this.penalize(e.address);
      this.refuse(s);
      return false;
    }
    if (this.nonces.size >= 10_000) for (const [n, at] of this.nonces) if (now - at > 2 * TICKET_MS) this.nonces.delete(n);
    this.nonces.set(nonce, now);
    this.release(e);
    return true;
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
        if (socket.remoteAddress) this.penalize(socket.remoteAddress);
        refused(bytes);
      }
    };
    socket.on('data', onData);
  }

  /** A connection from `address` was refused before it proved the token: its address pays for it. */
  penalize(address: string): void {
    if (this.known.has(address)) return;
    const b = this.bucket(address, Date.now());
    b.tokens = Math.max(-this.limits.burst, b.tokens - this.limits.penalty);
  }

  /** Write out the counts of refusals held back. */
  flush(): void {
    this.limited.flush();
  }

  /** Whether a new connection may go on to the server (if not, it is refused here). */
  private admit(s: Socket): boolean {
    const address = s.remoteAddress;
    if (!address) return (s.destroy(), false);
    const known = this.known.has(address);
    const from = this.pendingFrom.get(address) ?? 0;
    const L = this.limits;
    let refusal: string | null = null;
    let reserved = false;
    if (!this.take(address)) refusal = `more than ${L.burst} new connections at once, or ${L.ratePerS} a second, from one address`;
    else if (from >= L.perAddress) refusal = `${from} connections from ${address} have not proved the token (limit ${L.perAddress} per address)`;
    else if (this.pending >= L.pending || this.roomFull()) {
      const why = this.pending >= L.pending ? `${this.pending} connections have not proved the token (limit ${L.pending}` : `strangers hold ${this.strangers()} connections (limit ${L.pending + L.probing}`;
      if (known && this.reservedInUse < L.reserved) reserved = true;
      else refusal = `${why}${known ? `, and the ${L.reserved} reserved for known addresses are taken` : ''})`;
    }
    // Over the limits with a token: probation, if room can be found (the class comment says how).
    const probation = refusal !== null && this.token !== undefined && this.makeRoom(Date.now());
    if (refusal && !probation) {
      this.limited.line('connections refused before the handshake', `connection from ${address} refused before the handshake: ${refusal}`);
      this.refuse(s);
      return false;
    }
    const e: Entry = { address, proven: false, place: probation ? 'probation' : reserved ? 'reserved' : 'pending', released: false, at: Date.now() };
    const k = key(s);
    this.byPeer.set(k, e);
    if (probation) {
      this.onProbation++;
      this.silent.set(e, s);
      // Heard once the next turn's poll has passed: a request waiting in the kernel was read by then.
      setImmediate(() => setImmediate(() => (e.heard = true)));
      const t = setTimeout(() => !e.released && s.destroy(), PROBATION_MS);
      t.unref();
      s.once('close', () => {
        clearTimeout(t);
        this.silent.delete(e);
      });
    } else {
      if (reserved) this.reservedInUse++;
      else this.pending++;
      this.pendingFrom.set(address, from + 1);
    }
    s.once('close', () => {
      this.release(e);
      if (this.byPeer.get(k) === e) this.byPeer.delete(k);
    });
    return true;
  }

  /** Descriptors strangers hold now: pending, on probation and held. */
  private strangers(): number {
    return this.pending + this.onProbation + this.held.size;
  }

  /** Whether strangers hold all of their room (`pending + probing` descriptors). */
  private roomFull(): boolean {
    return this.strangers() >= this.limits.pending + this.limits.probing;
  }

  /**
   * Whether one more connection may go on probation: there is room, or room is made by closing the
   * oldest held connection, else by refusing the oldest on probation silent for SILENT_GRACE_MS
   * and a whole turn of the event loop.
   */
  private makeRoom(now: number): boolean {
    if (!this.roomFull()) return true;
    const held = this.held.values().next();
    if (!held.done) {
      // Counted out now: its close comes after this turn's other accepts.
      this.held.delete(held.value);
      held.value.destroy();
      return true;
    }
    const oldest = this.silent.entries().next();
    if (oldest.done || !oldest.value[0].heard || now - oldest.value[0].at < SILENT_GRACE_MS) return false;
    const [e, s] = oldest.value;
    this.silent.delete(e);
    this.release(e);
    this.limited.line('connections refused before the handshake', `connection from ${e.address} refused before the handshake: over the limits for strangers, and no request with a ticket before newer connections needed its place on probation`);
    this.penalize(e.address);
    // It is not held: its place is the newcomer's.
    s.destroy();
    return true;
  }

  /** Hold a refused connection unread for a while (a reconnect loop then waits), or close it at once when there is no room. */
  private refuse(s: Socket): void {
    if (this.roomFull()) return void s.destroy();
    this.held.add(s);
    s.pause();
    const t = setTimeout(() => s.destroy(), TARPIT_MS);
    t.unref();
    s.once('close', () => {
      clearTimeout(t);
      this.held.delete(s);
    });
  }

  /** The connection no longer counts (proved, showed its ticket, or gone); once only. */
  private release(e: Entry): void {
    if (e.released) return;
    e.released = true;
    if (e.place === 'probation') return void this.onProbation--;
    if (e.place === 'reserved') this.reservedInUse--;
    else this.pending--;
    const n = (this.pendingFrom.get(e.address) ?? 1) - 1;
    if (n > 0) this.pendingFrom.set(e.address, n);
    else this.pendingFrom.delete(e.address);
  }

  /** One new connection from `address` within its rate (a token bucket). */
  private take(address: string): boolean {
    const b = this.bucket(address, Date.now());
    if (b.tokens < 1) return false;
    b.tokens -= 1;
    return true;
  }

  /** The address's bucket, refilled to now. */
  private bucket(address: string, now: number): Bucket {
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
    return b;
  }
}

const key = (s: { remoteAddress?: string; remotePort?: number }) => `${s.remoteAddress}:${s.remotePort}`;
