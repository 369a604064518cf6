/*
 * question.c — question understanding for cxrquestion: checks the UTF-8 text,
 * detects the language, finds lexicon findings (English tokens with plural
 * and spelling-slip tolerance, Chinese substrings, longest match first),
 * negation, hedges, rule-out and laterality, decides the intent and refuses
 * what must not be answered, with a reason in the question's language. It
 * must not know about models, images or answers, must not allocate, and
 * keeps no global mutable state: each call works on its own stack context
 * with bounded work (CXR_QUESTION_MAX_BYTES, QT_MAX tokens).
 */
#include "question.h"

#include "cxr_common.h"
#include "lexicon.h"

#include <string.h>

#define QT_MAX 384 /* English tokens; more is refused as too long */
#define QM_MAX 64  /* lexicon matches kept */
#define QC_MAX 192 /* candidate matches considered per script */
#define WMAX 32    /* bytes of one token, NUL included */
#define QN (CXR_QUESTION_MAX_BYTES + 1)

enum { M_LEX = 1, M_BLOCK = 2, M_TAG = 4, M_RULEOUT = 8 };
enum { S_L = 1, S_R = 2, S_B = 4, S_U = 8 };

typedef struct {
    int b0, b1;          /* byte span in the question */
    char w[WMAX];        /* lowercase ASCII word (spelling slips corrected) */
    unsigned char brk;   /* clause punctuation between the previous token and this one */
    unsigned char mask;  /* M_* */
    unsigned char longw; /* longer than WMAX-1: never matches */
} qtok;

typedef struct {
    int entry;    /* lexicon entry; -1 blocker */
    int b0, b1;   /* byte span */
    int t0, t1;   /* token span (English), t0 < 0 for Chinese */
    unsigned lit; /* literal tokens of the term, bits relative to t0 */
    int g0, g1;   /* gap of a Chinese "A|B" term (g0 == g1: none) */
    int prio;
} qmatch;

typedef struct {
    size_t n;
    const char *s;    /* the question as given */
    char low[QN];     /* ASCII-lowercased copy (same byte offsets) */
    char zm[QN];      /* low with Chinese question-marker constructs blanked */
    short clause[QN]; /* Chinese clause number of each byte */
    qtok t[QT_MAX];
    int nt, overflow;
    qmatch m[QM_MAX];
    int nm;
    char corrected[64];
} qctx;

/* ------------------------------------------------------------------ UTF-8 */

/* Decode one code point at s[i]; returns its length, 0 when invalid. */
static int u8_dec(const unsigned char *s, size_t n, size_t i, unsigned *cp) {
    unsigned c = s[i], min;
    int len;
    if (c < 0x80) {
        *cp = c;
        return 1;
    }
    if ((c & 0xE0) == 0xC0) {
        len = 2, *cp = c & 0x1F, min = 0x80;
    } else if ((c & 0xF0) == 0xE0) {
        len = 3, *cp = c & 0x0F, min = 0x800;
    } else if ((c & 0xF8) == 0xF0) {
        len = 4, *cp = c & 0x07, min = 0x10000;
    } else {
        return 0;
    }
    if (i + (size_t)len > n) return 0;
    for (int k = 1; k < len; k++) {
        unsigned b = s[i + (size_t)k];
        if ((b & 0xC0) != 0x80) return 0;
        *cp = (*cp << 6) | (b & 0x3F);
    }
    if (*cp < min || *cp > 0x10FFFF || (*cp >= 0xD800 && *cp <= 0xDFFF)) return 0;
    return len;
}

static int is_cjk(unsigned cp) {
    return (cp >= 0x4E00 && cp <= 0x9FFF) || (cp >= 0x3400 && cp <= 0x4DBF) || (cp >= 0xF900 && cp <= 0xFAFF) ||
           (cp >= 0x20000 && cp <= 0x2FA1F);
}

static int is_punct(unsigned cp) {
    switch (cp) {
    case ',': case '.': case ';': case ':': case '?': case '!': case '(': case ')': case '[': case ']':
    case '\n': case '\r': case 0x3001: case 0x3002: case 0xFF0C: case 0xFF1F: case 0xFF01: case 0xFF1B:
    case 0xFF1A: case 0xFF08: case 0xFF09: case 0x2026: case 0xFF0E:
        return 1;
    default:
        return 0;
    }
}

static int is_alnum(unsigned char c) { return (c >= 'a' && c <= 'z') || (c >= '0' && c <= '9'); }

/* Append src to dst (capacity cap), cutting at a UTF-8 character boundary. */
static void cat_u8(char *dst, size_t cap, const char *src, size_t srclen) {
    size_t d = strlen(dst);
    if (d + 1 >= cap) return;
    size_t room = cap - 1 - d;
    if (srclen > room) {
        srclen = room;
        while (srclen > 0 && ((unsigned char)src[srclen] & 0xC0) == 0x80) srclen--;
    }
    memcpy(dst + d, src, srclen);
    dst[d + srclen] = '\0';
}

static void cat_s(char *dst, size_t cap, const char *src) { cat_u8(dst, cap, src, strlen(src)); }

static void set_s(char *dst, size_t cap, const char *src, size_t len) {
    dst[0] = '\0';
    cat_u8(dst, cap, src, len);
}

/* ------------------------------------------------------------ word lists */

#define NELEM(a) ((int)(sizeof(a) / sizeof((a)[0])))

/* English phrase lists: words separated by spaces; "w*" is a prefix, "*" a
 * gap of 0-4 words, "the" an optional article. */
static const char *const EN_OFFTOPIC[] = {
    "poem*", "poetry", "haiku", "limerick", "sonnet", "story", "stories", "joke*", "song*", "lyrics", "sing",
    "weather", "forecast", "recipe*", "cook", "cooking", "bake", "baking", "capital of", "president", "football",
    "soccer", "basketball", "stock market", "stocks", "bitcoin", "crypto*", "movie*", "novel", "essay",
    "translate", "translation", "homework", "restaurant*", "pizza", "chess", "who are you", "what are you",
    "your name", "how are you", "meaning of life", "what time is it", "tell me about yourself", "lottery",
    "horoscope", "vacation"};
static const char *const EN_TREATMENT[] = {
    "treat", "treated", "treating", "treatment*", "therapy", "therapies", "therapeutic", "dose", "doses", "dosing",
    "dosage*", "mg", "milligram*", "drug", "drugs", "medication*", "medicine*", "meds", "prescribe*",
    "prescription*", "antibiotic*", "antiviral*", "furosemide", "lasix", "diuretic*", "diuresis", "diurese",
    "steroid*", "prednisone", "dexamethasone", "remdesivir", "heparin", "anticoagula*", "aspirin",
    "chemotherapy", "chemo", "radiotherapy", "surgery", "operate", "operation", "thoracentesis", "pleurodesis",
    "drain", "drained", "draining", "admit", "admission", "discharge", "discharged", "hospitalize*",
    "hospitalise*", "icu", "manage", "management", "managed", "cure", "cured", "vaccin*", "biopsy", "biopsied",
    "follow up", "followup", "next step*", "what should i do", "what do i do", "how to treat", "should i",
    "should we", "should he", "should she", "should they", "should the patient", "do i need", "do we need",
    "need", "needs", "needed", "refer", "referral", "isolate", "isolation", "quarantine", "intubate",
    "oxygen therapy", "remove", "removed", "removal", "reposition*", "withdraw*", "pull back",
    "pulled back", "give him", "give her", "give the patient", "start him", "start her"};
static const char *const EN_PROGNOSIS[] = {
    "survive*", "survival", "surviving", "prognos*", "outcome*", "mortality", "die", "dies", "dying", "death",
    "life expectancy", "to live", "get better", "get worse", "go away", "be ok", "be okay", "be fine",
    "be alright", "turn into", "turn in to", "become malignant", "will * become", "recover*", "will * resolve", "will * improve", "will * heal", "will * clear", "will * worsen",
    "will * progress", "will * spread", "going to * resolve", "curable", "terminal", "fatal", "deadly", "lethal"};
static const char *const EN_PRIOR[] = {
    "prior", "previous", "previously", "earlier", "compare*", "comparison", "since", "last week", "last month",
    "last year", "last time", "last study", "last film", "last exam", "last xray", "last x ray", "last cxr",
    "last scan", "last visit", "last night", "last image", "last one", "yesterday", "yesterdays", "ago",
    "baseline", "interval", "changed", "change since", "change from", "any change", "no change",
    "getting better", "getting worse", "growing", "grow", "grows", "shrinking",
    "significant change", "improved", "improving", "improvement", "worsened", "worsening", "worse",
    "progressed", "progression", "progressing", "resolved", "resolving", "resolution", "grown", "shrunk",
    "stable", "unchanged", "new", "newly", "still", "anymore", "again", "before", "old film", "old study",
    "old x ray", "old xray", "old image*", "persist*"};
/* device position: a device named together with where it lies */
static const char *const EN_DEVICE[] = {
    "ett", "et tube", "endotracheal tube", "endotracheal", "ng tube", "ngt", "og tube", "nasogastric tube",
    "nasogastric", "orogastric", "feeding tube", "dobhoff", "central line", "central venous catheter", "cvc",
    "picc", "picc line", "catheter", "line", "lines", "tube", "tubes", "chest drain", "chest tube", "drain",
    "lead", "leads", "pacemaker lead", "port", "swan", "ij line"};
static const char *const EN_POSITION[] = {
    "position*", "placed", "malposition*", "misplaced", "tip", "too low", "too high", "too deep",
    "too shallow", "in the stomach", "in the svc", "in the right place", "in the right ventricle", "end",
    "ends", "terminate*", "where does", "where is", "located", "location", "correctly", "cavoatrial",
    "above the carina", "below the carina", "carina", "junction"};
/* treatment cues that make a device question a management one ("should we pull the ETT back?") */
static const char *const EN_DEVICE_ACTION[] = {"should", "pull back", "pulled back", "advance", "withdraw*",
                                               "remove", "reposition*", "need", "needs"};
