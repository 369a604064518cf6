/*
 * screen.c — `cxrvqa screen`: batch screening of files and folders.
 * Every (image, question) pair is one task with a request key (SHA-256 of
 * the absolute path, the model's SHA-256 and the question); tasks go to a
 * pool of `cxrvqa worker` processes (a file that crashes or hangs one costs
 * that task only), every answer is committed to the audit database by the
 * worker before it is reported, and a rerun skips the keys already answered
 * there. The CSV / JSONL are rebuilt at the end from this run's answers and
 * the audit rows of skipped tasks, so an interrupted and resumed run ends
 * with every image exactly once. This file owns the walk, the scheduling,
 * progress and the output files; it must not decode images itself.
 */
#define _GNU_SOURCE /* realpath */
#include "cli.h"
#include "service.h"
#include "worker.h"
#include "args.h"
#include "cxr_json.h"
#include "protocol.h"
#include "cxr_util.h"
#include "cxr_sha256.h"
#include "store_scu.h"
#include "triage.h"
#include "walk.h"
#include "html.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdint.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

#define SCREEN_MAX_FILES 1000000
#define SCREEN_MAX_QUESTIONS 32

static const char *DEFAULT_QUESTIONS[] = {"Is there a pleural effusion?", "Is there a pneumothorax?",
                                          "Is there consolidation?", "Is the heart enlarged?"};

enum { T_PENDING = 0, T_OK, T_REFUSED, T_ERROR, T_SKIPPED };
static const char *status_name(int s) {
    return s == T_OK ? "ok" : s == T_REFUSED ? "refused" : s == T_ERROR ? "error" : s == T_SKIPPED ? "ok" : "pending";
}

typedef struct {
    int file, q;
    char key[65];
    int status;
    int skipped;           /* answered by an earlier run (from the audit) */
    cJSON *ans;            /* the answer (worker response or rebuilt from the audit row), parsed once */
    char reason[512];
} task;

typedef struct screen {
    char **files;
    int n_files, cap;
    const char **questions;
    int n_q;
    task *tasks;
    int n_tasks;
    /* scheduling */
    pthread_mutex_t mu;
    int next, done, n_ok, n_refused, n_error, n_skipped;
    double t0;
    int tty;
    cxr_pool *pool;
    cxr_audit *audit;
    const char *user, *sr_dir;
    /* called with each image's worker response (answers, SR bytes) before its
       tasks finish: screen --store-scu sends the SR from here */
    void (*on_sr)(struct screen *s, const cJSON *resp, const uint8_t *sr, size_t sr_len);
    void *on_sr_ctx;
    /* files in the walked folders that are not images (not DICOM, PNG or JPEG) */
    char **skipped_files;
    int n_skipped_files, cap_skipped;
} screen;

/* ------------------------------------------------- --store-scu (C-STORE) */

#define STORE_ATTEMPTS 3 /* per SR: at once, after 1 s, after 2 s */

static volatile sig_atomic_t g_stop; /* set by SIGINT / SIGTERM (below) */

typedef struct {
    cxr_scu_peer peer;
    const char *spec, *calling;
    int sent, failed;
} store_ctx;

/* One audit row per attempt, event "forward" (DICOM Export): outcome 0 sent,
 * 4 failed and retried, 8 failed and given up. */
static void store_audit(screen *s, const store_ctx *c, const cJSON *sr, const char *path, int outcome, int attempt,
                        const char *why) {
    cxr_audit_record r;
    cxr_audit_record_init(&r);
    char dest[300], reason[CXR_ERRMSG_MAX + 64], err[CXR_ERRMSG_MAX];
    snprintf(dest, sizeof dest, "store-scu:%s", c->spec);
    snprintf(reason, sizeof reason, "attempt %d of %d%s%s", attempt, STORE_ATTEMPTS, why ? ": " : "", why ? why : "");
    r.event_type = "forward";
    r.event_id = CXR_AUDIT_EV_EXPORT;
    r.outcome = outcome;
    r.user = s->user;
    r.application = "cxrvqa-screen";
    r.sr_uid = r.sop_uid = cxr_json_str(sr, "sop_instance_uid");
    r.sr_dest = dest;
    r.source = path;
    r.answer = outcome == CXR_AUDIT_SUCCESS ? "sent" : outcome == CXR_AUDIT_MINOR_FAILURE ? "retry" : "failed";
    r.error_code = outcome == CXR_AUDIT_SUCCESS ? 0 : CXR_ERR_IO;
    r.reason = reason;
    if (cxr_audit_append(s->audit, &r, NULL, err, sizeof err) != CXR_OK)
        fprintf(stderr, "cxrvqa screen: forward of %s: audit row not written: %s\n", path, err);
}

/* screen.on_sr: send the image's SR (one per image with --sr-out) to the peer. */
static void store_sr(screen *s, const cJSON *resp, const uint8_t *bytes, size_t len) {
    (void)bytes;
    (void)len;
    store_ctx *c = s->on_sr_ctx;
    const cJSON *answers = cJSON_GetObjectItemCaseSensitive(resp, CXR_P_ANSWERS), *a;
    const char *done = NULL;
    cJSON_ArrayForEach(a, answers) {
        const cJSON *sr = cJSON_GetObjectItemCaseSensitive(a, "sr");
        const char *path = cJSON_IsObject(sr) ? cxr_json_str(sr, "path") : NULL;
        if (!path || (done && !strcmp(done, path))) continue; /* the image's questions share one SR */
        done = path;
        char err[CXR_ERRMSG_MAX] = "";
        int ok = 0;
        for (int attempt = 1; attempt <= STORE_ATTEMPTS && !ok && !g_stop; attempt++) {
            if (attempt > 1) sleep(1u << (attempt - 2));
            ok = cxr_scu_store_file(&c->peer, c->calling, path, 30, err, sizeof err) == CXR_OK;
            pthread_mutex_lock(&s->mu);
            store_audit(s, c, sr, path, ok ? CXR_AUDIT_SUCCESS
                                           : attempt < STORE_ATTEMPTS ? CXR_AUDIT_MINOR_FAILURE : CXR_AUDIT_SERIOUS_FAILURE,
                        attempt, ok ? NULL : err);
            if (ok) c->sent++;
            else if (attempt == STORE_ATTEMPTS) {
                c->failed++;
                fprintf(stderr, "cxrvqa screen: %s not sent: %s\n", path, err);
            }
            pthread_mutex_unlock(&s->mu);
        }
    }
}

static volatile sig_atomic_t g_stop = 0;
static void on_signal(int sig) {
    (void)sig;
    g_stop = 1;
}

/* ------------------------------------------------------------- the walk */

static int add_file(screen *s, const char *path) {
    if (s->n_files >= SCREEN_MAX_FILES) return -2;
    if (s->n_files == s->cap) {
        int cap = s->cap ? s->cap * 2 : 256;
        char **nf = realloc(s->files, (size_t)cap * sizeof *nf);
        if (!nf) return -2;
        s->files = nf;
        s->cap = cap;
    }
    char abs[PATH_MAX];
    if (!realpath(path, abs)) return 0;
    s->files[s->n_files] = strdup(abs);
    if (!s->files[s->n_files]) return -2;
    s->n_files++;
    return 0;
}

