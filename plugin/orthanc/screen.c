/*
 * screen.c — the plugin's work: one request for one Orthanc instance
 * through the worker pool (fetch the DICOM bytes, call a worker, store the SR
 * it returns back into Orthanc, translate failures into HTTP statuses and
 * audit rows), screening an instance with the configured questions, the
 * auto-screen thread that drains the persisted queue, and the screening job.
 * It never decodes an image or runs the model itself: the workers do. It
 * never runs inside the on-change callback (that one only enqueues).
 */
#include "internal.h"
#include "audit.h"

#include <ctype.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ helpers */

void op_count(uint64_t *counter) {
    pthread_mutex_lock(&g_op.mu);
    (*counter)++;
    pthread_mutex_unlock(&g_op.mu);
}

cJSON *op_error_json(const char *msg, const char *code) {
    cJSON *o = cJSON_CreateObject();
    if (o) {
        cJSON_AddStringToObject(o, "error", msg ? msg : "");
        cJSON_AddStringToObject(o, "code", code ? code : "internal");
    }
    return o;
}

int op_instance_exists(const char *id) {
    char uri[128];
    snprintf(uri, sizeof uri, "/instances/%s", id);
    cJSON *j = op_valid_id(id) ? op_rest_get_json(uri) : NULL;
    int ok = cJSON_IsObject(j);
    cJSON_Delete(j);
    return ok;
}

int op_valid_id(const char *id) {
    size_t n = id ? strlen(id) : 0;
    if (n == 0 || n > 64)
        return 0;
    for (size_t i = 0; i < n; i++)
        if (!(isdigit((unsigned char)id[i]) || (id[i] >= 'a' && id[i] <= 'f') || id[i] == '-'))
            return 0;
    return 1;
}

cJSON *op_rest_get_json(const char *uri) {
    OrthancPluginMemoryBuffer b;
    memset(&b, 0, sizeof b);
    if (OrthancPluginRestApiGet(g_op.ctx, &b, uri) != OrthancPluginErrorCode_Success)
        return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)b.data, b.size);
    OrthancPluginFreeMemoryBuffer(g_op.ctx, &b);
    return j;
}

cJSON *op_rest_post_json(const char *uri, const void *body, size_t len) {
    OrthancPluginMemoryBuffer b;
    memset(&b, 0, sizeof b);
    if (len > UINT32_MAX || OrthancPluginRestApiPost(g_op.ctx, &b, uri, body, (uint32_t)len) !=
                                OrthancPluginErrorCode_Success)
        return NULL;
    cJSON *j = cJSON_ParseWithLength((const char *)b.data, b.size);
    OrthancPluginFreeMemoryBuffer(g_op.ctx, &b);
    return j;
}

static void set_error(op_result *out, int status, const char *msg, const char *code) {
    cJSON_Delete(out->json);
    out->status = status;
    out->json = op_error_json(msg, code);
}

void op_result_free(op_result *r) {
    if (!r)
        return;
    cJSON_Delete(r->json);
    free(r->png);
    memset(r, 0, sizeof *r);
}

/* HTTP status of a CXR_ERR_* that came back from the pool (the pool's own
 * failures and the errors a worker's handler reported). */
static int http_status(int rc) {
    switch (rc) {
    case CXR_ERR_WORKER:
    case CXR_ERR_MEMLIMIT:
    case CXR_ERR_PROTOCOL: return 502;
    case CXR_ERR_TIMEOUT: return 504;
    case CXR_ERR_BUSY: return 503;
    case CXR_ERR_ARG: return 400;
    case CXR_ERR_NOT_DICOM:
    case CXR_ERR_NOT_IMAGE:
    case CXR_ERR_PHOTOMETRIC:
    case CXR_ERR_DIMENSIONS:
    case CXR_ERR_TRUNCATED:
    case CXR_ERR_CORRUPT:
    case CXR_ERR_TRANSFER_SYNTAX:
    case CXR_ERR_PIXEL_FORMAT:
    case CXR_ERR_TOO_SMALL:
    case CXR_ERR_NOT_CHEST:
    case CXR_ERR_LATERAL: return 422; /* the instance cannot be read as a chest radiograph */
    default: return 500;              /* audit, SR, model, I/O, memory, internal */
    }
}

