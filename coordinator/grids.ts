/** The run's sample grids: G (its moving average when kept) on the run's fixed noise, as PNG. */
import { type ModelConfig, isConditional } from '../shared/compute/model.js';
import { fixedNoise, sampleGenerator } from '../shared/compute/sampling.js';
import { gridPng } from '../shared/data/png.js';

export class SampleGrids {
  /** 8 columns, or 10 with one row per digit for conditional models. */
  readonly cols: number;
  private readonly noise: Float32Array;
  private readonly labels: Uint8Array;

  constructor(private readonly model: ModelConfig, seed: number) {
    this.cols = isConditional(model) ? 10 : 8;
    ({ noise: this.noise, labels: this.labels } = fixedNoise(model, seed, this.cols * this.cols));
  }

  /** The grid of the generator with these weights, as PNG bytes. */
  png(gWeights: Float32Array): Uint8Array {
    const images = sampleGenerator(this.model, gWeights, this.noise, isConditional(this.model) ? this.labels : undefined);
    return gridPng(images, this.cols * this.cols, this.cols);
  }
}
