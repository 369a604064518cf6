/*
 * request.c — parsing the untrusted parts of a plugin request (the
 * ask body's JSON, the Basic auth header) into checked values. Pure C on
 * cJSON: no Orthanc calls, no I/O, bounded work; fuzzed on its own.
 */
#include "request.h"

#include <cjson/cJSON.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>

static const char *str_of(const cJSON *o, const char *key) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, key);
    return cJSON_IsString(v) && v->valuestring ? v->valuestring : NULL;
}

int op_parse_ask_body(const void *body, size_t len, op_ask_body *out, char *err, size_t errlen) {
    memset(out, 0, sizeof *out);
    if (len > OP_MAX_BODY_BYTES) {
        snprintf(err, errlen, "request body too large");
        return 413;
    }
    cJSON *j = body && len ? cJSON_ParseWithLength((const char *)body, len) : NULL;
    const char *question = str_of(j, "question"), *user = str_of(j, "user");
    const cJSON *lang = cJSON_GetObjectItemCaseSensitive(j, "lang");
    const char *lang_s = cJSON_IsString(lang) ? lang->valuestring : NULL;
    int status = 400;
    if (!cJSON_IsObject(j))
        snprintf(err, errlen, "the body must be a JSON object");
    else if (!question || !question[0])
        snprintf(err, errlen, "missing \"question\" (a non-empty string)");
    else if ((lang && !cJSON_IsNull(lang) && !lang_s) || (lang_s && strcmp(lang_s, "en") && strcmp(lang_s, "zh")))
        snprintf(err, errlen, "\"lang\" must be null, \"en\" or \"zh\"");
    else if (cJSON_GetObjectItemCaseSensitive(j, "user") && !user)
        snprintf(err, errlen, "\"user\" must be a string");
    else
        status = 0;
    if (status) {
        cJSON_Delete(j);
        return status;
    }
    out->json = j;
    out->question = question;
    out->user = user;
    out->lang = lang_s;
    return 0;
}

void op_ask_body_free(op_ask_body *b) {
    if (!b) return;
    cJSON_Delete((cJSON *)b->json);
    memset(b, 0, sizeof *b);
}

void op_basic_user(const char *h, char *out, size_t cap) {
    static const char B64[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    if (!cap) return;
    out[0] = 0;
    if (!h || strncasecmp(h, "Basic ", 6) != 0) return;
    h += 6;
    uint32_t acc = 0;
    int bits = 0;
    size_t n = 0;
    for (; *h && *h != '='; h++) {
        const char *p = *h ? strchr(B64, *h) : NULL;
        if (!p) {
            out[0] = 0;
            return;
        }
        acc = (acc << 6) | (uint32_t)(p - B64);
        bits += 6;
        if (bits >= 8) {
            bits -= 8;
            char ch = (char)((acc >> bits) & 0xff);
            if (ch == ':') break;
            if (n + 1 >= cap || (unsigned char)ch < 0x20 || ch == 0x7f) {
                out[0] = 0;
                return;
            }
            out[n++] = ch;
            out[n] = 0;
        }
    }
}
