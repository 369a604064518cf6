/*
 * tokenizer.c — owns text -> token ids for both text towers: the OpenAI-CLIP
 * byte-level BPE (normalisation, the CLIP pre-tokenizer regex, merging) and
 * BERT's BasicTokenizer + WordPiece. It reproduces the Python references in
 * model/tools/convert/ref_tokenizer.py exactly, quirks included, and must not print,
 * allocate in globals or mutate a tokenizer after init. Unicode facts come
 * from unicode_tables.c (generated from Python's own unicodedata).
 */
#include "tokenizer.h"

#include <stdarg.h>
#include <stdbool.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>

#include "unicode_tables.h"

enum { KIND_BPE = 1, KIND_WORDPIECE = 2 };

#define WP_MAX_CHARS_PER_WORD 100 /* HF WordpieceTokenizer.max_input_chars_per_word */
#define HTML_MAX_NAME 32          /* html._charref: [^\t\n\f <&#;]{1,32} */
#define POOL_MAX_BYTES (1u << 30) /* all vocabulary strings together */

struct cxr_tokenizer {
    int kind;
    int flags;        /* TOK_WP_* for WordPiece */
    int32_t n_vocab;
    /* vocabulary: token i is pool[off[i] .. off[i] + len[i]) */
    char *pool;
    uint32_t *off, *len;
    uint32_t *slots;  /* open addressing: id + 1, 0 = empty */
    uint32_t mask;
    /* BPE merges: pair (a, b) -> rank; rank -> (a, b, merged id) */
    int32_t n_merges;
    uint64_t *pair_keys;  /* ((uint64_t)a << 32 | b) + 1, 0 = empty */
    int32_t *pair_ranks;
    uint32_t pair_mask;
    int32_t *merge_a, *merge_b, *merge_id;
    int32_t byte_id[256], byte_eow_id[256];
    int32_t sot, eot;
    /* WordPiece specials */
    int32_t pad, unk, cls, sep;
};

/* ---------------------------------------------------------------- errors */

static void seterr(char *err, size_t errlen, const char *fmt, ...)
{
    if (!err || errlen == 0)
        return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

/* ------------------------------------------------------------- hash maps */

static uint32_t hash_bytes(const char *s, size_t n)
{
    uint32_t h = 2166136261u; /* FNV-1a */
    for (size_t i = 0; i < n; i++)
        h = (h ^ (unsigned char)s[i]) * 16777619u;
    return h;
}

static uint64_t hash_u64(uint64_t x)
{
    x ^= x >> 33; /* murmur3 finaliser */
    x *= 0xff51afd7ed558ccdull;
    x ^= x >> 33;
    x *= 0xc4ceb9fe1a85ec53ull;
    x ^= x >> 33;
    return x;
}

static uint32_t table_size(uint32_t n)
{
    uint32_t cap = 16;
    while (cap < 2 * n)
        cap <<= 1;
    return cap;
}

/* Id of the token spelled s[0..n), or -1. */
static int32_t vocab_find(const cxr_tokenizer *t, const char *s, size_t n)
{
    uint32_t i = hash_bytes(s, n) & t->mask;
    for (;;) {
        uint32_t v = t->slots[i];
        if (v == 0)
            return -1;
        uint32_t id = v - 1;
        if (t->len[id] == n && memcmp(t->pool + t->off[id], s, n) == 0)
            return (int32_t)id;
        i = (i + 1) & t->mask;
    }
}

/* Inserts token id; a repeated spelling takes the later id (Python dict). */
static void vocab_insert(cxr_tokenizer *t, uint32_t id)
{
    const char *s = t->pool + t->off[id];
    size_t n = t->len[id];
    uint32_t i = hash_bytes(s, n) & t->mask;
    for (;;) {
        uint32_t v = t->slots[i];
        if (v == 0 || (t->len[v - 1] == n && memcmp(t->pool + t->off[v - 1], s, n) == 0)) {
            t->slots[i] = id + 1;
            return;
        }
        i = (i + 1) & t->mask;
    }
}

/* Rank of the merge (a, b), or -1. */
static int32_t pair_rank(const cxr_tokenizer *t, int32_t a, int32_t b)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & t->pair_mask;
    for (;;) {
        uint64_t k = t->pair_keys[i];
        if (k == 0)
            return -1;
        if (k == key)
            return t->pair_ranks[i];
        i = (i + 1) & t->pair_mask;
    }
}

static void pair_insert(cxr_tokenizer *t, int32_t a, int32_t b, int32_t rank)
{
    uint64_t key = (((uint64_t)(uint32_t)a << 32) | (uint32_t)b) + 1;
    uint32_t i = (uint32_t)hash_u64(key) & t->pair_mask;
    while (t->pair_keys[i] != 0 && t->pair_keys[i] != key)
        i = (i + 1) & t->pair_mask;
    t->pair_keys[i] = key;
    t->pair_ranks[i] = rank; /* a repeated merge keeps its last rank */
}

/* ------------------------------------------------------------ init / free */

