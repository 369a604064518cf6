/*
 * worker_testd.c — a real worker executable for tests/plugin/worker/test_worker.c: serves
 * the framed channel with cxr_worker_serve and misbehaves on request. It owns
 * nothing of the product; each op exists to drive one path of the pool.
 *
 * Request JSON {"op":OP, …}:
 *   echo   the request's json and payload back
 *   pid    {"pid","pgid","sid","rlimit_as_mb","rlimit_core","blocked","fds":[…]}
 *          (how the pool set the process up: session, rlimits, signal mask, open fds)
 *   slow   sleep "ms" then {"slept":ms}
 *   big    a payload of "bytes" (default 50 MB) bytes, byte i = (i*7+3) & 255
 *   crash  raise SIGSEGV          abort  abort()        exit  exit(3)
 *   hang   sleep forever          close  close the channel, then sleep
 *   alloc  malloc + memset 2 GiB blocks until malloc fails, then exit with
 *          CXR_WORKER_EXIT_NOMEM (refused without an RLIMIT_AS: it would eat the machine)
 *   nomem  the handler fails with CXR_ERR_NOMEM     fail  it fails with CXR_ERR_NOT_DICOM
 *   garbage  write a frame header over the caps on the channel
 * Flags: --fd N (channel fd, default 3), --no-hello (sleep without a hello),
 * --fail-start (send a start-up error instead of the hello, exit 1),
 * --fail-if-exists PATH (the same, when PATH exists), --exit-at-start N.
 */
#include "worker.h"

#include <cjson/cJSON.h>
#include <dirent.h>
#include <signal.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/resource.h>
#include <sys/stat.h>
#include <time.h>
#include <unistd.h>

/* Under ASan: let SIGSEGV kill the process as it would without ASan. */
const char *__asan_default_options(void);
const char *__asan_default_options(void) { return "handle_segv=0"; }

typedef struct {
    int fd;
} testd;

static void sleep_ms(long ms) {
    struct timespec ts = {ms / 1000, (ms % 1000) * 1000000L};
    while (nanosleep(&ts, &ts) != 0) {
    }
}

static int set_json(cxr_msg *resp, cJSON *o) {
    resp->json = cJSON_PrintUnformatted(o);
    cJSON_Delete(o);
    return resp->json ? CXR_OK : CXR_ERR_NOMEM;
}

static int set_text(cxr_msg *resp, const char *msg) {
    resp->json = strdup(msg);
    return CXR_OK;
}

static int op_pid(cxr_msg *resp, int chan) {
    cJSON *o = cJSON_CreateObject();
    struct rlimit as, core;
    getrlimit(RLIMIT_AS, &as);
    getrlimit(RLIMIT_CORE, &core);
    cJSON_AddNumberToObject(o, "pid", getpid());
    cJSON_AddNumberToObject(o, "pgid", getpgid(0));
    cJSON_AddNumberToObject(o, "sid", getsid(0));
    cJSON_AddNumberToObject(o, "rlimit_as_mb", as.rlim_cur == RLIM_INFINITY ? -1.0 : (double)(as.rlim_cur >> 20));
    cJSON_AddNumberToObject(o, "rlimit_core", core.rlim_cur == RLIM_INFINITY ? -1.0 : (double)core.rlim_cur);
    sigset_t cur;
    sigprocmask(SIG_SETMASK, NULL, &cur);
    int blocked = 0;
    for (int s = 1; s < 32; s++) blocked += sigismember(&cur, s) == 1;
    cJSON_AddNumberToObject(o, "blocked", blocked);
    cJSON_AddNumberToObject(o, "channel", chan);
    cJSON *fds = cJSON_AddArrayToObject(o, "fds");
    DIR *d = opendir("/proc/self/fd");
    if (d) {
        struct dirent *de;
        while ((de = readdir(d)) != NULL) {
            if (de->d_name[0] == '.') continue;
            int fd = atoi(de->d_name);
            if (fd == dirfd(d)) continue;
            cJSON_AddItemToArray(fds, cJSON_CreateNumber(fd));
        }
        closedir(d);
    }
    return set_json(resp, o);
}

static int op_alloc(cxr_msg *resp) {
    struct rlimit as;
    if (getrlimit(RLIMIT_AS, &as) != 0 || as.rlim_cur == RLIM_INFINITY) {
        set_text(resp, "alloc refused: no RLIMIT_AS set");
        return CXR_ERR_ARG;
    }
    const size_t block = (size_t)2 << 30;
    for (int i = 0; i < 64; i++) {
        void *b = malloc(block);
        if (!b) exit(CXR_WORKER_EXIT_NOMEM);
        memset(b, 0x5a, block);
    }
    set_text(resp, "alloc: 128 GiB granted under the limit?");
    return CXR_ERR_INTERNAL;
}