static const char *const EN_MEASUREMENT[] = {
    "cardiothoracic ratio", "cardio thoracic ratio", "ctr", "how big", "how large", "how wide", "how long",
    "how much * fluid", "what size", "size of", "measure*", "measurement*", "diameter", "width", "centimet*",
    "millimet*", "how many cm", "how many mm", "in mm", "in cm", "in ml", "ml", "percentage", "percent",
    "dimension*"};
static const char *const EN_COUNT[] = {"how many", "count", "count the", "number of", "how much * are there"};
static const char *const EN_MODALITY[] = {
    "ct", "cta", "ctpa", "hrct", "cat scan", "computed tomography", "tomography", "mri", "mr", "mra",
    "magnetic resonance", "ultrasound*", "sonograph*", "sonogram", "echo", "echocardiogra*", "pet", "spect",
    "mammogra*", "angiogra*", "fluoroscop*", "nuclear medicine", "bone scan", "vq scan", "v q scan", "ecg",
    "ekg", "eeg", "endoscop*", "bronchoscop*", "doppler", "scintigra*"};
static const char *const EN_ANATOMY[] = {
    "knee*", "hip", "hips", "ankle*", "foot", "feet", "toe", "toes", "hand", "hands", "wrist*", "finger*",
    "thumb", "elbow*", "arm", "arms", "forearm", "leg", "legs", "thigh", "calf", "femur", "femoral", "tibia*",
    "fibula*", "pelvis", "pelvic", "skull", "head", "brain", "cerebr*", "intracranial", "stroke", "sinus*",
    "teeth", "tooth", "dental", "jaw", "mandible", "face", "facial", "eye", "eyes", "ocular", "ear", "ears",
    "nose", "throat", "neck", "thyroid", "liver", "hepatic", "biliary", "gallbladder", "gallstone*",
    "pancrea*", "spleen", "splenic", "kidney*", "renal", "adrenal", "bowel*", "colon", "colonic", "intestin*",
    "appendi*", "bladder", "prostat*", "uterus", "uterine", "ovary", "ovaries", "ovarian", "cervix", "rectum",
    "rectal", "testis", "testicular", "scrotal", "abdomen", "abdominal", "belly", "inguinal", "umbilical",
    "groin", "lumbar", "sacrum", "coccyx", "cervical spine", "c spine"};
static const char *const EN_PATIENT[] = {
    "name", "names", "named", "how old", "age", "birthday", "date of birth", "dob", "born", "address",
    "where * live", "phone", "mrn", "medical record", "record number", "insurance", "gender", "sex", "male",
    "female", "man or woman", "boy or girl", "weight", "weigh", "weighs", "height", "how tall", "smoker",
    "smoke", "smokes", "smoking", "allergic", "allerg*", "pregnant", "pregnancy", "fever", "febrile",
    "temperature", "cough*", "symptom*", "pain", "history", "occupation", "job", "ethnicity", "race",
    "religion", "married", "nationality", "who is", "diabetes", "diabetic", "hypertension", "blood pressure",
    "heart rate", "saturation", "social security", "ssn", "who ordered", "referring", "room number",
    "bed number"};
static const char *const EN_HEDGE[] = {
    "confirm*", "presumably", "probably", "probable", "maybe", "perhaps", "possibly", "possible", "suspect*",
    "suspicious", "suspicion", "i think", "i guess", "i assume", "i suppose", "i believe", "i presume",
    "im guessing", "could * be", "might", "is it possible",
    "likely"};
static const char *const EN_TAGS[] = {
    "right", "correct", "yes", "yeah", "ok", "okay", "true", "no", "is it", "isnt it", "is there", "isnt there",
    "are there", "arent there", "are they", "arent they", "does it", "doesnt it", "do you", "dont you",
    "do they", "dont they", "am i right", "is that right", "is that correct", "is that true", "agree",
    "do you agree", "would you agree", "wouldnt you say", "isnt that right", "right or wrong"};
/* alternatives at the end that are no hedge, only not negations: "yes or no?" */
static const char *const EN_ALT_TAGS[] = {"yes or no", "or not", "or no", "or none"};
static const char *const EN_NEG_INTERROGATIVE[] = {
    "isnt", "arent", "doesnt", "dont", "hasnt", "havent", "wasnt", "werent", "cant", "couldnt", "wouldnt",
    "shouldnt", "didnt"};
static const char *const EN_RULEOUT[] = {"rule out", "ruled out", "rules out", "ruling out", "rule * out",
                                         "r o", "exclude*", "exclusion"};
static const char *const EN_NEG_CUES[] = {"no", "not", "without", "isnt", "arent", "doesnt", "dont", "hasnt",
                                          "havent", "wasnt", "werent", "didnt", "cant", "nor", "never", "none"};
static const char *const EN_CLAUSE_WORDS[] = {"but", "however", "although", "though", "whereas", "while", "yet"};
static const char *const EN_CONJ[] = {"or", "and", "vs", "versus", "but", "with", "plus"};
static const char *const EN_OVERVIEW[] = {
    "abnormal*", "pathology", "pathologies", "pathological", "wrong", "problem*", "issue*", "finding*",
    "anything", "everything", "describe", "description", "summar*", "interpret*", "impression", "diagnos*",
    "read", "report", "what * see", "what * show", "what * showing", "acute", "significant", "remarkable",
    "unremarkable", "normal", "clear", "ok", "okay", "fine", "healthy", "negative", "how * look"};
static const char *const EN_NORMAL[] = {"normal", "unremarkable", "clear", "ok", "okay", "fine", "healthy",
                                        "negative", "nothing wrong"};
static const char *const EN_LAT[] = {
    "which side", "what side", "which lung", "what lung", "which lobe", "what lobe", "which hemithorax",
    "left or right", "right or left", "left or the right", "right or the left", "left side or right side",
    "unilateral or bilateral", "bilateral or unilateral", "laterality"};
static const char *const EN_WHERE[] = {"where", "location", "located"};
static const char *const EN_OV_HEADS[] = {"is there", "are there", "evidence of", "signs of", "sign of",
                                          "does the patient have", "does this patient have", "does he have",
                                          "does she have", "any"};
static const char *const EN_OV_STOP[] = {
    "on", "in", "at", "of", "to", "for", "from", "with", "within", "under", "below", "above", "behind", "near",
    "along", "beneath", "over", "seen", "visible", "present", "noted", "here", "there", "this", "that",
    "these", "those", "the", "or", "and", "but", "is", "are", "was", "were", "be", "been", "image", "film",
    "films", "xray", "x", "ray", "cxr", "radiograph", "study", "picture", "scan", "please", "now", "today"};
static const char *const EN_OV_EXCLUDE[] = {
    "it", "this", "that", "them", "he", "she", "you", "me", "i", "we", "they", "anything", "something",
    "nothing", "everything", "way", "need", "reason", "chance", "difference", "change", "changes", "thing",
    "things", "lot", "doubt", "question", "time", "point", "concern", "risk", "possibility", "abnormal*",
    "problem*", "issue*", "finding*", "wrong", "pathology", "normal", "chest", "lung", "lungs", "heart",
    "disease", "other", "more", "else", "improvement", "progress", "what", "how",
    "why", "when", "who", "which", "where", "yes", "no", "not", "acute", "significant"};
/* common words never "corrected" into a lexicon word, and never used as correction targets */
static const char *const EN_COMMON[] = {
    "there", "theres", "their", "these", "those", "where", "which", "while", "whose", "about", "above", "after",
    "against", "among", "around", "because", "below", "between", "could", "would", "should", "shall",
    "being", "doing", "having", "other", "another", "every", "always", "please", "thanks", "thank",
    "patient", "chest", "image", "images", "study", "radiograph", "xray", "xrays", "picture", "really",
    "think", "assume", "guess", "suppose", "believe", "looks", "looking", "seems", "appear", "appears",
    "visible", "present", "presence", "evidence", "signs", "small", "large", "larger", "smaller", "bigger",
    "tiny", "trace", "subtle", "massive", "moderate", "severe", "mild", "minimal", "acute", "chronic", "early",
    "upper", "lower", "middle", "apical", "basal", "bases", "lobes", "lungs", "sided", "lateral", "frontal",
    "views", "portable", "supine", "upright", "erect", "cardiac", "heart", "within", "without", "under",
    "behind", "along", "across", "inside", "outside", "shows", "showing", "shown", "noted", "identified",
    "suggest", "suggests", "suggestive", "consistent", "compatible", "concerning", "worried", "worry",
    "check", "checking", "whether", "either", "neither", "today", "month", "months", "weeks", "years",
    "nothing", "something", "anything", "everything", "normal", "clear", "certain", "definitely", "obvious",
    "position", "positioned", "placement", "place", "located", "location", "sides", "bilateral",
    "bilaterally", "unilateral", "right", "left", "fluid", "water", "blood", "changes", "change", "limit",
    "process", "disease", "space", "angle", "growth", "device", "shadow", "cancer", "there", "wires", "lines",
    "tubes", "multiple", "several", "positive", "finding", "findings", "again", "still", "prior", "never",
    "cannot", "might", "maybe", "doubt", "chance", "large", "overall", "enough", "quite", "rather", "where",
    "others", "alone", "least", "first", "second", "third", "large", "spots", "radiology", "radiologist",
    "doctor", "hello", "great", "thing", "things", "question", "answer", "people", "person", "woman", "child"};

static int is_article(const char *w) {
    static const char *const a[] = {"the", "a", "an", "his", "her", "their", "this", "my", "its", "your"};
    for (int i = 0; i < NELEM(a); i++)
        if (!strcmp(w, a[i])) return 1;
    return 0;
}

/* -------------------------------------------------------- English matcher */

/* Does token w match pattern word p (length pl)? "x*" is a prefix; plural:
 * also accept w = p + s / es / (y -> ies). */
