/*
 * cxrvqa.h — libcxrvqa: ask a question about a chest radiograph and get a
 * calibrated, explained answer. The one header a viewer integration needs.
 *
 *   cxr_vqa_params p = cxr_vqa_params_default();
 *   p.model_path = "model/cxrvqa-cxr-cnn.gguf";
 *   cxr_vqa *v; char err[CXR_ERRMSG_MAX];
 *   if (cxr_vqa_open(&p, &v, err, sizeof err) != CXR_OK) die(err);
 *   cxr_ask_options o = cxr_ask_options_default();
 *   cxr_answer *a = NULL;
 *   int rc = cxr_vqa_ask_file(v, "chest.dcm", "Is there a pleural effusion?", &o, &a);
 *   if (rc == CXR_OK) puts(a->text);          // "Yes — a pleural effusion is likely (…)"
 *   else fprintf(stderr, "%s\n", a ? a->error : "out of memory");
 *   char *json = cxr_answer_to_json(a);       // the `cxrvqa ask --json` object
 *   free(json); cxr_answer_free(a); cxr_vqa_close(v);
 *
 * A refusal (question or image outside what the model may answer) is an
 * answer (rc CXR_OK, a->refused = 1, a->reason says why). An error (file
 * unreadable or corrupt, model failure) returns its CXR_ERR_* code; the
 * answer struct is still filled with what is known (error, error_code,
 * question, model identity) so that it can be audited.
 *
 * Research use only: the default model is not a diagnostic device.
 *
 * Thread safety: one cxr_vqa serves one thread at a time (it owns a model
 * handle and its buffers); open one per thread. Answers are independent.
 */
#ifndef CXRVQA_H
#define CXRVQA_H

#include <stddef.h>
#include <stdint.h>
#include "cxr_common.h"
#include "cxr_dicom.h"
#include "cxr_version.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXRVQA_VERSION CXR_VERSION /* the project's one version (CMake project()) */
#define CXR_ANSWER_MAX_FINDINGS 32
#define CXR_ANSWER_MAX_WARNINGS 16

typedef struct cxr_vqa cxr_vqa;

/* Assessability: a finding is answered yes / no / uncertain only when its
 * validation evidence supports it: at least min_positives validation
 * positives and a 95% CI lower bound of the validation AUC of at least
 * min_auc_lo. Otherwise its decision is CXR_DECISION_NOT_ASSESSED (the
 * probability stays in the answer, for research). An assessable finding
 * whose CI lower bound is below full_auc_lo is answered with "limited
 * evidence". Open-vocabulary findings (no validation at all) are not
 * assessed unless open_vocab_validated. Defaults: 10, 0.60, 0.85, 0; a
 * model file may carry its own (model/FORMAT.md, cxr.assess.*), and a value
 * set here (>= 0) overrides both. */
typedef struct {
    int min_positives;          /* < 0: the model file's, else 10 */
    float min_auc_lo;           /* < 0: the model file's, else 0.60 */
    float full_auc_lo;          /* < 0: the model file's, else 0.85 */
    int open_vocab_validated;   /* < 0: the model file's, else 0 */
} cxr_assess_params;
#define CXR_ASSESS_MIN_POSITIVES 10
#define CXR_ASSESS_MIN_AUC_LO 0.60f
#define CXR_ASSESS_FULL_AUC_LO 0.85f

typedef struct {
    const char *model_path;     /* GGUF model (required) */
    int threads;                /* compute threads; 0 = auto: the online cores */
    cxr_ingest_params ingest;   /* default: non-chest and lateral images refused; images smaller than the
                                   model's input size refused, those under 256 px answered with a warning */
    int strict_domain;          /* 1: refuse images the model's domain check rejects (default 0: warn) */
    int full_decode;            /* 1: decode every pixel; 0 (default): a JPEG 2000 frame at the lowest
                                   resolution level whose short side is still >= the model's input side
                                   (and long side >= 3/4 of the heatmap's, when one is drawn); ingest.decode_min_*
                                   are set per request from this */
    cxr_assess_params assess;   /* when a finding may be answered yes or no (see below) */
} cxr_vqa_params;
cxr_vqa_params cxr_vqa_params_default(void);

/* Open the model (mmap + checks) and hash it (SHA-256, for provenance).
 * Errors: those of cxr_model_open, CXR_ERR_ARG when the model has no image
 * tower, text tower or findings. */
