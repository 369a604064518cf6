/*
 * ask.c — answering one question about one image: question understanding
 * (question.c) → ingestion and checks (dicom/) → image tower and finding
 * scores (model/) → decisions, sentence, evidence side and heatmap. This file
 * owns the answer policy (refusals, yes/no/uncertain, wording in English and
 * Chinese); it must not print, exit, touch the audit store or write files.
 */
#include "cxrvqa.h"
#include "cxr_model.h"
#include "question.h"
#include "evidence.h"
#include "vqa_internal.h"
#include "wording.h"
#include "cxr_util.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cxr_vqa {
    cxr_model *model;
    const cxr_model_info *info;
    cxr_preproc pp;
    cxr_vqa_params params;
    cxr_assess_params assess; /* resolved: params, else the model file's, else the defaults */
    cxr_model_id id;
    float *tensor, *emb, *tmp_pos, *tmp_neg, *diff;
    float *cells;
};

/* Bounded string copy, truncating; dst and src may overlap. */
static void copy(char *dst, size_t n, const char *src) {
    if (!n) return;
    size_t k = src ? strnlen(src, n - 1) : 0;
    if (k) memmove(dst, src, k);
    dst[k] = '\0';
}

/* ------------------------------------------------------------------ open */

cxr_vqa_params cxr_vqa_params_default(void) {
    cxr_vqa_params p;
    memset(&p, 0, sizeof p);
    p.ingest = cxr_ingest_params_default();
    p.ingest.not_chest = CXR_CHECK_REFUSE;
    p.ingest.lateral = CXR_CHECK_REFUSE;
    p.ingest.small = CXR_CHECK_WARN; /* below the model's own input size: refused (cxr_vqa_open) */
    p.assess.min_positives = -1;
    p.assess.min_auc_lo = p.assess.full_auc_lo = -1;
    p.assess.open_vocab_validated = -1;
    return p;
}

/* The assessability limits in force: what the caller set (>= 0), else the
 * model file's (cxr.assess.*; NaN / -1 when it has none), else the defaults. */
static cxr_assess_params resolve_assess(const cxr_assess_params *set, const cxr_model_info *in) {
    cxr_assess_params a;
    a.min_positives = set->min_positives >= 0 ? set->min_positives
                      : in->assess_min_positives >= 0 ? in->assess_min_positives
                                                       : CXR_ASSESS_MIN_POSITIVES;
    a.min_auc_lo = set->min_auc_lo >= 0 ? set->min_auc_lo
                   : !isnan(in->assess_min_auc_lo) ? in->assess_min_auc_lo
                                                   : CXR_ASSESS_MIN_AUC_LO;
    a.full_auc_lo = set->full_auc_lo >= 0 ? set->full_auc_lo
                    : !isnan(in->assess_full_auc_lo) ? in->assess_full_auc_lo
                                                     : CXR_ASSESS_FULL_AUC_LO;
    a.open_vocab_validated = set->open_vocab_validated >= 0 ? set->open_vocab_validated
                             : in->assess_open_vocab_validated > 0;
    return a;
}

cxr_ask_options cxr_ask_options_default(void) {
    cxr_ask_options o = {.lang = NULL, .heatmap = 0, .heatmap_finding = NULL, .heatmap_size = 512};
    return o;
}

int cxr_file_sha256(const char *path, char hex[65]) { return cxr_sha256_file(path, hex); }

int vqa_preproc_of(const cxr_model_info *in, cxr_preproc *s) {
    *s = cxr_preproc_default();
    s->size = in->pp_size;
    s->channels = in->pp_channels;
    s->scale = in->pp_scale;
    memcpy(s->mean, in->pp_mean, sizeof s->mean);
    memcpy(s->std, in->pp_std, sizeof s->std);
    if (!strcmp(in->pp_policy, "pad")) s->policy = CXR_RESIZE_PAD;
    else if (!strcmp(in->pp_policy, "crop")) s->policy = CXR_RESIZE_CROP;
    else if (!strcmp(in->pp_policy, "stretch")) s->policy = CXR_RESIZE_STRETCH;
    else return CXR_ERR_FORMAT;
    if (!strcmp(in->pp_interp, "bicubic")) s->interp = CXR_INTERP_BICUBIC;
    else if (!strcmp(in->pp_interp, "bilinear")) s->interp = CXR_INTERP_BILINEAR;
    else if (!strcmp(in->pp_interp, "area")) s->interp = CXR_INTERP_AREA;
    else return CXR_ERR_FORMAT;
    char err[64];
    return cxr_preproc_check(s, err, sizeof err) == CXR_OK ? CXR_OK : CXR_ERR_FORMAT;
}

