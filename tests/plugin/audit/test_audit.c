/*
 * test_audit.c — unit tests of the audit store (plugin/audit/audit.c) through its
 * public API, with the raw SQLite API playing the attacker: round trip,
 * every kind of tampering named by verify, schema refusals, file modes,
 * pseudonymised patient ids, hostile strings, and the fail-closed paths
 * (page limit = disk full, query_only = read-only, RLIMIT_FSIZE = I/O error,
 * a lock held past the busy timeout). Works in its own temporary directory
 * and touches nothing else.
 */
#include "audit.h"
#include "check.h"

#include <cjson/cJSON.h>
#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <signal.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

/* internal hooks of audit.c (not in the public header) */
sqlite3 *audit_sqlite_handle(cxr_audit *a);
const char *audit_fs_network_name(unsigned long f_type, const char *fstype);

static char tmpdir[256];
static int counter;

static const char *fresh_path(char *buf, size_t n) {
    snprintf(buf, n, "%s/db%d.sqlite", tmpdir, counter++);
    return buf;
}

static double now_s(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec + ts.tv_nsec * 1e-9;
}

static int streq(const char *a, const char *b) { return (!a && !b) || (a && b && strcmp(a, b) == 0); }

static void sample(cxr_audit_record *r, int i, char *qbuf, size_t qn, char *kbuf, size_t kn) {
    cxr_audit_record_init(r);
    snprintf(qbuf, qn, "Is there a pleural effusion? (%d)", i);
    snprintf(kbuf, kn, "req-%d", i);
    r->event_type = "ask";
    r->outcome = CXR_AUDIT_SUCCESS;
    r->application = "CXRVQA_TEST";
    r->question = qbuf;
    r->language = "en";
    r->intent = "presence";
    r->study_uid = i % 2 ? "1.2.826.0.1.3680043.8.498.1" : "1.2.826.0.1.3680043.8.498.2";
    r->series_uid = "1.2.826.0.1.3680043.8.498.1.1";
    r->sop_uid = "1.2.826.0.1.3680043.8.498.1.1.1";
    r->sop_class_uid = "1.2.840.10008.5.1.4.1.1.1.1";
    r->accession = "ACC001";
    r->source = "/data/cxr/1.dcm";
    r->patient_id = "PAT-0001";
    r->answer = "yes";
    r->answer_text = "Yes: pleural effusion is likely (p = 0.91).";
    r->findings_json = "{\"pleural_effusion\":{\"p\":0.91,\"threshold\":0.5,\"decision\":\"yes\"}}";
    r->warnings_json = "[\"uncalibrated\"]";
    r->model_name = "cxr-cnn";
    r->model_version = "1.0";
    r->model_sha256 = "ab12";
    r->prompt_version = "p1";
    r->latency_ms = 40 + i;
    r->request_key = kbuf;
}

static cxr_audit *open_or_die(const char *path, const cxr_audit_params *p) {
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_audit_open(path, p, &a, err, sizeof err);
    CHECK(rc == CXR_OK, "open %s: %d %s", path, rc, err);
    return a;
}

static void fill(const char *path, int n) {
    cxr_audit *a = open_or_die(path, NULL);
    if (!a) return;
    char err[CXR_ERRMSG_MAX], q[128], k[32];
    for (int i = 0; i < n; i++) {
        cxr_audit_record r;
        sample(&r, i, q, sizeof q, k, sizeof k);
        int64_t seq = 0;
        int rc = cxr_audit_append(a, &r, &seq, err, sizeof err);
        CHECK(rc == CXR_OK && seq == i + 1, "append %d: rc %d seq %lld %s", i, rc, (long long)seq, err);
    }
    cxr_audit_close(a);
}

static int raw_exec(const char *path, const char *sql) {
    sqlite3 *db = NULL;
    int rc = sqlite3_open(path, &db);
    if (rc == SQLITE_OK) rc = sqlite3_exec(db, sql, NULL, NULL, NULL);
    if (rc != SQLITE_OK) printf("  raw sql: %s\n", sqlite3_errmsg(db));
    sqlite3_close(db);
    return rc;
}

/* ------------------------------------------------------------------------ */

typedef struct {
    int n;
    cxr_audit_record first;
    char question[128], findings[256];
    int null_sr;
    int64_t latency;
} collect;

static int collect_fn(const cxr_audit_row *row, void *ctx) {
    collect *c = ctx;
    if (c->n++ == 0) {
        snprintf(c->question, sizeof c->question, "%s", row->rec.question ? row->rec.question : "(null)");
        snprintf(c->findings, sizeof c->findings, "%s", row->rec.findings_json ? row->rec.findings_json : "(null)");
        c->null_sr = row->rec.sr_uid == NULL && row->rec.reason == NULL;
        c->latency = row->rec.latency_ms;
    }
    return 0;
}

