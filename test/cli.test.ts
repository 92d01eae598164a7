import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdirSync, mkdtempSync, readFileSync, readdirSync, rmSync } from 'node:fs';
import { createServer, type Server } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import type { AddressInfo } from 'node:net';
import { RunDir, loadCheckpoint } from '../coordinator/run-dir.js';
import { initWeights, netLayout } from '../shared/compute/model.js';
import { tinyConfig, tinyModel } from './helpers.js';
import { arrange } from '../coordinator/spawn.js';
import { type ProcResult, dist, lines, requireDist, runNode } from './util-proc.js';

const PNG_SIGNATURE = Buffer.from([0x89, 0x50, 0x4e, 0x47, 0x0d, 0x0a, 0x1a, 0x0a]);
const root = mkdtempSync(join(tmpdir(), 'gan-ddp-cli-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let n = 0;
const fresh = (name: string) => join(root, `${name}-${n++}`);

function isPng(file: string): boolean {
  return readFileSync(file).subarray(0, 8).equals(PNG_SIGNATURE);
}

/** A failure: non-zero exit, exactly one line on stderr, and that line matches. */
function expectOneLineError(r: ProcResult, pattern: RegExp): void {
  expect(r.code, `stderr: ${r.stderr}`).not.toBe(0);
  expect(r.signal).toBeNull();
  const errLines = lines(r.stderr);
  expect(errLines, r.stderr).toHaveLength(1);
  expect(errLines[0]).toMatch(pattern);
}

const METRIC_FIELDS = [
  'round', 'epoch', 'workers', 'samples', 'global_batch', 'd_loss', 'g_loss', 'd_real', 'd_fake', 'samples_per_s',
  'round_ms', 'compute_ms', 'transfer_ms', 'reduce_ms', 'bytes_in', 'bytes_out', 'dropped', 'joined', 'epoch_used', 'epoch_samples',
];

beforeAll(() => requireDist());

describe('a real coordinator process with --spawn', () => {
  const out = fresh('run');
  let result: ProcResult;
  beforeAll(async () => {
    result = await runNode(dist.coordinator, [
      '--workers', '3', '--spawn', '--port', '0', '--backend', 'wasm',
      '--g-hidden', '32,64', '--d-hidden', '64,32', '--noise-dim', '16',
      '--batch-size', '20', '--max-rounds', '4', '--out', out,
    ], { timeoutMs: 120_000 });
  }, 130_000);

  it('finishes with exit 0', () => {
    expect(result.code, result.stdout + result.stderr).toBe(0);
    expect(result.stdout).toMatch(/done: 4 rounds/);
    // One line says how the spawned workers use the host, and how to get the faster backend.
    expect(result.stdout).toMatch(/spawning 3 workers on \d+ cores with the wasm backend, one thread each .*npm run build:native/);
  });

  it('writes metrics.jsonl: one JSON line per round with the documented fields', () => {
    const ls = lines(readFileSync(join(out, 'metrics.jsonl'), 'utf8')).map((l) => JSON.parse(l) as Record<string, unknown>);
    expect(ls).toHaveLength(4);
    ls.forEach((m, i) => {
      expect(Object.keys(m).sort()).toEqual([...METRIC_FIELDS].sort());
      expect(m.round).toBe(i);
      expect(m.workers).toBe(3);
      expect(m.samples).toBe(60);
      expect(m.global_batch).toBe(60);
      for (const k of ['d_loss', 'g_loss', 'd_real', 'd_fake', 'samples_per_s', 'round_ms', 'bytes_in', 'bytes_out']) {
        expect(Number.isFinite(m[k]), `${k} in round ${i}`).toBe(true);
      }
      expect(m.epoch_used).toBe(60 * (i + 1));
    });
    expect(ls[0]!.joined).toEqual([0, 1, 2]);
  });

  it('writes samples/final.png, config.json, summary.json and a checkpoint of the run', () => {
    expect(isPng(join(out, 'samples', 'final.png'))).toBe(true);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as { model: { gHidden: number[] }; workers: number };
    expect(cfg.model.gHidden).toEqual([32, 64]);
    expect(cfg.workers).toBe(3);
    const summary = JSON.parse(readFileSync(join(out, 'summary.json'), 'utf8')) as { rounds: number };
    expect(summary.rounds).toBe(4);
    const s = loadCheckpoint(out);
    expect(s.round).toBe(4);
    expect(s.versions).toEqual({ D: 4, G: 4 });
  });

  it('generate reads the checkpoint and writes a PNG', async () => {
    const png = join(root, 'gen.png');
    const r = await runNode(dist.generate, ['--checkpoint', out, '--out', png, '--count', '16', '--backend', 'wasm']);
    expect(r.code, r.stderr).toBe(0);
    expect(r.stdout).toMatch(/wrote 16 samples/);
    expect(isPng(png)).toBe(true);
    // A 4x4 grid of 28-pixel digits with 2-pixel borders.
    const ihdr = readFileSync(png);
    expect([ihdr.readUInt32BE(16), ihdr.readUInt32BE(20)]).toEqual([4 * 30 + 2, 4 * 30 + 2]);
  });

  it('generate --digit 3 on an unconditional model exits non-zero with one clear line', async () => {
    const png = join(root, 'digit.png');
    const r = await runNode(dist.generate, ['--checkpoint', out, '--out', png, '--digit', '3', '--backend', 'wasm']);
    expectOneLineError(r, /--digit needs a conditional model/);
    expect(existsSync(png)).toBe(false);
  });
});

describe('generate on a conditional checkpoint', () => {
  it('--digit 3 and --digit all write PNGs', async () => {
    const dir = fresh('cgan');
    mkdirSync(dir);
    const config = tinyConfig({ model: { ...tinyModel, kind: 'cgan' } });
    const g = netLayout(config.model, 'G');
    const d = netLayout(config.model, 'D');
    new RunDir(dir).saveCheckpoint({
      config, round: 0, epoch: 0, versions: { D: 0, G: 0 }, adamSteps: { D: 0, G: 0 }, epochUses: new Uint8Array(10),
      weights: { G: initWeights(g, 1), D: initWeights(d, 1) },
      emaG: initWeights(g, 2),
      adam: { G: { m: new Float32Array(g.total), v: new Float32Array(g.total) }, D: { m: new Float32Array(d.total), v: new Float32Array(d.total) } },
    });
    const [one, all] = await Promise.all([
      runNode(dist.generate, ['--checkpoint', dir, '--out', join(dir, 'three.png'), '--digit', '3', '--count', '4', '--backend', 'wasm']),
      runNode(dist.generate, ['--checkpoint', join(dir, 'checkpoint.bin'), '--out', join(dir, 'all.png'), '--digit', 'all', '--count', '2', '--backend', 'wasm']),
    ]);
    expect(one.code, one.stderr).toBe(0);
    expect(all.code, all.stderr).toBe(0);
    expect(all.stdout).toMatch(/wrote 20 samples/);
    expect(isPng(join(dir, 'three.png'))).toBe(true);
    expect(isPng(join(dir, 'all.png'))).toBe(true);
  });
});

describe('bad invocations exit non-zero with one clear line', () => {
  const cases: [string[], RegExp][] = [
    [['--workers', '0'], /--workers.*'0' is invalid.*whole number from 1/],
    [['--workers', 'abc'], /--workers.*'abc' is invalid/],
    [['--batch-size', '-1'], /--batch-size.*'-1' is invalid/],
    [['--model', 'foo'], /--model.*'foo' is invalid.*gan, cgan, acgan/],
    [['--ema', '1'], /--ema.*'1' is invalid/],
    [['--ema', '-0.1'], /--ema.*'-0.1' is invalid/],
    [['--ema', 'abc'], /--ema.*'abc' is invalid/],
    [['--sync-every', '0'], /--sync-every.*'0' is invalid.*whole number from 1/],
    [['--outer-momentum', '1'], /--outer-momentum.*'1' is invalid/],
    [['--no-such-flag'], /unknown option '--no-such-flag'/],
    [['--min-workers', '3', '--workers', '2'], /--min-workers 3 is above --workers 2/],
  ];
  for (const [args, pattern] of cases) {
    it(`coordinator ${args.join(' ')}: no run directory created`, async () => {
      const cwd = fresh('cwd');
      mkdirSync(cwd);
      const out = join(cwd, 'explicit-out');
      // Once without --out (the default runs/<date> under cwd), once with it.
      const [a, b] = await Promise.all([
        runNode(dist.coordinator, [...args, '--backend', 'wasm', '--port', '0'], { cwd }),
        runNode(dist.coordinator, [...args, '--backend', 'wasm', '--port', '0', '--out', out], { cwd }),
      ]);
      expectOneLineError(a, pattern);
      expectOneLineError(b, pattern);
      expect(readdirSync(cwd)).toEqual([]);
    });
  }

  it('coordinator --data /nonexistent names the path', async () => {
    const cwd = fresh('cwd');
    mkdirSync(cwd);
    const missing = join(root, 'nonexistent-data');
    const r = await runNode(dist.coordinator, ['--data', missing, '--backend', 'wasm', '--port', '0', '--workers', '1'], { cwd });
    expectOneLineError(r, new RegExp(`${missing.replace(/[/.]/g, '\\$&')}.*not found`));
    expect(readdirSync(cwd)).toEqual([]);
  });

  it('a worker that cannot reach its coordinator gives up after --connect-timeout with a clear error', async () => {
    const r = await runNode(dist.worker, ['--connect', 'ws://127.0.0.1:1', '--connect-timeout', '1', '--backend', 'wasm', '--quiet'], { timeoutMs: 30_000 });
    expectOneLineError(r, /cannot reach a coordinator at ws:\/\/127\.0\.0\.1:1.*gave up after 1 s/);
    expect(r.ms).toBeLessThan(15_000);
  });

  it('a worker given a malformed --connect URL', async () => {
    const r = await runNode(dist.worker, ['--connect', 'http://x', '--backend', 'wasm']);
    expectOneLineError(r, /--connect http:\/\/x: expected ws:\/\/HOST:PORT/);
  });

  it('a coordinator whose port is in use says so', async () => {
    const server: Server = createServer();
    await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
    const port = (server.address() as AddressInfo).port;
    try {
      const out = fresh('port');
      const r = await runNode(dist.coordinator, ['--port', String(port), '--backend', 'wasm', '--workers', '1', '--out', out]);
      expectOneLineError(r, new RegExp(`port ${port} on 127\\.0\\.0\\.1 is already in use`));
      // Nothing half-made is left where the next attempt will write.
      expect(existsSync(out)).toBe(false);
    } finally {
      server.close();
    }
  });
});

describe('--help lists every flag', () => {
  const coordinatorFlags = [
    '--workers', '--min-workers', '--spawn', '--host', '--port', '--out', '--resume', '--data', '--model', '--recipe', '--epochs',
    '--max-rounds', '--batch-size', '--lr', '--lr-d', '--lr-g', '--beta1', '--beta2', '--eps', '--g-hidden', '--d-hidden',
    '--noise-dim', '--dropout', '--r1', '--leak', '--seed', '--checkpoint-every', '--round-timeout', '--heartbeat', '--wire', '--fp16',
    '--token', '--insecure', '--tls-cert', '--tls-key', '--backend', '--threads', '--ema', '--eval-every', '--topology', '--shm', '--sync-every', '--outer-lr', '--outer-momentum', '--help',
  ];
  const flags: Record<string, [string, string[]]> = {
    coordinator: [dist.coordinator, coordinatorFlags],
    // launch takes the coordinator's flags on every task (and refuses --token, --spawn and --resume when given).
    launch: [dist.launch, coordinatorFlags],
    worker: [dist.worker, [
      '--connect', '--token', '--ca', '--backend', '--threads', '--connect-timeout', '--max-payload', '--model', '--no-relay', '--peer-host',
      '--tls-cert', '--tls-key', '--quiet', '--help',
    ]],
    generate: [dist.generate, ['--checkpoint', '--out', '--count', '--digit', '--seed', '--cols', '--raw', '--backend', '--help']],
    evaluate: [dist.evaluate, ['--samples', '--data', '--seed', '--raw', '--backend', '--help']],
    dashboard: [dist.dashboard, ['--host', '--port', '--token', '--insecure', '--help']],
  };
  for (const [name, [script, expected]] of Object.entries(flags)) {
    it(name, async () => {
      const r = await runNode(script, ['--help']);
      expect(r.code).toBe(0);
      const listed = new Set([...r.stdout.matchAll(/^\s+(?:-\w, )?(--[a-z0-9-]+)/gm)].map((m) => m[1]!));
      expect([...listed].sort()).toEqual([...expected].sort());
      // Each flag has a description, not just its name.
      for (const f of expected) expect(r.stdout).toMatch(new RegExp(`${f}\\b[^\\n]*\\s{2,}\\S`));
    });
  }
});

describe('--spawn lays the workers out on the host', () => {
  it('shares the cores out as threads, and pins single-threaded workers round robin when they fill every core', () => {
    expect(arrange(4, 2, undefined, true)).toEqual({ threads: 1, pin: [0, 1, 0, 1] });
    expect(arrange(2, 2, undefined, true)).toEqual({ threads: 1, pin: [0, 1] });
    expect(arrange(1, 2, undefined, true)).toEqual({ threads: 2, pin: null });
    expect(arrange(2, 8, undefined, true)).toEqual({ threads: 4, pin: null });
    expect(arrange(4, 2, undefined, false)).toEqual({ threads: 1, pin: null });
    expect(arrange(4, 2, 2, true)).toEqual({ threads: 2, pin: null });
    expect(arrange(3, 1, undefined, true)).toEqual({ threads: 1, pin: null });
  });
});
