/**
 * Peer links between Node workers, for relayed reductions: each relaying worker listens and dials
 * the peers it sends to (the next member of its chain, the owners of a sharded group's chunks), and
 * both directions of a link carry frames (partial sums or parts one way, new weights the other).
 *
 * Invariants:
 * - A link is used only after both ends proved the run's token (when it has one): the listener
 *   sends a Challenge, the dialer answers PeerHello with its proof and a nonce of its own, the
 *   listener answers PeerWelcome with its proof over that nonce. The model signature must match.
 * - Every frame is decoded before use; after the handshake only Chunk and WeightsChunk may cross,
 *   and their contents are validated by the worker (participant.ts). Anything invalid closes that
 *   link with its code and reason, and the coordinator is told (PeerLost); the phase is retried
 *   without the link.
 * - Without a token the listener binds to loopback unless the coordinator itself is remote, as the
 *   coordinator refuses to listen beyond loopback without a token.
 * - Strangers who dial the listener are bounded as at the coordinator (shared/wire/admission.ts).
 */
import { createServer as createHttpServer } from 'node:http';
import { createServer as createHttpsServer } from 'node:https';
import type { Socket } from 'node:net';
import { WebSocketServer } from 'ws';
import { proveToken, randomNonce } from '../shared/wire/auth.js';
import { Kind, type Message, PROTOCOL_VERSION, decode, encode } from '../shared/wire/codec.js';
import { Admission, type Listening, PRE_AUTH_BYTES, admissionLimits } from '../shared/wire/admission.js';
import { Challenger, answerChallenge, closeLink, handshakeDeadline, refuse, refusedError, verifyProof } from '../shared/wire/handshake.js';
import { type ErrorCode, GanError, asGanError } from '../shared/wire/errors.js';
import { type ModelConfig, modelSignature } from '../shared/compute/model.js';
import { nodeConnect, wrapSocket } from './node-transport.js';
import type { Link } from './transport.js';
import type { Relay } from './worker.js';

export interface PeerHubOptions {
  /** Interface to listen on. */
  bindHost: string;
  /** Serve wss:// with this certificate (the run uses TLS). */
  tls?: { cert: Buffer; key: Buffer };
  /** CA to trust when dialing wss:// peers. */
  ca?: Buffer;
  token?: string;
  model: ModelConfig;
  signature: string;
  maxPayload: number;
  /** This worker's id in the run (it changes when it rejoins). */
  selfId(): number;
  /** A validated-to-kind frame from a peer; throw a GanError to refuse it (the link closes). */
  onFrame(from: number, m: Message): void;
  /** A link to `peer` failed or was refused. */
  onLost(peer: number, code: ErrorCode, reason: string): void;
  log(line: string): void;
}

interface PeerLink {
  peer: number;
  link: Link;
  ready: boolean;
  queue: Uint8Array[];
  /** The nonce this dialer sent in PeerHello, which the listener's PeerWelcome proves the token over. */
  nonce: Uint8Array;
  closed: boolean;
  /** Frames are handled one after another, in order (the handshake awaits its proofs). */
  chain: Promise<void>;
  /** An accepted link that has not proved the token yet: where it came from (it pays if it fails). */
  address?: string;
}

export class PeerHub {
  private listening: Listening | null = null;
  private wss: WebSocketServer | null = null;
  /**
   * Links by peer id: those this worker dialed and those it accepted. Two members that both send
   * to each other (a sharded group) may each dial the other: both links carry frames either way.
   */
  private dialed = new Map<number, PeerLink>();
  private accepted = new Map<number, PeerLink>();
  private killed = false;
  private readonly connect;
  /** Strangers who dial this listener cost it a bounded share of its descriptors and reads. */
  private readonly admission: Admission;

  constructor(private readonly o: PeerHubOptions) {
    this.connect = nodeConnect({ maxPayload: o.maxPayload, ca: o.ca });
    this.admission = new Admission(admissionLimits(null), o.log);
  }

  /** Listen; resolves to the port peers dial. */
  async start(): Promise<number> {
    const server = this.o.tls ? createHttpsServer({ cert: this.o.tls.cert, key: this.o.tls.key }) : createHttpServer();
    this.wss = new WebSocketServer({ server, maxPayload: this.o.maxPayload, perMessageDeflate: false, clientTracking: false });
    this.wss.on('connection', (ws, req) => this.accept(wrapSocketLater(ws), req.socket));
    this.listening = await this.admission.listen(server, this.o.bindHost, 0);
    return this.listening.port;
  }

