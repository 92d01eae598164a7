/*
 * gemm.c - self-contained single-precision matrix product, a drop-in for the cblas_sgemm calls of
 * the gan_native addon (row-major, alpha = 1, beta = 0). See gemm.h for the interface.
 *
 * Build: cc -O3 -std=c11 -ffp-contract=off -fno-trapping-math -fno-math-errno -fPIC -c gemm.c
 * (no -march: the x86-64 kernels carry their own target attributes and are picked at run time).
 *
 * Layout (the usual Goto/BLIS scheme):
 *   for each NC-wide column block of C
 *     for each KC-deep slice of K:   pack op(B)[KC x NC] into NR-wide strips (zero padded)
 *       for each MC-tall row block:  pack op(A)[MC x KC] into MR-tall panels
 *         for each NR strip, for each MR panel: micro-kernel C[MR x NR] (+)= Ap * Bp
 * Packing absorbs both transposes, so one micro-kernel serves all four cases. The micro-kernels
 * keep the whole MR x NR tile in registers, broadcast A and load B vectors; edge tiles use
 * kernels specialised on the row count and masked loads/stores on the last column vector, so
 * no work is done for padding rows and nothing outside C is touched.
 *
 * Threads (gemm_set_threads > 1, products of at least GEMM_MT_MIN_FMA multiply-adds): C is cut
 * into a few chunks of columns (or of rows, whichever side is longer) per thread, handed out
 * from an atomic counter. Each thread packs the operand shared by all chunks into its own buffer
 * once, then packs and multiplies chunk after chunk, so a thread whose core is busy with another
 * process just takes fewer chunks. Helper threads live in a small pool and sleep on a condition
 * variable between calls; the caller works too, and waits for the helpers' last chunks by
 * polling for at most GEMM_SPIN_US microseconds before it sleeps as well.
 *
 * Packing buffers are kept per thread and only ever grown (no allocation per call once warm).
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#endif

#include "gemm.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

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

/* Copying pack of w rows/columns into ceil(w / P) panels of kc x P (panel q at dst + q * P * kc):
   dst[q][k * P + r] = src[k * ld + q * P + r], zero padded. Sweeps whole source rows, which
   suits the hardware prefetcher when the source comes from memory. */
static void pack_copy(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  const int full = w / P, rest = w - full * P;
  const idx_t step = (idx_t)P * kc;
  for (int k = 0; k < kc; k++) {
    const float* s = src + (idx_t)k * ld;
    float* d = dst + (idx_t)k * P;
    for (int q = 0; q < full; q++, s += P, d += step)
      for (int r = 0; r < P; r++) d[r] = s[r];
    if (rest) {
      for (int r = 0; r < rest; r++) d[r] = s[r];
      for (int r = rest; r < P; r++) d[r] = 0.f;
    }
  }
}

/* Transposing pack, plain C. */
static void pack_trans_c(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  for (int r = 0; r < w; r++) {
    const float* s = src + (idx_t)r * ld;
    for (int k = 0; k < kc; k++) dst[(idx_t)k * P + r] = s[k];
  }
  if (w < P)
    for (int k = 0; k < kc; k++)
      for (int r = w; r < P; r++) dst[(idx_t)k * P + r] = 0.f;
}

/* ------------------------------------------------------------------------------------------ */
/* x86-64 kernels                                                                              */
/* ------------------------------------------------------------------------------------------ */
#if GEMM_X86

#ifndef GEMM_MR512
#define GEMM_MR512 14
#endif
#ifndef GEMM_NV512
#define GEMM_NV512 2
#endif
#ifndef GEMM_KC512
#define GEMM_KC512 256
#endif
#ifndef GEMM_MC512
#define GEMM_MC512 196
#endif
#if GEMM_MR512 > 16 || GEMM_NV512 > 4
#error "AVX-512 kernel: at most 16 rows and 4 vectors"
#endif
#define T512 __attribute__((target("avx512f")))
#define NR512 (16 * GEMM_NV512)

T512 INLINE void st512(float* r, __m512 v, int last, __mmask16 mask, int acc) {
  if (last) {
    if (acc) v = _mm512_add_ps(v, _mm512_maskz_loadu_ps(mask, r));
    _mm512_mask_storeu_ps(r, mask, v);
  } else {
    if (acc) v = _mm512_add_ps(v, _mm512_loadu_ps(r));
    _mm512_storeu_ps(r, v);
  }
}
#define Z512(i) __m512 c##i##_0 = _mm512_setzero_ps(), c##i##_1 = c##i##_0, c##i##_2 = c##i##_0, c##i##_3 = c##i##_0;
#define F512(i)                                                    \
  if ((i) < m) {                                                   \
    const __m512 a = _mm512_set1_ps(A[i]);                         \
    c##i##_0 = _mm512_fmadd_ps(a, b0, c##i##_0);                   \
    if (nv > 1) c##i##_1 = _mm512_fmadd_ps(a, b1, c##i##_1);       \
    if (nv > 2) c##i##_2 = _mm512_fmadd_ps(a, b2, c##i##_2);       \
    if (nv > 3) c##i##_3 = _mm512_fmadd_ps(a, b3, c##i##_3);       \
  }
