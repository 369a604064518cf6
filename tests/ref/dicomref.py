"""dicomref.py — the independent Python reference for the DICOM display
pipeline, shared by the ingestion tests (test_golden.py, test_variants.py,
test_shared_dicom.py) and by sample_data/generate.py.

It is written from the standard and from pydicom, never from dicom/pixel.c:
stored values are extracted from the raw words here (shift by High Bit, mask
to Bits Stored, sign-extend), then pydicom's apply_modality_lut and
apply_voi_lut / apply_windowing do the Modality and VOI stages (PS3.3 C.11.1,
C.11.2), normalised to [0,1] by the output range pydicom documents; the only
stage written by hand is the fallback window that cxr_dicom.h documents for
images without VOI information (0.5th-99.5th nearest-rank percentile of the
modality values, the lowest and highest distinct values excluded). Then
MONOCHROME1 is inverted and the result scaled to 0..255 (round half up).

pydicom's own pixel_array is not used for stored values because pydicom 2.3
does not mask unused high bits nor sign-extend a signed value whose upper
bits are zero (pydicom's own mlut_18.dcm shows it).

Run with /usr/bin/python3 (Debian's pydicom 2.3, numpy, Pillow).
"""
import json
import math
import subprocess
import warnings

import numpy as np
from PIL import Image
from pydicom.pixel_data_handlers.util import apply_modality_lut, apply_voi, apply_windowing

# ------------------------------------------------------------ stored values


def stored_values(raw, bits_stored, high_bit, pixel_rep):
    """raw unsigned words -> stored values (int64), PS3.5 8.1.1 / PS3.3 C.7.6.3."""
    raw = np.asarray(raw).astype(np.int64)
    v = (raw >> (high_bit + 1 - bits_stored)) & ((1 << bits_stored) - 1)
    if pixel_rep:
        v = np.where(v & (1 << (bits_stored - 1)), v - (1 << bits_stored), v)
    return v


def native_raw(ds, frame=0):
    """Raw words of one frame of a native (uncompressed) data set, as a
    (rows, cols) or (rows, cols, 3) unsigned array. Honours the byte order
    pydicom read the file with and Planar Configuration."""
    ba = int(ds.BitsAllocated)
    if ba not in (8, 16):
        raise ValueError("Bits Allocated %d not handled by the reference" % ba)
    dt = np.dtype("u1") if ba == 8 else np.dtype("<u2" if ds.is_little_endian else ">u2")
    rows, cols = int(ds.Rows), int(ds.Columns)
    spp = int(ds.get("SamplesPerPixel", 1))
    n = rows * cols * spp
    a = np.frombuffer(ds.PixelData, dtype=dt, count=n * (frame + 1))[n * frame:]
    if spp == 1:
        return a.reshape(rows, cols)
    if int(ds.get("PlanarConfiguration", 0)) == 1:
        return a.reshape(spp, rows, cols).transpose(1, 2, 0)
    return a.reshape(rows, cols, spp)


def native_stored(ds, frame=0):
    return stored_values(native_raw(ds, frame), int(ds.BitsStored), int(ds.HighBit),
                         int(ds.get("PixelRepresentation", 0)))


# ---------------------------------------------------------------- VOI stages


def fallback_window(modality_values):
    """(centre, width) of the fallback window: nearest-rank 0.5th and 99.5th
    percentiles of the modality values after dropping the lowest and highest
    distinct value (when more than two distinct values exist)."""
    u, cnt = np.unique(np.asarray(modality_values, dtype=np.float64), return_counts=True)
    if len(u) > 2:
        u, cnt = u[1:-1], cnt[1:-1]
    cum = np.cumsum(cnt)
    n = cum[-1]
    lo = u[min(int(np.searchsorted(cum, 0.005 * n, side="right")), len(u) - 1)]
    hi = u[min(int(np.searchsorted(cum, 0.995 * n, side="left")), len(u) - 1)]
    if hi <= lo:
        hi = lo + 1
    return (lo + hi) / 2.0, hi - lo


