/*
 * test_question.c — the question-understanding test: replays the phrasings of
 * tests/data/questions.tsv through cxr_question_parse, compares intent,
 * findings, refusal and flags with the expected values, prints every mismatch
 * and the accuracy per language and per intent, and fails below 97% overall.
 * It also runs direct unit checks (NULL arguments, invalid UTF-8, overlong
 * input, the lexicon's contents) and a bounded robustness sweep. It owns no
 * parsing logic and must not rewrite the suite's expectations.
 */
#include "check.h"
#include "cxr_common.h"
#include "question.h"

#include <stdlib.h>
#include <string.h>

#define MIN_ACCURACY 0.97

typedef struct {
    int n, ok;
} tally;

static const char *const INTENTS[] = {"presence", "multi", "overview", "laterality", "refuse"};

static char *trim(char *s) {
    while (*s == ' ') s++;
    size_t l = strlen(s);
    while (l && (s[l - 1] == ' ' || s[l - 1] == '\r' || s[l - 1] == '\n')) s[--l] = '\0';
    return s;
}

/* Split "a,b,c" into at most max items (pointers into s). "-" is empty. */
static int split_list(char *s, char **items, int max) {
    int n = 0;
    if (!strcmp(s, "-") || !*s) return 0;
    for (char *tok = strtok(s, ","); tok && n < max; tok = strtok(NULL, ",")) items[n++] = trim(tok);
    return n;
}

static int has_flag(const cxr_question *q, const char *flag) {
    if (!strcmp(flag, "negated") || !strcmp(flag, "left") || !strcmp(flag, "right") || !strcmp(flag, "both")) {
        for (int i = 0; i < q->n_findings; i++) {
            if (!strcmp(flag, "negated") && q->findings[i].negated) return 1;
            if (!strcmp(flag, q->findings[i].laterality)) return 1;
        }
        return 0;
    }
    if (!strcmp(flag, "hedged")) return q->hedged;
    if (!strcmp(flag, "rule_out")) return q->rule_out;
    return -1;
}

static void describe(const cxr_question *q, char *buf, size_t cap) {
    int o = snprintf(buf, cap, "%s [", cxr_intent_name(q->intent));
    for (int i = 0; i < q->n_findings && o > 0 && (size_t)o < cap; i++)
        o += snprintf(buf + o, cap - (size_t)o, "%s%s%s%s", i ? "," : "", q->findings[i].known ? "" : "?",
                      q->findings[i].name, q->findings[i].negated ? "(neg)" : "");
    if (o > 0 && (size_t)o < cap) {
        o += snprintf(buf + o, cap - (size_t)o, "] refusal=%s flags=", cxr_refusal_name(q->refusal));
    }
    static const char *const flags[] = {"negated", "hedged", "rule_out", "left", "right", "both"};
    int any = 0;
    for (int i = 0; i < 6 && o > 0 && (size_t)o < cap; i++)
        if (has_flag(q, flags[i]) == 1) o += snprintf(buf + o, cap - (size_t)o, "%s%s", any++ ? "," : "", flags[i]);
    if (!any && o > 0 && (size_t)o < cap) snprintf(buf + o, cap - (size_t)o, "-");
}