static int wmatch(const char *w, const char *p, size_t pl, int plural) {
    if (pl > 1 && p[pl - 1] == '*') return strncmp(w, p, pl - 1) == 0;
    size_t wl = strlen(w);
    if (wl < pl || memcmp(w, p, pl) != 0) {
        if (plural && pl >= 2 && p[pl - 1] == 'y' && wl == pl + 2 && memcmp(w, p, pl - 1) == 0 &&
            !strcmp(w + pl - 1, "ies"))
            return 1;
        return 0;
    }
    if (wl == pl) return 1;
    if (!plural) return 0;
    return (wl == pl + 1 && w[pl] == 's') || (wl == pl + 2 && w[pl] == 'e' && w[pl + 1] == 's');
}

typedef struct {
    const qctx *c;
    int start;
    int plural;
    unsigned forbid; /* mask bits a literal token must not carry */
    unsigned lit;
} seqst;

static int seq_rec(seqst *st, int i, const char *p, int depth) {
    const qctx *c = st->c;
    while (*p == ' ') p++;
    if (!*p) return i;
    if (depth > 16) return -1;
    const char *q = p;
    while (*q && *q != ' ') q++;
    size_t pl = (size_t)(q - p);
    if (pl == 1 && *p == '*') {
        for (int k = 0; k <= 4; k++) {
            if (k > 0) {
                int j = i + k - 1;
                if (j >= c->nt || (j > st->start && c->t[j].brk)) break;
            }
            int r = seq_rec(st, i + k, q, depth + 1);
            if (r >= 0) return r;
        }
        return -1;
    }
    if (pl == 3 && !memcmp(p, "the", 3)) {
        if (i < c->nt && (i == st->start || !c->t[i].brk) && !(c->t[i].mask & st->forbid) &&
            is_article(c->t[i].w)) {
            int r = seq_rec(st, i + 1, q, depth + 1);
            if (r >= 0) return r;
        }
        return seq_rec(st, i, q, depth + 1);
    }
    if (i >= c->nt) return -1;
    const qtok *t = &c->t[i];
    if ((i > st->start && t->brk) || t->longw || (t->mask & st->forbid)) return -1;
    if (!wmatch(t->w, p, pl, st->plural)) return -1;
    int r = seq_rec(st, i + 1, q, depth + 1);
    if (r >= 0 && i - st->start < 32) st->lit |= 1u << (i - st->start);
    return r;
}

/* Match pattern at token i; returns the end token (exclusive) or -1. */
static int en_at(const qctx *c, int i, const char *pat, int plural, unsigned forbid, unsigned *lit) {
    seqst st = {c, i, plural, forbid, 0};
    int r = seq_rec(&st, i, pat, 0);
    if (r > i) {
        if (lit) *lit = st.lit;
        return r;
    }
    return -1;
}

/* First occurrence of any phrase of the list; returns the phrase index or -1. */
static int en_find(const qctx *c, const char *const *list, int n, unsigned forbid, int *t0, int *t1) {
    for (int i = 0; i < c->nt; i++)
        for (int k = 0; k < n; k++) {
            int e = en_at(c, i, list[k], 0, forbid, NULL);
            if (e > 0) {
                if (t0) *t0 = i;
                if (t1) *t1 = e;
                return k;
            }
        }
    return -1;
}

static int en_in(const char *w, const char *const *list, int n) {
    for (int k = 0; k < n; k++)
        if (wmatch(w, list[k], strlen(list[k]), 0)) return 1;
    return 0;
}

/* Is w one of the words of any phrase in the list? */
static int word_of_list(const char *w, const char *const *list, int n) {
    for (int k = 0; k < n; k++) {
        const char *p = list[k];
        while (*p) {
            while (*p == ' ') p++;
            const char *q = p;
            while (*q && *q != ' ') q++;
            size_t pl = (size_t)(q - p);
            if (pl && !(pl == 1 && *p == '*') && wmatch(w, p, pl, 1)) return 1;
            p = q;
        }
    }
    return 0;
}

static int word_known(const char *w) {
#define WL(l) word_of_list(w, l, NELEM(l))
    return WL(EN_COMMON) || WL(EN_OFFTOPIC) || WL(EN_TREATMENT) || WL(EN_PROGNOSIS) || WL(EN_PRIOR) ||
           WL(EN_MODALITY) || WL(EN_ANATOMY) || WL(EN_PATIENT) || WL(EN_HEDGE) || WL(EN_TAGS) ||
           WL(EN_RULEOUT) || WL(EN_NEG_CUES) || WL(EN_OVERVIEW) || WL(EN_LAT) || WL(EN_OV_STOP) ||
           WL(EN_OV_EXCLUDE);
#undef WL
}

/* ----------------------------------------------------------- tokenising */

static void tokenize(qctx *c) {
    const unsigned char *s = (const unsigned char *)c->low;
    size_t i = 0;
    int cur = -1, wl = 0, brk = 0;
    while (i < c->n) {
        unsigned char ch = s[i];
        if (is_alnum(ch)) {
            if (cur < 0) {
                if (c->nt == QT_MAX) {
                    c->overflow = 1;
                    return;
                }
                cur = c->nt++;
                memset(&c->t[cur], 0, sizeof c->t[cur]);
                c->t[cur].b0 = (int)i;
                c->t[cur].brk = (unsigned char)brk;
                brk = 0, wl = 0;
            }
            if (wl < WMAX - 1)
                c->t[cur].w[wl++] = (char)ch;
            else
                c->t[cur].longw = 1;
            c->t[cur].b1 = (int)i + 1;
            i++;
            continue;
        }
        /* apostrophes inside a word are dropped: isn't -> isnt, patient's -> patients */
        if (cur >= 0 && ch == '\'' && i + 1 < c->n && is_alnum(s[i + 1])) {
            i++;
            continue;
        }
        if (cur >= 0 && ch == 0xE2 && i + 3 < c->n && s[i + 1] == 0x80 && s[i + 2] == 0x99 && is_alnum(s[i + 3])) {
            i += 3;
            continue;
        }
        cur = -1;
        unsigned cp = ch;
        int l = u8_dec(s, c->n, i, &cp);
        if (l <= 0) l = 1;
        if (is_punct(cp)) brk = 1;
        i += (size_t)l;
    }
}

/* ------------------------------------------------------- spelling slips */

static int osa_dist(const char *a, const char *b, int limit) {
    int la = (int)strlen(a), lb = (int)strlen(b);
    if (la >= WMAX || lb >= WMAX) return limit + 1;
    if (la - lb > limit || lb - la > limit) return limit + 1;
    int d[WMAX + 1][WMAX + 1];
    for (int i = 0; i <= la; i++) d[i][0] = i;
    for (int j = 0; j <= lb; j++) d[0][j] = j;
    for (int i = 1; i <= la; i++) {
        int rowmin = limit + 1;
        for (int j = 1; j <= lb; j++) {
            int cost = a[i - 1] != b[j - 1];
            int v = d[i - 1][j] + 1;
            if (d[i][j - 1] + 1 < v) v = d[i][j - 1] + 1;
            if (d[i - 1][j - 1] + cost < v) v = d[i - 1][j - 1] + cost;
            if (i > 1 && j > 1 && a[i - 1] == b[j - 2] && a[i - 2] == b[j - 1] && d[i - 2][j - 2] + 1 < v)
                v = d[i - 2][j - 2] + 1;
            d[i][j] = v;
            if (v < rowmin) rowmin = v;
        }
        if (rowmin > limit) return limit + 1;
    }
    return d[la][lb];
}

static int all_alpha(const char *w) {
    for (; *w; w++)
        if (*w < 'a' || *w > 'z') return 0;
    return 1;
}

/* Is w (with plural tolerance) a word of some English lexicon term? */
static int lex_word(const char *w) {
    int n = cxr_lex_term_count();
    for (int k = 0; k < n; k++) {
        const cxr_lex_term *t = cxr_lex_term_at(k);
        if (t->lang != LEX_EN) continue;
        const char *p = t->text;
        while (*p) {
            while (*p == ' ') p++;
            const char *q = p;
            while (*q && *q != ' ') q++;
            size_t pl = (size_t)(q - p);
            if (pl && !(pl == 1 && *p == '*') && wmatch(w, p, pl, 1)) return 1;
            p = q;
        }
    }
    return 0;
}

/* Correct a token to the single nearest lexicon word: distance <= 1 for
 * words of >= 5 letters, <= 2 for >= 9 letters, same first letter, and only
 * when exactly one lexicon word is nearest. */
static void correct_token(qctx *c, qtok *t) {
    char sing[WMAX];
    size_t wl = strlen(t->w);
    if (t->longw || wl < 5 || !all_alpha(t->w) || word_known(t->w) || lex_word(t->w)) return;
    memcpy(sing, t->w, wl + 1);
    if (wl > 5 && sing[wl - 1] == 's') sing[wl - 1] = '\0';
    char best[WMAX] = "";
    int bestd = 99, nbest = 0;
    int n = cxr_lex_term_count();
    for (int k = 0; k < n; k++) {
        const cxr_lex_term *lt = cxr_lex_term_at(k);
        if (lt->lang != LEX_EN) continue;
        const char *p = lt->text;
        while (*p) {
            while (*p == ' ') p++;
            const char *q = p;
            while (*q && *q != ' ') q++;
            size_t pl = (size_t)(q - p);
            if (pl >= 5 && pl < WMAX && p[0] == t->w[0]) {
                char cand[WMAX];
                memcpy(cand, p, pl);
                cand[pl] = '\0';
                int lim = pl >= 9 ? 2 : 1;
                int d = osa_dist(t->w, cand, lim);
                int d2 = osa_dist(sing, cand, lim);
                if (d2 < d) d = d2;
                if (d <= lim && all_alpha(cand) && !word_known(cand)) {
                    {
                        if (d < bestd) {
                            bestd = d, nbest = 1;
                            memcpy(best, cand, pl + 1);
                        } else if (d == bestd && strcmp(best, cand) != 0) {
                            nbest++;
                        }
                    }
                }
            }
            p = q;
        }
    }
    /* side words are corrected too ("rigth"), never the other way round */
    static const char *const extra[] = {"right", "bilateral", "bilaterally"};
    for (int k = 0; k < NELEM(extra); k++) {
        size_t pl = strlen(extra[k]);
        if (extra[k][0] != t->w[0]) continue;
        int lim = pl >= 9 ? 2 : 1;
        int d = osa_dist(t->w, extra[k], lim);
        if (d > lim) continue;
        if (d < bestd) {
            bestd = d, nbest = 1;
            memcpy(best, extra[k], pl + 1);
        } else if (d == bestd && strcmp(best, extra[k]) != 0) {
            nbest++;
        }
    }
    if (nbest != 1) return;
    if (c->corrected[0]) cat_s(c->corrected, sizeof c->corrected, ", ");
    cat_u8(c->corrected, sizeof c->corrected, c->s + t->b0, (size_t)(t->b1 - t->b0));
    cat_s(c->corrected, sizeof c->corrected, "->");
    cat_s(c->corrected, sizeof c->corrected, best);
    memcpy(t->w, best, strlen(best) + 1);
}

