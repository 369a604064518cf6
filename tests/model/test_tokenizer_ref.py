#!/usr/bin/python3
"""C tokenizers (model/tokenizer.c) vs the Python references, id for id.

Builds small vocabularies with model/tools/convert/ref_tokenizer.py from text that is
not the test corpus (Debian's licence texts, Python's library, gettext
catalogues), runs tests/test_tokenizer on every line of
tests/data/clinical_sentences.txt plus edge cases and random strings, and
requires exact equality of every id and of the real-token count for four
tokenizers: CLIP BPE (C), BERT uncased (B), BERT uncased with open_clip
cleaning (O) and BERT cased (K). --unicode-only instead checks the generated
Unicode tables against Python for every code point.

Exit 0 = pass, 1 = mismatch or failure, 77 = skipped (no `regex` module).
"""

import argparse
import os
import random
import struct
import subprocess
import sys
import tempfile
import time
import unicodedata

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.path.insert(0, os.path.join(ROOT, "model", "tools", "convert"))

import gen_unicode_tables as gen  # noqa: E402

ref = None  # model/tools/convert/ref_tokenizer.py, imported in main(): it needs `regex`

CORPUS = os.path.join(ROOT, "tests", "data", "clinical_sentences.txt")

# Appended to the vocabulary training text so that the WordPiece vocabulary
# knows these characters: only then can their order (NFD canonical ordering of
# the non-Mn combining marks U+1D165 / U+1D16D, ccc 216 / 226) show in ids.
COVERAGE_TEXT = ["x\U0001D165\U0001D16D y\U0001D16D\U0001D165 " * 3]
BIG = 1024  # context large enough to compare untruncated outputs (checked)


def edge_cases():
    """(name, bytes) the corpus does not cover well."""
    cases = [
        ("empty", b""),
        ("spaces", b"   "),
        ("whitespace mix", b" \t\n\r\x0b\x0c "),
        ("separators", "\x1c\x1d\x1e\x1f a\x1cb \x85 \u2028 \u3000".encode()),
        ("controls", b"a\x01b\x7fc\x1bd"),
        ("nbsp only", "\u00a0\u00a0".encode()),
        ("lone continuation", b"\x80abc"),
        ("truncated 2-byte", b"ab\xc3"),
        ("truncated 3-byte", b"ab\xe2\x82 cd"),
        ("truncated 4-byte", b"\xf0\x9f\x98 x"),
        ("overlong", b"\xc0\xaf \xe0\x80\xaf"),
        ("surrogate", b"\xed\xa0\x80 lung"),
        ("above U+10FFFF", b"\xf4\x90\x80\x80 \xf5\x80"),
        ("bad bytes", b"\xfe\xff effusion \xff"),
        ("mixed invalid", b"pleural\xe9effusion caf\xc3\xa9 \xe4\xbd"),
        ("replacement char", "a\ufffdb".encode()),
        ("long word 101", b"a" * 101),
        ("long word 100", b"a" * 100),
        ("long word mixed", ("pneumo" * 30).encode()),
        ("long CJK run", ("肺" * 120).encode()),
        ("truncation CLIP/BERT", ("the lungs are clear " * 80).encode()),
        ("digits", b"0123456789 3.5cm T8-T9 2nd 10^9"),
        ("contractions", b"it's we're they've I'm you'll he'd don't 'S 'LL"),
        ("long s", "it\u017f <|\u017ftartoftext|> '\u017f".encode()),
        ("ypogegrammeni", "a\u0345b !\u0345! \u0399\u0345".encode()),
        ("final sigma", "ΟΔΟΣ ΟΔΟΣ. Σ ΑΣ' ΑΣ'Α Σa aΣ".encode()),
        ("dotted I", "İstanbul İ".encode()),
        ("hangul", "흉부 엑스선".encode()),
        ("canonical order", "a\u0315\u0300b q\U0001D16D\U0001D165 q\U0001D165\U0001D16D "
                            "q\u0301\U0001D16D\U0001D165\u0316".encode()),
        ("html numeric", b"&#65 &#x41 &#0065; &#x0; &#55296; &#99999999999999999999; &#x10FFFF;"),
        ("html named", b"&amp &AMP; &ampx &amp;x &lt;&gt; &notin &notit; &xyz; &; & ;"),
        ("html long name", ("&" + "a" * 40 + ";").encode()),
        ("html double", b"&amp;lt; &amp;amp;amp; &amp;#65;"),
        ("html in word", b"lung&nbsp;base&shy;line"),
        ("specials", b"<|startoftext|><|endoftext|> x<|endoftext|>y"),
        ("bert specials", b"[CLS] [SEP] [PAD] [UNK] [MASK]"),
        ("punct runs", b"?!...---***///\\\\ ((x)) [y] {z}"),
        ("emoji zwj", "👨‍⚕️ 🫁 ❤️".encode()),
        ("fullwidth", "ＡＢＣ１２３".encode()),
    ]
    return cases


