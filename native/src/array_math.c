/*
 * The coordinator's arithmetic on plain typed arrays (no wasm heap): the weighted average of
 * gradients, Adam, the finiteness check, and the 16-bit float conversions of the wire format
 * (those in array_math_half.c; array_math_shared.h holds what the two files share).
 * Each function reproduces a JS reference loop (coordinator/optimizer.ts, shared/numerics/half.ts) bit for
 * bit: the JS code computes in IEEE double and rounds to float32 only on stores, so the C below
 * does the same in double, and the build passes -ffp-contract=off because a fused multiply-add
 * rounds once where JS rounds twice. Checkpoints and runs therefore do not depend on whether the
 * addon was built.
 */
#include "array_math.h"

#include <math.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <stdint.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "args.h"
#include "array_math_shared.h"
#include "pool.h"

/*
 * The hot loops are compiled three times, for AVX-512, AVX2 and baseline x86-64, and the loader
 * picks one for the CPU (GNU ifunc, Linux): wider vectors for the same IEEE operations. Double
 * division and square root are correctly rounded at every width and -ffp-contract=off keeps
 * multiply and add apart, so every clone gives the same bits.
 */
#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define SIMD_CLONES __attribute__((target_clones("avx512f", "avx2", "default")))
#else
#define SIMD_CLONES
#endif

/* Set once by array_math_init(); clean_upper() (array_math_shared.h) reads it. */
#ifdef HAVE_ZEROUPPER
int cpu_has_avx = 0;
#endif

SIMD_CLONES static void sum_first(float* restrict acc, const float* restrict p, double s, size_t len) {
  for (size_t i = 0; i < len; i++) acc[i] = (float)(0.0 + s * (double)p[i]);
}

SIMD_CLONES static void sum_more(float* restrict acc, const float* restrict p, double s, size_t len) {
  for (size_t i = 0; i < len; i++) acc[i] = (float)((double)acc[i] + s * (double)p[i]);
}

/*
 * A magnitude's lanes: element i of a block to lane i % 4, the tail past the block's last multiple
 * of four to lane 0; the largest |x| per lane and four running sums of squares (four independent
 * chains instead of one, as the JS loop in coordinator/optimizer.ts adds them). measure_lanes adds
 * a run of a block (runs other than a block's last are multiples of four long); lanes_result gives
 * the block's largest |x| (a maximum that ignores NaN does not depend on the order it sees the
 * values in) and its sum of squares, (s0 + s1) + (s2 + s3).
 */
SIMD_CLONES static void measure_lanes(const float* restrict x, size_t len, float* restrict mx_io, double* restrict sq_io) {
  float mx[4] = {mx_io[0], mx_io[1], mx_io[2], mx_io[3]};
  double sq[4] = {sq_io[0], sq_io[1], sq_io[2], sq_io[3]};
  size_t i = 0;
  for (; i + 4 <= len; i += 4)
    for (int j = 0; j < 4; j++) {
      const float v = x[i + j];
      mx[j] = fabsf(v) > mx[j] ? fabsf(v) : mx[j];
      sq[j] += (double)v * (double)v;
    }
  for (; i < len; i++) {
    mx[0] = fabsf(x[i]) > mx[0] ? fabsf(x[i]) : mx[0];
    sq[0] += (double)x[i] * (double)x[i];
  }
  for (int j = 0; j < 4; j++) {
    mx_io[j] = mx[j];
    sq_io[j] = sq[j];
  }
}

static void lanes_result(const float* mx, const double* sq, double* max_abs, double* sum_sq) {
  float m = mx[0];
  for (int l = 1; l < 4; l++) m = mx[l] > m ? mx[l] : m;
  *max_abs = m;
  *sum_sq = (sq[0] + sq[1]) + (sq[2] + sq[3]);
}

/* Big enough to amortise the per-part loop setup, small enough that the accumulator stays in L1. */
#define SUM_BLOCK 2048
/* A pool block of a weighted sum: 8 accumulator blocks, and the block a magnitude is measured in. */
#define SUM_POOL_BLOCK (8 * SUM_BLOCK)