/* ------------------------------------------------------- lexicon matching */

static int cand_cmp(const qmatch *a, const qmatch *b) {
    if (a->prio != b->prio) return b->prio - a->prio;
    int sa = a->b1 - a->b0, sb = b->b1 - b->b0;
    if (sa != sb) return sa - sb;
    return a->b0 - b->b0;
}

static void sort_cands(qmatch *v, int n) {
    for (int i = 1; i < n; i++) {
        qmatch x = v[i];
        int j = i - 1;
        while (j >= 0 && cand_cmp(&v[j], &x) > 0) {
            v[j + 1] = v[j];
            j--;
        }
        v[j + 1] = x;
    }
}

static int popcount(unsigned x) {
    int n = 0;
    for (; x; x &= x - 1) n++;
    return n;
}

static int overlaps(const qctx *c, int b0, int b1) {
    for (int k = 0; k < c->nm; k++)
        if (b0 < c->m[k].b1 && c->m[k].b0 < b1) return 1;
    return 0;
}

static void match_en(qctx *c) {
    qmatch cand[QC_MAX];
    int nc = 0, n = cxr_lex_term_count();
    for (int k = 0; k < n; k++) {
        const cxr_lex_term *lt = cxr_lex_term_at(k);
        if (lt->lang != LEX_EN) continue;
        for (int i = 0; i < c->nt && nc < QC_MAX; i++) {
            unsigned lit = 0;
            int e = en_at(c, i, lt->text, 1, M_TAG | M_RULEOUT, &lit);
            if (e < 0) continue;
            qmatch *m = &cand[nc++];
            memset(m, 0, sizeof *m);
            m->entry = lt->entry, m->t0 = i, m->t1 = e, m->lit = lit;
            m->b0 = c->t[i].b0, m->b1 = c->t[e - 1].b1;
            m->prio = popcount(lit);
        }
    }
    sort_cands(cand, nc);
    for (int k = 0; k < nc && c->nm < QM_MAX; k++) {
        if (overlaps(c, cand[k].b0, cand[k].b1)) continue;
        c->m[c->nm++] = cand[k];
        for (int j = cand[k].t0; j < cand[k].t1; j++)
            if (j - cand[k].t0 < 32 && (cand[k].lit >> (j - cand[k].t0) & 1u))
                c->t[j].mask |= cand[k].entry >= 0 ? M_LEX : M_BLOCK;
    }
}

/* Chinese constructs that are question markers or fixed phrases, not
 * negations: blanked (from byte `keep` on) in the zm copy. */
static const struct {
    const char *s;
    int keep;
} ZH_MASKS[] = {{"有没有", 0},   {"有无", 0},     {"是不是", 0},   {"是否", 0},     {"能不能", 0},
                {"会不会", 0},   {"可不可以", 0}, {"对不对", 0},   {"要不要", 0},   {"大不大", 3},
                {"宽不宽", 3},   {"厚不厚", 3},   {"多不多", 3},   {"严不严重", 0}, {"好不好", 0},
                {"不确定", 0},   {"不清楚", 0},   {"不知道", 0},   {"无论", 0},     {"不规则", 0},
                {"不均匀", 0},   {"不对称", 0},   {"不清", 0},     {"不能排除", 0}, {"不除外", 0},
                {"有没", 0}};

static void build_zm(qctx *c) {
    memcpy(c->zm, c->low, c->n + 1);
    for (int k = 0; k < NELEM(ZH_MASKS); k++) {
        size_t l = strlen(ZH_MASKS[k].s);
        for (char *p = strstr(c->zm, ZH_MASKS[k].s); p; p = strstr(p + l, ZH_MASKS[k].s))
            memset(p + ZH_MASKS[k].keep, ' ', l - (size_t)ZH_MASKS[k].keep);
    }
}

static int zh_punct_at(const qctx *c, size_t i, int *len) {
    unsigned cp;
    int l = u8_dec((const unsigned char *)c->low, c->n, i, &cp);
    if (l <= 0) l = 1, cp = 0;
    *len = l;
    return is_punct(cp);
}

/* Clause numbers for Chinese: punctuation and 但/但是/不过 start a new clause. */
static void build_clauses(qctx *c) {
    short id = 0;
    size_t i = 0;
    while (i < c->n) {
        int l;
        int p = zh_punct_at(c, i, &l);
        if (p || !strncmp(c->low + i, "但", 3) || !strncmp(c->low + i, "不过", 6)) id++;
        for (int k = 0; k < l && i + (size_t)k < c->n; k++) c->clause[i + (size_t)k] = id;
        if (p) id++;
        i += (size_t)l;
    }
    c->clause[c->n] = (short)(id + 1);
}

static void match_zh(qctx *c) {
    qmatch cand[QC_MAX];
    int nc = 0, n = cxr_lex_term_count();
    for (int k = 0; k < n && nc < QC_MAX; k++) {
        const cxr_lex_term *lt = cxr_lex_term_at(k);
        if (lt->lang != LEX_ZH) continue;
        const char *bar = strchr(lt->text, '|');
        char a[64];
        size_t al = bar ? (size_t)(bar - lt->text) : strlen(lt->text);
        if (al == 0 || al >= sizeof a) continue;
        memcpy(a, lt->text, al);
        a[al] = '\0';
        const char *b = bar ? bar + 1 : NULL;
        size_t bl = b ? strlen(b) : 0;
        for (const char *p = strstr(c->zm, a); p && nc < QC_MAX; p = strstr(p + al, a)) {
            size_t a0 = (size_t)(p - c->zm), a1 = a0 + al, end = a1, g0 = a1, g1 = a1;
            if (b) {
                size_t off = a1, found = 0;
                while (off < c->n && off <= a1 + 15) {
                    if (!strncmp(c->zm + off, b, bl)) {
                        found = 1;
                        break;
                    }
                    int l;
                    if (zh_punct_at(c, off, &l)) break;
                    off += (size_t)l;
                }
                if (!found) continue;
                g1 = off, end = off + bl;
            }
            qmatch *m = &cand[nc++];
            memset(m, 0, sizeof *m);
            m->entry = lt->entry, m->t0 = -1, m->t1 = -1;
            m->b0 = (int)a0, m->b1 = (int)end, m->g0 = (int)g0, m->g1 = (int)g1;
            m->prio = (int)(al + bl);
        }
    }
    sort_cands(cand, nc);
    for (int k = 0; k < nc && c->nm < QM_MAX; k++) {
        if (overlaps(c, cand[k].b0, cand[k].b1)) continue;
        c->m[c->nm++] = cand[k];
    }
}

/* Is byte range [b0,b1) inside some lexicon match? */
static int in_match(const qctx *c, int b0, int b1) {
    for (int k = 0; k < c->nm; k++)
        if (b0 < c->m[k].b1 && c->m[k].b0 < b1) return 1;
    return 0;
}

/* First occurrence of any Chinese phrase of the list in text (low or zm),
 * outside lexicon matches when skip_matches; returns the index or -1. */
static int zh_find(const qctx *c, const char *text, const char *const *list, int n, int skip_matches, int *b0,
                   int *b1) {
    for (int k = 0; k < n; k++) {
        size_t l = strlen(list[k]);
        for (const char *p = strstr(text, list[k]); p; p = strstr(p + l, list[k])) {
            int s0 = (int)(p - text);
            if (skip_matches && in_match(c, s0, s0 + (int)l)) continue;
            if (b0) *b0 = s0;
            if (b1) *b1 = s0 + (int)l;
            return k;
        }
    }
    return -1;
}

static const char *const ZH_OFFTOPIC[] = {"写诗", "诗", "天气", "笑话", "故事", "唱歌", "歌曲", "菜谱", "做饭",
                                          "股票", "翻译", "你是谁", "你叫什么", "首都", "足球", "篮球", "电影",
                                          "小说", "星期几", "几点了", "写代码", "编程", "彩票", "星座", "旅游"};
static const char *const ZH_TREATMENT[] = {"治疗", "治", "怎么办", "用药", "药", "剂量", "用量", "毫克",
                                           "抗生素", "抗菌", "利尿", "呋塞米", "速尿", "激素", "手术", "处理",
                                           "输液", "打针", "住院", "出院", "穿刺", "抽液", "抽水", "引流", "吸氧",
                                           "化疗", "放疗", "需要", "随访", "隔离", "开药", "疫苗", "活检", "要不要"};
static const char *const ZH_PROGNOSIS[] = {"预后", "存活", "生存", "活多久", "能活", "会死", "死亡", "寿命",
                                           "能好", "会好", "好起来", "能恢复", "会恢复", "康复", "痊愈", "转归",
                                           "结局", "生命危险", "致命", "会不会恶化", "会恶化", "会不会加重",
                                           "会加重", "会进展", "会不会进展", "会转移", "严重后果"};
