/*
 * ingest.c — the ingestion policy: takes a DICOM or PNG buffer, runs the
 * structural checks (what must never reach the model) before any pixel is
 * decoded, decodes frame 1 (DCMTK shim or OpenJPEG), renders it through
 * pixel.c, then runs the clinical-plausibility checks the caller configured
 * and the chest polarity check. It records in cxr_meta what it trusted and
 * what it did. It must not print, and never touches the model.
 */
#include "cxr_dicom.h"
#include "dcmtk_shim.h"
#include "deadline.h"
#include "codec_check.h"
#include "j2k.h"
#include "jls.h"
#include "jpeg8.h"
#include "pixel.h"
#include "png_io.h"

#include <strings.h>
#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

struct cxr_image {
    cxr_meta meta;
    uint8_t *px;
};

/* Polarity score thresholds. On correctly displayed radiographs of the
 * training sources (5,734 sampled images, tests/ref/polarity_stats.py) the
 * score's 0.5th percentile is 0.01 and 2 images (0.03%) fall below -0.15;
 * an inverted image scores the negative of its true score (median -0.28).
 * Below FLIP the pixels are trusted over the header; below WARN the image
 * is flagged. */
#define POLARITY_FLIP_BELOW (-0.15)
#define POLARITY_WARN_BELOW 0.0

/* The environment's decode deadline, for tests and operators. */
#define DECODE_TIMEOUT_ENV "CXRVQA_DECODE_TIMEOUT_MS"
#define DECODE_TIMEOUT_MAX_MS 600000u

cxr_ingest_params cxr_ingest_params_default(void) {
    cxr_ingest_params p = {
        .not_chest = CXR_CHECK_WARN,
        .lateral = CXR_CHECK_WARN,
        .small = CXR_CHECK_WARN,
        .polarity = CXR_POLARITY_AUTO,
        .allow_png = 1,
        .allow_jpeg = 1,
        .threads = 1,
        .damaged = CXR_CHECK_WARN,
        .decode_timeout_ms = CXR_DECODE_TIMEOUT_MS,
    };
    const char *e = getenv(DECODE_TIMEOUT_ENV);
    if (e && *e) {
        char *end = NULL;
        unsigned long v = strtoul(e, &end, 10);
        if (end && !*end && v <= DECODE_TIMEOUT_MAX_MS) p.decode_timeout_ms = (unsigned)v;
    }
    return p;
}

