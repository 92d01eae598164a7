/* The coordinator's arithmetic on plain typed arrays (array_math.c, array_math_half.c). */
#ifndef GAN_ARRAY_MATH_H
#define GAN_ARRAY_MATH_H

#include <node_api.h>

/* Builds the half-float table and reads the CPU's features; once per process, before any call. */
void array_math_init(void);

/* weightedSum(out: Float32Array, parts: Float32Array[], scales: number[]) */
napi_value math_weighted_sum(napi_env env, napi_callback_info info);
/* adamStep(w, g, m, v: Float32Array, b1, b2, omb1, omb2, c1, c2, lr, eps: number) */
napi_value math_adam_step(napi_env env, napi_callback_info info);
/* emaUpdate(avg, w: Float32Array, d, e: number): avg = d * avg + e * w */
napi_value math_ema_update(napi_env env, napi_callback_info info);
/* magnitude(a: Float32Array, out: Float64Array): largest |a[i]| and the sum of squares */
napi_value math_magnitude(napi_env env, napi_callback_info info);
/* allFinite(a: Float32Array): boolean */
napi_value math_all_finite(napi_env env, napi_callback_info info);
/* halfToFloat(src: Uint16Array, dst: Float32Array) */
napi_value math_half_to_float(napi_env env, napi_callback_info info);
/* floatToHalf(src: Float32Array, dst: Uint16Array) */
napi_value math_float_to_half(napi_env env, napi_callback_info info);

#endif
