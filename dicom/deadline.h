/*
 * deadline.h — run one decoder call with a time limit (deadline.c).
 * Internal to dicom/. A codec that loops forever on a hostile stream cannot
 * be stopped from outside in a portable way (a thread cannot be killed
 * safely), so the call runs on a thread of its own and the caller stops
 * waiting when the limit passes: the thread is abandoned, keeps whatever it
 * uses, and the process is marked tainted (cxr_decode_tainted) so that a
 * long-lived caller answers and exits.
 *
 *   typedef struct { ...inputs, outputs, its own error buffer... } job;
 *   job *j = calloc(1, sizeof *j);                  // heap: it may outlive us
 *   int rc = deadline_run(work, j, 10000, "JPEG");
 *   if (rc == CXR_ERR_DECODE_TIMEOUT) { }        // j now belongs to the thread: never free it
 *   else if (rc == CXR_OK) { ...read j...; free(j); }
 */
#ifndef CXR_DEADLINE_H
#define CXR_DEADLINE_H

#include <stddef.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

/* Stack of the decoder thread: DCMTK's codecs and OpenJPEG need little;
 * sanitizer builds need more. */
#define DEADLINE_STACK (16u << 20)

/* Run fn(arg) and wait for it at most timeout_ms milliseconds (0: run it
 * on the caller's thread, no limit).
 * CXR_OK: fn returned; its results are in arg.
 * CXR_ERR_DECODE_TIMEOUT: it did not; the thread runs on detached, arg and
 *   everything fn may touch now belong to it (never free or reuse them),
 *   and the process is tainted.
 * CXR_ERR_NOMEM: no thread could be started (fn did not run).
 * Thread-safe. */
int deadline_run(void (*fn)(void *), void *arg, unsigned timeout_ms);

#ifdef __cplusplus
}
#endif
#endif /* CXR_DEADLINE_H */
