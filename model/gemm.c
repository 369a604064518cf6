/*
 * gemm.c — the engine's own SGEMM for AVX2 + FMA (+ F16C for half-precision
 * weights): weights packed once into 16-column panels, a 6 × 16 register
 * tile (12 accumulators), K blocked by GEMM_KC so a panel block stays in L1,
 * the activation rows packed per block, and an epilogue that adds the bias,
 * applies the activation or accumulates into the output while the tile is
 * still in registers. Parallel over column panels (OpenMP). Every function
 * that uses AVX2 carries a target attribute, so the rest of the build keeps
 * the default flags; gemm_available() says whether the CPU can run them.
 * Must not know about models or files; does not allocate on the hot path.
 */
#include "gemm.h"
#include "kernels.h"

#include <assert.h>
#include <math.h>
#include <stdlib.h>
#include <string.h>
#ifdef _OPENMP
#include <omp.h>
#endif

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEMM_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

enum {
    GEMM_KC = 256,  /* k per block: a 16-column panel block is 16 KiB */
    GEMM_MC = 120,  /* rows per packed block of A (20 tiles, 120 KiB) */
};

/* Panels are stored K-block major, so that a thread sweeping its panels
 * block after block reads one sequential stream: block kb (GEMM_KC rows of
 * k, fewer in the last) holds every panel's kc × 16 values in turn. */
static size_t panel_off(int k, int np, int j, int i) {
    int kb = i / GEMM_KC, kk = i % GEMM_KC, kc = k - kb * GEMM_KC < GEMM_KC ? k - kb * GEMM_KC : GEMM_KC;
    return (size_t)kb * GEMM_KC * np * GEMM_NR + ((size_t)(j / GEMM_NR) * kc + kk) * GEMM_NR + j % GEMM_NR;
}

int64_t gemm_panel_len(int n, int k) { return (int64_t)((n + GEMM_NR - 1) / GEMM_NR) * GEMM_NR * k; }

size_t gemm_bytes(const gemm_w *w) {
    return w && w->panels ? (size_t)gemm_panel_len(w->n, w->k) * (w->f16 ? 2 : 4) : 0;
}

int gemm_pack_init(gemm_w *w, int n, int k, int f16) {
    memset(w, 0, sizeof *w);
    if (n < 1 || k < 1) return -1;
    size_t bytes = (size_t)gemm_panel_len(n, k) * (f16 ? 2 : 4);
    bytes = (bytes + 63) & ~(size_t)63;
    w->panels = aligned_alloc(64, bytes);
    if (!w->panels) return -1;
    if (n % GEMM_NR) { /* zero the padding columns of the last panel */
        int np = (n + GEMM_NR - 1) / GEMM_NR;
        for (int i = 0; i < k; i++) {
            size_t off = panel_off(k, np, n, i);
            for (int c = n % GEMM_NR; c < GEMM_NR; c++, off++) {
                if (f16) ((uint16_t *)w->panels)[off] = 0;
                else ((float *)w->panels)[off] = 0.0f;
            }
        }
    }
    w->n = n;
    w->k = k;
    w->f16 = f16;
    return 0;
}

void gemm_free(gemm_w *w) {
    if (!w) return;
    free(w->panels);
    memset(w, 0, sizeof *w);
}

/* float → IEEE half, round to nearest even (portable; used at load only) */
static uint16_t f32_to_f16(float f) {
    uint32_t x;
    memcpy(&x, &f, 4);
    uint32_t sign = (x >> 16) & 0x8000, ax = x & 0x7fffffffu;
    if (ax >= 0x7f800000u) return (uint16_t)(sign | 0x7c00 | (ax > 0x7f800000u ? 0x200 : 0)); /* inf / nan */
    if (ax >= 0x477ff000u) return (uint16_t)(sign | 0x7c00);                                  /* overflow */
    if (ax < 0x38800000u) {                                                                    /* subnormal */
        if (ax < 0x33000000u) return (uint16_t)sign;
        uint32_t e = ax >> 23, man = (ax & 0x7fffff) | 0x800000, shift = 126 - e;
        uint32_t h = man >> shift, rem = man & ((1u << shift) - 1), half = 1u << (shift - 1);
        if (rem > half || (rem == half && (h & 1))) h++;
        return (uint16_t)(sign | h);
    }
    uint32_t h = ((ax - 0x38000000u) >> 13), rem = ax & 0x1fff;
    if (rem > 0x1000 || (rem == 0x1000 && (h & 1))) h++;
    return (uint16_t)(sign | h);
}

