/*
 * j2k.c — decodes one JPEG 2000 code stream from memory with OpenJPEG into
 * planar 16-bit samples. It checks the declared size against the decode caps
 * before any sample buffer is allocated, and routes OpenJPEG's messages into
 * the error text instead of stderr. It does no pixel math.
 */
#include "j2k.h"
#include "cxr_dicom.h"

#include <openjpeg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

typedef struct { const uint8_t *p; size_t len, pos; } memsrc;

static OPJ_SIZE_T mem_read(void *buf, OPJ_SIZE_T n, void *ud) {
    memsrc *s = ud;
    if (s->pos >= s->len) return (OPJ_SIZE_T)-1;
    if (n > s->len - s->pos) n = s->len - s->pos;
    memcpy(buf, s->p + s->pos, n);
    s->pos += n;
    return n;
}

static OPJ_OFF_T mem_skip(OPJ_OFF_T n, void *ud) {
    memsrc *s = ud;
    if (n < 0) {
        if ((size_t)(-n) > s->pos) n = -(OPJ_OFF_T)s->pos;
    } else if ((size_t)n > s->len - s->pos) {
        n = (OPJ_OFF_T)(s->len - s->pos);
    }
    s->pos += n;
    return n;
}

static OPJ_BOOL mem_seek(OPJ_OFF_T n, void *ud) {
    memsrc *s = ud;
    if (n < 0 || (size_t)n > s->len) return OPJ_FALSE;
    s->pos = (size_t)n;
    return OPJ_TRUE;
}

typedef struct { char *err; size_t errlen; } msgsink;

static void on_error(const char *msg, void *ud) {
    msgsink *m = ud;
    if (m->err && m->errlen && !m->err[0]) {
        snprintf(m->err, m->errlen, "JPEG 2000: %s", msg);
        size_t l = strlen(m->err);
        if (l && m->err[l - 1] == '\n') m->err[l - 1] = '\0';
    }
}

static void on_quiet(const char *msg, void *ud) { (void)msg; (void)ud; }

/* A real radiograph has one tile or a few hundred; OpenJPEG allocates its
 * per-tile state for every tile the SIZ marker declares (up to 65535, about
 * 10 kB each) before a single byte of image data is read. */
#define J2K_MAX_TILES 4096

static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }

/* Check the SIZ marker segment (found by its SOC SIZ signature in the first
 * 64 kB, so inside a JP2 wrapper too) against the caps before OpenJPEG sees
 * it. Returns CXR_OK when absent: OpenJPEG then reports the stream. */
static int check_siz(const uint8_t *cs, size_t len, char *err, size_t errlen) {
    size_t lim = len < 65536 ? len : 65536;
    for (size_t i = 0; i + 4 <= lim; i++) {
        if (cs[i] != 0xff || cs[i + 1] != 0x4f || cs[i + 2] != 0xff || cs[i + 3] != 0x51) continue;
        const uint8_t *s = cs + i + 4; /* Lsiz */
        if (len - (i + 4) < 38) return CXR_OK;
        uint32_t x1 = be32(s + 4), y1 = be32(s + 8), x0 = be32(s + 12), y0 = be32(s + 16);
        uint32_t tw = be32(s + 20), th = be32(s + 24), tx0 = be32(s + 28), ty0 = be32(s + 32);
        unsigned nc = (unsigned)s[36] << 8 | s[37];
        if (x1 <= x0 || y1 <= y0 || tw == 0 || th == 0 || tx0 > x0 || ty0 > y0) return CXR_OK; /* OpenJPEG refuses */
        uint64_t w = x1 - x0, h = y1 - y0;
        uint64_t tiles = (((uint64_t)x1 - tx0 + tw - 1) / tw) * (((uint64_t)y1 - ty0 + th - 1) / th);
        if (w > CXR_MAX_DIM || h > CXR_MAX_DIM || w * h > CXR_MAX_PIXELS || nc < 1 || nc > 4 || tiles > J2K_MAX_TILES) {
            snprintf(err, errlen,
                     "JPEG 2000 SIZ declares %llux%llu, %u components, %llu tiles (caps: %d a side, %llu pixels, 4 components, %d tiles)",
                     (unsigned long long)w, (unsigned long long)h, nc, (unsigned long long)tiles, CXR_MAX_DIM,
                     (unsigned long long)CXR_MAX_PIXELS, J2K_MAX_TILES);
            return CXR_ERR_DIMENSIONS;
        }
        return CXR_OK;
    }
    return CXR_OK;
}

