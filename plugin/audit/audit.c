/*
 * audit.c — the SQLite audit store: opening (local filesystem check, 0600
 * file, WAL + synchronous=FULL, schema migrations), the hash-chained append
 * that commits before it returns, the chain verifier, and reading rows back
 * (scan, JSON). Every statement is a prepared statement or a constant
 * string; no SQL is ever built from data. It must not print, exit, or
 * return success for a row that is not committed: callers fail closed on
 * CXR_ERR_AUDIT.
 */
#include "audit.h"
#include "cxr_util.h"

#include <cjson/cJSON.h>
#include <openssl/core_names.h>
#include <openssl/crypto.h>
#include <openssl/evp.h>
#include <openssl/hmac.h>
#include <openssl/params.h>
#include <sqlite3.h>

#include <errno.h>
#include <fcntl.h>
#include <pwd.h>
#include <stdarg.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <sys/stat.h>
#include <sys/random.h>
#include <sys/statfs.h>
#include <sys/sysmacros.h>
#include <time.h>
#include <unistd.h>

/* ------------------------------------------------------------------------
 * Constants and the column list
 * ---------------------------------------------------------------------- */

#define APPLICATION_ID 0x43585241 /* 'CXRA' in the SQLite header: this is a cxrvqa audit store */
#define GENESIS_HASH "0000000000000000000000000000000000000000000000000000000000000000"
#define HASH_DOMAIN "cxrvqa-audit-row-v1" /* first bytes hashed for every row (with its NUL) */
#define HMAC_DOMAIN "cxrvqa-audit-row-hmac-v1" /* first bytes of every keyed row's HMAC (with its NUL) */
#define KEYED_EVENT "audit-keyed"          /* the event row where a store's keyed chain begins */
#define KEYED_KEY_PREFIX "audit-keyed:"    /* its request_key: this prefix + the key id */
#define REKEYED_EVENT "audit-rekeyed"      /* the last row under a key retired by rotation */
#define REKEYED_KEY_PREFIX "audit-rekeyed:" /* its request_key: this prefix + the NEW key's id */
#define KEY_MIN_BYTES 16
#define KEY_MAX_BYTES 4096
#define HOST_MAX 256
#define USER_MAX 256

/* Every hashed column, in hash order; row_hash follows. Keep in step with
 * the newest migration's CREATE TABLE. */
#define AUDIT_COLUMNS(X)                                                                       \
    X(seq) X(time_utc) X(event_type) X(event_id) X(event_action) X(outcome)                    \
    X(user_name) X(application) X(host) X(pid)                                                 \
    X(question) X(language) X(intent)                                                          \
    X(study_uid) X(series_uid) X(sop_uid) X(sop_class_uid) X(accession) X(source) X(patient_id) \
    X(answer) X(answer_text) X(findings_json) X(warnings_json)                                 \
    X(model_name) X(model_version) X(model_sha256) X(prompt_version)                           \
    X(sr_uid) X(sr_dest) X(latency_ms) X(error_code) X(reason) X(request_key) X(prev_hash)

#define COL_ENUM(n) C_##n,
#define COL_NAME(n) #n ","
#define COL_QMARK(n) "?,"
enum { AUDIT_COLUMNS(COL_ENUM) C_row_hash, NCOL };
#define NHASHED C_row_hash

static const char SQL_INSERT[] =
    "INSERT INTO audit(" AUDIT_COLUMNS(COL_NAME) "row_hash) VALUES(" AUDIT_COLUMNS(COL_QMARK) "?)";
/* scans: ?1 study (NULL = any), ?2 since (NULL = any), ?3 limit (-1 = none) */
#define SQL_SCAN_HEAD "SELECT " AUDIT_COLUMNS(COL_NAME) "row_hash, id FROM audit"
#define SQL_SCAN_WHERE " WHERE (?1 IS NULL OR study_uid = ?1) AND (?2 IS NULL OR time_utc >= ?2)"
static const char SQL_SCAN_ASC[] = SQL_SCAN_HEAD SQL_SCAN_WHERE " ORDER BY seq ASC LIMIT ?3";
static const char SQL_SCAN_DESC[] = SQL_SCAN_HEAD SQL_SCAN_WHERE " ORDER BY seq DESC LIMIT ?3";
static const char SQL_VERIFY[] = SQL_SCAN_HEAD " ORDER BY id";
static const char SQL_HEAD[] = "SELECT (SELECT value FROM meta WHERE key = 'chain_head_seq'),"
                               " (SELECT value FROM meta WHERE key = 'chain_head_hash')";
static const char SQL_SET_META[] = "UPDATE meta SET value = ?2 WHERE key = ?1";
/* the chain key record: both NULL on an unkeyed store */
static const char SQL_KEYSTATE[] = "SELECT (SELECT value FROM meta WHERE key = 'chain_key_id'),"
                                   " (SELECT value FROM meta WHERE key = 'chain_keyed_from')";
/* the keys a rotated store has had: "id@from id@from ..." (absent: never rotated) */
static const char SQL_KEYHISTORY[] = "SELECT value FROM meta WHERE key = 'chain_key_history'";
static const char SQL_HAS_REQUEST[] =
    "SELECT 1 FROM audit WHERE request_key = ?1 AND outcome IN (0, 4) LIMIT 1";

/* Forward migrations: migrations[i] takes user_version i to i + 1. Each is
 * a constant script ending with its PRAGMA user_version; they run inside
 * one BEGIN IMMEDIATE transaction. Never edit a shipped one: add the next. */
static const char *const migrations[] = {
    /* 0 -> 1 */
    "CREATE TABLE audit("
    " id INTEGER PRIMARY KEY,"
    " seq INTEGER NOT NULL, time_utc TEXT NOT NULL,"
    " event_type TEXT NOT NULL, event_id INTEGER NOT NULL, event_action TEXT, outcome INTEGER NOT NULL,"
    " user_name TEXT, application TEXT, host TEXT, pid INTEGER,"
    " question TEXT, language TEXT, intent TEXT,"
    " study_uid TEXT, series_uid TEXT, sop_uid TEXT, sop_class_uid TEXT, accession TEXT, source TEXT,"
    " patient_id TEXT,"
    " answer TEXT, answer_text TEXT, findings_json TEXT, warnings_json TEXT,"
    " model_name TEXT, model_version TEXT, model_sha256 TEXT, prompt_version TEXT,"
    " sr_uid TEXT, sr_dest TEXT, latency_ms INTEGER, error_code INTEGER, reason TEXT,"
    " request_key TEXT,"
    " prev_hash TEXT NOT NULL, row_hash TEXT NOT NULL);"
    "CREATE INDEX audit_seq ON audit(seq);"
    "CREATE INDEX audit_request ON audit(request_key);"
    "CREATE INDEX audit_study ON audit(study_uid);"
    "CREATE TABLE meta(key TEXT PRIMARY KEY, value);"
    "INSERT INTO meta(key, value) VALUES"
    " ('schema_version', 1), ('chain_head_seq', 0), ('chain_head_hash', '" GENESIS_HASH "'),"
    " ('genesis_hash', '" GENESIS_HASH "'), ('hash', 'sha256 " HASH_DOMAIN "'),"
    " ('created_utc', strftime('%Y-%m-%dT%H:%M:%fZ', 'now'));"
    "CREATE TRIGGER audit_no_update BEFORE UPDATE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;"
    "CREATE TRIGGER audit_no_delete BEFORE DELETE ON audit"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;"
    "PRAGMA application_id = 1129861697;" /* APPLICATION_ID */
    "PRAGMA user_version = 1;",
};
_Static_assert(sizeof migrations / sizeof migrations[0] == CXR_AUDIT_SCHEMA_VERSION,
               "one migration per schema version");
_Static_assert(APPLICATION_ID == 1129861697, "application id in migration 1");

struct cxr_audit {
    sqlite3 *db;
    char *path;
    cxr_audit_params p;
    unsigned char key[KEY_MAX_BYTES];
    size_t keylen; /* 0: no pseudonymisation */
    char user[USER_MAX], host[HOST_MAX];
    double busy_since; /* when the current wait for a lock began */
    EVP_MD *sha256;
    EVP_MD_CTX *md;
    /* the chain key (keyed mode): ckeylen 0 when none was given */
    unsigned char ckey[CXR_AUDIT_KEY_MAX];
    size_t ckeylen;
    char ckey_id[CXR_AUDIT_KEY_ID_HEX];
    EVP_MAC *hmac;
    EVP_MAC_CTX *mac;
    char chain_err[CXR_ERRMSG_MAX]; /* why chain_insert refused (CHAIN_KEY_REFUSED) */
    sqlite3_stmt *begin, *commit, *rollback, *head, *insert, *set_meta, *has_request, *keystate;
};

/* ------------------------------------------------------------------------
 * Small helpers
 * ---------------------------------------------------------------------- */

static const char *sqlite_code_name(int rc) {
    switch (rc & 0xff) {
    case SQLITE_BUSY: return "SQLITE_BUSY";
    case SQLITE_LOCKED: return "SQLITE_LOCKED";
    case SQLITE_NOMEM: return "SQLITE_NOMEM";
    case SQLITE_READONLY: return "SQLITE_READONLY";
    case SQLITE_IOERR: return "SQLITE_IOERR";
    case SQLITE_CORRUPT: return "SQLITE_CORRUPT";
    case SQLITE_FULL: return "SQLITE_FULL";
    case SQLITE_CANTOPEN: return "SQLITE_CANTOPEN";
    case SQLITE_CONSTRAINT: return "SQLITE_CONSTRAINT";
    case SQLITE_NOTADB: return "SQLITE_NOTADB";
    case SQLITE_PERM: return "SQLITE_PERM";
    case SQLITE_AUTH: return "SQLITE_AUTH";
    default: return "SQLITE_ERROR";
    }
}

/* A hint that says what to do about a failed write. */
static const char *sqlite_hint(int rc, const cxr_audit *a) {
    switch (rc & 0xff) {
    case SQLITE_FULL: return "the disk (or the database's page limit) is full";
    case SQLITE_READONLY: return "the database, its directory or its filesystem is read-only";
    case SQLITE_BUSY:
    case SQLITE_LOCKED:
        return a ? "another process held the lock for longer than the busy timeout" : "another process holds the lock";
    case SQLITE_IOERR: return "I/O error";
    case SQLITE_CORRUPT:
    case SQLITE_NOTADB: return "the file is damaged or not a database";
    case SQLITE_CANTOPEN: return "the file cannot be opened";
    default: return "write failed";
    }
}

static int is_db_broken(int rc) {
    rc &= 0xff;
    return rc == SQLITE_CORRUPT || rc == SQLITE_NOTADB || rc == SQLITE_SCHEMA || rc == SQLITE_FORMAT;
}

static void hex(const unsigned char *b, size_t n, char *out) {
    static const char d[] = "0123456789abcdef";
    for (size_t i = 0; i < n; i++) {
        out[2 * i] = d[b[i] >> 4];
        out[2 * i + 1] = d[b[i] & 15];
    }
    out[2 * n] = 0;
}

/* ------------------------------------------------------------------------
 * Default path, directories, filesystem check, key file
 * ---------------------------------------------------------------------- */

const char *cxr_audit_default_path(char *buf, size_t n) {
    if (!buf || !n) return NULL;
    const char *e = getenv("CXRVQA_DB");
    int w;
    if (e && *e) {
        w = snprintf(buf, n, "%s", e);
    } else if ((e = getenv("XDG_STATE_HOME")) && e[0] == '/') {
        w = snprintf(buf, n, "%s/cxrvqa/audit.sqlite", e);
    } else {
        const char *home = getenv("HOME");
        if (!home || !*home) {
            struct passwd pw, *res = NULL;
            char tmp[4096];
            if (getpwuid_r(geteuid(), &pw, tmp, sizeof tmp, &res) != 0 || !res || !res->pw_dir) return NULL;
            w = snprintf(buf, n, "%s/.local/state/cxrvqa/audit.sqlite", res->pw_dir);
        } else {
            w = snprintf(buf, n, "%s/.local/state/cxrvqa/audit.sqlite", home);
        }
    }
    return w < 0 || (size_t)w >= n ? NULL : buf;
}

/* mkdir -p of the directory part of path; directories created here get 0700. */
static int make_parents(const char *path, char *err, size_t errlen) {
    char *d = strdup(path);
    if (!d) return cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
    char *slash = strrchr(d, '/');
    if (!slash || slash == d) {
        free(d);
        return CXR_OK;
    }
    *slash = 0;
    for (char *s = d + 1;; s++) {
        if (*s == '/' || *s == 0) {
            char c = *s;
            *s = 0;
            if (mkdir(d, 0700) == 0) {
                chmod(d, 0700); /* exactly, whatever the umask */
            } else if (errno != EEXIST) {
                int e = errno;
                int rc = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: cannot create directory %s: %s", path, d, strerror(e));
                free(d);
                return rc;
            }
            *s = c;
            if (!c) break;
        }
    }
    free(d);
    return CXR_OK;
}

/* The filesystem type of the mount holding dev, from /proc/self/mountinfo
 * ("fuse.sshfs", "nfs4", …); "" when unknown. */
static void mount_fstype(dev_t dev, char *out, size_t n) {
    out[0] = 0;
    FILE *f = fopen("/proc/self/mountinfo", "re");
    if (!f) return;
    char line[4096];
    int at_start = 1; /* long lines come in pieces: parse only each line's first */
    while (fgets(line, sizeof line, f)) {
        int first = at_start;
        at_start = strchr(line, '\n') != NULL;
        unsigned maj, mnr;
        if (!first || sscanf(line, "%*s %*s %u:%u", &maj, &mnr) != 2) continue;
        if (maj != major(dev) || mnr != minor(dev)) continue;
        const char *sep = strstr(line, " - ");
        if (!sep) continue;
        sep += 3;
        size_t k = 0;
        while (sep[k] && sep[k] != ' ' && sep[k] != '\n' && k + 1 < n) k++;
        memcpy(out, sep, k);
        out[k] = 0;
        break;
    }
    fclose(f);
}

/* NULL when f_type (statfs) with fstype (mountinfo, may be "") is a local
 * filesystem, else a name for the message. Not static: the unit test
 * feeds it magic numbers. */
const char *audit_fs_network_name(unsigned long f_type, const char *fstype);
const char *audit_fs_network_name(unsigned long f_type, const char *fstype) {
    switch (f_type & 0xffffffffUL) {
    case 0x6969UL: return "NFS";
    case 0x517BUL: return "SMB";
    case 0xFF534D42UL: return "CIFS";
    case 0xFE534D42UL: return "SMB2";
    case 0x5346414FUL: return "AFS";
    case 0x6B414653UL: return "kAFS";
    case 0x01021997UL: return "9P";
    case 0x00C36400UL: return "Ceph";
    case 0x73757245UL: return "Coda";
    case 0x564CUL: return "NCP";
    case 0x7461636FUL: return "OCFS2 (cluster)";
    case 0x01161970UL: return "GFS2 (cluster)";
    case 0x0BD00BD0UL: return "Lustre";
    case 0x47504653UL: return "GPFS";
    case 0x65735546UL: { /* FUSE: only a few are known to be local */
        static const char *const local[] = {"fuseblk", "fuse.fuse-overlayfs", "fuse.squashfuse", "fuse.ntfs-3g",
                                            "fuse.exfat"};
        for (size_t i = 0; fstype && i < sizeof local / sizeof local[0]; i++)
            if (strcmp(fstype, local[i]) == 0) return NULL;
        return fstype && *fstype ? fstype : "FUSE (unknown kind)";
    }
    default: return NULL;
    }
}

/* target: the database file, or the nearest existing directory above it. */
static int check_local_fs(const char *path, const char *target, char *err, size_t errlen) {
    struct statfs sf;
    struct stat st;
    if (statfs(target, &sf) != 0 || stat(target, &st) != 0)
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", target, strerror(errno));
    char fstype[64];
    mount_fstype(st.st_dev, fstype, sizeof fstype);
    const char *net = audit_fs_network_name((unsigned long)sf.f_type, fstype);
    if (net)
        return cxr_fail(err, errlen, CXR_ERR_DB,
                    "%s: refusing an audit database on a network or shared filesystem (%s, f_type 0x%lx): "
                    "SQLite locking and WAL shared memory are not reliable there; put it on a local disk",
                    path, net, (unsigned long)sf.f_type);
    return CXR_OK;
}

static int load_key(cxr_audit *a, const char *file, char *err, size_t errlen) {
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: pseudonymisation key: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: pseudonymisation key is not a regular file", file);
    }
    if (st.st_mode & (S_IROTH | S_IWOTH)) {
        close(fd);
        return cxr_fail(err, errlen, CXR_ERR_ARG,
                    "%s: pseudonymisation key is readable or writable by others (mode %04o): chmod 600 it",
                    file, (unsigned)(st.st_mode & 07777));
    }
    ssize_t n = read(fd, a->key, sizeof a->key);
    char more;
    ssize_t extra = n == (ssize_t)sizeof a->key ? read(fd, &more, 1) : 0;
    close(fd);
    if (n < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: pseudonymisation key: %s", file, strerror(errno));
    if (extra > 0) return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: pseudonymisation key longer than %d bytes", file, KEY_MAX_BYTES);
    while (n > 0 && (a->key[n - 1] == '\n' || a->key[n - 1] == '\r')) n--;
    if (n < KEY_MIN_BYTES)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: pseudonymisation key shorter than %d bytes", file, KEY_MIN_BYTES);
    a->keylen = (size_t)n;
    return CXR_OK;
}

/* The audit chain key: the file's bytes exactly as stored (no newline is
 * stripped: a binary key may end in one), CXR_AUDIT_KEY_MIN..MAX of them,
 * in a regular file no one but its owner may read or write (0600 or
 * stricter). id: the first 16 hex digits of SHA-256 of the key. */
