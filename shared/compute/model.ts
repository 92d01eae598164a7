/**
 * The seed model (Goodfellow et al. 2014, MLP GAN) described as data: layer shapes in order,
 * flat parameter layout, initial weights. Both sides agree on this layout; the handshake compares
 * signatures so a worker built for another model is refused.
 *
 *   G: z(100) [+ one-hot label(10) for cgan, acgan] -> 256 -> 512 -> 1024 -> 784, LeakyReLU(0.2), tanh out
 *   D: x(784) -> 1024 -> 512 -> 256 (= phi(x)) -> 1 logit [+ 10 class logits for acgan],
 *      LeakyReLU(0.2) and dropout after each hidden layer;
 *      cgan with dLabel 'projection': logit + <embed(y), phi(x)>, embed a 10 x 256 matrix (D.embed);
 *      cgan with dLabel 'concat' (older builds): x(784) + one-hot label(10) -> 1024 -> ...
 *
 * gan is Goodfellow et al. (2014); cgan is the conditional GAN of Mirza & Osindero (2014), the label
 * joining G's noise, with D seeing the label either through the projection of Miyato & Koyama
 * (2018) or, as in Mirza & Osindero, concatenated to its input; acgan is Odena et al. (2017), the
 * label joining G's noise while D predicts it.
 */
import { Rng, Stream } from './rng.js';
import { DIGIT_PIXELS } from '../data/digits.js';

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
  /**
   * How a cgan's D sees the label: 'projection' (Miyato & Koyama 2018: the logit gains
   * <embed(y), phi(x)>, phi D's last hidden layer) or 'concat' (Mirza & Osindero: one-hot label
   * beside the image at D's input). Absent means 'concat', what builds before the field wrote.
   * Other kinds ignore it.
   */
  dLabel?: DLabel;
  /**
   * cgan only: matching-aware D (Reed et al. 2016): D also sees each real digit with a wrong
   * label, as fake. Absent means off.
   */
  matchingAware?: boolean;
  /**
   * Weight gamma of the R1 penalty (Mescheder et al. 2018): D's loss gains gamma/2 times the mean
   * squared norm of the gradient of D's logit w.r.t. each real image. Absent or 0 means off.
   */
  r1?: number;
}

export type DLabel = 'concat' | 'projection';
export const D_LABELS: readonly DLabel[] = ['concat', 'projection'];

