/*
 * cxr_sr.h — write the answer of cxrvqa back to the PACS as a DICOM
 * Structured Report, read one back, render one as HTML (dicom/sr_writer.cpp,
 * DCMTK dcmsr). The report is a Comprehensive SR whose content follows
 * TID 1500 "Imaging Measurement Report" as IHE AIR uses it: the algorithm is
 * the device observer, the source image is in the image library and in the
 * evidence, each finding asked about is one TID 1501 measurement group.
 *
 * Usage:
 *
 *     cxr_sr_finding f = { "pleural_effusion", "Pleural effusion", "60046008",
 *                          CXR_SR_PRESENT, 0.87, 0.50, 1, NULL };
 *     cxr_image *img;                       // the image, ingested once (cxr_dicom.h)
 *     if (cxr_image_load_file("image.dcm", NULL, &img, NULL, 0)) return;
 *     cxr_sr_request r = cxr_sr_request_default();
 *     r.source = &cxr_image_meta(img)->source; // what ingestion captured for reports
 *     r.question = "Is there a pleural effusion?";
 *     r.answer_text = "Yes (p = 0.87)";
 *     r.findings = &f; r.n_findings = 1;
 *     r.algorithm_name = "cxrvqa"; r.algorithm_version = CXR_VERSION;
 *     cxr_sr_ids ids; char path[4096], err[CXR_ERRMSG_MAX];
 *     if (cxr_sr_write_file(&r, "/var/spool/sr", &ids, path, sizeof path, err, sizeof err))
 *         fprintf(stderr, "cxrvqa: %s\n", err);
 *     cxr_image_free(img);
 *
 * Codes written (PS3.16 unless marked private):
 *   document title           (126000, DCM, "Imaging Measurement Report")
 *   language (TID 1204)      (eng, RFC5646, "English") or (zh, RFC5646, "Chinese")
 *   procedure reported       (399208008, SCT, "Plain chest X-ray") — view-agnostic;
 *                            LOINC 36643-5 would claim two views
 *   finding (121071, DCM)    (<snomed>, SCT, <display>) or, without a SNOMED CT id,
 *                            (<name>, 99CXRVQA, <display>) (private scheme, declared in
 *                            the Coding Scheme Identification Sequence)
 *   presence                 concept (705057003, SCT, "Presence"), value from CID 240
 *                            "Present-Absent": (52101004, SCT, "Present"),
 *                            (272519000, SCT, "Absent"), (373068000, SCT, "Undetermined")
 *   probability              NUM (122157, DCM, "Probability") in (1, UCUM, "no units"):
 *                            a probability is a ratio of counts, UCUM unity "1"; it is
 *                            in CID 7181, which TID 1501 names for its units, whereas
 *                            "{probability}" is an annotation readers cannot compare
 *   decision threshold       NUM (threshold, 99CXRVQA, "Decision threshold"), same unit
 *   calibration note         TEXT (calibration, 99CXRVQA, "Probability calibration")
 *   question / answer        TEXT (question, 99CXRVQA, "Question"), (answer, 99CXRVQA,
 *                            "Answer") among the report-level qualitative evaluations
 *   algorithm (TID 4019)     111001 name, 111003 version, 111002 parameters
 *                            ("model_sha256=…", "prompt_set_version=…", parameters),
 *                            in every measurement group
 * Numbers are written twice: as a decimal string (DS, 16 characters at most) and
 * as the exact double (Floating Point Value); the reader returns the double.
 *
 * Header: Modality SR, Completion Flag COMPLETE (the report holds everything this
 * run concluded; a later run writes a new instance, it never completes this one),
 * Verification Flag UNVERIFIED (no person has checked it), Patient / Study attributes
 * copied from the source so the SR joins its study, Current Requested Procedure
 * Evidence referencing the source, Contributing Equipment (Newcode1, 99IHE,
 * "Processing Algorithm"), Specific Character Set ISO_IR 192 when any text is not
 * ASCII (source values are converted to UTF-8 first).
 *
 * The source is never read again: the writer takes the attributes ingestion
 * captured from its one parse of the image (cxr_source in cxr_dicom.h) and
 * builds the reference and the copied header from them.
 *
 * Thread safety: every function may be called from several threads at once (no
 * shared state besides DCMTK's internally locked dictionaries). Nothing prints,
 * nothing exits; every C++ exception is caught at this border.
 */
