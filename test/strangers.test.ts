/**
 * Peers that never prove the token, against a coordinator process: they cannot exhaust its
 * descriptors, keep a worker out, or slow its rounds, and what they make it print is counted,
 * not printed line by line. The strangers come from other loopback addresses than the workers
 * (127.0.0.2 and up), as they would from other hosts, or from the workers' own address.
 */
import { afterEach, describe, expect, it } from 'vitest';
import { readdirSync } from 'node:fs';
import { join } from 'node:path';
import { Proc, ROOT, TINY_MODEL_FLAGS, epochsOf, expectEveryEpochExact, metricsOf, requireBuild, sleep, spawnCoordinator, spawnWorker, waitUntil, writeIdxDir } from './util-faults.js';
import { smallData, tempDir } from './helpers.js';

const STRANGERS = join(ROOT, 'scripts', 'strangers.mjs');
const TOKEN = 'strangers-test-token';
const procs: Proc[] = [];
afterEach(async () => {
  await Promise.all(procs.splice(0).map((p) => p.kill('SIGKILL')));
});

/** A coordinator under `ulimit -n LIMIT` (soft and hard), on the tiny model. */
function coordinator(limit: number, args: string[]): Proc & { port: Promise<number> } {
  const p = spawnCoordinator(['--token', TOKEN, ...TINY_MODEL_FLAGS, '--port', '0', '--batch-size', '10', '--checkpoint-every', '20', '--round-timeout', '5', ...args], 'coordinator', ['bash', '-c', `ulimit -n ${limit} && exec "$0" "$@"`]);
  procs.push(p);
  return p;
}

function worker(port: number, name: string): Proc {
  const w = spawnWorker(`ws://127.0.0.1:${port}`, name, { token: TOKEN, connectTimeoutS: 60 });
  procs.push(w);
  return w;
}

/** Strangers (scripts/strangers.mjs) in a process of their own, with descriptors enough for all of them. */
function strangers(mode: 'idle' | 'big', port: number, connections: number, addresses: number, bytes = 0): Proc {
  const p = new Proc(`strangers-${mode}`, 'bash', ['-c', `ulimit -n 8192 && exec "$0" "$@"`, process.execPath, STRANGERS, mode, `127.0.0.1:${port}`, String(connections), String(addresses), String(bytes)]);
  procs.push(p);
  return p;
}

const descriptorsOf = (pid: number) => readdirSync(`/proc/${pid}/fd`).length;
const rounds = (dir: string) => metricsOf(dir).length;

describe('the descriptor limit', () => {
  it('is the hard one whatever the soft limit was at start (Node raises it), and said in one line', async () => {
    requireBuild();
    const p = spawnCoordinator([...TINY_MODEL_FLAGS, '--port', '0', '--workers', '1', '--max-rounds', '1', '--spawn', '--out', join(tempDir('gan-ddp-fd-'), 'run')], 'coordinator', ['bash', '-c', 'ulimit -S -n 512 && ulimit -H -n 4096 && exec "$0" "$@"']);
    procs.push(p);
    expect((await p.waitExit(60_000)).code, p.output).toBe(0);
    expect(p.output).toMatch(/^descriptors: limit 4096 \(hard 4096\)$/m);
  }, 60_000);
});