/* a file in a walked folder that is not an image: named in the summary */
static int add_skipped(screen *s, const char *path) {
    if (s->n_skipped_files == s->cap_skipped) {
        int cap = s->cap_skipped ? s->cap_skipped * 2 : 64;
        char **nf = realloc(s->skipped_files, (size_t)cap * sizeof *nf);
        if (!nf) return -2;
        s->skipped_files = nf;
        s->cap_skipped = cap;
    }
    if (!(s->skipped_files[s->n_skipped_files] = strdup(path))) return -2;
    s->n_skipped_files++;
    return 0;
}

static void free_skipped(screen *s) {
    for (int i = 0; i < s->n_skipped_files; i++) free(s->skipped_files[i]);
    free(s->skipped_files);
    s->skipped_files = NULL;
    s->n_skipped_files = s->cap_skipped = 0;
}

/* "N files skipped (not DICOM, PNG or JPEG): a, b, c and N-3 more" (all of them when all) */
static void print_skipped(const screen *s, int all) {
    if (!s->n_skipped_files) return;
    int shown = all || s->n_skipped_files <= 5 ? s->n_skipped_files : 3;
    fprintf(stderr, "screen: %d file%s skipped (not DICOM, PNG or JPEG): ", s->n_skipped_files,
            s->n_skipped_files == 1 ? "" : "s");
    for (int i = 0; i < shown; i++) fprintf(stderr, "%s%s", i ? ", " : "", s->skipped_files[i]);
    if (shown < s->n_skipped_files) fprintf(stderr, " and %d more (-v lists them all)", s->n_skipped_files - shown);
    fputc('\n', stderr);
}

/* cli_walk's callback: images (and files named as they are) to screen, the
 * rest of a folder listed as skipped; -2 when the list is full. */
static int on_walked(void *ctx, const char *path, int named, int image) {
    screen *s = ctx;
    return image || named ? add_file(s, path) : add_skipped(s, path);
}

/* an unreadable folder below PATH is reported and skipped; -2: the list is full */
static int walk(screen *s, const char *path, int depth) {
    (void)depth;
    return cli_walk("screen", path, 1, on_walked, s);
}

static int cmp_str(const void *a, const void *b) { return strcmp(*(char *const *)a, *(char *const *)b); }

/* -------------------------------------------------------------- sharding */

#define SCREEN_MAX_SHARDS 100000

/* The shard of an (absolute) path among n: the first 8 bytes of SHA-256 of
 * the path, big-endian, modulo n. Stable across runs, machines and manifest
 * orders; a rerun of shard K does the same images. */
static int shard_of(const char *path, int n) {
    cxr_sha256_ctx c;
    unsigned char md[32];
    cxr_sha256_init(&c);
    cxr_sha256_update(&c, path, strlen(path));
    cxr_sha256_final(&c, md);
    uint64_t x = 0;
    for (int i = 0; i < 8; i++) x = x << 8 | md[i];
    return (int)(x % (uint64_t)n);
}

typedef struct {
    int k, n; /* n == 0: no sharding */
} shard_spec;

/* "K/N" with 0 <= K < N <= SCREEN_MAX_SHARDS */
static int parse_shard(void *ctx, const char *v) {
    shard_spec *sp = ctx;
    char *end;
    errno = 0;
    long k = strtol(v, &end, 10);
    if (errno || end == v || *end != '/') goto bad;
    const char *ns = end + 1;
    long n = strtol(ns, &end, 10);
    if (errno || end == ns || *end || n < 1 || n > SCREEN_MAX_SHARDS || k < 0 || k >= n) goto bad;
    sp->k = (int)k;
    sp->n = (int)n;
    return 0;
bad:
    fprintf(stderr, "cxrvqa screen: --shard: expected K/N with 0 <= K < N <= %d (e.g. 2/8), got '%s'\n",
            SCREEN_MAX_SHARDS, v);
    return -1;
}

static int env_long(const char *name, long *out, int required) {
    const char *v = getenv(name);
    if (!v || !*v) {
        if (required)
            fprintf(stderr, "cxrvqa screen: --shard-from-env: %s is not set (not a Slurm array task? submit with "
                            "sbatch --array=0-N)\n", name);
        return required ? -1 : 1;
    }
    char *end;
    errno = 0;
    long x = strtol(v, &end, 10);
    if (errno || end == v || *end || x < 0 || x > 100000000L) {
        fprintf(stderr, "cxrvqa screen: --shard-from-env: %s='%s' is not a whole number\n", name, v);
        return -1;
    }
    *out = x;
    return 0;
}

/* K = SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN (0 when unset), N = SLURM_ARRAY_TASK_COUNT */
static int shard_from_env(shard_spec *sp) {
    long id = 0, count = 0, min = 0;
    if (env_long("SLURM_ARRAY_TASK_ID", &id, 1) || env_long("SLURM_ARRAY_TASK_COUNT", &count, 1)) return -1;
    int r = env_long("SLURM_ARRAY_TASK_MIN", &min, 0);
    if (r < 0) return -1;
    if (count < 1 || count > SCREEN_MAX_SHARDS || id - min < 0 || id - min >= count) {
        fprintf(stderr,
                "cxrvqa screen: --shard-from-env: SLURM_ARRAY_TASK_ID=%ld, SLURM_ARRAY_TASK_MIN=%ld and "
                "SLURM_ARRAY_TASK_COUNT=%ld do not make a shard K/N with 0 <= K < N <= %d: submit the array as "
                "--array=0-(N-1) with no step\n",
                id, min, count, SCREEN_MAX_SHARDS);
        return -1;
    }
    sp->k = (int)(id - min);
    sp->n = (int)count;
    return 0;
}

/* One path per line (no trailing spaces trimmed: paths may hold them);
 * empty lines and lines starting with '#' skipped. A missing path is an
 * error naming the line: a manifest is a promise of what to screen. */
static int read_manifest(screen *s, const char *file) {
    FILE *f = strcmp(file, "-") ? fopen(file, "r") : stdin;
    if (!f) {
        fprintf(stderr, "cxrvqa screen: --manifest %s: %s\n", file, strerror(errno));
        return -1;
    }
    char *line = NULL;
    size_t cap = 0;
    ssize_t len;
    int lineno = 0, rc = 0;
    while (rc == 0 && (len = getline(&line, &cap, f)) >= 0) {
        lineno++;
        if (len > 0 && line[len - 1] == '\n') line[--len] = '\0';
        if (len > 0 && line[len - 1] == '\r') line[--len] = '\0';
        if (!len || line[0] == '#') continue;
        if ((size_t)len != strlen(line)) {
            fprintf(stderr, "cxrvqa screen: %s:%d: a NUL byte in the path\n", file, lineno);
            rc = -1;
        } else if (len >= PATH_MAX) {
            fprintf(stderr, "cxrvqa screen: %s:%d: path longer than %d bytes\n", file, lineno, PATH_MAX - 1);
            rc = -1;
        } else if (access(line, F_OK) != 0) {
            fprintf(stderr, "cxrvqa screen: %s:%d: %s: %s\n", file, lineno, line, strerror(errno));
            rc = -1;
        } else if (walk(s, line, 0) == -2) {
            fprintf(stderr, "cxrvqa screen: out of memory or more than %d files\n", SCREEN_MAX_FILES);
            rc = -1;
        }
    }
    if (rc == 0 && ferror(f)) {
        fprintf(stderr, "cxrvqa screen: --manifest %s: read error\n", file);
        rc = -1;
    }
    free(line);
    if (f != stdin) fclose(f);
    return rc;
}

