#!/usr/bin/python3
"""test_audit_keyed.py — the keyed audit chain (HMAC-SHA-256 under a key file), with the real `cxrvqa`.

  1. `audit keygen`: 32 bytes, 0600, key id = first 16 hex of SHA-256 of the key (computed here), never
     overwritten.
  2. A store written with --audit-key is keyed from seq 1 (an audit-keyed event row, the key id in meta);
     every row's hash is recomputed HERE with Python's hmac module over the documented serialisation
     and must equal the stored one (and differ from the unkeyed SHA-256).
  3. verify --key: 0; without the key: 4 and says the keyed rows could not be checked; wrong key: 1.
  4. Refused with a specific error and NOTHING written: no key, another key, a key readable by group
     or others, a short key, a missing key file, a key given to an unkeyed store that has rows.
  5. The attack of issue 20: someone with write access edits a row and REBUILDS the whole chain
     (every hash and the head recomputed, as anyone without the key can):
       - unkeyed store, no anchor: plain `audit verify` says intact (exit 0) — the documented limit;
       - unkeyed store, anchored before: `verify --anchors` catches it (exit 1);
       - keyed store, chain rebuilt unkeyed keeping the key record: --key catches it (1), no key: 4;
       - keyed store downgraded (key record deleted, rebuilt unkeyed): plain verify passes (0) — so
         verify keyed stores WITH --key —, and --key catches it (1);
       - keyed store rebuilt under the attacker's own key (its id in meta): --key catches it (1);
       - keyed store with an anchor: --anchors --key catches it (1).
  6. `audit key` keys an unkeyed store with rows from its next row on; an edit of an unkeyed row
     before it, rebuilt, is still caught with the key.
  7. Keyed merge: a shard screened by `screen --audit-key` (the workers get the key) and a shard
     from `ask --audit-key` merge with --key into a keyed store that verifies with the key; without
     --key the merge is refused, with another key too; the merged store without the key: exit 4.
Usage: test_audit_keyed.py CXRVQA
"""
import hashlib
import hmac
import os
import shutil
import sqlite3
import stat
import struct
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
SAMPLE = os.path.join(ROOT, "sample_data", "dx_mono2_rle.dcm")
DOMAIN = b"cxrvqa-audit-row-v1\0"
HMAC_DOMAIN = b"cxrvqa-audit-row-hmac-v1\0"
HASHED = ("seq time_utc event_type event_id event_action outcome user_name application host pid question "
          "language intent study_uid series_uid sop_uid sop_class_uid accession source patient_id answer "
          "answer_text findings_json warnings_json model_name model_version model_sha256 prompt_version sr_uid "
          "sr_dest latency_ms error_code reason request_key prev_hash").split()
QS = ["Is there a pleural effusion?", "Is there pneumonia?", "Is the heart enlarged?"]
failures, passes = [], [0]


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what, flush=True)
    if ok:
        passes[0] += 1
    else:
        failures.append(what)
    return ok


def serialise(values):
    """Per column: N | I + >q | S/B + >Q length + bytes (audit.c, row_hash)."""
    out = []
    for v in values:
        if v is None:
            out.append(b"N")
        elif isinstance(v, int):
            out.append(b"I" + struct.pack(">q", v))
        else:
            b = v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape")
            out.append((b"S" if isinstance(v, str) else b"B") + struct.pack(">Q", len(b)) + b)
    return b"".join(out)


def sha_row(values):
    return hashlib.sha256(DOMAIN + serialise(values)).hexdigest()


def hmac_row(key, values):
    return hmac.new(key, HMAC_DOMAIN + serialise(values), hashlib.sha256).hexdigest()


def rows(db):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return c.execute("SELECT %s, row_hash FROM audit ORDER BY seq" % ", ".join(HASHED)).fetchall()
    finally:
        c.close()


def meta(db, k):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        r = c.execute("SELECT value FROM meta WHERE key = ?", (k,)).fetchone()
        return r[0] if r else None
    finally:
        c.close()


def count(db):
    return len(rows(db)) if os.path.exists(db) else 0


