/*
 * sr_writer.cpp — the cxrvqa Structured Report (cxr_sr.h): builds it with
 * DCMTK's TID 1500 classes (dcmsr/cmr), writes it atomically, reads it back
 * and renders it as HTML. It owns the codes and layout of the report, the
 * copy of patient/study attributes from the source and the UIDs it mints. It
 * must not read or parse the source image (ingestion captured what it needs in
 * cxr_source), decode pixels, decide findings or talk to the PACS; nothing
 * read from the source ever becomes part of a file name. Every entry point catches
 * every exception; DCMTK conditions become CXR_ERR_* codes here.
 */
#include "cxr_sr.h"
#include "cxr_util.h"
#include "cxr_sha256.h"
#include "source_tags.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcostrma.h"
#include "dcmtk/dcmsr/dsrdoc.h"
#include "dcmtk/dcmsr/codes/dcm.h"
#include "dcmtk/dcmsr/codes/umls.h"
#include "dcmtk/dcmsr/cmr/init.h"
#include "dcmtk/dcmsr/cmr/tid1500.h"
#include "dcmtk/oflog/oflog.h"

#include <fcntl.h>
#include <sys/random.h>
#include <sys/stat.h>
#include <unistd.h>

#include <cerrno>
#include <cmath>
#include <cstdarg>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <ctime>
#include <new>
#include <sstream>
#include <string>
#include <vector>

namespace {

/* ------------------------------------------------------------------------
 * Codes. Standard ones come from DCMTK's generated tables; the private ones
 * live in the 99CXRVQA scheme, declared in the Coding Scheme Identification
 * Sequence of every report.
 */
const char *const PRIV = "99CXRVQA";
const DSRBasicCodedEntry CODE_PROCEDURE("399208008", "SCT", "Plain chest X-ray");
const DSRBasicCodedEntry CODE_PRESENCE("705057003", "SCT", "Presence");
const DSRBasicCodedEntry CODE_PRESENT("52101004", "SCT", "Present");
const DSRBasicCodedEntry CODE_ABSENT("272519000", "SCT", "Absent");
const DSRBasicCodedEntry CODE_UNDETERMINED("373068000", "SCT", "Undetermined");
const DSRBasicCodedEntry CODE_PROBABILITY("122157", "DCM", "Probability");
const DSRBasicCodedEntry CODE_THRESHOLD("threshold", PRIV, "Decision threshold");
const DSRBasicCodedEntry CODE_CALIBRATION("calibration", PRIV, "Probability calibration");
const DSRBasicCodedEntry CODE_ASSESSMENT("assessment", PRIV, "Assessment");
const size_t MAX_NOTE = 1024;
const DSRBasicCodedEntry CODE_QUESTION("question", PRIV, "Question");
const DSRBasicCodedEntry CODE_ANSWER("answer", PRIV, "Answer");

const char *const TEXT_CALIBRATED = "calibrated probability";
const char *const TEXT_UNCALIBRATED = "uncalibrated model score, not a calibrated probability";

const size_t MAX_SHORT = 64;     /* names, versions, manufacturer, serial */
const size_t MAX_UID_ROOT = 40;  /* leaves >= 23 random digits in a 64-char UID */

struct Init {
    Init() {
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
        CMR_ContentMappingResource::initializeAllContextGroups();
    }
};

void init_once() {
    static Init once; /* C++11: thread-safe initialisation */
    (void)once;
}

void copy_str(char *dst, size_t n, const std::string &s) {
    if (!n) return;
    size_t k = s.size() < n - 1 ? s.size() : n - 1;
    /* never cut a UTF-8 sequence in half */
    while (k > 0 && k < s.size() && ((unsigned char)s[k] & 0xC0) == 0x80) k--;
    memcpy(dst, s.data(), k);
    dst[k] = '\0';
}

/* ------------------------------------------------------------------------
 * Validation of caller strings.
 */

/* Valid UTF-8 of n bytes. controls: CTL_NONE refuses C0/C1 controls and DEL,
 * CTL_LINES also allows TAB, LF, CR, CTL_ANY allows all (source values, copied
 * as they are). Sets *nchars to the number of code points if not NULL. */
enum { CTL_NONE, CTL_LINES, CTL_ANY };
bool utf8_ok(const char *s, size_t nbytes, int controls, size_t *nchars) {
    const unsigned char *p = (const unsigned char *)s, *end = p + nbytes;
    size_t n = 0;
    while (p < end) {
        unsigned c = *p;
        int len = 0;
        unsigned cp = 0;
        if (c < 0x80) {
            bool ctl = c < 0x20 || c == 0x7F;
            bool line = c == '\t' || c == '\n' || c == '\r';
            if (ctl && !(controls == CTL_ANY || (controls == CTL_LINES && line))) return false;
            p++;
            n++;
            continue;
        }
        if ((c & 0xE0) == 0xC0) len = 2, cp = c & 0x1F;
        else if ((c & 0xF0) == 0xE0) len = 3, cp = c & 0x0F;
        else if ((c & 0xF8) == 0xF0) len = 4, cp = c & 0x07;
        else return false;
        if (end - p < len) return false;
        for (int i = 1; i < len; i++) {
            if ((p[i] & 0xC0) != 0x80) return false;
            cp = (cp << 6) | (p[i] & 0x3F);
        }
        if ((len == 2 && cp < 0x80) || (len == 3 && cp < 0x800) || (len == 4 && cp < 0x10000) ||
            cp > 0x10FFFF || (cp >= 0xD800 && cp <= 0xDFFF) || (controls != CTL_ANY && cp >= 0x80 && cp < 0xA0))
            return false;
        p += len;
        n++;
    }
    if (nchars) *nchars = n;
    return true;
}

bool is_ascii(const std::string &s) {
    for (unsigned char c : s)
        if (c >= 0x80) return false;
    return true;
}

/* A UID: digits and dots, 1..64 characters, no empty component. strict also
 * forbids leading zeros (our own roots and series); source UIDs from the
 * field are accepted with them (the source's fault, harmless to copy). */
bool uid_ok(const char *s, size_t n, bool strict) {
    if (n == 0 || n > 64) return false;
    size_t comp = 0;
    for (size_t i = 0; i <= n; i++) {
        char c = i < n ? s[i] : '.';
        if (c == '.') {
            if (comp == 0) return false;
            if (strict && comp > 1 && s[i - comp] == '0') return false;
            comp = 0;
        } else if (c >= '0' && c <= '9') {
            comp++;
        } else {
            return false;
        }
    }
    return true;
}

int check_short(const char *what, const char *s, bool required, char *err, size_t errlen) {
    if (!s || !*s) {
        if (required) return cxr_fail(err, errlen, CXR_ERR_ARG, "%s is required", what);
        return CXR_OK;
    }
    size_t nch = 0;
    if (strlen(s) > MAX_SHORT || !utf8_ok(s, strlen(s), CTL_NONE, &nch))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: not UTF-8 text of at most %zu bytes without control characters",
                    what, MAX_SHORT);
    if (strchr(s, '\\')) return cxr_fail(err, errlen, CXR_ERR_ARG, "%s contains '\\' (a DICOM value separator)", what);
    return CXR_OK;
}

