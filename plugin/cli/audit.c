/*
 * audit.c — `cxrvqa audit verify|export|show`: argument parsing, the
 * JSON-lines and DICOM PS3.15 (RFC 3881) AuditMessage XML exports and the
 * plain text summary, all over the public audit API (audit.h). It opens the
 * store read-only and never writes to it; it prints, and returns an exit
 * status instead of exiting (cli.c calls it).
 *
 * Exit status: 0 done / intact, 1 tampered, 2 usage, 3 the database could
 * not be read or the output not written, 4 a keyed chain that could not be
 * checked (no --key).
 */
#define _GNU_SOURCE /* realpath */
#include "audit.h"
#include "cli.h"
#include "args.h"

#include <errno.h>
#include <limits.h>
#include <fcntl.h>
#include <stdio.h>
#include <stdlib.h>
#include <string.h>
#include <unistd.h>

#define EXIT_TAMPERED 1
#define EXIT_USAGE 2
#define EXIT_IO 3
#define EXIT_UNVERIFIED 4
#define SHOW_DEFAULT_LIMIT 20
#define SHOW_QUESTION_BYTES 60
#define SHOW_FIELD_BYTES 120

static void usage(FILE *f) {
    fprintf(f,
            "usage: cxrvqa audit <command> [options]\n"
            "\n"
            "  verify [--db FILE] [--key KEY]... [--anchors LOG]\n"
            "      Check the hash chain of every row. Exit 0 intact, 1 tampered (the row is named).\n"
            "      With --anchors: also that the store still holds every head anchored in LOG (a\n"
            "      chain rebuilt after an edit does not).\n"
            "      With --key: the store must be keyed with KEY, and every keyed row's HMAC is checked;\n"
            "      a store whose key was rotated needs every key it has had (--key once for each).\n"
            "      A keyed store verified without its keys: exit 4 (those rows' content not checked).\n"
            "  keygen KEY\n"
            "      Create a new audit chain key: 32 random bytes in KEY, mode 0600 (never overwritten).\n"
            "  key --db FILE --key KEY\n"
            "      Key an existing unkeyed store from its next row on (an audit-keyed event row; the rows\n"
            "      before it stay SHA-256). An empty store is keyed by its first write with --audit-key.\n"
            "  rotate-key [--db FILE] --key KEY --new-key NEW\n"
            "      Retire KEY (the current key): an audit-rekeyed event row, the last under KEY, names\n"
            "      NEW's key id; from the next row on the chain is under NEW. Every writer needs NEW from\n"
            "      then on; keep KEY: verifying the rows written under it needs it.\n"
            "  anchor [--db FILE] --anchors LOG\n"
            "      Append the chain head, its row count and the time to LOG (kept elsewhere, only\n"
            "      appended to) and print the line.\n"
            "  export [--db FILE] [--since ISO8601] [--study UID] [--format jsonl|dicom-xml] [--out FILE]\n"
            "      Write rows in seq order: one JSON object per line (default), or DICOM PS3.15\n"
            "      AuditMessage XML (one <AuditMessage> per row inside <AuditMessages>).\n"
            "      --since 2024-05-01[T10:00[:00[.000]]][Z] (UTC)\n"
            "  show [--db FILE] [--study UID] [--limit N]\n"
            "      The newest N rows (default %d) as text.\n"
            "  merge [--key KEY] --out MERGED.sqlite SHARD.sqlite...\n"
            "      Check every shard's chain (a tampered or cut shard is named and nothing is merged),\n"
            "      then append each shard's rows to MERGED with their origin (shard file, its chain\n"
            "      head, the row's seq there) in MERGED's own chain. A shard merged before adds nothing.\n"
            "      `audit verify --db MERGED` then also proves every shard's rows against its head.\n"
            "      --key: keyed shards are checked under KEY and MERGED is keyed with it.\n"
            "\n"
            "The database is --db, else $CXRVQA_DB, else $XDG_STATE_HOME/cxrvqa/audit.sqlite,\n"
            "else ~/.local/state/cxrvqa/audit.sqlite.\n"
            "Exit status: 0 done, 1 tampered, 2 usage, 3 database unreadable or output not written,\n"
            "4 keyed chain not checked (no --key).\n",
            SHOW_DEFAULT_LIMIT);
}

typedef struct {
    const char *db, *since, *study, *format, *out, *anchors, *key, *new_key;
    const char *keys[CXR_AUDIT_VERIFY_KEYS_MAX]; /* every --key (verify takes several) */
    int nkeys;
    long long limit;
} opts;

static int add_key(void *ctx, const char *v) {
    opts *o = ctx;
    if (o->nkeys == CXR_AUDIT_VERIFY_KEYS_MAX) return -1;
    o->keys[o->nkeys++] = v;
    if (!o->key) o->key = v;
    return 0;
}

static int set_limit(void *ctx, const char *v) {
    char *end;
    errno = 0;
    long long n = strtoll(v, &end, 10);
    if (errno || end == v || *end || n <= 0) return -1;
    *(long long *)ctx = n;
    return 0;
}

