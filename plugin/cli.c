/*
 * cli.c — the `cxrvqa` command line: one binary, subcommands. This file owns
 * argument parsing, output formatting (text and JSON via cJSON) and the
 * translation of library errors into `cxrvqa: FILE: message` plus a non-zero
 * exit status. It holds no pixel or model logic of its own.
 *
 * Exit status: 0 success, 1 the input was refused or could not be read,
 * 2 usage error, 3 output could not be written.
 */
#include "cxr_dicom.h"

#include <cjson/cJSON.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#define CXRVQA_VERSION "0.1.0"

static void usage(FILE *f) {
    fprintf(f,
            "usage: cxrvqa <command> [options]\n"
            "\n"
            "commands:\n"
            "  inspect FILE [--json] [--png OUT.png] [--tensor OUT.f32] [options]\n"
            "      Ingest a DICOM or PNG chest radiograph and report its metadata and what\n"
            "      the pixel pipeline did (transfer syntax, LUTs, window, inversion, warnings).\n"
            "      --png OUT.png        write the normalised 8-bit image\n"
            "      --tensor OUT.f32     write the model tensor (float32, CHW, little endian)\n"
            "      --size N --policy pad|crop|stretch --interp bicubic|bilinear|area\n"
            "      --channels 1|3 --mean M[,M,M] --std S[,S,S] --scale K\n"
            "                           preprocessing spec for --tensor (default: 224, pad,\n"
            "                           bicubic, 3 channels, CLIP mean/std, scale 1/255)\n"
            "      --strict             refuse (instead of warn) non-chest, lateral, small images\n"
            "      --trust-header       never override MONOCHROME1/2 from image content\n"
            "      --threads N          JPEG 2000 decoder threads (default 1)\n"
            "  version\n");
}

static const char *voi_name(cxr_voi_kind k) {
    switch (k) {
    case CXR_VOI_WINDOW: return "window";
    case CXR_VOI_LUT: return "lut-sequence";
    case CXR_VOI_FALLBACK: return "fallback-percentile";
    case CXR_VOI_IDENTITY: return "identity";
    default: return "none";
    }
}

static const char *mlut_name(int k) { return k == 2 ? "lut-sequence" : k == 1 ? "rescale" : "none"; }

static int parse_floats(const char *s, float *v, int n) {
    char *end;
    int k = 0;
    while (k < n) {
        v[k++] = strtof(s, &end);
        if (end == s) return -1;
        if (*end == '\0') break;
        if (*end != ',') return -1;
        s = end + 1;
    }
    for (int i = k; i < n; i++) v[i] = v[k - 1];
    return 0;
}

