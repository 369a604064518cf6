/*
 * jls.h — our own decoder of single-component JPEG-LS frames (ITU-T T.87,
 * lossless and near-lossless; internal to dicom/). DCMTK 3.6.7 decodes
 * JPEG-LS with the CharLS of 2010 and Debian's CharLS 2.4 measured slower
 * still; a 2k CR spent about two thirds of an ask in it. This decoder does
 * the same arithmetic with one tight loop per line and a 64-bit bit cache.
 *
 * It takes what chest radiographs use: one component, 2..16 bits, any NEAR,
 * default or preset (LSE id 1) parameters. Everything else is declined
 * (CXR_ERR_TRANSFER_SYNTAX: several components, interleaving, mapping
 * tables, restart markers, a point transform, a height given by DNL) and
 * the caller decodes it with DCMTK, as before. Its cost is bounded by the
 * frame size: every sample consumes at least one bit or belongs to a run,
 * and reads past the end of the stream are counted and refused.
 *
 *   jls_image im;
 *   if (jls_decode(cs, len, &im, err, sizeof err) == CXR_OK) { ... im.data ...; jls_image_free(&im); }
 *
 * Set CXR_JLS_DECODER=dcmtk in the environment to decode with DCMTK instead
 * (a diagnostic switch; the tests compare the two bit for bit).
 */
#ifndef CXR_JLS_H
#define CXR_JLS_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height; /* ceil(frame size / 2^reduce) */
    int reduce;      /* 0: every sample; r: the mean of each 2^r x 2^r block */
    int bits;        /* P, the sample precision of the frame header */
    int max_sample;  /* the largest sample decoded (before any block mean) */
    int near;        /* NEAR of the scan (0: lossless) */
    uint16_t *data;  /* width × height samples, row by row; jls_image_free frees it */
    size_t mapped;   /* > 0: data is a mapping of this many bytes */
} jls_image;

/* Decode a JPEG-LS code stream (SOI … EOI) whose frame must be width x
 * height (from the DICOM header; 0: any, CXR_ERR_CORRUPT before anything is
 * allocated otherwise). JPEG-LS has no resolution
 * levels: every sample is decoded, but when min_short / min_long allow
 * (as for j2k_decode: the largest reduction, up to 1/8, whose short side is
 * still >= 2 × min_short and long side >= min_long; both 0: none) the image
 * comes out as the rounded mean of each 2^r x 2^r block, summed as the
 * lines are decoded, and the full frame is never stored. CXR_OK;
 * CXR_ERR_TRANSFER_SYNTAX when the stream uses a feature this decoder
 * declines (above); or CXR_ERR_CORRUPT / CXR_ERR_NOMEM with err set. */
int jls_decode(const uint8_t *cs, size_t len, int width, int height, int min_short, int min_long, jls_image *out,
               char *err, size_t errlen);
void jls_image_free(jls_image *img);

/* 1 unless CXR_JLS_DECODER=dcmtk */
int jls_enabled(void);

#endif
