/*
 * validate.c — `cxrvqa validate`: a model validated on a site's own labelled
 * cases. Every image goes through the ingestion and refusal checks of `ask`
 * (libcxrvqa cxr_vqa_score_file), on --jobs threads with one model handle
 * each; then per finding with labels: AUC with a bootstrap CI, a Platt fit
 * on z, ECE before and after, the threshold at the target sensitivity and
 * the uncertain band (valstats.h, the shipped recipe's rules), and the tier
 * that ask.c's assessability rule gives those figures. Outputs: a table or
 * JSON on stdout, optionally a derived model file carrying the site's
 * calibration (--out, model/cxr_model_derive.h) and an HTML report
 * (--report, validate_report.c). This file owns the command: labels, the
 * walk, the scheduling and the outputs; it decides no answer.
 */
#define _GNU_SOURCE /* realpath */
#include "cli.h"
#include "options.h"
#include "args.h"
#include "validate.h"
#include "walk.h"
#include "valstats.h"
#include "vqa_internal.h"
#include "cxr_model_derive.h"
#include "question.h"
#include "cxr_util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <math.h>
#include <pthread.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

#define VAL_MAX_FILES 1000000
#define VAL_MAX_JOBS 64
#define VAL_MAX_LINE 65536

static void usage_validate(FILE *f) {
    fprintf(f,
            "usage: cxrvqa validate --model M.gguf --labels SITE.csv [--site NAME] [--sensitivity 0.90]\n"
            "                       [--out SITE-MODEL.gguf] [--report REPORT.html] [--jobs N] [--json]\n"
            "                       [--min-positives N] [--min-auc A] [--strict] [--threads N] IMAGES...\n"
            "Validate a model on your own labelled cases. IMAGES are DICOM or PNG files or folders; each goes\n"
            "through the same ingestion and refusal checks as `cxrvqa ask`, and the model scores every finding.\n"
            "SITE.csv: a header row, then one row per image. One column names the image: `path` (relative to\n"
            "the CSV's folder, or absolute) or `sop_instance_uid` (DICOM); every other column is a finding of\n"
            "the model (its name, display name or a name the question parser knows, e.g. `effusion`) with 1\n"
            "(present), 0 (absent) or empty (unknown).\n"
            "Per finding: n positive / negative, AUC with a bootstrap 95%% CI (1000 resamples, seed 1234),\n"
            "a Platt fit on z (when >= 20 positives and 20 negatives), ECE in 10 equal-width bins before and\n"
            "after, the threshold at the target sensitivity, the uncertain band, sensitivity / specificity at\n"
            "the threshold, and the tier `ask` would give it (--min-positives, default the model file's or 10;\n"
            "--min-auc on the AUC's CI lower bound, default the model file's or 0.60).\n"
            "  --site NAME          site name recorded in the derived model (default \"site\")\n"
            "  --sensitivity S      target sensitivity of the threshold, 0 < S <= 1 (default 0.90)\n"
            "  --out FILE           write the site-validated model: the same tensors, the site's calibration,\n"
            "                       thresholds, bands and validation figures, provenance keys cxr.site.*\n"
            "  --report FILE        write a self-contained HTML report (table, ROC curves, reliability diagrams)\n"
            "  --jobs N             images scored in parallel, one model handle per thread (default 1)\n"
            "  --json               one JSON object on stdout (with every image's scores) instead of the table\n"
            "Exit status: 0 done (refused and unreadable images are listed, not fatal), 1 the model could\n"
            "not be opened or no image could be scored, 2 usage or bad labels, 3 an output not written.\n"
            "Research tool: a site-validated model is still not a diagnostic device.\n");
}

/* ----------------------------------------------------------- the walk */

typedef struct {
    char **v;
    int n, cap;
} strlist;

static int list_add(strlist *l, const char *s) {
    if (l->n >= VAL_MAX_FILES) return -1;
    if (l->n == l->cap) {
        int cap = l->cap ? l->cap * 2 : 256;
        char **nv = realloc(l->v, (size_t)cap * sizeof *nv);
        if (!nv) return -1;
        l->v = nv;
        l->cap = cap;
    }
    if (!(l->v[l->n] = strdup(s))) return -1;
    l->n++;
    return 0;
}

static void list_free(strlist *l) {
    for (int i = 0; i < l->n; i++) free(l->v[i]);
    free(l->v);
}

/* cli_walk's callback: files named on the command line are taken as they
 * are (an unreadable one is then listed as failed); in folders, what looks
 * like an image. */
static int on_walked(void *ctx, const char *path, int named, int image) {
    if (!named && !image) return 0;
    char abs[PATH_MAX];
    return list_add(ctx, realpath(path, abs) ? abs : path);
}

