/*
 * OpenBLAS kernels that work in place on a tfjs wasm backend's heap.
 *
 * Every entry point takes the heap (the WebAssembly.Memory ArrayBuffer) and byte offsets into it,
 * so tensors are never copied between JS and C. The caller re-reads the buffer after any wasm
 * allocation because memory growth detaches the old one; nothing here keeps a pointer across calls.
 */
#include <math.h>
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <cblas.h>
#include <node_api.h>

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#include <immintrin.h>
#define HAVE_ZEROUPPER 1
#endif

enum { ACT_LINEAR = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_LEAKYRELU = 3, ACT_SIGMOID = 4, ACT_ELU = 5 };

#define MAX_ARGS 16

#define CHECK(env, call)                                   \
  do {                                                     \
    if ((call) != napi_ok) {                               \
      throw_last(env, #call);                              \
      return NULL;                                         \
    }                                                      \
  } while (0)

static void throw_last(napi_env env, const char* what) {
  const napi_extended_error_info* info = NULL;
  napi_get_last_error_info(env, &info);
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return;
  char msg[256];
  snprintf(msg, sizeof msg, "gan_native: %s failed: %s", what,
           info && info->error_message ? info->error_message : "unknown error");
  napi_throw_error(env, "E_NATIVE", msg);
}

typedef struct {
  napi_env env;
  size_t argc;
  napi_value argv[MAX_ARGS];
  uint8_t* heap;
  size_t heap_len;
  int failed;
} Args;

/* Reads the arguments and resolves argument 0 to the heap's bytes. */
static int args_init(Args* a, napi_env env, napi_callback_info info, size_t want) {
  a->env = env;
  a->argc = MAX_ARGS;
  a->failed = 0;
  if (napi_get_cb_info(env, info, &a->argc, a->argv, NULL, NULL) != napi_ok) {
    throw_last(env, "napi_get_cb_info");
    return 0;
  }
  if (a->argc < want) {
    napi_throw_type_error(env, "E_NATIVE", "gan_native: too few arguments");
    return 0;
  }
  void* data = NULL;
  bool is_ab = false;
  napi_is_arraybuffer(env, a->argv[0], &is_ab);
  if (!is_ab) {
    napi_throw_type_error(env, "E_NATIVE", "gan_native: argument 0 must be the wasm heap ArrayBuffer");
    return 0;
  }
  if (napi_get_arraybuffer_info(env, a->argv[0], &data, &a->heap_len) != napi_ok) {
    throw_last(env, "napi_get_arraybuffer_info");
    return 0;
  }
  a->heap = (uint8_t*)data;
  return 1;
}

static int64_t arg_i64(Args* a, size_t i) {
  int64_t v = 0;
  if (napi_get_value_int64(a->env, a->argv[i], &v) != napi_ok) a->failed = 1;
  return v;
}

static double arg_f64(Args* a, size_t i) {
  double v = 0;
  if (napi_get_value_double(a->env, a->argv[i], &v) != napi_ok) a->failed = 1;
  return v;
}

/* A float pointer into the heap for `count` floats at byte offset `off`, or NULL when out of range. */
static float* heap_f32(Args* a, int64_t off, int64_t count) {
  if (off < 0 || count < 0 || (off & 3) != 0) return NULL;
  if ((uint64_t)off + (uint64_t)count * 4u > a->heap_len) return NULL;
  return (float*)(a->heap + off);
}

static napi_value fail(napi_env env, const char* msg) {
  napi_throw_range_error(env, "E_NATIVE", msg);
  return NULL;
}

static napi_value type_fail(napi_env env, const char* msg) {
  napi_throw_type_error(env, "E_NATIVE", msg);
  return NULL;
}

/*
 * tanh as a rational function (the minimax fit Eigen and XLA use), a few ulp from tanhf but
 * branch-free and vectorisable: libm's tanhf costs ~20 ns an element and G's output layer has
 * 78,400 of them per batch.
 */
static inline float fast_tanh(float v) {
  const float c = 7.90531110763549805f;
  /* Written without && or calls so gcc if-converts and vectorises the loop that inlines it. */
  float x = v > c ? c : v;
  x = x < -c ? -c : x;
  const float x2 = x * x;
  float p = x2 * -2.76076847742355e-16f + 2.00018790482477e-13f;
  p = x2 * p + -8.60467152213735e-11f;
  p = x2 * p + 5.12229709037114e-08f;
  p = x2 * p + 1.48572235717979e-05f;
  p = x2 * p + 6.37261928875436e-04f;
  p = x2 * p + 4.89352455891786e-03f;
  p = x * p;
  float q = x2 * 1.19825839466702e-06f + 1.18534705686654e-04f;
  q = x2 * q + 2.26843463243900e-03f;
  q = x2 * q + 4.89352518554385e-03f;
  const float r = p / q;
  /* Below ~4e-4 the fit loses relative accuracy while tanh(x) == x to float precision. */
  return fabsf(x) < 4e-4f ? x : r;
}

/* Outputs are always fresh tensors, so the restrict promises hold; they let gcc skip alias checks. */
static void tanh_loop(const float* restrict x, float* restrict o, int64_t n) {
  for (int64_t i = 0; i < n; i++) o[i] = fast_tanh(x[i]);
}

static void activate(float* c, int64_t n, int act, float alpha) {
  switch (act) {
    case ACT_RELU:
      for (int64_t i = 0; i < n; i++) c[i] = c[i] > 0.f ? c[i] : 0.f;
      break;
    case ACT_RELU6:
      for (int64_t i = 0; i < n; i++) c[i] = c[i] < 0.f ? 0.f : (c[i] > 6.f ? 6.f : c[i]);
      break;
    case ACT_LEAKYRELU:
      for (int64_t i = 0; i < n; i++) c[i] = c[i] < 0.f ? c[i] * alpha : c[i];
      break;
    case ACT_SIGMOID:
      for (int64_t i = 0; i < n; i++) c[i] = 1.f / (1.f + expf(-c[i]));
      break;
    case ACT_ELU:
      for (int64_t i = 0; i < n; i++) c[i] = c[i] < 0.f ? expm1f(c[i]) : c[i];
      break;
    default:
      break;
  }
}

/*
 * gemm(heap, batch, M, N, K, transA, transB, aOff, aStride, bOff, bStride, cOff, biasOff, act, alpha)
 * C[b] = act(op(A[b]) x op(B[b]) + bias) for b < batch, row-major. Strides are in floats between
 * batch entries (0 broadcasts one matrix over the batch); biasOff < 0 means no bias, else N floats.
 */
static napi_value gemm(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 15)) return NULL;
  const int64_t batch = arg_i64(&a, 1), M = arg_i64(&a, 2), N = arg_i64(&a, 3), K = arg_i64(&a, 4);
  const int transA = arg_i64(&a, 5) != 0, transB = arg_i64(&a, 6) != 0;
  const int64_t aOff = arg_i64(&a, 7), aStride = arg_i64(&a, 8);
  const int64_t bOff = arg_i64(&a, 9), bStride = arg_i64(&a, 10);
  const int64_t cOff = arg_i64(&a, 11), biasOff = arg_i64(&a, 12);
  const int act = (int)arg_i64(&a, 13);
  const float alpha = (float)arg_f64(&a, 14);
  if (a.failed) return fail(env, "gan_native.gemm: arguments must be numbers");
  if (batch < 1 || M < 0 || N < 0 || K < 0 || aStride < 0 || bStride < 0 || M > INT32_MAX ||
      N > INT32_MAX || K > INT32_MAX)
    return fail(env, "gan_native.gemm: bad dimensions");
  const float* A = heap_f32(&a, aOff, (batch - 1) * aStride + M * K);
  const float* B = heap_f32(&a, bOff, (batch - 1) * bStride + K * N);
  float* C = heap_f32(&a, cOff, batch * M * N);
  const float* bias = biasOff < 0 ? NULL : heap_f32(&a, biasOff, N);
  if (!A || !B || !C || (biasOff >= 0 && !bias)) return fail(env, "gan_native.gemm: tensor outside the heap");
  if (act < ACT_LINEAR || act > ACT_ELU) return fail(env, "gan_native.gemm: unknown activation");

  const int lda = transA ? (int)M : (int)K;
  const int ldb = transB ? (int)K : (int)N;
  for (int64_t b = 0; b < batch; b++) {
    float* c = C + b * M * N;
    if (K == 0) {
      memset(c, 0, (size_t)(M * N) * sizeof(float));
    } else if (M > 0 && N > 0) {
      cblas_sgemm(CblasRowMajor, transA ? CblasTrans : CblasNoTrans, transB ? CblasTrans : CblasNoTrans,
                  (int)M, (int)N, (int)K, 1.f, A + b * aStride, lda, B + b * bStride, ldb, 0.f, c, (int)N);
    }
    if (bias) {
      for (int64_t i = 0; i < M; i++) {
        float* row = c + i * N;
        for (int64_t j = 0; j < N; j++) row[j] += bias[j];
      }
    }
    activate(c, M * N, act, alpha);
  }
  return NULL;
}


