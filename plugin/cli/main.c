/*
 * main.c — the `cxrvqa` command line: one binary, subcommands. This file owns
 * argument parsing, output formatting (text and JSON via cJSON) and the
 * translation of library errors into `cxrvqa: FILE: message` plus a non-zero
 * exit status. It holds no pixel or model logic of its own.
 *
 * Exit status: 0 success, 1 the input was refused or could not be read,
 * 2 usage error, 3 output could not be written.
 */
#include "cxr_dicom.h"
#include "cxr_model.h"
#include "cli.h"
#include "args.h"
#include "vqa_internal.h"
#include "cxrvqa.h"
#include "audit.h"

#include <cjson/cJSON.h>
#include <malloc.h>
#include <math.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>


/* Each command's help, as `cxrvqa --help` lists it and `cxrvqa CMD --help`
 * prints it alone. */
static const char HELP_INSPECT[] =
            "  inspect FILE [--json] [--png OUT.png] [--tensor OUT.f32] [options]\n"
            "      Ingest a DICOM or PNG chest radiograph and report its metadata and what\n"
            "      the pixel pipeline did (transfer syntax, LUTs, window, inversion, warnings).\n"
            "      --png OUT.png        write the normalised 8-bit image\n"
            "      --tensor OUT.f32     write the model tensor (float32, CHW, little endian)\n"
            "      --size N --policy pad|crop|stretch --interp bicubic|bilinear|area\n"
            "      --channels 1|3 --mean M[,M,M] --std S[,S,S] --scale K\n"
            "                           preprocessing spec for --tensor (default: 224, pad,\n"
            "                           bicubic, 3 channels, CLIP mean/std, scale 1/255)\n"
            "      --model FILE.gguf    take the preprocessing spec for --tensor from this model\n"
            "                           (instead of the options above)\n"
            "      --strict             refuse (instead of warn) non-chest, lateral, small images\n"
            "      --trust-header       never override MONOCHROME1/2 from image content\n"
            "      --threads N          JPEG 2000 decoder threads (default 1)\n"
            "      --decode-min N       decode a JPEG 2000 frame at the lowest resolution level whose\n"
            "                           short side is still >= N (what ask does with N = the model's\n"
            "                           input side); default every pixel\n";
static const char HELP_EMBED[] =
            "  embed [--model FILE.gguf] (--image IMG | --text TEXT | --tokens ID,ID,... |\n"
            "        --tensor RAW.f32) [--json] [--threads N]\n"
            "      Print the L2-normalised embedding of an image (DICOM or PNG through the full\n"
            "      ingestion path and the model's preprocessing), a text, token ids, or a raw\n"
            "      CHW float32 tensor (3 x S x S); for a classifier model, its raw output logits\n"
            "      (the tensor with the model's own channel count).\n";
static const char HELP_SCORE[] =
            "  score [--model FILE.gguf] [--threads N] FILE...\n"
            "      Score every finding of the model's vocabulary for each image: one JSON line per\n"
            "      file with z (uncalibrated logit), p (calibrated probability) and the domain score.\n"
            "      A research score, not a diagnosis.\n";
static const char HELP_MODEL_INFO[] =
            "  model info [--model FILE.gguf] [--json]\n"
            "      Architecture, sizes, tokenizer, preprocessing and provenance of a model.\n";

static void usage_inspect(FILE *f) { fprintf(f, "usage: cxrvqa\n%s", HELP_INSPECT); }
static void usage_embed(FILE *f) { fprintf(f, "usage: cxrvqa\n%s", HELP_EMBED); }
static void usage_score(FILE *f) { fprintf(f, "usage: cxrvqa\n%s", HELP_SCORE); }
static void usage_model_info(FILE *f) { fprintf(f, "usage: cxrvqa\n%s", HELP_MODEL_INFO); }

