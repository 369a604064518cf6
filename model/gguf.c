/*
 * gguf.c — GGUF v3 parsing over a read-only mapping. It owns the index of
 * keys and tensors (two arrays) and nothing else: values and tensor data stay
 * in the mapping. It must never read outside [map, map + size): every length
 * is checked before it is used, in 64-bit arithmetic.
 */
#include "gguf.h"
#include "cxr_model.h"

#include <errno.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    const uint8_t *p;
    uint64_t size, pos;
    char *err;
    size_t errlen;
} rd;

static int need(rd *r, uint64_t n, const char *what) {
    if (n > r->size || r->pos > r->size - n) {
        snprintf(r->err, r->errlen, "truncated at offset %llu reading %s (file is %llu bytes)",
                 (unsigned long long)r->pos, what, (unsigned long long)r->size);
        return CXR_ERR_TRUNCATED;
    }
    return 0;
}

static int rd_u32(rd *r, uint32_t *v, const char *what) {
    int rc = need(r, 4, what);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 4);
    r->pos += 4;
    return 0;
}

static int rd_u64(rd *r, uint64_t *v, const char *what) {
    int rc = need(r, 8, what);
    if (rc) return rc;
    memcpy(v, r->p + r->pos, 8);
    r->pos += 8;
    return 0;
}

static int rd_str(rd *r, const char **s, uint64_t *len, const char *what) {
    int rc = rd_u64(r, len, what);
    if (rc) return rc;
    if ((rc = need(r, *len, what))) return rc;
    *s = (const char *)(r->p + r->pos);
    r->pos += *len;
    return 0;
}

uint64_t gguf_scalar_size(uint32_t t) {
    switch (t) {
    case GGUF_UINT8: case GGUF_INT8: case GGUF_BOOL: return 1;
    case GGUF_UINT16: case GGUF_INT16: return 2;
    case GGUF_UINT32: case GGUF_INT32: case GGUF_FLOAT32: return 4;
    case GGUF_UINT64: case GGUF_INT64: case GGUF_FLOAT64: return 8;
    default: return 0;
    }
}

/* Skip one value of type t (not an array of arrays). */
static int skip_value(rd *r, uint32_t t) {
    if (t == GGUF_STRING) {
        const char *s;
        uint64_t l;
        return rd_str(r, &s, &l, "string value");
    }
    uint64_t n = gguf_scalar_size(t);
    if (!n) {
        snprintf(r->err, r->errlen, "unknown value type %u at offset %llu", t, (unsigned long long)r->pos);
        return CXR_ERR_FORMAT;
    }
    int rc = need(r, n, "value");
    if (rc) return rc;
    r->pos += n;
    return 0;
}

