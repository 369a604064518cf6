/*
 * clip.c — the dual encoder: opens a GGUF model (every tensor looked up by
 * name once, its shape checked), owns the activation buffers, and runs the
 * image tower (ViT) and the text tower (CLIP causal transformer or BERT).
 * It must not allocate on the hot path beyond the buffers sized at open, and
 * must not know about DICOM or files other than the model. Where the CPU runs
 * the AVX2 kernels (gemm.c), every Linear weight is packed once at open (Q,
 * K and V fused into one matrix) and its pages of the mapping released.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "cxr_model.h"
#include "cnn.h"
#include "findings.h"
#include "gguf.h"
#include "f16.h"
#include "kernels.h"
#include "pool.h"
#include "tokenizer.h"

#include <math.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

/* F16 Linear weights: packed as halves and widened in the kernel (default),
 * or converted to F32 panels at open with -DCXR_F16_AT_LOAD. */
#ifdef CXR_F16_AT_LOAD
#define KEEP_F16 0
#else
#define KEEP_F16 1
#endif

typedef struct {
    const float *w, *b; /* w: out × in, F32; NULL when packed straight from F16 */
    gemm_w pk;          /* packed for gemm.c (panels NULL: OpenBLAS on w) */
    const void *src;    /* the weight as stored in the mapping, for packing */
    int src_f16;
} lin_w;
typedef struct { const float *w, *b; } norm_w;

typedef struct {
    norm_w ln1, ln2;
    lin_w q, k, v, o, up, down;
    lin_w qkv;          /* packed path: q, k, v rows in one matrix, biases owned */
} block_w;

typedef struct {
    int D, heads, L, FF, P, S, grid, act;
    float eps;
    const float *patch_w, *patch_b, *cls, *pos;
    gemm_w patch_pk;    /* patch_w as a D × 3·P·P Linear weight, packed */
    int has_pre;
    norm_w pre, post;
    block_w *blk;
    lin_w proj;
    /* positions interpolated for another input size (cached) */
    float *pos_cache;
    int pos_cache_grid;
} vit_w;

typedef struct {
    int bert, W, heads, L, FF, ctx, V, act, mlp_proj, M;
    float eps;
    const float *tok, *pos, *type;
    norm_w embd_ln, post;
    block_w *blk;
    lin_w proj, proj0, proj2;
} text_w;

struct cxr_model {
    gguf_file g;
    cxr_model_info info;
    cxr_model_params params;
    vit_w vit;
    int is_cnn;          /* image tower is the residual CNN */
    findings_set fs;
    cnn_w cnn;
    float *cnn_scratch, *cnn_fmap, *cnn_pooled;
    int64_t cnn_scratch_cap;
    text_w txt;
    cxr_tokenizer *tok;
    float **owned;      /* F16 tensors converted to F32 */
    int n_owned;
    /* activations */
    float *x, *h, *q, *k, *v, *att, *ff, *scratch;
    int64_t cap_tokens;  /* rows the buffers hold */
    int64_t cap_width, cap_ff, cap_scratch, cap_ffbuf;
    float *patch_emb;    /* last image: grid² × E projected, normalised */
    int patch_grid;
    /* image-domain density check (CNN towers, optional): pooled features */
    const float *dom_mean, *dom_prec; /* C, C×C */
    float dom_warn, dom_refuse;
    float dom_last;      /* squared Mahalanobis distance of the last image (NaN: none) */
    float *dom_diff;     /* C scratch */
    /* image-domain layout check (optional): the input's G×G block means */
    const float *lay_mean, *lay_prec; /* G², G²×G² */
    int lay_grid;
    float lay_warn, lay_refuse;
    float lay_last;      /* squared Mahalanobis distance of the last image's layout (NaN: none) */
    float *lay_x;        /* G² scratch */
    char err[CXR_ERRMSG_MAX];
};

cxr_model_params cxr_model_params_default(void) {
    cxr_model_params p = {.threads = 0, .max_batch = 8};
    return p;
}

/* ------------------------------------------------------------- loading */

typedef struct {
    cxr_model *m;
    char *err;
    size_t errlen;
    int rc;
    int pack;   /* the AVX2 kernels run here: Linear weights are packed */
} loader;

/* Find tensor name with NumPy shape (d0, d1, …) (n dims); NULL + error if
 * missing or misshapen. optional: NULL without error when absent. */
