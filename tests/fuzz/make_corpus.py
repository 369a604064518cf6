#!/usr/bin/env python3
"""make_corpus.py — regenerate the seed corpus of the ingestion fuzz target.

Writes small, project-generated inputs into tests/fuzz/corpus/ (default) or
the directory given with --out: tiny synthetic radiographs as DICOM in every
transfer syntax the ingester handles (native explicit/implicit/big endian,
deflate, RLE, JPEG baseline/extended/lossless, JPEG-LS lossless and
near-lossless via the DCMTK command line tools; JPEG 2000 via opj_compress
and pydicom encapsulation), a file without meta header, LUT sequences,
multi-frame, colour, an SR, PNGs in several layouts, and a few malformed
files. Files named crash-* / regress-* in the output directory (inputs that
once crashed the target) are never touched.

Needs: /usr/bin/python3 with numpy, pydicom and Pillow; dcmconv, dcmcrle,
dcmcjpeg, dcmcjpls (Debian dcmtk) and opj_compress (libopenjp2-tools). A
missing tool only skips the seeds that need it. The whole corpus stays well
under 1 MB.

    python3 tests/fuzz/make_corpus.py [--out DIR] [--check CXRVQA]

--check runs `cxrvqa inspect --png` on every lossless variant of a base image
and fails if any decodes differently from the uncompressed original.
"""
import argparse
import io
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np
import pydicom
from pydicom.dataset import Dataset, FileMetaDataset
from pydicom.encaps import encapsulate
from pydicom.sequence import Sequence
from pydicom.uid import (ExplicitVRLittleEndian, generate_uid, JPEG2000,
                         JPEG2000Lossless)
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT_UID = "1.2.826.0.1.3680043.10.1084.77."  # fixed prefix: reproducible UIDs
CR = "1.2.840.10008.5.1.4.1.1.1"
DX = "1.2.840.10008.5.1.4.1.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
BASIC_SR = "1.2.840.10008.5.1.4.1.1.88.11"


def uid(n):
    return ROOT_UID + str(n)


def chest(rows, cols, maxv, seed=0):
    """A frontal-chest-like pattern: dark lungs, bright mediastinum, noise."""
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:rows, 0:cols]
    x = x / cols
    y = y / rows
    v = np.full((rows, cols), 0.55)
    lungs = (y > 0.2) & (y < 0.85) & (((x > 0.12) & (x < 0.4)) | ((x > 0.6) & (x < 0.88)))
    v[lungs] = 0.15
    v[(x > 0.44) & (x < 0.56)] = 0.85
    v[y > 0.88] = 0.8
    v += rng.uniform(0, 0.05, size=v.shape)
    return np.clip(v * maxv, 0, maxv)


def base_dataset(sop_class, n, rows, cols, photometric, bits, signed=False, modality="CR"):
    ds = Dataset()
    ds.file_meta = FileMetaDataset()
    ds.file_meta.MediaStorageSOPClassUID = sop_class
    ds.file_meta.MediaStorageSOPInstanceUID = uid(1000 + n)
    ds.file_meta.TransferSyntaxUID = ExplicitVRLittleEndian
    ds.file_meta.ImplementationClassUID = uid(1)
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SOPClassUID = sop_class
    ds.SOPInstanceUID = uid(1000 + n)
    ds.StudyInstanceUID = uid(2000 + n)
    ds.SeriesInstanceUID = uid(3000 + n)
    ds.Modality = modality
    ds.PatientName = "FUZZ^SEED"
    ds.PatientID = "FUZZ-%d" % n
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = "PA"
    ds.Rows = rows
    ds.Columns = cols
    ds.SamplesPerPixel = 3 if photometric in ("RGB", "YBR_FULL") else 1
    if ds.SamplesPerPixel == 3:
        ds.PlanarConfiguration = 0
    ds.PhotometricInterpretation = photometric
    ds.BitsAllocated = 8 if bits <= 8 else 16
    ds.BitsStored = bits
    ds.HighBit = bits - 1
    ds.PixelRepresentation = 1 if signed else 0
    return ds


