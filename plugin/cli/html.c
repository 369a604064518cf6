/*
 * html.c — html.h: the string builder, escaping, base64 and style sheet of
 * the HTML reports. It owns no page layout.
 */
#include "html.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

void sb_put(sb *b, const char *s, size_t n) {
    if (b->oom) return;
    if (b->n + n + 1 > b->cap) {
        size_t cap = b->cap ? b->cap : 65536;
        while (cap < b->n + n + 1) cap *= 2;
        char *q = realloc(b->p, cap);
        if (!q) {
            b->oom = 1;
            return;
        }
        b->p = q;
        b->cap = cap;
    }
    memcpy(b->p + b->n, s, n);
    b->n += n;
    b->p[b->n] = '\0';
}

void sb_puts(sb *b, const char *s) { sb_put(b, s, strlen(s)); }

void sb_printf(sb *b, const char *fmt, ...) {
    char tmp[2048];
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(tmp, sizeof tmp, fmt, ap);
    va_end(ap);
    if (k > 0) sb_put(b, tmp, (size_t)k < sizeof tmp ? (size_t)k : sizeof tmp - 1);
}

void sb_esc(sb *b, const char *s) {
    for (; s && *s; s++) {
        switch (*s) {
        case '&': sb_put(b, "&amp;", 5); break;
        case '<': sb_put(b, "&lt;", 4); break;
        case '>': sb_put(b, "&gt;", 4); break;
        case '"': sb_put(b, "&quot;", 6); break;
        case '\'': sb_put(b, "&#39;", 5); break;
        default: sb_put(b, s, 1);
        }
    }
}

void sb_num(sb *b, double v) {
    if (isnan(v)) sb_puts(b, "–");
    else sb_printf(b, "%.3f", v);
}

void sb_data_uri(sb *b, const char *mime, const uint8_t *x, size_t n) {
    static const char A[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    sb_printf(b, "data:%s;base64,", mime);
    char q[4];
    for (size_t i = 0; i < n; i += 3) {
        uint32_t v = (uint32_t)x[i] << 16 | (i + 1 < n ? (uint32_t)x[i + 1] << 8 : 0) | (i + 2 < n ? x[i + 2] : 0);
        q[0] = A[v >> 18 & 63];
        q[1] = A[v >> 12 & 63];
        q[2] = i + 1 < n ? A[v >> 6 & 63] : '=';
        q[3] = i + 2 < n ? A[v & 63] : '=';
        sb_put(b, q, 4);
    }
}

const char HTML_REPORT_CSS[] =
    "body{font:14px/1.4 sans-serif;margin:24px;color:#222;background:#fafafa}"
    "table{border-collapse:collapse;margin:12px 0}td,th{border:1px solid #ccc;padding:3px 7px;"
    "text-align:right}td:first-child,th:first-child{text-align:left}th{background:#eee}"
    ".disclaimer{border:2px solid #c0392b;background:#fdecea;padding:8px 12px;font-weight:bold}"
    ".finding{display:inline-block;vertical-align:top;margin:8px 16px 8px 0;background:#fff;"
    "border:1px solid #ddd;padding:6px}.tier-assessable{color:#1e7b34}.tier-limited{color:#b9770e}"
    ".tier-not-assessed{color:#888}code{font-size:12px}";

void cli_csv_field(FILE *f, const char *v, int last) {
    if (!v) v = "";
    if (strpbrk(v, ",\"\r\n")) {
        fputc('"', f);
        for (const char *c = v; *c; c++) {
            if (*c == '"') fputc('"', f);
            fputc(*c, f);
        }
        fputc('"', f);
    } else {
        fputs(v, f);
    }
    fputc(last ? '\n' : ',', f);
}
