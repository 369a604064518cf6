/*
 * codec_check.c — walks one compressed frame (JPEG, JPEG-LS, JPEG 2000 main
 * header, RLE) with bounds before any decoder sees it, and refuses what a
 * codec would loop on, trust wrongly or read past, with a message that
 * names the marker, its byte offset and the rule. Plain C: no DCMTK, no
 * OpenJPEG, no allocation, one pass. It must not decode anything and must
 * not decide policy beyond "this frame is not decodable as declared".
 *
 * Why each rule exists is said where it is checked; the one that made this
 * file: DCMTK 3.6.7's DJCodecDecoder::scanJpegDataForBitDepth walks the
 * first fragment's markers looking for a SOF, and its `case 0xff01: // TEM`
 * does `break` without advancing the offset, so a TEM marker before the
 * frame header spins forever (fuzz_ingest found it).
 */
#include "codec_check.h"
#include "cxr_dicom.h"

#include <stdarg.h>
#include <stdio.h>
#include <string.h>

__attribute__((format(printf, 3, 4)))
static int fail(char *err, size_t errlen, const char *fmt, ...) {
    if (err && errlen) {
        va_list ap;
        va_start(ap, fmt);
        vsnprintf(err, errlen, fmt, ap);
        va_end(ap);
    }
    return CXR_ERR_CORRUPT;
}

__attribute__((format(printf, 3, 4)))
static void note(char *warn, size_t warnlen, const char *fmt, ...) {
    if (!warn || !warnlen || warn[0]) return; /* the first finding is kept */
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(warn, warnlen, fmt, ap);
    va_end(ap);
}

static unsigned be16(const uint8_t *p) { return (unsigned)p[0] << 8 | p[1]; }
static uint32_t be32(const uint8_t *p) { return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | p[3]; }
static uint32_t le32(const uint8_t *p) { return p[0] | (uint32_t)p[1] << 8 | (uint32_t)p[2] << 16 | (uint32_t)p[3] << 24; }

const char *codec_kind_name(codec_kind k) {
    switch (k) {
    case CODEC_JPEG_BASELINE: return "JPEG baseline";
    case CODEC_JPEG_EXTENDED: return "JPEG extended";
    case CODEC_JPEG_LOSSLESS: return "JPEG lossless";
    case CODEC_JPEGLS: return "JPEG-LS lossless";
    case CODEC_JPEGLS_NEAR: return "JPEG-LS near-lossless";
    case CODEC_J2K: return "JPEG 2000";
    case CODEC_RLE: return "RLE";
    }
    return "?";
}

/* ==================================================== JPEG and JPEG-LS
 * ITU T.81 B.1-B.2 and T.87 C.1-C.2: SOI, then marker segments (length
 * field >= 2, inside the buffer), one frame header, one or more scans each
 * followed by entropy-coded data, EOI. Fill bytes (FF) before a marker are
 * allowed; so are RSTn anywhere and bytes after EOI (fragment padding).
 * Missing EOI is refused: DCMTK 3.6.7 fails every such stream anyway
 * (IJG: "Illegal call"; CharLS: "Too much compressed data"). */

typedef struct {
    int ls;                  /* JPEG-LS rules */
    unsigned sof;            /* 0 until the frame header: its marker code */
    unsigned prec, nf;
    unsigned ids[4];
    unsigned maxval, t1, t2, t3, reset; /* JPEG-LS preset parameters (LSE id 1), 0 = default */
    int scans;
} jstate;

static const char *sof_name(unsigned m) {
    switch (m) {
    case 0xc0: return "SOF0 (baseline DCT)";
    case 0xc1: return "SOF1 (extended DCT)";
    case 0xc2: return "SOF2 (progressive DCT)";
    case 0xc3: return "SOF3 (lossless)";
    case 0xf7: return "SOF55 (JPEG-LS)";
    default: return "SOFn";
    }
}

