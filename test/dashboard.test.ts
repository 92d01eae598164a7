/**
 * The dashboard in a real browser (Debian's chromium through playwright-core): served by a running
 * coordinator, it shows the run advancing, every chart with data, the sample grid, a dropped worker
 * with its code, and refuses a wrong token; `dashboard RUN_DIR` shows a finished run.
 */
import { describe, expect, it } from 'vitest';
import { serve } from '../cli/dashboard.js';
import { Kind } from '../shared/wire/codec.js';
import { smallData, startCluster, tinyConfig } from './helpers.js';
import { browserAvailable, browserSuite, skipNote } from './browser.js';


describe.skipIf(!browserAvailable())(`dashboard page${skipNote}`, () => {
  const { open, clusters } = browserSuite();

  it('watches a live run: the round advances, every chart has data, grids decode, a drop shows its code', async () => {
    const c = await startCluster(tinyConfig({ workers: 3, minWorkers: 1, batchSize: 10, epochs: 6, roundTimeoutMs: 1500 }), smallData(60), { startWorkers: 0 });
    clusters.push(c);
    c.addWorker();
    c.addWorker();
    // The third stalls in round 3: the run drops it with E_TIMEOUT and goes on.
    c.addWorker({ faults: { inbound: (m) => (m.k === Kind.Task && m.round === 3 ? new Promise((r) => setTimeout(r, 4000)) : undefined) } });
    const page = await open(c.url.replace(/^ws/, 'http') + '/');
    await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
    const training = c.finish();
    const roundAt = async () => Number(await page.locator('#round').getAttribute('data-value'));
    const first = await roundAt();
    await page.waitForFunction((r) => Number(document.querySelector('#round')?.getAttribute('data-value')) > r + 3, first, { timeout: 30_000 });
    await training;
    await page.waitForFunction(() => document.querySelector('#state')?.textContent?.includes('finished'), null, { timeout: 20_000 });
    expect(await roundAt()).toBe(c.coord.round);
    for (const chart of ['loss', 'd', 'throughput', 'time']) {
      expect(Number(await page.locator(`[data-chart=${chart}]`).getAttribute('data-points')), chart).toBe(c.coord.round);
    }
    const grid = page.locator('#grid img');
    await expect.poll(() => grid.evaluate((img: HTMLImageElement) => img.complete && img.naturalWidth > 0)).toBe(true);
    expect(Number(await page.locator('#grid').getAttribute('data-count'))).toBe(7);
    const drop = page.locator('#events li[data-kind="drop"]');
    await expect.poll(() => drop.count()).toBeGreaterThan(0);
    expect(await drop.first().getAttribute('data-code')).toBe('E_TIMEOUT');
    expect(await page.locator('#workers tbody tr[data-worker-id="2"]').getAttribute('data-reason')).toBe('E_TIMEOUT');
    expect(page.errors).toEqual([]);
    await page.context().close();
  }, 120_000);

  it('refuses a wrong token with a message on the page, and shows the run with the right one', async () => {
    const token = 'dash-secret';
    const c = await startCluster(tinyConfig({ workers: 1, batchSize: 10, maxRounds: 100_000, epochs: 100_000 }), smallData(30), { token, startWorkers: 0 });
    clusters.push(c);
    c.addWorker({ token });
    const training = c.finish();
    const base = c.url.replace(/^ws/, 'http') + '/';
    const wrong = await open(`${base}#token=wrong`);
    await wrong.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    expect(await wrong.locator('#error').textContent()).toMatch(/token/i);
    const missing = await open(base);
    await missing.waitForSelector('#error:not([hidden])', { timeout: 20_000 });
    const right = await open(`${base}#token=${token}`);
    await right.waitForFunction(() => Number(document.querySelector('#round')?.getAttribute('data-value')) > 2, null, { timeout: 30_000 });
    expect(await right.locator('#error').isHidden()).toBe(true);
    c.coord.requestStop('test over');
    await training;
    for (const p of [wrong, missing, right]) await p.context().close();
  }, 120_000);

  it('shows finished runs from their directories with `dashboard RUN_DIR...`, overlaid', async () => {
    const a = await (await startCluster(tinyConfig({ workers: 1, batchSize: 10, epochs: 2 }), smallData(30))).finish();
    const b = await (await startCluster(tinyConfig({ workers: 1, batchSize: 10, epochs: 3, seed: 3 }), smallData(30))).finish();
    const { port, close } = await serve([a.runDir.path, b.runDir.path], { host: '127.0.0.1', port: 0, insecure: false });
    try {
      const page = await open(`http://127.0.0.1:${port}/`);
      await page.waitForSelector('body[data-ready="true"]', { timeout: 20_000 });
      expect(await page.locator('#state').textContent()).toMatch(/finished/);
      // Both runs on one round axis: the longer one's rounds.
      expect(Number(await page.locator('[data-chart=loss]').getAttribute('data-points'))).toBe(b.round);
      expect(await page.locator('#run-select option').count()).toBe(2);
      await expect.poll(() => page.locator('#grid img').evaluate((img: HTMLImageElement) => img.naturalWidth > 0)).toBe(true);
      expect(page.errors).toEqual([]);
      await page.context().close();
    } finally {
      await close();
    }
  }, 120_000);
});