enum { BIN_ADD = 0, BIN_SUB = 1, BIN_MUL = 2, BIN_DIV = 3, BIN_MAX = 4, BIN_MIN = 5, BIN_GREATER = 6, BIN_LESS = 7,
       BIN_GREATER_EQUAL = 8, BIN_LESS_EQUAL = 9 };

#define BIN_LOOP(EXPR)                                                                  \
  do {                                                                                  \
    if (na == n && nb == n) {                                                           \
      for (int64_t i = 0; i < n; i++) { const float x = A[i], y = B[i]; O[i] = (EXPR); } \
    } else if (nb == 1) {                                                               \
      const float y = B[0];                                                             \
      for (int64_t i = 0; i < n; i++) { const float x = A[i]; O[i] = (EXPR); }          \
    } else if (na == 1) {                                                               \
      const float x = A[0];                                                             \
      for (int64_t i = 0; i < n; i++) { const float y = B[i]; O[i] = (EXPR); }          \
    } else if (na == n) {                                                               \
      for (int64_t r = 0; r < n; r += nb) {                                             \
        const float* a = A + r; OUT_T* o = O + r;                                        \
        for (int64_t j = 0; j < nb; j++) { const float x = a[j], y = B[j]; o[j] = (EXPR); } \
      }                                                                                 \
    } else {                                                                            \
      for (int64_t r = 0; r < n; r += na) {                                             \
        const float* b = B + r; OUT_T* o = O + r;                                        \
        for (int64_t j = 0; j < na; j++) { const float x = A[j], y = b[j]; o[j] = (EXPR); } \
      }                                                                                 \
    }                                                                                   \
  } while (0)

