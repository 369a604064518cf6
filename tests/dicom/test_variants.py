#!/usr/bin/python3
"""test_variants.py — every DICOM header, transfer-syntax and pixel-format
variant the ingestion must handle, generated at test time from synthetic
chest-phantom pixels, rendered by `cxrvqa inspect --png` and compared with
an independent reference.

What is generated (pydicom writes the native files; DCMTK and OpenJPEG make
the rest):
  transfer syntaxes, all from one 12-bit MONOCHROME2 windowed image:
    explicit VR LE (pydicom), implicit VR LE, explicit VR big endian,
    deflated (dcmconv +ti / +tb / +td), no file meta header (dcmconv -F),
    RLE (dcmcrle), JPEG lossless SV1 and JPEG extended 12-bit (dcmcjpeg
    +e1 / +ee), JPEG-LS lossless and near-lossless NEAR=2 (dcmcjpls +el /
    +en), JPEG 2000 lossless and lossy (opj_compress to a .j2k, put into
    Pixel Data with pydicom.encaps.encapsulate, TS .4.90 / .4.91); JPEG
    baseline (dcmcjpeg +eb) from an 8-bit image;
  pixel formats: BS 12 HB 11 with junk in the 4 unused high bits, BS 12
    HB 15 with junk in the 4 low bits, signed pixels with rescale (sign
    extended, upper bits left zero, and as signed JPEG 2000), Modality LUT
    Sequence (with a window, and without any VOI: fallback), VOI LUT
    Sequence (12-bit entries; 16-bit entries with a first-mapped value and
    clamping), VOI LUT Function LINEAR / LINEAR_EXACT / SIGMOID (wide and
    narrow windows), three windows (the first must be used), MONOCHROME1,
    12-bit without VOI (fallback window), 16-bit MONOCHROME1 with a negative
    Rescale Slope and no VOI (fallback over a decreasing LUT), 8-bit without
    VOI (identity), RGB (interleaved, planar, JPEG 2000 lossless YBR_RCT and
    lossy YBR_ICT) and YBR_FULL secondary captures (luminance, as Pillow's
    "L" conversion), a 3-frame image (first frame + warning), a
    header-MONOCHROME1 image whose pixels are MONOCHROME2 (content check;
    --trust-header);
  clinical checks: lateral view, non-chest body part, small image (each a
    warning; with --strict exit 1 and the error name), a 24-pixel image
    (always refused, "too-small").

Reference: tests/ref/dicomref.py — stored values taken from the generator's
own integer array (masked / sign-extended by dicomref, checked against the
file), pydicom's apply_modality_lut and apply_voi_lut / apply_windowing,
the documented nearest-rank percentile fallback window, MONOCHROME1
inverted after VOI, 0..255 round half up; colour by Pillow's "L".

Tolerances:
  every native variant           : max |plane - reference| <= 1 grey level
  lossless transfer syntaxes     : plane identical to the explicit-LE plane
  JPEG-LS near-lossless (NEAR=2) : max |diff| <= 1 (2 stored units are 0.13
                                   of a grey level through this window)
  JPEG 2000 lossy (opj -I -q 50) : PSNR >= 40 dB against the reference
                                   (grey 12-bit and RGB YBR_ICT)
  JPEG extended 12-bit (q 90)    : PSNR >= 40 dB
  JPEG baseline 8-bit (q 90)     : PSNR >= 35 dB
  fallback window                : centre and width within max(2, 0.1% of
                                   width) of the reference's nearest-rank
                                   window
The measured PSNR / max difference of every variant is printed.

Usage: test_variants.py --cxrvqa BIN
"""
import argparse
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "ref"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "sample_data"))
import dicomref  # noqa: E402
import generate  # noqa: E402  (the chest phantom)

import pydicom  # noqa: E402
from pydicom.dataset import Dataset, FileMetaDataset  # noqa: E402
from pydicom.encaps import encapsulate  # noqa: E402
from pydicom.pixel_data_handlers.util import convert_color_space  # noqa: E402
from pydicom.sequence import Sequence  # noqa: E402