static const char *const ZH_PRIOR[] = {"上次", "上一次", "之前", "以前", "前片", "旧片", "老片", "对比", "相比",
                                       "较前", "比前", "变化", "好转", "加重", "进展", "恶化", "吸收", "减少了",
                                       "增多了", "消失", "昨天", "前天", "上周", "上个月", "去年", "几天前",
                                       "前几天", "既往片", "还在", "新出现", "新发", "稳定", "没变", "改善", "在增大",
                                       "在变大", "在缩小",
                                       "复查片"};
static const char *const ZH_DEVICE[] = {"气管插管", "插管", "胃管", "鼻胃管", "营养管", "导管", "引流管",
                                        "中心静脉", "picc", "起搏器电极", "电极", "导丝"};
static const char *const ZH_POSITION[] = {"位置", "尖端", "过深", "过浅", "在胃内", "在哪里", "到位", "位于",
                                          "放对", "对吗"};
static const char *const ZH_DEVICE_ACTION[] = {"拔", "调整", "退", "需要"};
static const char *const ZH_MEASUREMENT[] = {"心胸比", "有多大", "多大？", "大小", "直径", "毫米", "厘米", "毫升",
                                             "测量", "宽度", "范围有多", "积液有多少", "有多少积液", "多少量", "体积"};
static const char *const ZH_COUNT[] = {"几个", "几处", "几根", "多少个", "多少处", "多少根", "数量", "数目",
                                       "数一下"};
static const char *const ZH_MODALITY[] = {"磁共振", "核磁", "超声", "b超", "彩超", "心超", "造影", "增强扫描",
                                          "钼靶", "心电图", "胃镜", "肠镜", "支气管镜", "骨扫描", "核医学",
                                          "断层扫描", "平扫"};
static const char *const ZH_ANATOMY[] = {"膝", "髋", "踝", "足部", "脚", "手腕", "手部", "手指", "肘", "腿",
                                         "下肢", "上肢", "骨盆", "盆腔", "头颅", "头部", "颅", "脑", "肾", "肝",
                                         "胆", "胰", "脾", "肠", "阑尾", "子宫", "卵巢", "前列腺", "膀胱", "眼",
                                         "耳", "鼻窦", "牙", "口腔", "腹", "甲状腺", "颈椎", "颈部", "腰椎",
                                         "乳腺", "乳房", "胃"};
static const char *const ZH_PATIENT[] = {"名字", "姓名", "叫什么", "年龄", "多大了", "几岁", "多少岁", "岁数",
                                         "性别", "男的", "女的", "男还是女", "男是女", "住址", "地址", "住在",
                                         "电话", "身份证", "病历号", "住院号", "医保", "体重", "身高", "吸烟",
                                         "抽烟", "过敏", "发烧", "发热", "咳嗽", "症状", "病史", "既往史",
                                         "怀孕", "职业", "床号", "血压", "心率", "糖尿病", "高血压", "多大年纪"};
static const char *const ZH_HEDGE[] = {"吧", "对吗", "对吧", "是吧", "是吗", "没错", "对不对", "应该", "可能",
                                       "也许", "大概", "估计", "我觉得", "我认为", "我猜", "似乎", "好像",
                                       "疑似", "确认", "确定"};
static const char *const ZH_RULEOUT[] = {"排除", "除外"};
static const char *const ZH_NEG[] = {"没有", "没", "无", "不", "未", "非"};
static const char *const ZH_OVERVIEW[] = {"异常", "问题", "毛病", "发现", "所见", "病变", "什么病", "怎么样",
                                          "如何", "情况", "描述", "诊断", "印象", "报告", "解读", "读片",
                                          "阅片", "看一下", "看看", "正常", "健康", "没事", "看到了什么",
                                          "看到什么", "看见什么"};
static const char *const ZH_NORMAL[] = {"正常", "没问题", "没有问题", "无问题", "健康", "没事",
                                        "无异常", "未见异常", "没有异常"};
static const char *const ZH_LAT[] = {"哪一侧", "哪侧", "哪边", "哪一边", "哪个肺", "哪一个肺", "哪叶", "哪一叶",
                                     "哪个肺叶", "左侧还是右侧", "右侧还是左侧", "左还是右", "右还是左",
                                     "左边还是右边", "右边还是左边", "单侧还是双侧", "双侧还是单侧",
                                     "左肺还是右肺", "右肺还是左肺"};
static const char *const ZH_WHERE[] = {"在哪", "位于哪", "哪里", "什么位置", "哪个位置", "什么部位", "哪个部位"};
static const char *const ZH_OV_HEADS[] = {"是否存在", "是否有", "有没有"};
static const char *const ZH_OV_EXCLUDE[] = {"异常", "问题", "病变", "什么", "东西", "情况", "变化", "发现",
                                            "毛病", "可能", "必要", "需要", "意义", "危险", "风险", "区别",
                                            "其他", "别的", "哪", "图像", "片子", "胸片", "什"};

#define ZFIND(text, list, skip, b0, b1) zh_find(c, text, list, NELEM(list), skip, b0, b1)
#define EFIND(list, forbid, t0, t1) en_find(c, list, NELEM(list), forbid, t0, t1)

/* --------------------------------------------------------- per finding */

static int side_word(const qctx *c, int j, int dist) {
    const qtok *t = &c->t[j];
    if (t->mask & (M_TAG | M_RULEOUT | M_LEX | M_BLOCK)) return 0;
    const char *w = t->w;
    if (!strcmp(w, "left") || !strcmp(w, "lll") || !strcmp(w, "lul") || !strcmp(w, "lingula") ||
        !strcmp(w, "lingular"))
        return S_L;
    if (!strcmp(w, "right") || !strcmp(w, "rll") || !strcmp(w, "rul") || !strcmp(w, "rml")) return S_R;
    if (dist <= 2 && (!strcmp(w, "l") || !strcmp(w, "lt"))) return S_L;
    if (dist <= 2 && (!strcmp(w, "r") || !strcmp(w, "rt"))) return S_R;
    if (!strcmp(w, "bilateral") || !strcmp(w, "bilaterally") || !strcmp(w, "bibasilar") || !strcmp(w, "bibasal") ||
        !strcmp(w, "biapical"))
        return S_B;
    if (!strcmp(w, "unilateral")) return S_U;
    if (!strcmp(w, "both") && j + 1 < c->nt) {
        static const char *const nx[] = {"side", "sides", "lung", "lungs", "base", "bases", "apex", "apices",
                                         "hemithorax", "hemithoraces", "lower", "upper", "sided"};
        for (int k = 0; k < NELEM(nx); k++)
            if (!strcmp(c->t[j + 1].w, nx[k])) return S_B;
    }
    return 0;
}

static int en_conj(const char *w) { return en_in(w, EN_CONJ, NELEM(EN_CONJ)); }

static int en_sides(const qctx *c, const qmatch *m) {
    int back = 0, fwd = 0;
    for (int j = m->t0 - 1, d = 1; j >= 0 && d <= 4; j--, d++) {
        if (c->t[j + 1].brk || (c->t[j].mask & M_LEX)) break;
        if (en_conj(c->t[j].w)) {
            if (back && j > 0 && side_word(c, j - 1, 1)) back |= S_U;
            break;
        }
        back |= side_word(c, j, d);
    }
    int prep = 0;
    for (int j = m->t1; j < c->nt && j < m->t1 + 6; j++) {
        if (c->t[j].brk || (c->t[j].mask & M_LEX)) break;
        const char *w = c->t[j].w;
        if (en_conj(w)) {
            int k = j + 1;
            while (k < c->nt && is_article(c->t[k].w)) k++;
            if (fwd && k < c->nt && side_word(c, k, 9)) fwd |= S_U;
            break;
        }
        if (!strcmp(w, "on") || !strcmp(w, "in") || !strcmp(w, "at") || !strcmp(w, "of") || !strcmp(w, "to") ||
            !strcmp(w, "involving") || !strcmp(w, "affecting") || !strcmp(w, "within"))
            prep = 1;
        int s = side_word(c, j, 9);
        if (s && (prep || s == S_B || s == S_U)) fwd |= s;
    }
    return back ? back : fwd;
}

static void side_name(int s, char *out, size_t cap) {
    const char *r = "";
    if (!(s & S_U)) {
        if (s & S_B)
            r = "both"; /* "bilateral", "左右两侧" */
        else if (s == S_L)
            r = "left";
        else if (s == S_R)
            r = "right";
    }
    set_s(out, cap, r, strlen(r));
}

static int en_negated(const qctx *c, const qmatch *m) {
    /* a cue in the gap of the term ("heart isn't enlarged") */
    for (int j = m->t0; j < m->t1; j++) {
        if (j - m->t0 < 32 && (m->lit >> (j - m->t0) & 1u)) continue;
        if (!(c->t[j].mask & (M_TAG | M_RULEOUT)) && en_in(c->t[j].w, EN_NEG_CUES, NELEM(EN_NEG_CUES)))
            return 1;
    }
    /* a cue before it in the same clause */
    for (int j = m->t0 - 1, d = 1; j >= 0 && d <= 7; j--, d++) {
        if (c->t[j + 1].brk) break;
        const qtok *t = &c->t[j];
        if (en_in(t->w, EN_CLAUSE_WORDS, NELEM(EN_CLAUSE_WORDS))) break;
        if (t->mask & (M_TAG | M_RULEOUT | M_LEX | M_BLOCK)) continue;
        int cue = en_in(t->w, EN_NEG_CUES, NELEM(EN_NEG_CUES));
        if (!cue && j + 1 < c->nt) {
            if (!strcmp(t->w, "negative") && !strcmp(c->t[j + 1].w, "for")) cue = 1;
            if (!strcmp(t->w, "free") && !strcmp(c->t[j + 1].w, "of")) cue = 1;
        }
        if (cue && j > 0 && !strcmp(c->t[j - 1].w, "or")) cue = 0; /* "or not", "or no" */
        if (cue) return 1;
    }
    /* "... is not present / not seen", "... absent" after it */
    for (int j = m->t1; j < c->nt && j < m->t1 + 4; j++) {
        if (c->t[j].brk || (c->t[j].mask & M_LEX)) break;
        const char *w = c->t[j].w;
        if (!strcmp(w, "absent")) return 1;
        if (!strcmp(w, "not") && j + 1 < c->nt && !c->t[j + 1].brk &&
            (!strcmp(c->t[j + 1].w, "present") || !strcmp(c->t[j + 1].w, "seen") ||
             !strcmp(c->t[j + 1].w, "visible") || !strcmp(c->t[j + 1].w, "there") ||
             !strcmp(c->t[j + 1].w, "identified") || !strcmp(c->t[j + 1].w, "evident")))
            return 1;
    }
    return 0;
}

