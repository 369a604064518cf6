/*
 * vqa_internal.h — what libcxrvqa shares with the cxrvqa executable beyond
 * its public header (internal; not installed).
 */
#ifndef CXR_VQA_INTERNAL_H
#define CXR_VQA_INTERNAL_H

#include "cxr_dicom.h"
#include "cxr_model.h"
#include "cxrvqa.h"

#include <cjson/cJSON.h>

/* The preprocessing spec a model file carries, as ingestion's cxr_preproc.
 * CXR_ERR_FORMAT when the file names a policy or filter we do not have. */
int vqa_preproc_of(const cxr_model_info *in, cxr_preproc *s);

/* The answer as the cJSON tree that cxr_answer_to_json() prints: a caller
 * that adds fields (the SR, the audit row, the worker's attachments) extends
 * this tree in place and prints it once where it leaves the process. Caller
 * owns it (cJSON_Delete); NULL when out of memory. */
cJSON *cxr_answer_to_cjson(const cxr_answer *a);

/* For `cxrvqa validate` (ask.c): the handle's model (its findings and
 * info; owned by v), the assessability limits in force (the caller's, else
 * the model file's, else the defaults) and the tier ask.c's rule gives a
 * model finding with val_pos validation positives and that CI lower bound
 * of its validation AUC: "assessable", "limited" or "not-assessed". */
const cxr_model *vqa_model(const cxr_vqa *v);
cxr_assess_params vqa_assess_limits(const cxr_vqa *v);
const char *vqa_tier(const cxr_vqa *v, int val_pos, float val_auc_lo);

#endif
