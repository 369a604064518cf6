/*
 * evidence.c — the evidence map back on the image: grid-to-pixel geometry
 * (the inverse of the model's pad / crop / stretch), the left/right split
 * used for laterality, and the heatmap overlay PNG written to memory with
 * libpng. It must not read files, know the model, or print.
 */
#include "evidence.h"
#include "cxr_dicom.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void evidence_geometry_init(evidence_geometry *g, int rows, int cols, int size, int policy, int grid) {
    memset(g, 0, sizeof *g);
    g->rows = rows;
    g->cols = cols;
    g->size = size;
    g->grid = grid > 0 ? grid : 1;
    if (policy == 2) { /* stretch */
        g->rh = g->rw = size;
    } else if (policy == 1) { /* crop: short side to size */
        int sht = rows < cols ? rows : cols;
        g->rh = lround((double)rows * size / sht);
        g->rw = lround((double)cols * size / sht);
        g->oy = -floor((g->rh - size) / 2);
        g->ox = -floor((g->rw - size) / 2);
    } else { /* pad: long side to size */
        int lng = rows > cols ? rows : cols;
        g->rh = lround((double)rows * size / lng);
        g->rw = lround((double)cols * size / lng);
        if (g->rh < 1) g->rh = 1;
        if (g->rw < 1) g->rw = 1;
        g->oy = floor((size - g->rh) / 2);
        g->ox = floor((size - g->rw) / 2);
    }
}

float evidence_at(const float *cells, const evidence_geometry *g, double y, double x) {
    double cell = (double)g->size / g->grid;
    double ty = g->oy + (y + 0.5) * g->rh / g->rows, tx = g->ox + (x + 0.5) * g->rw / g->cols;
    double cy = ty / cell - 0.5, cx = tx / cell - 0.5;
    int n = g->grid;
    if (cy < 0) cy = 0;
    if (cx < 0) cx = 0;
    if (cy > n - 1) cy = n - 1;
    if (cx > n - 1) cx = n - 1;
    int y0 = (int)cy, x0 = (int)cx;
    int y1 = y0 + 1 < n ? y0 + 1 : y0, x1 = x0 + 1 < n ? x0 + 1 : x0;
    double fy = cy - y0, fx = cx - x0;
    double a = cells[y0 * n + x0] * (1 - fx) + cells[y0 * n + x1] * fx;
    double b = cells[y1 * n + x0] * (1 - fx) + cells[y1 * n + x1] * fx;
    return (float)(a * (1 - fy) + b * fy);
}

#define SAMPLES 64 /* sample points per side for the split */

static int cmp_desc(const void *a, const void *b) {
    float x = *(const float *)a, y = *(const float *)b;
    return (x < y) - (x > y);
}

float evidence_left_share(const float *cells, const evidence_geometry *g, float *concentration) {
    float vals[SAMPLES * SAMPLES], pos[SAMPLES * SAMPLES]; /* 2 x 16 KiB */
    double mean = 0;
    for (int i = 0; i < SAMPLES; i++)
        for (int j = 0; j < SAMPLES; j++) {
            float e = evidence_at(cells, g, (i + 0.5) * g->rows / SAMPLES, (j + 0.5) * g->cols / SAMPLES);
            vals[i * SAMPLES + j] = e;
            mean += e;
        }
    mean /= SAMPLES * SAMPLES;
    double left = 0, total = 0; /* patient left = image right (columns ≥ half) */
    for (int i = 0; i < SAMPLES; i++)
        for (int j = 0; j < SAMPLES; j++) {
            double e = vals[i * SAMPLES + j] - mean;
            pos[i * SAMPLES + j] = e > 0 ? (float)e : 0.0f;
            if (e <= 0) continue;
            total += e;
            if (j >= SAMPLES / 2) left += e;
        }
    if (concentration) *concentration = NAN;
    if (!(total > 1e-9)) return NAN;
    if (concentration) { /* share of the positive evidence in the strongest tenth of the image */
        qsort(pos, SAMPLES * SAMPLES, sizeof pos[0], cmp_desc);
        double top = 0;
        for (int k = 0; k < SAMPLES * SAMPLES / 10; k++) top += pos[k];
        *concentration = (float)(top / total);
    }
    return (float)(left / total);
}

/* blue → cyan → yellow → red */
static void ramp(float t, float rgb[3]) {
    if (t < 0) t = 0;
    if (t > 1) t = 1;
    static const float k[4][3] = {{0, 0, 255}, {0, 255, 255}, {255, 255, 0}, {255, 0, 0}};
    float s = t * 3;
    int i = (int)s;
    if (i > 2) i = 2;
    float f = s - i;
    for (int c = 0; c < 3; c++) rgb[c] = k[i][c] * (1 - f) + k[i + 1][c] * f;
}

/* ------------------------------------------------------------ legend */

/* A 3 x 5 pixel font for the legend, drawn here for this project: each glyph
 * is 15 bits, row by row from the top, the high bit of a row at the left. */