/*
 * weightedSum(out, parts, scales): out[i] = sum over k in order of scales[k] * parts[k][i], each
 * product and add in double and the running sum rounded to float32 after every add, starting
 * from +0 (so a lone -0 product gives +0, as in JS). A block at a time through an L1 accumulator:
 * one pass over memory whatever the number of parts, and `out` may be one of the parts. Blocks run
 * on the pool's threads (pool.c): each element's sum is the same whichever thread adds it.
 * weightedSum(out, parts, scales, measures): the same sum of parts that are not `out`, and each
 * part measured as it is read, as magnitude measures it: measures[2k] = the largest |x| of part k,
 * measures[2k + 1] its sum of squares (at most 64 parts).
 */
typedef struct {
  float* out;
  const float** parts;
  const double* scales;
  uint32_t np;
  /* With measures: per pool block and part, the largest |x| and the sum of squares of the block. */
  double* blocks;
} sum_job_t;

/* Elements [b, e) of a weighted sum, SUM_BLOCK at a time (blocks run on the pool's threads). */
static void sum_block(void* arg, size_t b, size_t e) {
  const sum_job_t* j = arg;
  float acc[SUM_BLOCK];
  clean_upper();
  if (j->blocks) {
    double* at = j->blocks + 2 * (size_t)j->np * (b / SUM_POOL_BLOCK);
    float mx[4 * 64];
    double sq[4 * 64];
    for (uint32_t k = 0; k < j->np; k++)
      for (int l = 0; l < 4; l++) (mx[4 * k + l] = 0.f, sq[4 * k + l] = 0.0);
    float part[SUM_BLOCK];
    for (size_t i = b; i < e; i += SUM_BLOCK) {
      const size_t len = e - i < SUM_BLOCK ? e - i : SUM_BLOCK;
      for (uint32_t k = 0; k < j->np; k++) {
        /* One read of the part, into L1: what is summed and measured is this copy. */
        memcpy(part, j->parts[k] + i, len * sizeof(float));
        if (k == 0) sum_first(acc, part, j->scales[k], len);
        else sum_more(acc, part, j->scales[k], len);
        measure_lanes(part, len, mx + 4 * k, sq + 4 * k);
      }
      memcpy(j->out + i, acc, len * sizeof(float));
    }
    for (uint32_t k = 0; k < j->np; k++) lanes_result(mx + 4 * k, sq + 4 * k, &at[2 * k], &at[2 * k + 1]);
    return;
  }
  for (; b < e; b += SUM_BLOCK) {
    const size_t len = e - b < SUM_BLOCK ? e - b : SUM_BLOCK;
    sum_first(acc, j->parts[0] + b, j->scales[0], len);
    for (uint32_t k = 1; k < j->np; k++) sum_more(acc, j->parts[k] + b, j->scales[k], len);
    memcpy(j->out + b, acc, len * sizeof(float));
  }
}

