#!/usr/bin/python3
"""bench_screen.py — `cxrvqa screen --jobs N` throughput (images per second) on real-size CRs and on
384-px studies, with one question and with four, for one or more builds in the same run (a baseline
build beside the current one: ratios, not absolute times, on a shared machine).

Studies (written once under --work):
  real-size: the WG04 RG1 chest CR (1955 x 1841, ../shared/data/dicom/chest) in five transfer syntaxes —
    JPEG-LS near-lossless and JPEG 2000 as shipped, and from the JPEG-LS one explicit VR little endian
    (dcmdjpls), RLE (dcmcrle) and JPEG lossless SV1 (dcmcjpeg +e1) — each copied --copies times with new
    Study / Series / SOP Instance UIDs (dcmodify -gst -gse -gin), 60 files by default;
  384-px: the first --copies*5 `val` radiographs of ../shared/data/cxr's nih384 set written as DICOM
    (8-bit MONOCHROME2, explicit VR little endian).
Each (build, set, questions) case runs `screen --jobs N --no-sr` into a fresh audit database, --rounds
times, builds interleaved; the median wall time gives images/s. Screen's own summary line is checked
(every task answered or refused, none failed).

    /usr/bin/python3 tests/bench/bench_screen.py --cxrvqa build/cxrvqa [--baseline OLD/cxrvqa]
        [--jobs 2] [--copies 12] [--rounds 3] [--work /tmp/cxrvqa-bench-screen]
Prints a markdown table. Exit 0; 77 when ../shared/data is absent.
"""
import argparse
import csv
import os
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, os.path.join(ROOT, "tests", "plugin", "answer"))

QUESTIONS_1 = ["Is there a pleural effusion?"]
QUESTIONS_4 = ["Is there a pleural effusion?", "Is there pneumonia?", "Is the heart enlarged?",
               "Is there a pneumothorax?"]


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(map(str, cmd)), p.returncode, p.stdout[-600:]))
    return p.stdout


def real_size(data, work, copies):
    out = os.path.join(work, "real")
    if os.path.isdir(out) and len(os.listdir(out)) >= 5 * copies:
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    src = os.path.join(data, "dicom", "chest")
    jls = os.path.join(src, "WG04_RG1_CR_chest_MONO1_JLSN.dcm")
    j2k = os.path.join(src, "WG04_RG1_CR_chest_MONO1_J2KI.dcm")
    tmp = os.path.join(work, "tmp")
    os.makedirs(tmp, exist_ok=True)
    raw = os.path.join(tmp, "raw.dcm")
    run(["dcmdjpls", jls, raw])
    rle = os.path.join(tmp, "rle.dcm")
    run(["dcmcrle", raw, rle])
    sv1 = os.path.join(tmp, "sv1.dcm")
    run(["dcmcjpeg", "+e1", raw, sv1])
    for name, f in (("jlsn", jls), ("j2ki", j2k), ("raw", raw), ("rle", rle), ("jpegsv1", sv1)):
        for i in range(copies):
            dst = os.path.join(out, "%s_%02d.dcm" % (name, i))
            shutil.copyfile(f, dst)
            os.chmod(dst, 0o644)
            run(["dcmodify", "-nb", "-gst", "-gse", "-gin", dst])
    return out


def small(data, work, n):
    out = os.path.join(work, "nih384")
    if os.path.isdir(out) and len(os.listdir(out)) >= n:
        return out
    shutil.rmtree(out, ignore_errors=True)
    os.makedirs(out)
    import test_trust  # noqa: E402  (its JPEG -> DICOM writer)
    with open(os.path.join(data, "cxr", "labels.csv")) as f:
        rows = [r for r in csv.DictReader(f) if r["dataset"] == "nih384" and r["split"] == "val"]
    for i, r in enumerate(rows[:n]):
        test_trust.to_dicom(os.path.join(data, "cxr", r["path"]), os.path.join(out, "%03d.dcm" % i), r["view"])
    return out


def screen_once(exe, folder, questions, jobs, work):
    db = os.path.join(work, "screen-%d.sqlite" % os.getpid())
    for suffix in ("", "-wal", "-shm"):
        if os.path.exists(db + suffix):
            os.unlink(db + suffix)
    args = [exe, "screen", "--jobs", str(jobs), "--db", db]
    for q in questions:
        args += ["--question", q]
    t = time.monotonic()
    outp = run(args + [folder])
    wall = time.monotonic() - t
    last = [ln for ln in outp.splitlines() if " tasks: " in ln]
    if not last or (" 0 failed" not in last[-1] and " 0 errors" not in last[-1]):
        raise RuntimeError("screen reported errors: %s" % (last[-1] if last else outp[-400:]))
    return wall


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--baseline")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--work", default=os.path.join(tempfile.gettempdir(), "cxrvqa-bench-screen"))
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--copies", type=int, default=12)
    ap.add_argument("--rounds", type=int, default=3)
    a = ap.parse_args()
    if not os.path.isdir(os.path.join(a.data, "dicom", "chest")):
        print("SKIP: %s absent" % a.data)
        return 77
    os.makedirs(a.work, exist_ok=True)
    sets = [("RG1 CR 1955x1841, 5 syntaxes", real_size(a.data, a.work, a.copies)),
            ("NIH 384 px", small(a.data, a.work, 5 * a.copies))]
    builds = [("ours", os.path.abspath(a.cxrvqa))]
    if a.baseline:
        builds.append(("baseline", os.path.abspath(a.baseline)))
    rows = []
    for sname, folder in sets:
        n = len([f for f in os.listdir(folder) if f.endswith(".dcm")])
        for qs in (QUESTIONS_1, QUESTIONS_4):
            walls = {b: [] for b, _ in builds}
            for r in range(a.rounds):
                for b, exe in (builds if r % 2 == 0 else builds[::-1]):
                    walls[b].append(screen_once(exe, folder, qs, a.jobs, a.work))
            med = {b: statistics.median(w) for b, w in walls.items()}
            rows.append((sname, n, len(qs), med))
            print("%s, %d question(s): %s" % (sname, len(qs), ", ".join(
                "%s %.1f s (%.2f img/s)" % (b, m, n / m) for b, m in med.items())), flush=True)
    print()
    hdr = "| images | n | questions | " + " | ".join("%s img/s" % b for b, _ in builds)
    if a.baseline:
        hdr += " | ours / baseline"
    print(hdr + " |")
    print("|" + "---|" * (3 + len(builds) + (1 if a.baseline else 0)))
    for sname, n, q, med in rows:
        line = "| %s | %d | %d | " % (sname, n, q) + " | ".join("%.2f" % (n / med[b]) for b, _ in builds)
        if a.baseline:
            line += " | %.2f×" % (med["baseline"] / med["ours"])
        print(line + " |")
    print("\nscreen --jobs %d, median of %d rounds (builds interleaved), wall time from start to summary; "
          "2 cores, shared machine." % (a.jobs, a.rounds))
    return 0


if __name__ == "__main__":
    sys.exit(main())
