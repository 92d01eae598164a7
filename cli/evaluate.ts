#!/usr/bin/env node
/**
 * `evaluate RUN_DIR`: score a trained generator with the project's MNIST classifier (trained once
 * and cached), write RUN_DIR/eval.json (eval-raw.json with --raw) and print a table.
 */
import { Command, Option } from 'commander';
import { BACKEND_NAMES, type BackendName, initBackend } from '../shared/backend/choose.js';
import { die, intArg, isMain } from './args.js';
import { loadMnist } from '../shared/data/mnist.js';
import { generatorWeights } from '../coordinator/checkpoint.js';
import { RunDir, loadCheckpoint } from '../coordinator/run-dir.js';
import type { ClassifierOptions } from '../eval/classifier.js';
import { formatEvalTable } from '../eval/score-images.js';
import { makeEvaluator } from '../eval/evaluator.js';

export interface EvaluateOptions {
  samples: number;
  data?: string;
  seed: number;
  raw?: boolean;
  backend: BackendName;
}

export function program(): Command {
  return new Command('evaluate')
    .description('Score a trained generator: Fréchet distance in classifier features, classifier score, digit coverage, conditional accuracy.')
    .argument('<run_dir>', 'run directory (with checkpoint.bin)')
    .option('--samples <n>', 'generated images to score', intArg(10, 100000), 2000)
    .option('--data <dir>', 'MNIST IDX files for the classifier and the real reference (default: what the run trained on)')
    .option('--seed <n>', 'noise seed', intArg(0, 2 ** 32 - 1), 0)
    .option('--raw', 'score G\'s latest weights instead of their moving average (runs with --ema)', false)
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(BACKEND_NAMES as string[]).default('auto'));
}

export async function evaluateRun(
  runDir: string,
  o: EvaluateOptions,
  log: (s: string) => void,
  judge: Partial<ClassifierOptions> = {},
): Promise<{ file: string; result: Record<string, unknown> }> {
  const s = loadCheckpoint(runDir);
  await initBackend(o.backend, { log });
  const data = loadMnist(o.data ?? s.config.data ?? undefined);
  const ev = await makeEvaluator(data, log, judge);
  try {
    const g = generatorWeights(s, o.raw);
    const r = ev.evaluate(s.config.model, g, o.samples, o.seed);
    const weights = g === s.emaG ? 'average' : 'latest';
    log(`scoring ${s.config.model.kind} at round ${s.round}: G's ${weights === 'average' ? `moving average (decay ${s.config.emaDecay})` : 'latest weights'}` +
      (o.raw && !s.emaG ? ' (the run kept no average)' : ''));
    const out = { run: runDir, round: s.round, epoch: s.epoch, model: s.config.model.kind, weights, emaDecay: s.config.emaDecay, ...r };
    const file = new RunDir(runDir).writeEvalResult(!!o.raw, out);
    process.stdout.write(formatEvalTable(r) + '\n');
    return { file, result: out };
  } finally {
    ev.dispose();
  }
}

export function main(argv: string[]): void {
  const cmd = program();
  cmd.parse(argv);
  const log = (s: string) => process.stderr.write(`evaluate: ${s}\n`);
  evaluateRun(cmd.args[0]!, cmd.opts<EvaluateOptions>(), log).then(
    ({ file }) => {
      process.stdout.write(`wrote ${file}\n`);
      process.exit(0);
    },
    (e) => die('evaluate', e),
  );
}

if (isMain(import.meta.url)) main(process.argv);
