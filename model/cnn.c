/*
 * cnn.c — forward pass of the residual CNN image tower: stem, stages of a
 * stride-2 convolution plus residual blocks, global average pooling. Each
 * 3×3 convolution runs on conv.c's packed GEMM (weights packed at load, bias,
 * ReLU and the residual add in its epilogue) where the CPU has AVX2; else it
 * is an im2col gather followed by one OpenBLAS GEMM (linear_forward) with
 * ReLU and the residual add applied in place. Loops are shared out on the
 * engine's pool (pool.c). It
 * owns no memory: the caller passes scratch sized by cnn_scratch_len. It
 * must not know about files beyond the lookup callback.
 */
#include "cnn.h"
#include "cxr_model.h"
#include "gemm.h"
#include "kernels.h"
#include "pool.h"

#include <stdio.h>
#include <string.h>

static int conv_out(int n) { return (n - 1) / 2 + 1; } /* 3×3, pad 1, stride 2 */

int cnn_grid(const cnn_w *c, int size) {
    if (size < 2) return 0;
    int s = conv_out(size);
    for (int i = 0; i < c->n; i++) s = conv_out(s);
    return s;
}

static int get_u32_arr(const gguf_file *g, const char *key, int *out, int max) {
    uint32_t v[CNN_MAX_STAGES + 1];
    int n = gguf_get_u32_arr(g, key, v, (size_t)max);
    for (int i = 0; i < n; i++) {
        if (v[i] < 1 || v[i] > 4096) return -1;
        out[i] = (int)v[i];
    }
    return n < 0 ? -1 : n;
}

int cnn_load(cnn_w *c, const gguf_file *g, int E, cnn_get_fn get, void *ctx, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    uint32_t v;
    if (gguf_get_u32(g, "clip.vision.image_size", &v) || v < 8 || v > 4096) {
        snprintf(err, errlen, "missing or invalid key 'clip.vision.image_size'");
        return CXR_ERR_FORMAT;
    }
    c->S = (int)v;
    c->cin = 1;
    if (gguf_get_u32(g, "clip.vision.in_channels", &v) == 0) c->cin = (int)v;
    if (c->cin != 1 && c->cin != 3) {
        snprintf(err, errlen, "clip.vision.in_channels %d (1 or 3)", c->cin);
        return CXR_ERR_FORMAT;
    }
    int nw = get_u32_arr(g, "clip.vision.cnn.widths", c->widths, CNN_MAX_STAGES + 1);
    int nb = get_u32_arr(g, "clip.vision.cnn.blocks", c->blocks, CNN_MAX_STAGES);
    if (nw < 2 || nb != nw - 1) {
        snprintf(err, errlen, "keys 'clip.vision.cnn.widths' (2..%d values) and 'clip.vision.cnn.blocks' "
                              "(one per stage) are missing or inconsistent", CNN_MAX_STAGES + 1);
        return CXR_ERR_FORMAT;
    }
    for (int i = 0; i < nb; i++)
        if (c->blocks[i] > CNN_MAX_BLOCKS) {
            snprintf(err, errlen, "stage %d has %d blocks (max %d)", i + 1, c->blocks[i], CNN_MAX_BLOCKS);
            return CXR_ERR_FORMAT;
        }
    c->n = nb;
    c->eps = 1e-5f;
    float eps;
    if (gguf_get_f32(g, "clip.vision.attention.layer_norm_epsilon", &eps) == 0) c->eps = eps;
    char nm[64];
    int w0 = c->widths[0];
    c->stem_w = get(ctx, "v.stem.weight", 4, w0, c->cin, 3, 3);
    c->stem_b = get(ctx, "v.stem.bias", 1, w0, 0, 0, 0);
    for (int i = 1; i <= c->n; i++) {
        int ci = c->widths[i], cp = c->widths[i - 1];
        snprintf(nm, sizeof nm, "v.s%d.down.weight", i);
        c->down_w[i - 1] = get(ctx, nm, 4, ci, cp, 3, 3);
        snprintf(nm, sizeof nm, "v.s%d.down.bias", i);
        c->down_b[i - 1] = get(ctx, nm, 1, ci, 0, 0, 0);
        for (int j = 0; j < c->blocks[i - 1]; j++) {
            cnn_block *b = &c->blk[i - 1][j];
            snprintf(nm, sizeof nm, "v.s%d.b%d.conv1.weight", i, j);
            b->w1 = get(ctx, nm, 4, ci, ci, 3, 3);
            snprintf(nm, sizeof nm, "v.s%d.b%d.conv1.bias", i, j);
            b->b1 = get(ctx, nm, 1, ci, 0, 0, 0);
            snprintf(nm, sizeof nm, "v.s%d.b%d.conv2.weight", i, j);
            b->w2 = get(ctx, nm, 4, ci, ci, 3, 3);
            snprintf(nm, sizeof nm, "v.s%d.b%d.conv2.bias", i, j);
            b->b2 = get(ctx, nm, 1, ci, 0, 0, 0);
        }
    }
    int cn = c->widths[c->n];
    c->ln_w = get(ctx, "v.post_ln.weight", 1, cn, 0, 0, 0);
    c->ln_b = get(ctx, "v.post_ln.bias", 1, cn, 0, 0, 0);
    c->proj_w = get(ctx, "v.proj.weight", 2, E, cn, 0, 0);
    if (!c->proj_w || !c->ln_b || !c->ln_w) return err[0] ? CXR_ERR_SHAPE : CXR_ERR_MISSING;
    if (!gemm_available()) return CXR_OK; /* OpenBLAS on the im2col matrix */
    /* every convolution packed, in parallel on the pool */
    conv_pack_job jobs[1 + CNN_MAX_STAGES * (1 + 2 * CNN_MAX_BLOCKS)];
    int nj = 0;
    jobs[nj++] = (conv_pack_job){&c->stem_cv, c->stem_w, c->stem_b, w0, c->cin, 3, 2, 1};
    for (int i = 1; i <= c->n; i++) {
        int ci = c->widths[i];
        jobs[nj++] = (conv_pack_job){&c->down_cv[i - 1], c->down_w[i - 1], c->down_b[i - 1], ci, c->widths[i - 1], 3, 2, 1};
        for (int j = 0; j < c->blocks[i - 1]; j++) {
            const cnn_block *b = &c->blk[i - 1][j];
            jobs[nj++] = (conv_pack_job){&c->blk_cv[i - 1][j][0], b->w1, b->b1, ci, ci, 3, 1, 1};
            jobs[nj++] = (conv_pack_job){&c->blk_cv[i - 1][j][1], b->w2, b->b2, ci, ci, 3, 1, 1};
        }
    }
    int bad = conv_pack_all(jobs, nj);
    int64_t row = 9LL * c->cin;
    for (int i = 0; i <= c->n; i++)
        if (9LL * c->widths[i] > row) row = 9LL * c->widths[i];
    if (bad || conv_ws_reserve(&c->ws, row) != 0) {
        cnn_free(c);
        snprintf(err, errlen, "out of memory packing the CNN tower");
        return CXR_ERR_NOMEM;
    }
    c->packed = 1;
    return CXR_OK;
}

