/*
 * fuzz_frame.c — libFuzzer target for the worker channel's frame decoder
 * (cxr_frame_decode, the core of cxr_frame_read): decodes the input as a
 * stream of frames, checks each decoded frame against the bytes it came
 * from, then pushes the same bytes through cxr_frame_read over a pipe (fed
 * by a memfd so nothing blocks) and requires the two paths to agree. Any
 * crash, leak, sanitizer report or disagreement (abort) is a bug.
 *
 * Seeds: tests/fuzz/corpus_frame/ — a frame with JSON and payload, empty
 * frames, two frames back to back, truncated frames, sizes over the caps,
 * a NUL inside the JSON.
 */
#define _GNU_SOURCE
#include "worker.h"

#include <stdlib.h>
#include <string.h>
#include <sys/mman.h>
#include <unistd.h>

#define FUZZ_MAX_INPUT (1u << 20)
#define FUZZ_MAX_FRAMES 64

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static uint32_t be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_MAX_INPUT) return 0;
    char err[CXR_ERRMSG_MAX];
    int codes[FUZZ_MAX_FRAMES + 1];
    int n = 0;
    size_t off = 0;
    /* 1. in memory */
    while (n < FUZZ_MAX_FRAMES) {
        cxr_msg m;
        size_t used = 0;
        int rc = cxr_frame_decode(data + off, size - off, &m, &used, err, sizeof err);
        codes[n++] = rc;
        if (rc != CXR_OK) {
            if (m.json || m.payload || used) abort();
            if (rc != CXR_ERR_TRUNCATED && rc != CXR_ERR_PROTOCOL) abort();
            break;
        }
        if (used != 8 + m.json_len + m.payload_len || used > size - off) abort();
        if (be32(data + off) != m.json_len || be32(data + off + 4) != m.payload_len) abort();
        if (m.json[m.json_len] != '\0' || strlen(m.json) != m.json_len) abort();
        if (memcmp(m.json, data + off + 8, m.json_len) != 0) abort();
        if (m.payload_len && memcmp(m.payload, data + off + 8 + m.json_len, m.payload_len) != 0) abort();
        if (!m.payload_len && m.payload) abort();
        cxr_msg_free(&m);
        off += used;
        if (off == size) break;
    }
    /* 2. the same bytes through cxr_frame_read (a regular file never blocks) */
    int fd = memfd_create("fuzz.frame", MFD_CLOEXEC);
    if (fd < 0) return 0;
    if (size && write(fd, data, size) != (ssize_t)size) {
        close(fd);
        return 0;
    }
    lseek(fd, 0, SEEK_SET);
    for (int i = 0; i < n; i++) {
        /* a truncated frame is read only when what it declares is small:
         * cxr_frame_read allocates the declared size (within the caps)
         * before it meets the EOF, and 512 MiB per input would stall the fuzzer */
        if (codes[i] == CXR_ERR_TRUNCATED && size - off >= 8 &&
            (uint64_t)be32(data + off) + be32(data + off + 4) > FUZZ_MAX_INPUT)
            break;
        cxr_msg m;
        int rc = cxr_frame_read(fd, &m, 0, err, sizeof err);
        cxr_msg_free(&m);
        /* truncated in memory = EOF mid-frame (or at a frame boundary) on a stream */
        int want = codes[i] == CXR_ERR_TRUNCATED ? CXR_ERR_IO : codes[i];
        if (rc != want) abort();
        if (rc != CXR_OK) break;
    }
    close(fd);
    return 0;
}
