/**
 * The coordinator's connections: one HTTP(S) server whose WebSocket upgrades become workers, the
 * handshake and token proof, heartbeats, validation of everything a worker sends, drops, and the
 * byte counters. The round loop (coordinator.ts) sees workers only through this surface: who is
 * live, send a frame, ask a worker for a phase's gradient, drop a worker.
 *
 * Invariants:
 * - A connection is 'handshake' until its Hello proves the protocol version, the model signature
 *   and (with a token) HMAC-SHA256(token, nonce); then 'joining' until the round loop admits it
 *   at a round boundary ('live'); 'dead' is final. At most `capacity` connections are joining or
 *   live at once; one more is refused with E_FULL.
 * - Every inbound frame is decoded and validated before use. Anything invalid closes that
 *   connection with its code and reason and never reaches the round loop.
 * - What a connection can cost before it proves the token is bounded (shared/wire/admission.ts):
 *   per address and in total, in bytes read, and in lines printed; workers and dashboard pages
 *   from addresses that proved the token before always find room.
 * - A worker dropped for a timeout waits before it is admitted again (backoff.ts).
 * - After its handshake a worker's frames go to the handler of the open phase (reduction.ts), which
 *   accepts a report or a chunk only for the (round, phase) the worker was asked for, only once, of
 *   the model's size and with finite values; outside a phase they are refused.
 */
import type { WirePrecision } from '../shared/numerics/wire-format.js';
import { EventEmitter } from 'node:events';
import { type IncomingMessage, type ServerResponse, createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocket, WebSocketServer } from 'ws';
import { Kind, type HelloMsg, type LocalSteps, type Message, type ReportMsg, decode, encode } from '../shared/wire/codec.js';
import { GanError, asGanError, isErrorCode } from '../shared/wire/errors.js';
import { CLOSE_GRACE_MS, Challenger, closeLink, handshakeDeadline, refuse } from '../shared/wire/handshake.js';
import { type ModelConfig, type Net, netLayout } from '../shared/compute/model.js';
import { listenGuarded } from './listen.js';
import { Admission, type AdmissionLimits, type Listening, PRE_AUTH_BYTES } from '../shared/wire/admission.js';
import { LogLimiter } from '../shared/wire/log-limit.js';
import { SHARD_CHUNK } from './sharding.js';
import { TimeoutBackoff } from './backoff.js';
import { WorkerConn, type WorkerState } from './worker-conn.js';

export { WorkerConn, type WorkerState } from './worker-conn.js';
import type { SameHostHub } from './same-host.js';
import { DIGIT_PIXELS } from '../shared/data/digits.js';

export interface PoolOptions {
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Workers must prove this token (HMAC over a nonce); none: anyone on the network may join. */
  token?: string;
  tls?: { cert: Buffer; key: Buffer };
  /** Interval of WebSocket pings; a worker that misses three in a row is dropped. */
  heartbeatMs: number;
  model: ModelConfig;
  signature: string;
  /** What every Welcome tells a worker. */
  seed: number;
  wire: WirePrecision;
  /** A low-communication run's local steps, told to every worker in its Welcome. */
  local?: LocalSteps;
  /** Most workers joining or live at once (--workers). */
  capacity: number;
  /** Shared regions offered to workers that can map them (null: frames for everyone). */
  sameHost: SameHostHub | null;
  /** Plain HTTP requests (the dashboard and browser-worker pages). */
  onHttp?: (req: IncomingMessage, res: ServerResponse) => void;
  /** A WebSocket opened at /observe (the dashboard watching the run); `proven` once it proved the token. */
  onObserver?: (ws: WebSocket, proven: () => void) => void;
  /** What connections may cost before they prove the token (admission.ts). */
  admission: AdmissionLimits;
  log: (line: string) => void;
}

export interface PoolEvents {
  /** A connection finished its handshake and waits to be admitted. */
  connected: [c: WorkerConn];
  /** A worker reported a computed phase, before validation (observers, tests). */
  report: [c: WorkerConn, m: ReportMsg];
  /**
   * A connection ended; `wasLive` if it was a member of the run. `reason` is the error code it was
   * dropped with (E_TIMEOUT, ...), or how its peer closed it.
   */
  left: [c: WorkerConn, wasLive: boolean, reason: string];
}

