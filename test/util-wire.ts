/**
 * Faults injected on a worker's wire, where real faults happen, instead of hooks in its code: the
 * frames it receives from the coordinator can be held back, held forever or turned into a crash,
 * and the frames it sends to peers can be watched (to crash it at an exact point of a relay).
 * The worker itself runs unchanged.
 */
import { netLayout, type ModelConfig, type Net } from '../shared/compute/model.js';
import { chunkCount } from '../shared/numerics/chunks.js';
import { Kind, type Message, decode } from '../shared/wire/codec.js';
import type { Connect } from '../worker/transport.js';
import { type NodeWorkerOptions, nodeWorkerOptions } from '../worker/node.js';
import { type Relay, WorkerClient } from '../worker/worker.js';

/**
 * What to do with a frame from the coordinator: nothing (deliver it), 'stall' (it and everything
 * after it never arrive: a worker that hangs), 'crash' (the worker crashes as it arrives), or a
 * promise that it and every later frame wait for (a slow worker).
 */
export type Inbound = void | 'stall' | 'crash' | Promise<unknown>;

/**
 * A frame a relay is about to send a peer: chunk `chunk` of `of` of a partial sum, of its own
 * gradient (its part of a chunk a peer owns in a sharded group), or of new weights passed on.
 */
export interface RelayFrame {
  what: 'partial' | 'part' | 'weights';
  chunk: number;
  of: number;
  round: number;
  phase: Net;
}

export interface WireFaults {
  /** Each frame from the coordinator, decoded, before the worker sees it. */
  inbound?(m: Message): Inbound;
  /** Each frame this worker sends to a peer; may crash the worker (`crash()`) before it goes. */
  toPeer?(f: RelayFrame, crash: () => void): void;
}

/** A Node worker whose wire carries `faults`. */
export function faultyWorker(o: NodeWorkerOptions, faults: WireFaults): WorkerClient {
  const base = nodeWorkerOptions(o);
  let worker: WorkerClient | null = null;
  const crash = () => worker!.crash();
  // What the wire has said so far: the model, each phase's chunk size and latest round.
  let model: ModelConfig | null = null;
  const chunkOf: Record<Net, number> = { D: 0, G: 0 };
  const roundOf: Record<Net, number> = { D: -1, G: -1 };
  const note = (m: Message) => {
    if (m.k === Kind.Challenge) model = m.model;
    if (m.k === Kind.Reduce) chunkOf[m.phase] = m.chunk;
    if (m.k === Kind.Task) roundOf[m.phase] = m.round;
  };

  const connect: Connect = (url, h) => {
    let gate: Promise<unknown> = Promise.resolve();
    let stalled = false;
    return base.connect(url, {
      ...h,
      onMessage: (frame, binary) => {
        let m: Message | null = null;
        try {
          m = decode(frame);
        } catch {
          // The worker itself refuses what does not decode.
        }
        if (m) note(m);
        const act = m && !stalled ? faults.inbound?.(m) : undefined;
        if (act === 'crash') return crash();
        if (act === 'stall') stalled = true;
        if (stalled) return;
        if (act instanceof Promise) gate = gate.then(() => act);
        gate = gate.then(() => h.onMessage(frame, binary));
      },
    });
  };

  const relay: Relay | undefined = base.relay && faults.toPeer ? {
    ...base.relay,
    send(peer, url, frame) {
      const m = decode(frame);
      if (m.k === Kind.Chunk || m.k === Kind.WeightsChunk) {
        const phase = m.k === Kind.Chunk ? m.phase : m.net;
        const chunk = chunkOf[phase];
        const of = model && chunk ? chunkCount(netLayout(model, phase).total, chunk) : 0;
        const what = m.k === Kind.WeightsChunk ? 'weights' : m.partial ? 'partial' : 'part';
        faults.toPeer!({ what, chunk: chunk ? m.offset / chunk : 0, of, round: m.k === Kind.Chunk ? m.round : roundOf[phase], phase }, crash);
      }
      base.relay!.send(peer, url, frame);
    },
  } : base.relay;

  worker = new WorkerClient({ ...base, connect, relay });
  return worker;
}