void tok_free(cxr_tokenizer *t)
{
    if (!t)
        return;
    free(t->pool);
    free(t->off);
    free(t->len);
    free(t->slots);
    free(t->pair_keys);
    free(t->pair_ranks);
    free(t->merge_a);
    free(t->merge_b);
    free(t->merge_id);
    free(t);
}

int tok_vocab_size(const cxr_tokenizer *t)
{
    return t ? (int)t->n_vocab : 0;
}

/* Copies the token strings and builds the spelling -> id map. */
static int load_vocab(cxr_tokenizer *t, const char *const *tokens, int n_tokens,
                      char *err, size_t errlen)
{
    uint64_t total = 0;
    for (int i = 0; i < n_tokens; i++) {
        if (!tokens[i]) {
            seterr(err, errlen, "token %d is NULL", i);
            return TOK_ERR_ARG;
        }
        size_t n = strnlen(tokens[i], TOK_MAX_TOKEN_BYTES + 1);
        if (n > TOK_MAX_TOKEN_BYTES) {
            seterr(err, errlen, "token %d is longer than %d bytes", i, TOK_MAX_TOKEN_BYTES);
            return TOK_ERR_VOCAB;
        }
        total += n;
    }
    if (total > POOL_MAX_BYTES) {
        seterr(err, errlen, "vocabulary strings take more than %u bytes", POOL_MAX_BYTES);
        return TOK_ERR_VOCAB;
    }
    t->n_vocab = n_tokens;
    t->pool = malloc(total ? (size_t)total : 1);
    t->off = malloc((size_t)n_tokens * sizeof *t->off);
    t->len = malloc((size_t)n_tokens * sizeof *t->len);
    uint32_t cap = table_size((uint32_t)n_tokens);
    t->slots = calloc(cap, sizeof *t->slots);
    if (!t->pool || !t->off || !t->len || !t->slots) {
        seterr(err, errlen, "out of memory for %d tokens", n_tokens);
        return TOK_ERR_NOMEM;
    }
    t->mask = cap - 1;
    uint64_t at = 0;
    for (int i = 0; i < n_tokens; i++) {
        size_t n = strlen(tokens[i]);
        memcpy(t->pool + at, tokens[i], n);
        t->off[i] = (uint32_t)at;
        t->len[i] = (uint32_t)n;
        at += n;
        vocab_insert(t, (uint32_t)i);
    }
    return TOK_OK;
}

static int32_t find_required(const cxr_tokenizer *t, const char *s, char *err, size_t errlen)
{
    int32_t id = vocab_find(t, s, strlen(s));
    if (id < 0)
        seterr(err, errlen, "vocabulary lacks the token \"%s\"", s);
    return id;
}

/* bytes_to_unicode() of OpenAI's simple_tokenizer.py: printable Latin-1
 * bytes stand for themselves, the other 68 map to U+0100.. in byte order. */
static uint32_t byte_char(int b)
{
    static const int printable_lo[3] = {0x21, 0xA1, 0xAE}, printable_hi[3] = {0x7E, 0xAC, 0xFF};
    int n = 0;
    for (int x = 0; x < 256; x++) {
        bool printable = false;
        for (int r = 0; r < 3; r++)
            printable |= x >= printable_lo[r] && x <= printable_hi[r];
        if (x == b)
            return printable ? (uint32_t)x : (uint32_t)(256 + n);
        if (!printable)
            n++;
    }
    return 0;
}

static size_t utf8_put(uint32_t cp, char *out)
{
    if (cp < 0x80) {
        out[0] = (char)cp;
        return 1;
    }
    if (cp < 0x800) {
        out[0] = (char)(0xC0 | (cp >> 6));
        out[1] = (char)(0x80 | (cp & 0x3F));
        return 2;
    }
    if (cp < 0x10000) {
        out[0] = (char)(0xE0 | (cp >> 12));
        out[1] = (char)(0x80 | ((cp >> 6) & 0x3F));
        out[2] = (char)(0x80 | (cp & 0x3F));
        return 3;
    }
    out[0] = (char)(0xF0 | (cp >> 18));
    out[1] = (char)(0x80 | ((cp >> 12) & 0x3F));
    out[2] = (char)(0x80 | ((cp >> 6) & 0x3F));
    out[3] = (char)(0x80 | (cp & 0x3F));
    return 4;
}

