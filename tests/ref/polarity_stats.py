#!/usr/bin/python3
"""polarity_stats.py — distribution of the chest polarity score over
correctly displayed radiographs of ../shared/data/cxr, the evidence behind
POLARITY_FLIP_BELOW / POLARITY_WARN_BELOW in dicom/ingest.c. Not a test.

The score is dicomref.polarity_score, the formula of pixel_polarity_score in
dicom/pixel.c (test_shared_dicom.py checks the two agree to 1e-9 on every
real file it ingests). An inverted image scores exactly the negative of its
score (the border trimming is symmetric under inversion), so the inverted
distribution is the mirror image of the one printed.

Usage: /usr/bin/python3 tests/ref/polarity_stats.py [--data ../shared/data]
           [--n 6000] [--seed 1] [--all] [--list-below -0.15]
"""
import argparse
import csv
import os
import random
import sys
import time

import numpy as np
from PIL import Image

sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import dicomref  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
FLIP_BELOW, WARN_BELOW = -0.15, 0.0   # as in dicom/ingest.c
PCTS = (0.1, 0.5, 1, 5, 25, 50, 75, 95, 99)


def summary(label, s):
    s = np.asarray(s)
    if s.size == 0:
        return
    q = np.percentile(s, PCTS)
    print("%-12s n=%5d  mean %.3f  " % (label, s.size, s.mean()) +
          "  ".join("p%g %.3f" % (p, v) for p, v in zip(PCTS, q)) +
          "  | < %.2f: %d (%.2f%%)  < %.2f: %d (%.2f%%)  min %.3f" % (
              FLIP_BELOW, (s < FLIP_BELOW).sum(), 100.0 * (s < FLIP_BELOW).mean(),
              WARN_BELOW, (s < WARN_BELOW).sum(), 100.0 * (s < WARN_BELOW).mean(), s.min()))


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--data", default=os.path.join(HERE, "..", "..", "..", "shared", "data"))
    ap.add_argument("--n", type=int, default=6000, help="images sampled (default 6000)")
    ap.add_argument("--seed", type=int, default=1)
    ap.add_argument("--all", action="store_true", help="score every image")
    ap.add_argument("--list-below", type=float, default=FLIP_BELOW,
                    help="print the images scoring below this (default %(default)s)")
    args = ap.parse_args()
    labels = os.path.join(args.data, "cxr", "labels.csv")
    if not os.path.exists(labels):
        print("SKIP: %s absent" % labels)
        return 77
    with open(labels, newline="") as f:
        rows = list(csv.DictReader(f))
    if not args.all and args.n < len(rows):
        rows = random.Random(args.seed).sample(rows, args.n)
    t0 = time.time()
    scores, by_ds, low = [], {}, []
    for r in rows:
        px = np.asarray(Image.open(os.path.join(args.data, "cxr", r["path"])).convert("L"))
        s = dicomref.polarity_score(px)
        scores.append(s)
        by_ds.setdefault(r["dataset"], []).append(s)
        if s < args.list_below:
            low.append((s, r["path"]))
    print("polarity score of %d correctly displayed images (%s, seed %d), %.1f s"
          % (len(scores), "all" if args.all else "sample", args.seed, time.time() - t0))
    for name in sorted(by_ds):
        summary(name, by_ds[name])
    summary("all", scores)
    summary("inverted", -np.asarray(scores))
    for s, p in sorted(low):
        print("below %.2f: %.3f %s" % (args.list_below, s, p))
    return 0


if __name__ == "__main__":
    sys.exit(main())
