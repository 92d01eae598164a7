/**
 * The container image, as far as it can be checked without a container runtime: the Dockerfile's
 * stages, user, volume and entry point; that the build context leaves out what the build makes
 * anew; and that the files its run stage copies are enough to run a job (a folder laid out as
 * the image's /app runs `launch` for a coordinator and a worker).
 */
import { describe, expect, it } from 'vitest';
import { copyFileSync, cpSync, existsSync, mkdirSync, readFileSync, symlinkSync } from 'node:fs';
import { join } from 'node:path';
import { smallData, tempDir } from './helpers.js';
import { Proc, ROOT, epochsOf, expectEveryEpochExact, freePort, requireBuild, writeIdxDir } from './util-faults.js';
import { faultHarness } from './util-fault-cluster.js';
import { TINY_LAUNCH_FLAGS, tokenFile } from './util-launch.js';

const dockerfile = readFileSync(join(ROOT, 'Dockerfile'), 'utf8');
/** Instructions, one per logical line (continuations joined, comments dropped). */
const instructions = dockerfile.replace(/\\\n/g, ' ').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
const stages = instructions.reduce<string[][]>((acc, l) => (l.startsWith('FROM ') ? [...acc, [l]] : (acc[acc.length - 1]!.push(l), acc)), []);
const runStage = stages[stages.length - 1]!;
const { procs } = faultHarness();

describe('the Dockerfile', () => {
  it('builds in one stage on Debian\'s Node 20 slim image and runs in another, as a user that is not root', () => {
    expect(stages).toHaveLength(2);
    expect(stages[0]![0]).toMatch(/^FROM node:20-bookworm-slim AS build$/);
    expect(runStage[0]).toBe('FROM node:20-bookworm-slim');
    // The compiler is installed in the build stage only.
    expect(stages[0]!.join('\n')).toMatch(/apt-get install .*g\+\+/);
    expect(runStage.join('\n')).not.toMatch(/apt-get|g\+\+|npm (ci|install)/);
    expect(runStage).toContain('USER node');
    expect(runStage.indexOf('USER node')).toBeGreaterThan(runStage.findIndex((l) => l.startsWith('RUN')));
  });

  it('keeps runs on a volume and starts launch, a command the package installs', () => {
    expect(runStage).toContain('VOLUME /runs');
    const entry = runStage.find((l) => l.startsWith('ENTRYPOINT'))!;
    expect(JSON.parse(entry.slice('ENTRYPOINT'.length))).toEqual(['node', 'dist/cli/launch.js']);
    const pkg = JSON.parse(readFileSync(join(ROOT, 'package.json'), 'utf8'));
    expect(pkg.bin.launch).toBe('dist/cli/launch.js');
    expect(JSON.parse(runStage.find((l) => l.startsWith('CMD'))!.slice(3))).toEqual(['--out', '/runs/gan-ddp']);
  });

  it('leaves out of the build context what the build makes anew', () => {
    const ignored = readFileSync(join(ROOT, '.dockerignore'), 'utf8').split('\n').map((l) => l.trim()).filter((l) => l && !l.startsWith('#'));
    for (const p of ['node_modules', 'dist', 'native/build', '.git', 'runs']) expect(ignored).toContain(p);
  });

  it('copies into the run stage exactly what a job needs: a folder laid out like its /app runs a coordinator and a worker', async () => {
    requireBuild();
    const copies = runStage.filter((l) => l.startsWith('COPY --from=build')).map((l) => l.split(/\s+/)[2]!.replace(/^\/app\//, ''));
    expect(copies.sort()).toEqual(['dist', 'eval/judge', 'native/build/Release/gan_native.node', 'node_modules', 'package.json']);
    const app = tempDir('gan-ddp-image-');
    copyFileSync(join(ROOT, 'package.json'), join(app, 'package.json'));
    for (const dir of ['dist', 'eval/judge']) cpSync(join(ROOT, dir), join(app, dir), { recursive: true });
    symlinkSync(join(ROOT, 'node_modules'), join(app, 'node_modules'));
    const addon = join(ROOT, 'native/build/Release/gan_native.node');
    const haveAddon = existsSync(addon);
    if (haveAddon) {
      mkdirSync(join(app, 'native/build/Release'), { recursive: true });
      copyFileSync(addon, join(app, 'native/build/Release/gan_native.node'));
    }
    const data = writeIdxDir(smallData(100));
    const secret = tokenFile();
    const port = await freePort();
    const out = join(tempDir(), 'gan-ddp');
    const tasks = [0, 1].map((rank) => {
      const env = [`PATH=${process.env.PATH}`, `GAN_DDP_RANK=${rank}`, 'GAN_DDP_WORLD_SIZE=2', `GAN_DDP_COORDINATOR=127.0.0.1:${port}`, `GAN_DDP_TOKEN_FILE=${secret.file}`];
      const backend = haveAddon ? 'native' : 'wasm';
      const args = [...TINY_LAUNCH_FLAGS.filter((a, i, all) => a !== '--backend' && all[i - 1] !== '--backend'), '--backend', backend, '--data', data, '--epochs', '1', '--out', out];
      const p = new Proc(`image-rank${rank}`, 'env', ['-i', ...env, process.execPath, join(app, 'dist/cli/launch.js'), ...args]);
      procs.push(p);
      return p;
    });
    for (const t of tasks) expect((await t.waitExit(60_000)).code, t.output).toBe(0);
    if (haveAddon) expect(tasks[1]!.output).toMatch(/backend native/);
    expectEveryEpochExact(epochsOf(out), 100, 1);
  }, 90_000);
});
