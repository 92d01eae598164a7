/**
 * The coordinator: owns the data, the authoritative weights of G and D, both Adam states, the
 * run directory and all logging. It never computes model gradients.
 *
 * Invariants of a round (one GAN iteration):
 * - D phase, then G phase. In each, every live worker of the round gets a Task naming the round,
 *   the phase, the weight versions it must hold and the sample ids to use. The coordinator waits
 *   for every one of them (or drops it: disconnect, --round-timeout, invalid message), averages
 *   the gradients weighted by sample count, summing in worker-id order (never arrival order),
 *   applies one Adam step to that net alone and broadcasts its new weights, packed once: the same
 *   bytes go to every worker.
 * - A gradient is accepted only for the open (round, phase), only from a worker that was asked,
 *   only once, only with the model's size and only if every value is finite. Anything else
 *   closes that worker's connection with a reason; the round completes with the others.
 * - A dropped worker's gradient is never applied, so its samples of this round are not used; they
 *   and the rest of its queue are dealt again to the live workers (sharding.ts). New workers join
 *   at a round boundary: they get both nets' current weights and a shard.
 * - Training continues while at least --min-workers are live; below that the coordinator waits
 *   up to --round-timeout for workers to come (back), then checkpoints and fails.
 */
import { createHmac, randomBytes, timingSafeEqual } from 'node:crypto';
import { appendFileSync, existsSync, mkdirSync, readFileSync, writeFileSync } from 'node:fs';
import { createServer as createHttpsServer, type Server as HttpsServer } from 'node:https';
import type { AddressInfo } from 'node:net';
import { join } from 'node:path';
import { WebSocket, WebSocketServer } from 'ws';
import { fixedNoise } from '../shared/batch.js';
import { Kind, PROTOCOL_VERSION, type GradMsg, type Message, decode, encode, fromHalf } from '../shared/codec.js';
import { GanError, closeReason } from '../shared/errors.js';
import { GanModel } from '../shared/gan.js';
import { type Dataset, loadMnist } from '../shared/mnist.js';
import { type Net, type NetLayout, initWeights, isConditional, modelSignature, netLayout } from '../shared/model.js';
import { gridPng } from '../shared/png.js';
import { type AdamState, adamState, adamStep, allFinite, emaUpdate, weightedAverage } from './adam.js';
import { CHECKPOINT_FILE, type TrainState, loadCheckpoint, saveCheckpoint, writeFileAtomic } from './checkpoint.js';
import type { TrainConfig } from './config.js';
import { EpochPlan } from './sharding.js';

export interface CoordinatorOptions {
  config: TrainConfig;
  host: string;
  /** 0 picks a free port. */
  port: number;
  /** Run directory. */
  out: string;
  /** Continue the run in `out` from its checkpoint. */
  resume?: boolean;
  token?: string;
  /** Allow listening beyond loopback without a token. */
  insecure?: boolean;
  tls?: { cert: Buffer; key: Buffer };
  /** Interval of WebSocket pings; a worker that misses three in a row is dropped. */
  heartbeatMs?: number;
  /** Data already loaded (tests), instead of config.data / the embedded digits. */
  dataset?: Dataset;
  /** Human-readable progress lines. */
  log?: (line: string) => void;
  /** Called after every round with its metrics (progress bar). */
  onRound?: (m: RoundMetrics, c: Coordinator) => void;
  /** Called at the end of every epoch (evaluation, tests). */
  onEpoch?: (epoch: number, c: Coordinator) => Promise<void> | void;
  /** Test hook: called at each phase boundary before tasks are sent. */
  onPhase?: (round: number, phase: Net) => Promise<void> | void;
}

export interface RoundMetrics {
  round: number;
  epoch: number;
  workers: number;
  samples: number;
  global_batch: number;
  d_loss: number;
  g_loss: number;
  d_real: number;
  d_fake: number;
  samples_per_s: number;
  round_ms: number;
  compute_ms: number;
  transfer_ms: number;
  reduce_ms: number;
  bytes_in: number;
  bytes_out: number;
  dropped: number[];
  joined: number[];
  epoch_used: number;
  epoch_samples: number;
}

type ConnState = 'handshake' | 'joining' | 'live' | 'dead';

