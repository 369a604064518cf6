/*
 * fuzz_ingest.c — libFuzzer target for the whole ingestion path: bytes in
 * (DICOM or PNG, as Orthanc would hand them over), cxr_image_load_buffer,
 * then the model tensor: with the preprocessing spec the default model
 * (model/cxrvqa-cxr-cnn.gguf) carries, with cxr_preproc_default(), and with
 * a spec whose policy and interpolation rotate with the input. Built with
 * -fsanitize=fuzzer by the CXR_FUZZ build and, for ctest, linked with
 * replay_main.c to replay the committed corpus. It must not assume anything
 * about the input; every outcome but a crash, a leak or a sanitizer report
 * is acceptable.
 */
#include "cxr_dicom.h"

#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>

#define FUZZ_MAX_INPUT (4u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* The default model's preprocessing (`cxrvqa model info`): 160 px, pad,
 * bicubic, one channel, v/255, mean 0.515, std 0.2505. */
static cxr_preproc model_spec(void) {
    cxr_preproc s = cxr_preproc_default();
    s.size = 160;
    s.policy = CXR_RESIZE_PAD;
    s.interp = CXR_INTERP_BICUBIC;
    s.channels = 1;
    s.scale = 1.0f / 255.0f;
    for (int c = 0; c < 3; c++) {
        s.mean[c] = 0.515f;
        s.std[c] = 0.2505f;
    }
    return s;
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_MAX_INPUT) return 0;
    static float *tensor;
    static cxr_preproc specs[3];
    if (!tensor) {
        specs[0] = model_spec();
        specs[1] = cxr_preproc_default();
        specs[2] = cxr_preproc_default();
        specs[2].size = 96;
        specs[2].channels = 1;
        size_t n = 0;
        for (int i = 0; i < 3; i++)
            if (cxr_preproc_tensor_len(&specs[i]) > n) n = cxr_preproc_tensor_len(&specs[i]);
        tensor = malloc(n * sizeof *tensor);
        if (!tensor) return 0;
    }
    cxr_ingest_params p = cxr_ingest_params_default();
    /* every check on, so each refusal path runs too */
    p.threads = (size & 1) ? 2 : 1;
    /* no decode deadline: the decoder runs on this thread, so a hang is
       libFuzzer's -timeout finding with the decoder's own stack, not a
       thread abandoned behind the fuzzer's back */
    p.decode_timeout_ms = 0;
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
        specs[2].policy = (cxr_resize_policy)(size % 3);
        specs[2].interp = (cxr_interp)((size / 3) % 3);
        for (int i = 0; i < 3; i++) {
            if (cxr_image_to_tensor(img, &specs[i], tensor) != CXR_OK) continue;
            /* what reaches the model is finite, whatever the file said */
            size_t n = cxr_preproc_tensor_len(&specs[i]);
            for (size_t k = 0; k < n; k++)
                if (!isfinite(tensor[k])) {
                    fprintf(stderr, "fuzz_ingest: non-finite tensor value %g at %zu (spec %d)\n", tensor[k], k, i);
                    abort();
                }
        }
    }
    cxr_image_free(img);
    return 0;
}