/*
 * binary(heap, op, aOff, na, bOff, nb, outOff, n): out[i] = op(a[i % na], b[i % nb]).
 * The caller guarantees the broadcast is a plain tiling: each input is the output's trailing
 * dimensions (or a scalar), so its size divides n. Comparisons write bytes (tfjs bool).
 */
static napi_value binary(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 8)) return NULL;
  const int op = (int)arg_i64(&a, 1);
  const int64_t aOff = arg_i64(&a, 2), na = arg_i64(&a, 3), bOff = arg_i64(&a, 4), nb = arg_i64(&a, 5);
  const int64_t oOff = arg_i64(&a, 6), n = arg_i64(&a, 7);
  if (a.failed) return fail(env, "gan_native.binary: arguments must be numbers");
  if (n < 0 || na < 1 || nb < 1 || (n > 0 && (n % na != 0 || n % nb != 0)) || (na != n && nb != n && na != 1 && nb != 1))
    return fail(env, "gan_native.binary: sizes are not a tiling");
  const float* A = heap_f32(&a, aOff, na);
  const float* B = heap_f32(&a, bOff, nb);
  if (!A || !B) return fail(env, "gan_native.binary: tensor outside the heap");
  if (n == 0) return NULL;
  if (op >= BIN_GREATER) {
    if (oOff < 0 || (uint64_t)oOff + (uint64_t)n > a.heap_len) return fail(env, "gan_native.binary: tensor outside the heap");
    uint8_t* O = a.heap + oOff;
#define OUT_T uint8_t
    switch (op) {
      case BIN_GREATER: BIN_LOOP(x > y); break;
      case BIN_LESS: BIN_LOOP(x < y); break;
      case BIN_GREATER_EQUAL: BIN_LOOP(x >= y); break;
      case BIN_LESS_EQUAL: BIN_LOOP(x <= y); break;
      default: return fail(env, "gan_native.binary: unknown op");
    }
#undef OUT_T
  } else {
    float* O = heap_f32(&a, oOff, n);
    if (!O) return fail(env, "gan_native.binary: tensor outside the heap");
#define OUT_T float
    switch (op) {
      case BIN_ADD: BIN_LOOP(x + y); break;
      case BIN_SUB: BIN_LOOP(x - y); break;
      case BIN_MUL: BIN_LOOP(x * y); break;
      case BIN_DIV: BIN_LOOP(x / y); break;
      case BIN_MAX: BIN_LOOP(x > y || x != x ? x : y); break;
      case BIN_MIN: BIN_LOOP(x < y || x != x ? x : y); break;
      default: return fail(env, "gan_native.binary: unknown op");
    }
#undef OUT_T
  }
  return NULL;
}

