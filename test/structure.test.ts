/**
 * The module boundaries the design states, checked on the import graph of the sources: who may
 * import whom, and which modules must stay free of TensorFlow.js.
 */
import { existsSync, readFileSync, readdirSync, statSync } from 'node:fs';
import { dirname, join, relative, resolve } from 'node:path';
import { fileURLToPath } from 'node:url';
import { describe, expect, it } from 'vitest';

const ROOT = resolve(dirname(fileURLToPath(import.meta.url)), '..');

/** The import specifiers of a TypeScript source (static imports and re-exports; `import type` included). */
function importsOf(file: string): string[] {
  const src = readFileSync(file, 'utf8');
  const out: string[] = [];
  for (const m of src.matchAll(/^\s*(?:import|export)\s[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm)) out.push((m[1] ?? m[2])!);
  return out;
}

/** A relative specifier ('./x.js') as the .ts file it names. */
function resolveLocal(from: string, spec: string): string | null {
  if (!spec.startsWith('.')) return null;
  const ts = resolve(dirname(from), spec).replace(/\.js$/, '.ts');
  return existsSync(ts) ? ts : null;
}

/** Every package and every project file reachable from `entry` through value imports. */
function reach(entry: string): { files: Set<string>; packages: Set<string> } {
  const files = new Set<string>();
  const packages = new Set<string>();
  const todo = [resolve(ROOT, entry)];
  while (todo.length) {
    const f = todo.pop()!;
    if (files.has(f)) continue;
    files.add(f);
    const src = readFileSync(f, 'utf8');
    for (const m of src.matchAll(/^\s*(import|export)\s+(type\s+)?[^'"]*?from\s+'([^']+)'|^\s*import\s+'([^']+)'/gm)) {
      if (m[2]) continue; // `import type` is erased: it loads nothing
      const spec = (m[3] ?? m[4])!;
      const local = resolveLocal(f, spec);
      if (local) todo.push(local);
      else if (!spec.startsWith('.')) packages.add(spec.startsWith('@') ? spec.split('/').slice(0, 2).join('/') : spec.split('/')[0]!);
    }
  }
  return { files, packages };
}

function sourcesIn(dir: string): string[] {
  const out: string[] = [];
  const walk = (d: string) => {
    for (const name of readdirSync(d)) {
      const p = join(d, name);
      if (statSync(p).isDirectory()) walk(p);
      else if (p.endsWith('.ts')) out.push(p);
    }
  };
  walk(resolve(ROOT, dir));
  return out;
}

const tfjs = (pkgs: Set<string>) => [...pkgs].filter((p) => p.startsWith('@tensorflow/'));

describe('module boundaries', () => {
  it('decoding a frame and stepping Adam do not load TensorFlow.js', () => {
    // The walk does see TensorFlow.js where it is loaded: the model's compute.
    expect(tfjs(reach('shared/compute/gan.ts').packages)).toContain('@tensorflow/tfjs-core');
    for (const entry of ['shared/wire/codec.ts', 'coordinator/optimizer.ts', 'shared/backend/addon.ts']) {
      expect(tfjs(reach(entry).packages), entry).toEqual([]);
    }
  });

  it('shared/ imports neither coordinator/ nor worker/ nor cli/', () => {
    for (const f of sourcesIn('shared')) {
      for (const spec of importsOf(f)) {
        const local = resolveLocal(f, spec);
        if (local) expect(relative(ROOT, local), `${relative(ROOT, f)} imports ${spec}`).toMatch(/^shared\//);
      }
    }
  });

  it('worker/ and coordinator/ do not import each other, and eval/ imports only shared/', () => {
    const rules: [string, RegExp][] = [['worker', /^(worker|shared)\//], ['coordinator', /^(coordinator|shared)\//], ['eval', /^(eval|shared)\//]];
    for (const [dir, allowed] of rules) {
      for (const f of sourcesIn(dir)) {
        for (const spec of importsOf(f)) {
          const local = resolveLocal(f, spec);
          if (local) expect(relative(ROOT, local), `${relative(ROOT, f)} imports ${spec}`).toMatch(allowed);
        }
      }
    }
  });
});
