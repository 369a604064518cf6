/*
 * validate_report.c — the HTML report of `cxrvqa validate`: one
 * self-contained page (no scripts, no external files) with the provenance,
 * the figures table, per labelled finding an ROC curve and a reliability
 * diagram as inline SVG, and every refused or failed image with its reason.
 * It owns the page's layout and escaping; the numbers are validate.c's.
 */
#include "validate.h"
#include "html.h"
#include "cxr_util.h"

#include <errno.h>
#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* --------------------------------------------------------------- plots */

#define PLOT 240 /* side of the plot area, px */
#define MARGIN 36

typedef struct {
    float s;
    int y;
} pt;

static int cmp_pt_desc(const void *a, const void *b) {
    float x = ((const pt *)a)->s, y = ((const pt *)b)->s;
    return x > y ? -1 : x < y ? 1 : 0;
}

static double px_x(double v) { return MARGIN + v * PLOT; }
static double px_y(double v) { return MARGIN / 2.0 + (1 - v) * PLOT; }

static void axes(sb *b, const char *xlabel, const char *ylabel) {
    sb_printf(b, "<rect x=\"%d\" y=\"%d\" width=\"%d\" height=\"%d\" fill=\"#fff\" stroke=\"#333\"/>", MARGIN,
              MARGIN / 2, PLOT, PLOT);
    for (int k = 1; k < 5; k++) {
        double v = k / 5.0;
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", px_x(v), px_y(0),
                  px_x(v), px_y(1));
        sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#ddd\"/>", px_x(0), px_y(v),
                  px_x(1), px_y(v));
    }
    sb_printf(b, "<line x1=\"%.1f\" y1=\"%.1f\" x2=\"%.1f\" y2=\"%.1f\" stroke=\"#999\" stroke-dasharray=\"4 3\"/>",
              px_x(0), px_y(0), px_x(1), px_y(1));
    sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"11\" text-anchor=\"middle\">%s</text>", px_x(0.5),
              MARGIN / 2 + PLOT + 26, xlabel);
    sb_printf(b, "<text x=\"12\" y=\"%.1f\" font-size=\"11\" text-anchor=\"middle\" transform=\"rotate(-90 12 %.1f)\">%s</text>",
              px_y(0.5), px_y(0.5), ylabel);
    sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">0</text>", px_x(0), MARGIN / 2 + PLOT + 12);
    sb_printf(b, "<text x=\"%.1f\" y=\"%d\" font-size=\"10\" text-anchor=\"middle\">1</text>", px_x(1), MARGIN / 2 + PLOT + 12);
}

/* ROC of z over the labelled scored images, with the operating point. */
static void roc_svg(sb *b, const val_run *R, int fi) {
    const val_finding *f = &R->findings[fi];
    pt *v = malloc((size_t)f->n * sizeof *v);
    if (!v) return;
    int n = 0;
    for (int i = 0; i < R->n_images; i++) {
        const val_image *x = &R->images[i];
        if (x->status == VAL_SCORED && x->y && x->y[fi] >= 0 && n < f->n) v[n++] = (pt){x->z[fi], x->y[fi]};
    }
    qsort(v, (size_t)n, sizeof *v, cmp_pt_desc);
    sb_printf(b, "<svg class=\"roc\" role=\"img\" aria-label=\"ROC curve of %s\" width=\"%d\" height=\"%d\" "
                 "xmlns=\"http://www.w3.org/2000/svg\">", f->name, PLOT + MARGIN + 10, PLOT + MARGIN + 10);
    axes(b, "1 − specificity", "sensitivity");
    sb_printf(b, "<polyline fill=\"none\" stroke=\"#1f5fbf\" stroke-width=\"2\" points=\"%.1f,%.1f", px_x(0), px_y(0));
    int tp = 0, fp = 0;
    for (int i = 0; i < n;) {
        int j = i;
        while (j < n && v[j].s == v[i].s) {
            tp += v[j].y;
            fp += !v[j].y;
            j++;
        }
        sb_printf(b, " %.1f,%.1f", px_x(f->neg ? (double)fp / f->neg : 0), px_y(f->pos ? (double)tp / f->pos : 0));
        i = j;
    }
    sb_put(b, "\"/>", 3);
    if (!isnan(f->sens) && !isnan(f->spec))
        sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"4\" fill=\"#c0392b\"><title>threshold %.3f: sensitivity "
                     "%.3f, specificity %.3f</title></circle>",
                  px_x(1 - f->spec), px_y(f->sens), f->pt.threshold, f->sens, f->spec);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" text-anchor=\"end\">AUC %.3f</text>", px_x(0.97),
              px_y(0.05), f->auc);
    sb_put(b, "</svg>", 6);
    free(v);
}

/* Reliability: mean predicted p against the observed rate in each of the
 * ECE bins, before (the file's calibration) and after (the site's). */