def linear_exact(x, c, w):
    """PS3.3 C.11.2.1.3.2 LINEAR_EXACT to [0,1]."""
    x = np.asarray(x, dtype=np.float64)
    y = (x - c) / w + 0.5
    y = np.where(x <= c - w / 2, 0.0, y)
    return np.where(x > c + w / 2, 1.0, y)


def windowing_range(ds):
    """The output range pydicom's apply_windowing maps onto (its docstring):
    the Modality LUT's range, else the stored range, rescaled."""
    if ds.get("ModalityLUTSequence"):
        bits = int(ds.ModalityLUTSequence[0].LUTDescriptor[2])
        return 0.0, float(2 ** bits - 1)
    bs = int(ds.BitsStored)
    if int(ds.get("PixelRepresentation", 0)) == 0:
        lo, hi = 0.0, float(2 ** bs - 1)
    else:
        lo, hi = float(-2 ** (bs - 1)), float(2 ** (bs - 1) - 1)
    if "RescaleSlope" in ds and "RescaleIntercept" in ds:
        s, b = float(ds.RescaleSlope), float(ds.RescaleIntercept)
        lo, hi = lo * s + b, hi * s + b
    return lo, hi


def modality_applied(ds):
    if ds.get("ModalityLUTSequence"):
        return "lut-sequence"
    if "RescaleSlope" in ds and "RescaleIntercept" in ds and \
            (float(ds.RescaleSlope) != 1.0 or float(ds.RescaleIntercept) != 0.0):
        return "rescale"
    return "none"


def to8(y):
    """[0,1] -> 0..255, round half up, NaN and <= 0 to 0."""
    y = np.nan_to_num(np.asarray(y, dtype=np.float64), nan=0.0)
    return np.floor(np.clip(y, 0.0, 1.0) * 255.0 + 0.5).astype(np.uint8)


def render_gray(ds, stored):
    """Reference display plane (uint8) of a monochrome frame of stored
    values, with a dict saying what was applied."""
    info = {"modality_lut": modality_applied(ds)}
    stored = np.asarray(stored, dtype=np.int64)
    with warnings.catch_warnings():
        warnings.simplefilter("ignore")
        m = apply_modality_lut(stored, ds)
        has_vlut = bool(ds.get("VOILUTSequence"))
        has_win = "WindowCenter" in ds and "WindowWidth" in ds
        if has_vlut:
            item = ds.VOILUTSequence[0]
            bits = int(item.LUTDescriptor[2])
            y = apply_voi(np.asarray(m), ds, 0).astype(np.float64) / (2 ** bits - 1)
            info["voi"] = "lut-sequence"
        elif has_win:
            lo, hi = windowing_range(ds)
            y = (apply_windowing(np.asarray(m, dtype=np.float64), ds, 0) - lo) / (hi - lo)
            info["voi"] = "window"
        elif int(ds.BitsStored) == 8 and int(ds.get("PixelRepresentation", 0)) == 0 and \
                info["modality_lut"] == "none":
            y = np.asarray(m, dtype=np.float64) / 255.0
            info["voi"] = "identity"
        else:
            c, w = fallback_window(m)
            y = linear_exact(m, c, w)
            info.update(voi="fallback-percentile", window_center=c, window_width=w)
    inverted = str(ds.PhotometricInterpretation) == "MONOCHROME1"
    if inverted:
        y = 1.0 - y
    info["inverted"] = inverted
    return to8(y), info


def luminance_pillow(rgb):
    """ITU-R 601 luminance of an 8-bit RGB array by Pillow's "L" conversion."""
    return np.asarray(Image.fromarray(np.ascontiguousarray(rgb, dtype=np.uint8), "RGB").convert("L"))


# ------------------------------------------------------------------ polarity