  /**
   * Send a frame to `peer`: over the link that exists, or over a new one dialed to `url` (frames
   * wait until its handshake is done). Without a link and without a url the frame is dropped.
   */
  send(peer: number, url: string | null, frame: Uint8Array): void {
    if (this.killed) return;
    let p = this.dialed.get(peer) ?? this.accepted.get(peer);
    if (!p && url) p = this.dial(peer, url);
    if (!p) return;
    if (p.ready) p.link.send(frame);
    else p.queue.push(frame);
  }

  /** Close the link to `peer` with a coded reason, as an invalid frame from it does; the coordinator is told. */
  drop(peer: number, code: ErrorCode, reason: string): void {
    for (const p of [this.dialed.get(peer), this.accepted.get(peer)]) if (p) this.fail(p, new GanError(code, reason));
  }

  /** Drop every link and the listener at once, as a crash would. */
  kill(): void {
    this.killed = true;
    for (const p of this.all()) {
      p.closed = true;
      p.link.terminate();
    }
    this.dialed.clear();
    this.accepted.clear();
    void this.listening?.close();
    this.listening = null;
  }

  async close(): Promise<void> {
    for (const p of this.all()) this.end(p, 1000, 'worker stopping');
    const listening = this.listening;
    this.listening = null;
    await listening?.close();
  }

  private all(): PeerLink[] {
    return [...this.dialed.values(), ...this.accepted.values()];
  }

  /** Forget a link that ended, wherever it is kept. */
  private forget(p: PeerLink): void {
    if (this.dialed.get(p.peer) === p) this.dialed.delete(p.peer);
    if (this.accepted.get(p.peer) === p) this.accepted.delete(p.peer);
  }

  private dial(peer: number, url: string): PeerLink {
    const p: PeerLink = { peer, link: null as unknown as Link, ready: false, queue: [], nonce: randomNonce(), closed: false, chain: Promise.resolve() };
    const deadline = handshakeDeadline(`handshake with worker ${peer}`, (e) => this.fail(p, e));
    p.link = this.connect(url, {
      onMessage: (frame, binary) => this.guard(p, async () => {
        if (!binary) throw new GanError('E_MALFORMED', 'text frames are not part of the protocol');
        const m = decode(frame);
        if (m.k === Kind.Refused) throw refusedError(m);
        if (p.ready) return this.o.onFrame(peer, m);
        if (m.k === Kind.Challenge) {
          const { proof } = await answerChallenge(m, { token: this.o.token });
          p.link.send(encode({ k: Kind.PeerHello, v: PROTOCOL_VERSION, workerId: this.o.selfId(), signature: this.o.signature, proof, nonce: p.nonce }));
          return;
        }
        if (m.k !== Kind.PeerWelcome) throw new GanError('E_UNEXPECTED', `expected PeerWelcome, got ${Kind[m.k] ?? m.k}`);
        if (m.workerId !== peer) throw new GanError('E_AUTH', `dialed worker ${peer}, reached worker ${m.workerId}`);
        await verifyProof(this.o.token, p.nonce, m.proof, `worker ${peer} did not prove the token`);
        deadline.clear();
        this.ready(p);
      }),
      onClose: (code, reason) => this.fail(p, new GanError('E_CONNECT', `link to worker ${peer} closed (${code}${reason ? ` ${reason}` : ''})`)),
      onError: (message, kind) => this.fail(p, new GanError(kind === 'tls' ? 'E_TLS' : 'E_CONNECT', `link to worker ${peer} (${url}): ${message}`)),
    });
    this.dialed.set(peer, p);
    return p;
  }

