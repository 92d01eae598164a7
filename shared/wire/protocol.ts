/**
 * The messages of the wire protocol (codec.ts turns them into frames and back). Every frame is
 * one binary WebSocket message holding one msgpack map with a numeric `k` (Kind).
 *
 * Invariants:
 * - Protocol version and model signature are exchanged once, in Hello; a mismatch closes the
 *   connection with E_VERSION / E_MODEL. Peer links (worker to worker) open with the same
 *   challenge and token proof, in both directions.
 * - A phase's gradients travel in chunks of `Reduce.chunk` values at fixed offsets, in the run's
 *   wire precision (Welcome.wire; shared/numerics/wire-format.ts): float32, IEEE half, or 8-bit
 *   blocks with one scale each. A chunk is either a worker's own gradient (to the coordinator, or
 *   to the chunk's owner in a sharded group) or a partial sum: the weighted sum, in worker-id
 *   order, of the gradients of every member before and including its sender (for an owner: every
 *   member of its group). On the fp32 wire, whatever path the chunks take, the coordinator's sum
 *   is the same bits; on a 16- or 8-bit wire a partial sum is rounded to the wire once per hop.
 * - New weights travel in the same precision: float32 or half (each as the packed XOR of its bits
 *   with the version the phase's tasks named, which every member holds, where that is smaller),
 *   or on the 8-bit wire the difference from that version. Whole weights (Weights)
 *   are always float32: the view the workers hold; version 0 goes as `seeded`, which the worker
 *   derives from the run's seed.
 * - A reduction attempt (round, phase, attempt) is all or nothing: weights chunks of an attempt
 *   are applied by a worker only when every chunk of that version has arrived, and a later attempt
 *   of the same phase supersedes them.
 * - A worker on the coordinator's host that proves it maps the coordinator's memory
 *   (same-host.ts) exchanges weights and gradients through shared regions instead: its Reduce says
 *   `slot`, it writes its gradient to its slot and sends Posted, and it copies new weights out of
 *   the weights region when a task names them. The sum, the checks and the bits are the same.
 */
import type { ModelConfig, Net } from '../compute/model.js';

export const PROTOCOL_VERSION = 9;

export enum Kind {
  /** coordinator -> worker (and listener -> dialer on a peer link), first frame: version and a nonce to prove the token over. */
  Challenge = 1,
  /** worker -> coordinator: version, model signature, backend, token proof, and where peers can reach it. */
  Hello = 2,
  /** coordinator -> worker: accepted; id and training config. */
  Welcome = 3,
  /** coordinator -> worker: sample images (and labels) the worker will be asked to use. */
  Shard = 4,
  /** coordinator -> worker: one net's whole weights at a version (at join, and where a relay broke). */
  Weights = 5,
  /** coordinator -> worker: compute this phase of this round on these samples. */
  Task = 6,
  /** worker -> coordinator: the phase is computed; its sample count and statistics. */
  Report = 7,
  /** coordinator -> worker: the run is over, or stopped to be resumed. */
  Stop = 8,
  /** coordinator -> worker: how this attempt's sum travels (where partial sums come from and go). */
  Reduce = 9,
  /** a piece of a gradient or of a partial sum, at an offset. */
  Chunk = 10,
  /** a piece of one net's new weights, coordinator -> worker and relayed worker -> worker. */
  WeightsChunk = 11,
  /** worker -> coordinator: a peer link failed (the phase is retried without it). */
  PeerLost = 12,
  /** dialer -> listener on a peer link: who it is and its token proof. */
  PeerHello = 13,
  /** listener -> dialer: accepted, with the listener's own proof over the dialer's nonce. */
  PeerWelcome = 14,
  /** observer -> coordinator, after the Challenge: an observer (the dashboard) with its token proof. */
  Observe = 15,
  /** coordinator -> observer: a snapshot or a delta of the runs watched (observe.ts), as JSON. */
  Update = 16,
  /** coordinator -> observer: one sample grid's PNG. */
  Grid = 17,
  /** either side, before it closes a connection it refuses: the code, the reason, and how long to wait before trying again. */
  Refused = 18,
  /** worker -> coordinator, after a Welcome that offered regions: the nonce read from its slot, or why it cannot map them. */
  SameHost = 19,
  /** worker -> coordinator: its gradient of this phase is in its slot. */
  Posted = 20,
}