describe('peers that never prove the token', () => {
  it('1,100 of them holding connections under `ulimit -n 1024`: the run goes on, a replacement worker joins, nothing is lost, each refusal is logged once with a count', async () => {
    requireBuild();
    const out = join(tempDir('gan-ddp-strangers-'), 'run');
    const n = 200;
    const c = coordinator(1024, ['--workers', '2', '--epochs', '40', '--out', out, '--data', writeIdxDir(smallData(n))]);
    const port = await c.port;
    const a = worker(port, 'worker-a');
    worker(port, 'worker-b');
    await c.waitFor(/training gan/);
    const flood = strangers('idle', port, 1100, 60);
    await flood.waitFor(/opened (\d{4,})/, 20_000);
    // `exec` made the shell the coordinator: the same pid.
    const pid = c.pid;
    // Under the flood: the coordinator keeps training, and stays well inside its descriptors.
    const before = rounds(out);
    const most: number[] = [];
    for (let i = 0; i < 10; i++) {
      most.push(descriptorsOf(pid));
      await sleep(300);
    }
    expect(rounds(out)).toBeGreaterThan(before);
    expect(Math.max(...most)).toBeLessThan(1024 - 64);
    // A worker dies; its replacement gets in while the flood goes on.
    await a.kill('SIGKILL');
    const joinsBefore = c.lines.filter((l) => /connected from 127\.0\.0\.1/.test(l)).length;
    worker(port, 'worker-c');
    await waitUntil(() => c.lines.filter((l) => /connected from 127\.0\.0\.1/.test(l)).length > joinsBefore, 30_000, 'the replacement worker to join');
    const r = await c.waitExit(180_000);
    await flood.kill('SIGKILL');
    expect(r.code, c.output.slice(-3000)).toBe(0);
    expect(c.output).not.toMatch(/EMFILE.*metrics|E_INTERNAL/);
    expectEveryEpochExact(epochsOf(out), n, 40);
    // Refusals are counted: one line, then "... and N more" once per window, never one per connection.
    const refusals = c.lines.filter((l) => /refused before the handshake: /.test(l));
    const counted = c.lines.filter((l) => /\.\.\. and \d+ more connections refused before the handshake/.test(l));
    expect(refusals.length).toBeGreaterThan(0);
    expect(counted.length).toBeGreaterThan(0);
    expect(refusals.length).toBeLessThanOrEqual(counted.length + 1);
  }, 240_000);

  // Each flood in a run of its own: the replacement's first attempt is what is judged.
  it.each([
    ['other addresses', 1, 60], ['other addresses', 2, 60], ['other addresses', 3, 60],
    ["the workers' own address", 1, 0], ["the workers' own address", 2, 0], ["the workers' own address", 3, 0],
  ])('1,100 of them from %s under `ulimit -n 1024` (flood %i of 3): a replacement worker gets in on its first attempt', async (_from, _run, addresses) => {
    requireBuild();
    const c = coordinator(1024, ['--workers', '2', '--epochs', '400', '--out', join(tempDir('gan-ddp-flood-'), 'run'), '--data', writeIdxDir(smallData(200))]);
    const port = await c.port;
    const a = worker(port, 'worker-a');
    worker(port, 'worker-b');
    await c.waitFor(/training gan/);
    const flood = strangers('idle', port, 1100, addresses);
    await flood.waitFor(/opened (\d{4,})/, 20_000);
    // Long enough for the refused ones to be reconnecting, and the pending ones to be held.
    await sleep(3000);
    await a.kill('SIGKILL');
    const joinsBefore = c.lines.filter((l) => /connected from 127\.0\.0\.1/.test(l)).length;
    const replacement = worker(port, 'worker-c');
    await waitUntil(() => c.lines.filter((l) => /connected from 127\.0\.0\.1/.test(l)).length > joinsBefore, 30_000, 'the replacement worker to join');
    expect(replacement.output).not.toMatch(/connection lost/);
    expect(c.lines.some((l) => /refused before the handshake/.test(l))).toBe(true);
  }, 90_000);

  it('50 of them sending a frame just under the limit after the Challenge and reconnecting at once cost at most 20% of the rounds per second', async () => {
    requireBuild();
    const out = join(tempDir('gan-ddp-strangers-'), 'run');
    const c = coordinator(1024, ['--workers', '1', '--epochs', '100000', '--max-rounds', '1000000', '--out', out, '--spawn', '--threads', '1']);
    const port = await c.port;
    await c.waitFor(/training gan/);
    await waitUntil(() => rounds(out) > 20, 30_000, 'the first rounds');
    // Windows of 3 s, alternating quiet and attacked, so the machine's drift falls on both.
    const rate = { quiet: 0, attacked: 0 };
    let flood: Proc | null = null;
    for (let i = 0; i < 8; i++) {
      const attacked = i % 2 === 1;
      if (attacked) {
        flood = strangers('big', port, 50, 1, 250_000);
        await flood.waitFor(/opened \d+/, 10_000);
      }
      const r0 = rounds(out);
      await sleep(3000);
      rate[attacked ? 'attacked' : 'quiet'] += rounds(out) - r0;
      if (attacked) await flood!.kill('SIGKILL');
    }
    expect(c.output).toMatch(/destroyed: \d+ bytes before proving the token/);
    expect(rate.attacked / rate.quiet, `rounds in quiet windows ${rate.quiet}, in attacked ones ${rate.attacked}`).toBeGreaterThanOrEqual(0.8);
  }, 120_000);
});
