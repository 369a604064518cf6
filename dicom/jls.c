/*
 * jls.c — single-component JPEG-LS decoding (T.87), see jls.h. Written from
 * the standard: A.2-A.8 for the decoding procedures, C.2 for the marker
 * segments and the default parameters.
 */
#define _DEFAULT_SOURCE /* MAP_ANONYMOUS, MAP_POPULATE */
#include "jls.h"
#include "cxr_common.h"

#include <sys/mman.h>

#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int jls_enabled(void) {
    const char *e = getenv("CXR_JLS_DECODER");
    return !(e && !strcmp(e, "dcmtk"));
}

void jls_image_free(jls_image *img) {
    if (!img) return;
    if (img->mapped) munmap(img->data, img->mapped);
    else free(img->data);
    memset(img, 0, sizeof *img);
}

/* The output: a large frame as one populated mapping, its pages faulted in
 * by the kernel in bulk (one by one they cost a 2k CR ~15 ms on a virtual
 * machine). *mapped: its length, or 0 for malloc'd memory. */
static uint16_t *alloc_samples(size_t n, size_t *mapped) {
    size_t bytes = n * sizeof(uint16_t);
    *mapped = 0;
    if (bytes >= (1u << 20)) {
        void *p = mmap(NULL, bytes, PROT_READ | PROT_WRITE, MAP_PRIVATE | MAP_ANONYMOUS | MAP_POPULATE, -1, 0);
        if (p != MAP_FAILED) {
            *mapped = bytes;
            return p;
        }
    }
    return malloc(bytes);
}

static int fail(int rc, char *err, size_t errlen, const char *fmt, ...) {
    va_list ap;
    va_start(ap, fmt);
    if (err && errlen) vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
    return rc;
}

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }

/* ------------------------------------------------------------ bit reader */

/* Scan data: after a 0xFF byte the next one carries 7 bits (its top bit is
 * a stuffed 0); 0xFF followed by a byte with its top bit set is a marker and
 * ends the data. The cache holds n valid bits from its top; past the end it
 * is fed zeros, counted in fake, so that a stream that ran short is seen. */
typedef struct {
    const uint8_t *p, *end;
    uint64_t cache;
    int n, ff, stop;
    uint64_t fake; /* zero bits fed past the end */
} bitrd;

static void refill(bitrd *b) {
    /* eight bytes at once when none of them is 0xFF (no stuffing, no marker) */
    if (!b->ff && !b->stop && b->end - b->p >= 8) {
        uint64_t w;
        memcpy(&w, b->p, 8);
        const uint64_t nw = ~w;
        if (!((nw - 0x0101010101010101ull) & ~nw & 0x8080808080808080ull)) {
            w = __builtin_bswap64(w);
            int bytes = (64 - b->n) >> 3, rest = 64 - b->n - 8 * bytes;
            uint64_t add = w >> b->n;
            if (rest) add &= ~0ull << rest; /* only whole bytes: the bits past n stay 0 */
            b->cache |= add;
            b->n += 8 * bytes;
            b->p += bytes;
            return;
        }
    }
    while (b->n <= 56) {
        if (b->stop || b->p >= b->end) {
            b->n += 8;
            b->fake += 8;
            continue;
        }
        unsigned v = *b->p;
        if (b->ff) {
            if (v & 0x80) {
                b->stop = 1;
                continue;
            }
            b->cache |= (uint64_t)v << (57 - b->n);
            b->n += 7;
            b->ff = 0;
        } else {
            b->cache |= (uint64_t)v << (56 - b->n);
            b->n += 8;
            b->ff = v == 0xFF;
        }
        b->p++;
    }
}

/* at least 32 bits in the cache (57 or more after a refill) */
static inline __attribute__((always_inline)) void fill(bitrd *b) {
    if (b->n < 32) refill(b);
}

/* k bits (0..32), after fill() */
static inline unsigned take(bitrd *b, int k) {
    if (k == 0) return 0;
    unsigned v = (unsigned)(b->cache >> (64 - k));
    b->cache <<= k;
    b->n -= k;
    return v;
}