napi_value math_weighted_sum(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "weightedSum")) return NULL;
  size_t n = 0;
  float* out = arg_typed(&a, 0, napi_float32_array, &n, "out");
  uint32_t np = 0, ns = 0;
  napi_value partsArr = arg_array(&a, 1, &np, "parts");
  napi_value scalesArr = arg_array(&a, 2, &ns, "scales");
  size_t nm = 0;
  double* measures = a.argc >= 4 ? arg_typed(&a, 3, napi_float64_array, &nm, "measures") : NULL;
  if (a.failed) return NULL;
  if (np != ns) return args_fail(&a, "parts and scales differ in length");
  if (measures && (np > 64 || nm < 2 * (size_t)np)) return args_fail(&a, "measures needs two values per part, for at most 64 parts");
  if (np == 0) {
    if (n > 0) memset(out, 0, n * sizeof(float));
    return NULL;
  }
  const float** parts = malloc(np * sizeof *parts);
  double* scales = malloc(np * sizeof *scales);
  if (!parts || !scales) {
    free(parts);
    free(scales);
    return args_fail(&a, "out of memory");
  }
  for (uint32_t k = 0; k < np && !a.failed; k++) {
    size_t len = 0;
    const float* d = arg_typed_element(&a, partsArr, k, napi_float32_array, &len, "every part");
    scales[k] = arg_num_element(&a, scalesArr, k, "every scale");
    parts[k] = d;
    if (a.failed) break;
    if (len != n) args_fail(&a, "a part's length differs from out's");
    /* Only exact aliasing keeps the JS result: a shifted overlap would read already-written sums. */
    else if (d != out && ranges_overlap(d, len * 4, out, n * 4)) args_fail(&a, "out partly overlaps a part");
  }
  if (a.failed) {
    free(parts);
    free(scales);
    return NULL;
  }
  const size_t blocks = (n + SUM_POOL_BLOCK - 1) / SUM_POOL_BLOCK;
  sum_job_t job = {out, parts, scales, np, measures ? malloc((blocks ? blocks : 1) * 2 * np * sizeof(double)) : NULL};
  if (measures && !job.blocks) {
    free(parts);
    free(scales);
    return args_fail(&a, "out of memory");
  }
  pool_run(sum_block, &job, n, SUM_POOL_BLOCK);
  if (measures) {
    for (uint32_t k = 0; k < np; k++) {
      double m = 0.0, sum = 0.0;
      for (size_t b = 0; b < blocks; b++) {
        const double* at = job.blocks + 2 * ((size_t)np * b + k);
        m = at[0] > m ? at[0] : m;
        sum += at[1];
      }
      measures[2 * k] = m;
      measures[2 * k + 1] = sum;
    }
    free(job.blocks);
  }
  free(parts);
  free(scales);
  return NULL;
}

/*
 * One Adam element, in double between float32 loads and stores, as the JS loop computes it. The
 * gradient is read as 0 + g, so a -0 in it counts as the +0 a weighted sum would have given.
 */
#define ADAM_ELEMENT(W_IN, M_IN, V_IN, W_OUT, M_OUT, V_OUT)                            \
  do {                                                                                 \
    const double gi = (double)g[i] + 0.0;                                              \
    const double mi = (double)(M_IN) * b1 + gi * omb1;                                 \
    const double vi = (double)(V_IN) * b2 + gi * gi * omb2;                            \
    const double wi = (W_IN);                                                          \
    (M_OUT) = (float)mi;                                                               \
    (V_OUT) = (float)vi;                                                               \
    /* The unrounded moments feed the update, as in the JS loop. */                    \
    (W_OUT) = (float)(wi - (lr * (mi / c1)) / (sqrt(vi / c2) + eps));                  \
  } while (0)

/* Two loops rather than one with aliased pointers: restrict is what lets the compiler vectorise. */
SIMD_CLONES static void adam_in_place(float* restrict w, const float* restrict g, float* restrict m, float* restrict v, size_t n, double b1,
                                      double b2, double omb1, double omb2, double c1, double c2, double lr, double eps) {
  for (size_t i = 0; i < n; i++) ADAM_ELEMENT(w[i], m[i], v[i], w[i], m[i], v[i]);
}

SIMD_CLONES static void adam_to(const float* restrict w, const float* restrict g, const float* restrict m, const float* restrict v,
                                float* restrict wo, float* restrict mo, float* restrict vo, size_t n, double b1, double b2, double omb1,
                                double omb2, double c1, double c2, double lr, double eps) {
  for (size_t i = 0; i < n; i++) ADAM_ELEMENT(w[i], m[i], v[i], wo[i], mo[i], vo[i]);
}

