/*
 * json.c — an answer as the JSON object `cxrvqa ask --json`, the
 * worker protocol and the Orthanc routes all return. It owns the field names
 * (documented in README "Answer JSON"); it must not decide anything.
 */
#include "cxrvqa.h"
#include "cxr_json.h"
#include "vqa_internal.h"

#include <cjson/cJSON.h>
#include <math.h>
#include <stdlib.h>

static double r3(double v) { return round(v * 1000.0) / 1000.0; }

cJSON *cxr_answer_to_cjson(const cxr_answer *a) {
    if (!a) return NULL;
    cJSON *o = cJSON_CreateObject();
    if (!o) return NULL;
    cJSON_AddStringToObject(o, "question", a->question);
    cJSON_AddStringToObject(o, "language", a->language);
    cJSON_AddStringToObject(o, "intent", a->intent);
    cJSON_AddStringToObject(o, "answer", cxr_decision_name(a->answer));
    cJSON_AddStringToObject(o, "text", a->text);
    cJSON *fa = cJSON_AddArrayToObject(o, "findings");
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        cJSON *j = cJSON_CreateObject();
        cJSON_AddStringToObject(j, "finding", f->finding);
        cJSON_AddStringToObject(j, "display", f->display);
        if (f->code[0]) {
            cJSON_AddStringToObject(j, "code", f->code);
            cJSON_AddStringToObject(j, "code_scheme", "SCT");
        } else {
            cJSON_AddNullToObject(j, "code");
        }
        cxr_json_add_num(j, "probability", f->probability);
        cxr_json_add_num(j, "threshold", f->threshold);
        cxr_json_add_num(j, "uncertain_low", f->uncertain_low);
        cxr_json_add_num(j, "uncertain_high", f->uncertain_high);
        cxr_json_add_num(j, "z", f->z);
        cJSON_AddStringToObject(j, "decision", cxr_decision_name(f->decision));
        cJSON_AddBoolToObject(j, "calibrated", f->calibrated);
        cJSON_AddBoolToObject(j, "in_model", f->in_model);
        cJSON_AddStringToObject(j, "tier", f->tier);
        if (f->side[0]) cJSON_AddStringToObject(j, "side", f->side);
        else cJSON_AddNullToObject(j, "side");
        cxr_json_add_num(j, "left_share", isnan(f->left_share) ? NAN : r3(f->left_share));
        cxr_json_add_num(j, "evidence_concentration", isnan(f->concentration) ? NAN : r3(f->concentration));
        if (!isnan(f->val_auc)) {
            cJSON *v = cJSON_AddObjectToObject(j, "validation_auc");
            cxr_json_add_num(v, "auc", f->val_auc);
            cxr_json_add_num(v, "ci95_low", f->val_auc_lo);
            cxr_json_add_num(v, "ci95_high", f->val_auc_hi);
            cJSON_AddNumberToObject(v, "positives", f->val_pos);
            cJSON_AddNumberToObject(v, "negatives", f->val_neg);
        }
        cJSON_AddItemToArray(fa, j);
    }
    cJSON_AddBoolToObject(o, "refused", a->refused);
    if (a->refused) {
        cJSON_AddStringToObject(o, "reason", a->reason);
        cJSON_AddStringToObject(o, "reason_code", a->reason_code);
    } else {
        cJSON_AddNullToObject(o, "reason");
    }
    if (a->error_code) {
        cJSON_AddStringToObject(o, "error", a->error);
        cJSON_AddStringToObject(o, "code", cxr_strerror(a->error_code));
    }
    cJSON *w = cJSON_AddArrayToObject(o, "warnings");
    for (int i = 0; i < a->n_warnings; i++) cJSON_AddItemToArray(w, cJSON_CreateString(a->warnings[i]));
    cJSON *m = cJSON_AddObjectToObject(o, "model");
    cJSON_AddStringToObject(m, "name", a->model.name);
    cJSON_AddStringToObject(m, "version", a->model.version);
    cJSON_AddStringToObject(m, "sha256", a->model.sha256);
    cJSON_AddStringToObject(m, "prompt_set_version", a->model.prompt_set_version);
    const cxr_meta *mt = &a->meta;
    cJSON_AddStringToObject(o, "sop_instance_uid", mt->sop_uid);
    cJSON_AddStringToObject(o, "study_instance_uid", mt->study_uid);
    cJSON_AddStringToObject(o, "series_instance_uid", mt->series_uid);
    cJSON_AddStringToObject(o, "accession_number", mt->accession_number);
    cJSON_AddStringToObject(o, "patient_id", mt->patient_id);
    cJSON_AddStringToObject(o, "study_date", mt->study_date);
    cJSON *im = cJSON_AddObjectToObject(o, "image");
    cJSON_AddBoolToObject(im, "ingested", a->has_image);
    cJSON_AddStringToObject(im, "modality", mt->modality);
    cJSON_AddStringToObject(im, "transfer_syntax", mt->transfer_syntax);
    cJSON_AddStringToObject(im, "photometric", mt->photometric);
    cJSON_AddStringToObject(im, "view_position", mt->view_position);
    cJSON_AddStringToObject(im, "body_part", mt->body_part);
    cJSON_AddNumberToObject(im, "rows", mt->rows);
    cJSON_AddNumberToObject(im, "columns", mt->cols);
    if (a->has_image) {
        cJSON_AddStringToObject(im, "voi", cxr_voi_name(mt->voi_used));
        cJSON_AddBoolToObject(im, "inverted", mt->inverted);
        cJSON_AddStringToObject(im, "polarity_trusted", mt->polarity_from_content ? "pixels" : "header");
        /* the plane the model read: smaller than rows x columns when decoded at a reduced resolution */
        cJSON_AddNumberToObject(im, "decoded_rows", mt->out_rows);
        cJSON_AddNumberToObject(im, "decoded_columns", mt->out_cols);
        cJSON_AddNumberToObject(im, "decode_reduce", mt->decode_reduce);
    }
    cxr_json_add_num(im, "domain_score", a->domain_score);
    cxr_json_add_num(im, "domain_threshold", a->domain_threshold);
    cxr_json_add_num(im, "domain_distance", a->domain_distance);
    cxr_json_add_num(im, "domain_distance_warn", a->domain_warn);
    cxr_json_add_num(im, "domain_distance_refuse", a->domain_refuse);
    cxr_json_add_num(im, "layout_distance", a->layout_distance);
    cxr_json_add_num(im, "layout_distance_warn", a->layout_warn);
    cxr_json_add_num(im, "layout_distance_refuse", a->layout_refuse);
    cJSON *t = cJSON_AddObjectToObject(o, "timings_ms");
    cJSON_AddNumberToObject(t, "decode", r3(a->decode_ms));
    cJSON_AddNumberToObject(t, "preprocess", r3(a->preprocess_ms));
    cJSON_AddNumberToObject(t, "image_tower", r3(a->image_ms));
    cJSON_AddNumberToObject(t, "scoring", r3(a->score_ms));
    cJSON_AddNumberToObject(t, "heatmap", r3(a->heatmap_ms));
    /* decoded and embedded once for several questions: the first answer's times hold it */
    if (a->image_shared) cJSON_AddBoolToObject(t, "image_shared", 1);
    cJSON_AddNumberToObject(o, "latency_ms", r3(a->total_ms));
    if (a->heatmap_finding[0]) cJSON_AddStringToObject(o, "heatmap_finding", a->heatmap_finding);
    cJSON_AddStringToObject(o, "disclaimer",
                            "Research model trained on small public data; not a diagnostic device. "
                            "An AI result for a radiologist who has the image, unverified until a human verifies it.");
    return o;
}

char *cxr_answer_to_json(const cxr_answer *a) {
    cJSON *o = cxr_answer_to_cjson(a);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}
