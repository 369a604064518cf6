#!/usr/bin/python3
"""test_validate.py — `cxrvqa validate` end to end.

Always (no shared data needed): PNG variants of sample_data/png_gray8.png with a seeded synthetic
label file, the two sample DICOMs, a 64-px PNG and a broken file:
  - every image is accounted for: scored, refused (too-small) or failed (listed with its reason);
  - the AUCs equal a Mann-Whitney count recomputed here from the JSON's per-image z and labels,
    the ECE before equals one recomputed here from p (10 bins);
  - labels by SOP Instance UID;
  - --out: the derived model opens, `cxrvqa ask` with it names its SHA-256 (not the source's), its
    answers use the new thresholds, its name says site-validated; the source file is unchanged;
  - bad input: missing labels, unknown column, unknown image, a bad value, --out = the model (also
    through a symlink) — each exits 2 with its own message;
  - --report: the HTML has one ROC and one reliability SVG per labelled finding, and headless
    Chromium renders it (a screenshot that is not blank and shows the ROC curves' colour).
With ../shared/data/cxr (else a visible SKIP line for that part): a few hundred val radiographs
written as DICOM (nih384, nih64 — refused as too small —, kermany224, covidrad224):
  (a) the shipped model: counts, AUCs recomputed here, tiers by the assessability rule;
  (b) a deliberately miscalibrated copy (calib_a x 3, calib_b + 2, written by
      model/tools/convert/gguf.py, not by the code under test): the ECE falls for every calibrated
      finding; the fitted thresholds reach the target sensitivity when p is recomputed here from z
      and the fitted a, b; findings with too few positives are not-assessed.

Usage: test_validate.py --cxrvqa build/cxrvqa [--data ../shared/data] [--keep DIR]
Exit 0 passed, 1 failed.
"""
import argparse
import csv
import hashlib
import json
import math
import os
import random
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image, ImageEnhance

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(os.path.dirname(HERE)))
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
sys.path[:0] = [os.path.join(ROOT, "tests", "plugin", "answer"), os.path.join(ROOT, "model", "tools", "convert")]
from test_trust import to_dicom  # noqa: E402  (the val radiograph as a DX DICOM)
import gguf  # noqa: E402

failures = []
passes = [0]


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passes[0] += 1
    else:
        failures.append(what)
    return ok


def kv(g, key):
    v = g.get(key)
    return getattr(v, "value", v)


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


def run(exe, *args, timeout=900):
    return subprocess.run([exe, *args], capture_output=True, text=True, timeout=timeout)


def validate_json(exe, *args):
    p = run(exe, "validate", "--json", *args)
    try:
        return p, json.loads(p.stdout)
    except ValueError:
        return p, None


def mw_auc(z, y):
    """AUC as the share of (positive, negative) pairs ordered right, ties half."""
    pos = [a for a, b in zip(z, y) if b]
    neg = [a for a, b in zip(z, y) if not b]
    if not pos or not neg:
        return float("nan")
    s = sum(1.0 if a > b else 0.5 if a == b else 0.0 for a in pos for b in neg)
    return s / (len(pos) * len(neg))


def ece(p, y, bins=10):
    p, y = np.asarray(p, float), np.asarray(y, float)
    e = 0.0
    for b in range(bins):
        lo, hi = b / bins, (b + 1) / bins
        sel = (p >= lo) & ((p < hi) if b < bins - 1 else (p <= hi))
        if sel.any():
            e += sel.sum() / len(p) * abs(p[sel].mean() - y[sel].mean())
    return e


def per_finding(js, name, key="p"):
    zs, ps, ys = [], [], []
    for s in js["scores"]:
        if name in s["labels"]:
            zs.append(s["z"][name])
            ps.append(s[key][name])
            ys.append(s["labels"][name])
    return zs, ps, ys