static int jpeg_sof(jstate *st, const codec_spec *s, unsigned m, size_t at, const uint8_t *g, size_t gl, char *err,
                    size_t errlen, char *warn, size_t warnlen) {
    if (st->sof)
        return fail(err, errlen, "second frame header (marker FF%02X at byte %zu; hierarchical JPEG is not supported)", m,
                    at);
    if (!st->ls && m == 0xf7)
        return fail(err, errlen, "JPEG-LS frame header (FFF7 at byte %zu) under a %s transfer syntax", at,
                    codec_kind_name(s->kind));
    if (st->ls && m != 0xf7)
        return fail(err, errlen, "JPEG frame header FF%02X at byte %zu under a %s transfer syntax", m, at,
                    codec_kind_name(s->kind));
    if (m >= 0xc5 && m != 0xf7)
        return fail(err, errlen, "frame header FF%02X at byte %zu: %s JPEG is not supported by the decoder", m, at,
                    (m & 0x08) ? "arithmetic-coded" : "hierarchical");
    if (gl < 6) return fail(err, errlen, "frame header at byte %zu holds %zu bytes (at least 6)", at, gl);
    unsigned p = g[0], y = be16(g + 1), x = be16(g + 3), nf = g[5];
    if (gl != 6 + 3 * (size_t)nf)
        return fail(err, errlen, "frame header at byte %zu is %zu bytes long, %u components need %u", at, gl + 2, nf,
                    8 + 3 * nf);
    int ok_prec = m == 0xc0 ? p == 8 : (m == 0xc1 || m == 0xc2) ? (p == 8 || p == 12) : (p >= 2 && p <= 16);
    if (!ok_prec)
        return fail(err, errlen, "%s at byte %zu declares %u-bit samples (%s)", sof_name(m), at, p,
                    m == 0xc0 ? "8 only" : (m == 0xc1 || m == 0xc2) ? "8 or 12" : "2..16");
    if (y == 0)
        return fail(err, errlen, "frame header at byte %zu declares 0 lines (height from a DNL marker): not supported",
                    at);
    if (y != (unsigned)s->rows || x != (unsigned)s->cols || nf != (unsigned)s->samples)
        return fail(err, errlen,
                    "JPEG frame header declares %ux%u with %u components; the DICOM header says %dx%d with %d", x, y,
                    nf, s->cols, s->rows, s->samples);
    if (p > (unsigned)s->bits_allocated)
        return fail(err, errlen, "%s declares %u-bit samples; Bits Allocated is %d", sof_name(m), p,
                    s->bits_allocated);
    if (p <= 8 && s->bits_allocated > 8)
        return fail(err, errlen, "%s declares %u-bit samples, which decode to 8 bits; Bits Allocated is %d",
                    sof_name(m), p, s->bits_allocated);
    for (unsigned k = 0; k < nf; k++) {
        const uint8_t *c = g + 6 + 3 * k;
        unsigned h = c[1] >> 4, v = c[1] & 15;
        if (h < 1 || h > 4 || v < 1 || v > 4 || c[2] > 3)
            return fail(err, errlen, "frame header at byte %zu: component %u has sampling %ux%u, table %u (1..4, 0..3)",
                        at, k + 1, h, v, c[2]);
        for (unsigned j = 0; j < k; j++)
            if (st->ids[j] == c[0])
                return fail(err, errlen, "frame header at byte %zu names component %u twice", at, c[0]);
        st->ids[k] = c[0];
    }
    /* a stream of another process than the transfer syntax names: the
       decoder follows the stream (DCMTK picks the library by precision) */
    int want = s->kind == CODEC_JPEG_BASELINE ? (m == 0xc0 || m == 0xc1 || m == 0xc2) && p == 8
               : s->kind == CODEC_JPEG_EXTENDED ? (m == 0xc0 || m == 0xc1 || m == 0xc2)
               : s->kind == CODEC_JPEG_LOSSLESS ? m == 0xc3
                                                : 1;
    if (!want)
        note(warn, warnlen, "%s transfer syntax holds a %s stream of %u bits; decoded as the stream says",
             codec_kind_name(s->kind), sof_name(m), p);
    st->sof = m;
    st->prec = p;
    st->nf = nf;
    return CXR_OK;
}

