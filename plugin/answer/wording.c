/*
 * wording.c — what an answer says, in English and Chinese: the decision
 * sentences, refusal reasons and warnings of libcxrvqa, as one table of
 * {English, Chinese} formats plus the few helpers that pick a noun or a side
 * name per language. It decides nothing (ask.c has decided by the time it is
 * called) and must not score, read files or allocate.
 */
#include "wording.h"
#include "cxr_common.h"

#include <math.h>
#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* --------------------------------------------------------------- table */

typedef enum {
    /* one finding: (noun, verb, numbers) or (noun, verb, numbers, low, high) */
    S_YES = W_COUNT, S_NO, S_UNCERTAIN,
    S_NOT_ASSESSED,       /* (noun, AUC, CI low, CI high, positives, probability) */
    S_NOT_ASSESSED_NONE,  /* no validation cases: (noun, probability) */
    S_NOT_ASSESSED_OPEN,  /* open vocabulary: (noun, probability) */
    S_LIMITED,            /* (AUC, CI low, CI high, positives) */
    S_LEAD_NOT_ASSESSED, S_GROUP_NOT_ASSESSED,
    S_OVERVIEW_LEAD,      /* "Findings — " */
    S_OVERVIEW_NONE,      /* (top finding, probability) */
    S_OVERVIEW_NONE_AT_ALL,
    S_NORMAL_YES_NF,      /* (no-finding probability) */
    S_NORMAL_NO_NF,       /* (no-finding probability) */
    S_NORMAL_UNCERTAIN_NF,/* (no-finding probability) */
    S_NOT_ASSESSED_TAIL,  /* " Not assessed (…): " */
    S_NUMBERS,            /* (probability, threshold, uncalibrated) */
    S_UNCALIBRATED,
    S_NO_SIDE_GIVEN, S_NEGATED_AGREES, S_NEGATED_NOT_CONFIRMED, S_RULE_OUT,
    S_SIDE_MAINLY,        /* (side) */
    S_LATERAL_NO_SIDE,    /* (noun, numbers) */
    S_LATERAL_SIDE,       /* (Side, noun, side, percent left, numbers) */
    S_NORMAL_NO,
    S_LEAD_YES, S_LEAD_NO, S_LEAD_UNCERTAIN,
    S_GROUP_SEP, S_GROUP_YES, S_GROUP_UNCERTAIN, S_GROUP_NO, S_ITEM_SEP,
    S_ITEM,               /* (noun, probability, side separator, side) */
    S_SIDE_SEP,
    S_NONE_LIKELY,        /* (top finding, probability) */
    S_END,
    S_COUNT
} sentence_id;

