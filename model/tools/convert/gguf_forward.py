#!/usr/bin/python3
"""gguf_forward.py — a NumPy forward pass over a cxrvqa GGUF file, written from model/FORMAT.md
alone (tensor names, shapes and the math the keys describe), in float64. It is the executable
reading of FORMAT.md: tests/model/test_convert.py runs it on converted files against reference.py
(which reads the original checkpoints), so a conversion that stores the right numbers under the
wrong meaning fails; and its command line mimics `cxrvqa embed`, so tests/model/test_parity.py can be
exercised before the C engine exists. Slow and simple on purpose; never used in production.

    /usr/bin/python3 model/tools/convert/gguf_forward.py embed --model F.gguf --tensor RAW.f32 [--json]
    /usr/bin/python3 model/tools/convert/gguf_forward.py embed --model F.gguf --tokens 1,2,3 [--json]
    /usr/bin/python3 model/tools/convert/gguf_forward.py embed --model F.gguf --text "..." [--json]  (needs ref_tokenizer.py)

Classifier files (general.architecture "cxr-classifier"): --tensor is cxr.preproc.channels x S x S and
the output is the K raw logits, not normalised ("logits": true in --json), as `cxrvqa embed` prints them.

Position interpolation for other input sizes is its own separable bicubic (a = -0.75, source
coordinate (o + 0.5) * in / out - 0.5, neighbours clamped to the edge), i.e. what
align_corners=False bicubic resampling means, written without torch.
"""
import argparse
import json
import math
import os
import sys

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402

class Model:
    def __init__(self, path):
        self.g = gguf.read(path)
        self.t = {n: t.array(np.float64) for n, t in self.g.tensors.items()}
        self.k = self.g.get

    def has(self, n):
        return n in self.t

    def w(self, n):
        if n not in self.t:
            raise KeyError("tensor %s missing" % n)
        return self.t[n]


def layer_norm(x, w, b, eps):
    mu = x.mean(-1, keepdims=True)
    var = ((x - mu) ** 2).mean(-1, keepdims=True)
    return (x - mu) / np.sqrt(var + eps) * w + b


_verf = np.vectorize(math.erf)


def act(name, x):
    if name == "quick_gelu":
        return x / (1.0 + np.exp(-1.702 * x))
    if name == "gelu":
        return 0.5 * x * (1.0 + _verf(x / math.sqrt(2.0)))
    raise ValueError("activation %r" % name)


def softmax(x):
    x = x - x.max(-1, keepdims=True)
    e = np.exp(x)
    return e / e.sum(-1, keepdims=True)


def linear(m, x, name):
    y = x @ m.w(name + ".weight").T
    if m.has(name + ".bias"):
        y = y + m.w(name + ".bias")
    return y


def attention(m, x, p, heads, mask):
    n, d = x.shape
    hd = d // heads
    q, k, v = (linear(m, x, p + n_).reshape(n, heads, hd).transpose(1, 0, 2) for n_ in ("attn_q", "attn_k", "attn_v"))
    s = q @ k.transpose(0, 2, 1) / math.sqrt(hd)
    if mask is not None:
        s = s + mask
    o = (softmax(s) @ v).transpose(1, 0, 2).reshape(n, d)
    return linear(m, o, p + "attn_out")


def mlp(m, x, p, a):
    return linear(m, act(a, linear(m, x, p + "ffn_up")), p + "ffn_down")


def cubic_weights(t, a=-0.75):
    def near(x):  # |x| <= 1
        return ((a + 2) * x - (a + 3)) * x * x + 1

    def far(x):  # 1 < |x| < 2
        return ((a * x - 5 * a) * x + 8 * a) * x - 4 * a
    return [far(t + 1), near(t), near(1 - t), far(2 - t)]


def resize_matrix(n_in, n_out):
    """(n_out, n_in) matrix of bicubic (align_corners=False) resampling along one axis."""
    R = np.zeros((n_out, n_in))
    scale = n_in / n_out
    for o in range(n_out):
        src = (o + 0.5) * scale - 0.5
        i0 = math.floor(src)
        for j, wgt in enumerate(cubic_weights(src - i0)):
            R[o, min(max(i0 - 1 + j, 0), n_in - 1)] += wgt
    return R


