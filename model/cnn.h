/*
 * cnn.h — the residual CNN image tower (internal to model/; layout in
 * model/FORMAT.md, "Convolutional image tower"). Activations are
 * channels-last (HWC); every convolution is 3×3, padding 1: on the packed
 * AVX2 GEMM through conv.h where the CPU has it (bias, ReLU and the residual
 * add in the GEMM's epilogue, chunks on the pool's threads), else lowered to
 * one OpenBLAS GEMM through an im2col buffer.
 */
#ifndef CXR_CNN_H
#define CXR_CNN_H

#include <stddef.h>
#include <stdint.h>

#include "conv.h"
#include "gguf.h"

#define CNN_MAX_STAGES 8
#define CNN_MAX_BLOCKS 8

typedef struct {
    const float *w1, *b1, *w2, *b2;
} cnn_block;

typedef struct {
    int S, cin, n;                    /* input size and channels, stages */
    int widths[CNN_MAX_STAGES + 1];   /* stem, then each stage */
    int blocks[CNN_MAX_STAGES];
    float eps;
    const float *stem_w, *stem_b;
    const float *down_w[CNN_MAX_STAGES], *down_b[CNN_MAX_STAGES];
    cnn_block blk[CNN_MAX_STAGES][CNN_MAX_BLOCKS];
    const float *ln_w, *ln_b, *proj_w;
    /* packed for conv.h (packed = 1 when the AVX2 GEMM runs here) */
    int packed;
    cv_conv stem_cv, down_cv[CNN_MAX_STAGES], blk_cv[CNN_MAX_STAGES][CNN_MAX_BLOCKS][2];
    conv_ws ws;
} cnn_w;

/* Tensor lookup with NumPy-shape check, provided by the loader (model.c). */
typedef const float *(*cnn_get_fn)(void *ctx, const char *name, int n, int64_t d0, int64_t d1, int64_t d2,
                                   int64_t d3);

/* Read keys and tensors. Returns 0, or a CXR_ERR_* code with err set (the
 * lookup callback reports missing tensors and wrong shapes itself and
 * returns NULL; cnn_load then returns CXR_ERR_MISSING unless err is set). */
int cnn_load(cnn_w *c, const gguf_file *g, int E, cnn_get_fn get, void *ctx, char *err, size_t errlen);

void cnn_free(cnn_w *c);

/* Side of the final feature map for an input of size px (0 if invalid). */
int cnn_grid(const cnn_w *c, int size);

/* Floats of scratch cnn_forward needs for one image of the given size. */
int64_t cnn_scratch_len(const cnn_w *c, int size);

/* One image: in is cin × size × size (CHW; a 3-channel input to a 1-channel
 * tower is averaged, a 1-channel input to a 3-channel tower repeated);
 * fmap receives grid² × Cn (HWC) final features; pooled receives their mean. */
int cnn_forward(cnn_w *c, const float *in, int in_channels, int size, float *scratch, float *fmap,
                float *pooled);

#endif
