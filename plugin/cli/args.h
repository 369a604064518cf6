/*
 * args.h — the one command-line parser of the `cxrvqa` subcommands: each
 * command describes its options in a table and gets its positional
 * arguments back; the messages for a bad command line are the same
 * everywhere ("cxrvqa CMD: --x needs a value", "unknown option", "unexpected
 * argument", "bad value"), and --help / -h prints the command's usage to
 * stdout.
 *
 *   const char *file = NULL; int json = 0, threads = 0;
 *   const cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_INT("--threads", &threads), CLI_OPT_END};
 *   const char *pos[1]; int n;
 *   int rc = cli_args("inspect", opts, argc, argv, pos, 1, &n, usage);
 *   if (rc != CLI_ARGS_OK) return rc == CLI_ARGS_HELP ? 0 : 2;
 */
#ifndef CXR_CLI_ARGS_H
#define CXR_CLI_ARGS_H

#include <stdio.h>

typedef enum {
    CLI_FLAG,  /* int *: set to 1 */
    CLI_STR,   /* const char **: the value (argv's own string) */
    CLI_INT,   /* int *: a whole number (else "bad value") */
    CLI_FLOAT, /* float * */
    CLI_CALL   /* call(ctx, value): non-zero when the value is bad */
} cli_kind;

typedef struct {
    const char *name; /* "--json"; a NULL name ends the table */
    cli_kind kind;
    void *dst;
    int (*call)(void *ctx, const char *value);
    void *ctx;
} cli_opt;

/* table rows */
#define CLI_OPT_FLAG(name, dst) {(name), CLI_FLAG, (dst), NULL, NULL}
#define CLI_OPT_STR(name, dst) {(name), CLI_STR, (dst), NULL, NULL}
#define CLI_OPT_INT(name, dst) {(name), CLI_INT, (dst), NULL, NULL}
#define CLI_OPT_FLOAT(name, dst) {(name), CLI_FLOAT, (dst), NULL, NULL}
#define CLI_OPT_CALL(name, fn, ctx) {(name), CLI_CALL, NULL, (fn), (ctx)}
#define CLI_OPT_END {NULL, CLI_FLAG, NULL, NULL, NULL}

enum { CLI_ARGS_OK = 0, CLI_ARGS_HELP = 1, CLI_ARGS_BAD = 2 };

/* Parse argv[0..argc) against opts; other arguments go to pos[0..max_pos)
 * in order (*n_pos of them). CLI_ARGS_HELP after printing usage(stdout)
 * for --help / -h; CLI_ARGS_BAD after printing why and usage(stderr). */
int cli_args(const char *cmd, const cli_opt *opts, int argc, char **argv, const char **pos, int max_pos, int *n_pos,
             void (*usage)(FILE *));

#endif
