/*
 * request.h — what an HTTP client sends the Orthanc plugin, parsed
 * without Orthanc (internal; fuzzed by tests/fuzz/fuzz_plugin_request.c):
 * the body of POST /cxrvqa/instances/{id}/ask and the user name of an HTTP
 * Basic Authorization header.
 */
#ifndef CXR_ORTHANC_REQUEST_H
#define CXR_ORTHANC_REQUEST_H

#include <stddef.h>

#define OP_MAX_BODY_BYTES (64u << 10) /* larger bodies are refused with 413 before parsing */

typedef struct {
    void *json;             /* the parsed cJSON tree the strings below point into */
    const char *question;   /* non-empty */
    const char *user;       /* NULL when absent */
    const char *lang;       /* NULL (absent or null), "en" or "zh" */
} op_ask_body;

/* Parse and check an ask body: a JSON object with a non-empty string
 * "question", optional string "user", optional "lang" null / "en" / "zh".
 * Returns 0 (free with op_ask_body_free), or an HTTP status (400, 413) with
 * the reason in err; nothing to free then. */
int op_parse_ask_body(const void *body, size_t len, op_ask_body *out, char *err, size_t errlen);
void op_ask_body_free(op_ask_body *b);

/* The user name of an "Authorization: Basic …" header value (NULL or any
 * other scheme: ""). Invalid base64, control characters or a name that does
 * not fit cap give "". */
void op_basic_user(const char *authorization, char *out, size_t cap);

#endif