def check_recomputed(js, tag):
    """AUC and ECE before, recomputed here from the per-image scores."""
    for f in js["findings"]:
        if f["n"] == 0:
            continue
        z, p, y = per_finding(js, f["finding"])
        check(len(y) == f["n"] and sum(y) == f["positives"], "%s %s: n %d / %d+ from the scores" % (
            tag, f["finding"], f["n"], f["positives"]))
        a = mw_auc(z, y)
        if math.isnan(a):
            check(f["auc"] is None, "%s %s: AUC null with one class" % (tag, f["finding"]))
        else:
            check(abs(a - f["auc"]) < 1e-9, "%s %s: AUC %.4f = pair count %.4f" % (tag, f["finding"], f["auc"], a))
            check(f["auc_lo"] <= f["auc"] + 1e-12 and f["auc"] <= f["auc_hi"] + 1e-12,
                  "%s %s: CI [%.3f, %.3f] brackets the AUC" % (tag, f["finding"], f["auc_lo"], f["auc_hi"]))
        check(abs(ece(p, y) - f["ece_before"]) < 1e-5, "%s %s: ECE before %.4f = recomputed %.4f" % (
            tag, f["finding"], f["ece_before"], ece(p, y)))


def check_tiers(js, tag):
    lim = js["assessability"]
    for f in js["findings"]:
        lo = f["auc_lo"]
        ok = f["positives"] >= lim["min_positives"] and lo is not None and lo >= lim["min_auc_lo"]
        want = "not-assessed" if not ok else "assessable" if lo >= lim["full_auc_lo"] else "limited"
        check(f["tier"] == want, "%s %s: tier %s (%d+, CI low %s)" % (tag, f["finding"], f["tier"], f["positives"], lo))


# ------------------------------------------------------------------ no shared data

def synthetic_set(tmp):
    """40 PNG variants of the sample radiograph, the sample DICOMs, a 64-px PNG, a broken file."""
    d = os.path.join(tmp, "site")
    os.makedirs(d)
    rng = random.Random(16)
    base = Image.open(os.path.join(ROOT, "sample_data", "png_gray8.png")).convert("L")
    rows = []
    for i in range(40):
        im = base.rotate(rng.uniform(-6, 6), resample=Image.BILINEAR, fillcolor=0)
        w, h = im.size
        c = rng.uniform(0, 0.08)
        im = im.crop((int(c * w), int(c * h), w - int(c * w), h - int(c * h)))
        im = ImageEnhance.Brightness(im).enhance(rng.uniform(0.8, 1.2))
        name = "case%02d.png" % i
        im.save(os.path.join(d, name))
        rows.append((name, str(int(i % 3 == 0)), str(int(rng.random() < 0.4)) if i % 5 else ""))
    for s in ("dx_mono2_rle.dcm", "cr_mono1_jpegls.dcm"):
        shutil.copy(os.path.join(ROOT, "sample_data", s), os.path.join(d, s))
        rows.append((s, "1", "0"))
    base.resize((64, 77)).save(os.path.join(d, "tiny.png"))
    rows.append(("tiny.png", "0", "1"))
    with open(os.path.join(d, "broken.dcm"), "wb") as f:
        f.write(b"\0" * 128 + b"DICM" + b"\x02\x00\x10\x00UI\xff\x00truncated")
    rows.append(("broken.dcm", "1", "1"))
    labels = os.path.join(tmp, "site.csv")
    with open(labels, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path", "effusion", "Pneumonia"])  # a lexicon name and a display name
        for r in rows:
            w.writerow(["site/" + r[0], r[1], r[2]])
    return d, labels


def report_checks(html, findings, tmp, tag):
    text = open(html, encoding="utf-8").read()
    for f in findings:
        sec = text.split('<section class="finding" data-finding="%s">' % f["finding"])
        if f["n"] == 0:
            check(len(sec) == 1, "%s report: no plots for unlabelled %s" % (tag, f["finding"]))
            continue
        body = sec[1].split("</section>")[0] if len(sec) == 2 else ""
        check(body.count('<svg class="roc"') == 1 and body.count('<svg class="reliability"') == 1,
              "%s report: one ROC and one reliability diagram for %s" % (tag, f["finding"]))
    check("Research tool" in text and "not a diagnostic device" in text, "%s report: disclaimer" % tag)
    chromium = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), None)
    if not chromium:
        print("SKIP: the report's rendering (Chromium is not installed)")
        return
    shot = os.path.join(tmp, "report.png")
    prof = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    p = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--user-data-dir=" + prof, "--window-size=1400,2600", "--screenshot=" + shot,
                        "file://" + os.path.abspath(html)], capture_output=True, text=True, timeout=120)
    if not check(os.path.exists(shot), "%s report: Chromium screenshot (rc %d)" % (tag, p.returncode)):
        return
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    check(px.std() > 10, "%s report: screenshot not blank (std %.1f)" % (tag, px.std()))
    roc = (np.abs(px - np.array([31, 95, 191])).sum(axis=2) < 40).sum()  # #1f5fbf, the ROC curves
    check(roc > 200, "%s report: the ROC curves are drawn (%d pixels of their colour)" % (tag, roc))


