/*
 * cxr_dicom.h — chest radiograph ingestion: DICOM or PNG in, display-ready
 * 8-bit plane and model tensor out.
 *
 *   cxr_ingest_params p = cxr_ingest_params_default();
 *   cxr_image *img = NULL;
 *   char err[CXR_ERRMSG_MAX];
 *   int rc = cxr_image_load_file("chest.dcm", &p, &img, err, sizeof err);
 *   if (rc != CXR_OK) { fprintf(stderr, "%s: %s\n", cxr_strerror(rc), err); return 1; }
 *   const cxr_meta *m = cxr_image_meta(img);          // UIDs, patient, geometry …
 *   const uint8_t *px = cxr_image_pixels(img);        // m->out_rows × m->out_cols
 *   cxr_preproc spec = cxr_preproc_default();         // or from the model file
 *   float *t = malloc(cxr_preproc_tensor_len(&spec) * sizeof *t);
 *   rc = cxr_image_to_tensor(img, &spec, t);          // CHW float32
 *   cxr_image_free(img);
 *
 * The pipeline (PS3.3 C.11, PS3.4 N.2): stored values masked to Bits Stored /
 * High Bit, sign-extended when Pixel Representation is 1 → Modality LUT
 * (rescale or LUT Sequence) → VOI LUT (first window centre/width with
 * LINEAR, LINEAR_EXACT or SIGMOID, or the first VOI LUT Sequence item) or,
 * when no VOI information exists, the robust fallback window (0.5th–99.5th
 * percentile of the values inside the collimated field, i.e. excluding the
 * two extreme values of the histogram) → MONOCHROME1 inversion → 8 bits.
 * RGB / YBR images are reduced to luminance (ITU-R 601: .299 R + .587 G +
 * .114 B; the Y plane for YBR). Multi-frame: the first frame, with a warning.
 *
 * Compressed frames are checked structurally before any codec sees them,
 * and each decode runs with a deadline (cxr_ingest_params.decode_timeout_ms):
 * past it the call fails with CXR_ERR_DECODE_TIMEOUT and the process is
 * tainted (cxr_decode_tainted).
 *
 * Every entry point is thread-safe as long as distinct threads use distinct
 * images. Nothing here prints, exits or aborts on bad input; errors come
 * back as a negative CXR_ERR_* code plus a message in the caller's buffer.
 */
#ifndef CXR_DICOM_H
#define CXR_DICOM_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* ---------------------------------------------------------------- limits */

#define CXR_MAX_DIM 16384               /* rows or columns */
#define CXR_MAX_FRAMES 4096
#define CXR_MAX_PIXELS (64ull << 20)    /* rows × columns of the frame we decode */
#define CXR_MAX_DECODED_BYTES (1ull << 30) /* whole decoded pixel data */
#define CXR_MIN_DIM 32                  /* below: CXR_ERR_TOO_SMALL always */
#define CXR_SMALL_DIM 256               /* below: "small image" check */
#define CXR_DECODE_TIMEOUT_MS 10000     /* default deadline of one frame decode */

/* --------------------------------------------------------------- checks */

/* What to do when a clinical-plausibility check fires. Structural errors
 * (not an image, truncated, …) always fail; these are the caller's call. */
typedef enum {
    CXR_CHECK_IGNORE = 0,
    CXR_CHECK_WARN = 1,   /* load succeeds, a warning is recorded */
    CXR_CHECK_REFUSE = 2  /* load fails with the check's error code */
} cxr_check_action;

/* How to treat Photometric Interpretation MONOCHROME1/2. */
typedef enum {
    CXR_POLARITY_AUTO = 0,   /* trust the header unless the image clearly says
                                otherwise (chest-specific content check) */
    CXR_POLARITY_HEADER = 1  /* always trust the header */
} cxr_polarity_policy;

