#!/usr/bin/python3
"""Sharded screening on a real single-host Slurm (slurmctld + slurmd + munged).

Starts a private munged (its own key and socket), slurmctld and slurmd
(free ports, state, spool and logs in a temp dir), generates a few hundred
studies (copies of sample_data with new UIDs), makes the manifest with
`cxrvqa screen --list`, submits scripts/slurm/screen-array.sh in 4 shards,
SIGKILLs one task's screen mid-way (the task requeues itself), and waits for
the dependent merge job. Then: the merged audit holds every (image,
question) exactly once, `audit verify` passes on it and on every shard, the
killed shard ran twice and its second run resumed, and the merged CSV
equals a single-machine `screen` over the same images (same decisions, same
probabilities). Prints the wall time of the array (submit to merged) and of
the single screen. Every daemon it started is killed, also on failure.

Exit 77 (skipped) when not root or when the Slurm / munge binaries are missing.
Usage: test_screen_slurm.py CXRVQA_BINARY [--images N]
"""
import argparse
import csv
import os
import shutil
import signal
import socket
import sqlite3
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLES = os.path.join(ROOT, "sample_data")
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
ARRAY = os.path.join(ROOT, "scripts", "slurm", "screen-array.sh")
QUESTIONS = ["Is there a pleural effusion?", "Is the heart enlarged?"]
BINARIES = ["munged", "mungekey", "slurmctld", "slurmd", "sbatch", "scontrol", "squeue", "sinfo"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
    print(("ok:   " if cond else "FAIL: ") + what, flush=True)


def free_ports(n):
    socks, ports = [], []
    for _ in range(n):
        s = socket.socket()
        s.bind(("127.0.0.1", 0))
        socks.append(s)
        ports.append(s.getsockname()[1])
    for s in socks:
        s.close()
    return ports


class Cluster:
    """munged + slurmctld + slurmd in the foreground, as our own children."""

    def __init__(self, d):
        self.d = d
        self.procs = []
        self.env = dict(os.environ, SLURM_CONF=os.path.join(d, "slurm.conf"))

    def start(self):
        d = self.d
        for sub in ("state", "spool", "munge"):
            os.makedirs(os.path.join(d, sub), mode=0o700)
        key, sock = os.path.join(d, "munge", "munge.key"), os.path.join(d, "munge", "munge.socket")
        subprocess.run(["mungekey", "-c", "-f", "-k", key], check=True)
        self.spawn(["munged", "-F", "--force", "--key-file", key, "--socket", sock,
                    "--pid-file", os.path.join(d, "munge", "munged.pid"), "--log-file", os.path.join(d, "munged.log"),
                    "--seed-file", os.path.join(d, "munge", "munged.seed")], "munged")
        for _ in range(100):
            if os.path.exists(sock):
                break
            time.sleep(0.05)
        ctl_port, d_port = free_ports(2)
        conf = f"""ClusterName=cxrvqatest
SlurmctldHost=localhost
SlurmUser=root
SlurmdUser=root
SlurmctldPort={ctl_port}
SlurmdPort={d_port}
AuthType=auth/munge
AuthInfo=socket={sock},cred_expire=10
CredType=cred/munge
StateSaveLocation={d}/state
SlurmdSpoolDir={d}/spool
SlurmctldPidFile={d}/slurmctld.pid
SlurmdPidFile={d}/slurmd.pid
SlurmctldLogFile={d}/slurmctld.log
SlurmdLogFile={d}/slurmd.log
ProctrackType=proctrack/linuxproc
TaskPlugin=task/none
SelectType=select/cons_tres
SelectTypeParameters=CR_CPU
ReturnToService=2
MpiDefault=none
JobAcctGatherType=jobacct_gather/none
AccountingStorageType=accounting_storage/none
JobCompType=jobcomp/none
SchedulerParameters=sched_interval=1
MinJobAge=600
NodeName=localhost NodeAddr=127.0.0.1 CPUs=2 State=UNKNOWN
PartitionName=test Nodes=localhost Default=YES MaxTime=INFINITE State=UP
"""
        with open(self.env["SLURM_CONF"], "w") as f:
            f.write(conf)
        self.spawn(["slurmctld", "-D", "-i", "-f", self.env["SLURM_CONF"]], "slurmctld")
        time.sleep(1)
        self.spawn(["slurmd", "-D", "-N", "localhost", "-f", self.env["SLURM_CONF"]], "slurmd")
        for _ in range(60):
            r = subprocess.run(["sinfo", "-h", "-N", "-o", "%t"], env=self.env, capture_output=True, text=True)
            if r.returncode == 0 and r.stdout.strip() in ("idle", "mix", "alloc"):
                return True
            time.sleep(0.5)
        print("slurm did not come up; sinfo:", r.stdout, r.stderr, file=sys.stderr)
        self.dump_logs()
        return False

    def spawn(self, argv, name):
        log = open(os.path.join(self.d, name + ".stdout"), "w")
        p = subprocess.Popen(argv, stdout=log, stderr=subprocess.STDOUT, env=self.env, start_new_session=True)
        self.procs.append((name, p))

    def run(self, argv, **kw):
        return subprocess.run(argv, env=self.env, capture_output=True, text=True, **kw)

    def dump_logs(self):
        for n in ("slurmctld.log", "slurmd.log", "munged.log", "slurmctld.stdout", "slurmd.stdout", "munged.stdout"):
            p = os.path.join(self.d, n)
            if os.path.exists(p):
                print("----", n, file=sys.stderr)
                print(open(p, errors="replace").read()[-3000:], file=sys.stderr)

    def stop(self):
        # jobs first (their processes are children of slurmd's stepd), then the daemons, newest first
        subprocess.run(["scancel", "--user=root"], env=self.env, capture_output=True, timeout=30)
        time.sleep(0.5)
        for name, p in reversed(self.procs):
            if p.poll() is None:
                p.send_signal(signal.SIGTERM)
                try:
                    p.wait(timeout=10)
                except subprocess.TimeoutExpired:
                    p.kill()
                    p.wait()


def make_images(d, n):
    import pydicom
    from pydicom.uid import generate_uid
    os.makedirs(d)
    srcs = [pydicom.dcmread(os.path.join(SAMPLES, f)) for f in ("cr_mono1_jpegls.dcm", "dx_mono2_rle.dcm")]
    n_png = max(2, n // 25)
    for i in range(n - n_png):
        ds = srcs[i % 2]
        ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.10.1450.9.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.StudyInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.10.1450.8.")
        ds.PatientID = "SLURM-%04d" % i
        sub = os.path.join(d, "study%02d" % (i % 9))
        os.makedirs(sub, exist_ok=True)
        ds.save_as(os.path.join(sub, "img%04d.dcm" % i))
    for i in range(n_png):
        shutil.copy(os.path.join(SAMPLES, "png_gray8.png"), os.path.join(d, "png%03d.png" % i))


def job_state(cl, jid):
    r = cl.run(["squeue", "-h", "-j", jid, "-o", "%i %T"])
    return r.stdout.strip()


def read_csv(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("--images", type=int, default=240)
    a = ap.parse_args()
    exe = os.path.abspath(a.exe)
    if os.geteuid() != 0:
        print("SKIP: the Slurm test starts slurmctld, slurmd and munged as root; not root here")
        return 77
    missing = [b for b in BINARIES if not shutil.which(b)]
    if missing:
        print("SKIP: Slurm / munge not installed (missing %s; scripts/setup.sh installs slurm-wlm munge)" % " ".join(missing))
        return 77
    tmp = tempfile.mkdtemp(prefix="cxrvqa-slurm-")
    cl = Cluster(os.path.join(tmp, "slurm"))
    os.makedirs(cl.d)
    try:
        if not cl.start():
            check(False, "single-host Slurm came up")
            return 1
        imgs = os.path.join(tmp, "images")
        make_images(imgs, a.images)
        man = os.path.join(tmp, "manifest")
        with open(man, "w") as f:
            r = subprocess.run([exe, "screen", "--list", imgs], stdout=f, stderr=subprocess.PIPE, text=True)
        paths = [l for l in open(man).read().splitlines() if l]
        check(r.returncode == 0 and len(paths) == a.images, "screen --list: %d paths for %d images" % (len(paths), a.images))
        # which shard gets how many: from --shard itself, with no model run (--list of each shard is not a thing),
        # so count from the manifest files of the shard CSVs later; here only the split must not be degenerate
        qargs = sum((["--question", q] for q in QUESTIONS), [])

        def submit(out):
            r = cl.run([ARRAY, "--shards", "4", "--limit", "4", "--cpus", "1", "--cxrvqa", exe, "--model", MODEL,
                        "--local-dir", os.path.join(tmp, "local")] + qargs + [man, out])
            print(r.stdout.strip(), r.stderr.strip())
            check(r.returncode == 0, "screen-array.sh submitted the array and the merge")
            if r.returncode:
                return None, None
            words = r.stdout.split()
            return words[1], words[words.index("merge") + 1]

        def wait_merge(merge_id, array_id, release=None):
            """until the merge job leaves the queue; release: the array task expected to be requeued (its pending reason is printed)"""
            deadline = time.monotonic() + 400
            released = False
            while time.monotonic() < deadline:
                if not job_state(cl, merge_id):
                    return True
                if "DependencyNeverSatisfied" in cl.run(["squeue", "-h", "-j", merge_id, "-o", "%r"]).stdout:
                    return False
                if release and not released:
                    st = cl.run(["squeue", "-h", "-r", "-j", "%s_%s" % (array_id, release), "-o", "%T %r"]).stdout.split()
                    if st and st[0] == "PENDING":
                        # Slurm starts a requeued job again once its credential expired (cred_expire: 120 s by
                        # default, 10 s in this cluster's slurm.conf); starting it sooner gets it killed
                        print("requeued task %s_%s: %s" % (array_id, release, " ".join(st)), flush=True)
                        released = True
                time.sleep(0.2)
            return False

        # 1. a clean run of the array, for the throughput
        t0 = time.monotonic()
        out1 = os.path.join(tmp, "out-clean")
        array1, merge1 = submit(out1)
        if not array1:
            return 1
        wait_merge(merge1, array1)
        t_clean = time.monotonic() - t0
        check(os.path.exists(os.path.join(out1, "merged.csv")), "clean array: merged in %.1f s" % t_clean)

        # 2. the same, with shard 2's screen SIGKILLed mid-way: the task requeues itself
        out = os.path.join(tmp, "out")
        t0 = time.monotonic()
        array_id, merge_id = submit(out)
        if not array_id:
            return 1
        live_db = os.path.join(tmp, "local", "cxrvqa-%s-shard-2" % array_id, "audit.sqlite")
        pidfile = os.path.join(os.path.dirname(live_db), "screen.pid")
        killed_at = None
        deadline = time.monotonic() + 120
        while time.monotonic() < deadline and killed_at is None:
            n = 0
            if os.path.exists(live_db):
                try:
                    with sqlite3.connect("file:%s?mode=ro" % live_db, uri=True, timeout=5) as c:
                        n = c.execute("SELECT count(*) FROM audit").fetchone()[0]
                except sqlite3.Error:
                    n = 0
            if n >= 10 and os.path.exists(pidfile):
                pid = int(open(pidfile).read().strip() or 0)
                if pid:
                    os.kill(pid, signal.SIGKILL)
                    killed_at = n
                    break
            time.sleep(0.05)
        check(killed_at is not None, "shard 2's screen SIGKILLed mid-way (after %s audit rows)" % killed_at)
        wait_merge(merge_id, array_id, release="2")
        t_array = time.monotonic() - t0
        log2 = open(os.path.join(out, "logs", "shard-2.out")).read() if os.path.exists(os.path.join(out, "logs", "shard-2.out")) else ""
        check("requeueing (restart 1" in log2 and "attempt 2" in log2, "shard 2 requeued itself and ran again")
        merged = os.path.join(out, "merged.sqlite")
        check(os.path.exists(merged), "the merge job ran after every task succeeded (merged.sqlite exists)")
        if not os.path.exists(merged):
            for f in sorted(os.listdir(os.path.join(out, "logs"))):
                print("----", f, file=sys.stderr)
                print(open(os.path.join(out, "logs", f)).read()[-2000:], file=sys.stderr)
            cl.dump_logs()
            return 1
        # the second run of shard 2 resumed from its own audit
        runs = [l for l in log2.splitlines() if l.startswith("screen: ") and "tasks:" in l]
        resumed = [l for l in runs if " 0 from earlier runs" not in l]
        check(len(runs) >= 1 and len(resumed) == 1, "shard 2's rerun skipped what its audit held: %s" % (resumed[-1] if resumed else runs))

        # every shard's chain and the merged chain
        for k in range(4):
            r = subprocess.run([exe, "audit", "verify", "--db", os.path.join(out, "shards", "shard-%d.sqlite" % k)],
                               capture_output=True, text=True)
            check(r.returncode == 0, "audit verify shard %d: %s" % (k, (r.stdout + r.stderr).strip()[:160]))
        r = subprocess.run([exe, "audit", "verify", "--db", merged], capture_output=True, text=True)
        check(r.returncode == 0 and "4 shard merges" in r.stdout, "audit verify merged: " + (r.stdout + r.stderr).strip()[-200:])

        # every (image, question) exactly once, in the merged audit
        with sqlite3.connect("file:%s?mode=ro" % merged, uri=True) as c:
            rows = c.execute("SELECT source, question, count(*) FROM audit WHERE outcome IN (0, 4)"
                             " AND event_type != 'audit-merge' GROUP BY source, question").fetchall()
            per_shard = c.execute("SELECT merge_seq, count(*) FROM merge_origin GROUP BY merge_seq").fetchall()
        want = {(p, q) for p in paths for q in QUESTIONS}
        got = {(s, q) for s, q, n in rows}
        dup = [(s, q, n) for s, q, n in rows if n != 1]
        check(got == want and not dup, "merged audit: %d (image, question) pairs answered, %d expected, %d more than once"
              % (len(got), len(want), len(dup)))
        sizes = [n for _, n in per_shard]
        check(len(sizes) == 4 and min(sizes) > 0, "4 non-empty shards, rows per shard %s" % sizes)

        # a single-machine screen over the same images, same questions
        single_csv = os.path.join(tmp, "single.csv")
        t1 = time.monotonic()
        r = subprocess.run([exe, "screen", "--model", MODEL, "--jobs", "2", "--db", os.path.join(tmp, "single.sqlite"),
                            "--csv", single_csv, "--manifest", man] + qargs, capture_output=True, text=True)
        t_single = time.monotonic() - t1
        check(r.returncode == 0, "single-machine screen ran (%s)" % r.stderr.strip().splitlines()[-1:])
        mc, sc = read_csv(os.path.join(out, "merged.csv")), read_csv(single_csv)
        key = lambda row: (row["path"], row["question"], row["finding"])
        mcd = {key(x): x for x in mc}
        scd = {key(x): x for x in sc}
        check(len(mc) == len(sc) == len(mcd) and len(mc) >= len(want), "merged CSV %d rows, single CSV %d rows" % (len(mc), len(sc)))
        diffs = [k for k in scd if k not in mcd or any(mcd[k][c] != scd[k][c] for c in
                 ("probability", "threshold", "decision", "status", "sop_instance_uid"))]
        check(not diffs, "merged CSV equals the single-machine CSV: same decisions and probabilities (%d differ%s)"
              % (len(diffs), ", first " + str(diffs[0]) if diffs else ""))
        single = open(single_csv).read()
        check(open(os.path.join(out, "merged.csv")).read() == single, "merged CSV is byte-for-byte the single-machine CSV")
        check(open(os.path.join(out1, "merged.csv")).read() == single, "clean array's merged CSV too")
        n = len(paths)
        print("THROUGHPUT: %d images x %d questions on this machine (%d cores): one `screen --jobs 2` %.1f s = %.2f images/s;"
              " the 4-task array (1 CPU a task, submit to merged CSV) %.1f s = %.2f images/s (%.2fx the single screen's"
              " time, %.1f ms more per image); with one task SIGKILLed and requeued (cred_expire=10 s) %.1f s"
              % (n, len(QUESTIONS), os.cpu_count(), t_single, n / t_single, t_clean, n / t_clean, t_clean / t_single,
                 (t_clean - t_single) / n * 1000, t_array))
    finally:
        cl.stop()
        if failures:
            print("kept for inspection:", tmp, file=sys.stderr)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d failure(s)" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
