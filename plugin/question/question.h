/*
 * question.h — understanding a radiologist's question about one chest
 * radiograph, in English or simplified Chinese. Pure C11, no model, no DICOM:
 * text in, a structured reading of it out. The answering code (ask.c) maps
 * the findings named here onto the model's finding vocabulary.
 *
 *   cxr_question q;
 *   cxr_question_parse("Is there a pleural effusion?", NULL, &q);
 *   // q.intent == CXR_INTENT_PRESENCE, q.n_findings == 1,
 *   // q.findings[0].name == "pleural_effusion", q.language == "en"
 *   cxr_question_parse("这张图像中是否存在胸腔积液?", NULL, &q);   // same, language "zh"
 *   cxr_question_parse("What dose of furosemide should I give?", NULL, &q);
 *   // q.intent == CXR_INTENT_REFUSE, q.refusal == CXR_REFUSE_TREATMENT
 *
 * Thread safety: the lexicon is constant data; parse is reentrant.
 */
#ifndef CXR_QUESTION_H
#define CXR_QUESTION_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_QUESTION_MAX_BYTES 2048 /* longer questions are refused (CXR_REFUSE_NOT_A_QUESTION) */
#define CXR_Q_MAX_FINDINGS 24       /* overview questions list no findings: the caller uses the model's vocabulary */

typedef enum {
    CXR_INTENT_PRESENCE = 0, /* one finding: "Is there a pleural effusion?" */
    CXR_INTENT_MULTI,        /* several findings: "effusion or consolidation?" */
    CXR_INTENT_OVERVIEW,     /* "What abnormalities are present?", "Is this chest X-ray normal?" */
    CXR_INTENT_LATERALITY,   /* "Which side is the effusion on?" (findings[0] = the finding; may be
                                empty when the question names none, e.g. "左侧还是右侧？") */
    CXR_INTENT_REFUSE        /* must not be answered: see refusal */
} cxr_intent;

typedef enum {
    CXR_REFUSE_NONE = 0,
    CXR_REFUSE_TREATMENT,      /* treatment, drugs, dosing, management */
    CXR_REFUSE_PROGNOSIS,      /* survival, outcome, "will he get better" */
    CXR_REFUSE_OTHER_ANATOMY,  /* another body part: knee, brain, abdomen organ, … */
    CXR_REFUSE_OTHER_MODALITY, /* CT, MRI, ultrasound, PET, … */
    CXR_REFUSE_PRIOR,          /* comparison with a prior study or change over time (one image is given) */
    CXR_REFUSE_NOT_A_QUESTION, /* empty, too long, not about the image, not understood */
    CXR_REFUSE_PATIENT_INFO,   /* identity / demographics / non-image facts ("what is her name") */
    CXR_REFUSE_DEVICE_POSITION,/* where a tube, line or lead lies ("is the ETT in good position?") */
    CXR_REFUSE_MEASUREMENT,    /* sizes and ratios ("what's the cardiothoracic ratio?") */
    CXR_REFUSE_COUNT           /* how many ("how many nodules?") */
} cxr_refusal;

typedef struct {
    char name[64];        /* canonical lexicon name, snake_case ASCII ("pleural_effusion"); for an
                             open-vocabulary finding, the phrase as named ("hiatal hernia") */
    char display_en[96];  /* "pleural effusion" */
    char display_zh[96];  /* "胸腔积液" (UTF-8); "" for open vocabulary */
    char snomed[24];      /* SNOMED CT concept id, "" when the lexicon has none */
    int known;            /* 1 lexicon finding, 0 open vocabulary (answer must be marked uncalibrated) */
    int negated;          /* the question was phrased in the negative ("no effusion, right?") */
    char laterality[8];   /* side the question names: "left", "right", "both" or "" */
    char matched[96];     /* the text span that matched (for explanations and tests) */
} cxr_qfinding;

typedef struct {
    char language[4];     /* "en" or "zh": the question's language (hint used when mixed/none) */
    cxr_intent intent;
    int n_findings;
    cxr_qfinding findings[CXR_Q_MAX_FINDINGS];
    int rule_out;         /* "can you rule out …", "排除…": the user wants exclusion */
    int hedged;           /* hedge or confirmation phrasing ("… right?", "对吧") */
    int overview_normal;  /* overview phrased as "is this normal?" (vs "what abnormalities") */
    cxr_refusal refusal;
    char reason[256];     /* why it was refused, in the question's language; "" otherwise */
    char corrected[64];   /* spelling slip fixed, e.g. "efusion->effusion"; "" when none */
} cxr_question;

/* Parse one UTF-8 question. lang_hint: "en", "zh" or NULL (detect: any CJK
 * ideograph → "zh"). Never fails on content: what cannot be understood
 * comes back as CXR_INTENT_REFUSE with a reason. Returns CXR_OK, or
 * CXR_ERR_ARG for a NULL argument or invalid UTF-8 (out is then a refusal
 * too, so callers may treat both the same). */
int cxr_question_parse(const char *utf8, const char *lang_hint, cxr_question *out);

/* Names of enum values, for JSON and audit: "presence", "multi", "overview",
 * "laterality", "refuse"; "none", "treatment", "prognosis", "other_anatomy",
 * "other_modality", "prior", "not_a_question", "patient_info", "device_position",
 * "measurement", "count". */
const char *cxr_intent_name(cxr_intent i);
const char *cxr_refusal_name(cxr_refusal r);

/* The lexicon, for listing and tests: number of entries and entry i's
 * canonical name / displays / SNOMED code (NULL out of range). */
int cxr_lexicon_size(void);
const cxr_qfinding *cxr_lexicon_entry(int i);

#ifdef __cplusplus
}
#endif
#endif