static void reliability_svg(sb *b, const val_run *R, int fi) {
    const val_finding *f = &R->findings[fi];
    sb_printf(b, "<svg class=\"reliability\" role=\"img\" aria-label=\"reliability diagram of %s\" width=\"%d\" "
                 "height=\"%d\" xmlns=\"http://www.w3.org/2000/svg\">", f->name, PLOT + MARGIN + 10, PLOT + MARGIN + 10);
    axes(b, "predicted probability", "observed rate");
    static const char *colour[2] = {"#e67e22", "#1f5fbf"};
    for (int which = 0; which < 2; which++) {
        double sp[VALSTATS_ECE_BINS] = {0}, sy[VALSTATS_ECE_BINS] = {0};
        int cnt[VALSTATS_ECE_BINS] = {0};
        for (int i = 0; i < R->n_images; i++) {
            const val_image *x = &R->images[i];
            if (x->status != VAL_SCORED || !x->y || x->y[fi] < 0) continue;
            double p = which ? x->p_site[fi] : x->p[fi];
            if (isnan(p)) continue;
            int k = (int)(p * VALSTATS_ECE_BINS);
            if (k >= VALSTATS_ECE_BINS) k = VALSTATS_ECE_BINS - 1;
            if (k < 0) k = 0;
            sp[k] += p;
            sy[k] += x->y[fi];
            cnt[k]++;
        }
        sb_printf(b, "<polyline fill=\"none\" stroke=\"%s\" stroke-width=\"1.5\" points=\"", colour[which]);
        for (int k = 0; k < VALSTATS_ECE_BINS; k++)
            if (cnt[k]) sb_printf(b, "%.1f,%.1f ", px_x(sp[k] / cnt[k]), px_y(sy[k] / cnt[k]));
        sb_put(b, "\"/>", 3);
        for (int k = 0; k < VALSTATS_ECE_BINS; k++)
            if (cnt[k])
                sb_printf(b, "<circle cx=\"%.1f\" cy=\"%.1f\" r=\"%.1f\" fill=\"%s\" fill-opacity=\"0.7\"><title>%s: "
                             "%d images, mean p %.3f, observed %.3f</title></circle>",
                          px_x(sp[k] / cnt[k]), px_y(sy[k] / cnt[k]), 2.5 + 4 * sqrt((double)cnt[k] / f->n),
                          colour[which], which ? "site calibration" : "file's calibration", cnt[k], sp[k] / cnt[k],
                          sy[k] / cnt[k]);
    }
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\">file: ECE %.3f</text>", px_x(0.03),
              px_y(0.93), colour[0], f->ece_before);
    sb_printf(b, "<text x=\"%.1f\" y=\"%.1f\" font-size=\"11\" fill=\"%s\">site: ECE %.3f</text>", px_x(0.03),
              px_y(0.86), colour[1], f->ece_after);
    sb_put(b, "</svg>", 6);
}

/* -------------------------------------------------------------- page */

static void row_cell(sb *b, double v) {
    sb_put(b, "<td>", 4);
    sb_num(b, v);
    sb_put(b, "</td>", 5);
}

