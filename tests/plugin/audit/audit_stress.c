/*
 * audit_stress.c — the writer that tests/plugin/audit/test_audit_proc.py drives: resumable
 * appends that print each committed number (crash test, concurrency),
 * throughput with synchronous FULL vs NORMAL, bulk fill + timed verify,
 * append-until-failure (full filesystem), one open+append (read-only
 * mount), and `cli …` which runs cxr_cli_audit. It only uses the public
 * audit API and writes only the databases it is given.
 *
 *   audit_stress write DB FROM TO [--prefix P] [--normal]   prints N after append(N) returned
 *   audit_stress bench DB_FULL DB_NORMAL ROWS
 *   audit_stress fill DB ROWS                               (synchronous NORMAL, for speed)
 *   audit_stress verify DB
 *   audit_stress until-fail DB
 *   audit_stress open DB                                    exit 0 ok, 4 AUDIT, 5 DB, 6 other
 *   audit_stress hostile DB                                 3 rows of XML/JSON-hostile strings
 *   audit_stress cli audit …
 */
#include "audit.h"
#include "cli.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static void record(cxr_audit_record *r, const char *key, char *q, size_t qn, long n) {
    cxr_audit_record_init(r);
    snprintf(q, qn, "Is there a pleural effusion? #%ld", n);
    r->event_type = n % 10 == 9 ? "refusal" : "screen";
    r->outcome = n % 10 == 9 ? CXR_AUDIT_MINOR_FAILURE : CXR_AUDIT_SUCCESS;
    r->application = "audit_stress";
    r->question = q;
    r->language = "en";
    r->intent = "presence";
    r->study_uid = n % 2 ? "1.2.826.0.1.3680043.8.498.11" : "1.2.826.0.1.3680043.8.498.12";
    r->series_uid = "1.2.826.0.1.3680043.8.498.11.1";
    r->sop_uid = "1.2.826.0.1.3680043.8.498.11.1.1";
    r->sop_class_uid = "1.2.840.10008.5.1.4.1.1.1.1";
    r->accession = "ACC-STRESS";
    r->source = "/data/stress.dcm";
    r->patient_id = "PAT-STRESS";
    r->answer = n % 10 == 9 ? "refused" : "no";
    r->answer_text = "No pleural effusion is seen (p = 0.08).";
    r->findings_json = "{\"pleural_effusion\":{\"p\":0.08,\"threshold\":0.5,\"decision\":\"no\"}}";
    r->warnings_json = "[]";
    r->model_name = "cxr-cnn";
    r->model_version = "1.0";
    r->model_sha256 = "0f3c5e0d2b1a";
    r->prompt_version = "p1";
    r->latency_ms = 30;
    r->request_key = key;
    if (n % 10 == 9) {
        r->error_code = CXR_ERR_NOT_CHEST;
        r->reason = "not a chest radiograph";
    }
}

static cxr_audit *open_db(const char *path, int full) {
    cxr_audit_params p = cxr_audit_params_default();
    p.synchronous_full = full;
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_audit_open(path, &p, &a, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "audit_stress: %s\n", err);
        return NULL;
    }
    return a;
}

/* Append rows FROM..TO-1 that are not there yet; print each after commit. */
static int cmd_write(const char *db, long from, long to, const char *prefix, int full) {
    cxr_audit *a = open_db(db, full);
    if (!a) return 1;
    char err[CXR_ERRMSG_MAX], key[64], q[96];
    for (long n = from; n < to; n++) {
        snprintf(key, sizeof key, "%s%ld", prefix, n);
        int found = 0;
        if (cxr_audit_has_request(a, key, &found, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "audit_stress: %s\n", err);
            cxr_audit_close(a);
            return 1;
        }
        if (found) continue;
        cxr_audit_record r;
        record(&r, key, q, sizeof q, n);
        if (cxr_audit_append(a, &r, NULL, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "audit_stress: %s\n", err);
            cxr_audit_close(a);
            return 1;
        }
        printf("%ld\n", n);
        fflush(stdout);
    }
    cxr_audit_close(a);
    return 0;
}

static double rate(const char *db, long rows, int full) {
    cxr_audit *a = open_db(db, full);
    if (!a) return -1;
    char err[CXR_ERRMSG_MAX], key[64], q[96];
    double t0 = now_s();
    for (long n = 0; n < rows; n++) {
        snprintf(key, sizeof key, "bench-%ld", n);
        cxr_audit_record r;
        record(&r, key, q, sizeof q, n);
        if (cxr_audit_append(a, &r, NULL, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "audit_stress: %s\n", err);
            cxr_audit_close(a);
            return -1;
        }
    }
    double dt = now_s() - t0;
    cxr_audit_close(a);
    return rows / dt;
}

static int cmd_verify(const char *db) {
    cxr_audit_verify_result res;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_audit_verify(db, &res, err, sizeof err);
    printf("verify rows=%lld seconds=%.3f rc=%d problem=%d\n", (long long)res.rows, res.seconds, rc, res.problem);
    if (rc != CXR_OK) printf("detail: %s\n", err);
    return rc == CXR_OK ? 0 : res.problem ? 1 : 3;
}

