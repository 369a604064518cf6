/*
 * kernels.h — the transformer's building blocks (internal to model/):
 * `<layer>_forward(out, in, weights…, dims…)`, outputs first, dims last,
 * every shape in the first comment line. Row-major; a "token" is one row.
 * The activations (ACT_*, GEMM_ACT_NONE) are gemm.h's.
 */
#ifndef CXR_KERNELS_H
#define CXR_KERNELS_H

#include <stdint.h>

#include "gemm.h"

/* out[n,o] = in[n,i] · w[o,i]ᵀ + b[o]   (b may be NULL; OpenBLAS sgemm) */
void linear_forward(float *out, const float *in, const float *w, const float *b, int n, int i, int o);

/* out[n, ldo] = (accum ? out : 0) + act(in[n, ldi] · w[o,i]ᵀ + b[o])
 * With pk packed (pk && pk->panels) the AVX2 kernel of gemm.c runs and w
 * may be NULL; otherwise OpenBLAS on w. b may be NULL; act is
 * GEMM_ACT_NONE or ACT_*; act and accum are not combined; out ∩ in = ∅. */
void dense_forward(float *out, int ldo, const float *in, int ldi, const float *w, const gemm_w *pk, const float *b,
                   int n, int i, int o, int act, int accum);

/* out[n,d] = (in - mean) / sqrt(var + eps) · w + b   (in place allowed;
 * AVX2 rows when gemm_available(), else double-precision sums) */
void layernorm_forward(float *out, const float *in, const float *w, const float *b, int n, int d, float eps);

/* x[n] = act(x) in place */
void act_forward(float *x, int64_t n, int act);

/* out[t,d] = multi-head attention of q,k,v[t, ld] (head h in columns
 * h·dh…), scale 1/sqrt(dh), optional causal mask. scratch: t·t floats per
 * thread (see attention_scratch_len). */
void attention_forward(float *out, int ldo, const float *q, const float *k, const float *v, int ld, int t,
                       int heads, int dh, int causal, float *scratch);
int64_t attention_scratch_len(int t, int heads);

/* The same attention through the GEMM kernels (scores = Q·Kᵀ and P·V per
 * head, with K and V packed per call; vectorised softmax), parallel over
 * heads; the plain loops above when !gemm_available(). scratch holds
 * mha_scratch_len(t, heads, dh, threads) floats, threads ≥ the count given
 * to kernels_set_threads; 64-byte aligned. */
void mha_forward(float *out, int ldo, const float *q, const float *k, const float *v, int ld, int t, int heads,
                 int dh, int causal, float *scratch);
int64_t mha_scratch_len(int t, int heads, int dh, int threads);

/* x[n] += y[n] */
void add_forward(float *x, const float *y, int64_t n);

/* x[n] = max(x, 0) in place */
void relu_forward(float *x, int64_t n);

/* x[n] /= ‖x‖₂ in place (double sum; an all-zero x becomes zeros) */
void l2norm_forward(float *x, int n);

/* bicubic (A = -0.75, align_corners = False, border clamp) resize of a
 * [gi, gi, d] grid to [go, go, d], as torch.nn.functional.interpolate. */
void bicubic_grid_forward(float *out, const float *in, int gi, int go, int d);

/* Threads for everything model/ runs: the pool's (pool.h) and OpenBLAS's. */
void kernels_set_threads(int n);

/* Built with -DCXR_KPROF: wall time per kernel kind since the last take. */
enum { KPROF_GEMM, KPROF_ATTN, KPROF_NORM, KPROF_ELT, KPROF_N };
void kernels_prof_take(double ms[KPROF_N]);
const char *kernels_prof_name(int kind);

#endif