static void warn(cxr_meta *m, const char *fmt, ...) {
    if (m->n_warnings >= CXR_MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(m->warnings[m->n_warnings++], CXR_WARNING_MAX, fmt, ap);
    va_end(ap);
}

static int has_word(const char *s, const char *w) {
    size_t n = strlen(w);
    for (; *s; s++)
        if (strncasecmp(s, w, n) == 0) return 1;
    return 0;
}

/* SOP classes that carry no radiograph even when they hold pixel-like data. */
static int non_image_sop(const char *uid) {
    static const char *prefixes[] = {
        "1.2.840.10008.5.1.4.1.1.88.",  /* structured reports, KOS */
        "1.2.840.10008.5.1.4.1.1.11.",  /* presentation states */
        "1.2.840.10008.5.1.4.1.1.104.", /* encapsulated documents */
        "1.2.840.10008.5.1.4.1.1.9.",   /* waveforms */
        "1.2.840.10008.5.1.4.1.1.66",   /* raw data, registration, segmentation */
        "1.2.840.10008.5.1.4.1.1.481.", /* radiotherapy objects */
        "1.2.840.10008.3.1.2.",         /* worklists, MPPS */
    };
    for (size_t i = 0; i < sizeof prefixes / sizeof prefixes[0]; i++)
        if (strncmp(uid, prefixes[i], strlen(prefixes[i])) == 0) return 1;
    return 0;
}

/* Apply a check's action; returns CXR_OK or code. */
static int check(cxr_check_action a, int code, cxr_meta *m, char *err, size_t errlen, const char *msg) {
    if (a == CXR_CHECK_IGNORE) return CXR_OK;
    if (a == CXR_CHECK_REFUSE) {
        snprintf(err, errlen, "%s", msg);
        return code;
    }
    warn(m, "%s", msg);
    return CXR_OK;
}

static int clinical_checks(const cxr_ingest_params *p, cxr_meta *m, int is_png, char *err, size_t errlen) {
    char msg[CXR_WARNING_MAX + 2 * CXR_STR_MAX];
    int rc;
    if (!is_png) {
        int mod_ok = !strcmp(m->modality, "CR") || !strcmp(m->modality, "DX");
        int body_ok = !m->body_part[0] || has_word(m->body_part, "CHEST") ||
                      has_word(m->body_part, "THORAX") || has_word(m->body_part, "LUNG");
        if (!mod_ok || !body_ok) {
            snprintf(msg, sizeof msg, "not a chest radiograph by its header: modality '%s', body part '%s'",
                     m->modality, m->body_part);
            if ((rc = check(p->not_chest, CXR_ERR_NOT_CHEST, m, err, errlen, msg)) != CXR_OK) return rc;
        }
        const char *v = m->view_position;
        if (!strcmp(v, "LL") || !strcmp(v, "RL") || !strcasecmp(v, "LATERAL") || !strcasecmp(v, "LAT")) {
            snprintf(msg, sizeof msg, "lateral view (View Position '%s'); the model expects a frontal view", v);
            if ((rc = check(p->lateral, CXR_ERR_LATERAL, m, err, errlen, msg)) != CXR_OK) return rc;
        }
    }
    int shortside = m->rows < m->cols ? m->rows : m->cols;
    if (shortside < p->min_dim) {
        snprintf(msg, sizeof msg, "image too small for this model (%dx%d): the model reads %d pixels a side",
                 m->cols, m->rows, p->min_dim);
        if ((rc = check(CXR_CHECK_REFUSE, CXR_ERR_TOO_SMALL, m, err, errlen, msg)) != CXR_OK) return rc;
    } else if (shortside < CXR_SMALL_DIM) {
        snprintf(msg, sizeof msg, "small image (%dx%d); radiographs are usually at least %d pixels a side",
                 m->cols, m->rows, CXR_SMALL_DIM);
        if ((rc = check(p->small, CXR_ERR_TOO_SMALL, m, err, errlen, msg)) != CXR_OK) return rc;
    }
    return CXR_OK;
}

static int structural_checks(cxr_meta *m, const shim_info *in, char *err, size_t errlen) {
    if (in->float_pixels) {
        snprintf(err, errlen, "float pixel data is not supported for radiographs");
        return CXR_ERR_PIXEL_FORMAT;
    }
    if (non_image_sop(m->sop_class_uid)) {
        snprintf(err, errlen, "SOP class %s is not an image", m->sop_class_uid);
        return CXR_ERR_NOT_IMAGE;
    }
    if (!in->has_pixel_data) {
        snprintf(err, errlen, "no Pixel Data (7FE0,0010) in SOP class %s", m->sop_class_uid[0] ? m->sop_class_uid : "(none)");
        return CXR_ERR_NOT_IMAGE;
    }
    if (!m->photometric[0]) {
        snprintf(err, errlen, "Photometric Interpretation (0028,0004) is missing");
        return CXR_ERR_PHOTOMETRIC;
    }
    if (pixel_photometric_parse(m->photometric) == PHOTO_UNSUPPORTED) {
        snprintf(err, errlen, "Photometric Interpretation '%s' is not supported", m->photometric);
        return CXR_ERR_PHOTOMETRIC;
    }
    if (m->rows < 1 || m->cols < 1 || m->rows > CXR_MAX_DIM || m->cols > CXR_MAX_DIM) {
        snprintf(err, errlen, "image size %dx%d outside 1..%d", m->cols, m->rows, CXR_MAX_DIM);
        return CXR_ERR_DIMENSIONS;
    }
    if (m->frames < 1 || m->frames > CXR_MAX_FRAMES) {
        snprintf(err, errlen, "Number of Frames %d outside 1..%d", m->frames, CXR_MAX_FRAMES);
        return CXR_ERR_DIMENSIONS;
    }
    int spp = m->samples_per_pixel;
    if (spp != 1 && spp != 3) {
        snprintf(err, errlen, "Samples per Pixel %d (1 or 3 supported)", spp);
        return CXR_ERR_PIXEL_FORMAT;
    }
    pixel_photometric ph = pixel_photometric_parse(m->photometric);
    if ((ph == PHOTO_MONOCHROME1 || ph == PHOTO_MONOCHROME2) != (spp == 1)) {
        snprintf(err, errlen, "Photometric Interpretation %s with Samples per Pixel %d", m->photometric, spp);
        return CXR_ERR_PIXEL_FORMAT;
    }
    int rc = pixel_check_format(m->bits_allocated, m->bits_stored, m->high_bit, m->pixel_representation, err, errlen);
    if (rc != CXR_OK) return rc;
    uint64_t pixels = (uint64_t)m->rows * (uint64_t)m->cols;
    uint64_t bytes = pixels * (uint64_t)spp * (uint64_t)(m->bits_allocated / 8) * (uint64_t)m->frames;
    if (pixels > CXR_MAX_PIXELS || bytes > CXR_MAX_DECODED_BYTES) {
        snprintf(err, errlen, "declared image of %dx%dx%d frames needs %llu bytes (cap %llu)", m->cols, m->rows,
                 m->frames, (unsigned long long)bytes, (unsigned long long)CXR_MAX_DECODED_BYTES);
        return CXR_ERR_DIMENSIONS;
    }
    if (m->rows < CXR_MIN_DIM || m->cols < CXR_MIN_DIM) {
        snprintf(err, errlen, "image of %dx%d is below the %d-pixel minimum", m->cols, m->rows, CXR_MIN_DIM);
        return CXR_ERR_TOO_SMALL;
    }
    /* a NaN or infinite rescale maps every stored value to nothing; a
       non-finite window is dropped (the fallback window applies) */
    if (m->has_rescale && (!isfinite(m->rescale_slope) || !isfinite(m->rescale_intercept))) {
        snprintf(err, errlen, "Rescale Slope %g / Intercept %g: not finite numbers", m->rescale_slope,
                 m->rescale_intercept);
        return CXR_ERR_CORRUPT;
    }
    if (m->n_windows > 0 && (!isfinite(m->window_center) || !isfinite(m->window_width))) {
        warn(m, "Window Center %g / Width %g not finite: ignored", m->window_center, m->window_width);
        m->n_windows = 0;
        m->window_center = m->window_width = 0;
    }
    if (in->voi_function < 0) {
        warn(m, "VOI LUT Function '%s' unknown; LINEAR used", m->voi_function);
    }
    return CXR_OK;
}

/* Fill f's VOI/modality fields from meta and shim info. */
static void frame_luts(pixel_frame *f, const cxr_meta *m, const shim_info *in) {
    f->has_rescale = m->has_rescale;
    f->slope = m->rescale_slope;
    f->intercept = m->rescale_intercept;
    f->mlut = in->mlut;
    f->vlut = in->vlut;
    f->has_window = m->n_windows > 0;
    f->wc = m->window_center;
    f->ww = m->window_width;
    f->voi_func = in->voi_function > 0 ? (pixel_voi_function)in->voi_function : VOI_LINEAR;
}

static void record(cxr_meta *m, const pixel_report *r) {
    m->voi_used = (cxr_voi_kind)r->voi_used;
    m->voi_center = r->center;
    m->voi_width = r->width;
    m->modality_lut_applied = r->modality_applied;
    m->inverted = r->inverted;
}

/* A code stream decoder (OpenJPEG, libjpeg-turbo for 8-bit JPEG, ours for
 * JPEG-LS) under the deadline: the job owns the code stream, the output and
 * its own error text, so an abandoned decoder writes nothing of ours. */
enum { CODEC_RUN_J2K, CODEC_RUN_JPEG8, CODEC_RUN_JPEG_FILE, CODEC_RUN_JLS };
typedef struct {
    j2k_image j2k;
    jpeg8_image jpg;
    jls_image jls;
} codec_out;
typedef struct {
    uint8_t *cs;
    size_t len;
    int kind, threads, min_short, min_long, width, height, rc;
    codec_out o;
    char err[CXR_ERRMSG_MAX];
} codec_job;

static void codec_out_free(codec_out *o) {
    j2k_image_free(&o->j2k);
    jpeg8_image_free(&o->jpg);
    jls_image_free(&o->jls);
}

static void codec_work(void *arg) {
    codec_job *j = arg;
    if (j->kind == CODEC_RUN_J2K)
        j->rc = j2k_decode(j->cs, j->len, j->threads, j->min_short, j->min_long, &j->o.j2k, j->err, sizeof j->err);
    else if (j->kind == CODEC_RUN_JPEG8)
        j->rc = jpeg8_decode(j->cs, j->len, j->min_short, j->min_long, &j->o.jpg, j->err, sizeof j->err);
    else if (j->kind == CODEC_RUN_JLS)
        j->rc = jls_decode(j->cs, j->len, j->width, j->height, j->min_short, j->min_long, &j->o.jls, j->err,
                           sizeof j->err);
    else
        j->rc = jpeg8_decode_file(j->cs, j->len, j->min_short, j->min_long, &j->o.jpg, j->err, sizeof j->err);
}

/* Decode the code stream *cs (kind CODEC_RUN_*; a JPEG-LS frame must be
 * width x height) into *out. On a timeout *cs becomes the abandoned
 * decoder's (set to NULL here). */
static int decode_bounded(uint8_t **cs, size_t *cs_len, const cxr_ingest_params *p, int kind, int width, int height,
                          codec_out *out, char *err, size_t errlen) {
    codec_job *j = calloc(1, sizeof *j);
    if (!j) return CXR_ERR_NOMEM;
    j->cs = *cs;
    j->len = *cs_len;
    j->kind = kind;
    j->threads = p->threads;
    j->min_short = p->decode_min_short;
    j->min_long = p->decode_min_long;
    j->width = width;
    j->height = height;
    int rc = deadline_run(codec_work, j, p->decode_timeout_ms);
    if (rc == CXR_ERR_DECODE_TIMEOUT) {
        *cs = NULL; /* the abandoned decoder's now, like j */
        *cs_len = 0;
        snprintf(err, errlen, "%s decoder did not finish frame 1 within %u ms; it was abandoned (this process is "
                 "now tainted)", kind == CODEC_RUN_J2K ? "JPEG 2000" : kind == CODEC_RUN_JLS ? "JPEG-LS" : "JPEG",
                 p->decode_timeout_ms);
        return rc;
    }
    if (rc == CXR_OK) {
        rc = j->rc;
        *out = j->o;
        if (rc != CXR_OK) snprintf(err, errlen, "%s", j->err);
    } else {
        snprintf(err, errlen, "cannot start the decoder thread");
    }
    free(j);
    return rc;
}

/* A corrupt-but-readable finding: a warning, or the refusal a strict
 * caller asked for. */
static int damage(cxr_check_action a, int code, cxr_meta *m, char *err, size_t errlen, const char *what) {
    if (!what[0]) return CXR_OK;
    return check(a, code, m, err, errlen, what);
}

static int decode_dicom(const void *buf, size_t len, const cxr_ingest_params *p, cxr_image *img,
                        char *err, size_t errlen) {
    cxr_meta *m = &img->meta;
    shim_ds *ds = NULL;
    shim_info in;
    shim_frame fr;
    codec_out co;
    memset(&co, 0, sizeof co);
    const j2k_image *ji = &co.j2k;
    const jpeg8_image *jp = &co.jpg;
    const jls_image *jl = &co.jls;
    memset(&fr, 0, sizeof fr);
    int rc = shim_open(buf, len, &ds, m, &in, err, errlen);
    if (rc != CXR_OK) return rc;
    if ((rc = structural_checks(m, &in, err, errlen)) != CXR_OK) goto out;
    if ((rc = damage(p->damaged, in.damage_code, m, err, errlen, in.damage)) != CXR_OK) goto out;
    if ((rc = clinical_checks(p, m, 0, err, errlen)) != CXR_OK) goto out;
    if (in.ts_kind == SHIM_TS_UNSUPPORTED) {
        snprintf(err, errlen, "transfer syntax %s (%s) is not supported", m->transfer_syntax,
                 m->transfer_syntax_uid);
        rc = CXR_ERR_TRANSFER_SYNTAX;
        goto out;
    }
    /* an 8-bit grey JPEG wanted smaller than it is: libjpeg-turbo's scaled
       IDCT; a grey JPEG-LS frame: our decoder (jls.h) */
    shim_decode_opts dop = {p->decode_timeout_ms, 0, p->decode_min_short > 0 || p->decode_min_long > 0,
                            jls_enabled()};
    if ((rc = shim_first_frame(ds, m, &dop, &fr, err, errlen)) != CXR_OK) goto out;
    if (fr.codestream_jpeg8 || fr.codestream_jls) {
        int jls = fr.codestream_jls;
        rc = decode_bounded(&fr.codestream, &fr.codestream_len, p, jls ? CODEC_RUN_JLS : CODEC_RUN_JPEG8, m->cols,
                            m->rows, &co, err, errlen);
        if (rc == CXR_ERR_DECODE_TIMEOUT || rc == CXR_ERR_NOMEM) goto out;
        if (rc == CXR_OK && !jls && (jp->width != (m->cols + jp->scale - 1) / jp->scale ||
                                     jp->height != (m->rows + jp->scale - 1) / jp->scale)) {
            snprintf(err, errlen, "JPEG stream is %dx%d at 1/%d; header says %dx%d", jp->width, jp->height, jp->scale,
                     m->cols, m->rows);
            rc = CXR_ERR_CORRUPT;
            goto out;
        }
        /* a JPEG-LS frame unlike its header is DCMTK's to judge, as before;
           and block means stand for the pixels only when no sample has bits
           above Bits Stored (the pipeline masks those; DCMTK's encoder writes
           P = 16 for 12-bit data) */
        const int jq = (1 << jl->reduce) - 1;
        if (rc == CXR_OK && jls &&
            (jl->width != (m->cols + jq) >> jl->reduce || jl->height != (m->rows + jq) >> jl->reduce ||
             (jl->reduce && ((jl->max_sample >> m->bits_stored) || m->high_bit != m->bits_stored - 1))))
            rc = CXR_ERR_CORRUPT;
        if (rc != CXR_OK) { /* declined or failed: DCMTK decodes it, as before */
            codec_out_free(&co);
            shim_frame_free(&fr);
            memset(&fr, 0, sizeof fr);
            err[0] = '\0';
            dop.jpeg8_codestream = dop.jls_codestream = 0;
            if ((rc = shim_first_frame(ds, m, &dop, &fr, err, errlen)) != CXR_OK) goto out;
        }
    }
    if ((rc = damage(p->damaged, fr.damage_code, m, err, errlen, fr.damage)) != CXR_OK) goto out;
    if (fr.note[0]) warn(m, "%s", fr.note);

    pixel_frame f;
    memset(&f, 0, sizeof f);
    f.rows = m->rows;
    f.cols = m->cols;
    f.spp = m->samples_per_pixel;
    f.planar = fr.planar_config;
    f.bits_allocated = m->bits_allocated;
    f.bits_stored = m->bits_stored;
    f.high_bit = m->high_bit;
    f.pixel_rep = m->pixel_representation;
    f.data = fr.data;
    f.photometric = pixel_photometric_parse(fr.photometric);
    if (strcmp(fr.photometric, m->photometric))
        warn(m, "decoder changed Photometric Interpretation %s -> %s", m->photometric, fr.photometric);
    if (in.ts_kind == SHIM_TS_J2K) {
        rc = decode_bounded(&fr.codestream, &fr.codestream_len, p, CODEC_RUN_J2K, m->cols, m->rows, &co, err, errlen);
        if (rc != CXR_OK) goto out;
        int q = (1 << ji->reduce) - 1; /* a reduced decode is ceil(size / 2^reduce) */
        if (ji->width != (m->cols + q) >> ji->reduce || ji->height != (m->rows + q) >> ji->reduce ||
            ji->ncomp != m->samples_per_pixel) {
            snprintf(err, errlen, "JPEG 2000 stream is %dx%d with %d components; header says %dx%d with %d",
                     ji->width << ji->reduce, ji->height << ji->reduce, ji->ncomp, m->cols, m->rows, m->samples_per_pixel);
            rc = CXR_ERR_CORRUPT;
            goto out;
        }
        f.rows = ji->height;
        f.cols = ji->width;
        m->decode_reduce = ji->reduce;
        f.data = ji->data;
        f.bits_allocated = 16;
        f.planar = 1;
        if (ji->prec > f.bits_stored) {
            warn(m, "JPEG 2000 precision %d bits exceeds Bits Stored %d; stream precision used", ji->prec, f.bits_stored);
            f.bits_stored = ji->prec;
        }
        f.high_bit = f.bits_stored - 1;
        if (ji->ncomp == 3 && f.photometric != PHOTO_RGB) f.photometric = PHOTO_RGB; /* OpenJPEG undid the MCT */
    }
    if (jp->data) {
        f.data = jp->data;
        f.rows = jp->height;
        f.cols = jp->width;
        f.bits_allocated = 8;
        f.planar = 0;
        /* whole powers of two, as a JPEG 2000 level: 1, 2 or 3 levels */
        m->decode_reduce = jp->scale == 8 ? 3 : jp->scale == 4 ? 2 : jp->scale == 2 ? 1 : 0;
    }
    if (jl->data) { /* the samples as DCMTK gives them (or block means of them), in 16 bits */
        f.data = jl->data;
        f.rows = jl->height;
        f.cols = jl->width;
        f.bits_allocated = 16;
        f.planar = 0;
        m->decode_reduce = jl->reduce;
    }
    f.invert = f.photometric == PHOTO_MONOCHROME1;
    /* a lossy decoder may overshoot Bits Stored (WG04 RG3 JPLY decodes 1024 in a
       10-bit image): clamp, do not let masking wrap it to 0 */
    f.clamp = in.lossy && f.high_bit == f.bits_stored - 1;
    frame_luts(&f, m, &in);
    if (m->frames > 1) warn(m, "multi-frame image (%d frames): the first frame is used", m->frames);

    img->px = malloc((size_t)f.rows * f.cols);
    if (!img->px) { rc = CXR_ERR_NOMEM; goto out; }
    pixel_report rep;
    if ((rc = pixel_render(&f, img->px, &rep, err, errlen)) != CXR_OK) goto out;
    record(m, &rep);
    m->out_rows = f.rows;
    m->out_cols = f.cols;
    rc = CXR_OK;
out:
    codec_out_free(&co);
    shim_frame_free(&fr);
    shim_close(ds);
    return rc;
}

static int decode_png(const void *buf, size_t len, const cxr_ingest_params *p, cxr_image *img,
                      char *err, size_t errlen) {
    cxr_meta *m = &img->meta;
    png_plane pl;
    int rc = png_read_buffer(buf, len, &pl, err, errlen);
    if (rc != CXR_OK) return rc;
    snprintf(m->transfer_syntax, sizeof m->transfer_syntax, "PNG");
    snprintf(m->photometric, sizeof m->photometric, "%s", pl.channels == 3 ? "RGB" : "MONOCHROME2");
    m->rows = m->out_rows = pl.height;
    m->cols = m->out_cols = pl.width;
    m->frames = 1;
    m->samples_per_pixel = pl.channels;
    m->bits_allocated = m->bits_stored = pl.bits;
    m->high_bit = pl.bits - 1;
    m->rescale_slope = 1.0;
    if (m->rows < CXR_MIN_DIM || m->cols < CXR_MIN_DIM) {
        snprintf(err, errlen, "image of %dx%d is below the %d-pixel minimum", m->cols, m->rows, CXR_MIN_DIM);
        png_plane_free(&pl);
        return CXR_ERR_TOO_SMALL;
    }
    if ((rc = clinical_checks(p, m, 1, err, errlen)) != CXR_OK) {
        png_plane_free(&pl);
        return rc;
    }
    pixel_frame f;
    memset(&f, 0, sizeof f);
    f.rows = pl.height;
    f.cols = pl.width;
    f.spp = pl.channels;
    f.bits_allocated = f.bits_stored = pl.bits;
    f.high_bit = pl.bits - 1;
    f.data = pl.data;
    f.photometric = pl.channels == 3 ? PHOTO_RGB : PHOTO_MONOCHROME2;
    img->px = malloc((size_t)f.rows * f.cols);
    if (!img->px) {
        png_plane_free(&pl);
        return CXR_ERR_NOMEM;
    }
    pixel_report rep;
    rc = pixel_render(&f, img->px, &rep, err, errlen);
    png_plane_free(&pl);
    if (rc == CXR_OK) record(m, &rep);
    return rc;
}

/* A JPEG file (not a DICOM frame): SOI then a marker, and no DICOM preamble's "DICM". */
static int is_jpeg_file(const void *buf, size_t len) {
    const uint8_t *b = buf;
    return len >= 4 && b[0] == 0xff && b[1] == 0xd8 && b[2] == 0xff && !(len >= 132 && !memcmp(b + 128, "DICM", 4));
}

/* A JPEG file as a radiograph, as a PNG is: no header to check but its
 * size; colour read as grey; scaled down in the IDCT when the caller needs
 * fewer pixels (decode_min_*), as a DICOM JPEG frame. */
static int decode_jpeg_file(const void *buf, size_t len, const cxr_ingest_params *p, cxr_image *img, char *err,
                            size_t errlen) {
    cxr_meta *m = &img->meta;
    jpeg8_info ji;
    int rc = jpeg8_header(buf, len, &ji, err, errlen);
    if (rc != CXR_OK) return rc;
    snprintf(m->transfer_syntax, sizeof m->transfer_syntax, "JPEG");
    if (ji.precision != 8 || (ji.components != 1 && ji.components != 3)) {
        snprintf(err, errlen, "JPEG with %d component%s at %d bits%s: only 8-bit grey or colour JPEG files are read",
                 ji.components, ji.components == 1 ? "" : "s", ji.precision, ji.components == 4 ? " (CMYK)" : "");
        return ji.precision != 8 ? CXR_ERR_PIXEL_FORMAT : CXR_ERR_PHOTOMETRIC;
    }
    snprintf(m->photometric, sizeof m->photometric, "%s", ji.components == 3 ? "RGB" : "MONOCHROME2");
    m->rows = ji.height;
    m->cols = ji.width;
    m->frames = 1;
    m->samples_per_pixel = ji.components;
    m->bits_allocated = m->bits_stored = ji.precision;
    m->high_bit = ji.precision - 1;
    m->rescale_slope = 1.0;
    if (m->rows > CXR_MAX_DIM || m->cols > CXR_MAX_DIM) {
        snprintf(err, errlen, "image size %dx%d outside 1..%d", m->cols, m->rows, CXR_MAX_DIM);
        return CXR_ERR_DIMENSIONS;
    }
    if (m->rows < CXR_MIN_DIM || m->cols < CXR_MIN_DIM) {
        snprintf(err, errlen, "image of %dx%d is below the %d-pixel minimum", m->cols, m->rows, CXR_MIN_DIM);
        return CXR_ERR_TOO_SMALL;
    }
    /* the structure walk every JPEG frame gets before a decoder sees it */
    codec_spec cs = {.kind = CODEC_JPEG_BASELINE, .rows = m->rows, .cols = m->cols, .samples = ji.components,
                     .bits_allocated = 8, .bits_stored = ji.precision};
    char cw[CXR_WARNING_MAX] = "";
    if ((rc = codec_check(&cs, buf, len, err, errlen, cw, sizeof cw)) != CXR_OK) return rc;
    if ((rc = clinical_checks(p, m, 1, err, errlen)) != CXR_OK) return rc;
    /* the job reads the stream: on a timeout the abandoned decoder may still read it, so it gets its own copy */
    uint8_t *copy = malloc(len);
    size_t clen = len;
    if (!copy) return CXR_ERR_NOMEM;
    memcpy(copy, buf, len);
    codec_out co;
    memset(&co, 0, sizeof co);
    rc = decode_bounded(&copy, &clen, p, CODEC_RUN_JPEG_FILE, 0, 0, &co, err, errlen);
    jpeg8_image jp = co.jpg;
    free(copy); /* NULL after a timeout: the abandoned decoder's */
    if (rc != CXR_OK) return rc;
    pixel_frame f;
    memset(&f, 0, sizeof f);
    f.rows = jp.height;
    f.cols = jp.width;
    f.spp = 1;
    f.bits_allocated = f.bits_stored = 8;
    f.high_bit = 7;
    f.data = jp.data;
    f.photometric = PHOTO_MONOCHROME2;
    m->decode_reduce = jp.scale == 8 ? 3 : jp.scale == 4 ? 2 : jp.scale == 2 ? 1 : 0;
    img->px = malloc((size_t)f.rows * f.cols);
    if (!img->px) {
        jpeg8_image_free(&jp);
        return CXR_ERR_NOMEM;
    }
    pixel_report rep;
    rc = pixel_render(&f, img->px, &rep, err, errlen);
    jpeg8_image_free(&jp);
    if (rc != CXR_OK) return rc;
    record(m, &rep);
    m->out_rows = f.rows;
    m->out_cols = f.cols;
    if (cw[0]) warn(m, "%s", cw);
    return CXR_OK;
}

/* Chest polarity: flip a frame whose display contradicts its header. */
static void polarity(const cxr_ingest_params *p, cxr_image *img) {
    cxr_meta *m = &img->meta;
    int mono = !strcmp(m->photometric, "MONOCHROME1") || !strcmp(m->photometric, "MONOCHROME2");
    if (!mono) return;
    m->polarity_score = pixel_polarity_score(img->px, m->out_rows, m->out_cols);
    int chest = (!m->modality[0] || !strcmp(m->modality, "CR") || !strcmp(m->modality, "DX")) &&
                (!m->body_part[0] || has_word(m->body_part, "CHEST") || has_word(m->body_part, "THORAX"));
    if (!chest || m->polarity_score >= POLARITY_WARN_BELOW) return;
    if (m->polarity_score >= POLARITY_FLIP_BELOW) {
        warn(m, "image polarity uncertain (score %.3f): check that it is not inverted", m->polarity_score);
        return;
    }
    if (p->polarity == CXR_POLARITY_HEADER) {
        warn(m, "image looks inverted for its Photometric Interpretation %s (polarity score %.3f); header trusted",
             m->photometric, m->polarity_score);
        return;
    }
    size_t n = (size_t)m->out_rows * m->out_cols;
    for (size_t i = 0; i < n; i++) img->px[i] = (uint8_t)(255 - img->px[i]);
    m->inverted = !m->inverted;
    m->polarity_from_content = 1;
    warn(m, "header says %s but the pixels look %s (polarity score %.3f); trusted the pixels",
         m->photometric, !strcmp(m->photometric, "MONOCHROME1") ? "MONOCHROME2" : "MONOCHROME1",
         m->polarity_score);
    m->polarity_score = -m->polarity_score;
}

int cxr_image_load_buffer(const void *buf, size_t len, const cxr_ingest_params *pin, cxr_image **out,
                          char *err, size_t errlen) {
    return cxr_image_load_buffer_ex(buf, len, pin, out, NULL, err, errlen);
}

int cxr_image_load_buffer_ex(const void *buf, size_t len, const cxr_ingest_params *pin, cxr_image **out,
                             cxr_meta *partial, char *err, size_t errlen) {
    char dummy[8];
    if (partial) memset(partial, 0, sizeof *partial);
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!out) return CXR_ERR_ARG;
    *out = NULL;
    if (!buf && len) return CXR_ERR_ARG;
    cxr_ingest_params p = pin ? *pin : cxr_ingest_params_default();
    if (len == 0) {
        snprintf(err, errlen, "empty input");
        return CXR_ERR_NOT_DICOM;
    }
    cxr_image *img = calloc(1, sizeof *img);
    if (!img) return CXR_ERR_NOMEM;
    int rc;
    if (png_is_png(buf, len)) {
        if (!p.allow_png) {
            snprintf(err, errlen, "PNG input is disabled");
            rc = CXR_ERR_NOT_DICOM;
        } else {
            rc = decode_png(buf, len, &p, img, err, errlen);
        }
    } else if (is_jpeg_file(buf, len)) {
        if (!p.allow_jpeg) {
            snprintf(err, errlen, "JPEG file input is disabled");
            rc = CXR_ERR_NOT_DICOM;
        } else {
            rc = decode_jpeg_file(buf, len, &p, img, err, errlen);
        }
    } else {
        rc = decode_dicom(buf, len, &p, img, err, errlen);
    }
    if (rc == CXR_OK) {
        polarity(&p, img);
        if (img->meta.polarity_from_content == 0 && img->meta.voi_used == CXR_VOI_FALLBACK)
            warn(&img->meta, "no VOI information; percentile window %.1f/%.1f used", img->meta.voi_center,
                 img->meta.voi_width);
    }
    if (rc != CXR_OK) {
        if (!err[0]) snprintf(err, errlen, "%s", cxr_strerror(rc));
        if (partial) *partial = img->meta;
        cxr_image_free(img);
        return rc;
    }
    *out = img;
    return CXR_OK;
}

