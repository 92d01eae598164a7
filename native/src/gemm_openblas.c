/*
 * gemm.h's interface on OpenBLAS, for builds that found it (native/blas-flags.cjs decides). The
 * built-in gemm.c implements the same interface without any library.
 */
#include <cblas.h>
#include <stdio.h>
#include <string.h>

#include "gemm.h"

void gemm_f32(int transA, int transB, int M, int N, int K, const float* A, int lda, const float* B, int ldb, float* C,
              int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K == 0) {
    for (int i = 0; i < M; i++) memset(C + (size_t)i * ldc, 0, (size_t)N * sizeof(float));
    return;
  }
  cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans, M, N, K, 1.f, A, lda,
              B, ldb, 0.f, C, ldc);
}

void gemm_set_threads(int n) { openblas_set_num_threads(n < 1 ? 1 : n); }

int gemm_get_threads(void) { return openblas_get_num_threads(); }

const char* gemm_describe(void) {
  static char text[160];
  const char* cfg = openblas_get_config();
  snprintf(text, sizeof text, "%s", cfg ? cfg : "OpenBLAS");
  return text;
}
