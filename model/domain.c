/*
 * domain.c — the image-domain checks (FORMAT.md): the cosine of an embedding
 * to the domain prototypes, the density check (squared Mahalanobis distance
 * of the pooled CNN features, computed for image 0 of each embed call) and
 * the layout check (the same distance for the coarse layout of the input
 * tensor); reads their optional blocks at open and answers
 * cxr_model_domain_check. It must not decide what an answer says about a
 * distance (that rule is the caller's, FORMAT.md) nor run a tower.
 */
#include "model_internal.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void domain_load(loader *ld, int C) {
    cxr_model *m = ld->m;
    /* optional density check on the pooled features (FORMAT.md) */
    m->dom_last = NAN;
    m->dom_mean = T1("d.feat_mean", 1, C);
    if (m->dom_mean && !ld->rc) {
        m->dom_prec = T2("d.feat_prec", 0, C, C);
        if (ld->rc) return;
        if (gguf_get_f32(&m->g, "cxr.domain.maha_warn", &m->dom_warn) != 0 ||
            gguf_get_f32(&m->g, "cxr.domain.maha_refuse", &m->dom_refuse) != 0 || !(m->dom_warn > 0) ||
            !(m->dom_refuse >= m->dom_warn)) {
            snprintf(ld->err, ld->errlen, "d.feat_mean present but cxr.domain.maha_warn / maha_refuse missing or "
                                          "inconsistent");
            ld->rc = CXR_ERR_FORMAT;
            return;
        }
        m->dom_diff = malloc((size_t)C * sizeof(float));
        m->dom_emb = calloc((size_t)m->info.embed_dim, sizeof(float));
        if (!m->dom_diff || !m->dom_emb) { ld->rc = CXR_ERR_NOMEM; return; }
    }
    /* optional layout check on the input image itself (FORMAT.md) */
    m->lay_mean = NULL;
    uint32_t G = load_u32(ld, "cxr.domain.layout_grid", 0, 0, 1, 32);
    if (ld->rc) return;
    if (G) {
        int64_t G2 = (int64_t)G * G;
        m->lay_grid = (int)G;
        m->lay_mean = T1("d.layout_mean", 0, G2);
        m->lay_prec = T2("d.layout_prec", 0, G2, G2);
        if (ld->rc) return;
        if (gguf_get_f32(&m->g, "cxr.domain.layout_warn", &m->lay_warn) != 0 ||
            gguf_get_f32(&m->g, "cxr.domain.layout_refuse", &m->lay_refuse) != 0 || !(m->lay_warn > 0) ||
            !(m->lay_refuse >= m->lay_warn) || !isfinite(m->lay_refuse)) {
            snprintf(ld->err, ld->errlen, "cxr.domain.layout_grid present but cxr.domain.layout_warn / layout_refuse "
                                          "missing or inconsistent");
            ld->rc = CXR_ERR_FORMAT;
            return;
        }
    }
}

/* (x - mean)ᵀ P (x - mean) in double; x is overwritten with x - mean. */
static float mahalanobis2(float *x, const float *mean, const float *prec, int n) {
    for (int i = 0; i < n; i++) x[i] -= mean[i];
    double d2 = 0;
    for (int i = 0; i < n; i++) {
        const float *row = prec + (int64_t)i * n;
        double s = 0;
        for (int j = 0; j < n; j++) s += (double)row[j] * x[j];
        d2 += s * x[i];
    }
    return (float)d2;
}

/* The layout check's input (FORMAT.md): the image plane (channel mean) of a
 * size×size model tensor, cropped to its content box (rows and columns that
 * are not entirely the pad value, i.e. pixel 0 after normalisation), then
 * averaged over a G×G grid of blocks [floor(i·n/G), ceil((i+1)·n/G)), as
 * torch's adaptive_avg_pool2d. Writes G² values; -1 for an all-pad image or
 * a model without a usable normalisation. */
