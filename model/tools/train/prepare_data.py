#!/usr/bin/python3
"""prepare_data.py — reads ../shared/data/cxr (labels.csv + images) and builds
the uint8 image cache the training run works from, and owns the label table; it
knows nothing of models. The preprocessing is model/tools/convert/preprocess.py,
the one Python copy of what the C engine does (dicom/preprocess.c, held to it by
tests/dicom/test_preprocess_ref.py); preprocess_float and normalise are re-exported here.

Preprocessing (what `cxr.preproc.*` in the model file will say):
  decode with Pillow, convert("L") (for 8-bit RGB this is Pillow's fixed-point
  luminance, which dicom/pixel.c reproduces); PAD: long side to S with C's
  lround, offsets (S - new) // 2, pad value 0; resize in Pillow mode "F" with
  the antialiasing filter (BICUBIC / BILINEAR / BOX); then (v*scale - mean)/std.
The cache stores the resized, padded plane rounded to uint8 (an error of at
most 0.5 grey level, far below the augmentation noise); evaluation and
calibration use the float plane (`preprocess_float`), exactly the engine's.

Images are never copied into the repository: the cache lives under
--cache-dir (default /tmp/cxrvqa-train-cache), keyed by labels.csv's SHA-256,
the size and the interpolation.

    /usr/bin/python3 model/tools/train/prepare_data.py --data ../shared/data/cxr --size 160
"""
import argparse
import csv
import hashlib
import json
import multiprocessing
import os
import sys
import time

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (preprocess)
import prompts  # noqa: E402
from preprocess import FILTERS, normalise, preprocess_float  # noqa: E402,F401  (the one preprocessing reference)

DEFAULT_CACHE = "/tmp/cxrvqa-train-cache"
DATASETS = ["covidrad224", "kermany224", "nih384", "nih64"]


def load_plane(path):
    """8-bit grey plane as the engine ingests a PNG/8-bit image."""
    with Image.open(path) as im:
        if im.mode != "L":
            im = im.convert("L")
        return np.asarray(im, dtype=np.uint8).copy()


# ------------------------------------------------------------------ labels

def read_labels(data_dir):
    """Rows of labels.csv with parsed labels: row["y"] = {finding name: 1/0/None}."""
    path = os.path.join(data_dir, "labels.csv")
    with open(path, newline="") as f:
        rows = list(csv.DictReader(f))
    for r in rows:
        r["y"] = {n: (None if r[c] == "" else int(r[c])) for n, c in zip(prompts.NAMES, prompts.LABEL_COLUMNS)}
    return rows


def label_matrix(rows):
    """(N, F) float32: 1, 0, or NaN for unknown, in prompts.NAMES order."""
    return np.array([[np.nan if r["y"][n] is None else r["y"][n] for n in prompts.NAMES] for r in rows],
                    dtype=np.float32)


def sha256_file(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for b in iter(lambda: f.read(1 << 20), b""):
            h.update(b)
    return h.hexdigest()


# ------------------------------------------------------------------- cache

def _work(args):
    path, size, interp = args
    c = preprocess_float(load_plane(path), size, interp)
    return np.clip(np.rint(c), 0, 255).astype(np.uint8)


def build_cache(data_dir, rows, size, interp="bicubic", cache_dir=DEFAULT_CACHE, tag="all", workers=2, log=print):
    """uint8 (N, size, size) array for rows, from the cache when it exists."""
    key = hashlib.sha256(("%s|%d|%s|%s|%s" % (sha256_file(os.path.join(data_dir, "labels.csv")), size, interp,
                                               tag, "\n".join(r["path"] for r in rows))).encode()).hexdigest()[:16]
    os.makedirs(cache_dir, exist_ok=True)
    fn = os.path.join(cache_dir, "cxr_%s_%d_%s_%s.npy" % (tag, size, interp, key))
    if os.path.exists(fn):
        a = np.load(fn)
        if a.shape == (len(rows), size, size):
            log("cache: %s (%d images, reused)" % (fn, len(rows)))
            return a
    t0 = time.time()
    jobs = [(os.path.join(data_dir, r["path"]), size, interp) for r in rows]
    if workers > 1:
        with multiprocessing.Pool(workers) as pool:
            planes = pool.map(_work, jobs, chunksize=64)
    else:
        planes = [_work(j) for j in jobs]
    a = np.stack(planes)
    tmp = fn + ".part.npy"
    np.save(tmp, a)
    os.replace(tmp, fn)
    log("cache: %s (%d images, %.1f MB, built in %.1f s)" % (fn, len(rows), a.nbytes / 1e6, time.time() - t0))
    return a


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "cxr"))
    ap.add_argument("--size", type=int, default=160)
    ap.add_argument("--interp", default="bicubic", choices=sorted(FILTERS))
    ap.add_argument("--cache-dir", default=DEFAULT_CACHE)
    a = ap.parse_args(argv)
    rows = read_labels(a.data)
    build_cache(a.data, rows, a.size, a.interp, a.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