static const struct {
    const char *en, *zh;
} table[S_COUNT] = {
    [W_IMAGE_ERROR] = {"Error — the image cannot be used: %s", "错误 — 无法读取图像：%s"},
    [W_IMAGE_REFUSED] = {"the image is not one this model may read (%s): %s", "图像不适合本模型（%s）：%s"},
    [W_OOD_FEATURES] = {"features %.0f, warn above %.0f, refuse above %.0f", "特征 %.0f，警告限值 %.0f，拒绝限值 %.0f"},
    [W_OOD_LAYOUT] = {"layout %.0f, warn above %.0f, refuse above %.0f", "整体布局 %.0f，警告限值 %.0f，拒绝限值 %.0f"},
    [W_OOD_SEP] = {"; ", "；"},
    [W_OOD_REFUSED] = {"the image does not look like a chest radiograph (distance to the training images: %s%s%s); "
                       "its header may be wrong",
                       "图像内容不像胸片（与训练图像的距离：%s%s%s）；头信息可能有误"},
    [W_PROTOTYPE_UNLIKE] = {"the image looks unlike the chest radiographs the model was trained on",
                            "该图像与模型训练所用的胸片不相似"},
    [W_NOT_IN_VOCAB_ZH] = {"'%.96s' is not in the model's vocabulary, and open-vocabulary scoring reads English names "
                           "only",
                           "“%.96s”不在模型的发现词汇表中，开放词汇评分只支持英文名称"},
    [W_NO_FINDING] = {"the question names no finding this system can score", "问题中没有可回答的发现"},
    [W_NOT_IN_MODEL] = {"not in this model: %.200s is not among the outputs of %.96s, so it cannot be assessed "
                        "(this model answers only the findings it was trained to classify)",
                        "不在此模型中：%.200s 不是模型 %.96s 的输出之一，无法评估（此模型只回答其训练分类的发现）"},
    [W_WARN_SPELLING] = {"spelling corrected: %s", "已更正拼写：%s"},
    [W_WARN_INGEST] = {"%s", "图像读取提示（原文）：%s"},
    [W_WARN_FEATURES] = {"image-domain check: the image is unlike the training images (distance %.0f above %.0f; 0.5%% "
                         "of validation chest radiographs are); it may not be a frontal chest radiograph: read the answer "
                         "with extra caution",
                         "图像域检查：该图像与训练图像不相似（距离 %.0f，高于 %.0f；验证集中仅 0.5%% 的胸片如此）；"
                         "它可能不是正位胸片，请格外谨慎地解读答案"},
    [W_WARN_LAYOUT] = {"image-domain check: the image's layout is unlike the training images' (distance %.0f above %.0f; "
                       "0.5%% of validation chests are); it may not be a frontal chest radiograph, or is framed unusually: "
                       "read the answer with extra caution",
                       "图像域检查：图像的整体布局与训练图像不同（距离 %.0f，高于 %.0f；验证集中仅 0.5%% 的胸片如此）；"
                       "它可能不是正位胸片，或取景异常，请格外谨慎地解读答案"},
    [W_WARN_PROTOTYPE] = {"image-domain check: %s (score %.3f below %.3f); read the answer with extra caution",
                          "图像域检查：%s（评分 %.3f，低于 %.3f）；请格外谨慎地解读答案"},
    [W_WARN_TOP_SIDE] = {"the question names no finding: the side of the most likely one (%s) is given",
                         "问题未指明发现：给出最可能的发现（%s）的侧别"},
    [W_WARN_NO_VIEW] = {"view position not recorded: a frontal PA/AP orientation is assumed (image left = patient right)",
                        "未记录投照体位：按正位（PA/AP）处理（图像左侧 = 患者右侧）"},
    [W_WARN_LATERALITY] = {"laterality comes from a coarse evidence map and has not been validated",
                           "侧别来自粗略的证据图，未经验证"},
    [W_WARN_NO_SR_PNG] = {"no structured report: the source is a PNG, not a DICOM image",
                          "未生成结构化报告：来源是 PNG 图像，不是 DICOM 图像"},
    [W_WARN_NOT_IN_MODEL] = {"%s is not in this model: not among its outputs, so not assessed",
                             "%s 不在此模型中：不是其输出之一，未评估"},
    [W_WARN_OPEN_VOCAB] = {"%s is not in the model's calibrated vocabulary: scored open-vocabulary with the generic "
                           "prompt pair, uncalibrated",
                           "“%s”不在模型的已校准词汇表中：用通用提示词对进行开放词汇评分，未校准"},
    [W_WARN_HEATMAP_UNKNOWN] = {"heatmap: unknown finding '%s'", "热图：未知的发现“%s”"},
    [W_WARN_HEATMAP_FAILED] = {"heatmap not written: %s", "未生成热图：%s"},
    [W_WARN_HEATMAP_NOT_FOR] = {"heatmap: not drawn for %s (answered %s): evidence is shown only for findings answered "
                                "yes or uncertain",
                                "热图：未为%s绘制（回答为 %s）：只为回答“是”或“不确定”的发现显示证据"},

    [S_YES] = {"Yes — %s %s likely (%s).", "是 — 很可能存在%s%.0s（%s）。"},
    [S_NO] = {"No — %s %s unlikely (%s).", "否 — 不太可能存在%s%.0s（%s）。"},
    [S_UNCERTAIN] = {"Uncertain — the evidence for %s%.0s is equivocal (%s; uncertain between %.2f and %.2f).",
                     "不确定 — %s%.0s的证据不明确（%s；不确定区间 %.2f–%.2f）。"},
    [S_NOT_ASSESSED] = {"Not assessed — the model cannot assess %s reliably (validation AUC %.2f, 95%% CI %.2f–%.2f, "
                        "%d positive cases); its score %.2f is for research only, not an answer.",
                        "无法评估 — 模型无法可靠评估%s（验证 AUC %.2f，95%% CI %.2f–%.2f，阳性病例 %d 例）；"
                        "评分 %.2f 仅供研究，不是答案。"},
    [S_NOT_ASSESSED_NONE] = {"Not assessed — the model cannot assess %s: it has no validation cases; its score %.2f is "
                             "for research only, not an answer.",
                             "无法评估 — 模型没有%s的验证病例，无法评估；评分 %.2f 仅供研究，不是答案。"},
    [S_NOT_ASSESSED_OPEN] = {"Not assessed — %s: not in the model's validated vocabulary, so the model cannot assess "
                             "this reliably; its open-vocabulary score %.2f is for research only, not an answer.",
                             "无法评估 — %s不在模型经过验证的词汇表中，模型无法可靠评估；开放词汇评分 %.2f "
                             "仅供研究，不是答案。"},
    [S_LIMITED] = {" Limited evidence: validation AUC %.2f (95%% CI %.2f–%.2f, %d positive cases).",
                   " 证据有限：验证 AUC %.2f（95%% CI %.2f–%.2f，阳性病例 %d 例）。"},
    [S_LEAD_NOT_ASSESSED] = {"Not assessed — ", "无法评估 — "},
    [S_GROUP_NOT_ASSESSED] = {"not assessed: ", "无法评估："},
    [S_OVERVIEW_LEAD] = {"Findings — ", "所见 — "},
    [S_OVERVIEW_NONE] = {"No assessable abnormality is likely (highest: %s %.2f)",
                         "可评估的异常均不太可能存在（最高：%s %.2f）"},
    [S_OVERVIEW_NONE_AT_ALL] = {"The model can assess none of its abnormal findings on this question",
                                "模型无法评估其词汇表中的任何异常"},
    [S_NORMAL_YES_NF] = {"Yes — normal as far as the model can assess (no finding %.2f); ",
                         "是 — 就模型可评估的范围而言正常（无异常 %.2f）；"},
    [S_NORMAL_NO_NF] = {"No — not normal: a normal study is unlikely (no finding %.2f)",
                        "否 — 并非正常：正常的可能性低（无异常 %.2f）"},
    [S_NORMAL_UNCERTAIN_NF] = {"Uncertain — whether the study is normal is equivocal (no finding %.2f)",
                               "不确定 — 是否正常不明确（无异常 %.2f）"},
    [S_NOT_ASSESSED_TAIL] = {" Not assessed (the model cannot assess them reliably): ",
                             "无法评估（模型无法可靠评估）："},
    [S_NUMBERS] = {"probability %.2f; threshold %.2f%s", "概率 %.2f；阈值 %.2f%s"},
    [S_UNCALIBRATED] = {"; uncalibrated", "；未校准"},
    [S_NO_SIDE_GIVEN] = {" No side can be given.", " 因此无法给出侧别。"},
    [S_NEGATED_AGREES] = {" You asked whether there is none: the model agrees.", " 您问的是是否没有该发现：模型同意。"},
    [S_NEGATED_NOT_CONFIRMED] = {" You asked whether there is none: the model does not confirm that.",
                                 " 您问的是是否没有该发现：模型不能确认。"},
    [S_RULE_OUT] = {" A research model cannot rule a finding out on its own.", " 研究模型不能单独排除任何发现。"},
    [S_SIDE_MAINLY] = {" The evidence lies mainly on the patient's %s.", " 证据主要位于患者%s。"},
    [S_LATERAL_NO_SIDE] = {"%s is likely (%s), but the evidence map does not show a side.",
                           "%s可能存在（%s），但证据图无法确定侧别。"},
    [S_LATERAL_SIDE] = {"%s — the evidence for %s lies mainly on the patient's %s (%.0f%% of it on the left; %s).",
                        "%s — %s的证据主要位于患者%s（左侧占 %.0f%%；%s）。"},
    [S_NORMAL_NO] = {"No — not normal: ", "否 — 并非正常："},
    [S_LEAD_YES] = {"Yes — ", "是 — "},
    [S_LEAD_NO] = {"No — ", "否 — "},
    [S_LEAD_UNCERTAIN] = {"Uncertain — ", "不确定 — "},
    [S_GROUP_SEP] = {"; ", "；"},
    [S_GROUP_YES] = {"likely: ", "可能存在："},
    [S_GROUP_UNCERTAIN] = {"uncertain: ", "不确定："},
    [S_GROUP_NO] = {"unlikely: ", "不太可能："},
    [S_ITEM_SEP] = {", ", "、"},
    [S_ITEM] = {"%s (%.2f%s%s)", "%s (%.2f%s%s)"},
    [S_SIDE_SEP] = {", ", "，"},
    [S_NONE_LIKELY] = {"no assessable abnormality is likely (highest: %s %.2f)",
                       "可评估的异常均不太可能存在（最高：%s %.2f）"},
    [S_END] = {".", "。"},
};

