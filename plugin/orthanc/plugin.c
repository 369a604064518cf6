/*
 * plugin.c — the Orthanc plugin's face: the four exported entry
 * points, the "CxrVqa" configuration section, the REST routes under
 * /cxrvqa/, the on-change callback and the Orthanc Explorer panel. It
 * translates between HTTP and the plugin's work (orthanc_screen.c). It never
 * decodes an image or runs the model (the worker processes do), and the
 * on-change callback only enqueues: it never calls back into Orthanc.
 *
 * Configuration (Orthanc's JSON; every key optional):
 *   "CxrVqa": { "Model": "/path/model.gguf", "AuditDatabase": "/path/audit.sqlite",
 *               "Workers": 2, "WorkerCommand": "/usr/bin/cxrvqa", "AutoScreen": false,
 *               "ScreeningQuestions": [...], "Modalities": ["CR","DX"],
 *               "BodyParts": ["CHEST",""], "UidRoot": "1.2.3", "TimeoutSeconds": 30,
 *               "MemoryLimitMB": 4096, "QueuePath": "/path/queue.sqlite" }
 */
#include "internal.h"
#include "audit.h"
#include "orthanc_explorer_js.h" /* generated from plugin/orthanc/explorer.js: OP_EXPLORER_JS */

#include <ctype.h>
#include "cxr_util.h"
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <strings.h>
#include <unistd.h>

#ifndef CXRVQA_EXE
#error "CXRVQA_EXE (path of the cxrvqa executable) must be defined by the build"
#endif
#ifndef CXRVQA_DEFAULT_MODEL
#error "CXRVQA_DEFAULT_MODEL must be defined by the build"
#endif

op_state g_op;

static const char *const DEFAULT_QUESTIONS[] = {"Is there a pleural effusion?", "Is there a pneumothorax?",
                                                "Is there consolidation?", "Is the heart enlarged?"};
static const char *const DEFAULT_MODALITIES[] = {"CR", "DX"};
static const char *const DEFAULT_BODY_PARTS[] = {"CHEST", ""};

/* ------------------------------------------------------- configuration */

static void config_free(op_config *c) {
    free(c->model);
    free(c->audit_db);
    free(c->worker_cmd);
    free(c->uid_root);
    free(c->queue_path);
    free(c->anchor_log);
    for (int i = 0; i < c->n_questions; i++)
        free(c->questions[i]);
    for (int i = 0; i < c->n_modalities; i++)
        free(c->modalities[i]);
    for (int i = 0; i < c->n_body_parts; i++)
        free(c->body_parts[i]);
    memset(c, 0, sizeof *c);
}

static char *dup_upper_trim(const char *s) {
    while (*s == ' ')
        s++;
    size_t n = strlen(s);
    while (n > 0 && s[n - 1] == ' ')
        n--;
    char *d = malloc(n + 1);
    if (d) {
        for (size_t i = 0; i < n; i++)
            d[i] = (char)toupper((unsigned char)s[i]);
        d[n] = 0;
    }
    return d;
}

/* A string key: the value, the default (may be NULL) when absent; -1 on a
 * wrong type. */
static int get_str(const cJSON *sec, const char *key, const char *def, char **out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, key);
    if (v && !cJSON_IsString(v)) {
        snprintf(err, errlen, "CxrVqa.%s must be a string", key);
        return -1;
    }
    const char *s = v ? v->valuestring : def;
    *out = s ? strdup(s) : NULL;
    return s && !*out ? -1 : 0;
}

static int get_int(const cJSON *sec, const char *key, int def, int lo, int hi, int *out, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, key);
    if (!v) {
        *out = def;
        return 0;
    }
    if (!cJSON_IsNumber(v) || v->valuedouble != (double)(int)v->valuedouble || v->valuedouble < lo ||
        v->valuedouble > hi) {
        snprintf(err, errlen, "CxrVqa.%s must be an integer in [%d, %d]", key, lo, hi);
        return -1;
    }
    *out = (int)v->valuedouble;
    return 0;
}

