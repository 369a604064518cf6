#!/usr/bin/env python3
"""bench_ingest.py — ingestion speed against DCMTK / GDCM, measured in the same run.

For each case it times one process of ours, `cxrvqa inspect FILE --tensor
/dev/null` (decode frame 1, the whole pixel pipeline to 8 bits, polarity
check, resize and normalise to the 224 model tensor), against one process of
the baseline tool, interleaved (A B A B …) after one warm-up run of each, and
prints the medians and the ratio ours / baseline as a markdown table. The
baseline is Debian DCMTK's `dcmj2pnm FILE out.pgm` where it can decode the
file and `gdcmconv --raw FILE out.dcm` (GDCM, OpenJPEG / CharLS) where it
cannot (JPEG-LS near-lossless, JPEG 2000). The baseline does less than we
do (no windowing to 8 bits for gdcmconv, no resize for either) but writes
its whole output file; both pay their library's start-up, as we do.

Files (skipped with a message when absent), under --data:
  chest/WG04_RG1_CR_chest_MONO1_JLSN.dcm   JPEG-LS near-lossless 1955x1841
  chest/WG04_RG1_CR_chest_MONO1_J2KI.dcm   JPEG 2000 lossy, --threads 1 and 2
  cr_other_transfer_syntaxes/WG04_RG2_UNC.dcm   uncompressed

    /usr/bin/python3 tests/bench/bench_ingest.py [--cxrvqa build/cxrvqa]
        [--data ../shared/data/dicom] [--repeats 9] [--blas-default]

Exit status 0 (also when files are absent: the table says so); 1 if our
binary fails on a file. Ratios above 1 mean we are slower.
"""
import argparse
import os
import resource
import shutil
import statistics
import subprocess
import sys
import tempfile
import time

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))


def run_once(cmd, env=None):
    """Wall and CPU (user + sys of the child) seconds of one process."""
    r0 = resource.getrusage(resource.RUSAGE_CHILDREN)
    t0 = time.perf_counter()
    p = subprocess.run(cmd, stdout=subprocess.DEVNULL, stderr=subprocess.PIPE, env=env)
    t1 = time.perf_counter()
    r1 = resource.getrusage(resource.RUSAGE_CHILDREN)
    cpu = (r1.ru_utime - r0.ru_utime) + (r1.ru_stime - r0.ru_stime)
    return p.returncode, t1 - t0, cpu, p.stderr.decode(errors="replace").strip()


def baseline_for(path, tmp):
    """dcmj2pnm when it decodes the file, else gdcmconv --raw."""
    if shutil.which("dcmj2pnm"):
        rc, _, _, _ = run_once(["dcmj2pnm", path, os.path.join(tmp, "probe.pgm")])
        if rc == 0:
            return "dcmj2pnm", ["dcmj2pnm", path, os.path.join(tmp, "out.pgm")]
    if shutil.which("gdcmconv"):
        return "gdcmconv --raw", ["gdcmconv", "--raw", path, os.path.join(tmp, "out.dcm")]
    return None, None


