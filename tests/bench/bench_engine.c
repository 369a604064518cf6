/*
 * bench_engine.c — times the engine's towers through the public API
 * (cxr_model_embed_image / cxr_model_embed_tokens) and nothing else: model
 * open time, the median of N runs after warm-up, peak RSS. It owns no model
 * math. Built with -DCXR_KPROF (library and this file), it also prints where
 * the time went per kernel (see kernels_prof_* in model/kernels.h).
 *
 * One shot (prints one JSON line):
 *   bench_engine --model F.gguf [--threads T] [--batch B] [--text] [--runs N]
 *                [--warmup W] [--input RAW.f32] [--tokens N] [--emb OUT.f32]
 * Server (what tests/bench/bench_engine.py drives, so that several engines
 * can be interleaved without reloading): --serve, then one command a line on
 * stdin, one JSON line per answer on stdout:
 *   run K        → {"times_ms": [...]}      K timed forwards
 *   emb PATH     → {"ok": 1}                embeddings of the input, batch × E float32
 *   prof         → {"prof": {...}}          (CXR_KPROF builds) kernel times since the last prof
 *   quit         → {"rss_kb": N}
 * Input: --input RAW.f32 (batch × 3 × S × S little-endian float32, S = the
 * model's image size) or, without it, a fixed pseudo-random tensor. Text:
 * --tokens N ids (default the context length), the last one the end-of-text
 * id, so that the whole context is computed.
 */
#include "cxr_model.h"
#include "kernels.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <time.h>

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

/* Peak resident set of this process image: VmHWM (getrusage's ru_maxrss
 * also counts the parent's pages when it was exec'ed from a large process). */
static long rss_kb(void) {
    FILE *f = fopen("/proc/self/status", "r");
    char line[256];
    long kb = -1;
    while (f && fgets(line, sizeof line, f))
        if (sscanf(line, "VmHWM: %ld", &kb) == 1) break;
    if (f) fclose(f);
    if (kb < 0) {
        struct rusage ru;
        getrusage(RUSAGE_SELF, &ru);
        kb = ru.ru_maxrss;
    }
    return kb;
}

static int cmp_d(const void *a, const void *b) {
    double x = *(const double *)a, y = *(const double *)b;
    return (x > y) - (x < y);
}

typedef struct {
    cxr_model *m;
    int text, batch, channels, size, ntok;
    float *img, *emb;
    int32_t *ids;
} bench;

static int forward(bench *b) {
    if (b->text) return cxr_model_embed_tokens(b->m, b->ids, b->ntok, b->emb);
    return cxr_model_embed_image(b->m, b->img, b->batch, b->channels, b->size, b->emb);
}

static int time_runs(bench *b, int k, double *t) {
    for (int i = 0; i < k; i++) {
        double t0 = now_ms();
        int rc = forward(b);
        t[i] = now_ms() - t0;
        if (rc != CXR_OK) return rc;
    }
    return CXR_OK;
}

static void print_times(const char *key, const double *t, int k) {
    printf("\"%s\": [", key);
    for (int i = 0; i < k; i++) printf("%s%.3f", i ? ", " : "", t[i]);
    printf("]");
}

static void print_prof(void) {
#ifdef CXR_KPROF
    double ms[KPROF_N];
    kernels_prof_take(ms);
    printf("\"prof\": {");
    for (int i = 0; i < KPROF_N; i++) printf("%s\"%s\": %.3f", i ? ", " : "", kernels_prof_name(i), ms[i]);
    printf("}");
#else
    printf("\"prof\": null");
#endif
}

static int usage(void) {
    fprintf(stderr, "usage: bench_engine --model F.gguf [--threads T] [--batch B] [--text] [--runs N] [--warmup W]\n"
                    "                    [--input RAW.f32] [--tokens N] [--emb OUT.f32] [--serve]\n");
    return 2;
}