int cxr_vqa_open(const cxr_vqa_params *p, cxr_vqa **out, char *err, size_t errlen) {
    char dummy[8];
    if (!err || !errlen) { err = dummy; errlen = sizeof dummy; }
    err[0] = '\0';
    if (!out || !p || !p->model_path) return CXR_ERR_ARG;
    *out = NULL;
    cxr_vqa *v = calloc(1, sizeof *v);
    if (!v) return CXR_ERR_NOMEM;
    v->params = *p;
    cxr_dicom_warmup(); /* DCMTK's dictionary loads while the model opens */
    cxr_model_params mp = cxr_model_params_default();
    mp.threads = p->threads;
    mp.max_batch = 1;
    int rc = cxr_model_open(p->model_path, &mp, &v->model, err, errlen);
    if (rc != CXR_OK) { free(v); return rc; }
    v->info = cxr_model_get_info(v->model); /* threads 0: the engine's choice (the online cores) */
    if (!v->info->has_vision || (!v->info->has_text && !v->info->classifier) || cxr_model_n_findings(v->model) < 1) {
        snprintf(err, errlen, "%s: the model needs an image tower, findings, and a text tower or a classifier head",
                 p->model_path);
        cxr_vqa_close(v);
        return CXR_ERR_ARG;
    }
    if (vqa_preproc_of(v->info, &v->pp) != CXR_OK) {
        snprintf(err, errlen, "%s: unusable preprocessing spec (%s, %s)", p->model_path, v->info->pp_policy,
                 v->info->pp_interp);
        cxr_vqa_close(v);
        return CXR_ERR_FORMAT;
    }
    /* an image smaller than what the model reads is refused; one between that
       and CXR_SMALL_DIM answered with the small-image check's warning */
    if (v->params.ingest.min_dim < v->pp.size) v->params.ingest.min_dim = v->pp.size;
    copy(v->id.sha256, sizeof v->id.sha256, cxr_model_sha256(v->model)); /* hashed at open, from the mapping */
    copy(v->id.name, sizeof v->id.name, v->info->name);
    copy(v->id.version, sizeof v->id.version, v->info->version);
    copy(v->id.prompt_set_version, sizeof v->id.prompt_set_version, cxr_model_prompt_set_version(v->model));
    v->assess = resolve_assess(&p->assess, v->info);
    int E = v->info->embed_dim, S = v->pp.size, C = v->pp.channels;
    int g = S / (v->info->patch_size > 0 ? v->info->patch_size : S);
    v->tensor = malloc((size_t)C * S * S * sizeof(float));
    v->emb = malloc((size_t)E * sizeof(float));
    v->tmp_pos = malloc((size_t)E * sizeof(float));
    v->tmp_neg = malloc((size_t)E * sizeof(float));
    v->diff = malloc((size_t)E * sizeof(float));
    v->cells = malloc((size_t)(g + 1) * (g + 1) * sizeof(float) + 64 * 64 * sizeof(float));
    if (!v->tensor || !v->emb || !v->tmp_pos || !v->tmp_neg || !v->diff || !v->cells) {
        cxr_vqa_close(v);
        return CXR_ERR_NOMEM;
    }
    *out = v;
    return CXR_OK;
}

void cxr_vqa_close(cxr_vqa *v) {
    if (!v) return;
    cxr_dicom_warmup_wait();
    cxr_model_close(v->model);
    free(v->tensor); free(v->emb); free(v->tmp_pos); free(v->tmp_neg); free(v->diff); free(v->cells);
    free(v);
}

const cxr_model_id *cxr_vqa_model_id(const cxr_vqa *v) { return v ? &v->id : NULL; }

const char *cxr_decision_name(cxr_decision d) {
    switch (d) {
    case CXR_DECISION_YES: return "yes";
    case CXR_DECISION_NO: return "no";
    case CXR_DECISION_UNCERTAIN: return "uncertain";
    case CXR_DECISION_REFUSED: return "refused";
    case CXR_DECISION_NOT_ASSESSED: return "not-assessed";
    default: return "error";
    }
}

void cxr_answer_free(cxr_answer *a) {
    if (!a) return;
    free(a->heatmap_png);
    free(a);
}

/* ------------------------------------------------------------- scoring */

/* Decision from the finding's band: yes above it, no below it. */
static cxr_decision decide(float p, float lo, float hi) {
    if (p > hi) return CXR_DECISION_YES;
    if (p < lo) return CXR_DECISION_NO;
    return CXR_DECISION_UNCERTAIN;
}

/* The finding's tier from its validation evidence (cxr_assess_params): a
 * finding the model cannot assess reliably is never answered yes or no. */
static void assess(const cxr_vqa *v, cxr_answer_finding *f) {
    const cxr_assess_params *ap = &v->assess;
    int ok = f->in_model ? f->val_pos >= ap->min_positives && f->val_auc_lo >= ap->min_auc_lo /* NaN: false */
                         : ap->open_vocab_validated;
    if (!ok) {
        copy(f->tier, sizeof f->tier, "not-assessed");
        f->decision = CXR_DECISION_NOT_ASSESSED;
    } else {
        copy(f->tier, sizeof f->tier, f->in_model && f->val_auc_lo >= ap->full_auc_lo ? "assessable" : "limited");
    }
}