/* sorted, duplicates (a file named twice, or in a named folder too) removed */
static void sort_unique(screen *s) {
    if (!s->n_files) return;
    qsort(s->files, (size_t)s->n_files, sizeof *s->files, cmp_str);
    int w = 1;
    for (int i = 1; i < s->n_files; i++) {
        if (!strcmp(s->files[i], s->files[w - 1])) free(s->files[i]);
        else s->files[w++] = s->files[i];
    }
    s->n_files = w;
}

/* keep the files of shard sp (n > 0) */
static void keep_shard(screen *s, const shard_spec *sp) {
    int w = 0;
    for (int i = 0; i < s->n_files; i++) {
        if (shard_of(s->files[i], sp->n) == sp->k) s->files[w++] = s->files[i];
        else free(s->files[i]);
    }
    s->n_files = w;
}

/* ----------------------------------------------------------- progress */

/* seconds, monotonic */
static double now_s(void) { return cxr_now_ms() / 1e3; }

/* Called with s->mu held. A bar with rate and ETA on a terminal, a plain
 * line every 5% otherwise. */
static void progress(screen *s, int final) {
    double el = now_s() - s->t0;
    int done = s->done, n = s->n_tasks;
    double rate = el > 0 ? (done - s->n_skipped) / el : 0;
    double eta = rate > 0 ? (n - done) / rate : 0;
    if (s->tty) {
        int w = 30, f = n ? (int)((double)done / n * w) : w;
        char bar[32];
        for (int i = 0; i < w; i++) bar[i] = i < f ? '#' : '.';
        bar[w] = '\0';
        fprintf(stderr, "\r[%s] %d/%d  answered %d, refused %d, failed %d, earlier %d  %.1f/s  ETA %d:%02d%s", bar,
                done, n, s->n_ok, s->n_refused, s->n_error, s->n_skipped, rate, (int)eta / 60, (int)eta % 60,
                final ? "\n" : "");
    } else {
        int step = n / 20 > 0 ? n / 20 : 1;
        if (final || (n >= 40 && done % step == 0))
            fprintf(stderr, "screen: %d/%d done: %d answered, %d refused, %d failed, %d from earlier runs; %.1f/s, "
                            "ETA %.0f s\n",
                    done, n, s->n_ok, s->n_refused, s->n_error, s->n_skipped, rate, eta);
    }
}

/* ------------------------------------------------------------ the work */

static void finish(screen *s, task *t, int status, cJSON *ans, const char *reason) {
    pthread_mutex_lock(&s->mu);
    t->status = status;
    t->ans = ans;
    if (reason) { /* truncated to fit */
        size_t n = strnlen(reason, sizeof t->reason - 1);
        memcpy(t->reason, reason, n);
        t->reason[n] = '\0';
    }
    s->done++;
    if (t->skipped) s->n_skipped++;
    else if (status == T_OK) s->n_ok++;
    else if (status == T_REFUSED) s->n_refused++;
    else if (status == T_ERROR) s->n_error++;
    progress(s, 0);
    pthread_mutex_unlock(&s->mu);
}

/* A worker's answer x (owned) to task t: answered, refused, an error, or
 * skipped (already in the audit store: filled from its row later). */
static void finish_answer(screen *s, task *t, cJSON *x) {
    int status = T_OK;
    char reason[512] = "";
    if (cxr_json_bool(x, CXR_P_SKIPPED)) {
        t->skipped = 1;
        cJSON_Delete(x);
        finish(s, t, T_SKIPPED, NULL, reason);
        return;
    }
    if (cxr_json_str(x, CXR_P_ERROR)) {
        const char *c = cxr_json_str(x, CXR_P_CODE);
        status = T_ERROR;
        snprintf(reason, sizeof reason, "%s: %s", c ? c : "error", cxr_json_str(x, CXR_P_ERROR));
    } else if (cxr_json_bool(x, CXR_P_REFUSED)) {
        const char *r = cxr_json_str(x, CXR_P_REASON);
        status = T_REFUSED;
        snprintf(reason, sizeof reason, "%s", r ? r : "refused");
    }
    finish(s, t, status, x, reason);
}

/* Send request rq (consumed) with what every screening request carries:
 * skip what the audit already holds, write the SR or not, who asks. */
static int call_worker(screen *s, cJSON *rq, int sr, cxr_msg *resp, char *err, size_t errlen) {
    cJSON_AddBoolToObject(rq, CXR_P_SKIP_IF_DONE, 1);
    cJSON_AddBoolToObject(rq, CXR_P_SR, sr);
    cJSON_AddStringToObject(rq, CXR_P_APP, "cxrvqa-screen");
    if (s->user) cJSON_AddStringToObject(rq, CXR_P_USER, s->user);
    char *js = cJSON_PrintUnformatted(rq);
    cJSON_Delete(rq);
    cxr_msg req = {.json = js, .json_len = js ? strlen(js) : 0};
    int rc = js ? cxr_pool_call(s->pool, &req, resp, err, errlen) : CXR_ERR_NOMEM;
    free(js);
    return rc;
}

/* One worker request per image with all its questions not yet answered:
 * the worker decodes the image and runs the image tower once for them
 * (svc_ask_many), and with SR output the image gets ONE structured report
 * holding every finding; each question keeps its own audit row and key. */
static void run_image(screen *s, int file) {
    const int nq = s->n_q;
    task *ts = &s->tasks[file * nq];
    const char *path = s->files[file];
    int todo[SCREEN_MAX_QUESTIONS], n = 0;
    for (int q = 0; q < nq; q++) {
        int found = 0;
        if (s->audit) {
            char err[CXR_ERRMSG_MAX];
            pthread_mutex_lock(&s->mu);
            int rc = cxr_audit_has_request(s->audit, ts[q].key, &found, err, sizeof err);
            pthread_mutex_unlock(&s->mu);
            if (rc != CXR_OK) found = 0;
        }
        if (found) {
            ts[q].skipped = 1;
            finish(s, &ts[q], T_SKIPPED, NULL, NULL);
        } else {
            todo[n++] = q;
        }
    }
    if (!n) return;
    cJSON *rq = cJSON_CreateObject();
    cJSON_AddStringToObject(rq, CXR_P_OP, CXR_P_OP_ASK);
    cJSON_AddStringToObject(rq, CXR_P_PATH, path);
    cJSON_AddStringToObject(rq, CXR_P_SOURCE, path);
    cJSON *qa = cJSON_AddArrayToObject(rq, CXR_P_QUESTIONS), *ka = cJSON_AddArrayToObject(rq, CXR_P_REQUEST_KEYS);
    for (int i = 0; i < n; i++) {
        cJSON_AddItemToArray(qa, cJSON_CreateString(s->questions[todo[i]]));
        cJSON_AddItemToArray(ka, cJSON_CreateString(ts[todo[i]].key));
    }
    cxr_msg resp = {0};
    char err[CXR_ERRMSG_MAX];
    int rc = call_worker(s, rq, s->sr_dir != NULL, &resp, err, sizeof err);
    cJSON *o = rc == CXR_OK ? cJSON_ParseWithLength(resp.json, resp.json_len) : NULL;
    const cJSON *answers = o ? cJSON_GetObjectItemCaseSensitive(o, CXR_P_ANSWERS) : NULL;
    if (rc != CXR_OK || !cJSON_IsArray(answers) || cJSON_GetArraySize(answers) != n) {
        char why[CXR_ERRMSG_MAX + 32];
        if (rc != CXR_OK) snprintf(why, sizeof why, "%s: %s", cxr_strerror(rc), err);
        else if (o && cxr_json_str(o, CXR_P_ERROR)) snprintf(why, sizeof why, "%s", cxr_json_str(o, CXR_P_ERROR));
        else snprintf(why, sizeof why, "protocol: unreadable worker response");
        for (int i = 0; i < n; i++) { /* the worker died or hung on this file: record it here */
            char aerr[CXR_ERRMSG_MAX];
            pthread_mutex_lock(&s->mu);
            svc_audit_failure(s->audit, "worker-failure", s->user, "cxrvqa-screen", path, s->questions[todo[i]],
                              rc != CXR_OK ? rc : CXR_ERR_PROTOCOL, why, ts[todo[i]].key, aerr, sizeof aerr);
            pthread_mutex_unlock(&s->mu);
            finish(s, &ts[todo[i]], T_ERROR, NULL, why);
        }
        cJSON_Delete(o);
        cxr_msg_free(&resp);
        return;
    }
    if (s->on_sr) s->on_sr(s, o, resp.payload, resp.payload_len);
    for (int i = 0; i < n; i++) {
        task *t = &ts[todo[i]];
        finish_answer(s, t, cJSON_DetachItemFromArray((cJSON *)answers, 0));
    }
    cJSON_Delete(o);
    cxr_msg_free(&resp);
}