static int walk(strlist *l, const char *path, int depth) {
    (void)depth;
    return cli_walk("validate", path, 0, on_walked, l);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* ------------------------------------------------------------- labels */

/* Split one CSV line in place (RFC 4180 quotes; no newlines in fields).
 * Returns the field count, -1 for more than max fields or a bad quote. */
static int csv_split(char *line, char **f, int max) {
    int n = 0;
    char *p = line;
    for (;;) {
        if (n >= max) return -1;
        char *out = p;
        f[n++] = out;
        if (*p == '"') {
            p++;
            for (;;) {
                if (!*p) return -1;
                if (*p == '"' && p[1] == '"') { *out++ = '"'; p += 2; continue; }
                if (*p == '"') { p++; break; }
                *out++ = *p++;
            }
            if (*p && *p != ',') return -1;
        } else {
            while (*p && *p != ',') *out++ = *p++;
        }
        char c = *p;
        *out = '\0';
        if (!c) break;
        p++;
    }
    for (int i = 0; i < n; i++) { /* trim spaces */
        char *s = f[i];
        while (*s == ' ' || *s == '\t') s++;
        size_t k = strlen(s);
        while (k && (s[k - 1] == ' ' || s[k - 1] == '\t')) s[--k] = '\0';
        f[i] = s;
    }
    return n;
}

/* The model finding a label column names: its name, its display name, or a
 * name the question parser maps onto one of the model's findings
 * ("effusion" -> pleural_effusion). -1 when none. */
static int column_finding(const cxr_model *m, const char *col) {
    int nf = cxr_model_n_findings(m);
    for (int i = 0; i < nf; i++) {
        const cxr_finding *f = cxr_model_finding(m, i);
        if (!strcasecmp(col, f->name) || !strcasecmp(col, f->display)) return i;
    }
    for (int i = 0; i < cxr_lexicon_size(); i++) { /* a finding by its identifier, e.g. no_finding */
        const cxr_qfinding *e = cxr_lexicon_entry(i);
        if (e && !strcasecmp(col, e->name)) return -2;
    }
    char words[160], q[200];
    snprintf(words, sizeof words, "%s", col);
    for (char *c = words; *c; c++)
        if (*c == '_' || *c == '-') *c = ' ';
    snprintf(q, sizeof q, "Is there %s?", words);
    cxr_question pq;
    if (cxr_question_parse(q, "en", &pq) != CXR_OK || pq.n_findings != 1 || !pq.findings[0].known) return -1;
    int i = cxr_model_find_finding(m, pq.findings[0].name);
    return i >= 0 ? i : -2; /* a finding, but not one this model outputs */
}

typedef struct {
    char *key;    /* absolute path or SOP Instance UID */
    int8_t *y;    /* per model finding: 1, 0 or -1 unknown */
    int line, used;
} label_row;

typedef struct {
    int by_uid;
    int n_rows;
    label_row *rows;
    int n_cols;
    int *col_finding;   /* per CSV column: model finding or -1 (the key column) */
    char (*col_name)[64];
} labels;

static void labels_free(labels *L) {
    for (int i = 0; i < L->n_rows; i++) {
        free(L->rows[i].key);
        free(L->rows[i].y);
    }
    free(L->rows);
    free(L->col_finding);
    free(L->col_name);
}

static int cmp_row(const void *a, const void *b) {
    return strcmp(((const label_row *)a)->key, ((const label_row *)b)->key);
}

/* The row labelling key, or NULL (rows sorted by key). */
static label_row *find_row(labels *L, const char *key) {
    label_row k = {.key = (char *)key};
    return bsearch(&k, L->rows, (size_t)L->n_rows, sizeof *L->rows, cmp_row);
}

/* Read SITE.csv against the model's findings. 0, or prints why and 2. */
static int labels_read(const char *path, const cxr_model *m, labels *L) {
    memset(L, 0, sizeof *L);
    FILE *fp = fopen(path, "r");
    if (!fp) {
        fprintf(stderr, "cxrvqa validate: %s: cannot read the labels: %s\n", path, strerror(errno));
        return 2;
    }
    char dir[PATH_MAX], tmp[PATH_MAX];
    snprintf(tmp, sizeof tmp, "%s", path);
    char *slash = strrchr(tmp, '/');
    if (slash) *slash = '\0';
    if (!realpath(slash ? (tmp[0] ? tmp : "/") : ".", dir)) snprintf(dir, sizeof dir, ".");
    int nf = cxr_model_n_findings(m), rc = 0, key_col = -1, lineno = 0, cap = 0;
    char *line = malloc(VAL_MAX_LINE), **fields = malloc(1024 * sizeof *fields);
    if (!line || !fields) { rc = 2; goto out; }
    while (fgets(line, VAL_MAX_LINE, fp)) {
        lineno++;
        size_t k = strlen(line);
        if (k == VAL_MAX_LINE - 1 && line[k - 1] != '\n') {
            fprintf(stderr, "cxrvqa validate: %s:%d: line longer than %d bytes\n", path, lineno, VAL_MAX_LINE - 2);
            rc = 2;
            goto out;
        }
        while (k && (line[k - 1] == '\n' || line[k - 1] == '\r')) line[--k] = '\0';
        char *text = line;
        if (lineno == 1 && !memcmp(text, "\xEF\xBB\xBF", 3)) text += 3; /* UTF-8 BOM */
        if (!*text) continue;
        int n = csv_split(text, fields, 1024);
        if (n < 0) {
            fprintf(stderr, "cxrvqa validate: %s:%d: bad CSV (a quote not closed, or over 1024 columns)\n", path,
                    lineno);
            rc = 2;
            goto out;
        }
        if (!L->col_finding) { /* the header */
            L->n_cols = n;
            L->col_finding = malloc((size_t)n * sizeof *L->col_finding);
            L->col_name = calloc((size_t)n, sizeof *L->col_name);
            if (!L->col_finding || !L->col_name) { rc = 2; goto out; }
            int has_key = 0;
            for (int c = 0; c < n; c++)
                has_key |= !strcasecmp(fields[c], "path") || !strcasecmp(fields[c], "sop_instance_uid") ||
                           !strcasecmp(fields[c], "SOPInstanceUID");
            if (!has_key) {
                fprintf(stderr, "cxrvqa validate: %s: no image column: the header needs 'path' or "
                                "'sop_instance_uid'\n", path);
                rc = 2;
                goto out;
            }
            for (int c = 0; c < n; c++) {
                snprintf(L->col_name[c], sizeof L->col_name[c], "%s", fields[c]);
                L->col_finding[c] = -1;
                if (!strcasecmp(fields[c], "path") || !strcasecmp(fields[c], "sop_instance_uid") ||
                    !strcasecmp(fields[c], "SOPInstanceUID")) {
                    if (key_col >= 0) {
                        fprintf(stderr, "cxrvqa validate: %s: two image columns ('%s' and '%s'); give one\n", path,
                                L->col_name[key_col], fields[c]);
                        rc = 2;
                        goto out;
                    }
                    key_col = c;
                    L->by_uid = strcasecmp(fields[c], "path") != 0;
                    continue;
                }
                int fi = column_finding(m, fields[c]);
                if (fi == -2) { /* the site labels more than this model classifies */
                    fprintf(stderr, "cxrvqa validate: %s: column '%s' names a finding this model does not output: "
                                    "ignored\n", path, fields[c]);
                    continue;
                }
                if (fi < 0) {
                    fprintf(stderr, "cxrvqa validate: %s: column '%s' is not a finding of the model (its findings:",
                            path, fields[c]);
                    for (int i = 0; i < nf; i++) fprintf(stderr, " %s", cxr_model_finding(m, i)->name);
                    fprintf(stderr, ")\n");
                    rc = 2;
                    goto out;
                }
                for (int d = 0; d < c; d++)
                    if (L->col_finding[d] == fi) {
                        fprintf(stderr, "cxrvqa validate: %s: columns '%s' and '%s' both name the finding %s\n", path,
                                L->col_name[d], fields[c], cxr_model_finding(m, fi)->name);
                        rc = 2;
                        goto out;
                    }
                L->col_finding[c] = fi;
            }
            if (key_col < 0) {
                fprintf(stderr, "cxrvqa validate: %s: no image column: the header needs 'path' or "
                                "'sop_instance_uid'\n", path);
                rc = 2;
                goto out;
            }
            if (n < 2) {
                fprintf(stderr, "cxrvqa validate: %s: no finding columns\n", path);
                rc = 2;
                goto out;
            }
            continue;
        }
        if (n != L->n_cols) {
            fprintf(stderr, "cxrvqa validate: %s:%d: %d fields, the header has %d\n", path, lineno, n, L->n_cols);
            rc = 2;
            goto out;
        }
        if (L->n_rows == cap) {
            cap = cap ? cap * 2 : 256;
            label_row *nr = realloc(L->rows, (size_t)cap * sizeof *nr);
            if (!nr) { rc = 2; goto out; }
            L->rows = nr;
        }
        label_row *r = &L->rows[L->n_rows];
        memset(r, 0, sizeof *r);
        r->line = lineno;
        r->y = malloc((size_t)nf);
        if (!r->y) { rc = 2; goto out; }
        memset(r->y, -1, (size_t)nf);
        L->n_rows++;
        const char *key = fields[key_col];
        if (!*key) {
            fprintf(stderr, "cxrvqa validate: %s:%d: empty %s\n", path, lineno, L->col_name[key_col]);
            rc = 2;
            goto out;
        }
        if (L->by_uid) {
            r->key = strdup(key);
        } else {
            char joined[PATH_MAX], abs[PATH_MAX];
            if (key[0] == '/') snprintf(joined, sizeof joined, "%s", key);
            else if (snprintf(joined, sizeof joined, "%s/%s", dir, key) >= (int)sizeof joined) {
                fprintf(stderr, "cxrvqa validate: %s:%d: path too long\n", path, lineno);
                rc = 2;
                goto out;
            }
            r->key = strdup(realpath(joined, abs) ? abs : joined);
        }
        if (!r->key) { rc = 2; goto out; }
        for (int c = 0; c < n; c++) {
            if (c == key_col || L->col_finding[c] < 0) continue;
            const char *v = fields[c];
            int8_t y;
            if (!*v) y = -1;
            else if (!strcmp(v, "1") || !strcmp(v, "1.0")) y = 1;
            else if (!strcmp(v, "0") || !strcmp(v, "0.0")) y = 0;
            else {
                fprintf(stderr, "cxrvqa validate: %s:%d: column '%s': '%s' is not 1, 0 or empty (unknown)\n", path,
                        lineno, L->col_name[c], v);
                rc = 2;
                goto out;
            }
            r->y[L->col_finding[c]] = y;
        }
    }
    if (ferror(fp)) {
        fprintf(stderr, "cxrvqa validate: %s: read error\n", path);
        rc = 2;
    } else if (!L->col_finding) {
        fprintf(stderr, "cxrvqa validate: %s: empty label file\n", path);
        rc = 2;
    } else if (!L->n_rows) {
        fprintf(stderr, "cxrvqa validate: %s: no label rows\n", path);
        rc = 2;
    }
    if (rc == 0) qsort(L->rows, (size_t)L->n_rows, sizeof *L->rows, cmp_row);
    for (int i = 1; rc == 0 && i < L->n_rows; i++) /* the same image twice */
        if (!strcmp(L->rows[i].key, L->rows[i - 1].key)) {
            const label_row *a = &L->rows[i - 1], *b = &L->rows[i];
            fprintf(stderr, "cxrvqa validate: %s:%d: '%s' was labelled already on line %d\n", path,
                    a->line > b->line ? a->line : b->line, b->key, a->line < b->line ? a->line : b->line);
            rc = 2;
        }
out:
    free(line);
    free(fields);
    fclose(fp);
    if (rc) labels_free(L);
    return rc;
}

/* ------------------------------------------------------------ scoring */

typedef struct {
    val_run *run;
    strlist *files;
    const cxr_vqa_params *params;
    pthread_mutex_t mu;
    int next, done, tty;
    double t0;
    int open_rc;
    char open_err[CXR_ERRMSG_MAX];
} pool;

static void record(val_image *im, const cxr_answer *a, int rc, int nf) {
    if (!a) {
        im->status = VAL_FAILED;
        snprintf(im->code, sizeof im->code, "%s", cxr_strerror(CXR_ERR_NOMEM));
        snprintf(im->reason, sizeof im->reason, "out of memory");
        return;
    }
    if (a->has_image) snprintf(im->sop_uid, sizeof im->sop_uid, "%.64s", a->meta.sop_uid);
    if (rc != CXR_OK) {
        im->status = VAL_FAILED;
        snprintf(im->code, sizeof im->code, "%s", cxr_strerror(rc));
        snprintf(im->reason, sizeof im->reason, "%s", a->error[0] ? a->error : cxr_strerror(rc));
    } else if (a->refused) {
        im->status = VAL_REFUSED;
        snprintf(im->code, sizeof im->code, "%s", a->reason_code);
        snprintf(im->reason, sizeof im->reason, "%s", a->reason);
    } else {
        im->status = VAL_SCORED;
        for (int i = 0; i < nf && i < a->n_findings; i++) {
            im->z[i] = a->findings[i].z;
            im->p[i] = a->findings[i].probability;
        }
        im->n_warnings = a->n_warnings;
    }
}

static void *scorer(void *arg) {
    pool *P = arg;
    cxr_vqa *v = NULL;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_vqa_open(P->params, &v, err, sizeof err);
    if (rc != CXR_OK) {
        pthread_mutex_lock(&P->mu);
        if (!P->open_rc) {
            P->open_rc = rc;
            snprintf(P->open_err, sizeof P->open_err, "%s", err);
        }
        pthread_mutex_unlock(&P->mu);
        return NULL;
    }
    int nf = P->run->n_findings;
    for (;;) {
        pthread_mutex_lock(&P->mu);
        int i = P->next++;
        pthread_mutex_unlock(&P->mu);
        if (i >= P->files->n) break;
        cxr_answer *a = NULL;
        int src = cxr_vqa_score_file(v, P->files->v[i], &a);
        record(&P->run->images[i], a, src, nf);
        cxr_answer_free(a);
        pthread_mutex_lock(&P->mu);
        P->done++;
        int n = P->files->n, step = n / 10 > 0 ? n / 10 : 1;
        if (P->done == n || P->done % step == 0)
            fprintf(stderr, "validate: %d/%d images scored (%.1f images/s)\n", P->done, n,
                    P->done / ((cxr_now_ms() - P->t0) / 1e3 + 1e-9));
        pthread_mutex_unlock(&P->mu);
    }
    cxr_vqa_close(v);
    return NULL;
}

/* ---------------------------------------------------------- statistics */

static void finding_stats(val_run *R, int fi, const cxr_vqa *v) {
    val_finding *F = &R->findings[fi];
    const cxr_finding *mf = cxr_model_finding(vqa_model(v), fi);
    int n = 0;
    for (int i = 0; i < R->n_images; i++)
        if (R->images[i].status == VAL_SCORED && R->images[i].y && R->images[i].y[fi] >= 0) n++;
    F->n = n;
    F->auc = F->auc_lo = F->auc_hi = F->ece_before = F->ece_after = NAN;
    F->sens = F->spec = NAN;
    /* until the site's cases can refit it: the file's calibration, threshold and band */
    F->a = mf->calib_a;
    F->b = mf->calib_b;
    F->calibrated = mf->calibrated;
    F->op_thresh = mf->op_thresh;
    F->refit = 0;
    F->pt.threshold = mf->threshold;
    F->pt.low = mf->uncertain_low;
    F->pt.high = mf->uncertain_high;
    F->src_auc = mf->val_auc;
    F->src_auc_lo = mf->val_auc_lo;
    F->src_auc_hi = mf->val_auc_hi;
    F->src_pos = mf->val_pos;
    F->src_neg = mf->val_neg;
    F->src_threshold = mf->threshold;
    if (!n) {
        snprintf(F->note, sizeof F->note, F->labelled ? "no scored image has a label" : "no label column");
        snprintf(F->tier, sizeof F->tier, "%s", vqa_tier(v, 0, NAN));
        return;
    }
    float *z = malloc((size_t)n * sizeof *z), *p0 = malloc((size_t)n * sizeof *p0), *p1 = malloc((size_t)n * sizeof *p1);
    uint8_t *y = malloc((size_t)n);
    if (!z || !p0 || !p1 || !y) {
        free(z); free(p0); free(p1); free(y);
        snprintf(F->note, sizeof F->note, "out of memory");
        return;
    }
    n = 0;
    for (int i = 0; i < R->n_images; i++) {
        const val_image *im = &R->images[i];
        if (im->status != VAL_SCORED || !im->y || im->y[fi] < 0) continue;
        z[n] = im->z[fi];
        p0[n] = im->p[fi];
        y[n] = (uint8_t)im->y[fi];
        F->pos += y[n];
        n++;
    }
    F->neg = n - F->pos;
    F->auc = valstats_auc(z, y, n);
    valstats_auc_ci(z, y, n, VALSTATS_BOOTSTRAP, VALSTATS_SEED, &F->auc_lo, &F->auc_hi);
    F->ece_before = valstats_ece(p0, y, n, VALSTATS_ECE_BINS);
    if (F->pos >= VALSTATS_CALIB_MIN_POS && F->neg >= VALSTATS_CALIB_MIN_POS) {
        double a, b;
        valstats_platt(z, y, n, &a, &b);
        if (a > 0) {
            F->a = (float)a; /* stored as f32 in the file: fit and thresholds use what the engine will */
            F->b = (float)b;
            F->calibrated = 1;
            F->refit = 1;
        } else {
            snprintf(F->note, sizeof F->note, "Platt slope %.3f <= 0: the score runs the wrong way here; the file's "
                     "calibration and threshold kept", a);
        }
    } else {
        snprintf(F->note, sizeof F->note, "fewer than %d positives or negatives: the file's calibration and threshold "
                 "kept", VALSTATS_CALIB_MIN_POS);
    }
    for (int i = 0, k = 0; i < R->n_images; i++) { /* p from z as the engine computes it (model/zeroshot.c) */
        val_image *im = &R->images[i];
        if (im->status != VAL_SCORED) continue;
        float ps = F->refit ? (float)(1.0 / (1.0 + exp(-((double)F->a * im->z[fi] + (double)F->b)))) : im->p[fi];
        im->p_site[fi] = ps;
        if (im->y && im->y[fi] >= 0) p1[k++] = ps;
    }
    F->ece_after = valstats_ece(p1, y, n, VALSTATS_ECE_BINS);
    if (F->refit) valstats_operating_point(p1, y, n, R->sensitivity, &F->pt);
    valstats_sens_spec(p1, y, n, F->pt.threshold, &F->sens, &F->spec);
    snprintf(F->tier, sizeof F->tier, "%s", vqa_tier(v, F->pos, (float)F->auc_lo));
    free(z); free(p0); free(p1); free(y);
}

/* ---------------------------------------------------------- --out */

static int write_derived(val_run *R, const char *src, const char *dst, char *sha_out) {
    int F = R->n_findings;
    float *arr = malloc((size_t)F * 13 * sizeof *arr);
    uint32_t *nn = malloc((size_t)F * sizeof *nn);
    if (!arr || !nn) {
        free(arr);
        free(nn);
        fprintf(stderr, "cxrvqa validate: out of memory\n");
        return 3;
    }
    float *a = arr, *b = arr + F, *cal = arr + 2 * F, *thr = arr + 3 * F, *lo = arr + 4 * F, *hi = arr + 5 * F,
          *auc = arr + 6 * F, *alo = arr + 7 * F, *ahi = arr + 8 * F, *vp = arr + 9 * F, *vn = arr + 10 * F,
          *op = arr + 11 * F;
    for (int i = 0; i < F; i++) {
        const val_finding *f = &R->findings[i];
        a[i] = f->a; b[i] = f->b; cal[i] = (float)f->calibrated;
        thr[i] = (float)f->pt.threshold; lo[i] = (float)f->pt.low; hi[i] = (float)f->pt.high;
        auc[i] = (float)f->auc; alo[i] = (float)f->auc_lo; ahi[i] = (float)f->auc_hi;
        /* a refitted finding reads Platt; one kept from the source keeps its
           operating-point normalisation (classifiers) */
        vp[i] = (float)f->pos; vn[i] = (float)f->neg;
        op[i] = f->refit ? NAN : f->op_thresh;
        nn[i] = (uint32_t)f->n;
    }
    char name[512], version[160], thr_rule[160], band_rule[400], valid[600], tool[64];
    snprintf(name, sizeof name, "%s (site-validated: %s)", R->model_name, R->site);
    snprintf(version, sizeof version, "%s+site.%s.%.10s", R->model_version, R->site, R->date);
    snprintf(thr_rule, sizeof thr_rule, "highest threshold on calibrated p with sensitivity >= %.2f on the site's cases",
             R->sensitivity);
    snprintf(band_rule, sizeof band_rule,
             "uncertain when uncertain_low <= p <= uncertain_high: low = min(threshold, highest p with sensitivity "
             ">= %.2f on the site's cases), high = max(threshold, %.0fth percentile of the site's negatives' p); "
             "findings with fewer than %d site positives or negatives keep the source file's calibration, "
             "threshold and band",
             R->sensitivity > VALSTATS_BAND_SENS ? R->sensitivity : VALSTATS_BAND_SENS, VALSTATS_BAND_SPEC * 100,
             VALSTATS_CALIB_MIN_POS);
    snprintf(valid, sizeof valid,
             "site %s, %s: %d scored images with labels; per finding the images labelled 1 or 0; AUC of z with a "
             "95%% percentile bootstrap CI (%d resamples, seed %u); Platt calibration on z refitted when >= %d "
             "positives and negatives (cxrvqa validate)",
             R->site, R->date, R->n_labelled, VALSTATS_BOOTSTRAP, VALSTATS_SEED, VALSTATS_CALIB_MIN_POS);
    snprintf(tool, sizeof tool, "cxrvqa validate %s", CXRVQA_VERSION);
    const cxr_kv_set set[] = {
        {.key = "general.name", .type = CXR_KV_STR, .str = name},
        {.key = "general.version", .type = CXR_KV_STR, .str = version},
        {.key = "cxr.findings.calib_a", .type = CXR_KV_F32_ARR, .arr = a, .n = (size_t)F},
        {.key = "cxr.findings.calib_b", .type = CXR_KV_F32_ARR, .arr = b, .n = (size_t)F},
        {.key = "cxr.findings.calibrated", .type = CXR_KV_F32_ARR, .arr = cal, .n = (size_t)F},
        {.key = "cxr.findings.threshold", .type = CXR_KV_F32_ARR, .arr = thr, .n = (size_t)F},
        {.key = "cxr.findings.uncertain_low", .type = CXR_KV_F32_ARR, .arr = lo, .n = (size_t)F},
        {.key = "cxr.findings.uncertain_high", .type = CXR_KV_F32_ARR, .arr = hi, .n = (size_t)F},
        {.key = "cxr.findings.val_auc", .type = CXR_KV_F32_ARR, .arr = auc, .n = (size_t)F},
        {.key = "cxr.findings.val_auc_lo", .type = CXR_KV_F32_ARR, .arr = alo, .n = (size_t)F},
        {.key = "cxr.findings.val_auc_hi", .type = CXR_KV_F32_ARR, .arr = ahi, .n = (size_t)F},
        {.key = "cxr.findings.val_pos", .type = CXR_KV_F32_ARR, .arr = vp, .n = (size_t)F},
        {.key = "cxr.findings.val_neg", .type = CXR_KV_F32_ARR, .arr = vn, .n = (size_t)F},
        {.key = "cxr.findings.op_thresh", .type = CXR_KV_F32_ARR, .arr = op, .n = (size_t)F, .if_present = 1},
        {.key = "cxr.findings.threshold_rule", .type = CXR_KV_STR, .str = thr_rule},
        {.key = "cxr.findings.uncertain_rule", .type = CXR_KV_STR, .str = band_rule},
        {.key = "cxr.findings.validation", .type = CXR_KV_STR, .str = valid},
        {.key = "cxr.site.name", .type = CXR_KV_STR, .str = R->site},
        {.key = "cxr.site.date", .type = CXR_KV_STR, .str = R->date},
        {.key = "cxr.site.n_images", .type = CXR_KV_U32, .u32 = (uint32_t)R->n_labelled},
        {.key = "cxr.site.n_refused", .type = CXR_KV_U32, .u32 = (uint32_t)R->n_refused},
        {.key = "cxr.site.n_failed", .type = CXR_KV_U32, .u32 = (uint32_t)R->n_failed},
        {.key = "cxr.site.finding_n", .type = CXR_KV_U32_ARR, .arr = nn, .n = (size_t)F},
        {.key = "cxr.site.sensitivity", .type = CXR_KV_F32, .f32 = (float)R->sensitivity},
        {.key = "cxr.site.source_sha256", .type = CXR_KV_STR, .str = R->model_sha256},
        {.key = "cxr.site.source_name", .type = CXR_KV_STR, .str = R->model_name},
        {.key = "cxr.site.source_version", .type = CXR_KV_STR, .str = R->model_version},
        {.key = "cxr.site.tool", .type = CXR_KV_STR, .str = tool},
    };
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_model_derive(src, dst, set, sizeof set / sizeof set[0], err, sizeof err);
    free(arr);
    free(nn);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa validate: %s\n", err);
        return rc == CXR_ERR_ARG ? 2 : 3;
    }
    /* the derived file must open as a model, and name itself by its own hash */
    cxr_model_params mp = cxr_model_params_default();
    mp.max_batch = 1;
    cxr_model *m = NULL;
    if ((rc = cxr_model_open(dst, &mp, &m, err, sizeof err)) != CXR_OK) {
        fprintf(stderr, "cxrvqa validate: %s: the derived model does not open: %s\n", dst, err);
        return 3;
    }
    snprintf(sha_out, 65, "%s", cxr_model_sha256(m));
    cxr_model_close(m);
    return 0;
}