def set_pixels(ds, arr):
    dtype = {(8, 0): np.uint8, (16, 0): np.uint16, (16, 1): np.int16}[(ds.BitsAllocated, ds.PixelRepresentation)]
    ds.PixelData = np.ascontiguousarray(arr.astype(dtype)).tobytes()


def save(ds, path):
    ds.save_as(path, write_like_original=False)


def have(tool):
    return shutil.which(tool) is not None


def run(cmd):
    r = subprocess.run(cmd, capture_output=True, text=True)
    if r.returncode != 0:
        raise RuntimeError("%s failed: %s" % (" ".join(cmd), r.stderr.strip()))


def make_bases(tmp):
    """Base images (uncompressed, explicit VR LE); returns {name: path}."""
    bases = {}

    ds = base_dataset(CR, 1, 64, 64, "MONOCHROME2", 12)
    ds.WindowCenter = "2048"
    ds.WindowWidth = "4096"
    ds.RescaleSlope = "1"
    ds.RescaleIntercept = "0"
    ds.ImagerPixelSpacing = ["0.2", "0.2"]
    set_pixels(ds, chest(64, 64, 4095, 1))
    bases["cr12_mono2"] = ds

    ds = base_dataset(DX, 2, 40, 48, "MONOCHROME1", 8, modality="DX")
    set_pixels(ds, 255 - chest(40, 48, 255, 2))
    bases["dx8_mono1"] = ds

    ds = base_dataset(CR, 3, 40, 40, "MONOCHROME2", 16, signed=True)
    ds.RescaleSlope = "0.5"
    ds.RescaleIntercept = "-100"
    ds.VOILUTFunction = "SIGMOID"
    ds.WindowCenter = "0"
    ds.WindowWidth = "8000"
    set_pixels(ds, chest(40, 40, 30000, 3) - 15000)
    bases["cr16s_sigmoid"] = ds

    ds = base_dataset(SC, 4, 32, 40, "RGB", 8, modality="OT")
    g = chest(32, 40, 255, 4)
    set_pixels(ds, np.stack([g, g * 0.9, g * 0.8], axis=-1))
    bases["sc_rgb8"] = ds

    ds = base_dataset(CR, 5, 48, 48, "MONOCHROME2", 10)
    ds.NumberOfFrames = 2
    px = chest(48, 48, 1023, 5)
    set_pixels(ds, np.stack([px, 1023 - px]))
    bases["cr10_2frames"] = ds

    # Modality LUT Sequence + VOI LUT Sequence (12-bit stored, 8-bit LUT out)
    ds = base_dataset(CR, 6, 40, 40, "MONOCHROME2", 12)
    m = Dataset()
    m.LUTDescriptor = [4096, 0, 12]
    m.ModalityLUTType = "US"
    m.add_new(0x00283006, "US", [int(i) for i in np.arange(4096)[::-1]])  # LUT Data as US
    ds.ModalityLUTSequence = Sequence([m])
    v = Dataset()
    v.LUTDescriptor = [4096, 0, 8]
    v.add_new(0x00283006, "OW", (np.sqrt(np.arange(4096) / 4095.0) * 255).astype("<u2").tobytes())  # as OW
    ds.VOILUTSequence = Sequence([v])
    set_pixels(ds, chest(40, 40, 4095, 6))
    bases["cr12_luts"] = ds

    paths = {}
    for name, d in bases.items():
        p = os.path.join(tmp, name + ".dcm")
        save(d, p)
        paths[name] = p
    return paths


def j2k_dicom(base_path, out, lossless, jp2=False):
    """Encode frame 1 with opj_compress and encapsulate it with pydicom."""
    ds = pydicom.dcmread(base_path)
    arr = ds.pixel_array
    with tempfile.TemporaryDirectory() as t:
        if ds.SamplesPerPixel == 3:
            src = os.path.join(t, "in.ppm")
            Image.fromarray(arr.astype(np.uint8), "RGB").save(src)
        else:
            src = os.path.join(t, "in.pgm")
            maxv = (1 << ds.BitsStored) - 1
            a = arr.astype(np.int64)
            if ds.PixelRepresentation:
                return False  # opj_compress reads unsigned PGM only
            with open(src, "wb") as f:
                f.write(b"P5\n%d %d\n%d\n" % (ds.Columns, ds.Rows, maxv))
                f.write(a.astype(">u2" if maxv > 255 else "u1").tobytes())
        dst = os.path.join(t, "out.jp2" if jp2 else "out.j2k")
        cmd = ["opj_compress", "-i", src, "-o", dst, "-n", "3"]
        if not lossless:
            cmd += ["-r", "8"]
        run(cmd)
        stream = open(dst, "rb").read()
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    ds.file_meta.TransferSyntaxUID = JPEG2000Lossless if lossless else JPEG2000
    if ds.SamplesPerPixel == 3:
        ds.PhotometricInterpretation = "YBR_RCT" if lossless else "YBR_ICT"
    ds.is_implicit_VR = False
    ds.is_little_endian = True
    ds.save_as(out, write_like_original=True)
    return True


