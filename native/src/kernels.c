/*
 * TensorFlow.js kernels that work in place on a wasm backend's heap (shared/backend/native-kernels.ts
 * registers them as the `native` backend).
 *
 * Every entry point takes the heap (the WebAssembly.Memory ArrayBuffer) and byte offsets into it,
 * so tensors are never copied between JS and C. The caller re-reads the buffer after any wasm
 * allocation because memory growth detaches the old one; nothing here keeps a pointer across calls.
 */
#include "kernels.h"

#include <math.h>
#include <string.h>

#include "args.h"
#include "gemm.h"

enum { ACT_LINEAR = 0, ACT_RELU = 1, ACT_RELU6 = 2, ACT_LEAKYRELU = 3, ACT_SIGMOID = 4, ACT_ELU = 5 };

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
napi_value kernel_gemm(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 15, "gemm")) return NULL;
  const Heap heap = arg_heap(&a, 0, "the heap");
  const int64_t batch = arg_int(&a, 1, "batch"), M = arg_int(&a, 2, "M"), N = arg_int(&a, 3, "N"), K = arg_int(&a, 4, "K");
  const int transA = arg_int(&a, 5, "transA") != 0, transB = arg_int(&a, 6, "transB") != 0;
  const int64_t aOff = arg_int(&a, 7, "aOff"), aStride = arg_int(&a, 8, "aStride");
  const int64_t bOff = arg_int(&a, 9, "bOff"), bStride = arg_int(&a, 10, "bStride");
  const int64_t cOff = arg_int(&a, 11, "cOff"), biasOff = arg_int(&a, 12, "biasOff");
  const int act = (int)arg_int(&a, 13, "act");
  const float alpha = (float)arg_num(&a, 14, "alpha");
  if (a.failed) return NULL;
  if (batch < 1 || M < 0 || N < 0 || K < 0 || aStride < 0 || bStride < 0 || M > INT32_MAX ||
      N > INT32_MAX || K > INT32_MAX)
    return args_fail(&a, "bad dimensions");
  const float* A = heap_f32(&a, heap, aOff, (batch - 1) * aStride + M * K, "A");
  const float* B = heap_f32(&a, heap, bOff, (batch - 1) * bStride + K * N, "B");
  float* C = heap_f32(&a, heap, cOff, batch * M * N, "C");
  const float* bias = biasOff < 0 ? NULL : heap_f32(&a, heap, biasOff, N, "the bias");
  if (a.failed) return NULL;
  if (act < ACT_LINEAR || act > ACT_ELU) return args_fail(&a, "unknown activation");

  const int lda = transA ? (int)M : (int)K;
  const int ldb = transB ? (int)K : (int)N;
  for (int64_t b = 0; b < batch; b++) {
    float* c = C + b * M * N;
    if (M > 0 && N > 0) gemm_f32(transA, transB, (int)M, (int)N, (int)K, A + b * aStride, lda, B + b * bStride, ldb, c, (int)N);
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
napi_value kernel_binary(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 8, "binary")) return NULL;
  const Heap heap = arg_heap(&a, 0, "the heap");
  const int op = (int)arg_int(&a, 1, "op");
  const int64_t aOff = arg_int(&a, 2, "aOff"), na = arg_int(&a, 3, "na"), bOff = arg_int(&a, 4, "bOff"), nb = arg_int(&a, 5, "nb");
  const int64_t oOff = arg_int(&a, 6, "outOff"), n = arg_int(&a, 7, "n");
  if (a.failed) return NULL;
  if (n < 0 || na < 1 || nb < 1 || (n > 0 && (n % na != 0 || n % nb != 0)) || (na != n && nb != n && na != 1 && nb != 1))
    return args_fail(&a, "sizes are not a tiling");
  const float* A = heap_f32(&a, heap, aOff, na, "a");
  const float* B = heap_f32(&a, heap, bOff, nb, "b");
  if (a.failed) return NULL;
  if (n == 0) return NULL;
  if (op >= BIN_GREATER) {
    uint8_t* O = heap_u8(&a, heap, oOff, n, "the output");
    if (!O) return NULL;
#define OUT_T uint8_t
    switch (op) {
      case BIN_GREATER: BIN_LOOP(x > y); break;
      case BIN_LESS: BIN_LOOP(x < y); break;
      case BIN_GREATER_EQUAL: BIN_LOOP(x >= y); break;
      case BIN_LESS_EQUAL: BIN_LOOP(x <= y); break;
      default: return args_fail(&a, "unknown op");
    }
#undef OUT_T
  } else {
    float* O = heap_f32(&a, heap, oOff, n, "the output");
    if (!O) return NULL;
#define OUT_T float
    switch (op) {
      case BIN_ADD: BIN_LOOP(x + y); break;
      case BIN_SUB: BIN_LOOP(x - y); break;
      case BIN_MUL: BIN_LOOP(x * y); break;
      case BIN_DIV: BIN_LOOP(x / y); break;
      case BIN_MAX: BIN_LOOP(x > y || x != x ? x : y); break;
      case BIN_MIN: BIN_LOOP(x < y || x != x ? x : y); break;
      default: return args_fail(&a, "unknown op");
    }
#undef OUT_T
  }
  return NULL;
}

