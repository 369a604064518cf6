/*
 * cxr_common.c — names of the shared error codes. Nothing else.
 */
#include "cxr_common.h"

const char *cxr_strerror(int code) {
    switch (code) {
    case CXR_OK: return "ok";
    case CXR_ERR_IO: return "io";
    case CXR_ERR_NOMEM: return "out-of-memory";
    case CXR_ERR_ARG: return "bad-argument";
    case CXR_ERR_NOT_DICOM: return "not-dicom";
    case CXR_ERR_NOT_IMAGE: return "not-an-image";
    case CXR_ERR_PHOTOMETRIC: return "unsupported-photometric";
    case CXR_ERR_DIMENSIONS: return "bad-dimensions";
    case CXR_ERR_TRUNCATED: return "truncated";
    case CXR_ERR_CORRUPT: return "corrupt";
    case CXR_ERR_TRANSFER_SYNTAX: return "unsupported-transfer-syntax";
    case CXR_ERR_PIXEL_FORMAT: return "bad-pixel-format";
    case CXR_ERR_TOO_SMALL: return "too-small";
    case CXR_ERR_NOT_CHEST: return "not-chest";
    case CXR_ERR_LATERAL: return "lateral-view";
    case CXR_ERR_DECODE_TIMEOUT: return "decode-timeout";
    case CXR_ERR_FORMAT: return "bad-format";
    case CXR_ERR_MISSING: return "missing";
    case CXR_ERR_SHAPE: return "bad-shape";
    case CXR_ERR_AUDIT: return "audit-write-failed";
    case CXR_ERR_DB: return "audit-db-unusable";
    case CXR_ERR_SR: return "sr-failed";
    case CXR_ERR_WORKER: return "worker-crashed";
    case CXR_ERR_TIMEOUT: return "worker-timeout";
    case CXR_ERR_MEMLIMIT: return "worker-memory-limit";
    case CXR_ERR_PROTOCOL: return "protocol";
    case CXR_ERR_BUSY: return "busy";
    default: return "internal";
    }
}