static int load_chain_key(const char *file, unsigned char *key, size_t *len, char id[CXR_AUDIT_KEY_ID_HEX], char *err,
                          size_t errlen) {
    *len = 0;
    int fd = open(file, O_RDONLY | O_CLOEXEC);
    if (fd < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: audit chain key: %s", file, strerror(errno));
    struct stat st;
    if (fstat(fd, &st) != 0 || !S_ISREG(st.st_mode)) {
        close(fd);
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: audit chain key is not a regular file", file);
    }
    if (st.st_mode & 077) {
        close(fd);
        return cxr_fail(err, errlen, CXR_ERR_ARG,
                        "%s: audit chain key is accessible to group or others (mode %04o): it must be 0600 or "
                        "stricter (chmod 600 %s)",
                        file, (unsigned)(st.st_mode & 07777), file);
    }
    unsigned char buf[CXR_AUDIT_KEY_MAX + 1];
    size_t n = 0;
    for (;;) {
        ssize_t r = read(fd, buf + n, sizeof buf - n);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) {
            int e = errno;
            close(fd);
            OPENSSL_cleanse(buf, sizeof buf);
            return cxr_fail(err, errlen, CXR_ERR_IO, "%s: audit chain key: %s", file, strerror(e));
        }
        if (r == 0) break;
        n += (size_t)r;
        if (n == sizeof buf) break;
    }
    close(fd);
    int rc = CXR_OK;
    if (n > CXR_AUDIT_KEY_MAX)
        rc = cxr_fail(err, errlen, CXR_ERR_ARG, "%s: audit chain key is longer than %d bytes", file, CXR_AUDIT_KEY_MAX);
    else if (n < CXR_AUDIT_KEY_MIN)
        rc = cxr_fail(err, errlen, CXR_ERR_ARG,
                      "%s: audit chain key is %zu bytes: at least %d are required (32 random bytes: "
                      "`cxrvqa audit keygen FILE`)",
                      file, n, CXR_AUDIT_KEY_MIN);
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (rc == CXR_OK && (!EVP_Digest(buf, n, dig, &dlen, EVP_sha256(), NULL) || dlen != 32))
        rc = cxr_fail(err, errlen, CXR_ERR_INTERNAL, "OpenSSL: SHA-256 unavailable");
    if (rc == CXR_OK) {
        memcpy(key, buf, n);
        *len = n;
        hex(dig, 8, id);
    }
    OPENSSL_cleanse(buf, sizeof buf);
    return rc;
}

int cxr_audit_key_id(const char *key_file, char id[CXR_AUDIT_KEY_ID_HEX], char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!key_file || !id) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_key_id: NULL argument");
    unsigned char key[CXR_AUDIT_KEY_MAX];
    size_t n = 0;
    int rc = load_chain_key(key_file, key, &n, id, err, errlen);
    OPENSSL_cleanse(key, sizeof key);
    return rc;
}

int cxr_audit_keygen(const char *key_file, char id[CXR_AUDIT_KEY_ID_HEX], char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!key_file || !*key_file) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_keygen: no file named");
    unsigned char key[32];
    size_t got = 0;
    while (got < sizeof key) {
        ssize_t r = getrandom(key + got, sizeof key - got, 0);
        if (r < 0 && errno == EINTR) continue;
        if (r < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "getrandom: %s", strerror(errno));
        got += (size_t)r;
    }
    int fd = open(key_file, O_WRONLY | O_CREAT | O_EXCL | O_NOFOLLOW | O_CLOEXEC, 0600);
    if (fd < 0) {
        int e = errno;
        OPENSSL_cleanse(key, sizeof key);
        return cxr_fail(err, errlen, e == EEXIST ? CXR_ERR_ARG : CXR_ERR_IO, "%s: %s%s", key_file, strerror(e),
                        e == EEXIST ? ": a key is never overwritten (its rows could no longer be verified)" : "");
    }
    int ok = fchmod(fd, 0600) == 0 && cxr_write_all(fd, key, sizeof key) == 0 && fsync(fd) == 0;
    int e = errno;
    ok = close(fd) == 0 && ok;
    unsigned char dig[EVP_MAX_MD_SIZE];
    unsigned int dlen = 0;
    if (ok && id) ok = EVP_Digest(key, sizeof key, dig, &dlen, EVP_sha256(), NULL) && dlen == 32;
    OPENSSL_cleanse(key, sizeof key);
    if (!ok) {
        unlink(key_file);
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot write the key: %s", key_file, strerror(e));
    }
    if (id) hex(dig, 8, id);
    return CXR_OK;
}

/* Read-only media (a read-only mount, a write-protected archive): SQLite
 * cannot create the -shm file a WAL database needs, so such a file opens
 * "immutable" instead — safe only when no -wal with unmerged commits exists. */
static sqlite3 *open_immutable(const char *path) {
    char wal[4096 + 8];
    struct stat st;
    if (snprintf(wal, sizeof wal, "%s-wal", path) >= (int)sizeof wal) return NULL;
    if (stat(wal, &st) == 0 && st.st_size > 0) return NULL;
    size_t n = strlen(path);
    char *uri = malloc(3 * n + 32);
    if (!uri) return NULL;
    char *w = uri + sprintf(uri, "file:");
    for (const unsigned char *p = (const unsigned char *)path; *p; p++) {
        if ((*p >= 'a' && *p <= 'z') || (*p >= 'A' && *p <= 'Z') || (*p >= '0' && *p <= '9') || strchr("-._~/", *p))
            *w++ = (char)*p;
        else
            w += sprintf(w, "%%%02X", *p);
    }
    strcpy(w, "?immutable=1");
    sqlite3 *db = NULL;
    if (sqlite3_open_v2(uri, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_URI | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sqlite3_close_v2(db);
        db = NULL;
    }
    free(uri);
    return db;
}

/* ------------------------------------------------------------------------
 * Open, migrate, close
 * ---------------------------------------------------------------------- */

cxr_audit_params cxr_audit_params_default(void) {
    cxr_audit_params p;
    memset(&p, 0, sizeof p);
    p.busy_timeout_ms = 10000;
    p.synchronous_full = 1;
    return p;
}

void cxr_audit_record_init(cxr_audit_record *r) {
    if (!r) return;
    memset(r, 0, sizeof *r);
    r->latency_ms = -1;
}

static int exec(cxr_audit *a, const char *sql) { return sqlite3_exec(a->db, sql, NULL, NULL, NULL); }

static int pragma_int(sqlite3 *db, const char *sql, int64_t *v) {
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, sql, -1, &st, NULL);
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(st);
        if (rc == SQLITE_ROW) {
            *v = sqlite3_column_int64(st, 0);
            rc = SQLITE_OK;
        } else if (rc == SQLITE_DONE) {
            *v = 0;
            rc = SQLITE_OK;
        }
    }
    sqlite3_finalize(st);
    return rc;
}

/* Code for an SQLite failure while opening: damaged → DB, else the store
 * cannot be written → AUDIT (read-only opens: IO). */
static int open_code(int rc, int read_only) {
    if (is_db_broken(rc)) return CXR_ERR_DB;
    if ((rc & 0xff) == SQLITE_NOMEM) return CXR_ERR_NOMEM;
    return read_only ? CXR_ERR_IO : CXR_ERR_AUDIT;
}

static int open_fail(cxr_audit *a, int rc, const char *what, char *err, size_t errlen) {
    return cxr_fail(err, errlen, open_code(rc, a->p.read_only), "%s: %s: %s (%s: %s)", a->path, what, sqlite_hint(rc, a),
                sqlite_code_name(rc), a->db ? sqlite3_errmsg(a->db) : sqlite3_errstr(rc));
}

/* Wait for another connection's lock in short, jittered naps until
 * busy_timeout_ms has passed. SQLite's own handler backs off to 100 ms
 * naps, so a steady appender can keep the lock from the others; 0.5–1.5 ms
 * naps let concurrent appenders take turns. */
static int busy_wait(void *ctx, int count) {
    cxr_audit *a = ctx;
    double now = cxr_now_ms() / 1e3;
    if (count == 0) a->busy_since = now;
    if ((now - a->busy_since) * 1000.0 >= a->p.busy_timeout_ms) return 0;
    struct timespec ts = {0, 500000L + (long)(((unsigned)getpid() * 2654435761u + (unsigned)count * 40503u) % 1000u) * 1000L};
    nanosleep(&ts, NULL);
    return 1;
}

/* user_version and application_id say whether this is ours and how old.
 * All three values come from one statement, so from one snapshot: read one
 * by one, another process creating the schema meanwhile could be seen half
 * done (no version yet, but its tables). */
static int check_identity(sqlite3 *db, const char *path, int64_t *version, char *err, size_t errlen) {
    int64_t appid = 0, ntables = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db,
                                "SELECT (SELECT user_version FROM pragma_user_version),"
                                " (SELECT application_id FROM pragma_application_id),"
                                " (SELECT count(*) FROM sqlite_master)",
                                -1, &st, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_step(st);
    if (rc == SQLITE_ROW) {
        *version = sqlite3_column_int64(st, 0);
        appid = sqlite3_column_int64(st, 1);
        ntables = sqlite3_column_int64(st, 2);
        rc = SQLITE_OK;
    }
    sqlite3_finalize(st);
    if (rc != SQLITE_OK) return rc;
    if (*version > CXR_AUDIT_SCHEMA_VERSION)
        return cxr_fail(err, errlen, CXR_ERR_DB,
                    "%s: audit schema version %lld is newer than this cxrvqa knows (version %d): "
                    "use a newer cxrvqa to read or write it",
                    path, (long long)*version, CXR_AUDIT_SCHEMA_VERSION);
    if ((appid != 0 && appid != APPLICATION_ID) || (*version == 0 && ntables > 0) || *version < 0)
        return cxr_fail(err, errlen, CXR_ERR_DB,
                    "%s: not a cxrvqa audit database (application_id 0x%llx, user_version %lld, %lld tables)", path,
                    (unsigned long long)appid, (long long)*version, (long long)ntables);
    return SQLITE_OK;
}

static int migrate(cxr_audit *a, char *err, size_t errlen) {
    int rc = exec(a, "BEGIN IMMEDIATE");
    if (rc != SQLITE_OK) return open_fail(a, rc, "cannot start the schema transaction", err, errlen);
    int64_t v = 0;
    rc = check_identity(a->db, a->path, &v, err, errlen); /* again, under the write lock */
    if (rc < 0 || rc > 0) {
        exec(a, "ROLLBACK");
        return rc < 0 ? rc : open_fail(a, rc, "cannot read the schema version", err, errlen);
    }
    for (int64_t i = v; i < CXR_AUDIT_SCHEMA_VERSION; i++) {
        rc = exec(a, migrations[i]);
        if (rc != SQLITE_OK) {
            char what[96];
            snprintf(what, sizeof what, "schema migration %lld -> %lld failed", (long long)i, (long long)i + 1);
            int code = open_fail(a, rc, what, err, errlen);
            exec(a, "ROLLBACK");
            return code;
        }
    }
    rc = exec(a, "COMMIT");
    if (rc != SQLITE_OK) {
        int code = open_fail(a, rc, "cannot commit the schema", err, errlen);
        exec(a, "ROLLBACK");
        return code;
    }
    return CXR_OK;
}

static int prepare(cxr_audit *a, const char *sql, sqlite3_stmt **st, char *err, size_t errlen) {
    int rc = sqlite3_prepare_v3(a->db, sql, -1, SQLITE_PREPARE_PERSISTENT, st, NULL);
    if (rc != SQLITE_OK)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: schema does not match (%s: %s)", a->path,
                    sqlite_code_name(rc), sqlite3_errmsg(a->db));
    return CXR_OK;
}

static int settle_key(cxr_audit *a, char *err, size_t errlen);

int cxr_audit_open(const char *path, const cxr_audit_params *p, cxr_audit **out, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!out) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_open: out is NULL");
    *out = NULL;
    if (!path || !*path) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_open: no database path");
    cxr_audit *a = calloc(1, sizeof *a);
    if (!a || !(a->path = strdup(path))) {
        free(a);
        return cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
    }
    a->p = p ? *p : cxr_audit_params_default();
    int rc = CXR_OK;
    char *dir = NULL;
#define OPEN_CHECK(expr)                                                                                 \
    do {                                                                                                 \
        if ((rc = (expr)) != CXR_OK) goto done;                                                         \
    } while (0)

    if (a->p.pseudonym_key_file) OPEN_CHECK(load_key(a, a->p.pseudonym_key_file, err, errlen));
    if (a->p.chain_key_file) {
        OPEN_CHECK(load_chain_key(a->p.chain_key_file, a->ckey, &a->ckeylen, a->ckey_id, err, errlen));
        a->hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        a->mac = a->hmac ? EVP_MAC_CTX_new(a->hmac) : NULL;
        if (!a->mac) OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_INTERNAL, "OpenSSL: HMAC unavailable"));
    }
    a->sha256 = EVP_MD_fetch(NULL, "SHA256", NULL);
    a->md = EVP_MD_CTX_new();
    if (!a->sha256 || !a->md) OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_INTERNAL, "OpenSSL: SHA-256 unavailable"));

    /* who we are, once */
    struct passwd pw, *res = NULL;
    char pwbuf[4096];
    if (getpwuid_r(geteuid(), &pw, pwbuf, sizeof pwbuf, &res) == 0 && res && res->pw_name)
        snprintf(a->user, sizeof a->user, "%s", res->pw_name);
    else
        snprintf(a->user, sizeof a->user, "uid:%ld", (long)geteuid());
    if (gethostname(a->host, sizeof a->host) != 0) snprintf(a->host, sizeof a->host, "localhost");
    a->host[sizeof a->host - 1] = 0;

    /* where: a local filesystem, the file created 0600 by us */
    if (a->p.read_only && access(path, F_OK) != 0) OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", path, strerror(errno)));
    dir = strdup(path); /* the file, or its nearest existing ancestor: checked before anything is created */
    if (!dir) OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory"));
    struct stat dst;
    while (stat(dir, &dst) != 0) {
        char *slash = strrchr(dir, '/');
        if (!slash) strcpy(dir, ".");
        else if (slash == dir) dir[1] = 0;
        else *slash = 0;
        if (!slash || slash == dir) break;
    }
    OPEN_CHECK(check_local_fs(path, dir, err, errlen));
    if (!a->p.read_only) OPEN_CHECK(make_parents(path, err, errlen));
    if (!a->p.read_only) {
        int fd = open(path, O_RDWR | O_CREAT | O_EXCL | O_CLOEXEC | O_NOFOLLOW, 0600);
        if (fd >= 0) {
            fchmod(fd, 0600);
            close(fd);
        } else if (errno != EEXIST) {
            OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: cannot create the audit database: %s", path, strerror(errno)));
        }
    }

    int flags = (a->p.read_only ? SQLITE_OPEN_READONLY : SQLITE_OPEN_READWRITE) | SQLITE_OPEN_NOMUTEX;
    int src = sqlite3_open_v2(path, &a->db, flags, NULL);
    if (src != SQLITE_OK) OPEN_CHECK(open_fail(a, src, "cannot open", err, errlen));
    sqlite3_extended_result_codes(a->db, 1);
    sqlite3_busy_handler(a->db, busy_wait, a);
    sqlite3_db_config(a->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(a->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    if (!a->p.read_only && sqlite3_db_readonly(a->db, "main") == 1)
        OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: the audit database can only be opened read-only (%s)", path,
                        "file, directory or filesystem not writable"));

    int64_t version = 0, probe = 0;
    if (a->p.read_only && (pragma_int(a->db, "PRAGMA user_version", &probe) & 0xff) == SQLITE_CANTOPEN) {
        sqlite3 *imm = open_immutable(path);
        if (imm) {
            sqlite3_close_v2(a->db);
            a->db = imm;
            sqlite3_extended_result_codes(a->db, 1);
            sqlite3_db_config(a->db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
            sqlite3_db_config(a->db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
        }
    }
    src = check_identity(a->db, path, &version, err, errlen);
    if (src < 0) OPEN_CHECK(src);
    if (src != SQLITE_OK) OPEN_CHECK(open_fail(a, src, "cannot read the database header", err, errlen));

    if (!a->p.read_only) {
        /* WAL + FULL: each commit is on disk before append returns */
        sqlite3_stmt *st = NULL;
        src = sqlite3_prepare_v2(a->db, "PRAGMA journal_mode = WAL", -1, &st, NULL);
        if (src == SQLITE_OK) src = sqlite3_step(st);
        int wal = src == SQLITE_ROW && sqlite3_stricmp((const char *)sqlite3_column_text(st, 0), "wal") == 0;
        sqlite3_finalize(st);
        if (src != SQLITE_ROW) OPEN_CHECK(open_fail(a, src, "cannot switch to WAL", err, errlen));
        if (!wal) OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: the database refused WAL journal mode", path));
        src = exec(a, a->p.synchronous_full ? "PRAGMA synchronous = FULL" : "PRAGMA synchronous = NORMAL");
        if (src != SQLITE_OK) OPEN_CHECK(open_fail(a, src, "cannot set synchronous", err, errlen));
        if (version < CXR_AUDIT_SCHEMA_VERSION) OPEN_CHECK(migrate(a, err, errlen));
        /* the write lock can be taken: a read-only filesystem shows up here */
        src = exec(a, "BEGIN IMMEDIATE");
        if (src == SQLITE_OK) src = exec(a, "COMMIT");
        if (src != SQLITE_OK) {
            rc = open_fail(a, src, "cannot write", err, errlen);
            if (!sqlite3_get_autocommit(a->db)) exec(a, "ROLLBACK");
            goto done;
        }
    } else if (version < CXR_AUDIT_SCHEMA_VERSION) {
        OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_DB, "%s: audit schema version %lld is older than %d; open it once for writing to migrate",
                        path, (long long)version, CXR_AUDIT_SCHEMA_VERSION));
    }
    int64_t meta_version = -1;
    src = pragma_int(a->db, "SELECT value FROM meta WHERE key = 'schema_version'", &meta_version);
    if (src != SQLITE_OK) OPEN_CHECK(open_fail(a, src, "cannot read the meta table", err, errlen));
    if (meta_version != CXR_AUDIT_SCHEMA_VERSION)
        OPEN_CHECK(cxr_fail(err, errlen, CXR_ERR_DB, "%s: meta schema_version %lld disagrees with user_version %d", path,
                        (long long)meta_version, CXR_AUDIT_SCHEMA_VERSION));

    OPEN_CHECK(prepare(a, "BEGIN IMMEDIATE", &a->begin, err, errlen));
    OPEN_CHECK(prepare(a, "COMMIT", &a->commit, err, errlen));
    OPEN_CHECK(prepare(a, "ROLLBACK", &a->rollback, err, errlen));
    OPEN_CHECK(prepare(a, SQL_HEAD, &a->head, err, errlen));
    OPEN_CHECK(prepare(a, SQL_INSERT, &a->insert, err, errlen));
    OPEN_CHECK(prepare(a, SQL_SET_META, &a->set_meta, err, errlen));
    OPEN_CHECK(prepare(a, SQL_HAS_REQUEST, &a->has_request, err, errlen));
    OPEN_CHECK(prepare(a, SQL_KEYSTATE, &a->keystate, err, errlen));
    if (!a->p.read_only) OPEN_CHECK(settle_key(a, err, errlen));
