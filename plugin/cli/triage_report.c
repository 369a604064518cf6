/*
 * triage_report.c — the HTML report of `cxrvqa screen --report`: one
 * self-contained page (no scripts, no external files; images as data: URIs,
 * plots as inline SVG) with the run's counts, the decisions per finding,
 * the refusals by reason, a histogram of p per finding, the top cases with
 * thumbnail and heatmap, and the ranked worklist. It owns the page's layout;
 * the rows and ranking are triage.c's.
 */
#include "triage.h"
#include "html.h"
#include "cxr_util.h"
#include "cxr_version.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define HIST_BINS 20
#define HIST_W 300
#define HIST_H 120
#define WORKLIST_MAX_ROWS 5000 /* rows in the page; the CSV has them all */

static const char *DECISIONS[] = {"yes", "uncertain", "no", "not-assessed"};
#define N_DECISIONS 4

typedef struct {
    char name[64];
    int count[N_DECISIONS];
    int hist[HIST_BINS];
    double th_sum;
    int th_n;
} finding_stats;

/* every finding seen, in first-seen order of the ranked list */
static int collect_findings(const triage_list *L, finding_stats **out) {
    int n = 0, cap = 16;
    finding_stats *v = calloc((size_t)cap, sizeof *v);
    if (!v) return -1;
    for (int i = 0; i < L->n; i++) {
        const triage_image *x = &L->v[i];
        if (x->status != TRIAGE_OK) continue;
        for (int k = 0; k < x->n_f; k++) {
            int j = 0;
            while (j < n && strcmp(v[j].name, x->f[k].name)) j++;
            if (j == n) {
                if (n == cap) {
                    finding_stats *nv = realloc(v, (size_t)cap * 2 * sizeof *nv);
                    if (!nv) {
                        free(v);
                        return -1;
                    }
                    memset(nv + cap, 0, (size_t)cap * sizeof *nv);
                    v = nv;
                    cap *= 2;
                }
                snprintf(v[n++].name, sizeof v[0].name, "%s", x->f[k].name);
            }
            finding_stats *s = &v[j];
            for (int d = 0; d < N_DECISIONS; d++)
                if (!strcmp(x->f[k].decision, DECISIONS[d])) s->count[d]++;
            float p = x->f[k].p;
            int bin = p <= 0 ? 0 : p >= 1 ? HIST_BINS - 1 : (int)(p * HIST_BINS);
            s->hist[bin]++;
            s->th_sum += x->f[k].threshold;
            s->th_n++;
        }
    }
    *out = v;
    return n;
}

static void histogram_svg(sb *b, const finding_stats *s) {
    int top = 1;
    for (int i = 0; i < HIST_BINS; i++)
        if (s->hist[i] > top) top = s->hist[i];
    const int ml = 34, mt = 8, W = HIST_W, H = HIST_H;
    double th = s->th_n ? s->th_sum / s->th_n : -1;
    sb_puts(b, "<svg class=\"hist\" role=\"img\" aria-label=\"histogram of p for ");
    sb_esc(b, s->name);
    sb_printf(b, "\" width=\"%d\" height=\"%d\" xmlns=\"http://www.w3.org/2000/svg\">", W + ml + 10, H + mt + 30);
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#333\"/>", ml, mt, W, H);
    double bw = (double)W / HIST_BINS;
    for (int i = 0; i < HIST_BINS; i++) {
        if (!s->hist[i]) continue;
        double h = (double)s->hist[i] / top * (H - 4);
        int above = th >= 0 && (i + 0.5) / HIST_BINS >= th;
        sb_printf(b, "<rect x=\"%.1f\" y=\"%.1f\" width=\"%.1f\" height=\"%.1f\" fill=\"%s\"><title>p %.2f–%.2f: %d "
                     "image%s</title></rect>",
                  ml + i * bw + 1, mt + H - h, bw - 2, h, above ? "#c0392b" : "#1f5fbf", (double)i / HIST_BINS,
                  (double)(i + 1) / HIST_BINS, s->hist[i], s->hist[i] == 1 ? "" : "s");
    }
    if (th >= 0)
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%d\" x2=\"%.1f\" y2=\"%d\" stroke=\"#222\" stroke-dasharray=\"4 3\"><title>"
                     "threshold %.3f</title></line>",
                  ml + th * W, mt, ml + th * W, mt + H, th);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">0</text>", ml, mt + H + 12);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">1</text>", ml + W, mt + H + 12);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">p (dashed: threshold)</text>",
              ml + W / 2, mt + H + 26);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">%d</text>", ml - 4, mt + 10, top);
    sb_printf(b, "<text x=\"%d\" y=\"%d\" font-size=\"10\" text-anchor=\"end\">0</text>", ml - 4, mt + H);
    sb_puts(b, "</svg>");
}