static const struct {
    char c;
    uint16_t bits;
} FONT[] = {
    {' ', 0x0000}, {'\'', 0x0012}, {'(', 0x2922}, {')', 0x224a}, {',', 0x4400}, {'-', 0x01c0}, {'.', 0x2000},
    {'/', 0x4889}, {'0', 0x7b6f}, {'1', 0x74b2}, {'2', 0x788e}, {'3', 0x628e}, {'4', 0x13ed}, {'5', 0x63a7},
    {'6', 0x7be3}, {'7', 0x248f}, {'8', 0x7bef}, {'9', 0x63ef}, {':', 0x0410}, {'?', 0x208e}, {'A', 0x5bea},
    {'B', 0x6bae}, {'C', 0x3923}, {'D', 0x6b6e}, {'E', 0x79a7}, {'F', 0x49a7}, {'G', 0x3b63}, {'H', 0x5bed},
    {'I', 0x7497}, {'J', 0x2a49}, {'K', 0x5bad}, {'L', 0x7924}, {'M', 0x5bfd}, {'N', 0x5b6e}, {'O', 0x2b6a},
    {'P', 0x49ae}, {'Q', 0x3d6a}, {'R', 0x5bae}, {'S', 0x62a3}, {'T', 0x2497}, {'U', 0x7b6d}, {'V', 0x2b6d},
    {'W', 0x5fed}, {'X', 0x5aad}, {'Y', 0x24ad}, {'Z', 0x788f}, {'_', 0x7000}};

static uint16_t glyph(char c) {
    if (c >= 'a' && c <= 'z') c = (char)(c - 32);
    for (size_t i = 0; i < sizeof FONT / sizeof FONT[0]; i++)
        if (FONT[i].c == c) return FONT[i].bits;
    return glyph('?');
}

static void fill(uint8_t *rgb, int w, int h, int x0, int y0, int x1, int y1, const uint8_t c[3]) {
    for (int y = y0 < 0 ? 0 : y0; y < y1 && y < h; y++)
        for (int x = x0 < 0 ? 0 : x0; x < x1 && x < w; x++) memcpy(rgb + ((size_t)y * w + x) * 3, c, 3);
}

/* Text at (x, y), each font pixel s x s image pixels; returns the x after it. */
static int text(uint8_t *rgb, int w, int h, int x, int y, int s, const char *t, const uint8_t c[3]) {
    for (; *t && x + 3 * s <= w; t++, x += 4 * s) {
        uint16_t b = glyph((unsigned char)*t < 0x80 ? *t : '?');
        for (int r = 0; r < 5; r++)
            for (int k = 0; k < 3; k++)
                if (b >> (r * 3 + 2 - k) & 1) fill(rgb, w, h, x + k * s, y + r * s, x + (k + 1) * s, y + (r + 1) * s, c);
        if ((unsigned char)*t >= 0x80) /* one '?' per UTF-8 character */
            while ((t[1] & 0xC0) == 0x80) t++;
    }
    return x;
}

/* The legend along the bottom: "EVIDENCE: <label>" and the colour scale
 * from the map's mean (where the overlay starts) to its maximum. */
static void legend(uint8_t *rgb, int w, int h, const char *label) {
    int s = w >= 384 ? 2 : 1, band = 9 * s;
    if (h < 4 * band || w < 40 * s) return; /* too small to carry one */
    static const uint8_t black[3] = {0, 0, 0}, white[3] = {255, 255, 255};
    fill(rgb, w, h, 0, h - band, w, h, black);
    int y = h - band + 2 * s, bar = w / 4, bx = w - bar - 16 * s; /* "MAX" after the bar */
    int room = (bx - 22 * s) / (4 * s);                            /* characters before "MEAN" */
    char t[96];
    snprintf(t, sizeof t, "EVIDENCE: %s", label && *label ? label : "?");
    if (room >= 0 && room < (int)sizeof t) t[room] = '\0';
    text(rgb, w, h, 2 * s, y, s, t, white);
    text(rgb, w, h, bx - 18 * s, y, s, "MEAN", white);
    for (int x = 0; x < bar; x++) {
        float col[3];
        ramp((float)x / (bar > 1 ? bar - 1 : 1), col);
        const uint8_t c[3] = {(uint8_t)col[0], (uint8_t)col[1], (uint8_t)col[2]};
        fill(rgb, w, h, bx + x, y, bx + x + 1, y + 5 * s, c);
    }
    text(rgb, w, h, bx + bar + 2 * s, y, s, "MAX", white);
}

/* One axis of evidence_at for the n output pixels of an overlay at scale sc:
 * the two grid cells each pixel falls between and the weight of the second
 * (the same arithmetic, done once per row and column instead of per pixel). */
typedef struct { int *i0, *i1; float *f; } axis;

