#!/usr/bin/python3
"""preprocess.py — the one Python reference of the model-input preprocessing (what `cxr.preproc.*`
in a model file means; the C side is dicom/preprocess.c, documented in dicom/cxr_dicom.h).

Geometry, on an 8-bit (or float) grey plane, in 0..255 units:
  PAD: long side to S with C's lround, offsets (S - new) // 2, pad value 0 (before normalising);
  CROP: short side to S (lround), offsets (new - S) // 2 cropped away; STRETCH: both sides to S;
  resize in Pillow mode "F" with its antialiasing filter (BICUBIC / BILINEAR / BOX for area).
Normalisation: (v * scale - mean) / std per channel.

Imported by model/tools/train/prepare_data.py (training cache, evaluation, calibration) and by
tests/dicom/test_preprocess_ref.py (which holds the C engine to it); nothing else may carry a copy.
"""
import numpy as np
from PIL import Image

FILTERS = {"bicubic": Image.BICUBIC, "bilinear": Image.BILINEAR, "area": Image.BOX}


def lround(x):
    return int(np.floor(x + 0.5))  # C lround for x >= 0


def geometry(rows, cols, size, policy):
    """(resized height, resized width, row offset, column offset) of a rows x cols plane."""
    S = size
    if policy == "stretch":
        return S, S, 0, 0
    if policy == "pad":
        lng = max(rows, cols)
        rh = min(S, max(1, lround(rows * S / lng)))
        rw = min(S, max(1, lround(cols * S / lng)))
        return rh, rw, (S - rh) // 2, (S - rw) // 2
    sht = min(rows, cols)  # crop
    rh = max(S, lround(rows * S / sht))
    rw = max(S, lround(cols * S / sht))
    return rh, rw, -((rh - S) // 2), -((rw - S) // 2)


def preprocess_float(plane, size, interp="bicubic", policy="pad", pad_value=0.0):
    """(size, size) float64 plane in 0..255 units (before scale/mean/std), the geometry of
    dicom/preprocess.c."""
    rows, cols = plane.shape
    S = size
    rh, rw, oy, ox = geometry(rows, cols, S, policy)
    im = Image.fromarray(plane.astype(np.float32), "F").resize((rw, rh), FILTERS[interp])
    rs = np.asarray(im, dtype=np.float64)
    canvas = np.full((S, S), pad_value, dtype=np.float64)
    # place rs at (oy, ox); parts outside the canvas are cropped
    y0, x0 = max(0, oy), max(0, ox)
    y1, x1 = min(S, oy + rh), min(S, ox + rw)
    canvas[y0:y1, x0:x1] = rs[y0 - oy:y1 - oy, x0 - ox:x1 - ox]
    return canvas


def normalise(canvas, scale, mean, std):
    """One channel: float32 (v * scale - mean) / std."""
    return ((canvas * scale - mean) / std).astype(np.float32)


def tensor(plane, size, policy, interp, channels, mean, std, scale, pad_value=0.0):
    """(channels, size, size) float64 model tensor: the plane preprocessed, then normalised per
    channel in float64."""
    canvas = preprocess_float(plane, size, interp, policy, pad_value)
    out = np.empty((channels, size, size), dtype=np.float64)
    for c in range(channels):
        out[c] = (canvas * scale - mean[c]) / std[c]
    return out
