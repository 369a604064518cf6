/*
 * options.h — what the answering commands of `cxrvqa` (ask, worker) share:
 * the common options and opening the service from them (options.c).
 */
#ifndef CXR_CLI_OPTIONS_H
#define CXR_CLI_OPTIONS_H

#include "service.h"

#include <stddef.h>

typedef struct {
    const char *model, *db, *sr_dir, *uid_root, *user, *app;
    int no_audit, threads, strict;
} cli_common_opts;
/* Options every answering command shares (--model --db --no-audit --sr-out
 * --uid-root --user --app --threads --strict): 1 when argv[*i] was one (its
 * value consumed), 0 when not, -1 when its value is missing. */
int cli_common_opt(cli_common_opts *c, int argc, char **argv, int *i);
/* Open model and audit store as the options say (the database path is kept
 * in dbbuf); prints the error. 0, 1 (model) or 3 (audit database, SR folder). */
int cli_open_service(const cli_common_opts *c, svc *s, char *dbbuf, size_t dblen);
void cli_close_service(svc *s);

#endif
