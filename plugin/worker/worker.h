/*
 * worker.h — supervised worker processes and the framed channel to them.
 * Untrusted decoding and inference never run inside the caller (Orthanc,
 * the screen driver): a pool of `cxrvqa worker` processes does, each loading
 * the model once and serving many requests. A worker that crashes, hangs
 * past the timeout or exceeds its memory limit is killed and replaced; the
 * request fails with a specific error and the pool keeps serving.
 *
 *   cxr_pool_params pp = cxr_pool_params_default();
 *   const char *argv[] = {"/usr/bin/cxrvqa", "worker", "--model", "m.gguf", NULL};
 *   pp.argv = argv; pp.n_workers = 2;
 *   cxr_pool *pool; char err[CXR_ERRMSG_MAX];
 *   if (cxr_pool_open(&pp, &pool, err, sizeof err) != CXR_OK) die(err);
 *   cxr_msg req = {.json = "{\"op\":\"ask\",\"question\":\"Is there an effusion?\"}",
 *                  .payload = dicom_bytes, .payload_len = n};
 *   cxr_msg resp = {0};
 *   int rc = cxr_pool_call(pool, &req, &resp, err, sizeof err); // any thread
 *   ... resp.json (NUL-terminated), resp.payload ...
 *   cxr_msg_free(&resp);
 *   cxr_pool_close(pool);
 *
 * Wire format (both directions, over a socketpair): a frame is
 *   u32 json_len (big endian) | u32 payload_len (big endian) | json bytes | payload bytes
 * json is UTF-8 JSON without a NUL; json_len ≤ CXR_FRAME_MAX_JSON and
 * payload_len ≤ CXR_FRAME_MAX_PAYLOAD, else the frame is rejected
 * (CXR_ERR_PROTOCOL) before anything is allocated. A response JSON that
 * carries several binary attachments lists them in order with their sizes,
 * "attachments":[{"name":"sr","bytes":N},{"name":"heatmap","bytes":M}], and
 * the payload is their concatenation.
 *
 * Thread safety: cxr_pool_call may be called from many threads at once; each
 * call takes a free worker (waiting up to queue_timeout_ms) and holds it for
 * the one request.
 *
 * Worker conventions (added with the implementation, plugin/worker/worker.c):
 *  - A worker that cannot start (bad model path …) sends one error frame
 *    instead of its hello (cxr_worker_fail) and exits; cxr_pool_open and the
 *    calls that try to replace a worker report that message.
 *  - A worker whose allocation fails where it cannot answer (e.g. under its
 *    RLIMIT_AS) exits with status CXR_WORKER_EXIT_NOMEM; the pool maps that
 *    death to CXR_ERR_MEMLIMIT. A worker the kernel kills for memory
 *    (SIGKILL, SIGSEGV on a failed stack growth) cannot be told apart from a
 *    crash: CXR_ERR_WORKER.
 */
#ifndef CXR_WORKER_H
#define CXR_WORKER_H

#include <stddef.h>
#include <stdint.h>
#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_FRAME_MAX_JSON (1u << 20)       /* 1 MiB of JSON */
#define CXR_FRAME_MAX_PAYLOAD (512u << 20)  /* 512 MiB of DICOM/PNG/SR bytes */

typedef struct {
    char *json;          /* NUL-terminated; owned by the message */
    size_t json_len;
    uint8_t *payload;    /* may be NULL when payload_len == 0 */
    size_t payload_len;
} cxr_msg;
/* Free what a read/call filled in (not the struct); zeroes it. NULL-safe. */
void cxr_msg_free(cxr_msg *m);

/* ------------------------------------------------------------ framing */
/* Write one frame (handles EINTR and short writes; SIGPIPE is not raised:
 * MSG_NOSIGNAL / ignored). json may have json_len 0. Returns CXR_OK or
 * CXR_ERR_IO / CXR_ERR_ARG (sizes over the caps). */
int cxr_frame_write(int fd, const char *json, size_t json_len, const void *payload, size_t payload_len);
/* Read one frame into out (allocates). timeout_ms < 0 waits forever.
 * Returns CXR_OK, CXR_ERR_IO (EOF or read error: the peer died),
 * CXR_ERR_TIMEOUT, CXR_ERR_PROTOCOL (sizes over the caps), CXR_ERR_NOMEM. */
int cxr_frame_read(int fd, cxr_msg *out, int timeout_ms, char *err, size_t errlen);
/* Decode a frame held entirely in memory (the fuzzable core of
 * cxr_frame_read): on CXR_OK *used is the frame's size. Returns
 * CXR_ERR_TRUNCATED when buf holds less than a whole frame. */
int cxr_frame_decode(const uint8_t *buf, size_t len, cxr_msg *out, size_t *used, char *err, size_t errlen);

