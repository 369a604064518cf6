#!/usr/bin/python3
"""Golden end-to-end test of `cxrvqa ask` on the generated sample studies.

Expected values come from outside the code under test: identifiers from
sample_data/manifest.json (written by the generator), the model's SHA-256
computed here with hashlib, SNOMED CT codes from the reference tables
(../shared/REFERENCE.md), probabilities cross-checked against `cxrvqa
score` (a separate command path through the same model), decisions
re-derived from each finding's probability and published band, refusals
from what the question or the image is. Usage: test_ask.py CXRVQA_BINARY
"""
import hashlib
import json
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile

import pydicom
from PIL import Image

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))))
SAMPLES = os.path.join(ROOT, "sample_data")
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
SNOMED = {"pleural_effusion": "60046008", "pneumothorax": "36118008", "consolidation": "95436008",
          "atelectasis": "46621007", "pneumonia": "233604007", "cardiomegaly": "8186001",
          "pulmonary_edema": "19242006"}

failures = []


def check(cond, what):
    if not cond:
        failures.append(what)
        print("FAIL:", what)


def run(args, expect_json=True):
    p = subprocess.run([EXE] + args, capture_output=True, text=True, timeout=120)
    out = None
    if expect_json and p.stdout.strip():
        try:
            out = json.loads(p.stdout)
        except ValueError:
            out = None
    return p.returncode, out, p.stderr


def ask(path, question, *extra):
    return run(["ask", "--json", "--model", MODEL, "--db", DB] + list(extra) + [path, question])


# The default assessability limits (plugin/answer/cxrvqa.h): a finding is answered only with at least
# 10 validation positives and a 95% CI lower bound of its validation AUC of at least 0.60; below 0.85
# it is answered with "limited evidence". Open-vocabulary findings are not assessed.
MIN_POSITIVES, MIN_AUC_LO, FULL_AUC_LO = 10, 0.60, 0.85


def assessable(f):
    v = f.get("validation_auc")
    return (f["in_model"] and v is not None and v["positives"] >= MIN_POSITIVES and v["ci95_low"] is not None
            and v["ci95_low"] >= MIN_AUC_LO)


def consistent(f):
    """A finding's tier follows from its validation, its decision from its probability and band."""
    if not assessable(f):
        return f["decision"] == "not-assessed" and f["tier"] == "not-assessed"
    p, lo, hi = f["probability"], f["uncertain_low"], f["uncertain_high"]
    want = "yes" if p > hi else "no" if p < lo else "uncertain"
    tier = "assessable" if f["validation_auc"]["ci95_low"] >= FULL_AUC_LO else "limited"
    return f["decision"] == want and lo <= f["threshold"] <= hi and f["tier"] == tier