/* "effusion 0.81, cardiomegaly 0.66" of the findings with this decision */
static void findings_cell(sb *b, const triage_image *x, const char *decision) {
    int any = 0;
    for (int k = 0; k < x->n_f; k++) {
        if (strcmp(x->f[k].decision, decision)) continue;
        if (any++) sb_puts(b, ", ");
        sb_esc(b, x->f[k].name);
        sb_printf(b, " %.2f", x->f[k].p);
    }
}

static void top_cases(sb *b, const triage_list *L, const triage_report_info *info) {
    sb_printf(b, "<h2 id=\"top-cases\">Top %d cases</h2>\n", TRIAGE_REPORT_TOP);
    if (info->images_note) {
        sb_puts(b, "<p class=\"note\">");
        sb_esc(b, info->images_note);
        sb_puts(b, "</p>\n");
    }
    int shown = 0;
    for (int i = 0; i < L->n && shown < TRIAGE_REPORT_TOP; i++) {
        const triage_image *x = &L->v[i];
        if (!x->scored) break;
        shown++;
        sb_printf(b, "<div class=\"case\" data-rank=\"%d\"><div class=\"case-head\">#%d &middot; score %.3f &middot; ",
                  x->rank, x->rank, x->score);
        sb_esc(b, x->top);
        sb_puts(b, "</div><div class=\"imgs\">");
        if (x->thumb) {
            sb_printf(b, "<figure><img class=\"thumb\" alt=\"image, rank %d\" src=\"", x->rank);
            sb_data_uri(b, "image/png", x->thumb, x->thumb_len);
            sb_puts(b, "\"><figcaption>image</figcaption></figure>");
        }
        if (x->heat) {
            sb_printf(b, "<figure><img class=\"heatmap\" alt=\"evidence heatmap, rank %d\" src=\"", x->rank);
            sb_data_uri(b, "image/png", x->heat, x->heat_len);
            sb_puts(b, "\"><figcaption>evidence: ");
            sb_esc(b, x->top);
            sb_puts(b, "</figcaption></figure>");
        }
        if (x->image_err[0]) {
            sb_puts(b, "<p class=\"note\">");
            sb_esc(b, x->image_err);
            sb_puts(b, "</p>");
        }
        sb_puts(b, "</div><div class=\"case-body\">positive: ");
        findings_cell(b, x, "yes");
        sb_puts(b, "<br>uncertain: ");
        findings_cell(b, x, "uncertain");
        sb_puts(b, "<br>accession: ");
        sb_esc(b, x->accession);
        sb_puts(b, "<br><code>");
        sb_esc(b, x->path);
        sb_puts(b, "</code></div></div>\n");
    }
    if (!shown) sb_puts(b, "<p>No image was answered with an assessable finding.</p>\n");
}

