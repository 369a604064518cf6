/*
 * gguf_write.c — cxr_model_derive (cxr_model_derive.h): a GGUF v3 file made
 * from another with some keys replaced or added. It owns the writing of a
 * GGUF header; the source is read through gguf.c's checked reader, and its
 * untouched keys, tensor infos and tensor data are copied as raw bytes from
 * the mapping. It must never modify the source, never leave a partial
 * destination behind, and never reinterpret tensor data.
 */
#define _GNU_SOURCE
#include "cxr_model_derive.h"
#include "gguf.h"
#include "cxr_util.h"

#include <errno.h>
#include <fcntl.h>
#include <libgen.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define DERIVE_MAX_KEY 255
#define DERIVE_MAX_ARR (16u << 20)

/* ------------------------------------------------------- a byte buffer */

typedef struct {
    uint8_t *p;
    size_t n, cap;
    int oom;
} buf;

static void put(buf *b, const void *d, size_t n) {
    if (b->oom) return;
    if (b->n + n > b->cap) {
        size_t cap = b->cap ? b->cap : 4096;
        while (cap < b->n + n) cap *= 2;
        uint8_t *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, d, n);
    b->n += n;
}
static void put_u32(buf *b, uint32_t v) { put(b, &v, 4); } /* GGUF is little-endian, as is every target */
static void put_u64(buf *b, uint64_t v) { put(b, &v, 8); }
static void put_str(buf *b, const char *s, size_t n) {
    put_u64(b, n);
    put(b, s, n);
}

/* ------------------------------------------- spans of the source's bytes */

/* One past the last byte of kv's value. The reader has checked every length
 * against the mapping already, so this only walks. */
static const uint8_t *value_end(const gguf_kv *kv) {
    if (kv->type == GGUF_ARRAY) {
        const uint8_t *p = kv->arr;
        if (kv->arr_type != GGUF_STRING) return p + kv->arr_n * gguf_scalar_size(kv->arr_type);
        for (uint64_t i = 0; i < kv->arr_n; i++) {
            uint64_t l;
            memcpy(&l, p, 8);
            p += 8 + l;
        }
        return p;
    }
    if (kv->type == GGUF_STRING) {
        uint64_t l;
        memcpy(&l, kv->val, 8);
        return kv->val + 8 + l;
    }
    return kv->val + gguf_scalar_size(kv->type);
}

/* ------------------------------------------------------------- checks */

static int check_set(const cxr_kv_set *set, size_t n, char *err, size_t errlen) {
    for (size_t i = 0; i < n; i++) {
        const cxr_kv_set *s = &set[i];
        size_t kl = s->key ? strlen(s->key) : 0;
        if (kl == 0 || kl > DERIVE_MAX_KEY)
            return cxr_fail(err, errlen, CXR_ERR_ARG, "key %zu: empty or longer than %d bytes", i, DERIVE_MAX_KEY);
        if (!strcmp(s->key, "general.alignment"))
            return cxr_fail(err, errlen, CXR_ERR_ARG, "general.alignment cannot be changed in a derived file");
        for (size_t j = 0; j < i; j++)
            if (!strcmp(set[j].key, s->key))
                return cxr_fail(err, errlen, CXR_ERR_ARG, "key '%s' is set twice", s->key);
        switch (s->type) {
        case CXR_KV_STR:
            if (!s->str) return cxr_fail(err, errlen, CXR_ERR_ARG, "key '%s': no string", s->key);
            break;
        case CXR_KV_U32: case CXR_KV_F32: break;
        case CXR_KV_F32_ARR: case CXR_KV_U32_ARR:
            if (s->n > DERIVE_MAX_ARR || (s->n && !s->arr))
                return cxr_fail(err, errlen, CXR_ERR_ARG, "key '%s': bad array (%zu values)", s->key, s->n);
            break;
        default: return cxr_fail(err, errlen, CXR_ERR_ARG, "key '%s': unknown type %d", s->key, (int)s->type);
        }
    }
    return CXR_OK;
}

static void put_value(buf *b, const cxr_kv_set *s) {
    switch (s->type) {
    case CXR_KV_STR: put_u32(b, GGUF_STRING); put_str(b, s->str, strlen(s->str)); break;
    case CXR_KV_U32: put_u32(b, GGUF_UINT32); put_u32(b, s->u32); break;
    case CXR_KV_F32: put_u32(b, GGUF_FLOAT32); put(b, &s->f32, 4); break;
    case CXR_KV_F32_ARR: case CXR_KV_U32_ARR:
        put_u32(b, GGUF_ARRAY);
        put_u32(b, s->type == CXR_KV_F32_ARR ? GGUF_FLOAT32 : GGUF_UINT32);
        put_u64(b, s->n);
        if (s->n) put(b, s->arr, s->n * 4);
        break;
    }
}