/* The pool itself failed (no worker handled the request, or it died doing
 * so): the worker wrote no audit row, the plugin does. */
static int is_pool_failure(int rc) {
    return rc == CXR_ERR_WORKER || rc == CXR_ERR_TIMEOUT || rc == CXR_ERR_MEMLIMIT || rc == CXR_ERR_PROTOCOL ||
           rc == CXR_ERR_BUSY;
}

/* An audit row the plugin writes itself, for a request no worker answered
 * (event "worker-failure", outcome 8) or one it refused before calling one
 * ("refusal", outcome 4): the instance's identifiers as Orthanc's index
 * knows them. The patient ID is left out: the workers may pseudonymise it
 * and the plugin does not hold their key. One handle per call: these rows
 * are rare and a handle must not be shared between threads. */
int op_audit_plugin_row(const op_request *rq, const char *event, int outcome, const char *answer, int rc,
                        const char *reason, char *aerr, size_t aerrlen) {
    char uri[160], source[96], question[200];
    snprintf(uri, sizeof uri, "/instances/%s", rq->instance);
    cJSON *inst = op_rest_get_json(uri);
    snprintf(uri, sizeof uri, "/instances/%s/series", rq->instance);
    cJSON *series = op_rest_get_json(uri);
    snprintf(uri, sizeof uri, "/instances/%s/study", rq->instance);
    cJSON *study = op_rest_get_json(uri);
    const cJSON *itags = cJSON_GetObjectItemCaseSensitive(inst, "MainDicomTags");
    const cJSON *setags = cJSON_GetObjectItemCaseSensitive(series, "MainDicomTags");
    const cJSON *sttags = cJSON_GetObjectItemCaseSensitive(study, "MainDicomTags");
    snprintf(source, sizeof source, "orthanc:%s", rq->instance);
    /* a heatmap without a question: what was asked for, as given */
    if (rq->kind == OP_HEATMAP && !rq->question)
        snprintf(question, sizeof question, "heatmap finding=%.128s", rq->finding ? rq->finding : "");

    cxr_audit_record r;
    cxr_audit_record_init(&r);
    r.event_type = event;
    r.outcome = outcome;
    r.user = rq->user;
    r.application = "ORTHANC";
    r.question = rq->kind == OP_ASK || rq->question ? rq->question : question;
    r.language = rq->lang;
    r.study_uid = cxr_json_str(sttags, "StudyInstanceUID");
    r.series_uid = cxr_json_str(setags, "SeriesInstanceUID");
    r.sop_uid = cxr_json_str(itags, "SOPInstanceUID");
    r.accession = cxr_json_str(sttags, "AccessionNumber");
    r.source = source;
    r.answer = answer;
    r.model_sha256 = g_op.model_sha256[0] ? g_op.model_sha256 : NULL;
    r.error_code = rc;
    r.reason = reason;

    cxr_audit *a = NULL;
    cxr_audit_params ap = cxr_audit_params_default();
    ap.chain_key_file = g_op.cfg.audit_key;
    int arc = cxr_audit_open(g_op.cfg.audit_db, &ap, &a, aerr, aerrlen);
    if (arc == CXR_OK)
        arc = cxr_audit_append(a, &r, NULL, aerr, aerrlen);
    cxr_audit_close(a);
    cJSON_Delete(inst);
    cJSON_Delete(series);
    cJSON_Delete(study);
    return arc;
}

/* ------------------------------------------------------------ op_run */

static cJSON *build_request(const op_request *rq, const char *sop_uid) {
    cJSON *o = cJSON_CreateObject();
    char source[96];
    snprintf(source, sizeof source, "orthanc:%s", rq->instance);
    cJSON_AddStringToObject(o, CXR_P_OP, rq->kind == OP_ASK ? CXR_P_OP_ASK : CXR_P_OP_HEATMAP);
    if (rq->question)
        cJSON_AddStringToObject(o, CXR_P_QUESTION, rq->question);
    if (rq->finding)
        cJSON_AddStringToObject(o, CXR_P_FINDING, rq->finding);
    cJSON_AddStringToObject(o, CXR_P_USER, rq->user ? rq->user : "orthanc");
    if (rq->lang)
        cJSON_AddStringToObject(o, CXR_P_LANG, rq->lang);
    else
        cJSON_AddNullToObject(o, CXR_P_LANG);
    cJSON_AddStringToObject(o, CXR_P_APP, "ORTHANC");
    cJSON_AddStringToObject(o, CXR_P_SOURCE, source);
    if (sop_uid) /* the worker's dedupe key: sha256(SOP Instance UID, model, question) */
        cJSON_AddStringToObject(o, CXR_P_SOP_UID, sop_uid);
    cJSON_AddBoolToObject(o, CXR_P_SR, rq->kind == OP_ASK && rq->store_sr);
    cJSON_AddBoolToObject(o, CXR_P_HEATMAP, rq->kind == OP_HEATMAP);
    cJSON_AddBoolToObject(o, CXR_P_SKIP_IF_DONE, rq->skip_if_done);
    return o;
}