static void usage(FILE *f) {
    fprintf(f,
            "usage: cxrvqa <command> [options]\n"
            "\n"
            "commands:\n"
            "%s%s%s"
            "  ask [--json] [--heatmap OUT.png] [--sr-out DIR] [--db FILE] [options] FILE \"QUESTION\"\n"
            "      Answer a question about a chest radiograph (English or Chinese), with its\n"
            "      evidence, an audit row and optionally a DICOM SR. `cxrvqa ask --help` for all options.\n"
            "  screen [--question Q]... [--jobs N] [--csv OUT] [--jsonl OUT] [options] PATH...\n"
            "      Ask questions about every image under PATH through a pool of workers; resumable;\n"
            "      a ranked worklist and an HTML report; shards for a Slurm array; SRs to a PACS.\n"
            "  validate --model M.gguf --labels SITE.csv [--out SITE.gguf] [--report R.html] IMAGES...\n"
            "      Validate a model on your own labelled cases: AUC with CI, calibration, thresholds,\n"
            "      assessability per finding; optionally a site-calibrated model file and an HTML report.\n"
            "  audit verify|anchor|export|show|merge|keygen|key [--db FILE] [options]\n"
            "      Check the audit log's hash chain (with its key, against anchors), anchor its head,\n"
            "      export it, show its newest rows, merge shards, make or apply a chain key.\n"
            "  worker [options]\n"
            "      The supervised worker process the Orthanc plugin and `screen` start (not by hand).\n"
            "%s"
            "  version\n"
            "\n"
            "Every command takes --help.\n"
            "Without --model, commands use $CXRVQA_MODEL or the default research model shipped in\n"
            "model/ (trained on small public data; not a diagnostic device: see model/MODEL_CARD.md).\n",
            HELP_INSPECT, HELP_EMBED, HELP_SCORE, HELP_MODEL_INFO);
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
    cJSON_AddStringToObject(ing, "voi", cxr_voi_name(m->voi_used));
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
    cJSON_AddNumberToObject(ing, "decode_reduce", m->decode_reduce);
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
    printf("VOI:               %s", cxr_voi_name(m->voi_used));
    if (m->voi_used == CXR_VOI_WINDOW)
        printf(" centre %g width %g %s%s", m->voi_center, m->voi_width,
               m->voi_function[0] ? m->voi_function : "LINEAR", m->n_windows > 1 ? " (first of several)" : "");
    if (m->voi_used == CXR_VOI_FALLBACK) printf(" centre %g width %g", m->voi_center, m->voi_width);
    printf("\n");
    printf("inverted:          %s (polarity from %s, score %.3f)\n", m->inverted ? "yes" : "no",
           m->polarity_from_content ? "pixels" : "header", m->polarity_score);
    for (int i = 0; i < m->n_warnings; i++) printf("warning:           %s\n", m->warnings[i]);
}

static int set_policy(void *ctx, const char *v) {
    cxr_preproc *s = ctx;
    if (!strcmp(v, "pad")) s->policy = CXR_RESIZE_PAD;
    else if (!strcmp(v, "crop")) s->policy = CXR_RESIZE_CROP;
    else if (!strcmp(v, "stretch")) s->policy = CXR_RESIZE_STRETCH;
    else return -1;
    return 0;
}

static int set_interp(void *ctx, const char *v) {
    cxr_preproc *s = ctx;
    if (!strcmp(v, "bicubic")) s->interp = CXR_INTERP_BICUBIC;
    else if (!strcmp(v, "bilinear")) s->interp = CXR_INTERP_BILINEAR;
    else if (!strcmp(v, "area")) s->interp = CXR_INTERP_AREA;
    else return -1;
    return 0;
}

static int set_3floats(void *ctx, const char *v) { return parse_floats(v, ctx, 3); }

static cxr_model *open_model(const char *path, int threads);

