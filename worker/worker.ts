/**
 * A worker: holds a copy of the weights and the samples the coordinator shipped it, computes the
 * gradient of the phase it is asked for, and sends it back. It never changes weights on its own
 * authority: weights only come from the coordinator, and a task naming versions the worker does
 * not hold is an error, never computed on stale weights.
 *
 * Connection lifecycle: connect -> Challenge -> Hello -> Welcome -> (Shard | Weights | Task)* ->
 * Stop. When the connection drops for any reason other than Stop or a refusal (version, model,
 * token), the worker reconnects with capped exponential backoff and gives up after
 * --connect-timeout without a successful handshake.
 */
import { createHmac } from 'node:crypto';
import { hostname } from 'node:os';
import { WebSocket } from 'ws';
import { buildBatch, type SampleSource } from '../shared/batch.js';
import {
  Kind, PROTOCOL_VERSION, type ChallengeMsg, type Message, type ShardMsg, type TaskMsg, type WelcomeMsg, decode, encode, toHalf,
} from '../shared/codec.js';
import { type ErrorCode, ErrorCodes, GanError, closeReason, isErrorCode } from '../shared/errors.js';
import { GanModel } from '../shared/gan.js';
import { type ModelConfig, type ModelKind, modelSignature } from '../shared/model.js';

export interface WorkerOptions {
  /** ws://HOST:PORT or wss://HOST:PORT */
  url: string;
  token?: string;
  /** CA certificate(s) to trust for wss:// */
  ca?: Buffer;
  /** Backend label reported in the handshake. */
  backend: string;
  /** Give up after this many ms without a successful handshake. */
  connectTimeoutMs?: number;
  /** Largest frame accepted from the coordinator. */
  maxPayload?: number;
  /** Refuse a coordinator that trains another model kind. */
  expectModel?: ModelKind;
  log?: (line: string) => void;
  /** Test seam: awaited before computing a task; may throw or stall to simulate faults. */
  testBeforeTask?: (t: TaskMsg) => Promise<void> | void;
}

/**
 * Close codes after which reconnecting cannot help. E_FULL is not among them: the coordinator
 * may still hold this worker's previous, half-open connection, and frees the slot when it drops it.
 */
const FATAL = new Set<number>([ErrorCodes.E_VERSION, ErrorCodes.E_MODEL, ErrorCodes.E_AUTH]);

/** Node's codes for a server certificate that does not verify. */
const TLS_ERRORS = new Set([
  'DEPTH_ZERO_SELF_SIGNED_CERT', 'SELF_SIGNED_CERT_IN_CHAIN', 'UNABLE_TO_VERIFY_LEAF_SIGNATURE', 'UNABLE_TO_GET_ISSUER_CERT_LOCALLY',
  'CERT_HAS_EXPIRED', 'CERT_NOT_YET_VALID', 'ERR_TLS_CERT_ALTNAME_INVALID', 'CERT_SIGNATURE_FAILURE',
]);

class ShardStore implements SampleSource {
  private images = new Map<number, Uint8Array>();
  private labels = new Map<number, number>();
  epoch = -1;
  add(m: ShardMsg): void {
    if (m.reset) {
      this.images.clear();
      this.labels.clear();
    }
    this.epoch = m.epoch;
    m.ids.forEach((id, i) => {
      this.images.set(id, m.images.subarray(i * 784, (i + 1) * 784));
      this.labels.set(id, m.labels[i]!);
    });
  }
  has(id: number): boolean {
    return this.images.has(id);
  }
  image(id: number): Uint8Array {
    const img = this.images.get(id);
    if (!img) throw new GanError('E_UNEXPECTED', `task names sample ${id}, which this worker was not sent`);
    return img;
  }
  label(id: number): number {
    return this.labels.get(id) ?? 0;
  }
  get size(): number {
    return this.images.size;
  }
}

export class WorkerClient {
  id = -1;
  model: GanModel | null = null;
  versions = { D: -1, G: -1 };
  tasksDone = 0;
  private ws: WebSocket | null = null;
  private welcome: WelcomeMsg | null = null;
  private store = new ShardStore();
  private stopped = false;
  private halfBuf: Uint16Array | null = null;
  private queue: Promise<void> = Promise.resolve();
  private log: (line: string) => void;

