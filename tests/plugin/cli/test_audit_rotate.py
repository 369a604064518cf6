#!/usr/bin/python3
"""test_audit_rotate.py — rotating the audit chain key (`cxrvqa audit rotate-key`), with the real `cxrvqa`.

  1. A store keyed with A, rotated to B: the last row under A is an audit-rekeyed event naming B's key
     id; meta names B from the next seq on and lists both keys ("idA@1 idB@5", computed here). Every
     row's HMAC is recomputed HERE with Python's hmac module: rows up to the event under A, after it
     under B.
  2. Writers: B writes; A is refused with "retired" and nothing is written.
  3. verify: A and B: 0; no key, only A, only B: 4 and the missing key id is named; an unrelated key: 1.
  4. Refused, nothing written: rotating back to A, to the current key, with the retired key, an
     unkeyed store, a new key readable by others.
  5. What rotation buys, and its limit:
       - a thief of the RETIRED key A rewrites a row written under A and rebuilds everything it can
         (rows under A): detected with A and B at the first row under B, which it cannot re-hash;
       - the same thief cuts the store back to before the rotation (key record restored to A):
         detected when verified with B too;
       - a thief of the NEW key B rebuilds the whole store under B (key record rewritten to B alone):
         detected when verified with every key (A and B); NOT detected with B alone — the limit:
         verify with every key the chain has had, or against an anchor.
  6. Three keys (A, B, D): verify needs all three.
  7. Merge: a rotated shard is refused by name; a merged store rotated after merging keyed shards
     verifies with both keys, every shard recomputed.
Usage: test_audit_rotate.py CXRVQA
"""
import hashlib
import os
import shutil
import sqlite3
import sys
import tempfile

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
from test_audit_keyed import (QS, HASHED, check, finish, hmac_row, rows, meta, count, rebuild,  # noqa: E402
                              runner)