/* Score the model's finding i into f. */
static void score_model_finding(cxr_vqa *v, int i, cxr_answer_finding *f) {
    const cxr_finding *mf = cxr_model_finding(v->model, i);
    float z = 0, p = 0;
    cxr_model_score_finding(v->model, i, v->emb, &z, &p);
    copy(f->finding, sizeof f->finding, mf->name);
    if (!f->display_en[0]) copy(f->display_en, sizeof f->display_en, mf->display);
    if (!f->code[0]) copy(f->code, sizeof f->code, mf->snomed);
    f->z = z;
    f->probability = p;
    f->threshold = mf->threshold;
    f->uncertain_low = mf->uncertain_low;
    f->uncertain_high = mf->uncertain_high;
    f->calibrated = mf->calibrated;
    f->in_model = 1;
    f->val_auc = mf->val_auc;
    f->val_auc_lo = mf->val_auc_lo;
    f->val_auc_hi = mf->val_auc_hi;
    f->val_pos = mf->val_pos;
    f->val_neg = mf->val_neg;
    f->decision = decide(p, mf->uncertain_low, mf->uncertain_high);
    assess(v, f);
}

/* Open vocabulary: the generic prompt pair "X" / "no X", uncalibrated. */
#define OPEN_THRESHOLD 0.5f
#define OPEN_LOW 0.35f
#define OPEN_HIGH 0.65f
static int score_open_finding(cxr_vqa *v, cxr_answer_finding *f) {
    char pos[160], neg[170];
    snprintf(pos, sizeof pos, "%s", f->display_en[0] ? f->display_en : f->finding);
    snprintf(neg, sizeof neg, "no %s", pos);
    int rc = cxr_model_embed_text(v->model, pos, v->tmp_pos);
    if (rc == CXR_OK) rc = cxr_model_embed_text(v->model, neg, v->tmp_neg);
    if (rc != CXR_OK) return rc;
    int E = v->info->embed_dim;
    double d = 0;
    for (int c = 0; c < E; c++) d += (double)v->emb[c] * (v->tmp_pos[c] - v->tmp_neg[c]);
    f->z = (float)(v->info->logit_scale * d);
    f->probability = cxr_zeroshot_prob(v->info->logit_scale, v->emb, v->tmp_pos, v->tmp_neg, E);
    f->threshold = OPEN_THRESHOLD;
    f->uncertain_low = OPEN_LOW;
    f->uncertain_high = OPEN_HIGH;
    f->calibrated = 0;
    f->in_model = 0;
    f->val_auc = f->val_auc_lo = f->val_auc_hi = NAN;
    f->decision = decide(f->probability, OPEN_LOW, OPEN_HIGH);
    assess(v, f);
    return CXR_OK;
}

/* pos − neg direction of a finding, for its evidence map. */
static int finding_direction(cxr_vqa *v, const cxr_answer_finding *f, float *dir) {
    int E = v->info->embed_dim;
    const float *pos, *neg;
    if (f->in_model) {
        int i = cxr_model_find_finding(v->model, f->finding);
        if (i < 0 || cxr_model_finding_prompts(v->model, i, &pos, &neg) != CXR_OK) return CXR_ERR_ARG;
    } else {
        char p1[160], p2[170];
        snprintf(p1, sizeof p1, "%s", f->display_en[0] ? f->display_en : f->finding);
        snprintf(p2, sizeof p2, "no %s", p1);
        if (cxr_model_embed_text(v->model, p1, v->tmp_pos) != CXR_OK ||
            cxr_model_embed_text(v->model, p2, v->tmp_neg) != CXR_OK)
            return CXR_ERR_INTERNAL;
        pos = v->tmp_pos;
        neg = v->tmp_neg;
    }
    for (int c = 0; c < E; c++) dir[c] = pos[c] - neg[c];
    return CXR_OK;
}

/* Evidence map of f (grid² cells) into v->cells: pos − neg patch similarity,
 * or a classifier's class activation map. */
static int evidence_cells(cxr_vqa *v, const cxr_answer_finding *f, int *grid) {
    if (v->info->classifier)
        return f->in_model ? cxr_model_finding_cam(v->model, cxr_model_find_finding(v->model, f->finding), v->cells, grid)
                           : CXR_ERR_ARG;
    if (finding_direction(v, f, v->diff) != CXR_OK) return CXR_ERR_ARG;
    return cxr_model_patch_similarity(v->model, v->diff, v->cells, grid);
}

/* ------------------------------------------------------------ the core */

static int lexicon_to_answer(const cxr_question *q, int k, cxr_answer_finding *f, int zh_lang) {
    const cxr_qfinding *qf = &q->findings[k];
    memset(f, 0, sizeof *f);
    copy(f->finding, sizeof f->finding, qf->name);
    copy(f->display_en, sizeof f->display_en, qf->display_en[0] ? qf->display_en : qf->name);
    copy(f->display, sizeof f->display, zh_lang && qf->display_zh[0] ? qf->display_zh : f->display_en);
    copy(f->code, sizeof f->code, qf->snomed);
    f->left_share = f->concentration = NAN;
    return qf->known;
}

static void fill_display(cxr_answer_finding *f, int zh_lang) {
    if (f->display[0]) return;
    if (zh_lang) {
        /* the lexicon knows the Chinese name of the model's findings */
        for (int i = 0; i < cxr_lexicon_size(); i++) {
            const cxr_qfinding *e = cxr_lexicon_entry(i);
            if (e && !strcmp(e->name, f->finding) && e->display_zh[0]) {
                copy(f->display, sizeof f->display, e->display_zh);
                return;
            }
        }
    }
    copy(f->display, sizeof f->display, f->display_en);
}

