#!/usr/bin/python3
"""test_malformed.py — hostile and malformed inputs through the real CLI.

Generates the suite (tests/malformed/generate.py) into a fresh temporary
tree, then for every file runs

    cxrvqa ask --json --db DB --sr-out SR_DIR FILE "Is there a pleural effusion?"

and once over the whole folder

    cxrvqa screen --db DB2 --sr-out SR_DIR2 --csv CSV --jsonl JSONL --question Q DIR

and checks, per file:
  - the outcome the manifest names: an error (exit 1, JSON "code"), a
    refusal (exit 0, "refused", "reason_code"), a refused structured report
    (code "sr-failed": exit 3, "sr": null; the answer itself is released) or
    an answer whose identifiers are hostile (exit 0, SR named by its own
    generated UID, inside SR_DIR);
  - no structured report written for anything but an answer (nothing left in
    SR_DIR/.pending either);
  - an answer to a corrupt-but-readable file (manifest "warning") carries a
    warning that names the damage, in the JSON and in its audit row;
  - one audit row naming the file, with the outcome (8 error, 4 refusal,
    0 answer), the error code (numeric value and name read from
    common/cxr_common.h and .c, not from the program) or the refusal reason
    code, and a non-empty reason; the chain verifies;
  - wall time under --time-limit (1 s) and peak RSS under --rss-limit-mb
    (256 MB), measured per run with os.wait4 (the child's own rusage);
  - the same outcome in the screen CSV / JSONL (per-task latency under the
    time limit) and the screen audit database; screen's peak RSS (its
    workers included) under the RSS limit;
  - nothing appears or changes in the temporary tree outside SR_DIR,
    SR_DIR2, the databases' folder and the CSV folder (the children run in
    an empty working directory, with TMPDIR and HOME inside the tree), and
    the paths the hostile UIDs aim at (/tmp/cxrvqa-escape, /tmp/cxrvqa-abs)
    do not appear.

Usage: /usr/bin/python3 tests/malformed/test_malformed.py --cxrvqa build/cxrvqa [--keep]
       [--time-limit S] [--rss-limit-mb MB] [--sanitized] [--only SUBSTRING]
--sanitized (ASan/UBSan builds) raises the limits to 10 s and 1024 MB.
Exit status 0 when every check passes, 1 otherwise (each failure printed
with the command that reproduces it).
"""
import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import threading
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
QUESTION = "Is there a pleural effusion?"
HOSTILE_TARGETS = ["/tmp/cxrvqa-escape", "/tmp/cxrvqa-abs"]


def error_codes():
    """{name: value} from the sources: CXR_ERR_X = -N (cxr_common.h) and
    case CXR_ERR_X: return "name" (cxr_common.c)."""
    with open(os.path.join(ROOT, "common", "cxr_common.h")) as f:
        values = {m.group(1): int(m.group(2)) for m in re.finditer(r"(CXR_(?:OK|ERR_\w+))\s*=\s*(-?\d+)", f.read())}
    with open(os.path.join(ROOT, "common", "cxr_common.c")) as f:
        names = {m.group(2): values[m.group(1)] for m in re.finditer(r"case (CXR_\w+):\s*return \"([^\"]+)\"", f.read())}
    return names


def run(cmd, cwd, env, timeout):
    """Run cmd; return (exit status, stdout, stderr, wall seconds, peak RSS MB)
    with the child's own rusage (os.wait4), killing it after timeout."""
    out = tempfile.TemporaryFile()
    err = tempfile.TemporaryFile()
    t0 = time.monotonic()
    p = subprocess.Popen(cmd, cwd=cwd, env=env, stdout=out, stderr=err, start_new_session=True)
    killed = []

    def kill():
        killed.append(1)
        try:
            os.killpg(p.pid, 9)
        except ProcessLookupError:
            pass
    timer = threading.Timer(timeout, kill)
    timer.start()
    _, status, ru = os.wait4(p.pid, 0)
    wall = time.monotonic() - t0
    timer.cancel()
    p.returncode = os.waitstatus_to_exitcode(status)
    out.seek(0)
    err.seek(0)
    so = out.read().decode("utf-8", "replace")
    se = err.read().decode("utf-8", "replace")
    if killed:
        se += f"\n[killed after {timeout} s]"
    return p.returncode, so, se, wall, ru.ru_maxrss / 1024.0