def entity_cases():
    """Every HTML5 entity name, with and without its ';', 30 to a record."""
    import html.entities
    names = sorted(html.entities.html5)
    out = []
    for i in range(0, len(names), 30):
        chunk = names[i:i + 30]
        out.append(("entities %d" % i, " ".join("&" + n for n in chunk).encode()))
        out.append(("entities glued %d" % i, "x".join("&" + n.rstrip(";") for n in chunk).encode()))
    return out


def random_cases(n, seed=1234):
    """Random strings over interesting alphabets, and random bytes."""
    rnd = random.Random(seed)
    pools = [
        "abcdefghijklmnopqrstuvwxyzABCDEFGHIJKLMNOPQRSTUVWXYZ0123456789",
        " \t\n'\".,;:!?-()[]{}<>|/&#%$@*+=_~^`\\",
        "éèêëàâäôöûüçñÉÈÀÇÑßøåæœ\u0301\u0300\u0308\u0327\u0345\u017f\u0130",
        "ΑΒΓΔΣσςαβγ ΟΔΟΣ",
        "肺胸积液心影增大气胸结节，。？！（）：；“”、",
        "\u00a0\u2003\u3000\u200b\u2028\u1680\x1c\x85\ufeff",
        "½²③Ⅳ٣५℃°±×÷→≤≥…–—€£¥©®™",
        "😀🫁❤️👍🩻\u200d\ufe0f",
        "흉부엑스선가나다",
        "&amp;&lt;&#65;&#x42;&nbsp&copy;&eacute&",
        "<|startoftext|><|endoftext|>",
    ]
    out = []
    for i in range(n):
        if i % 10 == 9:
            b = bytes(rnd.randrange(1, 256) for _ in range(rnd.randrange(1, 40)))  # no NUL: C strings
        else:
            k = rnd.randrange(1, 4)
            pool = "".join(rnd.sample(pools, k))
            s = "".join(rnd.choice(pool) for _ in range(rnd.randrange(1, 60)))
            b = s.encode("utf-8")
        out.append(("random %d" % i, b))
    return out


def adversarial_merges(rnd, letters="abcde", n=400):
    """A merges list whose ranks are shuffled: unlike a learned one, merges
    that use a token can rank before the merge that makes it. Only exact
    SimpleTokenizer semantics (merge every occurrence of the best pair in one
    left-to-right pass, then look again) survive this."""
    known = set(ref.clip_vocab_from_merges([]))
    left, right = list(letters), list(letters) + [c + ref.EOW for c in letters]
    merges = []
    while len(merges) < n:
        a, b = rnd.choice(left), rnd.choice(right)
        if a + b in known:
            continue
        known.add(a + b)
        merges.append((a, b))
        right.append(a + b)
        if not (a + b).endswith(ref.EOW):
            left.append(a + b)
    rnd.shuffle(merges)
    return merges


