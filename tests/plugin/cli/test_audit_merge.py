#!/usr/bin/python3
"""Sharded screening and `cxrvqa audit merge`, without Slurm.

1. --shard K/N: the shards of a folder are disjoint, cover it, and each holds
   the images this script computes from the rule itself (SHA-256 of the
   absolute path, first 8 bytes big-endian, mod N); --shard-from-env reads
   the Slurm array variables; bad values give their own errors.
2. A rerun of a shard with its own database answers nothing again.
3. audit merge of 3 shards: verify passes, every (image, question) once, and
   `screen --collect` rebuilds exactly the CSV of one screen over all images.
4. Idempotent: the same shard again (alone, or twice in one command) adds
   nothing and says so; a shard that went on after its merge adds only its
   new rows.
5. Refused, named, nothing written: a shard edited after it finished, a shard
   cut short (tail rows deleted; the file cut in bytes), a merged store given
   as a shard.
6. A merged store tampered afterwards: an origin edited, an origin removed,
   the last origins of a merge removed, a copied row edited: `audit verify`
   fails naming it. An empty shard (the rule gives it no image) merges nothing.
Usage: test_audit_merge.py CXRVQA_BINARY
"""
import csv
import hashlib
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLES = os.path.join(ROOT, "sample_data")
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
Q1, Q2 = "Is there a pleural effusion?", "Is there a pneumothorax?"
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)


def run(exe, *args, env=None):
    r = subprocess.run([exe] + list(args), capture_output=True, text=True, env=env)
    return r.returncode, r.stdout, r.stderr


def shard_of(path, n):
    return int.from_bytes(hashlib.sha256(path.encode()).digest()[:8], "big") % n


def csv_paths(path):
    with open(path, newline="") as f:
        return sorted({r["path"] for r in csv.DictReader(f)})


def count(db, sql="SELECT count(*) FROM audit"):
    c = sqlite3.connect("file:%s?mode=ro" % db, uri=True)
    try:
        return c.execute(sql).fetchone()[0]
    finally:
        c.close()


def copy_db(src, dst):
    """a consistent copy, WAL content included (a plain file copy can miss it)"""
    a, b = sqlite3.connect("file:%s?mode=ro" % src, uri=True), sqlite3.connect(dst)
    a.backup(b)
    a.close()
    b.close()


def tamper(db, sql):
    c = sqlite3.connect(db)
    c.executescript("DROP TRIGGER IF EXISTS audit_no_update; DROP TRIGGER IF EXISTS audit_no_delete;"
                    "DROP TRIGGER IF EXISTS merge_origin_no_update; DROP TRIGGER IF EXISTS merge_origin_no_delete;" + sql)
    c.commit()
    c.close()


