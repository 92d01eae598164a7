/**
 * The seed model (Goodfellow et al. 2014, MLP GAN) described as data: layer shapes in order,
 * flat parameter layout, initial weights. Both sides agree on this layout; the handshake compares
 * signatures so a worker built for another model is refused.
 *
 *   G: z(100) [+ one-hot label(10) for cgan, acgan] -> 256 -> 512 -> 1024 -> 784, LeakyReLU(0.2), tanh out
 *   D: x(784) [+ one-hot label(10) for cgan] -> 1024 -> 512 -> 256 -> 1 logit [+ 10 class logits for acgan],
 *      LeakyReLU(0.2) and dropout after each hidden layer
 *
 * gan is Goodfellow et al. (2014); cgan is Mirza & Osindero (2014), the label joining G's noise and
 * D's image; acgan is Odena et al. (2017), the label joining G's noise while D predicts it.
 */
import { Rng, Stream } from './rng.js';

export type ModelKind = 'gan' | 'cgan' | 'acgan';
export const MODEL_KINDS: readonly ModelKind[] = ['gan', 'cgan', 'acgan'];
export type Net = 'D' | 'G';

export interface ModelConfig {
  kind: ModelKind;
  noiseDim: number;
  imageDim: number;
  numClasses: number;
  gHidden: number[];
  dHidden: number[];
  /** Dropout rate after each hidden layer of D (0 turns it off). */
  dropout: number;
  /** LeakyReLU negative slope. */
  leak: number;
}

export const defaultModelConfig: ModelConfig = {
  kind: 'gan',
  noiseDim: 100,
  imageDim: 784,
  numClasses: 10,
  gHidden: [256, 512, 1024],
  dHidden: [1024, 512, 256],
  dropout: 0.3,
  leak: 0.2,
};

export interface ParamShape {
  name: string;
  shape: number[];
  /** Offset of this parameter in the flat vector, in elements. */
  offset: number;
  size: number;
}

export interface NetLayout {
  net: Net;
  /** Layer widths from input to output. */
  widths: number[];
  params: ParamShape[];
  total: number;
}

function layout(net: Net, widths: number[]): NetLayout {
  const params: ParamShape[] = [];
  let offset = 0;
  for (let i = 0; i + 1 < widths.length; i++) {
    const fanIn = widths[i]!;
    const fanOut = widths[i + 1]!;
    params.push({ name: `${net}.${i}.W`, shape: [fanIn, fanOut], offset, size: fanIn * fanOut });
    offset += fanIn * fanOut;
    params.push({ name: `${net}.${i}.b`, shape: [fanOut], offset, size: fanOut });
    offset += fanOut;
  }
  return { net, widths, params, total: offset };
}

/** Whether G takes a label: the model can be asked for a chosen digit. */
export function isConditional(cfg: ModelConfig): boolean {
  return cfg.kind === 'cgan' || cfg.kind === 'acgan';
}

/** Width of the one-hot label a net takes beside its input (0: none). */
export function conditionDim(cfg: ModelConfig, net: Net): number {
  if (net === 'G') return isConditional(cfg) ? cfg.numClasses : 0;
  return cfg.kind === 'cgan' ? cfg.numClasses : 0;
}

/** Class logits D outputs after its real/fake logit (acgan only). */
export function auxClasses(cfg: ModelConfig): number {
  return cfg.kind === 'acgan' ? cfg.numClasses : 0;
}

export function netLayout(cfg: ModelConfig, net: Net): NetLayout {
  const c = conditionDim(cfg, net);
  return net === 'G'
    ? layout('G', [cfg.noiseDim + c, ...cfg.gHidden, cfg.imageDim])
    : layout('D', [cfg.imageDim + c, ...cfg.dHidden, 1 + auxClasses(cfg)]);
}

/** What the handshake compares: model kind and every parameter shape in order. */
export function modelSignature(cfg: ModelConfig): string {
  const g = netLayout(cfg, 'G');
  const d = netLayout(cfg, 'D');
  const shapes = (l: NetLayout) => l.params.map((p) => p.shape.join('x')).join(',');
  return `${cfg.kind};G:${shapes(g)};D:${shapes(d)}`;
}

/**
 * Initial weights as PyTorch's nn.Linear does it: W and b ~ U(-1/sqrt(fanIn), 1/sqrt(fanIn)).
 * Seeded, so every run with the same seed starts from the same point.
 */
export function initWeights(l: NetLayout, seed: number): Float32Array {
  const out = new Float32Array(l.total);
  l.params.forEach((p, i) => {
    const rng = new Rng(seed, Stream.init, l.net === 'G' ? 0 : 1, i);
    const fanIn = p.shape.length === 2 ? p.shape[0]! : l.params[i - 1]!.shape[0]!;
    const bound = 1 / Math.sqrt(fanIn);
    for (let k = 0; k < p.size; k++) out[p.offset + k] = (rng.uniform() * 2 - 1) * bound;
  });
  return out;
}