static inline unsigned bits(bitrd *b, int k) {
    if (b->n < k) refill(b);
    return take(b, k);
}

/* A.5.3 limited-length Golomb code: MErrval, or -1 when the unary part is
 * longer than the limit allows (damaged data) */
static inline int golomb(bitrd *b, int k, int limit, int qbpp) {
    const int qmax = limit - qbpp - 1;
    fill(b);
    /* qmax <= 62 (LIMIT <= 64, qbpp >= 1): a unary part within it leaves
       shifts of at most 63; a longer one is damage, refused before shifting */
    int q = b->cache ? __builtin_clzll(b->cache) : 64;
    if (__builtin_expect(q < b->n, 1)) { /* the 1 that ends the unary part is in the cache */
        if (q > qmax) return -1;
        b->cache <<= q + 1;
        b->n -= q + 1;
    } else { /* every bit in the cache is 0: count on through refills */
        q = 0;
        for (;;) {
            q += b->n;
            b->cache = 0;
            b->n = 0;
            if (q > qmax) return -1;
            refill(b);
            int z = b->cache ? __builtin_clzll(b->cache) : 64;
            if (z < b->n) {
                q += z;
                if (q > qmax) return -1;
                b->cache <<= z + 1;
                b->n -= z + 1;
                break;
            }
        }
    }
    if (q < qmax) return (int)((unsigned)q << k | bits(b, k));
    return (int)bits(b, qbpp) + 1;
}

/* ------------------------------------------------------- the parameters */

typedef struct {
    int w, h, p, maxval, t1, t2, t3, reset, near;
} params;

static int clampt(int i, int lo, int maxval) { return i > maxval || i < lo ? lo : i; }

/* C.2.4.1.1: default thresholds for the given MAXVAL and NEAR */
static void default_thresholds(int maxval, int near, int *t1, int *t2, int *t3) {
    if (maxval >= 128) {
        int f = ((maxval < 4095 ? maxval : 4095) + 128) >> 8;
        *t1 = clampt(f * (3 - 2) + 2 + 3 * near, near + 1, maxval);
        *t2 = clampt(f * (7 - 3) + 3 + 5 * near, *t1, maxval);
        *t3 = clampt(f * (21 - 4) + 4 + 7 * near, *t2, maxval);
    } else {
        int f = 256 / (maxval + 1), a = 3 / f + 3 * near, b = 7 / f + 5 * near, c = 21 / f + 7 * near;
        *t1 = clampt(a > 2 ? a : 2, near + 1, maxval);
        *t2 = clampt(b > 3 ? b : 3, *t1, maxval);
        *t3 = clampt(c > 4 ? c : 4, *t2, maxval);
    }
}

/* The markers up to the scan data: SOF55, LSE id 1, SOS; others skipped.
 * *scan: the first byte of the entropy-coded data. */
