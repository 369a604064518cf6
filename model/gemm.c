/*
 * gemm.c — the engine's own SGEMM for AVX2 + FMA (+ F16C for half-precision
 * weights), and AVX-512F where the CPU has it: weights packed once into
 * 16-column panels; a 6 × 16 register tile (12 accumulators; 12 × 16 of
 * 16-wide registers with AVX-512) that broadcasts the activations straight from their
 * rows (packing them measured no faster); k in blocks of GEMM_KC, panels in
 * groups whose k block stays in L2 while each 6-row tile of activations
 * sits in L1; the weights the tile loop will need next prefetched from
 * memory while it computes; an epilogue that adds the bias, applies the
 * activation or accumulates into the output while the tile is still in
 * registers. Work is shared out as one contiguous range of panel groups per
 * thread, with stealing from the others' ends, on the engine's thread pool
 * (pool.c), which never waits for a thread that is not running. Also the row
 * helpers (softmax, layer norm) the other kernels vectorise with.
 * Every function that uses AVX2 carries a target attribute, so the rest of
 * the build keeps the default flags; gemm_available() says whether the CPU
 * can run them. Must not know about models, files or the kernels above it
 * (kernels.c calls this file, never the reverse); does not allocate on the
 * hot path.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE */
#include "gemm.h"
#include "f16.h"
#include "pool.h"

#include <assert.h>
#include <math.h>
#include <stdatomic.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>

#define GEMM_MAP_MIN (1u << 20) /* weights of at least this many bytes get a populated mapping */

#if defined(__x86_64__) && (defined(__GNUC__) || defined(__clang__))
#define GEMM_X86 1
#include <cpuid.h>
#include <immintrin.h>
#else
#define GEMM_X86 0
#endif

/* Chosen by measurement on the batch-1 ViT shapes (50 and 197 rows), at one
 * and two threads, with the weights streamed from memory as in a forward
 * (a ViT-B's do not fit in L3) and the next block prefetched: k blocks of
 * 256-384 beat 768 by 5-10% (768 had been best without prefetching), 384
 * slightly ahead at two threads; groups of 2-6 panels ran within noise of
 * each other. A group is also the unit of work sharing (gemm_forward). */
enum {
    GEMM_KC = 384,  /* k per block: a panel's block is 24 KiB in F32, a 6-row tile of A 9 KiB */
    GEMM_MC = 240,  /* rows of A per block (a batch-1 ViT-B/16's 197 in one) */
    GEMM_NG = 3,    /* panels per group: their k block (72 KiB in F32) stays in L2 */
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
    if (bytes >= GEMM_MAP_MIN) {
        /* large weights: one populated mapping, its pages faulted in by the
           kernel in bulk (first-touch faults one by one cost a CNN's open
           tens of ms on a virtual machine) */
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p != MAP_FAILED) {
            w->panels = p;
            w->mapped = bytes;
        }
    }
    if (!w->panels) w->panels = aligned_alloc(64, bytes);
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
    if (w->mapped) munmap(w->panels, w->mapped);
    else free(w->panels);
    memset(w, 0, sizeof *w);
}

