/*
 * test_tokenizer.c — drives model/tokenizer.c for tests/model/test_tokenizer_ref.py
 * (which compares every id with the Python references) and checks what needs
 * no reference: error paths, specials and padding, truncation, thread safety,
 * very long input, and speed.
 *
 *   test_tokenizer --clip-tokens F --clip-merges F --wp-vocab F --in RECORDS --out IDS
 *                  [--bench REPEATS [--bench-records N]]
 *   test_tokenizer --unicode-dump OUT.bin
 *
 * RECORDS: one per line, "CTX_CLIP CTX_BERT HEX" where HEX is the raw text
 * bytes in hex (so newlines and invalid UTF-8 travel safely).
 * IDS: for each record and each tokenizer (C = CLIP, B = BERT uncased,
 * O = BERT uncased + open_clip cleaning, K = BERT cased) one line
 * "TAG N id0 id1 ... id(ctx-1)".
 * Exit status: 0 if every self-check passed, 1 otherwise, 2 for usage errors.
 */
#include <pthread.h>
#include <stdint.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <time.h>

#include "tokenizer.h"
#include "unicode_tables.h"

#define CHECK_OUT stderr /* stdout carries the token ids */
#include "check.h"

/* ------------------------------------------------------------ file input */

typedef struct {
    char *data;   /* the file, with each '\n' replaced by NUL */
    char **lines; /* n pointers into data */
    int n;
} lines_t;

static int read_lines(const char *path, lines_t *out)
{
    memset(out, 0, sizeof *out);
    FILE *f = fopen(path, "rb");
    if (!f) {
        perror(path);
        return -1;
    }
    fseek(f, 0, SEEK_END);
    long size = ftell(f);
    fseek(f, 0, SEEK_SET);
    out->data = malloc((size_t)size + 1);
    if (!out->data || fread(out->data, 1, (size_t)size, f) != (size_t)size) {
        fclose(f);
        fprintf(stderr, "%s: read error\n", path);
        return -1;
    }
    fclose(f);
    out->data[size] = 0;
    int n = 0;
    for (long i = 0; i < size; i++)
        n += out->data[i] == '\n';
    out->lines = malloc(((size_t)n + 1) * sizeof *out->lines);
    char *p = out->data;
    for (int i = 0; i < n; i++) {
        char *nl = strchr(p, '\n');
        *nl = 0;
        out->lines[i] = p;
        p = nl + 1;
    }
    out->n = n; /* text after the last '\n' is ignored (files end with one) */
    return 0;
}

static void free_lines(lines_t *l)
{
    free(l->data);
    free(l->lines);
}

typedef struct {
    int ctx_clip, ctx_bert;
    char *text; /* NUL-terminated raw bytes */
} record;

static int hexval(int c)
{
    if (c >= '0' && c <= '9')
        return c - '0';
    if (c >= 'a' && c <= 'f')
        return c - 'a' + 10;
    return -1;
}

static record *read_records(const char *path, int *n)
{
    lines_t l;
    if (read_lines(path, &l) != 0)
        return NULL;
    record *r = calloc((size_t)l.n + 1, sizeof *r);
    for (int i = 0; i < l.n; i++) {
        char hex[1];
        int used = 0;
        if (sscanf(l.lines[i], "%d %d %n%c", &r[i].ctx_clip, &r[i].ctx_bert, &used, hex) < 2) {
            fprintf(stderr, "%s:%d: bad record\n", path, i + 1);
            exit(2);
        }
        const char *h = l.lines[i] + used;
        size_t len = strlen(h) / 2;
        r[i].text = malloc(len + 1);
        for (size_t k = 0; k < len; k++)
            r[i].text[k] = (char)(hexval(h[2 * k]) * 16 + hexval(h[2 * k + 1]));
        r[i].text[len] = 0;
    }
    *n = l.n;
    free_lines(&l);
    return r;
}

/* ------------------------------------------------------------ tokenizers */

enum { T_CLIP, T_BERT, T_OPENCLIP, T_CASED, T_COUNT };
static const char tags[T_COUNT] = {'C', 'B', 'O', 'K'};
static cxr_tokenizer *toks[T_COUNT];

static int ctx_of(int which, const record *r)
{
    return which == T_CLIP ? r->ctx_clip : r->ctx_bert;
}

