/*
 * test_pixel.c — unit tests of the pixel math (dicom/pixel.c) and of the
 * preprocessing (dicom/preprocess.c) against naive twins and hand-computed
 * values from the PS3.3 C.11.2.1.2 formulas. No files, no DCMTK calls.
 */
#include "cxr_dicom.h"
#include "pixel.h"
#include "png_io.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#include "check.h"

#define NEAR(a, b, tol) (fabs((double)(a) - (double)(b)) <= (tol))

static uint32_t rng = 12345;
static uint32_t rnd(void) {
    rng = rng * 1664525u + 1013904223u;
    return rng >> 8;
}

/* ---------------------------------------------------------- stored values */

/* naive twin: pick bits one by one */
static int32_t naive_stored(uint32_t raw, int bs, int hb, int pr) {
    int64_t v = 0;
    for (int b = 0; b < bs; b++)
        if (raw & (1u << (hb - bs + 1 + b))) v |= (int64_t)1 << b;
    if (pr && (v & ((int64_t)1 << (bs - 1)))) v -= (int64_t)1 << bs;
    return (int32_t)v;
}

static void test_stored_values(void) {
    int bad = 0;
    for (int bs = 1; bs <= 16; bs++)
        for (int hb = bs - 1; hb < 16; hb++)
            for (int pr = 0; pr <= 1; pr++)
                for (int k = 0; k < 200; k++) {
                    uint32_t raw = rnd() & 0xffff;
                    if (pixel_stored_value(raw, bs, hb, pr) != naive_stored(raw, bs, hb, pr)) bad++;
                }
    CHECK(bad == 0, "stored value extraction differs from the naive twin in %d cases", bad);
    CHECK(pixel_stored_value(0x0fff, 12, 11, 1) == -1, "12-bit signed 0xfff must be -1");
    CHECK(pixel_stored_value(0xf800, 12, 11, 1) == -2048, "junk above high bit must be masked");
    CHECK(pixel_stored_value(0xfff0, 12, 15, 0) == 4095, "BS 12 HB 15: value in the upper bits");
}

/* ------------------------------------------------------------- VOI LUT */

static void test_windows(void) {
    /* LINEAR, c=100 w=51: edges at 74.5 and 124.5, centre value at 99.5 */
    CHECK(pixel_window(VOI_LINEAR, 100, 51, 74.5) == 0.0, "LINEAR low edge");
    CHECK(pixel_window(VOI_LINEAR, 100, 51, 74.6) > 0.0, "LINEAR just above low edge");
    CHECK(pixel_window(VOI_LINEAR, 100, 51, 124.6) == 1.0, "LINEAR above high edge");
    CHECK(NEAR(pixel_window(VOI_LINEAR, 100, 51, 99.5), 0.5, 1e-12), "LINEAR centre");
    CHECK(NEAR(pixel_window(VOI_LINEAR, 100, 51, 100), 0.51, 1e-12), "LINEAR c+0.5 -> 0.51");
    /* LINEAR_EXACT, c=100 w=50: edges at 75 and 125, exact centre */
    CHECK(pixel_window(VOI_LINEAR_EXACT, 100, 50, 75) == 0.0, "LINEAR_EXACT low edge");
    CHECK(NEAR(pixel_window(VOI_LINEAR_EXACT, 100, 50, 100), 0.5, 1e-12), "LINEAR_EXACT centre");
    CHECK(NEAR(pixel_window(VOI_LINEAR_EXACT, 100, 50, 112.5), 0.75, 1e-12), "LINEAR_EXACT 3/4");
    CHECK(pixel_window(VOI_LINEAR_EXACT, 100, 50, 125.01) == 1.0, "LINEAR_EXACT high edge");
    /* SIGMOID: 1/(1+exp(-4(x-c)/w)) */
    CHECK(NEAR(pixel_window(VOI_SIGMOID, 100, 50, 100), 0.5, 1e-12), "SIGMOID centre");
    CHECK(NEAR(pixel_window(VOI_SIGMOID, 100, 50, 125), 0.8807970779778823, 1e-12), "SIGMOID c+w/2");
    /* VOI LUT sequence: clamping and effective bits */
    uint16_t lut[4] = {0, 1000, 2000, 4095};
    pixel_lut l = {4, 10, 16, lut};
    CHECK(pixel_lut_effective_bits(&l) == 12, "LUT declared 16 bits with data < 4096 -> 12 bits");
    CHECK(pixel_voi_lut(&l, 12, 5) == 0.0, "LUT below first entry");
    CHECK(NEAR(pixel_voi_lut(&l, 12, 11), 1000.0 / 4095.0, 1e-12), "LUT middle entry");
    CHECK(pixel_voi_lut(&l, 12, 99) == 1.0, "LUT above last entry");
}

