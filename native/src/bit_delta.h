/* Exact fp32 weights as packed XOR deltas (bit_delta.c; the JS reference is shared/numerics/bit-delta.ts). */
#ifndef GAN_BIT_DELTA_H
#define GAN_BIT_DELTA_H

#include <node_api.h>

napi_value math_pack_delta(napi_env env, napi_callback_info info);
napi_value math_unpack_delta(napi_env env, napi_callback_info info);

#endif