/* Chinese: side words in the same clause just before the term, or after it. */
static int zh_side_in(const qctx *c, int b0, int b1) {
    int s = 0;
    for (int i = b0; i < b1;) {
        const char *p = c->low + i;
        if (!strncmp(p, "左", 3))
            s |= S_L;
        else if (!strncmp(p, "右", 3))
            s |= S_R;
        else if (!strncmp(p, "双", 3))
            s |= S_B;
        else if (!strncmp(p, "单侧", 6))
            s |= S_U;
        else if (!strncmp(p, "两侧", 6) || !strncmp(p, "两肺", 6) || !strncmp(p, "两下", 6) ||
                 !strncmp(p, "两上", 6))
            s |= S_B;
        unsigned cp;
        int l = u8_dec((const unsigned char *)c->low, c->n, (size_t)i, &cp);
        i += l > 0 ? l : 1;
    }
    return s;
}

static int zh_sides(const qctx *c, const qmatch *m) {
    /* back: up to 10 characters, same clause, not into another match */
    int start = m->b0, chars = 0;
    while (start > 0 && chars < 10) {
        int p = start - 1;
        while (p > 0 && ((unsigned char)c->low[p] & 0xC0) == 0x80) p--;
        if (c->clause[p] != c->clause[m->b0] || in_match(c, p, start)) break;
        start = p, chars++;
    }
    int back = zh_side_in(c, start, m->b0);
    if (back) return back;
    int end = m->b1;
    chars = 0;
    while (end < (int)c->n && chars < 8) {
        unsigned cp;
        int l = u8_dec((const unsigned char *)c->low, c->n, (size_t)end, &cp);
        if (l <= 0) l = 1;
        if (c->clause[end] != c->clause[m->b0] || in_match(c, end, end + l)) break;
        end += l, chars++;
    }
    return zh_side_in(c, m->b1, end);
}

static int zh_negated(const qctx *c, const qmatch *m) {
    for (int k = 0; k < NELEM(ZH_NEG); k++) {
        size_t l = strlen(ZH_NEG[k]);
        for (const char *p = strstr(c->zm, ZH_NEG[k]); p; p = strstr(p + l, ZH_NEG[k])) {
            int s0 = (int)(p - c->zm), s1 = s0 + (int)l;
            if (s0 >= m->g0 && s1 <= m->g1 && m->g1 > m->g0) return 1; /* inside the gap: 心脏不大 */
            if (s1 > m->b0) continue;
            if (c->clause[s0] != c->clause[m->b0] || in_match(c, s0, s1)) continue;
            return 1;
        }
    }
    return 0;
}

/* ------------------------------------------------------------ reasons */

static void refuse(cxr_question *q, cxr_refusal r, const char *trig, size_t tl) {
    int zh = !strcmp(q->language, "zh");
    char lang[4];
    memcpy(lang, q->language, sizeof lang);
    char corr[64];
    memcpy(corr, q->corrected, sizeof corr);
    memset(q, 0, sizeof *q);
    memcpy(q->language, lang, sizeof lang);
    memcpy(q->corrected, corr, sizeof corr);
    q->intent = CXR_INTENT_REFUSE;
    q->refusal = r;
    const char *pre = "", *post = "";
    switch (r) {
    case CXR_REFUSE_TREATMENT:
        pre = zh ? "已拒绝：问题涉及治疗或用药（“" : "Refused: the question asks for a treatment or dosing decision (\"";
        post = zh ? "”）。本工具只报告胸片上可见的表现，治疗决策请由主治医生作出。"
                  : "\"). This tool only reports what is visible on the chest radiograph; management belongs to "
                    "the treating clinician.";
        break;
    case CXR_REFUSE_PROGNOSIS:
        pre = zh ? "已拒绝：问题涉及预后或转归（“" : "Refused: the question asks about prognosis or outcome (\"";
        post = zh ? "”），单张胸片无法回答。" : "\"), which one chest radiograph cannot answer.";
        break;
    case CXR_REFUSE_OTHER_ANATOMY:
        pre = zh ? "已拒绝：问题涉及胸部以外的部位（“" : "Refused: the question is about another body part (\"";
        post = zh ? "”），本工具只解读胸片。" : "\"); this tool only reads chest radiographs.";
        break;
    case CXR_REFUSE_OTHER_MODALITY:
        pre = zh ? "已拒绝：问题涉及其他影像检查（“" : "Refused: the question is about another imaging modality (\"";
        post = zh ? "”），这里只有这张胸片。" : "\"); only this chest radiograph is available.";
        break;
    case CXR_REFUSE_PRIOR:
        pre = zh ? "已拒绝：问题涉及随时间的变化或与既往检查比较（“"
                 : "Refused: the question asks about change over time or compares with a prior study (\"";
        post = zh ? "”），但只提供了这一张影像，没有既往影像。" : "\"), but only this one image was provided, no prior.";
        break;
    case CXR_REFUSE_DEVICE_POSITION:
        pre = zh ? "已拒绝：问题涉及导管、插管或电极的位置（“"
                 : "Refused: the question asks where a tube, line or lead lies (\"";
        post = zh ? "”）。本模型未经验证，不能判断器械位置；请由医生在图像上确认。"
                  : "\"). This model was not trained or validated to judge device position; a clinician must check "
                    "it on the image.";
        break;
    case CXR_REFUSE_MEASUREMENT:
        pre = zh ? "已拒绝：问题要求测量（“" : "Refused: the question asks for a measurement (\"";
        post = zh ? "”）。本模型只给出发现的概率，不测量大小、比值或容量。"
                  : "\"). This model gives the probability of a finding; it does not measure sizes, ratios or "
                    "volumes.";
        break;
    case CXR_REFUSE_COUNT:
        pre = zh ? "已拒绝：问题要求计数（“" : "Refused: the question asks for a count (\"";
        post = zh ? "”）。本模型只判断发现是否存在，不计数。"
                  : "\"). This model says whether a finding is present; it does not count lesions or devices.";
        break;
    case CXR_REFUSE_PATIENT_INFO:
        pre = zh ? "已拒绝：问题涉及患者身份或影像以外的信息（“"
                 : "Refused: the question asks for patient identity or non-image information (\"";
        post = zh ? "”），无法从图像中回答。" : "\"), which the image cannot answer.";
        break;
    case CXR_REFUSE_NOT_A_QUESTION:
    default:
        pre = zh ? "已拒绝：这不是关于胸片的问题（“" : "Refused: this is not a question about the chest radiograph (\"";
        post = zh ? "”）。" : "\").";
        break;
    }
    cat_s(q->reason, sizeof q->reason, pre);
    cat_u8(q->reason, sizeof q->reason - 100, trig, tl > 40 ? 40 : tl);
    cat_s(q->reason, sizeof q->reason, post);
}

static void refuse_msg(cxr_question *q, const char *en, const char *zh) {
    refuse(q, CXR_REFUSE_NOT_A_QUESTION, "", 0);
    q->reason[0] = '\0';
    cat_s(q->reason, sizeof q->reason, !strcmp(q->language, "zh") ? zh : en);
}

/* ------------------------------------------------------------ open vocabulary */

static int en_open_vocab(const qctx *c, cxr_question *q) {
    for (int h = 0; h < NELEM(EN_OV_HEADS); h++) {
        for (int i = 0; i < c->nt; i++) {
            int e = en_at(c, i, EN_OV_HEADS[h], 0, M_TAG, NULL);
            if (e < 0) continue;
            if (!strcmp(EN_OV_HEADS[h], "any") && i > 0 && !c->t[i].brk) continue;
            int j = e, side = 0;
            for (int pass = 0; pass < 2; pass++) {
                while (j < c->nt && !c->t[j].brk &&
                       (is_article(c->t[j].w) || !strcmp(c->t[j].w, "any") || !strcmp(c->t[j].w, "some")))
                    j++;
                if (pass == 0 && j + 1 < c->nt && !c->t[j + 1].brk &&
                    (!strcmp(c->t[j].w, "evidence") || !strcmp(c->t[j].w, "signs") || !strcmp(c->t[j].w, "sign")) &&
                    !strcmp(c->t[j + 1].w, "of"))
                    j += 2;
            }
            while (j < c->nt && !c->t[j].brk && (side_word(c, j, 9) || !strcmp(c->t[j].w, "sided"))) {
                side |= side_word(c, j, 9);
                j++;
            }
            int x0 = j, ok = 1;
            while (j < c->nt && (j == x0 || !c->t[j].brk) && !en_in(c->t[j].w, EN_OV_STOP, NELEM(EN_OV_STOP))) {
                const qtok *t = &c->t[j];
                if (t->longw || (t->mask & (M_LEX | M_TAG)) || !all_alpha(t->w) || strlen(t->w) < 2 ||
                    en_in(t->w, EN_OV_EXCLUDE, NELEM(EN_OV_EXCLUDE)))
                    ok = 0;
                j++;
            }
            /* "sign" / "evidence" alone is no finding; "Chilaiditi sign" is */
            if (j - x0 == 1 && (!strcmp(c->t[x0].w, "sign") || !strcmp(c->t[x0].w, "signs") ||
                                !strcmp(c->t[x0].w, "evidence")))
                ok = 0;
            if (!ok || j == x0 || j - x0 > 4) continue;
            cxr_qfinding *f = &q->findings[0];
            memset(f, 0, sizeof *f);
            for (int k = x0; k < j; k++) {
                if (k > x0) cat_s(f->name, sizeof f->name, " ");
                cat_s(f->name, sizeof f->name, c->t[k].w);
            }
            memcpy(f->display_en, f->name, sizeof f->name);
            set_s(f->matched, sizeof f->matched, c->s + c->t[x0].b0, (size_t)(c->t[j - 1].b1 - c->t[x0].b0));
            side_name(side, f->laterality, sizeof f->laterality);
            f->known = 0;
            q->n_findings = 1;
            return 1;
        }
    }
    return 0;
}