static void test_roundtrip(void) {
    char path[512], err[CXR_ERRMSG_MAX], q[128], k[32];
    fresh_path(path, sizeof path);
    fill(path, 10);
    cxr_audit_verify_result res;
    int rc = cxr_audit_verify(path, &res, err, sizeof err);
    CHECK(rc == CXR_OK && res.problem == CXR_AUDIT_INTACT, "verify fresh: %d %s", rc, err);
    CHECK(res.rows == 10 && res.head_seq == 10 && !res.triggers_missing, "rows %lld head %lld trig %d",
          (long long)res.rows, (long long)res.head_seq, res.triggers_missing);

    cxr_audit *a = open_or_die(path, NULL);
    if (!a) return;
    int64_t hs = 0;
    char hh[CXR_AUDIT_HASH_HEX];
    CHECK(cxr_audit_head(a, &hs, hh, err, sizeof err) == CXR_OK && hs == 10 && strcmp(hh, res.head_hash) == 0,
          "head %lld %s vs %s", (long long)hs, hh, res.head_hash);

    collect c = {0};
    cxr_audit_filter f = {NULL, NULL, 0, 0};
    rc = cxr_audit_scan(a, &f, collect_fn, &c, err, sizeof err);
    CHECK(rc == CXR_OK && c.n == 10, "scan all: %d rows rc %d %s", c.n, rc, err);
    CHECK(strcmp(c.question, "Is there a pleural effusion? (0)") == 0, "first question '%s'", c.question);
    CHECK(strstr(c.findings, "\"threshold\":0.5") != NULL, "findings '%s'", c.findings);
    CHECK(c.null_sr, "absent fields come back NULL");
    CHECK(c.latency == 40, "latency %lld", (long long)c.latency);

    memset(&c, 0, sizeof c);
    f.study_uid = "1.2.826.0.1.3680043.8.498.1";
    rc = cxr_audit_scan(a, &f, collect_fn, &c, err, sizeof err);
    CHECK(rc == CXR_OK && c.n == 5, "scan study: %d", c.n);
    memset(&c, 0, sizeof c);
    f.study_uid = NULL;
    f.since = "2999-01-01";
    rc = cxr_audit_scan(a, &f, collect_fn, &c, err, sizeof err);
    CHECK(rc == CXR_OK && c.n == 0, "scan since future: %d", c.n);
    memset(&c, 0, sizeof c);
    f.since = "2000-01-01T00:00:00.000Z";
    rc = cxr_audit_scan(a, &f, collect_fn, &c, err, sizeof err);
    CHECK(rc == CXR_OK && c.n == 10, "scan since past: %d", c.n);
    f.since = "yesterday";
    rc = cxr_audit_scan(a, &f, collect_fn, &c, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG, "bad since refused: %d", rc);

    /* JSON for the Orthanc route: newest first, limited */
    char *json = NULL;
    rc = cxr_audit_query_json(a, "1.2.826.0.1.3680043.8.498.2", 3, &json, err, sizeof err);
    CHECK(rc == CXR_OK && json, "query_json: %d %s", rc, err);
    cJSON *arr = json ? cJSON_Parse(json) : NULL;
    CHECK(arr && cJSON_IsArray(arr) && cJSON_GetArraySize(arr) == 3, "query_json: 3 rows");
    if (arr && cJSON_GetArraySize(arr) == 3) {
        cJSON *o = cJSON_GetArrayItem(arr, 0);
        cJSON *seq = cJSON_GetObjectItem(o, "seq"), *fi = cJSON_GetObjectItem(o, "findings");
        CHECK(seq && seq->valuedouble == 9, "newest first: seq %g", seq ? seq->valuedouble : -1);
        CHECK(fi && cJSON_IsObject(fi) && cJSON_GetObjectItem(fi, "pleural_effusion"), "findings embedded as JSON");
        CHECK(cJSON_GetObjectItem(o, "sr_uid") == NULL, "absent field left out");
        cJSON *ev = cJSON_GetObjectItem(o, "event_id");
        CHECK(ev && ev->valuedouble == 110103, "ask -> 110103");
    }
    cJSON_Delete(arr);
    free(json);

    /* has_request: success and refusal count, errors do not */
    cxr_audit_record r;
    sample(&r, 100, q, sizeof q, k, sizeof k);
    r.request_key = "k-refused";
    r.event_type = "refusal";
    r.outcome = CXR_AUDIT_MINOR_FAILURE;
    r.answer = "refused";
    r.error_code = CXR_ERR_NOT_CHEST;
    r.reason = "not a chest radiograph";
    CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_OK, "append refusal: %s", err);
    r.request_key = "k-error";
    r.event_type = "worker-failure";
    r.outcome = CXR_AUDIT_SERIOUS_FAILURE;
    CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_OK, "append error: %s", err);
    int found = -1;
    CHECK(cxr_audit_has_request(a, "req-3", &found, err, sizeof err) == CXR_OK && found == 1, "req-3 found");
    CHECK(cxr_audit_has_request(a, "k-refused", &found, err, sizeof err) == CXR_OK && found == 1, "refusal counts");
    CHECK(cxr_audit_has_request(a, "k-error", &found, err, sizeof err) == CXR_OK && found == 0, "error does not count");
    CHECK(cxr_audit_has_request(a, "nope", &found, err, sizeof err) == CXR_OK && found == 0, "unknown key");

    /* bad records are refused and nothing is written */
    sample(&r, 200, q, sizeof q, k, sizeof k);
    r.event_type = NULL;
    CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_ERR_ARG, "no event_type -> ARG");
    r.event_type = "ask";
    r.outcome = 3;
    CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_ERR_ARG, "outcome 3 -> ARG");
    r.outcome = 0;
    char *huge = malloc(CXR_AUDIT_MAX_FIELD + 2);
    if (huge) {
        memset(huge, 'x', CXR_AUDIT_MAX_FIELD + 1);
        huge[CXR_AUDIT_MAX_FIELD + 1] = 0;
        r.answer_text = huge;
        CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_ERR_ARG, "field over the cap -> ARG");
        free(huge);
    }
    CHECK(cxr_audit_append(NULL, &r, NULL, err, sizeof err) == CXR_ERR_ARG, "NULL handle -> ARG");
    CHECK(cxr_audit_head(a, &hs, hh, err, sizeof err) == CXR_OK && hs == 12, "nothing written by refused appends: %lld",
          (long long)hs);
    cxr_audit_close(a);
    cxr_audit_close(NULL);

    /* a read-only handle reads but never appends */
    cxr_audit_params p = cxr_audit_params_default();
    p.read_only = 1;
    a = open_or_die(path, &p);
    if (a) {
        sample(&r, 300, q, sizeof q, k, sizeof k);
        CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_ERR_AUDIT, "read-only append -> AUDIT");
        cxr_audit_close(a);
    }
    char missing[600];
    snprintf(missing, sizeof missing, "%s/none/x.sqlite", tmpdir);
    CHECK(cxr_audit_open(missing, &p, &a, err, sizeof err) == CXR_ERR_IO && !a, "read-only open of missing -> IO");
    CHECK(cxr_audit_verify(missing, &res, err, sizeof err) == CXR_ERR_IO, "verify missing -> IO");
}

/* ------------------------------------------------------------------------ */

typedef struct {
    const char *name, *sql;
    cxr_audit_problem problem;
    int64_t seq, rowid; /* rowid -1: not checked */
} tamper_case;

