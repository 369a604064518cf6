/*
 * text.c — the text tower: reads its keys and weights (CLIP causal
 * transformer or BERT; blocks through block.c) and its tokenizer (CLIP BPE
 * or WordPiece, tokenizer.c), and embeds one token sequence: embeddings,
 * blocks, EOT or CLS pooling, linear or MLP projection. It must not allocate
 * on the hot path beyond the ids of cxr_model_embed_text, nor know about
 * images or findings.
 */
#include "model_internal.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void text_load(loader *ld, int E) {
    cxr_model *m = ld->m;
    text_w *t = &m->txt;
    cxr_model_info *in = &m->info;
    char arch[16] = "clip", proj[16] = "linear";
    gguf_get_str(&m->g, "clip.text.architecture", arch, sizeof arch);
    gguf_get_str(&m->g, "clip.text.projection", proj, sizeof proj);
    if (strcmp(arch, "clip") && strcmp(arch, "bert")) {
        snprintf(ld->err, ld->errlen, "clip.text.architecture '%s' unknown (clip or bert)", arch);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    if (strcmp(proj, "linear") && strcmp(proj, "mlp")) {
        snprintf(ld->err, ld->errlen, "clip.text.projection '%s' unknown (linear or mlp)", proj);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    t->bert = !strcmp(arch, "bert");
    t->mlp_proj = !strcmp(proj, "mlp");
    t->ctx = (int)load_u32(ld, "clip.text.context_length", 0, 1, 2, 4096);
    t->V = (int)load_u32(ld, "clip.text.vocab_size", 0, 1, 4, 1u << 22);
    t->W = (int)load_u32(ld, "clip.text.embedding_length", 0, 1, 1, 16384);
    t->FF = (int)load_u32(ld, "clip.text.feed_forward_length", 4 * (uint32_t)t->W, 0, 1, 65536);
    t->L = (int)load_u32(ld, "clip.text.block_count", 0, 1, 1, 256);
    t->heads = (int)load_u32(ld, "clip.text.attention.head_count", 0, 1, 1, 256);
    t->eps = t->bert ? 1e-12f : 1e-5f;
    gguf_get_f32(&m->g, "clip.text.attention.layer_norm_epsilon", &t->eps);
    t->act = load_act(ld, "clip.text.activation");
    if (ld->rc) return;
    if (t->W % t->heads) {
        snprintf(ld->err, ld->errlen, "text width %d not a multiple of heads %d", t->W, t->heads);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    int W = t->W;
    t->tok = T2("t.token_embd.weight", 0, t->V, W);
    t->pos = T2("t.position_embd.weight", 0, t->ctx, W);
    if (t->bert) {
        const gguf_tensor *tt = gguf_find_tensor(&m->g, "t.token_type_embd.weight");
        int ntype = tt && tt->n_dims == 2 ? (int)tt->dims[1] : 2;
        t->type = T2("t.token_type_embd.weight", 0, ntype, W);
        t->embd_ln.w = T1("t.embd_ln.weight", 0, W);
        t->embd_ln.b = T1("t.embd_ln.bias", 0, W);
    } else {
        t->post.w = T1("t.post_ln.weight", 0, W);
        t->post.b = T1("t.post_ln.bias", 0, W);
    }
    if (t->mlp_proj) {
        const gguf_tensor *p0 = gguf_find_tensor(&m->g, "t.proj.0.weight");
        t->M = p0 && p0->n_dims == 2 ? (int)p0->dims[1] : 0;
        load_lin(ld, &t->proj0, "t.proj.0.weight", t->M, W);
        load_lin(ld, &t->proj2, "t.proj.2.weight", E, t->M);
    } else {
        load_lin(ld, &t->proj, "t.proj.weight", E, W);
    }
    if (ld->rc) return;
    t->blk = calloc((size_t)t->L, sizeof *t->blk);
    if (!t->blk) { ld->rc = CXR_ERR_NOMEM; return; }
    for (int i = 0; i < t->L && !ld->rc; i++) block_load(ld, &t->blk[i], "t", i, W, t->FF);
    snprintf(in->text_arch, sizeof in->text_arch, "%s", arch);
    snprintf(in->text_proj, sizeof in->text_proj, "%s", proj);
    snprintf(in->text_act, sizeof in->text_act, "%s", t->act == ACT_GELU ? "gelu" : "quick_gelu");
    in->text_ctx = t->ctx;
    in->text_vocab = t->V;
    in->text_width = W;
    in->text_layers = t->L;
    in->text_heads = t->heads;
    in->text_ff = t->FF;
    in->text_eps = t->eps;
}

void text_load_tokenizer(loader *ld) {
    cxr_model *m = ld->m;
    if (ld->rc) return;
    char kind[16] = "";
    if (gguf_get_str(&m->g, "tokenizer.ggml.model", kind, sizeof kind) != 0) {
        snprintf(ld->err, ld->errlen, "missing key 'tokenizer.ggml.model'");
        ld->rc = CXR_ERR_MISSING;
        return;
    }
    char **toks = NULL, *tblob = NULL, **merges = NULL, *mblob = NULL;
    uint64_t nt = 0, nm = 0;
    int r = gguf_get_str_arr(&m->g, "tokenizer.ggml.tokens", &toks, &tblob, &nt);
    if (r != 0) {
        snprintf(ld->err, ld->errlen, "missing or invalid key 'tokenizer.ggml.tokens'");
        ld->rc = r == CXR_ERR_NOMEM ? r : CXR_ERR_MISSING;
        return;
    }
    if ((int64_t)nt != m->txt.V) {
        snprintf(ld->err, ld->errlen, "tokenizer has %llu tokens but t.token_embd.weight has %d rows",
                 (unsigned long long)nt, m->txt.V);
        ld->rc = CXR_ERR_SHAPE;
    } else if (!strcmp(kind, "clip-bpe")) {
        r = gguf_get_str_arr(&m->g, "tokenizer.ggml.merges", &merges, &mblob, &nm);
        if (r != 0) {
            snprintf(ld->err, ld->errlen, "missing or invalid key 'tokenizer.ggml.merges'");
            ld->rc = CXR_ERR_MISSING;
        } else {
            r = tok_bpe_init(&m->tok, (const char *const *)toks, (int)nt, (const char *const *)merges, (int)nm,
                             ld->err, ld->errlen);
            m->info.n_merges = (int)nm;
        }
    } else if (!strcmp(kind, "wordpiece")) {
        int lower = 1;
        char clean[16] = "none";
        gguf_get_bool(&m->g, "cxr.tokenizer.lowercase", &lower);
        gguf_get_str(&m->g, "cxr.tokenizer.clean", clean, sizeof clean);
        int flags = (lower ? TOK_WP_LOWERCASE : 0) | (!strcmp(clean, "openclip") ? TOK_WP_OPENCLIP_CLEAN : 0);
        r = tok_wordpiece_init(&m->tok, (const char *const *)toks, (int)nt, flags, ld->err, ld->errlen);
    } else {
        snprintf(ld->err, ld->errlen, "tokenizer.ggml.model '%s' unknown (clip-bpe or wordpiece)", kind);
        ld->rc = CXR_ERR_FORMAT;
    }
    if (!ld->rc && r != 0) ld->rc = r == CXR_ERR_NOMEM ? r : CXR_ERR_FORMAT;
    snprintf(m->info.tokenizer, sizeof m->info.tokenizer, "%s", kind);
    free(toks);
    free(tblob);
    free(merges);
    free(mblob);
}

/* ------------------------------------------------------------- forward */

int cxr_model_tokenize(cxr_model *m, const char *text, int32_t *ids, int *n) {
    if (!m || !text || !ids || !n || !m->tok) return CXR_ERR_ARG;
    return tok_encode(m->tok, text, ids, m->txt.ctx, n);
}

int cxr_model_embed_tokens(cxr_model *m, const int32_t *ids, int n, float *out) {
    if (!m || !ids || !out || !m->info.has_text) return CXR_ERR_ARG;
    text_w *t = &m->txt;
    if (n < 1 || n > t->ctx) return CXR_ERR_ARG;
    for (int i = 0; i < n; i++)
        if (ids[i] < 0 || ids[i] >= t->V) return CXR_ERR_ARG;
    kernels_set_threads(m->params.threads);
    int W = t->W, E = m->info.embed_dim;
    /* CLIP: causal, pooled at the first EOT (highest id): tokens after it
       cannot influence it, so only [0, eot] is computed. BERT: padding is
       masked, so only the real tokens are computed. */
    int T = n, pool = 0;
    if (!t->bert) {
        int best = 0;
        for (int i = 0; i < n; i++)
            if (ids[i] > ids[best]) best = i;
        pool = best;
        T = best + 1;
    }
    float *x = m->x;
    for (int i = 0; i < T; i++) {
        const float *te = t->tok + (int64_t)ids[i] * W, *pe = t->pos + (int64_t)i * W;
        float *xi = x + (int64_t)i * W;
        for (int c = 0; c < W; c++) xi[c] = te[c] + pe[c];
        if (t->bert)
            for (int c = 0; c < W; c++) xi[c] += t->type[c];
    }
    if (t->bert) layernorm_forward(x, x, t->embd_ln.w, t->embd_ln.b, T, W, t->eps);
    for (int l = 0; l < t->L; l++)
        block_forward(m, &t->blk[l], x, 1, T, W, t->heads, t->FF, t->eps, t->act, !t->bert, t->bert);
    float *pooled = m->h;
    if (t->bert) memcpy(pooled, x + (int64_t)pool * W, (size_t)W * sizeof(float));
    else layernorm_forward(pooled, x + (int64_t)pool * W, t->post.w, t->post.b, 1, W, t->eps);
    if (t->mlp_proj) {
        dense_forward(m->ff, t->M, pooled, W, t->proj0.w, &t->proj0.pk, NULL, 1, W, t->M, ACT_GELU, 0);
        dense_forward(out, E, m->ff, t->M, t->proj2.w, &t->proj2.pk, NULL, 1, t->M, E, GEMM_ACT_NONE, 0);
    } else {
        dense_forward(out, E, pooled, W, t->proj.w, &t->proj.pk, NULL, 1, W, E, GEMM_ACT_NONE, 0);
    }
    l2norm_forward(out, E);
    return CXR_OK;
}

int cxr_model_embed_text(cxr_model *m, const char *text, float *out) {
    if (!m || !text || !out || !m->info.has_text) return CXR_ERR_ARG;
    int32_t *ids = malloc((size_t)m->txt.ctx * sizeof *ids);
    if (!ids) return CXR_ERR_NOMEM;
    int n = 0;
    int rc = cxr_model_tokenize(m, text, ids, &n);
    if (rc == CXR_OK) rc = cxr_model_embed_tokens(m, ids, n, out);
    free(ids);
    return rc;
}
