#!/usr/bin/env python3
"""`cxrvqa screen --worklist --report`: the triage outputs and the screen's inputs.

Part 1 (always; sample_data and generated files): a folder with the sample DICOMs, a PNG, a .txt
and a broken .png -> the .txt named as skipped, the broken file failed and last in the worklist;
-v lists the skipped files; a folder of only .txt files (and an empty folder) exit 2 with a clear
message; two sample DICOMs rewritten as hand images (not chest) are refused and the summary warns
that more than a quarter were refused, naming not-chest.

JPEG files (always): grey, colour and progressive answered alike; CMYK, tiny and truncated ones
refused or failed with their reason.

Part 2 (with ../shared/data/cxr, else a visible SKIP line): val radiographs of four datasets, most
read directly as JPEG, some written as DICOM with accession / patient / study date; the worklist's
order, scores, top finding and positive findings recomputed here from the JSONL's probabilities
(score = max p / threshold over findings decided yes / uncertain / no); the identifiers of the
DICOM rows; refused images after every answered one; the report's sections, its per-finding counts
against the JSONL, its thumbnails decoded as PNG; the report rendered by headless Chromium (not
blank, the histogram colours drawn); `screen --collect` rebuilds the same ranking from the audit.

Usage: test_triage.py CXRVQA [--data ../shared/data] [--keep DIR]   (DIR: the report and screenshot)
"""
import argparse
import base64
import csv
import io
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLE = os.path.join(ROOT, "sample_data")
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
failures, passes = [], [0]


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passes[0] += 1
    else:
        failures.append(what)
    return ok


def screen(exe, *args, timeout=600):
    return subprocess.run([exe, "screen", "--model", MODEL, *args], capture_output=True, text=True, timeout=timeout)


def read_worklist(path):
    with open(path, newline="") as f:
        return list(csv.DictReader(f))


def read_jsonl(path):
    with open(path) as f:
        return [json.loads(line) for line in f if line.strip()]


def expected_scores(rows):
    """path -> (score, top finding, {yes findings}) from the JSONL, independently of triage.c"""
    per = {}
    for r in rows:
        if r["status"] != "ok" or not r["result"]:
            continue
        d = per.setdefault(r["path"], {})
        for f in r["result"].get("findings", []):
            if f["decision"] not in ("yes", "no", "uncertain"):
                continue
            ratio = f["probability"] / max(f["threshold"], 1e-6)
            if f["finding"] not in d or ratio > d[f["finding"]][0]:
                d[f["finding"]] = (ratio, f["decision"])
    out = {}
    for path, d in per.items():
        if d:
            top = max(d, key=lambda k: d[k][0])
            out[path] = (d[top][0], top, {k for k, v in d.items() if v[1] == "yes"})
    return out


def statuses(rows):
    """path -> answered / refused / failed, per image (answered if any question was)"""
    st = {}
    for r in rows:
        s = {"ok": "answered", "refused": "refused", "error": "failed"}[r["status"]]
        old = st.get(r["path"])
        rank = {"answered": 0, "refused": 1, "failed": 2}
        if old is None or rank[s] < rank[old]:
            st[r["path"]] = s
    return st


def as_dicom(src_px, out, acc, pid, date, body="CHEST", modality="DX"):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName, ds.AccessionNumber, ds.StudyDate = pid, "Test^Triage", acc, date
    ds.Modality, ds.BodyPartExamined, ds.ViewPosition = modality, body, "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = src_px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = src_px.tobytes()
    ds.save_as(out, write_like_original=False)
    return ds


