#!/usr/bin/python3
"""metrics.py — the statistics of the training recipe in plain NumPy: ROC AUC
(Mann-Whitney, ties counted half), percentile bootstrap confidence intervals,
Platt scaling, operating thresholds and the uncertain band, spherical k-means.
Every rule that ends up in the model file is written here once, with the
string that describes it. No model, no files.
"""
import math

import numpy as np

THRESHOLD_RULE = "highest threshold on calibrated p with sensitivity >= 0.90 on val"
UNCERTAIN_RULE = ("uncertain when uncertain_low <= p <= uncertain_high: low = min(threshold, highest p with "
                  "sensitivity >= 0.97 on val), high = max(threshold, 90th percentile of val negatives' p) "
                  "(specificity >= 0.90 above it); findings with fewer than {min_pos} val positives: "
                  "threshold 0.5, band [0.35, 0.65], not fitted")


def auc(y, s):
    """ROC AUC of scores s for binary labels y (NaN when a class is missing)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    npos, nneg = int(y.sum()), int((~y).sum())
    if npos == 0 or nneg == 0:
        return float("nan")
    order = np.argsort(s, kind="mergesort")
    ss = s[order]
    ranks = np.empty(len(s), dtype=np.float64)
    # average ranks over ties
    i = 0
    n = len(s)
    r = np.arange(1, n + 1, dtype=np.float64)
    starts = np.r_[0, np.nonzero(np.diff(ss))[0] + 1]
    ends = np.r_[starts[1:], n]
    avg = (r[starts] + r[ends - 1]) / 2.0
    ranks[order] = np.repeat(avg, ends - starts)
    del i
    return float((ranks[y].sum() - npos * (npos + 1) / 2.0) / (npos * nneg))


def bootstrap_auc(y, s, n=1000, seed=0):
    """(auc, lo, hi): percentile 95% CI over n resamples of the images (with
    replacement; resamples missing a class are skipped)."""
    y = np.asarray(y, dtype=bool)
    s = np.asarray(s, dtype=np.float64)
    a = auc(y, s)
    if math.isnan(a):
        return a, float("nan"), float("nan")
    rng = np.random.default_rng(seed)
    vals = []
    for _ in range(n):
        i = rng.integers(0, len(y), len(y))
        v = auc(y[i], s[i])
        if not math.isnan(v):
            vals.append(v)
    lo, hi = np.percentile(vals, [2.5, 97.5])
    return a, float(lo), float(hi)


def platt_fit(z, y, iters=100):
    """a, b minimising the log loss of sigmoid(a*z + b) (Newton, tiny ridge)."""
    z = np.asarray(z, dtype=np.float64)
    y = np.asarray(y, dtype=np.float64)
    def loss(a, b):
        t = a * z + b
        return float(np.sum(np.logaddexp(0, t) - y * t) + 0.5e-6 * (a * a + b * b))

    a, b = 1.0, 0.0
    cur = loss(a, b)
    for _ in range(iters):
        p = sigmoid(a * z + b)
        g = np.array([np.sum((p - y) * z), np.sum(p - y)]) + 1e-6 * np.array([a, b])
        w = p * (1 - p)
        H = np.array([[np.sum(w * z * z), np.sum(w * z)], [np.sum(w * z), np.sum(w)]]) + 1e-6 * np.eye(2)
        step = np.linalg.solve(H, g)
        t = 1.0
        while t > 1e-6:  # backtracking: the loss must not rise
            new = loss(a - t * step[0], b - t * step[1])
            if new <= cur:
                break
            t *= 0.5
        if t <= 1e-6:
            break
        a, b, cur = a - t * step[0], b - t * step[1], new
        if np.abs(t * step).max() < 1e-10:
            break
    return float(a), float(b)


def sigmoid(x):
    return 0.5 * (1.0 + np.tanh(0.5 * np.asarray(x, dtype=np.float64)))  # no overflow


def operating_point(p, y):
    """threshold, uncertain_low, uncertain_high on calibrated p (rules above)."""
    p = np.asarray(p, dtype=np.float64)
    y = np.asarray(y, dtype=bool)
    pos = np.sort(p[y])[::-1]
    neg = np.sort(p[~y])
    thr = float(pos[max(0, math.ceil(0.90 * len(pos)) - 1)])
    low = min(thr, float(pos[max(0, math.ceil(0.97 * len(pos)) - 1)]))
    high = max(thr, float(neg[max(0, math.ceil(0.90 * len(neg)) - 1)])) if len(neg) else thr
    return thr, low, high


def spherical_kmeans(x, k, iters=30, seed=0):
    """k unit-norm centroids of the unit-norm rows of x (k-means++ start)."""
    x = np.asarray(x, dtype=np.float64)
    x = x / np.linalg.norm(x, axis=1, keepdims=True)
    rng = np.random.default_rng(seed)
    k = min(k, len(x))
    c = [x[rng.integers(len(x))]]
    d = 1 - x @ c[0]
    for _ in range(1, k):
        prob = np.maximum(d, 0) ** 2
        prob = prob / prob.sum() if prob.sum() > 0 else np.full(len(x), 1.0 / len(x))
        c.append(x[rng.choice(len(x), p=prob)])
        d = np.minimum(d, 1 - x @ c[-1])
    c = np.stack(c)
    for _ in range(iters):
        assign = np.argmax(x @ c.T, axis=1)
        new = np.zeros_like(c)
        np.add.at(new, assign, x)
        for j in range(k):
            nrm = np.linalg.norm(new[j])
            new[j] = new[j] / nrm if nrm > 0 else c[j]
        if np.allclose(new, c):
            break
        c = new
    return c