/* Store the SR bytes in Orthanc (it joins the source's study by its UIDs). */
static int store_sr(const uint8_t *sr, size_t len, char *id, size_t idlen) {
    cJSON *r = op_rest_post_json("/instances", sr, len);
    const char *s = cxr_json_str(r, "ID");
    int ok = s && op_valid_id(s);
    if (ok)
        snprintf(id, idlen, "%s", s);
    cJSON_Delete(r);
    return ok ? CXR_OK : CXR_ERR_SR;
}

void op_run(const op_request *rq, op_result *out) {
    memset(out, 0, sizeof *out);
    if (!g_op.pool) {
        char m[CXR_ERRMSG_MAX + 64];
        snprintf(m, sizeof m, "the worker pool is not running: %s", g_op.pool_err);
        set_error(out, 503, m, "unavailable");
        return;
    }
    OrthancPluginMemoryBuffer dicom;
    memset(&dicom, 0, sizeof dicom);
    char uri[128];
    cJSON *inst = NULL;
    if (op_valid_id(rq->instance)) {
        snprintf(uri, sizeof uri, "/instances/%s", rq->instance);
        inst = op_rest_get_json(uri);
    }
    if (!inst || OrthancPluginGetDicomForInstance(g_op.ctx, &dicom, rq->instance) != OrthancPluginErrorCode_Success) {
        cJSON_Delete(inst);
        set_error(out, 404, "unknown instance", "not-found");
        return;
    }
    if (dicom.size > OP_MAX_INSTANCE_BYTES) {
        cJSON_Delete(inst);
        OrthancPluginFreeMemoryBuffer(g_op.ctx, &dicom);
        set_error(out, 413, "the instance is larger than a worker accepts", "too-big");
        return;
    }
    cJSON *rj = build_request(rq, cxr_json_str(cJSON_GetObjectItemCaseSensitive(inst, "MainDicomTags"), "SOPInstanceUID"));
    char *rs = rj ? cJSON_PrintUnformatted(rj) : NULL;
    cJSON_Delete(rj);
    cJSON_Delete(inst);
    if (!rs) {
        OrthancPluginFreeMemoryBuffer(g_op.ctx, &dicom);
        set_error(out, 500, "out of memory", "out-of-memory");
        return;
    }
    cxr_msg req = {.json = rs, .json_len = strlen(rs), .payload = dicom.data, .payload_len = dicom.size};
    cxr_msg resp = {0};
    char err[CXR_ERRMSG_MAX] = "";
    int rc = cxr_pool_call(g_op.pool, &req, &resp, err, sizeof err);
    free(rs);
    OrthancPluginFreeMemoryBuffer(g_op.ctx, &dicom);

    if (rc != CXR_OK) {
        int status = http_status(rc);
        const char *code = cxr_strerror(rc);
        if (is_pool_failure(rc)) {
            char aerr[CXR_ERRMSG_MAX] = "";
            op_count(&g_op.n.worker_failures);
            if (op_audit_plugin_row(rq, "worker-failure", CXR_AUDIT_SERIOUS_FAILURE, "error", rc, err, aerr,
                                    sizeof aerr) != CXR_OK) {
                char m[2 * CXR_ERRMSG_MAX + 64];
                snprintf(m, sizeof m, "%s; and the audit row could not be written: %s", err, aerr);
                OrthancPluginLogError(g_op.ctx, m);
                set_error(out, 500, m, cxr_strerror(CXR_ERR_AUDIT));
                return;
            }
            /* logged by the caller: the route's request line, the screening's failure line */
        }
        set_error(out, status, err[0] ? err : code, code);
        return;
    }

    cJSON *ans = cJSON_ParseWithLength(resp.json, resp.json_len);
    if (!cJSON_IsObject(ans)) {
        cJSON_Delete(ans);
        cxr_msg_free(&resp);
        set_error(out, 502, "the worker answered with malformed JSON", cxr_strerror(CXR_ERR_PROTOCOL));
        return;
    }
    if (cxr_json_str(ans, CXR_P_ERROR)) {
        /* an answer object that carries an error (the file could not be
         * read, …): the worker audited it; pass it on with its status */
        int code = (int)cxr_json_num(ans, CXR_P_ERROR_CODE, CXR_ERR_INTERNAL);
        int st = code < CXR_OK && code > CXR_ERR_INTERNAL ? http_status(code) : 500;
        if (!cxr_json_str(ans, CXR_P_CODE))
            cJSON_AddStringToObject(ans, CXR_P_CODE, "internal");
        cJSON_DeleteItemFromObjectCaseSensitive(ans, CXR_P_ERROR_CODE);
        cJSON_DeleteItemFromObjectCaseSensitive(ans, CXR_P_ATTACHMENTS);
        cxr_msg_free(&resp);
        out->status = st;
        out->json = ans;
        return;
    }
    out->skipped = cxr_json_bool(ans, CXR_P_SKIPPED);

    /* attachments: their sizes must add up to the payload */
    const uint8_t *sr = NULL, *png = NULL;
    size_t sr_len = 0, png_len = 0, off = 0;
    const cJSON *att = cJSON_GetObjectItemCaseSensitive(ans, CXR_P_ATTACHMENTS), *a;
    cJSON_ArrayForEach(a, att) {
        const char *name = cxr_json_str(a, CXR_P_ATT_NAME);
        double b = cxr_json_num(a, CXR_P_ATT_BYTES, -1);
        if (!name || b < 0 || b > (double)(resp.payload_len - off)) {
            off = SIZE_MAX;
            break;
        }
        if (strcmp(name, CXR_P_ATT_SR) == 0)
            sr = resp.payload + off, sr_len = (size_t)b;
        else if (strcmp(name, CXR_P_ATT_HEATMAP) == 0)
            png = resp.payload + off, png_len = (size_t)b;
        off += (size_t)b;
    }
    if (off == SIZE_MAX || (att && off != resp.payload_len)) {
        cJSON_Delete(ans);
        cxr_msg_free(&resp);
        set_error(out, 502, "the worker's attachments do not match its payload", cxr_strerror(CXR_ERR_PROTOCOL));
        return;
    }
    if (!att && rq->kind == OP_HEATMAP && resp.payload_len > 0)
        png = resp.payload, png_len = resp.payload_len;

    if (rq->kind == OP_HEATMAP) {
        if (!png && !resp.payload_len) {
            /* answered, but no map: the finding was answered no or not
               assessed (evidence is drawn only for yes / uncertain), or it
               is unknown; the answer's warning says which */
            char msg[CXR_ERRMSG_MAX] = "no evidence map for this finding";
            const cJSON *w;
            cJSON_ArrayForEach(w, cJSON_GetObjectItemCaseSensitive(ans, CXR_P_WARNINGS))
                if (cJSON_IsString(w) && strncmp(w->valuestring, "heatmap", 7) == 0)
                    snprintf(msg, sizeof msg, "%s", w->valuestring);
            cJSON_Delete(ans);
            cxr_msg_free(&resp);
            set_error(out, 404, msg, "no-heatmap");
            return;
        }
        if (!png || png_len < 8 || memcmp(png, "\x89PNG\r\n\x1a\n", 8) != 0) {
            cJSON_Delete(ans);
            cxr_msg_free(&resp);
            set_error(out, 502, "the worker returned no heatmap PNG", cxr_strerror(CXR_ERR_PROTOCOL));
            return;
        }
        out->png = malloc(png_len);
        if (!out->png) {
            cJSON_Delete(ans);
            cxr_msg_free(&resp);
            set_error(out, 500, "out of memory", "out-of-memory");
            return;
        }
        memcpy(out->png, png, png_len);
        out->png_len = png_len;
    }
    if (rq->kind == OP_ASK) {
        if (sr && sr_len > 0 && rq->store_sr) {
            if (store_sr(sr, sr_len, out->sr_id, sizeof out->sr_id) == CXR_OK) {
                op_count(&g_op.n.srs_stored);
                const cJSON *srj = cJSON_GetObjectItemCaseSensitive(ans, "sr");
                op_forward_enqueue(out->sr_id, cxr_json_str(srj, "sop_instance_uid"),
                                   cxr_json_str(ans, "study_instance_uid"));
            } else {
                /* the answer stands and is audited; say that the SR is missing */
                cJSON *w = cJSON_GetObjectItemCaseSensitive(ans, "warnings");
                if (!cJSON_IsArray(w)) {
                    cJSON_DeleteItemFromObjectCaseSensitive(ans, "warnings");
                    w = cJSON_AddArrayToObject(ans, "warnings");
                }
                cJSON_AddItemToArray(w, cJSON_CreateString("the structured report could not be stored in Orthanc"));
                op_count(&g_op.n.sr_store_failed);
                OrthancPluginLogError(g_op.ctx, "cxrvqa: Orthanc refused the structured report");
            }
        }
        cJSON_DeleteItemFromObjectCaseSensitive(ans, "sr_orthanc_id");
        if (out->sr_id[0])
            cJSON_AddStringToObject(ans, "sr_orthanc_id", out->sr_id);
        else
            cJSON_AddNullToObject(ans, "sr_orthanc_id");
    }
    cxr_msg_free(&resp);
    out->json = ans;
    out->status = 200;
}

