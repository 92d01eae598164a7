/**
 * The five charts, drawn with uPlot. Why uPlot: it is small (about 50 KB minified, bundled here,
 * no CDN), fast (canvas, with per-pixel decimation, so 10,000+ rounds per series redraw in a few
 * milliseconds), made for time series stored as columns (exactly how observe.ts sends metrics), and
 * needs no framework.
 *
 * One run: each series gets its own colour and the chart draws the store's own column arrays (a
 * delta appends to them in place; setData only re-reads them). Several runs: they are overlaid,
 * one colour per run and one dash pattern per quantity, aligned on the union of their x values
 * (rounds, or epochs for evaluations); a run's missing points are `undefined`, which uPlot spans,
 * while a null the run itself sent stays a gap.
 *
 * Every chart container carries data-points = the number of x values it currently draws.
 * Drag to zoom on x (the zoom is kept while new rounds arrive); double-click to see everything.
 */
import uPlot from 'uplot';
import type { EvalLine, MetricColumns } from '../../shared/wire/observe.js';
import { num } from './format.js';
import type { Run } from './store.js';

export type ChartKey = 'loss' | 'd' | 'throughput' | 'time' | 'eval';

type Column = ArrayLike<number | null>;

interface Quantity {
  label: string;
  /** Its colour when one run is shown. */
  colour: string;
  scale: string;
  /** Its values for one run, aligned with the run's x values. */
  get(run: Run): Column;
  /** Whether this run has the quantity at all (e.g. conditional accuracy). */
  present?(run: Run): boolean;
  /** Drawn only when one run is shown (a reference line that would clutter an overlay). */
  singleOnly?: boolean;
}

interface ChartDef {
  key: ChartKey;
  x: 'round' | 'epoch';
  xs(run: Run): ArrayLike<number>;
  /** Whether the run has anything for this chart (runs without evaluations stay off the eval chart). */
  has?(run: Run): boolean;
  quantities: Quantity[];
  scales: uPlot.Scales;
  axes: uPlot.Axis[];
}

const metric = (col: keyof MetricColumns) => (run: Run): Column => run.data.metrics[col];

/** Eval columns are rebuilt per draw: a few hundred rows at most. */
function evalColumn(pick: (e: EvalLine) => number | null | undefined) {
  return (run: Run): Column => run.data.evals.map((e) => {
    const v = pick(e);
    return typeof v === 'number' && Number.isFinite(v) ? v : null;
  });
}

const axisStyle: Partial<uPlot.Axis> = {
  stroke: '#555',
  grid: { stroke: '#e6e6e6', width: 1 },
  ticks: { stroke: '#ccc', width: 1 },
  font: '11px system-ui, sans-serif',
  labelFont: '12px system-ui, sans-serif',
};

const yAxis = (label: string, extra: Partial<uPlot.Axis> = {}): uPlot.Axis => ({ ...axisStyle, label, size: 56, labelSize: 18, ...extra });
const xAxis = (label: string): uPlot.Axis => ({ ...axisStyle, label, labelSize: 18 });

const percent = (_u: uPlot, splits: number[]) => splits.map((v) => `${Math.round(v * 100)}%`);

/** From zero to a little above the largest value shown. */
const fromZero: uPlot.Range.Function = (_u, _min, max) => [0, max > 0 ? max * 1.05 : 1];

/** A chart of per-round metrics, on one y scale. */
function perRound(key: ChartKey, quantities: [string, string, keyof MetricColumns][], yLabel: string, y: uPlot.Scale): ChartDef {
  return {
    key,
    x: 'round',
    xs: (r) => r.data.metrics.round,
    quantities: quantities.map(([label, colour, col]) => ({ label, colour, scale: 'y', get: metric(col) })),
    scales: { x: { time: false }, y },
    axes: [xAxis('round'), yAxis(yLabel)],
  };
}