enum { UN_LEAKYRELU = 0, UN_RELU = 1, UN_TANH = 2, UN_SIGMOID = 3, UN_SQUARE = 4, UN_NEG = 5, UN_EXP = 6,
       UN_RELU6 = 7, UN_ELU = 8 };

/* unary(heap, op, xOff, outOff, n, alpha) */
static napi_value unary(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 6)) return NULL;
  const int op = (int)arg_i64(&a, 1);
  const int64_t xOff = arg_i64(&a, 2), oOff = arg_i64(&a, 3), n = arg_i64(&a, 4);
  const float alpha = (float)arg_f64(&a, 5);
  if (a.failed) return fail(env, "gan_native.unary: arguments must be numbers");
  const float* X = heap_f32(&a, xOff, n);
  float* O = heap_f32(&a, oOff, n);
  if (!X || !O) return fail(env, "gan_native.unary: tensor outside the heap");
  switch (op) {
    case UN_LEAKYRELU: for (int64_t i = 0; i < n; i++) O[i] = X[i] < 0.f ? X[i] * alpha : X[i]; break;
    case UN_RELU: for (int64_t i = 0; i < n; i++) O[i] = X[i] < 0.f ? 0.f : X[i]; break;
    case UN_RELU6: for (int64_t i = 0; i < n; i++) O[i] = X[i] < 0.f ? 0.f : (X[i] > 6.f ? 6.f : X[i]); break;
    case UN_TANH: tanh_loop(X, O, n); break;
    case UN_SIGMOID: for (int64_t i = 0; i < n; i++) O[i] = 1.f / (1.f + expf(-X[i])); break;
    case UN_SQUARE: for (int64_t i = 0; i < n; i++) O[i] = X[i] * X[i]; break;
    case UN_NEG: for (int64_t i = 0; i < n; i++) O[i] = -X[i]; break;
    case UN_EXP: for (int64_t i = 0; i < n; i++) O[i] = expf(X[i]); break;
    case UN_ELU: for (int64_t i = 0; i < n; i++) O[i] = X[i] < 0.f ? expm1f(X[i]) : X[i]; break;
    default: return fail(env, "gan_native.unary: unknown op");
  }
  return NULL;
}

/* A bit mask instead of a branch: vectorises, and passes values through bit-exact. */
static void select_loop(const uint8_t* restrict c, const uint32_t* restrict t, const uint32_t* restrict e,
                        uint32_t* restrict o, int64_t n) {
  for (int64_t i = 0; i < n; i++) {
    const uint32_t m = (uint32_t)0 - (uint32_t)(c[i] != 0);
    o[i] = (t[i] & m) | (e[i] & ~m);
  }
}

/* select(heap, condOff, tOff, eOff, outOff, n): out = cond ? t : e, cond as bytes. */
static napi_value select_(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 6)) return NULL;
  const int64_t cOff = arg_i64(&a, 1), tOff = arg_i64(&a, 2), eOff = arg_i64(&a, 3), oOff = arg_i64(&a, 4);
  const int64_t n = arg_i64(&a, 5);
  if (a.failed) return fail(env, "gan_native.select: arguments must be numbers");
  const float* T = heap_f32(&a, tOff, n);
  const float* E = heap_f32(&a, eOff, n);
  float* O = heap_f32(&a, oOff, n);
  if (!T || !E || !O || n < 0 || cOff < 0 || (uint64_t)cOff + (uint64_t)n > a.heap_len)
    return fail(env, "gan_native.select: tensor outside the heap");
  select_loop(a.heap + cOff, (const uint32_t*)T, (const uint32_t*)E, (uint32_t*)O, n);
  return NULL;
}

/*
 * reduce(heap, op, xOff, outer, inner, leading, outOff): x viewed as outer x inner; leading != 0
 * reduces over the outer index (out has inner entries, e.g. a bias gradient summed over rows),
 * else over the inner one (out has outer entries). op 0 = sum, 1 = mean.
 */
