/*
 * gemm_kernels.h - what the CPU runs for gemm_blocked.c and gemm.c: packing routines and register-tiled micro-kernels
 * per instruction set, picked once at run time. Internal to the addon; gemm.h is the interface. gemm_kernels.c
 * holds the shared part and the choice, gemm_kernels_<isa>.c one kernel set each.
 */
#ifndef GAN_GEMM_KERNELS_H
#define GAN_GEMM_KERNELS_H

#include <stddef.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEMM_X86 1
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

#if defined(__GNUC__) || defined(__clang__)
#define GEMM_GNU 1
#define INLINE static inline __attribute__((always_inline))
#else
#define GEMM_GNU 0
#define INLINE static inline
#endif


typedef ptrdiff_t idx_t;

/* Micro-kernel: C[m x n] (+)= Ap[m x K] * Bp[K x n] where Ap is a packed panel (row stride MR per
   k) and Bp a packed strip (NR floats per k, zero padded). Each function is specialised on m and
   on the number of column vectors; nlast (1..vector width) is how many columns of the last vector
   are real. acc = 0 overwrites C, acc = 1 adds to it. */
typedef void (*kern_fn)(idx_t K, const float* A, const float* B, float* C, idx_t ldc, int acc, int nlast);
/* dst[k * P + r] = op(src)[r][k] for r < w, k < kc, zeros for w <= r < P, where op(src)[r][k] is
   src[r * ld + k] (transposing pack) - the copying pack (src[k * ld + r]) is plain C. */
typedef void (*tpack_fn)(const float* src, idx_t ld, int w, int kc, int P, float* dst);

typedef struct {
  const char* name; /* instruction set */
  int mr, nr, vw; /* panel height, strip width, vector width (floats) */
  int kc, mc, nc; /* cache blocking */
  const kern_fn* kern; /* [(m - 1) * (nr / vw) + nv - 1] */
  tpack_fn tpack;
} arch_t;


/* The kernel set for this CPU (GEMM_KERNEL may force a lesser one), chosen on the first call; not
   thread-safe on that first call (gemm.c calls it under pthread_once). */
const arch_t* gemm_arch(void);

/* Copying pack of w rows/columns into ceil(w / P) panels of kc x P, zero padded (see
   gemm_kernels.c); the transposing pack is arch_t.tpack. */
void gemm_pack_copy(const float* src, idx_t ld, int w, int kc, int P, float* dst);

/* Between the kernel files only: each kernel set, defined in its own file, and the transposing
   packs they use (tpack_fn). gemm_arch() picks the set; nothing else should name them. */
extern const arch_t gemm_arch_portable; /* gemm_kernels_portable.c */
void gemm_pack_trans_c(const float* src, idx_t ld, int w, int kc, int P, float* dst); /* gemm_kernels.c */
#if GEMM_X86
extern const arch_t gemm_arch_avx512; /* gemm_kernels_avx512.c */
extern const arch_t gemm_arch_avx2;   /* gemm_kernels_avx2.c */
/* 8x8 AVX transposes; needs AVX2 (gemm_kernels_avx2.c). */
void gemm_pack_trans_avx(const float* src, idx_t ld, int w, int kc, int P, float* dst);
#endif

/* Dot product of two K-vectors, vectorised where the compiler can. */
float gemm_dot(const float* a, const float* x, int K);

#endif