enum { UN_LEAKYRELU = 0, UN_RELU = 1, UN_TANH = 2, UN_SIGMOID = 3, UN_SQUARE = 4, UN_NEG = 5, UN_EXP = 6,
       UN_RELU6 = 7, UN_ELU = 8 };

/* unary(heap, op, xOff, outOff, n, alpha) */
napi_value kernel_unary(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 6, "unary")) return NULL;
  const Heap heap = arg_heap(&a, 0, "the heap");
  const int op = (int)arg_int(&a, 1, "op");
  const int64_t xOff = arg_int(&a, 2, "xOff"), oOff = arg_int(&a, 3, "outOff"), n = arg_int(&a, 4, "n");
  const float alpha = (float)arg_num(&a, 5, "alpha");
  const float* X = heap_f32(&a, heap, xOff, n, "x");
  float* O = heap_f32(&a, heap, oOff, n, "the output");
  if (a.failed) return NULL;
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
    default: return args_fail(&a, "unknown op");
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
napi_value kernel_select(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 6, "select")) return NULL;
  const Heap heap = arg_heap(&a, 0, "the heap");
  const int64_t cOff = arg_int(&a, 1, "condOff"), tOff = arg_int(&a, 2, "tOff"), eOff = arg_int(&a, 3, "eOff");
  const int64_t oOff = arg_int(&a, 4, "outOff"), n = arg_int(&a, 5, "n");
  const uint8_t* C = heap_u8(&a, heap, cOff, n, "the condition");
  const float* T = heap_f32(&a, heap, tOff, n, "t");
  const float* E = heap_f32(&a, heap, eOff, n, "e");
  float* O = heap_f32(&a, heap, oOff, n, "the output");
  if (a.failed) return NULL;
  select_loop(C, (const uint32_t*)T, (const uint32_t*)E, (uint32_t*)O, n);
  return NULL;
}

/*
 * reduce(heap, op, xOff, outer, inner, leading, outOff): x viewed as outer x inner; leading != 0
 * reduces over the outer index (out has inner entries, e.g. a bias gradient summed over rows),
 * else over the inner one (out has outer entries). op 0 = sum, 1 = mean.
 */
napi_value kernel_reduce(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 7, "reduce")) return NULL;
  const Heap heap = arg_heap(&a, 0, "the heap");
  const int op = (int)arg_int(&a, 1, "op");
  const int64_t xOff = arg_int(&a, 2, "xOff"), outer = arg_int(&a, 3, "outer"), inner = arg_int(&a, 4, "inner");
  const int leading = arg_int(&a, 5, "leading") != 0;
  const int64_t oOff = arg_int(&a, 6, "outOff");
  if (a.failed) return NULL;
  if (outer < 0 || inner < 0) return args_fail(&a, "negative dimensions");
  const float* X = heap_f32(&a, heap, xOff, outer * inner, "x");
  float* O = heap_f32(&a, heap, oOff, leading ? inner : outer, "the output");
  if (a.failed) return NULL;
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