#ifndef CXR_SR_H
#define CXR_SR_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"
#include "cxr_dicom.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_SR_MAX_FINDINGS 32    /* measurement groups per report */
#define CXR_SR_MAX_TEXT 16384     /* bytes of question, answer or parameters */
#define CXR_SR_DEFAULT_UID_ROOT "1.2.826.0.1.3680043.10.1450"

typedef enum {
    CXR_SR_PRESENT = 0,
    CXR_SR_ABSENT = 1,
    CXR_SR_INDETERMINATE = 2
} cxr_sr_presence;

/* One finding asked about. Strings are UTF-8 and borrowed for the call. */
typedef struct {
    const char *name;      /* canonical, [A-Za-z0-9_.-]{1,63} ("pleural_effusion"):
                              the tracking identifier, and the private code value */
    const char *display;   /* code meaning, 1..64 characters ("Pleural effusion") */
    const char *snomed;    /* SNOMED CT id, 6..18 digits ("60046008"); NULL or "" →
                              private code (name, 99CXRVQA, display) */
    cxr_sr_presence presence;
    double probability;    /* 0..1 */
    double threshold;      /* 0..1, the decision threshold used for presence */
    int calibrated;        /* 0 → the report says the number is an uncalibrated score */
    const char *note;      /* optional, at most 1024 bytes of UTF-8 text: why the presence is what it
                              is (e.g. why the finding was not assessed), written as a text evaluation
                              (assessment, 99CXRVQA, "Assessment") in the finding's group */
} cxr_sr_finding;

/* What to write. Start from cxr_sr_request_default(); NULL optional strings are
 * left out. Strings are UTF-8 without control characters (question and answer
 * may hold TAB, LF, CR); short fields (names, versions, manufacturer, serial)
 * may not hold '\'. Everything is borrowed for the duration of the call. */
typedef struct {
    /* required: the source image's attributes as ingestion captured them
       (cxr_image_meta(img)->source, or cxr_answer.meta.source). Patient and
       study attributes are copied from it verbatim (already converted to
       UTF-8 when its Specific Character Set is another one); it must be from
       a DICOM data set (valid), carry SOP Class, SOP Instance, Study and
       Series Instance UIDs (digits and dots, at most 64), pixel data, copied
       text valid in its declared character set, and no overflow or
       charset_error; otherwise CXR_ERR_SR. Its image library entry gets the
       TID 1602 descriptors and, for projection radiography (CR, DX, …), the
       TID 1603 ones; the cross-sectional ones (TID 1604-1607: CT, MR, PET)
       are not captured. */
    const cxr_source *source;
    const char *question;          /* required */
    const char *answer_text;       /* required */
    const char *language;          /* "en" (default) or "zh" */
    const cxr_sr_finding *findings;
    int n_findings;                /* 1..CXR_SR_MAX_FINDINGS */
    /* TID 4019 and the device observer (TID 1004) */
    const char *algorithm_name;    /* required, at most 64 bytes */
    const char *algorithm_version; /* required, at most 64 bytes */
    const char *model_sha256;      /* optional, 64 hex digits */
    const char *prompt_set_version;/* optional, at most 64 bytes */
    const char *parameters;        /* optional, free text */
    const char *uid_root;          /* NULL → CXR_SR_DEFAULT_UID_ROOT; at most 40 characters */
    const char *manufacturer;      /* optional; NULL → "cxrvqa" */
    const char *device_serial;     /* optional */
    const char *series_uid;        /* optional: add to this SR series; NULL → the series of
                                      (study, model): cxr_sr_series_uid() when model_sha256 is
                                      set, else a new random series */
    int series_number;             /* 0 → cxr_sr_series_number(model_sha256) */
    int instance_number;           /* 0 → seconds since 2020-01-01 UTC (later reports list last) */
} cxr_sr_request;

