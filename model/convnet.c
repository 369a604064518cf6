/*
 * convnet.c — forward pass of the classifier towers (convnet.h): DenseNet
 * (dense blocks of pre-activation BN-ReLU-1×1 / BN-ReLU-3×3 layers whose
 * outputs are concatenated, transitions BN-ReLU-1×1-avgpool) and ResNet
 * (v1.5 bottlenecks), then global average pooling and the linear head; the
 * convolutions themselves are conv.c's. Buffers are the tower's own (sized
 * for the largest input seen).
 * It must not know about files beyond the lookup callback and gguf keys.
 */
#include "convnet.h"
#include "cxr_model.h"
#include "pool.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define out_side conv_out_side

/* ------------------------------------------------------------- loading */

typedef struct {
    cv_get_fn get;
    void *ctx;
    char *err;
    size_t errlen;
    int rc;
    int64_t col_max; /* widest gathered row of any convolution */
} ldr;

/* A convolution (co, ci, k, k) with optional bias, packed (conv.c). */
static void conv_load(ldr *l, cv_conv *c, const char *name, int co, int ci, int k, int stride, int pad, int bias) {
    memset(c, 0, sizeof *c);
    if (l->rc) return;
    char nm[96];
    snprintf(nm, sizeof nm, "%s.weight", name);
    const float *w = l->get(l->ctx, nm, 0, 4, co, ci, k, k);
    const float *b = NULL;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", name);
        b = l->get(l->ctx, nm, 0, 1, co, 0, 0, 0);
    }
    if (!w || (bias && !b)) {
        if (!l->rc) l->rc = CXR_ERR_MISSING;
        return;
    }
    if ((int64_t)k * k * ci > l->col_max) l->col_max = (int64_t)k * k * ci;
    if (conv_pack(c, w, b, co, ci, k, stride, pad) != 0) l->rc = CXR_ERR_NOMEM;
}

static void affine_load(ldr *l, cv_affine *a, const char *name, int c) {
    char nm[96];
    if (l->rc) return;
    snprintf(nm, sizeof nm, "%s.scale", name);
    a->scale = l->get(l->ctx, nm, 0, 1, c, 0, 0, 0);
    snprintf(nm, sizeof nm, "%s.shift", name);
    a->shift = l->get(l->ctx, nm, 0, 1, c, 0, 0, 0);
    if ((!a->scale || !a->shift) && !l->rc) l->rc = CXR_ERR_MISSING;
    if (c > l->col_max) l->col_max = c;
}

static int u32_key(const gguf_file *g, const char *key, int lo, int hi, int *out, char *err, size_t errlen) {
    uint32_t v;
    if (gguf_get_u32(g, key, &v) || (int64_t)v < lo || (int64_t)v > hi) {
        snprintf(err, errlen, "missing or invalid key '%s' (%d..%d)", key, lo, hi);
        return CXR_ERR_FORMAT;
    }
    *out = (int)v;
    return CXR_OK;
}

static int blocks_key(const gguf_file *g, const char *key, int *out, char *err, size_t errlen) {
    uint32_t v[CV_STAGES];
    if (gguf_get_u32_arr(g, key, v, CV_STAGES) != CV_STAGES) {
        snprintf(err, errlen, "key '%s' must hold %d block counts", key, CV_STAGES);
        return CXR_ERR_FORMAT;
    }
    for (int i = 0; i < CV_STAGES; i++) {
        if (v[i] < 1 || v[i] > 128) {
            snprintf(err, errlen, "key '%s': stage %d has %u blocks (1..128)", key, i + 1, v[i]);
            return CXR_ERR_FORMAT;
        }
        out[i] = (int)v[i];
    }
    return CXR_OK;
}

static int layers_total(const convnet *c) {
    int n = 0;
    for (int i = 0; i < CV_STAGES; i++) n += c->blocks[i];
    return n;
}

