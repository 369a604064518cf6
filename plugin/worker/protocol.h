/*
 * protocol.h — every key of the worker protocol, named once. The Orthanc
 * plugin and `cxrvqa screen` build requests with these keys; `cxrvqa worker`
 * (plugin/cli/ask.c) reads them and answers with the answer JSON
 * (README "Answer JSON") plus the response keys below. Frames and the pool
 * are worker.h's; this header only names things.
 *
 * Request  {"op":"ask"|"heatmap"|"thumbnail"|"ping", "question":… (or "questions":[…] and
 *           "request_keys":[…]: one image's questions, one SR for all), "path":… | payload bytes,
 *           "finding":…, "lang":"en"|"zh"|null, "heatmap":bool, "sr":bool,
 *           "user":…, "app":…, "source":…, "sop_instance_uid":…,
 *           "request_key":…, "skip_if_done":bool}
 * Response the answer object, plus "request_key", "attachments":[{"name":
 *           "sr"|"heatmap","bytes":N}…] (the payload is their concatenation),
 *           ("questions": {"answers":[one such object per question], "attachments":…}),
 *           or {"skipped":true,"request_key":…} when skip_if_done found it
 *           done, or {"error":…,"code":"<cxr_strerror name>","error_code":N}
 *           (N the CXR_ERR_* value, so that a reader never maps names back
 *           to codes). A worker's first frame: {"ready":true,"pid":…,
 *           "model":{"name","version","sha256"}} or the error object.
 */
#ifndef CXR_WORKER_PROTOCOL_H
#define CXR_WORKER_PROTOCOL_H

/* requests */
#define CXR_P_OP "op"
#define CXR_P_OP_ASK "ask"
#define CXR_P_OP_HEATMAP "heatmap"
#define CXR_P_OP_PING "ping"
#define CXR_P_OP_THUMBNAIL "thumbnail" /* the image as a small grey PNG (screen --report); not audited */
#define CXR_P_QUESTION "question"
#define CXR_P_PATH "path"
#define CXR_P_FINDING "finding"
#define CXR_P_LANG "lang"
#define CXR_P_HEATMAP "heatmap"
#define CXR_P_SR "sr"
#define CXR_P_USER "user"
#define CXR_P_APP "app"
#define CXR_P_SOURCE "source"
#define CXR_P_SOP_UID "sop_instance_uid"
#define CXR_P_REQUEST_KEY "request_key"
#define CXR_P_SKIP_IF_DONE "skip_if_done"
#define CXR_P_QUESTIONS "questions"        /* ask: one image's questions, one SR (instead of "question") */
#define CXR_P_REQUEST_KEYS "request_keys"  /* with "questions": their keys, same order */

/* responses */
#define CXR_P_ERROR "error"            /* message */
#define CXR_P_CODE "code"              /* cxr_strerror() name */
#define CXR_P_ERROR_CODE "error_code"  /* the CXR_ERR_* number */
#define CXR_P_SKIPPED "skipped"
#define CXR_P_ANSWERS "answers"        /* "questions" requests: one object per question */
#define CXR_P_ATTACHMENTS "attachments"
#define CXR_P_ATT_NAME "name"
#define CXR_P_ATT_BYTES "bytes"
#define CXR_P_ATT_SR "sr"
#define CXR_P_ATT_HEATMAP "heatmap"
#define CXR_P_ATT_THUMBNAIL "thumbnail"
#define CXR_P_OK "ok"                  /* ping */
#define CXR_P_READY "ready"            /* hello */
#define CXR_P_PID "pid"
#define CXR_P_MODEL "model"
#define CXR_P_WORKER_EXITING "worker_exiting" /* true: the worker exits after this response (its
                                                 decoder was abandoned at its deadline) */
/* answer fields the readers use (the rest is README "Answer JSON") */
#define CXR_P_REFUSED "refused"
#define CXR_P_REASON "reason"
#define CXR_P_WARNINGS "warnings"

#endif /* CXR_WORKER_PROTOCOL_H */
