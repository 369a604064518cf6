/*
 * validate.h — what `cxrvqa validate` (validate.c) shares with its HTML
 * report (validate_report.c), internal: one run's images, their scores and
 * labels, and each finding's figures.
 */
#ifndef CXR_CLI_VALIDATE_H
#define CXR_CLI_VALIDATE_H

#include "cxrvqa.h"
#include "valstats.h"

#include <stddef.h>
#include <stdint.h>

enum { VAL_SCORED = 0, VAL_REFUSED = 1, VAL_FAILED = 2 };

typedef struct {
    const char *path;                 /* absolute, owned by the walk */
    int status;                       /* VAL_* */
    char code[32], reason[512];       /* refusal or error */
    char sop_uid[65];
    int n_warnings;
    const int8_t *y;                  /* labels per model finding (1, 0, -1 unknown); NULL: no label row */
    float z[CXR_ANSWER_MAX_FINDINGS];      /* raw score */
    float p[CXR_ANSWER_MAX_FINDINGS];      /* under the model file's calibration */
    float p_site[CXR_ANSWER_MAX_FINDINGS]; /* under the site's fit */
} val_image;

typedef struct {
    char name[64], display[96], column[64];
    int labelled;                     /* the label file has a column for it */
    int n, pos, neg;                  /* scored images labelled 1 or 0 */
    double auc, auc_lo, auc_hi;
    float a, b;                       /* the site's Platt fit, else the file's calibration */
    int calibrated;                   /* as it will be in the derived file */
    int refit;                        /* 1: a, b, threshold and band fitted on the site's cases */
    float op_thresh;                  /* the source's (classifiers; NaN none): kept unless refit */
    valstats_point pt;                /* threshold and band on the site's p */
    double sens, spec;                /* of p_site >= threshold */
    double ece_before, ece_after;
    char tier[16], note[160];
    float src_auc, src_auc_lo, src_auc_hi, src_threshold; /* the model file's own figures */
    int src_pos, src_neg;
} val_finding;

typedef struct {
    int n_images, n_findings;
    val_image *images;
    val_finding *findings;
    int n_scored, n_labelled, n_unlabelled, n_refused, n_failed;
    double sensitivity;
    const char *site, *labels_path, *model_path, *out_path, *report_path;
    char model_name[256], model_version[64], model_sha256[65], out_sha256[65];
    char date[64];                    /* ISO 8601 UTC */
    cxr_assess_params limits;         /* in force */
} val_run;

/* The self-contained HTML report (validate_report.c), written atomically.
 * 0, or -1 with err set. */
int val_report_write(const val_run *R, const char *path, char *err, size_t errlen);

#endif