/* One SR series of AI results per model version in a study. Every report
 * about a study written with the same model file (model_sha256) goes into the
 * same series, whichever run, process or machine writes it; a later request
 * adds a new instance (superseded ones stay), a new model starts a new series.
 *   Series Instance UID  <uid_root>.8.<the first 16 bytes of
 *                        SHA-256("cxrvqa-sr-series" NUL study_uid NUL
 *                        lowercase model_sha256) as a decimal number>, cut to
 *                        64 characters
 *   Series Number        9100 + (first 32 bits of model_sha256) mod 900, so
 *                        9100..9999: stable per model, never 9001 (the fixed
 *                        number of reports written before this rule)
 *   Series Description   "AI <name> <version> model <first 12 hex of the
 *                        SHA-256> UNVERIFIED" (64 characters at most)
 * cxr_sr_series_uid returns CXR_ERR_ARG for an invalid root or study UID or a
 * model_sha256 that is not 64 hex digits. cxr_sr_series_number returns 9001
 * without a model_sha256. */
#define CXR_SR_SERIES_DESC_MAX 65
int cxr_sr_series_uid(const char *uid_root, const char *study_uid, const char *model_sha256, char out[65]);
int cxr_sr_series_number(const char *model_sha256);
void cxr_sr_series_description(const char *algorithm_name, const char *algorithm_version,
                               const char *model_sha256, char *out, size_t n);

/* UIDs of the instance written. */
typedef struct {
    char sop_instance_uid[65];
    char series_instance_uid[65];
} cxr_sr_ids;

/* A request with every field empty, language "en". */
cxr_sr_request cxr_sr_request_default(void);

/* Build the SR and write it as <out_dir>/<SOPInstanceUID>.dcm, mode 0644. The
 * name never comes from source data. The file is written under a temporary
 * name in out_dir, synced and renamed: no partial SR is ever visible, and on
 * failure nothing is left behind.
 *   ids       may be NULL; receives the new UIDs
 *   path_out  may be NULL; receives the path written (CXR_ERR_ARG if too short)
 * Returns CXR_OK; CXR_ERR_ARG (invalid request, see the field notes);
 * CXR_ERR_SR (source is not a usable DICOM image, see the source field, or the
 * report cannot be built);
 * CXR_ERR_IO (out_dir cannot be written); CXR_ERR_NOMEM. err gets the detail. */
int cxr_sr_write_file(const cxr_sr_request *r, const char *out_dir, cxr_sr_ids *ids,
                      char *path_out, size_t path_len, char *err, size_t errlen);

/* The same SR as a Part 10 byte stream in *buf (malloc'd, the caller frees it
 * with free()); *buf is NULL and *len 0 on failure. Same return codes. */
int cxr_sr_write_buffer(const cxr_sr_request *r, cxr_sr_ids *ids, uint8_t **buf,
                        size_t *len, char *err, size_t errlen);

/* ---- reading back an SR written by cxr_sr_write_* (tests, audits) ---- */

typedef struct {
    char name[64];       /* tracking identifier */
    char code[64];       /* finding code value */
    char scheme[16];     /* "SCT" or "99CXRVQA" */
    char display[96];    /* code meaning */
    char tracking_uid[65];
    cxr_sr_presence presence;
    double probability, threshold;
    int calibrated;
} cxr_sr_read_finding;

typedef struct {
    char sop_instance_uid[65], series_instance_uid[65], study_uid[65];
    char source_sop_uid[65], source_sop_class[65]; /* from the image library */
    char language[16];                             /* "eng", "zh" */
    char question[1024], answer[1024];              /* truncated if longer */
    char algorithm_name[128], algorithm_version[64], model_sha256[72];
    char completion[16], verification[16];         /* "COMPLETE", "UNVERIFIED" */
    int n_findings;
    cxr_sr_read_finding findings[CXR_SR_MAX_FINDINGS];
} cxr_sr_summary;

/* Parse an SR and fill *out. Returns CXR_OK; CXR_ERR_IO (cannot open);
 * CXR_ERR_SR (not an SR, or not a TID 1500 report as written here);
 * CXR_ERR_ARG (NULL arguments). */
int cxr_sr_read_file(const char *path, cxr_sr_summary *out, char *err, size_t errlen);

/* Render an SR file as HTML (DCMTK DSRDocument::renderHTML, what dsr2html
 * prints), written atomically to html_path. Same return codes as read. */
int cxr_sr_to_html(const char *sr_path, const char *html_path, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* CXR_SR_H */
