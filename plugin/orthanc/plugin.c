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
 *               "MemoryLimitMB": 4096, "QueuePath": "/path/queue.sqlite",
 *               "AuditAnchorLog": "/path/anchors.log", "AuditAnchorMinutes": 60,
 *               "AuditKeyFile": "/etc/cxrvqa/audit-chain.key",
 *               "MinPositives": 20, "MinAucLowerBound": 0.7, "RequestLog": "warning",
 *               "ForwardTo": ["PACS"], "ForwardAttempts": 4, "ForwardBackoffSeconds": 10 }
 * Any other key disables the plugin (503 on its routes, an error in the log)
 * with the nearest known key as a "did you mean"; so does a wrong type.
 * Orthanc itself always keeps running. A complete example: deploy/orthanc.json.
 */
#define _GNU_SOURCE /* dladdr: where this plugin's file lies */
#include "internal.h"
#include "audit.h"
#include "question.h"
#include "orthanc_explorer_js.h" /* generated from plugin/orthanc/explorer.js: OP_EXPLORER_JS */

#include <ctype.h>
#include <dlfcn.h>
#include <limits.h>
#include <sys/stat.h>
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
#if !defined(CXRVQA_PLUGIN_TO_EXE) || !defined(CXRVQA_PLUGIN_TO_MODEL)
#error "CXRVQA_PLUGIN_TO_EXE and CXRVQA_PLUGIN_TO_MODEL (installed layout) must be defined by the build"
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
    free(c->audit_key);
    for (int i = 0; i < c->n_questions; i++)
        free(c->questions[i]);
    for (int i = 0; i < c->n_modalities; i++)
        free(c->modalities[i]);
    for (int i = 0; i < c->n_body_parts; i++)
        free(c->body_parts[i]);
    for (int i = 0; i < c->n_forward_to; i++)
        free(c->forward_to[i]);
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

/* Every key of the "CxrVqa" section; any other is refused ("did you mean"):
 * a misspelled key silently left at its default (AutoScreen off) is worse
 * than a plugin that says why it is disabled. */
static const char *const KNOWN_KEYS[] = {"Model", "AuditDatabase", "Workers", "WorkerCommand", "AutoScreen",
                                         "ScreeningQuestions", "Modalities", "BodyParts", "UidRoot",
                                         "TimeoutSeconds", "MemoryLimitMB", "QueuePath", "AuditAnchorLog",
                                         "AuditAnchorMinutes", "MinPositives", "MinAucLowerBound", "RequestLog",
                                         "ForwardTo", "ForwardAttempts", "ForwardBackoffSeconds", "AuditKeyFile", NULL};

/* Every ForwardTo name must be one of Orthanc's DicomModalities (unless
 * Orthanc keeps them in its database, DicomModalitiesInDatabase): a typo
 * would otherwise only show as failed forwards. */
static int check_forward_to(const cJSON *root, const op_config *c, char *err, size_t errlen) {
    if (cJSON_IsTrue(cJSON_GetObjectItemCaseSensitive(root, "DicomModalitiesInDatabase")))
        return 0;
    const cJSON *mods = cJSON_GetObjectItemCaseSensitive(root, "DicomModalities");
    for (int i = 0; i < c->n_forward_to; i++) {
        const char *name = c->forward_to[i];
        if (strlen(name) >= OP_MAX_MODALITY_NAME) {
            snprintf(err, errlen, "CxrVqa.ForwardTo: modality name longer than %d bytes", OP_MAX_MODALITY_NAME - 1);
            return -1;
        }
        if (cJSON_IsObject(mods) && cJSON_GetObjectItemCaseSensitive(mods, name))
            continue;
        const cJSON *m;
        const char *best = NULL;
        int bd = 1 << 30;
        const cJSON *all = cJSON_IsObject(mods) ? mods : NULL;
        cJSON_ArrayForEach(m, all) {
            int d = op_edit_distance(name, m->string);
            if (d < bd) {
                bd = d;
                best = m->string;
            }
        }
        if (best && bd <= 3)
            snprintf(err, errlen, "CxrVqa.ForwardTo: \"%.64s\" is not in DicomModalities (did you mean \"%.64s\"?)",
                     name, best);
        else
            snprintf(err, errlen, "CxrVqa.ForwardTo: \"%.64s\" is not in DicomModalities (define it there first)",
                     name);
        return -1;
    }
    return 0;
}