/* ---------------------------------------------------------- screening */

static int in_list(char *const *list, int n, const char *v) {
    for (int i = 0; i < n; i++)
        if (strcmp(list[i], v) == 0)
            return 1;
    return 0;
}

/* Upper-cased, trimmed copy of a tag value. */
static void norm(char *dst, size_t cap, const char *s) {
    size_t n = 0;
    if (!s)
        s = "";
    while (*s == ' ')
        s++;
    for (; *s && n + 1 < cap; s++)
        dst[n++] = (char)toupper((unsigned char)*s);
    while (n > 0 && dst[n - 1] == ' ')
        n--;
    dst[n] = 0;
}

/* 1 when the instance is a chest radiograph to screen, 0 when not, -1 when
 * Orthanc does not know it. Our own SRs (modality SR) are never eligible. */
static int eligible(const char *instance) {
    char uri[128];
    snprintf(uri, sizeof uri, "/instances/%s/series", instance);
    cJSON *s = op_rest_get_json(uri);
    if (!s)
        return -1;
    const cJSON *t = cJSON_GetObjectItemCaseSensitive(s, "MainDicomTags");
    char mod[64], part[64];
    norm(mod, sizeof mod, cxr_json_str(t, "Modality"));
    norm(part, sizeof part, cxr_json_str(t, "BodyPartExamined"));
    cJSON_Delete(s);
    if (strcmp(mod, "SR") == 0)
        return 0;
    return in_list(g_op.cfg.modalities, g_op.cfg.n_modalities, mod) &&
           in_list(g_op.cfg.body_parts, g_op.cfg.n_body_parts, part);
}

