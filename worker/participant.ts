/**
 * A worker's part in the rounds: it holds the weights and the shard, computes the gradient of the
 * phase it is asked for, and takes its place in the phase's reduction (sending its gradient to the
 * coordinator, or folding it into the partial sum of a relay chain), then takes in the new weights.
 * It never changes weights on its own authority: weights only come from the coordinator (directly
 * or relayed), and it computes only on the versions a task names, waiting for them while they are
 * still on their way and refusing a task that names older ones. A low-communication run's local
 * steps (local-steps.ts) train from those weights and put them back when they are done.
 *
 * Transport-free: frames go out through the `send` functions, so Node and browser workers share it.
 */
import { buildBatch, type SampleSource } from '../shared/compute/batch.js';
import { COORDINATOR, type ChunkMsg, Kind, type LocalSteps, type Message, type ReduceMsg, type ShardMsg, type TaskMsg, type WeightsChunkMsg, encode } from '../shared/wire/codec.js';
import { GanError } from '../shared/wire/errors.js';
import { chunkAt, chunkCount } from '../shared/numerics/chunks.js';
import { GanModel, type PhaseResult } from '../shared/compute/gan.js';
import { type WirePrecision, WireScratch, decodeWeights, isWirePrecision, wholeView } from '../shared/numerics/wire-format.js';
import { type ModelConfig, type Net, initWeights } from '../shared/compute/model.js';
import { digitBytes } from '../shared/data/digits.js';
import type { GradientSlot, WeightsRegion } from '../shared/wire/same-host.js';
import { PhaseBuffers, PhaseReduction, type ReductionIO, weightsRoute } from './phase-reduction.js';
import { localSteps } from './local-steps.js';

export interface ParticipantOptions {
  model: ModelConfig;
  seed: number;
  /** Precision of gradients, partial sums and weights in frames (Welcome.wire). */
  wire: WirePrecision;
  /** This worker's id in the run (Welcome.workerId): its seat in sharded groups. */
  id?: number;
  /** A frame to the coordinator. */
  toCoordinator(frame: Uint8Array): void;
  /** A frame to a peer (dialing `url` when there is no link yet); absent for workers that do not relay. */
  toPeer?(peer: number, url: string | null, frame: Uint8Array): void;
  /** The coordinator's shared regions, when this worker proved it maps them (shared/wire/same-host.ts). */
  shared?: { region: WeightsRegion; slot: GradientSlot } | null;
  /** A low-communication run's local steps (Welcome.local): a D task is a sync's local steps, its G task sends G's change. */
  local?: LocalSteps;
  /** Told after each phase this worker computed (a page's status line). */
  onComputed?: (c: { round: number; phase: Net; count: number; computeMs: number }) => void;
}

class ShardStore implements SampleSource {
  private images = new Map<number, Uint8Array>();
  private labels = new Map<number, number>();
  add(m: ShardMsg): void {
    if (m.reset) {
      this.images.clear();
      this.labels.clear();
    }
    m.ids.forEach((id, i) => {
      this.images.set(id, digitBytes(m.images, i));
      this.labels.set(id, m.labels[i]!);
    });
  }
  image(id: number): Uint8Array {
    const img = this.images.get(id);
    if (!img) throw new GanError('E_UNEXPECTED', `task names sample ${id}, which this worker was not sent`);
    return img;
  }
  label(id: number): number {
    return this.labels.get(id) ?? 0;
  }
}

/** New weights arriving in chunks: applied when the last one is in. */
interface Staging {
  version: number;
  attempt: number;
  /** The weights they are differences from (8-bit) or XOR deltas of (fp32, 16-bit): the version before, as this worker holds it. */
  base: Float32Array | null;
  buf: Float32Array;
  got: Uint8Array;
  missing: number;
}

/**
 * How the weights held of a net came: the attempt of the reduction whose chunks built them (-1:
 * they came whole, from the coordinator's committed state), and the view of the version before
 * them. A later attempt of the same phase (a member lost after every chunk went out) sends the
 * same version again; its chunks replace these, decoded against that base.
 */
interface Made {
  attempt: number;
  base: Float32Array | null;
}

