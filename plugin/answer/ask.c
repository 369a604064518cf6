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

#include <math.h>
#include <openssl/evp.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

struct cxr_vqa {
    cxr_model *model;
    const cxr_model_info *info;
    cxr_preproc pp;
    cxr_vqa_params params;
    cxr_model_id id;
    float *tensor, *emb, *tmp_pos, *tmp_neg, *diff;
    float *cells;
};

static double now_ms(void) {
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return ts.tv_sec * 1e3 + ts.tv_nsec / 1e6;
}

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
    p.ingest.small = CXR_CHECK_REFUSE;
    return p;
}

cxr_ask_options cxr_ask_options_default(void) {
    cxr_ask_options o = {.lang = NULL, .heatmap = 0, .heatmap_finding = NULL, .heatmap_size = 512};
    return o;
}

int cxr_file_sha256(const char *path, char hex[65]) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return CXR_ERR_IO;
    EVP_MD_CTX *ctx = EVP_MD_CTX_new();
    int rc = CXR_ERR_NOMEM;
    unsigned char *buf = malloc(1 << 20);
    if (ctx && buf && EVP_DigestInit_ex(ctx, EVP_sha256(), NULL) == 1) {
        size_t n;
        rc = CXR_OK;
        while ((n = fread(buf, 1, 1 << 20, fp)) > 0)
            if (EVP_DigestUpdate(ctx, buf, n) != 1) { rc = CXR_ERR_INTERNAL; break; }
        if (ferror(fp)) rc = CXR_ERR_IO;
        unsigned char md[32];
        unsigned int len = 0;
        if (rc == CXR_OK && EVP_DigestFinal_ex(ctx, md, &len) == 1 && len == 32) {
            for (int i = 0; i < 32; i++) snprintf(hex + 2 * i, 3, "%02x", md[i]);
        } else if (rc == CXR_OK) {
            rc = CXR_ERR_INTERNAL;
        }
    }
    free(buf);
    EVP_MD_CTX_free(ctx);
    fclose(fp);
    return rc;
}

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
    cxr_model_params mp = cxr_model_params_default();
    mp.threads = p->threads;
    mp.max_batch = 1;
    int rc = cxr_model_open(p->model_path, &mp, &v->model, err, errlen);
    if (rc != CXR_OK) { free(v); return rc; }
    v->info = cxr_model_get_info(v->model); /* threads 0: the engine's choice (1 for a CNN tower) */
    if (!v->info->has_vision || !v->info->has_text || cxr_model_n_findings(v->model) < 1) {
        snprintf(err, errlen, "%s: the model needs an image tower, a text tower and findings", p->model_path);
        cxr_vqa_close(v);
        return CXR_ERR_ARG;
    }
    if (vqa_preproc_of(v->info, &v->pp) != CXR_OK) {
        snprintf(err, errlen, "%s: unusable preprocessing spec (%s, %s)", p->model_path, v->info->pp_policy,
                 v->info->pp_interp);
        cxr_vqa_close(v);
        return CXR_ERR_FORMAT;
    }
    copy(v->id.sha256, sizeof v->id.sha256, cxr_model_sha256(v->model)); /* hashed at open, from the mapping */
    copy(v->id.name, sizeof v->id.name, v->info->name);
    copy(v->id.version, sizeof v->id.version, v->info->version);
    copy(v->id.prompt_set_version, sizeof v->id.prompt_set_version, cxr_model_prompt_set_version(v->model));
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
    default: return "error";
    }
}

void cxr_answer_free(cxr_answer *a) {
    if (!a) return;
    free(a->heatmap_png);
    free(a);
}

/* -------------------------------------------------------------- wording */

static int zh(const cxr_answer *a) { return !strcmp(a->language, "zh"); }

static void warnf(cxr_answer *a, const char *fmt, ...) {
    if (a->n_warnings >= CXR_ANSWER_MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->warnings[a->n_warnings++], sizeof a->warnings[0], fmt, ap);
    va_end(ap);
}

/* append to a->text */
static void say(cxr_answer *a, const char *fmt, ...) {
    size_t n = strlen(a->text);
    if (n + 1 >= sizeof a->text) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->text + n, sizeof a->text - n, fmt, ap);
    va_end(ap);
}