/* No NaN or infinity among n floats: no element with an all-ones exponent. */
static bool finite_run(const float* a, size_t n) {
  const uint32_t* u = (const uint32_t*)a;
  uint32_t bad = 0;
  for (size_t i = 0; i < n; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
  return bad == 0;
}

#if defined(__x86_64__) && defined(__GNUC__) && defined(__linux__)
#define HAVE_STREAM_ADAM 1
static int cpu_has_avx512f = 0;

/* 8 floats widened to doubles; 16 floats from two vectors of 8 doubles, each rounded to nearest. */
__attribute__((target("avx512f"))) static inline __m512d load8(const float* p) { return _mm512_cvtps_pd(_mm256_loadu_ps(p)); }
__attribute__((target("avx512f"))) static inline __m512 pack16(__m512d lo, __m512d hi) {
  const __m512 l = _mm512_castps256_ps512(_mm512_cvtpd_ps(lo));
  return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(l), _mm256_castps_pd(_mm512_cvtpd_ps(hi)), 1));
}
/* Lanes whose float32 has an all-ones exponent (NaN or infinity). */
__attribute__((target("avx512f"))) static inline __mmask16 nonfinite16(__m512 x) {
  const __m512i e = _mm512_set1_epi32(0x7f800000);
  return _mm512_cmpeq_epi32_mask(_mm512_and_si512(_mm512_castps_si512(x), e), e);
}

/*
 * Adam out of place, its outputs written with streaming stores: a line written that way is not read
 * first, so a step of n values moves 7n floats through memory instead of 10n (the three outputs are
 * not read back: their finiteness is checked in registers). The arithmetic is ADAM_ELEMENT's,
 * operation for operation in double (no fused multiply-add), so the bits are the same. An output
 * that is not aligned as the new weights are after the first elements is stored normally.
 */
__attribute__((target("avx512f"))) static bool adam_stream(const float* w, const float* g, const float* m, const float* v, float* wo, float* mo, float* vo,
                                                          float* wa, size_t n, const double* h) {
  const double b1 = h[0], b2 = h[1], omb1 = h[2], omb2 = h[3], c1 = h[4], c2 = h[5], lr = h[6], eps = h[7];
  size_t i = 0;
  bool finite = true;
  for (; i < n && ((uintptr_t)(wo + i) & 63) != 0; i++) {
    ADAM_ELEMENT(w[i], m[i], v[i], wo[i], mo[i], vo[i]);
    if (wa) wa[i] = wo[i];
    finite = finite && finite_run(wo + i, 1) && finite_run(mo + i, 1) && finite_run(vo + i, 1);
  }
  const bool m_aligned = ((uintptr_t)(mo + i) & 63) == 0, v_aligned = ((uintptr_t)(vo + i) & 63) == 0;
  const bool a_aligned = wa && ((uintptr_t)(wa + i) & 63) == 0;
  const __m512d B1 = _mm512_set1_pd(b1), B2 = _mm512_set1_pd(b2), OMB1 = _mm512_set1_pd(omb1), OMB2 = _mm512_set1_pd(omb2);
  const __m512d C1 = _mm512_set1_pd(c1), C2 = _mm512_set1_pd(c2), LR = _mm512_set1_pd(lr), EPS = _mm512_set1_pd(eps), ZERO = _mm512_setzero_pd();
  __mmask16 bad = 0;
  for (; i + 16 <= n; i += 16) {
    __m512d nw[2], nm[2], nv[2];
    for (int k = 0; k < 2; k++) {
      const size_t j = i + 8 * (size_t)k;
      const __m512d gi = _mm512_add_pd(load8(g + j), ZERO);
      const __m512d mi = _mm512_add_pd(_mm512_mul_pd(load8(m + j), B1), _mm512_mul_pd(gi, OMB1));
      const __m512d vi = _mm512_add_pd(_mm512_mul_pd(load8(v + j), B2), _mm512_mul_pd(_mm512_mul_pd(gi, gi), OMB2));
      const __m512d step = _mm512_div_pd(_mm512_mul_pd(LR, _mm512_div_pd(mi, C1)), _mm512_add_pd(_mm512_sqrt_pd(_mm512_div_pd(vi, C2)), EPS));
      nw[k] = _mm512_sub_pd(load8(w + j), step);
      nm[k] = mi;
      nv[k] = vi;
    }
    const __m512 W = pack16(nw[0], nw[1]), M = pack16(nm[0], nm[1]), V = pack16(nv[0], nv[1]);
    bad |= nonfinite16(W) | nonfinite16(M) | nonfinite16(V);
    _mm512_stream_ps(wo + i, W);
    if (m_aligned) _mm512_stream_ps(mo + i, M);
    else _mm512_storeu_ps(mo + i, M);
    if (v_aligned) _mm512_stream_ps(vo + i, V);
    else _mm512_storeu_ps(vo + i, V);
    if (a_aligned) _mm512_stream_ps(wa + i, W);
    else if (wa) _mm512_storeu_ps(wa + i, W);
  }
  for (; i < n; i++) {
    ADAM_ELEMENT(w[i], m[i], v[i], wo[i], mo[i], vo[i]);
    if (wa) wa[i] = wo[i];
    finite = finite && finite_run(wo + i, 1) && finite_run(mo + i, 1) && finite_run(vo + i, 1);
  }
  /* Streaming stores are weakly ordered: they are in memory before the pool counts the block done. */
  _mm_sfence();
  return finite && bad == 0;
}
#endif