def main():
    global EXE, DB
    EXE = os.path.abspath(sys.argv[1])
    manifest = json.load(open(os.path.join(SAMPLES, "manifest.json")))
    dicoms = [f for f in manifest["files"] if f["format"] == "dicom"]
    model_sha = hashlib.sha256(open(MODEL, "rb").read()).hexdigest()
    tmp = tempfile.mkdtemp(prefix="cxrvqa-ask-")
    DB = os.path.join(tmp, "audit.sqlite")
    srdir = os.path.join(tmp, "sr")
    os.mkdir(srdir)
    n_asks = 0
    try:
        # the model's own scores, by another command
        score = {}
        p = subprocess.run([EXE, "score", "--model", MODEL] + [os.path.join(SAMPLES, f["path"]) for f in dicoms],
                           capture_output=True, text=True, timeout=120)
        check(p.returncode == 0, "score runs")
        for line in p.stdout.splitlines():
            o = json.loads(line)
            score[o["sop_instance_uid"]] = {x["finding"]: x["p"] for x in o["findings"]}

        for f in dicoms:
            path = os.path.join(SAMPLES, f["path"])
            uid = f["sop_instance_uid"]
            # 1. presence, English, with an SR
            rc, a, err = ask(path, "Is there a pleural effusion?", "--sr-out", srdir, "--sr-html")
            n_asks += 1
            check(rc == 0 and a is not None, f"{f['path']}: ask exits 0 with JSON ({err.strip()})")
            if not a:
                continue
            for k in ("question", "language", "intent", "answer", "text", "findings", "refused", "reason",
                      "warnings", "model", "sop_instance_uid", "latency_ms"):
                check(k in a, f"{f['path']}: field {k}")
            check(a["language"] == "en" and a["intent"] == "presence", f"{f['path']}: en presence")
            check(a["sop_instance_uid"] == uid, f"{f['path']}: SOP Instance UID from the file")
            check(a["study_instance_uid"] == f["study_instance_uid"], f"{f['path']}: study UID")
            check(a["model"]["sha256"] == model_sha, f"{f['path']}: model SHA-256")
            check(a["refused"] is False and a["answer"] in ("yes", "no", "uncertain"), f"{f['path']}: answered")
            fe = a["findings"][0]
            check(len(a["findings"]) == 1 and fe["finding"] == "pleural_effusion", f"{f['path']}: one finding")
            check(fe["code"] == SNOMED["pleural_effusion"], f"{f['path']}: SNOMED code")
            check(fe["calibrated"] is True and consistent(fe), f"{f['path']}: calibrated, decision from band")
            check(a["answer"] == fe["decision"], f"{f['path']}: answer = the finding's decision")
            check(abs(fe["probability"] - score[uid]["pleural_effusion"]) < 1e-5,
                  f"{f['path']}: probability equals cxrvqa score's")
            lead = {"yes": "Yes —", "no": "No —", "uncertain": "Uncertain —", "not-assessed": "Not assessed —"}[a["answer"]]
            check(a["text"].startswith(lead) and "%.2f" % fe["probability"] in a["text"],
                  f"{f['path']}: sentence '{a['text']}'")
            check(a["latency_ms"] > 0 and a["timings_ms"]["image_tower"] > 0, f"{f['path']}: timings")
            sr = a.get("sr")
            check(sr and os.path.isfile(sr["path"]), f"{f['path']}: SR written")
            if sr and os.path.isfile(sr["path"]):
                ds = pydicom.dcmread(sr["path"])
                check(ds.StudyInstanceUID == f["study_instance_uid"], f"{f['path']}: SR joins the study")
                check(ds.Modality == "SR" and ds.VerificationFlag == "UNVERIFIED", f"{f['path']}: SR unverified")
                check(os.path.basename(sr["path"]) == sr["sop_instance_uid"] + ".dcm", f"{f['path']}: SR name")
                html = sr["path"][:-4] + ".html"
                check(os.path.isfile(html) and "effusion" in open(html, encoding="utf-8", errors="replace").read().lower(),
                      f"{f['path']}: HTML rendering of the SR")
                d = subprocess.run(["dsrdump", sr["path"]], capture_output=True, text=True)
                check(d.returncode == 0 and "60046008" in d.stdout, f"{f['path']}: dsrdump reads the SR")

            # 2. the same question in Chinese: same finding, same number
            rc, z, _ = ask(path, "这张图像中是否存在胸腔积液？")
            n_asks += 1
            check(rc == 0 and z and z["language"] == "zh", f"{f['path']}: zh answered")
            if z:
                check(z["findings"][0]["finding"] == "pleural_effusion" and
                      abs(z["findings"][0]["probability"] - fe["probability"]) < 1e-6, f"{f['path']}: zh = en")
                lead = {"yes": "是", "no": "否", "uncertain": "不确定", "not-assessed": "无法评估"}[z["answer"]]
                check(z["text"].startswith(lead), f"{f['path']}: zh sentence '{z['text']}'")

            # 3. several findings; overview; laterality; open vocabulary
            rc, m, _ = ask(path, "Is there effusion or consolidation?")
            n_asks += 1
            check(m and m["intent"] == "multi" and
                  sorted(x["finding"] for x in m["findings"]) == ["consolidation", "pleural_effusion"],
                  f"{f['path']}: multi")
            if m:
                ds = [x["decision"] for x in m["findings"] if x["decision"] != "not-assessed"]
                want = ("not-assessed" if not ds else "yes" if "yes" in ds else "uncertain" if "uncertain" in ds
                        else "no")
                check(m["answer"] == want and all(consistent(x) for x in m["findings"]), f"{f['path']}: multi answer")
            rc, o, _ = ask(path, "What abnormalities are present?")
            n_asks += 1
            check(o and o["intent"] == "overview" and len(o["findings"]) == len(score[uid]),
                  f"{f['path']}: overview covers the model's vocabulary")
            if o:
                for x in o["findings"]:
                    check(abs(x["probability"] - score[uid][x["finding"]]) < 1e-5, f"overview {x['finding']}")
            rc, l, _ = ask(path, "Which side is the effusion on?")
            n_asks += 1
            check(l and l["intent"] == "laterality" and l["findings"][0]["finding"] == "pleural_effusion",
                  f"{f['path']}: laterality intent")
            if l and l["findings"][0]["decision"] != "no" and l["findings"][0]["side"]:
                ls = l["findings"][0]["left_share"]
                side = l["findings"][0]["side"]
                check((side == "left") == (ls > 0.65) and (side == "right") == (ls < 0.35), "side from share")
            rc, ov, _ = ask(path, "Is there a rib notching?")
            n_asks += 1
            check(ov and ov["intent"] == "presence" and ov["findings"][0]["calibrated"] is False and
                  ov["findings"][0]["in_model"] is False and ov["findings"][0]["decision"] == "not-assessed" and
                  ov["answer"] == "not-assessed" and "open-vocabulary" in ov["text"],
                  f"{f['path']}: open vocabulary, not assessed")
            # findings the shipped model cannot assess (few validation positives or a low AUC CI) are
            # never answered no, in English or Chinese, and the sentence says why with the evidence
            for q in ["Is the heart enlarged?", "心影是否增大？", "Is there consolidation?", "Any atelectasis?",
                      "Is there a lung nodule?", "Is there a mass?", "Any pneumothorax?"]:
                rc, na, _ = ask(path, q)
                n_asks += 1
                fi = na and na["findings"][0]
                check(rc == 0 and fi and fi["decision"] == "not-assessed" and na["answer"] == "not-assessed" and
                      fi["tier"] == "not-assessed" and not assessable(fi) and fi["probability"] is not None,
                      f"{f['path']}: not assessed: {q}")
                if fi and fi["validation_auc"]:
                    check("%.2f" % fi["validation_auc"]["auc"] in na["text"] and
                          str(fi["validation_auc"]["positives"]) in na["text"],
                          f"{f['path']}: the sentence gives the AUC and n: {na['text']}")

        path0 = os.path.join(SAMPLES, dicoms[0]["path"])
        # 4. refusals: questions
        for q, why in [("What dose of furosemide should I give?", "treatment"),
                       ("Is the ETT in good position?", "device_position"),
                       ("Is the NG tube in the stomach?", "device_position"),
                       ("What's the cardiothoracic ratio?", "measurement"),
                       ("Is the pneumonia getting better?", "prior"),
                       ("How many nodules are there?", "count"),
                       ("气管插管位置合适吗？", "device_position"),
                       ("Will this patient survive the year?", "prognosis"),
                       ("Is the knee fractured?", "other_anatomy"),
                       ("Has the effusion improved since the prior study?", "prior"),
                       ("Write me a poem about lungs", "not_a_question")]:
            before = len(os.listdir(srdir))
            rc, r, _ = ask(path0, q, "--sr-out", srdir)
            n_asks += 1
            check(rc == 0 and r and r["answer"] == "refused" and r["refused"] is True and r["reason"],
                  f"refused: {q}")
            check(r and r.get("reason_code") == why, f"refusal reason {why}: {r and r.get('reason_code')}")
            check(len(os.listdir(srdir)) == before, f"no SR for a refusal: {q}")
        # 5. refusals: images (lateral view, not a chest)
        for tag, value, code in [("ViewPosition", "LL", "lateral-view"), ("BodyPartExamined", "KNEE", "not-chest")]:
            ds = pydicom.dcmread(path0)
            setattr(ds, tag, value)
            alt = os.path.join(tmp, f"alt_{tag}.dcm")
            ds.save_as(alt)
            rc, r, _ = ask(alt, "Is there a pleural effusion?", "--sr-out", srdir)
            n_asks += 1
            check(rc == 0 and r and r["refused"] and r["reason_code"] == code, f"image refused: {code}")
            check(r and r["sop_instance_uid"] == dicoms[0]["sop_instance_uid"], f"refusal names its image ({code})")
        # 6. errors: not an image at all
        junk = os.path.join(tmp, "junk.dcm")
        open(junk, "wb").write(b"this is not a DICOM file" * 10)
        rc, r, err = ask(junk, "Is there a pleural effusion?")
        n_asks += 1
        check(rc == 1 and r and r["answer"] == "error" and r.get("code") == "not-dicom", f"junk: error ({rc})")
        # 7. PNG source: answered, no SR
        png = os.path.join(SAMPLES, "png_gray8.png")
        rc, r, _ = ask(png, "Any pneumothorax?", "--sr-out", srdir)
        n_asks += 1
        check(rc == 0 and r and r["findings"][0]["finding"] == "pneumothorax" and r["sr"] is None,
              "PNG answered without an SR")
        # 8. heatmap
        hm = os.path.join(tmp, "heat.png")
        rc, r, _ = ask(path0, "Is there a pleural effusion?", "--heatmap", hm)
        n_asks += 1
        drawn = r and r["findings"][0]["decision"] in ("yes", "uncertain")
        check(rc == 0 and os.path.isfile(hm) == bool(drawn), f"heatmap written only for yes / uncertain ({drawn})")
        # no evidence map for a finding the model cannot assess: a warning says why
        hm2 = os.path.join(tmp, "heat2.png")
        rc, r2, _ = ask(path0, "Is the heart enlarged?", "--heatmap", hm2)
        n_asks += 1
        check(rc == 0 and not os.path.exists(hm2) and r2 and any("not drawn" in w for w in r2["warnings"]),
              "no heatmap for a finding not assessed")
        # an open-vocabulary, multi-word finding gets a valid SR (recorded Undetermined, with the reason)
        before = set(os.listdir(srdir))
        rc, fa, _ = ask(path0, "Is there free air under the diaphragm?", "--sr-out", srdir)
        n_asks += 1
        new = [x for x in set(os.listdir(srdir)) - before if x.endswith(".dcm")]
        check(rc == 0 and fa and fa["answer"] == "not-assessed" and fa["sr"] and len(new) == 1,
              f"free air: answered not assessed with an SR ({rc}, {new})")
        if len(new) == 1:
            d = subprocess.run(["dciodvfy", os.path.join(srdir, new[0])], capture_output=True, text=True)
            errors = [l for l in (d.stdout + d.stderr).splitlines() if l.startswith("Error")]
            check(not errors, f"free-air SR: dciodvfy errors {errors[:3]}")
            d = subprocess.run(["dsrdump", os.path.join(srdir, new[0])], capture_output=True, text=True)
            check("373068000" in d.stdout and "not assessed" in d.stdout, "free-air SR: Undetermined, with the reason")
        if os.path.isfile(hm):
            im = Image.open(hm)
            rows, cols = dicoms[0]["rows"], dicoms[0]["columns"]
            check(im.mode == "RGB" and max(im.size) == min(512, max(rows, cols)), f"heatmap size {im.size}")
            check(abs(im.size[0] / im.size[1] - cols / rows) < 0.02, "heatmap keeps the aspect ratio")
        # 9. text output and usage errors
        p = subprocess.run([EXE, "ask", "--model", MODEL, "--db", DB, path0, "Is the heart enlarged?"],
                           capture_output=True, text=True)
        n_asks += 1
        check(p.returncode == 0 and "cardiomegaly" in p.stdout and "not a diagnostic device" in p.stdout,
              "text output")
        p = subprocess.run([EXE, "ask", path0], capture_output=True, text=True)
        check(p.returncode == 2, "usage error exits 2")
        p = subprocess.run([EXE, "ask", "--model", "/nonexistent.gguf", "--db", DB, path0, "Any effusion?"],
                           capture_output=True, text=True)
        check(p.returncode != 0 and "nonexistent" in p.stderr, "bad model is an error")

        # 10. fail closed: the audit row cannot be written (another process holds the database's
        # write lock past the busy timeout) -> exit 3, no answer on stdout, no SR left behind
        locker = sqlite3.connect(DB, timeout=1, isolation_level=None)
        locker.execute("BEGIN EXCLUSIVE")
        before = sorted(os.listdir(srdir))
        p = subprocess.run([EXE, "ask", "--json", "--model", MODEL, "--db", DB, "--sr-out", srdir, path0,
                            "Is there a pleural effusion?"], capture_output=True, text=True, timeout=120)
        locker.execute("ROLLBACK")
        locker.close()
        check(p.returncode == 3 and not p.stdout.strip() and "audit" in p.stderr,
              f"audit locked: fail closed (exit {p.returncode}, stdout {p.stdout[:80]!r}, {p.stderr.strip()[:120]})")
        check(sorted(os.listdir(srdir)) == before and not os.listdir(os.path.join(srdir, ".pending")),
              "audit locked: no SR left behind")

        # 11. the audit: one row per ask, chain intact, what was refused and why
        con = sqlite3.connect(DB)
        check(con.execute("PRAGMA integrity_check").fetchone()[0] == "ok", "integrity_check")
        con.close()
        p = subprocess.run([EXE, "audit", "verify", "--db", DB], capture_output=True, text=True)
        check(p.returncode == 0, f"audit verify: {p.stdout} {p.stderr}")
        p = subprocess.run([EXE, "audit", "export", "--db", DB, "--format", "jsonl"], capture_output=True, text=True)
        rows = [json.loads(x) for x in p.stdout.splitlines() if x.strip()]
        check(len(rows) == n_asks, f"one audit row per ask: {len(rows)} rows for {n_asks} asks")
        refused = [r for r in rows if r.get("answer") == "refused"]
        # 11 refused questions (section 4) and 2 refused images (section 5)
        check(len(refused) == 13 and all(r.get("reason") for r in refused), "refusals audited with a reason")
        errs = [r for r in rows if r.get("answer") == "error"]
        check(len(errs) == 1 and errs[0].get("outcome") == 8, "the error audited as a serious failure")
        with_sr = [r for r in rows if r.get("sr_uid")]
        check(len(with_sr) == len(dicoms) + 1, "the SRs are named in the audit")  # + the free-air one
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    if failures:
        print(f"{len(failures)} failure(s)")
        return 1
    print(f"ask golden: all checks passed ({n_asks} asks)")
    return 0


if __name__ == "__main__":
    sys.exit(main())
