#!/usr/bin/python3
"""Reference tokenizers for model/tokenizer.c, and builders of test vocabularies.

  ClipBPE        the OpenAI-CLIP byte-level BPE: the algorithm of OpenAI's
                 published SimpleTokenizer (basic_clean, whitespace_clean,
                 lower-case, the pre-tokenizer regex, lowest-rank-first BPE)
                 plus clip.tokenize(truncate=True). ftfy.fix_text() is not
                 available offline and is skipped, here and in C.
  BertWordPiece  HF BertTokenizer: BasicTokenizer (clean, CJK spacing,
                 lower-case + strip accents, punctuation split) + greedy
                 longest-match WordPiece; optionally preceded by open_clip's
                 HFTokenizer cleaning (html.unescape twice + whitespace
                 collapse), which is how BiomedCLIP is called.
  train_clip_bpe / train_wordpiece
                 small BPE learners that write CLIP's merges file format
                 (gzip text, a version header, one "a b" per line) and a BERT
                 vocab.txt, so tests can run without the real vocabularies.

Written for this project from the published algorithms; needs the `regex`
module (Debian: python3-regex), like CLIP itself.

    ref_tokenizer.py build-vocab --out DIR [--merges N] [--wp-size N]
    ref_tokenizer.py encode --clip-bpe DIR/clip_bpe.txt.gz "some text"
    ref_tokenizer.py encode --wp-vocab DIR/wp_vocab.txt "some text"
"""

import argparse
import collections
import glob
import gzip
import heapq
import html
import os
import sys
import unicodedata

import regex

# ------------------------------------------------------------------ CLIP BPE

CLIP_SOT = "<|startoftext|>"
CLIP_EOT = "<|endoftext|>"
CLIP_PATTERN = regex.compile(
    r"""<\|startoftext\|>|<\|endoftext\|>|'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""",
    regex.IGNORECASE)
EOW = "</w>"


