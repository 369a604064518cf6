/*
 * store_scu.cpp — C-STORE of one file with DCMTK's DcmSCU (store_scu.h).
 * The only dcmnet code of the project; DCMTK's own logging is kept quiet
 * (the caller gets the reason in err).
 */
#include "store_scu.h"
#include "cxr_common.h"

#include "dcmtk/config/osconfig.h"
#include "dcmtk/dcmdata/dctk.h"
#include "dcmtk/dcmnet/scu.h"
#include "dcmtk/oflog/oflog.h"

#include <cctype>
#include <cstdarg>
#include <cstdio>
#include <cstdlib>
#include <cstring>

static void seterr(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || !errlen) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

extern "C" int cxr_scu_peer_parse(const char *spec, cxr_scu_peer *p, char *err, size_t errlen) {
    memset(p, 0, sizeof *p);
    const char *at = spec ? strchr(spec, '@') : NULL;
    const char *colon = at ? strrchr(at, ':') : NULL;
    if (!at || !colon || at == spec || colon == at + 1 || !colon[1]) {
        seterr(err, errlen, "'%s': expected AET@HOST:PORT (e.g. PACS@pacs.example.org:104)", spec ? spec : "");
        return CXR_ERR_ARG;
    }
    size_t al = (size_t)(at - spec), hl = (size_t)(colon - at - 1);
    if (al > 16 || memchr(spec, '\\', al)) {
        seterr(err, errlen, "'%.*s': an AE title has 1..16 characters and no backslash", (int)al, spec);
        return CXR_ERR_ARG;
    }
    if (hl >= sizeof p->host) {
        seterr(err, errlen, "host name too long");
        return CXR_ERR_ARG;
    }
    char *end = NULL;
    long port = strtol(colon + 1, &end, 10);
    if (!end || *end || port < 1 || port > 65535) {
        seterr(err, errlen, "'%s': port must be 1..65535", colon + 1);
        return CXR_ERR_ARG;
    }
    memcpy(p->aet, spec, al);
    memcpy(p->host, at + 1, hl);
    p->port = (int)port;
    return CXR_OK;
}

extern "C" int cxr_scu_store_file(const cxr_scu_peer *p, const char *calling_aet, const char *path, int timeout_s,
                                  char *err, size_t errlen) {
    if (!p || !path) return CXR_ERR_ARG;
    try {
        OFLog::configure(OFLogger::FATAL_LOG_LEVEL);
        DcmFileFormat ff;
        if (ff.loadFile(path).bad()) {
            seterr(err, errlen, "%s: not a readable DICOM file", path);
            return CXR_ERR_NOT_DICOM;
        }
        OFString sop_class, sop_uid;
        DcmMetaInfo *meta = ff.getMetaInfo();
        if (!meta || meta->findAndGetOFString(DCM_MediaStorageSOPClassUID, sop_class).bad() || sop_class.empty()) {
            seterr(err, errlen, "%s: no Media Storage SOP Class UID", path);
            return CXR_ERR_NOT_DICOM;
        }
        meta->findAndGetOFString(DCM_MediaStorageSOPInstanceUID, sop_uid);
        const char *own = DcmXfer(ff.getDataset()->getOriginalXfer()).getXferID();
        OFList<OFString> xfers;
        xfers.push_back(own);
        if (strcmp(own, UID_LittleEndianExplicitTransferSyntax)) xfers.push_back(UID_LittleEndianExplicitTransferSyntax);
        if (strcmp(own, UID_LittleEndianImplicitTransferSyntax)) xfers.push_back(UID_LittleEndianImplicitTransferSyntax);
        DcmSCU scu;
        scu.setAETitle(calling_aet && *calling_aet ? calling_aet : "CXRVQA");
        scu.setPeerAETitle(p->aet);
        scu.setPeerHostName(p->host);
        scu.setPeerPort((Uint16)p->port);
        Uint32 t = timeout_s > 0 ? (Uint32)timeout_s : 30;
        scu.setConnectionTimeout((Sint32)t);
        scu.setACSETimeout(t);
        scu.setDIMSETimeout(t);
        scu.setDIMSEBlockingMode(DIMSE_NONBLOCKING);
        scu.addPresentationContext(sop_class, xfers);
        OFCondition c = scu.initNetwork();
        if (c.good()) c = scu.negotiateAssociation();
        if (c.bad()) {
            seterr(err, errlen, "%s@%s:%d: no association: %s", p->aet, p->host, p->port, c.text());
            return CXR_ERR_IO;
        }
        T_ASC_PresentationContextID pc = scu.findAnyPresentationContextID(sop_class, own);
        if (pc == 0) {
            scu.releaseAssociation();
            seterr(err, errlen, "%s@%s:%d: accepts no presentation context for %s", p->aet, p->host, p->port,
                   sop_class.c_str());
            return CXR_ERR_IO;
        }
        Uint16 status = 0;
        c = scu.sendSTORERequest(pc, OFFilename(path), NULL, status);
        if (c.bad()) {
            scu.abortAssociation();
            seterr(err, errlen, "%s@%s:%d: C-STORE of %s failed: %s", p->aet, p->host, p->port, sop_uid.c_str(),
                   c.text());
            return CXR_ERR_IO;
        }
        scu.releaseAssociation();
        /* success 0x0000, warnings 0xB000 / 0xB007 / 0xB006 */
        if (status != 0 && (status & 0xf000) != 0xb000) {
            seterr(err, errlen, "%s@%s:%d: C-STORE of %s answered status 0x%04x", p->aet, p->host, p->port,
                   sop_uid.c_str(), status);
            return CXR_ERR_SR;
        }
        return CXR_OK;
    } catch (...) {
        seterr(err, errlen, "C-STORE: internal error");
        return CXR_ERR_INTERNAL;
    }
}
