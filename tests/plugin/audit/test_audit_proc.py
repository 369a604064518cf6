#!/usr/bin/python3
"""test_audit_proc.py — the audit store across processes, driving
tests/plugin/audit/audit_stress.c: crash safety (SIGKILL at random points, resume),
concurrent appenders, throughput (synchronous FULL vs NORMAL) and the time
to verify 100 000 rows, `cxrvqa audit` (verify / export jsonl + DICOM XML /
show), and fail-closed on a full or read-only filesystem (mount namespaces;
skipped with the reason when mounting is not allowed).

It also re-implements the row hash from its description in plugin/audit/audit.c
(an independent twin in Python): the rows C writes must hash the same here,
and the 100 000 rows written here must verify in C.

usage: test_audit_proc.py --stress PATH/audit_stress {crash|concurrency|throughput|cli|mounts}
Exit 0 pass, 1 fail, 77 skipped.
"""
import argparse
import hashlib
import json
import os
import random
import shutil
import signal
import sqlite3
import struct
import subprocess
import sys
import tempfile
import threading
import time
import xml.etree.ElementTree as ET

GENESIS = "0" * 64
DOMAIN = b"cxrvqa-audit-row-v1\0"
HASHED = ("seq time_utc event_type event_id event_action outcome user_name application host pid question "
          "language intent study_uid series_uid sop_uid sop_class_uid accession source patient_id answer "
          "answer_text findings_json warnings_json model_name model_version model_sha256 prompt_version sr_uid "
          "sr_dest latency_ms error_code reason request_key prev_hash").split()

FAILURES = []


def check(cond, msg):
    print(("ok   " if cond else "FAIL ") + msg, flush=True)
    if not cond:
        FAILURES.append(msg)


def row_hash(values):
    """SHA-256 of DOMAIN + per column: N | I + >q | S + >Q length + UTF-8 bytes (audit.c, row_hash)."""
    h = hashlib.sha256(DOMAIN)
    for v in values:
        if v is None:
            h.update(b"N")
        elif isinstance(v, int):
            h.update(b"I" + struct.pack(">q", v))
        else:
            b = v if isinstance(v, bytes) else v.encode("utf-8", "surrogateescape")
            h.update((b"S" if isinstance(v, str) else b"B") + struct.pack(">Q", len(b)) + b)
    return h.hexdigest()


def connect(path):
    db = sqlite3.connect(path, timeout=30)
    db.text_factory = lambda b: b.decode("utf-8", "surrogateescape")
    return db


def twin_check(path, limit=None):
    """Recompute every stored row_hash and the chain in Python; return the number of rows checked."""
    db = connect(path)
    cols = ", ".join(HASHED)
    prev, n = GENESIS, 0
    for row in db.execute(f"SELECT {cols}, row_hash FROM audit ORDER BY id" + (f" LIMIT {limit}" if limit else "")):
        vals, stored = list(row[:-1]), row[-1]
        if vals[-1] != prev or row_hash(vals) != stored:
            db.close()
            return -(n + 1)
        prev, n = stored, n + 1
    db.close()
    return n


def verify(stress, path):
    p = subprocess.run([stress, "verify", path], capture_output=True, text=True)
    out = dict(kv.split("=", 1) for kv in p.stdout.split("\n")[0].split()[1:]) if p.stdout.startswith("verify") else {}
    return p.returncode, out, p.stdout + p.stderr