static const struct {
    const char *name, *zh;
} sides[] = {{"left", "左侧"}, {"right", "右侧"}, {"bilateral", "双侧"}};

int wording_zh(const cxr_answer *a) { return !strcmp(a->language, "zh"); }

static const char *say_in(const cxr_answer *a, int id) {
    return wording_zh(a) && table[id].zh ? table[id].zh : table[id].en;
}

const char *wording(const cxr_answer *a, wording_id id) { return say_in(a, (int)id); }

/* ------------------------------------------------- ingestion's warnings */

/* dicom/ingest.c's warnings, read back in Chinese: each English template
 * (an sscanf pattern) with its Chinese twin and the kinds of its values
 * (i int, f double, s word). A warning no row matches keeps its English
 * text behind W_WARN_INGEST's Chinese prefix. */
static const struct {
    const char *en, *zh, *kinds;
} ingest_zh[] = {
    {"small image (%dx%d); radiographs are usually at least %d pixels a side%n",
     "图像较小（%dx%d）；胸片通常每边至少 %d 像素", "iii"},
    {"not a chest radiograph by its header: modality '%63[^']', body part '%63[^']'%n",
     "头信息显示不是胸片：检查类型“%s”，部位“%s”", "ss"},
    {"lateral view (View Position '%63[^']'); the model expects a frontal view%n",
     "侧位片（投照体位“%s”）；模型需要正位片", "s"},
    {"VOI LUT Function '%63[^']' unknown; LINEAR used%n", "VOI LUT 函数“%s”未知；按 LINEAR 处理", "s"},
    {"decoder changed Photometric Interpretation %63s -> %63s%n", "解码器把光度解释从 %s 改为 %s", "ss"},
    {"JPEG 2000 precision %d bits exceeds Bits Stored %d; stream precision used%n",
     "JPEG 2000 码流精度 %d 位超过 Bits Stored %d；按码流精度处理", "ii"},
    {"multi-frame image (%d frames): the first frame is used%n", "多帧图像（%d 帧）：使用第一帧", "i"},
    {"image polarity uncertain (score %lf): check that it is not inverted%n",
     "图像极性不确定（评分 %.3f）：请确认图像没有反相", "f"},
    {"image looks inverted for its Photometric Interpretation %63s (polarity score %lf); header trusted%n",
     "按其光度解释 %s，图像看起来是反相的（极性评分 %.3f）；按头信息处理", "sf"},
    {"header says %63s but the pixels look %63s (polarity score %lf); trusted the pixels%n",
     "头信息为 %s，但像素看起来是 %s（极性评分 %.3f）；按像素处理", "ssf"},
    {"no VOI information; percentile window %lf/%lf used%n", "无 VOI 信息；使用百分位窗 %.1f/%.1f", "ff"},
};

