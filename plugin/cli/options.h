/*
 * options.h — what the answering commands of `cxrvqa` (ask, worker) share:
 * the common options and opening the service from them (options.c).
 */
#ifndef CXR_CLI_OPTIONS_H
#define CXR_CLI_OPTIONS_H

#include "args.h"
#include "service.h"

#include <stddef.h>

typedef struct {
    const char *model, *db, *sr_dir, *uid_root, *user, *app;
    const char *audit_key; /* --audit-key: the audit chain's HMAC key file (keyed mode, audit.h) */
    int no_audit, threads, strict, full_decode;
    int min_positives; /* -1: the model file's */
    float min_auc;     /* -1: the model file's */
} cli_common_opts;
#define CLI_COMMON_OPTS_INIT {.min_positives = -1, .min_auc = -1}
/* The options every answering command shares, as rows of its cli_opt table
 * (args.h): --model --db --audit-key --sr-out --uid-root --user --app --threads
 * --no-audit --strict --min-positives --min-auc (the assessability limits:
 * fewest validation positives and lowest 95% CI lower bound of the
 * validation AUC a finding needs to be answered yes or no) --full-decode
 * (every pixel of a JPEG 2000 frame, not the resolution level the model
 * needs). */
#define CLI_COMMON_OPTS(c)                                                                                   \
    CLI_OPT_STR("--model", &(c)->model), CLI_OPT_STR("--db", &(c)->db), CLI_OPT_STR("--sr-out", &(c)->sr_dir),       \
        CLI_OPT_STR("--audit-key", &(c)->audit_key),                                                                  \
        CLI_OPT_STR("--uid-root", &(c)->uid_root), CLI_OPT_STR("--user", &(c)->user), CLI_OPT_STR("--app", &(c)->app), \
        CLI_OPT_INT("--threads", &(c)->threads), CLI_OPT_FLAG("--no-audit", &(c)->no_audit),                      \
        CLI_OPT_FLAG("--strict", &(c)->strict), CLI_OPT_INT("--min-positives", &(c)->min_positives),                  \
        CLI_OPT_FLOAT("--min-auc", &(c)->min_auc), CLI_OPT_FLAG("--full-decode", &(c)->full_decode)
/* Open model and audit store as the options say (the database path is kept
 * in dbbuf); prints the error, and keeps it in why (whylen bytes; may be
 * NULL). 0, 1 (model) or 3 (audit database, SR folder). */
int cli_open_service(const cli_common_opts *c, svc *s, char *dbbuf, size_t dblen, char *why, size_t whylen);
void cli_close_service(svc *s);

#endif
