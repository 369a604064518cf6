/*
 * test_classifier.c — the classifier towers (model/convnet.c) without
 * Python: tiny DenseNet and ResNet files written here with random weights
 * (FORMAT.md, "Classifier models"), run through the public API and compared
 * with a naive float64 twin in this file (direct NCHW convolutions, no
 * im2col, no packing): logits on 1- and 3-channel inputs, 1 and 2 threads,
 * the portable loops, batches; activation maps whose mean is the logit;
 * torchxrayvision's operating-point normalisation and Platt scoring; and the
 * loader's errors (missing or misshapen tensors named, labels, outputs).
 */
#include "cxr_model.h"
#include "gemm.h"
#include "gguf.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

static uint32_t rng = 11;
static double frand(void) { /* uniform in [-1, 1) */
    rng = rng * 1664525u + 1013904223u;
    return (double)(rng >> 8) / (double)(1u << 23) - 1.0;
}

/* ------------------------------------------------------ tensors and file */

#define MAXT 96
typedef struct {
    char name[64];
    int nd;
    int64_t shape[4]; /* NumPy order */
    float *data;
} tensor;

typedef struct {
    tensor t[MAXT];
    int n;
} tset;

static float *add(tset *s, const char *name, int nd, int64_t a, int64_t b, int64_t c, int64_t d, double scale,
                  double offset) {
    tensor *t = &s->t[s->n++];
    snprintf(t->name, sizeof t->name, "%s", name);
    t->nd = nd;
    t->shape[0] = a; t->shape[1] = b; t->shape[2] = c; t->shape[3] = d;
    int64_t n = 1;
    for (int i = 0; i < nd; i++) n *= t->shape[i];
    t->data = malloc((size_t)n * sizeof(float));
    for (int64_t i = 0; i < n; i++) t->data[i] = (float)(offset + scale * frand());
    return t->data;
}

static const tensor *find(const tset *s, const char *name) {
    for (int i = 0; i < s->n; i++)
        if (!strcmp(s->t[i].name, name)) return &s->t[i];
    return NULL;
}
static const float *get(const tset *s, const char *name) {
    const tensor *t = find(s, name);
    if (!t) {
        fprintf(stderr, "test bug: no tensor %s\n", name);
        exit(2);
    }
    return t->data;
}

typedef struct { unsigned char *p; size_t n, cap; } buf;
static void put(buf *b, const void *d, size_t n) {
    if (b->n + n > b->cap) {
        b->cap = (b->n + n) * 2 + 4096;
        b->p = realloc(b->p, b->cap);
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); }
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s) { put_u64(b, strlen(s)); put(b, s, strlen(s)); }
static void kv_u32(buf *b, const char *k, uint32_t v) { put_str(b, k); put_u32(b, GGUF_UINT32); put_u32(b, v); }
static void kv_str(buf *b, const char *k, const char *v) { put_str(b, k); put_u32(b, GGUF_STRING); put_str(b, v); }
static void kv_bool(buf *b, const char *k, int v) {
    put_str(b, k); put_u32(b, GGUF_BOOL);
    unsigned char c = (unsigned char)v;
    put(b, &c, 1);
}
static void kv_arr_head(buf *b, const char *k, uint32_t type, uint64_t n) {
    put_str(b, k); put_u32(b, GGUF_ARRAY); put_u32(b, type); put_u64(b, n);
}
static void kv_u32s(buf *b, const char *k, const uint32_t *v, int n) {
    kv_arr_head(b, k, GGUF_UINT32, (uint64_t)n);
    for (int i = 0; i < n; i++) put_u32(b, v[i]);
}
static void kv_f32s(buf *b, const char *k, const float *v, int n) {
    kv_arr_head(b, k, GGUF_FLOAT32, (uint64_t)n);
    put(b, v, (size_t)n * 4);
}
static void kv_strs(buf *b, const char *k, const char *const *v, int n) {
    kv_arr_head(b, k, GGUF_STRING, (uint64_t)n);
    for (int i = 0; i < n; i++) put_str(b, v[i]);
}

enum { K = 3, NF = 2, S = 64 };
typedef struct {
    int densenet, cin;
    int nkv;
    buf kv;
} spec;

/* Mutations for the loader's error cases. */
typedef struct {
    const char *drop;     /* tensor left out */
    const char *reshape;  /* tensor whose first dimension is one larger */
    int labels;           /* number of labels written (K when 0) */
    uint32_t output1;     /* finding 1's output index */
    int text;             /* clip.has_text_encoder */
} mutation;

