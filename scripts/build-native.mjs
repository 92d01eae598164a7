#!/usr/bin/env node
/**
 * Builds the native addon (native/) at `npm install` / `npm ci`, or again with `npm run build:native`.
 *
 * The addon is an accelerator, not a requirement: whenever something it needs is missing (a C
 * compiler, make, node-gyp, Node's headers) this prints one line saying why and exits 0, so
 * installation never fails and the program falls back to the wasm backend at run time. Its matrix
 * products are the project's own GEMM (native/src/gemm.c), or OpenBLAS with GAN_GEMM=openblas.
 *
 *   node scripts/build-native.mjs [--verbose]     GAN_SKIP_NATIVE=1 skips the build
 */
import { execFileSync, spawnSync } from 'node:child_process';
import { existsSync, mkdtempSync, realpathSync, rmSync, writeFileSync } from 'node:fs';
import { createRequire } from 'node:module';
import { tmpdir } from 'node:os';
import { dirname, join, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const nativeDir = join(root, 'native');
const output = join(nativeDir, 'build', 'Release', 'gan_native.node');
const verbose = process.argv.includes('--verbose');

function skip(why) {
  console.log(`native addon: skipped, ${why}; the wasm backend will be used instead`);
  process.exit(0);
}

function run(cmd, args, opts = {}) {
  return spawnSync(cmd, args, { encoding: 'utf8', ...opts });
}

if (process.env.GAN_SKIP_NATIVE === '1') skip('GAN_SKIP_NATIVE=1');
if (process.platform === 'win32') skip('not supported on Windows');
if (!existsSync(join(nativeDir, 'binding.gyp'))) skip('native/binding.gyp is missing');

const cc = process.env.CC || 'cc';
if (run(cc, ['--version']).status !== 0) skip(`no C compiler (${cc}; on Debian: apt-get install build-essential, then npm run build:native)`);
if (run('make', ['--version']).status !== 0) skip('make is not installed');
const pythons = [process.env.PYTHON, process.env.npm_config_python, 'python3', 'python'].filter(Boolean);
if (!pythons.some((py) => run(py, ['--version']).status === 0)) skip('python3 not found (node-gyp needs it)');

// Which matrix products to build: GAN_GEMM=openblas or builtin forces one; otherwise OpenBLAS when
// it is installed, else the project's own GEMM (src/gemm.c, no library needed).
function blasFlags(what, env) {
  return execFileSync(process.execPath, [join(nativeDir, 'blas-flags.cjs'), what], { encoding: 'utf8', env })
    .split(/\s+/)
    .filter(Boolean);
}
function haveOpenblas() {
  const dir = mkdtempSync(join(tmpdir(), 'gan-blas-'));
  try {
    const src = join(dir, 'probe.c');
    writeFileSync(src, '#include <cblas.h>\nint main(void) { openblas_set_num_threads(1); return openblas_get_config() == 0; }\n');
    const env = { ...process.env, GAN_GEMM: 'openblas' };
    const includes = blasFlags('include', env).map((d) => `-I${d}`);
    return run(cc, [src, '-o', join(dir, 'probe'), ...includes, ...blasFlags('libs', env)]).status === 0;
  } finally {
    rmSync(dir, { recursive: true, force: true });
  }
}
// The project's own GEMM is the default: it needs no library and measured faster here than the
// OpenBLAS Debian ships (README, Backends). GAN_GEMM=openblas links OpenBLAS instead.
const gemm = process.env.GAN_GEMM ?? 'builtin';
if (gemm !== 'openblas' && gemm !== 'builtin') skip(`GAN_GEMM=${gemm} (expected openblas or builtin)`);
if (gemm === 'openblas' && !haveOpenblas()) skip('GAN_GEMM=openblas but OpenBLAS headers or library not found (apt-get install libopenblas-dev)');

/** npm passes its bundled node-gyp to lifecycle scripts; outside npm, look next to npm itself. */
function findNodeGyp() {
  const candidates = [];
  if (process.env.npm_config_node_gyp) candidates.push(process.env.npm_config_node_gyp);
  if (process.env.npm_execpath) candidates.push(join(dirname(process.env.npm_execpath), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
  try {
    candidates.push(createRequire(join(root, 'package.json')).resolve('node-gyp/bin/node-gyp.js'));
  } catch {
    // not a local dependency
  }
  const npm = run('sh', ['-c', 'command -v npm']).stdout?.trim();
  if (npm) {
    try {
      candidates.push(join(dirname(realpathSync(npm)), '..', 'node_modules', 'node-gyp', 'bin', 'node-gyp.js'));
    } catch {
      // dangling link
    }
  }
  return candidates.find((c) => existsSync(c)) ?? null;
}

const nodeGyp = findNodeGyp();
if (!nodeGyp) skip('node-gyp not found (it ships with npm)');

const args = [nodeGyp, 'rebuild'];
// Use the headers installed beside this node (distribution packages ship them) instead of letting
// node-gyp download them, which fails offline; npm's own nodedir setting wins when present.
const prefix = dirname(dirname(process.execPath));
if (!process.env.npm_config_nodedir && existsSync(join(prefix, 'include', 'node', 'node_api.h'))) {
  args.push(`--nodedir=${prefix}`);
}

const build = run(process.execPath, args, { cwd: nativeDir, stdio: verbose ? 'inherit' : 'pipe', env: { ...process.env, GAN_GEMM: gemm } });
if (build.status !== 0) {
  const log = `${build.stdout ?? ''}\n${build.stderr ?? ''}`;
  const line =
    log
      .split('\n')
      .map((l) => l.trim())
      .find((l) => /error[: ]/i.test(l) && !/^gyp ERR! (stack|System|command|cwd|node -v|node-gyp -v|not ok)/.test(l)) ??
    `node-gyp exited with ${build.status ?? build.signal}`;
  skip(`build failed: ${line.slice(0, 200)} (rerun with: node scripts/build-native.mjs --verbose)`);
}

try {
  const addon = createRequire(import.meta.url)(output);
  console.log(`native addon: built ${join('native', 'build', 'Release', 'gan_native.node')} with ${gemm === 'openblas' ? addon.config().split(' ').slice(0, 2).join(' ') : addon.config()}`);
} catch (e) {
  console.log(`native addon: built but it does not load (${String(e.message).split('\n')[0]}); the wasm backend will be used instead`);
}