/* One screen of an instance at a time: a second caller (the job and the
 * queue thread) waits, then finds the work done (skip_if_done). */
static void inflight_enter(const char *id) {
    pthread_mutex_lock(&g_op.mu);
    for (;;) {
        int busy = 0;
        for (int i = 0; i < g_op.n_inflight; i++)
            busy |= strcmp(g_op.inflight[i], id) == 0;
        if (!busy && g_op.n_inflight < (int)(sizeof g_op.inflight / sizeof g_op.inflight[0]))
            break;
        pthread_cond_wait(&g_op.cv, &g_op.mu);
    }
    g_op.inflight[g_op.n_inflight++] = (char *)id;
    pthread_mutex_unlock(&g_op.mu);
}

static void inflight_leave(const char *id) {
    pthread_mutex_lock(&g_op.mu);
    for (int i = 0; i < g_op.n_inflight; i++)
        if (g_op.inflight[i] == id) {
            g_op.inflight[i] = g_op.inflight[--g_op.n_inflight];
            break;
        }
    pthread_cond_broadcast(&g_op.cv);
    pthread_mutex_unlock(&g_op.mu);
}

int op_screen_instance(const char *instance, int *n_sr, int *n_skipped, int *failed_status) {
    *failed_status = 0;
    double t0 = op_now_ms();
    char line[400];
    int e = eligible(instance);
    if (e <= 0) {
        op_count(&g_op.n.screen_ineligible);
        snprintf(line, sizeof line, "cxrvqa: screen instance=\"%s\" outcome=not_eligible", instance);
        op_log(g_op.cfg.request_log ? OP_LOG_INFO : OP_LOG_OFF, line);
        return 1;
    }
    int rc = 0, sr0 = *n_sr, sk0 = *n_skipped, n_failed = 0;
    inflight_enter(instance);
    for (int i = 0; i < g_op.cfg.n_questions; i++) {
        op_request rq = {.kind = OP_ASK,
                         .instance = instance,
                         .question = g_op.cfg.questions[i],
                         .user = "cxrvqa-autoscreen",
                         .store_sr = 1,
                         .skip_if_done = 1};
        op_result r;
        op_run(&rq, &r);
        if (r.status == 200) {
            if (r.skipped) {
                (*n_skipped)++;
                op_count(&g_op.n.screen_skipped);
            } else {
                *n_sr += r.sr_id[0] != 0;
                op_count(&g_op.n.screened);
            }
        } else {
            op_count(&g_op.n.screen_failed);
            rc = -1;
            n_failed++;
            if (!*failed_status || r.status == 503)
                *failed_status = r.status;
            char m[CXR_ERRMSG_MAX + 160];
            snprintf(m, sizeof m, "cxrvqa: screening %s (\"%s\") failed: HTTP %d %s", instance, rq.question,
                     r.status, r.json ? cxr_json_str(r.json, "error") : "");
            OrthancPluginLogWarning(g_op.ctx, m);
        }
        int status = r.status;
        op_result_free(&r);
        if (status == 404)
            break; /* deleted meanwhile */
    }
    inflight_leave(instance);
    /* one line per screened instance: a warning when a question failed (each
       failure has its own line above), else at the request log's level, and
       only at info when everything had been screened before */
    int srs = *n_sr - sr0, skipped = *n_skipped - sk0;
    snprintf(line, sizeof line,
             "cxrvqa: screen instance=\"%s\" outcome=%s questions=%d srs=%d skipped=%d failed=%d ms=%.0f", instance,
             n_failed ? "failed" : "screened", g_op.cfg.n_questions, srs, skipped, n_failed, op_now_ms() - t0);
    op_log(n_failed                          ? OP_LOG_WARNING
           : skipped == g_op.cfg.n_questions ? (g_op.cfg.request_log ? OP_LOG_INFO : OP_LOG_OFF)
                                             : g_op.cfg.request_log,
           line);
    return rc;
}