  constructor(readonly opts: WorkerOptions) {
    this.log = opts.log ?? (() => {});
  }

  /** Connect (and reconnect) until the coordinator says Stop. Rejects on a fatal refusal or timeout. */
  async run(): Promise<void> {
    const timeout = this.opts.connectTimeoutMs ?? 60_000;
    let delay = 250;
    let since = Date.now();
    for (;;) {
      const outcome = await this.session();
      if (outcome.kind === 'stop') return;
      if (outcome.kind === 'fatal') throw new GanError(outcome.code, outcome.message);
      if (outcome.handshook) {
        since = Date.now();
        delay = 250;
      }
      if (this.stopped) return;
      if (Date.now() - since >= timeout) {
        throw new GanError('E_CONNECT', `cannot reach a coordinator at ${this.opts.url} (${outcome.message}); gave up after ${Math.round(timeout / 1000)} s`);
      }
      const wait = Math.min(delay, timeout - (Date.now() - since));
      this.log(`connection lost (${outcome.message}); retrying in ${wait} ms`);
      await new Promise((r) => setTimeout(r, wait));
      delay = Math.min(delay * 2, 5000);
    }
  }

  /** Stop after the current message (tests, SIGINT). */
  stop(): void {
    this.stopped = true;
    this.ws?.close(1000, 'worker stopping');
  }

  /** Kill the connection abruptly, as a crash would (tests). */
  crash(): void {
    this.stopped = true;
    this.ws?.terminate();
  }

  private session(): Promise<{ kind: 'stop' | 'fatal' | 'retry'; code: ErrorCode; message: string; handshook: boolean }> {
    return new Promise((resolve) => {
      let handshook = false;
      let done = false;
      const finish = (kind: 'stop' | 'fatal' | 'retry', code: ErrorCode, message: string) => {
        if (done) return;
        done = true;
        resolve({ kind, code, message, handshook });
      };
      const ws = new WebSocket(this.opts.url, {
        perMessageDeflate: false,
        maxPayload: this.opts.maxPayload ?? 256 * 1024 * 1024,
        ca: this.opts.ca,
        handshakeTimeout: 10_000,
      });
      this.ws = ws;
      this.welcome = null;
      ws.on('message', (data, isBinary) => {
        // Messages are handled strictly in order; compute is synchronous inside handle().
        this.queue = this.queue.then(async () => {
          if (done) return;
          try {
            if (!isBinary) throw new GanError('E_MALFORMED', 'text frame from coordinator');
            const m = decode(data as Buffer);
            if (m.k === Kind.Welcome) handshook = true;
            const r = await this.handle(m);
            if (r === 'stop') {
              finish('stop', 'E_DONE', 'coordinator finished the run');
              ws.close(1000);
            }
          } catch (e) {
            const err = e instanceof GanError ? e : new GanError('E_COMPUTE', (e as Error).message);
            this.log(`error: ${err.code} ${err.message}`);
            ws.close(err.closeCode, closeReason(err));
            if (FATAL.has(err.closeCode)) finish('fatal', err.code, err.message);
            else finish('retry', err.code, err.message);
          }
        });
      });
      ws.on('close', (code, reasonBuf) => {
        const reason = reasonBuf.toString();
        if (code === 1000 && reason.startsWith('E_DONE')) return finish('stop', 'E_DONE', reason);
        const said = reason.split(':')[0];
        if (FATAL.has(code)) return finish('fatal', isErrorCode(said) ? said : 'E_CONNECT', `coordinator refused this worker: ${reason}`);
        finish('retry', 'E_CONNECT', reason ? `closed ${code}: ${reason}` : `closed ${code}`);
      });
      ws.on('error', (e) => {
        // A certificate this worker does not trust will not become trusted by retrying.
        const tls = TLS_ERRORS.has((e as NodeJS.ErrnoException).code ?? '');
        finish(tls ? 'fatal' : 'retry', tls ? 'E_TLS' : 'E_CONNECT', tls ? `${this.opts.url}: ${(e as Error).message} (pass the CA with --ca)` : (e as Error).message);
      });
    });
  }