static int jpeg_sos(jstate *st, const codec_spec *s, size_t at, const uint8_t *g, size_t gl, char *err,
                    size_t errlen, char *warn, size_t warnlen) {
    if (!st->sof) return fail(err, errlen, "scan (SOS at byte %zu) before any frame header", at);
    if (++st->scans > JPEG_MAX_SCANS)
        return fail(err, errlen, "more than %d scans in one frame (SOS at byte %zu): refused (each rescans the image)",
                    JPEG_MAX_SCANS, at);
    if (gl < 1) return fail(err, errlen, "empty scan header at byte %zu", at);
    unsigned ns = g[0];
    if (ns < 1 || ns > st->nf || gl != 4 + 2 * (size_t)ns)
        return fail(err, errlen, "scan header at byte %zu: %u components in %zu bytes (frame has %u)", at, ns, gl + 2,
                    st->nf);
    unsigned seen = 0;
    for (unsigned k = 0; k < ns; k++) {
        unsigned id = g[1 + 2 * k], t = g[2 + 2 * k], j;
        for (j = 0; j < st->nf && st->ids[j] != id; j++) {}
        if (j == st->nf) return fail(err, errlen, "scan header at byte %zu names component %u, not in the frame", at, id);
        if (seen & (1u << j)) return fail(err, errlen, "scan header at byte %zu names component %u twice", at, id);
        seen |= 1u << j;
        if (st->ls && t != 0)
            return fail(err, errlen, "JPEG-LS scan at byte %zu uses mapping table %u: not supported", at, t);
        if (!st->ls && ((t >> 4) > 3 || (t & 15) > 3))
            return fail(err, errlen, "scan header at byte %zu: Huffman table selectors %u/%u (0..3)", at, t >> 4, t & 15);
    }
    unsigned a = g[1 + 2 * ns], b = g[2 + 2 * ns], c = g[3 + 2 * ns], ah = c >> 4, al = c & 15;
    if (st->ls) {
        unsigned near = a, ilv = b, maxval = st->maxval ? st->maxval : (1u << st->prec) - 1;
        if (ilv > 2) return fail(err, errlen, "JPEG-LS scan at byte %zu: interleave mode %u (0..2)", at, ilv);
        if (ilv == 0 && ns != 1)
            return fail(err, errlen, "JPEG-LS scan at byte %zu: %u components without interleaving", at, ns);
        unsigned nmax = maxval / 2 < 255 ? maxval / 2 : 255;
        if (near > nmax)
            return fail(err, errlen, "JPEG-LS scan at byte %zu: NEAR %u exceeds %u (MAXVAL %u)", at, near, nmax, maxval);
        if (ah != 0 || al >= st->prec)
            return fail(err, errlen, "JPEG-LS scan at byte %zu: point transform %u for %u-bit samples", at, al, st->prec);
        if (near && s->kind == CODEC_JPEGLS)
            note(warn, warnlen, "JPEG-LS lossless transfer syntax holds a near-lossless stream (NEAR %u)", near);
        /* T.87 C.2.4.1.1: the thresholds CharLS derives its contexts from */
        if (st->t1 && (st->t1 < near + 1 || st->t1 > maxval))
            return fail(err, errlen, "JPEG-LS preset T1 %u outside %u..%u", st->t1, near + 1, maxval);
        unsigned lo2 = st->t1 ? st->t1 : near + 1, lo3 = st->t2 ? st->t2 : lo2;
        if (st->t2 && (st->t2 < lo2 || st->t2 > maxval))
            return fail(err, errlen, "JPEG-LS preset T2 %u outside %u..%u", st->t2, lo2, maxval);
        if (st->t3 && (st->t3 < lo3 || st->t3 > maxval))
            return fail(err, errlen, "JPEG-LS preset T3 %u outside %u..%u", st->t3, lo3, maxval);
        return CXR_OK;
    }
    unsigned ss = a, se = b;
    switch (st->sof) {
    case 0xc0:
    case 0xc1:
        /* T.81 wants 0, 63, 0, 0; encoders write other values (WG04's
           JPLY files: Se 0) and IJG ignores them in sequential mode */
        break;
    case 0xc2:
        if (se > 63 || ss > se || (ss == 0) != (se == 0) || (ss > 0 && ns != 1) || ah > 13 || al > 13)
            return fail(err, errlen, "progressive scan at byte %zu: Ss %u, Se %u, Ah %u, Al %u, %u components", at, ss,
                        se, ah, al, ns);
        break;
    default: /* 0xc3 */
        if (ss < 1 || ss > 7 || se != 0 || ah != 0 || al >= st->prec)
            return fail(err, errlen,
                        "lossless scan at byte %zu: predictor %u (1..7), Se %u (0), Ah %u (0), point transform %u "
                        "(below %u)",
                        at, ss, se, ah, al, st->prec);
        break;
    }
    return CXR_OK;
}