int tok_bpe_init(cxr_tokenizer **out, const char *const *tokens, int n_tokens,
                 const char *const *merges, int n_merges, char *err, size_t errlen)
{
    seterr(err, errlen, "ok");
    if (!out || !tokens || (!merges && n_merges) || n_tokens <= 0 || n_tokens > TOK_MAX_VOCAB ||
        n_merges < 0 || n_merges > TOK_MAX_VOCAB) {
        seterr(err, errlen, "bad argument (n_tokens %d, n_merges %d)", n_tokens, n_merges);
        return TOK_ERR_ARG;
    }
    *out = NULL;
    cxr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        seterr(err, errlen, "out of memory");
        return TOK_ERR_NOMEM;
    }
    t->kind = KIND_BPE;
    int rc = load_vocab(t, tokens, n_tokens, err, errlen);
    if (rc != TOK_OK)
        goto fail;

    rc = TOK_ERR_VOCAB;
    for (int b = 0; b < 256; b++) {
        char s[16];
        size_t n = utf8_put(byte_char(b), s);
        memcpy(s + n, "</w>", 5);
        s[n] = 0;
        if ((t->byte_id[b] = find_required(t, s, err, errlen)) < 0)
            goto fail;
        s[n] = '<';
        if ((t->byte_eow_id[b] = find_required(t, s, err, errlen)) < 0)
            goto fail;
    }
    if ((t->sot = find_required(t, "<|startoftext|>", err, errlen)) < 0 ||
        (t->eot = find_required(t, "<|endoftext|>", err, errlen)) < 0)
        goto fail;

    rc = TOK_ERR_NOMEM;
    t->n_merges = n_merges;
    uint32_t cap = table_size((uint32_t)n_merges);
    t->pair_keys = calloc(cap, sizeof *t->pair_keys);
    t->pair_ranks = malloc(cap * sizeof *t->pair_ranks);
    t->merge_a = malloc(((size_t)n_merges + 1) * sizeof *t->merge_a);
    t->merge_b = malloc(((size_t)n_merges + 1) * sizeof *t->merge_b);
    t->merge_id = malloc(((size_t)n_merges + 1) * sizeof *t->merge_id);
    char *joined = malloc(2 * TOK_MAX_TOKEN_BYTES + 2);
    if (!t->pair_keys || !t->pair_ranks || !t->merge_a || !t->merge_b || !t->merge_id || !joined) {
        free(joined);
        seterr(err, errlen, "out of memory for %d merges", n_merges);
        goto fail;
    }
    t->pair_mask = cap - 1;
    rc = TOK_ERR_VOCAB;
    for (int r = 0; r < n_merges; r++) {
        const char *m = merges[r];
        const char *sp = m ? strchr(m, ' ') : NULL;
        size_t la = sp ? (size_t)(sp - m) : 0;
        size_t lb = sp ? strnlen(sp + 1, TOK_MAX_TOKEN_BYTES + 1) : 0;
        if (!sp || la == 0 || lb == 0 || lb > TOK_MAX_TOKEN_BYTES || la > TOK_MAX_TOKEN_BYTES ||
            memchr(sp + 1, ' ', lb)) {
            seterr(err, errlen, "merge %d is not two tokens separated by one space", r);
            free(joined);
            goto fail;
        }
        int32_t a = vocab_find(t, m, la), b = vocab_find(t, sp + 1, lb);
        memcpy(joined, m, la);
        memcpy(joined + la, sp + 1, lb);
        int32_t ab = vocab_find(t, joined, la + lb);
        if (a < 0 || b < 0 || ab < 0) {
            seterr(err, errlen, "merge %d \"%s\": %s is not in the vocabulary", r, m,
                   a < 0 ? "the first part" : b < 0 ? "the second part" : "the merged token");
            free(joined);
            goto fail;
        }
        t->merge_a[r] = a;
        t->merge_b[r] = b;
        t->merge_id[r] = ab;
        pair_insert(t, a, b, r);
    }
    free(joined);
    *out = t;
    return TOK_OK;
fail:
    tok_free(t);
    return rc;
}

int tok_wordpiece_init(cxr_tokenizer **out, const char *const *tokens, int n_tokens,
                       int lowercase, char *err, size_t errlen)
{
    seterr(err, errlen, "ok");
    if (!out || !tokens || n_tokens <= 0 || n_tokens > TOK_MAX_VOCAB ||
        (lowercase & ~(TOK_WP_LOWERCASE | TOK_WP_OPENCLIP_CLEAN))) {
        seterr(err, errlen, "bad argument (n_tokens %d, flags %d)", n_tokens, lowercase);
        return TOK_ERR_ARG;
    }
    *out = NULL;
    cxr_tokenizer *t = calloc(1, sizeof *t);
    if (!t) {
        seterr(err, errlen, "out of memory");
        return TOK_ERR_NOMEM;
    }
    t->kind = KIND_WORDPIECE;
    t->flags = lowercase;
    int rc = load_vocab(t, tokens, n_tokens, err, errlen);
    if (rc != TOK_OK)
        goto fail;
    rc = TOK_ERR_VOCAB;
    if ((t->pad = find_required(t, "[PAD]", err, errlen)) < 0 ||
        (t->unk = find_required(t, "[UNK]", err, errlen)) < 0 ||
        (t->cls = find_required(t, "[CLS]", err, errlen)) < 0 ||
        (t->sep = find_required(t, "[SEP]", err, errlen)) < 0)
        goto fail;
    *out = t;
    return TOK_OK;
fail:
    tok_free(t);
    return rc;
}

/* --------------------------------------------------------------- scratch */

/* Per-call growable buffers; everything a call allocates hangs off this. */
typedef struct {
    void *p;
    size_t cap; /* bytes */
} buf;

static bool grow(buf *b, size_t bytes)
{
    if (bytes <= b->cap)
        return true;
    size_t cap = b->cap ? b->cap : 256;
    while (cap < bytes)
        cap *= 2;
    void *p = realloc(b->p, cap);
    if (!p)
        return false;
    b->p = p;
    b->cap = cap;
    return true;
}

