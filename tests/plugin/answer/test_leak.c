/*
 * test_leak.c — leaks and memory growth of libcxrvqa under a long run: one
 * cxr_vqa handle answers N requests in process (default 10,000; ctest runs
 * 1,000), cycling through every image given (DICOM, PNG, a refused one, a
 * malformed one) and questions in English and Chinese (presence, several
 * findings, overview, side, open vocabulary, refusals), with the evidence
 * heatmap on every 10th request and the buffer entry point on every 7th.
 * Resident memory is read after request 500 (warm: every path taken) and
 * after the last; the test fails when it grew by more than --max-growth
 * percent (default 5). Under AddressSanitizer the growth is printed only
 * (its quarantine holds freed memory) and LeakSanitizer, run at exit, fails
 * the process on any leak. It also fails when an outcome is not the one
 * the request was built for (an image that must fail answered, a refusal
 * answered), so that the loop exercises what it claims.
 *
 *   test_leak --model M.gguf --file A.dcm --file B.png --refused SMALL.dcm
 *             --malformed BAD.dcm [--requests N] [--max-growth PCT]
 *
 * --inject-leak drops one answer without freeing it, to show that the
 * sanitizer build fails on a leak (it must exit non-zero then).
 */
#include "cxrvqa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>
#include <unistd.h>

#if defined(__SANITIZE_ADDRESS__)
#define UNDER_ASAN 1
#elif defined(__has_feature)
#if __has_feature(address_sanitizer)
#define UNDER_ASAN 1
#endif
#endif
#ifndef UNDER_ASAN
#define UNDER_ASAN 0
#endif

#define MAX_FILES 16
#define WARM_REQUESTS 500

typedef enum { WANT_ANSWER, WANT_REFUSAL, WANT_ERROR } want;

typedef struct {
    const char *text;
    int refused; /* the question itself must be refused */
} question;

static const question QUESTIONS[] = {
    {"Is there a pleural effusion?", 0},
    {"Is there a pneumothorax?", 0},
    {"Is there consolidation or a pleural effusion?", 0},
    {"What abnormalities are present?", 0},
    {"Which side is the effusion on?", 0},
    {"Is there a hiatal hernia?", 0},
    {"是否存在胸腔积液？", 0},
    {"有没有气胸", 0},
    {"心脏是否增大", 0},
    {"What dose of furosemide should I give?", 1},
    {"呋塞米用多少剂量？", 1},
    {"Is the knee fractured?", 1},
};
#define N_QUESTIONS (sizeof QUESTIONS / sizeof QUESTIONS[0])

typedef struct {
    const char *path;
    want kind; /* what the image alone must give */
    void *buf;
    size_t len;
} image;

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec / 1e9;
}

/* Resident set size now, in KiB (/proc/self/statm, field 2). */
static long rss_kib(void) {
    FILE *f = fopen("/proc/self/statm", "r");
    long size = 0, res = 0;
    if (!f) return -1;
    if (fscanf(f, "%ld %ld", &size, &res) != 2) res = -1;
    fclose(f);
    return res < 0 ? -1 : res * (sysconf(_SC_PAGESIZE) / 1024);
}

static int slurp(image *im) {
    FILE *f = fopen(im->path, "rb");
    if (!f) return -1;
    if (fseek(f, 0, SEEK_END) != 0) { fclose(f); return -1; }
    long n = ftell(f);
    rewind(f);
    im->buf = n > 0 ? malloc((size_t)n) : NULL;
    im->len = n > 0 ? (size_t)n : 0;
    int ok = im->buf && fread(im->buf, 1, im->len, f) == im->len;
    fclose(f);
    return ok ? 0 : -1;
}

static void usage(void) {
    fprintf(stderr, "usage: test_leak --model M.gguf --file IMG... [--refused IMG] [--malformed FILE] "
                    "[--requests N] [--max-growth PCT] [--inject-leak]\n");
}

