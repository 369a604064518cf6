/*
 * test_gemm.c — the engine's own kernels (model/gemm.c and the parts of
 * model/kernels.c built on them) against naive double-precision twins, on
 * shapes that are not multiples of the 6 × 16 tile or of the K block (1, 7,
 * 50, 197, 255, 257, 771 …), with row strides wider than the rows: dense
 * layers with and without bias, QuickGELU / GELU epilogues and accumulation
 * into the output, F32 and F16 panels (and F16 sources widened at packing),
 * one and two threads, the AVX2 kernels and the portable loop, the OpenBLAS
 * fallback of dense_forward, per-call packing views, multi-head attention
 * (causal and not), softmax and layer-norm rows, and F32 → F16 rounding.
 * Exit status 0 when every check passes; the first mismatches are printed.
 */
#include "gemm.h"
#include "kernels.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CHECK_MAX_PRINTED 20
#include "check.h"

static uint32_t rng = 12345;
static float frand(void) {
    rng = rng * 1664525u + 1013904223u;
    return ((rng >> 8) / 16777216.0f) * 2.0f - 1.0f;
}

static double act_d(double x, int act) {
    if (act == ACT_QUICK_GELU) return x / (1.0 + exp(-1.702 * x));
    if (act == ACT_GELU) return 0.5 * x * (1.0 + erf(x / sqrt(2.0)));
    if (act == ACT_RELU) return x > 0 ? x : 0;
    return x;
}

/* f16 bits → double, independent of the engine's converter */
static double half_d(uint16_t h) {
    int e = (h >> 10) & 0x1f, man = h & 0x3ff;
    double v = e == 0 ? ldexp(man, -24) : e == 31 ? (man ? NAN : INFINITY) : ldexp(1024 + man, e - 25);
    return h & 0x8000 ? -v : v;
}

/* F32 → F16 bits, round to nearest even, computed in double with
 * nearbyint (the engine twiddles bits instead). */
static uint16_t to_half(float f) {
    uint16_t sign = signbit(f) ? 0x8000 : 0;
    double ax = fabs((double)f);
    if (isnan(ax)) return 0x7e00;
    if (ax >= 65520.0) return sign | 0x7c00;
    if (ax < ldexp(1.0, -14)) return sign | (uint16_t)nearbyint(ax * ldexp(1.0, 24)); /* 1024 = smallest normal */
    int e;
    frexp(ax, &e); /* ax in [2^(e-1), 2^e) */
    int E = e + 14;
    double q = nearbyint(ldexp(ax, 25 - E)); /* 1024 … 2048 */
    if (q == 2048.0) {
        q = 1024.0;
        E++;
    }
    if (E >= 31) return sign | 0x7c00;
    return sign | (uint16_t)(E << 10) | (uint16_t)(q - 1024.0);
}

/* ------------------------------------------------------------ dense layer */

typedef struct {
    int m, k, n;
} shape;

static void ref_dense(double *ref, const float *in, int ldi, const double *w, const float *b, const float *old,
                      int ldo, int m, int k, int n, int act, int accum) {
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) {
            double s = b ? b[j] : 0.0;
            for (int i = 0; i < k; i++) s += (double)in[(size_t)r * ldi + i] * w[(size_t)j * k + i];
            ref[(size_t)r * n + j] = act_d((accum ? old[(size_t)r * ldo + j] : 0.0) + s, act);
        }
}

/* One case: pack (from F32 or F16 source, into F32 or F16 panels), run
 * gemm_forward (threads) or dense_forward, compare. */