interface Pending {
  round: number;
  phase: Net;
  count: number;
  resolve: (m: GradMsg | null) => void;
  timer: NodeJS.Timeout;
}

class WorkerConn {
  id = -1;
  state: ConnState = 'handshake';
  nonce = randomBytes(32);
  host = '?';
  pid = 0;
  backend = '?';
  /** Samples shipped to this worker in the current epoch. */
  held = new Set<number>();
  heldEpoch = -1;
  pending: Pending | null = null;
  missedPongs = 0;
  halfBuf: Float32Array | null = null;
  constructor(readonly ws: WebSocket, readonly addr: string) {}
  get label(): string {
    return `worker ${this.id} (${this.host}/${this.pid}, ${this.backend})`;
  }
}

export class TrainingError extends Error {
  constructor(readonly code: string, message: string) {
    super(message);
    this.name = 'TrainingError';
  }
}

const SHARD_CHUNK = 4096;
const isLoopback = (h: string) => h === 'localhost' || h === '::1' || h.startsWith('127.');

export class Coordinator {
  readonly cfg: TrainConfig;
  readonly layouts: Record<Net, NetLayout>;
  readonly signature: string;
  weights!: Record<Net, Float32Array>;
  adam!: Record<Net, AdamState>;
  /** Moving average of G's weights (null with --ema 0), updated after every G step. */
  emaG: Float32Array | null = null;
  versions = { D: 0, G: 0 };
  round = 0;
  epoch = 0;
  plan: EpochPlan | null = null;
  data!: Dataset;
  /** Per-epoch accounting, appended at each epoch end. */
  epochLog: { epoch: number; samples: number; usedOnce: number; missing: number; duplicated: number; rounds: number }[] = [];

  private wss: WebSocketServer | null = null;
  private https: HttpsServer | null = null;
  private conns = new Set<WorkerConn>();
  private nextId = 0;
  private membershipChanged = true;
  private stopping: string | null = null;
  private wake: (() => void) | null = null;
  private avg: Record<Net, Float32Array>;
  private weightFrames: Record<Net, Buffer | null> = { D: null, G: null };
  private bytesIn = 0;
  private bytesOut = 0;
  private heartbeat: NodeJS.Timeout | null = null;
  private readonly maxInbound: number;
  private readonly maxOutbound: number;
  private log: (line: string) => void;
  private joinedThisRound: number[] = [];
  private droppedThisRound: number[] = [];
  private epochStartRound = 0;
  private started = false;
  private closing = false;
  private readonly startedAt = Date.now();

  constructor(readonly opts: CoordinatorOptions) {
    this.cfg = opts.config;
    this.log = opts.log ?? (() => {});
    this.layouts = { G: netLayout(this.cfg.model, 'G'), D: netLayout(this.cfg.model, 'D') };
    this.signature = modelSignature(this.cfg.model);
    this.avg = { G: new Float32Array(this.layouts.G.total), D: new Float32Array(this.layouts.D.total) };
    const biggest = Math.max(this.layouts.G.total, this.layouts.D.total) * 4;
    // Inbound frames are Hello and Grad: the largest is a float32 gradient plus its fields.
    this.maxInbound = biggest + 64 * 1024;
    this.maxOutbound = Math.max(biggest, SHARD_CHUNK * (784 + 1 + 4)) + 64 * 1024;
  }

  get runDir(): string {
    return this.opts.out;
  }

  liveWorkers(): WorkerConn[] {
    return [...this.conns].filter((c) => c.state === 'live').sort((a, b) => a.id - b.id);
  }

  private joiningWorkers(): WorkerConn[] {
    return [...this.conns].filter((c) => c.state === 'joining').sort((a, b) => a.id - b.id);
  }

  /** Load data and state, create the run directory, and listen. Resolves to the bound port. */
  async start(): Promise<number> {
    const { host } = this.opts;
    if (!isLoopback(host) && !this.opts.token && !this.opts.insecure) {
      throw new TrainingError('E_INSECURE', `refusing to listen on ${host} without --token (pass --insecure to allow it)`);
    }
    this.data = this.opts.dataset ?? loadMnist(this.cfg.data ?? undefined).train;
    if (this.opts.resume) this.restore();
    else this.fresh();
    // Listen before writing anything: a port in use must leave no half-made run directory.
    const port = await this.listen();
    mkdirSync(join(this.runDir, 'samples'), { recursive: true });
    writeFileSync(join(this.runDir, 'config.json'), JSON.stringify({ ...this.cfg, signature: this.signature, dataset: this.data.source, samples: this.data.n }, null, 2) + '\n');
    this.heartbeat = setInterval(() => this.beat(), this.opts.heartbeatMs ?? 10_000);
    this.heartbeat.unref();
    return port;
  }

