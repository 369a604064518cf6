#!/usr/bin/python3
"""test_shared_dicom.py — `cxrvqa inspect` on the real DICOM files of
../shared/data/dicom (read in place, never copied). Skips (exit 77) when that
folder is absent.

Checks and tolerances:
  cr_other_transfer_syntaxes (RG2 hip MONOCHROME2, RG3 tibia MONOCHROME1):
    - the lossless syntaxes (J2KR, JLSL, JPLL, RLE, UNC) give identical planes;
    - the lossy ones (J2KI, JLSN, JPLY) are within PSNR >= 40 dB of UNC and
      no pixel is off by more than 128 grey levels (a decoder overshoot
      beyond Bits Stored that is masked instead of clamped wraps around and
      shows as a ~245-level error);
    - UNC matches the independent reference (tests/ref/dicomref.py: own
      stored-value extraction, pydicom apply_modality_lut / apply_voi_lut)
      within +-1 grey level;
    - they carry the not-chest warning, and with --strict exit 1 with
      error "not-chest".
  chest:
    - RG1 J2KI and JLSN (MONOCHROME1, 15-bit) within PSNR >= 40 dB of each
      other; both inverted; JLSN within +-1 of the reference computed on
      GDCM's decode (gdcmconv --raw), J2KI within +-1 of the reference on
      pydicom's (Pillow/OpenJPEG) decode;
    - fodicom 10-bit MONOCHROME1 without meta header: inverted, +-1 of the
      reference; NIH 8-bit DX: identity, plane equal to the stored values;
    - SIIM JPEG baseline: plane equal to pydicom's (Pillow) decode, +-1;
    - txv_Fake_MONOHR1 (header MONOCHROME1, pixels MONOCHROME2): detected
      (polarity_trusted "pixels", a warning), plane identical to the SIIM
      original's plane; with --trust-header inverted, warned, and equal to
      255 - the SIIM plane (+-1).
  lut_examples: within +-1 grey level of the reference (pydicom's
    apply_modality_lut + apply_voi_lut on our stored values; the documented
    nearest-rank fallback window where the file has no VOI; compressed files
    decoded by gdcmconv --raw), and the same Modality/VOI kind.
  sr_examples: refused, exit 1, error "not-an-image".
  everywhere: the reported polarity_score equals the score of the returned
    plane computed by dicomref.polarity_score (|diff| <= 1e-9), which is the
    port tests/ref/polarity_stats.py uses.

Usage: test_shared_dicom.py --cxrvqa BIN --data DIR   (DIR = ../shared/data)
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.abspath(__file__))), "ref"))
import dicomref  # noqa: E402

import pydicom  # noqa: E402

LOSSLESS = ("J2KR", "JLSL", "JPLL", "RLE", "UNC")
LOSSY = ("J2KI", "JLSN", "JPLY")
LOSSY_PSNR = 40.0
WRAP_LEVELS = 128
SIIM = "txv_SIIM_1.2.276.0.7230010.3.1.4.8323329.6904.1517875201.850819.dcm"


class Runner:
    def __init__(self, binary, tmp, ck):
        self.binary, self.tmp, self.ck = binary, tmp, ck
        self.n = 0

    def plane(self, path, *args, expect_ok=True):
        """(json, plane) of `inspect --json path --png ...`; checks the
        polarity score against the plane."""
        self.n += 1
        png = os.path.join(self.tmp, "out%d.png" % self.n)
        rc, js, err = dicomref.inspect(self.binary, path, "--png", png, *args)
        name = os.path.basename(path) + ("" if not args else " " + " ".join(args))
        if not self.ck.check(rc == 0 and js is not None, "%s: exit %d: %s" % (name, rc, err.strip())):
            return None, None
        px = dicomref.read_png(png)
        if js["photometric"].startswith("MONOCHROME"):
            self.ck.near(js["ingestion"]["polarity_score"], dicomref.polarity_score(px), 1e-9,
                         name + ": polarity_score vs dicomref.polarity_score(plane)")
        return js, px


def reference(path, tmp, decoder="native"):
    """(plane, info) of the independent reference. decoder: "native"
    (uncompressed, read by pydicom), "gdcm" (gdcmconv --raw first) or
    "pydicom" (pydicom's own decoders: Pillow for JPEG / JPEG 2000)."""
    if decoder == "gdcm":
        raw = os.path.join(tmp, "gdcm_raw.dcm")
        p = subprocess.run(["gdcmconv", "--raw", path, raw], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
        if p.returncode != 0:
            raise RuntimeError("gdcmconv --raw %s: %s" % (path, p.stdout.decode(errors="replace")[:300]))
        ds = pydicom.dcmread(raw)
        return dicomref.render_gray(ds, dicomref.native_stored(ds))
    ds = pydicom.dcmread(path, force=True)
    if decoder == "pydicom":
        st = dicomref.stored_values(ds.pixel_array, int(ds.BitsStored), int(ds.HighBit),
                                    int(ds.get("PixelRepresentation", 0)))
        return dicomref.render_gray(ds, st)
    return dicomref.render_gray(ds, dicomref.native_stored(ds))


def compare(ck, what, got, ref, tol=1):
    if not ck.check(got is not None and got.shape == ref.shape,
                    "%s: shape %r vs %r" % (what, None if got is None else got.shape, ref.shape)):
        return
    d = dicomref.max_abs_diff(got, ref)
    print("%-48s max |diff| %3d, %8d pixels differ" % (what, d, int(np.count_nonzero(got != ref))))
    ck.check(d <= tol, "%s: max |diff| %d above %d" % (what, d, tol))


def other_syntaxes(run, ck, data, tmp):
    folder = os.path.join(data, "dicom", "cr_other_transfer_syntaxes")
    for rg, inverted in (("RG2", False), ("RG3", True)):
        planes = {}
        for v in LOSSLESS + LOSSY:
            path = os.path.join(folder, "WG04_%s_%s.dcm" % (rg, v))
            js, px = run.plane(path)
            if js is None:
                continue
            planes[v] = px
            ck.eq(js["ingestion"]["inverted"], inverted, "%s %s: inverted" % (rg, v))
            ck.eq(js["ingestion"]["voi"], "window", "%s %s: voi" % (rg, v))
            ck.check(any("not a chest radiograph" in w for w in js["warnings"]),
                     "%s %s: no not-chest warning in %r" % (rg, v, js["warnings"]))
        unc = planes.get("UNC")
        if not ck.check(unc is not None, rg + ": UNC not decoded"):
            continue
        for v in LOSSLESS[:-1]:
            if v in planes:
                same = planes[v].shape == unc.shape and np.array_equal(planes[v], unc)
                print("%s %-4s vs UNC: identical: %s" % (rg, v, "yes" if same else "NO"))
                ck.check(same, "%s %s: plane differs from UNC (lossless)" % (rg, v))
        for v in LOSSY:
            if v in planes and planes[v].shape == unc.shape:
                p = dicomref.psnr(planes[v], unc)
                d = dicomref.max_abs_diff(planes[v], unc)
                wrapped = int(np.count_nonzero(np.abs(planes[v].astype(int) - unc) > WRAP_LEVELS))
                print("%s %-4s vs UNC: PSNR %.1f dB, max |diff| %d, %d pixels off by > %d"
                      % (rg, v, p, d, wrapped, WRAP_LEVELS))
                ck.check(p >= LOSSY_PSNR, "%s %s: PSNR %.1f dB below %.1f" % (rg, v, p, LOSSY_PSNR))
                ck.check(wrapped == 0, "%s %s: %d pixels differ from UNC by more than %d grey levels "
                                       "(values beyond Bits Stored wrapped?)" % (rg, v, wrapped, WRAP_LEVELS))
        ref, info = reference(os.path.join(folder, "WG04_%s_UNC.dcm" % rg), tmp)
        compare(ck, "%s UNC vs pydicom reference" % rg, unc, ref)
        rc, js, err = dicomref.inspect(run.binary, os.path.join(folder, "WG04_%s_J2KR.dcm" % rg), "--strict")
        ck.check(rc == 1 and js is not None and js.get("error") == "not-chest",
                 "%s --strict: expected exit 1 'not-chest', got %d %r" % (rg, rc, js))


def chest(run, ck, data, tmp):
    folder = os.path.join(data, "dicom", "chest")
    p = lambda n: os.path.join(folder, n)  # noqa: E731
    j2ki_js, j2ki = run.plane(p("WG04_RG1_CR_chest_MONO1_J2KI.dcm"))
    jlsn_js, jlsn = run.plane(p("WG04_RG1_CR_chest_MONO1_JLSN.dcm"))
    if j2ki is not None and jlsn is not None:
        q = dicomref.psnr(j2ki, jlsn)
        print("RG1 J2KI vs JLSN: PSNR %.1f dB, max |diff| %d" % (q, dicomref.max_abs_diff(j2ki, jlsn)))
        ck.check(q >= LOSSY_PSNR, "RG1 J2KI vs JLSN: PSNR %.1f dB below %.1f" % (q, LOSSY_PSNR))
        for n, js in (("J2KI", j2ki_js), ("JLSN", jlsn_js)):
            ck.eq(js["ingestion"]["inverted"], True, "RG1 %s (MONOCHROME1): inverted" % n)
            ck.eq(js["ingestion"]["polarity_trusted"], "header", "RG1 %s: polarity_trusted" % n)
            ck.check(js["ingestion"]["polarity_score"] > 0, "RG1 %s: polarity score not positive" % n)
        ref, _ = reference(p("WG04_RG1_CR_chest_MONO1_J2KI.dcm"), tmp, "pydicom")
        compare(ck, "RG1 J2KI vs reference (Pillow/OpenJPEG decode)", j2ki, ref)
        if shutil.which("gdcmconv"):
            ref, _ = reference(p("WG04_RG1_CR_chest_MONO1_JLSN.dcm"), tmp, "gdcm")
            compare(ck, "RG1 JLSN vs reference (GDCM decode)", jlsn, ref)
        else:
            print("note: gdcmconv not installed: RG1 JLSN reference comparison not run")

    js, px = run.plane(p("fodicom_CR-MONO1-10-chest.dcm"))
    if js is not None:
        ck.check("no meta header" in js["transfer_syntax"], "fodicom MONO1: transfer syntax %r" % js["transfer_syntax"])
        ck.eq(js["ingestion"]["inverted"], True, "fodicom MONO1-10: inverted")
        ref, _ = reference(p("fodicom_CR-MONO1-10-chest.dcm"), tmp)
        compare(ck, "fodicom MONO1-10 vs reference", px, ref)

    js, px = run.plane(p("nccid_NIH_DX_nofinding.dcm"))
    if js is not None:
        ck.eq(js["ingestion"]["voi"], "identity", "NIH DX: voi")
        ds = pydicom.dcmread(p("nccid_NIH_DX_nofinding.dcm"))
        compare(ck, "NIH DX vs stored values", px, dicomref.native_stored(ds).astype(np.uint8), tol=0)

    siim_js, siim = run.plane(p(SIIM))
    if siim is not None:
        ck.eq(siim_js["ingestion"]["inverted"], False, "SIIM: inverted")
        ck.eq(siim_js["warnings"], [], "SIIM: warnings")
        compare(ck, "SIIM vs pydicom (Pillow JPEG) decode", siim, pydicom.dcmread(p(SIIM)).pixel_array)

    js, px = run.plane(p("txv_Fake_MONOHR1.dcm"))
    if js is not None:
        ing = js["ingestion"]
        ck.eq(js["photometric"], "MONOCHROME1", "fake MONO1: header photometric")
        ck.eq(ing["polarity_trusted"], "pixels", "fake MONO1: polarity_trusted")
        ck.eq(ing["inverted"], False, "fake MONO1: inverted (header inversion undone)")
        ck.check(ing["polarity_score"] > 0, "fake MONO1: final polarity score not positive")
        ck.check(any("trusted the pixels" in w for w in js["warnings"]), "fake MONO1: warnings %r" % js["warnings"])
        if siim is not None:
            same = px.shape == siim.shape and np.array_equal(px, siim)
            print("fake MONO1 plane identical to the SIIM original's: %s" % ("yes" if same else "NO"))
            ck.check(same, "fake MONO1: plane differs from the SIIM original's plane")
    js, px = run.plane(p("txv_Fake_MONOHR1.dcm"), "--trust-header")
    if js is not None:
        ing = js["ingestion"]
        ck.eq(ing["polarity_trusted"], "header", "fake MONO1 --trust-header: polarity_trusted")
        ck.eq(ing["inverted"], True, "fake MONO1 --trust-header: inverted")
        ck.check(ing["polarity_score"] < 0, "fake MONO1 --trust-header: polarity score not negative")
        ck.check(any("looks inverted" in w for w in js["warnings"]),
                 "fake MONO1 --trust-header: warnings %r" % js["warnings"])
        if siim is not None:
            compare(ck, "fake MONO1 --trust-header vs 255 - SIIM plane", px, 255 - siim)


def lut_examples(run, ck, data, tmp):
    folder = os.path.join(data, "dicom", "lut_examples")
    files = sorted(glob.glob(os.path.join(folder, "*.dcm")))
    ck.check(len(files) >= 4, "lut_examples: %d files found, 4 expected" % len(files))
    for path in files:
        name = os.path.basename(path)
        js, px = run.plane(path)
        if js is None:
            continue
        hdr = pydicom.dcmread(path, stop_before_pixels=True, force=True)
        compressed = "TransferSyntaxUID" in hdr.file_meta and hdr.file_meta.TransferSyntaxUID.is_compressed
        if compressed and not shutil.which("gdcmconv"):
            print("note: %s: gdcmconv not installed, reference not computed" % name)
            continue
        ref, info = reference(path, tmp, "gdcm" if compressed else "native")
        ing = js["ingestion"]
        ck.eq(ing["modality_lut"], info["modality_lut"], name + ": modality_lut")
        ck.eq(ing["voi"], info["voi"], name + ": voi")
        ck.eq(ing["inverted"], info["inverted"], name + ": inverted")
        if info["voi"] == "fallback-percentile":
            tol = max(2.0, 1e-3 * info["window_width"])
            ck.near(ing.get("window_center"), info["window_center"], tol, name + ": fallback centre")
            ck.near(ing.get("window_width"), info["window_width"], tol, name + ": fallback width")
        compare(ck, name + " vs pydicom reference", px, ref)


def sr_examples(run, ck, data):
    for path in sorted(glob.glob(os.path.join(data, "dicom", "sr_examples", "*.dcm"))):
        rc, js, err = dicomref.inspect(run.binary, path)
        name = os.path.basename(path)
        ok = rc == 1 and js is not None and js.get("error") == "not-an-image"
        print("%-48s %s" % (name, "refused: not-an-image" if ok else "NOT refused as expected"))
        ck.check(ok, "%s: expected exit 1 'not-an-image', got %d %r" % (name, rc, js))


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--data", required=True)
    args = ap.parse_args()
    if not os.path.isdir(os.path.join(args.data, "dicom")):
        print("SKIP: ../shared/data absent — real-file tests not run")
        return 77
    ck = dicomref.Checker()
    with tempfile.TemporaryDirectory() as tmp:
        run = Runner(args.cxrvqa, tmp, ck)
        other_syntaxes(run, ck, args.data, tmp)
        chest(run, ck, args.data, tmp)
        lut_examples(run, ck, args.data, tmp)
        sr_examples(run, ck, args.data)
    return ck.finish("shared_dicom")


if __name__ == "__main__":
    sys.exit(main())