def check_order(tag, wl, exp, st):
    """the worklist against scores recomputed from the JSONL"""
    check(len(wl) == len(st), "%s: one worklist row per image (%d rows, %d images)" % (tag, len(wl), len(st)))
    check([int(r["rank"]) for r in wl] == list(range(1, len(wl) + 1)), "%s: ranks 1..%d" % (tag, len(wl)))
    scored = [r for r in wl if r["score"]]
    want = sorted(exp, key=lambda p: (-exp[p][0], p))
    got = [r["path"] for r in scored]
    check(got == want, "%s: the %d scored images in the order of max p/threshold recomputed from the JSONL%s"
          % (tag, len(want), "" if got == want else " (first difference at %d)" %
             next((i for i, (a, b) in enumerate(zip(got, want)) if a != b), min(len(got), len(want)))))
    bad = [r["path"] for r in scored if r["path"] in exp and (abs(float(r["score"]) - exp[r["path"]][0]) > 6e-5
                                                               or r["top_finding"] != exp[r["path"]][1])]
    check(not bad, "%s: score and top finding of every scored row match (%d differ)" % (tag, len(bad)))
    badpos = [r["path"] for r in scored
              if {x.split(":")[0] for x in r["positive"].split(";") if x} != exp.get(r["path"], (0, 0, set()))[2]]
    check(not badpos, "%s: the positive findings of every row match the JSONL's yes decisions (%d differ)"
          % (tag, len(badpos)))
    groups = [0 if r["score"] else {"answered": 1, "refused": 2, "failed": 3}.get(r["status"], 4) for r in wl]
    check(groups == sorted(groups), "%s: scored, then unscored, then refused, then failed images" % tag)
    check(all(r["status"] == st[r["path"]] for r in wl), "%s: every row's status is its image's" % tag)
    check(all(r["refusal_reason"] for r in wl if r["status"] in ("refused", "failed")),
          "%s: every refused or failed row says why" % tag)


def part_local(exe, tmp):
    d = os.path.join(tmp, "local")
    os.makedirs(d)
    for n in sorted(os.listdir(SAMPLE)):
        if n.endswith((".dcm", ".png")):
            shutil.copy(os.path.join(SAMPLE, n), d)
    with open(os.path.join(d, "notes.txt"), "w") as f:
        f.write("not an image\n")
    with open(os.path.join(d, "broken.png"), "wb") as f:
        f.write(b"\x89PNG\r\n\x1a\n" + b"\0" * 200)  # a PNG signature and nothing readable
    db, wl, js = (os.path.join(tmp, x) for x in ("local.db", "local.csv", "local.jsonl"))
    p = screen(exe, "--db", db, "--jobs", "2", "--worklist", wl, "--jsonl", js, d)
    check(p.returncode == 1, "local: a failed image makes the exit status 1 (%d)" % p.returncode)
    check(re.search(r"1 file skipped \(not DICOM, PNG or JPEG\): \S*notes\.txt", p.stderr) is not None,
          "local: the .txt is named as skipped")
    final = [l for l in p.stderr.splitlines() if re.match(r"screen: \d+/\d+ done", l)]
    rows = read_jsonl(js)
    n_ok = sum(r["status"] == "ok" for r in rows)
    n_err = sum(r["status"] == "error" for r in rows)
    check(bool(final) and ("%d answered" % n_ok) in final[-1] and ("%d failed" % n_err) in final[-1]
          and "0 refused" in final[-1], "local: the progress line counts answered / refused / failed (%s)"
          % (final[-1] if final else p.stderr[-300:]))
    w = read_worklist(wl)
    st = statuses(rows)
    check_order("local", w, expected_scores(rows), st)
    check(w and w[-1]["path"].endswith("broken.png") and w[-1]["status"] == "failed",
          "local: the broken file is the last row, failed")
    check(all(not r["path"].endswith(".txt") for r in w), "local: the .txt is not in the worklist")
    dc = [r for r in w if r["path"].endswith(".dcm")]
    check(dc and all(r["accession"] and r["patient_id"] and r["study_uid"] and r["study_date"] for r in dc),
          "local: the DICOM rows carry accession, patient ID, study UID and date")
    p = screen(exe, "--db", db, "-v", "--worklist", wl, d)
    check("notes.txt" in p.stderr and "answered" in p.stderr, "local: -v on a resumed run lists the skipped file")
    # only text files: an error, not "0 images"
    t = os.path.join(tmp, "textonly")
    os.makedirs(t)
    for i in range(3):
        with open(os.path.join(t, "r%d.txt" % i), "w") as f:
            f.write("x\n")
    p = screen(exe, "--db", db, t)
    check(p.returncode == 2 and "no images to screen" in p.stderr and "3 files skipped" in p.stderr,
          "local: a folder of only .txt files exits 2 naming them (rc %d: %s)" % (p.returncode, p.stderr.strip()[-200:]))
    e = os.path.join(tmp, "empty")
    os.makedirs(e)
    p = screen(exe, "--db", db, e)
    check(p.returncode == 2 and "no files found" in p.stderr, "local: an empty folder exits 2 (rc %d)" % p.returncode)
    # refusals: two sample images as hand radiographs -> more than a quarter refused, main reason named
    r = os.path.join(tmp, "refusing")
    os.makedirs(r)
    dcms = sorted(n for n in os.listdir(SAMPLE) if n.endswith(".dcm"))
    for n in dcms:
        shutil.copy(os.path.join(SAMPLE, n), r)
        ds = pydicom.dcmread(os.path.join(SAMPLE, n))
        ds.BodyPartExamined = "HAND"
        ds.SOPInstanceUID = generate_uid()
        ds.file_meta.MediaStorageSOPInstanceUID = ds.SOPInstanceUID
        ds.save_as(os.path.join(r, "hand_" + n))
    rwl = os.path.join(tmp, "refusing.csv")
    p = screen(exe, "--db", os.path.join(tmp, "refusing.db"), "--worklist", rwl, r)
    m = re.search(r"warning: (\d+) of (\d+) images .*refused; main reason: (\S+)", p.stderr)
    check(p.returncode == 0 and m is not None and m.group(1) == str(len(dcms)) and m.group(3) == "not-chest",
          "local: half refused -> the summary warns and names not-chest (%s)" % (m.group(0) if m else p.stderr[-300:]))
    w = read_worklist(rwl)
    check([r["status"] for r in w] == ["answered"] * len(dcms) + ["refused"] * len(dcms)
          and all(r["refusal_reason"].startswith("not-chest") for r in w[len(dcms):]),
          "local: refused images last in the worklist, with their reason")
    p = screen(exe, "--db", os.path.join(tmp, "fine.db"), os.path.join(SAMPLE, dcms[0]))
    check(p.returncode == 0 and "warning" not in p.stderr.replace("no VOI", ""), "local: no refusal warning when none refused")