  private fresh(): void {
    const out = this.runDir;
    if (existsSync(join(out, CHECKPOINT_FILE))) {
      throw new TrainingError('E_EXISTS', `${out} already holds a run; use --resume ${out} to continue it or choose another --out`);
    }
    this.weights = { G: initWeights(this.layouts.G, this.cfg.seed), D: initWeights(this.layouts.D, this.cfg.seed) };
    this.adam = { G: adamState(this.layouts.G.total), D: adamState(this.layouts.D.total) };
    this.emaG = this.cfg.emaDecay > 0 ? this.weights.G.slice() : null;
  }

  /** The generator weights to sample from: the moving average when kept, else the latest. */
  sampleWeights(): Float32Array {
    return this.emaG ?? this.weights.G;
  }

  private restore(): void {
    const s = loadCheckpoint(this.runDir);
    const sig = modelSignature(s.config.model);
    if (sig !== this.signature) {
      throw new TrainingError('E_CHECKPOINT', `checkpoint in ${this.runDir} is for model ${sig}, this run is ${this.signature}`);
    }
    if (s.config.seed !== this.cfg.seed) throw new TrainingError('E_CHECKPOINT', `checkpoint seed ${s.config.seed} differs from --seed ${this.cfg.seed}`);
    if (s.epochUses.length !== this.data.n) {
      throw new TrainingError('E_CHECKPOINT', `checkpoint was made on ${s.epochUses.length} samples, the data has ${this.data.n}`);
    }
    this.weights = s.weights;
    this.adam = { G: { ...s.adam.G, t: s.adamSteps.G }, D: { ...s.adam.D, t: s.adamSteps.D } };
    this.emaG = this.cfg.emaDecay > 0 ? (s.emaG ?? s.weights.G.slice()) : null;
    if (this.emaG && !s.emaG) this.log(`the checkpoint kept no moving average of G: starting one (decay ${this.cfg.emaDecay}) from the current weights`);
    this.versions = { ...s.versions };
    this.round = s.round;
    this.epoch = s.epoch;
    this.plan = s.epochUses.some((u) => u > 0) ? new EpochPlan(this.data.n, this.cfg.seed, this.epoch, s.epochUses) : null;
    this.epochStartRound = this.round;
    // Rounds logged after this checkpoint were lost with the process: they will be run again.
    this.truncateLog('metrics.jsonl', (r) => (r.round as number) < this.round);
    this.truncateLog('epochs.jsonl', (r) => (r.epoch as number) < this.epoch);
    const epochsFile = join(this.runDir, 'epochs.jsonl');
    if (existsSync(epochsFile)) {
      this.epochLog = readFileSync(epochsFile, 'utf8').split('\n').filter(Boolean).map((l) => JSON.parse(l) as Coordinator['epochLog'][number]);
      // Rounds are numbered across epochs, so the current epoch began after all completed ones.
      this.epochStartRound = this.epochLog.reduce((a, e) => a + e.rounds, 0);
    }
    this.log(`resumed ${this.runDir} at round ${this.round}, epoch ${this.epoch + 1} (${this.plan?.used ?? 0}/${this.data.n} samples of the epoch used)`);
  }

  private truncateLog(name: string, keep: (r: Record<string, unknown>) => boolean): void {
    const file = join(this.runDir, name);
    if (!existsSync(file)) return;
    const lines = readFileSync(file, 'utf8').split('\n').filter(Boolean);
    const kept = lines.filter((l) => {
      try {
        return keep(JSON.parse(l) as Record<string, unknown>);
      } catch {
        return false;
      }
    });
    if (kept.length !== lines.length) writeFileAtomic(file, Buffer.from(kept.map((l) => l + '\n').join('')));
  }

