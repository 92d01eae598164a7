/**
 * Observers: the dashboard's read-only view of runs. A RunView holds what the page shows of one
 * run (shared/wire/observe.ts), fed live by the coordinator or read back from a run directory; the
 * ObserverHub proves each observer's token like a worker's, sends it a snapshot, then throttled
 * deltas and the sample grids.
 *
 * Invariants:
 * - An observer can send nothing but its handshake: any later frame closes it.
 * - Updates go out at most every `intervalMs`, and only to an observer whose socket has less than
 *   `maxBufferedBytes` waiting: a slow or stalled observer falls behind (it gets everything it
 *   missed in its next update) and never makes a round wait.
 */
import { readFileSync, readdirSync } from 'node:fs';
import { basename, join } from 'node:path';
import { WebSocket } from 'ws';
import { Kind, decode, encode } from '../../shared/wire/codec.js';
import { GanError, asGanError } from '../../shared/wire/errors.js';
import { Challenger, handshakeDeadline, refuse } from '../../shared/wire/handshake.js';
import { isConditional, type ModelConfig } from '../../shared/compute/model.js';
import {
  type Delta, type EpochLine, type EvalLine, METRIC_COLUMNS, type MetricColumns, type RunData, type RunEvent, type RunStatus, type Snapshot, type WorkerRow,
} from '../../shared/wire/observe.js';
import type { RoundMetrics } from '../metrics.js';
import { type RunDir, readJsonl } from '../run-dir.js';
import { roundPlan } from '../sharding.js';
import type { WorkerConn, WorkerPool } from '../worker-pool.js';

const emptyColumns = (): MetricColumns => Object.fromEntries(METRIC_COLUMNS.map((k) => [k, []])) as unknown as MetricColumns;

/** At most this many events are kept (the oldest go first). */
const MAX_EVENTS = 2000;

/** The page's data for one run, and how far each observer has seen it. */
export class RunView {
  readonly data: RunData;
  /** PNG bytes of each grid, by name. */
  readonly pngs = new Map<string, Uint8Array>();
  /** Lengths of the append-only lists; an observer's cursor is a copy of these. */
  private droppedEvents = 0;
  private recent: number[] = [];
  /** Where each new event is also written (the live run's events.jsonl). */
  private eventSink: ((e: RunEvent) => void) | null = null;

  constructor(id: number, name: string, live: boolean, config: Record<string, unknown>, status: RunStatus) {
    const model = config.model as ModelConfig | undefined;
    this.data = {
      id, name, live, config, status,
      globalBatch: Number(config.workers ?? 0) * Number(config.batchSize ?? 0),
      conditional: model ? isConditional(model) : false,
      metrics: emptyColumns(), epochs: [], evals: [], grids: [], workers: [], events: [],
    };
  }

  /** The view of the run this process trains; a resumed run starts with what its directory holds. */
  static live(config: Record<string, unknown>, at: { round: number; epoch: number; totalRounds: number; roundsPerEpoch: number }, dir: RunDir, resumed: boolean): RunView {
    const view = new RunView(0, basename(dir.path), true, config, {
      state: 'waiting', round: at.round, epoch: at.epoch, epochs: Number(config.epochs), totalRounds: at.totalRounds, roundsPerEpoch: at.roundsPerEpoch,
      etaS: null, startedAt: Date.now(), elapsedS: 0,
    });
    if (resumed) {
      const past = RunView.fromDir(0, dir.path);
      for (const m of dir.metrics()) view.addRound(m);
      for (const e of past.data.epochs) view.addEpoch(e);
      for (const e of past.data.evals) view.addEval(e);
      for (const g of past.data.grids) view.addGrid(g, past.pngs.get(g)!);
      for (const e of past.data.events) view.addEvent(e);
    }
    view.eventSink = (e) => {
      try {
        dir.appendEvent(e);
      } catch {
        // The event log is a record for the dashboard; a full disk is reported (E_DISK) by the
        // metrics and checkpoint writes that end the run, not by this one.
      }
    };
    if (resumed) {
      view.addEvent({ kind: 'resume', text: `resumed at round ${at.round}, epoch ${at.epoch + 1}` });
    } else {
      const m = config.model as ModelConfig;
      view.addEvent({ kind: 'start', text: `${m.kind}: ${String(config.workers)} workers x batch ${String(config.batchSize)}, ${String(config.epochs)} epochs` });
    }
    return view;
  }

