/*
 * cli_ask.c — the answering commands of the `cxrvqa` executable: `ask` (one
 * question, in process), `worker` (the supervised process that serves the
 * Orthanc plugin and `screen` over the framed channel) and `screen` (batch:
 * files and folders through a pool of workers, resumable from the audit
 * database). It owns argument parsing, output files and progress; answering
 * and recording are service.c's.
 */
#include "cli_common.h"
#include "cxr_sr.h"
#include "service.h"
#include "worker.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <pthread.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Write bytes to path atomically (temporary file in the same folder, then
 * rename). Returns 0 or -1 with errno. */
static int write_atomic(const char *path, const void *data, size_t len) {
    char tmp[PATH_MAX];
    if (snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid()) >= (int)sizeof tmp) {
        errno = ENAMETOOLONG;
        return -1;
    }
    int fd = open(tmp, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0644);
    if (fd < 0) return -1;
    if (svc_write_all(fd, data, len) != 0) {
        int e = errno;
        close(fd);
        unlink(tmp);
        errno = e;
        return -1;
    }
    if (fsync(fd) != 0 || close(fd) != 0 || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

typedef struct {
    const char *model, *db, *sr_dir, *uid_root, *user, *app;
    int no_audit, threads, strict;
} common_opts;

/* Options every answering command shares: 1 when argv[*i] was one (its
 * value consumed), 0 when not, -1 when its value is missing. */
static int common_opt(common_opts *c, int argc, char **argv, int *i) {
    const char *a = argv[*i];
    const char **slot = NULL;
    if (!strcmp(a, "--no-audit")) { c->no_audit = 1; return 1; }
    if (!strcmp(a, "--strict")) { c->strict = 1; return 1; }
    if (!strcmp(a, "--model")) slot = &c->model;
    else if (!strcmp(a, "--db")) slot = &c->db;
    else if (!strcmp(a, "--sr-out")) slot = &c->sr_dir;
    else if (!strcmp(a, "--uid-root")) slot = &c->uid_root;
    else if (!strcmp(a, "--user")) slot = &c->user;
    else if (!strcmp(a, "--app")) slot = &c->app;
    else if (strcmp(a, "--threads")) return 0;
    if (*i + 1 >= argc) return -1;
    if (slot) *slot = argv[++*i];
    else c->threads = atoi(argv[++*i]);
    return 1;
}

static void close_service(svc *s) {
    cxr_audit_close(s->audit);
    cxr_vqa_close(s->vqa);
}

/* Open model and audit store as the options say; prints the error. */
static int open_service(const common_opts *c, svc *s, char *dbbuf, size_t dblen) {
    memset(s, 0, sizeof *s);
    char err[CXR_ERRMSG_MAX];
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = c->model ? c->model : cli_default_model();
    p.threads = c->threads;
    p.strict_domain = c->strict;
    int rc = cxr_vqa_open(&p, &s->vqa, err, sizeof err);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s: %s\n", p.model_path, err[0] ? err : cxr_strerror(rc));
        return 1;
    }
    if (!c->no_audit) {
        const char *db = c->db ? c->db : cxr_audit_default_path(dbbuf, dblen);
        if (!db) {
            fprintf(stderr, "cxrvqa: no audit database: give --db FILE (or set CXRVQA_DB)\n");
            cxr_vqa_close(s->vqa);
            return 3;
        }
        if (db != dbbuf) snprintf(dbbuf, dblen, "%s", db);
        rc = cxr_audit_open(dbbuf, NULL, &s->audit, err, sizeof err);
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: audit database %s: %s\n", dbbuf, err);
            cxr_vqa_close(s->vqa);
            return 3;
        }
        s->audit_path = dbbuf;
    }
    if (c->sr_dir && mkdir(c->sr_dir, 0755) != 0 && errno != EEXIST) {
        fprintf(stderr, "cxrvqa: %s: %s\n", c->sr_dir, strerror(errno));
        close_service(s);
        return 3;
    }
    s->sr_dir = c->sr_dir;
    s->uid_root = c->uid_root;
    s->user = c->user;
    s->application = c->app;
    return 0;
}


/* ================================================================== ask */