/* The options of one audit command (verify: --db; export: --db --since
 * --study --format --out; show: --db --study --limit). CLI_ARGS_* */
static int parse(const char *cmd, int argc, char **argv, opts *o) {
    cli_opt all[] = {CLI_OPT_STR("--db", &o->db),         CLI_OPT_STR("--since", &o->since),
                     CLI_OPT_STR("--study", &o->study),   CLI_OPT_STR("--format", &o->format),
                     CLI_OPT_STR("--out", &o->out),       CLI_OPT_CALL("--limit", set_limit, &o->limit),
                     CLI_OPT_STR("--anchors", &o->anchors), CLI_OPT_CALL("--key", add_key, o),
                     CLI_OPT_STR("--new-key", &o->new_key), CLI_OPT_END};
    const char *allowed = !strcmp(cmd, "verify")       ? " --db --anchors --key "
                          : !strcmp(cmd, "key")        ? " --db --key "
                          : !strcmp(cmd, "rotate-key") ? " --db --key --new-key "
                          : !strcmp(cmd, "anchor") ? " --db --anchors "
                          : !strcmp(cmd, "export") ? " --db --since --study --format --out "
                                                   : " --db --study --limit ";
    cli_opt mine[sizeof all / sizeof all[0]];
    int k = 0;
    for (int i = 0; all[i].name; i++) {
        char key[24];
        snprintf(key, sizeof key, " %s ", all[i].name);
        if (strstr(allowed, key)) mine[k++] = all[i];
    }
    mine[k] = all[sizeof all / sizeof all[0] - 1];
    char name[32];
    snprintf(name, sizeof name, "audit %s", cmd);
    int n;
    int rc = cli_args(name, mine, argc, argv, NULL, 0, &n, usage);
    if (rc == CLI_ARGS_OK && o->nkeys > 1 && strcmp(cmd, "verify") != 0) {
        fprintf(stderr, "cxrvqa: %s: --key is given once here (verify takes one per key the chain has had)\n", name);
        return CLI_ARGS_BAD;
    }
    return rc;
}

static const char *db_path(opts *o, char *buf, size_t n) {
    if (o->db) return o->db;
    const char *p = cxr_audit_default_path(buf, n);
    if (!p) fprintf(stderr, "cxrvqa: audit: no --db and no home directory to find the default database in\n");
    return p;
}

static const char *problem_name(cxr_audit_problem p) {
    switch (p) {
    case CXR_AUDIT_EDITED: return "edited";
    case CXR_AUDIT_DELETED: return "deleted";
    case CXR_AUDIT_REORDERED: return "reordered";
    case CXR_AUDIT_INSERTED: return "inserted";
    case CXR_AUDIT_TRUNCATED: return "truncated";
    case CXR_AUDIT_SHARD_MISMATCH: return "shard mismatch";
    case CXR_AUDIT_KEY_MISMATCH: return "key mismatch";
    case CXR_AUDIT_UNVERIFIED: return "keyed, not checked";
    default: return "intact";
    }
}

/* ------------------------------------------------------------------------
 * verify
 * ---------------------------------------------------------------------- */