static int cmd_inspect(int argc, char **argv) {
    const char *file = NULL, *png = NULL, *tensor = NULL, *model = NULL;
    int json = 0, strict = 0, trust_header = 0;
    cxr_ingest_params p = cxr_ingest_params_default();
    cxr_preproc s = cxr_preproc_default();
    const cli_opt opts[] = {
        CLI_OPT_FLAG("--json", &json),           CLI_OPT_FLAG("--strict", &strict),
        CLI_OPT_FLAG("--trust-header", &trust_header), CLI_OPT_STR("--png", &png),
        CLI_OPT_STR("--tensor", &tensor),        CLI_OPT_INT("--threads", &p.threads),
        CLI_OPT_INT("--size", &s.size),          CLI_OPT_INT("--channels", &s.channels),
        CLI_OPT_FLOAT("--scale", &s.scale),      CLI_OPT_CALL("--mean", set_3floats, s.mean),
        CLI_OPT_CALL("--std", set_3floats, s.std), CLI_OPT_CALL("--policy", set_policy, &s),
        CLI_OPT_CALL("--interp", set_interp, &s), CLI_OPT_STR("--model", &model),
        CLI_OPT_INT("--decode-min", &p.decode_min_short), CLI_OPT_END};
    int n, rc = cli_args("inspect", opts, argc, argv, &file, 1, &n, usage_inspect);
    if (rc != CLI_ARGS_OK) return rc == CLI_ARGS_HELP ? 0 : 2;
    if (model) {
        const cxr_preproc def = cxr_preproc_default();
        if (memcmp(&def, &s, sizeof s) != 0) {
            fprintf(stderr, "cxrvqa: inspect: --model and the preprocessing options exclude each other\n");
            return 2;
        }
        cxr_model *mdl = open_model(model, 1);
        if (!mdl) return 1;
        rc = vqa_preproc_of(cxr_model_get_info(mdl), &s);
        cxr_model_close(mdl);
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: %s: model preprocessing spec not understood\n", model);
            return 1;
        }
    }
    if (strict) p.not_chest = p.lateral = p.small = CXR_CHECK_REFUSE;
    if (trust_header) p.polarity = CXR_POLARITY_HEADER;
    if (!file) {
        usage_inspect(stderr);
        return 2;
    }
    char err[CXR_ERRMSG_MAX];
    if (tensor && cxr_preproc_check(&s, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", err);
        return 2;
    }
    cxr_image *img = NULL;
    rc = cxr_image_load_file(file, &p, &img, err, sizeof err);
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
}

/* ---------------------------------------------------------------- models */

/* The model's preprocessing spec as ingestion's struct. */
static float *read_f32_file(const char *path, size_t *n) {
    FILE *fp = fopen(path, "rb");
    if (!fp) return NULL;
    float *buf = NULL;
    if (fseek(fp, 0, SEEK_END) == 0) {
        long len = ftell(fp);
        if (len > 0 && len % 4 == 0 && len < (1L << 30) && fseek(fp, 0, SEEK_SET) == 0) {
            buf = malloc((size_t)len);
            if (buf && fread(buf, 1, (size_t)len, fp) != (size_t)len) {
                free(buf);
                buf = NULL;
            }
            *n = (size_t)len / 4;
        }
    }
    fclose(fp);
    return buf;
}

/* Open the model for a one-image command, or say why not on stderr (NULL). */
static cxr_model *open_model(const char *path, int threads) {
    char err[CXR_ERRMSG_MAX];
    cxr_model_params mp = cxr_model_params_default();
    mp.threads = threads;
    mp.max_batch = 1;
    cxr_model *m = NULL;
    int rc = cxr_model_open(path, &mp, &m, err, sizeof err);
    if (rc != CXR_OK) fprintf(stderr, "cxrvqa: %s: %s (%s)\n", path, err, cxr_strerror(rc));
    return m;
}