static void dense_case(shape s, int act, int use_bias, int accum, int src_f16, int pan_f16, int threads,
                       int portable, int via_dense) {
    const int m = s.m, k = s.k, n = s.n, ldi = k + 3, ldo = n + 5;
    float *in = malloc(sizeof(float) * m * ldi), *wf = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n);
    uint16_t *wh = malloc(sizeof(uint16_t) * n * k);
    double *wd = malloc(sizeof(double) * n * k), *ref = malloc(sizeof(double) * m * n);
    float *out = malloc(sizeof(float) * m * ldo), *old = malloc(sizeof(float) * m * ldo);
    for (int i = 0; i < m * ldi; i++) in[i] = frand();
    for (int i = 0; i < n * k; i++) {
        wf[i] = frand() * 0.5f;
        wh[i] = to_half(wf[i]);
    }
    for (int i = 0; i < n; i++) b[i] = frand();
    for (int i = 0; i < m * ldo; i++) old[i] = out[i] = frand();
    for (int i = 0; i < n * k; i++) wd[i] = (src_f16 || pan_f16) ? half_d(wh[i]) : wf[i];
    gemm_w w;
    int rc = gemm_pack_init(&w, n, k, pan_f16);
    CHECK(rc == 0, "pack_init %dx%d", n, k);
    if (rc) return;
    /* pack in two pieces to exercise row0 (and a group that straddles panels) */
    int split = n > 20 ? 19 : n / 2;
    if (src_f16) {
        gemm_pack_rows(&w, 0, wh, GEMM_SRC_F16, split);
        gemm_pack_rows(&w, split, wh + (size_t)split * k, GEMM_SRC_F16, n - split);
    } else {
        gemm_pack_rows(&w, 0, wf, GEMM_SRC_F32, split);
        gemm_pack_rows(&w, split, wf + (size_t)split * k, GEMM_SRC_F32, n - split);
    }
    const float *bias = use_bias ? b : NULL;
    ref_dense(ref, in, ldi, wd, bias, old, ldo, m, k, n, act, accum);
    kernels_set_threads(threads);
    gemm_set_portable(portable);
    if (via_dense) dense_forward(out, ldo, in, ldi, NULL, &w, bias, m, k, n, act, accum);
    else gemm_forward(out, ldo, in, ldi, &w, bias, m, act, accum);
    gemm_set_portable(0);
    double worst = 0;
    int bad_r = -1, bad_c = -1;
    for (int r = 0; r < m; r++) {
        for (int j = 0; j < n; j++) {
            double mag = 1.0;
            for (int i = 0; i < k; i++) mag += fabs((double)in[(size_t)r * ldi + i] * wd[(size_t)j * k + i]);
            double e = fabs(out[(size_t)r * ldo + j] - ref[(size_t)r * n + j]) / mag;
            if (e > worst) {
                worst = e;
                bad_r = r;
                bad_c = j;
            }
        }
        for (int j = n; j < ldo; j++) /* columns past n untouched */
            if (out[(size_t)r * ldo + j] != old[(size_t)r * ldo + j]) worst = INFINITY;
    }
    CHECK(worst < 2e-6, "dense m%d k%d n%d act %d bias %d accum %d src_f16 %d panels_f16 %d threads %d portable %d "
          "dense %d: relative error %g at (%d, %d)", m, k, n, act, use_bias, accum, src_f16, pan_f16, threads,
          portable, via_dense, worst, bad_r, bad_c);
    gemm_free(&w);
    free(in); free(wf); free(b); free(wh); free(wd); free(ref); free(out); free(old);
}

static void test_dense(void) {
    const shape shapes[] = {{1, 1, 1},   {1, 7, 16},   {2, 3, 17},   {6, 16, 16},  {7, 255, 15},
                            {5, 256, 33}, {13, 257, 50}, {50, 64, 7},  {50, 771, 48}, {197, 20, 19},
                            {121, 300, 32}, {7, 1, 771}, {3, 1541, 20}};
    const int ns = sizeof shapes / sizeof shapes[0];
    for (int i = 0; i < ns; i++) {
        int act = i % 4 == 0 ? GEMM_ACT_NONE : i % 4 == 1 ? ACT_QUICK_GELU : i % 4 == 2 ? ACT_GELU : ACT_RELU;
        dense_case(shapes[i], GEMM_ACT_NONE, 0, 0, 0, 0, 1, 0, 0);
        dense_case(shapes[i], act, 1, 0, 0, 0, 2, 0, 0);
        dense_case(shapes[i], GEMM_ACT_NONE, 1, 1, 0, 0, 2, 0, 0);
        dense_case(shapes[i], act, i & 1, 0, 1, 1, 2, 0, 0); /* F16 panels */
        dense_case(shapes[i], GEMM_ACT_NONE, 1, 1, 1, 0, 1, 0, 0); /* F16 widened at packing */
        dense_case(shapes[i], act, 1, 0, 0, 1, 1, 0, 0);  /* F32 rounded to F16 panels */
        dense_case(shapes[i], i & 1 ? GEMM_ACT_NONE : act, 1, i & 1, 0, 0, 2, 1, 0); /* portable loop */
        dense_case(shapes[i], ACT_GELU, 1, 0, 1, 1, 1, 1, 0);
        dense_case(shapes[i], act == GEMM_ACT_NONE ? ACT_QUICK_GELU : act, 1, 0, 0, 0, 2, 0, 1);
        dense_case(shapes[i], GEMM_ACT_NONE, 1, 1, 0, 0, 2, 0, 1);
        /* act(out + in · wᵀ + b): a residual block's sum and ReLU in one pass */
        dense_case(shapes[i], ACT_RELU, i & 1, 1, 0, 0, 2, 0, 0);
        dense_case(shapes[i], ACT_RELU, 1, 1, 0, 1, 1, 0, 0);
        dense_case(shapes[i], ACT_GELU, 1, 1, 0, 0, 1, 1, 0); /* portable loop */
    }
}

