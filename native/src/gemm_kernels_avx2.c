/*
 * gemm_kernels_avx2.c - the AVX2+FMA kernel set of the built-in GEMM: register-tiled micro-kernels
 * of up to 16 rows x 3 vectors of 8 floats (GEMM_MR256 x GEMM_NV256, default 6 x 2), published as
 * gemm_arch_avx2 for gemm_arch() in gemm_kernels.c, and the transposing pack built on 8x8 AVX
 * transposes that both x86-64 vector kernel sets use (gemm_pack_trans_avx: it needs the AVX2 target
 * and shares the store masks, mask_src, with these kernels).
 *
 * A file of its own because its code is compiled for one instruction set: the functions carry
 * target("avx2,fma") so the file builds without -march and runs on any x86-64 (it is only called
 * when cpuid says avx2 and fma); elsewhere than on x86-64 it compiles to nothing.
 */
#include "gemm_kernels.h"
#include "gemm_kernels_macros.h"

#include <stdint.h>

#if GEMM_X86

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

T256 void gemm_pack_trans_avx(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
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

const arch_t gemm_arch_avx2 = {"AVX2+FMA",
                               GEMM_MR256, NR256, 8, 256, 144, GEMM_NC, k256_tab, gemm_pack_trans_avx};

#endif /* GEMM_X86 */