/* naive per-pixel rendering of a monochrome frame with rescale + window */
static uint8_t naive_render(const pixel_frame *f, uint32_t raw) {
    int32_t s = naive_stored(raw, f->bits_stored, f->high_bit, f->pixel_rep);
    double m = f->has_rescale ? s * f->slope + f->intercept : s;
    double c = f->wc, w = f->ww, y;
    if (m <= c - 0.5 - (w - 1) / 2) y = 0;
    else if (m > c - 0.5 + (w - 1) / 2) y = 1;
    else y = (m - (c - 0.5)) / (w - 1) + 0.5;
    if (f->invert) y = 1 - y;
    return (uint8_t)floor(y * 255 + 0.5);
}

static void test_render(void) {
    enum { R = 64, C = 80 };
    static uint16_t raw[R * C];
    for (int i = 0; i < R * C; i++) raw[i] = (uint16_t)rnd();
    pixel_frame f;
    memset(&f, 0, sizeof f);
    f.rows = R; f.cols = C; f.spp = 1;
    f.bits_allocated = 16; f.bits_stored = 12; f.high_bit = 13; f.pixel_rep = 1;
    f.data = raw;
    f.photometric = PHOTO_MONOCHROME1;
    f.has_rescale = 1; f.slope = 2.5; f.intercept = -100;
    f.has_window = 1; f.wc = 300; f.ww = 4000; f.voi_func = VOI_LINEAR;
    f.invert = 1;
    uint8_t out[R * C];
    pixel_report rep;
    char err[128];
    CHECK(pixel_render(&f, out, &rep, err, sizeof err) == CXR_OK, "render: %s", err);
    int bad = 0;
    for (int i = 0; i < R * C; i++)
        if (out[i] != naive_render(&f, raw[i])) bad++;
    CHECK(bad == 0, "table rendering differs from the naive twin at %d pixels", bad);
    CHECK(rep.voi_used == CXR_VOI_WINDOW && rep.modality_applied == 1 && rep.inverted, "report fields");

    /* 8-bit, no VOI, no rescale: identity */
    uint8_t raw8[R * C], out8[R * C];
    for (int i = 0; i < R * C; i++) raw8[i] = (uint8_t)rnd();
    memset(&f, 0, sizeof f);
    f.rows = R; f.cols = C; f.spp = 1; f.bits_allocated = 8; f.bits_stored = 8; f.high_bit = 7;
    f.data = raw8; f.photometric = PHOTO_MONOCHROME2;
    CHECK(pixel_render(&f, out8, &rep, err, sizeof err) == CXR_OK, "render 8-bit");
    CHECK(memcmp(raw8, out8, sizeof raw8) == 0 && rep.voi_used == CXR_VOI_IDENTITY, "8-bit identity");

    /* fallback window: a saturated collimator (value 0 and 4095) plus a
       uniform ramp 1000..1999 → window close to [1005, 1995] */
    static uint16_t fb[100 * 100];
    for (int i = 0; i < 100 * 100; i++) fb[i] = i < 3000 ? 0 : i < 4000 ? 4095 : (uint16_t)(1000 + (i - 4000) % 1000);
    memset(&f, 0, sizeof f);
    f.rows = 100; f.cols = 100; f.spp = 1; f.bits_allocated = 16; f.bits_stored = 12; f.high_bit = 11;
    f.data = fb; f.photometric = PHOTO_MONOCHROME2;
    uint8_t fbo[100 * 100];
    CHECK(pixel_render(&f, fbo, &rep, err, sizeof err) == CXR_OK, "render fallback");
    double lo = rep.center - rep.width / 2, hi = rep.center + rep.width / 2;
    CHECK(rep.voi_used == CXR_VOI_FALLBACK && NEAR(lo, 1005, 2) && NEAR(hi, 1995, 2),
          "fallback window [%g, %g], expected about [1005, 1995]", lo, hi);

    /* RGB 8-bit → Pillow's fixed-point luminance */
    uint8_t rgb[3 * 40 * 40], lum[40 * 40];
    for (int i = 0; i < 3 * 40 * 40; i++) rgb[i] = (uint8_t)rnd();
    memset(&f, 0, sizeof f);
    f.rows = 40; f.cols = 40; f.spp = 3; f.bits_allocated = 8; f.bits_stored = 8; f.high_bit = 7;
    f.data = rgb; f.photometric = PHOTO_RGB;
    CHECK(pixel_render(&f, lum, &rep, err, sizeof err) == CXR_OK, "render RGB");
    bad = 0;
    for (int i = 0; i < 40 * 40; i++) {
        double L = 0.299 * rgb[3 * i] + 0.587 * rgb[3 * i + 1] + 0.114 * rgb[3 * i + 2];
        if (fabs(L - lum[i]) > 0.51) bad++;
    }
    CHECK(bad == 0, "RGB luminance off by more than rounding at %d pixels", bad);

    /* format checks */
    CHECK(pixel_check_format(16, 17, 16, 0, err, sizeof err) == CXR_ERR_PIXEL_FORMAT, "BS > BA refused");
    CHECK(pixel_check_format(12, 12, 11, 0, err, sizeof err) == CXR_ERR_PIXEL_FORMAT, "BA 12 refused");
    CHECK(pixel_check_format(16, 12, 10, 0, err, sizeof err) == CXR_ERR_PIXEL_FORMAT, "HB < BS-1 refused");
}