def image_embedding(m, img):
    k = m.k
    P, D = k("clip.vision.patch_size"), k("clip.vision.embedding_length")
    heads, eps, a = k("clip.vision.attention.head_count"), k("clip.vision.attention.layer_norm_epsilon"), \
        k("clip.vision.activation")
    C, S, _ = img.shape
    if C == 1:
        img = np.repeat(img, 3, 0)
    g = S // P
    patches = img[:, :g * P, :g * P].reshape(3, g, P, g, P).transpose(1, 3, 0, 2, 4).reshape(g * g, 3 * P * P)
    x = patches @ m.w("v.patch_embd.weight").reshape(D, -1).T
    if m.has("v.patch_embd.bias"):
        x = x + m.w("v.patch_embd.bias")
    pos = m.w("v.position_embd.weight")
    g0 = int(round(math.sqrt(pos.shape[0] - 1)))
    grid = pos[1:].reshape(g0, g0, D)
    if g != g0:
        R = resize_matrix(g0, g)
        grid = np.einsum("ai,bj,ijd->abd", R, R, grid)
    x = np.concatenate([m.w("v.class_embd")[None], x], 0) + np.concatenate([pos[:1], grid.reshape(g * g, D)], 0)
    if m.has("v.pre_ln.weight"):
        x = layer_norm(x, m.w("v.pre_ln.weight"), m.w("v.pre_ln.bias"), eps)
    for i in range(k("clip.vision.block_count")):
        p = "v.blk.%d." % i
        x = x + attention(m, layer_norm(x, m.w(p + "ln1.weight"), m.w(p + "ln1.bias"), eps), p, heads, None)
        x = x + mlp(m, layer_norm(x, m.w(p + "ln2.weight"), m.w(p + "ln2.bias"), eps), p, a)
    c = layer_norm(x[0], m.w("v.post_ln.weight"), m.w("v.post_ln.bias"), eps)
    e = m.w("v.proj.weight") @ c
    return e / np.linalg.norm(e)


def text_embedding(m, ids):
    k = m.k
    ids = np.asarray(ids, dtype=np.int64)
    n = len(ids)
    heads, eps, a = k("clip.text.attention.head_count"), k("clip.text.attention.layer_norm_epsilon"), \
        k("clip.text.activation")
    if not 1 <= n <= k("clip.text.context_length") or ids.min() < 0 or ids.max() >= k("clip.text.vocab_size"):
        raise ValueError("token ids out of range")
    x = m.w("t.token_embd.weight")[ids] + m.w("t.position_embd.weight")[:n]
    if k("clip.text.architecture") == "bert":
        x = x + m.w("t.token_type_embd.weight")[0]
        x = layer_norm(x, m.w("t.embd_ln.weight"), m.w("t.embd_ln.bias"), eps)
        for i in range(k("clip.text.block_count")):
            p = "t.blk.%d." % i
            x = layer_norm(x + attention(m, x, p, heads, None), m.w(p + "ln1.weight"), m.w(p + "ln1.bias"), eps)
            x = layer_norm(x + mlp(m, x, p, a), m.w(p + "ln2.weight"), m.w(p + "ln2.bias"), eps)
        pooled = x[0]
    else:
        mask = np.triu(np.full((n, n), -np.inf), 1)
        for i in range(k("clip.text.block_count")):
            p = "t.blk.%d." % i
            x = x + attention(m, layer_norm(x, m.w(p + "ln1.weight"), m.w(p + "ln1.bias"), eps), p, heads, mask)
            x = x + mlp(m, layer_norm(x, m.w(p + "ln2.weight"), m.w(p + "ln2.bias"), eps), p, a)
        x = layer_norm(x, m.w("t.post_ln.weight"), m.w("t.post_ln.bias"), eps)
        eot = k("clip.text.vocab_size") - 1
        hits = np.nonzero(ids == eot)[0]
        pooled = x[hits[0] if len(hits) else int(ids.argmax())]
    if k("clip.text.projection") == "mlp":
        e = m.w("t.proj.2.weight") @ act("gelu", m.w("t.proj.0.weight") @ pooled)
    else:
        e = m.w("t.proj.weight") @ pooled
    return e / np.linalg.norm(e)


# ---------------------------------------------------------------- classifiers (FORMAT.md "Classifier models")


def conv2d(x, w, b=None, stride=1, pad=0):
    """x (C, H, W), w (O, C, kh, kw) -> (O, H', W'): im2col + matmul, zero padding."""
    C, H, W = x.shape
    O, _, kh, kw = w.shape
    if pad:
        x = np.pad(x, ((0, 0), (pad, pad), (pad, pad)))
    Ho, Wo = (H + 2 * pad - kh) // stride + 1, (W + 2 * pad - kw) // stride + 1
    if kh == kw == 1:
        cols = x[:, ::stride, ::stride][:, :Ho, :Wo].reshape(C, -1)
        y = w.reshape(O, C) @ cols
    else:
        cols = np.empty((C, kh, kw, Ho, Wo))
        for i in range(kh):
            for j in range(kw):
                cols[:, i, j] = x[:, i:i + stride * Ho:stride, j:j + stride * Wo:stride]
        y = w.reshape(O, -1) @ cols.reshape(C * kh * kw, -1)
    if b is not None:
        y = y + b[:, None]
    return y.reshape(O, Ho, Wo)


def max_pool_3s2p1(x):
    C, H, W = x.shape
    xp = np.pad(x, ((0, 0), (1, 1), (1, 1)), constant_values=-np.inf)
    Ho, Wo = (H + 2 - 3) // 2 + 1, (W + 2 - 3) // 2 + 1
    return np.max([xp[:, i:i + 2 * Ho:2, j:j + 2 * Wo:2] for i in range(3) for j in range(3)], axis=0)