def rebuild(src, dst, edit_sql, hasher, drop_key_record=False, key_id=None):
    """The attacker: copy, drop the triggers, edit, then recompute every row's prev_hash and
    row_hash in seq order with hasher(values) and move the head. Returns dst."""
    shutil.copy(src, dst)
    for ext in ("-wal", "-shm"):
        if os.path.exists(dst + ext):
            os.remove(dst + ext)
    c = sqlite3.connect(dst)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        c.execute("DROP TRIGGER %s" % name)
    c.execute(edit_sql)
    if drop_key_record:
        c.execute("DELETE FROM meta WHERE key IN ('chain_key_id', 'chain_keyed_from')")
    if key_id:
        c.execute("UPDATE meta SET value = ? WHERE key = 'chain_key_id'", (key_id,))
    prev = "0" * 64
    for r in c.execute("SELECT id, %s FROM audit ORDER BY seq" % ", ".join(HASHED)).fetchall():
        vals = list(r[1:])
        vals[-1] = prev
        h = hasher(vals)
        c.execute("UPDATE audit SET prev_hash = ?, row_hash = ? WHERE id = ?", (prev, h, r[0]))
        prev = h
    c.execute("UPDATE meta SET value = ? WHERE key = 'chain_head_hash'", (prev,))
    c.commit()
    c.close()
    return dst


def finish(tmp):
    """Print the totals; remove tmp when every check passed. The exit status."""
    print("%d passed, %d failed" % (passes[0], len(failures)))
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    else:
        print("left in", tmp)
    return 1 if failures else 0


def runner(exe):
    """run(*args), ask(db, question, *extra) and fill(db, questions, *extra) with the cxrvqa at exe."""
    def run(*a):
        return subprocess.run([exe, *a], capture_output=True, text=True, timeout=300)

    def ask(db, q, *extra):
        return run("ask", "--model", MODEL, "--db", db, *extra, SAMPLE, q)

    def fill(db, qs, *extra):
        for q in qs:
            p = ask(db, q, *extra)
            if p.returncode != 0:
                raise RuntimeError(p.stderr)
    return run, ask, fill