static int parse(const uint8_t *cs, size_t len, params *pp, size_t *scan, char *err, size_t errlen) {
    int lse_maxval = 0, lse_t1 = 0, lse_t2 = 0, lse_t3 = 0, lse_reset = 0, sof = 0;
    if (len < 4 || cs[0] != 0xFF || cs[1] != 0xD8) return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS stream without SOI");
    size_t at = 2;
    for (;;) {
        while (at < len && cs[at] == 0xFF && at + 1 < len && cs[at + 1] == 0xFF) at++; /* fill bytes */
        if (at + 4 > len || cs[at] != 0xFF)
            return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS stream: no marker at byte %zu", at);
        unsigned mk = cs[at + 1], sl = be16(cs + at + 2);
        if (mk == 0xD9 || (mk >= 0xD0 && mk <= 0xD7))
            return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS stream: marker 0x%02x before the scan", mk);
        if (sl < 2 || at + 2 + sl > len)
            return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS segment 0x%02x at byte %zu overruns the stream", mk, at);
        const uint8_t *g = cs + at + 4;
        size_t gl = sl - 2;
        if (mk == 0xF7) { /* SOF55 */
            if (gl < 6) return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS frame header too short");
            pp->p = g[0];
            pp->h = (int)be16(g + 1);
            pp->w = (int)be16(g + 3);
            if (g[5] != 1 || gl != 6 + 3u * g[5])
                return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS frame of %u components", g[5]);
            if (g[7] != 0x11) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS subsampling 0x%02x", g[7]);
            sof = 1;
        } else if ((mk >= 0xC0 && mk <= 0xCF && mk != 0xC4 && mk != 0xC8 && mk != 0xCC) || mk == 0xDD) {
            return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "marker 0x%02x in a JPEG-LS stream", mk);
        } else if (mk == 0xF8) { /* LSE */
            if (gl < 1 || g[0] != 1 || gl != 11)
                return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS LSE segment id %u", gl ? g[0] : 0);
            lse_maxval = (int)be16(g + 1);
            lse_t1 = (int)be16(g + 3);
            lse_t2 = (int)be16(g + 5);
            lse_t3 = (int)be16(g + 7);
            lse_reset = (int)be16(g + 9);
        } else if (mk == 0xDA) { /* SOS */
            if (!sof) return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS scan before the frame header");
            if (gl != 6 || g[0] != 1) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS scan of several components");
            if (g[2] != 0) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS mapping table %u", g[2]);
            pp->near = g[3];
            if (g[4] != 0) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS interleave mode %u", g[4]);
            if (g[5] != 0) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS point transform %u", g[5] & 15);
            *scan = at + 2 + sl;
            break;
        }
        at += 2 + sl;
    }
    if (pp->p < 2 || pp->p > 16) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS precision %d", pp->p);
    if (pp->h < 1 || pp->w < 1) return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS frame %dx%d", pp->w, pp->h);
    pp->maxval = lse_maxval ? lse_maxval : (1 << pp->p) - 1;
    if (pp->maxval < 1 || pp->maxval >= (1 << pp->p))
        return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS MAXVAL %d for %d-bit samples", pp->maxval, pp->p);
    int nmax = pp->maxval / 2 < 255 ? pp->maxval / 2 : 255;
    if (pp->near > nmax) return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS NEAR %d above %d", pp->near, nmax);
    default_thresholds(pp->maxval, pp->near, &pp->t1, &pp->t2, &pp->t3);
    if (lse_t1) pp->t1 = lse_t1;
    if (lse_t2) pp->t2 = lse_t2;
    if (lse_t3) pp->t3 = lse_t3;
    pp->reset = lse_reset ? lse_reset : 64;
    /* T.87 allows RESET up to max(255, MAXVAL); past 4096 a context's A could
       outgrow an int (RESET x 2 RANGE): DCMTK decodes such a stream */
    if (pp->reset > 4096)
        return fail(CXR_ERR_TRANSFER_SYNTAX, err, errlen, "JPEG-LS RESET %d (this decoder takes up to 4096)", pp->reset);
    if (pp->t1 < pp->near + 1 || pp->t2 < pp->t1 || pp->t3 < pp->t2 || pp->t3 > pp->maxval || pp->reset < 3)
        return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS thresholds %d/%d/%d, RESET %d (NEAR %d, MAXVAL %d)", pp->t1,
                    pp->t2, pp->t3, pp->reset, pp->near, pp->maxval);
    return CXR_OK;
}

/* ------------------------------------------------------------ decoding */

static const int J[32] = {0, 0, 0, 0, 1, 1, 1, 1, 2, 2, 2, 2, 3, 3, 3, 3,
                          4, 4, 5, 5, 6, 6, 7, 7, 8, 9, 10, 11, 12, 13, 14, 15};

/* the variables of one context together (one cache line holds four) */
typedef struct {
    int A, B, C, N;
} ctx;

typedef struct {
    ctx c[367]; /* 1..364 regular, 365 and 366 run interruption (B, C unused) */
    int Nn[2];
    int near, maxval, range, qbpp, limit, reset, runindex;
    const signed char *qt; /* gradient → Q, indexed by d + maxval */
} state;

