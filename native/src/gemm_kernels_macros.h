/*
 * gemm_kernels_macros.h - what the kernel files (gemm_kernels.c and gemm_kernels_<isa>.c) share and
 * gemm.c / gemm_blocked.c must not see: the preprocessor lists that write out the specialised
 * micro-kernels and their tables, the kernels' argument list, the NC default of every kernel set,
 * and the 4-float vector type of the portable kernel and gemm_dot. Nothing here is specific to an
 * instruction set; each kernel set's own macros stay in its file.
 */
#ifndef GAN_GEMM_KERNELS_MACROS_H
#define GAN_GEMM_KERNELS_MACROS_H

#include "gemm_kernels.h"

#include <string.h>

/* Lists for generating the specialised kernels: ROWS(n, X, a) gives X(1, a) .. X(n, a). */
#define R1(X, a) X(1, a)
#define R2(X, a) R1(X, a) X(2, a)
#define R3(X, a) R2(X, a) X(3, a)
#define R4(X, a) R3(X, a) X(4, a)
#define R5(X, a) R4(X, a) X(5, a)
#define R6(X, a) R5(X, a) X(6, a)
#define R7(X, a) R6(X, a) X(7, a)
#define R8(X, a) R7(X, a) X(8, a)
#define R9(X, a) R8(X, a) X(9, a)
#define R10(X, a) R9(X, a) X(10, a)
#define R11(X, a) R10(X, a) X(11, a)
#define R12(X, a) R11(X, a) X(12, a)
#define R13(X, a) R12(X, a) X(13, a)
#define R14(X, a) R13(X, a) X(14, a)
#define R15(X, a) R14(X, a) X(15, a)
#define R16(X, a) R15(X, a) X(16, a)
#define ROWS_(n, X, a) R##n(X, a)
#define ROWS(n, X, a) ROWS_(n, X, a)
#define V1(X, m) X(m, 1)
#define V2(X, m) V1(X, m) X(m, 2)
#define V3(X, m) V2(X, m) X(m, 3)
#define V4(X, m) V3(X, m) X(m, 4)
#define VECS_(n, X, m) V##n(X, m)
#define VECS(n, X, m) VECS_(n, X, m)
/* Row i of a kernel body, LIST(n, X) gives X(0) .. X(n - 1). The bodies are written out row by row
   with named accumulators (no arrays, no loops to unroll) so that every compiler keeps the tile in
   registers; rows i >= m and vectors j >= nv vanish because m and nv are constants. */
#define L1(X) X(0)
#define L2(X) L1(X) X(1)
#define L3(X) L2(X) X(2)
#define L4(X) L3(X) X(3)
#define L5(X) L4(X) X(4)
#define L6(X) L5(X) X(5)
#define L7(X) L6(X) X(6)
#define L8(X) L7(X) X(7)
#define L9(X) L8(X) X(8)
#define L10(X) L9(X) X(9)
#define L11(X) L10(X) X(10)
#define L12(X) L11(X) X(11)
#define L13(X) L12(X) X(12)
#define L14(X) L13(X) X(13)
#define L15(X) L14(X) X(14)
#define L16(X) L15(X) X(15)
#define LIST_(n, X) L##n(X)
#define LIST(n, X) LIST_(n, X)

#define KERN_ARGS idx_t K, const float* restrict A, const float* restrict B, float* restrict C, idx_t ldc, int acc, int nlast
#define KERN_PASS K, A, B, C, ldc, acc, nlast

/* Column block width, the same for every kernel set. */
#ifndef GEMM_NC
#define GEMM_NC 4096
#endif

#if GEMM_GNU
typedef float vf4 __attribute__((vector_size(16)));

INLINE vf4 vload(const float* p) {
  vf4 v;
  memcpy(&v, p, sizeof v);
  return v;
}
#endif

#endif
