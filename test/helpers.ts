/** Test helpers: a real coordinator on port 0 with in-process workers, on small configurations. */
import { mkdtempSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import * as tf from '@tensorflow/tfjs-core';
import { initBackend } from '../shared/backend/choose.js';
import { Coordinator, type CoordinatorOptions } from '../coordinator/coordinator.js';
import { type TrainConfig, defaultTrainConfig } from '../coordinator/config.js';
import { type Dataset, loadEmbedded } from '../shared/data/mnist.js';
import type { WorkerClient } from '../worker/worker.js';
import { type NodeWorkerOptions, nodeWorker } from '../worker/node.js';
import { type WireFaults, faultyWorker } from './util-wire.js';

/** The wasm backend as the product sets it up (with its fast matrix products). */
export async function useWasm(): Promise<void> {
  if (tf.getBackend() !== 'wasm') await initBackend('wasm', { log: () => {} });
}

export const tinyModel = {
  kind: 'gan' as const,
  noiseDim: 16,
  imageDim: 784,
  numClasses: 10,
  gHidden: [32, 64],
  dHidden: [64, 32],
  dropout: 0.3,
  leak: 0.2,
};

export function tinyConfig(over: Partial<TrainConfig> = {}): TrainConfig {
  return {
    ...defaultTrainConfig,
    model: tinyModel,
    workers: 2,
    batchSize: 10,
    epochs: 1,
    checkpointEvery: 0,
    roundTimeoutMs: 20_000,
    ...over,
  };
}

/** The first n embedded training digits (class-balanced: they are interleaved). */
export function smallData(n: number): Dataset {
  const d = loadEmbedded().train;
  return { ...d, n, images: d.images.slice(0, n * 784), labels: d.labels.slice(0, n), source: `embedded:train[0:${n}]` };
}

export function tempDir(prefix = 'gan-ddp-'): string {
  return mkdtempSync(join(tmpdir(), prefix));
}

export interface Cluster {
  coord: Coordinator;
  workers: WorkerClient[];
  url: string;
  runs: Promise<void>[];
  /** A worker; `faults` are injected on its wire (util-wire.ts). */
  addWorker(over?: Partial<NodeWorkerOptions> & { faults?: WireFaults }): WorkerClient;
  /** Train to the end and close everything; returns the coordinator. */
  finish(): Promise<Coordinator>;
}

export async function startCluster(
  config: TrainConfig,
  data: Dataset,
  opts: Partial<CoordinatorOptions> & { workerOpts?: Partial<NodeWorkerOptions>; startWorkers?: number } = {},
): Promise<Cluster> {
  await useWasm();
  const { workerOpts, startWorkers, ...coordOpts } = opts;
  const coord = new Coordinator({ config, host: '127.0.0.1', port: 0, out: tempDir(), dataset: data, ...coordOpts });
  const port = await coord.start();
  const url = `ws://127.0.0.1:${port}`;
  const workers: WorkerClient[] = [];
  const runs: Promise<void>[] = [];
  const addWorker = ({ faults, ...over }: Partial<NodeWorkerOptions> & { faults?: WireFaults } = {}) => {
    // Frames unless a test asks for shared memory: most tests are about what crosses a wire.
    const o = { url, backend: 'wasm', connectTimeoutMs: 5000, sameHost: false, ...workerOpts, ...over };
    const w = faults ? faultyWorker(o, faults) : nodeWorker(o);
    workers.push(w);
    const run = w.run();
    // A worker refused for good is an outcome a test inspects, not a crash of the test process.
    run.catch(() => {});
    runs.push(run);
    return w;
  };
  for (let i = 0; i < (startWorkers ?? config.workers); i++) addWorker();
  return {
    coord, workers, url, runs, addWorker,
    async finish() {
      try {
        await coord.train();
      } finally {
        await coord.close();
      }
      await Promise.allSettled(runs);
      for (const w of workers) w.model?.dispose();
      return coord;
    },
  };
}

/** Largest elementwise difference of two weight vectors, relative to their largest magnitude. */
export function maxRelDiff(a: Float32Array, b: Float32Array): number {
  let worst = 0;
  let scale = 0;
  for (let i = 0; i < a.length; i++) scale = Math.max(scale, Math.abs(a[i]!), Math.abs(b[i]!));
  for (let i = 0; i < a.length; i++) worst = Math.max(worst, Math.abs(a[i]! - b[i]!) / scale);
  return worst;
}

/** Deterministic values in [-1, 1) with a few exact zeros, so activations see both signs. */
export function values(n: number, seed: number): Float32Array {
  const out = new Float32Array(n);
  let s = seed >>> 0 || 1;
  for (let i = 0; i < n; i++) {
    s = (Math.imul(s, 1664525) + 1013904223) >>> 0;
    out[i] = i % 11 === 3 ? 0 : s / 2 ** 31 - 1;
  }
  return out;
}

/** d f / d w[i] by central differences with step h, in double precision. */
export function centralDifference(f: (w: Float32Array) => number, w: Float32Array, i: number, h: number): number {
  const up = w.slice();
  up[i]! += h;
  const down = w.slice();
  down[i]! -= h;
  return (f(up) - f(down)) / (2 * h);
}
