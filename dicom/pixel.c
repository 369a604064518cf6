/*
 * pixel.c — the grayscale display pipeline in plain C: stored values →
 * Modality LUT → VOI LUT (or the fallback window) → MONOCHROME1 inversion →
 * 8 bits, and colour → luminance. Because every stage depends on the stored
 * value alone, a monochrome frame is rendered through one table indexed by
 * stored value (at most 2^16 entries). It knows nothing of DCMTK or files.
 */
#include "pixel.h"
#include "cxr_dicom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

pixel_photometric pixel_photometric_parse(const char *s) {
    static const struct { const char *name; pixel_photometric p; } tab[] = {
        {"MONOCHROME1", PHOTO_MONOCHROME1}, {"MONOCHROME2", PHOTO_MONOCHROME2},
        {"RGB", PHOTO_RGB}, {"YBR_FULL", PHOTO_YBR_FULL}, {"YBR_FULL_422", PHOTO_YBR_FULL_422},
        {"YBR_PARTIAL_422", PHOTO_YBR_PARTIAL_422}, {"YBR_PARTIAL_420", PHOTO_YBR_PARTIAL_420},
        {"YBR_ICT", PHOTO_YBR_ICT}, {"YBR_RCT", PHOTO_YBR_RCT},
    };
    for (size_t i = 0; i < sizeof tab / sizeof tab[0]; i++)
        if (!strcmp(s, tab[i].name)) return tab[i].p;
    return PHOTO_UNSUPPORTED;
}

int pixel_check_format(int ba, int bs, int hb, int pr, char *err, size_t errlen) {
    if (ba != 8 && ba != 16) {
        snprintf(err, errlen, "Bits Allocated %d not supported (8 or 16)", ba);
        return CXR_ERR_PIXEL_FORMAT;
    }
    if (bs < 1 || bs > ba) {
        snprintf(err, errlen, "Bits Stored %d invalid for Bits Allocated %d", bs, ba);
        return CXR_ERR_PIXEL_FORMAT;
    }
    if (hb < bs - 1 || hb >= ba) {
        snprintf(err, errlen, "High Bit %d invalid for Bits Stored %d / Allocated %d", hb, bs, ba);
        return CXR_ERR_PIXEL_FORMAT;
    }
    if (pr != 0 && pr != 1) {
        snprintf(err, errlen, "Pixel Representation %d invalid (0 or 1)", pr);
        return CXR_ERR_PIXEL_FORMAT;
    }
    return CXR_OK;
}

static double lut_lookup(const pixel_lut *l, double x) {
    double i = floor(x) - l->first;
    if (i <= 0) return l->data[0];
    if (i >= l->n - 1) return l->data[l->n - 1];
    return l->data[(int)i];
}

double pixel_modality(const pixel_frame *f, int32_t s) {
    if (f->mlut.n > 0) return lut_lookup(&f->mlut, s);
    if (f->has_rescale) return s * f->slope + f->intercept;
    return s;
}

double pixel_window(pixel_voi_function fn, double c, double w, double x) {
    switch (fn) {
    case VOI_LINEAR_EXACT:
        if (x <= c - w / 2) return 0.0;
        if (x > c + w / 2) return 1.0;
        return (x - c) / w + 0.5;
    case VOI_SIGMOID:
        return 1.0 / (1.0 + exp(-4.0 * (x - c) / w));
    case VOI_LINEAR:
    default:
        if (w < 1) w = 1; /* PS3.3: width >= 1 for LINEAR */
        if (x <= c - 0.5 - (w - 1) / 2) return 0.0;
        if (x > c - 0.5 + (w - 1) / 2) return 1.0;
        if (w == 1) return 1.0;
        return (x - (c - 0.5)) / (w - 1) + 0.5;
    }
}

int pixel_lut_effective_bits(const pixel_lut *l) {
    unsigned maxv = 0;
    for (int i = 0; i < l->n; i++)
        if (l->data[i] > maxv) maxv = l->data[i];
    int need = 1;
    while (need < 16 && (maxv >> need)) need++;
    return need < l->bits ? need : l->bits;
}

