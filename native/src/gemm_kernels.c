/*
 * gemm_kernels.c - the per-CPU half of the built-in GEMM, the part shared by all its kernel sets:
 * the packing routines in plain C, the run-time choice of kernel set, and the dot product of the
 * matrix-vector case. gemm_blocked.c does the blocking, gemm.c the threads. The register-tiled
 * micro-kernels live one file per instruction set: gemm_kernels_avx512.c (AVX-512),
 * gemm_kernels_avx2.c (AVX2+FMA, and the AVX transposing pack) and gemm_kernels_portable.c (a
 * portable vector-extension kernel: SSE2 on x86-64, NEON on aarch64).
 *
 * The x86-64 kernels carry their own target attributes, so the files build without -march and
 * run on any x86-64; the choice is made from cpuid at the first call.
 */
#include "gemm_kernels.h"
#include "gemm_kernels_macros.h"

#include <stdlib.h>
#include <string.h>

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

/* Transposing pack, plain C (the portable kernel set's). */
void gemm_pack_trans_c(const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  for (int r = 0; r < w; r++) {
    const float* s = src + (idx_t)r * ld;
    for (int k = 0; k < kc; k++) dst[(idx_t)k * P + r] = s[k];
  }
  if (w < P)
    for (int k = 0; k < kc; k++)
      for (int r = w; r < P; r++) dst[(idx_t)k * P + r] = 0.f;
}

/* ------------------------------------------------------------------------------------------ */
/* Dispatch                                                                                    */
/* ------------------------------------------------------------------------------------------ */
const arch_t* gemm_arch(void) {
  static const arch_t* chosen = NULL;
  if (chosen) return chosen;
  const char* force = getenv("GEMM_KERNEL");
  const arch_t* a = &gemm_arch_portable;
#if GEMM_X86
  __builtin_cpu_init();
  const int want512 = !force || !strcmp(force, "avx512");
  const int want256 = want512 || !strcmp(force, "avx2");
  if (want512 && __builtin_cpu_supports("avx512f"))
    a = &gemm_arch_avx512;
  else if (want256 && __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma"))
    a = &gemm_arch_avx2;
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
