"""make_checkpoints.py — builds random-weight checkpoints with exactly the key
names, shapes and file layouts of the real ones (OpenAI CLIP / CheXzero,
HF CLIPModel, open_clip BiomedCLIP), plus the tokenizer files they need, so
that convert.py, reference.py and the C engine can be tested without any real
weights. It owns the random initialisation and two tiny tokenizer trainers
(CLIP byte-level BPE and WordPiece) run on model/tools/convert/corpus.txt; it knows
nothing of GGUF. Seeded: the same bytes every run.

    /usr/bin/python3 model/tools/convert/make_checkpoints.py OUTDIR                 # default set (below)
    /usr/bin/python3 model/tools/convert/make_checkpoints.py OUTDIR --only openai-clip-tiny,open-clip-tiny
    /usr/bin/python3 model/tools/convert/make_checkpoints.py OUTDIR --only open-clip-biomedclip   # full size
    /usr/bin/python3 model/tools/convert/make_checkpoints.py OUTDIR --custom mini --format openai-clip \\
        --vision 64,1,16,32 --text 64,1,77,1000 --embed 32
    /usr/bin/python3 model/tools/convert/make_checkpoints.py --list

OUTDIR receives:
    bpe_simple_vocab.txt.gz   CLIP-format merges (gzip; "#version" line, then "a b" per line)
    wordpiece_vocab.txt       BERT-format vocabulary ([PAD] [UNK] [CLS] [SEP] [MASK] = ids 0..4,
                              unlike bert-base's 0/100/101/102/103, so ids must be looked up)
    NAME.pt                   openai-clip: torch.save'd state dict (also NAME.jit.pt, a TorchScript
                              archive, and NAME.wrapped.pt, {"state_dict": {"module." + key: ...}},
                              for the tiny variant)
    NAME/                     hf-clip: config.json, model.safetensors, vocab.json, merges.txt
                              open-clip: open_clip_config.json, open_clip_pytorch_model.bin, vocab.txt
    checkpoints.json          manifest: per variant its format, files (relative to OUTDIR; load_manifest()
                              makes them absolute) and the sizes it was built with

Initialisation (chosen so that every stage matters for parity: a wrong attention scale, activation,
LayerNorm eps or position layout must move the embedding well beyond the test tolerances): Linear
and projection weights N(0, 1/fan_in) (so attention logits have unit spread, not a near-uniform
softmax), patch conv N(0, 1/(3 P^2)), patch positions N(0, 0.5^2) (so the position layout and its
interpolation show), class embedding, class position and text token/position/type embeddings
N(0, 0.02^2) as in the upstream inits (their LayerNorm inputs then have a variance near 1e-3, so
a wrong eps shows), biases N(0, 0.05^2), LayerNorm weights 1 + N(0, 0.1^2), biases N(0, 0.05^2).
"""
import argparse
import collections
import gzip
import heapq
import io
import json
import math
import os
import re
import struct
import sys
import unicodedata
import zlib

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, HERE)
from convert import byte_alphabet, bytes_to_unicode  # noqa: E402  (a fixed alphabet; tests check it separately)

CORPUS = os.path.join(HERE, "corpus.txt")
SOT, EOT = "<|startoftext|>", "<|endoftext|>"

# name -> how it is built. vision = (width, layers, patch, image size); text = (width, layers, context,
# vocab or None for "every token the tokenizer file has").
VARIANTS = collections.OrderedDict([
    ("openai-clip-tiny", dict(format="openai-clip", vision=(128, 2, 16, 64), text=(192, 2, 77, 2000), embed=96,
                              logit_scale=math.log(1 / 0.07), extras=True)),
    ("openai-clip-vitb32", dict(format="openai-clip", vision=(768, 12, 32, 224), text=(512, 12, 77, None), embed=512,
                                logit_scale=math.log(100.0))),
    ("hf-clip-tiny", dict(format="hf-clip", vision=(64, 2, 8, 32), text=(96, 2, 77, 1500), embed=80,
                          vision_heads=4, text_heads=3, vision_ff=160, text_ff=256,
                          vision_act="gelu", text_act="quick_gelu", logit_scale=3.5)),
    ("open-clip-tiny", dict(format="open-clip", vision=(192, 2, 16, 64), text=(128, 2, 256, None), embed=64,
                            bert_positions=512, logit_scale=4.0)),
    ("open-clip-biomedclip", dict(format="open-clip", vision=(768, 12, 16, 224), text=(768, 12, 256, None), embed=512,
                                  bert_positions=512, logit_scale=math.log(1 / 0.07), default=False)),
    # classifiers (full size: the architectures are fixed); built only with --only
    ("txv-densenet", dict(format="txv-densenet", arch="densenet", channels=1, size=224, outputs=18, default=False)),
    ("txv-resnet", dict(format="txv-resnet", arch="resnet", channels=1, size=512, outputs=18, default=False)),
    ("chexnet-densenet", dict(format="chexnet-densenet", arch="densenet", channels=3, size=224, outputs=14,
                              default=False)),
])