def bench(name, ours, base, repeats, env):
    for cmd in (ours, base):  # warm-up: page cache, dictionaries
        rc, _, _, err = run_once(cmd, env)
        if rc != 0:
            return {"name": name, "ours_failed": cmd is ours,
                    "error": "%s failed: %s" % (os.path.basename(cmd[0]), err[-200:])}
    a, b, ac, bc = [], [], [], []
    for _ in range(repeats):
        for cmd, wall, cpu in ((ours, a, ac), (base, b, bc)):
            rc, w, c, err = run_once(cmd, env)
            if rc != 0:
                return {"name": name, "ours_failed": cmd is ours,
                        "error": "%s failed: %s" % (os.path.basename(cmd[0]), err[-200:])}
            wall.append(w)
            cpu.append(c)
    return {"name": name, "ours": statistics.median(a), "base": statistics.median(b),
            "ours_cpu": statistics.median(ac), "base_cpu": statistics.median(bc),
            "ours_min": min(a), "base_min": min(b)}


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cxrvqa", default=os.path.join(ROOT, "build", "cxrvqa"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dicom"))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--blas-default", action="store_true",
                    help="leave OPENBLAS_NUM_THREADS unset (OpenBLAS starts a thread per core)")
    a = ap.parse_args()
    if a.repeats < 7:
        sys.exit("bench_ingest: at least 7 repeats")
    if not os.access(a.cxrvqa, os.X_OK):
        sys.exit("bench_ingest: %s not found (build first, or pass --cxrvqa)" % a.cxrvqa)
    cases = [
        ("JPEG-LS near-lossless (RG1 JLSN)", "chest/WG04_RG1_CR_chest_MONO1_JLSN.dcm", 1),
        ("JPEG 2000 lossy (RG1 J2KI)", "chest/WG04_RG1_CR_chest_MONO1_J2KI.dcm", 1),
        ("JPEG 2000 lossy (RG1 J2KI)", "chest/WG04_RG1_CR_chest_MONO1_J2KI.dcm", 2),
        ("uncompressed (RG2 UNC)", "cr_other_transfer_syntaxes/WG04_RG2_UNC.dcm", 1),
    ]
    # OpenJPEG reads OPJ_NUM_THREADS; pin it so both sides run what the row says.
    # cxrvqa also links OpenBLAS (the model), whose thread pool starts, and
    # spins, at process start although inspect never calls it: one BLAS
    # thread, unless the caller says otherwise (--blas-default keeps its pool).
    env = dict(os.environ)
    env.pop("OPJ_NUM_THREADS", None)
    if not a.blas_default:
        env.setdefault("OPENBLAS_NUM_THREADS", "1")
    rows = []
    with tempfile.TemporaryDirectory() as tmp:
        for name, rel, threads in cases:
            path = os.path.join(a.data, rel)
            label = "%s, %d thread%s" % (name, threads, "s" if threads > 1 else "")
            if not os.path.exists(path):
                print("bench_ingest: %s absent, skipped" % path)
                rows.append({"name": label, "error": "file absent (skipped)"})
                continue
            bname, base = baseline_for(path, tmp)
            if not base:
                rows.append({"name": label, "error": "no baseline tool (dcmj2pnm / gdcmconv) installed"})
                continue
            ours = [a.cxrvqa, "inspect", path, "--tensor", os.path.join(tmp, "t.f32"), "--threads", str(threads)]
            e = dict(env)
            if threads > 1 and bname.startswith("gdcmconv"):
                e["OPJ_NUM_THREADS"] = str(threads)  # the same thread count for GDCM's OpenJPEG
            r = bench(label, ours, base, a.repeats, e)
            r["baseline"] = bname + (" (OPJ_NUM_THREADS=%d)" % threads if "OPJ_NUM_THREADS" in e else "")
            rows.append(r)
            print("bench_ingest: %s done" % label, file=sys.stderr)
    print()
    print("Ingest + normalise to the 224 tensor, median of %d interleaved runs (one process each, wall ms;"
          " CPU = user + sys ms; OPENBLAS_NUM_THREADS=%s)" % (a.repeats, env.get("OPENBLAS_NUM_THREADS", "unset")))
    print()
    print("| case | ours ms | baseline | baseline ms | ours / baseline | ours CPU | baseline CPU |")
    print("|---|---:|---|---:|---:|---:|---:|")
    bad = 0
    for r in rows:
        if "error" in r:
            print("| %s | – | – | – | %s | | |" % (r["name"], r["error"]))
            bad += r.get("ours_failed", False)
            continue
        print("| %s | %.0f | %s | %.0f | %.2f | %.0f | %.0f |" % (
            r["name"], r["ours"] * 1e3, r["baseline"], r["base"] * 1e3, r["ours"] / r["base"],
            r["ours_cpu"] * 1e3, r["base_cpu"] * 1e3))
    return 1 if bad else 0


if __name__ == "__main__":
    sys.exit(main())
