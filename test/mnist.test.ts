import { afterAll, describe, expect, it } from 'vitest';
import { mkdirSync, mkdtempSync, rmSync, writeFileSync } from 'node:fs';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { IDX_FILES, encodeIdx, loadEmbedded, loadIdxDir, parseIdxImages, parseIdxLabels, readIdxBytes } from '../shared/data/mnist.js';
import { GanError } from '../shared/wire/errors.js';

const root = mkdtempSync(join(tmpdir(), 'gan-ddp-mnist-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));

let dirCount = 0;
function newDir(): string {
  const d = join(root, `d${dirCount++}`);
  mkdirSync(d);
  return d;
}

/** n synthetic digits whose pixels and labels depend on the index, so a shuffled or shifted read shows. */
function synth(n: number, salt = 0): { n: number; images: Uint8Array; labels: Uint8Array } {
  const images = new Uint8Array(n * 784);
  for (let i = 0; i < images.length; i++) images[i] = (i * 31 + salt * 7 + (i >> 10)) & 0xff;
  const labels = new Uint8Array(n).map((_, i) => (i * 3 + salt) % 10);
  return { n, images, labels };
}

function writeSplit(dir: string, which: 'train' | 'test', ds: ReturnType<typeof synth>, gzip: boolean): { images: string; labels: string } {
  const enc = encodeIdx(ds);
  const base = which === 'train' ? [IDX_FILES.trainImages, IDX_FILES.trainLabels] : [IDX_FILES.testImages, IDX_FILES.testLabels];
  const ext = gzip ? '.gz' : '';
  const images = join(dir, base[0]! + ext);
  const labels = join(dir, base[1]! + ext);
  writeFileSync(images, gzip ? gzipSync(enc.images) : enc.images);
  writeFileSync(labels, gzip ? gzipSync(enc.labels) : enc.labels);
  return { images, labels };
}

function dataError(f: () => unknown): GanError {
  let err: unknown = null;
  try {
    f();
  } catch (e) {
    err = e;
  }
  expect(err).toBeInstanceOf(GanError);
  expect((err as GanError).code).toBe('E_DATA');
  return err as GanError;
}

describe('IDX parsing', () => {
  it('encodeIdx writes the standard headers (big-endian magic, count, 28, 28)', () => {
    const enc = encodeIdx(synth(5));
    expect(enc.images.readUInt32BE(0)).toBe(0x803);
    expect(enc.images.readUInt32BE(4)).toBe(5);
    expect(enc.images.readUInt32BE(8)).toBe(28);
    expect(enc.images.readUInt32BE(12)).toBe(28);
    expect(enc.images.length).toBe(16 + 5 * 784);
    expect(enc.labels.readUInt32BE(0)).toBe(0x801);
    expect(enc.labels.readUInt32BE(4)).toBe(5);
    expect(enc.labels.length).toBe(8 + 5);
  });

  it('parses raw image and label files back to the same bytes', () => {
    const ds = synth(7, 1);
    const enc = encodeIdx(ds);
    const img = parseIdxImages(enc.images, 'x');
    expect(img).toMatchObject({ n: 7, rows: 28, cols: 28 });
    expect(Buffer.from(img.images).equals(Buffer.from(ds.images))).toBe(true);
    expect(Array.from(parseIdxLabels(enc.labels, 'y'))).toEqual(Array.from(ds.labels));
  });

  it('parses from a subarray that does not start at the beginning of its buffer', () => {
    const enc = encodeIdx(synth(3, 2));
    const padded = Buffer.concat([Buffer.alloc(5, 0xee), enc.images]);
    const img = parseIdxImages(padded.subarray(5), 'x');
    expect(img.n).toBe(3);
    expect(Buffer.from(img.images).equals(enc.images.subarray(16))).toBe(true);
  });

  it('readIdxBytes gunzips gzip files and passes raw files through', () => {
    const dir = newDir();
    const enc = encodeIdx(synth(4));
    writeFileSync(join(dir, 'a'), enc.images);
    writeFileSync(join(dir, 'b.gz'), gzipSync(enc.images));
    expect(readIdxBytes(join(dir, 'a')).equals(enc.images)).toBe(true);
    expect(readIdxBytes(join(dir, 'b.gz')).equals(enc.images)).toBe(true);
  });
});

describe('loadIdxDir', () => {
  for (const gzip of [false, true]) {
    it(`reads the four ${gzip ? 'gzip' : 'raw'} files of a directory`, () => {
      const dir = newDir();
      const train = synth(30, 1);
      const test = synth(12, 2);
      const tf = writeSplit(dir, 'train', train, gzip);
      writeSplit(dir, 'test', test, gzip);
      const s = loadIdxDir(dir);
      expect(s.train).toMatchObject({ n: 30, rows: 28, cols: 28, source: tf.images });
      expect(s.test.n).toBe(12);
      expect(Buffer.from(s.train.images).equals(Buffer.from(train.images))).toBe(true);
      expect(Buffer.from(s.test.images).equals(Buffer.from(test.images))).toBe(true);
      expect(Array.from(s.train.labels)).toEqual(Array.from(train.labels));
      expect(Array.from(s.test.labels)).toEqual(Array.from(test.labels));
    });
  }

  it('reads a directory that mixes raw and gzip files', () => {
    const dir = newDir();
    writeSplit(dir, 'train', synth(9, 3), true);
    writeSplit(dir, 'test', synth(4, 4), false);
    const s = loadIdxDir(dir);
    expect([s.train.n, s.test.n]).toEqual([9, 4]);
  });

  describe('a corrupt file gives E_DATA naming the file', () => {
    const cases: { name: string; why: RegExp; corrupt: (f: { images: string; labels: string }) => string }[] = [
      {
        name: 'bad image magic',
        why: /bad magic 0x00000801/,
        corrupt: (f) => {
          const b = encodeIdx(synth(10)).images;
          b.writeUInt32BE(0x801, 0);
          writeFileSync(f.images, b);
          return f.images;
        },
      },
      {
        name: 'bad label magic',
        why: /bad magic 0xdeadbeef/,
        corrupt: (f) => {
          const b = encodeIdx(synth(10)).labels;
          b.writeUInt32BE(0xdeadbeef, 0);
          writeFileSync(f.labels, b);
          return f.labels;
        },
      },
      {
        name: 'truncated images',
        why: /truncated: header says 10 images/,
        corrupt: (f) => {
          writeFileSync(f.images, encodeIdx(synth(10)).images.subarray(0, 16 + 9 * 784 + 100));
          return f.images;
        },
      },
      {
        name: 'images shorter than a header',
        why: /too short for an IDX image header/,
        corrupt: (f) => {
          writeFileSync(f.images, Buffer.from([0, 0, 8, 3]));
          return f.images;
        },
      },
      {
        name: 'trailing bytes after the images',
        why: /trailing bytes/,
        corrupt: (f) => {
          writeFileSync(f.images, Buffer.concat([encodeIdx(synth(10)).images, Buffer.alloc(3)]));
          return f.images;
        },
      },
      {
        name: 'images that are not 28x28',
        why: /images are 32x32, expected 28x28/,
        corrupt: (f) => {
          const b = Buffer.alloc(16 + 10 * 32 * 32);
          b.writeUInt32BE(0x803, 0);
          b.writeUInt32BE(10, 4);
          b.writeUInt32BE(32, 8);
          b.writeUInt32BE(32, 12);
          writeFileSync(f.images, b);
          return f.images;
        },
      },
      {
        name: 'truncated labels',
        why: /truncated: header says 10 labels/,
        corrupt: (f) => {
          writeFileSync(f.labels, encodeIdx(synth(10)).labels.subarray(0, 12));
          return f.labels;
        },
      },
      {
        name: 'label count differs from image count',
        why: /8 labels for 10 images/,
        corrupt: (f) => {
          writeFileSync(f.labels, encodeIdx(synth(8)).labels);
          return f.labels;
        },
      },
      {
        name: 'label 12',
        why: /label 12 at index 4 is not a digit 0-9/,
        corrupt: (f) => {
          const b = encodeIdx(synth(10)).labels;
          b[8 + 4] = 12;
          writeFileSync(f.labels, b);
          return f.labels;
        },
      },
      {
        name: 'corrupt gzip',
        why: /corrupt gzip data/,
        corrupt: (f) => {
          const gz = gzipSync(encodeIdx(synth(10)).images);
          const bad = Buffer.concat([gz.subarray(0, 20), Buffer.alloc(40, 0x55)]);
          writeFileSync(f.images, bad);
          return f.images;
        },
      },
    ];
    for (const c of cases) {
      it(c.name, () => {
        const dir = newDir();
        // The good split is test; train gets the corruption, so the error must come from the right file.
        const files = writeSplit(dir, 'train', synth(10), false);
        writeSplit(dir, 'test', synth(4), false);
        const bad = c.corrupt(files);
        const e = dataError(() => loadIdxDir(dir));
        expect(e.message).toContain(bad);
        expect(e.message).toMatch(c.why);
      });
    }
  });

  it('a missing directory is named in the error', () => {
    const missing = join(root, 'no-such-dir');
    const e = dataError(() => loadIdxDir(missing));
    expect(e.message).toContain(missing);
    expect(e.message).toMatch(/not found/);
  });

  it('a missing file is named in the error', () => {
    const dir = newDir();
    writeSplit(dir, 'train', synth(5), false);
    const e = dataError(() => loadIdxDir(dir));
    expect(e.message).toContain(join(dir, IDX_FILES.testImages));
    expect(e.message).toMatch(/not found/);
  });

  it('an unreadable path (a directory where a file should be) is named in the error', () => {
    const dir = newDir();
    writeSplit(dir, 'train', synth(5), false);
    writeSplit(dir, 'test', synth(5), false);
    rmSync(join(dir, IDX_FILES.testLabels));
    mkdirSync(join(dir, IDX_FILES.testLabels));
    const e = dataError(() => loadIdxDir(dir));
    expect(e.message).toContain(join(dir, IDX_FILES.testLabels));
    expect(e.message).toMatch(/cannot read/);
  });
});

describe('loadEmbedded', () => {
  it('gives 8995 training and 1005 test digits, labels 0-9, every class present in both', () => {
    const { train, test } = loadEmbedded();
    expect(train.n).toBe(8995);
    expect(test.n).toBe(1005);
    for (const s of [train, test]) {
      expect(s.images.length).toBe(s.n * 784);
      expect(s.labels.length).toBe(s.n);
      expect([s.rows, s.cols]).toEqual([28, 28]);
      const counts = new Array<number>(10).fill(0);
      for (const y of s.labels) {
        expect(y).toBeLessThanOrEqual(9);
        counts[y]!++;
      }
      for (let d = 0; d < 10; d++) expect(counts[d], `digit ${d}`).toBeGreaterThan(s.n / 20);
    }
  });

  it('holds real digit images: mostly dark background with bright strokes, not all equal', () => {
    const { train } = loadEmbedded();
    let dark = 0;
    let bright = 0;
    for (let i = 0; i < 100 * 784; i++) {
      const v = train.images[i]!;
      if (v < 10) dark++;
      else if (v > 200) bright++;
    }
    expect(dark / (100 * 784)).toBeGreaterThan(0.6);
    expect(bright / (100 * 784)).toBeGreaterThan(0.05);
    expect(Buffer.from(train.images.subarray(0, 784)).equals(Buffer.from(train.images.subarray(784, 1568)))).toBe(false);
  });

  it('round-trips through encodeIdx and loadIdxDir', () => {
    const dir = newDir();
    const { train, test } = loadEmbedded();
    const sub = (d: typeof train, n: number) => ({ n, images: d.images.subarray(0, n * 784), labels: d.labels.subarray(0, n) });
    writeSplit(dir, 'train', sub(train, 200), true);
    writeSplit(dir, 'test', sub(test, 50), false);
    const s = loadIdxDir(dir);
    expect(Buffer.from(s.train.images).equals(Buffer.from(train.images.subarray(0, 200 * 784)))).toBe(true);
    expect(Array.from(s.test.labels)).toEqual(Array.from(test.labels.subarray(0, 50)));
  });
});
