/*
 * test_codec_check.c — the compressed-frame checks (dicom/codec_check.c)
 * on hand-built byte strings, every prefix and many byte flips of them
 * (each must end, in bounded time, without reading past the buffer); the
 * decode deadline (dicom/deadline.c) on a function that never returns; and,
 * given the fuzz regression file that hangs DCMTK 3.6.7
 * (tests/fuzz/regressions/fuzz_ingest/timeout-dcmtk-jpeg-tem-bitdepth-scan),
 * that the check refuses it and that the deadline ends DCMTK's own loop
 * when the check is bypassed (internal shim option, tests only).
 *
 * Usage: test_codec_check [HANG_FILE]
 */
#include "codec_check.h"
#include "cxr_dicom.h"
#include "dcmtk_shim.h"
#include "deadline.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "check.h"

static double now_s(void) {
    struct timespec t;
    clock_gettime(CLOCK_MONOTONIC, &t);
    return (double)t.tv_sec + t.tv_nsec / 1e9;
}

typedef struct { uint8_t b[4096]; size_t n; } buf;

static void put(buf *x, const void *p, size_t n) {
    memcpy(x->b + x->n, p, n);
    x->n += n;
}
static void put8(buf *x, unsigned v) { x->b[x->n++] = (uint8_t)v; }
static void put16(buf *x, unsigned v) { put8(x, v >> 8); put8(x, v & 255); }
static void put32(buf *x, uint32_t v) { put16(x, v >> 16); put16(x, v & 0xffff); }

/* A structurally valid 8-bit baseline frame, 64 x 48, one component. */
static buf jpeg_baseline(int scans, int tem_after_soi) {
    buf x = {{0}, 0};
    put16(&x, 0xffd8);
    if (tem_after_soi) put16(&x, 0xff01);
    put16(&x, 0xffe0); put16(&x, 16); put(&x, "JFIF\0\1\1\0\0\1\0\1\0\0", 14);
    put16(&x, 0xffdb); put16(&x, 67); put8(&x, 0);
    for (int i = 0; i < 64; i++) put8(&x, 1);
    put16(&x, 0xffc0); put16(&x, 11); put8(&x, 8); put16(&x, 48); put16(&x, 64); put8(&x, 1);
    put8(&x, 1); put8(&x, 0x11); put8(&x, 0);
    put16(&x, 0xffc4); put16(&x, 2 + 17 + 1); put8(&x, 0x00); put8(&x, 1);
    for (int i = 1; i < 16; i++) put8(&x, 0);
    put8(&x, 0);
    for (int s = 0; s < scans; s++) {
        put16(&x, 0xffda); put16(&x, 8); put8(&x, 1); put8(&x, 1); put8(&x, 0x00);
        put8(&x, 0); put8(&x, 63); put8(&x, 0);
        put8(&x, 0x12); put8(&x, 0xff); put8(&x, 0x00); put8(&x, 0x34); /* entropy data, one stuffed FF */
    }
    put16(&x, 0xffd9);
    return x;
}

static const codec_spec BASE = {CODEC_JPEG_BASELINE, 48, 64, 1, 8, 8};

static int run(const codec_spec *s, const buf *x, char *err) {
    char warn[CXR_WARNING_MAX];
    return codec_check(s, x->b, x->n, err, CXR_ERRMSG_MAX, warn, sizeof warn);
}

