/*
 * bench-gemm.c - checks native/src/gemm.c against a double-precision reference and times it
 * against OpenBLAS's cblas_sgemm on the matrix products of one iteration of the seed MLP GAN.
 *
 * Build (from the repository root; same flags as the addon, no -march):
 *   cc -O3 -std=c11 -ffp-contract=off -fno-trapping-math -fno-math-errno -Wall -o /tmp/bench-gemm \
 *      native/tools/bench-gemm.c native/tools/bench-gemm-check.c native/tools/bench-gemm-time.c \
 *      native/src/gemm.c native/src/gemm_blocked.c native/src/gemm_kernels*.c \
 *      $(pkg-config --cflags --libs openblas) -lpthread -lm
 * Without OpenBLAS (correctness only, e.g. on aarch64): add -DNO_OPENBLAS and drop the pkg-config part.
 * Adding -DGEMM_MT_MIN_FMA=1 (and -DGEMM_PREPACK_MAX=1000) makes even tiny products use the thread
 * pool (and its no-prepack path), so that `--check --check-threads 3` checks the threaded code on
 * every small size.
 *
 * Run:   /tmp/bench-gemm                 check, then time with 1 and 2 threads
 *        /tmp/bench-gemm --check         correctness only
 *        /tmp/bench-gemm --bench         timing only
 *        /tmp/bench-gemm --time S        seconds of samples per shape and library (default 0.25)
 *        /tmp/bench-gemm --threads 1,2   thread counts to time
 *        /tmp/bench-gemm --no-blas       time the built-in GEMM only
 *        /tmp/bench-gemm --min           report the fastest sample instead of the median (for tuning)
 *        /tmp/bench-gemm --check-threads N   threads for the small-size checks (default 1)
 * GEMM_KERNEL=avx2|sse2|portable forces a smaller kernel (to check every path on one machine);
 * OPENBLAS_CORETYPE=SkylakeX makes OpenBLAS use its AVX-512 kernels where it would not pick them.
 *
 * The checks are in bench-gemm-check.c, the timing (and how it is taken) in bench-gemm-time.c;
 * this file has what both use (the random numbers, the GAN's product shapes) and the options.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-gemm.h"

uint64_t rng = 0x9E3779B97F4A7C15ull;

void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

shape_t shapes[64];
int nshapes;
static char labels[64][32];

/* A dense layer with input X (n x in) and weights W (in x out): Y = X W, dX = dY W^T, dW = X^T dY. */
static void add_layers(int net, const char* name, const int* dims, int nd, int n, int phase) {
  for (int l = 0; l + 1 < nd; l++) {
    const int in = dims[l], out = dims[l + 1];
    const char* what[3] = {"fwd", "dX", "dW"};
    const int t[3][5] = {{0, 0, n, out, in}, {0, 1, n, in, out}, {1, 0, in, out, n}};
    for (int p = 0; p < 3; p++) {
      snprintf(labels[nshapes], sizeof labels[0], "%s%d %s n=%d", name, l + 1, what[p], n);
      shapes[nshapes] = (shape_t){labels[nshapes], t[p][0], t[p][1], t[p][2], t[p][3], t[p][4], net, phase, l, p};
      nshapes++;
    }
  }
}

static void make_shapes(void) {
  static const int D[] = {784, 1024, 512, 256, 1}, G[] = {100, 256, 512, 1024, 784};
  add_layers(0, "D", D, 5, 200, 0); /* D phase: 100 real + 100 fake rows */
  add_layers(0, "D", D, 5, 100, 1); /* G phase: D on the 100 fakes */
  add_layers(1, "G", G, 5, 100, 1);
}

int main(int argc, char** argv) {
  int do_check = 1, do_bench = 1, libs = 2;
  double secs = 0.25;
  int threads[8] = {1, 2}, nthreads = 2;
  for (int i = 1; i < argc; i++) {
    if (!strcmp(argv[i], "--check"))
      do_bench = 0;
    else if (!strcmp(argv[i], "--bench"))
      do_check = 0;
    else if (!strcmp(argv[i], "--no-blas"))
      libs = 1;
    else if (!strcmp(argv[i], "--min"))
      use_min = 1;
    else if (!strcmp(argv[i], "--check-threads") && i + 1 < argc)
      check_threads = atoi(argv[++i]);
    else if (!strcmp(argv[i], "--time") && i + 1 < argc)
      secs = atof(argv[++i]);
    else if (!strcmp(argv[i], "--threads") && i + 1 < argc) {
      nthreads = 0;
      for (char* t = strtok(argv[++i], ","); t && nthreads < 8; t = strtok(NULL, ",")) threads[nthreads++] = atoi(t);
    } else {
      fprintf(stderr, "usage: %s [--check | --bench] [--time seconds] [--threads 1,2] [--no-blas] [--min] [--check-threads N]\n", argv[0]);
      return 2;
    }
  }
  make_shapes();
  int rc = 0;
  if (do_check) rc = run_checks();
  if (do_bench) run_bench(threads, nthreads, secs, libs);
  return rc;
}