static void keys(spec *sp, const mutation *mu) {
    buf *b = &sp->kv;
    sp->nkv = 0;
#define KV(call) do { call; sp->nkv++; } while (0)
    KV(kv_str(b, "general.architecture", "cxr-classifier"));
    KV(kv_str(b, "general.name", sp->densenet ? "tiny-densenet" : "tiny-resnet"));
    KV(kv_str(b, "general.version", "test"));
    KV(kv_bool(b, "clip.has_vision_encoder", 1));
    KV(kv_bool(b, "clip.has_text_encoder", mu->text));
    KV(kv_u32(b, "clip.projection_dim", K));
    KV(kv_str(b, "clip.vision.architecture", sp->densenet ? "densenet" : "resnet"));
    KV(kv_u32(b, "clip.vision.image_size", S));
    KV(kv_u32(b, "clip.vision.in_channels", (uint32_t)sp->cin));
    if (sp->densenet) {
        const uint32_t blocks[4] = {1, 2, 1, 2};
        KV(kv_u32s(b, "clip.vision.densenet.blocks", blocks, 4));
        KV(kv_u32(b, "clip.vision.densenet.growth", 4));
        KV(kv_u32(b, "clip.vision.densenet.init_features", 8));
        KV(kv_u32(b, "clip.vision.densenet.bn_size", 2));
    } else {
        const uint32_t blocks[4] = {1, 2, 1, 1};
        KV(kv_u32s(b, "clip.vision.resnet.blocks", blocks, 4));
        KV(kv_u32(b, "clip.vision.resnet.width", 4));
    }
    const char *labels[] = {"Effusion", "Atelectasis", "Cardiomegaly", "Extra"};
    KV(kv_strs(b, "cxr.classifier.labels", labels, mu->labels ? mu->labels : K));
    KV(kv_u32(b, "cxr.preproc.size", S));
    KV(kv_u32(b, "cxr.preproc.channels", (uint32_t)sp->cin));
    const char *names[NF] = {"pleural_effusion", "cardiomegaly"}, *disp[NF] = {"pleural effusion", "cardiomegaly"},
               *sn[NF] = {"60046008", ""};
    KV(kv_strs(b, "cxr.findings.names", names, NF));
    KV(kv_strs(b, "cxr.findings.display", disp, NF));
    KV(kv_strs(b, "cxr.findings.snomed", sn, NF));
    const float a[NF] = {1, 0.5f}, cb[NF] = {0, -0.25f}, cal[NF] = {0, 1}, thr[NF] = {0.5f, 0.5f},
                op[NF] = {0.3f, NAN};
    KV(kv_f32s(b, "cxr.findings.calib_a", a, NF));
    KV(kv_f32s(b, "cxr.findings.calib_b", cb, NF));
    KV(kv_f32s(b, "cxr.findings.calibrated", cal, NF));
    KV(kv_f32s(b, "cxr.findings.threshold", thr, NF));
    KV(kv_f32s(b, "cxr.findings.op_thresh", op, NF));
    const uint32_t outs[NF] = {0, mu->output1 ? mu->output1 : 2};
    KV(kv_u32s(b, "cxr.findings.output", outs, NF));
#undef KV
}

static void conv(tset *s, const char *name, int co, int ci, int k, int bias) {
    char nm[80];
    snprintf(nm, sizeof nm, "%s.weight", name);
    add(s, nm, 4, co, ci, k, k, 1.6 / sqrt((double)ci * k * k), 0);
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", name);
        add(s, nm, 1, co, 0, 0, 0, 0.1, 0);
    }
}
static void affine(tset *s, const char *name, int c) {
    char nm[80];
    snprintf(nm, sizeof nm, "%s.scale", name);
    add(s, nm, 1, c, 0, 0, 0, 0.3, 1.0);
    snprintf(nm, sizeof nm, "%s.shift", name);
    add(s, nm, 1, c, 0, 0, 0, 0.2, 0.05);
}

