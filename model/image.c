/*
 * image.c — the image tower's entry points: picks the tower the file names
 * (ViT in vit.c, the residual CNN, or a classifier's DenseNet / ResNet in
 * convnet.c), glues the CNN forward of cnn.c to the model (its weights,
 * buffers, pooling, projection and evidence cells) and the classifier's to
 * its head and activation maps, and answers patch-similarity queries on
 * image 0 of the last embed call. It
 * must not know the ViT's or the CNN's internals beyond their entry points,
 * nor compute the domain checks (domain.c) or text.
 */
#include "model_internal.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* ------------------------------------------------------------- loading */

/* cnn_load's tensor lookup: load_f32 with the loader as context */
static const float *cnn_get(void *ctx, const char *name, int n, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    return load_f32((loader *)ctx, name, 0, n, d0, d1, d2, d3);
}

static void cnn_tower_load(loader *ld, int E) {
    cxr_model *m = ld->m;
    int rc = cnn_load(&m->cnn, &m->g, E, cnn_get, ld, ld->err, ld->errlen);
    if (ld->rc) return; /* the lookup reported a missing or misshapen tensor */
    if (rc) {
        ld->rc = rc;
        return;
    }
    cxr_model_info *in = &m->info;
    m->is_cnn = 1;
    in->image_size = m->cnn.S;
    in->patch_size = m->cnn.S / cnn_grid(&m->cnn, m->cnn.S); /* pixels per evidence cell */
    in->vision_width = m->cnn.widths[m->cnn.n];
    in->vision_layers = m->cnn.n;
    in->vision_eps = m->cnn.eps;
    snprintf(in->vision_arch, sizeof in->vision_arch, "cnn");
    snprintf(in->vision_act, sizeof in->vision_act, "relu");
    domain_load(ld, m->cnn.widths[m->cnn.n]);
}

/* convnet_load's tensor lookup */
static const float *cv_get(void *ctx, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                           int64_t d3) {
    return load_f32((loader *)ctx, name, optional, n, d0, d1, d2, d3);
}

static void classifier_tower_load(loader *ld, const char *varch, int K) {
    cxr_model *m = ld->m;
    int rc = convnet_load(&m->cv, &m->g, varch, K, cv_get, ld, ld->err, ld->errlen);
    if (ld->rc) return;
    if (rc) {
        ld->rc = rc;
        return;
    }
    /* the packed copies replace the convolution weights' pages of the mapping */
    for (uint64_t i = 0; i < m->g.n_tensors; i++) {
        const gguf_tensor *t = &m->g.tensors[i];
        int n = t->name_len < 64 ? (int)t->name_len : 63;
        if (n > 9 && !strncmp(t->name, "v.", 2) && !strncmp(t->name + n - 7, ".weight", 7))
            model_release(m, t->data, (size_t)t->n_elems * (t->dtype == GGML_F32 ? 4 : 2));
    }
    cxr_model_info *in = &m->info;
    int g = convnet_grid(&m->cv, m->cv.S);
    in->image_size = m->cv.S;
    in->patch_size = m->cv.S / g; /* pixels per activation-map cell */
    in->vision_width = m->cv.C;
    in->vision_layers = m->cv.blocks[0] + m->cv.blocks[1] + m->cv.blocks[2] + m->cv.blocks[3];
    snprintf(in->vision_arch, sizeof in->vision_arch, "%s", varch);
    snprintf(in->vision_act, sizeof in->vision_act, "relu");
    m->cv_fmap = malloc((size_t)g * g * m->cv.C * sizeof(float));
    if (!m->cv_fmap) ld->rc = CXR_ERR_NOMEM;
}

