/*
 * conv.h — convolutions on the engine's packed GEMM (internal to model/),
 * shared by the CNN image tower (cnn.c) and the classifier towers
 * (convnet.c). Activations are channels-last rows (b, y, x) × C. A
 * convolution gathers its input rows into a per-thread buffer (im2col for
 * k > 1, a strided subsample for a 1×1 stride-2 shortcut, DenseNet's
 * pre-activation affine + ReLU, a transition's 2×2 average of it), chunk by
 * chunk of CONV_CHUNK output rows, then runs one gemm_forward_1t per chunk
 * with the bias and ReLU (or a residual add and ReLU) in its epilogue; the
 * chunks are shared out on the pool (pool.h). No allocation on the hot path
 * beyond the workspace's first use.
 */
#ifndef CXR_CONV_H
#define CXR_CONV_H

#include <stdint.h>

#include "gemm.h"

#define CONV_CHUNK 96 /* output rows per GEMM call: a multiple of GEMM_MR */

typedef struct {
    gemm_w pk;      /* co × (k·k·ci) in (ky, kx, ci) order, packed */
    const float *b; /* bias (co) or NULL; borrowed */
    int co, ci, k, stride, pad;
} cv_conv;

typedef struct {
    const float *scale, *shift; /* y = relu(scale·x + shift) per channel; borrowed */
} cv_affine;

/* Per-worker gather buffers. */
typedef struct {
    float *col;
    int64_t col_len;  /* floats per worker */
    int workers;
} conv_ws;

enum { CONV_DIRECT, CONV_IM2COL, CONV_AFFINE, CONV_AFFINE_POOL, CONV_SUBSAMPLE }; /* gathers */
enum { CONV_PLAIN, CONV_RELU, CONV_ACCUM_RELU }; /* epilogues: out = x; relu(x); relu(out + x) */

static inline int conv_out_side(int n, int k, int stride, int pad) { return (n + 2 * pad - k) / stride + 1; }

/* Pack w, a PyTorch (co, ci, k, k) weight, and keep b (may be NULL). 0, or
 * -1 out of memory. */
int conv_pack(cv_conv *c, const float *w, const float *b, int co, int ci, int k, int stride, int pad);
void conv_free(cv_conv *c); /* zeroed is a no-op */

/* conv_pack for n convolutions, shared out on the pool's threads. 0, or -1
 * when one of them ran out of memory (the others are packed: free them all). */
typedef struct {
    cv_conv *c;
    const float *w, *b;
    int co, ci, k, stride, pad;
} conv_pack_job;
int conv_pack_all(const conv_pack_job *jobs, int n);

/* Room for gathered rows of up to row_len floats on pool_threads() workers.
 * 0 or -1 out of memory. */
int conv_ws_reserve(conv_ws *ws, int64_t row_len);
void conv_ws_free(conv_ws *ws);

/* out (row stride ldo) = epi(conv(gather(in))) for batch images of H × W
 * whose rows have stride ldi (channels [0, ci) read); CONV_AFFINE and
 * CONV_AFFINE_POOL apply aff first. *Ho, *Wo (may be NULL) get the output
 * size. CONV_ACCUM_RELU adds to what out holds (the residual). */
void conv_run(conv_ws *ws, const cv_conv *cv, int gather, const cv_affine *aff, const float *in, int ldi, int batch,
              int H, int W, float *out, int ldo, int epi, int *Ho, int *Wo);

/* 3×3 stride-2 pad-1 max pool of C channels, rows into out (stride ldo);
 * returns the output side for square inputs via *Ho. */
void conv_maxpool3s2(const float *in, int batch, int H, int W, int C, float *out, int ldo, int *Ho, int *Wo);

/* dst[0, n) = relu(scale·src + shift). */
void conv_affine_relu(float *dst, const float *src, const cv_affine *a, int n);

#endif