export class Participant {
  readonly model: GanModel;
  versions = { D: -1, G: -1 };
  tasksDone = 0;
  private store = new ShardStore();
  private staging: Record<Net, Staging | null> = { D: null, G: null };
  private waiting: TaskMsg | null = null;
  /** The phase computed last, held until the next task: a retried reduction folds it again without recomputing. */
  private held: PhaseReduction | null = null;
  /** Plans and chunks (with who sent them) that arrived before their phase was computed. */
  private early: { plans: ReduceMsg[]; chunks: { x: ChunkMsg; from: number }[] } = { plans: [], chunks: [] };
  private scratch: Float32Array | null = null;
  /**
   * The weights held: weights chunks are differences from them (8-bit) or XOR deltas of their bits
   * (fp32, 16-bit). Null after a 16- or fp32 copy out of the shared region, whose members get no chunks.
   */
  private view: Record<Net, Float32Array | null> = { D: null, G: null };
  /** What rounding to 8 bits has lost of each net's gradients so far, added to the next one (error feedback). */
  private residual: Record<Net, Float32Array | null> = { D: null, G: null };
  /**
   * The reduce plans of each net's latest reduction, by attempt: they route the phase's partial
   * sums, and its weights chunks, which may still be arriving after this worker has moved on to
   * the next phase.
   */
  private plans: Record<Net, { round: number; byAttempt: Map<number, ReduceMsg> }> = { D: { round: -1, byAttempt: new Map() }, G: { round: -1, byAttempt: new Map() } };
  private readonly io: ReductionIO;
  private readonly buffers: Record<Net, PhaseBuffers> = { D: new PhaseBuffers(), G: new PhaseBuffers() };
  /** How each net's weights held came (Made). */
  private made: Record<Net, Made> = { D: { attempt: -1, base: null }, G: { attempt: -1, base: null } };
  /** Room for unpacking 16-bit XOR deltas, reused chunk after chunk. */
  private readonly wireScratch = new WireScratch();
  /** Buffers per net that new weights are assembled in by turns: never the view nor its base (a third only when a later attempt replaces a version). */
  private assembly: Record<Net, Float32Array[]> = { D: [], G: [] };
  /** A low-communication run's change of G over the last sync's local steps, until the sync's G task sends it. */
  private localG: { round: number; ids: Uint32Array; delta: Float32Array; loss: number; dFake: number } | null = null;

  constructor(private readonly o: ParticipantOptions) {
    if (!isWirePrecision(o.wire)) throw new GanError('E_MALFORMED', `wire precision ${JSON.stringify(o.wire)} is not one of fp32, 16, 8`);
    this.model = new GanModel(o.model);
    this.io = {
      wire: o.wire, id: o.id ?? -1, toCoordinator: o.toCoordinator, toPeer: o.toPeer, slot: o.shared?.slot,
      residual: (net, n) => (this.residual[net] ??= new Float32Array(n)),
      buffers: (net) => this.buffers[net],
      scratch: (n) => {
        if (!this.scratch || this.scratch.length < n) this.scratch = new Float32Array(n);
        return this.scratch.subarray(0, n);
      },
    };
  }

  dispose(): void {
    this.model.dispose();
  }

  /** A frame from the coordinator (or, for Chunk and WeightsChunk, from a peer: `from` >= 0). Throws GanError on anything invalid. */
  async handle(m: Message, from: number = COORDINATOR): Promise<void> {
    switch (m.k) {
      case Kind.Shard:
        return this.store.add(m);
      case Kind.Weights:
        // Version 0 of a run is its seeded initialisation: derived here, as the coordinator did.
        return this.setWeights(m.net, m.version, m.seeded ? wholeView(this.o.wire, initWeights(this.model.layout(m.net), this.o.seed)) : m.data);
      case Kind.WeightsChunk:
        return this.onWeightsChunk(m, from);
      case Kind.Task:
        this.waiting = m;
        this.held = null;
        return this.startIfReady();
      case Kind.Reduce:
        return this.onReduce(m);
      case Kind.Chunk:
        return this.onChunk(m, from);
      default:
        throw new GanError('E_UNEXPECTED', `${Kind[m.k] ?? m.k} is not accepted here`);
    }
  }

  /** Weights of `net` at `version`: whole (committed), or assembled from the chunks of `built`'s attempt. */
  private setWeights(net: Net, version: number, data: Float32Array, built?: Staging): Promise<void> {
    const l = this.model.layout(net);
    if (data.length !== l.total) throw new GanError('E_SHAPE', `${net} weights have ${data.length} values, the model has ${l.total}`);
    if (version > this.versions[net] || (built && this.supersedes(net, version, built.attempt))) {
      this.model.setWeights(net, data);
      this.versions[net] = version;
      this.view[net] = built ? data : data.slice();
      this.made[net] = built ? { attempt: built.attempt, base: built.base } : { attempt: -1, base: null };
    }
    if (this.staging[net] && this.staging[net].version <= version) this.staging[net] = null;
    return this.startIfReady();
  }

