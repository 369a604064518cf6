/*
 * dcmtk_shim.cpp — the only C++ in the tree: parses DICOM with DCMTK and
 * hands plain C structs back. It owns DCMTK's global set-up (codecs, logging
 * silenced) and the translation of DCMTK conditions and C++ exceptions into
 * CXR_ERR_* codes. It must not do pixel math (pixel.c does) nor decide
 * policy (ingest.c does): it reports what the file says and decodes frame 1.
 */
#include "dcmtk_shim.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmdata/dcistrmb.h"
#include "dcmtk/dcmdata/dcpixseq.h"
#include "dcmtk/dcmdata/dcpxitem.h"
#include "dcmtk/dcmdata/dcrledrg.h"
#include "dcmtk/dcmjpeg/djdecode.h"
#include "dcmtk/dcmjpls/djdecode.h"
#include "dcmtk/oflog/oflog.h"

#include <cstdio>
#include <cstdlib>
#include <cstring>
#include <new>
#include <string>
#include <vector>

struct shim_ds {
    DcmFileFormat ff;
    E_TransferSyntax xfer = EXS_Unknown;
    std::vector<uint16_t> mlut, vlut;
};

namespace {

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

void seterr(char *err, size_t errlen, const char *fmt, const char *a = "", const char *b = "") {
    if (err && errlen) snprintf(err, errlen, fmt, a, b);
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
        seterr(err, errlen, "LUT Descriptor declares %s bits per entry (8..16 expected)",
               std::to_string(bits).c_str());
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
        seterr(err, errlen, "LUT Data holds %s entries, descriptor declares %s",
               std::to_string(count).c_str(), std::to_string(n).c_str());
        return CXR_ERR_CORRUPT;
    }
    lut->n = n;
    lut->first = pixel_rep ? (int)(int16_t)d1 : (int)d1;
    lut->bits = bits;
    lut->data = store.data();
    return CXR_OK;
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
    default:
        break;
    }
    DcmXfer xf(x);
    if (x != EXS_Unknown && !xf.isEncapsulated()) return SHIM_TS_NATIVE;
    return SHIM_TS_UNSUPPORTED;
}

int open_impl(const void *buf, size_t len, shim_ds **out, cxr_meta *m, shim_info *info,
              char *err, size_t errlen) {
    init_once();
    shim_ds *ds = new shim_ds();
    DcmInputBufferStream is;
    is.setBuffer(buf, (offile_off_t)len);
    is.setEos();
    ds->ff.transferInit();
    OFCondition c = ds->ff.read(is, EXS_Unknown, EGL_noChange, DCM_MaxReadLength);
    ds->ff.transferEnd();
    DcmDataset *d = ds->ff.getDataset();
    if (c.bad()) {
        int trunc = (c == EC_StreamNotifyClient || c == EC_PrematureSequDelimitationItem ||
                     c == EC_SequEnd || c == EC_ItemEnd || c == EC_InvalidStream);
        /* a truncated buffer shows as "stream notify client" or premature end */
        if (c == EC_StreamNotifyClient) trunc = 1;
        seterr(err, errlen, trunc ? "DICOM data ends early or is malformed: %s"
                                  : "cannot parse as DICOM: %s", c.text());
        delete ds;
        return trunc ? CXR_ERR_TRUNCATED : CXR_ERR_NOT_DICOM;
    }
    ds->xfer = d->getOriginalXfer();
    int has_class = d->tagExists(DCM_SOPClassUID);
    info->has_pixel_data = d->tagExists(DCM_PixelData);
    info->float_pixels = d->tagExists(DCM_FloatPixelData) || d->tagExists(DCM_DoubleFloatPixelData);
    if (!has_class && !info->has_pixel_data && !info->float_pixels && !d->tagExists(DCM_Rows)) {
        seterr(err, errlen, "no DICOM attributes found (not a DICOM file?)");
        delete ds;
        return CXR_ERR_NOT_DICOM;
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
    info->encapsulated = xf.isEncapsulated();

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
        DcmPixelData *pd = NULL;
        DcmPixelSequence *seq = NULL;
        if (d->findAndGetElement(DCM_PixelData, el).good() && el) {
            pd = OFstatic_cast(DcmPixelData *, el);
            if (pd->getEncapsulatedRepresentation(ds->xfer, NULL, seq).good() && seq)
                info->n_fragments = (int)seq->card() - 1;
        }
    }
    *out = ds;
    return CXR_OK;
}