/* English noun phrase with its article where the finding is countable. */
static void en_phrase(const cxr_answer_finding *f, char *out, size_t n) {
    static const char *countable[] = {"pleural_effusion", "pneumothorax", "nodule", "mass", "hernia",
                                      "fracture", "lung_lesion"};
    int art = 0;
    for (size_t i = 0; i < sizeof countable / sizeof countable[0]; i++)
        if (!strcmp(f->finding, countable[i])) art = 1;
    if (!f->in_model && !f->code[0] && strchr(f->finding, ' ') == NULL) art = 0;
    if (!strcmp(f->finding, "no_finding")) { snprintf(out, n, "a normal study (no finding)"); return; }
    if (art) {
        const char *d = f->display_en;
        int vowel = strchr("aeiouAEIOU", d[0]) != NULL && d[0];
        snprintf(out, n, "%s %s", vowel ? "an" : "a", d);
    } else {
        snprintf(out, n, "%s", f->display_en);
    }
}

static const char *side_zh(const char *s) {
    if (!strcmp(s, "left")) return "左侧";
    if (!strcmp(s, "right")) return "右侧";
    if (!strcmp(s, "bilateral")) return "双侧";
    return "";
}

static void fmt_numbers(const cxr_answer *a, const cxr_answer_finding *f, char *out, size_t n) {
    if (zh(a))
        snprintf(out, n, "概率 %.2f；阈值 %.2f%s", f->probability, f->threshold, f->calibrated ? "" : "；未校准");
    else
        snprintf(out, n, "probability %.2f; threshold %.2f%s", f->probability, f->threshold,
                 f->calibrated ? "" : "; uncalibrated");
}

static void sentence_single(cxr_answer *a, const cxr_answer_finding *f) {
    char nums[128], ph[160];
    fmt_numbers(a, f, nums, sizeof nums);
    en_phrase(f, ph, sizeof ph);
    if (zh(a)) {
        switch (f->decision) {
        case CXR_DECISION_YES: say(a, "是 — 很可能存在%s（%s）。", f->display, nums); break;
        case CXR_DECISION_NO: say(a, "否 — 不太可能存在%s（%s）。", f->display, nums); break;
        default: say(a, "不确定 — %s的证据不明确（%s；不确定区间 %.2f–%.2f）。", f->display, nums,
                     f->uncertain_low, f->uncertain_high);
        }
    } else {
        switch (f->decision) {
        case CXR_DECISION_YES: say(a, "Yes — %s is likely (%s).", ph, nums); break;
        case CXR_DECISION_NO: say(a, "No — %s is unlikely (%s).", ph, nums); break;
        default: say(a, "Uncertain — the evidence for %s is equivocal (%s; uncertain between %.2f and %.2f).", ph,
                     nums, f->uncertain_low, f->uncertain_high);
        }
    }
}

/* ------------------------------------------------------------- scoring */

