/*
 * test_ops.c — the operator-facing parts of the Orthanc plugin
 * (plugin/orthanc/ops.c) without Orthanc: the edit distance and the
 * "did you mean" rule for unknown "CxrVqa" keys, the HTTP status -> outcome
 * mapping, and the Prometheus text the metrics route serves (counters by
 * route and outcome, a cumulative histogram whose +Inf bucket is its count).
 * No Orthanc context: nothing is logged (op_log needs one), the counting is
 * the same.
 */
#include "internal.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

op_state g_op; /* plugin.c's, which this test does not link */

static const char *const KNOWN[] = {"Model", "Workers", "AutoScreen", "ScreeningQuestions", "TimeoutSeconds", NULL};

static int check_keys(const char *json, char *err, size_t n) {
    cJSON *j = cJSON_Parse(json);
    err[0] = 0;
    int rc = op_config_check_keys(j, KNOWN, err, n);
    cJSON_Delete(j);
    return rc;
}

/* the value of one sample line "name{labels} value" (exact name and labels), -1 when absent */
static double sample(const char *text, const char *series) {
    size_t n = strlen(series);
    for (const char *p = text; p && *p; p = strchr(p, '\n') ? strchr(p, '\n') + 1 : NULL)
        if (strncmp(p, series, n) == 0 && p[n] == ' ')
            return strtod(p + n + 1, NULL);
    return -1;
}

