/*
 * model_internal.h — what the files of the engine share and nothing outside
 * model/ may see: the cxr_model struct, the tower weights, the loader's
 * tensor lookup, and the cross-file functions. Who owns what:
 *   model.c    open / close, info, the loader (tensor lookup with shape
 *              checks), packing, activation buffers, the file's SHA-256
 *   block.c    the transformer block both towers use: weights, packing, forward
 *   image.c    cxr_model_embed_image (ViT or CNN), the CNN tower's glue, patch evidence
 *   vit.c      the ViT image tower
 *   text.c     the text tower and its tokenizer
 *   domain.c   the image-domain checks (prototypes, density, layout)
 *   zeroshot.c zero-shot scoring and the finding vocabulary's API
 * Kernels (kernels.c, gemm.c, pool.c, f16.c), the CNN forward (cnn.c), the
 * GGUF reader (gguf.c), findings (findings.c) and the tokenizers
 * (tokenizer.c) know nothing of this struct.
 */
#ifndef CXR_MODEL_INTERNAL_H
#define CXR_MODEL_INTERNAL_H

#include "cnn.h"
#include "convnet.h"
#include "cxr_model.h"
#include "findings.h"
#include "gemm.h"
#include "gguf.h"
#include "tokenizer.h"

#include <stddef.h>
#include <stdint.h>

/* ------------------------------------------------------------- weights */

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
    cxr_model_params params;   /* threads resolved at open (never 0) */
    char sha256[65];           /* of the file, lowercase hex */
    vit_w vit;
    int is_cnn;          /* image tower is the residual CNN */
    int is_classifier;   /* general.architecture "cxr-classifier": DenseNet / ResNet + head */
    convnet cv;          /* its tower */
    float *cv_fmap;      /* image 0's final feature map of the last embed call (grid² × C) */
    char **cv_labels, *cv_label_blob; /* cxr.classifier.labels (K) */
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
    float dom_last;      /* squared Mahalanobis distance of image 0 of the last embed call (NaN: none) */
    float *dom_emb;      /* E: that image's embedding, which cxr_model_domain_check must be given */
    float *dom_diff;     /* C scratch */
    /* image-domain layout check (optional): the input's G×G block means */
    const float *lay_mean, *lay_prec; /* G², G²×G² */
    int lay_grid;
    float lay_warn, lay_refuse;
};

/* -------------------------------------------------------------- loading */

typedef struct {
    cxr_model *m;
    char *err;
    size_t errlen;
    int rc;     /* first error; every helper does nothing once it is set */
    int pack;   /* the AVX2 kernels run here: Linear weights are packed */
} loader;

/* Tensor name with NumPy shape (d0, d1, …) (n dims); NULL + error if missing
 * or misshapen. optional: NULL without error when absent. */
const gguf_tensor *load_find(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                             int64_t d3);
/* The same as F32 values: in the mapping, or converted from F16 (owned by the
 * model). */
const float *load_f32(loader *ld, const char *name, int optional, int n, int64_t d0, int64_t d1, int64_t d2,
                      int64_t d3);
#define T1(name, opt, a) load_f32(ld, name, opt, 1, a, 0, 0, 0)
#define T2(name, opt, a, b) load_f32(ld, name, opt, 2, a, b, 0, 0)
/* A Linear weight (n, k): packed later straight from the mapping (F16
 * included) when ld->pack, otherwise read as load_f32 does. */
void load_lin(loader *ld, lin_w *l, const char *name, int64_t n, int64_t k);
/* u32 key in lo..hi; dflt when absent and not required. */
uint32_t load_u32(loader *ld, const char *key, uint32_t dflt, int required, uint32_t lo, uint32_t hi);
/* Activation key ("quick_gelu" by default, or "gelu"): ACT_*. */
int load_act(loader *ld, const char *key);

/* Drop this process's pages of [p, p + n) of the file mapping (a packed copy
 * replaces them); anything outside the mapping is left alone. */
void model_release(cxr_model *m, const void *p, size_t n);
/* (Re)size the activation buffers for `tokens` rows, sequences of up to `seq`
 * tokens. Called at open; later only when a larger input arrives. */
int model_ensure_buffers(cxr_model *m, int64_t tokens, int64_t seq);

/* ----------------------------------------------------- transformer block */

void block_load(loader *ld, block_w *b, const char *pfx, int i, int D, int FF);
int lin_pack(lin_w *l, int n, int k);
void lin_release(cxr_model *m, const lin_w *l, int n, int k);
/* Pack a block (Q, K, V fused), then drop its weights' pages of the mapping. */
int block_pack(cxr_model *m, block_w *b, int D, int FF);
void block_free(block_w *b);
/* One transformer block over nseq sequences of t tokens in x (the model's
 * activation buffers as scratch): pre-LN (CLIP, ViT) or post-LN (BERT). */
void block_forward(cxr_model *m, const block_w *b, float *x, int nseq, int t, int D, int heads, int FF, float eps,
                   int act, int causal, int post_ln);

/* ------------------------------------------------------------- towers */

void image_load(loader *ld, int E);  /* clip.vision.architecture: vit_load, the CNN or a classifier tower */
void vit_load(loader *ld, int E);
/* ViT: the batch's embeddings into out, patch evidence of image 0 kept. */
int vit_embed(cxr_model *m, const float *in, int batch, int channels, int size, float *out);
void text_load(loader *ld, int E);
void text_load_tokenizer(loader *ld);

/* ------------------------------------------------- image-domain checks */

/* The optional density and layout blocks (CNN towers; FORMAT.md); C is the
 * pooled feature width. */
void domain_load(loader *ld, int C);
/* After image 0 of an embed call: keep its density distance (pooled: its C
 * pooled features) and its embedding. */
void domain_note_image(cxr_model *m, const float *pooled, const float *emb);

#endif