int gguf_parse(gguf_file *g, const void *buf, size_t size, char *err, size_t errlen) {
    void *keep_map = g->map;
    size_t keep_size = g->size;
    memset(g, 0, sizeof *g);
    g->map = keep_map;
    g->size = keep_size;
    rd r = {buf, size, 0, err, errlen};
    uint32_t magic;
    int rc;
    if ((rc = rd_u32(&r, &magic, "magic"))) return rc;
    if (magic != 0x46554747u) { /* "GGUF" */
        snprintf(err, errlen, "bad magic 0x%08x (not a GGUF file)", magic);
        return CXR_ERR_FORMAT;
    }
    if ((rc = rd_u32(&r, &g->version, "version"))) return rc;
    if (g->version != 3) {
        snprintf(err, errlen, "GGUF version %u not supported (3 expected)", g->version);
        return CXR_ERR_FORMAT;
    }
    if ((rc = rd_u64(&r, &g->n_tensors, "tensor count")) || (rc = rd_u64(&r, &g->n_kv, "key count"))) return rc;
    if (g->n_tensors > GGUF_MAX_TENSORS || g->n_kv > GGUF_MAX_KV) {
        snprintf(err, errlen, "absurd counts: %llu tensors, %llu keys", (unsigned long long)g->n_tensors,
                 (unsigned long long)g->n_kv);
        return CXR_ERR_FORMAT;
    }
    g->kv = calloc(g->n_kv ? g->n_kv : 1, sizeof *g->kv);
    g->tensors = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *g->tensors);
    if (!g->kv || !g->tensors) return CXR_ERR_NOMEM;
    g->alignment = 32;
    for (uint64_t i = 0; i < g->n_kv; i++) {
        gguf_kv *kv = &g->kv[i];
        if ((rc = rd_str(&r, &kv->key, &kv->key_len, "key")) || (rc = rd_u32(&r, &kv->type, "value type"))) return rc;
        kv->val = r.p + r.pos;
        if (kv->type == GGUF_ARRAY) {
            if ((rc = rd_u32(&r, &kv->arr_type, "array type")) || (rc = rd_u64(&r, &kv->arr_n, "array length")))
                return rc;
            if (kv->arr_n > GGUF_MAX_ARRAY || kv->arr_type == GGUF_ARRAY) {
                snprintf(err, errlen, "key '%.*s': array of %llu elements of type %u not supported",
                         (int)(kv->key_len > 200 ? 200 : kv->key_len), kv->key, (unsigned long long)kv->arr_n,
                         kv->arr_type);
                return CXR_ERR_FORMAT;
            }
            kv->arr = r.p + r.pos;
            uint64_t es = gguf_scalar_size(kv->arr_type);
            if (es) {
                if (kv->arr_n > UINT64_MAX / es) return CXR_ERR_FORMAT;
                if ((rc = need(&r, kv->arr_n * es, "array data"))) return rc;
                r.pos += kv->arr_n * es;
            } else {
                for (uint64_t k = 0; k < kv->arr_n; k++)
                    if ((rc = skip_value(&r, kv->arr_type))) return rc;
            }
        } else if ((rc = skip_value(&r, kv->type))) {
            return rc;
        }
        if (kv->key_len == 17 && !memcmp(kv->key, "general.alignment", 17) && kv->type == GGUF_UINT32) {
            uint32_t a;
            memcpy(&a, kv->val, 4);
            if (a == 0 || (a & (a - 1)) || a > 65536) {
                snprintf(err, errlen, "general.alignment %u is not a power of two up to 65536", a);
                return CXR_ERR_FORMAT;
            }
            g->alignment = a;
        }
    }
    uint64_t *offs = calloc(g->n_tensors ? g->n_tensors : 1, sizeof *offs);
    if (!offs) return CXR_ERR_NOMEM;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        if ((rc = rd_str(&r, &t->name, &t->name_len, "tensor name")) ||
            (rc = rd_u32(&r, &t->n_dims, "tensor dims"))) {
            free(offs);
            return rc;
        }
        if (t->n_dims < 1 || t->n_dims > GGUF_MAX_DIMS) {
            snprintf(err, errlen, "tensor '%.*s' has %u dimensions (1..%d)", (int)(t->name_len > 200 ? 200 : t->name_len),
                     t->name, t->n_dims, GGUF_MAX_DIMS);
            free(offs);
            return CXR_ERR_FORMAT;
        }
        t->n_elems = 1;
        for (uint32_t d = 0; d < t->n_dims; d++) {
            if ((rc = rd_u64(&r, &t->dims[d], "tensor dim"))) { free(offs); return rc; }
            if (t->dims[d] == 0 || t->dims[d] > (1ull << 32) || t->n_elems > (1ull << 40) / t->dims[d]) {
                snprintf(err, errlen, "tensor '%.*s' has an absurd dimension %llu",
                         (int)(t->name_len > 200 ? 200 : t->name_len), t->name, (unsigned long long)t->dims[d]);
                free(offs);
                return CXR_ERR_FORMAT;
            }
            t->n_elems *= t->dims[d];
        }
        for (uint32_t d = t->n_dims; d < GGUF_MAX_DIMS; d++) t->dims[d] = 1;
        if ((rc = rd_u32(&r, &t->dtype, "tensor type")) || (rc = rd_u64(&r, &offs[i], "tensor offset"))) {
            free(offs);
            return rc;
        }
        if (t->dtype != GGML_F32 && t->dtype != GGML_F16) {
            snprintf(err, errlen, "tensor '%.*s' has type %u (only F32 = 0 and F16 = 1 are supported)",
                     (int)(t->name_len > 200 ? 200 : t->name_len), t->name, t->dtype);
            free(offs);
            return CXR_ERR_FORMAT;
        }
    }
    uint64_t data0 = (r.pos + g->alignment - 1) / g->alignment * g->alignment;
    for (uint64_t i = 0; i < g->n_tensors; i++) {
        gguf_tensor *t = &g->tensors[i];
        uint64_t bytes = t->n_elems * (t->dtype == GGML_F32 ? 4 : 2);
        if (offs[i] % g->alignment || offs[i] > size || data0 > size - offs[i] || bytes > size - data0 - offs[i]) {
            snprintf(err, errlen, "tensor '%.*s' data [%llu, +%llu) lies outside the file (%llu bytes) or is misaligned",
                     (int)(t->name_len > 200 ? 200 : t->name_len), t->name, (unsigned long long)(data0 + offs[i]),
                     (unsigned long long)bytes, (unsigned long long)size);
            int misaligned = offs[i] % g->alignment != 0;
            free(offs);
            return misaligned ? CXR_ERR_FORMAT : CXR_ERR_TRUNCATED;
        }
        t->data = r.p + data0 + offs[i];
    }
    free(offs);
    return 0;
}