/* One TSV line: 1 pass, 0 mismatch (printed), -1 malformed. */
static int run_case(char *line, int lineno, tally *by_lang, tally *by_intent, tally *refusals, int *reason_bad) {
    char *col[6];
    int nc = 0;
    char *p = line;
    while (nc < 6) {
        col[nc++] = p;
        char *tab = strchr(p, '\t');
        if (!tab) break;
        *tab = '\0';
        p = tab + 1;
    }
    if (nc != 6) {
        printf("questions.tsv:%d: malformed (%d columns)\n", lineno, nc);
        return -1;
    }
    for (int i = 1; i < 6; i++) col[i] = trim(col[i]);
    const char *question = col[0], *lang = col[1], *intent = col[2], *refusal = col[4];
    char findings_buf[512], flags_buf[128];
    snprintf(findings_buf, sizeof findings_buf, "%s", col[3]);
    snprintf(flags_buf, sizeof flags_buf, "%s", col[5]);

    cxr_question q;
    int rc = cxr_question_parse(question, NULL, &q);
    int ok = rc == CXR_OK;
    ok &= !strcmp(q.language, lang);
    ok &= !strcmp(cxr_intent_name(q.intent), intent);
    ok &= !strcmp(refusal, "-") ? q.refusal == CXR_REFUSE_NONE : !strcmp(cxr_refusal_name(q.refusal), refusal);

    char *exp[CXR_Q_MAX_FINDINGS];
    int ne = split_list(findings_buf, exp, CXR_Q_MAX_FINDINGS);
    if (ne != q.n_findings) ok = 0;
    for (int i = 0; i < ne && ok; i++) {
        int found = 0;
        for (int j = 0; j < q.n_findings; j++) {
            const cxr_qfinding *f = &q.findings[j];
            if (exp[i][0] == '?' ? (!f->known && !strcmp(f->name, exp[i] + 1))
                                 : (f->known && !strcmp(f->name, exp[i])))
                found = 1;
        }
        ok &= found;
    }
    char *fl[8];
    int nf = split_list(flags_buf, fl, 8);
    static const char *const all_flags[] = {"negated", "hedged", "rule_out", "left", "right", "both"};
    for (int k = 0; k < 6; k++) {
        int want = 0;
        for (int i = 0; i < nf; i++)
            if (!strcmp(fl[i], all_flags[k])) want = 1;
        if (has_flag(&q, all_flags[k]) != want) ok = 0;
    }
    for (int i = 0; i < nf; i++)
        if (has_flag(&q, fl[i]) < 0) {
            printf("questions.tsv:%d: unknown flag '%s'\n", lineno, fl[i]);
            return -1;
        }
    /* a refusal always says why; an answerable question has no reason */
    if ((q.intent == CXR_INTENT_REFUSE) != (q.reason[0] != '\0')) (*reason_bad)++;

    tally *tl = !strcmp(lang, "zh") ? &by_lang[1] : &by_lang[0];
    tl->n++, tl->ok += ok;
    for (int i = 0; i < 5; i++)
        if (!strcmp(intent, INTENTS[i])) by_intent[i].n++, by_intent[i].ok += ok;
    if (strcmp(refusal, "-")) refusals->n++, refusals->ok += ok;
    if (!ok) {
        char got[512];
        describe(&q, got, sizeof got);
        printf("MISMATCH questions.tsv:%d: \"%.80s%s\"\n  expected: %s %s [%s] refusal=%s flags=%s\n  got:      %s "
               "(lang %s)%s%s\n",
               lineno, question, strlen(question) > 80 ? "..." : "", lang, intent, col[3], refusal, col[5], got,
               q.language, q.corrected[0] ? " corrected=" : "", q.corrected);
    }
    return ok;
}

static int run_suite(const char *path) {
    FILE *f = fopen(path, "r");
    if (!f) {
        printf("cannot open %s\n", path);
        return 1;
    }
    static char line[16384];
    tally by_lang[2] = {{0, 0}, {0, 0}}, by_intent[5] = {{0, 0}}, refusals = {0, 0};
    int lineno = 0, total = 0, passed = 0, malformed = 0, reason_bad = 0;
    while (fgets(line, sizeof line, f)) {
        lineno++;
        size_t l = strlen(line);
        while (l && (line[l - 1] == '\n' || line[l - 1] == '\r')) line[--l] = '\0';
        if (line[0] == '#' || (l == 0)) continue;
        int r = run_case(line, lineno, by_lang, by_intent, &refusals, &reason_bad);
        if (r < 0) {
            malformed++;
            continue;
        }
        total++, passed += r;
    }
    fclose(f);
    double acc = total ? (double)passed / total : 0.0;
    printf("\nquestion suite: %d/%d correct (%.1f%%)\n", passed, total, 100.0 * acc);
    printf("  en: %d/%d (%.1f%%)   zh: %d/%d (%.1f%%)\n", by_lang[0].ok, by_lang[0].n,
           by_lang[0].n ? 100.0 * by_lang[0].ok / by_lang[0].n : 0.0, by_lang[1].ok, by_lang[1].n,
           by_lang[1].n ? 100.0 * by_lang[1].ok / by_lang[1].n : 0.0);
    for (int i = 0; i < 5; i++)
        printf("  %-10s %d/%d (%.1f%%)\n", INTENTS[i], by_intent[i].ok, by_intent[i].n,
               by_intent[i].n ? 100.0 * by_intent[i].ok / by_intent[i].n : 0.0);
    printf("  refusals   %d/%d (%.1f%%)\n", refusals.ok, refusals.n,
           refusals.n ? 100.0 * refusals.ok / refusals.n : 0.0);
    CHECK(malformed == 0, "%d malformed lines in %s", malformed, path);
    CHECK(total >= 320, "the suite has %d phrasings, fewer than 320", total);
    CHECK(by_lang[1].n * 10 >= total * 3, "only %d of %d phrasings are Chinese", by_lang[1].n, total);
    CHECK(reason_bad == 0, "%d questions with a refusal/reason mismatch", reason_bad);
    CHECK(acc >= MIN_ACCURACY, "overall accuracy %.1f%% is below %.0f%%", 100.0 * acc, 100.0 * MIN_ACCURACY);
    return 0;
}

