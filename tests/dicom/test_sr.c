/*
 * test_sr.c — tests of the SR writer (dicom/cxr_sr.h). Without options it is
 * the unit test: request checks, refusals of unusable sources with nothing
 * left behind, round trips of what was asked for (file and buffer), series
 * reuse, UID roots, HTML. With --emit / --read / --html it is the small tool
 * that tests/dicom/test_sr.py drives (the validators run there). It must not
 * compare against values read back from the writer's own output. Sources are
 * ingested as the product ingests them (cxr_image_load_*_ex, one read of the
 * file); the request carries what ingestion captured (cxr_meta.source).
 *
 *   test_sr SAMPLE_DIR WORK_DIR
 *   test_sr --emit OUT_DIR SOURCE LANG QUESTION ANSWER FINDING...
 *           FINDING = name|display|snomed|presence|probability|threshold|calibrated
 *           (presence: present, absent, indeterminate; snomed may be empty)
 *           options before OUT_DIR: --series UID --uid-root ROOT --buffer
 *   test_sr --read SR        prints the summary, one key<TAB>value per line
 *   test_sr --html SR HTML
 */
#include "cxr_dicom.h"
#include "cxr_sr.h"
#include "cxr_sha256.h"

#include "check.h"

#include <dirent.h>
#include <pthread.h>
#include <errno.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#define ALG_SHA "0123456789abcdef0123456789abcdef0123456789abcdef0123456789abcdef"

/* ---------------------------------------------------------------- helpers */

static int count_files(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return -1;
    int n = 0;
    struct dirent *e;
    while ((e = readdir(d)))
        if (strcmp(e->d_name, ".") && strcmp(e->d_name, "..")) n++;
    closedir(d);
    return n;
}

static void empty_dir(const char *dir) {
    DIR *d = opendir(dir);
    if (!d) return;
    struct dirent *e;
    char p[4096];
    while ((e = readdir(d))) {
        if (!strcmp(e->d_name, ".") || !strcmp(e->d_name, "..")) continue;
        snprintf(p, sizeof p, "%s/%s", dir, e->d_name);
        unlink(p);
    }
    closedir(d);
}

static void make_dir(const char *dir) {
    if (mkdir(dir, 0755) != 0 && errno != EEXIST) {
        printf("cannot create %s: %s\n", dir, strerror(errno));
        exit(2);
    }
}

static uint8_t *slurp(const char *path, size_t *len) {
    FILE *f = fopen(path, "rb");
    if (!f) return NULL;
    fseek(f, 0, SEEK_END);
    long n = ftell(f);
    fseek(f, 0, SEEK_SET);
    uint8_t *b = malloc(n > 0 ? (size_t)n : 1);
    if (b && fread(b, 1, (size_t)n, f) != (size_t)n) {
        free(b);
        b = NULL;
    }
    fclose(f);
    *len = (size_t)n;
    return b;
}

static int file_contains(const char *path, const char *needle) {
    size_t n = 0;
    uint8_t *b = slurp(path, &n);
    if (!b) return 0;
    int found = 0;
    size_t k = strlen(needle);
    for (size_t i = 0; !found && i + k <= n; i++) found = !memcmp(b + i, needle, k);
    free(b);
    return found;
}

/* The source of a report as ingestion captures it from path (or buf/len when
 * path is NULL): checks ignored, PNG accepted (its source is not DICOM). A
 * failed ingestion gives what was captured before the failure (nothing usable
 * when the data set could not be parsed). *rc gets ingestion's code. Returns a
 * malloc'd copy (free it), NULL only when out of memory. */
static cxr_source *ingest_source(const char *path, const void *buf, size_t len, int *rc) {
    cxr_ingest_params p = cxr_ingest_params_default();
    p.not_chest = p.lateral = p.small = CXR_CHECK_IGNORE;
    cxr_meta *partial = malloc(sizeof *partial);
    cxr_source *src = malloc(sizeof *src);
    cxr_image *img = NULL;
    char err[CXR_ERRMSG_MAX];
    if (!partial || !src) {
        free(partial);
        free(src);
        *rc = CXR_ERR_NOMEM;
        return NULL;
    }
    *rc = path ? cxr_image_load_file_ex(path, &p, &img, partial, err, sizeof err)
               : cxr_image_load_buffer_ex(buf, len, &p, &img, partial, err, sizeof err);
    *src = img ? cxr_image_meta(img)->source : partial->source;
    cxr_image_free(img);
    free(partial);
    return src;
}

static const char *presence_name(cxr_sr_presence p) {
    return p == CXR_SR_PRESENT ? "present" : p == CXR_SR_ABSENT ? "absent" : "indeterminate";
}

