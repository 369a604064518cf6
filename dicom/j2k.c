/*
 * j2k.c — decodes one JPEG 2000 code stream from memory with OpenJPEG into
 * planar 16-bit samples. It checks the declared size against the decode caps
 * before any sample buffer is allocated, and routes OpenJPEG's messages into
 * the error text instead of stderr. It does no pixel math.
 */
#include "j2k.h"
#include "codec_check.h"
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

/* The size caps are checked before OpenJPEG allocates anything: it
 * allocates per-tile state (about 10 kB) for every tile SIZ declares, up to
 * 65535, before reading a byte of image data (codec_check.c). */

void j2k_image_free(j2k_image *img) {
    if (!img) return;
    free(img->data);
    img->data = NULL;
}

/* The resolution levels to drop: the most that keeps both sides at or above
 * what the caller needs, and leaves at least the lowest level. */
static int pick_reduce(opj_codec_t *codec, uint64_t w, uint64_t h, int min_short, int min_long) {
    if (min_short <= 0 && min_long <= 0) return 0;
    opj_codestream_info_v2_t *ci = opj_get_cstr_info(codec);
    if (!ci) return 0;
    uint32_t levels = 0;
    if (ci->m_default_tile_info.tccp_info && ci->nbcomps > 0) {
        levels = ci->m_default_tile_info.tccp_info[0].numresolutions;
        for (uint32_t c = 1; c < ci->nbcomps; c++)
            if (ci->m_default_tile_info.tccp_info[c].numresolutions < levels)
                levels = ci->m_default_tile_info.tccp_info[c].numresolutions;
    }
    opj_destroy_cstr_info(&ci);
    int r = 0;
    while ((uint32_t)r + 1 < levels && r < 8) {
        int n = r + 1;
        uint64_t rw = (w + (1u << n) - 1) >> n, rh = (h + (1u << n) - 1) >> n;
        uint64_t s = rw < rh ? rw : rh, l = rw < rh ? rh : rw;
        if (s < (uint64_t)(min_short > 0 ? min_short : 0) || l < (uint64_t)(min_long > 0 ? min_long : 0)) break;
        r = n;
    }
    return r;
}

int j2k_decode(const uint8_t *cs, size_t len, int nthreads, int min_short, int min_long, j2k_image *out, char *err,
               size_t errlen) {
    memset(out, 0, sizeof *out);
    if (err && errlen) err[0] = '\0';
    if (len < 12) {
        snprintf(err, errlen, "JPEG 2000 code stream of %zu bytes is too short", len);
        return CXR_ERR_CORRUPT;
    }
    int rc0 = codec_check_j2k_caps(cs, len, err, errlen);
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
    {
        int r = pick_reduce(codec, im->x1 - im->x0, im->y1 - im->y0, min_short, min_long);
        if (r > 0 && !opj_set_decoded_resolution_factor(codec, (OPJ_UINT32)r)) r = 0;
        out->reduce = r;
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
