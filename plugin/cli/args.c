/*
 * args.c — the table-driven command-line parser of args.h, shared by every
 * `cxrvqa` subcommand. It owns the messages for a bad command line; it
 * knows no option of its own.
 */
#include "args.h"

#include <errno.h>
#include <stdlib.h>
#include <string.h>

static int value_of(const cli_opt *o, const char *v) {
    char *end;
    errno = 0;
    switch (o->kind) {
    case CLI_STR: *(const char **)o->dst = v; return 0;
    case CLI_INT: {
        long n = strtol(v, &end, 10);
        if (errno || end == v || *end || n < -1000000000L || n > 1000000000L) return -1;
        *(int *)o->dst = (int)n;
        return 0;
    }
    case CLI_FLOAT: {
        float f = strtof(v, &end);
        if (errno || end == v || *end) return -1;
        *(float *)o->dst = f;
        return 0;
    }
    case CLI_CALL: return o->call(o->ctx, v);
    default: return -1;
    }
}

int cli_args(const char *cmd, const cli_opt *opts, int argc, char **argv, const char **pos, int max_pos, int *n_pos,
             void (*usage)(FILE *)) {
    *n_pos = 0;
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        if (!strcmp(a, "--help") || !strcmp(a, "-h")) {
            usage(stdout);
            return CLI_ARGS_HELP;
        }
        const cli_opt *o = NULL;
        for (const cli_opt *k = opts; k && k->name && !o; k++)
            if (!strcmp(a, k->name)) o = k;
        if (!o && a[0] == '-' && a[1]) {
            fprintf(stderr, "cxrvqa %s: unknown option %s\n", cmd, a);
        } else if (!o && *n_pos >= max_pos) {
            fprintf(stderr, "cxrvqa %s: unexpected argument '%s'\n", cmd, a);
        } else if (!o) {
            pos[(*n_pos)++] = a;
            continue;
        } else if (o->kind == CLI_FLAG) {
            *(int *)o->dst = 1;
            continue;
        } else if (i + 1 >= argc) {
            fprintf(stderr, "cxrvqa %s: %s needs a value\n", cmd, a);
        } else if (value_of(o, argv[++i]) != 0) {
            fprintf(stderr, "cxrvqa %s: %s: bad value '%s'\n", cmd, a, argv[i]);
        } else {
            continue;
        }
        usage(stderr);
        return CLI_ARGS_BAD;
    }
    return CLI_ARGS_OK;
}
