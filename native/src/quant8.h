/* The 8-bit wire format's encoders and decoder (quant8.c; the JS reference is shared/numerics/wire-format.ts). */
#ifndef GAN_QUANT8_H
#define GAN_QUANT8_H

#include <node_api.h>

napi_value math_quantize8(napi_env env, napi_callback_info info);
napi_value math_quantize8_feedback(napi_env env, napi_callback_info info);
napi_value math_dequantize8(napi_env env, napi_callback_info info);
napi_value math_quantize_delta8(napi_env env, napi_callback_info info);

#endif
