import { afterAll, beforeAll, describe, expect, it } from 'vitest';
import { existsSync, mkdtempSync, readFileSync, readdirSync, rmSync, writeFileSync } from 'node:fs';
import { createServer, type Server } from 'node:http';
import type { AddressInfo } from 'node:net';
import { tmpdir } from 'node:os';
import { join } from 'node:path';
import { gzipSync } from 'node:zlib';
import { DEFAULT_BASE_URL, MNIST_FILES, type MnistFile, downloadMnist, sha256Of, verifyFile } from '../scripts/download-mnist.js';
import { encodeIdx, loadIdxDir } from '../shared/data/mnist.js';
import { GanError } from '../shared/wire/errors.js';

const root = mkdtempSync(join(tmpdir(), 'gan-ddp-download-'));
afterAll(() => rmSync(root, { recursive: true, force: true }));
let count = 0;
const fresh = () => join(root, `d${count++}`);

/** Small but valid gzip IDX files under the official names, so a successful download also loads. */
function fakeMnist(): Map<string, Buffer> {
  const make = (n: number, salt: number) => encodeIdx({
    n,
    images: new Uint8Array(n * 784).map((_, i) => (i * 13 + salt) & 0xff),
    labels: new Uint8Array(n).map((_, i) => (i + salt) % 10),
  });
  const train = make(20, 1);
  const test = make(5, 2);
  return new Map([
    ['train-images-idx3-ubyte.gz', gzipSync(train.images)],
    ['train-labels-idx1-ubyte.gz', gzipSync(train.labels)],
    ['t10k-images-idx3-ubyte.gz', gzipSync(test.images)],
    ['t10k-labels-idx1-ubyte.gz', gzipSync(test.labels)],
  ]);
}

const served = fakeMnist();
const listOf = (m: Map<string, Buffer>): MnistFile[] => [...m].map(([name, data]) => ({ name, sha256: sha256Of(data), bytes: data.length }));

let server: Server;
let base = '';
const requests: string[] = [];
/** What the server answers per file name; tests change it to serve tampered bytes or errors. */
let respond: (name: string) => Buffer | number = (name) => served.get(name) ?? 404;