static int densenet_C;
static void tensors(tset *s, int densenet, int cin) {
    s->n = 0;
    if (densenet) {
        const int blocks[4] = {1, 2, 1, 2};
        conv(s, "v.conv0", 8, cin, 7, 1);
        int ch = 8;
        char nm[64];
        for (int b = 0; b < 4; b++) {
            for (int l = 0; l < blocks[b]; l++) {
                snprintf(nm, sizeof nm, "v.db%d.l%d.norm1", b + 1, l + 1);
                affine(s, nm, ch + 4 * l);
                snprintf(nm, sizeof nm, "v.db%d.l%d.conv1", b + 1, l + 1);
                conv(s, nm, 8, ch + 4 * l, 1, 1);
                snprintf(nm, sizeof nm, "v.db%d.l%d.conv2", b + 1, l + 1);
                conv(s, nm, 4, 8, 3, 0);
            }
            ch += 4 * blocks[b];
            if (b < 3) {
                snprintf(nm, sizeof nm, "v.tr%d.norm", b + 1);
                affine(s, nm, ch);
                snprintf(nm, sizeof nm, "v.tr%d.conv", b + 1);
                conv(s, nm, ch / 2, ch, 1, 0);
                ch /= 2;
            }
        }
        affine(s, "v.norm5", ch);
        densenet_C = ch;
        add(s, "c.head.weight", 2, K, ch, 0, 0, 0.5, 0);
    } else {
        const int blocks[4] = {1, 2, 1, 1};
        conv(s, "v.conv1", 4, cin, 7, 1);
        int in = 4;
        char nm[64];
        for (int st = 0; st < 4; st++) {
            int M = 4 << st;
            for (int j = 0; j < blocks[st]; j++) {
                snprintf(nm, sizeof nm, "v.layer%d.%d.conv1", st + 1, j);
                conv(s, nm, M, in, 1, 1);
                snprintf(nm, sizeof nm, "v.layer%d.%d.conv2", st + 1, j);
                conv(s, nm, M, M, 3, 1);
                snprintf(nm, sizeof nm, "v.layer%d.%d.conv3", st + 1, j);
                conv(s, nm, 4 * M, M, 1, 1);
                if (j == 0) {
                    snprintf(nm, sizeof nm, "v.layer%d.%d.downsample", st + 1, j);
                    conv(s, nm, 4 * M, in, 1, 1);
                }
                in = 4 * M;
            }
        }
        add(s, "c.head.weight", 2, K, in, 0, 0, 0.3, 0);
    }
    add(s, "c.head.bias", 1, K, 0, 0, 0, 0.5, 0);
}

static int write_model(const char *path, const tset *s, spec *sp, const mutation *mu) {
    memset(&sp->kv, 0, sizeof sp->kv);
    keys(sp, mu);
    buf b = {0};
    int nt = 0;
    for (int i = 0; i < s->n; i++) nt += !(mu->drop && !strcmp(mu->drop, s->t[i].name));
    put_u32(&b, 0x46554747u);
    put_u32(&b, 3);
    put_u64(&b, (uint64_t)nt);
    put_u64(&b, (uint64_t)sp->nkv);
    put(&b, sp->kv.p, sp->kv.n);
    uint64_t off = 0;
    int64_t sizes[MAXT];
    for (int i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (mu->drop && !strcmp(mu->drop, t->name)) continue;
        int grow = mu->reshape && !strcmp(mu->reshape, t->name);
        put_str(&b, t->name);
        put_u32(&b, (uint32_t)t->nd);
        int64_t n = 1;
        for (int d = t->nd - 1; d >= 0; d--) {
            int64_t dim = t->shape[d] + (grow && d == 0);
            put_u64(&b, (uint64_t)dim);
            n *= dim;
        }
        sizes[i] = n;
        put_u32(&b, 0);
        put_u64(&b, off);
        off += ((uint64_t)n * 4 + 31) / 32 * 32;
    }
    while (b.n % 32) put(&b, "", 1);
    for (int i = 0; i < s->n; i++) {
        const tensor *t = &s->t[i];
        if (mu->drop && !strcmp(mu->drop, t->name)) continue;
        int64_t own = 1;
        for (int d = 0; d < t->nd; d++) own *= t->shape[d];
        put(&b, t->data, (size_t)own * 4);
        for (int64_t k = own; k < sizes[i]; k++) put(&b, "\0\0\0\0", 4);
        while (b.n % 32) put(&b, "", 1);
    }
    FILE *f = fopen(path, "wb");
    int ok = f && fwrite(b.p, 1, b.n, f) == b.n;
    if (f && fclose(f)) ok = 0;
    free(b.p);
    free(sp->kv.p);
    return ok ? 0 : -1;
}

