#!/usr/bin/python3
"""cnn_forward.py — forward pass and evaluation of a cxrvqa GGUF whose image
tower is the residual CNN of model/FORMAT.md ("Convolutional image tower"),
written from FORMAT.md alone: tensor names, shapes and the math the keys
describe. The text tower is gguf_forward.py's (FORMAT's CLIP text transformer).
It is the Python stand-in for the C engine: export_gguf.py computes the
findings block and calibration with it from the written file, and the
`evaluate` command prints the figures a user of the file would get.

Two image paths, held to each other by `evaluate --check`:
  image_embedding_ref  NumPy float64, one image, im2col written out (the reference);
  TorchCNN             the same math with torch.nn.functional.conv2d in float32, batched (fast).

    /usr/bin/python3 model/tools/train/cnn_forward.py embed --model F.gguf --tensor RAW.f32 [--json]
    /usr/bin/python3 model/tools/train/cnn_forward.py embed --model F.gguf --text "no pleural effusion" [--json]
    /usr/bin/python3 model/tools/train/cnn_forward.py evaluate --model F.gguf [--data ../shared/data/cxr] [--check 4]

Zero-shot scoring (FORMAT "Findings, calibration and the image-domain check"):
  z = logit_scale * (<img, f.pos_embd[f]> - <img, f.neg_embd[f]>), p = sigmoid(calib_a * z + calib_b).
Domain: max over d.prototypes of <img, prototype>, out of domain below cxr.domain.threshold.
"""
import os
# Before numpy/torch load their thread pools: idle OpenMP threads must sleep, not spin (spinning
# threads starve OpenBLAS's and everyone else's: measured 3x slower steps on a loaded 2-core
# machine), and OpenBLAS must not add its own threads on top of torch's.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import json
import math
import sys

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (gguf, ref_tokenizer, …)
import gguf  # noqa: E402
import gguf_forward  # noqa: E402
import metrics  # noqa: E402

DEFAULT_DATA = os.path.normpath(os.path.join(HERE, "..", "..", "..", "..", "shared", "data", "cxr"))


class Model(gguf_forward.Model):
    """gguf_forward.Model plus the CNN tower's hyper-parameters."""

    def __init__(self, path):
        super().__init__(path)
        k = self.k
        if k("clip.vision.architecture", "vit") != "cnn":
            raise ValueError("%s: clip.vision.architecture is not 'cnn'" % path)
        self.widths = [int(x) for x in k("clip.vision.cnn.widths")]
        self.blocks = [int(x) for x in k("clip.vision.cnn.blocks")]
        self.cin = int(k("clip.vision.in_channels", 1))
        self.eps = float(k("clip.vision.attention.layer_norm_epsilon", 1e-5))
        self.S = int(k("cxr.preproc.size", k("clip.vision.image_size")))
        self.logit_scale = math.exp(float(k("clip.logit_scale")))

    def preproc(self):
        k = self.k
        return dict(size=int(k("cxr.preproc.size")), policy=k("cxr.preproc.policy"), interp=k("cxr.preproc.interp"),
                    channels=int(k("cxr.preproc.channels")), scale=float(k("cxr.preproc.scale")),
                    mean=[float(x) for x in k("cxr.preproc.mean")], std=[float(x) for x in k("cxr.preproc.std")])


# --------------------------------------------------------- NumPy reference

def conv3x3_ref(x, w, b, stride):
    """x (C, H, W), w (O, C, 3, 3), padding 1 -> (O, Ho, Wo)."""
    C, H, W = x.shape
    O = w.shape[0]
    Ho, Wo = (H - 1) // stride + 1, (W - 1) // stride + 1
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)))
    cols = np.stack([xp[:, ky:ky + stride * (Ho - 1) + 1:stride, kx:kx + stride * (Wo - 1) + 1:stride]
                     for ky in range(3) for kx in range(3)], axis=1)  # (C, 9, Ho, Wo)
    return (w.reshape(O, C * 9) @ cols.reshape(C * 9, Ho * Wo) + b[:, None]).reshape(O, Ho, Wo)