export class WorkerPool extends EventEmitter<PoolEvents> {
  readonly layouts: Record<Net, { total: number }>;
  /** Largest frame a worker may send: a float32 gradient plus its fields. */
  readonly maxInbound: number;
  /** Largest frame this side sends: weights, or a piece of a shard. */
  readonly maxOutbound: number;
  private listening: Listening | null = null;
  private wss: WebSocketServer | null = null;
  private conns = new Set<WorkerConn>();
  private nextId = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  private closing = false;
  private wake: (() => void) | null = null;
  private bytesIn = 0;
  private bytesOut = 0;
  /** Workers dropped for timeouts wait before they are admitted again. */
  private readonly backoff = new TimeoutBackoff();
  private readonly limited: LogLimiter;
  private readonly admission: Admission;
  /** Where frames of live workers go: the open phase, or nothing between phases. */
  private handler: ((c: WorkerConn, m: Message) => void) | null = null;

  constructor(private readonly o: PoolOptions) {
    super();
    this.layouts = { G: netLayout(o.model, 'G'), D: netLayout(o.model, 'D') };
    const biggest = Math.max(this.layouts.G.total, this.layouts.D.total) * 4;
    this.maxInbound = biggest + 64 * 1024;
    this.maxOutbound = Math.max(biggest, SHARD_CHUNK * (DIGIT_PIXELS + 1 + 4)) + 64 * 1024;
    this.limited = new LogLimiter(o.log);
    this.admission = new Admission(o.admission, o.log, o.token);
  }

  /** Bytes read from and written to every connection so far (frames, not TCP overhead). */
  get bytes(): { in: number; out: number } {
    return { in: this.bytesIn, out: this.bytesOut };
  }

  /** Connections of every state (handshakes included). */
  get connections(): number {
    return this.conns.size;
  }

  /** Live workers in id order: the members of the run. */
  live(): WorkerConn[] {
    return this.inState('live');
  }

  /** Workers past their handshake that wait for the next round boundary, in id order. */
  joining(): WorkerConn[] {
    return this.inState('joining');
  }

  private inState(s: WorkerState): WorkerConn[] {
    return [...this.conns].filter((c) => c.state === s).sort((a, b) => a.id - b.id);
  }

  /** Listen; resolves to the bound port. Beyond loopback a token (or `insecure`) is required. */
  async listen(insecure = false): Promise<number> {
    const { host, port } = this.o;
    const server = this.o.tls ? createHttpsServer({ cert: this.o.tls.cert, key: this.o.tls.key }) : createHttpServer();
    this.wss = new WebSocketServer({ noServer: true, maxPayload: this.maxInbound, perMessageDeflate: false, clientTracking: false });
    server.on('request', async (req: IncomingMessage, res: ServerResponse) => {
      // Over the limits for strangers, only a ticket lets a request on (admission.ts).
      if (!(await this.admission.vouch(req.socket, req.url))) return;
      if (this.o.onHttp) return this.o.onHttp(req, res);
      res.writeHead(426, { 'Content-Type': 'text/plain', Upgrade: 'websocket' });
      res.end('This is a gan-ddp coordinator: workers connect with a WebSocket.\n');
    });
    server.on('upgrade', async (req: IncomingMessage, socket: Socket, head: Buffer) => {
      if (!(await this.admission.vouch(socket, req.url))) return;
      // A connection admitted as the pool closes has nothing to join.
      if (!this.wss || socket.destroyed) return void socket.destroy();
      const ip = req.socket.remoteAddress ?? '?';
      const observer = (req.url ?? '/').split('?')[0] === '/observe' && this.o.onObserver;
      this.wss.handleUpgrade(req, socket, head, (ws) => {
        if (!observer) return this.accept(ws, socket, `${ip}:${req.socket.remotePort}`, ip);
        let proven = false;
        this.admission.limitBytes(socket, () => !proven, (bytes) => this.limited.line('oversized handshakes', `observer from ${ip} destroyed: ${bytes} bytes before proving the token (limit ${PRE_AUTH_BYTES})`));
        observer(ws, () => {
          proven = true;
          this.admission.proven(socket);
        });
      });
    });
    this.heartbeat = setInterval(() => this.beat(), this.o.heartbeatMs);
    this.heartbeat.unref();
    this.listening = await listenGuarded(server, this.admission, host, port, { token: this.o.token, insecure });
    return this.listening.port;
  }

  send(c: WorkerConn, frame: Uint8Array): void {
    if (c.ws.readyState !== WebSocket.OPEN) return;
    this.bytesOut += frame.length;
    c.bytesOut += frame.length;
    c.ws.send(frame);
  }