static void test_tampering(void) {
    static const char drop[] = "DROP TRIGGER audit_no_update; DROP TRIGGER audit_no_delete;";
    static const tamper_case cases[] = {
        {"edit a field", "UPDATE audit SET answer = 'no' WHERE seq = 3", CXR_AUDIT_EDITED, 3, 3},
        {"edit prev_hash", "UPDATE audit SET prev_hash = row_hash WHERE seq = 7", CXR_AUDIT_EDITED, 7, 7},
        {"edit the time", "UPDATE audit SET time_utc = '2020-01-01T00:00:00.000Z' WHERE seq = 1", CXR_AUDIT_EDITED, 1, 1},
        {"NULL a field", "UPDATE audit SET patient_id = NULL WHERE seq = 10", CXR_AUDIT_EDITED, 10, 10},
        {"change a type", "UPDATE audit SET latency_ms = 'forty-five' WHERE seq = 6", CXR_AUDIT_EDITED, 6, 6},
        {"delete a middle row", "DELETE FROM audit WHERE seq = 4", CXR_AUDIT_DELETED, 4, -1},
        {"delete two middle rows", "DELETE FROM audit WHERE seq IN (4, 5)", CXR_AUDIT_DELETED, 4, -1},
        {"swap two rows (reorder)",
         "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (5, 6);"
         "DELETE FROM audit WHERE id IN (5, 6); UPDATE t SET id = 11 - id; INSERT INTO audit SELECT * FROM t;",
         CXR_AUDIT_REORDERED, 5, 6},
        {"swap contents, keep seq",
         "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE id IN (5, 6);"
         "DELETE FROM audit WHERE id IN (5, 6); UPDATE t SET id = 11 - id, seq = 11 - seq;"
         "INSERT INTO audit SELECT * FROM t;",
         CXR_AUDIT_EDITED, 5, 5},
        {"insert a forged copy",
         "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq = 3;"
         "UPDATE t SET id = NULL, answer = 'no'; INSERT INTO audit SELECT * FROM t;",
         CXR_AUDIT_INSERTED, 3, 11},
        {"insert beyond the head",
         "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq = 10;"
         "UPDATE t SET id = NULL, seq = 11, prev_hash = row_hash; INSERT INTO audit SELECT * FROM t;",
         CXR_AUDIT_INSERTED, 11, 11},
        {"insert before the first row",
         "CREATE TEMP TABLE t AS SELECT * FROM audit WHERE seq = 1;"
         "UPDATE t SET id = 0; INSERT INTO audit SELECT * FROM t;",
         CXR_AUDIT_INSERTED, 1, 1},
        {"truncate the tail", "DELETE FROM audit WHERE seq >= 9", CXR_AUDIT_TRUNCATED, 9, -1},
        {"truncate and fix nothing else", "DELETE FROM audit WHERE seq = 10", CXR_AUDIT_TRUNCATED, 10, -1},
        {"edit the chain head",
         "UPDATE meta SET value = '1111111111111111111111111111111111111111111111111111111111111111'"
         " WHERE key = 'chain_head_hash'",
         CXR_AUDIT_EDITED, 10, 10},
    };
    char path[512], err[CXR_ERRMSG_MAX];

    /* the triggers stop a careless edit */
    fresh_path(path, sizeof path);
    fill(path, 3);
    CHECK(raw_exec(path, "UPDATE audit SET answer = 'no' WHERE seq = 2") != SQLITE_OK, "append-only trigger blocks UPDATE");
    CHECK(raw_exec(path, "DELETE FROM audit WHERE seq = 2") != SQLITE_OK, "append-only trigger blocks DELETE");

    for (size_t i = 0; i < sizeof cases / sizeof cases[0]; i++) {
        const tamper_case *tc = &cases[i];
        fresh_path(path, sizeof path);
        fill(path, 10);
        CHECK(raw_exec(path, drop) == SQLITE_OK, "%s: drop triggers", tc->name);
        CHECK(raw_exec(path, tc->sql) == SQLITE_OK, "%s: tamper sql", tc->name);
        cxr_audit_verify_result res;
        int rc = cxr_audit_verify(path, &res, err, sizeof err);
        CHECK(rc == CXR_ERR_DB, "%s: verify returns CXR_ERR_DB (got %d)", tc->name, rc);
        CHECK(res.problem == tc->problem, "%s: problem %d, expected %d (%s)", tc->name, res.problem, tc->problem, res.detail);
        CHECK(res.seq == tc->seq, "%s: seq %lld, expected %lld (%s)", tc->name, (long long)res.seq, (long long)tc->seq,
              res.detail);
        CHECK(tc->rowid < 0 || res.rowid == tc->rowid, "%s: rowid %lld, expected %lld (%s)", tc->name,
              (long long)res.rowid, (long long)tc->rowid, res.detail);
        CHECK(res.triggers_missing == 1, "%s: dropped triggers reported", tc->name);
        char want[32];
        snprintf(want, sizeof want, "seq %lld", (long long)tc->seq);
        CHECK(strstr(res.detail, want) && strcmp(err, res.detail) == 0, "%s: message names %s: '%s'", tc->name, want,
              res.detail);
        printf("  %-28s -> %s\n", tc->name, res.detail);
    }

    /* appending after a truncation keeps the gap visible */
    fresh_path(path, sizeof path);
    fill(path, 10);
    raw_exec(path, drop);
    raw_exec(path, "DELETE FROM audit WHERE seq >= 8");
    cxr_audit *a = open_or_die(path, NULL);
    if (a) {
        cxr_audit_record r;
        char q[128], k[32];
        sample(&r, 50, q, sizeof q, k, sizeof k);
        int64_t seq = 0;
        CHECK(cxr_audit_append(a, &r, &seq, err, sizeof err) == CXR_OK && seq == 11, "append after truncation: seq %lld",
              (long long)seq);
        cxr_audit_close(a);
    }
    cxr_audit_verify_result res;
    CHECK(cxr_audit_verify(path, &res, err, sizeof err) == CXR_ERR_DB && res.problem == CXR_AUDIT_DELETED && res.seq == 8,
          "gap 8..10 reported after a new append: %s", res.detail);
}

/* ------------------------------------------------------------------------ */