int check_text(const char *what, const char *s, bool required, char *err, size_t errlen) {
    if (!s || !*s) {
        if (required) return cxr_fail(err, errlen, CXR_ERR_ARG, "%s is required", what);
        return CXR_OK;
    }
    if (strlen(s) > CXR_SR_MAX_TEXT || !utf8_ok(s, strlen(s), CTL_LINES, NULL))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: not UTF-8 text of at most %d bytes (control characters other than TAB, LF, CR refused)",
                    what, CXR_SR_MAX_TEXT);
    return CXR_OK;
}

int check_request(const cxr_sr_request *r, char *err, size_t errlen) {
    if (!r) return cxr_fail(err, errlen, CXR_ERR_ARG, "request is NULL");
    if (!r->source) return cxr_fail(err, errlen, CXR_ERR_ARG, "source is required (the ingested image's cxr_meta.source)");
    int rc;
    if ((rc = check_text("question", r->question, true, err, errlen))) return rc;
    if ((rc = check_text("answer_text", r->answer_text, true, err, errlen))) return rc;
    if ((rc = check_text("parameters", r->parameters, false, err, errlen))) return rc;
    if (r->language && strcmp(r->language, "en") && strcmp(r->language, "zh"))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "language must be \"en\" or \"zh\"");
    if ((rc = check_short("algorithm_name", r->algorithm_name, true, err, errlen))) return rc;
    if ((rc = check_short("algorithm_version", r->algorithm_version, true, err, errlen))) return rc;
    if ((rc = check_short("prompt_set_version", r->prompt_set_version, false, err, errlen))) return rc;
    if ((rc = check_short("manufacturer", r->manufacturer, false, err, errlen))) return rc;
    if ((rc = check_short("device_serial", r->device_serial, false, err, errlen))) return rc;
    if (r->model_sha256 && *r->model_sha256) {
        const char *h = r->model_sha256;
        bool ok = strlen(h) == 64;
        for (size_t i = 0; ok && i < 64; i++) ok = (h[i] >= '0' && h[i] <= '9') || (h[i] >= 'a' && h[i] <= 'f') || (h[i] >= 'A' && h[i] <= 'F');
        if (!ok) return cxr_fail(err, errlen, CXR_ERR_ARG, "model_sha256 must be 64 hexadecimal digits");
    }
    if (r->uid_root && (!uid_ok(r->uid_root, strlen(r->uid_root), true) || strlen(r->uid_root) > MAX_UID_ROOT))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "uid_root must be a valid UID root of at most %zu characters", MAX_UID_ROOT);
    if (r->series_uid && !uid_ok(r->series_uid, strlen(r->series_uid), true))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "series_uid is not a valid UID");
    if (r->series_number < 0 || r->instance_number < 0)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "series_number and instance_number must not be negative");
    if (!r->findings || r->n_findings < 1 || r->n_findings > CXR_SR_MAX_FINDINGS)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "n_findings must be 1..%d with findings set", CXR_SR_MAX_FINDINGS);
    for (int i = 0; i < r->n_findings; i++) {
        const cxr_sr_finding *f = &r->findings[i];
        const char *nm = f->name;
        size_t nl = nm ? strlen(nm) : 0;
        bool ok = nl >= 1 && nl <= 63;
        for (size_t k = 0; ok && k < nl; k++) {
            char c = nm[k];
            ok = (c >= 'a' && c <= 'z') || (c >= 'A' && c <= 'Z') || (c >= '0' && c <= '9') || c == '_' || c == '.' || c == '-';
        }
        if (!ok) return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d: name must match [A-Za-z0-9_.-]{1,63}", i);
        for (int j = 0; j < i; j++)
            if (!strcmp(r->findings[j].name, nm)) return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d: name \"%s\" repeated", i, nm);
        size_t nch = 0;
        if (!f->display || !*f->display || strlen(f->display) > 95 || !utf8_ok(f->display, strlen(f->display), CTL_NONE, &nch) || nch > 64 ||
            strchr(f->display, '\\'))
            return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d (%s): display must be 1..64 characters (95 bytes) of UTF-8 text", i, nm);
        if (f->snomed && *f->snomed) {
            size_t sl = strlen(f->snomed);
            ok = sl >= 6 && sl <= 18 && f->snomed[0] != '0';
            for (size_t k = 0; ok && k < sl; k++) ok = f->snomed[k] >= '0' && f->snomed[k] <= '9';
            if (!ok) return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d (%s): snomed must be a SNOMED CT id (6..18 digits)", i, nm);
        }
        /* read as an int: C callers can store any value, and loading an
           out-of-range enum is undefined in C++ */
        static_assert(sizeof(cxr_sr_presence) == sizeof(int), "enum is an int");
        int presence;
        memcpy(&presence, &f->presence, sizeof presence);
        if (presence != CXR_SR_PRESENT && presence != CXR_SR_ABSENT && presence != CXR_SR_INDETERMINATE)
            return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d (%s): presence %d unknown", i, nm, presence);
        if (f->note && (strlen(f->note) > MAX_NOTE || !utf8_ok(f->note, strlen(f->note), CTL_NONE, NULL)))
            return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d (%s): note must be UTF-8 text of at most %zu bytes", i, nm,
                        MAX_NOTE);
        if (!(f->probability >= 0.0 && f->probability <= 1.0) || !(f->threshold >= 0.0 && f->threshold <= 1.0))
            return cxr_fail(err, errlen, CXR_ERR_ARG, "finding %d (%s): probability and threshold must be in [0, 1]", i, nm);
    }
    return CXR_OK;
}

/* ------------------------------------------------------------------------
 * UIDs. New ones are <root>.<random decimal>, one component of up to 39
 * digits from 128 random bits, cut to fit 64 characters (>= 23 digits).
 * The device observer UID is <root>.9.<64-bit hash of the algorithm>: the
 * same algorithm build is the same device in every report.
 */
int random_uid(const std::string &root, std::string &out, char *err, size_t errlen) {
    unsigned char rnd[16];
    size_t got = 0;
    while (got < sizeof rnd) {
        ssize_t k = getrandom(rnd + got, sizeof rnd - got, 0);
        if (k < 0) {
            if (errno == EINTR) continue;
            return cxr_fail(err, errlen, CXR_ERR_SR, "getrandom failed: %s", strerror(errno));
        }
        got += (size_t)k;
    }
    unsigned __int128 v = 0;
    for (unsigned char b : rnd) v = (v << 8) | b;
    char digits[48];
    int n = 0;
    do {
        digits[n++] = (char)('0' + (int)(v % 10));
        v /= 10;
    } while (v && n < 47);
    std::string dec;
    for (int i = n - 1; i >= 0; i--) dec += digits[i];
    size_t room = 64 - root.size() - 1;
    if (dec.size() > room) dec.resize(room);
    out = root + "." + dec;
    return CXR_OK;
}