typedef struct {
    cxr_check_action not_chest;   /* modality not CR/DX or body part not chest */
    cxr_check_action lateral;     /* view position LL / RL / LATERAL */
    cxr_check_action small;       /* short side below CXR_SMALL_DIM (and at least min_dim) */
    int min_dim;                  /* short side below this: refused whatever `small` says
                                     (CXR_ERR_TOO_SMALL); a model's own input size (default 0) */
    cxr_polarity_policy polarity;
    int allow_png;                /* accept PNG input (default 1) */
    int threads;                  /* JPEG 2000 decoder threads (default 1) */
    cxr_check_action damaged;     /* corrupt but readable: a Pixel Data length past
                                     the end of the file or undefined on native
                                     pixels, frames after the first missing
                                     (default WARN; REFUSE fails with
                                     CXR_ERR_TRUNCATED or CXR_ERR_CORRUPT) */
    int decode_min_short;         /* decode at a reduced resolution where the codec
                                     can (JPEG 2000: whole wavelet levels), keeping
                                     the short side >= decode_min_short and the long
                                     side >= decode_min_long; both 0 (default):
                                     every pixel (cxrvqa ask: the model's input
                                     side, and the heatmap's when one is drawn) */
    int decode_min_long;
    unsigned decode_timeout_ms;   /* deadline of the frame decode (default
                                     CXR_DECODE_TIMEOUT_MS, or the environment's
                                     CXRVQA_DECODE_TIMEOUT_MS; 0: no deadline) */
    int allow_jpeg;               /* accept JPEG files (JFIF/EXIF: 8-bit grey or colour, colour read as
                                     grey, like PNG; default 1) */
} cxr_ingest_params;

/* The defaults above. Reads CXRVQA_DECODE_TIMEOUT_MS (milliseconds, 0..600000)
 * from the environment when set. */
cxr_ingest_params cxr_ingest_params_default(void);

/* How many decodes this process abandoned at their deadline (0: none).
 * Each left a thread behind that may still be running, with the memory it
 * uses: a long-lived process (a worker) should finish the request at hand
 * (it failed with CXR_ERR_DECODE_TIMEOUT) and exit, so that its supervisor
 * starts a clean one. Thread-safe. */
int cxr_decode_tainted(void);

/* ------------------------------------------------------------- metadata */

#define CXR_UID_MAX 68
#define CXR_STR_MAX 132
#define CXR_MAX_WARNINGS 8
#define CXR_WARNING_MAX 160

typedef enum { CXR_VOI_NONE = 0, CXR_VOI_WINDOW, CXR_VOI_LUT, CXR_VOI_FALLBACK, CXR_VOI_IDENTITY } cxr_voi_kind;
/* "window", "lut-sequence", "fallback-percentile", "identity" or "none". */
const char *cxr_voi_name(cxr_voi_kind k);

/* What a report about the image copies from it (dicom/cxr_sr.h): patient,
 * study and series identity, the image reference, and what its image library
 * entry describes (PS3.16 TID 1602, and TID 1603 for projection radiography).
 * Read by ingestion from the one parse of the file, so that a report needs
 * neither the file nor a second parse. Each value is the attribute as DCMTK
 * reads it: all its values joined by '\', padding removed. When the data set's
 * Specific Character Set is neither ISO_IR 6 nor ISO_IR 192 and a copied
 * patient/study value is not ASCII, the data set is converted to UTF-8 first
 * (as the report must be); charset_error says why when that fails.
 *
 * Values live in pool; a cxr_attr is a handle into it: the bytes are
 * pool[off .. off+len) followed by a NUL. len counts NUL bytes inside a value
 * (a hostile file), so compare with len, not strlen. off < 0: the attribute
 * is absent (an empty one has off >= 0, len 0). A code (cxr_code_attrs) is the
 * first item of its sequence; its fields are absent when there is no item. */
#define CXR_SOURCE_POOL 8192             /* bytes of all values; beyond: overflow */
#define CXR_SOURCE_MAX_MODIFIERS 4       /* View Modifier Code Sequence items kept */
#define CXR_SOURCE_ERR_MAX 192

typedef struct {
    int off, len;
} cxr_attr;

typedef struct {
    cxr_attr value, scheme, version, meaning;   /* (0008,0100) (0008,0102) (0008,0103) (0008,0104) */
    /* enhanced encoding: (0008,010F) (0008,0105) (0008,0106) (0008,010B) (0008,0107) (0008,010D) (0008,0117) */
    cxr_attr context_id, mapping_resource, context_version, extension_flag, local_version,
        extension_creator_uid, context_uid;
} cxr_code_attrs;

