/*
 * gemm_blocked.c - the built-in GEMM on one thread: blocking and packing order around the
 * micro-kernels of gemm_kernels*.c (the Goto/BLIS scheme described in gemm.c), the
 * matrix-vector case, and the plain loops used when a buffer cannot be allocated. gemm.c
 * drives it, on the calling thread or cut into chunks across its helper threads.
 */
#include "gemm_blocked.h"

#include <stdlib.h>
#include <string.h>

float* gemm_grow(float** p, size_t* cap, size_t n) {
  if (n <= *cap) return *p;
  free(*p);
  *p = NULL;
  *cap = 0;
  n = (n + 1023) & ~(size_t)1023;
  void* q = NULL;
  if (posix_memalign(&q, 64, n * sizeof(float)) != 0) return NULL;
  *p = (float*)q;
  *cap = n;
  return *p;
}

void gemm_zero_c(int M, int N, float* C, int ldc) {
  for (int i = 0; i < M; i++) memset(C + (idx_t)i * ldc, 0, (size_t)N * sizeof(float));
}

/* Packs w rows/columns (the panel dimension) by kc into panels of P. copy: element (r, k) is
   src[k * ld + r]; otherwise src[r * ld + k] (transposing pack). */
static void pack_panels(const arch_t* ar, int copy, const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  if (copy) {
    gemm_pack_copy(src, ld, w, kc, P, dst);
  } else {
    for (int q = 0; q < w; q += P) ar->tpack(src + (idx_t)q * ld, ld, imin(P, w - q), kc, P, dst + (idx_t)q * kc);
  }
}
/* op(A) rows [i0, i0 + w) x k [k0, k0 + kc) into MR panels; op(B) columns [j0, j0 + w) into NR panels. */
void gemm_pack_a(const arch_t* ar, int tA, const float* A, idx_t lda, int i0, int w, int k0, int kc, float* dst) {
  if (tA)
    pack_panels(ar, 1, A + (idx_t)k0 * lda + i0, lda, w, kc, ar->mr, dst);
  else
    pack_panels(ar, 0, A + (idx_t)i0 * lda + k0, lda, w, kc, ar->mr, dst);
}
void gemm_pack_b(const arch_t* ar, int tB, const float* B, idx_t ldb, int j0, int w, int k0, int kc, float* dst) {
  if (tB)
    pack_panels(ar, 0, B + (idx_t)j0 * ldb + k0, ldb, w, kc, ar->nr, dst);
  else
    pack_panels(ar, 1, B + (idx_t)k0 * ldb + j0, ldb, w, kc, ar->nr, dst);
}

/* Plain loops, used only if a packing buffer cannot be allocated. */
void gemm_naive(int tA, int tB, int M, int N, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                       float* C, idx_t ldc) {
  for (int i = 0; i < M; i++) {
    float* c = C + i * ldc;
    for (int j = 0; j < N; j++) c[j] = 0.f;
    for (int k = 0; k < K; k++) {
      const float a = tA ? A[(idx_t)k * lda + i] : A[(idx_t)i * lda + k];
      if (!tB) {
        const float* b = B + (idx_t)k * ldb;
        for (int j = 0; j < N; j++) c[j] += a * b[j];
      } else {
        for (int j = 0; j < N; j++) c[j] += a * B[(idx_t)j * ldb + k];
      }
    }
  }
}

/* K slice depth: even slices (K = 300 with KC = 256 gives 2 x 150, not 256 + 44). */
int gemm_k_slice(const arch_t* ar, int K) {
  const int n = (K + ar->kc - 1) / ar->kc;
  return round_up((K + n - 1) / n, 4);
}

/* Macro-kernel: C[m x n] (+)= Ap * Bp for one K slice of depth kc, where Ap holds the m rows in MR
   panels and Bp the n columns in NR panels. Rows go in blocks of MC so that the A block stays in
   L2 while each B panel (kc x NR) is reused from L1 across it. */