static double now(void)
{
    struct timespec ts;
    clock_gettime(CLOCK_MONOTONIC, &ts);
    return (double)ts.tv_sec + 1e-9 * (double)ts.tv_nsec;
}

/* All ids of all records for one tokenizer, ctx-strided. */
typedef struct {
    int which;
    const record *recs;
    int n;
    int stride;
    int32_t *ids; /* n * stride */
    int *counts;
    int rc;
} job;

static void *run_job(void *arg)
{
    job *j = arg;
    j->rc = TOK_OK;
    for (int i = 0; i < j->n && j->rc == TOK_OK; i++)
        j->rc = tok_encode(toks[j->which], j->recs[i].text, j->ids + (size_t)i * j->stride,
                           ctx_of(j->which, &j->recs[i]), &j->counts[i]);
    return NULL;
}

/* --------------------------------------------------------- self-checks */

static const char *const *as_const(char **p)
{
    return (const char *const *)p;
}

static void check_errors(lines_t *ct, lines_t *cm, lines_t *wv)
{
    char err[256];
    cxr_tokenizer *t = (cxr_tokenizer *)1;
    int32_t ids[8];
    int n = -1;

    tok_free(NULL);
    CHECK(tok_vocab_size(NULL) == 0, "vocab size of NULL");
    CHECK(tok_bpe_init(NULL, as_const(ct->lines), ct->n, as_const(cm->lines), cm->n, err,
                       sizeof err) == TOK_ERR_ARG, "NULL out");
    CHECK(tok_bpe_init(&t, as_const(ct->lines), 0, as_const(cm->lines), cm->n, err,
                       sizeof err) == TOK_ERR_ARG, "no tokens");
    CHECK(tok_wordpiece_init(&t, as_const(wv->lines), wv->n, 4, err, sizeof err) == TOK_ERR_ARG,
          "unknown flag");
    CHECK(tok_encode(toks[T_CLIP], "x", ids, 1, &n) == TOK_ERR_ARG && n == 0, "ctx 1");
    CHECK(tok_encode(toks[T_CLIP], NULL, ids, 8, &n) == TOK_ERR_ARG, "NULL text");
    CHECK(tok_encode(NULL, "x", ids, 8, &n) == TOK_ERR_ARG, "NULL tokenizer");
    CHECK(tok_encode(toks[T_BERT], "x", NULL, 8, &n) == TOK_ERR_ARG, "NULL ids");
    CHECK(tok_encode(toks[T_BERT], "x", ids, 8, NULL) == TOK_ERR_ARG, "NULL n_out");

    /* text over the cap */
    char *big = malloc(TOK_MAX_TEXT_BYTES + 2);
    memset(big, 'a', TOK_MAX_TEXT_BYTES + 1);
    big[TOK_MAX_TEXT_BYTES + 1] = 0;
    CHECK(tok_encode(toks[T_CLIP], big, ids, 8, &n) == TOK_ERR_ARG && n == 0, "text too long");
    free(big);

    /* corrupt vocabularies: each with its exact code */
    char **tk = malloc((size_t)ct->n * sizeof *tk);
    memcpy(tk, ct->lines, (size_t)ct->n * sizeof *tk);
    tk[5] = "renamed-byte-token"; /* one of the 256 byte characters */
    t = (cxr_tokenizer *)1;
    int rc = tok_bpe_init(&t, as_const(tk), ct->n, as_const(cm->lines), cm->n, err, sizeof err);
    CHECK(rc == TOK_ERR_VOCAB && t == NULL, "missing byte token: rc %d", rc);
    memcpy(tk, ct->lines, (size_t)ct->n * sizeof *tk);
    tk[ct->n - 1] = "<|end|>";
    rc = tok_bpe_init(&t, as_const(tk), ct->n, as_const(cm->lines), cm->n, err, sizeof err);
    CHECK(rc == TOK_ERR_VOCAB && strstr(err, "<|endoftext|>"), "missing EOT: rc %d %s", rc, err);
    tk[ct->n - 1] = NULL;
    rc = tok_bpe_init(&t, as_const(tk), ct->n, as_const(cm->lines), cm->n, err, sizeof err);
    CHECK(rc == TOK_ERR_ARG, "NULL token: rc %d", rc);
    free(tk);

    char **mg = malloc((size_t)cm->n * sizeof *mg);
    const char *bad[] = {"ab", "a  b", " a", "a ", "zz\xc4\xa0 q", ""};
    for (size_t k = 0; k < sizeof bad / sizeof *bad; k++) {
        memcpy(mg, cm->lines, (size_t)cm->n * sizeof *mg);
        mg[cm->n / 2] = (char *)bad[k];
        rc = tok_bpe_init(&t, as_const(ct->lines), ct->n, as_const(mg), cm->n, err, sizeof err);
        CHECK(rc == TOK_ERR_VOCAB, "bad merge \"%s\": rc %d", bad[k], rc);
    }
    free(mg);
    /* the merges are optional: bytes only */
    rc = tok_bpe_init(&t, as_const(ct->lines), ct->n, NULL, 0, err, sizeof err);
    CHECK(rc == TOK_OK, "no merges: rc %d %s", rc, err);
    if (rc == TOK_OK) {
        int32_t got[8];
        /* "ab" -> bytes a, b</w> */
        CHECK(tok_encode(t, "ab", got, 8, &n) == TOK_OK && n == 4 && got[1] == 'a' - 33 &&
                  got[2] == 256 + 'b' - 33, "bytes only: n %d %d %d", n, got[1], got[2]);
        tok_free(t);
    }

    char **wk = malloc((size_t)wv->n * sizeof *wk);
    const char *specials[] = {"[PAD]", "[UNK]", "[CLS]", "[SEP]"};
    for (int s = 0; s < 4; s++) {
        memcpy(wk, wv->lines, (size_t)wv->n * sizeof *wk);
        for (int i = 0; i < wv->n; i++)
            if (strcmp(wk[i], specials[s]) == 0)
                wk[i] = "[GONE]";
        rc = tok_wordpiece_init(&t, as_const(wk), wv->n, 1, err, sizeof err);
        CHECK(rc == TOK_ERR_VOCAB && strstr(err, specials[s]), "missing %s: rc %d", specials[s], rc);
    }
    free(wk);
}