/* One SR series per (study, model): <root>.8.<decimal of the first 16 bytes
 * of SHA-256("cxrvqa-sr-series\0" study "\0" model_sha256 lowercased)>, cut
 * to fit 64 characters (>= 21 digits). Any run, process or machine that
 * answers about the same study with the same model file lands in the same
 * series. */
std::string derived_series_uid(const std::string &root, const std::string &study, const char *model_sha256) {
    cxr_sha256_ctx c;
    unsigned char md[32];
    cxr_sha256_init(&c);
    cxr_sha256_update(&c, "cxrvqa-sr-series", 17); /* with its NUL */
    cxr_sha256_update(&c, study.data(), study.size());
    cxr_sha256_update(&c, "", 1);
    for (const char *p = model_sha256; *p; p++) {
        char lc = (char)(*p >= 'A' && *p <= 'F' ? *p - 'A' + 'a' : *p);
        cxr_sha256_update(&c, &lc, 1);
    }
    cxr_sha256_final(&c, md);
    unsigned __int128 v = 0;
    for (int i = 0; i < 16; i++) v = (v << 8) | md[i];
    std::string dec;
    do {
        dec.insert(dec.begin(), (char)('0' + (int)(v % 10)));
        v /= 10;
    } while (v);
    size_t room = 64 - root.size() - 3;
    if (dec.size() > room) dec.resize(room);
    while (dec.size() > 1 && dec[0] == '0') dec.erase(0, 1); /* no leading zero in a component */
    return root + ".8." + dec;
}

std::string device_uid(const std::string &root, const cxr_sr_request *r) {
    uint64_t h = 1469598103934665603ULL; /* FNV-1a 64 */
    auto mix = [&h](const char *s) {
        for (const unsigned char *p = (const unsigned char *)(s ? s : ""); *p; p++) h = (h ^ *p) * 1099511628211ULL;
        h = (h ^ 0xFF) * 1099511628211ULL;
    };
    mix(r->algorithm_name);
    mix(r->algorithm_version);
    mix(r->model_sha256);
    char buf[32];
    snprintf(buf, sizeof buf, "%llu", (unsigned long long)h);
    return root + ".9." + buf;
}

/* DS holds 16 characters: the most digits that fit (the exact double goes
 * into Floating Point Value beside it). */
std::string fmt_ds(double v) {
    char buf[40];
    for (int p = 15; p >= 1; p--) {
        snprintf(buf, sizeof buf, "%.*g", p, v);
        if (strlen(buf) <= 16) break;
    }
    return buf;
}

void now_strings(std::string &date, std::string &time, std::string &tz) {
    struct timespec ts;
    clock_gettime(CLOCK_REALTIME, &ts);
    struct tm tm;
    localtime_r(&ts.tv_sec, &tm);
    char b[32];
    strftime(b, sizeof b, "%Y%m%d", &tm);
    date = b;
    snprintf(b, sizeof b, "%02d%02d%02d.%06ld", tm.tm_hour, tm.tm_min, tm.tm_sec, ts.tv_nsec / 1000);
    time = b;
    strftime(b, sizeof b, "%z", &tm);
    tz = b;
}

/* ------------------------------------------------------------------------
 * The source image: ingestion's cxr_source, put back into a data set that
 * holds only those attributes, so that DCMTK's image library entry and the
 * header copy read what they read from the parsed file before.
 */
const DcmTagKey COPIED[] = {
#define CXR_KEY(g, e, field) DcmTagKey(g, e),
    CXR_SOURCE_COPIED(CXR_KEY)
#undef CXR_KEY
};

std::string value_of(const cxr_source *s, cxr_attr a) {
    int n = 0;
    const char *v = cxr_source_value(s, a, &n);
    return v ? std::string(v, (size_t)n) : std::string();
}

int put_attr(DcmItem *it, const cxr_source *s, cxr_attr a, const DcmTagKey &key, char *err, size_t errlen) {
    if (a.off < 0) return CXR_OK;
    if (a.len < 0 || a.off + a.len >= CXR_SOURCE_POOL)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "source %s: handle outside the pool", DcmTag(key).getTagName());
    std::string v = value_of(s, a);
    /* putString parses numbers for the binary VRs (Rows, Columns) */
    OFCondition c = it->putAndInsertString(DcmTag(key), v.data(), (Uint32)v.size());
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "cannot copy source %s (%s)", DcmTag(key).getTagName(), c.text());
    return CXR_OK;
}

int put_code(DcmItem *parent, const DcmTagKey &seq, const cxr_source *s, const cxr_code_attrs *code, char *err,
             size_t errlen) {
    DcmItem *item = NULL;
    OFCondition c = parent->findOrCreateSequenceItem(seq, item, -2 /* append */);
    if (c.bad() || !item) return cxr_fail(err, errlen, CXR_ERR_SR, "cannot copy source %s (%s)", DcmTag(seq).getTagName(), c.text());
    int rc;
#define CXR_PUT(g, e, field) \
    if ((rc = put_attr(item, s, code->field, DcmTagKey(g, e), err, errlen))) return rc;
    CXR_SOURCE_CODE(CXR_PUT)
#undef CXR_PUT
    return CXR_OK;
}

bool code_present(const cxr_code_attrs *c) {
    bool any = false;
#define CXR_ANY(g, e, field) any = any || c->field.off >= 0;
    CXR_SOURCE_CODE(CXR_ANY)
#undef CXR_ANY
    return any;
}

int load_source(const cxr_source *src, DcmDataset &ds, char *err, size_t errlen) {
    if (!src->valid) return cxr_fail(err, errlen, CXR_ERR_SR, "source is not a DICOM image (no data set was read from it)");
    if (src->overflow)
        return cxr_fail(err, errlen, CXR_ERR_SR, "source attributes exceed the %d bytes (or %d view modifiers) kept for a report",
                    CXR_SOURCE_POOL, CXR_SOURCE_MAX_MODIFIERS);
    if (src->n_view_modifiers < 0 || src->n_view_modifiers > CXR_SOURCE_MAX_MODIFIERS)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "source n_view_modifiers %d outside 0..%d", src->n_view_modifiers,
                    CXR_SOURCE_MAX_MODIFIERS);
    int rc;
#define CXR_PUT(g, e, field) \
    if ((rc = put_attr(&ds, src, src->field, DcmTagKey(g, e), err, errlen))) return rc;
    CXR_SOURCE_ATTRS(CXR_PUT)