  private send(m: Message): void {
    if (this.ws?.readyState === WebSocket.OPEN) this.ws.send(encode(m));
  }

  private async handle(m: Message): Promise<'stop' | void> {
    switch (m.k) {
      case Kind.Challenge:
        return this.onChallenge(m);
      case Kind.Welcome:
        this.welcome = m;
        this.id = m.workerId;
        if (m.maxPayload > (this.opts.maxPayload ?? 256 * 1024 * 1024)) {
          throw new GanError('E_MODEL', `coordinator sends frames up to ${m.maxPayload} bytes, above this worker's --max-payload`);
        }
        this.log(`joined as worker ${m.workerId}`);
        return;
      case Kind.Shard:
        this.requireWelcome();
        this.store.add(m);
        return;
      case Kind.Weights: {
        this.requireWelcome();
        const l = this.model!.layout(m.net);
        if (m.data.length !== l.total) throw new GanError('E_SHAPE', `${m.net} weights have ${m.data.length} values, the model has ${l.total}`);
        this.model!.setWeights(m.net, m.data);
        this.versions[m.net] = m.version;
        return;
      }
      case Kind.Task:
        this.requireWelcome();
        await this.opts.testBeforeTask?.(m);
        return this.onTask(m);
      case Kind.Stop:
        this.stopped = true;
        return 'stop';
      default:
        throw new GanError('E_UNEXPECTED', `coordinator sent ${Kind[m.k] ?? m.k}, which workers do not accept`);
    }
  }

  private requireWelcome(): void {
    if (!this.welcome || !this.model) throw new GanError('E_UNEXPECTED', 'message before the handshake completed');
  }

  private onChallenge(m: ChallengeMsg): void {
    if (m.v !== PROTOCOL_VERSION) throw new GanError('E_VERSION', `coordinator speaks protocol ${m.v}, this worker ${PROTOCOL_VERSION}`);
    const cfg = m.model as ModelConfig;
    if (this.opts.expectModel && cfg.kind !== this.opts.expectModel) {
      throw new GanError('E_MODEL', `coordinator trains ${cfg.kind}, this worker was started for ${this.opts.expectModel}`);
    }
    if (m.auth && !this.opts.token) throw new GanError('E_AUTH', 'coordinator requires a token (--token or GAN_DDP_TOKEN)');
    const sig = modelSignature(cfg);
    if (!this.model || modelSignature(this.model.cfg) !== sig) {
      this.model?.dispose();
      this.model = new GanModel(cfg);
      this.versions = { D: -1, G: -1 };
    }
    this.send({
      k: Kind.Hello,
      v: PROTOCOL_VERSION,
      signature: sig,
      backend: this.opts.backend,
      host: hostname(),
      pid: process.pid,
      proof: m.auth && this.opts.token ? createHmac('sha256', this.opts.token).update(m.nonce).digest() : undefined,
    });
  }

  private onTask(t: TaskMsg): void {
    const model = this.model!;
    if (t.dVersion !== this.versions.D || t.gVersion !== this.versions.G) {
      throw new GanError('E_STALE', `task wants D v${t.dVersion} / G v${t.gVersion}, worker holds D v${this.versions.D} / G v${this.versions.G}`);
    }
    const t0 = performance.now();
    const batch = buildBatch(model.cfg, { seed: this.welcome!.seed, epoch: t.epoch, phase: t.phase }, t.ids, this.store);
    const r = t.phase === 'D' ? model.dStep(batch) : model.gStep(batch);
    const computeMs = performance.now() - t0;
    let data: Float32Array | Uint16Array = r.grads;
    if (this.welcome!.fp16) {
      if (!this.halfBuf || this.halfBuf.length !== r.grads.length) this.halfBuf = new Uint16Array(r.grads.length);
      data = toHalf(r.grads, this.halfBuf);
    }
    this.send({
      k: Kind.Grad, round: t.round, phase: t.phase, count: t.ids.length,
      loss: r.loss, dReal: r.dReal, dFake: r.dFake, computeMs, fp16: this.welcome!.fp16, data,
    });
    this.tasksDone++;
  }
}
