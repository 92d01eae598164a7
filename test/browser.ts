/**
 * The browser for the dashboard's tests: Debian's chromium (`apt-get install -y chromium`), driven
 * by playwright-core. Playwright never downloads a browser here: playwright-core has no install
 * step, and launch() is always given an executable. One browser per test file:
 *
 *   const browser = await launchBrowser();            // in beforeAll
 *   const page = await openPage(browser, url);        // page.errors: uncaught errors and console errors
 *   await browser.close();                            // in afterAll
 *
 * Tests that need it skip when it is missing: `describe.skipIf(!browserAvailable())`.
 * CHROMIUM_PATH overrides the executable.
 */
import { accessSync, constants } from 'node:fs';
import { afterAll, beforeAll } from 'vitest';
import { type Browser, type BrowserContextOptions, type Page, chromium } from 'playwright-core';
import type { Cluster } from './helpers.js';
import { requireBuild } from './util-faults.js';

export const CHROMIUM_PATH = process.env.CHROMIUM_PATH ?? '/usr/bin/chromium';

/** Quiet, small and offline: no sandbox (tests run as root in containers), no GPU, no phoning home. */
export const CHROMIUM_ARGS = [
  '--no-sandbox',
  '--disable-gpu',
  '--disable-background-networking',
  '--disable-component-update',
  '--disable-sync',
  '--disable-dev-shm-usage',
  '--no-first-run',
  '--mute-audio',
];

/** Whether the browser is installed (tests skip, saying why, when it is not). */
export function browserAvailable(): boolean {
  try {
    accessSync(CHROMIUM_PATH, constants.X_OK);
    return true;
  } catch {
    return false;
  }
}

/** Launch headless chromium. Close it (browser.close()) in afterAll. */
export async function launchBrowser(options: { headless?: boolean } = {}): Promise<Browser> {
  if (!browserAvailable()) throw new Error(`no browser at ${CHROMIUM_PATH}: apt-get install -y chromium, or set CHROMIUM_PATH`);
  return chromium.launch({
    executablePath: CHROMIUM_PATH,
    headless: options.headless ?? true,
    args: CHROMIUM_ARGS,
    timeout: 30_000,
  });
}

export interface TestPage extends Page {
  /** Uncaught page errors and console.error messages, in order. */
  errors: string[];
}

/**
 * A fresh context and page at `url` (the token goes in the fragment: `${base}/#token=...`),
 * recording page errors so a test can assert there were none.
 */
export async function openPage(browser: Browser, url: string, options: BrowserContextOptions = {}): Promise<TestPage> {
  const context = await browser.newContext({ viewport: { width: 1400, height: 1000 }, ...options });
  const page = (await context.newPage()) as TestPage;
  page.errors = [];
  page.on('pageerror', (e) => page.errors.push(`pageerror: ${e.message}`));
  page.on('console', (m) => {
    if (m.type() === 'error') page.errors.push(`console: ${m.text()}`);
  });
  await page.goto(url);
  return page;
}

/** Appended to a browser suite's title, so that a skip says why ('' when the browser is there). */
export const skipNote = browserAvailable() ? '' : ` [skipped: no ${CHROMIUM_PATH}: apt-get install chromium]`;

/**
 * For the body of a browser suite's describe: checks the build and launches the browser before its
 * tests; after them closes every cluster the tests pushed to `clusters`, then the browser.
 */
export function browserSuite(): { open(url: string, options?: BrowserContextOptions): Promise<TestPage>; clusters: Cluster[] } {
  let browser: Browser | undefined;
  const clusters: Cluster[] = [];
  beforeAll(async () => {
    requireBuild();
    browser = await launchBrowser();
  });
  afterAll(async () => {
    for (const c of clusters) await c.coord.close().catch(() => {});
    await browser?.close();
  });
  return { open: (url, options) => openPage(browser!, url, options), clusters };
}
