#!/usr/bin/python3
"""domain_fit.py — the image-domain density check of a CNN-tower model
(model/FORMAT.md, "Image-domain density check"): a Gaussian fitted to the
pooled image features (the 256-d global average of the last stage, before
the LayerNorm) of the training images, with a shrinkage covariance, stored
as d.feat_mean and d.feat_prec (its inverse). The C engine computes, for
every image it embeds, the squared Mahalanobis distance to it.

Limits, from the val split only (never from the images they are meant to
catch):  warn   = the 99.5th percentile of val distances;
         refuse = 1.5 x the largest val distance.
Shrinkage: C_s = (1 - LAMBDA) C + LAMBDA tr(C)/d I.

The block is added to an existing model file (every other key and tensor is
copied unchanged); the output must differ from the input path.

    /usr/bin/python3 model/tools/domain_fit.py --model IN.gguf --out OUT.gguf [--data ../shared/data/cxr]
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import sys  # noqa: E402

import numpy as np  # noqa: E402

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
import cnn_forward  # noqa: E402
import gguf  # noqa: E402
import prepare_data  # noqa: E402

LAMBDA = 0.1
WARN_PERCENTILE = 99.5
REFUSE_FACTOR = 1.5
RULE = ("squared Mahalanobis distance of the pooled image features to a Gaussian fitted on the train split "
        "(shrinkage %.2f); warn above the 99.5th percentile of val distances, refuse above %.1f x their maximum"
        % (LAMBDA, REFUSE_FACTOR))


def mahalanobis2(X, mu, P):
    D = X - mu
    return np.einsum("ij,jk,ik->i", D, P, D)


def fit(X):
    mu = X.mean(0)
    C = np.cov(X - mu, rowvar=False)
    d = C.shape[0]
    Cs = (1 - LAMBDA) * C + LAMBDA * np.trace(C) / d * np.eye(d)
    return mu, np.linalg.inv(Cs)


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
    Xtr = np.concatenate([net.pooled(normalised(m, u8[s:s + 2048]))
                          for s in range(0, len(tr), 2048)])[:len(tr)]
    Xva = net.pooled(normalised(m, u8[len(tr):]))
    mu, P = fit(Xtr)
    dv = mahalanobis2(Xva, mu, P)
    warn = float(np.percentile(dv, WARN_PERCENTILE))
    refuse = float(REFUSE_FACTOR * dv.max())
    print("domain: %d train, %d val; val distance median %.1f, 99.5%% %.1f, max %.1f -> warn %.1f, refuse %.1f"
          % (len(tr), len(va), np.median(dv), warn, dv.max(), warn, refuse))

    g = gguf.read(a.model)
    w = gguf.Writer(g.alignment)
    for k, v in g.kv.items():
        if k == "general.alignment" or k.startswith("cxr.domain.maha"):
            continue
        w.add(k, v.type, v.value, getattr(v, "elem_type", None))
    for name in g.tensor_order:
        if name.startswith("d.feat_"):
            continue
        t = g.tensors[name]
        w.add_tensor(name, t.array(np.float32) if t.type == gguf.F32 else t.array(np.float16), t.type)
    w.add_tensor("d.feat_mean", mu.astype(np.float32))
    w.add_tensor("d.feat_prec", P.astype(np.float32))
    w.add_f32("cxr.domain.maha_warn", warn)
    w.add_f32("cxr.domain.maha_refuse", refuse)
    w.add_str("cxr.domain.maha_rule", RULE)
    w.write(a.out)
    print("wrote %s" % a.out)


if __name__ == "__main__":
    main()
