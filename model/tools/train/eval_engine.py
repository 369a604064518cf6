#!/usr/bin/python3
"""eval_engine.py — validation figures of a model file as a user meets them: through the C
engine, end to end. Each image of the chosen split of ../shared/data/cxr is written as a PNG
at run time (into a temporary folder, never into the repository) and scored by
`cxrvqa score` (ingestion, preprocessing, image tower, calibrated zero-shot scoring, domain
check). Prints per-target and per-finding AUC with 95% bootstrap CIs, the expected calibration
error of the calibrated findings, the domain check on val, and the agreement between the C
engine and the Python/PyTorch forward of the same file on the same images (max |p_C - p_torch|).

    /usr/bin/python3 model/tools/train/eval_engine.py --cxrvqa build/cxrvqa --model model/cxrvqa-cxr-cnn.gguf
        [--data ../shared/data/cxr] [--split val] [--agree 300] [--jobs 2] [--json OUT.json]

A research evaluation on public data, not a clinical validation.
"""
import argparse
import json
import os
import subprocess
import sys
import tempfile
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (gguf, ref_tokenizer, …)
import cnn_forward  # noqa: E402
import metrics  # noqa: E402
import prepare_data  # noqa: E402


def ece(p, y, bins=10):
    """Expected calibration error with equal-width bins."""
    p, y = np.asarray(p, float), np.asarray(y, float)
    e, n = 0.0, len(p)
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if sel.any():
            e += sel.sum() / n * abs(p[sel].mean() - y[sel].mean())
    return e


