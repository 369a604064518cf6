#!/usr/bin/env python3
"""test_sr.py — checks the SRs written by dicom/sr_writer.cpp with the tools
a PACS administrator would use: dciodvfy (zero errors; warnings listed),
dsrdump, dsr2html, pydicom. Drives tests/dicom/test_sr.c in --emit/--read/--html
mode. Expected values come from the cases below and from the source images,
never from the SR under test. Hostile and unusable sources are made here with
pydicom. Exit 0 pass, 1 fail, 77 skip (validators not installed).

Usage: test_sr.py --test-sr BUILD/test_sr --sample-data sample_data
                  --work DIR [--shared-data ../shared/data]
"""
import argparse
import glob
import os
import re
import shutil
import stat
import subprocess
import sys
import warnings

import pydicom

# the hostile sources below are invalid on purpose; pydicom says so
warnings.filterwarnings("ignore", category=UserWarning, module="pydicom")

COMPREHENSIVE_SR = "1.2.840.10008.5.1.4.1.1.88.33"
UID_NAME = re.compile(r"^[0-9]+(\.[0-9]+)+\.dcm$")

# (name, display, snomed, presence, probability, threshold, calibrated)
EFFUSION = ("pleural_effusion", "Pleural effusion", "60046008", "present", 0.8731, 0.5, 1)
CARDIOMEGALY = ("cardiomegaly", "Cardiomegaly", "8186001", "absent", 0.0123456789012345, 0.42, 1)
PNEUMOTHORAX = ("pneumothorax", "Pneumothorax", "36118008", "indeterminate", 0.5, 0.5, 0)
UNKNOWN = ("support_device_malposition", "Support device malposition", "", "present", 0.61, 0.4, 0)
EFFUSION_ZH = ("pleural_effusion", "胸腔积液", "60046008", "present", 0.9, 0.5, 1)

CASES = {
    "en1": dict(lang="en", q="Is there a pleural effusion?", a="Yes, likely (p = 0.87).", findings=[EFFUSION]),
    "en3": dict(lang="en", q="Any effusion, cardiomegaly or pneumothorax?",
                a="Effusion likely; no cardiomegaly; pneumothorax indeterminate.",
                findings=[EFFUSION, CARDIOMEGALY, PNEUMOTHORAX]),
    "zh3": dict(lang="zh", q="有胸腔积液、气胸或导管位置异常吗？", a="可能有胸腔积液；气胸不确定。",
                findings=[EFFUSION_ZH, PNEUMOTHORAX, UNKNOWN]),
    "unknown_buffer": dict(lang="en", q="Is a support device malpositioned?", a="Possibly.",
                           findings=[UNKNOWN], buffer=True),
}

# the codes the report must carry (cxr_sr.h), independent of the reader
PRESENCE_CODES = {"present": "52101004", "absent": "272519000", "indeterminate": "373068000"}


def walk(items, depth=0):
    """(depth, item) for every content item, depth-first."""
    for it in items:
        yield depth, it
        yield from walk(it.get("ContentSequence", []), depth + 1)


def concept(it):
    c = it.ConceptNameCodeSequence[0]
    return (c.CodeValue, c.CodingSchemeDesignator)


