/*
 * triage.c — `cxrvqa screen --worklist`: one row per image from the
 * (image, question) answers, the ranking (triage.h: max p / threshold over
 * the assessable findings), the refusal warning of the summary, the
 * worklist CSV, and the thumbnails / heatmaps of the top cases fetched from
 * the worker pool for the report. It reads answers as JSON and must not
 * decode images or decide an answer.
 */
#define _GNU_SOURCE
#include "triage.h"
#include "html.h"
#include "cxr_json.h"
#include "cxr_util.h"
#include "protocol.h"

#include <errno.h>
#include <limits.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

static void copy(char *dst, size_t n, const char *src) {
    if (!src) src = "";
    size_t k = strnlen(src, n - 1);
    memcpy(dst, src, k);
    dst[k] = '\0';
}

static const char *jstr(const cJSON *o, const char *k) {
    const cJSON *v = o ? cJSON_GetObjectItemCaseSensitive(o, k) : NULL;
    return cJSON_IsString(v) ? v->valuestring : NULL;
}

static int assessable(const char *decision) {
    return !strcmp(decision, "yes") || !strcmp(decision, "no") || !strcmp(decision, "uncertain");
}

/* the score of one finding: p relative to its operating point */
static double ratio(float p, float th) { return (double)p / (th > 1e-6f ? (double)th : 1e-6); }

/* fold one answer into its image's row */
static void add_answer(triage_image *x, const cJSON *a) {
    const char *s;
    if (!x->accession[0] && (s = jstr(a, "accession_number"))) copy(x->accession, sizeof x->accession, s);
    if (!x->patient_id[0] && (s = jstr(a, "patient_id"))) copy(x->patient_id, sizeof x->patient_id, s);
    if (!x->study_uid[0] && (s = jstr(a, "study_instance_uid"))) copy(x->study_uid, sizeof x->study_uid, s);
    if (!x->study_date[0] && (s = jstr(a, "study_date"))) copy(x->study_date, sizeof x->study_date, s);
    if (!x->sop_uid[0] && (s = jstr(a, "sop_instance_uid"))) copy(x->sop_uid, sizeof x->sop_uid, s);
    const cJSON *sr = cJSON_GetObjectItemCaseSensitive(a, "sr");
    const char *where = jstr(sr, "path");
    if (!where || !*where) where = jstr(sr, "sop_instance_uid");
    if (where && *where && !strstr(x->sr, where)) { /* one SR per image or one per question */
        size_t n = strlen(x->sr), k = strlen(where);
        if (n + k + 2 < sizeof x->sr) {
            if (n) x->sr[n++] = ';';
            memcpy(x->sr + n, where, k + 1);
        }
    }
    const cJSON *fa = cJSON_GetObjectItemCaseSensitive(a, "findings"), *f;
    cJSON_ArrayForEach(f, fa) {
        const char *name = jstr(f, "finding"), *dec = jstr(f, "decision");
        const cJSON *p = cJSON_GetObjectItemCaseSensitive(f, "probability");
        const cJSON *t = cJSON_GetObjectItemCaseSensitive(f, "threshold");
        if (!name || !dec || !cJSON_IsNumber(p) || !cJSON_IsNumber(t)) continue;
        int k = 0;
        while (k < x->n_f && strcmp(x->f[k].name, name)) k++;
        if (k == x->n_f) {
            if (x->n_f == TRIAGE_MAX_FINDINGS) continue;
            x->n_f++;
            memset(&x->f[k], 0, sizeof x->f[k]);
            copy(x->f[k].name, sizeof x->f[k].name, name);
        } else if (ratio((float)p->valuedouble, (float)t->valuedouble) <= ratio(x->f[k].p, x->f[k].threshold)) {
            continue; /* the same finding asked twice: the stronger answer */
        }
        x->f[k].p = (float)p->valuedouble;
        x->f[k].threshold = (float)t->valuedouble;
        copy(x->f[k].decision, sizeof x->f[k].decision, dec);
    }
}

/* group in the worklist: 0 scored, 1 answered without an assessable finding, 2 refused, 3 failed, 4 not done */
static int group(const triage_image *x) {
    if (x->status == TRIAGE_OK) return x->scored ? 0 : 1;
    return x->status == TRIAGE_REFUSED ? 2 : x->status == TRIAGE_ERROR ? 3 : 4;
}