def run_score(cxrvqa, model, files, jobs):
    """JSON lines of `cxrvqa score` for files, in `jobs` parallel processes."""
    chunks = [files[i::jobs] for i in range(jobs)]
    procs = [subprocess.Popen([cxrvqa, "score", "--model", model, "--threads", "1"] + c, stdout=subprocess.PIPE,
                              stderr=subprocess.PIPE, text=True) for c in chunks if c]
    out = {}
    for pr in procs:
        so, se = pr.communicate()
        for line in so.splitlines():
            o = json.loads(line)
            out[o["file"]] = o
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(prog="eval_engine.py")
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--model", required=True)
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "cxr"))
    ap.add_argument("--split", default="val")
    ap.add_argument("--agree", type=int, default=300, help="images compared with the PyTorch forward")
    ap.add_argument("--jobs", type=int, default=2)
    ap.add_argument("--boot", type=int, default=1000)
    ap.add_argument("--json")
    ap.add_argument("--limit", type=int, default=0, help="every k-th image so that about N are used (smoke test)")
    a = ap.parse_args(argv)
    if not os.path.exists(os.path.join(a.data, "labels.csv")):
        print("SKIP: %s/labels.csv absent — evaluation not run" % a.data)
        return 77
    m = cnn_forward.Model(a.model)
    names = list(m.k("cxr.findings.names"))
    calibrated = np.array(m.k("cxr.findings.calibrated")) > 0.5
    rows = [r for r in prepare_data.read_labels(a.data) if r["split"] == a.split]
    if a.limit:
        rows = rows[:: max(1, len(rows) // a.limit)]
    t0 = time.time()
    with tempfile.TemporaryDirectory(prefix="cxrvqa-eval-") as tmp:
        files = []
        for i, r in enumerate(rows):
            dst = os.path.join(tmp, "%05d.png" % i)
            Image.open(os.path.join(a.data, r["path"])).save(dst)  # same pixels, lossless container
            files.append(dst)
        t1 = time.time()
        res = run_score(a.cxrvqa, a.model, files, a.jobs)
        t2 = time.time()
    errors = [f for f in files if "error" in res.get(f, {"error": 1})]
    ok = [i for i, f in enumerate(files) if f not in errors]
    P = np.full((len(rows), len(names)), np.nan)
    Z = np.full((len(rows), len(names)), np.nan)
    dom = np.full(len(rows), np.nan)
    for i in ok:
        o = res[files[i]]
        for j, f in enumerate(o["findings"]):
            assert f["finding"] == names[j]
            P[i, j], Z[i, j] = f["p"], f["z"]
        dom[i] = o["domain_score"]
    print("eval_engine: %d %s images, PNG conversion %.0f s, C engine %.0f s (%.1f ms per image with %d jobs); "
          "%d refused or failed" % (len(rows), a.split, t1 - t0, t2 - t1, 1000 * (t2 - t1) / max(1, len(rows)),
                                   a.jobs, len(errors)))
    rows_ok = [rows[i] for i in ok]
    P_ok = P[ok]
    print("\nTargets, through the C engine (%s split, 95%% bootstrap CI, %d resamples):" % (a.split, a.boot))
    tab = cnn_forward.target_table(names, rows_ok, P_ok, a.boot, 0)
    cnn_forward.print_table(tab)
    print("\nPer finding (val images of the datasets that label it; no_finding: p = normal):")
    print("%-20s %6s  %-15s %5s %5s  %-10s %s" % ("finding", "AUC", "95% CI", "pos", "neg", "calibrated", "ECE"))
    per = []
    for j, n in enumerate(names):
        sel = [k for k, r in enumerate(rows_ok) if r["y"][n] is not None]
        y = np.array([rows_ok[k]["y"][n] for k in sel], dtype=bool)
        if len(sel) == 0 or y.all() or (~y).all():
            print("%-20s %6s  %-15s %5d %5d  %-10s" % (n, "n/a", "", int(y.sum()), int((~y).sum()),
                                                       "yes" if calibrated[j] else "no"))
            continue
        auc, lo, hi = metrics.bootstrap_auc(y, P_ok[sel, j], a.boot, 0)
        e = ece(P_ok[sel, j], y)
        per.append(dict(finding=n, auc=auc, lo=lo, hi=hi, pos=int(y.sum()), neg=int((~y).sum()),
                        calibrated=bool(calibrated[j]), ece=e))
        print("%-20s %6.3f  [%.3f, %.3f] %5d %5d  %-10s %.3f" % (n, auc, lo, hi, y.sum(), (~y).sum(),
                                                                "yes" if calibrated[j] else "no", e))
    thr = float(m.k("cxr.domain.threshold")) if m.has("d.prototypes") else float("nan")
    d_ok = dom[ok]
    print("\nDomain check: %d of %d %s radiographs below the threshold %.3f (median score %.3f)" % (
        int((d_ok < thr).sum()), len(d_ok), a.split, thr, float(np.median(d_ok))))
    agree = None
    if a.agree > 0:
        pick = ok[:: max(1, len(ok) // a.agree)][: a.agree]
        paths = set(rows[i]["path"] for i in pick)
        prow, imgs = cnn_forward.load_split(m, a.data, a.split, paths)
        emb = cnn_forward.TorchCNN(m, 2).embed(imgs)
        z = cnn_forward.zscores(m, emb)
        pt = metrics.sigmoid(np.array(m.k("cxr.findings.calib_a")) * z + np.array(m.k("cxr.findings.calib_b")))
        index = {rows[i]["path"]: i for i in pick}
        diff = max(float(np.abs(pt[k] - P[index[r["path"]]]).max()) for k, r in enumerate(prow))
        agree = dict(images=len(prow), max_abs_p_diff=diff)
        print("\nC engine vs PyTorch forward of the same file on %d images: max |p_C - p_torch| = %.2e" % (
            len(prow), diff))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(targets=tab, findings=per, domain=dict(threshold=thr, below=int((d_ok < thr).sum()),
                                                                 n=len(d_ok)),
                           agreement=agree, refused=len(errors), n=len(rows)), f, indent=1, default=float)
    return 0


if __name__ == "__main__":
    sys.exit(main())