ROOT = "1.2.826.0.1.3680043.10.1450.99"
CR = "1.2.840.10008.5.1.4.1.1.1"
SC = "1.2.840.10008.5.1.4.1.1.7"
TS = {
    "implicit": "1.2.840.10008.1.2", "explicit": "1.2.840.10008.1.2.1", "big": "1.2.840.10008.1.2.2",
    "deflated": "1.2.840.10008.1.2.1.99", "jpeg_baseline": "1.2.840.10008.1.2.4.50",
    "jpeg_extended": "1.2.840.10008.1.2.4.51", "jpeg_sv1": "1.2.840.10008.1.2.4.70",
    "jpegls": "1.2.840.10008.1.2.4.80", "jpegls_near": "1.2.840.10008.1.2.4.81",
    "j2k_lossless": "1.2.840.10008.1.2.4.90", "j2k": "1.2.840.10008.1.2.4.91", "rle": "1.2.840.10008.1.2.5",
}
ROWS, COLS = 300, 264
WINDOW = (2000.0, 3800.0)

_uid_counter = [0]


def next_uid():
    _uid_counter[0] += 1
    return "%s.%d" % (ROOT, _uid_counter[0])


def phantom(rows=ROWS, cols=COLS, seed=4242):
    return generate.chest_phantom(rows, cols, seed)


def make_ds(raw, photometric="MONOCHROME2", bits_stored=12, high_bit=None, pixel_rep=0, spp=1,
            sop_class=CR, modality="CR", body="CHEST", view="PA", frames=None, planar=None, **attrs):
    """Explicit-VR-LE data set around raw words (rows x cols [x 3], frames
    stacked on axis 0 when frames is given)."""
    raw = np.ascontiguousarray(raw)
    ba = 8 if raw.dtype == np.uint8 else 16
    sop = next_uid()
    meta = FileMetaDataset()
    meta.MediaStorageSOPClassUID = sop_class
    meta.MediaStorageSOPInstanceUID = sop
    meta.TransferSyntaxUID = TS["explicit"]
    meta.ImplementationClassUID = ROOT + ".0"
    ds = Dataset()
    ds.file_meta = meta
    ds.is_little_endian, ds.is_implicit_VR = True, False
    ds.SOPClassUID, ds.SOPInstanceUID = sop_class, sop
    ds.StudyInstanceUID, ds.SeriesInstanceUID = ROOT + ".1", ROOT + ".1.1"
    ds.Modality = modality
    ds.PatientName, ds.PatientID = "VARIANT^TEST", "VARIANT-1"
    if body is not None:
        ds.BodyPartExamined = body
    if view is not None:
        ds.ViewPosition = view
    shape = raw.shape[1:] if frames else raw.shape
    ds.Rows, ds.Columns = shape[0], shape[1]
    if frames:
        ds.NumberOfFrames = frames
    ds.SamplesPerPixel = spp
    ds.PhotometricInterpretation = photometric
    if spp == 3:
        ds.PlanarConfiguration = planar or 0
    ds.BitsAllocated = ba
    ds.BitsStored = bits_stored
    ds.HighBit = bits_stored - 1 if high_bit is None else high_bit
    ds.PixelRepresentation = pixel_rep
    for k, v in attrs.items():
        setattr(ds, k, v)
    if spp == 3 and planar:
        raw = np.moveaxis(raw, -1, -3)  # (.., rows, cols, 3) -> (.., 3, rows, cols)
    ds.PixelData = raw.astype("<u2" if ba == 16 else "u1").tobytes()
    ds["PixelData"].VR = "OW" if ba == 16 else "OB"
    return ds


def save(ds, path):
    ds.save_as(path, write_like_original=False)
    return path


def run(cmd):
    p = subprocess.run([str(c) for c in cmd], stdout=subprocess.PIPE, stderr=subprocess.STDOUT)
    if p.returncode != 0:
        raise RuntimeError("%s failed (%d): %s" % (" ".join(map(str, cmd)), p.returncode,
                                                   p.stdout.decode(errors="replace")[:400]))