/* ------------------------------------------------------------- worker */
/* The worker side: send hello_json (e.g. {"ready":true,"model":{…}}; NULL
 * sends {"ready":true}) as the first frame once the worker is ready, then
 * serve requests on fd until EOF. For each request frame
 * handler fills resp (allocating with malloc; the loop frees it after
 * sending). A handler error is sent as {"error":…,"code":…} JSON. */
typedef int (*cxr_worker_handler)(void *ctx, const cxr_msg *req, cxr_msg *resp);
/* The handler's resp->json_len may be left 0 for a NUL-terminated json. When
 * the handler returns an error it may leave a plain-text message in resp->json
 * (malloc'ed); it is sent as {"error":"<message>","code":"<cxr_strerror(rc)>"}
 * and resp's payload is dropped. Returns CXR_OK at EOF on a frame boundary
 * (the pool closed the channel); CXR_ERR_IO, CXR_ERR_PROTOCOL or
 * CXR_ERR_NOMEM when the channel broke (the worker should then exit; with
 * CXR_ERR_NOMEM, with status CXR_WORKER_EXIT_NOMEM). Never prints or exits.
 * A worker that must not serve again (a decoder it abandoned may still run)
 * ends its last response's JSON with "worker_exiting":true and exits; the
 * pool then replaces it before the slot takes another request. */
int cxr_worker_serve(int fd, const char *hello_json, cxr_worker_handler handler, void *ctx);
/* Start-up failure: send {"error":msg,"code":cxr_strerror(code)} in place of
 * the hello; the worker then exits. The pool reports msg. Returns CXR_OK or
 * CXR_ERR_IO. */
int cxr_worker_fail(int fd, int code, const char *msg);
/* The protocol's error object (protocol.h): {"error":msg,"code":name,
 * "error_code":code}, malloc'd (free()); NULL when out of memory. */
char *cxr_worker_error_json(int code, const char *msg);
/* Exit status of a worker whose memory ran out (see the conventions above). */
#define CXR_WORKER_EXIT_NOMEM 42

/* ------------------------------------------------------------- pool */
typedef struct {
    const char *const *argv;   /* worker command, argv[0] an absolute path; NULL-terminated */
    int n_workers;             /* default: online cores */
    int timeout_ms;            /* per request; default 30000 */
    int queue_timeout_ms;      /* wait for a free worker; default 60000 */
    int start_timeout_ms;      /* worker start-up (model load) until its hello frame; default 30000 */
    size_t mem_limit_mb;       /* RLIMIT_AS per worker; 0 = none; default 4096 */
    int channel_fd;            /* fd number the worker sees its socket as; default 3 */
} cxr_pool_params;
cxr_pool_params cxr_pool_params_default(void);

typedef struct cxr_pool cxr_pool;
int cxr_pool_open(const cxr_pool_params *p, cxr_pool **out, char *err, size_t errlen);
void cxr_pool_close(cxr_pool *p); /* stops and reaps every worker; NULL is a no-op */
/* cxr_pool_close makes waiting callers fail with CXR_ERR_BUSY and waits for
 * calls in flight (bounded by timeout_ms); no call may start after it. It
 * closes every channel, gives workers 1 s to exit, then SIGKILLs each one's
 * process group. Workers are reaped by pid only: the pool never calls
 * waitpid(-1), so the host's other children are left alone. */
/* One request/response. Errors: CXR_ERR_WORKER (crashed: signal or exit
 * named in err), CXR_ERR_TIMEOUT, CXR_ERR_MEMLIMIT, CXR_ERR_PROTOCOL,
 * CXR_ERR_BUSY (no worker free within queue_timeout_ms). The failed worker
 * is replaced before the call returns. */
/* Details: timeout_ms bounds writing the request plus reading the response.
 * The pool reports failures of the worker, not of the request: a handler
 * error ({"error":…,"code":…} JSON) is a normal response, CXR_OK, and the
 * worker stays. On any error resp is left zeroed. When a replacement
 * cannot be started its slot retries with back-off (0.25 s doubling to 30 s)
 * on later calls, so the pool never shrinks for good; while no worker at all
 * is alive or starting, calls fail at once with CXR_ERR_WORKER and the start
 * error. timeout_ms and start_timeout_ms ≤ 0 mean no limit; queue_timeout_ms
 * < 0 waits forever, 0 fails at once when no worker is free. */
int cxr_pool_call(cxr_pool *p, const cxr_msg *req, cxr_msg *resp, char *err, size_t errlen);

typedef struct {
    int n_workers, n_alive, n_busy, n_waiting;
    uint64_t requests, ok, failed, crashed, timed_out, restarts;
} cxr_pool_stats;
/* n_alive: workers started and serving (free or busy); failed: calls that did
 * not return CXR_OK (busy included); crashed: worker deaths and protocol
 * breaks, in a call or found while idle; restarts: workers started after
 * cxr_pool_open. */
void cxr_pool_get_stats(cxr_pool *p, cxr_pool_stats *out);

#ifdef __cplusplus
}
#endif
#endif
