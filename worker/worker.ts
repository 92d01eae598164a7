/**
 * A worker's connection to its coordinator: handshake, the frames of a session handed to its
 * Participant (participant.ts) strictly in order, and reconnection. Transport-free: the Node entry
 * point (cli/worker.ts) and the browser page give it their WebSocket and, where workers can listen,
 * a PeerHub for relays.
 *
 * Connection lifecycle: connect -> Challenge -> Hello -> Welcome -> (Shard | Weights | Task |
 * Reduce | Chunk | WeightsChunk)* -> Stop. When the connection drops for any reason other than
 * Stop or a refusal (version, model, token, certificate), the worker reconnects with capped
 * exponential backoff and gives up after --connect-timeout without a successful handshake.
 */
import type { WirePrecision } from '../shared/numerics/wire-format.js';
import {
  type ChallengeMsg, Kind, type Message, PROTOCOL_VERSION, type WelcomeMsg, decode, encode,
} from '../shared/wire/codec.js';
import { type ErrorCode, ErrorCodes, GanError, asGanError, isErrorCode } from '../shared/wire/errors.js';
import { withTicket } from '../shared/wire/auth.js';
import { answerChallenge, refuse, refusedError } from '../shared/wire/handshake.js';
import type { GanModel } from '../shared/compute/gan.js';
import { type ModelConfig, type ModelKind, modelSignature, netLayout } from '../shared/compute/model.js';
import { Participant, type ParticipantOptions } from './participant.js';
import type { SameHostMapper, SharedRegions } from './same-host.js';
import type { Connect, Link } from './transport.js';

/** A relay listener: how this worker takes part in relayed reductions (Node workers that can listen). */
export interface Relay {
  /** Start listening (once); resolves to the port peers dial, and the host when it is not the one the coordinator sees. */
  listen(o: { auth: boolean; model: ModelConfig; selfId: () => number; onFrame: (from: number, m: Message) => void; onLost: (peer: number, code: ErrorCode, reason: string) => void }): Promise<{ port: number; host?: string }>;
  send(peer: number, url: string | null, frame: Uint8Array): void;
  /** Close the link to `peer` (it sent something invalid). */
  drop(peer: number, code: ErrorCode, reason: string): void;
  close(): Promise<void>;
  /** Drop every link and the listener at once, as a crash would. */
  kill(): void;
}

export interface WorkerOptions {
  /** ws://HOST:PORT or wss://HOST:PORT */
  url: string;
  token?: string;
  /** Opens the connection to the coordinator. */
  connect: Connect;
  /** Backend label reported in the handshake. */
  backend: string;
  /** Host name reported in the handshake. */
  host: string;
  pid: number;
  /** Give up after this many ms without a successful handshake. */
  connectTimeoutMs?: number;
  /** Largest frame accepted from the coordinator. */
  maxPayload?: number;
  /** Refuse a coordinator that trains another model kind. */
  expectModel?: ModelKind;
  /** Take part in relayed reductions (absent: this worker sends its gradients to the coordinator). */
  relay?: Relay;
  /** Map the coordinator's shared regions when it offers them (absent: tensors always travel in frames). */
  sameHost?: SameHostMapper;
  log?: (line: string) => void;
  /** Told after each phase this worker computed. */
  onComputed?: ParticipantOptions['onComputed'];
  /** Told when the worker joins a coordinator (its id) or loses it. */
  onJoined?: (workerId: number) => void;
}

/**
 * Close codes after which reconnecting cannot help. E_FULL is not among them: the coordinator
 * may still hold this worker's previous, half-open connection, and frees the slot when it drops it.
 */
const FATAL = new Set<number>([ErrorCodes.E_VERSION, ErrorCodes.E_MODEL, ErrorCodes.E_AUTH]);

/** How a session ended; `retryAfterMs` is the coordinator's own wait (E_BACKOFF's Refused frame). */
type Outcome = { kind: 'stop' | 'fatal' | 'retry'; code: ErrorCode; message: string; handshook: boolean; retryAfterMs?: number };