static void *driver(void *arg) {
    screen *s = arg;
    const int n = s->n_files; /* an image's questions go together */
    for (;;) {
        pthread_mutex_lock(&s->mu);
        int i = g_stop ? n : s->next++;
        pthread_mutex_unlock(&s->mu);
        if (i >= n) break;
        run_image(s, i);
    }
    return NULL;
}

/* ------------------------------------------- skipped tasks, from the audit */

typedef struct {
    screen *s;
    task **sorted; /* skipped tasks sorted by key */
    int n;
} lookup;

static int cmp_task_key(const void *a, const void *b) {
    return strcmp((*(task *const *)a)->key, (*(task *const *)b)->key);
}

static int on_row(const cxr_audit_row *row, void *ctx) {
    lookup *L = ctx;
    const cxr_audit_record *r = &row->rec;
    if (!r->request_key || (r->outcome != CXR_AUDIT_SUCCESS && r->outcome != CXR_AUDIT_MINOR_FAILURE)) return 0;
    int lo = 0, hi = L->n - 1;
    while (lo <= hi) {
        int mid = (lo + hi) / 2;
        int c = strcmp(r->request_key, L->sorted[mid]->key);
        if (c == 0) {
            task *t = L->sorted[mid];
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "sop_instance_uid", r->sop_uid ? r->sop_uid : "");
            cJSON_AddStringToObject(o, "study_instance_uid", r->study_uid ? r->study_uid : "");
            cJSON_AddStringToObject(o, "accession_number", r->accession ? r->accession : "");
            cJSON_AddStringToObject(o, "patient_id", r->patient_id ? r->patient_id : ""); /* as stored */
            if (r->error_code && r->outcome == CXR_AUDIT_MINOR_FAILURE)
                cJSON_AddStringToObject(o, "reason_code", cxr_strerror(r->error_code));
            if (r->sr_uid) {
                cJSON *sr = cJSON_AddObjectToObject(o, "sr");
                cJSON_AddStringToObject(sr, "sop_instance_uid", r->sr_uid);
                if (r->sr_dest && r->sr_dest[0] == '/') cJSON_AddStringToObject(sr, "path", r->sr_dest);
            }
            cJSON_AddStringToObject(o, "answer", r->answer ? r->answer : "");
            cJSON_AddBoolToObject(o, "refused", r->outcome == CXR_AUDIT_MINOR_FAILURE);
            cJSON *f = r->findings_json ? cJSON_Parse(r->findings_json) : NULL;
            cJSON_AddItemToObject(o, "findings", f ? f : cJSON_CreateArray());
            cJSON_AddNumberToObject(o, "audit_seq", (double)row->seq);
            cJSON_Delete(t->ans);
            t->ans = o;
            t->status = r->outcome == CXR_AUDIT_MINOR_FAILURE ? T_REFUSED : T_OK;
            if (r->reason) snprintf(t->reason, sizeof t->reason, "%s", r->reason);
            return 0;
        }
        if (c < 0) hi = mid - 1;
        else lo = mid + 1;
    }
    return 0;
}

static int fill_skipped(screen *s) {
    lookup L = {.s = s};
    L.sorted = malloc((size_t)(s->n_tasks ? s->n_tasks : 1) * sizeof *L.sorted);
    if (!L.sorted) return -1;
    for (int i = 0; i < s->n_tasks; i++)
        if (s->tasks[i].skipped) L.sorted[L.n++] = &s->tasks[i];
    int rc = 0;
    if (L.n && s->audit) {
        qsort(L.sorted, (size_t)L.n, sizeof *L.sorted, cmp_task_key);
        char err[CXR_ERRMSG_MAX];
        if (cxr_audit_scan(s->audit, NULL, on_row, &L, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "cxrvqa screen: reading earlier answers from the audit: %s\n", err);
            rc = -1;
        }
    }
    free(L.sorted);
    return rc;
}

/* -------------------------------------------------------------- outputs */


static FILE *open_tmp(const char *path, char *tmp, size_t n) {
    snprintf(tmp, n, "%s.tmp.%ld", path, (long)getpid());
    return fopen(tmp, "w");
}

static int close_rename(FILE *f, const char *tmp, const char *path) {
    int bad = ferror(f);
    if (fflush(f) != 0) bad = 1;
    if (!bad && fsync(fileno(f)) != 0) bad = 1;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        unlink(tmp);
        return -1;
    }
    return 0;
}

static int write_csv(screen *s, const char *path) {
    char tmp[PATH_MAX + 32];
    FILE *f = open_tmp(path, tmp, sizeof tmp);
    if (!f) return -1;
    fputs("path,sop_instance_uid,question,finding,probability,threshold,decision,status,reason\n", f);
    for (int i = 0; i < s->n_tasks; i++) {
        task *t = &s->tasks[i];
        if (t->status == T_PENDING) continue;
        const cJSON *o = t->ans;
        const cJSON *sop = o ? cJSON_GetObjectItem(o, "sop_instance_uid") : NULL;
        const cJSON *fa = o ? cJSON_GetObjectItem(o, "findings") : NULL;
        int nf = cJSON_IsArray(fa) ? cJSON_GetArraySize(fa) : 0;
        const char *st = status_name(t->status);
        for (int k = 0; k < (nf ? nf : 1); k++) {
            const cJSON *x = nf ? cJSON_GetArrayItem(fa, k) : NULL;
            char p[32] = "", th[32] = "";
            const cJSON *pv = x ? cJSON_GetObjectItem(x, "probability") : NULL;
            const cJSON *tv = x ? cJSON_GetObjectItem(x, "threshold") : NULL;
            if (cJSON_IsNumber(pv)) snprintf(p, sizeof p, "%.4f", pv->valuedouble);
            if (cJSON_IsNumber(tv)) snprintf(th, sizeof th, "%.4f", tv->valuedouble);
            const cJSON *fn = x ? cJSON_GetObjectItem(x, "finding") : NULL;
            const cJSON *dv = x ? cJSON_GetObjectItem(x, "decision") : NULL;
            cli_csv_field(f, s->files[t->file], 0);
            cli_csv_field(f, cJSON_IsString(sop) ? sop->valuestring : "", 0);
            cli_csv_field(f, s->questions[t->q], 0);
            cli_csv_field(f, cJSON_IsString(fn) ? fn->valuestring : "", 0);
            cli_csv_field(f, p, 0);
            cli_csv_field(f, th, 0);
            cli_csv_field(f, cJSON_IsString(dv) ? dv->valuestring : "", 0);
            cli_csv_field(f, st, 0);
            cli_csv_field(f, t->reason, 1);
        }
    }
    return close_rename(f, tmp, path);
}