static int get_list(const cJSON *sec, const char *key, const char *const *def, int ndef, int upper, char **out,
                    int *n, char *err, size_t errlen) {
    const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, key), *e;
    *n = 0;
    if (!v) {
        for (int i = 0; i < ndef; i++)
            if (!(out[(*n)++] = upper ? dup_upper_trim(def[i]) : strdup(def[i])))
                return -1;
        return 0;
    }
    if (!cJSON_IsArray(v) || cJSON_GetArraySize(v) > OP_MAX_LIST) {
        snprintf(err, errlen, "CxrVqa.%s must be a list of at most %d strings", key, OP_MAX_LIST);
        return -1;
    }
    cJSON_ArrayForEach(e, v) {
        if (!cJSON_IsString(e) || (!upper && !e->valuestring[0])) {
            snprintf(err, errlen, "CxrVqa.%s must hold %sstrings", key, upper ? "" : "non-empty ");
            return -1;
        }
        if (!(out[(*n)++] = upper ? dup_upper_trim(e->valuestring) : strdup(e->valuestring)))
            return -1;
    }
    return 0;
}

static int load_config(op_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    char *s = OrthancPluginGetConfiguration(g_op.ctx);
    cJSON *root = s ? cJSON_Parse(s) : NULL;
    if (s)
        OrthancPluginFreeString(g_op.ctx, s);
    if (!root) {
        snprintf(err, errlen, "cannot read Orthanc's configuration");
        return -1;
    }
    const cJSON *sec = cJSON_GetObjectItemCaseSensitive(root, "CxrVqa");
    const char *storage = cxr_json_str(root, "StorageDirectory");
    if (!storage)
        storage = "OrthancStorage";
    char def_audit[4096], def_queue[4096];
    snprintf(def_audit, sizeof def_audit, "%s/cxrvqa-audit.sqlite", storage);
    snprintf(def_queue, sizeof def_queue, "%s/cxrvqa-queue.sqlite", storage);
    long cores = sysconf(_SC_NPROCESSORS_ONLN);
    int rc = 0, auto_screen = 0, mem = 4096;
    err[0] = 0;
    if (sec && !cJSON_IsObject(sec)) {
        snprintf(err, errlen, "CxrVqa must be an object");
        rc = -1;
    }
    if (!rc)
        rc = get_str(sec, "Model", CXRVQA_DEFAULT_MODEL, &c->model, err, errlen);
    if (!rc)
        rc = get_str(sec, "AuditDatabase", def_audit, &c->audit_db, err, errlen);
    if (!rc)
        rc = get_str(sec, "WorkerCommand", CXRVQA_EXE, &c->worker_cmd, err, errlen);
    if (!rc)
        rc = get_str(sec, "UidRoot", NULL, &c->uid_root, err, errlen);
    if (!rc)
        rc = get_str(sec, "QueuePath", def_queue, &c->queue_path, err, errlen);
    if (!rc) /* the audit chain's head, copied out on a schedule (SECURITY.md: anchors) */
        rc = get_str(sec, "AuditAnchorLog", NULL, &c->anchor_log, err, errlen);
    if (!rc)
        rc = get_int(sec, "AuditAnchorMinutes", 60, 1, 7 * 24 * 60, &c->anchor_minutes, err, errlen);
    if (!rc)
        rc = get_int(sec, "Workers", cores > 0 ? (int)cores : 1, 1, 256, &c->n_workers, err, errlen);
    if (!rc)
        rc = get_int(sec, "TimeoutSeconds", 30, 1, 3600, &c->timeout_s, err, errlen);
    if (!rc)
        rc = get_int(sec, "MemoryLimitMB", 4096, 0, 1 << 20, &mem, err, errlen);
    c->mem_limit_mb = (size_t)mem;
    int min_pos = -1, min_auc_pct = -1;
    if (!rc)
        rc = get_int(sec, "MinPositives", -1, -1, 1000000, &min_pos, err, errlen);
    if (!rc) { /* the lowest 95% CI lower bound of a finding's validation AUC, 0..1 */
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, "MinAucLowerBound");
        if (v && (!cJSON_IsNumber(v) || v->valuedouble < 0 || v->valuedouble > 1)) {
            snprintf(err, errlen, "CxrVqa.MinAucLowerBound must be a number in [0, 1]");
            rc = -1;
        } else if (v) {
            min_auc_pct = (int)(v->valuedouble * 1000 + 0.5);
        }
    }
    if (min_pos >= 0) snprintf(c->min_positives, sizeof c->min_positives, "%d", min_pos);
    if (min_auc_pct >= 0) snprintf(c->min_auc, sizeof c->min_auc, "%.3f", min_auc_pct / 1000.0);
    if (!rc) {
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, "AutoScreen");
        if (v && !cJSON_IsBool(v)) {
            snprintf(err, errlen, "CxrVqa.AutoScreen must be true or false");
            rc = -1;
        }
        auto_screen = cJSON_IsTrue(v);
    }
    c->auto_screen = auto_screen;
    if (!rc)
        rc = get_list(sec, "ScreeningQuestions", DEFAULT_QUESTIONS, 4, 0, c->questions, &c->n_questions, err, errlen);
    if (!rc)
        rc = get_list(sec, "Modalities", DEFAULT_MODALITIES, 2, 1, c->modalities, &c->n_modalities, err, errlen);
    if (!rc)
        rc = get_list(sec, "BodyParts", DEFAULT_BODY_PARTS, 2, 1, c->body_parts, &c->n_body_parts, err, errlen);
    if (!rc && c->worker_cmd[0] != '/') {
        snprintf(err, errlen, "CxrVqa.WorkerCommand must be an absolute path");
        rc = -1;
    }
    if (rc && !err[0])
        snprintf(err, errlen, "out of memory reading CxrVqa");
    cJSON_Delete(root);
    return rc;
}

