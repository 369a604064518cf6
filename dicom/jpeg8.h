/*
 * jpeg8.h — 8-bit single-component baseline / extended JPEG frames decoded
 * with libjpeg-turbo at a reduced scale (internal to dicom/): the IDCT
 * computes 1/2, 1/4 or 1/8 of each block directly, so a 2k CR needed at
 * 224 px costs a fraction of a full decode. DCMTK stays the decoder of
 * every other JPEG (12-bit, lossless, colour) and the fallback when this
 * one declines.
 */
#ifndef CXR_JPEG8_H
#define CXR_JPEG8_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height;
    int scale;       /* 1, 2, 4 or 8: width = ceil(full width / scale) */
    uint8_t *data;   /* malloc'd, width × height samples */
} jpeg8_image;

/* Decode a one-component 8-bit JPEG code stream at the largest 1/scale
 * (scale 1, 2, 4, 8) whose short side is still ≥ min_short and long side
 * ≥ min_long (both 0: full size). Returns CXR_OK; CXR_ERR_TRANSFER_SYNTAX when
 * the stream is not one this path takes (several components, 12-bit,
 * lossless, progressive): the caller decodes it another way; or
 * CXR_ERR_CORRUPT / CXR_ERR_NOMEM with err set. */
int jpeg8_decode(const uint8_t *cs, size_t len, int min_short, int min_long, jpeg8_image *out, char *err,
                 size_t errlen);
void jpeg8_image_free(jpeg8_image *img);

/* A JPEG file read as a radiograph (ingest.c, like a PNG): 8-bit, one
 * component, or three (YCbCr or RGB) converted to grey; sequential or
 * progressive; scaled as jpeg8_decode. CXR_ERR_PIXEL_FORMAT (12-bit),
 * CXR_ERR_PHOTOMETRIC (CMYK, 2 or 4 components), CXR_ERR_CORRUPT. */
int jpeg8_decode_file(const uint8_t *cs, size_t len, int min_short, int min_long, jpeg8_image *out, char *err,
                      size_t errlen);

/* The frame header of a JPEG file, without decoding: CXR_OK or CXR_ERR_CORRUPT. */
typedef struct {
    int width, height, components, precision, progressive;
} jpeg8_info;
int jpeg8_header(const uint8_t *cs, size_t len, jpeg8_info *info, char *err, size_t errlen);

#endif
