/*
 * fuzz_jls.c — libFuzzer target for our JPEG-LS decoder (dicom/jls.c): the
 * input is a code stream, as ingest hands it over after DCMTK has found
 * frame 1 and codec_check.c has looked at its markers (this target skips
 * that check, so the decoder meets what the check would refuse too).
 * Besides sanitizer reports, a decoded image must be non-empty and hold no
 * sample above 2^P - 1, block means included (abort otherwise).
 *
 * Seeds: tests/fuzz/corpus_jls/ — small streams DCMTK's encoder wrote
 * (8 to 16 bits, lossless and NEAR 1-7, preset thresholds, short RESET,
 * single lines and single columns).
 */
#include "cxr_dicom.h"
#include "jls.h"

#include <stdlib.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > (1u << 20)) return 0;
    /* the frame header's size, read here to keep decodes of huge claimed
       frames (a few bytes can declare 65535 x 65535) out of the way of
       the rss limit: ingest refuses those by the DICOM header first */
    int fw = -1, fh = -1; /* as ingest passes the DICOM header's: the decoder refuses any other size */
    for (size_t i = 0; i + 8 < size; i++)
        if (data[i] == 0xFF && data[i + 1] == 0xF7) {
            unsigned h = (unsigned)data[i + 5] << 8 | data[i + 6], w = (unsigned)data[i + 7] << 8 | data[i + 8];
            if ((unsigned long long)h * w > (1ull << 20)) return 0;
            fw = (int)w;
            fh = (int)h;
            break;
        }
    if (fw < 1 || fh < 1) fw = fh = 1; /* no frame header found: only a 1 x 1 frame may decode */
    jls_image im;
    char err[CXR_ERRMSG_MAX];
    /* every other input also through the reduced output (block means): as
       ask decodes for a model, with the smallest sizes so that each input
       reaches the deepest reduction its frame allows */
    int reduced = size && (data[size - 1] & 1);
    if (jls_decode(data, size, fw, fh, reduced, reduced, &im, err, sizeof err) == CXR_OK) {
        if (im.width < 1 || im.height < 1 || im.bits < 2 || im.bits > 16 || !im.data) abort();
        unsigned top = (1u << im.bits) - 1;
        for (size_t i = 0; i < (size_t)im.width * im.height; i++)
            if (im.data[i] > top) abort();
        jls_image_free(&im);
    }
    return 0;
}
