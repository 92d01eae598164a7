#!/usr/bin/env node
/**
 * `generate`: sample a trained generator from a run directory (or checkpoint file) into a PNG grid.
 * For conditional models `--digit D` draws only that digit and `--digit all` one row per digit.
 */
import { writeFileSync } from 'node:fs';
import { Command, InvalidArgumentError, Option } from 'commander';
import { BACKEND_NAMES, type BackendName, initBackend } from '../shared/backend/choose.js';
import { die, intArg, isMain } from './args.js';
import { isConditional } from '../shared/compute/model.js';
import { gridPng } from '../shared/data/png.js';
import { Stream, seededNoise } from '../shared/compute/rng.js';
import { sampleGenerator } from '../shared/compute/sampling.js';
import { generatorWeights } from '../coordinator/checkpoint.js';
import { loadCheckpoint } from '../coordinator/run-dir.js';
import { GanError } from '../shared/wire/errors.js';

export interface GenerateOptions {
  checkpoint: string;
  out: string;
  count: number;
  digit?: number | 'all';
  seed: number;
  cols?: number;
  /** Sample G's latest weights even when the run kept a moving average. */
  raw?: boolean;
  backend: BackendName;
}

function digitArg(v: string): number | 'all' {
  if (v === 'all') return 'all';
  if (!/^\d$/.test(v)) throw new InvalidArgumentError('expected a digit 0-9 or "all".');
  return Number(v);
}

export function program(): Command {
  return new Command('generate')
    .description('Write a PNG grid of generated digits from a trained run.')
    .requiredOption('--checkpoint <run>', 'run directory (or checkpoint.bin file)')
    .option('--out <file>', 'PNG to write', 'samples.png')
    .option('--count <n>', 'how many images (with --digit all: per digit)', intArg(1, 10000), 64)
    .option('--digit <d>', 'conditional models: the digit to draw (0-9), or "all" for one row per digit', digitArg)
    .option('--seed <n>', 'noise seed', intArg(0, 2 ** 32 - 1), 0)
    .option('--cols <n>', 'grid columns (default: square)', intArg(1, 1000))
    .option('--raw', 'use G\'s latest weights instead of their moving average (runs with --ema)', false)
    .addOption(new Option('--backend <name>', 'TensorFlow.js backend').choices(BACKEND_NAMES as string[]).default('auto'));
}

export async function generate(o: GenerateOptions): Promise<{ file: string; count: number }> {
  const s = loadCheckpoint(o.checkpoint);
  const cfg = s.config.model;
  if (o.digit !== undefined && !isConditional(cfg)) {
    throw new GanError('E_ARGS', `--digit needs a conditional model (--model cgan or acgan); ${o.checkpoint} holds an unconditional ${cfg.kind}`);
  }
  await initBackend(o.backend, { log: () => {} });
  let labels: Uint8Array | undefined;
  let count = o.count;
  let cols = o.cols ?? Math.ceil(Math.sqrt(count));
  if (o.digit === 'all') {
    labels = new Uint8Array(10 * o.count);
    for (let i = 0; i < labels.length; i++) labels[i] = Math.floor(i / o.count);
    count = labels.length;
    cols = o.cols ?? o.count;
  } else if (isConditional(cfg)) {
    // Without --digit a conditional model cycles through the digits, one per column.
    labels = new Uint8Array(count).map((_, i) => (o.digit === undefined ? i % 10 : (o.digit as number)));
  }
  const noise = seededNoise(count * cfg.noiseDim, o.seed, Stream.fixedNoise, 7);
  const images = sampleGenerator(cfg, generatorWeights(s, o.raw), noise, labels);
  writeFileSync(o.out, gridPng(images, count, cols));
  return { file: o.out, count };
}

export function main(argv: string[]): void {
  const cmd = program();
  cmd.parse(argv);
  generate(cmd.opts<GenerateOptions>()).then(
    (r) => {
      process.stdout.write(`wrote ${r.count} samples to ${r.file}\n`);
      process.exit(0);
    },
    (e) => die('generate', e),
  );
}

if (isMain(import.meta.url)) main(process.argv);
