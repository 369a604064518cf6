/*
 * model.c — opening a model: maps the GGUF file, hashes it, looks every tensor
 * up by name once with its shape checked (the loader the tower files use),
 * resolves the thread count, packs the Linear weights for gemm.c, sizes the
 * activation buffers, and frees it all at close; cxr_model_get_info and
 * cxr_model_sha256. It must not run a forward pass or know what a tower
 * computes, and reads no file but the model's.
 */
#define _DEFAULT_SOURCE /* madvise */
#include "model_internal.h"
#include "cxr_sha256.h"
#include "cxr_util.h"
#include "f16.h"
#include "kernels.h"
#include "pool.h"

#include <math.h>
#include <stddef.h>
#include <stdatomic.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <time.h>
#include <unistd.h>

cxr_model_params cxr_model_params_default(void) {
    cxr_model_params p = {.threads = 0, .max_batch = 8};
    return p;
}

/* ------------------------------------------------------------- loading */

const gguf_tensor *load_find(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                             int64_t d3) {
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

const float *load_f32(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3) {
    const gguf_tensor *t = load_find(ld, name, optional, n, d0, d1, d2, d3);
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

/* A Linear weight (n, k). Packed later (pack_weights) straight from the
 * mapping, F16 included, when ld->pack; otherwise read as get_t does. */
void load_lin(loader *ld, lin_w *l, const char *name, int64_t n, int64_t k) {
    if (!ld->pack) {
        l->w = T2(name, 0, n, k);
        return;
    }
    const gguf_tensor *t = load_find(ld, name, 0, 2, n, k, 0, 0);
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

uint32_t load_u32(loader *ld, const char *key, uint32_t dflt, int required, uint32_t lo, uint32_t hi) {
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

int load_act(loader *ld, const char *key) {
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

/* The assessability limits a site set in the file (FORMAT.md, cxr.assess.*):
 * -1 / NaN when absent; a present key of the wrong type or range is an error. */
static void load_assess(loader *ld) {
    cxr_model *m = ld->m;
    cxr_model_info *in = &m->info;
    in->assess_min_positives = in->assess_open_vocab_validated = -1;
    in->assess_min_auc_lo = in->assess_full_auc_lo = NAN;
    if (gguf_get_u32(&m->g, "cxr.assess.min_positives", &(uint32_t){0}) != -1)
        in->assess_min_positives = (int)load_u32(ld, "cxr.assess.min_positives", 0, 1, 0, 1000000);
    static const struct {
        const char *key;
        size_t off;
    } f32s[] = {{"cxr.assess.min_auc_lo", offsetof(cxr_model_info, assess_min_auc_lo)},
                {"cxr.assess.full_auc_lo", offsetof(cxr_model_info, assess_full_auc_lo)}};
    for (size_t i = 0; i < sizeof f32s / sizeof f32s[0] && !ld->rc; i++) {
        float v;
        int r = gguf_get_f32(&m->g, f32s[i].key, &v);
        if (r == -1) continue;
        if (r != 0 || !(v >= 0.0f && v <= 1.0f)) {
            snprintf(ld->err, ld->errlen, "key '%s' must be an f32 in 0..1", f32s[i].key);
            ld->rc = CXR_ERR_FORMAT;
        } else {
            memcpy((char *)in + f32s[i].off, &v, sizeof v);
        }
    }
    int b = 0, r = gguf_get_bool(&m->g, "cxr.assess.open_vocab_validated", &b);
    if (r == -2 && !ld->rc) {
        snprintf(ld->err, ld->errlen, "key 'cxr.assess.open_vocab_validated' must be a bool");
        ld->rc = CXR_ERR_FORMAT;
    } else if (r == 0) {
        in->assess_open_vocab_validated = b;
    }
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
    int native = m->is_classifier ? m->cv.S : m->is_cnn ? m->cnn.S : m->vit.S;
    in->pp_size = (int)load_u32(ld, "cxr.preproc.size", (uint32_t)(native ? native : 224), 0, 8, 4096);
    in->pp_channels = (int)load_u32(ld, "cxr.preproc.channels", 3, 0, 1, 3);
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
    load_assess(ld);
}

/* ------------------------------------------------------------- packing */

/* A packed copy replaces the weight's pages: a later read faults them in
 * again from the page cache, so this is only about resident memory. */
void model_release(cxr_model *m, const void *p, size_t n) {
    const char *lo = m->g.map, *c = p;
    if (!lo || !c || c < lo || c + n > lo + m->g.size) return; /* only the file mapping, never the heap */
    long pg = sysconf(_SC_PAGESIZE);
    if (pg <= 0) return;
    uintptr_t a = ((uintptr_t)p + (uintptr_t)pg - 1) & ~((uintptr_t)pg - 1), e = ((uintptr_t)p + n) & ~((uintptr_t)pg - 1);
    if (e > a) madvise((void *)a, e - a, MADV_DONTNEED);
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
    (void)worker;
    int r = i < j->nv ? block_pack(j->m, &v->blk[i], v->D, v->FF) : block_pack(j->m, &t->blk[i - j->nv], t->W, t->FF);
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
        if (lin_pack(&v->proj, E, v->D)) return CXR_ERR_NOMEM;
        model_release(m, v->patch_w, (size_t)v->D * pd * sizeof(float));
        lin_release(m, &v->proj, E, v->D);
    }
    if (nt) {
        if (t->mlp_proj) {
            if (lin_pack(&t->proj0, t->M, t->W) || lin_pack(&t->proj2, E, t->M)) return CXR_ERR_NOMEM;
            lin_release(m, &t->proj0, t->M, t->W);
            lin_release(m, &t->proj2, E, t->M);
        } else {
            if (lin_pack(&t->proj, E, t->W)) return CXR_ERR_NOMEM;
            lin_release(m, &t->proj, E, t->W);
        }
    }
    return CXR_OK;
}

int model_ensure_buffers(cxr_model *m, int64_t tokens, int64_t seq) {
    int64_t width = m->cap_width, ffw = m->cap_ff, scr = 1;
    int th = m->params.threads;
    if (m->info.has_vision && !m->is_cnn && !m->is_classifier) { /* the ViT */
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
        /* touched now, so that the first image does not pay the page faults
           (a one-shot ask opens the model while DCMTK loads its dictionary) */
        memset(m->cnn_scratch, 0, (size_t)m->cnn_scratch_cap * sizeof(float));
        if (m->cnn.ws.col) memset(m->cnn.ws.col, 0, (size_t)m->cnn.ws.col_len * m->cnn.ws.workers * sizeof(float));
    } else if (m->info.has_vision && !m->is_classifier) { /* a classifier's tower sizes its own */
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
    if (m->info.has_vision && !m->is_cnn && !m->is_classifier) {
        int64_t n = (int64_t)m->vit.grid * m->vit.grid;
        m->patch_emb = malloc((size_t)(n * m->info.embed_dim) * sizeof(float));
        if (!m->patch_emb) return CXR_ERR_NOMEM;
    }
    return model_ensure_buffers(m, tokens, seq);
}

/* A classifier file: an image tower, no text tower, one label per output. */
static void check_classifier(loader *ld, int K) {
    cxr_model *m = ld->m;
    uint64_t n = 0;
    if (!m->info.has_vision || m->info.has_text) {
        snprintf(ld->err, ld->errlen, "a cxr-classifier file has an image tower and no text tower");
        ld->rc = CXR_ERR_FORMAT;
    } else if (gguf_get_str_arr(&m->g, "cxr.classifier.labels", &m->cv_labels, &m->cv_label_blob, &n) ||
               n != (uint64_t)K) {
        snprintf(ld->err, ld->errlen, "key 'cxr.classifier.labels' must hold %d labels (clip.projection_dim)", K);
        ld->rc = CXR_ERR_FORMAT;
    }
}

const char *cxr_model_output_label(const cxr_model *m, int k) {
    return m && m->cv_labels && k >= 0 && k < m->info.embed_dim ? m->cv_labels[k] : NULL;
}

/* params.threads = 0: decided here once the image tower is known. */
static int auto_threads(void) {
    /* every tower now runs on the pool (the CNN's convolutions too, whose
       OpenBLAS threads used to fight a busy machine): the online cores. The
       shipped CNN tower, tests/bench/bench_engine: 7.8 ms on 1 thread, 6.5 on 2 */
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    return n > 0 ? (int)n : 1;
}

int cxr_model_open(const char *path, const cxr_model_params *pp, cxr_model **out, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!out || !path) return CXR_ERR_ARG;
    *out = NULL;
    double t0 = cxr_now_ms();
    cxr_model *m = calloc(1, sizeof *m);
    if (!m) return CXR_ERR_NOMEM;
    m->params = pp ? *pp : cxr_model_params_default();
    if (m->params.max_batch < 1 || m->params.max_batch > 256) {
        snprintf(err, errlen, "max_batch %d outside 1..256", m->params.max_batch);
        free(m);
        return CXR_ERR_ARG;
    }
    int rc = gguf_open(&m->g, path, err, errlen);
    if (rc != CXR_OK) {
        free(m);
        return rc;
    }
    /* the file's hash from the bytes just mapped (before packing releases
     * pages of them): the file is read once per open */
    cxr_sha256_hex(m->g.map, m->g.size, m->sha256);
    loader ld = {m, err, errlen, 0, gemm_available()};
    char arch[32] = "";
    if (gguf_get_str(&m->g, "general.architecture", arch, sizeof arch) != 0 ||
        (strcmp(arch, "clip") && strcmp(arch, "cxr-classifier"))) {
        snprintf(err, errlen, "general.architecture is '%s', expected 'clip' or 'cxr-classifier'", arch);
        ld.rc = CXR_ERR_FORMAT;
    }
    m->is_classifier = m->info.classifier = !strcmp(arch, "cxr-classifier");
    int E = (int)load_u32(&ld, "clip.projection_dim", 0, 1, 1, 16384);
    m->info.embed_dim = E;
    int hv = 1, ht = 1;
    gguf_get_bool(&m->g, "clip.has_vision_encoder", &hv);
    gguf_get_bool(&m->g, "clip.has_text_encoder", &ht);
    m->info.has_vision = hv;
    m->info.has_text = ht;
    if (!ld.rc && m->is_classifier) check_classifier(&ld, E);
    if (m->params.threads <= 0) m->params.threads = auto_threads();
    m->info.threads = m->params.threads;
    kernels_set_threads(m->params.threads); /* the towers pack their weights on the pool */
    if (!ld.rc && hv) image_load(&ld, E);
    if (!ld.rc && ht) text_load(&ld, E);
    if (!ld.rc && ht) text_load_tokenizer(&ld);
    if (!ld.rc) load_meta(&ld);
    if (!ld.rc) ld.rc = findings_load(&m->fs, &m->g, E, m->is_classifier, err, errlen);
    if (!ld.rc && ld.pack) ld.rc = pack_weights(m);
    if (!ld.rc) ld.rc = alloc_buffers(m);
    if (ld.rc) {
        if (!err[0]) snprintf(err, errlen, "%s", cxr_strerror(ld.rc));
        cxr_model_close(m);
        return ld.rc;
    }
    m->info.open_ms = cxr_now_ms() - t0;
    *out = m;
    return CXR_OK;
}

void cxr_model_close(cxr_model *m) {
    if (!m) return;
    findings_free(&m->fs);
    convnet_free(&m->cv);
    cnn_free(&m->cnn);
    free(m->cv_fmap);
    free(m->cv_labels);
    free(m->cv_label_blob);
    free(m->cnn_scratch);
    free(m->cnn_fmap);
    free(m->cnn_pooled);
    for (int i = 0; i < m->n_owned; i++) free(m->owned[i]);
    free(m->owned);
    for (int i = 0; m->vit.blk && i < m->vit.L; i++) block_free(&m->vit.blk[i]);
    for (int i = 0; m->txt.blk && i < m->txt.L; i++) block_free(&m->txt.blk[i]);
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
    free(m->scratch); free(m->patch_emb); free(m->dom_diff); free(m->dom_emb);
    gguf_close(&m->g);
    free(m);
}

const cxr_model_info *cxr_model_get_info(const cxr_model *m) { return m ? &m->info : NULL; }

const char *cxr_model_sha256(const cxr_model *m) { return m ? m->sha256 : ""; }