static napi_value reduce(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 7)) return NULL;
  const int op = (int)arg_i64(&a, 1);
  const int64_t xOff = arg_i64(&a, 2), outer = arg_i64(&a, 3), inner = arg_i64(&a, 4);
  const int leading = arg_i64(&a, 5) != 0;
  const int64_t oOff = arg_i64(&a, 6);
  if (a.failed || outer < 0 || inner < 0) return fail(env, "gan_native.reduce: bad arguments");
  const float* X = heap_f32(&a, xOff, outer * inner);
  float* O = heap_f32(&a, oOff, leading ? inner : outer);
  if (!X || !O) return fail(env, "gan_native.reduce: tensor outside the heap");
  if (leading) {
    const float scale = op == 1 && outer > 0 ? 1.f / (float)outer : 1.f;
    /* Row by row into the output keeps the loop contiguous and vectorisable. */
    for (int64_t j = 0; j < inner; j++) O[j] = 0.f;
    for (int64_t i = 0; i < outer; i++) {
      const float* row = X + i * inner;
      for (int64_t j = 0; j < inner; j++) O[j] += row[j];
    }
    if (scale != 1.f) for (int64_t j = 0; j < inner; j++) O[j] *= scale;
  } else {
    for (int64_t i = 0; i < outer; i++) {
      const float* row = X + i * inner;
      float s = 0.f;
      for (int64_t j = 0; j < inner; j++) s += row[j];
      O[i] = op == 1 && inner > 0 ? s / (float)inner : s;
    }
  }
  return NULL;
}

/* ------------------------------------------------------------------------------------------- */
/*
 * Coordinator arithmetic on plain typed arrays (no wasm heap). Each function reproduces a JS
 * reference loop (coordinator/adam.ts, shared/codec.ts) bit for bit: the JS code computes in IEEE
 * double and rounds to float32 only on stores, so the C below does the same in double, and the
 * build passes -ffp-contract=off because a fused multiply-add rounds once where JS rounds twice.
 * Checkpoints and runs therefore do not depend on whether the addon was built.
 */