static int cmd_embed(int argc, char **argv) {
    const char *model = NULL, *image = NULL, *text = NULL, *tokens = NULL, *tensor = NULL;
    int json = 0, threads = 0;
    const cli_opt opts[] = {CLI_OPT_FLAG("--json", &json),     CLI_OPT_STR("--model", &model),
                            CLI_OPT_STR("--image", &image),    CLI_OPT_STR("--text", &text),
                            CLI_OPT_STR("--tokens", &tokens),  CLI_OPT_STR("--tensor", &tensor),
                            CLI_OPT_INT("--threads", &threads), CLI_OPT_END};
    int n, arc = cli_args("embed", opts, argc, argv, NULL, 0, &n, usage_embed);
    if (arc != CLI_ARGS_OK) return arc == CLI_ARGS_HELP ? 0 : 2;
    if (!model) model = cli_default_model();
    if ((!!image + !!text + !!tokens + !!tensor) != 1) { usage_embed(stderr); return 2; }
    char err[CXR_ERRMSG_MAX] = "";
    cxr_model *m = open_model(model, threads);
    if (!m) return 1;
    int rc = CXR_OK;
    const cxr_model_info *in = cxr_model_get_info(m);
    int E = in->embed_dim, status = 0;
    float *emb = malloc((size_t)E * sizeof *emb);
    const char *what = image ? image : tensor ? tensor : model;
    if (!emb) { rc = CXR_ERR_NOMEM; goto done; }
    if (image) {
        cxr_ingest_params ip = cxr_ingest_params_default();
        cxr_preproc s;
        cxr_image *img = NULL;
        if ((rc = vqa_preproc_of(in, &s)) != CXR_OK) {
            snprintf(err, sizeof err, "model preprocessing spec not understood");
            goto done;
        }
        if ((rc = cxr_image_load_file(image, &ip, &img, err, sizeof err)) != CXR_OK) goto done;
        float *t = malloc(cxr_preproc_tensor_len(&s) * sizeof *t);
        rc = t ? cxr_image_to_tensor(img, &s, t) : CXR_ERR_NOMEM;
        if (rc == CXR_OK) rc = cxr_model_embed_image(m, t, 1, s.channels, s.size, emb);
        free(t);
        cxr_image_free(img);
        if (rc != CXR_OK && !err[0]) snprintf(err, sizeof err, "image embedding failed");
    } else if (tensor) {
        size_t n = 0;
        float *t = read_f32_file(tensor, &n);
        /* CLIP-style models read 3 x S x S; a classifier its own channel count */
        int size = 0, ch = in->classifier ? in->pp_channels : 3;
        while ((size_t)(size + 1) * (size + 1) * ch <= n) size++;
        if (!t || (size_t)size * size * ch != n) {
            snprintf(err, sizeof err, "expected a raw float32 tensor of %d x S x S values", ch);
            rc = CXR_ERR_ARG;
        } else {
            rc = cxr_model_embed_image(m, t, 1, ch, size, emb);
            if (rc != CXR_OK) snprintf(err, sizeof err, "image embedding failed for a %dx%d tensor", size, size);
        }
        free(t);
    } else if (text) {
        rc = cxr_model_embed_text(m, text, emb);
        if (rc != CXR_OK) snprintf(err, sizeof err, "text embedding failed");
    } else {
        int32_t ids[4096];
        int n = 0;
        const char *p = tokens;
        while (*p && n < 4096) {
            char *end;
            long id = strtol(p, &end, 10);
            if (end == p) break;
            ids[n++] = (int32_t)id;
            p = *end == ',' ? end + 1 : end;
        }
        rc = *p ? CXR_ERR_ARG : cxr_model_embed_tokens(m, ids, n, emb);
        if (rc != CXR_OK) snprintf(err, sizeof err, "token ids invalid for this model (count 1..%d, ids < %d)",
                                   in->text_ctx, in->text_vocab);
    }
done:
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s: %s (%s)\n", what, err, cxr_strerror(rc));
        status = 1;
    } else if (json) {
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "dim", E);
        if (in->classifier && !text && !tokens) cJSON_AddTrueToObject(o, "logits"); /* raw outputs, not normalised */
        cJSON *arr = cJSON_AddArrayToObject(o, "embedding");
        for (int i = 0; i < E; i++) cJSON_AddItemToArray(arr, cJSON_CreateNumber(emb[i]));
        char *txt = cJSON_PrintUnformatted(o);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(o);
    } else {
        for (int i = 0; i < E; i++) printf("%s%.8g", i ? " " : "", emb[i]);
        printf("\n");
    }
    free(emb);
    cxr_model_close(m);
    return status;
}

