#!/usr/bin/python3
"""Generate model/unicode_tables.c from Python's own Unicode and HTML data.

The tokenizers in model/tokenizer.c must agree token for token with the Python
references (model/tools/convert/ref_tokenizer.py), which lean on str.lower(),
str.isspace(), unicodedata.category(), unicodedata.normalize('NFD') and
html.unescape().  Rather than re-deriving those from the UCD files, this script
asks the running interpreter, so the C tables mean exactly what Python means.

    /usr/bin/python3 model/tools/convert/gen_unicode_tables.py            # rewrite the .c
    /usr/bin/python3 model/tools/convert/gen_unicode_tables.py --check    # exit 1 if stale

The output depends only on unicodedata.unidata_version and the html module; the
script refuses to run under a different Unicode version than the committed file
was made with unless --force is given (the tables would silently change).
"""

import argparse
import html
import html.entities
import os
import sys
import unicodedata

UNICODE_VERSION = "14.0.0"  # Python 3.11 (Debian 12)
MAXCP = 0x110000

# Property bits; keep in sync with the UC_* enum in unicode_tables.h.
B_L, B_N, B_SPACE_PY, B_SPACE_RE, B_P, B_C, B_ZS, B_MN, B_CASED, B_CASE_IGN = (
    1 << i for i in range(10))


def is_surrogate(c):
    return 0xD800 <= c <= 0xDFFF


def case_props(c):
    """(cased, case_ignorable) as str.lower() sees them for final sigma.

    CPython keeps Cased and Case_Ignorable as private flags; they are only
    observable through the Final_Sigma rule of str.lower(), so probe it:
      c + 'Σ'           -> final sigma iff c is cased and not case-ignorable
      'aΣ' + c + 'a'    -> final sigma iff c is neither cased nor ignorable
    (the scan skips case-ignorable characters in both directions).
    """
    ch = chr(c)
    cased_not_ign = (ch + "\u03a3").lower()[-1] == "\u03c2"
    neither = ("a\u03a3" + ch + "a").lower()[1] == "\u03c2"
    ign = not (cased_not_ign or neither)
    return cased_not_ign, ign


def props(c):
    if is_surrogate(c):
        return B_C  # category Cs; never reaches the tokenizer
    ch = chr(c)
    cat = unicodedata.category(ch)
    b = 0
    if cat[0] == "L":
        b |= B_L
    if cat[0] == "N":
        b |= B_N
    if ch.isspace():
        b |= B_SPACE_PY
        # The `regex` module's \s is the White_Space property, which is
        # str.isspace() minus the four information separators U+001C..U+001F
        # (checked against regex 2022.10.31 over every code point).
        if not 0x1C <= c <= 0x1F:
            b |= B_SPACE_RE
    if cat[0] == "P":
        b |= B_P
    if cat[0] == "C":
        b |= B_C
    if cat == "Zs":
        b |= B_ZS
    if cat == "Mn":
        b |= B_MN
    cased, ign = case_props(c)
    if cased:
        b |= B_CASED
    if ign:
        b |= B_CASE_IGN
    return b


def prop_breaks():
    starts, bits = [], []
    prev = None
    for c in range(MAXCP):
        b = props(c)
        if b != prev:
            starts.append(c)
            bits.append(b)
            prev = b
    return starts, bits


def lower_runs():
    """Runs (start, count, stride, delta): lower(c) = c + delta for
    c = start, start+stride, ... (count values).  Characters whose lower() is
    longer than one code point are listed separately."""
    pairs, multi = [], []
    for c in range(MAXCP):
        if is_surrogate(c) or c == 0x3A3:  # Σ is contextual, handled in C
            continue
        lo = chr(c).lower()
        if len(lo) != 1:
            multi.append((c, [ord(x) for x in lo]))
        elif ord(lo) != c:
            pairs.append((c, ord(lo) - c))
    runs = []
    i = 0
    while i < len(pairs):
        start, delta = pairs[i]
        count, stride = 1, 0
        j = i + 1
        if j < len(pairs) and pairs[j][1] == delta and pairs[j][0] - start in (1, 2):
            stride = pairs[j][0] - start
            while j < len(pairs) and pairs[j][1] == delta and \
                    pairs[j][0] == start + count * stride:
                count += 1
                j += 1
        runs.append((start, count, stride if count > 1 else 1, delta))
        i = j if count > 1 else i + 1
    return runs, multi