static int is_cjk_text(const char *s) {
    for (const unsigned char *p = (const unsigned char *)s; *p; p++)
        if (*p >= 0xE4 && *p <= 0xE9) return 1;
    return 0;
}

static void unit_checks(void) {
    cxr_question q;
    /* arguments */
    CHECK(cxr_question_parse("Is there a pleural effusion?", NULL, NULL) == CXR_ERR_ARG, "NULL out accepted");
    CHECK(cxr_question_parse(NULL, NULL, &q) == CXR_ERR_ARG && q.intent == CXR_INTENT_REFUSE &&
              q.refusal == CXR_REFUSE_NOT_A_QUESTION && q.reason[0],
          "NULL question is not an ERR_ARG refusal");
    /* invalid UTF-8: stray byte, overlong encoding, truncated sequence, surrogate */
    static const char *const bad[] = {"Is there \xff an effusion?", "\xc0\xaf", "\xe8\x83", "is \xed\xa0\x80 ok",
                                      "\xf8\x88\x80\x80\x80"};
    for (int i = 0; i < 5; i++) {
        int rc = cxr_question_parse(bad[i], NULL, &q);
        CHECK(rc == CXR_ERR_ARG && q.intent == CXR_INTENT_REFUSE && q.refusal == CXR_REFUSE_NOT_A_QUESTION &&
                  q.reason[0],
              "invalid UTF-8 #%d: rc %d intent %s", i, rc, cxr_intent_name(q.intent));
    }
    /* overlong input is refused (not an error); exactly the limit is parsed */
    {
        char *big = malloc(CXR_QUESTION_MAX_BYTES + 64);
        if (big) {
            memset(big, 'a', CXR_QUESTION_MAX_BYTES + 63);
            big[CXR_QUESTION_MAX_BYTES + 63] = '\0';
            int rc = cxr_question_parse(big, NULL, &q);
            CHECK(rc == CXR_OK && q.intent == CXR_INTENT_REFUSE && q.refusal == CXR_REFUSE_NOT_A_QUESTION,
                  "overlong input: rc %d %s/%s", rc, cxr_intent_name(q.intent), cxr_refusal_name(q.refusal));
            const char *tail = " Is there a pneumothorax?";
            size_t tl = strlen(tail);
            memset(big, ' ', CXR_QUESTION_MAX_BYTES - tl);
            memcpy(big + CXR_QUESTION_MAX_BYTES - tl, tail, tl + 1);
            rc = cxr_question_parse(big, NULL, &q);
            CHECK(rc == CXR_OK && q.intent == CXR_INTENT_PRESENCE && q.n_findings == 1 &&
                      !strcmp(q.findings[0].name, "pneumothorax"),
                  "question of exactly %d bytes not parsed", CXR_QUESTION_MAX_BYTES);
            /* many short words: bounded, refused */
            for (int i = 0; i < CXR_QUESTION_MAX_BYTES; i += 2) big[i] = 'x', big[i + 1] = ' ';
            big[CXR_QUESTION_MAX_BYTES] = '\0';
            rc = cxr_question_parse(big, NULL, &q);
            CHECK(rc == CXR_OK && q.intent == CXR_INTENT_REFUSE, "1024 one-letter words not refused");
            free(big);
        }
    }
    /* names of enum values */
    CHECK(!strcmp(cxr_intent_name(CXR_INTENT_PRESENCE), "presence") &&
              !strcmp(cxr_intent_name(CXR_INTENT_MULTI), "multi") &&
              !strcmp(cxr_intent_name(CXR_INTENT_OVERVIEW), "overview") &&
              !strcmp(cxr_intent_name(CXR_INTENT_LATERALITY), "laterality") &&
              !strcmp(cxr_intent_name(CXR_INTENT_REFUSE), "refuse"),
          "intent names");
    static const char *const rn[] = {"none",           "treatment",       "prognosis",      "other_anatomy",
                                     "other_modality", "prior",           "not_a_question", "patient_info",
                                     "device_position", "measurement",    "count"};
    for (int i = 0; i < (int)(sizeof rn / sizeof rn[0]); i++)
        CHECK(!strcmp(cxr_refusal_name((cxr_refusal)i), rn[i]), "refusal name %d is %s", i,
              cxr_refusal_name((cxr_refusal)i));
    /* the lexicon */
    int n = cxr_lexicon_size();
    CHECK(n >= 21, "lexicon has %d entries", n);
    CHECK(cxr_lexicon_entry(-1) == NULL && cxr_lexicon_entry(n) == NULL, "out-of-range lexicon entry not NULL");
    for (int i = 0; i < n; i++) {
        const cxr_qfinding *e = cxr_lexicon_entry(i);
        CHECK(e && e->name[0] && e->display_en[0] && e->display_zh[0] && is_cjk_text(e->display_zh) && e->known,
              "lexicon entry %d incomplete", i);
        if (!e) continue;
        for (const char *p = e->name; *p; p++)
            CHECK((*p >= 'a' && *p <= 'z') || (*p >= '0' && *p <= '9') || *p == '_', "name '%s' not snake_case",
                  e->name);
        for (const char *p = e->snomed; *p; p++) CHECK(*p >= '0' && *p <= '9', "SNOMED '%s' of %s", e->snomed, e->name);
        for (int j = 0; j < i; j++) CHECK(strcmp(cxr_lexicon_entry(j)->name, e->name) != 0, "duplicate %s", e->name);
    }
    static const struct {
        const char *name, *snomed;
    } required[] = {{"pleural_effusion", "60046008"}, {"pneumothorax", "36118008"}, {"consolidation", "95436008"},
                    {"atelectasis", "46621007"},      {"pneumonia", "233604007"},   {"cardiomegaly", "8186001"},
                    {"pulmonary_edema", "19242006"},  {"nodule", "427359005"},      {"covid19", "840539006"},
                    {"no_finding", ""},               {"infiltration", ""},         {"mass", ""},
                    {"emphysema", ""},                {"fibrosis", ""},             {"pleural_thickening", ""},
                    {"hernia", ""},                   {"enlarged_cardiomediastinum", ""}, {"lung_opacity", ""},
                    {"lung_lesion", ""},              {"fracture", ""},             {"support_devices", ""}};
    for (size_t r = 0; r < sizeof required / sizeof required[0]; r++) {
        int found = 0;
        for (int i = 0; i < n; i++)
            if (!strcmp(cxr_lexicon_entry(i)->name, required[r].name)) {
                found = 1;
                CHECK(!strcmp(cxr_lexicon_entry(i)->snomed, required[r].snomed), "%s SNOMED '%s', want '%s'",
                      required[r].name, cxr_lexicon_entry(i)->snomed, required[r].snomed);
            }
        CHECK(found, "lexicon lacks %s", required[r].name);
    }
    /* the header's own examples and the fields the suite does not cover */
    CHECK(cxr_question_parse("Is there a pleural effusion?", NULL, &q) == CXR_OK && q.intent == CXR_INTENT_PRESENCE &&
              q.n_findings == 1 && !strcmp(q.findings[0].name, "pleural_effusion") && !strcmp(q.language, "en") &&
              !strcmp(q.findings[0].display_zh, "胸腔积液") && !strcmp(q.findings[0].snomed, "60046008") &&
              !strcmp(q.findings[0].matched, "pleural effusion") && q.reason[0] == '\0',
          "header example 1");
    CHECK(cxr_question_parse("这张图像中是否存在胸腔积液?", NULL, &q) == CXR_OK && q.intent == CXR_INTENT_PRESENCE &&
              q.n_findings == 1 && !strcmp(q.findings[0].name, "pleural_effusion") && !strcmp(q.language, "zh") &&
              !strcmp(q.findings[0].matched, "胸腔积液"),
          "header example 2");
    CHECK(cxr_question_parse("What dose of furosemide should I give?", NULL, &q) == CXR_OK &&
              q.intent == CXR_INTENT_REFUSE && q.refusal == CXR_REFUSE_TREATMENT && strstr(q.reason, "dose"),
          "header example 3: %s", q.reason);
    CHECK(cxr_question_parse("怎么治疗？", NULL, &q) == CXR_OK && q.refusal == CXR_REFUSE_TREATMENT &&
              is_cjk_text(q.reason),
          "Chinese refusal reason not in Chinese: %s", q.reason);
    CHECK(cxr_question_parse("Is this normal?", NULL, &q) == CXR_OK && q.intent == CXR_INTENT_OVERVIEW &&
              q.overview_normal == 1 && q.n_findings == 0,
          "'Is this normal?' is not a normal-overview");
    CHECK(cxr_question_parse("What abnormalities are present?", NULL, &q) == CXR_OK &&
              q.intent == CXR_INTENT_OVERVIEW && q.overview_normal == 0,
          "'What abnormalities' has overview_normal set");
    CHECK(cxr_question_parse("Is there a plueral efusion?", NULL, &q) == CXR_OK &&
              strstr(q.corrected, "efusion->effusion") && strstr(q.corrected, "plueral->pleural"),
          "corrected is '%s'", q.corrected);
    CHECK(cxr_question_parse("Is there a pleural effusion?", NULL, &q) == CXR_OK && q.corrected[0] == '\0',
          "corrected set without a slip");
    CHECK(cxr_question_parse("Is there a rib notching?", NULL, &q) == CXR_OK && q.n_findings == 1 &&
              !q.findings[0].known && !strcmp(q.findings[0].display_en, "rib notching") &&
              q.findings[0].display_zh[0] == '\0' && q.findings[0].snomed[0] == '\0' && q.corrected[0] == '\0',
          "open vocabulary fields");
    CHECK(cxr_question_parse("Is there a left-sided effusion?", NULL, &q) == CXR_OK &&
              !strcmp(q.findings[0].laterality, "left"),
          "laterality string");
    CHECK(cxr_question_parse("有没有气胸", "en", &q) == CXR_OK && !strcmp(q.language, "en") &&
              q.n_findings == 1 && !strcmp(q.findings[0].name, "pneumothorax"),
          "lang_hint not used");
    CHECK(cxr_question_parse("Is there a pneumothorax?", "zh", &q) == CXR_OK && !strcmp(q.language, "zh") &&
              q.intent == CXR_INTENT_PRESENCE,
          "lang_hint zh on English text");
    CHECK(cxr_question_parse("Is there an effusion?", "xx", &q) == CXR_OK && !strcmp(q.language, "en"),
          "unknown lang_hint");
    CHECK(cxr_question_parse("Is there cardiomegaly?", NULL, &q) == CXR_OK &&
              !strcmp(q.findings[0].display_en, "cardiomegaly") && !strcmp(q.findings[0].display_zh, "心脏增大"),
          "display names");
    /* reentrancy: a second parse does not see the first */
    cxr_question a, b;
    cxr_question_parse("No effusion, right?", NULL, &a);
    cxr_question_parse("Is there a pneumothorax?", NULL, &b);
    CHECK(a.findings[0].negated && a.hedged && !b.findings[0].negated && !b.hedged, "state leaked between parses");
}