static int cmd_verify(const char *db, const char *anchors, const char *const *keys, int nkeys) {
    cxr_audit_verify_result res;
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_audit_verify_keys(db, keys, nkeys, &res, err, sizeof err);
    if (rc != CXR_OK && res.problem == CXR_AUDIT_INTACT && nkeys && (rc == CXR_ERR_ARG || rc == CXR_ERR_IO)) {
        fprintf(stderr, "cxrvqa: audit verify: --key: %s\n", err);
        return rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
    }
    if (rc != CXR_OK && res.problem == CXR_AUDIT_UNVERIFIED) {
        /* no key: say what was and was not proven; anchors still say whether the heads are the anchored ones */
        fprintf(stderr, "cxrvqa: %s: NOT VERIFIED: %s\n", db, res.detail);
        if (anchors) {
            int n = 0;
            int arc = cxr_audit_verify_anchors(db, anchors, &n, err, sizeof err);
            if (arc == CXR_ERR_DB) {
                fprintf(stderr, "cxrvqa: %s: TAMPERED (rewritten): %s\n", db, err);
                return EXIT_TAMPERED;
            }
            if (arc != CXR_OK) {
                fprintf(stderr, "cxrvqa: %s\n", err);
                return EXIT_IO;
            }
            fprintf(stderr, "cxrvqa: %s: holds all %d anchored heads of %s, but without the key the rows' content "
                            "is not proven to match them\n", db, n, anchors);
        }
        return EXIT_UNVERIFIED;
    }
    if (rc == CXR_OK && anchors) { /* the chain holds; does it still hold every anchored head? */
        int n = 0;
        rc = cxr_audit_verify_anchors(db, anchors, &n, err, sizeof err);
        if (rc == CXR_ERR_DB) {
            fprintf(stderr, "cxrvqa: %s: TAMPERED (rewritten): %s\n", db, err);
            return EXIT_TAMPERED;
        }
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: %s\n", err);
            return EXIT_IO;
        }
        printf("%s: extends all %d anchored heads of %s\n", db, n, anchors);
    }
    if (rc == CXR_OK) {
        printf("%s: intact: %lld rows, chain head seq %lld %s %s (verified in %.3f s)\n", db, (long long)res.rows,
               (long long)res.head_seq, res.keyed ? "hmac-sha256" : "sha256", res.head_hash, res.seconds);
        if (res.keyed && res.key_count > 1)
            printf("%s: keyed: rows from seq %lld on are HMAC-SHA-256 under %d keys in turn (rotated; now key id "
                   "%s), each row checked with its key\n",
                   db, (long long)res.keyed_from, res.key_count, res.key_id);
        else if (res.keyed)
            printf("%s: keyed: rows from seq %lld on are HMAC-SHA-256 under key id %s, checked with the key\n", db,
                   (long long)res.keyed_from, res.key_id);
        if (res.merged)
            printf("%s: merged store: %lld shard merge%s holding %lld shard rows, each shard's rows recompute to its "
                   "recorded head\n",
                   db, (long long)res.merges, res.merges == 1 ? "" : "s", (long long)res.merged_rows);
        if (res.triggers_missing)
            fprintf(stderr, "cxrvqa: %s: warning: the append-only triggers have been dropped\n", db);
        return 0;
    }
    if (res.problem != CXR_AUDIT_INTACT) {
        fprintf(stderr, "cxrvqa: %s: TAMPERED (%s): %s\n", db, problem_name(res.problem), res.detail);
        return EXIT_TAMPERED;
    }
    fprintf(stderr, "cxrvqa: %s: %s\n", db, err);
    return EXIT_IO;
}

/* ------------------------------------------------------------------------
 * XML (DICOM PS3.15 A.5 AuditMessage)
 * ---------------------------------------------------------------------- */

/* Length of the valid UTF-8 sequence at p (not U+FFFE/U+FFFF), 0 if invalid. */
static size_t utf8_len(const unsigned char *p) {
    if (p[0] < 0x80) return 1;
    if (p[0] >= 0xC2 && p[0] <= 0xDF) return (p[1] & 0xC0) == 0x80 ? 2 : 0;
    if (p[0] >= 0xE0 && p[0] <= 0xEF) {
        if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80) return 0;
        if ((p[0] == 0xE0 && p[1] < 0xA0) || (p[0] == 0xED && p[1] > 0x9F)) return 0;
        if (p[0] == 0xEF && p[1] == 0xBF && (p[2] == 0xBE || p[2] == 0xBF)) return 0;
        return 3;
    }
    if (p[0] >= 0xF0 && p[0] <= 0xF4) {
        if ((p[1] & 0xC0) != 0x80 || (p[2] & 0xC0) != 0x80 || (p[3] & 0xC0) != 0x80) return 0;
        if ((p[0] == 0xF0 && p[1] < 0x90) || (p[0] == 0xF4 && p[1] > 0x8F)) return 0;
        return 4;
    }
    return 0;
}

/* s escaped for XML text or attribute values; characters XML 1.0 cannot
 * carry (controls, invalid UTF-8) become U+FFFD. */
static void xml_put(FILE *f, const char *s) {
    const unsigned char *p = (const unsigned char *)s;
    while (*p) {
        switch (*p) {
        case '&': fputs("&amp;", f); p++; continue;
        case '<': fputs("&lt;", f); p++; continue;
        case '>': fputs("&gt;", f); p++; continue;
        case '"': fputs("&quot;", f); p++; continue;
        case '\'': fputs("&apos;", f); p++; continue;
        case '\t': fputs("&#9;", f); p++; continue;
        case '\n': fputs("&#10;", f); p++; continue;
        case '\r': fputs("&#13;", f); p++; continue;
        default: break;
        }
        size_t k = *p < 0x20 ? 0 : utf8_len(p);
        if (k) fwrite(p, 1, k, f);
        else fputs("\xEF\xBF\xBD", f);
        p += k ? k : 1;
    }
}

static void xml_attr(FILE *f, const char *name, const char *v) {
    if (!v) return;
    fprintf(f, " %s=\"", name);
    xml_put(f, v);
    fputc('"', f);
}

static void b64_put(FILE *f, const char *s) {
    static const char t[] = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/";
    const unsigned char *p = (const unsigned char *)s;
    size_t n = strlen(s);
    for (size_t i = 0; i < n; i += 3) {
        unsigned v = (unsigned)p[i] << 16 | (i + 1 < n ? (unsigned)p[i + 1] << 8 : 0) | (i + 2 < n ? p[i + 2] : 0);
        fputc(t[v >> 18 & 63], f);
        fputc(t[v >> 12 & 63], f);
        fputc(i + 1 < n ? t[v >> 6 & 63] : '=', f);
        fputc(i + 2 < n ? t[v & 63] : '=', f);
    }
}

