#!/usr/bin/env node
/**
 * Builds the dashboard page into dist/web/dashboard/: esbuild bundles web/dashboard/main.ts (with
 * the shared/ codec and uPlot) into one minified ES module, app.js (+ source map), next to
 * index.html, style.css, favicon.svg and uPlot's CSS. Everything the page needs is in that
 * directory: it works with no internet. Type checking is `npm run typecheck` (web/tsconfig.json);
 * esbuild only strips types.
 *
 * The page runs in a browser, so the bundle must not reach a Node module: the build fails, naming
 * the importer, when anything (shared/ included) imports one.
 *
 *   node scripts/build-web.mjs
 */
import { copyFileSync, mkdirSync, rmSync, statSync } from 'node:fs';
import { builtinModules, createRequire } from 'node:module';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { build } from 'esbuild';

const root = resolve(dirname(fileURLToPath(import.meta.url)), '..');
const src = join(root, 'web', 'dashboard');
const out = join(root, 'dist', 'web', 'dashboard');
const require = createRequire(import.meta.url);

const nodeBuiltins = new Set(builtinModules.flatMap((m) => [m, `node:${m}`]));

/** Fails the build on any import of a Node built-in, saying who imported it. */
const noNodeModules = {
  name: 'no-node-modules',
  setup(b) {
    b.onResolve({ filter: /.*/ }, (args) => {
      if (!nodeBuiltins.has(args.path)) return undefined;
      return {
        errors: [{ text: `the dashboard bundle imports the Node module "${args.path}" (from ${relative(root, args.importer)}); browser code and shared/ must not` }],
      };
    });
  },
};

rmSync(out, { recursive: true, force: true });
mkdirSync(out, { recursive: true });

const result = await build({
  entryPoints: [join(src, 'main.ts')],
  outfile: join(out, 'app.js'),
  bundle: true,
  platform: 'browser',
  format: 'esm',
  target: ['es2022'],
  minify: true,
  sourcemap: true,
  tsconfig: join(root, 'web', 'tsconfig.json'),
  plugins: [noNodeModules],
  metafile: true,
  logLevel: 'warning',
}).catch(() => {
  // esbuild has already printed the errors.
  process.exit(1);
});

copyFileSync(join(src, 'index.html'), join(out, 'index.html'));
copyFileSync(join(src, 'style.css'), join(out, 'style.css'));
copyFileSync(join(src, 'favicon.svg'), join(out, 'favicon.svg'));
copyFileSync(require.resolve('uplot/dist/uPlot.min.css'), join(out, 'uPlot.min.css'));

const kib = (f) => `${(statSync(join(out, f)).size / 1024).toFixed(0)} KiB`;
const inputs = Object.keys(result.metafile.inputs).length;
console.log(`dashboard: ${relative(root, out)}/app.js ${kib('app.js')} (${inputs} modules), index.html, style.css, favicon.svg, uPlot.min.css`);