#define S512(i)                                                    \
  if ((i) < m) {                                                   \
    float* r = C + (i) * ldc;                                      \
    st512(r, c##i##_0, nv == 1, mask, acc);                        \
    if (nv > 1) st512(r + 16, c##i##_1, nv == 2, mask, acc);       \
    if (nv > 2) st512(r + 32, c##i##_2, nv == 3, mask, acc);       \
    if (nv > 3) st512(r + 48, c##i##_3, nv == 4, mask, acc);       \
  }

T512 INLINE void k512_body(KERN_ARGS, const int m, const int nv) {
  LIST(GEMM_MR512, Z512)
  for (idx_t k = 0; k < K; k++) {
    const __m512 b0 = _mm512_load_ps(B);
    const __m512 b1 = nv > 1 ? _mm512_load_ps(B + 16) : b0;
    const __m512 b2 = nv > 2 ? _mm512_load_ps(B + 32) : b0;
    const __m512 b3 = nv > 3 ? _mm512_load_ps(B + 48) : b0;
    LIST(GEMM_MR512, F512)
    A += GEMM_MR512;
    B += NR512;
  }
  const __mmask16 mask = (__mmask16)((1u << nlast) - 1u);
  LIST(GEMM_MR512, S512)
}
#define K512_DEF(m, v) \
  T512 static void k512_##m##_##v(KERN_ARGS) { k512_body(KERN_PASS, m, v); }
#define K512_DEFM(m, _) VECS(GEMM_NV512, K512_DEF, m)
ROWS(GEMM_MR512, K512_DEFM, _)
#define K512_TAB(m, v) k512_##m##_##v,
#define K512_TABM(m, _) VECS(GEMM_NV512, K512_TAB, m)
static const kern_fn k512_tab[GEMM_MR512 * GEMM_NV512] = {ROWS(GEMM_MR512, K512_TABM, _)};

#ifndef GEMM_MR256
#define GEMM_MR256 6
#endif
#ifndef GEMM_NV256
#define GEMM_NV256 2
#endif
#if GEMM_MR256 > 16 || GEMM_NV256 > 3
#error "AVX2 kernel: at most 16 rows and 3 vectors"
#endif
#define T256 __attribute__((target("avx2,fma")))
#define NR256 (8 * GEMM_NV256)

static const int32_t mask_src[16] = {-1, -1, -1, -1, -1, -1, -1, -1, 0, 0, 0, 0, 0, 0, 0, 0};

T256 INLINE void st256(float* r, __m256 v, int last, __m256i mask, int acc) {
  if (last) {
    if (acc) v = _mm256_add_ps(v, _mm256_maskload_ps(r, mask));
    _mm256_maskstore_ps(r, mask, v);
  } else {
    if (acc) v = _mm256_add_ps(v, _mm256_loadu_ps(r));
    _mm256_storeu_ps(r, v);
  }
}
#define Z256(i) __m256 c##i##_0 = _mm256_setzero_ps(), c##i##_1 = c##i##_0, c##i##_2 = c##i##_0;
#define F256(i)                                                    \
  if ((i) < m) {                                                   \
    const __m256 a = _mm256_broadcast_ss(A + (i));                 \
    c##i##_0 = _mm256_fmadd_ps(a, b0, c##i##_0);                   \
    if (nv > 1) c##i##_1 = _mm256_fmadd_ps(a, b1, c##i##_1);       \
    if (nv > 2) c##i##_2 = _mm256_fmadd_ps(a, b2, c##i##_2);       \
  }
#define S256(i)                                                    \
  if ((i) < m) {                                                   \
    float* r = C + (i) * ldc;                                      \
    st256(r, c##i##_0, nv == 1, mask, acc);                        \
    if (nv > 1) st256(r + 8, c##i##_1, nv == 2, mask, acc);        \
    if (nv > 2) st256(r + 16, c##i##_2, nv == 3, mask, acc);       \
  }

T256 INLINE void k256_body(KERN_ARGS, const int m, const int nv) {
  LIST(GEMM_MR256, Z256)
  for (idx_t k = 0; k < K; k++) {
    const __m256 b0 = _mm256_load_ps(B);
    const __m256 b1 = nv > 1 ? _mm256_load_ps(B + 8) : b0;
    const __m256 b2 = nv > 2 ? _mm256_load_ps(B + 16) : b0;
    LIST(GEMM_MR256, F256)
    A += GEMM_MR256;
    B += NR256;
  }
  const __m256i mask = _mm256_loadu_si256((const __m256i*)(mask_src + 8 - nlast));
  LIST(GEMM_MR256, S256)
}
#define K256_DEF(m, v) \
  T256 static void k256_##m##_##v(KERN_ARGS) { k256_body(KERN_PASS, m, v); }
#define K256_DEFM(m, _) VECS(GEMM_NV256, K256_DEF, m)
ROWS(GEMM_MR256, K256_DEFM, _)
#define K256_TAB(m, v) k256_##m##_##v,
#define K256_TABM(m, _) VECS(GEMM_NV256, K256_TAB, m)
static const kern_fn k256_tab[GEMM_MR256 * GEMM_NV256] = {ROWS(GEMM_MR256, K256_TABM, _)};

/* Transposing pack with 8x8 AVX transposes (used by the AVX2 and AVX-512 paths). */
T256 INLINE void tr8x8(__m256* r) {
  const __m256 t0 = _mm256_unpacklo_ps(r[0], r[1]), t1 = _mm256_unpackhi_ps(r[0], r[1]);
  const __m256 t2 = _mm256_unpacklo_ps(r[2], r[3]), t3 = _mm256_unpackhi_ps(r[2], r[3]);
  const __m256 t4 = _mm256_unpacklo_ps(r[4], r[5]), t5 = _mm256_unpackhi_ps(r[4], r[5]);
  const __m256 t6 = _mm256_unpacklo_ps(r[6], r[7]), t7 = _mm256_unpackhi_ps(r[6], r[7]);
  const __m256 u0 = _mm256_shuffle_ps(t0, t2, 0x44), u1 = _mm256_shuffle_ps(t0, t2, 0xEE);
  const __m256 u2 = _mm256_shuffle_ps(t1, t3, 0x44), u3 = _mm256_shuffle_ps(t1, t3, 0xEE);
  const __m256 u4 = _mm256_shuffle_ps(t4, t6, 0x44), u5 = _mm256_shuffle_ps(t4, t6, 0xEE);
  const __m256 u6 = _mm256_shuffle_ps(t5, t7, 0x44), u7 = _mm256_shuffle_ps(t5, t7, 0xEE);
  r[0] = _mm256_permute2f128_ps(u0, u4, 0x20);
  r[1] = _mm256_permute2f128_ps(u1, u5, 0x20);
  r[2] = _mm256_permute2f128_ps(u2, u6, 0x20);
  r[3] = _mm256_permute2f128_ps(u3, u7, 0x20);
  r[4] = _mm256_permute2f128_ps(u0, u4, 0x31);
  r[5] = _mm256_permute2f128_ps(u1, u5, 0x31);
  r[6] = _mm256_permute2f128_ps(u2, u6, 0x31);
  r[7] = _mm256_permute2f128_ps(u3, u7, 0x31);
}

T256 static void pack_trans_avx(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  const int k8 = kc & ~7;
  for (int r0 = 0; r0 < P; r0 += 8) {
    const int nr = w - r0 < 8 ? (w - r0 > 0 ? w - r0 : 0) : 8; /* rows of src in this block */
    const int ns = P - r0 < 8 ? P - r0 : 8;                     /* lanes of dst in this block */
    const __m256i mask = _mm256_loadu_si256((const __m256i*)(mask_src + 8 - ns));
    const float* s = nr ? src + (idx_t)r0 * ld : src;
    float* d = dst + r0;
    int k0 = 0;
    for (; k0 < k8; k0 += 8) {
      __m256 v[8];
      for (int i = 0; i < 8; i++) v[i] = i < nr ? _mm256_loadu_ps(s + (idx_t)i * ld + k0) : _mm256_setzero_ps();
      tr8x8(v);
      if (ns == 8)
        for (int i = 0; i < 8; i++) _mm256_storeu_ps(d + (idx_t)(k0 + i) * P, v[i]);
      else
        for (int i = 0; i < 8; i++) _mm256_maskstore_ps(d + (idx_t)(k0 + i) * P, mask, v[i]);
    }
    for (; k0 < kc; k0++)
      for (int i = 0; i < ns; i++) d[(idx_t)k0 * P + i] = i < nr ? s[(idx_t)i * ld + k0] : 0.f;
  }
}

#endif /* GEMM_X86 */

/* ------------------------------------------------------------------------------------------ */
/* Portable kernel (SSE2 baseline on x86-64, NEON on aarch64 via the compiler)                 */
/* ------------------------------------------------------------------------------------------ */
#if defined(__aarch64__) || defined(__arm64__)
#define GEMM_MRP 8
#define GEMM_NVP 3
#else
#define GEMM_MRP 6
#define GEMM_NVP 2
#endif
#define NRP (4 * GEMM_NVP)

#if GEMM_GNU
typedef float vf4 __attribute__((vector_size(16)));

INLINE vf4 vload(const float* p) {
  vf4 v;
  memcpy(&v, p, sizeof v);
  return v;
}
#if (defined(__aarch64__) || defined(__arm64__)) && defined(__ARM_NEON)
#include <arm_neon.h>
/* aarch64: fused multiply-adds (fmla; -ffp-contract=off would split a * b + c into fmul + fadd)
   taking A from a lane of two loaded vectors, so the 8 A values use 2 registers, not 8
   (GCC would otherwise spill accumulators). The packed panels are zero padded to 8 rows. */
#if GEMM_MRP != 8
#error "the NEON kernel loads A as two vectors of 4"
#endif
#define GEMM_PORTABLE_NAME "portable C, NEON"
#define LOAD_A                                  \
  const float32x4_t a0_ = vld1q_f32(A);         \
  const float32x4_t a1_ = m > 4 ? vld1q_f32(A + 4) : a0_;
#define ROW_A(i) 0
#define VFMA(c, a, b, i) \
  ((c) = (vf4)vfmaq_laneq_f32((float32x4_t)(c), (float32x4_t)(b), (i) < 4 ? a0_ : a1_, (i) & 3))
#else
#define LOAD_A
#define ROW_A(i) A[i]
#define VFMA(c, a, b, i) ((c) += (a) * (b))
#endif

INLINE void stp(float* r, vf4 v, int last, int nlast, int acc) {
  if (!last) {
    if (acc) v += vload(r);
    memcpy(r, &v, sizeof v);
  } else {
    float t[4];
    memcpy(t, &v, sizeof t);
    if (acc)
      for (int l = 0; l < nlast; l++) r[l] += t[l];
    else
      for (int l = 0; l < nlast; l++) r[l] = t[l];
  }
}
#define ZP(i) vf4 c##i##_0 = {0.f, 0.f, 0.f, 0.f}, c##i##_1 = c##i##_0, c##i##_2 = c##i##_0;
#define FP(i)                                           \
  if ((i) < m) {                                        \
    const float a = ROW_A(i);                           \
    (void)a;                                            \
    VFMA(c##i##_0, a, b0, i);                           \
    if (nv > 1) VFMA(c##i##_1, a, b1, i);               \
    if (nv > 2) VFMA(c##i##_2, a, b2, i);               \
  }
#define SP(i)                                           \
  if ((i) < m) {                                        \
    float* r = C + (i) * ldc;                           \
    stp(r, c##i##_0, nv == 1, nlast, acc);              \
    if (nv > 1) stp(r + 4, c##i##_1, nv == 2, nlast, acc); \
    if (nv > 2) stp(r + 8, c##i##_2, nv == 3, nlast, acc); \
  }

INLINE void kp_body(KERN_ARGS, const int m, const int nv) {
  LIST(GEMM_MRP, ZP)
  for (idx_t k = 0; k < K; k++) {
    const vf4 b0 = vload(B);
    const vf4 b1 = nv > 1 ? vload(B + 4) : b0;
    const vf4 b2 = nv > 2 ? vload(B + 8) : b0;
    LOAD_A
    LIST(GEMM_MRP, FP)
    A += GEMM_MRP;
    B += NRP;
  }
  LIST(GEMM_MRP, SP)
}
#else
INLINE void kp_body(KERN_ARGS, const int m, const int nv) {
  float c[GEMM_MRP][NRP];
  const int n = 4 * (nv - 1) + nlast;
  for (int i = 0; i < m; i++)
    for (int j = 0; j < NRP; j++) c[i][j] = 0.f;
  for (idx_t k = 0; k < K; k++) {
    for (int i = 0; i < m; i++) {
      const float a = A[i];
      for (int j = 0; j < NRP; j++) c[i][j] += a * B[j];
    }
    A += GEMM_MRP;
    B += NRP;
  }
  for (int i = 0; i < m; i++) {
    float* r = C + i * ldc;
    for (int j = 0; j < n; j++) r[j] = acc ? r[j] + c[i][j] : c[i][j];
  }
}
#endif
#define KP_DEF(m, v) \
  static void kp_##m##_##v(KERN_ARGS) { kp_body(KERN_PASS, m, v); }
#define KP_DEFM(m, _) VECS(GEMM_NVP, KP_DEF, m)
ROWS(GEMM_MRP, KP_DEFM, _)
#define KP_TAB(m, v) kp_##m##_##v,
#define KP_TABM(m, _) VECS(GEMM_NVP, KP_TAB, m)
static const kern_fn kp_tab[GEMM_MRP * GEMM_NVP] = {ROWS(GEMM_MRP, KP_TABM, _)};

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                    */
/* ------------------------------------------------------------------------------------------ */
#ifndef GEMM_NC
#define GEMM_NC 4096
#endif

static const arch_t arch_portable = {
#if GEMM_X86
    "SSE2",
#elif defined(GEMM_PORTABLE_NAME)
    GEMM_PORTABLE_NAME,
#else
    "portable C",
#endif
    GEMM_MRP, NRP, 4, 256, 120, GEMM_NC, kp_tab, pack_trans_c};

#if GEMM_X86
static const arch_t arch_avx2 = {"AVX2+FMA",
                                 GEMM_MR256, NR256, 8, 256, 144, GEMM_NC, k256_tab, pack_trans_avx};
static const arch_t arch_avx512 = {"AVX-512",
                                   GEMM_MR512, NR512, 16, GEMM_KC512, GEMM_MC512, GEMM_NC, k512_tab,
                                   pack_trans_avx};
#endif

static const arch_t* g_arch = &arch_portable;
static char g_name[64];

static void choose_arch(void) {
  const char* force = getenv("GEMM_KERNEL");
  const arch_t* a = &arch_portable;
#if GEMM_X86
  __builtin_cpu_init();
  const int want512 = !force || !strcmp(force, "avx512");
  const int want256 = want512 || !strcmp(force, "avx2");
  if (want512 && __builtin_cpu_supports("avx512f"))
    a = &arch_avx512;
  else if (want256 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    a = &arch_avx2;
#else
  (void)force;
#endif
  g_arch = a;
  snprintf(g_name, sizeof g_name, "built-in GEMM (%s, %dx%d)", a->name, a->mr, a->nr);
}

/* ------------------------------------------------------------------------------------------ */
/* Single-threaded driver                                                                      */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
  float* a;
  size_t acap;
  float* b;
  size_t bcap;
} bufs_t;

static float* grow(float** p, size_t* cap, size_t n) {
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

static int imin(int a, int b) { return a < b ? a : b; }
static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static void zero_c(int M, int N, float* C, int ldc) {
  for (int i = 0; i < M; i++) memset(C + (idx_t)i * ldc, 0, (size_t)N * sizeof(float));
}

/* Packs w rows/columns (the panel dimension) by kc into panels of P. copy: element (r, k) is
   src[k * ld + r]; otherwise src[r * ld + k] (transposing pack). */
static void pack_panels(const arch_t* ar, int copy, const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  if (copy) {
    pack_copy(src, ld, w, kc, P, dst);
  } else {
    for (int q = 0; q < w; q += P) ar->tpack(src + (idx_t)q * ld, ld, imin(P, w - q), kc, P, dst + (idx_t)q * kc);
  }
}
/* op(A) rows [i0, i0 + w) x k [k0, k0 + kc) into MR panels; op(B) columns [j0, j0 + w) into NR panels. */
static void pack_a(const arch_t* ar, int tA, const float* A, idx_t lda, int i0, int w, int k0, int kc, float* dst) {
  if (tA)
    pack_panels(ar, 1, A + (idx_t)k0 * lda + i0, lda, w, kc, ar->mr, dst);
  else
    pack_panels(ar, 0, A + (idx_t)i0 * lda + k0, lda, w, kc, ar->mr, dst);
}
static void pack_b(const arch_t* ar, int tB, const float* B, idx_t ldb, int j0, int w, int k0, int kc, float* dst) {
  if (tB)
    pack_panels(ar, 0, B + (idx_t)j0 * ldb + k0, ldb, w, kc, ar->nr, dst);
  else
    pack_panels(ar, 1, B + (idx_t)k0 * ldb + j0, ldb, w, kc, ar->nr, dst);
}

/* Plain loops, used only if a packing buffer cannot be allocated. */
static void gemm_naive(int tA, int tB, int M, int N, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
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
static int k_slice(const arch_t* ar, int K) {
  const int n = (K + ar->kc - 1) / ar->kc;
  return round_up((K + n - 1) / n, 4);
}

/* Macro-kernel: C[m x n] (+)= Ap * Bp for one K slice of depth kc, where Ap holds the m rows in MR
   panels and Bp the n columns in NR panels. Rows go in blocks of MC so that the A block stays in
   L2 while each B panel (kc x NR) is reused from L1 across it. */
static void macro_kernel(const arch_t* ar, int m, int n, int kc, const float* Ap, const float* Bp, float* C, idx_t ldc,
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
static void gemm_serial(const arch_t* ar, bufs_t* buf, int tA, int tB, int M, int N, int K, const float* A,
                        idx_t lda, const float* B, idx_t ldb, float* C, idx_t ldc) {
  const int MR = ar->mr, NR = ar->nr, kc = k_slice(ar, K);
  const int nmb = (M + ar->mc - 1) / ar->mc, mc = round_up((M + nmb - 1) / nmb, MR);
  const int nnb = (N + ar->nc - 1) / ar->nc, nc = round_up((N + nnb - 1) / nnb, NR);
  float* Ap = grow(&buf->a, &buf->acap, (size_t)mc * kc);
  float* Bp = grow(&buf->b, &buf->bcap, (size_t)nc * kc);
  if (!Ap || !Bp) {
    gemm_naive(tA, tB, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  for (int jc = 0; jc < N; jc += nc) {
    const int ncur = imin(nc, N - jc);
    for (int pc = 0; pc < K; pc += kc) {
      const int kcur = imin(kc, K - pc);
      pack_b(ar, tB, B, ldb, jc, ncur, pc, kcur, Bp);
      for (int ic = 0; ic < M; ic += mc) {
        const int mcur = imin(mc, M - ic);
        pack_a(ar, tA, A, lda, ic, mcur, pc, kcur, Ap);
        macro_kernel(ar, mcur, ncur, kcur, Ap, Bp, C + (idx_t)ic * ldc + jc, ldc, pc > 0);
      }
    }
  }
}

/* N == 1 (the discriminator's last layer) is a matrix-vector product: the tiled path would
   compute a whole vector of columns to keep one. */
static float dot(const float* a, const float* x, int K) {
  int k = 0;
#if GEMM_GNU
  vf4 s0 = {0.f, 0.f, 0.f, 0.f}, s1 = s0;
  for (; k + 8 <= K; k += 8) {
    s0 += vload(a + k) * vload(x + k);
    s1 += vload(a + k + 4) * vload(x + k + 4);
  }
  s0 += s1;
  float r = (s0[0] + s0[1]) + (s0[2] + s0[3]);
#else
  float r = 0.f;
#endif
  for (; k < K; k++) r += a[k] * x[k];
  return r;
}

static void gemv_n1(bufs_t* buf, int tA, int tB, int M, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                    float* C, idx_t ldc) {
  float* t = grow(&buf->b, &buf->bcap, (size_t)K + (size_t)M);
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
    for (int i = 0; i < M; i++) C[(idx_t)i * ldc] = dot(A + (idx_t)i * lda, x, K);
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

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                     */
/* ------------------------------------------------------------------------------------------ */
#define MAX_THREADS 64
#ifndef GEMM_CHUNKS
#define GEMM_CHUNKS 3 /* chunks per thread */
#endif
/* Products below this many multiply-adds run on the calling thread alone (waking a helper costs
   some microseconds; see native/tools/bench-gemm.c). */
#ifndef GEMM_MT_MIN_FMA
#define GEMM_MT_MIN_FMA (1 << 21)
#endif
/* Largest operand (in floats) that each thread packs whole before taking chunks; above it each
   chunk is done as a product of its own. */
#ifndef GEMM_PREPACK_MAX
#define GEMM_PREPACK_MAX (4 << 20)
#endif

/* A multi-threaded product: C is cut into chunks of columns (split_n) or rows, handed out one at a
   time from an atomic counter, so a thread that runs late (its core busy with another process)
   simply takes fewer chunks. Each thread first packs the operand that all chunks share (op(A)
   for column chunks, op(B) for row chunks) into its own buffer, then per chunk packs only the
   chunk's part of the other operand. */
typedef struct {
  int tA, tB, M, N, K;
  const float* A;
  const float* B;
  float* C;
  idx_t lda, ldb, ldc;
  int split_n, chunk, nchunks, prepack;
  atomic_int next;
} job_t;

typedef struct {
  pthread_t tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int go;
} worker_t;

static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER; /* serialises calls */
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_threads = 1;   /* requested */
static int g_nworkers = 0;  /* helpers started: worker i (1..g_nworkers) uses g_bufs[i] */
static atomic_int g_pending; /* helpers still working on the current job */
static job_t* g_job;
static worker_t g_workers[MAX_THREADS];
static bufs_t g_bufs[MAX_THREADS];

static void run_part(job_t* j, int p) {
  const arch_t* ar = g_arch;
  bufs_t* buf = &g_bufs[p];
  int c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
  if (c >= j->nchunks) return; /* woke up too late: nothing left, pack nothing */
  const int M = j->M, N = j->N, K = j->K, kc = k_slice(ar, K);
  if (!j->prepack) {
    do {
      if (j->split_n) {
        const int c0 = c * j->chunk, w = imin(j->chunk, N - c0);
        const float* B = j->tB ? j->B + c0 * j->ldb : j->B + c0;
        gemm_serial(ar, buf, j->tA, j->tB, M, w, K, j->A, j->lda, B, j->ldb, j->C + c0, j->ldc);
      } else {
        const int r0 = c * j->chunk, h = imin(j->chunk, M - r0);
        const float* A = j->tA ? j->A + r0 : j->A + r0 * j->lda;
        gemm_serial(ar, buf, j->tA, j->tB, h, N, K, A, j->lda, j->B, j->ldb, j->C + r0 * j->ldc, j->ldc);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
    return;
  }
  if (j->split_n) {
    const idx_t Mr = round_up(M, ar->mr);
    float* Ap = grow(&buf->a, &buf->acap, (size_t)Mr * K);
    float* Bp = grow(&buf->b, &buf->bcap, (size_t)round_up(j->chunk, ar->nr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) pack_a(ar, j->tA, j->A, j->lda, 0, M, k0, imin(kc, K - k0), Ap + Mr * k0);
    do {
      const int c0 = c * j->chunk, w = imin(j->chunk, N - c0);
      if (!Ap || !Bp) {
        const float* B = j->tB ? j->B + c0 * j->ldb : j->B + c0;
        gemm_naive(j->tA, j->tB, M, w, K, j->A, j->lda, B, j->ldb, j->C + c0, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        pack_b(ar, j->tB, j->B, j->ldb, c0, w, k0, kcur, Bp);
        macro_kernel(ar, M, w, kcur, Ap + Mr * k0, Bp, j->C + c0, j->ldc, k0 > 0);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
  } else {
    const idx_t Nr = round_up(N, ar->nr);
    float* Bp = grow(&buf->b, &buf->bcap, (size_t)Nr * K);
    float* Ap = grow(&buf->a, &buf->acap, (size_t)round_up(j->chunk, ar->mr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) pack_b(ar, j->tB, j->B, j->ldb, 0, N, k0, imin(kc, K - k0), Bp + Nr * k0);
    do {
      const int r0 = c * j->chunk, h = imin(j->chunk, M - r0);
      if (!Ap || !Bp) {
        const float* A = j->tA ? j->A + r0 : j->A + r0 * j->lda;
        gemm_naive(j->tA, j->tB, h, N, K, A, j->lda, j->B, j->ldb, j->C + r0 * j->ldc, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        pack_a(ar, j->tA, j->A, j->lda, r0, h, k0, kcur, Ap);
        macro_kernel(ar, h, N, kcur, Ap, Bp + Nr * k0, j->C + r0 * j->ldc, j->ldc, k0 > 0);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
  }
}

static void* worker_main(void* arg) {
  const int id = (int)(intptr_t)arg;
  worker_t* w = &g_workers[id];
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (!w->go) pthread_cond_wait(&w->cv, &w->mu);
    w->go = 0;
    pthread_mutex_unlock(&w->mu);
    run_part(g_job, id);
    pthread_mutex_lock(&g_done_mu);
    if (atomic_fetch_sub_explicit(&g_pending, 1, memory_order_acq_rel) == 1) pthread_cond_signal(&g_done_cv);
    pthread_mutex_unlock(&g_done_mu);
  }
  return NULL;
}

/* Starts helpers 1..n-1 that are not running yet; returns how many parts can run (>= 1). */
static int ensure_workers(int n) {
  if (n > MAX_THREADS) n = MAX_THREADS;
  if (g_nworkers + 1 >= n) return n;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* helpers inherit a full mask: signals go elsewhere */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 1 << 20);
  while (g_nworkers + 1 < n) {
    const int id = g_nworkers + 1;
    worker_t* w = &g_workers[id];
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->go = 0;
    if (pthread_create(&w->tid, &attr, worker_main, (void*)(intptr_t)id) != 0) {
      pthread_cond_destroy(&w->cv);
      pthread_mutex_destroy(&w->mu);
      break;
    }
    g_nworkers = id;
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return imin(n, g_nworkers + 1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static void cpu_relax(void) {
#if GEMM_X86
  _mm_pause();
#elif defined(__aarch64__) && GEMM_GNU
  __asm__ __volatile__("yield");
#endif
}

/* Waits until g_pending is 0: polls for up to GEMM_SPIN_US (the helpers are in the middle of
   their last chunk, and a sleeping waiter takes tens of microseconds to wake on a VM), then
   sleeps on the condition variable. Nothing ever polls between calls. */
#ifndef GEMM_SPIN_US
#define GEMM_SPIN_US 50
#endif
static void wait_helpers(void) {
  if (atomic_load_explicit(&g_pending, memory_order_acquire) == 0) return;
  const double t_end = now_us() + GEMM_SPIN_US;
  do {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&g_pending, memory_order_acquire) == 0) return;
      cpu_relax();
    }
  } while (now_us() < t_end);
  pthread_mutex_lock(&g_done_mu);
  while (atomic_load_explicit(&g_pending, memory_order_acquire) > 0) pthread_cond_wait(&g_done_cv, &g_done_mu);
  pthread_mutex_unlock(&g_done_mu);
}

/* fork() copies only the calling thread: the child starts without helpers and with a fresh lock. */
static void atfork_prepare(void) { pthread_mutex_lock(&g_call_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_call_mu); }
static void atfork_child(void) {
  pthread_mutex_unlock(&g_call_mu); /* held by this thread since atfork_prepare */
  pthread_mutex_init(&g_done_mu, NULL); /* a helper may have held it at the fork */
  pthread_cond_init(&g_done_cv, NULL);
  g_nworkers = 0;
  atomic_store(&g_pending, 0);
}

static void init_once(void) {
  choose_arch();
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ------------------------------------------------------------------------------------------ */
/* Public interface                                                                            */
/* ------------------------------------------------------------------------------------------ */
void gemm_set_threads(int n) {
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&g_call_mu);
  g_threads = n;
  pthread_mutex_unlock(&g_call_mu);
}

int gemm_get_threads(void) {
  pthread_mutex_lock(&g_call_mu);
  const int n = g_threads;
  pthread_mutex_unlock(&g_call_mu);
  return n;
}

const char* gemm_describe(void) {
  pthread_once(&g_once, init_once);
  return g_name;
}

void gemm_f32(int transA, int transB, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
              float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    zero_c(M, N, C, ldc);
    return;
  }
  pthread_once(&g_once, init_once);
  const arch_t* ar = g_arch;
  pthread_mutex_lock(&g_call_mu);
  if (N == 1) {
    gemv_n1(&g_bufs[0], transA != 0, transB != 0, M, K, A, lda, B, ldb, C, ldc);
    pthread_mutex_unlock(&g_call_mu);
    return;
  }
  int parts = g_threads;
  if (parts > 1 && (double)M * N * K >= GEMM_MT_MIN_FMA) parts = ensure_workers(parts);
  else parts = 1;
  if (parts == 1) {
    gemm_serial(ar, &g_bufs[0], transA != 0, transB != 0, M, N, K, A, lda, B, ldb, C, ldc);
    pthread_mutex_unlock(&g_call_mu);
    return;
  }
  job_t j = {.tA = transA != 0, .tB = transB != 0, .M = M, .N = N, .K = K, .A = A, .B = B, .C = C,
             .lda = lda, .ldb = ldb, .ldc = ldc, .split_n = N >= M};
  /* Cut the longer side (the other operand is packed by every thread): about GEMM_CHUNKS chunks per
     thread, in whole panels, so a late thread leaves less of a tail. */
  const int unit = j.split_n ? ar->nr : ar->mr, len = j.split_n ? N : M;
  const int units = (len + unit - 1) / unit;
  int nch = parts * GEMM_CHUNKS;
  if (nch > units) nch = units;
  j.chunk = (units + nch - 1) / nch * unit;
  j.nchunks = (len + j.chunk - 1) / j.chunk;
  j.prepack = (double)(j.split_n ? round_up(M, ar->mr) : round_up(N, ar->nr)) * K <= GEMM_PREPACK_MAX;
  if (!j.prepack) { /* each chunk packs both operands: fewer, larger chunks */
    j.chunk = round_up((len + parts - 1) / parts, unit);
    j.nchunks = (len + j.chunk - 1) / j.chunk;
  }
  atomic_init(&j.next, 0);
  if (parts > j.nchunks) parts = j.nchunks;
  g_job = &j;
  atomic_store_explicit(&g_pending, parts - 1, memory_order_relaxed);
  for (int p = 1; p < parts; p++) {
    worker_t* w = &g_workers[p];
    pthread_mutex_lock(&w->mu);
    w->go = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
  run_part(&j, 0);
  /* All chunks are taken. A helper that has not woken up yet is called off (it would find nothing
     to do, and waiting for it to be scheduled costs more than the work); the others are finishing
     their last chunk: wait for them, polling briefly before sleeping. */
  for (int p = 1; p < parts; p++) {
    worker_t* w = &g_workers[p];
    pthread_mutex_lock(&w->mu);
    const int idle = w->go;
    w->go = 0;
    pthread_mutex_unlock(&w->mu);
    if (idle) atomic_fetch_sub_explicit(&g_pending, 1, memory_order_relaxed);
  }
  wait_helpers();
  pthread_mutex_unlock(&g_call_mu);
}