/* DHT (T.81 B.2.4.2): tables of 17 + sum(counts) bytes, filling the segment */
static int jpeg_dht(size_t at, const uint8_t *g, size_t gl, char *err, size_t errlen) {
    size_t k = 0;
    while (k < gl) {
        if (gl - k < 17) return fail(err, errlen, "Huffman table segment at byte %zu ends inside a table header", at);
        unsigned tc = g[k] >> 4, th = g[k] & 15, sum = 0;
        if (tc > 1 || th > 3)
            return fail(err, errlen, "Huffman table at byte %zu: class %u, id %u (0..1, 0..3)", at, tc, th);
        for (int i = 1; i <= 16; i++) sum += g[k + i];
        if (sum > 256 || sum > gl - k - 17)
            return fail(err, errlen, "Huffman table at byte %zu declares %u codes, %zu bytes remain (256 at most)", at,
                        sum, gl - k - 17);
        k += 17 + sum;
    }
    return CXR_OK;
}

/* DQT (B.2.4.1): 65 or 129 bytes per table */
static int jpeg_dqt(size_t at, const uint8_t *g, size_t gl, char *err, size_t errlen) {
    size_t k = 0;
    while (k < gl) {
        unsigned pq = g[k] >> 4, tq = g[k] & 15;
        size_t need = pq ? 129 : 65;
        if (pq > 1 || tq > 3 || gl - k < need)
            return fail(err, errlen, "quantisation table at byte %zu: precision %u, id %u, %zu bytes for %zu", at, pq,
                        tq, gl - k, need);
        k += need;
    }
    return CXR_OK;
}

/* LSE (T.87 C.2.4.1): preset parameters are kept for the scan check;
 * mapping tables and oversize dimensions are not for radiographs. */
static int jpeg_lse(jstate *st, size_t at, const uint8_t *g, size_t gl, char *err, size_t errlen) {
    if (gl < 1) return fail(err, errlen, "empty JPEG-LS LSE segment at byte %zu", at);
    if (g[0] == 1) {
        if (gl != 11) return fail(err, errlen, "JPEG-LS preset parameters at byte %zu: %zu bytes (13 expected)", at, gl + 2);
        st->maxval = be16(g + 1);
        st->t1 = be16(g + 3);
        st->t2 = be16(g + 5);
        st->t3 = be16(g + 7);
        st->reset = be16(g + 9);
        unsigned top = st->sof ? (1u << st->prec) - 1 : 65535;
        if (st->maxval > top)
            return fail(err, errlen, "JPEG-LS preset MAXVAL %u exceeds %u for %u-bit samples", st->maxval, top, st->prec);
        unsigned mv = st->maxval ? st->maxval : top;
        if (st->reset && (st->reset < 3 || st->reset > (mv > 255 ? mv : 255)))
            return fail(err, errlen, "JPEG-LS preset RESET %u outside 3..%u", st->reset, mv > 255 ? mv : 255);
        return CXR_OK;
    }
    if (g[0] == 2 || g[0] == 3)
        return fail(err, errlen, "JPEG-LS mapping table (LSE id %u at byte %zu): palettes are not supported", g[0], at);
    return fail(err, errlen, "JPEG-LS LSE segment at byte %zu has id %u (only preset parameters, id 1, are supported)",
                at, g[0]);
}

/* Skip entropy-coded data from i; returns the offset of the FF of the next
 * marker, or n. JPEG stuffs 00 after FF; JPEG-LS stuffs a 0 bit (next byte
 * below 0x80); RSTn and fill bytes belong to the data. */
static size_t skip_entropy(const uint8_t *p, size_t n, size_t i, int ls) {
    while (i < n) {
        const uint8_t *f = memchr(p + i, 0xff, n - i);
        if (!f) return n;
        i = (size_t)(f - p);
        if (i + 1 >= n) return n;
        unsigned b = p[i + 1];
        if (b == 0x00 || (ls && b < 0x80) || (b >= 0xd0 && b <= 0xd7)) {
            i += 2;
            continue;
        }
        if (b == 0xff) {
            i++;
            continue;
        }
        return i;
    }
    return n;
}

