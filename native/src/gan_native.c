/*
 * OpenBLAS kernels that work in place on a tfjs wasm backend's heap.
 *
 * Every entry point takes the heap (the WebAssembly.Memory ArrayBuffer) and byte offsets into it,
 * so tensors are never copied between JS and C. The caller re-reads the buffer after any wasm
 * allocation because memory growth detaches the old one; nothing here keeps a pointer across calls.
 */
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

#include <cblas.h>
#include <node_api.h>

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
  };
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
