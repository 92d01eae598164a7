/*
 * bench-gemm.c - checks native/src/gemm.c against a double-precision reference and times it
 * against OpenBLAS's cblas_sgemm on the matrix products of one iteration of the seed MLP GAN.
 *
 * Build (from the repository root; same flags as the addon, no -march):
 *   cc -O3 -std=c11 -ffp-contract=off -fno-trapping-math -fno-math-errno -Wall -o /tmp/bench-gemm \
 *      native/tools/bench-gemm.c native/src/gemm.c native/src/gemm_blocked.c native/src/gemm_kernels*.c \
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
 * Timing: each shape's time is the median of single calls over --time seconds; the built-in GEMM
 * and OpenBLAS run one after the other on the same shape. The "whole iteration" line runs the 36
 * products back to back in training order (weights, inputs and gradients shared between the
 * products as in training) and takes the median of 60 iterations. OpenBLAS's idle threads spin
 * for a while after each call, so the 2-thread runs sleep 0.3 s before each shape to keep them
 * from taking the built-in GEMM's second core.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "../src/gemm.h"

#ifndef NO_OPENBLAS
#include <cblas.h>
void openblas_set_num_threads(int);
char* openblas_get_corename(void);
char* openblas_get_config(void);
#endif

/* ---------------------------------------------------------------------------------------- */
static uint64_t rng = 0x9E3779B97F4A7C15ull;
static uint32_t rnd32(void) {
  rng ^= rng << 13;
  rng ^= rng >> 7;
  rng ^= rng << 17;
  return (uint32_t)(rng >> 11);
}
static int rnd_int(int lo, int hi) { return lo + (int)(rnd32() % (uint32_t)(hi - lo + 1)); }
static float rnd_f(void) { return (float)((rnd32() & 0xFFFFFF) / 16777216.0 * 2.0 - 1.0); }