static int32_t wp_id(const lines_t *wv, const char *s)
{
    for (int i = wv->n - 1; i >= 0; i--)
        if (strcmp(wv->lines[i], s) == 0)
            return i;
    return -1;
}

/* Expected values below come from the vocabulary files, not from runs. */
static void check_specials(const lines_t *ct, const lines_t *wv)
{
    int32_t sot = ct->n - 2, eot = ct->n - 1; /* CLIP puts them last */
    int32_t cls = wp_id(wv, "[CLS]"), sep = wp_id(wv, "[SEP]"), pad = wp_id(wv, "[PAD]"),
            unk = wp_id(wv, "[UNK]");
    int32_t ids[300];
    int n = -1;
    const char *empties[] = {"", " ", "\t\n  \r\n", "\xe2\x80\x83\xe3\x80\x80"};
    for (size_t e = 0; e < sizeof empties / sizeof *empties; e++) {
        CHECK(tok_encode(toks[T_CLIP], empties[e], ids, 77, &n) == TOK_OK && n == 2 &&
                  ids[0] == sot && ids[1] == eot && ids[2] == 0 && ids[76] == 0,
              "CLIP empty #%zu: n %d", e, n);
        for (int w = T_BERT; w < T_COUNT; w++)
            CHECK(tok_encode(toks[w], empties[e], ids, 256, &n) == TOK_OK && n == 2 &&
                      ids[0] == cls && ids[1] == sep && ids[2] == pad && ids[255] == pad,
                  "BERT empty #%zu: n %d", e, n);
    }
    /* ctx 2: only the specials */
    CHECK(tok_encode(toks[T_CLIP], "pleural effusion", ids, 2, &n) == TOK_OK && n == 2 &&
              ids[0] == sot && ids[1] == eot, "CLIP ctx 2");
    CHECK(tok_encode(toks[T_BERT], "pleural effusion", ids, 2, &n) == TOK_OK && n == 2 &&
              ids[0] == cls && ids[1] == sep, "BERT ctx 2");
    /* one letter: the byte token with </w>, id 256 + 'a' - 33 */
    CHECK(tok_encode(toks[T_CLIP], "A", ids, 77, &n) == TOK_OK && n == 3 &&
              ids[1] == 256 + 'a' - 33, "CLIP 'A' -> a</w>: %d", ids[1]);
    /* a word of 101 letters is [UNK]; 100 is not */
    char word[128];
    memset(word, 'a', 101);
    word[101] = 0;
    CHECK(tok_encode(toks[T_BERT], word, ids, 256, &n) == TOK_OK && n == 3 && ids[1] == unk,
          "BERT 101 letters: n %d id %d", n, ids[1]);
    word[100] = 0;
    CHECK(tok_encode(toks[T_BERT], word, ids, 256, &n) == TOK_OK && ids[1] != unk,
          "BERT 100 letters gave [UNK]");
    /* truncation: 400 words */
    static char longtext[400 * 4 + 1];
    for (int i = 0; i < 400; i++)
        memcpy(longtext + 4 * i, "the ", 4);
    longtext[1600] = 0;
    CHECK(tok_encode(toks[T_CLIP], longtext, ids, 77, &n) == TOK_OK && n == 77 &&
              ids[0] == sot && ids[76] == eot && ids[75] != eot, "CLIP truncation: n %d", n);
    CHECK(tok_encode(toks[T_BERT], longtext, ids, 256, &n) == TOK_OK && n == 256 &&
              ids[0] == cls && ids[255] == sep && ids[254] != sep, "BERT truncation: n %d", n);
}