/* Shapes large enough to be shared among threads: several units of panels
 * (the last one short, a partial panel), several k blocks (the last one
 * short), more rows than one row block; 2, 3 and 5 threads. */
static void test_dense_threads(void) {
    const shape shapes[] = {{250, 600, 200}, {50, 768, 1000}, {61, 1100, 96}, {300, 40, 500}};
    const int ns = sizeof shapes / sizeof shapes[0];
    for (int i = 0; i < ns; i++) {
        dense_case(shapes[i], ACT_GELU, 1, 0, 0, 0, 2, 0, 0);
        dense_case(shapes[i], GEMM_ACT_NONE, 1, 1, 0, 0, 3, 0, 0);
        dense_case(shapes[i], ACT_QUICK_GELU, 0, 0, 1, 1, 5, 0, 0); /* F16 panels */
    }
}

/* dense_forward's OpenBLAS path (no panels): strides, bias, act, accumulate */
static void test_dense_blas(void) {
    const int m = 9, k = 13, n = 21, ldi = 17, ldo = 25;
    float in[9 * 17], w[21 * 13], b[21], out[9 * 25], old[9 * 25];
    double wd[21 * 13], ref[9 * 21];
    for (int i = 0; i < m * ldi; i++) in[i] = frand();
    for (int i = 0; i < n * k; i++) wd[i] = w[i] = frand();
    for (int i = 0; i < n; i++) b[i] = frand();
    kernels_set_threads(2);
    for (int v = 0; v < 3; v++) {
        int act = v == 1 ? ACT_GELU : GEMM_ACT_NONE, accum = v == 2;
        for (int i = 0; i < m * ldo; i++) old[i] = out[i] = frand();
        dense_forward(out, ldo, in, ldi, w, NULL, b, m, k, n, act, accum);
        ref_dense(ref, in, ldi, wd, b, old, ldo, m, k, n, act, accum);
        double md = 0;
        for (int r = 0; r < m; r++)
            for (int j = 0; j < n; j++) md = fmax(md, fabs(out[r * ldo + j] - ref[r * n + j]));
        CHECK(md < 1e-5, "dense_forward OpenBLAS path (act %d accum %d): max diff %g", act, accum, md);
    }
}

/* ---------------------------------------------------------------- views */

static void test_views(void) {
    const int n = 37, k = 300, m = 11, ld = 311;
    float *src = malloc(sizeof(float) * 300 * ld), *a = malloc(sizeof(float) * m * k), *out = malloc(sizeof(float) * m * n);
    float *buf = aligned_alloc(64, (size_t)((gemm_panel_len(n, k) * 4 + 63) / 64 * 64));
    for (int i = 0; i < 300 * ld; i++) src[i] = frand();
    for (int i = 0; i < m * k; i++) a[i] = frand();
    kernels_set_threads(1);
    gemm_w v = gemm_view_nt(buf, src, ld, n, k); /* w[j][i] = src[j·ld + i] */
    gemm_forward_1t(out, n, a, k, &v, NULL, m, GEMM_ACT_NONE, 0);
    double md = 0;
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += (double)a[r * k + i] * src[(size_t)j * ld + i];
            md = fmax(md, fabs(s - out[r * n + j]));
        }
    CHECK(md < 1e-4, "gemm_view_nt: max diff %g", md);
    v = gemm_view_nn(buf, src, ld, k, n); /* w[j][i] = src[i·ld + j] */
    gemm_forward_1t(out, n, a, k, &v, NULL, m, GEMM_ACT_NONE, 0);
    md = 0;
    for (int r = 0; r < m; r++)
        for (int j = 0; j < n; j++) {
            double s = 0;
            for (int i = 0; i < k; i++) s += (double)a[r * k + i] * src[(size_t)i * ld + j];
            md = fmax(md, fabs(s - out[r * n + j]));
        }
    CHECK(md < 1e-4, "gemm_view_nn: max diff %g", md);
    free(src); free(a); free(out); free(buf);
}

