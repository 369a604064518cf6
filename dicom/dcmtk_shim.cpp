/*
 * dcmtk_shim.cpp — the only C++ in the tree: parses DICOM with DCMTK and
 * hands plain C structs back. It owns DCMTK's global set-up (codecs, logging
 * silenced) and the translation of DCMTK conditions and C++ exceptions into
 * CXR_ERR_* codes. It must not do pixel math (pixel.c does) nor decide
 * policy (ingest.c does): it reports what the file says and decodes frame 1.
 */
#include "dcmtk_shim.h"
#include "codec_check.h"
#include "deadline.h"
#include "source_tags.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrma.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include <cstdarg>
#include <cstddef>
#include <cstdint>
#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <pthread.h>
#include <string>
#include <utility>
#include <vector>

struct shim_ds {
    DcmFileFormat ff;
    E_TransferSyntax xfer = EXS_Unknown;
    std::vector<uint16_t> mlut, vlut;
    bool abandoned = false; /* a decoder thread past its deadline owns it */
};

namespace {

/* Values longer than this are not read while parsing: the stream skips them
 * (which fails, without allocating, when the buffer is shorter than the
 * declared length) and DCMTK loads them from the buffer when asked. */
const Uint32 MAX_INLINE_VALUE = 4096;

/* ------------------------------------------------------------------------
 * A DCMTK input stream over the caller's buffer. Unlike DcmInputBufferStream
 * it can hand out a factory (a way back to a position in the buffer), so
 * DCMTK defers long values instead of allocating whatever length an element
 * declares: a 100-byte file that declares 4 GB of Pixel Data costs nothing,
 * and frame 1 is copied once, straight from the buffer. The buffer must
 * outlive the data set (it does: shim_close runs inside the load call).
 * Deflated data sets work the same way: a factory re-inflates from the start
 * of the deflated stream and skips to its position (the long values of a
 * deflated file are inflated twice; such files are rare and small).
 */
/* Four bytes of the buffer read as other bytes: the corrected length field
 * of a damaged Pixel Data element (see fix_pixel_length). at < 0: none. */
struct Patch {
    offile_off_t at = -1;
    uint8_t b[4] = {0, 0, 0, 0};
};

class MemProducer : public DcmProducer {
public:
    MemProducer(const uint8_t *p, offile_off_t n, offile_off_t pos, const Patch &fix = Patch())
        : p_(p), n_(n), pos_(pos < n ? pos : n), fix_(fix) {}
    OFBool good() const override { return status_.good(); }
    OFCondition status() const override { return status_; }
    OFBool eos() override { return pos_ >= n_; }
    offile_off_t avail() override { return n_ - pos_; }
    offile_off_t read(void *buf, offile_off_t len) override {
        if (len > n_ - pos_) len = n_ - pos_;
        if (len > 0) memcpy(buf, p_ + pos_, (size_t)len);
        for (offile_off_t k = 0; fix_.at >= 0 && k < 4; k++)
            if (fix_.at + k >= pos_ && fix_.at + k < pos_ + len) ((uint8_t *)buf)[fix_.at + k - pos_] = fix_.b[k];
        pos_ += len;
        return len;
    }
    offile_off_t skip(offile_off_t len) override {
        if (len > n_ - pos_) len = n_ - pos_;
        pos_ += len;
        return len;
    }
    void putback(offile_off_t num) override {
        if (num > pos_) {
            status_ = EC_PutbackFailed;
            return;
        }
        pos_ -= num;
    }

private:
    const uint8_t *p_;
    offile_off_t n_, pos_;
    Patch fix_;
    OFCondition status_ = EC_Normal;
};

/* Where a factory points: a byte offset in the buffer, or (filter set) an
 * offset in the inflated stream that starts at byte `at` of the buffer. */
struct MemPos {
    const uint8_t *p;
    offile_off_t n, at;
    E_StreamCompression filter;
    offile_off_t inflated;
    Patch fix;
};

class MemStream : public DcmInputStream {
public:
    MemStream(const uint8_t *p, offile_off_t n, offile_off_t start, const Patch &fix = Patch())
        : DcmInputStream(&prod_), prod_(p, n, start, fix), p_(p), n_(n), start_(start), fix_(fix) {}
    OFCondition installCompressionFilter(E_StreamCompression type) override {
        OFCondition c = DcmInputStream::installCompressionFilter(type);
        if (c.good()) {
            filter_ = type;
            filter_at_ = start_ + tell();
            filter_tell_ = tell();
        }
        return c;
    }
    DcmInputStreamFactory *newFactory() const override;

private:
    MemProducer prod_;
    const uint8_t *p_;
    offile_off_t n_, start_;
    Patch fix_;
    E_StreamCompression filter_ = ESC_none;
    offile_off_t filter_at_ = 0, filter_tell_ = 0;
};

class MemFactory : public DcmInputStreamFactory {
public:
    explicit MemFactory(const MemPos &pos) : pos_(pos) {}
    DcmInputStream *create() const override {
        MemStream *s = new MemStream(pos_.p, pos_.n, pos_.at, pos_.fix);
        if (pos_.filter != ESC_none &&
            (s->installCompressionFilter(pos_.filter).bad() || s->skip(pos_.inflated) != pos_.inflated)) {
            /* DCMTK then reads fewer bytes than it expects and reports it */
        }
        return s;
    }
    DcmInputStreamFactory *clone() const override { return new MemFactory(*this); }
    const MemPos &pos() const { return pos_; }
    /* DCMTK only stores the type; the file kind is the one that fits */
    DcmInputStreamFactoryType ident() const override { return DFT_DcmInputFileStreamFactory; }

private:
    MemPos pos_;
};

DcmInputStreamFactory *MemStream::newFactory() const {
    if (filter_ == ESC_none) return new MemFactory(MemPos{p_, n_, start_ + tell(), ESC_none, 0, fix_});
    return new MemFactory(MemPos{p_, n_, filter_at_, filter_, tell() - filter_tell_, fix_});
}

struct Init {
    Init() {
        OFLog::configure(OFLogger::OFF_LOG_LEVEL);
        DJDecoderRegistration::registerCodecs();
        DJLSDecoderRegistration::registerCodecs();
        DcmRLEDecoderRegistration::registerCodecs();
    }
};

void init_once() {
    static Init once; /* C++11: thread-safe initialisation */
    (void)once;
}

__attribute__((format(printf, 3, 4)))
void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

void getstr(DcmItem *it, const DcmTagKey &key, char *dst, size_t n) {
    OFString v;
    dst[0] = '\0';
    if (it->findAndGetOFString(key, v).good()) snprintf(dst, n, "%s", v.c_str());
}

int getus(DcmItem *it, const DcmTagKey &key, int dflt) {
    Uint16 v;
    if (it->findAndGetUint16(key, v).good()) return v;
    return dflt;
}

/* LUT Descriptor values are US or SS (PS3.3 C.11.1.1): read the 16 bits. */
bool get_desc(DcmItem *item, unsigned long i, Uint16 &v) {
    if (item->findAndGetUint16(DCM_LUTDescriptor, v, i).good()) return true;
    Sint16 s = 0;
    if (item->findAndGetSint16(DCM_LUTDescriptor, s, i).good()) {
        v = (Uint16)s;
        return true;
    }
    return false;
}

/* Copy LUT Descriptor + LUT Data of the first item of seqkey. */
int read_lut(DcmItem *ds, const DcmTagKey &seqkey, int pixel_rep, std::vector<uint16_t> &store,
             pixel_lut *lut, char *err, size_t errlen) {
    memset(lut, 0, sizeof *lut);
    DcmItem *item = NULL;
    if (ds->findAndGetSequenceItem(seqkey, item, 0).bad() || !item) return CXR_OK;
    Uint16 d0 = 0, d1 = 0, d2 = 0;
    if (!get_desc(item, 0, d0) || !get_desc(item, 1, d1) || !get_desc(item, 2, d2)) {
        seterr(err, errlen, "%s item has no valid LUT Descriptor (0028,3002)",
               seqkey == DCM_ModalityLUTSequence ? "Modality LUT Sequence" : "VOI LUT Sequence");
        return CXR_ERR_CORRUPT;
    }
    int n = d0 ? d0 : 65536;
    int bits = d2;
    if (bits < 8 || bits > 16) {
        seterr(err, errlen, "LUT Descriptor declares %d bits per entry (8..16 expected)", bits);
        return CXR_ERR_CORRUPT;
    }
    const Uint16 *data = NULL;
    unsigned long count = 0;
    DcmElement *el = NULL;
    if (item->findAndGetElement(DCM_LUTData, el).bad() || !el ||
        el->getUint16Array(OFconst_cast(Uint16 *&, data)).bad() || !data) {
        seterr(err, errlen, "LUT item has no readable LUT Data (0028,3006)");
        return CXR_ERR_CORRUPT;
    }
    count = el->getLength() / 2;
    store.assign((size_t)n, 0);
    if ((long)count >= n) {
        for (int i = 0; i < n; i++) store[i] = data[i];
    } else if (bits == 8 && (long)count * 2 >= n) {
        /* 8-bit entries packed two per OW word (PS3.3 C.11.1.1.1) */
        for (int i = 0; i < n; i++) store[i] = (uint16_t)((data[i / 2] >> ((i & 1) * 8)) & 0xff);
    } else {
        seterr(err, errlen, "LUT Data holds %lu entries, descriptor declares %d", count, n);
        return CXR_ERR_CORRUPT;
    }
    lut->n = n;
    lut->first = pixel_rep ? (int)(int16_t)d1 : (int)d1;
    lut->bits = bits;
    lut->data = store.data();
    return CXR_OK;
}

/* The Pixel Data element, or NULL when absent or not a pixel data object
 * (a fuzzed file can give tag (7FE0,0010) a VR such as US). */
DcmPixelData *pixel_data(DcmDataset *d) {
    DcmElement *el = NULL;
    if (d->findAndGetElement(DCM_PixelData, el).bad() || !el || el->ident() != EVR_PixelData) return NULL;
    return OFstatic_cast(DcmPixelData *, el);
}

shim_ts_kind classify(E_TransferSyntax x) {
    switch (x) {
    case EXS_JPEG2000LosslessOnly:
    case EXS_JPEG2000:
    case EXS_JPEG2000MulticomponentLosslessOnly:
    case EXS_JPEG2000Multicomponent:
        return SHIM_TS_J2K;
    case EXS_JPEGProcess1:
    case EXS_JPEGProcess2_4:
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1:
    case EXS_JPEGLSLossless:
    case EXS_JPEGLSLossy:
    case EXS_RLELossless:
        return SHIM_TS_DCMTK;
    case EXS_LittleEndianImplicit:
    case EXS_BigEndianImplicit:
    case EXS_LittleEndianExplicit:
    case EXS_BigEndianExplicit:
    case EXS_DeflatedLittleEndianExplicit:
        return SHIM_TS_NATIVE;
    default: /* JPIP (pixels elsewhere), video, unknown */
        return SHIM_TS_UNSUPPORTED;
    }
}

/* Does the buffer start like DICOM: a Part 10 preamble, or a bare data set
 * whose first tag is in group 0002 or 0008 (either byte order)? Only such a
 * buffer can be "truncated"; anything else DCMTK fails on is "not DICOM". */
bool looks_dicom(const uint8_t *p, size_t n) {
    if (n >= 132 && memcmp(p + 128, "DICM", 4) == 0) return true;
    if (n < 4) return false;
    unsigned le = p[0] | (unsigned)p[1] << 8, be = (unsigned)p[0] << 8 | p[1];
    return le == 0x0002 || le == 0x0008 || be == 0x0002 || be == 0x0008;
}

/* ------------------------------------------------------------------------
 * What DCMTK's parser does not bound, checked before it runs: it reads
 * nested sequences by recursion (20,000 levels overflow an 8 MB stack; in
 * the meta header as well as in the data set) and skips the long values of
 * a deflated data set by inflating them (about 200 MB/s here, twice: a 4 MB
 * file can declare 4 GB). prescan walks the element headers as DCMTK will
 * read them — the meta group (explicit VR little endian, or implicit as
 * DCMTK tolerates), then the data set in the meta header's transfer syntax
 * (else guessed the same way DCMTK guesses) — without storing anything, and
 * fails on nesting deeper than MAX_NESTING or a deflated data set declaring
 * more than INFLATE_MAX_RATIO times its size (at least INFLATE_MIN_CAP, at
 * most the file input cap). Whatever it cannot follow (truncation, a garbled
 * header) it leaves to DCMTK to report.
 */
const int MAX_NESTING = 64;                             /* sequences within sequences */
const unsigned long long INFLATE_MIN_CAP = 64ull << 20; /* always allowed */
const unsigned long long INFLATE_MAX_RATIO = 64;        /* beyond: inflated / deflated bytes */

unsigned rd16(const uint8_t *p, bool le) { return le ? (p[0] | (unsigned)p[1] << 8) : ((unsigned)p[0] << 8 | p[1]); }
uint32_t rd32(const uint8_t *p, bool le) {
    return le ? (p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24)
              : ((uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]);
}
bool long_vr(const uint8_t *v) {
    static const char *const vrs[] = {"OB", "OD", "OF", "OL", "OV", "OW", "SQ", "UC", "UN", "UR", "UT", "SV", "UV"};
    for (const char *x : vrs)
        if (v[0] == x[0] && v[1] == x[1]) return true;
    return false;
}
bool vr_letters(const uint8_t *v) { return v[0] >= 'A' && v[0] <= 'Z' && v[1] >= 'A' && v[1] <= 'Z'; }

/* What prescan learnt about the file. */
struct Layout {
    std::string ts;         /* Transfer Syntax UID of the meta header, "" when none */
    bool meta_whole = true; /* the meta group does not run past the buffer */
    bool deflated = false;  /* the data set (from start) is deflated */
    size_t start = 0;       /* where the data set starts */
    unsigned long long cap = ~0ull; /* inflation cap of a deflated data set */
    bool le = true;         /* byte order of the data set */
    /* the top-level Pixel Data element (not deflated data sets): offsets of
       its length field and of its value in the buffer, its declared length */
    long long px_len_at = -1, px_value_at = -1;
    uint32_t px_vl = 0;
};

/* One walk over the element headers of is (values skipped). In meta mode it
 * stops before the first top-level element outside group 0002 (*stop = its
 * offset in the stream), notes the Transfer Syntax UID and whether the group
 * ended cleanly. Returns CXR_OK, CXR_ERR_CORRUPT (nesting) or
 * CXR_ERR_DIMENSIONS (inflation cap; cap ~0 for none). */
int walk(DcmInputStream &is, bool explicit_vr, bool le, unsigned long long cap, bool meta, unsigned long long *stop,
         Layout &L, unsigned long long zlen, char *err, size_t errlen) {
    const unsigned long long UNDEF_END = ~0ull;
    enum Kind { SEQ, ITEM, PIXSEQ };
    struct Level {
        unsigned long long end;
        Kind kind;
    };
    std::vector<Level> st;
    int nseq = 0;
    unsigned long long pos = 0;
    uint8_t h[12];
    auto get = [&](uint8_t *dst, size_t k) {
        offile_off_t got = is.read(dst, (offile_off_t)k);
        pos += got > 0 ? (unsigned long long)got : 0;
        return got == (offile_off_t)k;
    };
    auto push = [&](unsigned long long vl, Kind k) {
        st.push_back(Level{vl == 0xFFFFFFFFull ? UNDEF_END : pos + vl, k});
        if (k != ITEM) nseq++;
        if (nseq > MAX_NESTING || st.size() > 2 * (size_t)MAX_NESTING + 2) {
            seterr(err, errlen, "%s nests sequences or items more than %d deep", meta ? "file meta header" : "data set",
                   MAX_NESTING);
            return false;
        }
        return true;
    };
    auto skip = [&](unsigned long long vl) {
        if (pos + vl > cap) {
            seterr(err, errlen, "deflated data set of %llu bytes declares more than %llu bytes inflated (%llux its size, "
                   "at least %llu MiB)", zlen, cap, INFLATE_MAX_RATIO, INFLATE_MIN_CAP >> 20);
            return -1;
        }
        if (is.skip((offile_off_t)vl) != (offile_off_t)vl) return 0;
        pos += vl;
        return 1;
    };
    if (meta) *stop = 0;
    for (;;) {
        while (!st.empty() && st.back().end != UNDEF_END && pos >= st.back().end) {
            if (st.back().kind != ITEM) nseq--;
            st.pop_back();
        }
        unsigned long long at = pos;
        if (!get(h, 8)) {
            if (meta) {
                *stop = at;
                L.meta_whole = pos == at && st.empty();
            }
            return CXR_OK;
        }
        unsigned g = rd16(h, le), e = rd16(h + 2, le);
        if (meta && st.empty() && g != 0x0002) {
            *stop = at;
            return CXR_OK;
        }
        if (g == 0xFFFE) {
            uint32_t vl = rd32(h + 4, le);
            if (e == 0xE000 && !st.empty() && st.back().kind == PIXSEQ) {
                int k = skip(vl == 0xFFFFFFFFu ? 0 : vl);
                if (k <= 0) return k < 0 ? CXR_ERR_DIMENSIONS : CXR_OK;
            } else if (e == 0xE000) {
                if (!push(vl, ITEM)) return CXR_ERR_CORRUPT;
            } else if (!st.empty()) { /* delimiters */
                if (st.back().kind != ITEM) nseq--;
                st.pop_back();
            }
            continue;
        }
        uint32_t vl;
        bool sq;
        size_t vl_at = explicit_vr && long_vr(h + 4) ? 8 : 4;
        if (explicit_vr) {
            if (long_vr(h + 4)) {
                if (!get(h + 8, 4)) {
                    if (meta) { *stop = at; L.meta_whole = false; }
                    return CXR_OK;
                }
                vl = rd32(h + 8, le);
            } else {
                vl = rd16(h + 6, le);
            }
            sq = h[4] == 'S' && h[5] == 'Q';
        } else {
            vl = rd32(h + 4, le);
            sq = DcmTag(DcmTagKey((Uint16)g, (Uint16)e)).getEVR() == EVR_SQ;
        }
        if (!meta && st.empty() && g == 0x7FE0 && e == 0x0010 && !L.deflated && L.px_len_at < 0) {
            L.px_len_at = (long long)(L.start + at + vl_at);
            L.px_value_at = (long long)(L.start + pos);
            L.px_vl = vl;
        }
        if (vl == 0xFFFFFFFFu) {
            if (!push(vl, g == 0x7FE0 && e == 0x0010 ? PIXSEQ : SEQ)) return CXR_ERR_CORRUPT;
        } else if (sq) {
            if (!push(vl, SEQ)) return CXR_ERR_CORRUPT;
        } else if (meta && st.empty() && g == 0x0002 && e == 0x0010 && vl <= 256) {
            uint8_t v[256];
            if (!get(v, vl)) { *stop = at; L.meta_whole = false; return CXR_OK; }
            L.ts.assign((const char *)v, vl);
            while (!L.ts.empty() && (L.ts.back() == '\0' || L.ts.back() == ' ')) L.ts.pop_back();
        } else {
            int k = skip(vl);
            if (k < 0) return CXR_ERR_DIMENSIONS;
            if (k == 0) {
                if (meta) { *stop = at; L.meta_whole = false; }
                return CXR_OK;
            }
        }
    }
}

int prescan(const uint8_t *p, size_t n, Layout &L, char *err, size_t errlen) {
    size_t start = 0;
    if (n >= 132 && memcmp(p + 128, "DICM", 4) == 0) {
        if (n < 138) return CXR_OK;
        MemStream ms(p, (offile_off_t)n, 132);
        unsigned long long stop = 0;
        int rc = walk(ms, vr_letters(p + 136), true, ~0ull, true, &stop, L, 0, err, errlen);
        if (rc != CXR_OK) return rc;
        start = 132 + (size_t)stop;
    }
    if (n - start < 8) return CXR_OK;
    E_TransferSyntax x = L.ts.empty() ? EXS_Unknown : DcmXfer(L.ts.c_str()).getXfer();
    bool explicit_vr, le, deflated = false;
    if (x == EXS_Unknown) { /* as DCMTK guesses: byte order from the group, VR letters or not */
        le = rd16(p + start, true) <= rd16(p + start, false);
        explicit_vr = vr_letters(p + start + 4);
    } else {
        DcmXfer xf(x);
        explicit_vr = xf.isExplicitVR();
        le = xf.getByteOrder() != EBO_BigEndian;
        deflated = xf.getStreamCompression() != ESC_none;
    }
    MemStream is(p, (offile_off_t)n, (offile_off_t)start);
    unsigned long long cap = ~0ull, z = n - start;
    if (deflated) {
        if (is.installCompressionFilter(ESC_zlib).bad()) return CXR_OK;
        cap = z > INFLATE_MIN_CAP / INFLATE_MAX_RATIO ? z * INFLATE_MAX_RATIO : INFLATE_MIN_CAP;
        if (cap > CXR_MAX_DECODED_BYTES + (64ull << 20)) cap = CXR_MAX_DECODED_BYTES + (64ull << 20);
    }
    L.deflated = deflated;
    L.start = start;
    L.cap = cap;
    L.le = le;
    return walk(is, explicit_vr, le, cap, false, NULL, L, z, err, errlen);
}

/* ------------------------------------------------------------------------
 * The walk above mirrors DCMTK's reading, but a hostile file can make the
 * two part ways (a garbled meta group DCMTK reads on through, fuzzing found
 * one), and then DCMTK's recursion meets nesting the walk never saw. So the
 * stack is also bounded without interpreting anything: every level of
 * DCMTK's recursion is an item, and every item starts with the four bytes
 * of the tag (FFFE,E000) in one byte order or the other. Counting them
 * (in the inflated stream as well, for a deflated data set) bounds the
 * depth; more than MAX_ITEMS is refused; more than INLINE_ITEMS and the
 * parse runs on a thread whose stack holds that many levels. Afterwards the
 * parsed data set's real depth is measured without recursion and checked
 * against MAX_NESTING, and a data set that fails it is freed (a recursive
 * destructor) on that same thread.
 */
const size_t MAX_ITEMS = 100000;       /* items (and fragments) in one file */
const size_t INLINE_ITEMS = 1000;      /* at most this many: parse on the caller's stack */
const size_t STACK_PER_LEVEL = 1024;   /* DCMTK's read recursion: 20,000 levels overflowed 8 MiB */
const size_t STACK_BASE = 8u << 20;

size_t count_item_tags(const uint8_t *p, size_t n) {
    size_t k = 0;
    for (size_t i = 0; i + 4 <= n; i++)
        if ((p[i] == 0xFE && p[i + 1] == 0xFF && p[i + 2] == 0x00 && p[i + 3] == 0xE0) ||
            (p[i] == 0xFF && p[i + 1] == 0xFE && p[i + 2] == 0xE0 && p[i + 3] == 0x00))
            k++;
    return k;
}

/* item tags in the raw bytes, plus in the inflated data set when deflated
 * (read up to the walk's inflation cap); stops counting past MAX_ITEMS */
size_t count_items(const uint8_t *p, size_t n, const Layout &L) {
    size_t k = count_item_tags(p, n);
    if (!L.deflated || k > MAX_ITEMS || L.start >= n) return k;
    MemStream is(p, (offile_off_t)n, (offile_off_t)L.start);
    if (is.installCompressionFilter(ESC_zlib).bad()) return k;
    std::vector<uint8_t> buf((64u << 10) + 3);
    size_t carry = 0;
    unsigned long long total = 0;
    while (k <= MAX_ITEMS && total < L.cap) {
        offile_off_t got = is.read(buf.data() + carry, (offile_off_t)(buf.size() - carry));
        if (got <= 0) break;
        total += (unsigned long long)got;
        size_t len = carry + (size_t)got;
        k += count_item_tags(buf.data(), len);
        carry = len < 3 ? len : 3; /* a tag split across reads is counted once */
        memmove(buf.data(), buf.data() + len - carry, carry); /* 3 bytes: never a whole tag */
    }
    return k;
}

/* Deepest nesting of sequences in item it, measured with an explicit stack. */
int nesting_depth(DcmItem *top) {
    struct Node {
        DcmItem *item;
        int depth;
    };
    std::vector<Node> todo{Node{top, 0}};
    int deepest = 0;
    while (!todo.empty()) {
        Node nd = todo.back();
        todo.pop_back();
        if (!nd.item) continue;
        for (unsigned long i = 0; i < nd.item->card(); i++) {
            DcmElement *e = nd.item->getElement(i);
            if (!e || e->ident() != EVR_SQ) continue;
            DcmSequenceOfItems *sq = static_cast<DcmSequenceOfItems *>(e);
            int d = nd.depth + 1;
            if (d > deepest) deepest = d;
            for (unsigned long j = 0; j < sq->card(); j++) todo.push_back(Node{sq->getItem(j), d});
        }
    }
    return deepest;
}

/* DCMTK's parse of the whole buffer into ds, then its depth; a data set
 * nested deeper than MAX_NESTING is freed here (ds = NULL), so that its
 * recursive destructor runs on the same stack as the parse did. */
struct ParseJob {
    shim_ds *ds;
    const uint8_t *p;
    size_t n;
    Patch fix;
    OFCondition c{EC_Normal};
    int depth = 0;
};

void parse_now(ParseJob *j) {
    MemStream is(j->p, (offile_off_t)j->n, 0, j->fix);
    j->ds->ff.transferInit();
    j->c = j->ds->ff.read(is, EXS_Unknown, EGL_noChange, MAX_INLINE_VALUE);
    j->ds->ff.transferEnd();
    int dm = nesting_depth(j->ds->ff.getMetaInfo()), dd = nesting_depth(j->ds->ff.getDataset());
    j->depth = dm > dd ? dm : dd;
    if (j->depth > MAX_NESTING) {
        delete j->ds;
        j->ds = NULL;
    }
}

void *parse_thread(void *arg) {
    parse_now(static_cast<ParseJob *>(arg));
    return NULL;
}

/* parse_now on this stack, or on a thread with room for `items` levels */
int parse(ParseJob *j, size_t items, char *err, size_t errlen) {
    if (items <= INLINE_ITEMS) {
        parse_now(j);
        return CXR_OK;
    }
    pthread_attr_t a;
    pthread_t t;
    int rc = pthread_attr_init(&a);
    if (rc == 0) {
        rc = pthread_attr_setstacksize(&a, STACK_BASE + items * STACK_PER_LEVEL);
        if (rc == 0) rc = pthread_create(&t, &a, parse_thread, j);
        pthread_attr_destroy(&a);
    }
    if (rc != 0) {
        seterr(err, errlen, "cannot start a parser thread with a stack for %zu items (%s)", items, strerror(rc));
        return CXR_ERR_NOMEM;
    }
    pthread_join(t, NULL);
    return CXR_OK;
}

/* ------------------------------------------------------------------------
 * What a report copies from the source (cxr_source), read here so that the
 * SR writer needs no second parse. The same steps the writer took on its own
 * parse: the character set as declared; the data set converted to UTF-8 when
 * that set is neither ISO_IR 6 nor ISO_IR 192 and a copied patient/study
 * value is not ASCII (after everything else of cxr_meta was read; a failure is
 * recorded, not an ingestion error); then every value, all VM, as DCMTK
 * gives it. Values that do not fit the pool are left absent and flagged.
 */
void source_put(cxr_source *s, cxr_attr *a, DcmItem *it, const DcmTagKey &key) {
    a->off = -1;
    a->len = 0;
    if (!it->tagExists(key)) return;
    OFString v;
    if (it->findAndGetOFStringArray(key, v).bad()) v.clear();
    if (v.length() + 1 > (size_t)(CXR_SOURCE_POOL - s->pool_used)) {
        s->overflow = 1;
        return;
    }
    a->off = s->pool_used;
    a->len = (int)v.length();
    memcpy(s->pool + a->off, v.data(), v.length());
    s->pool[a->off + a->len] = '\0';
    s->pool_used += a->len + 1;
}

void source_code(cxr_source *s, cxr_code_attrs *c, DcmItem *it) {
#define CXR_PUT_CODE(g, e, field) source_put(s, &c->field, it, DcmTagKey(g, e));
    CXR_SOURCE_CODE(CXR_PUT_CODE)
#undef CXR_PUT_CODE
}

void source_absent(cxr_code_attrs *c) {
#define CXR_ABSENT(g, e, field) c->field.off = -1, c->field.len = 0;
    CXR_SOURCE_CODE(CXR_ABSENT)
#undef CXR_ABSENT
}

void read_source(DcmDataset *d, bool has_pixels, cxr_source *s) {
    memset(s, 0, offsetof(cxr_source, pool));
    s->valid = 1;
    s->has_pixel_data = has_pixels;
    source_put(s, &s->specific_character_set, d, DCM_SpecificCharacterSet);
    OFString cs;
    d->findAndGetOFStringArray(DCM_SpecificCharacterSet, cs);
    while (!cs.empty() && cs[cs.size() - 1] == ' ') cs.erase(cs.size() - 1);
    if (!cs.empty() && cs != "ISO_IR 192" && cs != "ISO_IR 6") {
        bool ascii = true;
        OFString v;
#define CXR_ASCII(g, e, field)                                                    \
        if (d->findAndGetOFStringArray(DcmTagKey(g, e), v).good())               \
            for (size_t i = 0; i < v.length(); i++) ascii = ascii && (unsigned char)v[i] < 0x80;
        CXR_SOURCE_COPIED(CXR_ASCII)
#undef CXR_ASCII
        if (!ascii) {
            OFCondition cc = d->convertToUTF8();
            if (cc.bad())
                seterr(s->charset_error, sizeof s->charset_error,
                       "cannot convert source Specific Character Set \"%s\" to UTF-8 (%s)", cs.c_str(), cc.text());
        }
    }
#define CXR_PUT(g, e, field) source_put(s, &s->field, d, DcmTagKey(g, e));
    CXR_SOURCE_ATTRS(CXR_PUT)
#undef CXR_PUT
    DcmItem *item = NULL;
    source_absent(&s->anatomic_region);
    source_absent(&s->view);
    for (int i = 0; i < CXR_SOURCE_MAX_MODIFIERS; i++) source_absent(&s->view_modifiers[i]);
    if (d->findAndGetSequenceItem(DCM_AnatomicRegionSequence, item, 0).good() && item)
        source_code(s, &s->anatomic_region, item);
    item = NULL;
    if (d->findAndGetSequenceItem(DCM_ViewCodeSequence, item, 0).good() && item) {
        source_code(s, &s->view, item);
        DcmSequenceOfItems *mods = NULL;
        if (item->findAndGetSequence(DCM_ViewModifierCodeSequence, mods).good() && mods) {
            unsigned long n = mods->card();
            if (n > CXR_SOURCE_MAX_MODIFIERS) {
                s->overflow = 1;
                n = CXR_SOURCE_MAX_MODIFIERS;
            }
            for (unsigned long i = 0; i < n; i++)
                if (DcmItem *mi = mods->getItem(i)) source_code(s, &s->view_modifiers[s->n_view_modifiers++], mi);
        }
    }
}

/* ------------------------------------------------------------------------
 * Corrupt but readable: native Pixel Data whose length field says more
 * than the file holds (0xFFFFFFF0, or a file cut inside the pixels), or
 * undefined (0xFFFFFFFF) on native pixels not followed by an item. DCMTK
 * refuses the whole file for either; the pixels that are there are read
 * instead, by showing DCMTK a length field that says what remains (even),
 * and the damage is reported in info (ingest.c warns or refuses). Whether
 * the first frame is complete is frame_impl's check, as for any file.
 */
void fix_pixel_length(const uint8_t *p, size_t n, const Layout &L, Patch &fix, shim_info *info) {
    if (L.px_len_at < 0 || L.px_value_at < 0 || (unsigned long long)L.px_value_at > n) return;
    E_TransferSyntax x = L.ts.empty() ? EXS_Unknown : DcmXfer(L.ts.c_str()).getXfer();
    if (!L.ts.empty() && (x == EXS_Unknown || classify(x) != SHIM_TS_NATIVE)) return;
    size_t at = (size_t)L.px_value_at, left = (n - at) & ~(size_t)1;
    if (L.px_vl == 0xFFFFFFFFu) {
        bool item = n - at >= 4 && ((p[at] == 0xFE && p[at + 1] == 0xFF && p[at + 2] == 0x00 && p[at + 3] == 0xE0) ||
                                    (p[at] == 0xFF && p[at + 1] == 0xFE && p[at + 2] == 0xE0 && p[at + 3] == 0x00));
        if (item) return; /* an encapsulated layout under a native syntax: DCMTK says what it makes of it */
        snprintf(info->damage, sizeof info->damage,
                 "Pixel Data (7FE0,0010) has an undefined length (FFFFFFFF) on native pixels; read as the %zu bytes "
                 "that follow it", left);
        info->damage_code = CXR_ERR_CORRUPT;
    } else if (L.px_vl > n - at) {
        snprintf(info->damage, sizeof info->damage,
                 "Pixel Data (7FE0,0010) declares %lu bytes (0x%08lX) but the file ends %zu bytes after its header; "
                 "read as %zu bytes", (unsigned long)L.px_vl, (unsigned long)L.px_vl, n - at, left);
        info->damage_code = CXR_ERR_TRUNCATED;
    } else {
        return;
    }
    uint32_t v = (uint32_t)left;
    fix.at = (offile_off_t)L.px_len_at;
    for (int k = 0; k < 4; k++) fix.b[k] = (uint8_t)(L.le ? v >> (8 * k) : v >> (8 * (3 - k)));
}

int open_impl(const void *buf, size_t len, shim_ds **out, cxr_meta *m, shim_info *info,
              char *err, size_t errlen) {
    init_once();
    Layout L;
    int rc0 = prescan((const uint8_t *)buf, len, L, err, errlen);
    if (rc0 != CXR_OK) return rc0;
    size_t items = count_items((const uint8_t *)buf, len, L);
    if (items > MAX_ITEMS) {
        seterr(err, errlen, "more than %zu items or fragments (tag FFFE,E000) in the file: refused before parsing",
               MAX_ITEMS);
        return CXR_ERR_CORRUPT;
    }
    Patch fix;
    fix_pixel_length((const uint8_t *)buf, len, L, fix, info);
    ParseJob job{new shim_ds(), (const uint8_t *)buf, len, fix};
    int prc = parse(&job, items, err, errlen);
    if (prc != CXR_OK) {
        delete job.ds;
        return prc;
    }
    if (!job.ds) {
        seterr(err, errlen, "data set nests sequences %d deep (more than %d)", job.depth, MAX_NESTING);
        return CXR_ERR_CORRUPT;
    }
    shim_ds *ds = job.ds;
    OFCondition c = job.c;
    DcmDataset *d = ds->ff.getDataset();
    /* a transfer syntax DCMTK does not know: the encoding it then guesses
       is not what the file says, so nothing read that way is trusted (read
       from the bytes: after a failed parse, asking DCMTK for a value loads
       whatever length the element declares) */
    bool unknown_ts = !L.ts.empty() && DcmXfer(L.ts.c_str()).getXfer() == EXS_Unknown;
    if (c.bad() && unknown_ts && L.meta_whole) {
        seterr(err, errlen, "unknown transfer syntax %.64s; the data set cannot be read", L.ts.c_str());
        delete ds;
        return CXR_ERR_TRANSFER_SYNTAX;
    }
    if (c.bad()) {
        int rc;
        if (c == EC_MemoryExhausted) {
            rc = CXR_ERR_NOMEM;
            seterr(err, errlen, "out of memory while parsing DICOM: %s", c.text());
        } else if (!looks_dicom((const uint8_t *)buf, len)) {
            rc = CXR_ERR_NOT_DICOM;
            seterr(err, errlen, "not DICOM (no DICM marker, no known first tag): %s", c.text());
        } else {
            /* premature end (EC_StreamNotifyClient), a value longer than what
               is left (EC_InvalidStream), unbalanced items or sequences */
            rc = CXR_ERR_TRUNCATED;
            seterr(err, errlen, "DICOM data ends early or is malformed: %s", c.text());
        }
        delete ds;
        return rc;
    }
    ds->xfer = d->getOriginalXfer();
    int has_class = d->tagExists(DCM_SOPClassUID);
    info->has_pixel_data = d->tagExists(DCM_PixelData);
    info->float_pixels = d->tagExists(DCM_FloatPixelData) || d->tagExists(DCM_DoubleFloatPixelData);
    if (!has_class && !info->has_pixel_data && !info->float_pixels && !d->tagExists(DCM_Rows)) {
        /* a Part 10 file that stops inside or right after its meta group
           (whose length it declares) is cut short, not foreign */
        Uint32 gl = 0;
        DcmMetaInfo *mi = ds->ff.getMetaInfo();
        bool cut = len >= 132 && memcmp((const uint8_t *)buf + 128, "DICM", 4) == 0 && mi &&
                   mi->findAndGetUint32(DCM_FileMetaInformationGroupLength, gl).good() &&
                   144ull + gl >= (unsigned long long)len;
        seterr(err, errlen, cut ? "DICOM file ends in or right after its meta header"
                                : "no DICOM attributes found (not a DICOM file?)");
        delete ds;
        return cut ? CXR_ERR_TRUNCATED : CXR_ERR_NOT_DICOM;
    }

    DcmXfer xf(ds->xfer);
    snprintf(m->transfer_syntax_uid, sizeof m->transfer_syntax_uid, "%s",
             ds->xfer == EXS_Unknown ? "" : xf.getXferID());
    snprintf(m->transfer_syntax, sizeof m->transfer_syntax, "%s", xf.getXferName());
    if (!ds->ff.getMetaInfo() || !ds->ff.getMetaInfo()->tagExists(DCM_TransferSyntaxUID)) {
        size_t l = strlen(m->transfer_syntax);
        snprintf(m->transfer_syntax + l, sizeof m->transfer_syntax - l, " (no meta header)");
    }
    info->ts_kind = classify(ds->xfer);
    if (unknown_ts) {
        info->ts_kind = SHIM_TS_UNSUPPORTED;
        snprintf(m->transfer_syntax_uid, sizeof m->transfer_syntax_uid, "%s", L.ts.c_str());
        snprintf(m->transfer_syntax, sizeof m->transfer_syntax, "unknown");
    }
    info->encapsulated = xf.isEncapsulated();
    info->lossy = ds->xfer == EXS_JPEGProcess1 || ds->xfer == EXS_JPEGProcess2_4 || ds->xfer == EXS_JPEGLSLossy;

    getstr(d, DCM_StudyInstanceUID, m->study_uid, sizeof m->study_uid);
    getstr(d, DCM_SeriesInstanceUID, m->series_uid, sizeof m->series_uid);
    getstr(d, DCM_SOPInstanceUID, m->sop_uid, sizeof m->sop_uid);
    getstr(d, DCM_SOPClassUID, m->sop_class_uid, sizeof m->sop_class_uid);
    getstr(d, DCM_Modality, m->modality, sizeof m->modality);
    getstr(d, DCM_PatientID, m->patient_id, sizeof m->patient_id);
    getstr(d, DCM_PatientName, m->patient_name, sizeof m->patient_name);
    getstr(d, DCM_PatientSex, m->patient_sex, sizeof m->patient_sex);
    getstr(d, DCM_PatientAge, m->patient_age, sizeof m->patient_age);
    getstr(d, DCM_PatientBirthDate, m->patient_birth_date, sizeof m->patient_birth_date);
    getstr(d, DCM_AccessionNumber, m->accession_number, sizeof m->accession_number);
    getstr(d, DCM_StudyDate, m->study_date, sizeof m->study_date);
    getstr(d, DCM_StudyTime, m->study_time, sizeof m->study_time);
    getstr(d, DCM_BodyPartExamined, m->body_part, sizeof m->body_part);
    getstr(d, DCM_ViewPosition, m->view_position, sizeof m->view_position);
    getstr(d, DCM_ImageLaterality, m->laterality, sizeof m->laterality);
    if (!m->laterality[0]) getstr(d, DCM_Laterality, m->laterality, sizeof m->laterality);
    getstr(d, DCM_Manufacturer, m->manufacturer, sizeof m->manufacturer);
    getstr(d, DCM_PhotometricInterpretation, m->photometric, sizeof m->photometric);

    m->rows = getus(d, DCM_Rows, 0);
    m->cols = getus(d, DCM_Columns, 0);
    m->samples_per_pixel = getus(d, DCM_SamplesPerPixel, 1);
    m->planar_config = getus(d, DCM_PlanarConfiguration, 0);
    m->bits_allocated = getus(d, DCM_BitsAllocated, 0);
    m->bits_stored = getus(d, DCM_BitsStored, m->bits_allocated);
    m->high_bit = getus(d, DCM_HighBit, m->bits_stored - 1);
    m->pixel_representation = getus(d, DCM_PixelRepresentation, 0);
    Sint32 frames = 1;
    if (d->tagExists(DCM_NumberOfFrames)) {
        if (d->findAndGetSint32(DCM_NumberOfFrames, frames).bad()) frames = 0;
    }
    m->frames = frames;

    Float64 f0 = 0, f1 = 0;
    if (d->findAndGetFloat64(DCM_PixelSpacing, f0, 0).good() &&
        d->findAndGetFloat64(DCM_PixelSpacing, f1, 1).good()) {
        m->pixel_spacing[0] = f0; m->pixel_spacing[1] = f1;
    } else if (d->findAndGetFloat64(DCM_ImagerPixelSpacing, f0, 0).good() &&
               d->findAndGetFloat64(DCM_ImagerPixelSpacing, f1, 1).good()) {
        m->pixel_spacing[0] = f0; m->pixel_spacing[1] = f1;
        m->pixel_spacing_is_imager = 1;
    }
    m->rescale_slope = 1.0;
    m->rescale_intercept = 0.0;
    if (d->findAndGetFloat64(DCM_RescaleSlope, f0).good() &&
        d->findAndGetFloat64(DCM_RescaleIntercept, f1).good()) {
        m->has_rescale = 1;
        m->rescale_slope = f0;
        m->rescale_intercept = f1;
    }
    DcmElement *el = NULL;
    if (d->findAndGetElement(DCM_WindowCenter, el).good() && el) {
        m->n_windows = (int)el->getVM();
        if (d->findAndGetFloat64(DCM_WindowCenter, f0, 0).good() &&
            d->findAndGetFloat64(DCM_WindowWidth, f1, 0).good()) {
            m->window_center = f0;
            m->window_width = f1;
        } else {
            m->n_windows = 0;
        }
    }
    getstr(d, DCM_VOILUTFunction, m->voi_function, sizeof m->voi_function);
    info->voi_function = 0;
    if (m->voi_function[0]) {
        if (!strcmp(m->voi_function, "LINEAR")) info->voi_function = 0;
        else if (!strcmp(m->voi_function, "LINEAR_EXACT")) info->voi_function = 1;
        else if (!strcmp(m->voi_function, "SIGMOID")) info->voi_function = 2;
        else info->voi_function = -1;
    }
    int rc = read_lut(d, DCM_ModalityLUTSequence, m->pixel_representation, ds->mlut, &info->mlut, err, errlen);
    if (rc == CXR_OK)
        rc = read_lut(d, DCM_VOILUTSequence, m->pixel_representation, ds->vlut, &info->vlut, err, errlen);
    if (rc != CXR_OK) {
        delete ds;
        return rc;
    }
    m->has_modality_lut_seq = info->mlut.n > 0;
    m->has_voi_lut_seq = info->vlut.n > 0;

    if (info->encapsulated && info->has_pixel_data) {
        DcmPixelData *pd = pixel_data(d);
        DcmPixelSequence *seq = NULL;
        if (pd && pd->getEncapsulatedRepresentation(ds->xfer, NULL, seq).good() && seq)
            info->n_fragments = (int)seq->card() - 1;
    }
    read_source(d, info->has_pixel_data || info->float_pixels, &m->source);
    *out = ds;
    return CXR_OK;
}

/* The codec check for a transfer syntax; false when there is none. */
bool codec_for(E_TransferSyntax x, codec_kind *k) {
    switch (x) {
    case EXS_JPEGProcess1: *k = CODEC_JPEG_BASELINE; return true;
    case EXS_JPEGProcess2_4: *k = CODEC_JPEG_EXTENDED; return true;
    case EXS_JPEGProcess14:
    case EXS_JPEGProcess14SV1: *k = CODEC_JPEG_LOSSLESS; return true;
    case EXS_JPEGLSLossless: *k = CODEC_JPEGLS; return true;
    case EXS_JPEGLSLossy: *k = CODEC_JPEGLS_NEAR; return true;
    case EXS_RLELossless: *k = CODEC_RLE; return true;
    default:
        if (classify(x) == SHIM_TS_J2K) { *k = CODEC_J2K; return true; }
        return false;
    }
}

typedef std::vector<std::pair<const Uint8 *, Uint32>> Parts;

/* Frame 1 of a pixel sequence: item 0 is the Basic Offset Table; frame 1
 * is fragment 1 plus, in a single-frame image, every fragment after it, or
 * in a multi-frame one the fragments until one opens a new stream (SOI;
 * SOC or a JP2 signature for JPEG 2000). RLE: fragment 1 alone (PS3.5 G.2).
 * Every item's value is loaded here, on the caller's thread, so that a
 * decoder abandoned at its deadline never reads the caller's buffer. */
int frame1_parts(DcmPixelSequence *seq, const cxr_meta *m, codec_kind k, Parts &parts, unsigned long long &total,
                 char *err, size_t errlen) {
    unsigned long n = seq->card();
    total = 0;
    bool open = true;
    for (unsigned long i = 0; i < n; i++) {
        DcmPixelItem *it = NULL;
        Uint8 *p = NULL;
        if (seq->getItem(it, i).bad() || !it) break;
        Uint32 l = it->getLength();
        if (l && (it->getUint8Array(p).bad() || !p)) {
            seterr(err, errlen, "pixel item %lu of %lu bytes cannot be read", i, (unsigned long)l);
            return CXR_ERR_TRUNCATED;
        }
        if (i == 0 || !open || l == 0) continue;
        bool starts = k == CODEC_J2K ? (l >= 2 && p[0] == 0xff && p[1] == 0x4f) || (l >= 12 && p[4] == 'j' && p[5] == 'P')
                                     : l >= 2 && p[0] == 0xff && p[1] == 0xd8;
        if (total && (k == CODEC_RLE || (m->frames > 1 && starts))) {
            open = false;
            continue;
        }
        total += l;
        if (total > CXR_MAX_DECODED_BYTES) {
            seterr(err, errlen, "frame 1's compressed data is larger than the decode cap");
            return CXR_ERR_DIMENSIONS;
        }
        parts.emplace_back(p, l);
    }
    if (!total) {
        seterr(err, errlen, "encapsulated Pixel Data holds no fragment for frame 1");
        return CXR_ERR_TRUNCATED;
    }
    return CXR_OK;
}

/* One DCMTK codec call, run by deadline_run: everything it touches lives
 * in the job or in the data set, never in the caller's buffer or frame. */
struct DecodeJob {
    DcmDataset *d;
    DcmPixelData *pd;
    void *out;
    Uint32 size;
    OFCondition c{EC_Normal};
    OFString colour;
    int exc = 0; /* 1: bad_alloc, 2: another exception */
};

void decode_job(void *arg) {
    DecodeJob *j = static_cast<DecodeJob *>(arg);
    try {
        Uint32 start_fragment = 0;
        j->c = j->pd->getUncompressedFrame(j->d, 0, start_fragment, j->out, j->size, j->colour);
    } catch (const std::bad_alloc &) {
        j->exc = 1;
    } catch (...) {
        j->exc = 2;
    }
}

int frame_impl(shim_ds *ds, const cxr_meta *m, const shim_decode_opts *o, shim_frame *fr, char *err, size_t errlen) {
    memset(fr, 0, sizeof *fr);
    DcmDataset *d = ds->ff.getDataset();
    shim_ts_kind kind = classify(ds->xfer);
    snprintf(fr->photometric, sizeof fr->photometric, "%s", m->photometric);
    fr->planar_config = m->planar_config;
    if (kind == SHIM_TS_UNSUPPORTED) {
        seterr(err, errlen, "transfer syntax %s (%s) is not supported",
               DcmXfer(ds->xfer).getXferName(), m->transfer_syntax_uid);
        return CXR_ERR_TRANSFER_SYNTAX;
    }
    DcmPixelData *pd = pixel_data(d);
    if (!pd) {
        seterr(err, errlen, "no Pixel Data (7FE0,0010) of type OB/OW");
        return CXR_ERR_NOT_IMAGE;
    }
    unsigned long long bps = (unsigned long long)m->bits_allocated / 8;
    unsigned long long plane = (unsigned long long)m->rows * m->cols;
    unsigned long long frame_bytes = plane * m->samples_per_pixel * bps;
    if (kind == SHIM_TS_NATIVE) {
        unsigned long long want = frame_bytes * (unsigned long long)m->frames;
        unsigned long long have = pd->getLength();
        if (have < frame_bytes) {
            seterr(err, errlen, "Pixel Data holds %llu bytes, the header declares %llu", have, want);
            return CXR_ERR_TRUNCATED;
        }
        if (have < want) {
            /* corrupt but readable: frame 1 is whole */
            snprintf(fr->damage, sizeof fr->damage,
                     "Pixel Data holds %llu bytes, the header declares %llu: %llu of %d frames complete, the first used",
                     have, want, have / frame_bytes, m->frames);
            fr->damage_code = CXR_ERR_TRUNCATED;
        }
        /* frame 1 as it lies in the caller's buffer, when nothing needs
           changing: no copy at all */
        const MemFactory *mf = dynamic_cast<const MemFactory *>(pd->getInputStream());
        bool swap = bps > 1 && DcmXfer(ds->xfer).getByteOrder() != gLocalByteOrder;
        if (mf && !pd->valueLoaded() && mf->pos().filter == ESC_none && !swap &&
            (unsigned long long)mf->pos().at + frame_bytes <= (unsigned long long)mf->pos().n) {
            const uint8_t *p = mf->pos().p + mf->pos().at;
            if ((uintptr_t)p % bps == 0) {
                fr->data = (void *)p;
                fr->len = (size_t)frame_bytes;
                fr->data_borrowed = 1;
                return CXR_OK;
            }
        }
    } else {
        DcmPixelSequence *seq = NULL;
        if (pd->getEncapsulatedRepresentation(ds->xfer, NULL, seq).bad() || !seq) {
            seterr(err, errlen, "encapsulated Pixel Data has no fragment sequence");
            return CXR_ERR_CORRUPT;
        }
        codec_kind ck = CODEC_JPEG_BASELINE;
        Parts parts;
        unsigned long long total = 0;
        int rc = codec_for(ds->xfer, &ck) ? frame1_parts(seq, m, ck, parts, total, err, errlen) : CXR_OK;
        if (rc != CXR_OK) return rc;
        bool jpeg8 = o->jpeg8_codestream && codec_for(ds->xfer, &ck) &&
                     (ck == CODEC_JPEG_BASELINE || ck == CODEC_JPEG_EXTENDED) && m->bits_stored <= 8 &&
                     m->samples_per_pixel == 1;
        bool jls = o->jls_codestream && codec_for(ds->xfer, &ck) &&
                   (ck == CODEC_JPEGLS || ck == CODEC_JPEGLS_NEAR) && m->samples_per_pixel == 1 &&
                   m->pixel_representation == 0 && (m->bits_allocated == 8 || m->bits_allocated == 16);
        bool ours = kind == SHIM_TS_J2K || jpeg8 || jls; /* the code stream goes to the caller's decoder */
        /* frame 1 in one piece: the caller's own copy when it decodes it (an
           abandoned decoder may still read it), else the fragment itself or
           one joined buffer (no zero fill, one copy) */
        uint8_t *own = NULL;
        const uint8_t *f1 = NULL;
        if (!parts.empty()) {
            if (ours || parts.size() > 1) {
                own = (uint8_t *)malloc((size_t)total ? (size_t)total : 1);
                if (!own) return CXR_ERR_NOMEM;
                size_t at = 0;
                for (const auto &part : parts) {
                    memcpy(own + at, part.first, part.second);
                    at += part.second;
                }
                f1 = own;
            } else {
                f1 = parts[0].first;
            }
        }
        if (f1 && !o->skip_codec_check && (ck != CODEC_RLE || seq->card() == (unsigned long)m->frames + 1)) {
            codec_spec cs = {ck, m->rows, m->cols, m->samples_per_pixel, m->bits_allocated, m->bits_stored};
            rc = codec_check(&cs, f1, (size_t)total, err, errlen, fr->note, sizeof fr->note);
            if (rc != CXR_OK) {
                free(own);
                return rc;
            }
        }
        if (kind == SHIM_TS_J2K || ((jpeg8 || jls) && f1)) {
            if (!f1) {
                seterr(err, errlen, "encapsulated Pixel Data holds no fragment for frame 1");
                return CXR_ERR_TRUNCATED;
            }
            fr->codestream_jpeg8 = kind != SHIM_TS_J2K && jpeg8;
            fr->codestream_jls = kind != SHIM_TS_J2K && jls;
            fr->codestream = own;
            fr->codestream_len = (size_t)total;
            return CXR_OK;
        }
        free(own); /* DCMTK decodes from its own items */
    }
    /* DCMTK's idea of a frame: the same unless the header is odd; the larger wins */
    Uint32 dsize = 0;
    if (pd->getUncompressedFrameSize(d, dsize).bad()) dsize = 0;
    unsigned long long alloc = dsize > frame_bytes ? dsize : frame_bytes;
    alloc += alloc & 1;
    if (alloc > 0xffffffffull) {
        seterr(err, errlen, "frame too large");
        return CXR_ERR_DIMENSIONS;
    }
    fr->data = malloc((size_t)alloc);
    if (!fr->data) return CXR_ERR_NOMEM;
    fr->len = (size_t)frame_bytes;
    /* one frame, copied from the caller's buffer or decoded straight into
       fr->data: no full-image representation, no second copy */
    OFCondition c;
    OFString colour;
    if (kind == SHIM_TS_NATIVE) {
        c = pd->getPartialValue(fr->data, 0, (Uint32)frame_bytes);
    } else {
        DecodeJob *job = new DecodeJob;
        job->d = d;
        job->pd = pd;
        job->out = fr->data;
        job->size = (Uint32)alloc;
        int drc = deadline_run(decode_job, job, o->timeout_ms);
        if (drc == CXR_ERR_DECODE_TIMEOUT) {
            /* the job, the data set and fr->data are the stuck decoder's now */
            ds->abandoned = true;
            fr->data = NULL;
            fr->len = 0;
            seterr(err, errlen,
                   "%s decoder did not finish frame 1 within %u ms; it was abandoned (this process is now tainted)",
                   DcmXfer(ds->xfer).getXferName(), o->timeout_ms);
            return CXR_ERR_DECODE_TIMEOUT;
        }
        if (drc != CXR_OK) {
            delete job;
            shim_frame_free(fr);
            seterr(err, errlen, "cannot start the decoder thread");
            return drc;
        }
        int exc = job->exc;
        c = job->c;
        colour = job->colour;
        delete job;
        if (exc == 1) throw std::bad_alloc();
        if (exc) {
            shim_frame_free(fr);
            seterr(err, errlen, "DCMTK raised an exception while decoding");
            return CXR_ERR_INTERNAL;
        }
    }
    if (c.bad()) {
        shim_frame_free(fr);
        if (kind == SHIM_TS_NATIVE)
            seterr(err, errlen, "cannot read Pixel Data: %s", c.text());
        else
            seterr(err, errlen, "cannot decompress %s pixel data: %s", DcmXfer(ds->xfer).getXferName(), c.text());
        return CXR_ERR_CORRUPT;
    }
    if (!colour.empty()) snprintf(fr->photometric, sizeof fr->photometric, "%s", colour.c_str());
    return CXR_OK;
}

} // namespace