typedef struct {
    int valid;                          /* 1: read from a DICOM data set (0 for PNG input) */
    int has_pixel_data;                 /* Pixel Data, Float or Double Float Pixel Data present */
    int overflow;                       /* 1: the values did not fit in pool (some are absent) */
    char charset_error[CXR_SOURCE_ERR_MAX]; /* "" or why the conversion to UTF-8 failed */
    cxr_attr specific_character_set;    /* (0008,0005) as the file declares it */
    /* the image and its series */
    cxr_attr sop_class_uid, sop_instance_uid, series_uid;         /* (0008,0016) (0008,0018) (0020,000E) */
    /* patient and study, copied into the report header */
    cxr_attr patient_name, patient_id, issuer_of_patient_id;       /* (0010,0010) (0010,0020) (0010,0021) */
    cxr_attr patient_birth_date, patient_sex;                      /* (0010,0030) (0010,0040) */
    cxr_attr study_uid, study_date, study_time, accession_number;  /* (0020,000D) (0008,0020) (0008,0030) (0008,0050) */
    cxr_attr referring_physician, study_id, study_description;     /* (0008,0090) (0020,0010) (0008,1030) */
    /* image library entry descriptors */
    cxr_attr modality, body_part, image_laterality;                /* (0008,0060) (0018,0015) (0020,0062) */
    cxr_attr content_date, content_time, acquisition_date, acquisition_time; /* (0008,0023) (0008,0033) (0008,0022) (0008,0032) */
    cxr_attr frame_of_reference_uid, rows, columns;                /* (0020,0052) (0028,0010) (0028,0011) */
    cxr_attr patient_orientation, imager_pixel_spacing;           /* (0020,0020) (0018,1164) */
    cxr_attr positioner_primary_angle, positioner_secondary_angle; /* (0018,1510) (0018,1511) */
    cxr_code_attrs anatomic_region;     /* Anatomic Region Sequence (0008,2218) */
    cxr_code_attrs view;                /* View Code Sequence (0054,0220) */
    int n_view_modifiers;               /* items of its View Modifier Code Sequence (0054,0222); more
                                           than CXR_SOURCE_MAX_MODIFIERS sets overflow */
    cxr_code_attrs view_modifiers[CXR_SOURCE_MAX_MODIFIERS];
    int pool_used;
    char pool[CXR_SOURCE_POOL];
} cxr_source;

/* The bytes of a (len in *len when not NULL); NULL when absent. */
static inline const char *cxr_source_value(const cxr_source *s, cxr_attr a, int *len) {
    if (len) *len = a.off < 0 ? 0 : a.len;
    return a.off < 0 ? (const char *)0 : s->pool + a.off;
}

typedef struct {
    /* identity */
    char study_uid[CXR_UID_MAX], series_uid[CXR_UID_MAX], sop_uid[CXR_UID_MAX];
    char sop_class_uid[CXR_UID_MAX];
    char transfer_syntax_uid[CXR_UID_MAX];
    char transfer_syntax[64];          /* readable name, "PNG" for PNG input */
    char modality[17];
    char patient_id[CXR_STR_MAX], patient_name[CXR_STR_MAX];
    char patient_sex[17], patient_age[17], patient_birth_date[17];
    char accession_number[CXR_STR_MAX];
    char study_date[17], study_time[17];
    char body_part[CXR_STR_MAX], view_position[17], laterality[17];
    char manufacturer[CXR_STR_MAX];
    /* geometry and pixel format as declared */
    char photometric[17];
    int rows, cols, frames;
    int samples_per_pixel, planar_config;
    int bits_allocated, bits_stored, high_bit, pixel_representation;
    double pixel_spacing[2];           /* row, column spacing in mm; 0 if absent */
    int pixel_spacing_is_imager;       /* 1 when taken from Imager Pixel Spacing */
    double rescale_slope, rescale_intercept;
    int has_rescale, has_modality_lut_seq;
    double window_center, window_width; /* first window in the header; width 0 = none */
    int n_windows;
    char voi_function[17];
    int has_voi_lut_seq;
    /* what ingestion did */
    cxr_voi_kind voi_used;
    double voi_center, voi_width;      /* window actually applied (for WINDOW/FALLBACK) */
    int modality_lut_applied;          /* 0 none, 1 rescale, 2 LUT sequence */
    int inverted;                      /* MONOCHROME1 inversion applied */
    int polarity_from_content;         /* 1 when the content check overrode the header */
    double polarity_score;             /* >0: looks MONOCHROME2-like after display */
    int out_rows, out_cols;            /* the plane returned by cxr_image_pixels */
    int decode_reduce;                 /* resolution levels dropped at decode (cxr_ingest_params.
                                          decode_min_*): out = ceil(rows / 2^n); 0 = full */
    int n_warnings;
    char warnings[CXR_MAX_WARNINGS][CXR_WARNING_MAX];
    /* what a structured report copies from the source: filled for DICOM input
       once the data set is parsed and its attributes read (so also in the
       partial metadata of an image refused by a check or failing to decode);
       valid 0 for PNG input and for data that could not be parsed */
    cxr_source source;
} cxr_meta;