static void print_answer_text(const cxr_answer *a, const svc_result *r) {
    printf("%s\n", a->text);
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        printf("  %-22s %-9s p=%.3f  threshold %.3f  band %.3f-%.3f%s%s%s\n", f->finding,
               cxr_decision_name(f->decision), f->probability, f->threshold, f->uncertain_low, f->uncertain_high,
               f->calibrated ? "" : "  (uncalibrated)", f->side[0] ? "  side " : "", f->side);
    }
    for (int i = 0; i < a->n_warnings; i++) printf("  warning: %s\n", a->warnings[i]);
    if (r->have_sr) printf("  structured report: %s\n", r->sr.path[0] ? r->sr.path : r->sr.sop_instance_uid);
    printf("  model %s %s (sha256 %.12s…), %.0f ms. Research model, not a diagnostic device.\n", a->model.name,
           a->model.version, a->model.sha256, a->total_ms);
}

int cli_ask(int argc, char **argv) {
    common_opts c = {0};
    const char *heatmap = NULL, *heatmap_finding = NULL, *lang = NULL, *file = NULL, *question = NULL;
    int json = 0, sr_html = 0;
    for (int i = 0; i < argc; i++) {
        int k = common_opt(&c, argc, argv, &i);
        if (k < 0) { fprintf(stderr, "cxrvqa ask: %s needs a value\n", argv[i]); return 2; }
        if (k) continue;
        const char *a = argv[i];
        if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--sr-html")) sr_html = 1;
        else if (!strcmp(a, "--heatmap") && i + 1 < argc) heatmap = argv[++i];
        else if (!strcmp(a, "--heatmap-finding") && i + 1 < argc) heatmap_finding = argv[++i];
        else if (!strcmp(a, "--lang") && i + 1 < argc) lang = argv[++i];
        else if (a[0] == '-' && a[1] == '-') { fprintf(stderr, "cxrvqa ask: unknown option %s\n", a); return 2; }
        else if (!file) file = a;
        else if (!question) question = a;
        else { fprintf(stderr, "cxrvqa ask: unexpected argument '%s'\n", a); return 2; }
    }
    if (!file || !question) {
        fprintf(stderr, "usage: cxrvqa ask [--model FILE] [--json] [--heatmap OUT.png] [--heatmap-finding NAME]\n"
                        "                  [--lang en|zh] [--sr-out DIR [--sr-html]] [--uid-root ROOT]\n"
                        "                  [--db FILE | --no-audit] [--user NAME] [--strict] [--threads N]\n"
                        "                  FILE \"QUESTION\"\n");
        return 2;
    }
    if (lang && strcmp(lang, "en") && strcmp(lang, "zh")) {
        fprintf(stderr, "cxrvqa ask: --lang must be en or zh\n");
        return 2;
    }
    svc s;
    char db[PATH_MAX];
    int orc = open_service(&c, &s, db, sizeof db);
    if (orc) return orc;
    if (c.no_audit) fprintf(stderr, "cxrvqa: warning: --no-audit: this answer is not recorded\n");
    cxr_ask_options o = cxr_ask_options_default();
    o.lang = lang;
    o.heatmap = heatmap != NULL;
    o.heatmap_finding = heatmap_finding;
    if (!s.application) s.application = "cxrvqa-cli";
    svc_result r;
    int rc = svc_ask(&s, file, NULL, 0, file, question, &o, NULL, &r);
    int status = 0;
    if (rc == CXR_ERR_AUDIT) {
        fprintf(stderr, "cxrvqa: %s: %s\n", file, r.err);
        status = 3;
    } else {
        if (r.a && r.a->heatmap_png && heatmap) {
            if (write_atomic(heatmap, r.a->heatmap_png, r.a->heatmap_png_len) != 0) {
                fprintf(stderr, "cxrvqa: %s: cannot write heatmap: %s\n", heatmap, strerror(errno));
                status = 3;
            }
        } else if (heatmap && rc == CXR_OK && r.a && !r.a->refused) {
            fprintf(stderr, "cxrvqa: %s: no heatmap for this answer\n", heatmap);
        }
        if (sr_html && r.have_sr && r.sr.path[0]) { /* for viewers that cannot display SR */
            char html[PATH_MAX + 8], herr[CXR_ERRMSG_MAX];
            size_t n = strlen(r.sr.path);
            snprintf(html, sizeof html, "%.*s.html", (int)(n > 4 ? n - 4 : n), r.sr.path);
            if (cxr_sr_to_html(r.sr.path, html, herr, sizeof herr) != CXR_OK) {
                fprintf(stderr, "cxrvqa: %s: %s\n", html, herr);
                status = 3;
            }
        }
        if (json && r.json) puts(r.json);
        else if (r.a && rc == CXR_OK) print_answer_text(r.a, &r);
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: %s: %s\n", file, r.err);
            /* the answer stood but an output (SR) failed: 3; the image or model failed: 1 */
            if (!status) status = r.a && r.a->error_code == CXR_OK ? 3 : 1;
        }
    }
    svc_result_free(&r);
    close_service(&s);
    return status;
}

