/*
 * cxr_model_derive.h — a model file derived from another: every tensor kept
 * byte for byte, every key kept as it is except those the caller sets
 * (replaced where they stand, appended when the source has none). This is
 * how `cxrvqa validate --out` writes a site-validated model: the source's
 * weights with the site's calibration, thresholds and provenance keys
 * (model/FORMAT.md, "Site validation").
 *
 *   float a[F] = {…}, b[F] = {…};
 *   const cxr_kv_set set[] = {
 *       {.key = "general.version", .type = CXR_KV_STR, .str = "1.0+site-a"},
 *       {.key = "cxr.findings.calib_a", .type = CXR_KV_F32_ARR, .arr = a, .n = F},
 *       {.key = "cxr.findings.calib_b", .type = CXR_KV_F32_ARR, .arr = b, .n = F},
 *   };
 *   char err[CXR_ERRMSG_MAX];
 *   if (cxr_model_derive("src.gguf", "site.gguf", set, 3, err, sizeof err) != CXR_OK) die(err);
 *
 * The source is opened read-only and never written. The derived file is
 * written beside its destination as DST.tmp.PID, fsync'ed and renamed over
 * DST, so that DST is either the old file or the whole new one. Thread
 * safety: no shared state; distinct calls may run at once.
 */
#ifndef CXR_MODEL_DERIVE_H
#define CXR_MODEL_DERIVE_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

typedef enum {
    CXR_KV_STR = 0,     /* str: NUL-terminated UTF-8 */
    CXR_KV_U32 = 1,     /* u32 */
    CXR_KV_F32 = 2,     /* f32 */
    CXR_KV_F32_ARR = 3, /* arr: n floats */
    CXR_KV_U32_ARR = 4  /* arr: n uint32_t */
} cxr_kv_type;

/* One key to set in the derived file. The pointers are read during the
 * call only. */
typedef struct {
    const char *key;  /* 1..255 bytes; "general.alignment" may not be set */
    cxr_kv_type type;
    const char *str;
    uint32_t u32;
    float f32;
    const void *arr;
    size_t n;         /* array length, 0..(16 Mi) */
    int if_present;   /* 1: set only when the source has the key (else skipped) */
} cxr_kv_set;

/* Write dst: src's header, keys and tensors, with the n_set keys of set
 * replaced (in place, whatever their type was) or appended (in set order;
 * not those marked if_present).
 * Tensor data is copied byte for byte and keeps its offsets (relative to
 * the aligned data section, which moves with the header).
 * Errors: CXR_ERR_ARG (NULL paths, dst naming src itself — same path or same
 * file —, a key set twice, an empty or over-long key, general.alignment,
 * an unknown type), the reader's CXR_ERR_IO / CXR_ERR_FORMAT /
 * CXR_ERR_TRUNCATED for src, CXR_ERR_IO when dst cannot be written (nothing
 * is left behind), CXR_ERR_NOMEM. err says which file or key. */
int cxr_model_derive(const char *src, const char *dst, const cxr_kv_set *set, size_t n_set, char *err,
                     size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