static void test_schema(void) {
    char path[512], err[CXR_ERRMSG_MAX];
    cxr_audit *a = NULL;
    fresh_path(path, sizeof path);
    fill(path, 2);
    CHECK(raw_exec(path, "PRAGMA user_version = 7") == SQLITE_OK, "bump user_version");
    int rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && !a, "newer schema refused: %d", rc);
    CHECK(strstr(err, "version 7") && strstr(err, "version 1"), "message names both versions: '%s'", err);
    cxr_audit_verify_result res;
    rc = cxr_audit_verify(path, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && res.problem == CXR_AUDIT_INTACT && strstr(err, "version 7"), "verify refuses newer: %s", err);

    /* meta disagreeing with user_version */
    fresh_path(path, sizeof path);
    fill(path, 1);
    raw_exec(path, "UPDATE meta SET value = 3 WHERE key = 'schema_version'");
    rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && strstr(err, "schema_version"), "meta mismatch refused: %d %s", rc, err);

    /* not a database at all */
    fresh_path(path, sizeof path);
    FILE *f = fopen(path, "w");
    if (f) {
        for (int i = 0; i < 200; i++) fputs("this is not a database ", f);
        fclose(f);
    }
    rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && !a, "garbage file refused as DB: %d %s", rc, err);

    /* another application's database is left alone */
    fresh_path(path, sizeof path);
    raw_exec(path, "CREATE TABLE patients(id TEXT); INSERT INTO patients VALUES('x');");
    rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && strstr(err, "not a cxrvqa audit database"), "foreign db refused: %d %s", rc, err);
    fresh_path(path, sizeof path);
    raw_exec(path, "PRAGMA application_id = 1234; CREATE TABLE x(a);");
    rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_DB, "foreign application_id refused: %d %s", rc, err);

    /* an empty file is a fresh store (migrated 0 -> 1) */
    fresh_path(path, sizeof path);
    int fd = open(path, O_CREAT | O_WRONLY, 0600);
    if (fd >= 0) close(fd);
    a = open_or_die(path, NULL);
    cxr_audit_close(a);
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int uv = -1;
    char mode[16] = "";
    if (sqlite3_open(path, &db) == SQLITE_OK) {
        if (sqlite3_prepare_v2(db, "PRAGMA user_version", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            uv = sqlite3_column_int(st, 0);
        sqlite3_finalize(st);
        if (sqlite3_prepare_v2(db, "PRAGMA journal_mode", -1, &st, NULL) == SQLITE_OK && sqlite3_step(st) == SQLITE_ROW)
            snprintf(mode, sizeof mode, "%s", sqlite3_column_text(st, 0));
        sqlite3_finalize(st);
    }
    sqlite3_close(db);
    CHECK(uv == CXR_AUDIT_SCHEMA_VERSION, "user_version after migration: %d", uv);
    CHECK(strcmp(mode, "wal") == 0, "journal_mode '%s'", mode);
}

static void test_modes(void) {
    char path[600], err[CXR_ERRMSG_MAX];
    mode_t old = umask(022);
    snprintf(path, sizeof path, "%s/state/cxrvqa/audit.sqlite", tmpdir);
    cxr_audit *a = open_or_die(path, NULL);
    if (a) {
        cxr_audit_record r;
        char q[128], k[32];
        sample(&r, 0, q, sizeof q, k, sizeof k);
        CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_OK, "append: %s", err);
        struct stat st;
        CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0600, "db mode %o", (unsigned)(st.st_mode & 0777));
        char wal[640];
        snprintf(wal, sizeof wal, "%s-wal", path);
        CHECK(stat(wal, &st) == 0 && (st.st_mode & 0777) == 0600, "wal mode %o", (unsigned)(st.st_mode & 0777));
        char dir[600];
        snprintf(dir, sizeof dir, "%s/state/cxrvqa", tmpdir);
        CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700, "created dir mode %o", (unsigned)(st.st_mode & 0777));
        snprintf(dir, sizeof dir, "%s/state", tmpdir);
        CHECK(stat(dir, &st) == 0 && (st.st_mode & 0777) == 0700, "created parent mode %o", (unsigned)(st.st_mode & 0777));
        cxr_audit_close(a);
    }
    umask(old);
}

static void test_default_path(void) {
    char buf[512];
    const char *save_db = getenv("CXRVQA_DB"), *save_xdg = getenv("XDG_STATE_HOME"), *save_home = getenv("HOME");
    char sdb[512] = "", sxdg[512] = "", shome[512] = "";
    if (save_db) snprintf(sdb, sizeof sdb, "%s", save_db);
    if (save_xdg) snprintf(sxdg, sizeof sxdg, "%s", save_xdg);
    if (save_home) snprintf(shome, sizeof shome, "%s", save_home);

    setenv("CXRVQA_DB", "/srv/audit/x.sqlite", 1);
    CHECK(streq(cxr_audit_default_path(buf, sizeof buf), "/srv/audit/x.sqlite"), "CXRVQA_DB wins: %s", buf);
    unsetenv("CXRVQA_DB");
    setenv("XDG_STATE_HOME", "/xdg", 1);
    CHECK(streq(cxr_audit_default_path(buf, sizeof buf), "/xdg/cxrvqa/audit.sqlite"), "XDG: %s", buf);
    setenv("XDG_STATE_HOME", "relative", 1);
    setenv("HOME", "/home/rad", 1);
    CHECK(streq(cxr_audit_default_path(buf, sizeof buf), "/home/rad/.local/state/cxrvqa/audit.sqlite"),
          "relative XDG ignored: %s", buf);
    unsetenv("XDG_STATE_HOME");
    CHECK(streq(cxr_audit_default_path(buf, sizeof buf), "/home/rad/.local/state/cxrvqa/audit.sqlite"), "HOME: %s", buf);
    CHECK(cxr_audit_default_path(buf, 10) == NULL, "too small -> NULL");

    if (save_db) setenv("CXRVQA_DB", sdb, 1); else unsetenv("CXRVQA_DB");
    if (save_xdg) setenv("XDG_STATE_HOME", sxdg, 1); else unsetenv("XDG_STATE_HOME");
    if (save_home) setenv("HOME", shome, 1); else unsetenv("HOME");
}

static void test_network_fs(void) {
    CHECK(streq(audit_fs_network_name(0x6969, "nfs4"), "NFS"), "NFS");
    CHECK(audit_fs_network_name(0xFF534D42UL, "cifs") != NULL, "CIFS");
    CHECK(audit_fs_network_name(0xFE534D42UL, "smb3") != NULL, "SMB2");
    CHECK(audit_fs_network_name(0x517B, "smbfs") != NULL, "SMB");
    CHECK(audit_fs_network_name(0x5346414FUL, "") != NULL, "AFS");
    CHECK(audit_fs_network_name(0x6B414653UL, "afs") != NULL, "kAFS");
    CHECK(audit_fs_network_name(0x01021997UL, "9p") != NULL, "9P");
    CHECK(audit_fs_network_name(0x00C36400UL, "ceph") != NULL, "Ceph");
    CHECK(streq(audit_fs_network_name(0x65735546UL, "fuse.sshfs"), "fuse.sshfs"), "sshfs");
    CHECK(audit_fs_network_name(0x65735546UL, "fuse.rclone") != NULL, "rclone");
    CHECK(audit_fs_network_name(0x65735546UL, "") != NULL, "unknown FUSE refused");
    CHECK(audit_fs_network_name(0x65735546UL, "fuseblk") == NULL, "fuseblk is local");
    CHECK(audit_fs_network_name(0x65735546UL, "fuse.fuse-overlayfs") == NULL, "fuse-overlayfs is local");
    CHECK(audit_fs_network_name(0xEF53, "ext4") == NULL, "ext4 local");
    CHECK(audit_fs_network_name(0x58465342UL, "xfs") == NULL, "xfs local");
    CHECK(audit_fs_network_name(0x01021994UL, "tmpfs") == NULL, "tmpfs local");
    CHECK(audit_fs_network_name(0x794C7630UL, "overlay") == NULL, "overlayfs local");
    CHECK(audit_fs_network_name(0x9123683EUL, "btrfs") == NULL, "btrfs local");
}

