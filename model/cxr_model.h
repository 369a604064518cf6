/*
 * cxr_model.h — the CLIP-style multimodal engine: image tower (ViT or a
 * residual CNN), text tower (CLIP causal transformer or BERT), tokenizer,
 * zero-shot scoring and image-domain checks, all from one GGUF file (layout:
 * model/FORMAT.md). Plain C11: its own AVX2 GEMM where the CPU has it,
 * OpenBLAS otherwise; knows nothing of DICOM.
 *
 *   cxr_model_params p = cxr_model_params_default();
 *   cxr_model *m = NULL;
 *   char err[CXR_ERRMSG_MAX];
 *   if (cxr_model_open("model.gguf", &p, &m, err, sizeof err) != CXR_OK) die(err);
 *   const cxr_model_info *info = cxr_model_get_info(m);
 *   float *img = malloc(info->embed_dim * sizeof *img), *pos = …, *neg = …;
 *   cxr_model_embed_image(m, tensor, 1, info->pp_channels, info->pp_size, img);   // CHW tensor
 *   cxr_model_embed_text(m, "pleural effusion", pos);
 *   cxr_model_embed_text(m, "no pleural effusion", neg);
 *   float p_yes = cxr_zeroshot_prob(info->logit_scale, img, pos, neg, info->embed_dim);
 *   cxr_model_close(m);
 *
 * Ownership: the model owns its mapping, weights converted from F16 and
 * activation buffers (sized at open for params.max_batch images). Thread
 * safety: one model handle serves one thread at a time; open one handle per
 * thread (the mapping is shared by the OS page cache).
 */
#ifndef CXR_MODEL_H
#define CXR_MODEL_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef struct cxr_model cxr_model;

typedef struct {
    int threads;    /* compute threads; 0 = the online cores (default);
                       info.threads says which */
    int max_batch;  /* images per embed_image call (default 8) */
} cxr_model_params;

cxr_model_params cxr_model_params_default(void);

/* Open (mmap + checks: every tensor found by name and its shape checked;
 * the file is opened and read once, its SHA-256 taken from the mapping).
 * Errors: CXR_ERR_IO, CXR_ERR_FORMAT, CXR_ERR_TRUNCATED, CXR_ERR_MISSING,
 * CXR_ERR_SHAPE, CXR_ERR_NOMEM; err names the tensor, key or offset. */
int cxr_model_open(const char *path, const cxr_model_params *p, cxr_model **out, char *err, size_t errlen);
void cxr_model_close(cxr_model *m); /* NULL is a no-op */

/* SHA-256 of the model file as opened, 64 lowercase hex digits (lives as
 * long as the model; "" for NULL). */
const char *cxr_model_sha256(const cxr_model *m);

#define CXR_MODEL_STR 256

typedef struct {
    char name[CXR_MODEL_STR], version[64], license[CXR_MODEL_STR], description[CXR_MODEL_STR];
    char source[CXR_MODEL_STR], training_data[CXR_MODEL_STR];
    int has_vision, has_text;
    int embed_dim;
    float logit_scale;               /* exp of the stored log scale */
    /* image tower */
    char vision_arch[16];            /* "vit", "cnn", or for classifiers "densenet" / "resnet" */
    int classifier;                  /* 1: a supervised classifier (embed_dim = outputs, no text tower) */
    int image_size, patch_size, vision_width, vision_layers, vision_heads, vision_ff; /* cnn: patch = pixels per evidence cell, layers = stages */
    char vision_act[16];
    float vision_eps;
    /* text tower */
    char text_arch[16];              /* "clip" or "bert" */
    int text_ctx, text_vocab, text_width, text_layers, text_heads, text_ff;
    char text_act[16], text_proj[16];
    float text_eps;
    char tokenizer[16];              /* "clip-bpe" or "wordpiece" */
    int n_merges;
    /* preprocessing the image tower expects */
    int pp_size, pp_channels;
    char pp_policy[16], pp_interp[16];
    float pp_scale, pp_mean[3], pp_std[3];
    /* assessability limits the file sets (FORMAT.md cxr.assess.*): -1 / NaN when it sets none */
    int assess_min_positives, assess_open_vocab_validated;
    float assess_min_auc_lo, assess_full_auc_lo;
    /* file */
    uint64_t n_params;
    int n_f16;                       /* tensors stored as F16 */
    double open_ms;
    int threads;                     /* compute threads in use (params.threads, or the engine's choice for 0) */
} cxr_model_info;

const cxr_model_info *cxr_model_get_info(const cxr_model *m);

/* Image embeddings, L2-normalised: in is batch × channels × size × size
 * (channels 1 or 3; one channel is repeated), out is batch × embed_dim.
 * size may differ from image_size (multiple of patch_size): positions are
 * interpolated bicubically. batch ≤ max_batch. For a classifier model
 * (info.classifier) out is the embed_dim raw output logits per image, not
 * normalised. */
int cxr_model_embed_image(cxr_model *m, const float *in, int batch, int channels, int size, float *out);

/* Text embedding (L2-normalised) of one string, or of token ids with the
 * special tokens included (as cxr_model_tokenize returns them). */