int val_report_write(const val_run *R, const char *path, char *err, size_t errlen) {
    sb b = {0};
    sb_printf(&b, "<!DOCTYPE html>\n<html lang=\"en\"><head><meta charset=\"utf-8\"><title>Site validation: ");
    sb_esc(&b, R->model_name);
    sb_put(&b, " at ", 4);
    sb_esc(&b, R->site);
    sb_printf(&b, "</title><style>%s</style></head><body>\n", HTML_REPORT_CSS);
    sb_printf(&b, "<h1>Site validation</h1><p class=\"disclaimer\">Research tool. These figures describe the model "
                  "on this site's own labelled cases; a site-validated model is not a diagnostic device and must "
                  "not be used for clinical decisions.</p>\n");
    /* provenance */
    sb_put(&b, "<h2>Provenance</h2><table class=\"provenance\">", strlen("<h2>Provenance</h2><table class=\"provenance\">"));
    const char *keys[] = {"model", "model version", "model SHA-256", "model file", "site", "date (UTC)", "labels"};
    const char *vals[] = {R->model_name, R->model_version, R->model_sha256, R->model_path, R->site, R->date,
                          R->labels_path};
    for (size_t i = 0; i < sizeof keys / sizeof keys[0]; i++) {
        sb_printf(&b, "<tr><th>%s</th><td><code>", keys[i]);
        sb_esc(&b, vals[i]);
        sb_put(&b, "</code></td></tr>", strlen("</code></td></tr>"));
    }
    if (R->out_path) {
        sb_put(&b, "<tr><th>site-validated model</th><td><code>", strlen("<tr><th>site-validated model</th><td><code>"));
        sb_esc(&b, R->out_path);
        sb_printf(&b, "</code> (SHA-256 <code>%s</code>)</td></tr>", R->out_sha256);
    }
    sb_printf(&b, "<tr><th>images</th><td>%d given: %d scored (%d with labels, %d without), %d refused, %d "
                  "failed</td></tr>", R->n_images, R->n_scored, R->n_labelled, R->n_unlabelled, R->n_refused,
              R->n_failed);
    sb_printf(&b, "<tr><th>method</th><td>AUC of z with a 95%% percentile bootstrap CI (%d resamples, seed %u); "
                  "Platt calibration on z when at least %d positives and %d negatives; ECE in %d equal-width bins "
                  "(before: the file's calibration; after: the site's, on the same cases); threshold: the highest p "
                  "with sensitivity &ge; %.2f; band: low at sensitivity &ge; %.2f, high at specificity &ge; %.2f; "
                  "tiers: at least %d positives and an AUC CI lower bound &ge; %.2f (assessable from %.2f, limited "
                  "below)</td></tr></table>\n",
              VALSTATS_BOOTSTRAP, VALSTATS_SEED, VALSTATS_CALIB_MIN_POS, VALSTATS_CALIB_MIN_POS, VALSTATS_ECE_BINS,
              R->sensitivity, R->sensitivity > VALSTATS_BAND_SENS ? R->sensitivity : VALSTATS_BAND_SENS,
              VALSTATS_BAND_SPEC, R->limits.min_positives, R->limits.min_auc_lo, R->limits.full_auc_lo);
    /* the table */
    sb_printf(&b, "<h2>Findings</h2><table class=\"figures\"><tr><th>finding</th><th>positives</th><th>negatives</th>"
                  "<th>AUC</th><th>95%% CI</th><th>threshold</th><th>sensitivity</th><th>specificity</th>"
                  "<th>band</th><th>ECE before</th><th>ECE after</th><th>calibrated</th><th>tier</th>"
                  "<th>model file's AUC (n+)</th><th>note</th></tr>\n");
    for (int fi = 0; fi < R->n_findings; fi++) {
        const val_finding *f = &R->findings[fi];
        sb_printf(&b, "<tr data-finding=\"%s\"><td>", f->name);
        sb_esc(&b, f->display);
        sb_printf(&b, "</td><td>%d</td><td>%d</td>", f->pos, f->neg);
        row_cell(&b, f->auc);
        sb_put(&b, "<td>", 4);
        sb_num(&b, f->auc_lo);
        sb_put(&b, "–", strlen("–"));
        sb_num(&b, f->auc_hi);
        sb_put(&b, "</td>", 5);
        row_cell(&b, f->n ? f->pt.threshold : NAN);
        row_cell(&b, f->sens);
        row_cell(&b, f->spec);
        sb_put(&b, "<td>", 4);
        if (f->n) {
            sb_num(&b, f->pt.low);
            sb_put(&b, "–", strlen("–"));
            sb_num(&b, f->pt.high);
        }
        sb_put(&b, "</td>", 5);
        row_cell(&b, f->ece_before);
        row_cell(&b, f->ece_after);
        sb_printf(&b, "<td>%s</td><td class=\"tier-%s\">%s</td><td>", f->calibrated ? "yes" : "no", f->tier, f->tier);
        sb_num(&b, f->src_auc);
        sb_printf(&b, " (%d)</td><td>", f->src_pos);
        sb_esc(&b, f->note);
        sb_put(&b, "</td></tr>\n", strlen("</td></tr>\n"));
    }
    sb_put(&b, "</table>\n<h2>ROC curves and reliability diagrams</h2>\n",
           strlen("</table>\n<h2>ROC curves and reliability diagrams</h2>\n"));
    for (int fi = 0; fi < R->n_findings; fi++) {
        const val_finding *f = &R->findings[fi];
        if (!f->n) continue;
        sb_printf(&b, "<section class=\"finding\" data-finding=\"%s\"><h3>", f->name);
        sb_esc(&b, f->display);
        sb_printf(&b, " <small>(%d+ / %d−, %s)</small></h3>", f->pos, f->neg, f->tier);
        roc_svg(&b, R, fi);
        reliability_svg(&b, R, fi);
        sb_put(&b, "</section>\n", strlen("</section>\n"));
    }
    sb_printf(&b, "<h2>Refused and failed images</h2>");
    if (!R->n_refused && !R->n_failed) sb_printf(&b, "<p>None.</p>");
    else {
        sb_printf(&b, "<table class=\"refusals\"><tr><th>image</th><th>outcome</th><th>code</th><th>reason</th></tr>");
        for (int i = 0; i < R->n_images; i++) {
            const val_image *x = &R->images[i];
            if (x->status == VAL_SCORED) continue;
            sb_put(&b, "<tr><td><code>", strlen("<tr><td><code>"));
            sb_esc(&b, x->path);
            sb_printf(&b, "</code></td><td>%s</td><td>", x->status == VAL_REFUSED ? "refused" : "failed");
            sb_esc(&b, x->code);
            sb_put(&b, "</td><td>", 9);
            sb_esc(&b, x->reason);
            sb_put(&b, "</td></tr>", 10);
        }
        sb_put(&b, "</table>", 8);
    }
    sb_printf(&b, "\n<p><small>cxrvqa %s validate.</small></p></body></html>\n", CXRVQA_VERSION);
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