/* The Chinese of an ingestion warning into out; 0 when no row matches. */
static int ingest_warning_zh(const char *en, char *out, size_t n) {
    for (size_t r = 0; r < sizeof ingest_zh / sizeof ingest_zh[0]; r++) {
        int i[3] = {0}, used = -1;
        double f[3] = {0};
        char s[3][64] = {"", "", ""};
        const char *k = ingest_zh[r].kinds;
        int got;
        /* each row's pattern takes its values in the order of kinds, then %n */
        if (!strcmp(k, "iii")) got = sscanf(en, ingest_zh[r].en, &i[0], &i[1], &i[2], &used);
        else if (!strcmp(k, "ss")) got = sscanf(en, ingest_zh[r].en, s[0], s[1], &used);
        else if (!strcmp(k, "s")) got = sscanf(en, ingest_zh[r].en, s[0], &used);
        else if (!strcmp(k, "ii")) got = sscanf(en, ingest_zh[r].en, &i[0], &i[1], &used);
        else if (!strcmp(k, "i")) got = sscanf(en, ingest_zh[r].en, &i[0], &used);
        else if (!strcmp(k, "f")) got = sscanf(en, ingest_zh[r].en, &f[0], &used);
        else if (!strcmp(k, "sf")) got = sscanf(en, ingest_zh[r].en, s[0], &f[0], &used);
        else if (!strcmp(k, "ssf")) got = sscanf(en, ingest_zh[r].en, s[0], s[1], &f[0], &used);
        else got = sscanf(en, ingest_zh[r].en, &f[0], &f[1], &used);
        if (got != (int)strlen(k) || used < 0 || en[used] != '\0') continue;
        if (!strcmp(k, "iii")) snprintf(out, n, ingest_zh[r].zh, i[0], i[1], i[2]);
        else if (!strcmp(k, "ss")) snprintf(out, n, ingest_zh[r].zh, s[0], s[1]);
        else if (!strcmp(k, "s")) snprintf(out, n, ingest_zh[r].zh, s[0]);
        else if (!strcmp(k, "ii")) snprintf(out, n, ingest_zh[r].zh, i[0], i[1]);
        else if (!strcmp(k, "i")) snprintf(out, n, ingest_zh[r].zh, i[0]);
        else if (!strcmp(k, "f")) snprintf(out, n, ingest_zh[r].zh, f[0]);
        else if (!strcmp(k, "sf")) snprintf(out, n, ingest_zh[r].zh, s[0], f[0]);
        else if (!strcmp(k, "ssf")) snprintf(out, n, ingest_zh[r].zh, s[0], s[1], f[0]);
        else snprintf(out, n, ingest_zh[r].zh, f[0], f[1]);
        return 1;
    }
    return 0;
}

