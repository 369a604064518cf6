/*
 * service.c — the accountable answer: ask, structured report, audit row,
 * and the answer JSON released last. It owns the write-before-answer order
 * and the mapping of an answer onto an audit record; it must not print.
 */
#include "service.h"
#include "vqa_internal.h"
#include "wording.h"
#include "cxr_util.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static const char *nz(const char *s) { return s && *s ? s : NULL; }

static char *findings_json(const cxr_answer *a) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "finding", f->finding);
        if (f->code[0]) cJSON_AddStringToObject(o, "code", f->code);
        cJSON_AddNumberToObject(o, "probability", f->probability);
        cJSON_AddNumberToObject(o, "threshold", f->threshold);
        cJSON_AddStringToObject(o, "decision", cxr_decision_name(f->decision));
        cJSON_AddBoolToObject(o, "calibrated", f->calibrated);
        if (f->side[0]) cJSON_AddStringToObject(o, "side", f->side);
        cJSON_AddItemToArray(arr, o);
    }
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

static char *warnings_json(const cxr_answer *a) {
    cJSON *arr = cJSON_CreateArray();
    for (int i = 0; i < a->n_warnings; i++) cJSON_AddItemToArray(arr, cJSON_CreateString(a->warnings[i]));
    char *s = cJSON_PrintUnformatted(arr);
    cJSON_Delete(arr);
    return s;
}

int svc_audit_failure(cxr_audit *audit, const char *event, const char *user, const char *application,
                      const char *source, const char *question, int code, const char *reason,
                      const char *request_key, char *err, size_t errlen) {
    if (!audit) return CXR_OK;
    cxr_audit_record r;
    cxr_audit_record_init(&r);
    r.event_type = event;
    r.outcome = CXR_AUDIT_SERIOUS_FAILURE;
    r.user = nz(user);
    r.application = nz(application);
    r.source = nz(source);
    r.question = nz(question);
    r.answer = "error";
    r.error_code = code;
    r.reason = reason;
    r.request_key = nz(request_key);
    return cxr_audit_append(audit, &r, NULL, err, errlen);
}

/* ------------------------------------------------- SR files, crash-safe */

/* <dir>/.pending/<uid>.dcm, written and synced; name in out. */
static int write_pending(const char *dir, const char *uid, const uint8_t *data, size_t len, char *out, size_t n) {
    char pd[PATH_MAX];
    if (snprintf(pd, sizeof pd, "%s/.pending", dir) >= (int)sizeof pd) { errno = ENAMETOOLONG; return -1; }
    if (mkdir(pd, 0700) != 0 && errno != EEXIST) return -1;
    if (snprintf(out, n, "%s/%s.dcm", pd, uid) >= (int)n) { errno = ENAMETOOLONG; return -1; }
    int fd = open(out, O_WRONLY | O_CREAT | O_EXCL | O_CLOEXEC, 0640); /* patient data: not world-readable */
    if (fd < 0) { out[0] = '\0'; return -1; }
    if (cxr_write_all(fd, data, len) != 0) { close(fd); unlink(out); out[0] = '\0'; return -1; }
    if (fsync(fd) != 0 || close(fd) != 0) { unlink(out); out[0] = '\0'; return -1; }
    return 0;
}

static int publish_pending(const char *pending, const char *final, const char *dir) {
    if (rename(pending, final) != 0) return -1;
    return cxr_fsync_dir(dir);
}

typedef struct {
    char **uids;
    int n, cap;
} uid_set;

static int collect_sr(const cxr_audit_row *row, void *ctx) {
    uid_set *u = ctx;
    if (!row->rec.sr_uid) return 0;
    if (u->n == u->cap) {
        int cap = u->cap ? 2 * u->cap : 256;
        char **nu = realloc(u->uids, (size_t)cap * sizeof *nu);
        if (!nu) return 1;
        u->uids = nu;
        u->cap = cap;
    }
    u->uids[u->n] = strdup(row->rec.sr_uid);
    if (!u->uids[u->n]) return 1;
    u->n++;
    return 0;
}

