/*
 * findings.c — reads the finding vocabulary (names, display names, SNOMED
 * codes), the precomputed prompt-ensemble embeddings, calibration, operating
 * thresholds, validation figures and the image-domain prototypes from a
 * model file, checking every array against the finding count. Scoring lives
 * in zeroshot.c and domain.c; this file only loads.
 */
#include "findings.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static int f32_arr(const gguf_file *g, const char *key, int n, float *out, int required, char *err, size_t errlen) {
    float *tmp = malloc((size_t)n * sizeof *tmp);
    if (!tmp) return CXR_ERR_NOMEM;
    int r = gguf_get_f32_arr(g, key, tmp, (size_t)n);
    if (r == 0) {
        memcpy(out, tmp, (size_t)n * sizeof *tmp);
    } else if (r == -2 || required) {
        snprintf(err, errlen, "key '%s' must be an f32 array of %d values (one per finding)", key, n);
        free(tmp);
        return r == -1 ? CXR_ERR_MISSING : CXR_ERR_FORMAT;
    }
    free(tmp);
    return CXR_OK;
}

static const float *tensor2(const gguf_file *g, const char *name, int rows, int cols, char *err, size_t errlen,
                            int *rc) {
    const gguf_tensor *t = gguf_find_tensor(g, name);
    if (!t) {
        snprintf(err, errlen, "missing tensor '%s'", name);
        *rc = CXR_ERR_MISSING;
        return NULL;
    }
    if (t->n_dims != 2 || (int64_t)t->dims[1] != rows || (int64_t)t->dims[0] != cols || t->dtype != GGML_F32) {
        snprintf(err, errlen, "tensor '%s' must be F32 of shape (%d, %d)", name, rows, cols);
        *rc = CXR_ERR_SHAPE;
        return NULL;
    }
    return t->data;
}

