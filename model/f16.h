/*
 * f16.h — IEEE 754 half ↔ single conversions, portable C (internal to
 * model/): at open for weights stored as F16 (model.c), in weight packing and
 * the portable GEMM loops (gemm.c). The AVX2 kernels widen halves with F16C
 * instead.
 */
#ifndef CXR_F16_H
#define CXR_F16_H

#include <stdint.h>

/* IEEE half → float (exact: subnormals, infinities and NaNs included) */
float f16_to_f32(uint16_t h);
/* float → IEEE half, rounded to nearest even; overflow gives ±inf, a NaN
 * stays a (quiet) NaN */
uint16_t f32_to_f16(float f);

#endif
