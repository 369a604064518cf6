/*
 * test_anomaly.c — bad input through the public ingestion API. It builds
 * valid DICOM (explicit VR little endian, Part 10) and PNG files in memory
 * with tiny writers of its own, then breaks them: truncation at every offset
 * of the header and through the pixel data, garbage, empty input, absurd
 * dimensions, invalid pixel formats, unsupported photometrics, non-image SOP
 * classes, corrupt compressed streams. Each case states the exact error code
 * it expects (or, where the code depends on where a cut lands inside an
 * element, the set of codes that are correct). Files found in the sample
 * data directory given as argv[1] are truncated and corrupted too. It must
 * never crash: the ASan + UBSan build runs it. Exit status: 0 all cases
 * matched, 1 otherwise.
 */
#include "cxr_dicom.h"

#include <dirent.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/resource.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif

/* Under ASan an allocation beyond this fails instead of being granted lazily,
 * so a decoder that trusts a declared length shows up as a wrong code. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=1536:allocator_may_return_null=1"; }

/* ------------------------------------------------------------ reporting */

#include "check.h"

/* rc equals one of the expected codes (a list ended by 1). */
static int expect(int rc, ...) {
    va_list ap;
    va_start(ap, rc);
    int ok = 0, code;
    while ((code = va_arg(ap, int)) != 1)
        if (rc == code) ok = 1;
    va_end(ap);
    return ok;
}

/* Count one case; quiet loops call this and print only their failures. */
static int tally(int ok) {
    CHECK(ok, "(the case's line says which)");
    return ok;
}

static void show(int ok, const char *name, int rc, const char *err) {
    printf("%s %-58s -> %-28s %s\n", ok ? "ok  " : "FAIL", name, cxr_strerror(rc), err ? err : "");
}

/* Count and print one case. */
static void report(int ok, const char *name, int rc, const char *err) { show(tally(ok), name, rc, err); }

#define ANY_ERROR_OF(...) __VA_ARGS__, 1

static int load(const void *buf, size_t len, const cxr_ingest_params *p, char *err, cxr_image **keep) {
    cxr_image *img = NULL;
    int rc = cxr_image_load_buffer(buf, len, p, &img, err, CXR_ERRMSG_MAX);
    if (rc == CXR_OK) {
        /* the whole path the model sees: the tensor too */
        cxr_preproc s = cxr_preproc_default();
        float *t = malloc(cxr_preproc_tensor_len(&s) * sizeof *t);
        int trc = t ? cxr_image_to_tensor(img, &s, t) : CXR_ERR_NOMEM;
        free(t);
        if (trc != CXR_OK) {
            snprintf(err, CXR_ERRMSG_MAX, "image loaded but tensor failed: %s", cxr_strerror(trc));
            rc = CXR_ERR_INTERNAL;
        }
    } else if (img) {
        snprintf(err, CXR_ERRMSG_MAX, "error returned with a non-NULL image");
        rc = CXR_ERR_INTERNAL;
    }
    if (keep && rc == CXR_OK) *keep = img;
    else cxr_image_free(img);
    return rc;
}

/* Load and check in one call; prints the line. */
#define CASE(name, buf, len, params, ...)                          \
    do {                                                           \
        char e_[CXR_ERRMSG_MAX];                                   \
        int rc_ = load((buf), (len), (params), e_, NULL);          \
        report(expect(rc_, __VA_ARGS__, 1), (name), rc_, e_);      \
    } while (0)

/* Loads (rc CXR_OK) with a warning that contains needle. */
static void warned(const char *name, const void *buf, size_t len, const cxr_ingest_params *p, const char *needle) {
    char e[CXR_ERRMSG_MAX];
    cxr_image *img = NULL;
    int rc = load(buf, len, p, e, &img);
    int ok = rc == CXR_OK && img;
    if (ok) {
        const cxr_meta *m = cxr_image_meta(img);
        ok = 0;
        for (int i = 0; i < m->n_warnings; i++)
            if (strstr(m->warnings[i], needle)) {
                ok = 1;
                snprintf(e, sizeof e, "warning: %s", m->warnings[i]);
            }
        if (!ok) snprintf(e, sizeof e, "no warning containing '%s'", needle);
    }
    cxr_image_free(img);
    report(ok, name, rc, e);
}

/* ------------------------------------------------------- byte buffers */

typedef struct { uint8_t *p; size_t len, cap; } bytes;

static void put(bytes *b, const void *v, size_t n) {
    if (b->len + n > b->cap) {
        size_t cap = b->cap ? b->cap : 256;
        while (cap < b->len + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) { fprintf(stderr, "test_anomaly: out of memory\n"); exit(2); }
        b->p = q;
        b->cap = cap;
    }
    if (n) memcpy(b->p + b->len, v, n);
    b->len += n;
}
static void put8(bytes *b, uint8_t v) { put(b, &v, 1); }
static void put16le(bytes *b, uint16_t v) { uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)}; put(b, x, 2); }
static void put32le(bytes *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)v, (uint8_t)(v >> 8), (uint8_t)(v >> 16), (uint8_t)(v >> 24)};
    put(b, x, 4);
}
static void put32be(bytes *b, uint32_t v) {
    uint8_t x[4] = {(uint8_t)(v >> 24), (uint8_t)(v >> 16), (uint8_t)(v >> 8), (uint8_t)v};
    put(b, x, 4);
}
/* Byte order of the data set being written (the meta group is always LE). */
static int g_big_endian;
static void put16d(bytes *b, uint16_t v) {
    uint8_t x[2] = {(uint8_t)v, (uint8_t)(v >> 8)};
    if (g_big_endian) { uint8_t t = x[0]; x[0] = x[1]; x[1] = t; }
    put(b, x, 2);
}
static void put32d(bytes *b, uint32_t v) {
    if (g_big_endian) put32be(b, v);
    else put32le(b, v);
}
static void set32le(uint8_t *p, uint32_t v) { p[0] = (uint8_t)v; p[1] = (uint8_t)(v >> 8); p[2] = (uint8_t)(v >> 16); p[3] = (uint8_t)(v >> 24); }

/* ------------------------------------------------ explicit VR LE writer */

static int long_vr(const char *vr) {
    static const char *l[] = {"OB", "OW", "OF", "OD", "OL", "SQ", "UT", "UN", "UC", "UR"};
    for (size_t i = 0; i < sizeof l / sizeof l[0]; i++)
        if (!memcmp(vr, l[i], 2)) return 1;
    return 0;
}

/* Element header: tag, VR, length (explicit VR little endian). */
static void el_head(bytes *b, uint16_t g, uint16_t e, const char *vr, uint32_t n) {
    put16d(b, g);
    put16d(b, e);
    put(b, vr, 2);
    if (long_vr(vr)) { put16d(b, 0); put32d(b, n); }
    else put16d(b, (uint16_t)n);
}