void j2k_image_free(j2k_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
}

int j2k_decode(const uint8_t *cs, size_t len, int nthreads, j2k_image *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    if (len < 12) {
        snprintf(err, errlen, "JPEG 2000 code stream of %zu bytes is too short", len);
        return CXR_ERR_CORRUPT;
    }
    int rc0 = check_siz(cs, len, err, errlen);
    if (rc0 != CXR_OK) return rc0;
    OPJ_CODEC_FORMAT fmt = (cs[0] == 0xff && cs[1] == 0x4f) ? OPJ_CODEC_J2K : OPJ_CODEC_JP2;
    memsrc src = {cs, len, 0};
    msgsink sink = {err, errlen};
    opj_stream_t *st = opj_stream_create(1 << 16, OPJ_TRUE);
    opj_codec_t *codec = opj_create_decompress(fmt);
    opj_image_t *im = NULL;
    int rc = CXR_ERR_CORRUPT;
    opj_dparameters_t par;
    if (!st || !codec) { rc = CXR_ERR_NOMEM; goto done; }
    opj_stream_set_user_data(st, &src, NULL);
    opj_stream_set_user_data_length(st, len);
    opj_stream_set_read_function(st, mem_read);
    opj_stream_set_skip_function(st, mem_skip);
    opj_stream_set_seek_function(st, mem_seek);
    opj_set_error_handler(codec, on_error, &sink);
    opj_set_warning_handler(codec, on_quiet, NULL);
    opj_set_info_handler(codec, on_quiet, NULL);
    opj_set_default_decoder_parameters(&par);
    if (!opj_setup_decoder(codec, &par)) goto done;
    /* always set: OpenJPEG otherwise takes its default from OPJ_NUM_THREADS */
    opj_codec_set_threads(codec, nthreads > 1 ? nthreads : 0);
    if (!opj_read_header(st, codec, &im) || !im) {
        if (err && !err[0]) snprintf(err, errlen, "JPEG 2000: cannot read the main header");
        goto done;
    }
    {
        uint64_t w = im->x1 - im->x0, h = im->y1 - im->y0;
        if (im->numcomps < 1 || im->numcomps > 4 || w == 0 || h == 0 || w > CXR_MAX_DIM ||
            h > CXR_MAX_DIM || w * h > CXR_MAX_PIXELS) {
            snprintf(err, errlen, "JPEG 2000 header declares %llux%llu with %u components (caps: %d per side, %llu pixels)",
                     (unsigned long long)w, (unsigned long long)h, im->numcomps, CXR_MAX_DIM,
                     (unsigned long long)CXR_MAX_PIXELS);
            rc = CXR_ERR_DIMENSIONS;
            goto done;
        }
    }
    if (!opj_decode(codec, st, im) || !opj_end_decompress(codec, st)) {
        if (err && !err[0]) snprintf(err, errlen, "JPEG 2000: decoding failed");
        goto done;
    }
    {
        int nc = (int)im->numcomps;
        uint32_t w = im->comps[0].w, h = im->comps[0].h;
        for (int c = 0; c < nc; c++) {
            if (!im->comps[c].data || im->comps[c].w != w || im->comps[c].h != h ||
                im->comps[c].prec < 1 || im->comps[c].prec > 16) {
                snprintf(err, errlen, "JPEG 2000: component %d has size %ux%u precision %u (expected %ux%u, 1..16 bits)",
                         c, im->comps[c].w, im->comps[c].h, im->comps[c].prec, w, h);
                goto done;
            }
        }
        size_t plane = (size_t)w * h;
        out->data = malloc(plane * (size_t)nc * sizeof *out->data);
        if (!out->data) { rc = CXR_ERR_NOMEM; goto done; }
        for (int c = 0; c < nc; c++) {
            const OPJ_INT32 *s = im->comps[c].data;
            uint16_t *d = out->data + plane * (size_t)c;
            uint32_t mask = (1u << im->comps[c].prec) - 1u;
            for (size_t i = 0; i < plane; i++) d[i] = (uint16_t)((uint32_t)s[i] & mask);
        }
        out->width = (int)w;
        out->height = (int)h;
        out->ncomp = nc;
        out->prec = (int)im->comps[0].prec;
        out->sgnd = (int)im->comps[0].sgnd;
        rc = CXR_OK;
    }
done:
    if (im) opj_image_destroy(im);
    if (codec) opj_destroy_codec(codec);
    if (st) opj_stream_destroy(st);
    return rc;
}