static int cmd_score(int argc, char **argv) {
    const char *model = NULL;
    int threads = 0, nfiles = 0;
    const char **files = calloc((size_t)argc + 1, sizeof *files);
    if (!files) return 1;
    const cli_opt opts[] = {CLI_OPT_STR("--model", &model), CLI_OPT_INT("--threads", &threads), CLI_OPT_END};
    int arc = cli_args("score", opts, argc, argv, files, argc, &nfiles, usage_score);
    if (arc != CLI_ARGS_OK) {
        free(files);
        return arc == CLI_ARGS_HELP ? 0 : 2;
    }
    if (!model) model = cli_default_model();
    if (!nfiles) { free(files); usage_score(stderr); return 2; }
    char err[CXR_ERRMSG_MAX];
    cxr_model *m = open_model(model, threads);
    if (!m) {
        free(files);
        return 1;
    }
    int rc;
    const cxr_model_info *in = cxr_model_get_info(m);
    cxr_preproc s;
    if (vqa_preproc_of(in, &s) != CXR_OK || !in->has_vision || cxr_model_n_findings(m) < 1) {
        fprintf(stderr, "cxrvqa: %s: the model has no image tower, preprocessing spec or findings\n", model);
        cxr_model_close(m);
        free(files);
        return 1;
    }
    float *t = malloc(cxr_preproc_tensor_len(&s) * sizeof *t), *emb = malloc((size_t)in->embed_dim * sizeof *emb);
    int failed = 0;
    cxr_ingest_params ip = cxr_ingest_params_default();
    for (int k = 0; k < nfiles && t && emb; k++) {
        cxr_image *img = NULL;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddStringToObject(o, "file", files[k]);
        rc = cxr_image_load_file(files[k], &ip, &img, err, sizeof err);
        if (rc == CXR_OK && (rc = cxr_image_to_tensor(img, &s, t)) == CXR_OK)
            rc = cxr_model_embed_image(m, t, 1, s.channels, s.size, emb);
        if (rc != CXR_OK) {
            cJSON_AddStringToObject(o, "error", cxr_strerror(rc));
            cJSON_AddStringToObject(o, "message", err);
            failed++;
        } else {
            const cxr_meta *me = cxr_image_meta(img);
            cJSON_AddStringToObject(o, "sop_instance_uid", me->sop_uid);
            cxr_domain_check dc;
            cxr_model_domain_check(m, t, s.channels, s.size, emb, &dc); /* emb: the embed call just above */
            cJSON_AddNumberToObject(o, "domain_score", dc.score);
            cJSON_AddNumberToObject(o, "domain_threshold", dc.score_threshold);
            if (!isnan(dc.distance)) {
                cJSON_AddNumberToObject(o, "domain_distance", dc.distance);
                cJSON_AddNumberToObject(o, "domain_distance_warn", dc.distance_warn);
                cJSON_AddNumberToObject(o, "domain_distance_refuse", dc.distance_refuse);
            }
            if (!isnan(dc.layout_distance)) {
                cJSON_AddNumberToObject(o, "layout_distance", dc.layout_distance);
                cJSON_AddNumberToObject(o, "layout_distance_warn", dc.layout_warn);
                cJSON_AddNumberToObject(o, "layout_distance_refuse", dc.layout_refuse);
            }
            cJSON *fa = cJSON_AddArrayToObject(o, "findings");
            for (int i = 0; i < cxr_model_n_findings(m); i++) {
                float z, p;
                cxr_model_score_finding(m, i, emb, &z, &p);
                cJSON *f = cJSON_CreateObject();
                cJSON_AddStringToObject(f, "finding", cxr_model_finding(m, i)->name);
                cJSON_AddNumberToObject(f, "z", z);
                cJSON_AddNumberToObject(f, "p", p);
                cJSON_AddItemToArray(fa, f);
            }
            cJSON *w = cJSON_AddArrayToObject(o, "warnings");
            for (int i = 0; i < me->n_warnings; i++) cJSON_AddItemToArray(w, cJSON_CreateString(me->warnings[i]));
        }
        char *txt = cJSON_PrintUnformatted(o);
        if (txt) puts(txt);
        free(txt);
        cJSON_Delete(o);
        cxr_image_free(img);
    }
    free(t);
    free(emb);
    free(files);
    cxr_model_close(m);
    return failed ? 1 : 0;
}