void answer_warn_ingest(cxr_answer *a, const char *en) {
    char zh[256];
    if (wording_zh(a) && ingest_warning_zh(en, zh, sizeof zh)) answer_warn(a, "%s", zh);
    else answer_warn(a, wording(a, W_WARN_INGEST), en);
}

/* ----------------------------------------------------------- appending */

void answer_say(cxr_answer *a, const char *fmt, ...) {
    size_t n = strlen(a->text);
    if (n + 1 >= sizeof a->text) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->text + n, sizeof a->text - n, fmt, ap);
    va_end(ap);
}

void answer_warn(cxr_answer *a, const char *fmt, ...) {
    if (a->n_warnings >= CXR_ANSWER_MAX_WARNINGS) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(a->warnings[a->n_warnings++], sizeof a->warnings[0], fmt, ap);
    va_end(ap);
}

/* Bounded copy, truncating. */
static void copy(char *dst, size_t n, const char *src) {
    snprintf(dst, n, "%s", src ? src : "");
}

void answer_refuse(cxr_answer *a, const char *code, const char *reason) {
    a->refused = 1;
    a->answer = CXR_DECISION_REFUSED;
    copy(a->reason_code, sizeof a->reason_code, code);
    copy(a->reason, sizeof a->reason, reason);
    a->text[0] = '\0';
    /* the question parser's reasons may already say so */
    if (!strncmp(reason, "Refused", 7) || !strncmp(reason, "拒绝", strlen("拒绝")) ||
        !strncmp(reason, "已拒绝", strlen("已拒绝")))
        answer_say(a, "%s", reason);
    else if (wording_zh(a)) answer_say(a, "拒绝回答 — %s", reason);
    else answer_say(a, "Refused — %s", reason);
}

/* ---------------------------------------------- nouns and sides, per language */

/* Findings named in the plural ("support devices are …"). */
static int plural(const cxr_answer_finding *f) { return !strcmp(f->finding, "support_devices"); }

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

/* The finding's name in the answer's language. */
const char *wording_noun(const cxr_answer *a, const cxr_answer_finding *f) {
    return wording_zh(a) ? f->display : f->display_en;
}

/* A side ("left", "right", "bilateral") in the answer's language. */
static const char *side_name(const cxr_answer *a, const char *side) {
    if (!wording_zh(a)) return side;
    for (size_t i = 0; i < sizeof sides / sizeof sides[0]; i++)
        if (!strcmp(side, sides[i].name)) return sides[i].zh;
    return "";
}