/* ---------------------------------------------------------------- images */

typedef struct cxr_image cxr_image;

/* Load a DICOM Part 10 file (with or without file meta header) or a PNG.
 * On success *out owns the image; free it with cxr_image_free. On failure
 * *out is NULL, the code is returned and err (if non-NULL) holds the detail. */
int cxr_image_load_file(const char *path, const cxr_ingest_params *p,
                        cxr_image **out, char *err, size_t errlen);

/* Same, from a memory buffer (e.g. the bytes Orthanc hands over). The buffer
 * is only read during the call. */
int cxr_image_load_buffer(const void *buf, size_t len, const cxr_ingest_params *p,
                          cxr_image **out, char *err, size_t errlen);

/* The same, and on failure *partial (if non-NULL) receives the metadata
 * read before the failure (identifiers, modality, …; fields not reached are
 * empty), so that a refused or broken file can still be named in an audit. */
int cxr_image_load_file_ex(const char *path, const cxr_ingest_params *p, cxr_image **out,
                           cxr_meta *partial, char *err, size_t errlen);
int cxr_image_load_buffer_ex(const void *buf, size_t len, const cxr_ingest_params *p,
                             cxr_image **out, cxr_meta *partial, char *err, size_t errlen);

void cxr_image_free(cxr_image *img);                 /* NULL is a no-op */

/* Load DCMTK's data dictionary (a text file of ~7,800 entries, 15-18 ms) on
 * a background thread, once per process, so that it overlaps other start-up
 * work (the model's open); the first ingestion waits for it through DCMTK's
 * own lock. cxr_dicom_warmup_wait joins the thread (call it before the
 * process ends normally). Both are no-ops after the first time. */
void cxr_dicom_warmup(void);
void cxr_dicom_warmup_wait(void);
const cxr_meta *cxr_image_meta(const cxr_image *img);
const uint8_t *cxr_image_pixels(const cxr_image *img); /* out_rows*out_cols, row-major */

/* Write the 8-bit plane as a grayscale PNG (replaced atomically). */
int cxr_image_write_png(const cxr_image *img, const char *path, char *err, size_t errlen);

/* Encode rows x cols 8-bit samples (channels 1: gray, 3: interleaved RGB) as
 * PNG into a malloc'd buffer (*out, *out_len; the caller frees it). fast: 1
 * compression level 1 with the SUB filter (full-size planes), 0 level 3.
 * CXR_ERR_ARG, CXR_ERR_NOMEM, CXR_ERR_INTERNAL (libpng failed). */
int cxr_png_encode(const uint8_t *px, int rows, int cols, int channels, int fast, uint8_t **out, size_t *out_len,
                   char *err, size_t errlen);

/* --------------------------------------------------------- preprocessing */

typedef enum { CXR_RESIZE_PAD = 0, CXR_RESIZE_CROP = 1, CXR_RESIZE_STRETCH = 2 } cxr_resize_policy;
typedef enum { CXR_INTERP_BICUBIC = 0, CXR_INTERP_BILINEAR = 1, CXR_INTERP_AREA = 2 } cxr_interp;

/* The preprocessing spec a model carries. Pixel values v in 0..255 become
 * (v * scale - mean[c]) / std[c]. PAD: resize the long side to size keeping
 * the aspect ratio, centre, pad with pad_value (0..255 before normalising).
 * CROP: resize the short side to size, centre crop. STRETCH: both to size. */
typedef struct {
    int size;               /* output is size × size */
    cxr_resize_policy policy;
    cxr_interp interp;
    int channels;           /* 1 or 3 (gray repeated) */
    float scale;            /* 1/255 for [0,1] models, 1 for 0..255 models */
    float mean[3], std[3];
    float pad_value;
} cxr_preproc;

cxr_preproc cxr_preproc_default(void);   /* 224, PAD, bicubic, 3 ch, CLIP mean/std */
int cxr_preproc_check(const cxr_preproc *s, char *err, size_t errlen);
size_t cxr_preproc_tensor_len(const cxr_preproc *s); /* channels*size*size */

/* Fill out (cxr_preproc_tensor_len floats, CHW) from the image's 8-bit plane. */
int cxr_image_to_tensor(const cxr_image *img, const cxr_preproc *s, float *out);

/* The same on a bare plane (used by tests and by PNG-free callers). */
int cxr_plane_to_tensor(const uint8_t *px, int rows, int cols, const cxr_preproc *s, float *out);

#ifdef __cplusplus
}
#endif
#endif /* CXR_DICOM_H */