static int cmd_model_info(int argc, char **argv) {
    const char *model = NULL;
    int json = 0, n;
    const cli_opt opts[] = {CLI_OPT_FLAG("--json", &json), CLI_OPT_STR("--model", &model), CLI_OPT_END};
    int arc = cli_args("model info", opts, argc, argv, NULL, 0, &n, usage_model_info);
    if (arc != CLI_ARGS_OK) return arc == CLI_ARGS_HELP ? 0 : 2;
    if (!model) model = cli_default_model();
    cxr_model *m = open_model(model, 0);
    if (!m) return 1;
    const cxr_model_info *in = cxr_model_get_info(m);
    cJSON *o = cJSON_CreateObject();
    cJSON_AddStringToObject(o, "file", model);
    cJSON_AddStringToObject(o, "name", in->name);
    cJSON_AddStringToObject(o, "version", in->version);
    cJSON_AddStringToObject(o, "license", in->license);
    cJSON_AddStringToObject(o, "description", in->description);
    cJSON_AddStringToObject(o, "source", in->source);
    cJSON_AddStringToObject(o, "training_data", in->training_data);
    cJSON_AddNumberToObject(o, "embed_dim", in->embed_dim);
    cJSON_AddNumberToObject(o, "logit_scale", in->logit_scale);
    cJSON_AddNumberToObject(o, "parameters", (double)in->n_params);
    cJSON_AddNumberToObject(o, "f16_tensors", in->n_f16);
    cJSON_AddNumberToObject(o, "open_ms", in->open_ms);
    if (in->has_vision) {
        cJSON *v = cJSON_AddObjectToObject(o, "vision");
        cJSON_AddStringToObject(v, "architecture", in->vision_arch);
        cJSON_AddNumberToObject(v, "image_size", in->image_size);
        cJSON_AddNumberToObject(v, "patch_size", in->patch_size);
        cJSON_AddNumberToObject(v, "width", in->vision_width);
        cJSON_AddNumberToObject(v, "layers", in->vision_layers);
        cJSON_AddNumberToObject(v, "heads", in->vision_heads);
        cJSON_AddNumberToObject(v, "feed_forward", in->vision_ff);
        cJSON_AddStringToObject(v, "activation", in->vision_act);
        cJSON_AddNumberToObject(v, "layer_norm_eps", in->vision_eps);
    }
    if (in->classifier) {
        cJSON *c = cJSON_AddObjectToObject(o, "classifier"), *labels = cJSON_AddArrayToObject(c, "labels");
        for (int k = 0; k < in->embed_dim; k++)
            cJSON_AddItemToArray(labels, cJSON_CreateString(cxr_model_output_label(m, k)));
        cJSON *fs = cJSON_AddArrayToObject(c, "findings");
        for (int i = 0; i < cxr_model_n_findings(m); i++) {
            const cxr_finding *f = cxr_model_finding(m, i);
            cJSON *j = cJSON_CreateObject();
            cJSON_AddStringToObject(j, "finding", f->name);
            cJSON_AddNumberToObject(j, "output", f->output);
            if (isnan(f->op_thresh)) cJSON_AddNullToObject(j, "op_thresh");
            else cJSON_AddNumberToObject(j, "op_thresh", f->op_thresh);
            cJSON_AddBoolToObject(j, "calibrated", f->calibrated);
            cJSON_AddNumberToObject(j, "validation_positives", f->val_pos);
            cJSON_AddItemToArray(fs, j);
        }
    }
    if (in->has_text) {
        cJSON *t = cJSON_AddObjectToObject(o, "text");
        cJSON_AddStringToObject(t, "architecture", in->text_arch);
        cJSON_AddNumberToObject(t, "context", in->text_ctx);
        cJSON_AddNumberToObject(t, "vocab", in->text_vocab);
        cJSON_AddNumberToObject(t, "width", in->text_width);
        cJSON_AddNumberToObject(t, "layers", in->text_layers);
        cJSON_AddNumberToObject(t, "heads", in->text_heads);
        cJSON_AddNumberToObject(t, "feed_forward", in->text_ff);
        cJSON_AddStringToObject(t, "activation", in->text_act);
        cJSON_AddStringToObject(t, "projection", in->text_proj);
        cJSON_AddNumberToObject(t, "layer_norm_eps", in->text_eps);
        cJSON *k = cJSON_AddObjectToObject(o, "tokenizer");
        cJSON_AddStringToObject(k, "kind", in->tokenizer);
        cJSON_AddNumberToObject(k, "vocab", in->text_vocab);
        cJSON_AddNumberToObject(k, "merges", in->n_merges);
    }
    cJSON *pp = cJSON_AddObjectToObject(o, "preprocessing");
    cJSON_AddNumberToObject(pp, "size", in->pp_size);
    cJSON_AddStringToObject(pp, "policy", in->pp_policy);
    cJSON_AddStringToObject(pp, "interp", in->pp_interp);
    cJSON_AddNumberToObject(pp, "channels", in->pp_channels);
    cJSON_AddNumberToObject(pp, "scale", in->pp_scale);
    cJSON *mean = cJSON_AddArrayToObject(pp, "mean"), *sd = cJSON_AddArrayToObject(pp, "std");
    for (int c = 0; c < 3; c++) {
        cJSON_AddItemToArray(mean, cJSON_CreateNumber(in->pp_mean[c]));
        cJSON_AddItemToArray(sd, cJSON_CreateNumber(in->pp_std[c]));
    }
    if (json) {
        char *txt = cJSON_Print(o);
        if (txt) puts(txt);
        free(txt);
    } else {
        printf("model:         %s %s (%s)\n", in->name, in->version, model);
        printf("licence:       %s\n", in->license);
        printf("source:        %s\n", in->source);
        printf("training data: %s\n", in->training_data);
        printf("parameters:    %llu (%d tensors stored F16), opened in %.1f ms\n",
               (unsigned long long)in->n_params, in->n_f16, in->open_ms);
        if (in->classifier) {
            printf("classifier:    %d outputs, %d mapped to findings\n", in->embed_dim, cxr_model_n_findings(m));
            for (int i = 0; i < cxr_model_n_findings(m); i++) {
                const cxr_finding *f = cxr_model_finding(m, i);
                printf("  %-28s <- output %2d %-22s %s, %d validation positives\n", f->name, f->output,
                       cxr_model_output_label(m, f->output),
                       !isnan(f->op_thresh) ? "op_thresh" : f->calibrated ? "calibrated" : "uncalibrated", f->val_pos);
            }
        } else {
            printf("embedding:     %d, logit scale %.3f\n", in->embed_dim, in->logit_scale);
        }
        if (in->has_vision)
        {
            if (in->classifier)
                printf("image tower:   %s %dpx, %d layers, final width %d, activation-map cell %d px\n",
                       in->vision_arch, in->image_size, in->vision_layers, in->vision_width, in->patch_size);
            else if (!strcmp(in->vision_arch, "cnn"))
                printf("image tower:   residual CNN %dpx, %d stages, final width %d, evidence cell %d px\n",
                       in->image_size, in->vision_layers, in->vision_width, in->patch_size);
            else
                printf("image tower:   ViT %dpx patch %d, width %d, %d layers, %d heads, MLP %d, %s, eps %g\n",
                       in->image_size, in->patch_size, in->vision_width, in->vision_layers, in->vision_heads,
                       in->vision_ff, in->vision_act, in->vision_eps);
        }
        if (in->has_text) {
            printf("text tower:    %s, context %d, width %d, %d layers, %d heads, MLP %d, %s, %s projection\n",
                   in->text_arch, in->text_ctx, in->text_width, in->text_layers, in->text_heads, in->text_ff,
                   in->text_act, in->text_proj);
            printf("tokenizer:     %s, %d tokens, %d merges\n", in->tokenizer, in->text_vocab, in->n_merges);
        }
        printf("preprocessing: %d px, %s, %s, %d channel(s), scale %g, mean %g/%g/%g, std %g/%g/%g\n",
               in->pp_size, in->pp_policy, in->pp_interp, in->pp_channels, in->pp_scale, in->pp_mean[0],
               in->pp_mean[1], in->pp_mean[2], in->pp_std[0], in->pp_std[1], in->pp_std[2]);
    }
    cJSON_Delete(o);
    cxr_model_close(m);
    return 0;
}

