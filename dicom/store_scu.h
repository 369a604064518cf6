/*
 * store_scu.h — sending a DICOM file to a peer by C-STORE (DCMTK dcmnet's
 * DcmSCU behind a C interface): what `cxrvqa screen --store-scu` uses to put
 * its structured reports into the site's PACS. One association per call,
 * proposing the file's own SOP class in its own transfer syntax and in
 * explicit / implicit VR little endian. Plain TCP: a peer that requires TLS
 * needs a TLS-terminating proxy in front of it (see README).
 */
#ifndef CXR_STORE_SCU_H
#define CXR_STORE_SCU_H

#include <stddef.h>

#ifdef __cplusplus
extern "C" {
#endif

typedef struct {
    char aet[17];    /* the peer's AE title */
    char host[256];
    int port;
} cxr_scu_peer;

/* "AET@HOST:PORT" into p. CXR_OK, or CXR_ERR_ARG with err saying what is
 * wrong (AE title of 1..16 characters without backslash, a host, a port
 * 1..65535). */
int cxr_scu_peer_parse(const char *spec, cxr_scu_peer *p, char *err, size_t errlen);

/* Send the DICOM file at path to p as calling_aet (NULL: "CXRVQA"), waiting
 * at most timeout_s seconds for each network step. CXR_OK when the peer
 * answered success (or a warning); else CXR_ERR_IO (no association: refused,
 * unreachable, rejected), CXR_ERR_SR (the peer answered the C-STORE with a
 * failure status) or CXR_ERR_NOT_DICOM; err names the peer and the cause. */
int cxr_scu_store_file(const cxr_scu_peer *p, const char *calling_aet, const char *path, int timeout_s, char *err,
                       size_t errlen);

#ifdef __cplusplus
}
#endif
#endif