# ---------------------------------------------------------- tokenizer training


def corpus_text():
    with open(CORPUS, encoding="utf-8") as f:
        return f.read()


def clip_pretokens(text):
    """CLIP's pre-tokenisation of lower-cased text (letters runs, single digits, other runs)."""
    try:
        import regex
        pat = regex.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[\p{L}]+|[\p{N}]|[^\s\p{L}\p{N}]+""")
    except ImportError:  # approximation good enough for the ASCII corpus
        import re
        pat = re.compile(r"""'s|'t|'re|'ve|'m|'ll|'d|[^\W\d_]+|\d|[^\s\w]+|_+""")
    return pat.findall(" ".join(text.lower().split()))


def bpe_train(word_counts, to_symbols, join, max_merges):
    """Greedy BPE: repeatedly merge the most frequent adjacent pair (ties: smallest pair), counted over
    words weighted by frequency. Returns merges in rank order."""
    words = sorted(word_counts)
    seqs = [to_symbols(w) for w in words]
    freq = [word_counts[w] for w in words]
    counts, where = collections.Counter(), collections.defaultdict(set)
    for i, s in enumerate(seqs):
        for p in zip(s, s[1:]):
            counts[p] += freq[i]
            where[p].add(i)
    heap = [(-c, p) for p, c in counts.items()]
    heapq.heapify(heap)
    merges = []
    while heap and len(merges) < max_merges:
        c, p = heapq.heappop(heap)
        if c == 0 or counts.get(p, 0) != -c:
            continue  # stale entry
        merges.append(p)
        new = join(*p)
        touched = set()
        for i in sorted(where.pop(p)):
            s, f = seqs[i], freq[i]
            for q in zip(s, s[1:]):
                counts[q] -= f
                touched.add(q)
            out, j = [], 0
            while j < len(s):
                if j + 1 < len(s) and s[j] == p[0] and s[j + 1] == p[1]:
                    out.append(new)
                    j += 2
                else:
                    out.append(s[j])
                    j += 1
            seqs[i] = out
            for q in zip(out, out[1:]):
                counts[q] += f
                where[q].add(i)
                touched.add(q)
        for q in touched:
            if counts[q] > 0:
                heapq.heappush(heap, (-counts[q], q))
    return merges


def train_clip_bpe():
    b2c = dict(byte_alphabet())
    counts = collections.Counter("".join(b2c[b] for b in w.encode("utf-8")) for w in clip_pretokens(corpus_text()))
    return bpe_train(counts, lambda w: list(w[:-1]) + [w[-1] + "</w>"], lambda a, b: a + b, 1 << 20)


def write_clip_bpe(path, merges):
    body = ("#version: cxrvqa test vocabulary, trained on model/tools/convert/corpus.txt\n" +
            "".join("%s %s\n" % m for m in merges)).encode("utf-8")
    buf = io.BytesIO()
    with gzip.GzipFile(filename="", mode="wb", fileobj=buf, mtime=0) as g:
        g.write(body)
    with open(path, "wb") as f:
        f.write(buf.getvalue())


def is_punct(ch):
    cp = ord(ch)
    if 33 <= cp <= 47 or 58 <= cp <= 64 or 91 <= cp <= 96 or 123 <= cp <= 126:
        return True
    return unicodedata.category(ch).startswith("P")


def bert_pretokens(text):
    text = unicodedata.normalize("NFD", text.lower())
    text = "".join(c for c in text if unicodedata.category(c) != "Mn")
    out = []
    for w in text.split():
        cur = ""
        for ch in w:
            if is_punct(ch):
                if cur:
                    out.append(cur)
                out.append(ch)
                cur = ""
            else:
                cur += ch
        if cur:
            out.append(cur)
    return out


def train_wordpiece(size=1200):
    specials = ["[PAD]", "[UNK]", "[CLS]", "[SEP]", "[MASK]"]
    words = collections.Counter(bert_pretokens(corpus_text()))
    ascii_chars = [chr(c) for c in range(33, 127) if not chr(c).isupper()]
    base = sorted(set(ascii_chars) | {c for w in words for c in w})
    vocab = specials + base + ["##" + c for c in base]
    merges = bpe_train(collections.Counter({w: n for w, n in words.items() if len(w) > 1}),
                       lambda w: [w[0]] + ["##" + c for c in w[1:]], lambda a, b: a + b[2:], 1 << 20)
    seen = set(vocab)
    for a, b in merges:
        t = a + b[2:]
        if t not in seen and len(vocab) < size:
            vocab.append(t)
            seen.add(t)
    return vocab


def clip_vocab(merges):
    base = bytes_to_unicode()
    return base + [c + "</w>" for c in base] + [a + b for a, b in merges] + [SOT, EOT]