def j2k_file(src_ds, stored, path, tmp, lossy, photometric=None):
    """Encode stored samples with opj_compress and encapsulate the code
    stream into a copy of src_ds. stored: (rows, cols) unsigned or signed
    Bits Stored deep, or (rows, cols, 3) 8-bit RGB (opj applies its colour
    transform: the Photometric Interpretation becomes YBR_RCT / YBR_ICT)."""
    bs = int(src_ds.BitsStored)
    cs = os.path.join(tmp, "j2k_out.j2k")
    if stored.ndim == 3:                 # RGB: binary PPM
        src = os.path.join(tmp, "j2k_in.ppm")
        with open(src, "wb") as f:
            f.write(b"P6\n%d %d\n255\n" % (stored.shape[1], stored.shape[0]))
            f.write(stored.astype(np.uint8).tobytes())
        fmt = []
    elif int(src_ds.PixelRepresentation):  # signed: raw big-endian samples
        src = os.path.join(tmp, "j2k_in.raw")
        with open(src, "wb") as f:
            f.write(stored.astype(">i2").tobytes())
        fmt = ["-F", "%d,%d,1,%d,s" % (stored.shape[1], stored.shape[0], bs)]
    else:                                # unsigned: 16-bit PGM, maxval sets the precision
        src = os.path.join(tmp, "j2k_in.pgm")
        with open(src, "wb") as f:
            f.write(b"P5\n%d %d\n%d\n" % (stored.shape[1], stored.shape[0], (1 << bs) - 1))
            f.write(stored.astype(">u2").tobytes())
        fmt = []
    run(["opj_compress", "-i", src, "-o", cs] + fmt + (["-I", "-q", "50"] if lossy else []))
    with open(cs, "rb") as f:
        stream = f.read()
    ds = pydicom.dcmread(save(src_ds, os.path.join(tmp, "j2k_src.dcm")))
    ds.file_meta.TransferSyntaxUID = TS["j2k" if lossy else "j2k_lossless"]
    if photometric:
        ds.PhotometricInterpretation = photometric
    ds.PixelData = encapsulate([stream])
    ds["PixelData"].VR = "OB"
    ds["PixelData"].is_undefined_length = True
    if lossy:
        ds.LossyImageCompression = "01"
    ds.save_as(path, write_like_original=False)
    return path


# ------------------------------------------------------------------ checks


def check_json(ck, name, js, v):
    if "ts" in v:
        ck.eq(js.get("transfer_syntax_uid"), v["ts"], name + ": transfer_syntax_uid")
    ing = js["ingestion"]
    for k in ("voi", "inverted", "polarity_trusted", "modality_lut"):
        if k in v:
            ck.eq(ing.get(k), v[k], "%s: ingestion.%s" % (name, k))
    if "window" in v:
        ck.eq((ing.get("window_center"), ing.get("window_width")), v["window"], name + ": ingestion window")
    if "voi_function" in v:
        ck.eq(ing.get("voi_function"), v["voi_function"], name + ": ingestion.voi_function")
    if "fallback" in v:
        c, w = v["fallback"]
        tol = max(2.0, 1e-3 * w)
        ck.near(ing.get("window_center"), c, tol, name + ": fallback window centre")
        ck.near(ing.get("window_width"), w, tol, name + ": fallback window width")
    for k, want in v.get("fields", {}).items():
        got = js
        for part in k.split("."):
            got = got.get(part) if isinstance(got, dict) else None
        ck.eq(got, want, "%s: %s" % (name, k))
    warns = js.get("warnings", [])
    want = v.get("warnings", [])
    ck.check(len(warns) == len(want) and all(any(w in s for s in warns) for w in want),
             "%s: warnings %r, expected exactly %r" % (name, warns, want))


def compare_plane(ck, name, got, v, base_planes):
    ref = v["ref"]
    if not ck.check(got.shape == ref.shape, "%s: plane shape %r vs reference %r" % (name, got.shape, ref.shape)):
        return
    d = dicomref.max_abs_diff(got, ref)
    p = dicomref.psnr(got, ref)
    line = "%-26s max |diff| %3d  PSNR %6.1f dB" % (name, d, p)
    if "same_as" in v:
        other = base_planes.get(v["same_as"])
        same = other is not None and other.shape == got.shape and np.array_equal(other, got)
        line += "  identical to %s: %s" % (v["same_as"], "yes" if same else "NO")
        ck.check(same, "%s: plane differs from the %s plane (lossless transfer syntax)" % (name, v["same_as"]))
    print(line)
    if "psnr" in v:
        ck.check(p >= v["psnr"], "%s: PSNR %.1f dB below %.1f dB" % (name, p, v["psnr"]))
        if "maxdiff" in v:
            ck.check(d <= v["maxdiff"], "%s: max |diff| %d above %d" % (name, d, v["maxdiff"]))
    else:
        ck.check(d <= v.get("maxdiff", 1), "%s: max |diff| %d above %d grey level(s)" % (name, d, v.get("maxdiff", 1)))


