/*
 * audit.h — the audit store: one SQLite file that records every question
 * cxrvqa answered, refused or failed on, written before the answer is
 * released, chained with SHA-256 so that an edited, deleted, reordered or
 * inserted row (and a cut-off tail) is detected afterwards.
 *
 *   cxr_audit_params p = cxr_audit_params_default();
 *   p.pseudonym_key_file = "/etc/cxrvqa/pseudonym.key";     // optional
 *   char path[4096], err[CXR_ERRMSG_MAX];
 *   cxr_audit *a = NULL;
 *   if (cxr_audit_open(cxr_audit_default_path(path, sizeof path), &p, &a, err, sizeof err)) fail(err);
 *   cxr_audit_record r;
 *   cxr_audit_record_init(&r);
 *   r.event_type = "ask"; r.outcome = CXR_AUDIT_SUCCESS; r.question = q; r.study_uid = uid; …
 *   if (cxr_audit_append(a, &r, NULL, err, sizeof err) != CXR_OK) fail_closed(err); // no answer
 *   release_answer();
 *   cxr_audit_close(a);
 *
 * Storage: WAL journal, synchronous=FULL, busy timeout (default 10 s); many
 * processes may append to one file at once, each through its own handle.
 * The file is created 0600 (missing parent directories 0700). Opening is
 * refused (CXR_ERR_DB) on a network or cluster filesystem (NFS, SMB/CIFS,
 * AFS, 9P, Ceph, Coda, NCP, OCFS2/GFS2/Lustre/GPFS, FUSE other than a few
 * local ones) and for a schema newer than this build knows.
 *
 * Tamper evidence: rows carry seq 1, 2, 3 …, prev_hash and row_hash =
 * SHA-256 over a length-prefixed serialisation of every stored field and
 * prev_hash (spelled out at row_hash() in audit.c, re-implemented in
 * tests/plugin/audit/test_audit_proc.py); the first row chains to 64 '0's. The chain
 * head (last seq and hash) lives in the meta table, updated in the same
 * transaction; triggers refuse UPDATE and DELETE on rows. Unkeyed, the
 * chain cannot stop someone able to rewrite the file from recomputing every
 * hash and the head: cxr_audit_verify alone does not detect that. Two
 * answers (SECURITY.md, threat model): anchors (below: heads copied out of
 * the database's reach) and the keyed mode.
 *
 * Keyed mode: with params.chain_key_file, row_hash is HMAC-SHA-256 under a
 * key kept outside the database (a file of 32 to 4096 bytes, used exactly as
 * stored, mode 0600 or stricter; `cxrvqa audit keygen`) over
 * "cxrvqa-audit-row-hmac-v1" NUL and the same serialisation. A store is
 * keyed from a sequence number on: meta 'chain_key_id' (first 16 hex digits
 * of SHA-256 of the key; never the key) and 'chain_keyed_from' (seq), and
 * the row at that seq is an "audit-keyed" event (request_key
 * "audit-keyed:" + key id), itself keyed. An empty store opened for writing
 * with a key becomes keyed from seq 1; an unkeyed store with rows only when
 * params.key_existing is set (`cxrvqa audit key`): its earlier rows stay
 * SHA-256. Opening a keyed store for writing without its key, or with
 * another key, is refused (CXR_ERR_AUDIT, nothing written); read-only opens
 * need no key.
 *
 * Key rotation (cxr_audit_rotate_key, `cxrvqa audit rotate-key`): an
 * "audit-rekeyed" event row (request_key "audit-rekeyed:" + the NEW key's
 * id), HMAC'd under the current key, is the last row under it; from the next
 * seq on rows are under the new key. meta 'chain_key_id' / 'chain_keyed_from'
 * then name the new key and its first seq, and 'chain_key_history' lists
 * every key the chain has had, "id@from id@from ..." (oldest first). Verifying
 * every row's content needs every one of those keys.
 *
 * Errors: functions return CXR_OK or a negative CXR_ERR_* code and write
 * the detail (file, SQLite's words, a hint) into err (errlen bytes; may be
 * NULL). CXR_ERR_AUDIT means "the row is not stored": the caller must not
 * release the answer. The library never prints, never exits.
 *
 * Thread safety: a handle serves one thread at a time and must not cross a
 * fork(); open one handle per thread or process.
 */
#ifndef CXR_AUDIT_H
#define CXR_AUDIT_H

#include <stddef.h>
#include <stdint.h>

#include "cxr_common.h"