static const gguf_tensor *find_t(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1,
                                 int64_t d2, int64_t d3) {
    if (ld->rc) return NULL;
    const gguf_tensor *t = gguf_find_tensor(&ld->m->g, name);
    if (!t) {
        if (optional) return NULL;
        snprintf(ld->err, ld->errlen, "missing tensor '%s'", name);
        ld->rc = CXR_ERR_MISSING;
        return NULL;
    }
    int64_t want[4] = {d0, d1, d2, d3};
    int ok = (int)t->n_dims == n;
    for (int i = 0; ok && i < n; i++) ok = (int64_t)t->dims[n - 1 - i] == want[i];
    if (!ok) {
        char got[96] = "", exp[96] = "";
        for (uint32_t i = 0; i < t->n_dims; i++)
            snprintf(got + strlen(got), sizeof got - strlen(got), "%s%llu", i ? ", " : "",
                     (unsigned long long)t->dims[t->n_dims - 1 - i]);
        for (int i = 0; i < n; i++)
            snprintf(exp + strlen(exp), sizeof exp - strlen(exp), "%s%lld", i ? ", " : "", (long long)want[i]);
        snprintf(ld->err, ld->errlen, "tensor '%s' has shape (%s), expected (%s)", name, got, exp);
        ld->rc = CXR_ERR_SHAPE;
        return NULL;
    }
    return t;
}

static const float *get_t(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                          int64_t d3) {
    const gguf_tensor *t = find_t(ld, name, optional, n, d0, d1, d2, d3);
    if (!t) return NULL;
    if (t->dtype == GGML_F32) {
        if ((uintptr_t)t->data % sizeof(float)) {
            snprintf(ld->err, ld->errlen, "tensor '%s' data is not 4-byte aligned", name);
            ld->rc = CXR_ERR_FORMAT;
            return NULL;
        }
        return t->data;
    }
    float *f = malloc(t->n_elems * sizeof *f);
    float **no = realloc(ld->m->owned, (ld->m->n_owned + 1) * sizeof *no);
    if (!f || !no) {
        free(f);
        if (no) ld->m->owned = no;
        ld->rc = CXR_ERR_NOMEM;
        return NULL;
    }
    ld->m->owned = no;
    ld->m->owned[ld->m->n_owned++] = f;
    const uint8_t *src = t->data;
    for (uint64_t i = 0; i < t->n_elems; i++) {
        uint16_t hbits;
        memcpy(&hbits, src + 2 * i, 2);
        f[i] = f16_to_f32(hbits);
    }
    ld->m->info.n_f16++;
    return f;
}

#define T1(name, opt, a) get_t(ld, name, opt, 1, a, 0, 0, 0)
#define T2(name, opt, a, b) get_t(ld, name, opt, 2, a, b, 0, 0)

/* A Linear weight (n, k). Packed later (pack_weights) straight from the
 * mapping, F16 included, when ld->pack; otherwise read as get_t does. */
static void get_lin(loader *ld, lin_w *l, const char *name, int64_t n, int64_t k) {
    if (!ld->pack) {
        l->w = T2(name, 0, n, k);
        return;
    }
    const gguf_tensor *t = find_t(ld, name, 0, 2, n, k, 0, 0);
    if (!t) return;
    if (t->dtype == GGML_F32 && (uintptr_t)t->data % sizeof(float)) {
        snprintf(ld->err, ld->errlen, "tensor '%s' data is not 4-byte aligned", name);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    l->src = t->data;
    l->src_f16 = t->dtype != GGML_F32;
    if (l->src_f16) ld->m->info.n_f16++;
    else l->w = t->data;
}

static uint32_t get_u(loader *ld, const char *key, uint32_t dflt, int required, uint32_t lo, uint32_t hi) {
    uint32_t v = dflt;
    if (ld->rc) return v;
    int r = gguf_get_u32(&ld->m->g, key, &v);
    if (r == -1 && !required) return dflt;
    if (r != 0 || v < lo || v > hi) {
        snprintf(ld->err, ld->errlen, r == -1 ? "missing key '%s'" : "key '%s' must be an integer in %u..%u", key,
                 lo, hi);
        ld->rc = r == -1 ? CXR_ERR_MISSING : CXR_ERR_FORMAT;
    }
    return v;
}

static int parse_act(loader *ld, const char *key) {
    char s[32] = "quick_gelu";
    if (!ld->rc && gguf_get_str(&ld->m->g, key, s, sizeof s) == -2) {
        snprintf(ld->err, ld->errlen, "key '%s' must be a string", key);
        ld->rc = CXR_ERR_FORMAT;
    }
    if (!strcmp(s, "quick_gelu")) return ACT_QUICK_GELU;
    if (!strcmp(s, "gelu")) return ACT_GELU;
    if (!ld->rc) {
        snprintf(ld->err, ld->errlen, "key '%s': unknown activation '%s'", key, s);
        ld->rc = CXR_ERR_FORMAT;
    }
    return ACT_GELU;
}

static void load_block(loader *ld, block_w *b, const char *pfx, int i, int D, int FF) {
    char n[96];
#define NM(s) (snprintf(n, sizeof n, "%s.blk.%d.%s", pfx, i, s), n)
    b->ln1.w = T1(NM("ln1.weight"), 0, D);
    b->ln1.b = T1(NM("ln1.bias"), 0, D);
    b->ln2.w = T1(NM("ln2.weight"), 0, D);
    b->ln2.b = T1(NM("ln2.bias"), 0, D);
    get_lin(ld, &b->q, NM("attn_q.weight"), D, D);
    b->q.b = T1(NM("attn_q.bias"), 0, D);
    get_lin(ld, &b->k, NM("attn_k.weight"), D, D);
    b->k.b = T1(NM("attn_k.bias"), 0, D);
    get_lin(ld, &b->v, NM("attn_v.weight"), D, D);
    b->v.b = T1(NM("attn_v.bias"), 0, D);
    get_lin(ld, &b->o, NM("attn_out.weight"), D, D);
    b->o.b = T1(NM("attn_out.bias"), 0, D);
    get_lin(ld, &b->up, NM("ffn_up.weight"), FF, D);
    b->up.b = T1(NM("ffn_up.bias"), 0, FF);
    get_lin(ld, &b->down, NM("ffn_down.weight"), D, FF);
    b->down.b = T1(NM("ffn_down.bias"), 0, D);
#undef NM
}

/* cnn_load's tensor lookup: get_t with the loader as context */
static const float *cnn_get(void *ctx, const char *name, int n, int64_t d0, int64_t d1, int64_t d2, int64_t d3) {
    return get_t((loader *)ctx, name, 0, n, d0, d1, d2, d3);
}

static void load_cnn(loader *ld, int E) {
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
    /* optional density check on the pooled features (FORMAT.md) */
    int C = m->cnn.widths[m->cnn.n];
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
        if (!(m->dom_diff = malloc((size_t)C * sizeof(float)))) { ld->rc = CXR_ERR_NOMEM; return; }
    }
    /* optional layout check on the input image itself (FORMAT.md) */
    m->lay_last = NAN;
    m->lay_mean = NULL;
    uint32_t G = get_u(ld, "cxr.domain.layout_grid", 0, 0, 1, 32);
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
        if (!(m->lay_x = malloc((size_t)G2 * sizeof(float)))) { ld->rc = CXR_ERR_NOMEM; return; }
    }
    in->vision_layers = m->cnn.n;
    in->vision_eps = m->cnn.eps;
    snprintf(in->vision_arch, sizeof in->vision_arch, "cnn");
    snprintf(in->vision_act, sizeof in->vision_act, "relu");
}