static cJSON *meta_json(const char *path, const cxr_meta *m) {
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", path);
    cJSON_AddStringToObject(o, "transfer_syntax", m->transfer_syntax);
    cJSON_AddStringToObject(o, "transfer_syntax_uid", m->transfer_syntax_uid);
    cJSON_AddStringToObject(o, "sop_class_uid", m->sop_class_uid);
    cJSON_AddStringToObject(o, "study_instance_uid", m->study_uid);
    cJSON_AddStringToObject(o, "series_instance_uid", m->series_uid);
    cJSON_AddStringToObject(o, "sop_instance_uid", m->sop_uid);
    cJSON_AddStringToObject(o, "modality", m->modality);
    cJSON *pt = cJSON_AddObjectToObject(o, "patient");
    cJSON_AddStringToObject(pt, "id", m->patient_id);
    cJSON_AddStringToObject(pt, "name", m->patient_name);
    cJSON_AddStringToObject(pt, "sex", m->patient_sex);
    cJSON_AddStringToObject(pt, "age", m->patient_age);
    cJSON_AddStringToObject(pt, "birth_date", m->patient_birth_date);
    cJSON_AddStringToObject(o, "accession_number", m->accession_number);
    cJSON_AddStringToObject(o, "study_date", m->study_date);
    cJSON_AddStringToObject(o, "body_part", m->body_part);
    cJSON_AddStringToObject(o, "view_position", m->view_position);
    cJSON_AddStringToObject(o, "laterality", m->laterality);
    cJSON_AddStringToObject(o, "manufacturer", m->manufacturer);
    cJSON_AddStringToObject(o, "photometric", m->photometric);
    cJSON_AddNumberToObject(o, "rows", m->rows);
    cJSON_AddNumberToObject(o, "columns", m->cols);
    cJSON_AddNumberToObject(o, "frames", m->frames);
    cJSON_AddNumberToObject(o, "samples_per_pixel", m->samples_per_pixel);
    cJSON_AddNumberToObject(o, "bits_allocated", m->bits_allocated);
    cJSON_AddNumberToObject(o, "bits_stored", m->bits_stored);
    cJSON_AddNumberToObject(o, "high_bit", m->high_bit);
    cJSON_AddNumberToObject(o, "pixel_representation", m->pixel_representation);
    if (m->pixel_spacing[0] > 0) {
        cJSON *ps = cJSON_AddArrayToObject(o, m->pixel_spacing_is_imager ? "imager_pixel_spacing" : "pixel_spacing");
        cJSON_AddItemToArray(ps, cJSON_CreateNumber(m->pixel_spacing[0]));
        cJSON_AddItemToArray(ps, cJSON_CreateNumber(m->pixel_spacing[1]));
    }
    if (m->has_rescale) {
        cJSON_AddNumberToObject(o, "rescale_slope", m->rescale_slope);
        cJSON_AddNumberToObject(o, "rescale_intercept", m->rescale_intercept);
    }
    if (m->n_windows > 0) {
        cJSON_AddNumberToObject(o, "window_center", m->window_center);
        cJSON_AddNumberToObject(o, "window_width", m->window_width);
        cJSON_AddNumberToObject(o, "window_count", m->n_windows);
    }
    cJSON *ing = cJSON_AddObjectToObject(o, "ingestion");
    cJSON_AddStringToObject(ing, "modality_lut", mlut_name(m->modality_lut_applied));
    cJSON_AddStringToObject(ing, "voi", voi_name(m->voi_used));
    if (m->voi_used == CXR_VOI_WINDOW || m->voi_used == CXR_VOI_FALLBACK) {
        cJSON_AddNumberToObject(ing, "window_center", m->voi_center);
        cJSON_AddNumberToObject(ing, "window_width", m->voi_width);
        cJSON_AddStringToObject(ing, "voi_function",
                                m->voi_used == CXR_VOI_FALLBACK ? "LINEAR_EXACT"
                                : m->voi_function[0]            ? m->voi_function
                                                                : "LINEAR");
    }
    cJSON_AddBoolToObject(ing, "inverted", m->inverted);
    cJSON_AddStringToObject(ing, "polarity_trusted", m->polarity_from_content ? "pixels" : "header");
    cJSON_AddNumberToObject(ing, "polarity_score", m->polarity_score);
    cJSON_AddNumberToObject(ing, "output_rows", m->out_rows);
    cJSON_AddNumberToObject(ing, "output_columns", m->out_cols);
    cJSON *w = cJSON_AddArrayToObject(o, "warnings");
    for (int i = 0; i < m->n_warnings; i++) cJSON_AddItemToArray(w, cJSON_CreateString(m->warnings[i]));
    return o;
}

static void meta_text(const char *path, const cxr_meta *m) {
    printf("file:              %s\n", path);
    printf("transfer syntax:   %s%s%s%s\n", m->transfer_syntax, m->transfer_syntax_uid[0] ? " (" : "",
           m->transfer_syntax_uid, m->transfer_syntax_uid[0] ? ")" : "");
    printf("SOP class:         %s\n", m->sop_class_uid);
    printf("SOP instance:      %s\n", m->sop_uid);
    printf("study / series:    %s / %s\n", m->study_uid, m->series_uid);
    printf("patient:           id '%s' name '%s' sex '%s' age '%s' born '%s'\n", m->patient_id,
           m->patient_name, m->patient_sex, m->patient_age, m->patient_birth_date);
    printf("accession:         %s\n", m->accession_number);
    printf("modality:          %s, body part '%s', view '%s', laterality '%s'\n", m->modality, m->body_part,
           m->view_position, m->laterality);
    printf("manufacturer:      %s\n", m->manufacturer);
    printf("image:             %d x %d, %d frame(s), %d sample(s), %s\n", m->cols, m->rows, m->frames,
           m->samples_per_pixel, m->photometric);
    printf("bits:              allocated %d, stored %d, high bit %d, %s\n", m->bits_allocated, m->bits_stored,
           m->high_bit, m->pixel_representation ? "signed" : "unsigned");
    if (m->pixel_spacing[0] > 0)
        printf("%s %.4g x %.4g mm\n", m->pixel_spacing_is_imager ? "imager spacing:   " : "pixel spacing:    ",
               m->pixel_spacing[0], m->pixel_spacing[1]);
    printf("modality LUT:      %s", mlut_name(m->modality_lut_applied));
    if (m->modality_lut_applied == 1) printf(" (slope %g, intercept %g)", m->rescale_slope, m->rescale_intercept);
    printf("\n");
    printf("VOI:               %s", voi_name(m->voi_used));
    if (m->voi_used == CXR_VOI_WINDOW)
        printf(" centre %g width %g %s%s", m->voi_center, m->voi_width,
               m->voi_function[0] ? m->voi_function : "LINEAR", m->n_windows > 1 ? " (first of several)" : "");
    if (m->voi_used == CXR_VOI_FALLBACK) printf(" centre %g width %g", m->voi_center, m->voi_width);
    printf("\n");
    printf("inverted:          %s (polarity from %s, score %.3f)\n", m->inverted ? "yes" : "no",
           m->polarity_from_content ? "pixels" : "header", m->polarity_score);
    for (int i = 0; i < m->n_warnings; i++) printf("warning:           %s\n", m->warnings[i]);
}

