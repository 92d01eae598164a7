/*
 * gemm.c - self-contained single-precision matrix product, a drop-in for the cblas_sgemm calls of
 * the gan_native addon (row-major, alpha = 1, beta = 0). See gemm.h for the interface.
 *
 * Build: cc -O3 -std=c11 -ffp-contract=off -fno-trapping-math -fno-math-errno -fPIC -c gemm.c gemm_kernels.c
 * (no -march: the x86-64 kernels carry their own target attributes and are picked at run time).
 * This file is the driver (blocking, packing order, threads); gemm_kernels.c holds what the CPU runs.
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
#include "gemm_kernels.h"

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
/* Single-threaded driver                                                                      */
/* ------------------------------------------------------------------------------------------ */
typedef struct {
  float* a;
  size_t acap;
  float* b;
  size_t bcap;
} bufs_t;

static float* grow(float** p, size_t* cap, size_t n) {
  if (n <= *cap) return *p;
  free(*p);
  *p = NULL;
  *cap = 0;
  n = (n + 1023) & ~(size_t)1023;
  void* q = NULL;
  if (posix_memalign(&q, 64, n * sizeof(float)) != 0) return NULL;
  *p = (float*)q;
  *cap = n;
  return *p;
}

static int imin(int a, int b) { return a < b ? a : b; }
static int round_up(int x, int m) { return (x + m - 1) / m * m; }

static void zero_c(int M, int N, float* C, int ldc) {
  for (int i = 0; i < M; i++) memset(C + (idx_t)i * ldc, 0, (size_t)N * sizeof(float));
}

/* Packs w rows/columns (the panel dimension) by kc into panels of P. copy: element (r, k) is
   src[k * ld + r]; otherwise src[r * ld + k] (transposing pack). */
static void pack_panels(const arch_t* ar, int copy, const float* src, idx_t ld, int w, int kc, int P, float* dst) {
  if (copy) {
    gemm_pack_copy(src, ld, w, kc, P, dst);
  } else {
    for (int q = 0; q < w; q += P) ar->tpack(src + (idx_t)q * ld, ld, imin(P, w - q), kc, P, dst + (idx_t)q * kc);
  }
}
/* op(A) rows [i0, i0 + w) x k [k0, k0 + kc) into MR panels; op(B) columns [j0, j0 + w) into NR panels. */
static void pack_a(const arch_t* ar, int tA, const float* A, idx_t lda, int i0, int w, int k0, int kc, float* dst) {
  if (tA)
    pack_panels(ar, 1, A + (idx_t)k0 * lda + i0, lda, w, kc, ar->mr, dst);
  else
    pack_panels(ar, 0, A + (idx_t)i0 * lda + k0, lda, w, kc, ar->mr, dst);
}
static void pack_b(const arch_t* ar, int tB, const float* B, idx_t ldb, int j0, int w, int k0, int kc, float* dst) {
  if (tB)
    pack_panels(ar, 0, B + (idx_t)j0 * ldb + k0, ldb, w, kc, ar->nr, dst);
  else
    pack_panels(ar, 1, B + (idx_t)k0 * ldb + j0, ldb, w, kc, ar->nr, dst);
}

/* Plain loops, used only if a packing buffer cannot be allocated. */
static void gemm_naive(int tA, int tB, int M, int N, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                       float* C, idx_t ldc) {
  for (int i = 0; i < M; i++) {
    float* c = C + i * ldc;
    for (int j = 0; j < N; j++) c[j] = 0.f;
    for (int k = 0; k < K; k++) {
      const float a = tA ? A[(idx_t)k * lda + i] : A[(idx_t)i * lda + k];
      if (!tB) {
        const float* b = B + (idx_t)k * ldb;
        for (int j = 0; j < N; j++) c[j] += a * b[j];
      } else {
        for (int j = 0; j < N; j++) c[j] += a * B[(idx_t)j * ldb + k];
      }
    }
  }
}

/* K slice depth: even slices (K = 300 with KC = 256 gives 2 x 150, not 256 + 44). */
static int k_slice(const arch_t* ar, int K) {
  const int n = (K + ar->kc - 1) / ar->kc;
  return round_up((K + n - 1) / n, 4);
}

/* Macro-kernel: C[m x n] (+)= Ap * Bp for one K slice of depth kc, where Ap holds the m rows in MR
   panels and Bp the n columns in NR panels. Rows go in blocks of MC so that the A block stays in
   L2 while each B panel (kc x NR) is reused from L1 across it. */
static void macro_kernel(const arch_t* ar, int m, int n, int kc, const float* Ap, const float* Bp, float* C, idx_t ldc,
                         int acc) {
  const int MR = ar->mr, NR = ar->nr, VW = ar->vw, NV = NR / VW;
  const int nmb = (m + ar->mc - 1) / ar->mc, mc = round_up((m + nmb - 1) / nmb, MR);
  for (int ic = 0; ic < m; ic += mc) {
    const int mcur = imin(mc, m - ic);
    for (int jr = 0; jr < n; jr += NR) {
      const int w = imin(NR, n - jr), nv = (w + VW - 1) / VW, nlast = w - (nv - 1) * VW;
      const float* bp = Bp + (idx_t)jr * kc;
      float* cc = C + (idx_t)ic * ldc + jr;
      const kern_fn* kern = ar->kern + nv - 1;
      for (int ir = ic; ir < ic + mcur; ir += MR) {
        const int h = imin(MR, m - ir);
        kern[(h - 1) * NV](kc, Ap + (idx_t)ir * kc, bp, cc + (idx_t)(ir - ic) * ldc, ldc, acc, nlast);
      }
    }
  }
}

