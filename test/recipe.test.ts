/**
 * The training recipe: the per-kind defaults the coordinator command applies when a flag is not
 * given, the discriminator every new cgan run gets, and data parallelism with it.
 */
import { describe, expect, it } from 'vitest';
import { existsSync, readFileSync } from 'node:fs';
import { join } from 'node:path';
import { modelConfigProblem, modelSignature } from '../shared/compute/model.js';
import { CGAN_D, defaultTrainConfig, kindDefaults, seedRecipe } from '../coordinator/config.js';
import { evalDue, program, trainConfig, type CliOptions } from '../cli/coordinator.js';
import { maxRelDiff, smallData, startCluster, tempDir, tinyConfig, tinyModel } from './helpers.js';
import { dist, repoRoot, requireDist, runNode } from './util-proc.js';

/** The coordinator flags `npm start` runs with, from package.json. */
function startArgs(): string[] {
  const pkg = JSON.parse(readFileSync(join(repoRoot, 'package.json'), 'utf8')) as { scripts: Record<string, string> };
  const m = /^node dist\/cli\/coordinator\.js (.*)$/.exec(pkg.scripts.start!);
  if (!m) throw new Error(`npm start is not the coordinator: ${pkg.scripts.start}`);
  return m[1]!.split(' ');
}

function parse(args: string[]): CliOptions {
  return program().parse(['node', 'coordinator', ...args]).opts<CliOptions>();
}