int main(int argc, char **argv) {
    const char *model = NULL, *input = NULL, *embpath = NULL;
    int threads = 0, runs = 10, warmup = 2, serve = 0;
    bench b = {.batch = 1, .ntok = 0};
    for (int i = 1; i < argc; i++) {
        const char *a = argv[i], *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--text")) b.text = 1;
        else if (!strcmp(a, "--serve")) serve = 1;
        else if (v && !strcmp(a, "--model")) model = argv[++i];
        else if (v && !strcmp(a, "--threads")) threads = atoi(argv[++i]);
        else if (v && !strcmp(a, "--batch")) b.batch = atoi(argv[++i]);
        else if (v && !strcmp(a, "--runs")) runs = atoi(argv[++i]);
        else if (v && !strcmp(a, "--warmup")) warmup = atoi(argv[++i]);
        else if (v && !strcmp(a, "--input")) input = argv[++i];
        else if (v && !strcmp(a, "--tokens")) b.ntok = atoi(argv[++i]);
        else if (v && !strcmp(a, "--emb")) embpath = argv[++i];
        else return usage();
    }
    if (!model || b.batch < 1 || runs < 1 || warmup < 0) return usage();

    cxr_model_params p = cxr_model_params_default();
    p.threads = threads;
    p.max_batch = b.batch;
    char err[CXR_ERRMSG_MAX];
    double t0 = now_ms();
    int rc = cxr_model_open(model, &p, &b.m, err, sizeof err);
    double open_ms = now_ms() - t0;
    if (rc != CXR_OK) {
        fprintf(stderr, "bench_engine: %s: %s\n", model, err);
        return 1;
    }
    const cxr_model_info *in = cxr_model_get_info(b.m);
    long rss_open = rss_kb();
    b.size = in->image_size;
    b.channels = in->pp_channels == 1 ? 1 : 3; /* the model's own input (classifiers: 1-channel txv) */
    b.emb = malloc((size_t)b.batch * in->embed_dim * sizeof *b.emb);
    if (b.text) {
        if (b.ntok <= 0 || b.ntok > in->text_ctx) b.ntok = in->text_ctx;
        b.ids = malloc((size_t)b.ntok * sizeof *b.ids);
        if (!b.ids || !b.emb) return 1;
        /* start-of-text, ordinary ids, end-of-text (the highest id) last */
        for (int i = 0; i < b.ntok; i++) b.ids[i] = 1 + (int32_t)((i * 7919u) % (unsigned)(in->text_vocab - 3));
        b.ids[0] = in->text_vocab - 2;
        b.ids[b.ntok - 1] = in->text_vocab - 1;
    } else {
        size_t n = (size_t)b.batch * b.channels * b.size * b.size;
        b.img = malloc(n * sizeof *b.img);
        if (!b.img || !b.emb) return 1;
        if (input) {
            FILE *f = fopen(input, "rb");
            size_t got = f ? fread(b.img, sizeof *b.img, n, f) : 0;
            if (f) fclose(f);
            if (got != n) {
                fprintf(stderr, "bench_engine: %s: expected %zu float32 values\n", input, n);
                return 1;
            }
        } else {
            uint32_t s = 12345;
            for (size_t i = 0; i < n; i++) {
                s = s * 1664525u + 1013904223u;
                b.img[i] = ((s >> 8) / 16777216.0f) * 4.0f - 2.0f;
            }
        }
    }

    if (serve) {
        printf("{\"ready\": 1, \"open_ms\": %.3f, \"rss_open_kb\": %ld}\n", open_ms, rss_open);
        fflush(stdout);
        char line[4096];
        double *t = NULL;
        while (fgets(line, sizeof line, stdin)) {
            line[strcspn(line, "\r\n")] = '\0';
            int k = 0;
            if (sscanf(line, "run %d", &k) == 1 && k > 0) {
                double *nt = realloc(t, (size_t)k * sizeof *t);
                if (!nt) return 1;
                t = nt;
                rc = time_runs(&b, k, t);
                if (rc != CXR_OK) {
                    printf("{\"error\": \"%s\"}\n", cxr_strerror(rc));
                } else {
                    printf("{");
                    print_times("times_ms", t, k);
                    printf("}\n");
                }
            } else if (!strncmp(line, "emb ", 4)) {
                rc = forward(&b);
                FILE *f = rc == CXR_OK ? fopen(line + 4, "wb") : NULL;
                size_t n = (size_t)(b.text ? 1 : b.batch) * in->embed_dim;
                int ok = f && fwrite(b.emb, sizeof *b.emb, n, f) == n;
                if (f && fclose(f)) ok = 0;
                printf("{\"ok\": %d}\n", ok);
            } else if (!strcmp(line, "prof")) {
                printf("{");
                print_prof();
                printf("}\n");
            } else if (!strcmp(line, "quit")) {
                break;
            } else {
                printf("{\"error\": \"unknown command\"}\n");
            }
            fflush(stdout);
        }
        printf("{\"rss_kb\": %ld}\n", rss_kb());
        free(t);
    } else {
        double *t = malloc((size_t)(runs > warmup ? runs : warmup + 1) * sizeof *t);
        if (!t) return 1;
        rc = time_runs(&b, warmup, t);
#ifdef CXR_KPROF
        double junk[KPROF_N];
        kernels_prof_take(junk);
#endif
        if (rc == CXR_OK) rc = time_runs(&b, runs, t);
        if (rc != CXR_OK) {
            fprintf(stderr, "bench_engine: forward failed: %s\n", cxr_strerror(rc));
            return 1;
        }
        printf("{\"open_ms\": %.3f, \"rss_open_kb\": %ld, \"rss_kb\": %ld, ", open_ms, rss_open, rss_kb());
        print_times("times_ms", t, runs);
        qsort(t, (size_t)runs, sizeof *t, cmp_d);
        printf(", \"median_ms\": %.3f, \"min_ms\": %.3f, ", t[runs / 2], t[0]);
        print_prof();
        printf("}\n");
        if (embpath) {
            FILE *f = fopen(embpath, "wb");
            size_t n = (size_t)(b.text ? 1 : b.batch) * in->embed_dim;
            if (!f || fwrite(b.emb, sizeof *b.emb, n, f) != n) return 1;
            fclose(f);
        }
        free(t);
    }
    free(b.img);
    free(b.ids);
    free(b.emb);
    cxr_model_close(b.m);
    return 0;
}
