/*
 * jpeg8.c — libjpeg-turbo's scaled decode of one-component 8-bit JPEG
 * frames (jpeg8.h). Errors longjmp back here with libjpeg's message; its
 * warnings (a corrupt but decodable stream) are kept quiet, as DCMTK's are.
 * The stream has passed codec_check.c before it gets here.
 */
#include "jpeg8.h"
#include "cxr_common.h"

#include <setjmp.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include <jpeglib.h>

typedef struct {
    struct jpeg_error_mgr pub;
    jmp_buf jb;
    char msg[JMSG_LENGTH_MAX];
} err_mgr;

static void on_error(j_common_ptr c) {
    err_mgr *e = (err_mgr *)c->err;
    (*c->err->format_message)(c, e->msg);
    longjmp(e->jb, 1);
}

static void on_message(j_common_ptr c, int level) { (void)c; (void)level; }

void jpeg8_image_free(jpeg8_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
}

/* libjpeg's errors longjmp to the caller's setjmp on e->jb; warnings are dropped */
static void quiet_errors(struct jpeg_decompress_struct *d, err_mgr *e) {
    memset(d, 0, sizeof *d);
    d->err = jpeg_std_error(&e->pub);
    e->pub.error_exit = on_error;
    e->pub.emit_message = on_message;
}

/* colour: also take a 3-component (YCbCr or RGB) 8-bit frame, converted to
 * grey by libjpeg (Y = 0.299 R + 0.587 G + 0.114 B), progressive too */
static int decode(const uint8_t *cs, size_t len, int min_short, int min_long, int colour, jpeg8_image *out,
                  char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    if (len < 4 || len > 0xffffffffu) return CXR_ERR_TRANSFER_SYNTAX;
    struct jpeg_decompress_struct d;
    err_mgr e;
    quiet_errors(&d, &e);
    volatile int rc = CXR_ERR_CORRUPT;
    uint8_t *volatile buf = NULL;
    if (setjmp(e.jb)) {
        snprintf(err, errlen, "JPEG: %s", e.msg);
        free(buf);
        jpeg_destroy_decompress(&d);
        return rc;
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, cs, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    /* this path: one 8-bit component, sequential; anything else goes to DCMTK */
    if (!colour && (d.num_components != 1 || d.data_precision != 8 || d.progressive_mode || d.arith_code)) {
        jpeg_destroy_decompress(&d);
        return CXR_ERR_TRANSFER_SYNTAX;
    }
    /* a file: grey or colour, 8 bits; never CMYK / YCCK */
    if (colour && (d.data_precision != 8 || (d.num_components != 1 && d.num_components != 3) ||
                   (d.num_components == 3 && d.jpeg_color_space != JCS_YCbCr && d.jpeg_color_space != JCS_RGB))) {
        snprintf(err, errlen, "JPEG with %d component%s at %d bits%s: only 8-bit grey or colour (YCbCr/RGB) JPEG "
                 "files are read", d.num_components, d.num_components == 1 ? "" : "s", d.data_precision,
                 d.num_components == 4 ? " (CMYK)" : "");
        int code = d.data_precision != 8 ? CXR_ERR_PIXEL_FORMAT : CXR_ERR_PHOTOMETRIC;
        jpeg_destroy_decompress(&d);
        return code;
    }
    unsigned w = d.image_width, h = d.image_height;
    int scale = 1;
    while (scale < 8 && (min_short > 0 || min_long > 0)) {
        unsigned s = scale * 2, rw = (w + s - 1) / s, rh = (h + s - 1) / s;
        unsigned sh = rw < rh ? rw : rh, lg = rw < rh ? rh : rw;
        if (sh < (unsigned)(min_short > 0 ? min_short : 0) || lg < (unsigned)(min_long > 0 ? min_long : 0)) break;
        scale = (int)s;
    }
    d.scale_num = 1;
    d.scale_denom = (unsigned)scale;
    d.out_color_space = JCS_GRAYSCALE;
    d.dct_method = JDCT_ISLOW;
    jpeg_start_decompress(&d);
    size_t ow = d.output_width, oh = d.output_height;
    rc = CXR_ERR_NOMEM;
    buf = malloc(ow * oh);
    if (!buf) {
        jpeg_destroy_decompress(&d);
        return CXR_ERR_NOMEM;
    }
    rc = CXR_ERR_CORRUPT;
    while (d.output_scanline < d.output_height) {
        JSAMPROW row = buf + (size_t)d.output_scanline * ow;
        jpeg_read_scanlines(&d, &row, 1);
    }
    jpeg_finish_decompress(&d);
    jpeg_destroy_decompress(&d);
    out->width = (int)ow;
    out->height = (int)oh;
    out->scale = scale;
    out->data = buf;
    return CXR_OK;
}

int jpeg8_decode(const uint8_t *cs, size_t len, int min_short, int min_long, jpeg8_image *out, char *err,
                 size_t errlen) {
    return decode(cs, len, min_short, min_long, 0, out, err, errlen);
}

int jpeg8_decode_file(const uint8_t *cs, size_t len, int min_short, int min_long, jpeg8_image *out, char *err,
                      size_t errlen) {
    return decode(cs, len, min_short, min_long, 1, out, err, errlen);
}

int jpeg8_header(const uint8_t *cs, size_t len, jpeg8_info *info, char *err, size_t errlen) {
    memset(info, 0, sizeof *info);
    if (err && errlen) err[0] = '\0';
    if (len < 4 || len > 0xffffffffu) {
        snprintf(err, errlen, "JPEG: %zu bytes is not a JPEG file", len);
        return CXR_ERR_CORRUPT;
    }
    struct jpeg_decompress_struct d;
    err_mgr e;
    quiet_errors(&d, &e);
    if (setjmp(e.jb)) {
        snprintf(err, errlen, "JPEG: %s", e.msg);
        jpeg_destroy_decompress(&d);
        return CXR_ERR_CORRUPT;
    }
    jpeg_create_decompress(&d);
    jpeg_mem_src(&d, cs, (unsigned long)len);
    jpeg_read_header(&d, TRUE);
    info->width = (int)d.image_width;
    info->height = (int)d.image_height;
    info->components = d.num_components;
    info->precision = d.data_precision;
    info->progressive = d.progressive_mode;
    jpeg_destroy_decompress(&d);
    return CXR_OK;
}