def check_tree(sr, c, label):
    items = list(walk(sr.ContentSequence))
    codes = {concept(it): it for _, it in items if it.ValueType == "CODE"}
    lang = codes.get(("121049", "DCM"))
    check(lang is not None and lang.ConceptCodeSequence[0].CodeValue == ("zh" if c["lang"] == "zh" else "eng"),
          "%s: language of content" % label)
    proc = codes.get(("121058", "DCM"))
    check(proc is not None and (proc.ConceptCodeSequence[0].CodeValue, proc.ConceptCodeSequence[0].CodingSchemeDesignator)
          == ("399208008", "SCT"), "%s: procedure reported" % label)
    observer = [it for _, it in items if it.ValueType == "CODE" and concept(it) == ("121005", "DCM")]
    check(observer and observer[0].ConceptCodeSequence[0].CodeValue == "121007", "%s: no device observer" % label)
    groups = [it for _, it in items if it.ValueType == "CONTAINER" and concept(it) == ("125007", "DCM")]
    check(len(groups) == len(c["findings"]), "%s: %d measurement groups" % (label, len(groups)))
    for g, f in zip(groups, c["findings"]):
        kids = list(g.ContentSequence)
        by = {}
        for k in kids:
            by.setdefault(concept(k), []).append(k)
        fin = by[("121071", "DCM")][0].ConceptCodeSequence[0]
        want = (f[2], "SCT") if f[2] else (f[0], "99CXRVQA")
        got = (fin.get("CodeValue") or fin.get("LongCodeValue"), fin.CodingSchemeDesignator)
        check(got == want, "%s: finding code %s, want %s" % (label, got, want))
        pres = by[("705057003", "SCT")][0].ConceptCodeSequence[0]
        check((pres.CodeValue, pres.CodingSchemeDesignator) == (PRESENCE_CODES[f[3]], "SCT"),
              "%s: %s presence code %s" % (label, f[0], pres.CodeValue))
        prob = by[("122157", "DCM")][0].MeasuredValueSequence[0]
        unit = prob.MeasurementUnitsCodeSequence[0]
        check((unit.CodeValue, unit.CodingSchemeDesignator) == ("1", "UCUM"), "%s: probability unit" % label)
        check(float(prob.FloatingPointValue) == f[4] and abs(float(prob.NumericValue) - f[4]) <= 1e-6 * max(f[4], 1e-300),
              "%s: %s probability %s / %s" % (label, f[0], prob.NumericValue, prob.FloatingPointValue))
        thr = by[("threshold", "99CXRVQA")][0].MeasuredValueSequence[0]
        check(float(thr.FloatingPointValue) == f[5], "%s: %s threshold %s" % (label, f[0], thr.FloatingPointValue))
        track = by[("112039", "DCM")][0]
        check(track.TextValue == f[0] and track.RelationshipType == "HAS OBS CONTEXT", "%s: tracking id" % label)
        check(("112040", "DCM") in by, "%s: tracking UID missing" % label)
        alg = by.get(("111001", "DCM"), [None])[0]
        check(alg is not None and alg.TextValue == "cxrvqa-cxr-cnn", "%s: algorithm name (TID 4019)" % label)
        params = [k.TextValue for k in by.get(("111002", "DCM"), [])]
        check(any(p.startswith("model_sha256=") for p in params), "%s: model SHA-256 parameter" % label)
    texts = {concept(it): it.TextValue for _, it in items if it.ValueType == "TEXT"}
    check(texts.get(("question", "99CXRVQA")) == c["q"] and texts.get(("answer", "99CXRVQA")) == c["a"],
          "%s: question/answer items" % label)
    img = [it for _, it in items if it.ValueType == "IMAGE"]
    check(len(img) == 1, "%s: %d IMAGE items" % (label, len(img)))


failures = []
warnings_seen = {}


def check(cond, msg):
    if not cond:
        failures.append(msg)
        print("FAIL " + msg)


def run(cmd):
    return subprocess.run(cmd, capture_output=True)


def emit(args, out_dir, source, case, extra=()):
    c = CASES[case]
    cmd = [args.test_sr, "--emit"] + list(extra) + (["--buffer"] if c.get("buffer") else []) + \
          [out_dir, source, c["lang"], c["q"], c["a"]]
    cmd += ["|".join(str(x) for x in f) for f in c["findings"]]
    p = run(cmd)
    kv = {}
    for line in p.stdout.decode("utf-8", "replace").splitlines():
        parts = line.split("\t")
        kv[parts[0]] = parts[1:]
    return p.returncode, kv