static int write_jsonl(screen *s, const char *path) {
    char tmp[PATH_MAX + 32];
    FILE *f = open_tmp(path, tmp, sizeof tmp);
    if (!f) return -1;
    for (int i = 0; i < s->n_tasks; i++) {
        task *t = &s->tasks[i];
        if (t->status == T_PENDING) continue;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "path", s->files[t->file]);
        cJSON_AddStringToObject(o, "question", s->questions[t->q]);
        cJSON_AddStringToObject(o, "status", status_name(t->status));
        cJSON_AddBoolToObject(o, "from_earlier_run", t->skipped);
        cJSON_AddStringToObject(o, "reason", t->reason);
        if (t->ans) cJSON_AddItemReferenceToObject(o, "result", t->ans);
        else cJSON_AddNullToObject(o, "result");
        char *line = cJSON_PrintUnformatted(o);
        if (line) {
            fputs(line, f);
            fputc('\n', f);
        }
        free(line);
        cJSON_Delete(o);
    }
    return close_rename(f, tmp, path);
}

/* ------------------------------------------------- per image: triage.c */

/* The refusal warning, and --worklist / --report when asked. pool (may be
 * NULL: no thumbnails or heatmaps, for the reason in images_note) serves the
 * top cases' images. 0, or 3 when an output could not be written. */
static int triage_outputs(screen *s, const char *worklist, const char *report, cxr_pool *pool,
                          const char *images_note, const char *source) {
    triage_task *tv = calloc((size_t)(s->n_tasks ? s->n_tasks : 1), sizeof *tv);
    triage_list L;
    if (!tv) {
        fprintf(stderr, "cxrvqa screen: out of memory\n");
        return 3;
    }
    for (int i = 0; i < s->n_tasks; i++) {
        const task *t = &s->tasks[i];
        tv[i].file = t->file;
        tv[i].status = t->status == T_OK || t->status == T_SKIPPED ? TRIAGE_OK
                       : t->status == T_REFUSED                    ? TRIAGE_REFUSED
                       : t->status == T_ERROR                      ? TRIAGE_ERROR
                                                                   : TRIAGE_PENDING;
        if (t->skipped && t->status == T_SKIPPED) tv[i].status = TRIAGE_PENDING; /* no audit row found */
        tv[i].ans = t->ans;
        tv[i].reason = t->reason;
    }
    int rc = triage_build(s->files, s->n_files, tv, s->n_tasks, &L);
    free(tv);
    if (rc != 0) {
        fprintf(stderr, "cxrvqa screen: out of memory\n");
        return 3;
    }
    int status = 0;
    triage_warn_refusals(&L, stderr);
    if (worklist && triage_write_worklist(&L, worklist) != 0) {
        fprintf(stderr, "cxrvqa screen: %s: cannot write the worklist: %s\n", worklist, strerror(errno));
        status = 3;
    }
    if (report) {
        if (pool) triage_fetch_images(&L, pool, TRIAGE_REPORT_TOP, "cxrvqa-screen-report", s->user);
        triage_report_info ri = {.title_source = source, .n_questions = s->n_q, .questions = s->questions,
                                 .n_skipped_files = s->n_skipped_files,
                                 .skipped_files = (const char *const *)s->skipped_files, .images_note = images_note};
        char err[CXR_ERRMSG_MAX];
        if (triage_report_write(&L, &ri, report, err, sizeof err) != 0) {
            fprintf(stderr, "cxrvqa screen: %s: %s\n", report, err);
            status = 3;
        }
    }
    triage_free(&L);
    return status;
}

/* ------------------------------------------- --collect: outputs from an audit */

/* One answered (image, question) found in the store. */
typedef struct {
    char key[65];
    char *src, *q;
    int ok;             /* a success or refusal row exists */
    char reason[512];   /* of the last failure row, when none does */
} found;

typedef struct {
    found *v;
    int n, cap;
    int oom;
} found_list;

static int is_key(const char *k) {
    if (!k || strlen(k) != 64) return 0;
    for (const char *c = k; *c; c++)
        if (!((*c >= '0' && *c <= '9') || (*c >= 'a' && *c <= 'f'))) return 0;
    return 1;
}

static int cmp_found(const void *a, const void *b) { return strcmp(((const found *)a)->key, ((const found *)b)->key); }

static int collect_row(const cxr_audit_row *row, void *ctx) {
    found_list *L = ctx;
    const cxr_audit_record *r = &row->rec;
    if (!is_key(r->request_key) || !r->source || !r->question) return 0;
    if (L->n == L->cap) {
        int cap = L->cap ? 2 * L->cap : 1024;
        found *nv = realloc(L->v, (size_t)cap * sizeof *nv);
        if (!nv) {
            L->oom = 1;
            return 1;
        }
        L->v = nv;
        L->cap = cap;
    }
    found *f = &L->v[L->n];
    memset(f, 0, sizeof *f);
    memcpy(f->key, r->request_key, 65);
    f->src = strdup(r->source);
    f->q = strdup(r->question);
    if (!f->src || !f->q) {
        free(f->src);
        free(f->q);
        L->oom = 1;
        return 1;
    }
    f->ok = r->outcome == CXR_AUDIT_SUCCESS || r->outcome == CXR_AUDIT_MINOR_FAILURE;
    if (!f->ok)
        snprintf(f->reason, sizeof f->reason, "%s: %s", r->error_code ? cxr_strerror(r->error_code) : "error",
                 r->reason ? r->reason : "failed");
    L->n++;
    return 0;
}

/* The CSV / JSONL that `screen` writes, rebuilt from every answered
 * (image, question) in db (a shard's store or a merged one): files sorted,
 * questions in the given order (then any others, in the order first seen). */
