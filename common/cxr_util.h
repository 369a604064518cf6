/*
 * cxr_util.h — the small helpers every part of cxrvqa needs, written once:
 * SHA-256 of a file or of parts joined by '\n' (over cxr_sha256.h), writing a whole
 * buffer and replacing a file atomically, clocks, and error text. Plain C
 * over POSIX; no knowledge of images, models or JSON.
 *
 *   char hex[65];
 *   if (cxr_sha256_file("model.gguf", hex) != CXR_OK) ...;
 *   if (cxr_write_atomic("out.png", buf, len, 0644) != 0) perror("out.png");
 *   double t0 = cxr_now_ms(); ...; printf("%.1f ms\n", cxr_now_ms() - t0);
 *   return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", path, strerror(errno));
 */
#ifndef CXR_UTIL_H
#define CXR_UTIL_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* ---- SHA-256, lowercase hex (64 characters + NUL); of one buffer:
 * cxr_sha256_hex() in cxr_sha256.h */
/* Of a whole file, read in 1 MiB blocks. CXR_ERR_IO when it cannot be read. */
int cxr_sha256_file(const char *path, char hex[65]);
/* Of the NULL-terminated list of strings, joined by '\n' (request keys). */
int cxr_sha256_parts(const char *const *parts, char hex[65]);

/* ---- files */
/* Write all len bytes to fd, retrying on EINTR and short writes. 0, or -1
 * with errno set. */
int cxr_write_all(int fd, const void *data, size_t len);
/* Replace path with data atomically: a temporary file beside it
 * (path.tmp.PID, created with mode), written, fsync'ed, renamed over path.
 * Nothing is left behind on failure. 0, or -1 with errno set. */
int cxr_write_atomic(const char *path, const void *data, size_t len, unsigned mode);
/* fsync a folder (after a rename into it). 0, or -1 with errno set. */
int cxr_fsync_dir(const char *dir);

/* ---- clocks */
double cxr_now_ms(void);          /* monotonic, milliseconds, for durations */
/* Wall-clock UTC time as ISO 8601 with milliseconds ("2026-12-06T23:59:01.123Z"). */
void cxr_now_iso(char out[64]);

/* ---- error text */
/* Format the message into err (when err and errlen) and return code: the
 * one-line way to fail with a detail, `return cxr_fail(err, n, CXR_ERR_IO, "…", …);`. */
int cxr_fail(char *err, size_t errlen, int code, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 4, 5)))
#endif
    ;

#ifdef __cplusplus
}
#endif
#endif /* CXR_UTIL_H */
