/*
 * options.c — what every answering command of `cxrvqa` (ask, worker) shares:
 * the common options and opening the service (model + audit store + SR
 * folder) from them, printing why when it cannot. It owns no answering.
 */
#define _GNU_SOURCE /* realpath */
#include "cli.h"
#include "options.h"

#include <errno.h>
#include <stdarg.h>
#include <limits.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

#ifndef CXR_DEFAULT_MODEL
#define CXR_DEFAULT_MODEL "model/cxrvqa-cxr-cnn.gguf"
#endif

/* The model a command uses without --model: $CXRVQA_MODEL, else the model
 * installed beside the executable (PREFIX/bin/cxrvqa ->
 * PREFIX/share/cxrvqa/models/, when it is there), else the default model
 * shipped in the source tree (path fixed at build time). Here, with the
 * other things the commands share, so that main.c only calls into the
 * command files and none of them calls back into main.c. */
const char *cli_default_model(void) {
    const char *e = getenv("CXRVQA_MODEL");
    if (e && *e) return e;
#ifdef CXR_EXE_TO_MODEL
    static char installed[PATH_MAX];
    if (!installed[0]) {
        char exe[4096];
        ssize_t n = readlink("/proc/self/exe", exe, sizeof exe - 1);
        char *slash = n > 0 ? (exe[n] = 0, strrchr(exe, '/')) : NULL;
        struct stat st;
        if (slash) {
            *slash = 0;
            char joined[4096 + 128];
            snprintf(joined, sizeof joined, "%s/%s", exe, CXR_EXE_TO_MODEL);
            if (!realpath(joined, installed) || stat(installed, &st) != 0 || !S_ISREG(st.st_mode))
                snprintf(installed, sizeof installed, "-");
        } else {
            snprintf(installed, sizeof installed, "-");
        }
    }
    if (strcmp(installed, "-") != 0) return installed;
#endif
    return CXR_DEFAULT_MODEL;
}

void cli_close_service(svc *s) {
    cxr_audit_close(s->audit);
    cxr_vqa_close(s->vqa);
}

/* print "cxrvqa: <what>" and keep it in why (may be NULL) */
static void open_failed(char *why, size_t whylen, const char *fmt, ...) {
    char msg[CXR_ERRMSG_MAX + PATH_MAX + 64];
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(msg, sizeof msg, fmt, ap);
    va_end(ap);
    fprintf(stderr, "cxrvqa: %s\n", msg);
    if (why && whylen) snprintf(why, whylen, "%s", msg);
}

int cli_open_service(const cli_common_opts *c, svc *s, char *dbbuf, size_t dblen, char *why, size_t whylen) {
    memset(s, 0, sizeof *s);
    char err[CXR_ERRMSG_MAX];
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = c->model ? c->model : cli_default_model();
    p.threads = c->threads;
    p.strict_domain = c->strict;
    p.full_decode = c->full_decode;
    p.assess.min_positives = c->min_positives;
    p.assess.min_auc_lo = c->min_auc;
    int rc = cxr_vqa_open(&p, &s->vqa, err, sizeof err);
    if (rc != CXR_OK) {
        open_failed(why, whylen, "%s: %s", p.model_path, err[0] ? err : cxr_strerror(rc));
        return 1;
    }
    if (c->no_audit && c->audit_key) {
        open_failed(why, whylen, "--audit-key and --no-audit exclude each other");
        cxr_vqa_close(s->vqa);
        return 3;
    }
    if (!c->no_audit) {
        const char *db = c->db ? c->db : cxr_audit_default_path(dbbuf, dblen);
        if (!db) {
            open_failed(why, whylen, "no audit database: give --db FILE (or set CXRVQA_DB)");
            cxr_vqa_close(s->vqa);
            return 3;
        }
        if (db != dbbuf) snprintf(dbbuf, dblen, "%s", db);
        cxr_audit_params ap = cxr_audit_params_default();
        ap.chain_key_file = c->audit_key;
        rc = cxr_audit_open(dbbuf, &ap, &s->audit, err, sizeof err);
        if (rc != CXR_OK) {
            open_failed(why, whylen, "audit database %s: %s", dbbuf, err);
            cxr_vqa_close(s->vqa);
            return 3;
        }
        s->audit_path = dbbuf;
    }
    if (c->sr_dir && mkdir(c->sr_dir, 0755) != 0 && errno != EEXIST) {
        open_failed(why, whylen, "%s: %s", c->sr_dir, strerror(errno));
        cli_close_service(s);
        return 3;
    }
    s->sr_dir = c->sr_dir;
    s->uid_root = c->uid_root;
    s->user = c->user;
    s->application = c->app;
    return 0;
}
