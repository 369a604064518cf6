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

#endif
