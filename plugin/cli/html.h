/*
 * html.h — the string builder and escaping the self-contained HTML reports
 * share (validate_report.c, triage_report.c; internal to plugin/cli/), and
 * the CSV field writer of screen's CSV and worklist: a
 * growing buffer that remembers running out of memory instead of failing
 * every call, HTML escaping, base64 for data: URIs, and the page's CSS.
 *
 *   sb b = {0};
 *   sb_printf(&b, "<h1>%s</h1>", "Screening");
 *   sb_esc(&b, untrusted);
 *   sb_data_uri(&b, "image/png", png, png_len);
 *   if (b.oom) ...;  else write b.p (b.n bytes);  free(b.p);
 */
#ifndef CXR_CLI_HTML_H
#define CXR_CLI_HTML_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

typedef struct {
    char *p;
    size_t n, cap;
    int oom;
} sb;

/* One CSV field (RFC 4180: quoted when it holds a comma, quote or line
 * break; NULL as empty), then ',' or, for the last, a newline. */
void cli_csv_field(FILE *f, const char *v, int last);

void sb_put(sb *b, const char *s, size_t n);
void sb_puts(sb *b, const char *s); /* NUL-terminated */
#if defined(__GNUC__)
__attribute__((format(printf, 2, 3)))
#endif
void sb_printf(sb *b, const char *fmt, ...);
void sb_esc(sb *b, const char *s);  /* & < > " ' escaped; NULL: nothing */
void sb_num(sb *b, double v);       /* %.3f, an en dash for NaN */
void sb_data_uri(sb *b, const char *mime, const uint8_t *bytes, size_t n); /* data:MIME;base64,... */

/* the reports' common style sheet (the inside of <style>) */
extern const char HTML_REPORT_CSS[];

#endif
