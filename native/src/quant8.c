/*
 * The 8-bit wire format (shared/numerics/wire-format.ts): blocks of QBLOCK values, each one
 * float32 scale (max |x| / 127, at least 2^-100) and signed bytes q = x / scale rounded to the
 * nearest integer, ties to even. Each function reproduces its JavaScript reference bit for bit:
 * the same double arithmetic, float32 rounding only where JS stores to a Float32Array, the same
 * rounding trick ((v + 1.5 * 2^52) - 1.5 * 2^52, which -ffp-contract=off and the absence of
 * -ffast-math keep as written).
 */
#include "quant8.h"

#include <math.h>
#include <stdint.h>
#include <string.h>

#include "args.h"

/* The loops are compiled for AVX-512, AVX2 and baseline x86-64 (as in array_math.c): the same IEEE operations at every width. */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

#define QBLOCK 256
#define QMAX 127.0
static const double ROUNDER = 6755399441055744.0;
/* MIN_SCALE in wire-format.ts. */
static const double MIN_SCALE = 0x1p-100;

/* max |x| / 127 in float32, at least MIN_SCALE; NaN for a block holding a NaN (the receiver refuses it). */
static inline float scale_of(double max_abs, int nan) {
  if (nan) return NAN;
  const float s = (float)(max_abs / QMAX);
  return (double)s > MIN_SCALE ? s : (float)MIN_SCALE;
}


static size_t blocks_of(size_t n) { return (n + QBLOCK - 1) / QBLOCK; }

/*
 * One block: x[0, n) into q[0, n); returns its scale. The largest |x| is found on the bit patterns
 * (for non-negative floats their order as integers is their order as numbers, and NaNs lie above
 * infinity), which vectorises where a floating-point max with NaN semantics does not; the result
 * is the same as the JavaScript loop's: the largest finite-or-infinite magnitude, or a NaN flag.
 */
SIMD_CLONES static float encode_block(const float* restrict x, size_t n, int8_t* restrict q) {
  uint32_t top = 0;
  for (size_t i = 0; i < n; i++) {
    uint32_t bits;
    memcpy(&bits, &x[i], 4);
    bits &= 0x7fffffffu;
    top = bits > top ? bits : top;
  }
  float max_abs;
  const uint32_t finite_top = top > 0x7f800000u ? 0 : top;
  memcpy(&max_abs, &finite_top, 4);
  const float scale = scale_of((double)max_abs, top > 0x7f800000u);
  const double inv = 1.0 / (double)scale;
  for (size_t i = 0; i < n; i++) {
    double r = ((double)x[i] * inv + ROUNDER) - ROUNDER;
    r = r > QMAX ? QMAX : r;
    r = r < -QMAX ? -QMAX : r;
    q[i] = (int8_t)(r == r ? (int32_t)r : 0);
  }
  return scale;
}

/* x = g + residual (float32) encoded block by block; decoded = q * scale; residual = x - decoded. */
SIMD_CLONES static void feedback_loop(const float* restrict g, float* restrict residual, int8_t* restrict q, float* restrict scales, float* restrict decoded, size_t n) {
  float x[QBLOCK];
  for (size_t b = 0, start = 0; start < n; b++, start += QBLOCK) {
    const size_t len = start + QBLOCK < n ? QBLOCK : n - start;
    for (size_t i = 0; i < len; i++) x[i] = (float)((double)g[start + i] + (double)residual[start + i]);
    const float scale = encode_block(x, len, q + start);
    scales[b] = scale;
    for (size_t i = 0; i < len; i++) {
      const float d = (float)((double)q[start + i] * (double)scale);
      decoded[start + i] = d;
      residual[start + i] = (float)((double)x[i] - (double)d);
    }
  }
}

/* w - view (float32) encoded block by block; next = view + q * scale. */
SIMD_CLONES static void delta_loop(const float* restrict w, const float* restrict view, int8_t* restrict q, float* restrict scales, float* restrict next, size_t n) {
  float x[QBLOCK];
  for (size_t b = 0, start = 0; start < n; b++, start += QBLOCK) {
    const size_t len = start + QBLOCK < n ? QBLOCK : n - start;
    for (size_t i = 0; i < len; i++) x[i] = (float)((double)w[start + i] - (double)view[start + i]);
    const float scale = encode_block(x, len, q + start);
    scales[b] = scale;
    for (size_t i = 0; i < len; i++) next[start + i] = (float)((double)view[start + i] + (double)(float)((double)q[start + i] * (double)scale));
  }
}