def relu(x):
    return np.maximum(x, 0)


def feature_map_ref(m, img):
    """img (C, S, S) normalised input -> final feature map (Cn, h, w), float64."""
    img = np.asarray(img, dtype=np.float64)
    if img.shape[0] != m.cin:
        img = img.mean(0, keepdims=True) if m.cin == 1 else np.repeat(img, 3, 0)
    x = relu(conv3x3_ref(img, m.w("v.stem.weight"), m.w("v.stem.bias"), 2))
    for i in range(1, len(m.widths)):
        x = relu(conv3x3_ref(x, m.w("v.s%d.down.weight" % i), m.w("v.s%d.down.bias" % i), 2))
        for j in range(m.blocks[i - 1]):
            p = "v.s%d.b%d." % (i, j)
            t = relu(conv3x3_ref(x, m.w(p + "conv1.weight"), m.w(p + "conv1.bias"), 1))
            x = relu(conv3x3_ref(t, m.w(p + "conv2.weight"), m.w(p + "conv2.bias"), 1) + x)
    return x


def image_embedding_ref(m, img):
    x = feature_map_ref(m, img).mean((1, 2))
    c = gguf_forward.layer_norm(x, m.w("v.post_ln.weight"), m.w("v.post_ln.bias"), m.eps)
    e = m.w("v.proj.weight") @ c
    return e / np.linalg.norm(e)


# ------------------------------------------------------------ torch, fast

class TorchCNN:
    """Batched float32 forward of the same tower (torch.nn.functional)."""

    def __init__(self, m, threads=2):
        import torch
        torch.set_num_threads(threads)
        self.torch = torch
        self.m = m
        self.t = {n: torch.from_numpy(np.ascontiguousarray(a, dtype=np.float32)) for n, a in m.t.items()
                  if n.startswith("v.")}

    def _trunk(self, x):
        """(B, C, S, S) tensor -> (B, Cn) pooled features: the tower up to the global average pool."""
        F = self.torch.nn.functional
        t, m = self.t, self.m
        if x.shape[1] != m.cin:
            x = x.mean(1, keepdim=True) if m.cin == 1 else x.repeat(1, 3, 1, 1)
        x = F.relu(F.conv2d(x, t["v.stem.weight"], t["v.stem.bias"], 2, 1))
        for i in range(1, len(m.widths)):
            x = F.relu(F.conv2d(x, t["v.s%d.down.weight" % i], t["v.s%d.down.bias" % i], 2, 1))
            for j in range(m.blocks[i - 1]):
                p = "v.s%d.b%d." % (i, j)
                y = F.relu(F.conv2d(x, t[p + "conv1.weight"], t[p + "conv1.bias"], 1, 1))
                x = F.relu(F.conv2d(y, t[p + "conv2.weight"], t[p + "conv2.bias"], 1, 1) + x)
        return x.mean((2, 3))

    def _batches(self, imgs, batch):
        for s in range(0, len(imgs), batch):
            yield self.torch.from_numpy(np.ascontiguousarray(imgs[s:s + batch], dtype=np.float32))

    def pooled(self, imgs, batch=256):
        """imgs (N, C, S, S) float32 -> (N, Cn) float64 pooled features (the density check's input)."""
        with self.torch.no_grad():
            out = [self._trunk(x).double().numpy() for x in self._batches(imgs, batch)]
        return np.concatenate(out) if out else np.zeros((0, self.m.widths[-1]))

    def embed(self, imgs, batch=128):
        """imgs (N, C, S, S) float32 -> (N, E) float64 unit rows."""
        F = self.torch.nn.functional
        t, m = self.t, self.m
        out = []
        with self.torch.no_grad():
            for x in self._batches(imgs, batch):
                f = F.layer_norm(self._trunk(x), (m.widths[-1],), t["v.post_ln.weight"], t["v.post_ln.bias"], m.eps)
                e = f @ t["v.proj.weight"].T
                out.append(F.normalize(e, dim=1).double().numpy())
        return np.concatenate(out) if out else np.zeros((0, m.w("v.proj.weight").shape[0]))