int cxr_vqa_open(const cxr_vqa_params *p, cxr_vqa **out, char *err, size_t errlen);
void cxr_vqa_close(cxr_vqa *v); /* NULL is a no-op */

typedef struct {
    char name[256], version[64], sha256[65], prompt_set_version[64];
} cxr_model_id;
const cxr_model_id *cxr_vqa_model_id(const cxr_vqa *v);

typedef struct {
    const char *lang;            /* "en", "zh" or NULL: the question's own language */
    int heatmap;                 /* 1: render the evidence heatmap PNG into the answer */
    const char *heatmap_finding; /* finding to map; NULL: the first finding answered */
    int heatmap_size;            /* longest side of the overlay, pixels (default 512) */
} cxr_ask_options;
cxr_ask_options cxr_ask_options_default(void);

typedef enum {
    CXR_DECISION_NO = 0,
    CXR_DECISION_YES = 1,
    CXR_DECISION_UNCERTAIN = 2,
    CXR_DECISION_REFUSED = 3,
    CXR_DECISION_ERROR = 4,
    CXR_DECISION_NOT_ASSESSED = 5 /* the model cannot assess this finding reliably (see cxr_assess_params) */
} cxr_decision;
/* "no", "yes", "uncertain", "refused", "error", "not-assessed" */
const char *cxr_decision_name(cxr_decision d);

typedef struct {
    char finding[64];            /* canonical name ("pleural_effusion") or open-vocabulary phrase */
    char display[96];            /* in the answer's language */
    char display_en[96];
    char code[24];               /* SNOMED CT id, "" when none */
    float z;                     /* uncalibrated logit */
    float probability;           /* calibrated when calibrated == 1 */
    float threshold, uncertain_low, uncertain_high;
    cxr_decision decision;       /* yes above uncertain_high, no below uncertain_low */
    int calibrated;              /* 0: open vocabulary or a finding without calibration */
    int in_model;                /* 1: the model's own finding; 0: scored open-vocabulary */
    float val_auc, val_auc_lo, val_auc_hi; /* NaN when not measured */
    int val_pos, val_neg;        /* validation cases behind val_auc (0 when none) */
    char tier[16];               /* "assessable", "limited" (limited evidence) or "not-assessed" */
    char side[16];               /* evidence side, patient orientation: "left", "right",
                                    "bilateral", "" (not localised / no side) */
    float left_share;            /* share of positive evidence on the patient's left, 0..1 (NaN: none) */
    float concentration;         /* share of the positive evidence in the strongest tenth of the image
                                    (0.1 spread evenly .. 1 one compact region; NaN: none); a side is
                                    given only from 0.35 up, else the evidence is "not localised" */
} cxr_answer_finding;

typedef struct {
    /* the question and how it was understood */
    char question[2049];
    char language[4];            /* answer language */
    char intent[16];             /* presence | multi | overview | laterality | refuse */
    int negated, rule_out;
    /* the answer */
    cxr_decision answer;
    char text[2048];             /* one or two sentences in `language` */
    int refused;
    char reason_code[32];        /* refusal: question refusal name or ingest check ("not-chest") */
    char reason[512];
    int n_findings;
    cxr_answer_finding findings[CXR_ANSWER_MAX_FINDINGS];
    int n_warnings;
    char warnings[CXR_ANSWER_MAX_WARNINGS][256];
    /* the image */
    int has_image;               /* meta is valid */
    cxr_meta meta;               /* ingestion summary and identifiers */
    float domain_score, domain_threshold; /* prototype cosine check; NaN when not computed */
    float domain_distance, domain_warn, domain_refuse; /* density check on the image features;
                                   NaN when absent */
    float layout_distance, layout_warn, layout_refuse; /* layout check on the image itself; NaN when
                                   absent. Refused when either distance is above its refuse
                                   limit or both are above their warn limits (model/FORMAT.md) */
    /* provenance and cost */
    cxr_model_id model;
    double decode_ms, preprocess_ms, image_ms, score_ms, heatmap_ms, total_ms;
    /* evidence */
    uint8_t *heatmap_png;        /* owned by the answer; NULL unless asked for */
    size_t heatmap_png_len;
    char heatmap_finding[64];
    /* errors */
    int error_code;              /* CXR_OK for answers and refusals */
    char error[CXR_ERRMSG_MAX];
    /* 1: asked with other questions about the same image
       (cxr_vqa_ask_many_*), whose first answer paid the decode and the
       image tower: this one's decode/preprocess/image times are 0 */
    int image_shared;
} cxr_answer;