/* ------------------------------------------------------------- HTTP */

void op_answer_error(OrthancPluginRestOutput *output, int status, const char *msg, const char *code) {
    cJSON *e = op_error_json(msg, code);
    op_answer_json(output, status, e);
    cJSON_Delete(e);
}

static const char *get_arg(const OrthancPluginHttpRequest *r, const char *key) {
    for (uint32_t i = 0; i < r->getCount; i++)
        if (strcmp(r->getKeys[i], key) == 0)
            return r->getValues[i];
    return NULL;
}

/* The user name of the request's HTTP Basic credentials (Orthanc has
 * checked them), into out; "" when there are none. */
static void basic_user(const OrthancPluginHttpRequest *r, char *out, size_t cap) {
    const char *h = NULL;
    for (uint32_t i = 0; i < r->headersCount; i++)
        if (strcasecmp(r->headersKeys[i], "authorization") == 0)
            h = r->headersValues[i];
    op_basic_user(h, out, cap);
}

/* The user recorded in the audit: the one the body names, the HTTP user
 * Orthanc authenticated, or both ("dr-a (via viewer-svc)") when a client
 * speaks for someone else; "orthanc" when neither is known. */
static void audit_user(const OrthancPluginHttpRequest *r, const char *claimed, char *out, size_t cap) {
    char auth[128];
    basic_user(r, auth, sizeof auth);
    if (claimed && claimed[0] && auth[0] && strcmp(claimed, auth) != 0)
        snprintf(out, cap, "%.200s (via %s)", claimed, auth);
    else
        snprintf(out, cap, "%.200s", claimed && claimed[0] ? claimed : auth[0] ? auth : "orthanc");
}

