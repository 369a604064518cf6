/*
 * cli.h — what the files of the `cxrvqa` executable share
 * (internal): the default model and the subcommands; main.c dispatches to
 * them and nothing calls back into main.c.
 */
#ifndef CXR_CLI_H
#define CXR_CLI_H

/* $CXRVQA_MODEL, else the default research model shipped in the source tree (options.c). */
const char *cli_default_model(void);

int cli_ask(int argc, char **argv);     /* ask.c */
int cli_worker(int argc, char **argv);  /* worker.c */
int cli_screen(int argc, char **argv);  /* screen.c */
int cli_validate(int argc, char **argv); /* validate.c */
/* `cxrvqa audit verify|export|show …` (audit.c); argv[0] is "audit". Exit
 * status: 0 done / intact, 1 tampered (row named on stderr), 2 usage, 3 the
 * database could not be read or the output not written. */
int cli_audit(int argc, char **argv);

#endif
