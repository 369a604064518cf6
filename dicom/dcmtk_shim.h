/*
 * dcmtk_shim.h — the thin extern "C" border around DCMTK (dcmtk_shim.cpp).
 * Internal to dicom/: parse a DICOM byte buffer, report its attributes, and
 * hand out the first frame either decoded (native, RLE, JPEG, JPEG-LS,
 * deflate) or as a JPEG 2000 code stream for j2k.c. Nothing C++ leaks out:
 * every entry point catches every exception.
 */
#ifndef CXR_DCMTK_SHIM_H
#define CXR_DCMTK_SHIM_H

#include "cxr_dicom.h"
#include "pixel.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    SHIM_TS_NATIVE = 0,   /* uncompressed: pixels usable as they are */
    SHIM_TS_DCMTK = 1,    /* compressed, decoded by a DCMTK codec */
    SHIM_TS_J2K = 2,      /* JPEG 2000 / HTJ2K: code stream handed to OpenJPEG */
    SHIM_TS_UNSUPPORTED = 3
} shim_ts_kind;

typedef struct {
    int has_pixel_data;
    int float_pixels;      /* Float / Double Float Pixel Data present */
    int encapsulated;
    shim_ts_kind ts_kind;
    int voi_function;      /* 0 LINEAR, 1 LINEAR_EXACT, 2 SIGMOID, -1 unknown */
    pixel_lut mlut, vlut;   /* n == 0 when absent */
    int n_fragments;       /* encapsulated: pixel items after the offset table */
    int lossy;             /* lossy DCMTK codec (JPEG baseline/extended, JPEG-LS near-lossless) */
    /* corrupt but readable (policy: cxr_ingest_params.damaged): what is
       wrong, and the code a strict caller fails with; "" when intact */
    char damage[CXR_WARNING_MAX];
    int damage_code;
} shim_info;

typedef struct {
    /* decoded frame (ts_kind NATIVE or DCMTK): malloc'd, host byte order,
       bits_allocated/8 bytes per sample, samples interleaved unless planar */
    void *data;
    size_t len;
    int data_borrowed;     /* data points into the buffer given to shim_open
                              (native data already in host order): not freed,
                              valid while that buffer is */
    char photometric[17];  /* after decompression (DCMTK may convert YBR→RGB) */
    int planar_config;
    /* JPEG 2000 (ts_kind J2K), or an 8-bit one-component JPEG or a
       one-component JPEG-LS frame when the caller asked
       (shim_decode_opts.jpeg8_codestream, jls_codestream): malloc'd code
       stream of frame 1, for the caller to decode */
    uint8_t *codestream;
    size_t codestream_len;
    int codestream_jpeg8;  /* 1: the code stream is that JPEG (jpeg8.h) */
    int codestream_jls;    /* 1: a one-component JPEG-LS frame (jls.h) */
    /* corrupt but readable (frames after the first missing), as in shim_info */
    char damage[CXR_WARNING_MAX];
    int damage_code;
    char note[CXR_WARNING_MAX];   /* a plain warning from the stream check, or "" */
} shim_frame;

typedef struct {
    unsigned timeout_ms;   /* deadline of the codec call (deadline.h); 0: none */
    int skip_codec_check;  /* tests only: hand the frame to the codec unchecked */
    int jpeg8_codestream;  /* 1: extract (not decode) a baseline / extended JPEG
                              frame of one 8-bit sample per pixel (jpeg8.h) */
    int jls_codestream;    /* 1: extract (not decode) a JPEG-LS frame of one
                              unsigned sample per pixel (jls.h) */
} shim_decode_opts;

typedef struct shim_ds shim_ds;

/* Parse buf (a Part 10 file, with or without preamble/meta header). Fills
 * meta's identity and pixel-format fields, meta->source (what a report
 * copies; the data set is converted to UTF-8 for it when needed) and *info;
 * does not decode pixels.
 * Returns CXR_OK or CXR_ERR_NOT_DICOM / CXR_ERR_TRUNCATED / CXR_ERR_NOMEM. */
int shim_open(const void *buf, size_t len, shim_ds **out, cxr_meta *meta,
              shim_info *info, char *err, size_t errlen);

/* Decode (or extract) the first frame. Call only after the caller has
 * checked the dimensions in meta. A compressed frame is checked first
 * (codec_check.h); a DCMTK codec then runs under o->timeout_ms
 * (deadline.h): past it, CXR_ERR_DECODE_TIMEOUT, and ds belongs to the
 * abandoned decoder (shim_close leaves it alone). A JPEG 2000 frame is only
 * checked and extracted: the caller decodes it. On success the caller owns
 * fr's buffers (free with shim_frame_free). */
int shim_first_frame(shim_ds *ds, const cxr_meta *meta, const shim_decode_opts *o, shim_frame *fr,
                     char *err, size_t errlen);

void shim_frame_free(shim_frame *fr);
void shim_close(shim_ds *ds);

#ifdef __cplusplus
}
#endif
#endif
