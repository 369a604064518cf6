/*
 * conv.c — convolutions on the packed GEMM (conv.h): weight permutation and
 * packing, the gathers (im2col, subsample, DenseNet's pre-activation and
 * transition average), the per-chunk GEMM with its epilogue, max pooling.
 * It knows no architecture and no file.
 */
#include "conv.h"
#include "pool.h"

#include <immintrin.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>

int conv_pack(cv_conv *c, const float *w, const float *b, int co, int ci, int k, int stride, int pad) {
    memset(c, 0, sizeof *c);
    c->co = co;
    c->ci = ci;
    c->k = k;
    c->stride = stride;
    c->pad = pad;
    c->b = b;
    int64_t kk = (int64_t)k * k * ci;
    if (gemm_pack_init(&c->pk, co, (int)kk, 0) != 0) return -1;
    if (k == 1) {
        gemm_pack_rows(&c->pk, 0, w, GEMM_SRC_F32, co);
        return 0;
    }
    /* rows permuted a panel (GEMM_NR rows) at a time into a small buffer,
       then packed together: gemm_pack_rows fills a panel's cache lines 16
       rows at a time (row by row it touched every line 16 times), and the
       buffer is reused (a whole permuted copy cost as many page faults as
       the panels themselves) */
    float *perm = malloc((size_t)GEMM_NR * (size_t)kk * sizeof *perm);
    if (!perm) {
        gemm_free(&c->pk);
        return -1;
    }
    for (int o0 = 0; o0 < co; o0 += GEMM_NR) {
        int nr = co - o0 < GEMM_NR ? co - o0 : GEMM_NR;
        for (int r = 0; r < nr; r++) { /* (ci, ky, kx) → (ky, kx, ci), the order of the gathered rows */
            const float *wo = w + (int64_t)(o0 + r) * kk;
            float *row = perm + (int64_t)r * kk;
            for (int ch = 0; ch < ci; ch++)
                for (int t = 0; t < k * k; t++) row[(int64_t)t * ci + ch] = wo[(int64_t)ch * k * k + t];
        }
        gemm_pack_rows(&c->pk, o0, perm, GEMM_SRC_F32, nr);
    }
    free(perm);
    return 0;
}

typedef struct {
    const conv_pack_job *jobs;
    _Atomic int bad;
} pack_all;

static void pack_one(void *ctx, int i, int worker) {
    (void)worker;
    pack_all *p = ctx;
    const conv_pack_job *j = &p->jobs[i];
    if (conv_pack(j->c, j->w, j->b, j->co, j->ci, j->k, j->stride, j->pad) != 0) p->bad = 1;
}

int conv_pack_all(const conv_pack_job *jobs, int n) {
    pack_all p = {jobs, 0};
    pool_run(n, pack_one, &p);
    return p.bad ? -1 : 0;
}

void conv_free(cv_conv *c) {
    if (c) gemm_free(&c->pk);
}

int conv_ws_reserve(conv_ws *ws, int64_t row_len) {
    int64_t len = (CONV_CHUNK * row_len + 15) & ~(int64_t)15;
    int nw = pool_threads();
    if (len <= ws->col_len && nw <= ws->workers) return 0;
    if (len < ws->col_len) len = ws->col_len;
    if (nw < ws->workers) nw = ws->workers;
    free(ws->col);
    size_t bytes = (size_t)len * (size_t)nw * sizeof(float);
    ws->col = aligned_alloc(64, (bytes + 63) & ~(size_t)63);
    if (!ws->col) {
        ws->col_len = 0;
        ws->workers = 0;
        return -1;
    }
    ws->col_len = len;
    ws->workers = nw;
    return 0;
}

void conv_ws_free(conv_ws *ws) {
    if (!ws) return;
    free(ws->col);
    memset(ws, 0, sizeof *ws);
}


typedef struct {
    const cv_conv *cv;
    const float *in;
    int ldi, H, W;       /* input rows (b, y, x) × ldi; channels [0, cv->ci) are read */
    int Ho, Wo;
    float *out;
    int ldo, gather, epi;
    const cv_affine *aff;
    float *col;
    int64_t col_len, rows, chunk;
} cv_op;