# ---------------------------------------------------------------------------
def test_crash(stress, tmp):
    path = os.path.join(tmp, "crash.sqlite")
    rng = random.Random(int(os.environ.get("CXR_AUDIT_SEED", time.time())))
    printed, kills, runs, total = set(), 0, 0, 1000
    while True:
        runs += 1
        proc = subprocess.Popen([stress, "write", path, "0", str(total)], stdout=subprocess.PIPE, text=True)
        lines, got_line = [], threading.Condition()

        def reader():
            for line in proc.stdout:
                with got_line:
                    lines.append(int(line))
                    got_line.notify_all()
            with got_line:
                got_line.notify_all()

        t = threading.Thread(target=reader)
        t.start()
        if kills < 15:
            # kill after k committed rows plus a random sliver (lands anywhere in the next append),
            # or, one time in five, k = 0 and a few ms after start (open, WAL switch, migration)
            k = 0 if rng.random() < 0.2 else rng.randint(1, 60)
            with got_line:
                got_line.wait_for(lambda: len(lines) >= k or proc.poll() is not None, timeout=30)
            time.sleep(rng.uniform(0, 0.004))
            if proc.poll() is None:
                proc.send_signal(signal.SIGKILL)
                kills += 1
        proc.wait()
        t.join()
        printed.update(lines)
        if proc.returncode == 0:
            break
        if runs > 200:
            break
    print(f"     {runs} runs, {kills} SIGKILLs, {len(printed)} rows reported committed")
    check(kills >= 10, f"killed at >= 10 random points ({kills})")
    db = connect(path)
    ic = db.execute("PRAGMA integrity_check").fetchall()
    keys = [r[0] for r in db.execute("SELECT request_key FROM audit")]
    db.close()
    check(ic == [("ok",)], f"PRAGMA integrity_check: {ic}")
    rc, out, text = verify(stress, path)
    check(rc == 0 and out.get("rows") == str(total), f"verify after crashes: {text.strip()}")
    want = {f"req-{n}" for n in range(total)}
    dup = len(keys) - len(set(keys))
    check(len(keys) == total and set(keys) == want and dup == 0,
          f"every N in 0..{total - 1} present exactly once ({len(keys)} rows, {dup} duplicates)")
    check(all(f"req-{n}" in set(keys) for n in printed), "every N printed as committed is present")
    check(twin_check(path) == total, "Python twin of the row hash agrees with every stored row")


# ---------------------------------------------------------------------------
def test_concurrency(stress, tmp):
    path = os.path.join(tmp, "conc.sqlite")  # not created yet: the four race to create it too
    procs = [subprocess.Popen([stress, "write", path, "0", "250", "--prefix", f"w{w}-"], stdout=subprocess.DEVNULL,
                              stderr=subprocess.PIPE, text=True) for w in range(4)]
    errs = [p.communicate()[1] for p in procs]
    check(all(p.returncode == 0 for p in procs), f"4 writers exit 0 ({[p.returncode for p in procs]} {errs})")
    rc, out, text = verify(stress, path)
    check(rc == 0 and out.get("rows") == "1000", f"verify: {text.strip()}")
    db = connect(path)
    keys = [r[0] for r in db.execute("SELECT request_key FROM audit ORDER BY seq")]
    db.close()
    check(len(keys) == 1000 and len(set(keys)) == 1000, f"1000 distinct rows ({len(keys)})")
    switches = sum(1 for a, b in zip(keys, keys[1:]) if a.split("-")[0] != b.split("-")[0])
    print(f"     writers interleaved: {switches} switches between writers along the chain")
    check(switches >= 3, f"the writers really ran at the same time ({switches} switches)")
    check(twin_check(path) == 1000, "Python twin agrees")


# ---------------------------------------------------------------------------
def test_throughput(stress, tmp):
    p = subprocess.run([stress, "bench", os.path.join(tmp, "full.sqlite"), os.path.join(tmp, "normal.sqlite"), "500"],
                       capture_output=True, text=True)
    check(p.returncode == 0, f"bench: {p.stdout.strip()} {p.stderr.strip()}")
    print(f"     append throughput: {p.stdout.strip()}")

    # 100 000 rows, written here in one transaction by the Python twin, verified by C
    path = os.path.join(tmp, "big.sqlite")
    subprocess.run([stress, "write", path, "0", "0"], check=True, stdout=subprocess.DEVNULL)  # schema only
    db = connect(path)
    cols = HASHED + ["row_hash"]
    sql = f"INSERT INTO audit({', '.join(cols)}) VALUES({', '.join('?' * len(cols))})"
    prev, rows, n = GENESIS, [], 100000
    t0 = time.time()
    for s in range(1, n + 1):
        v = [s, "2024-05-01T10:00:00.%03dZ" % (s % 1000), "screen", 110103, "R", 0 if s % 10 else 4, "rad", "PACS",
             "host", 4242, f"Is there a pleural effusion? #{s}", "en", "presence", "1.2.3.%d" % (s % 97), "1.2.3.4",
             "1.2.3.4.%d" % s, "1.2.840.10008.5.1.4.1.1.1.1", "ACC%d" % s, "/data/%d.dcm" % s, "PAT%d" % (s % 500),
             "no", "No pleural effusion.", '{"pleural_effusion":{"p":0.08,"threshold":0.5}}', "[]", "cxr-cnn", "1.0",
             "0f3c", "p1", None, None, 35, 0, None, f"req-{s}", prev]
        h = row_hash(v)
        rows.append(v + [h])
        prev = h
    db.executemany(sql, rows)
    db.execute("UPDATE meta SET value = ? WHERE key = 'chain_head_seq'", (n,))
    db.execute("UPDATE meta SET value = ? WHERE key = 'chain_head_hash'", (prev,))
    db.commit()
    db.close()
    print(f"     wrote {n} rows with the Python twin in {time.time() - t0:.1f} s")
    rc, out, text = verify(stress, path)
    secs = float(out.get("seconds", "99"))
    print(f"     verify of {n} rows: {secs:.3f} s")
    check(rc == 0 and out.get("rows") == str(n), f"C verifies the twin's {n} rows: {text.strip()}")
    check(secs < 10.0, f"verify {n} rows in under 10 s ({secs:.3f} s)")
    db = connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET answer = 'yes' WHERE seq = 54321")
    db.commit()
    db.close()
    rc, out, text = verify(stress, path)
    check(rc == 1 and "seq 54321" in text, f"tampered row found among {n}: {text.strip()}")


