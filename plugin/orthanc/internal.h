/*
 * internal.h — what the files of the Orthanc plugin share
 * (orthanc_plugin.c: entry points, configuration, REST routes;
 * orthanc_screen.c: one request through the worker pool, screening, the job
 * and the auto-screen thread; orthanc_queue.c: the persisted queue).
 * Not a public header: nothing outside plugin/orthanc_*.c includes it.
 */
#ifndef CXR_ORTHANC_INTERNAL_H
#define CXR_ORTHANC_INTERNAL_H

#include "request.h" /* OP_MAX_BODY_BYTES, request parsing */
#include <pthread.h>
#include <stddef.h>
#include <stdint.h>

#include <orthanc/OrthancCPlugin.h>
#include <cjson/cJSON.h>

#include "cxr_common.h"
#include "cxr_version.h"
#include "worker.h"
#include "cxr_json.h"
#include "protocol.h"

#define OP_NAME "cxrvqa"
#define OP_VERSION CXR_VERSION

#define OP_MAX_INSTANCE_BYTES CXR_FRAME_MAX_PAYLOAD /* larger instances: 413 */
#define OP_MAX_LIST 64                          /* entries of a configured list */
#define OP_MAX_ATTEMPTS 5                       /* queue retries of a busy pool */
#define OP_MAX_MODALITY_NAME 128                /* a ForwardTo entry (an Orthanc DicomModalities name) */

/* --------------------------------------------------------------- queue */
/* The persisted auto-screen queue: a small SQLite file holding Orthanc
 * instance IDs in arrival order. Thread-safe (one connection, one mutex).
 * WAL with synchronous=NORMAL: an enqueue survives a crash of Orthanc; a
 * power cut may lose the last few (they are then not screened
 * automatically; POST /cxrvqa/studies/{id}/screen catches up). */
typedef struct queue queue;
typedef struct {
    int64_t seq;
    char instance[72];
    int attempts;
} queue_item;
int queue_open(const char *path, queue **out, char *err, size_t errlen);
void queue_close(queue *q);
int queue_push(queue *q, const char *instance_id);          /* idempotent */
/* Oldest item due at `now` (unix seconds): 1 found, 0 none, <0 error. */
int queue_peek(queue *q, int64_t now, queue_item *it);
int queue_done(queue *q, int64_t seq);
int queue_retry(queue *q, int64_t seq, int64_t not_before);
int64_t queue_length(queue *q);                              /* -1 on error */

/* ------------------------------------------------------------- state */
typedef struct {
    char *model, *audit_db, *worker_cmd, *uid_root, *queue_path;
    int n_workers, timeout_s;
    size_t mem_limit_mb;
    char *anchor_log;     /* AuditAnchorLog: append the audit chain's head here (NULL: off) */
    char *audit_key;      /* AuditKeyFile: the audit chain's HMAC key (keyed mode; NULL: unkeyed) */
    char audit_key_id[17]; /* its key id, for the status route and the log */
    int anchor_minutes;   /* AuditAnchorMinutes: how often (default 60) */
    /* assessability limits passed to the workers (cxr_assess_params); "" = the model file's */
    char min_positives[16], min_auc[16];
    int auto_screen;
    char *questions[OP_MAX_LIST];
    int n_questions;
    char *modalities[OP_MAX_LIST];
    int n_modalities;
    char *body_parts[OP_MAX_LIST];
    int n_body_parts;
    int request_log;      /* RequestLog: level of a successful request's line (OP_LOG_*) */
    char *forward_to[OP_MAX_LIST]; /* ForwardTo: DicomModalities names every stored SR is sent to */
    int n_forward_to;
    int forward_attempts;  /* ForwardAttempts: C-STOREs tried per SR and modality (default 4) */
    int forward_backoff_s; /* ForwardBackoffSeconds: wait before the 2nd attempt, doubling after (default 10) */
} op_config;

typedef struct {
    uint64_t asks, asks_failed, heatmaps, heatmaps_failed, enqueued, screened, screen_skipped,
        screen_failed, screen_ineligible, srs_stored, sr_store_failed, worker_failures, jobs, forwards_sent,
        forward_retries, forwards_failed;
} op_counters;

/* ------------------------------------------------- operability (ops.c) */
/* Routes and outcomes of the request log and the metrics. */
typedef enum { OP_R_ASK = 0, OP_R_HEATMAP, OP_R_SCREEN, OP_R_AUDIT, OP_R_STATUS, OP_R_METRICS, OP_R_DISABLED, OP_R_N } op_route;
typedef enum {
    OP_O_OK = 0,         /* 200 */
    OP_O_REFUSED,        /* the question or finding was refused (200 or 400) */
    OP_O_BAD_REQUEST,    /* 400, 405, 413 */
    OP_O_NOT_FOUND,      /* 404 */
    OP_O_UNREADABLE,     /* 422: not readable as a chest radiograph */
    OP_O_UNAVAILABLE,    /* 503: pool not running, busy, plugin disabled */
    OP_O_WORKER_FAILURE, /* 502, 504: a worker crashed, hung, broke the protocol */
    OP_O_ERROR,          /* 500 and anything else */
    OP_O_N
} op_outcome;
#define OP_N_BUCKETS 13  /* latency histogram buckets, +Inf apart */
enum { OP_LOG_OFF = 0, OP_LOG_INFO = 1, OP_LOG_WARNING = 2, OP_LOG_ERROR = 3 };

typedef struct {
    uint64_t requests[OP_R_N][OP_O_N];
    uint64_t latency[OP_R_N][OP_N_BUCKETS + 1]; /* per bucket, not cumulative; last = above all */
    double latency_sum_s[OP_R_N];
} op_metrics;