void gemm_pack_rows(gemm_w *w, int row0, const void *src, int src_type, int nrows) {
    assert(row0 >= 0 && row0 + nrows <= w->n);
    const int k = w->k, np = (w->n + GEMM_NR - 1) / GEMM_NR;
    const size_t esz = src_type == GEMM_SRC_F16 ? 2 : 4;
    /* rows in groups that share a panel: the writes then fill whole lines */
    for (int r0 = 0; r0 < nrows;) {
        int j0 = row0 + r0, c0 = j0 % GEMM_NR, cn = GEMM_NR - c0 < nrows - r0 ? GEMM_NR - c0 : nrows - r0;
        const char *s = (const char *)src + (size_t)r0 * k * esz;
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            size_t base = panel_off(k, np, j0, k0);
            for (int i = 0; i < kc; i++) {
                size_t d = base + (size_t)i * GEMM_NR;
                for (int c = 0; c < cn; c++) {
                    const char *e = s + ((size_t)c * k + k0 + i) * esz;
                    if (src_type == GEMM_SRC_F16) {
                        uint16_t h;
                        memcpy(&h, e, 2); /* a mapping may be only 2-byte aligned */
                        if (w->f16) ((uint16_t *)w->panels)[d + c] = h;
                        else ((float *)w->panels)[d + c] = f16_to_f32(h);
                    } else {
                        float f;
                        memcpy(&f, e, 4);
                        if (w->f16) ((uint16_t *)w->panels)[d + c] = f32_to_f16(f);
                        else ((float *)w->panels)[d + c] = f;
                    }
                }
            }
        }
        r0 += cn;
    }
}

gemm_w gemm_view_nt(float *buf, const float *src, int ld, int n, int k) {
    gemm_w w = {.n = n, .k = k, .f16 = 0, .panels = buf};
    int np = (n + GEMM_NR - 1) / GEMM_NR;
    for (int j = 0; j < np * GEMM_NR; j++) {
        const float *s = src + (size_t)j * ld;
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            float *d = buf + panel_off(k, np, j, k0);
            if (j < n)
                for (int i = 0; i < kc; i++) d[(size_t)i * GEMM_NR] = s[k0 + i];
            else
                for (int i = 0; i < kc; i++) d[(size_t)i * GEMM_NR] = 0.0f;
        }
    }
    return w;
}

gemm_w gemm_view_nn(float *buf, const float *src, int ld, int k, int n) {
    gemm_w w = {.n = n, .k = k, .f16 = 0, .panels = buf};
    int np = (n + GEMM_NR - 1) / GEMM_NR;
    for (int p = 0; p < np; p++) {
        int nr = n - p * GEMM_NR < GEMM_NR ? n - p * GEMM_NR : GEMM_NR;
        for (int i = 0; i < k; i++) {
            const float *s = src + (size_t)i * ld + p * GEMM_NR;
            float *d = buf + panel_off(k, np, p * GEMM_NR, i);
            memcpy(d, s, (size_t)nr * sizeof *d);
            for (int c = nr; c < GEMM_NR; c++) d[c] = 0.0f;
        }
    }
    return w;
}

/* ------------------------------------------------------ portable fallback */

/* Used when the CPU lacks AVX2/FMA/F16C (tests force it too): the same
 * arithmetic, one dot product at a time, from the panels. */
static float act1(float x, int act) {
    if (act == ACT_QUICK_GELU) return x / (1.0f + expf(-1.702f * x));
    if (act == ACT_GELU) return 0.5f * x * (1.0f + erff(x * 0.70710678118654752f));
    return x;
}

