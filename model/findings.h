/*
 * findings.h — the finding vocabulary, calibration and domain prototypes a
 * model file carries (internal to model/; loaded by model.c at open).
 */
#ifndef CXR_FINDINGS_H
#define CXR_FINDINGS_H

#include "cxr_model.h"
#include "gguf.h"

typedef struct {
    int n;                 /* findings */
    cxr_finding *f;
    const float *pos, *neg; /* n × E, in the mapping */
    int n_proto;
    const float *proto;    /* n_proto × E */
    float domain_threshold;
    char prompt_set_version[64];
} findings_set;

/* Read the optional findings block. Returns 0 (also when absent) or a
 * CXR_ERR_* code with err naming the key or tensor that is inconsistent. */
/* classifier: K outputs, findings read cxr.findings.output / op_thresh and
 * carry no prompt embeddings (FORMAT.md, "Classifier models"). */
int findings_load(findings_set *fs, const gguf_file *g, int E, int classifier, char *err, size_t errlen);
void findings_free(findings_set *fs);

#endif