static void load_vision(loader *ld, int E) {
    char varch[16] = "vit";
    gguf_get_str(&ld->m->g, "clip.vision.architecture", varch, sizeof varch);
    if (!strcmp(varch, "cnn")) {
        load_cnn(ld, E);
        return;
    }
    if (strcmp(varch, "vit")) {
        snprintf(ld->err, ld->errlen, "clip.vision.architecture '%s' unknown (vit or cnn)", varch);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    snprintf(ld->m->info.vision_arch, sizeof ld->m->info.vision_arch, "vit");
    cxr_model *m = ld->m;
    vit_w *v = &m->vit;
    cxr_model_info *in = &m->info;
    v->S = (int)get_u(ld, "clip.vision.image_size", 0, 1, 8, 4096);
    v->P = (int)get_u(ld, "clip.vision.patch_size", 0, 1, 1, 1024);
    v->D = (int)get_u(ld, "clip.vision.embedding_length", 0, 1, 1, 16384);
    v->FF = (int)get_u(ld, "clip.vision.feed_forward_length", 4 * (uint32_t)v->D, 0, 1, 65536);
    v->L = (int)get_u(ld, "clip.vision.block_count", 0, 1, 1, 256);
    v->heads = (int)get_u(ld, "clip.vision.attention.head_count", 0, 1, 1, 256);
    v->eps = 1e-5f;
    gguf_get_f32(&m->g, "clip.vision.attention.layer_norm_epsilon", &v->eps);
    v->act = parse_act(ld, "clip.vision.activation");
    if (ld->rc) return;
    if (v->S % v->P || v->D % v->heads) {
        snprintf(ld->err, ld->errlen, "image size %d not a multiple of patch %d, or width %d not a multiple of heads %d",
                 v->S, v->P, v->D, v->heads);
        ld->rc = CXR_ERR_FORMAT;
        return;
    }
    v->grid = v->S / v->P;
    int N = v->grid * v->grid, D = v->D;
    v->patch_w = get_t(ld, "v.patch_embd.weight", 0, 4, D, 3, v->P, v->P);
    v->patch_b = T1("v.patch_embd.bias", 1, D);
    v->cls = T1("v.class_embd", 0, D);
    v->pos = T2("v.position_embd.weight", 0, N + 1, D);
    v->pre.w = T1("v.pre_ln.weight", 1, D);
    v->has_pre = v->pre.w != NULL;
    if (v->has_pre) v->pre.b = T1("v.pre_ln.bias", 0, D);
    v->post.w = T1("v.post_ln.weight", 0, D);
    v->post.b = T1("v.post_ln.bias", 0, D);
    get_lin(ld, &v->proj, "v.proj.weight", E, D);
    v->proj.b = NULL;
    if (ld->rc) return;
    v->blk = calloc((size_t)v->L, sizeof *v->blk);
    if (!v->blk) { ld->rc = CXR_ERR_NOMEM; return; }
    for (int i = 0; i < v->L && !ld->rc; i++) load_block(ld, &v->blk[i], "v", i, D, v->FF);
    in->image_size = v->S;
    in->patch_size = v->P;
    in->vision_width = D;
    in->vision_layers = v->L;
    in->vision_heads = v->heads;
    in->vision_ff = v->FF;
    in->vision_eps = v->eps;
    snprintf(in->vision_act, sizeof in->vision_act, "%s", v->act == ACT_GELU ? "gelu" : "quick_gelu");
}

static void load_text(loader *ld, int E) {
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
    t->ctx = (int)get_u(ld, "clip.text.context_length", 0, 1, 2, 4096);
    t->V = (int)get_u(ld, "clip.text.vocab_size", 0, 1, 4, 1u << 22);
    t->W = (int)get_u(ld, "clip.text.embedding_length", 0, 1, 1, 16384);
    t->FF = (int)get_u(ld, "clip.text.feed_forward_length", 4 * (uint32_t)t->W, 0, 1, 65536);
    t->L = (int)get_u(ld, "clip.text.block_count", 0, 1, 1, 256);
    t->heads = (int)get_u(ld, "clip.text.attention.head_count", 0, 1, 1, 256);
    t->eps = t->bert ? 1e-12f : 1e-5f;
    gguf_get_f32(&m->g, "clip.text.attention.layer_norm_epsilon", &t->eps);
    t->act = parse_act(ld, "clip.text.activation");
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
        get_lin(ld, &t->proj0, "t.proj.0.weight", t->M, W);
        get_lin(ld, &t->proj2, "t.proj.2.weight", E, t->M);
    } else {
        get_lin(ld, &t->proj, "t.proj.weight", E, W);
    }
    if (ld->rc) return;
    t->blk = calloc((size_t)t->L, sizeof *t->blk);
    if (!t->blk) { ld->rc = CXR_ERR_NOMEM; return; }
    for (int i = 0; i < t->L && !ld->rc; i++) load_block(ld, &t->blk[i], "t", i, W, t->FF);
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

static void load_tokenizer(loader *ld) {
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

static void load_meta(loader *ld) {
    cxr_model *m = ld->m;
    cxr_model_info *in = &m->info;
    gguf_get_str(&m->g, "general.name", in->name, sizeof in->name);
    gguf_get_str(&m->g, "general.version", in->version, sizeof in->version);
    gguf_get_str(&m->g, "general.license", in->license, sizeof in->license);
    gguf_get_str(&m->g, "general.description", in->description, sizeof in->description);
    gguf_get_str(&m->g, "cxr.provenance.source", in->source, sizeof in->source);
    gguf_get_str(&m->g, "cxr.provenance.training_data", in->training_data, sizeof in->training_data);
    float ls = logf(100.0f);
    gguf_get_f32(&m->g, "clip.logit_scale", &ls);
    in->logit_scale = expf(ls);
    int native = m->is_cnn ? m->cnn.S : m->vit.S;
    in->pp_size = (int)get_u(ld, "cxr.preproc.size", (uint32_t)(native ? native : 224), 0, 8, 4096);
    in->pp_channels = (int)get_u(ld, "cxr.preproc.channels", 3, 0, 1, 3);
    snprintf(in->pp_policy, sizeof in->pp_policy, "crop");
    snprintf(in->pp_interp, sizeof in->pp_interp, "bicubic");
    gguf_get_str(&m->g, "cxr.preproc.policy", in->pp_policy, sizeof in->pp_policy);
    gguf_get_str(&m->g, "cxr.preproc.interp", in->pp_interp, sizeof in->pp_interp);
    in->pp_scale = 1.0f / 255.0f;
    gguf_get_f32(&m->g, "cxr.preproc.scale", &in->pp_scale);
    const float mean[3] = {0.48145466f, 0.4578275f, 0.40821073f}, std[3] = {0.26862954f, 0.26130258f, 0.27577711f};
    memcpy(in->pp_mean, mean, sizeof mean);
    memcpy(in->pp_std, std, sizeof std);
    if (gguf_get_f32_arr(&m->g, "cxr.preproc.mean", in->pp_mean, 3) == -1)
        gguf_get_f32_arr(&m->g, "clip.vision.image_mean", in->pp_mean, 3);
    if (gguf_get_f32_arr(&m->g, "cxr.preproc.std", in->pp_std, 3) == -1)
        gguf_get_f32_arr(&m->g, "clip.vision.image_std", in->pp_std, 3);
    for (uint64_t i = 0; i < m->g.n_tensors; i++) in->n_params += m->g.tensors[i].n_elems;
}

/* ------------------------------------------------------------- packing */

/* Drop this process's pages of a packed weight from the read-only file
 * mapping: the packed copy replaces them (a later read faults them in
 * again from the page cache, so this is only about resident memory). */
static void release(cxr_model *m, const void *p, size_t n) {
    const char *lo = m->g.map, *c = p;
    if (!lo || !c || c < lo || c + n > lo + m->g.size) return; /* only the file mapping, never the heap */
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1), e = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
}

/* Pack rows [row0, row0 + n) of pk from the weight l as stored. */
static void pack_from(gemm_w *pk, int row0, const lin_w *l, int n) {
    gemm_pack_rows(pk, row0, l->src, l->src_f16 ? GEMM_SRC_F16 : GEMM_SRC_F32, n);
}

static int pack_lin(lin_w *l, int n, int k) {
    if (gemm_pack_init(&l->pk, n, k, l->src_f16 && KEEP_F16) != 0) return CXR_ERR_NOMEM;
    pack_from(&l->pk, 0, l, n);
    return CXR_OK;
}

static void release_lin(cxr_model *m, const lin_w *l, int n, int k) {
    release(m, l->src, (size_t)n * k * (l->src_f16 ? 2 : 4));
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
    if (pack_lin(&b->o, D, D) || pack_lin(&b->up, FF, D) || pack_lin(&b->down, D, FF)) return CXR_ERR_NOMEM;
    return CXR_OK;
}

static void release_block(cxr_model *m, const block_w *b, int D, int FF) {
    release_lin(m, &b->q, D, D);
    release_lin(m, &b->k, D, D);
    release_lin(m, &b->v, D, D);
    release_lin(m, &b->o, D, D);
    release_lin(m, &b->up, FF, D);
    release_lin(m, &b->down, D, FF);
}

static void free_block(block_w *b) {
    gemm_free(&b->qkv.pk);
    free((void *)b->qkv.b);
    gemm_free(&b->o.pk);
    gemm_free(&b->up.pk);
    gemm_free(&b->down.pk);
}

/* Pack every Linear weight of both towers (blocks in parallel on the pool). */
typedef struct {
    cxr_model *m;
    int nv;
    atomic_int rc;
} pack_job;

static void pack_item(void *ctx, int i, int worker) {
    pack_job *j = ctx;
    vit_w *v = &j->m->vit;
    text_w *t = &j->m->txt;
    block_w *b = i < j->nv ? &v->blk[i] : &t->blk[i - j->nv];
    int D = i < j->nv ? v->D : t->W, FF = i < j->nv ? v->FF : t->FF;
    (void)worker;
    int r = pack_block(b, D, FF);
    release_block(j->m, b, D, FF); /* keeps the peak near one copy */
    if (r) atomic_store(&j->rc, r);
}

static int pack_weights(cxr_model *m) {
    vit_w *v = &m->vit;
    text_w *t = &m->txt;
    int nv = m->info.has_vision ? v->L : 0, nt = m->info.has_text ? t->L : 0;
    kernels_set_threads(m->params.threads);
    pack_job j = {m, nv, 0};
    pool_run(nv + nt, pack_item, &j);
    int rc = atomic_load(&j.rc);
    if (rc) return rc;
    int E = m->info.embed_dim;
    if (nv) {
        int pd = 3 * v->P * v->P;
        if (gemm_pack_init(&v->patch_pk, v->D, pd, 0)) return CXR_ERR_NOMEM;
        gemm_pack_rows(&v->patch_pk, 0, v->patch_w, GEMM_SRC_F32, v->D);
        if (pack_lin(&v->proj, E, v->D)) return CXR_ERR_NOMEM;
        release(m, v->patch_w, (size_t)v->D * pd * sizeof(float));
        release_lin(m, &v->proj, E, v->D);
    }
    if (nt) {
        if (t->mlp_proj) {
            if (pack_lin(&t->proj0, t->M, t->W) || pack_lin(&t->proj2, E, t->M)) return CXR_ERR_NOMEM;
            release_lin(m, &t->proj0, t->M, t->W);
            release_lin(m, &t->proj2, E, t->M);
        } else {
            if (pack_lin(&t->proj, E, t->W)) return CXR_ERR_NOMEM;
            release_lin(m, &t->proj, E, t->W);
        }
    }
    return CXR_OK;
}

/* (Re)size the activation buffers for `tokens` rows of up to `width`
 * columns, sequences of up to `seq` tokens. Called at open for the model's
 * own sizes; later only when an input larger than those arrives. */
static int ensure_buffers(cxr_model *m, int64_t tokens, int64_t seq) {
    int64_t width = m->cap_width, ffw = m->cap_ff, scr = 1;
    int th = m->params.threads;
    if (m->info.has_vision && !m->is_cnn) {
        int64_t s = mha_scratch_len((int)seq, m->vit.heads, m->vit.D / m->vit.heads, th);
        if (s > scr) scr = s;
    }
    if (m->info.has_text) {
        int64_t s = mha_scratch_len((int)seq, m->txt.heads, m->txt.W / m->txt.heads, th);
        if (s > scr) scr = s;
    }
    if (tokens > m->cap_tokens) {
        float **bufs[] = {&m->x, &m->h, &m->q, &m->k, &m->v, &m->att};
        for (size_t i = 0; i < sizeof bufs / sizeof bufs[0]; i++) {
            /* q holds the fused Q|K|V rows on the packed path */
            int64_t w = bufs[i] == &m->q ? 3 * width : width;
            float *p = realloc(*bufs[i], (size_t)(tokens * w) * sizeof(float));
            if (!p) return CXR_ERR_NOMEM;
            *bufs[i] = p;
        }
        m->cap_tokens = tokens;
    }
    if (tokens * ffw > m->cap_ffbuf) {
        float *p = realloc(m->ff, (size_t)(tokens * ffw) * sizeof(float));
        if (!p) return CXR_ERR_NOMEM;
        m->ff = p;
        m->cap_ffbuf = tokens * ffw;
    }
    if (scr > m->cap_scratch) {
        size_t bytes = ((size_t)scr * sizeof(float) + 63) & ~(size_t)63;
        float *p = aligned_alloc(64, bytes); /* panels inside must be aligned */
        if (!p) return CXR_ERR_NOMEM;
        free(m->scratch);
        m->scratch = p;
        m->cap_scratch = scr;
    }
    return CXR_OK;
}

static int alloc_buffers(cxr_model *m) {
    int64_t tokens = 1, width = 1, ff = 1, seq = 1;
    if (m->info.has_vision && m->is_cnn) {
        int g = cnn_grid(&m->cnn, m->cnn.S), cn = m->cnn.widths[m->cnn.n];
        m->cnn_scratch_cap = cnn_scratch_len(&m->cnn, m->cnn.S);
        m->cnn_scratch = malloc((size_t)m->cnn_scratch_cap * sizeof(float));
        m->cnn_fmap = malloc((size_t)g * g * cn * sizeof(float));
        m->cnn_pooled = malloc((size_t)(cn > m->info.embed_dim ? cn : m->info.embed_dim) * 2 * sizeof(float));
        m->patch_emb = malloc((size_t)g * g * m->info.embed_dim * sizeof(float));
        if (!m->cnn_scratch || !m->cnn_fmap || !m->cnn_pooled || !m->patch_emb) return CXR_ERR_NOMEM;
    } else if (m->info.has_vision) {
        int64_t t = (int64_t)m->vit.grid * m->vit.grid + 1;
        tokens = t * m->params.max_batch;
        width = m->vit.D;
        ff = m->vit.FF;
        int64_t pdim = 3LL * m->vit.P * m->vit.P;
        if (pdim > ff) ff = pdim;
        seq = t;
    }
    if (m->info.has_text) {
        int64_t t = m->txt.ctx;
        if (t > tokens) tokens = t;
        if (m->txt.W > width) width = m->txt.W;
        if (m->txt.FF > ff) ff = m->txt.FF;
        if (m->txt.mlp_proj && m->txt.M > ff) ff = m->txt.M;
        if (t > seq) seq = t;
    }
    m->cap_width = width;
    m->cap_ff = ff;
    if (m->info.has_vision && !m->is_cnn) {
        int64_t n = (int64_t)m->vit.grid * m->vit.grid;
        m->patch_emb = malloc((size_t)(n * m->info.embed_dim) * sizeof(float));
        if (!m->patch_emb) return CXR_ERR_NOMEM;
    }
    return ensure_buffers(m, tokens, seq);
}

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

int cxr_model_open(const char *path, const cxr_model_params *pp, cxr_model **out, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!out || !path) return CXR_ERR_ARG;
    *out = NULL;
    double t0 = now_ms();
    cxr_model *m = calloc(1, sizeof *m);
    if (!m) return CXR_ERR_NOMEM;
    m->params = pp ? *pp : cxr_model_params_default();
    if (m->params.max_batch < 1 || m->params.max_batch > 256) {
        snprintf(err, errlen, "max_batch %d outside 1..256", m->params.max_batch);
        free(m);
        return CXR_ERR_ARG;
    }
    if (m->params.threads <= 0) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        m->params.threads = n > 0 ? (int)n : 1;
    }
    int rc = gguf_open(&m->g, path, err, errlen);
    if (rc != CXR_OK) {
        free(m);
        return rc;
    }
    loader ld = {m, err, errlen, 0, gemm_available()};
    char arch[32] = "";
    if (gguf_get_str(&m->g, "general.architecture", arch, sizeof arch) != 0 || strcmp(arch, "clip")) {
        snprintf(err, errlen, "general.architecture is '%s', expected 'clip'", arch);
        ld.rc = CXR_ERR_FORMAT;
    }
    int E = (int)get_u(&ld, "clip.projection_dim", 0, 1, 1, 16384);
    m->info.embed_dim = E;
    int hv = 1, ht = 1;
    gguf_get_bool(&m->g, "clip.has_vision_encoder", &hv);
    gguf_get_bool(&m->g, "clip.has_text_encoder", &ht);
    m->info.has_vision = hv;
    m->info.has_text = ht;
    if (!ld.rc && hv) load_vision(&ld, E);
    if (!ld.rc && ht) load_text(&ld, E);
    if (!ld.rc && ht) load_tokenizer(&ld);
    if (!ld.rc) load_meta(&ld);
    if (!ld.rc) ld.rc = findings_load(&m->fs, &m->g, E, err, errlen);
    if (!ld.rc && ld.pack) ld.rc = pack_weights(m);
    if (!ld.rc) ld.rc = alloc_buffers(m);
    if (ld.rc) {
        if (!err[0]) snprintf(err, errlen, "%s", cxr_strerror(ld.rc));
        cxr_model_close(m);
        return ld.rc;
    }
    m->info.open_ms = now_ms() - t0;
    *out = m;
    return CXR_OK;
}