static int check_jpeg(const codec_spec *s, const uint8_t *p, size_t n, char *err, size_t errlen, char *warn,
                      size_t warnlen) {
    jstate st;
    memset(&st, 0, sizeof st);
    st.ls = s->kind == CODEC_JPEGLS || s->kind == CODEC_JPEGLS_NEAR;
    if (n < 4 || p[0] != 0xff || p[1] != 0xd8)
        return fail(err, errlen, "%s frame does not start with SOI (FFD8): %02X %02X", codec_kind_name(s->kind),
                    n > 0 ? p[0] : 0, n > 1 ? p[1] : 0);
    size_t i = 2;
    for (;;) {
        if (i >= n)
            return fail(err, errlen, "%s frame of %zu bytes ends without EOI (FFD9) after %d scan(s): truncated",
                        codec_kind_name(s->kind), n, st.scans);
        if (p[i] != 0xff) return fail(err, errlen, "byte %zu is %02X where a marker (FFxx) was expected", i, p[i]);
        while (i < n && p[i] == 0xff) i++; /* fill bytes */
        if (i >= n) continue;
        size_t at = i - 1;
        unsigned m = p[i++];
        if (m == 0x01)
            return fail(err, errlen,
                        "TEM marker (FF01) at byte %zu: DCMTK 3.6.7's JPEG bit-depth scan never returns on it "
                        "(refused)",
                        at);
        if (m == 0x00 || m <= 0xbf)
            return fail(err, errlen, "%s FF%02X at byte %zu where a marker was expected",
                        m == 0x00 ? "stuffed byte" : "reserved marker", m, at);
        if (m >= 0xd0 && m <= 0xd7) continue; /* RSTn outside a scan: ignored by the decoders */
        if (m == 0xd8) return fail(err, errlen, "second SOI (FFD8) at byte %zu", at);
        if (m == 0xd9) {
            if (!st.scans) return fail(err, errlen, "EOI (FFD9) at byte %zu before any scan", at);
            return CXR_OK;
        }
        if (n - i < 2) return fail(err, errlen, "segment FF%02X at byte %zu: length field cut off", m, at);
        size_t len = be16(p + i);
        if (len < 2) return fail(err, errlen, "segment FF%02X at byte %zu declares length %zu (at least 2)", m, at, len);
        if (len > n - i)
            return fail(err, errlen, "segment FF%02X at byte %zu declares %zu bytes, %zu remain in the frame", m, at, len,
                        n - i);
        const uint8_t *g = p + i + 2;
        size_t gl = len - 2;
        i += len;
        int rc = CXR_OK;
        if ((m >= 0xc0 && m <= 0xcf && m != 0xc4 && m != 0xc8 && m != 0xcc) || m == 0xf7) {
            rc = jpeg_sof(&st, s, m, at, g, gl, err, errlen, warn, warnlen);
        } else if (m == 0xda) {
            rc = jpeg_sos(&st, s, at, g, gl, err, errlen, warn, warnlen);
            if (rc == CXR_OK) {
                size_t e = skip_entropy(p, n, i, st.ls);
                if (e == i) return fail(err, errlen, "scan at byte %zu has no entropy-coded data", at);
                i = e;
            }
        } else if (m == 0xc4) {
            rc = jpeg_dht(at, g, gl, err, errlen);
        } else if (m == 0xdb) {
            rc = jpeg_dqt(at, g, gl, err, errlen);
        } else if (m == 0xdd) {
            if (gl != 2) rc = fail(err, errlen, "restart interval segment at byte %zu is %zu bytes (4)", at, len);
        } else if (m == 0xf8 && st.ls) {
            rc = jpeg_lse(&st, at, g, gl, err, errlen);
        } else if (m >= 0xe0 && m <= 0xef) {
            /* APPn: opaque */
        } else if (m == 0xfe) {
            /* COM */
        } else if (m == 0xcc) {
            rc = fail(err, errlen, "arithmetic conditioning (DAC at byte %zu): arithmetic coding is not supported", at);
        } else if (m == 0xdc) {
            rc = fail(err, errlen, "DNL marker at byte %zu: height from a DNL is not supported", at);
        } else if (m == 0xde || m == 0xdf) {
            rc = fail(err, errlen, "marker FF%02X at byte %zu: hierarchical JPEG is not supported", m, at);
        } else {
            rc = fail(err, errlen, "marker FF%02X at byte %zu is not valid in a %s stream", m, at,
                      codec_kind_name(s->kind));
        }
        if (rc != CXR_OK) return rc;
    }
}