/* English display names from the lexicon where it knows the finding (the
 * model's own display strings are terser). */
static void lexicon_display_en(cxr_answer_finding *f) {
    for (int i = 0; i < cxr_lexicon_size(); i++) {
        const cxr_qfinding *e = cxr_lexicon_entry(i);
        if (e && !strcmp(e->name, f->finding)) {
            if (e->display_en[0]) copy(f->display_en, sizeof f->display_en, e->display_en);
            if (!f->code[0]) copy(f->code, sizeof f->code, e->snomed);
            return;
        }
    }
}

static int is_lateral_capable(const char *name) {
    static const char *no_side[] = {"cardiomegaly", "no_finding", "covid19", "hernia", "pulmonary_edema",
                                    "enlarged_cardiomediastinum", "support_devices", "emphysema"};
    for (size_t i = 0; i < sizeof no_side / sizeof no_side[0]; i++)
        if (!strcmp(name, no_side[i])) return 0;
    return 1;
}

static void localise(cxr_vqa *v, cxr_answer_finding *f, const cxr_meta *m) {
    int grid = 0;
    f->left_share = f->concentration = NAN;
    if (!is_lateral_capable(f->finding) || evidence_cells(v, f, &grid) != CXR_OK) return;
    evidence_geometry geo;
    evidence_geometry_init(&geo, m->out_rows, m->out_cols, v->pp.size, (int)v->pp.policy, grid);
    float share = evidence_left_share(v->cells, &geo, &f->concentration);
    f->left_share = share;
    /* a side only for concentrated evidence: spread-out evidence is "not localised" */
    if (isnan(share) || !(f->concentration >= EVIDENCE_MIN_CONCENTRATION)) return;
    copy(f->side, sizeof f->side, share > 0.65f ? "left" : share < 0.35f ? "right" : "bilateral");
}

/* ------------------------------------------------------- the pipeline */

typedef struct {
    const char *path;
    const void *buf;
    size_t len;
} source;

/* One request on its way through the stages. A stage returns NEXT to go on,
 * DONE when the answer is complete early (a refusal), or an error code (the
 * answer carries it). */
enum { NEXT = 1, DONE = 2 };

/* What one image gave, shared by every question asked of it in one call
 * (cxr_vqa_ask_many_*): read, decoded and run through the image tower by
 * the first question's request, judged again by each. */
typedef struct {
    int loaded;         /* the load below has run */
    int load_rc;        /* its result: CXR_OK, a check's refusal code or an error */
    char load_err[CXR_ERRMSG_MAX];
    cxr_meta meta;      /* as the load left it (also when it failed) */
    cxr_image *img;     /* owned; NULL unless load_rc is CXR_OK */
    int embedded;       /* tensor, tower and domain check have run */
    int embed_rc;
    cxr_domain_check dc;
} image_state;

typedef struct {
    cxr_vqa *v;
    cxr_answer *a;
    const source *src;
    cxr_ask_options o;
    cxr_question q;
    image_state *im;
    int zh;
} request;

static int fail(cxr_answer *a, int code) {
    a->error_code = code;
    a->answer = CXR_DECISION_ERROR;
    return code;
}

/* 1. understand: the question, its language and intent */
static int understand(request *r) {
    cxr_answer *a = r->a;
    const char *lang = r->o.lang;
    cxr_question_parse(a->question, lang, &r->q);
    copy(a->language, sizeof a->language, lang && (!strcmp(lang, "en") || !strcmp(lang, "zh")) ? lang : r->q.language);
    if (!a->language[0]) copy(a->language, sizeof a->language, "en");
    r->zh = wording_zh(a);
    copy(a->intent, sizeof a->intent, cxr_intent_name(r->q.intent));
    a->rule_out = r->q.rule_out;
    for (int k = 0; k < r->q.n_findings; k++) a->negated |= r->q.findings[k].negated;
    if (r->q.corrected[0]) answer_warn(a, wording(a, W_WARN_SPELLING), r->q.corrected);
    return NEXT;
}

/* 2. ingest: the image is always read, so that even a refusal names it; an
 * unreadable image is an error, a question or image outside what the model
 * may answer a refusal */