static float panel_at(const gemm_w *w, int j, int i) {
    size_t off = panel_off(w->k, (w->n + GEMM_NR - 1) / GEMM_NR, j, i);
    return w->f16 ? f16_to_f32(((const uint16_t *)w->panels)[off]) : ((const float *)w->panels)[off];
}

static void run_portable(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m,
                         int act, int accum, int p0, int p1) {
    int j1 = p1 * GEMM_NR < w->n ? p1 * GEMM_NR : w->n;
    for (int r = 0; r < m; r++)
        for (int j = p0 * GEMM_NR; j < j1; j++) {
            float s = 0.0f;
            for (int i = 0; i < w->k; i++) s += in[(size_t)r * ldi + i] * panel_at(w, j, i);
            if (b) s += b[j];
            s = act1(s, act);
            out[(size_t)r * ldo + j] = accum ? out[(size_t)r * ldo + j] + s : s;
        }
}

/* --------------------------------------------------------- AVX2 kernels */

#if GEMM_X86
#define TGT __attribute__((target("avx2,fma,f16c")))
#define INL static inline __attribute__((always_inline)) TGT

/* exp(x), Cephes' single-precision polynomial, |rel err| < 2e-7 */
INL __m256 v_exp(__m256 x) {
    x = _mm256_min_ps(_mm256_max_ps(x, _mm256_set1_ps(-87.3f)), _mm256_set1_ps(88.3f));
    __m256 fx = _mm256_round_ps(_mm256_mul_ps(x, _mm256_set1_ps(1.44269504088896341f)),
                                _MM_FROUND_TO_NEAREST_INT | _MM_FROUND_NO_EXC);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(0.693359375f), x);
    x = _mm256_fnmadd_ps(fx, _mm256_set1_ps(-2.12194440e-4f), x);
    __m256 y = _mm256_set1_ps(1.9875691500e-4f);
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.3981999507e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(8.3334519073e-3f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(4.1665795894e-2f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(1.6666665459e-1f));
    y = _mm256_fmadd_ps(y, x, _mm256_set1_ps(5.0000001201e-1f));
    y = _mm256_fmadd_ps(y, _mm256_mul_ps(x, x), _mm256_add_ps(x, _mm256_set1_ps(1.0f)));
    __m256i e = _mm256_slli_epi32(_mm256_add_epi32(_mm256_cvtps_epi32(fx), _mm256_set1_epi32(127)), 23);
    return _mm256_mul_ps(y, _mm256_castsi256_ps(e));
}

/* erf(x), Abramowitz & Stegun 7.1.26, |abs err| < 1.5e-7 */
INL __m256 v_erf(__m256 x) {
    const __m256 signmask = _mm256_set1_ps(-0.0f);
    __m256 sign = _mm256_and_ps(x, signmask), ax = _mm256_andnot_ps(signmask, x);
    __m256 t = _mm256_div_ps(_mm256_set1_ps(1.0f), _mm256_fmadd_ps(ax, _mm256_set1_ps(0.3275911f), _mm256_set1_ps(1.0f)));
    __m256 p = _mm256_set1_ps(1.061405429f);
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-1.453152027f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(1.421413741f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(-0.284496736f));
    p = _mm256_fmadd_ps(p, t, _mm256_set1_ps(0.254829592f));
    p = _mm256_mul_ps(p, t);
    __m256 y = _mm256_fnmadd_ps(p, v_exp(_mm256_sub_ps(_mm256_setzero_ps(), _mm256_mul_ps(ax, ax))),
                                _mm256_set1_ps(1.0f));
    return _mm256_or_ps(y, sign);
}

INL __m256 v_act(__m256 x, int act) {
    if (act == ACT_QUICK_GELU)
        return _mm256_div_ps(x, _mm256_add_ps(_mm256_set1_ps(1.0f), v_exp(_mm256_mul_ps(x, _mm256_set1_ps(-1.702f)))));
    if (act == ACT_GELU)
        return _mm256_mul_ps(_mm256_mul_ps(_mm256_set1_ps(0.5f), x),
                             _mm256_add_ps(_mm256_set1_ps(1.0f), v_erf(_mm256_mul_ps(x, _mm256_set1_ps(0.70710678118654752f)))));
    return x;
}