def main():
    exe = os.path.abspath(sys.argv[1])
    tmp = os.path.realpath(tempfile.mkdtemp(prefix="cxrvqa-merge-"))
    try:
        # The split depends on the absolute paths, so on the random temporary folder: pick the images
        # folder's name so that every shard gets at least 2 images, else the checks below would test
        # a different case from run to run (an empty shard is tried on its own, in 4.)
        names = [os.path.join("sub" if i % 3 == 0 else "", "img%02d.dcm" % i) for i in range(9)]
        names += ["p%d.png" % i for i in range(3)]
        for attempt in range(1000):
            imgs = os.path.join(tmp, "images-%d" % attempt)
            sizes = [sum(1 for n in names if shard_of(os.path.join(imgs, n), 3) == k) for k in range(3)]
            if min(sizes) >= 2:
                break
        os.makedirs(os.path.join(imgs, "sub"))
        for i, name in enumerate(names):
            src = "png_gray8.png" if name.endswith(".png") else "dx_mono2_rle.dcm" if i % 2 else "cr_mono1_jpegls.dcm"
            shutil.copy(os.path.join(SAMPLES, src), os.path.join(imgs, name))
        rc, out, err = run(exe, "screen", "--list", imgs)
        paths = out.splitlines()
        check(rc == 0 and len(paths) == 12 and paths == sorted(paths) and all(p.startswith("/") for p in paths),
              "screen --list: 12 sorted absolute paths")
        man = os.path.join(tmp, "manifest")
        with open(man, "w") as f:
            f.write("# a comment, then the list, then one path again\n" + out + "\n" + paths[0] + "\n")
        base = ["screen", "--model", MODEL, "--jobs", "1", "--question", Q1]

        # 1. bad shard options, each with its own message
        for args, env, want in [
            (["--shard", "3/3"], None, "0 <= K < N"), (["--shard", "1"], None, "expected K/N"),
            (["--shard", "-1/2"], None, "0 <= K < N"), (["--shard", "0/0"], None, "0 <= K < N"),
            (["--shard-from-env"], {}, "SLURM_ARRAY_TASK_ID is not set"),
            (["--shard-from-env"], {"SLURM_ARRAY_TASK_ID": "1"}, "SLURM_ARRAY_TASK_COUNT is not set"),
            (["--shard-from-env"], {"SLURM_ARRAY_TASK_ID": "4", "SLURM_ARRAY_TASK_COUNT": "4"}, "do not make a shard"),
            (["--shard-from-env"], {"SLURM_ARRAY_TASK_ID": "x", "SLURM_ARRAY_TASK_COUNT": "4"}, "not a whole number"),
            (["--shard", "0/2", "--shard-from-env"], None, "exclude each other"),
        ]:
            e = {k: v for k, v in os.environ.items() if not k.startswith("SLURM_")}
            e.update(env or {})
            rc, _, err = run(exe, *(base + ["--db", os.path.join(tmp, "bad.sqlite")] + args + [imgs]), env=e)
            check(rc == 2 and want in err, "%s %s: exit 2, '%s' (%s)" % (" ".join(args), env or "", want, err.strip()[:100]))
        bad_man = os.path.join(tmp, "bad_manifest")
        with open(bad_man, "w") as f:
            f.write(paths[0] + "\n" + os.path.join(imgs, "missing.dcm") + "\n")
        rc, _, err = run(exe, *(base + ["--db", os.path.join(tmp, "bad.sqlite"), "--manifest", bad_man]))
        check(rc == 2 and "bad_manifest:2:" in err and "missing.dcm" in err, "a missing manifest path names its line: " + err.strip()[:120])

        # 2. three shards, from the manifest; shard 1 through the Slurm variables
        shard_db = [os.path.join(tmp, "shard-%d.sqlite" % k) for k in range(3)]
        for k in range(3):
            e = {kk: v for kk, v in os.environ.items() if not kk.startswith("SLURM_")}
            how = ["--shard", "%d/3" % k]
            if k == 1:
                e.update(SLURM_ARRAY_TASK_ID="11", SLURM_ARRAY_TASK_MIN="10", SLURM_ARRAY_TASK_COUNT="3")
                how = ["--shard-from-env"]
            rc, _, err = run(exe, *(base + ["--db", shard_db[k], "--csv", shard_db[k] + ".csv", "--manifest", man] + how), env=e)
            want = [p for p in paths if shard_of(p, 3) == k]
            got = csv_paths(shard_db[k] + ".csv") if rc == 0 else []
            check(rc == 0 and got == want and "shard %d/3: %d of 12 images" % (k, len(want)) in err,
                  "shard %d/3 (%s) screens the %d images the rule gives it" % (k, how[0], len(want)))
        rc, _, err = run(exe, *(base + ["--db", shard_db[0], "--manifest", man, "--shard", "0/3"]))
        n0 = len([p for p in paths if shard_of(p, 3) == 0])
        check(rc == 0 and "0 answered, 0 refused, 0 failed, %d from earlier runs" % n0 in err, "a rerun of shard 0 answers nothing again")

        # one screen over everything, for the CSV to compare with
        single = os.path.join(tmp, "single.csv")
        rc, _, err = run(exe, *(base + ["--db", os.path.join(tmp, "single.sqlite"), "--csv", single, imgs]))
        check(rc == 0, "single screen over all 12 images")

        # 3. merge
        merged = os.path.join(tmp, "merged.sqlite")
        rc, out, err = run(exe, "audit", "merge", "--out", merged, *shard_db)
        rows = [count(db) for db in shard_db]
        check(rc == 0 and "%d rows added from 3 shards" % sum(rows) in out, "merge of 3 shards: %s" % (out + err).strip()[-160:])
        rc, out, err = run(exe, "audit", "verify", "--db", merged)
        check(rc == 0 and "3 shard merges holding %d shard rows" % sum(rows) in out, "verify merged: " + (out + err).strip()[-140:])
        check(count(merged) == sum(rows) + 3, "merged store: every shard row plus one event per shard")
        check(count(merged, "SELECT count(*) FROM (SELECT source, question FROM audit WHERE outcome IN (0, 4) AND "
                            "event_type != 'audit-merge' GROUP BY 1, 2 HAVING count(*) > 1)") == 0 and
              count(merged, "SELECT count(DISTINCT source) FROM audit WHERE event_type != 'audit-merge'") == 12,
              "every (image, question) exactly once")
        col = os.path.join(tmp, "collected.csv")
        rc, _, err = run(exe, "screen", "--collect", merged, "--question", Q1, "--csv", col)
        check(rc == 0 and open(col).read() == open(single).read(), "screen --collect of the merge = the single screen's CSV")
        rc, _, err = run(exe, "screen", "--collect", merged)
        check(rc == 2 and "--csv" in err, "--collect without an output: " + err.strip()[:80])
        rc, _, err = run(exe, "screen", "--collect", merged, "--csv", col, imgs)
        check(rc == 2 and "reads no images" in err, "--collect with paths: " + err.strip()[:80])

        # 4. idempotent; a shard that went on
        head = count(merged)
        rc, out, err = run(exe, "audit", "merge", "--out", merged, shard_db[1], shard_db[1])
        check(rc == 0 and out.count("already merged") == 2 and count(merged) == head,
              "shard 1 again, twice: 'already merged', nothing added")
        rc, _, err = run(exe, *(["screen", "--model", MODEL, "--jobs", "1", "--question", Q2, "--db", shard_db[0],
                                 "--manifest", man, "--shard", "0/3"]))
        n0_rows = count(shard_db[0])
        rc, out, err = run(exe, "audit", "merge", "--out", merged, shard_db[0])
        check(rc == 0 and "merged %d rows (shard seq %d to %d" % (n0, n0 + 1, n0_rows) in out,
              "shard 0 went on (a second question): only its %d new rows merged: %s" % (n0, out.strip()[:120]))
        rc, out, err = run(exe, "audit", "verify", "--db", merged)
        check(rc == 0 and "4 shard merges" in out, "verify after the continued shard: " + (out + err).strip()[-120:])
        # a shard the rule gives no image (a Slurm array wider than the folder): nothing to merge, nothing added
        one = os.path.join(tmp, "one_manifest")
        with open(one, "w") as f:
            f.write(paths[0] + "\n")
        k_empty = 1 - shard_of(paths[0], 2)
        empty_db = os.path.join(tmp, "shard-empty.sqlite")
        rc, _, err = run(exe, *(base + ["--db", empty_db, "--manifest", one, "--shard", "%d/2" % k_empty]))
        check(rc == 0 and "shard %d/2: 0 of 1 image" % k_empty in err, "a shard with no image screens nothing: " + err.strip()[-100:])
        head = count(merged)
        rc, out, err = run(exe, "audit", "merge", "--out", merged, empty_db)
        check(rc == 0 and "empty shard: nothing to merge" in out and count(merged) == head,
              "an empty shard: 'nothing to merge', nothing added: " + (out + err).strip()[:100])
        rc, out, err = run(exe, "audit", "verify", "--db", merged)
        check(rc == 0 and "4 shard merges" in out, "verify after the empty shard: " + (out + err).strip()[-80:])

        # 5. refused shards: named, nothing written
        head = count(merged)
        edited = os.path.join(tmp, "edited.sqlite")
        copy_db(shard_db[2], edited)
        tamper(edited, "UPDATE audit SET answer = 'no' WHERE seq = 2;")
        cut = os.path.join(tmp, "cut.sqlite")
        copy_db(shard_db[2], cut)
        tamper(cut, "DELETE FROM audit WHERE seq >= (SELECT max(seq) - 1 FROM audit);")
        fresh = os.path.join(tmp, "fresh.sqlite")
        for bad, want, code in [(edited, "TAMPERED (edited): row seq 2", 1), (cut, "TAMPERED (truncated)", 1)]:
            rc, out, err = run(exe, "audit", "merge", "--out", merged, shard_db[2], bad)
            check(rc == code and "shard %s: %s" % (bad, want) in err and "nothing merged" in err and count(merged) == head,
                  "%s shard refused, named, nothing merged: %s" % (os.path.basename(bad), err.strip().splitlines()[0][:150]))
            rc, out, err = run(exe, "audit", "merge", "--out", fresh, bad)
            check(rc == code and not os.path.exists(fresh), "... and no merged store created for it")
        bytes_cut = os.path.join(tmp, "bytes_cut.sqlite")
        with open(shard_db[2], "rb") as f:
            data = f.read()
        with open(bytes_cut, "wb") as f:
            f.write(data[: len(data) // 2])
        rc, out, err = run(exe, "audit", "merge", "--out", merged, bytes_cut)
        check(rc in (1, 3) and "bytes_cut.sqlite" in err and count(merged) == head,
              "a shard cut in bytes refused, named: " + err.strip().splitlines()[0][:150])
        rc, out, err = run(exe, "audit", "merge", "--out", os.path.join(tmp, "m2.sqlite"), merged)
        check(rc == 2 and "itself a merged store" in err, "a merged store as a shard: " + err.strip()[:120])
        rc, out, err = run(exe, "audit", "merge", "--out", merged)
        check(rc == 2 and "at least one shard" in err, "merge without shards: usage error")

        # 6. the merged store tampered afterwards
        for what, sql, want in [
            ("an origin's shard seq edited", "UPDATE merge_origin SET shard_seq = shard_seq + 1 WHERE seq = (SELECT max(seq) FROM merge_origin);", "shard mismatch"),
            ("an origin removed", "DELETE FROM merge_origin WHERE seq = (SELECT min(seq) FROM merge_origin);", "its row 1 is missing"),
            ("the last two origins of a merge removed", "DELETE FROM merge_origin WHERE merge_seq = (SELECT min(merge_seq)"
             " FROM merge_origin) AND shard_seq >= (SELECT max(shard_seq) - 1 FROM merge_origin WHERE merge_seq ="
             " (SELECT min(merge_seq) FROM merge_origin));", "its rows %d to %d are missing" % (n0 - 1, n0)),
            ("a copied row edited", "UPDATE audit SET findings_json = '[]' WHERE seq = 3;", "TAMPERED (edited): row seq 3"),
            ("an origin's shard row hash edited", "UPDATE merge_origin SET shard_row_hash = 'x' || substr(shard_row_hash, 2) WHERE seq = (SELECT max(seq) FROM merge_origin);", "no longer hashes"),
        ]:
            m = os.path.join(tmp, "m-tampered.sqlite")
            copy_db(merged, m)
            tamper(m, sql)
            rc, out, err = run(exe, "audit", "verify", "--db", m)
            check(rc == 1 and want in err, "merged store, %s: verify fails: %s" % (what, err.strip()[:170]))
            os.unlink(m)
        # rows chained properly but written into the merged store directly (a screen run against it)
        m = os.path.join(tmp, "m-appended.sqlite")
        copy_db(merged, m)
        rc, _, err = run(exe, *(["screen", "--model", MODEL, "--jobs", "1", "--question", "Is the heart enlarged?",
                                 "--db", m, paths[0]]))
        rc, out, err = run(exe, "audit", "verify", "--db", m)
        check(rc == 1 and "row seq %d comes from no merged shard" % (count(merged) + 1) in err,
              "merged store with a row appended directly: verify names it: " + err.strip()[:150])
    finally:
        if failures:
            print("kept for inspection:", tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