#ifdef __cplusplus
extern "C" {
#endif

#define CXR_AUDIT_SCHEMA_VERSION 1        /* the newest schema this build reads and writes */
#define CXR_AUDIT_MAX_FIELD (1 << 20)     /* longest text field accepted (bytes): CXR_ERR_ARG above */
#define CXR_AUDIT_HASH_HEX 65             /* 64 hex digits + NUL */
#define CXR_AUDIT_KEY_ID_HEX 17           /* key id: 16 hex digits + NUL */
#define CXR_AUDIT_KEY_MIN 32              /* shortest chain key accepted (bytes) */
#define CXR_AUDIT_KEY_MAX 4096            /* longest */
#define CXR_AUDIT_VERIFY_KEYS_MAX 16      /* most keys one verification takes */

/* EventOutcomeIndicator (DICOM PS3.15 A.5 / RFC 3881). */
enum {
    CXR_AUDIT_SUCCESS = 0,
    CXR_AUDIT_MINOR_FAILURE = 4,   /* e.g. a refused question */
    CXR_AUDIT_SERIOUS_FAILURE = 8, /* e.g. an error while answering */
    CXR_AUDIT_MAJOR_FAILURE = 12
};

/* EventID codes (DICOM, codeSystemName "DCM"). */
enum {
    CXR_AUDIT_EV_APPLICATION_ACTIVITY = 110100,
    CXR_AUDIT_EV_INSTANCES_ACCESSED = 110103,
    CXR_AUDIT_EV_EXPORT = 110106,
    CXR_AUDIT_EV_QUERY = 110112,
    CXR_AUDIT_EV_SECURITY_ALERT = 110113
};

typedef struct cxr_audit cxr_audit;

typedef struct {
    int busy_timeout_ms;            /* wait this long for another writer's lock (default 10000) */
    const char *pseudonym_key_file; /* NULL: patient ids stored as given. Else a file of ≥ 16 key
                                       bytes (trailing newline ignored), not readable or writable by
                                       others: ids are stored as "hmac:" + hex HMAC-SHA256(key, id) */
    int read_only;                  /* 1: read (scan, query, head) only; nothing is created or
                                       migrated, append fails (default 0) */
    const char *chain_key_file;     /* NULL: unkeyed chain. Else the audit chain's HMAC key (see above:
                                       32..4096 bytes, 0600 or stricter); a different file from the
                                       pseudonymisation key */
    int key_existing;               /* 1: with chain_key_file, an unkeyed store that has rows is keyed
                                       from its next row on (default 0: refused) */
    int synchronous_full;           /* 1 (default): synchronous=FULL, each commit survives power
                                       loss. 0: NORMAL — the last commits can be lost; for the
                                       throughput baseline only, never for clinical use */
} cxr_audit_params;

cxr_audit_params cxr_audit_params_default(void);

/* The database used when none is named: $CXRVQA_DB, else
 * $XDG_STATE_HOME/cxrvqa/audit.sqlite (absolute XDG_STATE_HOME only), else
 * ~/.local/state/cxrvqa/audit.sqlite. Writes it into buf (n bytes) and
 * returns buf; NULL when no home directory is known or buf is too small. */
const char *cxr_audit_default_path(char *buf, size_t n);

/* Open (and, unless read_only, create and migrate to the current schema)
 * the store at path. p may be NULL for the defaults.
 * Errors: CXR_ERR_ARG (NULL path/out, bad key file mode), CXR_ERR_IO (key
 * file unreadable), CXR_ERR_DB (network filesystem, schema newer than
 * CXR_AUDIT_SCHEMA_VERSION — err names both —, not a database, corrupt),
 * CXR_ERR_AUDIT (cannot be created or written: read-only file, directory or
 * filesystem, disk full, locked past the busy timeout), CXR_ERR_NOMEM. */
int cxr_audit_open(const char *path, const cxr_audit_params *p, cxr_audit **out, char *err, size_t errlen);
void cxr_audit_close(cxr_audit *a); /* NULL is a no-op */

/* One audit event. Every string is borrowed for the duration of the call,
 * UTF-8, NUL-terminated; NULL = absent (stored as NULL, not ""). */
typedef struct {
    const char *event_type;   /* required: "ask", "screen", "refusal", "worker-failure", … */
    int event_id;             /* DICOM EventID (CXR_AUDIT_EV_*); 0: 110103 for ask, screen and
                                 refusal, else 110100 */
    const char *event_action; /* EventActionCode C R U D E; NULL: "R" for 110103, else "E" */
    int outcome;              /* CXR_AUDIT_SUCCESS, _MINOR_, _SERIOUS_ or _MAJOR_FAILURE */
    /* who */
    const char *user;         /* requesting user; NULL: the process's user name */
    const char *application;  /* calling application or AE title */
    const char *host;         /* NULL: this host's name */
    int64_t pid;              /* 0: this process */
    /* the question */
    const char *question, *language, *intent;
    /* the image */
    const char *study_uid, *series_uid, *sop_uid, *sop_class_uid, *accession;
    const char *source;       /* file path, Orthanc instance id, … */
    const char *patient_id;   /* as given; pseudonymised on the way in when a key is configured */
    /* the answer */
    const char *answer;       /* "yes", "no", "uncertain", "refused", "error" */
    const char *answer_text;
    const char *findings_json; /* probabilities, thresholds, decisions (stored as given) */
    const char *warnings_json;
    /* the model */
    const char *model_name, *model_version, *model_sha256, *prompt_version;
    /* the structured report written */
    const char *sr_uid, *sr_dest;
    int64_t latency_ms;       /* < 0: absent */
    int error_code;           /* CXR_ERR_* for errors and refusals, 0 none */
    const char *reason;       /* why refused / what failed */
    const char *request_key;  /* caller's idempotency key (batch resume), indexed */
} cxr_audit_record;

/* All strings NULL, numbers 0, latency_ms -1. */
void cxr_audit_record_init(cxr_audit_record *r);

/* Append one row and return only after it is committed (synchronous=FULL).
 * The store fills the time (UTC, ms), seq and hashes. seq_out (may be NULL)
 * receives the row's seq. Errors: CXR_ERR_ARG (NULL handle/record, no
 * event_type, outcome not 0/4/8/12, a field over CXR_AUDIT_MAX_FIELD),
 * CXR_ERR_AUDIT (anything that kept the row from being committed: disk full,
 * read-only, locked past the busy timeout, I/O error) — fail closed. */
int cxr_audit_append(cxr_audit *a, const cxr_audit_record *r, int64_t *seq_out, char *err, size_t errlen);

/* *found = 1 when a row with this request_key and outcome success (0) or
 * minor failure (4, a refusal) exists, else 0. Errors: CXR_ERR_ARG,
 * CXR_ERR_DB. */
int cxr_audit_has_request(cxr_audit *a, const char *request_key, int *found, char *err, size_t errlen);

/* The chain head: last seq (0 for an empty store) and its row hash. */
int cxr_audit_head(cxr_audit *a, int64_t *seq, char hash[CXR_AUDIT_HASH_HEX], char *err, size_t errlen);

/* A stored row, as handed to a scan callback (valid during the call only). */
typedef struct {
    int64_t seq;
    const char *time_utc;     /* "2024-05-01T10:00:00.123Z" */
    const char *prev_hash, *row_hash;
    cxr_audit_record rec;     /* patient_id as stored (maybe "hmac:…"); event_id and
                                 event_action as resolved at append */
} cxr_audit_row;

typedef struct {
    const char *study_uid;    /* NULL: all studies */
    const char *since;        /* NULL, or UTC "YYYY-MM-DD[THH:MM[:SS[.mmm]]][Z]": rows at or after */
    int64_t limit;            /* ≤ 0: no limit */
    int newest_first;         /* 0: ascending seq (default), 1: descending */
} cxr_audit_filter;

/* Call fn for each row matching f (NULL: all), in seq order. fn returns 0
 * to continue, anything else to stop; that value is then returned. Errors:
 * CXR_ERR_ARG (bad since), CXR_ERR_DB. */
typedef int (*cxr_audit_row_fn)(const cxr_audit_row *row, void *ctx);
int cxr_audit_scan(cxr_audit *a, const cxr_audit_filter *f, cxr_audit_row_fn fn, void *ctx, char *err, size_t errlen);

/* Rows of one study (study_uid NULL: all), newest first, at most limit (≤ 0:
 * 100), as a JSON array of objects (the jsonl export's objects) in
 * *json_out, which the caller frees with free(). For GET /cxrvqa/audit.
 * Errors: CXR_ERR_ARG, CXR_ERR_DB, CXR_ERR_NOMEM. */
int cxr_audit_query_json(cxr_audit *a, const char *study_uid, int limit, char **json_out, char *err, size_t errlen);

/* One row as a one-line JSON object (the jsonl export format): keys as in
 * the record (time, seq, prev_hash, row_hash added; findings and warnings
 * embedded as JSON when they parse, else as strings; absent fields left
 * out; invalid UTF-8 replaced by U+FFFD). Caller frees with free(); NULL
 * when out of memory. */
char *cxr_audit_row_json(const cxr_audit_row *row);

/* What cxr_audit_verify found. */
typedef enum {
    CXR_AUDIT_INTACT = 0,
    CXR_AUDIT_EDITED,     /* a row's content no longer matches its hash, or was re-hashed */
    CXR_AUDIT_DELETED,    /* a seq is missing from the middle of the chain */
    CXR_AUDIT_REORDERED,  /* rows stored out of seq order */
    CXR_AUDIT_INSERTED,   /* a row that is not part of the chain (duplicate seq, beyond the head) */
    CXR_AUDIT_TRUNCATED,  /* the last rows are gone (table ends before the chain head) */
    CXR_AUDIT_SHARD_MISMATCH, /* merged store: a shard's rows no longer recompute to its recorded head,
                                a row comes from no shard, or an origin names no row */
    CXR_AUDIT_KEY_MISMATCH,  /* the key given is not the one the store records, or the store records
                                none (never keyed, or its key record removed and the chain rebuilt) */
    CXR_AUDIT_UNVERIFIED     /* keyed rows whose content could not be checked: no key given (their
                                order, links and head were checked) */
} cxr_audit_problem;

typedef struct {
    cxr_audit_problem problem;
    int64_t rows;                   /* rows read */
    int64_t seq, rowid;             /* where: the seq concerned and the rowid holding it (0: none) */
    int64_t head_seq;               /* chain head recorded in meta */
    char head_hash[CXR_AUDIT_HASH_HEX];
    int triggers_missing;           /* the append-only triggers were dropped (reported, not fatal) */
    double seconds;                 /* time taken */
    int merged;                     /* 1: a merged store (cxr_audit_merge): its shards were checked too */
    int64_t merges, merged_rows;    /* merge events, and the shard rows they hold */
    int keyed;                      /* 1: the store is keyed (meta chain_key_id) */
    int64_t keyed_from;             /* its first keyed seq */
    char key_id[CXR_AUDIT_KEY_ID_HEX]; /* the key id it records now ("" unkeyed) */
    int key_count;                  /* keys the chain has had: 1 unless rotated (0 unkeyed) */
    int key_checked;                /* 1: every keyed row was checked with its key */
    char detail[CXR_ERRMSG_MAX];    /* one sentence naming the row and what is wrong */
} cxr_audit_verify_result;

/* Check the whole chain of the store at path (opened read-only, one read
 * transaction, so concurrent appenders do not disturb it). Returns CXR_OK
 * when intact; CXR_ERR_DB when tampered (res->problem says how, res->seq /
 * res->rowid where; err = res->detail), or when the file is not a usable
 * audit store (res->problem == CXR_AUDIT_INTACT then); CXR_ERR_IO when it
 * cannot be opened. Works on read-only media (opened immutable when no
 * -wal is pending). 100 000 rows take about half a second. */
int cxr_audit_verify(const char *path, cxr_audit_verify_result *res, char *err, size_t errlen);
/* The same with the chain key (key_file NULL: as cxr_audit_verify). A
 * keyed store verified without the key: its unkeyed rows are proven, its
 * keyed rows' order, links and head are checked, and the result is
 * CXR_ERR_DB with problem CXR_AUDIT_UNVERIFIED (not intact, not proven
 * tampered) unless something else was found. With a key: a store keyed
 * under another key id, or not keyed at all, is CXR_AUDIT_KEY_MISMATCH;
 * CXR_ERR_ARG / CXR_ERR_IO: the key file is refused or unreadable. */
int cxr_audit_verify_key(const char *path, const char *key_file, cxr_audit_verify_result *res, char *err,
                         size_t errlen);
/* The same with up to CXR_AUDIT_VERIFY_KEYS_MAX chain keys, for a store
 * whose key was rotated: each keyed row is checked under the key it was
 * written with. Every key given must be one the store has had (else
 * CXR_AUDIT_KEY_MISMATCH); rows under a key not given are not checked
 * (CXR_AUDIT_UNVERIFIED, the missing key ids named). n_keys 0: as
 * cxr_audit_verify. The same key twice: CXR_ERR_ARG. */
int cxr_audit_verify_keys(const char *path, const char *const *key_files, int n_keys, cxr_audit_verify_result *res,
                          char *err, size_t errlen);

/* Rotate the chain key of a keyed store opened for writing with its
 * current key (params.chain_key_file): in one transaction, an
 * "audit-rekeyed" event row under the current key (*seq: its seq; its
 * reason names both key ids), then the key record moves to new_key_file's
 * key from the next seq on and 'chain_key_history' gains it. The handle
 * then writes under the new key; every other writer needs the new key
 * file from then on (the old one is refused, and the refusal says it was
 * retired). CXR_ERR_ARG: the new key refused, one the store has used, no
 * current key given, or 63 rotations already; CXR_ERR_AUDIT: not written
 * (nothing changed). new_id (may be NULL): the new key's id. */
int cxr_audit_rotate_key(cxr_audit *a, const char *new_key_file, int64_t *seq, char new_id[CXR_AUDIT_KEY_ID_HEX],
                         char *err, size_t errlen);

/* Check a chain key file (regular, 0600 or stricter, CXR_AUDIT_KEY_MIN..MAX
 * bytes) and write its id. CXR_ERR_IO unreadable, CXR_ERR_ARG refused. */
int cxr_audit_key_id(const char *key_file, char id[CXR_AUDIT_KEY_ID_HEX], char *err, size_t errlen);
/* Create a new chain key: 32 random bytes (getrandom) in a new file, 0600;
 * an existing path is refused (CXR_ERR_ARG). id may be NULL. */
int cxr_audit_keygen(const char *key_file, char id[CXR_AUDIT_KEY_ID_HEX], char *err, size_t errlen);

/* ---- anchors: chain heads kept outside the database ----
 * The chain proves no row was edited, removed or reordered by itself; it
 * cannot prove that whoever can write the file did not rebuild the whole
 * chain after an edit (SECURITY.md, threat model). An anchor log, kept
 * elsewhere and only appended to, closes that: every anchored head must
 * still be in the store.
 *
 * Append "cxrvqa-anchor v1 <UTC time> seq=<n> rows=<n> head=<hash>" for the
 * current head to anchor_path (created 0600, O_APPEND, fsync'ed); the line
 * (without newline) in line_out. CXR_ERR_IO when the log cannot be written. */
int cxr_audit_anchor(cxr_audit *a, const char *anchor_path, char *line_out, size_t n, char *err, size_t errlen);
/* Check that the store at path still holds every anchored head: for each
 * line of anchor_path the row with that seq exists with that hash (run it
 * with cxr_audit_verify, which proves the rows after it). *n_anchors: lines
 * checked. CXR_ERR_DB names the first anchor the store no longer extends;
 * CXR_ERR_FORMAT a line that is not an anchor; CXR_ERR_IO an unreadable file. */
int cxr_audit_verify_anchors(const char *path, const char *anchor_path, int *n_anchors, char *err, size_t errlen);

/* ---- merging shards (sharded screening: one store per node, one at the end) ----
 * Append every row of the store at shard_path to the merged store a, after
 * checking the shard's whole chain (cxr_audit_verify): each row keeps every
 * stored field, gets a new seq and hash in a's chain, and its origin (the
 * shard row's seq and hash) in a's merge_origin table, after one
 * "audit-merge" event row that records the shard's file and chain head.
 * One write transaction: all of the shard or nothing. Idempotent: a shard
 * whose head is already merged adds nothing (res->already); a shard that
 * went on after an earlier merge adds only its new rows (res->from_seq).
 * Verifying a (merged) store with cxr_audit_verify then also recomputes
 * every shard's chain from the merged rows (CXR_AUDIT_SHARD_MISMATCH).
 * Errors: CXR_ERR_DB: the shard is tampered or cut (res->problem; err names
 * the shard and the row) or changed during the merge; CXR_ERR_IO: the shard
 * cannot be read; CXR_ERR_ARG: the shard is a merged store or a itself;
 * CXR_ERR_AUDIT: the merged store could not be written (nothing merged).
 * Keyed shards: their chains are checked with a's chain key, which must be
 * the key they record (CXR_ERR_ARG otherwise, and for a keyed shard merged
 * into a handle opened without a key); their key id and first keyed seq are
 * recorded in the merge event so that verifying the merged store with the
 * key recomputes their keyed chains. */
typedef struct {
    int already;                    /* 1: this shard's head was merged before: nothing added */
    int empty;                      /* 1: the shard has no rows: nothing added */
    int64_t rows_added;
    int64_t from_seq;               /* rows after this shard seq were added (0: all) */
    int64_t merge_seq;              /* seq of the merge event row (of the earlier one when already) */
    int64_t shard_head_seq;
    char shard_head_hash[CXR_AUDIT_HASH_HEX];
    cxr_audit_problem problem;      /* why the shard was refused */
} cxr_audit_merge_result;
int cxr_audit_merge(cxr_audit *a, const char *shard_path, cxr_audit_merge_result *res, char *err, size_t errlen);

#ifdef __cplusplus
}
#endif
#endif /* CXR_AUDIT_H */
