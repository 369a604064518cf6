#!/usr/bin/python3
"""Batch screening: `cxrvqa screen` over a few hundred generated images.

1. Throughput with --jobs 1 and --jobs 2 in the same run (printed as a ratio).
2. A file that is not an image: the run reports it as an error and exits 1.
3. SIGKILL of the driver at KILLS random points, each followed by a rerun,
   then a final run: every (image, question) is answered exactly once in the
   audit and in the CSV, every DICOM image has exactly one SR per question,
   nothing is left pending, `audit verify` and PRAGMA integrity_check pass.

Images are copies of the generated sample studies with fresh UIDs (pydicom);
expected counts come from what this script generated.
Usage: test_screen.py CXRVQA_BINARY [--images N] [--kills K]
"""
import argparse
import csv
import os
import random
import shutil
import signal
import sqlite3
import subprocess
import sys
import tempfile
import time

import pydicom
from pydicom.uid import generate_uid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLES = os.path.join(ROOT, "sample_data")
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
QUESTIONS = ["Is there a pleural effusion?", "Is there a pneumothorax?"]
failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what, flush=True)


def make_images(d, n):
    os.makedirs(d)
    srcs = [pydicom.dcmread(os.path.join(SAMPLES, f)) for f in ("cr_mono1_jpegls.dcm", "dx_mono2_rle.dcm")]
    n_png = max(2, n // 20)
    for i in range(n - n_png):
        ds = srcs[i % 2]
        ds.SOPInstanceUID = generate_uid(prefix="1.2.826.0.1.3680043.10.1450.9.")
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.PatientID = "SCREEN-%04d" % i
        sub = os.path.join(d, "study%02d" % (i % 7))
        os.makedirs(sub, exist_ok=True)
        ds.save_as(os.path.join(sub, "img%04d.dcm" % i))
    for i in range(n_png):
        shutil.copy(os.path.join(SAMPLES, "png_gray8.png"), os.path.join(d, "png%03d.png" % i))
    return n - n_png, n_png


def screen(exe, args, **kw):
    return subprocess.run([exe, "screen", "--model", MODEL] + args, capture_output=True, text=True, **kw)


def rate_of(stderr):
    for line in stderr.splitlines():
        if "images/s" in line:
            return float(line.split(" images/s")[0].split()[-1])
    return 0.0


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("exe")
    ap.add_argument("--images", type=int, default=240)
    ap.add_argument("--kills", type=int, default=20)
    a = ap.parse_args()
    exe = os.path.abspath(a.exe)
    tmp = tempfile.mkdtemp(prefix="cxrvqa-screen-")
    try:
        imgs = os.path.join(tmp, "images")
        n_dcm, n_png = make_images(imgs, a.images)
        n_img = n_dcm + n_png

        # 1. throughput, one worker vs two, same images, same run
        rates = {}
        for jobs in (1, 2):
            db = os.path.join(tmp, "tp%d.sqlite" % jobs)
            t0 = time.time()
            p = screen(exe, ["--db", db, "--jobs", str(jobs), "--question", QUESTIONS[0],
                             "--csv", os.path.join(tmp, "tp%d.csv" % jobs), imgs], timeout=600)
            wall = time.time() - t0
            check(p.returncode == 0, "screen --jobs %d exits 0 (%s)" % (jobs, p.stderr[-300:]))
            rows = list(csv.DictReader(open(os.path.join(tmp, "tp%d.csv" % jobs))))
            check(len({r["path"] for r in rows}) == n_img, "jobs %d: every image in the CSV" % jobs)
            rates[jobs] = n_img / wall
            print("throughput --jobs %d: %.1f images/s (%.1f s wall; screen says %.1f/s)"
                  % (jobs, rates[jobs], wall, rate_of(p.stderr)), flush=True)
        print("throughput ratio jobs2/jobs1: %.2f" % (rates[2] / rates[1]), flush=True)

        # 2. a broken file makes the run fail, and says which
        bad = os.path.join(tmp, "bad")
        os.makedirs(bad)
        shutil.copy(os.path.join(SAMPLES, "png_gray8.png"), os.path.join(bad, "ok.png"))
        open(os.path.join(bad, "broken.dcm"), "wb").write(b"\0" * 128 + b"DICM" + b"\x02\x00" * 40)
        p = screen(exe, ["--db", os.path.join(tmp, "bad.sqlite"), "--jobs", "1", "--question", QUESTIONS[0],
                         "--csv", os.path.join(tmp, "bad.csv"), bad], timeout=120)
        rows = list(csv.DictReader(open(os.path.join(tmp, "bad.csv"))))
        st = {os.path.basename(r["path"]): r["status"] for r in rows}
        check(p.returncode == 1 and st.get("broken.dcm") == "error" and st.get("ok.png") == "ok",
              "a broken file: exit 1, status error, the others ok (%s, %s)" % (p.returncode, st))

        # 3. SIGKILL at random points, resume, exactly once
        db = os.path.join(tmp, "kill.sqlite")
        srd = os.path.join(tmp, "sr")
        out_csv = os.path.join(tmp, "kill.csv")
        args = ["--db", db, "--sr-out", srd, "--jobs", "2", "--csv", out_csv]
        for q in QUESTIONS:
            args += ["--question", q]
        rng = random.Random(20261129)
        killed = 0
        for k in range(a.kills):
            pr = subprocess.Popen([exe, "screen", "--model", MODEL] + args + [imgs],
                                  stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
            time.sleep(rng.uniform(0.1, 1.2))
            if pr.poll() is None:
                pr.send_signal(signal.SIGKILL)
                killed += 1
            pr.wait()
        p = screen(exe, args + [imgs], timeout=900)
        check(p.returncode == 0, "final resumed run exits 0 (%s)" % p.stderr[-400:])
        print("kills survived: %d of %d runs killed mid-way" % (killed, a.kills), flush=True)
        rows = list(csv.DictReader(open(out_csv)))
        pairs = [(r["path"], r["question"]) for r in rows]
        check(len(pairs) == len(set(pairs)) == n_img * len(QUESTIONS),
              "CSV: every (image, question) exactly once (%d rows, %d distinct, want %d)"
              % (len(pairs), len(set(pairs)), n_img * len(QUESTIONS)))
        check(all(r["status"] == "ok" for r in rows), "CSV: all ok")
        con = sqlite3.connect(db)
        check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity_check ok")
        tab = [r[0] for r in con.execute("SELECT name FROM sqlite_master WHERE type='table'")]
        t = "audit" if "audit" in tab else [x for x in tab if x != "meta"][0]
        cnt = con.execute("SELECT request_key, count(*) FROM %s WHERE outcome IN (0,4) AND request_key IS NOT NULL "
                          "GROUP BY request_key" % t).fetchall()
        check(len(cnt) == n_img * len(QUESTIONS) and all(c == 1 for _, c in cnt),
              "audit: every request answered exactly once (%d keys, max %d)"
              % (len(cnt), max([c for _, c in cnt] or [0])))
        n_sr_rows = con.execute("SELECT count(*) FROM %s WHERE sr_uid IS NOT NULL AND outcome = 0" % t).fetchone()[0]
        sr_uids = {r[0] for r in con.execute("SELECT DISTINCT sr_uid FROM %s WHERE sr_uid IS NOT NULL AND outcome = 0"
                                             % t)}
        con.close()
        srs = [f for f in os.listdir(srd) if f.endswith(".dcm")]
        pend = os.listdir(os.path.join(srd, ".pending")) if os.path.isdir(os.path.join(srd, ".pending")) else []
        # one SR per image holds all its questions; a run killed between an
        # image's audit rows leaves its other questions to a second SR on
        # resume (at most one image per worker and kill)
        check(n_sr_rows == n_dcm * len(QUESTIONS) and {f[:-4] for f in srs} == sr_uids
              and n_dcm <= len(srs) <= n_dcm + 2 * killed,
              "one SR per DICOM image with all its questions (%d files, %d distinct audited, %d rows, want %d images)"
              % (len(srs), len(sr_uids), n_sr_rows, n_dcm))
        check(not pend, "nothing left pending (%d)" % len(pend))
        v = subprocess.run([exe, "audit", "verify", "--db", db], capture_output=True, text=True)
        check(v.returncode == 0, "audit verify: " + v.stdout + v.stderr)
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print("%d failure(s)" % len(failures))
        return 1
    print("screen: all checks passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