  /** Chunks of `attempt` at `version` replace the weights held: the same version, built by an earlier attempt. */
  private supersedes(net: Net, version: number, attempt: number): boolean {
    return version === this.versions[net] && this.made[net].attempt >= 0 && attempt > this.made[net].attempt;
  }

  private async onWeightsChunk(m: WeightsChunkMsg, from: number): Promise<void> {
    const total = this.model.layout(m.net).total;
    const plan = this.plans[m.net].byAttempt.get(m.attempt);
    if (!plan) throw new GanError('E_STALE', `weights of ${m.net} attempt ${m.attempt} arrived outside its reduction`);
    // An XOR delta's bytes are not its values: its length is checked as it is unpacked.
    const { index: c, start, end } = chunkAt(total, plan.chunk, m.offset, m.xor ? null : m.data.length, `${m.net} weights chunk`);
    const route = weightsRoute(plan, this.io.id, c);
    if (from !== route.from) throw new GanError('E_UNEXPECTED', `weights of ${m.net} from ${from}, expected them from ${route.from}`);
    // On to the members that wait for these bytes from this one first.
    if (route.forward.length > 0) {
      const frame = encode(m);
      for (const { peer, url } of route.forward) this.o.toPeer?.(peer, url, frame);
    }
    const replacing = this.supersedes(m.net, m.version, m.attempt);
    if (m.version <= this.versions[m.net] && !replacing) return;
    if ((this.o.wire === '8' || m.xor) && !replacing && m.version !== this.versions[m.net] + 1) {
      throw new GanError('E_STALE', `${this.o.wire === '8' ? '8-bit' : 'XOR delta'} weights of ${m.net} v${m.version} are a difference from v${m.version - 1}, this worker holds v${this.versions[m.net]}`);
    }
    let st = this.staging[m.net];
    if (st && (st.version < m.version || (st.version === m.version && st.attempt < m.attempt))) st = null;
    if (st && (st.version > m.version || st.attempt > m.attempt)) return; // an attempt that was superseded
    if (!st) {
      const n = chunkCount(total, plan.chunk);
      // A later attempt of the version held is a difference from the version before it, as the first attempt was.
      const base = replacing ? this.made[m.net].base : this.view[m.net];
      st = { version: m.version, attempt: m.attempt, base, buf: this.assemblyBuffer(m.net, total, base), got: new Uint8Array(n), missing: n };
      this.staging[m.net] = st;
    }
    if (st.got[c]) throw new GanError('E_STALE', `weights chunk at ${m.offset} arrived twice`);
    decodeWeights(this.o.wire, m, st.base?.subarray(start, end) ?? null, st.buf.subarray(start, end), `${m.net} weights chunk at ${start}`, this.wireScratch);
    st.got[c] = 1;
    if (--st.missing === 0) await this.setWeights(m.net, st.version, st.buf, st);
  }

  /** A buffer to assemble new weights of `net` in: neither the view nor `base` (the weights the arriving chunks are differences from). */
  private assemblyBuffer(net: Net, total: number, base: Float32Array | null): Float32Array {
    const pool = this.assembly[net];
    let buf = pool.find((b) => b !== this.view[net] && b !== base && b.length === total);
    if (!buf) pool.push((buf = new Float32Array(total)));
    return buf;
  }

  /** Compute the waiting task once the weights it names are here. */
  private async startIfReady(): Promise<void> {
    const t = this.waiting;
    if (!t) return;
    if (t.dVersion < this.versions.D || t.gVersion < this.versions.G) {
      throw new GanError('E_STALE', `task wants D v${t.dVersion} / G v${t.gVersion}, worker holds newer D v${this.versions.D} / G v${this.versions.G}`);
    }
    if (this.o.shared) this.pullShared(t);
    if (t.dVersion !== this.versions.D || t.gVersion !== this.versions.G) return; // still on their way
    // The version named, but built by an attempt the phase's later one replaced: its chunks are on their way.
    if (this.behind('D', t.dAttempt) || this.behind('G', t.gAttempt)) return;
    this.waiting = null;
    await this.compute(t);
  }

  /** The weights held of `net` were built by an earlier attempt than the one the task names. */
  private behind(net: Net, attempt: number | undefined): boolean {
    return attempt !== undefined && this.made[net].attempt >= 0 && this.made[net].attempt < attempt;
  }

