/*
 * forward.c — results back to the PACS: every SR the plugin stores in
 * Orthanc is sent by C-STORE to each modality named in CxrVqa.ForwardTo
 * (names from Orthanc's own DicomModalities), through Orthanc's REST API
 * (POST /modalities/{name}/store, synchronous, on this file's own thread).
 * It owns the in-memory forward list, the bounded retries with doubling
 * backoff and one audit row per attempt. It never blocks a REST request
 * (op_forward_enqueue only appends under a mutex) and never touches images.
 * The list is in memory: forwards still pending when Orthanc stops are
 * lost (their audit rows show how far they got; README "Orthanc plugin").
 */
#include "internal.h"
#include "audit.h"

#include <errno.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#define FWD_MAX_PENDING 10000 /* beyond this a forward is audited as dropped */

typedef struct fwd {
    struct fwd *next;
    char sr_id[72], sop_uid[72], study_uid[72], modality[OP_MAX_MODALITY_NAME];
    int attempts;     /* made so far */
    double due_ms;    /* op_now_ms() of the next attempt */
} fwd;

static struct {
    pthread_mutex_t mu;
    pthread_cond_t cv;
    fwd *head;
    int n, stop, running;
    pthread_t thread;
} F = {PTHREAD_MUTEX_INITIALIZER, PTHREAD_COND_INITIALIZER, NULL, 0, 0, 0, 0};

/* One audit row per attempt: event "forward", outcome 0 (sent), 4 (failed,
 * will retry) or 8 (failed, given up / dropped); the SR's SOP Instance and
 * Study UIDs, the destination as "modality:<name>", the attempt number. */
static void audit_attempt(const fwd *f, int outcome, const char *answer, int attempt, const char *reason) {
    cxr_audit_record r;
    cxr_audit_record_init(&r);
    char dest[160], why[CXR_ERRMSG_MAX + 96];
    snprintf(dest, sizeof dest, "modality:%s", f->modality);
    snprintf(why, sizeof why, "attempt %d of %d%s%s", attempt, g_op.cfg.forward_attempts, reason ? ": " : "",
             reason ? reason : "");
    r.event_type = "forward";
    r.event_id = CXR_AUDIT_EV_EXPORT;
    r.outcome = outcome;
    r.user = "orthanc";
    r.application = "ORTHANC";
    r.study_uid = f->study_uid[0] ? f->study_uid : NULL;
    r.sop_uid = f->sop_uid[0] ? f->sop_uid : NULL;
    r.sr_uid = f->sop_uid[0] ? f->sop_uid : NULL;
    r.sr_dest = dest;
    r.source = f->sr_id;
    r.answer = answer;
    r.model_sha256 = g_op.model_sha256[0] ? g_op.model_sha256 : NULL;
    r.error_code = outcome == CXR_AUDIT_SUCCESS ? 0 : CXR_ERR_IO;
    r.reason = why;
    char err[CXR_ERRMSG_MAX];
    cxr_audit *a = NULL;
    cxr_audit_params ap = cxr_audit_params_default();
    ap.chain_key_file = g_op.cfg.audit_key; /* a keyed store is written with its key */
    int rc = cxr_audit_open(g_op.cfg.audit_db, &ap, &a, err, sizeof err);
    if (rc == CXR_OK)
        rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
    cxr_audit_close(a);
    if (rc != CXR_OK) {
        char m[CXR_ERRMSG_MAX + 400];
        snprintf(m, sizeof m, "cxrvqa: forward of SR %s to %s: audit row not written: %s", f->sop_uid, f->modality,
                 err);
        OrthancPluginLogError(g_op.ctx, m);
    }
}

void op_forward_enqueue(const char *sr_id, const char *sop_uid, const char *study_uid) {
    for (int i = 0; i < g_op.cfg.n_forward_to; i++) {
        fwd *f = calloc(1, sizeof *f);
        if (!f)
            return;
        snprintf(f->sr_id, sizeof f->sr_id, "%s", sr_id);
        snprintf(f->sop_uid, sizeof f->sop_uid, "%s", sop_uid ? sop_uid : "");
        snprintf(f->study_uid, sizeof f->study_uid, "%s", study_uid ? study_uid : "");
        snprintf(f->modality, sizeof f->modality, "%s", g_op.cfg.forward_to[i]);
        f->due_ms = op_now_ms();
        pthread_mutex_lock(&F.mu);
        int full = F.n >= FWD_MAX_PENDING || !F.running;
        if (!full) {
            f->next = F.head; /* order does not matter: the thread takes the earliest due */
            F.head = f;
            F.n++;
            pthread_cond_signal(&F.cv);
        }
        pthread_mutex_unlock(&F.mu);
        if (full) {
            audit_attempt(f, CXR_AUDIT_SERIOUS_FAILURE, "dropped", 0,
                          F.running ? "too many forwards pending" : "the forward thread is not running");
            free(f);
        }
    }
}