export class WorkerClient {
  id = -1;
  private link: Link | null = null;
  private welcome: WelcomeMsg | null = null;
  private participant: Participant | null = null;
  /** The model the coordinator's Challenge named, until its Welcome arrives. */
  private pendingModel: ModelConfig | null = null;
  private stopped = false;
  private queue: Promise<void> = Promise.resolve();
  private done = 0;
  private readonly log: (line: string) => void;

  constructor(readonly opts: WorkerOptions) {
    this.log = opts.log ?? (() => {});
  }

  /** The model of the current session (tests dispose it). */
  get model(): GanModel | null {
    return this.participant?.model ?? null;
  }

  /** Tasks computed over every session. */
  get tasksDone(): number {
    return this.done + (this.participant?.tasksDone ?? 0);
  }

  /**
   * Connect (and reconnect) until the coordinator says Stop. Rejects on a fatal refusal or when no
   * handshake succeeds for --connect-timeout; resolves when the run ended (also when it ended while
   * this worker waited for a place in a full run).
   */
  async run(): Promise<void> {
    const timeout = this.opts.connectTimeoutMs ?? 60_000;
    let delay = 250;
    let since = Date.now();
    /** The coordinator was there and full: if it goes away now, its run has ended. */
    let full: Outcome | null = null;
    try {
      for (;;) {
        const outcome = await this.session();
        if (outcome.kind === 'stop') return;
        if (outcome.kind === 'fatal') throw new GanError(outcome.code, outcome.message);
        if (outcome.handshook) {
          since = Date.now();
          delay = 250;
        }
        if (this.stopped) return;
        if (outcome.code === 'E_FULL') full = outcome;
        else if (outcome.code !== 'E_CONNECT') full = null;
        // Told to come back later: the coordinator is there, so this is no reason to give up.
        if (outcome.retryAfterMs !== undefined && outcome.retryAfterMs > 0) {
          this.log(`coordinator asks this worker to wait: ${outcome.message}`);
          await new Promise((r) => setTimeout(r, outcome.retryAfterMs));
          if (this.stopped) return;
          since = Date.now();
          continue;
        }
        if (Date.now() - since >= timeout) {
          if (full && outcome.code === 'E_CONNECT') {
            this.log(`the run at ${this.opts.url} ended while this worker waited for a place (the coordinator was full: ${full.message})`);
            return;
          }
          if (outcome.code === 'E_FULL') throw new GanError('E_FULL', `the coordinator at ${this.opts.url} kept refusing this worker: ${outcome.message}; gave up after ${Math.round(timeout / 1000)} s`);
          throw new GanError('E_CONNECT', `cannot reach a coordinator at ${this.opts.url} (${outcome.message}); gave up after ${Math.round(timeout / 1000)} s`);
        }
        const wait = Math.min(delay, timeout - (Date.now() - since));
        this.log(`connection lost (${outcome.message}); retrying in ${wait} ms`);
        await new Promise((r) => setTimeout(r, wait));
        // Stopped while it waited (SIGTERM): no reconnecting.
        if (this.stopped) return;
        delay = Math.min(delay * 2, 5000);
      }
    } finally {
      await this.opts.relay?.close();
    }
  }

  /** Stop after the current message (tests, SIGINT). */
  stop(): void {
    this.stopped = true;
    this.link?.close(1000, 'worker stopping');
  }

  /** Kill every connection abruptly, as a crash would (tests). */
  crash(): void {
    this.stopped = true;
    this.opts.relay?.kill();
    this.link?.terminate();
  }