/* ------------------------------------------------------------------------ */

static int write_key(const char *path, const void *key, size_t n, mode_t mode) {
    int fd = open(path, O_CREAT | O_TRUNC | O_WRONLY, 0600);
    if (fd < 0) return -1;
    int ok = write(fd, key, n) == (ssize_t)n;
    close(fd);
    chmod(path, mode);
    return ok ? 0 : -1;
}

static int stored_patient(const cxr_audit_row *row, void *ctx) {
    snprintf(ctx, 128, "%s", row->rec.patient_id ? row->rec.patient_id : "(null)");
    return 1; /* first row only */
}

/* Whether needle occurs in the file's bytes. */
static int file_contains(const char *path, const char *needle) {
    FILE *f = fopen(path, "rb");
    if (!f) return 0;
    size_t n = strlen(needle), cap = 1 << 20, len = 0;
    char *buf = malloc(cap);
    int hit = 0;
    size_t got;
    while (buf && (got = fread(buf + len, 1, cap - len, f)) > 0) {
        len += got;
        if (len == cap) {
            char *nb = realloc(buf, cap *= 2);
            if (!nb) break;
            buf = nb;
        }
    }
    for (size_t i = 0; buf && i + n <= len && !hit; i++) hit = memcmp(buf + i, needle, n) == 0;
    free(buf);
    fclose(f);
    return hit;
}

static void test_pseudonym(void) {
    char path[512], key[600], key2[600], err[CXR_ERRMSG_MAX], q[128], k[32];
    snprintf(key, sizeof key, "%s/pseudonym.key", tmpdir);
    snprintf(key2, sizeof key2, "%s/other.key", tmpdir);
    /* RFC 4231 test case 1: key 0x0b x 20, data "Hi There" */
    unsigned char k1[20];
    memset(k1, 0x0b, sizeof k1);
    CHECK(write_key(key, k1, sizeof k1, 0600) == 0, "write key");
    CHECK(write_key(key2, "another key of 32 bytes, at least\n", 34, 0400) == 0, "write key 2");

    cxr_audit_params p = cxr_audit_params_default();
    p.pseudonym_key_file = key;
    const char *expect = "hmac:b0344c61d8db38535ca8afceaf0bf12b881dc200c9833da726e9376c2e32cff7";
    char got[3][128] = {"", "", ""};
    for (int round = 0; round < 3; round++) {
        fresh_path(path, sizeof path);
        p.pseudonym_key_file = round == 2 ? key2 : key;
        cxr_audit *a = open_or_die(path, &p);
        if (!a) return;
        cxr_audit_record r;
        sample(&r, 0, q, sizeof q, k, sizeof k);
        r.patient_id = "Hi There";
        CHECK(cxr_audit_append(a, &r, NULL, err, sizeof err) == CXR_OK, "append: %s", err);
        cxr_audit_scan(a, NULL, stored_patient, got[round], err, sizeof err);
        cxr_audit_close(a);
        CHECK(!file_contains(path, "Hi There"), "round %d: patient id not in the database file in clear", round);
    }
    CHECK(strcmp(got[0], expect) == 0, "HMAC-SHA256 known answer: %s", got[0]);
    CHECK(strcmp(got[0], got[1]) == 0, "stable for the same key");
    CHECK(strncmp(got[2], "hmac:", 5) == 0 && strcmp(got[2], got[0]) != 0, "different key, different id: %s", got[2]);

    /* without a key: stored as given */
    fresh_path(path, sizeof path);
    cxr_audit *a = open_or_die(path, NULL);
    if (a) {
        cxr_audit_record r;
        sample(&r, 0, q, sizeof q, k, sizeof k);
        r.patient_id = "Hi There";
        cxr_audit_append(a, &r, NULL, err, sizeof err);
        char pid[128] = "";
        cxr_audit_scan(a, NULL, stored_patient, pid, err, sizeof err);
        CHECK(strcmp(pid, "Hi There") == 0, "no key: as given (%s)", pid);
        cxr_audit_close(a);
        CHECK(file_contains(path, "Hi There"), "no key: the clear id is in the file (the check above can fail)");
    }

    /* key files that are refused */
    fresh_path(path, sizeof path);
    CHECK(write_key(key, k1, sizeof k1, 0644) == 0, "rewrite key");
    p.pseudonym_key_file = key;
    a = NULL;
    int rc = cxr_audit_open(path, &p, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG && !a && strstr(err, "others"), "world-readable key refused: %d %s", rc, err);
    chmod(key, 0602);
    rc = cxr_audit_open(path, &p, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG, "world-writable key refused: %d %s", rc, err);
    CHECK(write_key(key, "short\n", 6, 0600) == 0, "short key");
    rc = cxr_audit_open(path, &p, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG && strstr(err, "shorter"), "short key refused: %d %s", rc, err);
    unlink(key);
    rc = cxr_audit_open(path, &p, &a, err, sizeof err);
    CHECK(rc == CXR_ERR_IO, "missing key -> IO: %d %s", rc, err);
}

/* ------------------------------------------------------------------------ */

typedef struct {
    const cxr_audit_record *want;
    int same;
} same_ctx;

static int compare_row(const cxr_audit_row *row, void *ctx) {
    same_ctx *c = ctx;
    const cxr_audit_record *w = c->want, *g = &row->rec;
    c->same = streq(w->question, g->question) && streq(w->answer_text, g->answer_text) &&
              streq(w->findings_json, g->findings_json) && streq(w->reason, g->reason) &&
              streq(w->study_uid, g->study_uid) && streq(w->patient_id, g->patient_id) &&
              streq(w->request_key, g->request_key) && streq(w->user, g->user) && streq(w->host, g->host) &&
              streq(w->application, g->application) && streq(w->language, g->language);
    return 1;
}

