/*
 * ops.c — what an operator sees of the plugin: one log line per REST request
 * (route, instance, status, outcome, latency, user), the request counters and
 * latency histograms behind GET /cxrvqa/metrics (Prometheus text format
 * 0.0.4), and the check of the "CxrVqa" section's keys against the known ones
 * ("did you mean"). It never calls the Orthanc REST API or a worker; it only
 * logs through Orthanc and reads the pool's and the queue's counters.
 */
#include "internal.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

/* ------------------------------------------------------------ names */

static const char *const ROUTE_NAMES[OP_R_N] = {"ask", "heatmap", "screen", "audit", "status", "metrics", "disabled"};
static const char *const OUTCOME_NAMES[OP_O_N] = {"ok",          "refused",        "bad_request", "not_found",
                                                  "unreadable", "unavailable", "worker_failure", "error"};
/* latency histogram upper bounds, seconds (Prometheus "le") */
static const double BUCKETS[OP_N_BUCKETS] = {0.005, 0.01, 0.025, 0.05, 0.1, 0.25, 0.5, 1, 2.5, 5, 10, 30, 60};

const char *op_route_name(op_route r) { return r >= 0 && r < OP_R_N ? ROUTE_NAMES[r] : "?"; }
const char *op_outcome_name(op_outcome o) { return o >= 0 && o < OP_O_N ? OUTCOME_NAMES[o] : "?"; }

op_outcome op_outcome_of(int status, int refused) {
    if (status == 200)
        return refused ? OP_O_REFUSED : OP_O_OK;
    if (refused)
        return OP_O_REFUSED;
    switch (status) {
    case 400:
    case 405:
    case 413: return OP_O_BAD_REQUEST;
    case 404: return OP_O_NOT_FOUND;
    case 422: return OP_O_UNREADABLE;
    case 503: return OP_O_UNAVAILABLE;
    case 502:
    case 504: return OP_O_WORKER_FAILURE;
    default: return status >= 400 && status < 500 ? OP_O_BAD_REQUEST : OP_O_ERROR;
    }
}

double op_now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec * 1e3 + (double)ts.tv_nsec / 1e6;
}

/* ------------------------------------------------------------ logging */

/* Append s to buf (at *n, capacity cap) quoted: '"' and '\\' escaped, control
 * bytes as \xNN, so that a user's text can neither end the line nor forge a
 * field; at most maxin input bytes. */
static void put_quoted(char *buf, size_t cap, size_t *n, const char *s, size_t maxin) {
    if (*n + 2 >= cap)
        return;
    buf[(*n)++] = '"';
    for (size_t i = 0; s && s[i] && i < maxin && *n + 6 < cap; i++) {
        unsigned char c = (unsigned char)s[i];
        if (c == '"' || c == '\\') {
            buf[(*n)++] = '\\';
            buf[(*n)++] = (char)c;
        } else if (c < 0x20 || c == 0x7f) {
            *n += (size_t)snprintf(buf + *n, cap - *n, "\\x%02x", c);
        } else {
            buf[(*n)++] = (char)c;
        }
    }
    buf[(*n)++] = '"';
    buf[*n] = 0;
}

static void put(char *buf, size_t cap, size_t *n, const char *fmt, ...) {
    if (*n + 1 >= cap)
        return;
    va_list ap;
    va_start(ap, fmt);
    int k = vsnprintf(buf + *n, cap - *n, fmt, ap);
    va_end(ap);
    if (k > 0)
        *n = *n + (size_t)k < cap ? *n + (size_t)k : cap - 1;
}

void op_log(int level, const char *msg) {
    if (!g_op.ctx)
        return;
    if (level >= OP_LOG_ERROR)
        OrthancPluginLogError(g_op.ctx, msg);
    else if (level == OP_LOG_WARNING)
        OrthancPluginLogWarning(g_op.ctx, msg);
    else if (level == OP_LOG_INFO)
        OrthancPluginLogInfo(g_op.ctx, msg);
}

