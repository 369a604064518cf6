/*
 * cxr_common.h — what every part of cxrvqa shares: the error codes. Each
 * library returns CXR_OK (0) or a negative CXR_ERR_* code and writes the
 * detail into a caller-supplied buffer of CXR_ERRMSG_MAX bytes.
 */
#ifndef CXR_COMMON_H
#define CXR_COMMON_H

#ifdef __cplusplus
extern "C" {
#endif

enum {
    CXR_OK = 0,
    CXR_ERR_IO = -1,           /* file cannot be opened or read */
    CXR_ERR_NOMEM = -2,        /* allocation failed */
    CXR_ERR_ARG = -3,          /* invalid argument from the caller */
    CXR_ERR_NOT_DICOM = -10,   /* neither DICOM nor PNG, or unparsable DICOM */
    CXR_ERR_NOT_IMAGE = -11,   /* SOP class / data set without an image */
    CXR_ERR_PHOTOMETRIC = -12, /* photometric interpretation not supported */
    CXR_ERR_DIMENSIONS = -13,  /* zero, inconsistent or absurd dimensions */
    CXR_ERR_TRUNCATED = -14,   /* pixel data shorter than declared */
    CXR_ERR_CORRUPT = -15,     /* compressed stream or LUT cannot be decoded */
    CXR_ERR_TRANSFER_SYNTAX = -16, /* transfer syntax not supported */
    CXR_ERR_PIXEL_FORMAT = -17,    /* bits allocated / stored / high bit invalid */
    CXR_ERR_TOO_SMALL = -18,   /* image too small to be a radiograph */
    CXR_ERR_NOT_CHEST = -19,   /* modality or body part is not a chest radiograph */
    CXR_ERR_LATERAL = -20,     /* lateral view; the model expects frontal */
    CXR_ERR_DECODE_TIMEOUT = -21, /* a decoder ran past its deadline and was abandoned */
    /* model files */
    CXR_ERR_FORMAT = -30,      /* malformed model file (bad magic, bad key, bad type) */
    CXR_ERR_MISSING = -31,     /* a required tensor or key is missing */
    CXR_ERR_SHAPE = -32,       /* a tensor has the wrong shape */
    /* services: audit store, SR writer, workers */
    CXR_ERR_AUDIT = -40,       /* the audit row could not be written: the request fails closed */
    CXR_ERR_DB = -41,          /* audit database unusable (schema, network fs, corrupt, tampered) */
    CXR_ERR_SR = -42,          /* the structured report could not be built or written */
    CXR_ERR_WORKER = -43,      /* a worker process crashed or broke the protocol */
    CXR_ERR_TIMEOUT = -44,     /* a worker exceeded its time limit and was killed */
    CXR_ERR_MEMLIMIT = -45,    /* a worker exceeded its memory limit */
    CXR_ERR_PROTOCOL = -46,    /* malformed frame on the worker channel */
    CXR_ERR_BUSY = -47,        /* queue full / resource locked too long */
    CXR_ERR_INTERNAL = -99
};

/* Short constant name of an error code ("not-dicom", "truncated" …). */
const char *cxr_strerror(int code);

#define CXR_ERRMSG_MAX 512

#ifdef __cplusplus
}
#endif
#endif /* CXR_COMMON_H */