static int axis_init(axis *a, int n, double sc, double off, double r, int src, int grid, double cell) {
    a->i0 = malloc((size_t)n * sizeof *a->i0);
    a->i1 = malloc((size_t)n * sizeof *a->i1);
    a->f = malloc((size_t)n * sizeof *a->f);
    if (!a->i0 || !a->i1 || !a->f) return -1;
    for (int p = 0; p < n; p++) {
        double s = (p + 0.5) / sc - 0.5; /* source pixel */
        double c = (off + (s + 0.5) * r / src) / cell - 0.5;
        if (c < 0) c = 0;
        if (c > grid - 1) c = grid - 1;
        a->i0[p] = (int)c;
        a->i1[p] = a->i0[p] + 1 < grid ? a->i0[p] + 1 : a->i0[p];
        a->f[p] = (float)(c - a->i0[p]);
    }
    return 0;
}

static void axis_free(axis *a) {
    free(a->i0);
    free(a->i1);
    free(a->f);
}

int evidence_overlay_png(const uint8_t *px, const evidence_geometry *g, const float *cells, int max_side,
                         const char *label, uint8_t **png, size_t *png_len, char *err, size_t errlen) {
    *png = NULL;
    *png_len = 0;
    if (!px || g->rows < 1 || g->cols < 1 || max_side < 1) {
        snprintf(err, errlen, "no image");
        return CXR_ERR_ARG;
    }
    int lng = g->rows > g->cols ? g->rows : g->cols;
    double sc = lng > max_side ? (double)max_side / lng : 1.0;
    int h = (int)lround(g->rows * sc), w = (int)lround(g->cols * sc);
    if (h < 1) h = 1;
    if (w < 1) w = 1;
    /* map range: mean .. max of the evidence over the image */
    float lo = 0, hi = -1e30f;
    double mean = 0;
    for (int i = 0; i < SAMPLES; i++)
        for (int j = 0; j < SAMPLES; j++) {
            float e = evidence_at(cells, g, (i + 0.5) * g->rows / SAMPLES, (j + 0.5) * g->cols / SAMPLES);
            mean += e;
            if (e > hi) hi = e;
        }
    lo = (float)(mean / (SAMPLES * SAMPLES));
    float span = hi - lo > 1e-6f ? hi - lo : 1e-6f;
    uint8_t *rgb = malloc((size_t)h * w * 3);
    int *sx = malloc((size_t)(w + 1) * sizeof *sx);
    axis ay = {0}, ax = {0};
    double cell = (double)g->size / g->grid;
    if (!rgb || !sx || axis_init(&ay, h, sc, g->oy, g->rh, g->rows, g->grid, cell) ||
        axis_init(&ax, w, sc, g->ox, g->rw, g->cols, g->grid, cell)) {
        free(rgb);
        free(sx);
        axis_free(&ay);
        axis_free(&ax);
        return CXR_ERR_NOMEM;
    }
    for (int x = 0; x <= w; x++) sx[x] = (int)((double)x / w * g->cols);
    float lut[256][4]; /* ramp colour and alpha at t = i / 255 */
    for (int i = 0; i < 256; i++) {
        ramp(i / 255.0f, lut[i]);
        lut[i][3] = 0.6f * i / 255.0f;
    }
    const int n = g->grid;
    for (int y = 0; y < h; y++) {
        int sy0 = (int)((double)y / h * g->rows), sy1 = (int)((double)(y + 1) / h * g->rows);
        if (sy1 <= sy0) sy1 = sy0 + 1;
        const float *r0 = cells + ay.i0[y] * n, *r1 = cells + ay.i1[y] * n;
        float fy = ay.f[y];
        for (int x = 0; x < w; x++) {
            int sx0 = sx[x], sx1 = sx[x + 1] > sx0 ? sx[x + 1] : sx0 + 1;
            unsigned sum = 0, cnt = 0;
            for (int yy = sy0; yy < sy1 && yy < g->rows; yy += 1 + (sy1 - sy0) / 4)
                for (int xx = sx0; xx < sx1 && xx < g->cols; xx += 1 + (sx1 - sx0) / 4) {
                    sum += px[(size_t)yy * g->cols + xx];
                    cnt++;
                }
            float gray = cnt ? (float)sum / cnt : 0;
            float fx = ax.f[x];
            float a = r0[ax.i0[x]] * (1 - fx) + r0[ax.i1[x]] * fx, b = r1[ax.i0[x]] * (1 - fx) + r1[ax.i1[x]] * fx;
            float t = (a * (1 - fy) + b * fy - lo) / span;
            const float *col = lut[t <= 0 ? 0 : t >= 1 ? 255 : (int)(t * 255 + 0.5f)];
            float alpha = col[3];
            uint8_t *o = rgb + ((size_t)y * w + x) * 3;
            for (int c = 0; c < 3; c++) o[c] = (uint8_t)(gray * (1 - alpha) + col[c] * alpha + 0.5f);
        }
    }
    free(sx);
    axis_free(&ay);
    axis_free(&ax);
    legend(rgb, w, h, label);
    /* zlib level 1: a 512-px overlay encodes in a few ms instead of ~15 */
    int rc = cxr_png_encode(rgb, h, w, 3, 1, png, png_len, err, errlen);
    free(rgb);
    return rc;
}