static int ingest(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    char err[CXR_ERRMSG_MAX];
    double t = cxr_now_ms();
    /* decode no more pixels than the tensor (and the overlay) need: the
       overlay's base may be up to 4/3 smaller than the overlay (a 489-px
       level under a 512-px map; the evidence grid is far coarser) */
    image_state *im = r->im;
    if (!im->loaded) {
        cxr_ingest_params ip = v->params.ingest;
        ip.decode_min_short = v->params.full_decode ? 0 : v->pp.size;
        ip.decode_min_long = v->params.full_decode ? 0 : r->o.heatmap ? r->o.heatmap_size * 3 / 4 : 0;
        im->load_rc = r->src->path
                          ? cxr_image_load_file_ex(r->src->path, &ip, &im->img, &im->meta, err, sizeof err)
                          : cxr_image_load_buffer_ex(r->src->buf, r->src->len, &ip, &im->img, &im->meta, err, sizeof err);
        if (im->load_rc == CXR_OK) im->meta = *cxr_image_meta(im->img);
        copy(im->load_err, sizeof im->load_err, err);
        im->loaded = 1;
        a->decode_ms = cxr_now_ms() - t;
    } else {
        a->image_shared = 1;
    }
    int rc = im->load_rc;
    copy(err, sizeof err, im->load_err);
    a->meta = im->meta;
    if (rc == CXR_OK) {
        a->has_image = 1;
        for (int i = 0; i < a->meta.n_warnings; i++) answer_warn_ingest(a, a->meta.warnings[i]);
    }
    int check_refused = rc == CXR_ERR_NOT_CHEST || rc == CXR_ERR_LATERAL || rc == CXR_ERR_TOO_SMALL;
    if (rc != CXR_OK && !check_refused) {
        copy(a->error, sizeof a->error, err);
        answer_say(a, wording(a, W_IMAGE_ERROR), err);
        return fail(a, rc);
    }
    if (r->q.intent == CXR_INTENT_REFUSE) {
        answer_refuse(a, cxr_refusal_name(r->q.refusal),
                      r->q.reason[0] ? r->q.reason : "not a question this system can answer");
        return DONE;
    }
    if (check_refused) {
        char why[CXR_ERRMSG_MAX + 64];
        snprintf(why, sizeof why, wording(a, W_IMAGE_REFUSED), cxr_strerror(rc), err);
        answer_refuse(a, cxr_strerror(rc), why);
        return DONE;
    }
    return NEXT;
}

/* 3. embed: the model tensor, the image tower, and the image-domain checks
 * (FORMAT.md's rule: refused when either distance is past its refuse limit
 * or both are past their warn limits, --strict-domain: either past its warn
 * limit; warned when one is past its warn limit; NaN compares false) */
static int embed(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    image_state *im = r->im;
    /* once per image: v->emb and the model's feature maps then hold it until
       the next image (nothing else runs on v in between) */
    if (!im->embedded) {
        double t = cxr_now_ms();
        int rc = cxr_image_to_tensor(im->img, &v->pp, v->tensor);
        a->preprocess_ms = cxr_now_ms() - t;
        if (rc == CXR_OK) {
            t = cxr_now_ms();
            rc = cxr_model_embed_image(v->model, v->tensor, 1, v->pp.channels, v->pp.size, v->emb);
            a->image_ms = cxr_now_ms() - t;
        }
        /* image 0 of the embed call above: never CXR_ERR_ARG here */
        if (rc == CXR_OK) cxr_model_domain_check(v->model, v->tensor, v->pp.channels, v->pp.size, v->emb, &im->dc);
        im->embed_rc = rc;
        im->embedded = 1;
    }
    if (im->embed_rc != CXR_OK) {
        snprintf(a->error, sizeof a->error, "image tower failed: %s", cxr_strerror(im->embed_rc));
        return fail(a, im->embed_rc);
    }
    const cxr_domain_check dc = im->dc;
    a->domain_score = dc.score;
    a->domain_threshold = dc.score_threshold;
    a->domain_distance = dc.distance;
    a->domain_warn = dc.distance_warn;
    a->domain_refuse = dc.distance_refuse;
    a->layout_distance = dc.layout_distance;
    a->layout_warn = dc.layout_warn;
    a->layout_refuse = dc.layout_refuse;
    int feat_warn = a->domain_distance > a->domain_warn, lay_warn = a->layout_distance > a->layout_warn;
    if (a->domain_distance > a->domain_refuse || a->layout_distance > a->layout_refuse || (feat_warn && lay_warn) ||
        (v->params.strict_domain && (feat_warn || lay_warn))) {
        char why[400], feat[160] = "", lay[160] = "";
        if (!isnan(a->domain_distance))
            snprintf(feat, sizeof feat, wording(a, W_OOD_FEATURES), a->domain_distance, a->domain_warn,
                     a->domain_refuse);
        if (!isnan(a->layout_distance))
            snprintf(lay, sizeof lay, wording(a, W_OOD_LAYOUT), a->layout_distance, a->layout_warn, a->layout_refuse);
        snprintf(why, sizeof why, wording(a, W_OOD_REFUSED), feat, feat[0] && lay[0] ? wording(a, W_OOD_SEP) : "",
                 lay);
        answer_refuse(a, "out-of-domain", why);
        return DONE;
    }
    if (feat_warn)
        answer_warn(a, wording(a, W_WARN_FEATURES), a->domain_distance, a->domain_warn);
    if (lay_warn)
        answer_warn(a, wording(a, W_WARN_LAYOUT), a->layout_distance, a->layout_warn);
    if (!isnan(a->domain_score) && a->domain_score < a->domain_threshold) {
        const char *msg = wording(a, W_PROTOTYPE_UNLIKE);
        if (v->params.strict_domain) {
            char why[256];
            snprintf(why, sizeof why, "%s (domain score %.3f < %.3f)", msg, a->domain_score, a->domain_threshold);
            answer_refuse(a, "out-of-domain", why);
            return DONE;
        }
        answer_warn(a, wording(a, W_WARN_PROTOTYPE), msg, a->domain_score, a->domain_threshold);
    }
    return NEXT;
}