# ------------------------------------------------------------- random weights


class Init:
    def __init__(self, seed):
        self.rng = np.random.default_rng(seed)

    def normal(self, shape, std):
        return (self.rng.standard_normal(shape, dtype=np.float32) * np.float32(std)).astype(np.float32)

    def linear(self, out_f, in_f):
        return self.normal((out_f, in_f), 1.0 / math.sqrt(in_f))

    def bias(self, n):
        return self.normal((n,), 0.05)

    def ln(self, n):
        return 1.0 + self.normal((n,), 0.1), self.normal((n,), 0.05)

    def positions(self, n, d):
        """Image positions: class row small like the class embedding, patch rows large."""
        p = self.normal((n, d), 0.5)
        p[0] = self.normal((d,), 0.02)
        return p


def openai_block(I, sd, p, D, H):
    sd[p + "attn.in_proj_weight"] = I.linear(3 * D, D)
    sd[p + "attn.in_proj_bias"] = I.bias(3 * D)
    sd[p + "attn.out_proj.weight"] = I.linear(D, D)
    sd[p + "attn.out_proj.bias"] = I.bias(D)
    sd[p + "ln_1.weight"], sd[p + "ln_1.bias"] = I.ln(D)
    sd[p + "mlp.c_fc.weight"] = I.linear(H, D)
    sd[p + "mlp.c_fc.bias"] = I.bias(H)
    sd[p + "mlp.c_proj.weight"] = I.linear(D, H)
    sd[p + "mlp.c_proj.bias"] = I.bias(D)
    sd[p + "ln_2.weight"], sd[p + "ln_2.bias"] = I.ln(D)


def openai_state(I, v, vocab):
    (D, L, P, S), (W, TL, C, V), E = v["vision"], v["text"], v["embed"]
    g = S // P
    sd = collections.OrderedDict()
    sd["positional_embedding"] = I.normal((C, W), 0.01)
    sd["text_projection"] = I.normal((W, E), 1 / math.sqrt(W))
    sd["logit_scale"] = np.array(v["logit_scale"], dtype=np.float32)
    sd["visual.class_embedding"] = I.normal((D,), 0.02)
    sd["visual.positional_embedding"] = I.positions(g * g + 1, D)
    sd["visual.proj"] = I.normal((D, E), 1 / math.sqrt(D))
    sd["visual.conv1.weight"] = I.normal((D, 3, P, P), 1 / math.sqrt(3 * P * P))
    sd["visual.ln_pre.weight"], sd["visual.ln_pre.bias"] = I.ln(D)
    for i in range(L):
        openai_block(I, sd, "visual.transformer.resblocks.%d." % i, D, 4 * D)
    sd["visual.ln_post.weight"], sd["visual.ln_post.bias"] = I.ln(D)
    sd["token_embedding.weight"] = I.normal((V, W), 0.02)
    for i in range(TL):
        openai_block(I, sd, "transformer.resblocks.%d." % i, W, 4 * W)
    sd["ln_final.weight"], sd["ln_final.bias"] = I.ln(W)
    return sd


def hf_layer(I, sd, p, D, H):
    for n in ("q_proj", "k_proj", "v_proj", "out_proj"):
        sd[p + "self_attn.%s.weight" % n] = I.linear(D, D)
        sd[p + "self_attn.%s.bias" % n] = I.bias(D)
    sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"] = I.ln(D)
    sd[p + "mlp.fc1.weight"] = I.linear(H, D)
    sd[p + "mlp.fc1.bias"] = I.bias(H)
    sd[p + "mlp.fc2.weight"] = I.linear(D, H)
    sd[p + "mlp.fc2.bias"] = I.bias(D)
    sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"] = I.ln(D)


def hf_state(I, v):
    (D, L, P, S), (W, TL, C, V), E = v["vision"], v["text"], v["embed"]
    g = S // P
    sd = collections.OrderedDict()
    t = "text_model."
    sd[t + "embeddings.token_embedding.weight"] = I.normal((V, W), 0.02)
    sd[t + "embeddings.position_embedding.weight"] = I.normal((C, W), 0.01)
    sd[t + "embeddings.position_ids"] = np.arange(C, dtype=np.int64)[None]
    for i in range(TL):
        hf_layer(I, sd, t + "encoder.layers.%d." % i, W, v["text_ff"])
    sd[t + "final_layer_norm.weight"], sd[t + "final_layer_norm.bias"] = I.ln(W)
    p = "vision_model."
    sd[p + "embeddings.class_embedding"] = I.normal((D,), 0.02)
    sd[p + "embeddings.patch_embedding.weight"] = I.normal((D, 3, P, P), 1 / math.sqrt(3 * P * P))
    sd[p + "embeddings.position_embedding.weight"] = I.positions(g * g + 1, D)
    sd[p + "embeddings.position_ids"] = np.arange(g * g + 1, dtype=np.int64)[None]
    sd[p + "pre_layrnorm.weight"], sd[p + "pre_layrnorm.bias"] = I.ln(D)
    for i in range(L):
        hf_layer(I, sd, p + "encoder.layers.%d." % i, D, v["vision_ff"])
    sd[p + "post_layernorm.weight"], sd[p + "post_layernorm.bias"] = I.ln(D)
    sd["visual_projection.weight"] = I.linear(E, D)
    sd["text_projection.weight"] = I.linear(E, W)
    sd["logit_scale"] = np.array(v["logit_scale"], dtype=np.float32)
    return sd


