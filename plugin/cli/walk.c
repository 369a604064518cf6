/*
 * walk.c — the file walk of `screen` and `validate` (walk.h).
 */
#include "walk.h"

#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <string.h>
#include <strings.h>
#include <sys/stat.h>
#include <unistd.h>

static int looks_like_image(const char *path) {
    const char *dot = strrchr(path, '.');
    if (dot && (!strcasecmp(dot, ".dcm") || !strcasecmp(dot, ".dicom") || !strcasecmp(dot, ".png") ||
                !strcasecmp(dot, ".jpg") || !strcasecmp(dot, ".jpeg")))
        return 1;
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return 0;
    unsigned char b[132];
    ssize_t n = read(fd, b, sizeof b);
    close(fd);
    if (n >= 8 && !memcmp(b, "\x89PNG\r\n\x1a\n", 8)) return 1;
    if (n >= 3 && !memcmp(b, "\xff\xd8\xff", 3)) return 1; /* JPEG SOI and a marker */
    return n == 132 && !memcmp(b + 128, "DICM", 4);
}

static int walk(const char *who, const char *path, int depth, int keep_going, cli_walk_fn on, void *ctx) {
    struct stat st;
    if (lstat(path, &st) != 0) {
        fprintf(stderr, "cxrvqa %s: %s: %s\n", who, path, strerror(errno));
        return -1;
    }
    if (S_ISREG(st.st_mode)) return on(ctx, path, depth == 0, looks_like_image(path));
    if (!S_ISDIR(st.st_mode) || depth > 32) return 0; /* symlinks, devices: not followed */
    DIR *d = opendir(path);
    if (!d) {
        fprintf(stderr, "cxrvqa %s: %s: %s\n", who, path, strerror(errno));
        return -1;
    }
    struct dirent *e;
    int rc = 0;
    while ((e = readdir(d)) && rc == 0) {
        if (e->d_name[0] == '.') continue;
        char sub[PATH_MAX];
        if (snprintf(sub, sizeof sub, "%s/%s", path, e->d_name) >= (int)sizeof sub) continue;
        rc = walk(who, sub, depth + 1, keep_going, on, ctx);
        if (rc == -1 && keep_going) rc = 0; /* reported; the rest of the folder goes on */
    }
    closedir(d);
    return rc;
}

int cli_walk(const char *who, const char *path, int keep_going, cli_walk_fn on, void *ctx) {
    return walk(who, path, 0, keep_going, on, ctx);
}