#undef OPEN_CHECK
done:
    free(dir);
    if (rc != CXR_OK) {
        cxr_audit_close(a);
        return rc;
    }
    *out = a;
    return CXR_OK;
}

void cxr_audit_close(cxr_audit *a) {
    if (!a) return;
    sqlite3_stmt *sts[] = {a->begin, a->commit, a->rollback, a->head, a->insert, a->set_meta, a->has_request, a->keystate};
    for (size_t i = 0; i < sizeof sts / sizeof sts[0]; i++) sqlite3_finalize(sts[i]);
    sqlite3_close_v2(a->db);
    EVP_MD_CTX_free(a->md);
    EVP_MD_free(a->sha256);
    OPENSSL_cleanse(a->key, sizeof a->key);
    OPENSSL_cleanse(a->ckey, sizeof a->ckey);
    EVP_MAC_CTX_free(a->mac);
    EVP_MAC_free(a->hmac);
    free(a->path);
    free(a);
}

/* For tests only (tests/plugin/audit/test_audit.c): the connection, to set
 * PRAGMA query_only / max_page_count on it. */
sqlite3 *audit_sqlite_handle(cxr_audit *a);
sqlite3 *audit_sqlite_handle(cxr_audit *a) { return a ? a->db : NULL; }

/* ------------------------------------------------------------------------
 * Values, the canonical serialisation, the row hash
 * ---------------------------------------------------------------------- */

typedef struct {
    int type; /* SQLITE_NULL, SQLITE_INTEGER, SQLITE_TEXT, or another SQLite type (tampering) */
    int64_t i;
    const char *s;
    size_t n;
} val;

static val v_text(const char *s) {
    val v = {s ? SQLITE_TEXT : SQLITE_NULL, 0, s, s ? strlen(s) : 0};
    return v;
}
static val v_int(int64_t i) {
    val v = {SQLITE_INTEGER, i, NULL, 0};
    return v;
}

static void be64(unsigned char *b, uint64_t x) {
    for (int k = 7; k >= 0; k--, x >>= 8) b[k] = (unsigned char)(x & 0xff);
}

/* One key of a keyed chain: rows from seq `from` on (to the next key's
 * from) are HMAC-SHA-256 under it. key NULL: not at hand. */
typedef struct {
    int64_t from;
    char id[CXR_AUDIT_KEY_ID_HEX];
    const unsigned char *key;
    size_t keylen;
} key_seg;

/* How one chain's rows are hashed: SHA-256 below seg[0].from (every row
 * when nseg is 0), HMAC-SHA-256 under the key of the segment a row falls
 * in from there on. mac NULL: no key at hand (keyed rows cannot be hashed). */
typedef struct {
    EVP_MD_CTX *md;
    const EVP_MD *sha;
    EVP_MAC_CTX *mac;
    const key_seg *seg; /* ascending from */
    int nseg;
} hasher;

/* the key segment row v falls in, NULL for an unkeyed row */
static const key_seg *seg_of(const hasher *h, const val *v) {
    if (h->nseg < 1 || v[C_seq].type != SQLITE_INTEGER || v[C_seq].i < h->seg[0].from) return NULL;
    int i = h->nseg - 1;
    while (i > 0 && v[C_seq].i < h->seg[i].from) i--;
    return &h->seg[i];
}

static int h_update(const hasher *h, int keyed, const void *p, size_t n) {
    return keyed ? EVP_MAC_update(h->mac, p, n) : EVP_DigestUpdate(h->md, p, n);
}

/* SHA-256 of: HASH_DOMAIN NUL, then per column a tag byte — 'N' null,
 * 'I' + 8-byte big-endian integer, 'S' text / 'B' other + 8-byte big-endian
 * length + bytes. Unambiguous: no two different rows serialise alike.
 * A keyed row: HMAC-SHA-256 under the chain key of HMAC_DOMAIN NUL and the
 * same columns. CXR_ERR_ARG: a keyed row and no key. */
static int row_hash(const hasher *h, const val *v, char out[CXR_AUDIT_HASH_HEX]) {
    unsigned char b[9], dig[EVP_MAX_MD_SIZE];
    const key_seg *ks = seg_of(h, v);
    int keyed = ks != NULL, ok;
    if (keyed) {
        if (!h->mac || !ks->key || !ks->keylen) return CXR_ERR_ARG;
        OSSL_PARAM prm[2] = {OSSL_PARAM_construct_utf8_string(OSSL_MAC_PARAM_DIGEST, (char *)"SHA256", 0),
                             OSSL_PARAM_construct_end()};
        ok = EVP_MAC_init(h->mac, ks->key, ks->keylen, prm) && h_update(h, 1, HMAC_DOMAIN, sizeof HMAC_DOMAIN);
    } else {
        ok = EVP_DigestInit_ex(h->md, h->sha, NULL) && h_update(h, 0, HASH_DOMAIN, sizeof HASH_DOMAIN);
    }
    for (int c = 0; ok && c < NHASHED; c++) {
        switch (v[c].type) {
        case SQLITE_NULL:
            b[0] = 'N';
            ok = h_update(h, keyed, b, 1);
            break;
        case SQLITE_INTEGER:
            b[0] = 'I';
            be64(b + 1, (uint64_t)v[c].i);
            ok = h_update(h, keyed, b, 9);
            break;
        default:
            b[0] = v[c].type == SQLITE_TEXT ? 'S' : 'B';
            be64(b + 1, (uint64_t)v[c].n);
            ok = h_update(h, keyed, b, 9) && (v[c].n == 0 || h_update(h, keyed, v[c].s, v[c].n));
        }
    }
    if (keyed) {
        size_t dlen = 0;
        ok = ok && EVP_MAC_final(h->mac, dig, &dlen, sizeof dig) && dlen == 32;
    } else {
        unsigned int dlen = 0;
        ok = ok && EVP_DigestFinal_ex(h->md, dig, &dlen) && dlen == 32;
    }
    if (!ok) return CXR_ERR_INTERNAL;
    hex(dig, 32, out);
    return CXR_OK;
}

static int event_id_for(const cxr_audit_record *r) {
    if (r->event_id) return r->event_id;
    const char *t = r->event_type;
    return strcmp(t, "ask") == 0 || strcmp(t, "screen") == 0 || strcmp(t, "refusal") == 0
               ? CXR_AUDIT_EV_INSTANCES_ACCESSED
               : CXR_AUDIT_EV_APPLICATION_ACTIVITY;
}

/* A column read back from a statement. */
static val col(sqlite3_stmt *st, int c) {
    val v = {sqlite3_column_type(st, c), 0, NULL, 0};
    if (v.type == SQLITE_INTEGER) {
        v.i = sqlite3_column_int64(st, c);
    } else if (v.type != SQLITE_NULL) {
        v.s = v.type == SQLITE_BLOB ? (const char *)sqlite3_column_blob(st, c) : (const char *)sqlite3_column_text(st, c);
        v.n = (size_t)sqlite3_column_bytes(st, c);
        if (!v.s) v.s = "";
    }
    return v;
}

static const char *vs(const val *v) { return v->type == SQLITE_NULL ? NULL : v->type == SQLITE_INTEGER ? NULL : v->s; }
static int64_t vi(const val *v, int64_t dflt) { return v->type == SQLITE_INTEGER ? v->i : dflt; }

/* ------------------------------------------------------------------------
 * Append
 * ---------------------------------------------------------------------- */

static int step_done(sqlite3_stmt *st) {
    int rc = sqlite3_step(st);
    sqlite3_reset(st);
    return rc == SQLITE_DONE || rc == SQLITE_ROW ? SQLITE_OK : rc;
}

static int append_fail(cxr_audit *a, int rc, const char *what, char *err, size_t errlen) {
    int code = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: audit row not committed (%s): %s (%s: %s)", a->path, what,
                    sqlite_hint(rc, a), sqlite_code_name(rc), sqlite3_errmsg(a->db));
    sqlite3_reset(a->insert);
    sqlite3_reset(a->set_meta);
    sqlite3_reset(a->head);
    if (!sqlite3_get_autocommit(a->db)) step_done(a->rollback);
    return code;
}

enum { CHAIN_HEAD_DAMAGED = -1000, CHAIN_HASH_FAILED = -1001, CHAIN_KEY_REFUSED = -1002, CHAIN_KEY_MALFORMED = -1003 };
#define KEY_HISTORY_MAX 64 /* keys one store may have had: 63 rotations */

/* The handle's hasher for rows from keyed_from on (0: unkeyed), under its
 * own key; *s holds that key's segment. */
static hasher handle_hasher(cxr_audit *a, int64_t keyed_from, key_seg *s) {
    memset(s, 0, sizeof *s);
    s->from = keyed_from;
    memcpy(s->id, a->ckey_id, sizeof s->id);
    s->key = a->ckeylen ? a->ckey : NULL;
    s->keylen = a->ckeylen;
    hasher h = {a->md, a->sha256, a->ckeylen ? a->mac : NULL, s, keyed_from > 0};
    return h;
}

/* The store's key record through st (SQL_KEYSTATE): id "" and *from 0 when
 * unkeyed. An SQLite code, or CHAIN_KEY_MALFORMED (half there, wrong types). */
static int read_key_state(sqlite3_stmt *st, char id[CXR_AUDIT_KEY_ID_HEX], int64_t *from) {
    id[0] = 0;
    *from = 0;
    int rc = sqlite3_step(st);
    if (rc != SQLITE_ROW) {
        sqlite3_reset(st);
        return rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
    }
    int t0 = sqlite3_column_type(st, 0), t1 = sqlite3_column_type(st, 1);
    const char *s = (const char *)sqlite3_column_text(st, 0);
    rc = SQLITE_OK;
    if (t0 == SQLITE_NULL && t1 == SQLITE_NULL) {
        /* unkeyed */
    } else if (t0 != SQLITE_TEXT || t1 != SQLITE_INTEGER || !s || strlen(s) != 16 ||
               strspn(s, "0123456789abcdef") != 16 || sqlite3_column_int64(st, 1) < 1) {
        rc = CHAIN_KEY_MALFORMED;
    } else {
        memcpy(id, s, CXR_AUDIT_KEY_ID_HEX);
        *from = sqlite3_column_int64(st, 1);
    }
    sqlite3_reset(st);
    return rc;
}

/* The keys of db's chain, oldest first: meta chain_key_history ("id@from
 * id@from ...", written by rotation: two keys or more) or, on a store
 * never rotated, the key record (id, from) alone; *n 0: unkeyed. SQLITE_OK,
 * an SQLite code, or CHAIN_KEY_MALFORMED: a history that is malformed, not
 * ascending, on an unkeyed store, or whose last key is not the record's. */
static int read_key_history(sqlite3 *db, const char *id, int64_t from, key_seg seg[KEY_HISTORY_MAX], int *n) {
    *n = 0;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(db, SQL_KEYHISTORY, -1, &st, NULL);
    if (rc != SQLITE_OK) return rc;
    rc = sqlite3_step(st);
    if (rc == SQLITE_DONE) { /* never rotated */
        sqlite3_finalize(st);
        if (from > 0) {
            memset(seg, 0, sizeof *seg);
            seg[0].from = from;
            memcpy(seg[0].id, id, CXR_AUDIT_KEY_ID_HEX);
            *n = 1;
        }
        return SQLITE_OK;
    }
    if (rc != SQLITE_ROW) {
        sqlite3_finalize(st);
        return rc;
    }
    const char *h = sqlite3_column_type(st, 0) == SQLITE_TEXT ? (const char *)sqlite3_column_text(st, 0) : NULL;
    rc = h && from > 0 ? SQLITE_OK : CHAIN_KEY_MALFORMED;
    int k = 0;
    while (rc == SQLITE_OK && *h) {
        key_seg *s = &seg[k];
        size_t d;
        if (k == KEY_HISTORY_MAX || strspn(h, "0123456789abcdef") != 16 || h[16] != '@' ||
            (d = strspn(h + 17, "0123456789")) < 1 || d > 18) {
            rc = CHAIN_KEY_MALFORMED;
            break;
        }
        memset(s, 0, sizeof *s);
        memcpy(s->id, h, 16);
        s->from = strtoll(h + 17, NULL, 10);
        h += 17 + d;
        if (s->from < 1 || (k > 0 && s->from <= seg[k - 1].from) || (*h && (*h != ' ' || !h[1]))) rc = CHAIN_KEY_MALFORMED;
        if (*h) h++;
        k++;
    }
    if (rc == SQLITE_OK && (k < 2 || seg[k - 1].from != from || strcmp(seg[k - 1].id, id) != 0)) rc = CHAIN_KEY_MALFORMED;
    sqlite3_finalize(st);
    if (rc == SQLITE_OK) *n = k;
    return rc;
}

/* 1 (a->chain_err says why) when this handle may not extend a chain whose
 * key record is sid/from: keyed and no key or another key, or unkeyed while
 * the handle holds a key (open keyed it or refused: its record went away). */
static int key_refused(cxr_audit *a, const char *sid, int64_t from) {
    if (sid[0] && !a->ckeylen)
        snprintf(a->chain_err, sizeof a->chain_err,
                 "%s: the audit chain is keyed (HMAC-SHA-256, key id %s, from seq %lld): writing to it needs its key "
                 "(--audit-key FILE; Orthanc: AuditKeyFile)",
                 a->path, sid, (long long)from);
    else if (sid[0] && strcmp(sid, a->ckey_id) != 0)
        snprintf(a->chain_err, sizeof a->chain_err,
                 "%s: the audit chain is keyed with key id %s, but the key given has id %s: wrong key file", a->path,
                 sid, a->ckey_id);
    else if (!sid[0] && a->ckeylen)
        snprintf(a->chain_err, sizeof a->chain_err,
                 "%s: a chain key was given (id %s) but the store records no key any more: its key record was "
                 "removed (run `cxrvqa audit verify --key FILE`)",
                 a->path, a->ckey_id);
    else
        return 0;
    return 1;
}

/* Inside an open write transaction: chain v (every column filled but seq,
 * prev_hash and row_hash) onto the head, insert it and move the head.
 * Returns an SQLite code (*what: the step that failed), CHAIN_HEAD_DAMAGED
 * or CHAIN_HASH_FAILED; the caller rolls back. hash: the new row's hash. */