describe('per-kind defaults of the coordinator command', () => {
  it.each(['gan', 'cgan', 'acgan'] as const)('--model %s alone trains with the kind defaults', (kind) => {
    const c = trainConfig(parse(['--model', kind]));
    const k = kindDefaults[kind];
    expect(c).toMatchObject({ epochs: k.epochs, batchSize: k.batchSize, lrD: k.lrD, lrG: k.lrG, emaDecay: k.emaDecay });
    expect(c.model.dropout).toBe(k.dropout);
    expect(c.model.r1 ?? 0).toBe(k.r1);
    // Every new cgan run has the projection, matching-aware D; the other kinds carry neither field.
    if (kind === 'cgan') expect(c.model).toMatchObject({ dLabel: 'projection', matchingAware: true });
    else expect('dLabel' in c.model || 'matchingAware' in c.model).toBe(false);
    expect(modelConfigProblem(c.model)).toBeNull();
    // What neither the flags nor the kind set still comes from the seed's configuration.
    expect(c).toMatchObject({ beta1: defaultTrainConfig.beta1, beta2: defaultTrainConfig.beta2, epsilon: defaultTrainConfig.epsilon, checkpointEvery: defaultTrainConfig.checkpointEvery });
    expect(c.model).toMatchObject({ gHidden: [256, 512, 1024], dHidden: [1024, 512, 256], noiseDim: 100, leak: 0.2 });
  });

  it('a flag given wins over the kind default; --lr sets both rates unless --lr-d / --lr-g say otherwise', () => {
    const c = trainConfig(parse(['--model', 'cgan', '--epochs', '3', '--batch-size', '7', '--lr', '1e-4', '--lr-g', '3e-4', '--ema', '0', '--dropout', '0.2']));
    expect(c).toMatchObject({ epochs: 3, batchSize: 7, lrD: 1e-4, lrG: 3e-4, emaDecay: 0 });
    expect(c.model).toMatchObject({ dropout: 0.2, ...CGAN_D });
    expect(trainConfig(parse(['--model', 'acgan', '--lr', '1e-4']))).toMatchObject({ lrD: 1e-4, lrG: 1e-4, epochs: kindDefaults.acgan.epochs });
    expect(trainConfig(parse(['--model', 'cgan', '--r1', '2'])).model.r1).toBe(2);
    expect('r1' in trainConfig(parse(['--model', 'gan', '--r1', '0'])).model).toBe(false);
  });

  it('--recipe seed trains with the seed\'s settings whatever the kind; flags still win', () => {
    for (const kind of ['gan', 'cgan', 'acgan'] as const) {
      const c = trainConfig(parse(['--model', kind, '--recipe', 'seed']));
      expect(c).toMatchObject({ epochs: 30, batchSize: 100, lrD: 2e-4, lrG: 2e-4, emaDecay: 0 });
      expect(c.model.dropout).toBe(0.3);
    }
    expect(seedRecipe).toEqual({ epochs: 30, batchSize: 100, lrD: 2e-4, lrG: 2e-4, emaDecay: 0, dropout: 0.3, r1: 0 });
    // Everything that governs the seed recipe's arithmetic, written out: a new default elsewhere
    // (a penalty, a rate, a field in the model signature) must not reach it.
    const seedGan = trainConfig(parse(['--model', 'gan', '--recipe', 'seed']));
    expect(seedGan).toEqual({
      model: { kind: 'gan', noiseDim: 100, imageDim: 784, numClasses: 10, gHidden: [256, 512, 1024], dHidden: [1024, 512, 256], dropout: 0.3, leak: 0.2 },
      seed: 1, workers: 4, minWorkers: 1, batchSize: 100, epochs: 30, maxRounds: 0, lrD: 2e-4, lrG: 2e-4, beta1: 0.5, beta2: 0.999, epsilon: 1e-8,
      data: null, checkpointEvery: 50, roundTimeoutMs: 60_000, wire: 'fp32', evalEvery: 0, emaDecay: 0, syncEvery: 1, outerLr: 1, outerMomentum: 0,
    });
    expect(modelSignature(seedGan.model)).toBe('gan;G:100x256,256,256x512,512,512x1024,1024,1024x784,784;D:784x1024,1024,1024x512,512,512x256,256,256x1,1');
    expect(trainConfig(parse(['--recipe', 'seed', '--epochs', '2']))).toMatchObject({ epochs: 2, batchSize: 100 });
    expect(() => program().exitOverride().configureOutput({ writeErr: () => {} }).parse(['node', 'c', '--recipe', 'fast'])).toThrow(/Allowed choices are tuned, seed/);
  });

  it('--eval-every K scores every K-th epoch and the last one, never with 0', () => {
    expect([1, 2, 3, 4, 5, 6, 7].filter((e) => evalDue(e, 3, 7))).toEqual([3, 6, 7]);
    expect([1, 2, 3, 4].filter((e) => evalDue(e, 10, 4))).toEqual([4]);
    expect([1, 2, 3].filter((e) => evalDue(e, 0, 3))).toEqual([]);
  });

  it('--help names the per-kind defaults', () => {
    const help = program().helpInformation().replace(/\s+/g, ' ');
    for (const kind of ['gan', 'cgan', 'acgan'] as const) expect(help).toContain(`${kind} ${kindDefaults[kind].epochs}`);
  });
});

describe('each kind\'s defaults, end to end', () => {
  it.each(['gan', 'cgan', 'acgan'] as const)('--model %s alone trains the real model: 2 rounds, finite losses and weights', async (kind) => {
    const config = { ...trainConfig(parse(['--model', kind, '--workers', '2', '--max-rounds', '2'])), checkpointEvery: 0 };
    const coord = await (await startCluster(config, smallData(400))).finish();
    expect(coord.round).toBe(2);
    const rounds = coord.runDir.metrics();
    expect(rounds).toHaveLength(2);
    for (const m of rounds) {
      expect(m.global_batch).toBe(2 * kindDefaults[kind].batchSize);
      expect(Number.isFinite(m.d_loss) && Number.isFinite(m.g_loss)).toBe(true);
    }
    for (const net of ['D', 'G'] as const) expect(coord.model.weights[net].every(Number.isFinite)).toBe(true);
  }, 120_000);
});