static int cmp_rank(const void *pa, const void *pb) {
    const triage_image *a = pa, *b = pb;
    int ga = group(a), gb = group(b);
    if (ga != gb) return ga - gb;
    if (ga == 0 && a->score != b->score) return a->score > b->score ? -1 : 1;
    return strcmp(a->path, b->path);
}

int triage_build(char *const *files, int n_files, const triage_task *tasks, int n_tasks, triage_list *out) {
    memset(out, 0, sizeof *out);
    out->v = calloc((size_t)(n_files > 0 ? n_files : 1), sizeof *out->v);
    if (!out->v) return -1;
    out->n = n_files;
    int *n_ok = calloc((size_t)(n_files > 0 ? n_files : 1), 3 * sizeof *n_ok);
    if (!n_ok) {
        free(out->v);
        out->v = NULL;
        return -1;
    }
    for (int i = 0; i < n_files; i++) out->v[i].path = files[i];
    for (int i = 0; i < n_tasks; i++) {
        const triage_task *t = &tasks[i];
        if (t->file < 0 || t->file >= n_files) continue;
        triage_image *x = &out->v[t->file];
        if (t->ans) add_answer(x, t->ans);
        if (t->status == TRIAGE_OK) n_ok[3 * t->file]++;
        else if (t->status == TRIAGE_REFUSED) {
            if (!n_ok[3 * t->file + 1]++) {
                const char *rc = jstr(t->ans, "reason_code");
                copy(x->reason_code, sizeof x->reason_code, rc && *rc ? rc : "refused");
                copy(x->reason, sizeof x->reason, t->reason && *t->reason ? t->reason : jstr(t->ans, "reason"));
            }
        } else if (t->status == TRIAGE_ERROR) {
            if (!n_ok[3 * t->file + 2]++) {
                const char *r = t->reason ? t->reason : "";
                const char *colon = strchr(r, ':');
                size_t k = colon ? (size_t)(colon - r) : strlen(r);
                copy(x->reason_code, k + 1 < sizeof x->reason_code ? k + 1 : sizeof x->reason_code, r);
                copy(x->reason, sizeof x->reason, colon ? colon + 1 + (colon[1] == ' ') : r); /* "code: detail" */
            }
        }
    }
    for (int i = 0; i < n_files; i++) {
        triage_image *x = &out->v[i];
        x->status = n_ok[3 * i] ? TRIAGE_OK : n_ok[3 * i + 1] ? TRIAGE_REFUSED : n_ok[3 * i + 2] ? TRIAGE_ERROR
                                                                                                   : TRIAGE_PENDING;
        if (x->status == TRIAGE_OK) x->reason_code[0] = x->reason[0] = '\0';
        for (int k = 0; x->status == TRIAGE_OK && k < x->n_f; k++) {
            if (!assessable(x->f[k].decision)) continue;
            double r = ratio(x->f[k].p, x->f[k].threshold);
            if (!x->scored || r > x->score) {
                x->score = r;
                copy(x->top, sizeof x->top, x->f[k].name);
            }
            x->scored = 1;
        }
        out->n_ok += x->status == TRIAGE_OK;
        out->n_refused += x->status == TRIAGE_REFUSED;
        out->n_error += x->status == TRIAGE_ERROR;
        out->n_pending += x->status == TRIAGE_PENDING;
    }
    free(n_ok);
    qsort(out->v, (size_t)out->n, sizeof *out->v, cmp_rank);
    for (int i = 0; i < out->n; i++) out->v[i].rank = i + 1;
    return 0;
}

void triage_free(triage_list *L) {
    if (!L) return;
    for (int i = 0; i < L->n && L->v; i++) {
        free(L->v[i].thumb);
        free(L->v[i].heat);
    }
    free(L->v);
    memset(L, 0, sizeof *L);
}