#undef CXR_PUT
    if (code_present(&src->anatomic_region) &&
        (rc = put_code(&ds, DCM_AnatomicRegionSequence, src, &src->anatomic_region, err, errlen)))
        return rc;
    if (code_present(&src->view)) {
        if ((rc = put_code(&ds, DCM_ViewCodeSequence, src, &src->view, err, errlen))) return rc;
        DcmItem *view = NULL;
        ds.findAndGetSequenceItem(DCM_ViewCodeSequence, view, 0);
        for (int i = 0; view && i < src->n_view_modifiers; i++)
            if ((rc = put_code(view, DCM_ViewModifierCodeSequence, src, &src->view_modifiers[i], err, errlen))) return rc;
    }

    static const struct {
        DcmTagKey key;
        const char *name;
    } uids[] = {{DCM_SOPClassUID, "SOP Class UID"}, {DCM_SOPInstanceUID, "SOP Instance UID"},
                {DCM_StudyInstanceUID, "Study Instance UID"}, {DCM_SeriesInstanceUID, "Series Instance UID"}};
    for (const auto &u : uids) {
        OFString v;
        if (ds.findAndGetOFString(u.key, v).bad() || v.empty())
            return cxr_fail(err, errlen, CXR_ERR_SR, "source is not a usable DICOM image: no %s", u.name);
        if (!uid_ok(v.c_str(), v.length(), false))
            return cxr_fail(err, errlen, CXR_ERR_SR, "source %s is not a valid UID (digits and dots, at most 64)", u.name);
    }
    if (!src->has_pixel_data) return cxr_fail(err, errlen, CXR_ERR_SR, "source is not a DICOM image: no Pixel Data");
    if (src->charset_error[0]) return cxr_fail(err, errlen, CXR_ERR_SR, "%.*s", CXR_SOURCE_ERR_MAX, src->charset_error);

    /* whatever the SR copies must be UTF-8 (ingestion converted it when
       needed): refuse rather than write a patient name in an encoding the
       report does not declare */
    std::string cs = value_of(src, src->specific_character_set);
    while (!cs.empty() && cs[cs.size() - 1] == ' ') cs.erase(cs.size() - 1);
    for (const DcmTagKey &k : COPIED) {
        OFString v;
        if (ds.findAndGetOFStringArray(k, v).good() && !utf8_ok(v.c_str(), v.length(), CTL_NONE, NULL))
            return cxr_fail(err, errlen, CXR_ERR_SR,
                        "source %s holds control characters or is not valid text in its character set (\"%s\")",
                        DcmTag(k).getTagName(), cs.c_str());
    }
    return CXR_OK;
}

/* ------------------------------------------------------------------------
 * Building the document.
 */
typedef TID1500_MeasurementReport::TID1501_Measurements Group;

#define TRY_DCM(expr, what)                                                                     \
    do {                                                                                        \
        OFCondition c_ = (expr);                                                                \
        if (c_.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "cannot add %s (%s)", what, c_.text()); \
    } while (0)

int add_num(Group &g, const DSRCodedEntryValue &concept, double v, char *err, size_t errlen) {
    Group::MeasurementValue value(fmt_ds(v).c_str(),
                                  CID7181_AbstractMultiDimensionalImageModelComponentUnits(
                                      CID7181_AbstractMultiDimensionalImageModelComponentUnits::NoUnits));
    TRY_DCM(value.setFloatingPointRepresentation(v), "floating point value");
    TRY_DCM(g.addMeasurement(CID7469_GenericIntensityAndSizeMeasurements(concept), value), "measurement");
    return CXR_OK;
}

/* TID 4019 under every measurement group (after its last child). */
int add_algorithm_identification(DSRDocumentTree &tree, const cxr_sr_request *r, char *err, size_t errlen) {
    std::vector<std::pair<DSRCodedEntryValue, std::string>> items;
    items.emplace_back(CODE_DCM_AlgorithmName, r->algorithm_name);
    items.emplace_back(CODE_DCM_AlgorithmVersion, r->algorithm_version);
    if (r->model_sha256 && *r->model_sha256) items.emplace_back(CODE_DCM_AlgorithmParameters, std::string("model_sha256=") + r->model_sha256);
    if (r->prompt_set_version && *r->prompt_set_version)
        items.emplace_back(CODE_DCM_AlgorithmParameters, std::string("prompt_set_version=") + r->prompt_set_version);
    if (r->parameters && *r->parameters) items.emplace_back(CODE_DCM_AlgorithmParameters, r->parameters);

    const DSRCodedEntryValue group = CODE_DCM_MeasurementGroup;
    size_t node = tree.gotoNamedNode(group, OFTrue, OFTrue);
    int n = 0;
    while (node) {
        if (!tree.gotoChild()) return cxr_fail(err, errlen, CXR_ERR_SR, "measurement group without content");
        while (tree.gotoNext()) {
        }
        for (const auto &it : items) {
            if (!tree.addContentItem(DSRTypes::RT_hasConceptMod, DSRTypes::VT_Text, DSRTypes::AM_afterCurrent))
                return cxr_fail(err, errlen, CXR_ERR_SR, "cannot add algorithm identification");
            DSRContentItem &ci = tree.getCurrentContentItem();
            TRY_DCM(ci.setConceptName(it.first), "algorithm identification");
            TRY_DCM(ci.setStringValue(OFString(it.second.c_str()), OFFalse), "algorithm identification");
        }
        n++;
        node = tree.gotoNextNamedNode(group, OFTrue);
    }
    return n ? CXR_OK : cxr_fail(err, errlen, CXR_ERR_SR, "no measurement group in the report");
}

/* A data set item with one code. */
void put_code(DcmItem *item, const char *value, const char *scheme, const char *meaning) {
    item->putAndInsertString(DCM_CodeValue, value);
    item->putAndInsertString(DCM_CodingSchemeDesignator, scheme);
    item->putAndInsertString(DCM_CodeMeaning, meaning);
}

struct Built {
    std::vector<uint8_t> bytes;
    std::string sop_uid, series_uid;
};

/* An output stream that appends to a vector. */
class VecConsumer : public DcmConsumer {
public:
    std::vector<uint8_t> v;
    OFBool good() const override { return OFTrue; }
    OFCondition status() const override { return EC_Normal; }
    OFBool isFlushed() const override { return OFTrue; }
    offile_off_t avail() const override { return (offile_off_t)1 << 30; }
    offile_off_t write(const void *buf, offile_off_t n) override {
        const uint8_t *p = (const uint8_t *)buf;
        v.insert(v.end(), p, p + n);
        return n;
    }
    void flush() override {}
};
struct VecHolder {
    VecConsumer consumer;
};
class VecStream : private VecHolder, public DcmOutputStream {
public:
    VecStream() : VecHolder(), DcmOutputStream(&consumer) {}
    std::vector<uint8_t> &bytes() { return consumer.v; }
};