  state(): TrainState {
    return {
      config: this.cfg,
      round: this.round,
      epoch: this.epoch,
      versions: { ...this.versions },
      adamSteps: { D: this.adam.D.t, G: this.adam.G.t },
      epochUses: this.plan ? this.plan.uses : new Uint8Array(this.data.n),
      weights: this.weights,
      emaG: this.emaG ?? undefined,
      adam: { G: { m: this.adam.G.m, v: this.adam.G.v }, D: { m: this.adam.D.m, v: this.adam.D.v } },
    };
  }

  checkpoint(): string {
    return saveCheckpoint(this.runDir, this.state());
  }

  private listen(): Promise<number> {
    const wsOpts = { maxPayload: this.maxInbound, perMessageDeflate: false, clientTracking: false };
    return new Promise((resolve, reject) => {
      const onError = (e: NodeJS.ErrnoException) => {
        reject(new TrainingError(e.code === 'EADDRINUSE' ? 'E_PORT' : 'E_LISTEN',
          e.code === 'EADDRINUSE' ? `port ${this.opts.port} on ${this.opts.host} is already in use` : `cannot listen on ${this.opts.host}:${this.opts.port}: ${e.message}`));
      };
      if (this.opts.tls) {
        this.https = createHttpsServer({ cert: this.opts.tls.cert, key: this.opts.tls.key });
        this.wss = new WebSocketServer({ ...wsOpts, server: this.https });
        this.https.once('error', onError);
        this.https.listen(this.opts.port, this.opts.host, () => resolve((this.https!.address() as AddressInfo).port));
      } else {
        this.wss = new WebSocketServer({ ...wsOpts, host: this.opts.host, port: this.opts.port });
        this.wss.once('error', onError);
        this.wss.once('listening', () => resolve((this.wss!.address() as AddressInfo).port));
      }
      this.wss.on('connection', (ws, req) => this.accept(ws, `${req.socket.remoteAddress}:${req.socket.remotePort}`));
    });
  }

  private send(c: WorkerConn, frame: Buffer): void {
    if (c.ws.readyState !== WebSocket.OPEN) return;
    this.bytesOut += frame.length;
    c.ws.send(frame);
  }

  private accept(ws: WebSocket, addr: string): void {
    const c = new WorkerConn(ws, addr);
    this.conns.add(c);
    const handshakeTimer = setTimeout(() => this.drop(c, new GanError('E_TIMEOUT', 'no Hello within 10 s')), 10_000);
    handshakeTimer.unref();
    ws.on('pong', () => (c.missedPongs = 0));
    ws.on('message', (data, isBinary) => {
      const buf = data as Buffer;
      this.bytesIn += buf.length;
      try {
        if (!isBinary) throw new GanError('E_MALFORMED', 'text frames are not part of the protocol');
        const m = decode(buf);
        if (c.state === 'handshake') {
          clearTimeout(handshakeTimer);
          this.onHello(c, m);
        } else this.onMessage(c, m);
      } catch (e) {
        this.drop(c, e instanceof GanError ? e : new GanError('E_MALFORMED', (e as Error).message));
      }
    });
    ws.on('close', (code, reason) => {
      clearTimeout(handshakeTimer);
      if (c.state !== 'dead' && c.id >= 0 && !this.closing) this.log(`${c.label} disconnected (${code}${reason.length ? ` ${reason.toString()}` : ''})`);
      this.markDead(c);
    });
    ws.on('error', () => this.markDead(c));
    this.send(c, encode({ k: Kind.Challenge, v: PROTOCOL_VERSION, nonce: c.nonce, auth: !!this.opts.token, model: this.cfg.model }));
  }

  private onHello(c: WorkerConn, m: Message): void {
    if (m.k !== Kind.Hello) throw new GanError('E_UNEXPECTED', `expected Hello, got ${Kind[m.k] ?? m.k}`);
    if (m.v !== PROTOCOL_VERSION) throw new GanError('E_VERSION', `protocol version ${m.v}, coordinator speaks ${PROTOCOL_VERSION}`);
    if (m.signature !== this.signature) throw new GanError('E_MODEL', `model signature differs from the coordinator's (${this.cfg.model.kind})`);
    if (this.opts.token) {
      const want = createHmac('sha256', this.opts.token).update(c.nonce).digest();
      if (!m.proof || m.proof.length !== want.length || !timingSafeEqual(Buffer.from(m.proof), want)) {
        throw new GanError('E_AUTH', 'token proof missing or wrong');
      }
    }
    const active = [...this.conns].filter((x) => x.state === 'live' || x.state === 'joining').length;
    if (active >= this.cfg.workers) throw new GanError('E_FULL', `already ${this.cfg.workers} workers (--workers)`);
    c.id = this.nextId++;
    c.host = m.host.slice(0, 64);
    c.pid = m.pid;
    c.backend = m.backend.slice(0, 64);
    c.state = 'joining';
    this.send(c, encode({ k: Kind.Welcome, workerId: c.id, seed: this.cfg.seed, fp16: this.cfg.fp16, maxPayload: this.maxOutbound }));
    this.log(`${c.label} connected from ${c.addr}; joins at the next round`);
    this.poke();
  }