/* Output under construction: content ids go to ids[1 .. 1 + room). */
typedef struct {
    int32_t *ids;
    int n, room;
} sink;

static bool sink_full(const sink *s)
{
    return s->n >= s->room;
}

static void sink_put(sink *s, int32_t id)
{
    if (s->n < s->room)
        s->ids[1 + s->n++] = id;
}

/* ------------------------------------------------------- text primitives */

/* UTF-8 -> code points with Python's "replace" policy: one U+FFFD per
 * maximal subpart of an ill-formed sequence (Unicode 3.9, "best practice").
 * Never writes more than n code points. */
static size_t utf8_decode(const unsigned char *s, size_t n, uint32_t *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        unsigned c = s[i];
        if (c < 0x80) {
            out[k++] = c;
            i++;
            continue;
        }
        int need;
        uint32_t cp;
        unsigned lo = 0x80, hi = 0xBF;
        if (c >= 0xC2 && c <= 0xDF) {
            need = 1;
            cp = c & 0x1F;
        } else if (c >= 0xE0 && c <= 0xEF) {
            need = 2;
            cp = c & 0x0F;
            if (c == 0xE0)
                lo = 0xA0;
            else if (c == 0xED)
                hi = 0x9F;
        } else if (c >= 0xF0 && c <= 0xF4) {
            need = 3;
            cp = c & 0x07;
            if (c == 0xF0)
                lo = 0x90;
            else if (c == 0xF4)
                hi = 0x8F;
        } else {
            out[k++] = 0xFFFD;
            i++;
            continue;
        }
        size_t j = i + 1;
        int got = 0;
        while (got < need && j < n && s[j] >= lo && s[j] <= hi) {
            cp = (cp << 6) | (s[j] & 0x3F);
            j++;
            got++;
            lo = 0x80;
            hi = 0xBF;
        }
        out[k++] = got == need ? cp : 0xFFFD;
        i = j;
    }
    return k;
}

static bool is_digit(uint32_t c, int base, unsigned *v)
{
    if (c >= '0' && c <= '9')
        *v = c - '0';
    else if (base == 16 && c >= 'a' && c <= 'f')
        *v = c - 'a' + 10;
    else if (base == 16 && c >= 'A' && c <= 'F')
        *v = c - 'A' + 10;
    else
        return false;
    return true;
}

static bool html_name_char(uint32_t c)
{
    return c != '\t' && c != '\n' && c != '\f' && c != ' ' && c != '<' && c != '&' &&
           c != '#' && c != ';';
}

/* One pass of Python's html.unescape() (the _charref regex and
 * _replace_charref). Output is never longer than the input. */
static size_t html_unescape(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t i = 0, k = 0;
    while (i < n) {
        if (in[i] != '&') {
            out[k++] = in[i++];
            continue;
        }
        size_t j = i + 1;
        if (j < n && in[j] == '#') {
            /* &#[0-9]+;?  |  &#[xX][0-9a-fA-F]+;? */
            size_t d = j + 1;
            int base = 10;
            unsigned v;
            if (d < n && (in[d] == 'x' || in[d] == 'X') && d + 1 < n && is_digit(in[d + 1], 16, &v)) {
                base = 16;
                d++;
            }
            size_t first = d;
            uint64_t num = 0;
            while (d < n && is_digit(in[d], base, &v)) {
                num = num * (uint64_t)base + v;
                if (num > 0x110000)
                    num = 0x110000; /* saturate: anything above 0x10FFFF is U+FFFD */
                d++;
            }
            if (d == first) { /* "&#" without digits is no reference */
                out[k++] = in[i++];
                continue;
            }
            if (d < n && in[d] == ';')
                d++;
            uint32_t cp;
            if (uc_html_charref(num, &cp))
                out[k++] = cp;
            i = d;
            continue;
        }
        /* named: [^\t\n\f <&#;]{1,32};? */
        size_t e = j;
        while (e < n && e - j < HTML_MAX_NAME && html_name_char(in[e]))
            e++;
        if (e == j) {
            out[k++] = in[i++];
            continue;
        }
        size_t end = (e < n && in[e] == ';') ? e + 1 : e;
        size_t len = end - j; /* the name s, with its ';' if any */
        char name[HTML_MAX_NAME + 2];
        size_t ascii = 0; /* how many leading chars of s are ASCII */
        while (ascii < len && in[j + ascii] < 0x80) {
            name[ascii] = (char)in[j + ascii];
            ascii++;
        }
        uint32_t val[2];
        int nv = 0;
        size_t used = 0;
        if (ascii == len && (nv = uc_html_entity(name, len, val)) > 0) {
            used = len;
        } else {
            /* longest prefix s[:x], 2 <= x < len(s), that is an entity */
            for (size_t x = (len - 1 < ascii ? len - 1 : ascii); x >= 2; x--)
                if ((nv = uc_html_entity(name, x, val)) > 0) {
                    used = x;
                    break;
                }
        }
        if (nv > 0) {
            for (int q = 0; q < nv; q++)
                out[k++] = val[q];
            for (size_t q = j + used; q < end; q++)
                out[k++] = in[q];
        } else {
            for (size_t q = i; q < end; q++)
                out[k++] = in[q];
        }
        i = end;
    }
    return k;
}