static void test_hostile(void) {
    char path[512], err[CXR_ERRMSG_MAX];
    fresh_path(path, sizeof path);
    cxr_audit *a = open_or_die(path, NULL);
    if (!a) return;
    char *big = malloc(10241);
    if (!big) return;
    static const char piece[] = "'\"; DROP TABLE audit; -- %s%n 胸腔积液 ☃ 𝄞 \\x00 <tag>&amp; ";
    size_t pl = strlen(piece);
    for (size_t i = 0; i < 10240; i++) big[i] = piece[i % pl];
    size_t cut = 10240;
    while (cut > 0 && ((unsigned char)big[cut] & 0xC0) == 0x80) cut--; /* whole characters */
    big[cut] = 0;
    const char *hostile[] = {
        "Robert'); DROP TABLE audit;--", "\"); DELETE FROM meta; --", "' OR '1'='1", "胸腔积液?", "\t\n\r\x01\x7f",
        "", big, "%s%s%s%n", "\xff\xfe invalid utf-8 \xc3\x28",
    };
    for (size_t i = 0; i < sizeof hostile / sizeof hostile[0]; i++) {
        cxr_audit_record r;
        cxr_audit_record_init(&r);
        r.event_type = "ask";
        r.question = hostile[i];
        r.answer_text = hostile[(i + 1) % 9];
        r.findings_json = hostile[(i + 2) % 9];
        r.reason = hostile[(i + 3) % 9];
        r.study_uid = hostile[(i + 4) % 9];
        r.patient_id = hostile[(i + 5) % 9];
        r.request_key = hostile[(i + 6) % 9];
        r.user = hostile[(i + 7) % 9];
        r.host = hostile[(i + 8) % 9];
        r.application = hostile[i];
        r.language = hostile[(i + 1) % 9];
        int64_t seq = 0;
        int rc = cxr_audit_append(a, &r, &seq, err, sizeof err);
        CHECK(rc == CXR_OK, "hostile %zu: %d %s", i, rc, err);
        same_ctx c = {&r, 0};
        cxr_audit_filter f = {NULL, NULL, 1, 1};
        cxr_audit_scan(a, &f, compare_row, &c, err, sizeof err);
        CHECK(c.same, "hostile %zu comes back byte for byte", i);
        int found = 0;
        CHECK(cxr_audit_has_request(a, hostile[(i + 6) % 9], &found, err, sizeof err) == CXR_OK && found,
              "hostile %zu: request key found", i);
        char *json = NULL;
        CHECK(cxr_audit_query_json(a, hostile[(i + 4) % 9], 5, &json, err, sizeof err) == CXR_OK && json,
              "query_json with hostile study");
        cJSON *arr = json ? cJSON_Parse(json) : NULL;
        CHECK(arr && cJSON_GetArraySize(arr) >= 1, "hostile %zu: JSON parses", i);
        cJSON_Delete(arr);
        free(json);
    }
    cxr_audit_close(a);
    free(big);
    cxr_audit_verify_result res;
    int rc = cxr_audit_verify(path, &res, err, sizeof err);
    CHECK(rc == CXR_OK && res.rows == 9, "hostile: verify intact with 9 rows: %d %s", rc, err);
}

/* ------------------------------------------------------------------------ */

