/*
 * gemm.h — the engine's own single-precision GEMM for x86-64 AVX2 + FMA +
 * F16C, with a 16-wide tile where the CPU has AVX-512F (internal to model/): C[m,n] = act(A[m,k] · Wᵀ + b) with W packed
 * once, at model open, into panels of GEMM_NR columns (k-major, zero padded),
 * as F32 or as IEEE halves converted in the kernel. Callers check
 * gemm_available() and fall back to OpenBLAS when it is 0 (other CPUs;
 * gemm_forward still works there, as a slow portable loop, for tests).
 *
 *   gemm_w w;
 *   if (gemm_pack_init(&w, n, k, 0) == 0) {           // F32 panels
 *       gemm_pack_rows(&w, 0, weight, GEMM_SRC_F32, n); // rows of an (n, k) Linear weight
 *       gemm_forward(out, n, in, k, &w, bias, m, GEMM_ACT_NONE, 0);
 *       gemm_free(&w);
 *   }
 *
 * Threads: gemm_forward gives each of the pool's threads (pool.h) a
 * contiguous range of column panels, the first to finish taking what is left
 * of the others'; gemm_forward_1t runs on the calling thread only, for use
 * inside a parallel item (attention). No allocation on the hot path. gemm.c
 * uses pool.c and f16.c only: kernels.c builds on it, never the reverse.
 */
#ifndef CXR_GEMM_H
#define CXR_GEMM_H

#include <math.h>
#include <stddef.h>
#include <stdint.h>

enum { GEMM_NR = 16, GEMM_MR = 6 };
/* The activations of the towers, applied in the GEMM epilogue (and by
 * kernels.h's loops): x·σ(1.702x), the erf GELU, and max(x, 0) for the
 * convolutional towers. */
enum { GEMM_ACT_NONE = -1, ACT_QUICK_GELU = 0, ACT_GELU = 1, ACT_RELU = 2 };
enum { GEMM_SRC_F32 = 0, GEMM_SRC_F16 = 1 };

/* One value through the activation act (the portable loops' epilogue). */
static inline float gemm_act1(float x, int act) {
    if (act == ACT_QUICK_GELU) return x / (1.0f + expf(-1.702f * x));
    if (act == ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    if (act == ACT_RELU) return x > 0.0f ? x : 0.0f;
    return x;
}

/* A Linear weight w[n,k] (out × in) in panel layout: panel p holds rows
 * p·16 … p·16+15 of w transposed, k rows of 16 values (zero padded past n);
 * the panels are interleaved by blocks of k (gemm.c, panel_off), so that a
 * sweep over panels block by block reads memory in order. */
typedef struct {
    int n, k;
    int f16;        /* panels hold IEEE halves */
    void *panels;   /* owned (views: borrowed), 64-byte aligned, gemm_panel_len(n, k) values */
    size_t mapped;  /* > 0: panels is an anonymous mapping of this many bytes (large weights) */
} gemm_w;

/* 1 when this CPU runs the kernels (AVX2, FMA and F16C), else 0. */
int gemm_available(void);
/* Tests and benchmarks: 0 = use the AVX2 tile even where the CPU has
 * AVX-512F (the environment variable CXR_GEMM_ISA=avx2 does the same for a
 * whole process). Results are the same bits either way. */
void gemm_set_avx512(int on);
/* "AVX-512F", "AVX2 + FMA + F16C" or "portable": the kernels that run. */
const char *gemm_isa_name(void);
/* Tests: 1 = behave as on a CPU without AVX2 (gemm_available() returns 0,
 * the portable loops run, models opened meanwhile are not packed). */
void gemm_set_portable(int on);

/* Allocate zeroed panels for an n × k weight (f16: store halves). 0, or -1
 * when out of memory or n, k are not positive. */
int gemm_pack_init(gemm_w *w, int n, int k, int f16);
/* Copy rows [row0, row0 + nrows) of w from src, an nrows × k row-major
 * matrix of F32 or F16 (GEMM_SRC_*) values. F16 → F32 converts; F32 → F16
 * rounds to nearest even. */
void gemm_pack_rows(gemm_w *w, int row0, const void *src, int src_type, int nrows);
void gemm_free(gemm_w *w); /* NULL or zeroed is a no-op */
size_t gemm_bytes(const gemm_w *w);

/* out[m, ldo] = act(in[m, ldi] · wᵀ + b[n]), or with accum
 * out[m, ldo] = act(out + in · wᵀ + b): a residual sum and its activation
 * (a ResNet block's ReLU) in one pass. b may be NULL; act is GEMM_ACT_NONE,
 * ACT_QUICK_GELU, ACT_GELU or ACT_RELU. out must not overlap in. */
void gemm_forward(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                  int accum);

/* The same on the calling thread only. */
void gemm_forward_1t(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                     int accum);

/* Per-call packing for activations used as the right operand (attention):
 * the panels go to buf, which holds gemm_panel_len(n, k) floats (64-byte
 * aligned). NT: src is n × k (row stride ld), as a Linear weight. NN: src
 * is k × n (row stride ld). The returned view borrows buf. */
int64_t gemm_panel_len(int n, int k);
gemm_w gemm_view_nt(float *buf, const float *src, int ld, int n, int k);
gemm_w gemm_view_nn(float *buf, const float *src, int ld, int k, int n);

/* Row helpers for the other kernels, AVX2 when available:
 * x[0, n) = softmax(scale · x)   (a row of attention scores) */
void gemm_softmax_row(float *x, int n, float scale);
/* y[d] = (x - mean) / sqrt(var + eps) · w + b, float sums (y == x allowed) */
void gemm_layernorm_row(float *y, const float *x, const float *w, const float *b, int d, float eps);

#endif
