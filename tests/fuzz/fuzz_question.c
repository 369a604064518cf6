/*
 * fuzz_question.c — libFuzzer target for question understanding
 * (plugin/question/question.h): arbitrary bytes, cut at the first NUL as a C string
 * would be, parsed with each language hint in turn, and the result checked
 * against the header's promises (a valid intent and refusal with their
 * names, a refusal with a reason, at most CXR_Q_MAX_FINDINGS findings, every
 * string field terminated inside its array, language "en" or "zh", refusal
 * iff intent refuse). A broken promise aborts, which libFuzzer reports as a
 * crash; so do memory errors, leaks and undefined behaviour under the
 * sanitizers. Seeds: the questions of tests/data/questions.tsv, one per file
 * (tests/fuzz/ci_fuzz.sh and cmake/hardening.cmake write them). Linked with
 * replay_main.c, ctest replays the seeds and tests/fuzz/regressions/fuzz_question.
 */
#include "question.h"
#include "cxr_common.h"

#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

/* twice the parser's own limit, so that the "too long" path runs too */
#define FUZZ_MAX_INPUT (2 * CXR_QUESTION_MAX_BYTES + 64)

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size);

static void fail(const char *what, const char *text) {
    fprintf(stderr, "fuzz_question: broken promise: %s (question of %zu bytes)\n", what, strlen(text));
    abort();
}

static void terminated(const char *field, size_t n, const char *what, const char *text) {
    if (!memchr(field, '\0', n)) fail(what, text);
}

static void check(const cxr_question *q, int rc, const char *text) {
    if (rc != CXR_OK && rc != CXR_ERR_ARG) fail("return code", text);
    terminated(q->language, sizeof q->language, "language not terminated", text);
    if (strcmp(q->language, "en") && strcmp(q->language, "zh")) fail("language neither en nor zh", text);
    if (q->intent < CXR_INTENT_PRESENCE || q->intent > CXR_INTENT_REFUSE) fail("intent out of range", text);
    if (q->refusal < CXR_REFUSE_NONE || q->refusal > CXR_REFUSE_COUNT) fail("refusal out of range", text);
    if (!cxr_intent_name(q->intent) || !cxr_refusal_name(q->refusal)) fail("no name for intent/refusal", text);
    if ((q->intent == CXR_INTENT_REFUSE) != (q->refusal != CXR_REFUSE_NONE)) fail("refusal iff intent refuse", text);
    if (rc == CXR_ERR_ARG && q->intent != CXR_INTENT_REFUSE) fail("CXR_ERR_ARG without a refusal", text);
    terminated(q->reason, sizeof q->reason, "reason not terminated", text);
    if (q->intent == CXR_INTENT_REFUSE && !q->reason[0]) fail("refusal without a reason", text);
    terminated(q->corrected, sizeof q->corrected, "corrected not terminated", text);
    if (q->n_findings < 0 || q->n_findings > CXR_Q_MAX_FINDINGS) fail("n_findings out of range", text);
    for (int i = 0; i < q->n_findings; i++) {
        const cxr_qfinding *f = &q->findings[i];
        terminated(f->name, sizeof f->name, "finding name not terminated", text);
        terminated(f->display_en, sizeof f->display_en, "display_en not terminated", text);
        terminated(f->display_zh, sizeof f->display_zh, "display_zh not terminated", text);
        terminated(f->snomed, sizeof f->snomed, "snomed not terminated", text);
        terminated(f->laterality, sizeof f->laterality, "laterality not terminated", text);
        terminated(f->matched, sizeof f->matched, "matched not terminated", text);
        if (!f->name[0]) fail("finding without a name", text);
        if (f->laterality[0] && strcmp(f->laterality, "left") && strcmp(f->laterality, "right") &&
            strcmp(f->laterality, "both"))
            fail("laterality not left/right/both", text);
    }
}

int LLVMFuzzerTestOneInput(const uint8_t *data, size_t size) {
    if (size > FUZZ_MAX_INPUT) return 0;
    /* an exact-size copy plus its terminator: ASan sees any read past it */
    char *text = malloc(size + 1);
    if (!text) return 0;
    memcpy(text, data, size);
    text[size] = '\0';
    static const char *const hints[] = {NULL, "en", "zh"};
    for (size_t h = 0; h < sizeof hints / sizeof hints[0]; h++) {
        cxr_question q;
        memset(&q, 0xA5, sizeof q); /* the parser must fill every field it promises */
        int rc = cxr_question_parse(text, hints[h], &q);
        check(&q, rc, text);
    }
    free(text);
    return 0;
}