def polarity_score(px):
    """Chest polarity score of a displayed uint8 plane: the formula of
    cxr_dicom's pixel_polarity_score (documented in dicom/pixel.h), i.e. the
    mean of mediastinum, spine and upper abdomen minus the mean of the lateral
    lung fields, placed after rows/columns with a range under 16 levels are
    trimmed from each side."""
    px = np.asarray(px, dtype=np.uint8)
    rows, cols = px.shape
    rng_r = px.max(axis=1).astype(int) - px.min(axis=1)
    rng_c = px.max(axis=0).astype(int) - px.min(axis=0)
    r0, r1, c0, c1 = 0, rows, 0, cols
    while r0 < r1 and rng_r[r0] < 16:
        r0 += 1
    while r1 > r0 and rng_r[r1 - 1] < 16:
        r1 -= 1
    while c0 < c1 and rng_c[c0] < 16:
        c0 += 1
    while c1 > c0 and rng_c[c1 - 1] < 16:
        c1 -= 1
    if r1 - r0 < 8 or c1 - c0 < 8:
        r0, r1, c0, c1 = 0, rows, 0, cols
    h, w = r1 - r0, c1 - c0

    def mean(x0, x1, y0, y1):
        a = px[r0 + int(y0 * h):r0 + int(y1 * h), c0 + int(x0 * w):c0 + int(x1 * w)]
        return float(a.sum(dtype=np.uint64)) / a.size / 255.0 if a.size else 0.0

    lungs = 0.5 * (mean(0.18, 0.35, 0.30, 0.70) + mean(0.65, 0.82, 0.30, 0.70))
    mediastinum = mean(0.45, 0.55, 0.30, 0.70)
    abdomen = mean(0.30, 0.70, 0.88, 1.00)
    spine = mean(0.45, 0.55, 0.10, 0.90)
    return (mediastinum + abdomen + spine) / 3.0 - lungs


# ------------------------------------------------------------------- metrics


def psnr(a, b, peak=255.0):
    d = np.asarray(a, dtype=np.float64) - np.asarray(b, dtype=np.float64)
    mse = float(np.mean(d * d))
    return math.inf if mse == 0 else 10.0 * math.log10(peak * peak / mse)


def max_abs_diff(a, b):
    return int(np.max(np.abs(np.asarray(a, dtype=np.int64) - np.asarray(b, dtype=np.int64))))


def read_png(path):
    im = Image.open(path)
    if im.mode != "L":
        raise ValueError("%s: PNG mode %s, expected L" % (path, im.mode))
    return np.asarray(im)


# ---------------------------------------------------------------- the CLI


def inspect(binary, path, *args, timeout=60):
    """Run `binary inspect --json path args...`; returns (rc, parsed JSON or
    None, stderr)."""
    p = subprocess.run([binary, "inspect", "--json", str(path)] + [str(a) for a in args],
                       stdout=subprocess.PIPE, stderr=subprocess.PIPE, timeout=timeout)
    out = p.stdout.decode("utf-8", "replace")
    try:
        js = json.loads(out) if out.strip() else None
    except ValueError:
        js = None
    return p.returncode, js, p.stderr.decode("utf-8", "replace")


class Checker:
    """Collects failures so a test reports every mismatch, not the first."""

    def __init__(self):
        self.failures = []
        self.count = 0

    def check(self, ok, what):
        self.count += 1
        if not ok:
            self.failures.append(what)
            print("FAIL: " + what)
        return ok

    def eq(self, got, want, what):
        return self.check(got == want, "%s: got %r, want %r" % (what, got, want))

    def near(self, got, want, tol, what):
        ok = got is not None and want is not None and abs(float(got) - float(want)) <= tol
        return self.check(ok, "%s: got %r, want %r (tolerance %g)" % (what, got, want, tol))

    def finish(self, name):
        if self.failures:
            print("%s: %d of %d checks failed" % (name, len(self.failures), self.count))
            return 1
        print("%s: all %d checks passed" % (name, self.count))
        return 0