static const char *event_name(int id) {
    switch (id) {
    case CXR_AUDIT_EV_APPLICATION_ACTIVITY: return "Application Activity";
    case CXR_AUDIT_EV_INSTANCES_ACCESSED: return "DICOM Instances Accessed";
    case CXR_AUDIT_EV_EXPORT: return "Export";
    case CXR_AUDIT_EV_QUERY: return "Query";
    case CXR_AUDIT_EV_SECURITY_ALERT: return "Security Alert";
    default: return NULL;
    }
}

static int xml_row(const cxr_audit_row *row, void *ctx) {
    FILE *f = ctx;
    const cxr_audit_record *r = &row->rec;
    char num[32];
    fputs(" <AuditMessage>\n  <EventIdentification", f);
    xml_attr(f, "EventActionCode", r->event_action ? r->event_action : "E");
    xml_attr(f, "EventDateTime", row->time_utc);
    snprintf(num, sizeof num, "%d", r->outcome);
    xml_attr(f, "EventOutcomeIndicator", num);
    fputs(">\n   <EventID", f);
    snprintf(num, sizeof num, "%d", r->event_id);
    xml_attr(f, "csd-code", num);
    xml_attr(f, "codeSystemName", "DCM");
    xml_attr(f, "originalText", event_name(r->event_id) ? event_name(r->event_id) : r->event_type);
    fputs("/>\n   <EventTypeCode", f);
    xml_attr(f, "csd-code", r->event_type);
    xml_attr(f, "codeSystemName", "99CXRVQA");
    xml_attr(f, "originalText", r->event_type);
    fputs("/>\n", f);
    if (r->reason || r->error_code) {
        fputs("   <EventOutcomeDescription>", f);
        if (r->error_code) {
            xml_put(f, cxr_strerror(r->error_code));
            if (r->reason) fputs(": ", f);
        }
        if (r->reason) xml_put(f, r->reason);
        fputs("</EventOutcomeDescription>\n", f);
    }
    fputs("  </EventIdentification>\n", f);

    /* the person (or calling system) who asked */
    fputs("  <ActiveParticipant", f);
    xml_attr(f, "UserID", r->user ? r->user : "unknown");
    xml_attr(f, "UserIsRequestor", "true");
    xml_attr(f, "NetworkAccessPointID", r->host);
    if (r->host) xml_attr(f, "NetworkAccessPointTypeCode", "1");
    fputs("/>\n", f);
    /* the application that answered */
    fputs("  <ActiveParticipant", f);
    xml_attr(f, "UserID", r->application ? r->application : "cxrvqa");
    snprintf(num, sizeof num, "%lld", (long long)r->pid);
    if (r->pid) xml_attr(f, "AlternativeUserID", num);
    xml_attr(f, "UserName", "cxrvqa");
    xml_attr(f, "UserIsRequestor", "false");
    xml_attr(f, "NetworkAccessPointID", r->host);
    if (r->host) xml_attr(f, "NetworkAccessPointTypeCode", "1");
    fputs(">\n   <RoleIDCode csd-code=\"110150\" codeSystemName=\"DCM\" originalText=\"Application\"/>\n"
          "  </ActiveParticipant>\n",
          f);

    fputs("  <AuditSourceIdentification", f);
    xml_attr(f, "AuditSourceID", r->host ? r->host : "cxrvqa");
    fputs(">\n   <AuditSourceTypeCode csd-code=\"4\" codeSystemName=\"DCM\""
          " originalText=\"Application Server process tier in a multi-tier system\"/>\n"
          "  </AuditSourceIdentification>\n",
          f);

    if (r->patient_id) {
        fputs("  <ParticipantObjectIdentification", f);
        xml_attr(f, "ParticipantObjectID", r->patient_id);
        fputs(" ParticipantObjectTypeCode=\"1\" ParticipantObjectTypeCodeRole=\"1\">\n"
              "   <ParticipantObjectIDTypeCode csd-code=\"2\" codeSystemName=\"RFC-3881\" originalText=\"Patient Number\"/>\n",
              f);
        if (strncmp(r->patient_id, "hmac:", 5) == 0) fputs("   <Anonymized>true</Anonymized>\n", f);
        fputs("  </ParticipantObjectIdentification>\n", f);
    }
    if (r->study_uid) {
        fputs("  <ParticipantObjectIdentification", f);
        xml_attr(f, "ParticipantObjectID", r->study_uid);
        fputs(" ParticipantObjectTypeCode=\"2\" ParticipantObjectTypeCodeRole=\"3\">\n"
              "   <ParticipantObjectIDTypeCode csd-code=\"110180\" codeSystemName=\"DCM\" originalText=\"Study Instance UID\"/>\n",
              f);
        if (r->sop_uid && !r->sop_class_uid) {
            fputs("   <ParticipantObjectDetail type=\"SOPInstanceUID\" value=\"", f);
            b64_put(f, r->sop_uid);
            fputs("\"/>\n", f);
        }
        if (r->series_uid) {
            fputs("   <ParticipantObjectDetail type=\"SeriesInstanceUID\" value=\"", f);
            b64_put(f, r->series_uid);
            fputs("\"/>\n", f);
        }
        if (r->sop_uid && r->sop_class_uid) {
            fputs("   <SOPClass", f);
            xml_attr(f, "UID", r->sop_class_uid);
            fputs(" NumberOfInstances=\"1\">\n    <Instance", f);
            xml_attr(f, "UID", r->sop_uid);
            fputs("/>\n   </SOPClass>\n", f);
        }
        if (r->accession) {
            fputs("   <Accession", f);
            xml_attr(f, "Number", r->accession);
            fputs("/>\n", f);
        }
        fputs("  </ParticipantObjectIdentification>\n", f);
    }
    fputs(" </AuditMessage>\n", f);
    return ferror(f) ? EXIT_IO : 0;
}

