/*
 * A few persistent helper threads (one per core beyond the first, at most POOL_MAX_HELPERS) for
 * the elementwise loops of array_math.c. A call cuts its range into blocks that the calling thread
 * and the helpers take from an atomic counter: a helper that starts late takes fewer blocks, or
 * none, and the caller waits only for blocks already taken. Threads created per call (what Adam
 * did before) were often placed by the scheduler where they started after the caller had done
 * most of the work: on the 2-core machine a step of 1.46 M values after a few milliseconds of idle
 * took 4.7 ms, as on one thread, against 2.3 back to back.
 *
 * Memory order: the job's fields are written while no helper is inside a job (g_busy is 0 and the
 * job is closed), then published by opening the job; a helper counts itself in g_busy before it
 * looks at g_open, so the caller, which closes the job and then waits for g_busy to reach 0,
 * never returns while a helper still reads the job or writes its results. A helper preempted
 * between the two holds the caller until it runs again (the price of not joining threads).
 * Helpers are not carried across fork(): this process forks only to exec.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <stdbool.h>
#include <unistd.h>

#define POOL_MAX_HELPERS 3

static pthread_mutex_t g_call = PTHREAD_MUTEX_INITIALIZER; /* one call uses the helpers at a time */
static pthread_mutex_t g_mu = PTHREAD_MUTEX_INITIALIZER;   /* guards g_gen */
static pthread_cond_t g_cv = PTHREAD_COND_INITIALIZER;
static unsigned long g_gen = 0;                            /* bumped once per job */
static int g_helpers = -1;                                 /* started helpers; -1 before the first call */

static pool_fn g_fn;
static void* g_ctx;
static size_t g_n, g_block;
static atomic_size_t g_next;
static atomic_int g_open;
static atomic_int g_busy;

static void take_blocks(void) {
  for (;;) {
    const size_t b = atomic_fetch_add(&g_next, g_block);
    if (b >= g_n) return;
    g_fn(g_ctx, b, g_n - b < g_block ? g_n : b + g_block);
  }
}

static void* helper(void* arg) {
  (void)arg;
  unsigned long seen = 0;
  for (;;) {
    pthread_mutex_lock(&g_mu);
    while (g_gen == seen) pthread_cond_wait(&g_cv, &g_mu);
    seen = g_gen;
    pthread_mutex_unlock(&g_mu);
    atomic_fetch_add(&g_busy, 1);
    if (atomic_load(&g_open)) take_blocks();
    atomic_fetch_sub(&g_busy, 1);
  }
  return NULL;
}

static void start_helpers(void) {
  const long cores = sysconf(_SC_NPROCESSORS_ONLN);
  const int want = cores <= 1 ? 0 : cores - 1 < POOL_MAX_HELPERS ? (int)cores - 1 : POOL_MAX_HELPERS;
  pthread_attr_t attr;
  g_helpers = 0;
  if (pthread_attr_init(&attr) != 0) return;
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  for (int i = 0; i < want; i++) {
    pthread_t tid;
    if (pthread_create(&tid, &attr, helper, NULL) == 0) g_helpers++;
  }
  pthread_attr_destroy(&attr);
}

static void alone(pool_fn fn, void* ctx, size_t n, size_t block) {
  for (size_t b = 0; b < n; b += block) fn(ctx, b, n - b < block ? n : b + block);
}

void pool_run(pool_fn fn, void* ctx, size_t n, size_t block) {
  if (block == 0) block = n ? n : 1;
  if (n <= block || pthread_mutex_trylock(&g_call) != 0) {
    alone(fn, ctx, n, block);
    return;
  }
  if (g_helpers < 0) start_helpers();
  if (g_helpers == 0) {
    pthread_mutex_unlock(&g_call);
    alone(fn, ctx, n, block);
    return;
  }
  g_fn = fn;
  g_ctx = ctx;
  g_n = n;
  g_block = block;
  atomic_store(&g_next, 0);
  atomic_store(&g_open, 1);
  pthread_mutex_lock(&g_mu);
  g_gen++;
  pthread_cond_broadcast(&g_cv);
  pthread_mutex_unlock(&g_mu);
  take_blocks();
  atomic_store(&g_open, 0);
  /* Only helpers inside this job are waited for, each for at most the block it took. */
  while (atomic_load(&g_busy) > 0) sched_yield();
  pthread_mutex_unlock(&g_call);
}