int cxr_image_load_file(const char *path, const cxr_ingest_params *p, cxr_image **out, char *err,
                        size_t errlen) {
    return cxr_image_load_file_ex(path, p, out, NULL, err, errlen);
}

int cxr_image_load_file_ex(const char *path, const cxr_ingest_params *p, cxr_image **out, cxr_meta *partial,
                           char *err, size_t errlen) {
    char dummy[8];
    if (partial) memset(partial, 0, sizeof *partial);
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!out) return CXR_ERR_ARG;
    *out = NULL;
    if (!path) return CXR_ERR_ARG;
    FILE *fp = fopen(path, "rb");
    if (!fp) {
        snprintf(err, errlen, "cannot open: %s", strerror(errno));
        return CXR_ERR_IO;
    }
    struct stat st;
    if (fstat(fileno(fp), &st) != 0 || !S_ISREG(st.st_mode)) {
        fclose(fp);
        snprintf(err, errlen, "not a regular file");
        return CXR_ERR_IO;
    }
    if ((unsigned long long)st.st_size > CXR_MAX_DECODED_BYTES + (64ull << 20)) {
        fclose(fp);
        snprintf(err, errlen, "file of %lld bytes exceeds the input cap", (long long)st.st_size);
        return CXR_ERR_DIMENSIONS;
    }
    size_t len = (size_t)st.st_size;
    void *buf = malloc(len ? len : 1);
    if (!buf) {
        fclose(fp);
        return CXR_ERR_NOMEM;
    }
    size_t got = len ? fread(buf, 1, len, fp) : 0;
    fclose(fp);
    if (got != len) {
        free(buf);
        snprintf(err, errlen, "read error");
        return CXR_ERR_IO;
    }
    int rc = cxr_image_load_buffer_ex(buf, len, p, out, partial, err, errlen);
    free(buf);
    return rc;
}

void cxr_image_free(cxr_image *img) {
    if (!img) return;
    free(img->px);
    free(img);
}

const cxr_meta *cxr_image_meta(const cxr_image *img) { return img ? &img->meta : NULL; }
const uint8_t *cxr_image_pixels(const cxr_image *img) { return img ? img->px : NULL; }

int cxr_image_write_png(const cxr_image *img, const char *path, char *err, size_t errlen) {
    if (!img || !path) return CXR_ERR_ARG;
    return png_write_gray8(path, img->px, img->meta.out_rows, img->meta.out_cols, err, errlen);
}

int cxr_image_to_tensor(const cxr_image *img, const cxr_preproc *s, float *out) {
    if (!img) return CXR_ERR_ARG;
    return cxr_plane_to_tensor(img->px, img->meta.out_rows, img->meta.out_cols, s, out);
}

const char *cxr_voi_name(cxr_voi_kind k) {
    switch (k) {
    case CXR_VOI_WINDOW: return "window";
    case CXR_VOI_LUT: return "lut-sequence";
    case CXR_VOI_FALLBACK: return "fallback-percentile";
    case CXR_VOI_IDENTITY: return "identity";
    default: return "none";
    }
}
