/*
 * gemm_kernels.c - the per-CPU half of the built-in GEMM: packing routines, register-tiled
 * micro-kernels for AVX-512, AVX2+FMA and a portable vector-extension kernel (SSE2 on x86-64, NEON
 * on aarch64), and the run-time choice between them. gemm_blocked.c does the blocking, gemm.c the threads.
 *
 * The x86-64 kernels carry their own target attributes, so the file builds without -march and
 * runs on any x86-64; the choice is made from cpuid at the first call.
 */
#include "gemm_kernels.h"

#include <stdint.h>
#include <stdlib.h>
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

/* Copying pack of w rows/columns into ceil(w / P) panels of kc x P (panel q at dst + q * P * kc):
   dst[q][k * P + r] = src[k * ld + q * P + r], zero padded. Sweeps whole source rows, which
   suits the hardware prefetcher when the source comes from memory. */
void gemm_pack_copy(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
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

const arch_t* gemm_arch(void) {
  static const arch_t* chosen = NULL;
  if (chosen) return chosen;
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
  chosen = a;
  return a;
}


/* The matrix-vector case (N == 1) of gemm.c: two accumulators of four lanes. */
float gemm_dot(const float* a, const float* x, int K) {
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
