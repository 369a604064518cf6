/*
 * cli_common.h — what the files of the `cxrvqa` executable share
 * (internal): the default model and the subcommands defined outside cli.c.
 */
#ifndef CXR_CLI_COMMON_H
#define CXR_CLI_COMMON_H

/* $CXRVQA_MODEL, else the default research model shipped in the source tree. */
const char *cli_default_model(void);

int cli_ask(int argc, char **argv);     /* cli_ask.c */
int cli_worker(int argc, char **argv);  /* cli_ask.c */
int cli_screen(int argc, char **argv);  /* cli_screen.c */

#endif