/** Reduce.prev / Reduce.next: no one (start from zero) and the coordinator; peers are worker ids >= 0. */
export const NOBODY = -1;
export const COORDINATOR = -2;
/** Reduce.owners: the coordinator owns the chunk. */
export const SHARD_COORDINATOR = 0xffff;

export interface ChallengeMsg {
  k: Kind.Challenge;
  v: number;
  nonce: Uint8Array;
  auth: boolean;
  /** The model the coordinator trains; the worker answers with the signature its own code derives. */
  model: ModelConfig;
}
export interface HelloMsg {
  k: Kind.Hello;
  v: number;
  signature: string;
  backend: string;
  host: string;
  pid: number;
  /** HMAC-SHA256(token, nonce) when the coordinator asks for auth. */
  proof?: Uint8Array;
  /** The port of this worker's peer listener; absent when it relays nothing (behind NAT, a browser). */
  peerPort?: number;
  /** The address peers dial, when not the one the coordinator sees this connection come from. */
  peerHost?: string;
  /** It can map the coordinator's shared regions, should it be on the same host. */
  sameHost?: boolean;
}
export interface WelcomeMsg {
  k: Kind.Welcome;
  workerId: number;
  seed: number;
  /** The wire precision of gradients, partial sums and weights: 'fp32', '16' or '8' (wire-format.ts). */
  wire: string;
  /** The largest frame the coordinator will send. */
  maxPayload: number;
  /** Paths of the weights region and this worker's gradient slot (same-host.ts), offered to workers that can map them. */
  region?: string;
  slot?: string;
  /** A low-communication run (--sync-every above 1): how every worker takes its local steps. */
  local?: LocalSteps;
}
/**
 * A low-communication run's local steps: a task's ids are `steps` batches of `batch` samples (the
 * last one may be shorter at an epoch's end), each an iteration of D then G with the worker's own
 * Adam at these settings, fresh at every sync.
 */
export interface LocalSteps {
  steps: number;
  batch: number;
  lrD: number;
  lrG: number;
  beta1: number;
  beta2: number;
  epsilon: number;
}
export interface ShardMsg {
  k: Kind.Shard;
  epoch: number;
  /** Drop every sample held so far (a new epoch) before adding these. */
  reset: boolean;
  ids: Uint32Array;
  images: Uint8Array;
  labels: Uint8Array;
}
export interface WeightsMsg {
  k: Kind.Weights;
  net: Net;
  version: number;
  /** Version 0 only, with no data: the seeded initial weights (initWeights of the run's seed), which the worker derives. */
  seeded?: boolean;
  data: Float32Array;
}
export interface TaskMsg {
  k: Kind.Task;
  round: number;
  epoch: number;
  phase: Net;
  /** Versions of D and G the worker must hold (it waits for them when they are still on their way). */
  dVersion: number;
  gVersion: number;
  /**
   * The attempts of the reductions that made those versions (absent: whole weights, or none yet):
   * when a member was lost after every chunk went out, a later attempt sends the same version
   * again, and the worker waits for its chunks.
   */
  dAttempt?: number;
  gAttempt?: number;
  ids: Uint32Array;
}
export interface ReportMsg {
  k: Kind.Report;
  round: number;
  phase: Net;
  count: number;
  loss: number;
  dReal: number;
  dFake: number;
  computeMs: number;
}
/** The run is over; `code` names the error when it ended in failure (the worker then exits non-zero). */
/**
 * The run is over (`code` set: it failed), or, with `resumes`, stopped to be resumed from its
 * checkpoint (a scheduler's preemption): the worker keeps trying to reconnect instead of exiting.
 */
