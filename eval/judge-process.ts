/**
 * The judge of `--eval-every` as a process of its own (started by remote-judge.ts): it gets its
 * classifier ready as soon as it starts (the shipped or cached one, or trained on the run's
 * digits) and scores the generator weights it is sent, one request at a time, while the
 * coordinator's rounds go on. It shares nothing with the coordinator but the IPC channel.
 *
 * Messages (structured clone over IPC): in `{ id, model, weights, samples, seed }`; out
 * `{ k: 'log', line }`, `{ k: 'result', id, result }` or `{ k: 'error', id?, message }`.
 */
import { initBackend, type BackendName } from '../shared/backend/choose.js';
import { loadMnist } from '../shared/data/mnist.js';
import type { ModelConfig } from '../shared/compute/model.js';
import { makeEvaluator } from './evaluator.js';

export interface JudgeRequest {
  id: number;
  model: ModelConfig;
  weights: Float32Array;
  samples: number;
  seed: number;
}

const send = (m: unknown) => process.send?.(m);
const log = (line: string) => send({ k: 'log', line });

const ready = (async () => {
  const data = process.env.GAN_DDP_JUDGE_DATA || undefined;
  const backend = (process.env.GAN_DDP_JUDGE_BACKEND || 'auto') as BackendName;
  // One thread: the judge shares the host with the run it judges.
  await initBackend(backend, { threads: 1, log });
  return makeEvaluator(loadMnist(data), log);
})();

// Listening from the start: requests sent while the classifier is still training wait their turn.
let queue: Promise<unknown> = ready;
process.on('message', (req: JudgeRequest) => {
  queue = queue.then(async () => {
    const evaluator = await ready;
    try {
      send({ k: 'result', id: req.id, result: evaluator.evaluate(req.model, req.weights, req.samples, req.seed) });
    } catch (e) {
      send({ k: 'error', id: req.id, message: (e as Error).message });
    }
  }, () => {});
});
// The coordinator closing the channel (or exiting) ends this process, nothing else: signals sent
// to a whole job or process group (SLURM's USR1 warning, Ctrl-C, a pod's SIGTERM) are the
// coordinator's to act on. A USR1 without a listener would also open Node's inspector.
process.on('disconnect', () => process.exit(0));
for (const sig of ['SIGUSR1', 'SIGINT', 'SIGTERM'] as const) process.on(sig, () => {});

ready.catch((e) => {
  const code = (e as { code?: string }).code;
  // Exit once the parent has the reason.
  process.send?.({ k: 'error', message: `${code ? `${code}: ` : ''}${(e as Error).message}` }, () => process.exit(1));
});
