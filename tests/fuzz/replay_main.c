/*
 * replay_main.c — a main() for fuzz targets in the ordinary build: runs
 * LLVMFuzzerTestOneInput once over every regular file under the directories
 * (or files) named on the command line, recursively, so that ctest replays
 * the seed corpus and every crash ever found under the sanitizer build. A
 * directory that does not exist is reported and skipped. Exit status 0 when
 * every input ran (a crash ends the process with the sanitizer's report).
 */
#include <dirent.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>

#define REPLAY_MAX_INPUT (64u << 20)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

/* Under ASan, as under libFuzzer's -malloc_limit_mb: an allocation beyond
 * 2 GB is a failure (an input that makes a decoder trust a declared length),
 * not something to be granted lazily. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "max_allocation_size_mb=2048"; }

static int n_run, n_bad;

static void run_file(const char *path, off_t size) {
    if (size < 0 || (unsigned long long)size > REPLAY_MAX_INPUT) {
        printf("skip %s (%lld bytes)\n", path, (long long)size);
        return;
    }
    FILE *fp = fopen(path, "rb");
    uint8_t *buf = malloc(size ? (size_t)size : 1);
    size_t got = 0;
    if (fp && buf) got = fread(buf, 1, (size_t)size, fp);
    if (fp) fclose(fp);
    if (!fp || !buf || got != (size_t)size) {
        fprintf(stderr, "replay: cannot read %s\n", path);
        n_bad++;
        free(buf);
        return;
    }
    /* exact-size copy so the sanitizer sees reads past the end */
    uint8_t *exact = malloc(size ? (size_t)size : 1);
    if (!exact) { free(buf); n_bad++; return; }
    memcpy(exact, buf, (size_t)size);
    free(buf);
    LLVMFuzzerTestOneInput(exact, (size_t)size);
    free(exact);
    n_run++;
}

static void walk(const char *path, int depth) {
    struct stat st;
    if (stat(path, &st) != 0) {
        printf("replay: %s does not exist, skipped\n", path);
        return;
    }
    if (S_ISREG(st.st_mode)) {
        run_file(path, st.st_size);
        return;
    }
    if (!S_ISDIR(st.st_mode) || depth > 8) return;
    DIR *d = opendir(path);
    if (!d) return;
    struct dirent *de;
    while ((de = readdir(d)) != NULL) {
        if (de->d_name[0] == '.') continue;
        size_t n = strlen(path) + strlen(de->d_name) + 2;
        char *child = malloc(n);
        if (!child) break;
        snprintf(child, n, "%s/%s", path, de->d_name);
        walk(child, depth + 1);
        free(child);
    }
    closedir(d);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: %s DIR|FILE...\n", argv[0]);
        return 2;
    }
    for (int i = 1; i < argc; i++) walk(argv[i], 0);
    printf("replay: %d inputs ran, %d unreadable\n", n_run, n_bad);
    return n_bad ? 1 : 0;
}
