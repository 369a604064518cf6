/*
 * queue.c — the persisted auto-screen queue of the Orthanc plugin:
 * Orthanc instance IDs in a small SQLite file, so that instances received
 * but not yet screened are screened after a restart. It knows nothing of
 * Orthanc or the workers; the on-change callback pushes, the plugin's own
 * thread peeks, and marks done or retries. One connection behind one mutex.
 */
#include "internal.h"

#include <errno.h>
#include <fcntl.h>
#include <sqlite3.h>
#include <stdio.h>
#include <sys/stat.h>
#include <unistd.h>
#include <stdlib.h>
#include <string.h>

struct queue {
    sqlite3 *db;
    pthread_mutex_t mu;
    sqlite3_stmt *push, *peek, *done, *retry, *count;
};

static const char SCHEMA[] =
    "PRAGMA journal_mode=WAL;"
    "PRAGMA synchronous=NORMAL;"
    "CREATE TABLE IF NOT EXISTS queue("
    " seq INTEGER PRIMARY KEY AUTOINCREMENT,"
    " instance TEXT NOT NULL UNIQUE,"
    " attempts INTEGER NOT NULL DEFAULT 0,"
    " not_before INTEGER NOT NULL DEFAULT 0,"
    " added TEXT NOT NULL DEFAULT (strftime('%Y-%m-%dT%H:%M:%SZ','now')));";

/* Create the file 0600 (whatever Orthanc's umask), or tighten an existing
 * one left readable by others (0644 before 0.2.1): it holds instance IDs
 * only, but SQLite gives its -wal and -shm files the database's mode. */
static int private_file(const char *path, char *err, size_t errlen) {
    int fd = open(path, O_RDWR | O_CREAT | O_CLOEXEC | O_NOFOLLOW, 0600);
    if (fd < 0) {
        snprintf(err, errlen, "%s: %s", path, strerror(errno));
        return CXR_ERR_IO;
    }
    struct stat st;
    int rc = fstat(fd, &st) == 0 && ((st.st_mode & 077) == 0 || fchmod(fd, 0600) == 0) ? CXR_OK : CXR_ERR_IO;
    if (rc != CXR_OK)
        snprintf(err, errlen, "%s: cannot make it private (0600): %s", path, strerror(errno));
    close(fd);
    return rc;
}

int queue_open(const char *path, queue **out, char *err, size_t errlen) {
    *out = NULL;
    int prc = private_file(path, err, errlen);
    if (prc != CXR_OK)
        return prc;
    queue *q = calloc(1, sizeof *q);
    if (!q) {
        snprintf(err, errlen, "out of memory");
        return CXR_ERR_NOMEM;
    }
    pthread_mutex_init(&q->mu, NULL);
    int rc = sqlite3_open_v2(path, &q->db, SQLITE_OPEN_READWRITE | SQLITE_OPEN_CREATE | SQLITE_OPEN_FULLMUTEX, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_busy_timeout(q->db, 5000);
    if (rc == SQLITE_OK)
        rc = sqlite3_exec(q->db, SCHEMA, NULL, NULL, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(q->db, "INSERT OR IGNORE INTO queue(instance) VALUES(?1)", -1, &q->push, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(q->db,
                                "SELECT seq, instance, attempts FROM queue WHERE not_before <= ?1 "
                                "ORDER BY seq LIMIT 1",
                                -1, &q->peek, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(q->db, "DELETE FROM queue WHERE seq = ?1", -1, &q->done, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(q->db, "UPDATE queue SET attempts = attempts + 1, not_before = ?2 WHERE seq = ?1",
                                -1, &q->retry, NULL);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(q->db, "SELECT count(*) FROM queue", -1, &q->count, NULL);
    if (rc != SQLITE_OK) {
        snprintf(err, errlen, "%s: %s", path, q->db ? sqlite3_errmsg(q->db) : "cannot open");
        queue_close(q);
        return CXR_ERR_DB;
    }
    *out = q;
    return CXR_OK;
}

void queue_close(queue *q) {
    if (!q)
        return;
    sqlite3_finalize(q->push);
    sqlite3_finalize(q->peek);
    sqlite3_finalize(q->done);
    sqlite3_finalize(q->retry);
    sqlite3_finalize(q->count);
    sqlite3_close(q->db);
    pthread_mutex_destroy(&q->mu);
    free(q);
}

/* Run a prepared write statement with up to two bound values. */
static int run(queue *q, sqlite3_stmt *st, const char *text, int64_t a, int64_t b, int nbind) {
    pthread_mutex_lock(&q->mu);
    sqlite3_reset(st);
    if (text)
        sqlite3_bind_text(st, 1, text, -1, SQLITE_TRANSIENT);
    else if (nbind >= 1)
        sqlite3_bind_int64(st, 1, a);
    if (nbind >= 2)
        sqlite3_bind_int64(st, 2, b);
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    pthread_mutex_unlock(&q->mu);
    return rc == SQLITE_DONE ? CXR_OK : CXR_ERR_DB;
}

int queue_push(queue *q, const char *instance_id) {
    if (!q || !instance_id || strlen(instance_id) >= sizeof ((queue_item *)0)->instance)
        return CXR_ERR_ARG;
    return run(q, q->push, instance_id, 0, 0, 1);
}

int queue_done(queue *q, int64_t seq) { return q ? run(q, q->done, NULL, seq, 0, 1) : CXR_ERR_ARG; }

int queue_retry(queue *q, int64_t seq, int64_t not_before) {
    return q ? run(q, q->retry, NULL, seq, not_before, 2) : CXR_ERR_ARG;
}

int queue_peek(queue *q, int64_t now, queue_item *it) {
    if (!q)
        return CXR_ERR_ARG;
    int found = 0;
    pthread_mutex_lock(&q->mu);
    sqlite3_reset(q->peek);
    sqlite3_bind_int64(q->peek, 1, now);
    int rc = sqlite3_step(q->peek);
    if (rc == SQLITE_ROW) {
        const unsigned char *s = sqlite3_column_text(q->peek, 1);
        it->seq = sqlite3_column_int64(q->peek, 0);
        snprintf(it->instance, sizeof it->instance, "%s", s ? (const char *)s : "");
        it->attempts = sqlite3_column_int(q->peek, 2);
        found = 1;
    } else if (rc != SQLITE_DONE) {
        found = CXR_ERR_DB;
    }
    sqlite3_reset(q->peek);
    pthread_mutex_unlock(&q->mu);
    return found;
}

int64_t queue_length(queue *q) {
    if (!q)
        return -1;
    int64_t n = -1;
    pthread_mutex_lock(&q->mu);
    sqlite3_reset(q->count);
    if (sqlite3_step(q->count) == SQLITE_ROW)
        n = sqlite3_column_int64(q->count, 0);
    sqlite3_reset(q->count);
    pthread_mutex_unlock(&q->mu);
    return n;
}
