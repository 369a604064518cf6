/*
 * png_io.h — PNG decode/encode for dicom/ (internal).
 */
#ifndef CXR_PNG_IO_H
#define CXR_PNG_IO_H

#include <stddef.h>
#include <stdint.h>

typedef struct {
    int width, height, channels; /* channels 1 (gray) or 3 (RGB) */
    int bits;                    /* 8 or 16; 16-bit samples in host order */
    void *data;                  /* malloc'd, interleaved */
} png_plane;

int png_is_png(const void *buf, size_t len);
int png_read_buffer(const void *buf, size_t len, png_plane *out, char *err, size_t errlen);
void png_plane_free(png_plane *p);
int png_write_gray8(const char *path, const uint8_t *px, int rows, int cols, char *err, size_t errlen);

#endif