def read_summary(args, path):
    p = run([args.test_sr, "--read", path])
    s = {"findings": []}
    for line in p.stdout.decode("utf-8").splitlines():
        parts = line.split("\t")
        if parts[0] == "finding":
            s["findings"].append(parts[1:])
        else:
            s[parts[0]] = parts[1] if len(parts) > 1 else ""
    return p.returncode, s


def dciodvfy(path, label):
    p = run(["dciodvfy", path])
    text = (p.stdout + p.stderr).decode("utf-8", "replace")
    errors = [l for l in text.splitlines() if l.startswith("Error")]
    for l in text.splitlines():
        if l.startswith("Warning"):
            warnings_seen.setdefault(l, set()).add(label)
    check(not errors, "%s: dciodvfy errors:\n  %s" % (label, "\n  ".join(errors)))
    return errors


def files_in(d):
    return sorted(os.listdir(d))


def check_sr(args, path, source, case, label):
    try:
        return check_sr_unguarded(args, path, source, case, label)
    except Exception as e:  # a missing attribute or item is a failure, not a crash
        check(False, "%s: %s: %s" % (label, type(e).__name__, e))
        return None


def check_sr_unguarded(args, path, source, case, label):
    c = CASES[case]
    src = pydicom.dcmread(source, force=True)
    name = os.path.basename(path)
    check(UID_NAME.match(name) is not None, "%s: file name %r is not <UID>.dcm" % (label, name))
    check(stat.S_IMODE(os.stat(path).st_mode) == 0o644, "%s: mode %o" % (label, stat.S_IMODE(os.stat(path).st_mode)))
    dciodvfy(path, label)
    p = run(["dsrdump", path])
    check(p.returncode == 0, "%s: dsrdump exit %d: %s" % (label, p.returncode, p.stderr[:300]))
    check(b"Imaging Measurement Report" in p.stdout, "%s: dsrdump shows no TID 1500 root" % label)
    p = run(["dsr2html", path])
    html = p.stdout.decode("utf-8", "replace")
    check(p.returncode == 0, "%s: dsr2html exit %d" % (label, p.returncode))
    for f in c["findings"]:
        check(f[1] in html, "%s: dsr2html output lacks %r" % (label, f[1]))
    hpath = os.path.join(args.work, "html", name + ".html")
    p = run([args.test_sr, "--html", path, hpath])
    check(p.returncode == 0, "%s: cxr_sr_to_html failed: %s" % (label, p.stdout))
    if p.returncode == 0:
        h = open(hpath, encoding="utf-8").read()
        for f in c["findings"]:
            check(f[1] in h, "%s: cxr_sr_to_html output lacks %r" % (label, f[1]))
        check(c["q"] in h, "%s: cxr_sr_to_html output lacks the question" % label)

    # round trip through cxr_sr_read_file
    rc, s = read_summary(args, path)
    check(rc == 0, "%s: cxr_sr_read_file failed: %s" % (label, s))
    if rc == 0:
        check(s["question"] == c["q"], "%s: question %r" % (label, s["question"]))
        check(s["answer"] == c["a"], "%s: answer %r" % (label, s["answer"]))
        check(s["study"] == src.StudyInstanceUID, "%s: study %s" % (label, s["study"]))
        check(s["source_sop"] == src.SOPInstanceUID, "%s: source SOP %s" % (label, s["source_sop"]))
        check(s["source_class"] == src.SOPClassUID, "%s: source class %s" % (label, s["source_class"]))
        check(s["language"] == ("zh" if c["lang"] == "zh" else "eng"), "%s: language %s" % (label, s["language"]))
        check(s["completion"] == "COMPLETE" and s["verification"] == "UNVERIFIED", "%s: flags %s/%s"
              % (label, s["completion"], s["verification"]))
        check(len(s["findings"]) == len(c["findings"]), "%s: %d findings" % (label, len(s["findings"])))
        for want, got in zip(c["findings"], s["findings"]):
            n, disp, sct, pres, prob, thr, cal = want
            gname, gcode, gscheme, gdisp, gpres, gprob, gthr, gcal, guid = got
            check(gname == n, "%s: name %s" % (label, gname))
            check((gcode, gscheme) == ((sct, "SCT") if sct else (n, "99CXRVQA")), "%s: code %s %s" % (label, gcode, gscheme))
            check(gdisp == disp, "%s: display %r" % (label, gdisp))
            check(gpres == pres, "%s: %s presence %s" % (label, n, gpres))
            check(float(gprob) == prob, "%s: %s probability %s, wrote %r" % (label, n, gprob, prob))
            check(float(gthr) == thr, "%s: %s threshold %s, wrote %r" % (label, n, gthr, thr))
            check(int(gcal) == cal, "%s: %s calibrated %s" % (label, n, gcal))

    # the header, read by an independent parser
    sr = pydicom.dcmread(path)
    check(sr.Modality == "SR" and sr.SOPClassUID == COMPREHENSIVE_SR, "%s: %s %s" % (label, sr.Modality, sr.SOPClassUID))
    check(name == sr.SOPInstanceUID + ".dcm", "%s: file name %s, SOP %s" % (label, name, sr.SOPInstanceUID))
    check(sr.file_meta.MediaStorageSOPInstanceUID == sr.SOPInstanceUID, "%s: meta SOP UID differs" % label)
    for kw in ("PatientName", "PatientID", "PatientBirthDate", "PatientSex", "StudyInstanceUID", "StudyDate",
               "StudyTime", "AccessionNumber", "StudyID", "ReferringPhysicianName"):
        want = str(src.get(kw, "") or "")
        got = str(sr.get(kw, "") or "")
        check(got == want, "%s: %s %r, source %r" % (label, kw, got, want))
    check(sr.SeriesInstanceUID != src.SeriesInstanceUID, "%s: SR in the image series" % label)
    check(sr.CompletionFlag == "COMPLETE" and sr.VerificationFlag == "UNVERIFIED", "%s: flags" % label)
    ev = sr.CurrentRequestedProcedureEvidenceSequence[0]
    ser = ev.ReferencedSeriesSequence[0]
    ref = ser.ReferencedSOPSequence[0]
    check((ev.StudyInstanceUID, ser.SeriesInstanceUID, ref.ReferencedSOPClassUID, ref.ReferencedSOPInstanceUID) ==
          (src.StudyInstanceUID, src.SeriesInstanceUID, src.SOPClassUID, src.SOPInstanceUID),
          "%s: evidence does not reference the source" % label)
    non_ascii = any(ord(ch) > 127 for ch in c["q"] + c["a"] + "".join(f[1] for f in c["findings"]) +
                    str(src.get("PatientName", "")))
    cs = sr.get("SpecificCharacterSet", "")
    check(cs == ("ISO_IR 192" if non_ascii else ""), "%s: Specific Character Set %r" % (label, cs))
    purpose = sr.ContributingEquipmentSequence[0].PurposeOfReferenceCodeSequence[0]
    check((purpose.CodeValue, purpose.CodingSchemeDesignator) == ("Newcode1", "99IHE"), "%s: contributing equipment" % label)
    check(sr.ContentTemplateSequence[0].TemplateIdentifier == "1500", "%s: template" % label)
    check(sr.ConceptNameCodeSequence[0].CodeValue == "126000", "%s: title" % label)
    check_tree(sr, c, label)
    return sr