int build(const cxr_sr_request *r, Built &out, char *err, size_t errlen) {
    int rc = check_request(r, err, errlen);
    if (rc) return rc;
    init_once();

    DcmDataset source;
    if ((rc = load_source(r->source, source, err, errlen))) return rc;
    DcmDataset *sds = &source;
    OFString s_class, s_inst, s_study, s_series;
    sds->findAndGetOFString(DCM_SOPClassUID, s_class);
    sds->findAndGetOFString(DCM_SOPInstanceUID, s_inst);
    sds->findAndGetOFString(DCM_StudyInstanceUID, s_study);
    sds->findAndGetOFString(DCM_SeriesInstanceUID, s_series);

    const std::string root = r->uid_root ? r->uid_root : CXR_SR_DEFAULT_UID_ROOT;
    if ((rc = random_uid(root, out.sop_uid, err, errlen))) return rc;
    if (r->series_uid) out.series_uid = r->series_uid;
    else if (r->model_sha256 && *r->model_sha256)
        out.series_uid = derived_series_uid(root, std::string(s_study.c_str(), s_study.length()), r->model_sha256);
    else if ((rc = random_uid(root, out.series_uid, err, errlen))) return rc;
    const bool zh = r->language && !strcmp(r->language, "zh");
    const char *manufacturer = r->manufacturer && *r->manufacturer ? r->manufacturer : "cxrvqa";

    /* --- content tree: TID 1500 */
    TID1500_MeasurementReport report(CID7021_MeasurementReportDocumentTitles::ImagingMeasurementReport);
    if (zh) TRY_DCM(report.setLanguage(CID5000_Languages(DSRCodedEntryValue("zh", "RFC5646", "Chinese"))), "language");
    else TRY_DCM(report.setLanguage(CID5000_Languages::English), "language");
    TRY_DCM(report.getObservationContext().addDeviceObserver(
                device_uid(root, r).c_str(), r->algorithm_name, manufacturer, r->algorithm_name,
                r->device_serial ? r->device_serial : ""),
            "device observer");
    TRY_DCM(report.addProcedureReported(CID100_QuantitativeDiagnosticImagingProcedures(CODE_PROCEDURE)), "procedure reported");
    TID1600_ImageLibrary &lib = report.getImageLibrary();
    TRY_DCM(lib.createNewImageLibrary(), "image library");
    TRY_DCM(lib.addImageGroup(), "image library group");
    OFCondition c = lib.addImageEntry(*sds, TID1600_ImageLibrary::withAllDescriptors);
    if (c.bad() && c != CMR_EC_NoImageLibraryEntryDescriptorsToBeAdded) {
        /* odd descriptor values in the source: reference the image alone */
        TRY_DCM(lib.createNewImageLibrary(), "image library");
        TRY_DCM(lib.addImageGroup(), "image library group");
        c = lib.addImageEntry(*sds, TID1600_ImageLibrary::withoutDescriptors);
        if (c.bad() && c != CMR_EC_NoImageLibraryEntryDescriptorsToBeAdded)
            return cxr_fail(err, errlen, CXR_ERR_SR, "cannot reference the source image (%s)", c.text());
    }
    TRY_DCM(report.addQualitativeEvaluation(CODE_QUESTION, OFString(r->question), OFFalse), "question");
    TRY_DCM(report.addQualitativeEvaluation(CODE_ANSWER, OFString(r->answer_text), OFFalse), "answer");

    for (int i = 0; i < r->n_findings; i++) {
        const cxr_sr_finding *f = &r->findings[i];
        if (i > 0) TRY_DCM(report.addIndividualMeasurements(), "measurement group");
        Group &g = report.getIndividualMeasurements();
        std::string tuid;
        if ((rc = random_uid(root, tuid, err, errlen))) return rc;
        TRY_DCM(g.setTrackingIdentifier(f->name), "tracking identifier");
        TRY_DCM(g.setTrackingUniqueIdentifier(tuid.c_str()), "tracking UID");
        DSRCodedEntryValue finding = f->snomed && *f->snomed ? DSRCodedEntryValue(f->snomed, "SCT", f->display)
                                                             : DSRCodedEntryValue(f->name, PRIV, f->display);
        TRY_DCM(g.setFinding(finding), "finding");
        if ((rc = add_num(g, CODE_PROBABILITY, f->probability, err, errlen))) return rc;
        if ((rc = add_num(g, CODE_THRESHOLD, f->threshold, err, errlen))) return rc;
        const DSRBasicCodedEntry &pv = f->presence == CXR_SR_PRESENT ? CODE_PRESENT
                                       : f->presence == CXR_SR_ABSENT ? CODE_ABSENT
                                                                       : CODE_UNDETERMINED;
        TRY_DCM(g.addQualitativeEvaluation(CODE_PRESENCE, pv), "presence");
        TRY_DCM(g.addQualitativeEvaluation(CODE_CALIBRATION, OFString(f->calibrated ? TEXT_CALIBRATED : TEXT_UNCALIBRATED)),
                "calibration note");
        if (f->note && *f->note) TRY_DCM(g.addQualitativeEvaluation(CODE_ASSESSMENT, OFString(f->note)), "assessment note");
    }
    if (!report.isValid()) return cxr_fail(err, errlen, CXR_ERR_SR, "TID 1500 report incomplete");

    DSRDocument doc(DSRTypes::DT_ComprehensiveSR);
    TRY_DCM(doc.setTreeFromRootTemplate(report, OFTrue), "TID 1500 tree");
    /* DCMTK starts the tree as Enhanced SR; IHE AIR readers expect Comprehensive */
    TRY_DCM(doc.changeDocumentType(DSRTypes::DT_ComprehensiveSR), "document type");
    if ((rc = add_algorithm_identification(doc.getTree(), r, err, errlen))) return rc;

    /* --- header */
    bool ascii = is_ascii(r->question) && is_ascii(r->answer_text) && is_ascii(r->parameters ? r->parameters : "") &&
                 is_ascii(r->algorithm_name) && is_ascii(r->algorithm_version) &&
                 is_ascii(r->prompt_set_version ? r->prompt_set_version : "") && is_ascii(manufacturer) &&
                 is_ascii(r->device_serial ? r->device_serial : "");
    for (int i = 0; i < r->n_findings; i++)
        ascii = ascii && is_ascii(r->findings[i].display) && is_ascii(r->findings[i].note ? r->findings[i].note : "");
    for (const DcmTagKey &k : COPIED) {
        OFString v;
        if (sds->findAndGetOFStringArray(k, v).good() && !is_ascii(std::string(v.c_str(), v.length()))) ascii = false;
    }
    if (!ascii) TRY_DCM(doc.setSpecificCharacterSetType(DSRTypes::CS_UTF8), "Specific Character Set");

    std::string date, time, tz;
    now_strings(date, time, tz);
    char num[16];
    snprintf(num, sizeof num, "%d", r->series_number ? r->series_number : cxr_sr_series_number(r->model_sha256));
    TRY_DCM(doc.setSeriesNumber(num), "Series Number");
    /* later requests add instances to the same series: seconds since
       2020-01-01 UTC orders them as a viewer lists them */
    long inst = r->instance_number;
    if (!inst) {
        time_t t = ::time(NULL) - (time_t)1577836800;
        inst = t > 0 && t < 2147483647 ? (long)t : 1;
    }
    snprintf(num, sizeof num, "%ld", inst);
    TRY_DCM(doc.setInstanceNumber(num), "Instance Number");
    char desc[CXR_SR_SERIES_DESC_MAX];
    cxr_sr_series_description(r->algorithm_name, r->algorithm_version, r->model_sha256, desc, sizeof desc);
    TRY_DCM(doc.setSeriesDescription(desc, OFFalse), "Series Description");
    TRY_DCM(doc.setManufacturer(manufacturer, OFFalse), "Manufacturer");
    TRY_DCM(doc.setContentDate(date.c_str()), "Content Date");
    TRY_DCM(doc.setContentTime(time.c_str()), "Content Time");
    TRY_DCM(doc.setTimezoneOffsetFromUTC(tz.c_str()), "Timezone Offset From UTC");
    TRY_DCM(doc.getCurrentRequestedProcedureEvidence().addItem(s_study, s_series, s_class, s_inst), "evidence");
    DSRCodingSchemeIdentificationList &schemes = doc.getCodingSchemeIdentification();
    TRY_DCM(schemes.addItem(PRIV), "coding scheme");
    TRY_DCM(schemes.setCodingSchemeName("cxrvqa private codes"), "coding scheme");
    TRY_DCM(schemes.setCodingSchemeResponsibleOrganization("cxrvqa project"), "coding scheme");
    TRY_DCM(doc.completeDocument(), "completion flag");

    DcmFileFormat ff;
    DcmDataset *ds = ff.getDataset();
    c = doc.write(*ds);
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "cannot write the SR data set (%s)", c.text());

    /* our UIDs, the source's patient and study */
    TRY_DCM(ds->putAndInsertString(DCM_SOPInstanceUID, out.sop_uid.c_str()), "SOP Instance UID");
    TRY_DCM(ds->putAndInsertString(DCM_SeriesInstanceUID, out.series_uid.c_str()), "Series Instance UID");
    for (const DcmTagKey &k : COPIED) {
        if (sds->tagExists(k)) TRY_DCM(sds->findAndInsertCopyOfElement(k, ds, OFTrue), "patient/study attribute");
    }

    /* Contributing Equipment: the algorithm (IHE AIR, as MONAI Deploy writes it) */
    DcmItem *eq = NULL;
    TRY_DCM(ds->findOrCreateSequenceItem(DCM_ContributingEquipmentSequence, eq, 0), "Contributing Equipment");
    DcmItem *purpose = NULL;
    TRY_DCM(eq->findOrCreateSequenceItem(DCM_PurposeOfReferenceCodeSequence, purpose, 0), "Purpose of Reference");
    put_code(purpose, "Newcode1", "99IHE", "Processing Algorithm");
    eq->putAndInsertString(DCM_Manufacturer, manufacturer);
    eq->putAndInsertString(DCM_ManufacturerModelName, r->algorithm_name);
    eq->putAndInsertString(DCM_SoftwareVersions, r->algorithm_version);
    if (r->device_serial && *r->device_serial) eq->putAndInsertString(DCM_DeviceSerialNumber, r->device_serial);
    eq->putAndInsertString(DCM_ContributionDateTime, (date + time + tz).c_str());
    eq->putAndInsertString(DCM_ContributionDescription, "automated chest X-ray question answering; results unverified");

    VecStream os;
    ff.transferInit();
    c = ff.write(os, EXS_LittleEndianExplicit, EET_ExplicitLength, NULL, EGL_recalcGL, EPD_noChange, 0, 0, 0,
                 EWM_createNewMeta);
    ff.transferEnd();
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "cannot encode the SR (%s)", c.text());
    out.bytes.swap(os.bytes());
    return CXR_OK;
}

