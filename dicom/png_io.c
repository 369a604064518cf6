/*
 * png_io.c — PNG in and out with libpng, for non-DICOM workflows and for
 * encoding 8-bit gray or RGB planes (the normalised image, evidence overlays). Reading decodes a memory buffer to host-order
 * 8- or 16-bit samples (gray or RGB, alpha dropped, palette expanded) that
 * ingest.c sends through the same pixel pipeline as DICOM. libpng's longjmp
 * error path never escapes this file.
 */
#include "png_io.h"
#include "cxr_dicom.h"
#include "cxr_util.h"

#include <png.h>
#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <zlib.h>

int png_is_png(const void *buf, size_t len) {
    return len >= 8 && png_sig_cmp((png_const_bytep)buf, 0, 8) == 0;
}

typedef struct { const uint8_t *p; size_t len, pos; int short_read; } rdsrc;

static void rd(png_structp png, png_bytep out, png_size_t n) {
    rdsrc *s = png_get_io_ptr(png);
    if (n > s->len - s->pos) {
        s->short_read = 1;
        png_error(png, "PNG data ends early");
    }
    memcpy(out, s->p + s->pos, n);
    s->pos += n;
}

typedef struct { char *err; size_t errlen; } errsink;

static void on_err(png_structp png, png_const_charp msg) {
    errsink *e = png_get_error_ptr(png);
    if (e && e->err && e->errlen && !e->err[0]) snprintf(e->err, e->errlen, "PNG: %s", msg);
    png_longjmp(png, 1);
}
static void on_warn(png_structp png, png_const_charp msg) { (void)png; (void)msg; }

