/*
 * kernels.c — numeric kernels of the towers: GEMMs go to the packed AVX2
 * kernels of gemm.c where the CPU has them and to OpenBLAS otherwise; the
 * rest (layer norm, activations, attention, interpolation, L2 norm) are
 * loops shared out over rows or heads on the engine's thread pool (pool.c).
 * No allocation here: callers pass scratch. Must not know about models,
 * files or tokens; gemm.c never calls back into this file.
 */
#include "kernels.h"
#include "pool.h"

#include <assert.h>
#include <cblas.h>
#include <math.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ profiling */

#ifdef CXR_KPROF
static double prof_ms[KPROF_N];
static double prof_now(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}
#define PROF_BEGIN double prof_t0_ = prof_now()
#define PROF_END(kind) prof_ms[kind] += prof_now() - prof_t0_
#else
static double prof_ms[KPROF_N];
#define PROF_BEGIN
#define PROF_END(kind)
#endif

void kernels_prof_take(double ms[KPROF_N]) {
    for (int i = 0; i < KPROF_N; i++) {
        ms[i] = prof_ms[i];
        prof_ms[i] = 0;
    }
}

const char *kernels_prof_name(int kind) {
    static const char *names[KPROF_N] = {"gemm", "attention", "layernorm", "elementwise"};
    return kind >= 0 && kind < KPROF_N ? names[kind] : "?";
}

void kernels_set_threads(int n) {
    n = n < 1 ? 1 : n;
    openblas_set_num_threads(n);
    pool_set_threads(n);
}

/* y[r, 0..o) = act(y + b) for the rows [lo, hi) of a GEMM's output */
typedef struct {
    float *out;
    const float *b;
    int ldo, o, act;
} bias_job;

static void bias_rows(void *ctx, int64_t lo, int64_t hi) {
    const bias_job *j = ctx;
    for (int64_t r = lo; r < hi; r++) {
        float *y = j->out + r * j->ldo;
        if (j->act == GEMM_ACT_NONE)
            for (int c = 0; c < j->o; c++) y[c] += j->b[c];
        else
            for (int c = 0; c < j->o; c++) y[c] = gemm_act1(y[c] + (j->b ? j->b[c] : 0.0f), j->act);
    }
}

void linear_forward(float *out, const float *in, const float *w, const float *b, int n, int i, int o) {
    PROF_BEGIN;
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, in, i, w, i, 0.0f, out, o);
    if (b) {
        bias_job j = {out, b, o, o, GEMM_ACT_NONE};
        pool_for(n, 8, bias_rows, &j);
    }
    PROF_END(KPROF_GEMM);
}

void dense_forward(float *out, int ldo, const float *in, int ldi, const float *w, const gemm_w *pk, const float *b,
                   int n, int i, int o, int act, int accum) {
    assert(!(accum && act != GEMM_ACT_NONE));
    PROF_BEGIN;
    if (pk && pk->panels) {
        assert(pk->n == o && pk->k == i);
        gemm_forward(out, ldo, in, ldi, pk, b, n, act, accum);
    } else {
        cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, in, ldi, w, i, accum ? 1.0f : 0.0f, out,
                    ldo);
        if (b || act != GEMM_ACT_NONE) {
            bias_job j = {out, b, ldo, o, act};
            pool_for(n, 8, bias_rows, &j);
        }
    }
    PROF_END(KPROF_GEMM);
}

typedef struct {
    float *out;
    const float *in, *w, *b;
    int n, d;
    float eps;
} ln_job;

enum { LN_ROWS = 8 }; /* rows per work item */

static void ln_rows(void *ctx, int item, int worker) {
    const ln_job *j = ctx;
    (void)worker;
    int r1 = (item + 1) * LN_ROWS < j->n ? (item + 1) * LN_ROWS : j->n;
    for (int r = item * LN_ROWS; r < r1; r++)
        gemm_layernorm_row(j->out + (int64_t)r * j->d, j->in + (int64_t)r * j->d, j->w, j->b, j->d, j->eps);
}

void layernorm_forward(float *out, const float *in, const float *w, const float *b, int n, int d, float eps) {
    PROF_BEGIN;
    ln_job j = {out, in, w, b, n, d, eps};
    pool_run((n + LN_ROWS - 1) / LN_ROWS, ln_rows, &j);
    PROF_END(KPROF_NORM);
}