/* ------------------------------------------------------------ outputs */

static cJSON *num(double v) { return isnan(v) || isinf(v) ? cJSON_CreateNull() : cJSON_CreateNumber(v); }

static cJSON *run_json(const val_run *R, int with_scores) {
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "path", R->model_path);
    cJSON_AddStringToObject(m, "name", R->model_name);
    cJSON_AddStringToObject(m, "version", R->model_version);
    cJSON_AddStringToObject(m, "sha256", R->model_sha256);
    cJSON_AddStringToObject(o, "site", R->site);
    cJSON_AddStringToObject(o, "date", R->date);
    cJSON_AddStringToObject(o, "labels", R->labels_path);
    cJSON_AddItemToObject(o, "sensitivity_target", num(R->sensitivity));
    cJSON *lim = cJSON_AddObjectToObject(o, "assessability");
    cJSON_AddNumberToObject(lim, "min_positives", R->limits.min_positives);
    cJSON_AddItemToObject(lim, "min_auc_lo", num(R->limits.min_auc_lo));
    cJSON_AddItemToObject(lim, "full_auc_lo", num(R->limits.full_auc_lo));
    cJSON *st = cJSON_AddObjectToObject(o, "statistics");
    cJSON_AddNumberToObject(st, "bootstrap_resamples", VALSTATS_BOOTSTRAP);
    cJSON_AddNumberToObject(st, "bootstrap_seed", VALSTATS_SEED);
    cJSON_AddNumberToObject(st, "ece_bins", VALSTATS_ECE_BINS);
    cJSON_AddNumberToObject(st, "calib_min_positives", VALSTATS_CALIB_MIN_POS);
    cJSON_AddStringToObject(st, "calibration", "Platt on z (logistic regression of the label on z)");
    cJSON *im = cJSON_AddObjectToObject(o, "images");
    cJSON_AddNumberToObject(im, "total", R->n_images);
    cJSON_AddNumberToObject(im, "scored", R->n_scored);
    cJSON_AddNumberToObject(im, "labelled", R->n_labelled);
    cJSON_AddNumberToObject(im, "refused", R->n_refused);
    cJSON_AddNumberToObject(im, "failed", R->n_failed);
    cJSON_AddNumberToObject(im, "unlabelled", R->n_unlabelled);
    cJSON *rs = cJSON_AddArrayToObject(o, "refused");
    cJSON *fl = cJSON_AddArrayToObject(o, "failed");
    cJSON *ul = cJSON_AddArrayToObject(o, "unlabelled");
    for (int i = 0; i < R->n_images; i++) {
        const val_image *x = &R->images[i];
        if (x->status == VAL_SCORED) {
            if (!x->y) cJSON_AddItemToArray(ul, cJSON_CreateString(x->path));
            continue;
        }
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "file", x->path);
        cJSON_AddStringToObject(e, "code", x->code);
        cJSON_AddStringToObject(e, "reason", x->reason);
        cJSON_AddItemToArray(x->status == VAL_REFUSED ? rs : fl, e);
    }
    cJSON *by = cJSON_AddObjectToObject(o, "by_reason");
    for (int i = 0; i < R->n_images; i++) {
        const val_image *x = &R->images[i];
        if (x->status == VAL_SCORED) continue;
        cJSON *c = cJSON_GetObjectItemCaseSensitive(by, x->code);
        if (c) cJSON_SetNumberValue(c, c->valuedouble + 1);
        else cJSON_AddNumberToObject(by, x->code, 1);
    }
    cJSON *fa = cJSON_AddArrayToObject(o, "findings");
    for (int fi = 0; fi < R->n_findings; fi++) {
        const val_finding *f = &R->findings[fi];
        cJSON *e = cJSON_CreateObject();
        cJSON_AddStringToObject(e, "finding", f->name);
        cJSON_AddStringToObject(e, "display", f->display);
        cJSON_AddStringToObject(e, "column", f->column);
        cJSON_AddNumberToObject(e, "n", f->n);
        cJSON_AddNumberToObject(e, "positives", f->pos);
        cJSON_AddNumberToObject(e, "negatives", f->neg);
        cJSON_AddItemToObject(e, "auc", num(f->auc));
        cJSON_AddItemToObject(e, "auc_lo", num(f->auc_lo));
        cJSON_AddItemToObject(e, "auc_hi", num(f->auc_hi));
        cJSON_AddBoolToObject(e, "calibrated", f->calibrated);
        cJSON_AddBoolToObject(e, "refit", f->refit);
        cJSON_AddItemToObject(e, "calib_a", num(f->a));
        cJSON_AddItemToObject(e, "calib_b", num(f->b));
        cJSON_AddItemToObject(e, "threshold", num(f->pt.threshold));
        cJSON_AddItemToObject(e, "uncertain_low", num(f->pt.low));
        cJSON_AddItemToObject(e, "uncertain_high", num(f->pt.high));
        cJSON_AddItemToObject(e, "sensitivity", num(f->sens));
        cJSON_AddItemToObject(e, "specificity", num(f->spec));
        cJSON_AddItemToObject(e, "ece_before", num(f->ece_before));
        cJSON_AddItemToObject(e, "ece_after", num(f->ece_after));
        cJSON_AddStringToObject(e, "tier", f->tier);
        cJSON_AddStringToObject(e, "note", f->note);
        cJSON *s = cJSON_AddObjectToObject(e, "source_model");
        cJSON_AddItemToObject(s, "val_auc", num(f->src_auc));
        cJSON_AddItemToObject(s, "val_auc_lo", num(f->src_auc_lo));
        cJSON_AddItemToObject(s, "val_auc_hi", num(f->src_auc_hi));
        cJSON_AddNumberToObject(s, "val_pos", f->src_pos);
        cJSON_AddNumberToObject(s, "val_neg", f->src_neg);
        cJSON_AddItemToObject(s, "threshold", num(f->src_threshold));
        cJSON_AddItemToArray(fa, e);
    }
    if (R->out_path) {
        cJSON *d = cJSON_AddObjectToObject(o, "derived_model");
        cJSON_AddStringToObject(d, "path", R->out_path);
        cJSON_AddStringToObject(d, "sha256", R->out_sha256);
    }
    if (with_scores) {
        cJSON *sc = cJSON_AddArrayToObject(o, "scores");
        for (int i = 0; i < R->n_images; i++) {
            const val_image *x = &R->images[i];
            if (x->status != VAL_SCORED) continue;
            cJSON *e = cJSON_CreateObject();
            cJSON_AddStringToObject(e, "file", x->path);
            cJSON_AddStringToObject(e, "sop_instance_uid", x->sop_uid);
            cJSON *lab = cJSON_AddObjectToObject(e, "labels"), *z = cJSON_AddObjectToObject(e, "z"),
                  *p = cJSON_AddObjectToObject(e, "p"), *ps = cJSON_AddObjectToObject(e, "p_site");
            for (int fi = 0; fi < R->n_findings; fi++) {
                const char *nm = R->findings[fi].name;
                if (x->y && x->y[fi] >= 0) cJSON_AddNumberToObject(lab, nm, x->y[fi]);
                cJSON_AddItemToObject(z, nm, num(x->z[fi]));
                cJSON_AddItemToObject(p, nm, num(x->p[fi]));
                cJSON_AddItemToObject(ps, nm, num(x->p_site[fi]));
            }
            cJSON_AddItemToArray(sc, e);
        }
    }
    return o;
}

