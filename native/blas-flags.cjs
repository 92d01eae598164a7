// What binding.gyp compiles and links for the matrix products: GAN_GEMM=openblas links the
// system OpenBLAS (pkg-config knows where Debian's alternatives put the pthread flavour; without
// it, the default search paths); anything else builds the project's own GEMM (src/gemm.c,
// gemm_blocked.c, gemm_kernels.c and one gemm_kernels_<isa>.c per kernel set), which needs no
// library at all. scripts/build-native.mjs sets GAN_GEMM after probing.
'use strict';
const { execFileSync } = require('node:child_process');
const what = process.argv[2];
const openblas = process.env.GAN_GEMM === 'openblas';
function pkg(flag) {
  try {
    return execFileSync('pkg-config', [flag, 'openblas'], { encoding: 'utf8', stdio: ['ignore', 'pipe', 'ignore'] }).trim();
  } catch {
    return null;
  }
}
if (what === 'sources') {
  const builtin = ['gemm.c', 'gemm_blocked.c', 'gemm_kernels.c', 'gemm_kernels_avx512.c', 'gemm_kernels_avx2.c', 'gemm_kernels_portable.c'];
  process.stdout.write(openblas ? 'src/gemm_openblas.c' : builtin.map((f) => `src/${f}`).join(' '));
} else if (what === 'include') {
  const f = openblas ? pkg('--cflags-only-I') : null;
  // gyp wants bare directories here; an empty answer still has to be a valid list entry.
  const dirs = f ? f.split(/\s+/).filter(Boolean).map((s) => s.replace(/^-I/, '')) : [];
  process.stdout.write((dirs.length ? dirs : ['.']).join(' '));
} else if (what === 'libs') {
  if (!openblas) process.exit(0);
  const f = pkg('--libs');
  const libs = f ? f.split(/\s+/).filter(Boolean) : ['-lopenblas'];
  // Debian keeps each BLAS flavour in a private directory behind update-alternatives; an rpath
  // makes the addon load the flavour it was compiled against, whatever the alternative says later.
  const rpaths = libs.filter((s) => s.startsWith('-L')).map((s) => `-Wl,-rpath,${s.slice(2)}`);
  process.stdout.write([...libs, ...rpaths].join(' '));
} else {
  process.stderr.write('usage: node blas-flags.cjs sources|include|libs\n');
  process.exit(2);
}
