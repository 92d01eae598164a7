/* The addon's argument convention; see args.h. */
#include "args.h"

#include <stdio.h>
#include <string.h>

static void throw_type(Args* a, const char* what, const char* expected) {
  if (a->failed) return;
  a->failed = 1;
  bool pending = false;
  napi_is_exception_pending(a->env, &pending);
  if (pending) return;
  char msg[200];
  snprintf(msg, sizeof msg, "gan_native.%s: %s must be %s", a->fn, what, expected);
  napi_throw_type_error(a->env, "E_NATIVE", msg);
}

napi_value args_fail(Args* a, const char* msg) {
  if (a->failed) return NULL;
  a->failed = 1;
  bool pending = false;
  napi_is_exception_pending(a->env, &pending);
  if (pending) return NULL;
  char full[240];
  snprintf(full, sizeof full, "gan_native.%s: %s", a->fn, msg);
  napi_throw_range_error(a->env, "E_NATIVE", full);
  return NULL;
}

napi_value napi_failed(napi_env env, const char* what) {
  bool pending = false;
  napi_is_exception_pending(env, &pending);
  if (pending) return NULL;
  const napi_extended_error_info* info = NULL;
  napi_get_last_error_info(env, &info);
  char msg[256];
  snprintf(msg, sizeof msg, "gan_native: %s failed: %s", what, info && info->error_message ? info->error_message : "unknown error");
  napi_throw_error(env, "E_NATIVE", msg);
  return NULL;
}

int args_init(Args* a, napi_env env, napi_callback_info info, size_t want, const char* fn) {
  a->env = env;
  a->fn = fn;
  a->argc = ARGS_MAX;
  a->failed = 0;
  if (napi_get_cb_info(env, info, &a->argc, a->argv, NULL, NULL) != napi_ok) {
    a->failed = 1;
    napi_failed(env, "napi_get_cb_info");
    return 0;
  }
  if (a->argc < want) {
    char expected[96];
    snprintf(expected, sizeof expected, "given (%zu expected, %zu passed)", want, a->argc);
    throw_type(a, "every argument", expected);
    return 0;
  }
  return 1;
}

int64_t arg_int(Args* a, size_t i, const char* what) {
  int64_t v = 0;
  if (a->failed) return 0;
  if (napi_get_value_int64(a->env, a->argv[i], &v) != napi_ok) throw_type(a, what, "a number");
  return v;
}

double arg_num(Args* a, size_t i, const char* what) {
  double v = 0;
  if (a->failed) return 0;
  if (napi_get_value_double(a->env, a->argv[i], &v) != napi_ok) throw_type(a, what, "a number");
  return v;
}

Heap arg_heap(Args* a, size_t i, const char* what) {
  Heap h = {NULL, 0};
  if (a->failed) return h;
  bool is_ab = false;
  void* data = NULL;
  if (napi_is_arraybuffer(a->env, a->argv[i], &is_ab) != napi_ok || !is_ab ||
      napi_get_arraybuffer_info(a->env, a->argv[i], &data, &h.len) != napi_ok) {
    throw_type(a, what, "an ArrayBuffer (the wasm heap)");
    h.len = 0;
    return h;
  }
  h.bytes = (uint8_t*)data;
  return h;
}

static const char* type_name(napi_typedarray_type t) {
  switch (t) {
    case napi_float32_array: return "a Float32Array";
    case napi_uint16_array: return "a Uint16Array";
    case napi_uint8_array: return "a Uint8Array";
    case napi_float64_array: return "a Float64Array";
    default: return "a typed array";
  }
}

static void* typed_value(Args* a, napi_value v, napi_typedarray_type want, size_t* len, const char* what) {
  bool is_ta = false;
  napi_typedarray_type type;
  void* data = NULL;
  *len = 0;
  if (a->failed) return NULL;
  if (napi_is_typedarray(a->env, v, &is_ta) != napi_ok || !is_ta ||
      napi_get_typedarray_info(a->env, v, &type, len, &data, NULL, NULL) != napi_ok || type != want) {
    *len = 0;
    throw_type(a, what, type_name(want));
    return NULL;
  }
  return data;
}

void* arg_typed(Args* a, size_t i, napi_typedarray_type type, size_t* len, const char* what) {
  return typed_value(a, a->argv[i], type, len, what);
}

napi_value arg_array(Args* a, size_t i, uint32_t* len, const char* what) {
  bool is_arr = false;
  *len = 0;
  if (a->failed) return NULL;
  if (napi_is_array(a->env, a->argv[i], &is_arr) != napi_ok || !is_arr || napi_get_array_length(a->env, a->argv[i], len) != napi_ok) {
    *len = 0;
    throw_type(a, what, "an array");
    return NULL;
  }
  return a->argv[i];
}

void* arg_typed_element(Args* a, napi_value array, uint32_t k, napi_typedarray_type type, size_t* len, const char* what) {
  napi_value el;
  *len = 0;
  if (a->failed) return NULL;
  if (napi_get_element(a->env, array, k, &el) != napi_ok) {
    throw_type(a, what, type_name(type));
    return NULL;
  }
  return typed_value(a, el, type, len, what);
}

double arg_num_element(Args* a, napi_value array, uint32_t k, const char* what) {
  napi_value el;
  double v = 0;
  if (a->failed) return 0;
  if (napi_get_element(a->env, array, k, &el) != napi_ok || napi_get_value_double(a->env, el, &v) != napi_ok) throw_type(a, what, "a number");
  return v;
}

float* heap_f32(Args* a, Heap h, int64_t off, int64_t count, const char* what) {
  if (a->failed) return NULL;
  if (off < 0 || count < 0 || (off & 3) != 0 || (uint64_t)off + (uint64_t)count * 4u > h.len) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s lies outside the heap", what);
    args_fail(a, msg);
    return NULL;
  }
  return (float*)(h.bytes + off);
}

uint8_t* heap_u8(Args* a, Heap h, int64_t off, int64_t count, const char* what) {
  if (a->failed) return NULL;
  if (off < 0 || count < 0 || (uint64_t)off + (uint64_t)count > h.len) {
    char msg[160];
    snprintf(msg, sizeof msg, "%s lies outside the heap", what);
    args_fail(a, msg);
    return NULL;
  }
  return h.bytes + off;
}

int ranges_overlap(const void* a, size_t abytes, const void* b, size_t bbytes) {
  const uintptr_t pa = (uintptr_t)a, pb = (uintptr_t)b;
  return abytes > 0 && bbytes > 0 && pa < pb + bbytes && pb < pa + abytes;
}
