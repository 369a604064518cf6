/*
 * unicode_tables.h — the Unicode and HTML facts the tokenizers need, as
 * compact sorted tables generated from Python's unicodedata / html modules by
 * model/tools/convert/gen_unicode_tables.py (the data lives in unicode_tables.c, which
 * must never be edited by hand). Internal to model/: not a public header.
 *
 * Every lookup is a binary search over a few thousand entries, needs no
 * initialisation and touches only constant data, so all functions here are
 * thread-safe. Code points are uint32_t in [0, 0x10FFFF]; larger values are
 * treated like unassigned ones.
 */
#ifndef CXR_UNICODE_TABLES_H
#define CXR_UNICODE_TABLES_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Property bits returned by uc_props(); the generator uses the same order. */
enum {
    UC_L = 1 << 0,        /* general category L* (regex \p{L}) */
    UC_N = 1 << 1,        /* general category N* (regex \p{N}) */
    UC_SPACE_PY = 1 << 2, /* str.isspace(): bidi WS/B/S or category Zs */
    UC_SPACE_RE = 1 << 3, /* regex module \s: UC_SPACE_PY minus U+001C..U+001F */
    UC_P = 1 << 4,        /* general category P* */
    UC_C = 1 << 5,        /* general category C* (Cc Cf Cs Co Cn) */
    UC_ZS = 1 << 6,       /* general category Zs */
    UC_MN = 1 << 7,       /* general category Mn */
    UC_CASED = 1 << 8,    /* Cased and not Case_Ignorable (final-sigma rule) */
    UC_CASE_IGN = 1 << 9  /* Case_Ignorable (final-sigma rule) */
};

#define UC_MAX_DECOMP 4   /* longest canonical decomposition of one code point */

typedef struct { uint32_t start; int32_t count, stride, delta; } uc_lower_run;
typedef struct { uint32_t cp; uint16_t off; uint8_t len; } uc_decomp;
typedef struct { uint32_t first, last; int32_t ccc; } uc_ccc_run;
typedef struct { const char *name; uint32_t value[2]; } uc_entity;

/* The generated data (see unicode_tables.c for what each one holds). */
extern const char uc_unicode_version[];
extern const uint32_t uc_prop_start[];
extern const uint16_t uc_prop_bits[];
extern const int uc_prop_count;
extern const uc_lower_run uc_lower_runs[];
extern const int uc_lower_run_count;
extern const uc_decomp uc_decomps[];
extern const int uc_decomp_count;
extern const uint32_t uc_decomp_pool[];
extern const uc_ccc_run uc_ccc_runs[];
extern const int uc_ccc_run_count;
extern const uc_entity uc_entities[];
extern const int uc_entity_count;
extern const uint32_t uc_charref_remap[]; /* pairs: number, replacement */
extern const int uc_charref_remap_count;
extern const uint32_t uc_charref_drop[];  /* pairs: first, last */
extern const int uc_charref_drop_count;

/* UC_* bits of cp. */
unsigned uc_props(uint32_t cp);

/* Simple lower-case mapping as str.lower() applies it to one code point,
 * except the two context- or length-dependent cases the caller handles:
 * U+03A3 (final sigma) and U+0130 (-> "i" U+0307). Returns cp if unmapped. */
uint32_t uc_tolower(uint32_t cp);

/* unicodedata.normalize("NFD", chr(cp)) written to out (UC_MAX_DECOMP slots,
 * Hangul syllables included); returns its length (1 = cp itself). */
int uc_decompose(uint32_t cp, uint32_t out[UC_MAX_DECOMP]);

/* unicodedata.combining(chr(cp)). */
int uc_ccc(uint32_t cp);

/* html.entities.html5[name] for an ASCII name of len bytes (with its ';' if
 * it has one): writes 1 or 2 code points to value and returns how many, or 0
 * when the name is unknown. */
int uc_html_entity(const char *name, size_t len, uint32_t value[2]);

/* What html.unescape() does with the numeric reference &#num;: returns 1 and
 * sets *out to the replacement, or 0 when the reference expands to nothing.
 * num > 0x10FFFF and surrogates give U+FFFD. */
int uc_html_charref(uint64_t num, uint32_t *out);

#ifdef __cplusplus
}
#endif
#endif /* CXR_UNICODE_TABLES_H */
