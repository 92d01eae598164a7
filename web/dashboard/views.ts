/**
 * The page's DOM outside the charts: header, configuration, sample grid, worker table, event log.
 * Everything the runs send is put into the page as text (textContent), never as markup: host
 * names and reasons come from workers.
 */
import type { RunEvent, WorkerRow } from '../../shared/wire/observe.js';
import { bytes, clock, DASH, duration, isoTime, num } from './format.js';
import type { Run } from './store.js';

export function $<T extends HTMLElement = HTMLElement>(sel: string, root: ParentNode = document): T {
  const el = root.querySelector<T>(sel);
  if (!el) throw new Error(`the page has no ${sel}`);
  return el;
}

function el<K extends keyof HTMLElementTagNameMap>(tag: K, text?: string, cls?: string): HTMLElementTagNameMap[K] {
  const e = document.createElement(tag);
  if (text !== undefined) e.textContent = text;
  if (cls) e.className = cls;
  return e;
}

function setValue(e: HTMLElement, text: string, value: string | number | null | undefined, total?: number): void {
  if (e.textContent !== text) e.textContent = text;
  e.dataset.value = value === null || value === undefined ? '' : String(value);
  if (total !== undefined) e.dataset.total = String(total);
}

/** Header: name, state, round, epoch, ETA, global batch, and the configuration. */
export function renderHeader(run: Run | undefined): void {
  const name = $('#run-name');
  const state = $('#state');
  if (!run) {
    name.textContent = 'waiting for data…';
    for (const sel of ['#state', '#round', '#epoch', '#eta', '#global-batch', '#elapsed', '#live-workers']) setValue($(sel), DASH, null);
    state.className = 'state';
    $('#detail').hidden = true;
    return;
  }
  const r = run.data;
  const s = r.status;
  name.textContent = r.name;
  name.style.setProperty('--run-colour', run.colour);
  document.title = `${r.name}: ${s.state} · GAN training`;
  setValue(state, s.state, s.state);
  state.className = `state state-${s.state}`;
  setValue($('#round'), `${s.round} / ${s.totalRounds}`, s.round, s.totalRounds);
  setValue($('#epoch'), `${s.epoch} / ${s.epochs}`, s.epoch, s.epochs);
  const ended = s.state === 'finished' || s.state === 'stopped' || s.state === 'failed';
  setValue($('#eta'), ended ? DASH : duration(s.etaS), s.etaS);
  setValue($('#global-batch'), String(r.globalBatch), r.globalBatch);
  setValue($('#elapsed'), duration(s.elapsedS), s.elapsedS);
  $('#elapsed').title = s.startedAt > 0 ? `started ${isoTime(s.startedAt)}` : '';
  const live = r.workers.filter((w) => w.state === 'live').length;
  setValue($('#live-workers'), String(live), live);
  const detail = $('#detail');
  detail.hidden = !s.detail;
  detail.textContent = s.detail ?? '';
  $('#source').textContent = r.live ? 'live' : 'from disk';
  $('#model').textContent = modelLabel(r.config, r.conditional);
  renderEpochCheck(run);
}

function modelLabel(config: Record<string, unknown>, conditional: boolean): string {
  const model = config.model as { kind?: unknown } | undefined;
  const kind = typeof model?.kind === 'string' ? model.kind : conditional ? 'conditional' : '';
  return kind ? `model ${kind}` : '';
}

/** One line on epochs.jsonl: were all samples used exactly once? */
function renderEpochCheck(run: Run): void {
  const e = $('#epoch-check');
  const epochs = run.data.epochs;
  if (epochs.length === 0) {
    e.textContent = '';
    e.className = '';
    return;
  }
  const bad = epochs.filter((x) => x.missing !== 0 || x.duplicated !== 0 || x.usedOnce !== x.samples);
  e.className = bad.length ? 'warn' : 'ok';
  e.textContent = bad.length
    ? `${bad.length} of ${epochs.length} epochs with missing or duplicated samples (first: epoch ${bad[0]!.epoch}, ${bad[0]!.missing} missing, ${bad[0]!.duplicated} duplicated)`
    : `${epochs.length} epoch${epochs.length === 1 ? '' : 's'} completed, every sample used exactly once`;
}