/* ------------------------------------------------- the naive float64 twin */

typedef struct { int C, H, W; double *x; } map;

static map mk(int C, int H, int W) {
    map m = {C, H, W, calloc((size_t)C * H * W, sizeof(double))};
    return m;
}
#define AT(m, c, yy, xx) (m).x[((int64_t)(c) * (m).H + (yy)) * (m).W + (xx)]

static map conv_ref(const tset *s, const char *name, map in, int co, int k, int stride, int pad, int bias) {
    char nm[80];
    snprintf(nm, sizeof nm, "%s.weight", name);
    const float *w = get(s, nm);
    const float *b = NULL;
    if (bias) {
        snprintf(nm, sizeof nm, "%s.bias", name);
        b = get(s, nm);
    }
    int Ho = (in.H + 2 * pad - k) / stride + 1, Wo = (in.W + 2 * pad - k) / stride + 1;
    map o = mk(co, Ho, Wo);
    for (int c = 0; c < co; c++)
        for (int y = 0; y < Ho; y++)
            for (int x = 0; x < Wo; x++) {
                double acc = b ? b[c] : 0;
                for (int ci = 0; ci < in.C; ci++)
                    for (int ky = 0; ky < k; ky++)
                        for (int kx = 0; kx < k; kx++) {
                            int iy = y * stride + ky - pad, ix = x * stride + kx - pad;
                            if (iy < 0 || iy >= in.H || ix < 0 || ix >= in.W) continue;
                            acc += (double)w[((c * in.C + ci) * k + ky) * k + kx] * AT(in, ci, iy, ix);
                        }
                AT(o, c, y, x) = acc;
            }
    return o;
}
static void relu_ref(map m) {
    for (int64_t i = 0; i < (int64_t)m.C * m.H * m.W; i++) m.x[i] = m.x[i] > 0 ? m.x[i] : 0;
}
static map affine_ref(const tset *s, const char *name, map in) {
    char nm[80];
    snprintf(nm, sizeof nm, "%s.scale", name);
    const float *sc = get(s, nm);
    snprintf(nm, sizeof nm, "%s.shift", name);
    const float *sh = get(s, nm);
    map o = mk(in.C, in.H, in.W);
    for (int c = 0; c < in.C; c++)
        for (int i = 0; i < in.H * in.W; i++) {
            double v = sc[c] * in.x[(int64_t)c * in.H * in.W + i] + sh[c];
            o.x[(int64_t)c * in.H * in.W + i] = v > 0 ? v : 0;
        }
    return o;
}
static map maxpool_ref(map in) {
    int Ho = (in.H - 1) / 2 + 1, Wo = (in.W - 1) / 2 + 1;
    map o = mk(in.C, Ho, Wo);
    for (int c = 0; c < in.C; c++)
        for (int y = 0; y < Ho; y++)
            for (int x = 0; x < Wo; x++) {
                double m = -INFINITY;
                for (int dy = -1; dy <= 1; dy++)
                    for (int dx = -1; dx <= 1; dx++) {
                        int iy = 2 * y + dy, ix = 2 * x + dx;
                        if (iy >= 0 && iy < in.H && ix >= 0 && ix < in.W && AT(in, c, iy, ix) > m) m = AT(in, c, iy, ix);
                    }
                AT(o, c, y, x) = m;
            }
    return o;
}
static map avgpool_ref(map in) {
    map o = mk(in.C, in.H / 2, in.W / 2);
    for (int c = 0; c < in.C; c++)
        for (int y = 0; y < o.H; y++)
            for (int x = 0; x < o.W; x++)
                AT(o, c, y, x) = (AT(in, c, 2 * y, 2 * x) + AT(in, c, 2 * y + 1, 2 * x) + AT(in, c, 2 * y, 2 * x + 1) +
                                  AT(in, c, 2 * y + 1, 2 * x + 1)) / 4;
    return o;
}
static map concat_ref(map a, map b) {
    map o = mk(a.C + b.C, a.H, a.W);
    memcpy(o.x, a.x, (size_t)a.C * a.H * a.W * sizeof(double));
    memcpy(o.x + (int64_t)a.C * a.H * a.W, b.x, (size_t)b.C * b.H * b.W * sizeof(double));
    return o;
}
#define SWAP(dst, val) do { map t_ = (val); free((dst).x); (dst) = t_; } while (0)