static int collect(const char *db, const char **qs, int nq, const char *csv, const char *jsonl, const char *worklist,
                   const char *report) {
    cxr_audit_params p = cxr_audit_params_default();
    p.read_only = 1;
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_audit_open(db, &p, &a, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa screen: --collect: %s\n", err);
        return 3;
    }
    found_list L = {0};
    int rc = cxr_audit_scan(a, NULL, collect_row, &L, err, sizeof err);
    int status = 0;
    if (rc != CXR_OK || L.oom) {
        fprintf(stderr, "cxrvqa screen: --collect: %s\n", L.oom ? "out of memory" : err);
        status = 3;
    }
    /* one entry per key: ok wins over failures */
    if (!status && L.n) {
        qsort(L.v, (size_t)L.n, sizeof *L.v, cmp_found);
        int w = 0;
        for (int i = 0; i < L.n; i++) {
            if (w && !strcmp(L.v[w - 1].key, L.v[i].key)) {
                L.v[w - 1].ok |= L.v[i].ok;
                if (!L.v[i].ok) memcpy(L.v[w - 1].reason, L.v[i].reason, sizeof L.v[i].reason);
                free(L.v[i].src);
                free(L.v[i].q);
            } else {
                L.v[w++] = L.v[i];
            }
        }
        L.n = w;
    }
    screen s;
    memset(&s, 0, sizeof s);
    const char *allq[SCREEN_MAX_QUESTIONS * 4];
    int n_allq = 0;
    for (int i = 0; i < nq; i++) allq[n_allq++] = qs[i];
    for (int i = 0; !status && i < L.n; i++) {
        int have = 0;
        for (int j = 0; j < n_allq && !have; j++) have = !strcmp(allq[j], L.v[i].q);
        if (!have && n_allq < (int)(sizeof allq / sizeof *allq)) allq[n_allq++] = L.v[i].q;
        if (!have && n_allq >= (int)(sizeof allq / sizeof *allq)) {
            fprintf(stderr, "cxrvqa screen: --collect: more than %d different questions in %s\n",
                    (int)(sizeof allq / sizeof *allq), db);
            status = 3;
        }
        if (s.n_files == s.cap) {
            int cap = s.cap ? s.cap * 2 : 256;
            char **nf = realloc(s.files, (size_t)cap * sizeof *nf);
            if (!nf) { status = 3; break; }
            s.files = nf;
            s.cap = cap;
        }
        if (!(s.files[s.n_files] = strdup(L.v[i].src))) { status = 3; break; }
        s.n_files++;
    }
    if (!status) sort_unique(&s);
    s.questions = allq;
    s.n_q = n_allq;
    s.n_tasks = s.n_files * n_allq;
    s.audit = a;
    if (!status && !(s.tasks = calloc((size_t)(s.n_tasks ? s.n_tasks : 1), sizeof *s.tasks))) status = 3;
    for (int i = 0; !status && i < L.n; i++) {
        char *const *hit = bsearch(&L.v[i].src, s.files, (size_t)s.n_files, sizeof *s.files, cmp_str);
        int qi = 0;
        while (strcmp(allq[qi], L.v[i].q)) qi++;
        task *t = &s.tasks[(hit - s.files) * n_allq + qi];
        t->file = (int)(hit - s.files);
        t->q = qi;
        memcpy(t->key, L.v[i].key, 65);
        t->skipped = 1;
        if (!L.v[i].ok) {
            t->status = T_ERROR;
            memcpy(t->reason, L.v[i].reason, sizeof t->reason);
        }
    }
    /* the answers themselves, as a resumed screen fills its skipped tasks */
    if (!status && fill_skipped(&s) != 0) status = 3;
    int n_ok = 0, n_ref = 0, n_err = 0;
    for (int i = 0; i < s.n_tasks; i++) {
        n_ok += s.tasks[i].status == T_OK;
        n_ref += s.tasks[i].status == T_REFUSED;
        n_err += s.tasks[i].status == T_ERROR;
    }
    if (!status && csv && write_csv(&s, csv) != 0) { fprintf(stderr, "cxrvqa screen: %s: cannot write\n", csv); status = 3; }
    if (!status && jsonl && write_jsonl(&s, jsonl) != 0) { fprintf(stderr, "cxrvqa screen: %s: cannot write\n", jsonl); status = 3; }
    if (!status)
        fprintf(stderr, "screen: collected from %s: %d image%s x %d question%s: %d answered, %d refused, %d failed\n", db,
                s.n_files, s.n_files == 1 ? "" : "s", n_allq, n_allq == 1 ? "" : "s", n_ok, n_ref, n_err);
    if (!status && (worklist || report))
        status = triage_outputs(&s, worklist, report, NULL,
                                "--collect reads no images: no thumbnails or heatmaps (screen the top cases again to "
                                "see them)",
                                db);
    for (int i = 0; i < s.n_tasks; i++) cJSON_Delete(s.tasks[i].ans);
    free(s.tasks);
    for (int i = 0; i < s.n_files; i++) free(s.files[i]);
    free(s.files);
    for (int i = 0; i < L.n; i++) {
        free(L.v[i].src);
        free(L.v[i].q);
    }
    free(L.v);
    cxr_audit_close(a);
    return status;
}

/* ---------------------------------------------------------------- main */

/* --question, repeatable up to SCREEN_MAX_QUESTIONS */
typedef struct {
    const char **q;
    int n;
} question_list;

static int add_question(void *ctx, const char *v) {
    question_list *l = ctx;
    if (l->n >= SCREEN_MAX_QUESTIONS) {
        fprintf(stderr, "cxrvqa screen: at most %d questions\n", SCREEN_MAX_QUESTIONS);
        return -1;
    }
    l->q[l->n++] = v;
    return 0;
}

static void usage_screen(FILE *f) {
    fprintf(f,
            "usage: cxrvqa screen [--model FILE] [--db FILE [--audit-key KEY]] [--sr-out DIR] [--jobs N] [--question Q]...\n"
            "                     [--csv OUT] [--jsonl OUT] [--worklist OUT.csv] [--report OUT.html] [-v]\n"
            "                     [--timeout S] [--user NAME]\n"
            "                     [--manifest FILE] [--shard K/N | --shard-from-env]\n"
            "                     [--store-scu AET@HOST:PORT [--calling-aet AET]] [PATH...]\n"
            "       cxrvqa screen --list PATH...                (the manifest: one absolute path a line)\n"
            "       cxrvqa screen --collect DB [--csv OUT] [--jsonl OUT] [--worklist OUT] [--report OUT] [--question Q]...\n"
            "\n"
            "  PATH...            files and folders to screen (folders walked, symbolic links not followed):\n"
            "                     DICOM, PNG and JPEG files; other files in a folder are skipped and named\n"
            "  --worklist OUT     one row per image, ranked: score = the highest p / threshold over the image's\n"
            "                     assessable findings (1 = the operating point); then unscored, refused, failed\n"
            "  --report OUT       a self-contained HTML report: counts per finding and decision, refusals by\n"
            "                     reason, histograms, the ranked worklist with thumbnails and heatmaps of the top %d\n"
            "  -v, --verbose      name every skipped file\n"
            "  --manifest FILE    also screen the paths in FILE, one a line ('-': stdin; '#' comments)\n"
            "  --shard K/N        only the images of shard K of N (0 <= K < N): those whose absolute path's\n"
            "                     SHA-256, first 8 bytes big-endian, is K modulo N\n"
            "  --shard-from-env   K and N from a Slurm array task: SLURM_ARRAY_TASK_ID - SLURM_ARRAY_TASK_MIN\n"
            "                     and SLURM_ARRAY_TASK_COUNT\n"
            "  --store-scu AET@HOST:PORT\n"
            "                     send each image's SR (needs --sr-out) to that DICOM node by C-STORE, as\n"
            "                     --calling-aet (default CXRVQA); %d attempts 1 s and 2 s apart, an audit row\n"
            "                     each; plain TCP (a TLS peer needs a TLS proxy in front of it)\n"
            "  --collect DB       write --csv / --jsonl from the answers in audit store DB (one shard's,\n"
            "                     or one merged by `cxrvqa audit merge`) instead of screening\n"
            "  --audit-key KEY    the audit chain's HMAC key (keyed store; passed on to the workers)\n"
            "A rerun with the same --db skips every (image, question) that database already answered.\n",
            TRIAGE_REPORT_TOP, STORE_ATTEMPTS);
}