/* =============================================================== worker */

typedef struct {
    svc *s;
    const char *sr_dir;
    int lock_fd;   /* --lock: held shared while a request is served (see cli_screen.c) */
    const char *app; /* --app, or "cxrvqa-worker": when a request names none */
    int fd;          /* the channel (--fd): a tainted worker answers on it, then exits */
} worker_ctx;

static int fail_json(cxr_msg *resp, const char *code, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "error", msg);
    cJSON_AddStringToObject(o, "code", code);
    resp->json = cJSON_PrintUnformatted(o);
    resp->json_len = resp->json ? strlen(resp->json) : 0;
    cJSON_Delete(o);
    return CXR_OK;
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(o, k);
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int jbool(const cJSON *o, const char *k) { return cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(o, k)); }

/* does buf[0..n) contain the NUL-terminated marker m? */
static int has_marker(const uint8_t *buf, size_t n, const char *m) {
    size_t k = strlen(m);
    for (size_t i = 0; k && i + k <= n; i++)
        if (buf[i] == (uint8_t)m[0] && !memcmp(buf + i, m, k)) return 1;
    return 0;
}

/* Test-only hook (CXRVQA_TEST_POISON): a request whose question, or whose
 * image (the payload, or the first MiB of the file), carries the marker
 * __crash__ or __hang__ crashes or hangs the worker, for the supervision
 * tests. A poisoned file (the marker in, say, Image Comments) thus takes down
 * every worker that reads it, whatever the question. A question with
 * __leak__ leaks one 4242-byte block: the leak-checked integration test's
 * proof that a worker's leak would be seen. */
static void *volatile leak_sink;

static void poison(const char *question, const char *path, const uint8_t *payload, size_t payload_len) {
    if (!getenv("CXRVQA_TEST_POISON")) return;
    uint8_t *head = NULL;
    size_t n = 0;
    if (!payload_len && path) {
        FILE *f = fopen(path, "rb");
        if (f && (head = malloc(1u << 20))) n = fread(head, 1, 1u << 20, f);
        if (f) fclose(f);
        payload = head;
        payload_len = n;
    }
    int crash = (question && strstr(question, "__crash__")) || has_marker(payload, payload_len, "__crash__");
    int hang = (question && strstr(question, "__hang__")) || has_marker(payload, payload_len, "__hang__");
    free(head);
    if (question && strstr(question, "__leak__"))
        for (int i = 0; i < 2; i++) leak_sink = malloc(4242); /* the first is lost */
    if (crash) raise(SIGSEGV);
    if (hang)
        for (;;) pause();
}

static int worker_handle_locked(void *ctx, const cxr_msg *req, cxr_msg *resp);

/* A batch driver that restarts after being killed waits (flock LOCK_EX on
 * the lock file) until the workers it left behind have finished the request
 * they were serving, so no request is answered twice. */
static int worker_handle(void *ctx, const cxr_msg *req, cxr_msg *resp) {
    worker_ctx *w = ctx;
    if (w->lock_fd >= 0)
        while (flock(w->lock_fd, LOCK_SH) != 0 && errno == EINTR) {}
    int rc = worker_handle_locked(ctx, req, resp);
    w->s->user = NULL; /* they pointed into the request's JSON, now freed */
    w->s->application = w->app;
    if (w->lock_fd >= 0) flock(w->lock_fd, LOCK_UN);
    if (rc == CXR_OK && cxr_decode_tainted()) {
        /* a decoder abandoned at its deadline may still be running: answer
           (the audit row is written), say so, then exit; the pool replaces
           this worker before giving it another request (worker.h) */
        size_t jl = resp->json ? (resp->json_len ? resp->json_len : strlen(resp->json)) : 0;
        char *j2 = jl && resp->json[jl - 1] == '}' ? malloc(jl + 32) : NULL;
        if (j2) {
            memcpy(j2, resp->json, jl - 1);
            jl = (size_t)snprintf(j2 + jl - 1, 32, "%s\"worker_exiting\":true}", jl > 2 ? "," : "") + jl - 1;
        }
        cxr_frame_write(w->fd, j2 ? j2 : resp->json, jl, resp->payload, resp->payload_len);
        fprintf(stderr, "cxrvqa worker: a decode was abandoned at its deadline; exiting after the response\n");
        _exit(0);
    }
    return rc;
}