int j2k_frame(shim_ds *ds, shim_frame *fr, char *err, size_t errlen) {
    DcmDataset *d = ds->ff.getDataset();
    DcmElement *el = NULL;
    DcmPixelSequence *seq = NULL;
    if (d->findAndGetElement(DCM_PixelData, el).bad() || !el ||
        OFstatic_cast(DcmPixelData *, el)->getEncapsulatedRepresentation(ds->xfer, NULL, seq).bad() ||
        !seq) {
        seterr(err, errlen, "encapsulated Pixel Data has no fragment sequence");
        return CXR_ERR_CORRUPT;
    }
    unsigned long n = seq->card();
    /* item 0 is the Basic Offset Table; frame 1 is fragment 1 plus the
       fragments that follow it until one opens a new code stream (SOC). */
    std::vector<uint8_t> cs;
    for (unsigned long i = 1; i < n; i++) {
        DcmPixelItem *it = NULL;
        Uint8 *p = NULL;
        if (seq->getItem(it, i).bad() || !it) break;
        Uint32 l = it->getLength();
        if (l == 0) continue;
        if (it->getUint8Array(p).bad() || !p) break;
        int soc = l >= 2 && p[0] == 0xff && p[1] == 0x4f;
        int jp2 = l >= 12 && p[4] == 'j' && p[5] == 'P';
        if (!cs.empty() && (soc || jp2)) break;
        if ((unsigned long long)cs.size() + l > CXR_MAX_DECODED_BYTES) {
            seterr(err, errlen, "JPEG 2000 code stream larger than the decode cap");
            return CXR_ERR_DIMENSIONS;
        }
        cs.insert(cs.end(), p, p + l);
    }
    if (cs.empty()) {
        seterr(err, errlen, "encapsulated Pixel Data holds no fragment for frame 1");
        return CXR_ERR_TRUNCATED;
    }
    fr->codestream = (uint8_t *)malloc(cs.size());
    if (!fr->codestream) return CXR_ERR_NOMEM;
    memcpy(fr->codestream, cs.data(), cs.size());
    fr->codestream_len = cs.size();
    return CXR_OK;
}

int frame_impl(shim_ds *ds, const cxr_meta *m, shim_frame *fr, char *err, size_t errlen) {
    memset(fr, 0, sizeof *fr);
    DcmDataset *d = ds->ff.getDataset();
    shim_ts_kind kind = classify(ds->xfer);
    snprintf(fr->photometric, sizeof fr->photometric, "%s", m->photometric);
    fr->planar_config = m->planar_config;
    if (kind == SHIM_TS_J2K) return j2k_frame(ds, fr, err, errlen);
    if (kind == SHIM_TS_UNSUPPORTED) {
        seterr(err, errlen, "transfer syntax %s (%s) is not supported",
               DcmXfer(ds->xfer).getXferName(), m->transfer_syntax_uid);
        return CXR_ERR_TRANSFER_SYNTAX;
    }
    if (kind == SHIM_TS_DCMTK) {
        OFCondition c = d->chooseRepresentation(EXS_LittleEndianExplicit, NULL);
        if (c.bad() || !d->canWriteXfer(EXS_LittleEndianExplicit)) {
            seterr(err, errlen, "cannot decompress %s pixel data: %s",
                   DcmXfer(ds->xfer).getXferName(), c.bad() ? c.text() : "codec failed");
            return CXR_ERR_CORRUPT;
        }
        getstr(d, DCM_PhotometricInterpretation, fr->photometric, sizeof fr->photometric);
        fr->planar_config = getus(d, DCM_PlanarConfiguration, 0);
    }
    DcmElement *el = NULL;
    if (d->findAndGetElement(DCM_PixelData, el).bad() || !el) {
        seterr(err, errlen, "no Pixel Data (7FE0,0010)");
        return CXR_ERR_NOT_IMAGE;
    }
    unsigned long long bps = (unsigned long long)m->bits_allocated / 8;
    unsigned long long frame_bytes = (unsigned long long)m->rows * m->cols * m->samples_per_pixel * bps;
    unsigned long long want = frame_bytes * (unsigned long long)m->frames;
    unsigned long long have = el->getLength();
    if (have < want) {
        char a[32], b[32];
        snprintf(a, sizeof a, "%llu", have);
        snprintf(b, sizeof b, "%llu", want);
        seterr(err, errlen, "Pixel Data holds %s bytes, the header declares %s", a, b);
        return CXR_ERR_TRUNCATED;
    }
    fr->data = malloc((size_t)frame_bytes);
    if (!fr->data) return CXR_ERR_NOMEM;
    fr->len = (size_t)frame_bytes;
    OFCondition c;
    if (bps == 1) {
        Uint8 *p = NULL;
        c = el->getUint8Array(p);
        if (c.good() && p) memcpy(fr->data, p, (size_t)frame_bytes);
        else c = EC_IllegalCall;
    } else {
        Uint16 *p = NULL;
        c = el->getUint16Array(p);
        if (c.good() && p) memcpy(fr->data, p, (size_t)frame_bytes);
        else c = EC_IllegalCall;
    }
    if (c.bad()) {
        shim_frame_free(fr);
        seterr(err, errlen, "cannot read Pixel Data: %s", c.text());
        return CXR_ERR_CORRUPT;
    }
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

extern "C" int shim_first_frame(shim_ds *ds, const cxr_meta *meta, shim_frame *fr, char *err,
                                size_t errlen) {
    try {
        return frame_impl(ds, meta, fr, err, errlen);
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
    free(fr->data);
    free(fr->codestream);
    fr->data = NULL;
    fr->codestream = NULL;
    fr->len = fr->codestream_len = 0;
}

extern "C" void shim_close(shim_ds *ds) {
    try {
        delete ds;
    } catch (...) {
    }
}