static int zh_open_vocab(const qctx *c, cxr_question *q) {
    static const char *const stop[] = {"吗", "呢", "吧", "的", "了", "在", "于", "等", "征象", "表现", "迹象",
                                       "改变"};
    static const char *const skip[] = {"明显的", "明显", "任何", "一些"};
    for (int h = 0; h < NELEM(ZH_OV_HEADS); h++) {
        const char *p = strstr(c->low, ZH_OV_HEADS[h]);
        if (!p) continue;
        size_t i = (size_t)(p - c->low) + strlen(ZH_OV_HEADS[h]);
        for (int k = 0; k < NELEM(skip); k++)
            if (!strncmp(c->low + i, skip[k], strlen(skip[k]))) {
                i += strlen(skip[k]);
                break;
            }
        size_t x0 = i;
        int chars = 0;
        while (i < c->n) {
            unsigned cp;
            int l = u8_dec((const unsigned char *)c->low, c->n, i, &cp);
            if (l <= 0 || !is_cjk(cp)) break;
            int st = 0;
            for (int k = 0; k < NELEM(stop); k++)
                if (!strncmp(c->low + i, stop[k], strlen(stop[k]))) st = 1;
            if (st) break;
            i += (size_t)l, chars++;
        }
        if (chars < 1 || chars > 8) continue;
        char x[64];
        set_s(x, sizeof x, c->low + x0, i - x0);
        int bad = 0;
        for (int k = 0; k < NELEM(ZH_OV_EXCLUDE); k++)
            if (strstr(x, ZH_OV_EXCLUDE[k])) bad = 1;
        for (int k = 0; k < c->nm; k++)
            if (c->m[k].entry >= 0 && c->m[k].b0 < (int)i && (int)x0 < c->m[k].b1) bad = 1;
        if (bad) continue;
        cxr_qfinding *f = &q->findings[0];
        memset(f, 0, sizeof *f);
        set_s(f->name, sizeof f->name, c->s + x0, i - x0);
        set_s(f->display_en, sizeof f->display_en, c->s + x0, i - x0);
        set_s(f->matched, sizeof f->matched, c->s + x0, i - x0);
        f->known = 0;
        q->n_findings = 1;
        return 1;
    }
    return 0;
}

/* ------------------------------------------------------------ the parse */

const char *cxr_intent_name(cxr_intent i) {
    switch (i) {
    case CXR_INTENT_PRESENCE: return "presence";
    case CXR_INTENT_MULTI: return "multi";
    case CXR_INTENT_OVERVIEW: return "overview";
    case CXR_INTENT_LATERALITY: return "laterality";
    case CXR_INTENT_REFUSE: return "refuse";
    }
    return "unknown";
}

const char *cxr_refusal_name(cxr_refusal r) {
    switch (r) {
    case CXR_REFUSE_NONE: return "none";
    case CXR_REFUSE_TREATMENT: return "treatment";
    case CXR_REFUSE_PROGNOSIS: return "prognosis";
    case CXR_REFUSE_OTHER_ANATOMY: return "other_anatomy";
    case CXR_REFUSE_OTHER_MODALITY: return "other_modality";
    case CXR_REFUSE_PRIOR: return "prior";
    case CXR_REFUSE_NOT_A_QUESTION: return "not_a_question";
    case CXR_REFUSE_PATIENT_INFO: return "patient_info";
    case CXR_REFUSE_DEVICE_POSITION: return "device_position";
    case CXR_REFUSE_MEASUREMENT: return "measurement";
    case CXR_REFUSE_COUNT: return "count";
    }
    return "unknown";
}

/* Try each refusal kind in priority order; 1 when refused. */
static int check_refusals(const qctx *c, cxr_question *q) {
    static const struct {
        cxr_refusal r;
        const char *const *en;
        int nen;
        const char *const *zh;
        int nzh;
        int in_lexicon; /* its words may be finding words ("cardiothoracic ratio", "积液有多少") */
    } kinds[] = {
        {CXR_REFUSE_NOT_A_QUESTION, EN_OFFTOPIC, NELEM(EN_OFFTOPIC), ZH_OFFTOPIC, NELEM(ZH_OFFTOPIC), 0},
        {CXR_REFUSE_TREATMENT, EN_TREATMENT, NELEM(EN_TREATMENT), ZH_TREATMENT, NELEM(ZH_TREATMENT), 0},
        {CXR_REFUSE_PROGNOSIS, EN_PROGNOSIS, NELEM(EN_PROGNOSIS), ZH_PROGNOSIS, NELEM(ZH_PROGNOSIS), 0},
        {CXR_REFUSE_MEASUREMENT, EN_MEASUREMENT, NELEM(EN_MEASUREMENT), ZH_MEASUREMENT, NELEM(ZH_MEASUREMENT), 1},
        {CXR_REFUSE_COUNT, EN_COUNT, NELEM(EN_COUNT), ZH_COUNT, NELEM(ZH_COUNT), 0},
        {CXR_REFUSE_PRIOR, EN_PRIOR, NELEM(EN_PRIOR), ZH_PRIOR, NELEM(ZH_PRIOR), 0},
        {CXR_REFUSE_OTHER_MODALITY, EN_MODALITY, NELEM(EN_MODALITY), ZH_MODALITY, NELEM(ZH_MODALITY), 0},
        {CXR_REFUSE_OTHER_ANATOMY, EN_ANATOMY, NELEM(EN_ANATOMY), ZH_ANATOMY, NELEM(ZH_ANATOMY), 0},
        {CXR_REFUSE_PATIENT_INFO, EN_PATIENT, NELEM(EN_PATIENT), ZH_PATIENT, NELEM(ZH_PATIENT), 0},
    };
    int t0, t1, b0, b1;
    /* device position first: device words are lexicon words (support devices),
       and "drain" is a treatment word too */
    int dev = en_find(c, EN_DEVICE, NELEM(EN_DEVICE), M_TAG, &t0, &t1) >= 0;
    if (dev) {
        b0 = c->t[t0].b0;
        b1 = c->t[t1 - 1].b1;
    } else {
        dev = zh_find(c, c->low, ZH_DEVICE, NELEM(ZH_DEVICE), 0, &b0, &b1) >= 0;
    }
    if (dev &&
        (en_find(c, EN_POSITION, NELEM(EN_POSITION), M_TAG, NULL, NULL) >= 0 ||
         zh_find(c, c->low, ZH_POSITION, NELEM(ZH_POSITION), 0, NULL, NULL) >= 0) &&
        en_find(c, EN_DEVICE_ACTION, NELEM(EN_DEVICE_ACTION), M_TAG, NULL, NULL) < 0 &&
        zh_find(c, c->low, ZH_DEVICE_ACTION, NELEM(ZH_DEVICE_ACTION), 0, NULL, NULL) < 0) {
        refuse(q, CXR_REFUSE_DEVICE_POSITION, c->s + b0, (size_t)(b1 - b0));
        return 1;
    }
    for (int k = 0; k < NELEM(kinds); k++) {
        unsigned forbid = kinds[k].in_lexicon ? M_TAG : M_LEX | M_BLOCK | M_TAG;
        if (en_find(c, kinds[k].en, kinds[k].nen, forbid, &t0, &t1) >= 0) {
            refuse(q, kinds[k].r, c->s + c->t[t0].b0, (size_t)(c->t[t1 - 1].b1 - c->t[t0].b0));
            return 1;
        }
        if (zh_find(c, c->low, kinds[k].zh, kinds[k].nzh, !kinds[k].in_lexicon, &b0, &b1) >= 0) {
            refuse(q, kinds[k].r, c->s + b0, (size_t)(b1 - b0));
            return 1;
        }
    }
    return 0;
}

static void mark_tags(qctx *c, cxr_question *q) {
    /* a question tag after the last clause break: ", right?", ", is there?" */
    int k = -1;
    for (int j = c->nt - 1; j > 0; j--)
        if (c->t[j].brk) {
            k = j;
            break;
        }
    for (int j = c->nt - 4 < 0 ? 0 : c->nt - 4; j < c->nt; j++)
        for (int p = 0; p < NELEM(EN_ALT_TAGS); p++)
            if (en_at(c, j, EN_ALT_TAGS[p], 0, 0, NULL) == c->nt)
                for (int i = j; i < c->nt; i++) c->t[i].mask |= M_TAG;
    if (k > 0 && c->nt - k <= 4) {
        for (int p = 0; p < NELEM(EN_TAGS); p++)
            if (en_at(c, k, EN_TAGS[p], 0, 0, NULL) == c->nt) {
                for (int j = k; j < c->nt; j++) c->t[j].mask |= M_TAG;
                q->hedged = 1;
                break;
            }
    }
    /* a negative interrogative: "Isn't there ...?" asks for confirmation */
    if (c->nt > 1 && en_in(c->t[0].w, EN_NEG_INTERROGATIVE, NELEM(EN_NEG_INTERROGATIVE))) {
        c->t[0].mask |= M_TAG;
        q->hedged = 1;
    }
}

