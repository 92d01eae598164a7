/*
 * gemm.c - self-contained single-precision matrix product, a drop-in for the cblas_sgemm calls of
 * the gan_native addon (row-major, alpha = 1, beta = 0). See gemm.h for the interface.
 *
 * Build: cc -O3 -std=c11 -ffp-contract=off -fno-trapping-math -fno-math-errno -fPIC -c gemm.c gemm_blocked.c gemm_kernels.c \
 *          gemm_kernels_avx512.c gemm_kernels_avx2.c gemm_kernels_portable.c
 * (no -march: the x86-64 kernels carry their own target attributes and are picked at run time).
 * This file drives the threads and holds the public interface; gemm_blocked.c does the product on one
 * thread (blocking, packing order); gemm_kernels.c and gemm_kernels_<isa>.c (one kernel set per
 * instruction set) hold what the CPU runs.
 *
 * Layout (the usual Goto/BLIS scheme):
 *   for each NC-wide column block of C
 *     for each KC-deep slice of K:   pack op(B)[KC x NC] into NR-wide strips (zero padded)
 *       for each MC-tall row block:  pack op(A)[MC x KC] into MR-tall panels
 *         for each NR strip, for each MR panel: micro-kernel C[MR x NR] (+)= Ap * Bp
 * Packing absorbs both transposes, so one micro-kernel serves all four cases. The micro-kernels
 * keep the whole MR x NR tile in registers, broadcast A and load B vectors; edge tiles use
 * kernels specialised on the row count and masked loads/stores on the last column vector, so
 * no work is done for padding rows and nothing outside C is touched.
 *
 * Threads (gemm_set_threads > 1, products of at least GEMM_MT_MIN_FMA multiply-adds): C is cut
 * into a few chunks of columns (or of rows, whichever side is longer) per thread, handed out
 * from an atomic counter. Each thread packs the operand shared by all chunks into its own buffer
 * once, then packs and multiplies chunk after chunk, so a thread whose core is busy with another
 * process just takes fewer chunks. Helper threads live in a small pool and sleep on a condition
 * variable between calls; the caller works too, and waits for the helpers' last chunks by
 * polling for at most GEMM_SPIN_US microseconds before it sleeps as well.
 *
 * Packing buffers are kept per thread and only ever grown (no allocation per call once warm).
 */
#if !defined(_POSIX_C_SOURCE) && !defined(_GNU_SOURCE) && !defined(__APPLE__)
#define _POSIX_C_SOURCE 200809L
#endif

#include "gemm.h"
#include "gemm_blocked.h"

#include <pthread.h>
#include <signal.h>
#include <stdatomic.h>
#include <stddef.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static const arch_t* g_arch;
static char g_name[64];

static void choose_arch(void) {
  g_arch = gemm_arch();
  snprintf(g_name, sizeof g_name, "built-in GEMM (%s, %dx%d)", g_arch->name, g_arch->mr, g_arch->nr);
}

/* ------------------------------------------------------------------------------------------ */
/* Threads                                                                                     */
/* ------------------------------------------------------------------------------------------ */
#define MAX_THREADS 64
#ifndef GEMM_CHUNKS
#define GEMM_CHUNKS 3 /* chunks per thread */
#endif
/* Products below this many multiply-adds run on the calling thread alone (waking a helper costs
   some microseconds; see native/tools/bench-gemm.c). */
#ifndef GEMM_MT_MIN_FMA
#define GEMM_MT_MIN_FMA (1 << 21)
#endif
/* Largest operand (in floats) that each thread packs whole before taking chunks; above it each
   chunk is done as a product of its own. */
#ifndef GEMM_PREPACK_MAX
#define GEMM_PREPACK_MAX (4 << 20)
#endif

/* A multi-threaded product: C is cut into chunks of columns (split_n) or rows, handed out one at a
   time from an atomic counter, so a thread that runs late (its core busy with another process)
   simply takes fewer chunks. Each thread first packs the operand that all chunks share (op(A)
   for column chunks, op(B) for row chunks) into its own buffer, then per chunk packs only the
   chunk's part of the other operand. */