export interface StopMsg { k: Kind.Stop; reason: string; code?: string; resumes?: boolean }
export interface ReduceMsg {
  k: Kind.Reduce;
  round: number;
  phase: Net;
  attempt: number;
  /** Samples of every member of this attempt: this worker's scale is its count / total. */
  total: number;
  /** Floats per chunk. */
  chunk: number;
  /** Where partial sums come from: NOBODY (start from zero), COORDINATOR, or a peer's id. */
  prev: number;
  /** Where this worker's chunks go: COORDINATOR or a peer's id. */
  next: number;
  /** ws://host:port of the `next` peer ('' when next is the coordinator). */
  nextUrl: string;
  /** Send partial sums (a relay member) rather than the raw gradient. */
  partial: boolean;
  /** Put the raw gradient in this worker's slot and send Posted (a proven same-host worker). */
  slot?: boolean;
  /**
   * A sharded group (all four fields, or none): its members' ids in id order, their sample counts
   * and where peers reach them, and per chunk its owner: an index into `group`, or SHARD_COORDINATOR
   * (the coordinator sums it: members send it their own part). An owner sums every member's part
   * of its chunks (after the coordinator's seed when `prev` is COORDINATOR), sends the sum to the
   * coordinator and passes the chunks' new weights to the other members.
   */
  group?: Uint32Array;
  counts?: Uint32Array;
  urls?: string[];
  owners?: Uint16Array;
}
export interface SameHostMsg {
  k: Kind.SameHost;
  /** The nonce at the start of the slot, as read from it. */
  proof?: Uint8Array;
  /** Why the regions could not be mapped (another host, another user): this worker stays on frames. */
  reason?: string;
}
export interface PostedMsg {
  k: Kind.Posted;
  round: number;
  phase: Net;
  attempt: number;
  /** Values in the slot (the net's size) and their precision. */
  values: number;
  fp16: boolean;
}
export interface ChunkMsg {
  k: Kind.Chunk;
  round: number;
  phase: Net;
  attempt: number;
  /** First float of this chunk in the net's flat layout (a multiple of the chunk size). */
  offset: number;
  /** A partial sum rather than one worker's gradient. */
  partial: boolean;
  /** IEEE half bits (the 16-bit wire). */
  fp16: boolean;
  /** One float32 scale per 8-bit block of data (the 8-bit wire: data is then signed bytes). */
  scales?: Float32Array;
  data: Float32Array | Uint16Array | Int8Array;
}
export type WeightsChunkMsg = {
  k: Kind.WeightsChunk;
  net: Net;
  version: number;
  attempt: number;
  offset: number;
} & (
  | {
    /** IEEE half bits of the new weights (the 16-bit wire). */
    fp16?: boolean;
    /** The 8-bit wire: data is the difference from version - 1, in signed bytes with one scale per block. */
    scales?: Float32Array;
    xor?: undefined;
    data: Float32Array | Uint16Array | Int8Array;
  }
  | {
    /** data is the packed XOR of the new weights' bits with version - 1's (shared/numerics/bit-delta.ts): float32 bits, or with fp16 half bits. */
    xor: true;
    fp16?: boolean;
    scales?: undefined;
    data: Uint8Array;
  }
);
export interface PeerLostMsg { k: Kind.PeerLost; peer: number; code: string; reason: string }
export interface PeerHelloMsg {
  k: Kind.PeerHello;
  v: number;
  /** The dialer's worker id. */
  workerId: number;
  signature: string;
  /** HMAC-SHA256(token, listener's nonce) when the run has a token. */
  proof?: Uint8Array;
  /** A nonce the listener proves the token over in PeerWelcome. */
  nonce: Uint8Array;
}
export interface PeerWelcomeMsg { k: Kind.PeerWelcome; workerId: number; proof?: Uint8Array }

