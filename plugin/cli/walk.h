/*
 * walk.h — the files a command is given: each PATH a file or a folder,
 * folders walked depth-first (names starting with '.' and symbolic links
 * skipped, at most 32 levels). `screen` and `validate` share it.
 */
#ifndef CXR_CLI_WALK_H
#define CXR_CLI_WALK_H

/* Called for each regular file: named = 1 when the path itself was given
 * (taken as it is, an unreadable one later listed as failed), image = 1
 * when it looks like an image this program reads (DICOM, PNG or JPEG, by
 * name or first bytes). Return 0 to go on, or a negative value to stop. */
typedef int (*cli_walk_fn)(void *ctx, const char *path, int named, int image);

/* 0, or the first negative value on() returned, or -1 when path (or a
 * folder below it) cannot be read: the reason is printed behind "cxrvqa
 * WHO:"; with keep_going, an unreadable folder below path is reported and
 * skipped instead. */
int cli_walk(const char *who, const char *path, int keep_going, cli_walk_fn on, void *ctx);

#endif
