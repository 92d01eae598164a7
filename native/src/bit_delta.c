/*
 * Weights as the packed XOR of their bits with the version the receiver holds: float32 values
 * (the fp32 wire) or half bits (the 16-bit wire). shared/numerics/bit-delta.ts is the reference,
 * and says the layout: groups of 8 values, one width byte each, then each group's values in that
 * many bits. The same bytes as the JavaScript.
 */
#include "bit_delta.h"

#include <stdbool.h>
#include <stdint.h>
#include <string.h>

#include "args.h"

#if defined(__BYTE_ORDER__) && __BYTE_ORDER__ != __ORDER_LITTLE_ENDIAN__
#error "bit_delta.c writes little-endian words"
#endif

#define GROUP 8

static size_t groups_of(size_t n) {
  return (n + GROUP - 1) / GROUP;
}

/* Value i of a vector of 32-bit (wide) or 16-bit words. */
static inline uint32_t word_at(const void* a, int wide, size_t i) {
  return wide ? ((const uint32_t*)a)[i] : ((const uint16_t*)a)[i];
}

static inline void set_word(void* a, int wide, size_t i, uint32_t v) {
  if (wide) ((uint32_t*)a)[i] = v;
  else ((uint16_t*)a)[i] = (uint16_t)v;
}

static size_t pack(const void* x, const void* y, int wide, size_t n, uint8_t* out) {
  const size_t groups = groups_of(n);
  uint8_t* p = out + groups;
  for (size_t g = 0; g < groups; g++) {
    const size_t start = g * GROUP;
    uint32_t v[GROUP];
    uint32_t or = 0;
    if (start + GROUP <= n) {
      for (int j = 0; j < GROUP; j++) {
        v[j] = word_at(x, wide, start + j) ^ word_at(y, wide, start + j);
        or |= v[j];
      }
    } else {
      for (int j = 0; j < GROUP; j++) {
        v[j] = start + j < n ? word_at(x, wide, start + j) ^ word_at(y, wide, start + j) : 0;
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
        memcpy(p, &word, 4); /* little-endian: the byte order the frames' typed arrays assume too */
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
static int unpack(const uint8_t* in, size_t len, const void* y, int wide, void* out, size_t n) {
  const size_t groups = groups_of(n);
  if (len < groups) return 1;
  const int widest = wide ? 32 : 16;
  size_t total = groups;
  for (size_t g = 0; g < groups; g++) {
    if (in[g] > widest) return 2;
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
      for (int j = 0; j < GROUP; j++) set_word(out, wide, start + j, word_at(y, wide, start + j) ^ v[j]);
    } else {
      for (int j = 0; j < GROUP; j++) {
        if (start + j < n) set_word(out, wide, start + j, word_at(y, wide, start + j) ^ v[j]);
        else if (v[j] != 0) return 4;
      }
    }
  }
  return 0;
}

/* Float32Array (32-bit words) or Uint16Array (16-bit) at argument i: 1 for wide, 0 for narrow; otherwise -1 with a TypeError pending. */
static int words_kind(Args* a, size_t i, const char* what) {
  if (a->failed) return -1;
  napi_typedarray_type type;
  bool is = false;
  if (napi_is_typedarray(a->env, a->argv[i], &is) == napi_ok && is &&
      napi_get_typedarray_info(a->env, a->argv[i], &type, NULL, NULL, NULL, NULL) == napi_ok &&
      (type == napi_float32_array || type == napi_uint16_array)) {
    return type == napi_float32_array;
  }
  /* Neither: the getter throws its TypeError (it names Float32Array; a Uint16Array is taken too). */
  size_t n = 0;
  arg_typed(a, i, napi_float32_array, &n, what);
  return -1;
}

/* packDelta(w, base, out: Uint8Array): w and base both Float32Array or both Uint16Array; the bytes written. */
napi_value math_pack_delta(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "packDelta")) return NULL;
  const int wide = words_kind(&a, 0, "w") == 1;
  const napi_typedarray_type type = wide ? napi_float32_array : napi_uint16_array;
  size_t n = 0, nb = 0, no = 0;
  const void* w = arg_typed(&a, 0, type, &n, "w");
  const void* base = arg_typed(&a, 1, type, &nb, "base");
  uint8_t* out = arg_typed(&a, 2, napi_uint8_array, &no, "out");
  if (a.failed) return NULL;
  const size_t bytes = n * (wide ? 4 : 2);
  if (nb < n || no < groups_of(n) * 33) return args_fail(&a, "base or out too short for w");
  if (ranges_overlap(out, no, w, bytes) || ranges_overlap(out, no, base, bytes)) return args_fail(&a, "out overlaps w or base");
  const size_t used = pack(w, base, wide, n, out);
  napi_value r;
  if (napi_create_double(env, (double)used, &r) != napi_ok) return napi_failed(env, "napi_create_double");
  return r;
}

/* unpackDelta(packed: Uint8Array, base, dst): base and dst both Float32Array or both Uint16Array; 0, or a problem code. */
napi_value math_unpack_delta(napi_env env, napi_callback_info info) {
  Args a;
  if (!args_init(&a, env, info, 3, "unpackDelta")) return NULL;
  const int wide = words_kind(&a, 2, "dst") == 1;
  const napi_typedarray_type type = wide ? napi_float32_array : napi_uint16_array;
  size_t len = 0, nb = 0, n = 0;
  const uint8_t* in = arg_typed(&a, 0, napi_uint8_array, &len, "packed");
  const void* base = arg_typed(&a, 1, type, &nb, "base");
  void* dst = arg_typed(&a, 2, type, &n, "dst");
  if (a.failed) return NULL;
  if (nb < n) return args_fail(&a, "base too short for dst");
  if (ranges_overlap(in, len, dst, n * (wide ? 4 : 2))) return args_fail(&a, "packed overlaps dst");
  const int problem = unpack(in, len, base, wide, dst, n);
  napi_value r;
  if (napi_create_int32(env, problem, &r) != napi_ok) return napi_failed(env, "napi_create_int32");
  return r;
}
