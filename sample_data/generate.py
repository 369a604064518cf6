#!/usr/bin/python3
"""generate.py — writes the synthetic chest studies of sample_data/ and their
manifest. Everything here is made by this script (no real patient data):

  cr_mono1_jpegls.dcm  CR, 12-bit MONOCHROME1, window centre/width, JPEG-LS
                       lossless (pydicom writes explicit VR LE, dcmcjpls
                       compresses), 640 x 512, PA
  dx_mono2_rle.dcm     DX for presentation, 14-bit MONOCHROME2, rescale
                       slope/intercept, no window (exercises the fallback
                       percentile window), collimator border, RLE (dcmcrle),
                       480 x 400, AP
  png_gray8.png        8-bit grayscale PNG, 384 x 320
  manifest.json        what went in: geometry, pixel format, window, rescale,
                       UIDs, the SHA-256 of the stored values, and what
                       ingestion is expected to report

The picture is a chest phantom drawn in "display brightness" (1 = bright on a
correctly displayed radiograph): a soft-tissue body ellipse, two dark lung
fields with faint ribs, a bright mediastinum, heart and spine, clavicles, and
a bright abdomen under two diaphragm domes, plus smooth texture and fine
noise. Every random number comes from a seeded numpy Generator and UIDs sit
under a fixed root, so running it again gives identical files (on the same
numpy/DCMTK/zlib).

Usage: /usr/bin/python3 sample_data/generate.py [--out DIR]
Needs pydicom, numpy, Pillow and DCMTK's dcmcjpls and dcmcrle.
"""
import argparse
import hashlib
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "tests", "ref"))
import dicomref  # noqa: E402  (independent reference renderer, for the manifest)

UID_ROOT = "1.2.826.0.1.3680043.10.1450"
CR_STORAGE = "1.2.840.10008.5.1.4.1.1.1"
DX_PRESENTATION_STORAGE = "1.2.840.10008.5.1.4.1.1.1.1"
TS_EXPLICIT_LE = "1.2.840.10008.1.2.1"
TS_JPEGLS_LOSSLESS = "1.2.840.10008.1.2.4.80"
TS_RLE = "1.2.840.10008.1.2.5"


# ------------------------------------------------------------------ phantom


def _blur(a, r):
    """Separable box blur of radius r, applied three times (~Gaussian)."""
    for _ in range(3):
        for axis in (0, 1):
            p = np.pad(a, [(r + 1, r)] if a.ndim == 1 else
                       ([(r + 1, r), (0, 0)] if axis == 0 else [(0, 0), (r + 1, r)]), mode="reflect")
            c = np.cumsum(p, axis=axis)
            if axis == 0:
                a = (c[2 * r + 1:, :] - c[:-2 * r - 1, :]) / (2 * r + 1)
            else:
                a = (c[:, 2 * r + 1:] - c[:, :-2 * r - 1]) / (2 * r + 1)
    return a


def _soft(d, edge):
    """Smooth indicator of d < 0 (d a signed distance-like field)."""
    return 1.0 / (1.0 + np.exp(np.clip(d / edge, -50, 50)))