let shownConfig: unknown = null;
export function renderConfig(run: Run | undefined): void {
  const config = run?.data.config ?? null;
  if (config === shownConfig) return;
  shownConfig = config;
  $('#config pre').textContent = config ? JSON.stringify(config, null, 2) : '';
}

/** The run selector: one option per run, coloured like its lines. */
export function renderRunSelect(runs: Run[], selected: number | null): void {
  const select = $<HTMLSelectElement>('#run-select');
  select.replaceChildren(
    ...runs.map((r) => {
      const o = el('option', r.data.live ? r.data.name : `${r.data.name} (${r.data.status.state})`);
      o.value = String(r.data.id);
      o.style.color = r.colour;
      return o;
    }),
  );
  if (selected !== null) select.value = String(selected);
  select.disabled = runs.length < 2;
  // The legend naming every run and its colour (the charts overlay them).
  const legend = $('#runs-legend');
  legend.hidden = runs.length < 2;
  legend.replaceChildren(
    ...runs.map((r) => {
      const li = el('li', r.data.name);
      li.style.setProperty('--run-colour', r.colour);
      li.dataset.runId = String(r.data.id);
      return li;
    }),
  );
}

// ---- Worker table

const WORKER_STATE_ORDER: Record<string, number> = { live: 0, joining: 1, dropped: 2, left: 3 };

export function renderWorkers(run: Run | undefined): void {
  const tbody = $('#workers tbody');
  const rows = [...(run?.data.workers ?? [])].sort((a, b) => (WORKER_STATE_ORDER[a.state] ?? 9) - (WORKER_STATE_ORDER[b.state] ?? 9) || a.id - b.id);
  tbody.replaceChildren(...rows.map(workerRow));
  $('#workers-empty').hidden = rows.length > 0;
}

function workerRow(w: WorkerRow): HTMLTableRowElement {
  const tr = el('tr');
  tr.dataset.workerId = String(w.id);
  tr.dataset.state = w.state;
  if (w.reason) tr.dataset.reason = w.reason;
  const cells: [string, string?][] = [
    [String(w.id), 'num'],
    [w.host || DASH],
    [w.backend || DASH],
    [w.state, `wstate wstate-${w.state}`],
    [w.lastComputeMs === undefined ? DASH : num(w.lastComputeMs, 3), 'num'],
    [w.samplesPerS === undefined ? DASH : num(w.samplesPerS, 3), 'num'],
    [bytes(w.bytesIn), 'num'],
    [bytes(w.bytesOut), 'num'],
    [clock(w.joinedAt)],
  ];
  for (const [text, cls] of cells) tr.append(el('td', text, cls));
  const left = el('td');
  if (w.leftAt !== undefined || w.reason) {
    left.append(document.createTextNode(w.leftAt !== undefined ? clock(w.leftAt) : ''));
    if (w.reason) left.append(' ', el('code', w.reason, 'code'));
  } else {
    left.textContent = DASH;
  }
  tr.append(left);
  tr.title = `joined ${isoTime(w.joinedAt)}${w.leftAt ? `, left ${isoTime(w.leftAt)}` : ''}; ${w.phases} phases computed`;
  return tr;
}

// ---- Event log, newest first

const MAX_EVENTS = 1000;
let eventsShown: { run: Run | undefined; count: number } = { run: undefined, count: 0 };