export const CHARTS: ChartDef[] = [
  perRound('loss', [['D loss', '#1f6fb4', 'd_loss'], ['G loss', '#e08a1e', 'g_loss']], 'loss', {}),
  perRound('d', [['mean D(x)', '#2a9d5b', 'd_real'], ['mean D(G(z))', '#d1495b', 'd_fake']], 'D output', { range: [0, 1] }),
  perRound('throughput', [['samples/s', '#1f6fb4', 'samples_per_s']], 'samples/s', { range: fromZero }),
  perRound('time', [['compute', '#1f6fb4', 'compute_ms'], ['transfer', '#e08a1e', 'transfer_ms'], ['coordinator', '#2a9d5b', 'reduce_ms']], 'ms per round', { range: fromZero }),
  {
    key: 'eval',
    x: 'epoch',
    xs: (r) => r.data.evals.map((e) => e.epoch),
    has: (r) => r.data.evals.length > 0,
    quantities: [
      { label: 'Fréchet distance', colour: '#8e5bb5', scale: 'fd', get: evalColumn((e) => e.fd) },
      {
        label: 'FD floor (real vs real)',
        colour: '#b9a3d6',
        scale: 'fd',
        get: evalColumn((e) => e.fdFloor),
        singleOnly: true,
        present: (r) => r.data.evals.some((e) => typeof e.fdFloor === 'number'),
      },
      { label: 'classifier score', colour: '#2a9d5b', scale: 'score', get: evalColumn((e) => e.classifierScore) },
      {
        label: 'conditional accuracy',
        colour: '#d1495b',
        scale: 'acc',
        get: evalColumn((e) => e.conditionalAccuracy),
        present: (r) => r.data.evals.some((e) => typeof e.conditionalAccuracy === 'number'),
      },
    ],
    scales: {
      x: { time: false },
      fd: { range: fromZero },
      score: { range: [0, 10] },
      acc: { range: [0, 1] },
    },
    axes: [
      xAxis('epoch'),
      yAxis('Fréchet distance', { scale: 'fd' }),
      yAxis('classifier score (1–10)', { scale: 'score', side: 1, grid: { show: false } }),
      yAxis('conditional accuracy', { scale: 'acc', side: 1, grid: { show: false }, values: percent }),
    ],
  },
];

/** Dash patterns that tell quantities apart when colour names the run. */
const DASHES: (number[] | undefined)[] = [undefined, [7, 4], [2, 3], [10, 3, 2, 3]];

/**
 * Where each run's rows fall on the union of the runs' x values (each run's x ascending): x is
 * the union, and idx[r][j] is run r's row at x[j], or -1 where run r has no point. A repeated x
 * within a run keeps its last row; an x that is not a number is skipped.
 */
export interface Alignment {
  x: number[];
  idx: Int32Array[];
}

export function alignIndex(xsList: ArrayLike<number>[]): Alignment {
  const k = xsList.length;
  const pos = new Array<number>(k).fill(0);
  let total = 0;
  for (const xs of xsList) total += xs.length;
  const x: number[] = [];
  const idx = xsList.map(() => new Int32Array(total));
  for (;;) {
    let m = Infinity;
    for (let r = 0; r < k; r++) {
      const xs = xsList[r]!;
      let i = pos[r]!;
      while (i < xs.length && typeof xs[i] !== 'number') i++;
      pos[r] = i;
      if (i < xs.length && xs[i]! < m) m = xs[i]!;
    }
    if (m === Infinity) break;
    const j = x.length;
    x.push(m);
    for (let r = 0; r < k; r++) {
      const xs = xsList[r]!;
      let i = pos[r]!;
      if (i < xs.length && xs[i] === m) {
        while (i + 1 < xs.length && xs[i + 1] === m) i++;
        idx[r]![j] = i;
        pos[r] = i + 1;
      } else {
        idx[r]![j] = -1;
      }
    }
  }
  return { x, idx: idx.map((a) => a.subarray(0, x.length)) };
}

/** A run's column on the union x: undefined (spanned by uPlot) where the run has no point. */
export function pick(col: Column, idx: Int32Array): (number | null | undefined)[] {
  const out = new Array<number | null | undefined>(idx.length);
  for (let j = 0; j < idx.length; j++) {
    const i = idx[j]!;
    out[j] = i < 0 ? undefined : (col[i] ?? null);
  }
  return out;
}

/** The four round charts align the same arrays: compute it once per change of their lengths. */
let lastAlignment: { xs: ArrayLike<number>[]; lengths: number[]; result: Alignment } | null = null;

function alignCached(xsList: ArrayLike<number>[]): Alignment {
  const c = lastAlignment;
  if (c && c.xs.length === xsList.length && xsList.every((xs, r) => xs === c.xs[r] && xs.length === c.lengths[r])) return c.result;
  const result = alignIndex(xsList);
  lastAlignment = { xs: xsList, lengths: xsList.map((xs) => xs.length), result };
  return result;
}

/** [x, run0 q0, run0 q1, ..., run1 q0, ...] on the union of the runs' x values. */
export function align(xsList: ArrayLike<number>[], ysList: Column[][]): uPlot.AlignedData {
  const { x, idx } = alignCached(xsList);
  return [x, ...ysList.flatMap((ys, r) => ys.map((col) => pick(col, idx[r]!)))] as uPlot.AlignedData;
}

const HEIGHT = 230;