void op_request_done(const op_request_log *l, int status, int refused, const char *code, const char *detail) {
    double ms = op_now_ms() - l->t0_ms;
    if (ms < 0)
        ms = 0;
    op_outcome oc = op_outcome_of(status, refused);
    op_route r = l->route >= 0 && l->route < OP_R_N ? l->route : OP_R_DISABLED;

    pthread_mutex_lock(&g_op.mu);
    g_op.m.requests[r][oc]++;
    int b = 0;
    while (b < OP_N_BUCKETS && ms / 1e3 > BUCKETS[b])
        b++;
    g_op.m.latency[r][b]++;
    g_op.m.latency_sum_s[r] += ms / 1e3;
    pthread_mutex_unlock(&g_op.mu);

    /* level: the configured one for a plain success (warning by default:
       Orthanc shows only warnings and errors unless --verbose), a warning
       for refusals and failures the plugin survives, an error for its own */
    int level = oc == OP_O_OK ? g_op.cfg.request_log : oc == OP_O_ERROR ? OP_LOG_ERROR : OP_LOG_WARNING;
    if ((r == OP_R_STATUS || r == OP_R_METRICS) && oc == OP_O_OK)
        level = g_op.cfg.request_log ? OP_LOG_INFO : OP_LOG_OFF; /* polled: not at the default level */
    if (level == OP_LOG_OFF)
        return;
    char line[1024];
    size_t n = 0;
    put(line, sizeof line, &n, "cxrvqa: request route=%s", op_route_name(r));
    if (l->instance) {
        put(line, sizeof line, &n, " %s=", l->route == OP_R_SCREEN ? "study" : "instance");
        put_quoted(line, sizeof line, &n, l->instance, 64);
    }
    put(line, sizeof line, &n, " status=%d outcome=%s ms=%.0f user=", status, op_outcome_name(oc), ms);
    put_quoted(line, sizeof line, &n, l->user[0] ? l->user : "-", 200);
    if (code && code[0]) {
        put(line, sizeof line, &n, " code=");
        put_quoted(line, sizeof line, &n, code, 64);
    }
    if (detail && detail[0]) {
        put(line, sizeof line, &n, " detail=");
        put_quoted(line, sizeof line, &n, detail, 300);
    }
    op_log(level, line);
}

/* ------------------------------------------------------------ metrics */

static void mput(char **buf, size_t *n, size_t *cap, const char *fmt, ...) {
    if (!*buf)
        return;
    for (;;) {
        va_list ap;
        va_start(ap, fmt);
        int k = vsnprintf(*buf + *n, *cap - *n, fmt, ap);
        va_end(ap);
        if (k < 0) {
            free(*buf);
            *buf = NULL;
            return;
        }
        if ((size_t)k < *cap - *n) {
            *n += (size_t)k;
            return;
        }
        char *b = realloc(*buf, *cap * 2 + (size_t)k);
        if (!b) {
            free(*buf);
            *buf = NULL;
            return;
        }
        *buf = b;
        *cap = *cap * 2 + (size_t)k;
    }
}

static void help_type(char **b, size_t *n, size_t *cap, const char *name, const char *type, const char *help) {
    mput(b, n, cap, "# HELP %s %s\n# TYPE %s %s\n", name, help, name, type);
}

/* A label value: the exposition format escapes '\\', '"' and newlines. */
static void label_value(char *out, size_t cap, const char *s) {
    size_t n = 0;
    for (; s && *s && n + 3 < cap; s++) {
        if (*s == '\\' || *s == '"')
            out[n++] = '\\', out[n++] = *s;
        else if (*s == '\n')
            out[n++] = '\\', out[n++] = 'n';
        else
            out[n++] = *s;
    }
    out[n] = 0;
}