/* str.strip(), then the regex module's re.sub(r'\s+', ' ', .), then
 * str.strip() (open_clip / CLIP basic_clean + whitespace_clean). */
static size_t clean_whitespace(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t a = 0, b = n;
    while (a < b && (uc_props(in[a]) & UC_SPACE_PY))
        a++;
    while (b > a && (uc_props(in[b - 1]) & UC_SPACE_PY))
        b--;
    size_t k = 0;
    for (size_t i = a; i < b;) {
        if (uc_props(in[i]) & UC_SPACE_RE) {
            while (i < b && (uc_props(in[i]) & UC_SPACE_RE))
                i++;
            out[k++] = ' ';
        } else {
            out[k++] = in[i++];
        }
    }
    a = 0;
    b = k;
    while (a < b && (uc_props(out[a]) & UC_SPACE_PY))
        a++;
    while (b > a && (uc_props(out[b - 1]) & UC_SPACE_PY))
        b--;
    if (a > 0)
        memmove(out, out + a, (b - a) * sizeof *out);
    return b - a;
}

/* Final_Sigma context of the U+03A3 at in[i] (CPython handle_capital_sigma). */
static bool final_sigma(const uint32_t *in, size_t n, size_t i)
{
    size_t j = i;
    unsigned p = 0;
    while (j > 0) {
        p = uc_props(in[--j]);
        if (!(p & UC_CASE_IGN))
            break;
        p = 0;
    }
    if (!(p & UC_CASED))
        return false;
    for (j = i + 1; j < n; j++) {
        p = uc_props(in[j]);
        if (!(p & UC_CASE_IGN))
            return !(p & UC_CASED);
    }
    return true;
}

/* Python str.lower(): out needs room for 2 * n code points. */
static size_t lower_full(const uint32_t *in, size_t n, uint32_t *out)
{
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        if (c == 0x3A3) {
            out[k++] = final_sigma(in, n, i) ? 0x3C2 : 0x3C3;
        } else if (c == 0x130) {
            out[k++] = 'i';
            out[k++] = 0x307;
        } else {
            out[k++] = uc_tolower(c);
        }
    }
    return k;
}

/* --------------------------------------------------------------- CLIP BPE */

typedef struct {
    int32_t rank, pos;
} heap_ent;

static bool heap_less(heap_ent a, heap_ent b)
{
    return a.rank < b.rank || (a.rank == b.rank && a.pos < b.pos);
}

static void heap_push(heap_ent *h, int *n, heap_ent e)
{
    int i = (*n)++;
    while (i > 0) {
        int p = (i - 1) / 2;
        if (!heap_less(e, h[p]))
            break;
        h[i] = h[p];
        i = p;
    }
    h[i] = e;
}

static heap_ent heap_pop(heap_ent *h, int *n)
{
    heap_ent top = h[0], last = h[--(*n)];
    int i = 0;
    for (;;) {
        int c = 2 * i + 1;
        if (c >= *n)
            break;
        if (c + 1 < *n && heap_less(h[c + 1], h[c]))
            c++;
        if (!heap_less(h[c], last))
            break;
        h[i] = h[c];
        i = c;
    }
    if (*n > 0)
        h[i] = last;
    return top;
}

typedef struct {
    buf bytes, tok, nxt, prv, heap, batch;
} bpe_scratch;

static void push_pair(const cxr_tokenizer *t, heap_ent *h, int *nh, const int32_t *tok,
                      int32_t p, int32_t q)
{
    if (p < 0 || q < 0)
        return;
    int32_t r = pair_rank(t, tok[p], tok[q]);
    if (r >= 0)
        heap_push(h, nh, (heap_ent){r, p});
}

/* SimpleTokenizer.bpe() on one pre-token (its code points), ids to sink.
 *
 * Python repeatedly takes the lowest-ranked adjacent pair and merges all its
 * occurrences left to right in one pass. Here the symbols form a doubly
 * linked list (node = original byte position, so list order = position
 * order) and every adjacent pair with a rank has an entry in a heap ordered
 * by (rank, position). A pass pops every entry of the lowest rank — they come
 * out left to right — merges those whose pair is still there, and only then
 * pushes the pairs the merges created, so new pairs never join the pass that
 * made them, as in Python. Entries whose pair has changed since are skipped
 * (the merged token is a longer string than either part, so a changed node
 * can never look like the old pair again). O(n log n) per word instead of
 * Python's O(n^2), which keeps absurdly long words harmless. */
