#!/usr/bin/python3
"""test_jls.py — our JPEG-LS decoder (dicom/jls.c) against DCMTK's, sample for sample.

Generates grey images (seeded) that reach every path of the decoder: smooth ramps and
sinusoids (regular mode), flat areas and steps (run mode, runs that end at the line's end and
run interruptions of both types), noise and full-range jumps (escape codes, the modulo
wrap), lines of 1 sample and images of 1 line; 8, 10, 12, 15 and 16 bits. DCMTK's encoder
(dcmcjpls) writes each as lossless, near-lossless (NEAR 1, 3, 7), with preset thresholds and
with a short RESET. jls_compare then decodes every file both ways and compares every
sample; it also runs on the committed JPEG-LS files of the fuzz corpus and on the real ones
under ../shared/data/dicom when they are there.

    /usr/bin/python3 tests/dicom/test_jls.py --compare build/tests/dicom/jls_compare
        [--work DIR] [--data ../shared/data/dicom] [--corpus tests/fuzz/corpus]

Exit 0 when every file decodes identically, 1 otherwise.
"""
import argparse
import glob
import os
import shutil
import subprocess
import sys

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.uid import ExplicitVRLittleEndian, generate_uid

SEED = 20261207


def image(kind, rows, cols, bits, rng):
    maxval = (1 << bits) - 1
    y, x = np.mgrid[0:rows, 0:cols].astype(np.float64)
    if kind == "smooth":
        v = 0.5 + 0.25 * np.sin(x / 9.0) * np.cos(y / 13.0) + 0.2 * (x + y) / (rows + cols)
    elif kind == "noisy":
        v = 0.5 + 0.2 * np.sin(x / 17.0) + rng.normal(0, 0.02, (rows, cols))
    elif kind == "flat":  # runs: constant blocks, a few isolated changes
        v = np.where((x // 16 + y // 8) % 3 == 0, 0.2, 0.7)
        idx = rng.integers(0, rows * cols, max(1, rows * cols // 97))
        v.flat[idx] += 0.003
    elif kind == "random":  # no structure: long codes, escapes
        v = rng.random((rows, cols))
    else:  # "extremes": 0 and MAXVAL side by side (the modulo wrap)
        v = ((x.astype(int) * 7 + y.astype(int) * 3) % 5 < 2).astype(np.float64)
    return np.clip(np.rint(v * maxval), 0, maxval).astype(np.uint16 if bits > 8 else np.uint8)


def write_dicom(path, px, bits):
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = "1.2.840.10008.5.1.4.1.1.1"
    meta.MediaStorageSOPInstanceUID = generate_uid()
    meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds = Dataset()
    ds.file_meta = meta
    ds.SOPClassUID = meta.MediaStorageSOPClassUID
    ds.SOPInstanceUID = meta.MediaStorageSOPInstanceUID
    ds.StudyInstanceUID = generate_uid()
    ds.SeriesInstanceUID = generate_uid()
    ds.Modality = "CR"
    ds.PatientID = "JLS-TEST"
    ds.Rows, ds.Columns = px.shape
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = "MONOCHROME2"
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 0
    ds.PixelData = px.tobytes()
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.save_as(path, write_like_original=False)


# (name, dcmcjpls options); the thresholds obey T.87's order for every NEAR used with them
ENCODINGS = [
    ("lossless", ["+el"]),
    ("near1", ["+en", "+md", "1"]),
    ("near3", ["+en", "+md", "3"]),
    ("near7", ["+en", "+md", "7"]),
    ("presets", ["+el", "+t1", "5", "+t2", "11", "+t3", "40"]),
    ("reset16", ["+en", "+md", "2", "+rs", "16"]),
]
SHAPES = [(1, 1), (1, 40), (40, 1), (7, 13), (64, 64), (33, 257), (180, 150)]
KINDS = ["smooth", "noisy", "flat", "random", "extremes"]
BITS = [8, 10, 12, 15, 16]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--compare", required=True)
    ap.add_argument("--work", default="/tmp/cxrvqa-jls")
    ap.add_argument("--data", default=None)
    ap.add_argument("--corpus", default=None)
    a = ap.parse_args()
    if not shutil.which("dcmcjpls"):
        print("FAIL: dcmcjpls (DCMTK's JPEG-LS encoder, package dcmtk) not found")
        return 1
    shutil.rmtree(a.work, ignore_errors=True)
    os.makedirs(a.work)
    rng = np.random.default_rng(SEED)
    files = []
    n = 0
    for bits in BITS:
        for si, (rows, cols) in enumerate(SHAPES):
            for ki, kind in enumerate(KINDS):
                # every image in two encodings, chosen in turn so that each (bits, shape,
                # kind, encoding) family is covered without the full product
                px = image(kind, rows, cols, bits, rng)
                src = os.path.join(a.work, "src-%d-%dx%d-%s.dcm" % (bits, rows, cols, kind))
                write_dicom(src, px, bits)
                for e in range(2):
                    name, opts = ENCODINGS[(si * len(KINDS) + ki + e * 3 + bits) % len(ENCODINGS)]
                    out = os.path.join(a.work, "%d-%dx%d-%s-%s.dcm" % (bits, rows, cols, kind, name))
                    p = subprocess.run(["dcmcjpls"] + opts + [src, out], capture_output=True, text=True)
                    if p.returncode < 0 and rows * cols < 4:
                        # DCMTK 3.6.7's encoder crashes on some 1-sample images (12-bit, NEAR > 0)
                        print("note: dcmcjpls %s crashed (signal %d) on the %dx%d %d-bit image: not compared"
                              % (" ".join(opts), -p.returncode, rows, cols, bits))
                        continue
                    if p.returncode != 0:
                        print("FAIL: dcmcjpls %s %s: %s" % (" ".join(opts), src, p.stderr.strip()))
                        return 1
                    files.append(out)
                    n += 1
    print("generated %d JPEG-LS files (%d bit depths x %d shapes x %d contents, 2 encodings each)"
          % (n, len(BITS), len(SHAPES), len(KINDS)))
    if a.corpus:
        committed = sorted(glob.glob(os.path.join(a.corpus, "*jls*.dcm")))
        print("committed corpus: %d JPEG-LS files" % len(committed))
        files += committed
    committed = files[n:]
    del files[n:]
    shared = []
    if a.data and os.path.isdir(a.data):
        for f in sorted(glob.glob(os.path.join(a.data, "**", "*.dcm"), recursive=True)):
            try:
                ts = str(pydicom.dcmread(f, stop_before_pixels=True).file_meta.TransferSyntaxUID)
            except Exception:
                continue
            if ts in ("1.2.840.10008.1.2.4.80", "1.2.840.10008.1.2.4.81"):
                shared.append(f)
        print("shared data: %d JPEG-LS files" % len(shared))
    else:
        print("SKIP: ../shared/data/dicom absent: the real JPEG-LS files are not compared")
    p = subprocess.run([a.compare] + files, capture_output=True, text=True)
    print(p.stdout, end="")
    rc = p.returncode
    # the committed and real files include colour and signed ones: those are declined
    # (DCMTK decodes them), and the grey unsigned ones must be identical
    others = committed + shared
    if others:
        q = subprocess.run([a.compare, "--allow-declined"] + others, capture_output=True, text=True)
        print(q.stdout, end="")
        rc = rc or q.returncode
        if q.stdout.count("\nok ") + q.stdout.startswith("ok ") < 5:
            print("FAIL: fewer than 5 committed or real JPEG-LS files were decoded by ours")
            rc = 1
    print("PASS" if rc == 0 else "FAIL")
    return 0 if rc == 0 else 1


if __name__ == "__main__":
    sys.exit(main())
