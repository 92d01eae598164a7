/*
 * bench-gemm-check.c - the correctness half of bench-gemm (build line and options in
 * bench-gemm.c): every combination of awkward small sizes, each of M, N and K over 1..70, the
 * blocking boundaries and the GAN's shapes, with 1 to 3 threads, compared against a
 * double-precision reference (and OpenBLAS's error on the same products, for scale).
 *
 * A file of its own because checking and timing share only the shapes and the random numbers
 * (bench-gemm.h): this half measures error, bench-gemm-time.c measures time.
 */
#define _POSIX_C_SOURCE 200809L
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "bench-gemm.h"

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

int check_threads = 1; /* threads for the small-size sweeps */
int run_checks(void) {
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