/* Never crash, always a well-formed result: random bytes and mutations of
 * real questions (deterministic generator). */
static void robustness(void) {
    static const char *const seeds[] = {"Is there a left pleural effusion, right?", "有没有气胸？左侧还是右侧？",
                                        "No PTX or CHF; r/o pna vs atelectasis", "心脏不大吧，没有积液对吗",
                                        "Is there a rib notching?", "是否存在肺大疱"};
    unsigned long long st = 0x9E3779B97F4A7C15ull;
    char buf[600];
    int bad = 0;
    for (int it = 0; it < 3000; it++) {
        st ^= st << 13, st ^= st >> 7, st ^= st << 17;
        const char *seed = seeds[st % 6];
        size_t l = strlen(seed);
        memcpy(buf, seed, l + 1);
        int muts = 1 + (int)(st >> 20) % 6;
        for (int k = 0; k < muts; k++) {
            st ^= st << 13, st ^= st >> 7, st ^= st << 17;
            size_t pos = l ? (size_t)(st % l) : 0;
            unsigned char v = (unsigned char)(st >> 32);
            int op = (int)(st >> 40) % 3;
            if (op == 0 && l) buf[pos] = v ? (char)v : 'x';
            else if (op == 1 && l + 1 < sizeof buf) memmove(buf + pos + 1, buf + pos, l - pos + 1), buf[pos] = (char)(v | 1), l++;
            else if (l) memmove(buf + pos, buf + pos + 1, l - pos), l--;
        }
        buf[l] = '\0';
        cxr_question q;
        int rc = cxr_question_parse(buf, NULL, &q);
        if ((rc != CXR_OK && rc != CXR_ERR_ARG) || q.n_findings < 0 || q.n_findings > CXR_Q_MAX_FINDINGS ||
            memchr(q.reason, 0, sizeof q.reason) == NULL || memchr(q.corrected, 0, sizeof q.corrected) == NULL ||
            (q.intent == CXR_INTENT_REFUSE) != (q.refusal != CXR_REFUSE_NONE) || (rc == CXR_ERR_ARG && q.intent != CXR_INTENT_REFUSE))
            bad++;
    }
    CHECK(bad == 0, "%d malformed results in the robustness sweep", bad);
}

int main(int argc, char **argv) {
    if (argc < 2) {
        fprintf(stderr, "usage: test_question questions.tsv\n");
        return 2;
    }
    unit_checks();
    robustness();
    run_suite(argv[1]);
    return CHECK_SUMMARY();
}
