/*
 * Exact fp32 weights as the packed XOR of their bits with the version the receiver holds
 * (shared/numerics/bit-delta.ts is the reference, and says the layout): groups of 8 values, one
 * width byte each, then each group's values in that many bits. The same bytes as the JavaScript.
 */
#include "bit_delta.h"

#include <stdint.h>
#include <string.h>

#include "args.h"

#define GROUP 8

static size_t groups_of(size_t n) {
  return (n + GROUP - 1) / GROUP;
}

static size_t pack(const uint32_t* x, const uint32_t* y, size_t n, uint8_t* out) {
  const size_t groups = groups_of(n);
  uint8_t* p = out + groups;
  for (size_t g = 0; g < groups; g++) {
    const size_t start = g * GROUP;
    uint32_t v[GROUP];
    uint32_t or = 0;
    if (start + GROUP <= n) {
      for (int j = 0; j < GROUP; j++) {
        v[j] = x[start + j] ^ y[start + j];
        or |= v[j];
      }
    } else {
      for (int j = 0; j < GROUP; j++) {
        v[j] = start + j < n ? x[start + j] ^ y[start + j] : 0;
        or |= v[j];
      }
    }
    const int b = or ? 32 - __builtin_clz(or) : 0;
    out[g] = (uint8_t)b;
    if (b == 0) continue;
    uint64_t acc = 0;
    int bits = 0;
    for (int j = 0; j < GROUP; j++) {
      acc |= (uint64_t)v[j] << bits;
      bits += b;
      if (bits >= 32) {
        const uint32_t word = (uint32_t)acc;
        memcpy(p, &word, 4); /* little-endian hosts only (x86-64, arm64) */
        p += 4;
        acc >>= 32;
        bits -= 32;
      }
    }
    for (; bits > 0; bits -= 8) {
      *p++ = (uint8_t)acc;
      acc >>= 8;
    }
  }
  return (size_t)(p - out);
}

/* 0, or unpackDelta's problem code (bit-delta.ts). */
static int unpack(const uint8_t* in, size_t len, const uint32_t* y, uint32_t* out, size_t n) {
  const size_t groups = groups_of(n);
  if (len < groups) return 1;
  size_t total = groups;
  for (size_t g = 0; g < groups; g++) {
    if (in[g] > 32) return 2;
    total += in[g];
  }
  if (total != len) return 3;
  const uint8_t* p = in + groups;
  for (size_t g = 0; g < groups; g++) {
    const int b = in[g];
    const size_t start = g * GROUP;
    const uint64_t mask = ((uint64_t)1 << b) - 1;
    uint64_t acc = 0;
    int bits = 0;
    uint32_t v[GROUP];
    for (int j = 0; j < GROUP; j++) {
      while (bits < b) {
        acc |= (uint64_t)*p++ << bits;
        bits += 8;
      }
      v[j] = (uint32_t)(acc & mask);
      acc >>= b;
      bits -= b;
    }
    if (start + GROUP <= n) {
      for (int j = 0; j < GROUP; j++) out[start + j] = y[start + j] ^ v[j];
    } else {
      for (int j = 0; j < GROUP; j++) {
        if (start + j < n) out[start + j] = y[start + j] ^ v[j];
        else if (v[j] != 0) return 4;
      }
    }
  }
  return 0;
}

/* packDelta(w: Float32Array, base: Float32Array, out: Uint8Array): the bytes written. */
napi_value math_pack_delta(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "packDelta")) return NULL;
  size_t n = 0, nb = 0, no = 0;
  const float* w = arg_typed(&a, 0, napi_float32_array, &n, "w");
  const float* base = arg_typed(&a, 1, napi_float32_array, &nb, "base");
  uint8_t* out = arg_typed(&a, 2, napi_uint8_array, &no, "out");
  if (a.failed) return NULL;
  if (nb < n || no < groups_of(n) * 33) return args_fail(&a, "base or out too short for w");
  if (ranges_overlap(out, no, w, n * 4) || ranges_overlap(out, no, base, n * 4)) return args_fail(&a, "out overlaps w or base");
  const size_t used = pack((const uint32_t*)w, (const uint32_t*)base, n, out);
  napi_value r;
  if (napi_create_double(env, (double)used, &r) != napi_ok) return napi_failed(env, "napi_create_double");
  return r;
}

/* unpackDelta(packed: Uint8Array, base: Float32Array, dst: Float32Array): 0, or a problem code. */
napi_value math_unpack_delta(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "unpackDelta")) return NULL;
  size_t len = 0, nb = 0, n = 0;
  const uint8_t* in = arg_typed(&a, 0, napi_uint8_array, &len, "packed");
  const float* base = arg_typed(&a, 1, napi_float32_array, &nb, "base");
  float* dst = arg_typed(&a, 2, napi_float32_array, &n, "dst");
  if (a.failed) return NULL;
  if (nb < n) return args_fail(&a, "base too short for dst");
  if (ranges_overlap(in, len, dst, n * 4)) return args_fail(&a, "packed overlaps dst");
  const int problem = unpack(in, len, (const uint32_t*)base, (uint32_t*)dst, n);
  napi_value r;
  if (napi_create_int32(env, problem, &r) != napi_ok) return napi_failed(env, "napi_create_int32");
  return r;
}
