/*
 * fuzz_plugin_request.c — libFuzzer target for what an HTTP client sends the
 * Orthanc plugin (plugin/orthanc/request.h): the first byte chooses the ask
 * body parser or the Basic Authorization header decoder, the rest is the
 * input. Checked promises: a parsed body has a non-empty question, lang
 * NULL / "en" / "zh", and nothing to free on refusal (LeakSanitizer); a
 * decoded user name is terminated within its buffer and holds no control
 * characters. A broken promise aborts. Seeds: tests/fuzz/corpus_plugin/.
 */
#include "request.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what) {
    fprintf(stderr, "fuzz_plugin_request: broken promise: %s\n", what);
    abort();
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size < 1 || size > OP_MAX_BODY_BYTES + 64) return 0;
    if (data[0] & 1) {
        char *h = malloc(size); /* as a C string: the header value Orthanc hands over */
        if (!h) return 0;
        memcpy(h, data + 1, size - 1);
        h[size - 1] = '\0';
        char user[32];
        memset(user, 'x', sizeof user);
        op_basic_user(h, user, sizeof user);
        if (!memchr(user, '\0', sizeof user)) fail("user not terminated");
        for (const char *c = user; *c; c++)
            if ((unsigned char)*c < 0x20 || *c == 0x7f) fail("control character in user");
        free(h);
        return 0;
    }
    op_ask_body b;
    char err[160];
    int st = op_parse_ask_body(data + 1, size - 1, &b, err, sizeof err);
    if (st == 0) {
        if (!b.question || !b.question[0]) fail("empty question accepted");
        if (b.lang && strcmp(b.lang, "en") && strcmp(b.lang, "zh")) fail("bad lang accepted");
        op_ask_body_free(&b);
    } else if (st != 400 && st != 413) {
        fail("status");
    } else if (!memchr(err, '\0', sizeof err) || !err[0]) {
        fail("no reason");
    }
    return 0;
}