static void densenet_load(ldr *l, convnet *c, const gguf_file *g) {
    int rc = blocks_key(g, "clip.vision.densenet.blocks", c->blocks, l->err, l->errlen);
    if (!rc) rc = u32_key(g, "clip.vision.densenet.growth", 1, 1024, &c->growth, l->err, l->errlen);
    if (!rc) rc = u32_key(g, "clip.vision.densenet.init_features", 1, 4096, &c->init, l->err, l->errlen);
    if (!rc) rc = u32_key(g, "clip.vision.densenet.bn_size", 1, 64, &c->bn_size, l->err, l->errlen);
    if (rc) {
        l->rc = rc;
        return;
    }
    int n = layers_total(c), G = c->growth, B = c->bn_size * G;
    c->norm1 = calloc((size_t)n, sizeof *c->norm1);
    c->conv1 = calloc((size_t)n, sizeof *c->conv1);
    c->conv2 = calloc((size_t)n, sizeof *c->conv2);
    if (!c->norm1 || !c->conv1 || !c->conv2) {
        l->rc = CXR_ERR_NOMEM;
        return;
    }
    conv_load(l, &c->stem, "v.conv0", c->init, c->cin, 7, 2, 3, 1);
    char nm[64];
    int ch = c->init, li = 0;
    for (int b = 0; b < CV_STAGES; b++) {
        for (int j = 0; j < c->blocks[b]; j++, li++) {
            snprintf(nm, sizeof nm, "v.db%d.l%d.norm1", b + 1, j + 1);
            affine_load(l, &c->norm1[li], nm, ch + j * G);
            snprintf(nm, sizeof nm, "v.db%d.l%d.conv1", b + 1, j + 1);
            conv_load(l, &c->conv1[li], nm, B, ch + j * G, 1, 1, 0, 1);
            snprintf(nm, sizeof nm, "v.db%d.l%d.conv2", b + 1, j + 1);
            conv_load(l, &c->conv2[li], nm, G, B, 3, 1, 1, 0);
        }
        ch += c->blocks[b] * G;
        if (b < CV_STAGES - 1) {
            snprintf(nm, sizeof nm, "v.tr%d.norm", b + 1);
            affine_load(l, &c->tr_norm[b], nm, ch);
            snprintf(nm, sizeof nm, "v.tr%d.conv", b + 1);
            conv_load(l, &c->tr_conv[b], nm, ch / 2, ch, 1, 1, 0, 0);
            ch /= 2;
        }
    }
    affine_load(l, &c->norm5, "v.norm5", ch);
    c->C = ch;
}

static void resnet_load(ldr *l, convnet *c, const gguf_file *g) {
    int rc = blocks_key(g, "clip.vision.resnet.blocks", c->blocks, l->err, l->errlen);
    if (!rc) rc = u32_key(g, "clip.vision.resnet.width", 1, 1024, &c->width, l->err, l->errlen);
    if (rc) {
        l->rc = rc;
        return;
    }
    int n = layers_total(c);
    c->c1 = calloc((size_t)n, sizeof *c->c1);
    c->c2 = calloc((size_t)n, sizeof *c->c2);
    c->c3 = calloc((size_t)n, sizeof *c->c3);
    c->down = calloc((size_t)n, sizeof *c->down);
    if (!c->c1 || !c->c2 || !c->c3 || !c->down) {
        l->rc = CXR_ERR_NOMEM;
        return;
    }
    conv_load(l, &c->stem, "v.conv1", c->width, c->cin, 7, 2, 3, 1);
    char nm[64];
    int cin = c->width, bi = 0;
    for (int s = 0; s < CV_STAGES; s++) {
        int M = c->width << s;
        for (int j = 0; j < c->blocks[s]; j++, bi++) {
            int st = s > 0 && j == 0 ? 2 : 1;
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv1", s + 1, j);
            conv_load(l, &c->c1[bi], nm, M, cin, 1, 1, 0, 1);
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv2", s + 1, j);
            conv_load(l, &c->c2[bi], nm, M, M, 3, st, 1, 1);
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv3", s + 1, j);
            conv_load(l, &c->c3[bi], nm, 4 * M, M, 1, 1, 0, 1);
            if (j == 0) {
                snprintf(nm, sizeof nm, "v.layer%d.%d.downsample", s + 1, j);
                conv_load(l, &c->down[bi], nm, 4 * M, cin, 1, st, 0, 1);
            }
            cin = 4 * M;
        }
    }
    c->C = cin;
}

