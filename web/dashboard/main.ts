/**
 * The dashboard page: watches a training run (or several finished ones) as a read-only observer.
 *
 *   connection.ts  the WebSocket, handshake and reconnects
 *   store.ts       the runs: a snapshot, grown by deltas; grids as Blob URLs
 *   charts.ts      five uPlot charts, all runs overlaid
 *   views.ts       header, grid, workers, events
 *
 * Updates only mark what changed; one render pass draws it, at most 4 times a second, so a
 * backlog of deltas (or 10,000 rounds in a snapshot) costs one redraw, not one per message.
 */
import type { ObserverUpdate } from '../../shared/wire/observe.js';
import { Chart, CHARTS } from './charts.js';
import { Connection, tokenFromHash } from './connection.js';
import { Store, type Run } from './store.js';
import {
  $,
  onGridSlider,
  renderConfig,
  renderConnection,
  renderEvents,
  renderGrid,
  renderHeader,
  renderRunSelect,
  renderWorkers,
  showError,
} from './views.js';

const RENDER_INTERVAL_MS = 250;

const store = new Store();
let selected: number | null = null;
let charts: Chart[] = [];

const dirty = { runs: false, charts: false, panels: false };
let renderTimer: ReturnType<typeof setTimeout> | null = null;
let lastRender = 0;

function selectedRun(): Run | undefined {
  return selected === null ? undefined : store.get(selected);
}

function schedule(): void {
  if (renderTimer) return;
  const wait = Math.max(0, lastRender + RENDER_INTERVAL_MS - performance.now());
  renderTimer = setTimeout(render, wait);
}

function render(): void {
  renderTimer = null;
  const start = (lastRender = performance.now());
  const run = selectedRun();
  if (dirty.runs) renderRunSelect(store.runs, selected);
  if (dirty.runs || dirty.panels) {
    renderHeader(run);
    renderConfig(run);
    renderWorkers(run);
    renderEvents(run);
    renderGrid(run);
  }
  if (dirty.runs || dirty.charts) {
    for (const c of charts) {
      try {
        c.update(store.runs);
      } catch (e) {
        console.error(`chart ${c.def.key}:`, e);
      }
    }
  }
  dirty.runs = dirty.charts = dirty.panels = false;
  document.body.dataset.ready = store.runs.length > 0 ? 'true' : 'false';
  // Visible in the browser's performance tools (and to tests): what one redraw costs.
  performance.measure('dashboard-render', { start });
  if (performance.getEntriesByName('dashboard-render').length > 200) performance.clearMeasures('dashboard-render');
}

function onUpdate(u: ObserverUpdate): void {
  if (u.type === 'snapshot') {
    store.applySnapshot(u);
    if (selected === null || !store.get(selected)) selected = store.runs[0]?.data.id ?? null;
    dirty.runs = dirty.charts = dirty.panels = true;
  } else if (u.type === 'delta') {
    const before = store.get(u.run)?.chartVersion;
    const run = store.applyDelta(u);
    if (!run) return;
    if (run.chartVersion !== before) dirty.charts = true;
    if (run.data.id === selected) dirty.panels = true;
  } else {
    return;
  }
  schedule();
}

function onGrid(runId: number, name: string, png: Uint8Array): void {
  const run = store.addGrid(runId, name, png);
  if (run && run.data.id === selected) {
    dirty.panels = true;
    schedule();
  }
}

const connection = new Connection({
  onConnecting: () => store.newConnection(),
  onUpdate,
  onGrid,
  onState: (state, detail) => {
    renderConnection(state, detail);
    if (state === 'open') showError(null);
  },
  onFatal: (message) => showError(message),
  // Finished runs read from disk send nothing after their snapshot: no need to come back.
  shouldReconnect: () => !store.allFinished(),
});

function init(): void {
  charts = CHARTS.map((def) => new Chart(def, $(`[data-chart="${def.key}"]`)));
  $<HTMLSelectElement>('#run-select').addEventListener('change', (ev) => {
    selected = Number((ev.target as HTMLSelectElement).value);
    dirty.panels = true;
    schedule();
  });
  $<HTMLInputElement>('#grid-slider').addEventListener('input', () => onGridSlider(selectedRun()));
  $<HTMLFormElement>('#token-form').addEventListener('submit', (ev) => {
    ev.preventDefault();
    const input = $<HTMLInputElement>('#token-input');
    if (!input.value) return;
    // The token lives in the fragment, which never reaches the server; hashchange reconnects.
    location.hash = `token=${encodeURIComponent(input.value)}`;
    input.value = '';
  });
  let token = tokenFromHash();
  window.addEventListener('hashchange', () => {
    const t = tokenFromHash();
    if (t === token) return;
    token = t;
    showError(null);
    connection.restart();
  });
  renderHeader(undefined);
  renderGrid(undefined);
  renderEvents(undefined);
  renderWorkers(undefined);
  connection.start();
}

if (document.readyState === 'loading') document.addEventListener('DOMContentLoaded', init);
else init();