static int typed_arg(napi_env env, napi_value v, napi_typedarray_type want, void** data, size_t* len,
                     const char* fn, const char* what) {
  bool is_ta = false;
  napi_typedarray_type type;
  char msg[160];
  if (napi_is_typedarray(env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(env, v, &type, len, data, NULL, NULL) != napi_ok || type != want) {
    snprintf(msg, sizeof msg, "gan_native.%s: %s must be a %s", fn, what,
             want == napi_float32_array ? "Float32Array" : "Uint16Array");
    napi_throw_type_error(env, "E_NATIVE", msg);
    return 0;
  }
  return 1;
}

static int double_arg(napi_env env, napi_value v, double* out, const char* fn, const char* what) {
  if (napi_get_value_double(env, v, out) != napi_ok) {
    char msg[160];
    snprintf(msg, sizeof msg, "gan_native.%s: %s must be a number", fn, what);
    napi_throw_type_error(env, "E_NATIVE", msg);
    return 0;
  }
  return 1;
}

static int get_args(napi_env env, napi_callback_info info, napi_value* argv, size_t want, const char* fn) {
  size_t argc = want;
  if (napi_get_cb_info(env, info, &argc, argv, NULL, NULL) != napi_ok) {
    throw_last(env, "napi_get_cb_info");
    return 0;
  }
  if (argc < want) {
    char msg[160];
    snprintf(msg, sizeof msg, "gan_native.%s: expected %zu arguments, got %zu", fn, want, argc);
    napi_throw_type_error(env, "E_NATIVE", msg);
    return 0;
  }
  return 1;
}

static int overlaps(const void* a, size_t abytes, const void* b, size_t bbytes) {
  const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  return abytes > 0 && bbytes > 0 && pa < pb + bbytes && pb < pa + abytes;
}

/*
 * The loops below are compiled for baseline x86-64 (SSE2) so the binary runs on any machine that
 * shares the checkout. On an AVX CPU, legacy SSE instructions run two to four times slower while
 * something else in the process (JIT or library code) has left the upper halves of the YMM
 * registers dirty, which was measured under vite-node; VZEROUPPER before each loop clears that.
 */
#ifdef HAVE_ZEROUPPER
static int cpu_has_avx = 0;
__attribute__((target("avx"))) static void zeroupper_avx(void) { _mm256_zeroupper(); }
static inline void clean_upper(void) {
  if (cpu_has_avx) zeroupper_avx();
}
#else
static inline void clean_upper(void) {}
#endif

/* Big enough to amortise the per-part loop setup, small enough that the accumulator stays in L1. */
#define SUM_BLOCK 2048

/*
 * weightedSum(out, parts, scales): out[i] = sum over k in order of scales[k] * parts[k][i], each
 * product and add in double and the running sum rounded to float32 after every add, starting
 * from +0 (so a lone -0 product gives +0, as in JS). A block at a time through an L1 accumulator:
 * one pass over memory whatever the number of parts, and `out` may be one of the parts.
 */
static napi_value weighted_sum(napi_env env, napi_callback_info info) {
  napi_value argv[3];
  if (!get_args(env, info, argv, 3, "weightedSum")) return NULL;
  float* out = NULL;
  size_t n = 0;
  if (!typed_arg(env, argv[0], napi_float32_array, (void**)&out, &n, "weightedSum", "out")) return NULL;
  bool is_arr = false;
  uint32_t np = 0, ns = 0;
  if (napi_is_array(env, argv[1], &is_arr) != napi_ok || !is_arr || napi_get_array_length(env, argv[1], &np) != napi_ok)
    return type_fail(env, "gan_native.weightedSum: parts must be an array of Float32Array");
  is_arr = false;
  if (napi_is_array(env, argv[2], &is_arr) != napi_ok || !is_arr || napi_get_array_length(env, argv[2], &ns) != napi_ok)
    return type_fail(env, "gan_native.weightedSum: scales must be an array of numbers");
  if (np != ns) return fail(env, "gan_native.weightedSum: parts and scales differ in length");
  if (np == 0) {
    if (n > 0) memset(out, 0, n * sizeof(float));
    return NULL;
  }
  const float** parts = malloc(np * sizeof *parts);
  double* scales = malloc(np * sizeof *scales);
  if (!parts || !scales) {
    free(parts);
    free(scales);
    napi_throw_error(env, "E_NATIVE", "gan_native.weightedSum: out of memory");
    return NULL;
  }
  const char* bad = NULL;
  for (uint32_t k = 0; k < np && !bad; k++) {
    napi_value el;
    void* d = NULL;
    size_t len = 0;
    if (napi_get_element(env, argv[1], k, &el) != napi_ok ||
        !typed_arg(env, el, napi_float32_array, &d, &len, "weightedSum", "every part")) {
      bad = "";
    } else if (len != n) {
      bad = "gan_native.weightedSum: a part's length differs from out's";
    } else if (d != out && overlaps(d, len * 4, out, n * 4)) {
      /* Only exact aliasing keeps the JS result: a shifted overlap would read already-written sums. */
      bad = "gan_native.weightedSum: out partly overlaps a part";
    } else if (napi_get_element(env, argv[2], k, &el) != napi_ok ||
               !double_arg(env, el, &scales[k], "weightedSum", "every scale")) {
      bad = "";
    }
    parts[k] = (const float*)d;
  }
  if (bad) {
    free(parts);
    free(scales);
    bool pending = false;
    napi_is_exception_pending(env, &pending);
    if (!pending) napi_throw_range_error(env, "E_NATIVE", *bad ? bad : "gan_native.weightedSum: bad arguments");
    return NULL;
  }
  float acc[SUM_BLOCK];
  clean_upper();
  for (size_t b = 0; b < n; b += SUM_BLOCK) {
    const size_t len = n - b < SUM_BLOCK ? n - b : SUM_BLOCK;
    {
      const float* p = parts[0] + b;
      const double s = scales[0];
      for (size_t i = 0; i < len; i++) acc[i] = (float)(0.0 + s * (double)p[i]);
    }
    for (uint32_t k = 1; k < np; k++) {
      const float* p = parts[k] + b;
      const double s = scales[k];
      for (size_t i = 0; i < len; i++) acc[i] = (float)((double)acc[i] + s * (double)p[i]);
    }
    memcpy(out + b, acc, len * sizeof(float));
  }
  free(parts);
  free(scales);
  return NULL;
}

static void adam_loop(float* w, const float* g, float* m, float* v, size_t n, double b1, double b2, double omb1,
                      double omb2, double c1, double c2, double lr, double eps) {
  for (size_t i = 0; i < n; i++) {
    const double gi = g[i];
    const double mi = (double)m[i] * b1 + gi * omb1;
    const double vi = (double)v[i] * b2 + gi * gi * omb2;
    m[i] = (float)mi;
    v[i] = (float)vi;
    /* The unrounded moments feed the update, as in the JS loop. */
    w[i] = (float)((double)w[i] - (lr * (mi / c1)) / (sqrt(vi / c2) + eps));
  }
}

/* adamStep(w, g, m, v, b1, b2, omb1, omb2, c1, c2, lr, eps): one Adam update in place. */
static napi_value adam_step(napi_env env, napi_callback_info info) {
  napi_value argv[12];
  if (!get_args(env, info, argv, 12, "adamStep")) return NULL;
  static const char* const names[4] = {"w", "g", "m", "v"};
  void* p[4];
  size_t len[4];
  for (int k = 0; k < 4; k++)
    if (!typed_arg(env, argv[k], napi_float32_array, &p[k], &len[k], "adamStep", names[k])) return NULL;
  if (len[1] != len[0] || len[2] != len[0] || len[3] != len[0])
    return fail(env, "gan_native.adamStep: weight, gradient and state sizes differ");
  for (int j = 0; j < 4; j++)
    for (int k = j + 1; k < 4; k++)
      if (overlaps(p[j], len[j] * 4, p[k], len[k] * 4))
        return fail(env, "gan_native.adamStep: w, g, m and v must not share memory");
  static const char* const hyper[8] = {"b1", "b2", "omb1", "omb2", "c1", "c2", "lr", "eps"};
  double h[8];
  for (int k = 0; k < 8; k++)
    if (!double_arg(env, argv[4 + k], &h[k], "adamStep", hyper[k])) return NULL;
  clean_upper();
  adam_loop((float*)p[0], (const float*)p[1], (float*)p[2], (float*)p[3], len[0], h[0], h[1], h[2], h[3], h[4], h[5],
            h[6], h[7]);
  return NULL;
}

/* allFinite(a): no NaN or infinity, i.e. no element with an all-ones exponent. */
static napi_value all_finite(napi_env env, napi_callback_info info) {
  napi_value argv[1];
  if (!get_args(env, info, argv, 1, "allFinite")) return NULL;
  void* d = NULL;
  size_t n = 0;
  if (!typed_arg(env, argv[0], napi_float32_array, &d, &n, "allFinite", "the argument")) return NULL;
  const uint32_t* u = (const uint32_t*)d;
  bool ok = true;
  clean_upper();
  /* Branch-free within a block so it vectorises; checked between blocks to stop early. */
  for (size_t b = 0; b < n && ok; b += 4096) {
    const size_t end = n - b < 4096 ? n : b + 4096;
    uint32_t bad = 0;
    for (size_t i = b; i < end; i++) bad |= (u[i] & 0x7f800000u) == 0x7f800000u;
    ok = bad == 0;
  }
  napi_value out;
  CHECK(env, napi_get_boolean(env, ok, &out));
  return out;
}

/*
 * Half bits -> float32 bits, as shared/codec.ts's table: every NaN becomes the canonical quiet NaN
 * 0x7fc00000 without sign or payload, because the table stores JS's NaN.
 */
static uint32_t half_bits_to_float(uint32_t h) {
  const uint32_t sign = (h & 0x8000u) << 16;
  const uint32_t e = (h >> 10) & 0x1fu;
  const uint32_t m = h & 0x3ffu;
  if (e == 0) {
    /* m * 2^-24: both factors exact in float32, so the product is too. */
    const float f = (float)m * 5.9604644775390625e-8f;
    uint32_t bits;
    memcpy(&bits, &f, 4);
    return sign | bits;
  }
  if (e == 31) return m ? 0x7fc00000u : sign | 0x7f800000u;
  return sign | ((e + 112u) << 23) | (m << 13);
}

/* A lookup beats computing the bits even branch-free and vectorised (1.0 against 2.1 ms per 1.46M). */
static uint32_t half_table[65536];

/* Module init runs in every worker thread that loads the addon; process-wide state is set once. */
static pthread_once_t globals_once = PTHREAD_ONCE_INIT;

static void init_globals(void) {
  for (uint32_t h = 0; h < 65536; h++) half_table[h] = half_bits_to_float(h);
#ifdef HAVE_ZEROUPPER
  __builtin_cpu_init();
  cpu_has_avx = __builtin_cpu_supports("avx");
#endif
}

/*
 * Float32 bits -> half bits, round to nearest even, as shared/codec.ts's toHalf (NaN keeps its sign
 * and becomes 0x7e00). Branch-free so the loop vectorises: both the normal and the subnormal
 * result are computed and one is picked. Normal: rebias the exponent and add 0xfff plus the lowest
 * kept bit, so a carry past bit 13 rounds to nearest even (up to infinity when it overflows).
 * Subnormal: adding 0.5f lines the half's 10 mantissa bits up at the bottom of the float and the
 * FPU's own round-to-nearest-even does the rounding (a subnormal float read as zero under DAZ
 * still gives 0, its correct result).
 */
static inline uint16_t float_bits_to_half(uint32_t bits) {
  const uint32_t sign = (bits >> 16) & 0x8000u;
  const int32_t x = (int32_t)(bits & 0x7fffffffu);
  float f;
  memcpy(&f, &x, 4);
  f += 0.5f;
  uint32_t fb;
  memcpy(&fb, &f, 4);
  const uint32_t sub = fb - 0x3f000000u;
  const uint32_t norm = ((uint32_t)x - (112u << 23) + 0xfffu + (((uint32_t)x >> 13) & 1u)) >> 13;
  uint32_t h = x < 0x38800000 ? sub : norm;
  h = x >= 0x47800000 ? (x > 0x7f800000 ? 0x7e00u : 0x7c00u) : h;
  return (uint16_t)(sign | h);
}

/* halfToFloat(src: Uint16Array, dst: Float32Array): src.length values; dst may be longer. */
static napi_value half_to_float(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, argv, 2, "halfToFloat")) return NULL;
  void *s = NULL, *d = NULL;
  size_t ns = 0, nd = 0;
  if (!typed_arg(env, argv[0], napi_uint16_array, &s, &ns, "halfToFloat", "src") ||
      !typed_arg(env, argv[1], napi_float32_array, &d, &nd, "halfToFloat", "dst"))
    return NULL;
  if (nd < ns) return fail(env, "gan_native.halfToFloat: dst is shorter than src");
  if (overlaps(s, ns * 2, d, ns * 4)) return fail(env, "gan_native.halfToFloat: src and dst overlap");
  const uint16_t* src = (const uint16_t*)s;
  uint32_t* dst = (uint32_t*)d;
  clean_upper();
  for (size_t i = 0; i < ns; i++) dst[i] = half_table[src[i]];
  return NULL;
}