  private accept(later: (h: Parameters<typeof wrapSocket>[1]) => Link, socket: Socket): void {
    const p: PeerLink = { peer: -1, link: null as unknown as Link, ready: false, queue: [], nonce: randomNonce(), closed: false, chain: Promise.resolve() };
    p.address = socket.remoteAddress;
    const challenger = new Challenger({ token: this.o.token, model: this.o.model });
    const deadline = handshakeDeadline('PeerHello', (e) => this.fail(p, e));
    p.link = later({
      onMessage: (frame, binary) => this.guard(p, async () => {
        if (!binary) throw new GanError('E_MALFORMED', 'text frames are not part of the protocol');
        const m = decode(frame);
        if (m.k === Kind.Refused) throw refusedError(m);
        if (p.ready) return this.o.onFrame(p.peer, m);
        const hello = await challenger.verify(m, Kind.PeerHello, this.o.signature);
        deadline.clear();
        p.peer = hello.workerId;
        const old = this.accepted.get(p.peer);
        if (old && old !== p) this.end(old, 1000, 'replaced by a new link');
        this.accepted.set(p.peer, p);
        const proof = this.o.token ? await proveToken(this.o.token, hello.nonce) : undefined;
        p.link.send(encode({ k: Kind.PeerWelcome, workerId: this.o.selfId(), proof }));
        p.address = undefined;
        this.admission.proven(socket);
        this.ready(p);
      }),
      onClose: (code, reason) => this.fail(p, new GanError('E_CONNECT', `link from worker ${p.peer} closed (${code}${reason ? ` ${reason}` : ''})`)),
      onError: (message) => this.fail(p, new GanError('E_CONNECT', `link from worker ${p.peer}: ${message}`)),
    });
    this.admission.limitBytes(socket, () => !p.ready && !p.closed, (bytes) => this.o.log(`peer link from ${socket.remoteAddress}: destroyed after ${bytes} bytes before proving the token (limit ${PRE_AUTH_BYTES})`));
    p.link.send(encode(challenger.challenge));
  }

  private ready(p: PeerLink): void {
    p.ready = true;
    for (const f of p.queue.splice(0)) p.link.send(f);
  }

  /** Run a frame handler; a GanError (or any failure) closes the link with its code. */
  private guard(p: PeerLink, f: () => Promise<void> | void): void {
    p.chain = p.chain
      .then(() => (p.closed ? undefined : f()))
      .catch((e: unknown) => this.fail(p, asGanError(e, 'E_MALFORMED')));
  }

  /** A link failed or was refused: it is closed with the error's code, and the coordinator told. */
  private fail(p: PeerLink, e: GanError): void {
    if (p.closed) return;
    p.closed = true;
    this.forget(p);
    refuse(p.link, e);
    if (p.address) this.admission.penalize(p.address);
    if (p.peer >= 0) {
      this.o.log(`peer link: ${e.code} ${e.message}`);
      this.o.onLost(p.peer, e.code, e.message);
    }
  }

  /** Close a link that is no longer needed. */
  private end(p: PeerLink, closeCode: number, reason: string): void {
    if (p.closed) return;
    p.closed = true;
    this.forget(p);
    closeLink(p.link, closeCode, reason);
  }
}

/** An accepted ws socket, wrapped once its handlers are known. */
function wrapSocketLater(ws: import('ws').WebSocket): (h: Parameters<typeof wrapSocket>[1]) => Link {
  return (h) => wrapSocket(ws, h);
}

export interface NodeRelayOptions {
  /** Interface the peer listener binds to when the run has a token (or the coordinator is remote). */
  bindHost: string;
  /** The address peers dial, when not the one the coordinator sees. */
  advertise?: string;
  /** The coordinator is on this host: without a token, peers listen on loopback only. */
  coordinatorIsLocal: boolean;
  tls?: { cert: Buffer; key: Buffer };
  ca?: Buffer;
  token?: string;
  maxPayload: number;
  log(line: string): void;
}

/** A Relay (worker.ts) on a PeerHub: one listener for the worker's life, whatever its sessions. */
export function nodeRelay(o: NodeRelayOptions): Relay {
  let hub: PeerHub | null = null;
  let port: Promise<{ port: number; host?: string }> | null = null;
  let session: Parameters<Relay['listen']>[0] | null = null;
  return {
    listen(s) {
      session = s;
      if (!port) {
        // Without a token a listener beyond loopback would let anyone feed partial sums.
        const bindHost = s.auth || !o.coordinatorIsLocal ? o.bindHost : '127.0.0.1';
        hub = new PeerHub({
          bindHost, tls: o.tls, ca: o.ca, token: o.token, model: s.model, signature: modelSignature(s.model), maxPayload: o.maxPayload,
          selfId: () => session!.selfId(),
          onFrame: (from, m) => session!.onFrame(from, m),
          onLost: (peer, code, reason) => session!.onLost(peer, code, reason),
          log: o.log,
        });
        port = hub.start().then((p) => ({ port: p, host: o.advertise }));
      }
      return port;
    },
    send: (peer, url, frame) => hub?.send(peer, url, frame),
    drop: (peer, code, reason) => hub?.drop(peer, code, reason),
    close: async () => {
      await hub?.close();
    },
    kill: () => hub?.kill(),
  };
}