static void numbers(const cxr_answer *a, const cxr_answer_finding *f, char *out, size_t n) {
    snprintf(out, n, say_in(a, S_NUMBERS), f->probability, f->threshold, f->calibrated ? "" : say_in(a, S_UNCALIBRATED));
}

static int answered(const cxr_answer_finding *f) {
    return f->decision == CXR_DECISION_YES || f->decision == CXR_DECISION_NO || f->decision == CXR_DECISION_UNCERTAIN;
}

/* ------------------------------------------------------------ sentences */

void wording_note(const cxr_answer_finding *f, char *out, size_t n) {
    out[0] = '\0';
    if (f->decision == CXR_DECISION_NOT_ASSESSED && !f->in_model)
        snprintf(out, n, "not assessed: not in the model's validated vocabulary; the probability is an "
                         "open-vocabulary research score, not an answer");
    else if (f->decision == CXR_DECISION_NOT_ASSESSED && (f->val_pos < 1 || isnan(f->val_auc)))
        snprintf(out, n, "not assessed: the model has no validation cases for this finding; the probability is a "
                         "research score, not an answer");
    else if (f->decision == CXR_DECISION_NOT_ASSESSED)
        snprintf(out, n, "not assessed: the model cannot assess this finding reliably (validation AUC %.2f, 95%% CI "
                         "%.2f-%.2f, %d positive cases); the probability is a research score, not an answer",
                 f->val_auc, f->val_auc_lo, f->val_auc_hi, f->val_pos);
    else if (!strcmp(f->tier, "limited") && !isnan(f->val_auc))
        snprintf(out, n, "limited evidence: validation AUC %.2f (95%% CI %.2f-%.2f, %d positive cases)", f->val_auc,
                 f->val_auc_lo, f->val_auc_hi, f->val_pos);
}

/* Why a finding is not assessed, with the validation behind that. */
static void say_not_assessed(cxr_answer *a, const cxr_answer_finding *f) {
    if (!f->in_model)
        answer_say(a, say_in(a, S_NOT_ASSESSED_OPEN), wording_noun(a, f), f->probability);
    else if (f->val_pos < 1 || isnan(f->val_auc))
        answer_say(a, say_in(a, S_NOT_ASSESSED_NONE), wording_noun(a, f), f->probability);
    else
        answer_say(a, say_in(a, S_NOT_ASSESSED), wording_noun(a, f), f->val_auc, f->val_auc_lo, f->val_auc_hi, f->val_pos,
                   f->probability);
}

static void sentence_single(cxr_answer *a, const cxr_answer_finding *f) {
    if (f->decision == CXR_DECISION_NOT_ASSESSED) {
        say_not_assessed(a, f);
        return;
    }
    char nums[128], ph[160];
    numbers(a, f, nums, sizeof nums);
    if (wording_zh(a)) copy(ph, sizeof ph, f->display);
    else en_phrase(f, ph, sizeof ph);
    const char *verb = plural(f) ? "are" : "is";
    switch (f->decision) {
    case CXR_DECISION_YES: answer_say(a, say_in(a, S_YES), ph, verb, nums); break;
    case CXR_DECISION_NO: answer_say(a, say_in(a, S_NO), ph, verb, nums); break;
    default: answer_say(a, say_in(a, S_UNCERTAIN), ph, verb, nums, f->uncertain_low, f->uncertain_high);
    }
    if (!strcmp(f->tier, "limited") && !isnan(f->val_auc))
        answer_say(a, say_in(a, S_LIMITED), f->val_auc, f->val_auc_lo, f->val_auc_hi, f->val_pos);
}

/* presence (and laterality without a likely finding): one finding */
static void word_presence(cxr_answer *a, const cxr_question *q) {
    const cxr_answer_finding *f = &a->findings[0];
    a->answer = f->decision;
    sentence_single(a, f);
    if (q->intent == CXR_INTENT_LATERALITY)
        answer_say(a, "%s", say_in(a, S_NO_SIDE_GIVEN));
    else if (q->findings[0].negated && answered(f))
        answer_say(a, "%s", say_in(a, f->decision == CXR_DECISION_NO ? S_NEGATED_AGREES : S_NEGATED_NOT_CONFIRMED));
    if (q->rule_out && f->decision != CXR_DECISION_YES) answer_say(a, "%s", say_in(a, S_RULE_OUT));
    if (f->decision == CXR_DECISION_YES && f->side[0] && strcmp(f->side, "bilateral") &&
        q->intent != CXR_INTENT_LATERALITY)
        answer_say(a, say_in(a, S_SIDE_MAINLY), side_name(a, f->side));
}