static int worker_handle_locked(void *ctx, const cxr_msg *req, cxr_msg *resp) {
    worker_ctx *w = ctx;
    svc *s = w->s;
    cJSON *q = cJSON_ParseWithLength(req->json, req->json_len);
    if (!q || !cJSON_IsObject(q)) {
        cJSON_Delete(q);
        return fail_json(resp, "protocol", "request is not a JSON object");
    }
    const char *op = jstr(q, "op");
    if (!op) op = "ask";
    if (!strcmp(op, "ping")) {
        cJSON_Delete(q);
        resp->json = strdup("{\"ok\":true}");
        resp->json_len = resp->json ? strlen(resp->json) : 0;
        return CXR_OK;
    }
    if (strcmp(op, "ask") && strcmp(op, "heatmap")) {
        cJSON_Delete(q);
        return fail_json(resp, "bad-argument", "unknown op (ask, heatmap, ping)");
    }
    const char *question = jstr(q, "question"), *path = jstr(q, "path"), *finding = jstr(q, "finding");
    char qbuf[256];
    int is_heatmap = !strcmp(op, "heatmap");
    if (!question && is_heatmap && finding) {
        snprintf(qbuf, sizeof qbuf, "Is there %s?", finding);
        for (char *c = qbuf; *c; c++)
            if (*c == '_') *c = ' ';
        question = qbuf;
    }
    if (!question) {
        cJSON_Delete(q);
        return fail_json(resp, "bad-argument", "request has no question");
    }
    if (!path && !req->payload_len) {
        cJSON_Delete(q);
        return fail_json(resp, "bad-argument", "request has neither a path nor image bytes");
    }
    poison(question, path, req->payload, req->payload_len);
    cxr_ask_options o = cxr_ask_options_default();
    const char *lang = jstr(q, "lang");
    o.lang = lang && (!strcmp(lang, "en") || !strcmp(lang, "zh")) ? lang : NULL;
    o.heatmap = is_heatmap || jbool(q, "heatmap");
    o.heatmap_finding = finding;
    /* per-request identity and outputs */
    /* per request; these point into q, so they are reset before q is freed */
    s->user = jstr(q, "user");
    s->application = jstr(q, "app") ? jstr(q, "app") : w->app;
    int want_sr = jbool(q, "sr") && !is_heatmap;
    s->sr_buffer = want_sr && !w->sr_dir;
    s->sr_dir = want_sr ? w->sr_dir : NULL;
    char key[65] = "";
    const char *rk = jstr(q, "request_key");
    const char *sop = jstr(q, "sop_instance_uid");
    if (!rk && sop && *sop) {
        const char *parts[] = {sop, cxr_vqa_model_id(s->vqa)->sha256, question, NULL};
        svc_request_key(key, parts);
        rk = key;
    }
    if (rk && (jbool(q, "skip_if_done")) && s->audit) {
        int found = 0;
        char err[CXR_ERRMSG_MAX];
        if (cxr_audit_has_request(s->audit, rk, &found, err, sizeof err) == CXR_OK && found) {
            cJSON *o2 = cJSON_CreateObject();
            cJSON_AddBoolToObject(o2, "skipped", 1);
            cJSON_AddStringToObject(o2, "request_key", rk);
            resp->json = cJSON_PrintUnformatted(o2);
            resp->json_len = resp->json ? strlen(resp->json) : 0;
            cJSON_Delete(o2);
            cJSON_Delete(q);
            return CXR_OK;
        }
    }
    const char *source = jstr(q, "source");
    svc_result r;
    int rc = svc_ask(s, path, req->payload, req->payload_len, source ? source : path, question, &o, rk, &r);
    if (rc == CXR_ERR_AUDIT || !r.json) {
        fail_json(resp, cxr_strerror(rc), r.err[0] ? r.err : cxr_strerror(rc));
        svc_result_free(&r);
        cJSON_Delete(q);
        return CXR_OK;
    }
    cJSON *out = cJSON_Parse(r.json);
    if (!out) {
        svc_result_free(&r);
        cJSON_Delete(q);
        return fail_json(resp, "out-of-memory", "out of memory");
    }
    if (rk) cJSON_AddStringToObject(out, "request_key", rk);
    if (rc != CXR_OK && !cJSON_GetObjectItem(out, "error")) {
        cJSON_AddStringToObject(out, "error", r.err);
        cJSON_AddStringToObject(out, "code", cxr_strerror(rc));
    }
    /* attachments: the SR bytes and the heatmap, concatenated in order */
    size_t n_sr = r.have_sr && r.sr.buf ? r.sr.len : 0;
    size_t n_hm = r.a && r.a->heatmap_png ? r.a->heatmap_png_len : 0;
    cJSON *att = cJSON_AddArrayToObject(out, "attachments");
    if (n_sr) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", "sr");
        cJSON_AddNumberToObject(x, "bytes", (double)n_sr);
        cJSON_AddItemToArray(att, x);
    }
    if (n_hm) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, "name", "heatmap");
        cJSON_AddNumberToObject(x, "bytes", (double)n_hm);
        cJSON_AddItemToArray(att, x);
    }
    if (n_sr + n_hm) {
        resp->payload = malloc(n_sr + n_hm);
        if (!resp->payload) {
            cJSON_Delete(out);
            svc_result_free(&r);
            cJSON_Delete(q);
            return fail_json(resp, "out-of-memory", "out of memory");
        }
        if (n_sr) memcpy(resp->payload, r.sr.buf, n_sr);
        if (n_hm) memcpy(resp->payload + n_sr, r.a->heatmap_png, n_hm);
        resp->payload_len = n_sr + n_hm;
    }
    resp->json = cJSON_PrintUnformatted(out);
    resp->json_len = resp->json ? strlen(resp->json) : 0;
    cJSON_Delete(out);
    svc_result_free(&r);
    cJSON_Delete(q);
    return CXR_OK;
}

