/*
 * block.c — the transformer block both towers are made of (ViT and CLIP
 * text: pre-LN; BERT: post-LN): looking up its weights, packing them for
 * gemm.c (Q, K and V fused into one matrix) and releasing their pages of the
 * mapping, and its forward pass over the model's activation buffers. It must
 * not know which tower it serves or allocate outside packing.
 */
#include "model_internal.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* F16 Linear weights: packed as halves and widened in the kernel (default),
 * or converted to F32 panels at open with -DCXR_F16_AT_LOAD. */
#ifdef CXR_F16_AT_LOAD
#define KEEP_F16 0
#else
#define KEEP_F16 1
#endif

void block_load(loader *ld, block_w *b, const char *pfx, int i, int D, int FF) {
    char n[96];
#define NM(s) (snprintf(n, sizeof n, "%s.blk.%d.%s", pfx, i, s), n)
    b->ln1.w = T1(NM("ln1.weight"), 0, D);
    b->ln1.b = T1(NM("ln1.bias"), 0, D);
    b->ln2.w = T1(NM("ln2.weight"), 0, D);
    b->ln2.b = T1(NM("ln2.bias"), 0, D);
    load_lin(ld, &b->q, NM("attn_q.weight"), D, D);
    b->q.b = T1(NM("attn_q.bias"), 0, D);
    load_lin(ld, &b->k, NM("attn_k.weight"), D, D);
    b->k.b = T1(NM("attn_k.bias"), 0, D);
    load_lin(ld, &b->v, NM("attn_v.weight"), D, D);
    b->v.b = T1(NM("attn_v.bias"), 0, D);
    load_lin(ld, &b->o, NM("attn_out.weight"), D, D);
    b->o.b = T1(NM("attn_out.bias"), 0, D);
    load_lin(ld, &b->up, NM("ffn_up.weight"), FF, D);
    b->up.b = T1(NM("ffn_up.bias"), 0, FF);
    load_lin(ld, &b->down, NM("ffn_down.weight"), D, FF);
    b->down.b = T1(NM("ffn_down.bias"), 0, D);
#undef NM
}

/* ------------------------------------------------------------- packing */

/* Pack rows [row0, row0 + n) of pk from the weight l as stored. */
static void pack_from(gemm_w *pk, int row0, const lin_w *l, int n) {
    gemm_pack_rows(pk, row0, l->src, l->src_f16 ? GEMM_SRC_F16 : GEMM_SRC_F32, n);
}

int lin_pack(lin_w *l, int n, int k) {
    if (gemm_pack_init(&l->pk, n, k, l->src_f16 && KEEP_F16) != 0) return CXR_ERR_NOMEM;
    pack_from(&l->pk, 0, l, n);
    return CXR_OK;
}

void lin_release(cxr_model *m, const lin_w *l, int n, int k) {
    model_release(m, l->src, (size_t)n * k * (l->src_f16 ? 2 : 4));
}

/* One block: Q, K, V fused into qkv (3D × D, biases concatenated), out,
 * up, down. */
static int pack_block(block_w *b, int D, int FF) {
    lin_w *q = &b->qkv;
    float *bias = malloc((size_t)3 * D * sizeof *bias);
    if (!bias || gemm_pack_init(&q->pk, 3 * D, D, b->q.src_f16 && b->k.src_f16 && b->v.src_f16 && KEEP_F16)) {
        free(bias);
        return CXR_ERR_NOMEM;
    }
    pack_from(&q->pk, 0, &b->q, D);
    pack_from(&q->pk, D, &b->k, D);
    pack_from(&q->pk, 2 * D, &b->v, D);
    memcpy(bias, b->q.b, (size_t)D * sizeof *bias);
    memcpy(bias + D, b->k.b, (size_t)D * sizeof *bias);
    memcpy(bias + 2 * D, b->v.b, (size_t)D * sizeof *bias);
    q->b = bias;
    if (lin_pack(&b->o, D, D) || lin_pack(&b->up, FF, D) || lin_pack(&b->down, D, FF)) return CXR_ERR_NOMEM;
    return CXR_OK;
}

static void release_block(cxr_model *m, const block_w *b, int D, int FF) {
    lin_release(m, &b->q, D, D);
    lin_release(m, &b->k, D, D);
    lin_release(m, &b->v, D, D);
    lin_release(m, &b->o, D, D);
    lin_release(m, &b->up, FF, D);
    lin_release(m, &b->down, D, FF);
}

/* Packed, then the weights' pages released: keeps the peak near one copy. */
int block_pack(cxr_model *m, block_w *b, int D, int FF) {
    int rc = pack_block(b, D, FF);
    release_block(m, b, D, FF);
    return rc;
}

void block_free(block_w *b) {
    gemm_free(&b->qkv.pk);
    free((void *)b->qkv.b);
    gemm_free(&b->o.pk);
    gemm_free(&b->up.pk);
    gemm_free(&b->down.pk);
}

/* ------------------------------------------------------------- forward */

/* One transformer block over n rows of x (t tokens per sequence, nseq
 * sequences). pre-LN (CLIP, ViT) or post-LN (BERT). */
void block_forward(cxr_model *m, const block_w *b, float *x, int nseq, int t, int D, int heads, int FF, float eps,
                   int act, int causal, int post_ln) {
    int64_t n = (int64_t)nseq * t;
    float *h = m->h;
    const float *ain = x;
    if (!post_ln) {
        layernorm_forward(h, x, b->ln1.w, b->ln1.b, (int)n, D, eps);
        ain = h;
    }
    if (b->qkv.pk.panels) { /* one GEMM for Q|K|V, rows of 3·D */
        dense_forward(m->q, 3 * D, ain, D, NULL, &b->qkv.pk, b->qkv.b, (int)n, D, 3 * D, GEMM_ACT_NONE, 0);
        for (int s = 0; s < nseq; s++) {
            const float *q = m->q + (int64_t)s * t * 3 * D;
            mha_forward(m->att + (int64_t)s * t * D, D, q, q + D, q + 2 * D, 3 * D, t, heads, D / heads, causal,
                        m->scratch);
        }
    } else {
        linear_forward(m->q, ain, b->q.w, b->q.b, (int)n, D, D);
        linear_forward(m->k, ain, b->k.w, b->k.b, (int)n, D, D);
        linear_forward(m->v, ain, b->v.w, b->v.b, (int)n, D, D);
        for (int s = 0; s < nseq; s++) {
            int64_t off = (int64_t)s * t * D;
            mha_forward(m->att + off, D, m->q + off, m->k + off, m->v + off, D, t, heads, D / heads, causal,
                        m->scratch);
        }
    }
    /* x += att · Woᵀ + b, the residual added in the GEMM's epilogue */
    dense_forward(x, D, m->att, D, b->o.w, &b->o.pk, b->o.b, (int)n, D, D, GEMM_ACT_NONE, 1);
    if (post_ln) layernorm_forward(x, x, b->ln1.w, b->ln1.b, (int)n, D, eps);
    const float *fin = x;
    if (!post_ln) {
        layernorm_forward(h, x, b->ln2.w, b->ln2.b, (int)n, D, eps);
        fin = h;
    }
    dense_forward(m->ff, FF, fin, D, b->up.w, &b->up.pk, b->up.b, (int)n, D, FF, act, 0);
    dense_forward(x, D, m->ff, FF, b->down.w, &b->down.pk, b->down.b, (int)n, FF, D, GEMM_ACT_NONE, 1);
    if (post_ln) layernorm_forward(x, x, b->ln2.w, b->ln2.b, (int)n, D, eps);
}