  /** Copy the nets whose named version this worker lacks out of the weights region (one that holds another version leaves them to frames). */
  private pullShared(t: TaskMsg): void {
    for (const [net, version] of [['D', t.dVersion], ['G', t.gVersion]] as const) {
      if (version === this.versions[net]) continue;
      // Making the tensors is the copy: the region is never held on to.
      const got = this.o.shared!.region.read(net, version, (w) => {
        this.model.setWeights(net, w);
        this.view[net] = this.o.wire === '8' ? w.slice() : null;
        this.made[net] = { attempt: -1, base: null };
      });
      if (got === 'version') continue;
      if (got === 'torn') throw new GanError('E_STALE', `${net} weights v${version} changed in the shared region while they were copied`);
      this.versions[net] = version;
      if (this.staging[net] && this.staging[net].version <= version) this.staging[net] = null;
    }
  }

  private async compute(t: TaskMsg): Promise<void> {
    const t0 = performance.now();
    const r = this.o.local ? await this.localPhase(t, this.o.local) : this.step(t);
    const computeMs = performance.now() - t0;
    this.held = new PhaseReduction(t.round, t.phase, t.ids.length, r.grads, this.io, (attempt) => this.planOf(t.round, t.phase, attempt));
    this.tasksDone++;
    this.o.onComputed?.({ round: t.round, phase: t.phase, count: t.ids.length, computeMs });
    this.o.toCoordinator(encode({ k: Kind.Report, round: t.round, phase: t.phase, count: t.ids.length, loss: r.loss, dReal: r.dReal, dFake: r.dFake, computeMs }));
    const early = this.early;
    this.early = { plans: [], chunks: [] };
    for (const p of early.plans) this.onReduce(p);
    for (const { x, from } of early.chunks) this.onChunk(x, from, true);
  }

  /** One step's gradient of the task's net on its batch. */
  private step(t: TaskMsg): PhaseResult {
    const batch = buildBatch(this.model.cfg, { seed: this.o.seed, epoch: t.epoch, phase: t.phase }, t.ids, this.store);
    return t.phase === 'D' ? this.model.dStep(batch) : this.model.gStep(batch);
  }

  /**
   * A low-communication run's phase: the D task of a sync takes its local steps (local-steps.ts)
   * and sends D's change of weights; G's change is held for the sync's G task, which computes nothing.
   */
  private async localPhase(t: TaskMsg, l: LocalSteps): Promise<PhaseResult> {
    if (t.phase === 'D') {
      const r = await localSteps(this.model, this.store, { seed: this.o.seed, epoch: t.epoch }, t.ids, l);
      this.localG = { round: t.round, ids: t.ids.slice(), delta: r.delta.G, loss: r.g.loss, dFake: r.g.dFake };
      return { grads: r.delta.D, ...r.d };
    }
    const g = this.localG;
    if (!g || g.round !== t.round || t.ids.length !== g.ids.length || t.ids.some((id, i) => id !== g.ids[i])) {
      throw new GanError('E_UNEXPECTED', `G task of sync ${t.round} on samples this worker did not take its local steps on`);
    }
    return { grads: g.delta, loss: g.loss, dReal: NaN, dFake: g.dFake };
  }

  private isCurrent(round: number, phase: Net): boolean {
    return !!this.held && this.held.round === round && this.held.phase === phase;
  }

  private isWaitingFor(round: number, phase: Net): boolean {
    return !!this.waiting && this.waiting.round === round && this.waiting.phase === phase;
  }

  private onReduce(r: ReduceMsg): void {
    if (!this.isCurrent(r.round, r.phase)) {
      if (this.isWaitingFor(r.round, r.phase)) this.early.plans.push(r);
      return;
    }
    if (this.plans[r.phase].round !== r.round) this.plans[r.phase] = { round: r.round, byAttempt: new Map() };
    this.plans[r.phase].byAttempt.set(r.attempt, r);
    this.held!.onPlan(r);
  }

  /** The plan of attempt `attempt` of phase (round, net), once it has arrived. */
  private planOf(round: number, net: Net, attempt: number): ReduceMsg | undefined {
    const p = this.plans[net];
    return p.round === round ? p.byAttempt.get(attempt) : undefined;
  }

  /** A partial sum or a peer's part of a chunk: for the phase held, or kept until a later phase is computed. */
  private onChunk(x: ChunkMsg, from: number, replay = false): void {
    if (!this.isCurrent(x.round, x.phase)) {
      if (!replay && (this.isWaitingFor(x.round, x.phase) || this.isAhead(x.round, x.phase))) this.early.chunks.push({ x, from });
      return;
    }
    this.held!.onChunk(x, from);
  }

  /** (round, phase) comes after the phase held: peers that computed it sooner send their chunks before this worker's task arrives. */
  private isAhead(round: number, phase: Net): boolean {
    const at = this.held ?? this.waiting;
    if (!at) return true;
    const order = (r: number, p: Net) => 2 * r + (p === 'G' ? 1 : 0);
    return order(round, phase) > order(at.round, at.phase);
  }
}