INL __m256 load_b(const void *bp, int f16, size_t off) {
    if (f16) return _mm256_cvtph_ps(_mm_load_si128((const __m128i *)((const uint16_t *)bp + off)));
    return _mm256_load_ps((const float *)bp + off);
}

/* One mr × 16 tile over kc: c (ldc) = (load_c ? c : 0) + a · b-block; on
 * the last block, + bias, then act. a: packed, a[k·mr + i]. c holds 16
 * writable columns (the caller handles partial panels). */
INL void tile(const int mr, const int f16, const int pk, float *c, int ldc, const float *a, int lda, const void *bp,
              int kc, int load_c, int last, const float *bias, int act, const char *pf) {
    __m256 c00, c01, c10, c11, c20, c21, c30, c31, c40, c41, c50, c51;
    c00 = c01 = c10 = c11 = c20 = c21 = c30 = c31 = c40 = c41 = c50 = c51 = _mm256_setzero_ps();
#define LD(i)                                                                             \
    if (mr > i) {                                                                         \
        c##i##0 = _mm256_loadu_ps(c + (size_t)(i) * ldc);                                 \
        c##i##1 = _mm256_loadu_ps(c + (size_t)(i) * ldc + 8);                             \
    }
    if (load_c) {
        LD(0) LD(1) LD(2) LD(3) LD(4) LD(5)
    }
#undef LD
    for (int k = 0; k < kc; k++) {
        if (pf) _mm_prefetch(pf + (size_t)k * 64, _MM_HINT_T1); /* the next panel block, a line per k */
        __m256 b0 = load_b(bp, f16, (size_t)k * 16), b1 = load_b(bp, f16, (size_t)k * 16 + 8), x;
#define FM(i)                                                                          \
    if (mr > i) {                                                                      \
        x = _mm256_broadcast_ss(pk ? a + (size_t)k * mr + i : a + (size_t)(i) * lda + k); \
        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);    \
        c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);    \
    }
        FM(0) FM(1) FM(2) FM(3) FM(4) FM(5)
#undef FM
    }
    if (last && (bias || act != GEMM_ACT_NONE)) {
        __m256 bb0 = _mm256_setzero_ps(), bb1 = _mm256_setzero_ps();
        if (bias) {
            bb0 = _mm256_loadu_ps(bias);
            bb1 = _mm256_loadu_ps(bias + 8);
        }
#define EP(i)                                                          \
    if (mr > i) {                                                      \
        c##i##0 = v_act(_mm256_add_ps(c##i##0, bb0), act);             \
        c##i##1 = v_act(_mm256_add_ps(c##i##1, bb1), act);             \
    }
        EP(0) EP(1) EP(2) EP(3) EP(4) EP(5)
#undef EP
    }
