/*
 * ask.c — `cxrvqa ask`: one question about one image, in process, through
 * the accountable answer (service.c: answer, SR, audit row, then release).
 * It owns the command's arguments, its output files (heatmap, SR HTML) and
 * the text or JSON it prints; answering and recording are service.c's.
 */
#include "cli.h"
#include "options.h"
#include "args.h"
#include "cxr_sr.h"
#include "cxr_util.h"

#include <errno.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static void print_answer_text(const cxr_answer *a, const svc_result *r) {
    printf("%s\n", a->text);
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        printf("  %-22s %-9s p=%.3f  threshold %.3f  band %.3f-%.3f%s%s%s\n", f->finding,
               cxr_decision_name(f->decision), f->probability, f->threshold, f->uncertain_low, f->uncertain_high,
               f->calibrated ? "" : "  (uncalibrated)", f->side[0] ? "  side " : "", f->side);
    }
    for (int i = 0; i < a->n_warnings; i++) printf("  warning: %s\n", a->warnings[i]);
    if (r->have_sr) printf("  structured report: %s\n", r->sr.path[0] ? r->sr.path : r->sr.sop_instance_uid);
    printf("  model %s %s (sha256 %.12s…), %.0f ms. Research model, not a diagnostic device.\n", a->model.name,
           a->model.version, a->model.sha256, a->total_ms);
}

static void usage_ask(FILE *f) {
    fprintf(f, "usage: cxrvqa ask [--model FILE] [--json] [--heatmap OUT.png] [--heatmap-finding NAME]\n"
               "                  [--lang en|zh] [--sr-out DIR [--sr-html]] [--uid-root ROOT]\n"
               "                  [--db FILE [--audit-key KEY] | --no-audit] [--user NAME] [--strict] [--threads N]\n"
               "                  [--min-positives N] [--min-auc A] [--full-decode] FILE \"QUESTION\"\n"
               "A finding is answered yes or no only when its validation supports it: at least N validation\n"
               "positives and a 95%% CI lower bound of its validation AUC of at least A (defaults: the model\n"
               "file's, else 10 and 0.60); otherwise it is 'not assessed'. A JPEG 2000 image is decoded at the\n"
               "lowest resolution level that still covers the model's input (and the heatmap); --full-decode\n"
               "decodes every pixel. Research model, not a diagnostic device.\n");
}

int cli_ask(int argc, char **argv) {
    cli_common_opts c = CLI_COMMON_OPTS_INIT;
    const char *heatmap = NULL, *heatmap_finding = NULL, *lang = NULL, *file = NULL, *question = NULL;
    int json = 0, sr_html = 0;
    const cli_opt opts[] = {CLI_COMMON_OPTS(&c),
                            CLI_OPT_FLAG("--json", &json),
                            CLI_OPT_FLAG("--sr-html", &sr_html),
                            CLI_OPT_STR("--heatmap", &heatmap),
                            CLI_OPT_STR("--heatmap-finding", &heatmap_finding),
                            CLI_OPT_STR("--lang", &lang),
                            CLI_OPT_END};
    const char *pos[2];
    int n, arc = cli_args("ask", opts, argc, argv, pos, 2, &n, usage_ask);
    if (arc != CLI_ARGS_OK) return arc == CLI_ARGS_HELP ? 0 : 2;
    if (n < 2) {
        usage_ask(stderr);
        return 2;
    }
    file = pos[0];
    question = pos[1];
    if (lang && strcmp(lang, "en") && strcmp(lang, "zh")) {
        fprintf(stderr, "cxrvqa ask: --lang must be en or zh\n");
        return 2;
    }
    svc s;
    char db[PATH_MAX];
    int orc = cli_open_service(&c, &s, db, sizeof db, NULL, 0);
    if (orc) return orc;
    if (c.no_audit) fprintf(stderr, "cxrvqa: warning: --no-audit: this answer is not recorded\n");
    cxr_ask_options o = cxr_ask_options_default();
    o.lang = lang;
    o.heatmap = heatmap != NULL;
    o.heatmap_finding = heatmap_finding;
    if (!s.application) s.application = "cxrvqa-cli";
    svc_result r;
    int rc = svc_ask(&s, file, NULL, 0, file, question, &o, NULL, &r);
    int status = 0;
    if (rc == CXR_ERR_AUDIT) {
        fprintf(stderr, "cxrvqa: %s: %s\n", file, r.err);
        status = 3;
    } else {
        if (r.a && r.a->heatmap_png && heatmap) {
            if (cxr_write_atomic(heatmap, r.a->heatmap_png, r.a->heatmap_png_len, 0644) != 0) {
                fprintf(stderr, "cxrvqa: %s: cannot write heatmap: %s\n", heatmap, strerror(errno));
                status = 3;
            }
        } else if (heatmap && rc == CXR_OK && r.a && !r.a->refused) {
            fprintf(stderr, "cxrvqa: %s: no heatmap for this answer\n", heatmap);
        }
        if (sr_html && r.have_sr && r.sr.path[0]) { /* for viewers that cannot display SR */
            char html[PATH_MAX + 8], herr[CXR_ERRMSG_MAX];
            size_t n = strlen(r.sr.path);
            snprintf(html, sizeof html, "%.*s.html", (int)(n > 4 ? n - 4 : n), r.sr.path);
            if (cxr_sr_to_html(r.sr.path, html, herr, sizeof herr) != CXR_OK) {
                fprintf(stderr, "cxrvqa: %s: %s\n", html, herr);
                status = 3;
            }
        }
        if (json && r.json) { /* the answer tree, printed once */
            char *txt = cJSON_PrintUnformatted(r.json);
            if (txt) puts(txt);
            free(txt);
        }
        else if (r.a && rc == CXR_OK) print_answer_text(r.a, &r);
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: %s: %s\n", file, r.err);
            /* the answer stood but an output (SR) failed: 3; the image or model failed: 1 */
            if (!status) status = r.a && r.a->error_code == CXR_OK ? 3 : 1;
        }
    }
    svc_result_free(&r);
    cli_close_service(&s);
    return status;
}