/* An Adam step's arrays and constants, and whether any block's outputs were not finite. */
typedef struct {
  float *w, *g, *m, *v, *wo, *mo, *vo;
  /* A second place for the new weights, or NULL. */
  float* wa;
  double h[8];
  /* Outputs by streaming stores (a step larger than the caches, out of place, on AVX-512). */
  bool stream;
  atomic_int bad;
} adam_job_t;

/* Elements [b, e) of a step, then whether its outputs are finite (still in cache). */
static void adam_block(void* arg, size_t b, size_t e) {
  adam_job_t* p = arg;
  const double* h = p->h;
  const size_t len = e - b;
#ifdef HAVE_STREAM_ADAM
  if (p->stream) {
    if (!adam_stream(p->w + b, p->g + b, p->m + b, p->v + b, p->wo + b, p->mo + b, p->vo + b, p->wa ? p->wa + b : NULL, len, h)) atomic_store(&p->bad, 1);
    return;
  }
#endif
  clean_upper();
  if (p->wo == p->w)
    adam_in_place(p->w + b, p->g + b, p->m + b, p->v + b, len, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
  else
    adam_to(p->w + b, p->g + b, p->m + b, p->v + b, p->wo + b, p->mo + b, p->vo + b, len, h[0], h[1], h[2], h[3], h[4], h[5], h[6], h[7]);
  if (p->wa) memcpy(p->wa + b, p->wo + b, len * sizeof(float));
  if (!(finite_run(p->wo + b, len) && finite_run(p->mo + b, len) && finite_run(p->vo + b, len))) atomic_store(&p->bad, 1);
}

/* Elements per block; below two blocks a step runs on the calling thread alone. */
#define ADAM_BLOCK 16384
/* From this many elements a step's outputs are streamed (adam_stream): below it they stay in cache for what reads them next. */
#define ADAM_STREAM_MIN (1 << 18)

/*
 * adamStep(w, g, m, v, b1, b2, omb1, omb2, c1, c2, lr, eps[, wOut, mOut, vOut]): one Adam update,
 * in place or into the three outputs (a chunked step writes the next weights beside the current
 * ones, so an aborted reduction leaves the current ones untouched). Each output is its input or
 * shares memory with no other array. Returns whether every new weight and moment is finite.
 * adamStep(..., wOut, mOut, vOut, wAlso): the new weights written to wAlso too (the shared region's
 * copy of them), in the same pass.
 * Large vectors are cut into blocks stepped by this thread and the pool's helpers (pool.c; the
 * update is elementwise, so the bits do not depend on the cut): every worker of a run waits for
 * this step.
 */
napi_value math_adam_step(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 12, "adamStep")) return NULL;
  static const char* const names[7] = {"w", "g", "m", "v", "wOut", "mOut", "vOut"};
  float* p[7];
  size_t len[7];
  for (int k = 0; k < 4; k++) p[k] = arg_typed(&a, (size_t)k, napi_float32_array, &len[k], names[k]);
  static const char* const hyper[8] = {"b1", "b2", "omb1", "omb2", "c1", "c2", "lr", "eps"};
  double h[8];
  for (int k = 0; k < 8; k++) h[k] = arg_num(&a, (size_t)(4 + k), hyper[k]);
  /* The input each output replaces: w, m, v. */
  static const int input_of[7] = {-1, -1, -1, -1, 0, 2, 3};
  const int outs = a.argc >= 15;
  for (int k = 4; k < 7; k++) {
    if (outs) {
      p[k] = arg_typed(&a, (size_t)(8 + k), napi_float32_array, &len[k], names[k]);
    } else {
      p[k] = p[input_of[k]];
      len[k] = len[input_of[k]];
    }
  }
  if (a.failed) return NULL;
  for (int k = 1; k < 7; k++)
    if (len[k] != len[0]) return args_fail(&a, "weight, gradient and state sizes differ");
  /* Inputs never share memory; an output may be exactly its own input and nothing else. */
  for (int j = 0; j < 7; j++)
    for (int k = j + 1; k < 7; k++)
      if (!(k >= 4 && p[k] == p[input_of[k]] && j == input_of[k]) && ranges_overlap(p[j], len[j] * 4, p[k], len[k] * 4))
        return args_fail(&a, "w, g, m, v and the outputs must not share memory (an output may be its own input)");
  const bool in_place = p[4] == p[0] && p[5] == p[2] && p[6] == p[3];
  if (!in_place && (p[4] == p[0] || p[5] == p[2] || p[6] == p[3])) return args_fail(&a, "wOut, mOut and vOut must all be their inputs or none of them");
  size_t na = 0;
  float* wa = a.argc >= 16 ? arg_typed(&a, 15, napi_float32_array, &na, "wAlso") : NULL;
  if (a.failed) return NULL;
  if (wa && na != len[0]) return args_fail(&a, "wAlso differs in size from w");
  for (int k = 0; wa && k < 7; k++)
    if (ranges_overlap(wa, na * 4, p[k], len[k] * 4)) return args_fail(&a, "wAlso must not share memory with w, g, m, v or the outputs");

  const size_t n = len[0];
  bool stream = false;