int gguf_open(gguf_file *g, const char *path, char *err, size_t errlen) {
    memset(g, 0, sizeof *g);
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) {
        snprintf(err, errlen, "cannot open %s: %s", path, strerror(errno));
        return CXR_ERR_IO;
    }
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        snprintf(err, errlen, "%s is not a regular file", path);
        return CXR_ERR_IO;
    }
    if (st.st_size < 24) {
        close(fd);
        snprintf(err, errlen, "truncated: %lld bytes is too short for a GGUF header", (long long)st.st_size);
        return CXR_ERR_TRUNCATED;
    }
    void *m = mmap(NULL, (size_t)st.st_size, PROT_READ, MAP_PRIVATE, fd, 0);
    close(fd);
    if (m == MAP_FAILED) {
        snprintf(err, errlen, "cannot map %s: %s", path, strerror(errno));
        return CXR_ERR_IO;
    }
    g->map = m;
    g->size = (size_t)st.st_size;
    int rc = gguf_parse(g, m, g->size, err, errlen);
    if (rc) gguf_close(g);
    return rc;
}

void gguf_close(gguf_file *g) {
    if (!g) return;
    free(g->kv);
    free(g->tensors);
    if (g->map) munmap(g->map, g->size);
    memset(g, 0, sizeof *g);
}

const gguf_kv *gguf_find_key(const gguf_file *g, const char *key) {
    size_t n = strlen(key);
    for (uint64_t i = 0; i < g->n_kv; i++)
        if (g->kv[i].key_len == n && !memcmp(g->kv[i].key, key, n)) return &g->kv[i];
    return NULL;
}

const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name) {
    size_t n = strlen(name);
    for (uint64_t i = 0; i < g->n_tensors; i++)
        if (g->tensors[i].name_len == n && !memcmp(g->tensors[i].name, name, n)) return &g->tensors[i];
    return NULL;
}

int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *v) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type == GGUF_UINT32 || kv->type == GGUF_INT32) {
        int32_t s;
        memcpy(&s, kv->val, 4);
        if (kv->type == GGUF_INT32 && s < 0) return -2;
        memcpy(v, kv->val, 4);
        return 0;
    }
    if (kv->type == GGUF_UINT64) {
        uint64_t x;
        memcpy(&x, kv->val, 8);
        if (x > UINT32_MAX) return -2;
        *v = (uint32_t)x;
        return 0;
    }
    return -2;
}

int gguf_get_f32(const gguf_file *g, const char *key, float *v) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type == GGUF_FLOAT32) { memcpy(v, kv->val, 4); return 0; }
    if (kv->type == GGUF_FLOAT64) { double d; memcpy(&d, kv->val, 8); *v = (float)d; return 0; }
    return -2;
}

int gguf_get_bool(const gguf_file *g, const char *key, int *v) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_BOOL) return -2;
    *v = kv->val[0] != 0;
    return 0;
}

int gguf_get_str(const gguf_file *g, const char *key, char *out, size_t n) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_STRING || n == 0) return -2;
    uint64_t len;
    memcpy(&len, kv->val, 8);
    size_t k = len < n - 1 ? (size_t)len : n - 1;
    memcpy(out, kv->val + 8, k);
    out[k] = '\0';
    return 0;
}

int gguf_get_f32_arr(const gguf_file *g, const char *key, float *out, size_t n) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_FLOAT32 || kv->arr_n != n) return -2;
    memcpy(out, kv->arr, n * 4);
    return 0;
}

int gguf_get_u32_arr(const gguf_file *g, const char *key, uint32_t *out, size_t max) {
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_ARRAY || (kv->arr_type != GGUF_UINT32 && kv->arr_type != GGUF_INT32) || kv->arr_n < 1 ||
        kv->arr_n > max || kv->arr_n > INT32_MAX)
        return -2;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint32_t v;
        memcpy(&v, kv->arr + 4 * i, 4);
        if (kv->arr_type == GGUF_INT32 && v > INT32_MAX) return -2;
        out[i] = v;
    }
    return (int)kv->arr_n;
}

int gguf_get_str_arr(const gguf_file *g, const char *key, char ***ptrs, char **blob, uint64_t *n) {
    *ptrs = NULL;
    *blob = NULL;
    *n = 0;
    const gguf_kv *kv = gguf_find_key(g, key);
    if (!kv) return -1;
    if (kv->type != GGUF_ARRAY || kv->arr_type != GGUF_STRING) return -2;
    /* lengths were validated at parse time */
    uint64_t total = 0;
    const uint8_t *p = kv->arr;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t l;
        memcpy(&l, p, 8);
        total += l + 1;
        p += 8 + l;
    }
    char **pp = malloc((kv->arr_n ? kv->arr_n : 1) * sizeof *pp);
    char *b = malloc(total ? total : 1);
    if (!pp || !b) {
        free(pp);
        free(b);
        return CXR_ERR_NOMEM;
    }
    p = kv->arr;
    char *w = b;
    for (uint64_t i = 0; i < kv->arr_n; i++) {
        uint64_t l;
        memcpy(&l, p, 8);
        memcpy(w, p + 8, l);
        w[l] = '\0';
        pp[i] = w;
        w += l + 1;
        p += 8 + l;
    }
    *ptrs = pp;
    *blob = b;
    *n = kv->arr_n;
    return 0;
}