static void mark_ruleout(qctx *c, cxr_question *q) {
    for (int i = 0; i < c->nt; i++)
        for (int k = 0; k < NELEM(EN_RULEOUT); k++) {
            int e = en_at(c, i, EN_RULEOUT[k], 0, M_TAG, NULL);
            if (e < 0) continue;
            q->rule_out = 1;
            for (int j = i; j < e; j++)
                if (!strcmp(c->t[j].w, "r") || !strcmp(c->t[j].w, "o") || !strcmp(c->t[j].w, "rule") ||
                    !strcmp(c->t[j].w, "out"))
                    c->t[j].mask |= M_RULEOUT;
        }
}

static int entry_is(int e, const char *name) {
    const cxr_qfinding *f = cxr_lexicon_entry(e);
    return f && !strcmp(f->name, name);
}

static int cmp_b0(const qmatch *a, const qmatch *b) { return a->b0 - b->b0; }

int cxr_question_parse(const char *utf8, const char *lang_hint, cxr_question *out) {
    if (!out) return CXR_ERR_ARG;
    memset(out, 0, sizeof *out);
    const char *hint = NULL;
    if (lang_hint && (!strcmp(lang_hint, "en") || !strcmp(lang_hint, "zh"))) hint = lang_hint;
    memcpy(out->language, hint ? hint : "en", 3);
    if (!utf8) {
        refuse_msg(out, "Refused: no question was given.", "已拒绝：没有提供问题。");
        return CXR_ERR_ARG;
    }
    size_t n = strnlen(utf8, CXR_QUESTION_MAX_BYTES + 1);
    if (n > CXR_QUESTION_MAX_BYTES) {
        refuse_msg(out, "Refused: the question is longer than 2048 bytes; ask one short question about the image.",
                   "已拒绝：问题超过2048字节，请只问一个关于图像的简短问题。");
        return CXR_OK;
    }
    int has_cjk = 0;
    for (size_t i = 0; i < n;) {
        unsigned cp;
        int l = u8_dec((const unsigned char *)utf8, n, i, &cp);
        if (l <= 0) {
            refuse_msg(out, "Refused: the text is not valid UTF-8.", "已拒绝：文本不是有效的UTF-8编码。");
            return CXR_ERR_ARG;
        }
        if (is_cjk(cp)) has_cjk = 1;
        i += (size_t)l;
    }
    if (!hint) memcpy(out->language, has_cjk ? "zh" : "en", 3);

    qctx ctx, *c = &ctx;
    c->s = utf8, c->n = n, c->nt = 0, c->overflow = 0, c->nm = 0, c->corrected[0] = '\0';
    for (size_t i = 0; i < n; i++) {
        char ch = utf8[i];
        c->low[i] = (ch >= 'A' && ch <= 'Z') ? (char)(ch - 'A' + 'a') : ch;
    }
    c->low[n] = '\0';
    tokenize(c);
    if (c->overflow) {
        refuse_msg(out, "Refused: the text is too long to be one question about the image.",
                   "已拒绝：文本过长，不是一个关于图像的问题。");
        return CXR_OK;
    }
    build_zm(c);
    build_clauses(c);
    int blank = c->nt == 0;
    for (size_t i = 0; blank && i < n;) {
        unsigned cp;
        int l = u8_dec((const unsigned char *)utf8, n, i, &cp);
        if (is_cjk(cp)) blank = 0;
        i += (size_t)(l > 0 ? l : 1);
    }
    if (blank) {
        refuse_msg(out, "Refused: the question is empty.", "已拒绝：问题为空。");
        return CXR_OK;
    }

    mark_tags(c, out);
    mark_ruleout(c, out);
    for (int i = 0, tried = 0; i < c->nt && tried < 48; i++) {
        if (strlen(c->t[i].w) >= 5) tried++;
        correct_token(c, &c->t[i]);
    }
    memcpy(out->corrected, c->corrected, sizeof out->corrected);
    match_en(c);
    match_zh(c);
    /* sort matches by position */
    for (int i = 1; i < c->nm; i++) {
        qmatch x = c->m[i];
        int j = i - 1;
        while (j >= 0 && cmp_b0(&c->m[j], &x) > 0) {
            c->m[j + 1] = c->m[j];
            j--;
        }
        c->m[j + 1] = x;
    }
    /* "COVID-19肺炎", "新冠 pneumonia": pneumonia right after COVID-19 is COVID-19 */
    for (int k = 1; k < c->nm; k++) {
        if (!entry_is(c->m[k].entry, "pneumonia") || !entry_is(c->m[k - 1].entry, "covid19")) continue;
        if (c->m[k].b0 - c->m[k - 1].b1 <= 1) c->m[k].entry = -1;
    }
    /* final "right"/"correct" straight after a finding is a tag: "no effusion right?" */
    if (c->nt >= 2 && !(c->t[c->nt - 1].mask) &&
        (!strcmp(c->t[c->nt - 1].w, "right") || !strcmp(c->t[c->nt - 1].w, "correct")) &&
        (c->t[c->nt - 2].mask & M_LEX)) {
        c->t[c->nt - 1].mask |= M_TAG;
        out->hedged = 1;
    }

    if (check_refusals(c, out)) return CXR_OK;

    if (EFIND(EN_HEDGE, M_LEX | M_TAG, NULL, NULL) >= 0 || ZFIND(c->low, ZH_HEDGE, 1, NULL, NULL) >= 0)
        out->hedged = 1;
    /* a tag 是不是 / 对不对 at the end of a Chinese question */
    {
        size_t e = n;
        while (e > 0) {
            size_t p = e - 1;
            while (p > 0 && ((unsigned char)c->low[p] & 0xC0) == 0x80) p--;
            unsigned cp;
            int l = u8_dec((const unsigned char *)c->low, n, p, &cp);
            if (l > 0 && (is_punct(cp) || cp == ' ' || cp == 0x3000)) {
                e = p;
                continue;
            }
            break;
        }
        if ((e >= 9 && !strncmp(c->low + e - 9, "是不是", 9)) || (e >= 9 && !strncmp(c->low + e - 9, "对不对", 9))) {
            size_t p = e - 9;
            if (p > 0) {
                size_t q0 = p - 1;
                while (q0 > 0 && ((unsigned char)c->low[q0] & 0xC0) == 0x80) q0--;
                unsigned cp;
                int l = u8_dec((const unsigned char *)c->low, n, q0, &cp);
                if (l > 0 && is_punct(cp)) out->hedged = 1;
            }
        }
    }
    if (ZFIND(c->low, ZH_RULEOUT, 0, NULL, NULL) >= 0) out->rule_out = 1;

    /* findings, in order, duplicates once */
    int no_finding = 0;
    for (int k = 0; k < c->nm; k++) {
        const qmatch *m = &c->m[k];
        if (m->entry < 0) continue;
        const cxr_qfinding *e = cxr_lexicon_entry(m->entry);
        if (!e) continue;
        if (!strcmp(e->name, "no_finding")) {
            no_finding = 1;
            continue;
        }
        int neg = m->t0 >= 0 ? en_negated(c, m) : zh_negated(c, m);
        char lat[8];
        side_name(m->t0 >= 0 ? en_sides(c, m) : zh_sides(c, m), lat, sizeof lat);
        int dup = -1;
        for (int j = 0; j < out->n_findings; j++)
            if (!strcmp(out->findings[j].name, e->name)) dup = j;
        if (dup >= 0) {
            cxr_qfinding *f = &out->findings[dup];
            if (!f->laterality[0] && lat[0]) memcpy(f->laterality, lat, sizeof lat);
            if (neg) f->negated = 1;
            continue;
        }
        if (out->n_findings >= CXR_Q_MAX_FINDINGS) continue;
        cxr_qfinding *f = &out->findings[out->n_findings++];
        *f = *e;
        f->known = 1;
        f->negated = neg;
        memcpy(f->laterality, lat, sizeof lat);
        set_s(f->matched, sizeof f->matched, utf8 + m->b0, (size_t)(m->b1 - m->b0));
    }

    int lat_q = EFIND(EN_LAT, M_TAG, NULL, NULL) >= 0 || ZFIND(c->low, ZH_LAT, 0, NULL, NULL) >= 0;
    if (!lat_q && out->n_findings > 0)
        lat_q = EFIND(EN_WHERE, M_TAG, NULL, NULL) >= 0 || ZFIND(c->low, ZH_WHERE, 0, NULL, NULL) >= 0;
    if (lat_q) {
        out->intent = CXR_INTENT_LATERALITY;
        return CXR_OK;
    }
    if (out->n_findings > 0) {
        out->intent = out->n_findings > 1 ? CXR_INTENT_MULTI : CXR_INTENT_PRESENCE;
        return CXR_OK;
    }
    int normal = no_finding || EFIND(EN_NORMAL, M_TAG, NULL, NULL) >= 0 || ZFIND(c->zm, ZH_NORMAL, 0, NULL, NULL) >= 0;
    if (no_finding) {
        out->intent = CXR_INTENT_OVERVIEW;
        out->overview_normal = 1;
        return CXR_OK;
    }
    if (en_open_vocab(c, out) || zh_open_vocab(c, out)) {
        out->intent = CXR_INTENT_PRESENCE;
        return CXR_OK;
    }
    if (EFIND(EN_OVERVIEW, M_TAG, NULL, NULL) >= 0 || ZFIND(c->zm, ZH_OVERVIEW, 0, NULL, NULL) >= 0) {
        out->intent = CXR_INTENT_OVERVIEW;
        out->overview_normal = normal;
        return CXR_OK;
    }
    refuse_msg(out, "Refused: no chest radiograph finding or question could be recognised in this text.",
               "已拒绝：未能识别出关于胸片的表现或问题。");
    return CXR_OK;
}