int main(int argc, char **argv) {
    const char *model = NULL;
    long requests = 10000;
    double max_growth = 5.0;
    int inject_leak = 0;
    image imgs[MAX_FILES];
    int n_imgs = 0;
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--inject-leak")) { inject_leak = 1; continue; }
        if (!v) { usage(); return 2; }
        if (!strcmp(a, "--model")) model = v;
        else if (!strcmp(a, "--requests")) requests = atol(v);
        else if (!strcmp(a, "--max-growth")) max_growth = atof(v);
        else if (!strcmp(a, "--file") || !strcmp(a, "--refused") || !strcmp(a, "--malformed")) {
            if (n_imgs == MAX_FILES) { fprintf(stderr, "test_leak: at most %d images\n", MAX_FILES); return 2; }
            imgs[n_imgs++] = (image){v, !strcmp(a, "--file") ? WANT_ANSWER : !strcmp(a, "--refused") ? WANT_REFUSAL
                                                                                                       : WANT_ERROR,
                                     NULL, 0};
        } else { usage(); return 2; }
        i++;
    }
    if (!model || !n_imgs || requests < WARM_REQUESTS + 1) {
        usage();
        fprintf(stderr, "test_leak: --requests must be above %d\n", WARM_REQUESTS);
        return 2;
    }
    for (int i = 0; i < n_imgs; i++)
        if (slurp(&imgs[i]) != 0) { fprintf(stderr, "test_leak: cannot read %s\n", imgs[i].path); return 2; }

    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = model;
    cxr_vqa *v = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_vqa_open(&p, &v, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "test_leak: %s: %s\n", model, err);
        return 1;
    }
    long counts[3] = {0, 0, 0}, heatmaps = 0, wrong = 0;
    long rss_warm = -1;
    double t0 = now_s(), t_warm = 0;
    for (long r = 0; r < requests; r++) {
        /* image r mod n, question (r div n + r mod n) mod N: every image meets every question */
        const image *im = &imgs[r % n_imgs];
        const question *q = &QUESTIONS[(r / n_imgs + r % n_imgs) % N_QUESTIONS];
        cxr_ask_options o = cxr_ask_options_default();
        o.heatmap = r % 10 == 0;
        cxr_answer *a = NULL;
        int rc = r % 7 == 3 ? cxr_vqa_ask_buffer(v, im->buf, im->len, q->text, &o, &a)
                            : cxr_vqa_ask_file(v, im->path, q->text, &o, &a);
        if (!a) {
            fprintf(stderr, "test_leak: request %ld: out of memory\n", r);
            return 1;
        }
        want got = rc != CXR_OK ? WANT_ERROR : a->refused ? WANT_REFUSAL : WANT_ANSWER;
        want expect = im->kind == WANT_ERROR ? WANT_ERROR : (im->kind == WANT_REFUSAL || q->refused) ? WANT_REFUSAL
                                                                                                  : WANT_ANSWER;
        counts[got]++;
        if (a->heatmap_png) heatmaps++;
        /* an open-vocabulary or side question may be refused on content */
        if (got != expect && !(expect == WANT_ANSWER && got == WANT_REFUSAL && strstr(a->reason_code, "not_a_question"))) {
            if (wrong++ < 5)
                fprintf(stderr, "test_leak: request %ld (%s, \"%s\"): expected %s, got %s (%s%s)\n", r, im->path, q->text,
                        expect == WANT_ERROR ? "an error" : expect == WANT_REFUSAL ? "a refusal" : "an answer",
                        got == WANT_ERROR ? "an error" : got == WANT_REFUSAL ? "a refusal" : "an answer",
                        rc != CXR_OK ? a->error : a->reason_code, "");
        }
        char *js = cxr_answer_to_json(a); /* the JSON path too */
        free(js);
        if (inject_leak && r == 1) a = NULL; /* lost on purpose */
        cxr_answer_free(a);
        if (r + 1 == WARM_REQUESTS) {
            rss_warm = rss_kib();
            t_warm = now_s();
        }
    }
    double t1 = now_s();
    long rss_end = rss_kib();
    cxr_vqa_close(v);
    for (int i = 0; i < n_imgs; i++) free(imgs[i].buf);

    double growth = rss_warm > 0 ? 100.0 * (double)(rss_end - rss_warm) / (double)rss_warm : 0.0;
    printf("test_leak: %ld requests (%ld answers, %ld refusals, %ld errors, %ld heatmaps) in %.1f s, %.1f ms each\n",
           requests, counts[WANT_ANSWER], counts[WANT_REFUSAL], counts[WANT_ERROR], heatmaps, t1 - t0,
           1000.0 * (t1 - t0) / (double)requests);
    printf("test_leak: RSS after %d requests %ld KiB, after %ld %ld KiB: growth %+.2f%% (limit %.1f%%) over %.1f s%s\n",
           WARM_REQUESTS, rss_warm, requests, rss_end, growth, max_growth, t1 - t_warm,
           UNDER_ASAN ? "; AddressSanitizer build: growth not judged, LeakSanitizer checks at exit" : "");
    int fail = 0;
    if (wrong) {
        fprintf(stderr, "test_leak: FAIL: %ld requests did not give the outcome they were built for\n", wrong);
        fail = 1;
    }
    if (!counts[WANT_ANSWER] || (!counts[WANT_REFUSAL]) || heatmaps == 0) {
        fprintf(stderr, "test_leak: FAIL: the loop did not exercise answers, refusals and heatmaps\n");
        fail = 1;
    }
    if (rss_warm <= 0 || rss_end <= 0) {
        fprintf(stderr, "test_leak: FAIL: cannot read /proc/self/statm\n");
        fail = 1;
    } else if (!UNDER_ASAN && growth > max_growth) {
        fprintf(stderr, "test_leak: FAIL: resident memory grew %.2f%% between request %d and %ld\n", growth,
                WARM_REQUESTS, requests);
        fail = 1;
    }
    return fail;
}