def open_clip_state(I, v):
    (D, L, P, S), (W, TL, _, V), E = v["vision"], v["text"], v["embed"]
    g = S // P
    NP = v["bert_positions"]
    sd = collections.OrderedDict()
    sd["logit_scale"] = np.array(v["logit_scale"], dtype=np.float32)
    p = "visual.trunk."
    sd[p + "cls_token"] = I.normal((1, 1, D), 0.02)
    sd[p + "pos_embed"] = I.positions(g * g + 1, D)[None]
    sd[p + "patch_embed.proj.weight"] = I.normal((D, 3, P, P), 1 / math.sqrt(3 * P * P))
    sd[p + "patch_embed.proj.bias"] = I.bias(D)
    for i in range(L):
        b = p + "blocks.%d." % i
        sd[b + "norm1.weight"], sd[b + "norm1.bias"] = I.ln(D)
        sd[b + "attn.qkv.weight"] = I.linear(3 * D, D)
        sd[b + "attn.qkv.bias"] = I.bias(3 * D)
        sd[b + "attn.proj.weight"] = I.linear(D, D)
        sd[b + "attn.proj.bias"] = I.bias(D)
        sd[b + "norm2.weight"], sd[b + "norm2.bias"] = I.ln(D)
        sd[b + "mlp.fc1.weight"] = I.linear(4 * D, D)
        sd[b + "mlp.fc1.bias"] = I.bias(4 * D)
        sd[b + "mlp.fc2.weight"] = I.linear(D, 4 * D)
        sd[b + "mlp.fc2.bias"] = I.bias(D)
    sd[p + "norm.weight"], sd[p + "norm.bias"] = I.ln(D)
    sd["visual.head.proj.weight"] = I.linear(E, D)
    t = "text.transformer."
    sd[t + "embeddings.position_ids"] = np.arange(NP, dtype=np.int64)[None]
    sd[t + "embeddings.word_embeddings.weight"] = I.normal((V, W), 0.02)
    sd[t + "embeddings.position_embeddings.weight"] = I.normal((NP, W), 0.02)
    sd[t + "embeddings.token_type_embeddings.weight"] = I.normal((2, W), 0.02)
    sd[t + "embeddings.LayerNorm.weight"], sd[t + "embeddings.LayerNorm.bias"] = I.ln(W)
    for i in range(TL):
        b = t + "encoder.layer.%d." % i
        for n in ("query", "key", "value"):
            sd[b + "attention.self.%s.weight" % n] = I.linear(W, W)
            sd[b + "attention.self.%s.bias" % n] = I.bias(W)
        sd[b + "attention.output.dense.weight"] = I.linear(W, W)
        sd[b + "attention.output.dense.bias"] = I.bias(W)
        sd[b + "attention.output.LayerNorm.weight"], sd[b + "attention.output.LayerNorm.bias"] = I.ln(W)
        sd[b + "intermediate.dense.weight"] = I.linear(4 * W, W)
        sd[b + "intermediate.dense.bias"] = I.bias(4 * W)
        sd[b + "output.dense.weight"] = I.linear(W, 4 * W)
        sd[b + "output.dense.bias"] = I.bias(W)
        sd[b + "output.LayerNorm.weight"], sd[b + "output.LayerNorm.bias"] = I.ln(W)
    sd[t + "pooler.dense.weight"] = I.linear(W, W)  # BertModel has it; cls_last_hidden_state_pooler ignores it
    sd[t + "pooler.dense.bias"] = I.bias(W)
    M = (W + E) // 2  # open_clip's HF MLP projection: hidden = (d_model + embed_dim) // 2
    sd["text.proj.0.weight"] = I.linear(M, W)
    sd["text.proj.2.weight"] = I.linear(E, M)
    return sd


# -------------------------------------------------------------------- writers


def to_torch(sd):
    import torch
    return collections.OrderedDict((k, torch.from_numpy(np.ascontiguousarray(a))) for k, a in sd.items())


def torch_save(obj, path):
    import torch
    torch.save(obj, path)