/* laterality: which side a likely finding's evidence lies on */
static void word_laterality(cxr_answer *a) {
    const cxr_answer_finding *f = &a->findings[0];
    a->answer = f->decision;
    char nums[128];
    numbers(a, f, nums, sizeof nums);
    if (!f->side[0]) {
        answer_say(a, say_in(a, S_LATERAL_NO_SIDE), wording_noun(a, f), nums);
        return;
    }
    char label[16];
    const char *where = side_name(a, f->side);
    copy(label, sizeof label, where);
    if (!wording_zh(a)) {
        label[0] = (char)(label[0] - 32); /* "Left — …" */
        if (!strcmp(f->side, "bilateral")) where = "both sides";
    }
    answer_say(a, say_in(a, S_LATERAL_SIDE), label, wording_noun(a, f), where, 100.0 * f->left_share, nums);
}

/* One group of the list ("likely: a (0.91, left), b (0.70)"); the findings
 * with decision d, no_finding left out when skip_nf. */
static void list_group(cxr_answer *a, cxr_decision d, sentence_id group, int skip_nf, int *listed) {
    int first = 1;
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        if (f->decision != d || (skip_nf && !strcmp(f->finding, "no_finding"))) continue;
        if (first) {
            if (*listed) answer_say(a, "%s", say_in(a, S_GROUP_SEP));
            answer_say(a, "%s", say_in(a, group));
        } else {
            answer_say(a, "%s", say_in(a, S_ITEM_SEP));
        }
        first = 0;
        (*listed)++;
        if (d == CXR_DECISION_NOT_ASSESSED) {
            answer_say(a, "%s", wording_noun(a, f));
            continue;
        }
        int sided = f->side[0] && f->decision == CXR_DECISION_YES;
        answer_say(a, say_in(a, S_ITEM), wording_noun(a, f), f->probability, sided ? say_in(a, S_SIDE_SEP) : "",
                   sided ? side_name(a, f->side) : "");
    }
}

/* " Not assessed (…): a, b, c." after an overview: the findings the model
 * cannot assess, named so that their silence is not read as "no". */
static void tail_not_assessed(cxr_answer *a) {
    int n = 0;
    for (int i = 0; i < a->n_findings; i++) n += a->findings[i].decision == CXR_DECISION_NOT_ASSESSED;
    if (!n) return;
    answer_say(a, "%s", say_in(a, S_NOT_ASSESSED_TAIL));
    int first = 1;
    for (int i = 0; i < a->n_findings; i++) {
        if (a->findings[i].decision != CXR_DECISION_NOT_ASSESSED) continue;
        if (!first) answer_say(a, "%s", say_in(a, S_ITEM_SEP));
        answer_say(a, "%s", wording_noun(a, &a->findings[i]));
        first = 0;
    }
    answer_say(a, "%s", say_in(a, S_END));
}

/* The most likely assessable abnormal finding (-1: none). */
static int top_abnormal(const cxr_answer *a) {
    int top = -1;
    for (int i = 0; i < a->n_findings; i++)
        if (strcmp(a->findings[i].finding, "no_finding") && answered(&a->findings[i]) &&
            (top < 0 || a->findings[i].probability > a->findings[top].probability))
            top = i;
    return top;
}

/* several named findings: the answered ones by decision, then those not assessed */
static void word_multi(cxr_answer *a) {
    int yes = 0, unc = 0, n_answered = 0;
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        n_answered += answered(f);
        yes += f->decision == CXR_DECISION_YES;
        unc += f->decision == CXR_DECISION_UNCERTAIN;
    }
    a->answer = !n_answered ? CXR_DECISION_NOT_ASSESSED
                : yes       ? CXR_DECISION_YES
                : unc       ? CXR_DECISION_UNCERTAIN
                            : CXR_DECISION_NO;
    answer_say(a, "%s", say_in(a, a->answer == CXR_DECISION_YES       ? S_LEAD_YES
                                  : a->answer == CXR_DECISION_NO      ? S_LEAD_NO
                                  : a->answer == CXR_DECISION_UNCERTAIN ? S_LEAD_UNCERTAIN
                                                                      : S_LEAD_NOT_ASSESSED));
    int listed = 0;
    list_group(a, CXR_DECISION_YES, S_GROUP_YES, 0, &listed);
    list_group(a, CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN, 0, &listed);
    list_group(a, CXR_DECISION_NO, S_GROUP_NO, 0, &listed);
    list_group(a, CXR_DECISION_NOT_ASSESSED, S_GROUP_NOT_ASSESSED, 0, &listed);
    answer_say(a, "%s", say_in(a, S_END));
}