static int jsonl_row(const cxr_audit_row *row, void *ctx) {
    FILE *f = ctx;
    char *s = cxr_audit_row_json(row);
    if (!s) return CXR_ERR_NOMEM;
    fputs(s, f);
    fputc('\n', f);
    free(s);
    return ferror(f) ? EXIT_IO : 0;
}

/* ------------------------------------------------------------------------
 * export, show, anchor
 * ---------------------------------------------------------------------- */

static int open_ro(const char *db, cxr_audit **a) {
    cxr_audit_params p = cxr_audit_params_default();
    p.read_only = 1;
    char err[CXR_ERRMSG_MAX];
    if (cxr_audit_open(db, &p, a, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", err);
        return EXIT_IO;
    }
    return 0;
}

/* Append the current head to the anchor log and print the line (for a
 * ticket, a syslog, a second disk). */
static int cmd_anchor(const char *db, const char *anchors) {
    if (!anchors) {
        fprintf(stderr, "cxrvqa audit anchor: --anchors FILE is required\n");
        return EXIT_USAGE;
    }
    cxr_audit *a = NULL;
    int rc = open_ro(db, &a);
    if (rc) return rc;
    char line[256], err[CXR_ERRMSG_MAX];
    rc = cxr_audit_anchor(a, anchors, line, sizeof line, err, sizeof err);
    cxr_audit_close(a);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", err);
        return EXIT_IO;
    }
    puts(line);
    return fflush(stdout) == 0 ? 0 : EXIT_IO;
}

static int cmd_export(const char *db, const opts *o) {
    int xml = 0;
    if (o->format && strcmp(o->format, "dicom-xml") == 0) xml = 1;
    else if (o->format && strcmp(o->format, "jsonl") != 0) {
        fprintf(stderr, "cxrvqa: audit export: --format is jsonl or dicom-xml, not '%s'\n", o->format);
        return EXIT_USAGE;
    }
    cxr_audit *a = NULL;
    if (open_ro(db, &a)) return EXIT_IO;
    FILE *f = stdout;
    if (o->out) {
        /* the export holds what the database holds: same 0600 */
        int fd = open(o->out, O_WRONLY | O_CREAT | O_TRUNC | O_CLOEXEC, 0600);
        f = fd >= 0 ? fdopen(fd, "w") : NULL;
        if (!f) {
            fprintf(stderr, "cxrvqa: %s: %s\n", o->out, strerror(errno));
            if (fd >= 0) close(fd);
            cxr_audit_close(a);
            return EXIT_IO;
        }
    }
    if (xml) fputs("<?xml version=\"1.0\" encoding=\"UTF-8\"?>\n<AuditMessages>\n", f);
    cxr_audit_filter flt = {o->study, o->since, 0, 0};
    char err[CXR_ERRMSG_MAX];
    int rc = cxr_audit_scan(a, &flt, xml ? xml_row : jsonl_row, f, err, sizeof err);
    if (xml && rc == CXR_OK) fputs("</AuditMessages>\n", f);
    int werr = fflush(f) != 0 || ferror(f);
    if (f != stdout && fclose(f) != 0) werr = 1;
    cxr_audit_close(a);
    if (rc == CXR_ERR_ARG) {
        fprintf(stderr, "cxrvqa: audit export: %s\n", err);
        return EXIT_USAGE;
    }
    if (rc == EXIT_IO || werr) {
        fprintf(stderr, "cxrvqa: %s: cannot write the export\n", o->out ? o->out : "stdout");
        return EXIT_IO;
    }
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", rc == CXR_ERR_NOMEM ? "out of memory" : err);
        return EXIT_IO;
    }
    return 0;
}

/* s made printable for one line of text: controls become spaces, invalid
 * UTF-8 '?', cut at max bytes on a character boundary (with "..."). */