/* ====================================================== JPEG 2000
 * T.800 A.4-A.6: SOC, SIZ right after it, main-header marker segments with
 * lengths inside the buffer, COD and QCD present, then a first SOT. A JP2
 * file (ISO 15444-1 Annex I) is walked box by box to its code stream. */

static int caps(uint64_t w, uint64_t h, unsigned nc, uint64_t tiles, char *err, size_t errlen) {
    if (w > CXR_MAX_DIM || h > CXR_MAX_DIM || w * h > CXR_MAX_PIXELS || nc < 1 || nc > 4 || tiles > J2K_MAX_TILES) {
        if (err && errlen)
            snprintf(err, errlen,
                     "JPEG 2000 SIZ declares %llux%llu, %u components, %llu tiles (caps: %d a side, %llu pixels, 4 "
                     "components, %d tiles)",
                     (unsigned long long)w, (unsigned long long)h, nc, (unsigned long long)tiles, CXR_MAX_DIM,
                     (unsigned long long)CXR_MAX_PIXELS, J2K_MAX_TILES);
        return CXR_ERR_DIMENSIONS;
    }
    return CXR_OK;
}

int codec_check_j2k_caps(const uint8_t *cs, size_t len, char *err, size_t errlen) {
    size_t lim = len < 65536 ? len : 65536;
    for (size_t i = 0; i + 4 <= lim; i++) {
        if (cs[i] != 0xff || cs[i + 1] != 0x4f || cs[i + 2] != 0xff || cs[i + 3] != 0x51) continue;
        const uint8_t *s = cs + i + 4; /* Lsiz */
        if (len - (i + 4) < 38) return CXR_OK;
        uint32_t x1 = be32(s + 4), y1 = be32(s + 8), x0 = be32(s + 12), y0 = be32(s + 16);
        uint32_t tw = be32(s + 20), th = be32(s + 24), tx0 = be32(s + 28), ty0 = be32(s + 32);
        unsigned nc = be16(s + 36);
        if (x1 <= x0 || y1 <= y0 || tw == 0 || th == 0 || tx0 > x0 || ty0 > y0) return CXR_OK; /* OpenJPEG refuses */
        uint64_t tiles = (((uint64_t)x1 - tx0 + tw - 1) / tw) * (((uint64_t)y1 - ty0 + th - 1) / th);
        return caps(x1 - x0, y1 - y0, nc, tiles, err, errlen);
    }
    return CXR_OK;
}

/* The code stream inside a JP2 file: boxes of LBox (0: to the end, 1: an
 * 8-byte XLBox follows) and TBox; 'jp2c' holds it. */
static int jp2_codestream(const uint8_t *p, size_t n, size_t *off, size_t *len, char *err, size_t errlen) {
    size_t i = 0;
    while (n - i >= 8) {
        uint64_t bl = be32(p + i);
        size_t hdr = 8;
        if (bl == 1) {
            if (n - i < 16) break;
            bl = (uint64_t)be32(p + i + 8) << 32 | be32(p + i + 12);
            hdr = 16;
        } else if (bl == 0) {
            bl = n - i;
        }
        if (bl < hdr || bl > n - i)
            return fail(err, errlen, "JP2 box '%.4s' at byte %zu declares %llu bytes, %zu remain", (const char *)p + i + 4,
                        i, (unsigned long long)bl, n - i);
        if (!memcmp(p + i + 4, "jp2c", 4)) {
            *off = i + hdr;
            *len = (size_t)bl - hdr;
            return CXR_OK;
        }
        i += (size_t)bl;
    }
    return fail(err, errlen, "JP2 file without a code stream box (jp2c)");
}

