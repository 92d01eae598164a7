/**
 * The browser worker: the same WorkerClient and Participant a Node worker runs (worker/), over the
 * browser's WebSocket, on the best backend this browser has. The token comes from the URL fragment
 * (#token=...), which the browser never sends; the page proves it like any worker.
 */
import { GanError } from '../../shared/wire/errors.js';
import { browserConnect } from '../../worker/browser-transport.js';
import { WorkerClient } from '../../worker/worker.js';
import { type BrowserBackend, chooseBackend } from './backend.js';

const $ = (id: string) => document.getElementById(id)!;

function setState(state: string, text = state): void {
  $('state').textContent = text;
  $('state').dataset.state = state;
}

function log(line: string): void {
  const li = document.createElement('li');
  li.textContent = `${new Date().toLocaleTimeString()} ${line}`;
  $('log').prepend(li);
  while ($('log').childElementCount > 200) $('log').lastElementChild!.remove();
}

function showError(text: string, askToken: boolean): void {
  $('error-text').textContent = text;
  $('token-form').hidden = !askToken;
  $('error').hidden = false;
}

function browserName(): string {
  const m = /(Firefox|Edg|Chrome|Chromium|Safari)\/(\d+)/.exec(navigator.userAgent);
  return m ? `${m[1] === 'Edg' ? 'Edge' : m[1]} ${m[2]}` : 'browser';
}

async function main(): Promise<void> {
  const token = new URLSearchParams(location.hash.slice(1)).get('token') ?? undefined;
  const only = new URLSearchParams(location.search).get('backend') as BrowserBackend | null;
  const backend = await chooseBackend(only ?? undefined);
  $('backend').textContent = backend.detail;
  for (const s of backend.skipped) log(`backend passed over: ${s}`);
  const url = `${location.protocol === 'https:' ? 'wss' : 'ws'}://${location.host}/`;
  // Samples per second over the last ten phases this worker computed.
  const recent: { t: number; count: number }[] = [];
  let phases = 0;
  const w = new WorkerClient({
    url, token, connect: browserConnect,
    // The detail names the backend already: 'wasm (XNNPACK SIMD, 2 threads)', 'WebGL (...)'.
    backend: `${backend.detail} in ${browserName()}`,
    host: `browser (${browserName()})`,
    pid: Math.floor(Math.random() * 2 ** 31),
    // A laptop that sleeps or loses its network comes back: keep retrying for a day.
    connectTimeoutMs: 24 * 3600 * 1000,
    log,
    onJoined: (id) => {
      $('worker-id').textContent = String(id);
      setState('working', 'working');
      $('error').hidden = true;
    },
    onComputed: (c) => {
      phases++;
      recent.push({ t: performance.now(), count: c.phase === 'D' ? c.count : 0 });
      if (recent.length > 10) recent.shift();
      const span = (recent[recent.length - 1]!.t - recent[0]!.t) / 1000;
      if (span > 0) $('samples-per-s').textContent = (recent.slice(1).reduce((a, r) => a + r.count, 0) / span).toFixed(0);
      $('rounds').textContent = String(Math.floor(phases / 2));
      $('rounds').dataset.value = String(Math.floor(phases / 2));
      $('last-phase').textContent = `round ${c.round} ${c.phase}: ${c.count} samples in ${c.computeMs.toFixed(0)} ms`;
    },
  });
  $('stop').addEventListener('click', () => {
    w.stop();
    setState('stopped');
  });
  $('token-form').addEventListener('submit', (e) => {
    e.preventDefault();
    location.hash = `token=${encodeURIComponent(($('token-input') as HTMLInputElement).value)}`;
    location.reload();
  });
  setState('connecting');
  try {
    await w.run();
    if ($('state').dataset.state !== 'stopped') setState('finished', 'run finished');
  } catch (e) {
    const err = e as GanError;
    const refused = err.code === 'E_AUTH';
    setState(refused ? 'refused' : 'failed', refused ? 'refused' : 'stopped by an error');
    showError(refused ? `The coordinator refused this worker: ${token ? 'wrong token' : 'it needs a token (open this page with #token=...)'} [E_AUTH]` : `${err.message} [${err.code ?? 'E_INTERNAL'}]`, refused);
    log(`error: ${err.code} ${err.message}`);
  }
}

main().catch((e: unknown) => {
  setState('failed');
  showError((e as Error).message, false);
});
