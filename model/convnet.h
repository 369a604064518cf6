/*
 * convnet.h — the classifier image towers (internal to model/; layout in
 * model/FORMAT.md, "Classifier models"): torchvision's DenseNet-121 and
 * ResNet-50 families with BatchNorm folded at conversion, on the engine's
 * convolutions of conv.h (the packed GEMM). Images go through the tower
 * one at a time (their activations stay in cache), then global average
 * pooling and the linear head.
 */
#ifndef CXR_CONVNET_H
#define CXR_CONVNET_H

#include <stddef.h>
#include <stdint.h>

#include "conv.h"
#include "gguf.h"

enum { CV_DENSENET = 1, CV_RESNET = 2 };
#define CV_STAGES 4

typedef struct {
    int arch, S, cin, K;
    int blocks[CV_STAGES];
    int growth, bn_size, init;         /* DenseNet */
    int width;                         /* ResNet */
    int C;                             /* channels of the final feature map */
    cv_conv stem;
    /* DenseNet: per layer (all blocks, in order) */
    cv_affine *norm1;
    cv_conv *conv1, *conv2;
    cv_affine tr_norm[CV_STAGES - 1], norm5;
    cv_conv tr_conv[CV_STAGES - 1];
    /* ResNet: per block (all stages, in order); down[i].pk.panels NULL when absent */
    cv_conv *c1, *c2, *c3, *down;
    const float *head_w, *head_b;      /* K × C, K */
    /* activations, sized for cap_batch images of cap_size */
    float *act[4];
    int64_t act_len;
    conv_ws ws;                        /* gather buffers */
    int cap_batch, cap_size;
} convnet;

/* Tensor lookup with NumPy-shape check, provided by the loader (model.c):
 * NULL and an error when missing or misshapen (optional: NULL, no error). */
typedef const float *(*cv_get_fn)(void *ctx, const char *name, int optional, int n, int64_t d0, int64_t d1,
                                  int64_t d2, int64_t d3);

/* Keys and tensors (arch names "densenet" / "resnet"); every convolution
 * is permuted and packed here. Returns 0 or a CXR_ERR_* code, err set. */
int convnet_load(convnet *c, const gguf_file *g, const char *arch, int K, cv_get_fn get, void *ctx, char *err,
                 size_t errlen);
void convnet_free(convnet *c);

/* Side of the final feature map for an input of side size (0 if too small). */
int convnet_grid(const convnet *c, int size);

/* batch images (CHW, in_channels 1 or 3; a 3-channel input to a 1-channel
 * tower is averaged, a 1-channel input to a 3-channel tower repeated) into
 * logits (batch × K raw outputs). fmap0 (optional, grid² × C) receives
 * image 0's final feature map. Buffers grow as needed. */
int convnet_forward(convnet *c, const float *in, int batch, int in_channels, int size, float *logits,
                    float *fmap0);

#endif
