/*
 * cxr_util.c — the shared helpers of cxr_util.h: SHA-256 of a file or of
 * parts (over cxr_sha256.c), whole and atomic writes, clocks, error text. It owns nothing else and
 * must not print, exit or allocate beyond its own buffers.
 */
#include "cxr_util.h"
#include "cxr_common.h"
#include "cxr_sha256.h"

#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------- SHA-256 */

static void finish(cxr_sha256_ctx *c, char hex[65]) {
    static const char digits[] = "0123456789abcdef";
    unsigned char md[32];
    cxr_sha256_final(c, md);
    for (int i = 0; i < 32; i++) {
        hex[2 * i] = digits[md[i] >> 4];
        hex[2 * i + 1] = digits[md[i] & 15];
    }
    hex[64] = '\0';
}

int cxr_sha256_file(const char *path, char hex[65]) {
    hex[0] = '\0';
    FILE *fp = fopen(path, "rb");
    if (!fp) return CXR_ERR_IO;
    unsigned char *buf = malloc(1 << 20);
    if (!buf) {
        fclose(fp);
        return CXR_ERR_NOMEM;
    }
    cxr_sha256_ctx c;
    cxr_sha256_init(&c);
    size_t n;
    while ((n = fread(buf, 1, 1 << 20, fp)) > 0) cxr_sha256_update(&c, buf, n);
    int rc = ferror(fp) ? CXR_ERR_IO : CXR_OK;
    if (rc == CXR_OK) finish(&c, hex);
    free(buf);
    fclose(fp);
    return rc;
}

int cxr_sha256_parts(const char *const *parts, char hex[65]) {
    cxr_sha256_ctx c;
    cxr_sha256_init(&c);
    for (int i = 0; parts[i]; i++) {
        if (i) cxr_sha256_update(&c, "\n", 1);
        cxr_sha256_update(&c, parts[i], strlen(parts[i]));
    }
    finish(&c, hex);
    return CXR_OK;
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