/* ---------------------------------------------------------- preprocessing */

static void test_preprocess(void) {
    enum { R = 100, C = 50 };
    static uint8_t px[R * C];
    cxr_preproc s = cxr_preproc_default();
    s.size = 64;
    const cxr_interp interps[] = {CXR_INTERP_BICUBIC, CXR_INTERP_BILINEAR, CXR_INTERP_AREA};
    float *t = malloc(cxr_preproc_tensor_len(&s) * sizeof *t);
    /* constant image: every interpolation preserves the constant (weights sum to 1) */
    memset(px, 200, sizeof px);
    for (int k = 0; k < 3; k++) {
        s.interp = interps[k];
        s.policy = CXR_RESIZE_PAD;
        CHECK(cxr_plane_to_tensor(px, R, C, &s, t) == CXR_OK, "tensor");
        /* PAD: 100x50 → 64x32 centred at column 16 */
        int bad = 0;
        for (int c = 0; c < 3; c++)
            for (int y = 0; y < 64; y++)
                for (int x = 0; x < 64; x++) {
                    float v = t[(c * 64 + y) * 64 + x];
                    float want = (x >= 16 && x < 48) ? (200.0f / 255.0f - s.mean[c]) / s.std[c]
                                                     : (0.0f - s.mean[c]) / s.std[c];
                    if (!NEAR(v, want, 1e-4)) bad++;
                }
        CHECK(bad == 0, "pad geometry / constant preservation, interp %d: %d bad values", k, bad);
        s.policy = CXR_RESIZE_CROP;
        CHECK(cxr_plane_to_tensor(px, R, C, &s, t) == CXR_OK, "tensor crop");
        bad = 0;
        for (int i = 0; i < 64 * 64; i++)
            if (!NEAR(t[i], (200.0f / 255.0f - s.mean[0]) / s.std[0], 1e-4)) bad++;
        CHECK(bad == 0, "crop fills the whole output, interp %d", k);
    }
    /* same size, bicubic: identity */
    static uint8_t sq[64 * 64];
    for (int i = 0; i < 64 * 64; i++) sq[i] = (uint8_t)rnd();
    s.policy = CXR_RESIZE_STRETCH;
    s.interp = CXR_INTERP_BICUBIC;
    s.channels = 1;
    s.scale = 1.0f;
    s.mean[0] = 0;
    s.std[0] = 1;
    CHECK(cxr_plane_to_tensor(sq, 64, 64, &s, t) == CXR_OK, "tensor identity");
    int bad = 0;
    for (int i = 0; i < 64 * 64; i++)
        if (!NEAR(t[i], sq[i], 1e-3)) bad++;
    CHECK(bad == 0, "same-size bicubic must be the identity (%d bad)", bad);
    /* area downscale by 2 is the mean of 2x2 blocks */
    static uint8_t big[128 * 128];
    for (int i = 0; i < 128 * 128; i++) big[i] = (uint8_t)rnd();
    s.interp = CXR_INTERP_AREA;
    CHECK(cxr_plane_to_tensor(big, 128, 128, &s, t) == CXR_OK, "tensor area");
    bad = 0;
    for (int y = 0; y < 64; y++)
        for (int x = 0; x < 64; x++) {
            double m = (big[(2 * y) * 128 + 2 * x] + big[(2 * y) * 128 + 2 * x + 1] +
                        big[(2 * y + 1) * 128 + 2 * x] + big[(2 * y + 1) * 128 + 2 * x + 1]) / 4.0;
            if (!NEAR(t[y * 64 + x], m, 1e-3)) bad++;
        }
    CHECK(bad == 0, "area 2x downscale must equal 2x2 block means (%d bad)", bad);
    /* spec validation */
    char err[128];
    s.channels = 2;
    CHECK(cxr_preproc_check(&s, err, sizeof err) == CXR_ERR_ARG, "channels 2 refused");
    s.channels = 1;
    s.std[0] = 0;
    CHECK(cxr_preproc_check(&s, err, sizeof err) == CXR_ERR_ARG, "std 0 refused");
    free(t);
}