/* Output row r's input pixel (b, iy, ix) of tap (ky, kx), or NULL outside. */
static inline const float *tap(const cv_op *o, int64_t r, int ky, int kx) {
    int64_t per = (int64_t)o->Ho * o->Wo, b = r / per, p = r % per;
    int oy = (int)(p / o->Wo), ox = (int)(p % o->Wo);
    int iy = oy * o->cv->stride + ky - o->cv->pad, ix = ox * o->cv->stride + kx - o->cv->pad;
    if (iy < 0 || iy >= o->H || ix < 0 || ix >= o->W) return NULL;
    return o->in + ((b * o->H + iy) * o->W + ix) * o->ldi;
}

/* dst = relu(scale·src + shift) (+ dst when acc, scaled by w): the
 * pre-activation of DenseNet's layers and transitions, AVX2 where the GEMM
 * runs (gemm_available), else plain loops. */
__attribute__((target("avx2,fma"))) static void affine_relu_avx2(float *restrict dst, const float *restrict src,
                                                                 const float *sc, const float *sh, int n, int acc,
                                                                 float w) {
    int c = 0;
    const __m256 z = _mm256_setzero_ps(), vw = _mm256_set1_ps(w);
    for (; c + 8 <= n; c += 8) {
        __m256 v = _mm256_max_ps(_mm256_fmadd_ps(_mm256_loadu_ps(sc + c), _mm256_loadu_ps(src + c),
                                                 _mm256_loadu_ps(sh + c)), z);
        if (acc) v = _mm256_fmadd_ps(v, vw, _mm256_loadu_ps(dst + c));
        _mm256_storeu_ps(dst + c, v);
    }
    for (; c < n; c++) {
        float v = fmaf(sc[c], src[c], sh[c]);
        v = v > 0.0f ? v : 0.0f;
        dst[c] = acc ? dst[c] + w * v : v;
    }
}

static void affine_relu_acc(float *restrict dst, const float *restrict src, const cv_affine *a, int n, int acc,
                            float w) {
    if (gemm_available()) {
        affine_relu_avx2(dst, src, a->scale, a->shift, n, acc, w);
        return;
    }
    for (int c = 0; c < n; c++) {
        float v = fmaf(a->scale[c], src[c], a->shift[c]);
        v = v > 0.0f ? v : 0.0f;
        dst[c] = acc ? dst[c] + w * v : v;
    }
}

void conv_affine_relu(float *dst, const float *src, const cv_affine *a, int n) { affine_relu_acc(dst, src, a, n, 0, 1.0f); }

static void op_chunk(void *ctx, int i, int worker) {
    const cv_op *o = ctx;
    const cv_conv *cv = o->cv;
    int64_t r0 = (int64_t)i * o->chunk, r1 = r0 + o->chunk < o->rows ? r0 + o->chunk : o->rows;
    int n = (int)(r1 - r0), ci = cv->ci, k = cv->k;
    float *col = o->col + (int64_t)worker * o->col_len;
    const float *a = col;
    int lda = ci;
    switch (o->gather) {
    case CONV_DIRECT:
        a = o->in + r0 * o->ldi;
        lda = o->ldi;
        break;
    case CONV_AFFINE:
        for (int64_t r = r0; r < r1; r++) conv_affine_relu(col + (r - r0) * ci, o->in + r * o->ldi, o->aff, ci);
        break;
    case CONV_SUBSAMPLE:
        for (int64_t r = r0; r < r1; r++) memcpy(col + (r - r0) * ci, tap(o, r, 0, 0), (size_t)ci * sizeof(float));
        break;
    case CONV_AFFINE_POOL: {
        int64_t per = (int64_t)o->Ho * o->Wo;
        for (int64_t r = r0; r < r1; r++) {
            int64_t b = r / per, p = r % per;
            int oy = (int)(p / o->Wo), ox = (int)(p % o->Wo);
            float *d = col + (r - r0) * ci;
            memset(d, 0, (size_t)ci * sizeof(float));
            for (int dy = 0; dy < 2; dy++)
                for (int dx = 0; dx < 2; dx++) {
                    const float *s = o->in + ((b * o->H + 2 * oy + dy) * o->W + 2 * ox + dx) * o->ldi;
                    affine_relu_acc(d, s, o->aff, ci, 1, 0.25f);
                }
        }
        break;
    }
    default: { /* CONV_IM2COL: the output pixel's position once per row, not per tap */
        lda = k * k * ci;
        const int64_t per = (int64_t)o->Ho * o->Wo;
        const size_t bytes = (size_t)ci * sizeof(float);
        for (int64_t r = r0; r < r1; r++) {
            float *d = col + (r - r0) * lda;
            const int64_t b = r / per, p = r % per;
            const int y0 = (int)(p / o->Wo) * cv->stride - cv->pad, x0 = (int)(p % o->Wo) * cv->stride - cv->pad;
            for (int ky = 0; ky < k; ky++) {
                const int iy = y0 + ky;
                if (iy < 0 || iy >= o->H) { /* a padding row: k taps of zeros */
                    memset(d, 0, bytes * (size_t)k);
                    d += (int64_t)k * ci;
                    continue;
                }
                const float *srow = o->in + (b * o->H + iy) * o->W * o->ldi;
                for (int kx = 0; kx < k; kx++, d += ci) {
                    const int ix = x0 + kx;
                    if (ix < 0 || ix >= o->W) memset(d, 0, bytes);
                    else memcpy(d, srow + (int64_t)ix * o->ldi, bytes);
                }
            }
        }
        break;
    }
    }
    /* a residual block's second convolution: ReLU(out + conv) in the GEMM's epilogue */
    float *out = o->out + r0 * o->ldo;
    const int accum = o->epi == CONV_ACCUM_RELU;
    gemm_forward_1t(out, o->ldo, a, lda, &cv->pk, cv->b, n, o->epi == CONV_PLAIN ? GEMM_ACT_NONE : ACT_RELU, accum);
}

