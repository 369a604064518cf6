/*
 * fuzz_ingest.c — libFuzzer target for the whole ingestion path: bytes in
 * (DICOM or PNG, as Orthanc would hand them over), cxr_image_load_buffer,
 * then the model tensor with the default preprocessing spec. Built with
 * -fsanitize=fuzzer by the CXR_FUZZ build and, for ctest, linked with
 * replay_main.c to replay the committed corpus. It must not assume anything
 * about the input; every outcome but a crash, a leak or a sanitizer report
 * is acceptable.
 */
#include "cxr_dicom.h"

#include <stdint.h>
#include <stdlib.h>

#define FUZZ_MAX_INPUT (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_MAX_INPUT) return 0;
    static float *tensor;
    static cxr_preproc spec;
    if (!tensor) {
        spec = cxr_preproc_default();
        tensor = malloc(cxr_preproc_tensor_len(&spec) * sizeof *tensor);
        if (!tensor) return 0;
    }
    cxr_ingest_params p = cxr_ingest_params_default();
    /* every check on, so each refusal path runs too */
    p.threads = (size & 1) ? 2 : 1;
    char err[CXR_ERRMSG_MAX];
    cxr_image *img = NULL;
    int rc = cxr_image_load_buffer(data, size, &p, &img, err, sizeof err);
    if (rc == CXR_OK) {
        const cxr_meta *m = cxr_image_meta(img);
        const uint8_t *px = cxr_image_pixels(img);
        /* touch the corners of the plane: ASan flags a short buffer */
        volatile uint8_t sink = px[0];
        sink = px[(size_t)m->out_rows * (size_t)m->out_cols - 1];
        (void)sink;
        cxr_image_to_tensor(img, &spec, tensor);
    }
    cxr_image_free(img);
    return 0;
}