/* A default path: REL beside this plugin's own file when the plugin is
 * installed (PREFIX/share/orthanc/plugins -> PREFIX/bin/cxrvqa, the model
 * under PREFIX/share/cxrvqa/models) and that file exists, else the build
 * tree's path compiled in. */
static const char *installed_or(const char *rel, const char *build, char *buf, size_t n) {
    Dl_info info;
    struct stat st;
    if (dladdr((const void *)&g_op, &info) && info.dli_fname && info.dli_fname[0] == '/') {
        const char *slash = strrchr(info.dli_fname, '/');
        char joined[4096], real[PATH_MAX];
        snprintf(joined, sizeof joined, "%.*s/%s", (int)(slash - info.dli_fname), info.dli_fname, rel);
        if (realpath(joined, real) && stat(real, &st) == 0 && S_ISREG(st.st_mode) && strlen(real) < n) {
            snprintf(buf, n, "%s", real);
            return buf;
        }
    }
    return build;
}

static int load_config(op_config *c, char *err, size_t errlen) {
    memset(c, 0, sizeof *c);
    c->request_log = OP_LOG_WARNING;
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
    if (!rc && sec)
        rc = op_config_check_keys(sec, KNOWN_KEYS, err, errlen);
    if (!rc) { /* the level of a successful request's log line */
        const cJSON *v = cJSON_GetObjectItemCaseSensitive(sec, "RequestLog");
        const char *l = cJSON_IsString(v) ? v->valuestring : NULL;
        if (v && !(l && (!strcmp(l, "warning") || !strcmp(l, "info") || !strcmp(l, "off")))) {
            snprintf(err, errlen, "CxrVqa.RequestLog must be \"warning\" (the default: shown at Orthanc's default "
                                  "log level), \"info\" (with --verbose) or \"off\"");
            rc = -1;
        } else if (l) {
            c->request_log = !strcmp(l, "warning") ? OP_LOG_WARNING : !strcmp(l, "info") ? OP_LOG_INFO : OP_LOG_OFF;
        }
    }
    char exe_buf[4096], model_buf[4096];
    const char *def_exe = installed_or(CXRVQA_PLUGIN_TO_EXE, CXRVQA_EXE, exe_buf, sizeof exe_buf);
    const char *def_model = installed_or(CXRVQA_PLUGIN_TO_MODEL, CXRVQA_DEFAULT_MODEL, model_buf, sizeof model_buf);
    if (!rc)
        rc = get_str(sec, "Model", def_model, &c->model, err, errlen);
    if (!rc)
        rc = get_str(sec, "AuditDatabase", def_audit, &c->audit_db, err, errlen);
    if (!rc)
        rc = get_str(sec, "WorkerCommand", def_exe, &c->worker_cmd, err, errlen);
    if (!rc)
        rc = get_str(sec, "UidRoot", NULL, &c->uid_root, err, errlen);
    if (!rc)
        rc = get_str(sec, "QueuePath", def_queue, &c->queue_path, err, errlen);
    if (!rc) /* the audit chain's head, copied out on a schedule (SECURITY.md: anchors) */
        rc = get_str(sec, "AuditAnchorLog", NULL, &c->anchor_log, err, errlen);
    if (!rc)
        rc = get_int(sec, "AuditAnchorMinutes", 60, 1, 7 * 24 * 60, &c->anchor_minutes, err, errlen);
    if (!rc) /* keyed audit chain (SECURITY.md): the key must exist, be 0600 or stricter and long enough */
        rc = get_str(sec, "AuditKeyFile", NULL, &c->audit_key, err, errlen);
    if (!rc && c->audit_key) {
        char kerr[CXR_ERRMSG_MAX];
        if (cxr_audit_key_id(c->audit_key, c->audit_key_id, kerr, sizeof kerr) != CXR_OK) {
            snprintf(err, errlen, "CxrVqa.AuditKeyFile: %.400s", kerr);
            rc = -1;
        }
    }
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
    if (!rc)
        rc = get_list(sec, "ForwardTo", NULL, 0, 0, c->forward_to, &c->n_forward_to, err, errlen);
    if (!rc)
        rc = check_forward_to(root, c, err, errlen);
    if (!rc)
        rc = get_int(sec, "ForwardAttempts", 4, 1, 20, &c->forward_attempts, err, errlen);
    if (!rc)
        rc = get_int(sec, "ForwardBackoffSeconds", 10, 0, 3600, &c->forward_backoff_s, err, errlen);
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

/* A request's log record: the route, its start, the instance or study of
 * the URL, the user as audited. */
void op_req_begin(op_request_log *l, op_route route, const OrthancPluginHttpRequest *r, const char *claimed) {
    memset(l, 0, sizeof *l);
    l->route = route;
    l->t0_ms = op_now_ms();
    l->instance = r->groupsCount > 0 ? r->groups[0] : NULL;
    audit_user(r, claimed, l->user, sizeof l->user);
}

/* Answer an error, count and log it. */
static void req_error(OrthancPluginRestOutput *output, const op_request_log *l, int status, const char *msg,
                      const char *code) {
    op_answer_error(output, status, msg, code);
    op_request_done(l, status, 0, code, msg);
}

static int method_is(OrthancPluginRestOutput *output, const op_request_log *l, const OrthancPluginHttpRequest *r,
                     OrthancPluginHttpMethod m) {
    if (r->method == m)
        return 1;
    OrthancPluginSendMethodNotAllowed(g_op.ctx, output, m == OrthancPluginHttpMethod_Get ? "GET" : "POST");
    op_request_done(l, 405, 0, "method-not-allowed", NULL);
    return 0;
}

/* POST /cxrvqa/instances/{id}/ask {"question": …, "user": …, "lang": …} */
static OrthancPluginErrorCode route_ask(OrthancPluginRestOutput *output, const char *url,
                                        const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    op_req_begin(&l, OP_R_ASK, request, NULL);
    if (!method_is(output, &l, request, OrthancPluginHttpMethod_Post))
        return OrthancPluginErrorCode_Success;
    if (request->bodySize > OP_MAX_BODY_BYTES) {
        req_error(output, &l, 413, "request body too large", "too-big");
        return OrthancPluginErrorCode_Success;
    }
    op_ask_body body;
    char why[160];
    int bad = op_parse_ask_body(request->body, request->bodySize, &body, why, sizeof why);
    if (bad) {
        req_error(output, &l, bad, why, bad == 413 ? "too-big" : "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    audit_user(request, body.user, l.user, sizeof l.user);
    op_request rq = {.kind = OP_ASK,
                     .instance = request->groups[0],
                     .question = body.question,
                     .user = l.user,
                     .lang = body.lang,
                     .store_sr = 1};
    op_result r;
    op_run(&rq, &r);
    op_count(r.status == 200 ? &g_op.n.asks : &g_op.n.asks_failed);
    op_answer_json(output, r.status, r.json);
    int refused = cxr_json_bool(r.json, "refused");
    char detail[CXR_ERRMSG_MAX + 64];
    if (r.status == 200 && refused)
        snprintf(detail, sizeof detail, "%s", cxr_json_str(r.json, "reason_code") ? cxr_json_str(r.json, "reason_code") : "");
    else if (r.status == 200)
        snprintf(detail, sizeof detail, "answer=%s sr=%s", cxr_json_str(r.json, "answer") ? cxr_json_str(r.json, "answer") : "?",
                 r.sr_id[0] ? r.sr_id : "none");
    else
        snprintf(detail, sizeof detail, "%s", cxr_json_str(r.json, "error") ? cxr_json_str(r.json, "error") : "");
    op_request_done(&l, r.status, refused, r.status == 200 ? NULL : cxr_json_str(r.json, "code"), detail);
    op_result_free(&r);
    op_ask_body_free(&body);
    return OrthancPluginErrorCode_Success;
}

/* The canonical name of a heatmap's finding: any name the question parser
 * reads as one known finding ("effusion", "Pleural_Effusion", "积液"), into
 * canon; 0 when it reads none (or a refusal). */
static int heatmap_finding(const char *name, char *canon, size_t n) {
    char q[200];
    int k = snprintf(q, sizeof q, "Is there %s?", name);
    if (k < 0 || (size_t)k >= sizeof q)
        return 0;
    for (char *c = q; *c; c++)
        if (*c == '_')
            *c = ' ';
    cxr_question pq;
    if (cxr_question_parse(q, NULL, &pq) != CXR_OK || pq.intent == CXR_INTENT_REFUSE || pq.n_findings != 1 ||
        !pq.findings[0].known)
        return 0;
    snprintf(canon, n, "%s", pq.findings[0].name);
    return 1;
}

/* GET /cxrvqa/instances/{id}/heatmap.png?finding=…[&question=…&user=…] */
static OrthancPluginErrorCode route_heatmap(OrthancPluginRestOutput *output, const char *url,
                                            const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    const char *user = get_arg(request, "user");
    op_req_begin(&l, OP_R_HEATMAP, request, user);
    if (!method_is(output, &l, request, OrthancPluginHttpMethod_Get))
        return OrthancPluginErrorCode_Success;
    const char *finding = get_arg(request, "finding");
    const char *lang = get_arg(request, "lang");
    if (!finding || !finding[0] || strlen(finding) > 128) {
        req_error(output, &l, 400, "missing \"finding\" (e.g. ?finding=pleural_effusion)", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    if (lang && strcmp(lang, "en") != 0 && strcmp(lang, "zh") != 0) {
        req_error(output, &l, 400, "\"lang\" must be \"en\" or \"zh\"", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    op_request rq = {.kind = OP_HEATMAP,
                     .instance = request->groups[0],
                     .question = get_arg(request, "question"),
                     .finding = finding,
                     .user = l.user,
                     .lang = lang};
    char canon[64];
    if (!heatmap_finding(finding, canon, sizeof canon)) {
        /* refused before any worker sees it, and audited as a refusal */
        char msg[400], aerr[CXR_ERRMSG_MAX] = "";
        snprintf(msg, sizeof msg,
                 "\"%.128s\" is not a finding the question parser knows (e.g. pleural_effusion, effusion, "
                 "pneumothorax, consolidation, cardiomegaly)",
                 finding);
        if (!op_valid_id(rq.instance) || !op_instance_exists(rq.instance)) {
            req_error(output, &l, 404, "unknown instance", "not-found");
            return OrthancPluginErrorCode_Success;
        }
        if (op_audit_plugin_row(&rq, "refusal", CXR_AUDIT_MINOR_FAILURE, "refused", CXR_ERR_ARG, msg, aerr,
                                sizeof aerr) != CXR_OK) {
            char m[CXR_ERRMSG_MAX + 96];
            snprintf(m, sizeof m, "the refusal could not be audited: %s", aerr);
            req_error(output, &l, 500, m, cxr_strerror(CXR_ERR_AUDIT));
            return OrthancPluginErrorCode_Success;
        }
        op_count(&g_op.n.heatmaps_failed);
        op_answer_error(output, 400, msg, "unknown-finding");
        op_request_done(&l, 400, 1, "unknown-finding", msg);
        return OrthancPluginErrorCode_Success;
    }
    rq.finding = canon;
    op_result r;
    op_run(&rq, &r);
    op_count(r.status == 200 ? &g_op.n.heatmaps : &g_op.n.heatmaps_failed);
    if (r.status == 200)
        OrthancPluginAnswerBuffer(g_op.ctx, output, r.png, r.png_len, "image/png");
    else
        op_answer_json(output, r.status, r.json);
    char detail[CXR_ERRMSG_MAX + 96];
    if (r.status == 200)
        snprintf(detail, sizeof detail, "finding=%s bytes=%zu", canon, r.png_len);
    else
        snprintf(detail, sizeof detail, "finding=%s: %s", canon,
                 cxr_json_str(r.json, "error") ? cxr_json_str(r.json, "error") : "");
    op_request_done(&l, r.status, 0, r.status == 200 ? NULL : cxr_json_str(r.json, "code"), detail);
    op_result_free(&r);
    return OrthancPluginErrorCode_Success;
}

/* An Orthanc resource ID: five groups of eight hex digits (a SHA-1). */
static int is_orthanc_id(const char *s) {
    if (strlen(s) != 44)
        return 0;
    for (int i = 0; i < 44; i++)
        if (i % 9 == 8 ? s[i] != '-' : !isxdigit((unsigned char)s[i]))
            return 0;
    return 1;
}

static int is_dicom_uid(const char *s) {
    size_t n = strlen(s);
    if (n == 0 || n > 64 || s[0] == '.' || s[n - 1] == '.')
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!isdigit((unsigned char)s[i]) && s[i] != '.')
            return 0;
    return 1;
}

typedef struct {
    char *buf;
    size_t n, cap;
    int rows;
} row_list;

static int collect_row(const cxr_audit_row *row, void *ctx) {
    row_list *rl = ctx;
    char *j = cxr_audit_row_json(row);
    size_t k = j ? strlen(j) : 0;
    if (!j || rl->n + k + 3 > rl->cap) {
        size_t cap = (rl->cap + k + 3) * 2;
        char *b = j ? realloc(rl->buf, cap) : NULL;
        if (!b) {
            free(j);
            return CXR_ERR_NOMEM;
        }
        rl->buf = b, rl->cap = cap;
    }
    if (rl->rows++)
        rl->buf[rl->n++] = ',';
    memcpy(rl->buf + rl->n, j, k);
    rl->n += k;
    free(j);
    return 0;
}

/* GET /cxrvqa/audit[?study=ORTHANC-ID|StudyInstanceUID][&since=UTC][&limit=N]:
 * audit rows, newest first (default 100); without a study, of all studies. */
static OrthancPluginErrorCode route_audit(OrthancPluginRestOutput *output, const char *url,
                                          const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    op_req_begin(&l, OP_R_AUDIT, request, NULL);
    if (!method_is(output, &l, request, OrthancPluginHttpMethod_Get))
        return OrthancPluginErrorCode_Success;
    const char *study = get_arg(request, "study"), *since = get_arg(request, "since");
    l.instance = study;
    char uid[80] = "";
    if (study && is_orthanc_id(study)) {
        char uri[96];
        snprintf(uri, sizeof uri, "/studies/%s", study);
        cJSON *st = op_rest_get_json(uri);
        const char *u = cxr_json_str(cJSON_GetObjectItemCaseSensitive(st, "MainDicomTags"), "StudyInstanceUID");
        if (u)
            snprintf(uid, sizeof uid, "%s", u);
        cJSON_Delete(st);
        if (!uid[0]) {
            req_error(output, &l, 404, "unknown study (no Orthanc study has this ID)", "not-found");
            return OrthancPluginErrorCode_Success;
        }
    } else if (study && is_dicom_uid(study)) {
        snprintf(uid, sizeof uid, "%s", study);
    } else if (study) {
        req_error(output, &l, 400,
                  "\"study\" must be an Orthanc study ID (8-8-8-8-8 hex digits) or a Study Instance UID (digits "
                  "and dots, at most 64)",
                  "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    const char *lim = get_arg(request, "limit");
    char *end = NULL;
    long limit = lim ? strtol(lim, &end, 10) : 100;
    if (lim && (!*lim || *end || limit < 1 || limit > 100000)) {
        req_error(output, &l, 400, "\"limit\" must be an integer in [1, 100000]", "bad-request");
        return OrthancPluginErrorCode_Success;
    }
    char err[CXR_ERRMSG_MAX] = "";
    cxr_audit_params ap = cxr_audit_params_default();
    ap.read_only = 1;
    cxr_audit *a = NULL;
    row_list rl = {malloc(4096), 1, 4096, 0};
    int rc = rl.buf ? cxr_audit_open(g_op.cfg.audit_db, &ap, &a, err, sizeof err) : CXR_ERR_NOMEM;
    if (rc == CXR_OK) {
        rl.buf[0] = '[';
        cxr_audit_filter f = {uid[0] ? uid : NULL, since && since[0] ? since : NULL, limit, 1};
        rc = cxr_audit_scan(a, &f, collect_row, &rl, err, sizeof err);
    }
    cxr_audit_close(a);
    if (rc == CXR_OK) {
        rl.buf[rl.n++] = ']';
        OrthancPluginAnswerBuffer(g_op.ctx, output, rl.buf, (uint32_t)rl.n, "application/json");
        char d[64];
        snprintf(d, sizeof d, "rows=%d", rl.rows);
        op_request_done(&l, 200, 0, NULL, d);
    } else {
        req_error(output, &l, rc == CXR_ERR_ARG ? 400 : 500, err[0] ? err : "out of memory", cxr_strerror(rc));
    }
    free(rl.buf);
    return OrthancPluginErrorCode_Success;
}

/* GET /cxrvqa/metrics: Prometheus text format 0.0.4 (also when disabled) */
static OrthancPluginErrorCode route_metrics(OrthancPluginRestOutput *output, const char *url,
                                            const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    op_req_begin(&l, OP_R_METRICS, request, NULL);
    if (!method_is(output, &l, request, OrthancPluginHttpMethod_Get))
        return OrthancPluginErrorCode_Success;
    op_request_done(&l, 200, 0, NULL, NULL); /* counted before rendering: the scrape sees itself */
    char *text = op_metrics_text();
    if (!text)
        return OrthancPluginErrorCode_NotEnoughMemory;
    OrthancPluginAnswerBuffer(g_op.ctx, output, text, strlen(text), "text/plain; version=0.0.4");
    free(text);
    return OrthancPluginErrorCode_Success;
}

/* Every /cxrvqa route of a disabled plugin (a refused configuration): 503
 * with the reason; the metrics still answer, with cxrvqa_enabled 0. */
static OrthancPluginErrorCode route_disabled(OrthancPluginRestOutput *output, const char *url,
                                             const OrthancPluginHttpRequest *request) {
    if (request->groupsCount > 0 && strcmp(request->groups[0], "metrics") == 0)
        return route_metrics(output, url, request);
    op_request_log l;
    op_req_begin(&l, OP_R_DISABLED, request, NULL);
    l.instance = NULL;
    char m[CXR_ERRMSG_MAX + 96];
    snprintf(m, sizeof m, "the cxrvqa plugin is disabled by its configuration: %s", g_op.disabled_reason);
    req_error(output, &l, 503, m, "disabled");
    return OrthancPluginErrorCode_Success;
}

/* GET /cxrvqa/status */
static OrthancPluginErrorCode route_status(OrthancPluginRestOutput *output, const char *url,
                                           const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    op_req_begin(&l, OP_R_STATUS, request, NULL);
    if (!method_is(output, &l, request, OrthancPluginHttpMethod_Get))
        return OrthancPluginErrorCode_Success;
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
    cJSON_AddNumberToObject(c, "forwards_sent", (double)n.forwards_sent);
    cJSON_AddNumberToObject(c, "forward_retries", (double)n.forward_retries);
    cJSON_AddNumberToObject(c, "forwards_failed", (double)n.forwards_failed);
    cJSON_AddNumberToObject(c, "forwards_pending", (double)op_forward_pending());
    cJSON_AddStringToObject(o, "audit_database", g_op.cfg.audit_db);
    if (g_op.cfg.audit_key)
        cJSON_AddStringToObject(o, "audit_key_id", g_op.cfg.audit_key_id);
    cJSON_AddStringToObject(o, "version", OP_VERSION);
    op_answer_json(output, 200, o);
    cJSON_Delete(o);
    op_request_done(&l, 200, 0, NULL, NULL);
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
        if (!g_op.disabled && op_forward_start() != CXR_OK)
            OrthancPluginLogError(g_op.ctx, "cxrvqa: cannot start the forward thread: SRs are not sent to ForwardTo");
        break;
    case OrthancPluginChangeType_OrthancStopped:
        op_thread_stop();
        op_forward_stop();
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
    if (g_op.cfg.audit_key) {
        argv[a++] = "--audit-key";
        argv[a++] = g_op.cfg.audit_key;
    }
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

/* A refused configuration: log why, answer 503 with the reason on every
 * /cxrvqa route, start nothing, and let Orthanc run (returning an error from
 * OrthancPluginInitialize would stop the whole server). */
static int32_t disable(const char *why) {
    g_op.disabled = 1;
    snprintf(g_op.disabled_reason, sizeof g_op.disabled_reason, "%.*s", (int)sizeof g_op.disabled_reason - 1, why);
    char m[sizeof g_op.disabled_reason + 160];
    snprintf(m, sizeof m, "cxrvqa: disabled: bad configuration: %s; the /cxrvqa routes answer 503 until the "
                          "\"CxrVqa\" section is fixed and Orthanc restarted", g_op.disabled_reason);
    OrthancPluginLogError(g_op.ctx, m);
    OrthancPluginRegisterRestCallbackNoLock(g_op.ctx, "/cxrvqa/(.*)", route_disabled);
    return 0;
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
        config_free(&g_op.cfg);
        return disable(cerr);
    }
    /* for the status route and the plugin's own audit rows ("" when
     * unreadable: the workers then fail to start anyway) */
    cxr_sha256_file(g_op.cfg.model, g_op.model_sha256);
    if (g_op.cfg.auto_screen) {
        if (queue_open(g_op.cfg.queue_path, &g_op.q, cerr, sizeof cerr) != CXR_OK) {
            snprintf(err, sizeof err, "cannot open the auto-screen queue (CxrVqa.QueuePath): %s", cerr);
            config_free(&g_op.cfg);
            return disable(err);
        }
    }
    start_pool();

    /* ask and heatmap run in parallel (the pool is thread-safe) */
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/instances/([^/]+)/ask", route_ask);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/instances/([^/]+)/heatmap\\.png", route_heatmap);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/studies/([^/]+)/screen", op_route_screen);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/audit", route_audit);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/status", route_status);
    OrthancPluginRegisterRestCallbackNoLock(context, "/cxrvqa/metrics", route_metrics);
    OrthancPluginRegisterOnChangeCallback(context, on_change);
    OrthancPluginExtendOrthancExplorer(context, (const char *)OP_EXPLORER_JS);
    return 0;
}

ORTHANC_PLUGINS_API void OrthancPluginFinalize(void) {
    op_thread_stop();
    op_forward_stop();
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