int cxr_model_embed_text(cxr_model *m, const char *text, float *out);
int cxr_model_embed_tokens(cxr_model *m, const int32_t *ids, int n, float *out);

/* Token ids with specials, truncated to the context; *n = count. ids must
 * hold text_ctx entries. */
int cxr_model_tokenize(cxr_model *m, const char *text, int32_t *ids, int *n);

/* Patch-level evidence for the LAST image embedded (batch index 0): cosine
 * similarity of each patch's projected token to text_emb, grid×grid values
 * in row-major image order. out holds (size/patch)² floats; *grid is set. */
int cxr_model_patch_similarity(const cxr_model *m, const float *text_emb, float *out, int *grid);

/* ------------------------------------------------- the finding vocabulary */

/* A finding the model file carries (model/FORMAT.md, "Findings…"), with its
 * precomputed prompt-ensemble embeddings, calibration and validation. */
typedef struct {
    char name[64], display[96], snomed[24];
    float calib_a, calib_b;          /* p = sigmoid(a·z + b) */
    int calibrated;                  /* 0: a = 1, b = 0 and answers must say so */
    float threshold, uncertain_low, uncertain_high;
    float val_auc, val_auc_lo, val_auc_hi; /* NaN when not measurable */
    int val_pos, val_neg;
    int output;                      /* classifier: the output it reads (else -1) */
    float op_thresh;                 /* classifier: torchxrayvision operating threshold, NaN for none */
} cxr_finding;

/* Number of findings (0 when the file has none) and finding i (NULL if out
 * of range). The structs live as long as the model. */
int cxr_model_n_findings(const cxr_model *m);
const cxr_finding *cxr_model_finding(const cxr_model *m, int i);
int cxr_model_find_finding(const cxr_model *m, const char *name); /* index or -1 */
const char *cxr_model_prompt_set_version(const cxr_model *m);     /* "" when absent */

/* Score finding i for an L2-normalised image embedding: z = logit_scale ·
 * (<img,pos_i> − <img,neg_i>), *p = calibrated probability. Classifier:
 * img holds the logits, z is the finding's output logit and p its
 * probability (Platt, or torchxrayvision's operating-point normalisation
 * when the finding has op_thresh; FORMAT.md). */
int cxr_model_score_finding(const cxr_model *m, int i, const float *img, float *z, float *p);

/* Classifier models: the class activation map of finding i for image 0 of
 * the last embed call at the model's own size: at each location of the
 * final feature map, head row · feature + bias (their mean is the logit);
 * grid² values in row-major image order, *grid set. CXR_ERR_ARG for other
 * models or when no such image was embedded. */
int cxr_model_finding_cam(const cxr_model *m, int i, float *out, int *grid);
/* Classifier models: output k's label as the checkpoint names it (NULL out
 * of range or for other models; lives as long as the model). */
const char *cxr_model_output_label(const cxr_model *m, int k);

/* The finding's prompt-ensemble embeddings (L2-normalised, embed_dim each;
 * they live as long as the model): for its evidence map, patch similarity to
 * pos − neg. Returns CXR_ERR_ARG out of range and for classifier models. */
int cxr_model_finding_prompts(const cxr_model *m, int i, const float **pos, const float **neg);
/* ------------------------------------------------- image-domain checks */

/* The image-domain checks for one image (FORMAT.md), NaN where the file has
 * no such check:
 *   score, score_threshold          max cosine of the embedding to the domain
 *                                   prototypes; out of domain below the threshold
 *   distance, distance_warn/_refuse density check (CNN towers with d.feat_*):
 *                                   squared Mahalanobis distance of the pooled
 *                                   features to the training images', its limits
 *   layout_distance, layout_warn/_refuse  layout check (cxr.domain.layout_grid):
 *                                   the same for the input's coarse layout (G×G
 *                                   block means of its content box); the distance
 *                                   is NaN when the tensor is not at the model's
 *                                   own size or is all padding
 * The rule that combines them into warn / refuse is the caller's (FORMAT.md). */
typedef struct {
    float score, score_threshold;
    float distance, distance_warn, distance_refuse;
    float layout_distance, layout_warn, layout_refuse;
} cxr_domain_check;

/* The checks of the image whose CHW tensor in (channels × size × size, as
 * given to cxr_model_embed_image) and L2-normalised embedding img are given:
 * img must be image 0 of the latest cxr_model_embed_image call on this
 * handle when the file has the density check (its pooled features are kept
 * from that call), else CXR_ERR_ARG with distance NaN (the other fields are
 * still filled). *out is always written (NaNs on CXR_ERR_ARG). */
int cxr_model_domain_check(const cxr_model *m, const float *in, int channels, int size, const float *img,
                           cxr_domain_check *out);

/* ----------------------------------------------------- zero-shot scoring */

/* p(positive) = softmax over scale·<img,pos> and scale·<img,neg>. */
float cxr_zeroshot_prob(float logit_scale, const float *img, const float *pos, const float *neg, int dim);

/* Prompt ensemble: mean of n L2-normalised embeddings, re-normalised. */
void cxr_prompt_ensemble(const float *embs, int n, int dim, float *out);

#ifdef __cplusplus
}
#endif
#endif