/* Answer question about the image in a file (DICOM or PNG) or a buffer.
 * *out is always allocated (NULL only when out of memory) and freed with
 * cxr_answer_free. Returns CXR_OK for an answer or a refusal; else the
 * error code (also in (*out)->error_code). */
int cxr_vqa_ask_file(cxr_vqa *v, const char *path, const char *question, const cxr_ask_options *o,
                     cxr_answer **out);
int cxr_vqa_ask_buffer(cxr_vqa *v, const void *buf, size_t len, const char *question,
                       const cxr_ask_options *o, cxr_answer **out);
void cxr_answer_free(cxr_answer *a); /* NULL is a no-op */

/* Several questions (n ≥ 1) about one image, answered as cxr_vqa_ask_file /
 * _buffer would answer each, with the image read, decoded and run through
 * the image tower once (a screening image's questions; one SR for them:
 * cxr_answers_write_sr). out[i] and, when rcs is not NULL, rcs[i] receive
 * question i's answer and return code; the return value is the first
 * return code that is not CXR_OK, else CXR_OK. */
int cxr_vqa_ask_many_file(cxr_vqa *v, const char *path, const char *const *questions, int n,
                          const cxr_ask_options *o, cxr_answer **out, int *rcs);
int cxr_vqa_ask_many_buffer(cxr_vqa *v, const void *buf, size_t len, const char *const *questions, int n,
                            const cxr_ask_options *o, cxr_answer **out, int *rcs);

/* The answer as one JSON object (fields of `cxrvqa ask --json`), malloc'd,
 * caller frees; NULL when out of memory. */
char *cxr_answer_to_json(const cxr_answer *a);

/* Lowercase hex SHA-256 of a file (the model's identity in answers, audit
 * rows and request keys). CXR_ERR_IO when it cannot be read. */
int cxr_file_sha256(const char *path, char hex[65]);

/* Write the answer as a DICOM Comprehensive SR (TID 1500; dicom/cxr_sr.h)
 * that joins the source image's study: one measurement group per finding
 * answered, presence yes/no/uncertain → present/absent/indeterminate,
 * verification UNVERIFIED. The source attributes come from a->meta.source,
 * captured when the image was ingested: the image is not read again.
 * Refusals, errors and PNG sources get no SR
 * (CXR_ERR_ARG / CXR_ERR_SR with the reason in err). Nothing partial is
 * ever left behind. */
typedef struct {
    const char *out_dir;     /* write <out_dir>/<SOPInstanceUID>.dcm; NULL: bytes in buf */
    const char *uid_root;    /* NULL: the default root */
    /* filled in */
    char sop_instance_uid[65], series_instance_uid[65];
    char path[4096];
    uint8_t *buf;            /* malloc'd when out_dir is NULL; the caller frees it */
    size_t len;
} cxr_sr_output;
int cxr_answer_write_sr(const cxr_answer *a, cxr_sr_output *o, char *err, size_t errlen);
/* One SR for several answers about the same image by the same model (one
 * image's screening questions): every finding of every answer that is not a
 * refusal or an error becomes one measurement group (a finding asked twice:
 * its first answer), the questions and answers are the report's question
 * and answer texts, one per line. CXR_ERR_ARG when no answer can be
 * reported or the answers are about different images or models. */
int cxr_answers_write_sr(const cxr_answer *const *a, int n, cxr_sr_output *o, char *err, size_t errlen);

/* Score every finding of the model on the image in a file, with no
 * question: the image goes through the same ingestion and refusal checks
 * as cxr_vqa_ask_file (header checks, small image, image-domain checks), then
 * (*out)->findings[i] holds the model's finding i (up to
 * CXR_ANSWER_MAX_FINDINGS) with its raw z and its probability under the
 * file's calibration, decision and tier as an ask would give them. No
 * sentence, evidence side or heatmap; intent is "score". Refusals and
 * errors come back as from cxr_vqa_ask_file. For `cxrvqa validate`. */
int cxr_vqa_score_file(cxr_vqa *v, const char *path, cxr_answer **out);

#ifdef __cplusplus
}
#endif
#endif