int svc_recover_pending(const char *sr_dir, cxr_audit *audit, int *moved, int *removed, char *err, size_t errlen) {
    *moved = *removed = 0;
    char pd[PATH_MAX];
    if (snprintf(pd, sizeof pd, "%s/.pending", sr_dir) >= (int)sizeof pd) return CXR_ERR_ARG;
    DIR *d = opendir(pd);
    if (!d) return CXR_OK; /* nothing pending */
    uid_set u = {0};
    int rc = CXR_OK;
    if (audit && cxr_audit_scan(audit, NULL, collect_sr, &u, err, errlen) != CXR_OK) rc = CXR_ERR_DB;
    struct dirent *e;
    while (rc == CXR_OK && (e = readdir(d))) {
        size_t nl = strlen(e->d_name);
        if (nl < 5 || strcmp(e->d_name + nl - 4, ".dcm")) continue;
        char uid[80], from[PATH_MAX], to[PATH_MAX];
        if (nl - 4 >= sizeof uid) continue;
        memcpy(uid, e->d_name, nl - 4);
        uid[nl - 4] = '\0';
        if (snprintf(from, sizeof from, "%s/%s", pd, e->d_name) >= (int)sizeof from ||
            snprintf(to, sizeof to, "%s/%s", sr_dir, e->d_name) >= (int)sizeof to)
            continue;
        int known = 0;
        for (int i = 0; i < u.n && !known; i++) known = !strcmp(u.uids[i], uid);
        if (known) {
            if (rename(from, to) == 0) (*moved)++;
        } else if (unlink(from) == 0) {
            (*removed)++;
        }
    }
    closedir(d);
    if (*moved) cxr_fsync_dir(sr_dir);
    for (int i = 0; i < u.n; i++) free(u.uids[i]);
    free(u.uids);
    return rc;
}

/* The audit row of one answer; sr_uid/sr_dest name the report that holds it
 * (NULL: none). */
static int audit_answer(svc *s, const cxr_answer *a, int rc, int sr_rc, const char *sr_err, const char *sr_uid,
                        const char *sr_dest, const char *path, const char *source, const char *request_key,
                        int64_t *seq, char *aerr, size_t aerrlen) {
    cxr_audit_record rec;
    cxr_audit_record_init(&rec);
    char *fj = findings_json(a), *wj = warnings_json(a);
    int failed = rc != CXR_OK || sr_rc != CXR_OK;
    rec.event_type = a->refused ? "refusal" : "ask";
    rec.outcome = failed ? CXR_AUDIT_SERIOUS_FAILURE : a->refused ? CXR_AUDIT_MINOR_FAILURE : CXR_AUDIT_SUCCESS;
    rec.user = nz(s->user);
    rec.application = nz(s->application);
    rec.question = a->question;
    rec.language = a->language;
    rec.intent = a->intent;
    rec.study_uid = nz(a->meta.study_uid);
    rec.series_uid = nz(a->meta.series_uid);
    rec.sop_uid = nz(a->meta.sop_uid);
    rec.sop_class_uid = nz(a->meta.sop_class_uid);
    rec.accession = nz(a->meta.accession_number);
    rec.source = nz(source ? source : path);
    rec.patient_id = nz(a->meta.patient_id);
    rec.answer = failed ? "error" : cxr_decision_name(a->answer);
    rec.answer_text = a->text;
    rec.findings_json = fj;
    rec.warnings_json = wj;
    rec.model_name = a->model.name;
    rec.model_version = a->model.version;
    rec.model_sha256 = a->model.sha256;
    rec.prompt_version = nz(a->model.prompt_set_version);
    rec.sr_uid = sr_uid;
    rec.sr_dest = sr_uid ? sr_dest : NULL;
    rec.latency_ms = (int64_t)(a->total_ms + 0.5);
    rec.error_code = rc != CXR_OK ? rc : sr_rc != CXR_OK ? sr_rc : a->refused ? CXR_ERR_ARG : 0;
    char reason[CXR_ERRMSG_MAX + 32];
    if (rc != CXR_OK) rec.reason = a->error;
    else if (sr_rc != CXR_OK) {
        snprintf(reason, sizeof reason, "structured report failed: %.480s", sr_err);
        rec.reason = reason;
    } else if (a->refused) {
        snprintf(reason, sizeof reason, "%.31s: %.480s", a->reason_code, a->reason);
        rec.reason = reason;
    }
    rec.request_key = nz(request_key);
    int arc = cxr_audit_append(s->audit, &rec, seq, aerr, aerrlen);
    free(fj);
    free(wj);
    return arc;
}