void cnn_free(cnn_w *c) {
    if (!c) return;
    conv_free(&c->stem_cv);
    for (int i = 0; i < CNN_MAX_STAGES; i++) {
        conv_free(&c->down_cv[i]);
        for (int j = 0; j < CNN_MAX_BLOCKS; j++) {
            conv_free(&c->blk_cv[i][j][0]);
            conv_free(&c->blk_cv[i][j][1]);
        }
    }
    conv_ws_free(&c->ws);
    c->packed = 0;
}

/* Per image: input HWC copy, two activation buffers, one block temporary,
 * and the im2col matrix of the largest layer. */
int64_t cnn_scratch_len(const cnn_w *c, int size) {
    int64_t s = conv_out(size), act = s * s * c->widths[0], col = s * s * (int64_t)c->cin * 9;
    for (int i = 1; i <= c->n; i++) {
        int64_t so = conv_out((int)s);
        int64_t down = so * so * c->widths[i - 1] * 9, blk = so * so * (int64_t)c->widths[i] * 9;
        if (down > col) col = down;
        if (c->blocks[i - 1] && blk > col) col = blk;
        if (so * so * c->widths[i] > act) act = so * so * c->widths[i];
        s = so;
    }
    return (int64_t)size * size * c->cin + 3 * act + col;
}

/* im2col rows [lo, hi) of the output (one output row oy = all its ox) */
typedef struct {
    float *col;
    const float *in;
    int H, W, ci, wo, stride;
} im2col_job;

static void im2col_rows(void *ctx, int64_t lo, int64_t hi) {
    const im2col_job *j = ctx;
    const int H = j->H, W = j->W, ci = j->ci, wo = j->wo, stride = j->stride;
    int64_t k = (int64_t)ci * 9;
    for (int oy = (int)lo; oy < (int)hi; oy++)
        for (int ox = 0; ox < wo; ox++) {
            float *row = j->col + ((int64_t)oy * wo + ox) * k;
            for (int ky = 0; ky < 3; ky++) {
                int iy = oy * stride + ky - 1;
                for (int kx = 0; kx < 3; kx++) {
                    int ix = ox * stride + kx - 1;
                    int inside = iy >= 0 && iy < H && ix >= 0 && ix < W;
                    const float *src = j->in + ((int64_t)iy * W + ix) * ci;
                    for (int c = 0; c < ci; c++) row[c * 9 + ky * 3 + kx] = inside ? src[c] : 0.0f;
                }
            }
        }
}

