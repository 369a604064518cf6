/*
 * vit.c — the ViT image tower: reads its keys and weights (blocks through
 * block.c), interpolates the position table for other input sizes (cached),
 * and embeds a batch of images: patchify, one GEMM for the patch
 * convolution, the blocks, class-token pooling and projection, and the
 * projected patch tokens of image 0 for the evidence map. It must not
 * allocate beyond the buffers sized at open (and the position cache), nor
 * know about the CNN tower, text or domain checks.
 */
#include "model_internal.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void vit_load(loader *ld, int E) {
    snprintf(ld->m->info.vision_arch, sizeof ld->m->info.vision_arch, "vit");
    cxr_model *m = ld->m;
    vit_w *v = &m->vit;
    cxr_model_info *in = &m->info;
    v->S = (int)load_u32(ld, "clip.vision.image_size", 0, 1, 8, 4096);
    v->P = (int)load_u32(ld, "clip.vision.patch_size", 0, 1, 1, 1024);
    v->D = (int)load_u32(ld, "clip.vision.embedding_length", 0, 1, 1, 16384);
    v->FF = (int)load_u32(ld, "clip.vision.feed_forward_length", 4 * (uint32_t)v->D, 0, 1, 65536);
    v->L = (int)load_u32(ld, "clip.vision.block_count", 0, 1, 1, 256);
    v->heads = (int)load_u32(ld, "clip.vision.attention.head_count", 0, 1, 1, 256);
    v->eps = 1e-5f;
    gguf_get_f32(&m->g, "clip.vision.attention.layer_norm_epsilon", &v->eps);
    v->act = load_act(ld, "clip.vision.activation");
    if (ld->rc) return;
    if (v->S % v->P || v->D % v->heads) {
        snprintf(ld->err, ld->errlen, "image size %d not a multiple of patch %d, or width %d not a multiple of heads %d",
                 v->S, v->P, v->D, v->heads);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    v->grid = v->S / v->P;
    int N = v->grid * v->grid, D = v->D;
    v->patch_w = load_f32(ld, "v.patch_embd.weight", 0, 4, D, 3, v->P, v->P);
    v->patch_b = T1("v.patch_embd.bias", 1, D);
    v->cls = T1("v.class_embd", 0, D);
    v->pos = T2("v.position_embd.weight", 0, N + 1, D);
    v->pre.w = T1("v.pre_ln.weight", 1, D);
    v->has_pre = v->pre.w != NULL;
    if (v->has_pre) v->pre.b = T1("v.pre_ln.bias", 0, D);
    v->post.w = T1("v.post_ln.weight", 0, D);
    v->post.b = T1("v.post_ln.bias", 0, D);
    load_lin(ld, &v->proj, "v.proj.weight", E, D);
    v->proj.b = NULL;
    if (ld->rc) return;
    v->blk = calloc((size_t)v->L, sizeof *v->blk);
    if (!v->blk) { ld->rc = CXR_ERR_NOMEM; return; }
    for (int i = 0; i < v->L && !ld->rc; i++) block_load(ld, &v->blk[i], "v", i, D, v->FF);
    in->image_size = v->S;
    in->patch_size = v->P;
    in->vision_width = D;
    in->vision_layers = v->L;
    in->vision_heads = v->heads;
    in->vision_ff = v->FF;
    in->vision_eps = v->eps;
    snprintf(in->vision_act, sizeof in->vision_act, "%s", v->act == ACT_GELU ? "gelu" : "quick_gelu");
}

static const float *positions_for(cxr_model *m, int grid) {
    vit_w *v = &m->vit;
    if (grid == v->grid) return v->pos;
    if (v->pos_cache_grid != grid) {
        int D = v->D;
        float *c = realloc(v->pos_cache, (size_t)((int64_t)grid * grid + 1) * D * sizeof *c);
        if (!c) return NULL;
        v->pos_cache = c;
        memcpy(c, v->pos, (size_t)D * sizeof *c);
        bicubic_grid_forward(c + D, v->pos + D, v->grid, grid, D);
        v->pos_cache_grid = grid;
    }
    return v->pos_cache;
}

int vit_embed(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
    vit_w *v = &m->vit;
    if (batch < 1 || batch > m->params.max_batch || (channels != 1 && channels != 3) || size < v->P ||
        size % v->P || size / v->P > 4 * v->grid)
        return CXR_ERR_ARG;
    int grid = size / v->P, N = grid * grid, t = N + 1, D = v->D, P = v->P, E = m->info.embed_dim;
    if (model_ensure_buffers(m, (int64_t)batch * t, t) != CXR_OK) return CXR_ERR_NOMEM;
    kernels_set_threads(m->params.threads);
    const float *pos = positions_for(m, grid);
    if (!pos) return CXR_ERR_NOMEM;
    /* patchify into ff: rows (b, patch), columns (c, ky, kx) as the conv weight */
    int pd = 3 * P * P;
    float *pm = m->ff;
    for (int b = 0; b < batch; b++) {
        const float *img = in + (int64_t)b * channels * size * size;
        for (int py = 0; py < grid; py++)
            for (int px = 0; px < grid; px++) {
                float *row = pm + ((int64_t)b * N + py * grid + px) * pd;
                for (int c = 0; c < 3; c++) {
                    const float *plane = img + (int64_t)(channels == 3 ? c : 0) * size * size;
                    for (int ky = 0; ky < P; ky++)
                        memcpy(row + (c * P + ky) * P, plane + (int64_t)(py * P + ky) * size + px * P,
                               (size_t)P * sizeof(float));
                }
            }
    }
    dense_forward(m->h, D, pm, pd, v->patch_w, &v->patch_pk, v->patch_b, batch * N, pd, D, GEMM_ACT_NONE, 0);
    /* x = [class; patches] + positions (one pass; the class row has no
     * patch to add) */
    for (int b = 0; b < batch; b++) {
        float *x = m->x + (int64_t)b * t * D;
        const float *ph = m->h + (int64_t)b * N * D;
        for (int c = 0; c < D; c++) x[c] = v->cls[c] + pos[c];
        for (int64_t i = 0; i < (int64_t)N * D; i++) x[D + i] = ph[i] + pos[D + i];
    }
    if (v->has_pre) layernorm_forward(m->x, m->x, v->pre.w, v->pre.b, batch * t, D, v->eps);
    for (int l = 0; l < v->L; l++)
        block_forward(m, &v->blk[l], m->x, batch, t, D, v->heads, v->FF, v->eps, v->act, 0, 0);
    /* pooled: class token; patch evidence: every patch token of image 0 */
    for (int b = 0; b < batch; b++) {
        float *cls = m->h + (int64_t)b * D;
        layernorm_forward(cls, m->x + (int64_t)b * t * D, v->post.w, v->post.b, 1, D, v->eps);
    }
    dense_forward(out, E, m->h, D, v->proj.w, &v->proj.pk, NULL, batch, D, E, GEMM_ACT_NONE, 0);
    for (int b = 0; b < batch; b++) l2norm_forward(out + (int64_t)b * E, E);
    if (grid == v->grid) {
        layernorm_forward(m->h, m->x + D, v->post.w, v->post.b, N, D, v->eps);
        dense_forward(m->patch_emb, E, m->h, D, v->proj.w, &v->proj.pk, NULL, N, D, E, GEMM_ACT_NONE, 0);
        for (int i = 0; i < N; i++) l2norm_forward(m->patch_emb + (int64_t)i * E, E);
        m->patch_grid = grid;
    } else {
        m->patch_grid = 0;
    }
    return CXR_OK;
}