static void test_jpeg(void) {
    char err[CXR_ERRMSG_MAX];
    buf ok = jpeg_baseline(1, 0);
    CHECK(run(&BASE, &ok, err) == CXR_OK, "valid baseline frame refused: %s", err);

    buf tem = jpeg_baseline(1, 1);
    CHECK(run(&BASE, &tem, err) == CXR_ERR_CORRUPT && strstr(err, "TEM marker (FF01) at byte 2"),
          "TEM after SOI: %s", err);

    buf many = jpeg_baseline(JPEG_MAX_SCANS + 1, 0);
    CHECK(run(&BASE, &many, err) == CXR_ERR_CORRUPT && strstr(err, "scans"), "%d scans: %s", JPEG_MAX_SCANS + 1, err);

    buf x = ok;
    x.b[x.n - 1] = 0; /* EOI gone */
    CHECK(run(&BASE, &x, err) == CXR_ERR_CORRUPT && strstr(err, "without EOI"), "no EOI: %s", err);

    x = ok;
    x.b[4] = 0xff; x.b[5] = 0xf0; /* APP0 length 65520 */
    CHECK(run(&BASE, &x, err) == CXR_ERR_CORRUPT && strstr(err, "declares 65520 bytes"), "APP0 overrun: %s", err);

    x = ok;
    x.b[4] = 0; x.b[5] = 1; /* APP0 length 1 */
    CHECK(run(&BASE, &x, err) == CXR_ERR_CORRUPT && strstr(err, "at least 2"), "APP0 length 1: %s", err);

    codec_spec big = BASE;
    big.rows = 512;
    CHECK(run(&big, &ok, err) == CXR_ERR_CORRUPT && strstr(err, "DICOM header says 64x512"), "dims: %s", err);
    codec_spec sixteen = BASE;
    sixteen.bits_allocated = 16;
    CHECK(run(&sixteen, &ok, err) == CXR_ERR_CORRUPT && strstr(err, "Bits Allocated is 16"), "8-bit in 16: %s", err);
    codec_spec ls = BASE;
    ls.kind = CODEC_JPEGLS;
    CHECK(run(&ls, &ok, err) == CXR_ERR_CORRUPT && strstr(err, "JPEG-LS"), "JPEG under JPEG-LS: %s", err);

    /* every prefix: refused (no EOI), never read past its end (ASan) */
    int bad = 0;
    for (size_t n = 0; n < ok.n; n++) {
        buf y = ok;
        y.n = n;
        if (run(&BASE, &y, err) == CXR_OK) bad++;
    }
    CHECK(bad == 0, "%d prefixes of the valid frame accepted", bad);

    /* every single byte set to every interesting value: ends, quickly */
    static const uint8_t vals[] = {0x00, 0x01, 0x02, 0x7f, 0xc0, 0xc3, 0xc4, 0xd8, 0xd9, 0xda, 0xf7, 0xf8, 0xfe, 0xff};
    double t0 = now_s();
    long n_ok = 0;
    for (size_t i = 0; i < ok.n; i++)
        for (size_t v = 0; v < sizeof vals; v++) {
            buf y = ok;
            y.b[i] = vals[v];
            if (run(&BASE, &y, err) == CXR_OK) n_ok++;
        }
    double dt = now_s() - t0;
    CHECK(dt < 2.0, "%zu mutants took %.2f s", ok.n * sizeof vals, dt);
    printf("jpeg: %zu single-byte mutants in %.3f s, %ld still pass\n", ok.n * sizeof vals, dt, n_ok);
}

static void test_jpegls(void) {
    char err[CXR_ERRMSG_MAX];
    codec_spec s = {CODEC_JPEGLS, 48, 64, 1, 16, 12};
    buf x = {{0}, 0};
    put16(&x, 0xffd8);
    put16(&x, 0xfff7); put16(&x, 11); put8(&x, 12); put16(&x, 48); put16(&x, 64); put8(&x, 1);
    put8(&x, 1); put8(&x, 0x11); put8(&x, 0);
    size_t lse = x.n;
    put16(&x, 0xfff8); put16(&x, 13); put8(&x, 1);
    put16(&x, 4095); put16(&x, 18); put16(&x, 67); put16(&x, 276); put16(&x, 64);
    put16(&x, 0xffda); put16(&x, 8); put8(&x, 1); put8(&x, 1); put8(&x, 0); put8(&x, 0); put8(&x, 0); put8(&x, 0);
    put8(&x, 0x55); put8(&x, 0xff); put8(&x, 0x7f); put8(&x, 0x12);
    put16(&x, 0xffd9);
    CHECK(run(&s, &x, err) == CXR_OK, "valid JPEG-LS frame refused: %s", err);
    buf y = x;
    y.b[lse + 4] = 2; /* mapping table */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "mapping table"), "LSE id 2: %s", err);
    y = x;
    y.b[lse + 5] = 0x20; /* MAXVAL 8191 for 12 bits */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "MAXVAL"), "MAXVAL: %s", err);
    y = x;
    y.b[lse + 7] = 0x10; /* T1 4114 > MAXVAL */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "T1"), "T1: %s", err);
    y = x;
    y.b[y.n - 8] = 5; /* ILV 5 */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "interleave"), "ILV: %s", err);
}