static int chain_insert(cxr_audit *a, val *v, int64_t *seq_out, char hash[CXR_AUDIT_HASH_HEX], const char **what) {
    char prev[CXR_AUDIT_HASH_HEX], sid[CXR_AUDIT_KEY_ID_HEX];
    int64_t keyed_from = 0;
    *what = "reading the chain key record";
    int rc = read_key_state(a->keystate, sid, &keyed_from);
    if (rc == CHAIN_KEY_MALFORMED) {
        snprintf(a->chain_err, sizeof a->chain_err,
                 "%s: the chain key record in the meta table is malformed (run `cxrvqa audit verify`)", a->path);
        return CHAIN_KEY_REFUSED;
    }
    if (rc != SQLITE_OK) return rc;
    if (key_refused(a, sid, keyed_from)) return CHAIN_KEY_REFUSED;
    *what = "reading the chain head";
    rc = sqlite3_step(a->head);
    if (rc != SQLITE_ROW) return rc;
    int64_t head_seq = sqlite3_column_int64(a->head, 0);
    const unsigned char *hh = sqlite3_column_text(a->head, 1);
    if (sqlite3_column_type(a->head, 0) != SQLITE_INTEGER || !hh || strlen((const char *)hh) != 64) {
        sqlite3_reset(a->head);
        return CHAIN_HEAD_DAMAGED;
    }
    memcpy(prev, hh, 65);
    sqlite3_reset(a->head);
    v[C_seq] = v_int(head_seq + 1);
    v[C_prev_hash] = v_text(prev);
    key_seg seg;
    hasher h = handle_hasher(a, keyed_from, &seg);
    if (row_hash(&h, v, hash) != CXR_OK) return CHAIN_HASH_FAILED;
    v[C_row_hash] = v_text(hash);
    *what = "binding";
    for (int c = 0; c < NCOL; c++) {
        int b = c + 1;
        rc = v[c].type == SQLITE_INTEGER ? sqlite3_bind_int64(a->insert, b, v[c].i)
             : v[c].type == SQLITE_NULL  ? sqlite3_bind_null(a->insert, b)
             : v[c].type == SQLITE_TEXT  ? sqlite3_bind_text(a->insert, b, v[c].s, (int)v[c].n, SQLITE_STATIC)
                                         : sqlite3_bind_blob(a->insert, b, v[c].s, (int)v[c].n, SQLITE_STATIC);
        if (rc != SQLITE_OK) return rc;
    }
    *what = "INSERT";
    rc = step_done(a->insert);
    sqlite3_clear_bindings(a->insert);
    if (rc != SQLITE_OK) return rc;
    *what = "moving the chain head";
    sqlite3_bind_text(a->set_meta, 1, "chain_head_seq", -1, SQLITE_STATIC);
    sqlite3_bind_int64(a->set_meta, 2, head_seq + 1);
    rc = step_done(a->set_meta);
    if (rc == SQLITE_OK && sqlite3_changes(a->db) != 1) rc = SQLITE_CORRUPT;
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(a->set_meta, 1, "chain_head_hash", -1, SQLITE_STATIC);
        sqlite3_bind_text(a->set_meta, 2, hash, 64, SQLITE_STATIC);
        rc = step_done(a->set_meta);
        if (rc == SQLITE_OK && sqlite3_changes(a->db) != 1) rc = SQLITE_CORRUPT;
    }
    sqlite3_clear_bindings(a->set_meta);
    if (rc == SQLITE_OK) *seq_out = head_seq + 1;
    return rc;
}

int cxr_audit_append(cxr_audit *a, const cxr_audit_record *r, int64_t *seq_out, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !r) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_append: NULL argument");
    if (a->p.read_only) return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: opened read-only: audit row not written", a->path);
    if (!r->event_type || !*r->event_type) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_append: event_type is required");
    if (r->outcome != 0 && r->outcome != 4 && r->outcome != 8 && r->outcome != 12)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_append: outcome %d is not 0, 4, 8 or 12", r->outcome);

    char pseud[5 + 64 + 1];
    const char *patient = r->patient_id;
    if (patient && a->keylen) {
        unsigned char mac[EVP_MAX_MD_SIZE];
        unsigned int mlen = 0;
        if (!HMAC(EVP_sha256(), a->key, (int)a->keylen, (const unsigned char *)patient, strlen(patient), mac, &mlen) ||
            mlen != 32)
            return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: HMAC-SHA256 failed: audit row not written", a->path);
        memcpy(pseud, "hmac:", 5);
        hex(mac, 32, pseud + 5);
        patient = pseud;
    }
    int event_id = event_id_for(r);
    const char *action = r->event_action ? r->event_action : event_id == CXR_AUDIT_EV_INSTANCES_ACCESSED ? "R" : "E";

    val v[NCOL];
    char now[64], hash[CXR_AUDIT_HASH_HEX];
    v[C_time_utc] = v_text(NULL); /* the time is taken inside the write transaction, below */
    v[C_event_type] = v_text(r->event_type);
    v[C_event_id] = v_int(event_id);
    v[C_event_action] = v_text(action);
    v[C_outcome] = v_int(r->outcome);
    v[C_user_name] = v_text(r->user ? r->user : a->user);
    v[C_application] = v_text(r->application);
    v[C_host] = v_text(r->host ? r->host : a->host);
    v[C_pid] = v_int(r->pid ? r->pid : (int64_t)getpid());
    v[C_question] = v_text(r->question);
    v[C_language] = v_text(r->language);
    v[C_intent] = v_text(r->intent);
    v[C_study_uid] = v_text(r->study_uid);
    v[C_series_uid] = v_text(r->series_uid);
    v[C_sop_uid] = v_text(r->sop_uid);
    v[C_sop_class_uid] = v_text(r->sop_class_uid);
    v[C_accession] = v_text(r->accession);
    v[C_source] = v_text(r->source);
    v[C_patient_id] = v_text(patient);
    v[C_answer] = v_text(r->answer);
    v[C_answer_text] = v_text(r->answer_text);
    v[C_findings_json] = v_text(r->findings_json);
    v[C_warnings_json] = v_text(r->warnings_json);
    v[C_model_name] = v_text(r->model_name);
    v[C_model_version] = v_text(r->model_version);
    v[C_model_sha256] = v_text(r->model_sha256);
    v[C_prompt_version] = v_text(r->prompt_version);
    v[C_sr_uid] = v_text(r->sr_uid);
    v[C_sr_dest] = v_text(r->sr_dest);
    v[C_latency_ms] = r->latency_ms >= 0 ? v_int(r->latency_ms) : v_text(NULL);
    v[C_error_code] = v_int(r->error_code);
    v[C_reason] = v_text(r->reason);
    v[C_request_key] = v_text(r->request_key);
    for (int c = 0; c < NCOL; c++) {
        if (c == C_seq || c == C_time_utc || c == C_prev_hash || c == C_row_hash) continue;
        if (v[c].type == SQLITE_TEXT && v[c].n > CXR_AUDIT_MAX_FIELD)
            return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_append: field %d is %zu bytes (limit %d)", c, v[c].n,
                        CXR_AUDIT_MAX_FIELD);
    }

    /* one write transaction: read the head, insert, move the head, commit */
    int rc = step_done(a->begin);
    if (rc != SQLITE_OK) return append_fail(a, rc, "BEGIN IMMEDIATE", err, errlen);
    cxr_now_iso(now);
    v[C_time_utc] = v_text(now);
    int64_t seq = 0;
    const char *what = NULL;
    rc = chain_insert(a, v, &seq, hash, &what);
    if (rc == CHAIN_HEAD_DAMAGED) {
        step_done(a->rollback);
        return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: chain head in the meta table is missing or damaged: "
                                                "audit row not written (run `cxrvqa audit verify`)", a->path);
    }
    if (rc == CHAIN_HASH_FAILED) {
        step_done(a->rollback);
        return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: SHA-256 failed: audit row not written", a->path);
    }
    if (rc == CHAIN_KEY_REFUSED) {
        step_done(a->rollback);
        return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: audit row not written", a->chain_err);
    }
    if (rc != SQLITE_OK) return append_fail(a, rc, what, err, errlen);
    rc = step_done(a->commit);
    if (rc != SQLITE_OK || !sqlite3_get_autocommit(a->db)) return append_fail(a, rc ? rc : SQLITE_ERROR, "COMMIT", err, errlen);
    if (seq_out) *seq_out = seq;
    return CXR_OK;
}

/* v: a successful event row of the store's own (keying, rotation, merge)
 * by this process, every column but seq, prev_hash and row_hash; now holds
 * its time. */
static void own_event_row(cxr_audit *a, val v[NCOL], const char *event, int event_id, const char *action,
                          const char *application, const char *request_key, const char *reason, char now[64]) {
    cxr_now_iso(now);
    for (int c = 0; c < NCOL; c++) v[c] = v_text(NULL);
    v[C_time_utc] = v_text(now);
    v[C_event_type] = v_text(event);
    v[C_event_id] = v_int(event_id);
    v[C_event_action] = v_text(action);
    v[C_outcome] = v_int(CXR_AUDIT_SUCCESS);
    v[C_user_name] = v_text(a->user);
    v[C_application] = v_text(application);
    v[C_host] = v_text(a->host);
    v[C_pid] = v_int((int64_t)getpid());
    v[C_error_code] = v_int(0);
    v[C_reason] = v_text(reason);
    v[C_request_key] = v_text(request_key);
}

/* Opening for writing: a keyed store needs its key; an unkeyed one opened
 * with a key becomes keyed — from seq 1 when empty, from its next row when
 * it has rows and p.key_existing asks for it (else refused) — by an
 * "audit-keyed" event row written, with the key record in meta, in one
 * transaction. */
static int settle_key(cxr_audit *a, char *err, size_t errlen) {
    char sid[CXR_AUDIT_KEY_ID_HEX];
    int64_t from = 0, head_seq = 0;
    int rc = read_key_state(a->keystate, sid, &from);
    if (rc == CHAIN_KEY_MALFORMED)
        return cxr_fail(err, errlen, CXR_ERR_DB,
                        "%s: the chain key record in the meta table is malformed (run `cxrvqa audit verify`)", a->path);
    if (rc != SQLITE_OK) return open_fail(a, rc, "cannot read the chain key record", err, errlen);
    if (sid[0] || !a->ckeylen) {
        if (!key_refused(a, sid, from)) return CXR_OK;
        key_seg seg[KEY_HISTORY_MAX];
        int n = 0;
        if (a->ckeylen && read_key_history(a->db, sid, from, seg, &n) == SQLITE_OK)
            for (int i = 0; i + 1 < n; i++)
                if (strcmp(seg[i].id, a->ckey_id) == 0)
                    snprintf(a->chain_err, sizeof a->chain_err,
                             "%s: the key given (id %s) was retired when the chain key was rotated (its last row is "
                             "seq %lld); the store is keyed with key id %s now: use that key file (--audit-key FILE; "
                             "Orthanc: AuditKeyFile)",
                             a->path, a->ckey_id, (long long)seg[i + 1].from - 1, sid);
        return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s; nothing written", a->chain_err);
    }
    /* unkeyed, a key given: again under the write lock */
    rc = step_done(a->begin);
    if (rc != SQLITE_OK) return open_fail(a, rc, "cannot start the keying transaction", err, errlen);
    rc = read_key_state(a->keystate, sid, &from);
    if (rc == SQLITE_OK && sid[0]) { /* another process keyed it meanwhile */
        step_done(a->rollback);
        return key_refused(a, sid, from) ? cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s; nothing written", a->chain_err)
                                         : CXR_OK;
    }
    if (rc == SQLITE_OK) {
        rc = sqlite3_step(a->head);
        head_seq = sqlite3_column_int64(a->head, 0);
        sqlite3_reset(a->head);
        rc = rc == SQLITE_ROW ? SQLITE_OK : rc == SQLITE_DONE ? SQLITE_CORRUPT : rc;
    }
    if (rc != SQLITE_OK) {
        int code = open_fail(a, rc == CHAIN_KEY_MALFORMED ? SQLITE_CORRUPT : rc, "cannot read the chain state", err, errlen);
        if (!sqlite3_get_autocommit(a->db)) step_done(a->rollback);
        return code;
    }
    if (head_seq > 0 && !a->p.key_existing) {
        step_done(a->rollback);
        return cxr_fail(err, errlen, CXR_ERR_AUDIT,
                        "%s: a chain key was given (id %s) but this store's %lld rows are unkeyed: key it from its "
                        "next row on with `cxrvqa audit key --db %s --key FILE` (recorded as an event row), or write "
                        "to it without a key; nothing written",
                        a->path, a->ckey_id, (long long)head_seq, a->path);
    }
    sqlite3_stmt *m = NULL;
    rc = sqlite3_prepare_v2(a->db, "INSERT INTO meta(key, value) VALUES ('chain_key_id', ?1), ('chain_keyed_from', ?2)",
                            -1, &m, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(m, 1, a->ckey_id, 16, SQLITE_STATIC);
        sqlite3_bind_int64(m, 2, head_seq + 1);
        rc = sqlite3_step(m) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(a->db);
    }
    sqlite3_finalize(m);
    char now[64], reason[256], key[sizeof KEYED_KEY_PREFIX + CXR_AUDIT_KEY_ID_HEX], hash[CXR_AUDIT_HASH_HEX];
    snprintf(reason, sizeof reason,
             "audit chain keyed: HMAC-SHA-256 under key id %s from this row (seq %lld) on%s", a->ckey_id,
             (long long)head_seq + 1, head_seq ? "; the rows before it stay SHA-256" : "");
    snprintf(key, sizeof key, KEYED_KEY_PREFIX "%s", a->ckey_id);
    val v[NCOL];
    own_event_row(a, v, KEYED_EVENT, CXR_AUDIT_EV_SECURITY_ALERT, "U", "cxrvqa-audit", key, reason, now);
    const char *what = "recording the chain key";
    int64_t seq = 0;
    if (rc == SQLITE_OK) rc = chain_insert(a, v, &seq, hash, &what);
    if (rc == SQLITE_OK && seq != head_seq + 1) rc = SQLITE_CORRUPT;
    if (rc == SQLITE_OK) {
        what = "COMMIT";
        rc = step_done(a->commit);
        if (rc == SQLITE_OK && !sqlite3_get_autocommit(a->db)) rc = SQLITE_ERROR;
    }
    if (rc == SQLITE_OK) return CXR_OK;
    int code = rc == CHAIN_KEY_REFUSED ? cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s; nothing written", a->chain_err)
               : rc < 0 ? cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: chain head damaged or hashing failed; nothing written", a->path)
                        : open_fail(a, rc, what, err, errlen);
    if (!sqlite3_get_autocommit(a->db)) step_done(a->rollback);
    return code;
}

int cxr_audit_rotate_key(cxr_audit *a, const char *new_key_file, int64_t *seq_out, char new_id[CXR_AUDIT_KEY_ID_HEX],
                         char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !new_key_file) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_rotate_key: NULL argument");
    if (a->p.read_only) return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: opened read-only: key not rotated", a->path);
    if (!a->ckeylen)
        return cxr_fail(err, errlen, CXR_ERR_ARG,
                        "%s: no current chain key was given: rotating needs the key the store is keyed with now "
                        "(an unkeyed store is keyed with `cxrvqa audit key`)",
                        a->path);
    unsigned char nkey[CXR_AUDIT_KEY_MAX];
    size_t nlen = 0;
    char nid[CXR_AUDIT_KEY_ID_HEX], sid[CXR_AUDIT_KEY_ID_HEX];
    int rc = load_chain_key(new_key_file, nkey, &nlen, nid, err, errlen);
    if (rc != CXR_OK) return rc;
    int64_t from = 0, seq = 0;
    key_seg seg[KEY_HISTORY_MAX];
    int nseg = 0, ret = CXR_OK;
    const char *what = "BEGIN IMMEDIATE";
    rc = step_done(a->begin);
    if (rc == SQLITE_OK) {
        what = "reading the chain key record";
        rc = read_key_state(a->keystate, sid, &from);
    }
    if (rc == SQLITE_OK) rc = read_key_history(a->db, sid, from, seg, &nseg);
    if (rc == CHAIN_KEY_MALFORMED) {
        ret = cxr_fail(err, errlen, CXR_ERR_DB,
                       "%s: the chain key record in the meta table is malformed (run `cxrvqa audit verify`); key not "
                       "rotated",
                       a->path);
        goto out;
    }
    if (rc == SQLITE_OK && key_refused(a, sid, from)) {
        ret = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s; key not rotated", a->chain_err);
        goto out;
    }
    for (int i = 0; rc == SQLITE_OK && i < nseg; i++)
        if (strcmp(seg[i].id, nid) == 0) {
            ret = cxr_fail(err, errlen, CXR_ERR_ARG,
                           "%s: the new key (id %s) %s: a rotation needs a key the store has never used (`cxrvqa "
                           "audit keygen NEW`); key not rotated",
                           new_key_file, nid, i == nseg - 1 ? "is the current key" : "was used by this store before");
            goto out;
        }
    if (rc == SQLITE_OK && nseg >= KEY_HISTORY_MAX) {
        ret = cxr_fail(err, errlen, CXR_ERR_ARG, "%s: the store has had %d keys, the most it records; key not rotated",
                       a->path, nseg);
        goto out;
    }
    if (rc != SQLITE_OK) {
        ret = append_fail(a, rc, what, err, errlen);
        goto out;
    }
    /* the event row, the last under the current key */
    int64_t head = 0;
    char hash[CXR_AUDIT_HASH_HEX];
    if (cxr_audit_head(a, &head, hash, err, errlen) != CXR_OK) {
        ret = CXR_ERR_DB;
        goto out;
    }
    char now[64], reason[320], key[sizeof REKEYED_KEY_PREFIX + CXR_AUDIT_KEY_ID_HEX];
    snprintf(reason, sizeof reason,
             "audit chain key rotated: this row (seq %lld) is the last HMAC-SHA-256 under key id %s; from seq %lld on "
             "the rows are under key id %s",
             (long long)head + 1, a->ckey_id, (long long)head + 2, nid);
    snprintf(key, sizeof key, REKEYED_KEY_PREFIX "%s", nid);
    val v[NCOL];
    own_event_row(a, v, REKEYED_EVENT, CXR_AUDIT_EV_SECURITY_ALERT, "U", "cxrvqa-audit", key, reason, now);
    what = "recording the rotation";
    rc = chain_insert(a, v, &seq, hash, &what);
    if (rc == CHAIN_KEY_REFUSED) {
        step_done(a->rollback);
        ret = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s; key not rotated", a->chain_err);
        goto out;
    }
    if (rc < 0) {
        step_done(a->rollback);
        ret = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: chain head damaged or hashing failed; key not rotated", a->path);
        goto out;
    }
    /* the key record: the new key from the next row on, and every key the chain has had */
    char hist[KEY_HISTORY_MAX * 40];
    size_t at = 0;
    hist[0] = 0;
    for (int i = 0; i < nseg; i++)
        at += (size_t)snprintf(hist + at, sizeof hist - at, "%s%.16s@%lld", i ? " " : "", seg[i].id, (long long)seg[i].from);
    snprintf(hist + at, sizeof hist - at, " %s@%lld", nid, (long long)seq + 1);
    sqlite3_stmt *m = NULL;
    if (rc == SQLITE_OK) {
        what = "recording the new key";
        rc = sqlite3_prepare_v2(a->db,
                                "INSERT OR REPLACE INTO meta(key, value) VALUES ('chain_key_id', ?1),"
                                " ('chain_keyed_from', ?2), ('chain_key_history', ?3)",
                                -1, &m, NULL);
    }
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(m, 1, nid, 16, SQLITE_STATIC);
        sqlite3_bind_int64(m, 2, seq + 1);
        sqlite3_bind_text(m, 3, hist, -1, SQLITE_STATIC);
        rc = sqlite3_step(m) == SQLITE_DONE ? SQLITE_OK : sqlite3_errcode(a->db);
    }
    sqlite3_finalize(m);
    if (rc == SQLITE_OK) {
        what = "COMMIT";
        rc = step_done(a->commit);
        if (rc == SQLITE_OK && !sqlite3_get_autocommit(a->db)) rc = SQLITE_ERROR;
    }
    if (rc != SQLITE_OK) {
        ret = append_fail(a, rc, what, err, errlen);
        goto out;
    }
    /* this handle writes under the new key from now on */
    OPENSSL_cleanse(a->ckey, sizeof a->ckey);
    memcpy(a->ckey, nkey, nlen);
    a->ckeylen = nlen;
    memcpy(a->ckey_id, nid, sizeof a->ckey_id);
    if (seq_out) *seq_out = seq;
    if (new_id) memcpy(new_id, nid, CXR_AUDIT_KEY_ID_HEX);