static void fmt3(char *b, size_t n, double v) {
    if (isnan(v)) snprintf(b, n, "-");
    else snprintf(b, n, "%.3f", v);
}

static void print_table(const val_run *R) {
    printf("cxrvqa validate: model %s %s (sha256 %.12s…), site %s\n", R->model_name, R->model_version,
           R->model_sha256, R->site);
    printf("images: %d given, %d scored (%d with labels, %d without), %d refused, %d failed\n", R->n_images,
           R->n_scored, R->n_labelled, R->n_unlabelled, R->n_refused, R->n_failed);
    printf("target sensitivity %.2f; ECE in %d bins; AUC 95%% CI by %d bootstrap resamples (seed %u); "
           "tiers: >= %d positives and CI lower bound >= %.2f (full >= %.2f)\n\n",
           R->sensitivity, VALSTATS_ECE_BINS, VALSTATS_BOOTSTRAP, VALSTATS_SEED, R->limits.min_positives,
           R->limits.min_auc_lo, R->limits.full_auc_lo);
    printf("%-26s %5s %5s  %-22s %-6s %-6s %-6s %-20s %-16s %s\n", "finding", "pos", "neg", "AUC [95% CI]", "thr",
           "sens", "spec", "band", "ECE before>after", "tier");
    for (int fi = 0; fi < R->n_findings; fi++) {
        const val_finding *f = &R->findings[fi];
        char auc[32], lo[16], hi[16], thr[16], se[16], sp[16], bl[16], bh[16], e0[16], e1[16], ci[128];
        fmt3(auc, sizeof auc, f->auc); fmt3(lo, sizeof lo, f->auc_lo); fmt3(hi, sizeof hi, f->auc_hi);
        fmt3(thr, sizeof thr, f->pt.threshold); fmt3(se, sizeof se, f->sens); fmt3(sp, sizeof sp, f->spec);
        fmt3(bl, sizeof bl, f->pt.low); fmt3(bh, sizeof bh, f->pt.high);
        fmt3(e0, sizeof e0, f->ece_before); fmt3(e1, sizeof e1, f->ece_after);
        snprintf(ci, sizeof ci, "%s [%s, %s]", auc, lo, hi);
        char band[40], ece[40];
        snprintf(band, sizeof band, "%s-%s", bl, bh);
        snprintf(ece, sizeof ece, "%s > %s", e0, e1);
        if (!f->n) {
            printf("%-26s %5s %5s  %-22s %-6s %-6s %-6s %-20s %-16s %s  (%s)\n", f->name, "-", "-", "-", "-", "-", "-",
                   "-", "-", f->tier, f->note);
            continue;
        }
        printf("%-26s %5d %5d  %-22s %-6s %-6s %-6s %-20s %-16s %s%s%s%s\n", f->name, f->pos, f->neg, ci, thr, se,
               sp, band, ece, f->tier, f->note[0] ? "  (" : "", f->note, f->note[0] ? ")" : "");
    }
    if (R->n_refused || R->n_failed) {
        printf("\nrefused or failed images (by reason):\n");
        for (int i = 0; i < R->n_images; i++) {
            const val_image *x = &R->images[i];
            if (x->status == VAL_SCORED) continue;
            printf("  %-8s %-16s %s: %s\n", x->status == VAL_REFUSED ? "refused" : "failed", x->code, x->path,
                   x->reason);
        }
    }
    if (R->out_path) printf("\nsite-validated model: %s (sha256 %s)\n", R->out_path, R->out_sha256);
    if (R->report_path) printf("report: %s\n", R->report_path);
    printf("Research tool: figures on the site's own cases; a validated model is not a diagnostic device.\n");
}