/* every finding of the model (overview; laterality without a finding: the
 * most likely abnormal one that can have a side) */
/* The model's finding i, fresh, with its names from the lexicon (English,
 * and Chinese for a Chinese answer). */
static void score_named_model_finding(request *r, int i, cxr_answer_finding *f) {
    memset(f, 0, sizeof *f);
    f->left_share = f->concentration = NAN;
    score_model_finding(r->v, i, f);
    lexicon_display_en(f);
    fill_display(f, r->zh);
}

static void score_all(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    int n = cxr_model_n_findings(v->model);
    for (int i = 0; i < n && a->n_findings < CXR_ANSWER_MAX_FINDINGS; i++) {
        score_named_model_finding(r, i, &a->findings[a->n_findings++]);
    }
    if (r->q.intent != CXR_INTENT_LATERALITY) return;
    int top = -1;
    for (int i = 0; i < a->n_findings; i++)
        if (strcmp(a->findings[i].finding, "no_finding") && is_lateral_capable(a->findings[i].finding) &&
            (top < 0 || a->findings[i].probability > a->findings[top].probability))
            top = i;
    if (top < 0) top = 0;
    a->findings[0] = a->findings[top];
    a->n_findings = 1;
    answer_warn(a, wording(a, W_WARN_TOP_SIDE), wording_noun(a, &a->findings[0]));
}

/* the findings the question names: the model's own, else open vocabulary
 * (English names only: the text tower reads English) */
static int score_named(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    char missing[256] = "";
    for (int k = 0; k < r->q.n_findings && a->n_findings < CXR_ANSWER_MAX_FINDINGS; k++) {
        cxr_answer_finding *f = &a->findings[a->n_findings];
        int known = lexicon_to_answer(&r->q, k, f, r->zh);
        int i = known ? cxr_model_find_finding(v->model, f->finding) : -1;
        if (i >= 0) {
            score_model_finding(v, i, f);
        } else if (!v->info->has_text) {
            /* a classifier has no open vocabulary: only its own outputs */
            size_t l = strlen(missing);
            snprintf(missing + l, sizeof missing - l, "%s%s", l ? ", " : "", f->display);
            answer_warn(a, wording(a, W_WARN_NOT_IN_MODEL), f->display);
            continue;
        } else {
            int ascii = 1;
            for (const char *c = f->display_en; *c; c++) ascii &= (unsigned char)*c < 0x80;
            if (!ascii) {
                char why[256];
                snprintf(why, sizeof why, wording(a, W_NOT_IN_VOCAB_ZH), f->display_en);
                answer_refuse(a, "not_a_question", why);
                return DONE;
            }
            if (score_open_finding(v, f) != CXR_OK) continue;
            if (f->decision != CXR_DECISION_NOT_ASSESSED) /* else its sentence says so */
                answer_warn(a, wording(a, W_WARN_OPEN_VOCAB), f->display_en);
        }
        a->n_findings++;
    }
    if (a->n_findings == 0 && missing[0]) {
        char why[512];
        snprintf(why, sizeof why, wording(a, W_NOT_IN_MODEL), missing, v->id.name[0] ? v->id.name : "the model");
        answer_refuse(a, "not_in_model", why);
        return DONE;
    }
    return NEXT;
}

/* 4. score the findings, 5. localise the evidence of those not answered no */
static int score(request *r) {
    cxr_answer *a = r->a;
    double t = cxr_now_ms();
    int rc = NEXT;
    if (r->q.intent == CXR_INTENT_OVERVIEW || (r->q.intent == CXR_INTENT_LATERALITY && r->q.n_findings == 0))
        score_all(r);
    else
        rc = score_named(r);
    if (rc == NEXT)
        for (int i = 0; i < a->n_findings; i++) {
            cxr_answer_finding *f = &a->findings[i];
            int answered = f->decision != CXR_DECISION_NOT_ASSESSED;
            if (answered && (f->decision != CXR_DECISION_NO || r->q.intent == CXR_INTENT_LATERALITY))
                localise(r->v, f, &a->meta);
        }
    a->score_ms = cxr_now_ms() - t;
    if (rc == NEXT && a->n_findings == 0) {
        answer_refuse(a, "not_a_question", wording(a, W_NO_FINDING));
        rc = DONE;
    }
    return rc;
}

/* 6. word: decision and sentence, with the caveats that go with them */
static int word(request *r) {
    cxr_answer *a = r->a;
    int any_side = 0;
    for (int i = 0; i < a->n_findings; i++) any_side |= a->findings[i].side[0] != 0;
    if (any_side) {
        if (!a->meta.view_position[0])
            answer_warn(a, "%s", wording(a, W_WARN_NO_VIEW));
        answer_warn(a, "%s", wording(a, W_WARN_LATERALITY));
    }
    answer_word(a, &r->q);
    return NEXT;
}

/* Evidence is drawn only for a finding answered yes or uncertain: a map for
 * a "no" or a finding the model cannot assess would show noise as evidence. */