out:
    if (ret != CXR_OK && !sqlite3_get_autocommit(a->db)) step_done(a->rollback);
    OPENSSL_cleanse(nkey, sizeof nkey);
    return ret;
}

/* ------------------------------------------------------------------------
 * Reading back
 * ---------------------------------------------------------------------- */

int cxr_audit_has_request(cxr_audit *a, const char *request_key, int *found, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !request_key || !found) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_has_request: NULL argument");
    *found = 0;
    sqlite3_bind_text(a->has_request, 1, request_key, -1, SQLITE_STATIC);
    int rc = sqlite3_step(a->has_request);
    if (rc == SQLITE_ROW) *found = 1;
    sqlite3_reset(a->has_request);
    sqlite3_clear_bindings(a->has_request);
    if (rc != SQLITE_ROW && rc != SQLITE_DONE)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot look up request %s (%s: %s)", a->path, request_key,
                    sqlite_code_name(rc), sqlite3_errmsg(a->db));
    return CXR_OK;
}

int cxr_audit_head(cxr_audit *a, int64_t *seq, char hash[CXR_AUDIT_HASH_HEX], char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !seq || !hash) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_head: NULL argument");
    int rc = sqlite3_step(a->head);
    int ok = rc == SQLITE_ROW && sqlite3_column_type(a->head, 0) == SQLITE_INTEGER && sqlite3_column_text(a->head, 1) &&
             strlen((const char *)sqlite3_column_text(a->head, 1)) == 64;
    if (ok) {
        *seq = sqlite3_column_int64(a->head, 0);
        memcpy(hash, sqlite3_column_text(a->head, 1), 65);
    }
    sqlite3_reset(a->head);
    if (!ok)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot read the chain head (%s: %s)", a->path, sqlite_code_name(rc),
                    sqlite3_errmsg(a->db));
    return CXR_OK;
}

/* "YYYY-MM-DD[THH:MM[:SS[.d{1,3}]]][Z]" → the same without Z (compares as text with stored times). */
static int parse_since(const char *s, char *out, size_t n) {
    static const char pat[] = "dddd-dd-ddTdd:dd:dd.ddd";
    size_t len = strlen(s);
    if (len && s[len - 1] == 'Z') len--;
    if (len >= n || len > sizeof pat - 1) return -1;
    for (size_t i = 0; i < len; i++) {
        char c = s[i], p = pat[i];
        if (p == 'd' ? (c < '0' || c > '9') : c != p) return -1;
    }
    /* allowed lengths: date, +hh:mm, +:ss, +.d, .dd, .ddd */
    if (len != 10 && len != 16 && len != 19 && len != 21 && len != 22 && len != 23) return -1;
    memcpy(out, s, len);
    out[len] = 0;
    return 0;
}

static void fill_row(sqlite3_stmt *st, cxr_audit_row *row, val *v) {
    for (int c = 0; c < NCOL; c++) v[c] = col(st, c);
    memset(row, 0, sizeof *row);
    cxr_audit_record *r = &row->rec;
    row->seq = vi(&v[C_seq], 0);
    row->time_utc = vs(&v[C_time_utc]);
    row->prev_hash = vs(&v[C_prev_hash]);
    row->row_hash = vs(&v[C_row_hash]);
    r->event_type = vs(&v[C_event_type]);
    r->event_id = (int)vi(&v[C_event_id], 0);
    r->event_action = vs(&v[C_event_action]);
    r->outcome = (int)vi(&v[C_outcome], 0);
    r->user = vs(&v[C_user_name]);
    r->application = vs(&v[C_application]);
    r->host = vs(&v[C_host]);
    r->pid = vi(&v[C_pid], 0);
    r->question = vs(&v[C_question]);
    r->language = vs(&v[C_language]);
    r->intent = vs(&v[C_intent]);
    r->study_uid = vs(&v[C_study_uid]);
    r->series_uid = vs(&v[C_series_uid]);
    r->sop_uid = vs(&v[C_sop_uid]);
    r->sop_class_uid = vs(&v[C_sop_class_uid]);
    r->accession = vs(&v[C_accession]);
    r->source = vs(&v[C_source]);
    r->patient_id = vs(&v[C_patient_id]);
    r->answer = vs(&v[C_answer]);
    r->answer_text = vs(&v[C_answer_text]);
    r->findings_json = vs(&v[C_findings_json]);
    r->warnings_json = vs(&v[C_warnings_json]);
    r->model_name = vs(&v[C_model_name]);
    r->model_version = vs(&v[C_model_version]);
    r->model_sha256 = vs(&v[C_model_sha256]);
    r->prompt_version = vs(&v[C_prompt_version]);
    r->sr_uid = vs(&v[C_sr_uid]);
    r->sr_dest = vs(&v[C_sr_dest]);
    r->latency_ms = vi(&v[C_latency_ms], -1);
    r->error_code = (int)vi(&v[C_error_code], 0);
    r->reason = vs(&v[C_reason]);
    r->request_key = vs(&v[C_request_key]);
}

int cxr_audit_scan(cxr_audit *a, const cxr_audit_filter *f, cxr_audit_row_fn fn, void *ctx, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !fn) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_scan: NULL argument");
    cxr_audit_filter none = {NULL, NULL, 0, 0};
    if (!f) f = &none;
    char since[32];
    if (f->since && parse_since(f->since, since, sizeof since) != 0)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "since '%s' is not a UTC time YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z]", f->since);
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_prepare_v2(a->db, f->newest_first ? SQL_SCAN_DESC : SQL_SCAN_ASC, -1, &st, NULL);
    if (rc != SQLITE_OK)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: %s: %s", a->path, sqlite_code_name(rc), sqlite3_errmsg(a->db));
    if (f->study_uid) sqlite3_bind_text(st, 1, f->study_uid, -1, SQLITE_STATIC);
    if (f->since) sqlite3_bind_text(st, 2, since, -1, SQLITE_STATIC);
    sqlite3_bind_int64(st, 3, f->limit > 0 ? f->limit : -1);
    int ret = CXR_OK;
    val v[NCOL];
    cxr_audit_row row;
    while ((rc = sqlite3_step(st)) == SQLITE_ROW) {
        fill_row(st, &row, v);
        if ((ret = fn(&row, ctx)) != 0) break;
    }
    if (ret == CXR_OK && rc != SQLITE_DONE)
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: reading rows: %s (%s)", a->path, sqlite_code_name(rc), sqlite3_errmsg(a->db));
    sqlite3_finalize(st);
    return ret;
}

/* ------------------------------------------------------------------------
 * JSON
 * ---------------------------------------------------------------------- */

/* s, or a malloc'd copy with invalid UTF-8 replaced by U+FFFD (*owned set). */
static const char *utf8_clean(const char *s, char **owned) {
    *owned = NULL;
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s), i = 0, bad = 0;
    /* length of the valid sequence at p[i], 0 if invalid */
#define SEQLEN(i)                                                                                                    \
    (p[i] < 0x80                                   ? 1                                                               \
     : p[i] >= 0xC2 && p[i] <= 0xDF && (p[i + 1] & 0xC0) == 0x80 ? 2                                                 \
     : p[i] >= 0xE0 && p[i] <= 0xEF && (p[i + 1] & 0xC0) == 0x80 && (p[i + 2] & 0xC0) == 0x80 &&                     \
             !(p[i] == 0xE0 && p[i + 1] < 0xA0) && !(p[i] == 0xED && p[i + 1] > 0x9F)                                \
         ? 3                                                                                                         \
     : p[i] >= 0xF0 && p[i] <= 0xF4 && (p[i + 1] & 0xC0) == 0x80 && (p[i + 2] & 0xC0) == 0x80 &&                     \
             (p[i + 3] & 0xC0) == 0x80 && !(p[i] == 0xF0 && p[i + 1] < 0x90) && !(p[i] == 0xF4 && p[i + 1] > 0x8F)   \
         ? 4                                                                                                         \
         : 0)
    while (i < n) {
        size_t k = SEQLEN(i);
        if (!k) {
            bad++;
            k = 1;
        }
        i += k;
    }
    if (!bad) return s;
    char *o = malloc(n + 2 * bad + 1);
    if (!o) return NULL;
    size_t w = 0;
    for (i = 0; i < n;) {
        size_t k = SEQLEN(i);
        if (!k) {
            memcpy(o + w, "\xEF\xBF\xBD", 3);
            w += 3;
            i++;
        } else {
            memcpy(o + w, p + i, k);
            w += k;
            i += k;
        }
    }
#undef SEQLEN
    o[w] = 0;
    *owned = o;
    return o;
}


static int add_str(cJSON *o, const char *k, const char *s) {
    if (!s) return 1;
    char *owned;
    const char *c = utf8_clean(s, &owned);
    cJSON *item = c ? cJSON_CreateString(c) : NULL;
    free(owned);
    return item && cJSON_AddItemToObject(o, k, item);
}

static int add_num(cJSON *o, const char *k, double x) {
    cJSON *item = cJSON_CreateNumber(x);
    return item && cJSON_AddItemToObject(o, k, item);
}

/* findings / warnings: embedded when they parse as JSON, else kept as text */
static int add_json(cJSON *o, const char *k, const char *s) {
    if (!s) return 1;
    cJSON *item = cJSON_Parse(s);
    if (item && !cJSON_IsInvalid(item)) return cJSON_AddItemToObject(o, k, item);
    cJSON_Delete(item);
    return add_str(o, k, s);
}

static cJSON *row_object(const cxr_audit_row *row) {
    const cxr_audit_record *r = &row->rec;
    cJSON *o = cJSON_CreateObject();
    int ok = o != NULL;
    ok = ok && add_num(o, "seq", (double)row->seq) && add_str(o, "time", row->time_utc);
    ok = ok && add_str(o, "event_type", r->event_type) && add_num(o, "event_id", r->event_id);
    ok = ok && add_str(o, "event_action", r->event_action) && add_num(o, "outcome", r->outcome);
    ok = ok && add_str(o, "user", r->user) && add_str(o, "application", r->application) && add_str(o, "host", r->host);
    ok = ok && (r->pid == 0 || add_num(o, "pid", (double)r->pid));
    ok = ok && add_str(o, "question", r->question) && add_str(o, "language", r->language) &&
         add_str(o, "intent", r->intent);
    ok = ok && add_str(o, "study_uid", r->study_uid) && add_str(o, "series_uid", r->series_uid) &&
         add_str(o, "sop_uid", r->sop_uid) && add_str(o, "sop_class_uid", r->sop_class_uid) &&
         add_str(o, "accession", r->accession) && add_str(o, "source", r->source) &&
         add_str(o, "patient_id", r->patient_id);
    ok = ok && add_str(o, "answer", r->answer) && add_str(o, "answer_text", r->answer_text) &&
         add_json(o, "findings", r->findings_json) && add_json(o, "warnings", r->warnings_json);
    ok = ok && add_str(o, "model_name", r->model_name) && add_str(o, "model_version", r->model_version) &&
         add_str(o, "model_sha256", r->model_sha256) && add_str(o, "prompt_version", r->prompt_version);
    ok = ok && add_str(o, "sr_uid", r->sr_uid) && add_str(o, "sr_dest", r->sr_dest);
    ok = ok && (r->latency_ms < 0 || add_num(o, "latency_ms", (double)r->latency_ms));
    ok = ok && (r->error_code == 0 || (add_num(o, "error_code", r->error_code) &&
                                       add_str(o, "error", cxr_strerror(r->error_code))));
    ok = ok && add_str(o, "reason", r->reason) && add_str(o, "request_key", r->request_key);
    ok = ok && add_str(o, "prev_hash", row->prev_hash) && add_str(o, "row_hash", row->row_hash);
    if (!ok) {
        cJSON_Delete(o);
        return NULL;
    }
    return o;
}

char *cxr_audit_row_json(const cxr_audit_row *row) {
    if (!row) return NULL;
    cJSON *o = row_object(row);
    char *s = o ? cJSON_PrintUnformatted(o) : NULL;
    cJSON_Delete(o);
    return s;
}

static int collect_json(const cxr_audit_row *row, void *ctx) {
    cJSON *o = row_object(row);
    if (!o) return CXR_ERR_NOMEM;
    cJSON_AddItemToArray((cJSON *)ctx, o);
    return 0;
}

int cxr_audit_query_json(cxr_audit *a, const char *study_uid, int limit, char **json_out, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !json_out) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_query_json: NULL argument");
    *json_out = NULL;
    cJSON *arr = cJSON_CreateArray();
    if (!arr) return cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
    cxr_audit_filter f = {study_uid, NULL, limit > 0 ? limit : 100, 1};
    int rc = cxr_audit_scan(a, &f, collect_json, arr, err, errlen);
    if (rc == CXR_OK && !(*json_out = cJSON_PrintUnformatted(arr))) rc = CXR_ERR_NOMEM;
    if (rc == CXR_ERR_NOMEM) cxr_fail(err, errlen, rc, "out of memory");
    cJSON_Delete(arr);
    return rc;
}

/* ------------------------------------------------------------------------
 * Verify
 * ---------------------------------------------------------------------- */

static int tampered(cxr_audit_verify_result *res, cxr_audit_problem pb, int64_t seq, int64_t rowid, char *err,
                    size_t errlen, const char *fmt, ...) {
    res->problem = pb;
    res->seq = seq;
    res->rowid = rowid;
    va_list ap;
    va_start(ap, fmt);
    vsnprintf(res->detail, sizeof res->detail, fmt, ap);
    va_end(ap);
    return cxr_fail(err, errlen, CXR_ERR_DB, "%s", res->detail);
}