/* ------------------------------------------------------------ command */

int cli_validate(int argc, char **argv) {
    cli_common_opts c = CLI_COMMON_OPTS_INIT;
    const char *labels_path = NULL, *site = "site", *out = NULL, *report = NULL;
    float sens = 0.90f;
    int jobs = 1, json = 0;
    const cli_opt opts[] = {CLI_OPT_STR("--model", &c.model),
                            CLI_OPT_INT("--threads", &c.threads),
                            CLI_OPT_FLAG("--strict", &c.strict),
                            CLI_OPT_INT("--min-positives", &c.min_positives),
                            CLI_OPT_FLOAT("--min-auc", &c.min_auc),
                            CLI_OPT_STR("--labels", &labels_path),
                            CLI_OPT_STR("--site", &site),
                            CLI_OPT_FLOAT("--sensitivity", &sens),
                            CLI_OPT_STR("--out", &out),
                            CLI_OPT_STR("--report", &report),
                            CLI_OPT_INT("--jobs", &jobs),
                            CLI_OPT_FLAG("--json", &json),
                            CLI_OPT_END};
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return 1;
    int npos = 0, arc = cli_args("validate", opts, argc, argv, pos, argc, &npos, usage_validate);
    if (arc != CLI_ARGS_OK) {
        free(pos);
        return arc == CLI_ARGS_HELP ? 0 : 2;
    }
    int status = 2;
    const char *model = c.model ? c.model : cli_default_model();
    const char *bad = !labels_path                  ? "--labels SITE.csv is required"
                      : !npos                       ? "no IMAGES given"
                      : !(sens > 0 && sens <= 1)    ? "--sensitivity must be in (0, 1]"
                      : jobs < 1 || jobs > VAL_MAX_JOBS ? "--jobs must be 1..64"
                      : !site[0] || strlen(site) > 64 ? "--site must be 1..64 characters"
                                                        : NULL;
    if (bad) {
        fprintf(stderr, "cxrvqa validate: %s\n", bad);
        usage_validate(stderr);
        free(pos);
        return 2;
    }
    for (const char *s = site; *s; s++)
        if ((unsigned char)*s < 0x20 || *s == '"' || *s == '<' || *s == '>' || *s == '&') {
            fprintf(stderr, "cxrvqa validate: --site: control characters, quotes, <, > and & are not allowed\n");
            free(pos);
            return 2;
        }
    struct stat so, sd;
    if (out && (!strcmp(out, model) || (stat(out, &sd) == 0 && stat(model, &so) == 0 && so.st_dev == sd.st_dev &&
                                        so.st_ino == sd.st_ino))) {
        fprintf(stderr, "cxrvqa validate: --out %s is the model itself: the source model is never modified; "
                        "name another file\n", out);
        free(pos);
        return 2;
    }
    if (report && out && !strcmp(report, out)) {
        fprintf(stderr, "cxrvqa validate: --report and --out name the same file\n");
        free(pos);
        return 2;
    }

    /* the model (one handle here for its findings; each job opens its own) */
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = model;
    p.threads = c.threads ? c.threads : 1;
    p.strict_domain = c.strict;
    p.assess.min_positives = c.min_positives;
    p.assess.min_auc_lo = c.min_auc;
    cxr_vqa *v0 = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_vqa_open(&p, &v0, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa validate: %s: %s\n", model, err);
        free(pos);
        return 1;
    }
    const cxr_model *m = vqa_model(v0);
    int nf = cxr_model_n_findings(m);
    if (nf > CXR_ANSWER_MAX_FINDINGS) {
        fprintf(stderr, "cxrvqa validate: %s: %d findings; this version validates up to %d\n", model, nf,
                CXR_ANSWER_MAX_FINDINGS);
        cxr_vqa_close(v0);
        free(pos);
        return 1;
    }
    labels L;
    if (labels_read(labels_path, m, &L) != 0) {
        cxr_vqa_close(v0);
        free(pos);
        return 2;
    }
    strlist files = {0};
    for (int i = 0; i < npos; i++)
        if (walk(&files, pos[i], 0) != 0) {
            fprintf(stderr, "cxrvqa validate: cannot list the images\n");
            goto done;
        }
    if (!files.n) {
        fprintf(stderr, "cxrvqa validate: no images found under the IMAGES given\n");
        goto done;
    }
    qsort(files.v, (size_t)files.n, sizeof *files.v, cmp_str);
    { /* the same image named twice (a file and its folder) counts once */
        int k = 0;
        for (int i = 0; i < files.n; i++) {
            if (k && !strcmp(files.v[k - 1], files.v[i])) { free(files.v[i]); continue; }
            files.v[k++] = files.v[i];
        }
        files.n = k;
    }
    if (!L.by_uid) { /* every labelled path must be among the images */
        int unknown = 0;
        for (int r = 0; r < L.n_rows; r++) {
            char **hit = bsearch(&L.rows[r].key, files.v, (size_t)files.n, sizeof *files.v, cmp_str);
            if (!hit) {
                if (unknown++ < 5)
                    fprintf(stderr, "cxrvqa validate: %s:%d: image '%s' is not among the IMAGES given\n", labels_path,
                            L.rows[r].line, L.rows[r].key);
            }
        }
        if (unknown) {
            fprintf(stderr, "cxrvqa validate: %d labelled image%s not found: give the folder that holds them, or "
                            "fix the paths (relative to the CSV's folder)\n", unknown, unknown == 1 ? "" : "s");
            goto done;
        }
    }

    /* the run */
    val_run R;
    memset(&R, 0, sizeof R);
    R.n_images = files.n;
    R.n_findings = nf;
    R.sensitivity = sens;
    R.site = site;
    R.labels_path = labels_path;
    R.model_path = model;
    R.out_path = out;
    R.report_path = report;
    R.limits = vqa_assess_limits(v0);
    const cxr_model_id *id = cxr_vqa_model_id(v0);
    snprintf(R.model_name, sizeof R.model_name, "%s", id->name);
    snprintf(R.model_version, sizeof R.model_version, "%s", id->version);
    snprintf(R.model_sha256, sizeof R.model_sha256, "%s", id->sha256);
    cxr_now_iso(R.date);
    R.images = calloc((size_t)files.n, sizeof *R.images);
    R.findings = calloc((size_t)nf, sizeof *R.findings);
    if (!R.images || !R.findings) {
        fprintf(stderr, "cxrvqa validate: out of memory\n");
        status = 1;
        goto free_run;
    }
    for (int fi = 0; fi < nf; fi++) {
        const cxr_finding *f = cxr_model_finding(m, fi);
        snprintf(R.findings[fi].name, sizeof R.findings[fi].name, "%s", f->name);
        snprintf(R.findings[fi].display, sizeof R.findings[fi].display, "%s", f->display);
        for (int col = 0; col < L.n_cols; col++)
            if (L.col_finding[col] == fi) {
                R.findings[fi].labelled = 1;
                snprintf(R.findings[fi].column, sizeof R.findings[fi].column, "%s", L.col_name[col]);
            }
    }
    for (int i = 0; i < files.n; i++) {
        R.images[i].path = files.v[i];
        for (int fi = 0; fi < CXR_ANSWER_MAX_FINDINGS; fi++) R.images[i].z[fi] = R.images[i].p[fi] =
            R.images[i].p_site[fi] = NAN;
    }
    cxr_vqa_close(v0); /* the jobs open their own */
    v0 = NULL;
    pool P = {.run = &R, .files = &files, .params = &p, .t0 = cxr_now_ms()};
    pthread_mutex_init(&P.mu, NULL);
    pthread_t th[VAL_MAX_JOBS];
    int started = 0;
    for (int j = 0; j < jobs; j++)
        if (pthread_create(&th[started], NULL, scorer, &P) == 0) started++;
    if (!started) scorer(&P);
    for (int j = 0; j < started; j++) pthread_join(th[j], NULL);
    pthread_mutex_destroy(&P.mu);
    if (P.done < files.n) {
        fprintf(stderr, "cxrvqa validate: %s: %s\n", model, P.open_err[0] ? P.open_err : "a job could not start");
        status = 1;
        goto free_run;
    }
    /* labels onto images */
    for (int i = 0; i < files.n; i++) {
        val_image *x = &R.images[i];
        const char *key = L.by_uid ? x->sop_uid : x->path;
        label_row *row = key[0] ? find_row(&L, key) : NULL;
        if (row) {
            x->y = row->y;
            row->used = 1;
        }
        if (x->status == VAL_SCORED) {
            R.n_scored++;
            if (x->y) R.n_labelled++;
            else R.n_unlabelled++;
        } else if (x->status == VAL_REFUSED) {
            R.n_refused++;
        } else {
            R.n_failed++;
        }
    }
    if (L.by_uid) {
        int missing = 0;
        for (int r = 0; r < L.n_rows; r++) missing += !L.rows[r].used;
        if (missing)
            fprintf(stderr, "cxrvqa validate: warning: %d labelled SOP Instance UID%s matched no image read "
                            "(unreadable images have no UID)\n", missing, missing == 1 ? "" : "s");
    }
    if (!R.n_scored) {
        fprintf(stderr, "cxrvqa validate: no image could be scored (%d refused, %d failed)\n", R.n_refused,
                R.n_failed);
        status = 1;
    }
    {
        cxr_vqa *vs = NULL; /* the tiers by ask.c's rule, from a handle with the same limits */
        if (cxr_vqa_open(&p, &vs, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "cxrvqa validate: %s: %s\n", model, err);
            status = 1;
            goto free_run;
        }
        for (int fi = 0; fi < nf; fi++) finding_stats(&R, fi, vs);
        cxr_vqa_close(vs);
    }
    if (status == 1) goto free_run;
    status = 0;
    if (out && (status = write_derived(&R, model, out, R.out_sha256)) != 0) goto free_run;
    if (report && val_report_write(&R, report, err, sizeof err) != 0) {
        fprintf(stderr, "cxrvqa validate: %s: %s\n", report, err);
        status = 3;
    }
    if (json) {
        cJSON *o = run_json(&R, 1);
        char *txt = o ? cJSON_PrintUnformatted(o) : NULL;
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        print_table(&R);
    }
free_run:
    free(R.images);
    free(R.findings);
done:
    cxr_vqa_close(v0);
    labels_free(&L);
    list_free(&files);
    free(pos);
    return status;
}