/* ------------------------------------------------------------ attention */

static void attention_case(int t, int heads, int dh, int causal, int threads, int portable) {
    const int D = heads * dh, ld = 3 * D + 1, ldo = D + 2;
    float *qkv = malloc(sizeof(float) * t * ld), *out = malloc(sizeof(float) * t * ldo);
    int64_t sl = mha_scratch_len(t, heads, dh, threads);
    float *scr = aligned_alloc(64, (size_t)((sl * 4 + 63) / 64 * 64));
    for (int i = 0; i < t * ld; i++) qkv[i] = frand() * 1.5f;
    for (int i = 0; i < t * ldo; i++) out[i] = 7.0f;
    kernels_set_threads(threads);
    const float *q = qkv, *k = qkv + D, *v = qkv + 2 * D;
    gemm_set_portable(portable);
    mha_forward(out, ldo, q, k, v, ld, t, heads, dh, causal, scr);
    gemm_set_portable(0);
    double md = 0;
    double *s = malloc(sizeof(double) * t);
    for (int h = 0; h < heads; h++)
        for (int i = 0; i < t; i++) {
            int jn = causal ? i + 1 : t;
            double mx = -INFINITY, sum = 0;
            for (int j = 0; j < jn; j++) {
                double a = 0;
                for (int c = 0; c < dh; c++) a += (double)q[i * ld + h * dh + c] * k[j * ld + h * dh + c];
                s[j] = a / sqrt((double)dh);
                mx = fmax(mx, s[j]);
            }
            for (int j = 0; j < jn; j++) sum += (s[j] = exp(s[j] - mx));
            for (int c = 0; c < dh; c++) {
                double a = 0;
                for (int j = 0; j < jn; j++) a += s[j] / sum * v[j * ld + h * dh + c];
                md = fmax(md, fabs(a - out[i * ldo + h * dh + c]));
            }
        }
    for (int i = 0; i < t; i++)
        for (int c = D; c < ldo; c++) md = fmax(md, fabs(out[i * ldo + c] - 7.0f));
    CHECK(md < 2e-5, "mha t%d heads %d dh %d causal %d threads %d portable %d: max diff %g", t, heads, dh, causal,
          threads, portable, md);
    free(s); free(qkv); free(out); free(scr);
}

static void test_attention(void) {
    const int ts[] = {1, 7, 50, 77, 197};
    for (int i = 0; i < 5; i++)
        for (int causal = 0; causal <= 1; causal++) {
            attention_case(ts[i], 3, 5, causal, 2, 0);
            attention_case(ts[i], 2, 64, causal, i & 1 ? 1 : 2, 0);
            attention_case(ts[i], 3, 16, causal, 2, 1); /* the loops used without AVX2 */
        }
    attention_case(50, 12, 64, 0, 2, 0);
}

/* --------------------------------------------------------- row helpers */

static void test_rows(void) {
    const int ns[] = {1, 7, 8, 9, 50, 197, 768};
    for (int a = 0; a < 14; a++) {
        gemm_set_portable(a >= 7);
        int n = ns[a % 7];
        float x[768], y[768], w[768], b[768];
        double ref[768];
        for (int i = 0; i < n; i++) {
            x[i] = frand() * 8.0f;
            w[i] = 1 + 0.1f * frand();
            b[i] = 0.1f * frand();
        }
        memcpy(y, x, sizeof(float) * n);
        gemm_softmax_row(y, n, 0.125f);
        double mx = -INFINITY, sum = 0, md = 0;
        for (int i = 0; i < n; i++) mx = fmax(mx, x[i]);
        for (int i = 0; i < n; i++) sum += (ref[i] = exp(0.125 * (x[i] - mx)));
        for (int i = 0; i < n; i++) md = fmax(md, fabs(ref[i] / sum - y[i]));
        CHECK(md < 1e-6, "softmax n%d: max diff %g", n, md);

        for (int i = 0; i < n; i++) x[i] = 3.0f + 0.01f * frand(); /* large mean, small spread */
        gemm_layernorm_row(y, x, w, b, n, 1e-5f);
        double mu = 0, var = 0;
        for (int i = 0; i < n; i++) mu += x[i];
        mu /= n;
        for (int i = 0; i < n; i++) var += (x[i] - mu) * (x[i] - mu);
        var /= n;
        md = 0;
        for (int i = 0; i < n; i++) md = fmax(md, fabs((x[i] - mu) / sqrt(var + 1e-5) * w[i] + b[i] - y[i]));
        CHECK(md < 5e-5, "layernorm row n%d: max diff %g", n, md);
        memcpy(y, x, sizeof(float) * n);
        gemm_layernorm_row(y, y, w, b, n, 1e-5f); /* in place */
        double md2 = 0;
        for (int i = 0; i < n; i++) md2 = fmax(md2, fabs((x[i] - mu) / sqrt(var + 1e-5) * w[i] + b[i] - y[i]));
        CHECK(md2 < 5e-5, "layernorm row in place n%d: max diff %g", n, md2);
        gemm_set_portable(0);
    }
}