int convnet_load(convnet *c, const gguf_file *g, const char *arch, int K, cv_get_fn get, void *ctx, char *err,
                 size_t errlen) {
    memset(c, 0, sizeof *c);
    ldr l = {get, ctx, err, errlen, 0, 0};
    c->K = K;
    c->arch = !strcmp(arch, "densenet") ? CV_DENSENET : !strcmp(arch, "resnet") ? CV_RESNET : 0;
    int rc = u32_key(g, "clip.vision.image_size", 32, 4096, &c->S, err, errlen);
    if (rc) return rc;
    c->cin = 1;
    uint32_t v;
    if (gguf_get_u32(g, "clip.vision.in_channels", &v) == 0) c->cin = (int)v;
    if (c->cin != 1 && c->cin != 3) {
        snprintf(err, errlen, "clip.vision.in_channels %d (1 or 3)", c->cin);
        return CXR_ERR_FORMAT;
    }
    if (c->arch == CV_DENSENET) densenet_load(&l, c, g);
    else resnet_load(&l, c, g);
    if (!l.rc) {
        c->head_w = get(ctx, "c.head.weight", 0, 2, K, c->C, 0, 0);
        c->head_b = get(ctx, "c.head.bias", 0, 1, K, 0, 0, 0);
        if (!c->head_w || !c->head_b) l.rc = CXR_ERR_MISSING;
    }
    if (l.rc) {
        convnet_free(c);
        return l.rc; /* the lookup has set err (and the loader its own code) */
    }
    if (conv_ws_reserve(&c->ws, l.col_max) != 0) {
        convnet_free(c);
        return CXR_ERR_NOMEM;
    }
    if (convnet_grid(c, c->S) < 1) {
        snprintf(err, errlen, "clip.vision.image_size %d is too small for this tower", c->S);
        convnet_free(c);
        return CXR_ERR_FORMAT;
    }
    return CXR_OK;
}

void convnet_free(convnet *c) {
    if (!c) return;
    int n = layers_total(c);
    conv_free(&c->stem);
    for (int i = 0; i < n; i++) {
        if (c->conv1) conv_free(&c->conv1[i]);
        if (c->conv2) conv_free(&c->conv2[i]);
        if (c->c1) conv_free(&c->c1[i]);
        if (c->c2) conv_free(&c->c2[i]);
        if (c->c3) conv_free(&c->c3[i]);
        if (c->down) conv_free(&c->down[i]);
    }
    for (int i = 0; i < CV_STAGES - 1; i++) conv_free(&c->tr_conv[i]);
    free(c->norm1); free(c->conv1); free(c->conv2);
    free(c->c1); free(c->c2); free(c->c3); free(c->down);
    for (int i = 0; i < 4; i++) free(c->act[i]);
    conv_ws_free(&c->ws);
    memset(c, 0, sizeof *c);
}

/* ------------------------------------------------------------ geometry */

int convnet_grid(const convnet *c, int size) {
    if (size < 16) return 0;
    int h = out_side(out_side(size, 7, 2, 3), 3, 2, 1);
    for (int s = 1; s < CV_STAGES; s++) h = c->arch == CV_DENSENET ? h / 2 : out_side(h, 3, 2, 1);
    return h;
}

/* Floats each activation buffer needs for batch images of side size:
 * [0] and its partner ([2] DenseNet, [3] ResNet) hold stage tensors, [1]
 * the input and bottlenecks, the rest bottlenecks / shortcuts. */