/* ------------------------------------------------------------------------
 * Files: written under a temporary name in the target directory, synced,
 * given their mode, renamed. Nothing partial is ever visible under the final
 * name; on failure the temporary file is removed.
 */
int write_atomic(const std::string &final_path, const void *data, size_t n, char *err, size_t errlen) {
    size_t slash = final_path.rfind('/');
    std::string dir = slash == std::string::npos ? "." : final_path.substr(0, slash ? slash : 1);
    std::string tmp = dir + "/.cxrsr-tmp-XXXXXX";
    std::vector<char> name(tmp.begin(), tmp.end());
    name.push_back('\0');
    int fd = mkstemp(name.data());
    if (fd < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot create a file (%s)", dir.c_str(), strerror(errno));
    const uint8_t *p = (const uint8_t *)data;
    size_t left = n;
    int e = 0;
    while (left > 0) {
        ssize_t k = write(fd, p, left);
        if (k < 0) {
            if (errno == EINTR) continue;
            e = errno;
            break;
        }
        p += k;
        left -= (size_t)k;
    }
    if (!e && fsync(fd) != 0) e = errno;
    if (!e && fchmod(fd, 0644) != 0) e = errno;
    if (close(fd) != 0 && !e) e = errno;
    if (!e && rename(name.data(), final_path.c_str()) != 0) e = errno;
    if (e) {
        unlink(name.data());
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot write (%s)", final_path.c_str(), strerror(e));
    }
    int dfd = open(dir.c_str(), O_RDONLY | O_DIRECTORY | O_CLOEXEC);
    if (dfd >= 0) {
        fsync(dfd);
        close(dfd);
    }
    return CXR_OK;
}

void fill_ids(cxr_sr_ids *ids, const Built &b) {
    if (!ids) return;
    copy_str(ids->sop_instance_uid, sizeof ids->sop_instance_uid, b.sop_uid);
    copy_str(ids->series_instance_uid, sizeof ids->series_instance_uid, b.series_uid);
}

int write_file_impl(const cxr_sr_request *r, const char *out_dir, cxr_sr_ids *ids, char *path_out, size_t path_len,
                    char *err, size_t errlen) {
    if (!out_dir || !*out_dir) return cxr_fail(err, errlen, CXR_ERR_ARG, "out_dir is required");
    struct stat st;
    if (stat(out_dir, &st) != 0 || !S_ISDIR(st.st_mode))
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: not a directory", out_dir);
    Built b;
    int rc = build(r, b, err, errlen);
    if (rc) return rc;
    std::string dir = out_dir;
    while (dir.size() > 1 && dir[dir.size() - 1] == '/') dir.erase(dir.size() - 1);
    std::string path = (dir == "/" ? "" : dir) + "/" + b.sop_uid + ".dcm";
    if (path_out && path.size() + 1 > path_len)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "path_out holds %zu bytes, %zu needed", path_len, path.size() + 1);
    if ((rc = write_atomic(path, b.bytes.data(), b.bytes.size(), err, errlen))) return rc;
    fill_ids(ids, b);
    if (path_out) copy_str(path_out, path_len, path);
    return CXR_OK;
}

