#!/usr/bin/python3
"""domain_fit.py — the image-domain checks of a CNN-tower model
(model/FORMAT.md, "Image-domain density check" and "Image-domain layout
check"), added to a written model file:

- density: a Gaussian fitted to the pooled image features (the 256-d global
  average of the last stage, before the LayerNorm) of the training images,
  stored as d.feat_mean and d.feat_prec (the inverse of its shrinkage
  covariance);
- layout: a Gaussian fitted to the coarse layout of the training images
  themselves: the content box of the normalised model input (rows and
  columns that are not all pad) averaged over an 8 x 8 grid of blocks,
  stored as d.layout_mean and d.layout_prec.

The C engine computes, for every image it embeds, the squared Mahalanobis
distance of both. Limits, from the val split only (never from the images
they are meant to catch), the same rule for each:
         warn   = the 99.5th percentile of val distances;
         refuse = 1.5 x the largest val distance.
An image is refused when either distance is above its refuse limit or both
are above their warn limits (two different views of the image agreeing);
it is warned when one is above its warn limit. The script prints how many
val images each outcome takes.
Shrinkage: C_s = (1 - LAMBDA) C + LAMBDA tr(C)/d I.

Every other key and tensor is copied unchanged; the output must differ from
the input path.

    /usr/bin/python3 model/tools/train/domain_fit.py --model IN.gguf --out OUT.gguf [--data ../shared/data/cxr]
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (gguf, ref_tokenizer, …)
import cnn_forward  # noqa: E402
import gguf  # noqa: E402
import prepare_data  # noqa: E402

LAMBDA = 0.1
WARN_PERCENTILE = 99.5
REFUSE_FACTOR = 1.5
LAYOUT_GRID = 8
RULE = ("squared Mahalanobis distance of the pooled image features to a Gaussian fitted on the train split "
        "(shrinkage %.2f); warn above the 99.5th percentile of val distances, refuse above %.1f x their maximum"
        % (LAMBDA, REFUSE_FACTOR))
LAYOUT_RULE = ("squared Mahalanobis distance of the image's %d x %d block means (content box of the normalised "
               "input) to a Gaussian fitted on the train split (shrinkage %.2f); warn above the 99.5th percentile "
               "of val distances, refuse above %.1f x their maximum; an image is refused when either check is above "
               "its refuse limit or both are above their warn limits" % (LAYOUT_GRID, LAYOUT_GRID, LAMBDA,
                                                                          REFUSE_FACTOR))


def mahalanobis2(X, mu, P):
    D = X - mu
    return np.einsum("ij,jk,ik->i", D, P, D)


def fit(X):
    mu = X.mean(0)
    C = np.cov(X - mu, rowvar=False)
    d = C.shape[0]
    Cs = (1 - LAMBDA) * C + LAMBDA * np.trace(C) / d * np.eye(d)
    return mu, np.linalg.inv(Cs)


def layout_vectors(planes, padv, G=LAYOUT_GRID):
    """(N, S, S) normalised image planes -> (N, G*G) float64: each plane cropped to its content box
    (rows and columns not entirely within 1e-4 of the pad value padv), then averaged over G x G
    blocks [floor(i n / G), ceil((i + 1) n / G)) — the engine's layout_vector (model/domain.c).
    An all-pad plane gives NaNs."""
    planes = np.asarray(planes, dtype=np.float32)
    N, S = planes.shape[0], planes.shape[1]
    tol = np.float32(1e-4 * max(1.0, abs(padv)))
    content = np.abs(planes - np.float32(padv)) > tol
    rows, cols = content.any(2), content.any(1)
    out = np.full((N, G * G), np.nan)
    ii = np.zeros((S + 1, S + 1))
    for n in range(N):
        r, c = np.flatnonzero(rows[n]), np.flatnonzero(cols[n])
        if len(r) == 0:
            continue
        r0, h, c0, w = r[0], r[-1] - r[0] + 1, c[0], c[-1] - c[0] + 1
        ii[1:, 1:] = planes[n].astype(np.float64).cumsum(0).cumsum(1)
        ya = r0 + (np.arange(G) * h) // G
        yb = r0 + ((np.arange(G) + 1) * h + G - 1) // G
        xa = c0 + (np.arange(G) * w) // G
        xb = c0 + ((np.arange(G) + 1) * w + G - 1) // G
        s = ii[yb][:, xb] - ii[ya][:, xb] - ii[yb][:, xa] + ii[ya][:, xa]
        out[n] = (s / np.outer(yb - ya, xb - xa)).ravel()
    return out


def pad_value(m):
    pp = m.preproc()
    return (0.0 - pp["mean"][0]) / pp["std"][0]


def limits(dv):
    return float(np.percentile(dv, WARN_PERCENTILE)), float(REFUSE_FACTOR * dv.max())


def normalised(m, u8):
    pp = m.preproc()
    return ((u8.astype(np.float32) * pp["scale"] - pp["mean"][0]) / pp["std"][0])[:, None]


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", required=True)
    ap.add_argument("--out", required=True)
    ap.add_argument("--data", default=cnn_forward.DEFAULT_DATA)
    ap.add_argument("--cache-dir", default=prepare_data.DEFAULT_CACHE)
    a = ap.parse_args()
    if os.path.abspath(a.model) == os.path.abspath(a.out):
        sys.exit("domain_fit: --out must differ from --model")
    m = cnn_forward.Model(a.model)
    net = cnn_forward.TorchCNN(m, threads=2)
    rows = prepare_data.read_labels(a.data)
    tr = [r for r in rows if r["split"] == "train"]
    va = [r for r in rows if r["split"] == "val"]
    pp = m.preproc()  # the training run's cache (same rows, same order: train then val)
    u8 = prepare_data.build_cache(a.data, tr + va, pp["size"], pp["interp"], a.cache_dir, "all", 2, print)
    padv = pad_value(m)

    def checks_input(chunk):
        """Pooled features and layout vectors of a chunk of the cache, normalised once for both."""
        x = normalised(m, chunk)
        return net.pooled(x), layout_vectors(x[:, 0], padv)

    parts = [checks_input(u8[s:s + 2048]) for s in range(0, len(tr), 2048)]
    Xtr = np.concatenate([p for p, _ in parts])[:len(tr)]
    Ltr = np.concatenate([l for _, l in parts])[:len(tr)]
    Xva, Lva = checks_input(u8[len(tr):])
    mu, P = fit(Xtr)
    dv = mahalanobis2(Xva, mu, P)
    warn, refuse = limits(dv)
    print("density: %d train, %d val; val distance median %.1f, 99.5%% %.1f, max %.1f -> warn %.1f, refuse %.1f"
          % (len(tr), len(va), np.median(dv), warn, dv.max(), warn, refuse))
    lmu, lP = fit(Ltr)
    lv = mahalanobis2(Lva, lmu, lP)
    lwarn, lrefuse = limits(lv)
    print("layout: %d x %d blocks; val distance median %.1f, 99.5%% %.1f, max %.1f -> warn %.1f, refuse %.1f"
          % (LAYOUT_GRID, LAYOUT_GRID, np.median(lv), lwarn, lv.max(), lwarn, lrefuse))
    refused = (dv > refuse) | (lv > lrefuse) | ((dv > warn) & (lv > lwarn))
    warned = ~refused & ((dv > warn) | (lv > lwarn))
    print("val outcome by the combined rule: %d refused, %d warned, %d answered plainly of %d"
          % (refused.sum(), warned.sum(), (~refused & ~warned).sum(), len(dv)))
    for i in np.flatnonzero(refused):
        print("  refused val image: %s (density %.1f, layout %.1f)" % (va[i]["path"], dv[i], lv[i]))

    w = gguf.copy_except(gguf.read(a.model), lambda n: n.startswith(("cxr.domain.maha", "cxr.domain.layout",
                                                                     "d.feat_", "d.layout_")))
    w.add_tensor("d.feat_mean", mu.astype(np.float32))
    w.add_tensor("d.feat_prec", P.astype(np.float32))
    w.add_f32("cxr.domain.maha_warn", warn)
    w.add_f32("cxr.domain.maha_refuse", refuse)
    w.add_str("cxr.domain.maha_rule", RULE)
    w.add_u32("cxr.domain.layout_grid", LAYOUT_GRID)
    w.add_tensor("d.layout_mean", lmu.astype(np.float32))
    w.add_tensor("d.layout_prec", lP.astype(np.float32))
    w.add_f32("cxr.domain.layout_warn", lwarn)
    w.add_f32("cxr.domain.layout_refuse", lrefuse)
    w.add_str("cxr.domain.layout_rule", LAYOUT_RULE)
    w.write(a.out)
    print("wrote %s" % a.out)


if __name__ == "__main__":
    main()