/* Element with a value, padded to even length (UI with NUL, text with space). */
static void el(bytes *b, uint16_t g, uint16_t e, const char *vr, const void *v, size_t n) {
    el_head(b, g, e, vr, (uint32_t)(n + (n & 1)));
    put(b, v, n);
    if (n & 1) put8(b, !memcmp(vr, "UI", 2) || !memcmp(vr, "OB", 2) ? 0 : ' ');
}
static void el_str(bytes *b, uint16_t g, uint16_t e, const char *vr, const char *s) { el(b, g, e, vr, s, strlen(s)); }
static void el_us(bytes *b, uint16_t g, uint16_t e, uint16_t v) {
    el_head(b, g, e, "US", 2);
    put16d(b, v);
}

#define TS_EXPLICIT "1.2.840.10008.1.2.1"
#define TS_BIG "1.2.840.10008.1.2.2"
#define TS_JPEG_BASE "1.2.840.10008.1.2.4.50"
#define TS_JPEG_LL "1.2.840.10008.1.2.4.70"
#define TS_JLS "1.2.840.10008.1.2.4.80"
#define TS_J2K_LL "1.2.840.10008.1.2.4.90"
#define TS_J2K "1.2.840.10008.1.2.4.91"
#define TS_RLE "1.2.840.10008.1.2.5"
#define TS_MPEG2 "1.2.840.10008.1.2.4.100"
#define SOP_CR "1.2.840.10008.5.1.4.1.1.1"
#define SOP_DX "1.2.840.10008.5.1.4.1.1.1.1"
#define SOP_BASIC_SR "1.2.840.10008.5.1.4.1.1.88.11"

/* What to write. Strings NULL are omitted; integers < 0 are omitted. */
typedef struct {
    const char *ts, *sop_class, *modality, *body_part, *view, *photometric, *frames;
    int rows, cols, spp, ba, bs, hb, pr;
    const char *wc, *ww;
    int pixels;                 /* 0 none, 1 native, 2 encapsulated */
    int bad_voi_lut;            /* 1: descriptor bits 20, 2: LUT Data too short */
    const uint8_t *frag;        /* encapsulated: one fragment */
    size_t frag_len;
    size_t pixel_bytes;         /* native: bytes to write (0 = exactly rows*cols*spp*ba/8*frames) */
    uint32_t pixel_len_field;   /* native: value of the length field (0 = bytes written) */
} dcm_spec;

static dcm_spec spec_default(void) {
    dcm_spec s = {
        .ts = TS_EXPLICIT, .sop_class = SOP_CR, .modality = "CR", .body_part = "CHEST", .view = "PA",
        .photometric = "MONOCHROME2", .frames = NULL, .rows = 64, .cols = 64, .spp = 1, .ba = 16,
        .bs = 12, .hb = 11, .pr = 0, .wc = "2048", .ww = "4096", .pixels = 1,
    };
    return s;
}

/* Where things landed in the file, for the truncation sweeps. */
typedef struct {
    size_t dataset_start;       /* first byte after the meta group */
    size_t bounds[64];          /* offsets where a dataset element starts */
    int n_bounds;
    size_t pixel_el;            /* Pixel Data element header */
    size_t pixel_value;         /* first byte of its value (encapsulated: first item) */
} dcm_layout;

/* A frontal-chest-like test pattern: dark lungs, bright mediastinum. */
static uint16_t pattern(int r, int c, int rows, int cols, int maxv) {
    double x = (double)c / cols, y = (double)r / rows;
    double v = 0.55;
    if (y > 0.2 && y < 0.85 && ((x > 0.12 && x < 0.4) || (x > 0.6 && x < 0.88))) v = 0.15;
    if (x > 0.44 && x < 0.56) v = 0.85;
    if (y > 0.88) v = 0.8;
    v += 0.05 * ((r * 7 + c * 13) % 11) / 11.0;
    return (uint16_t)(v * maxv);
}

static bytes make_dicom(const dcm_spec *s, dcm_layout *lay) {
    bytes b = {0};
    dcm_layout dummy;
    if (!lay) lay = &dummy;
    memset(lay, 0, sizeof *lay);
    /* preamble + meta */
    uint8_t pre[128] = {0};
    put(&b, pre, sizeof pre);
    put(&b, "DICM", 4);
    bytes meta = {0};
    uint8_t ver[2] = {0, 1};
    el(&meta, 0x0002, 0x0001, "OB", ver, 2);
    el_str(&meta, 0x0002, 0x0002, "UI", s->sop_class ? s->sop_class : SOP_CR);
    el_str(&meta, 0x0002, 0x0003, "UI", "1.2.826.0.1.3680043.10.1084.1.3");
    el_str(&meta, 0x0002, 0x0010, "UI", s->ts);
    el_str(&meta, 0x0002, 0x0012, "UI", "1.2.826.0.1.3680043.10.1084.9");
    uint8_t gl[4];
    set32le(gl, (uint32_t)meta.len);
    el(&b, 0x0002, 0x0000, "UL", gl, 4);
    put(&b, meta.p, meta.len);
    free(meta.p);
    lay->dataset_start = b.len;
    g_big_endian = !strcmp(s->ts, TS_BIG);

#define MARK() (lay->n_bounds < 64 ? (void)(lay->bounds[lay->n_bounds++] = b.len) : (void)0)
    if (s->sop_class) { MARK(); el_str(&b, 0x0008, 0x0016, "UI", s->sop_class); }
    MARK(); el_str(&b, 0x0008, 0x0018, "UI", "1.2.826.0.1.3680043.10.1084.1.3");
    if (s->modality) { MARK(); el_str(&b, 0x0008, 0x0060, "CS", s->modality); }
    MARK(); el_str(&b, 0x0010, 0x0010, "PN", "ANOMALY^TEST");
    MARK(); el_str(&b, 0x0010, 0x0020, "LO", "ANOM-1");
    if (s->body_part) { MARK(); el_str(&b, 0x0018, 0x0015, "CS", s->body_part); }
    if (s->view) { MARK(); el_str(&b, 0x0018, 0x5101, "CS", s->view); }
    MARK(); el_str(&b, 0x0020, 0x000d, "UI", "1.2.826.0.1.3680043.10.1084.1.1");
    MARK(); el_str(&b, 0x0020, 0x000e, "UI", "1.2.826.0.1.3680043.10.1084.1.2");
    if (s->spp >= 0) { MARK(); el_us(&b, 0x0028, 0x0002, (uint16_t)s->spp); }
    if (s->photometric) { MARK(); el_str(&b, 0x0028, 0x0004, "CS", s->photometric); }
    if (s->frames) { MARK(); el_str(&b, 0x0028, 0x0008, "IS", s->frames); }
    if (s->rows >= 0) { MARK(); el_us(&b, 0x0028, 0x0010, (uint16_t)s->rows); }
    if (s->cols >= 0) { MARK(); el_us(&b, 0x0028, 0x0011, (uint16_t)s->cols); }
    if (s->ba >= 0) { MARK(); el_us(&b, 0x0028, 0x0100, (uint16_t)s->ba); }
    if (s->bs >= 0) { MARK(); el_us(&b, 0x0028, 0x0101, (uint16_t)s->bs); }
    if (s->hb >= 0) { MARK(); el_us(&b, 0x0028, 0x0102, (uint16_t)s->hb); }
    if (s->pr >= 0) { MARK(); el_us(&b, 0x0028, 0x0103, (uint16_t)s->pr); }
    if (s->wc) { MARK(); el_str(&b, 0x0028, 0x1050, "DS", s->wc); }
    if (s->ww) { MARK(); el_str(&b, 0x0028, 0x1051, "DS", s->ww); }
    if (s->bad_voi_lut) {
        /* VOI LUT Sequence (0028,3010), one item: descriptor + data */
        bytes it = {0};
        el_head(&it, 0x0028, 0x3002, "US", 6);
        put16d(&it, 256);
        put16d(&it, 0);
        put16d(&it, (uint16_t)(s->bad_voi_lut == 1 ? 20 : 12));
        int entries = s->bad_voi_lut == 2 ? 50 : 256;
        el_head(&it, 0x0028, 0x3006, "OW", (uint32_t)entries * 2);
        for (int i = 0; i < entries; i++) put16d(&it, (uint16_t)(i * 16));
        MARK();
        el_head(&b, 0x0028, 0x3010, "SQ", (uint32_t)(it.len + 8));
        put16d(&b, 0xfffe); put16d(&b, 0xe000); put32d(&b, (uint32_t)it.len);
        put(&b, it.p, it.len);
        free(it.p);
    }
    lay->pixel_el = b.len;
    if (s->pixels == 1) {
        int frames = s->frames ? atoi(s->frames) : 1;
        if (frames < 1) frames = 1;
        size_t bps = s->ba > 8 ? 2 : 1;
        size_t full = (size_t)(s->rows > 0 ? s->rows : 1) * (size_t)(s->cols > 0 ? s->cols : 1) *
                      (size_t)(s->spp > 0 ? s->spp : 1) * bps * (size_t)frames;
        size_t n = s->pixel_bytes ? s->pixel_bytes : full;
        if (n > (64u << 20)) n = 64u << 20;
        size_t padded = n + (n & 1);
        MARK();
        el_head(&b, 0x7fe0, 0x0010, bps == 2 ? "OW" : "OB", s->pixel_len_field ? s->pixel_len_field : (uint32_t)padded);
        lay->pixel_value = b.len;
        int rows = s->rows > 0 ? s->rows : 1, cols = s->cols > 0 ? s->cols : 1;
        int maxv = s->bs > 0 && s->bs <= 16 ? (1 << s->bs) - 1 : 255;
        for (size_t i = 0; i < padded; i += bps) {
            size_t px = i / bps;
            int r = (int)(px / (size_t)cols % (size_t)rows), c = (int)(px % (size_t)cols);
            uint16_t v = pattern(r, c, rows, cols, maxv);
            if (bps == 2 && i + 1 < padded) put16d(&b, v);
            else put8(&b, (uint8_t)v);
        }
    } else if (s->pixels == 2) {
        MARK();
        el_head(&b, 0x7fe0, 0x0010, "OB", 0xffffffffu);
        lay->pixel_value = b.len;
        put16d(&b, 0xfffe); put16d(&b, 0xe000); put32d(&b, 0); /* empty Basic Offset Table */
        size_t n = s->frag_len + (s->frag_len & 1);
        put16d(&b, 0xfffe); put16d(&b, 0xe000); put32d(&b, (uint32_t)n);
        put(&b, s->frag, s->frag_len);
        if (s->frag_len & 1) put8(&b, 0);
        put16d(&b, 0xfffe); put16d(&b, 0xe0dd); put32d(&b, 0);
    }
#undef MARK
    g_big_endian = 0;
    return b;
}

