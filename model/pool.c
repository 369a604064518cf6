/*
 * pool.c — the engine's thread pool: pool_run shares the items of one job
 * between the calling thread and the pool's threads, pool_for cuts a range
 * into one contiguous part per thread. It owns the pool threads (created on
 * first use, detached) and nothing else; it must not know about kernels,
 * models or files, and must not allocate once the threads exist.
 */
#include "pool.h"

#include <pthread.h>
#include <sched.h>
#include <stdatomic.h>
#include <unistd.h>

/* The caller publishes a job (fn, ctx, n) under a new epoch and claims items
 * itself; pool threads that are awake claim items too. The caller then waits
 * only for items already claimed, never for a pool thread that has not woken:
 * on a shared machine a preempted thread costs nothing, where an OpenMP join
 * waits for every thread of the team (a scheduler time slice per region,
 * hundreds of regions per forward). A claim is a compare-and-swap on
 * (epoch << 32 | next item), so a thread that wakes late cannot take an item
 * of a newer job. Idle pool threads spin briefly, then sleep on a condition
 * variable. One caller at a time: a second one (another model handle on
 * another thread) runs its items serially. */

enum { POOL_MAX = 64, POOL_SPIN = 4000 };

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    _Atomic uint64_t state;         /* epoch << 32 | next unclaimed item */
    _Atomic(pool_fn) fn;
    _Atomic(void *) ctx;
    atomic_int n, done, active, sleepers, want;
    atomic_flag busy;
    int started; /* pool threads running (changed by the busy flag's holder) */
    pid_t pid;
} pool = {.mu = PTHREAD_MUTEX_INITIALIZER, .cv = PTHREAD_COND_INITIALIZER, .want = 1, .busy = ATOMIC_FLAG_INIT};

static _Thread_local int pool_worker = -1; /* this thread's worker index inside a job */

static inline void cpu_relax(void) {
#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
    __builtin_ia32_pause();
#endif
}

/* Claim and run items of epoch e until none is left. */
static void pool_work(uint32_t e, int worker) {
    pool_fn fn = atomic_load_explicit(&pool.fn, memory_order_relaxed);
    void *ctx = atomic_load_explicit(&pool.ctx, memory_order_relaxed);
    uint32_t n = (uint32_t)atomic_load_explicit(&pool.n, memory_order_relaxed);
    uint64_t st = atomic_load_explicit(&pool.state, memory_order_acquire);
    for (;;) {
        if ((uint32_t)(st >> 32) != e || (uint32_t)st >= n) return;
        if (!atomic_compare_exchange_weak_explicit(&pool.state, &st, st + 1, memory_order_acq_rel,
                                                   memory_order_acquire))
            continue;
        pool_worker = worker;
        fn(ctx, (int)(uint32_t)st, worker);
        pool_worker = -1;
        atomic_fetch_add_explicit(&pool.done, 1, memory_order_release);
        st = atomic_load_explicit(&pool.state, memory_order_acquire);
    }
}

static void *pool_main(void *arg) {
    const int me = (int)(intptr_t)arg;
    uint32_t seen = (uint32_t)(atomic_load(&pool.state) >> 32);
    for (;;) {
        uint64_t st;
        int spins = 0;
        while ((uint32_t)((st = atomic_load_explicit(&pool.state, memory_order_acquire)) >> 32) == seen) {
            if (++spins < POOL_SPIN) {
                cpu_relax();
                continue;
            }
            atomic_fetch_add(&pool.sleepers, 1); /* seq_cst: pairs with the caller's store, then load */
            pthread_mutex_lock(&pool.mu);
            while ((uint32_t)(atomic_load(&pool.state) >> 32) == seen) pthread_cond_wait(&pool.cv, &pool.mu);
            pthread_mutex_unlock(&pool.mu);
            atomic_fetch_sub(&pool.sleepers, 1);
            spins = 0;
        }
        seen = (uint32_t)(st >> 32);
        if (me < atomic_load_explicit(&pool.active, memory_order_relaxed)) pool_work(seen, me);
    }
    return NULL;
}

void pool_set_threads(int n) { atomic_store(&pool.want, n < 1 ? 1 : n > POOL_MAX ? POOL_MAX : n); }

int pool_threads(void) { return atomic_load(&pool.want); }

void pool_run(int n, pool_fn fn, void *ctx) {
    int helpers = pool_threads() - 1;
    if (helpers > n - 1) helpers = n - 1;
    if (helpers <= 0 || pool_worker >= 0 || atomic_flag_test_and_set(&pool.busy)) {
        for (int i = 0; i < n; i++) fn(ctx, i, pool_worker >= 0 ? pool_worker : 0);
        return;
    }
    if (pool.pid != getpid()) { /* first use, or a forked child: no pool threads yet */
        pool.pid = getpid();
        pool.started = 0;
    }
    while (pool.started < helpers) {
        pthread_t t;
        pthread_attr_t at;
        pthread_attr_init(&at);
        pthread_attr_setdetachstate(&at, PTHREAD_CREATE_DETACHED);
        int ok = pthread_create(&t, &at, pool_main, (void *)(intptr_t)(pool.started + 1)) == 0;
        pthread_attr_destroy(&at);
        if (!ok) break;
        pool.started++;
    }
    if (helpers > pool.started) helpers = pool.started; /* the caller alone is still correct */
    atomic_store_explicit(&pool.done, 0, memory_order_relaxed);
    atomic_store_explicit(&pool.fn, fn, memory_order_relaxed);
    atomic_store_explicit(&pool.ctx, ctx, memory_order_relaxed);
    atomic_store_explicit(&pool.n, n, memory_order_relaxed);
    atomic_store_explicit(&pool.active, helpers + 1, memory_order_relaxed);
    uint32_t e = (uint32_t)(atomic_load(&pool.state) >> 32) + 1;
    atomic_store(&pool.state, (uint64_t)e << 32); /* seq_cst: publishes the job */
    if (atomic_load(&pool.sleepers) > 0) {
        pthread_mutex_lock(&pool.mu);
        pthread_cond_broadcast(&pool.cv);
        pthread_mutex_unlock(&pool.mu);
    }
    pool_work(e, 0);
    for (int spins = 0; atomic_load_explicit(&pool.done, memory_order_acquire) < n; spins++) {
        if (spins < POOL_SPIN) cpu_relax();
        else sched_yield(); /* a claimed item's thread was preempted: let it run */
    }
    atomic_flag_clear(&pool.busy);
}

typedef struct {
    pool_range_fn fn;
    void *ctx;
    int64_t n;
    int parts;
} range_job;

static void range_item(void *ctx, int i, int worker) {
    const range_job *j = ctx;
    (void)worker;
    int64_t lo = j->n * i / j->parts, hi = j->n * (i + 1) / j->parts;
    if (hi > lo) j->fn(j->ctx, lo, hi);
}

void pool_for(int64_t n, int64_t serial_max, pool_range_fn fn, void *ctx) {
    if (n <= 0) return;
    int parts = pool_threads();
    if (n <= serial_max || parts <= 1) {
        fn(ctx, 0, n);
        return;
    }
    if (parts > n) parts = (int)n;
    range_job j = {fn, ctx, n, parts};
    pool_run(parts, range_item, &j);
}
