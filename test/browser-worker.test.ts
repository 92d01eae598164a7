/**
 * Browser workers (the /worker page in Debian's chromium): they train beside Node workers with
 * exact accounting (synchronously and taking local steps), compute the same gradients as a Node worker on the same backend, leave the run
 * like a killed process when the page closes, and show a refused token on the page.
 */
import { describe, expect, it } from 'vitest';
import { type Cluster, smallData, startCluster, tinyConfig } from './helpers.js';
import { type TestPage, browserAvailable, browserSuite, skipNote } from './browser.js';

const pageUrl = (c: Cluster, query = '', hash = '') => `${c.url.replace(/^ws/, 'http')}/worker${query}${hash}`;

describe.skipIf(!browserAvailable())(`browser workers${skipNote}`, () => {
  const { open, clusters } = browserSuite();

  it('train beside a Node worker with exact per-epoch accounting, reporting their backend', async () => {
    const n = 60;
    const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 2 }), smallData(n), { startWorkers: 1 });
    clusters.push(c);
    const page = await open(pageUrl(c));
    const coord = await c.finish();
    expect(coord.epochLog.map((e) => [e.usedOnce, e.missing, e.duplicated])).toEqual([[n, 0, 0], [n, 0, 0]]);
    expect(coord.runDir.metrics().every((m) => m.workers === 2)).toBe(true);
    await page.waitForFunction(() => document.querySelector('#state')?.textContent === 'run finished', null, { timeout: 20_000 });
    expect(await page.locator('#rounds').getAttribute('data-value')).toBe(String(coord.round));
    expect(await page.locator('#backend').textContent()).toMatch(/^(WebGPU|WebGL|wasm)/);
    expect(coord.view!.data.workers.find((w) => w.id === 1)!.backend).toMatch(/in Chrom/);
    expect(page.errors).toEqual([]);
    await page.context().close();
  }, 120_000);

  it('take local steps in a --sync-every run beside a Node worker, with exact per-epoch accounting', async () => {
    const n = 120;
    const c = await startCluster(tinyConfig({ workers: 2, batchSize: 10, epochs: 2, syncEvery: 3 }), smallData(n), { startWorkers: 1 });
    clusters.push(c);
    const page = await open(pageUrl(c, '?backend=wasm'));
    const coord = await c.finish();
    expect(coord.epochLog.map((e) => [e.usedOnce, e.missing, e.duplicated, e.rounds])).toEqual([[n, 0, 0, 2], [n, 0, 0, 2]]);
    // Both workers' changes were averaged into every sync: the page's 30 samples a sync among them.
    expect(coord.runDir.metrics().map((m) => [m.workers, m.samples])).toEqual([[2, 60], [2, 60], [2, 60], [2, 60]]);
    await page.waitForFunction(() => document.querySelector('#state')?.textContent === 'run finished', null, { timeout: 20_000 });
    expect(page.errors).toEqual([]);
    await page.context().close();
  }, 120_000);

  it('compute the gradient a Node worker computes for the same task on the same backend', async () => {
    /** Round 0's D gradient of a one-worker run, as the coordinator applied it. */
    const firstGradient = async (join: (c: Cluster) => Promise<unknown>): Promise<Float32Array> => {
      const c = await startCluster(tinyConfig({ workers: 1, batchSize: 20, maxRounds: 1 }), smallData(40), { startWorkers: 0 });
      clusters.push(c);
      const joined = await join(c);
      await c.finish();
      // One worker, one round: D's first Adam moment is (1 - beta1) times that gradient, exactly.
      const g = c.coord.model.adam.D.m.map((m) => m / (1 - c.coord.cfg.beta1));
      if (joined && typeof (joined as { context?: unknown }).context === 'function') await (joined as { context(): { close(): Promise<void> } }).context().close();
      return g;
    };
    const fromNode = await firstGradient(async (c) => c.addWorker());
    const fromBrowser = await firstGradient((c) => open(pageUrl(c, '?backend=wasm')));
    const scale = fromNode.reduce((a, x) => Math.max(a, Math.abs(x)), 0);
    expect(scale).toBeGreaterThan(0);
    let worst = 0;
    for (let i = 0; i < fromNode.length; i++) worst = Math.max(worst, Math.abs(fromNode[i]! - fromBrowser[i]!));
    // Threads and summation order differ; the values agree to float precision.
    expect(worst / scale).toBeLessThan(1e-4);
  }, 120_000);

  it('leave the run when the page closes mid-phase: its samples are dealt again, none lost or repeated', async () => {
    const n = 80;
    let opened: (p: TestPage) => void = () => {};
    const page = new Promise<TestPage>((resolve) => (opened = resolve));
    const c = await startCluster(tinyConfig({ workers: 3, minWorkers: 1, batchSize: 10, epochs: 2 }), smallData(n), {
      startWorkers: 2,
      // Round 2, as its D tasks are about to go out: the tab is closed, and the round goes on only
      // once it is gone, so the tab is lost in round 2 whether its socket's close is seen before its
      // task is sent or while the phase waits for it (closing it beside the tasks let a fast tab
      // finish the round first). The page may still be loading in the test's eyes when its worker
      // has already joined: the round waits for it.
      hooks: { phase: async (round, phase) => {
        if (round === 2 && phase === 'D') await (await page).close();
      } },
    });
    clusters.push(c);
    opened(await open(pageUrl(c)));
    const coord = await c.finish();
    const dropped = coord.runDir.metrics().find((m) => m.dropped.length > 0);
    expect(dropped?.round).toBe(2);
    expect(coord.epochLog.map((e) => [e.usedOnce, e.missing, e.duplicated])).toEqual([[n, 0, 0], [n, 0, 0]]);
  }, 120_000);

  it('show a wrong token on the page and stay out of the run', async () => {
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 3 }), smallData(30), { token: 'bw-secret', startWorkers: 0 });
    clusters.push(c);
    const wrong = await open(pageUrl(c, '', '#token=nope'));
    await wrong.waitForSelector('#error:not([hidden])', { timeout: 30_000 });
    expect(await wrong.locator('#error-text').textContent()).toMatch(/wrong token.*E_AUTH/);
    expect(await wrong.locator('#state').getAttribute('data-state')).toBe('refused');
    c.addWorker({ token: 'bw-secret' });
    const coord = await c.finish();
    expect(coord.view!.data.workers.filter((w) => /in Chrom/.test(w.backend))).toEqual([]);
    await wrong.context().close();
  }, 120_000);
});
