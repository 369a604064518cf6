/*
 * test_ask_many.c — several questions about one image in one call
 * (cxr_vqa_ask_many_file / _buffer) against the same questions asked one at
 * a time: every answer the same (decision, findings, probabilities, text,
 * warnings, refusal), the image decoded and embedded once (the first answer
 * carries the decode and tower times, the others are marked image_shared
 * with zeros), refusals and errors repeated for each question, and a
 * different image afterwards not confused with the last one.
 *
 *   test_ask_many MODEL.gguf CHEST.dcm OTHER.dcm NOT_A_CHEST.dcm BROKEN.dcm
 */
#include "check.h"
#include "cxrvqa.h"

#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

static const char *const Q[] = {
    "Is there a pleural effusion?",
    "Is there pneumonia?",
    "这张图像中是否存在胸腔积液?",
    "Is the heart enlarged?",
    "What is the weather today?", /* refused as a question */
    "Any findings?",
};
enum { NQ = sizeof Q / sizeof Q[0] };

static void same(const cxr_answer *m, const cxr_answer *s, const char *what, int i) {
    CHECK(m->answer == s->answer && m->refused == s->refused && m->error_code == s->error_code,
          "%s q%d: decision %d/%d refused %d/%d error %d/%d", what, i, m->answer, s->answer, m->refused, s->refused,
          m->error_code, s->error_code);
    CHECK(!strcmp(m->text, s->text), "%s q%d: text differs:\n  %s\n  %s", what, i, m->text, s->text);
    CHECK(m->n_findings == s->n_findings, "%s q%d: %d findings vs %d", what, i, m->n_findings, s->n_findings);
    for (int k = 0; k < m->n_findings && k < s->n_findings; k++) {
        const cxr_answer_finding *a = &m->findings[k], *b = &s->findings[k];
        CHECK(!strcmp(a->finding, b->finding) && (a->probability == b->probability ||
                                                    (isnan(a->probability) && isnan(b->probability))),
              "%s q%d finding %d: %s %g vs %s %g", what, i, k, a->finding, a->probability, b->finding, b->probability);
    }
    CHECK(m->n_warnings == s->n_warnings, "%s q%d: %d warnings vs %d", what, i, m->n_warnings, s->n_warnings);
    for (int k = 0; k < m->n_warnings && k < s->n_warnings; k++)
        CHECK(!strcmp(m->warnings[k], s->warnings[k]), "%s q%d warning %d: %s | %s", what, i, k, m->warnings[k],
              s->warnings[k]);
    CHECK(m->domain_distance == s->domain_distance || (isnan(m->domain_distance) && isnan(s->domain_distance)),
          "%s q%d: domain distance %g vs %g", what, i, m->domain_distance, s->domain_distance);
}

/* ask_many against single asks on one file; returns how many answers were refused */
static int compare(cxr_vqa *v, const char *path, const char *what) {
    cxr_answer *many[NQ], *one[NQ];
    int rcs[NQ], refused = 0;
    cxr_ask_options o = cxr_ask_options_default();
    o.heatmap = 1;
    cxr_vqa_ask_many_file(v, path, Q, NQ, &o, many, rcs);
    for (int i = 0; i < NQ; i++) {
        int rc = cxr_vqa_ask_file(v, path, Q[i], &o, &one[i]);
        CHECK(many[i] && one[i], "%s q%d: no answer", what, i);
        if (!many[i] || !one[i]) continue;
        CHECK(rc == rcs[i], "%s q%d: rc %d alone, %d together", what, i, rc, rcs[i]);
        same(many[i], one[i], what, i);
        CHECK(many[i]->image_shared == (i > 0), "%s q%d: image_shared %d", what, i, many[i]->image_shared);
        if (i > 0)
            CHECK(many[i]->decode_ms == 0 && many[i]->image_ms == 0, "%s q%d: decode %.1f ms, tower %.1f ms again",
                  what, i, many[i]->decode_ms, many[i]->image_ms);
        CHECK(!one[i]->image_shared, "%s q%d: a single ask marked shared", what, i);
        CHECK((many[i]->heatmap_png != NULL) == (one[i]->heatmap_png != NULL), "%s q%d: heatmap only one way", what, i);
        if (many[i]->heatmap_png && one[i]->heatmap_png)
            CHECK(many[i]->heatmap_png_len == one[i]->heatmap_png_len &&
                      !memcmp(many[i]->heatmap_png, one[i]->heatmap_png, one[i]->heatmap_png_len),
                  "%s q%d: heatmaps differ", what, i);
        refused += many[i]->refused;
    }
    for (int i = 0; i < NQ; i++) {
        cxr_answer_free(many[i]);
        cxr_answer_free(one[i]);
    }
    return refused;
}

int main(int argc, char **argv) {
    if (argc != 6) {
        fprintf(stderr, "usage: test_ask_many MODEL.gguf CHEST.dcm OTHER.dcm NOT_A_CHEST.dcm BROKEN.dcm\n");
        return 2;
    }
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = argv[1];
    cxr_vqa *v = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_vqa_open(&p, &v, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "test_ask_many: %s\n", err);
        return 1;
    }
    int r = compare(v, argv[2], "chest");
    CHECK(r >= 1 && r < NQ, "chest: %d of %d refused (the weather question only expected)", r, NQ);
    compare(v, argv[3], "other chest"); /* after another image: nothing carried over */
    CHECK(compare(v, argv[4], "not a chest") == NQ, "not a chest: every question refused");
    /* a broken file: every question gets the error */
    cxr_answer *a[NQ];
    int rcs[NQ];
    int rc = cxr_vqa_ask_many_file(v, argv[5], Q, NQ, NULL, a, rcs);
    CHECK(rc != CXR_OK, "broken file answered");
    for (int i = 0; i < NQ; i++) {
        CHECK(a[i] && rcs[i] == rc && a[i]->error_code == rc && a[i]->error[0], "broken q%d: rc %d", i, rcs[i]);
        cxr_answer_free(a[i]);
    }
    /* the same image as bytes */
    FILE *f = fopen(argv[2], "rb");
    CHECK(f != NULL, "open %s", argv[2]);
    if (f) {
        fseek(f, 0, SEEK_END);
        long n = ftell(f);
        fseek(f, 0, SEEK_SET);
        char *buf = malloc((size_t)n);
        if (buf && fread(buf, 1, (size_t)n, f) == (size_t)n) {
            cxr_answer *b[2], *c = NULL;
            rc = cxr_vqa_ask_many_buffer(v, buf, (size_t)n, Q, 2, NULL, b, rcs);
            cxr_vqa_ask_buffer(v, buf, (size_t)n, Q[1], NULL, &c);
            CHECK(rc == CXR_OK && b[1] && c, "buffer: rc %d", rc);
            if (b[1] && c) same(b[1], c, "buffer", 1);
            cxr_answer_free(b[0]);
            cxr_answer_free(b[1]);
            cxr_answer_free(c);
        }
        free(buf);
        fclose(f);
    }
    CHECK(cxr_vqa_ask_many_file(v, argv[2], Q, 0, NULL, a, rcs) == CXR_ERR_ARG, "n = 0 accepted");
    cxr_vqa_close(v);
    return CHECK_SUMMARY();
}