void cxr_model_close(cxr_model *m) {
    if (!m) return;
    findings_free(&m->fs);
    free(m->cnn_scratch);
    free(m->cnn_fmap);
    free(m->cnn_pooled);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    for (int i = 0; m->vit.blk && i < m->vit.L; i++) free_block(&m->vit.blk[i]);
    for (int i = 0; m->txt.blk && i < m->txt.L; i++) free_block(&m->txt.blk[i]);
    gemm_free(&m->vit.patch_pk);
    gemm_free(&m->vit.proj.pk);
    gemm_free(&m->txt.proj.pk);
    gemm_free(&m->txt.proj0.pk);
    gemm_free(&m->txt.proj2.pk);
    free(m->vit.blk);
    free(m->vit.pos_cache);
    free(m->txt.blk);
    tok_free(m->tok);
    free(m->x); free(m->h); free(m->q); free(m->k); free(m->v); free(m->att); free(m->ff);
    free(m->scratch); free(m->patch_emb); free(m->dom_diff); free(m->lay_x);
    gguf_close(&m->g);
    free(m);
}

const cxr_model_info *cxr_model_get_info(const cxr_model *m) { return m ? &m->info : NULL; }

/* ------------------------------------------------------------- forward */

/* One transformer block over n rows of x (t tokens per sequence, nseq
 * sequences). pre-LN (CLIP, ViT) or post-LN (BERT). */