def snapshot(root, skip):
    snap = {}
    for dp, dns, fns in os.walk(root):
        rel = os.path.relpath(dp, root)
        if rel.split(os.sep)[0] in skip:
            dns[:] = []
            continue
        for n in dns + fns:
            if rel == "." and n in skip:
                continue
            p = os.path.join(dp, n)
            st = os.lstat(p)
            snap[os.path.relpath(p, root)] = (st.st_mode, st.st_size, st.st_mtime_ns)
    return snap


def files_under(d):
    out = set()
    for dp, _, fns in os.walk(d):
        for n in fns:
            out.add(os.path.relpath(os.path.join(dp, n), d))
    return out


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--keep", action="store_true", help="keep the temporary tree (printed)")
    ap.add_argument("--time-limit", type=float)
    ap.add_argument("--rss-limit-mb", type=float)
    ap.add_argument("--sanitized", action="store_true")
    ap.add_argument("--only", help="run the files whose name contains this")
    ap.add_argument("--jobs", type=int, default=2, help="screen workers")
    a = ap.parse_args()
    tlim = a.time_limit or (10.0 if a.sanitized else 1.0)
    rlim = a.rss_limit_mb or (1024.0 if a.sanitized else 256.0)
    exe = os.path.abspath(a.cxrvqa)
    codes = error_codes()

    pre_existing = [t for t in HOSTILE_TARGETS if os.path.lexists(t)]
    base = tempfile.mkdtemp(prefix="cxr-malformed-")
    dirs = {k: os.path.join(base, k) for k in ("inputs", "ask_sr", "screen_sr", "db", "out", "cwd", "tmp", "home")}
    for d in dirs.values():
        os.makedirs(d)
    gen = subprocess.run([sys.executable, os.path.join(ROOT, "tests", "malformed", "generate.py"), dirs["inputs"]],
                         capture_output=True, text=True)
    sys.stderr.write(gen.stderr)
    if gen.returncode != 0:
        print(f"test_malformed: generator failed ({gen.returncode})")
        return 1
    with open(os.path.join(dirs["inputs"], "manifest.json")) as f:
        manifest = json.load(f)
    os.unlink(os.path.join(dirs["inputs"], "manifest.json"))  # screen walks the folder
    if a.only:
        for m in manifest:
            if a.only not in m["file"]:
                os.unlink(os.path.join(dirs["inputs"], m["file"]))
        manifest = [m for m in manifest if a.only in m["file"]]
    inputs_real = os.path.realpath(dirs["inputs"])
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXRVQA_") and k not in ("XDG_STATE_HOME",)}
    env.update(TMPDIR=dirs["tmp"], HOME=dirs["home"], LC_ALL="C.UTF-8")
    changing = {"ask_sr", "screen_sr", "db", "out"}
    before = snapshot(base, changing)
    cwd_before = set(os.listdir(os.getcwd()))

    failures = []  # (file, what, reproducer)
    rows = []
    db1 = os.path.join(dirs["db"], "ask.sqlite")
    print(f"test_malformed: {len(manifest)} files in {len(set(m['category'] for m in manifest))} categories; "
          f"limits {tlim:g} s, {rlim:g} MB; tree {base}")

    # ------------------------------------------------------------ ask, one by one
    for m in manifest:
        path = os.path.join(dirs["inputs"], m["file"])
        cmd = [exe, "ask", "--json", "--db", db1, "--sr-out", dirs["ask_sr"], path, QUESTION]
        repro = (f"/usr/bin/python3 tests/malformed/generate.py /tmp/mal && {a.cxrvqa} ask --json --db /tmp/mal.db "
                 f"--sr-out /tmp/mal-sr /tmp/mal/{m['file']} \"{QUESTION}\"")
        sr_before = files_under(dirs["ask_sr"])
        rc, so, se, wall, rss = run(cmd, dirs["cwd"], env, max(60.0, 20 * tlim))
        new_sr = files_under(dirs["ask_sr"]) - sr_before
        try:
            j = json.loads(so)
        except ValueError:
            j = None
        exp = m["expect"]
        if j is None:
            got = f"exit {rc}, no JSON"
        elif j.get("code"):
            got = j["code"]
        elif j.get("refused"):
            got = "refused:" + str(j.get("reason_code"))
        else:
            got = "answer" + (" (sr not written)" if rc == 3 else "")
        want = {"error": m["code"], "refusal": f"refused:{m['code']}", "answer": "answer"}[exp]
        bad = []
        if exp == "error" and m["code"] == "sr-failed":
            want = "answer (sr not written)"
            if not (rc == 3 and j is not None and j.get("sr") is None and "structured report" in se):
                bad.append(f"expected exit 3 with \"sr\": null and a structured-report error, got exit {rc}")
        elif exp == "error":
            if rc != 1 or j is None or j.get("code") != m["code"]:
                bad.append(f"expected exit 1 and code {m['code']}, got exit {rc} / {got}")
        elif exp == "refusal":
            if rc != 0 or j is None or not j.get("refused") or j.get("reason_code") != m["code"]:
                bad.append(f"expected a refusal {m['code']}, got exit {rc} / {got}")
        else:
            sr = (j or {}).get("sr") or {}
            uid = sr.get("sop_instance_uid", "")
            if rc != 0 or j is None or j.get("refused") or j.get("code"):
                bad.append(f"expected an answer, got exit {rc} / {got}")
            elif m.get("warning") and not any(m["warning"] in w for w in j.get("warnings") or []):
                bad.append(f"no warning naming the damage ({m['warning']!r}): {j.get('warnings')}")
            elif not (re.fullmatch(r"[0-9.]{1,64}", uid) and
                      os.path.realpath(sr.get("path", "")) == os.path.realpath(os.path.join(dirs["ask_sr"], uid + ".dcm"))):
                bad.append(f"structured report not named by its own UID inside the output folder: {sr}")
        expected_sr = {os.path.basename((j or {}).get("sr", {}).get("path", ""))} if exp == "answer" and j and j.get("sr") else set()
        if new_sr != expected_sr:
            bad.append(f"files written in the SR folder: {sorted(new_sr)} (expected {sorted(expected_sr)})")
        if wall > tlim:
            bad.append(f"took {wall:.2f} s (limit {tlim:g})")
        if rss > rlim:
            bad.append(f"peak RSS {rss:.0f} MB (limit {rlim:g})")
        for b in bad:
            failures.append((m["file"], "ask: " + b, repro))
        rows.append(dict(m=m, want=want, got=got, wall=wall, rss=rss, ok=not bad, screen="", screen_ok=True))

    # ------------------------------------------------------------ the audit of the asks
    def audit_rows(db):
        rc, so, se, _, _ = run([exe, "audit", "export", "--format", "jsonl", "--db", db], dirs["cwd"], env, 120)
        if rc != 0:
            failures.append(("(audit)", f"audit export of {db} failed: {se.strip()}", ""))
            return []
        rcv, _, sev, _, _ = run([exe, "audit", "verify", "--db", db], dirs["cwd"], env, 120)
        if rcv != 0:
            failures.append(("(audit)", f"audit verify of {db} failed: {sev.strip()}", ""))
        return [json.loads(line) for line in so.splitlines() if line.strip()]

    def check_audit(rows_, tag, path_of):
        by_source = {}
        for r in rows_:
            by_source.setdefault(r.get("source"), []).append(r)
        for m in manifest:
            src = path_of(m["file"])
            got = by_source.get(src, [])
            what = f"{tag} audit"
            if len(got) != 1:
                failures.append((m["file"], f"{what}: {len(got)} rows for {src} (expected 1)", ""))
                continue
            r = got[0]
            code = m["code"]
            if m["expect"] == "error":
                ok = (r.get("outcome") == 8 and r.get("answer") == "error" and r.get("error_code") == codes[code] and
                      r.get("error") == code and r.get("reason"))
            elif m["expect"] == "refusal":
                ok = (r.get("outcome") == 4 and r.get("event_type") == "refusal" and
                      str(r.get("reason", "")).startswith(code + ":"))
            else:
                ok = r.get("outcome") == 0 and r.get("sr_uid") and not r.get("error_code")
                if ok and m.get("warning"):
                    ok = m["warning"] in json.dumps(r.get("warnings"), ensure_ascii=False)
            if not ok:
                keys = ("event_type", "outcome", "answer", "error_code", "error", "reason", "sr_uid", "warnings")
                failures.append((m["file"], f"{what}: row does not say what was expected ({m['expect']} {code}): " +
                                 json.dumps({k: r.get(k) for k in keys}, ensure_ascii=False)[:400], ""))

    check_audit(audit_rows(db1), "ask", lambda f: os.path.join(dirs["inputs"], f))
    if files_under(os.path.join(dirs["ask_sr"], ".pending")):
        failures.append(("(ask)", "structured reports left in .pending", ""))

    # ------------------------------------------------------------ screen, all at once
    db2 = os.path.join(dirs["db"], "screen.sqlite")
    csv_path = os.path.join(dirs["out"], "screen.csv")
    jsonl_path = os.path.join(dirs["out"], "screen.jsonl")
    cmd = [exe, "screen", "--db", db2, "--sr-out", dirs["screen_sr"], "--csv", csv_path, "--jsonl", jsonl_path,
           "--question", QUESTION, "--jobs", str(a.jobs), "--timeout", "60", dirs["inputs"]]
    rc, so, se, wall, rss = run(cmd, dirs["cwd"], env, 900)
    print(f"test_malformed: screen: exit {rc}, {wall:.1f} s for {len(manifest)} files "
          f"({1000 * wall / max(1, len(manifest)):.0f} ms a file), peak RSS {rss:.0f} MB (workers included)")
    print("  " + se.strip().splitlines()[-1] if se.strip() else "  (no output)")
    if rc not in (0, 1):
        failures.append(("(screen)", f"screen exit {rc}: {se.strip()[-400:]}", " ".join(cmd)))
    if rss > rlim:
        failures.append(("(screen)", f"screen peak RSS {rss:.0f} MB (limit {rlim:g})", ""))
    if wall > tlim * max(1, len(manifest)):
        failures.append(("(screen)", f"screen took {wall:.1f} s for {len(manifest)} files", ""))
    by_path = {}
    if os.path.exists(csv_path):
        with open(csv_path, newline="") as f:
            for r in csv.DictReader(f):
                by_path.setdefault(r["path"], []).append(r)
    lat = {}
    if os.path.exists(jsonl_path):
        with open(jsonl_path) as f:
            for line in f:
                o = json.loads(line)
                res = o.get("result") or {}
                lat[o["path"]] = res.get("latency_ms")
    n_answers = 0
    for row in rows:
        m = row["m"]
        p = os.path.join(inputs_real, m["file"])
        got = by_path.get(p, [])
        if not got:
            row["screen"], row["screen_ok"] = "missing", False
            failures.append((m["file"], "screen: no CSV row", " ".join(cmd)))
            continue
        r = got[0]
        row["screen"] = r["status"] + (":" + r["reason"].split(":")[0] if r["status"] == "error" else "")
        if m["expect"] == "error":
            ok = r["status"] == "error" and r["reason"].startswith(m["code"] + ":")
        elif m["expect"] == "refusal":
            ok = r["status"] == "refused"
        else:
            ok = r["status"] == "ok"
            n_answers += 1
        ms = lat.get(p)
        if ms is None or ms > tlim * 1000:
            ok = False
            failures.append((m["file"], f"screen: latency_ms {ms} (limit {tlim * 1000:g})", ""))
        if not ok:
            row["screen_ok"] = False
            failures.append((m["file"], f"screen: CSV says {r['status']} / {r['reason'][:200]!r}", " ".join(cmd)))
    check_audit(audit_rows(db2), "screen", lambda f: os.path.join(inputs_real, f))
    sr2 = {f for f in files_under(dirs["screen_sr"]) if not f.startswith(".pending" + os.sep)}
    if len(sr2) != n_answers or files_under(os.path.join(dirs["screen_sr"], ".pending")):
        failures.append(("(screen)", f"{len(sr2)} structured reports in the screen SR folder, {n_answers} expected", ""))
    for f in sr2:
        if not re.fullmatch(r"[0-9.]{1,64}\.dcm", f):
            failures.append(("(screen)", f"structured report with an unexpected name: {f!r}", ""))

    # ------------------------------------------------------------ nothing elsewhere
    after = snapshot(base, changing)
    for k in sorted(set(before) | set(after)):
        if before.get(k) != after.get(k):
            how = "appeared" if k not in before else "disappeared" if k not in after else "changed"
            failures.append(("(files)", f"{k} {how} outside the output folders", ""))
    for t in HOSTILE_TARGETS:
        if os.path.lexists(t) and t not in pre_existing:
            failures.append(("(files)", f"{t} appeared: a hostile identifier reached a file name", ""))
    cwd_after = set(os.listdir(os.getcwd()))
    if cwd_after - cwd_before:
        failures.append(("(files)", f"appeared in the working directory: {sorted(cwd_after - cwd_before)}", ""))
    allowed_db = {"ask.sqlite", "screen.sqlite", "screen.sqlite.screen.lock", "ask.sqlite-wal", "ask.sqlite-shm",
                  "screen.sqlite-wal", "screen.sqlite-shm"}
    extra_db = set(os.listdir(dirs["db"])) - allowed_db
    if extra_db:
        failures.append(("(files)", f"unexpected files next to the databases: {sorted(extra_db)}", ""))
    extra_out = set(os.listdir(dirs["out"])) - {"screen.csv", "screen.jsonl"}
    if extra_out:
        failures.append(("(files)", f"unexpected files next to the CSV: {sorted(extra_out)}", ""))

    # ------------------------------------------------------------ report
    print(f"\n{'file':30s} {'category':18s} {'expected':30s} {'ask got':30s} {'ms':>5s} {'MB':>4s}  screen")
    for row in rows:
        m = row["m"]
        mark = "ok " if row["ok"] and row["screen_ok"] else "FAIL"
        print(f"{m['file'][:30]:30s} {m['category'][:18]:18s} {row['want'][:30]:30s} {row['got'][:30]:30s} "
              f"{1000 * row['wall']:5.0f} {row['rss']:4.0f}  {row['screen'][:28]:28s} {mark}")
    cats = {}
    for m in manifest:
        cats[m["category"]] = cats.get(m["category"], 0) + 1
    print("\ncategories: " + ", ".join(f"{k} {v}" for k, v in sorted(cats.items())))
    walls = sorted(r["wall"] for r in rows)
    rsss = sorted(r["rss"] for r in rows)
    if rows:
        print(f"ask: wall median {1000 * walls[len(walls) // 2]:.0f} ms, max {1000 * walls[-1]:.0f} ms; "
              f"peak RSS median {rsss[len(rsss) // 2]:.0f} MB, max {rsss[-1]:.0f} MB")
    if failures:
        print(f"\ntest_malformed: {len(failures)} FAILURE(S):")
        for f, what, repro in failures:
            print(f"  {f}: {what}")
            if repro:
                print(f"    reproduce: {repro}")
    else:
        print("\ntest_malformed: all checks passed")
    if a.keep:
        print(f"test_malformed: kept {base}")
    else:
        shutil.rmtree(base, ignore_errors=True)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
