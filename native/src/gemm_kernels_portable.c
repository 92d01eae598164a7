/*
 * gemm_kernels_portable.c - the portable kernel set of the built-in GEMM, published as
 * gemm_arch_portable for gemm_arch() in gemm_kernels.c: register-tiled micro-kernels written with
 * the compiler's generic 4-float vectors (SSE2, the x86-64 baseline; on aarch64 NEON, with lane
 * fused multiply-adds), or plain loops for a compiler without vector extensions. It is what runs on
 * an x86-64 without AVX2 (or with GEMM_KERNEL naming neither avx512 nor avx2) and on every other CPU.
 *
 * A file of its own because it is the one kernel set compiled for the build's baseline instruction
 * set, with no target attributes, on every architecture.
 */
#include "gemm_kernels.h"
#include "gemm_kernels_macros.h"

#include <string.h>

#if defined(__aarch64__) || defined(__arm64__)
#define GEMM_MRP 8
#define GEMM_NVP 3
#else
#define GEMM_MRP 6
#define GEMM_NVP 2
#endif
#define NRP (4 * GEMM_NVP)

#if GEMM_GNU /* vf4 and vload: gemm_kernels_macros.h */
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

const arch_t gemm_arch_portable = {
#if GEMM_X86
    "SSE2",
#elif defined(GEMM_PORTABLE_NAME)
    GEMM_PORTABLE_NAME,
#else
    "portable C",
#endif
    GEMM_MRP, NRP, 4, 256, 120, GEMM_NC, kp_tab, gemm_pack_trans_c};