/* ------------------------------------------------------------ PNG writer */

static uint32_t crc_table[256];

static void crc_init(void) {
    for (uint32_t n = 0; n < 256; n++) {
        uint32_t c = n;
        for (int k = 0; k < 8; k++) c = (c & 1) ? 0xedb88320u ^ (c >> 1) : c >> 1;
        crc_table[n] = c;
    }
}

static uint32_t crc32_of(const uint8_t *p, size_t n) {
    uint32_t c = 0xffffffffu;
    for (size_t i = 0; i < n; i++) c = crc_table[(c ^ p[i]) & 0xff] ^ (c >> 8);
    return c ^ 0xffffffffu;
}

static void png_chunk(bytes *b, const char *type, const uint8_t *data, size_t n) {
    put32be(b, (uint32_t)n);
    size_t at = b->len;
    put(b, type, 4);
    put(b, data, n);
    put32be(b, crc32_of(b->p + at, n + 4));
}

/* A PNG of w×h with the given bit depth and colour type (0 gray, 2 RGB,
 * 3 palette), zlib "stored" blocks so no compressor is needed. The declared
 * size may differ from the written one (dw, dh > 0 override the IHDR). */
static bytes make_png(int w, int h, int depth, int ctype, uint32_t dw, uint32_t dh) {
    bytes b = {0};
    static const uint8_t sig[8] = {0x89, 'P', 'N', 'G', '\r', '\n', 0x1a, '\n'};
    put(&b, sig, 8);
    bytes ih = {0};
    put32be(&ih, dw ? dw : (uint32_t)w);
    put32be(&ih, dh ? dh : (uint32_t)h);
    put8(&ih, (uint8_t)depth);
    put8(&ih, (uint8_t)ctype);
    put8(&ih, 0); put8(&ih, 0); put8(&ih, 0);
    png_chunk(&b, "IHDR", ih.p, ih.len);
    free(ih.p);
    if (ctype == 3) {
        uint8_t pal[256 * 3];
        for (int i = 0; i < 256; i++) pal[3 * i] = pal[3 * i + 1] = pal[3 * i + 2] = (uint8_t)i;
        png_chunk(&b, "PLTE", pal, sizeof pal);
    }
    int ch = ctype == 2 ? 3 : 1;
    size_t rowbytes = ((size_t)w * ch * depth + 7) / 8;
    bytes raw = {0};
    for (int r = 0; r < h; r++) {
        put8(&raw, 0); /* filter: none */
        for (size_t i = 0; i < rowbytes; i++) {
            int c = (int)(i * 8 / ((size_t)ch * depth));
            put8(&raw, (uint8_t)(pattern(r, c, h, w, 65535) >> (i % 2 ? 0 : 8)));
        }
    }
    bytes z = {0};
    put8(&z, 0x78); put8(&z, 0x01);
    for (size_t at = 0; at < raw.len || at == 0;) {
        size_t n = raw.len - at > 65535 ? 65535 : raw.len - at;
        put8(&z, at + n >= raw.len ? 1 : 0);
        put16le(&z, (uint16_t)n);
        put16le(&z, (uint16_t)~n);
        put(&z, raw.p + at, n);
        at += n;
        if (n == 0) break;
    }
    uint32_t a = 1, bb = 0;
    for (size_t i = 0; i < raw.len; i++) { a = (a + raw.p[i]) % 65521; bb = (bb + a) % 65521; }
    put32be(&z, (bb << 16) | a);
    png_chunk(&b, "IDAT", z.p, z.len);
    png_chunk(&b, "IEND", NULL, 0);
    free(raw.p);
    free(z.p);
    return b;
}

/* ------------------------------------------------------ DICOM cases */

