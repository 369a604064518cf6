/*
 * test_model.c — unit and anomaly tests of the engine without Python:
 * kernels against naive twins, a tiny GGUF model written here (random
 * weights, a byte-level BPE vocabulary) opened and run, and every loader
 * failure: bad magic, wrong version, truncation at every offset of the
 * header, a missing tensor, a wrong shape, an unsupported dtype, absurd
 * counts and dimensions — each with its exact error code and a message
 * naming the tensor or offset.
 */
#include "cxr_model.h"
#include "cxr_sha256.h"
#include "gguf.h"
#include "f16.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static uint32_t rng = 7;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return ((rng >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

/* ------------------------------------------------------------- kernels */

static void test_kernels(void) {
    enum { N = 7, I = 13, O = 5 };
    float in[N * I], w[O * I], b[O], out[N * O];
    for (int i = 0; i < N * I; i++) in[i] = frand();
    for (int i = 0; i < O * I; i++) w[i] = frand();
    for (int i = 0; i < O; i++) b[i] = frand();
    kernels_set_threads(2);
    linear_forward(out, in, w, b, N, I, O);
    double md = 0;
    for (int r = 0; r < N; r++)
        for (int o = 0; o < O; o++) {
            double s = b[o];
            for (int k = 0; k < I; k++) s += (double)in[r * I + k] * w[o * I + k];
            md = fmax(md, fabs(s - out[r * O + o]));
        }
    CHECK(md < 1e-5, "linear vs naive: max diff %g", md);

    float ln[N * I], g[I], bb[I];
    for (int i = 0; i < I; i++) { g[i] = 1 + 0.1f * frand(); bb[i] = 0.1f * frand(); }
    layernorm_forward(ln, in, g, bb, N, I, 1e-5f);
    md = 0;
    for (int r = 0; r < N; r++) {
        double mu = 0, var = 0;
        for (int k = 0; k < I; k++) mu += in[r * I + k];
        mu /= I;
        for (int k = 0; k < I; k++) var += (in[r * I + k] - mu) * (in[r * I + k] - mu);
        var /= I;
        for (int k = 0; k < I; k++)
            md = fmax(md, fabs((in[r * I + k] - mu) / sqrt(var + 1e-5) * g[k] + bb[k] - ln[r * I + k]));
    }
    CHECK(md < 1e-5, "layernorm vs naive: max diff %g", md);

    /* attention: 2 heads of 3, 4 tokens, causal and not */
    enum { T = 4, H = 2, DH = 3, D = H * DH };
    float q[T * D], k[T * D], v[T * D], o[T * D], scr[T * T * H];
    for (int i = 0; i < T * D; i++) { q[i] = frand(); k[i] = frand(); v[i] = frand(); }
    for (int causal = 0; causal <= 1; causal++) {
        attention_forward(o, D, q, k, v, D, T, H, DH, causal, scr);
        md = 0;
        for (int h = 0; h < H; h++)
            for (int i = 0; i < T; i++) {
                double s[T], mx = -1e30, sum = 0;
                int jn = causal ? i + 1 : T;
                for (int j = 0; j < jn; j++) {
                    s[j] = 0;
                    for (int c = 0; c < DH; c++) s[j] += q[i * D + h * DH + c] * k[j * D + h * DH + c];
                    s[j] /= sqrt((double)DH);
                    mx = fmax(mx, s[j]);
                }
                for (int j = 0; j < jn; j++) sum += (s[j] = exp(s[j] - mx));
                for (int c = 0; c < DH; c++) {
                    double acc = 0;
                    for (int j = 0; j < jn; j++) acc += s[j] / sum * v[j * D + h * DH + c];
                    md = fmax(md, fabs(acc - o[i * D + h * DH + c]));
                }
            }
        CHECK(md < 1e-5, "attention (causal %d) vs naive: max diff %g", causal, md);
    }

    float x[4] = {-1.0f, 0.0f, 0.5f, 3.0f}, y[4];
    memcpy(y, x, sizeof x);
    act_forward(y, 4, ACT_QUICK_GELU);
    for (int i = 0; i < 4; i++) CHECK(fabs(y[i] - x[i] / (1 + exp(-1.702 * x[i]))) < 1e-6, "quick_gelu %d", i);
    memcpy(y, x, sizeof x);
    act_forward(y, 4, ACT_GELU);
    for (int i = 0; i < 4; i++) CHECK(fabs(y[i] - 0.5 * x[i] * (1 + erf(x[i] / sqrt(2.0)))) < 1e-6, "gelu %d", i);

    /* bicubic: same size is the identity; a constant stays constant */
    float grid[3 * 3 * 2], g2[5 * 5 * 2];
    for (int i = 0; i < 18; i++) grid[i] = frand();
    float same[18];
    bicubic_grid_forward(same, grid, 3, 3, 2);
    md = 0;
    for (int i = 0; i < 18; i++) md = fmax(md, fabs(same[i] - grid[i]));
    CHECK(md < 1e-6, "bicubic same size: max diff %g", md);
    for (int i = 0; i < 18; i++) grid[i] = 0.25f;
    bicubic_grid_forward(g2, grid, 3, 5, 2);
    md = 0;
    for (int i = 0; i < 50; i++) md = fmax(md, fabs(g2[i] - 0.25));
    CHECK(md < 1e-6, "bicubic constant: max diff %g", md);

    CHECK(f16_to_f32(0x3c00) == 1.0f && f16_to_f32(0xc000) == -2.0f && f16_to_f32(0x0000) == 0.0f &&
              f16_to_f32(0x7bff) == 65504.0f && fabsf(f16_to_f32(0x0001) - 5.960464477539063e-08f) < 1e-12f &&
              isinf(f16_to_f32(0x7c00)),
          "f16 conversion of known values");
}