static int bpe_word(const cxr_tokenizer *t, const uint32_t *cps, size_t n, bpe_scratch *s,
                    sink *out)
{
    if (!grow(&s->bytes, 4 * n))
        return TOK_ERR_NOMEM;
    char *bytes = s->bytes.p;
    size_t m = 0;
    for (size_t i = 0; i < n; i++)
        m += utf8_put(cps[i], bytes + m);
    /* "<|startoftext|>" / "<|endoftext|>" are in SimpleTokenizer's cache */
    if (m == 15 && memcmp(bytes, "<|startoftext|>", 15) == 0) {
        sink_put(out, t->sot);
        return TOK_OK;
    }
    if (m == 13 && memcmp(bytes, "<|endoftext|>", 13) == 0) {
        sink_put(out, t->eot);
        return TOK_OK;
    }
    if (m > INT32_MAX / 4)
        return TOK_ERR_ARG;
    if (!grow(&s->tok, m * sizeof(int32_t)) || !grow(&s->nxt, m * sizeof(int32_t)) ||
        !grow(&s->prv, m * sizeof(int32_t)) || !grow(&s->heap, 3 * m * sizeof(heap_ent)) ||
        !grow(&s->batch, 3 * m * sizeof(int32_t)))
        return TOK_ERR_NOMEM;
    int32_t *tok = s->tok.p, *nxt = s->nxt.p, *prv = s->prv.p, *batch = s->batch.p;
    heap_ent *h = s->heap.p;
    int nh = 0;
    for (size_t i = 0; i < m; i++) {
        unsigned char b = (unsigned char)bytes[i];
        tok[i] = i + 1 < m ? t->byte_id[b] : t->byte_eow_id[b];
        nxt[i] = i + 1 < m ? (int32_t)(i + 1) : -1;
        prv[i] = (int32_t)i - 1;
    }
    for (size_t i = 0; i + 1 < m; i++)
        push_pair(t, h, &nh, tok, (int32_t)i, (int32_t)(i + 1));
    /* at most m - 1 merges, each pushing two entries: the heap never holds
     * more than 3m entries, so neither does one batch popped from it */
    while (nh > 0) {
        int32_t r = h[0].rank;
        int nb = 0;
        while (nh > 0 && h[0].rank == r)
            batch[nb++] = heap_pop(h, &nh).pos;
        int32_t a = t->merge_a[r], b = t->merge_b[r], ab = t->merge_id[r];
        int merged = 0;
        for (int k = 0; k < nb; k++) {
            int32_t p = batch[k], q = nxt[p];
            if (tok[p] != a || q < 0 || tok[q] != b)
                continue; /* stale, or a duplicate of one just merged */
            tok[p] = ab;
            nxt[p] = nxt[q];
            if (nxt[q] >= 0)
                prv[nxt[q]] = p;
            tok[q] = -1;
            batch[merged++] = p; /* merged <= k: never overwrites unread entries */
        }
        for (int k = 0; k < merged; k++) {
            int32_t p = batch[k];
            push_pair(t, h, &nh, tok, prv[p], p);
            push_pair(t, h, &nh, tok, p, nxt[p]);
        }
    }
    for (int32_t p = 0; p >= 0 && !sink_full(out); p = nxt[p])
        sink_put(out, tok[p]);
    return TOK_OK;
}

static bool is_s(uint32_t c)
{
    return c == 's' || c == 0x17F; /* IGNORECASE: U+017F LONG S folds to 's' */
}

/* Length of the special "<|startoftext|>" / "<|endoftext|>" at t[i], or 0,
 * matching as the regex module does under IGNORECASE on lower-cased text. */
static size_t match_special(const uint32_t *t, size_t n, size_t i)
{
    static const char *const specials[2] = {"<|startoftext|>", "<|endoftext|>"};
    for (int s = 0; s < 2; s++) {
        size_t l = strlen(specials[s]);
        if (n - i < l)
            continue;
        size_t k = 0;
        while (k < l && (t[i + k] == (unsigned char)specials[s][k] ||
                         (specials[s][k] == 's' && is_s(t[i + k]))))
            k++;
        if (k == l)
            return l;
    }
    return 0;
}

/* Length of 's|'t|'re|'ve|'m|'ll|'d at t[i], or 0. */
static size_t match_contraction(const uint32_t *t, size_t n, size_t i)
{
    if (t[i] != '\'' || i + 1 >= n)
        return 0;
    uint32_t c = t[i + 1], d = i + 2 < n ? t[i + 2] : 0;
    if (is_s(c) || c == 't' || c == 'm' || c == 'd')
        return 2;
    if ((c == 'r' && d == 'e') || (c == 'v' && d == 'e') || (c == 'l' && d == 'l'))
        return 3;
    return 0;
}

/* Under IGNORECASE the regex module matches U+0345 COMBINING GREEK
 * YPOGEGRAMMENI (case-folds to iota) with neither [\p{L}] nor
 * [^\s\p{L}\p{N}], so findall skips it like white space. */
#define CLIP_SKIPPED 0x345

