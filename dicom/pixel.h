/*
 * pixel.h — plain-C pixel math of the DICOM grayscale pipeline (internal to
 * dicom/, no DCMTK): stored-value extraction, Modality LUT, VOI LUT,
 * MONOCHROME1 inversion, colour → luminance, the fallback window and the
 * chest polarity check. Each stage is a pure function so tests can compare
 * it with a naive twin and with pydicom.
 */
#ifndef CXR_PIXEL_H
#define CXR_PIXEL_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int n;            /* entries; 0 = no LUT */
    int first;        /* first input value mapped */
    int bits;         /* bits per entry (descriptor) */
    const uint16_t *data;
} pixel_lut;

typedef enum {
    PHOTO_MONOCHROME1 = 0, PHOTO_MONOCHROME2, PHOTO_RGB, PHOTO_YBR_FULL,
    PHOTO_YBR_FULL_422, PHOTO_YBR_PARTIAL_422, PHOTO_YBR_PARTIAL_420,
    PHOTO_YBR_ICT, PHOTO_YBR_RCT, PHOTO_UNSUPPORTED
} pixel_photometric;

pixel_photometric pixel_photometric_parse(const char *s);

typedef enum { VOI_LINEAR = 0, VOI_LINEAR_EXACT = 1, VOI_SIGMOID = 2 } pixel_voi_function;

typedef struct {
    int rows, cols, spp, planar;
    int bits_allocated, bits_stored, high_bit, pixel_rep;
    const void *data;               /* host-order samples, bits_allocated wide */
    pixel_photometric photometric;
    int has_rescale;
    double slope, intercept;
    pixel_lut mlut;
    int has_window;                 /* first window centre/width */
    double wc, ww;
    pixel_voi_function voi_func;
    pixel_lut vlut;
    int invert;                     /* apply MONOCHROME1 inversion */
    int clamp;                      /* lossy-decoded samples: clamp values beyond
                                       Bits Stored instead of masking them (a
                                       JPEG decoder's overshoot must not wrap) */
} pixel_frame;

typedef struct {
    int voi_used;                   /* cxr_voi_kind */
    double center, width;           /* window applied (WINDOW / FALLBACK) */
    int modality_applied;           /* 0 none, 1 rescale, 2 LUT */
    int vlut_bits_used;             /* VOI LUT: bits used to normalise */
    int inverted;
} pixel_report;

/* Validate bits allocated / stored / high bit / pixel representation. */
int pixel_check_format(int bits_allocated, int bits_stored, int high_bit, int pixel_rep,
                       char *err, size_t errlen);

/* Stored value of one raw sample: shift by High Bit, mask to Bits Stored,
 * sign-extend when pixel_rep is 1. */
static inline int32_t pixel_stored_value(uint32_t raw, int bits_stored, int high_bit, int pixel_rep) {
    uint32_t v = (raw >> (high_bit + 1 - bits_stored)) & ((bits_stored >= 32) ? 0xffffffffu : ((1u << bits_stored) - 1u));
    if (pixel_rep && bits_stored < 32 && (v & (1u << (bits_stored - 1))))
        return (int32_t)v - (int32_t)(1u << bits_stored);
    return (int32_t)v;
}

/* Stored value of a lossy decoder's sample (High Bit = Bits Stored - 1):
 * the sample read as a bits_allocated-wide integer, clamped to the range of
 * Bits Stored. */
static inline int32_t pixel_stored_clamped(uint32_t raw, int bits_allocated, int bits_stored, int pixel_rep) {
    int32_t v = (int32_t)raw, lo = 0, hi = (int32_t)((1u << bits_stored) - 1u);
    if (pixel_rep) {
        if (raw & (1u << (bits_allocated - 1))) v = (int32_t)raw - (int32_t)(1u << bits_allocated);
        lo = -(int32_t)(1u << (bits_stored - 1));
        hi = (int32_t)(1u << (bits_stored - 1)) - 1;
    }
    return v < lo ? lo : v > hi ? hi : v;
}

/* Modality LUT: LUT sequence if present, else rescale, else identity. */
double pixel_modality(const pixel_frame *f, int32_t stored);

/* VOI LUT function on a modality value → [0,1] (PS3.3 C.11.2.1.2). */
double pixel_window(pixel_voi_function fn, double c, double w, double x);

/* VOI LUT Sequence lookup → [0,1], normalised by 2^bits - 1. */
double pixel_voi_lut(const pixel_lut *l, int bits, double x);

/* Bits to normalise a VOI LUT's output by: the descriptor's, unless every
 * entry fits in fewer (a common encoder mistake), then the bits needed. */
int pixel_lut_effective_bits(const pixel_lut *l);

/* Render the frame to 8 bits (rows*cols bytes). */
int pixel_render(const pixel_frame *f, uint8_t *out, pixel_report *rep, char *err, size_t errlen);

/* Chest polarity score of a displayed 8-bit plane, in [-1,1]: the mean of
 * the mediastinum, spine and upper abdomen minus the mean of the lateral lung
 * fields, placed inside the image after uniform borders are trimmed.
 * Positive on a correctly displayed frontal chest radiograph (bright
 * mediastinum, dark lungs), negative on an inverted one. */
double pixel_polarity_score(const uint8_t *px, int rows, int cols);

#endif