static void test_j2k(void) {
    char err[CXR_ERRMSG_MAX];
    codec_spec s = {CODEC_J2K, 48, 64, 1, 16, 12};
    buf x = {{0}, 0};
    put16(&x, 0xff4f);
    put16(&x, 0xff51); put16(&x, 41); put16(&x, 0);
    put32(&x, 64); put32(&x, 48); put32(&x, 0); put32(&x, 0);
    put32(&x, 64); put32(&x, 48); put32(&x, 0); put32(&x, 0);
    put16(&x, 1); put8(&x, 11); put8(&x, 1); put8(&x, 1);
    put16(&x, 0xff52); put16(&x, 12); put8(&x, 0); put8(&x, 0); put16(&x, 1); put8(&x, 0);
    put8(&x, 5); put8(&x, 4); put8(&x, 4); put8(&x, 0); put8(&x, 1);
    put16(&x, 0xff5c); put16(&x, 4); put8(&x, 0x40); put8(&x, 0x48);
    put16(&x, 0xff90); put16(&x, 10); put16(&x, 0); put32(&x, 0); put8(&x, 0); put8(&x, 1);
    put16(&x, 0xff93);
    put16(&x, 0xffd9);
    CHECK(run(&s, &x, err) == CXR_OK, "valid J2K main header refused: %s", err);
    buf y = x;
    y.b[3] = 0x52; /* SIZ replaced */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "SIZ"), "no SIZ: %s", err);
    y = x;
    y.b[43] = 0; /* XRsiz 0 */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "sub-sampling"), "XRsiz 0: %s", err);
    y = x;
    y.b[24] = 0; y.b[25] = 0; y.b[26] = 0; y.b[27] = 1; /* XTsiz 1 */
    y.b[28] = 0; y.b[29] = 0; y.b[30] = 0; y.b[31] = 1; /* YTsiz 1: 3072 tiles, under the cap */
    CHECK(run(&s, &y, err) == CXR_OK, "3072 tiles refused: %s", err);
    codec_spec wide = s;
    wide.cols = 8192;
    y.b[10] = 0x20; y.b[11] = 0x00; /* Xsiz 8192: 393,216 one-pixel tiles */
    CHECK(run(&wide, &y, err) == CXR_ERR_DIMENSIONS, "393216 tiles: %s", err);
    y = x;
    y.b[54] = 40; /* COD: 40 decomposition levels */
    CHECK(run(&s, &y, err) == CXR_ERR_CORRUPT && strstr(err, "levels"), "40 levels: %s", err);
    int bad = 0;
    for (size_t n = 0; n + 4 < x.n; n++) { /* cut before SOT: refused */
        y = x;
        y.n = n;
        if (run(&s, &y, err) == CXR_OK) bad++;
    }
    CHECK(bad == 0, "%d cut main headers accepted", bad);
}