/* quantize8(src: Float32Array, q: Int8Array, scales: Float32Array). */
napi_value math_quantize8(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "quantize8")) return NULL;
  size_t n = 0, nq = 0, ns = 0;
  const float* src = arg_typed(&a, 0, napi_float32_array, &n, "src");
  int8_t* q = arg_typed(&a, 1, napi_int8_array, &nq, "q");
  float* scales = arg_typed(&a, 2, napi_float32_array, &ns, "scales");
  if (a.failed) return NULL;
  if (nq < n || ns < blocks_of(n)) return args_fail(&a, "q or scales too short for src");
  for (size_t b = 0, start = 0; start < n; b++, start += QBLOCK) {
    const size_t end = start + QBLOCK < n ? start + QBLOCK : n;
    scales[b] = encode_block(src + start, end - start, q + start);
  }
  return NULL;
}

/*
 * quantize8Feedback(g: Float32Array, residual: Float32Array, q: Int8Array, scales: Float32Array,
 * decoded: Float32Array): x = g + residual (float32) encoded as quantize8 does; decoded = q * scale;
 * residual = x - decoded.
 */
napi_value math_quantize8_feedback(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 5, "quantize8Feedback")) return NULL;
  size_t n = 0, nr = 0, nq = 0, ns = 0, nd = 0;
  const float* g = arg_typed(&a, 0, napi_float32_array, &n, "g");
  float* residual = arg_typed(&a, 1, napi_float32_array, &nr, "residual");
  int8_t* q = arg_typed(&a, 2, napi_int8_array, &nq, "q");
  float* scales = arg_typed(&a, 3, napi_float32_array, &ns, "scales");
  float* decoded = arg_typed(&a, 4, napi_float32_array, &nd, "decoded");
  if (a.failed) return NULL;
  if (nr < n || nq < n || nd < n || ns < blocks_of(n)) return args_fail(&a, "residual, q, decoded or scales too short for g");
  feedback_loop(g, residual, q, scales, decoded, n);
  return NULL;
}

/*
 * dequantize8(q: Int8Array, scales: Float32Array, dst: Float32Array[, base: Float32Array]): dst =
 * (base +) q * scale; returns the index of the first byte of -128 (no encoder writes one), or -1.
 */
napi_value math_dequantize8(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "dequantize8")) return NULL;
  size_t n = 0, ns = 0, nd = 0, nb = 0;
  const int8_t* q = arg_typed(&a, 0, napi_int8_array, &n, "q");
  const float* scales = arg_typed(&a, 1, napi_float32_array, &ns, "scales");
  float* dst = arg_typed(&a, 2, napi_float32_array, &nd, "dst");
  const float* base = a.argc >= 4 ? arg_typed(&a, 3, napi_float32_array, &nb, "base") : NULL;
  if (a.failed) return NULL;
  if (nd < n || ns < blocks_of(n) || (base && nb < n)) return args_fail(&a, "scales, dst or base too short for q");
  int64_t bad = -1;
  for (size_t b = 0, start = 0; start < n; b++, start += QBLOCK) {
    const size_t end = start + QBLOCK < n ? start + QBLOCK : n;
    const double scale = (double)scales[b];
    if (base) {
      for (size_t i = start; i < end; i++) dst[i] = (float)((double)base[i] + (double)(float)((double)q[i] * scale));
    } else {
      for (size_t i = start; i < end; i++) dst[i] = (float)((double)q[i] * scale);
    }
    if (bad < 0) {
      int any = 0;
      for (size_t i = start; i < end; i++) any |= q[i] == -128;
      if (any) for (size_t i = start; i < end && bad < 0; i++) if (q[i] == -128) bad = (int64_t)i;
    }
  }
  napi_value out;
  if (napi_create_double(env, (double)bad, &out) != napi_ok) return napi_failed(env, "napi_create_double");
  return out;
}

/*
 * quantizeDelta8(w: Float32Array, view: Float32Array, q: Int8Array, scales: Float32Array,
 * nextView: Float32Array): the difference w - view (float32) encoded as quantize8 does, and
 * nextView = view + its decoded value.
 */
napi_value math_quantize_delta8(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 5, "quantizeDelta8")) return NULL;
  size_t n = 0, nv = 0, nq = 0, ns = 0, nn = 0;
  const float* w = arg_typed(&a, 0, napi_float32_array, &n, "w");
  const float* view = arg_typed(&a, 1, napi_float32_array, &nv, "view");
  int8_t* q = arg_typed(&a, 2, napi_int8_array, &nq, "q");
  float* scales = arg_typed(&a, 3, napi_float32_array, &ns, "scales");
  float* next = arg_typed(&a, 4, napi_float32_array, &nn, "nextView");
  if (a.failed) return NULL;
  if (nv < n || nq < n || nn < n || ns < blocks_of(n)) return args_fail(&a, "view, q, nextView or scales too short for w");
  delta_loop(w, view, q, scales, next, n);
  return NULL;
}
