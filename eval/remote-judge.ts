/**
 * The coordinator's side of the judge process (judge-process.ts): started with the run, so that
 * the classifier is ready (loaded, or trained on the run's digits) by the first evaluation, and
 * asked to score a copy of the generator's weights without the round loop waiting for the answer.
 * A judge that fails costs its evaluations, never the run: they reject with the reason.
 */
import { type ChildProcess, fork } from 'node:child_process';
import { existsSync } from 'node:fs';
import { join } from 'node:path';
import { fileURLToPath } from 'node:url';
import type { ModelConfig } from '../shared/compute/model.js';
import { packageRoot } from '../shared/paths.js';
import type { JudgeRequest } from './judge-process.js';
import type { EvalResult } from './score-images.js';

export interface JudgeOptions {
  /** MNIST IDX directory of the run (null: the embedded digits). */
  data: string | null;
  /** TensorFlow.js backend of the judge. */
  backend: string;
  log: (line: string) => void;
}

type Reply = { k: 'log'; line: string } | { k: 'result'; id: number; result: EvalResult } | { k: 'error'; id?: number; message: string };

/** The compiled judge-process.js, also when this module runs from its TypeScript source (tests). */
function entry(): string {
  const beside = fileURLToPath(new URL('./judge-process.js', import.meta.url));
  if (existsSync(beside)) return beside;
  return join(packageRoot() ?? process.cwd(), 'dist', 'eval', 'judge-process.js');
}

export class RemoteJudge {
  private readonly child: ChildProcess;
  private readonly waiting = new Map<number, { resolve: (r: EvalResult) => void; reject: (e: Error) => void }>();
  private nextId = 0;
  private failure: Error | null = null;

  constructor(o: JudgeOptions) {
    this.child = fork(entry(), [], {
      serialization: 'advanced',
      stdio: ['ignore', 'ignore', 'pipe', 'ipc'],
      env: { ...process.env, GAN_DDP_JUDGE_DATA: o.data ?? '', GAN_DDP_JUDGE_BACKEND: o.backend },
    });
    this.child.stderr!.on('error', () => {});
    this.child.stderr!.setEncoding('utf8');
    this.child.stderr!.on('data', (s: string) => {
      for (const line of s.split('\n')) if (line.trim()) o.log(`judge: ${line}`);
    });
    this.child.on('message', (m: Reply) => {
      if (m.k === 'log') o.log(m.line);
      else if (m.k === 'result') this.settle(m.id, null, m.result);
      else if (m.id !== undefined) this.settle(m.id, new Error(m.message));
      else this.fail(new Error(m.message));
    });
    this.child.on('error', (e) => this.fail(e));
    this.child.on('exit', (code, signal) => this.fail(new Error(`the judge process exited (${signal ?? `code ${code}`})`)));
  }

  /** Score `weights` (copied now: the run goes on changing its own) with `samples` samples. */
  evaluate(model: ModelConfig, weights: Float32Array, samples: number, seed: number): Promise<EvalResult> {
    if (this.failure) return Promise.reject(this.failure);
    const id = this.nextId++;
    const req: JudgeRequest = { id, model, weights: Float32Array.from(weights), samples, seed };
    return new Promise((resolve, reject) => {
      this.waiting.set(id, { resolve, reject });
      this.child.send(req, (e) => e && this.settle(id, e));
    });
  }

  /** Evaluations asked for and not answered yet. */
  get pending(): number {
    return this.waiting.size;
  }

  /** Stop the judge; unanswered evaluations reject. */
  close(): Promise<void> {
    const exited = new Promise<void>((r) => (this.child.exitCode !== null || this.child.signalCode !== null ? r() : this.child.once('exit', () => r())));
    if (this.child.connected) this.child.disconnect();
    const t = setTimeout(() => this.child.kill('SIGKILL'), 5000);
    return exited.finally(() => clearTimeout(t));
  }

  private settle(id: number, error: Error | null, result?: EvalResult): void {
    const w = this.waiting.get(id);
    if (!w) return;
    this.waiting.delete(id);
    if (error) w.reject(error);
    else w.resolve(result!);
  }

  private fail(e: Error): void {
    this.failure ??= e;
    for (const id of [...this.waiting.keys()]) this.settle(id, this.failure);
  }
}
