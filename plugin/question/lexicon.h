/*
 * lexicon.h — internal to cxrquestion: the finding lexicon's term table
 * (plugin/question/lexicon.c), shared by question.c only. Not a public header.
 *
 * A term is one phrasing of one lexicon entry, in English or Chinese:
 *   English: lowercase words separated by single spaces, singular form
 *            (plurals are tolerated by the matcher); "the" matches an
 *            optional article/possessive; "*" is a gap of 0-4 words
 *            ("heart * enlarged" matches "heart is enlarged").
 *   Chinese: UTF-8 substring; "A|B" means A followed by B within a few
 *            characters of the same clause ("心脏|增大" matches 心脏是否增大).
 * entry -1 is a blocker: a phrase that contains a lexicon word but names a
 * different finding ("pericardial effusion"); it consumes the words so that
 * no lexicon finding is reported for them.
 */
#ifndef CXR_LEXICON_H
#define CXR_LEXICON_H

enum { LEX_EN = 0, LEX_ZH = 1 };

typedef struct {
    const char *text;
    signed char entry; /* index into the entries, or -1 for a blocker */
    unsigned char lang; /* LEX_EN / LEX_ZH */
} cxr_lex_term;

int cxr_lex_term_count(void);
const cxr_lex_term *cxr_lex_term_at(int i);

#endif