int png_read_buffer(const void *buf, size_t len, png_plane *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    errsink es = {err, errlen};
    rdsrc src = {buf, len, 0, 0};
    png_structp png = png_create_read_struct(PNG_LIBPNG_VER_STRING, &es, on_err, on_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    /* volatile: modified after setjmp and read after longjmp */
    uint8_t *volatile data = NULL;
    png_bytep *volatile rowp = NULL;
    if (!png || !info) {
        png_destroy_read_struct(&png, &info, NULL);
        return CXR_ERR_NOMEM;
    }
    if (setjmp(png_jmpbuf(png))) {
        free(data);
        free(rowp);
        png_destroy_read_struct(&png, &info, NULL);
        return src.short_read ? CXR_ERR_TRUNCATED : CXR_ERR_CORRUPT;
    }
    png_set_read_fn(png, &src, rd);
    /* libpng's own limit would fail as a generic "Invalid IHDR data"; the
       caps are checked below, before any row buffer exists */
    png_set_user_limits(png, PNG_UINT_31_MAX, PNG_UINT_31_MAX);
    png_read_info(png, info);
    png_uint_32 w = png_get_image_width(png, info), h = png_get_image_height(png, info);
    int ct = png_get_color_type(png, info), depth = png_get_bit_depth(png, info);
    if (w > CXR_MAX_DIM || h > CXR_MAX_DIM || (uint64_t)w * h > CXR_MAX_PIXELS) {
        snprintf(err, errlen, "PNG declares %ux%u pixels (caps: %d a side, %llu in all)", (unsigned)w, (unsigned)h,
                 CXR_MAX_DIM, (unsigned long long)CXR_MAX_PIXELS);
        png_destroy_read_struct(&png, &info, NULL);
        return CXR_ERR_DIMENSIONS;
    }
    if (ct == PNG_COLOR_TYPE_PALETTE) png_set_palette_to_rgb(png);
    if (ct == PNG_COLOR_TYPE_GRAY && depth < 8) png_set_expand_gray_1_2_4_to_8(png);
    png_set_strip_alpha(png); /* also an alpha expanded from a palette's tRNS */
    const uint16_t one = 1;
    if (depth == 16 && *(const uint8_t *)&one == 1) png_set_swap(png); /* PNG is big endian; to host order */
    png_set_interlace_handling(png);
    png_read_update_info(png, info);
    int ch = png_get_channels(png, info);
    int bd = png_get_bit_depth(png, info);
    size_t rowbytes = png_get_rowbytes(png, info);
    if ((ch != 1 && ch != 3) || (bd != 8 && bd != 16) || rowbytes != (size_t)w * ch * (bd / 8)) {
        snprintf(err, errlen, "PNG layout not supported (%d channels, %d bits)", ch, bd);
        png_destroy_read_struct(&png, &info, NULL);
        return CXR_ERR_PIXEL_FORMAT;
    }
    data = malloc(rowbytes * h);
    rowp = malloc(h * sizeof(png_bytep));
    if (!data || !rowp) png_error(png, "out of memory");
    for (png_uint_32 y = 0; y < h; y++) rowp[y] = data + rowbytes * y;
    png_read_image(png, rowp);
    png_read_end(png, NULL);
    free(rowp);
    png_destroy_read_struct(&png, &info, NULL);
    out->data = data;
    out->width = (int)w;
    out->height = (int)h;
    out->channels = ch;
    out->bits = bd;
    return CXR_OK;
}

void png_plane_free(png_plane *p) {
    if (!p) return;
    free(p->data);
    p->data = NULL;
}

/* PNG bytes grow in a malloc'd buffer; oom set on failure. */
typedef struct {
    uint8_t *buf;
    size_t len, cap;
    int oom;
} membuf;

static void mem_write(png_structp png, png_bytep data, png_size_t n) {
    membuf *m = png_get_io_ptr(png);
    if (m->oom) return;
    if (m->len + n > m->cap) {
        size_t cap = m->cap ? m->cap * 2 : 65536;
        while (cap < m->len + n) cap *= 2;
        uint8_t *nb = realloc(m->buf, cap);
        if (!nb) {
            m->oom = 1;
            return;
        }
        m->buf = nb;
        m->cap = cap;
    }
    memcpy(m->buf + m->len, data, n);
    m->len += n;
}
static void mem_flush(png_structp png) { (void)png; }

int cxr_png_encode(const uint8_t *px, int rows, int cols, int channels, int fast, uint8_t **out, size_t *out_len,
                   char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    *out = NULL;
    *out_len = 0;
    if (!px || rows < 1 || cols < 1 || (channels != 1 && channels != 3)) {
        snprintf(err, errlen, "PNG: no image to encode");
        return CXR_ERR_ARG;
    }
    errsink es = {err, errlen};
    membuf m = {0};
    png_structp png = png_create_write_struct(PNG_LIBPNG_VER_STRING, &es, on_err, on_warn);
    png_infop info = png ? png_create_info_struct(png) : NULL;
    if (!png || !info) {
        png_destroy_write_struct(&png, &info);
        return CXR_ERR_NOMEM;
    }
    if (setjmp(png_jmpbuf(png))) {
        png_destroy_write_struct(&png, &info);
        free(m.buf);
        return CXR_ERR_INTERNAL;
    }
    png_set_write_fn(png, &m, mem_write, mem_flush);
    if (fast) { /* speed over size: a full-size radiograph at level 9 costs ~1 s */
        png_set_compression_level(png, 1);

        png_set_filter(png, 0, PNG_FILTER_SUB);
    } else {
        png_set_compression_level(png, 3);
    }
    png_set_IHDR(png, info, (png_uint_32)cols, (png_uint_32)rows, 8,
                 channels == 3 ? PNG_COLOR_TYPE_RGB : PNG_COLOR_TYPE_GRAY, PNG_INTERLACE_NONE,
                 PNG_COMPRESSION_TYPE_DEFAULT, PNG_FILTER_TYPE_DEFAULT);
    png_write_info(png, info);
    for (int y = 0; y < rows; y++) png_write_row(png, (png_const_bytep)(px + (size_t)y * cols * channels));
    png_write_end(png, NULL);
    png_destroy_write_struct(&png, &info);
    if (m.oom) {
        free(m.buf);
        snprintf(err, errlen, "PNG: out of memory");
        return CXR_ERR_NOMEM;
    }
    *out = m.buf;
    *out_len = m.len;
    return CXR_OK;
}

int png_write_gray8(const char *path, const uint8_t *px, int rows, int cols, char *err, size_t errlen) {
    uint8_t *buf;
    size_t len;
    int rc = cxr_png_encode(px, rows, cols, 1, 1, &buf, &len, err, errlen);
    if (rc != CXR_OK) return rc;
    if (cxr_write_atomic(path, buf, len, 0644) != 0) rc = cxr_fail(err, errlen, CXR_ERR_IO, "cannot write %s", path);
    free(buf);
    return rc;
}