static int check_j2k(const codec_spec *s, const uint8_t *p, size_t n, char *err, size_t errlen) {
    static const uint8_t jp2sig[12] = {0, 0, 0, 12, 'j', 'P', ' ', ' ', 13, 10, 0x87, 10};
    size_t base = 0;
    if (n >= 12 && !memcmp(p, jp2sig, 12)) {
        size_t off = 0, len = 0;
        int rc = jp2_codestream(p, n, &off, &len, err, errlen);
        if (rc != CXR_OK) return rc;
        base = off;
        n = off + len;
    }
    const uint8_t *c = p + base;
    size_t cn = n - base;
    if (cn < 2 || c[0] != 0xff || c[1] != 0x4f)
        return fail(err, errlen, "JPEG 2000 frame does not start with SOC (FF4F) or a JP2 signature");
    if (cn < 4 || c[2] != 0xff || c[3] != 0x51) return fail(err, errlen, "JPEG 2000: SIZ (FF51) does not follow SOC");
    if (cn < 6) return fail(err, errlen, "JPEG 2000: SIZ cut off");
    size_t lsiz = be16(c + 4);
    if (lsiz < 41 || lsiz > cn - 4)
        return fail(err, errlen, "JPEG 2000 SIZ declares %zu bytes, %zu remain (at least 41)", lsiz, cn - 4);
    const uint8_t *z = c + 4;
    uint32_t x1 = be32(z + 4), y1 = be32(z + 8), x0 = be32(z + 12), y0 = be32(z + 16);
    uint32_t tw = be32(z + 20), th = be32(z + 24), tx0 = be32(z + 28), ty0 = be32(z + 32);
    unsigned nc = be16(z + 36);
    if (nc < 1 || nc > 4) return caps(x1 - x0, y1 - y0, nc, 0, err, errlen);
    if (lsiz != 38 + 3 * (size_t)nc)
        return fail(err, errlen, "JPEG 2000 SIZ is %zu bytes long, %u components need %u", lsiz, nc, 38 + 3 * nc);
    if (x1 <= x0 || y1 <= y0 || tw == 0 || th == 0 || tx0 > x0 || ty0 > y0 || (uint64_t)tx0 + tw <= x0 ||
        (uint64_t)ty0 + th <= y0)
        return fail(err, errlen,
                    "JPEG 2000 SIZ geometry is inconsistent: image %u..%u x %u..%u, tiles %ux%u from %u,%u", x0, x1, y0,
                    y1, tw, th, tx0, ty0);
    uint64_t tiles = (((uint64_t)x1 - tx0 + tw - 1) / tw) * (((uint64_t)y1 - ty0 + th - 1) / th);
    int rc = caps(x1 - x0, y1 - y0, nc, tiles, err, errlen);
    if (rc != CXR_OK) return rc;
    for (unsigned k = 0; k < nc; k++) {
        const uint8_t *q = z + 38 + 3 * k;
        unsigned bits = (q[0] & 0x7f) + 1;
        if (bits > 16 || q[1] == 0 || q[2] == 0)
            return fail(err, errlen, "JPEG 2000 component %u: %u-bit samples, sub-sampling %ux%u (1..16 bits, factors >= 1)",
                        k, bits, q[1], q[2]);
    }
    if (x1 - x0 != (uint32_t)s->cols || y1 - y0 != (uint32_t)s->rows || nc != (unsigned)s->samples)
        return fail(err, errlen, "JPEG 2000 stream is %ux%u with %u components; header says %dx%d with %d", x1 - x0,
                    y1 - y0, nc, s->cols, s->rows, s->samples);
    size_t i = 4 + lsiz;
    int cod = 0, qcd = 0;
    for (;;) {
        if (cn - i < 4) return fail(err, errlen, "JPEG 2000 main header ends at byte %zu without a tile (SOT)", base + i);
        if (c[i] != 0xff || c[i + 1] < 0x30)
            return fail(err, errlen, "JPEG 2000 main header: %02X %02X at byte %zu where a marker was expected", c[i],
                        c[i + 1], base + i);
        unsigned m = 0xff00u | c[i + 1];
        size_t len = be16(c + i + 2);
        if (len < 2 || len > cn - i - 2)
            return fail(err, errlen, "JPEG 2000 marker %04X at byte %zu declares %zu bytes, %zu remain", m, base + i, len,
                        cn - i - 2);
        if (m == 0xff90) break; /* SOT */
        const uint8_t *g = c + i + 4;
        size_t gl = len - 2;
        if (m == 0xff52) { /* COD: Scod, SGcod (4), SPcod (5 +) */
            if (gl < 10) return fail(err, errlen, "JPEG 2000 COD at byte %zu is %zu bytes (at least 12)", base + i, len);
            unsigned prog = g[1], layers = be16(g + 2), levels = g[5], xcb = g[6], ycb = g[7];
            if (prog > 4 || layers == 0 || levels > J2K_MAX_LEVELS || xcb > 8 || ycb > 8 || xcb + ycb > 8 || g[9] > 1)
                return fail(err, errlen,
                            "JPEG 2000 COD at byte %zu: progression %u, %u layers, %u levels, code-blocks 2^%u x 2^%u, "
                            "transform %u (0..4, >= 1, <= %d, exponents <= 8 summing <= 8, 0..1)",
                            base + i, prog, layers, levels, xcb + 2, ycb + 2, g[9], J2K_MAX_LEVELS);
            cod = 1;
        } else if (m == 0xff5c) {
            qcd = 1;
        } else if (m == 0xff51 || m == 0xff4f || m == 0xff93 || m == 0xffd9) {
            return fail(err, errlen, "JPEG 2000 marker %04X at byte %zu inside the main header", m, base + i);
        }
        i += 2 + len;
    }
    if (!cod || !qcd)
        return fail(err, errlen, "JPEG 2000 main header has no %s segment", !cod ? "COD (FF52)" : "QCD (FF5C)");
    return CXR_OK;
}