  private onMessage(c: WorkerConn, m: Message): void {
    if (m.k !== Kind.Grad) throw new GanError('E_UNEXPECTED', `workers may only send Grad after the handshake, got ${Kind[m.k] ?? m.k}`);
    const p = c.pending;
    if (!p || p.round !== m.round || p.phase !== m.phase) {
      throw new GanError('E_STALE', `gradient for round ${m.round} phase ${m.phase} is not open for this worker (duplicate or stale)`);
    }
    if (m.count !== p.count) throw new GanError('E_SHAPE', `gradient says ${m.count} samples, the task had ${p.count}`);
    if (m.fp16 !== this.cfg.fp16) throw new GanError('E_SHAPE', `gradient precision ${m.fp16 ? 'fp16' : 'fp32'} differs from the run's`);
    const total = this.layouts[m.phase].total;
    if (m.data.length !== total) throw new GanError('E_SHAPE', `gradient for ${m.phase} has ${m.data.length} values, the model has ${total}`);
    let data: Float32Array;
    if (m.data instanceof Uint16Array) {
      if (!c.halfBuf || c.halfBuf.length < total) c.halfBuf = new Float32Array(Math.max(this.layouts.G.total, this.layouts.D.total));
      data = fromHalf(m.data, c.halfBuf.subarray(0, total));
    } else data = m.data;
    if (!allFinite(data)) throw new GanError('E_NONFINITE', `gradient for ${m.phase} has NaN or Inf values`);
    // The G phase has no real rows: its dReal is NaN by definition and not checked.
    const stats = m.phase === 'D' ? { loss: m.loss, dReal: m.dReal, dFake: m.dFake } : { loss: m.loss, dFake: m.dFake };
    for (const [k, v] of Object.entries(stats)) if (!Number.isFinite(v)) throw new GanError('E_NONFINITE', `${m.phase} ${k} is not finite`);
    if (!Number.isFinite(m.computeMs) || m.computeMs < 0) throw new GanError('E_NONFINITE', 'computeMs is not a finite non-negative number');
    c.pending = null;
    clearTimeout(p.timer);
    p.resolve({ ...m, data });
  }

  private drop(c: WorkerConn, e: GanError): void {
    if (c.state === 'dead') return;
    this.log(`${c.id >= 0 ? c.label : `connection from ${c.addr}`} dropped: ${e.code} ${e.message}`);
    try {
      c.ws.close(e.closeCode, closeReason(e));
    } catch {
      c.ws.terminate();
    }
    // A peer that ignores the close handshake must not hold the round.
    setTimeout(() => c.ws.terminate(), 2000).unref();
    this.markDead(c);
  }