def main():
    exe = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="cxrvqa-rotate-")
    P = lambda *n: os.path.join(tmp, *n)
    run, ask, fill = runner(exe)

    keys, ids = {}, {}
    for name in "ABCD":
        path = P(name + ".key")
        p = run("audit", "keygen", path)
        if p.returncode != 0:
            raise RuntimeError(p.stderr)
        keys[name] = open(path, "rb").read()
        ids[name] = hashlib.sha256(keys[name]).hexdigest()[:16]
    K = lambda n: P(n + ".key")

    # 1. rotate A -> B
    db = P("rot.sqlite")
    fill(db, QS[:2], "--audit-key", K("A"))  # seq 1 audit-keyed, 2, 3
    p = run("audit", "rotate-key", "--db", db, "--key", K("A"), "--new-key", K("B"))
    check(p.returncode == 0 and ids["A"] in p.stdout and ids["B"] in p.stdout,
          "rotate-key A -> B: %s" % (p.stdout or p.stderr).strip()[:160])
    rs = rows(db)
    ev = rs[3] if len(rs) == 4 else None
    check(ev is not None and ev[0] == 4 and ev[2] == "audit-rekeyed" and ev[33] == "audit-rekeyed:" + ids["B"]
          and ids["A"] in ev[32] and ids["B"] in ev[32] and ev[3] == 110113,
          "the rotation is row seq 4: an audit-rekeyed Security Alert naming both key ids")
    check(meta(db, "chain_key_id") == ids["B"] and meta(db, "chain_keyed_from") == 5 and
          meta(db, "chain_key_history") == "%s@1 %s@5" % (ids["A"], ids["B"]),
          "meta: key B from seq 5, history '%s'" % meta(db, "chain_key_history"))
    fill(db, QS[2:], "--audit-key", K("B"))
    fill(db, QS[:1], "--audit-key", K("B"))  # seq 5, 6
    rs = rows(db)
    prev, ok = "0" * 64, len(rs) == 6
    for r in rs:
        vals = list(r[:-1])
        want = hmac_row(keys["A"] if r[0] <= 4 else keys["B"], vals)
        ok = ok and r[-1] == want and r[HASHED.index("prev_hash")] == prev
        prev = r[-1]
    check(ok and prev == meta(db, "chain_head_hash"),
          "every row's HMAC recomputed here: seq 1-4 under A, 5-6 under B, linked, head matches")

    # 2. writers
    n = count(db)
    p = ask(db, QS[1], "--audit-key", K("A"))
    check(p.returncode == 3 and "retired" in p.stderr and ids["B"] in p.stderr and count(db) == n,
          "a writer with the retired key: refused, told it was retired, nothing written: %s" % p.stderr.strip()[-160:])

    # 3. verify
    p = run("audit", "verify", "--db", db, "--key", K("A"), "--key", K("B"))
    check(p.returncode == 0 and "2 keys in turn" in p.stdout, "verify with A and B: intact (%d)" % p.returncode)
    p = run("audit", "verify", "--db", db)
    check(p.returncode == 4 and ids["A"] in p.stderr and ids["B"] in p.stderr, "verify without keys: 4, both ids named")
    p = run("audit", "verify", "--db", db, "--key", K("B"))
    check(p.returncode == 4 and ids["A"] in p.stderr and "4 keyed rows" in p.stderr,
          "verify with B only: 4, the 4 rows under A unchecked, A named: %s" % p.stderr.strip()[-120:])
    p = run("audit", "verify", "--db", db, "--key", K("A"))
    check(p.returncode == 4 and ids["B"] in p.stderr, "verify with A only: 4, B named")
    p = run("audit", "verify", "--db", db, "--key", K("C"))
    check(p.returncode == 1 and "key mismatch" in p.stderr, "verify with an unrelated key: 1 (key mismatch)")
    p = run("audit", "verify", "--db", db, "--key", K("A"), "--key", K("B"), "--key", K("C"))
    check(p.returncode == 1 and ids["C"] in p.stderr, "A, B and an unrelated key: 1, the stranger named")

    # 4. refusals
    n = count(db)
    p = run("audit", "rotate-key", "--db", db, "--key", K("B"), "--new-key", K("A"))
    check(p.returncode == 2 and "used by this store before" in p.stderr and count(db) == n,
          "rotating back to A: refused, nothing written")
    p = run("audit", "rotate-key", "--db", db, "--key", K("B"), "--new-key", K("B"))
    check(p.returncode == 2 and "current key" in p.stderr and count(db) == n, "rotating to the current key: refused")
    p = run("audit", "rotate-key", "--db", db, "--key", K("A"), "--new-key", K("C"))
    check(p.returncode != 0 and "retired" in p.stderr and count(db) == n, "rotating with the retired key: refused")
    loose = P("loose.key")
    shutil.copy(K("C"), loose)
    os.chmod(loose, 0o644)
    p = run("audit", "rotate-key", "--db", db, "--key", K("B"), "--new-key", loose)
    check(p.returncode == 2 and "0600" in p.stderr and count(db) == n, "a new key readable by others: refused")
    plain = P("plain.sqlite")
    fill(plain, QS[:1])
    p = run("audit", "rotate-key", "--db", plain, "--key", K("A"), "--new-key", K("B"))
    check(p.returncode != 0 and count(plain) == 1 and meta(plain, "chain_key_id") is None,
          "rotating an unkeyed store: refused, nothing written (%d)" % p.returncode)
    p = run("audit", "verify", "--db", db, "--key", K("A"), "--key", K("B"))
    check(p.returncode == 0, "after the refusals the store still verifies")

    # 5. attacks
    edit = "UPDATE audit SET answer_text = 'edited' WHERE seq = 2"
    stored = {r[0]: r[-1] for r in rows(db)}
    r = rebuild(db, P("thief-a.sqlite"), edit, lambda v: hmac_row(keys["A"], v) if v[0] <= 4 else stored[v[0]])
    p = run("audit", "verify", "--db", r, "--key", K("A"), "--key", K("B"))
    check(p.returncode == 1 and "TAMPERED" in p.stderr and "seq 5" in p.stderr,
          "thief of the retired key A rebuilds every row under A: detected at row 5, the first under B: %s"
          % p.stderr.strip()[-140:])

    cut = P("thief-a-cut.sqlite")
    shutil.copy(db, cut)
    c = sqlite3.connect(cut)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        c.execute("DROP TRIGGER %s" % name)
    c.execute("DELETE FROM audit WHERE seq >= 4")
    head = c.execute("SELECT row_hash FROM audit WHERE seq = 3").fetchone()[0]
    c.execute("UPDATE meta SET value = 3 WHERE key = 'chain_head_seq'")
    c.execute("UPDATE meta SET value = ? WHERE key = 'chain_head_hash'", (head,))
    c.execute("UPDATE meta SET value = ? WHERE key = 'chain_key_id'", (ids["A"],))
    c.execute("UPDATE meta SET value = 1 WHERE key = 'chain_keyed_from'")
    c.execute("DELETE FROM meta WHERE key = 'chain_key_history'")
    c.commit()
    c.close()
    p = run("audit", "verify", "--db", cut, "--key", K("A"), "--key", K("B"))
    check(p.returncode == 1 and "key mismatch" in p.stderr,
          "the store cut back to before the rotation: detected when verified with B too")

    def with_history(name, value):
        dst = P(name)
        shutil.copy(db, dst)
        c = sqlite3.connect(dst)
        c.execute("UPDATE meta SET value = ? WHERE key = 'chain_key_history'", (value,))
        if name == "hist-moved.sqlite":  # the record moved with it: the boundary row is checked
            c.execute("UPDATE meta SET value = 3 WHERE key = 'chain_keyed_from'")
        c.commit()
        c.close()
        return run("audit", "verify", "--db", dst, "--key", K("A"), "--key", K("B"))

    for name, value, want in [
            ("hist-garbage.sqlite", "not a history", "malformed"),
            ("hist-order.sqlite", "%s@5 %s@1" % (ids["B"], ids["A"]), "malformed"),
            ("hist-last.sqlite", "%s@1 %s@5" % (ids["A"], ids["C"]), "malformed"),
            ("hist-moved.sqlite", "%s@1 %s@3" % (ids["A"], ids["B"]), "is not that event"),
            ("hist-dropped.sqlite", "%s@5" % ids["B"], "malformed")]:
        p = with_history(name, value)
        check(p.returncode == 1 and want in p.stderr,
              "key history edited (%s): detected: %s" % (value[:40], p.stderr.strip()[-110:]))

    def as_b(v):
        return hmac_row(keys["B"], v)

    whole = P("thief-b.sqlite")
    shutil.copy(db, whole)
    c = sqlite3.connect(whole)
    for (name,) in c.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        c.execute("DROP TRIGGER %s" % name)
    c.execute(edit)
    c.execute("UPDATE audit SET request_key = ? WHERE seq = 1", ("audit-keyed:" + ids["B"],))
    c.execute("UPDATE meta SET value = 1 WHERE key = 'chain_keyed_from'")
    c.execute("DELETE FROM meta WHERE key = 'chain_key_history'")
    c.commit()
    c.close()
    rebuild(whole, whole + ".2", "SELECT 1", as_b)
    p = run("audit", "verify", "--db", whole + ".2", "--key", K("A"), "--key", K("B"))
    check(p.returncode == 1 and "key mismatch" in p.stderr,
          "thief of the new key B rebuilds the whole store under B: detected with every key (A and B)")
    p = run("audit", "verify", "--db", whole + ".2", "--key", K("B"))
    check(p.returncode == 0, "and NOT detected with B alone (exit %d) — the limit: verify with every key the chain "
          "has had, or against an anchor" % p.returncode)

    # 6. three keys
    p = run("audit", "rotate-key", "--db", db, "--key", K("B"), "--new-key", K("D"))
    fill(db, QS[1:2], "--audit-key", K("D"))
    p = run("audit", "verify", "--db", db, "--key", K("A"), "--key", K("B"), "--key", K("D"))
    hist = meta(db, "chain_key_history")
    check(p.returncode == 0 and "3 keys in turn" in p.stdout and hist.split() ==
          ["%s@1" % ids["A"], "%s@5" % ids["B"], "%s@%d" % (ids["D"], count(db))],
          "rotated again to D: verifies with A, B and D; history %s" % hist)
    p = run("audit", "verify", "--db", db, "--key", K("A"), "--key", K("D"))
    check(p.returncode == 4 and ids["B"] in p.stderr, "without B: 4, B named")

    # 7. merge
    merged = P("merged.sqlite")
    p = run("audit", "merge", "--key", K("B"), "--out", merged, db)
    check(p.returncode == 2 and "rotated" in p.stderr and not os.path.exists(merged),
          "merge of a rotated shard: refused by name, nothing written (%d)" % p.returncode)
    s1, s2 = P("s1.sqlite"), P("s2.sqlite")
    fill(s1, QS[:2], "--audit-key", K("A"))
    p = run("audit", "merge", "--key", K("A"), "--out", merged, s1)
    check(p.returncode == 0, "merge a shard keyed with A into a store keyed with A")
    p = run("audit", "rotate-key", "--db", merged, "--key", K("A"), "--new-key", K("B"))
    check(p.returncode == 0, "rotate the merged store to B")
    fill(s2, QS[2:], "--audit-key", K("B"))
    p = run("audit", "merge", "--key", K("B"), "--out", merged, s2)
    check(p.returncode == 0, "merge a shard keyed with B into it: %s" % (p.stderr or p.stdout).strip()[-120:])
    p = run("audit", "verify", "--db", merged, "--key", K("A"), "--key", K("B"))
    check(p.returncode == 0 and "2 shard merges" in p.stdout,
          "the rotated merged store verifies with A and B, both shards recomputed (%d): %s"
          % (p.returncode, (p.stderr or p.stdout).strip()[-160:]))
    p = run("audit", "verify", "--db", merged, "--key", K("B"))
    check(p.returncode == 4, "and with B alone: 4 (%d)" % p.returncode)

    return finish(tmp)


if __name__ == "__main__":
    sys.exit(main())