static void block_forward(cxr_model *m, const block_w *b, float *x, int nseq, int t, int D, int heads, int FF,
                          float eps, int act, int causal, int post_ln) {
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

static void l2norm(float *x, int n) {
    double s = 0;
    for (int i = 0; i < n; i++) s += (double)x[i] * x[i];
    float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
    for (int i = 0; i < n; i++) x[i] *= inv;
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

/* CNN tower: one image at a time (activations are per image). Evidence
 * cells are the final feature map's locations through post_ln + proj. */
static int embed_image_cnn(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
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
        l2norm(out + (int64_t)b * E, E);
        if (b == 0) {
            if (m->dom_prec) {
                memcpy(m->dom_diff, pooled, (size_t)cn * sizeof(float));
                m->dom_last = mahalanobis2(m->dom_diff, m->dom_mean, m->dom_prec, cn);
            }
            if (m->lay_mean) { /* fitted at the model's own size only */
                int G = m->lay_grid;
                m->lay_last = size == c->S && layout_vector(m, in, channels, size, G, m->lay_x) == 0
                                  ? mahalanobis2(m->lay_x, m->lay_mean, m->lay_prec, G * G)
                                  : NAN;
            }
            if (g == cnn_grid(c, c->S)) {
                int64_t locs = (int64_t)g * g;
                layernorm_forward(m->cnn_fmap, m->cnn_fmap, c->ln_w, c->ln_b, (int)locs, cn, c->eps);
                linear_forward(m->patch_emb, m->cnn_fmap, c->proj_w, NULL, (int)locs, cn, E);
                for (int64_t i = 0; i < locs; i++) l2norm(m->patch_emb + i * E, E);
                m->patch_grid = g;
            } else {
                m->patch_grid = 0;
            }
        }
    }
    return CXR_OK;
}

int cxr_model_embed_image(cxr_model *m, const float *in, int batch, int channels, int size, float *out) {
    if (!m || !in || !out) return CXR_ERR_ARG;
    if (!m->info.has_vision) return CXR_ERR_ARG;
    if (m->is_cnn) return embed_image_cnn(m, in, batch, channels, size, out);
    vit_w *v = &m->vit;
    if (batch < 1 || batch > m->params.max_batch || (channels != 1 && channels != 3) || size < v->P ||
        size % v->P || size / v->P > 4 * v->grid)
        return CXR_ERR_ARG;
    int grid = size / v->P, N = grid * grid, t = N + 1, D = v->D, P = v->P, E = m->info.embed_dim;
    if (ensure_buffers(m, (int64_t)batch * t, t) != CXR_OK) return CXR_ERR_NOMEM;
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
    for (int b = 0; b < batch; b++) l2norm(out + (int64_t)b * E, E);
    if (grid == v->grid) {
        layernorm_forward(m->h, m->x + D, v->post.w, v->post.b, N, D, v->eps);
        dense_forward(m->patch_emb, E, m->h, D, v->proj.w, &v->proj.pk, NULL, N, D, E, GEMM_ACT_NONE, 0);
        for (int i = 0; i < N; i++) l2norm(m->patch_emb + (int64_t)i * E, E);
        m->patch_grid = grid;
    } else {
        m->patch_grid = 0;
    }
    return CXR_OK;
}

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
    l2norm(out, E);
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

int cxr_model_patch_similarity(const cxr_model *m, const float *text_emb, float *out, int *grid) {
    if (!m || !text_emb || !out || !grid) return CXR_ERR_ARG;
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

/* ----------------------------------------------------------- zero-shot */

float cxr_zeroshot_prob(float logit_scale, const float *img, const float *pos, const float *neg, int dim) {
    double sp = 0, sn = 0;
    for (int i = 0; i < dim; i++) {
        sp += (double)img[i] * pos[i];
        sn += (double)img[i] * neg[i];
    }
    double d = logit_scale * (sn - sp);
    return (float)(1.0 / (1.0 + exp(d)));
}

void cxr_prompt_ensemble(const float *embs, int n, int dim, float *out) {
    for (int c = 0; c < dim; c++) out[c] = 0;
    for (int i = 0; i < n; i++) {
        const float *e = embs + (int64_t)i * dim;
        double s = 0;
        for (int c = 0; c < dim; c++) s += (double)e[c] * e[c];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int c = 0; c < dim; c++) out[c] += e[c] * inv;
    }
    l2norm(out, dim);
}

/* ------------------------------------------------------------ findings */

int cxr_model_n_findings(const cxr_model *m) { return m ? m->fs.n : 0; }

const cxr_finding *cxr_model_finding(const cxr_model *m, int i) {
    return m && i >= 0 && i < m->fs.n ? &m->fs.f[i] : NULL;
}

int cxr_model_find_finding(const cxr_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->fs.n; i++)
        if (!strcmp(m->fs.f[i].name, name)) return i;
    return -1;
}

