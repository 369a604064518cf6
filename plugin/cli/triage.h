/*
 * triage.h — the per-image roll-up of a `cxrvqa screen` run (internal to
 * plugin/cli/): screen.c hands over its (image, question) tasks, this builds
 * one row per image, ranks them and writes the worklist CSV (triage.c) and
 * the self-contained HTML report (triage_report.c). It never decodes an
 * image: thumbnails and heatmaps of the top cases come from the worker pool.
 *
 *   triage_task tv[n] = {{.file = 0, .status = TRIAGE_OK, .ans = answer_json}, ...};
 *   triage_list L;
 *   if (triage_build(files, n_files, tv, n, &L) != 0) die("out of memory");
 *   triage_warn_refusals(&L, stderr);
 *   triage_write_worklist(&L, "worklist.csv");
 *   triage_fetch_images(&L, pool, TRIAGE_REPORT_TOP);   // optional
 *   triage_report_write(&L, &info, "report.html", err, sizeof err);
 *   triage_free(&L);
 *
 * The score of an image: the highest p / threshold over its assessable
 * findings (decision yes, uncertain or no; not-assessed findings do not
 * count). 1 is the operating point; above 1 the model leans positive. Images
 * are ranked by score, highest first (ties: path order); then images
 * answered with no assessable finding; then refused images; then failed ones.
 */
#ifndef CXR_CLI_TRIAGE_H
#define CXR_CLI_TRIAGE_H

#include <stddef.h>
#include <stdint.h>
#include <stdio.h>

#include <cjson/cJSON.h>

#include "worker.h"

#define TRIAGE_REPORT_TOP 12   /* cases with thumbnail and heatmap in the report */
#define TRIAGE_MAX_FINDINGS 64 /* distinct findings kept per image */
#define TRIAGE_REFUSAL_WARN 0.25 /* share of images refused above which the summary warns */

enum { TRIAGE_PENDING = 0, TRIAGE_OK, TRIAGE_REFUSED, TRIAGE_ERROR };

/* One (image, question) task as screen.c knows it. ans (borrowed) is the
 * answer JSON (README "Answer JSON"), or the object rebuilt from an audit
 * row; NULL for failures and tasks not done. */
typedef struct {
    int file;
    int status; /* TRIAGE_* */
    const cJSON *ans;
    const char *reason;
} triage_task;

typedef struct {
    char name[64];
    float p, threshold;
    char decision[16]; /* yes, no, uncertain, not-assessed */
} triage_finding;

typedef struct {
    const char *path;  /* borrowed from the caller's files */
    char accession[65], patient_id[65], study_uid[65], study_date[17], sop_uid[65];
    char sr[1024];     /* the SR files (or SOP Instance UIDs) written, ';'-separated */
    triage_finding f[TRIAGE_MAX_FINDINGS];
    int n_f;
    int status;        /* TRIAGE_OK: at least one question answered; REFUSED: none answered, one refused;
                          ERROR: all failed; PENDING: nothing done */
    int scored;        /* has an assessable finding: score is defined */
    double score;      /* max p / threshold over the assessable findings */
    char top[64];      /* the finding that gave the score */
    char reason_code[32], reason[256]; /* refusal or failure */
    int rank;          /* 1-based, in the worklist order */
    uint8_t *thumb, *heat; /* PNG bytes (triage_fetch_images), NULL when none */
    size_t thumb_len, heat_len;
    char image_err[160];   /* why no thumbnail / heatmap */
} triage_image;

typedef struct {
    triage_image *v; /* in worklist order after triage_build */
    int n;
    int n_ok, n_refused, n_error, n_pending;
} triage_list;

/* One row per file (files[i] for i < n_files) from the tasks; ranked.
 * 0, or -1 when out of memory. */
int triage_build(char *const *files, int n_files, const triage_task *tasks, int n_tasks, triage_list *out);
void triage_free(triage_list *L); /* NULL-safe; frees the PNGs too */

/* When more than TRIAGE_REFUSAL_WARN of the images done were refused: a
 * warning on f naming the main reason (its share). Returns 1 if warned. */
int triage_warn_refusals(const triage_list *L, FILE *f);

/* The worklist CSV, replaced atomically. 0 or -1 (errno set). Columns:
 * rank, score, top_finding, positive, uncertain, accession, patient_id,
 * study_uid, study_date, sop_instance_uid, path, status, refusal_reason, sr. */
int triage_write_worklist(const triage_list *L, const char *path);
const char *triage_status_name(int status); /* answered, refused, failed, not-done */

/* A thumbnail and the evidence heatmap of its top finding for the first top
 * scored images, each through the pool (ops "thumbnail" and "heatmap";
 * the heatmap ask is audited like any other). Failures are noted in
 * image_err, not fatal. app: the application name for the audit. */
void triage_fetch_images(triage_list *L, cxr_pool *pool, int top, const char *app, const char *user);

typedef struct {
    const char *title_source; /* what was screened: a folder, "manifest", the audit store */
    const char *model;        /* model name and version, "" when unknown */
    int n_questions;
    const char *const *questions;
    int n_skipped_files;      /* files in the folders that are not images */
    const char *const *skipped_files;
    const char *images_note;  /* why there are no thumbnails, or NULL */
} triage_report_info;

/* The HTML report (triage_report.c): self-contained, no scripts. 0, or -1
 * with err set. */
int triage_report_write(const triage_list *L, const triage_report_info *info, const char *path, char *err,
                        size_t errlen);

#endif