export class Chart {
  private plot: uPlot | null = null;
  private signature = '';
  /** The x range the user zoomed to, kept across redraws until a double-click resets it. */
  private zoom: { min: number; max: number } | null = null;
  private readonly target: HTMLElement;
  private readonly resize: ResizeObserver;

  constructor(readonly def: ChartDef, readonly el: HTMLElement) {
    this.target = el.querySelector<HTMLElement>('.plot') ?? el;
    this.resize = new ResizeObserver((entries) => {
      const box = entries[entries.length - 1]?.contentRect;
      if (!box) return;
      this.knownWidth = Math.floor(box.width);
      if (this.plot && this.knownWidth > 0 && this.knownWidth !== this.plot.width) this.plot.setSize({ width: this.knownWidth, height: HEIGHT });
    });
    this.resize.observe(this.target);
    el.dataset.points = '0';
  }

  /** The plot's width, from the resize observer: reading clientWidth on every redraw would force a layout. */
  private knownWidth = 0;

  private width(): number {
    if (this.knownWidth <= 0) this.knownWidth = Math.floor(this.target.clientWidth);
    return this.knownWidth;
  }

  /** Redraw from the runs' current arrays (call at most a few times per second). */
  update(allRuns: Run[]): void {
    const d = this.def;
    const runs = d.has ? allRuns.filter((r) => d.has!(r)) : allRuns;
    const many = runs.length > 1;
    // Per run, the quantities it has; the chart's quantities are their union, in definition order.
    const own = runs.map((r) => d.quantities.filter((q) => (!q.singleOnly || !many) && (!q.present || q.present(r))));
    const quantities = d.quantities.filter((q) => own.some((list) => list.includes(q)));
    const signature = JSON.stringify([runs.map((r, i) => [r.data.id, r.data.name, r.colour, own[i]!.map((q) => q.label)]), quantities.map((q) => q.label)]);

    let data: uPlot.AlignedData;
    if (!many) {
      const run = runs[0];
      data = run ? ([d.xs(run), ...own[0]!.map((q) => q.get(run))] as uPlot.AlignedData) : [[]];
    } else {
      data = align(runs.map((r) => d.xs(r)), runs.map((r, i) => own[i]!.map((q) => q.get(r))));
    }
    const points = data[0].length;
    this.el.dataset.points = String(points);

    // The evaluation chart only appears once there are evaluations.
    if (d.key === 'eval') {
      this.el.hidden = points === 0;
      if (points === 0) return;
    }
    const width = this.width();
    if (width <= 0) return;

    if (!this.plot || signature !== this.signature) {
      this.plot?.destroy();
      this.plot = null;
      this.zoom = null;
      this.signature = signature;
      if (runs.length === 0) return;
      const series: uPlot.Series[] = [{ label: d.x, value: (_u, v) => (v === null || v === undefined ? '—' : String(v)) }];
      runs.forEach((run, ri) => {
        for (const q of own[ri]!) {
          const qi = quantities.indexOf(q);
          series.push({
            label: many ? `${run.data.name}: ${q.label}` : q.label,
            stroke: many ? run.colour : q.colour,
            dash: many ? DASHES[qi % DASHES.length] : q.singleOnly ? [2, 3] : undefined,
            width: 1.5,
            scale: q.scale,
            spanGaps: false,
            value: (_u, v) => (q.scale === 'acc' && typeof v === 'number' ? `${(v * 100).toFixed(1)}%` : num(v, 4)),
            points: { size: 5 },
          });
        }
      });
      const axes = d.axes.filter((a) => !a.scale || a.scale === 'x' || a.scale === 'y' || quantities.some((q) => q.scale === a.scale));
      const opts: uPlot.Options = {
        width,
        height: HEIGHT,
        series,
        scales: d.scales,
        axes,
        legend: { live: true },
        cursor: d.x === 'round' ? { sync: { key: 'rounds' } } : {},
        hooks: {
          setScale: [
            (u, key) => {
              if (key !== 'x') return;
              const xs = u.data[0];
              const lo = xs[0];
              const hi = xs[xs.length - 1];
              const { min, max } = u.scales.x!;
              if (lo === undefined || hi === undefined || min === undefined || max === undefined || min === null || max === null) return;
              const eps = (hi - lo) * 1e-9;
              this.zoom = min > lo + eps || max < hi - eps ? { min, max } : null;
            },
          ],
        },
      };
      this.plot = new uPlot(opts, data, this.target);
      return;
    }
    if (this.zoom) {
      const { min, max } = this.zoom;
      this.plot.setData(data, false);
      this.plot.setScale('x', { min, max });
    } else {
      this.plot.setData(data, true);
    }
  }

  destroy(): void {
    this.resize.disconnect();
    this.plot?.destroy();
    this.plot = null;
  }
}