int write_buffer_impl(const cxr_sr_request *r, cxr_sr_ids *ids, uint8_t **buf, size_t *len, char *err, size_t errlen) {
    Built b;
    int rc = build(r, b, err, errlen);
    if (rc) return rc;
    uint8_t *p = (uint8_t *)malloc(b.bytes.size());
    if (!p) return cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory (%zu bytes)", b.bytes.size());
    memcpy(p, b.bytes.data(), b.bytes.size());
    *buf = p;
    *len = b.bytes.size();
    fill_ids(ids, b);
    return CXR_OK;
}

/* ------------------------------------------------------------------------
 * Reading back.
 */
int open_sr(const char *path, DcmFileFormat &ff, DSRDocument &doc, char *err, size_t errlen) {
    if (!path || !*path) return cxr_fail(err, errlen, CXR_ERR_ARG, "path is required");
    int fd = open(path, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", path, strerror(errno));
    close(fd);
    init_once();
    OFCondition c = ff.loadFile(OFFilename(path));
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "%s: not a DICOM file (%s)", path, c.text());
    c = doc.read(*ff.getDataset());
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "%s: not a structured report (%s)", path, c.text());
    return CXR_OK;
}

bool same(const DSRCodedEntryValue &v, const DSRBasicCodedEntry &e) {
    return v.getCodeValue() == e.CodeValue && v.getCodingSchemeDesignator() == e.CodingSchemeDesignator;
}

std::string str(const OFString &s) { return std::string(s.c_str(), s.length()); }

double num_value(const DSRNumericMeasurementValue &nv) {
    Float64 d = 0;
    if (nv.getFloatingPointRepresentation(d).good()) return d;
    return strtod(nv.getNumericValue().c_str(), NULL);
}

int read_impl(const char *path, cxr_sr_summary *out, char *err, size_t errlen) {
    if (!out) return cxr_fail(err, errlen, CXR_ERR_ARG, "out is NULL");
    memset(out, 0, sizeof *out);
    DcmFileFormat ff;
    DSRDocument doc;
    int rc = open_sr(path, ff, doc, err, errlen);
    if (rc) return rc;
    OFString v;
    doc.getSOPInstanceUID(v);
    copy_str(out->sop_instance_uid, sizeof out->sop_instance_uid, str(v));
    doc.getSeriesInstanceUID(v);
    copy_str(out->series_instance_uid, sizeof out->series_instance_uid, str(v));
    doc.getStudyInstanceUID(v);
    copy_str(out->study_uid, sizeof out->study_uid, str(v));
    copy_str(out->completion, sizeof out->completion, DSRTypes::completionFlagToEnumeratedValue(doc.getCompletionFlag()));
    copy_str(out->verification, sizeof out->verification, DSRTypes::verificationFlagToEnumeratedValue(doc.getVerificationFlag()));

    DSRDocumentTree &tree = doc.getTree();
    if (!tree.gotoRoot()) return cxr_fail(err, errlen, CXR_ERR_SR, "%s: empty content tree", path);
    if (!same(tree.getCurrentContentItem().getConceptName(), CODE_DCM_ImagingMeasurementReport))
        return cxr_fail(err, errlen, CXR_ERR_SR, "%s: not a TID 1500 Imaging Measurement Report", path);

    size_t group_level = 0;
    cxr_sr_read_finding *f = NULL;
    do {
        const DSRContentItem &ci = tree.getCurrentContentItem();
        const DSRCodedEntryValue &cn = ci.getConceptName();
        size_t level = tree.getLevel();
        if (f && level <= group_level) f = NULL; /* left the group */
        DSRTypes::E_ValueType vt = ci.getValueType();
        if (vt == DSRTypes::VT_Container && same(cn, CODE_DCM_MeasurementGroup)) {
            if (out->n_findings >= CXR_SR_MAX_FINDINGS)
                return cxr_fail(err, errlen, CXR_ERR_SR, "%s: more than %d measurement groups", path, CXR_SR_MAX_FINDINGS);
            f = &out->findings[out->n_findings++];
            f->probability = f->threshold = NAN;
            f->presence = CXR_SR_INDETERMINATE;
            group_level = level;
        } else if (vt == DSRTypes::VT_Image) {
            const DSRImageReferenceValue &img = ci.getImageReference();
            copy_str(out->source_sop_class, sizeof out->source_sop_class, str(img.getSOPClassUID()));
            copy_str(out->source_sop_uid, sizeof out->source_sop_uid, str(img.getSOPInstanceUID()));
        } else if (vt == DSRTypes::VT_Code && same(cn, CODE_DCM_LanguageOfContentItemAndDescendants)) {
            copy_str(out->language, sizeof out->language, str(ci.getCodeValue().getCodeValue()));
        } else if (vt == DSRTypes::VT_Text && same(cn, CODE_QUESTION)) {
            copy_str(out->question, sizeof out->question, str(ci.getStringValue()));
        } else if (vt == DSRTypes::VT_Text && same(cn, CODE_ANSWER)) {
            copy_str(out->answer, sizeof out->answer, str(ci.getStringValue()));
        } else if (vt == DSRTypes::VT_Text && same(cn, CODE_DCM_AlgorithmName)) {
            copy_str(out->algorithm_name, sizeof out->algorithm_name, str(ci.getStringValue()));
        } else if (vt == DSRTypes::VT_Text && same(cn, CODE_DCM_AlgorithmVersion)) {
            copy_str(out->algorithm_version, sizeof out->algorithm_version, str(ci.getStringValue()));
        } else if (vt == DSRTypes::VT_Text && same(cn, CODE_DCM_AlgorithmParameters)) {
            std::string p = str(ci.getStringValue());
            if (p.compare(0, 13, "model_sha256=") == 0) copy_str(out->model_sha256, sizeof out->model_sha256, p.substr(13));
        } else if (f) {
            if (vt == DSRTypes::VT_Text && same(cn, CODE_DCM_TrackingIdentifier)) {
                copy_str(f->name, sizeof f->name, str(ci.getStringValue()));
            } else if (vt == DSRTypes::VT_UIDRef && same(cn, CODE_DCM_TrackingUniqueIdentifier)) {
                copy_str(f->tracking_uid, sizeof f->tracking_uid, str(ci.getStringValue()));
            } else if (vt == DSRTypes::VT_Code && same(cn, CODE_DCM_Finding)) {
                const DSRCodedEntryValue &cv = ci.getCodeValue();
                copy_str(f->code, sizeof f->code, str(cv.getCodeValue()));
                copy_str(f->scheme, sizeof f->scheme, str(cv.getCodingSchemeDesignator()));
                copy_str(f->display, sizeof f->display, str(cv.getCodeMeaning()));
            } else if (vt == DSRTypes::VT_Code && same(cn, CODE_PRESENCE)) {
                const DSRCodedEntryValue &cv = ci.getCodeValue();
                f->presence = same(cv, CODE_PRESENT) ? CXR_SR_PRESENT : same(cv, CODE_ABSENT) ? CXR_SR_ABSENT : CXR_SR_INDETERMINATE;
            } else if (vt == DSRTypes::VT_Num && same(cn, CODE_PROBABILITY)) {
                f->probability = num_value(ci.getNumericValue());
            } else if (vt == DSRTypes::VT_Num && same(cn, CODE_THRESHOLD)) {
                f->threshold = num_value(ci.getNumericValue());
            } else if (vt == DSRTypes::VT_Text && same(cn, CODE_CALIBRATION)) {
                f->calibrated = str(ci.getStringValue()) == TEXT_CALIBRATED;
            }
        }
    } while (tree.iterate());
    if (out->n_findings == 0) return cxr_fail(err, errlen, CXR_ERR_SR, "%s: no measurement group", path);
    return CXR_OK;
}