static int handle(void *ctx, const cxr_msg *req, cxr_msg *resp) {
    testd *t = ctx;
    cJSON *r = cJSON_ParseWithLength(req->json, req->json_len);
    const cJSON *op_item = cJSON_GetObjectItemCaseSensitive(r, "op");
    char op[32] = "";
    if (cJSON_IsString(op_item)) snprintf(op, sizeof op, "%s", op_item->valuestring);
    const cJSON *ms = cJSON_GetObjectItemCaseSensitive(r, "ms");
    const cJSON *bytes = cJSON_GetObjectItemCaseSensitive(r, "bytes");
    long ms_v = cJSON_IsNumber(ms) ? (long)ms->valuedouble : 0;
    size_t bytes_v = cJSON_IsNumber(bytes) ? (size_t)bytes->valuedouble : (size_t)50 << 20;
    cJSON_Delete(r);

    if (strcmp(op, "echo") == 0) {
        resp->json = malloc(req->json_len + 1);
        if (!resp->json) return CXR_ERR_NOMEM;
        memcpy(resp->json, req->json, req->json_len + 1);
        resp->json_len = req->json_len;
        if (req->payload_len) {
            resp->payload = malloc(req->payload_len);
            if (!resp->payload) return CXR_ERR_NOMEM;
            memcpy(resp->payload, req->payload, req->payload_len);
            resp->payload_len = req->payload_len;
        }
        return CXR_OK;
    }
    if (strcmp(op, "pid") == 0) return op_pid(resp, t->fd);
    if (strcmp(op, "slow") == 0) {
        sleep_ms(ms_v);
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "slept", (double)ms_v);
        return set_json(resp, o);
    }
    if (strcmp(op, "big") == 0) {
        resp->payload = malloc(bytes_v ? bytes_v : 1);
        if (!resp->payload) return CXR_ERR_NOMEM;
        for (size_t i = 0; i < bytes_v; i++) resp->payload[i] = (uint8_t)(i * 7 + 3);
        resp->payload_len = bytes_v;
        cJSON *o = cJSON_CreateObject();
        cJSON_AddNumberToObject(o, "bytes", (double)bytes_v);
        return set_json(resp, o);
    }
    if (strcmp(op, "crash") == 0) raise(SIGSEGV);
    if (strcmp(op, "abort") == 0) abort();
    if (strcmp(op, "exit") == 0) exit(3);
    if (strcmp(op, "hang") == 0)
        for (;;) pause();
    if (strcmp(op, "close") == 0) {
        close(t->fd);
        for (;;) pause();
    }
    if (strcmp(op, "alloc") == 0) return op_alloc(resp);
    if (strcmp(op, "nomem") == 0) {
        set_text(resp, "simulated allocation failure");
        return CXR_ERR_NOMEM;
    }
    if (strcmp(op, "fail") == 0) {
        set_text(resp, "not a DICOM file (test \"fail\" op)");
        return CXR_ERR_NOT_DICOM;
    }
    if (strcmp(op, "garbage") == 0) {
        static const uint8_t hdr[8] = {0xff, 0xff, 0xff, 0xff, 0, 0, 0, 0};
        ssize_t n = write(t->fd, hdr, sizeof hdr);
        (void)n;
        for (;;) pause();
    }
    set_text(resp, "unknown op");
    return CXR_ERR_ARG;
}

int main(int argc, char **argv) {
    testd t = {.fd = 3};
    for (int i = 1; i < argc; i++) {
        if (strcmp(argv[i], "--fd") == 0 && i + 1 < argc) {
            t.fd = atoi(argv[++i]);
        } else if (strcmp(argv[i], "--no-hello") == 0) {
            for (;;) pause();
        } else if (strcmp(argv[i], "--fail-start") == 0) {
            cxr_worker_fail(t.fd, CXR_ERR_IO, "cannot open model /nonexistent.gguf: No such file or directory");
            return 1;
        } else if (strcmp(argv[i], "--fail-if-exists") == 0 && i + 1 < argc) {
            struct stat st;
            if (stat(argv[++i], &st) == 0) {
                cxr_worker_fail(t.fd, CXR_ERR_IO, "flag file present: refusing to start");
                return 1;
            }
        } else if (strcmp(argv[i], "--exit-at-start") == 0 && i + 1 < argc) {
            return atoi(argv[++i]);
        } else {
            fprintf(stderr, "worker_testd: unknown argument %s\n", argv[i]);
            return 2;
        }
    }
    int rc = cxr_worker_serve(t.fd, "{\"ready\":true,\"worker\":\"testd\"}", handle, &t);
    if (rc == CXR_ERR_NOMEM) return CXR_WORKER_EXIT_NOMEM;
    return rc == CXR_OK ? 0 : 1;
}
