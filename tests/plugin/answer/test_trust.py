#!/usr/bin/python3
"""test_trust.py — answers a radiologist can trust, end to end on the shipped model and real
labelled radiographs (../shared/data/cxr, val split, written as DICOM at test time).

  1. every finding the model cannot assess (its validation block: fewer than 10 positives or a
     95% CI lower bound of the AUC under 0.60), asked about on val images LABELLED POSITIVE for
     it, in English and Chinese: the answer is never "no"; it is "not-assessed" and the sentence
     gives the validation AUC and n;
  2. assessable findings (pneumonia, COVID-19, pleural effusion with limited evidence) on
     positives and negatives: the decision follows the finding's band from its probability, and
     a limited-evidence one says so;
  3. a 224-px radiograph (the size the model's COVID-19 figures were measured at) is answered,
     with the small-image warning; a 64-px one is refused as too small for the model;
  4. questions the model cannot answer (device position, measurement, change, counting) are
     refused with their own reason codes, in both languages.

Usage: test_trust.py --cxrvqa build/cxrvqa [--data ../shared/data]
Exit 0 passed, 1 failed, 77 when ../shared/data/cxr is absent (printed).
"""
import argparse
import csv
import datetime
import json
import os
import subprocess
import sys
import tempfile

import numpy as np
from PIL import Image
import pydicom
from pydicom.dataset import FileDataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
MIN_POSITIVES, MIN_AUC_LO = 10, 0.60  # the defaults of plugin/answer/cxrvqa.h

# the question for each finding label of labels.csv, in English and Chinese
QUESTIONS = {
    "cardiomegaly": ("Is the heart enlarged?", "心影是否增大？"),
    "atelectasis": ("Is there atelectasis?", "有肺不张吗？"),
    "pneumothorax": ("Is there a pneumothorax?", "有没有气胸？"),
    "consolidation": ("Is there consolidation?", "肺部有没有实变？"),
    "nodule": ("Is there a lung nodule?", "是否有肺结节？"),
    "mass": ("Is there a mass?", "有没有肿块？"),
    "edema": ("Is there pulmonary edema?", "有没有肺水肿？"),
    "infiltration": ("Any infiltrates?", "肺部有浸润吗？"),
    "emphysema": ("Is there emphysema?", "有肺气肿吗？"),
    "pleural_thickening": ("Any pleural thickening?", "有胸膜增厚吗？"),
    "effusion": ("Is there a pleural effusion?", "是否有胸腔积液？"),
    "pneumonia": ("Does the patient have pneumonia?", "是否存在肺炎？"),
    "covid19": ("Any signs of COVID-19?", "有新冠肺炎的表现吗？"),
}
failures = []
passes = [0]


def check(ok, what):
    print(("ok   " if ok else "FAIL ") + what)
    if ok:
        passes[0] += 1
    else:
        failures.append(what)
    return ok


def to_dicom(jpg, out, view):
    """The 8-bit grey JPEG as a DX chest image (MONOCHROME2, explicit VR little endian)."""
    px = np.asarray(Image.open(jpg).convert("L"), dtype=np.uint8)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1.1"  # Digital X-Ray Image, for presentation
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = FileDataset(out, {}, file_meta=meta, preamble=b"\0" * 128)
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID, ds.SeriesInstanceUID = generate_uid(), generate_uid()
    ds.PatientID, ds.PatientName = "TRUST-" + os.path.basename(jpg)[:12], "Test^Trust"
    ds.StudyDate = datetime.date.today().strftime("%Y%m%d")
    ds.Modality, ds.BodyPartExamined = "DX", "CHEST"
    ds.ViewPosition = view if view in ("PA", "AP") else "PA"
    ds.PresentationIntentType = "FOR PRESENTATION"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel, ds.PhotometricInterpretation = 1, "MONOCHROME2"
    ds.BitsAllocated = ds.BitsStored = 8
    ds.HighBit, ds.PixelRepresentation = 7, 0
    ds.PixelData = px.tobytes()
    ds.save_as(out, write_like_original=False)
    return out


def ask(exe, path, question, *extra):
    p = subprocess.run([exe, "ask", "--json", "--no-audit", "--model", MODEL, *extra, path, question],
                       capture_output=True, text=True, timeout=120)
    try:
        return p.returncode, json.loads(p.stdout)
    except ValueError:
        return p.returncode, None