/* --------------------------------------------------- auto-screen thread */

/* Append the audit chain's head to AuditAnchorLog (SECURITY.md: anchors)
 * and log the line; a failure is logged as an error and retried next time. */
static void anchor_now(void) {
    cxr_audit_params p = cxr_audit_params_default();
    p.read_only = 1;
    cxr_audit *a = NULL;
    char line[256], err[CXR_ERRMSG_MAX], msg[CXR_ERRMSG_MAX + 64];
    int rc = cxr_audit_open(g_op.cfg.audit_db, &p, &a, err, sizeof err);
    if (rc == CXR_OK)
        rc = cxr_audit_anchor(a, g_op.cfg.anchor_log, line, sizeof line, err, sizeof err);
    cxr_audit_close(a);
    if (rc == CXR_OK) {
        snprintf(msg, sizeof msg, "cxrvqa: audit head anchored: %s", line);
        OrthancPluginLogInfo(g_op.ctx, msg);
    } else {
        snprintf(msg, sizeof msg, "cxrvqa: audit head not anchored: %s", err);
        OrthancPluginLogError(g_op.ctx, msg);
    }
}

static void *thread_main(void *arg) {
    (void)arg;
    /* the first anchor a few seconds after start (the workers create the
       store as they start), then every AuditAnchorMinutes */
    int64_t next_anchor = (int64_t)time(NULL) + 5;
    for (;;) {
        pthread_mutex_lock(&g_op.mu);
        int stop = g_op.stop;
        pthread_mutex_unlock(&g_op.mu);
        if (stop)
            break;
        queue_item it;
        int64_t now = (int64_t)time(NULL);
        if (g_op.cfg.anchor_log && now >= next_anchor) {
            anchor_now();
            next_anchor = now + 60 * (int64_t)g_op.cfg.anchor_minutes;
        }
        int found = g_op.pool && g_op.q ? queue_peek(g_op.q, now, &it) : 0;
        if (found <= 0) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            ts.tv_sec += 1;
            pthread_mutex_lock(&g_op.mu);
            if (!g_op.stop)
                pthread_cond_timedwait(&g_op.cv, &g_op.mu, &ts);
            pthread_mutex_unlock(&g_op.mu);
            continue;
        }
        int n_sr = 0, n_sk = 0, st = 0;
        int rc = op_screen_instance(it.instance, &n_sr, &n_sk, &st);
        if (rc < 0 && st == 503 && it.attempts + 1 < OP_MAX_ATTEMPTS)
            queue_retry(g_op.q, it.seq, now + (5 << it.attempts)); /* pool busy: later */
        else
            queue_done(g_op.q, it.seq);
    }
    return NULL;
}