int cli_screen(int argc, char **argv) {
    const char *model = NULL, *db = NULL, *sr_dir = NULL, *csv = NULL, *jsonl = NULL, *user = NULL, *uid_root = NULL;
    int jobs = 0, timeout_s = 60, list = 0, from_env = 0, verbose = 0;
    const char *worklist = NULL, *report = NULL, *audit_key = NULL;
    const char *manifest = NULL, *collect_db = NULL, *store_spec = NULL, *calling = NULL;
    shard_spec shard = {0, 0};
    screen s;
    memset(&s, 0, sizeof s);
    const char *qs[SCREEN_MAX_QUESTIONS];
    int nq = 0;
    const char **paths = calloc((size_t)argc + 1, sizeof *paths);
    int np = 0;
    if (!paths) return 1;
    question_list ql = {qs, 0};
    const cli_opt opts[] = {CLI_OPT_STR("--model", &model),       CLI_OPT_STR("--db", &db),
                            CLI_OPT_STR("--sr-out", &sr_dir),     CLI_OPT_STR("--csv", &csv),
                            CLI_OPT_STR("--jsonl", &jsonl),       CLI_OPT_STR("--user", &user),
                            CLI_OPT_STR("--uid-root", &uid_root), CLI_OPT_INT("--jobs", &jobs),
                            CLI_OPT_INT("--timeout", &timeout_s), CLI_OPT_CALL("--question", add_question, &ql),
                            CLI_OPT_FLAG("--list", &list),        CLI_OPT_STR("--manifest", &manifest),
                            CLI_OPT_CALL("--shard", parse_shard, &shard), CLI_OPT_FLAG("--shard-from-env", &from_env),
                            CLI_OPT_STR("--collect", &collect_db), CLI_OPT_STR("--worklist", &worklist),
                            CLI_OPT_STR("--report", &report),     CLI_OPT_FLAG("-v", &verbose),
                            CLI_OPT_FLAG("--verbose", &verbose),  CLI_OPT_STR("--store-scu", &store_spec),
                            CLI_OPT_STR("--calling-aet", &calling), CLI_OPT_STR("--audit-key", &audit_key),
                            CLI_OPT_END};
    int arc = cli_args("screen", opts, argc, argv, paths, argc, &np, usage_screen);
    nq = ql.n;
    if (arc != CLI_ARGS_OK) {
        free(paths);
        return arc == CLI_ARGS_HELP ? 0 : 2;
    }
    if (!nq)
        for (size_t i = 0; i < sizeof DEFAULT_QUESTIONS / sizeof *DEFAULT_QUESTIONS; i++) qs[nq++] = DEFAULT_QUESTIONS[i];
    const char *conflict = list && (manifest || collect_db || shard.n || from_env) ? "--list takes only PATH..."
                           : collect_db && (np || manifest || shard.n || from_env) ? "--collect reads no images: no PATH, --manifest or --shard"
                           : shard.n && from_env ? "--shard and --shard-from-env exclude each other"
                           : NULL;
    if (conflict) {
        fprintf(stderr, "cxrvqa screen: %s\n", conflict);
        free(paths);
        return 2;
    }
    if (collect_db) {
        free(paths);
        if (!csv && !jsonl && !worklist && !report) {
            fprintf(stderr, "cxrvqa screen: --collect: give --csv, --jsonl, --worklist and/or --report OUT\n");
            return 2;
        }
        return collect(collect_db, qs, nq, csv, jsonl, worklist, report);
    }
    if (list) { /* the manifest of PATH...: no model, no database */
        int bad = !np;
        if (!np) fprintf(stderr, "cxrvqa screen: --list: name the files and folders to list\n");
        for (int i = 0; i < np && !bad; i++)
            if (walk(&s, paths[i], 0) == -2) { fprintf(stderr, "cxrvqa screen: out of memory or more than %d files\n", SCREEN_MAX_FILES); bad = 1; }
        free(paths);
        sort_unique(&s);
        for (int i = 0; i < s.n_files && !bad; i++) {
            if (strchr(s.files[i], '\n') || strchr(s.files[i], '\r')) {
                fprintf(stderr, "cxrvqa screen: %s: a line break in the path: left out of the manifest\n", s.files[i]);
                continue;
            }
            puts(s.files[i]);
        }
        for (int i = 0; i < s.n_files; i++) free(s.files[i]);
        free(s.files);
        free_skipped(&s);
        if (fflush(stdout) != 0) { fprintf(stderr, "cxrvqa screen: cannot write the list\n"); return 3; }
        return bad ? 2 : 0;
    }
    if (from_env && shard_from_env(&shard) != 0) {
        free(paths);
        return 2;
    }
    store_ctx store = {.spec = store_spec, .calling = calling};
    if (store_spec) {
        char perr[CXR_ERRMSG_MAX];
        const char *why = !sr_dir ? "--store-scu sends the SRs --sr-out writes: give --sr-out DIR too" : NULL;
        if (!why && cxr_scu_peer_parse(store_spec, &store.peer, perr, sizeof perr) != CXR_OK) why = perr;
        if (!why && calling && (!*calling || strlen(calling) > 16)) why = "--calling-aet: 1..16 characters";
        if (why) {
            fprintf(stderr, "cxrvqa screen: %s\n", why);
            free(paths);
            return 2;
        }
        s.on_sr = store_sr;
        s.on_sr_ctx = &store;
    }
    if ((!np && !manifest) || jobs < 0 || timeout_s <= 0) {
        usage_screen(stderr);
        free(paths);
        return 2;
    }
    if (!jobs) {
        long n = sysconf(_SC_NPROCESSORS_ONLN);
        jobs = n > 0 ? (int)n : 1;
    }
    if (!model) model = cli_default_model();
    char model_abs[PATH_MAX], db_buf[PATH_MAX], sr_abs[PATH_MAX], self[PATH_MAX];
    if (!realpath(model, model_abs)) {
        fprintf(stderr, "cxrvqa screen: %s: %s\n", model, strerror(errno));
        free(paths);
        return 1;
    }
    if (!db) db = cxr_audit_default_path(db_buf, sizeof db_buf);
    if (!db) { fprintf(stderr, "cxrvqa screen: give --db FILE\n"); free(paths); return 2; }
    if (sr_dir) {
        mkdir(sr_dir, 0755);
        if (!realpath(sr_dir, sr_abs)) { fprintf(stderr, "cxrvqa screen: %s: %s\n", sr_dir, strerror(errno)); free(paths); return 3; }
        sr_dir = sr_abs;
    }
    ssize_t sl = readlink("/proc/self/exe", self, sizeof self - 1);
    if (sl <= 0) { fprintf(stderr, "cxrvqa screen: cannot find my own executable\n"); free(paths); return 1; }
    self[sl] = '\0';

    /* the files and tasks */
    int np_given = np;
    for (int i = 0; i < np; i++)
        if (walk(&s, paths[i], 0) == -2) { fprintf(stderr, "cxrvqa screen: out of memory\n"); free(paths); return 1; }
    free(paths);
    if (manifest && read_manifest(&s, manifest) != 0) {
        for (int i = 0; i < s.n_files; i++) free(s.files[i]);
        free(s.files);
        return 2;
    }
    sort_unique(&s);
    if (verbose || !s.n_files) print_skipped(&s, verbose);
    if (!s.n_files) { /* a folder of .txt or an empty one: nothing to do is a mistake, not success */
        fprintf(stderr, "cxrvqa screen: no images to screen: %s\n",
                s.n_skipped_files ? "every file found is skipped (DICOM, PNG and JPEG files are read)"
                                  : "no files found in the paths given");
        free(s.files);
        free_skipped(&s);
        return 2;
    }
    if (shard.n) {
        int all = s.n_files;
        keep_shard(&s, &shard);
        fprintf(stderr, "screen: shard %d/%d: %d of %d image%s\n", shard.k, shard.n, s.n_files, all, all == 1 ? "" : "s");
    }
    s.questions = qs;
    s.n_q = nq;
    s.n_tasks = s.n_files * nq;
    s.tasks = calloc((size_t)(s.n_tasks ? s.n_tasks : 1), sizeof *s.tasks);
    if (!s.tasks) return 1;
    char err[CXR_ERRMSG_MAX], key_abs[PATH_MAX];
    if (audit_key) { /* the workers get it as they get the model: absolute */
        if (!realpath(audit_key, key_abs)) snprintf(key_abs, sizeof key_abs, "%s", audit_key); /* open says why */
        audit_key = key_abs;
    }
    cxr_audit_params ap = cxr_audit_params_default();
    ap.chain_key_file = audit_key;
    int rc = cxr_audit_open(db, &ap, &s.audit, err, sizeof err);
    if (rc != CXR_OK) { /* a keyed store without its key lands here too: nothing was answered */
        fprintf(stderr, "cxrvqa screen: audit database %s: %s\n", db, err);
        for (int i = 0; i < s.n_files; i++) free(s.files[i]);
        free(s.files);
        free(s.tasks);
        return 3;
    }
    /* one batch run per database at a time, and not before the workers a
       killed run left behind have finished what they were answering: they
       hold this lock shared while they serve a request */
    char lockpath[PATH_MAX];
    snprintf(lockpath, sizeof lockpath, "%s.screen.lock", db);
    int lockfd = open(lockpath, O_RDWR | O_CREAT | O_CLOEXEC, 0600);
    if (lockfd < 0 || flock(lockfd, LOCK_EX) != 0 || flock(lockfd, LOCK_SH) != 0) {
        fprintf(stderr, "cxrvqa screen: %s: %s\n", lockpath, strerror(errno));
        cxr_audit_close(s.audit);
        return 3;
    }
    if (sr_dir) { /* a killed run may have left reports between write and publish */
        int mv = 0, rm = 0;
        if (svc_recover_pending(sr_dir, s.audit, &mv, &rm, err, sizeof err) != CXR_OK)
            fprintf(stderr, "cxrvqa screen: cannot check %s/.pending: %s\n", sr_dir, err);
        else if (mv || rm)
            fprintf(stderr, "screen: interrupted run: %d recorded report%s moved into place, %d unrecorded removed\n",
                    mv, mv == 1 ? "" : "s", rm);
    }
    /* the model's identity is part of every key: a new model answers again */
    char model_sha[65] = "";
    if (cxr_file_sha256(model_abs, model_sha) != CXR_OK) {
        fprintf(stderr, "cxrvqa screen: %s: cannot read the model\n", model_abs);
        cxr_audit_close(s.audit);
        return 1;
    }
    for (int f = 0; f < s.n_files; f++)
        for (int q = 0; q < nq; q++) {
            task *t = &s.tasks[f * nq + q];
            t->file = f;
            t->q = q;
            const char *parts[] = {s.files[f], model_sha, qs[q], NULL};
            cxr_sha256_parts(parts, t->key);
        }

    /* the workers */
    const char *wargv[20];
    int k = 0;
    wargv[k++] = self;
    wargv[k++] = "worker";
    wargv[k++] = "--model";
    wargv[k++] = model_abs;
    wargv[k++] = "--db";
    wargv[k++] = db;
    if (audit_key) { wargv[k++] = "--audit-key"; wargv[k++] = audit_key; }
    wargv[k++] = "--threads";
    wargv[k++] = "1";
    if (sr_dir) { wargv[k++] = "--sr-out"; wargv[k++] = sr_dir; }
    if (uid_root) { wargv[k++] = "--uid-root"; wargv[k++] = uid_root; }
    wargv[k++] = "--lock";
    wargv[k++] = lockpath;
    wargv[k] = NULL;
    cxr_pool_params pp = cxr_pool_params_default();
    pp.argv = wargv;
    pp.n_workers = jobs < s.n_tasks ? jobs : (s.n_tasks > 0 ? s.n_tasks : 1);
    pp.timeout_ms = timeout_s * 1000;
#if defined(__SANITIZE_ADDRESS__)
    pp.mem_limit_mb = 0; /* ASan reserves terabytes of address space: RLIMIT_AS would stop it */
#endif
    if (s.n_tasks && (rc = cxr_pool_open(&pp, &s.pool, err, sizeof err)) != CXR_OK) {
        fprintf(stderr, "cxrvqa screen: cannot start workers: %s\n", err);
        cxr_audit_close(s.audit);
        return 1;
    }
    s.user = user;
    s.sr_dir = sr_dir;
    s.tty = isatty(2);
    pthread_mutex_init(&s.mu, NULL);
    struct sigaction sa;
    memset(&sa, 0, sizeof sa);
    sa.sa_handler = on_signal;
    sigaction(SIGINT, &sa, NULL);
    sigaction(SIGTERM, &sa, NULL);
    signal(SIGPIPE, SIG_IGN);

    s.t0 = now_s();
    int nthreads = pp.n_workers;
    pthread_t th[256];
    if (nthreads > 256) nthreads = 256;
    int started = 0;
    for (int i = 0; i < nthreads; i++)
        if (pthread_create(&th[i], NULL, driver, &s) == 0) started++;
    if (!started) driver(&s);
    for (int i = 0; i < started; i++) pthread_join(th[i], NULL);
    double el = now_s() - s.t0;
    pthread_mutex_lock(&s.mu);
    progress(&s, 1);
    pthread_mutex_unlock(&s.mu);

    int status = 0;
    if (fill_skipped(&s) != 0) status = 3;
    char source[64];
    snprintf(source, sizeof source, "%d path%s given", np_given, np_given == 1 ? "" : "s");
    if (!status && !g_stop) status = triage_outputs(&s, worklist, report, s.pool, NULL, manifest ? manifest : source);
    cxr_pool_close(s.pool);
    if (csv && write_csv(&s, csv) != 0) { fprintf(stderr, "cxrvqa screen: %s: cannot write\n", csv); status = 3; }
    if (jsonl && write_jsonl(&s, jsonl) != 0) { fprintf(stderr, "cxrvqa screen: %s: cannot write\n", jsonl); status = 3; }
    int answered = s.n_ok + s.n_refused;
    fprintf(stderr,
            "screen: %d image%s x %d question%s = %d tasks: %d answered, %d refused, %d failed, %d from earlier "
            "runs, %d not done; %.1f s, %.2f images/s with %d worker%s\n",
            s.n_files, s.n_files == 1 ? "" : "s", nq, nq == 1 ? "" : "s", s.n_tasks, s.n_ok, s.n_refused, s.n_error,
            s.n_skipped, s.n_tasks - s.done, el, el > 0 ? (answered + s.n_error) / (double)nq / el : 0.0,
            pp.n_workers, pp.n_workers == 1 ? "" : "s");
    if (store_spec) {
        fprintf(stderr, "screen: SRs sent to %s: %d, not sent: %d (audit rows: event forward)\n", store_spec,
                store.sent, store.failed);
        if (store.failed && !status) status = 1;
    }
    if (!verbose) print_skipped(&s, 0);
    if (worklist && !status) fprintf(stderr, "screen: worklist: %s\n", worklist);
    if (report && !status) fprintf(stderr, "screen: report: %s\n", report);
    if (s.n_error && !status) status = 1;
    if (g_stop && !status) status = 130;
    for (int i = 0; i < s.n_tasks; i++) cJSON_Delete(s.tasks[i].ans);
    free(s.tasks);
    for (int i = 0; i < s.n_files; i++) free(s.files[i]);
    free(s.files);
    free_skipped(&s);
    cxr_audit_close(s.audit);
    close(lockfd);
    pthread_mutex_destroy(&s.mu);
    return status;
}