def band_decision(f):
    p, lo, hi = f["probability"], f["uncertain_low"], f["uncertain_high"]
    return "yes" if p > hi else "no" if p < lo else "uncertain"


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data"))
    ap.add_argument("--per-finding", type=int, default=3, help="labelled positives asked per finding")
    args = ap.parse_args()
    labels = os.path.join(args.data, "cxr", "labels.csv")
    if not os.path.isfile(labels):
        print("SKIPPED: %s is absent (../shared/data not beside the checkout)" % labels)
        return 77
    exe = os.path.abspath(args.cxrvqa)
    rows = [r for r in csv.DictReader(open(labels)) if r["split"] == "val"]
    tmp = tempfile.mkdtemp(prefix="cxrvqa-trust-")

    def dicom_of(r):
        return to_dicom(os.path.join(args.data, "cxr", r["path"]), os.path.join(tmp, r["path"].replace("/", "_") + ".dcm"),
                        r["view"])

    # 1 + 2: per finding, labelled positives (adults first: nih384), then negatives for the assessable
    n_not_assessed = n_assessable = 0
    for label, (q_en, q_zh) in QUESTIONS.items():
        pos = [r for r in rows if r[label] == "1" and r["dataset"] in ("nih384", "covidrad224", "kermany224")]
        pos.sort(key=lambda r: (r["dataset"] != "nih384", r["path"]))
        neg = [r for r in rows if r[label] == "0" and r["dataset"] in ("nih384", "covidrad224", "kermany224")]
        neg.sort(key=lambda r: (r["dataset"] != "nih384", r["path"]))
        for r, truth in [(x, 1) for x in pos[:args.per_finding]] + [(x, 0) for x in neg[:1]]:
            path = dicom_of(r)
            for q in (q_en, q_zh):
                rc, a = ask(exe, path, q)
                where = "%s (%s, label %d) %r" % (r["path"], label, truth, q)
                if not check(rc == 0 and a is not None and not a["refused"], "answered: " + where):
                    continue
                f = a["findings"][0]
                v = f.get("validation_auc") or {}
                assessable = (f["in_model"] and (v.get("positives") or 0) >= MIN_POSITIVES and
                              v.get("ci95_low") is not None and v["ci95_low"] >= MIN_AUC_LO)
                if not assessable:
                    n_not_assessed += 1
                    check(f["decision"] == "not-assessed" and a["answer"] == "not-assessed" and f["decision"] != "no",
                          "not assessable, never 'no': %s -> %s (p %.2f)" % (where, f["decision"], f["probability"]))
                    if v.get("auc") is not None:
                        check("%.2f" % v["auc"] in a["text"] and str(v["positives"]) in a["text"],
                              "  the sentence gives the validation AUC and n: %s" % a["text"][:120])
                else:
                    n_assessable += 1
                    check(f["decision"] == band_decision(f) and a["answer"] == f["decision"],
                          "assessable, decision from the band: %s -> %s (p %.3f, band %.3f-%.3f)"
                          % (where, f["decision"], f["probability"], f["uncertain_low"], f["uncertain_high"]))
                    if f["tier"] == "limited":
                        check("Limited evidence" in a["text"] or "证据有限" in a["text"],
                              "  limited evidence is said: %s" % a["text"][:120])
    check(n_not_assessed > 0 and n_assessable > 0,
          "both tiers exercised (%d not assessed, %d assessable answers)" % (n_not_assessed, n_assessable))

    # 3: sizes — 224 px answered with a warning; 64 px refused as too small for the model
    r224 = next(r for r in rows if r["dataset"] == "covidrad224")
    rc, a = ask(exe, dicom_of(r224), "Any signs of COVID-19?")
    check(rc == 0 and a and not a["refused"] and any("small image" in w for w in a["warnings"]),
          "224-px image answered with the small-image warning (%s)" % str(a and (a["answer"], a["warnings"][:1])))
    rc, a = ask(exe, dicom_of(r224), "有新冠肺炎的表现吗？")
    check(rc == 0 and a and any(w.startswith("图像较小") for w in a["warnings"]),
          "asked in Chinese, the small-image warning is in Chinese (%s)" % str(a and a["warnings"][:1]))
    r64 = next(r for r in rows if r["dataset"] == "nih64")
    rc, a = ask(exe, dicom_of(r64), "Is there a pleural effusion?")
    check(rc == 0 and a and a["refused"] and a["reason_code"] == "too-small" and "160" in a["reason"],
          "64-px image refused as too small for the model (%s)" % (a and a.get("reason")))

    # 4: questions the model cannot answer, with their own reasons
    path = dicom_of(pos[0] if pos else r224)
    for q, code in [("Is the ETT in good position?", "device_position"), ("胃管是否在胃内？", "device_position"),
                    ("What's the cardiothoracic ratio?", "measurement"), ("心胸比是多少？", "measurement"),
                    ("Is the pneumonia getting better?", "prior"), ("肺炎有好转吗？", "prior"),
                    ("How many nodules are there?", "count"), ("有几个结节？", "count")]:
        rc, a = ask(exe, path, q)
        check(rc == 0 and a and a["refused"] and a["reason_code"] == code and a["reason"],
              "refused %r: %s" % (q, a and a.get("reason_code")))
        if a and a.get("language") == "zh":
            check(any(ord(c) > 0x2e80 for c in a["reason"]), "  the reason is in Chinese: %s" % a["reason"][:60])
    print("%d passed, %d failed" % (passes[0], len(failures)))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