/* A word of 200,000 letters: the heap BPE must stay near-linear. */
static void check_long_word(void)
{
    size_t len = 200000;
    char *w = malloc(len + 1);
    for (size_t i = 0; i < len; i++)
        w[i] = "pneumothorax"[i % 12];
    w[len] = 0;
    int32_t ids[77];
    int n;
    double t0 = now();
    int rc = tok_encode(toks[T_CLIP], w, ids, 77, &n);
    double dt = now() - t0;
    CHECK(rc == TOK_OK && n == 77, "long word: rc %d n %d", rc, n);
    fprintf(stderr, "long word: 200,000 letters in %.1f ms\n", dt * 1e3);
    free(w);
}

/* ----------------------------------------------------------------- main */

static int unicode_dump(const char *path)
{
    FILE *f = fopen(path, "wb");
    if (!f) {
        perror(path);
        return 2;
    }
    for (uint32_t cp = 0; cp < 0x110000; cp++) {
        uint32_t rec[7] = {uc_props(cp), uc_tolower(cp), 0, 0, 0, 0, (uint32_t)uc_ccc(cp)};
        uint32_t d[UC_MAX_DECOMP] = {0};
        int nd = uc_decompose(cp, d);
        for (int i = 0; i < nd; i++)
            rec[2 + i] = d[i];
        fwrite(rec, sizeof rec, 1, f);
    }
    fclose(f);
    return 0;
}

