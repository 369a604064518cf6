/*
 * deadline.c — runs one decoder call on a thread of its own and stops
 * waiting for it at a deadline. It owns the process-wide "tainted" count
 * (decodes abandoned while still running). It must not kill, cancel or
 * signal the abandoned thread (nothing in DCMTK or OpenJPEG is
 * cancellation-safe) nor free anything that thread may still use.
 *
 * The control block is shared by the waiter and the thread and freed by
 * whichever of the two lets go of it last, so an abandoned thread that does
 * return some day finds it still valid.
 */
#include "deadline.h"
#include "cxr_dicom.h"

#include <errno.h>
#include <pthread.h>
#include <stdlib.h>
#include <time.h>

typedef struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    int done;
    int refs; /* 2 while both the waiter and the thread hold it */
    void (*fn)(void *);
    void *arg;
} ctl;

static pthread_mutex_t taint_mu = PTHREAD_MUTEX_INITIALIZER;
static int tainted;

int cxr_decode_tainted(void) {
    pthread_mutex_lock(&taint_mu);
    int n = tainted;
    pthread_mutex_unlock(&taint_mu);
    return n;
}

static void release(ctl *c) {
    pthread_mutex_lock(&c->mu);
    int left = --c->refs;
    pthread_mutex_unlock(&c->mu);
    if (left == 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
    }
}

static void *trampoline(void *p) {
    ctl *c = p;
    c->fn(c->arg);
    pthread_mutex_lock(&c->mu);
    c->done = 1;
    pthread_cond_signal(&c->cv);
    pthread_mutex_unlock(&c->mu);
    release(c);
    return NULL;
}

int deadline_run(void (*fn)(void *), void *arg, unsigned timeout_ms) {
    if (timeout_ms == 0) {
        fn(arg);
        return CXR_OK;
    }
    ctl *c = calloc(1, sizeof *c);
    if (!c) return CXR_ERR_NOMEM;
    pthread_condattr_t ca;
    int ok = pthread_mutex_init(&c->mu, NULL) == 0;
    if (ok && pthread_condattr_init(&ca) == 0) {
        ok = pthread_condattr_setclock(&ca, CLOCK_MONOTONIC) == 0 && pthread_cond_init(&c->cv, &ca) == 0;
        pthread_condattr_destroy(&ca);
    } else if (ok) {
        pthread_mutex_destroy(&c->mu);
        ok = 0;
    }
    if (!ok) {
        free(c);
        return CXR_ERR_NOMEM;
    }
    c->refs = 2;
    c->fn = fn;
    c->arg = arg;
    struct timespec until;
    clock_gettime(CLOCK_MONOTONIC, &until);
    until.tv_sec += timeout_ms / 1000;
    until.tv_nsec += (long)(timeout_ms % 1000) * 1000000L;
    if (until.tv_nsec >= 1000000000L) {
        until.tv_sec++;
        until.tv_nsec -= 1000000000L;
    }
    pthread_attr_t a;
    pthread_t t;
    int rc = pthread_attr_init(&a);
    if (rc == 0) {
        rc = pthread_attr_setstacksize(&a, DEADLINE_STACK);
        if (rc == 0) rc = pthread_create(&t, &a, trampoline, c);
        pthread_attr_destroy(&a);
    }
    if (rc != 0) {
        pthread_cond_destroy(&c->cv);
        pthread_mutex_destroy(&c->mu);
        free(c);
        return CXR_ERR_NOMEM;
    }
    pthread_mutex_lock(&c->mu);
    int w = 0;
    while (!c->done && w != ETIMEDOUT) w = pthread_cond_timedwait(&c->cv, &c->mu, &until);
    int done = c->done;
    pthread_mutex_unlock(&c->mu);
    if (done) {
        pthread_join(t, NULL);
        release(c);
        return CXR_OK;
    }
    pthread_detach(t);
    pthread_mutex_lock(&taint_mu);
    tainted++;
    pthread_mutex_unlock(&taint_mu);
    release(c);
    return CXR_ERR_DECODE_TIMEOUT;
}