  /** A joining worker becomes a member of the run (the round loop has sent it weights and data). */
  activate(c: WorkerConn): void {
    if (c.state === 'joining') c.state = 'live';
  }

  /**
   * Frames from joined workers go to `handler` (the open phase) until it is replaced; it throws a
   * GanError to refuse a frame, which drops the sender. With no handler, frames are refused.
   */
  route(handler: ((c: WorkerConn, m: Message) => void) | null): void {
    this.handler = handler;
  }

  /** Close a worker's connection with the error's code and reason; it leaves the run. */
  drop(c: WorkerConn, e: GanError): void {
    if (c.state === 'dead') return;
    if (c.id >= 0) this.o.log(`${c.label} dropped: ${e.code} ${e.message}`);
    else {
      this.limited.line(`refused connections (${e.code})`, `connection from ${c.addr} refused: ${e.code} ${e.message}`);
      // A worker told to wait or that the run is full proved the token; anyone else failed the handshake.
      if (e.code !== 'E_BACKOFF' && e.code !== 'E_FULL') this.admission.penalize(c.remoteIp);
    }
    if (e.code === 'E_TIMEOUT' && c.id >= 0) this.backoff.dropped(c);
    refuse(c.ws, e);
    this.markDead(c, e.code);
  }

  /** Resolve when membership may have changed (a join, a drop), or after `ms`. */
  changed(ms: number): Promise<void> {
    return new Promise((resolve) => {
      const t = setTimeout(() => {
        this.wake = null;
        resolve();
      }, ms);
      this.wake = () => {
        clearTimeout(t);
        resolve();
      };
    });
  }