static const char *printable(const char *s, size_t max, char *buf) {
    if (!s) return "-";
    const unsigned char *p = (const unsigned char *)s;
    size_t w = 0;
    while (*p) {
        size_t k = *p < 0x20 || *p == 0x7f ? 0 : utf8_len(p);
        if (w + (k ? k : 1) > max) {
            strcpy(buf + w, "...");
            return buf;
        }
        if (k) memcpy(buf + w, p, k);
        else buf[w] = *p < 0x80 ? ' ' : '?';
        w += k ? k : 1;
        p += k ? k : 1;
    }
    buf[w] = 0;
    return buf;
}

static int show_row(const cxr_audit_row *row, void *ctx) {
    (void)ctx;
    const cxr_audit_record *r = &row->rec;
    char b1[SHOW_FIELD_BYTES + 4], b2[SHOW_FIELD_BYTES + 4], b3[SHOW_FIELD_BYTES + 4], b4[SHOW_FIELD_BYTES + 4];
    char b5[SHOW_FIELD_BYTES + 4], bq[SHOW_QUESTION_BYTES + 4];
    printf("%6lld  %-24s  %-14s %2d  %-9s %-12s %s  \"%s\"\n", (long long)row->seq,
           printable(row->time_utc, SHOW_FIELD_BYTES, b1), printable(r->event_type, 14, b2), r->outcome,
           printable(r->answer, 9, b3), printable(r->user, 12, b4), printable(r->study_uid, 64, b5),
           printable(r->question, SHOW_QUESTION_BYTES, bq));
    if (r->reason) printf("        reason: %s\n", printable(r->reason, SHOW_FIELD_BYTES, b1));
    return 0;
}

static int cmd_show(const char *db, const opts *o) {
    cxr_audit *a = NULL;
    if (open_ro(db, &a)) return EXIT_IO;
    char err[CXR_ERRMSG_MAX], hash[CXR_AUDIT_HASH_HEX];
    int64_t head = 0;
    int rc = cxr_audit_head(a, &head, hash, err, sizeof err);
    if (rc == CXR_OK) {
        long long lim = o->limit > 0 ? o->limit : SHOW_DEFAULT_LIMIT;
        printf("%s: %lld rows (chain head seq %lld); newest %lld%s%s first\n", db, (long long)head, (long long)head,
               lim, o->study ? " of study " : "", o->study ? o->study : "");
        printf("%6s  %-24s  %-14s %2s  %-9s %-12s %s  %s\n", "seq", "time (UTC)", "event", "oc", "answer", "user",
               "study", "question");
        cxr_audit_filter f = {o->study, NULL, lim, 1};
        rc = cxr_audit_scan(a, &f, show_row, NULL, err, sizeof err);
    }
    cxr_audit_close(a);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: %s\n", err);
        return EXIT_IO;
    }
    return fflush(stdout) == 0 ? 0 : EXIT_IO;
}

/* ------------------------------------------------------------------------
 * merge
 * ---------------------------------------------------------------------- */

static void usage_merge(FILE *f) {
    fprintf(f, "usage: cxrvqa audit merge [--key KEY] --out MERGED.sqlite SHARD.sqlite...\n"
               "  Every shard's chain is checked first; one that is tampered or cut is named and nothing\n"
               "  is merged. Each shard's rows are then appended to MERGED (created if missing, on a local\n"
               "  disk) with their origin; a shard whose head is already there adds nothing.\n"
               "  --key KEY: keyed shards must be keyed with KEY (their HMACs are checked); MERGED is keyed\n"
               "  with it (created keyed; an existing MERGED must be keyed with KEY). Unkeyed shards merge too.\n"
               "Exit status: 0 merged, 1 a shard is tampered, 2 usage, 3 unreadable or not written.\n");
}