def expect_refusal(args, out_dir, source, label, want_rc=-42, case="en1", needle=None):
    before = files_in(out_dir)
    rc, kv = emit(args, out_dir, source, case)
    got = int(kv["rc"][0]) if "rc" in kv else None
    check(rc != 0 and got == want_rc, "%s: rc %s (%s), expected %d" % (label, got, kv.get("rc"), want_rc))
    if needle and "rc" in kv and len(kv["rc"]) > 1:
        check(needle in kv["rc"][1], "%s: message %r lacks %r" % (label, kv["rc"][1], needle))
    check(files_in(out_dir) == before, "%s: files left: %s" % (label, set(files_in(out_dir)) - set(before)))


def tree_snapshot(root):
    out = set()
    for d, _, fs in os.walk(root):
        for f in fs:
            out.add(os.path.join(d, f))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--test-sr", required=True)
    ap.add_argument("--sample-data", required=True)
    ap.add_argument("--shared-data")
    ap.add_argument("--work", required=True)
    args = ap.parse_args()
    for tool in ("dciodvfy", "dsrdump", "dsr2html"):
        if not shutil.which(tool):
            print("skip: %s not installed (apt-get install dicom3tools dcmtk)" % tool)
            return 77
    shutil.rmtree(args.work, ignore_errors=True)
    os.makedirs(os.path.join(args.work, "html"))
    out = os.path.join(args.work, "sr")
    os.makedirs(out)
    samples = sorted(glob.glob(os.path.join(args.sample_data, "*.dcm")))
    check(len(samples) == 2, "expected 2 sample studies, found %d" % len(samples))

    # --- every case on every sample
    n_sr = 0
    for src in samples:
        for case in CASES:
            label = "%s/%s" % (os.path.basename(src), case)
            before = set(files_in(out))
            rc, kv = emit(args, out, src, case)
            check(rc == 0, "%s: write failed: %s" % (label, kv.get("rc")))
            if rc:
                continue
            new = set(files_in(out)) - before
            check(new == {kv["sop"][0] + ".dcm"}, "%s: new files %s" % (label, new))
            check(os.path.dirname(kv["path"][0]) == out, "%s: written outside out_dir: %s" % (label, kv["path"][0]))
            check_sr(args, kv["path"][0], src, case, label)
            n_sr += 1

    # --- series reuse
    rc, first = emit(args, out, samples[0], "en1")
    rc2, second = emit(args, out, samples[0], "en3", extra=("--series", first["series"][0]))
    check(rc == 0 and rc2 == 0 and first["series"] == second["series"] and first["sop"] != second["sop"],
          "series reuse: %s / %s" % (first.get("series"), second.get("series")))

    # --- hostile and unusable sources
    hostile = os.path.join(args.work, "hostile")
    os.makedirs(hostile)
    ho = os.path.join(args.work, "hostile_out")
    os.makedirs(ho)

    ds = pydicom.dcmread(samples[0])
    long_name = ("../" * 90 + "/etc/passwd/" * 4)[:300]
    ds.PatientName = long_name
    ds.PatientID = "ID/../../evil"
    ds.StudyID = "a/b"
    p_name = os.path.join(hostile, "hostile_name.dcm")
    ds.save_as(p_name)
    snap = tree_snapshot(args.work)
    rc, kv = emit(args, ho, p_name, "en1")
    check(rc == 0, "hostile name: write failed: %s" % kv.get("rc"))
    if rc == 0:
        new = tree_snapshot(args.work) - snap
        check(new == {os.path.join(ho, kv["sop"][0] + ".dcm")}, "hostile name: files created %s" % new)
        check(UID_NAME.match(os.path.basename(kv["path"][0])) is not None, "hostile name: file %s" % kv["path"][0])
        sr = pydicom.dcmread(kv["path"][0])
        check(str(sr.PatientName) == long_name, "hostile name: patient name not copied verbatim")
        check(run(["dsrdump", kv["path"][0]]).returncode == 0, "hostile name: dsrdump failed")
        os.unlink(kv["path"][0])

    # control characters (NUL, newline) in a copied value: refused, nothing written
    ds = pydicom.dcmread(samples[0])
    ds.PatientID = "ID\x00\nevil"
    pth = os.path.join(hostile, "ctl.dcm")
    ds.save_as(pth)
    snap = tree_snapshot(args.work)
    expect_refusal(args, ho, pth, "control characters in Patient ID", needle="control characters")
    check(tree_snapshot(args.work) == snap, "control characters: files created")

    for label, uid in (("hostile SOP UID", "../../../tmp/evil"), ("SOP UID with NUL", "1.2.3\x00/../x"),
                       ("SOP UID with a path", "1.2.826/etc/passwd"), ("SOP UID with letters", "1.2.abc"),
                       ("300-digit SOP UID", "1." + "2" * 298)):
        ds = pydicom.dcmread(samples[0])
        ds.SOPInstanceUID = uid
        pth = os.path.join(hostile, "uid.dcm")
        ds.save_as(pth)
        snap = tree_snapshot(args.work)
        expect_refusal(args, ho, pth, label, needle="SOP Instance UID")
        check(tree_snapshot(args.work) == snap, "%s: files created" % label)

    ds = pydicom.dcmread(samples[0])
    del ds.SpecificCharacterSet  # default repertoire declared, Latin-1 bytes stored
    ds.add_new(0x00100010, "PN", "M\xdcLLER^J\xd6RG".encode("latin-1"))
    pth = os.path.join(hostile, "undeclared_latin1.dcm")
    ds.save_as(pth)
    expect_refusal(args, ho, pth, "undeclared Latin-1 name", needle="not valid text")

    ds = pydicom.dcmread(samples[0])
    del ds.StudyInstanceUID
    pth = os.path.join(hostile, "no_study.dcm")
    ds.save_as(pth)
    expect_refusal(args, ho, pth, "no Study Instance UID", needle="Study Instance UID")
    expect_refusal(args, ho, os.path.join(args.sample_data, "png_gray8.png"), "PNG source")
    CASES["png_buffer"] = dict(CASES["en1"], buffer=True)
    expect_refusal(args, ho, os.path.join(args.sample_data, "png_gray8.png"), "PNG source (buffer)", case="png_buffer")
    txt = os.path.join(hostile, "not_dicom.dcm")
    with open(txt, "w") as f:
        f.write("this is not a DICOM file\n" * 40)
    expect_refusal(args, ho, txt, "text source")
    expect_refusal(args, ho, os.path.join(hostile, "missing.dcm"), "missing source", want_rc=-1)
    check(files_in(ho) == [], "hostile_out not empty: %s" % files_in(ho))

    # --- a Latin-1 source: names converted, the SR declares UTF-8
    ds = pydicom.dcmread(samples[1])
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.PatientName = "MÜLLER^JÖRG"
    pth = os.path.join(hostile, "latin1.dcm")
    ds.save_as(pth)
    check(open(pth, "rb").read().find("MÜLLER".encode("latin-1")) > 0, "latin1 source not Latin-1 encoded")
    rc, kv = emit(args, out, pth, "en1")
    check(rc == 0, "latin1: write failed: %s" % kv.get("rc"))
    if rc == 0:
        sr = check_sr(args, kv["path"][0], pth, "en1", "latin1")
        check(sr is not None and str(sr.PatientName) == "MÜLLER^JÖRG",
              "latin1: patient name %r" % (sr and str(sr.PatientName)))

    # --- a few real files (read-only, optional)
    real = sorted(glob.glob(os.path.join(args.shared_data or "", "dicom", "chest", "*.dcm")))
    if not real:
        print("note: %s/dicom/chest absent: real-file SRs skipped" % args.shared_data)
    real_out = os.path.join(args.work, "real")
    os.makedirs(real_out)
    for src in real:
        label = "real/" + os.path.basename(src)
        rc, kv = emit(args, real_out, src, "en3")
        check(rc == 0, "%s: write failed: %s" % (label, kv.get("rc")))
        if rc == 0:
            check_sr(args, kv["path"][0], src, "en3", label)
            n_sr += 1

    print("%d SRs validated (dciodvfy, dsrdump, dsr2html, cxr_sr_read_file, pydicom)" % n_sr)
    if warnings_seen:
        print("dciodvfy warnings (allowed):")
        for w, where in sorted(warnings_seen.items()):
            print("  %s  [%d SRs]" % (w, len(where)))
    print("%d failures" % len(failures))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
