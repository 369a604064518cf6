/*
 * test_derive.c — cxr_model_derive (model/gguf_write.c) on the shipped
 * model: the derived file parses, every tensor has the same name, shape,
 * type and bytes, untouched keys keep their bytes, replaced and added keys
 * read back as set (an if_present key the source lacks is not added), the
 * file opens as a model with another SHA-256, the source is unchanged; and
 * the refusals: the source as destination (by path and through a second
 * name), a key set twice, general.alignment, a missing source, a folder that
 * does not exist (nothing left behind).
 *
 * Usage: test_derive MODEL.gguf TMPDIR
 */
#define _GNU_SOURCE /* realpath, symlink */
#include "check.h"
#include "cxr_model.h"
#include "cxr_model_derive.h"
#include "cxr_util.h"
#include "gguf.h"

#include <dirent.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static int kv_bytes_equal(const gguf_kv *a, const gguf_kv *b) {
    if (a->type != b->type || a->arr_type != b->arr_type || a->arr_n != b->arr_n) return 0;
    if (a->type == GGUF_STRING) {
        uint64_t la, lb;
        memcpy(&la, a->val, 8);
        memcpy(&lb, b->val, 8);
        return la == lb && !memcmp(a->val + 8, b->val + 8, la);
    }
    if (a->type == GGUF_ARRAY && a->arr_type == GGUF_STRING) {
        const uint8_t *p = a->arr, *q = b->arr;
        for (uint64_t i = 0; i < a->arr_n; i++) {
            uint64_t la, lb;
            memcpy(&la, p, 8);
            memcpy(&lb, q, 8);
            if (la != lb || memcmp(p + 8, q + 8, la)) return 0;
            p += 8 + la;
            q += 8 + lb;
        }
        return 1;
    }
    size_t sz = a->type == GGUF_ARRAY ? (size_t)a->arr_n * (a->arr_type == GGUF_FLOAT64 || a->arr_type == GGUF_UINT64 ||
                                                            a->arr_type == GGUF_INT64 ? 8 : 4)
                                      : 4;
    if (a->type == GGUF_ARRAY && (a->arr_type == GGUF_UINT8 || a->arr_type == GGUF_INT8 || a->arr_type == GGUF_BOOL))
        sz = (size_t)a->arr_n;
    if (a->type == GGUF_BOOL || a->type == GGUF_UINT8 || a->type == GGUF_INT8) sz = 1;
    if (a->type == GGUF_UINT64 || a->type == GGUF_INT64 || a->type == GGUF_FLOAT64) sz = 8;
    return !memcmp(a->type == GGUF_ARRAY ? a->arr : a->val, b->type == GGUF_ARRAY ? b->arr : b->val, sz);
}