def ask_json(exe, path):
    p = subprocess.run([exe, "ask", "--json", "--no-audit", "--model", MODEL, path, "Is there a pleural effusion?"],
                       capture_output=True, text=True, timeout=120)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, {"error": p.stderr}


def part_jpeg(exe, tmp):
    """JPEG files as radiographs: grey and colour alike, bad ones refused by name"""
    d = os.path.join(tmp, "jpeg")
    os.makedirs(d)
    src = Image.open(os.path.join(SAMPLE, "png_gray8.png")).convert("L")
    src.save(os.path.join(d, "grey.jpg"), quality=95)
    src.convert("RGB").save(os.path.join(d, "colour.jpg"), quality=95)
    src.save(os.path.join(d, "progressive.jpg"), quality=95, progressive=True)
    src.convert("CMYK").save(os.path.join(d, "cmyk.jpg"))
    src.resize((20, 20)).save(os.path.join(d, "tiny.jpg"))
    whole = open(os.path.join(d, "grey.jpg"), "rb").read()
    with open(os.path.join(d, "cut.jpg"), "wb") as f:
        f.write(whole[:len(whole) // 3])
    res = {n: ask_json(exe, os.path.join(d, n)) for n in sorted(os.listdir(d))}
    g = res["grey.jpg"][1]
    check(res["grey.jpg"][0] == 0 and g.get("image", {}).get("transfer_syntax") == "JPEG" and g.get("findings"),
          "jpeg: an 8-bit grey JPEG file is answered (%s)" % g.get("error", "")[:120])
    pg = g["findings"][0]["probability"] if g.get("findings") else -1
    for n in ("colour.jpg", "progressive.jpg"):
        rc, o = res[n]
        pc = o["findings"][0]["probability"] if o.get("findings") else -9
        check(rc == 0 and abs(pc - pg) < 0.02, "jpeg: %s read as grey, p %.3f vs grey %.3f" % (n, pc, pg))
    rc, o = res["cmyk.jpg"]
    check(rc == 1 and "CMYK" in o.get("error", ""), "jpeg: CMYK refused by name (%s)" % o.get("error", "")[:100])
    rc, o = res["tiny.jpg"]
    check(rc == 0 and o.get("refused") and o.get("reason_code") == "too-small",
          "jpeg: a 20x20 JPEG is refused as too small, as a PNG is (%s)" % o.get("reason_code"))
    rc, o = res["cut.jpg"]
    check(rc == 1 and o.get("error"), "jpeg: a JPEG cut to a third fails (%s: %s)" % (o.get("code"), o.get("error", "")[:80]))


def render(html, tmp, keep):
    chromium = next((p for p in ("/usr/lib/chromium/chromium", "/usr/bin/chromium") if os.path.exists(p)), None)
    if not chromium:
        print("SKIP: the report's rendering (Chromium is not installed)")
        return
    shot = os.path.join(tmp, "report.png")
    prof = tempfile.mkdtemp(prefix="chromium-", dir=tmp)
    p = subprocess.run([chromium, "--headless=new", "--no-sandbox", "--disable-gpu", "--hide-scrollbars",
                        "--user-data-dir=" + prof, "--window-size=1400,3200", "--screenshot=" + shot,
                        "file://" + os.path.abspath(html)], capture_output=True, text=True, timeout=120)
    if not check(os.path.exists(shot), "report: Chromium screenshot (rc %d)" % p.returncode):
        return
    px = np.asarray(Image.open(shot).convert("RGB"), dtype=np.int32)
    check(px.std() > 10, "report: screenshot not blank (std %.1f)" % px.std())
    red = (np.abs(px - np.array([192, 57, 43])).sum(axis=2) < 40).sum()   # #c0392b: bars above threshold
    blue = (np.abs(px - np.array([31, 95, 191])).sum(axis=2) < 40).sum()  # #1f5fbf: bars below
    check(red > 200 and blue > 200, "report: the histograms are drawn (%d red, %d blue pixels)" % (red, blue))
    if keep:
        shutil.copy(shot, os.path.join(keep, "report.png"))


def part_data(exe, tmp, data, keep):
    labels = os.path.join(data, "cxr", "labels.csv")
    if not os.path.isfile(labels):
        print("SKIP: %s is absent: the val-radiograph part did not run" % labels)
        return
    rows = [r for r in csv.DictReader(open(labels)) if r["split"] == "val"]
    take = {"nih384": 110, "nih64": 25, "kermany224": 45, "covidrad224": 60}
    d = os.path.join(tmp, "val")
    os.makedirs(d)
    picked, as_dcm = [], {}
    for ds_name, n in take.items():
        sel = sorted((r for r in rows if r["dataset"] == ds_name), key=lambda r: r["path"])[:n]
        picked += sel
    for i, r in enumerate(picked):
        src = os.path.join(data, "cxr", r["path"])
        base = r["path"].replace("/", "_")
        if i % 4 == 0 and r["dataset"] == "nih384":  # a quarter of the adult images as DICOM
            px = np.asarray(Image.open(src).convert("L"), dtype=np.uint8)
            acc, pid = "ACC%05d" % i, "PID-%s" % r["patient"]
            out = os.path.join(d, base[:-4] + ".dcm")
            as_dicom(px, out, acc, pid, "20240%d%02d" % (1 + i % 9, 1 + i % 28))
            as_dcm[os.path.realpath(out)] = (acc, pid)
        else:
            shutil.copy(src, os.path.join(d, base))
    db, wl, js, html = (os.path.join(tmp, x) for x in ("val.db", "val.csv", "val.jsonl", "report.html"))
    p = screen(exe, "--db", db, "--jobs", "2", "--worklist", wl, "--jsonl", js, "--report", html, d, timeout=900)
    check(p.returncode == 0, "val: screen of %d images exits 0 (%s)" % (len(picked), p.stderr.strip()[-300:]))
    res = read_jsonl(js)
    st = statuses(res)
    check(len(st) == len(picked), "val: every image read (%d of %d; JPEG files included)" % (len(st), len(picked)))
    w = read_worklist(wl)
    exp = expected_scores(res)
    check_order("val", w, exp, st)
    n_ref = sum(s == "refused" for s in st.values())
    print("     %d answered, %d refused, %d failed; %d scored" % (sum(s == "answered" for s in st.values()), n_ref,
                                                                 sum(s == "failed" for s in st.values()), len(exp)))
    warned = "were refused; main reason" in p.stderr
    check(warned == (n_ref > 0.25 * len(st)), "val: the refusal warning iff more than a quarter refused (%d of %d)"
          % (n_ref, len(st)))
    byp = {r["path"]: r for r in w}
    okd = [p_ for p_, (acc, pid) in as_dcm.items() if byp.get(p_, {}).get("accession") == acc
           and byp[p_]["patient_id"] == pid and len(byp[p_]["study_date"]) == 8]
    check(len(okd) == len(as_dcm) and as_dcm, "val: the %d DICOM rows carry their accession, patient ID and study date"
          % len(as_dcm))
    # the report
    text = open(html).read()
    for sec in ("summary", "findings", "refusals", "histograms", "top-cases", "worklist"):
        check('id="%s"' % sec in text, "report: section %s" % sec)
    check("<script" not in text and "<link" not in text and not re.search(r'src="(?!data:)', text),
          "report: self-contained (no scripts, links or external sources)")
    check("Research tool, not a diagnostic device" in text, "report: research-tool disclaimer")
    thumbs = re.findall(r'<img class="thumb" alt="image, rank (\d+)" src="data:image/png;base64,([^"]+)"', text)
    heats = re.findall(r'<img class="heatmap" alt="evidence heatmap, rank (\d+)" src="data:image/png;base64,([^"]+)"',
                       text)
    want = min(12, len(exp))
    check(len(thumbs) == want and len(heats) == want, "report: %d thumbnails and heatmaps (%d, %d)"
          % (want, len(thumbs), len(heats)))
    check([int(r) for r, _ in thumbs] == list(range(1, want + 1)), "report: the top cases are ranks 1..%d" % want)
    sizes = []
    for _, b in thumbs + heats:
        try:
            im = Image.open(io.BytesIO(base64.b64decode(b)))
            im.load()
            sizes.append(max(im.size))
        except Exception as e:  # noqa: BLE001 - any decode failure is the finding
            sizes.append(-1)
            print("     undecodable: %s" % e)
    check(sizes and min(sizes) > 32, "report: every thumbnail and heatmap decodes as a PNG (sides %s)" % sizes[:4])
    # per-finding decision counts against the JSONL
    cnt = {}
    for path in st:
        seen = {}
        for r in res:
            if r["path"] == path and r["status"] == "ok" and r["result"]:
                for f in r["result"]["findings"]:
                    seen[f["finding"]] = f["decision"]
        for f, dcs in seen.items():
            cnt.setdefault(f, {}).setdefault(dcs, 0)
            cnt[f][dcs] += 1
    tab = text.split('id="findings"')[1].split("</table>")[0]
    good = 0
    for f, c in cnt.items():
        m = re.search(r"<tr><td>%s</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td><td>(\d+)</td>" % re.escape(f), tab)
        if m and [int(x) for x in m.groups()] == [c.get(k, 0) for k in ("yes", "uncertain", "no", "not-assessed")]:
            good += 1
    check(cnt and good == len(cnt), "report: decisions per finding match the JSONL (%d of %d findings)" % (good, len(cnt)))
    if keep:
        shutil.copy(html, os.path.join(keep, "report.html"))
        shutil.copy(wl, os.path.join(keep, "worklist.csv"))
    render(html, tmp, keep)
    # the same ranking from the audit store alone
    wl2 = os.path.join(tmp, "collect.csv")
    p = screen(exe, "--collect", db, "--worklist", wl2, "--report", os.path.join(tmp, "collect.html"))
    w2 = read_worklist(wl2) if p.returncode == 0 else []
    check(p.returncode == 0 and [r["path"] for r in w2] == [r["path"] for r in w]
          and [r["score"] for r in w2] == [r["score"] for r in w],
          "collect: the worklist rebuilt from the audit store has the same ranking (rc %d)" % p.returncode)


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("cxrvqa")
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--keep", help="copy the report, worklist and screenshot here")
    a = ap.parse_args()
    exe = os.path.abspath(a.cxrvqa)
    tmp = tempfile.mkdtemp(prefix="cxrvqa-triage-")
    if a.keep:
        os.makedirs(a.keep, exist_ok=True)
    try:
        part_local(exe, tmp)
        part_jpeg(exe, tmp)
        part_data(exe, tmp, a.data, a.keep)
    finally:
        if failures:
            print("kept for inspection: " + tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    print("%d passed, %d failed" % (passes[0], len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