/* 1 when a and b name the same file (same path, or same device and inode). */
static int same_file(const char *a, const char *b) {
    if (!strcmp(a, b)) return 1;
    struct stat sa, sb;
    if (stat(a, &sa) != 0 || stat(b, &sb) != 0) return 0;
    return sa.st_dev == sb.st_dev && sa.st_ino == sb.st_ino;
}

/* ------------------------------------------------------------- derive */

int cxr_model_derive(const char *src, const char *dst, const cxr_kv_set *set, size_t n_set, char *err,
                     size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!src || !dst || (n_set && !set)) return cxr_fail(err, errlen, CXR_ERR_ARG, "no source, destination or keys");
    if (same_file(src, dst))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: the derived file may not replace its source", dst);
    int rc = check_set(set, n_set, err, errlen);
    if (rc != CXR_OK) return rc;
    gguf_file g;
    char gerr[CXR_ERRMSG_MAX];
    if ((rc = gguf_open(&g, src, gerr, sizeof gerr)) != CXR_OK) return cxr_fail(err, errlen, rc, "%s: %s", src, gerr);

    /* the header: keys (the source's, replaced where set, then the new ones), tensor infos */
    buf h = {0};
    char *used = calloc(n_set ? n_set : 1, 1);
    if (!used) {
        gguf_close(&g);
        return CXR_ERR_NOMEM;
    }
    const uint8_t *map = g.map;
    put_u32(&h, 0x46554747u);
    put_u32(&h, 3);
    put_u64(&h, g.n_tensors);
    uint64_t n_kv = g.n_kv;
    for (size_t i = 0; i < n_set; i++) n_kv += gguf_find_key(&g, set[i].key) == NULL && !set[i].if_present;
    put_u64(&h, n_kv);
    const uint8_t *kv_end = map + 24;
    for (uint64_t i = 0; i < g.n_kv; i++) {
        const gguf_kv *kv = &g.kv[i];
        const uint8_t *start = (const uint8_t *)kv->key - 8;
        kv_end = value_end(kv);
        size_t k = 0;
        while (k < n_set && !(strlen(set[k].key) == kv->key_len && !memcmp(set[k].key, kv->key, kv->key_len))) k++;
        if (k == n_set) {
            put(&h, start, (size_t)(kv_end - start)); /* kept as it is */
        } else {
            used[k] = 1;
            put_str(&h, set[k].key, kv->key_len);
            put_value(&h, &set[k]);
        }
    }
    for (size_t k = 0; k < n_set; k++)
        if (!used[k] && !set[k].if_present) {
            put_str(&h, set[k].key, strlen(set[k].key));
            put_value(&h, &set[k]);
        }
    free(used);
    const uint8_t *ti_start = kv_end, *ti_end = kv_end;
    if (g.n_tensors) {
        const gguf_tensor *last = &g.tensors[g.n_tensors - 1];
        ti_start = (const uint8_t *)g.tensors[0].name - 8;
        ti_end = (const uint8_t *)last->name + last->name_len + 4 + 8 * (uint64_t)last->n_dims + 4 + 8;
    }
    put(&h, ti_start, (size_t)(ti_end - ti_start));
    uint64_t al = g.alignment;
    uint64_t data0 = ((uint64_t)(ti_end - map) + al - 1) / al * al; /* the source's data section */
    static const uint8_t zeros[65536];
    put(&h, zeros, (size_t)((h.n + al - 1) / al * al - h.n));
    if (h.oom) {
        free(h.p);
        gguf_close(&g);
        return CXR_ERR_NOMEM;
    }

    /* DST.tmp.PID beside DST, then rename */
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", dst, (long)getpid()) >= (int)sizeof tmp) {
        free(h.p);
        gguf_close(&g);
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: path too long", dst);
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0644);
    if (fd < 0) {
        rc = cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot create %s: %s", dst, tmp, strerror(errno));
    } else {
        size_t data_len = data0 < g.size ? (size_t)(g.size - data0) : 0;
        int ok = cxr_write_all(fd, h.p, h.n) == 0 && (!data_len || cxr_write_all(fd, map + data0, data_len) == 0) &&
                 fsync(fd) == 0;
        int e = errno;
        if (close(fd) != 0 && ok) {
            ok = 0;
            e = errno;
        }
        if (ok && rename(tmp, dst) != 0) {
            ok = 0;
            e = errno;
        }
        if (!ok) {
            unlink(tmp);
            rc = cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot write: %s", dst, strerror(e));
        } else {
            char d[PATH_MAX];
            snprintf(d, sizeof d, "%s", dst);
            cxr_fsync_dir(dirname(d)); /* best effort: the file itself is complete */
        }
    }
    free(h.p);
    gguf_close(&g);
    return rc;
}