  private markDead(c: WorkerConn): void {
    if (c.state === 'dead') return;
    const wasMember = c.state === 'live';
    c.state = 'dead';
    this.conns.delete(c);
    if (c.pending) {
      clearTimeout(c.pending.timer);
      const r = c.pending.resolve;
      c.pending = null;
      r(null);
    }
    if (wasMember) {
      this.membershipChanged = true;
      this.droppedThisRound.push(c.id);
    }
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
        this.markDead(c);
      }
    }
  }

  private poke(): void {
    const w = this.wake;
    this.wake = null;
    w?.();
  }

  /** Wait until something happens to membership, or `ms` passes. */
  private waitEvent(ms: number): Promise<void> {
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

  /** Ask the run to end at the next round boundary (SIGINT / SIGTERM): it checkpoints and returns. */
  requestStop(reason: string): void {
    if (!this.stopping) this.stopping = reason;
    this.poke();
  }

  private weightsFrame(net: Net): Buffer {
    let f = this.weightFrames[net];
    if (!f) {
      f = encode({ k: Kind.Weights, net, version: this.versions[net], data: this.weights[net] });
      this.weightFrames[net] = f;
    }
    return f;
  }

  /** Bring joiners in and re-deal the epoch's unused samples when membership changed. */
  private admit(): void {
    for (const c of this.joiningWorkers()) {
      this.send(c, this.weightsFrame('D'));
      this.send(c, this.weightsFrame('G'));
      c.state = 'live';
      this.joinedThisRound.push(c.id);
      this.membershipChanged = true;
    }
    if (!this.plan) {
      this.plan = new EpochPlan(this.data.n, this.cfg.seed, this.epoch);
      this.epochStartRound = this.round;
      this.membershipChanged = true;
    }
    if (!this.membershipChanged) return;
    const live = this.liveWorkers();
    const queues = this.plan.deal(live.map((c) => c.id));
    for (const c of live) this.ship(c, queues.get(c.id)!);
    this.membershipChanged = false;
  }

  /** Send a worker the images of its queue that it does not hold yet. */
  private ship(c: WorkerConn, queue: Uint32Array): void {
    const reset = c.heldEpoch !== this.epoch;
    if (reset) {
      c.held.clear();
      c.heldEpoch = this.epoch;
    }
    const missing = queue.filter((id) => !c.held.has(id));
    for (let off = 0; off < missing.length || (reset && off === 0); off += SHARD_CHUNK) {
      const ids = missing.subarray(off, off + SHARD_CHUNK);
      const images = new Uint8Array(ids.length * 784);
      const labels = new Uint8Array(ids.length);
      ids.forEach((id, i) => {
        images.set(this.data.images.subarray(id * 784, (id + 1) * 784), i * 784);
        labels[i] = this.data.labels[id]!;
        c.held.add(id);
      });
      this.send(c, encode({ k: Kind.Shard, epoch: this.epoch, reset: reset && off === 0, ids, images, labels }));
      if (ids.length === 0) break;
    }
  }

  /** Send each assigned worker its task and collect the gradients (null where it was dropped). */
  private async phase(net: Net, assigned: { c: WorkerConn; ids: Uint32Array }[]): Promise<{ c: WorkerConn; g: GradMsg }[]> {
    await this.opts.onPhase?.(this.round, net);
    const waits = assigned.map(({ c, ids }) => new Promise<{ c: WorkerConn; g: GradMsg } | null>((resolve) => {
      if (c.state !== 'live') return resolve(null);
      const timer = setTimeout(() => this.drop(c, new GanError('E_TIMEOUT', `no ${net} gradient for round ${this.round} within ${this.cfg.roundTimeoutMs} ms`)), this.cfg.roundTimeoutMs);
      timer.unref();
      c.pending = { round: this.round, phase: net, count: ids.length, timer, resolve: (g) => resolve(g ? { c, g } : null) };
      this.send(c, encode({ k: Kind.Task, round: this.round, epoch: this.epoch, phase: net, dVersion: this.versions.D, gVersion: this.versions.G, ids }));
    }));
    const got = await Promise.all(waits);
    return got.filter((x): x is { c: WorkerConn; g: GradMsg } => x !== null).sort((a, b) => a.c.id - b.c.id);
  }

  /** Average, step, and broadcast one net. Returns the milliseconds it took. */
  private step(net: Net, grads: { count: number; data: Float32Array }[]): number {
    const t0 = performance.now();
    weightedAverage(this.avg[net], grads);
    adamStep(this.weights[net], this.avg[net], this.adam[net], {
      lr: net === 'D' ? this.cfg.lrD : this.cfg.lrG, beta1: this.cfg.beta1, beta2: this.cfg.beta2, epsilon: this.cfg.epsilon,
    });
    this.versions[net]++;
    this.weightFrames[net] = null;
    const frame = this.weightsFrame(net);
    for (const c of this.liveWorkers()) this.send(c, frame);
    // Workers never see the average: it is updated while the new weights are on their way.
    if (net === 'G' && this.emaG) emaUpdate(this.emaG, this.weights.G, this.cfg.emaDecay, this.adam.G.t);
    return performance.now() - t0;
  }

  /**
   * Before the first round: wait (without limit) for all --workers. Later: wait up to
   * --round-timeout for at least --min-workers, else checkpoint and fail.
   */
  private async ensureWorkers(): Promise<void> {
    const first = !this.started;
    const need = first ? this.cfg.workers : this.cfg.minWorkers;
    let announced = false;
    const deadline = Date.now() + (first ? Infinity : this.cfg.roundTimeoutMs);
    for (;;) {
      const have = this.liveWorkers().length + this.joiningWorkers().length;
      if (have >= need || this.stopping) {
        this.started = true;
        return;
      }
      if (Date.now() >= deadline) {
        const file = this.checkpoint();
        throw new TrainingError('E_WORKERS', `only ${this.liveWorkers().length} workers live, --min-workers is ${this.cfg.minWorkers}; checkpoint saved to ${file}`);
      }
      if (!announced) {
        this.log(`waiting for ${need - have} more worker(s) (${have}/${need})`);
        announced = true;
      }
      await this.waitEvent(Math.min(1000, deadline - Date.now()));
    }
  }

  /** Run until the epochs (or --max-rounds) are done. */
  async train(): Promise<void> {
    const cfg = this.cfg;
    await this.ensureWorkers();
    const fixed = this.gridNoise();
    this.log(`training ${cfg.model.kind}: ${this.data.n} samples, ${cfg.workers} workers x batch ${cfg.batchSize} = global batch ${cfg.workers * cfg.batchSize}, ${cfg.epochs} epochs`);
    while (this.epoch < cfg.epochs && !(cfg.maxRounds > 0 && this.round >= cfg.maxRounds) && !this.stopping) {
      await this.ensureWorkers();
      if (this.stopping) break;
      const in0 = this.bytesIn;
      const out0 = this.bytesOut;
      this.admit();
      const plan = this.plan!;
      const t0 = performance.now();
      const assigned = this.liveWorkers().map((c) => ({ c, ids: plan.peek(c.id, cfg.batchSize) })).filter((a) => a.ids.length > 0);
      if (assigned.length === 0) {
        this.membershipChanged = true;
        continue;
      }
      // D phase.
      const dGrads = await this.phase('D', assigned);
      if (dGrads.length === 0) {
        this.log(`round ${this.round}: no D gradient arrived; retrying the round`);
        this.membershipChanged = true;
        continue;
      }
      let reduceMs = this.step('D', dGrads.map(({ g }) => ({ count: g.count, data: g.data as Float32Array })));
      for (const { c, g } of dGrads) plan.commit(c.id, g.count);
      // G phase: the workers whose D gradient was applied, on the same samples' noise.
      const gAssigned = dGrads.map(({ c, g }) => ({ c, ids: assigned.find((a) => a.c === c)!.ids.subarray(0, g.count) })).filter((a) => a.c.state === 'live');
      const gGrads = gAssigned.length ? await this.phase('G', gAssigned) : [];
      if (gGrads.length) reduceMs += this.step('G', gGrads.map(({ g }) => ({ count: g.count, data: g.data as Float32Array })));
      const roundMs = performance.now() - t0;

      const wmean = (xs: { g: GradMsg }[], f: (g: GradMsg) => number) => {
        const n = xs.reduce((a, x) => a + x.g.count, 0);
        return n ? xs.reduce((a, x) => a + f(x.g) * x.g.count, 0) / n : NaN;
      };
      const samples = dGrads.reduce((a, x) => a + x.g.count, 0);
      const computeMs = Math.max(...dGrads.map((x) => x.g.computeMs)) + (gGrads.length ? Math.max(...gGrads.map((x) => x.g.computeMs)) : 0);
      const m: RoundMetrics = {
        round: this.round,
        epoch: this.epoch,
        workers: dGrads.length,
        samples,
        global_batch: this.liveWorkers().length * cfg.batchSize,
        d_loss: wmean(dGrads, (g) => g.loss),
        g_loss: wmean(gGrads, (g) => g.loss),
        d_real: wmean(dGrads, (g) => g.dReal),
        d_fake: wmean(dGrads, (g) => g.dFake),
        samples_per_s: samples / (roundMs / 1000),
        round_ms: roundMs,
        compute_ms: computeMs,
        transfer_ms: Math.max(0, roundMs - computeMs - reduceMs),
        reduce_ms: reduceMs,
        bytes_in: this.bytesIn - in0,
        bytes_out: this.bytesOut - out0,
        dropped: this.droppedThisRound,
        joined: this.joinedThisRound,
        epoch_used: plan.used,
        epoch_samples: plan.n,
      };
      this.droppedThisRound = [];
      this.joinedThisRound = [];
      appendFileSync(join(this.runDir, 'metrics.jsonl'), JSON.stringify(m) + '\n');
      this.round++;
      this.opts.onRound?.(m, this);

      if (plan.remaining === 0) {
        const acc = { epoch: this.epoch, ...plan.accounting(), rounds: this.round - this.epochStartRound };
        this.epochLog.push(acc);
        appendFileSync(join(this.runDir, 'epochs.jsonl'), JSON.stringify(acc) + '\n');
        this.writeGrid(fixed, `epoch-${String(this.epoch + 1).padStart(3, '0')}.png`);
        this.epoch++;
        this.plan = null;
        await this.opts.onEpoch?.(this.epoch, this);
      }
      if (cfg.checkpointEvery > 0 && this.round % cfg.checkpointEvery === 0) this.checkpoint();
    }
    this.checkpoint();
    if (!this.stopping) this.writeGrid(fixed, 'final.png');
  }

  /** The run's fixed noise: an 8x8 grid, or 10x10 with one row per digit for conditional models. */
  gridNoise(): { noise: Float32Array; labels: Uint8Array; cols: number } {
    const cols = isConditional(this.cfg.model) ? 10 : 8;
    return { ...fixedNoise(this.cfg.model, this.cfg.seed, cols * cols), cols };
  }

  /** Sample the generator on the run's fixed noise into RUN/samples/NAME. */
  writeGrid(fixed: { noise: Float32Array; labels: Uint8Array; cols: number }, name: string): string {
    const g = new GanModel(this.cfg.model);
    try {
      g.setWeights('G', this.sampleWeights());
      const imgs = g.generate(fixed.noise, isConditional(this.cfg.model) ? fixed.labels : undefined);
      const file = join(this.runDir, 'samples', name);
      writeFileAtomic(file, gridPng(imgs, fixed.cols * fixed.cols, fixed.cols));
      return file;
    } finally {
      g.dispose();
    }
  }

  summary(): Record<string, unknown> {
    let last: RoundMetrics | null = null;
    const file = join(this.runDir, 'metrics.jsonl');
    if (existsSync(file)) {
      const lines = readFileSync(file, 'utf8').trim().split('\n');
      last = lines.length && lines[0] ? (JSON.parse(lines[lines.length - 1]!) as RoundMetrics) : null;
    }
    return {
      rounds: this.round,
      epochs_completed: this.epoch,
      seconds: (Date.now() - this.startedAt) / 1000,
      stopped: this.stopping,
      last_round: last,
      epochs: this.epochLog,
      checkpoint: join(this.runDir, CHECKPOINT_FILE),
      final_grid: existsSync(join(this.runDir, 'samples', 'final.png')) ? join(this.runDir, 'samples', 'final.png') : null,
    };
  }

  /** Tell workers the run is over and close everything. */
  async close(reason = 'run finished'): Promise<void> {
    if (this.heartbeat) clearInterval(this.heartbeat);
    this.closing = true;
    const conns = [...this.conns];
    // Stop first, then the close handshake with a short grace: a frozen worker must not hold the
    // end of the run, and the servers close only after every worker was told.
    await Promise.all(conns.map((c) => new Promise<void>((resolve) => {
      if (c.ws.readyState === WebSocket.CLOSED) return resolve();
      const t = setTimeout(() => {
        c.ws.terminate();
        resolve();
      }, 2000);
      c.ws.once('close', () => {
        clearTimeout(t);
        resolve();
      });
      this.send(c, encode({ k: Kind.Stop, reason }));
      c.ws.close(1000, 'E_DONE: ' + reason.slice(0, 100));
    })));
    const wss = this.wss;
    this.wss = null;
    await new Promise<void>((r) => (wss ? wss.close(() => r()) : r()));
    if (this.https) await new Promise<void>((r) => this.https!.close(() => r()));
  }
}