def hangul(c):
    return 0xAC00 <= c <= 0xD7A3


def decompositions():
    out = []
    for c in range(MAXCP):
        if is_surrogate(c) or hangul(c):
            continue
        d = unicodedata.normalize("NFD", chr(c))
        if d != chr(c):
            out.append((c, [ord(x) for x in d]))
    # The C side decomposes Hangul algorithmically; make sure that agrees.
    for c in range(0xAC00, 0xD7A4):
        s = c - 0xAC00
        exp = [0x1100 + s // 588, 0x1161 + (s % 588) // 28]
        if s % 28:
            exp.append(0x11A7 + s % 28)
        assert [ord(x) for x in unicodedata.normalize("NFD", chr(c))] == exp
    return out


def ccc_runs():
    runs = []
    for c in range(MAXCP):
        if is_surrogate(c):
            continue
        v = unicodedata.combining(chr(c))
        if not v:
            continue
        if runs and runs[-1][1] == c - 1 and runs[-1][2] == v:
            runs[-1][1] = c
        else:
            runs.append([c, c, v])
    return runs


def ranges(values):
    out = []
    for v in sorted(values):
        if out and out[-1][1] == v - 1:
            out[-1][1] = v
        else:
            out.append([v, v])
    return out


def c_str(s):
    assert all(32 <= ord(ch) < 127 and ch not in '"\\' for ch in s)
    return '"' + s + '"'


def emit_array(lines, ctype, name, items, per_line, fmt):
    lines.append("const %s %s[%d] = {" % (ctype, name, len(items)))
    for i in range(0, len(items), per_line):
        lines.append("    " + ", ".join(fmt(x) for x in items[i:i + per_line]) + ",")
    lines.append("};")
    lines.append("")


CODE = """
/* ------------------------------------------------------------ lookups */

unsigned uc_props(uint32_t cp)
{
    if (cp > 0x10FFFF)
        return UC_C;
    int lo = 0, hi = uc_prop_count - 1; /* last start <= cp; start[0] == 0 */
    while (lo < hi) {
        int mid = lo + (hi - lo + 1) / 2;
        if (uc_prop_start[mid] <= cp)
            lo = mid;
        else
            hi = mid - 1;
    }
    return uc_prop_bits[lo];
}

uint32_t uc_tolower(uint32_t cp)
{
    if (cp < 0x80)
        return (cp >= 'A' && cp <= 'Z') ? cp + 32 : cp;
    int lo = 0, hi = uc_lower_run_count - 1, at = -1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (uc_lower_runs[mid].start <= cp) {
            at = mid;
            lo = mid + 1;
        } else {
            hi = mid - 1;
        }
    }
    if (at < 0)
        return cp;
    const uc_lower_run *r = &uc_lower_runs[at];
    uint32_t k = cp - r->start;
    if (k % (uint32_t)r->stride != 0 || k / (uint32_t)r->stride >= (uint32_t)r->count)
        return cp;
    return (uint32_t)((int32_t)cp + r->delta);
}

int uc_decompose(uint32_t cp, uint32_t out[UC_MAX_DECOMP])
{
    if (cp >= 0xAC00 && cp <= 0xD7A3) { /* Hangul syllable, Unicode 3.12 */
        uint32_t s = cp - 0xAC00;
        out[0] = 0x1100 + s / 588;
        out[1] = 0x1161 + (s % 588) / 28;
        if (s % 28 == 0)
            return 2;
        out[2] = 0x11A7 + s % 28;
        return 3;
    }
    int lo = 0, hi = uc_decomp_count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (uc_decomps[mid].cp == cp) {
            for (int i = 0; i < uc_decomps[mid].len; i++)
                out[i] = uc_decomp_pool[uc_decomps[mid].off + i];
            return uc_decomps[mid].len;
        }
        if (uc_decomps[mid].cp < cp)
            lo = mid + 1;
        else
            hi = mid - 1;
    }
    out[0] = cp;
    return 1;
}

int uc_ccc(uint32_t cp)
{
    int lo = 0, hi = uc_ccc_run_count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        if (cp < uc_ccc_runs[mid].first)
            hi = mid - 1;
        else if (cp > uc_ccc_runs[mid].last)
            lo = mid + 1;
        else
            return uc_ccc_runs[mid].ccc;
    }
    return 0;
}

int uc_html_entity(const char *name, size_t len, uint32_t value[2])
{
    int lo = 0, hi = uc_entity_count - 1;
    while (lo <= hi) {
        int mid = lo + (hi - lo) / 2;
        const unsigned char *e = (const unsigned char *)uc_entities[mid].name;
        const unsigned char *n = (const unsigned char *)name;
        size_t i = 0;
        while (i < len && e[i] && e[i] == n[i])
            i++;
        int cmp;
        if (i == len)
            cmp = e[i] ? -1 : 0;            /* name is a prefix of e, or equal */
        else if (!e[i])
            cmp = 1;                         /* e is a prefix of name */
        else
            cmp = n[i] < e[i] ? -1 : 1;
        if (cmp == 0) {
            value[0] = uc_entities[mid].value[0];
            value[1] = uc_entities[mid].value[1];
            return value[1] ? 2 : 1;
        }
        if (cmp < 0)
            hi = mid - 1;
        else
            lo = mid + 1;
    }
    return 0;
}

int uc_html_charref(uint64_t num, uint32_t *out)
{
    for (int i = 0; i < uc_charref_remap_count; i++)
        if (uc_charref_remap[2 * i] == num) {
            *out = uc_charref_remap[2 * i + 1];
            return 1;
        }
    if ((num >= 0xD800 && num <= 0xDFFF) || num > 0x10FFFF) {
        *out = 0xFFFD;
        return 1;
    }
    for (int i = 0; i < uc_charref_drop_count; i++)
        if (num >= uc_charref_drop[2 * i] && num <= uc_charref_drop[2 * i + 1])
            return 0;
    *out = (uint32_t)num;
    return 1;
}
"""


def generate():
    L = []
    L.append("/* unicode_tables.c — GENERATED by model/tools/convert/gen_unicode_tables.py from")
    L.append(" * Python's unicodedata (Unicode %s) and html module. Do not edit:" %
             unicodedata.unidata_version)
    L.append(" * change the generator and run it again (it also has --check). */")
    L.append("")
    L.append('#include "unicode_tables.h"')
    L.append("")
    L.append('const char uc_unicode_version[] = "%s";' % unicodedata.unidata_version)
    L.append("")

    starts, bits = prop_breaks()
    L.append("/* Property bits from each start code point up to the next start. */")
    emit_array(L, "uint32_t", "uc_prop_start", starts, 10, lambda x: "0x%X" % x)
    emit_array(L, "uint16_t", "uc_prop_bits", bits, 12, lambda x: "%d" % x)
    L.append("const int uc_prop_count = %d;" % len(starts))
    L.append("")

    runs, multi = lower_runs()
    assert multi == [(0x130, [0x69, 0x307])], multi
    L.append("/* str.lower(): c -> c + delta for c in start, start+stride, ...")
    L.append(" * (count values); U+0130 and U+03A3 are handled in code. */")
    emit_array(L, "uc_lower_run", "uc_lower_runs", runs, 3,
               lambda r: "{0x%X, %d, %d, %d}" % r)
    L.append("const int uc_lower_run_count = %d;" % len(runs))
    L.append("")

    dec = decompositions()
    pool, entries = [], []
    for c, d in dec:
        assert 1 <= len(d) <= UC_MAX_DECOMP
        entries.append((c, len(pool), len(d)))
        pool.extend(d)
    L.append("/* Full canonical decomposition (NFD of one code point), Hangul excluded. */")
    emit_array(L, "uc_decomp", "uc_decomps", entries, 4,
               lambda e: "{0x%X, %d, %d}" % e)
    L.append("const int uc_decomp_count = %d;" % len(entries))
    L.append("")
    emit_array(L, "uint32_t", "uc_decomp_pool", pool, 10, lambda x: "0x%X" % x)

    cr = ccc_runs()
    L.append("/* Canonical combining class, non-zero runs. */")
    emit_array(L, "uc_ccc_run", "uc_ccc_runs", cr, 4,
               lambda r: "{0x%X, 0x%X, %d}" % tuple(r))
    L.append("const int uc_ccc_run_count = %d;" % len(cr))
    L.append("")

    ents = sorted(html.entities.html5.items())
    for k, v in ents:
        assert 1 <= len(v) <= 2 and len(k) <= 33 and len(v) <= len(k) + 1
    L.append("/* html.entities.html5, sorted by name (byte order); names without '&'. */")
    emit_array(L, "uc_entity", "uc_entities", ents, 2,
               lambda kv: "{%s, {0x%X, 0x%X}}" % (
                   c_str(kv[0]), ord(kv[1][0]), ord(kv[1][1]) if len(kv[1]) > 1 else 0))
    L.append("const int uc_entity_count = %d;" % len(ents))
    L.append("")

    inv = sorted(html._invalid_charrefs.items())
    for _, v in inv:
        assert len(v) == 1
    L.append("/* html._invalid_charrefs: numeric references remapped (Windows-1252 etc.). */")
    emit_array(L, "uint32_t", "uc_charref_remap", [x for kv in inv for x in (kv[0], ord(kv[1]))],
               8, lambda x: "0x%X" % x)
    L.append("const int uc_charref_remap_count = %d;" % len(inv))
    L.append("")
    ic = ranges(html._invalid_codepoints)
    L.append("/* html._invalid_codepoints: numeric references that expand to nothing. */")
    emit_array(L, "uint32_t", "uc_charref_drop", [x for r in ic for x in r], 8,
               lambda x: "0x%X" % x)
    L.append("const int uc_charref_drop_count = %d;" % len(ic))
    return "\n".join(L) + "\n" + CODE


UC_MAX_DECOMP = 4


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--check", action="store_true", help="compare instead of writing")
    ap.add_argument("--force", action="store_true", help="run under another Unicode version")
    ap.add_argument("--out", default=os.path.join(os.path.dirname(os.path.abspath(__file__)),
                                                  "..", "..", "unicode_tables.c"))
    a = ap.parse_args()
    if unicodedata.unidata_version != UNICODE_VERSION and not a.force:
        print("gen_unicode_tables: this Python has Unicode %s, the tables are for %s "
              "(use --force to regenerate anyway)" % (unicodedata.unidata_version, UNICODE_VERSION),
              file=sys.stderr)
        return 77 if a.check else 1
    text = generate()
    if a.check:
        try:
            with open(a.out, encoding="utf-8") as f:
                old = f.read()
        except OSError as e:
            print("gen_unicode_tables: %s" % e, file=sys.stderr)
            return 1
        if old != text:
            print("gen_unicode_tables: %s is stale; regenerate it" % a.out, file=sys.stderr)
            return 1
        print("gen_unicode_tables: %s is up to date" % a.out)
        return 0
    with open(a.out, "w", encoding="utf-8", newline="\n") as f:
        f.write(text)
    return 0


if __name__ == "__main__":
    sys.exit(main())
