/*
 * orthanc_test_queue.c — the Orthanc plugin's persisted auto-screen queue
 * (plugin/orthanc/queue.c) without Orthanc: order, idempotent push, retry
 * delay, survival across close/reopen, refusal of a path it cannot create,
 * files created 0600 (with a permissive umask) and an old 0644 file tightened.
 */
#include "internal.h"
#include "check.h"

#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <unistd.h>

static int mode_of(const char *dir, const char *name) {
    char p[300];
    struct stat st;
    snprintf(p, sizeof p, "%s/%s", dir, name);
    return stat(p, &st) == 0 ? (int)(st.st_mode & 0777) : -1;
}

int main(void) {
    char dir[] = "/tmp/cxr_queue_XXXXXX", path[256], err[CXR_ERRMSG_MAX];
    CHECK(mkdtemp(dir) != NULL, "mkdtemp(dir) != NULL");
    snprintf(path, sizeof path, "%s/q.sqlite", dir);
    queue *q = NULL;
    mode_t old_umask = umask(0); /* the most permissive: the queue must still be private */
    CHECK(queue_open(path, &q, err, sizeof err) == CXR_OK, "queue_open(path, &q, err, sizeof err) == CXR_OK");
    CHECK(queue_length(q) == 0, "queue_length(q) == 0");
    queue_item it;
    CHECK(queue_peek(q, 1000, &it) == 0, "queue_peek(q, 1000, &it) == 0");
    CHECK(queue_push(q, "aaaa-1") == CXR_OK, "queue_push(q, \"aaaa-1\") == CXR_OK");
    CHECK(queue_push(q, "bbbb-2") == CXR_OK, "queue_push(q, \"bbbb-2\") == CXR_OK");
    CHECK(queue_push(q, "aaaa-1") == CXR_OK, "queue_push(q, \"aaaa-1\") == CXR_OK"); /* idempotent */
    CHECK(queue_length(q) == 2, "queue_length(q) == 2");
    CHECK(queue_peek(q, 1000, &it) == 1, "queue_peek(q, 1000, &it) == 1");
    CHECK(strcmp(it.instance, "aaaa-1") == 0 && it.attempts == 0, "strcmp(it.instance, \"aaaa-1\") == 0 && it.attempts == 0");
    /* a retried item waits until not_before and counts its attempts */
    CHECK(queue_retry(q, it.seq, 2000) == CXR_OK, "queue_retry(q, it.seq, 2000) == CXR_OK");
    CHECK(queue_peek(q, 1000, &it) == 1, "queue_peek(q, 1000, &it) == 1");
    CHECK(strcmp(it.instance, "bbbb-2") == 0, "strcmp(it.instance, \"bbbb-2\") == 0");
    int64_t b = it.seq;
    CHECK(mode_of(dir, "q.sqlite") == 0600, "mode_of(dir, \"q.sqlite\") == 0600");
    CHECK(mode_of(dir, "q.sqlite-wal") == 0600, "mode_of(dir, \"q.sqlite-wal\") == 0600");
    CHECK(mode_of(dir, "q.sqlite-shm") == 0600, "mode_of(dir, \"q.sqlite-shm\") == 0600");
    queue_close(q);
    /* a file left 0644 by an older version is made private when opened */
    CHECK(chmod(path, 0644) == 0, "chmod(path, 0644) == 0");

    /* survives a restart */
    CHECK(queue_open(path, &q, err, sizeof err) == CXR_OK, "queue_open(path, &q, err, sizeof err) == CXR_OK");
    CHECK(queue_length(q) == 2, "queue_length(q) == 2");
    CHECK(mode_of(dir, "q.sqlite") == 0600, "mode_of(dir, \"q.sqlite\") == 0600 (tightened)");
    CHECK(queue_done(q, b) == CXR_OK, "queue_done(q, b) == CXR_OK");
    CHECK(queue_peek(q, 1000, &it) == 0, "queue_peek(q, 1000, &it) == 0");
    CHECK(queue_peek(q, 2000, &it) == 1, "queue_peek(q, 2000, &it) == 1");
    CHECK(strcmp(it.instance, "aaaa-1") == 0 && it.attempts == 1, "strcmp(it.instance, \"aaaa-1\") == 0 && it.attempts == 1");
    CHECK(queue_done(q, it.seq) == CXR_OK, "queue_done(q, it.seq) == CXR_OK");
    CHECK(queue_length(q) == 0, "queue_length(q) == 0");
    char longid[100];
    memset(longid, 'a', sizeof longid - 1);
    longid[sizeof longid - 1] = 0;
    CHECK(queue_push(q, longid) == CXR_ERR_ARG, "queue_push(q, longid) == CXR_ERR_ARG");
    queue_close(q);
    queue_close(NULL);

    /* a path that cannot be created */
    CHECK(queue_open("/nonexistent-dir/q.sqlite", &q, err, sizeof err) == CXR_ERR_IO && q == NULL, "queue_open(\"/nonexistent-dir/q.sqlite\", &q, err, sizeof err) == CXR_ERR_IO && q == NULL");
    umask(old_umask);
    CHECK(strstr(err, "/nonexistent-dir/q.sqlite") != NULL, "strstr(err, \"/nonexistent-dir/q.sqlite\") != NULL");

    snprintf(path, sizeof path, "rm -rf %s", dir);
    CHECK(system(path) == 0, "system(path) == 0");
    return CHECK_SUMMARY();
}