static void worklist_table(sb *b, const triage_list *L) {
    sb_puts(b, "<h2 id=\"worklist\">Worklist</h2><p>Ranked by score = the highest p / threshold over the image's "
               "assessable findings (1 is the operating point; above 1 the model leans positive); then images "
               "answered with no assessable finding, refused images, failed images.</p>\n");
    sb_puts(b, "<table class=\"worklist\"><tr><th>rank</th><th>score</th><th>top finding</th><th>positive</th>"
               "<th>uncertain</th><th>accession</th><th>patient</th><th>study date</th><th>status</th>"
               "<th>reason</th><th>file</th></tr>\n");
    for (int i = 0; i < L->n && i < WORKLIST_MAX_ROWS; i++) {
        const triage_image *x = &L->v[i];
        sb_printf(b, "<tr class=\"%s\"><td>%d</td><td>", triage_status_name(x->status), x->rank);
        if (x->scored) sb_printf(b, "%.3f", x->score);
        sb_puts(b, "</td><td>");
        if (x->scored) sb_esc(b, x->top);
        sb_puts(b, "</td><td>");
        findings_cell(b, x, "yes");
        sb_puts(b, "</td><td>");
        findings_cell(b, x, "uncertain");
        sb_puts(b, "</td><td>");
        sb_esc(b, x->accession);
        sb_puts(b, "</td><td>");
        sb_esc(b, x->patient_id);
        sb_puts(b, "</td><td>");
        sb_esc(b, x->study_date);
        sb_printf(b, "</td><td>%s</td><td>", triage_status_name(x->status));
        if (x->status == TRIAGE_REFUSED || x->status == TRIAGE_ERROR) sb_esc(b, x->reason_code);
        sb_puts(b, "</td><td><code>");
        sb_esc(b, x->path);
        sb_puts(b, "</code></td></tr>\n");
    }
    sb_puts(b, "</table>\n");
    if (L->n > WORKLIST_MAX_ROWS)
        sb_printf(b, "<p>%d more images: see the worklist CSV.</p>\n", L->n - WORKLIST_MAX_ROWS);
}

/* refused (or failed) images by reason code, most frequent first */
static void reasons_table(sb *b, const triage_list *L, int status, const char *what) {
    int n = 0;
    for (int i = 0; i < L->n; i++) n += L->v[i].status == status;
    if (!n) {
        sb_printf(b, "<p>No image %s.</p>\n", what);
        return;
    }
    char *done = calloc((size_t)L->n, 1);
    if (!done) {
        b->oom = 1;
        return;
    }
    sb_printf(b, "<table class=\"reasons-%s\"><tr><th>reason</th><th>images</th><th>share</th><th>example</th></tr>\n",
              what);
    for (;;) { /* the most frequent code not listed yet */
        int best = -1, best_n = 0;
        for (int i = 0; i < L->n; i++) {
            if (L->v[i].status != status || done[i]) continue;
            int c = 0;
            for (int j = 0; j < L->n; j++)
                c += L->v[j].status == status && !strcmp(L->v[j].reason_code, L->v[i].reason_code);
            if (c > best_n) {
                best_n = c;
                best = i;
            }
        }
        if (best < 0) break;
        for (int j = 0; j < L->n; j++)
            if (L->v[j].status == status && !strcmp(L->v[j].reason_code, L->v[best].reason_code)) done[j] = 1;
        sb_puts(b, "<tr><td>");
        sb_esc(b, L->v[best].reason_code);
        sb_printf(b, "</td><td>%d</td><td>%.0f%%</td><td>", best_n, 100.0 * best_n / n);
        sb_esc(b, L->v[best].reason);
        sb_puts(b, "</td></tr>\n");
    }
    sb_puts(b, "</table>\n");
    free(done);
}