#ifdef HAVE_STREAM_ADAM
  stream = cpu_has_avx512f && !in_place && n >= ADAM_STREAM_MIN;
#endif
  adam_job_t job = {p[0], p[1], p[2], p[3], p[4], p[5], p[6], wa, {0}, stream, 0};
  memcpy(job.h, h, sizeof h);
  pool_run(adam_block, &job, n, ADAM_BLOCK);
  const bool finite = atomic_load(&job.bad) == 0;
  napi_value out;
  if (napi_get_boolean(env, finite, &out) != napi_ok) return napi_failed(env, "napi_get_boolean");
  return out;
}

/* allFinite(a): no NaN or infinity, i.e. no element with an all-ones exponent. */
napi_value math_all_finite(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 1, "allFinite")) return NULL;
  size_t n = 0;
  const float* x = arg_typed(&a, 0, napi_float32_array, &n, "the argument");
  if (a.failed) return NULL;
  bool ok = true;
  clean_upper();
  /* Branch-free within a block so it vectorises; checked between blocks to stop early. */
  for (size_t b = 0; b < n && ok; b += 4096) ok = finite_run(x + b, n - b < 4096 ? n - b : 4096);
  napi_value out;
  if (napi_get_boolean(env, ok, &out) != napi_ok) return napi_failed(env, "napi_get_boolean");
  return out;
}

SIMD_CLONES static void ema_loop(float* restrict avg, const float* restrict w, double d, double e, size_t n) {
  for (size_t i = 0; i < n; i++) avg[i] = (float)(d * (double)avg[i] + e * (double)w[i]);
}

/* emaUpdate(avg, w, d, e): avg = d * avg + e * w in place, in double, as the JS loop. */
napi_value math_ema_update(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 4, "emaUpdate")) return NULL;
  size_t na = 0, nw = 0;
  float* avg = arg_typed(&a, 0, napi_float32_array, &na, "avg");
  const float* w = arg_typed(&a, 1, napi_float32_array, &nw, "w");
  const double d = arg_num(&a, 2, "d"), e = arg_num(&a, 3, "e");
  if (a.failed) return NULL;
  if (na != nw) return args_fail(&a, "the average and the weights differ in size");
  if (ranges_overlap(avg, na * 4, w, nw * 4)) return args_fail(&a, "avg and w must not share memory");
  clean_upper();
  ema_loop(avg, w, d, e, na);
  return NULL;
}

