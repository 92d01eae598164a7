/*
 * bench-gemm-time.c - the timing half of bench-gemm (build line and options in bench-gemm.c): the
 * built-in GEMM against OpenBLAS on each product of one GAN iteration, on the whole iteration, and
 * the cost of waking a helper thread on small products.
 *
 * Timing: each shape's time is the median of single calls over --time seconds; the built-in GEMM
 * and OpenBLAS run one after the other on the same shape. The "whole iteration" line runs the 36
 * products back to back in training order (weights, inputs and gradients shared between the
 * products as in training) and takes the median of 60 iterations. OpenBLAS's idle threads spin
 * for a while after each call, so the 2-thread runs sleep 0.3 s before each shape to keep them
 * from taking the built-in GEMM's second core.
 *
 * A file of its own because timing and checking share only the shapes and the random numbers
 * (bench-gemm.h): this half measures time, bench-gemm-check.c measures error.
 */
#define _POSIX_C_SOURCE 200809L
#include <stdio.h>
#include <stdlib.h>
#include <sys/resource.h>
#include <time.h>
#include <unistd.h>

#include "bench-gemm.h"

static void sleep_s(double s) {
  struct timespec t = {(time_t)s, (long)((s - (time_t)s) * 1e9)};
  nanosleep(&t, NULL);
}
static int cmp_d(const void* a, const void* b) {
  const double x = *(const double*)a, y = *(const double*)b;
  return x < y ? -1 : x > y;
}
int use_min;
static double median(double* v, int n) {
  qsort(v, (size_t)n, sizeof *v, cmp_d);
  if (use_min) return v[0];
  return n % 2 ? v[n / 2] : 0.5 * (v[n / 2 - 1] + v[n / 2]);
}

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

void run_bench(const int* threads, int nthreads, double secs, int libs) {
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