static void plan(const convnet *c, int batch, int size, int64_t len[4]) {
    int64_t B = batch;
    int h1 = out_side(size, 7, 2, 3), h = out_side(h1, 3, 2, 1);
    int64_t stem = B * h1 * h1 * (c->arch == CV_DENSENET ? c->init : c->width);
    int64_t big = stem, mid = B * size * size * c->cin, mid2 = 0;
    if (c->arch == CV_DENSENET) {
        int ch = c->init;
        for (int b = 0; b < CV_STAGES; b++) {
            int cf = ch + c->blocks[b] * c->growth;
            int64_t cat = B * h * h * cf, u = B * h * h * c->bn_size * c->growth;
            if (cat > big) big = cat;
            if (u > mid) mid = u;
            if (cat > mid) mid = cat; /* the final feature map after norm5 (last block) */
            ch = cf / 2;
            if (b < CV_STAGES - 1) h /= 2;
        }
        len[0] = len[2] = big;
        len[1] = mid;
        len[3] = 0;
    } else {
        int cin = c->width;
        for (int s = 0; s < CV_STAGES; s++) {
            int M = c->width << s, ho = s > 0 ? out_side(h, 3, 2, 1) : h;
            int64_t x = B * h * h * cin, u1 = B * h * h * M, u2 = B * ho * ho * M, o = B * ho * ho * 4 * M;
            if (x > big) big = x;
            if (o > big) big = o;
            if (u1 > mid) mid = u1;
            if (u2 > mid2) mid2 = u2;
            cin = 4 * M;
            h = ho;
        }
        len[0] = len[3] = big;
        len[1] = mid;
        len[2] = mid2;
    }
}

static int ensure(convnet *c, int batch, int size) {
    if (conv_ws_reserve(&c->ws, c->ws.col_len / CONV_CHUNK) != 0) return CXR_ERR_NOMEM; /* more threads since load */
    if (batch <= c->cap_batch && size <= c->cap_size) return CXR_OK;
    int nb = batch > c->cap_batch ? batch : c->cap_batch, ns = size > c->cap_size ? size : c->cap_size;
    int64_t len[4];
    plan(c, nb, ns, len);
    for (int i = 0; i < 4; i++) {
        free(c->act[i]);
        c->act[i] = len[i] ? malloc((size_t)len[i] * sizeof(float)) : NULL;
        if (len[i] && !c->act[i]) return CXR_ERR_NOMEM;
    }
    c->cap_batch = nb;
    c->cap_size = ns;
    return CXR_OK;
}

/* Stem: input CHW images → rows, 7×7 stride-2 convolution + ReLU into tmp,
 * max pool into out (row stride ldo). *side = the pooled side. */
static void stem(convnet *c, const float *in, int batch, int in_ch, int size, float *rows, float *tmp, float *out,
                 int ldo, int *side) {
    int64_t plane = (int64_t)size * size;
    for (int b = 0; b < batch; b++) {
        const float *x = in + (int64_t)b * in_ch * plane;
        float *d = rows + (int64_t)b * plane * c->cin;
        for (int64_t p = 0; p < plane; p++) {
            if (c->cin == 1)
                d[p] = in_ch == 1 ? x[p] : (x[p] + x[p + plane] + x[p + 2 * plane]) / 3.0f;
            else
                for (int ch = 0; ch < 3; ch++) d[p * 3 + ch] = x[(in_ch == 3 ? ch : 0) * plane + p];
        }
    }
    int h1, w1;
    conv_run(&c->ws, &c->stem, CONV_IM2COL, NULL, rows, c->cin, batch, size, size, tmp, c->stem.co, CONV_RELU, &h1,
             &w1);
    conv_maxpool3s2(tmp, batch, h1, w1, c->stem.co, out, ldo, side, NULL);
}

/* ------------------------------------------------------------- towers */

/* DenseNet: returns the final feature map (rows × C, after norm5 + ReLU). */
static float *densenet(convnet *c, const float *in, int batch, int in_ch, int size) {
    float *cat = c->act[0], *u = c->act[1], *other = c->act[2];
    int G = c->growth, Bn = c->bn_size * G, ch = c->init, h, li = 0;
    int cf = ch + c->blocks[0] * G;
    stem(c, in, batch, in_ch, size, c->act[1], other, cat, cf, &h);
    for (int b = 0; b < CV_STAGES; b++) {
        cf = ch + c->blocks[b] * G;
        for (int j = 0; j < c->blocks[b]; j++, li++) {
            int cl = ch + j * G;
            conv_run(&c->ws, &c->conv1[li], CONV_AFFINE, &c->norm1[li], cat, cf, batch, h, h, u, Bn, CONV_RELU, NULL, NULL);
            conv_run(&c->ws, &c->conv2[li], CONV_IM2COL, NULL, u, Bn, batch, h, h, cat + cl, cf, CONV_PLAIN, NULL, NULL);
        }
        if (b < CV_STAGES - 1) {
            int nf = cf / 2 + c->blocks[b + 1] * G, h2;
            conv_run(&c->ws, &c->tr_conv[b], CONV_AFFINE_POOL, &c->tr_norm[b], cat, cf, batch, h, h, other, nf, CONV_PLAIN,
                     &h2, NULL);
            float *t = cat;
            cat = other;
            other = t;
            ch = cf / 2;
            h = h2;
        }
    }
    int64_t rows = (int64_t)batch * h * h;
    for (int64_t r = 0; r < rows; r++) conv_affine_relu(u + r * cf, cat + r * cf, &c->norm5, cf);
    return u;
}