void image_load(loader *ld, int E) {
    char varch[16] = "vit";
    gguf_get_str(&ld->m->g, "clip.vision.architecture", varch, sizeof varch);
    if (ld->m->is_classifier) {
        if (strcmp(varch, "densenet") && strcmp(varch, "resnet")) {
            snprintf(ld->err, ld->errlen, "clip.vision.architecture '%s' unknown for a classifier (densenet or resnet)",
                     varch);
            ld->rc = CXR_ERR_FORMAT;
            return;
        }
        classifier_tower_load(ld, varch, E);
        return;
    }
    if (!strcmp(varch, "cnn")) {
        cnn_tower_load(ld, E);
        return;
    }
    if (strcmp(varch, "vit")) {
        snprintf(ld->err, ld->errlen, "clip.vision.architecture '%s' unknown (vit or cnn)", varch);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    vit_load(ld, E);
}

/* ------------------------------------------------------------- forward */

/* CNN tower: one image at a time (activations are per image). Evidence
 * cells are the final feature map's locations through post_ln + proj. */
static int cnn_embed(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
    cnn_w *c = &m->cnn;
    int g = cnn_grid(c, size), cn = c->widths[c->n], E = m->info.embed_dim;
    if (batch < 1 || batch > m->params.max_batch || (channels != 1 && channels != 3) || size < 16 ||
        size > 4 * c->S || g < 1)
        return CXR_ERR_ARG;
    int64_t need = cnn_scratch_len(c, size);
    if (need > m->cnn_scratch_cap || g > cnn_grid(c, c->S)) {
        float *sc = realloc(m->cnn_scratch, (size_t)need * sizeof(float));
        if (!sc) return CXR_ERR_NOMEM;
        m->cnn_scratch = sc;
        m->cnn_scratch_cap = need;
        float *fm = realloc(m->cnn_fmap, (size_t)g * g * cn * sizeof(float));
        if (!fm) return CXR_ERR_NOMEM;
        m->cnn_fmap = fm;
    }
    kernels_set_threads(m->params.threads);
    float *pooled = m->cnn_pooled, *normed = m->cnn_pooled + (cn > E ? cn : E);
    for (int b = 0; b < batch; b++) {
        int rc = cnn_forward(c, in + (int64_t)b * channels * size * size, channels, size, m->cnn_scratch,
                             m->cnn_fmap, pooled);
        if (rc) return rc;
        layernorm_forward(normed, pooled, c->ln_w, c->ln_b, 1, cn, c->eps);
        linear_forward(out + (int64_t)b * E, normed, c->proj_w, NULL, 1, cn, E);
        l2norm_forward(out + (int64_t)b * E, E);
        if (b == 0) {
            domain_note_image(m, pooled, out);
            if (g == cnn_grid(c, c->S)) {
                int64_t locs = (int64_t)g * g;
                layernorm_forward(m->cnn_fmap, m->cnn_fmap, c->ln_w, c->ln_b, (int)locs, cn, c->eps);
                linear_forward(m->patch_emb, m->cnn_fmap, c->proj_w, NULL, (int)locs, cn, E);
                for (int64_t i = 0; i < locs; i++) l2norm_forward(m->patch_emb + i * E, E);
                m->patch_grid = g;
            } else {
                m->patch_grid = 0;
            }
        }
    }
    return CXR_OK;
}

/* Classifier: logits, and image 0's feature map for its activation maps. */
static int classifier_embed(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
    if (batch < 1 || batch > m->params.max_batch || size < 32 || size > 4 * m->cv.S) return CXR_ERR_ARG;
    kernels_set_threads(m->params.threads);
    int own = size == m->cv.S;
    int rc = convnet_forward(&m->cv, in, batch, channels, size, out, own ? m->cv_fmap : NULL);
    m->patch_grid = rc == CXR_OK && own ? convnet_grid(&m->cv, size) : 0;
    return rc;
}

int cxr_model_finding_cam(const cxr_model *m, int i, float *out, int *grid) {
    if (!m || !out || !grid || !m->is_classifier || !m->patch_grid || i < 0 || i >= m->fs.n) return CXR_ERR_ARG;
    int o = m->fs.f[i].output, C = m->cv.C, N = m->patch_grid * m->patch_grid;
    const float *w = m->cv.head_w + (int64_t)o * C;
    for (int p = 0; p < N; p++) {
        const float *f = m->cv_fmap + (int64_t)p * C;
        double s = 0;
        for (int c = 0; c < C; c++) s += (double)w[c] * f[c];
        out[p] = (float)(s + m->cv.head_b[o]);
    }
    *grid = m->patch_grid;
    return CXR_OK;
}

int cxr_model_embed_image(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
    if (!m || !in || !out) return CXR_ERR_ARG;
    if (!m->info.has_vision) return CXR_ERR_ARG;
    if (m->is_classifier) return classifier_embed(m, in, batch, channels, size, out);
    if (m->is_cnn) return cnn_embed(m, in, batch, channels, size, out);
    return vit_embed(m, in, batch, channels, size, out);
}

int cxr_model_patch_similarity(const cxr_model *m, const float *text_emb, float *out, int *grid) {
    if (!m || !text_emb || !out || !grid || m->is_classifier) return CXR_ERR_ARG;
    if (!m->patch_grid) return CXR_ERR_ARG;
    int N = m->patch_grid * m->patch_grid, E = m->info.embed_dim;
    for (int i = 0; i < N; i++) {
        const float *p = m->patch_emb + (int64_t)i * E;
        float s = 0;
        for (int c = 0; c < E; c++) s += p[c] * text_emb[c];
        out[i] = s;
    }
    *grid = m->patch_grid;
    return CXR_OK;
}