function eventItem(e: RunEvent): HTMLLIElement {
  const li = el('li');
  li.dataset.kind = e.kind;
  if (e.code) li.dataset.code = e.code;
  if (e.worker !== undefined) li.dataset.worker = String(e.worker);
  const t = el('time', clock(e.t));
  t.dateTime = isoTime(e.t);
  li.append(t, el('span', e.kind, `kind kind-${e.kind}`), el('span', e.text, 'text'));
  if (e.code) li.append(el('code', e.code, 'code'));
  return li;
}

/** Prepends only the events not yet shown (the list is rebuilt when another run is selected). */
export function renderEvents(run: Run | undefined): void {
  const list = $('#events');
  const events = run?.data.events ?? [];
  if (eventsShown.run !== run || events.length < eventsShown.count) {
    list.replaceChildren();
    eventsShown = { run, count: 0 };
  }
  const from = Math.max(eventsShown.count, events.length - MAX_EVENTS);
  if (from < events.length) {
    const frag = document.createDocumentFragment();
    for (let i = events.length - 1; i >= from; i--) frag.append(eventItem(events[i]!));
    list.prepend(frag);
    while (list.childElementCount > MAX_EVENTS) list.lastElementChild!.remove();
  }
  eventsShown.count = events.length;
  $('#events-empty').hidden = events.length > 0;
}

// ---- Sample grid with a slider back through every epoch's grid

let gridShown: { run: Run | undefined; follow: boolean } = { run: undefined, follow: true };

export function renderGrid(run: Run | undefined): void {
  const slider = $<HTMLInputElement>('#grid-slider');
  const names = run?.data.grids ?? [];
  if (gridShown.run !== run) gridShown = { run, follow: true };
  const max = Math.max(0, names.length - 1);
  const atEnd = Number(slider.value) >= Number(slider.max);
  slider.max = String(max);
  slider.disabled = names.length < 2;
  // At the newest grid, follow new ones; after moving back, stay there.
  if (gridShown.follow || atEnd) slider.value = String(max);
  showGridAt(run, Number(slider.value));
}

/** The slider moved. */
export function onGridSlider(run: Run | undefined): void {
  const slider = $<HTMLInputElement>('#grid-slider');
  gridShown.follow = Number(slider.value) >= Number(slider.max);
  showGridAt(run, Number(slider.value));
}

function showGridAt(run: Run | undefined, i: number): void {
  const img = $<HTMLImageElement>('#grid img');
  const caption = $('#grid-caption');
  const names = run?.data.grids ?? [];
  const name = names[i];
  const url = name ? run?.gridUrls.get(name) : undefined;
  $('#grid').dataset.count = String(names.length);
  if (!name) {
    img.hidden = true;
    img.removeAttribute('src');
    delete img.dataset.name;
    caption.textContent = 'no sample grid yet (one is drawn after every epoch)';
    return;
  }
  if (url) {
    if (img.getAttribute('src') !== url) img.src = url;
    img.hidden = false;
    img.alt = `samples, ${name}`;
    img.dataset.name = name;
  } else {
    img.hidden = true;
    img.removeAttribute('src');
    delete img.dataset.name;
  }
  const label = name.replace(/\.png$/, '').replace(/^epoch-0*(\d+)$/, 'after epoch $1').replace(/^final$/, 'final');
  caption.textContent = `${label} (${i + 1} of ${names.length})${url ? '' : ': image not received yet'}`;
}

// ---- Connection status and errors

export function renderConnection(state: string, detail: string): void {
  const c = $('#connection');
  c.dataset.state = state;
  const text: Record<string, string> = {
    connecting: 'connecting…',
    open: 'connected',
    disconnected: 'disconnected',
    closed: 'connection closed',
    ended: 'run ended',
    refused: 'refused',
  };
  c.textContent = text[state] ?? state;
  c.title = detail;
}

export function showError(message: string | null): void {
  const e = $('#error');
  e.hidden = message === null;
  $('#error-text').textContent = message ?? '';
  $('#token-form').hidden = message === null || !message.startsWith('E_AUTH');
}