/* ------------------------------------------------------- F32 → F16 */

static void test_f16_rounding(void) {
    /* packing F32 into F16 panels must round to nearest even, like the converter */
    const float vals[] = {1.0f, -2.0f, 65504.0f, 65519.0f, 65520.0f, 1e-8f, 5.960464477539063e-08f,
                          2.9802322387695312e-08f, 4.470348358154297e-08f, 1.0009765625f, 1.00048828125f,
                          1.00146484375f, 0.333333343f, -0.0f, 6.103515625e-05f, 6.0975551605224609e-05f};
    const int n = sizeof vals / sizeof vals[0];
    gemm_w w;
    CHECK(gemm_pack_init(&w, n, 1, 1) == 0, "pack_init");
    gemm_pack_rows(&w, 0, vals, GEMM_SRC_F32, n);
    for (int i = 0; i < n; i++) {
        uint16_t got = ((const uint16_t *)w.panels)[i], want = to_half(vals[i]);
        CHECK(got == want, "f16 rounding of %.10g: got 0x%04x, want 0x%04x", vals[i], got, want);
    }
    gemm_free(&w);
    gemm_free(NULL);
}

/* The AVX-512 tile and the AVX2 tile sum each output in the same order:
 * the same bits, on every shape, activation and weight type. */
static void test_isa_bits(void) {
    const shape shapes[] = {{1, 5, 16}, {13, 257, 50}, {50, 771, 48}, {197, 64, 33}, {25, 385, 17}};
    for (int i = 0; i < (int)(sizeof shapes / sizeof shapes[0]); i++)
        for (int f16 = 0; f16 <= 1; f16++) {
            const int m = shapes[i].m, k = shapes[i].k, n = shapes[i].n;
            int act = i % 4 == 0 ? GEMM_ACT_NONE : i % 4 == 1 ? ACT_QUICK_GELU : i % 4 == 2 ? ACT_GELU : ACT_RELU;
            float *in = malloc(sizeof(float) * m * k), *wf = malloc(sizeof(float) * n * k), *b = malloc(sizeof(float) * n);
            float *o512 = malloc(sizeof(float) * m * n), *o256 = malloc(sizeof(float) * m * n);
            for (int j = 0; j < m * k; j++) in[j] = frand();
            for (int j = 0; j < n * k; j++) wf[j] = frand();
            for (int j = 0; j < n; j++) b[j] = frand();
            gemm_w w;
            CHECK(gemm_pack_init(&w, n, k, f16) == 0, "pack_init");
            gemm_pack_rows(&w, 0, wf, GEMM_SRC_F32, n);
            gemm_forward_1t(o512, n, in, k, &w, b, m, act, 0);
            gemm_set_avx512(0);
            gemm_forward_1t(o256, n, in, k, &w, b, m, act, 0);
            gemm_set_avx512(1);
            CHECK(!memcmp(o512, o256, sizeof(float) * m * n), "AVX-512 and AVX2 tiles differ: m%d k%d n%d f16 %d", m,
                  k, n, f16);
            gemm_free(&w);
            free(in); free(wf); free(b); free(o512); free(o256);
        }
}

int main(void) {
    printf("gemm kernels: %s\n", gemm_isa_name());
    test_dense();
    if (!strcmp(gemm_isa_name(), "AVX-512F")) { /* and again on the AVX2 tile */
        gemm_set_avx512(0);
        printf("gemm kernels: %s\n", gemm_isa_name());
        test_dense();
        test_attention();
        gemm_set_avx512(1);
        test_isa_bits();
    } else {
        printf("SKIP: the AVX-512 tile (this CPU or CXR_GEMM_ISA does not run it)\n");
    }
    test_dense_threads();
    test_dense_blas();
    test_views();
    test_attention();
    test_rows();
    test_f16_rounding();
    return CHECK_SUMMARY();
}
