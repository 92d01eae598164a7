/* TensorFlow.js kernels on a wasm heap (kernels.c): the addon's tfjs-facing entry points. */
#ifndef GAN_KERNELS_H
#define GAN_KERNELS_H

#include <node_api.h>

/* gemm(heap, batch, M, N, K, transA, transB, aOff, aStride, bOff, bStride, cOff, biasOff, act, alpha) */
napi_value kernel_gemm(napi_env env, napi_callback_info info);
/* binary(heap, op, aOff, na, bOff, nb, outOff, n) */
napi_value kernel_binary(napi_env env, napi_callback_info info);
/* unary(heap, op, xOff, outOff, n, alpha) */
napi_value kernel_unary(napi_env env, napi_callback_info info);
/* select(heap, condOff, tOff, eOff, outOff, n) */
napi_value kernel_select(napi_env env, napi_callback_info info);
/* reduce(heap, op, xOff, outer, inner, leading, outOff) */
napi_value kernel_reduce(napi_env env, napi_callback_info info);

#endif