#define ST(i)                                                      \
    if (mr > i) {                                                  \
        _mm256_storeu_ps(c + (size_t)(i) * ldc, c##i##0);          \
        _mm256_storeu_ps(c + (size_t)(i) * ldc + 8, c##i##1);      \
    }
    ST(0) ST(1) ST(2) ST(3) ST(4) ST(5)
#undef ST
}

/* mr and f16 become constants in each instance */
TGT static void tile_any(int mr, int f16, float *c, int ldc, const float *a, int lda, const void *bp, int kc,
                         int load_c, int last, const float *bias, int act, const char *pf) {
#define CASE(R)                                                                                 \
    case R:                                                                                     \
        if (f16 && !lda) tile(R, 1, 1, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf);   \
        else if (!lda) tile(R, 0, 1, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf);     \
        else if (f16) tile(R, 1, 0, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf);      \
        else tile(R, 0, 0, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf);               \
        break;
    switch (mr) {
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
    default: break;
    }
#undef CASE
}

/* Pack rows [0, mc) × cols [k0, k0 + kc) of A into tiles of GEMM_MR rows:
 * tile t at ap + t·GEMM_MR·kc holds a[k·mr + i] (mr = rows of that tile). */
TGT static void pack_a(float *ap, const float *a, int lda, int mc, int k0, int kc) {
    for (int t0 = 0; t0 < mc; t0 += GEMM_MR) {
        int mr = mc - t0 < GEMM_MR ? mc - t0 : GEMM_MR;
        float *d = ap + (size_t)t0 * kc;
        const float *s = a + (size_t)t0 * lda + k0;
        if (mr == GEMM_MR) {
            int k = 0;
            for (; k + 8 <= kc; k += 8) { /* 6 rows × 8 k: transpose through registers */
                __m256 r0 = _mm256_loadu_ps(s + k), r1 = _mm256_loadu_ps(s + (size_t)lda + k);
                __m256 r2 = _mm256_loadu_ps(s + 2 * (size_t)lda + k), r3 = _mm256_loadu_ps(s + 3 * (size_t)lda + k);
                __m256 r4 = _mm256_loadu_ps(s + 4 * (size_t)lda + k), r5 = _mm256_loadu_ps(s + 5 * (size_t)lda + k);
                float tmp[6][8];
                _mm256_storeu_ps(tmp[0], r0);
                _mm256_storeu_ps(tmp[1], r1);
                _mm256_storeu_ps(tmp[2], r2);
                _mm256_storeu_ps(tmp[3], r3);
                _mm256_storeu_ps(tmp[4], r4);
                _mm256_storeu_ps(tmp[5], r5);
                for (int j = 0; j < 8; j++)
                    for (int i = 0; i < 6; i++) d[(size_t)(k + j) * 6 + i] = tmp[i][j];
            }
            for (; k < kc; k++)
                for (int i = 0; i < 6; i++) d[(size_t)k * 6 + i] = s[(size_t)i * lda + k];
        } else {
            for (int k = 0; k < kc; k++)
                for (int i = 0; i < mr; i++) d[(size_t)k * mr + i] = s[(size_t)i * lda + k];
        }
    }
}

int gemm_pf = 1, gemm_packa = 1;
static _Thread_local float apack[GEMM_MC * GEMM_KC] __attribute__((aligned(64)));

/* Panels [p0, p1) of out = act(in · wᵀ + b) (+ out), on this thread. */
TGT static void run_avx2(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m,
                         int act, int accum, int p0, int p1) {
    const int K = w->k, esz = w->f16 ? 2 : 4, np = (w->n + GEMM_NR - 1) / GEMM_NR;
    float edge[GEMM_MR * GEMM_NR], ebias[GEMM_NR];
    for (int m0 = 0; m0 < m; m0 += GEMM_MC) {
        int mc = m - m0 < GEMM_MC ? m - m0 : GEMM_MC;
        for (int k0 = 0; k0 < K; k0 += GEMM_KC) {
            int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC, last = k0 + kc >= K, load_c = k0 > 0 || accum;
            if (gemm_packa) pack_a(apack, in + (size_t)m0 * ldi, ldi, mc, k0, kc);
            for (int p = p0; p < p1; p++) {
                const char *bp = (const char *)w->panels + panel_off(K, np, p * GEMM_NR, k0) * esz;
                int n0 = p * GEMM_NR, nr = w->n - n0 < GEMM_NR ? w->n - n0 : GEMM_NR;
                const float *bias = b ? b + n0 : NULL;
                if (nr < GEMM_NR && bias) {
                    memset(ebias, 0, sizeof ebias);
                    memcpy(ebias, bias, (size_t)nr * sizeof *ebias);
                    bias = ebias;
                }
                /* while the first tile runs, fetch the next panel block (it
                   follows this one in memory; for halves, half of it ahead) */
                const char *pf = p + 1 < p1 && gemm_pf ? bp + (size_t)kc * GEMM_NR * esz : NULL;
                for (int t0 = 0; t0 < mc; t0 += GEMM_MR) {
                    int mr = mc - t0 < GEMM_MR ? mc - t0 : GEMM_MR;
                    float *c = out + (size_t)(m0 + t0) * ldo + n0;
                    const float *a = gemm_packa ? apack + (size_t)t0 * kc : in + (size_t)(m0 + t0) * ldi + k0;
                    int lda = gemm_packa ? 0 : ldi;
                    if (t0) pf = NULL;
                    if (nr == GEMM_NR) {
                        tile_any(mr, w->f16, c, ldo, a, lda, bp, kc, load_c, last, bias, act, pf);
                    } else {
                        for (int i = 0; i < mr; i++) {
                            if (load_c) memcpy(edge + i * GEMM_NR, c + (size_t)i * ldo, (size_t)nr * sizeof *c);
                        }
                        tile_any(mr, w->f16, edge, GEMM_NR, a, lda, bp, kc, load_c, last, bias, act, pf);
                        for (int i = 0; i < mr; i++) memcpy(c + (size_t)i * ldo, edge + i * GEMM_NR, (size_t)nr * sizeof *c);
                    }
                }
            }
        }
    }
}

/* x = softmax(scale · x) over n values */
TGT static void softmax_avx2(float *x, int n, float scale) {
    __m256 vmx = _mm256_set1_ps(-INFINITY);
    int i = 0;
    for (; i + 8 <= n; i += 8) vmx = _mm256_max_ps(vmx, _mm256_loadu_ps(x + i));
    __m128 m4 = _mm_max_ps(_mm256_castps256_ps128(vmx), _mm256_extractf128_ps(vmx, 1));
    m4 = _mm_max_ps(m4, _mm_movehl_ps(m4, m4));
    m4 = _mm_max_ss(m4, _mm_movehdup_ps(m4));
    float mx = _mm_cvtss_f32(m4);
    for (; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    const __m256 vs = _mm256_set1_ps(scale), vb = _mm256_set1_ps(-scale * mx);
    __m256 vsum = _mm256_setzero_ps();
    for (i = 0; i + 8 <= n; i += 8) {
        __m256 e = v_exp(_mm256_fmadd_ps(_mm256_loadu_ps(x + i), vs, vb));
        _mm256_storeu_ps(x + i, e);
        vsum = _mm256_add_ps(vsum, e);
    }
    float tail[8] = {0}, sum = 0;
    if (i < n) {
        float buf[8];
        for (int j = 0; j < 8; j++) buf[j] = i + j < n ? x[i + j] : mx;
        __m256 e = v_exp(_mm256_fmadd_ps(_mm256_loadu_ps(buf), vs, vb));
        _mm256_storeu_ps(tail, e);
        for (int j = 0; i + j < n; j++) {
            x[i + j] = tail[j];
            sum += tail[j];
        }
    }
    float part[8];
    _mm256_storeu_ps(part, vsum);
    for (int j = 0; j < 8; j++) sum += part[j];
    const __m256 vinv = _mm256_set1_ps(1.0f / sum);
    for (i = 0; i + 8 <= n; i += 8) _mm256_storeu_ps(x + i, _mm256_mul_ps(_mm256_loadu_ps(x + i), vinv));
    for (; i < n; i++) x[i] *= 1.0f / sum;
}

INL float hsum(__m256 v) {
    __m128 s = _mm_add_ps(_mm256_castps256_ps128(v), _mm256_extractf128_ps(v, 1));
    s = _mm_add_ps(s, _mm_movehl_ps(s, s));
    s = _mm_add_ss(s, _mm_movehdup_ps(s));
    return _mm_cvtss_f32(s);
}

TGT static void layernorm_avx2(float *y, const float *x, const float *w, const float *b, int d, float eps) {
    __m256 s0 = _mm256_setzero_ps(), s1 = _mm256_setzero_ps();
    int i = 0;
    for (; i + 16 <= d; i += 16) {
        s0 = _mm256_add_ps(s0, _mm256_loadu_ps(x + i));
        s1 = _mm256_add_ps(s1, _mm256_loadu_ps(x + i + 8));
    }
    float s = hsum(_mm256_add_ps(s0, s1));
    for (; i < d; i++) s += x[i];
    const float mean = s / (float)d;
    const __m256 vm = _mm256_set1_ps(mean);
    s0 = s1 = _mm256_setzero_ps();
    for (i = 0; i + 16 <= d; i += 16) {
        __m256 a = _mm256_sub_ps(_mm256_loadu_ps(x + i), vm), c = _mm256_sub_ps(_mm256_loadu_ps(x + i + 8), vm);
        s0 = _mm256_fmadd_ps(a, a, s0);
        s1 = _mm256_fmadd_ps(c, c, s1);
    }
    float ss = hsum(_mm256_add_ps(s0, s1));
    for (; i < d; i++) ss += (x[i] - mean) * (x[i] - mean);
    const float inv = (float)(1.0 / sqrt((double)ss / d + eps));
    const __m256 vi = _mm256_set1_ps(inv);
    for (i = 0; i + 8 <= d; i += 8) {
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vm), vi);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < d; i++) y[i] = (x[i] - mean) * inv * w[i] + b[i];
}

