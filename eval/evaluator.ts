/**
 * Evaluating a generator's weights: sample it, classify the samples, score them against the real
 * test digits. Used by the `evaluate` command and by `--eval-every` during training.
 */
import type { MnistSplits } from '../shared/data/mnist.js';
import { type ModelConfig, isConditional } from '../shared/compute/model.js';
import { Stream, seededNoise } from '../shared/compute/rng.js';
import { sampleGenerator } from '../shared/compute/sampling.js';
import { type Classifier, type ClassifierOptions, getClassifier } from './classifier.js';
import { type EvalResult, evaluateImages } from './score-images.js';

export interface Evaluator {
  evaluate(model: ModelConfig, gWeights: Float32Array, samples: number, seed?: number): EvalResult;
  readonly classifier: Classifier;
  dispose(): void;
}

/** `judge` overrides the classifier's training settings (tests use a quicker judge). */
export async function makeEvaluator(data: MnistSplits, log?: (s: string) => void, judge: Partial<ClassifierOptions> = {}): Promise<Evaluator> {
  const classifier = await getClassifier({ data, log, ...judge });
  return {
    classifier,
    evaluate(model, gWeights, samples, seed = 0) {
      const noise = seededNoise(samples * model.noiseDim, seed, Stream.fixedNoise, 11);
      // Conditional models are asked for every digit equally often.
      const asked = isConditional(model) ? new Uint8Array(samples).map((_, i) => i % model.numClasses) : undefined;
      const images = sampleGenerator(model, gWeights, noise, asked);
      return evaluateImages(images, { classifier, real: data.test, train: data.train, asked });
    },
    dispose: () => classifier.dispose(),
  };
}