export interface ObserveMsg { k: Kind.Observe; v: number; proof?: Uint8Array }
export interface UpdateMsg {
  k: Kind.Update;
  /** UTF-8 JSON of an ObserverUpdate. */
  body: Uint8Array;
}
export interface GridMsg { k: Kind.Grid; run: number; name: string; png: Uint8Array }
export interface RefusedMsg {
  k: Kind.Refused;
  /** An error code (errors.ts). */
  code: string;
  reason: string;
  /** Come back no sooner than this (E_BACKOFF); absent when waiting does not help or the caller decides. */
  retryAfterMs?: number;
}

export type Message =
  | ChallengeMsg | HelloMsg | WelcomeMsg | ShardMsg | WeightsMsg | TaskMsg | ReportMsg | StopMsg
  | ReduceMsg | ChunkMsg | WeightsChunkMsg | PeerLostMsg | PeerHelloMsg | PeerWelcomeMsg
  | ObserveMsg | UpdateMsg | GridMsg | RefusedMsg | SameHostMsg | PostedMsg;

/** Field types decode() checks before anything uses a message. */
export type FieldType = 'uint' | 'int' | 'number' | 'string' | 'bool' | 'bin' | 'net' | 'object' | 'object?' | 'uint?' | 'bin?' | 'string?' | 'bool?' | 'strings' | 'strings?';

export const SPECS: Record<Kind, Record<string, FieldType>> = {
  [Kind.Challenge]: { v: 'uint', nonce: 'bin', auth: 'bool', model: 'object' },
  [Kind.Hello]: { v: 'uint', signature: 'string', backend: 'string', host: 'string', pid: 'uint', proof: 'bin?', peerPort: 'uint?', peerHost: 'string?', sameHost: 'bool?' },
  [Kind.Welcome]: { workerId: 'uint', seed: 'uint', wire: 'string', maxPayload: 'uint', region: 'string?', slot: 'string?', local: 'object?' },
  [Kind.Shard]: { epoch: 'uint', reset: 'bool', ids: 'bin', images: 'bin', labels: 'bin' },
  [Kind.Weights]: { net: 'net', version: 'uint', seeded: 'bool?', data: 'bin' },
  [Kind.Task]: { round: 'uint', epoch: 'uint', phase: 'net', dVersion: 'uint', gVersion: 'uint', dAttempt: 'uint?', gAttempt: 'uint?', ids: 'bin' },
  [Kind.Report]: { round: 'uint', phase: 'net', count: 'uint', loss: 'number', dReal: 'number', dFake: 'number', computeMs: 'number' },
  [Kind.Stop]: { reason: 'string', code: 'string?', resumes: 'bool?' },
  [Kind.Reduce]: {
    round: 'uint', phase: 'net', attempt: 'uint', total: 'uint', chunk: 'uint', prev: 'int', next: 'int', nextUrl: 'string', partial: 'bool', slot: 'bool?',
    group: 'bin?', counts: 'bin?', urls: 'strings?', owners: 'bin?',
  },
  [Kind.Chunk]: { round: 'uint', phase: 'net', attempt: 'uint', offset: 'uint', partial: 'bool', fp16: 'bool', scales: 'bin?', data: 'bin' },
  [Kind.WeightsChunk]: { net: 'net', version: 'uint', attempt: 'uint', offset: 'uint', fp16: 'bool?', scales: 'bin?', xor: 'bool?', data: 'bin' },
  [Kind.PeerLost]: { peer: 'int', code: 'string', reason: 'string' },
  [Kind.PeerHello]: { v: 'uint', workerId: 'uint', signature: 'string', proof: 'bin?', nonce: 'bin' },
  [Kind.PeerWelcome]: { workerId: 'uint', proof: 'bin?' },
  [Kind.Observe]: { v: 'uint', proof: 'bin?' },
  [Kind.Update]: { body: 'bin' },
  [Kind.Grid]: { run: 'uint', name: 'string', png: 'bin' },
  [Kind.Refused]: { code: 'string', reason: 'string', retryAfterMs: 'uint?' },
  [Kind.SameHost]: { proof: 'bin?', reason: 'string?' },
  [Kind.Posted]: { round: 'uint', phase: 'net', attempt: 'uint', values: 'uint', fp16: 'bool' },
};