extern "C" int shim_open(const void *buf, size_t len, shim_ds **out, cxr_meta *meta,
                         shim_info *info, char *err, size_t errlen) {
    *out = NULL;
    memset(info, 0, sizeof *info);
    try {
        return open_impl(buf, len, out, meta, info, err, errlen);
    } catch (const std::bad_alloc &) {
        seterr(err, errlen, "out of memory while parsing DICOM");
        return CXR_ERR_NOMEM;
    } catch (...) {
        seterr(err, errlen, "DCMTK raised an exception while parsing");
        return CXR_ERR_INTERNAL;
    }
}

/* ------------------------------------------------ dictionary warm-up */

static pthread_mutex_t warm_mu = PTHREAD_MUTEX_INITIALIZER;
static pthread_t warm_thread;
static int warm_state; /* 0 not started, 1 running, 2 joined or never started */

static void *warm_main(void *) {
    dcmDataDict.rdlock();
    dcmDataDict.rdunlock();
    return NULL;
}

extern "C" void cxr_dicom_warmup(void) {
    pthread_mutex_lock(&warm_mu);
    if (warm_state == 0) warm_state = pthread_create(&warm_thread, NULL, warm_main, NULL) == 0 ? 1 : 2;
    pthread_mutex_unlock(&warm_mu);
}