static int mappable(request *r, const cxr_answer_finding *f) {
    if (f->decision == CXR_DECISION_YES || f->decision == CXR_DECISION_UNCERTAIN) return 1;
    answer_warn(r->a, wording(r->a, W_WARN_HEATMAP_NOT_FOR), wording_noun(r->a, f),
                cxr_decision_name(f->decision));
    return 0;
}

/* The model's finding a heatmap request names: its own name, else any name
 * the question parser maps onto it ("effusion", "积液"). -1 when none. */
static int model_finding_named(const cxr_vqa *v, const char *name) {
    int i = cxr_model_find_finding(v->model, name);
    if (i >= 0) return i;
    char q[192];
    snprintf(q, sizeof q, "Is there %s?", name);
    cxr_question pq;
    if (cxr_question_parse(q, NULL, &pq) != CXR_OK || pq.n_findings != 1 || !pq.findings[0].known) return -1;
    return cxr_model_find_finding(v->model, pq.findings[0].name);
}

/* Which finding the heatmap shows: its index in a->findings, or -2 when it
 * is one the question did not ask about (its cells are then in v->cells
 * already), -1 when none. */
static int heatmap_target(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    const char *want = r->o.heatmap_finding;
    if (!want) {
        int hi = 0;
        if (r->q.intent == CXR_INTENT_OVERVIEW) { /* the most likely abnormal finding that is answered */
            hi = -1;
            for (int i = 0; i < a->n_findings; i++) {
                const cxr_answer_finding *f = &a->findings[i];
                if (strcmp(f->finding, "no_finding") &&
                    (f->decision == CXR_DECISION_YES || f->decision == CXR_DECISION_UNCERTAIN) &&
                    (hi < 0 || f->probability > a->findings[hi].probability))
                    hi = i;
            }
            if (hi < 0) return -1;
        }
        return mappable(r, &a->findings[hi]) ? hi : -1;
    }
    int mi = model_finding_named(v, want);
    for (int i = 0; i < a->n_findings; i++)
        if (!strcmp(a->findings[i].finding, want) ||
            (mi >= 0 && !strcmp(a->findings[i].finding, cxr_model_finding(v->model, mi)->name)))
            return mappable(r, &a->findings[i]) ? i : -1;
    if (mi < 0 || a->n_findings >= CXR_ANSWER_MAX_FINDINGS) { /* not asked about: score it for the map */
        answer_warn(a, wording(a, W_WARN_HEATMAP_UNKNOWN), want);
        return -1;
    }
    cxr_answer_finding tmp;
    score_named_model_finding(r, mi, &tmp);
    if (!mappable(r, &tmp)) return -1;
    copy(a->heatmap_finding, sizeof a->heatmap_finding, tmp.finding);
    int grid;
    return evidence_cells(v, &tmp, &grid) == CXR_OK ? -2 : -1;
}

/* 7. outputs: the evidence heatmap, when asked for */
static int outputs(request *r) {
    cxr_vqa *v = r->v;
    cxr_answer *a = r->a;
    if (!r->o.heatmap) return NEXT;
    double t = cxr_now_ms();
    int hi = heatmap_target(r), grid = 0, ok = 0;
    if (hi >= 0) {
        copy(a->heatmap_finding, sizeof a->heatmap_finding, a->findings[hi].finding);
        ok = evidence_cells(v, &a->findings[hi], &grid) == CXR_OK;
    } else if (hi == -2) {
        ok = 1;
        grid = v->pp.size / v->info->patch_size;
    }
    if (ok) {
        evidence_geometry geo;
        evidence_geometry_init(&geo, a->meta.out_rows, a->meta.out_cols, v->pp.size, (int)v->pp.policy, grid);
        char herr[128];
        const cxr_answer_finding *hf = hi >= 0 ? &a->findings[hi] : NULL;
        if (evidence_overlay_png(cxr_image_pixels(r->im->img), &geo, v->cells, r->o.heatmap_size,
                                 hf ? hf->display_en : a->heatmap_finding, &a->heatmap_png, &a->heatmap_png_len, herr,
                                 sizeof herr) != CXR_OK)
            answer_warn(a, wording(a, W_WARN_HEATMAP_FAILED), herr);
    }
    a->heatmap_ms = cxr_now_ms() - t;
    return NEXT;
}

/* A fresh answer in *out, its check figures NaN until measured (NULL when
 * out is NULL or memory ran out). */
static cxr_answer *new_answer(cxr_answer **out) {
    if (!out) return NULL;
    cxr_answer *a = *out = calloc(1, sizeof *a);
    if (!a) return NULL;
    a->domain_score = a->domain_threshold = NAN;
    a->domain_distance = a->domain_warn = a->domain_refuse = NAN;
    a->layout_distance = a->layout_warn = a->layout_refuse = NAN;
    return a;
}

/* understand -> ingest -> embed + domain checks -> score + localise -> word
 * -> outputs, with one exit; im: the image's shared state (the caller frees
 * its image) */