/* floatToHalf(src: Float32Array, dst: Uint16Array): src.length values; dst may be longer. */
static napi_value float_to_half(napi_env env, napi_callback_info info) {
  napi_value argv[2];
  if (!get_args(env, info, argv, 2, "floatToHalf")) return NULL;
  void *s = NULL, *d = NULL;
  size_t ns = 0, nd = 0;
  if (!typed_arg(env, argv[0], napi_float32_array, &s, &ns, "floatToHalf", "src") ||
      !typed_arg(env, argv[1], napi_uint16_array, &d, &nd, "floatToHalf", "dst"))
    return NULL;
  if (nd < ns) return fail(env, "gan_native.floatToHalf: dst is shorter than src");
  if (overlaps(s, ns * 4, d, ns * 2)) return fail(env, "gan_native.floatToHalf: src and dst overlap");
  const uint32_t* src = (const uint32_t*)s;
  uint16_t* dst = (uint16_t*)d;
  clean_upper();
  for (size_t i = 0; i < ns; i++) dst[i] = float_bits_to_half(src[i]);
  return NULL;
}

static napi_value set_threads(napi_env env, napi_callback_info info) {
  size_t argc = 1;
  napi_value argv[1];
  CHECK(env, napi_get_cb_info(env, info, &argc, argv, NULL, NULL));
  int32_t n = 0;
  if (argc < 1 || napi_get_value_int32(env, argv[0], &n) != napi_ok || n < 1)
    return fail(env, "gan_native.setThreads: need a positive integer");
  openblas_set_num_threads(n);
  return NULL;
}

