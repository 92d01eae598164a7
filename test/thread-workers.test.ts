/**
 * Without the native addon (which maps shared files between processes), `--spawn` starts its
 * workers as threads of the coordinator's process, and they share memory with it through
 * SharedArrayBuffers (shared/wire/thread-regions.ts): the same bits as workers in processes that
 * exchange frames, every sample once, and a name that is not a thread's own refused.
 */
import { describe, expect, it } from 'vitest';
import { readFileSync } from 'node:fs';
import { join } from 'node:path';
import { MessageChannel, Worker } from 'node:worker_threads';
import { ThreadRegions, isThreadRegion } from '../shared/wire/thread-regions.js';
import { dist, requireDist, runNode } from './util-proc.js';
import { TINY_MODEL_FLAGS, epochsOf, expectEveryEpochExact, writeIdxDir } from './util-faults.js';
import { smallData, tempDir } from './helpers.js';

describe('regions for worker threads', () => {
  it('are the same memory in the thread that asks for one by name; a name never made, or gone, is refused', async () => {
    requireDist();
    const regions = new ThreadRegions();
    const path = regions.newPath();
    expect(isThreadRegion(path)).toBe(true);
    const mine = new Float32Array(regions.map(path, 16, 0));
    mine[0] = 1.5;
    const { port1, port2 } = new MessageChannel();
    regions.serve(port1);
    const url = new URL('../dist/shared/wire/thread-regions.js', import.meta.url).href;
    // The thread maps the region, doubles what it finds, and reports what an unknown name gives.
    const code = `
      const { workerData, parentPort } = require('node:worker_threads');
      import(workerData.url).then(({ threadMapper }) => {
        const map = threadMapper(workerData.port);
        const f = new Float32Array(map(workerData.path, 16, 1));
        f[1] = f[0] * 2;
        let unknown = 'mapped';
        try { map(workerData.path + '0', 16, 1); } catch (e) { unknown = e.code; }
        let wrongSize = 'mapped';
        try { map(workerData.path, 32, 1); } catch (e) { wrongSize = e.code; }
        parentPort.postMessage({ unknown, wrongSize });
      });`;
    const w = new Worker(code, { eval: true, workerData: { url, port: port2, path }, transferList: [port2] });
    const answer = await new Promise<{ unknown: string; wrongSize: string }>((resolve, reject) => {
      w.once('message', resolve);
      w.once('error', reject);
    });
    await w.terminate();
    expect(mine[1]).toBe(3);
    expect(answer).toEqual({ unknown: 'ENOENT', wrongSize: 'ENOENT' });
    regions.remove(path);
    expect(() => regions.map(path, 16, 1)).toThrow(/no such region/);
    port1.close();
  }, 30_000);
});

describe('--spawn without the native addon', () => {
  it('starts its workers as threads that share the coordinator\'s memory: the bits of worker processes exchanging frames, every sample once', async () => {
    requireDist();
    const n = 120;
    const data = writeIdxDir(smallData(n));
    const env = { ...process.env, GAN_NATIVE_ADDON: '/nonexistent' };
    const args = (out: string) => ['--workers', '2', '--spawn', '--port', '0', ...TINY_MODEL_FLAGS, '--dropout', '0', '--batch-size', '10', '--epochs', '3', '--checkpoint-every', '5', '--data', data, '--out', out];
    const threads = join(tempDir('gan-ddp-threads-'), 'run');
    const frames = join(tempDir('gan-ddp-threads-'), 'run');
    const t = await runNode(dist.coordinator, args(threads), { env, timeoutMs: 120_000 });
    expect(t.code, t.stdout + t.stderr).toBe(0);
    expect(t.stdout).toMatch(/spawning 2 workers as threads of this process, sharing its memory/);
    expect(t.stdout.match(/shares this host: tensors through shared memory/g)).toHaveLength(2);
    const f = await runNode(dist.coordinator, [...args(frames), '--shm', 'off'], { env, timeoutMs: 120_000 });
    expect(f.code, f.stdout + f.stderr).toBe(0);
    expect(f.stdout).not.toMatch(/as threads/);
    expect(f.stdout).not.toMatch(/through shared memory/);
    expectEveryEpochExact(epochsOf(threads), n, 3);
    expectEveryEpochExact(epochsOf(frames), n, 3);
    expect(readFileSync(join(threads, 'checkpoint.bin')).equals(readFileSync(join(frames, 'checkpoint.bin')))).toBe(true);
  }, 240_000);
});