int main(int argc, char **argv) {
    if (argc < 3) {
        fprintf(stderr, "usage: test_derive MODEL.gguf TMPDIR\n");
        return 2;
    }
    const char *src = argv[1];
    char dst[4096], link[4096], err[CXR_ERRMSG_MAX], sha_before[65], sha_after[65];
    snprintf(dst, sizeof dst, "%s/derived.gguf", argv[2]);
    snprintf(link, sizeof link, "%s/same-as-source.gguf", argv[2]);
    unlink(dst);
    unlink(link);
    CHECK(cxr_sha256_file(src, sha_before) == CXR_OK, "hash source");
    gguf_file g;
    if (gguf_open(&g, src, err, sizeof err) != 0) {
        fprintf(stderr, "%s: %s\n", src, err);
        return 1;
    }
    float nf_arr[64];
    uint64_t F = gguf_find_key(&g, "cxr.findings.calib_a")->arr_n;
    for (uint64_t i = 0; i < F && i < 64; i++) nf_arr[i] = 0.25f * (float)i - 1;
    uint32_t counts[3] = {7, 0, 4000000000u};
    const cxr_kv_set set[] = {
        {.key = "general.name", .type = CXR_KV_STR, .str = "derived <test>"},
        {.key = "cxr.findings.calib_a", .type = CXR_KV_F32_ARR, .arr = nf_arr, .n = (size_t)F},
        {.key = "cxr.site.name", .type = CXR_KV_STR, .str = "site-A"},
        {.key = "cxr.site.n_images", .type = CXR_KV_U32, .u32 = 1234},
        {.key = "cxr.site.sensitivity", .type = CXR_KV_F32, .f32 = 0.9f},
        {.key = "cxr.site.counts", .type = CXR_KV_U32_ARR, .arr = counts, .n = 3},
        {.key = "cxr.findings.no_such_key", .type = CXR_KV_F32_ARR, .arr = nf_arr, .n = 2, .if_present = 1},
    };
    int rc = cxr_model_derive(src, dst, set, sizeof set / sizeof set[0], err, sizeof err);
    CHECK(rc == CXR_OK, "derive: %d %s", rc, err);
    gguf_file d;
    if (rc != CXR_OK || gguf_open(&d, dst, err, sizeof err) != 0) {
        fprintf(stderr, "derived: %s\n", err);
        gguf_close(&g);
        return CHECK_SUMMARY() | 1;
    }
    CHECK(d.n_kv == g.n_kv + 4, "keys: %llu (source %llu + 4 added)", (unsigned long long)d.n_kv,
          (unsigned long long)g.n_kv);
    CHECK(d.n_tensors == g.n_tensors, "tensor count");
    CHECK(d.alignment == g.alignment, "alignment");
    for (uint64_t i = 0; i < g.n_tensors && i < d.n_tensors; i++) {
        const gguf_tensor *a = &g.tensors[i], *b = &d.tensors[i];
        size_t bytes = (size_t)a->n_elems * (a->dtype == GGML_F32 ? 4 : 2);
        CHECK(a->name_len == b->name_len && !memcmp(a->name, b->name, a->name_len) && a->n_dims == b->n_dims &&
                  !memcmp(a->dims, b->dims, sizeof a->dims) && a->dtype == b->dtype && !memcmp(a->data, b->data, bytes),
              "tensor %llu (%.*s) identical", (unsigned long long)i, (int)a->name_len, a->name);
        CHECK((uintptr_t)((const uint8_t *)b->data - (const uint8_t *)d.map) % d.alignment == 0, "tensor aligned");
    }
    int replaced = 0, kept = 0;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        const gguf_kv *a = &g.kv[i], *b = &d.kv[i]; /* replaced keys keep their place */
        CHECK(a->key_len == b->key_len && !memcmp(a->key, b->key, a->key_len), "key %llu in place",
              (unsigned long long)i);
        int is_set = (a->key_len == 12 && !memcmp(a->key, "general.name", 12)) ||
                     (a->key_len == 20 && !memcmp(a->key, "cxr.findings.calib_a", 20));
        if (is_set) replaced++;
        else {
            CHECK(kv_bytes_equal(a, b), "key %.*s kept byte for byte", (int)a->key_len, a->key);
            kept++;
        }
    }
    CHECK(replaced == 2, "2 keys replaced in place");
    char s[64];
    CHECK(gguf_get_str(&d, "general.name", s, sizeof s) == 0 && !strcmp(s, "derived <test>"), "general.name '%s'", s);
    CHECK(gguf_get_str(&d, "cxr.site.name", s, sizeof s) == 0 && !strcmp(s, "site-A"), "cxr.site.name");
    uint32_t u = 0;
    float f = 0, back[64];
    CHECK(gguf_get_u32(&d, "cxr.site.n_images", &u) == 0 && u == 1234, "u32 %u", u);
    CHECK(gguf_get_f32(&d, "cxr.site.sensitivity", &f) == 0 && f == 0.9f, "f32 %f", f);
    CHECK(gguf_get_f32_arr(&d, "cxr.findings.calib_a", back, (size_t)F) == 0 && !memcmp(back, nf_arr, F * 4),
          "calib_a replaced");
    const gguf_kv *ca = gguf_find_key(&d, "cxr.site.counts");
    CHECK(ca && ca->type == GGUF_ARRAY && ca->arr_type == GGUF_UINT32 && ca->arr_n == 3 && !memcmp(ca->arr, counts, 12),
          "u32 array");
    CHECK(!gguf_find_key(&d, "cxr.findings.no_such_key"), "if_present key absent from the source: not added");
    gguf_close(&d);

    /* it opens as a model; its hash is its own; the source did not change */
    cxr_model_params mp = cxr_model_params_default();
    cxr_model *m = NULL;
    rc = cxr_model_open(dst, &mp, &m, err, sizeof err);
    CHECK(rc == CXR_OK, "derived model opens: %s", err);
    if (m) {
        CHECK(strcmp(cxr_model_sha256(m), sha_before) != 0, "derived SHA-256 differs from the source's");
        CHECK(!strcmp(cxr_model_get_info(m)->name, "derived <test>"), "model name from the derived file");
        CHECK(fabsf(cxr_model_finding(m, 1)->calib_a - nf_arr[1]) == 0, "finding 1 calib_a from the derived file");
        cxr_model_close(m);
    }
    CHECK(cxr_sha256_file(src, sha_after) == CXR_OK && !strcmp(sha_before, sha_after), "source unchanged");

    /* refusals */
    CHECK(cxr_model_derive(src, src, set, 1, err, sizeof err) == CXR_ERR_ARG && strstr(err, "source"),
          "dst = src refused: %s", err);
    char abs_src[4096];
    if (realpath(src, abs_src) && symlink(abs_src, link) == 0) {
        CHECK(cxr_model_derive(src, link, set, 1, err, sizeof err) == CXR_ERR_ARG, "a second name of the source refused");
        unlink(link);
    }
    const cxr_kv_set twice[] = {{.key = "a.b", .type = CXR_KV_U32}, {.key = "a.b", .type = CXR_KV_U32}};
    CHECK(cxr_model_derive(src, dst, twice, 2, err, sizeof err) == CXR_ERR_ARG && strstr(err, "twice"), "twice: %s", err);
    const cxr_kv_set al[] = {{.key = "general.alignment", .type = CXR_KV_U32, .u32 = 64}};
    CHECK(cxr_model_derive(src, dst, al, 1, err, sizeof err) == CXR_ERR_ARG && strstr(err, "alignment"), "alignment");
    CHECK(cxr_model_derive("/nonexistent/model.gguf", dst, set, 1, err, sizeof err) == CXR_ERR_IO, "missing source");
    char nodir[4200];
    snprintf(nodir, sizeof nodir, "%s/no-such-folder/x.gguf", argv[2]);
    CHECK(cxr_model_derive(src, nodir, set, 1, err, sizeof err) == CXR_ERR_IO, "destination folder missing: %s", err);
    DIR *dir = opendir(argv[2]);
    int leftovers = 0;
    for (struct dirent *e; dir && (e = readdir(dir));) leftovers += strstr(e->d_name, ".tmp.") != NULL;
    if (dir) closedir(dir);
    CHECK(leftovers == 0, "no temporary file left behind");
    gguf_close(&g);
    unlink(dst);
    return CHECK_SUMMARY();
}
