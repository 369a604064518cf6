/*
 * sr.c — from an answer to the structured report: maps findings and
 * decisions onto the SR writer's request (dicom/cxr_sr.h). It owns that
 * mapping only; the DICOM encoding is the writer's, the file policy (where,
 * whether) the caller's.
 */
#include "cxrvqa.h"
#include "cxr_sr.h"
#include "wording.h"

#include <ctype.h>
#include <math.h>
#include <stdint.h>
#include <stdio.h>
#include <string.h>

/* The SR's tracking identifier ([A-Za-z0-9_.-]{1,63}) for any finding
 * name: the name itself when it already is one, else its ASCII letters and
 * digits joined by '_' (at most 40), a '.', and 8 hex digits of a hash of
 * the whole name, so that "free air", "积液?" and "a/b" each get a stable
 * identifier of their own. */
static void tracking_name(const char *name, int index, char out[64]) {
    size_t n = strlen(name), k = 0;
    int plain = n >= 1 && n <= 63;
    for (size_t i = 0; plain && i < n; i++) plain = isalnum((unsigned char)name[i]) || strchr("_.-", name[i]);
    if (plain) {
        snprintf(out, 64, "%s", name);
        return;
    }
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++) h = (h ^ (unsigned char)name[i]) * 16777619u;
    for (size_t i = 0; i < n && k < 40; i++) {
        unsigned char c = (unsigned char)name[i];
        if (c < 0x80 && isalnum(c)) out[k++] = (char)tolower(c);
        else if (k && out[k - 1] != '_') out[k++] = '_';
    }
    while (k && out[k - 1] == '_') k--;
    snprintf(out + k, 64 - k, "%sfinding%d.%08x", k ? "." : "", index, h);
}

/* The code meaning: the display name cut to 64 characters at a UTF-8
 * boundary, backslashes (the DICOM value separator) replaced; the tracking
 * name when nothing is left. */
static void code_meaning(const char *display, const char *fallback, char out[96]) {
    size_t o = 0, chars = 0;
    for (const unsigned char *p = (const unsigned char *)display; *p && chars < 64;) {
        size_t len = *p < 0x80 ? 1 : (*p >> 5) == 6 ? 2 : (*p >> 4) == 14 ? 3 : (*p >> 3) == 30 ? 4 : 0;
        if (!len || o + len >= 95) break;
        for (size_t i = 1; i < len; i++)
            if ((p[i] & 0xC0) != 0x80) len = 0;
        if (!len) break;
        if (*p < 0x20 || *p == 0x7f) { /* control characters: a space */
            out[o++] = ' ';
        } else {
            memcpy(out + o, p, len);
            if (len == 1 && out[o] == '\\') out[o] = '/';
            o += len;
        }
        p += len;
        chars++;
    }
    out[o] = '\0';
    if (!o) snprintf(out, 96, "%s", fallback);
}

int cxr_answer_write_sr(const cxr_answer *a, cxr_sr_output *o, char *err, size_t errlen) {
    return cxr_answers_write_sr(&a, 1, o, err, errlen);
}

/* Append text (and a line feed before it unless first) to buf[cap] at *len;
 * 0, or -1 when it does not fit. */
static int append_line(char *buf, size_t cap, size_t *len, const char *text) {
    size_t t = strlen(text), sep = *len ? 1 : 0;
    if (*len + sep + t + 1 > cap) return -1;
    if (sep) buf[(*len)++] = '\n';
    memcpy(buf + *len, text, t + 1);
    *len += t;
    return 0;
}