# ---------------------------------------------------------------------------
def cli(stress, *args):
    p = subprocess.run([stress, "cli", "audit", *args], capture_output=True)
    return p.returncode, p.stdout.decode("utf-8", "replace"), p.stderr.decode("utf-8", "replace")


def test_cli(stress, tmp):
    path = os.path.join(tmp, "cli.sqlite")
    subprocess.run([stress, "write", path, "0", "20"], check=True, stdout=subprocess.DEVNULL)
    subprocess.run([stress, "hostile", path], check=True)
    rc, out, err = cli(stress, "verify", "--db", path)
    check(rc == 0 and "intact: 23 rows" in out, f"verify intact -> 0: {out.strip()} {err.strip()}")

    # jsonl
    jl = os.path.join(tmp, "out.jsonl")
    rc, out, err = cli(stress, "export", "--db", path, "--out", jl)
    check(rc == 0, f"export jsonl -> 0 {err.strip()}")
    check((os.stat(jl).st_mode & 0o777) == 0o600, "export file created 0600")
    objs = [json.loads(line) for line in open(jl, encoding="utf-8")]
    check(len(objs) == 23 and [o["seq"] for o in objs] == list(range(1, 24)), "23 JSON objects in seq order")
    db = connect(path)
    stored = {r[0]: r[1:] for r in db.execute("SELECT seq, question, patient_id, row_hash FROM audit")}
    db.close()
    check(all(o["row_hash"] == stored[o["seq"]][2] for o in objs), "jsonl row_hash = stored row_hash")
    check(objs[0]["findings"]["pleural_effusion"]["threshold"] == 0.5, "findings embedded as JSON")
    check(objs[9]["outcome"] == 4 and objs[9]["error"] == "not-chest", "refusal row: outcome 4, error name")
    check(objs[20]["question"] == stored[21][0], "hostile question survives JSON export")
    check("\ufffd" in objs[22]["question"], "invalid UTF-8 replaced by U+FFFD in JSON")
    rc, out, err = cli(stress, "export", "--db", path, "--study", "1.2.826.0.1.3680043.8.498.99")
    check(rc == 0 and len(out.splitlines()) == 3, f"--study filter: {len(out.splitlines())} rows")
    rc, out, err = cli(stress, "export", "--db", path, "--since", "2999-01-01T00:00Z")
    check(rc == 0 and out == "", "--since in the future: nothing")
    rc, out, err = cli(stress, "export", "--db", path, "--since", "2000-01-01")
    check(rc == 0 and len(out.splitlines()) == 23, "--since in the past: everything")

    # DICOM PS3.15 XML
    xf = os.path.join(tmp, "out.xml")
    rc, out, err = cli(stress, "export", "--db", path, "--format", "dicom-xml", "--out", xf)
    check(rc == 0, f"export dicom-xml -> 0 {err.strip()}")
    try:
        root = ET.parse(xf).getroot()
    except ET.ParseError as e:
        root = None
        check(False, f"XML is well-formed: {e}")
    if root is not None:
        msgs = root.findall("AuditMessage")
        check(root.tag == "AuditMessages" and len(msgs) == 23, f"23 AuditMessage elements ({len(msgs)})")
        m = msgs[0]
        ei = m.find("EventIdentification")
        eid = ei.find("EventID") if ei is not None else None
        check(ei is not None and ei.get("EventActionCode") == "R" and ei.get("EventOutcomeIndicator") == "0"
              and ei.get("EventDateTime", "").endswith("Z"), "EventIdentification attributes")
        check(eid is not None and eid.get("csd-code") == "110103" and eid.get("codeSystemName") == "DCM"
              and eid.get("originalText") == "DICOM Instances Accessed", "EventID 110103 DCM")
        aps = m.findall("ActiveParticipant")
        check(len(aps) == 2 and aps[0].get("UserIsRequestor") == "true" and aps[1].get("UserIsRequestor") == "false"
              and aps[1].find("RoleIDCode").get("csd-code") == "110150", "ActiveParticipant user + application")
        check(m.find("AuditSourceIdentification").get("AuditSourceID"), "AuditSourceIdentification")
        pos = m.findall("ParticipantObjectIdentification")
        pat = [p for p in pos if p.get("ParticipantObjectTypeCode") == "1"]
        study = [p for p in pos if p.get("ParticipantObjectTypeCode") == "2"]
        check(len(pat) == 1 and pat[0].get("ParticipantObjectTypeCodeRole") == "1"
              and pat[0].find("ParticipantObjectIDTypeCode").get("csd-code") == "2"
              and pat[0].get("ParticipantObjectID") == "PAT-STRESS", "patient object: type 1 role 1 id type 2")
        check(len(study) == 1 and study[0].get("ParticipantObjectTypeCodeRole") == "3"
              and study[0].find("ParticipantObjectIDTypeCode").get("csd-code") == "110180"
              and study[0].find("SOPClass/Instance").get("UID") == "1.2.826.0.1.3680043.8.498.11.1.1"
              and study[0].find("Accession").get("Number") == "ACC-STRESS", "study object: type 2 role 3, 110180, SOP")
        h = msgs[20]
        check(h.find("ActiveParticipant").get("UserID") == stored[21][0], "hostile user name round-trips through XML")
        desc = h.find("EventIdentification/EventOutcomeDescription").text
        check(desc == "not-chest: " + stored[21][0], f"reason escaped and back: {desc!r}")
        check(msgs[21].find("ActiveParticipant").get("UserID").startswith("tab\there\nnewline\rcr"),
              "tab/newline kept in attributes (character references)")
        check(h.find("ParticipantObjectIdentification/ParticipantObjectDetail") is not None,
              "SOP instance without class: ParticipantObjectDetail")

    # show
    rc, out, err = cli(stress, "show", "--db", path, "--limit", "5")
    lines = out.splitlines()
    check(rc == 0 and len(lines) >= 7 and lines[2].split()[0] == "23", f"show: header + 5 newest rows ({len(lines)})")
    rc, out, err = cli(stress, "show", "--db", path, "--study", "1.2.826.0.1.3680043.8.498.99")
    rows = [line for line in out.splitlines() if line.split() and line.split()[0].isdigit()]
    check(rc == 0 and len(rows) == 3 and all("498.99" in line for line in rows), f"show --study: {len(rows)} rows")

    # usage and errors
    for args, want in ((("",), 2), (("frob",), 2), (("export", "--db", path, "--format", "csv"), 2),
                       (("show", "--db", path, "--limit", "x"), 2), (("verify", "--bogus", "1"), 2),
                       (("export", "--db", path, "--since", "yesterday"), 2), (("--help",), 0),
                       (("verify", "--db", os.path.join(tmp, "none.sqlite")), 3),
                       (("export", "--db", path, "--out", os.path.join(tmp, "no", "dir", "x")), 3)):
        args = [a for a in args if a]
        rc, out, err = cli(stress, *args)
        check(rc == want, f"audit {' '.join(args)} -> {want} (got {rc}: {err.strip()[:120]})")

    # tampered -> 1, the row named
    db = connect(path)
    db.execute("DROP TRIGGER audit_no_update")
    db.execute("UPDATE audit SET answer = 'yes' WHERE seq = 3")
    db.commit()
    db.close()
    rc, out, err = cli(stress, "verify", "--db", path)
    check(rc == 1 and "seq 3" in err and "edited" in err, f"tampered -> 1: {err.strip()}")


