/*
 * fuzz_gguf.c — libFuzzer target for the model loader: the GGUF parser over
 * the raw bytes, then (when they parse) the whole cxr_model_open path through
 * an in-memory file — key checks, tensor lookups and shape checks, F16
 * conversion, tokenizer construction — and, for small models, one text and
 * one image forward pass. Any crash, leak, hang or sanitizer report is a bug.
 */
#define _GNU_SOURCE
#include "cxr_model.h"
#include "gguf.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_MAX_INPUT (8u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_MAX_INPUT) return 0;
    char err[CXR_ERRMSG_MAX];
    gguf_file g;
    memset(&g, 0, sizeof g);
    int rc = gguf_parse(&g, data, size, err, sizeof err);
    gguf_close(&g);
    if (rc != 0) return 0;
    int fd = memfd_create("fuzz.gguf", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    char path[64];
    snprintf(path, sizeof path, "/proc/self/fd/%d", fd);
    cxr_model_params p = cxr_model_params_default();
    p.threads = 1;
    p.max_batch = 1;
    cxr_model *m = NULL;
    if (cxr_model_open(path, &p, &m, err, sizeof err) == CXR_OK) {
        const cxr_model_info *in = cxr_model_get_info(m);
        if (in->n_params < (1u << 20) && in->embed_dim > 0 && in->embed_dim <= 4096) {
            float *e = malloc((size_t)in->embed_dim * sizeof *e);
            if (e && in->has_text) cxr_model_embed_text(m, "Is there a pleural effusion? 是否存在胸腔积液", e);
            if (e && in->has_vision && in->image_size <= 64) {
                size_t n = 3u * (size_t)in->image_size * (size_t)in->image_size;
                float *img = calloc(n, sizeof *img);
                if (img) cxr_model_embed_image(m, img, 1, 3, in->image_size, e);
                free(img);
            }
            free(e);
        }
        cxr_model_close(m);
    }
    close(fd);
    return 0;
}