int cxr_answers_write_sr(const cxr_answer *const *as, int n_answers, cxr_sr_output *o, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!as || !o || n_answers < 1) return CXR_ERR_ARG;
    o->buf = NULL;
    o->len = 0;
    o->path[0] = o->sop_instance_uid[0] = o->series_instance_uid[0] = '\0';
    const cxr_answer *a = NULL; /* the first answer that can be reported: header, model, domain checks */
    for (int k = 0; k < n_answers; k++) {
        const cxr_answer *x = as[k];
        if (!x) return CXR_ERR_ARG;
        if (x->refused || x->error_code || x->n_findings < 1) continue;
        if (!x->has_image || !strcmp(x->meta.transfer_syntax, "PNG")) {
            snprintf(err, errlen, "no structured report for a non-DICOM source");
            return CXR_ERR_SR;
        }
        if (!a) {
            a = x;
        } else if (strcmp(a->meta.sop_uid, x->meta.sop_uid) || strcmp(a->model.sha256, x->model.sha256)) {
            snprintf(err, errlen, "one structured report holds the answers about one image by one model");
            return CXR_ERR_ARG;
        }
    }
    if (!a) {
        const cxr_answer *x = as[0];
        snprintf(err, errlen, "no structured report for a %s", x->refused ? "refusal" : "failed request");
        return CXR_ERR_ARG;
    }
    cxr_sr_finding fs[CXR_SR_MAX_FINDINGS];
    char names[CXR_SR_MAX_FINDINGS][64], displays[CXR_SR_MAX_FINDINGS][96], notes[CXR_SR_MAX_FINDINGS][320];
    char question[CXR_SR_MAX_TEXT], answer[CXR_SR_MAX_TEXT];
    size_t ql = 0, al = 0;
    question[0] = answer[0] = '\0';
    int n = 0;
    for (int k = 0; k < n_answers; k++) {
        const cxr_answer *x = as[k];
        if (x->refused || x->error_code || x->n_findings < 1) continue;
        if (append_line(question, sizeof question, &ql, x->question) ||
            append_line(answer, sizeof answer, &al, x->text)) {
            snprintf(err, errlen, "the questions or answers of one report exceed %d bytes", CXR_SR_MAX_TEXT);
            return CXR_ERR_ARG;
        }
        for (int i = 0; i < x->n_findings && n < CXR_SR_MAX_FINDINGS; i++) {
            const cxr_answer_finding *af = &x->findings[i];
            tracking_name(af->finding, n, names[n]);
            int dup = 0; /* two questions about one finding: its first answer is reported */
            for (int j = 0; j < n && !dup; j++) dup = !strcmp(names[j], names[n]);
            if (dup) continue;
            code_meaning(af->display_en[0] ? af->display_en : af->finding, names[n], displays[n]);
            fs[n].name = names[n];
            fs[n].display = displays[n];
            fs[n].snomed = af->code[0] ? af->code : NULL;
            fs[n].presence = af->decision == CXR_DECISION_YES ? CXR_SR_PRESENT
                             : af->decision == CXR_DECISION_NO ? CXR_SR_ABSENT
                                                               : CXR_SR_INDETERMINATE; /* uncertain, not assessed */
            fs[n].probability = isnan(af->probability) ? 0.0 : af->probability;
            fs[n].threshold = af->threshold;
            fs[n].calibrated = af->calibrated;
            wording_note(af, notes[n], sizeof notes[n]);
            fs[n].note = notes[n][0] ? notes[n] : NULL;
            n++;
        }
    }
    char params[640];
    snprintf(params, sizeof params,
             "model_sha256=%s; prompt_set=%s; decision: yes above the finding's uncertain_high, no below its "
             "uncertain_low, indeterminate between; image domain score %.3f (threshold %.3f), feature distance "
             "%.1f (warn above %.1f), layout distance %.1f (warn above %.1f); research model, not a diagnostic "
             "device",
             a->model.sha256, a->model.prompt_set_version, a->domain_score, a->domain_threshold, a->domain_distance,
             a->domain_warn, a->layout_distance, a->layout_warn);
    cxr_sr_request r = cxr_sr_request_default();
    r.source = &a->meta.source; /* captured by ingestion: the image is not read again */
    r.question = question;
    r.answer_text = answer;
    r.language = a->language;
    r.findings = fs;
    r.n_findings = n;
    r.algorithm_name = a->model.name;
    r.algorithm_version = a->model.version;
    r.model_sha256 = a->model.sha256;
    r.prompt_set_version = a->model.prompt_set_version[0] ? a->model.prompt_set_version : NULL;
    r.parameters = params;
    r.uid_root = o->uid_root;
    r.manufacturer = "cxrvqa " CXRVQA_VERSION;
    cxr_sr_ids ids;
    int rc;
    if (o->out_dir)
        rc = cxr_sr_write_file(&r, o->out_dir, &ids, o->path, sizeof o->path, err, errlen);
    else
        rc = cxr_sr_write_buffer(&r, &ids, &o->buf, &o->len, err, errlen);
    if (rc == CXR_OK) {
        snprintf(o->sop_instance_uid, sizeof o->sop_instance_uid, "%s", ids.sop_instance_uid);
        snprintf(o->series_instance_uid, sizeof o->series_instance_uid, "%s", ids.series_instance_uid);
    }
    return rc;
}