static int encode_clip(const cxr_tokenizer *t, const uint32_t *in, size_t n, uint32_t *tmp,
                       uint32_t *low, sink *out)
{
    /* basic_clean (minus ftfy) + whitespace_clean, then .lower() */
    n = html_unescape(in, n, tmp);
    uint32_t *once = (uint32_t *)in; /* the decoded input is no longer needed */
    n = html_unescape(tmp, n, once);
    n = clean_whitespace(once, n, tmp);
    n = lower_full(tmp, n, low);

    bpe_scratch s;
    memset(&s, 0, sizeof s);
    int rc = TOK_OK;
    size_t i = 0;
    while (i < n && !sink_full(out) && rc == TOK_OK) {
        uint32_t c = low[i];
        unsigned p = uc_props(c);
        size_t len = 0;
        if (c == '<')
            len = match_special(low, n, i);
        if (!len && c == '\'')
            len = match_contraction(low, n, i);
        if (!len) {
            if (p & UC_L) {
                len = 1;
                while (i + len < n && (uc_props(low[i + len]) & UC_L))
                    len++;
            } else if (p & UC_N) {
                len = 1;
            } else if (!(p & UC_SPACE_RE) && c != CLIP_SKIPPED) {
                len = 1;
                while (i + len < n && low[i + len] != CLIP_SKIPPED &&
                       !(uc_props(low[i + len]) & (UC_L | UC_N | UC_SPACE_RE)))
                    len++;
            }
        }
        if (!len) {
            i++;
            continue;
        }
        rc = bpe_word(t, low + i, len, &s, out);
        i += len;
    }
    free(s.bytes.p);
    free(s.tok.p);
    free(s.nxt.p);
    free(s.prv.p);
    free(s.heap.p);
    free(s.batch.p);
    return rc;
}

/* ------------------------------------------------------- BERT WordPiece */

/* HF BasicTokenizer._is_chinese_char: the CJK Unified Ideographs blocks. */
static bool is_cjk(uint32_t c)
{
    return (c >= 0x4E00 && c <= 0x9FFF) || (c >= 0x3400 && c <= 0x4DBF) ||
           (c >= 0x20000 && c <= 0x2A6DF) || (c >= 0x2A700 && c <= 0x2B73F) ||
           (c >= 0x2B740 && c <= 0x2B81F) || (c >= 0x2B820 && c <= 0x2CEAF) ||
           (c >= 0xF900 && c <= 0xFAFF) || (c >= 0x2F800 && c <= 0x2FA1F);
}

/* HF _is_punctuation: ASCII symbols or general category P*. */
static bool is_bert_punct(uint32_t c)
{
    if ((c >= 33 && c <= 47) || (c >= 58 && c <= 64) || (c >= 91 && c <= 96) ||
        (c >= 123 && c <= 126))
        return true;
    return (uc_props(c) & UC_P) != 0;
}

typedef struct {
    buf low, nfd, bytes, offs, pieces;
} wp_scratch;

/* WordpieceTokenizer on one sub-word: greedy longest match, "##" for
 * continuations, [UNK] for the whole word if any position fails or the word
 * has more than 100 code points. */
static int wordpiece(const cxr_tokenizer *t, const uint32_t *w, size_t n, wp_scratch *s,
                     sink *out)
{
    if (n > WP_MAX_CHARS_PER_WORD) {
        sink_put(out, t->unk);
        return TOK_OK;
    }
    if (!grow(&s->bytes, 2 + 4 * n) || !grow(&s->offs, (n + 1) * sizeof(size_t)) ||
        !grow(&s->pieces, n * sizeof(int32_t)))
        return TOK_ERR_NOMEM;
    char *key = s->bytes.p; /* "##" + UTF-8 of the word */
    size_t *off = s->offs.p;
    int32_t *pieces = s->pieces.p;
    key[0] = key[1] = '#';
    off[0] = 2;
    for (size_t i = 0; i < n; i++)
        off[i + 1] = off[i] + utf8_put(w[i], key + off[i]);
    size_t np = 0;
    for (size_t start = 0; start < n;) {
        int32_t id = -1;
        size_t end = n;
        for (; end > start; end--) {
            size_t from = start > 0 ? off[start] - 2 : off[start];
            if (start > 0) {
                /* "##" in front of this piece: overwrite the two bytes before it */
                char save0 = key[from], save1 = key[from + 1];
                key[from] = key[from + 1] = '#';
                id = vocab_find(t, key + from, off[end] - from);
                key[from] = save0;
                key[from + 1] = save1;
            } else {
                id = vocab_find(t, key + from, off[end] - from);
            }
            if (id >= 0)
                break;
        }
        if (id < 0) {
            sink_put(out, t->unk);
            return TOK_OK;
        }
        pieces[np++] = id;
        start = end;
    }
    for (size_t i = 0; i < np; i++)
        sink_put(out, pieces[i]);
    return TOK_OK;
}

/* One whitespace token of BasicTokenizer: lower + strip accents (if asked),
 * split on punctuation, WordPiece each piece. */