  private async session(): Promise<Outcome> {
    // A ticket in the URL gets this worker past a flood of strangers (shared/wire/admission.ts).
    const url = await withTicket(this.opts.url, this.opts.token);
    return new Promise((resolve) => {
      let handshook = false;
      let finished = false;
      /** The coordinator's Refused frame, which says why the close that follows it came. */
      let refused: GanError | null = null;
      const finish = (kind: Outcome['kind'], code: ErrorCode, message: string, retryAfterMs?: number) => {
        if (finished) return;
        finished = true;
        resolve({ kind, code, message, handshook, retryAfterMs });
      };
      this.welcome = null;
      const link = this.opts.connect(url, {
        onMessage: (frame, binary) => {
          // Stop is acted on as it arrives (a hung task must not keep the worker from ending); every
          // other frame is handled strictly in order, compute being synchronous inside handle().
          let m: Message | null = null;
          let bad: unknown = null;
          try {
            if (!binary) throw new GanError('E_MALFORMED', 'text frame from coordinator');
            m = decode(frame);
          } catch (e) {
            bad = e;
          }
          if (m?.k === Kind.Refused) {
            refused = refusedError(m);
            return;
          }
          if (m?.k === Kind.Stop && m.resumes && !m.code) {
            // Preempted: the coordinator comes back from its checkpoint (a requeued job, a restarted pod).
            link.close(1000, 'done');
            finish('retry', 'E_CONNECT', `the coordinator stopped to be resumed (${m.reason}); waiting for it`);
            return;
          }
          if (m?.k === Kind.Stop) {
            this.stopped = true;
            link.close(1000, 'done');
            // A run that ended in failure is not this worker's success either.
            if (m.code) finish('fatal', isErrorCode(m.code) ? m.code : 'E_INTERNAL', `the coordinator's run failed: ${m.reason}`);
            else finish('stop', 'E_DONE', 'coordinator finished the run');
            return;
          }
          const msg = m;
          this.queue = this.queue.then(async () => {
            if (finished) return;
            try {
              if (bad || !msg) throw bad;
              if (msg.k === Kind.Welcome) handshook = true;
              await this.handle(msg);
            } catch (e) {
              const err = asGanError(e, 'E_COMPUTE');
              this.log(`error: ${err.code} ${err.message}`);
              refuse(link, err);
              finish(FATAL.has(err.closeCode) ? 'fatal' : 'retry', err.code, err.message);
            }
          });
        },
        onClose: (code, reason) => {
          if (code === 1000 && reason.startsWith('E_DONE')) return finish('stop', 'E_DONE', reason);
          if (refused) {
            const r = refused;
            return finish(FATAL.has(r.closeCode) ? 'fatal' : 'retry', r.code, FATAL.has(r.closeCode) ? `coordinator refused this worker: ${r.code}: ${r.message}` : `${r.code}: ${r.message}`, r.retryAfterMs);
          }
          const said = reason.split(':')[0];
          if (FATAL.has(code)) return finish('fatal', isErrorCode(said) ? said : 'E_CONNECT', `coordinator refused this worker: ${reason}`);
          finish('retry', code === ErrorCodes.E_FULL ? 'E_FULL' : 'E_CONNECT', reason ? `closed ${code}: ${reason}` : `closed ${code}`);
        },
        onError: (message, kind) => {
          // A certificate this worker does not trust, or a server that is not a coordinator, will not change by retrying.
          if (kind === 'tls') finish('fatal', 'E_TLS', `${this.opts.url}: ${message} (pass the CA with --ca)`);
          else if (kind === 'http') finish('fatal', 'E_CONNECT', `${this.opts.url} is not a gan-ddp coordinator (${message})`);
          else finish('retry', 'E_CONNECT', message);
        },
      });
      this.link = link;
    });
  }

  private send(m: Message): void {
    this.link?.send(encode(m));
  }

  private async handle(m: Message): Promise<void> {
    switch (m.k) {
      case Kind.Challenge:
        return this.onChallenge(m);
      case Kind.Welcome:
        return this.onWelcome(m);
      case Kind.Shard:
      case Kind.Weights:
      case Kind.WeightsChunk:
      case Kind.Task:
      case Kind.Reduce:
      case Kind.Chunk:
        if (!this.welcome || !this.participant) throw new GanError('E_UNEXPECTED', 'message before the handshake completed');
        return this.participant.handle(m);
      default:
        throw new GanError('E_UNEXPECTED', `coordinator sent ${Kind[m.k] ?? m.k}, which workers do not accept`);
    }
  }