def save_torchscript(sd, path):
    """A TorchScript archive whose state_dict() has sd's keys (as OpenAI's JIT CLIP files do), plus the
    int buffers those files carry."""
    import torch

    class Root(torch.nn.Module):
        def forward(self, x: torch.Tensor) -> torch.Tensor:
            return x

    root = Root()
    for k, t in to_torch(sd).items():
        parts, mod = k.split("."), root
        for p in parts[:-1]:
            if p not in mod._modules:
                mod.add_module(p, torch.nn.Module())
            mod = mod._modules[p]
        mod.register_parameter(parts[-1], torch.nn.Parameter(t, requires_grad=False))
    for k, n in (("input_resolution", 0), ("context_length", 0), ("vocab_size", 0)):
        root.register_buffer(k, torch.tensor(n))
    torch.jit.script(root).save(path)


def save_safetensors(sd, path):
    names = {np.dtype("<f4"): "F32", np.dtype("<i8"): "I64"}
    header, blobs, off = {"__metadata__": {"format": "pt"}}, [], 0
    for k, a in sd.items():
        a = np.ascontiguousarray(a)
        b = a.astype(a.dtype.newbyteorder("<")).tobytes()
        header[k] = {"dtype": names[a.dtype.newbyteorder("<")], "shape": list(a.shape), "data_offsets": [off, off + len(b)]}
        blobs.append(b)
        off += len(b)
    h = json.dumps(header, separators=(",", ":")).encode("utf-8")
    h += b" " * ((-len(h)) % 8)
    with open(path, "wb") as f:
        f.write(struct.pack("<Q", len(h)) + h)
        for b in blobs:
            f.write(b)


def write_json(path, obj):
    with open(path, "w", encoding="utf-8") as f:
        json.dump(obj, f, indent=2, ensure_ascii=False)
        f.write("\n")


# ----------------------------------------------------------- classifier models
#
# torchvision's own DenseNet-121 / ResNet-50 with random weights, saved the ways the published
# checkpoints are: torchxrayvision's whole pickled model (its classes not importable at load time),
# a plain state dict, CheXNet's DataParallel {"state_dict": ...} with pre-0.4 names. BatchNorm gets
# random affine parameters, then running statistics measured on smooth random images at the model's
# input scale (so activations stay in range through 121 layers), then perturbed (mean ± 0.2 σ,
# var × 0.6…1.6) so that a folding that ignores any of γ, β, μ or σ moves the logits. The head is
# scaled so that the logits spread about ±2 (sigmoids not saturated).

THROWAWAY = "cxrvqa_unimportable_txv.models"  # the module name the pickles name; never importable


def calib_images(n, C, S, txv, seed):
    rng = np.random.default_rng(seed)
    y, x = np.mgrid[0:S, 0:S] / S
    imgs = []
    for i in range(n):
        a, b, c = rng.uniform(2, 9, 3)
        g = 127.5 + 90 * np.sin(a * x + b * y + i) * np.cos(c * y) + rng.normal(0, 20, (S, S))
        g = np.clip(g, 0, 255)
        if txv:
            t = ((g - 127.5) * 2048 / 255)[None]
        else:
            t = np.stack([(g / 255 - m) / s for m, s in zip((0.485, 0.456, 0.406), (0.229, 0.224, 0.225))])
        imgs.append(t[:C])
    return np.stack(imgs).astype(np.float32)


def randomise_classifier(model, images, seed):
    import torch
    g = torch.Generator().manual_seed(seed)
    bns = [m for m in model.modules() if isinstance(m, torch.nn.BatchNorm2d)]
    with torch.no_grad():
        for bn in bns:
            n = bn.num_features
            bn.weight.copy_(1 + 0.25 * torch.randn(n, generator=g))
            bn.bias.copy_(0.2 * torch.randn(n, generator=g))
            bn.reset_running_stats()
            bn.momentum = None  # cumulative average over the calibration batch
        model.train()
        feats = model(torch.from_numpy(images))
        model.eval()
        for bn in bns:
            n = bn.num_features
            sd = bn.running_var.clamp_min(1e-6).sqrt()
            bn.running_mean.add_(0.2 * sd * torch.randn(n, generator=g))
            bn.running_var.mul_(0.6 + torch.rand(n, generator=g))
            bn.momentum = 0.1
        head = model.classifier if hasattr(model, "classifier") else model.fc
        z = model(torch.from_numpy(images))
        head.weight.mul_(2.0 / max(float(z.std()), 1e-6))
        head.bias.copy_(0.5 * torch.randn(head.bias.shape[0], generator=g))
        z = model(torch.from_numpy(images))
    del feats
    if not torch.isfinite(z).all():
        raise SystemExit("make_checkpoints.py: random classifier gives non-finite logits")
    return z


def unimportable(model):
    """Re-class every torchvision module of model as a subclass defined in a throwaway module, so that a
    pickle names classes no loader can import (as torchxrayvision's DenseNet pickles do)."""
    import types
    mod = types.ModuleType(THROWAWAY)
    made = {}

    def sub(cls):
        if cls not in made:
            made[cls] = type(cls.__name__, (cls,), {"__module__": THROWAWAY})
            setattr(mod, cls.__name__, made[cls])
        return made[cls]
    for m in model.modules():
        if type(m).__module__.startswith("torchvision."):
            m.__class__ = sub(type(m))
    parent = types.ModuleType(THROWAWAY.split(".")[0])
    parent.models = mod
    sys.modules[parent.__name__], sys.modules[THROWAWAY] = parent, mod
    return mod


