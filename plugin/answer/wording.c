/*
 * wording.c — what an answer says, in English and Chinese: the decision
 * sentences, refusal reasons and warnings of libcxrvqa, as one table of
 * {English, Chinese} formats plus the few helpers that pick a noun or a side
 * name per language. It decides nothing (ask.c has decided by the time it is
 * called) and must not score, read files or allocate.
 */
#include "wording.h"
#include "cxr_common.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

/* --------------------------------------------------------------- table */

typedef enum {
    /* one finding: (noun, numbers) or (noun, numbers, low, high) */
    S_YES = W_COUNT, S_NO, S_UNCERTAIN,
    S_NUMBERS,            /* (probability, threshold, uncalibrated) */
    S_UNCALIBRATED,
    S_NO_SIDE_GIVEN, S_NEGATED_AGREES, S_NEGATED_NOT_CONFIRMED, S_RULE_OUT,
    S_SIDE_MAINLY,        /* (side) */
    S_LATERAL_NO_SIDE,    /* (noun, numbers) */
    S_LATERAL_SIDE,       /* (Side, noun, side, percent left, numbers) */
    S_NORMAL_YES, S_NORMAL_NO,
    S_LEAD_YES, S_LEAD_NO, S_LEAD_UNCERTAIN,
    S_GROUP_SEP, S_GROUP_YES, S_GROUP_UNCERTAIN, S_GROUP_NO, S_ITEM_SEP,
    S_ITEM,               /* (noun, probability, side separator, side) */
    S_SIDE_SEP,
    S_NONE_LIKELY,        /* (top finding, probability) */
    S_HIGHEST,            /* (top finding, probability): after "Yes — … normal" */
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

    [S_YES] = {"Yes — %s is likely (%s).", "是 — 很可能存在%s（%s）。"},
    [S_NO] = {"No — %s is unlikely (%s).", "否 — 不太可能存在%s（%s）。"},
    [S_UNCERTAIN] = {"Uncertain — the evidence for %s is equivocal (%s; uncertain between %.2f and %.2f).",
                     "不确定 — %s的证据不明确（%s；不确定区间 %.2f–%.2f）。"},
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
    [S_NORMAL_YES] = {"Yes — no abnormality in the model's vocabulary is likely.", "是 — 模型词汇表中的异常均不太可能存在。"},
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
    [S_NONE_LIKELY] = {"no abnormality in the model's vocabulary is likely (highest: %s %.2f)",
                       "无可能存在的异常（最高：%s %.2f）"},
    [S_HIGHEST] = {" (highest: %s %.2f)", "无可能存在的异常（最高：%s %.2f）"},
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
    if (!strncmp(reason, "Refused", 7) || !strncmp(reason, "拒绝", strlen("拒绝"))) answer_say(a, "%s", reason);
    else if (wording_zh(a)) answer_say(a, "拒绝回答 — %s", reason);
    else answer_say(a, "Refused — %s", reason);
}

/* ---------------------------------------------- nouns and sides, per language */

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
static const char *noun(const cxr_answer *a, const cxr_answer_finding *f) {
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

/* ------------------------------------------------------------ sentences */

static void sentence_single(cxr_answer *a, const cxr_answer_finding *f) {
    char nums[128], ph[160];
    numbers(a, f, nums, sizeof nums);
    if (wording_zh(a)) copy(ph, sizeof ph, f->display);
    else en_phrase(f, ph, sizeof ph);
    switch (f->decision) {
    case CXR_DECISION_YES: answer_say(a, say_in(a, S_YES), ph, nums); break;
    case CXR_DECISION_NO: answer_say(a, say_in(a, S_NO), ph, nums); break;
    default: answer_say(a, say_in(a, S_UNCERTAIN), ph, nums, f->uncertain_low, f->uncertain_high);
    }
}

/* presence (and laterality without a likely finding): one finding */
static void word_presence(cxr_answer *a, const cxr_question *q) {
    const cxr_answer_finding *f = &a->findings[0];
    a->answer = f->decision;
    sentence_single(a, f);
    if (q->intent == CXR_INTENT_LATERALITY)
        answer_say(a, "%s", say_in(a, S_NO_SIDE_GIVEN));
    else if (q->findings[0].negated)
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
        answer_say(a, say_in(a, S_LATERAL_NO_SIDE), noun(a, f), nums);
        return;
    }
    char label[16];
    const char *where = side_name(a, f->side);
    copy(label, sizeof label, where);
    if (!wording_zh(a)) {
        label[0] = (char)(label[0] - 32); /* "Left — …" */
        if (!strcmp(f->side, "bilateral")) where = "both sides";
    }
    answer_say(a, say_in(a, S_LATERAL_SIDE), label, noun(a, f), where, 100.0 * f->left_share, nums);
}

