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

#define THUMBNAIL_SIDE 256 /* longest side of a "thumbnail" response, pixels */

/* op "thumbnail": the image at path, as ingested (VOI, polarity), shrunk by
 * box averaging so its longest side is at most THUMBNAIL_SIDE, as a grey
 * PNG attachment. Header checks only warn: it shows the image, it answers
 * nothing (no audit row). */
static int thumbnail(const char *path, cxr_msg *resp) {
    cxr_ingest_params ip = cxr_ingest_params_default();
    ip.not_chest = ip.lateral = ip.small = CXR_CHECK_WARN;
    ip.decode_min_long = THUMBNAIL_SIDE;
    cxr_image *img = NULL;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_image_load_file(path, &ip, &img, err, sizeof err);
    if (rc != CXR_OK) return fail_json(resp, rc, err);
    const cxr_meta *m = cxr_image_meta(img);
    const uint8_t *px = cxr_image_pixels(img);
    int r0 = m->out_rows, c0 = m->out_cols, big = r0 > c0 ? r0 : c0;
    int f = (big + THUMBNAIL_SIDE - 1) / THUMBNAIL_SIDE; /* box side */
    int r1 = (r0 + f - 1) / f, c1 = (c0 + f - 1) / f;
    uint8_t *t = malloc((size_t)r1 * (size_t)c1);
    if (!t) {
        cxr_image_free(img);
        return fail_json(resp, CXR_ERR_NOMEM, "out of memory");
    }
    for (int y = 0; y < r1; y++)
        for (int x = 0; x < c1; x++) {
            unsigned sum = 0, n = 0;
            for (int yy = y * f; yy < (y + 1) * f && yy < r0; yy++)
                for (int xx = x * f; xx < (x + 1) * f && xx < c0; xx++, n++) sum += px[(size_t)yy * c0 + xx];
            t[(size_t)y * c1 + x] = (uint8_t)((sum + n / 2) / n);
        }
    cxr_image_free(img);
    uint8_t *png = NULL;
    size_t len = 0;
    rc = cxr_png_encode(t, r1, c1, 1, 0, &png, &len, err, sizeof err);
    free(t);
    if (rc != CXR_OK) return fail_json(resp, rc, err);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddNumberToObject(o, "rows", r1);
    cJSON_AddNumberToObject(o, "columns", c1);
    cJSON *x = cJSON_CreateObject();
    cJSON_AddStringToObject(x, CXR_P_ATT_NAME, CXR_P_ATT_THUMBNAIL);
    cJSON_AddNumberToObject(x, CXR_P_ATT_BYTES, (double)len);
    cJSON_AddItemToArray(cJSON_AddArrayToObject(o, CXR_P_ATTACHMENTS), x);
    resp->payload = png;
    resp->payload_len = len;
    return respond(resp, o);
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

/* op "ask" with "questions" (an array) instead of "question": one image's
 * screening questions in one request, answered with one structured report
 * (svc_ask_many). "request_keys", when given, is the array of their keys
 * (same order); with skip_if_done a question whose key the audit already
 * holds is answered {"skipped":true,"request_key":…} and not asked again.
 * Response: {"answers":[answer objects, each with its request_key],
 * "attachments":[the one SR]} and the SR bytes as the payload. */
static int worker_ask_many(worker_ctx *w, const cJSON *q, const cJSON *qs, const cxr_msg *req, cxr_msg *resp) {
    svc *s = w->s;
    const cJSON *ks = cJSON_GetObjectItemCaseSensitive(q, CXR_P_REQUEST_KEYS);
    int n = cJSON_GetArraySize(qs);
    if (n < 1 || n > SVC_MAX_QUESTIONS)
        return fail_json(resp, CXR_ERR_ARG, "questions must be an array of 1 to 32 strings");
    if (ks && (!cJSON_IsArray(ks) || cJSON_GetArraySize(ks) != n))
        return fail_json(resp, CXR_ERR_ARG, "request_keys must be an array as long as questions");
    const char *path = cxr_json_str(q, CXR_P_PATH);
    if (!path && !req->payload_len) return fail_json(resp, CXR_ERR_ARG, "request has neither a path nor image bytes");
    const char *questions[SVC_MAX_QUESTIONS], *keys[SVC_MAX_QUESTIONS];
    int done[SVC_MAX_QUESTIONS], n_ask = 0;
    const char *ask_q[SVC_MAX_QUESTIONS], *ask_k[SVC_MAX_QUESTIONS];
    for (int i = 0; i < n; i++) {
        const cJSON *x = cJSON_GetArrayItem(qs, i), *k = ks ? cJSON_GetArrayItem(ks, i) : NULL;
        if (!cJSON_IsString(x) || !x->valuestring[0] || (k && !cJSON_IsString(k)))
            return fail_json(resp, CXR_ERR_ARG, "questions and request_keys must hold non-empty strings");
        questions[i] = x->valuestring;
        keys[i] = k ? k->valuestring : NULL;
        done[i] = 0;
        char err[CXR_ERRMSG_MAX];
        if (keys[i] && cxr_json_bool(q, CXR_P_SKIP_IF_DONE) && s->audit &&
            cxr_audit_has_request(s->audit, keys[i], &done[i], err, sizeof err) != CXR_OK)
            done[i] = 0;
        if (!done[i]) {
            ask_q[n_ask] = questions[i];
            ask_k[n_ask++] = keys[i];
        }
        poison(questions[i], path, req->payload, req->payload_len);
    }
    cxr_ask_options o = cxr_ask_options_default();
    const char *lang = cxr_json_str(q, CXR_P_LANG);
    o.lang = lang && (!strcmp(lang, "en") || !strcmp(lang, "zh")) ? lang : NULL;
    s->user = cxr_json_str(q, CXR_P_USER);
    s->application = cxr_json_str(q, CXR_P_APP) ? cxr_json_str(q, CXR_P_APP) : w->app;
    int want_sr = cxr_json_bool(q, CXR_P_SR);
    s->sr_buffer = want_sr && !w->sr_dir;
    s->sr_dir = want_sr ? w->sr_dir : NULL;
    const char *source = cxr_json_str(q, CXR_P_SOURCE);
    svc_result rs[SVC_MAX_QUESTIONS];
    if (n_ask) svc_ask_many(s, path, req->payload, req->payload_len, source ? source : path, ask_q, ask_k, n_ask, &o, rs);
    cJSON *out = cJSON_CreateObject(), *arr = cJSON_AddArrayToObject(out, CXR_P_ANSWERS);
    const svc_result *with_sr = NULL;
    for (int i = 0, j = 0; i < n; i++) {
        cJSON *x;
        if (done[i]) {
            x = cJSON_CreateObject();
            cJSON_AddBoolToObject(x, CXR_P_SKIPPED, 1);
        } else {
            svc_result *r = &rs[j++];
            if (!r->json) {
                x = cJSON_CreateObject();
                cJSON_AddStringToObject(x, CXR_P_ERROR, r->err[0] ? r->err : cxr_strerror(r->rc));
                cJSON_AddStringToObject(x, CXR_P_CODE, cxr_strerror(r->rc));
                cJSON_AddNumberToObject(x, CXR_P_ERROR_CODE, r->rc);
            } else {
                x = r->json;
                r->json = NULL;
                if (cJSON_GetObjectItemCaseSensitive(x, CXR_P_ERROR))
                    cJSON_AddNumberToObject(x, CXR_P_ERROR_CODE, r->rc != CXR_OK ? r->rc : r->a->error_code);
            }
            if (r->have_sr && r->sr.buf && !with_sr) with_sr = r;
        }
        if (keys[i]) cJSON_AddStringToObject(x, CXR_P_REQUEST_KEY, keys[i]);
        cJSON_AddItemToArray(arr, x);
    }
    cJSON *att = cJSON_AddArrayToObject(out, CXR_P_ATTACHMENTS);
    int rc = CXR_OK;
    if (with_sr) {
        cJSON *x = cJSON_CreateObject();
        cJSON_AddStringToObject(x, CXR_P_ATT_NAME, CXR_P_ATT_SR);
        cJSON_AddNumberToObject(x, CXR_P_ATT_BYTES, (double)with_sr->sr.len);
        cJSON_AddItemToArray(att, x);
        if (!(resp->payload = malloc(with_sr->sr.len))) rc = CXR_ERR_NOMEM;
        else {
            memcpy(resp->payload, with_sr->sr.buf, with_sr->sr.len);
            resp->payload_len = with_sr->sr.len;
        }
    }
    for (int j = 0; j < n_ask; j++) svc_result_free(&rs[j]);
    if (rc != CXR_OK) {
        cJSON_Delete(out);
        cxr_msg_free(resp);
        return fail_json(resp, CXR_ERR_NOMEM, "out of memory");
    }
    return respond(resp, out);
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

    const cJSON *qs = cJSON_GetObjectItemCaseSensitive(q, CXR_P_QUESTIONS);
    if (qs && !strcmp(op, CXR_P_OP_ASK)) {
        rc = cJSON_IsArray(qs) ? worker_ask_many(w, q, qs, req, resp)
                               : fail_json(resp, CXR_ERR_ARG, "questions must be an array of strings");
    } else if (!strcmp(op, CXR_P_OP_PING)) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddBoolToObject(o, CXR_P_OK, 1);
        rc = respond(resp, o);
    } else if (!strcmp(op, CXR_P_OP_THUMBNAIL)) {
        rc = path ? thumbnail(path, resp) : fail_json(resp, CXR_ERR_ARG, "thumbnail: request has no path");
    } else if (strcmp(op, CXR_P_OP_ASK) && !is_heatmap) {
        rc = fail_json(resp, CXR_ERR_ARG, "unknown op (ask, heatmap, thumbnail, ping)");
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
    char why[CXR_ERRMSG_MAX], msg[CXR_ERRMSG_MAX + 64];
    int orc = cli_open_service(&c, &s, db, sizeof db, why, sizeof why);
    if (orc) { /* tell the supervisor why, instead of a hello */
        snprintf(msg, sizeof msg, "worker cannot open %s: %s", orc == 3 ? "the audit database" : "the model", why);
        cxr_worker_fail(fd, orc == 3 ? CXR_ERR_DB : CXR_ERR_IO, msg);
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