/* The request used by most unit checks; the findings are the expectation. */
static const cxr_sr_finding FINDINGS[3] = {
    {"pleural_effusion", "Pleural effusion", "60046008", CXR_SR_PRESENT, 0.8731, 0.5, 1, NULL},
    {"pneumothorax", "Pneumothorax", "36118008", CXR_SR_ABSENT, 0.0123456789012345, 0.35, 0, NULL},
    {"support_device_malposition", "Support device malposition", NULL, CXR_SR_INDETERMINATE, 0.5, 0.5, 0,
     "not assessed: the model cannot assess this finding reliably (validation AUC 0.58, 95% CI 0.25-1.00, "
     "3 positive cases)"},
};

static cxr_sr_request base_request(const cxr_source *source) {
    cxr_sr_request r = cxr_sr_request_default();
    r.source = source;
    r.question = "Is there a pleural effusion?";
    r.answer_text = "Yes, a pleural effusion is likely (p = 0.87).";
    r.findings = FINDINGS;
    r.n_findings = 1;
    r.algorithm_name = "cxrvqa-cxr-cnn";
    r.algorithm_version = "1.0";
    r.model_sha256 = ALG_SHA;
    r.prompt_set_version = "prompts-2";
    r.parameters = "threshold_policy=youden";
    return r;
}

/* Compares a summary with the request it came from. */
static void check_round_trip(const char *what, const cxr_sr_request *r, const cxr_sr_summary *s, const char *study,
                             const char *sop, const char *sop_class) {
    CHECK(s->n_findings == r->n_findings, "%s: %d findings read, %d written", what, s->n_findings, r->n_findings);
    CHECK(!strcmp(s->question, r->question), "%s: question \"%s\"", what, s->question);
    CHECK(!strcmp(s->answer, r->answer_text), "%s: answer \"%s\"", what, s->answer);
    CHECK(!strcmp(s->study_uid, study), "%s: study %s, source %s", what, s->study_uid, study);
    CHECK(!strcmp(s->source_sop_uid, sop), "%s: source SOP %s, expected %s", what, s->source_sop_uid, sop);
    CHECK(!strcmp(s->source_sop_class, sop_class), "%s: source class %s, expected %s", what, s->source_sop_class, sop_class);
    CHECK(!strcmp(s->algorithm_name, r->algorithm_name), "%s: algorithm %s", what, s->algorithm_name);
    CHECK(!strcmp(s->algorithm_version, r->algorithm_version), "%s: version %s", what, s->algorithm_version);
    CHECK(!strcmp(s->model_sha256, r->model_sha256 ? r->model_sha256 : ""), "%s: sha %s", what, s->model_sha256);
    CHECK(!strcmp(s->completion, "COMPLETE"), "%s: completion %s", what, s->completion);
    CHECK(!strcmp(s->verification, "UNVERIFIED"), "%s: verification %s", what, s->verification);
    const char *lang = r->language && !strcmp(r->language, "zh") ? "zh" : "eng";
    CHECK(!strcmp(s->language, lang), "%s: language %s, expected %s", what, s->language, lang);
    for (int i = 0; i < s->n_findings && i < r->n_findings; i++) {
        const cxr_sr_finding *f = &r->findings[i];
        const cxr_sr_read_finding *g = &s->findings[i];
        int sct = f->snomed && *f->snomed;
        CHECK(!strcmp(g->name, f->name), "%s[%d]: name %s", what, i, g->name);
        CHECK(!strcmp(g->code, sct ? f->snomed : f->name), "%s[%d]: code %s", what, i, g->code);
        CHECK(!strcmp(g->scheme, sct ? "SCT" : "99CXRVQA"), "%s[%d]: scheme %s", what, i, g->scheme);
        CHECK(!strcmp(g->display, f->display), "%s[%d]: display %s", what, i, g->display);
        CHECK(g->presence == f->presence, "%s[%d]: presence %s, wrote %s", what, i, presence_name(g->presence),
              presence_name(f->presence));
        /* the exact double travels in Floating Point Value */
        CHECK(g->probability == f->probability, "%s[%d]: probability %.17g, wrote %.17g", what, i, g->probability, f->probability);
        CHECK(g->threshold == f->threshold, "%s[%d]: threshold %.17g, wrote %.17g", what, i, g->threshold, f->threshold);
        CHECK(g->calibrated == (f->calibrated != 0), "%s[%d]: calibrated %d", what, i, g->calibrated);
        CHECK(strlen(g->tracking_uid) > 10, "%s[%d]: tracking UID missing", what, i);
    }
}

/* -------------------------------------------------------------- unit test */