/* The tower's final feature map for a CHW input of `cin` channels. */
static map tower_ref(const tset *s, int densenet, const float *in, int cin) {
    map x = mk(cin, S, S);
    for (int64_t i = 0; i < (int64_t)cin * S * S; i++) x.x[i] = in[i];
    char nm[64];
    if (densenet) {
        const int blocks[4] = {1, 2, 1, 2};
        SWAP(x, conv_ref(s, "v.conv0", x, 8, 7, 2, 3, 1));
        relu_ref(x);
        SWAP(x, maxpool_ref(x));
        for (int b = 0; b < 4; b++) {
            for (int l = 0; l < blocks[b]; l++) {
                snprintf(nm, sizeof nm, "v.db%d.l%d.norm1", b + 1, l + 1);
                map t = affine_ref(s, nm, x);
                snprintf(nm, sizeof nm, "v.db%d.l%d.conv1", b + 1, l + 1);
                SWAP(t, conv_ref(s, nm, t, 8, 1, 1, 0, 1));
                relu_ref(t);
                snprintf(nm, sizeof nm, "v.db%d.l%d.conv2", b + 1, l + 1);
                SWAP(t, conv_ref(s, nm, t, 4, 3, 1, 1, 0));
                SWAP(x, concat_ref(x, t));
                free(t.x);
            }
            if (b < 3) {
                snprintf(nm, sizeof nm, "v.tr%d.norm", b + 1);
                map t = affine_ref(s, nm, x);
                snprintf(nm, sizeof nm, "v.tr%d.conv", b + 1);
                SWAP(t, conv_ref(s, nm, t, x.C / 2, 1, 1, 0, 0)); /* conv then pool, as torchvision */
                SWAP(t, avgpool_ref(t));
                SWAP(x, t);
            }
        }
        SWAP(x, affine_ref(s, "v.norm5", x));
        return x;
    }
    const int blocks[4] = {1, 2, 1, 1};
    SWAP(x, conv_ref(s, "v.conv1", x, 4, 7, 2, 3, 1));
    relu_ref(x);
    SWAP(x, maxpool_ref(x));
    for (int st = 0; st < 4; st++) {
        int M = 4 << st;
        for (int j = 0; j < blocks[st]; j++) {
            int stride = st > 0 && j == 0 ? 2 : 1;
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv1", st + 1, j);
            map u = conv_ref(s, nm, x, M, 1, 1, 0, 1);
            relu_ref(u);
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv2", st + 1, j);
            SWAP(u, conv_ref(s, nm, u, M, 3, stride, 1, 1));
            relu_ref(u);
            snprintf(nm, sizeof nm, "v.layer%d.%d.conv3", st + 1, j);
            SWAP(u, conv_ref(s, nm, u, 4 * M, 1, 1, 0, 1));
            if (j == 0) {
                snprintf(nm, sizeof nm, "v.layer%d.%d.downsample", st + 1, j);
                map d = conv_ref(s, nm, x, 4 * M, 1, stride, 0, 1);
                SWAP(x, d);
            }
            for (int64_t i = 0; i < (int64_t)u.C * u.H * u.W; i++) u.x[i] += x.x[i];
            relu_ref(u);
            SWAP(x, u);
        }
    }
    return x;
}

static void head_ref(const tset *s, map f, double *logits) {
    const float *w = get(s, "c.head.weight"), *b = get(s, "c.head.bias");
    int n = f.H * f.W;
    for (int k = 0; k < K; k++) {
        double acc = 0;
        for (int c = 0; c < f.C; c++) {
            double m = 0;
            for (int i = 0; i < n; i++) m += f.x[(int64_t)c * n + i];
            acc += w[k * f.C + c] * m / n;
        }
        logits[k] = acc + b[k];
    }
}

/* ------------------------------------------------------------------ tests */

static double max_rel(const float *a, const double *b, int n) {
    double scale = 1e-3, d = 0;
    for (int i = 0; i < n; i++) scale = fmax(scale, fabs(b[i]));
    for (int i = 0; i < n; i++) d = fmax(d, fabs(a[i] - b[i]));
    return d / scale;
}

