/*
 * cxr_util.c — the shared helpers of cxr_util.h: SHA-256 through OpenSSL's
 * EVP, whole and atomic writes, clocks, error text. It owns nothing else and
 * must not print, exit or allocate beyond its own buffers.
 */
#include "cxr_util.h"
#include "cxr_common.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- SHA-256 */

static void to_hex(const unsigned char md[32], char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

/* Finish ctx into hex; CXR_OK or CXR_ERR_INTERNAL. */
static int finish(EVP_MD_CTX *ctx, char hex[65]) {
    unsigned char md[32];
    unsigned int n = 0;
    if (EVP_DigestFinal_ex(ctx, md, &n) != 1 || n != 32) return CXR_ERR_INTERNAL;
    to_hex(md, hex);
    return CXR_OK;
}

int cxr_sha256_hex(const void *data, size_t len, char hex[65]) {
    hex[0] = '\0';
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 && EVP_DigestUpdate(ctx, data, len) == 1
                 ? finish(ctx, hex)
                 : CXR_ERR_INTERNAL;
    EVP_MD_CTX_free(ctx);
    return rc;
}

int cxr_sha256_file(const char *path, char hex[65]) {
    hex[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp) return CXR_ERR_IO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    unsigned char *buf = malloc(1 << 20);
    int rc = ctx && buf ? CXR_OK : CXR_ERR_NOMEM;
    if (rc == CXR_OK && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) != 1) rc = CXR_ERR_INTERNAL;
    size_t n;
    while (rc == CXR_OK && (n = fread(buf, 1, 1 << 20, fp)) > 0)
        if (EVP_DigestUpdate(ctx, buf, n) != 1) rc = CXR_ERR_INTERNAL;
    if (rc == CXR_OK && ferror(fp)) rc = CXR_ERR_IO;
    if (rc == CXR_OK) rc = finish(ctx, hex);
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(fp);
    return rc;
}

int cxr_sha256_parts(const char *const *parts, char hex[65]) {
    hex[0] = '\0';
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = ctx && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1 ? CXR_OK : CXR_ERR_INTERNAL;
    for (int i = 0; rc == CXR_OK && parts[i]; i++)
        if ((i && EVP_DigestUpdate(ctx, "\n", 1) != 1) || EVP_DigestUpdate(ctx, parts[i], strlen(parts[i])) != 1)
            rc = CXR_ERR_INTERNAL;
    if (rc == CXR_OK) rc = finish(ctx, hex);
    EVP_MD_CTX_free(ctx);
    return rc;
}

/* --------------------------------------------------------------- files */

int cxr_write_all(int fd, const void *data, size_t len) {
    const unsigned char *p = data;
    size_t off = 0;
    while (off < len) {
        ssize_t w = write(fd, p + off, len - off);
        if (w < 0 && errno == EINTR) continue;
        if (w <= 0) {
            if (w == 0) errno = EIO;
            return -1;
        }
        off += (size_t)w;
    }
    return 0;
}

int cxr_write_atomic(const char *path, const void *data, size_t len, unsigned mode) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, (mode_t)mode);
    if (fd < 0) return -1;
    if (cxr_write_all(fd, data, len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

int cxr_fsync_dir(const char *dir) {
    int fd = open(dir, O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (fd < 0) return -1;
    int rc = fsync(fd);
    close(fd);
    return rc;
}

/* -------------------------------------------------------------- clocks */

double cxr_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

void cxr_now_iso(char out[64]) {
    struct timespec ts;
    struct tm tm;
    clock_gettime(CLOCK_REALTIME, &ts);
    gmtime_r(&ts.tv_sec, &tm);
    snprintf(out, 64, "%04d-%02d-%02dT%02d:%02d:%02d.%03dZ", tm.tm_year + 1900, tm.tm_mon + 1, tm.tm_mday,
             tm.tm_hour, tm.tm_min, tm.tm_sec, (int)(ts.tv_nsec / 1000000));
}

/* ---------------------------------------------------------- error text */

int cxr_fail(char *err, size_t errlen, int code, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return code;
}