  /** Wake a pending changed() now (a stop request). */
  poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  private accept(ws: WebSocket, socket: Socket, addr: string, remoteIp: string): void {
    const c = new WorkerConn(ws, addr, remoteIp);
    this.conns.add(c);
    this.admission.limitBytes(socket, () => c.state === 'handshake', (bytes) => {
      this.limited.line('oversized handshakes', `connection from ${addr} destroyed: ${bytes} bytes before proving the token (limit ${PRE_AUTH_BYTES})`);
      this.markDead(c, 'E_TOO_BIG');
    });
    const challenger = new Challenger({ token: this.o.token, model: this.o.model });
    const deadline = handshakeDeadline('Hello', (e) => this.drop(c, e));
    let answered = false;
    ws.on('pong', () => (c.missedPongs = 0));
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      this.bytesIn += buf.length;
      c.bytesIn += buf.length;
      try {
        if (!isBinary) throw new GanError('E_MALFORMED', 'text frames are not part of the protocol');
        const m = decode(buf);
        if (c.state !== 'handshake') return this.dispatch(c, m);
        // One answer to the Challenge; nothing else until the Welcome.
        if (answered) throw new GanError('E_UNEXPECTED', `${Kind[m.k] ?? m.k} before the Welcome`);
        answered = true;
        deadline.clear();
        challenger.verify(m, Kind.Hello, this.o.signature).then((hello) => (this.admission.proven(socket), this.onHello(c, hello))).catch((e: unknown) => this.drop(c, asGanError(e, 'E_MALFORMED')));
      } catch (e) {
        this.drop(c, asGanError(e, 'E_MALFORMED'));
      }
    });
    ws.on('close', (code, reason) => {
      deadline.clear();
      if (c.state !== 'dead' && c.id >= 0 && !this.closing) this.o.log(`${c.label} disconnected (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
      this.markDead(c, reason.length ? reason.toString().split(':')[0]! : `closed ${code}`);
    });
    ws.on('error', (err: Error & { code?: string }) => {
      // ws closes a peer itself for a frame over the limit (1009) or a broken frame (1002, 1007, 1008).
      const what = `${c.id >= 0 ? c.label : `connection from ${c.addr}`}: ${err.message}${err.code ? ` (${err.code})` : ''}`;
      if (c.id >= 0) this.o.log(what);
      else this.limited.line(`protocol errors before a handshake`, what);
      this.markDead(c, err.code === 'WS_ERR_UNSUPPORTED_MESSAGE_LENGTH' ? 'E_TOO_BIG' : 'E_MALFORMED');
    });
    this.send(c, encode(challenger.challenge));
  }

  /** A proven Hello: admit the worker (joining) unless it must wait (E_BACKOFF) or the run is full (E_FULL). */
  private onHello(c: WorkerConn, m: HelloMsg): void {
    if (c.state !== 'handshake') return; // it went away while its proof was checked
    c.host = m.host.slice(0, 64);
    c.pid = m.pid;
    const wait = this.backoff.refusal(c);
    if (wait) return this.drop(c, wait);
    const active = [...this.conns].filter((x) => x.state === 'live' || x.state === 'joining').length;
    if (active >= this.o.capacity) return this.drop(c, new GanError('E_FULL', `already ${this.o.capacity} workers (--workers)`));
    c.id = this.nextId++;
    c.backend = m.backend.slice(0, 64);
    if (m.peerPort !== undefined && m.peerPort > 0 && m.peerPort < 65536) {
      const host = m.peerHost?.slice(0, 255) || c.remoteIp.replace(/^::ffff:/, '');
      c.peerUrl = `${this.o.tls ? 'wss' : 'ws'}://${host.includes(':') ? `[${host}]` : host}:${m.peerPort}`;
    }
    c.state = 'joining';
    const offer = m.sameHost ? this.o.sameHost?.offer(c) : null;
    this.send(c, encode({ k: Kind.Welcome, workerId: c.id, seed: this.o.seed, wire: this.o.wire, maxPayload: this.maxOutbound, local: this.o.local, ...offer }));
    this.o.log(`${c.label} connected from ${c.addr}; joins at the next round`);
    this.emit('connected', c);
    this.poke();
  }

  private dispatch(c: WorkerConn, m: Message): void {
    if (m.k === Kind.Refused) {
      // The worker leaves and says why (its own error); its close follows.
      const code = isErrorCode(m.code) ? m.code : 'E_MALFORMED';
      this.o.log(`${c.label} left: ${code} ${m.reason.slice(0, 200)}`);
      closeLink(c.ws, 1000, 'refusal received');
      return this.markDead(c, code);
    }
    if (m.k === Kind.SameHost) {
      const a = this.o.sameHost?.answer(c, m);
      if (!a) throw new GanError('E_UNEXPECTED', 'SameHost without an offer of shared regions');
      return this.o.log(a.shared ? `${c.label} shares this host: tensors through shared memory` : `${c.label} uses frames (${a.why})`);
    }
    if (m.k === Kind.Report) this.emit('report', c, m);
    if (c.state !== 'live') throw new GanError('E_UNEXPECTED', `${Kind[m.k] ?? m.k} before this worker was admitted to a round`);
    if (!this.handler) {
      // A peer link can break between phases; the next phase's plan will route around it.
      if (m.k === Kind.PeerLost) return this.o.log(`${c.label} lost its link to worker ${m.peer}: ${m.code} ${m.reason}`);
      throw new GanError('E_STALE', `${Kind[m.k] ?? m.k} while no phase is open`);
    }
    this.handler(c, m);
  }

  private markDead(c: WorkerConn, reason: string): void {
    if (c.state === 'dead') return;
    const wasLive = c.state === 'live';
    const wasWorker = c.state !== 'handshake';
    c.state = 'dead';
    this.conns.delete(c);
    this.o.sameHost?.release(c);
    if (wasWorker) this.emit('left', c, wasLive, reason);
    this.poke();
  }

  private beat(): void {
    for (const c of this.conns) {
      if (c.state === 'dead') continue;
      if (c.missedPongs >= 3) {
        this.drop(c, new GanError('E_TIMEOUT', 'no answer to three pings'));
        continue;
      }
      c.missedPongs++;
      try {
        c.ws.ping();
      } catch {
        this.markDead(c, 'socket error');
      }
    }
  }

  /**
   * Tell every connection the run is over (`stop`, then a close with E_DONE) and close the server.
   * A frozen peer gets CLOSE_GRACE_MS, then its socket is destroyed.
   */
  async close(stop: Uint8Array, reason: string): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.closing = true;
    await Promise.all([...this.conns].map((c) => new Promise<void>((resolve) => {
      if (c.ws.readyState === WebSocket.CLOSED) return resolve();
      const t = setTimeout(() => {
        c.ws.terminate();
        resolve();
      }, CLOSE_GRACE_MS);
      c.ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.send(c, stop);
      c.ws.close(1000, `E_DONE: ${reason.slice(0, 100)}`);
    })));
    this.limited.flush();
    this.admission.flush();
    const listening = this.listening;
    this.listening = null;
    this.wss = null;
    await listening?.close();
  }
}