const char *cxr_model_prompt_set_version(const cxr_model *m) { return m ? m->fs.prompt_set_version : ""; }

int cxr_model_score_finding(const cxr_model *m, int i, const float *img, float *z, float *p) {
    if (!m || !img || i < 0 || i >= m->fs.n) return CXR_ERR_ARG;
    int E = m->info.embed_dim;
    const float *pos = m->fs.pos + (int64_t)i * E, *neg = m->fs.neg + (int64_t)i * E;
    double d = 0;
    for (int c = 0; c < E; c++) d += (double)img[c] * (pos[c] - neg[c]);
    double zz = m->info.logit_scale * d;
    const cxr_finding *f = &m->fs.f[i];
    if (z) *z = (float)zz;
    if (p) *p = (float)(1.0 / (1.0 + exp(-(f->calib_a * zz + f->calib_b))));
    return CXR_OK;
}

int cxr_model_finding_prompts(const cxr_model *m, int i, const float **pos, const float **neg) {
    if (!m || !pos || !neg || i < 0 || i >= m->fs.n) return CXR_ERR_ARG;
    *pos = m->fs.pos + (int64_t)i * m->info.embed_dim;
    *neg = m->fs.neg + (int64_t)i * m->info.embed_dim;
    return CXR_OK;
}

