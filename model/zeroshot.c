/*
 * zeroshot.c — zero-shot scoring: the two-prompt softmax, prompt ensembles,
 * and the API over the finding vocabulary the file carries (findings.c loads
 * it): lookup, calibrated scores, prompt embeddings. Pure arithmetic on
 * embeddings; it must not run a tower or change the model.
 */
#include "model_internal.h"
#include "kernels.h"

#include <math.h>
#include <string.h>

float cxr_zeroshot_prob(float logit_scale, const float *img, const float *pos, const float *neg, int dim) {
    double sp = 0, sn = 0;
    for (int i = 0; i < dim; i++) {
        sp += (double)img[i] * pos[i];
        sn += (double)img[i] * neg[i];
    }
    double d = logit_scale * (sn - sp);
    return (float)(1.0 / (1.0 + exp(d)));
}

void cxr_prompt_ensemble(const float *embs, int n, int dim, float *out) {
    for (int c = 0; c < dim; c++) out[c] = 0;
    for (int i = 0; i < n; i++) {
        const float *e = embs + (int64_t)i * dim;
        double s = 0;
        for (int c = 0; c < dim; c++) s += (double)e[c] * e[c];
        float inv = s > 0 ? (float)(1.0 / sqrt(s)) : 0.0f;
        for (int c = 0; c < dim; c++) out[c] += e[c] * inv;
    }
    l2norm_forward(out, dim);
}

/* ------------------------------------------------------------ findings */

int cxr_model_n_findings(const cxr_model *m) { return m ? m->fs.n : 0; }

const cxr_finding *cxr_model_finding(const cxr_model *m, int i) {
    return m && i >= 0 && i < m->fs.n ? &m->fs.f[i] : NULL;
}

int cxr_model_find_finding(const cxr_model *m, const char *name) {
    if (!m || !name) return -1;
    for (int i = 0; i < m->fs.n; i++)
        if (!strcmp(m->fs.f[i].name, name)) return i;
    return -1;
}

const char *cxr_model_prompt_set_version(const cxr_model *m) { return m ? m->fs.prompt_set_version : ""; }

/* Classifier outputs: z is the raw logit; p the Platt probability, or
 * torchxrayvision's operating-point normalisation of σ(z) (FORMAT.md). */
static void score_output(const cxr_finding *f, double zz, float *p) {
    if (isnan(f->op_thresh)) {
        *p = (float)(1.0 / (1.0 + exp(-(f->calib_a * zz + f->calib_b))));
        return;
    }
    double s = 1.0 / (1.0 + exp(-zz)), t = f->op_thresh;
    *p = (float)(s < t ? s / (2.0 * t) : 1.0 - (1.0 - s) / (2.0 * (1.0 - t)));
}

int cxr_model_score_finding(const cxr_model *m, int i, const float *img, float *z, float *p) {
    if (!m || !img || i < 0 || i >= m->fs.n) return CXR_ERR_ARG;
    if (m->is_classifier) {
        double zz = img[m->fs.f[i].output];
        float pp;
        score_output(&m->fs.f[i], zz, &pp);
        if (z) *z = (float)zz;
        if (p) *p = pp;
        return CXR_OK;
    }
    int E = m->info.embed_dim;
    const float *pos = m->fs.pos + (int64_t)i * E, *neg = m->fs.neg + (int64_t)i * E;
    double d = 0;
    for (int c = 0; c < E; c++) d += (double)img[c] * (pos[c] - neg[c]);
    double zz = m->info.logit_scale * d;
    const cxr_finding *f = &m->fs.f[i];
    if (z) *z = (float)zz;
    if (p) *p = (float)(1.0 / (1.0 + exp(-(f->calib_a * zz + f->calib_b))));
    return CXR_OK;
}

int cxr_model_finding_prompts(const cxr_model *m, int i, const float **pos, const float **neg) {
    if (!m || !pos || !neg || i < 0 || i >= m->fs.n || m->is_classifier) return CXR_ERR_ARG;
    *pos = m->fs.pos + (int64_t)i * m->info.embed_dim;
    *neg = m->fs.neg + (int64_t)i * m->info.embed_dim;
    return CXR_OK;
}
