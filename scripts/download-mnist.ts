/**
 * `download-mnist`: fetch the four official MNIST IDX files (gzip) into a directory that
 * `coordinator --data DIR` reads, and check each against its published SHA-256 before keeping it.
 *
 * A file is written to NAME.part and renamed into place only after its digest matches, so a failed
 * or tampered download never sits where the loader looks. A file already present is re-hashed:
 * kept when it matches, replaced when it does not.
 */
import { createHash } from 'node:crypto';
import { existsSync, mkdirSync, readFileSync, renameSync, rmSync, writeFileSync } from 'node:fs';
import { join, resolve } from 'node:path';
import { Command } from 'commander';
import { GanError } from '../shared/wire/errors.js';
import { die, isMain } from '../cli/args.js';

export interface MnistFile {
  name: string;
  sha256: string;
  bytes: number;
}

/**
 * SHA-256 of the files as published by Yann LeCun and mirrored unchanged (the same digests are
 * used by Bazel's http_file rules, Guild AI's MNIST package and many loaders). torchvision lists
 * MD5s of the same files: f68b3c2d..., d53e105e..., 9fb629c4..., ec29112d...
 */
export const MNIST_FILES: readonly MnistFile[] = [
  { name: 'train-images-idx3-ubyte.gz', sha256: '440fcabf73cc546fa21475e81ea370265605f56be210a4024d2ca8f203523609', bytes: 9_912_422 },
  { name: 'train-labels-idx1-ubyte.gz', sha256: '3552534a0a558bbed6aed32b30c495cca23d567ec52cac8be1a0730e8010255c', bytes: 28_881 },
  { name: 't10k-images-idx3-ubyte.gz', sha256: '8d422c7b0a1c1c79245a5bcf07fe86e33eeafee792b84584aec276f5a2dbc4e6', bytes: 1_648_877 },
  { name: 't10k-labels-idx1-ubyte.gz', sha256: 'f7ae60f92e00ec6debd23a6088c31dbd2371eca3ffa0defaefb259924204aec6', bytes: 4_542 },
];

export const DEFAULT_BASE_URL = 'https://ossci-datasets.s3.amazonaws.com/mnist/';
export const DEFAULT_OUT = join('data', 'mnist');

export function sha256Of(data: Uint8Array): string {
  return createHash('sha256').update(data).digest('hex');
}

/**
 * Check `file` against the expected digest. A mismatch deletes the file and throws: whatever it
 * holds is not the data set, and leaving it would let a later run train on it.
 */
export function verifyFile(file: string, expected: MnistFile): void {
  let data: Buffer;
  try {
    data = readFileSync(file);
  } catch (e) {
    throw new GanError('E_DOWNLOAD', `${file}: cannot read (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const got = sha256Of(data);
  if (got !== expected.sha256) {
    rmSync(file, { force: true });
    throw new GanError('E_DOWNLOAD', 
      `${file}: SHA-256 ${got} (${data.length} bytes) does not match ${expected.name}'s ${expected.sha256} (${expected.bytes} bytes); deleted it`,
    );
  }
}

export interface DownloadOptions {
  out: string;
  baseUrl: string;
  /** The files and their digests (tests serve their own). */
  files?: readonly MnistFile[];
  log?: (line: string) => void;
  fetchImpl?: typeof fetch;
}

function joinUrl(base: string, name: string): string {
  return base.endsWith('/') ? base + name : `${base}/${name}`;
}

/** Download (or keep, when already present and valid) every file; returns their paths. */
export async function downloadMnist(o: DownloadOptions): Promise<string[]> {
  const files = o.files ?? MNIST_FILES;
  const log = o.log ?? (() => {});
  const get = o.fetchImpl ?? fetch;
  try {
    mkdirSync(o.out, { recursive: true });
  } catch (e) {
    throw new GanError('E_DOWNLOAD', `${o.out}: cannot create directory (${(e as NodeJS.ErrnoException).code ?? (e as Error).message})`);
  }
  const done: string[] = [];
  for (const f of files) {
    const dest = join(o.out, f.name);
    if (existsSync(dest)) {
      try {
        verifyFile(dest, f);
        log(`${dest}: already present, checksum ok`);
        done.push(dest);
        continue;
      } catch (e) {
        log(`${(e as Error).message}; downloading it again`);
      }
    }
    const url = joinUrl(o.baseUrl, f.name);
    let body: Uint8Array;
    try {
      const res = await get(url);
      if (!res.ok) throw new GanError('E_DOWNLOAD', `${url}: HTTP ${res.status} ${res.statusText}`);
      body = new Uint8Array(await res.arrayBuffer());
    } catch (e) {
      if (e instanceof GanError) throw e;
      const cause = (e as { cause?: { code?: string; message?: string } }).cause;
      throw new GanError('E_DOWNLOAD', `${url}: ${cause?.code ?? cause?.message ?? (e as Error).message}`);
    }
    const part = `${dest}.part`;
    writeFileSync(part, body);
    verifyFile(part, f);
    renameSync(part, dest);
    log(`${dest}: ${body.length} bytes, checksum ok`);
    done.push(dest);
  }
  return done;
}

export function program(): Command {
  return new Command('download-mnist')
    .description('Download the four MNIST IDX files and verify their SHA-256 checksums.')
    .option('--out <dir>', 'directory to write them to (what coordinator --data reads)', DEFAULT_OUT)
    .option('--base-url <url>', 'where the files are served', DEFAULT_BASE_URL);
}

export async function main(argv: string[]): Promise<void> {
  const cmd = program();
  cmd.parse(argv);
  const o = cmd.opts<{ out: string; baseUrl: string }>();
  try {
    await downloadMnist({ out: o.out, baseUrl: o.baseUrl, log: (s) => process.stdout.write(`${s}\n`) });
    process.stdout.write(`MNIST is in ${resolve(o.out)}; train with: coordinator --data ${o.out}\n`);
  } catch (e) {
    die('download-mnist', e);
  }
}

if (isMain(import.meta.url)) {
  void main(process.argv);
}