/* --------------------------------------------------- a tiny GGUF writer */

typedef struct { uint8_t *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 1024;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void kv_u32(buf *b, const char *k, uint32_t v) { put_str(b, k); put_u32(b, GGUF_UINT32); put_u32(b, v); }
static void kv_f32(buf *b, const char *k, float v) { put_str(b, k); put_u32(b, GGUF_FLOAT32); put(b, &v, 4); }
static void kv_str(buf *b, const char *k, const char *v) { put_str(b, k); put_u32(b, GGUF_STRING); put_str(b, v); }

typedef struct { char name[64]; int nd; int64_t shape[4]; } tdesc; /* NumPy shape */

enum { IMG = 32, PATCH = 16, VD = 16, VL = 1, VH = 2, E = 8, TW = 16, TL = 1, TH = 2, CTX = 8 };
#define NVOCAB (256 + 256 + 2)

static int tiny_tensors(tdesc *t) {
    int n = 0;
#define ADD(nm, d, a, b_, c, e_) do { snprintf(t[n].name, 64, "%s", nm); t[n].nd = d; t[n].shape[0] = a; t[n].shape[1] = b_; t[n].shape[2] = c; t[n].shape[3] = e_; n++; } while (0)
    int grid = IMG / PATCH;
    ADD("v.patch_embd.weight", 4, VD, 3, PATCH, PATCH);
    ADD("v.class_embd", 1, VD, 0, 0, 0);
    ADD("v.position_embd.weight", 2, grid * grid + 1, VD, 0, 0);
    ADD("v.pre_ln.weight", 1, VD, 0, 0, 0);
    ADD("v.pre_ln.bias", 1, VD, 0, 0, 0);
    const char *pf[2] = {"v", "t"};
    int wd[2] = {VD, TW};
    for (int s = 0; s < 2; s++) {
        char nm[64];
        int D = wd[s];
#define B(x, d, a, b_) do { snprintf(nm, 64, "%s.blk.0.%s", pf[s], x); ADD(nm, d, a, b_, 0, 0); } while (0)
        B("ln1.weight", 1, D, 0); B("ln1.bias", 1, D, 0); B("ln2.weight", 1, D, 0); B("ln2.bias", 1, D, 0);
        B("attn_q.weight", 2, D, D); B("attn_q.bias", 1, D, 0); B("attn_k.weight", 2, D, D); B("attn_k.bias", 1, D, 0);
        B("attn_v.weight", 2, D, D); B("attn_v.bias", 1, D, 0); B("attn_out.weight", 2, D, D); B("attn_out.bias", 1, D, 0);
        B("ffn_up.weight", 2, 4 * D, D); B("ffn_up.bias", 1, 4 * D, 0); B("ffn_down.weight", 2, D, 4 * D); B("ffn_down.bias", 1, D, 0);
#undef B
    }
    ADD("v.post_ln.weight", 1, VD, 0, 0, 0);
    ADD("v.post_ln.bias", 1, VD, 0, 0, 0);
    ADD("v.proj.weight", 2, E, VD, 0, 0);
    ADD("t.token_embd.weight", 2, NVOCAB, TW, 0, 0);
    ADD("t.position_embd.weight", 2, CTX, TW, 0, 0);
    ADD("t.post_ln.weight", 1, TW, 0, 0, 0);
    ADD("t.post_ln.bias", 1, TW, 0, 0, 0);
    ADD("t.proj.weight", 2, E, TW, 0, 0);
#undef ADD
    return n;
}

/* GPT-2 byte → unicode, UTF-8 encoded into out (≤ 3 bytes + NUL). */
static void byte_char(int b, char *out) {
    int cp;
    if ((b >= 33 && b <= 126) || (b >= 161 && b <= 172) || (b >= 174 && b <= 255)) {
        cp = b;
    } else {
        int k = 0;
        for (int x = 0; x < b; x++)
            if (!((x >= 33 && x <= 126) || (x >= 161 && x <= 172) || (x >= 174 && x <= 255))) k++;
        cp = 256 + k;
    }
    if (cp < 0x80) { out[0] = (char)cp; out[1] = 0; }
    else { out[0] = (char)(0xc0 | (cp >> 6)); out[1] = (char)(0x80 | (cp & 0x3f)); out[2] = 0; }
}

/* mutate: 0 none; 1 drop tensor `which`; 2 wrong shape of `which`; 3 dtype 2 for `which` */
static buf tiny_model(int mutate, const char *which) {
    buf b = {0};
    tdesc t[64];
    int nt = tiny_tensors(t);
    int nkv = 18;
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    int skip = mutate == 1 ? 1 : 0;
    put_u64(&b, (uint64_t)(nt - skip));
    put_u64(&b, (uint64_t)nkv);
    kv_str(&b, "general.architecture", "clip");
    kv_str(&b, "general.name", "tiny-test");
    kv_u32(&b, "clip.projection_dim", E);
    kv_f32(&b, "clip.logit_scale", logf(100.0f));
    kv_u32(&b, "clip.vision.image_size", IMG);
    kv_u32(&b, "clip.vision.patch_size", PATCH);
    kv_u32(&b, "clip.vision.embedding_length", VD);
    kv_u32(&b, "clip.vision.block_count", VL);
    kv_u32(&b, "clip.vision.attention.head_count", VH);
    kv_str(&b, "clip.text.architecture", "clip");
    kv_u32(&b, "clip.text.context_length", CTX);
    kv_u32(&b, "clip.text.vocab_size", NVOCAB);
    kv_u32(&b, "clip.text.embedding_length", TW);
    kv_u32(&b, "clip.text.block_count", TL);
    kv_u32(&b, "clip.text.attention.head_count", TH);
    kv_str(&b, "tokenizer.ggml.model", "clip-bpe");
    /* tokens: bytes, bytes</w>, specials; no merges */
    put_str(&b, "tokenizer.ggml.tokens");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, NVOCAB);
    for (int w = 0; w < 2; w++)
        for (int i = 0; i < 256; i++) {
            char s[16];
            byte_char(i, s);
            if (w) strcat(s, "</w>");
            put_str(&b, s);
        }
    put_str(&b, "<|startoftext|>");
    put_str(&b, "<|endoftext|>");
    put_str(&b, "tokenizer.ggml.merges");
    put_u32(&b, GGUF_ARRAY);
    put_u32(&b, GGUF_STRING);
    put_u64(&b, 0);
    uint64_t off = 0;
    for (int i = 0; i < nt; i++) {
        int hit = which && !strcmp(t[i].name, which);
        if (mutate == 1 && hit) continue;
        put_str(&b, t[i].name);
        put_u32(&b, (uint32_t)t[i].nd);
        int64_t n = 1;
        for (int d = t[i].nd - 1; d >= 0; d--) {
            int64_t dim = t[i].shape[d] + ((mutate == 2 && hit && d == 0) ? 1 : 0);
            put_u64(&b, (uint64_t)dim);
            n *= dim;
        }
        put_u32(&b, (mutate == 3 && hit) ? 2 : 0);
        put_u64(&b, off);
        off += ((uint64_t)n * 4 + 31) / 32 * 32;
    }
    while (b.n % 32) put(&b, "", 1);
    for (int i = 0; i < nt; i++) {
        int hit = which && !strcmp(t[i].name, which);
        if (mutate == 1 && hit) continue;
        int64_t n = 1;
        for (int d = 0; d < t[i].nd; d++) n *= t[i].shape[d] + ((mutate == 2 && hit && d == 0) ? 1 : 0);
        int is_ln_w = strstr(t[i].name, "ln") && strstr(t[i].name, ".weight");
        for (int64_t k = 0; k < n; k++) {
            float v = is_ln_w ? 1.0f + 0.1f * frand() : 0.2f * frand();
            put(&b, &v, 4);
        }
        while (b.n % 32) put(&b, "", 1);
    }
    return b;
}