def part_synthetic(exe, tmp):
    d, labels = synthetic_set(tmp)
    src_sha = sha256(MODEL)
    out = os.path.join(tmp, "site-model.gguf")
    html = os.path.join(tmp, "report.html")
    p, js = validate_json(exe, "--model", MODEL, "--labels", labels, "--site", "test-site", "--jobs", "2",
                          "--out", out, "--report", html, d)
    if not check(p.returncode == 0 and js, "synthetic: validate exits 0 with JSON (rc %d: %s)" % (
            p.returncode, p.stderr[-300:])):
        return
    im = js["images"]
    check(im["total"] == 44 and im["scored"] == 42 and im["refused"] == 1 and im["failed"] == 1,
          "synthetic: 44 images = 42 scored + 1 refused + 1 failed (%s)" % im)
    check([r["code"] for r in js["refused"]] == ["too-small"] and js["refused"][0]["file"].endswith("tiny.png"),
          "synthetic: the 64-px PNG refused as too-small")
    check(len(js["failed"]) == 1 and js["failed"][0]["file"].endswith("broken.dcm") and js["failed"][0]["reason"],
          "synthetic: the broken file listed as failed with its reason: %s" % js["failed"][:1])
    check(js["by_reason"] == {"too-small": 1, js["failed"][0]["code"]: 1}, "synthetic: by_reason %s" % js["by_reason"])
    fe = {f["finding"]: f for f in js["findings"]}
    check(fe["pleural_effusion"]["column"] == "effusion" and fe["pneumonia"]["column"] == "Pneumonia",
          "synthetic: columns by lexicon and display name")
    check(fe["pleural_effusion"]["n"] == 42 and fe["pneumonia"]["n"] == 42 - 8 - 1 + 1,
          "synthetic: n per finding (%d, %d; empty = unknown)" % (fe["pleural_effusion"]["n"], fe["pneumonia"]["n"]))
    check_recomputed(js, "synthetic")
    check_tiers(js, "synthetic")
    check(all(f["tier"] == "not-assessed" and not f["refit"] for f in js["findings"]),
          "synthetic: under 20 positives nothing is refitted or assessable")
    src = gguf.read(MODEL)
    check(abs(fe["pleural_effusion"]["threshold"] - kv(src, "cxr.findings.threshold")[0]) < 1e-7 and
          abs(fe["pleural_effusion"]["calib_a"] - kv(src, "cxr.findings.calib_a")[0]) < 1e-7 and
          abs(fe["pleural_effusion"]["ece_after"] - fe["pleural_effusion"]["ece_before"]) < 1e-9,
          "synthetic: a finding that cannot be refitted keeps the file's calibration and threshold")
    check(fe["cardiomegaly"]["n"] == 0 and fe["cardiomegaly"]["note"] == "no label column",
          "synthetic: findings without a column say so")

    # (c) the derived model
    check(sha256(MODEL) == src_sha, "--out: the source model is unchanged (sha256 before = after)")
    check(os.path.exists(out) and js["derived_model"]["sha256"] == sha256(out) != src_sha,
          "--out: derived model written, its SHA-256 reported and different from the source's")
    a = run(exe, "ask", "--json", "--no-audit", "--model", out, os.path.join(d, "dx_mono2_rle.dcm"),
            "Is there a pleural effusion?")
    try:
        ans = json.loads(a.stdout)
    except ValueError:
        ans = None
    if check(a.returncode == 0 and ans, "--out: cxrvqa ask answers with the derived model (%s)" % a.stderr[-200:]):
        check(ans["model"]["sha256"] == sha256(out), "--out: the answer names the derived model's SHA-256")
        check("site-validated" in ans["model"]["name"] and "test-site" in ans["model"]["version"],
              "--out: the answer names it site-validated (%s %s)" % (ans["model"]["name"], ans["model"]["version"]))
        f, site = ans["findings"][0], fe["pleural_effusion"]
        va = f.get("validation_auc") or {}
        check(va.get("positives") == site["positives"] and va.get("negatives") == site["negatives"] and
              abs(va.get("auc", -1) - site["auc"]) < 1e-6 and f["tier"] == "not-assessed",
              "--out: the answer carries the site's validation (%s; the source's: 29+) and its tier %s" % (
                  va, f["tier"]))
    g = gguf.read(out)
    check(kv(g, "cxr.site.name")== "test-site" and kv(g, "cxr.site.source_sha256")== src_sha and
          abs(kv(g, "cxr.site.sensitivity") - 0.9) < 1e-6 and kv(g, "cxr.site.n_images")== 42,
          "--out: provenance keys cxr.site.*")
    report_checks(html, js["findings"], tmp, "synthetic")

    # labels by SOP Instance UID (DICOM)
    import pydicom
    uid_csv = os.path.join(tmp, "uid.csv")
    with open(uid_csv, "w") as f:
        f.write("sop_instance_uid,pleural_effusion\n")
        for s in ("dx_mono2_rle.dcm", "cr_mono1_jpegls.dcm"):
            f.write("%s,1\n" % pydicom.dcmread(os.path.join(d, s), stop_before_pixels=True).SOPInstanceUID)
    p, js2 = validate_json(exe, "--model", MODEL, "--labels", uid_csv, d)
    check(p.returncode == 0 and js2 and js2["images"]["labelled"] == 2 and
          {f["finding"]: f["positives"] for f in js2["findings"]}["pleural_effusion"] == 2,
          "labels by SOP Instance UID: 2 labelled images")

    # (d) bad input
    def bad(args, want, what):
        p = run(exe, "validate", "--model", MODEL, *args)
        check(p.returncode == 2 and want in p.stderr, "bad input: %s -> exit 2 with '%s' (rc %d: %s)" % (
            what, want, p.returncode, p.stderr.strip().splitlines()[0] if p.stderr.strip() else ""))

    bad(["--labels", os.path.join(tmp, "nope.csv"), d], "cannot read the labels", "missing labels file")
    col = os.path.join(tmp, "col.csv")
    open(col, "w").write("path,effusion,frobnication\nsite/case00.png,1,0\n")
    bad(["--labels", col, d], "column 'frobnication' is not a finding of the model", "unknown column")
    unk = os.path.join(tmp, "unk.csv")
    open(unk, "w").write("path,effusion\nsite/case00.png,1\nsite/elsewhere.dcm,0\n")
    bad(["--labels", unk, d], "is not among the IMAGES given", "unknown image")
    val = os.path.join(tmp, "val.csv")
    open(val, "w").write("path,effusion\nsite/case00.png,yes\n")
    bad(["--labels", val, d], "'yes' is not 1, 0 or empty", "a label that is not 1/0/empty")
    nokey = os.path.join(tmp, "nokey.csv")
    open(nokey, "w").write("image_id,effusion\nx,1\n")
    bad(["--labels", nokey, d], "no image column", "no image column")
    bad(["--labels", labels, "--out", MODEL, d], "is the model itself", "--out equal to the model")
    link = os.path.join(tmp, "alias.gguf")
    os.symlink(MODEL, link)
    bad(["--labels", labels, "--out", link, d], "is the model itself", "--out a symlink to the model")
    bad(["--labels", labels, "--sensitivity", "1.5", d], "--sensitivity", "--sensitivity out of range")
    check(sha256(MODEL) == src_sha, "bad input: the source model is unchanged")
    p = run(exe, "validate", "--help")
    check(p.returncode == 0 and "--labels SITE.csv" in p.stdout and "--sensitivity" in p.stdout, "validate --help")