/* ============================================================ RLE
 * PS3.5 Annex G: a 64-byte header (segment count, 15 offsets) and one
 * PackBits segment per byte plane. DCMTK fills whatever a short segment
 * leaves out and succeeds; a radiograph with a zero-filled tail must not
 * reach the model, so each segment's decoded length is counted here first
 * (counting stops at the plane size: a run-length bomb costs nothing). */
static int check_rle(const codec_spec *s, const uint8_t *p, size_t n, char *err, size_t errlen) {
    size_t plane = (size_t)s->rows * (size_t)s->cols;
    unsigned want = (unsigned)(s->samples * (s->bits_allocated / 8));
    if (n < 64) return fail(err, errlen, "RLE frame of %zu bytes has no complete 64-byte header", n);
    uint32_t nseg = le32(p);
    if (nseg != want) return fail(err, errlen, "RLE header declares %u segments, the image needs %u", (unsigned)nseg, want);
    for (uint32_t i = 0; i < nseg; i++) {
        size_t off = le32(p + 4 + 4 * i), end = i + 1 < nseg ? le32(p + 8 + 4 * i) : n;
        if (off < 64 || off > end || end > n)
            return fail(err, errlen, "RLE segment %u lies outside its fragment", (unsigned)i + 1);
        size_t got = 0, k = off;
        while (got < plane && k < end) {
            int c = (int8_t)p[k++];
            if (c >= 0) {
                size_t lit = (size_t)c + 1;
                got += lit < end - k ? lit : end - k;
                k += lit < end - k ? lit : end - k;
            } else if (c != -128 && k < end) {
                got += (size_t)(1 - c);
                k++;
            }
        }
        if (got < plane)
            return fail(err, errlen, "RLE segment %u decodes to %zu bytes, the frame needs %zu", (unsigned)i + 1, got,
                        plane);
    }
    return CXR_OK;
}

int codec_check(const codec_spec *s, const uint8_t *p, size_t n, char *err, size_t errlen, char *warn,
                size_t warnlen) {
    if (err && errlen) err[0] = '\0';
    if (warn && warnlen) warn[0] = '\0';
    if (!s || (!p && n)) return CXR_ERR_ARG;
    switch (s->kind) {
    case CODEC_JPEG_BASELINE:
    case CODEC_JPEG_EXTENDED:
    case CODEC_JPEG_LOSSLESS:
    case CODEC_JPEGLS:
    case CODEC_JPEGLS_NEAR:
        return check_jpeg(s, p, n, err, errlen, warn, warnlen);
    case CODEC_J2K:
        return check_j2k(s, p, n, err, errlen);
    case CODEC_RLE:
        return check_rle(s, p, n, err, errlen);
    }
    return CXR_ERR_ARG;
}