# ---------------------------------------------------------------------------
def in_namespace(script):
    """Run sh script in a private mount namespace (mounts vanish with it)."""
    return subprocess.run(["unshare", "-m", "sh", "-c", script], capture_output=True, text=True)


def test_mounts(stress, tmp):
    probe = in_namespace(f"mount -t tmpfs -o size=64k tmpfs '{tmp}' && umount '{tmp}'")
    if probe.returncode != 0:
        print(f"SKIP: cannot mount in a private namespace ({probe.stderr.strip() or probe.returncode}); "
              "the unit test covers full (page limit), read-only (query_only) and I/O errors (RLIMIT_FSIZE)")
        return 77

    # a full filesystem: append until it fails, then every committed row must be there, chain intact
    mnt = os.path.join(tmp, "tiny")
    os.mkdir(mnt)
    db = os.path.join(mnt, "a.sqlite")
    p = in_namespace(f"mount -t tmpfs -o size=400k tmpfs '{mnt}' && '{stress}' until-fail '{db}'; echo exit=$?; "
                     f"'{stress}' verify '{db}'")
    out = p.stdout
    committed = sum(1 for line in out.splitlines() if line.startswith("committed "))
    err_line = next((line for line in out.splitlines() if line.startswith("error ")), "")
    print(f"     full tmpfs: {committed} rows committed, then: {err_line}")
    check("exit=0" in out and "error -40" in err_line, "full filesystem -> CXR_ERR_AUDIT")
    check("SQLITE_FULL" in err_line, "message says SQLITE_FULL")
    check(f"verify rows={committed} " in out and "rc=0" in out, f"all committed rows present, chain intact: "
          f"{[line for line in out.splitlines() if line.startswith('verify')]}")

    # a read-only filesystem (read-only bind mount): opening for writing fails closed
    src, ro = os.path.join(tmp, "src"), os.path.join(tmp, "ro")
    os.mkdir(src)
    os.mkdir(ro)
    subprocess.run([stress, "write", os.path.join(src, "a.sqlite"), "0", "5"], check=True, stdout=subprocess.DEVNULL)
    p = in_namespace(f"mount --bind '{src}' '{ro}' && mount -o remount,ro,bind '{ro}' && "
                     f"{{ '{stress}' open '{ro}/a.sqlite'; echo exit=$?; '{stress}' open '{ro}/new.sqlite'; "
                     f"echo exit=$?; '{stress}' verify '{ro}/a.sqlite'; echo exit=$?; "
                     f"'{stress}' cli audit export --db '{ro}/a.sqlite' | wc -l; }}")
    out = p.stdout
    print("     read-only mount:", " | ".join(out.splitlines()))
    exits = [line for line in out.splitlines() if line.startswith("exit=")]
    check(len(exits) == 3 and exits[0] == "exit=4", "existing database on a read-only mount -> CXR_ERR_AUDIT")
    check(len(exits) == 3 and exits[1] == "exit=4", "new database on a read-only mount -> CXR_ERR_AUDIT")
    check(len(exits) == 3 and exits[2] == "exit=0", "verify still reads it")
    check(out.splitlines()[-1].strip() == "5", "export still reads it (5 rows)")
    rc, out, text = verify(stress, os.path.join(src, "a.sqlite"))
    check(rc == 0 and out.get("rows") == "5", "nothing was written through the read-only mount")
    return 0