static void test_tower(int densenet, int cin) {
    const char *what = densenet ? "densenet" : "resnet";
    char path[] = "/tmp/cxr_test_cls_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    close(fd);
    tset s;
    tensors(&s, densenet, cin);
    spec sp = {densenet, cin, 0, {0}};
    mutation none = {0};
    CHECK(write_model(path, &s, &sp, &none) == 0, "write %s", what);
    cxr_model_params p = cxr_model_params_default();
    p.max_batch = 2;
    p.threads = 2;
    cxr_model *m = NULL;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_OK, "%s %d ch: open: %s", what, cin, err);
    if (rc != CXR_OK) return;
    const cxr_model_info *in = cxr_model_get_info(m);
    CHECK(in->classifier && !in->has_text && in->embed_dim == K && !strcmp(in->vision_arch, what),
          "%s info: classifier %d arch %s dim %d", what, in->classifier, in->vision_arch, in->embed_dim);
    CHECK(!strcmp(cxr_model_output_label(m, 2), "Cardiomegaly") && !cxr_model_output_label(m, K),
          "%s output labels", what);

    /* two images: a smooth gradient with noise, and its negative */
    float *x = malloc((size_t)2 * 3 * S * S * sizeof *x);
    for (int c = 0; c < 3; c++)
        for (int i = 0; i < S * S; i++) {
            float v = (float)(0.8 * sin(i * 0.013 + c) + 0.3 * frand());
            x[(int64_t)c * S * S + i] = v;
            x[(int64_t)(3 + c) * S * S + i] = -v;
        }
    double ref[2][K];
    float got[2 * K], one[K];
    map f0 = {0, 0, 0, NULL};
    for (int b = 0; b < 2; b++) {
        /* a 3-channel input to a 1-channel tower is averaged: the twin gets the average */
        float *xi = malloc((size_t)S * S * 3 * sizeof *xi);
        for (int i = 0; i < S * S; i++)
            for (int c = 0; c < 3; c++) xi[(int64_t)c * S * S + i] = x[(int64_t)(3 * b + c) * S * S + i];
        if (cin == 1)
            for (int i = 0; i < S * S; i++) xi[i] = (xi[i] + xi[S * S + i] + xi[2 * S * S + i]) / 3.0f;
        map f = tower_ref(&s, densenet, xi, cin);
        head_ref(&s, f, ref[b]);
        if (b == 0) f0 = f;
        else free(f.x);
        free(xi);
    }
    rc = cxr_model_embed_image(m, x, 2, 3, S, got);
    CHECK(rc == CXR_OK, "%s embed batch 2", what);
    double e = max_rel(got, ref[0], K), e2 = max_rel(got + K, ref[1], K);
    CHECK(e < 1e-4 && e2 < 1e-4, "%s %d ch: logits vs float64 twin: rel err %g, %g", what, cin, e, e2);
    printf("%s %d ch: logits %.4f %.4f %.4f (twin %.4f %.4f %.4f), rel err %.2g\n", what, cin, got[0], got[1], got[2],
           ref[0][0], ref[0][1], ref[0][2], fmax(e, e2));

    /* activation map of finding 0 (output 0) on image 0: mean = its logit, and
       each cell = head row · feature + bias from the twin's feature map */
    float cam[64];
    int grid = 0;
    rc = cxr_model_finding_cam(m, 0, cam, &grid);
    CHECK(rc == CXR_OK && grid == f0.H && grid == 2, "%s cam: rc %d grid %d (twin %d)", what, rc, grid, f0.H);
    if (rc == CXR_OK && grid == f0.H) {
        const float *w = get(&s, "c.head.weight"), *hb = get(&s, "c.head.bias");
        double mean = 0, worst = 0;
        for (int p2 = 0; p2 < grid * grid; p2++) {
            double v = hb[0];
            for (int c = 0; c < f0.C; c++) v += w[c] * f0.x[(int64_t)c * grid * grid + p2];
            worst = fmax(worst, fabs(v - cam[p2]));
            mean += cam[p2];
        }
        mean /= grid * grid;
        CHECK(fabs(mean - got[0]) < 1e-4 * fmax(1, fabs(got[0])), "%s cam mean %g vs logit %g", what, mean, got[0]);
        CHECK(worst < 1e-4 * fmax(1, fabs(got[0])), "%s cam cells vs twin: %g", what, worst);
    }
    free(f0.x);

    /* scores: op_thresh normalisation and Platt */
    float z, pr;
    CHECK(cxr_model_score_finding(m, 0, got, &z, &pr) == CXR_OK && z == got[0], "%s score reads output 0", what);
    double sg = 1 / (1 + exp(-(double)z)), want = sg < 0.3 ? sg / 0.6 : 1 - (1 - sg) / 1.4;
    CHECK(fabs(pr - want) < 1e-6, "%s op_thresh: p %g want %g", what, pr, want);
    float at[K] = {(float)log(0.3 / 0.7), 0, 0};
    cxr_model_score_finding(m, 0, at, &z, &pr);
    CHECK(fabs(pr - 0.5) < 1e-6, "%s op_thresh: s = t lands on 0.5 (%g)", what, pr);
    cxr_model_score_finding(m, 1, got, &z, &pr);
    CHECK(z == got[2] && fabs(pr - 1 / (1 + exp(-(0.5 * z - 0.25)))) < 1e-6, "%s Platt on output 2", what);
    const float *pp, *pn;
    CHECK(cxr_model_finding_prompts(m, 0, &pp, &pn) == CXR_ERR_ARG, "%s: no prompts in a classifier", what);

    /* one image alone, 1 thread, and the portable loops give the same logits */
    cxr_model_close(m);
    p.threads = 1;
    p.max_batch = 1;
    gemm_set_portable(1);
    rc = cxr_model_open(path, &p, &m, err, sizeof err);
    CHECK(rc == CXR_OK, "%s portable open: %s", what, err);
    if (rc == CXR_OK) {
        rc = cxr_model_embed_image(m, x + 3 * S * S, 1, 3, S, one);
        CHECK(rc == CXR_OK && max_rel(one, ref[1], K) < 1e-4, "%s portable, 1 thread, image 1 alone: %g", what,
              max_rel(one, ref[1], K));
        CHECK(cxr_model_embed_image(m, x, 2, 3, S, got) == CXR_ERR_ARG, "%s batch above max_batch refused", what);
        CHECK(cxr_model_embed_image(m, x, 1, 3, 16, got) == CXR_ERR_ARG, "%s input of 16 px refused", what);
        cxr_model_close(m);
    }
    gemm_set_portable(0);
    free(x);
    for (int i = 0; i < s.n; i++) free(s.t[i].data);
    unlink(path);
}