static double now(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec + t.tv_nsec * 1e-9;
}
static void sleep_s(double s) {
  struct timespec t = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
  nanosleep(&t, NULL);
}
static int cmp_d(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
static int use_min;
static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  if (use_min) return v[0];
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

static void* xmalloc(size_t n) {
  void* p = malloc(n ? n : 1);
  if (!p) {
    fprintf(stderr, "out of memory\n");
    exit(2);
  }
  return p;
}

/* ---------------------------------------------------------------------------------------- */
/* Correctness                                                                              */
/* ---------------------------------------------------------------------------------------- */
typedef struct {
  long tests, failed;
  double max_scaled;  /* max |C - ref| / sum_k |a_ik b_kj| */
  double max_norm;    /* max over tests of max|C - ref| / max|ref| */
  double blas_scaled, blas_norm;
} stats_t;
static stats_t st[4];
static const char* tname[4] = {"NN", "NT", "TN", "TT"};

/* Checks one product; threads is set by the caller. */
static void check(int tA, int tB, int M, int N, int K, int padA, int padB, int padC, int with_blas) {
  const int rowsA = tA ? K : M, colsA = tA ? M : K, rowsB = tB ? N : K, colsB = tB ? K : N;
  const int lda = colsA + padA, ldb = colsB + padB, ldc = N + padC;
  float* A = xmalloc(sizeof(float) * (size_t)rowsA * lda);
  float* B = xmalloc(sizeof(float) * (size_t)rowsB * ldb);
  float* C = xmalloc(sizeof(float) * (size_t)M * ldc);
  double* ref = xmalloc(sizeof(double) * ((size_t)M * N + 1));
  double* mag = xmalloc(sizeof(double) * ((size_t)M * N + 1));
  for (size_t i = 0; i < (size_t)rowsA * lda; i++) A[i] = rnd_f();
  for (size_t i = 0; i < (size_t)rowsB * ldb; i++) B[i] = rnd_f();
  double refmax = 0;
  for (int i = 0; i < M; i++)
    for (int j = 0; j < N; j++) {
      double s = 0, m = 0;
      for (int k = 0; k < K; k++) {
        const double a = tA ? A[(size_t)k * lda + i] : A[(size_t)i * lda + k];
        const double b = tB ? B[(size_t)j * ldb + k] : B[(size_t)k * ldb + j];
        s += a * b;
        m += fabs(a * b);
      }
      ref[(size_t)i * N + j] = s;
      mag[(size_t)i * N + j] = m;
      if (fabs(s) > refmax) refmax = fabs(s);
    }
  stats_t* S = &st[tA * 2 + tB];
  for (int lib = 0; lib < (with_blas ? 2 : 1); lib++) {
    const uint32_t sentinel = 0x7FC0DEADu; /* a NaN: also catches a kernel that reads C */
    for (size_t i = 0; i < (size_t)M * ldc; i++) memcpy(&C[i], &sentinel, 4);
    if (lib == 0) {
      gemm_f32(tA, tB, M, N, K, A, lda, B, ldb, C, ldc);
    } else {
#ifndef NO_OPENBLAS
      if (K == 0) continue;
      cblas_sgemm(CblasRowMajor, tA ? CblasTrans : CblasNoTrans, tB ? CblasTrans : CblasNoTrans, M, N, K, 1.f, A,
                  lda, B, ldb, 0.f, C, ldc);
#endif
    }
    double scaled = 0, maxd = 0;
    int bad = 0;
    for (int i = 0; i < M; i++) {
      for (int j = 0; j < ldc; j++) {
        const float c = C[(size_t)i * ldc + j];
        if (j >= N) {
          uint32_t u;
          memcpy(&u, &c, 4);
          if (u != sentinel) bad = 1; /* wrote outside the N columns */
          continue;
        }
        if (!isfinite(c)) {
          bad = 1;
          continue;
        }
        const double d = fabs(c - ref[(size_t)i * N + j]), m = mag[(size_t)i * N + j];
        if (d > maxd) maxd = d;
        if (m > 0 && d / m > scaled) scaled = d / m;
        if (m == 0 && d != 0) bad = 1;
      }
    }
    const double norm = refmax > 0 ? maxd / refmax : maxd;
    if (lib == 0) {
      S->tests++;
      /* float accumulation: |error| <= K * 2^-24 * sum|a b| (worst case); allow that plus slack */
      if (bad || scaled > (K + 4) * 6.0e-8) {
        S->failed++;
        if (S->failed <= 5)
          fprintf(stderr, "FAIL %s M=%d N=%d K=%d pads=%d,%d,%d threads=%d: scaled err %.3g%s\n", tname[tA * 2 + tB],
                  M, N, K, padA, padB, padC, gemm_get_threads(), scaled, bad ? " (NaN / wrote outside C / garbage)" : "");
      }
      if (scaled > S->max_scaled) S->max_scaled = scaled;
      if (norm > S->max_norm) S->max_norm = norm;
    } else {
      if (scaled > S->blas_scaled) S->blas_scaled = scaled;
      if (norm > S->blas_norm) S->blas_norm = norm;
    }
  }
  free(A), free(B), free(C), free(ref), free(mag);
}

typedef struct {
  const char* label;
  int tA, tB, M, N, K;
  int net, phase, layer, kind; /* kind 0 = forward, 1 = input gradient, 2 = weight gradient */
} shape_t;
static shape_t shapes[64];
static int nshapes;
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

static int check_threads = 1; /* threads for the small-size sweeps */
static int run_checks(void) {
  memset(st, 0, sizeof st);
#ifdef NO_OPENBLAS
  const int blas = 0;
#else
  const int blas = 1;
  openblas_set_num_threads(1);
#endif
  static const int small[] = {1, 2, 3, 4, 5, 7, 8, 9, 13, 14, 15, 16, 17, 23, 29, 31, 32, 33, 47, 48, 49, 63, 64, 65, 70};
  const int ns = (int)(sizeof small / sizeof *small);
  const double t0 = now();
  gemm_set_threads(check_threads);
  for (int tA = 0; tA < 2; tA++)
    for (int tB = 0; tB < 2; tB++) {
      /* every combination of awkward small sizes, tight and padded strides */
      for (int a = 0; a < ns; a++)
        for (int b = 0; b < ns; b++)
          for (int c = 0; c < ns; c++) {
            const int pad = (a + b + c) % 3 == 0;
            check(tA, tB, small[a], small[b], small[c], pad ? rnd_int(1, 9) : 0, pad ? rnd_int(1, 9) : 0,
                  pad ? rnd_int(1, 9) : 0, blas);
          }
      /* each of M, N, K over 1..70 with the other two random, strides wider than the rows */
      for (int x = 1; x <= 70; x++) {
        check(tA, tB, x, rnd_int(1, 70), rnd_int(1, 70), rnd_int(0, 9), rnd_int(0, 9), rnd_int(0, 9), blas);
        check(tA, tB, rnd_int(1, 70), x, rnd_int(1, 70), rnd_int(0, 9), rnd_int(0, 9), rnd_int(0, 9), blas);
        check(tA, tB, rnd_int(1, 70), rnd_int(1, 70), x, rnd_int(0, 9), rnd_int(0, 9), rnd_int(0, 9), blas);
      }
      check(tA, tB, 5, 7, 0, 0, 0, 3, 0); /* K == 0: zeros */
    }
  /* blocking boundaries (K slices, row blocks, strips, thread cuts) with 1, 2 and 3 threads */
  static const int mid[][3] = {{197, 33, 257},  {393, 70, 100}, {100, 1000, 513}, {37, 4100, 30}, {130, 777, 1025},
                               {591, 129, 200}, {200, 1, 256},  {1, 300, 700},    {29, 45, 1030}, {255, 255, 255}};
  for (int th = 1; th <= 3; th++) {
    gemm_set_threads(th);
    for (int tA = 0; tA < 2; tA++)
      for (int tB = 0; tB < 2; tB++)
        for (size_t s = 0; s < sizeof mid / sizeof *mid; s++)
          check(tA, tB, mid[s][0], mid[s][1], mid[s][2], rnd_int(0, 5), rnd_int(0, 5), rnd_int(0, 5), blas);
  }
  /* the model's shapes, with 1, 2 and 3 threads */
  for (int th = 1; th <= 3; th++) {
    gemm_set_threads(th);
    for (int s = 0; s < nshapes; s++) {
      const shape_t* p = &shapes[s];
      check(p->tA, p->tB, p->M, p->N, p->K, 0, 0, 0, blas && th == 1);
    }
  }
  gemm_set_threads(1);
  long tests = 0, failed = 0;
  printf("Correctness (%s), %.1f s\n", gemm_describe(), now() - t0);
  printf("  error = |C - ref| / sum_k |a_ik b_kj| (max over all elements), normwise = max|C - ref| / max|ref|\n");
  printf("  trans  tests  failed   max error   normwise%s\n", blas ? "  | OpenBLAS: max error   normwise" : "");
  for (int t = 0; t < 4; t++) {
    printf("  %s    %6ld  %6ld   %9.2e  %9.2e", tname[t], st[t].tests, st[t].failed, st[t].max_scaled, st[t].max_norm);
    if (blas) printf("  |           %9.2e  %9.2e", st[t].blas_scaled, st[t].blas_norm);
    printf("\n");
    tests += st[t].tests;
    failed += st[t].failed;
  }
  printf("%ld passed, %ld failed\n\n", tests - failed, failed);
  return failed != 0;
}

/* ---------------------------------------------------------------------------------------- */
/* Timing                                                                                   */
/* ---------------------------------------------------------------------------------------- */
typedef struct {
  float *A, *B, *C;
} bufs_t;
static bufs_t data[64];
static int order[64]; /* the products in the order one training iteration runs them */

static float* rnd_buf(size_t n) {
  float* p = xmalloc(n * sizeof(float));
  for (size_t i = 0; i < n; i++) p[i] = rnd_f();
  return p;
}

/* Tensors shared as in training: a layer's W feeds its forward and input-gradient products in both
   phases, its X feeds forward and weight gradient, its dY both gradients. */
static void make_data(void) {
  float *W[2][4] = {{0}}, *dW[2][4] = {{0}}, *X[2][2][4] = {{{0}}}, *dY[2][2][4] = {{{0}}};
  for (int s = 0; s < nshapes; s++) {
    const shape_t* p = &shapes[s];
    const int n = p->kind == 2 ? p->K : p->M;
    const int in = p->kind == 0 ? p->K : p->kind == 1 ? p->N : p->M;
    const int out = p->kind == 0 ? p->N : p->kind == 1 ? p->K : p->N;
    float** w = &W[p->net][p->layer];
    float** x = &X[p->net][p->phase][p->layer];
    float** dy = &dY[p->net][p->phase][p->layer];
    if (!*w) *w = rnd_buf((size_t)in * out), dW[p->net][p->layer] = rnd_buf((size_t)in * out);
    if (!*x) *x = rnd_buf((size_t)n * in);
    if (!*dy) *dy = rnd_buf((size_t)n * out);
    if (p->kind == 0) data[s] = (bufs_t){*x, *w, rnd_buf((size_t)n * out)};
    if (p->kind == 1) data[s] = (bufs_t){*dy, *w, rnd_buf((size_t)n * in)};
    if (p->kind == 2) data[s] = (bufs_t){*x, *dy, dW[p->net][p->layer]};
  }
  /* D phase: D forward, D backward; G phase: G forward, D forward, D backward, G backward.
     Backward goes from the last layer down, input gradient then weight gradient. */
  static const int plan[6][3] = {{0, 0, 0}, {0, 0, 1}, {1, 1, 0}, {0, 1, 0}, {0, 1, 1}, {1, 1, 1}};
  int k = 0;
  for (int q = 0; q < 6; q++) {
    const int net = plan[q][0], phase = plan[q][1], bwd = plan[q][2];
    for (int i = 0; i < 4; i++) {
      const int l = bwd ? 3 - i : i;
      for (int kind = bwd ? 1 : 0; kind <= (bwd ? 2 : 0); kind++)
        for (int s = 0; s < nshapes; s++)
          if (shapes[s].net == net && shapes[s].phase == phase && shapes[s].layer == l && shapes[s].kind == kind)
            order[k++] = s;
    }
  }
  if (k != nshapes) {
    fprintf(stderr, "internal error: iteration order\n");
    exit(2);
  }
}

static void run_one(int lib, const shape_t* p, const bufs_t* d) {
  const int lda = p->tA ? p->M : p->K, ldb = p->tB ? p->K : p->N;
  if (lib == 0) {
    gemm_f32(p->tA, p->tB, p->M, p->N, p->K, d->A, lda, d->B, ldb, d->C, p->N);
  } else {
#ifndef NO_OPENBLAS
    cblas_sgemm(CblasRowMajor, p->tA ? CblasTrans : CblasNoTrans, p->tB ? CblasTrans : CblasNoTrans, p->M, p->N,
                p->K, 1.f, d->A, lda, d->B, ldb, 0.f, d->C, p->N);
#endif
  }
}

#define MAX_SAMPLES 20000
static double samples[MAX_SAMPLES];

/* Median ms of single calls, sampling for about `secs` seconds (at least 15 samples). */
static double time_shape(int lib, const shape_t* p, const bufs_t* d, double secs) {
  for (int w = 0; w < 3; w++) run_one(lib, p, d);
  int n = 0;
  const double t_end = now() + secs;
  while (n < MAX_SAMPLES && (n < 15 || now() < t_end)) {
    const double t = now();
    run_one(lib, p, d);
    samples[n++] = now() - t;
  }
  return median(samples, n) * 1e3;
}

/* Median ms of the whole list of products run back to back (one GAN iteration). */
static double time_iteration(int lib, int reps) {
  for (int s = 0; s < nshapes; s++) run_one(lib, &shapes[order[s]], &data[order[s]]);
  for (int r = 0; r < reps; r++) {
    const double t = now();
    for (int s = 0; s < nshapes; s++) run_one(lib, &shapes[order[s]], &data[order[s]]);
    samples[r] = now() - t;
  }
  return median(samples, reps) * 1e3;
}

/* How busy the machine was with other processes: CPU seconds of the whole machine (Linux
   /proc/stat) minus this process's own, per second of wall time. -1 where unknown. */
typedef struct {
  double wall, machine, self;
} cpu_mark_t;
static cpu_mark_t cpu_mark(void) {
  cpu_mark_t m = {now(), -1, 0};
  FILE* f = fopen("/proc/stat", "r");
  if (f) {
    unsigned long long v[8] = {0};
    if (fscanf(f, "cpu %llu %llu %llu %llu %llu %llu %llu %llu", &v[0], &v[1], &v[2], &v[3], &v[4], &v[5], &v[6],
               &v[7]) == 8)
      m.machine = (double)(v[0] + v[1] + v[2] + v[5] + v[6] + v[7]) / (double)sysconf(_SC_CLK_TCK);
    fclose(f);
  }
  struct rusage ru;
  getrusage(RUSAGE_SELF, &ru);
  m.self = ru.ru_utime.tv_sec + ru.ru_utime.tv_usec * 1e-6 + ru.ru_stime.tv_sec + ru.ru_stime.tv_usec * 1e-6;
  return m;
}
static double others_cores(cpu_mark_t a, cpu_mark_t b) {
  if (a.machine < 0 || b.machine < 0 || b.wall <= a.wall) return -1;
  return ((b.machine - a.machine) - (b.self - a.self)) / (b.wall - a.wall);
}

static void set_threads(int n) {
  gemm_set_threads(n);
#ifndef NO_OPENBLAS
  openblas_set_num_threads(n);
#endif
}

static void run_bench(const int* threads, int nthreads, double secs, int libs) {
#ifdef NO_OPENBLAS
  libs = 1;
#else
  if (libs > 1) printf("OpenBLAS: %s (core %s)\n", openblas_get_config(), openblas_get_corename());
#endif
  printf("built-in: %s\n", gemm_describe());
  make_data();
  double flops_total = 0;
  for (int s = 0; s < nshapes; s++) flops_total += 2.0 * shapes[s].M * shapes[s].N * shapes[s].K;
  for (int ti = 0; ti < nthreads; ti++) {
    const int T = threads[ti];
    set_threads(T);
    printf("\n%d thread%s: median ms of single calls (%.2f s of samples per shape and library)\n", T, T > 1 ? "s" : "",
           secs);
    printf("  %-15s %-16s %-2s  %9s %7s  %9s %7s  %s\n", "product", "M x N x K", "tr", "built-in", "GF/s", "OpenBLAS",
           "GF/s", "OpenBLAS/built-in");
    double sum[2] = {0, 0};
    const cpu_mark_t mark0 = cpu_mark();
    for (int s = 0; s < nshapes; s++) {
      const shape_t* p = &shapes[s];
      double ms[2] = {0, 0};
      if (T > 1 && libs > 1) sleep_s(0.3); /* let OpenBLAS's spinning helpers go to sleep */
      for (int lib = 0; lib < libs; lib++) ms[lib] = time_shape(lib, p, &data[s], secs);
      const double gf = 2.0 * p->M * p->N * p->K * 1e-9;
      char dims[32];
      snprintf(dims, sizeof dims, "%dx%dx%d", p->M, p->N, p->K);
      printf("  %-15s %-16s %c%c  %9.4f %7.1f", p->label, dims, p->tA ? 'T' : 'N', p->tB ? 'T' : 'N', ms[0],
             gf / (ms[0] * 1e-3));
      if (libs > 1) printf("  %9.4f %7.1f  %6.2f", ms[1], gf / (ms[1] * 1e-3), ms[1] / ms[0]);
      printf("\n");
      sum[0] += ms[0];
      sum[1] += ms[1];
    }
    double it[2] = {0, 0};
    if (T > 1 && libs > 1) sleep_s(0.3);
    for (int lib = 0; lib < libs; lib++) it[lib] = time_iteration(lib, 60);
    printf("  %-15s %-16s %-2s  %9.3f %7.1f", "sum of medians", "", "", sum[0], flops_total * 1e-9 / (sum[0] * 1e-3));
    if (libs > 1) printf("  %9.3f %7.1f  %6.2f", sum[1], flops_total * 1e-9 / (sum[1] * 1e-3), sum[1] / sum[0]);
    printf("\n  %-15s %-16s %-2s  %9.3f %7.1f", "whole iteration", "(36 calls, median)", "", it[0],
           flops_total * 1e-9 / (it[0] * 1e-3));
    if (libs > 1) printf("  %9.3f %7.1f  %6.2f", it[1], flops_total * 1e-9 / (it[1] * 1e-3), it[1] / it[0]);
    printf("\n");
    const double busy = others_cores(mark0, cpu_mark());
    if (busy >= 0)
      printf("  (other processes kept %.2f of the machine's %ld cores busy meanwhile)\n", busy < 0.005 ? 0 : busy,
             sysconf(_SC_NPROCESSORS_ONLN));
  }
  int multi = 0;
  for (int ti = 0; ti < nthreads; ti++) multi |= threads[ti] > 1;
  if (!multi) return;
  /* What waking a helper costs: products just above and below the single-thread cut-off. */
  static const int small[][3] = {{64, 128, 128}, {64, 128, 256}, {100, 256, 100}, {100, 100, 256}, {128, 256, 256}};
  printf("\nbuilt-in, small products: 1 thread vs 2 threads (ms)\n");
  for (size_t i = 0; i < sizeof small / sizeof *small; i++) {
    shape_t p = {"", 0, 0, small[i][0], small[i][1], small[i][2], 0, 0, 0, 0};
    bufs_t d = {xmalloc(sizeof(float) * p.M * p.K), xmalloc(sizeof(float) * p.K * p.N), xmalloc(sizeof(float) * p.M * p.N)};
    for (int k = 0; k < p.M * p.K; k++) d.A[k] = rnd_f();
    for (int k = 0; k < p.K * p.N; k++) d.B[k] = rnd_f();
    gemm_set_threads(1);
    const double t1 = time_shape(0, &p, &d, secs);
    gemm_set_threads(2);
    const double t2 = time_shape(0, &p, &d, secs);
    printf("  %4dx%4dx%4d (%.2fM FMA): %8.4f  %8.4f\n", p.M, p.N, p.K, p.M * (double)p.N * p.K * 1e-6, t1, t2);
    free(d.A), free(d.B), free(d.C);
  }
  gemm_set_threads(1);
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