int findings_load(findings_set *fs, const gguf_file *g, int E, int classifier, char *err, size_t errlen) {
    memset(fs, 0, sizeof *fs);
    fs->domain_threshold = NAN;
    char **names = NULL, *nblob = NULL, **disp = NULL, *dblob = NULL, **sn = NULL, *sblob = NULL;
    uint64_t n = 0, nd = 0, ns = 0;
    int rc = CXR_OK;
    if (gguf_get_str_arr(g, "cxr.findings.names", &names, &nblob, &n) == -1) goto domain; /* no findings */
    if (!names || n < 1 || n > 1024) {
        snprintf(err, errlen, "key 'cxr.findings.names' must be a string array of 1..1024 names");
        rc = CXR_ERR_FORMAT;
        goto out;
    }
    if (gguf_get_str_arr(g, "cxr.findings.display", &disp, &dblob, &nd) || nd != n ||
        gguf_get_str_arr(g, "cxr.findings.snomed", &sn, &sblob, &ns) || ns != n) {
        snprintf(err, errlen, "keys 'cxr.findings.display' and 'cxr.findings.snomed' must hold %llu strings",
                 (unsigned long long)n);
        rc = CXR_ERR_FORMAT;
        goto out;
    }
    fs->n = (int)n;
    fs->f = calloc(n, sizeof *fs->f);
    float *a = malloc(n * 14 * sizeof *a);
    if (!fs->f || !a) {
        free(a);
        rc = CXR_ERR_NOMEM;
        goto out;
    }
    float *cb = a + n, *cal = a + 2 * n, *thr = a + 3 * n, *lo = a + 4 * n, *hi = a + 5 * n, *auc = a + 6 * n,
          *alo = a + 7 * n, *ahi = a + 8 * n, *vp = a + 9 * n, *vn = a + 10 * n, *opt = a + 11 * n;
    uint32_t *outs = (uint32_t *)(a + 12 * n);
    for (uint64_t i = 0; i < n; i++) {
        a[i] = 1; cb[i] = 0; cal[i] = 0; thr[i] = 0.5f; lo[i] = 0.5f; hi[i] = 0.5f;
        auc[i] = alo[i] = ahi[i] = opt[i] = NAN; vp[i] = vn[i] = 0;
        outs[i] = UINT32_MAX;
    }
    struct { const char *key; float *dst; int req; } keys[] = {
        {"cxr.findings.calib_a", a, 1}, {"cxr.findings.calib_b", cb, 1}, {"cxr.findings.calibrated", cal, 1},
        {"cxr.findings.threshold", thr, 1}, {"cxr.findings.uncertain_low", lo, 0},
        {"cxr.findings.uncertain_high", hi, 0}, {"cxr.findings.val_auc", auc, 0},
        {"cxr.findings.val_auc_lo", alo, 0}, {"cxr.findings.val_auc_hi", ahi, 0},
        {"cxr.findings.val_pos", vp, 0}, {"cxr.findings.val_neg", vn, 0},
        {"cxr.findings.op_thresh", opt, 0},
    };
    for (size_t k = 0; k < sizeof keys / sizeof keys[0] && rc == CXR_OK; k++)
        rc = f32_arr(g, keys[k].key, (int)n, keys[k].dst, keys[k].req, err, errlen);
    if (rc == CXR_OK && classifier && gguf_get_u32_arr(g, "cxr.findings.output", outs, n) != (int)n) {
        snprintf(err, errlen, "key 'cxr.findings.output' must be a u32 array of %llu output indices",
                 (unsigned long long)n);
        rc = CXR_ERR_FORMAT;
    }
    for (uint64_t i = 0; i < n && rc == CXR_OK; i++) {
        cxr_finding *f = &fs->f[i];
        snprintf(f->name, sizeof f->name, "%s", names[i]);
        snprintf(f->display, sizeof f->display, "%s", disp[i]);
        snprintf(f->snomed, sizeof f->snomed, "%s", sn[i]);
        f->calib_a = a[i];
        f->calib_b = cb[i];
        f->calibrated = cal[i] > 0.5f;
        f->threshold = thr[i];
        f->uncertain_low = lo[i];
        f->uncertain_high = hi[i];
        f->val_auc = auc[i];
        f->val_auc_lo = alo[i];
        f->val_auc_hi = ahi[i];
        f->val_pos = (int)vp[i];
        f->val_neg = (int)vn[i];
        f->output = classifier ? (int)outs[i] : -1;
        f->op_thresh = classifier ? opt[i] : NAN;
        if (classifier && (outs[i] >= (uint32_t)E || (!isnan(f->op_thresh) && !(f->op_thresh > 0 && f->op_thresh < 1)))) {
            snprintf(err, errlen, "finding '%s': output %u outside 0..%d or op_thresh %g outside (0,1)", f->name,
                     outs[i], E - 1, (double)f->op_thresh);
            rc = CXR_ERR_FORMAT;
        } else if (!isfinite(f->calib_a) || !isfinite(f->calib_b) || !(f->threshold >= 0 && f->threshold <= 1)) {
            snprintf(err, errlen, "finding '%s': calibration or threshold not finite / outside [0,1]", f->name);
            rc = CXR_ERR_FORMAT;
        }
    }
    free(a);
    if (rc != CXR_OK || classifier) goto out;
    fs->pos = tensor2(g, "f.pos_embd", (int)n, E, err, errlen, &rc);
    if (rc == CXR_OK) fs->neg = tensor2(g, "f.neg_embd", (int)n, E, err, errlen, &rc);
    if (rc != CXR_OK) goto out;
    gguf_get_str(g, "cxr.findings.prompt_set_version", fs->prompt_set_version, sizeof fs->prompt_set_version);
domain:;
    const gguf_tensor *t = gguf_find_tensor(g, "d.prototypes");
    if (t) {
        if (t->n_dims != 2 || (int64_t)t->dims[0] != E || t->dims[1] < 1 || t->dims[1] > 65536 ||
            t->dtype != GGML_F32) {
            snprintf(err, errlen, "tensor 'd.prototypes' must be F32 of shape (K, %d)", E);
            rc = CXR_ERR_SHAPE;
            goto out;
        }
        fs->n_proto = (int)t->dims[1];
        fs->proto = t->data;
        if (gguf_get_f32(g, "cxr.domain.threshold", &fs->domain_threshold) != 0) {
            snprintf(err, errlen, "missing key 'cxr.domain.threshold' (d.prototypes present)");
            rc = CXR_ERR_MISSING;
        }
    }
out:
    free(names); free(nblob); free(disp); free(dblob); free(sn); free(sblob);
    if (rc != CXR_OK) findings_free(fs);
    return rc;
}

void findings_free(findings_set *fs) {
    if (!fs) return;
    free(fs->f);
    memset(fs, 0, sizeof *fs);
}