static int cmd_inspect(int argc, char **argv) {
    const char *file = NULL, *png = NULL, *tensor = NULL;
    int json = 0;
    cxr_ingest_params p = cxr_ingest_params_default();
    cxr_preproc s = cxr_preproc_default();
    for (int i = 0; i < argc; i++) {
        const char *a = argv[i];
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(a, "--json")) json = 1;
        else if (!strcmp(a, "--strict")) p.not_chest = p.lateral = p.small = CXR_CHECK_REFUSE;
        else if (!strcmp(a, "--trust-header")) p.polarity = CXR_POLARITY_HEADER;
        else if (v && !strcmp(a, "--png")) png = argv[++i];
        else if (v && !strcmp(a, "--tensor")) tensor = argv[++i];
        else if (v && !strcmp(a, "--threads")) p.threads = atoi(argv[++i]);
        else if (v && !strcmp(a, "--size")) s.size = atoi(argv[++i]);
        else if (v && !strcmp(a, "--channels")) s.channels = atoi(argv[++i]);
        else if (v && !strcmp(a, "--scale")) s.scale = strtof(argv[++i], NULL);
        else if (v && !strcmp(a, "--mean")) { if (parse_floats(argv[++i], s.mean, 3)) goto bad; }
        else if (v && !strcmp(a, "--std")) { if (parse_floats(argv[++i], s.std, 3)) goto bad; }
        else if (v && !strcmp(a, "--policy")) {
            i++;
            if (!strcmp(v, "pad")) s.policy = CXR_RESIZE_PAD;
            else if (!strcmp(v, "crop")) s.policy = CXR_RESIZE_CROP;
            else if (!strcmp(v, "stretch")) s.policy = CXR_RESIZE_STRETCH;
            else goto bad;
        } else if (v && !strcmp(a, "--interp")) {
            i++;
            if (!strcmp(v, "bicubic")) s.interp = CXR_INTERP_BICUBIC;
            else if (!strcmp(v, "bilinear")) s.interp = CXR_INTERP_BILINEAR;
            else if (!strcmp(v, "area")) s.interp = CXR_INTERP_AREA;
            else goto bad;
        } else if (a[0] == '-' && a[1]) goto bad;
        else if (!file) file = a;
        else goto bad;
    }
    if (!file) goto bad;
    char err[CXR_ERRMSG_MAX];
    if (tensor && cxr_preproc_check(&s, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", err);
        return 2;
    }
    cxr_image *img = NULL;
    int rc = cxr_image_load_file(file, &p, &img, err, sizeof err);
    if (rc != CXR_OK) {
        if (json) {
            cJSON *o = cJSON_CreateObject();
            cJSON_AddStringToObject(o, "file", file);
            cJSON_AddStringToObject(o, "error", cxr_strerror(rc));
            cJSON_AddNumberToObject(o, "code", rc);
            cJSON_AddStringToObject(o, "message", err);
            char *txt = cJSON_Print(o);
            if (txt) puts(txt);
            free(txt);
            cJSON_Delete(o);
        }
        fprintf(stderr, "cxrvqa: %s: %s (%s)\n", file, err, cxr_strerror(rc));
        return 1;
    }
    const cxr_meta *m = cxr_image_meta(img);
    int status = 0;
    if (png && cxr_image_write_png(img, png, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s: %s\n", png, err[0] ? err : "cannot write PNG");
        status = 3;
    }
    if (tensor && status == 0) {
        size_t n = cxr_preproc_tensor_len(&s);
        float *t = malloc(n * sizeof *t);
        FILE *fp = NULL;
        if (!t || cxr_image_to_tensor(img, &s, t) != CXR_OK || !(fp = fopen(tensor, "wb")) ||
            fwrite(t, sizeof *t, n, fp) != n) {
            fprintf(stderr, "cxrvqa: %s: cannot write tensor\n", tensor);
            status = 3;
        }
        if (fp && fclose(fp) != 0) status = 3;
        free(t);
    }
    if (json) {
        cJSON *o = meta_json(file, m);
        char *txt = cJSON_Print(o);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        meta_text(file, m);
    }
    cxr_image_free(img);
    return status;
bad:
    usage(stderr);
    return 2;
}

int main(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(argv[1], "version") || !strcmp(argv[1], "--version")) {
        printf("cxrvqa %s\n", CXRVQA_VERSION);
        return 0;
    }
    if (!strcmp(argv[1], "help") || !strcmp(argv[1], "--help") || !strcmp(argv[1], "-h")) {
        usage(stdout);
        return 0;
    }
    fprintf(stderr, "cxrvqa: unknown command '%s'\n", argv[1]);
    usage(stderr);
    return 2;
}