int triage_warn_refusals(const triage_list *L, FILE *f) {
    int done = L->n_ok + L->n_refused + L->n_error;
    if (!done || L->n_refused <= TRIAGE_REFUSAL_WARN * done) return 0;
    /* the most frequent reason code among the refused images, and one message of it */
    const char *best = "", *msg = "";
    int best_n = 0;
    for (int i = 0; i < L->n; i++) {
        const triage_image *x = &L->v[i];
        if (x->status != TRIAGE_REFUSED) continue;
        int n = 0;
        for (int j = 0; j < L->n; j++)
            n += L->v[j].status == TRIAGE_REFUSED && !strcmp(L->v[j].reason_code, x->reason_code);
        if (n > best_n) {
            best_n = n;
            best = x->reason_code;
            msg = x->reason;
        }
    }
    fprintf(f,
            "screen: warning: %d of %d images (%.0f%%) were refused; main reason: %s (%d image%s, e.g. \"%s\"). "
            "Check that these are frontal chest radiographs the model may read (README, \"Screening a folder\").\n",
            L->n_refused, done, 100.0 * L->n_refused / done, best, best_n, best_n == 1 ? "" : "s", msg);
    return 1;
}

/* ------------------------------------------------------------- the CSV */


/* "name:p;name:p" of the findings with this decision, strongest first */
static void list_findings(const triage_image *x, const char *decision, char *out, size_t n) {
    int used[TRIAGE_MAX_FINDINGS] = {0};
    size_t w = 0;
    out[0] = '\0';
    for (;;) {
        int best = -1;
        for (int k = 0; k < x->n_f; k++)
            if (!used[k] && !strcmp(x->f[k].decision, decision) &&
                (best < 0 || ratio(x->f[k].p, x->f[k].threshold) > ratio(x->f[best].p, x->f[best].threshold)))
                best = k;
        if (best < 0) break;
        used[best] = 1;
        int k = snprintf(out + w, n - w, "%s%s:%.3f", w ? ";" : "", x->f[best].name, x->f[best].p);
        if (k < 0 || (size_t)k >= n - w) {
            out[w] = '\0';
            break;
        }
        w += (size_t)k;
    }
}

const char *triage_status_name(int s) {
    return s == TRIAGE_OK ? "answered" : s == TRIAGE_REFUSED ? "refused" : s == TRIAGE_ERROR ? "failed" : "not-done";
}

int triage_write_worklist(const triage_list *L, const char *path) {
    char tmp[PATH_MAX + 32];
    snprintf(tmp, sizeof tmp, "%s.tmp.%ld", path, (long)getpid());
    FILE *f = fopen(tmp, "w");
    if (!f) return -1;
    fputs("rank,score,top_finding,positive,uncertain,accession,patient_id,study_uid,study_date,sop_instance_uid,"
          "path,status,refusal_reason,sr\n", f);
    for (int i = 0; i < L->n; i++) {
        const triage_image *x = &L->v[i];
        char rank[16], score[32] = "", pos[1024], unc[1024], why[320] = "";
        snprintf(rank, sizeof rank, "%d", x->rank);
        if (x->scored) snprintf(score, sizeof score, "%.4f", x->score);
        list_findings(x, "yes", pos, sizeof pos);
        list_findings(x, "uncertain", unc, sizeof unc);
        if (x->status == TRIAGE_REFUSED || x->status == TRIAGE_ERROR)
            snprintf(why, sizeof why, "%s%s%s", x->reason_code, x->reason[0] ? ": " : "", x->reason);
        cli_csv_field(f, rank, 0);
        cli_csv_field(f, score, 0);
        cli_csv_field(f, x->scored ? x->top : "", 0);
        cli_csv_field(f, pos, 0);
        cli_csv_field(f, unc, 0);
        cli_csv_field(f, x->accession, 0);
        cli_csv_field(f, x->patient_id, 0);
        cli_csv_field(f, x->study_uid, 0);
        cli_csv_field(f, x->study_date, 0);
        cli_csv_field(f, x->sop_uid, 0);
        cli_csv_field(f, x->path, 0);
        cli_csv_field(f, triage_status_name(x->status), 0);
        cli_csv_field(f, why, 0);
        cli_csv_field(f, x->sr, 1);
    }
    int bad = ferror(f);
    if (fflush(f) != 0 || fsync(fileno(f)) != 0) bad = 1;
    if (fclose(f) != 0) bad = 1;
    if (bad || rename(tmp, path) != 0) {
        int e = errno;
        unlink(tmp);
        errno = e;
        return -1;
    }
    return 0;
}

