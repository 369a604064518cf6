/*
 * cxr_sha256.h — SHA-256 (FIPS 180-4), written once for the whole tree: the
 * engine hashes the model file from its mapping at open. Plain C, with the
 * x86 SHA extensions where the CPU has them (same digests either way).
 *
 *   char hex[65];
 *   cxr_sha256_hex(buf, len, hex);          // one buffer
 *
 *   cxr_sha256_ctx c;                       // or in pieces
 *   cxr_sha256_init(&c);
 *   cxr_sha256_update(&c, part1, n1);
 *   cxr_sha256_update(&c, part2, n2);
 *   unsigned char md[32];
 *   cxr_sha256_final(&c, md);
 *
 * No allocation, no global state; any thread.
 */
#ifndef CXR_SHA256_H
#define CXR_SHA256_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    uint32_t h[8];
    uint64_t len;        /* bytes hashed so far */
    unsigned char buf[64];
    size_t n;            /* bytes waiting in buf */
} cxr_sha256_ctx;

void cxr_sha256_init(cxr_sha256_ctx *c);
void cxr_sha256_update(cxr_sha256_ctx *c, const void *data, size_t n);
void cxr_sha256_final(cxr_sha256_ctx *c, unsigned char md[32]);
/* The digest of data[0, n) as 64 lowercase hex digits and a NUL. */
void cxr_sha256_hex(const void *data, size_t n, char hex[65]);
/* Tests: 1 = use the portable rounds even where the SHA extensions exist. */
void cxr_sha256_set_portable(int on);

#ifdef __cplusplus
}
#endif
#endif