static int cmd_merge(int argc, char **argv) {
    const char *out = NULL, *key = NULL;
    const char **pos = calloc((size_t)argc + 1, sizeof *pos);
    if (!pos) return EXIT_IO;
    int n = 0;
    const cli_opt o[] = {CLI_OPT_STR("--out", &out), CLI_OPT_STR("--key", &key), CLI_OPT_END};
    int rc = cli_args("audit merge", o, argc, argv, pos, argc, &n, usage_merge);
    if (rc != CLI_ARGS_OK) {
        free(pos);
        return rc == CLI_ARGS_HELP ? 0 : EXIT_USAGE;
    }
    if (!out || !n) {
        fprintf(stderr, "cxrvqa audit merge: %s\n", !out ? "--out MERGED.sqlite is required" : "name at least one shard");
        usage_merge(stderr);
        free(pos);
        return EXIT_USAGE;
    }
    char err[CXR_ERRMSG_MAX];
    char(*abs)[4096] = calloc((size_t)n, sizeof *abs);
    if (!abs) {
        free(pos);
        return EXIT_IO;
    }
    /* every shard first: one bad shard and nothing is written */
    int bad = 0;
    for (int i = 0; i < n; i++) {
        if (!realpath(pos[i], abs[i])) {
            fprintf(stderr, "cxrvqa: audit merge: shard %s: %s\n", pos[i], strerror(errno));
            bad = bad ? bad : EXIT_IO;
            continue;
        }
        cxr_audit_verify_result vr;
        rc = cxr_audit_verify_key(abs[i], key, &vr, err, sizeof err);
        if (rc != CXR_OK && vr.problem == CXR_AUDIT_KEY_MISMATCH && !vr.keyed) /* an unkeyed shard: its own chain */
            rc = cxr_audit_verify(abs[i], &vr, err, sizeof err);
        if (rc == CXR_OK) continue;
        if (key && vr.problem == CXR_AUDIT_INTACT && (rc == CXR_ERR_ARG || rc == CXR_ERR_IO)) {
            fprintf(stderr, "cxrvqa: audit merge: --key: %s\n", err);
            bad = rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
            break;
        }
        if (vr.key_count > 1) {
            fprintf(stderr, "cxrvqa: audit merge: shard %s had its chain key rotated (%d keys): merge takes shards "
                            "written under one key\n", pos[i], vr.key_count);
            bad = bad ? bad : EXIT_USAGE;
        } else if (vr.problem == CXR_AUDIT_UNVERIFIED) {
            fprintf(stderr, "cxrvqa: audit merge: shard %s is keyed (key id %s): give its key with --key KEY\n", pos[i],
                    vr.key_id);
            bad = bad ? bad : EXIT_USAGE;
        } else if (vr.problem != CXR_AUDIT_INTACT) {
            fprintf(stderr, "cxrvqa: audit merge: shard %s: TAMPERED (%s): %s\n", pos[i], problem_name(vr.problem),
                    vr.detail);
            bad = EXIT_TAMPERED;
        } else {
            fprintf(stderr, "cxrvqa: audit merge: shard %s: %s\n", pos[i], err);
            bad = bad ? bad : EXIT_IO;
        }
    }
    if (bad) {
        fprintf(stderr, "cxrvqa: audit merge: nothing merged into %s\n", out);
        free(abs);
        free(pos);
        return bad;
    }
    cxr_audit *a = NULL;
    cxr_audit_params ap = cxr_audit_params_default();
    ap.chain_key_file = key;
    if (cxr_audit_open(out, &ap, &a, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit merge: %s\n", err);
        free(abs);
        free(pos);
        return EXIT_IO;
    }
    int status = 0;
    int64_t total = 0;
    for (int i = 0; i < n && !status; i++) {
        cxr_audit_merge_result mr;
        rc = cxr_audit_merge(a, abs[i], &mr, err, sizeof err);
        if (rc != CXR_OK) {
            fprintf(stderr, "cxrvqa: audit merge: %s\n", err);
            status = rc == CXR_ERR_DB && mr.problem != CXR_AUDIT_INTACT ? EXIT_TAMPERED : rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
        } else if (mr.empty) {
            printf("%s: empty shard: nothing to merge\n", pos[i]);
        } else if (mr.already) {
            printf("%s: already merged (merge seq %lld holds its head, seq %lld sha256 %s): nothing added\n", pos[i],
                   (long long)mr.merge_seq, (long long)mr.shard_head_seq, mr.shard_head_hash);
        } else {
            total += mr.rows_added;
            printf("%s: merged %lld rows (shard seq %lld to %lld, head sha256 %s) as merge seq %lld\n", pos[i],
                   (long long)mr.rows_added, (long long)mr.from_seq + 1, (long long)mr.shard_head_seq,
                   mr.shard_head_hash, (long long)mr.merge_seq);
        }
    }
    int64_t hs = 0;
    char hh[CXR_AUDIT_HASH_HEX];
    if (!status && cxr_audit_head(a, &hs, hh, err, sizeof err) == CXR_OK)
        printf("%s: %lld rows added from %d shard%s; chain head seq %lld sha256 %s\n", out, (long long)total, n,
               n == 1 ? "" : "s", (long long)hs, hh);
    cxr_audit_close(a);
    free(abs);
    free(pos);
    return status ? status : (fflush(stdout) == 0 ? 0 : EXIT_IO);
}

/* ------------------------------------------------------------------------
 * keygen, key
 * ---------------------------------------------------------------------- */

static int cmd_keygen(int argc, char **argv) {
    if (argc != 1 || argv[0][0] == '-') {
        fprintf(stderr, "usage: cxrvqa audit keygen KEY\n"
                        "  Writes 32 random bytes to the new file KEY (mode 0600) and prints its key id.\n");
        return argc == 1 && (!strcmp(argv[0], "-h") || !strcmp(argv[0], "--help")) ? 0 : EXIT_USAGE;
    }
    char id[CXR_AUDIT_KEY_ID_HEX], err[CXR_ERRMSG_MAX];
    int rc = cxr_audit_keygen(argv[0], id, err, sizeof err);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit keygen: %s\n", err);
        return rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
    }
    printf("%s: new audit chain key, key id %s (keep it off the database's disk; back it up: without it the keyed "
           "rows cannot be verified)\n", argv[0], id);
    return fflush(stdout) == 0 ? 0 : EXIT_IO;
}