int triage_report_write(const triage_list *L, const triage_report_info *info, const char *path, char *err,
                        size_t errlen) {
    finding_stats *fs = NULL;
    int nf = collect_findings(L, &fs);
    if (nf < 0) {
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    sb b = {0};
    sb_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Screening report</title>"
                  "<style>%s", HTML_REPORT_CSS);
    sb_puts(&b, ".case{display:inline-block;vertical-align:top;width:430px;margin:8px 12px 8px 0;background:#fff;"
                "border:1px solid #ddd;padding:6px}.case-head{font-weight:bold;margin-bottom:4px}"
                ".imgs figure{display:inline-block;margin:0 6px 0 0}.imgs img{width:200px;height:auto;"
                "border:1px solid #ccc}.note{color:#8a5a00}tr.refused td{background:#fff6e5}"
                "tr.failed td{background:#fdecea}figcaption{font-size:11px;color:#555}table.summary td{text-align:left}"
                "</style></head><body>\n");
    sb_puts(&b, "<h1>Screening report</h1><p class=\"disclaimer\">Research tool, not a diagnostic device. The "
                "ranking and findings come from a research model trained on small public data; every result is "
                "unverified until a radiologist who has the images verifies it. Do not use it to decide care.</p>\n");
    /* summary */
    int done = L->n_ok + L->n_refused + L->n_error;
    sb_puts(&b, "<h2 id=\"summary\">Summary</h2><table class=\"summary\">");
    sb_puts(&b, "<tr><th>screened</th><td><code>");
    sb_esc(&b, info->title_source);
    sb_printf(&b, "</code></td></tr><tr><th>images</th><td>%d</td></tr><tr><th>answered</th><td>%d</td></tr>"
                  "<tr><th>refused</th><td>%d%s</td></tr><tr><th>failed</th><td>%d</td></tr>",
              L->n, L->n_ok, L->n_refused,
              done && L->n_refused > TRIAGE_REFUSAL_WARN * done ? " <strong>(more than a quarter)</strong>" : "",
              L->n_error);
    if (L->n_pending) sb_printf(&b, "<tr><th>not done</th><td>%d</td></tr>", L->n_pending);
    sb_printf(&b, "<tr><th>files skipped</th><td>%d", info->n_skipped_files);
    for (int i = 0; i < info->n_skipped_files && i < 10; i++) {
        sb_puts(&b, i ? ", <code>" : ": <code>");
        sb_esc(&b, info->skipped_files[i]);
        sb_puts(&b, "</code>");
    }
    if (info->n_skipped_files > 10) sb_printf(&b, " and %d more", info->n_skipped_files - 10);
    sb_puts(&b, "</td></tr><tr><th>questions</th><td>");
    for (int i = 0; i < info->n_questions; i++) {
        if (i) sb_puts(&b, "<br>");
        sb_esc(&b, info->questions[i]);
    }
    sb_puts(&b, "</td></tr></table>\n");
    /* decisions per finding */
    sb_puts(&b, "<h2 id=\"findings\">Decisions per finding</h2><table class=\"findings\"><tr><th>finding</th>");
    for (int d = 0; d < N_DECISIONS; d++) sb_printf(&b, "<th>%s</th>", DECISIONS[d]);
    sb_puts(&b, "<th>mean threshold</th></tr>\n");
    for (int i = 0; i < nf; i++) {
        sb_puts(&b, "<tr><td>");
        sb_esc(&b, fs[i].name);
        sb_puts(&b, "</td>");
        for (int d = 0; d < N_DECISIONS; d++) sb_printf(&b, "<td>%d</td>", fs[i].count[d]);
        sb_printf(&b, "<td>%.3f</td></tr>\n", fs[i].th_n ? fs[i].th_sum / fs[i].th_n : 0.0);
    }
    sb_puts(&b, "</table>\n");
    if (!nf) sb_puts(&b, "<p>No finding was answered.</p>\n");
    /* refusals and failures */
    sb_puts(&b, "<h2 id=\"refusals\">Refusals by reason</h2>\n");
    reasons_table(&b, L, TRIAGE_REFUSED, "refused");
    sb_puts(&b, "<h2 id=\"failures\">Failures by reason</h2>\n");
    reasons_table(&b, L, TRIAGE_ERROR, "failed");
    /* histograms */
    sb_puts(&b, "<h2 id=\"histograms\">Distribution of p per finding</h2>\n");
    for (int i = 0; i < nf; i++) {
        sb_puts(&b, "<section class=\"finding\"><h3>");
        sb_esc(&b, fs[i].name);
        sb_printf(&b, " <small>(%d images%s)</small></h3>", fs[i].th_n,
                  fs[i].count[3] == fs[i].th_n ? "; not assessed: not used for ranking" : "");
        histogram_svg(&b, &fs[i]);
        sb_puts(&b, "</section>\n");
    }
    top_cases(&b, L, info);
    worklist_table(&b, L);
    sb_printf(&b, "\n<p><small>cxrvqa %s screen.</small></p></body></html>\n", CXR_VERSION);
    free(fs);
    if (b.oom) {
        free(b.p);
        snprintf(err, errlen, "out of memory");
        return -1;
    }
    int rc = cxr_write_atomic(path, b.p, b.n, 0644);
    if (rc != 0) snprintf(err, errlen, "cannot write: %s", strerror(errno));
    free(b.p);
    return rc;
}