int gemm_available(void) {
    static int have = -1;
    if (have < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        __builtin_cpu_init(); /* avx2 and fma checks include the OS saving YMM state */
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1); /* clang 14 cannot name f16c */
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return have;
}
#else
int gemm_available(void) { return 0; }
#endif

static int portable_only;
void gemm_set_portable(int on) { portable_only = on; }

static void run(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                int accum, int p0, int p1) {
#if GEMM_X86
    if (!portable_only && gemm_available()) {
        run_avx2(out, ldo, in, ldi, w, b, m, act, accum, p0, p1);
        return;
    }
#endif
    run_portable(out, ldo, in, ldi, w, b, m, act, accum, p0, p1);
}

void gemm_softmax_row(float *x, int n, float scale) {
#if GEMM_X86
    if (!portable_only && gemm_available()) {
        softmax_avx2(x, n, scale);
        return;
    }
#endif
    float mx = -INFINITY, sum = 0.0f;
    for (int i = 0; i < n; i++) mx = x[i] > mx ? x[i] : mx;
    for (int i = 0; i < n; i++) sum += (x[i] = expf(scale * (x[i] - mx)));
    for (int i = 0; i < n; i++) x[i] /= sum;
}

void gemm_layernorm_row(float *y, const float *x, const float *w, const float *b, int d, float eps) {
#if GEMM_X86
    if (!portable_only && gemm_available()) {
        layernorm_avx2(y, x, w, b, d, eps);
        return;
    }
#endif
    double s = 0, ss = 0;
    for (int c = 0; c < d; c++) s += x[c];
    double mean = s / d;
    for (int c = 0; c < d; c++) ss += (x[c] - mean) * (x[c] - mean);
    float inv = (float)(1.0 / sqrt(ss / d + eps)), mu = (float)mean;
    for (int c = 0; c < d; c++) y[c] = (x[c] - mu) * inv * w[c] + b[c];
}

void gemm_forward_1t(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                     int accum) {
    assert(!(accum && act != GEMM_ACT_NONE));
    if (m < 1) return;
    run(out, ldo, in, ldi, w, b, m, act, accum, 0, (w->n + GEMM_NR - 1) / GEMM_NR);
}

void gemm_forward(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                  int accum) {
    assert(!(accum && act != GEMM_ACT_NONE));
    if (m < 1) return;
    int np = (w->n + GEMM_NR - 1) / GEMM_NR, nth = 1;
#ifdef _OPENMP
    nth = omp_get_max_threads();
    if ((int64_t)m * w->n * w->k < 200000) nth = 1; /* not worth waking threads */
    if (nth > np) nth = np;
#endif
    if (nth <= 1) {
        run(out, ldo, in, ldi, w, b, m, act, accum, 0, np);
        return;
    }
#pragma omp parallel num_threads(nth)
    {
#ifdef _OPENMP
        int t = omp_get_thread_num(), T = omp_get_num_threads();
#else
        int t = 0, T = 1;
#endif
        run(out, ldo, in, ldi, w, b, m, act, accum, (int)((int64_t)np * t / T), (int)((int64_t)np * (t + 1) / T));
    }
}
