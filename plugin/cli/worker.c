/*
 * worker.c — `cxrvqa worker`: the supervised process that serves the Orthanc
 * plugin and `cxrvqa screen` over the framed channel (worker/worker.h), one
 * request at a time, with the keys of worker/protocol.h. It owns reading a
 * request and building its response (the answer tree extended with the
 * request key and attachments, printed once); answering and recording are
 * service.c's, the channel is worker/'s.
 */
#include "cli.h"
#include "options.h"
#include "args.h"
#include "cxr_json.h"
#include "cxr_util.h"
#include "protocol.h"
#include "worker.h"
#include "cxr_dicom.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/file.h>
#include <sys/stat.h>
#include <unistd.h>

typedef struct {
    svc *s;
    const char *sr_dir;
    int lock_fd;   /* --lock: held shared while a request is served (see cli_screen.c) */
    const char *app; /* --app, or "cxrvqa-worker": when a request names none */
    int fd;          /* the channel (--fd): a tainted worker answers on it, then exits */
} worker_ctx;

/* Respond with the protocol's error object (code as a number and a name). */
static int fail_json(cxr_msg *resp, int code, const char *msg) {
    resp->json = cxr_worker_error_json(code, msg);
    resp->json_len = resp->json ? strlen(resp->json) : 0;
    return CXR_OK;
}

/* resp->json = the printed tree o (then freed). */
static int respond(cxr_msg *resp, cJSON *o) {
    resp->json = o ? cJSON_PrintUnformatted(o) : NULL;
    resp->json_len = resp->json ? strlen(resp->json) : 0;
    cJSON_Delete(o);
    return resp->json ? CXR_OK : fail_json(resp, CXR_ERR_NOMEM, "out of memory");
}

/* Add the attachment list (SR bytes, heatmap PNG, in that order) to out and
 * their concatenation as resp's payload. */
static int attach(cJSON *out, const svc_result *r, cxr_msg *resp) {
    size_t n_sr = r->have_sr && r->sr.buf ? r->sr.len : 0;
    size_t n_hm = r->a && r->a->heatmap_png ? r->a->heatmap_png_len : 0;
    cJSON *att = cJSON_AddArrayToObject(out, CXR_P_ATTACHMENTS);
    const struct { const char *name; size_t n; } parts[2] = {{CXR_P_ATT_SR, n_sr}, {CXR_P_ATT_HEATMAP, n_hm}};
    for (int i = 0; i < 2; i++) {
        if (!parts[i].n) continue;
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, CXR_P_ATT_NAME, parts[i].name);
        cJSON_AddNumberToObject(x, CXR_P_ATT_BYTES, (double)parts[i].n);
        cJSON_AddItemToArray(att, x);
    }
    if (!(n_sr + n_hm)) return CXR_OK;
    if (!(resp->payload = malloc(n_sr + n_hm))) return CXR_ERR_NOMEM;
    if (n_sr) memcpy(resp->payload, r->sr.buf, n_sr);
    if (n_hm) memcpy(resp->payload + n_sr, r->a->heatmap_png, n_hm);
    resp->payload_len = n_sr + n_hm;
    return CXR_OK;
}

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
            jl = (size_t)snprintf(j2 + jl - 1, 32, "%s\"" CXR_P_WORKER_EXITING "\":true}", jl > 2 ? "," : "") + jl - 1;
        }
        cxr_frame_write(w->fd, j2 ? j2 : resp->json, jl, resp->payload, resp->payload_len);
        fprintf(stderr, "cxrvqa worker: a decode was abandoned at its deadline; exiting after the response\n");
        _exit(0);
    }
    return rc;
}

/* The heatmap op's question when the request names only a finding. */
static const char *heatmap_question(const char *finding, char *buf, size_t n) {
    snprintf(buf, n, "Is there %s?", finding);
    for (char *c = buf; *c; c++)
        if (*c == '_') *c = ' ';
    return buf;
}