# ---------------------------------------------------------------------------
def fuse_serve(fd, stop):
    """A minimal FUSE server: an empty root directory, nothing else (enough for stat and statfs)."""
    import errno
    import struct as st
    while not stop.is_set():
        try:
            req = os.read(fd, (1 << 20) + 8192)
        except OSError:
            return  # unmounted
        ln, op, uniq, node = st.unpack_from("<IIQQ", req)

        def reply(body=b"", error=0):
            try:
                os.write(fd, st.pack("<IiQ", 16 + len(body), error, uniq) + body)
            except OSError:
                pass

        if op in (2, 36, 42):  # FORGET, INTERRUPT, BATCH_FORGET: no reply
            continue
        if op == 26:  # INIT: 7.31, max_write 128 KiB
            reply(st.pack("<IIIIHHIIHHI28x", 7, 31, 0, 0, 16, 12, 1 << 17, 1, 32, 0, 0))
        elif op == 3 and node == 1:  # GETATTR of the root: a 0755 directory
            attr = st.pack("<QQQQQQIIIIIIIIII", 1, 4096, 8, 0, 0, 0, 0, 0, 0, 0o40755, 2, 0, 0, 0, 4096, 0)
            reply(st.pack("<QII", 1, 0, 0) + attr)
        elif op == 17:  # STATFS
            reply(st.pack("<QQQQQIIII24x", 1000, 900, 900, 100, 90, 4096, 255, 4096, 0))
        elif op == 1:  # LOOKUP: nothing exists
            reply(error=-errno.ENOENT)
        else:
            reply(error=-errno.ENOSYS)