int main(int argc, char **argv)
{
    const char *ct_path = NULL, *cm_path = NULL, *wv_path = NULL, *in_path = NULL,
               *out_path = NULL;
    int bench = 0, bench_records = -1; /* time the first bench_records records (-1: all) */
    for (int i = 1; i < argc; i++) {
        const char *v = i + 1 < argc ? argv[i + 1] : NULL;
        if (!strcmp(argv[i], "--unicode-dump") && v)
            return unicode_dump(v);
        else if (!strcmp(argv[i], "--clip-tokens") && v)
            ct_path = argv[++i];
        else if (!strcmp(argv[i], "--clip-merges") && v)
            cm_path = argv[++i];
        else if (!strcmp(argv[i], "--wp-vocab") && v)
            wv_path = argv[++i];
        else if (!strcmp(argv[i], "--in") && v)
            in_path = argv[++i];
        else if (!strcmp(argv[i], "--out") && v)
            out_path = argv[++i];
        else if (!strcmp(argv[i], "--bench") && v)
            bench = atoi(argv[++i]);
        else if (!strcmp(argv[i], "--bench-records") && v)
            bench_records = atoi(argv[++i]);
        else {
            fprintf(stderr, "usage: see the comment at the top of test_tokenizer.c\n");
            return 2;
        }
    }
    if (!ct_path || !cm_path || !wv_path || !in_path || !out_path) {
        fprintf(stderr, "test_tokenizer: --clip-tokens, --clip-merges, --wp-vocab, --in and --out are required\n");
        return 2;
    }
    lines_t ct, cm, wv;
    if (read_lines(ct_path, &ct) || read_lines(cm_path, &cm) || read_lines(wv_path, &wv))
        return 2;
    char err[256];
    int rc = tok_bpe_init(&toks[T_CLIP], as_const(ct.lines), ct.n, as_const(cm.lines), cm.n, err,
                          sizeof err);
    if (rc != TOK_OK) {
        fprintf(stderr, "tok_bpe_init: %s (%d)\n", err, rc);
        return 1;
    }
    static const int wp_flags[T_COUNT] = {0, TOK_WP_LOWERCASE,
                                          TOK_WP_LOWERCASE | TOK_WP_OPENCLIP_CLEAN, 0};
    for (int w = T_BERT; w < T_COUNT; w++) {
        rc = tok_wordpiece_init(&toks[w], as_const(wv.lines), wv.n, wp_flags[w], err, sizeof err);
        if (rc != TOK_OK) {
            fprintf(stderr, "tok_wordpiece_init: %s (%d)\n", err, rc);
            return 1;
        }
    }
    CHECK(tok_vocab_size(toks[T_CLIP]) == ct.n && tok_vocab_size(toks[T_BERT]) == wv.n,
          "vocab sizes");

    int nrec = 0;
    record *recs = read_records(in_path, &nrec);
    if (!recs)
        return 2;
    int stride = 2;
    for (int i = 0; i < nrec; i++) {
        stride = recs[i].ctx_clip > stride ? recs[i].ctx_clip : stride;
        stride = recs[i].ctx_bert > stride ? recs[i].ctx_bert : stride;
    }

    /* every tokenizer on every record; two threads per tokenizer on the same
     * handle must agree with each other (encode must not mutate it) */
    FILE *out = fopen(out_path, "w");
    if (!out) {
        perror(out_path);
        return 2;
    }
    for (int w = 0; w < T_COUNT; w++) {
        job j[2];
        pthread_t th[2];
        for (int k = 0; k < 2; k++) {
            j[k] = (job){w, recs, nrec, stride, calloc((size_t)nrec * stride, sizeof(int32_t)),
                         calloc((size_t)nrec, sizeof(int)), 0};
            pthread_create(&th[k], NULL, run_job, &j[k]);
        }
        for (int k = 0; k < 2; k++)
            pthread_join(th[k], NULL);
        CHECK(j[0].rc == TOK_OK && j[1].rc == TOK_OK, "encode failed: %d %d", j[0].rc, j[1].rc);
        CHECK(memcmp(j[0].ids, j[1].ids, (size_t)nrec * stride * sizeof(int32_t)) == 0 &&
                  memcmp(j[0].counts, j[1].counts, (size_t)nrec * sizeof(int)) == 0,
              "threads disagree for tokenizer %c", tags[w]);
        for (int i = 0; i < nrec; i++) {
            int ctx = ctx_of(w, &recs[i]);
            fprintf(out, "%c %d", tags[w], j[0].counts[i]);
            for (int k = 0; k < ctx; k++)
                fprintf(out, " %d", (int)j[0].ids[(size_t)i * stride + k]);
            fputc('\n', out);
        }
        free(j[0].ids);
        free(j[0].counts);
        free(j[1].ids);
        free(j[1].counts);
    }
    fclose(out);

    check_errors(&ct, &cm, &wv);
    check_specials(&ct, &wv);
    check_long_word();

    if (bench > 0) {
        int nb = bench_records >= 0 && bench_records < nrec ? bench_records : nrec;
        int32_t *ids = malloc((size_t)stride * sizeof *ids);
        for (int w = 0; w < T_OPENCLIP + 1; w++) {
            double best = 1e30;
            for (int rep = 0; rep < bench; rep++) {
                double t0 = now();
                int n;
                for (int i = 0; i < nb; i++)
                    tok_encode(toks[w], recs[i].text, ids, ctx_of(w, &recs[i]), &n);
                double dt = now() - t0;
                best = dt < best ? dt : best;
            }
            printf("bench %c: %d texts in %.2f ms (best of %d) = %.2f us/text\n", tags[w], nb,
                   best * 1e3, bench, best * 1e6 / nb);
        }
        free(ids);
    }

    for (int w = 0; w < T_COUNT; w++)
        tok_free(toks[w]);
    for (int i = 0; i < nrec; i++)
        free(recs[i].text);
    free(recs);
    free_lines(&ct);
    free_lines(&cm);
    free_lines(&wv);
    if (failures)
        fprintf(stderr, "test_tokenizer: %d self-check(s) failed\n", failures);
    else
        fprintf(stderr, "test_tokenizer: all self-checks passed\n");
    return failures ? 1 : 0;
}
