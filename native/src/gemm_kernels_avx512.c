/*
 * gemm_kernels_avx512.c - the AVX-512 kernel set of the built-in GEMM: register-tiled micro-kernels
 * of up to 16 rows x 4 vectors of 16 floats (GEMM_MR512 x GEMM_NV512, default 14 x 2) and their
 * blocking (GEMM_KC512, GEMM_MC512), published as gemm_arch_avx512 for gemm_arch() in gemm_kernels.c.
 * Its transposing pack is the AVX one of gemm_kernels_avx2.c (AVX-512 CPUs have AVX2).
 *
 * A file of its own because its code is compiled for one instruction set: the functions carry
 * target("avx512f") so the file builds without -march and runs on any x86-64 (it is only called
 * when cpuid says avx512f); elsewhere than on x86-64 it compiles to nothing.
 */
#include "gemm_kernels.h"
#include "gemm_kernels_macros.h"

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

const arch_t gemm_arch_avx512 = {"AVX-512",
                                 GEMM_MR512, NR512, 16, GEMM_KC512, GEMM_MC512, GEMM_NC, k512_tab,
                                 gemm_pack_trans_avx};

#endif /* GEMM_X86 */