  private async onChallenge(m: ChallengeMsg): Promise<void> {
    const { proof } = await answerChallenge(m, { token: this.opts.token, expectKind: this.opts.expectModel, tokenHint: '--token or GAN_DDP_TOKEN' });
    const cfg = m.model;
    const relay = this.opts.relay;
    const peer = relay
      ? await relay.listen({
        auth: m.auth, model: cfg, selfId: () => this.id,
        onFrame: (from, f) => {
          if (f.k !== Kind.Chunk && f.k !== Kind.WeightsChunk) throw new GanError('E_UNEXPECTED', `peers may send only Chunk and WeightsChunk, got ${Kind[f.k] ?? f.k}`);
          // Peer frames join the coordinator's in one queue: the participant sees one ordered stream.
          this.queue = this.queue.then(() => this.participant?.handle(f, from)).catch((e: unknown) => {
            const err = asGanError(e, 'E_COMPUTE');
            this.log(`peer link to worker ${from}: ${err.code} ${err.message}`);
            relay!.drop(from, err.code, err.message);
          });
        },
        onLost: (peer, code, reason) => this.send({ k: Kind.PeerLost, peer, code, reason: reason.slice(0, 200) }),
      })
      : undefined;
    this.send({
      k: Kind.Hello, v: PROTOCOL_VERSION, signature: modelSignature(cfg), backend: this.opts.backend, host: this.opts.host, pid: this.opts.pid,
      proof, peerPort: peer?.port, peerHost: peer?.host, sameHost: this.opts.sameHost ? true : undefined,
    });
    if (this.participant) {
      this.done += this.participant.tasksDone;
      this.participant.dispose();
    }
    this.participant = null;
    this.pendingModel = cfg;
  }

  private onWelcome(m: WelcomeMsg): void {
    if (m.maxPayload > (this.opts.maxPayload ?? 256 * 1024 * 1024)) {
      throw new GanError('E_MODEL', `coordinator sends frames up to ${m.maxPayload} bytes, above this worker's --max-payload`);
    }
    if (!this.pendingModel) throw new GanError('E_UNEXPECTED', 'Welcome before Challenge');
    this.welcome = m;
    this.id = m.workerId;
    const relay = this.opts.relay;
    const shared = this.mapShared(m, this.pendingModel);
    this.participant = new Participant({
      model: this.pendingModel, seed: m.seed, wire: m.wire as WirePrecision, id: m.workerId, shared,
      toCoordinator: (f) => this.link?.send(f),
      toPeer: relay ? (peer, url, f) => relay.send(peer, url, f) : undefined,
      local: m.local, onComputed: this.opts.onComputed,
    });
    this.log(`joined as worker ${m.workerId}${shared ? ', exchanging tensors through shared memory' : ''}`);
    this.opts.onJoined?.(m.workerId);
  }

  /** Map the regions the Welcome offers and prove it with the slot's nonce, or tell the coordinator why not. */
  private mapShared(m: WelcomeMsg, model: ModelConfig): SharedRegions | null {
    if (!m.region || !m.slot) return null;
    if (!this.opts.sameHost) throw new GanError('E_UNEXPECTED', 'Welcome offers shared regions this worker did not ask for');
    try {
      const shared = this.opts.sameHost(m.region, m.slot, { D: netLayout(model, 'D').total, G: netLayout(model, 'G').total });
      this.send({ k: Kind.SameHost, proof: shared.slot.nonce.slice() });
      return shared;
    } catch (e) {
      // Another host has no such file; another user may not open it.
      this.send({ k: Kind.SameHost, reason: `${(e as NodeJS.ErrnoException).code ?? 'E_REGION'}: ${(e as Error).message}`.slice(0, 300) });
      return null;
    }
  }
}
