/*
 * pool.h — the engine's one thread pool (internal to model/): every parallel
 * loop of model/ (GEMM panels, attention heads, layer-norm rows, im2col,
 * element-wise loops, weight packing at open) runs its items here. OpenBLAS,
 * used where the AVX2 kernels cannot run (gemm.h) and by the CNN tower, keeps
 * threads of its own; kernels_set_threads sets both counts.
 *
 *   typedef struct { float *x; } job;
 *   static void item(void *ctx, int i, int worker) { … item i … }
 *   pool_set_threads(2);
 *   pool_run(n, item, &j);            // items 0 … n-1, returns when all are done
 *
 * The caller claims items too (worker 0); a pool thread that has not woken is
 * never waited for. Nested calls, and a call while another thread's call is
 * running, run their items serially on the calling thread. No allocation
 * after the threads exist (created on first use, again after fork).
 */
#ifndef CXR_POOL_H
#define CXR_POOL_H

#include <stdint.h>

/* fn(ctx, i, worker) for every i in [0, n), on the calling thread and up to
 * pool_threads() - 1 pool threads; worker < pool_threads() (worker 0 is
 * the caller). */
typedef void (*pool_fn)(void *ctx, int i, int worker);
void pool_run(int n, pool_fn fn, void *ctx);

/* fn(ctx, lo, hi) over [0, n) cut into pool_threads() contiguous ranges (as
 * an OpenMP static schedule), or once over [0, n) on the calling thread when
 * n <= serial_max or one thread is set. */
typedef void (*pool_range_fn)(void *ctx, int64_t lo, int64_t hi);
void pool_for(int64_t n, int64_t serial_max, pool_range_fn fn, void *ctx);

void pool_set_threads(int n); /* 1 … 64; default 1 */
int pool_threads(void);

#endif