static int worker_handle_locked(void *ctx, const cxr_msg *req, cxr_msg *resp) {
    worker_ctx *w = ctx;
    svc *s = w->s;
    cJSON *q = cJSON_ParseWithLength(req->json, req->json_len);
    int rc = CXR_OK;
    if (!q || !cJSON_IsObject(q)) {
        cJSON_Delete(q);
        return fail_json(resp, CXR_ERR_PROTOCOL, "request is not a JSON object");
    }
    const char *op = cxr_json_str(q, CXR_P_OP);
    if (!op) op = CXR_P_OP_ASK;
    const char *question = cxr_json_str(q, CXR_P_QUESTION), *path = cxr_json_str(q, CXR_P_PATH);
    const char *finding = cxr_json_str(q, CXR_P_FINDING);
    int is_heatmap = !strcmp(op, CXR_P_OP_HEATMAP);
    char qbuf[256];
    if (!question && is_heatmap && finding) question = heatmap_question(finding, qbuf, sizeof qbuf);

    if (!strcmp(op, CXR_P_OP_PING)) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, CXR_P_OK, 1);
        rc = respond(resp, o);
    } else if (strcmp(op, CXR_P_OP_ASK) && !is_heatmap) {
        rc = fail_json(resp, CXR_ERR_ARG, "unknown op (ask, heatmap, ping)");
    } else if (!question) {
        rc = fail_json(resp, CXR_ERR_ARG, "request has no question");
    } else if (!path && !req->payload_len) {
        rc = fail_json(resp, CXR_ERR_ARG, "request has neither a path nor image bytes");
    } else {
        poison(question, path, req->payload, req->payload_len);
        cxr_ask_options o = cxr_ask_options_default();
        const char *lang = cxr_json_str(q, CXR_P_LANG);
        o.lang = lang && (!strcmp(lang, "en") || !strcmp(lang, "zh")) ? lang : NULL;
        o.heatmap = is_heatmap || cxr_json_bool(q, CXR_P_HEATMAP);
        o.heatmap_finding = finding;
        /* per-request identity and outputs; they point into q and are reset
           by worker_handle before q is freed */
        s->user = cxr_json_str(q, CXR_P_USER);
        s->application = cxr_json_str(q, CXR_P_APP) ? cxr_json_str(q, CXR_P_APP) : w->app;
        int want_sr = cxr_json_bool(q, CXR_P_SR) && !is_heatmap;
        s->sr_buffer = want_sr && !w->sr_dir;
        s->sr_dir = want_sr ? w->sr_dir : NULL;
        char key[65] = "";
        const char *rk = cxr_json_str(q, CXR_P_REQUEST_KEY), *sop = cxr_json_str(q, CXR_P_SOP_UID);
        if (!rk && sop && *sop) {
            const char *parts[] = {sop, cxr_vqa_model_id(s->vqa)->sha256, question, NULL};
            cxr_sha256_parts(parts, key);
            rk = key;
        }
        int done = 0;
        char err[CXR_ERRMSG_MAX];
        if (rk && cxr_json_bool(q, CXR_P_SKIP_IF_DONE) && s->audit &&
            cxr_audit_has_request(s->audit, rk, &done, err, sizeof err) != CXR_OK)
            done = 0;
        if (done) {
            cJSON *o2 = cJSON_CreateObject();
            cJSON_AddBoolToObject(o2, CXR_P_SKIPPED, 1);
            cJSON_AddStringToObject(o2, CXR_P_REQUEST_KEY, rk);
            rc = respond(resp, o2);
        } else {
            const char *source = cxr_json_str(q, CXR_P_SOURCE);
            svc_result r;
            int arc = svc_ask(s, path, req->payload, req->payload_len, source ? source : path, question, &o, rk, &r);
            if (arc == CXR_ERR_AUDIT || !r.json) {
                rc = fail_json(resp, arc, r.err[0] ? r.err : cxr_strerror(arc));
            } else {
                cJSON *out = r.json; /* the answer tree, extended in place and printed once */
                r.json = NULL;
                if (rk) cJSON_AddStringToObject(out, CXR_P_REQUEST_KEY, rk);
                if (cJSON_GetObjectItemCaseSensitive(out, CXR_P_ERROR))
                    cJSON_AddNumberToObject(out, CXR_P_ERROR_CODE, arc != CXR_OK ? arc : r.a->error_code);
                if (attach(out, &r, resp) != CXR_OK) {
                    cJSON_Delete(out);
                    cxr_msg_free(resp);
                    rc = fail_json(resp, CXR_ERR_NOMEM, "out of memory");
                } else {
                    rc = respond(resp, out);
                }
            }
            svc_result_free(&r);
        }
    }
    cJSON_Delete(q);
    return rc;
}

static void usage_worker(FILE *f) {
    fprintf(f, "usage: cxrvqa worker [--model FILE] [--db FILE [--audit-key KEY] | --no-audit] [--sr-out DIR] [--uid-root R] "
               "[--app NAME] [--threads N] [--fd N] [--lock FILE]\n"
               "Serves framed ask requests (plugin/worker/worker.h) on fd N (default 3); started by the Orthanc\n"
               "plugin and by `cxrvqa screen`, not by hand.\n");
}

int cli_worker(int argc, char **argv) {
    cli_common_opts c = CLI_COMMON_OPTS_INIT;
    int fd = 3;
    const char *lock = NULL;
    const cli_opt opts[] = {CLI_COMMON_OPTS(&c), CLI_OPT_INT("--fd", &fd), CLI_OPT_STR("--lock", &lock), CLI_OPT_END};
    int n, arc = cli_args("worker", opts, argc, argv, NULL, 0, &n, usage_worker);
    if (arc != CLI_ARGS_OK) return arc == CLI_ARGS_HELP ? 0 : 2;
    struct stat st;
    if (fstat(fd, &st) != 0) {
        fprintf(stderr, "cxrvqa worker: fd %d is not open (the worker is started by a supervisor)\n", fd);
        return 2;
    }
    if (c.threads == 0) c.threads = 1; /* one compute thread per worker: the pool is the parallelism */
    svc s;
    char db[PATH_MAX];
    int orc = cli_open_service(&c, &s, db, sizeof db);
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
        cli_close_service(&s);
        return 1;
    }
    const cxr_model_id *id = cxr_vqa_model_id(s.vqa);
    cJSON *h = cJSON_CreateObject();
    cJSON_AddBoolToObject(h, CXR_P_READY, 1);
    cJSON_AddNumberToObject(h, CXR_P_PID, (double)getpid());
    cJSON *m = cJSON_AddObjectToObject(h, CXR_P_MODEL);
    cJSON_AddStringToObject(m, "name", id->name);
    cJSON_AddStringToObject(m, "version", id->version);
    cJSON_AddStringToObject(m, "sha256", id->sha256);
    char *hello = cJSON_PrintUnformatted(h);
    cJSON_Delete(h);
    signal(SIGPIPE, SIG_IGN);
    int rc = cxr_worker_serve(fd, hello, worker_handle, &w);
    free(hello);
    if (w.lock_fd >= 0) close(w.lock_fd);
    cli_close_service(&s);
    return rc == CXR_OK ? 0 : rc == CXR_ERR_NOMEM ? CXR_WORKER_EXIT_NOMEM : 1;
}