describe('npm run ablate', () => {
  it('trains a recipe in one process with the trainer\'s modules and scores it as it goes', async () => {
    requireDist();
    const grid = join(tempDir(), 'grid.png');
    const r = await runNode(dist.ablate, ['--rounds', '4', '--every', '2', '--batch', '40', '--samples', '100', '--r1', '10', '--threads', '1', '--grid', grid], { timeoutMs: 120_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    const rounds = r.stdout.split('\n').filter((l) => l.startsWith('round '));
    expect(rounds.map((l) => l.split(' ')[1])).toEqual(['2', '4']);
    for (const l of rounds) expect(l).toMatch(/FD \d+\.\d+ \(floor \d+\.\d+\) score \d\.\d+ digits \d+ KL .* \| latest G: FD \d/);
    expect(readFileSync(grid).subarray(1, 4).toString()).toBe('PNG');
    const bad = await runNode(dist.ablate, ['--r1', '-1'], { timeoutMs: 30_000 });
    expect(bad.code).not.toBe(0);
    expect(bad.stderr).toMatch(/r1/);
  }, 150_000);
});

describe('data parallelism with the cgan discriminator', () => {
  it.each([
    ['projection', { ...tinyModel, kind: 'cgan' as const, dLabel: 'projection' as const, dropout: 0 }],
    ['projection, matching-aware, with dropout', { ...tinyModel, kind: 'cgan' as const, ...CGAN_D, dropout: 0.3 }],
  ])('%s: two workers at batch b/2 give the same weights after 5 rounds as one worker at batch b; the same seed the same bits', async (_name, model) => {
    const data = smallData(200);
    const one = await (await startCluster(tinyConfig({ model, workers: 1, batchSize: 20, maxRounds: 5 }), data)).finish();
    const two = await (await startCluster(tinyConfig({ model, workers: 2, batchSize: 10, maxRounds: 5 }), data)).finish();
    const again = await (await startCluster(tinyConfig({ model, workers: 2, batchSize: 10, maxRounds: 5 }), data)).finish();
    for (const net of ['D', 'G'] as const) {
      expect(maxRelDiff(one.model.weights[net], two.model.weights[net])).toBeLessThan(1e-5);
      expect(Buffer.from(two.model.weights[net].buffer).equals(Buffer.from(again.model.weights[net].buffer))).toBe(true);
    }
    const fresh = await (await startCluster(tinyConfig({ model, workers: 1, batchSize: 20, maxRounds: 0, epochs: 0 }), data)).finish();
    expect(maxRelDiff(fresh.model.weights.D, one.model.weights.D)).toBeGreaterThan(1e-4);
  }, 90_000);
});

describe('the main job (npm start)', () => {
  it('is the command the README documents', () => {
    const readme = readFileSync(join(repoRoot, 'README.md'), 'utf8');
    expect(readme).toContain(`\`npm start\` runs \`coordinator ${startArgs().join(' ')}\``);
  });

  it('its configuration trains: 4 spawned workers, the cgan defaults, the real model, a few rounds', async () => {
    requireDist();
    const out = join(tempDir(), 'run');
    const r = await runNode(dist.coordinator, [...startArgs(), '--max-rounds', '2', '--eval-every', '0', '--port', '0', '--out', out], { timeoutMs: 170_000 });
    expect(r.code, r.stdout + r.stderr).toBe(0);
    expect(r.stdout).toMatch(/global batch 200 \(4 workers x 50\)/);
    expect(r.stdout).toMatch(/done: 2 rounds/);
    const cfg = JSON.parse(readFileSync(join(out, 'config.json'), 'utf8')) as ReturnType<typeof trainConfig>;
    expect(cfg).toMatchObject({ workers: 4, batchSize: 50, epochs: kindDefaults.cgan.epochs, lrD: kindDefaults.cgan.lrD, lrG: kindDefaults.cgan.lrG, evalEvery: 0 });
    expect(cfg.model).toMatchObject({ kind: 'cgan', ...CGAN_D, gHidden: [256, 512, 1024], dHidden: [1024, 512, 256], noiseDim: 100 });
    expect(existsSync(join(out, 'samples', 'final.png'))).toBe(true);
  }, 180_000);
});