void conv_run(conv_ws *ws, const cv_conv *cv, int gather, const cv_affine *aff, const float *in, int ldi, int batch,
              int H, int W, float *out, int ldo, int epi, int *Ho, int *Wo) {
    cv_op o = {cv, in, ldi, H, W, 0, 0, out, ldo, gather, epi, aff, ws->col, ws->col_len, 0, 0};
    if (gather == CONV_AFFINE_POOL) {
        o.Ho = H / 2;
        o.Wo = W / 2;
    } else {
        o.Ho = conv_out_side(H, cv->k, cv->stride, cv->pad);
        o.Wo = conv_out_side(W, cv->k, cv->stride, cv->pad);
    }
    o.rows = (int64_t)batch * o.Ho * o.Wo;
    /* chunks of up to CONV_CHUNK rows, but at least two per thread when the
       layer is small (DenseNet's last blocks have 196 and 49 rows), so that
       no thread idles while another does two chunks */
    int nt = pool_threads();
    int64_t c = (o.rows + 2 * nt - 1) / (2 * nt);
    c = (c + GEMM_MR - 1) / GEMM_MR * GEMM_MR;
    o.chunk = c < GEMM_MR ? GEMM_MR : c > CONV_CHUNK ? CONV_CHUNK : c;
    pool_run((int)((o.rows + o.chunk - 1) / o.chunk), op_chunk, &o);
    if (Ho) *Ho = o.Ho;
    if (Wo) *Wo = o.Wo;
}

/* 3×3 stride-2 pad-1 max pool */
typedef struct {
    const float *in;
    float *out;
    int H, W, Ho, Wo, C, ldo;
} pool_job;

static void maxpool_rows(void *ctx, int64_t lo, int64_t hi) {
    const pool_job *j = ctx;
    int64_t per = (int64_t)j->Ho * j->Wo;
    for (int64_t r = lo; r < hi; r++) {
        int64_t b = r / per, p = r % per;
        int oy = (int)(p / j->Wo), ox = (int)(p % j->Wo);
        float *d = j->out + r * j->ldo;
        for (int c = 0; c < j->C; c++) d[c] = -INFINITY;
        for (int dy = -1; dy <= 1; dy++)
            for (int dx = -1; dx <= 1; dx++) {
                int iy = 2 * oy + dy, ix = 2 * ox + dx;
                if (iy < 0 || iy >= j->H || ix < 0 || ix >= j->W) continue;
                const float *s = j->in + ((b * j->H + iy) * j->W + ix) * j->C;
                for (int c = 0; c < j->C; c++) d[c] = s[c] > d[c] ? s[c] : d[c];
            }
    }
}

void conv_maxpool3s2(const float *in, int batch, int H, int W, int C, float *out, int ldo, int *Ho, int *Wo) {
    pool_job j = {in, out, H, W, conv_out_side(H, 3, 2, 1), conv_out_side(W, 3, 2, 1), C, ldo};
    pool_for((int64_t)batch * j.Ho * j.Wo, 64, maxpool_rows, &j);
    if (Ho) *Ho = j.Ho;
    if (Wo) *Wo = j.Wo;
}