static int bert_word(const cxr_tokenizer *t, const uint32_t *w, size_t n, wp_scratch *s,
                     sink *out)
{
    if (t->flags & TOK_WP_LOWERCASE) {
        if (!grow(&s->low, 2 * n * sizeof(uint32_t)) ||
            !grow(&s->nfd, 2 * n * UC_MAX_DECOMP * sizeof(uint32_t)))
            return TOK_ERR_NOMEM;
        uint32_t *low = s->low.p, *d = s->nfd.p;
        size_t nl = lower_full(w, n, low);
        /* NFD: full decomposition, then canonical ordering (stable insertion
         * sort of each run of non-starters by combining class) */
        size_t nd = 0;
        for (size_t i = 0; i < nl; i++) {
            uint32_t c = low[i];
            if (c < 0x80) {
                d[nd++] = c;
                continue;
            }
            nd += (size_t)uc_decompose(c, d + nd);
        }
        for (size_t i = 1; i < nd; i++) {
            uint32_t c = d[i];
            if (c < 0x300)
                continue; /* no combining class below U+0300 */
            int cc = uc_ccc(c);
            if (cc == 0)
                continue;
            size_t j = i;
            while (j > 0 && uc_ccc(d[j - 1]) > cc) {
                d[j] = d[j - 1];
                j--;
            }
            d[j] = c;
        }
        size_t k = 0; /* drop Mn */
        for (size_t i = 0; i < nd; i++)
            if (d[i] < 0x300 || !(uc_props(d[i]) & UC_MN))
                d[k++] = d[i];
        w = d;
        n = k;
    }
    /* _run_split_on_punc, then the join / whitespace split that follows it */
    size_t start = 0;
    for (size_t i = 0; i <= n && !sink_full(out); i++) {
        bool end = i == n;
        bool punct = !end && is_bert_punct(w[i]);
        bool space = !end && !punct && (uc_props(w[i]) & UC_SPACE_PY);
        if (end || punct || space) {
            int rc = TOK_OK;
            if (i > start)
                rc = wordpiece(t, w + start, i - start, s, out);
            if (rc == TOK_OK && punct)
                rc = wordpiece(t, w + i, 1, s, out);
            if (rc != TOK_OK)
                return rc;
            start = i + 1;
        }
    }
    return TOK_OK;
}

/* in: n code points (overwritten); work: room for 3n. */
static int encode_bert(const cxr_tokenizer *t, uint32_t *in, size_t n, uint32_t *work, sink *out)
{
    if (t->flags & TOK_WP_OPENCLIP_CLEAN) {
        n = html_unescape(in, n, work);
        n = html_unescape(work, n, in);
        n = clean_whitespace(in, n, work);
        memcpy(in, work, n * sizeof *in);
    }
    /* _clean_text + _tokenize_chinese_chars, into work (3n at most) */
    uint32_t *cleaned = work;
    size_t k = 0;
    for (size_t i = 0; i < n; i++) {
        uint32_t c = in[i];
        unsigned p = uc_props(c);
        if (c == 0 || c == 0xFFFD || ((p & UC_C) && c != '\t' && c != '\n' && c != '\r'))
            continue;
        if (c == ' ' || c == '\t' || c == '\n' || c == '\r' || (p & UC_ZS)) {
            cleaned[k++] = ' ';
        } else if (is_cjk(c)) {
            cleaned[k++] = ' ';
            cleaned[k++] = c;
            cleaned[k++] = ' ';
        } else {
            cleaned[k++] = c;
        }
    }
    wp_scratch s;
    memset(&s, 0, sizeof s);
    int rc = TOK_OK;
    /* whitespace_tokenize: str.split() */
    for (size_t i = 0; i < k && !sink_full(out) && rc == TOK_OK;) {
        if (uc_props(cleaned[i]) & UC_SPACE_PY) {
            i++;
            continue;
        }
        size_t j = i;
        while (j < k && !(uc_props(cleaned[j]) & UC_SPACE_PY))
            j++;
        rc = bert_word(t, cleaned + i, j - i, &s, out);
        i = j;
    }
    free(s.low.p);
    free(s.nfd.p);
    free(s.bytes.p);
    free(s.offs.p);
    free(s.pieces.p);
    return rc;
}

/* ----------------------------------------------------------------- encode */

int tok_encode(const cxr_tokenizer *t, const char *utf8, int32_t *ids, int ctx, int *n_out)
{
    if (n_out)
        *n_out = 0;
    if (!t || !utf8 || !ids || !n_out || ctx < 2)
        return TOK_ERR_ARG;
    size_t nb = strnlen(utf8, (size_t)TOK_MAX_TEXT_BYTES + 1);
    if (nb > TOK_MAX_TEXT_BYTES)
        return TOK_ERR_ARG;
    /* code point buffers: decoded input (n), then 3n for the largest
     * expansion (lower-casing doubles at most; CJK spacing triples) */
    uint32_t *cp = malloc((4 * nb + 4) * sizeof *cp);
    if (!cp)
        return TOK_ERR_NOMEM;
    size_t n = utf8_decode((const unsigned char *)utf8, nb, cp);
    uint32_t *work = cp + nb + 1;
    sink out = {ids, 0, ctx - 2};
    int rc;
    if (t->kind == KIND_BPE)
        rc = encode_clip(t, cp, n, work, work + nb + 1, &out);
    else
        rc = encode_bert(t, cp, n, work, &out);
    free(cp);
    if (rc != TOK_OK)
        return rc;
    int32_t first = t->kind == KIND_BPE ? t->sot : t->cls;
    int32_t last = t->kind == KIND_BPE ? t->eot : t->sep;
    int32_t pad = t->kind == KIND_BPE ? 0 : t->pad;
    ids[0] = first;
    ids[1 + out.n] = last;
    for (int i = out.n + 2; i < ctx; i++)
        ids[i] = pad;
    *n_out = out.n + 2;
    return TOK_OK;
}