/* multi and overview: what is likely, uncertain, unlikely */
static void word_list(cxr_answer *a, const cxr_question *q) {
    int yes = 0, unc = 0;
    int abnormal_only = q->intent == CXR_INTENT_OVERVIEW;
    for (int i = 0; i < a->n_findings; i++) {
        const cxr_answer_finding *f = &a->findings[i];
        if (abnormal_only && !strcmp(f->finding, "no_finding")) continue;
        if (f->decision == CXR_DECISION_YES) yes++;
        else if (f->decision == CXR_DECISION_UNCERTAIN) unc++;
    }
    cxr_decision overall = yes ? CXR_DECISION_YES : unc ? CXR_DECISION_UNCERTAIN : CXR_DECISION_NO;
    if (q->intent == CXR_INTENT_OVERVIEW && q->overview_normal) { /* "is this normal?": yes means normal */
        a->answer = overall == CXR_DECISION_YES ? CXR_DECISION_NO
                    : overall == CXR_DECISION_NO ? CXR_DECISION_YES
                                                 : CXR_DECISION_UNCERTAIN;
        answer_say(a, "%s", say_in(a, a->answer == CXR_DECISION_YES  ? S_NORMAL_YES
                                      : a->answer == CXR_DECISION_NO ? S_NORMAL_NO
                                                                     : S_LEAD_UNCERTAIN));
    } else {
        a->answer = overall;
        answer_say(a, "%s", say_in(a, overall == CXR_DECISION_YES  ? S_LEAD_YES
                                      : overall == CXR_DECISION_NO ? S_LEAD_NO
                                                                   : S_LEAD_UNCERTAIN));
    }
    static const struct {
        cxr_decision decision;
        sentence_id group;
    } passes[] = {{CXR_DECISION_YES, S_GROUP_YES}, {CXR_DECISION_UNCERTAIN, S_GROUP_UNCERTAIN},
                  {CXR_DECISION_NO, S_GROUP_NO}};
    int listed = 0;
    for (int pass = 0; pass < 3; pass++) {
        if (pass == 2 && q->intent == CXR_INTENT_OVERVIEW) break; /* overview: the unlikely ones stay in the list */
        int first = 1;
        for (int i = 0; i < a->n_findings; i++) {
            const cxr_answer_finding *f = &a->findings[i];
            if (f->decision != passes[pass].decision || (abnormal_only && !strcmp(f->finding, "no_finding")))
                continue;
            if (first) {
                if (listed) answer_say(a, "%s", say_in(a, S_GROUP_SEP));
                answer_say(a, "%s", say_in(a, passes[pass].group));
            } else {
                answer_say(a, "%s", say_in(a, S_ITEM_SEP));
            }
            first = 0;
            listed++;
            int sided = f->side[0] && f->decision == CXR_DECISION_YES;
            answer_say(a, say_in(a, S_ITEM), noun(a, f), f->probability, sided ? say_in(a, S_SIDE_SEP) : "",
                       sided ? side_name(a, f->side) : "");
        }
    }
    if (q->intent == CXR_INTENT_OVERVIEW && !yes && !unc) {
        int top = -1;
        for (int i = 0; i < a->n_findings; i++)
            if (strcmp(a->findings[i].finding, "no_finding") &&
                (top < 0 || a->findings[i].probability > a->findings[top].probability))
                top = i;
        if (top >= 0) {
            /* after "Yes — no abnormality … is likely." only the highest is added (English) */
            int highest_only = q->overview_normal && a->answer == CXR_DECISION_YES;
            answer_say(a, say_in(a, highest_only ? S_HIGHEST : S_NONE_LIKELY), noun(a, &a->findings[top]),
                       a->findings[top].probability);
        }
    }
    answer_say(a, "%s", say_in(a, S_END));
}

void answer_word(cxr_answer *a, const cxr_question *q) {
    a->text[0] = '\0';
    if (q->intent == CXR_INTENT_PRESENCE ||
        (q->intent == CXR_INTENT_LATERALITY && a->n_findings == 1 && a->findings[0].decision != CXR_DECISION_YES))
        word_presence(a, q);
    else if (q->intent == CXR_INTENT_LATERALITY)
        word_laterality(a);
    else
        word_list(a, q);
}