beforeAll(async () => {
  server = createServer((req, res) => {
    const name = (req.url ?? '').replace(/^\/mnist\//, '');
    requests.push(name);
    const r = respond(name);
    if (typeof r === 'number') {
      res.writeHead(r).end();
    } else {
      res.writeHead(200, { 'content-type': 'application/octet-stream' }).end(r);
    }
  });
  await new Promise<void>((resolve) => server.listen(0, '127.0.0.1', resolve));
  base = `http://127.0.0.1:${(server.address() as AddressInfo).port}/mnist/`;
});
afterAll(() => new Promise<void>((resolve) => server.close(() => resolve())));

describe('checksums', () => {
  it('lists the four official files with SHA-256 digests', () => {
    expect(MNIST_FILES.map((f) => f.name)).toEqual([
      'train-images-idx3-ubyte.gz', 'train-labels-idx1-ubyte.gz', 't10k-images-idx3-ubyte.gz', 't10k-labels-idx1-ubyte.gz',
    ]);
    for (const f of MNIST_FILES) expect(f.sha256).toMatch(/^[0-9a-f]{64}$/);
    expect(new Set(MNIST_FILES.map((f) => f.sha256)).size).toBe(4);
    expect(DEFAULT_BASE_URL).toMatch(/^https:\/\//);
  });

  it('verifyFile accepts a file whose SHA-256 matches', () => {
    const file = join(root, 'ok.gz');
    const data = Buffer.from('some bytes');
    writeFileSync(file, data);
    expect(() => verifyFile(file, { name: 'ok.gz', sha256: sha256Of(data), bytes: data.length })).not.toThrow();
    expect(existsSync(file)).toBe(true);
  });

  it('verifyFile rejects and deletes a file whose SHA-256 does not match', () => {
    const file = join(root, 'bad.gz');
    writeFileSync(file, Buffer.from('some bytes, one changed'));
    let err: unknown = null;
    try {
      verifyFile(file, MNIST_FILES[0]!);
    } catch (e) {
      err = e;
    }
    expect(err).toBeInstanceOf(GanError);
    expect((err as GanError).code).toBe('E_DOWNLOAD');
    expect((err as Error).message).toContain(file);
    expect((err as Error).message).toContain(MNIST_FILES[0]!.sha256);
    expect((err as Error).message).toMatch(/does not match/);
    expect(existsSync(file)).toBe(false);
  });

  it('a one-bit change is a mismatch', () => {
    const data = Buffer.from(served.get('t10k-labels-idx1-ubyte.gz')!);
    const expected = { name: 'x', sha256: sha256Of(data), bytes: data.length };
    data[data.length - 1] = data[data.length - 1]! ^ 1;
    const file = join(root, 'flip.gz');
    writeFileSync(file, data);
    expect(() => verifyFile(file, expected)).toThrow(GanError);
  });
});

describe('downloadMnist from a local server', () => {
  it('downloads, verifies and leaves files that loadIdxDir reads', async () => {
    respond = (name) => served.get(name) ?? 404;
    const out = fresh();
    const files = await downloadMnist({ out, baseUrl: base, files: listOf(served) });
    expect(files.map((f) => f.replace(`${out}/`, ''))).toEqual([...served.keys()]);
    expect(readdirSync(out).sort()).toEqual([...served.keys()].sort());
    const s = loadIdxDir(out);
    expect([s.train.n, s.test.n]).toEqual([20, 5]);
  });

  it('refuses a file whose bytes differ from the checksum and keeps nothing of it', async () => {
    respond = (name) => (name === 'train-labels-idx1-ubyte.gz' ? Buffer.from('not the labels') : served.get(name) ?? 404);
    const out = fresh();
    await expect(downloadMnist({ out, baseUrl: base, files: listOf(served) })).rejects.toThrow(/train-labels-idx1-ubyte\.gz.*does not match/);
    // The file before it is kept (it verified); the bad one is neither in place nor left as .part.
    expect(readdirSync(out)).toEqual(['train-images-idx3-ubyte.gz']);
  });

  it('keeps files already present and valid, and replaces ones that are not', async () => {
    respond = (name) => served.get(name) ?? 404;
    const out = fresh();
    await downloadMnist({ out, baseUrl: base, files: listOf(served) });
    writeFileSync(join(out, 't10k-images-idx3-ubyte.gz'), 'damaged');
    requests.length = 0;
    const log: string[] = [];
    await downloadMnist({ out, baseUrl: base, files: listOf(served), log: (s) => log.push(s) });
    expect(requests).toEqual(['t10k-images-idx3-ubyte.gz']);
    expect(readFileSync(join(out, 't10k-images-idx3-ubyte.gz')).equals(served.get('t10k-images-idx3-ubyte.gz')!)).toBe(true);
    expect(log.join('\n')).toMatch(/already present, checksum ok/);
  });

  it('reports an HTTP error with the URL', async () => {
    respond = () => 404;
    const out = fresh();
    await expect(downloadMnist({ out, baseUrl: base, files: listOf(served) })).rejects.toThrow(/127\.0\.0\.1:\d+\/mnist\/train-images-idx3-ubyte\.gz: HTTP 404/);
    expect(readdirSync(out)).toEqual([]);
  });

  it('checks against the official digests by default: the small stand-ins are refused', async () => {
    respond = (name) => served.get(name) ?? 404;
    const out = fresh();
    await expect(downloadMnist({ out, baseUrl: base })).rejects.toThrow(/does not match train-images-idx3-ubyte\.gz's 440fcabf/);
    expect(readdirSync(out)).toEqual([]);
  });

  it.skipIf(!process.env.MNIST_DOWNLOAD_TEST)(
    'downloads the real files from the default mirror (skipped unless MNIST_DOWNLOAD_TEST=1: this machine has no internet access)',
    async () => {
      const out = fresh();
      const files = await downloadMnist({ out, baseUrl: process.env.MNIST_BASE_URL ?? DEFAULT_BASE_URL });
      expect(files).toHaveLength(4);
      const s = loadIdxDir(out);
      expect([s.train.n, s.test.n]).toEqual([60000, 10000]);
    },
    300_000,
  );
});