static int dispatch(int argc, char **argv);

/* A decode abandoned at its deadline may still be running: leave without
 * running the libraries' static destructors under it (measured: a SIGSEGV
 * at exit otherwise). Everything this process had to write is written. */
int main(int argc, char **argv) {
#ifdef __GLIBC__
    /* frame buffers (a 2k CR is 7 MB at 16 bits) come from the heap and stay
       there between images: glibc's default maps each large block afresh,
       and on a virtual machine the page faults of every new mapping cost a
       screening worker more than the decode it serves */
    mallopt(M_MMAP_THRESHOLD, 256 << 20);
    mallopt(M_TRIM_THRESHOLD, 512 << 20);
#endif
    int rc = dispatch(argc, argv);
    if (cxr_decode_tainted()) {
        fflush(NULL);
        _exit(rc);
    }
    return rc;
}

static int dispatch(int argc, char **argv) {
    if (argc < 2) {
        usage(stderr);
        return 2;
    }
    if (!strcmp(argv[1], "inspect")) return cmd_inspect(argc - 2, argv + 2);
    if (!strcmp(argv[1], "embed")) return cmd_embed(argc - 2, argv + 2);
    if (!strcmp(argv[1], "score")) return cmd_score(argc - 2, argv + 2);
    if (!strcmp(argv[1], "ask")) return cli_ask(argc - 2, argv + 2);
    if (!strcmp(argv[1], "worker")) return cli_worker(argc - 2, argv + 2);
    if (!strcmp(argv[1], "screen")) return cli_screen(argc - 2, argv + 2);
    if (!strcmp(argv[1], "validate")) return cli_validate(argc - 2, argv + 2);
    if (!strcmp(argv[1], "audit")) return cli_audit(argc - 1, argv + 1);
    if (!strcmp(argv[1], "model") && argc > 2 && !strcmp(argv[2], "info")) return cmd_model_info(argc - 3, argv + 3);
    if (!strcmp(argv[1], "model")) return cmd_model_info(argc - 2, argv + 2); /* `model --help`; else usage error */
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