int cli_worker(int argc, char **argv) {
    common_opts c = {0};
    int fd = 3;
    const char *lock = NULL;
    for (int i = 0; i < argc; i++) {
        int k = common_opt(&c, argc, argv, &i);
        if (k < 0) { fprintf(stderr, "cxrvqa worker: %s needs a value\n", argv[i]); return 2; }
        if (k) continue;
        if (!strcmp(argv[i], "--fd") && i + 1 < argc) fd = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--lock") && i + 1 < argc) lock = argv[++i];
        else if (!strcmp(argv[i], "--help")) {
            printf("usage: cxrvqa worker [--model FILE] [--db FILE | --no-audit] [--sr-out DIR] [--uid-root R] "
                   "[--app NAME] [--threads N] [--fd N]\n"
                   "Serves framed ask requests (plugin/worker.h) on fd N (default 3); started by the Orthanc\n"
                   "plugin and by `cxrvqa screen`, not by hand.\n");
            return 0;
        } else { fprintf(stderr, "cxrvqa worker: unknown argument %s\n", argv[i]); return 2; }
    }
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fprintf(stderr, "cxrvqa worker: fd %d is not open (the worker is started by a supervisor)\n", fd);
        return 2;
    }
    if (c.threads == 0) c.threads = 1; /* one compute thread per worker: the pool is the parallelism */
    svc s;
    char db[PATH_MAX];
    int orc = open_service(&c, &s, db, sizeof db);
    if (orc) { /* tell the supervisor why, instead of a hello */
        cxr_worker_fail(fd, orc == 3 ? CXR_ERR_DB : CXR_ERR_IO,
                        orc == 3 ? "worker cannot open the audit database (see its stderr)"
                                 : "worker cannot open the model (see its stderr)");
        return orc;
    }
    worker_ctx w = {.s = &s, .sr_dir = c.sr_dir, .lock_fd = -1, .app = c.app ? c.app : "cxrvqa-worker", .fd = fd};
    if (lock && (w.lock_fd = open(lock, O_RDWR | O_CREAT | O_CLOEXEC, 0600)) < 0) {
        fprintf(stderr, "cxrvqa worker: %s: %s\n", lock, strerror(errno));
        cxr_worker_fail(fd, CXR_ERR_IO, "worker cannot open its lock file");
        close_service(&s);
        return 1;
    }
    const cxr_model_id *id = cxr_vqa_model_id(s.vqa);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddBoolToObject(h, "ready", 1);
    cJSON_AddNumberToObject(h, "pid", (double)getpid());
    cJSON *m = cJSON_AddObjectToObject(h, "model");
    cJSON_AddStringToObject(m, "name", id->name);
    cJSON_AddStringToObject(m, "version", id->version);
    cJSON_AddStringToObject(m, "sha256", id->sha256);
    char *hello = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    signal(SIGPIPE, SIG_IGN);
    int rc = cxr_worker_serve(fd, hello, worker_handle, &w);
    free(hello);
    if (w.lock_fd >= 0) close(w.lock_fd);
    close_service(&s);
    return rc == CXR_OK ? 0 : rc == CXR_ERR_NOMEM ? CXR_WORKER_EXIT_NOMEM : 1;
}