def main():
    exe = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="cxrvqa-keyed-")
    P = lambda *n: os.path.join(tmp, *n)
    run, ask, fill = runner(exe)

    # 1. keygen
    key_path = P("chain.key")
    p = run("audit", "keygen", key_path)
    key = open(key_path, "rb").read()
    key_id = hashlib.sha256(key).hexdigest()[:16]
    check(p.returncode == 0 and len(key) == 32 and stat.S_IMODE(os.stat(key_path).st_mode) == 0o600,
          "keygen: 32 bytes, mode 0600")
    check(key_id in p.stdout, "keygen prints the key id (SHA-256 of the key, 16 hex): %s" % p.stdout.strip()[:100])
    p = run("audit", "keygen", key_path)
    check(p.returncode == 2 and "never overwritten" in p.stderr and open(key_path, "rb").read() == key,
          "keygen refuses to overwrite a key")
    other_path = P("other.key")
    run("audit", "keygen", other_path)

    # 2. a keyed store; HMAC recomputed here
    db = P("keyed.sqlite")
    fill(db, QS, "--audit-key", key_path)
    rs = rows(db)
    check(len(rs) == 4 and rs[0][2] == "audit-keyed" and rs[0][HASHED.index("request_key")] == "audit-keyed:" + key_id,
          "a new store written with --audit-key starts with its audit-keyed event (%d rows)" % len(rs))
    check(meta(db, "chain_key_id") == key_id and meta(db, "chain_keyed_from") == 1,
          "meta records the key id (not the key) and keyed-from seq 1")
    check(key.hex() not in open(db, "rb").read().hex(), "the key itself is nowhere in the database file")
    prev, ok_hmac, differs = "0" * 64, True, True
    for r in rs:
        vals, stored = list(r[:-1]), r[-1]
        ok_hmac = ok_hmac and vals[-1] == prev and hmac_row(key, vals) == stored
        differs = differs and sha_row(vals) != stored
        prev = stored
    check(ok_hmac, "every row's hash = Python hmac(key, 'cxrvqa-audit-row-hmac-v1' NUL + serialisation), chained")
    check(differs, "and none equals the unkeyed SHA-256 of the same row")
    check(meta(db, "chain_head_hash") == prev, "the head is the last row's HMAC")

    # 3. verify
    p = run("audit", "verify", "--db", db, "--key", key_path)
    check(p.returncode == 0 and "intact" in p.stdout and key_id in p.stdout, "verify --key: intact (%d)" % p.returncode)
    p = run("audit", "verify", "--db", db)
    check(p.returncode == 4 and "could not be checked without the key" in p.stderr,
          "verify without the key: exit 4, says the keyed chain was not checked (%d)" % p.returncode)
    p = run("audit", "verify", "--db", db, "--key", other_path)
    check(p.returncode == 1 and "key id " + key_id in p.stderr, "verify with another key: exit 1 (%d)" % p.returncode)

    # 4. refusals: specific error, nothing written
    n = count(db)
    p = ask(db, QS[0])
    check(p.returncode == 3 and "needs its key" in p.stderr and count(db) == n,
          "ask without the key on a keyed store: refused, nothing written: %s" % p.stderr.strip()[-90:])
    p = ask(db, QS[0], "--audit-key", other_path)
    check(p.returncode == 3 and "wrong key file" in p.stderr and count(db) == n,
          "ask with another key: refused, nothing written")
    for mode in (0o644, 0o640, 0o604):
        loose = P("loose-%o.key" % mode)
        shutil.copy(key_path, loose)
        os.chmod(loose, mode)
        p = ask(db, QS[0], "--audit-key", loose)
        check(p.returncode == 3 and "0600 or stricter" in p.stderr and count(db) == n,
              "a key file of mode %o is refused: %s" % (mode, p.stderr.strip()[-80:]))
    short = P("short.key")
    with open(os.open(short, os.O_WRONLY | os.O_CREAT, 0o600), "wb") as f:
        f.write(key[:16])
    p = ask(db, QS[0], "--audit-key", short)
    check(p.returncode == 3 and "16 bytes: at least 32 are required" in p.stderr and count(db) == n,
          "a 16-byte key is refused, naming the length required")
    p = ask(db, QS[0], "--audit-key", P("missing.key"))
    check(p.returncode == 3 and "missing.key" in p.stderr and count(db) == n, "a missing key file is refused")
    p = run("audit", "verify", "--db", db, "--key", P("loose-644.key"))
    check(p.returncode == 2 and "0600 or stricter" in p.stderr, "verify --key refuses a loose key too (%d)" % p.returncode)
    plain = P("plain.sqlite")
    fill(plain, QS[:2])
    p = ask(plain, QS[2], "--audit-key", key_path)
    check(p.returncode == 3 and "audit key --db" in p.stderr and count(plain) == 2 and meta(plain, "chain_key_id") is None,
          "a key given to an unkeyed store with rows: refused (points to `audit key`), nothing written")
    p = ask(db, QS[0], "--audit-key", key_path)
    check(p.returncode == 0 and count(db) == n + 1, "with its key the keyed store takes the row")

    # 5. the rebuild attack
    edit = "UPDATE audit SET answer_text = 'edited' WHERE seq = 2"
    anchors = P("anchors.log")
    run("audit", "anchor", "--db", plain, "--anchors", anchors)
    r = rebuild(plain, P("plain-rebuilt.sqlite"), edit, sha_row)
    p = run("audit", "verify", "--db", r)
    check(p.returncode == 0 and "intact" in p.stdout,
          "unkeyed store, chain rebuilt, no anchor: NOT detected by plain verify (exit %d) — the limit" % p.returncode)
    p = run("audit", "verify", "--db", r, "--anchors", anchors)
    check(p.returncode == 1 and "rewritten" in p.stderr, "unkeyed store, chain rebuilt: detected against the anchor")

    kanchors = P("keyed-anchors.log")
    p = run("audit", "anchor", "--db", db, "--anchors", kanchors)
    check(p.returncode == 0, "audit anchor works on a keyed store without the key")
    r = rebuild(db, P("keyed-rebuilt.sqlite"), edit, sha_row)
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1 and "TAMPERED" in p.stderr, "keyed store rebuilt unkeyed: detected with the key: %s"
          % p.stderr.strip()[:140])
    p = run("audit", "verify", "--db", r)
    check(p.returncode == 4, "the same without the key: not passed (exit %d: not checked)" % p.returncode)
    p = run("audit", "verify", "--db", r, "--anchors", kanchors, "--key", key_path)
    check(p.returncode == 1, "keyed store rebuilt, against its anchor and the key: detected")
    p = run("audit", "verify", "--db", r, "--anchors", kanchors)
    check(p.returncode == 1 and "rewritten" in p.stderr, "and against the anchor alone: detected (%d)" % p.returncode)

    r = rebuild(db, P("keyed-downgraded.sqlite"), edit, sha_row, drop_key_record=True)
    p = run("audit", "verify", "--db", r)
    check(p.returncode == 0, "keyed store downgraded (key record deleted, rebuilt unkeyed): plain verify passes "
          "(exit %d) — verify keyed stores with --key" % p.returncode)
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1 and "records none" in p.stderr, "the downgrade is detected with the key: %s"
          % p.stderr.strip()[:120])

    attacker_key = os.urandom(32)
    r = rebuild(db, P("keyed-rekeyed.sqlite"), edit, lambda v: hmac_row(attacker_key, v),
                key_id=hashlib.sha256(attacker_key).hexdigest()[:16])
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1 and "key mismatch" in p.stderr, "rebuilt under the attacker's own key: detected with ours")
    # the attacker keeps our key id but cannot compute our HMAC
    r = rebuild(db, P("keyed-fakehmac.sqlite"), edit, lambda v: hmac_row(attacker_key, v))
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1 and "edited" in p.stderr, "rebuilt with a guessed key under our key id: detected")

    # 6. keying an existing store
    conv = P("conv.sqlite")
    fill(conv, QS[:2])
    p = run("audit", "key", "--db", conv, "--key", key_path)
    rs = rows(conv)
    check(p.returncode == 0 and len(rs) == 3 and rs[2][2] == "audit-keyed" and meta(conv, "chain_keyed_from") == 3,
          "audit key: keyed from seq 3 by an event row (%d)" % p.returncode)
    check(sha_row(list(rs[1][:-1])) == rs[1][-1] and hmac_row(key, list(rs[2][:-1])) == rs[2][-1],
          "rows before stay SHA-256, the event row is HMAC")
    fill(conv, QS[2:], "--audit-key", key_path)
    p = run("audit", "verify", "--db", conv, "--key", key_path)
    check(p.returncode == 0, "converted store verifies with the key")
    p = run("audit", "verify", "--db", conv)
    check(p.returncode == 4 and "unkeyed rows before them are intact" in p.stderr, "and without: exit 4, prefix proven")

    def prefix_hasher(v):
        return sha_row(v) if v[0] < 3 else v[-1]  # cannot HMAC: keeps the stored hash

    c = sqlite3.connect(conv)
    stored = {s: h for s, h in c.execute("SELECT seq, row_hash FROM audit")}
    c.close()
    r = rebuild(conv, P("conv-rebuilt.sqlite"), "UPDATE audit SET answer_text = 'edited' WHERE seq = 1",
                lambda v: sha_row(v) if v[0] < 3 else stored[v[0]])
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1, "an unkeyed row before the keyed part, rebuilt: detected with the key (%d)" % p.returncode)

    # 7. keyed merge: one shard by screen (workers get the key), one by ask
    shard_a, shard_b, merged = P("shard-a.sqlite"), P("shard-b.sqlite"), P("merged.sqlite")
    p = run("screen", "--model", MODEL, "--db", shard_a, "--audit-key", key_path, "--jobs", "1",
            "--question", QS[0], "--question", QS[1], "--csv", P("a.csv"), SAMPLE)
    check(p.returncode == 0 and count(shard_a) == 3 and meta(shard_a, "chain_key_id") == key_id,
          "screen --audit-key: its workers wrote a keyed shard (%d, %d rows): %s" % (p.returncode, count(shard_a), p.stderr.strip()[-120:]))
    p = run("screen", "--model", MODEL, "--db", shard_a, "--jobs", "1", "--question", QS[2], SAMPLE)
    check(p.returncode == 3 and "needs its key" in p.stderr and count(shard_a) == 3,
          "screen without the key on the keyed shard: refused, nothing written")
    fill(shard_b, QS, "--audit-key", key_path)
    p = run("audit", "merge", "--out", merged, shard_a, shard_b)
    check(p.returncode == 2 and "give its key" in p.stderr and not os.path.exists(merged),
          "merge of keyed shards without --key: refused, nothing written (%d)" % p.returncode)
    p = run("audit", "merge", "--key", other_path, "--out", merged, shard_a, shard_b)
    check(p.returncode == 1 and not os.path.exists(merged), "merge with another key: refused (%d)" % p.returncode)
    p = run("audit", "merge", "--key", key_path, "--out", merged, shard_a, shard_b, plain)
    check(p.returncode == 0, "merge --key of two keyed shards and an unkeyed one: %s" % (p.stderr or p.stdout).strip()[-160:])
    p = run("audit", "verify", "--db", merged, "--key", key_path)
    check(p.returncode == 0 and "merged store: 3 shard merges" in p.stdout and key_id in p.stdout,
          "the merged store is keyed and verifies with the key, every shard recomputed (%d): %s"
          % (p.returncode, (p.stderr or p.stdout).strip()[-160:]))
    check(meta(merged, "chain_key_id") == key_id, "the merged store records the same key id")
    p = run("audit", "verify", "--db", merged)
    check(p.returncode == 4, "the merged store without the key: exit 4 (%d)" % p.returncode)
    r = rebuild(merged, P("merged-rebuilt.sqlite"), "UPDATE audit SET answer_text = 'edited' WHERE seq = 5", sha_row)
    p = run("audit", "verify", "--db", r, "--key", key_path)
    check(p.returncode == 1, "the merged store rebuilt after an edit: detected with the key")
    p = run("screen", "--collect", merged, "--csv", P("m.csv"))
    check(p.returncode == 0, "screen --collect reads the keyed merged store without the key")

    return finish(tmp)


if __name__ == "__main__":
    sys.exit(main())