void gemm_macro_kernel(const arch_t* ar, int m, int n, int kc, const float* Ap, const float* Bp, float* C, idx_t ldc,
                         int acc) {
  const int MR = ar->mr, NR = ar->nr, VW = ar->vw, NV = NR / VW;
  const int nmb = (m + ar->mc - 1) / ar->mc, mc = round_up((m + nmb - 1) / nmb, MR);
  for (int ic = 0; ic < m; ic += mc) {
    const int mcur = imin(mc, m - ic);
    for (int jr = 0; jr < n; jr += NR) {
      const int w = imin(NR, n - jr), nv = (w + VW - 1) / VW, nlast = w - (nv - 1) * VW;
      const float* bp = Bp + (idx_t)jr * kc;
      float* cc = C + (idx_t)ic * ldc + jr;
      const kern_fn* kern = ar->kern + nv - 1;
      for (int ir = ic; ir < ic + mcur; ir += MR) {
        const int h = imin(MR, m - ir);
        kern[(h - 1) * NV](kc, Ap + (idx_t)ir * kc, bp, cc + (idx_t)(ir - ic) * ldc, ldc, acc, nlast);
      }
    }
  }
}

/* One thread, any size: B is packed per (NC columns, K slice), A per (MC rows, K slice). */
void gemm_serial(const arch_t* ar, bufs_t* buf, int tA, int tB, int M, int N, int K, const float* A,
                        idx_t lda, const float* B, idx_t ldb, float* C, idx_t ldc) {
  const int MR = ar->mr, NR = ar->nr, kc = gemm_k_slice(ar, K);
  const int nmb = (M + ar->mc - 1) / ar->mc, mc = round_up((M + nmb - 1) / nmb, MR);
  const int nnb = (N + ar->nc - 1) / ar->nc, nc = round_up((N + nnb - 1) / nnb, NR);
  float* Ap = gemm_grow(&buf->a, &buf->acap, (size_t)mc * kc);
  float* Bp = gemm_grow(&buf->b, &buf->bcap, (size_t)nc * kc);
  if (!Ap || !Bp) {
    gemm_naive(tA, tB, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  for (int jc = 0; jc < N; jc += nc) {
    const int ncur = imin(nc, N - jc);
    for (int pc = 0; pc < K; pc += kc) {
      const int kcur = imin(kc, K - pc);
      gemm_pack_b(ar, tB, B, ldb, jc, ncur, pc, kcur, Bp);
      for (int ic = 0; ic < M; ic += mc) {
        const int mcur = imin(mc, M - ic);
        gemm_pack_a(ar, tA, A, lda, ic, mcur, pc, kcur, Ap);
        gemm_macro_kernel(ar, mcur, ncur, kcur, Ap, Bp, C + (idx_t)ic * ldc + jc, ldc, pc > 0);
      }
    }
  }
}

/* N == 1 (the discriminator's last layer) is a matrix-vector product: the tiled path would
   compute a whole vector of columns to keep one. */
void gemm_gemv_n1(bufs_t* buf, int tA, int tB, int M, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                    float* C, idx_t ldc) {
  float* t = gemm_grow(&buf->b, &buf->bcap, (size_t)K + (size_t)M);
  if (!t) {
    gemm_naive(tA, tB, M, 1, K, A, lda, B, ldb, C, ldc);
    return;
  }
  const float* x = B; /* op(B) is one column: B[k] when transposed (1 x K), else B[k * ldb] */
  if (!tB) {
    for (int k = 0; k < K; k++) t[k] = B[(idx_t)k * ldb];
    x = t;
  }
  if (!tA) {
    for (int i = 0; i < M; i++) C[(idx_t)i * ldc] = gemm_dot(A + (idx_t)i * lda, x, K);
  } else {
    float* y = t + K;
    for (int i = 0; i < M; i++) y[i] = 0.f;
    for (int k = 0; k < K; k++) {
      const float xk = x[k], *a = A + (idx_t)k * lda;
      for (int i = 0; i < M; i++) y[i] += a[i] * xk;
    }
    for (int i = 0; i < M; i++) C[(idx_t)i * ldc] = y[i];
  }
}