# ----------------------------------------------------------------- text

def tokenizer_of(m):
    import ref_tokenizer
    merges = [tuple(x.split(" ")) for x in m.k("tokenizer.ggml.merges")]
    tok = ref_tokenizer.ClipBPE(merges)
    if tok.tokens != list(m.k("tokenizer.ggml.tokens")):
        raise ValueError("tokenizer.ggml.tokens is not CLIP's order for these merges")
    return tok


def text_embeddings(m, texts, tok=None):
    tok = tok or tokenizer_of(m)
    ctx = int(m.k("clip.text.context_length"))
    out = []
    for s in texts:
        ids, n = tok.tokenize(s, ctx)
        out.append(gguf_forward.text_embedding(m, ids[:n]))
    return np.stack(out)


def ensembles(m, prompt_lines, names, tok=None):
    """(pos, neg) (F, E): per finding the re-normalised mean of its normalised prompt embeddings."""
    by = {(n, kind): [] for n in names for kind in ("pos", "neg")}
    for line in prompt_lines:
        n, kind, text = line.split("\t", 2)
        by[(n, kind)].append(text)
    texts = [t for key in by for t in by[key]]
    emb = dict(zip(texts, text_embeddings(m, texts, tok)))

    def ens(lst):
        e = np.mean([emb[t] for t in lst], axis=0)
        return e / np.linalg.norm(e)
    return (np.stack([ens(by[(n, "pos")]) for n in names]), np.stack([ens(by[(n, "neg")]) for n in names]))


def zscores(m, img_emb, pos=None, neg=None):
    pos = m.w("f.pos_embd") if pos is None else pos
    neg = m.w("f.neg_embd") if neg is None else neg
    return m.logit_scale * (img_emb @ pos.T - img_emb @ neg.T)


# --------------------------------------------------------------- evaluate

def load_split(m, data_dir, split, paths=None):
    import prepare_data
    pp = m.preproc()
    rows = [r for r in prepare_data.read_labels(data_dir) if r["split"] == split and
            (paths is None or r["path"] in paths)]
    imgs = np.zeros((len(rows), 1, pp["size"], pp["size"]), np.float32)
    for i, r in enumerate(rows):
        c = prepare_data.preprocess_float(prepare_data.load_plane(os.path.join(data_dir, r["path"])), pp["size"],
                                          pp["interp"], pp["policy"])
        imgs[i, 0] = prepare_data.normalise(c, pp["scale"], pp["mean"][0], pp["std"][0])
    return rows, imgs


TARGETS = [  # (what, dataset(s), finding, goal)
    ("pneumonia vs normal", ("kermany224",), "pneumonia", 0.97),
    ("COVID-19 vs normal", ("covidrad224",), "covid19", 0.97),
    ("normal vs abnormal", ("nih384",), "no_finding", 0.80),
    ("pleural effusion", ("nih384",), "pleural_effusion", None),
    ("pleural effusion", ("nih384", "nih64"), "pleural_effusion", None),
    ("atelectasis", ("nih384",), "atelectasis", None),
    ("atelectasis", ("nih384", "nih64"), "atelectasis", None),
    ("pneumonia (NIH)", ("nih384",), "pneumonia", None),
]


def target_table(names, rows, p, n_boot=1000, seed=0):
    """List of dicts with the per-dataset target figures."""
    out = []
    for what, dsets, fname, goal in TARGETS:
        j = names.index(fname)
        sel = [i for i, r in enumerate(rows) if r["dataset"] in dsets and r["y"][fname] is not None]
        if not sel:
            continue
        y = np.array([rows[i]["y"][fname] for i in sel], dtype=bool)
        a, lo, hi = metrics.bootstrap_auc(y, p[sel, j], n_boot, seed)
        out.append(dict(what=what, datasets="+".join(dsets), finding=fname, auc=a, lo=lo, hi=hi,
                        pos=int(y.sum()), neg=int((~y).sum()), goal=goal))
    return out


