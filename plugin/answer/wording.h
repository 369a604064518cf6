/*
 * wording.h — the words of an answer (internal to libcxrvqa): every sentence,
 * refusal reason and warning, in English and Chinese, from one table
 * (wording.c). ask.c decides; this only says what was decided, in the
 * answer's language.
 */
#ifndef CXR_ANSWER_WORDING_H
#define CXR_ANSWER_WORDING_H

#include "cxrvqa.h"
#include "question.h"

/* Message ids: one row of the table each ({English, Chinese}; a row whose
 * Chinese is missing falls back to English). The printf arguments each
 * takes are in its comment in wording.c. */
typedef enum {
    W_IMAGE_ERROR,          /* "Error — the image cannot be used: %s" */
    W_IMAGE_REFUSED,        /* the image checks refused it: (check name, detail) */
    W_OOD_FEATURES,         /* density check distances: (distance, warn, refuse) */
    W_OOD_LAYOUT,           /* layout check distances: (distance, warn, refuse) */
    W_OOD_SEP,              /* between the two */
    W_OOD_REFUSED,          /* (features, sep, layout) */
    W_PROTOTYPE_UNLIKE,     /* the prototype check's sentence */
    W_NOT_IN_VOCAB_ZH,      /* a non-English open-vocabulary name: (name) */
    W_NO_FINDING,           /* the question names nothing scorable */
    W_NOT_IN_MODEL,         /* a classifier without any named finding: (findings, model name) */
    /* warnings */
    W_WARN_SPELLING,        /* (correction) */
    W_WARN_INGEST,          /* an ingestion warning (its English text) */
    W_WARN_FEATURES,        /* (distance, warn limit) */
    W_WARN_LAYOUT,          /* (distance, warn limit) */
    W_WARN_PROTOTYPE,       /* (sentence, score, threshold) */
    W_WARN_TOP_SIDE,        /* (finding) */
    W_WARN_NO_VIEW,
    W_WARN_LATERALITY,
    W_WARN_HEATMAP_UNKNOWN, /* (finding) */
    W_WARN_HEATMAP_FAILED,  /* (detail) */
    W_WARN_HEATMAP_NOT_FOR, /* (finding, decision) */
    W_WARN_OPEN_VOCAB,      /* (finding) */
    W_WARN_NOT_IN_MODEL,    /* a classifier lacks one of the named findings: (finding) */
    W_WARN_NO_SR_PNG,       /* no SR for a PNG source (service.c) */
    W_COUNT
} wording_id;

/* The finding's name in the answer's language. */
const char *wording_noun(const cxr_answer *a, const cxr_answer_finding *f);
/* The format of id in the answer's language. */
const char *wording(const cxr_answer *a, wording_id id);
int wording_zh(const cxr_answer *a);

/* Append printf-formatted text to a->text (truncating). */
void answer_say(cxr_answer *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Add a warning (dropped past CXR_ANSWER_MAX_WARNINGS). */
void answer_warn(cxr_answer *a, const char *fmt, ...)
#if defined(__GNUC__)
    __attribute__((format(printf, 2, 3)))
#endif
    ;
/* Add one of ingestion's warnings (English text from dicom/), in Chinese
 * for a Chinese answer where its template is known, else as it is. */
void answer_warn_ingest(cxr_answer *a, const char *en);
/* Make a a refusal with reason code and sentence (a->text says it). */
void answer_refuse(cxr_answer *a, const char *code, const char *reason);

/* The note a record (the SR) keeps beside a finding's presence, in English:
 * why it was not assessed, or that its evidence is limited; "" otherwise. */
void wording_note(const cxr_answer_finding *f, char *out, size_t n);

/* The answer's decision and sentence from its scored findings and the
 * question (a->answer and a->text). */
void answer_word(cxr_answer *a, const cxr_question *q);

#endif
