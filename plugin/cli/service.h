/*
 * service.h — one accountable answer (internal to the cxrvqa executable):
 * ask → structured report → audit row committed → answer released. Shared
 * by `cxrvqa ask`, `cxrvqa worker` (and through it `screen` and the Orthanc
 * plugin) so that every front end records the same way.
 */
#ifndef CXR_SERVICE_H
#define CXR_SERVICE_H

#include "audit.h"
#include "cxrvqa.h"

#include <cjson/cJSON.h>

typedef struct {
    cxr_vqa *vqa;
    cxr_audit *audit;          /* NULL only with --no-audit */
    const char *audit_path;
    const char *sr_dir;        /* write SR files here; NULL: no SR file */
    int sr_buffer;             /* 1: return SR bytes instead (worker) */
    const char *uid_root;
    const char *user, *application;
} svc;

typedef struct {
    cxr_answer *a;             /* owned */
    cJSON *json;               /* the answer + sr + audit, as a tree: printed once, where it
                                  leaves the process (owned) */
    cxr_sr_output sr;          /* sr.buf owned when sr_buffer */
    int have_sr;
    int64_t audit_seq;
    int rc;                    /* CXR_OK (answer or refusal) or the error */
    char err[CXR_ERRMSG_MAX];
} svc_result;

/* Answer question about the image at path (or buf/len; source names it for
 * the audit), write the SR when asked and possible, append the audit row,
 * and only then fill r->json (NULL when nothing may be released). rc CXR_ERR_AUDIT: nothing may be released (the
 * SR file written for it is removed). Always call svc_result_free. */
int svc_ask(svc *s, const char *path, const void *buf, size_t len, const char *source, const char *question,
            const cxr_ask_options *o, const char *request_key, svc_result *r);
void svc_result_free(svc_result *r);

/* The questions of one request about one image (screening: up to
 * SVC_MAX_QUESTIONS), answered in turn, with ONE structured report holding
 * every finding answered (a measurement group each) and one audit row per
 * question, each naming that report. rs[0..n) get each answer as svc_ask
 * would; the SR bytes (sr_buffer) go with the first result that has
 * have_sr. request_keys may be NULL. Returns CXR_OK, or the first error of
 * a result that cannot be released (each rs[i].rc says its own). Always
 * call svc_result_free on each of the n results. */
#define SVC_MAX_QUESTIONS 32
int svc_ask_many(svc *s, const char *path, const void *buf, size_t len, const char *source,
                 const char *const *questions, const char *const *request_keys, int n, const cxr_ask_options *o,
                 svc_result *rs);

/* Audit row for a failure that happened outside an answer (worker crash,
 * unreadable request). */
int svc_audit_failure(cxr_audit *audit, const char *event, const char *user, const char *application,
                      const char *source, const char *question, int code, const char *reason,
                      const char *request_key, char *err, size_t errlen);

/* Finish what a killed run left in <sr_dir>/.pending: an SR whose audit row
 * was committed is moved into place, one without a row is deleted (it was
 * never reported). Counts in *moved / *removed. */
int svc_recover_pending(const char *sr_dir, cxr_audit *audit, int *moved, int *removed, char *err, size_t errlen);

#endif