def byte_alphabet():
    """Byte -> printable character: bytes that print as Latin-1 keep their
    own character, the rest get U+0100, U+0101, ... in byte order.
    Also returns CLIP's order of the 256 base tokens: the printable bytes
    first, then the others (the order of bytes_to_unicode()'s dict)."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    table, extra = {}, 0
    for b in range(256):
        if b in keep:
            table[b] = chr(b)
        else:
            table[b] = chr(0x100 + extra)
            extra += 1
    order = keep + [b for b in range(256) if b not in keep]
    return table, [table[b] for b in order]


BYTE_CHAR, BASE_TOKENS = byte_alphabet()


def clip_clean(text):
    """basic_clean (without ftfy) then whitespace_clean, as CLIP does."""
    text = html.unescape(html.unescape(text)).strip()
    return regex.sub(r"\s+", " ", text).strip()


def clip_pretokens(text):
    """Normalised, lower-cased text cut by CLIP's regex; each piece spelled in
    the byte alphabet."""
    for piece in CLIP_PATTERN.findall(clip_clean(text).lower()):
        yield "".join(BYTE_CHAR[b] for b in piece.encode("utf-8"))


def clip_vocab_from_merges(merges):
    """CLIP's vocabulary order: 256 byte characters, the same with </w>, one
    token per merge, then the two specials."""
    return BASE_TOKENS + [c + EOW for c in BASE_TOKENS] + ["".join(m) for m in merges] + [CLIP_SOT, CLIP_EOT]


def read_clip_merges(path, n_merges=None):
    """Merges from a CLIP-format file: gzip text, first line a header.
    OpenAI reads lines[1 : 49152 - 256 - 2 + 1] of its own file; without
    n_merges every non-empty line after the header is taken."""
    with gzip.open(path, "rb") as f:
        lines = f.read().decode("utf-8").split("\n")[1:]
    if n_merges is None:
        while lines and not lines[-1]:
            lines.pop()
    else:
        lines = lines[:n_merges]
    return [tuple(line.split()) for line in lines]


class ClipBPE:
    def __init__(self, merges):
        self.merges = [tuple(m) for m in merges]
        self.tokens = clip_vocab_from_merges(self.merges)
        self.ids = {tok: i for i, tok in enumerate(self.tokens)}
        self.rank = {m: r for r, m in enumerate(self.merges)}
        self.sot, self.eot = self.ids[CLIP_SOT], self.ids[CLIP_EOT]

    @classmethod
    def from_file(cls, path):
        return cls(read_clip_merges(path))

    def bpe(self, piece):
        """Symbols of one byte-alphabet piece after merging."""
        if piece in (CLIP_SOT, CLIP_EOT):
            return [piece]
        symbols = list(piece[:-1]) + [piece[-1] + EOW]
        while len(symbols) > 1:
            best, best_rank = None, None
            for pair in zip(symbols, symbols[1:]):
                r = self.rank.get(pair)
                if r is not None and (best_rank is None or r < best_rank):
                    best, best_rank = pair, r
            if best is None:
                break
            merged, i = [], 0
            while i < len(symbols):
                if i + 1 < len(symbols) and (symbols[i], symbols[i + 1]) == best:
                    merged.append(symbols[i] + symbols[i + 1])
                    i += 2
                else:
                    merged.append(symbols[i])
                    i += 1
            symbols = merged
        return symbols

    def encode(self, text):
        """Ids without specials (SimpleTokenizer.encode)."""
        return [self.ids[s] for piece in clip_pretokens(text) for s in self.bpe(piece)]

    def tokenize(self, text, ctx=77):
        """clip.tokenize([text], ctx, truncate=True)[0] as a list, and the
        number of real ids."""
        ids = [self.sot] + self.encode(text) + [self.eot]
        if len(ids) > ctx:
            ids = ids[:ctx]
            ids[-1] = self.eot
        return ids + [0] * (ctx - len(ids)), len(ids)


# ------------------------------------------------------------ BERT WordPiece

def _bert_is_control(ch):
    return ch not in "\t\n\r" and unicodedata.category(ch).startswith("C")


def _bert_is_whitespace(ch):
    return ch in " \t\n\r" or unicodedata.category(ch) == "Zs"


def _bert_is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


_CJK = ((0x4E00, 0x9FFF), (0x3400, 0x4DBF), (0x20000, 0x2A6DF), (0x2A700, 0x2B73F),
        (0x2B740, 0x2B81F), (0x2B820, 0x2CEAF), (0xF900, 0xFAFF), (0x2F800, 0x2FA1F))


def _bert_is_cjk(ch):
    cp = ord(ch)
    return any(lo <= cp <= hi for lo, hi in _CJK)


def bert_basic_tokens(text, lowercase=True):
    """HF BasicTokenizer.tokenize (tokenize_chinese_chars=True,
    strip_accents following lowercase, no never_split)."""
    kept = []
    for ch in text:
        if ch == "\0" or ch == "\ufffd" or _bert_is_control(ch):
            continue
        if _bert_is_whitespace(ch):
            kept.append(" ")
        elif _bert_is_cjk(ch):
            kept.append(" " + ch + " ")
        else:
            kept.append(ch)
    pieces = []
    for word in "".join(kept).split():
        if lowercase:
            word = "".join(c for c in unicodedata.normalize("NFD", word.lower())
                           if unicodedata.category(c) != "Mn")
        current = None
        for ch in word:
            if _bert_is_punct(ch):
                pieces.append(ch)
                current = None
            else:
                if current is None:
                    pieces.append("")
                    current = len(pieces) - 1
                pieces[current] += ch
    return " ".join(pieces).split()


class BertWordPiece:
    """HF BertTokenizer (the Python "slow" one) on one text. Lower-casing is
    str.lower() per whitespace word, as BasicTokenizer does; the Rust "fast"
    tokenizer lower-cases character by character (no Final_Sigma rule), and
    some transformers versions lower-case the whole text once more before
    BasicTokenizer, so a capital sigma next to removed characters can differ
    there. Text such as "[CLS]" is not turned into the special token."""

    def __init__(self, vocab, lowercase=True, openclip_clean=False, max_chars=100):
        self.tokens = list(vocab)
        self.ids = {}
        for i, tok in enumerate(self.tokens):
            self.ids[tok] = i  # a repeated line keeps its last id, as HF load_vocab
        self.lowercase, self.openclip_clean, self.max_chars = lowercase, openclip_clean, max_chars
        self.pad, self.unk = self.ids["[PAD]"], self.ids["[UNK]"]
        self.cls, self.sep = self.ids["[CLS]"], self.ids["[SEP]"]

    @classmethod
    def from_file(cls, path, **kw):
        with open(path, encoding="utf-8", newline="\n") as f:
            return cls([line.rstrip("\n") for line in f], **kw)

    def wordpiece(self, word):
        if len(word) > self.max_chars:
            return [self.unk]
        out, start = [], 0
        while start < len(word):
            for end in range(len(word), start, -1):
                piece = ("##" if start else "") + word[start:end]
                if piece in self.ids:
                    out.append(self.ids[piece])
                    start = end
                    break
            else:
                return [self.unk]
        return out

    def encode(self, text):
        if self.openclip_clean:
            text = clip_clean(text)
        return [i for w in bert_basic_tokens(text, self.lowercase) for i in self.wordpiece(w)]

    def tokenize(self, text, ctx=256):
        """[CLS] + ids[:ctx - 2] + [SEP], padded with [PAD] (HF truncation=True,
        padding="max_length", max_length=ctx), and the number of real ids."""
        ids = [self.cls] + self.encode(text)[:ctx - 2] + [self.sep]
        return ids + [self.pad] * (ctx - len(ids)), len(ids)


# --------------------------------------------------------- learning vocabularies

def learn_bpe(word_counts, n_merges, join, vocab=()):
    """Frequency-driven BPE over {tuple_of_symbols: count}.

    join(a, b) spells the merged symbol. Each step merges the most frequent
    adjacent pair (ties: the smallest pair in string order) unless its spelling
    already exists, which would make two different symbols one token.
    Returns the merges in rank order."""
    words = [list(w) for w in word_counts]
    freq = list(word_counts.values())
    pairs = collections.Counter()
    where = collections.defaultdict(set)
    for wi, w in enumerate(words):
        for p in zip(w, w[1:]):
            pairs[p] += freq[wi]
            where[p].add(wi)
    heap = [(-c, p) for p, c in pairs.items()]
    heapq.heapify(heap)
    known = set(vocab)
    merges = []
    while heap and len(merges) < n_merges:
        negc, pair = heapq.heappop(heap)
        if pairs.get(pair, 0) != -negc or negc == 0:
            continue  # stale entry
        new = join(*pair)
        if new in known:
            pairs[pair] = 0
            continue
        known.add(new)
        merges.append(pair)
        changed = set()
        for wi in list(where[pair]):
            w = words[wi]
            for p in zip(w, w[1:]):
                pairs[p] -= freq[wi]
                changed.add(p)
            out, i = [], 0
            while i < len(w):
                if i + 1 < len(w) and (w[i], w[i + 1]) == pair:
                    out.append(new)
                    i += 2
                else:
                    out.append(w[i])
                    i += 1
            words[wi] = out
            for p in zip(out, out[1:]):
                pairs[p] += freq[wi]
                where[p].add(wi)
                changed.add(p)
        for p in changed:
            if pairs[p] > 0:
                heapq.heappush(heap, (-pairs[p], p))
    return merges


def train_clip_bpe(texts, n_merges):
    counts = collections.Counter()
    for text in texts:
        for piece in clip_pretokens(text):
            if piece in (CLIP_SOT, CLIP_EOT):
                continue
            counts[tuple(piece[:-1]) + (piece[-1] + EOW,)] += 1
    base = clip_vocab_from_merges([])
    return learn_bpe(counts, n_merges, lambda a, b: a + b, base)


def write_clip_merges(path, merges):
    body = "#version: 0.2 (cxrvqa test vocabulary)\n" + "".join("%s %s\n" % m for m in merges)
    with gzip.GzipFile(path, "wb", mtime=0) as f:
        f.write(body.encode("utf-8"))


WP_SPECIALS = ["[PAD]"] + ["[unused%d]" % i for i in range(10)] + ["[UNK]", "[CLS]", "[SEP]", "[MASK]"]


def train_wordpiece(texts, size):
    """A BERT vocab.txt in the HF way (BPE with "##" continuations): the
    specials, every character seen (initial and "##" forms), then merges."""
    counts = collections.Counter()
    for text in texts:
        for w in bert_basic_tokens(text, True):
            counts[tuple([w[0]] + ["##" + c for c in w[1:]])] += 1
    chars = sorted({s for w in counts for s in w})
    vocab = WP_SPECIALS + chars

    def join(a, b):
        return a + b[2:]
    merges = learn_bpe(counts, max(0, size - len(vocab)), join, vocab)
    return vocab + [join(*m) for m in merges]


def default_training_texts(limit_bytes=900_000):
    """Text for learning test vocabularies that is NOT the test corpus (so
    unknown words exercise byte fallback / [UNK]): the licence texts every
    Debian system has, Python's own library source, and Chinese translations
    from gettext catalogues when present."""
    texts, total = [], 0
    files = sorted(glob.glob("/usr/share/common-licenses/*"))
    files += sorted(glob.glob(os.path.join(os.path.dirname(os.__file__), "*.py")))
    for path in files:
        if total >= limit_bytes or not os.path.isfile(path):
            continue
        with open(path, encoding="utf-8", errors="replace") as f:
            data = f.read(limit_bytes - total)
        texts.extend(data.splitlines())
        total += len(data)
    import gettext
    zh = 0
    for path in sorted(glob.glob("/usr/share/locale/zh_CN/LC_MESSAGES/*.mo")):
        try:
            with open(path, "rb") as f:
                cat = gettext.GNUTranslations(f)._catalog
        except Exception:
            continue
        for v in cat.values():
            if isinstance(v, str) and zh < 60_000:
                texts.append(v)
                zh += len(v)
    return texts


# ------------------------------------------------------------------------ CLI

def build_vocab(out, n_merges, wp_size, extra_texts=()):
    """Writes clip_bpe.txt.gz (CLIP's format), clip_tokens.txt and
    clip_merges.txt (the same, as plain lists in id / rank order) and
    wp_vocab.txt into out; returns (merges, WordPiece tokens)."""
    os.makedirs(out, exist_ok=True)
    texts = default_training_texts() + list(extra_texts)
    merges = train_clip_bpe(texts, n_merges)
    write_clip_merges(os.path.join(out, "clip_bpe.txt.gz"), merges)
    # the C test reads plain lists: derive them from the gzip as CLIP would
    clip = ClipBPE.from_file(os.path.join(out, "clip_bpe.txt.gz"))
    with open(os.path.join(out, "clip_tokens.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(t + "\n" for t in clip.tokens))
    with open(os.path.join(out, "clip_merges.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join("%s %s\n" % m for m in clip.merges))
    vocab = train_wordpiece(texts, wp_size)
    with open(os.path.join(out, "wp_vocab.txt"), "w", encoding="utf-8", newline="\n") as f:
        f.write("".join(t + "\n" for t in vocab))
    return len(merges), len(vocab)


def main(argv=None):
    ap = argparse.ArgumentParser(description="reference tokenizers / test vocabularies")
    sub = ap.add_subparsers(dest="cmd", required=True)
    b = sub.add_parser("build-vocab")
    b.add_argument("--out", required=True)
    b.add_argument("--merges", type=int, default=4000)
    b.add_argument("--wp-size", type=int, default=4000)
    e = sub.add_parser("encode")
    e.add_argument("--clip-bpe")
    e.add_argument("--wp-vocab")
    e.add_argument("--ctx", type=int)
    e.add_argument("text")
    a = ap.parse_args(argv)
    if a.cmd == "build-vocab":
        nm, nv = build_vocab(a.out, a.merges, a.wp_size)
        print("%d merges, %d WordPiece tokens in %s" % (nm, nv, a.out))
        return 0
    if a.clip_bpe:
        tok = ClipBPE.from_file(a.clip_bpe)
        ids, n = tok.tokenize(a.text, a.ctx or 77)
    elif a.wp_vocab:
        tok = BertWordPiece.from_file(a.wp_vocab)
        ids, n = tok.tokenize(a.text, a.ctx or 256)
    else:
        ap.error("give --clip-bpe or --wp-vocab")
    print(" ".join(map(str, ids[:n])))
    print(" | ".join(tok.tokens[i] for i in ids[:n]))
    return 0


if __name__ == "__main__":
    sys.exit(main())