int html_impl(const char *sr_path, const char *html_path, char *err, size_t errlen) {
    if (!html_path || !*html_path) return cxr_fail(err, errlen, CXR_ERR_ARG, "html_path is required");
    DcmFileFormat ff;
    DSRDocument doc;
    int rc = open_sr(sr_path, ff, doc, err, errlen);
    if (rc) return rc;
    std::ostringstream os;
    OFCondition c = doc.renderHTML(os, DSRTypes::HF_renderFullData | DSRTypes::HF_renderAllCodes);
    if (c.bad()) return cxr_fail(err, errlen, CXR_ERR_SR, "%s: cannot render HTML (%s)", sr_path, c.text());
    std::string html = os.str();
    return write_atomic(html_path, html.data(), html.size(), err, errlen);
}

} // namespace

/* ------------------------------------------------------------------------
 * The C border.
 */
#define BORDER(call)                                                                     \
    try {                                                                                \
        return call;                                                                     \
    } catch (const std::bad_alloc &) {                                                   \
        return cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");                       \
    } catch (const std::exception &e) {                                                  \
        return cxr_fail(err, errlen, CXR_ERR_INTERNAL, "internal error: %s", e.what());     \
    } catch (...) {                                                                      \
        return cxr_fail(err, errlen, CXR_ERR_INTERNAL, "internal error");                   \
    }

extern "C" int cxr_sr_series_number(const char *model_sha256) {
    if (!model_sha256 || strlen(model_sha256) != 64) return 9001; /* no model identity: the old fixed number */
    unsigned h = 0;
    for (int i = 0; i < 8; i++) {
        char c = model_sha256[i];
        int d = c >= '0' && c <= '9' ? c - '0' : c >= 'a' && c <= 'f' ? c - 'a' + 10 : c >= 'A' && c <= 'F' ? c - 'A' + 10 : 0;
        h = h << 4 | (unsigned)d;
    }
    return 9100 + (int)(h % 900u);
}

extern "C" void cxr_sr_series_description(const char *algorithm_name, const char *algorithm_version,
                                          const char *model_sha256, char *out, size_t n) {
    if (!out || !n) return;
    char sha[13] = "";
    if (model_sha256 && strlen(model_sha256) >= 12) {
        memcpy(sha, model_sha256, 12);
        for (char &c : sha) c = (char)(c >= 'A' && c <= 'F' ? c - 'A' + 'a' : c);
        sha[12] = '\0';
    }
    /* LO: 64 characters; the name and version are cut first, the hash kept */
    char head[48];
    snprintf(head, sizeof head, "AI %s %s", algorithm_name ? algorithm_name : "cxrvqa",
             algorithm_version ? algorithm_version : "");
    if (sha[0]) snprintf(out, n < 65 ? n : 65, "%.34s model %s UNVERIFIED", head, sha);
    else snprintf(out, n < 65 ? n : 65, "%.53s UNVERIFIED", head);
}

extern "C" int cxr_sr_series_uid(const char *uid_root, const char *study_uid, const char *model_sha256, char out[65]) {
    if (!out) return CXR_ERR_ARG;
    out[0] = '\0';
    const std::string root = uid_root ? uid_root : CXR_SR_DEFAULT_UID_ROOT;
    if (!study_uid || !uid_ok(study_uid, strlen(study_uid), false) || !model_sha256 || strlen(model_sha256) != 64 ||
        !uid_ok(root.c_str(), root.size(), true) || root.size() > MAX_UID_ROOT)
        return CXR_ERR_ARG;
    try {
        copy_str(out, 65, derived_series_uid(root, study_uid, model_sha256));
    } catch (...) {
        return CXR_ERR_NOMEM;
    }
    return CXR_OK;
}

extern "C" cxr_sr_request cxr_sr_request_default(void) {
    cxr_sr_request r;
    memset(&r, 0, sizeof r);
    r.language = "en";
    return r;
}

extern "C" int cxr_sr_write_file(const cxr_sr_request *r, const char *out_dir, cxr_sr_ids *ids, char *path_out,
                                 size_t path_len, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (path_out && path_len) path_out[0] = '\0';
    BORDER(write_file_impl(r, out_dir, ids, path_out, path_len, err, errlen))
}

extern "C" int cxr_sr_write_buffer(const cxr_sr_request *r, cxr_sr_ids *ids, uint8_t **buf, size_t *len, char *err,
                                   size_t errlen) {
    if (err && errlen) err[0] = '\0';
    if (!buf || !len) return cxr_fail(err, errlen, CXR_ERR_ARG, "buf and len are required");
    *buf = NULL;
    *len = 0;
    BORDER(write_buffer_impl(r, ids, buf, len, err, errlen))
}

extern "C" int cxr_sr_read_file(const char *path, cxr_sr_summary *out, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    BORDER(read_impl(path, out, err, errlen))
}

extern "C" int cxr_sr_to_html(const char *sr_path, const char *html_path, char *err, size_t errlen) {
    if (err && errlen) err[0] = '\0';
    BORDER(html_impl(sr_path, html_path, err, errlen))
}