def fuse_open(stress, tmp, fstype):
    """Mount an empty FUSE directory typed fstype and run `audit_stress open` on a database below it."""
    import ctypes
    libc = ctypes.CDLL(None, use_errno=True)
    mnt = os.path.join(tmp, fstype)
    os.mkdir(mnt)
    fd = os.open("/dev/fuse", os.O_RDWR)
    opts = f"fd={fd},rootmode=40000,user_id=0,group_id=0".encode()
    if libc.mount(b"cxrtest", mnt.encode(), fstype.encode(), 0, opts) != 0:
        print(f"SKIP: cannot mount FUSE: {os.strerror(ctypes.get_errno())}")
        os.close(fd)
        return None
    stop = threading.Event()
    threading.Thread(target=fuse_serve, args=(fd, stop), daemon=True).start()
    try:
        seen = [line.split(" - ")[1].split()[0] for line in open("/proc/self/mountinfo") if f" {mnt} " in line]
        p = subprocess.run([stress, "open", os.path.join(mnt, "audit", "audit.sqlite")], capture_output=True, text=True,
                           timeout=20)
        print(f"     {seen}: exit {p.returncode}: {p.stdout.strip()}")
        return p
    finally:
        stop.set()
        libc.umount2(mnt.encode(), 2)  # MNT_DETACH
        os.close(fd)


def test_fuse_inner(stress, tmp):
    """Runs inside `unshare -m`: a FUSE mount typed fuse.sshfs must be refused before anything is written;
    the same empty server typed as a local FUSE filesystem gets further (and fails on mkdir instead)."""
    p = fuse_open(stress, tmp, "fuse.sshfs")
    if p is None:
        return 77
    check(p.returncode == 5, f"a database on fuse.sshfs -> CXR_ERR_DB (exit {p.returncode})")
    check("fuse.sshfs" in p.stdout and "network" in p.stdout and "local disk" in p.stdout,
          "the message names the filesystem and what to do")
    p = fuse_open(stress, tmp, "fuse.fuse-overlayfs")
    check(p is not None and p.returncode == 4 and "network" not in p.stdout,
          "control: a local FUSE type is not refused as network (mkdir fails instead -> CXR_ERR_AUDIT)")
    return 0


def test_fuse(stress, tmp):
    if not os.path.exists("/dev/fuse"):
        print("SKIP: no /dev/fuse")
        return 77
    p = subprocess.run(["unshare", "-m", sys.executable, os.path.abspath(__file__), "--stress", stress, "fuse-inner"],
                       capture_output=True, text=True, timeout=60)
    print(p.stdout + p.stderr)
    if p.returncode == 77 or (p.returncode != 0 and "unshare" in p.stderr):
        print("SKIP: no private mount namespace or FUSE mount here")
        return 77
    check(p.returncode == 0, f"refusal on a FUSE (sshfs-typed) mount (exit {p.returncode})")
    return 0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--stress", required=True)
    ap.add_argument("test", choices=["crash", "concurrency", "throughput", "cli", "mounts", "fuse", "fuse-inner"])
    a = ap.parse_args()
    tmp = tempfile.mkdtemp(prefix=f"cxr_audit_{a.test}_")
    t0 = time.time()
    try:
        rc = globals()[f"test_{a.test.replace('-', '_')}"](os.path.abspath(a.stress), tmp)
    finally:
        print(f"     ({time.time() - t0:.1f} s)")
    if rc == 77:
        shutil.rmtree(tmp, ignore_errors=True)
        return 77
    if FAILURES:
        print(f"{len(FAILURES)} failed; kept {tmp}")
        return 1
    shutil.rmtree(tmp, ignore_errors=True)
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
