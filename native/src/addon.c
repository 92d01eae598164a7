/*
 * The gan_native addon's entry: registers the functions of kernels.c (TensorFlow.js kernels on a
 * wasm heap) and array_math.c (the coordinator's arithmetic), and the matrix-product settings
 * (gemm.h: the built-in GEMM or OpenBLAS, whichever the build chose), bit_delta.c (exact weights
 * as packed XOR deltas) and shm.c (files mapped into memory, for the regions a coordinator shares
 * with the workers on its host).
 */
#include <node_api.h>
#include <pthread.h>

#include "args.h"
#include "array_math.h"
#include "bit_delta.h"
#include "gemm.h"
#include "kernels.h"
#include "quant8.h"
#include "shm.h"

/* setThreads(n): compute threads of later matrix products. */
static napi_value set_threads(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 1, "setThreads")) return NULL;
  const int64_t n = arg_int(&a, 0, "n");
  if (a.failed) return NULL;
  if (n < 1 || n > 1024) return args_fail(&a, "need a whole number of threads from 1 to 1024");
  gemm_set_threads((int)n);
  return NULL;
}

static napi_value get_threads(napi_env env, napi_callback_info info) {
  napi_value out;
  if (napi_create_int32(env, gemm_get_threads(), &out) != napi_ok) return napi_failed(env, "napi_create_int32");
  return out;
}

/* config(): which matrix-product library runs, and on what, e.g. "OpenBLAS 0.3.21 ... Haswell". */
static napi_value get_config(napi_env env, napi_callback_info info) {
  napi_value out;
  if (napi_create_string_utf8(env, gemm_describe(), NAPI_AUTO_LENGTH, &out) != napi_ok) return napi_failed(env, "napi_create_string_utf8");
  return out;
}

/* Module init runs in every worker thread that loads the addon; process-wide state is set once. */
static pthread_once_t globals_once = PTHREAD_ONCE_INIT;

static napi_value init(napi_env env, napi_value exports) {
  const napi_property_descriptor props[] = {
      {"gemm", NULL, kernel_gemm, NULL, NULL, NULL, napi_default, NULL},
      {"binary", NULL, kernel_binary, NULL, NULL, NULL, napi_default, NULL},
      {"unary", NULL, kernel_unary, NULL, NULL, NULL, napi_default, NULL},
      {"select", NULL, kernel_select, NULL, NULL, NULL, napi_default, NULL},
      {"reduce", NULL, kernel_reduce, NULL, NULL, NULL, napi_default, NULL},
      {"setThreads", NULL, set_threads, NULL, NULL, NULL, napi_default, NULL},
      {"getThreads", NULL, get_threads, NULL, NULL, NULL, napi_default, NULL},
      {"config", NULL, get_config, NULL, NULL, NULL, napi_default, NULL},
      {"weightedSum", NULL, math_weighted_sum, NULL, NULL, NULL, napi_default, NULL},
      {"adamStep", NULL, math_adam_step, NULL, NULL, NULL, napi_default, NULL},
      {"allFinite", NULL, math_all_finite, NULL, NULL, NULL, napi_default, NULL},
      {"magnitude", NULL, math_magnitude, NULL, NULL, NULL, napi_default, NULL},
      {"emaUpdate", NULL, math_ema_update, NULL, NULL, NULL, napi_default, NULL},
      {"halfToFloat", NULL, math_half_to_float, NULL, NULL, NULL, napi_default, NULL},
      {"floatToHalf", NULL, math_float_to_half, NULL, NULL, NULL, napi_default, NULL},
      {"quantize8", NULL, math_quantize8, NULL, NULL, NULL, napi_default, NULL},
      {"quantize8Feedback", NULL, math_quantize8_feedback, NULL, NULL, NULL, napi_default, NULL},
      {"dequantize8", NULL, math_dequantize8, NULL, NULL, NULL, napi_default, NULL},
      {"quantizeDelta8", NULL, math_quantize_delta8, NULL, NULL, NULL, napi_default, NULL},
      {"packDelta", NULL, math_pack_delta, NULL, NULL, NULL, napi_default, NULL},
      {"unpackDelta", NULL, math_unpack_delta, NULL, NULL, NULL, napi_default, NULL},
      {"mapFile", NULL, shm_map_file, NULL, NULL, NULL, napi_default, NULL},
  };
  pthread_once(&globals_once, array_math_init);
  if (napi_define_properties(env, exports, sizeof props / sizeof props[0], props) != napi_ok) return NULL;
  return exports;
}

NAPI_MODULE(NODE_GYP_MODULE_NAME, init)