static void test_fail_closed(void) {
    char path[512], err[CXR_ERRMSG_MAX], q[128], k[32];
    cxr_audit_record r;
    int64_t hs = 0;
    char hh[CXR_AUDIT_HASH_HEX];

    /* disk full: the page limit of the connection */
    fresh_path(path, sizeof path);
    fill(path, 3);
    cxr_audit *a = open_or_die(path, NULL);
    if (!a) return;
    sqlite3 *db = audit_sqlite_handle(a);
    CHECK(sqlite3_exec(db, "PRAGMA max_page_count = 1", NULL, NULL, NULL) == SQLITE_OK, "set max_page_count");
    char *big = calloc(1, 64 * 1024 + 1);
    if (!big) return;
    memset(big, 'z', 64 * 1024);
    sample(&r, 9, q, sizeof q, k, sizeof k);
    r.answer_text = big;
    int rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
    CHECK(rc == CXR_ERR_AUDIT && strstr(err, "SQLITE_FULL"), "full -> AUDIT: %d %s", rc, err);
    CHECK(cxr_audit_head(a, &hs, hh, err, sizeof err) == CXR_OK && hs == 3, "head unchanged after full: %lld", (long long)hs);
    sqlite3_exec(db, "PRAGMA max_page_count = 1073741823", NULL, NULL, NULL);
    CHECK(cxr_audit_append(a, &r, &hs, err, sizeof err) == CXR_OK && hs == 4, "append after space returns: %s", err);

    /* read-only: query_only on the connection */
    CHECK(sqlite3_exec(db, "PRAGMA query_only = 1", NULL, NULL, NULL) == SQLITE_OK, "set query_only");
    rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
    CHECK(rc == CXR_ERR_AUDIT && strstr(err, "SQLITE_READONLY"), "read-only -> AUDIT: %d %s", rc, err);
    sqlite3_exec(db, "PRAGMA query_only = 0", NULL, NULL, NULL);
    CHECK(cxr_audit_head(a, &hs, hh, err, sizeof err) == CXR_OK && hs == 4, "head unchanged after read-only");
    cxr_audit_close(a);
    free(big);
    cxr_audit_verify_result res;
    CHECK(cxr_audit_verify(path, &res, err, sizeof err) == CXR_OK && res.rows == 4, "intact after refusals: %s", err);

    /* read-only file and directory: permission bits stop only non-root */
    if (geteuid() == 0) {
        printf("  skip: read-only file/directory by chmod (running as root, chmod does not stop root; "
               "the mounts test covers a read-only bind mount)\n");
    } else {
        chmod(path, 0400);
        a = NULL;
        rc = cxr_audit_open(path, NULL, &a, err, sizeof err);
        CHECK(rc == CXR_ERR_AUDIT && !a, "read-only file -> AUDIT: %d %s", rc, err);
        chmod(path, 0600);
        char dir[600], p2[700];
        snprintf(dir, sizeof dir, "%s/rodir", tmpdir);
        mkdir(dir, 0500);
        snprintf(p2, sizeof p2, "%s/a.sqlite", dir);
        rc = cxr_audit_open(p2, NULL, &a, err, sizeof err);
        CHECK(rc == CXR_ERR_AUDIT && !a, "read-only directory -> AUDIT: %d %s", rc, err);
        chmod(dir, 0700);
    }

    /* an I/O error: the file size limit in a child process */
    fresh_path(path, sizeof path);
    fill(path, 1);
    fflush(stdout); /* the child must not repeat what is buffered */
    pid_t pid = fork();
    if (pid == 0) {
        signal(SIGXFSZ, SIG_IGN);
        cxr_audit *c = NULL;
        char e[CXR_ERRMSG_MAX];
        if (cxr_audit_open(path, NULL, &c, e, sizeof e) != CXR_OK) _exit(10);
        struct rlimit rl = {256 * 1024, 256 * 1024};
        setrlimit(RLIMIT_FSIZE, &rl);
        char text[10001];
        memset(text, 'y', 10000);
        text[10000] = 0;
        cxr_audit_record cr;
        char cq[128], ck[32];
        int crc = CXR_OK, n = 0;
        for (; n < 200 && crc == CXR_OK; n++) {
            sample(&cr, n, cq, sizeof cq, ck, sizeof ck);
            cr.answer_text = text;
            crc = cxr_audit_append(c, &cr, NULL, e, sizeof e);
        }
        printf("  RLIMIT_FSIZE 256 KiB: append %d -> %d: %s\n", n, crc, e);
        fflush(stdout);
        _exit(crc == CXR_ERR_AUDIT && n > 1 && n < 200 ? 0 : 11);
    }
    int status = 0;
    waitpid(pid, &status, 0);
    CHECK(WIFEXITED(status) && WEXITSTATUS(status) == 0, "file size limit -> AUDIT (child status %d)", status);
    rc = cxr_audit_verify(path, &res, err, sizeof err);
    CHECK(rc == CXR_OK && res.rows > 1, "intact after the I/O error: %d %s (%lld rows)", rc, err, (long long)res.rows);

    /* a lock held past the busy timeout */
    fresh_path(path, sizeof path);
    fill(path, 1);
    cxr_audit_params p = cxr_audit_params_default();
    p.busy_timeout_ms = 300;
    a = open_or_die(path, &p);
    if (!a) return;
    sqlite3 *other = NULL;
    sqlite3_open(path, &other);
    CHECK(sqlite3_exec(other, "BEGIN EXCLUSIVE", NULL, NULL, NULL) == SQLITE_OK, "other connection locks");
    sample(&r, 2, q, sizeof q, k, sizeof k);
    double t0 = now_s();
    rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
    double dt = now_s() - t0;
    CHECK(rc == CXR_ERR_AUDIT && strstr(err, "busy timeout"), "locked -> AUDIT: %d %s", rc, err);
    CHECK(dt >= 0.25 && dt < 3.0, "failed within the timeout: %.3f s", dt);
    cxr_audit *b = NULL;
    t0 = now_s();
    rc = cxr_audit_open(path, &p, &b, err, sizeof err);
    dt = now_s() - t0;
    CHECK(rc == CXR_ERR_AUDIT && !b && dt < 3.0, "open while locked -> AUDIT in %.3f s: %d %s", dt, rc, err);
    sqlite3_exec(other, "COMMIT", NULL, NULL, NULL);
    sqlite3_close(other);
    CHECK(cxr_audit_append(a, &r, &hs, err, sizeof err) == CXR_OK && hs == 2, "append after the lock is gone: %s", err);
    cxr_audit_close(a);
}

/* The keyed chain: key file checks (mode, length at the 32-byte boundary),
 * the key id against a published SHA-256 vector, keyed appends, refusals
 * that write nothing, verify with / without / with another key, an edit
 * caught, keying an existing store, keygen. */
static int64_t rows_of(const char *path) {
    cxr_audit_params p = cxr_audit_params_default();
    p.read_only = 1;
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX];
    int64_t seq = -1;
    char h[CXR_AUDIT_HASH_HEX];
    if (cxr_audit_open(path, &p, &a, err, sizeof err) == CXR_OK) cxr_audit_head(a, &seq, h, err, sizeof err);
    cxr_audit_close(a);
    return seq;
}