# ---------------------------------------------------------------- shared data

def part_data(exe, tmp, data):
    labels = os.path.join(data, "cxr", "labels.csv")
    if not os.path.isfile(labels):
        print("SKIP: %s is absent: the val-split part (a, b) did not run" % labels)
        return
    rows = [r for r in csv.DictReader(open(labels)) if r["split"] == "val"]
    rng = random.Random(1234)
    take = {"nih384": 77, "nih64": 20, "kermany224": 100, "covidrad224": 100}
    pick = []
    for ds, k in take.items():
        sub = [r for r in rows if r["dataset"] == ds]
        pick += rng.sample(sub, min(k, len(sub)))
    d = os.path.join(tmp, "val")
    os.makedirs(d)
    cols = ["effusion", "pneumonia", "covid19", "no_finding", "infiltration", "atelectasis"]
    csv_path = os.path.join(tmp, "val.csv")
    with open(csv_path, "w", newline="") as f:
        w = csv.writer(f)
        w.writerow(["path"] + cols)
        for i, r in enumerate(pick):
            name = "%04d.dcm" % i
            to_dicom(os.path.join(data, "cxr", r["path"]), os.path.join(d, name), r["view"])
            w.writerow(["val/" + name] + [r[c] for c in cols])
    n_small = take["nih64"]

    # (a) the shipped model
    p, js = validate_json(exe, "--model", MODEL, "--labels", csv_path, "--jobs", "2", d)
    if not check(p.returncode == 0 and js, "val: validate exits 0 (rc %d: %s)" % (p.returncode, p.stderr[-300:])):
        return
    im = js["images"]
    check(im["total"] == len(pick) and im["refused"] >= n_small and im["scored"] + im["refused"] + im["failed"] ==
          len(pick), "val: %d images = %d scored + %d refused + %d failed" % (
              len(pick), im["scored"], im["refused"], im["failed"]))
    check(js["by_reason"].get("too-small", 0) == n_small, "val: the %d nih64 images refused as too-small" % n_small)
    check_recomputed(js, "val")
    check_tiers(js, "val")
    print("val (shipped model):")
    for f in js["findings"]:
        if f["n"]:
            print("  %-18s %3d+ %3d-  AUC %.3f [%.3f, %.3f]  ECE %.3f -> %.3f  thr %.3f sens %.3f spec %.3f  %s" % (
                f["finding"], f["positives"], f["negatives"], f["auc"], f["auc_lo"] or 0, f["auc_hi"] or 0,
                f["ece_before"], f["ece_after"], f["threshold"], f["sensitivity"], f["specificity"], f["tier"]))

    # (b) a miscalibrated copy, written here with model/tools/convert/gguf.py
    g = gguf.read(MODEL)
    a = np.array(kv(g, "cxr.findings.calib_a"), dtype=np.float64)
    b = np.array(kv(g, "cxr.findings.calib_b"), dtype=np.float64)
    bad_model = os.path.join(tmp, "miscalibrated.gguf")
    w = gguf.copy_except(g, lambda k: k in ("cxr.findings.calib_a", "cxr.findings.calib_b"))
    w.add_arr("cxr.findings.calib_a", gguf.FLOAT32, [float(x) for x in a * 3])
    w.add_arr("cxr.findings.calib_b", gguf.FLOAT32, [float(x) for x in b + 2])
    w.write(bad_model)
    out = os.path.join(tmp, "val-site.gguf")
    p, js = validate_json(exe, "--model", bad_model, "--labels", csv_path, "--jobs", "2", "--sensitivity", "0.90",
                          "--out", out, d)
    if not check(p.returncode == 0 and js, "miscalibrated: validate exits 0 (%s)" % p.stderr[-300:]):
        return
    check_recomputed(js, "miscalibrated")
    check_tiers(js, "miscalibrated")
    n_cal = 0
    for f in js["findings"]:
        if f["n"] == 0:
            continue
        if f["refit"]:
            n_cal += 1
            check(f["ece_after"] < f["ece_before"], "miscalibrated %s: ECE falls %.3f -> %.3f" % (
                f["finding"], f["ece_before"], f["ece_after"]))
            z, _, y = per_finding(js, f["finding"])
            pa = np.float32(f["calib_a"]) * np.asarray(z, np.float64) + np.float32(f["calib_b"])
            p_here = 1 / (1 + np.exp(-pa))
            y = np.asarray(y, bool)
            sens = float((p_here[y] >= f["threshold"] - 1e-6).mean())
            check(sens >= 0.90, "miscalibrated %s: sensitivity at the fitted threshold %.3f >= 0.90 "
                                "(recomputed from z here)" % (f["finding"], sens))
            check(f["uncertain_low"] <= f["threshold"] <= f["uncertain_high"], "miscalibrated %s: band around "
                                                                               "the threshold" % f["finding"])
        if f["positives"] < js["assessability"]["min_positives"]:
            check(f["tier"] == "not-assessed", "miscalibrated %s: %d positives -> not-assessed" % (
                f["finding"], f["positives"]))
    check(n_cal >= 2, "miscalibrated: %d findings had enough cases to calibrate" % n_cal)
    print("val (miscalibrated copy, site fit):")
    for f in js["findings"]:
        if f["n"]:
            print("  %-18s %3d+ %3d-  ECE %.3f -> %.3f  a %.3f b %.3f thr %.3f sens %.3f  %s" % (
                f["finding"], f["positives"], f["negatives"], f["ece_before"], f["ece_after"], f["calib_a"],
                f["calib_b"], f["threshold"], f["sensitivity"], f["tier"]))
    # the derived model answers with the site's figures
    fe = {f["finding"]: f for f in js["findings"]}
    cal = [n for n, f in fe.items() if f["refit"] and n == "pneumonia"]
    if cal:
        q = run(exe, "ask", "--json", "--no-audit", "--model", out, os.path.join(d, "0000.dcm"),
                "Does the patient have pneumonia?")
        ans = json.loads(q.stdout) if q.returncode == 0 else None
        if check(ans is not None, "val --out: ask with the derived model"):
            f = ans["findings"][0]
            check(ans["model"]["sha256"] == sha256(out) and abs(f["threshold"] - fe["pneumonia"]["threshold"]) < 1e-6
                  and abs(f["validation_auc"]["auc"] - fe["pneumonia"]["auc"]) < 1e-6,
                  "val --out: the answer names the derived model and uses its pneumonia threshold %.4f and AUC" %
                  f["threshold"])


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--keep", default=None, help="work in this folder and keep it")
    args = ap.parse_args()
    exe = os.path.abspath(args.cxrvqa)
    tmp = args.keep or tempfile.mkdtemp(prefix="cxrvqa-validate-")
    os.makedirs(tmp, exist_ok=True)
    try:
        part_synthetic(exe, tmp)
        part_data(exe, tmp, args.data)
    finally:
        if not args.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passes[0], len(failures)))
    for f in failures:
        print("FAILED: " + f)
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