int op_thread_start(void) {
    pthread_mutex_lock(&g_op.mu);
    int running = g_op.thread_running;
    g_op.stop = 0;
    pthread_mutex_unlock(&g_op.mu);
    if (running || (!g_op.q && !g_op.cfg.anchor_log))
        return CXR_OK;
    if (pthread_create(&g_op.thread, NULL, thread_main, NULL) != 0)
        return CXR_ERR_INTERNAL;
    g_op.thread_running = 1;
    return CXR_OK;
}

void op_thread_stop(void) {
    if (!g_op.thread_running)
        return;
    pthread_mutex_lock(&g_op.mu);
    g_op.stop = 1;
    pthread_cond_broadcast(&g_op.cv);
    pthread_mutex_unlock(&g_op.mu);
    pthread_join(g_op.thread, NULL);
    g_op.thread_running = 0;
}

/* ------------------------------------------------------ screening job */

typedef struct {
    char study[72];
    char **instances;
    int n, next;
    int n_sr, n_skipped, n_ineligible, n_failed, last_status;
    char content[512];
} screen_job;

static void job_update(screen_job *j) {
    snprintf(j->content, sizeof j->content,
             "{\"Study\":\"%s\",\"Instances\":%d,\"Done\":%d,\"SRs\":%d,\"Skipped\":%d,"
             "\"NotEligible\":%d,\"Failed\":%d,\"LastFailureStatus\":%d}",
             j->study, j->n, j->next, j->n_sr, j->n_skipped, j->n_ineligible, j->n_failed, j->last_status);
}

static void job_finalize(void *p) {
    screen_job *j = p;
    for (int i = 0; i < j->n; i++)
        free(j->instances[i]);
    free(j->instances);
    free(j);
}

static float job_progress(void *p) {
    screen_job *j = p;
    return j->n ? (float)j->next / (float)j->n : 1.0f;
}

static const char *job_content(void *p) { return ((screen_job *)p)->content; }
static const char *job_serialized(void *p) {
    (void)p;
    return NULL; /* not kept across restarts: resubmit the study */
}

static OrthancPluginJobStepStatus job_step(void *p) {
    screen_job *j = p;
    if (j->next < j->n) {
        int st = 0;
        int rc = op_screen_instance(j->instances[j->next], &j->n_sr, &j->n_skipped, &st);
        if (rc == 1)
            j->n_ineligible++;
        else if (rc < 0)
            j->n_failed++, j->last_status = st;
        j->next++;
        job_update(j);
    }
    if (j->next < j->n)
        return OrthancPluginJobStepStatus_Continue;
    return j->n_failed ? OrthancPluginJobStepStatus_Failure : OrthancPluginJobStepStatus_Success;
}

static OrthancPluginErrorCode job_stop(void *p, OrthancPluginJobStopReason reason) {
    (void)p;
    (void)reason;
    return OrthancPluginErrorCode_Success; /* steps are short; nothing runs between them */
}

static OrthancPluginErrorCode job_reset(void *p) {
    screen_job *j = p;
    j->next = j->n_sr = j->n_skipped = j->n_ineligible = j->n_failed = j->last_status = 0;
    job_update(j);
    return OrthancPluginErrorCode_Success;
}

