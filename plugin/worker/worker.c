/*
 * worker.c — the worker channel and the supervised worker pool. Owns the
 * frame format (decode, and read/write with deadlines, EINTR, short
 * transfers and SIGPIPE handled), the worker-side serve loop, and the pool:
 * spawning workers (fork + execv into their own session, with their channel
 * on a fixed fd, every other fd closed, rlimits set), lending them to calling
 * threads, killing, reaping and replacing them. It must not print, exit,
 * install signal handlers, or reap a child it did not spawn (no waitpid(-1):
 * the host has children of its own); it knows nothing of DICOM or the model,
 * requests are opaque frames.
 */
#define _GNU_SOURCE
#include "worker.h"
#include "cxr_json.h"
#include "protocol.h"
#include "cxr_util.h"

#include <cjson/cJSON.h>
#include <errno.h>
#include <fcntl.h>
#include <limits.h>
#include <poll.h>
#include <pthread.h>
#include <signal.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/socket.h>
#include <sys/uio.h>
#include <sys/wait.h>
#include <time.h>
#include <unistd.h>

#define FRAME_HDR 8
#define POOL_MAX_WORKERS 256
#define POOL_EOF_GRACE_MS 500     /* a worker that closed its channel has this long to die */
#define POOL_CLOSE_GRACE_MS 1000  /* cxr_pool_close: time to exit after EOF before SIGKILL */
#define POOL_BACKOFF_MIN_MS 250   /* first retry after a failed start; doubles */
#define POOL_BACKOFF_MAX_MS 30000

enum { FRAME_EOF = 1 }; /* internal: read_full hit EOF */

static void errf(char *err, size_t errlen, const char *fmt, ...) __attribute__((format(printf, 3, 4)));
static void errf(char *err, size_t errlen, const char *fmt, ...) {
    if (!err || errlen == 0) return;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(err, errlen, fmt, ap);
    va_end(ap);
}

static int64_t now_ms(void) { return (int64_t)cxr_now_ms(); }

/* deadline from a timeout: < 0 (none) for a negative timeout */
static int64_t deadline_in(int timeout_ms) { return timeout_ms < 0 ? -1 : now_ms() + timeout_ms; }

/* poll timeout until deadline: -1 forever, else 0..INT_MAX */
static int remaining(int64_t deadline) {
    if (deadline < 0) return -1;
    int64_t r = deadline - now_ms();
    if (r < 0) return 0;
    return r > INT_MAX ? INT_MAX : (int)r;
}