float cxr_model_domain_score(const cxr_model *m, const float *img) {
    if (!m || !img || m->fs.n_proto < 1) return NAN;
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

float cxr_model_domain_threshold(const cxr_model *m) { return m ? m->fs.domain_threshold : NAN; }

float cxr_model_domain_distance(const cxr_model *m) { return m && m->dom_prec ? m->dom_last : NAN; }

float cxr_model_layout_distance(const cxr_model *m) { return m && m->lay_mean ? m->lay_last : NAN; }

/* The limits of one image-domain check: (w, r) when the block is present. */
static int limits_out(int present, float w, float r, float *warn, float *refuse) {
    if (warn) *warn = present ? w : NAN;
    if (refuse) *refuse = present ? r : NAN;
    return present ? CXR_OK : CXR_ERR_MISSING;
}

int cxr_model_layout_limits(const cxr_model *m, float *warn, float *refuse) {
    int on = m && m->lay_mean;
    return limits_out(on, on ? m->lay_warn : NAN, on ? m->lay_refuse : NAN, warn, refuse);
}

int cxr_model_domain_limits(const cxr_model *m, float *warn, float *refuse) {
    int on = m && m->dom_prec;
    return limits_out(on, on ? m->dom_warn : NAN, on ? m->dom_refuse : NAN, warn, refuse);
}