/* Key an existing store from its next row on (an empty one: from seq 1). */
static int cmd_key(const char *db, const char *key) {
    if (!key) {
        fprintf(stderr, "cxrvqa audit key: --key KEY is required\n");
        return EXIT_USAGE;
    }
    cxr_audit_params p = cxr_audit_params_default();
    p.chain_key_file = key;
    p.key_existing = 1;
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX], hash[CXR_AUDIT_HASH_HEX];
    int rc = cxr_audit_open(db, &p, &a, err, sizeof err);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit key: %s\n", err);
        return rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
    }
    cxr_audit_close(a);
    cxr_audit_verify_result res;
    rc = cxr_audit_verify_key(db, key, &res, err, sizeof err);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit key: %s: %s\n", db, err);
        return res.problem != CXR_AUDIT_INTACT ? EXIT_TAMPERED : EXIT_IO;
    }
    memcpy(hash, res.head_hash, sizeof hash);
    printf("%s: keyed with key id %s from seq %lld on; chain head seq %lld sha256/hmac %s\n", db, res.key_id,
           (long long)res.keyed_from, (long long)res.head_seq, hash);
    return fflush(stdout) == 0 ? 0 : EXIT_IO;
}

/* Retire the current key for a new one. */
static int cmd_rotate(const char *db, const char *key, const char *new_key) {
    if (!key || !new_key) {
        fprintf(stderr, "cxrvqa audit rotate-key: --key KEY (the current key) and --new-key NEW are required\n");
        return EXIT_USAGE;
    }
    cxr_audit_params p = cxr_audit_params_default();
    p.chain_key_file = key;
    cxr_audit *a = NULL;
    char err[CXR_ERRMSG_MAX], old_id[CXR_AUDIT_KEY_ID_HEX], new_id[CXR_AUDIT_KEY_ID_HEX];
    if (cxr_audit_key_id(key, old_id, err, sizeof err) != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit rotate-key: --key: %s\n", err);
        return EXIT_USAGE;
    }
    int rc = cxr_audit_open(db, &p, &a, err, sizeof err);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit rotate-key: %s\n", err);
        return rc == CXR_ERR_ARG ? EXIT_USAGE : EXIT_IO;
    }
    int64_t seq = 0;
    rc = cxr_audit_rotate_key(a, new_key, &seq, new_id, err, sizeof err);
    cxr_audit_close(a);
    if (rc != CXR_OK) {
        fprintf(stderr, "cxrvqa: audit rotate-key: %s\n", err);
        return rc == CXR_ERR_ARG ? EXIT_USAGE : rc == CXR_ERR_DB ? EXIT_TAMPERED : EXIT_IO;
    }
    printf("%s: chain key rotated: row seq %lld (audit-rekeyed) is the last under key id %s; from seq %lld on the "
           "rows are under key id %s. Give every writer the new key file; keep the old one: verifying the rows "
           "before needs it (audit verify --key OLD --key NEW)\n",
           db, (long long)seq, old_id, (long long)seq + 1, new_id);
    return fflush(stdout) == 0 ? 0 : EXIT_IO;
}

int cli_audit(int argc, char **argv) {
    if (argc < 2 || strcmp(argv[1], "-h") == 0 || strcmp(argv[1], "--help") == 0) {
        usage(argc < 2 ? stderr : stdout);
        return argc < 2 ? EXIT_USAGE : 0;
    }
    const char *cmd = argv[1];
    if (strcmp(cmd, "merge") == 0) return cmd_merge(argc - 2, argv + 2);
    if (strcmp(cmd, "keygen") == 0) return cmd_keygen(argc - 2, argv + 2);
    if (strcmp(cmd, "verify") && strcmp(cmd, "export") && strcmp(cmd, "show") && strcmp(cmd, "anchor") &&
        strcmp(cmd, "key") && strcmp(cmd, "rotate-key")) {
        fprintf(stderr, "cxrvqa: audit: unknown command '%s'\n", cmd);
        usage(stderr);
        return EXIT_USAGE;
    }
    opts o = {0};
    int rc = parse(cmd, argc - 2, argv + 2, &o);
    if (rc != CLI_ARGS_OK) return rc == CLI_ARGS_HELP ? 0 : EXIT_USAGE;
    char buf[4096];
    const char *db = db_path(&o, buf, sizeof buf);
    if (!db) return EXIT_USAGE;
    if (strcmp(cmd, "verify") == 0) return cmd_verify(db, o.anchors, o.keys, o.nkeys);
    if (strcmp(cmd, "key") == 0) return cmd_key(db, o.key);
    if (strcmp(cmd, "rotate-key") == 0) return cmd_rotate(db, o.key, o.new_key);
    if (strcmp(cmd, "anchor") == 0) return cmd_anchor(db, o.anchors);
    if (strcmp(cmd, "export") == 0) return cmd_export(db, &o);
    return cmd_show(db, &o);
}