static int write_file(const char *path, const buf *b, size_t n) {
    FILE *f = fopen(path, "wb");
    if (!f) return -1;
    size_t w = fwrite(b->p, 1, n, f);
    return fclose(f) == 0 && w == n ? 0 : -1;
}

static void test_loader(void) {
    char path[] = "/tmp/cxr_test_model_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) { CHECK(0, "mkstemp"); return; }
    close(fd);
    char err[CXR_ERRMSG_MAX];
    cxr_model *m = NULL;
    cxr_model_params p = cxr_model_params_default();
    p.threads = 1;
    p.max_batch = 2;

    buf good = tiny_model(0, NULL);
    write_file(path, &good, good.n);
    int rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_OK, "tiny model opens: %s", err);
    if (rc == CXR_OK) {
        const cxr_model_info *in = cxr_model_get_info(m);
        CHECK(in->embed_dim == E && in->image_size == IMG && in->text_ctx == CTX && in->text_vocab == NVOCAB,
              "info fields");
        CHECK(fabsf(in->logit_scale - 100.0f) < 1e-3f, "logit scale is exp of the stored log");
        float img[2 * 3 * IMG * IMG], e[2 * E], e1[E];
        for (int i = 0; i < 2 * 3 * IMG * IMG; i++) img[i] = frand();
        CHECK(cxr_model_embed_image(m, img, 2, 3, IMG, e) == CXR_OK, "embed batch 2");
        CHECK(cxr_model_embed_image(m, img + 3 * IMG * IMG, 1, 3, IMG, e1) == CXR_OK, "embed batch 1");
        double md = 0, nrm = 0;
        for (int i = 0; i < E; i++) { md = fmax(md, fabs(e1[i] - e[E + i])); nrm += e1[i] * e1[i]; }
        CHECK(md < 1e-5, "batch result equals single-image result (max diff %g)", md);
        CHECK(fabs(nrm - 1) < 1e-5, "embedding is L2-normalised (|e|² = %g)", nrm);
        /* other input size: positions interpolated */
        float big[3 * 48 * 48];
        for (int i = 0; i < 3 * 48 * 48; i++) big[i] = frand();
        CHECK(cxr_model_embed_image(m, big, 1, 3, 48, e1) == CXR_OK, "embed at 48 px (interpolated positions)");
        CHECK(cxr_model_embed_image(m, big, 1, 3, 40, e1) == CXR_ERR_ARG, "size not a multiple of the patch");
        float sim[4];
        int grid = 0;
        CHECK(cxr_model_embed_image(m, img, 1, 3, IMG, e1) == CXR_OK, "embed");
        CHECK(cxr_model_patch_similarity(m, e1, sim, &grid) == CXR_OK && grid == 2, "patch similarity grid");
        int32_t ids[CTX];
        int n = 0;
        CHECK(cxr_model_tokenize(m, "ab", ids, &n) == CXR_OK && n == 4 && ids[0] == NVOCAB - 2 &&
                  ids[n - 1] == NVOCAB - 1,
              "byte-level tokens with SOT/EOT (n=%d)", n);
        float te[E], te2[E];
        CHECK(cxr_model_embed_text(m, "ab", te) == CXR_OK, "embed text");
        /* causal + EOT pooling: padding after EOT changes nothing */
        int32_t padded[CTX] = {0};
        memcpy(padded, ids, (size_t)n * sizeof *ids);
        CHECK(cxr_model_embed_tokens(m, padded, CTX, te2) == CXR_OK, "embed padded tokens");
        md = 0;
        for (int i = 0; i < E; i++) md = fmax(md, fabs(te[i] - te2[i]));
        CHECK(md < 1e-6, "tokens after EOT do not change the embedding (max diff %g)", md);
        int32_t bad[2] = {NVOCAB - 2, NVOCAB};
        CHECK(cxr_model_embed_tokens(m, bad, 2, te2) == CXR_ERR_ARG, "out-of-vocabulary id refused");
        float pz = cxr_zeroshot_prob(100.0f, e1, e1, te, E);
        CHECK(pz > 0.5f, "zero-shot prefers the identical embedding (p=%g)", pz);
        float ens[E];
        float two[2 * E];
        memcpy(two, e1, sizeof e1);
        memcpy(two + E, e1, sizeof e1);
        cxr_prompt_ensemble(two, 2, E, ens);
        md = 0;
        for (int i = 0; i < E; i++) md = fmax(md, fabs(ens[i] - e1[i]));
        CHECK(md < 1e-6, "ensemble of identical prompts is the prompt");
        /* no domain blocks in this file: every field NaN */
        cxr_domain_check dc;
        CHECK(cxr_model_domain_check(m, img, 3, IMG, e1, &dc) == CXR_OK && isnan(dc.score) &&
                  isnan(dc.score_threshold) && isnan(dc.distance) && isnan(dc.distance_warn) &&
                  isnan(dc.distance_refuse) && isnan(dc.layout_distance) && isnan(dc.layout_warn) &&
                  isnan(dc.layout_refuse),
              "domain check without blocks: NaNs");
        CHECK(cxr_model_domain_check(m, img, 2, IMG, e1, &dc) == CXR_ERR_ARG && isnan(dc.score),
              "domain check: 2 channels refused");
        /* the hash is the whole file's, and explicit threads are kept */
        char hex[65];
        cxr_sha256_hex(good.p, good.n, hex);
        CHECK(!strcmp(cxr_model_sha256(m), hex), "model hash %s, file %s", cxr_model_sha256(m), hex);
        CHECK(in->threads == 1, "threads 1 kept (%d)", in->threads);
        cxr_model_close(m);
    }
    CHECK(!strcmp(cxr_model_sha256(NULL), ""), "hash of NULL is empty");
    p.threads = 0; /* a ViT tower: the online cores */
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_OK && cxr_model_get_info(m)->threads == (int)sysconf(_SC_NPROCESSORS_ONLN),
          "threads 0 with a ViT tower: online cores (%d)", rc == CXR_OK ? cxr_model_get_info(m)->threads : -1);
    cxr_model_close(m);
    m = NULL;
    p.threads = 1;

    /* failures with their codes and messages */
    struct { int mutate; const char *which; int code; const char *msg; } cases[] = {
        {1, "v.blk.0.attn_k.weight", CXR_ERR_MISSING, "v.blk.0.attn_k.weight"},
        {1, "t.proj.weight", CXR_ERR_MISSING, "t.proj.weight"},
        {2, "v.position_embd.weight", CXR_ERR_SHAPE, "v.position_embd.weight"},
        {2, "t.blk.0.ffn_up.weight", CXR_ERR_SHAPE, "t.blk.0.ffn_up.weight"},
        {3, "v.class_embd", CXR_ERR_FORMAT, "v.class_embd"},
    };
    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        buf b = tiny_model(cases[i].mutate, cases[i].which);
        write_file(path, &b, b.n);
        rc = cxr_model_open(path, &p, &m, err, sizeof err);
        CHECK(rc == cases[i].code && strstr(err, cases[i].msg) && !m, "case %zu: rc %d (%s), want %d naming %s", i,
              rc, err, cases[i].code, cases[i].msg);
        free(b.p);
    }
    /* bad magic, version */
    buf b = tiny_model(0, NULL);
    b.p[0] = 'X';
    write_file(path, &b, b.n);
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_ERR_FORMAT && strstr(err, "magic"), "bad magic: %d %s", rc, err);
    b.p[0] = 'G';
    b.p[4] = 2;
    write_file(path, &b, b.n);
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_ERR_FORMAT && strstr(err, "version"), "version 2: %d %s", rc, err);
    b.p[4] = 3;
    /* absurd tensor count */
    uint64_t huge = 1ull << 40;
    memcpy(b.p + 8, &huge, 8);
    write_file(path, &b, b.n);
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_ERR_FORMAT, "absurd tensor count: %d %s", rc, err);
    free(b.p);
    /* truncation: every offset in the first 20 kB, then a stride; never a crash, never success */
    int bad_trunc = 0;
    for (size_t cut = 0; cut < good.n; cut += cut < 20000 ? 1 : 997) {
        gguf_file g;
        memset(&g, 0, sizeof g);
        rc = gguf_parse(&g, good.p, cut, err, sizeof err);
        if (rc == 0) bad_trunc++;
        gguf_close(&g);
    }
    CHECK(bad_trunc == 0, "%d truncated files parsed as valid", bad_trunc);
    write_file(path, &good, good.n / 2);
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_ERR_TRUNCATED, "half file: %d %s", rc, err);
    rc = cxr_model_open("/nonexistent/model.gguf", &p, &m, err, sizeof err);
    CHECK(rc == CXR_ERR_IO, "missing file: %d", rc);
    free(good.p);
    unlink(path);
    cxr_model_close(NULL);
}