  /** The run ended: how, and why when it did not simply finish. */
  end(state: RunStatus['state'], detail?: string): void {
    const st = this.data.status;
    st.state = state;
    st.elapsedS = (Date.now() - st.startedAt) / 1000;
    st.etaS = null;
    st.detail = detail;
    for (const w of this.data.workers) {
      if (w.state !== 'live' && w.state !== 'joining') continue;
      w.state = 'left';
      w.reason = `run ${state}`;
      w.leftAt = Date.now();
    }
    this.addEvent({ kind: 'stop', text: detail ?? `run ${state}` });
  }

  /** A finished (or interrupted) run, from its directory. */
  static fromDir(id: number, dir: string): RunView {
    let config: Record<string, unknown>;
    try {
      config = JSON.parse(readFileSync(join(dir, 'config.json'), 'utf8')) as Record<string, unknown>;
    } catch (e) {
      throw new GanError('E_ARGS', `${dir}: not a run directory (config.json: ${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
    }
    let summary: Record<string, unknown> | undefined;
    try {
      summary = JSON.parse(readFileSync(join(dir, 'summary.json'), 'utf8')) as Record<string, unknown>;
    } catch {
      summary = undefined;
    }
    const metrics = readJsonl<RoundMetrics>(join(dir, 'metrics.jsonl'));
    const epochs = Number(config.epochs ?? 0);
    // What the run planned; a run stopped by --max-rounds shows how far it got of that.
    const rounds = roundPlan(Number(config.samples ?? 0), { workers: Number(config.workers ?? 1), batchSize: Number(config.batchSize ?? 1), epochs, maxRounds: Number(config.maxRounds ?? 0), syncEvery: Number(config.syncEvery ?? 1) });
    const stopped = summary?.stopped as string | null | undefined;
    const ended = (summary?.state as RunStatus['state'] | undefined) ?? (stopped ? 'stopped' : 'finished');
    const v = new RunView(id, basename(dir), false, config, {
      state: summary ? ended : 'stopped',
      round: metrics.length ? metrics[metrics.length - 1]!.round + 1 : 0,
      epoch: 0, epochs, totalRounds: rounds.total, roundsPerEpoch: rounds.perEpoch, etaS: null,
      startedAt: 0, elapsedS: Number(summary?.seconds ?? 0),
      detail: summary ? (stopped ? `stopped: ${stopped}` : undefined) : 'no summary.json: the run did not end cleanly',
    });
    for (const m of metrics) v.addRound(m);
    for (const e of readJsonl<EpochLine>(join(dir, 'epochs.jsonl'))) v.addEpoch(e);
    v.data.status.epoch = v.data.epochs.length;
    for (const e of readJsonl<EvalLine>(join(dir, 'eval.jsonl'))) v.addEval(e);
    for (const e of readJsonl<RunEvent>(join(dir, 'events.jsonl'))) v.addEvent(e);
    if (Array.isArray(summary?.workers)) v.data.workers.push(...(summary.workers as WorkerRow[]));
    let names: string[] = [];
    try {
      names = readdirSync(join(dir, 'samples')).filter((n) => n.endsWith('.png')).sort();
    } catch {
      // No grids yet.
    }
    // final.png after every epoch-NNN.png.
    names.sort((a, b) => Number(a === 'final.png') - Number(b === 'final.png') || a.localeCompare(b));
    for (const n of names) v.addGrid(n, readFileSync(join(dir, 'samples', n)));
    return v;
  }

  addRound(m: RoundMetrics): void {
    const cols = this.data.metrics;
    for (const k of METRIC_COLUMNS) (cols[k] as number[]).push(Number.isFinite(m[k]) ? m[k] : NaN);
    const now = Date.now();
    this.recent.push(now);
    if (this.recent.length > 50) this.recent.shift();
    const s = this.data.status;
    s.round = m.round + 1;
    // ETA from the recent pace, so waiting for workers at the start does not count.
    const span = (this.recent[this.recent.length - 1]! - this.recent[0]!) / 1000;
    const rate = this.recent.length > 1 && span > 0 ? (this.recent.length - 1) / span : 0;
    s.etaS = rate > 0 && s.totalRounds > s.round ? (s.totalRounds - s.round) / rate : null;
  }

  addEpoch(e: EpochLine): void {
    this.data.epochs.push(e);
    this.data.status.epoch = e.epoch + 1;
  }

  addEval(e: EvalLine): void {
    this.data.evals.push(e);
  }

  addGrid(name: string, png: Uint8Array): void {
    if (!this.pngs.has(name)) this.data.grids.push(name);
    this.pngs.set(name, png);
  }

  /** Adds an event, stamped now unless it carries its own time (one read back from a run directory). */
  addEvent(e: Omit<RunEvent, 't'> & { t?: number }): void {
    const ev: RunEvent = { ...e, t: e.t ?? Date.now() };
    this.data.events.push(ev);
    this.eventSink?.(ev);
    if (this.data.events.length > MAX_EVENTS) {
      this.data.events.shift();
      this.droppedEvents++;
    }
  }

  /** The row of worker `id` (made on first use). */
  worker(id: number, init: () => WorkerRow): WorkerRow {
    let w = this.data.workers.find((x) => x.id === id);
    if (!w) this.data.workers.push((w = init()));
    return w;
  }

  /** Where an observer is: how many items of each append-only list it has (events counted from the start). */
  cursor(): Cursor {
    const d = this.data;
    return { rounds: d.metrics.round.length, epochs: d.epochs.length, evals: d.evals.length, grids: d.grids.length, events: this.droppedEvents + d.events.length };
  }

  /** Everything after `c`. */
  delta(c: Cursor): Delta {
    const d = this.data;
    const metrics = emptyColumns();
    for (const k of METRIC_COLUMNS) metrics[k] = (d.metrics[k] as number[]).slice(c.rounds);
    return {
      type: 'delta', run: d.id, status: d.status, metrics,
      epochs: d.epochs.slice(c.epochs), evals: d.evals.slice(c.evals), grids: d.grids.slice(c.grids),
      workers: d.workers, events: d.events.slice(Math.max(0, c.events - this.droppedEvents)),
    };
  }
}

interface Cursor {
  rounds: number;
  epochs: number;
  evals: number;
  grids: number;
  events: number;
}

interface Observer {
  ws: WebSocket;
  /** Per run: what it has been sent; null until its snapshot went out. */
  cursors: Cursor[] | null;
  /** When it was last sent anything (the status of a quiet live run still moves: elapsed time, ETA). */
  lastSent: number;
}

export interface HubOptions {
  token?: string;
  /** Model the Challenge names (observers ignore it; workers need it). */
  model: ModelConfig;
  runs: RunView[];
  intervalMs?: number;
  maxBufferedBytes?: number;
  log?: (line: string) => void;
}

export class ObserverHub {
  /** Updates sent, and updates held back because an observer had not read the last ones. */
  readonly sent = { updates: 0, skipped: 0 };
  private observers = new Set<Observer>();
  private timer: NodeJS.Timeout;
  private readonly maxBuffered: number;

  constructor(private readonly o: HubOptions) {
    this.maxBuffered = o.maxBufferedBytes ?? 1 << 20;
    this.timer = setInterval(() => this.tick(), o.intervalMs ?? 500);
    this.timer.unref();
  }

  get count(): number {
    return this.observers.size;
  }

  /** Bytes waiting in the socket of each observer (what a stalled one holds is bounded). */
  buffered(): number[] {
    return [...this.observers].map((o) => o.ws.bufferedAmount);
  }

  /** A WebSocket upgraded at /observe: challenge it; once it proves the token (`proven` is told), it watches. */
  accept(ws: WebSocket, proven?: () => void): void {
    const challenger = new Challenger({ token: this.o.token, model: this.o.model });
    const deadline = handshakeDeadline('Observe', (e) => refuse(ws, e));
    let answered = false;
    let ob: Observer | null = null;
    ws.on('message', (data, isBinary) => {
      if (answered) return refuse(ws, new GanError('E_UNEXPECTED', 'observers may send nothing after their handshake'));
      answered = true;
      deadline.clear();
      void (async () => {
        if (!isBinary) throw new GanError('E_MALFORMED', 'text frames are not part of the protocol');
        await challenger.verify(decode(data as Buffer), Kind.Observe);
        if (ws.readyState !== WebSocket.OPEN) return;
        proven?.();
        ob = { ws, cursors: null, lastSent: 0 };
        this.observers.add(ob);
        this.send(ob);
      })().catch((e: unknown) => refuse(ws, asGanError(e, 'E_MALFORMED')));
    });
    ws.on('close', () => {
      deadline.clear();
      if (ob) this.observers.delete(ob);
    });
    ws.on('error', () => {});
    ws.send(encode(challenger.challenge));
  }

  /** Send every observer what changed now (the end of a run), not at the next tick. */
  flush(): void {
    this.tick();
  }

  close(): void {
    clearInterval(this.timer);
    this.tick();
    for (const ob of this.observers) ob.ws.close(1000, 'E_DONE: run finished');
    this.observers.clear();
  }

  private tick(): void {
    for (const ob of this.observers) this.send(ob);
  }

  /** The snapshot (first time) or what changed, unless the observer still has too much unread. */
  private send(ob: Observer): void {
    if (ob.ws.readyState !== WebSocket.OPEN) return;
    if (ob.ws.bufferedAmount > this.maxBuffered) {
      this.sent.skipped++;
      return;
    }
    const runs = this.o.runs;
    if (!ob.cursors) {
      const snap: Snapshot = { type: 'snapshot', runs: runs.map((r) => r.data) };
      this.frame(ob, snap);
      runs.forEach((r) => r.data.grids.forEach((name) => ob.ws.send(encode({ k: Kind.Grid, run: r.data.id, name, png: r.pngs.get(name)! }))));
      ob.cursors = runs.map((r) => r.cursor());
      return;
    }
    const quiet = Date.now() - ob.lastSent > 2000;
    runs.forEach((r, i) => {
      if (!r.data.live) return;
      const c = ob.cursors![i]!;
      const now = r.cursor();
      const changed = now.rounds !== c.rounds || now.events !== c.events || now.epochs !== c.epochs || now.evals !== c.evals || now.grids !== c.grids;
      if (!changed && !quiet) return;
      if (r.data.status.state === 'training') r.data.status.elapsedS = (Date.now() - r.data.status.startedAt) / 1000;
      const d = r.delta(c);
      this.frame(ob, d);
      for (const name of d.grids) ob.ws.send(encode({ k: Kind.Grid, run: r.data.id, name, png: r.pngs.get(name)! }));
      ob.cursors![i] = now;
    });
  }

  private frame(ob: Observer, u: Snapshot | Delta): void {
    ob.lastSent = Date.now();
    this.sent.updates++;
    // NaN is not JSON: a missing value travels as null and is drawn as a gap.
    ob.ws.send(encode({ k: Kind.Update, body: new TextEncoder().encode(JSON.stringify(u)) }));
  }
}

/** Keep a run's worker table and event log up to date from its worker pool's events. */
export function watchWorkers(view: RunView, pool: WorkerPool): void {
  const row = (c: WorkerConn) => view.worker(c.id, () => ({
    id: c.id, host: c.host, backend: c.backend, state: 'joining', joinedAt: Date.now(), bytesIn: 0, bytesOut: 0, phases: 0,
  }));
  pool.on('connected', (c) => {
    row(c);
    view.addEvent({ kind: 'join', worker: c.id, text: `${c.label} connected from ${c.addr}` });
  });
  pool.on('report', (c, m) => {
    const r = row(c);
    r.lastComputeMs = m.computeMs;
    r.phases++;
  });
  pool.on('left', (c, wasLive, reason) => {
    const r = row(c);
    r.state = reason.startsWith('E_') ? 'dropped' : 'left';
    r.reason = reason;
    r.leftAt = Date.now();
    r.bytesIn = c.bytesIn;
    r.bytesOut = c.bytesOut;
    const what = reason.startsWith('E_') ? 'drop' : 'leave';
    view.addEvent({ kind: what, worker: c.id, code: reason.startsWith('E_') ? reason : undefined, text: `${c.label} ${what === 'drop' ? 'dropped' : 'left'} (${reason})${wasLive ? '' : ' before its first round'}` });
  });
}

/** After a round: each member's throughput and bytes so far. */
export function noteRound(view: RunView, pool: WorkerPool, m: RoundMetrics, counts: Map<number, number>): void {
  for (const c of pool.live()) {
    const r = view.worker(c.id, () => ({ id: c.id, host: c.host, backend: c.backend, state: 'live', joinedAt: Date.now(), bytesIn: 0, bytesOut: 0, phases: 0 }));
    r.state = 'live';
    r.bytesIn = c.bytesIn;
    r.bytesOut = c.bytesOut;
    const n = counts.get(c.id);
    if (n !== undefined && m.round_ms > 0) r.samplesPerS = n / (m.round_ms / 1000);
  }
  view.addRound(m);
}
