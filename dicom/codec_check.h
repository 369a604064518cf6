/*
 * codec_check.h — bounded structural checks of one compressed frame before
 * any decoder sees it (codec_check.c). Internal to dicom/: plain C, no
 * DCMTK, no OpenJPEG, so tests can call it on bare byte strings.
 *
 *   codec_spec s = {.kind = CODEC_JPEG_BASELINE, .rows = 512, .cols = 512,
 *                   .samples = 1, .bits_allocated = 8, .bits_stored = 8};
 *   char err[CXR_ERRMSG_MAX], warn[CXR_WARNING_MAX];
 *   int rc = codec_check(&s, frame, frame_len, err, sizeof err, warn, sizeof warn);
 *   if (rc != CXR_OK) ...;          // refused: err says what and where
 *   if (warn[0]) ...;               // decodable, but note warn
 *
 * Every check walks the stream once, front to back, never past its end,
 * and costs at most O(len) time and no allocation. A stream it passes may
 * still fail in the codec (bad entropy data); what it refuses is what the
 * codecs this project links (DCMTK 3.6.7's IJG and CharLS, OpenJPEG 2.5)
 * would loop on, trust wrongly, or read past.
 */
#ifndef CXR_CODEC_CHECK_H
#define CXR_CODEC_CHECK_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CODEC_JPEG_BASELINE = 0,   /* 1.2.840.10008.1.2.4.50: 8-bit DCT */
    CODEC_JPEG_EXTENDED = 1,   /* .51: 8- or 12-bit DCT */
    CODEC_JPEG_LOSSLESS = 2,   /* .57 and .70 (SV1): lossless, predictors 1..7 */
    CODEC_JPEGLS = 3,          /* .80 lossless */
    CODEC_JPEGLS_NEAR = 4,     /* .81 near-lossless */
    CODEC_J2K = 5,             /* .90 / .91 and HTJ2K: a J2K code stream or a JP2 file */
    CODEC_RLE = 6              /* .5: PS3.5 Annex G */
} codec_kind;

/* What the DICOM header promises for the frame. */
typedef struct {
    codec_kind kind;
    int rows, cols, samples;
    int bits_allocated, bits_stored;
} codec_spec;

#define JPEG_MAX_SCANS 64      /* scans in one JPEG frame (progressive uses ~10) */
#define J2K_MAX_TILES 4096     /* OpenJPEG allocates state for every declared tile */
#define J2K_MAX_LEVELS 32      /* decomposition levels (T.800 A.6.1) */

/* Check one frame (all its fragments, concatenated) against spec.
 * Returns CXR_OK, CXR_ERR_CORRUPT (a malformed or hostile structure),
 * CXR_ERR_DIMENSIONS (a JPEG 2000 header beyond the decode caps) or
 * CXR_ERR_ARG. err (errlen bytes) gets the detail; warn (warnlen bytes, may
 * be NULL) gets a non-fatal finding or "". */
int codec_check(const codec_spec *spec, const uint8_t *p, size_t n, char *err, size_t errlen, char *warn,
                size_t warnlen);

/* The JPEG 2000 size caps alone (SIZ found by its SOC SIZ signature in the
 * first 64 kB, so inside a JP2 wrapper too): j2k.c's guard for callers that
 * come without a DICOM header. CXR_OK when there is no SIZ to check. */
int codec_check_j2k_caps(const uint8_t *p, size_t n, char *err, size_t errlen);

/* Name of a kind, for messages ("JPEG baseline", …). */
const char *codec_kind_name(codec_kind k);

#ifdef __cplusplus
}
#endif
#endif /* CXR_CODEC_CHECK_H */
