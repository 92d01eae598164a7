/* Persistent helper threads for the elementwise loops of array_math.c (pool.c). */
#ifndef GAN_POOL_H
#define GAN_POOL_H

#include <stddef.h>

/* Work on elements [begin, end) of a call's range. */
typedef void (*pool_fn)(void* ctx, size_t begin, size_t end);

/*
 * fn over [0, n) in blocks of `block` elements, on the calling thread and the helpers that are
 * awake to take blocks; returns when every block is done. Blocks may run in any order and on any
 * thread, so fn must be elementwise. A call made while another thread's call runs does its blocks
 * alone.
 */
void pool_run(pool_fn fn, void* ctx, size_t n, size_t block);

#endif