/*
 * One block of a magnitude (the lanes of measure_lanes), copied to `copy` first when given, a
 * SUM_BLOCK at a time, and measured from the copy: what is measured is exactly what was copied.
 */
static void magnitude_loop(const float* restrict a, float* restrict copy, size_t n, double* max_abs, double* sum_sq) {
  float mx[4] = {0.f, 0.f, 0.f, 0.f};
  double sq[4] = {0.0, 0.0, 0.0, 0.0};
  for (size_t i = 0; i < n; i += SUM_BLOCK) {
    const size_t len = n - i < SUM_BLOCK ? n - i : SUM_BLOCK;
    if (copy) memcpy(copy + i, a + i, len * sizeof(float));
    measure_lanes(copy ? copy + i : a + i, len, mx, sq);
  }
  lanes_result(mx, sq, max_abs, sum_sq);
}

/* The blocks a magnitude is measured in (MAGNITUDE_BLOCK in coordinator/optimizer.ts). */
#define MAGNITUDE_BLOCK 16384

typedef struct {
  const float* a;
  float* copy;
  double (*parts)[2];
} magnitude_job_t;

static void magnitude_block(void* arg, size_t b, size_t e) {
  magnitude_job_t* j = arg;
  clean_upper();
  double* part = j->parts[b / MAGNITUDE_BLOCK];
  magnitude_loop(j->a + b, j->copy ? j->copy + b : NULL, e - b, &part[0], &part[1]);
}

/*
 * magnitude(a: Float32Array, out: Float64Array[, copy: Float32Array]): out[0] = the largest |a[i]|,
 * out[1] = the sum of squares in double (NaN or Infinity when a holds one). How big a gradient is,
 * in one pass. With `copy`, a is copied there in the same pass and what is measured is exactly
 * what was copied (a may be memory another process writes). Measured in blocks of
 * MAGNITUDE_BLOCK values on the pool's threads, each block's sum of squares as magnitude_loop
 * takes it, the blocks' sums then added in order: the bits the JS loop gives.
 */
napi_value math_magnitude(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 2, "magnitude")) return NULL;
  size_t n = 0, no = 0, nc = 0;
  const float* x = arg_typed(&a, 0, napi_float32_array, &n, "a");
  double* out = arg_typed(&a, 1, napi_float64_array, &no, "out");
  float* copy = a.argc >= 3 ? arg_typed(&a, 2, napi_float32_array, &nc, "copy") : NULL;
  if (a.failed) return NULL;
  if (no < 2) return args_fail(&a, "out needs two values");
  if (copy && nc != n) return args_fail(&a, "copy differs in size from a");
  if (copy && ranges_overlap(x, n * 4, copy, nc * 4)) return args_fail(&a, "a and copy must not share memory");
  const size_t blocks = (n + MAGNITUDE_BLOCK - 1) / MAGNITUDE_BLOCK;
  magnitude_job_t job = {x, copy, malloc((blocks ? blocks : 1) * sizeof(double[2]))};
  if (!job.parts) return args_fail(&a, "out of memory");
  pool_run(magnitude_block, &job, n, MAGNITUDE_BLOCK);
  double m = 0.0, sum = 0.0;
  for (size_t b = 0; b < blocks; b++) {
    m = job.parts[b][0] > m ? job.parts[b][0] : m;
    sum += job.parts[b][1];
  }
  free(job.parts);
  out[0] = m;
  out[1] = sum;
  return NULL;
}

void array_math_init(void) {
  array_math_half_init();
#ifdef HAVE_ZEROUPPER
  __builtin_cpu_init();
  cpu_has_avx = __builtin_cpu_supports("avx");
#endif
#ifdef HAVE_STREAM_ADAM
  cpu_has_avx512f = __builtin_cpu_supports("avx512f");
#endif
}
