/*
 * gemm_blocked.h - what gemm.c (threads, public interface) uses of gemm_blocked.c (the product on
 * one thread). Internal to the built-in GEMM.
 */
#ifndef GAN_GEMM_BLOCKED_H
#define GAN_GEMM_BLOCKED_H

#include "gemm_kernels.h"

#include <stddef.h>

/* Packing buffers of one thread, only ever grown. */
typedef struct {
  float* a;
  size_t acap;
  float* b;
  size_t bcap;
} bufs_t;

static inline int imin(int a, int b) { return a < b ? a : b; }
static inline int round_up(int x, int m) { return (x + m - 1) / m * m; }

/* *p with room for n floats (64-byte aligned), or NULL if it cannot be had. */
float* gemm_grow(float** p, size_t* cap, size_t n);
void gemm_zero_c(int M, int N, float* C, int ldc);
/* op(A) rows [i0, i0 + w) x k [k0, k0 + kc) into MR panels; op(B) columns [j0, j0 + w) into NR panels. */
void gemm_pack_a(const arch_t* ar, int tA, const float* A, idx_t lda, int i0, int w, int k0, int kc, float* dst);
void gemm_pack_b(const arch_t* ar, int tB, const float* B, idx_t ldb, int j0, int w, int k0, int kc, float* dst);
/* Plain loops, used only if a packing buffer cannot be allocated. */
void gemm_naive(int tA, int tB, int M, int N, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                float* C, idx_t ldc);
/* K slice depth: even slices (K = 300 with KC = 256 gives 2 x 150, not 256 + 44). */
int gemm_k_slice(const arch_t* ar, int K);
/* C[m x n] (+)= Ap * Bp for one K slice of depth kc (Ap: m rows in MR panels, Bp: n columns in NR panels). */
void gemm_macro_kernel(const arch_t* ar, int m, int n, int kc, const float* Ap, const float* Bp, float* C, idx_t ldc,
                       int acc);
/* The whole product on the calling thread, with its buffers. */
void gemm_serial(const arch_t* ar, bufs_t* buf, int tA, int tB, int M, int N, int K, const float* A, idx_t lda,
                 const float* B, idx_t ldb, float* C, idx_t ldc);
/* N == 1: a matrix-vector product. */
void gemm_gemv_n1(bufs_t* buf, int tA, int tB, int M, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                  float* C, idx_t ldc);

#endif