/* the answer JSON with what was recorded */
static int release_json(svc *s, svc_result *r) {
    cJSON *o2 = cxr_answer_to_cjson(r->a);
    if (!o2) {
        snprintf(r->err, sizeof r->err, "out of memory");
        return r->rc = CXR_ERR_NOMEM;
    }
    if (r->have_sr) {
        cJSON *sj = cJSON_AddObjectToObject(o2, "sr");
        cJSON_AddStringToObject(sj, "sop_instance_uid", r->sr.sop_instance_uid);
        cJSON_AddStringToObject(sj, "series_instance_uid", r->sr.series_instance_uid);
        if (r->sr.path[0]) cJSON_AddStringToObject(sj, "path", r->sr.path);
    } else {
        cJSON_AddNullToObject(o2, "sr");
    }
    if (r->rc != CXR_OK && !cJSON_GetObjectItem(o2, "error")) { /* e.g. the SR failed: say so in the JSON too */
        cJSON_AddStringToObject(o2, "error", r->err);
        cJSON_AddStringToObject(o2, "code", cxr_strerror(r->rc));
    }
    if (s->audit) {
        cJSON *aj2 = cJSON_AddObjectToObject(o2, "audit");
        if (s->audit_path) cJSON_AddStringToObject(aj2, "db", s->audit_path);
        cJSON_AddNumberToObject(aj2, "seq", (double)r->audit_seq);
    } else {
        cJSON_AddNullToObject(o2, "audit");
    }
    r->json = o2;
    return r->rc;
}

int svc_ask(svc *s, const char *path, const void *buf, size_t len, const char *source, const char *question,
            const cxr_ask_options *o, const char *request_key, svc_result *r) {
    const char *keys[1] = {request_key};
    return svc_ask_many(s, path, buf, len, source, &question, keys, 1, o, r);
}

