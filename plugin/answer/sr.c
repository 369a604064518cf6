/*
 * sr.c — from an answer to the structured report: maps findings and
 * decisions onto the SR writer's request (dicom/cxr_sr.h). It owns that
 * mapping only; the DICOM encoding is the writer's, the file policy (where,
 * whether) the caller's.
 */
#include "cxrvqa.h"
#include "cxr_sr.h"

#include <math.h>
#include <stdio.h>
#include <string.h>

int cxr_answer_write_sr(const cxr_answer *a, cxr_sr_output *o, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!a || !o) return CXR_ERR_ARG;
    o->buf = NULL;
    o->len = 0;
    o->path[0] = o->sop_instance_uid[0] = o->series_instance_uid[0] = '\0';
    if (a->refused || a->error_code || a->n_findings < 1) {
        snprintf(err, errlen, "no structured report for a %s", a->refused ? "refusal" : "failed request");
        return CXR_ERR_ARG;
    }
    if (!a->has_image || !strcmp(a->meta.transfer_syntax, "PNG")) {
        snprintf(err, errlen, "no structured report for a non-DICOM source");
        return CXR_ERR_SR;
    }
    cxr_sr_finding f[CXR_SR_MAX_FINDINGS];
    int n = a->n_findings < CXR_SR_MAX_FINDINGS ? a->n_findings : CXR_SR_MAX_FINDINGS;
    for (int i = 0; i < n; i++) {
        const cxr_answer_finding *af = &a->findings[i];
        f[i].name = af->finding;
        f[i].display = af->display_en;
        f[i].snomed = af->code[0] ? af->code : NULL;
        f[i].presence = af->decision == CXR_DECISION_YES ? CXR_SR_PRESENT
                        : af->decision == CXR_DECISION_NO ? CXR_SR_ABSENT
                                                          : CXR_SR_INDETERMINATE;
        f[i].probability = isnan(af->probability) ? 0.0 : af->probability;
        f[i].threshold = af->threshold;
        f[i].calibrated = af->calibrated;
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
    r.question = a->question;
    r.answer_text = a->text;
    r.language = a->language;
    r.findings = f;
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