def torch_save_unimportable(obj, path):
    import torch
    try:
        torch.save(obj, path)
    finally:
        sys.modules.pop(THROWAWAY, None)
        sys.modules.pop(THROWAWAY.split(".")[0], None)


OLD_NAMES = (("norm1", "norm.1"), ("conv1", "conv.1"), ("norm2", "norm.2"), ("conv2", "conv.2"))


def build_classifier(name, v, out, seed):
    import torch
    import torchvision
    torch.manual_seed(seed + zlib.crc32(name.encode()))
    K, C, S, arch = v["outputs"], v["channels"], v["size"], v["arch"]
    if arch == "densenet":
        model = torchvision.models.densenet121(num_classes=K)
        if C != 3:
            model.features.conv0 = torch.nn.Conv2d(C, 64, kernel_size=7, stride=2, padding=3, bias=False)
    else:
        model = torchvision.models.resnet50(num_classes=K)
        if C != 3:
            model.conv1 = torch.nn.Conv2d(C, 64, kernel_size=7, stride=2, padding=3, bias=False)
    txv = v["format"].startswith("txv")
    randomise_classifier(model, calib_images(4, C, min(S, 224), txv, seed), seed)
    rng = np.random.default_rng(seed + 7)
    op = rng.uniform(0.05, 0.6, K)
    op[rng.choice(K, 2, replace=False)] = np.nan  # outputs without an operating point
    info = dict(format=v["format"], arch=arch, channels=C, image_size=S, outputs=K)
    sd = collections.OrderedDict((k, t.detach().clone()) for k, t in model.state_dict().items())
    path = os.path.join(out, name + ".pt")
    if v["format"] == "txv-densenet":
        # torchxrayvision: the whole model pickled; op_threshs a plain tensor attribute
        info["checkpoint_sd"] = os.path.join(out, name + ".sd.pt")
        torch_save(sd, info["checkpoint_sd"])
        unimportable(model)
        model.op_threshs = torch.tensor(op, dtype=torch.float32)
        torch_save_unimportable(model, path)
        info["op_threshs_file"] = os.path.join(out, name + ".op_threshs.json")
        write_json(info["op_threshs_file"], [None if np.isnan(x) else float(x) for x in op])
        info["op_threshs_in"] = "attribute"
    elif v["format"] == "txv-resnet":
        # torchxrayvision's ResNet wraps torchvision's as .model and carries op_threshs as a buffer
        class ResNet(torch.nn.Module):
            pass
        root = ResNet()
        root.model = model
        root.register_buffer("op_threshs", torch.tensor(op, dtype=torch.float32))
        mod = unimportable(torch.nn.Module())  # only the wrapper is torchxrayvision's class
        ResNet.__module__ = THROWAWAY
        ResNet.__qualname__ = "ResNet"
        mod.ResNet = ResNet
        torch_save_unimportable(root, path)
        info["op_threshs_in"] = "buffer"
    else:
        # CheXNet (arnoweng/CheXNet): DataParallel(DenseNet121) whose .densenet121 is torchvision's with
        # classifier = Sequential(Linear, Sigmoid); saved by an old torchvision: norm.1, conv.1, ...
        wrapped = collections.OrderedDict()
        for k, t in sd.items():
            for new, old in OLD_NAMES:
                k = re.sub(r"\.%s\." % new, ".%s." % old, k) if ".denselayer" in k else k
            k = k.replace("classifier.", "classifier.0.")
            wrapped["module.densenet121." + k] = t
        torch_save({"epoch": 1, "arch": "densenet121", "state_dict": wrapped, "best_loss": 0.1}, path)
    info["checkpoint"] = path
    info["op_threshs"] = [None if np.isnan(x) else float(x) for x in op] if v["format"].startswith("txv") else None
    return info


# ------------------------------------------------------------------------ main