void gemm_pack_rows(gemm_w *w, int row0, const void *src, int src_type, int nrows) {
    assert(row0 >= 0 && row0 + nrows <= w->n);
    const int k = w->k, np = (w->n + GEMM_NR - 1) / GEMM_NR;
    const size_t esz = src_type == GEMM_SRC_F16 ? 2 : 4;
    /* rows in groups that share a panel, so the writes fill whole lines */
    for (int r0 = 0; r0 < nrows;) {
        int j0 = row0 + r0, c0 = j0 % GEMM_NR, cn = GEMM_NR - c0 < nrows - r0 ? GEMM_NR - c0 : nrows - r0;
        const char *s = (const char *)src + (size_t)r0 * k * esz;
        for (int k0 = 0; k0 < k; k0 += GEMM_KC) {
            int kc = k - k0 < GEMM_KC ? k - k0 : GEMM_KC;
            size_t base = panel_off(k, np, j0, k0);
            /* row by row: the source is read in order (from memory: a model's
               mapping), the scattered writes stay within one kc x 16 block (L1) */
            if (src_type == GEMM_SRC_F32 && !w->f16 && !((uintptr_t)s % 4)) {
                float *d = (float *)w->panels + base;
                const float *sf = (const float *)s + k0;
                for (int c = 0; c < cn; c++)
                    for (int i = 0; i < kc; i++) d[(size_t)i * GEMM_NR + c] = sf[(size_t)c * k + i];
            } else if (src_type == GEMM_SRC_F16 && w->f16 && !((uintptr_t)s % 2)) {
                uint16_t *d = (uint16_t *)w->panels + base;
                const uint16_t *sh = (const uint16_t *)s + k0;
                for (int c = 0; c < cn; c++)
                    for (int i = 0; i < kc; i++) d[(size_t)i * GEMM_NR + c] = sh[(size_t)c * k + i];
            } else {
                for (int i = 0; i < kc; i++) {
                    size_t d = base + (size_t)i * GEMM_NR;
                    for (int c = 0; c < cn; c++) {
                        const char *e = s + ((size_t)c * k + k0 + i) * esz;
                        float f;
                        if (src_type == GEMM_SRC_F16) {
                            uint16_t h;
                            memcpy(&h, e, 2);
                            f = f16_to_f32(h);
                        } else {
                            memcpy(&f, e, 4);
                        }
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
            out[(size_t)r * ldo + j] = gemm_act1(accum ? out[(size_t)r * ldo + j] + s : s, act);
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
    if (act == ACT_RELU) return _mm256_max_ps(x, _mm256_setzero_ps());
    return x;
}

INL __m256 load_b(const void *bp, int f16, size_t off) {
    if (f16) return _mm256_cvtph_ps(_mm_load_si128((const __m128i *)((const uint16_t *)bp + off)));
    return _mm256_load_ps((const float *)bp + off);
}

/* One mr × 16 tile over kc: c (ldc) = (load_c ? c : 0) + a · b-block; on
 * the last block, + bias, then act. a: mr rows of kc values, row stride
 * lda (read in place: packing A measured no faster). c holds 16 writable
 * columns (the caller handles partial panels). Every 8 steps of k it
 * prefetches one line of pf (up to pfn lines): weights the caller will need
 * next, so that they stream in from memory while this tile computes. */
INL void tile(const int mr, const int f16, float *c, int ldc, const float *a, int lda, const void *bp, int kc,
              int load_c, int last, const float *bias, int act, const char *pf, int pfn) {
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
#define FM(i, k)                                              \
    if (mr > i) {                                             \
        x = _mm256_broadcast_ss(a + (size_t)(i) * lda + (k)); \
        c##i##0 = _mm256_fmadd_ps(x, b0, c##i##0);            \
        c##i##1 = _mm256_fmadd_ps(x, b1, c##i##1);            \
    }
#define STEP(k)                                                                                  \
    {                                                                                            \
        __m256 b0 = load_b(bp, f16, (size_t)(k) * 16), b1 = load_b(bp, f16, (size_t)(k) * 16 + 8), x; \
        FM(0, k) FM(1, k) FM(2, k) FM(3, k) FM(4, k) FM(5, k)                                    \
    }
    int k = 0;
    for (int l = 0; k + 8 <= kc; k += 8, l++) {
        if (l < pfn) _mm_prefetch(pf + (size_t)l * 64, _MM_HINT_T0);
        STEP(k) STEP(k + 1) STEP(k + 2) STEP(k + 3) STEP(k + 4) STEP(k + 5) STEP(k + 6) STEP(k + 7)
    }
    for (; k < kc; k++) STEP(k)
#undef STEP
#undef FM
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
                         int load_c, int last, const float *bias, int act, const char *pf, int pfn) {
#define CASE(R)                                                                                 \
    case R:                                                                                     \
        if (f16) tile(R, 1, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf, pfn);          \
        else tile(R, 0, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf, pfn);              \
        break;
    switch (mr) {
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6)
    default: break;
    }
#undef CASE
}

/* The k block [k0, k0 + kc) of the group of panels that starts at g0 and
 * ends at g0 + GEMM_NG or at p1: one contiguous run of memory (panel_off);
 * its length in bytes goes to *bytes. */
static const char *group_block(const gemm_w *w, int g0, int p1, int k0, size_t *bytes) {
    const int K = w->k, np = (w->n + GEMM_NR - 1) / GEMM_NR, esz = w->f16 ? 2 : 4;
    int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC, g1 = g0 + GEMM_NG < p1 ? g0 + GEMM_NG : p1;
    *bytes = (size_t)(g1 - g0) * kc * GEMM_NR * esz;
    return (const char *)w->panels + panel_off(K, np, g0 * GEMM_NR, k0) * esz;
}

/* ------------------------------------------------------- AVX-512 kernels */

/* The same arithmetic with 16-wide registers, where the CPU has AVX-512F and
 * the OS saves its state: a 16-column panel row is one register, so a tile
 * is up to 12 rows × 16 (12 accumulators, each row of A broadcast once per
 * step of k). Each output element sums over k in the same order, one FMA per
 * step, as the AVX2 tile: the two give the same bits. On a CPU that runs
 * 512-bit FMAs at full width (Zen 5) this doubles the peak of the AVX2 tile. */
#define TGT512 __attribute__((target("avx512f,avx2,fma,f16c")))
#define INL512 static inline __attribute__((always_inline)) TGT512
enum { GEMM_MR512 = 12 };

INL512 __m512 load_b512(const void *bp, int f16, size_t off) {
    if (f16) return _mm512_cvtph_ps(_mm256_load_si256((const __m256i *)((const uint16_t *)bp + off)));
    return _mm512_load_ps((const float *)bp + off);
}

/* the activation on a 16-wide register, through the 8-wide one's halves */
INL512 __m512 v_act512(__m512 x, int act) {
    if (act == GEMM_ACT_NONE) return x;
    if (act == ACT_RELU) return _mm512_max_ps(x, _mm512_setzero_ps());
    __m256 lo = v_act(_mm512_castps512_ps256(x), act);
    __m256 hi = v_act(_mm256_castpd_ps(_mm512_extractf64x4_pd(_mm512_castps_pd(x), 1)), act);
    return _mm512_castpd_ps(_mm512_insertf64x4(_mm512_castps_pd(_mm512_castps256_ps512(lo)), _mm256_castps_pd(hi), 1));
}

/* One mr × 16 tile over kc, as tile() above; prefetches one line of pf every
 * 4 steps of k (a tile does twice the work of an AVX2 one per call). */
INL512 void tile512(const int mr, const int f16, float *c, int ldc, const float *a, int lda, const void *bp, int kc,
                    int load_c, int last, const float *bias, int act, const char *pf, int pfn) {
    __m512 c0, c1, c2, c3, c4, c5, c6, c7, c8, c9, c10, c11;
    c0 = c1 = c2 = c3 = c4 = c5 = c6 = c7 = c8 = c9 = c10 = c11 = _mm512_setzero_ps();
#define ROWS(X) X(0) X(1) X(2) X(3) X(4) X(5) X(6) X(7) X(8) X(9) X(10) X(11)
#define LD(i) \
    if (mr > i) c##i = _mm512_loadu_ps(c + (size_t)(i) * ldc);
    if (load_c) {
        ROWS(LD)
    }
#undef LD
#define FM(i) \
    if (mr > i) c##i = _mm512_fmadd_ps(_mm512_set1_ps(a[(size_t)(i) * lda + kk]), b, c##i);
#define STEP(k)                                            \
    {                                                      \
        const int kk = (k);                                \
        __m512 b = load_b512(bp, f16, (size_t)kk * 16);    \
        ROWS(FM)                                           \
    }
    int k = 0;
    for (int l = 0; k + 4 <= kc; k += 4, l++) {
        if (l < pfn) _mm_prefetch(pf + (size_t)l * 64, _MM_HINT_T0);
        STEP(k) STEP(k + 1) STEP(k + 2) STEP(k + 3)
    }
    for (; k < kc; k++) STEP(k)
#undef STEP
#undef FM
    if (last && (bias || act != GEMM_ACT_NONE)) {
        __m512 bb = bias ? _mm512_loadu_ps(bias) : _mm512_setzero_ps();
#define EP(i) \
    if (mr > i) c##i = v_act512(_mm512_add_ps(c##i, bb), act);
        ROWS(EP)
#undef EP
    }
#define ST(i) \
    if (mr > i) _mm512_storeu_ps(c + (size_t)(i) * ldc, c##i);
    ROWS(ST)
#undef ST
#undef ROWS
}

TGT512 static void tile512_any(int mr, int f16, float *c, int ldc, const float *a, int lda, const void *bp, int kc,
                               int load_c, int last, const float *bias, int act, const char *pf, int pfn) {
#define CASE(R)                                                                                 \
    case R:                                                                                     \
        if (f16) tile512(R, 1, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf, pfn);       \
        else tile512(R, 0, c, ldc, a, lda, bp, kc, load_c, last, bias, act, pf, pfn);           \
        break;
    switch (mr) {
        CASE(1) CASE(2) CASE(3) CASE(4) CASE(5) CASE(6) CASE(7) CASE(8) CASE(9) CASE(10) CASE(11) CASE(12)
    default: break;
    }
#undef CASE
}

/* Panels [p0, p1) of out = act(in · wᵀ + b) (+ out), on this thread. Per
 * block of GEMM_MC rows and GEMM_KC of k: for each group of GEMM_NG panels
 * (their k block, 48 KiB in F32, stays in L2), for each tile of rows (in
 * L1; the block's rows split into tiles of at most mr_max rows, as even as
 * possible, so that no tile runs short of independent accumulators), for
 * each panel of the group: the tile kernel, which meanwhile prefetches the
 * block that comes next: the next group's, the next k block's, the next row
 * block's, or at the very end the first block of panels [pn0, pn1), the
 * caller's next work (pn0 < 0: none). wide: the AVX-512 tile (a constant in
 * each instance). */
INL void run_tiles(const int wide, float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b,
                   int m, int act, int accum, int p0, int p1, int pn0, int pn1) {
    const int K = w->k, esz = w->f16 ? 2 : 4, np = (w->n + GEMM_NR - 1) / GEMM_NR;
    const int mr_max = wide ? GEMM_MR512 : GEMM_MR;
    float edge[GEMM_MR512 * GEMM_NR] = {0}, ebias[GEMM_NR];
    for (int m0 = 0; m0 < m; m0 += GEMM_MC) {
        int mc = m - m0 < GEMM_MC ? m - m0 : GEMM_MC, nt = (mc + mr_max - 1) / mr_max;
        for (int k0 = 0; k0 < K; k0 += GEMM_KC) {
            int kc = K - k0 < GEMM_KC ? K - k0 : GEMM_KC, last = k0 + kc >= K, load_c = k0 > 0 || accum;
            for (int g0 = p0; g0 < p1; g0 += GEMM_NG) {
                int g1 = g0 + GEMM_NG < p1 ? g0 + GEMM_NG : p1;
                size_t nb = 0, off = 0;
                const char *nx = NULL;
                if (g1 < p1) nx = group_block(w, g1, p1, k0, &nb);
                else if (k0 + kc < K) nx = group_block(w, p0, p1, k0 + kc, &nb);
                else if (m0 + mc < m) nx = group_block(w, p0, p1, 0, &nb);
                else if (pn0 >= 0 && pn0 < pn1) nx = group_block(w, pn0, pn1, 0, &nb);
                /* bytes one tile call prefetches: a line per 8 (AVX2) or 4 (AVX-512) steps of k */
                const size_t per = (size_t)(kc / (wide ? 4 : 8)) * 64;
                for (int t = 0, t0 = 0; t < nt; t++) {
                    int mr = mc / nt + (t < mc % nt);
                    const float *a = in + (size_t)(m0 + t0) * ldi + k0;
                    for (int p = g0; p < g1; p++) {
                        const char *bp = (const char *)w->panels + panel_off(K, np, p * GEMM_NR, k0) * esz;
                        const char *pf = off < nb ? nx + off : bp;
                        int pfn = off < nb ? (int)((nb - off < per ? nb - off : per) / 64) : 0;
                        off += per;
                        int n0 = p * GEMM_NR, nr = w->n - n0 < GEMM_NR ? w->n - n0 : GEMM_NR;
                        const float *bias = b ? b + n0 : NULL;
                        float *c = out + (size_t)(m0 + t0) * ldo + n0, *cc = c;
                        int ldc = ldo;
                        if (nr < GEMM_NR) { /* a partial panel: bias and tile through 16-wide copies */
                            if (bias) {
                                memset(ebias, 0, sizeof ebias);
                                memcpy(ebias, bias, (size_t)nr * sizeof *ebias);
                                bias = ebias;
                            }
                            for (int i = 0; load_c && i < mr; i++)
                                memcpy(edge + i * GEMM_NR, c + (size_t)i * ldo, (size_t)nr * sizeof *c);
                            cc = edge;
                            ldc = GEMM_NR;
                        }
                        if (wide) tile512_any(mr, w->f16, cc, ldc, a, ldi, bp, kc, load_c, last, bias, act, pf, pfn);
                        else tile_any(mr, w->f16, cc, ldc, a, ldi, bp, kc, load_c, last, bias, act, pf, pfn);
                        for (int i = 0; cc != c && i < mr; i++)
                            memcpy(c + (size_t)i * ldo, edge + i * GEMM_NR, (size_t)nr * sizeof *c);
                    }
                    t0 += mr;
                }
            }
        }
    }
}

TGT static void run_avx2(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m,
                         int act, int accum, int p0, int p1, int pn0, int pn1) {
    run_tiles(0, out, ldo, in, ldi, w, b, m, act, accum, p0, p1, pn0, pn1);
}

TGT512 static void run_avx512(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m,
                              int act, int accum, int p0, int p1, int pn0, int pn1) {
    run_tiles(1, out, ldo, in, ldi, w, b, m, act, accum, p0, p1, pn0, pn1);
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

/* Sums in double (4 lanes), as the portable loop: a float mean drifts by
 * ~1e-4 of the spread on rows with a large mean and a small spread. */
INL double hsum_pd(__m256d v) {
    __m128d s = _mm_add_pd(_mm256_castpd256_pd128(v), _mm256_extractf128_pd(v, 1));
    return _mm_cvtsd_f64(_mm_add_sd(s, _mm_unpackhi_pd(s, s)));
}

TGT static void layernorm_avx2(float *y, const float *x, const float *w, const float *b, int d, float eps) {
    __m256d s0 = _mm256_setzero_pd(), s1 = _mm256_setzero_pd();
    int i = 0;
    for (; i + 8 <= d; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        s0 = _mm256_add_pd(s0, _mm256_cvtps_pd(_mm256_castps256_ps128(v)));
        s1 = _mm256_add_pd(s1, _mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)));
    }
    double s = hsum_pd(_mm256_add_pd(s0, s1));
    for (; i < d; i++) s += x[i];
    const double mean = s / d;
    const __m256d vm = _mm256_set1_pd(mean);
    s0 = s1 = _mm256_setzero_pd();
    for (i = 0; i + 8 <= d; i += 8) {
        __m256 v = _mm256_loadu_ps(x + i);
        __m256d a = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_castps256_ps128(v)), vm);
        __m256d c = _mm256_sub_pd(_mm256_cvtps_pd(_mm256_extractf128_ps(v, 1)), vm);
        s0 = _mm256_fmadd_pd(a, a, s0);
        s1 = _mm256_fmadd_pd(c, c, s1);
    }
    double ss = hsum_pd(_mm256_add_pd(s0, s1));
    for (; i < d; i++) ss += (x[i] - mean) * (x[i] - mean);
    const float inv = (float)(1.0 / sqrt(ss / d + eps)), mu = (float)mean;
    const __m256 vi = _mm256_set1_ps(inv), vmu = _mm256_set1_ps(mu);
    for (i = 0; i + 8 <= d; i += 8) {
        __m256 t = _mm256_mul_ps(_mm256_sub_ps(_mm256_loadu_ps(x + i), vmu), vi);
        _mm256_storeu_ps(y + i, _mm256_fmadd_ps(t, _mm256_loadu_ps(w + i), _mm256_loadu_ps(b + i)));
    }
    for (; i < d; i++) y[i] = (x[i] - mu) * inv * w[i] + b[i];
}

static int portable_only;
void gemm_set_portable(int on) { portable_only = on; }

int gemm_available(void) {
#ifdef CXR_NO_AVX2 /* build switch: exercise the fallback paths on any CPU */
    return 0;
#endif
    if (portable_only) return 0;
    static int have = -1;
    if (have < 0) {
        unsigned a = 0, b = 0, c = 0, d = 0;
        __builtin_cpu_init(); /* avx2 and fma checks include the OS saving YMM state */
        int f16c = __get_cpuid(1, &a, &b, &c, &d) && (c >> 29 & 1); /* clang 14 cannot name f16c */
        have = __builtin_cpu_supports("avx2") && __builtin_cpu_supports("fma") && f16c;
    }
    return have;
}

static int avx512_off;
void gemm_set_avx512(int on) { avx512_off = !on; }

/* 1 when the AVX-512 tile runs: the CPU has AVX-512F, the OS saves its state
 * (libgcc's check includes XCR0), and CXR_GEMM_ISA does not say "avx2" (a
 * site whose CPU slows its clock for 512-bit work, or an A/B benchmark). */
static int gemm_avx512(void) {
    if (avx512_off || !gemm_available()) return 0;
    static int have = -1;
    if (have < 0) {
        const char *e = getenv("CXR_GEMM_ISA");
        have = __builtin_cpu_supports("avx512f") && !(e && !strcmp(e, "avx2"));
    }
    return have;
}
#else
void gemm_set_portable(int on) { (void)on; }
void gemm_set_avx512(int on) { (void)on; }
int gemm_available(void) { return 0; }
static int gemm_avx512(void) { return 0; }
#endif

const char *gemm_isa_name(void) {
    return gemm_avx512() ? "AVX-512F" : gemm_available() ? "AVX2 + FMA + F16C" : "portable";
}

/* Panels [p0, p1); [pn0, pn1): those the caller runs next (a hint) */
static void run(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                int accum, int p0, int p1, int pn0, int pn1) {
#if GEMM_X86
    if (gemm_avx512()) {
        run_avx512(out, ldo, in, ldi, w, b, m, act, accum, p0, p1, pn0, pn1);
        return;
    }
    if (gemm_available()) {
        run_avx2(out, ldo, in, ldi, w, b, m, act, accum, p0, p1, pn0, pn1);
        return;
    }
#endif
    (void)pn0;
    (void)pn1;
    run_portable(out, ldo, in, ldi, w, b, m, act, accum, p0, p1);
}

void gemm_softmax_row(float *x, int n, float scale) {
#if GEMM_X86
    if (gemm_available()) {
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
    if (gemm_available()) {
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
    if (m < 1) return;
    run(out, ldo, in, ldi, w, b, m, act, accum, 0, (w->n + GEMM_NR - 1) / GEMM_NR, -1, -1);
}

/* Work sharing for one GEMM: the groups of GEMM_NG panels ("units") are
 * split into one contiguous segment per thread, so that each thread streams
 * its weights in order and prefetches the unit it runs next. A thread that
 * has finished its segment takes units from the back of the others' (their
 * owners take from the front), so a slow or preempted thread holds nobody
 * back, and a thread that never woke has its segment done by the others.
 * Each segment is one 64-bit word, first unit << 32 | end, changed by
 * compare-and-swap. */
enum { GEMM_SEG_MAX = 64 };

typedef struct {
    float *out;
    const float *in;
    const gemm_w *w;
    const float *b;
    int ldo, ldi, m, act, accum, np, nseg;
    _Atomic uint64_t seg[GEMM_SEG_MAX];
} gemm_job;

/* A unit of segment s, from its front or its back; -1 when it is empty.
 * *next: the unit the same end would give next (-1: none). */
static int seg_take(_Atomic uint64_t *s, int back, int *next) {
    uint64_t v = atomic_load_explicit(s, memory_order_relaxed);
    for (;;) {
        uint32_t lo = (uint32_t)(v >> 32), hi = (uint32_t)v;
        if (lo >= hi) return -1;
        uint64_t nv = back ? v - 1 : v + ((uint64_t)1 << 32);
        if (atomic_compare_exchange_weak_explicit(s, &v, nv, memory_order_relaxed, memory_order_relaxed)) {
            *next = hi - lo < 2 ? -1 : back ? (int)hi - 2 : (int)lo + 1;
            return back ? (int)hi - 1 : (int)lo;
        }
    }
}

static void run_unit(const gemm_job *j, int u, int next) {
    int p0 = u * GEMM_NG, p1 = p0 + GEMM_NG < j->np ? p0 + GEMM_NG : j->np;
    int n0 = next < 0 ? -1 : next * GEMM_NG, n1 = next < 0 ? -1 : n0 + GEMM_NG < j->np ? n0 + GEMM_NG : j->np;
    run(j->out, j->ldo, j->in, j->ldi, j->w, j->b, j->m, j->act, j->accum, p0, p1, n0, n1);
}

/* Item s: segment s from the front, then the others' from the back. */
static void gemm_segment(void *ctx, int s, int worker) {
    gemm_job *j = ctx;
    int u, next;
    (void)worker;
    while ((u = seg_take(&j->seg[s], 0, &next)) >= 0) run_unit(j, u, next);
    for (int d = 1; d < j->nseg; d++)
        while ((u = seg_take(&j->seg[(s + d) % j->nseg], 1, &next)) >= 0) run_unit(j, u, next);
}

void gemm_forward(float *out, int ldo, const float *in, int ldi, const gemm_w *w, const float *b, int m, int act,
                  int accum) {
    if (m < 1) return;
    int np = (w->n + GEMM_NR - 1) / GEMM_NR, nu = (np + GEMM_NG - 1) / GEMM_NG, nth = pool_threads();
    if ((int64_t)m * w->n * w->k < 200000) nth = 1; /* not worth waking threads */
    if (nth > nu) nth = nu;
    if (nth > GEMM_SEG_MAX) nth = GEMM_SEG_MAX;
    if (nth <= 1) {
        run(out, ldo, in, ldi, w, b, m, act, accum, 0, np, -1, -1);
        return;
    }
    gemm_job j = {out, in, w, b, ldo, ldi, m, act, accum, np, nth, {0}};
    for (int s = 0; s < nth; s++) /* units [s·nu/nth, (s+1)·nu/nth) */
        atomic_init(&j.seg[s], (uint64_t)(s * nu / nth) << 32 | (uint32_t)((s + 1) * nu / nth));
    pool_run(nth, gemm_segment, &j);
}