static void sleep_ms(int ms) {
    struct timespec ts = {ms / 1000, (long)(ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0 && errno == EINTR) {
    }
}

/* ============================================================== framing */

static void put_be32(uint8_t *p, uint32_t v) {
    p[0] = (uint8_t)(v >> 24);
    p[1] = (uint8_t)(v >> 16);
    p[2] = (uint8_t)(v >> 8);
    p[3] = (uint8_t)v;
}

static uint32_t get_be32(const uint8_t *p) {
    return (uint32_t)p[0] << 24 | (uint32_t)p[1] << 16 | (uint32_t)p[2] << 8 | (uint32_t)p[3];
}

static int check_caps(uint32_t jl, uint32_t pl, char *err, size_t errlen) {
    if (jl > CXR_FRAME_MAX_JSON) {
        errf(err, errlen, "frame declares %u bytes of JSON (cap %u)", jl, CXR_FRAME_MAX_JSON);
        return CXR_ERR_PROTOCOL;
    }
    if (pl > CXR_FRAME_MAX_PAYLOAD) {
        errf(err, errlen, "frame declares %u payload bytes (cap %u)", pl, CXR_FRAME_MAX_PAYLOAD);
        return CXR_ERR_PROTOCOL;
    }
    return CXR_OK;
}

void cxr_msg_free(cxr_msg *m) {
    if (!m) return;
    free(m->json);
    free(m->payload);
    memset(m, 0, sizeof *m);
}

/* Wait until fd is ready for events or the deadline passes: 1 ready (or in
 * error/hang-up: the next read/write says which), 0 timed out, -1 poll failed. */
static int wait_fd(int fd, short events, int64_t deadline) {
    for (;;) {
        struct pollfd pfd = {.fd = fd, .events = events};
        int r = poll(&pfd, 1, remaining(deadline));
        if (r > 0) return 1;
        if (r == 0) return 0;
        if (errno != EINTR) return -1;
    }
}

/* writev on something that is not a socket (a pipe in tests and tools):
 * SIGPIPE blocked for the call and a SIGPIPE it raised consumed. */
static ssize_t writev_nosigpipe(int fd, const struct iovec *iov, int cnt) {
    sigset_t pipe_set, old, pending;
    sigemptyset(&pipe_set);
    sigaddset(&pipe_set, SIGPIPE);
    pthread_sigmask(SIG_BLOCK, &pipe_set, &old);
    sigpending(&pending);
    int was_pending = sigismember(&pending, SIGPIPE);
    ssize_t n = writev(fd, iov, cnt);
    int e = errno;
    if (n < 0 && e == EPIPE && !was_pending) {
        struct timespec zero = {0, 0};
        while (sigtimedwait(&pipe_set, NULL, &zero) < 0 && errno == EINTR) {
        }
    }
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    errno = e;
    return n;
}

/* Write every byte of iov[0..cnt) before deadline (< 0: none). */
static int write_iov(int fd, struct iovec *iov, int cnt, int64_t deadline, char *err, size_t errlen) {
    int is_sock = 1;
    size_t total = 0, done = 0;
    for (int i = 0; i < cnt; i++) total += iov[i].iov_len;
    while (cnt > 0) {
        if (iov->iov_len == 0) {
            iov++;
            cnt--;
            continue;
        }
        if (deadline >= 0) {
            int r = wait_fd(fd, POLLOUT, deadline);
            if (r == 0) {
                errf(err, errlen, "write timed out after %zu of %zu bytes", done, total);
                return CXR_ERR_TIMEOUT;
            }
            if (r < 0) {
                errf(err, errlen, "poll: %s", strerror(errno));
                return CXR_ERR_IO;
            }
        }
        ssize_t n;
        if (is_sock) {
            struct msghdr mh;
            memset(&mh, 0, sizeof mh);
            mh.msg_iov = iov;
            mh.msg_iovlen = (size_t)cnt;
            n = sendmsg(fd, &mh, MSG_NOSIGNAL | (deadline >= 0 ? MSG_DONTWAIT : 0));
            if (n < 0 && errno == ENOTSOCK) {
                is_sock = 0;
                continue;
            }
        } else {
            n = writev_nosigpipe(fd, iov, cnt);
        }
        if (n < 0) {
            if (errno == EINTR) continue;
            if (errno == EAGAIN || errno == EWOULDBLOCK) {
                if (deadline < 0 && wait_fd(fd, POLLOUT, -1) < 0) {
                    errf(err, errlen, "poll: %s", strerror(errno));
                    return CXR_ERR_IO;
                }
                continue;
            }
            errf(err, errlen, "write after %zu of %zu bytes: %s", done, total, strerror(errno));
            return CXR_ERR_IO;
        }
        done += (size_t)n;
        size_t k = (size_t)n;
        while (cnt > 0 && k >= iov->iov_len) {
            k -= iov->iov_len;
            iov++;
            cnt--;
        }
        if (cnt > 0) {
            iov->iov_base = (char *)iov->iov_base + k;
            iov->iov_len -= k;
        }
    }
    return CXR_OK;
}

static int frame_write_deadline(int fd, const char *json, size_t json_len, const void *payload, size_t payload_len,
                                int64_t deadline, char *err, size_t errlen) {
    if (json_len > CXR_FRAME_MAX_JSON || payload_len > CXR_FRAME_MAX_PAYLOAD) {
        errf(err, errlen, "frame over the caps (%zu bytes of JSON, %zu of payload)", json_len, payload_len);
        return CXR_ERR_ARG;
    }
    if ((json_len && !json) || (payload_len && !payload) || fd < 0) {
        errf(err, errlen, "frame: NULL buffer with a non-zero length, or a bad fd");
        return CXR_ERR_ARG;
    }
    uint8_t hdr[FRAME_HDR];
    put_be32(hdr, (uint32_t)json_len);
    put_be32(hdr + 4, (uint32_t)payload_len);
    struct iovec iov[3] = {
        {.iov_base = hdr, .iov_len = sizeof hdr},
        {.iov_base = (void *)json, .iov_len = json_len},
        {.iov_base = (void *)payload, .iov_len = payload_len},
    };
    return write_iov(fd, iov, 3, deadline, err, errlen);
}

int cxr_frame_write(int fd, const char *json, size_t json_len, const void *payload, size_t payload_len) {
    return frame_write_deadline(fd, json, json_len, payload, payload_len, -1, NULL, 0);
}

/* Read exactly n bytes before deadline. *got counts what arrived. Returns
 * CXR_OK, FRAME_EOF, CXR_ERR_TIMEOUT or CXR_ERR_IO (err filled for the last
 * two only). */
static int read_full(int fd, uint8_t *buf, size_t n, int64_t deadline, size_t *got, char *err, size_t errlen) {
    *got = 0;
    while (*got < n) {
        if (deadline >= 0) {
            int r = wait_fd(fd, POLLIN, deadline);
            if (r == 0) {
                errf(err, errlen, "timed out");
                return CXR_ERR_TIMEOUT;
            }
            if (r < 0) {
                errf(err, errlen, "poll: %s", strerror(errno));
                return CXR_ERR_IO;
            }
        }
        size_t want = n - *got;
        if (want > (1u << 30)) want = 1u << 30;
        ssize_t k = read(fd, buf + *got, want);
        if (k > 0) {
            *got += (size_t)k;
            continue;
        }
        if (k == 0) return FRAME_EOF;
        if (errno == EINTR) continue;
        if (errno == EAGAIN || errno == EWOULDBLOCK) {
            if (deadline < 0 && wait_fd(fd, POLLIN, -1) < 0) {
                errf(err, errlen, "poll: %s", strerror(errno));
                return CXR_ERR_IO;
            }
            continue;
        }
        errf(err, errlen, "read: %s", strerror(errno));
        return CXR_ERR_IO;
    }
    return CXR_OK;
}

/* cxr_frame_read with an absolute deadline; *clean_eof is set when the peer
 * closed the channel on a frame boundary (nothing of a new frame arrived). */
static int frame_read_deadline(int fd, cxr_msg *out, int64_t deadline, int *clean_eof, char *err, size_t errlen) {
    uint8_t hdr[FRAME_HDR];
    size_t got = 0;
    char why[128] = "";
    *clean_eof = 0;
    memset(out, 0, sizeof *out);
    int rc = read_full(fd, hdr, sizeof hdr, deadline, &got, why, sizeof why);
    if (rc == FRAME_EOF) {
        *clean_eof = got == 0;
        if (got == 0)
            errf(err, errlen, "EOF: the peer closed the channel");
        else
            errf(err, errlen, "EOF after %zu of %d header bytes", got, FRAME_HDR);
        return CXR_ERR_IO;
    }
    if (rc != CXR_OK) {
        errf(err, errlen, "frame header: %s after %zu of %d bytes", why, got, FRAME_HDR);
        return rc;
    }
    uint32_t jl = get_be32(hdr), pl = get_be32(hdr + 4);
    rc = check_caps(jl, pl, err, errlen);
    if (rc != CXR_OK) return rc;
    out->json = malloc((size_t)jl + 1);
    out->payload = pl ? malloc(pl) : NULL;
    if (!out->json || (pl && !out->payload)) {
        cxr_msg_free(out);
        errf(err, errlen, "cannot allocate a frame of %u + %u bytes", jl, pl);
        return CXR_ERR_NOMEM;
    }
    size_t body = (size_t)jl + pl, got_json = 0, got_payload = 0;
    rc = read_full(fd, (uint8_t *)out->json, jl, deadline, &got_json, why, sizeof why);
    if (rc == CXR_OK) rc = read_full(fd, out->payload, pl, deadline, &got_payload, why, sizeof why);
    if (rc != CXR_OK) {
        size_t have = got_json + got_payload;
        if (rc == FRAME_EOF) {
            errf(err, errlen, "EOF after %zu of %zu frame body bytes", have, body);
            rc = CXR_ERR_IO;
        } else {
            errf(err, errlen, "frame body: %s after %zu of %zu bytes", why, have, body);
        }
        cxr_msg_free(out);
        return rc;
    }
    out->json[jl] = '\0';
    out->json_len = jl;
    out->payload_len = pl;
    if (memchr(out->json, '\0', jl)) {
        cxr_msg_free(out);
        errf(err, errlen, "frame JSON contains a NUL byte");
        return CXR_ERR_PROTOCOL;
    }
    return CXR_OK;
}

int cxr_frame_read(int fd, cxr_msg *out, int timeout_ms, char *err, size_t errlen) {
    if (!out || fd < 0) {
        errf(err, errlen, "cxr_frame_read: NULL message or bad fd");
        return CXR_ERR_ARG;
    }
    int clean_eof;
    return frame_read_deadline(fd, out, deadline_in(timeout_ms), &clean_eof, err, errlen);
}

int cxr_frame_decode(const uint8_t *buf, size_t len, cxr_msg *out, size_t *used, char *err, size_t errlen) {
    if (!out || !used || (!buf && len)) {
        errf(err, errlen, "cxr_frame_decode: NULL argument");
        return CXR_ERR_ARG;
    }
    memset(out, 0, sizeof *out);
    *used = 0;
    if (len < FRAME_HDR) {
        errf(err, errlen, "frame header: %zu of %d bytes", len, FRAME_HDR);
        return CXR_ERR_TRUNCATED;
    }
    uint32_t jl = get_be32(buf), pl = get_be32(buf + 4);
    int rc = check_caps(jl, pl, err, errlen);
    if (rc != CXR_OK) return rc;
    size_t total = FRAME_HDR + (size_t)jl + pl; /* ≤ 8 + 2^20 + 2^29: no overflow */
    if (len < total) {
        errf(err, errlen, "frame: %zu of %zu bytes", len, total);
        return CXR_ERR_TRUNCATED;
    }
    const uint8_t *j = buf + FRAME_HDR;
    if (memchr(j, '\0', jl)) {
        errf(err, errlen, "frame JSON contains a NUL byte");
        return CXR_ERR_PROTOCOL;
    }
    out->json = malloc((size_t)jl + 1);
    out->payload = pl ? malloc(pl) : NULL;
    if (!out->json || (pl && !out->payload)) {
        cxr_msg_free(out);
        errf(err, errlen, "cannot allocate a frame of %u + %u bytes", jl, pl);
        return CXR_ERR_NOMEM;
    }
    memcpy(out->json, j, jl);
    out->json[jl] = '\0';
    out->json_len = jl;
    if (pl) memcpy(out->payload, j + jl, pl);
    out->payload_len = pl;
    *used = total;
    return CXR_OK;
}

/* ======================================================== worker side */

char *cxr_worker_error_json(int code, const char *msg) {
    cJSON *o = cJSON_CreateObject();
    char *s = NULL;
    if (o && cJSON_AddStringToObject(o, CXR_P_ERROR, msg ? msg : cxr_strerror(code)) &&
        cJSON_AddStringToObject(o, CXR_P_CODE, cxr_strerror(code)) && cJSON_AddNumberToObject(o, CXR_P_ERROR_CODE, code))
        s = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return s;
}

static int send_error(int fd, int code, const char *msg) {
    static const char fallback[] = "{\"error\":\"out of memory\",\"code\":\"out-of-memory\",\"error_code\":-2}";
    char *s = cxr_worker_error_json(code, msg);
    int rc = s ? cxr_frame_write(fd, s, strlen(s), NULL, 0) : cxr_frame_write(fd, fallback, sizeof fallback - 1, NULL, 0);
    cJSON_free(s);
    return rc == CXR_OK ? CXR_OK : CXR_ERR_IO;
}

int cxr_worker_fail(int fd, int code, const char *msg) { return send_error(fd, code, msg); }

int cxr_worker_serve(int fd, const char *hello_json, cxr_worker_handler handler, void *ctx) {
    if (fd < 0 || !handler) return CXR_ERR_ARG;
    const char *hello = hello_json ? hello_json : "{\"ready\":true}";
    int rc = cxr_frame_write(fd, hello, strlen(hello), NULL, 0);
    if (rc != CXR_OK) return rc;
    for (;;) {
        cxr_msg req, resp;
        int clean_eof;
        char err[CXR_ERRMSG_MAX];
        rc = frame_read_deadline(fd, &req, -1, &clean_eof, err, sizeof err);
        if (rc == CXR_ERR_IO && clean_eof) return CXR_OK;
        if (rc != CXR_OK) {
            /* the stream is out of step: say why (best effort) and stop */
            if (rc == CXR_ERR_PROTOCOL) send_error(fd, rc, err);
            return rc;
        }
        memset(&resp, 0, sizeof resp);
        int hrc = handler(ctx, &req, &resp);
        cxr_msg_free(&req);
        if (hrc == CXR_OK) {
            size_t jl = resp.json ? (resp.json_len ? resp.json_len : strlen(resp.json)) : 0;
            rc = cxr_frame_write(fd, resp.json, jl, resp.payload, resp.payload_len);
            if (rc == CXR_ERR_ARG)
                rc = send_error(fd, CXR_ERR_ARG, "the handler's response is malformed or over the frame caps");
        } else {
            rc = send_error(fd, hrc, resp.json && resp.json[0] ? resp.json : NULL);
        }
        cxr_msg_free(&resp);
        if (rc != CXR_OK) return rc;
    }
}

/* A hello that is a start-up failure (cxr_worker_fail: {"error":"…",
 * "code":"…"}): returns its code (CXR_ERR_INTERNAL for a name not known
 * here) and copies the message; CXR_OK for a real hello. */
static int hello_error(const cxr_msg *m, char *msg, size_t msglen) {
    static const char prefix[] = "{\"error\":";
    if (!m->json || m->json_len < sizeof prefix - 1 || memcmp(m->json, prefix, sizeof prefix - 1) != 0) return CXR_OK;
    cJSON *o = cJSON_ParseWithLength(m->json, m->json_len);
    if (!o) {
        errf(msg, msglen, "unparsable error response");
        return CXR_ERR_INTERNAL;
    }
    const char *text = cxr_json_str(o, CXR_P_ERROR);
    int code = (int)cxr_json_num(o, CXR_P_ERROR_CODE, CXR_ERR_INTERNAL);
    if (code >= CXR_OK) code = CXR_ERR_INTERNAL;
    errf(msg, msglen, "%s", text ? text : "(no message)");
    cJSON_Delete(o);
    return code;
}

/* ================================================================ pool */

enum { W_DEAD, W_FREE, W_BUSY, W_STARTING };

/* One worker slot. state is read and written under the pool mutex; the
 * other fields belong to whoever moved the slot to W_BUSY or W_STARTING
 * (and, for a W_DEAD slot, to the mutex holder). */
typedef struct {
    int state;
    pid_t pid;        /* 0: no process */
    int fd;           /* our end of the channel; -1: none */
    int fails;        /* consecutive failed starts */
    int64_t retry_at; /* W_DEAD: earliest next start (monotonic ms) */
} wslot;

struct cxr_pool {
    cxr_pool_params p;
    char **argv;
    pthread_mutex_t mu;
    pthread_cond_t cv; /* a slot changed state, a call ended, or the pool is closing */
    wslot *w;
    int n;
    int closing, in_calls, n_waiting;
    uint64_t requests, ok, failed, crashed, timed_out, restarts;
    char start_err[CXR_ERRMSG_MAX]; /* the last start failure */
};

cxr_pool_params cxr_pool_params_default(void) {
    cxr_pool_params pp;
    memset(&pp, 0, sizeof pp);
    long n = sysconf(_SC_NPROCESSORS_ONLN);
    pp.n_workers = n > 0 ? (int)(n > POOL_MAX_WORKERS ? POOL_MAX_WORKERS : n) : 1;
    pp.timeout_ms = 30000;
    pp.queue_timeout_ms = 60000;
    pp.start_timeout_ms = 30000;
    pp.mem_limit_mb = 4096;
    pp.channel_fd = 3;
    return pp;
}

/* ---------------------------------------------------------- processes */

/* What the child reports through its exec pipe when set-up fails. */
enum { STEP_FDS = 1, STEP_RLIMIT, STEP_EXEC };

static void child_fail(int fd, int step) {
    int msg[2] = {step, errno};
    ssize_t r = write(fd, msg, sizeof msg);
    (void)r;
    _exit(127);
}

/* In the forked child: async-signal-safe calls only (the parent may have
 * other threads holding locks). Never returns. */
static void child_exec(const cxr_pool *p, int sock, int errw) {
    struct sigaction dfl;
    memset(&dfl, 0, sizeof dfl);
    dfl.sa_handler = SIG_DFL;
    for (int s = 1; s < NSIG; s++)
        if (s != SIGKILL && s != SIGSTOP) sigaction(s, &dfl, NULL); /* EINVAL for glibc's own: fine */
    setsid(); /* own session and process group: killing -pid reaches its children */

    int cfd = p->p.channel_fd;
    int s2 = fcntl(sock, F_DUPFD_CLOEXEC, cfd + 2);
    int e2 = fcntl(errw, F_DUPFD_CLOEXEC, cfd + 2);
    if (e2 < 0) child_fail(errw, STEP_FDS);
    if (s2 < 0) child_fail(e2, STEP_FDS);
    if (dup2(s2, cfd) < 0) child_fail(e2, STEP_FDS); /* dup2 clears FD_CLOEXEC on cfd */
    if (dup3(e2, cfd + 1, O_CLOEXEC) < 0) child_fail(e2, STEP_FDS);
    errw = cfd + 1;
    if (close_range((unsigned)cfd + 2, ~0u, 0) != 0) { /* ENOSYS before Linux 5.9 */
        struct rlimit nf;
        long maxfd = getrlimit(RLIMIT_NOFILE, &nf) == 0 && nf.rlim_cur != RLIM_INFINITY ? (long)nf.rlim_cur : 65536;
        for (long fd = cfd + 2; fd < maxfd; fd++) close((int)fd);
    }
    for (int fd = 3; fd < cfd; fd++) close(fd);
    /* stdin from /dev/null; stdout/stderr inherited (the host's log), or
     * /dev/null where the host has them closed */
    int nul = open("/dev/null", O_RDWR);
    if (nul >= 0 && nul != 0) {
        dup2(nul, 0);
        if (nul > 2) close(nul);
    }
    for (int fd = 1; fd <= 2; fd++)
        if (fcntl(fd, F_GETFD) < 0) {
            int k = open("/dev/null", O_RDWR);
            if (k >= 0 && k != fd) close(k);
        }

    if (p->p.mem_limit_mb) {
        struct rlimit rl = {(rlim_t)p->p.mem_limit_mb << 20, (rlim_t)p->p.mem_limit_mb << 20};
        if (setrlimit(RLIMIT_AS, &rl) != 0) child_fail(errw, STEP_RLIMIT);
    }
    struct rlimit core = {0, 0};
    setrlimit(RLIMIT_CORE, &core);
    sigset_t none;
    sigemptyset(&none);
    sigprocmask(SIG_SETMASK, &none, NULL);
    execv(p->argv[0], p->argv);
    child_fail(errw, STEP_EXEC);
}

/* Reap pid (blocking). Returns its wait status, -1 when it cannot be had
 * (ECHILD: e.g. the host set SIGCHLD to SIG_IGN). */
static int reap(pid_t pid) {
    int st;
    pid_t r;
    do r = waitpid(pid, &st, 0);
    while (r < 0 && errno == EINTR);
    return r == pid ? st : -1;
}

/* SIGKILL the worker's process group (it is a session leader) and itself,
 * then reap it. Returns the wait status as reap(). */
static int kill_reap(pid_t pid) {
    kill(-pid, SIGKILL);
    kill(pid, SIGKILL);
    return reap(pid);
}

/* A worker whose channel hit EOF or broke is normally dying: reap it,
 * waiting up to POOL_EOF_GRACE_MS; past that, kill it (*killed = 1). */
static int reap_dying(pid_t pid, int *killed) {
    int64_t until = now_ms() + POOL_EOF_GRACE_MS;
    int pause_us = 50;
    *killed = 0;
    for (;;) {
        int st;
        pid_t r = waitpid(pid, &st, WNOHANG);
        if (r == pid) {
            kill(-pid, SIGKILL); /* whatever it left behind in its group */
            return st;
        }
        if (r < 0 && errno != EINTR) return -1;
        if (now_ms() >= until) break;
        struct timespec ts = {0, pause_us * 1000L};
        nanosleep(&ts, NULL);
        if (pause_us < 5000) pause_us *= 2;
    }
    *killed = 1;
    return kill_reap(pid);
}

/* How a worker ended, for err; returns CXR_ERR_MEMLIMIT for the out-of-memory
 * exit status, CXR_ERR_WORKER otherwise. */
static int describe_death(const cxr_pool *p, pid_t pid, int st, int killed, char *err, size_t errlen) {
    if (killed) {
        errf(err, errlen, "worker %d closed its channel but did not exit (killed)", (int)pid);
        return CXR_ERR_WORKER;
    }
    if (st == -1) {
        errf(err, errlen, "worker %d died (exit status not available)", (int)pid);
        return CXR_ERR_WORKER;
    }
    if (WIFSIGNALED(st)) {
        int sig = WTERMSIG(st);
        const char *d = sigdescr_np(sig);
        errf(err, errlen, "worker %d killed by signal %d (%s)%s", (int)pid, sig, d ? d : "unknown signal",
             sig == SIGKILL ? ": by someone else, possibly the kernel's OOM killer" : "");
        return CXR_ERR_WORKER;
    }
    int code = WIFEXITED(st) ? WEXITSTATUS(st) : -1;
    if (code == CXR_WORKER_EXIT_NOMEM) {
        if (p->p.mem_limit_mb)
            errf(err, errlen, "worker %d ran out of memory (exit status %d; limit %zu MiB)", (int)pid, code,
                 p->p.mem_limit_mb);
        else
            errf(err, errlen, "worker %d ran out of memory (exit status %d)", (int)pid, code);
        return CXR_ERR_MEMLIMIT;
    }
    errf(err, errlen, "worker %d exited with status %d", (int)pid, code);
    return CXR_ERR_WORKER;
}

static void close_slot(wslot *w) {
    if (w->fd >= 0) close(w->fd);
    w->fd = -1;
    w->pid = 0;
}

/* Fork and exec one worker into w (pid, fd). Waits only for the exec. */
static int spawn_start(cxr_pool *p, wslot *w, char *err, size_t errlen) {
    int sv[2], ep[2];
    if (socketpair(AF_UNIX, SOCK_STREAM | SOCK_CLOEXEC, 0, sv) != 0) {
        errf(err, errlen, "socketpair: %s", strerror(errno));
        return CXR_ERR_WORKER;
    }
    if (pipe2(ep, O_CLOEXEC) != 0) {
        errf(err, errlen, "pipe: %s", strerror(errno));
        close(sv[0]);
        close(sv[1]);
        return CXR_ERR_WORKER;
    }
    sigset_t all, old;
    sigfillset(&all);
    pthread_sigmask(SIG_SETMASK, &all, &old); /* no host handler runs in the child */
    pid_t pid = fork();
    if (pid == 0) child_exec(p, sv[1], ep[1]);
    int fork_errno = errno;
    pthread_sigmask(SIG_SETMASK, &old, NULL);
    close(sv[1]);
    close(ep[1]);
    if (pid < 0) {
        close(sv[0]);
        close(ep[0]);
        errf(err, errlen, "fork: %s", strerror(fork_errno));
        return CXR_ERR_WORKER;
    }
    int msg[2];
    ssize_t n;
    do n = read(ep[0], msg, sizeof msg);
    while (n < 0 && errno == EINTR);
    close(ep[0]);
    if (n == (ssize_t)sizeof msg) {
        reap(pid);
        close(sv[0]);
        if (msg[0] == STEP_EXEC)
            errf(err, errlen, "cannot execute %s: %s", p->argv[0], strerror(msg[1]));
        else if (msg[0] == STEP_RLIMIT)
            errf(err, errlen, "cannot set the worker's memory limit (%zu MiB): %s", p->p.mem_limit_mb,
                 strerror(msg[1]));
        else
            errf(err, errlen, "cannot set up the worker's channel fd %d: %s", p->p.channel_fd, strerror(msg[1]));
        return CXR_ERR_WORKER;
    }
    w->pid = pid;
    w->fd = sv[0];
    return CXR_OK;
}

/* Wait for the hello of a worker spawn_start started; on failure the worker
 * is reaped and w closed. */
static int spawn_finish(cxr_pool *p, wslot *w, int64_t deadline, char *err, size_t errlen) {
    cxr_msg hello;
    int clean_eof, rc;
    char why[CXR_ERRMSG_MAX];
    pid_t pid = w->pid;
    rc = frame_read_deadline(w->fd, &hello, deadline, &clean_eof, why, sizeof why);
    if (rc == CXR_OK) {
        rc = hello_error(&hello, why, sizeof why);
        cxr_msg_free(&hello);
        if (rc == CXR_OK) return CXR_OK;
        kill_reap(pid);
        errf(err, errlen, "worker %d (%s) failed to start: %s", (int)pid, p->argv[0], why);
    } else if (rc == CXR_ERR_TIMEOUT) {
        kill_reap(pid);
        errf(err, errlen, "worker %d (%s) sent no hello within %d ms (killed)", (int)pid, p->argv[0],
             p->p.start_timeout_ms);
    } else if (rc == CXR_ERR_IO) {
        int killed, st = reap_dying(pid, &killed);
        char how[CXR_ERRMSG_MAX];
        describe_death(p, pid, st, killed, how, sizeof how);
        errf(err, errlen, "%s (%s) before its hello", how, p->argv[0]);
    } else {
        kill_reap(pid);
        errf(err, errlen, "worker %d (%s) broke the protocol in its hello: %s", (int)pid, p->argv[0], why);
    }
    close_slot(w);
    return CXR_ERR_WORKER;
}

static int64_t start_deadline(const cxr_pool *p) {
    return p->p.start_timeout_ms > 0 ? now_ms() + p->p.start_timeout_ms : -1;
}

/* Start a worker into the slot the caller owns (its process gone). On
 * failure the slot's back-off is set and the error recorded for later calls. */
static int start_one(cxr_pool *p, wslot *w, char *err, size_t errlen) {
    int rc = spawn_start(p, w, err, errlen);
    if (rc == CXR_OK) rc = spawn_finish(p, w, start_deadline(p), err, errlen);
    pthread_mutex_lock(&p->mu);
    if (rc == CXR_OK) {
        w->fails = 0;
        p->restarts++;
    } else {
        int64_t back = POOL_BACKOFF_MIN_MS;
        w->fails++;
        for (int i = 1; i < w->fails && back < POOL_BACKOFF_MAX_MS; i++) back *= 2;
        if (back > POOL_BACKOFF_MAX_MS) back = POOL_BACKOFF_MAX_MS;
        w->retry_at = now_ms() + back;
        errf(p->start_err, sizeof p->start_err, "%s", err ? err : "worker start failed");
    }
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* An idle worker must have nothing to say: readable or hung up means it
 * died (or misbehaved) while idle. */
static int idle_channel_ok(const wslot *w) {
    struct pollfd pfd = {.fd = w->fd, .events = POLLIN};
    int r;
    do r = poll(&pfd, 1, 0);
    while (r < 0 && errno == EINTR);
    return r == 0;
}

static void timed_wait(cxr_pool *p, int64_t until) {
    if (until < 0) {
        pthread_cond_wait(&p->cv, &p->mu);
        return;
    }
    struct timespec ts = {(time_t)(until / 1000), (long)(until % 1000) * 1000000L};
    pthread_cond_timedwait(&p->cv, &p->mu, &ts);
}

/* Take a worker for one call: called and returns with the mutex held; on
 * CXR_OK *out is W_BUSY with a live worker and belongs to the caller. */
static int take(cxr_pool *p, wslot **out, char *err, size_t errlen) {
    int64_t deadline = p->p.queue_timeout_ms >= 0 ? now_ms() + p->p.queue_timeout_ms : -1;
    int waiting = 0, rc;
    char why[CXR_ERRMSG_MAX];
    for (;;) {
        if (p->closing) {
            errf(err, errlen, "the worker pool is closing");
            rc = CXR_ERR_BUSY;
            break;
        }
        wslot *free_w = NULL, *dead_w = NULL;
        int live = 0;
        int64_t now = now_ms(), next_retry = -1;
        for (int i = 0; i < p->n; i++) {
            wslot *w = &p->w[i];
            if (w->state == W_FREE && !free_w) free_w = w;
            if (w->state != W_DEAD) live++;
            if (w->state == W_DEAD) {
                if (w->retry_at <= now && !dead_w) dead_w = w;
                if (next_retry < 0 || w->retry_at < next_retry) next_retry = w->retry_at;
            }
        }
        if (free_w) {
            free_w->state = W_BUSY;
            pthread_mutex_unlock(&p->mu);
            int ok = idle_channel_ok(free_w);
            if (!ok) {
                /* died while idle (OOM killer, operator): replace it without
                 * failing this call — the request never reached it */
                int killed, st = reap_dying(free_w->pid, &killed);
                (void)st;
                close_slot(free_w);
                pthread_mutex_lock(&p->mu);
                p->crashed++;
                pthread_mutex_unlock(&p->mu);
                ok = start_one(p, free_w, why, sizeof why) == CXR_OK;
            }
            pthread_mutex_lock(&p->mu);
            if (ok) {
                *out = free_w;
                rc = CXR_OK;
                break;
            }
            free_w->state = W_DEAD;
            pthread_cond_broadcast(&p->cv);
            continue;
        }
        if (dead_w) {
            dead_w->state = W_STARTING;
            pthread_mutex_unlock(&p->mu);
            int src = start_one(p, dead_w, why, sizeof why);
            pthread_mutex_lock(&p->mu);
            if (src == CXR_OK) {
                dead_w->state = W_BUSY;
                *out = dead_w;
                rc = CXR_OK;
                break;
            }
            dead_w->state = W_DEAD;
            pthread_cond_broadcast(&p->cv);
            continue;
        }
        if (live == 0) {
            errf(err, errlen, "no worker is running: %s (next start attempt in %lld ms)", p->start_err,
                 (long long)(next_retry - now));
            rc = CXR_ERR_WORKER;
            break;
        }
        if (deadline >= 0 && now >= deadline) {
            errf(err, errlen, "no worker free within %d ms (%d workers, all busy)", p->p.queue_timeout_ms, p->n);
            rc = CXR_ERR_BUSY;
            break;
        }
        if (!waiting) {
            waiting = 1;
            p->n_waiting++;
        }
        int64_t until = deadline;
        if (next_retry >= 0 && (until < 0 || next_retry < until)) until = next_retry;
        timed_wait(p, until);
    }
    if (waiting) p->n_waiting--;
    return rc;
}

enum { EV_NONE, EV_CRASH, EV_TIMEOUT };

/* Does a response end with the WORKER_EXITING member? (Inside a JSON
 * string every quote is escaped, so this text cannot come from one.) */
static int says_exiting(const cxr_msg *m) {
    static const char tail[] = "\"" CXR_P_WORKER_EXITING "\":true}";
    size_t k = sizeof tail - 1;
    return m->json && m->json_len >= k && memcmp(m->json + m->json_len - k, tail, k) == 0;
}

/* One request/response on the worker in w (owned by the caller). On a
 * channel failure the worker is killed, reaped and replaced here; if the
 * replacement fails, w->pid is 0 (the slot goes W_DEAD). */
static int exchange(cxr_pool *p, wslot *w, const cxr_msg *req, cxr_msg *resp, int *ev, char *err, size_t errlen) {
    char why[CXR_ERRMSG_MAX];
    int64_t deadline = p->p.timeout_ms > 0 ? now_ms() + p->p.timeout_ms : -1;
    pid_t pid = w->pid;
    int clean_eof = 0;
    *ev = EV_NONE;
    int rc = frame_write_deadline(w->fd, req->json, req->json_len, req->payload, req->payload_len, deadline, why,
                                  sizeof why);
    if (rc == CXR_OK) rc = frame_read_deadline(w->fd, resp, deadline, &clean_eof, why, sizeof why);
    if (rc == CXR_OK && !says_exiting(resp)) return CXR_OK; /* an {"error":…} answer included: the worker is fine */
    if (rc == CXR_OK) {
        /* answered, and exits now (worker.h: "worker_exiting"): replaced before the slot
           is free again, so no request reaches a worker on its way out */
        int killed;
        reap_dying(pid, &killed);
        close_slot(w);
        pthread_mutex_lock(&p->mu);
        int closing = p->closing;
        pthread_mutex_unlock(&p->mu);
        if (!closing) start_one(p, w, why, sizeof why);
        return CXR_OK;
    }
    /* the channel is broken or out of step: this worker is done */
    if (rc == CXR_ERR_TIMEOUT) {
        kill_reap(pid);
        errf(err, errlen, "worker %d timed out after %d ms (killed)", (int)pid, p->p.timeout_ms);
        *ev = EV_TIMEOUT;
    } else if (rc == CXR_ERR_IO) {
        int killed, st = reap_dying(pid, &killed);
        rc = describe_death(p, pid, st, killed, err, errlen);
        *ev = EV_CRASH;
    } else if (rc == CXR_ERR_PROTOCOL) {
        kill_reap(pid);
        errf(err, errlen, "worker %d broke the protocol: %s (killed)", (int)pid, why);
        *ev = EV_CRASH;
    } else { /* CXR_ERR_NOMEM: no room here for its response */
        kill_reap(pid);
        errf(err, errlen, "worker %d: %s (worker killed)", (int)pid, why);
    }
    close_slot(w);
    pthread_mutex_lock(&p->mu);
    int closing = p->closing;
    pthread_mutex_unlock(&p->mu);
    if (!closing && start_one(p, w, why, sizeof why) != CXR_OK) {
        size_t used = err ? strlen(err) : 0;
        if (err && used + 1 < errlen) errf(err + used, errlen - used, "; replacement failed: %s", why);
    }
    return rc;
}

int cxr_pool_call(cxr_pool *p, const cxr_msg *req, cxr_msg *resp, char *err, size_t errlen) {
    if (resp) memset(resp, 0, sizeof *resp);
    if (!p || !req || !resp || (req->json_len && !req->json) || (req->payload_len && !req->payload)) {
        errf(err, errlen, "cxr_pool_call: NULL argument");
        return CXR_ERR_ARG;
    }
    if (req->json_len > CXR_FRAME_MAX_JSON || req->payload_len > CXR_FRAME_MAX_PAYLOAD) {
        errf(err, errlen, "request over the frame caps (%zu bytes of JSON, %zu of payload)", req->json_len,
             req->payload_len);
        return CXR_ERR_ARG;
    }
    wslot *w = NULL;
    int ev = EV_NONE;
    pthread_mutex_lock(&p->mu);
    p->requests++;
    p->in_calls++;
    int rc = take(p, &w, err, errlen);
    pthread_mutex_unlock(&p->mu);
    if (rc == CXR_OK) rc = exchange(p, w, req, resp, &ev, err, errlen);
    pthread_mutex_lock(&p->mu);
    if (w) w->state = w->pid > 0 ? W_FREE : W_DEAD;
    if (rc == CXR_OK)
        p->ok++;
    else
        p->failed++;
    if (ev == EV_CRASH) p->crashed++;
    if (ev == EV_TIMEOUT) p->timed_out++;
    p->in_calls--;
    pthread_cond_broadcast(&p->cv);
    pthread_mutex_unlock(&p->mu);
    return rc;
}

/* ------------------------------------------------------ open / close */

static void free_pool(cxr_pool *p) {
    if (p->argv)
        for (char **a = p->argv; *a; a++) free(*a);
    free(p->argv);
    free(p->w);
    free(p);
}

/* Close every channel, give the workers POOL_CLOSE_GRACE_MS to exit, kill
 * and reap the rest. */
static void stop_all(cxr_pool *p) {
    for (int i = 0; i < p->n; i++)
        if (p->w[i].fd >= 0) {
            close(p->w[i].fd);
            p->w[i].fd = -1;
        }
    int64_t until = now_ms() + POOL_CLOSE_GRACE_MS;
    for (int i = 0; i < p->n; i++) {
        pid_t pid = p->w[i].pid;
        if (pid <= 0) continue;
        for (;;) {
            pid_t r = waitpid(pid, NULL, WNOHANG);
            if (r == pid || (r < 0 && errno != EINTR)) break;
            if (now_ms() >= until) {
                kill_reap(pid);
                break;
            }
            sleep_ms(2);
        }
        kill(-pid, SIGKILL); /* its group's leftovers */
        p->w[i].pid = 0;
    }
}

int cxr_pool_open(const cxr_pool_params *pp, cxr_pool **out, char *err, size_t errlen) {
    if (out) *out = NULL;
    if (!pp || !out) {
        errf(err, errlen, "cxr_pool_open: NULL argument");
        return CXR_ERR_ARG;
    }
    if (!pp->argv || !pp->argv[0] || pp->argv[0][0] != '/') {
        errf(err, errlen, "worker command: argv[0] must be an absolute path (got %s)",
             pp->argv && pp->argv[0] ? pp->argv[0] : "none");
        return CXR_ERR_ARG;
    }
    if (pp->channel_fd < 3 || pp->channel_fd > 1000) {
        errf(err, errlen, "worker channel fd %d: must be 3..1000", pp->channel_fd);
        return CXR_ERR_ARG;
    }
    if (pp->mem_limit_mb > ((size_t)1 << 40)) {
        errf(err, errlen, "worker memory limit %zu MiB is absurd", pp->mem_limit_mb);
        return CXR_ERR_ARG;
    }
    cxr_pool *p = calloc(1, sizeof *p);
    if (!p) {
        errf(err, errlen, "out of memory");
        return CXR_ERR_NOMEM;
    }
    p->p = *pp;
    p->n = pp->n_workers > 0 ? pp->n_workers : cxr_pool_params_default().n_workers;
    if (p->n > POOL_MAX_WORKERS) p->n = POOL_MAX_WORKERS;
    size_t argc = 0;
    while (pp->argv[argc]) argc++;
    p->argv = calloc(argc + 1, sizeof *p->argv);
    p->w = calloc((size_t)p->n, sizeof *p->w);
    int ok = p->argv && p->w;
    for (size_t i = 0; ok && i < argc; i++) ok = (p->argv[i] = strdup(pp->argv[i])) != NULL;
    if (!ok) {
        free_pool(p);
        errf(err, errlen, "out of memory");
        return CXR_ERR_NOMEM;
    }
    p->p.argv = (const char *const *)p->argv;
    for (int i = 0; i < p->n; i++) {
        p->w[i].state = W_STARTING;
        p->w[i].fd = -1;
    }
    pthread_condattr_t ca;
    pthread_condattr_init(&ca);
    pthread_condattr_setclock(&ca, CLOCK_MONOTONIC);
    pthread_cond_init(&p->cv, &ca);
    pthread_condattr_destroy(&ca);
    pthread_mutex_init(&p->mu, NULL);

    /* start them all, then collect the hellos: start-up runs in parallel */
    int rc = CXR_OK;
    for (int i = 0; i < p->n && rc == CXR_OK; i++) rc = spawn_start(p, &p->w[i], err, errlen);
    int64_t deadline = start_deadline(p);
    for (int i = 0; i < p->n && rc == CXR_OK; i++) rc = spawn_finish(p, &p->w[i], deadline, err, errlen);
    if (rc != CXR_OK) {
        stop_all(p);
        pthread_mutex_destroy(&p->mu);
        pthread_cond_destroy(&p->cv);
        free_pool(p);
        return rc;
    }
    for (int i = 0; i < p->n; i++) p->w[i].state = W_FREE;
    *out = p;
    return CXR_OK;
}

void cxr_pool_close(cxr_pool *p) {
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    p->closing = 1;
    pthread_cond_broadcast(&p->cv);
    while (p->in_calls > 0) pthread_cond_wait(&p->cv, &p->mu);
    pthread_mutex_unlock(&p->mu);
    stop_all(p);
    pthread_mutex_destroy(&p->mu);
    pthread_cond_destroy(&p->cv);
    free_pool(p);
}

void cxr_pool_get_stats(cxr_pool *p, cxr_pool_stats *out) {
    if (!out) return;
    memset(out, 0, sizeof *out);
    if (!p) return;
    pthread_mutex_lock(&p->mu);
    out->n_workers = p->n;
    for (int i = 0; i < p->n; i++) {
        if (p->w[i].state == W_FREE || p->w[i].state == W_BUSY) out->n_alive++;
        if (p->w[i].state == W_BUSY) out->n_busy++;
    }
    out->n_waiting = p->n_waiting;
    out->requests = p->requests;
    out->ok = p->ok;
    out->failed = p->failed;
    out->crashed = p->crashed;
    out->timed_out = p->timed_out;
    out->restarts = p->restarts;
    pthread_mutex_unlock(&p->mu);
}