/* POST /cxrvqa/instances/{id}/ask {"question": …, "user": …, "lang": …} */
static OrthancPluginErrorCode route_ask(OrthancPluginRestOutput *output, const char *url,
                                        const OrthancPluginHttpRequest *request) {
    (void)url;
    if (request->method != OrthancPluginHttpMethod_Post) {
        OrthancPluginSendMethodNotAllowed(g_op.ctx, output, "POST");
        return OrthancPluginErrorCode_Success;
    }
    if (request->bodySize > OP_MAX_BODY_BYTES) {
        op_answer_error(output, 413, "request body too large", "too-big");
        return OrthancPluginErrorCode_Success;
    }
    op_ask_body body;
    char why[160];
    int bad = op_parse_ask_body(request->body, request->bodySize, &body, why, sizeof why);
    if (bad) {
        op_answer_error(output, bad, why, bad == 413 ? "too-big" : "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    char who[400];
    audit_user(request, body.user, who, sizeof who);
    op_request rq = {.kind = OP_ASK,
                     .instance = request->groups[0],
                     .question = body.question,
                     .user = who,
                     .lang = body.lang,
                     .store_sr = 1};
    op_result r;
    op_run(&rq, &r);
    op_count(r.status == 200 ? &g_op.n.asks : &g_op.n.asks_failed);
    op_answer_json(output, r.status, r.json);
    op_result_free(&r);
    op_ask_body_free(&body);
    return OrthancPluginErrorCode_Success;
}

/* GET /cxrvqa/instances/{id}/heatmap.png?finding=…[&question=…&user=…] */
static OrthancPluginErrorCode route_heatmap(OrthancPluginRestOutput *output, const char *url,
                                            const OrthancPluginHttpRequest *request) {
    (void)url;
    if (request->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(g_op.ctx, output, "GET");
        return OrthancPluginErrorCode_Success;
    }
    const char *finding = get_arg(request, "finding");
    const char *user = get_arg(request, "user");
    const char *lang = get_arg(request, "lang");
    char who[400];
    audit_user(request, user, who, sizeof who);
    if (!finding || !finding[0] || strlen(finding) > 128) {
        op_answer_error(output, 400, "missing \"finding\" (e.g. ?finding=pleural_effusion)", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    if (lang && strcmp(lang, "en") != 0 && strcmp(lang, "zh") != 0) {
        op_answer_error(output, 400, "\"lang\" must be \"en\" or \"zh\"", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    op_request rq = {.kind = OP_HEATMAP,
                     .instance = request->groups[0],
                     .question = get_arg(request, "question"),
                     .finding = finding,
                     .user = who,
                     .lang = lang};
    op_result r;
    op_run(&rq, &r);
    op_count(r.status == 200 ? &g_op.n.heatmaps : &g_op.n.heatmaps_failed);
    if (r.status == 200)
        OrthancPluginAnswerBuffer(g_op.ctx, output, r.png, r.png_len, "image/png");
    else
        op_answer_json(output, r.status, r.json);
    op_result_free(&r);
    return OrthancPluginErrorCode_Success;
}

/* GET /cxrvqa/audit?study=<StudyInstanceUID>[&limit=N] (newest first; default 100) */
static OrthancPluginErrorCode route_audit(OrthancPluginRestOutput *output, const char *url,
                                          const OrthancPluginHttpRequest *request) {
    (void)url;
    if (request->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(g_op.ctx, output, "GET");
        return OrthancPluginErrorCode_Success;
    }
    const char *study = get_arg(request, "study");
    if (!study || !study[0] || strlen(study) > 64) {
        op_answer_error(output, 400, "missing \"study\" (a Study Instance UID)", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    const char *lim = get_arg(request, "limit");
    char *end = NULL;
    long limit = lim ? strtol(lim, &end, 10) : 100;
    if (lim && (!*lim || *end || limit < 1 || limit > 100000)) {
        op_answer_error(output, 400, "\"limit\" must be an integer in [1, 100000]", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    char err[CXR_ERRMSG_MAX] = "";
    char *json = NULL;
    cxr_audit_params ap = cxr_audit_params_default();
    ap.read_only = 1;
    cxr_audit *a = NULL;
    int rc = cxr_audit_open(g_op.cfg.audit_db, &ap, &a, err, sizeof err);
    if (rc == CXR_OK)
        rc = cxr_audit_query_json(a, study, (int)limit, &json, err, sizeof err);
    cxr_audit_close(a);
    if (rc != CXR_OK) {
        op_answer_error(output, 500, err, cxr_strerror(rc));
    } else {
        OrthancPluginAnswerBuffer(g_op.ctx, output, json, strlen(json), "application/json");
    }
    free(json);
    return OrthancPluginErrorCode_Success;
}

/* GET /cxrvqa/status */
static OrthancPluginErrorCode route_status(OrthancPluginRestOutput *output, const char *url,
                                           const OrthancPluginHttpRequest *request) {
    (void)url;
    if (request->method != OrthancPluginHttpMethod_Get) {
        OrthancPluginSendMethodNotAllowed(g_op.ctx, output, "GET");
        return OrthancPluginErrorCode_Success;
    }
    cJSON *o = cJSON_CreateObject();
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "path", g_op.cfg.model);
    cJSON_AddStringToObject(m, "sha256", g_op.model_sha256);
    cJSON *w = cJSON_AddObjectToObject(o, "workers");
    cJSON_AddStringToObject(w, "command", g_op.cfg.worker_cmd);
    cJSON_AddNumberToObject(w, "configured", g_op.cfg.n_workers);
    if (g_op.pool) {
        cxr_pool_stats st;
        cxr_pool_get_stats(g_op.pool, &st);
        cJSON_AddNumberToObject(w, "alive", st.n_alive);
        cJSON_AddNumberToObject(w, "busy", st.n_busy);
        cJSON_AddNumberToObject(w, "waiting", st.n_waiting);
        cJSON_AddNumberToObject(w, "requests", (double)st.requests);
        cJSON_AddNumberToObject(w, "ok", (double)st.ok);
        cJSON_AddNumberToObject(w, "failed", (double)st.failed);
        cJSON_AddNumberToObject(w, "crashed", (double)st.crashed);
        cJSON_AddNumberToObject(w, "timed_out", (double)st.timed_out);
        cJSON_AddNumberToObject(w, "restarts", (double)st.restarts);
        cJSON_AddNullToObject(w, "error");
    } else {
        cJSON_AddNumberToObject(w, "alive", 0);
        cJSON_AddStringToObject(w, "error", g_op.pool_err);
    }
    cJSON_AddNumberToObject(w, "timeout_seconds", g_op.cfg.timeout_s);
    cJSON_AddNumberToObject(w, "memory_limit_mb", (double)g_op.cfg.mem_limit_mb);
    cJSON *q = cJSON_AddObjectToObject(o, "queue");
    cJSON_AddBoolToObject(q, "auto_screen", g_op.cfg.auto_screen);
    cJSON_AddStringToObject(q, "path", g_op.cfg.queue_path);
    cJSON_AddNumberToObject(q, "length", g_op.q ? (double)queue_length(g_op.q) : 0);
    pthread_mutex_lock(&g_op.mu);
    op_counters n = g_op.n;
    pthread_mutex_unlock(&g_op.mu);
    cJSON *c = cJSON_AddObjectToObject(o, "counters");
    cJSON_AddNumberToObject(c, "asks", (double)n.asks);
    cJSON_AddNumberToObject(c, "asks_failed", (double)n.asks_failed);
    cJSON_AddNumberToObject(c, "heatmaps", (double)n.heatmaps);
    cJSON_AddNumberToObject(c, "heatmaps_failed", (double)n.heatmaps_failed);
    cJSON_AddNumberToObject(c, "enqueued", (double)n.enqueued);
    cJSON_AddNumberToObject(c, "screened", (double)n.screened);
    cJSON_AddNumberToObject(c, "screen_skipped", (double)n.screen_skipped);
    cJSON_AddNumberToObject(c, "screen_failed", (double)n.screen_failed);
    cJSON_AddNumberToObject(c, "screen_not_eligible", (double)n.screen_ineligible);
    cJSON_AddNumberToObject(c, "srs_stored", (double)n.srs_stored);
    cJSON_AddNumberToObject(c, "sr_store_failed", (double)n.sr_store_failed);
    cJSON_AddNumberToObject(c, "worker_failures", (double)n.worker_failures);
    cJSON_AddNumberToObject(c, "jobs", (double)n.jobs);
    cJSON_AddStringToObject(o, "audit_database", g_op.cfg.audit_db);
    cJSON_AddStringToObject(o, "version", OP_VERSION);
    op_answer_json(output, 200, o);
    cJSON_Delete(o);
    return OrthancPluginErrorCode_Success;
}

/* ------------------------------------------------------ change events */

/* Runs synchronously inside Orthanc's core: it only enqueues (a SQLite
 * insert) and starts/stops the plugin's thread. No Orthanc calls here. */
static OrthancPluginErrorCode on_change(OrthancPluginChangeType type, OrthancPluginResourceType rtype,
                                        const char *id) {
    switch (type) {
    case OrthancPluginChangeType_NewInstance:
        if (rtype == OrthancPluginResourceType_Instance && g_op.q && id && queue_push(g_op.q, id) == CXR_OK) {
            pthread_mutex_lock(&g_op.mu);
            g_op.n.enqueued++;
            pthread_cond_broadcast(&g_op.cv);
            pthread_mutex_unlock(&g_op.mu);
        }
        break;
    case OrthancPluginChangeType_OrthancStarted:
        if ((g_op.q || g_op.cfg.anchor_log) && op_thread_start() != CXR_OK)
            OrthancPluginLogError(g_op.ctx, "cxrvqa: cannot start the background thread (auto-screen, anchors)");
        break;
    case OrthancPluginChangeType_OrthancStopped:
        op_thread_stop();
        break;
    default:
        break;
    }
    return OrthancPluginErrorCode_Success;
}

/* ------------------------------------------------------- entry points */

static void start_pool(void) {
    const char *argv[24];
    int a = 0;
    argv[a++] = g_op.cfg.worker_cmd;
    argv[a++] = "worker";
    argv[a++] = "--model";
    argv[a++] = g_op.cfg.model;
    argv[a++] = "--db";
    argv[a++] = g_op.cfg.audit_db;
    if (g_op.cfg.uid_root) {
        argv[a++] = "--uid-root";
        argv[a++] = g_op.cfg.uid_root;
    }
    argv[a++] = "--app";
    argv[a++] = "ORTHANC";
    if (g_op.cfg.min_positives[0]) {
        argv[a++] = "--min-positives";
        argv[a++] = g_op.cfg.min_positives;
    }
    if (g_op.cfg.min_auc[0]) {
        argv[a++] = "--min-auc";
        argv[a++] = g_op.cfg.min_auc;
    }
    argv[a] = NULL;
    cxr_pool_params pp = cxr_pool_params_default();
    pp.argv = argv;
    pp.n_workers = g_op.cfg.n_workers;
    pp.timeout_ms = g_op.cfg.timeout_s * 1000;
    pp.mem_limit_mb = g_op.cfg.mem_limit_mb;
    int rc = cxr_pool_open(&pp, &g_op.pool, g_op.pool_err, sizeof g_op.pool_err);
    char m[CXR_ERRMSG_MAX + 256];
    if (rc != CXR_OK) {
        g_op.pool = NULL;
        snprintf(m, sizeof m, "cxrvqa: the worker pool did not start (%s): %s; the /cxrvqa routes answer 503",
                 cxr_strerror(rc), g_op.pool_err);
        OrthancPluginLogError(g_op.ctx, m);
    } else {
        snprintf(m, sizeof m, "cxrvqa: %d worker(s) started: %s worker --model %s", g_op.cfg.n_workers,
                 g_op.cfg.worker_cmd, g_op.cfg.model);
        OrthancPluginLogWarning(g_op.ctx, m);
    }
}

ORTHANC_PLUGINS_API int32_t OrthancPluginInitialize(OrthancPluginContext *context) {
    memset(&g_op, 0, sizeof g_op);
    g_op.ctx = context;
    pthread_mutex_init(&g_op.mu, NULL);
    pthread_cond_init(&g_op.cv, NULL);
    char err[CXR_ERRMSG_MAX + 64];
    if (!OrthancPluginCheckVersion(context)) {
        snprintf(err, sizeof err, "cxrvqa: this Orthanc (%s) is older than the plugin SDK %d.%d.%d",
                 context->orthancVersion, ORTHANC_PLUGINS_MINIMAL_MAJOR_NUMBER,
                 ORTHANC_PLUGINS_MINIMAL_MINOR_NUMBER, ORTHANC_PLUGINS_MINIMAL_REVISION_NUMBER);
        OrthancPluginLogError(context, err);
        return -1;
    }
    OrthancPluginSetDescription(context, "Chest X-ray question answering (research use only)");
    char cerr[CXR_ERRMSG_MAX];
    if (load_config(&g_op.cfg, cerr, sizeof cerr) != 0) {
        snprintf(err, sizeof err, "cxrvqa: bad configuration: %s", cerr);
        OrthancPluginLogError(context, err);
        config_free(&g_op.cfg);
        return -1;
    }
    /* for the status route and the plugin's own audit rows ("" when
     * unreadable: the workers then fail to start anyway) */
    cxr_sha256_file(g_op.cfg.model, g_op.model_sha256);
    if (g_op.cfg.auto_screen) {
        if (queue_open(g_op.cfg.queue_path, &g_op.q, cerr, sizeof cerr) != CXR_OK) {
            snprintf(err, sizeof err, "cxrvqa: cannot open the auto-screen queue: %s", cerr);
            OrthancPluginLogError(context, err);
            config_free(&g_op.cfg);
            return -1;
        }
    }
    start_pool();

    /* ask and heatmap run in parallel (the pool is thread-safe) */
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/instances/([^/]+)/ask", route_ask);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/instances/([^/]+)/heatmap\\.png", route_heatmap);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/studies/([^/]+)/screen", op_route_screen);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/audit", route_audit);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/status", route_status);
    OrthancPluginRegisterOnChangeCallback(context, on_change);
    OrthancPluginExtendOrthancExplorer(context, (const char *)OP_EXPLORER_JS);
    return 0;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize(void) {
    op_thread_stop();
    cxr_pool_close(g_op.pool);
    g_op.pool = NULL;
    queue_close(g_op.q);
    g_op.q = NULL;
    config_free(&g_op.cfg);
    pthread_cond_destroy(&g_op.cv);
    pthread_mutex_destroy(&g_op.mu);
}

ORTHANC_PLUGINS_API const char *OrthancPluginGetName(void) { return OP_NAME; }

ORTHANC_PLUGINS_API const char *OrthancPluginGetVersion(void) { return OP_VERSION; }