def avg_pool_2s2(x):
    C, H, W = x.shape
    H2, W2 = H // 2, W // 2
    return x[:, :2 * H2, :2 * W2].reshape(C, H2, 2, W2, 2).mean((2, 4))


def relu(x):
    return np.maximum(x, 0)


def affine_relu(m, x, p):
    return relu(x * m.w(p + ".scale")[:, None, None] + m.w(p + ".shift")[:, None, None])


def densenet_features(m, x):
    k = m.k
    x = relu(conv2d(x, m.w("v.conv0.weight"), m.w("v.conv0.bias"), 2, 3))
    x = max_pool_3s2p1(x)
    blocks = k("clip.vision.densenet.blocks")
    for b, n in enumerate(blocks, 1):
        feats = [x]
        for li in range(1, n + 1):
            p = "v.db%d.l%d." % (b, li)
            h = affine_relu(m, np.concatenate(feats, 0), p + "norm1")
            h = relu(conv2d(h, m.w(p + "conv1.weight"), m.w(p + "conv1.bias")))
            feats.append(conv2d(h, m.w(p + "conv2.weight"), None, 1, 1))
        x = np.concatenate(feats, 0)
        if b < len(blocks):
            x = conv2d(affine_relu(m, x, "v.tr%d.norm" % b), m.w("v.tr%d.conv.weight" % b))
            x = avg_pool_2s2(x)
    return affine_relu(m, x, "v.norm5")


def resnet_features(m, x):
    x = relu(conv2d(x, m.w("v.conv1.weight"), m.w("v.conv1.bias"), 2, 3))
    x = max_pool_3s2p1(x)
    for s, n in enumerate(m.k("clip.vision.resnet.blocks"), 1):
        for j in range(n):
            p = "v.layer%d.%d." % (s, j)
            st = 2 if (j == 0 and s > 1) else 1
            h = relu(conv2d(x, m.w(p + "conv1.weight"), m.w(p + "conv1.bias")))
            h = relu(conv2d(h, m.w(p + "conv2.weight"), m.w(p + "conv2.bias"), st, 1))
            h = conv2d(h, m.w(p + "conv3.weight"), m.w(p + "conv3.bias"))
            sc = conv2d(x, m.w(p + "downsample.weight"), m.w(p + "downsample.bias"), st) if j == 0 else x
            x = relu(h + sc)
    return x


def classifier_logits(m, img):
    """K raw logits of a (C, S, S) input."""
    arch = m.k("clip.vision.architecture")
    f = densenet_features(m, img) if arch == "densenet" else resnet_features(m, img)
    return m.w("c.head.weight") @ f.mean((1, 2)) + m.w("c.head.bias")


class _TokView:
    """What reference.tokenize_with needs, taken from the GGUF."""

    def __init__(self, m):
        k = m.k
        self.tokenizer_kind = k("tokenizer.ggml.model")
        self.tokens = k("tokenizer.ggml.tokens")
        self.merges = k("tokenizer.ggml.merges")
        self.context = k("clip.text.context_length")
        self.lowercase = bool(k("cxr.tokenizer.lowercase", True))
        if self.tokenizer_kind == "wordpiece":
            self.pad_id, self.eot_id = self.tokens.index("[PAD]"), self.tokens.index("[SEP]")
        else:
            self.pad_id, self.eot_id = 0, len(self.tokens) - 1


def main(argv=None):
    ap = argparse.ArgumentParser(prog="gguf_forward.py")
    ap.add_argument("command", choices=("embed",))
    ap.add_argument("--model", required=True)
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--tensor")
    g.add_argument("--tokens")
    g.add_argument("--text")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--threads", type=int)
    a = ap.parse_args(argv)
    try:
        m = Model(a.model)
        logits = m.k("general.architecture") == "cxr-classifier"
        if a.tensor:
            v = np.fromfile(a.tensor, dtype="<f4").astype(np.float64)
            C = m.k("cxr.preproc.channels", 3) if logits else 3
            S = int(round(math.sqrt(v.size / C)))
            if C * S * S != v.size:
                raise ValueError("expected %d x S x S floats" % C)
            e = classifier_logits(m, v.reshape(C, S, S)) if logits else image_embedding(m, v.reshape(3, S, S))
        elif logits:
            raise ValueError("a classifier model embeds images only")
        elif a.tokens:
            e = text_embedding(m, [int(x) for x in a.tokens.split(",")])
        else:
            import reference
            import ref_tokenizer
            e = text_embedding(m, reference.tokenize_with(ref_tokenizer, _TokView(m), a.text))
    except (gguf.GGUFError, OSError, ValueError, KeyError, ImportError) as ex:
        sys.stderr.write("gguf_forward.py: %s\n" % ex)
        return 1
    if a.json:
        o = {"dim": len(e), "embedding": [float(x) for x in e]}
        if logits:
            o["logits"] = True
        print(json.dumps(o))
    else:
        print(" ".join("%.8g" % x for x in e))
    return 0


if __name__ == "__main__":
    sys.exit(main())