int main(void) {
    /* edit distance: ASCII case-insensitive Levenshtein */
    CHECK(op_edit_distance("AutoScren", "AutoScreen") == 1, "AutoScren");
    CHECK(op_edit_distance("Worker", "Workers") == 1, "Worker");
    CHECK(op_edit_distance("autoscreen", "AutoScreen") == 0, "case");
    CHECK(op_edit_distance("kitten", "sitting") == 3, "kitten/sitting");
    CHECK(op_edit_distance("", "abc") == 3 && op_edit_distance("abc", "") == 3, "empty");
    CHECK(op_edit_distance("TimoutSecnds", "TimeoutSeconds") == 2, "two slips");

    /* unknown keys */
    char err[600];
    CHECK(check_keys("{\"Model\":\"m\",\"Workers\":2}", err, sizeof err) == 0 && !err[0], "known keys pass");
    CHECK(check_keys("{}", err, sizeof err) == 0, "empty section passes");
    CHECK(check_keys("{\"Workers\":1,\"AutoScren\":true}", err, sizeof err) == -1 &&
              !strcmp(err, "unknown key CxrVqa.AutoScren (did you mean \"AutoScreen\"?)"),
          "AutoScren: %s", err);
    CHECK(check_keys("{\"Worker\":1}", err, sizeof err) == -1 &&
              !strcmp(err, "unknown key CxrVqa.Worker (did you mean \"Workers\"?)"),
          "Worker: %s", err);
    CHECK(check_keys("{\"TimoutSecnds\":1}", err, sizeof err) == -1 && strstr(err, "did you mean \"TimeoutSeconds\"?"),
          "two slips in a long key: %s", err);
    /* too far from every key: the list instead of a guess */
    CHECK(check_keys("{\"Colour\":1}", err, sizeof err) == -1 &&
              !strcmp(err, "unknown key CxrVqa.Colour (known keys: Model Workers AutoScreen ScreeningQuestions "
                           "TimeoutSeconds)"),
          "Colour: %s", err);
    CHECK(check_keys("{\"Mod\":1}", err, sizeof err) == -1 && strstr(err, "did you mean \"Model\"?"), "Mod: %s", err);
    CHECK(check_keys("{\"Wo\":1}", err, sizeof err) == -1 && strstr(err, "known keys:"), "Wo is not Workers: %s", err);
    char big[400];
    memset(big, 'k', 300);
    strcpy(big + 300, "\":1}");
    char js[420] = "{\"";
    strcat(js, big);
    char small[48];
    CHECK(check_keys(js, small, sizeof small) == -1 && strlen(small) == sizeof small - 1, "a long key, a small buffer");

    /* outcomes */
    CHECK(op_outcome_of(200, 0) == OP_O_OK && op_outcome_of(200, 1) == OP_O_REFUSED, "200");
    CHECK(op_outcome_of(400, 1) == OP_O_REFUSED && op_outcome_of(400, 0) == OP_O_BAD_REQUEST, "400");
    CHECK(op_outcome_of(405, 0) == OP_O_BAD_REQUEST && op_outcome_of(413, 0) == OP_O_BAD_REQUEST, "405 413");
    CHECK(op_outcome_of(404, 0) == OP_O_NOT_FOUND && op_outcome_of(422, 0) == OP_O_UNREADABLE, "404 422");
    CHECK(op_outcome_of(503, 0) == OP_O_UNAVAILABLE, "503");
    CHECK(op_outcome_of(502, 0) == OP_O_WORKER_FAILURE && op_outcome_of(504, 0) == OP_O_WORKER_FAILURE, "502 504");
    CHECK(op_outcome_of(500, 0) == OP_O_ERROR && op_outcome_of(418, 0) == OP_O_BAD_REQUEST, "500 418");
    CHECK(!strcmp(op_outcome_name(OP_O_WORKER_FAILURE), "worker_failure") && !strcmp(op_route_name(OP_R_ASK), "ask"),
          "names");

    /* metrics: two asks (one 300 ms ago, one refused), one heatmap failure */
    pthread_mutex_init(&g_op.mu, NULL);
    g_op.cfg.n_workers = 3;
    op_request_log l = {.route = OP_R_ASK, .t0_ms = op_now_ms() - 300};
    op_request_done(&l, 200, 0, NULL, NULL);
    l.t0_ms = op_now_ms();
    op_request_done(&l, 200, 1, NULL, "treatment");
    op_request_log hm = {.route = OP_R_HEATMAP, .t0_ms = op_now_ms()};
    op_request_done(&hm, 502, 0, "worker-crashed", NULL);
    char *t = op_metrics_text();
    CHECK(t != NULL, "metrics text");
    if (t) {
        CHECK(sample(t, "cxrvqa_requests_total{route=\"ask\",outcome=\"ok\"}") == 1, "ask ok 1");
        CHECK(sample(t, "cxrvqa_requests_total{route=\"ask\",outcome=\"refused\"}") == 1, "ask refused 1");
        CHECK(sample(t, "cxrvqa_requests_total{route=\"heatmap\",outcome=\"worker_failure\"}") == 1, "heatmap 502");
        CHECK(sample(t, "cxrvqa_requests_total{route=\"heatmap\",outcome=\"ok\"}") == 0, "heatmap ok listed at 0");
        CHECK(sample(t, "cxrvqa_requests_total{route=\"audit\",outcome=\"ok\"}") == -1, "unused series left out");
        CHECK(sample(t, "cxrvqa_request_duration_seconds_bucket{route=\"ask\",le=\"0.25\"}") == 1, "fast ask <= 0.25 s");
        CHECK(sample(t, "cxrvqa_request_duration_seconds_bucket{route=\"ask\",le=\"0.5\"}") == 2, "300 ms ask <= 0.5 s");
        CHECK(sample(t, "cxrvqa_request_duration_seconds_bucket{route=\"ask\",le=\"+Inf\"}") == 2, "+Inf");
        CHECK(sample(t, "cxrvqa_request_duration_seconds_count{route=\"ask\"}") == 2, "count");
        double s = sample(t, "cxrvqa_request_duration_seconds_sum{route=\"ask\"}");
        CHECK(s >= 0.3 && s < 0.5, "sum %g", s);
        CHECK(sample(t, "cxrvqa_workers_configured") == 3 && sample(t, "cxrvqa_workers_alive") == 0, "workers");
        CHECK(sample(t, "cxrvqa_enabled") == 1, "enabled");
        CHECK(strstr(t, "# TYPE cxrvqa_request_duration_seconds histogram\n") &&
                  strstr(t, "# TYPE cxrvqa_requests_total counter\n") && strstr(t, "# TYPE cxrvqa_queue_length gauge\n"),
              "TYPE lines");
        free(t);
    }
    /* disabled: the reason as an escaped label */
    g_op.disabled = 1;
    snprintf(g_op.disabled_reason, sizeof g_op.disabled_reason, "unknown key CxrVqa.X (did you mean \"Y\"?)");
    t = op_metrics_text();
    CHECK(t && strstr(t, "cxrvqa_enabled{reason=\"unknown key CxrVqa.X (did you mean \\\"Y\\\"?)\"} 0\n"),
          "disabled reason escaped");
    free(t);
    pthread_mutex_destroy(&g_op.mu);
    return CHECK_SUMMARY();
}