/* One thread, any size: B is packed per (NC columns, K slice), A per (MC rows, K slice). */
static void gemm_serial(const arch_t* ar, bufs_t* buf, int tA, int tB, int M, int N, int K, const float* A,
                        idx_t lda, const float* B, idx_t ldb, float* C, idx_t ldc) {
  const int MR = ar->mr, NR = ar->nr, kc = k_slice(ar, K);
  const int nmb = (M + ar->mc - 1) / ar->mc, mc = round_up((M + nmb - 1) / nmb, MR);
  const int nnb = (N + ar->nc - 1) / ar->nc, nc = round_up((N + nnb - 1) / nnb, NR);
  float* Ap = grow(&buf->a, &buf->acap, (size_t)mc * kc);
  float* Bp = grow(&buf->b, &buf->bcap, (size_t)nc * kc);
  if (!Ap || !Bp) {
    gemm_naive(tA, tB, M, N, K, A, lda, B, ldb, C, ldc);
    return;
  }
  for (int jc = 0; jc < N; jc += nc) {
    const int ncur = imin(nc, N - jc);
    for (int pc = 0; pc < K; pc += kc) {
      const int kcur = imin(kc, K - pc);
      pack_b(ar, tB, B, ldb, jc, ncur, pc, kcur, Bp);
      for (int ic = 0; ic < M; ic += mc) {
        const int mcur = imin(mc, M - ic);
        pack_a(ar, tA, A, lda, ic, mcur, pc, kcur, Ap);
        macro_kernel(ar, mcur, ncur, kcur, Ap, Bp, C + (idx_t)ic * ldc + jc, ldc, pc > 0);
      }
    }
  }
}

/* N == 1 (the discriminator's last layer) is a matrix-vector product: the tiled path would
   compute a whole vector of columns to keep one. */
static void gemv_n1(bufs_t* buf, int tA, int tB, int M, int K, const float* A, idx_t lda, const float* B, idx_t ldb,
                    float* C, idx_t ldc) {
  float* t = grow(&buf->b, &buf->bcap, (size_t)K + (size_t)M);
  if (!t) {
    gemm_naive(tA, tB, M, 1, K, A, lda, B, ldb, C, ldc);
    return;
  }
  const float* x = B; /* op(B) is one column: B[k] when transposed (1 x K), else B[k * ldb] */
  if (!tB) {
    for (int k = 0; k < K; k++) t[k] = B[(idx_t)k * ldb];
    x = t;
  }
  if (!tA) {
    for (int i = 0; i < M; i++) C[(idx_t)i * ldc] = gemm_dot(A + (idx_t)i * lda, x, K);
  } else {
    float* y = t + K;
    for (int i = 0; i < M; i++) y[i] = 0.f;
    for (int k = 0; k < K; k++) {
      const float xk = x[k], *a = A + (idx_t)k * lda;
      for (int i = 0; i < M; i++) y[i] += a[i] * xk;
    }
    for (int i = 0; i < M; i++) C[(idx_t)i * ldc] = y[i];
  }
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
  const int M = j->M, N = j->N, K = j->K, kc = k_slice(ar, K);
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
    float* Ap = grow(&buf->a, &buf->acap, (size_t)Mr * K);
    float* Bp = grow(&buf->b, &buf->bcap, (size_t)round_up(j->chunk, ar->nr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) pack_a(ar, j->tA, j->A, j->lda, 0, M, k0, imin(kc, K - k0), Ap + Mr * k0);
    do {
      const int c0 = c * j->chunk, w = imin(j->chunk, N - c0);
      if (!Ap || !Bp) {
        const float* B = j->tB ? j->B + c0 * j->ldb : j->B + c0;
        gemm_naive(j->tA, j->tB, M, w, K, j->A, j->lda, B, j->ldb, j->C + c0, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        pack_b(ar, j->tB, j->B, j->ldb, c0, w, k0, kcur, Bp);
        macro_kernel(ar, M, w, kcur, Ap + Mr * k0, Bp, j->C + c0, j->ldc, k0 > 0);
      }
    } while ((c = atomic_fetch_add_explicit(&j->next, 1, memory_order_relaxed)) < j->nchunks);
  } else {
    const idx_t Nr = round_up(N, ar->nr);
    float* Bp = grow(&buf->b, &buf->bcap, (size_t)Nr * K);
    float* Ap = grow(&buf->a, &buf->acap, (size_t)round_up(j->chunk, ar->mr) * kc);
    if (Ap && Bp)
      for (int k0 = 0; k0 < K; k0 += kc) pack_b(ar, j->tB, j->B, j->ldb, 0, N, k0, imin(kc, K - k0), Bp + Nr * k0);
    do {
      const int r0 = c * j->chunk, h = imin(j->chunk, M - r0);
      if (!Ap || !Bp) {
        const float* A = j->tA ? j->A + r0 : j->A + r0 * j->lda;
        gemm_naive(j->tA, j->tB, h, N, K, A, j->lda, j->B, j->ldb, j->C + r0 * j->ldc, j->ldc);
        continue;
      }
      for (int k0 = 0; k0 < K; k0 += kc) {
        const int kcur = imin(kc, K - k0);
        pack_a(ar, j->tA, j->A, j->lda, r0, h, k0, kcur, Ap);
        macro_kernel(ar, h, N, kcur, Ap, Bp + Nr * k0, j->C + r0 * j->ldc, j->ldc, k0 > 0);
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
    zero_c(M, N, C, ldc);
    return;
  }
  pthread_once(&g_once, init_once);
  const arch_t* ar = g_arch;
  pthread_mutex_lock(&g_call_mu);
  if (N == 1) {
    gemv_n1(&g_bufs[0], transA != 0, transB != 0, M, K, A, lda, B, ldb, C, ldc);
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