static void sweep_truncation(const char *name, const bytes *f, const dcm_layout *lay, size_t stride) {
    char e[CXR_ERRMSG_MAX], label[96];
    cxr_ingest_params p = cxr_ingest_params_default();
    int fails = 0, counted = 0;
    int hist[128] = {0};
    for (size_t cut = 1; cut < f->len; cut += cut < lay->pixel_value + 16 ? 1 : stride) {
        uint8_t *copy = malloc(cut); /* exact size, so ASan sees any over-read */
        memcpy(copy, f->p, cut);
        int rc = load(copy, cut, &p, e, NULL);
        free(copy);
        int ok;
        int at_bound = 0;
        for (int i = 0; i < lay->n_bounds; i++)
            if (lay->bounds[i] == cut) at_bound = 1;
        if (cut > lay->pixel_value) {
            /* inside the pixel data value: always "truncated" */
            ok = expect(rc, CXR_ERR_TRUNCATED, 1);
        } else if (at_bound && cut > lay->dataset_start) {
            /* a complete data set that stops before Pixel Data */
            ok = expect(rc, CXR_ERR_NOT_IMAGE, 1);
        } else if (cut < 132) {
            /* no complete "DICM" marker: nothing says this was DICOM */
            ok = expect(rc, CXR_ERR_NOT_DICOM, 1);
        } else {
            /* a cut through the meta group (or right after it), an element
               or the Pixel Data header */
            ok = expect(rc, CXR_ERR_TRUNCATED, 1);
        }
        tally(ok);
        hist[-rc & 127]++;
        counted++;
        if (!ok && fails++ < 12) {
            snprintf(label, sizeof label, "%s cut at %zu of %zu%s", name, cut, f->len, at_bound ? " (boundary)" : "");
            show(0, label, rc, e);
        }
    }
    snprintf(label, sizeof label, "%s: %d cuts", name, counted);
    char summary[256] = "";
    size_t sl = 0;
    for (int i = 0; i < 128; i++)
        if (hist[i]) sl += (size_t)snprintf(summary + sl, sizeof summary - sl, "%s%s x%d", sl ? ", " : "", cxr_strerror(-i), hist[i]);
    printf("%s %-58s -> %s\n", fails ? "FAIL" : "ok  ", label, summary);
}