def pngs(out):
    g = chest(48, 48, 255, 7).astype(np.uint8)
    Image.fromarray(g, "L").save(os.path.join(out, "png_gray8.png"))
    Image.fromarray((chest(40, 48, 65535, 8)).astype(np.uint16), "I;16").save(os.path.join(out, "png_gray16.png"))
    rgb = np.stack([g, g, g // 2], axis=-1)
    Image.fromarray(rgb, "RGB").save(os.path.join(out, "png_rgb8.png"))
    Image.fromarray(np.dstack([rgb, np.full_like(g, 200)]), "RGBA").save(os.path.join(out, "png_rgba8.png"))
    Image.fromarray(g, "L").convert("P").save(os.path.join(out, "png_palette.png"))
    Image.fromarray(g > 128).save(os.path.join(out, "png_1bit.png"))
    la = Image.fromarray(g, "L").convert("LA")
    la.save(os.path.join(out, "png_gray_alpha.png"))
    Image.fromarray(chest(16, 16, 255, 9).astype(np.uint8), "L").save(os.path.join(out, "png_16x16.png"))


def malformed(out, made):
    """A few broken files next to the good ones (the fuzzer mutates them too)."""
    src = open(made["cr12_mono2_rle"], "rb").read() if "cr12_mono2_rle" in made else None
    base = open(made["cr12_mono2_explicit"], "rb").read()
    with open(os.path.join(out, "bad_truncated_pixels.dcm"), "wb") as f:
        f.write(base[: len(base) - 3000])
    with open(os.path.join(out, "bad_truncated_header.dcm"), "wb") as f:
        f.write(base[:300])
    if src:
        with open(os.path.join(out, "bad_rle_truncated.dcm"), "wb") as f:
            f.write(src[: len(src) * 2 // 3])
    png = open(os.path.join(out, "png_gray8.png"), "rb").read()
    with open(os.path.join(out, "bad_png_truncated.png"), "wb") as f:
        f.write(png[: len(png) // 2])
    b = bytearray(png)
    b[40] ^= 0xFF
    with open(os.path.join(out, "bad_png_crc.png"), "wb") as f:
        f.write(bytes(b))
    # declared dimensions far beyond what the file holds
    ds = pydicom.dcmread(made["cr12_mono2_explicit"])
    ds.Rows = 65535
    ds.Columns = 65535
    save(ds, os.path.join(out, "bad_huge_dims.dcm"))
    ds = pydicom.dcmread(made["cr12_mono2_explicit"])
    ds.NumberOfFrames = 0
    save(ds, os.path.join(out, "bad_zero_frames.dcm"))
    # SR: no pixel data
    sr = base_dataset(BASIC_SR, 9, 0, 0, "MONOCHROME2", 8, modality="SR")
    for k in ("Rows", "Columns", "SamplesPerPixel", "PhotometricInterpretation", "BitsAllocated",
              "BitsStored", "HighBit", "PixelRepresentation"):
        delattr(sr, k)
    sr.ValueType = "CONTAINER"
    item = Dataset()
    item.ValueType = "TEXT"
    item.TextValue = "No acute cardiopulmonary findings."
    sr.ContentSequence = Sequence([item])
    save(sr, os.path.join(out, "sr_basic_text.dcm"))


def build(out):
    os.makedirs(out, exist_ok=True)
    for f in os.listdir(out):
        if not (f.startswith("crash-") or f.startswith("regress-")):
            os.remove(os.path.join(out, f))
    made = {}
    with tempfile.TemporaryDirectory() as tmp:
        bases = make_bases(tmp)
        for name, p in bases.items():
            dst = os.path.join(out, name + "_explicit.dcm")
            shutil.copy(p, dst)
            made[name + "_explicit"] = dst
        variants = [
            ("implicit", "dcmconv", ["+ti"], None),
            ("bigendian", "dcmconv", ["+tb"], None),
            ("deflate", "dcmconv", ["+td"], None),
            ("nometa", "dcmconv", ["+ti", "-F"], None),
            ("rle", "dcmcrle", [], None),
            ("jpll", "dcmcjpeg", ["+e1"], None),
            ("jply", "dcmcjpeg", ["+ee"], lambda n: "12" in n or "8" in n),
            ("jpbase", "dcmcjpeg", ["+eb"], lambda n: "8" in n),
            ("jlsl", "dcmcjpls", [], None),
            ("jlsn", "dcmcjpls", ["+en"], None),
        ]
        for name, p in bases.items():
            for suffix, tool, opts, when in variants:
                if not have(tool) or (when and not when(name)):
                    continue
                if name in ("cr12_luts", "cr16s_sigmoid") and suffix not in ("implicit", "rle", "jlsl", "nometa"):
                    continue  # keep the corpus small: these two exercise LUTs, not codecs
                dst = os.path.join(out, "%s_%s.dcm" % (name, suffix))
                try:
                    run([tool] + opts + [p, dst])
                    made[name + "_" + suffix] = dst
                except RuntimeError as e:
                    print("skip %s: %s" % (os.path.basename(dst), e), file=sys.stderr)
            if have("opj_compress") and name in ("cr12_mono2", "dx8_mono1", "sc_rgb8"):
                for suffix, lossless, jp2 in (("j2kr", True, False), ("j2ki", False, False), ("jp2", True, True)):
                    dst = os.path.join(out, "%s_%s.dcm" % (name, suffix))
                    if j2k_dicom(p, dst, lossless, jp2):
                        made[name + "_" + suffix] = dst
    pngs(out)
    malformed(out, made)
    total = sum(os.path.getsize(os.path.join(out, f)) for f in os.listdir(out))
    print("corpus: %d files, %d bytes in %s" % (len(os.listdir(out)), total, out))
    if total > 1 << 20:
        sys.exit("corpus exceeds 1 MB")
    return made


def check(cxrvqa, made):
    """Lossless variants must decode to the same 8-bit plane as the original."""
    lossless = ("implicit", "bigendian", "deflate", "nometa", "rle", "jpll", "jlsl", "j2kr", "jp2")
    bad = 0
    with tempfile.TemporaryDirectory() as t:
        for key, path in sorted(made.items()):
            name, suffix = key.rsplit("_", 1)
            if suffix != "explicit":
                continue
            ref = os.path.join(t, "ref.png")
            r = subprocess.run([cxrvqa, "inspect", path, "--png", ref], capture_output=True, text=True)
            if r.returncode != 0:
                print("FAIL %s: %s" % (key, r.stderr.strip()))
                bad += 1
                continue
            want = np.asarray(Image.open(ref))
            for v in lossless:
                p = made.get(name + "_" + v)
                if not p:
                    continue
                o = os.path.join(t, "v.png")
                r = subprocess.run([cxrvqa, "inspect", p, "--png", o], capture_output=True, text=True)
                if r.returncode != 0:
                    print("FAIL %s_%s: %s" % (name, v, r.stderr.strip()))
                    bad += 1
                    continue
                got = np.asarray(Image.open(o))
                diff = int(np.abs(got.astype(int) - want.astype(int)).max()) if got.shape == want.shape else -1
                print("%s %-28s max |diff| %s" % ("ok  " if diff == 0 else "FAIL", name + "_" + v, diff))
                bad += diff != 0
    return bad


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=os.path.join(HERE, "corpus"))
    ap.add_argument("--check", metavar="CXRVQA", help="cxrvqa binary: compare lossless variants")
    a = ap.parse_args()
    made = build(a.out)
    if a.check:
        sys.exit(1 if check(a.check, made) else 0)


if __name__ == "__main__":
    main()