/* overview: what is likely or uncertain among the assessable abnormal
 * findings; "is this normal?" also weighs no_finding when it is assessable */
static void word_overview(cxr_answer *a, const cxr_question *q) {
    int yes = 0, unc = 0;
    const cxr_answer_finding *nf = NULL;
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        if (!strcmp(f->finding, "no_finding")) {
            if (answered(f)) nf = f;
            continue;
        }
        yes += f->decision == CXR_DECISION_YES;
        unc += f->decision == CXR_DECISION_UNCERTAIN;
    }
    int top = top_abnormal(a), listed = 0;
    if (!q->overview_normal) {
        a->answer = yes ? CXR_DECISION_YES : unc ? CXR_DECISION_UNCERTAIN : CXR_DECISION_NO;
        if (yes || unc) {
            answer_say(a, "%s", say_in(a, S_OVERVIEW_LEAD));
            list_group(a, CXR_DECISION_YES, S_GROUP_YES, 1, &listed);
            list_group(a, CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN, 1, &listed);
        } else if (top >= 0) {
            answer_say(a, say_in(a, S_OVERVIEW_NONE), wording_noun(a, &a->findings[top]), a->findings[top].probability);
        } else {
            answer_say(a, "%s", say_in(a, S_OVERVIEW_NONE_AT_ALL));
        }
        answer_say(a, "%s", say_in(a, S_END));
        tail_not_assessed(a);
        return;
    }
    /* "is this normal?": yes means normal */
    if (yes) {
        a->answer = CXR_DECISION_NO;
        answer_say(a, "%s", say_in(a, S_NORMAL_NO));
        list_group(a, CXR_DECISION_YES, S_GROUP_YES, 1, &listed);
        list_group(a, CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN, 1, &listed);
    } else if (nf && nf->decision == CXR_DECISION_NO) {
        a->answer = CXR_DECISION_NO;
        answer_say(a, say_in(a, S_NORMAL_NO_NF), nf->probability);
        if (unc) answer_say(a, "%s", say_in(a, S_GROUP_SEP));
        list_group(a, CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN, 1, &listed);
    } else if (!unc && (!nf || nf->decision == CXR_DECISION_YES)) {
        a->answer = CXR_DECISION_YES;
        if (nf) answer_say(a, say_in(a, S_NORMAL_YES_NF), nf->probability);
        else answer_say(a, "%s", say_in(a, S_LEAD_YES));
        if (top >= 0) answer_say(a, say_in(a, S_NONE_LIKELY), wording_noun(a, &a->findings[top]), a->findings[top].probability);
        else answer_say(a, "%s", say_in(a, S_OVERVIEW_NONE_AT_ALL));
    } else {
        a->answer = CXR_DECISION_UNCERTAIN;
        if (nf) {
            answer_say(a, say_in(a, S_NORMAL_UNCERTAIN_NF), nf->probability);
            if (unc) answer_say(a, "%s", say_in(a, S_GROUP_SEP));
        } else {
            answer_say(a, "%s", say_in(a, S_LEAD_UNCERTAIN));
        }
        list_group(a, CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN, 1, &listed);
    }
    answer_say(a, "%s", say_in(a, S_END));
    tail_not_assessed(a);
}

void answer_word(cxr_answer *a, const cxr_question *q) {
    a->text[0] = '\0';
    if (q->intent == CXR_INTENT_PRESENCE ||
        (q->intent == CXR_INTENT_LATERALITY && a->n_findings == 1 && a->findings[0].decision != CXR_DECISION_YES))
        word_presence(a, q);
    else if (q->intent == CXR_INTENT_LATERALITY)
        word_laterality(a);
    else if (q->intent == CXR_INTENT_OVERVIEW)
        word_overview(a, q);
    else
        word_multi(a);
}