static int cmd_until_fail(const char *db) {
    cxr_audit *a = open_db(db, 1);
    if (!a) return 2;
    static char text[10001];
    memset(text, 't', 10000);
    char err[CXR_ERRMSG_MAX] = "", key[64], q[96];
    int rc = CXR_OK;
    long n = 0;
    for (; n < 100000; n++) {
        snprintf(key, sizeof key, "fill-%ld", n);
        cxr_audit_record r;
        record(&r, key, q, sizeof q, n);
        r.answer_text = text;
        if ((rc = cxr_audit_append(a, &r, NULL, err, sizeof err)) != CXR_OK) break;
        printf("committed %ld\n", n);
    }
    printf("error %d %s\n", rc, err);
    cxr_audit_close(a);
    return rc == CXR_ERR_AUDIT ? 0 : 1;
}

static int cmd_open(const char *db) {
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX] = "", q[96];
    int rc = cxr_audit_open(db, NULL, &a, err, sizeof err);
    if (rc == CXR_OK) {
        cxr_audit_record r;
        record(&r, "open-1", q, sizeof q, 1);
        rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
        cxr_audit_close(a);
    }
    printf("rc %d %s\n", rc, err);
    return rc == CXR_OK ? 0 : rc == CXR_ERR_AUDIT ? 4 : rc == CXR_ERR_DB ? 5 : 6;
}

/* Strings that break naive XML / JSON / SQL writers. */
static int cmd_hostile(const char *db) {
    cxr_audit *a = open_db(db, 1);
    if (!a) return 1;
    static const char *const nasty[] = {
        "<script>alert('x')</script> & \"quoted\" ]]> --> 胸腔积液",
        "tab\there\nnewline\rcr \x01\x02 ctl \x7f del",
        "bad utf-8 \xff\xfe \xc3\x28 end \xef\xbf\xbe",
    };
    char err[CXR_ERRMSG_MAX], key[32], q[96];
    for (int i = 0; i < 3; i++) {
        cxr_audit_record r;
        snprintf(key, sizeof key, "hostile-%d", i);
        record(&r, key, q, sizeof q, i);
        r.event_type = "refusal";
        r.outcome = CXR_AUDIT_MINOR_FAILURE;
        r.question = nasty[i];
        r.user = nasty[i];
        r.application = nasty[(i + 1) % 3];
        r.patient_id = nasty[(i + 2) % 3];
        r.reason = nasty[i];
        r.accession = nasty[(i + 1) % 3];
        r.findings_json = nasty[i];
        r.error_code = CXR_ERR_NOT_CHEST;
        r.study_uid = "1.2.826.0.1.3680043.8.498.99";
        r.sop_class_uid = i == 0 ? NULL : r.sop_class_uid;
        if (cxr_audit_append(a, &r, NULL, err, sizeof err) != CXR_OK) {
            fprintf(stderr, "audit_stress: %s\n", err);
            cxr_audit_close(a);
            return 1;
        }
    }
    cxr_audit_close(a);
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 5 && strcmp(argv[1], "write") == 0) {
        const char *prefix = "req-";
        int full = 1;
        for (int i = 5; i < argc; i++) {
            if (strcmp(argv[i], "--prefix") == 0 && i + 1 < argc) prefix = argv[++i];
            else if (strcmp(argv[i], "--normal") == 0) full = 0;
        }
        return cmd_write(argv[2], atol(argv[3]), atol(argv[4]), prefix, full);
    }
    if (argc == 5 && strcmp(argv[1], "bench") == 0) {
        long rows = atol(argv[4]);
        double full = rate(argv[2], rows, 1), normal = rate(argv[3], rows, 0);
        if (full <= 0 || normal <= 0) return 1;
        printf("rows=%ld full_rows_per_s=%.0f normal_rows_per_s=%.0f normal_over_full=%.1f\n", rows, full, normal,
               normal / full);
        return 0;
    }
    if (argc == 4 && strcmp(argv[1], "fill") == 0) {
        double r = rate(argv[2], atol(argv[3]), 0);
        if (r <= 0) return 1;
        printf("fill rows=%ld normal_rows_per_s=%.0f\n", atol(argv[3]), r);
        return 0;
    }
    if (argc == 3 && strcmp(argv[1], "verify") == 0) return cmd_verify(argv[2]);
    if (argc == 3 && strcmp(argv[1], "until-fail") == 0) return cmd_until_fail(argv[2]);
    if (argc == 3 && strcmp(argv[1], "open") == 0) return cmd_open(argv[2]);
    if (argc == 3 && strcmp(argv[1], "hostile") == 0) return cmd_hostile(argv[2]);
    if (argc >= 3 && strcmp(argv[1], "cli") == 0) return cli_audit(argc - 2, argv + 2);
    fprintf(stderr, "usage: see the comment at the top of tests/plugin/audit/audit_stress.c\n");
    return 2;
}