/* The shipped CNN model (argv[1]): threads 0 means one thread for a CNN
 * tower; the domain check reads the embed call's pooled features only for
 * that call's image 0 and says so otherwise; the hash equals the file's. */
static void test_shipped(const char *path) {
    char err[CXR_ERRMSG_MAX];
    cxr_model *m = NULL;
    int rc = cxr_model_open(path, NULL, &m, err, sizeof err);
    CHECK(rc == CXR_OK, "%s opens: %s", path, err);
    if (rc != CXR_OK) return;
    const cxr_model_info *in = cxr_model_get_info(m);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    CHECK(!strcmp(in->vision_arch, "cnn") && in->threads == (cores > 0 ? (int)cores : 1),
          "CNN tower, threads 0: the online cores (%d, %ld online)", in->threads, cores);
    int S = in->pp_size, C = in->pp_channels, E = in->embed_dim;
    float *t = malloc((size_t)2 * C * S * S * sizeof *t), *e = malloc((size_t)2 * E * sizeof *e);
    if (!t || !e) { CHECK(0, "alloc"); free(t); free(e); cxr_model_close(m); return; }
    float pad = (0.0f - in->pp_mean[0]) / in->pp_std[0];
    for (int i = 0; i < 2 * C * S * S; i++) t[i] = pad; /* pad border, content inside */
    for (int b = 0; b < 2; b++)
        for (int c = 0; c < C; c++)
            for (int y = S / 8; y < S - S / 8; y++)
                for (int x = S / 6; x < S - S / 6; x++)
                    t[((int64_t)(b * C + c) * S + y) * S + x] = 0.5f * sinf(0.05f * (x + 3 * b) + 0.03f * y);
    cxr_domain_check dc, d1;
    CHECK(cxr_model_embed_image(m, t, 2, C, S, e) == CXR_OK, "embed two images");
    rc = cxr_model_domain_check(m, t, C, S, e, &dc);
    CHECK(rc == CXR_OK && isfinite(dc.score) && isfinite(dc.distance) && dc.distance >= 0 &&
              isfinite(dc.layout_distance) && dc.distance_refuse >= dc.distance_warn &&
              dc.layout_refuse >= dc.layout_warn,
          "image 0: every check (rc %d, distance %g, layout %g)", rc, dc.distance, dc.layout_distance);
    rc = cxr_model_domain_check(m, t + (int64_t)C * S * S, C, S, e + E, &d1);
    CHECK(rc == CXR_ERR_ARG && isnan(d1.distance) && isfinite(d1.layout_distance) && isfinite(d1.score),
          "image 1 of the call: no density distance (rc %d)", rc);
    CHECK(cxr_model_embed_image(m, t + (int64_t)C * S * S, 1, C, S, e + E) == CXR_OK, "embed image 1 alone");
    rc = cxr_model_domain_check(m, t + (int64_t)C * S * S, C, S, e + E, &d1);
    CHECK(rc == CXR_OK && isfinite(d1.distance) && d1.distance != dc.distance, "image 1 alone: its own distance");
    rc = cxr_model_domain_check(m, t, C, S, e, &dc);
    CHECK(rc == CXR_ERR_ARG && isnan(dc.distance), "image 0 after another embed call: refused (rc %d)", rc);
    CHECK(cxr_model_domain_check(m, t + (int64_t)C * S * S, C, S / 2, e + E, &dc) == CXR_OK &&
              isnan(dc.layout_distance) && isfinite(dc.layout_warn) && isfinite(dc.distance),
          "layout of a tensor not at the model's size: NaN, its limits still given");
    /* the hash from the mapping equals the file's bytes hashed after a read */
    FILE *f = fopen(path, "rb");
    cxr_sha256_ctx c;
    cxr_sha256_init(&c);
    unsigned char blk[65536], md[32];
    size_t n;
    while (f && (n = fread(blk, 1, sizeof blk, f)) > 0) cxr_sha256_update(&c, blk, n);
    if (f) fclose(f);
    cxr_sha256_final(&c, md);
    char hex[65];
    for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
    CHECK(f && !strcmp(cxr_model_sha256(m), hex), "hash %s, file read %s", cxr_model_sha256(m), hex);
    free(t);
    free(e);
    cxr_model_close(m);
}

int main(int argc, char **argv) {
    if (argc == 3 && !strcmp(argv[1], "--write-seed")) { /* seed for the loader fuzz target */
        buf b = tiny_model(0, NULL);
        int rc = write_file(argv[2], &b, b.n);
        free(b.p);
        return rc ? 1 : 0;
    }
    test_kernels();
    test_loader();
    if (argc == 2) test_shipped(argv[1]);
    return CHECK_SUMMARY();
}