int svc_ask_many(svc *s, const char *path, const void *buf, size_t len, const char *source,
                 const char *const *questions, const char *const *request_keys, int n, const cxr_ask_options *o,
                 svc_result *rs) {
    if (n < 1 || n > SVC_MAX_QUESTIONS) return CXR_ERR_ARG;
    memset(rs, 0, (size_t)n * sizeof *rs);
    const cxr_answer *as[SVC_MAX_QUESTIONS];
    cxr_answer *got[SVC_MAX_QUESTIONS];
    int rcs[SVC_MAX_QUESTIONS], n_reportable = 0;
    /* the image decoded and embedded once for all its questions */
    if (path) cxr_vqa_ask_many_file(s->vqa, path, questions, n, o, got, rcs);
    else cxr_vqa_ask_many_buffer(s->vqa, buf, len, questions, n, o, got, rcs);
    for (int i = 0; i < n; i++)
        if (!got[i]) {
            for (int k = 0; k < n; k++) {
                cxr_answer_free(got[k]);
                got[k] = NULL;
                snprintf(rs[k].err, sizeof rs[k].err, "out of memory");
                rs[k].rc = CXR_ERR_NOMEM;
            }
            return CXR_ERR_NOMEM;
        }
    for (int i = 0; i < n; i++) {
        svc_result *r = &rs[i];
        r->a = got[i];
        r->rc = rcs[i];
        if (r->rc != CXR_OK) snprintf(r->err, sizeof r->err, "%s", r->a->error);
        as[i] = r->a;
        n_reportable += r->rc == CXR_OK && !r->a->refused;
    }

    /* one structured report for every answer, before the audit rows that name it */
    int sr_rc = CXR_OK;
    char sr_err[CXR_ERRMSG_MAX] = "";
    int want_sr = (s->sr_dir || s->sr_buffer) && n_reportable > 0;
    for (int i = 0; want_sr && i < n; i++)
        if (rs[i].rc == CXR_OK && !rs[i].a->refused && !strcmp(rs[i].a->meta.transfer_syntax, "PNG")) want_sr = 0;
    if ((s->sr_dir || s->sr_buffer) && !want_sr && n_reportable > 0)
        for (int i = 0; i < n; i++)
            if (rs[i].rc == CXR_OK && !rs[i].a->refused) answer_warn(rs[i].a, "%s", wording(rs[i].a, W_WARN_NO_SR_PNG));
    char pending[PATH_MAX] = "";
    cxr_sr_output sr;
    memset(&sr, 0, sizeof sr);
    int have_sr = 0;
    if (want_sr) {
        /* built in memory; a file output goes to <dir>/.pending/ until an
           audit row naming it is committed, then is renamed into place */
        sr.uid_root = s->uid_root;
        sr_rc = cxr_answers_write_sr(as, n, &sr, sr_err, sizeof sr_err);
        if (sr_rc == CXR_OK && !s->sr_buffer) {
            if (snprintf(sr.path, sizeof sr.path, "%s/%s.dcm", s->sr_dir, sr.sop_instance_uid) >= (int)sizeof sr.path ||
                write_pending(s->sr_dir, sr.sop_instance_uid, sr.buf, sr.len, pending, sizeof pending) != 0) {
                snprintf(sr_err, sizeof sr_err, "cannot write in %.400s: %s", s->sr_dir, strerror(errno));
                sr_rc = CXR_ERR_IO;
                sr.path[0] = '\0';
            }
            free(sr.buf);
            sr.buf = NULL;
            sr.len = 0;
        }
        have_sr = sr_rc == CXR_OK;
    }

    /* the audit rows: each committed before its answer is released */
    int named = 0; /* rows committed that name the report */
    for (int i = 0; i < n; i++) {
        svc_result *r = &rs[i];
        int in_sr = have_sr && r->rc == CXR_OK && !r->a->refused;
        int this_sr_rc = want_sr && r->rc == CXR_OK && !r->a->refused ? sr_rc : CXR_OK;
        if (s->audit) {
            char aerr[CXR_ERRMSG_MAX];
            int arc = audit_answer(s, r->a, r->rc, this_sr_rc, sr_err, in_sr ? sr.sop_instance_uid : NULL,
                                   s->sr_buffer ? "returned to caller" : sr.path, path, source,
                                   request_keys ? request_keys[i] : NULL, &r->audit_seq, aerr, sizeof aerr);
            if (arc != CXR_OK) { /* fail closed: this answer is not released */
                snprintf(r->err, sizeof r->err, "audit row not written, answer withheld: %.400s", aerr);
                r->rc = CXR_ERR_AUDIT;
                continue;
            }
        }
        if (in_sr) {
            named++;
            r->have_sr = 1;
            r->sr = sr;
            r->sr.buf = NULL;
            r->sr.len = 0;
        }
        if (r->rc == CXR_OK && this_sr_rc != CXR_OK) {
            snprintf(r->err, sizeof r->err, "structured report not written: %.400s", sr_err);
            r->rc = this_sr_rc;
        }
    }
    if (!named) { /* nothing names the report: it never existed */
        if (pending[0]) unlink(pending);
        free(sr.buf);
        sr.buf = NULL;
    } else {
        if (pending[0] && publish_pending(pending, sr.path, s->sr_dir) != 0) {
            /* recorded but not in place: svc_recover_pending finishes it later */
            for (int i = 0; i < n; i++)
                if (rs[i].have_sr && rs[i].rc == CXR_OK) {
                    snprintf(rs[i].err, sizeof rs[i].err, "structured report recorded but not moved into %.400s: %s",
                             s->sr_dir, strerror(errno));
                    rs[i].rc = CXR_ERR_IO;
                }
        }
        for (int i = 0; i < n && sr.buf; i++)
            if (rs[i].have_sr) { /* the bytes go with the first answer that names the report */
                rs[i].sr.buf = sr.buf;
                rs[i].sr.len = sr.len;
                sr.buf = NULL;
            }
    }

    /* released: each answer JSON with what was recorded */
    int rc0 = CXR_OK;
    for (int i = 0; i < n; i++) {
        svc_result *r = &rs[i];
        if (r->rc == CXR_ERR_AUDIT) {
            if (!rc0) rc0 = r->rc;
            continue;
        }
        int jrc = release_json(s, r);
        if (jrc != CXR_OK && !rc0) rc0 = jrc;
    }
    return rc0;
}

void svc_result_free(svc_result *r) {
    if (!r) return;
    cxr_answer_free(r->a);
    cJSON_Delete(r->json);
    free(r->sr.buf);
    memset(r, 0, sizeof *r);
}
