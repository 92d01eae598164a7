// Compiler flags for OpenBLAS, read by binding.gyp. pkg-config knows where Debian's alternatives
// put the pthread flavour; without it, fall back to the default search paths.
'use strict';
const { execFileSync } = require('node:child_process');
const what = process.argv[2];
function pkg(flag) {
  try {
    return execFileSync('pkg-config', [flag, 'openblas'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}
if (what === 'include') {
  const f = pkg('--cflags-only-I');
  // gyp wants bare directories here; an empty answer still has to be a valid list entry.
  const dirs = f ? f.split(/\s+/).filter(Boolean).map((s) => s.replace(/^-I/, '')) : [];
  process.stdout.write((dirs.length ? dirs : ['.']).join(' '));
} else if (what === 'libs') {
  const f = pkg('--libs');
  const libs = f ? f.split(/\s+/).filter(Boolean) : ['-lopenblas'];
  // Debian keeps each BLAS flavour in a private directory behind update-alternatives; an rpath
  // makes the addon load the flavour it was compiled against, whatever the alternative says later.
  const rpaths = libs.filter((s) => s.startsWith('-L')).map((s) => `-Wl,-rpath,${s.slice(2)}`);
  process.stdout.write([...libs, ...rpaths].join(' '));
} else {
  process.stderr.write('usage: node blas-flags.cjs include|libs\n');
  process.exit(2);
}
