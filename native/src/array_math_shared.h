/*
 * array_math_shared.h - what array_math.c and array_math_half.c share and addon.c must not see:
 * clean_upper(), the VZEROUPPER each of their entry points runs before its loop, the CPU flag it
 * reads, and the builder of the half-float table that array_math_init() calls. A header of its
 * own because both files need the same helper and the same flag, and array_math.h is the
 * addon's interface.
 */
#ifndef GAN_ARRAY_MATH_SHARED_H
#define GAN_ARRAY_MATH_SHARED_H

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_ZEROUPPER 1
#endif

/*
 * The loops below are compiled for baseline x86-64 (SSE2) so the binary runs on any machine that
 * shares the checkout. On an AVX CPU, legacy SSE instructions run two to four times slower while
 * something else in the process (JIT or library code) has left the upper halves of the YMM
 * registers dirty, which was measured under vite-node; VZEROUPPER before each loop clears that.
 */
#ifdef HAVE_ZEROUPPER
/* Defined in array_math.c, set by array_math_init(). Hidden: shared by the two files, not exported
   from the addon, and read as directly as the file-local variable it was. */
extern int cpu_has_avx __attribute__((visibility("hidden")));
__attribute__((target("avx"))) static void zeroupper_avx(void) { _mm256_zeroupper(); }
static inline void clean_upper(void) {
  if (cpu_has_avx) zeroupper_avx();
}
#else
static inline void clean_upper(void) {}
#endif

/* Fills the table of halfToFloat (array_math_half.c): the float32 bits of every half value. */
void array_math_half_init(void);

#endif