static void dicom_cases(void) {
    cxr_ingest_params p = cxr_ingest_params_default();
    dcm_spec s;
    dcm_layout lay;
    bytes f;

#define DCM(name, edit, params, ...)                                   \
    do {                                                               \
        s = spec_default();                                            \
        edit;                                                          \
        f = make_dicom(&s, &lay);                                      \
        CASE(name, f.p, f.len, params, __VA_ARGS__);                   \
        free(f.p);                                                     \
    } while (0)

    printf("-- DICOM: valid files (the baseline the breakage starts from)\n");
    DCM("valid 64x64 16-bit MONOCHROME2", (void)0, &p, CXR_OK);
    DCM("valid 64x64 8-bit MONOCHROME1", (s.ba = 8, s.bs = 8, s.hb = 7, s.photometric = "MONOCHROME1"), &p, CXR_OK);
    DCM("valid 64x64 signed 16-bit, no window", (s.pr = 1, s.wc = s.ww = NULL), &p, CXR_OK);
    DCM("valid 64x48 RGB 8-bit", (s.spp = 3, s.ba = 8, s.bs = 8, s.hb = 7, s.photometric = "RGB", s.rows = 48), &p, CXR_OK);
    DCM("valid big endian 16-bit (retired syntax)", (s.ts = TS_BIG), &p, CXR_OK);
    DCM("valid 2 frames (first used, warning)", (s.frames = "2"), &p, CXR_OK);

    printf("-- DICOM: truncation\n");
    s = spec_default();
    f = make_dicom(&s, &lay);
    sweep_truncation("native 16-bit", &f, &lay, 97);
    free(f.p);
    s = spec_default();
    s.ba = 8; s.bs = 8; s.hb = 7; s.rows = 61; s.cols = 67; /* odd length, padded */
    f = make_dicom(&s, &lay);
    sweep_truncation("native 8-bit odd size", &f, &lay, 31);
    free(f.p);

    printf("-- DICOM: structure\n");
    DCM("Pixel Data shorter than declared (complete element)", (s.pixel_bytes = 64 * 64 * 2 - 200), &p, CXR_ERR_TRUNCATED);
    /* corrupt but readable: frame 1 is whole, so it is read, with a warning
       that names the damage; a strict caller refuses it */
    cxr_ingest_params strict = p;
    strict.damaged = CXR_CHECK_REFUSE;
#define DCMW(name, edit, needle)                                       \
    do {                                                               \
        s = spec_default();                                            \
        edit;                                                          \
        f = make_dicom(&s, &lay);                                      \
        warned(name, f.p, f.len, &p, needle);                          \
        CASE(name " (strict)", f.p, f.len, &strict, CXR_ERR_TRUNCATED); \
        free(f.p);                                                     \
    } while (0)
    DCMW("2 frames declared, 1 present", (s.frames = "2", s.pixel_bytes = 64 * 64 * 2), "1 of 2 frames complete");
    DCMW("Pixel Data length field 0xFFFFFFF0, 8 KiB present", (s.pixel_len_field = 0xfffffff0u),
         "declares 4294967280 bytes (0xFFFFFFF0) but the file ends 8192 bytes after its header");
    DCMW("Pixel Data length field 2 GiB, 8 KiB present", (s.pixel_len_field = 0x80000000u),
         "declares 2147483648 bytes (0x80000000)");
    DCM("Rows/Columns 65535 (no pixels to match)", (s.rows = s.cols = 65535, s.pixel_bytes = 4096), &p, CXR_ERR_DIMENSIONS);
    DCM("Rows 65535 Columns 64", (s.rows = 65535, s.pixel_bytes = 4096), &p, CXR_ERR_DIMENSIONS);
    DCM("Rows 0", (s.rows = 0), &p, CXR_ERR_DIMENSIONS);
    DCM("Rows missing", (s.rows = -1), &p, CXR_ERR_DIMENSIONS);
    DCM("Number of Frames 0", (s.frames = "0"), &p, CXR_ERR_DIMENSIONS);
    DCM("Number of Frames -3", (s.frames = "-3"), &p, CXR_ERR_DIMENSIONS);
    DCM("Number of Frames 100000 (cap 4096)", (s.frames = "100000", s.pixel_bytes = 8192), &p, CXR_ERR_DIMENSIONS);
    DCM("Number of Frames 4000 x 16384^2 (byte cap)", (s.frames = "4000", s.rows = s.cols = 16384, s.pixel_bytes = 8192), &p,
        CXR_ERR_DIMENSIONS);
    DCM("Number of Frames 'abc'", (s.frames = "abc"), &p, CXR_ERR_DIMENSIONS);
    DCM("Bits Stored 17 > Bits Allocated 16", (s.bs = 17, s.hb = 16), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Bits Stored 12 > Bits Allocated 8", (s.ba = 8, s.bs = 12, s.hb = 11), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Bits Stored 0", (s.bs = 0, s.hb = 0), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Bits Allocated 12", (s.ba = 12), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Bits Allocated 32", (s.ba = 32, s.bs = 32, s.hb = 31, s.pixel_bytes = 8192), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Bits Allocated missing", (s.ba = -1), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("High Bit 16 with Bits Allocated 16", (s.hb = 16), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("High Bit 5 below Bits Stored 12", (s.hb = 5), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Pixel Representation 2", (s.pr = 2), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("Samples per Pixel 2", (s.spp = 2), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("MONOCHROME2 with Samples per Pixel 3", (s.spp = 3, s.ba = 8, s.bs = 8, s.hb = 7), &p, CXR_ERR_PIXEL_FORMAT);
    DCM("PALETTE COLOR", (s.photometric = "PALETTE COLOR", s.ba = 8, s.bs = 8, s.hb = 7), &p, CXR_ERR_PHOTOMETRIC);
    DCM("Photometric 'CMYK' (retired)", (s.photometric = "CMYK"), &p, CXR_ERR_PHOTOMETRIC);
    DCM("Photometric missing", (s.photometric = NULL), &p, CXR_ERR_PHOTOMETRIC);
    DCM("Basic Text SR SOP class with pixels", (s.sop_class = SOP_BASIC_SR), &p, CXR_ERR_NOT_IMAGE);
    DCM("Basic Text SR SOP class, no pixels", (s.sop_class = SOP_BASIC_SR, s.pixels = 0), &p, CXR_ERR_NOT_IMAGE);
    DCM("CR SOP class without Pixel Data", (s.pixels = 0), &p, CXR_ERR_NOT_IMAGE);
    DCM("16x16 image", (s.rows = s.cols = 16), &p, CXR_ERR_TOO_SMALL);
    DCM("31x400 image", (s.rows = 31, s.cols = 400), &p, CXR_ERR_TOO_SMALL);
    DCM("MPEG2 transfer syntax", (s.ts = TS_MPEG2, s.pixels = 2, s.frag = (const uint8_t *)"\0\0\1\xb3garbage", s.frag_len = 11),
        &p, CXR_ERR_TRANSFER_SYNTAX);
    DCM("VOI LUT Descriptor declares 20 bits", (s.bad_voi_lut = 1), &p, CXR_ERR_CORRUPT);
    DCM("VOI LUT Data shorter than its descriptor", (s.bad_voi_lut = 2), &p, CXR_ERR_CORRUPT);

    printf("-- DICOM: clinical checks\n");
    cxr_ingest_params refuse = p, warnp = p, ignore = p;
    refuse.lateral = refuse.not_chest = refuse.small = CXR_CHECK_REFUSE;
    warnp.lateral = warnp.not_chest = warnp.small = CXR_CHECK_WARN;
    ignore.lateral = ignore.not_chest = ignore.small = CXR_CHECK_IGNORE;
    {
        s = spec_default();
        s.rows = s.cols = 256;
        s.view = "LL";
        f = make_dicom(&s, &lay);
        CASE("View Position LL, lateral REFUSE", f.p, f.len, &refuse, CXR_ERR_LATERAL);
        cxr_image *img = NULL;
        char e[CXR_ERRMSG_MAX];
        int rc = load(f.p, f.len, &warnp, e, &img);
        int warned = 0;
        if (img) {
            const cxr_meta *m = cxr_image_meta(img);
            for (int i = 0; i < m->n_warnings; i++)
                if (strstr(m->warnings[i], "lateral")) warned = 1;
            snprintf(e, sizeof e, "%d warning(s), lateral %s", m->n_warnings, warned ? "among them" : "MISSING");
        }
        int ok = expect(rc, CXR_OK, 1) && warned;
        report(ok, "View Position LL, lateral WARN: loads with a warning", rc, e);
        cxr_image_free(img);
        CASE("View Position LL, lateral IGNORE", f.p, f.len, &ignore, CXR_OK);
        free(f.p);
    }
    DCM("View Position LATERAL, REFUSE", (s.rows = s.cols = 256, s.view = "LATERAL"), &refuse, CXR_ERR_LATERAL);
    DCM("View Position PA, REFUSE everything (256x256 CR chest)", (s.rows = s.cols = 256), &refuse, CXR_OK);
    DCM("Modality MR, not_chest REFUSE", (s.rows = s.cols = 256, s.modality = "MR"), &refuse, CXR_ERR_NOT_CHEST);
    DCM("Body Part KNEE, not_chest REFUSE", (s.rows = s.cols = 256, s.body_part = "KNEE"), &refuse, CXR_ERR_NOT_CHEST);
    DCM("Body Part KNEE, not_chest WARN", (s.rows = s.cols = 256, s.body_part = "KNEE"), &warnp, CXR_OK);
    DCM("64x64 with small REFUSE", (void)0, &refuse, CXR_ERR_TOO_SMALL);
    DCM("16x16 with small IGNORE (hard minimum still applies)", (s.rows = s.cols = 16), &ignore, CXR_ERR_TOO_SMALL);
    DCM("DX SOP class", (s.sop_class = SOP_DX, s.modality = "DX"), &p, CXR_OK);
}

/* ---------------------------------------------- compressed streams */

/* One 8-bit 64x64 image as DICOM RLE: one segment, each row one replicate run. */
static bytes rle_frame(int rows, int cols, int nseg_field) {
    bytes b = {0};
    put32le(&b, (uint32_t)nseg_field);
    put32le(&b, 64);
    for (int i = 0; i < 14; i++) put32le(&b, 0);
    for (int r = 0; r < rows; r++) {
        for (int c = 0; c < cols; c += 64) {
            int n = cols - c < 64 ? cols - c : 64;
            put8(&b, (uint8_t)(257 - n)); /* replicate next byte n times */
            put8(&b, (uint8_t)pattern(r, c + 32, rows, cols, 255));
        }
    }
    return b;
}

/* A JPEG 2000 main header (SIZ, COD, QCD) for a w×h image in tw×th tiles,
 * then one tile-part with 20 bytes of garbage (with_tile) or none. */
static bytes j2k_header(uint32_t w, uint32_t h, uint32_t tw, uint32_t th, int with_tile) {
    bytes b = {0};
    uint8_t x[2];
#define BE16(v) (x[0] = (uint8_t)((v) >> 8), x[1] = (uint8_t)(v), put(&b, x, 2))
    BE16(0xff4f);                       /* SOC */
    BE16(0xff51); BE16(41); BE16(0);    /* SIZ, Lsiz, Rsiz */
    put32be(&b, w); put32be(&b, h); put32be(&b, 0); put32be(&b, 0);
    put32be(&b, tw); put32be(&b, th); put32be(&b, 0); put32be(&b, 0);
    BE16(1); put8(&b, 11); put8(&b, 1); put8(&b, 1); /* 1 component, 12 bits unsigned */
    BE16(0xff52); BE16(12);             /* COD */
    put8(&b, 0); put8(&b, 0); BE16(1); put8(&b, 0);
    put8(&b, 5); put8(&b, 4); put8(&b, 4); put8(&b, 0); put8(&b, 1);
    BE16(0xff5c); BE16(19); put8(&b, 0x40); /* QCD: no quantisation, 16 exponents */
    for (int i = 0; i < 16; i++) put8(&b, (uint8_t)(12 << 3));
    /* SOT (the header ends at the first one), SOD, then tile data or none */
    int data = with_tile ? 20 : 0;
    BE16(0xff90); BE16(10); BE16(0); put32be(&b, (uint32_t)(14 + data)); put8(&b, 0); put8(&b, 1);
    BE16(0xff93);
    for (int i = 0; i < data; i++) put8(&b, (uint8_t)(0x80 + i * 37));
    BE16(0xffd9);                       /* EOC */
#undef BE16
    return b;
}

static void compressed_cases(void) {
    cxr_ingest_params p = cxr_ingest_params_default();
    dcm_spec s;
    dcm_layout lay;
    bytes f, fr;
    uint8_t garbage[1000];
    uint32_t seed = 12345;
    for (size_t i = 0; i < sizeof garbage; i++) {
        seed = seed * 1103515245u + 12345u;
        garbage[i] = (uint8_t)(seed >> 16);
    }

#define ENC(name, ts_, frag_, fraglen_, edit, ...)                       \
    do {                                                               \
        s = spec_default();                                            \
        s.ts = (ts_);                                                  \
        s.pixels = 2;                                                  \
        s.frag = (frag_);                                              \
        s.frag_len = (fraglen_);                                       \
        edit;                                                          \
        f = make_dicom(&s, &lay);                                      \
        CASE(name, f.p, f.len, &p, __VA_ARGS__);                       \
        free(f.p);                                                     \
    } while (0)

    printf("-- compressed pixel data\n");
    /* RLE: a valid stream first, so the broken ones are known to reach the codec */
    fr = rle_frame(64, 64, 1);
    ENC("RLE valid 8-bit 64x64", TS_RLE, fr.p, fr.len, (s.ba = 8, s.bs = 8, s.hb = 7), CXR_OK);
    ENC("RLE stream cut in half", TS_RLE, fr.p, fr.len / 2, (s.ba = 8, s.bs = 8, s.hb = 7),
        ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    ENC("RLE header only", TS_RLE, fr.p, 64, (s.ba = 8, s.bs = 8, s.hb = 7), ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    ENC("RLE stream for 8-bit, header says 16-bit", TS_RLE, fr.p, fr.len, (void)0, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    free(fr.p);
    fr = rle_frame(64, 64, 15);
    ENC("RLE header claims 15 segments", TS_RLE, fr.p, fr.len, (s.ba = 8, s.bs = 8, s.hb = 7), ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    free(fr.p);
    fr = rle_frame(64, 64, -1);
    ENC("RLE header claims 2^32-1 segments", TS_RLE, fr.p, fr.len, (s.ba = 8, s.bs = 8, s.hb = 7), ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    free(fr.p);
    ENC("RLE random bytes", TS_RLE, garbage, sizeof garbage, (void)0, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    ENC("RLE 2-byte fragment", TS_RLE, garbage, 2, (void)0, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));

    static const uint8_t soi_garbage_head[] = {0xff, 0xd8, 0xff, 0xc3, 0x00, 0x0b, 0x10, 0x00, 0x40, 0x00, 0x40, 0x01, 0x01, 0x11, 0x00};
    uint8_t jpeg[sizeof soi_garbage_head + 500];
    memcpy(jpeg, soi_garbage_head, sizeof soi_garbage_head);
    memcpy(jpeg + sizeof soi_garbage_head, garbage, 500);
    ENC("JPEG lossless: random bytes", TS_JPEG_LL, garbage, sizeof garbage, (void)0, CXR_ERR_CORRUPT);
    ENC("JPEG lossless: SOI + SOF3 + random bytes", TS_JPEG_LL, jpeg, sizeof jpeg, (void)0, CXR_ERR_CORRUPT);
    ENC("JPEG baseline: SOI only", TS_JPEG_BASE, jpeg, 2, (s.ba = 8, s.bs = 8, s.hb = 7), CXR_ERR_CORRUPT);
    ENC("JPEG baseline: random bytes", TS_JPEG_BASE, garbage, sizeof garbage, (s.ba = 8, s.bs = 8, s.hb = 7), CXR_ERR_CORRUPT);

    static const uint8_t jls_head[] = {0xff, 0xd8, 0xff, 0xf7, 0x00, 0x0b, 0x0c, 0x00, 0x40, 0x00, 0x40, 0x01, 0x01, 0x11, 0x00,
                                       0xff, 0xda, 0x00, 0x08, 0x01, 0x01, 0x00, 0x00, 0x00, 0x00};
    uint8_t jls[sizeof jls_head + 500];
    memcpy(jls, jls_head, sizeof jls_head);
    memcpy(jls + sizeof jls_head, garbage, 500);
    ENC("JPEG-LS: random bytes", TS_JLS, garbage, sizeof garbage, (void)0, CXR_ERR_CORRUPT);
    ENC("JPEG-LS: SOI + SOF55 + SOS + random bytes", TS_JLS, jls, sizeof jls, (void)0, ANY_ERROR_OF(CXR_ERR_CORRUPT));
    ENC("JPEG-LS: SOF55 declares 64x64, header 256x256", TS_JLS, jls, sizeof jls, (s.rows = s.cols = 256), CXR_ERR_CORRUPT);
    ENC("JPEG-LS: header cut inside SOF", TS_JLS, jls, 9, (void)0, CXR_ERR_CORRUPT);

    ENC("JPEG 2000: random bytes", TS_J2K, garbage, sizeof garbage, (void)0, CXR_ERR_CORRUPT);
    ENC("JPEG 2000: 11 bytes", TS_J2K_LL, garbage, 11, (void)0, CXR_ERR_CORRUPT);
    uint8_t j2[sizeof garbage];
    memcpy(j2, garbage, sizeof j2);
    j2[0] = 0xff; j2[1] = 0x4f; j2[2] = 0xff; j2[3] = 0x51;
    ENC("JPEG 2000: SOC SIZ + random bytes", TS_J2K, j2, sizeof j2, (void)0, CXR_ERR_CORRUPT);
    bytes jh = j2k_header(60000, 60000, 60000, 60000, 0);
    ENC("JPEG 2000: SIZ declares 60000x60000", TS_J2K, jh.p, jh.len, (void)0, CXR_ERR_DIMENSIONS);
    free(jh.p);
    jh = j2k_header(16383, 4, 1, 1, 0); /* 65532 tiles: OpenJPEG would allocate ~600 MB of tile state */
    ENC("JPEG 2000: SIZ declares 65532 tiles of 1x1", TS_J2K, jh.p, jh.len, (void)0, CXR_ERR_DIMENSIONS);
    free(jh.p);
    jh = j2k_header(16384, 16384, 16384, 16384, 0);
    ENC("JPEG 2000: SIZ 16384^2, header 64x64", TS_J2K, jh.p, jh.len, (void)0, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_DIMENSIONS));
    free(jh.p);
    jh = j2k_header(64, 64, 64, 64, 0);
    ENC("JPEG 2000: main header, no tile (decoder may fill)", TS_J2K, jh.p, jh.len, (void)0,
        ANY_ERROR_OF(CXR_OK, CXR_ERR_CORRUPT));
    ENC("JPEG 2000: main header 64x64, DICOM says 128x64", TS_J2K, jh.p, jh.len, (s.cols = 128), CXR_ERR_CORRUPT);
    for (size_t cut = 12; cut < jh.len; cut += 7) {
        char nm[80];
        snprintf(nm, sizeof nm, "JPEG 2000: main header cut at %zu of %zu", cut, jh.len);
        ENC(nm, TS_J2K, jh.p, cut, (void)0, ANY_ERROR_OF(CXR_OK, CXR_ERR_CORRUPT));
    }
    free(jh.p);
    jh = j2k_header(64, 64, 64, 64, 1);
    ENC("JPEG 2000: one tile of garbage code blocks", TS_J2K, jh.p, jh.len, (void)0, ANY_ERROR_OF(CXR_OK, CXR_ERR_CORRUPT));
    free(jh.p);
    ENC("JPEG 2000: empty fragment", TS_J2K, garbage, 0, (void)0, ANY_ERROR_OF(CXR_ERR_TRUNCATED, CXR_ERR_CORRUPT));
#undef ENC
}

/* ------------------------------------------------------------ PNG cases */

static void png_cases(void) {
    cxr_ingest_params p = cxr_ingest_params_default();
    cxr_ingest_params nopng = p;
    nopng.allow_png = 0;
    bytes b;
    printf("-- PNG\n");
#define PNG(name, mk, params, ...)                                     \
    do {                                                               \
        b = mk;                                                        \
        CASE(name, b.p, b.len, params, __VA_ARGS__);                   \
        free(b.p);                                                     \
    } while (0)
    PNG("valid 64x64 gray 8-bit", make_png(64, 64, 8, 0, 0, 0), &p, CXR_OK);
    PNG("valid 64x64 gray 16-bit", make_png(64, 64, 16, 0, 0, 0), &p, CXR_OK);
    PNG("valid 64x48 RGB 8-bit", make_png(64, 48, 8, 2, 0, 0), &p, CXR_OK);
    PNG("valid 64x64 palette 8-bit", make_png(64, 64, 8, 3, 0, 0), &p, CXR_OK);
    PNG("valid 64x64 gray 1-bit", make_png(64, 64, 1, 0, 0, 0), &p, CXR_OK);
    PNG("valid PNG with PNG input disabled", make_png(64, 64, 8, 0, 0, 0), &nopng, CXR_ERR_NOT_DICOM);
    PNG("16x16 gray", make_png(16, 16, 8, 0, 0, 0), &p, CXR_ERR_TOO_SMALL);
    PNG("IHDR declares 65535x65535", make_png(64, 64, 8, 0, 65535, 65535), &p, CXR_ERR_DIMENSIONS);
    PNG("IHDR declares 16384x16384 (pixel cap)", make_png(64, 64, 8, 0, 16384, 16384), &p, CXR_ERR_DIMENSIONS);
    PNG("IHDR width 2^31 (not a valid PNG width)", make_png(64, 64, 8, 0, 0x80000000u, 0), &p, ANY_ERROR_OF(CXR_ERR_DIMENSIONS, CXR_ERR_CORRUPT));
    PNG("IHDR declares 64x128, data for 64x64", make_png(64, 64, 8, 0, 0, 128), &p, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED));
    PNG("IHDR bit depth 3", make_png(64, 64, 3, 0, 0, 0), &p, CXR_ERR_CORRUPT);

    /* every cut of a valid file */
    b = make_png(64, 64, 8, 0, 0, 0);
    int fails = 0, n = 0;
    char e[CXR_ERRMSG_MAX];
    for (size_t cut = 1; cut < b.len; cut++) {
        uint8_t *copy = malloc(cut);
        memcpy(copy, b.p, cut);
        int rc = load(copy, cut, &p, e, NULL);
        free(copy);
        /* below 8 bytes it is not even a PNG signature */
        int ok = cut < 8 ? expect(rc, ANY_ERROR_OF(CXR_ERR_NOT_DICOM, CXR_ERR_TRUNCATED))
                         : expect(rc, CXR_ERR_TRUNCATED, 1);
        tally(ok);
        n++;
        if (!ok && fails++ < 12) {
            char nm[80];
            snprintf(nm, sizeof nm, "PNG cut at %zu of %zu", cut, b.len);
            show(0, nm, rc, e);
        }
    }
    printf("%s PNG truncated at every offset: %d cuts\n", fails ? "FAIL" : "ok  ", n);
    /* corrupt bytes: a flipped byte breaks a CRC (or, in the signature, the format) */
    fails = 0;
    n = 0;
    for (size_t at = 8; at < b.len; at += 13) {
        b.p[at] ^= 0x5a;
        int rc = load(b.p, b.len, &p, e, NULL);
        b.p[at] ^= 0x5a;
        int ok = tally(expect(rc, ANY_ERROR_OF(CXR_ERR_CORRUPT, CXR_ERR_TRUNCATED, CXR_ERR_DIMENSIONS, CXR_ERR_PIXEL_FORMAT)));
        n++;
        if (!ok && fails++ < 12) {
            char nm[80];
            snprintf(nm, sizeof nm, "PNG byte %zu flipped", at);
            show(0, nm, rc, e);
        }
    }
    printf("%s PNG with one byte flipped: %d positions\n", fails ? "FAIL" : "ok  ", n);
    /* bad zlib data with a correct CRC */
    {
        size_t idat = 8 + 25; /* IDAT chunk after signature and IHDR */
        bytes c = {0};
        put(&c, b.p, b.len);
        set32le(c.p + idat + 8, 0xdeadbe77u); /* zlib CMF 0x77: not deflate */
        uint32_t len = (uint32_t)c.p[idat] << 24 | (uint32_t)c.p[idat + 1] << 16 | (uint32_t)c.p[idat + 2] << 8 | c.p[idat + 3];
        uint32_t crc = crc32_of(c.p + idat + 4, len + 4);
        uint8_t *q = c.p + idat + 8 + len;
        q[0] = (uint8_t)(crc >> 24); q[1] = (uint8_t)(crc >> 16); q[2] = (uint8_t)(crc >> 8); q[3] = (uint8_t)crc;
        CASE("IDAT with a broken zlib stream, CRC right", c.p, c.len, &p, CXR_ERR_CORRUPT);
        free(c.p);
    }
    free(b.p);
#undef PNG
}

/* ------------------------------------------------------- odd inputs */

static void odd_cases(void) {
    cxr_ingest_params p = cxr_ingest_params_default();
    char e[CXR_ERRMSG_MAX];
    cxr_image *img = (cxr_image *)&e; /* must be reset to NULL */
    printf("-- odd inputs\n");
    CASE("empty buffer", "", 0, &p, CXR_ERR_NOT_DICOM);
    CASE("1 byte", "\x00", 1, &p, CXR_ERR_NOT_DICOM);
    CASE("NULL params (defaults)", "xx", 2, NULL, CXR_ERR_NOT_DICOM);
    int rc = cxr_image_load_buffer(NULL, 10, &p, &img, e, sizeof e);
    report(expect(rc, CXR_ERR_ARG, 1) && img == NULL, "NULL buffer with length 10", rc, e);
    rc = cxr_image_load_buffer("abc", 3, &p, NULL, e, sizeof e);
    report(expect(rc, CXR_ERR_ARG, 1), "NULL out pointer", rc, e);
    rc = cxr_image_load_file(NULL, &p, &img, e, sizeof e);
    report(expect(rc, CXR_ERR_ARG, 1), "NULL path", rc, e);
    rc = cxr_image_load_buffer("abc", 3, &p, &img, NULL, 0);
    report(expect(rc, CXR_ERR_NOT_DICOM, 1), "no error buffer", rc, "");

    uint8_t garbage[4096];
    uint32_t seed = 99;
    for (int trial = 0; trial < 64; trial++) {
        for (size_t i = 0; i < sizeof garbage; i++) {
            seed = seed * 1664525u + 1013904223u;
            garbage[i] = (uint8_t)(seed >> 24);
        }
        size_t n = 1 + (seed % sizeof garbage);
        rc = load(garbage, n, &p, e, NULL);
        int ok = tally(expect(rc, ANY_ERROR_OF(CXR_ERR_NOT_DICOM, CXR_ERR_TRUNCATED)));
        if (!ok || trial < 2) {
            char nm[64];
            snprintf(nm, sizeof nm, "random bytes #%d (%zu bytes)", trial, n);
            show(ok, nm, rc, e);
        }
    }
    printf("     random bytes: 64 buffers done\n");
    /* garbage after a valid preamble + DICM */
    uint8_t pre[132 + 256] = {0};
    memcpy(pre + 128, "DICM", 4);
    memcpy(pre + 132, garbage, 256);
    CASE("preamble + DICM + random bytes", pre, sizeof pre, &p, ANY_ERROR_OF(CXR_ERR_NOT_DICOM, CXR_ERR_TRUNCATED));
    CASE("preamble + DICM, nothing after", pre, 132, &p, CXR_ERR_TRUNCATED);
    memset(pre + 132, 0, 256);
    CASE("preamble + DICM + zeros", pre, sizeof pre, &p, ANY_ERROR_OF(CXR_ERR_NOT_DICOM, CXR_ERR_TRUNCATED));
    CASE("text file", "hello, this is not a radiograph\n", 32, &p, CXR_ERR_NOT_DICOM);

    rc = cxr_image_load_file("/nonexistent/cxrvqa/anomaly.dcm", &p, &img, e, sizeof e);
    report(expect(rc, CXR_ERR_IO, 1) && !img, "nonexistent file", rc, e);
    rc = cxr_image_load_file("/", &p, &img, e, sizeof e);
    report(expect(rc, CXR_ERR_IO, 1) && !img, "a directory path", rc, e);
    char tmpl[] = "/tmp/cxr_anomaly_XXXXXX";
    int fd = mkstemp(tmpl);
    if (fd >= 0) {
        close(fd);
        rc = cxr_image_load_file(tmpl, &p, &img, e, sizeof e);
        report(expect(rc, CXR_ERR_NOT_DICOM, 1), "empty file", rc, e);
        unlink(tmpl);
    }
}

/* ----------------------------------------------- files in sample_data */

static int has_ext(const char *name, const char *ext) {
    size_t n = strlen(name), k = strlen(ext);
    return n > k && !strcasecmp(name + n - k, ext);
}

static void sample_cases(const char *dir) {
    DIR *d = dir ? opendir(dir) : NULL;
    printf("-- files in %s\n", dir ? dir : "(no directory given)");
    if (!d) {
        printf("     (directory absent: skipped)\n");
        return;
    }
    cxr_ingest_params p = cxr_ingest_params_default();
    struct dirent *de;
    int nfiles = 0;
    while ((de = readdir(d)) != NULL) {
        if (!has_ext(de->d_name, ".dcm") && !has_ext(de->d_name, ".png")) continue;
        char path[4096];
        snprintf(path, sizeof path, "%s/%s", dir, de->d_name);
        FILE *fp = fopen(path, "rb");
        if (!fp) continue;
        bytes b = {0};
        uint8_t chunk[65536];
        size_t got;
        while ((got = fread(chunk, 1, sizeof chunk, fp)) > 0) put(&b, chunk, got);
        fclose(fp);
        if (b.len > (8u << 20)) { free(b.p); continue; } /* keep the test fast */
        nfiles++;
        char e[CXR_ERRMSG_MAX];
        cxr_image *img = NULL;
        int whole = cxr_image_load_file(path, &p, &img, e, sizeof e);
        cxr_image_free(img);
        /* sample files may be deliberately refused; what matters is no crash
           and that broken copies never load */
        printf("     %-40s whole file -> %s\n", de->d_name, cxr_strerror(whole));
        int fails = 0, n = 0;
        size_t stride = b.len / 200 + 1;
        for (size_t cut = 1; cut < b.len; cut += cut < 1024 ? 1 : stride) {
            uint8_t *copy = malloc(cut);
            memcpy(copy, b.p, cut);
            int rc = load(copy, cut, &p, e, NULL);
            free(copy);
            n++;
            if (!tally(rc != CXR_OK && rc != CXR_ERR_INTERNAL && rc != CXR_ERR_NOMEM)) {
                if (fails++ < 8) {
                    char nm[300];
                    snprintf(nm, sizeof nm, "%s cut at %zu", de->d_name, cut);
                    show(0, nm, rc, e);
                }
            }
        }
        /* flipped bytes: any outcome but a crash, an internal error or NOMEM */
        uint32_t seed = 7;
        for (int k = 0; k < 64; k++) {
            seed = seed * 1664525u + 1013904223u;
            size_t at = seed % b.len;
            uint8_t old = b.p[at];
            b.p[at] ^= (uint8_t)(1u << (seed >> 29));
            int rc = load(b.p, b.len, &p, e, NULL);
            b.p[at] = old;
            n++;
            if (!tally(rc != CXR_ERR_INTERNAL && rc != CXR_ERR_NOMEM)) {
                if (fails++ < 8) {
                    char nm[300];
                    snprintf(nm, sizeof nm, "%s byte %zu flipped", de->d_name, at);
                    show(0, nm, rc, e);
                }
            }
        }
        printf("%s %-40s %d truncated / flipped copies\n", fails ? "FAIL" : "ok  ", de->d_name, n);
        free(b.p);
    }
    closedir(d);
    if (!nfiles) printf("     (no .dcm / .png files yet)\n");
}

int main(int argc, char **argv) {
#ifndef UNDER_ASAN
    /* without ASan: cap the address space so a decoder that allocates what a
       header declares (gigabytes) fails visibly instead of passing */
    struct rlimit rl = {3ull << 30, 3ull << 30};
    setrlimit(RLIMIT_AS, &rl);
#endif
    crc_init();
    odd_cases();
    dicom_cases();
    compressed_cases();
    png_cases();
    sample_cases(argc > 1 ? argv[1] : NULL);
    printf("\n");
    return CHECK_SUMMARY();
}