static void expect_error(int densenet, const mutation *mu, int code, const char *needle, const char *what) {
    char path[] = "/tmp/cxr_test_cls_XXXXXX";
    int fd = mkstemp(path);
    if (fd < 0) return;
    close(fd);
    tset s;
    tensors(&s, densenet, 1);
    spec sp = {densenet, 1, 0, {0}};
    write_model(path, &s, &sp, mu);
    cxr_model *m = NULL;
    char err[CXR_ERRMSG_MAX] = "";
    int rc = cxr_model_open(path, NULL, &m, err, sizeof err);
    CHECK(rc == code && strstr(err, needle), "%s: rc %d (want %d), err '%s' (want '%s')", what, rc, code, err, needle);
    cxr_model_close(m);
    for (int i = 0; i < s.n; i++) free(s.t[i].data);
    unlink(path);
}

int main(void) {
    test_tower(1, 1);
    test_tower(1, 3);
    test_tower(0, 1);
    test_tower(0, 3);
    mutation mu = {0};
    mu.drop = "v.db2.l2.conv2.weight";
    expect_error(1, &mu, CXR_ERR_MISSING, "v.db2.l2.conv2.weight", "missing dense-layer weight");
    mu = (mutation){0};
    mu.reshape = "v.layer2.0.downsample.weight";
    expect_error(0, &mu, CXR_ERR_SHAPE, "v.layer2.0.downsample.weight", "misshapen downsample");
    mu = (mutation){0};
    mu.reshape = "v.tr1.norm.scale";
    expect_error(1, &mu, CXR_ERR_SHAPE, "v.tr1.norm.scale", "misshapen transition norm");
    mu = (mutation){0};
    mu.drop = "c.head.bias";
    expect_error(0, &mu, CXR_ERR_MISSING, "c.head.bias", "missing head bias");
    mu = (mutation){0};
    mu.labels = 4;
    expect_error(1, &mu, CXR_ERR_FORMAT, "cxr.classifier.labels", "labels count");
    mu = (mutation){0};
    mu.output1 = 7;
    expect_error(1, &mu, CXR_ERR_FORMAT, "output 7", "finding output out of range");
    mu = (mutation){0};
    mu.text = 1;
    expect_error(1, &mu, CXR_ERR_FORMAT, "no text tower", "classifier with a text tower flag");
    return CHECK_SUMMARY();
}