/* One C-STORE through Orthanc: 0 sent, else -1 with the reason. */
static int send_one(const fwd *f, char *why, size_t n) {
    char uri[OP_MAX_MODALITY_NAME * 3 + 32], body[160];
    size_t k = (size_t)snprintf(uri, sizeof uri, "/modalities/");
    for (const unsigned char *p = (const unsigned char *)f->modality; *p && k + 4 < sizeof uri; p++) {
        if ((*p >= 'A' && *p <= 'Z') || (*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || strchr("-_.~", *p))
            uri[k++] = (char)*p;
        else
            k += (size_t)snprintf(uri + k, sizeof uri - k, "%%%02X", *p);
    }
    snprintf(uri + k, sizeof uri - k, "/store");
    snprintf(body, sizeof body, "{\"Resources\":[\"%s\"],\"Synchronous\":true}", f->sr_id);
    OrthancPluginMemoryBuffer b;
    memset(&b, 0, sizeof b);
    OrthancPluginErrorCode e = OrthancPluginRestApiPost(g_op.ctx, &b, uri, body, (uint32_t)strlen(body));
    if (e == OrthancPluginErrorCode_Success) {
        OrthancPluginFreeMemoryBuffer(g_op.ctx, &b);
        return 0;
    }
    const char *d = OrthancPluginGetErrorDescription(g_op.ctx, e);
    snprintf(why, n, "C-STORE to %s failed: %s (Orthanc error %d)", f->modality, d ? d : "unknown error", (int)e);
    return -1;
}

static void *forward_thread(void *arg) {
    (void)arg;
    pthread_mutex_lock(&F.mu);
    while (!F.stop) {
        /* the earliest due forward */
        fwd **best = NULL;
        for (fwd **pp = &F.head; *pp; pp = &(*pp)->next)
            if (!best || (*pp)->due_ms < (*best)->due_ms)
                best = pp;
        double now = op_now_ms();
        if (!best || (*best)->due_ms > now) {
            struct timespec ts;
            clock_gettime(CLOCK_REALTIME, &ts);
            double wait_ms = best ? (*best)->due_ms - now : 1000.0;
            if (wait_ms > 1000.0)
                wait_ms = 1000.0;
            long ns = ts.tv_nsec + (long)(wait_ms * 1e6);
            ts.tv_sec += ns / 1000000000L;
            ts.tv_nsec = ns % 1000000000L;
            pthread_cond_timedwait(&F.cv, &F.mu, &ts);
            continue;
        }
        fwd *f = *best;
        *best = f->next;
        F.n--;
        pthread_mutex_unlock(&F.mu);

        char why[CXR_ERRMSG_MAX] = "";
        int attempt = ++f->attempts;
        int ok = send_one(f, why, sizeof why) == 0;
        char m[CXR_ERRMSG_MAX + 400];
        if (ok) {
            audit_attempt(f, CXR_AUDIT_SUCCESS, "sent", attempt, NULL);
            op_count(&g_op.n.forwards_sent);
            snprintf(m, sizeof m, "cxrvqa: SR %s forwarded to %s (attempt %d)", f->sop_uid, f->modality, attempt);
            op_log(g_op.cfg.request_log, m);
            free(f);
        } else if (attempt < g_op.cfg.forward_attempts) {
            /* retry after B, 2B, 4B, ... seconds (B = ForwardBackoffSeconds), at most 1 hour apart */
            double delay = g_op.cfg.forward_backoff_s * 1000.0;
            for (int i = 1; i < attempt && delay < 3600e3; i++)
                delay *= 2;
            if (delay > 3600e3)
                delay = 3600e3;
            audit_attempt(f, CXR_AUDIT_MINOR_FAILURE, "retry", attempt, why);
            op_count(&g_op.n.forward_retries);
            snprintf(m, sizeof m, "cxrvqa: %s; SR %s retried in %.0f s", why, f->sop_uid, delay / 1000);
            OrthancPluginLogWarning(g_op.ctx, m);
            f->due_ms = op_now_ms() + delay;
            pthread_mutex_lock(&F.mu);
            f->next = F.head;
            F.head = f;
            F.n++;
            pthread_mutex_unlock(&F.mu);
        } else {
            audit_attempt(f, CXR_AUDIT_SERIOUS_FAILURE, "failed", attempt, why);
            op_count(&g_op.n.forwards_failed);
            snprintf(m, sizeof m, "cxrvqa: %s; SR %s not forwarded after %d attempts", why, f->sop_uid, attempt);
            OrthancPluginLogError(g_op.ctx, m);
            free(f);
        }
        pthread_mutex_lock(&F.mu);
    }
    pthread_mutex_unlock(&F.mu);
    return NULL;
}

int op_forward_start(void) {
    if (!g_op.cfg.n_forward_to)
        return CXR_OK;
    pthread_mutex_lock(&F.mu);
    F.stop = 0;
    int rc = F.running ? 0 : pthread_create(&F.thread, NULL, forward_thread, NULL);
    if (rc == 0)
        F.running = 1;
    pthread_mutex_unlock(&F.mu);
    return rc == 0 ? CXR_OK : CXR_ERR_INTERNAL;
}

void op_forward_stop(void) {
    pthread_mutex_lock(&F.mu);
    int was = F.running;
    F.stop = 1;
    F.running = 0;
    pthread_cond_broadcast(&F.cv);
    pthread_mutex_unlock(&F.mu);
    if (was)
        pthread_join(F.thread, NULL);
    pthread_mutex_lock(&F.mu);
    int lost = 0;
    while (F.head) {
        fwd *f = F.head;
        F.head = f->next;
        free(f);
        lost++;
    }
    F.n = 0;
    pthread_mutex_unlock(&F.mu);
    if (lost) {
        char m[160];
        snprintf(m, sizeof m, "cxrvqa: %d SR forward(s) still pending at shutdown were not sent", lost);
        OrthancPluginLogWarning(g_op.ctx, m);
    }
}

int op_forward_pending(void) {
    pthread_mutex_lock(&F.mu);
    int n = F.n;
    pthread_mutex_unlock(&F.mu);
    return n;
}