def build(name, v, out, merges, wp_vocab, seed):
    I = Init([seed, zlib.crc32(name.encode())])
    fmt = v["format"]
    (D, L, P, S), (W, TL, C, V), E = v["vision"], v["text"], v["embed"]
    info = dict(format=fmt, vision=dict(width=D, layers=L, patch=P, image_size=S,
                                        heads=v.get("vision_heads", D // 64), ff=v.get("vision_ff", 4 * D)),
                text=dict(width=W, layers=TL, context=C, heads=v.get("text_heads", W // 64), ff=v.get("text_ff", 4 * W)),
                embed=E, logit_scale=float(np.float32(v["logit_scale"])))
    if fmt in ("openai-clip", "hf-clip"):
        V = V or len(merges) + 514
        if V - 514 > len(merges) or V < 514:
            raise SystemExit("make_checkpoints.py: %s: vocab %d needs %d merges, the trainer made %d"
                             % (name, V, V - 514, len(merges)))
    else:
        V = V or len(wp_vocab)
        if V > len(wp_vocab):
            raise SystemExit("make_checkpoints.py: %s: vocab %d larger than the WordPiece vocabulary (%d)"
                             % (name, V, len(wp_vocab)))
    v = dict(v, text=(W, TL, C, V))
    info["text"]["vocab"] = V
    if fmt == "openai-clip":
        sd = openai_state(I, v, V)
        path = os.path.join(out, name + ".pt")
        torch_save(to_torch(sd), path)
        info["checkpoint"] = path
        info["bpe"] = os.path.join(out, "bpe_simple_vocab.txt.gz")
        if v.get("extras"):
            info["checkpoint_jit"] = os.path.join(out, name + ".jit.pt")
            save_torchscript(sd, info["checkpoint_jit"])
            info["checkpoint_wrapped"] = os.path.join(out, name + ".wrapped.pt")
            torch_save({"state_dict": collections.OrderedDict(("module." + k, t) for k, t in to_torch(sd).items()),
                        "epoch": 1}, info["checkpoint_wrapped"])
        info.update(activation=dict(vision="quick_gelu", text="quick_gelu"), eps=dict(vision=1e-5, text=1e-5))
    elif fmt == "hf-clip":
        sd = hf_state(I, v)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        save_safetensors(sd, os.path.join(d, "model.safetensors"))
        tokens = clip_vocab(merges[:V - 514])
        write_json(os.path.join(d, "vocab.json"), {t: i for i, t in enumerate(tokens)})
        with open(os.path.join(d, "merges.txt"), "w", encoding="utf-8") as f:
            f.write("#version: 0.2\n" + "".join("%s %s\n" % m for m in merges[:V - 514]))
        cfg = {
            "architectures": ["CLIPModel"], "model_type": "clip", "projection_dim": E,
            "logit_scale_init_value": 2.6592, "torch_dtype": "float32",
            "text_config": {"hidden_size": W, "intermediate_size": v["text_ff"], "num_hidden_layers": TL,
                            "num_attention_heads": v["text_heads"], "max_position_embeddings": C, "vocab_size": V,
                            "hidden_act": v["text_act"], "layer_norm_eps": 1e-5, "projection_dim": E,
                            "bos_token_id": V - 2, "eos_token_id": V - 1, "pad_token_id": 1},
            "vision_config": {"hidden_size": D, "intermediate_size": v["vision_ff"], "num_hidden_layers": L,
                              "num_attention_heads": v["vision_heads"], "image_size": S, "patch_size": P,
                              "hidden_act": v["vision_act"], "layer_norm_eps": 1e-5, "projection_dim": E},
        }
        write_json(os.path.join(d, "config.json"), cfg)
        info["checkpoint"] = d
        info.update(activation=dict(vision=v["vision_act"], text=v["text_act"]), eps=dict(vision=1e-5, text=1e-5))
    else:
        sd = open_clip_state(I, v)
        d = os.path.join(out, name)
        os.makedirs(d, exist_ok=True)
        torch_save(to_torch(sd), os.path.join(d, "open_clip_pytorch_model.bin"))
        with open(os.path.join(d, "vocab.txt"), "w", encoding="utf-8") as f:
            f.write("".join(t + "\n" for t in wp_vocab[:V]))
        bert = "microsoft/BiomedNLP-BiomedBERT-base-uncased-abstract"
        write_json(os.path.join(d, "open_clip_config.json"), {
            "model_cfg": {
                "embed_dim": E,
                "vision_cfg": {"timm_model_name": "vit_base_patch16_224" if (D, L, P) == (768, 12, 16)
                               else "cxrvqa_test_vit", "timm_model_pretrained": False, "timm_pool": "",
                               "timm_proj": "linear", "image_size": S},
                "text_cfg": {"hf_model_name": bert, "hf_tokenizer_name": bert, "hf_proj_type": "mlp",
                             "hf_pooler_type": "cls_last_hidden_state_pooler", "context_length": C},
            },
            "preprocess_cfg": {"mean": [0.48145466, 0.4578275, 0.40821073],
                               "std": [0.26862954, 0.26130258, 0.27577711]},
        })
        info["checkpoint"] = d
        info["text"]["bert_positions"] = v["bert_positions"]
        info["text"]["proj_hidden"] = (W + E) // 2
        info.update(activation=dict(vision="gelu", text="gelu"), eps=dict(vision=1e-6, text=1e-12))
    return info


def parse_dims(s, what):
    try:
        t = tuple(int(x) for x in s.split(","))
    except ValueError:
        t = ()
    if len(t) != 4:
        raise SystemExit("make_checkpoints.py: %s wants four comma-separated integers" % what)
    return t


def main(argv=None):
    ap = argparse.ArgumentParser(prog="make_checkpoints.py", description=__doc__.split("\n\n")[0])
    ap.add_argument("outdir", nargs="?")
    ap.add_argument("--only", help="comma-separated variant names (default: every default variant)")
    ap.add_argument("--seed", type=int, default=1234)
    ap.add_argument("--list", action="store_true", help="list the variants and exit")
    ap.add_argument("--custom", metavar="NAME", help="also build a variant with the sizes below")
    ap.add_argument("--format", choices=("openai-clip", "hf-clip", "open-clip"), default="openai-clip")
    ap.add_argument("--vision", default="64,1,16,32", help="W,L,P,S (width, layers, patch, image size)")
    ap.add_argument("--text", default="64,1,77,1000", help="W,L,C,V (width, layers, context, vocab; V 0 = all)")
    ap.add_argument("--embed", type=int, default=32)
    a = ap.parse_args(argv)
    variants = collections.OrderedDict(VARIANTS)
    if a.custom:
        W, L, C, V = parse_dims(a.text, "--text")
        c = dict(format=a.format, vision=parse_dims(a.vision, "--vision"), text=(W, L, C, V or None), embed=a.embed,
                 logit_scale=3.0, bert_positions=max(512, C))
        if a.format == "hf-clip":
            D = c["vision"][0]
            c.update(vision_heads=max(1, D // 64), text_heads=max(1, W // 64), vision_ff=4 * D, text_ff=4 * W,
                     vision_act="quick_gelu", text_act="quick_gelu")
        variants[a.custom] = c
    if a.list:
        for n, v in variants.items():
            if "arch" in v:
                print("%-22s %-16s %s, %d channel(s), %d px, %d outputs  (--only)" % (
                    n, v["format"], v["arch"], v["channels"], v["size"], v["outputs"]))
                continue
            print("%-22s %-12s vision %s text %s embed %d%s" % (n, v["format"], v["vision"], v["text"], v["embed"],
                                                                  "" if v.get("default", True) else "  (--only)"))
        return 0
    if not a.outdir:
        ap.error("OUTDIR is required")
    if a.only:
        names = [n for n in a.only.split(",") if n]
        bad = [n for n in names if n not in variants]
        if bad:
            ap.error("unknown variant(s) %s (see --list)" % ", ".join(bad))
    else:
        names = [n for n, v in variants.items() if v.get("default", True)] + ([a.custom] if a.custom else [])
    os.makedirs(a.outdir, exist_ok=True)
    manifest = load_manifest(a.outdir) if os.path.isfile(os.path.join(a.outdir, "checkpoints.json")) else {}
    manifest.setdefault("variants", {})
    for n in [n for n in names if "arch" in variants[n]]:
        manifest["variants"][n] = build_classifier(n, variants[n], a.outdir, a.seed)
        print("%s: %s" % (n, manifest["variants"][n]["checkpoint"]))
    names = [n for n in names if "arch" not in variants[n]]
    if not names:
        write_json(os.path.join(a.outdir, "checkpoints.json"), _paths(manifest, lambda p: os.path.relpath(p, a.outdir)))
        return 0
    merges = train_clip_bpe()
    write_clip_bpe(os.path.join(a.outdir, "bpe_simple_vocab.txt.gz"), merges)
    wp = train_wordpiece()
    with open(os.path.join(a.outdir, "wordpiece_vocab.txt"), "w", encoding="utf-8") as f:
        f.write("".join(t + "\n" for t in wp))
    manifest.update(bpe=os.path.join(a.outdir, "bpe_simple_vocab.txt.gz"), bpe_merges=len(merges),
                    wordpiece=os.path.join(a.outdir, "wordpiece_vocab.txt"), wordpiece_size=len(wp), seed=a.seed)
    for n in names:
        manifest["variants"][n] = build(n, variants[n], a.outdir, merges, wp, a.seed)
        print("%s: %s" % (n, manifest["variants"][n]["checkpoint"]))
    write_json(os.path.join(a.outdir, "checkpoints.json"), _paths(manifest, lambda p: os.path.relpath(p, a.outdir)))
    return 0


PATH_KEYS = ("checkpoint", "checkpoint_jit", "checkpoint_wrapped", "bpe", "wordpiece", "checkpoint_sd",
             "op_threshs_file")


def _paths(obj, fn):
    if isinstance(obj, dict):
        return {k: fn(v) if k in PATH_KEYS else _paths(v, fn) for k, v in obj.items()}
    return obj


def load_manifest(outdir):
    """OUTDIR/checkpoints.json with its (stored relative) paths made absolute."""
    with open(os.path.join(outdir, "checkpoints.json"), encoding="utf-8") as f:
        return _paths(json.load(f), lambda p: os.path.join(os.path.abspath(outdir), p))


if __name__ == "__main__":
    sys.exit(main())