/* One REST request, from its start (op_now_ms) to op_request_done. */
typedef struct {
    op_route route;
    double t0_ms;
    const char *instance;  /* instance or study ID of the URL; NULL for none */
    char user[400];        /* as audited */
} op_request_log;

double op_now_ms(void);
const char *op_route_name(op_route r);
const char *op_outcome_name(op_outcome o);
op_outcome op_outcome_of(int status, int refused);
/* Count the request, add its latency and log its one line: at
 * cfg.request_log when it succeeded, a warning when refused or failed in a
 * way the plugin survives, an error for a 500. code/detail may be NULL. */
void op_request_done(const op_request_log *l, int status, int refused, const char *code, const char *detail);
void op_log(int level, const char *msg);
/* Start a request's record: route, now, groups[0] of the URL, the audited user (plugin.c). */
void op_req_begin(op_request_log *l, op_route route, const OrthancPluginHttpRequest *r, const char *claimed);
/* The Prometheus text (version 0.0.4) of GET /cxrvqa/metrics; malloc'ed, NULL when out of memory. */
char *op_metrics_text(void);
/* 0 when every key of sec is in the NULL-terminated list known; else -1 with
 * "unknown key CxrVqa.K (did you mean "Key"?)" or the list of known keys. */
int op_config_check_keys(const cJSON *sec, const char *const *known, char *err, size_t errlen);
int op_edit_distance(const char *a, const char *b);

typedef struct {
    OrthancPluginContext *ctx;
    op_config cfg;
    int disabled;                   /* the configuration was refused: every route answers 503 */
    char disabled_reason[CXR_ERRMSG_MAX];
    op_metrics m;                   /* under mu */
    cxr_pool *pool;                 /* NULL when it could not start: routes answer 503 */
    char pool_err[CXR_ERRMSG_MAX];
    queue *q;
    char model_sha256[65];          /* of the model file, "" if unreadable */

    pthread_mutex_t mu;             /* counters, in-flight set, thread state */
    pthread_cond_t cv;
    op_counters n;
    char *inflight[256];            /* instances being screened (no two screens at once) */
    int n_inflight;
    pthread_t thread;
    int thread_running, stop;
} op_state;

extern op_state g_op;

void op_count(uint64_t *counter); /* ++ under the mutex */

/* --------------------------------------------------------- requests */
typedef enum { OP_ASK = 0, OP_HEATMAP } op_kind;

typedef struct {
    op_kind kind;
    const char *instance;   /* Orthanc ID, validated */
    const char *question;   /* ask: required */
    const char *user;
    const char *lang;       /* NULL, "en" or "zh" */
    const char *finding;    /* heatmap */
    int store_sr;           /* ask: ask the worker for an SR and store it */
    int skip_if_done;
} op_request;

typedef struct {
    int status;             /* HTTP status */
    cJSON *json;            /* 200: the answer object; else {"error","code"} */
    uint8_t *png;           /* heatmap (malloc) */
    size_t png_len;
    int skipped;            /* the worker reported this key as done already */
    char sr_id[72];         /* Orthanc ID of the stored SR, "" if none */
} op_result;

/* Run one request through the pool: fetch the instance, call a worker,
 * store the SR, translate every failure into an HTTP status and a JSON
 * error (writing the audit row when the pool itself failed). Any thread.
 * Always fills *out; release with op_result_free. */
void op_run(const op_request *rq, op_result *out);
void op_result_free(op_result *r);
cJSON *op_error_json(const char *msg, const char *code);
int op_valid_id(const char *id);
int op_instance_exists(const char *id); /* Orthanc knows this instance ID */
/* Write an audit row for a request the plugin answers itself: a pool failure
 * ("worker-failure", CXR_AUDIT_SERIOUS_FAILURE, "error") or a refusal before
 * any worker ("refusal", CXR_AUDIT_MINOR_FAILURE, "refused"). CXR_OK or the
 * audit store's error in aerr (then nothing may be released: fail closed). */
int op_audit_plugin_row(const op_request *rq, const char *event, int outcome, const char *answer, int rc,
                        const char *reason, char *aerr, size_t aerrlen);

/* Screen one instance with every configured question (skip_if_done): 0 =
 * screened or skipped (counts in *n_sr, *n_skipped), 1 = not eligible, <0 =
 * at least one question failed (*failed_status = the HTTP status). */
int op_screen_instance(const char *instance, int *n_sr, int *n_skipped, int *failed_status);

/* Results back to the PACS (forward.c): queue the stored SR (Orthanc ID,
 * SOP Instance UID, Study UID) for C-STORE to every ForwardTo modality;
 * never blocks. The forward thread runs from OrthancStarted to
 * OrthancStopped / Finalize. */
void op_forward_enqueue(const char *sr_id, const char *sop_uid, const char *study_uid);
int op_forward_start(void);
void op_forward_stop(void);
int op_forward_pending(void);

/* The auto-screen thread (started when Orthanc has started). */
int op_thread_start(void);
void op_thread_stop(void);

/* The screening job: POST /cxrvqa/studies/{id}/screen. Answers the REST
 * request itself. */
OrthancPluginErrorCode op_route_screen(OrthancPluginRestOutput *output, const char *url,
                                       const OrthancPluginHttpRequest *request);

/* Orthanc REST helpers (internal API, no HTTP): GET/POST returning parsed
 * JSON or NULL. */
cJSON *op_rest_get_json(const char *uri);
cJSON *op_rest_post_json(const char *uri, const void *body, size_t len);
/* Answer a REST request with a JSON body: 200 through AnswerBuffer, any
 * other status through SendHttpStatus with Content-Type application/json. */
void op_answer_json(OrthancPluginRestOutput *output, int status, const cJSON *body);
void op_answer_error(OrthancPluginRestOutput *output, int status, const char *msg, const char *code);

#endif
