/*
 * gemm.h - self-contained single-precision matrix product (no BLAS needed).
 *
 * Row-major, like cblas_sgemm(CblasRowMajor, ..., alpha = 1, ..., beta = 0, ...).
 * The kernel is chosen once at run time from the CPU: AVX-512, AVX2+FMA or SSE2 on
 * x86-64, a portable vectorisable C kernel elsewhere (aarch64, ...). Setting the
 * environment variable GEMM_KERNEL to avx512, avx2, sse2 or portable before the first
 * call forces a kernel (downgrades only; meant for tests).
 */
#ifndef GAN_GEMM_H
#define GAN_GEMM_H

#ifdef __cplusplus
extern "C" {
#endif

/* C[M x N] = op(A) x op(B), row-major. op(A) is M x K (A is K x M when transA), op(B) is K x N
   (B is N x K when transB). lda/ldb/ldc are row strides in floats. C is fully overwritten
   (K == 0 gives zeros); M <= 0 or N <= 0 does nothing. Calls must be serialised by the caller
   (a call from a second thread waits for the first to finish). */
void gemm_f32(int transA, int transB, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
              float* C, int ldc);

/* Compute threads for later calls (clamped to 1..64; default 1). With 1 no thread is ever created;
   with n > 1 a pool of n - 1 helper threads is started on first need. Idle helpers sleep on a
   condition variable (they never spin). Small products always run on the calling thread alone. */
void gemm_set_threads(int n);
int gemm_get_threads(void);

/* Names the kernel the CPU dispatch chose, e.g. "built-in GEMM (AVX-512, 14x32)". */
const char* gemm_describe(void);

#ifdef __cplusplus
}
#endif

#endif