/* the smallest k with n << k >= a (A.5.1), n >= 1 */
static inline int golomb_k(int n, int a) {
    if (n >= a) return 0;
    int k = __builtin_clz((unsigned)n) - __builtin_clz((unsigned)a);
    return (n << k) < a ? k + 1 : k;
}

static inline int fix(const state *s, int rx) {
    const int span = s->range * (2 * s->near + 1);
    if (rx < -s->near) rx += span;
    else if (rx > s->maxval + s->near) rx -= span;
    return rx < 0 ? 0 : rx > s->maxval ? s->maxval : rx;
}

/* one line; prev and cur have a sample before index 0 and after W - 1
 * (prev[-1]: Rc of the first sample; prev[w]: Rd of the last). 0, or -1 on
 * damaged data */
static int line(state *s, bitrd *b, const int *prev, int *cur, int w) {
    const int near = s->near, step = 2 * near + 1, maxval = s->maxval;
    const signed char *qt = s->qt + maxval;
    int x = 0;
    while (x < w) {
        const int ra = cur[x - 1], rb = prev[x], rc = prev[x - 1], rd = prev[x + 1];
        int q = 81 * qt[rd - rb] + 9 * qt[rb - rc] + qt[rc - ra];
        if (q != 0) { /* A.4-A.6: regular mode */
            /* the sign as a mask (0 or -1): x ^ sg - sg is x or -x, without a branch */
            const int sg = q >> 31;
            q = (q ^ sg) - sg;
            /* A.4.1's median edge detector, without branches (its outcome is data) */
            const int mx = ra > rb ? ra : rb, mn = ra < rb ? ra : rb, hi = -(rc >= mx), lo = -(rc <= mn);
            int px = (mn & hi) | (~hi & ((mx & lo) | (~lo & (ra + rb - rc))));
            ctx *c = &s->c[q];
            px += (c->C ^ sg) - sg;
            px = px < 0 ? 0 : px > maxval ? maxval : px;
            int n = c->N, k = golomb_k(n, c->A);
            int m = golomb(b, k, s->limit, s->qbpp);
            if (m < 0 || m > 2 * s->range) return -1; /* a valid MErrval is below RANGE + 1 */
            int e = (m >> 1) ^ -(m & 1); /* m even: m / 2; odd: -(m + 1) / 2 */
            if (k == 0 && near == 0 && 2 * c->B <= -n) e = -e - 1; /* A.5.2's inverted mapping */
            /* A.6: context update and bias correction */
            const int es = e >> 31;
            int bq = c->B + e * step, aq = c->A + ((e ^ es) - es);
            if (n == s->reset) {
                aq >>= 1;
                bq >>= 1; /* arithmetic: T.87's -((1 - B) >> 1) for negative B */
                n >>= 1;
            }
            n++;
            if (bq <= -n) {
                bq += n;
                if (c->C > -128) c->C--;
                if (bq <= -n) bq = -n + 1;
            } else if (bq > 0) {
                bq -= n;
                if (c->C < 127) c->C++;
                if (bq > 0) bq = 0;
            }
            c->A = aq;
            c->B = bq;
            c->N = n;
            cur[x] = (uint16_t)fix(s, px + ((e ^ sg) - sg) * step);
            x++;
            continue;
        }
        /* A.7: run mode */
        const int rv = ra;
        for (;;) {
            fill(b);
            if (take(b, 1)) {
                int len = 1 << J[s->runindex], cnt = w - x < len ? w - x : len;
                for (int i = 0; i < cnt; i++) cur[x + i] = (uint16_t)rv;
                x += cnt;
                if (cnt == len && s->runindex < 31) s->runindex++;
                if (x == w) return 0;
                continue;
            }
            int cnt = (int)bits(b, J[s->runindex]);
            if (cnt >= w - x) return -1; /* the run must end before the line does */
            for (int i = 0; i < cnt; i++) cur[x + i] = (uint16_t)rv;
            x += cnt;
            /* A.7.2: the run interruption sample */
            const int rb2 = prev[x], ri = (rb2 - rv < 0 ? rv - rb2 : rb2 - rv) <= near;
            ctx *c = &s->c[365 + ri];
            int n = c->N, k = golomb_k(n, ri ? c->A + (n >> 1) : c->A);
            int em = golomb(b, k, s->limit - J[s->runindex] - 1, s->qbpp);
            if (em < 0 || em > 2 * s->range) return -1;
            int t = em + ri, map = t & 1, ae = (t + map) >> 1;
            int e = ((k != 0 || 2 * s->Nn[ri] >= n) == (map != 0)) ? -ae : ae;
            if (e < 0) s->Nn[ri]++;
            c->A += (em + 1 - ri) >> 1;
            if (n == s->reset) {
                c->A >>= 1;
                n >>= 1;
                s->Nn[ri] >>= 1;
            }
            c->N = n + 1;
            int rx = ri ? rv + e * step : rb2 + (rv > rb2 ? -e : e) * step;
            cur[x] = (uint16_t)fix(s, rx);
            x++;
            if (s->runindex > 0) s->runindex--;
            break;
        }
    }
    return 0;
}