static void test_rle(void) {
    char err[CXR_ERRMSG_MAX];
    codec_spec s = {CODEC_RLE, 4, 4, 1, 8, 8};
    buf x = {{0}, 0};
    uint8_t h[64] = {1, 0, 0, 0, 64, 0, 0, 0};
    put(&x, h, 64);
    put8(&x, (uint8_t)-15); put8(&x, 7); /* 16 x 7 */
    CHECK(run(&s, &x, err) == CXR_OK, "valid RLE refused: %s", err);
    x.b[0] = 2;
    CHECK(run(&s, &x, err) == CXR_ERR_CORRUPT && strstr(err, "2 segments"), "nseg: %s", err);
}

/* ----------------------------------------------------------- deadline */

static volatile int spin_forever = 1;
static void spin(void *arg) {
    (void)arg;
    while (spin_forever) {}
}
static void quick(void *arg) { *(int *)arg = 42; }

static void test_deadline(void) {
    int v = 0;
    CHECK(deadline_run(quick, &v, 1000) == CXR_OK && v == 42, "quick job");
    CHECK(cxr_decode_tainted() == 0, "tainted before any timeout");
    double t0 = now_s();
    int rc = deadline_run(spin, NULL, 200);
    double dt = now_s() - t0;
    CHECK(rc == CXR_ERR_DECODE_TIMEOUT && dt >= 0.19 && dt < 1.5, "spinning job: %s after %.3f s", cxr_strerror(rc), dt);
    CHECK(cxr_decode_tainted() == 1, "tainted %d after one timeout", cxr_decode_tainted());
    CHECK(!strcmp(cxr_strerror(CXR_ERR_DECODE_TIMEOUT), "decode-timeout"), "name");
    spin_forever = 0; /* let it go: its control block is freed by its own release */
}

/* ----------------------------------------- the DCMTK hang, end to end */

static void test_dcmtk_hang(const char *path) {
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        printf("skip: %s not readable\n", path);
        return;
    }
    static uint8_t data[1 << 16];
    size_t n = fread(data, 1, sizeof data, fp);
    fclose(fp);
    char err[CXR_ERRMSG_MAX];
    cxr_image *img = NULL;
    cxr_ingest_params p = cxr_ingest_params_default();
    p.not_chest = p.small = CXR_CHECK_IGNORE;
    double t0 = now_s();
    int rc = cxr_image_load_buffer(data, n, &p, &img, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == CXR_ERR_CORRUPT && strstr(err, "TEM marker (FF01)"), "hang file: %s: %s", cxr_strerror(rc), err);
    CHECK(dt < 2.0, "hang file refused after %.2f s", dt);
    printf("hang file: %s: %s (%.3f s)\n", cxr_strerror(rc), err, dt);
    cxr_image_free(img);

    /* the same frame handed to DCMTK unchecked: the deadline ends it */
    int before = cxr_decode_tainted();
    cxr_meta m;
    shim_info in;
    shim_ds *ds = NULL;
    memset(&m, 0, sizeof m);
    rc = shim_open(data, n, &ds, &m, &in, err, sizeof err);
    CHECK(rc == CXR_OK, "shim_open: %s", err);
    if (rc != CXR_OK) return;
    shim_frame fr;
    shim_decode_opts o = {500, 1, 0, 0};
    t0 = now_s();
    rc = shim_first_frame(ds, &m, &o, &fr, err, sizeof err);
    dt = now_s() - t0;
    CHECK(rc == CXR_ERR_DECODE_TIMEOUT && dt < 2.0, "unchecked decode: %s after %.2f s: %s", cxr_strerror(rc), dt, err);
    CHECK(cxr_decode_tainted() == before + 1, "not tainted");
    printf("unchecked DCMTK decode: %s after %.3f s: %s\n", cxr_strerror(rc), dt, err);
    shim_frame_free(&fr);
    shim_close(ds); /* a no-op: the stuck decoder owns it */
}

int main(int argc, char **argv) {
    test_jpeg();
    test_jpegls();
    test_j2k();
    test_rle();
    test_deadline();
    if (argc > 1) test_dcmtk_hang(argv[1]);
    return CHECK_SUMMARY();
}
