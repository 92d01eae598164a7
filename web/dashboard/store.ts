/**
 * What the page knows: every run from the last snapshot, grown by deltas (rows appended to the
 * column arrays in place, so a chart of a single run draws the very arrays the store holds), and
 * the sample grids received, as Blob URLs.
 */
import { type Delta, METRIC_COLUMNS, type MetricColumns, type RunData, type Snapshot } from '../../shared/wire/observe.js';

/** Events kept per run in the page. */
const MAX_EVENTS = 10_000;

/** One colour per run, in snapshot order (distinguishable on white). */
export const RUN_COLOURS = ['#1f6fb4', '#d1495b', '#2a9d5b', '#8e5bb5', '#e08a1e', '#1aa3b8', '#7a5230', '#d45fae'];

export interface Run {
  data: RunData;
  colour: string;
  /** Grid name -> Blob URL of its PNG. */
  gridUrls: Map<string, string>;
  /** Bumped on every change the charts draw (metrics, evals). */
  chartVersion: number;
}

/**
 * Column arrays as received (JSON carries NaN as null: a gap); a column that is missing or not as
 * long as `round` becomes all nulls rather than misaligning the others.
 */
function normaliseMetrics(m: Partial<MetricColumns> | undefined): MetricColumns {
  const src = (m ?? {}) as Partial<Record<keyof MetricColumns, unknown>>;
  const round = Array.isArray(src.round) ? (src.round as number[]) : [];
  const out = {} as MetricColumns;
  for (const col of METRIC_COLUMNS) {
    const a = src[col];
    out[col] = Array.isArray(a) && a.length === round.length ? (a as number[]) : new Array<number>(round.length).fill(null as unknown as number);
  }
  out.round = round;
  return out;
}

function appendAll<T>(to: T[], from: readonly T[] | undefined): void {
  if (!from) return;
  // A loop rather than push(...from): a long backlog would overflow the argument limit.
  for (let i = 0; i < from.length; i++) to.push(from[i]!);
}

export class Store {
  runs: Run[] = [];
  private byId = new Map<number, Run>();
  /** Whether a snapshot has arrived on this connection. */
  private haveSnapshot = false;
  /** Grids that arrived before the snapshot (the contract sends the snapshot first; this is slack). */
  private early: { run: number; name: string; png: Uint8Array }[] = [];

  /** Replace everything with a snapshot. */
  applySnapshot(s: Snapshot): void {
    this.clear();
    this.haveSnapshot = true;
    s.runs.forEach((d, i) => {
      const data: RunData = {
        ...d,
        config: d.config ?? {},
        metrics: normaliseMetrics(d.metrics),
        epochs: [...(d.epochs ?? [])],
        evals: [...(d.evals ?? [])],
        grids: [...new Set(d.grids ?? [])],
        workers: d.workers ?? [],
        events: [...(d.events ?? [])],
      };
      const run: Run = { data, colour: RUN_COLOURS[i % RUN_COLOURS.length]!, gridUrls: new Map(), chartVersion: 1 };
      this.runs.push(run);
      this.byId.set(d.id, run);
    });
    const early = this.early;
    this.early = [];
    for (const g of early) this.addGrid(g.run, g.name, g.png);
  }

  /** Append a delta to its run; returns the run, or undefined for a run the snapshot did not name. */
  applyDelta(d: Delta): Run | undefined {
    const run = this.byId.get(d.run);
    if (!run) return undefined;
    const r = run.data;
    if (d.status) r.status = d.status;
    if (d.workers) r.workers = d.workers;
    const m = d.metrics ? normaliseMetrics(d.metrics) : undefined;
    if (m && m.round.length > 0) {
      for (const col of METRIC_COLUMNS) appendAll(r.metrics[col], m[col]);
      run.chartVersion++;
    }
    appendAll(r.epochs, d.epochs);
    if (d.evals?.length) {
      appendAll(r.evals, d.evals);
      run.chartVersion++;
    }
    for (const name of d.grids ?? []) if (!r.grids.includes(name)) r.grids.push(name);
    appendAll(r.events, d.events);
    // A very long run: keep the newest events (the page shows at most 1,000 of them).
    if (r.events.length > MAX_EVENTS) r.events.splice(0, r.events.length - MAX_EVENTS / 2);
    return run;
  }

  /** A grid's PNG arrived: keep it as a Blob URL (replacing, and revoking, an older copy). */
  addGrid(runId: number, name: string, png: Uint8Array): Run | undefined {
    const run = this.byId.get(runId);
    if (!run) {
      if (!this.haveSnapshot && this.early.length < 1000) this.early.push({ run: runId, name, png: png.slice() });
      return undefined;
    }
    const old = run.gridUrls.get(name);
    if (old) URL.revokeObjectURL(old);
    run.gridUrls.set(name, URL.createObjectURL(new Blob([png as Uint8Array<ArrayBuffer>], { type: 'image/png' })));
    // A grid the updates have not named yet still shows, at the end.
    if (!run.data.grids.includes(name)) run.data.grids.push(name);
    return run;
  }

  /** A new connection: keep showing what we have until its snapshot replaces it. */
  newConnection(): void {
    this.haveSnapshot = false;
    this.early = [];
  }

  get(id: number): Run | undefined {
    return this.byId.get(id);
  }

  /** Every run is read from disk (a finished-run dashboard): nothing more will come after the snapshot. */
  allFinished(): boolean {
    return this.runs.length > 0 && this.runs.every((r) => !r.data.live);
  }

  clear(): void {
    for (const run of this.runs) for (const url of run.gridUrls.values()) URL.revokeObjectURL(url);
    this.runs = [];
    this.byId.clear();
    this.haveSnapshot = false;
  }
}