static void expect_fail(const char *what, const cxr_sr_request *r, const char *out_dir, int code) {
    char err[CXR_ERRMSG_MAX] = "", path[4096] = "x";
    cxr_sr_ids ids;
    int rc = cxr_sr_write_file(r, out_dir, &ids, path, sizeof path, err, sizeof err);
    CHECK(rc == code, "%s: rc %d (%s), expected %d: %s", what, rc, cxr_strerror(rc), code, err);
    CHECK(rc == CXR_OK || err[0], "%s: no error message", what);
    CHECK(path[0] == '\0', "%s: path_out set on failure", what);
    CHECK(count_files(out_dir) == 0, "%s: %d files left in %s", what, count_files(out_dir), out_dir);
    uint8_t *buf = (uint8_t *)1;
    size_t len = 7;
    rc = cxr_sr_write_buffer(r, NULL, &buf, &len, err, sizeof err);
    CHECK(rc == code, "%s (buffer): rc %d, expected %d: %s", what, rc, code, err);
    CHECK(buf == NULL && len == 0, "%s (buffer): output not cleared", what);
}

static void unit_refusals(const char *sample, const char *source_path, const cxr_source *source, const char *work) {
    char out[1024], p[2048];
    snprintf(out, sizeof out, "%s/refusals", work);
    make_dir(out);
    empty_dir(out);
    cxr_sr_request r;
    int irc;

    expect_fail("NULL request", NULL, out, CXR_ERR_ARG);
    r = base_request(NULL);
    expect_fail("no source", &r, out, CXR_ERR_ARG);
    /* a source that does not describe its own pool, or is incomplete */
    cxr_source *bad = malloc(sizeof *bad);
    CHECK(bad != NULL, "out of memory");
    if (bad) {
        *bad = *source;
        bad->patient_name.off = CXR_SOURCE_POOL - 2;
        bad->patient_name.len = 10;
        r = base_request(bad);
        expect_fail("handle outside the pool", &r, out, CXR_ERR_ARG);
        *bad = *source;
        bad->overflow = 1;
        expect_fail("values that did not fit", &r, out, CXR_ERR_SR);
        *bad = *source;
        snprintf(bad->charset_error, sizeof bad->charset_error, "cannot convert (test)");
        expect_fail("character set not converted", &r, out, CXR_ERR_SR);
        *bad = *source;
        bad->has_pixel_data = 0;
        expect_fail("no pixel data", &r, out, CXR_ERR_SR);
        free(bad);
    }

    cxr_sr_finding f = FINDINGS[0];
    r = base_request(source);
    r.findings = &f;
    f.probability = NAN;
    expect_fail("NaN probability", &r, out, CXR_ERR_ARG);
    f.probability = 1.5;
    expect_fail("probability > 1", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.threshold = -0.1;
    expect_fail("threshold < 0", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.name = "../../etc/passwd";
    expect_fail("name with slashes", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.name = "";
    expect_fail("empty name", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.snomed = "6004x008";
    expect_fail("bad SNOMED id", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.display = "Effusion\\Pleural";
    expect_fail("backslash in display", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.display = "bad \xC3\x28 UTF-8";
    expect_fail("invalid UTF-8 display", &r, out, CXR_ERR_ARG);
    f = FINDINGS[0];
    f.presence = (cxr_sr_presence)7;
    expect_fail("unknown presence", &r, out, CXR_ERR_ARG);

    cxr_sr_finding two[2] = {FINDINGS[0], FINDINGS[0]};
    r = base_request(source);
    r.findings = two;
    r.n_findings = 2;
    expect_fail("repeated name", &r, out, CXR_ERR_ARG);
    r.n_findings = 0;
    expect_fail("no findings", &r, out, CXR_ERR_ARG);
    r.n_findings = CXR_SR_MAX_FINDINGS + 1;
    expect_fail("too many findings", &r, out, CXR_ERR_ARG);

    r = base_request(source);
    r.question = NULL;
    expect_fail("no question", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.answer_text = "yes\x01no";
    expect_fail("control character in answer", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.language = "fr";
    expect_fail("language fr", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.algorithm_name = NULL;
    expect_fail("no algorithm name", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.model_sha256 = "abc";
    expect_fail("short model sha", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.uid_root = "1.2.03";
    expect_fail("uid root with leading zero", &r, out, CXR_ERR_ARG);
    r.uid_root = "1.2.840.99999.99999.99999.99999.99999.99999";
    expect_fail("uid root too long", &r, out, CXR_ERR_ARG);
    r = base_request(source);
    r.series_uid = "1.2.3/../4";
    expect_fail("bad series UID", &r, out, CXR_ERR_ARG);

    /* sources that are not usable DICOM images */
    snprintf(p, sizeof p, "%s/png_gray8.png", sample);
    cxr_source *s_png = ingest_source(p, NULL, 0, &irc);
    CHECK(irc == CXR_OK, "PNG source: ingestion rc %d", irc);
    r = base_request(s_png);
    expect_fail("PNG source", &r, out, CXR_ERR_SR);
    snprintf(p, sizeof p, "%s/garbage.bin", work);
    FILE *g = fopen(p, "wb");
    for (int i = 0; g && i < 4096; i++) fputc((i * 7919) & 0xFF, g);
    if (g) fclose(g);
    cxr_source *s_garbage = ingest_source(p, NULL, 0, &irc);
    r = base_request(s_garbage);
    expect_fail("garbage source", &r, out, CXR_ERR_SR);
    snprintf(p, sizeof p, "%s/no_such_file.dcm", work);
    cxr_source *s_missing = ingest_source(p, NULL, 0, &irc);
    CHECK(irc == CXR_ERR_IO, "missing source: ingestion rc %d, expected %d", irc, CXR_ERR_IO);
    r = base_request(s_missing);
    expect_fail("missing source", &r, out, CXR_ERR_SR);
    cxr_source *s_empty = ingest_source(NULL, "DICM", 0, &irc);
    r = base_request(s_empty);
    expect_fail("empty buffer", &r, out, CXR_ERR_SR);
    free(s_png);
    free(s_garbage);
    free(s_missing);
    free(s_empty);
    size_t n = 0;
    uint8_t *b = slurp(source_path, &n);
    CHECK(b != NULL, "cannot read %s", source_path);
    if (b) {
        /* truncated in the middle of the pixel data */
        cxr_source *s_cut = ingest_source(NULL, b, n / 3, &irc);
        r = base_request(s_cut);
        expect_fail("truncated buffer", &r, out, CXR_ERR_SR);
        free(s_cut);
        free(b);
    }

    /* output problems */
    r = base_request(source);
    snprintf(p, sizeof p, "%s/no_such_dir", work);
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_sr_write_file(&r, p, NULL, NULL, 0, err, sizeof err);
    CHECK(rc == CXR_ERR_IO, "missing out_dir: rc %d: %s", rc, err);
    char small[8];
    rc = cxr_sr_write_file(&r, out, NULL, small, sizeof small, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG, "short path_out: rc %d: %s", rc, err);
    CHECK(count_files(out) == 0, "short path_out: file left");
    rc = cxr_sr_write_buffer(&r, NULL, NULL, NULL, err, sizeof err);
    CHECK(rc == CXR_ERR_ARG, "NULL buf: rc %d", rc);
    cxr_sr_summary s;
    rc = cxr_sr_read_file(source_path, &s, err, sizeof err);
    CHECK(rc == CXR_ERR_SR, "reading an image as SR: rc %d: %s", rc, err);
    rc = cxr_sr_read_file(p, &s, err, sizeof err);
    CHECK(rc == CXR_ERR_IO, "reading a missing SR: rc %d: %s", rc, err);
}

static void unit_round_trips(const char *source_path, const char *study, const char *sop, const char *cls,
                             const char *work, int idx) {
    char out[1024], html[2048], err[CXR_ERRMSG_MAX], path[2048], what[256];
    snprintf(out, sizeof out, "%s/round_trip_%d", work, idx);
    make_dir(out);
    empty_dir(out);
    int irc;
    cxr_source *source = ingest_source(source_path, NULL, 0, &irc);
    CHECK(source && irc == CXR_OK, "ingest %s: rc %d", source_path, irc);
    if (!source) return;

    /* 1 finding, English, to a file */
    cxr_sr_request r = base_request(source);
    cxr_sr_ids ids;
    int rc = cxr_sr_write_file(&r, out, &ids, path, sizeof path, err, sizeof err);
    CHECK(rc == CXR_OK, "write %s: %s", source_path, err);
    if (rc) {
        free(source);
        return;
    }
    char expect[4096];
    snprintf(expect, sizeof expect, "%s/%s.dcm", out, ids.sop_instance_uid);
    CHECK(!strcmp(path, expect), "path %s, expected %s", path, expect);
    CHECK(!strncmp(ids.sop_instance_uid, CXR_SR_DEFAULT_UID_ROOT ".", strlen(CXR_SR_DEFAULT_UID_ROOT) + 1),
          "SOP UID %s not under the default root", ids.sop_instance_uid);
    CHECK(strlen(ids.sop_instance_uid) <= 64 && strcmp(ids.sop_instance_uid, ids.series_instance_uid),
          "UIDs %s / %s", ids.sop_instance_uid, ids.series_instance_uid);
    struct stat st;
    CHECK(stat(path, &st) == 0 && (st.st_mode & 0777) == 0644, "mode %o", (unsigned)(st.st_mode & 0777));
    CHECK(count_files(out) == 1, "%d files in %s (temporary left?)", count_files(out), out);
    cxr_sr_summary s;
    rc = cxr_sr_read_file(path, &s, err, sizeof err);
    CHECK(rc == CXR_OK, "read back: %s", err);
    snprintf(what, sizeof what, "sample %d, 1 finding", idx);
    if (!rc) {
        check_round_trip(what, &r, &s, study, sop, cls);
        CHECK(!strcmp(s.sop_instance_uid, ids.sop_instance_uid), "SOP UID read %s", s.sop_instance_uid);
        CHECK(!strcmp(s.series_instance_uid, ids.series_instance_uid), "series UID read %s", s.series_instance_uid);
    }
    snprintf(html, sizeof html, "%s/report_%d.html", work, idx);
    rc = cxr_sr_to_html(path, html, err, sizeof err);
    CHECK(rc == CXR_OK, "html: %s", err);
    CHECK(file_contains(html, "Pleural effusion"), "html lacks the finding");
    CHECK(file_contains(html, "Is there a pleural effusion?"), "html lacks the question");

    /* 3 findings, Chinese, unknown code, ingested from a buffer, into the same series */
    size_t n = 0;
    uint8_t *src = slurp(source_path, &n);
    CHECK(src != NULL, "cannot read %s", source_path);
    cxr_source *from_buf = src ? ingest_source(NULL, src, n, &irc) : NULL;
    free(src);
    CHECK(from_buf && irc == CXR_OK, "ingest %s from a buffer: rc %d", source_path, irc);
    if (!from_buf) {
        free(source);
        return;
    }
    cxr_sr_request z = base_request(from_buf);
    z.language = "zh";
    z.question = "\xE6\x9C\x89\xE8\x83\xB8\xE8\x85\x94\xE7\xA7\xAF\xE6\xB6\xB2\xE5\x90\x97\xEF\xBC\x9F";   /* 有胸腔积液吗？ */
    z.answer_text = "\xE6\x9C\x89\xEF\xBC\x8C\xE5\x8F\xAF\xE8\x83\xBD\xE6\x80\xA7 0.87\xE3\x80\x82"; /* 有，可能性 0.87。 */
    z.n_findings = 3;
    z.series_uid = ids.series_instance_uid;
    z.instance_number = 2;
    uint8_t *buf = NULL;
    size_t len = 0;
    cxr_sr_ids zid;
    rc = cxr_sr_write_buffer(&z, &zid, &buf, &len, err, sizeof err);
    CHECK(rc == CXR_OK, "write buffer: %s", err);
    free(from_buf);
    if (rc) {
        free(source);
        return;
    }
    CHECK(len > 132 && !memcmp(buf + 128, "DICM", 4), "buffer is not a Part 10 file");
    CHECK(!strcmp(zid.series_instance_uid, ids.series_instance_uid), "series not reused: %s", zid.series_instance_uid);
    CHECK(strcmp(zid.sop_instance_uid, ids.sop_instance_uid), "SOP UID repeated");
    snprintf(path, sizeof path, "%s/from_buffer.dcm", work);
    FILE *f = fopen(path, "wb");
    CHECK(f && fwrite(buf, 1, len, f) == len, "cannot save buffer");
    if (f) fclose(f);
    free(buf);
    rc = cxr_sr_read_file(path, &s, err, sizeof err);
    CHECK(rc == CXR_OK, "read buffer back: %s", err);
    snprintf(what, sizeof what, "sample %d, 3 findings zh", idx);
    if (!rc) {
        check_round_trip(what, &z, &s, study, sop, cls);
        CHECK(!strcmp(s.series_instance_uid, ids.series_instance_uid), "series read %s", s.series_instance_uid);
    }
    rc = cxr_sr_to_html(path, html, err, sizeof err);
    CHECK(rc == CXR_OK, "html zh: %s", err);
    for (int i = 0; i < 3; i++) CHECK(file_contains(html, FINDINGS[i].display), "html lacks %s", FINDINGS[i].display);
    CHECK(file_contains(html, z.question), "html lacks the Chinese question");

    /* our own UID root */
    cxr_sr_request u = base_request(source);
    u.uid_root = "1.2.3.4";
    rc = cxr_sr_write_file(&u, out, &ids, NULL, 0, err, sizeof err);
    CHECK(rc == CXR_OK, "uid root: %s", err);
    CHECK(!strncmp(ids.sop_instance_uid, "1.2.3.4.", 8) && !strncmp(ids.series_instance_uid, "1.2.3.4.", 8),
          "UIDs %s %s not under 1.2.3.4", ids.sop_instance_uid, ids.series_instance_uid);
    CHECK(count_files(out) == 2, "%d files in %s", count_files(out), out);
    free(source);
}

/* Several threads writing at once: distinct UIDs, every SR complete. */
#define N_THREADS 4
#define PER_THREAD 3
typedef struct {
    const cxr_source *source;
    const char *out;
    char sop[PER_THREAD][65];
    int rc[PER_THREAD];
} thread_job;

static void *thread_main(void *arg) {
    thread_job *j = arg;
    for (int k = 0; k < PER_THREAD; k++) {
        cxr_sr_request r = base_request(j->source);
        r.n_findings = 1 + k;
        cxr_sr_ids ids;
        char err[CXR_ERRMSG_MAX];
        j->rc[k] = cxr_sr_write_file(&r, j->out, &ids, NULL, 0, err, sizeof err);
        snprintf(j->sop[k], sizeof j->sop[k], "%s", j->rc[k] ? "" : ids.sop_instance_uid);
    }
    return NULL;
}

static void unit_threads(const cxr_source *source, const char *study, const char *sop, const char *cls, const char *work) {
    char out[1024];
    snprintf(out, sizeof out, "%s/threads", work);
    make_dir(out);
    empty_dir(out);
    thread_job jobs[N_THREADS];
    pthread_t th[N_THREADS];
    for (int t = 0; t < N_THREADS; t++) {
        jobs[t].source = source;
        jobs[t].out = out;
        CHECK(pthread_create(&th[t], NULL, thread_main, &jobs[t]) == 0, "pthread_create");
    }
    for (int t = 0; t < N_THREADS; t++) pthread_join(th[t], NULL);
    CHECK(count_files(out) == N_THREADS * PER_THREAD, "threads: %d files", count_files(out));
    for (int t = 0; t < N_THREADS; t++)
        for (int k = 0; k < PER_THREAD; k++) {
            CHECK(jobs[t].rc[k] == CXR_OK, "thread %d write %d: rc %d", t, k, jobs[t].rc[k]);
            char path[2048], err[CXR_ERRMSG_MAX], what[64];
            snprintf(path, sizeof path, "%s/%s.dcm", out, jobs[t].sop[k]);
            static cxr_sr_summary s;
            int rc = cxr_sr_read_file(path, &s, err, sizeof err);
            CHECK(rc == CXR_OK, "thread %d write %d: %s", t, k, err);
            cxr_sr_request r = base_request(source);
            r.n_findings = 1 + k;
            snprintf(what, sizeof what, "thread %d write %d", t, k);
            if (!rc) check_round_trip(what, &r, &s, study, sop, cls);
        }
}

/* The sample sources and their UIDs as the generator assigns them
 * (sample_data/manifest.json, written by sample_data/generate.py). */
static const struct {
    const char *file, *study, *sop, *cls;
} SAMPLES[] = {
    {"cr_mono1_jpegls.dcm", "1.2.826.0.1.3680043.10.1450.1", "1.2.826.0.1.3680043.10.1450.1.1.1", "1.2.840.10008.5.1.4.1.1.1"},
    {"dx_mono2_rle.dcm", "1.2.826.0.1.3680043.10.1450.2", "1.2.826.0.1.3680043.10.1450.2.1.1", "1.2.840.10008.5.1.4.1.1.1.1"},
};

/* One SR series per (study, model): the same pair always gives the same
 * series UID, number and description, a new model another series. The
 * expected UID is computed here from the documented rule (cxr_sr.h), with
 * 128-bit arithmetic of its own. Each report holds one measurement group per
 * finding written. */
static void unit_series(const cxr_source *src, const char *study, const char *work) {
    char path[4096], err[CXR_ERRMSG_MAX];
    cxr_sr_request r = base_request(src);
    r.n_findings = 3;
    cxr_sr_ids a, b, c;
    CHECK(cxr_sr_write_file(&r, work, &a, path, sizeof path, err, sizeof err) == CXR_OK, "series write 1: %s", err);
    CHECK(cxr_sr_write_file(&r, work, &b, NULL, 0, err, sizeof err) == CXR_OK, "series write 2: %s", err);
    CHECK(!strcmp(a.series_instance_uid, b.series_instance_uid) && strcmp(a.sop_instance_uid, b.sop_instance_uid),
          "same study and model: one series, two instances (%s %s / %s %s)", a.series_instance_uid,
          a.sop_instance_uid, b.series_instance_uid, b.sop_instance_uid);
    cxr_sr_request r2 = r;
    r2.model_sha256 = "fedcba9876543210fedcba9876543210fedcba9876543210fedcba9876543210";
    CHECK(cxr_sr_write_file(&r2, work, &c, NULL, 0, err, sizeof err) == CXR_OK, "series write 3: %s", err);
    CHECK(strcmp(a.series_instance_uid, c.series_instance_uid), "another model, another series (%s)",
          c.series_instance_uid);

    /* the rule, recomputed */
    cxr_sha256_ctx h;
    unsigned char md[32];
    cxr_sha256_init(&h);
    cxr_sha256_update(&h, "cxrvqa-sr-series", 17);
    cxr_sha256_update(&h, study, strlen(study) + 1);
    cxr_sha256_update(&h, ALG_SHA, 64);
    cxr_sha256_final(&h, md);
    unsigned __int128 v = 0;
    for (int i = 0; i < 16; i++) v = v << 8 | md[i];
    char dig[48], rev[48];
    int n = 0;
    do { rev[n++] = (char)('0' + (int)(v % 10)); v /= 10; } while (v);
    for (int i = 0; i < n; i++) dig[i] = rev[n - 1 - i];
    dig[n] = '\0';
    char expect[160];
    snprintf(expect, sizeof expect, "%s.8.%s", CXR_SR_DEFAULT_UID_ROOT, dig);
    expect[64] = '\0';
    CHECK(!strcmp(a.series_instance_uid, expect), "series UID %s, rule gives %s", a.series_instance_uid, expect);
    char api[65];
    CHECK(cxr_sr_series_uid(NULL, study, ALG_SHA, api) == CXR_OK && !strcmp(api, expect), "cxr_sr_series_uid %s", api);
    CHECK(cxr_sr_series_uid(NULL, "1.2.x", ALG_SHA, api) == CXR_ERR_ARG, "bad study UID refused");
    CHECK(cxr_sr_series_uid(NULL, study, "abc", api) == CXR_ERR_ARG, "bad model hash refused");
    int num = cxr_sr_series_number(ALG_SHA);
    CHECK(num == 9100 + (int)(0x01234567u % 900u), "series number %d", num);
    CHECK(cxr_sr_series_number(r2.model_sha256) == 9100 + (int)(0xfedcba98u % 900u), "series number 2");
    char desc[CXR_SR_SERIES_DESC_MAX];
    cxr_sr_series_description("cxrvqa-cxr-cnn", "1.0", ALG_SHA, desc, sizeof desc);
    CHECK(!strcmp(desc, "AI cxrvqa-cxr-cnn 1.0 model 0123456789ab UNVERIFIED"), "description \"%s\"", desc);
    cxr_sr_series_description("a-very-long-algorithm-name-that-goes-on-and-on", "2024.11.29-rc1", ALG_SHA, desc,
                              sizeof desc);
    CHECK(strlen(desc) <= 64 && strstr(desc, "model 0123456789ab UNVERIFIED"), "long description \"%s\"", desc);

    /* read back: the header and one group per finding */
    cxr_sr_summary s;
    CHECK(cxr_sr_read_file(path, &s, err, sizeof err) == CXR_OK, "read %s: %s", path, err);
    CHECK(s.n_findings == 3, "%d measurement groups for 3 findings", s.n_findings);
    for (int i = 0; i < 3 && i < s.n_findings; i++)
        CHECK(!strcmp(s.findings[i].name, FINDINGS[i].name), "group %d is %s", i, s.findings[i].name);
    CHECK(file_contains(path, "AI cxrvqa-cxr-cnn 1.0 model 0123456789ab UNVERIFIED"), "description in the file");
}

static int unit(const char *sample, const char *work) {
    make_dir(work);
    char src[4096];
    for (int i = 0; i < 2; i++) {
        snprintf(src, sizeof src, "%s/%s", sample, SAMPLES[i].file);
        unit_round_trips(src, SAMPLES[i].study, SAMPLES[i].sop, SAMPLES[i].cls, work, i);
    }
    snprintf(src, sizeof src, "%s/%s", sample, SAMPLES[0].file);
    int irc;
    cxr_source *s0 = ingest_source(src, NULL, 0, &irc);
    CHECK(s0 && irc == CXR_OK, "ingest %s: rc %d", src, irc);
    if (s0) {
        unit_refusals(sample, src, s0, work);
        unit_threads(s0, SAMPLES[0].study, SAMPLES[0].sop, SAMPLES[0].cls, work);
        unit_series(s0, SAMPLES[0].study, work);
    }
    free(s0);
    return CHECK_SUMMARY();
}

/* -------------------------------------------------- tool mode for test_sr.py */

static int parse_finding(char *spec, cxr_sr_finding *f) {
    char *field[7];
    int n = 0;
    for (char *p = spec; n < 7; n++) {
        field[n] = p;
        char *bar = strchr(p, '|');
        if (!bar) {
            n++;
            break;
        }
        *bar = '\0';
        p = bar + 1;
    }
    if (n != 7) return -1;
    f->name = field[0];
    f->display = field[1];
    f->snomed = field[2];
    f->presence = !strcmp(field[3], "present") ? CXR_SR_PRESENT : !strcmp(field[3], "absent") ? CXR_SR_ABSENT
                                                                                               : CXR_SR_INDETERMINATE;
    f->probability = strtod(field[4], NULL);
    f->threshold = strtod(field[5], NULL);
    f->calibrated = atoi(field[6]);
    return 0;
}

static int emit(int argc, char **argv) {
    const char *series = NULL, *root = NULL;
    int use_buffer = 0, i = 2;
    for (; i < argc && !strncmp(argv[i], "--", 2); i++) {
        if (!strcmp(argv[i], "--series") && i + 1 < argc) series = argv[++i];
        else if (!strcmp(argv[i], "--uid-root") && i + 1 < argc) root = argv[++i];
        else if (!strcmp(argv[i], "--buffer")) use_buffer = 1;
        else return fprintf(stderr, "unknown option %s\n", argv[i]), 2;
    }
    if (argc - i < 6) return fprintf(stderr, "usage: test_sr --emit [opts] OUT SOURCE LANG Q A FINDING...\n"), 2;
    const char *out = argv[i], *source_path = argv[i + 1];
    cxr_sr_finding f[CXR_SR_MAX_FINDINGS + 1];
    int nf = 0;
    for (int k = i + 5; k < argc && nf <= CXR_SR_MAX_FINDINGS; k++, nf++)
        if (parse_finding(argv[k], &f[nf])) return fprintf(stderr, "bad finding %s\n", argv[k]), 2;
    /* the source ingested once, from the file or (--buffer) from its bytes */
    int irc;
    cxr_source *source;
    if (use_buffer) {
        size_t sn = 0;
        uint8_t *s = slurp(source_path, &sn);
        source = ingest_source(NULL, s ? (const void *)s : (const void *)"", s ? sn : 0, &irc);
        free(s);
    } else {
        source = ingest_source(source_path, NULL, 0, &irc);
    }
    if (!source) return printf("rc\t%d\tout of memory\n", CXR_ERR_NOMEM), 1;
    if (irc == CXR_ERR_IO) {
        free(source);
        return printf("rc\t%d\t%s: cannot be read\n", irc, source_path), 1;
    }
    cxr_sr_request r = base_request(source);
    r.language = argv[i + 2];
    r.question = argv[i + 3];
    r.answer_text = argv[i + 4];
    r.findings = f;
    r.n_findings = nf;
    r.series_uid = series;
    r.uid_root = root;
    r.manufacturer = "cxrvqa test";
    r.device_serial = "SN-0001";
    char err[CXR_ERRMSG_MAX], path[4096];
    cxr_sr_ids ids;
    uint8_t *b = NULL;
    size_t n = 0;
    int rc = use_buffer ? cxr_sr_write_buffer(&r, &ids, &b, &n, err, sizeof err)
                        : cxr_sr_write_file(&r, out, &ids, path, sizeof path, err, sizeof err);
    free(source);
    if (rc) return printf("rc\t%d\t%s\n", rc, err), 1;
    if (use_buffer) {
        snprintf(path, sizeof path, "%s/%s.dcm", out, ids.sop_instance_uid);
        FILE *fp = fopen(path, "wb");
        if (!fp || fwrite(b, 1, n, fp) != n) return printf("rc\t-1\tcannot save %s\n", path), 1;
        fclose(fp);
        free(b);
    }
    printf("rc\t0\npath\t%s\nsop\t%s\nseries\t%s\n", path, ids.sop_instance_uid, ids.series_instance_uid);
    return 0;
}

static int read_sr(const char *path) {
    static cxr_sr_summary s;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_sr_read_file(path, &s, err, sizeof err);
    if (rc) return printf("rc\t%d\t%s\n", rc, err), 1;
    printf("rc\t0\nsop\t%s\nseries\t%s\nstudy\t%s\nsource_sop\t%s\nsource_class\t%s\nlanguage\t%s\n", s.sop_instance_uid,
           s.series_instance_uid, s.study_uid, s.source_sop_uid, s.source_sop_class, s.language);
    printf("question\t%s\nanswer\t%s\nalgorithm\t%s\nversion\t%s\nsha\t%s\ncompletion\t%s\nverification\t%s\n", s.question,
           s.answer, s.algorithm_name, s.algorithm_version, s.model_sha256, s.completion, s.verification);
    for (int i = 0; i < s.n_findings; i++) {
        const cxr_sr_read_finding *f = &s.findings[i];
        printf("finding\t%s\t%s\t%s\t%s\t%s\t%.17g\t%.17g\t%d\t%s\n", f->name, f->code, f->scheme, f->display,
               presence_name(f->presence), f->probability, f->threshold, f->calibrated, f->tracking_uid);
    }
    return 0;
}

int main(int argc, char **argv) {
    if (argc >= 2 && !strcmp(argv[1], "--emit")) return emit(argc, argv);
    if (argc == 3 && !strcmp(argv[1], "--read")) return read_sr(argv[2]);
    if (argc == 4 && !strcmp(argv[1], "--html")) {
        char err[CXR_ERRMSG_MAX];
        int rc = cxr_sr_to_html(argv[2], argv[3], err, sizeof err);
        if (rc) printf("rc\t%d\t%s\n", rc, err);
        return rc ? 1 : 0;
    }
    if (argc != 3) {
        fprintf(stderr, "usage: test_sr SAMPLE_DIR WORK_DIR | --emit ... | --read SR | --html SR HTML\n");
        return 2;
    }
    return unit(argv[1], argv[2]);
}