export const defaultModelConfig: ModelConfig = {
  kind: 'gan',
  noiseDim: 100,
  imageDim: DIGIT_PIXELS,
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

/** Dense layers through `widths`; `embed` appends a classes x (last hidden width) matrix, D.embed. */
function layout(net: Net, widths: number[], embed = 0): NetLayout {
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
  if (embed > 0) {
    const width = widths[widths.length - 2]!;
    params.push({ name: `${net}.embed`, shape: [embed, width], offset, size: embed * width });
    offset += embed * width;
  }
  return { net, widths, params, total: offset };
}

/** Whether G takes a label: the model can be asked for a chosen digit. */
export function isConditional(cfg: ModelConfig): boolean {
  return cfg.kind === 'cgan' || cfg.kind === 'acgan';
}

/** Whether D reads the label through a projection (cgan with dLabel 'projection'). */
export function isProjection(cfg: ModelConfig): boolean {
  return cfg.kind === 'cgan' && cfg.dLabel === 'projection';
}

/** Whether D is given the label of each row (cgan, either way). */
export function dTakesLabel(cfg: ModelConfig): boolean {
  return cfg.kind === 'cgan';
}

/** Width of the one-hot label a net takes beside its input (0: none). */
export function conditionDim(cfg: ModelConfig, net: Net): number {
  if (net === 'G') return isConditional(cfg) ? cfg.numClasses : 0;
  return cfg.kind === 'cgan' && !isProjection(cfg) ? cfg.numClasses : 0;
}

/** Class logits D outputs after its real/fake logit (acgan only). */
export function auxClasses(cfg: ModelConfig): number {
  return cfg.kind === 'acgan' ? cfg.numClasses : 0;
}

export function netLayout(cfg: ModelConfig, net: Net): NetLayout {
  const c = conditionDim(cfg, net);
  return net === 'G'
    ? layout('G', [cfg.noiseDim + c, ...cfg.gHidden, cfg.imageDim])
    : layout('D', [cfg.imageDim + c, ...cfg.dHidden, 1 + auxClasses(cfg)], isProjection(cfg) ? cfg.numClasses : 0);
}

/** Whether a cgan's D also learns from real digits with wrong labels (other kinds: never). */
export function matchingAware(cfg: ModelConfig): boolean {
  return cfg.kind === 'cgan' && cfg.matchingAware === true;
}

/** The R1 penalty's weight gamma (0: off). */
export function r1Weight(cfg: ModelConfig): number {
  return cfg.r1 ?? 0;
}

/**
 * What the handshake compares: model kind, every parameter shape in order, and what else changes
 * the gradients a worker computes (a matching-aware D), so a build that would ignore it is refused
 * instead of computing another loss.
 */
export function modelSignature(cfg: ModelConfig): string {
  const g = netLayout(cfg, 'G');
  const d = netLayout(cfg, 'D');
  const shapes = (l: NetLayout) => l.params.map((p) => p.shape.join('x')).join(',');
  const ma = matchingAware(cfg) ? ';matching-aware' : '';
  const r1 = r1Weight(cfg) > 0 ? `;r1=${r1Weight(cfg)}` : '';
  return `${cfg.kind}${ma}${r1};G:${shapes(g)};D:${shapes(d)}`;
}

/**
 * Initial weights as PyTorch's nn.Linear does it: W and b ~ U(-1/sqrt(fanIn), 1/sqrt(fanIn)).
 * A projection's embedding (classes x width) is drawn like the output layer it adds to, whose
 * fan-in is that width. Seeded, so every run with the same seed starts from the same point.
 */
export function initWeights(l: NetLayout, seed: number): Float32Array {
  const out = new Float32Array(l.total);
  l.params.forEach((p, i) => {
    const rng = new Rng(seed, Stream.init, l.net === 'G' ? 0 : 1, i);
    const fanIn = p.name.endsWith('.embed') ? p.shape[1]! : p.shape.length === 2 ? p.shape[0]! : l.params[i - 1]!.shape[0]!;
    const bound = 1 / Math.sqrt(fanIn);
    for (let k = 0; k < p.size; k++) out[p.offset + k] = (rng.uniform() * 2 - 1) * bound;
  });
  return out;
}

/** Limits any model this program builds stays within (a hostile config must not allocate gigabytes). */
export const MODEL_LIMITS = { maxWidth: 65536, maxLayers: 16, maxParams: 256 * 1024 * 1024, maxR1: 1e6 } as const;

/**
 * Why `x` is not a usable model configuration, or null when it is. One check for every place a
 * configuration comes from outside the program: the wire (Challenge), a checkpoint, the flags.
 */
export function modelConfigProblem(x: unknown): string | null {
  if (typeof x !== 'object' || x === null || Array.isArray(x)) return 'not a map';
  const m = x as Record<string, unknown>;
  const width = (v: unknown) => Number.isSafeInteger(v) && (v as number) > 0 && (v as number) <= MODEL_LIMITS.maxWidth;
  const widths = (v: unknown) => Array.isArray(v) && v.length > 0 && v.length <= MODEL_LIMITS.maxLayers && v.every(width);
  if (!MODEL_KINDS.includes(m.kind as ModelKind)) return `unknown model kind ${JSON.stringify(m.kind)} (expected ${MODEL_KINDS.join(', ')})`;
  for (const k of ['noiseDim', 'imageDim', 'numClasses'] as const) if (!width(m[k])) return `${k} must be a whole number from 1 to ${MODEL_LIMITS.maxWidth}`;
  for (const k of ['gHidden', 'dHidden'] as const) if (!widths(m[k])) return `${k} must be 1 to ${MODEL_LIMITS.maxLayers} layer widths from 1 to ${MODEL_LIMITS.maxWidth}`;
  if (typeof m.dropout !== 'number' || !(m.dropout >= 0 && m.dropout < 1)) return 'dropout must be a number in [0, 1)';
  if (typeof m.leak !== 'number' || !Number.isFinite(m.leak)) return 'leak must be a finite number';
  if (m.dLabel !== undefined && !D_LABELS.includes(m.dLabel as DLabel)) return `dLabel must be one of ${D_LABELS.join(', ')}`;
  if (m.matchingAware !== undefined && typeof m.matchingAware !== 'boolean') return 'matchingAware must be true or false';
  if (m.r1 !== undefined && !(typeof m.r1 === 'number' && m.r1 >= 0 && m.r1 <= MODEL_LIMITS.maxR1)) return `r1 must be a number from 0 to ${MODEL_LIMITS.maxR1}`;
  const cfg = m as unknown as ModelConfig;
  const params = netLayout(cfg, 'G').total + netLayout(cfg, 'D').total;
  if (params > MODEL_LIMITS.maxParams) return `${params} parameters is above the limit of ${MODEL_LIMITS.maxParams}`;
  return null;
}