double pixel_voi_lut(const pixel_lut *l, int bits, double x) {
    return lut_lookup(l, x) / (double)((1u << bits) - 1u);
}

static uint8_t to8(double y) {
    if (!(y > 0)) return 0; /* also NaN */
    if (y >= 1) return 255;
    return (uint8_t)(y * 255.0 + 0.5);
}

static uint32_t raw_at(const pixel_frame *f, size_t i) {
    return f->bits_allocated == 8 ? ((const uint8_t *)f->data)[i] : ((const uint16_t *)f->data)[i];
}

static int32_t stored_at(const pixel_frame *f, size_t i) {
    uint32_t raw = raw_at(f, i);
    return f->clamp ? pixel_stored_clamped(raw, f->bits_allocated, f->bits_stored, f->pixel_rep)
                    : pixel_stored_value(raw, f->bits_stored, f->high_bit, f->pixel_rep);
}

typedef struct { double m; uint32_t n; } bin;

static int bin_cmp(const void *pa, const void *pb) {
    double a = ((const bin *)pa)->m, b = ((const bin *)pb)->m;
    return (a > b) - (a < b);
}

/* Fallback window: 0.5th..99.5th percentile of modality values, excluding the
 * lowest and highest value present (collimator blades and burned-out
 * background often saturate at an extreme). */
static void fallback_window(const uint32_t *hist, int nvals, int32_t base, const pixel_frame *f,
                            double *c, double *w) {
    bin *b = malloc((size_t)nvals * sizeof *b);
    int k = 0;
    double lo = 0, hi = 0;
    if (!b) { *c = 0; *w = 1; return; }
    for (int i = 0; i < nvals; i++)
        if (hist[i]) { b[k].m = pixel_modality(f, base + i); b[k].n = hist[i]; k++; }
    /* O(k log k): a decreasing Modality LUT (negative Rescale Slope) made the
     * former insertion sort quadratic, ~3 s for 65,536 distinct values */
    qsort(b, (size_t)k, sizeof *b, bin_cmp);
    int from = 0, to = k; /* [from, to) */
    if (k > 2) { from = 1; to = k - 1; }
    uint64_t total = 0;
    for (int i = from; i < to; i++) total += b[i].n;
    if (k > 0) {
        uint64_t lo_t = (uint64_t)(total * 0.005), hi_t = (uint64_t)(total * 0.995);
        uint64_t acc = 0;
        lo = b[from].m; hi = b[to - 1].m;
        int got_lo = 0;
        for (int i = from; i < to; i++) {
            acc += b[i].n;
            if (!got_lo && acc > lo_t) { lo = b[i].m; got_lo = 1; }
            if (acc >= hi_t) { hi = b[i].m; break; }
        }
    }
    free(b);
    if (hi <= lo) hi = lo + 1;
    *c = (lo + hi) / 2;
    *w = hi - lo;
}

static int render_color(const pixel_frame *f, uint8_t *out) {
    size_t n = (size_t)f->rows * f->cols;
    double maxv = (double)((1u << f->bits_stored) - 1u);
    int shift = f->high_bit + 1 - f->bits_stored;
    uint32_t mask = (1u << f->bits_stored) - 1u;
    for (size_t i = 0; i < n; i++) {
        uint32_t s0, s1, s2;
        if (f->photometric == PHOTO_YBR_FULL_422 || f->photometric == PHOTO_YBR_PARTIAL_422) {
            /* Y0 Y1 Cb Cr per pixel pair; only Y matters */
            size_t pair = i / 2;
            s0 = (raw_at(f, pair * 4 + (i & 1)) >> shift) & mask;
            s1 = s2 = 0;
        } else if (f->planar) {
            s0 = (raw_at(f, i) >> shift) & mask;
            s1 = (raw_at(f, i + n) >> shift) & mask;
            s2 = (raw_at(f, i + 2 * n) >> shift) & mask;
        } else {
            s0 = (raw_at(f, 3 * i) >> shift) & mask;
            s1 = (raw_at(f, 3 * i + 1) >> shift) & mask;
            s2 = (raw_at(f, 3 * i + 2) >> shift) & mask;
        }
        switch (f->photometric) {
        case PHOTO_RGB:
        case PHOTO_YBR_RCT:
        case PHOTO_YBR_ICT: /* OpenJPEG undoes the component transform */
            if (f->bits_stored == 8) /* Pillow's fixed-point "L" conversion */
                out[i] = (uint8_t)((s0 * 19595u + s1 * 38470u + s2 * 7471u + 0x8000u) >> 16);
            else
                out[i] = to8((0.299 * s0 + 0.587 * s1 + 0.114 * s2) / maxv);
            break;
        case PHOTO_YBR_PARTIAL_422:
            out[i] = to8((s0 / maxv * 255.0 - 16.0) / 219.0);
            break;
        default: /* YBR_FULL, YBR_FULL_422: Y is the luminance */
            out[i] = to8(s0 / maxv);
            break;
        }
    }
    return CXR_OK;
}

