/*
 * j2k.h — JPEG 2000 decoding with OpenJPEG (internal to dicom/). Debian's
 * DCMTK has no JPEG 2000 codec, so encapsulated JPEG 2000 frames come here
 * as a code stream (raw J2K or JP2-wrapped).
 */
#ifndef CXR_J2K_H
#define CXR_J2K_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height, ncomp;
    int prec;        /* bits per sample of component 0 */
    int sgnd;        /* samples are signed */
    uint16_t *data;  /* malloc'd; ncomp planes of width*height, two's complement in prec bits */
    int reduce;      /* resolution levels dropped: width = ceil(full width / 2^reduce) */
} j2k_image;

/* Decode with nthreads OpenJPEG threads (1 = no extra threads), at the
 * lowest resolution level of the code stream whose short side is still
 * ≥ min_short and long side ≥ min_long (both 0: full resolution; the
 * wavelet's own low-pass is the resampling filter). Returns CXR_OK,
 * CXR_ERR_CORRUPT, CXR_ERR_DIMENSIONS or CXR_ERR_NOMEM. */
int j2k_decode(const uint8_t *cs, size_t len, int nthreads, int min_short, int min_long, j2k_image *out, char *err,
               size_t errlen);
void j2k_image_free(j2k_image *img);

#endif