typedef struct {
  int tA, tB, M, N, K;
  const float* A;
  const float* B;
  float* C;
  idx_t lda, ldb, ldc;
  int split_n, chunk, nchunks, prepack;
  atomic_int next;
} job_t;

typedef struct {
  pthread_t tid;
  pthread_mutex_t mu;
  pthread_cond_t cv;
  int go;
} worker_t;

static pthread_mutex_t g_call_mu = PTHREAD_MUTEX_INITIALIZER; /* serialises calls */
static pthread_mutex_t g_done_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_cond_t g_done_cv = PTHREAD_COND_INITIALIZER;
static pthread_once_t g_once = PTHREAD_ONCE_INIT;
static int g_threads = 1;   /* requested */
static int g_nworkers = 0;  /* helpers started: worker i (1..g_nworkers) uses g_bufs[i] */
static atomic_int g_pending; /* helpers still working on the current job */
static job_t* g_job;
static worker_t g_workers[MAX_THREADS];
static bufs_t g_bufs[MAX_THREADS];

static void run_part(job_t* j, int p) {
  const arch_t* ar = g_arch;
  bufs_t* buf = &g_bufs[p];
  int c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed);
  if (c >= j->nchunks) return; /* woke up too late: nothing left, pack nothing */
  const int M = j->M, N = j->N, K = j->K, kc = gemm_k_slice(ar, K);
  if (!j->prepack) {
    do {
      if (j->split_n) {
        const int c0 = c * j->chunk, w = imin(j->chunk, N - c0);
        const float* B = j->tB ? j->B + c0 * j->ldb : j->B + c0;
        gemm_serial(ar, buf, j->tA, j->tB, M, w, K, j->A, j->lda, B, j->ldb, j->C + c0, j->ldc);
      } else {
        const int r0 = c * j->chunk, h = imin(j->chunk, M - r0);
        const float* A = j->tA ? j->A + r0 : j->A + r0 * j->lda;
        gemm_serial(ar, buf, j->tA, j->tB, h, N, K, A, j->lda, j->B, j->ldb, j->C + r0 * j->ldc, j->ldc);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
    return;
  }
  if (j->split_n) {
    const idx_t Mr = round_up(M, ar->mr);
    float* Ap = gemm_grow(&buf->a, &buf->acap, (size_t)Mr * K);
    float* Bp = gemm_grow(&buf->b, &buf->bcap, (size_t)round_up(j->chunk, ar->nr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) gemm_pack_a(ar, j->tA, j->A, j->lda, 0, M, k0, imin(kc, K - k0), Ap + Mr * k0);
    do {
      const int c0 = c * j->chunk, w = imin(j->chunk, N - c0);
      if (!Ap || !Bp) {
        const float* B = j->tB ? j->B + c0 * j->ldb : j->B + c0;
        gemm_naive(j->tA, j->tB, M, w, K, j->A, j->lda, B, j->ldb, j->C + c0, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        gemm_pack_b(ar, j->tB, j->B, j->ldb, c0, w, k0, kcur, Bp);
        gemm_macro_kernel(ar, M, w, kcur, Ap + Mr * k0, Bp, j->C + c0, j->ldc, k0 > 0);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
  } else {
    const idx_t Nr = round_up(N, ar->nr);
    float* Bp = gemm_grow(&buf->b, &buf->bcap, (size_t)Nr * K);
    float* Ap = gemm_grow(&buf->a, &buf->acap, (size_t)round_up(j->chunk, ar->mr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) gemm_pack_b(ar, j->tB, j->B, j->ldb, 0, N, k0, imin(kc, K - k0), Bp + Nr * k0);
    do {
      const int r0 = c * j->chunk, h = imin(j->chunk, M - r0);
      if (!Ap || !Bp) {
        const float* A = j->tA ? j->A + r0 : j->A + r0 * j->lda;
        gemm_naive(j->tA, j->tB, h, N, K, A, j->lda, j->B, j->ldb, j->C + r0 * j->ldc, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        gemm_pack_a(ar, j->tA, j->A, j->lda, r0, h, k0, kcur, Ap);
        gemm_macro_kernel(ar, h, N, kcur, Ap, Bp + Nr * k0, j->C + r0 * j->ldc, j->ldc, k0 > 0);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
  }
}

static void* worker_main(void* arg) {
  const int id = (int)(intptr_t)arg;
  worker_t* w = &g_workers[id];
  for (;;) {
    pthread_mutex_lock(&w->mu);
    while (!w->go) pthread_cond_wait(&w->cv, &w->mu);
    w->go = 0;
    pthread_mutex_unlock(&w->mu);
    run_part(g_job, id);
    pthread_mutex_lock(&g_done_mu);
    if (atomic_fetch_sub_explicit(&g_pending, 1, memory_order_acq_rel) == 1) pthread_cond_signal(&g_done_cv);
    pthread_mutex_unlock(&g_done_mu);
  }
  return NULL;
}

/* Starts helpers 1..n-1 that are not running yet; returns how many parts can run (>= 1). */
static int ensure_workers(int n) {
  if (n > MAX_THREADS) n = MAX_THREADS;
  if (g_nworkers + 1 >= n) return n;
  sigset_t all, old;
  sigfillset(&all);
  pthread_sigmask(SIG_SETMASK, &all, &old); /* helpers inherit a full mask: signals go elsewhere */
  pthread_attr_t attr;
  pthread_attr_init(&attr);
  pthread_attr_setdetachstate(&attr, PTHREAD_CREATE_DETACHED);
  pthread_attr_setstacksize(&attr, 1 << 20);
  while (g_nworkers + 1 < n) {
    const int id = g_nworkers + 1;
    worker_t* w = &g_workers[id];
    pthread_mutex_init(&w->mu, NULL);
    pthread_cond_init(&w->cv, NULL);
    w->go = 0;
    if (pthread_create(&w->tid, &attr, worker_main, (void*)(intptr_t)id) != 0) {
      pthread_cond_destroy(&w->cv);
      pthread_mutex_destroy(&w->mu);
      break;
    }
    g_nworkers = id;
  }
  pthread_attr_destroy(&attr);
  pthread_sigmask(SIG_SETMASK, &old, NULL);
  return imin(n, g_nworkers + 1);
}

static double now_us(void) {
  struct timespec t;
  clock_gettime(CLOCK_MONOTONIC, &t);
  return t.tv_sec * 1e6 + t.tv_nsec * 1e-3;
}

static void cpu_relax(void) {
#if GEMM_X86
  _mm_pause();
#elif defined(__aarch64__) && GEMM_GNU
  __asm__ __volatile__("yield");
#endif
}

/* Waits until g_pending is 0: polls for up to GEMM_SPIN_US (the helpers are in the middle of
   their last chunk, and a sleeping waiter takes tens of microseconds to wake on a VM), then
   sleeps on the condition variable. Nothing ever polls between calls. */
#ifndef GEMM_SPIN_US
#define GEMM_SPIN_US 50
#endif
static void wait_helpers(void) {
  if (atomic_load_explicit(&g_pending, memory_order_acquire) == 0) return;
  const double t_end = now_us() + GEMM_SPIN_US;
  do {
    for (int i = 0; i < 64; i++) {
      if (atomic_load_explicit(&g_pending, memory_order_acquire) == 0) return;
      cpu_relax();
    }
  } while (now_us() < t_end);
  pthread_mutex_lock(&g_done_mu);
  while (atomic_load_explicit(&g_pending, memory_order_acquire) > 0) pthread_cond_wait(&g_done_cv, &g_done_mu);
  pthread_mutex_unlock(&g_done_mu);
}

/* fork() copies only the calling thread: the child starts without helpers and with a fresh lock. */
static void atfork_prepare(void) { pthread_mutex_lock(&g_call_mu); }
static void atfork_parent(void) { pthread_mutex_unlock(&g_call_mu); }
static void atfork_child(void) {
  pthread_mutex_unlock(&g_call_mu); /* held by this thread since atfork_prepare */
  pthread_mutex_init(&g_done_mu, NULL); /* a helper may have held it at the fork */
  pthread_cond_init(&g_done_cv, NULL);
  g_nworkers = 0;
  atomic_store(&g_pending, 0);
}

static void init_once(void) {
  choose_arch();
  pthread_atfork(atfork_prepare, atfork_parent, atfork_child);
}

/* ------------------------------------------------------------------------------------------ */
/* Public interface                                                                            */
/* ------------------------------------------------------------------------------------------ */
void gemm_set_threads(int n) {
  if (n < 1) n = 1;
  if (n > MAX_THREADS) n = MAX_THREADS;
  pthread_mutex_lock(&g_call_mu);
  g_threads = n;
  pthread_mutex_unlock(&g_call_mu);
}

int gemm_get_threads(void) {
  pthread_mutex_lock(&g_call_mu);
  const int n = g_threads;
  pthread_mutex_unlock(&g_call_mu);
  return n;
}

const char* gemm_describe(void) {
  pthread_once(&g_once, init_once);
  return g_name;
}

void gemm_f32(int transA, int transB, int M, int N, int K, const float* A, int lda, const float* B, int ldb,
              float* C, int ldc) {
  if (M <= 0 || N <= 0) return;
  if (K <= 0) {
    gemm_zero_c(M, N, C, ldc);
    return;
  }
  pthread_once(&g_once, init_once);
  const arch_t* ar = g_arch;
  pthread_mutex_lock(&g_call_mu);
  if (N == 1) {
    gemm_gemv_n1(&g_bufs[0], transA != 0, transB != 0, M, K, A, lda, B, ldb, C, ldc);
    pthread_mutex_unlock(&g_call_mu);
    return;
  }
  int parts = g_threads;
  if (parts > 1 && (double)M * N * K >= GEMM_MT_MIN_FMA) parts = ensure_workers(parts);
  else parts = 1;
  if (parts == 1) {
    gemm_serial(ar, &g_bufs[0], transA != 0, transB != 0, M, N, K, A, lda, B, ldb, C, ldc);
    pthread_mutex_unlock(&g_call_mu);
    return;
  }
  job_t j = {.tA = transA != 0, .tB = transB != 0, .M = M, .N = N, .K = K, .A = A, .B = B, .C = C,
             .lda = lda, .ldb = ldb, .ldc = ldc, .split_n = N >= M};
  /* Cut the longer side (the other operand is packed by every thread): about GEMM_CHUNKS chunks per
     thread, in whole panels, so a late thread leaves less of a tail. */
  const int unit = j.split_n ? ar->nr : ar->mr, len = j.split_n ? N : M;
  const int units = (len + unit - 1) / unit;
  int nch = parts * GEMM_CHUNKS;
  if (nch > units) nch = units;
  j.chunk = (units + nch - 1) / nch * unit;
  j.nchunks = (len + j.chunk - 1) / j.chunk;
  j.prepack = (double)(j.split_n ? round_up(M, ar->mr) : round_up(N, ar->nr)) * K <= GEMM_PREPACK_MAX;
  if (!j.prepack) { /* each chunk packs both operands: fewer, larger chunks */
    j.chunk = round_up((len + parts - 1) / parts, unit);
    j.nchunks = (len + j.chunk - 1) / j.chunk;
  }
  atomic_init(&j.next, 0);
  if (parts > j.nchunks) parts = j.nchunks;
  g_job = &j;
  atomic_store_explicit(&g_pending, parts - 1, memory_order_relaxed);
  for (int p = 1; p < parts; p++) {
    worker_t* w = &g_workers[p];
    pthread_mutex_lock(&w->mu);
    w->go = 1;
    pthread_cond_signal(&w->cv);
    pthread_mutex_unlock(&w->mu);
  }
  run_part(&j, 0);
  /* All chunks are taken. A helper that has not woken up yet is called off (it would find nothing
     to do, and waiting for it to be scheduled costs more than the work); the others are finishing
     their last chunk: wait for them, polling briefly before sleeping. */
  for (int p = 1; p < parts; p++) {
    worker_t* w = &g_workers[p];
    pthread_mutex_lock(&w->mu);
    const int idle = w->go;
    w->go = 0;
    pthread_mutex_unlock(&w->mu);
    if (idle) atomic_fetch_sub_explicit(&g_pending, 1, memory_order_relaxed);
  }
  wait_helpers();
  pthread_mutex_unlock(&g_call_mu);
}