void op_answer_json(OrthancPluginRestOutput *output, int status, const cJSON *body) {
    char *s = body ? cJSON_PrintUnformatted(body) : NULL;
    const char *b = s ? s : "{\"error\":\"out of memory\",\"code\":\"out-of-memory\"}";
    if (status == 200) {
        OrthancPluginAnswerBuffer(g_op.ctx, output, b, strlen(b), "application/json");
    } else {
        OrthancPluginSetHttpHeader(g_op.ctx, output, "Content-Type", "application/json");
        OrthancPluginSendHttpStatus(g_op.ctx, output, (uint16_t)status, b, (uint32_t)strlen(b));
    }
    free(s);
}

OrthancPluginErrorCode op_route_screen(OrthancPluginRestOutput *output, const char *url,
                                       const OrthancPluginHttpRequest *request) {
    (void)url;
    op_request_log l;
    op_req_begin(&l, OP_R_SCREEN, request, NULL);
    if (request->method != OrthancPluginHttpMethod_Post) {
        OrthancPluginSendMethodNotAllowed(g_op.ctx, output, "POST");
        op_request_done(&l, 405, 0, "method-not-allowed", NULL);
        return OrthancPluginErrorCode_Success;
    }
    if (!g_op.pool) {
        char m[CXR_ERRMSG_MAX + 64];
        snprintf(m, sizeof m, "the worker pool is not running: %s", g_op.pool_err);
        op_answer_error(output, 503, m, "unavailable");
        op_request_done(&l, 503, 0, "unavailable", m);
        return OrthancPluginErrorCode_Success;
    }
    const char *study = request->groups[0];
    cJSON *list = NULL;
    if (op_valid_id(study)) {
        char uri[128];
        snprintf(uri, sizeof uri, "/studies/%s/instances", study);
        list = op_rest_get_json(uri);
    }
    if (!cJSON_IsArray(list)) {
        cJSON_Delete(list);
        op_answer_error(output, 404, "unknown study", "not-found");
        op_request_done(&l, 404, 0, "not-found", "unknown study");
        return OrthancPluginErrorCode_Success;
    }
    screen_job *j = calloc(1, sizeof *j);
    int n = cJSON_GetArraySize(list);
    if (j)
        j->instances = calloc((size_t)n + 1, sizeof *j->instances);
    int oom = !j || !j->instances;
    const cJSON *it;
    cJSON_ArrayForEach(it, list) {
        const char *id = cxr_json_str(it, "ID");
        if (oom || !id || !op_valid_id(id))
            continue;
        if (!(j->instances[j->n] = strdup(id)))
            oom = 1;
        else
            j->n++;
    }
    cJSON_Delete(list);
    if (oom) {
        if (j)
            job_finalize(j);
        op_request_done(&l, 500, 0, "out-of-memory", NULL);
        return OrthancPluginErrorCode_NotEnoughMemory;
    }
    snprintf(j->study, sizeof j->study, "%s", study);
    job_update(j);
    OrthancPluginJob *job = OrthancPluginCreateJob(g_op.ctx, j, job_finalize, "CxrVqaScreen", job_progress,
                                                   job_content, job_serialized, job_step, job_stop, job_reset);
    int n_inst = j->n;
    if (!job) {
        job_finalize(j);
        op_request_done(&l, 500, 0, "internal", "Orthanc did not create the job");
        return OrthancPluginErrorCode_InternalError;
    }
    char *id = OrthancPluginSubmitJob(g_op.ctx, job, 0);
    if (!id) {
        op_request_done(&l, 500, 0, "internal", "Orthanc did not accept the job");
        return OrthancPluginErrorCode_InternalError; /* Orthanc finalized the job */
    }
    op_count(&g_op.n.jobs);
    char path[128];
    snprintf(path, sizeof path, "/jobs/%s", id);
    cJSON *r = cJSON_CreateObject();
    cJSON_AddStringToObject(r, "ID", id);
    cJSON_AddStringToObject(r, "Path", path);
    OrthancPluginFreeString(g_op.ctx, id);
    op_answer_json(output, 200, r);
    char d[160];
    snprintf(d, sizeof d, "job=%s instances=%d", cxr_json_str(r, "ID") ? cxr_json_str(r, "ID") : "", n_inst);
    op_request_done(&l, 200, 0, NULL, d);
    cJSON_Delete(r);
    return OrthancPluginErrorCode_Success;
}