def run_adversarial(binary, tmp, wp_path, n_texts=3000):
    rnd = random.Random(99)
    clip = ref.ClipBPE(adversarial_merges(rnd))
    d = os.path.join(tmp, "adversarial")
    os.makedirs(d, exist_ok=True)
    with open(os.path.join(d, "tokens.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in clip.tokens))
    with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
        f.write("".join("%s %s\n" % m for m in clip.merges))
    texts = [" ".join("".join(rnd.choice("abcde") for _ in range(rnd.randrange(1, 25)))
                      for _ in range(rnd.randrange(1, 6))) for _ in range(n_texts)]
    with open(os.path.join(d, "records.txt"), "w") as f:
        f.write("".join("%d 8 %s\n" % (BIG, t.encode().hex()) for t in texts))
    r = subprocess.run([binary, "--clip-tokens", os.path.join(d, "tokens.txt"),
                        "--clip-merges", os.path.join(d, "merges.txt"), "--wp-vocab", wp_path,
                        "--in", os.path.join(d, "records.txt"), "--out", os.path.join(d, "ids.txt")],
                       stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if r.returncode != 0:
        print(r.stdout)
        print("adversarial merges: test_tokenizer exited with %d" % r.returncode)
        return False
    with open(os.path.join(d, "ids.txt")) as f:
        lines = [l for l in f.read().split("\n") if l.startswith("C ")]
    bad = 0
    for text, line in zip(texts, lines):
        fields = line.split()
        ids, n = clip.tokenize(text, BIG)
        if (int(fields[1]), [int(x) for x in fields[2:]]) != (n, ids):
            bad += 1
            if bad <= 3:
                print("MISMATCH adversarial merges: %r" % text)
    print("adversarial (shuffled-rank) merges: %d texts compared, %d mismatches" % (len(texts), bad))
    return bad == 0 and len(lines) == len(texts)


def compare_unicode(binary, tmp):
    """The generated tables against Python, for every code point."""
    path = os.path.join(tmp, "unicode.bin")
    subprocess.run([binary, "--unicode-dump", path], check=True)
    with open(path, "rb") as f:
        data = f.read()
    assert len(data) == 0x110000 * 28, len(data)
    bad = 0
    for cp, rec in enumerate(struct.iter_unpack("<7I", data)):
        props, low, d0, d1, d2, d3, ccc = rec
        want_props = gen.props(cp)
        if 0xD800 <= cp <= 0xDFFF:
            want_low, want_dec, want_ccc = cp, [cp], 0
        else:
            ch = chr(cp)
            lo = ch.lower()
            want_low = ord(lo) if len(lo) == 1 and cp != 0x3A3 else cp
            if cp == 0x3A3:
                want_low = cp  # final sigma is decided in tokenizer.c
            want_dec = [ord(x) for x in unicodedata.normalize("NFD", ch)]
            want_ccc = unicodedata.combining(ch)
        got_dec = [x for x in (d0, d1, d2, d3) if x] or [0]
        if cp == 0:
            got_dec = [0]
        if (props, low, got_dec, ccc) != (want_props, want_low, want_dec, want_ccc):
            bad += 1
            if bad <= 10:
                print("unicode U+%04X: C props %d lower %X dec %s ccc %d; Python %d %X %s %d" % (
                    cp, props, low, got_dec, ccc, want_props, want_low, want_dec, want_ccc))
    print("unicode tables: %d code points checked, %d mismatches" % (0x110000, bad))
    return bad == 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--bin", required=True, help="the test_tokenizer executable")
    ap.add_argument("--keep", help="build the vocabularies here and keep them")
    ap.add_argument("--unicode-only", action="store_true")
    ap.add_argument("--random", type=int, default=3000, help="random strings to compare")
    ap.add_argument("--bench", type=int, default=20, help="timing repetitions in C")
    a = ap.parse_args()

    tmp_obj = None
    if a.keep:
        tmp = a.keep
        os.makedirs(tmp, exist_ok=True)
    else:
        tmp_obj = tempfile.TemporaryDirectory(prefix="cxr_tok_")
        tmp = tmp_obj.name

    if a.unicode_only:
        return 0 if compare_unicode(a.bin, tmp) else 1

    global ref
    try:
        import regex  # noqa: F401  (the CLIP reference needs it, as CLIP does)
    except ImportError:
        print("SKIP: python3-regex is not installed")
        return 77
    import ref_tokenizer
    ref = ref_tokenizer

    t0 = time.time()
    if not os.path.exists(os.path.join(tmp, "wp_vocab.txt")):
        nm, nv = ref.build_vocab(tmp, 4000, 4000, extra_texts=COVERAGE_TEXT)
        print("vocabularies: %d BPE merges, %d WordPiece tokens (%.1f s)" % (nm, nv, time.time() - t0))
    clip = ref.ClipBPE.from_file(os.path.join(tmp, "clip_bpe.txt.gz"))
    wp = os.path.join(tmp, "wp_vocab.txt")
    berts = {
        "B": ref.BertWordPiece.from_file(wp, lowercase=True),
        "O": ref.BertWordPiece.from_file(wp, lowercase=True, openclip_clean=True),
        "K": ref.BertWordPiece.from_file(wp, lowercase=False),
    }

    with open(CORPUS, "rb") as f:
        corpus = f.read().split(b"\n")
    if corpus and corpus[-1] == b"":
        corpus.pop()
    records = []  # (name, bytes, ctx_clip, ctx_bert)
    for i, line in enumerate(corpus):
        records.append(("corpus line %d" % (i + 1), line, 77, 256))
    n_corpus = len(records)
    for i, line in enumerate(corpus):
        records.append(("corpus line %d, no truncation" % (i + 1), line, BIG, BIG))
    for name, b in edge_cases():
        records.append((name, b, 77, 256))
        records.append((name + ", no truncation", b, BIG, BIG))
    for name, b in entity_cases() + random_cases(a.random):
        records.append((name, b, BIG, BIG))
    for name, b, _, _ in records:
        assert b"\0" not in b, name

    rec_path = os.path.join(tmp, "records.txt")
    with open(rec_path, "w") as f:
        for _, b, cc, cb in records:
            f.write("%d %d %s\n" % (cc, cb, b.hex()))
    out_path = os.path.join(tmp, "ids.txt")
    cmd = [a.bin, "--clip-tokens", os.path.join(tmp, "clip_tokens.txt"),
           "--clip-merges", os.path.join(tmp, "clip_merges.txt"), "--wp-vocab", wp,
           "--in", rec_path, "--out", out_path, "--bench", str(a.bench),
           "--bench-records", str(n_corpus)]
    t1 = time.time()
    r = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)
    sys.stdout.write(r.stdout)
    sys.stderr.write(r.stderr)
    ok = r.returncode == 0
    if not ok:
        print("test_tokenizer exited with %d" % r.returncode)
    print("C run (all records, 4 tokenizers x 2 threads, self-checks, bench): %.1f s" % (time.time() - t1))

    got = {}
    with open(out_path) as f:
        lines = f.read().split("\n")
    per = len(records)
    tags = ["C", "B", "O", "K"]
    for ti, tag in enumerate(tags):
        for i in range(per):
            fields = lines[ti * per + i].split()
            assert fields[0] == tag
            got[(tag, i)] = (int(fields[1]), [int(x) for x in fields[2:]])

    mismatches = {t: 0 for t in tags}
    shown = 0
    t2 = time.time()
    for i, (name, b, cc, cb) in enumerate(records):
        text = b.decode("utf-8", "replace")
        want = {"C": clip.tokenize(text, cc)}
        for tag, tok in berts.items():
            want[tag] = tok.tokenize(text, cb)
        for tag in tags:
            w_ids, w_n = want[tag]
            g_n, g_ids = got[(tag, i)]
            if cc == BIG and w_n >= BIG - 1:
                print("record %r reaches the untruncated context %d: raise BIG" % (name, BIG))
                ok = False
            if (g_n, g_ids) != (w_n, w_ids):
                mismatches[tag] += 1
                if shown < 8:
                    shown += 1
                    vocab = clip.tokens if tag == "C" else berts[tag].tokens
                    k = next((j for j in range(min(len(g_ids), len(w_ids))) if g_ids[j] != w_ids[j]),
                             min(len(g_ids), len(w_ids)))
                    print("MISMATCH %s %s: %r" % (tag, name, text[:200]))
                    print("  n: C %d, Python %d; first difference at %d" % (g_n, w_n, k))
                    print("  C     : %s" % " ".join(vocab[x] for x in g_ids[max(0, k - 3):k + 5]))
                    print("  Python: %s" % " ".join(vocab[x] for x in w_ids[max(0, k - 3):k + 5]))
    # reference-side sanity of the spec, independent of the C code
    ids, n = clip.tokenize("", 77)
    ok &= ids[:2] == [clip.sot, clip.eot] and n == 2 and not any(ids[2:])
    ids, n = clip.tokenize("word " * 100, 77)
    ok &= n == 77 and ids[-1] == clip.eot
    ids, n = berts["B"].tokenize("a" * 101, 256)
    ok &= ids[:3] == [berts["B"].cls, berts["B"].unk, berts["B"].sep] and n == 3

    total = sum(mismatches.values())
    print("compared %d records (%d corpus sentences at ctx 77/256 and again untruncated, "
          "%d edge, entity and random cases) x 4 tokenizers in %.1f s: %d mismatches %s" % (
              len(records), n_corpus, len(records) - 2 * n_corpus, time.time() - t2, total, mismatches))
    ok &= total == 0
    ok &= run_adversarial(a.bin, tmp, wp)
    print("%d passed, %d failed" % (1 if ok else 0, 0 if ok else 1))
    return 0 if ok else 1


if __name__ == "__main__":
    sys.exit(main())