int pixel_render(const pixel_frame *f, uint8_t *out, pixel_report *rep, char *err, size_t errlen) {
    memset(rep, 0, sizeof *rep);
    int rc = pixel_check_format(f->bits_allocated, f->bits_stored, f->high_bit, f->pixel_rep, err, errlen);
    if (rc != CXR_OK) return rc;
    if (f->photometric != PHOTO_MONOCHROME1 && f->photometric != PHOTO_MONOCHROME2) {
        if (f->photometric == PHOTO_UNSUPPORTED || f->photometric == PHOTO_YBR_PARTIAL_420) {
            snprintf(err, errlen, "photometric interpretation not supported for rendering");
            return CXR_ERR_PHOTOMETRIC;
        }
        if (f->spp != 3) {
            snprintf(err, errlen, "colour image with %d samples per pixel (3 expected)", f->spp);
            return CXR_ERR_PIXEL_FORMAT;
        }
        rep->voi_used = CXR_VOI_IDENTITY;
        return render_color(f, out);
    }
    if (f->spp != 1) {
        snprintf(err, errlen, "monochrome image with %d samples per pixel (1 expected)", f->spp);
        return CXR_ERR_PIXEL_FORMAT;
    }
    int bs = f->bits_stored;
    int32_t base = f->pixel_rep ? -(int32_t)(1u << (bs - 1)) : 0;
    int nvals = 1 << bs;
    size_t n = (size_t)f->rows * f->cols;
    uint8_t *tab = malloc((size_t)nvals);
    uint32_t *hist = NULL;
    if (!tab) return CXR_ERR_NOMEM;

    rep->modality_applied = f->mlut.n > 0 ? 2 : (f->has_rescale && (f->slope != 1 || f->intercept != 0)) ? 1 : 0;
    int identity8 = bs == 8 && !f->pixel_rep && rep->modality_applied == 0;
    if (f->vlut.n > 0) {
        rep->voi_used = CXR_VOI_LUT;
        rep->vlut_bits_used = pixel_lut_effective_bits(&f->vlut);
    } else if (f->has_window && f->ww > 0) {
        rep->voi_used = CXR_VOI_WINDOW;
        rep->center = f->wc;
        rep->width = f->ww;
    } else if (identity8) {
        rep->voi_used = CXR_VOI_IDENTITY;
    } else {
        rep->voi_used = CXR_VOI_FALLBACK;
        hist = calloc((size_t)nvals, sizeof *hist);
        if (!hist) { free(tab); return CXR_ERR_NOMEM; }
        for (size_t i = 0; i < n; i++) hist[stored_at(f, i) - base]++;
        fallback_window(hist, nvals, base, f, &rep->center, &rep->width);
        free(hist);
    }
    rep->inverted = f->invert;
    for (int v = 0; v < nvals; v++) {
        double m = pixel_modality(f, base + v), y;
        switch (rep->voi_used) {
        case CXR_VOI_LUT: y = pixel_voi_lut(&f->vlut, rep->vlut_bits_used, m); break;
        case CXR_VOI_WINDOW: y = pixel_window(f->voi_func, f->wc, f->ww, m); break;
        case CXR_VOI_FALLBACK: y = pixel_window(VOI_LINEAR_EXACT, rep->center, rep->width, m); break;
        default: y = m / 255.0; break;
        }
        if (f->invert) y = 1.0 - y;
        tab[v] = to8(y);
    }
    /* one table indexed by the raw sample (2^bits_allocated entries): the
       shift, mask / clamp and sign extension are folded into it */
    uint32_t nraw = 1u << f->bits_allocated;
    uint8_t *rawtab = malloc(nraw);
    if (!rawtab) {
        free(tab);
        return CXR_ERR_NOMEM;
    }
    for (uint32_t r = 0; r < nraw; r++) {
        int32_t s = f->clamp ? pixel_stored_clamped(r, f->bits_allocated, bs, f->pixel_rep)
                             : pixel_stored_value(r, bs, f->high_bit, f->pixel_rep);
        rawtab[r] = tab[s - base];
    }
    if (f->bits_allocated == 8) {
        const uint8_t *p = f->data;
        for (size_t i = 0; i < n; i++) out[i] = rawtab[p[i]];
    } else {
        const uint16_t *p = f->data;
        for (size_t i = 0; i < n; i++) out[i] = rawtab[p[i]];
    }
    free(rawtab);
    free(tab);
    return CXR_OK;
}

