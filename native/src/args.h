/*
 * The addon's one argument convention. Every entry point starts with args_init(), reads its
 * arguments with the arg_* getters, checks `a.failed` once, and reports problems with
 * args_fail(). A wrong JavaScript type (or too few arguments) throws a TypeError; a value the
 * function refuses (sizes, ranges, overlapping buffers, offsets outside the heap) a RangeError.
 * Every message starts with "gan_native.<function>:", and every error carries code E_NATIVE.
 */
#ifndef GAN_ARGS_H
#define GAN_ARGS_H

#include <node_api.h>
#include <stddef.h>
#include <stdint.h>

#define ARGS_MAX 16

typedef struct {
  napi_env env;
  const char* fn;
  size_t argc;
  napi_value argv[ARGS_MAX];
  /* An exception is pending: the getters after the first failure return zeros and do nothing. */
  int failed;
} Args;

/* A wasm heap (an ArrayBuffer) that tensors live in, addressed by byte offsets. */
typedef struct {
  uint8_t* bytes;
  size_t len;
} Heap;

/* Reads the call's arguments; throws a TypeError when fewer than `want` were passed. */
int args_init(Args* a, napi_env env, napi_callback_info info, size_t want, const char* fn);

int64_t arg_int(Args* a, size_t i, const char* what);
double arg_num(Args* a, size_t i, const char* what);
/* The ArrayBuffer at argument i. */
Heap arg_heap(Args* a, size_t i, const char* what);
/* The data of the typed array at argument i, which must be of `type`; its element count in *len. */
void* arg_typed(Args* a, size_t i, napi_typedarray_type type, size_t* len, const char* what);
/* The JavaScript array at argument i; its length in *len. */
napi_value arg_array(Args* a, size_t i, uint32_t* len, const char* what);
/* Element k of a JavaScript array, as a typed array of `type` (as arg_typed). */
void* arg_typed_element(Args* a, napi_value array, uint32_t k, napi_typedarray_type type, size_t* len, const char* what);
double arg_num_element(Args* a, napi_value array, uint32_t k, const char* what);

/* `count` floats at byte offset `off` of the heap, or NULL (and a RangeError) when out of range or misaligned. */
float* heap_f32(Args* a, Heap h, int64_t off, int64_t count, const char* what);
/* `count` bytes at byte offset `off`, or NULL (and a RangeError). */
uint8_t* heap_u8(Args* a, Heap h, int64_t off, int64_t count, const char* what);

/* Throws a RangeError "gan_native.<fn>: <msg>" (unless one is already pending) and returns NULL. */
napi_value args_fail(Args* a, const char* msg);
/* Throws the error behind a failed N-API call and returns NULL. */
napi_value napi_failed(napi_env env, const char* what);

/* Whether two byte ranges share memory. */
int ranges_overlap(const void* a, size_t abytes, const void* b, size_t bbytes);

#endif