/* Element-wise loops over [lo, hi) of x (and y). */
typedef struct {
    float *x;
    const float *y;
    int act;
} elt_job;

static void act_range(void *ctx, int64_t lo, int64_t hi) {
    const elt_job *j = ctx;
    float *x = j->x;
    if (j->act == ACT_QUICK_GELU)
        for (int64_t i = lo; i < hi; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    else
        for (int64_t i = lo; i < hi; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
}

void act_forward(float *x, int64_t n, int act) {
    PROF_BEGIN;
    elt_job j = {x, NULL, act};
    pool_for(n, 65536, act_range, &j);
    PROF_END(KPROF_ELT);
}

int64_t attention_scratch_len(int t, int heads) { return (int64_t)t * t * heads; }

/* One head of attention with plain loops; s: t·t floats. */
static void head_loops(float *out, int ldo, const float *qh, const float *kh, const float *vh, int ld, int t, int dh,
                       int causal, float *s) {
    const float scale = 1.0f / sqrtf((float)dh);
    for (int i = 0; i < t; i++) {
        const float *qi = qh + (int64_t)i * ld;
        float *si = s + (int64_t)i * t;
        int jn = causal ? i + 1 : t;
        float mx = -INFINITY;
        for (int j = 0; j < jn; j++) {
            const float *kj = kh + (int64_t)j * ld;
            float acc = 0;
            for (int c = 0; c < dh; c++) acc += qi[c] * kj[c];
            si[j] = acc * scale;
            if (si[j] > mx) mx = si[j];
        }
        float sum = 0;
        for (int j = 0; j < jn; j++) {
            si[j] = expf(si[j] - mx);
            sum += si[j];
        }
        float inv = 1.0f / sum;
        float *o = out + (int64_t)i * ldo;
        for (int c = 0; c < dh; c++) o[c] = 0;
        for (int j = 0; j < jn; j++) {
            const float *vj = vh + (int64_t)j * ld;
            float p = si[j] * inv;
            for (int c = 0; c < dh; c++) o[c] += p * vj[c];
        }
    }
}

typedef struct {
    float *out, *scratch;
    const float *q, *k, *v;
    int ldo, ld, t, dh, causal;
} att_job;

static void att_head(void *ctx, int h, int worker) {
    const att_job *j = ctx;
    (void)worker;
    head_loops(j->out + h * j->dh, j->ldo, j->q + h * j->dh, j->k + h * j->dh, j->v + h * j->dh, j->ld, j->t, j->dh,
               j->causal, j->scratch + (int64_t)h * j->t * j->t);
}

void attention_forward(float *out, int ldo, const float *q, const float *k, const float *v, int ld, int t,
                       int heads, int dh, int causal, float *scratch) {
    PROF_BEGIN;
    att_job j = {out, scratch, q, k, v, ldo, ld, t, dh, causal};
    pool_run(heads, att_head, &j);
    PROF_END(KPROF_ATTN);
}

/* Per thread: scores t × t, K panels (t × dh), V panels (dh × t), each
 * rounded up to 16 floats (64 bytes) so every part stays aligned. */
static int64_t round16(int64_t n) { return (n + 15) & ~(int64_t)15; }
static int64_t mha_unit(int t, int dh) {
    return round16((int64_t)t * t) + round16(gemm_panel_len(t, dh)) + round16(gemm_panel_len(dh, t));
}

int64_t mha_scratch_len(int t, int heads, int dh, int threads) {
    int units = threads < heads ? threads : heads;
    return (units < 1 ? 1 : units) * mha_unit(t, dh);
}

typedef struct {
    float *out, *scratch;
    const float *q, *k, *v;
    int ldo, ld, t, dh, causal, fast;
    int64_t unit;
} mha_job;

static void mha_head(void *ctx, int h, int worker) {
    const mha_job *j = ctx;
    const int t = j->t, dh = j->dh, ld = j->ld;
    float *s = j->scratch + worker * j->unit; /* this worker's scores and panels */
    float *kp = s + round16((int64_t)t * t), *vp = kp + round16(gemm_panel_len(t, dh));
    const float *qh = j->q + h * dh, *kh = j->k + h * dh, *vh = j->v + h * dh;
    float *oh = j->out + h * dh;
    if (!j->fast) {
        head_loops(oh, j->ldo, qh, kh, vh, ld, t, dh, j->causal, s);
        return;
    }
    const float scale = 1.0f / sqrtf((float)dh);
    gemm_w kw = gemm_view_nt(kp, kh, ld, t, dh); /* S = Q·Kᵀ */
    gemm_forward_1t(s, t, qh, ld, &kw, NULL, t, GEMM_ACT_NONE, 0);
    for (int i = 0; i < t; i++) {
        float *si = s + (int64_t)i * t;
        int jn = j->causal ? i + 1 : t;
        gemm_softmax_row(si, jn, scale);
        for (int c = jn; c < t; c++) si[c] = 0.0f;
    }
    gemm_w vw = gemm_view_nn(vp, vh, ld, t, dh); /* O = P·V */
    gemm_forward_1t(oh, j->ldo, s, t, &vw, NULL, t, GEMM_ACT_NONE, 0);
}

void mha_forward(float *out, int ldo, const float *q, const float *k, const float *v, int ld, int t, int heads,
                 int dh, int causal, float *scratch) {
    PROF_BEGIN;
    mha_job j = {out, scratch, q, k, v, ldo, ld, t, dh, causal, gemm_available(), mha_unit(t, dh)};
    pool_run(heads, mha_head, &j);
    PROF_END(KPROF_ATTN);
}

static void add_range(void *ctx, int64_t lo, int64_t hi) {
    const elt_job *j = ctx;
    for (int64_t i = lo; i < hi; i++) j->x[i] += j->y[i];
}

void add_forward(float *x, const float *y, int64_t n) {
    PROF_BEGIN;
    elt_job j = {x, y, 0};
    pool_for(n, 65536, add_range, &j);
    PROF_END(KPROF_ELT);
}

static void relu_range(void *ctx, int64_t lo, int64_t hi) {
    float *x = ((const elt_job *)ctx)->x;
    for (int64_t i = lo; i < hi; i++)
        if (x[i] < 0) x[i] = 0;
}

void relu_forward(float *x, int64_t n) {
    PROF_BEGIN;
    elt_job j = {x, NULL, 0};
    pool_for(n, 65536, relu_range, &j);
    PROF_END(KPROF_ELT);
}

void l2norm_forward(float *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < n; i++) x[i] *= inv;
}

static float cubic_w(float x) {
    const float A = -0.75f;
    x = fabsf(x);
    if (x <= 1.0f) return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    return 0.0f;
}

void bicubic_grid_forward(float *out, const float *in, int gi, int go, int d) {
    float scale = (float)gi / (float)go;
    for (int oy = 0; oy < go; oy++) {
        float sy = (oy + 0.5f) * scale - 0.5f;
        int iy = (int)floorf(sy);
        float ty = sy - iy;
        float wy[4] = {cubic_w(ty + 1), cubic_w(ty), cubic_w(1 - ty), cubic_w(2 - ty)};
        for (int ox = 0; ox < go; ox++) {
            float sx = (ox + 0.5f) * scale - 0.5f;
            int ix = (int)floorf(sx);
            float tx = sx - ix;
            float wx[4] = {cubic_w(tx + 1), cubic_w(tx), cubic_w(1 - tx), cubic_w(2 - tx)};
            float *o = out + ((int64_t)oy * go + ox) * d;
            for (int c = 0; c < d; c++) o[c] = 0;
            for (int a = 0; a < 4; a++) {
                int yy = iy - 1 + a;
                yy = yy < 0 ? 0 : yy >= gi ? gi - 1 : yy;
                for (int bb = 0; bb < 4; bb++) {
                    int xx = ix - 1 + bb;
                    xx = xx < 0 ? 0 : xx >= gi ? gi - 1 : xx;
                    float w = wy[a] * wx[bb];
                    const float *src = in + ((int64_t)yy * gi + xx) * d;
                    for (int c = 0; c < d; c++) o[c] += w * src[c];
                }
            }
        }
    }
}