/* ------------------------------------------------ images of the top cases */

/* one request to the pool; the first attachment named want copied out */
static int fetch(cxr_pool *pool, cJSON *rq, const char *want, uint8_t **png, size_t *len, char *why, size_t whylen) {
    char *js = cJSON_PrintUnformatted(rq);
    cJSON_Delete(rq);
    if (!js) {
        snprintf(why, whylen, "out of memory");
        return -1;
    }
    cxr_msg req = {.json = js, .json_len = strlen(js)}, resp = {0};
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_pool_call(pool, &req, &resp, err, sizeof err);
    free(js);
    if (rc != CXR_OK) {
        if (snprintf(why, whylen, "%s: %s", cxr_strerror(rc), err) < 0) why[0] = '\0';
        cxr_msg_free(&resp);
        return -1;
    }
    cJSON *o = cJSON_ParseWithLength(resp.json, resp.json_len);
    int ok = -1;
    const char *e = jstr(o, CXR_P_ERROR);
    if (!o) snprintf(why, whylen, "unreadable worker response");
    else if (e) snprintf(why, whylen, "%s", e);
    else if (cxr_json_bool(o, CXR_P_REFUSED)) snprintf(why, whylen, "refused: %s", jstr(o, CXR_P_REASON));
    else {
        size_t at = 0;
        const cJSON *x;
        cJSON_ArrayForEach(x, cJSON_GetObjectItemCaseSensitive(o, CXR_P_ATTACHMENTS)) {
            const char *name = jstr(x, CXR_P_ATT_NAME);
            const cJSON *nb = cJSON_GetObjectItemCaseSensitive(x, CXR_P_ATT_BYTES);
            size_t n = cJSON_IsNumber(nb) && nb->valuedouble >= 0 ? (size_t)nb->valuedouble : 0;
            if (at + n > resp.payload_len) break;
            if (name && !strcmp(name, want) && n) {
                if ((*png = malloc(n))) {
                    memcpy(*png, resp.payload + at, n);
                    *len = n;
                    ok = 0;
                }
                break;
            }
            at += n;
        }
        if (ok) snprintf(why, whylen, "no %s in the worker's response", want);
    }
    cJSON_Delete(o);
    cxr_msg_free(&resp);
    return ok;
}

void triage_fetch_images(triage_list *L, cxr_pool *pool, int top, const char *app, const char *user) {
    for (int i = 0; i < L->n && i < top; i++) {
        triage_image *x = &L->v[i];
        if (!x->scored) break; /* ranked: the rest are not scored either */
        char why[160] = "";
        cJSON *rq = cJSON_CreateObject();
        cJSON_AddStringToObject(rq, CXR_P_OP, CXR_P_OP_THUMBNAIL);
        cJSON_AddStringToObject(rq, CXR_P_PATH, x->path);
        if (fetch(pool, rq, CXR_P_ATT_THUMBNAIL, &x->thumb, &x->thumb_len, why, sizeof why) != 0)
            if (snprintf(x->image_err, sizeof x->image_err, "thumbnail: %s", why) < 0) x->image_err[0] = '\0';
        rq = cJSON_CreateObject();
        cJSON_AddStringToObject(rq, CXR_P_OP, CXR_P_OP_HEATMAP);
        cJSON_AddStringToObject(rq, CXR_P_PATH, x->path);
        cJSON_AddStringToObject(rq, CXR_P_SOURCE, x->path);
        cJSON_AddStringToObject(rq, CXR_P_FINDING, x->top);
        cJSON_AddStringToObject(rq, CXR_P_APP, app);
        if (user) cJSON_AddStringToObject(rq, CXR_P_USER, user);
        if (fetch(pool, rq, CXR_P_ATT_HEATMAP, &x->heat, &x->heat_len, why, sizeof why) != 0 && !x->image_err[0])
            if (snprintf(x->image_err, sizeof x->image_err, "heatmap: %s", why) < 0) x->image_err[0] = '\0';
    }
}