def print_table(tab, out=sys.stdout):
    out.write("%-22s %-16s %-17s %6s  %-15s %5s %5s  %s\n" % ("target", "dataset (val)", "finding", "AUC",
                                                              "95% CI", "pos", "neg", "goal"))
    for t in tab:
        goal = "" if t["goal"] is None else (">= %.2f %s" % (t["goal"], "met" if t["auc"] >= t["goal"] else "NOT met"))
        out.write("%-22s %-16s %-17s %6.3f  [%.3f, %.3f] %5d %5d  %s\n" % (t["what"], t["datasets"], t["finding"],
                                                                       t["auc"], t["lo"], t["hi"], t["pos"],
                                                                       t["neg"], goal))


def evaluate(model_path, data_dir, split="val", check=2, n_boot=1000, seed=0, threads=2, log=print, paths=None):
    m = Model(model_path)
    names = list(m.k("cxr.findings.names"))
    rows, imgs = load_split(m, data_dir, split, paths)
    emb = TorchCNN(m, threads).embed(imgs)
    if check:
        worst = max(float(np.abs(image_embedding_ref(m, imgs[i]) - emb[i]).max()) for i in range(check))
        log("check: NumPy float64 reference vs torch float32 on %d images: max |diff| %.2e" % (check, worst))
    z = zscores(m, emb)
    a = np.array(m.k("cxr.findings.calib_a"))
    b = np.array(m.k("cxr.findings.calib_b"))
    p = metrics.sigmoid(a * z + b)
    tab = target_table(names, rows, p, n_boot, seed)
    print_table(tab)
    if m.has("d.prototypes"):
        cos = (emb @ m.w("d.prototypes").T).max(1)
        thr = float(m.k("cxr.domain.threshold"))
        log("domain: max-cos over %d prototypes: val min %.3f, median %.3f; %d of %d val images below %.3f" % (
            m.w("d.prototypes").shape[0], cos.min(), np.median(cos), int((cos < thr).sum()), len(cos), thr))
    return tab


def main(argv=None):
    ap = argparse.ArgumentParser(prog="cnn_forward.py")
    sub = ap.add_subparsers(dest="cmd", required=True)
    e = sub.add_parser("embed")
    e.add_argument("--model", required=True)
    g = e.add_mutually_exclusive_group(required=True)
    g.add_argument("--tensor")
    g.add_argument("--text")
    e.add_argument("--json", action="store_true")
    v = sub.add_parser("evaluate")
    v.add_argument("--model", required=True)
    v.add_argument("--data", default=DEFAULT_DATA)
    v.add_argument("--split", default="val")
    v.add_argument("--check", type=int, default=2, help="images checked against the float64 reference")
    v.add_argument("--bootstrap", type=int, default=1000)
    v.add_argument("--seed", type=int, default=0)
    v.add_argument("--threads", type=int, default=2)
    v.add_argument("--json", help="write the target table here")
    a = ap.parse_args(argv)
    try:
        if a.cmd == "embed":
            m = Model(a.model)
            if a.tensor:
                x = np.fromfile(a.tensor, dtype="<f4").astype(np.float64)
                C = 1 if x.size == m.S * m.S else 3
                if C * m.S * m.S != x.size:
                    raise ValueError("expected 1 or 3 x %d x %d floats" % (m.S, m.S))
                emb = image_embedding_ref(m, x.reshape(C, m.S, m.S))
            else:
                emb = text_embeddings(m, [a.text])[0]
            if a.json:
                print(json.dumps({"dim": len(emb), "embedding": [float(x) for x in emb]}))
            else:
                print(" ".join("%.8g" % x for x in emb))
            return 0
        tab = evaluate(a.model, a.data, a.split, a.check, a.bootstrap, a.seed, a.threads)
        if a.json:
            with open(a.json, "w") as f:
                json.dump(tab, f, indent=1)
        return 0
    except (gguf.GGUFError, OSError, ValueError, KeyError) as ex:
        sys.stderr.write("cnn_forward.py: %s\n" % ex)
        return 1


if __name__ == "__main__":
    sys.exit(main())
