/* The README's example: link against libcxrvqa.so, ask one question, print
 * the answer and its JSON. Usage: example_ask MODEL.gguf IMAGE "QUESTION" */
#include "cxrvqa.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>

int main(int argc, char **argv) {
    if (argc != 4) {
        fprintf(stderr, "usage: example_ask MODEL.gguf IMAGE \"QUESTION\"\n");
        return 2;
    }
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = argv[1];
    cxr_vqa *v = NULL;
    char err[CXR_ERRMSG_MAX];
    if (cxr_vqa_open(&p, &v, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "example_ask: %s\n", err);
        return 1;
    }
    cxr_ask_options o = cxr_ask_options_default();
    cxr_answer *a = NULL;
    int rc = cxr_vqa_ask_file(v, argv[2], argv[3], &o, &a);
    if (rc != CXR_OK) {
        fprintf(stderr, "example_ask: %s\n", a ? a->error : cxr_strerror(rc));
        cxr_answer_free(a);
        cxr_vqa_close(v);
        return 1;
    }
    printf("%s\n", a->text);
    char *json = cxr_answer_to_json(a);
    int ok = json && strstr(json, "\"answer\"") && a->n_findings >= 1;
    if (json) printf("%s\n", json);
    free(json);
    cxr_answer_free(a);
    cxr_vqa_close(v);
    return ok ? 0 : 1;
}
