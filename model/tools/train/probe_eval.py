#!/usr/bin/python3
"""probe_eval.py — can a supervised head on the shipped image embedding do
better than the zero-shot prompt direction for one finding? An experiment,
not part of the recipe: nothing it fits is written into a model file.

For the finding (default no_finding, i.e. normal vs abnormal) it embeds the
train and val images of ../shared/data/cxr with the model file (TorchCNN,
the same float32 forward the recipe uses), then fits an L2-regularised
logistic regression on the standardised train features of five training
sets: nih384 only, nih384 + nih64, the datasets whose positives and
negatives come from one source (nih384, nih64, kermany224; covidrad224's
normals and COVID-19 positives do not), every dataset labelling the finding
with equal weight per dataset, and the same with nih384 weighted 3x. The
features are the image embedding (default) or, with --features pooled, the
256-d pooled features before the LayerNorm and projection. The
regularisation is chosen by 5-fold cross-validation on train only. It
prints, per val dataset holding both classes, the AUC (95% bootstrap CI for
nih384) of the zero-shot z and of each probe. Val is only read for the
report.

    /usr/bin/python3 model/tools/train/probe_eval.py [--model model/cxrvqa-cxr-cnn.gguf] [--finding no_finding]
                                               [--features embedding|pooled]
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
import domain_fit  # noqa: E402
import metrics  # noqa: E402
import prepare_data  # noqa: E402

LAMBDAS = (1e-4, 1e-3, 3e-3, 1e-2, 3e-2, 1e-1, 3e-1)
COLUMN = {"pleural_effusion": "effusion"}  # finding name -> labels.csv column


def fit_logistic(X, y, wt, lam):
    """Weighted L2 logistic regression (L-BFGS, float64): (w, b)."""
    import torch
    Xt, yt = torch.tensor(X), torch.tensor(y, dtype=torch.float64)
    wt = torch.tensor(wt / wt.mean())
    w = torch.zeros(X.shape[1], dtype=torch.float64, requires_grad=True)
    b = torch.zeros(1, dtype=torch.float64, requires_grad=True)
    opt = torch.optim.LBFGS([w, b], max_iter=300, line_search_fn="strong_wolfe")

    def closure():
        opt.zero_grad()
        loss = (wt * torch.nn.functional.binary_cross_entropy_with_logits(Xt @ w + b, yt, reduction="none")).mean()
        loss = loss + lam * (w * w).sum()
        loss.backward()
        return loss
    opt.step(closure)
    return w.detach().numpy(), float(b.item())


def cv_lambda(X, y, wt, seed=0):
    """(mean 5-fold CV AUC, lambda) of the best lambda, on train only."""
    idx = np.random.default_rng(seed).permutation(len(X))
    folds = np.array_split(idx, 5)
    best = None
    for lam in LAMBDAS:
        aucs = []
        for fo in folds:
            rest = np.setdiff1d(idx, fo)
            w, _ = fit_logistic(X[rest], y[rest], wt[rest], lam)
            aucs.append(metrics.auc(y[fo], X[fo] @ w))
        cv = float(np.nanmean(aucs))
        if best is None or cv > best[0]:
            best = (cv, lam)
    return best


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--model", default=os.path.join(HERE, "..", "..", "cxrvqa-cxr-cnn.gguf"))
    ap.add_argument("--finding", default="no_finding")
    ap.add_argument("--data", default=cnn_forward.DEFAULT_DATA)
    ap.add_argument("--cache-dir", default=prepare_data.DEFAULT_CACHE)
    ap.add_argument("--features", choices=("embedding", "pooled"), default="embedding")
    a = ap.parse_args()
    if not os.path.exists(os.path.join(a.data, "labels.csv")):
        print("SKIP: %s/labels.csv not found (../shared/data/cxr is needed)" % a.data)
        return 77
    m = cnn_forward.Model(a.model)
    names = list(m.k("cxr.findings.names"))
    j = names.index(a.finding)
    col = COLUMN.get(a.finding, a.finding)
    rows = prepare_data.read_labels(a.data)
    tr = [r for r in rows if r["split"] == "train"]
    va = [r for r in rows if r["split"] == "val"]
    pp = m.preproc()
    u8 = prepare_data.build_cache(a.data, tr + va, pp["size"], pp["interp"], a.cache_dir, "all", 2, print)
    net = cnn_forward.TorchCNN(m, threads=2)
    E, Pf = [], []
    for s in range(0, len(u8), 1024):
        x = domain_fit.normalised(m, u8[s:s + 1024])
        E.append(net.embed(x))
        if a.features == "pooled":
            Pf.append(net.pooled(x))
    E = np.concatenate(E)
    Fall = np.concatenate(Pf) if Pf else E
    Ftr, Fva = Fall[:len(tr)], Fall[len(tr):]
    Eva = E[len(tr):]
    # no_finding is scored as "normal": abnormal = 1 - no_finding, as in the model card's target
    sign = -1 if a.finding == "no_finding" else 1
    itr = [i for i, r in enumerate(tr) if r[col] != ""]
    iva = [i for i, r in enumerate(va) if r[col] != ""]
    lab = (lambda v: 1 - int(v)) if sign < 0 else int
    ytr = np.array([lab(tr[i][col]) for i in itr])
    yva = np.array([lab(va[i][col]) for i in iva])
    dtr = np.array([tr[i]["dataset"] for i in itr])
    dva = np.array([va[i]["dataset"] for i in iva])
    dss = [d for d in sorted(set(dva)) if len(set(yva[dva == d])) == 2]
    target = "abnormal (1 - no_finding)" if sign < 0 else a.finding

    def report(tag, s):
        cells = []
        for d in dss:
            k = dva == d
            if d == "nih384":
                au, lo, hi = metrics.bootstrap_auc(yva[k], s[k], 1000, 0)
                cells.append("%s %.3f [%.3f, %.3f]" % (d, au, lo, hi))
            else:
                cells.append("%s %.3f" % (d, metrics.auc(yva[k], s[k])))
        print("  %-44s %s" % (tag, "  ".join(cells)))

    print("%s on val, by dataset (%d val images):" % (target, len(iva)))
    report("zero-shot prompt direction (shipped)", sign * cnn_forward.zscores(m, Eva[iva])[:, j])
    every = np.ones(len(dtr), bool)
    for setname, keep, nihw in (("nih384", dtr == "nih384", 1), ("nih384+nih64", np.isin(dtr, ["nih384", "nih64"]), 1),
                                ("same-source datasets (nih384, nih64, kermany224)",
                                 np.isin(dtr, ["nih384", "nih64", "kermany224"]), 1),
                                ("all datasets, equal weight", every, 1), ("all datasets, nih384 x3", every, 3)):
        X, y, d = Ftr[itr][keep], ytr[keep], dtr[keep]
        if len(set(y)) < 2:
            continue
        mu, sd = X.mean(0), X.std(0) + 1e-9
        X = (X - mu) / sd
        wt = np.array([(nihw if x == "nih384" else 1.0) / (d == x).sum() for x in d])
        cv, lam = cv_lambda(X, y, wt)
        w, b = fit_logistic(X, y, wt, lam)
        report("%s probe on %s (train CV %.3f, lambda %g)" % (a.features, setname, cv, lam),
               ((Fva[iva] - mu) / sd) @ w + b)
    return 0


if __name__ == "__main__":
    sys.exit(main())