def chest_phantom(rows, cols, seed):
    """Display brightness in [0,1] of a frontal chest phantom, float64."""
    rng = np.random.default_rng(seed)
    v, u = np.mgrid[0:rows, 0:cols].astype(np.float64)
    u = (u + 0.5) / cols
    v = (v + 0.5) / rows
    e = 0.012  # edge softness in normalised units

    def ellipse(cu, cv, au, av):
        return _soft(np.sqrt(((u - cu) / au) ** 2 + ((v - cv) / av) ** 2) - 1.0, e / min(au, av))

    body = ellipse(0.5, 0.58, 0.47, 0.62)
    lungs = np.maximum(ellipse(0.31, 0.46, 0.14, 0.26), ellipse(0.69, 0.46, 0.14, 0.26))
    mediastinum = _soft(np.abs(u - 0.5) - 0.06 - 0.05 * np.clip(v - 0.25, 0, 1), e) * _soft(0.12 - v, e) * _soft(v - 0.80, e)
    heart = ellipse(0.55, 0.62, 0.17, 0.14)
    spine = _soft(np.abs(u - 0.5) - 0.033, 0.004)
    dome = np.where(u < 0.5, 0.70 + 2.5 * (u - 0.31) ** 2, 0.73 + 2.5 * (u - 0.69) ** 2)
    abdomen = _soft(dome - v, e)
    ribs = lungs * (0.5 + 0.5 * np.cos(2 * np.pi * (v * 9.0 - 6.0 * (u - 0.5) ** 2))) ** 6
    clavicle = _soft(np.abs(v - (0.17 + 0.12 * np.abs(u - 0.5))) - 0.012, 0.004) * \
        _soft(np.abs(u - 0.5) - 0.30, e)
    vertebrae = spine * (0.5 + 0.5 * np.cos(2 * np.pi * v * 22.0))

    y = 0.04 + 0.46 * body                       # air, soft tissue
    y = y - 0.30 * lungs * body * (1 - abdomen)  # aerated lungs
    y = np.maximum(y, 0.74 * mediastinum * body)
    y = np.maximum(y, 0.70 * heart * body)
    y = np.maximum(y, 0.68 * abdomen * body)
    y = y + body * (0.10 * ribs + 0.10 * clavicle + 0.12 * spine + 0.04 * vertebrae)
    texture = _blur(rng.standard_normal((rows, cols)), max(2, rows // 80))
    texture /= texture.std()
    y = y + body * 0.025 * texture + 0.008 * rng.standard_normal((rows, cols))
    return np.clip(y, 0.0, 1.0)


# ------------------------------------------------------------------ studies


def uid(*parts):
    return ".".join([UID_ROOT] + [str(p) for p in parts])


def study_specs():
    """The three studies: everything the generator chooses, in one place."""
    return [
        dict(name="cr_mono1_jpegls.dcm", kind="dicom", study=1, seed=1001, rows=640, cols=512,
             modality="CR", sop_class=CR_STORAGE, ts=TS_JPEGLS_LOSSLESS, photometric="MONOCHROME1",
             bits_allocated=16, bits_stored=12, high_bit=11, pixel_rep=0,
             # stored = 3900 - 3600 * brightness (MONOCHROME1: dark is high)
             stored_from=(3900.0, -3600.0), window=(2100.0, 3700.0), rescale=None,
             view="PA", patient=("PHANTOM^ONE", "PHANTOM-0001", "19700101", "F", "054Y"),
             accession="SYN0001", date="20240115", time="093000", spacing=("ImagerPixelSpacing", [0.35, 0.35])),
        dict(name="dx_mono2_rle.dcm", kind="dicom", study=2, seed=1002, rows=480, cols=400,
             modality="DX", sop_class=DX_PRESENTATION_STORAGE, ts=TS_RLE, photometric="MONOCHROME2",
             bits_allocated=16, bits_stored=14, high_bit=13, pixel_rep=0,
             stored_from=(1500.0, 11000.0), window=None, rescale=(0.5, -200.0), border=(8, 16383),
             view="AP", patient=("PHANTOM^TWO", "PHANTOM-0002", "19581231", "M", "065Y"),
             accession="SYN0002", date="20240220", time="141500", spacing=("PixelSpacing", [0.5, 0.5])),
        dict(name="png_gray8.png", kind="png", study=3, seed=1003, rows=384, cols=320,
             photometric="MONOCHROME2", bits_allocated=8, bits_stored=8, high_bit=7, pixel_rep=0,
             stored_from=(10.0, 235.0), window=None, rescale=None),
    ]


def stored_array(spec):
    """The stored values the generator writes for one study (uint8/uint16)."""
    y = chest_phantom(spec["rows"], spec["cols"], spec["seed"])
    a, b = spec["stored_from"]
    s = np.rint(a + b * y)
    s = np.clip(s, 0, (1 << spec["bits_stored"]) - 1)
    if "border" in spec:
        k, val = spec["border"]
        s[:k, :] = s[-k:, :] = val
        s[:, :k] = s[:, -k:] = val
    return s.astype(np.uint8 if spec["bits_allocated"] == 8 else np.uint16)


def pixel_sha256(arr):
    return hashlib.sha256(np.ascontiguousarray(arr).astype(arr.dtype.newbyteorder("<")).tobytes()).hexdigest()


def make_dataset(spec, pixels):
    from pydicom.dataset import Dataset, FileMetaDataset
    sop_uid = uid(spec["study"], 1, 1)
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = spec["sop_class"]
    meta.MediaStorageSOPInstanceUID = sop_uid
    meta.TransferSyntaxUID = TS_EXPLICIT_LE
    meta.ImplementationClassUID = uid(0, 1)
    meta.ImplementationVersionName = "CXRVQA_SYNTH"
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian = True
    ds.is_implicit_VR = False
    ds.SpecificCharacterSet = "ISO_IR 100"
    ds.ImageType = ["ORIGINAL", "PRIMARY"]
    ds.SOPClassUID = spec["sop_class"]
    ds.SOPInstanceUID = sop_uid
    ds.StudyDate = ds.SeriesDate = ds.ContentDate = spec["date"]
    ds.StudyTime = ds.SeriesTime = ds.ContentTime = spec["time"]
    ds.AccessionNumber = spec["accession"]
    ds.Modality = spec["modality"]
    ds.Manufacturer = "cxrvqa synthetic phantom"
    ds.InstitutionName = "Synthetic Test Institution"
    ds.ReferringPhysicianName = ""
    ds.StudyDescription = "Chest radiograph (synthetic phantom)"
    ds.SeriesDescription = "Chest %s" % spec["view"]
    name, pid, birth, sex, age = spec["patient"]
    ds.PatientName = name
    ds.PatientID = pid
    ds.PatientBirthDate = birth
    ds.PatientSex = sex
    ds.PatientAge = age
    ds.BodyPartExamined = "CHEST"
    ds.ViewPosition = spec["view"]
    ds.StudyInstanceUID = uid(spec["study"])
    ds.SeriesInstanceUID = uid(spec["study"], 1)
    ds.StudyID = str(spec["study"])
    ds.SeriesNumber = 1
    ds.InstanceNumber = 1
    ds.PatientOrientation = ["L", "F"] if spec["view"] == "PA" else ["R", "F"]
    if spec["modality"] == "DX":
        ds.PresentationIntentType = "FOR PRESENTATION"
        ds.ImageLaterality = "U"
    ds.SamplesPerPixel = 1
    ds.PhotometricInterpretation = spec["photometric"]
    ds.Rows = spec["rows"]
    ds.Columns = spec["cols"]
    setattr(ds, spec["spacing"][0], spec["spacing"][1])
    ds.BitsAllocated = spec["bits_allocated"]
    ds.BitsStored = spec["bits_stored"]
    ds.HighBit = spec["high_bit"]
    ds.PixelRepresentation = spec["pixel_rep"]
    if spec["rescale"]:
        ds.RescaleSlope = "%g" % spec["rescale"][0]
        ds.RescaleIntercept = "%g" % spec["rescale"][1]
        ds.RescaleType = "US"
    if spec["window"]:
        ds.WindowCenter = "%g" % spec["window"][0]
        ds.WindowWidth = "%g" % spec["window"][1]
        ds.VOILUTFunction = "LINEAR"
    ds.LossyImageCompression = "00"
    ds.PixelData = pixels.astype("<u2").tobytes()
    ds["PixelData"].VR = "OW"
    return ds


def expected_ingestion(spec, ds, pixels):
    """What cxrvqa should report, from the generator's own choices and the
    independent reference rendering (tests/ref/dicomref.py)."""
    if spec["kind"] == "png":
        plane = pixels
        exp = {"voi": "identity", "modality_lut": "none", "inverted": False}
    else:
        stored = dicomref.stored_values(pixels, spec["bits_stored"], spec["high_bit"], spec["pixel_rep"])
        plane, info = dicomref.render_gray(ds, stored)
        exp = {k: info[k] for k in ("voi", "modality_lut", "inverted")}
        if spec["window"]:
            exp["window_center"], exp["window_width"] = spec["window"]
            exp["voi_function"] = "LINEAR"
        else:
            exp["window_center"], exp["window_width"] = info["window_center"], info["window_width"]
            exp["voi_function"] = "LINEAR_EXACT"
    exp["polarity_trusted"] = "header"
    exp["polarity_score"] = dicomref.polarity_score(plane)
    exp["output_rows"], exp["output_columns"] = spec["rows"], spec["cols"]
    exp["warnings_contain"] = ["no VOI information"] if spec["kind"] == "dicom" and not spec["window"] else []
    exp["warning_count"] = len(exp["warnings_contain"])
    if exp["polarity_score"] <= 0.1:
        raise SystemExit("%s: phantom polarity score %.3f is not clearly positive" % (spec["name"], exp["polarity_score"]))
    return exp


def run(cmd):
    p = subprocess.run(cmd, stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise SystemExit("%s failed (%d): %s" % (" ".join(cmd), p.returncode, p.stdout.decode()))


def write_study(spec, out_dir, tmp):
    pixels = stored_array(spec)
    path = os.path.join(out_dir, spec["name"])
    entry = {"path": spec["name"], "format": spec["kind"], "rows": spec["rows"], "columns": spec["cols"],
             "photometric": spec["photometric"], "bits_allocated": spec["bits_allocated"],
             "bits_stored": spec["bits_stored"], "high_bit": spec["high_bit"],
             "pixel_representation": spec["pixel_rep"], "samples_per_pixel": 1, "frames": 1,
             "phantom_seed": spec["seed"], "stored_from_brightness": list(spec["stored_from"]),
             "pixel_sha256": pixel_sha256(pixels), "pixel_dtype": str(pixels.dtype)}
    if spec["kind"] == "png":
        from PIL import Image
        Image.fromarray(pixels, "L").save(path, format="PNG", optimize=False, compress_level=9)
        entry["window"] = entry["rescale"] = None
        entry["expected"] = expected_ingestion(spec, None, pixels)
        entry["transfer_syntax"] = "PNG"
        return entry
    ds = make_dataset(spec, pixels)
    plain = os.path.join(tmp, "plain_" + spec["name"])
    ds.save_as(plain, write_like_original=False)
    if spec["ts"] == TS_JPEGLS_LOSSLESS:
        run(["dcmcjpls", "--encode-lossless", "--uid-never", plain, path])
    elif spec["ts"] == TS_RLE:
        run(["dcmcrle", "--uid-never", plain, path])
    else:
        shutil.copyfile(plain, path)
    entry.update({
        "transfer_syntax_uid": spec["ts"], "sop_class_uid": spec["sop_class"],
        "study_instance_uid": ds.StudyInstanceUID, "series_instance_uid": ds.SeriesInstanceUID,
        "sop_instance_uid": ds.SOPInstanceUID, "modality": spec["modality"],
        "patient": {"name": spec["patient"][0], "id": spec["patient"][1], "birth_date": spec["patient"][2],
                    "sex": spec["patient"][3], "age": spec["patient"][4]},
        "accession_number": spec["accession"], "study_date": spec["date"], "body_part": "CHEST",
        "view_position": spec["view"], "manufacturer": ds.Manufacturer,
        "window": {"center": spec["window"][0], "width": spec["window"][1], "function": "LINEAR"}
        if spec["window"] else None,
        "rescale": {"slope": spec["rescale"][0], "intercept": spec["rescale"][1]} if spec["rescale"] else None,
    })
    entry["pixel_spacing" if spec["spacing"][0] == "PixelSpacing" else "imager_pixel_spacing"] = spec["spacing"][1]
    entry["expected"] = expected_ingestion(spec, ds, pixels)
    return entry


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--out", default=HERE, help="output folder (default: this script's folder)")
    args = ap.parse_args()
    os.makedirs(args.out, exist_ok=True)
    entries = []
    with tempfile.TemporaryDirectory() as tmp:
        for spec in study_specs():
            entries.append(write_study(spec, args.out, tmp))
    manifest = {
        "generator": "sample_data/generate.py",
        "uid_root": UID_ROOT,
        "note": "Synthetic phantoms; every value here was chosen or computed by the generator "
                "(expected.* from tests/ref/dicomref.py), never read back from cxrvqa.",
        "files": entries,
    }
    with open(os.path.join(args.out, "manifest.json"), "w") as f:
        json.dump(manifest, f, indent=2, sort_keys=False)
        f.write("\n")
    total = sum(os.path.getsize(os.path.join(args.out, e["path"])) for e in entries)
    print("wrote %d files, %d bytes, to %s" % (len(entries), total, args.out))


if __name__ == "__main__":
    main()