/* The largest power-of-two reduction, up to 3 levels (1/8), whose image
 * (ceil(size / 2^r)) still has a short side >= min_short and a long side
 * >= min_long: the rule of j2k.c's resolution levels. (The caller asks for
 * twice the model's side: block means are a cruder low-pass than a
 * wavelet level, and the model's resize then does the last halving.) */
static int pick_reduce(int w, int h, int min_short, int min_long) {
    if (min_short <= 0 && min_long <= 0) return 0;
    int r = 0;
    while (r < 3) {
        int n = r + 1, rw = (w + (1 << n) - 1) >> n, rh = (h + (1 << n) - 1) >> n;
        int sh = rw < rh ? rw : rh, lo = rw < rh ? rh : rw;
        if (sh < min_short || lo < min_long) break;
        r = n;
    }
    return r;
}

int jls_decode(const uint8_t *cs, size_t len, int width, int height, int min_short, int min_long, jls_image *out,
               char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    params pp;
    memset(&pp, 0, sizeof pp);
    size_t scan = 0;
    int rc = parse(cs, len, &pp, &scan, err, errlen);
    if (rc != CXR_OK) return rc;
    /* nothing is allocated for a frame the caller did not expect */
    if ((width > 0 && pp.w != width) || (height > 0 && pp.h != height))
        return fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS frame is %dx%d; %dx%d expected", pp.w, pp.h, width, height);
    const int r = pick_reduce(pp.w, pp.h, min_short > 0 ? 2 * min_short : 0, min_long), q = (1 << r) - 1;
    const int ow = (pp.w + q) >> r, oh = (pp.h + q) >> r;
    state *s = calloc(1, sizeof *s);
    signed char *qt = malloc((size_t)2 * pp.maxval + 1);
    int *lines = malloc(sizeof(int) * 2 * ((size_t)pp.w + 2));
    uint32_t *acc = r ? calloc((size_t)ow, sizeof *acc) : NULL; /* a band of 2^r lines, summed per output sample */
    size_t mapped = 0;
    uint16_t *data = alloc_samples((size_t)ow * oh, &mapped);
    if (!s || !qt || !lines || !data || (r && !acc)) {
        free(s), free(qt), free(lines), free(acc);
        jls_image tmp = {.data = data, .mapped = mapped};
        jls_image_free(&tmp);
        return fail(CXR_ERR_NOMEM, err, errlen, "out of memory for a %dx%d JPEG-LS frame", pp.w, pp.h);
    }
    /* A.2.1 */
    s->near = pp.near;
    s->maxval = pp.maxval;
    s->range = (pp.maxval + 2 * pp.near) / (2 * pp.near + 1) + 1;
    s->reset = pp.reset;
    int bpp = 2, qbpp = 1;
    while ((1 << bpp) < pp.maxval + 1) bpp++;
    while ((1 << qbpp) < s->range) qbpp++;
    s->qbpp = qbpp;
    s->limit = 2 * (bpp + (bpp > 8 ? bpp : 8));
    int a0 = (s->range + 32) / 64;
    for (int i = 0; i < 367; i++) {
        s->c[i].A = a0 > 2 ? a0 : 2;
        s->c[i].N = 1;
    }
    /* A.3.3: gradient quantisation */
    for (int d = -pp.maxval; d <= pp.maxval; d++) {
        int q;
        if (d <= -pp.t3) q = -4;
        else if (d <= -pp.t2) q = -3;
        else if (d <= -pp.t1) q = -2;
        else if (d < -pp.near) q = -1;
        else if (d <= pp.near) q = 0;
        else if (d < pp.t1) q = 1;
        else if (d < pp.t2) q = 2;
        else if (d < pp.t3) q = 3;
        else q = 4;
        qt[d + pp.maxval] = (signed char)q;
    }
    s->qt = qt;
    bitrd b = {cs + scan, cs + len, 0, 0, 0, 0, 0};
    int *l0 = lines + 1, *l1 = lines + pp.w + 3; /* each with one sample either side */
    memset(lines, 0, sizeof(int) * 2 * ((size_t)pp.w + 2));
    rc = CXR_OK;
    int top = 0;
    for (int y = 0; y < pp.h; y++) {
        int *prev = y & 1 ? l0 : l1, *cur = y & 1 ? l1 : l0;
        prev[pp.w] = pp.w > 0 ? prev[pp.w - 1] : 0; /* Rd past the end: the last sample above */
        cur[-1] = prev[0];                          /* Ra of the first sample: the one above it */
        if (line(s, &b, prev, cur, pp.w) != 0) {
            rc = fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS data damaged in line %d of %d", y + 1, pp.h);
            break;
        }
        /* cur[-1] stays: Rc of the next line's first sample */
        for (int x = 0; x < pp.w; x++) top = cur[x] > top ? cur[x] : top;
        if (!r) {
            uint16_t *o = data + (size_t)y * pp.w;
            for (int x = 0; x < pp.w; x++) o[x] = (uint16_t)cur[x];
            continue;
        }
        /* reduced: the mean of each 2^r x 2^r block (fewer at the right and
           bottom edges), rounded, as the band's last line arrives */
        const int bs = 1 << r, full = pp.w >> r;
        for (int ox = 0; ox < full; ox++) {
            uint32_t t = 0;
            for (int i = 0; i < bs; i++) t += (uint32_t)cur[ox * bs + i];
            acc[ox] += t;
        }
        for (int x = full * bs; x < pp.w; x++) acc[full] += (uint32_t)cur[x];
        if ((y & q) == q || y == pp.h - 1) {
            const uint32_t rows = (uint32_t)(y & q) + 1;
            uint16_t *o = data + (size_t)(y >> r) * ow;
            for (int ox = 0; ox < ow; ox++) {
                uint32_t cols = ox < full ? (uint32_t)bs : (uint32_t)(pp.w - full * bs), n = rows * cols;
                o[ox] = (uint16_t)((acc[ox] + n / 2) / n);
                acc[ox] = 0;
            }
        }
    }
    /* the data must have held every bit the samples took */
    if (rc == CXR_OK && b.fake > (uint64_t)b.n)
        rc = fail(CXR_ERR_CORRUPT, err, errlen, "JPEG-LS data ends %llu bits early",
                  (unsigned long long)(b.fake - (uint64_t)b.n));
    free(s);
    free(qt);
    free(lines);
    free(acc);
    if (rc != CXR_OK) {
        jls_image tmp = {.data = data, .mapped = mapped};
        jls_image_free(&tmp);
        return rc;
    }
    out->width = ow;
    out->height = oh;
    out->reduce = r;
    out->max_sample = top;
    out->bits = pp.p;
    out->near = pp.near;
    out->data = data;
    out->mapped = mapped;
    return CXR_OK;
}