/* rowid of the first row after `after` holding seq, 0 if none */
static int64_t find_seq_after(sqlite3 *db, int64_t seq, int64_t after) {
    sqlite3_stmt *st = NULL;
    int64_t id = 0;
    if (sqlite3_prepare_v2(db, "SELECT id FROM audit WHERE seq = ?1 AND id > ?2 ORDER BY id LIMIT 1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_int64(st, 1, seq);
        sqlite3_bind_int64(st, 2, after);
        if (sqlite3_step(st) == SQLITE_ROW) id = sqlite3_column_int64(st, 0);
    }
    sqlite3_finalize(st);
    return id;
}

/* Keys at hand for verifying (their id, key, keylen; from unused): none
 * when n is 0 or mac NULL. */
typedef struct {
    EVP_MAC_CTX *mac;
    int n;
    key_seg key[CXR_AUDIT_VERIFY_KEYS_MAX];
    int must_match; /* 1: the store must be keyed, with these keys; 0: unkeyed is fine too (merge's shards) */
} verify_keys;

static const key_seg *key_by_id(const verify_keys *k, const char *id) {
    for (int i = 0; k && k->mac && i < k->n; i++)
        if (strcmp(k->key[i].id, id) == 0) return &k->key[i];
    return NULL;
}

/* "id (from seq N), id (from seq M), ..." of a chain's keys */
static void key_list(const key_seg *seg, int nseg, char *out, size_t n) {
    size_t at = 0;
    out[0] = 0;
    for (int i = 0; i < nseg && at < n; i++) {
        int w = snprintf(out + at, n - at, "%s%.16s (from seq %lld)", i ? ", " : "", seg[i].id, (long long)seg[i].from);
        if (w < 0) break;
        at += (size_t)w;
    }
}

/* The seq of the row that holds key i's event: the first key's audit-keyed
 * row is its first row; each later key's audit-rekeyed row is the last row
 * before it (under the key it replaces). */
static int64_t key_event_seq(const key_seg *seg, int i) { return i == 0 ? seg[0].from : seg[i].from - 1; }

/* NULL when row v (at seq) is what the chain's keys require there — the
 * audit-keyed event of the first key where the keyed chain begins, an
 * audit-rekeyed event naming each later key on the row before its first —
 * else what they require (in buf). */
static const char *key_boundary(const key_seg *seg, int nseg, int64_t seq, const val *v, char *buf, size_t n) {
    for (int i = 0; i < nseg; i++) {
        if (seq != key_event_seq(seg, i)) continue;
        char rk[64];
        snprintf(rk, sizeof rk, "%s%.16s", i == 0 ? KEYED_KEY_PREFIX : REKEYED_KEY_PREFIX, seg[i].id);
        const char *ev = vs(&v[C_event_type]), *key = vs(&v[C_request_key]);
        if (ev && strcmp(ev, i == 0 ? KEYED_EVENT : REKEYED_EVENT) == 0 && key && strcmp(key, rk) == 0) continue;
        snprintf(buf, n,
                 i == 0 ? "the keyed chain begins (the audit-keyed event of key id %.16s)"
                        : "the key is rotated to key id %.16s (the audit-rekeyed event naming it)",
                 seg[i].id);
        return buf;
    }
    return NULL;
}

/* The chain itself. Keyed rows without their key: order, links and head
 * only (*unchecked counts them). seg / *nseg: the chain's keys (with the
 * given ones attached). */
static int verify_rows(sqlite3 *db, const char *path, const verify_keys *k, int64_t *unchecked,
                       key_seg seg[KEY_HISTORY_MAX], int *nseg, cxr_audit_verify_result *res, char *err, size_t errlen) {
    int64_t version = 0, n = 0;
    int rc = check_identity(db, path, &version, err, errlen);
    if (rc < 0) return rc;
    if (rc != SQLITE_OK)
        return cxr_fail(err, errlen, is_db_broken(rc) ? CXR_ERR_DB : CXR_ERR_IO, "%s: %s (%s)", path,
                    sqlite_hint(rc, NULL), sqlite3_errmsg(db));
    if (version < 1) return cxr_fail(err, errlen, CXR_ERR_DB, "%s: not a cxrvqa audit database (empty)", path);

    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SQL_HEAD, -1, &st, NULL) != SQLITE_OK || sqlite3_step(st) != SQLITE_ROW ||
        sqlite3_column_type(st, 0) != SQLITE_INTEGER || !sqlite3_column_text(st, 1) ||
        strlen((const char *)sqlite3_column_text(st, 1)) != 64) {
        sqlite3_finalize(st);
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: the chain head in the meta table is missing or malformed (%s)", path,
                    sqlite3_errmsg(db));
    }
    res->head_seq = sqlite3_column_int64(st, 0);
    memcpy(res->head_hash, sqlite3_column_text(st, 1), 65);
    sqlite3_finalize(st);
    if (pragma_int(db, "SELECT count(*) FROM sqlite_master WHERE type = 'trigger' AND"
                       " name IN ('audit_no_update', 'audit_no_delete')", &n) == SQLITE_OK)
        res->triggers_missing = n != 2;

    /* the key record and, on a rotated store, its history */
    int64_t keyed_from = 0;
    *nseg = 0;
    rc = sqlite3_prepare_v2(db, SQL_KEYSTATE, -1, &st, NULL);
    if (rc != SQLITE_OK) return cxr_fail(err, errlen, CXR_ERR_DB, "%s: meta table unreadable (%s)", path, sqlite3_errmsg(db));
    rc = read_key_state(st, res->key_id, &keyed_from);
    sqlite3_finalize(st);
    st = NULL;
    if (rc == SQLITE_OK) rc = read_key_history(db, res->key_id, keyed_from, seg, nseg);
    if (rc == CHAIN_KEY_MALFORMED)
        return tampered(res, CXR_AUDIT_EDITED, 0, 0, err, errlen,
                        "the chain key record in the meta table (chain_key_id, chain_keyed_from, chain_key_history) "
                        "is malformed: edited");
    if (rc != SQLITE_OK) return cxr_fail(err, errlen, CXR_ERR_DB, "%s: meta table unreadable (%s)", path, sqlite3_errmsg(db));
    res->keyed = *nseg > 0;
    res->keyed_from = *nseg ? seg[0].from : 0;
    res->key_count = *nseg;
    int have_key = k && k->mac && k->n > 0;
    if (have_key && !res->keyed && k->must_match)
        return tampered(res, CXR_AUDIT_KEY_MISMATCH, 0, 0, err, errlen,
                        "a chain key was given (id %s) but the store records none: it was never keyed, or its key "
                        "record was removed and the chain rebuilt without the key",
                        k->key[0].id);
    for (int i = 0; have_key && res->keyed && i < k->n; i++) {
        int known = 0;
        for (int j = 0; j < *nseg && !known; j++) known = strcmp(seg[j].id, k->key[i].id) == 0;
        if (known) continue;
        if (*nseg == 1)
            return tampered(res, CXR_AUDIT_KEY_MISMATCH, 0, 0, err, errlen,
                            "the store is keyed with key id %s but the key given has id %s: the wrong key file, or the "
                            "chain was rebuilt under another key",
                            res->key_id, k->key[i].id);
        char list[KEY_HISTORY_MAX * 40];
        key_list(seg, *nseg, list, sizeof list);
        return tampered(res, CXR_AUDIT_KEY_MISMATCH, 0, 0, err, errlen,
                        "the store's chain has had the keys %s, but a key given has id %s: the wrong key file, or the "
                        "chain was rebuilt under another key",
                        list, k->key[i].id);
    }
    for (int j = 0; j < *nseg; j++) {
        const key_seg *g = key_by_id(k, seg[j].id);
        if (g) {
            seg[j].key = g->key;
            seg[j].keylen = g->keylen;
        }
    }

    rc = sqlite3_prepare_v2(db, SQL_VERIFY, -1, &st, NULL);
    if (rc != SQLITE_OK) return cxr_fail(err, errlen, CXR_ERR_DB, "%s: audit table unreadable (%s)", path, sqlite3_errmsg(db));
    EVP_MD *sha = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    if (!sha || !md) {
        sqlite3_finalize(st);
        EVP_MD_CTX_free(md);
        EVP_MD_free(sha);
        return cxr_fail(err, errlen, CXR_ERR_INTERNAL, "OpenSSL: SHA-256 unavailable");
    }
    hasher h = {md, sha, have_key ? k->mac : NULL, seg, *nseg};
    char prev[CXR_AUDIT_HASH_HEX] = GENESIS_HASH, hash[CXR_AUDIT_HASH_HEX], need[160];
    const char *boundary;
    const key_seg *ks;
    int64_t expect = 1, prev_rowid = 0;
    int ret = CXR_OK;
    val v[NCOL];
    while (ret == CXR_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        for (int c = 0; c < NCOL; c++) v[c] = col(st, c);
        int64_t rowid = sqlite3_column_int64(st, NCOL);
        int64_t seq = vi(&v[C_seq], -1);
        res->rows++;
        if (v[C_seq].type != SQLITE_INTEGER) {
            ret = tampered(res, CXR_AUDIT_EDITED, expect, rowid, err, errlen,
                           "rowid %lld: seq is not an integer: row edited", (long long)rowid);
        } else if (seq > res->head_seq) {
            ret = tampered(res, CXR_AUDIT_INSERTED, seq, rowid, err, errlen,
                           "row seq %lld (rowid %lld) lies beyond the chain head (seq %lld): inserted", (long long)seq,
                           (long long)rowid, (long long)res->head_seq);
        } else if (seq < expect) {
            ret = tampered(res, CXR_AUDIT_INSERTED, seq, rowid, err, errlen,
                           "row seq %lld (rowid %lld) repeats a seq already seen (expected seq %lld here): inserted",
                           (long long)seq, (long long)rowid, (long long)expect);
        } else if (seq > expect) {
            int64_t at = find_seq_after(db, expect, rowid);
            if (at)
                ret = tampered(res, CXR_AUDIT_REORDERED, expect, at, err, errlen,
                               "row seq %lld is stored at rowid %lld, after seq %lld (rowid %lld): rows reordered",
                               (long long)expect, (long long)at, (long long)seq, (long long)rowid);
            else if (seq == expect + 1)
                ret = tampered(res, CXR_AUDIT_DELETED, expect, 0, err, errlen,
                               "row seq %lld is missing (next row is seq %lld at rowid %lld): deleted", (long long)expect,
                               (long long)seq, (long long)rowid);
            else
                ret = tampered(res, CXR_AUDIT_DELETED, expect, 0, err, errlen,
                               "rows seq %lld to %lld are missing (next row is seq %lld at rowid %lld): deleted",
                               (long long)expect, (long long)seq - 1, (long long)seq, (long long)rowid);
        } else if ((boundary = key_boundary(seg, *nseg, seq, v, need, sizeof need)) != NULL) {
            ret = tampered(res, CXR_AUDIT_EDITED, seq, rowid, err, errlen,
                           "row seq %lld (rowid %lld), where the meta table says %s, is not that event: the key "
                           "record was edited",
                           (long long)seq, (long long)rowid, boundary);
        } else if ((ks = seg_of(&h, v)) != NULL && !ks->key) { /* its content cannot be checked: its place can */
            if (v[C_row_hash].type != SQLITE_TEXT || v[C_row_hash].n != 64) {
                ret = tampered(res, CXR_AUDIT_EDITED, seq, rowid, err, errlen,
                               "row seq %lld (rowid %lld) has a malformed row_hash: edited", (long long)seq, (long long)rowid);
            } else if (v[C_prev_hash].type != SQLITE_TEXT || v[C_prev_hash].n != 64 || memcmp(prev, v[C_prev_hash].s, 64) != 0) {
                ret = tampered(res, CXR_AUDIT_EDITED, seq - 1, prev_rowid, err, errlen,
                               "row seq %lld (rowid %lld) was replaced: row seq %lld no longer chains to it",
                               (long long)seq - 1, (long long)prev_rowid, (long long)seq);
            } else {
                memcpy(prev, v[C_row_hash].s, 64);
                prev[64] = 0;
                prev_rowid = rowid;
                expect++;
                (*unchecked)++;
            }
        } else if (row_hash(&h, v, hash) != CXR_OK) {
            ret = cxr_fail(err, errlen, CXR_ERR_INTERNAL, "SHA-256 / HMAC failed");
        } else if (v[C_row_hash].type != SQLITE_TEXT || v[C_row_hash].n != 64 || memcmp(hash, v[C_row_hash].s, 64) != 0) {
            ret = tampered(res, CXR_AUDIT_EDITED, seq, rowid, err, errlen,
                           "row seq %lld (rowid %lld) does not match its row_hash: edited", (long long)seq,
                           (long long)rowid);
        } else if (v[C_prev_hash].type != SQLITE_TEXT || v[C_prev_hash].n != 64 || memcmp(prev, v[C_prev_hash].s, 64) != 0) {
            if (seq == 1)
                ret = tampered(res, CXR_AUDIT_EDITED, seq, rowid, err, errlen,
                               "row seq 1 (rowid %lld) does not start from the genesis hash: replaced",
                               (long long)rowid);
            else
                ret = tampered(res, CXR_AUDIT_EDITED, seq - 1, prev_rowid, err, errlen,
                               "row seq %lld (rowid %lld) was rewritten and re-hashed: row seq %lld no longer chains to it",
                               (long long)seq - 1, (long long)prev_rowid, (long long)seq);
        } else {
            memcpy(prev, hash, sizeof prev);
            prev_rowid = rowid;
            expect++;
        }
    }
    if (ret == CXR_OK && rc != SQLITE_DONE)
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: reading rows failed after %lld rows: %s (%s)", path,
                   (long long)res->rows, sqlite_code_name(rc), sqlite3_errmsg(db));
    if (ret == CXR_OK && expect == res->head_seq)
        ret = tampered(res, CXR_AUDIT_TRUNCATED, expect, 0, err, errlen,
                       "the table ends at seq %lld but the chain head is seq %lld: the last row (seq %lld) was deleted",
                       (long long)expect - 1, (long long)res->head_seq, (long long)expect);
    else if (ret == CXR_OK && expect - 1 < res->head_seq)
        ret = tampered(res, CXR_AUDIT_TRUNCATED, expect, 0, err, errlen,
                       "the table ends at seq %lld but the chain head is seq %lld: rows seq %lld to %lld deleted from "
                       "the tail",
                       (long long)expect - 1, (long long)res->head_seq, (long long)expect, (long long)res->head_seq);
    if (ret == CXR_OK && memcmp(prev, res->head_hash, 64) != 0)
        ret = tampered(res, CXR_AUDIT_EDITED, expect - 1, prev_rowid, err, errlen,
                       "the last row (seq %lld, rowid %lld) does not match the chain head hash: last row replaced or "
                       "head edited",
                       (long long)expect - 1, (long long)prev_rowid);
    for (int i = 0; ret == CXR_OK && i < *nseg; i++) {
        int64_t at = key_event_seq(seg, i);
        if (at > expect - 1)
            ret = tampered(res, CXR_AUDIT_EDITED, at, 0, err, errlen,
                           "the meta table says %s key id %s %s seq %lld but the store ends at seq %lld: the key "
                           "record was edited",
                           i == 0 ? "the chain is keyed under" : "the chain key was rotated to",
                           seg[i].id, i == 0 ? "from" : "after", (long long)at, (long long)expect - 1);
    }
    sqlite3_finalize(st);
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha);
    return ret;
}

static int has_table(sqlite3 *db, const char *name);
static int verify_merged(sqlite3 *db, const char *path, const verify_keys *k, const key_seg *seg, int nseg,
                         cxr_audit_verify_result *res, char *err, size_t errlen);

static int verify_impl(const char *path, const verify_keys *k, cxr_audit_verify_result *res, char *err, size_t errlen) {
    double t0 = cxr_now_ms() / 1e3;
    struct stat st;
    if (stat(path, &st) != 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", path, strerror(errno));
    sqlite3 *db = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc != SQLITE_OK) {
        int code = cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot open (%s)", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        return code;
    }
    int64_t probe = 0;
    if ((pragma_int(db, "PRAGMA user_version", &probe) & 0xff) == SQLITE_CANTOPEN) {
        sqlite3 *imm = open_immutable(path);
        if (imm) {
            sqlite3_close_v2(db);
            db = imm;
        }
    }
    sqlite3_extended_result_codes(db, 1);
    sqlite3_busy_timeout(db, 10000);
    sqlite3_db_config(db, SQLITE_DBCONFIG_DEFENSIVE, 1, (int *)NULL);
    sqlite3_db_config(db, SQLITE_DBCONFIG_TRUSTED_SCHEMA, 0, (int *)NULL);
    /* one read transaction: the head and the rows are one snapshot */
    rc = sqlite3_exec(db, "BEGIN", NULL, NULL, NULL);
    int64_t unchecked = 0;
    key_seg seg[KEY_HISTORY_MAX];
    int nseg = 0;
    int ret = rc == SQLITE_OK ? verify_rows(db, path, k, &unchecked, seg, &nseg, res, err, errlen)
                              : cxr_fail(err, errlen, CXR_ERR_DB, "%s: %s", path, sqlite3_errmsg(db));
    int have_key = k && k->mac && k->n > 0;
    if (ret == CXR_OK && unchecked > 0 && (!have_key || nseg == 1)) {
        res->merged = has_table(db, "merge_origin");
        if (nseg == 1)
            ret = tampered(res, CXR_AUDIT_UNVERIFIED, res->keyed_from, 0, err, errlen,
                           "the chain is keyed (HMAC-SHA-256, key id %s) from seq %lld: the content of its %lld keyed "
                           "rows could not be checked without the key (their order, links and head hold%s); give the "
                           "key (--key FILE)",
                           res->key_id, (long long)res->keyed_from, (long long)unchecked,
                           res->keyed_from > 1 ? ", and the unkeyed rows before them are intact" : "");
        else {
            char list[KEY_HISTORY_MAX * 40];
            key_list(seg, nseg, list, sizeof list);
            ret = tampered(res, CXR_AUDIT_UNVERIFIED, res->keyed_from, 0, err, errlen,
                           "the chain is keyed (HMAC-SHA-256) from seq %lld under %d keys in turn, %s: the content of "
                           "its %lld keyed row%s could not be checked without them (their order, links and head "
                           "hold%s); give every key (--key FILE for each)",
                           (long long)res->keyed_from, nseg, list, (long long)unchecked, unchecked == 1 ? "" : "s",
                           res->keyed_from > 1 ? ", and the unkeyed rows before them are intact" : "");
        }
    } else if (ret == CXR_OK && unchecked > 0) {
        /* keys given, but not every key the chain has had */
        char list[KEY_HISTORY_MAX * 40];
        int m = 0;
        for (int j = 0; j < nseg; j++)
            if (!seg[j].key) seg[m++] = seg[j];
        key_list(seg, m, list, sizeof list);
        res->merged = has_table(db, "merge_origin");
        ret = tampered(res, CXR_AUDIT_UNVERIFIED, m ? seg[0].from : res->keyed_from, 0, err, errlen,
                       "the content of %lld keyed row%s could not be checked: the chain's key%s %s %s not given (their "
                       "order, links and head hold, and the rows under the keys given are intact); give every key "
                       "the chain has had (--key FILE for each)",
                       (long long)unchecked, unchecked == 1 ? "" : "s", m == 1 ? "" : "s", list, m == 1 ? "was" : "were");
    } else if (ret == CXR_OK) {
        res->key_checked = res->keyed;
        if (has_table(db, "merge_origin")) {
            res->merged = 1;
            ret = verify_merged(db, path, k, seg, nseg, res, err, errlen);
        }
    }
    sqlite3_exec(db, "COMMIT", NULL, NULL, NULL);
    sqlite3_close_v2(db);
    res->seconds = cxr_now_ms() / 1e3 - t0;
    return ret;
}

int cxr_audit_verify(const char *path, cxr_audit_verify_result *res, char *err, size_t errlen) {
    return cxr_audit_verify_key(path, NULL, res, err, errlen);
}

int cxr_audit_verify_key(const char *path, const char *key_file, cxr_audit_verify_result *res, char *err,
                         size_t errlen) {
    return cxr_audit_verify_keys(path, key_file ? &key_file : NULL, key_file ? 1 : 0, res, err, errlen);
}