static int layout_vector(const cxr_model *m, const float *in, int channels, int size, int G, float *out) {
    const cxr_model_info *in_ = &m->info;
    int64_t plane = (int64_t)size * size;
    if (!(in_->pp_std[0] > 0) || !isfinite(in_->pp_mean[0])) return -1; /* no usable spec: no layout */
    float padv = (0.0f - in_->pp_mean[0]) / in_->pp_std[0];
    if (!isfinite(padv)) return -1;
    float tol = 1e-4f * (fabsf(padv) > 1.0f ? fabsf(padv) : 1.0f);
#define PIX(y, x) (channels == 1 ? in[(int64_t)(y) * size + (x)] \
                                 : (in[(int64_t)(y) * size + (x)] + in[plane + (int64_t)(y) * size + (x)] + \
                                    in[2 * plane + (int64_t)(y) * size + (x)]) / 3.0f)
    int r0 = size, r1 = -1, c0 = size, c1 = -1;
    for (int y = 0; y < size; y++)
        for (int x = 0; x < size; x++)
            if (fabsf(PIX(y, x) - padv) > tol) {
                if (y < r0) r0 = y;
                if (y > r1) r1 = y;
                if (x < c0) c0 = x;
                if (x > c1) c1 = x;
            }
    if (r1 < 0) return -1;
    int h = r1 - r0 + 1, w = c1 - c0 + 1;
    for (int i = 0; i < G; i++) {
        int ya = r0 + (i * h) / G, yb = r0 + ((i + 1) * h + G - 1) / G;
        for (int j = 0; j < G; j++) {
            int xa = c0 + (j * w) / G, xb = c0 + ((j + 1) * w + G - 1) / G;
            double s = 0;
            for (int y = ya; y < yb; y++)
                for (int x = xa; x < xb; x++) s += PIX(y, x);
            out[i * G + j] = (float)(s / ((double)(yb - ya) * (xb - xa)));
        }
    }
#undef PIX
    return 0;
}

void domain_note_image(cxr_model *m, const float *pooled, const float *emb) {
    if (!m->dom_prec) return;
    int C = m->cnn.widths[m->cnn.n];
    memcpy(m->dom_diff, pooled, (size_t)C * sizeof(float));
    m->dom_last = mahalanobis2(m->dom_diff, m->dom_mean, m->dom_prec, C);
    memcpy(m->dom_emb, emb, (size_t)m->info.embed_dim * sizeof(float));
}

/* Max cosine of img to the domain prototypes; NaN without prototypes. */
static float prototype_score(const cxr_model *m, const float *img) {
    if (m->fs.n_proto < 1) return NAN;
    int E = m->info.embed_dim;
    float best = -2.0f;
    for (int k = 0; k < m->fs.n_proto; k++) {
        const float *pr = m->fs.proto + (int64_t)k * E;
        float s = 0;
        for (int c = 0; c < E; c++) s += pr[c] * img[c];
        if (s > best) best = s;
    }
    return best;
}

int cxr_model_domain_check(const cxr_model *m, const float *in, int channels, int size, const float *img,
                           cxr_domain_check *out) {
    if (out) {
        out->score = out->score_threshold = NAN;
        out->distance = out->distance_warn = out->distance_refuse = NAN;
        out->layout_distance = out->layout_warn = out->layout_refuse = NAN;
    }
    if (!m || !in || !img || !out || (channels != 1 && channels != 3) || size < 1) return CXR_ERR_ARG;
    int rc = CXR_OK;
    out->score = prototype_score(m, img);
    out->score_threshold = m->fs.domain_threshold;
    if (m->dom_prec) {
        out->distance_warn = m->dom_warn;
        out->distance_refuse = m->dom_refuse;
        /* the pooled features are the embed call's: only for its image 0 */
        if (!memcmp(img, m->dom_emb, (size_t)m->info.embed_dim * sizeof(float))) out->distance = m->dom_last;
        else rc = CXR_ERR_ARG;
    }
    if (m->lay_mean) {
        int G = m->lay_grid;
        float x[32 * 32];
        out->layout_warn = m->lay_warn;
        out->layout_refuse = m->lay_refuse;
        if (size == m->cnn.S && layout_vector(m, in, channels, size, G, x) == 0) /* fitted at the model's own size only */
            out->layout_distance = mahalanobis2(x, m->lay_mean, m->lay_prec, G * G);
    }
    return rc;
}