static napi_value get_threads(napi_env env, napi_callback_info info) {
  napi_value out;
  CHECK(env, napi_create_int32(env, openblas_get_num_threads(), &out));
  return out;
}

static napi_value get_config(napi_env env, napi_callback_info info) {
  napi_value out;
  const char* cfg = openblas_get_config();
  CHECK(env, napi_create_string_utf8(env, cfg ? cfg : "OpenBLAS", NAPI_AUTO_LENGTH, &out));
  return out;
}

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"gemm", NULL, gemm, NULL, NULL, NULL, napi_default, NULL},
      {"binary", NULL, binary, NULL, NULL, NULL, napi_default, NULL},
      {"unary", NULL, unary, NULL, NULL, NULL, napi_default, NULL},
      {"select", NULL, select_, NULL, NULL, NULL, napi_default, NULL},
      {"reduce", NULL, reduce, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"getThreads", NULL, get_threads, NULL, NULL, NULL, napi_default, NULL},
      {"config", NULL, get_config, NULL, NULL, NULL, napi_default, NULL},
      {"weightedSum", NULL, weighted_sum, NULL, NULL, NULL, napi_default, NULL},
      {"adamStep", NULL, adam_step, NULL, NULL, NULL, napi_default, NULL},
      {"allFinite", NULL, all_finite, NULL, NULL, NULL, napi_default, NULL},
      {"halfToFloat", NULL, half_to_float, NULL, NULL, NULL, napi_default, NULL},
      {"floatToHalf", NULL, float_to_half, NULL, NULL, NULL, napi_default, NULL},
  };
  pthread_once(&globals_once, init_globals);
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