int cxr_audit_verify_keys(const char *path, const char *const *key_files, int n_keys, cxr_audit_verify_result *res,
                          char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!path || !res || n_keys < 0 || (n_keys > 0 && !key_files))
        return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_verify: NULL argument");
    memset(res, 0, sizeof *res);
    if (n_keys == 0) return verify_impl(path, NULL, res, err, errlen);
    if (n_keys > CXR_AUDIT_VERIFY_KEYS_MAX)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "at most %d keys can be given", CXR_AUDIT_VERIFY_KEYS_MAX);
    verify_keys *k = calloc(1, sizeof *k);
    unsigned char(*key)[CXR_AUDIT_KEY_MAX] = calloc((size_t)n_keys, sizeof *key);
    EVP_MAC *hmac = NULL;
    int rc = k && key ? CXR_OK : cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
    for (int i = 0; rc == CXR_OK && i < n_keys; i++) {
        if (!key_files[i]) {
            rc = cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_verify: NULL key file");
            break;
        }
        rc = load_chain_key(key_files[i], key[i], &k->key[i].keylen, k->key[i].id, err, errlen);
        k->key[i].key = key[i];
        for (int j = 0; rc == CXR_OK && j < i; j++)
            if (strcmp(k->key[j].id, k->key[i].id) == 0)
                rc = cxr_fail(err, errlen, CXR_ERR_ARG, "%s: the same key (id %s) was given twice", key_files[i],
                              k->key[i].id);
    }
    if (rc == CXR_OK) {
        k->n = n_keys;
        hmac = EVP_MAC_fetch(NULL, "HMAC", NULL);
        k->mac = hmac ? EVP_MAC_CTX_new(hmac) : NULL;
        if (!k->mac) rc = cxr_fail(err, errlen, CXR_ERR_INTERNAL, "OpenSSL: HMAC unavailable");
    }
    if (rc == CXR_OK) {
        k->must_match = 1;
        rc = verify_impl(path, k, res, err, errlen);
    }
    if (k) EVP_MAC_CTX_free(k->mac);
    EVP_MAC_free(hmac);
    if (key) OPENSSL_cleanse(key, (size_t)n_keys * sizeof *key);
    free(key);
    free(k);
    return rc;
}

/* ------------------------------------------------------------------------
 * Anchoring: the chain head, copied out of the database's reach. The hash
 * chain proves rows were not edited, removed or reordered one by one; but
 * whoever can write the file can rebuild the whole chain after an edit.
 * An anchor log (append-only, elsewhere: another disk, a ticket, syslog)
 * keeps heads the store must still extend: a rebuilt chain has other
 * hashes at the anchored sequence numbers.
 * ---------------------------------------------------------------------- */

#define ANCHOR_TAG "cxrvqa-anchor v1"

int cxr_audit_anchor(cxr_audit *a, const char *anchor_path, char *line_out, size_t n, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !anchor_path) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_anchor: NULL argument");
    int64_t seq = 0, rows = -1;
    char hash[CXR_AUDIT_HASH_HEX];
    int rc = cxr_audit_head(a, &seq, hash, err, errlen);
    if (rc != CXR_OK) return rc;
    if (pragma_int(a->db, "SELECT count(*) FROM audit", &rows) != SQLITE_OK)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot count the rows (%s)", a->path, sqlite3_errmsg(a->db));
    char now[64], line[256];
    cxr_now_iso(now);
    int len = snprintf(line, sizeof line, ANCHOR_TAG " %s seq=%lld rows=%lld head=%s\n", now, (long long)seq,
                       (long long)rows, hash);
    int fd = open(anchor_path, O_WRONLY | O_APPEND | O_CREAT | O_CLOEXEC, 0600);
    if (fd < 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", anchor_path, strerror(errno));
    if (cxr_write_all(fd, line, (size_t)len) != 0 || fsync(fd) != 0) {
        int e = errno;
        close(fd);
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", anchor_path, strerror(e));
    }
    if (close(fd) != 0) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", anchor_path, strerror(errno));
    if (line_out && n) snprintf(line_out, n, "%.*s", len - 1, line);
    return CXR_OK;
}

int cxr_audit_verify_anchors(const char *path, const char *anchor_path, int *n_anchors, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (n_anchors) *n_anchors = 0;
    if (!path || !anchor_path) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_verify_anchors: NULL argument");
    FILE *f = fopen(anchor_path, "r");
    if (!f) return cxr_fail(err, errlen, CXR_ERR_IO, "%s: %s", anchor_path, strerror(errno));
    sqlite3 *db = NULL;
    sqlite3_stmt *st = NULL;
    int rc = sqlite3_open_v2(path, &db, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(db, "SELECT row_hash FROM audit WHERE seq = ?", -1, &st, NULL);
    if (rc != SQLITE_OK) {
        int code = cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot read (%s)", path, db ? sqlite3_errmsg(db) : sqlite3_errstr(rc));
        sqlite3_close_v2(db);
        fclose(f);
        return code;
    }
    char line[512];
    int lineno = 0, ret = CXR_OK;
    while (ret == CXR_OK && fgets(line, sizeof line, f)) {
        lineno++;
        if (line[0] == '\n' || line[0] == '#') continue;
        char when[64], hash[CXR_AUDIT_HASH_HEX];
        long long seq, rows;
        if (sscanf(line, ANCHOR_TAG " %63s seq=%lld rows=%lld head=%64[0-9a-f]", when, &seq, &rows, hash) != 4 ||
            strlen(hash) != 64) {
            ret = cxr_fail(err, errlen, CXR_ERR_FORMAT, "%s:%d: not an anchor line", anchor_path, lineno);
            break;
        }
        if (seq == 0) continue; /* anchored while empty: every store extends it */
        sqlite3_bind_int64(st, 1, seq);
        rc = sqlite3_step(st);
        const char *have = rc == SQLITE_ROW ? (const char *)sqlite3_column_text(st, 0) : NULL;
        if (rc != SQLITE_ROW && rc != SQLITE_DONE)
            ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: %s", path, sqlite3_errmsg(db));
        else if (!have)
            ret = cxr_fail(err, errlen, CXR_ERR_DB,
                           "%s:%d: the store has no row %lld, anchored on %s (%lld rows, head %.16s...): rows were "
                           "removed",
                           anchor_path, lineno, seq, when, rows, hash);
        else if (strcmp(have, hash))
            ret = cxr_fail(err, errlen, CXR_ERR_DB,
                           "%s:%d: row %lld hashes to %.16s... but was anchored on %s as %.16s...: the chain was "
                           "rewritten after that anchor",
                           anchor_path, lineno, seq, have, when, hash);
        else if (n_anchors)
            (*n_anchors)++;
        sqlite3_reset(st);
    }
    if (ret == CXR_OK && ferror(f)) ret = cxr_fail(err, errlen, CXR_ERR_IO, "%s: read error", anchor_path);
    sqlite3_finalize(st);
    sqlite3_close_v2(db);
    fclose(f);
    return ret;
}

/* ------------------------------------------------------------------------
 * Merging shards. A merged store is an ordinary audit store (its own chain,
 * rows read by scan, export and has_request like any other) plus:
 *  - one "audit-merge" event row per shard merged, chained like every row,
 *    whose answer_text is the shard's description (MERGE_JSON below) and
 *    whose request_key is "audit-merge:" + the shard's head hash;
 *  - after it, the shard's rows, each with every stored field as in the
 *    shard (its time, host, pid, request_key …) but a new seq, prev_hash and
 *    row_hash in the merged chain;
 *  - merge_origin(seq → that merged row, merge_seq → its event, shard_seq,
 *    shard_row_hash): where each row came from.
 * Verifying a merged store recomputes each shard's own chain from the
 * merged rows (seq = shard_seq, prev_hash = the previous shard row's hash)
 * and checks that it ends at the head its event recorded.
 * ---------------------------------------------------------------------- */

#define MERGE_EVENT "audit-merge"
#define MERGE_KEY_PREFIX "audit-merge:"

static const char SQL_MERGE_SCHEMA[] =
    "CREATE TABLE IF NOT EXISTS merge_origin(seq INTEGER PRIMARY KEY, merge_seq INTEGER NOT NULL,"
    " shard_seq INTEGER NOT NULL, shard_row_hash TEXT NOT NULL);"
    "CREATE INDEX IF NOT EXISTS merge_origin_merge ON merge_origin(merge_seq, shard_seq);"
    "CREATE INDEX IF NOT EXISTS merge_origin_hash ON merge_origin(shard_row_hash);"
    "CREATE TRIGGER IF NOT EXISTS merge_origin_no_update BEFORE UPDATE ON merge_origin"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;"
    "CREATE TRIGGER IF NOT EXISTS merge_origin_no_delete BEFORE DELETE ON merge_origin"
    " BEGIN SELECT RAISE(ABORT, 'audit rows are append-only'); END;";
static const char SQL_MERGE_EVENTS[] =
    "SELECT seq, answer_text, request_key FROM audit WHERE event_type = '" MERGE_EVENT "' ORDER BY seq";
/* the rows of one merge (?1 = its event's seq), in shard order, with their origin */
static const char SQL_MERGE_ROWS[] =
    "SELECT " AUDIT_COLUMNS(COL_NAME) "row_hash, id, o_shard_seq, o_hash FROM audit JOIN"
    " (SELECT seq AS o_seq, shard_seq AS o_shard_seq, shard_row_hash AS o_hash FROM merge_origin WHERE merge_seq = ?1)"
    " ON seq = o_seq ORDER BY o_shard_seq";

static int has_table(sqlite3 *db, const char *name) {
    sqlite3_stmt *st = NULL;
    int yes = 0;
    if (sqlite3_prepare_v2(db, "SELECT 1 FROM sqlite_master WHERE type = 'table' AND name = ?1", -1, &st, NULL) ==
        SQLITE_OK) {
        sqlite3_bind_text(st, 1, name, -1, SQLITE_STATIC);
        yes = sqlite3_step(st) == SQLITE_ROW;
    }
    sqlite3_finalize(st);
    return yes;
}

/* One shard as described by its merge event. */
typedef struct {
    int64_t merge_seq, head_seq, from_seq, rows;
    char head_hash[CXR_AUDIT_HASH_HEX], from_hash[CXR_AUDIT_HASH_HEX];
    char file[1024];
    int64_t keyed_from;                  /* a keyed shard: its first keyed seq (0: unkeyed) */
    char key_id[CXR_AUDIT_KEY_ID_HEX];   /* and its key id */
} merge_event;

/* answer_text of an event → e; 0 when it has every key */
static int parse_event(const char *json, merge_event *e) {
    cJSON *o = json ? cJSON_Parse(json) : NULL;
    const cJSON *f = cJSON_GetObjectItem(o, "shard_file"), *hs = cJSON_GetObjectItem(o, "shard_head_seq"),
                *hh = cJSON_GetObjectItem(o, "shard_head_hash"), *fs = cJSON_GetObjectItem(o, "from_seq"),
                *fh = cJSON_GetObjectItem(o, "from_hash"), *n = cJSON_GetObjectItem(o, "rows");
    int ok = cJSON_IsString(f) && cJSON_IsNumber(hs) && cJSON_IsString(hh) && strlen(hh->valuestring) == 64 &&
             cJSON_IsNumber(fs) && cJSON_IsString(fh) && strlen(fh->valuestring) == 64 && cJSON_IsNumber(n);
    if (ok) {
        snprintf(e->file, sizeof e->file, "%s", f->valuestring);
        e->head_seq = (int64_t)hs->valuedouble;
        e->from_seq = (int64_t)fs->valuedouble;
        e->rows = (int64_t)n->valuedouble;
        memcpy(e->head_hash, hh->valuestring, 65);
        memcpy(e->from_hash, fh->valuestring, 65);
        const cJSON *kf = cJSON_GetObjectItem(o, "shard_keyed_from"), *ki = cJSON_GetObjectItem(o, "shard_key_id");
        if (kf || ki) {
            ok = cJSON_IsNumber(kf) && kf->valuedouble >= 1 && cJSON_IsString(ki) && strlen(ki->valuestring) == 16;
            if (ok) {
                e->keyed_from = (int64_t)kf->valuedouble;
                memcpy(e->key_id, ki->valuestring, CXR_AUDIT_KEY_ID_HEX);
            }
        }
    }
    cJSON_Delete(o);
    return ok ? 0 : -1;
}

/* Every merge event of db in seq order (*out malloc'd, *n of them). CXR_ERR_DB names a malformed one. */
static int load_events(sqlite3 *db, const char *path, merge_event **out, int64_t *n, char *err, size_t errlen) {
    *out = NULL;
    *n = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(db, SQL_MERGE_EVENTS, -1, &st, NULL) != SQLITE_OK)
        return cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot read the merge events (%s)", path, sqlite3_errmsg(db));
    int64_t cap = 0;
    int rc, ret = CXR_OK;
    while (ret == CXR_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
        if (*n == cap) {
            cap = cap ? 2 * cap : 16;
            merge_event *ne = realloc(*out, (size_t)cap * sizeof *ne);
            if (!ne) {
                ret = cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
                break;
            }
            *out = ne;
        }
        merge_event *e = &(*out)[*n];
        memset(e, 0, sizeof *e);
        e->merge_seq = sqlite3_column_int64(st, 0);
        const char *key = (const char *)sqlite3_column_text(st, 2);
        if (parse_event((const char *)sqlite3_column_text(st, 1), e) != 0 || !key ||
            strncmp(key, MERGE_KEY_PREFIX, strlen(MERGE_KEY_PREFIX)) != 0 ||
            strcmp(key + strlen(MERGE_KEY_PREFIX), e->head_hash) != 0)
            ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: merge event seq %lld is malformed (its description or key)",
                           path, (long long)e->merge_seq);
        (*n)++;
    }
    if (ret == CXR_OK && rc != SQLITE_DONE)
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: reading the merge events: %s", path, sqlite3_errmsg(db));
    sqlite3_finalize(st);
    if (ret != CXR_OK) {
        free(*out);
        *out = NULL;
        *n = 0;
    }
    return ret;
}

/* rowid-free lookup: the hash of the shard row at seq, "" when none */
static void shard_row_hash_at(sqlite3 *sh, int64_t seq, char out[CXR_AUDIT_HASH_HEX]) {
    out[0] = 0;
    sqlite3_stmt *st = NULL;
    if (sqlite3_prepare_v2(sh, "SELECT row_hash FROM audit WHERE seq = ?1", -1, &st, NULL) == SQLITE_OK) {
        sqlite3_bind_int64(st, 1, seq);
        if (sqlite3_step(st) == SQLITE_ROW && sqlite3_column_bytes(st, 0) == 64)
            memcpy(out, sqlite3_column_text(st, 0), 65);
    }
    sqlite3_finalize(st);
}

static int merge_fail(cxr_audit *a, int rc, const char *what, char *err, size_t errlen) {
    int code = cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: merge not committed (%s): %s (%s: %s)", a->path, what,
                        sqlite_hint(rc, a), sqlite_code_name(rc), sqlite3_errmsg(a->db));
    if (!sqlite3_get_autocommit(a->db)) step_done(a->rollback);
    return code;
}