static float *resnet(convnet *c, const float *in, int batch, int in_ch, int size) {
    float *x = c->act[0], *u1 = c->act[1], *u2 = c->act[2], *d = c->act[3];
    int h, cin = c->width, bi = 0;
    stem(c, in, batch, in_ch, size, c->act[1], d, x, cin, &h);
    for (int s = 0; s < CV_STAGES; s++) {
        int M = c->width << s;
        for (int j = 0; j < c->blocks[s]; j++, bi++) {
            int ho;
            conv_run(&c->ws, &c->c1[bi], CONV_DIRECT, NULL, x, cin, batch, h, h, u1, M, CONV_RELU, NULL, NULL);
            conv_run(&c->ws, &c->c2[bi], CONV_IM2COL, NULL, u1, M, batch, h, h, u2, M, CONV_RELU, &ho, NULL);
            float *res = x;
            if (c->down[bi].pk.panels) {
                const cv_conv *dn = &c->down[bi];
                conv_run(&c->ws, dn, dn->stride > 1 ? CONV_SUBSAMPLE : CONV_DIRECT, NULL, x, cin, batch, h, h, d, 4 * M,
                         CONV_PLAIN, NULL, NULL);
                res = d;
                d = x;
            }
            conv_run(&c->ws, &c->c3[bi], CONV_DIRECT, NULL, u2, M, batch, ho, ho, res, 4 * M, CONV_ACCUM_RELU, NULL, NULL);
            x = res;
            cin = 4 * M;
            h = ho;
        }
    }
    c->act[0] = x; /* the partner buffers may have swapped */
    c->act[3] = d;
    return x;
}

int convnet_forward(convnet *c, const float *in, int batch, int in_channels, int size, float *logits,
                    float *fmap0) {
    if (!c || !in || !logits || batch < 1 || (in_channels != 1 && in_channels != 3)) return CXR_ERR_ARG;
    int g = convnet_grid(c, size);
    if (g < 1) return CXR_ERR_ARG;
    /* one image at a time: its activations stay in cache (stacking a batch
       of 8 into each GEMM measured 2.2× slower per image on DenseNet-121) */
    int rc = ensure(c, 1, size);
    if (rc) return rc;
    int64_t locs = (int64_t)g * g, plane = (int64_t)in_channels * size * size;
    double *mean = malloc((size_t)c->C * sizeof *mean);
    if (!mean) return CXR_ERR_NOMEM;
    for (int b = 0; b < batch; b++) {
        const float *fb = c->arch == CV_DENSENET ? densenet(c, in + b * plane, 1, in_channels, size)
                                                 : resnet(c, in + b * plane, 1, in_channels, size);
        for (int ch = 0; ch < c->C; ch++) mean[ch] = 0;
        for (int64_t p = 0; p < locs; p++)
            for (int ch = 0; ch < c->C; ch++) mean[ch] += fb[p * c->C + ch];
        for (int k = 0; k < c->K; k++) {
            const float *w = c->head_w + (int64_t)k * c->C;
            double s = 0;
            for (int ch = 0; ch < c->C; ch++) s += w[ch] * mean[ch];
            logits[(int64_t)b * c->K + k] = (float)(s / (double)locs + c->head_b[k]);
        }
        if (b == 0 && fmap0) memcpy(fmap0, fb, (size_t)(locs * c->C) * sizeof(float));
    }
    free(mean);
    return CXR_OK;
}