# --------------------------------------------------------------- variants


def build_variants(tmp):
    """Returns a list of dicts: name, path, ref (uint8 plane), expectations."""
    V = []
    y = phantom()
    s12 = np.rint(200 + 3600 * y).astype(np.int64)           # stored, 12-bit MONOCHROME2
    win = dict(WindowCenter="2000", WindowWidth="3800")

    def add(name, ds_or_path, ref, **exp):
        path = ds_or_path if isinstance(ds_or_path, str) else save(ds_or_path, os.path.join(tmp, name + ".dcm"))
        V.append(dict(name=name, path=path, ref=ref, **exp))

    # --- transfer syntaxes of one 12-bit image
    base = make_ds(s12.astype(np.uint16), **win)
    ref12, info = dicomref.render_gray(base, s12)
    assert info["voi"] == "window"
    base_path = save(base, os.path.join(tmp, "explicit_le.dcm"))
    # the reference's stored values are pydicom's for this clean file
    assert np.array_equal(pydicom.dcmread(base_path).pixel_array, s12)
    common = dict(voi="window", inverted=False, window=WINDOW, voi_function="LINEAR", polarity_trusted="header")
    add("explicit_le", base_path, ref12, ts=TS["explicit"], **common)

    def conv(name, tool_args, ts, src=base_path, **exp):
        out = os.path.join(tmp, name + ".dcm")
        run(tool_args + [src, out])
        e = dict(common, **exp)
        add(name, out, e.pop("ref", ref12), ts=ts, **e)

    conv("implicit_le", ["dcmconv", "+ti"], TS["implicit"], same_as="explicit_le")
    conv("explicit_be", ["dcmconv", "+tb"], TS["big"], same_as="explicit_le")
    conv("deflated", ["dcmconv", "+td"], TS["deflated"], same_as="explicit_le")
    conv("no_meta_header", ["dcmconv", "-F", "+ti"], TS["implicit"], same_as="explicit_le",
         fields={"transfer_syntax": "Little Endian Implicit (no meta header)"})
    conv("rle", ["dcmcrle"], TS["rle"], same_as="explicit_le")
    conv("jpeg_lossless_sv1", ["dcmcjpeg", "+e1"], TS["jpeg_sv1"], same_as="explicit_le")
    conv("jpegls_lossless", ["dcmcjpls", "+el"], TS["jpegls"], same_as="explicit_le")
    conv("jpegls_near2", ["dcmcjpls", "+en", "+md", "2"], TS["jpegls_near"], psnr=40.0, maxdiff=1)
    # dcmcjpeg's lossy encoder shifts the stored values by their minimum and
    # moves the window with them: the display is unchanged, the header window
    # is the one the encoder wrote (read back here with pydicom)
    conv("jpeg_extended_12", ["dcmcjpeg", "+ee", "+q", "90"], TS["jpeg_extended"], psnr=40.0)
    jx = pydicom.dcmread(V[-1]["path"], stop_before_pixels=True)
    V[-1]["window"] = (float(jx.WindowCenter), float(jx.WindowWidth))
    add("j2k_lossless", j2k_file(base, s12, os.path.join(tmp, "j2k_lossless.dcm"), tmp, False), ref12,
        ts=TS["j2k_lossless"], same_as="explicit_le", **common)
    add("j2k_lossy", j2k_file(base, s12, os.path.join(tmp, "j2k_lossy.dcm"), tmp, True), ref12,
        ts=TS["j2k"], psnr=40.0, **common)

    # --- 8 bits: identity VOI, JPEG baseline. The values span 0..255: with
    # no window to compensate, dcmcjpeg's lossy encoder would otherwise shift
    # them down by their minimum and change the picture.
    s8 = np.rint(255 * (y - y.min()) / (y.max() - y.min())).astype(np.int64)
    base8 = make_ds(s8.astype(np.uint8), bits_stored=8)
    ref8, info = dicomref.render_gray(base8, s8)
    assert info["voi"] == "identity" and np.array_equal(ref8, s8)
    add("gray8_identity", base8, ref8, ts=TS["explicit"], voi="identity", inverted=False)
    p8 = save(base8, os.path.join(tmp, "gray8_src.dcm"))
    conv("jpeg_baseline_8", ["dcmcjpeg", "+eb", "+q", "90"], TS["jpeg_baseline"], src=p8, ref=ref8,
         psnr=35.0, voi="identity", window=(None, None), voi_function=None)

    # --- Bits Stored / High Bit
    rng = np.random.default_rng(99)
    junk = rng.integers(0, 16, size=s12.shape)
    add("bs12_hb11_junk_high", make_ds((s12 | (junk << 12)).astype(np.uint16), **win), ref12,
        same_as="explicit_le", **common)
    add("bs12_hb15_junk_low", make_ds(((s12 << 4) | junk).astype(np.uint16), high_bit=15, **win), ref12,
        same_as="explicit_le", **common)

    # --- signed pixels with rescale
    ss = np.rint(-1800 + 3600 * y).astype(np.int64)
    sattr = dict(RescaleSlope="2", RescaleIntercept="100", RescaleType="US", WindowCenter="100",
                 WindowWidth="7400")
    sds = make_ds((ss & 0xFFFF).astype(np.uint16), pixel_rep=1, **sattr)
    sref, info = dicomref.render_gray(sds, ss)
    assert np.array_equal(dicomref.native_stored(sds), ss)
    add("signed_rescale", sds, sref, voi="window", modality_lut="rescale", window=(100.0, 7400.0), inverted=False)
    add("j2k_signed_lossless", j2k_file(sds, ss, os.path.join(tmp, "j2k_signed.dcm"), tmp, False), sref,
        ts=TS["j2k_lossless"], same_as="signed_rescale", voi="window", modality_lut="rescale")
    uds = make_ds((ss & 0x0FFF).astype(np.uint16), pixel_rep=1, **sattr)
    assert np.array_equal(dicomref.native_stored(uds), ss)
    add("signed_not_extended", uds, sref, same_as="signed_rescale", voi="window", modality_lut="rescale")

    # --- Modality LUT Sequence (first mapped 150, 3800 entries, 16-bit)
    def mlut_item():
        it = Dataset()
        n, first = 3800, 150
        it.LUTDescriptor = [n, first, 16]
        it["LUTDescriptor"].VR = "US"
        it.ModalityLUTType = "US"
        it.LUTData = [int(round(65535 * (i / (n - 1)) ** 0.7)) for i in range(n)]
        it["LUTData"].VR = "US"
        return it
    mds = make_ds(s12.astype(np.uint16), WindowCenter="36000", WindowWidth="60000")
    mds.ModalityLUTSequence = Sequence([mlut_item()])
    mref, info = dicomref.render_gray(mds, s12)
    assert info["modality_lut"] == "lut-sequence" and info["voi"] == "window"
    add("modality_lut_seq", mds, mref, voi="window", modality_lut="lut-sequence", window=(36000.0, 60000.0))
    mds2 = make_ds(s12.astype(np.uint16))
    mds2.ModalityLUTSequence = Sequence([mlut_item()])
    mref2, info = dicomref.render_gray(mds2, s12)
    assert info["voi"] == "fallback-percentile"
    add("modality_lut_fallback", mds2, mref2, voi="fallback-percentile", modality_lut="lut-sequence",
        fallback=(info["window_center"], info["window_width"]), voi_function="LINEAR_EXACT",
        warnings=["no VOI information"])

    # --- VOI LUT Sequence
    def vlut_item(n, first, bits, fn, vr):
        it = Dataset()
        it.LUTDescriptor = [n, first, bits]
        it["LUTDescriptor"].VR = "US"
        data = [int(round(fn(i / (n - 1)) * ((1 << bits) - 1))) for i in range(n)]
        if vr == "OW":
            it.LUTData = np.asarray(data, dtype="<u2").tobytes()
        else:
            it.LUTData = data
        it["LUTData"].VR = vr
        it.LUTExplanation = "synthetic"
        return it
    vds = make_ds(s12.astype(np.uint16), **win)  # LUT present with a window: LUT preferred
    vds.VOILUTSequence = Sequence([vlut_item(4096, 0, 12, lambda t: 1 / (1 + np.exp(-6 * (t - 0.5))), "US")])
    vref, info = dicomref.render_gray(vds, s12)
    assert info["voi"] == "lut-sequence"
    add("voi_lut_seq_12bit", vds, vref, voi="lut-sequence", inverted=False)
    vds2 = make_ds(s12.astype(np.uint16))
    vds2.VOILUTSequence = Sequence([vlut_item(2048, 1000, 16, lambda t: t ** 0.8, "OW")])
    vref2, info = dicomref.render_gray(vds2, s12)
    add("voi_lut_seq_16bit_first", vds2, vref2, voi="lut-sequence", inverted=False)

    # --- VOI LUT functions, several windows
    # (the narrow windows are where LINEAR's c - 0.5 and w - 1 show)
    for fn, c, w in (("LINEAR_EXACT", 2000, 3000), ("SIGMOID", 2000, 2500), ("LINEAR", 1000, 4),
                     ("LINEAR_EXACT", 1000, 4), ("LINEAR", 1200.5, 7)):
        ds = make_ds(s12.astype(np.uint16), WindowCenter="%g" % c, WindowWidth="%g" % w, VOILUTFunction=fn)
        r, info = dicomref.render_gray(ds, s12)
        add("window_%s_%g" % (fn.lower(), w), ds, r, voi="window", window=(float(c), float(w)), voi_function=fn)
    ds = make_ds(s12.astype(np.uint16), WindowCenter=["2000", "1000", "3000"], WindowWidth=["3800", "500", "1000"],
                 WindowCenterWidthExplanation=["FULL", "SOFT", "BONE"])
    r, info = dicomref.render_gray(ds, s12)
    add("three_windows", ds, r, same_as="explicit_le", voi="window", window=WINDOW,
        fields={"window_count": 3, "window_center": 2000, "window_width": 3800})

    # --- MONOCHROME1, fallback window, content check of polarity
    s1 = np.rint(3800 - 3600 * y).astype(np.int64)
    ds = make_ds(s1.astype(np.uint16), photometric="MONOCHROME1", **win)
    r, info = dicomref.render_gray(ds, s1)
    assert info["inverted"]
    add("monochrome1", ds, r, voi="window", inverted=True, polarity_trusted="header")
    ds = make_ds(s12.astype(np.uint16))
    r, info = dicomref.render_gray(ds, s12)
    add("no_voi_fallback", ds, r, voi="fallback-percentile", modality_lut="none",
        fallback=(info["window_center"], info["window_width"]), warnings=["no VOI information"])
    # negative Rescale Slope + MONOCHROME1: a decreasing Modality LUT over
    # ~40,000 distinct 16-bit values (the fallback's sort once went quadratic)
    s16 = np.rint(1000 + 60000 * y).astype(np.int64)
    ds = make_ds(s16.astype(np.uint16), photometric="MONOCHROME1", bits_stored=16, RescaleSlope="-1",
                 RescaleIntercept="65535")
    r, info = dicomref.render_gray(ds, s16)
    add("negative_slope_mono1_16", ds, r, voi="fallback-percentile", modality_lut="rescale", inverted=True,
        polarity_trusted="header", fallback=(info["window_center"], info["window_width"]),
        warnings=["no VOI information"])
    fake = make_ds(s12.astype(np.uint16), photometric="MONOCHROME1", **win)
    fref, _ = dicomref.render_gray(fake, s12)  # what the header asks for: an inverted chest
    assert dicomref.polarity_score(fref) < -0.15 and dicomref.polarity_score(ref12) > 0.15
    add("fake_monochrome1", fake, ref12, voi="window", inverted=False, polarity_trusted="pixels",
        warnings=["trusted the pixels"])
    V.append(dict(name="fake_monochrome1_trust_header", path=V[-1]["path"], ref=fref, args=["--trust-header"],
                  voi="window", inverted=True, polarity_trusted="header", warnings=["header trusted"]))

    # --- colour secondary captures
    g = np.rint(10 + 235 * y)
    rgb = np.stack([np.clip(g * 1.00 + 12, 0, 255), np.clip(g * 0.85, 0, 255),
                    np.clip(g * 0.60 + 40 * (1 - y), 0, 255)], axis=-1).astype(np.uint8)
    lum = dicomref.luminance_pillow(rgb)
    sc = dict(sop_class=SC, bits_stored=8, spp=3, ConversionType="WSD")
    add("rgb_interleaved", make_ds(rgb, photometric="RGB", **sc), lum, voi="identity", inverted=False)
    add("rgb_planar", make_ds(rgb, photometric="RGB", planar=1, **sc), lum, same_as="rgb_interleaved",
        voi="identity")
    add("j2k_rgb_rct_lossless", j2k_file(make_ds(rgb, photometric="RGB", **sc), rgb,
                                         os.path.join(tmp, "j2k_rgb_rct.dcm"), tmp, False, "YBR_RCT"),
        lum, ts=TS["j2k_lossless"], same_as="rgb_interleaved", voi="identity")
    add("j2k_rgb_ict_lossy", j2k_file(make_ds(rgb, photometric="RGB", **sc), rgb,
                                      os.path.join(tmp, "j2k_rgb_ict.dcm"), tmp, True, "YBR_ICT"),
        lum, ts=TS["j2k"], psnr=40.0, voi="identity")
    ybr = convert_color_space(rgb.copy(), "RGB", "YBR_FULL").astype(np.uint8)
    add("ybr_full", make_ds(ybr, photometric="YBR_FULL", **sc), lum, voi="identity",
        fields={"photometric": "YBR_FULL"})

    # --- multi-frame: frame 1 is the base image, frames 2-3 differ
    frames = np.stack([s12, 4095 - s12, np.full_like(s12, 2000)]).astype(np.uint16)
    add("multiframe_3", make_ds(frames, frames=3, **win), ref12, same_as="explicit_le", voi="window",
        warnings=["multi-frame"], fields={"frames": 3})

    # --- clinical plausibility checks
    strict_cases = [
        ("lateral_ll", dict(view="LL"), ["lateral view"], "lateral-view"),
        ("not_chest_knee", dict(body="KNEE"), ["not a chest radiograph"], "not-chest"),
        ("not_chest_mg", dict(modality="MG", body="BREAST"), ["not a chest radiograph"], "not-chest"),
    ]
    for name, kw, warns, err in strict_cases:
        ds = make_ds(s12.astype(np.uint16), **dict(win, **kw))
        add(name, ds, ref12, same_as="explicit_le", voi="window", warnings=warns, strict_error=err)
    ys = phantom(200, 176, 4343)
    ss8 = np.rint(200 + 3600 * ys).astype(np.int64)
    ds = make_ds(ss8.astype(np.uint16), **win)
    r, _ = dicomref.render_gray(ds, ss8)
    add("small_200x176", ds, r, voi="window", warnings=["small image"], strict_error="too-small")
    tiny = np.rint(200 + 3600 * phantom(24, 24, 1)).astype(np.uint16)
    add("tiny_24x24", make_ds(tiny, **win), None, error="too-small")
    # and --strict accepts the plain frontal chest
    V.append(dict(name="explicit_le_strict", path=base_path, ref=ref12, args=["--strict"],
                  same_as="explicit_le", **common))
    return V


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    args = ap.parse_args()
    missing = [t for t in ("dcmconv", "dcmcrle", "dcmcjpeg", "dcmcjpls", "opj_compress") if not shutil.which(t)]
    if missing:
        print("FAIL: tools missing: %s (DCMTK and OpenJPEG command-line tools are build prerequisites)"
              % ", ".join(missing))
        return 1
    ck = dicomref.Checker()
    planes = {}
    with tempfile.TemporaryDirectory() as tmp:
        variants = build_variants(tmp)
        print("%d variants generated" % len(variants))
        for v in variants:
            name = v["name"]
            png = os.path.join(tmp, name + ".png")
            rc, js, err = dicomref.inspect(args.cxrvqa, v["path"], "--png", png, *v.get("args", []))
            if "error" in v:
                ck.check(rc == 1 and js is not None and js.get("error") == v["error"],
                         "%s: expected exit 1 with error %r, got exit %d, %r" % (name, v["error"], rc, js))
                print("%-26s refused: %s" % (name, js.get("message") if js else err.strip()))
                continue
            if not ck.check(rc == 0 and js is not None, "%s: inspect exit %d: %s" % (name, rc, err.strip())):
                continue
            check_json(ck, name, js, v)
            got = dicomref.read_png(png)
            planes.setdefault(name, got)
            compare_plane(ck, name, got, v, planes)
            if "strict_error" in v:
                rc, js, err = dicomref.inspect(args.cxrvqa, v["path"], "--strict")
                ck.check(rc == 1 and js is not None and js.get("error") == v["strict_error"],
                         "%s --strict: expected exit 1 with error %r, got exit %d, %r"
                         % (name, v["strict_error"], rc, js))
    return ck.finish("variants")


if __name__ == "__main__":
    sys.exit(main())