char *op_metrics_text(void) {
    size_t cap = 8192, n = 0;
    char *b = malloc(cap);
    if (!b)
        return NULL;
    b[0] = 0;
    pthread_mutex_lock(&g_op.mu);
    op_metrics m = g_op.m;
    op_counters c = g_op.n;
    pthread_mutex_unlock(&g_op.mu);
    cxr_pool_stats st;
    memset(&st, 0, sizeof st);
    if (g_op.pool)
        cxr_pool_get_stats(g_op.pool, &st);
    int64_t qlen = g_op.q ? queue_length(g_op.q) : 0;

    char ver[64], sha[80], why[600];
    label_value(ver, sizeof ver, OP_VERSION);
    label_value(sha, sizeof sha, g_op.model_sha256);
    help_type(&b, &n, &cap, "cxrvqa_info", "gauge", "The plugin's version and the model file's SHA-256 (value 1).");
    mput(&b, &n, &cap, "cxrvqa_info{version=\"%s\",model_sha256=\"%s\"} 1\n", ver, sha);
    help_type(&b, &n, &cap, "cxrvqa_enabled", "gauge",
              "1 when the configuration was accepted, 0 when the plugin is disabled (its routes answer 503).");
    label_value(why, sizeof why, g_op.disabled_reason);
    if (g_op.disabled)
        mput(&b, &n, &cap, "cxrvqa_enabled{reason=\"%s\"} 0\n", why);
    else
        mput(&b, &n, &cap, "cxrvqa_enabled 1\n");

    help_type(&b, &n, &cap, "cxrvqa_requests_total", "counter", "REST requests to the /cxrvqa routes by route and outcome.");
    for (int r = 0; r < OP_R_N; r++)
        for (int o = 0; o < OP_O_N; o++)
            if (m.requests[r][o] || (r <= OP_R_HEATMAP && (o == OP_O_OK || o == OP_O_REFUSED)))
                mput(&b, &n, &cap, "cxrvqa_requests_total{route=\"%s\",outcome=\"%s\"} %llu\n", ROUTE_NAMES[r],
                     OUTCOME_NAMES[o], (unsigned long long)m.requests[r][o]);

    help_type(&b, &n, &cap, "cxrvqa_request_duration_seconds", "histogram",
              "Latency of the /cxrvqa REST requests by route, from the route's start to its answer.");
    for (int r = 0; r < OP_R_N; r++) {
        uint64_t total = 0;
        for (int k = 0; k <= OP_N_BUCKETS; k++)
            total += m.latency[r][k];
        if (!total && r > OP_R_HEATMAP)
            continue;
        uint64_t cum = 0;
        for (int k = 0; k < OP_N_BUCKETS; k++) {
            cum += m.latency[r][k];
            mput(&b, &n, &cap, "cxrvqa_request_duration_seconds_bucket{route=\"%s\",le=\"%g\"} %llu\n", ROUTE_NAMES[r],
                 BUCKETS[k], (unsigned long long)cum);
        }
        mput(&b, &n, &cap, "cxrvqa_request_duration_seconds_bucket{route=\"%s\",le=\"+Inf\"} %llu\n", ROUTE_NAMES[r],
             (unsigned long long)total);
        mput(&b, &n, &cap, "cxrvqa_request_duration_seconds_sum{route=\"%s\"} %.6f\n", ROUTE_NAMES[r],
             m.latency_sum_s[r]);
        mput(&b, &n, &cap, "cxrvqa_request_duration_seconds_count{route=\"%s\"} %llu\n", ROUTE_NAMES[r],
             (unsigned long long)total);
    }

    help_type(&b, &n, &cap, "cxrvqa_workers_configured", "gauge", "Worker processes configured (CxrVqa.Workers).");
    mput(&b, &n, &cap, "cxrvqa_workers_configured %d\n", g_op.cfg.n_workers);
    help_type(&b, &n, &cap, "cxrvqa_workers_alive", "gauge", "Worker processes started and serving.");
    mput(&b, &n, &cap, "cxrvqa_workers_alive %d\n", st.n_alive);
    help_type(&b, &n, &cap, "cxrvqa_workers_busy", "gauge", "Worker processes answering a request now.");
    mput(&b, &n, &cap, "cxrvqa_workers_busy %d\n", st.n_busy);
    help_type(&b, &n, &cap, "cxrvqa_workers_waiting", "gauge", "Requests waiting for a free worker.");
    mput(&b, &n, &cap, "cxrvqa_workers_waiting %d\n", st.n_waiting);
    help_type(&b, &n, &cap, "cxrvqa_worker_calls_total", "counter", "Calls to the worker pool.");
    mput(&b, &n, &cap, "cxrvqa_worker_calls_total %llu\n", (unsigned long long)st.requests);
    help_type(&b, &n, &cap, "cxrvqa_worker_crashes_total", "counter",
              "Worker deaths and protocol breaks (the worker was killed and replaced).");
    mput(&b, &n, &cap, "cxrvqa_worker_crashes_total %llu\n", (unsigned long long)st.crashed);
    help_type(&b, &n, &cap, "cxrvqa_worker_timeouts_total", "counter", "Calls that ran past TimeoutSeconds.");
    mput(&b, &n, &cap, "cxrvqa_worker_timeouts_total %llu\n", (unsigned long long)st.timed_out);
    help_type(&b, &n, &cap, "cxrvqa_worker_restarts_total", "counter", "Workers started after the pool's start.");
    mput(&b, &n, &cap, "cxrvqa_worker_restarts_total %llu\n", (unsigned long long)st.restarts);

    help_type(&b, &n, &cap, "cxrvqa_queue_length", "gauge", "Instances waiting in the auto-screen queue.");
    mput(&b, &n, &cap, "cxrvqa_queue_length %lld\n", (long long)(qlen < 0 ? 0 : qlen));
    help_type(&b, &n, &cap, "cxrvqa_enqueued_total", "counter", "Instances put in the auto-screen queue.");
    mput(&b, &n, &cap, "cxrvqa_enqueued_total %llu\n", (unsigned long long)c.enqueued);
    help_type(&b, &n, &cap, "cxrvqa_screen_questions_total", "counter",
              "Screening questions (auto-screen and jobs) by result.");
    mput(&b, &n, &cap, "cxrvqa_screen_questions_total{result=\"answered\"} %llu\n", (unsigned long long)c.screened);
    mput(&b, &n, &cap, "cxrvqa_screen_questions_total{result=\"skipped\"} %llu\n", (unsigned long long)c.screen_skipped);
    mput(&b, &n, &cap, "cxrvqa_screen_questions_total{result=\"failed\"} %llu\n", (unsigned long long)c.screen_failed);
    help_type(&b, &n, &cap, "cxrvqa_screen_not_eligible_total", "counter",
              "Instances not screened: not a chest radiograph of the configured modalities and body parts.");
    mput(&b, &n, &cap, "cxrvqa_screen_not_eligible_total %llu\n", (unsigned long long)c.screen_ineligible);
    help_type(&b, &n, &cap, "cxrvqa_srs_stored_total", "counter", "Structured reports stored in Orthanc.");
    mput(&b, &n, &cap, "cxrvqa_srs_stored_total %llu\n", (unsigned long long)c.srs_stored);
    help_type(&b, &n, &cap, "cxrvqa_sr_store_failures_total", "counter", "Structured reports Orthanc refused.");
    mput(&b, &n, &cap, "cxrvqa_sr_store_failures_total %llu\n", (unsigned long long)c.sr_store_failed);
    help_type(&b, &n, &cap, "cxrvqa_sr_forwards_total", "counter",
              "C-STORE attempts of stored SRs to the ForwardTo modalities, by result.");
    mput(&b, &n, &cap, "cxrvqa_sr_forwards_total{result=\"sent\"} %llu\n", (unsigned long long)c.forwards_sent);
    mput(&b, &n, &cap, "cxrvqa_sr_forwards_total{result=\"retry\"} %llu\n", (unsigned long long)c.forward_retries);
    mput(&b, &n, &cap, "cxrvqa_sr_forwards_total{result=\"failed\"} %llu\n", (unsigned long long)c.forwards_failed);
    help_type(&b, &n, &cap, "cxrvqa_jobs_total", "counter", "Screening jobs submitted (POST /cxrvqa/studies/{id}/screen).");
    mput(&b, &n, &cap, "cxrvqa_jobs_total %llu\n", (unsigned long long)c.jobs);
    return b;
}