typedef struct { int r0, r1, c0, c1; } box; /* [r0,r1) x [c0,c1) */

static double region_mean(const uint8_t *px, int cols, box b, double x0, double x1, double y0, double y1) {
    int h = b.r1 - b.r0, w = b.c1 - b.c0;
    int c0 = b.c0 + (int)(x0 * w), c1 = b.c0 + (int)(x1 * w);
    int r0 = b.r0 + (int)(y0 * h), r1 = b.r0 + (int)(y1 * h);
    uint64_t s = 0, k = 0;
    for (int r = r0; r < r1; r++)
        for (int c = c0; c < c1; c++) { s += px[(size_t)r * cols + c]; k++; }
    return k ? (double)s / (double)k / 255.0 : 0.0;
}

/* Uniform borders (padding, burned-out collimation): rows and columns whose
 * range is under 16 levels are trimmed before the regions are placed. */
static int line_varies(const uint8_t *px, int cols, int fixed, int is_row, int from, int to) {
    uint8_t lo = 255, hi = 0;
    for (int i = from; i < to; i++) {
        uint8_t v = is_row ? px[(size_t)fixed * cols + i] : px[(size_t)i * cols + fixed];
        if (v < lo) lo = v;
        if (v > hi) hi = v;
    }
    return hi - lo >= 16;
}

double pixel_polarity_score(const uint8_t *px, int rows, int cols) {
    box b = {0, rows, 0, cols};
    while (b.r0 < b.r1 && !line_varies(px, cols, b.r0, 1, 0, cols)) b.r0++;
    while (b.r1 > b.r0 && !line_varies(px, cols, b.r1 - 1, 1, 0, cols)) b.r1--;
    while (b.c0 < b.c1 && !line_varies(px, cols, b.c0, 0, 0, rows)) b.c0++;
    while (b.c1 > b.c0 && !line_varies(px, cols, b.c1 - 1, 0, 0, rows)) b.c1--;
    if (b.r1 - b.r0 < 8 || b.c1 - b.c0 < 8) b = (box){0, rows, 0, cols};
    double lungs = 0.5 * (region_mean(px, cols, b, 0.18, 0.35, 0.30, 0.70) +
                          region_mean(px, cols, b, 0.65, 0.82, 0.30, 0.70));
    double mediastinum = region_mean(px, cols, b, 0.45, 0.55, 0.30, 0.70);
    double abdomen = region_mean(px, cols, b, 0.30, 0.70, 0.88, 1.00);
    double spine = region_mean(px, cols, b, 0.45, 0.55, 0.10, 0.90);
    return (mediastinum + abdomen + spine) / 3.0 - lungs;
}
