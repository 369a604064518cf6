/*
 * gguf.h — read-only GGUF v3 reader over an mmapped file (internal to
 * model/). Every offset and length in the file is checked against the
 * mapping before use; values point into the mapping and live as long as the
 * gguf_file. See ggml docs/gguf.md and model/FORMAT.md.
 */
#ifndef CXR_GGUF_H
#define CXR_GGUF_H

#include <stddef.h>
#include <stdint.h>

enum gguf_type {
    GGUF_UINT8 = 0, GGUF_INT8 = 1, GGUF_UINT16 = 2, GGUF_INT16 = 3, GGUF_UINT32 = 4,
    GGUF_INT32 = 5, GGUF_FLOAT32 = 6, GGUF_BOOL = 7, GGUF_STRING = 8, GGUF_ARRAY = 9,
    GGUF_UINT64 = 10, GGUF_INT64 = 11, GGUF_FLOAT64 = 12
};

enum ggml_dtype { GGML_F32 = 0, GGML_F16 = 1 };

#define GGUF_MAX_DIMS 4
#define GGUF_MAX_TENSORS 65536
#define GGUF_MAX_KV 65536
#define GGUF_MAX_ARRAY (16u << 20)

typedef struct {
    const char *key;       /* not NUL-terminated in the file: see key_len */
    uint64_t key_len;
    uint32_t type;
    const uint8_t *val;    /* scalar value, string (len-prefixed) or array header */
    uint32_t arr_type;     /* GGUF_ARRAY: element type */
    uint64_t arr_n;        /* GGUF_ARRAY: element count */
    const uint8_t *arr;    /* GGUF_ARRAY: first element */
} gguf_kv;

typedef struct {
    const char *name;
    uint64_t name_len;
    uint32_t n_dims;
    uint64_t dims[GGUF_MAX_DIMS]; /* fastest-varying first (GGUF order) */
    uint32_t dtype;
    uint64_t n_elems;
    const void *data;
} gguf_tensor;

typedef struct {
    void *map;
    size_t size;
    uint32_t version;
    uint64_t n_kv, n_tensors;
    gguf_kv *kv;
    gguf_tensor *tensors;
    uint64_t alignment;
} gguf_file;

/* Map and parse path. Returns 0 or a negative CXR_ERR_* code with err set
 * ("bad magic", "truncated at offset N", "tensor 'x' data out of bounds"). */
int gguf_open(gguf_file *g, const char *path, char *err, size_t errlen);
/* Same over a caller-owned buffer (fuzzing, tests); the buffer must outlive g. */
int gguf_parse(gguf_file *g, const void *buf, size_t size, char *err, size_t errlen);
void gguf_close(gguf_file *g);

const gguf_kv *gguf_find_key(const gguf_file *g, const char *key);
const gguf_tensor *gguf_find_tensor(const gguf_file *g, const char *name);

/* Bytes of one value of scalar type t (GGUF_UINT8 … GGUF_FLOAT64); 0 for
 * strings, arrays and unknown types. */
uint64_t gguf_scalar_size(uint32_t t);

/* Typed getters: 0 on success, -1 if missing, -2 if of another type. */
int gguf_get_u32(const gguf_file *g, const char *key, uint32_t *v);
int gguf_get_f32(const gguf_file *g, const char *key, float *v);
int gguf_get_bool(const gguf_file *g, const char *key, int *v);
/* String value copied (NUL-terminated, truncated to n-1). */
int gguf_get_str(const gguf_file *g, const char *key, char *out, size_t n);
/* f32 array of exactly n elements. */
int gguf_get_f32_arr(const gguf_file *g, const char *key, float *out, size_t n);
/* u32 (or non-negative i32) array of 1..max elements into out; returns the
 * count, -1 if missing, -2 if of another type, size or sign. */
int gguf_get_u32_arr(const gguf_file *g, const char *key, uint32_t *out, size_t max);
/* String array copied out as NUL-terminated strings: *ptrs (n pointers) and
 * the bytes behind them in one allocation each; free(*ptrs) and free(*blob). */
int gguf_get_str_arr(const gguf_file *g, const char *key, char ***ptrs, char **blob, uint64_t *n);

#endif
