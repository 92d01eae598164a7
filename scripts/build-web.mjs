#!/usr/bin/env node
/**
 * Builds the two pages the coordinator serves, with esbuild, into dist/web/:
 * - dashboard/: web/dashboard/main.ts (with the shared/ codec and uPlot) as one minified ES module,
 *   app.js (+ source map), next to index.html, style.css, favicon.svg and uPlot's CSS;
 * - worker/: web/worker/main.ts, the browser worker (the same worker/ code a Node worker runs, and
 *   TensorFlow.js with its WebGPU, WebGL and wasm backends), with index.html, style.css and the
 *   wasm backend's .wasm files.
 * Everything a page needs is in its directory: it works with no internet. Type checking is
 * `npm run typecheck` (web/tsconfig.json); esbuild only strips types.
 *
 * The pages run in a browser, so a bundle must not reach a Node module: the build fails, naming
 * the importer, when anything (shared/ included) imports one. The one Node module the worker code
 * reaches, the native addon's loader, is replaced by web/worker/no-addon.ts (no addon in a browser).
 *
 *   node scripts/build-web.mjs
 */
import { copyFileSync, mkdirSync, readdirSync, rmSync, statSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const require = createRequire(import.meta.url);

const nodeBuiltins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

/**
 * Fails the build on any import of a Node built-in from the project's own code, saying who imported
 * it. Packages are left to esbuild, which follows their "browser" field (TensorFlow.js maps its
 * guarded Node imports to nothing there); seedrandom's guarded `require('crypto')`, which no field
 * maps, gets an empty module.
 */
const noNodeModules = {
  name: 'no-node-modules',
  setup(b) {
    b.onLoad({ filter: /.*/, namespace: 'empty' }, () => ({ contents: 'export default {};' }));
    b.onResolve({ filter: /.*/ }, (args) => {
      if (!nodeBuiltins.has(args.path)) return undefined;
      if (args.path === 'crypto' && /[\\/]seedrandom[\\/]/.test(args.importer)) return { path: 'crypto', namespace: 'empty' };
      if (/[\\/]node_modules[\\/]/.test(args.importer)) return undefined;
      return {
        errors: [{ text: `a browser bundle imports the Node module "${args.path}" (from ${relative(root, args.importer)}); browser code and shared/ must not` }],
      };
    });
  },
};

/** The browser has no native addon: its loader becomes a stub that says so. */
const noAddon = {
  name: 'no-addon',
  setup(b) {
    b.onResolve({ filter: /backend\/addon\.js$/ }, () => ({ path: join(root, 'web', 'worker', 'no-addon.ts') }));
  },
};

async function bundle(name, plugins) {
  const out = join(root, 'dist', 'web', name);
  rmSync(out, { recursive: true, force: true });
  mkdirSync(out, { recursive: true });
  const result = await build({
    entryPoints: [join(root, 'web', name, 'main.ts')],
    outfile: join(out, 'app.js'),
    bundle: true,
    platform: 'browser',
    format: 'esm',
    target: ['es2022'],
    minify: true,
    sourcemap: true,
    tsconfig: join(root, 'web', 'tsconfig.json'),
    plugins: [...plugins, noNodeModules],
    metafile: true,
    logLevel: 'warning',
  }).catch(() => {
    // esbuild has already printed the errors.
    process.exit(1);
  });
  return { out, modules: Object.keys(result.metafile.inputs).length };
}

const kib = (dir, f) => `${(statSync(join(dir, f)).size / 1024).toFixed(0)} KiB`;

{
  const { out, modules } = await bundle('dashboard', []);
  const src = join(root, 'web', 'dashboard');
  copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
  copyFileSync(join(src, 'style.css'), join(out, 'style.css'));
  copyFileSync(join(src, 'favicon.svg'), join(out, 'favicon.svg'));
  copyFileSync(require.resolve('uplot/dist/uPlot.min.css'), join(out, 'uPlot.min.css'));
  console.log(`dashboard: ${relative(root, out)}/app.js ${kib(out, 'app.js')} (${modules} modules), index.html, style.css, favicon.svg, uPlot.min.css`);
}
{
  const { out, modules } = await bundle('worker', [noAddon]);
  const src = join(root, 'web', 'worker');
  copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
  copyFileSync(join(src, 'style.css'), join(out, 'style.css'));
  const wasmDir = dirname(require.resolve('@tensorflow/tfjs-backend-wasm/dist/tfjs-backend-wasm.wasm'));
  const wasm = readdirSync(wasmDir).filter((f) => f.endsWith('.wasm'));
  for (const f of wasm) copyFileSync(join(wasmDir, f), join(out, f));
  console.log(`worker: ${relative(root, out)}/app.js ${kib(out, 'app.js')} (${modules} modules), index.html, style.css, ${wasm.join(', ')}`);
}
