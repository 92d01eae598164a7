/*
 * bench-gemm.h - what the three files of the GEMM checker and benchmark share: the product shapes
 * of one GAN iteration, the random numbers (one stream, so the checks and the timed data come out
 * as they did when this was one file), the clock, the OpenBLAS declarations, and the two halves'
 * entry points and settings. bench-gemm.c has the build line.
 */
#ifndef GAN_BENCH_GEMM_H
#define GAN_BENCH_GEMM_H

#include <stddef.h>
#include <stdint.h>
#include <time.h>

#include "../src/gemm.h"

#ifndef NO_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
char* openblas_get_config(void);
#endif

extern uint64_t rng; /* bench-gemm.c */
static inline uint32_t rnd32(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}
static inline int rnd_int(int lo, int hi) { return lo + (int)(rnd32() % (uint32_t)(hi - lo + 1)); }
static inline float rnd_f(void) { return (float)((rnd32() & 0xFFFFFF) / 16777216.0 * 2.0 - 1.0); }

static inline double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}

void* xmalloc(size_t n);

typedef struct {
  const char* label;
  int tA, tB, M, N, K;
  int net, phase, layer, kind; /* kind 0 = forward, 1 = input gradient, 2 = weight gradient */
} shape_t;
extern shape_t shapes[64];
extern int nshapes;

/* bench-gemm-check.c: every check (small sizes on check_threads threads); 1 if one failed. */
extern int check_threads;
int run_checks(void);
/* bench-gemm-time.c: the timings; use_min reports the fastest sample instead of the median. */
extern int use_min;
void run_bench(const int* threads, int nthreads, double secs, int libs);

#endif
