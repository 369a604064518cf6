/*
 * tokenizer.h — text to token ids for the text towers: OpenAI-CLIP byte-level
 * BPE (CheXzero, CLIP) and BERT WordPiece (BiomedCLIP / PubMedBERT).
 *
 *   cxr_tokenizer *tok = NULL;
 *   char err[256];
 *   int rc = tok_bpe_init(&tok, tokens, n_tokens, merges, n_merges, err, sizeof err);
 *   if (rc != TOK_OK) { fprintf(stderr, "tokenizer: %s (%d)\n", err, rc); return 1; }
 *   int32_t ids[77];
 *   int n;
 *   rc = tok_encode(tok, "Is there a left pleural effusion?", ids, 77, &n);
 *   // ids = SOT, ..., EOT, 0, 0, ...; the EOT (pooling) position is n - 1
 *   tok_free(tok);
 *
 * The vocabularies come from the caller (e.g. arrays read from a model file);
 * they are copied, so the arrays may be freed after init. A tokenizer is
 * immutable after init: any number of threads may call tok_encode() on the
 * same handle at once (each call works in its own scratch memory).
 *
 * Input text is UTF-8. Invalid UTF-8 never fails: every maximal ill-formed
 * subsequence is replaced by one U+FFFD, exactly like Python's
 * bytes.decode("utf-8", "replace"); the tokenizers then treat U+FFFD as they
 * treat any other character (CLIP: a symbol, encoded as its three bytes;
 * BERT: dropped by the text cleaner).
 *
 * Parity: ids equal those of the Python references in
 * model/tools/convert/ref_tokenizer.py (OpenAI's SimpleTokenizer algorithm with
 * clip.tokenize(truncate=True); HF BertTokenizer's BasicTokenizer +
 * WordPiece) token for token. Known differences from the upstream packages:
 *  - CLIP runs ftfy.fix_text() first; ftfy is not available here, so it is
 *    skipped (by the reference too). Text that ftfy would change (curly
 *    quotes, mojibake, full-width forms, non-NFC text) can tokenize
 *    differently from real CLIP; plain text cannot.
 *  - Character classes come from Unicode 14.0 (Python 3.11's unicodedata);
 *    the regex module bundles Unicode 15.0, so characters first assigned in
 *    15.0 are unassigned here.
 *  - A numeric HTML reference with more than 4300 digits makes Python's
 *    html.unescape raise; here it becomes U+FFFD.
 *  - "[CLS]"-like text is not matched as a special token (HF does); it is
 *    tokenized as ordinary text. BERT lower-cases per whitespace word like
 *    HF's Python BasicTokenizer; HF's Rust tokenizer has no final-sigma rule,
 *    so Greek words ending in capital sigma can differ from it.
 */
#ifndef CXR_TOKENIZER_H
#define CXR_TOKENIZER_H

#include <stddef.h>
#include <stdint.h>

#ifdef __cplusplus
extern "C" {
#endif

/* Return codes (the numbers match CXR_OK / CXR_ERR_NOMEM / CXR_ERR_ARG /
 * CXR_ERR_CORRUPT in common/cxr_common.h). */
#define TOK_OK 0
#define TOK_ERR_NOMEM (-2)   /* allocation failed */
#define TOK_ERR_ARG (-3)     /* NULL pointer, bad count, ctx < 2, text too long */
#define TOK_ERR_VOCAB (-15)  /* vocabulary or merges inconsistent / corrupt */

/* Hard caps. */
#define TOK_MAX_TEXT_BYTES (1 << 20)  /* longer input: TOK_ERR_ARG */
#define TOK_MAX_VOCAB (1 << 22)       /* tokens, and merges */
#define TOK_MAX_TOKEN_BYTES 1024      /* one vocabulary entry */

/* Flags for tok_wordpiece_init()'s `lowercase` argument. */
#define TOK_WP_LOWERCASE 1      /* uncased BERT: lower-case, then strip accents
                                   (NFD, drop Mn), per whitespace word */
#define TOK_WP_OPENCLIP_CLEAN 2 /* first apply open_clip HFTokenizer's cleaning
                                   (as BiomedCLIP is called through open_clip):
                                   html.unescape twice, strip, runs of regex \s
                                   -> one space, strip */

typedef struct cxr_tokenizer cxr_tokenizer;

/*
 * OpenAI-CLIP byte-level BPE.
 *   tokens   n_tokens strings in id order: byte-level unicode strings (UTF-8),
 *            end-of-word tokens suffixed "</w>"; must contain the 256 byte
 *            characters, the same with "</w>", "<|startoftext|>" and
 *            "<|endoftext|>" (CLIP: 256 + 256 + merges + 2 = 49,408).
 *   merges   n_merges strings "a b" in rank order (rank = index); a, b and
 *            their concatenation must all be tokens.
 * As in Python dicts, a repeated token or merge keeps its last id / rank.
 * Returns TOK_OK and *out, or TOK_ERR_ARG / TOK_ERR_NOMEM / TOK_ERR_VOCAB with
 * a message in err (errlen bytes, always NUL-terminated when errlen > 0).
 */
int tok_bpe_init(cxr_tokenizer **out, const char *const *tokens, int n_tokens,
                 const char *const *merges, int n_merges, char *err, size_t errlen);

/*
 * BERT WordPiece (vocab.txt lines in id order). "[PAD]", "[UNK]", "[CLS]"
 * and "[SEP]" are looked up by name and must be present. `lowercase` is a
 * set of TOK_WP_* flags: 1 = HF BertTokenizer(do_lower_case=True);
 * TOK_WP_LOWERCASE | TOK_WP_OPENCLIP_CLEAN = BiomedCLIP through open_clip;
 * 0 = cased BERT (no lower-casing, no accent stripping).
 * Return codes as tok_bpe_init().
 */
int tok_wordpiece_init(cxr_tokenizer **out, const char *const *tokens, int n_tokens,
                       int lowercase, char *err, size_t errlen);

/*
 * Encodes one text into ids[0..ctx) with the model's specials:
 *   CLIP: SOT, tokens, EOT, then 0s. Longer texts are cut like
 *         clip.tokenize(truncate=True): the first ctx ids, the last one
 *         forced to EOT.
 *   BERT: [CLS], tokens, [SEP], then [PAD]s; the tokens cut to ctx - 2 (HF
 *         truncation=True, max_length=ctx).
 * *n_out = number of real ids including both specials (2..ctx); the EOT /
 * [SEP] position is *n_out - 1.
 * Returns TOK_OK; TOK_ERR_ARG for NULL pointers, ctx < 2 or text longer than
 * TOK_MAX_TEXT_BYTES; TOK_ERR_NOMEM. On error *n_out (if not NULL) is 0 and
 * ids is unspecified. Thread-safe; allocates scratch memory per call.
 */
int tok_encode(const cxr_tokenizer *t, const char *utf8, int32_t *ids, int ctx, int *n_out);

/* Number of tokens the handle was built with (the embedding table's rows). */
int tok_vocab_size(const cxr_tokenizer *t);

/* Frees a tokenizer; NULL is a no-op. */
void tok_free(cxr_tokenizer *t);

#ifdef __cplusplus
}
#endif
#endif /* CXR_TOKENIZER_H */