extern "C" void cxr_dicom_warmup_wait(void) {
    pthread_mutex_lock(&warm_mu);
    if (warm_state == 1) pthread_join(warm_thread, NULL);
    warm_state = 2;
    pthread_mutex_unlock(&warm_mu);
}

extern "C" int shim_first_frame(shim_ds *ds, const cxr_meta *meta, const shim_decode_opts *o, shim_frame *fr,
                                char *err, size_t errlen) {
    shim_decode_opts none = {0, 0, 0, 0};
    try {
        return frame_impl(ds, meta, o ? o : &none, fr, err, errlen);
    } catch (const std::bad_alloc &) {
        shim_frame_free(fr);
        seterr(err, errlen, "out of memory while decoding pixel data");
        return CXR_ERR_NOMEM;
    } catch (...) {
        shim_frame_free(fr);
        seterr(err, errlen, "DCMTK raised an exception while decoding");
        return CXR_ERR_INTERNAL;
    }
}

extern "C" void shim_frame_free(shim_frame *fr) {
    if (!fr) return;
    if (!fr->data_borrowed) free(fr->data);
    fr->data_borrowed = 0;
    free(fr->codestream);
    fr->data = NULL;
    fr->codestream = NULL;
    fr->len = fr->codestream_len = 0;
}

extern "C" void shim_close(shim_ds *ds) {
    if (ds && ds->abandoned) return; /* an abandoned decoder may still use it */
    try {
        delete ds;
    } catch (...) {
    }
}