/* conv3x3_forward: out[Ho·Wo, co] = relu(im2col(in[H·W, ci]) · w[co, ci·9]ᵀ + b (+ res)) */
static void conv3x3_forward(float *out, const float *in, const float *w, const float *b, const float *res,
                            float *col, int H, int W, int ci, int co, int stride, int *Ho, int *Wo) {
    int ho = stride == 2 ? conv_out(H) : H, wo = stride == 2 ? conv_out(W) : W;
    int64_t k = (int64_t)ci * 9;
    im2col_job j = {col, in, H, W, ci, wo, stride};
    pool_for(ho, 8, im2col_rows, &j);
    int64_t n = (int64_t)ho * wo;
    linear_forward(out, col, w, b, (int)n, (int)k, co);
    if (res) add_forward(out, res, n * co);
    relu_forward(out, n * co);
    *Ho = ho;
    *Wo = wo;
}

int cnn_forward(cnn_w *c, const float *in, int in_channels, int size, float *scratch, float *fmap,
                float *pooled) {
    if (size < 8 || (in_channels != 1 && in_channels != 3)) return CXR_ERR_ARG;
    int64_t plane = (int64_t)size * size;
    float *x0 = scratch;
    /* CHW → HWC with the tower's channel count */
    for (int64_t p = 0; p < plane; p++) {
        if (c->cin == 1)
            x0[p] = in_channels == 1 ? in[p] : (in[p] + in[p + plane] + in[p + 2 * plane]) / 3.0f;
        else
            for (int ch = 0; ch < 3; ch++) x0[p * 3 + ch] = in[(in_channels == 3 ? ch : 0) * plane + p];
    }
    int64_t s1 = conv_out(size), act = s1 * s1 * c->widths[0];
    for (int i = 1, s = (int)s1; i <= c->n; i++) {
        s = conv_out(s);
        if ((int64_t)s * s * c->widths[i] > act) act = (int64_t)s * s * c->widths[i];
    }
    float *a = x0 + plane * c->cin, *b = a + act, *t = b + act, *col = t + act;
    int H, W;
    if (c->packed) { /* the AVX2 GEMM: residual add and ReLU in the epilogue */
        if (conv_ws_reserve(&c->ws, c->ws.col_len / CONV_CHUNK) != 0) return CXR_ERR_NOMEM;
        conv_run(&c->ws, &c->stem_cv, CONV_IM2COL, NULL, x0, c->cin, 1, size, size, a, c->widths[0], CONV_RELU, &H,
                 &W);
        for (int i = 1; i <= c->n; i++) {
            int ci = c->widths[i];
            conv_run(&c->ws, &c->down_cv[i - 1], CONV_IM2COL, NULL, a, c->widths[i - 1], 1, H, W, b, ci, CONV_RELU,
                     &H, &W);
            float *tmp = a;
            a = b;
            b = tmp;
            for (int j = 0; j < c->blocks[i - 1]; j++) {
                conv_run(&c->ws, &c->blk_cv[i - 1][j][0], CONV_IM2COL, NULL, a, ci, 1, H, W, t, ci, CONV_RELU, NULL,
                         NULL);
                conv_run(&c->ws, &c->blk_cv[i - 1][j][1], CONV_IM2COL, NULL, t, ci, 1, H, W, a, ci, CONV_ACCUM_RELU,
                         NULL, NULL);
            }
        }
        goto pool;
    }
    conv3x3_forward(a, x0, c->stem_w, c->stem_b, NULL, col, size, size, c->cin, c->widths[0], 2, &H, &W);
    for (int i = 1; i <= c->n; i++) {
        int ci = c->widths[i];
        conv3x3_forward(b, a, c->down_w[i - 1], c->down_b[i - 1], NULL, col, H, W, c->widths[i - 1], ci, 2, &H, &W);
        float *tmp = a;
        a = b;
        b = tmp;
        for (int j = 0; j < c->blocks[i - 1]; j++) {
            const cnn_block *bl = &c->blk[i - 1][j];
            int h2, w2;
            conv3x3_forward(t, a, bl->w1, bl->b1, NULL, col, H, W, ci, ci, 1, &h2, &w2);
            conv3x3_forward(b, t, bl->w2, bl->b2, a, col, H, W, ci, ci, 1, &h2, &w2);
            tmp = a;
            a = b;
            b = tmp;
        }
    }
pool:;
    int cn = c->widths[c->n];
    int64_t locs = (int64_t)H * W;
    memcpy(fmap, a, (size_t)(locs * cn) * sizeof(float));
    for (int ch = 0; ch < cn; ch++) pooled[ch] = 0;
    for (int64_t p = 0; p < locs; p++)
        for (int ch = 0; ch < cn; ch++) pooled[ch] += a[p * cn + ch];
    for (int ch = 0; ch < cn; ch++) pooled[ch] /= (float)locs;
    return CXR_OK;
}
