/*
 * kernels.c — numeric kernels of the towers: GEMMs go to OpenBLAS, the rest
 * (layer norm, activations, attention, interpolation) are plain loops
 * parallelised with OpenMP over rows or heads. No allocation here: callers
 * pass scratch. Must not know about models, files or tokens.
 */
#include "kernels.h"

#include <cblas.h>
#include <math.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

static int nthreads = 1;

void kernels_set_threads(int n) {
    nthreads = n < 1 ? 1 : n;
    openblas_set_num_threads(nthreads);
#ifdef _OPENMP
    omp_set_num_threads(nthreads);
#endif
}

void linear_forward(float *out, const float *in, const float *w, const float *b, int n, int i, int o) {
    cblas_sgemm(CblasRowMajor, CblasNoTrans, CblasTrans, n, o, i, 1.0f, in, i, w, i, 0.0f, out, o);
    if (b) {
#pragma omp parallel for if (n > 8) schedule(static)
        for (int r = 0; r < n; r++) {
            float *y = out + (int64_t)r * o;
            for (int c = 0; c < o; c++) y[c] += b[c];
        }
    }
}

void layernorm_forward(float *out, const float *in, const float *w, const float *b, int n, int d, float eps) {
#pragma omp parallel for if (n > 8) schedule(static)
    for (int r = 0; r < n; r++) {
        const float *x = in + (int64_t)r * d;
        float *y = out + (int64_t)r * d;
        double s = 0, ss = 0;
        for (int c = 0; c < d; c++) s += x[c];
        double mean = s / d;
        for (int c = 0; c < d; c++) {
            double t = x[c] - mean;
            ss += t * t;
        }
        float inv = (float)(1.0 / sqrt(ss / d + eps));
        float m = (float)mean;
        for (int c = 0; c < d; c++) y[c] = (x[c] - m) * inv * w[c] + b[c];
    }
}

void act_forward(float *x, int64_t n, int act) {
    if (act == ACT_QUICK_GELU) {
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) x[i] = x[i] / (1.0f + expf(-1.702f * x[i]));
    } else {
#pragma omp parallel for if (n > 65536) schedule(static)
        for (int64_t i = 0; i < n; i++) x[i] = 0.5f * x[i] * (1.0f + erff(x[i] * 0.70710678118654752f));
    }
}

int64_t attention_scratch_len(int t, int heads) { return (int64_t)t * t * heads; }

void attention_forward(float *out, int ldo, const float *q, const float *k, const float *v, int ld, int t,
                       int heads, int dh, int causal, float *scratch) {
    const float scale = 1.0f / sqrtf((float)dh);
#pragma omp parallel for schedule(static)
    for (int h = 0; h < heads; h++) {
        float *s = scratch + (int64_t)h * t * t;
        const float *qh = q + h * dh, *kh = k + h * dh, *vh = v + h * dh;
        for (int i = 0; i < t; i++) {
            const float *qi = qh + (int64_t)i * ld;
            float *si = s + (int64_t)i * t;
            int jn = causal ? i + 1 : t;
            float mx = -INFINITY;
            for (int j = 0; j < jn; j++) {
                const float *kj = kh + (int64_t)j * ld;
                float acc = 0;
                for (int c = 0; c < dh; c++) acc += qi[c] * kj[c];
                si[j] = acc * scale;
                if (si[j] > mx) mx = si[j];
            }
            float sum = 0;
            for (int j = 0; j < jn; j++) {
                si[j] = expf(si[j] - mx);
                sum += si[j];
            }
            float inv = 1.0f / sum;
            float *o = out + (int64_t)i * ldo + h * dh;
            for (int c = 0; c < dh; c++) o[c] = 0;
            for (int j = 0; j < jn; j++) {
                const float *vj = vh + (int64_t)j * ld;
                float p = si[j] * inv;
                for (int c = 0; c < dh; c++) o[c] += p * vj[c];
            }
        }
    }
}

void add_forward(float *x, const float *y, int64_t n) {
#pragma omp parallel for if (n > 65536) schedule(static)
    for (int64_t i = 0; i < n; i++) x[i] += y[i];
}

static float cubic_w(float x) {
    const float A = -0.75f;
    x = fabsf(x);
    if (x <= 1.0f) return ((A + 2.0f) * x - (A + 3.0f)) * x * x + 1.0f;
    if (x < 2.0f) return ((A * x - 5.0f * A) * x + 8.0f * A) * x - 4.0f * A;
    return 0.0f;
}

void bicubic_grid_forward(float *out, const float *in, int gi, int go, int d) {
    float scale = (float)gi / (float)go;
    for (int oy = 0; oy < go; oy++) {
        float sy = (oy + 0.5f) * scale - 0.5f;
        int iy = (int)floorf(sy);
        float ty = sy - iy;
        float wy[4] = {cubic_w(ty + 1), cubic_w(ty), cubic_w(1 - ty), cubic_w(2 - ty)};
        for (int ox = 0; ox < go; ox++) {
            float sx = (ox + 0.5f) * scale - 0.5f;
            int ix = (int)floorf(sx);
            float tx = sx - ix;
            float wx[4] = {cubic_w(tx + 1), cubic_w(tx), cubic_w(1 - tx), cubic_w(2 - tx)};
            float *o = out + ((int64_t)oy * go + ox) * d;
            for (int c = 0; c < d; c++) o[c] = 0;
            for (int a = 0; a < 4; a++) {
                int yy = iy - 1 + a;
                yy = yy < 0 ? 0 : yy >= gi ? gi - 1 : yy;
                for (int bb = 0; bb < 4; bb++) {
                    int xx = ix - 1 + bb;
                    xx = xx < 0 ? 0 : xx >= gi ? gi - 1 : xx;
                    float w = wy[a] * wx[bb];
                    const float *src = in + ((int64_t)yy * gi + xx) * d;
                    for (int c = 0; c < d; c++) o[c] += w * src[c];
                }
            }
        }
    }
}

float f16_to_f32(uint16_t h) {
    uint32_t sign = (uint32_t)(h & 0x8000) << 16, exp = (h >> 10) & 0x1f, man = h & 0x3ff, bits;
    if (exp == 0) {
        if (man == 0) {
            bits = sign;
        } else { /* subnormal: normalise */
            exp = 127 - 15 + 1;
            while (!(man & 0x400)) { man <<= 1; exp--; }
            man &= 0x3ff;
            bits = sign | (exp << 23) | (man << 13);
        }
    } else if (exp == 31) {
        bits = sign | 0x7f800000u | (man << 13);
    } else {
        bits = sign | ((exp + 127 - 15) << 23) | (man << 13);
    }
    float f;
    memcpy(&f, &bits, 4);
    return f;
}