/* ---------------------------------------------------- configuration keys */

/* Levenshtein distance, ASCII case-insensitive; keys are short (capped at 63). */
int op_edit_distance(const char *a, const char *b) {
    size_t la = strlen(a), lb = strlen(b);
    if (la > 63 || lb > 63)
        return 64;
    int row[64];
    for (size_t j = 0; j <= lb; j++)
        row[j] = (int)j;
    for (size_t i = 1; i <= la; i++) {
        int diag = row[0];
        row[0] = (int)i;
        for (size_t j = 1; j <= lb; j++) {
            int up = row[j];
            char ca = a[i - 1], cb = b[j - 1];
            if (ca >= 'A' && ca <= 'Z')
                ca = (char)(ca - 'A' + 'a');
            if (cb >= 'A' && cb <= 'Z')
                cb = (char)(cb - 'A' + 'a');
            int best = diag + (ca != cb);
            if (up + 1 < best)
                best = up + 1;
            if (row[j - 1] + 1 < best)
                best = row[j - 1] + 1;
            row[j] = best;
            diag = up;
        }
    }
    return row[lb];
}

int op_config_check_keys(const cJSON *sec, const char *const *known, char *err, size_t errlen) {
    const cJSON *e;
    cJSON_ArrayForEach(e, sec) {
        const char *k = e->string ? e->string : "";
        int found = 0;
        for (int i = 0; known[i] && !found; i++)
            found = strcmp(known[i], k) == 0;
        if (found)
            continue;
        /* the nearest known key, when it is near: at most a third of its
           length away (2 for short keys), or the same key in another case */
        int best = -1, bd = 1 << 30;
        for (int i = 0; known[i]; i++) {
            int d = op_edit_distance(k, known[i]);
            if (d < bd)
                bd = d, best = i;
        }
        int near = best >= 0 ? (int)strlen(known[best]) / 3 : 0;
        if (near < 2)
            near = 2;
        if (best >= 0 && bd <= near) {
            snprintf(err, errlen, "unknown key CxrVqa.%.64s (did you mean \"%s\"?)", k, known[best]);
        } else {
            size_t n = (size_t)snprintf(err, errlen, "unknown key CxrVqa.%.64s (known keys:", k);
            for (int i = 0; known[i] && n < errlen; i++)
                n += (size_t)snprintf(err + n, errlen - n, " %s", known[i]);
            if (n < errlen)
                snprintf(err + n, errlen - n, ")");
        }
        return -1;
    }
    return 0;
}
