/**
 * `npm run ablate -- [flags]`: train one recipe in this process with the trainer's own modules
 * (the worker's batches and gradients, the coordinator's Adam and moving average) and score it
 * every few rounds with the shipped judge. The updates are those of one worker at the global
 * batch, so a recipe can be compared with another in minutes, without workers or a network; the
 * README's ablation tables come from it. Not a benchmark: its times are only for orientation.
 */
import { writeFileSync } from 'node:fs';
import { Command, Option } from 'commander';
import { die, floatArg, intArg, isMain } from '../cli/args.js';
import { initBackend } from '../shared/backend/choose.js';
import { GanModel } from '../shared/compute/gan.js';
import { type ModelKind, type Net, MODEL_KINDS, MODEL_LIMITS, initWeights, netLayout } from '../shared/compute/model.js';
import { buildBatch } from '../shared/compute/batch.js';
import { Stream, permutation } from '../shared/compute/rng.js';
import { fixedNoise, sampleGenerator } from '../shared/compute/sampling.js';
import { digitBytes } from '../shared/data/digits.js';
import { loadMnist } from '../shared/data/mnist.js';
import { gridPng } from '../shared/data/png.js';
import { adamApply, adamHyper, adamState, emaUpdate } from '../coordinator/optimizer.js';
import { defaultTrainConfig, kindModel } from '../coordinator/config.js';
import { makeEvaluator } from '../eval/evaluator.js';

export interface AblateOptions {
  model: ModelKind; rounds: number; batch: number; lrD: number; lrG: number; dropout: number; r1: number;
  ema: number; beta1: number; beta2: number; every: number; samples: number; seed: number; threads: number; grid?: string;
}

function program(): Command {
  return new Command('ablate')
    .description('Train one recipe in this process and score it every few rounds (the updates of one worker at the global batch).')
    .addOption(new Option('--model <kind>', 'model kind').choices([...MODEL_KINDS]).default('gan'))
    .option('--rounds <n>', 'rounds to train', intArg(1), 1500)
    .option('--batch <n>', 'global batch (samples per round)', intArg(1, 100000), 200)
    .option('--lr-d <x>', 'discriminator learning rate', floatArg(0, 10, { exclusiveMin: true }), 1e-3)
    .option('--lr-g <x>', 'generator learning rate', floatArg(0, 10, { exclusiveMin: true }), 1e-3)
    .option('--dropout <p>', 'dropout after each hidden layer of D', floatArg(0, 0.95), 0)
    .option('--r1 <gamma>', 'weight of the R1 penalty on real digits (0: off)', floatArg(0, MODEL_LIMITS.maxR1), 0)
    .option('--ema <decay>', "moving average of G's weights, scored instead of the latest (0: off)", floatArg(0, 0.999999), 0.999)
    .option('--beta1 <x>', 'Adam beta1', floatArg(0, 0.999999), defaultTrainConfig.beta1)
    .option('--beta2 <x>', 'Adam beta2', floatArg(0, 0.999999), defaultTrainConfig.beta2)
    .option('--every <n>', 'score every this many rounds and after the last', intArg(1), 300)
    .option('--samples <n>', 'samples per evaluation', intArg(10, 100000), 1000)
    .option('--seed <n>', 'seed of data order, noise, dropout and initial weights', intArg(0, 2 ** 32 - 1), 1)
    .option('--threads <n>', 'compute threads', intArg(1, 256), 2)
    .option('--grid <file.png>', 'write a 10 x 10 grid of the scored weights after the last round');
}

export async function ablate(o: AblateOptions, log: (line: string) => void): Promise<void> {
  await initBackend('auto', { threads: o.threads, log: () => {} });
  const cfg = kindModel(o.model, o);
  const data = loadMnist();
  const evaluator = await makeEvaluator(data);
  const model = new GanModel(cfg);
  const layouts = { G: netLayout(cfg, 'G'), D: netLayout(cfg, 'D') };
  const w = { G: initWeights(layouts.G, o.seed), D: initWeights(layouts.D, o.seed) };
  const adam = { G: adamState(layouts.G.total), D: adamState(layouts.D.total) };
  const average = o.ema > 0 ? w.G.slice() : null;
  // The model holds each net's latest weights: both now, then after each step the net it changed.
  model.setWeights('G', w.G);
  model.setWeights('D', w.D);
  const src = { image: (id: number) => digitBytes(data.train.images, id), label: (id: number) => data.train.labels[id]! };
  const n = data.train.n;
  let epoch = 0;
  let next = 0;
  let order = permutation(n, o.seed, Stream.epochOrder, epoch);
  const t0 = performance.now();
  log(`ablate ${JSON.stringify(o)}`);
  for (let round = 1; round <= o.rounds; round++) {
    // As the coordinator deals an epoch: the next samples of its permutation, the last round smaller.
    if (next >= n) {
      epoch++;
      next = 0;
      order = permutation(n, o.seed, Stream.epochOrder, epoch);
    }
    const ids = order.subarray(next, Math.min(n, next + o.batch));
    next += ids.length;
    for (const net of ['D', 'G'] as Net[]) {
      const batch = buildBatch(cfg, { seed: o.seed, epoch, phase: net }, ids, src);
      const r = net === 'D' ? model.dStep(batch) : model.gStep(batch);
      adam[net].t++;
      adamApply(w[net], r.grads, adam[net].m, adam[net].v, adamHyper(adam[net].t, { lr: net === 'D' ? o.lrD : o.lrG, beta1: o.beta1, beta2: o.beta2, epsilon: defaultTrainConfig.epsilon }));
      model.setWeights(net, w[net]);
      if (net === 'G' && average) emaUpdate(average, w.G, o.ema, adam.G.t);
    }
    if (round % o.every === 0 || round === o.rounds) {
      const e = evaluator.evaluate(cfg, average ?? w.G, o.samples);
      const latest = average ? evaluator.evaluate(cfg, w.G, o.samples) : null;
      const cond = e.conditionalAccuracy === undefined ? '' : ` conditional ${(100 * e.conditionalAccuracy).toFixed(1)}%`;
      log(`round ${round} epoch ${epoch} ${((performance.now() - t0) / 1000).toFixed(0)} s: FD ${e.fd.toFixed(2)} (floor ${e.fdFloor?.toFixed(2)}) score ${e.classifierScore.toFixed(2)} digits ${e.coverage} KL ${e.klUniform.toFixed(3)}${cond}` +
        (latest ? ` | latest G: FD ${latest.fd.toFixed(2)} score ${latest.classifierScore.toFixed(2)} digits ${latest.coverage}` : ''));
    }
  }
  if (o.grid) {
    const { noise, labels } = fixedNoise(cfg, o.seed, 100);
    writeFileSync(o.grid, gridPng(sampleGenerator(cfg, average ?? w.G, noise, labels), 100, 10));
  }
  model.dispose();
  evaluator.dispose();
}

if (isMain(import.meta.url)) {
  ablate(program().parse().opts<AblateOptions>(), (l) => console.log(l)).catch((e) => die('ablate', e));
}