int cxr_audit_merge(cxr_audit *a, const char *shard_path, cxr_audit_merge_result *res, char *err, size_t errlen) {
    if (err && errlen) err[0] = 0;
    if (!a || !shard_path || !res) return cxr_fail(err, errlen, CXR_ERR_ARG, "cxr_audit_merge: NULL argument");
    memset(res, 0, sizeof *res);
    if (a->p.read_only) return cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: opened read-only: nothing merged", a->path);
    struct stat s1, s2;
    if (stat(shard_path, &s1) == 0 && stat(a->path, &s2) == 0 && s1.st_dev == s2.st_dev && s1.st_ino == s2.st_ino)
        return cxr_fail(err, errlen, CXR_ERR_ARG, "%s: is the merged store itself", shard_path);

    /* 1. the shard's own chain, whole (a keyed shard: under this store's key) */
    cxr_audit_verify_result vr;
    memset(&vr, 0, sizeof vr);
    verify_keys k;
    memset(&k, 0, sizeof k);
    k.mac = a->ckeylen ? a->mac : NULL;
    k.n = a->ckeylen ? 1 : 0;
    k.key[0].key = a->ckey;
    k.key[0].keylen = a->ckeylen;
    memcpy(k.key[0].id, a->ckey_id, sizeof k.key[0].id);
    int rc = verify_impl(shard_path, &k, &vr, err, errlen);
    if (vr.key_count > 1) {
        res->problem = CXR_AUDIT_UNVERIFIED;
        return cxr_fail(err, errlen, CXR_ERR_ARG,
                        "shard %s had its chain key rotated (%d keys): merge takes shards written under one key; "
                        "nothing merged from it",
                        shard_path, vr.key_count);
    }
    if (rc != CXR_OK && (vr.problem == CXR_AUDIT_KEY_MISMATCH || vr.problem == CXR_AUDIT_UNVERIFIED)) {
        res->problem = vr.problem;
        return cxr_fail(err, errlen, CXR_ERR_ARG,
                        a->ckeylen ? "shard %s is keyed with key id %s, not with this merge's key (id %s): merge it "
                                     "with its own key, or it was rebuilt under another key; nothing merged from it"
                                   : "shard %s is keyed (key id %s): merge it with its key (--key FILE)%s; nothing "
                                     "merged from it",
                        shard_path, vr.key_id, a->ckey_id);
    }
    if (rc != CXR_OK) {
        res->problem = vr.problem;
        if (vr.problem != CXR_AUDIT_INTACT)
            return cxr_fail(err, errlen, CXR_ERR_DB, "shard %s is not intact: %s; nothing merged from it", shard_path,
                            vr.detail);
        return rc; /* err says why it could not be read */
    }

    /* 2. one read snapshot of the shard for the copy */
    sqlite3 *sh = NULL;
    if (sqlite3_open_v2(shard_path, &sh, SQLITE_OPEN_READONLY | SQLITE_OPEN_NOMUTEX, NULL) != SQLITE_OK) {
        sqlite3_close_v2(sh);
        return cxr_fail(err, errlen, CXR_ERR_IO, "%s: cannot open the shard", shard_path);
    }
    int64_t probe = 0;
    if ((pragma_int(sh, "PRAGMA user_version", &probe) & 0xff) == SQLITE_CANTOPEN) {
        sqlite3 *imm = open_immutable(shard_path);
        if (imm) {
            sqlite3_close_v2(sh);
            sh = imm;
        }
    }
    sqlite3_busy_timeout(sh, 10000);
    sqlite3_stmt *rows = NULL, *ins = NULL, *hq = NULL;
    merge_event *ev = NULL;
    int64_t nev = 0;
    cJSON *desc = NULL;
    char *desc_s = NULL;
    int ret = CXR_OK;
    if (has_table(sh, "merge_origin")) {
        ret = cxr_fail(err, errlen, CXR_ERR_ARG, "%s: is itself a merged store: merge the shards it came from instead",
                       shard_path);
        goto out;
    }
    if (sqlite3_exec(sh, "BEGIN", NULL, NULL, NULL) != SQLITE_OK ||
        sqlite3_prepare_v2(sh, SQL_HEAD, -1, &hq, NULL) != SQLITE_OK || sqlite3_step(hq) != SQLITE_ROW ||
        sqlite3_column_bytes(hq, 1) != 64) {
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot read the shard's chain head (%s)", shard_path,
                       sqlite3_errmsg(sh));
        goto out;
    }
    res->shard_head_seq = sqlite3_column_int64(hq, 0);
    memcpy(res->shard_head_hash, sqlite3_column_text(hq, 1), 65);
    if (res->shard_head_seq != vr.head_seq || strcmp(res->shard_head_hash, vr.head_hash) != 0) {
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: the shard changed while it was being verified: merge it once it is finished",
                       shard_path);
        goto out;
    }
    if (res->shard_head_seq == 0) {
        res->empty = 1;
        goto out;
    }

    /* 3. one write transaction on the merged store */
    rc = step_done(a->begin);
    if (rc != SQLITE_OK) {
        ret = merge_fail(a, rc, "BEGIN IMMEDIATE", err, errlen);
        goto out;
    }
    rc = exec(a, SQL_MERGE_SCHEMA);
    if (rc != SQLITE_OK) {
        ret = merge_fail(a, rc, "creating merge_origin", err, errlen);
        goto out;
    }
    /* already here? the shard's head row is some merged row's origin */
    sqlite3_stmt *q = NULL;
    rc = sqlite3_prepare_v2(a->db, "SELECT merge_seq FROM merge_origin WHERE shard_row_hash = ?1 AND shard_seq = ?2 LIMIT 1",
                            -1, &q, NULL);
    if (rc == SQLITE_OK) {
        sqlite3_bind_text(q, 1, res->shard_head_hash, 64, SQLITE_STATIC);
        sqlite3_bind_int64(q, 2, res->shard_head_seq);
        rc = sqlite3_step(q);
        if (rc == SQLITE_ROW) {
            res->already = 1;
            res->merge_seq = sqlite3_column_int64(q, 0);
        }
        rc = rc == SQLITE_ROW || rc == SQLITE_DONE ? SQLITE_OK : rc;
    }
    sqlite3_finalize(q);
    if (rc != SQLITE_OK) {
        ret = merge_fail(a, rc, "looking for earlier merges", err, errlen);
        goto out;
    }
    if (res->already) {
        step_done(a->rollback);
        goto out;
    }
    /* an earlier merge of a shorter version of this shard (it went on after being merged): take only the rest */
    int64_t from = 0;
    char from_hash[CXR_AUDIT_HASH_HEX] = GENESIS_HASH;
    ret = load_events(a->db, a->path, &ev, &nev, err, errlen);
    if (ret != CXR_OK) {
        step_done(a->rollback);
        goto out;
    }
    for (int64_t i = 0; i < nev; i++) {
        char h[CXR_AUDIT_HASH_HEX];
        if (ev[i].head_seq <= from || ev[i].head_seq >= res->shard_head_seq) continue;
        shard_row_hash_at(sh, ev[i].head_seq, h);
        if (strcmp(h, ev[i].head_hash) == 0) {
            from = ev[i].head_seq;
            memcpy(from_hash, ev[i].head_hash, sizeof from_hash);
        }
    }
    res->from_seq = from;

    /* the event row */
    desc = cJSON_CreateObject();
    cJSON_AddStringToObject(desc, "shard_file", shard_path);
    cJSON_AddNumberToObject(desc, "shard_head_seq", (double)res->shard_head_seq);
    cJSON_AddStringToObject(desc, "shard_head_hash", res->shard_head_hash);
    cJSON_AddNumberToObject(desc, "from_seq", (double)from);
    cJSON_AddStringToObject(desc, "from_hash", from_hash);
    cJSON_AddNumberToObject(desc, "rows", (double)(res->shard_head_seq - from));
    if (vr.keyed) { /* its keyed rows recompute only under this key: verify_merged needs both */
        cJSON_AddNumberToObject(desc, "shard_keyed_from", (double)vr.keyed_from);
        cJSON_AddStringToObject(desc, "shard_key_id", vr.key_id);
    }
    desc_s = cJSON_PrintUnformatted(desc);
    if (!desc_s) {
        step_done(a->rollback);
        ret = cxr_fail(err, errlen, CXR_ERR_NOMEM, "out of memory");
        goto out;
    }
    char key[sizeof MERGE_KEY_PREFIX + 64], now[64], reason[1400], hash[CXR_AUDIT_HASH_HEX];
    snprintf(key, sizeof key, MERGE_KEY_PREFIX "%s", res->shard_head_hash);
    snprintf(reason, sizeof reason, "shard %.1024s: rows %lld to %lld of its chain (head sha256 %s)", shard_path,
             (long long)from + 1, (long long)res->shard_head_seq, res->shard_head_hash);
    val v[NCOL];
    own_event_row(a, v, MERGE_EVENT, CXR_AUDIT_EV_APPLICATION_ACTIVITY, "C", "cxrvqa-audit-merge", key, reason, now);
    v[C_source] = v_text(shard_path);
    v[C_answer_text] = v_text(desc_s);
    const char *what = NULL;
    rc = chain_insert(a, v, &res->merge_seq, hash, &what);
    if (rc == SQLITE_OK)
        rc = sqlite3_prepare_v2(a->db, "INSERT INTO merge_origin(seq, merge_seq, shard_seq, shard_row_hash) VALUES(?1,?2,?3,?4)",
                                -1, &ins, NULL);
    if (rc == SQLITE_OK) rc = sqlite3_prepare_v2(sh, SQL_SCAN_HEAD " WHERE seq > ?1 ORDER BY seq", -1, &rows, NULL);
    if (rc != SQLITE_OK) {
        ret = rc < 0 ? (step_done(a->rollback), cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: chain head damaged or SHA-256 failed", a->path))
                     : merge_fail(a, rc, what ? what : "preparing", err, errlen);
        goto out;
    }
    /* the rows, re-checked against the shard's chain as they are copied */
    sqlite3_bind_int64(rows, 1, from);
    char prev[CXR_AUDIT_HASH_HEX], sh_hash[CXR_AUDIT_HASH_HEX];
    memcpy(prev, from_hash, sizeof prev);
    int64_t expect = from + 1;
    while ((rc = sqlite3_step(rows)) == SQLITE_ROW) {
        for (int c = 0; c < NCOL; c++) v[c] = col(rows, c);
        key_seg seg;
        hasher hs = handle_hasher(a, vr.keyed_from, &seg);
        if (vi(&v[C_seq], -1) != expect || row_hash(&hs, v, sh_hash) != CXR_OK ||
            v[C_row_hash].n != 64 || memcmp(sh_hash, v[C_row_hash].s, 64) != 0 || v[C_prev_hash].n != 64 ||
            memcmp(prev, v[C_prev_hash].s, 64) != 0) {
            step_done(a->rollback);
            ret = cxr_fail(err, errlen, CXR_ERR_DB, "shard %s: row seq %lld does not chain (the shard changed after it was verified); nothing merged",
                           shard_path, (long long)expect);
            goto out;
        }
        memcpy(prev, sh_hash, sizeof prev);
        int64_t mseq = 0;
        rc = chain_insert(a, v, &mseq, hash, &what);
        if (rc != SQLITE_OK) break;
        sqlite3_bind_int64(ins, 1, mseq);
        sqlite3_bind_int64(ins, 2, res->merge_seq);
        sqlite3_bind_int64(ins, 3, expect);
        sqlite3_bind_text(ins, 4, sh_hash, 64, SQLITE_STATIC);
        what = "recording the origin";
        rc = step_done(ins);
        if (rc != SQLITE_OK) break;
        expect++;
        res->rows_added++;
    }
    if (rc == SQLITE_DONE && (expect - 1 != res->shard_head_seq || memcmp(prev, res->shard_head_hash, 64) != 0)) {
        step_done(a->rollback);
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "shard %s: its rows end at seq %lld, not at its head seq %lld; nothing merged",
                       shard_path, (long long)expect - 1, (long long)res->shard_head_seq);
        goto out;
    }
    if (rc != SQLITE_DONE) {
        ret = rc < 0 ? (step_done(a->rollback), cxr_fail(err, errlen, CXR_ERR_AUDIT, "%s: chain head damaged or SHA-256 failed", a->path))
                     : merge_fail(a, rc, what ? what : "reading the shard", err, errlen);
        goto out;
    }
    rc = step_done(a->commit);
    if (rc != SQLITE_OK || !sqlite3_get_autocommit(a->db)) ret = merge_fail(a, rc ? rc : SQLITE_ERROR, "COMMIT", err, errlen);
out:
    if (ret != CXR_OK) {
        res->rows_added = 0;
        res->merge_seq = 0;
    }
    free(desc_s);
    cJSON_Delete(desc);
    free(ev);
    sqlite3_finalize(rows);
    sqlite3_finalize(ins);
    sqlite3_finalize(hq);
    sqlite3_exec(sh, "COMMIT", NULL, NULL, NULL);
    sqlite3_close_v2(sh);
    return ret;
}

/* The merged part of a verify (after the chain itself held): every shard's
 * rows recompute to its recorded head; every row but the events has one
 * origin; every origin names an event. */
static int verify_merged(sqlite3 *db, const char *path, const verify_keys *k, const key_seg *seg, int nseg,
                         cxr_audit_verify_result *res, char *err, size_t errlen) {
    merge_event *ev = NULL;
    int64_t nev = 0;
    int ret = load_events(db, path, &ev, &nev, err, errlen);
    if (ret != CXR_OK) {
        res->problem = CXR_AUDIT_SHARD_MISMATCH;
        snprintf(res->detail, sizeof res->detail, "%s", err ? err : "malformed merge event");
        return ret;
    }
    EVP_MD *sha = EVP_MD_fetch(NULL, "SHA256", NULL);
    EVP_MD_CTX *md = EVP_MD_CTX_new();
    sqlite3_stmt *st = NULL;
    if (!sha || !md || sqlite3_prepare_v2(db, SQL_MERGE_ROWS, -1, &st, NULL) != SQLITE_OK) {
        ret = cxr_fail(err, errlen, CXR_ERR_DB, "%s: cannot read the merged rows (%s)", path, sqlite3_errmsg(db));
        goto out;
    }
    res->merges = nev;
    for (int64_t i = 0; i < nev && ret == CXR_OK; i++) {
        const merge_event *e = &ev[i];
        int from_ok = e->from_seq == 0 && strcmp(e->from_hash, GENESIS_HASH) == 0;
        for (int64_t j = 0; j < i && !from_ok; j++)
            from_ok = ev[j].head_seq == e->from_seq && strcmp(ev[j].head_hash, e->from_hash) == 0;
        if (!from_ok) {
            ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, e->merge_seq, 0, err, errlen,
                           "merge event seq %lld (shard %s) continues from shard row %lld, which no earlier merge holds",
                           (long long)e->merge_seq, e->file, (long long)e->from_seq);
            break;
        }
        const key_seg *g = e->keyed_from ? key_by_id(k, e->key_id) : NULL;
        int have = k && k->mac && k->n > 0;
        if (e->keyed_from && !g) {
            ret = tampered(res, have ? CXR_AUDIT_SHARD_MISMATCH : CXR_AUDIT_UNVERIFIED, e->merge_seq, 0, err,
                           errlen, "shard %s (merge seq %lld) is keyed with key id %s: its rows cannot be recomputed %s",
                           e->file, (long long)e->merge_seq, e->key_id,
                           have ? "under the keys given (other ids)" : "without the key");
            break;
        }
        key_seg es = {e->keyed_from, "", g ? g->key : NULL, g ? g->keylen : 0};
        hasher h = {md, sha, have ? k->mac : NULL, &es, e->keyed_from > 0};
        sqlite3_bind_int64(st, 1, e->merge_seq);
        char prev[CXR_AUDIT_HASH_HEX], hash[CXR_AUDIT_HASH_HEX];
        memcpy(prev, e->from_hash, sizeof prev);
        int64_t expect = e->from_seq + 1;
        int rc;
        val v[NCOL];
        while (ret == CXR_OK && (rc = sqlite3_step(st)) == SQLITE_ROW) {
            for (int c = 0; c < NCOL; c++) v[c] = col(st, c);
            int64_t mseq = vi(&v[C_seq], 0), rowid = sqlite3_column_int64(st, NCOL);
            int64_t sseq = sqlite3_column_int64(st, NCOL + 1);
            const char *oh = (const char *)sqlite3_column_text(st, NCOL + 2);
            if (sseq != expect) {
                ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, mseq, rowid, err, errlen,
                               "shard %s (merge seq %lld): its row %lld %s (merged row seq %lld holds shard row %lld)",
                               e->file, (long long)e->merge_seq, (long long)expect,
                               sseq > expect ? "is missing" : "appears twice", (long long)mseq, (long long)sseq);
                break;
            }
            v[C_seq] = v_int(sseq);
            v[C_prev_hash] = v_text(prev);
            if (row_hash(&h, v, hash) != CXR_OK) {
                ret = cxr_fail(err, errlen, CXR_ERR_INTERNAL, "SHA-256 / HMAC failed");
                break;
            }
            if (!oh || strcmp(hash, oh) != 0) {
                ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, mseq, rowid, err, errlen,
                               "merged row seq %lld (shard %s row %lld) no longer hashes to that shard row's hash",
                               (long long)mseq, e->file, (long long)sseq);
                break;
            }
            memcpy(prev, hash, sizeof prev);
            expect++;
            res->merged_rows++;
        }
        sqlite3_reset(st);
        if (ret == CXR_OK && expect - 1 < e->head_seq) {
            /* the last rows of this merge are gone: name them, as a gap inside it is named above */
            char rows[64];
            if (expect == e->head_seq)
                snprintf(rows, sizeof rows, "row %lld is", (long long)expect);
            else
                snprintf(rows, sizeof rows, "rows %lld to %lld are", (long long)expect, (long long)e->head_seq);
            ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, e->merge_seq, 0, err, errlen,
                           "shard %s (merge seq %lld): its %s missing (its merged rows end at shard row %lld; its "
                           "recorded head is row %lld)",
                           e->file, (long long)e->merge_seq, rows, (long long)expect - 1, (long long)e->head_seq);
        } else if (ret == CXR_OK && (expect - 1 != e->head_seq || strcmp(prev, e->head_hash) != 0))
            ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, e->merge_seq, 0, err, errlen,
                           "shard %s (merge seq %lld): its merged rows end at shard row %lld, not at its recorded head "
                           "(row %lld, sha256 %.16s...)",
                           e->file, (long long)e->merge_seq, (long long)expect - 1, (long long)e->head_seq, e->head_hash);
    }
    int64_t bad = 0;
    /* rows from no shard: only the merge events and the merged store's own key events may be */
    sqlite3_finalize(st);
    st = NULL;
    if (ret == CXR_OK &&
        sqlite3_prepare_v2(db, "SELECT seq FROM audit WHERE event_type != '" MERGE_EVENT "' AND seq NOT IN"
                               " (SELECT seq FROM merge_origin) ORDER BY seq", -1, &st, NULL) == SQLITE_OK) {
        while (!bad && sqlite3_step(st) == SQLITE_ROW) {
            int64_t q = sqlite3_column_int64(st, 0);
            int own = 0;
            for (int i = 0; i < nseg && !own; i++) own = q == key_event_seq(seg, i);
            if (!own) bad = q;
        }
        sqlite3_finalize(st);
        st = NULL;
    }
    if (ret == CXR_OK && bad)
        ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, bad, 0, err, errlen,
                       "row seq %lld comes from no merged shard (written into the merged store directly, or its origin "
                       "was removed)", (long long)bad);
    bad = 0;
    if (ret == CXR_OK &&
        pragma_int(db, "SELECT seq FROM merge_origin WHERE merge_seq NOT IN (SELECT seq FROM audit WHERE event_type = '"
                       MERGE_EVENT "') OR seq NOT IN (SELECT seq FROM audit) ORDER BY seq LIMIT 1", &bad) == SQLITE_OK && bad)
        ret = tampered(res, CXR_AUDIT_SHARD_MISMATCH, bad, 0, err, errlen,
                       "the origin of row seq %lld names no merge event or no row: inserted", (long long)bad);
out:
    sqlite3_finalize(st);
    EVP_MD_CTX_free(md);
    EVP_MD_free(sha);
    free(ev);
    return ret;
}