/* Decision from the finding's band: yes above it, no below it. */
static cxr_decision decide(float p, float lo, float hi) {
    if (p > hi) return CXR_DECISION_YES;
    if (p < lo) return CXR_DECISION_NO;
    return CXR_DECISION_UNCERTAIN;
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
    f->decision = decide(p, mf->uncertain_low, mf->uncertain_high);
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

/* Evidence map of f (grid² cells, pos − neg patch similarity) into v->cells. */
static int evidence_cells(cxr_vqa *v, const cxr_answer_finding *f, int *grid) {
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
    f->left_share = NAN;
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

static void refuse(cxr_answer *a, const char *code, const char *reason) {
    a->refused = 1;
    a->answer = CXR_DECISION_REFUSED;
    copy(a->reason_code, sizeof a->reason_code, code);
    copy(a->reason, sizeof a->reason, reason);
    a->text[0] = '\0';
    /* the question parser's reasons may already say so */
    if (!strncmp(reason, "Refused", 7) || !strncmp(reason, "拒绝", strlen("拒绝"))) say(a, "%s", reason);
    else if (zh(a)) say(a, "拒绝回答 — %s", reason);
    else say(a, "Refused — %s", reason);
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
    f->left_share = NAN;
    if (!is_lateral_capable(f->finding) || evidence_cells(v, f, &grid) != CXR_OK) return;
    evidence_geometry geo;
    evidence_geometry_init(&geo, m->out_rows, m->out_cols, v->pp.size, (int)v->pp.policy, grid);
    float share = evidence_left_share(v->cells, &geo);
    f->left_share = share;
    if (isnan(share)) return;
    copy(f->side, sizeof f->side, share > 0.65f ? "left" : share < 0.35f ? "right" : "bilateral");
}

static void build_text(cxr_answer *a, const cxr_question *q) {
    a->text[0] = '\0';
    int z = zh(a);
    if (q->intent == CXR_INTENT_PRESENCE || (q->intent == CXR_INTENT_LATERALITY && a->n_findings == 1 &&
                                              a->findings[0].decision != CXR_DECISION_YES)) {
        const cxr_answer_finding *f = &a->findings[0];
        a->answer = f->decision;
        sentence_single(a, f);
        if (q->intent == CXR_INTENT_LATERALITY)
            say(a, z ? " 因此无法给出侧别。" : " No side can be given.");
        else if (q->findings[0].negated)
            say(a, z ? (f->decision == CXR_DECISION_NO ? " 您问的是是否没有该发现：模型同意。"
                                                    : " 您问的是是否没有该发现：模型不能确认。")
                     : (f->decision == CXR_DECISION_NO ? " You asked whether there is none: the model agrees."
                                                      : " You asked whether there is none: the model does not confirm that."));
        if (q->rule_out && f->decision != CXR_DECISION_YES)
            say(a, z ? " 研究模型不能单独排除任何发现。" : " A research model cannot rule a finding out on its own.");
        if (f->decision == CXR_DECISION_YES && f->side[0] && strcmp(f->side, "bilateral") && q->intent != CXR_INTENT_LATERALITY) {
            if (z) say(a, " 证据主要位于患者%s。", side_zh(f->side));
            else say(a, " The evidence lies mainly on the patient's %s.", f->side);
        }
        return;
    }
    if (q->intent == CXR_INTENT_LATERALITY) {
        const cxr_answer_finding *f = &a->findings[0];
        a->answer = f->decision;
        char nums[128];
        fmt_numbers(a, f, nums, sizeof nums);
        if (!f->side[0]) {
            if (z) say(a, "%s可能存在（%s），但证据图无法确定侧别。", f->display, nums);
            else say(a, "%s is likely (%s), but the evidence map does not show a side.", f->display_en, nums);
        } else if (z) {
            say(a, "%s — %s的证据主要位于患者%s（左侧占 %.0f%%；%s）。", side_zh(f->side), f->display,
                side_zh(f->side), 100.0 * f->left_share, nums);
        } else {
            char side[16];
            copy(side, sizeof side, f->side);
            side[0] = (char)(side[0] - 32);
            say(a, "%s — the evidence for %s lies mainly on the patient's %s (%.0f%% of it on the left; %s).", side,
                f->display_en, !strcmp(f->side, "bilateral") ? "both sides" : f->side, 100.0 * f->left_share, nums);
        }
        return;
    }
    /* multi and overview: list what is likely, uncertain, unlikely */
    int yes = 0, unc = 0;
    int abnormal_only = q->intent == CXR_INTENT_OVERVIEW;
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        if (abnormal_only && !strcmp(f->finding, "no_finding")) continue;
        if (f->decision == CXR_DECISION_YES) yes++;
        else if (f->decision == CXR_DECISION_UNCERTAIN) unc++;
    }
    cxr_decision overall = yes ? CXR_DECISION_YES : unc ? CXR_DECISION_UNCERTAIN : CXR_DECISION_NO;
    if (q->intent == CXR_INTENT_OVERVIEW && q->overview_normal) {
        /* "is this normal?": yes means normal */
        a->answer = overall == CXR_DECISION_YES ? CXR_DECISION_NO : overall == CXR_DECISION_NO ? CXR_DECISION_YES
                                                                                              : CXR_DECISION_UNCERTAIN;
        if (z) say(a, "%s", a->answer == CXR_DECISION_YES ? "是 — 模型词汇表中的异常均不太可能存在。"
                            : a->answer == CXR_DECISION_NO ? "否 — 并非正常：" : "不确定 — ");
        else say(a, "%s", a->answer == CXR_DECISION_YES ? "Yes — no abnormality in the model's vocabulary is likely."
                          : a->answer == CXR_DECISION_NO ? "No — not normal: " : "Uncertain — ");
    } else {
        a->answer = overall;
        if (z) say(a, "%s", overall == CXR_DECISION_YES ? "是 — " : overall == CXR_DECISION_NO ? "否 — " : "不确定 — ");
        else say(a, "%s", overall == CXR_DECISION_YES ? "Yes — " : overall == CXR_DECISION_NO ? "No — " : "Uncertain — ");
    }
    int listed = 0;
    for (int pass = 0; pass < 3; pass++) {
        cxr_decision want = pass == 0 ? CXR_DECISION_YES : pass == 1 ? CXR_DECISION_UNCERTAIN : CXR_DECISION_NO;
        if (pass == 2 && q->intent == CXR_INTENT_OVERVIEW) break; /* overview: the unlikely ones stay in the list */
        int first = 1;
        for (int i = 0; i < a->n_findings; i++) {
            const cxr_answer_finding *f = &a->findings[i];
            if (f->decision != want || (abnormal_only && !strcmp(f->finding, "no_finding"))) continue;
            if (first) {
                if (listed) say(a, z ? "；" : "; ");
                say(a, "%s", z ? (pass == 0 ? "可能存在：" : pass == 1 ? "不确定：" : "不太可能：")
                               : (pass == 0 ? "likely: " : pass == 1 ? "uncertain: " : "unlikely: "));
            } else {
                say(a, z ? "、" : ", ");
            }
            first = 0;
            listed++;
            say(a, "%s (%.2f%s%s)", z ? f->display : f->display_en, f->probability,
                f->side[0] && f->decision == CXR_DECISION_YES ? (z ? "，" : ", ") : "",
                f->side[0] && f->decision == CXR_DECISION_YES ? (z ? side_zh(f->side) : f->side) : "");
        }
    }
    if (q->intent == CXR_INTENT_OVERVIEW && !yes && !unc) {
        int top = -1;
        for (int i = 0; i < a->n_findings; i++)
            if (strcmp(a->findings[i].finding, "no_finding") &&
                (top < 0 || a->findings[i].probability > a->findings[top].probability))
                top = i;
        if (top >= 0) {
            if (z) say(a, "无可能存在的异常（最高：%s %.2f）", a->findings[top].display, a->findings[top].probability);
            else if (!q->overview_normal || a->answer != CXR_DECISION_YES)
                say(a, "no abnormality in the model's vocabulary is likely (highest: %s %.2f)",
                    a->findings[top].display_en, a->findings[top].probability);
            else
                say(a, " (highest: %s %.2f)", a->findings[top].display_en, a->findings[top].probability);
        }
    }
    say(a, z ? "。" : ".");
}

typedef struct {
    const char *path;
    const void *buf;
    size_t len;
} source;

static int ask_impl(cxr_vqa *v, const source *src, const char *question, const cxr_ask_options *opt,
                    cxr_answer **out) {
    double t0 = now_ms();
    if (!out) return CXR_ERR_ARG;
    *out = NULL;
    cxr_answer *a = calloc(1, sizeof *a);
    if (!a) return CXR_ERR_NOMEM;
    *out = a;
    a->domain_score = a->domain_threshold = NAN;
    a->domain_distance = a->domain_warn = a->domain_refuse = NAN;
    a->layout_distance = a->layout_warn = a->layout_refuse = NAN;
    cxr_ask_options o = opt ? *opt : cxr_ask_options_default();
    if (o.heatmap_size < 64 || o.heatmap_size > 4096) o.heatmap_size = 512;
    if (!v || !question) {
        a->error_code = CXR_ERR_ARG;
        copy(a->error, sizeof a->error, "no model or no question");
        a->answer = CXR_DECISION_ERROR;
        return CXR_ERR_ARG;
    }
    a->model = v->id;
    copy(a->question, sizeof a->question, question);

    /* 1. the question */
    cxr_question q;
    cxr_question_parse(question, o.lang, &q);
    copy(a->language, sizeof a->language, o.lang && (!strcmp(o.lang, "en") || !strcmp(o.lang, "zh")) ? o.lang : q.language);
    if (!a->language[0]) copy(a->language, sizeof a->language, "en");
    copy(a->intent, sizeof a->intent, cxr_intent_name(q.intent));
    a->rule_out = q.rule_out;
    for (int k = 0; k < q.n_findings; k++) a->negated |= q.findings[k].negated;
    if (q.corrected[0]) warnf(a, "spelling corrected: %s", q.corrected);

    /* 2. the image (always read, so that even a refusal names its image) */
    cxr_image *img = NULL;
    char err[CXR_ERRMSG_MAX];
    double t1 = now_ms();
    int rc = src->path ? cxr_image_load_file_ex(src->path, &v->params.ingest, &img, &a->meta, err, sizeof err)
                       : cxr_image_load_buffer_ex(src->buf, src->len, &v->params.ingest, &img, &a->meta, err,
                                                  sizeof err);
    a->decode_ms = now_ms() - t1;
    if (rc == CXR_OK) {
        a->meta = *cxr_image_meta(img);
        a->has_image = 1;
        for (int i = 0; i < a->meta.n_warnings; i++) warnf(a, "%s", a->meta.warnings[i]);
    }
    if (rc != CXR_OK && rc != CXR_ERR_NOT_CHEST && rc != CXR_ERR_LATERAL && rc != CXR_ERR_TOO_SMALL) {
        a->error_code = rc;
        copy(a->error, sizeof a->error, err);
        a->answer = CXR_DECISION_ERROR;
        if (zh(a)) say(a, "错误 — 无法读取图像：%s", err);
        else say(a, "Error — the image cannot be used: %s", err);
        a->total_ms = now_ms() - t0;
        return rc;
    }
    if (q.intent == CXR_INTENT_REFUSE) {
        refuse(a, cxr_refusal_name(q.refusal), q.reason[0] ? q.reason : "not a question this system can answer");
        cxr_image_free(img);
        a->total_ms = now_ms() - t0;
        return CXR_OK;
    }
    if (rc != CXR_OK) { /* image checks refused it */
        char why[CXR_ERRMSG_MAX + 64];
        if (zh(a))
            snprintf(why, sizeof why, "图像不适合本模型（%s）：%s", cxr_strerror(rc), err);
        else
            snprintf(why, sizeof why, "the image is not one this model may read (%s): %s", cxr_strerror(rc), err);
        refuse(a, cxr_strerror(rc), why);
        a->total_ms = now_ms() - t0;
        return CXR_OK;
    }

    /* 3. the image tower */
    t1 = now_ms();
    rc = cxr_image_to_tensor(img, &v->pp, v->tensor);
    a->preprocess_ms = now_ms() - t1;
    if (rc == CXR_OK) {
        t1 = now_ms();
        rc = cxr_model_embed_image(v->model, v->tensor, 1, v->pp.channels, v->pp.size, v->emb);
        a->image_ms = now_ms() - t1;
    }
    if (rc != CXR_OK) {
        a->error_code = rc;
        snprintf(a->error, sizeof a->error, "image tower failed: %s", cxr_strerror(rc));
        a->answer = CXR_DECISION_ERROR;
        cxr_image_free(img);
        a->total_ms = now_ms() - t0;
        return rc;
    }
    cxr_domain_check dc; /* image 0 of the embed call above: never CXR_ERR_ARG here */
    cxr_model_domain_check(v->model, v->tensor, v->pp.channels, v->pp.size, v->emb, &dc);
    a->domain_score = dc.score;
    a->domain_threshold = dc.score_threshold;
    a->domain_distance = dc.distance;
    a->domain_warn = dc.distance_warn;
    a->domain_refuse = dc.distance_refuse;
    a->layout_distance = dc.layout_distance;
    a->layout_warn = dc.layout_warn;
    a->layout_refuse = dc.layout_refuse;
    /* FORMAT.md's rule: refused when either check is past its refuse limit or
     * both are past their warn limits (--strict-domain: either past its warn
     * limit); warned when one is past its warn limit. NaN compares false. */
    int feat_warn = a->domain_distance > a->domain_warn, lay_warn = a->layout_distance > a->layout_warn;
    int out_of_domain = a->domain_distance > a->domain_refuse || a->layout_distance > a->layout_refuse ||
                        (feat_warn && lay_warn) || (v->params.strict_domain && (feat_warn || lay_warn));
    if (out_of_domain) {
        char why[400], feat[160] = "", lay[160] = "";
        if (!isnan(a->domain_distance))
            snprintf(feat, sizeof feat,
                     zh(a) ? "特征 %.0f，警告限值 %.0f，拒绝限值 %.0f" : "features %.0f, warn above %.0f, refuse above %.0f",
                     a->domain_distance, a->domain_warn, a->domain_refuse);
        if (!isnan(a->layout_distance))
            snprintf(lay, sizeof lay,
                     zh(a) ? "整体布局 %.0f，警告限值 %.0f，拒绝限值 %.0f" : "layout %.0f, warn above %.0f, refuse above %.0f",
                     a->layout_distance, a->layout_warn, a->layout_refuse);
        snprintf(why, sizeof why,
                 zh(a) ? "图像内容不像胸片（与训练图像的距离：%s%s%s）；头信息可能有误"
                       : "the image does not look like a chest radiograph (distance to the training images: %s%s%s); "
                         "its header may be wrong",
                 feat, feat[0] && lay[0] ? (zh(a) ? "；" : "; ") : "", lay);
        refuse(a, "out-of-domain", why);
        cxr_image_free(img);
        a->total_ms = now_ms() - t0;
        return CXR_OK;
    }
    if (feat_warn)
        warnf(a, "image-domain check: the image is unlike the training images (distance %.0f above %.0f; 0.5%% of "
                 "validation chest radiographs are); it may not be a frontal chest radiograph: read the answer with "
                 "extra caution",
              a->domain_distance, a->domain_warn);
    if (lay_warn)
        warnf(a, "image-domain check: the image's layout is unlike the training images' (distance %.0f above %.0f; "
                 "0.5%% of validation chests are); it may not be a frontal chest radiograph, or is framed unusually: "
                 "read the answer with extra caution",
              a->layout_distance, a->layout_warn);
    if (!isnan(a->domain_score) && a->domain_score < a->domain_threshold) {
        const char *msg = zh(a) ? "该图像与模型训练所用的胸片不相似" : "the image looks unlike the chest radiographs the model was trained on";
        if (v->params.strict_domain) {
            char why[256];
            snprintf(why, sizeof why, "%s (domain score %.3f < %.3f)", msg, a->domain_score, a->domain_threshold);
            refuse(a, "out-of-domain", why);
            cxr_image_free(img);
            a->total_ms = now_ms() - t0;
            return CXR_OK;
        }
        warnf(a, "image-domain check: %s (score %.3f below %.3f); read the answer with extra caution", msg,
              a->domain_score, a->domain_threshold);
    }

    /* 4. findings */
    t1 = now_ms();
    int zl = zh(a);
    if (q.intent == CXR_INTENT_OVERVIEW ||
        (q.intent == CXR_INTENT_LATERALITY && q.n_findings == 0)) {
        int n = cxr_model_n_findings(v->model);
        for (int i = 0; i < n && a->n_findings < CXR_ANSWER_MAX_FINDINGS; i++) {
            cxr_answer_finding *f = &a->findings[a->n_findings++];
            memset(f, 0, sizeof *f);
            f->left_share = NAN;
            score_model_finding(v, i, f);
            lexicon_display_en(f);
            fill_display(f, zl);
        }
        if (q.intent == CXR_INTENT_LATERALITY) { /* the side of the most likely abnormal finding */
            int top = -1;
            for (int i = 0; i < a->n_findings; i++)
                if (strcmp(a->findings[i].finding, "no_finding") && is_lateral_capable(a->findings[i].finding) &&
                    (top < 0 || a->findings[i].probability > a->findings[top].probability))
                    top = i;
            if (top < 0) top = 0;
            a->findings[0] = a->findings[top];
            a->n_findings = 1;
            warnf(a, "the question names no finding: the side of the most likely one (%s) is given",
                  a->findings[0].display_en);
        }
    } else {
        for (int k = 0; k < q.n_findings && a->n_findings < CXR_ANSWER_MAX_FINDINGS; k++) {
            cxr_answer_finding *f = &a->findings[a->n_findings];
            int known = lexicon_to_answer(&q, k, f, zl);
            int i = known ? cxr_model_find_finding(v->model, f->finding) : -1;
            if (i >= 0) {
                score_model_finding(v, i, f);
            } else {
                int ascii = 1;
                for (const char *c = f->display_en; *c; c++) ascii &= (unsigned char)*c < 0x80;
                if (!ascii) { /* the text tower reads English only */
                    char why[256];
                    snprintf(why, sizeof why, zl ? "“%.96s”不在模型的发现词汇表中，开放词汇评分只支持英文名称"
                                                 : "'%.96s' is not in the model's vocabulary, and open-vocabulary "
                                                   "scoring reads English names only",
                             f->display_en);
                    refuse(a, "not_a_question", why);
                    cxr_image_free(img);
                    a->total_ms = now_ms() - t0;
                    return CXR_OK;
                }
                if ((rc = score_open_finding(v, f)) != CXR_OK) continue;
                warnf(a, "%s is not in the model's calibrated vocabulary: scored open-vocabulary with the generic "
                         "prompt pair, uncalibrated",
                      f->display_en);
            }
            a->n_findings++;
        }
    }
    for (int i = 0; i < a->n_findings; i++) {
        cxr_answer_finding *f = &a->findings[i];
        if (f->decision != CXR_DECISION_NO || q.intent == CXR_INTENT_LATERALITY) localise(v, f, &a->meta);
    }
    a->score_ms = now_ms() - t1;
    if (a->n_findings == 0) {
        refuse(a, "not_a_question", zl ? "问题中没有可回答的发现" : "the question names no finding this system can score");
        cxr_image_free(img);
        a->total_ms = now_ms() - t0;
        return CXR_OK;
    }
    int any_side = 0;
    for (int i = 0; i < a->n_findings; i++) any_side |= a->findings[i].side[0] != 0;
    if (any_side) {
        if (!a->meta.view_position[0])
            warnf(a, "view position not recorded: a frontal PA/AP orientation is assumed (image left = patient right)");
        warnf(a, "laterality comes from a coarse evidence map and has not been validated");
    }
    build_text(a, &q);

    /* 5. evidence heatmap */
    if (o.heatmap) {
        t1 = now_ms();
        int hi = 0;
        if (o.heatmap_finding) {
            hi = -1;
            for (int i = 0; i < a->n_findings; i++)
                if (!strcmp(a->findings[i].finding, o.heatmap_finding)) hi = i;
            if (hi < 0) { /* a finding the question did not ask about: score it for the map */
                int mi = cxr_model_find_finding(v->model, o.heatmap_finding);
                if (mi >= 0 && a->n_findings < CXR_ANSWER_MAX_FINDINGS) {
                    cxr_answer_finding tmp;
                    memset(&tmp, 0, sizeof tmp);
                    score_model_finding(v, mi, &tmp);
                    int grid;
                    if (evidence_cells(v, &tmp, &grid) == CXR_OK) hi = -2;
                    copy(a->heatmap_finding, sizeof a->heatmap_finding, tmp.finding);
                } else {
                    warnf(a, "heatmap: unknown finding '%s'", o.heatmap_finding);
                }
            }
        } else if (q.intent == CXR_INTENT_OVERVIEW) { /* the most likely abnormal finding */
            for (int i = 0; i < a->n_findings; i++)
                if (strcmp(a->findings[i].finding, "no_finding") &&
                    a->findings[i].probability > a->findings[hi].probability)
                    hi = i;
        }
        int grid = 0, ok = 0;
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
            if (evidence_overlay_png(cxr_image_pixels(img), &geo, v->cells, o.heatmap_size, &a->heatmap_png,
                                     &a->heatmap_png_len, herr, sizeof herr) != CXR_OK)
                warnf(a, "heatmap not written: %s", herr);
        }
        a->heatmap_ms = now_ms() - t1;
    }
    cxr_image_free(img);
    a->total_ms = now_ms() - t0;
    return CXR_OK;
}

int cxr_vqa_ask_file(cxr_vqa *v, const char *path, const char *question, const cxr_ask_options *o,
                     cxr_answer **out) {
    source s = {.path = path};
    if (!path) {
        if (out) *out = NULL;
        return CXR_ERR_ARG;
    }
    return ask_impl(v, &s, question, o, out);
}

int cxr_vqa_ask_buffer(cxr_vqa *v, const void *buf, size_t len, const char *question, const cxr_ask_options *o,
                       cxr_answer **out) {
    source s = {.buf = buf, .len = len};
    return ask_impl(v, &s, question, o, out);
}