/* ------------------------------------------------------ polarity and PNG */

static void phantom(uint8_t *px, int rows, int cols) {
    for (int y = 0; y < rows; y++)
        for (int x = 0; x < cols; x++) {
            double u = (x + 0.5) / cols - 0.5, v = (y + 0.5) / rows - 0.5;
            double val = 30;                                            /* air */
            if (u * u / 0.21 + v * v / 0.3 < 1) val = 170;               /* body */
            if ((u + 0.2) * (u + 0.2) / 0.012 + (v + 0.03) * (v + 0.03) / 0.07 < 1) val = 60; /* lungs */
            if ((u - 0.2) * (u - 0.2) / 0.012 + (v + 0.03) * (v + 0.03) / 0.07 < 1) val = 60;
            if (v > 0.32) val = 190;                                    /* abdomen */
            px[(size_t)y * cols + x] = (uint8_t)(val + (rnd() % 9));
        }
}

static void test_polarity_and_png(void) {
    enum { R = 300, C = 260 };
    static uint8_t px[R * C], inv[R * C];
    phantom(px, R, C);
    for (int i = 0; i < R * C; i++) inv[i] = (uint8_t)(255 - px[i]);
    double s = pixel_polarity_score(px, R, C), si = pixel_polarity_score(inv, R, C);
    CHECK(s > 0.15, "phantom polarity score %.3f should be clearly positive", s);
    CHECK(si < -0.15, "inverted phantom polarity score %.3f should be clearly negative", si);

    char path[] = "/tmp/cxr_test_pixel_XXXXXX";
    int fd = mkstemp(path);
    CHECK(fd >= 0, "mkstemp");
    if (fd < 0) return;
    close(fd);
    char err[CXR_ERRMSG_MAX];
    CHECK(png_write_gray8(path, px, R, C, err, sizeof err) == CXR_OK, "png write: %s", err);
    cxr_image *img = NULL;
    cxr_ingest_params p = cxr_ingest_params_default();
    int rc = cxr_image_load_file(path, &p, &img, err, sizeof err);
    CHECK(rc == CXR_OK, "png load: %s", err);
    if (rc == CXR_OK) {
        const cxr_meta *m = cxr_image_meta(img);
        CHECK(m->out_rows == R && m->out_cols == C, "png size");
        CHECK(memcmp(cxr_image_pixels(img), px, sizeof px) == 0, "8-bit PNG round trip must be exact");
        CHECK(!m->inverted && !m->polarity_from_content, "phantom PNG must not be flipped");
        cxr_image_free(img);
    }
    /* the inverted phantom is flipped back from its content */
    CHECK(png_write_gray8(path, inv, R, C, err, sizeof err) == CXR_OK, "png write");
    rc = cxr_image_load_file(path, &p, &img, err, sizeof err);
    CHECK(rc == CXR_OK, "inverted png load: %s", err);
    if (rc == CXR_OK) {
        const cxr_meta *m = cxr_image_meta(img);
        CHECK(m->polarity_from_content && m->n_warnings > 0, "inverted PNG must be flagged and flipped");
        CHECK(memcmp(cxr_image_pixels(img), px, sizeof px) == 0, "flipped plane equals the original");
        cxr_image_free(img);
    }
    p.polarity = CXR_POLARITY_HEADER;
    rc = cxr_image_load_file(path, &p, &img, err, sizeof err);
    if (rc == CXR_OK) {
        const cxr_meta *m = cxr_image_meta(img);
        CHECK(!m->polarity_from_content && m->n_warnings > 0, "trust-header: warned, not flipped");
        cxr_image_free(img);
    }
    unlink(path);
    cxr_image_free(NULL); /* no-op */
}

int main(void) {
    test_stored_values();
    test_windows();
    test_render();
    test_preprocess();
    test_polarity_and_png();
    return CHECK_SUMMARY();
}
