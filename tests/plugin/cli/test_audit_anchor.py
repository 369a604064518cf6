#!/usr/bin/python3
"""test_audit_anchor.py — what the unkeyed hash chain cannot prove, and what an anchor log adds.

With the real `cxrvqa`:
  1. a store of real answers; `cxrvqa audit anchor` appends its head to an anchor log (0600) and
     prints the line;
  2. an edited row is caught by the chain alone (`audit verify` exits 1);
  3. a REBUILT store — the same requests, one of them altered, written as a fresh, fully valid
     chain and copied over the original — passes `audit verify` (exit 0: the limit of an unkeyed
     chain, SECURITY.md) but fails `audit verify --anchors` (exit 1, "rewritten"), naming the
     anchor it no longer extends;
  4. rows appended after the anchor still verify against it; a removed anchored row is named;
     a malformed anchor log is an error (exit 3), not a pass.
Usage: test_audit_anchor.py CXRVQA
"""
import os
import shutil
import sqlite3
import stat
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
SAMPLE = os.path.join(ROOT, "sample_data", "dx_mono2_rle.dcm")
failures, passes = [], [0]


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passes[0] += 1
    else:
        failures.append(what)
    return ok


def main():
    exe = os.path.abspath(sys.argv[1])
    tmp = tempfile.mkdtemp(prefix="cxrvqa-anchor-")

    def run(*a):
        return subprocess.run([exe, *a], capture_output=True, text=True, timeout=120)

    def fill(db, questions):
        for q in questions:
            p = run("ask", "--model", MODEL, "--db", db, SAMPLE, q)
            if p.returncode != 0:
                raise RuntimeError(p.stderr)

    qs = ["Is there a pleural effusion?", "Is there pneumonia?", "Is the heart enlarged?", "有没有气胸？"]
    db, log = os.path.join(tmp, "audit.sqlite"), os.path.join(tmp, "anchors.log")
    fill(db, qs)
    p = run("audit", "anchor", "--db", db, "--anchors", log)
    check(p.returncode == 0 and p.stdout.startswith("cxrvqa-anchor v1 ") and "seq=4 rows=4 head=" in p.stdout,
          "anchor printed: %s" % p.stdout.strip())
    check(os.path.isfile(log) and stat.S_IMODE(os.stat(log).st_mode) == 0o600, "anchor log created 0600")
    p = run("audit", "verify", "--db", db, "--anchors", log)
    check(p.returncode == 0 and "extends all 1 anchored heads" in p.stdout, "intact store extends its anchor")

    # 2. one row edited in place: the chain alone catches it
    edited = os.path.join(tmp, "edited.sqlite")
    shutil.copy(db, edited)
    con = sqlite3.connect(edited)
    con.execute("DROP TRIGGER IF EXISTS audit_no_update")
    for (name,) in con.execute("SELECT name FROM sqlite_master WHERE type='trigger'").fetchall():
        con.execute("DROP TRIGGER %s" % name)
    con.execute("UPDATE audit SET answer_text = answer_text || ' (edited)' WHERE seq = 2")
    con.commit()
    con.close()
    p = run("audit", "verify", "--db", edited)
    check(p.returncode == 1 and "TAMPERED" in p.stderr, "an edited row is caught by the chain (%d)" % p.returncode)

    # 3. the whole chain rebuilt with an altered request, copied over the original
    rebuilt = os.path.join(tmp, "rebuilt.sqlite")
    fill(rebuilt, qs[:1] + ["Is there no pneumonia?"] + qs[2:])
    shutil.copy(rebuilt, db)
    for ext in ("-wal", "-shm"):
        if os.path.exists(db + ext):
            os.remove(db + ext)
    p = run("audit", "verify", "--db", db)
    check(p.returncode == 0 and "intact" in p.stdout,
          "without an anchor a rebuilt chain verifies (exit %d): the unkeyed chain's limit" % p.returncode)
    p = run("audit", "verify", "--db", db, "--anchors", log)
    check(p.returncode == 1 and "rewritten" in p.stderr and "row 4" in p.stderr,
          "against the anchor the rebuilt chain is caught (exit %d): %s" % (p.returncode, p.stderr.strip()[:160]))

    # 4. a store that grew after its anchor still extends it; a removed anchored row is named
    db2, log2 = os.path.join(tmp, "grow.sqlite"), os.path.join(tmp, "grow.log")
    fill(db2, qs[:2])
    run("audit", "anchor", "--db", db2, "--anchors", log2)
    fill(db2, qs[2:])
    run("audit", "anchor", "--db", db2, "--anchors", log2)
    p = run("audit", "verify", "--db", db2, "--anchors", log2)
    check(p.returncode == 0 and "extends all 2 anchored heads" in p.stdout, "rows after an anchor keep it valid")
    short = os.path.join(tmp, "short.sqlite")
    fill(short, qs[:1])
    p = run("audit", "verify", "--db", short, "--anchors", log2)
    check(p.returncode == 1 and "no row 2" in p.stderr, "a store cut below an anchor is named: %s" % p.stderr.strip()[:120])
    bad = os.path.join(tmp, "bad.log")
    open(bad, "w").write("not an anchor\n")
    p = run("audit", "verify", "--db", db2, "--anchors", bad)
    check(p.returncode == 3 and "not an anchor line" in p.stderr, "a malformed anchor log is an error (exit %d)" % p.returncode)
    p = run("audit", "anchor", "--db", db2)
    check(p.returncode == 2, "anchor without --anchors is a usage error")

    print("%d passed, %d failed" % (passes[0], len(failures)))
    if not failures:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