static int ask_impl(cxr_vqa *v, const source *src, const char *question, const cxr_ask_options *opt,
                    cxr_answer **out, image_state *im) {
    double t0 = cxr_now_ms();
    cxr_answer *a = new_answer(out);
    if (!a) return out ? CXR_ERR_NOMEM : CXR_ERR_ARG;
    request r = {.v = v, .a = a, .src = src, .o = opt ? *opt : cxr_ask_options_default(), .im = im};
    if (r.o.heatmap_size < 64 || r.o.heatmap_size > 4096) r.o.heatmap_size = 512;
    int rc = NEXT;
    if (!v || !question) {
        copy(a->error, sizeof a->error, "no model or no question");
        rc = fail(a, CXR_ERR_ARG);
    } else {
        a->model = v->id;
        copy(a->question, sizeof a->question, question);
        static int (*const stages[])(request *) = {understand, ingest, embed, score, word, outputs};
        for (size_t i = 0; i < sizeof stages / sizeof stages[0] && rc == NEXT; i++) rc = stages[i](&r);
        a->total_ms = cxr_now_ms() - t0;
    }
    return rc == NEXT || rc == DONE ? CXR_OK : rc;
}

/* every question of one call about the source; out[i], rcs[i] (rcs may be NULL) */
static int ask_many(cxr_vqa *v, const source *src, const char *const *questions, int n, const cxr_ask_options *o,
                    cxr_answer **out, int *rcs) {
    if (!out || n < 1) return CXR_ERR_ARG;
    image_state im;
    memset(&im, 0, sizeof im);
    int first = CXR_OK;
    for (int i = 0; i < n; i++) {
        int rc = ask_impl(v, src, questions ? questions[i] : NULL, o, &out[i], &im);
        if (rcs) rcs[i] = rc;
        if (first == CXR_OK) first = rc;
    }
    cxr_image_free(im.img);
    return first;
}

int cxr_vqa_ask_file(cxr_vqa *v, const char *path, const char *question, const cxr_ask_options *o,
                     cxr_answer **out) {
    source s = {.path = path};
    if (!path) {
        if (out) *out = NULL;
        return CXR_ERR_ARG;
    }
    return ask_many(v, &s, &question, 1, o, out, NULL);
}

int cxr_vqa_ask_buffer(cxr_vqa *v, const void *buf, size_t len, const char *question, const cxr_ask_options *o,
                       cxr_answer **out) {
    source s = {.buf = buf, .len = len};
    return ask_many(v, &s, &question, 1, o, out, NULL);
}

int cxr_vqa_ask_many_file(cxr_vqa *v, const char *path, const char *const *questions, int n,
                          const cxr_ask_options *o, cxr_answer **out, int *rcs) {
    source s = {.path = path};
    if (!path || n < 1) {
        for (int i = 0; out && i < n; i++) out[i] = NULL;
        return CXR_ERR_ARG;
    }
    return ask_many(v, &s, questions, n, o, out, rcs);
}

int cxr_vqa_ask_many_buffer(cxr_vqa *v, const void *buf, size_t len, const char *const *questions, int n,
                            const cxr_ask_options *o, cxr_answer **out, int *rcs) {
    source s = {.buf = buf, .len = len};
    return ask_many(v, &s, questions, n, o, out, rcs);
}

/* ------------------------------------------- scoring for site validation */

/* Ingest → embed + domain checks → every model finding scored, with no
 * question: the stages of an ask that decide whether an image is read and
 * what the model makes of it, so that `cxrvqa validate` refuses exactly what
 * `cxrvqa ask` refuses (cxrvqa.h). */
int cxr_vqa_score_file(cxr_vqa *v, const char *path, cxr_answer **out) {
    double t0 = cxr_now_ms();
    cxr_answer *a = new_answer(out);
    if (!a) return out ? CXR_ERR_NOMEM : CXR_ERR_ARG;
    source s = {.path = path};
    image_state im;
    memset(&im, 0, sizeof im);
    request r = {.v = v, .a = a, .src = &s, .o = cxr_ask_options_default(), .im = &im};
    r.q.intent = CXR_INTENT_OVERVIEW;
    copy(a->language, sizeof a->language, "en");
    copy(a->intent, sizeof a->intent, "score");
    int rc = NEXT;
    if (!v || !path) {
        copy(a->error, sizeof a->error, "no model or no file");
        rc = fail(a, CXR_ERR_ARG);
    } else {
        a->model = v->id;
        rc = ingest(&r);
        if (rc == NEXT) rc = embed(&r);
        if (rc == NEXT) {
            double t = cxr_now_ms();
            score_all(&r);
            a->score_ms = cxr_now_ms() - t;
        }
        a->total_ms = cxr_now_ms() - t0;
    }
    cxr_image_free(im.img);
    return rc == NEXT || rc == DONE ? CXR_OK : rc;
}

const cxr_model *vqa_model(const cxr_vqa *v) { return v ? v->model : NULL; }

cxr_assess_params vqa_assess_limits(const cxr_vqa *v) { return v->assess; }

const char *vqa_tier(const cxr_vqa *v, int val_pos, float val_auc_lo) {
    cxr_answer_finding f;
    memset(&f, 0, sizeof f);
    f.in_model = 1;
    f.val_pos = val_pos;
    f.val_auc_lo = val_auc_lo;
    assess(v, &f);
    return !strcmp(f.tier, "assessable") ? "assessable" : !strcmp(f.tier, "limited") ? "limited" : "not-assessed";
}