static void test_keyed(void) {
    char path[512], good[600], other[600], loose[600], k31[600], k32[600], gen[600], err[CXR_ERRMSG_MAX], q[128],
        k[32], id[CXR_AUDIT_KEY_ID_HEX];
    /* FIPS 180-2 SHA-256 example 2: this 56-byte message hashes to 248d6a61d20638b8e5c0... */
    static const char msg56[] = "abcdbcdecdefdefgefghfghighijhijkijkljklmklmnlmnomnopnopq";
    unsigned char raw[40];
    for (int i = 0; i < 40; i++) raw[i] = (unsigned char)(i * 37 + 11);
    snprintf(good, sizeof good, "%s/chain.key", tmpdir);
    snprintf(other, sizeof other, "%s/chain-other.key", tmpdir);
    snprintf(loose, sizeof loose, "%s/chain-loose.key", tmpdir);
    snprintf(k31, sizeof k31, "%s/chain-31.key", tmpdir);
    snprintf(k32, sizeof k32, "%s/chain-32.key", tmpdir);
    snprintf(gen, sizeof gen, "%s/chain-gen.key", tmpdir);
    CHECK(write_key(good, msg56, 56, 0600) == 0 && write_key(other, raw, 40, 0400) == 0 &&
              write_key(loose, msg56, 56, 0640) == 0 && write_key(k31, raw, 31, 0600) == 0 &&
              write_key(k32, raw, 32, 0600) == 0, "write chain keys");

    CHECK(cxr_audit_key_id(good, id, err, sizeof err) == CXR_OK && strcmp(id, "248d6a61d20638b8") == 0,
          "key id = first 16 hex of SHA-256 of the key: %s", id);
    CHECK(cxr_audit_key_id(other, id, err, sizeof err) == CXR_OK, "a 0400 key is accepted: %s", err);
    CHECK(cxr_audit_key_id(loose, id, err, sizeof err) == CXR_ERR_ARG && strstr(err, "0600 or stricter"),
          "a 0640 key is refused: %s", err);
    CHECK(cxr_audit_key_id(k31, id, err, sizeof err) == CXR_ERR_ARG && strstr(err, "31 bytes: at least 32"),
          "a 31-byte key is refused: %s", err);
    CHECK(cxr_audit_key_id(k32, id, err, sizeof err) == CXR_OK, "a 32-byte key is accepted: %s", err);

    /* a new store, keyed from seq 1 */
    fresh_path(path, sizeof path);
    cxr_audit_params p = cxr_audit_params_default();
    p.chain_key_file = good;
    cxr_audit *a = open_or_die(path, &p);
    if (!a) return;
    for (int i = 0; i < 3; i++) {
        cxr_audit_record r;
        sample(&r, i, q, sizeof q, k, sizeof k);
        int64_t seq = 0;
        int rc = cxr_audit_append(a, &r, &seq, err, sizeof err);
        CHECK(rc == CXR_OK && seq == i + 2, "keyed append %d: seq %lld (%s)", i, (long long)seq, err);
    }
    cxr_audit_close(a);
    cxr_audit_verify_result res;
    int rc = cxr_audit_verify_key(path, good, &res, err, sizeof err);
    CHECK(rc == CXR_OK && res.keyed && res.keyed_from == 1 && res.key_checked && res.rows == 4 &&
              strcmp(res.key_id, "248d6a61d20638b8") == 0,
          "verify with the key: intact, keyed from 1, 4 rows (%d %s)", rc, err);
    rc = cxr_audit_verify(path, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && res.problem == CXR_AUDIT_UNVERIFIED && !res.key_checked,
          "verify without the key: unverified, not intact (%d %d)", rc, (int)res.problem);
    rc = cxr_audit_verify_key(path, other, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && res.problem == CXR_AUDIT_KEY_MISMATCH, "verify with another key: key mismatch (%d)", rc);
    rc = cxr_audit_verify_key(path, loose, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG && res.problem == CXR_AUDIT_INTACT, "verify with a loose key: refused (%d)", rc);

    /* refusals write nothing */
    cxr_audit *b = NULL;
    rc = cxr_audit_open(path, NULL, &b, err, sizeof err);
    CHECK(rc == CXR_ERR_AUDIT && !b && strstr(err, "needs its key"), "write-open without the key refused: %s", err);
    p.chain_key_file = other;
    rc = cxr_audit_open(path, &p, &b, err, sizeof err);
    CHECK(rc == CXR_ERR_AUDIT && !b && strstr(err, "wrong key file"), "write-open with another key refused: %s", err);
    p.chain_key_file = loose;
    rc = cxr_audit_open(path, &p, &b, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG && !b, "write-open with a loose key refused: %s", err);
    CHECK(rows_of(path) == 4, "nothing written by the refused opens (%lld)", (long long)rows_of(path));
    cxr_audit_params ro = cxr_audit_params_default();
    ro.read_only = 1;
    b = open_or_die(path, &ro);
    cxr_audit_close(b);

    /* the key record removed after open: the next append is refused */
    p.chain_key_file = good;
    a = open_or_die(path, &p);
    if (a) {
        CHECK(raw_exec(path, "DELETE FROM meta WHERE key IN ('chain_key_id', 'chain_keyed_from')") == SQLITE_OK,
              "remove the key record");
        cxr_audit_record r;
        sample(&r, 9, q, sizeof q, k, sizeof k);
        rc = cxr_audit_append(a, &r, NULL, err, sizeof err);
        CHECK(rc == CXR_ERR_AUDIT && strstr(err, "records no key"), "append after the key record went: refused: %s", err);
        cxr_audit_close(a);
    }
    rc = cxr_audit_verify_key(path, good, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && res.problem == CXR_AUDIT_KEY_MISMATCH, "verify --key names the missing record (%d)", rc);

    /* an edited keyed row */
    fresh_path(path, sizeof path);
    p.chain_key_file = good;
    a = open_or_die(path, &p);
    cxr_audit_close(a);
    raw_exec(path, "DROP TRIGGER audit_no_update");
    raw_exec(path, "UPDATE audit SET reason = 'edited' WHERE seq = 1");
    rc = cxr_audit_verify_key(path, good, &res, err, sizeof err);
    CHECK(rc == CXR_ERR_DB && res.problem == CXR_AUDIT_EDITED && res.seq == 1, "an edited keyed row is named (%d %lld)",
          rc, (long long)res.seq);

    /* an unkeyed store with rows: refused, then keyed from its next row with key_existing */
    fresh_path(path, sizeof path);
    fill(path, 2);
    p.chain_key_file = k32;
    rc = cxr_audit_open(path, &p, &b, err, sizeof err);
    CHECK(rc == CXR_ERR_AUDIT && !b && strstr(err, "audit key --db"), "key on an unkeyed store with rows: refused: %s", err);
    CHECK(rows_of(path) == 2, "and nothing written");
    p.key_existing = 1;
    a = open_or_die(path, &p);
    cxr_audit_close(a);
    rc = cxr_audit_verify_key(path, k32, &res, err, sizeof err);
    CHECK(rc == CXR_OK && res.keyed_from == 3 && res.rows == 3, "keyed from seq 3 (%d %lld %s)", rc,
          (long long)res.keyed_from, err);

    /* keygen */
    CHECK(cxr_audit_keygen(gen, id, err, sizeof err) == CXR_OK, "keygen: %s", err);
    struct stat st;
    CHECK(stat(gen, &st) == 0 && (st.st_mode & 07777) == 0600 && st.st_size == 32, "keygen: 32 bytes, 0600");
    char id2[CXR_AUDIT_KEY_ID_HEX];
    CHECK(cxr_audit_key_id(gen, id2, err, sizeof err) == CXR_OK && strcmp(id, id2) == 0, "keygen's id is the key's");
    CHECK(cxr_audit_keygen(gen, NULL, err, sizeof err) == CXR_ERR_ARG && strstr(err, "never overwritten"),
          "keygen refuses an existing file: %s", err);
}

int main(void) {
    snprintf(tmpdir, sizeof tmpdir, "/tmp/cxr_audit_test_XXXXXX");
    if (!mkdtemp(tmpdir)) {
        perror("mkdtemp");
        return 1;
    }
    test_roundtrip();
    test_tampering();
    test_schema();
    test_modes();
    test_default_path();
    test_network_fs();
    test_pseudonym();
    test_hostile();
    test_fail_closed();
    test_keyed();
    char cmd[300];
    snprintf(cmd, sizeof cmd, "rm -rf '%s'", tmpdir);
    if (!failures && system(cmd) != 0) printf("could not remove %s\n", tmpdir);
    if (failures) printf("kept %s for inspection\n", tmpdir);
    return CHECK_SUMMARY();
}
