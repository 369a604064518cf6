"""convert.py — turns a CLIP-style checkpoint into the one GGUF v3 file the C
engine reads (layout: model/FORMAT.md). It owns the mapping from each
upstream key naming to FORMAT.md's names, the hyper-parameters inferred from
shapes, the tokenizer vocabulary and the provenance/preprocessing keys. It
computes nothing with the weights (only splits, transposes and squeezes) and
is never linked into the C build.

    /usr/bin/python3 model/tools/convert/convert.py openai-clip CHECKPOINT.pt BPE_VOCAB.txt.gz OUT.gguf
    /usr/bin/python3 model/tools/convert/convert.py hf-clip CHECKPOINT_DIR OUT.gguf
    /usr/bin/python3 model/tools/convert/convert.py open-clip CHECKPOINT_DIR OUT.gguf
    /usr/bin/python3 model/tools/convert/convert.py txv-densenet|txv-resnet|chexnet-densenet CKPT OUT.gguf
             [--labels A,B,...] [--op-threshs t1,t2,...|FILE.json] [--size S]
    options: --f16  --name S --version S --license S --description S --source S --training-data S
             --preset clip|chexzero  --preproc-size N --preproc-policy pad|crop|stretch
             --preproc-interp bicubic|bilinear|area --preproc-channels 1|3 --preproc-scale K
             --preproc-mean M[,M,M] --preproc-std S[,S,S]
             --vision-heads N --text-heads N (override width//64 where no config says)
             --allow-unused (warn instead of refusing checkpoint keys this converter does not map)
             --lowercase yes|no (open-clip WordPiece)  --trust-pickle (full unpickling; default is
             torch.load(weights_only=True))

Formats:
  openai-clip  OpenAI CLIP state dict (CheXzero publishes this): torch.save'd dict, a TorchScript
               archive, or {"state_dict": ...} with "module." prefixes. Every size is inferred
               from shapes; heads = width // 64 (as OpenAI's build_model does). Tokenizer: CLIP's
               gzip merges file; vocab = 256 byte chars, the same + "</w>", the first
               (vocab - 514) merges joined, "<|startoftext|>", "<|endoftext|>".
  hf-clip      HF CLIPModel directory: config.json, model.safetensors (or .index.json shards) or
               pytorch_model.bin, vocab.json, merges.txt. Heads, activation and eps from config.
  open-clip    BiomedCLIP-style directory: open_clip_config.json, open_clip_pytorch_model.bin,
               vocab.txt. timm ViT (patch bias, no ln_pre, eps 1e-6, GELU) + HF BERT text tower
               (post-LN, eps 1e-12, GELU, CLS pooling) + MLP projection.
  txv-densenet      torchxrayvision DenseNet-121 (1 channel, 224 px, default labels: its 18 "all"
                    outputs), txv-resnet ResNet-50 (1 channel, 512 px), chexnet-densenet CheXNet-style
                    DenseNet-121 (3 channels, ImageNet mean/std, the 14 ChestX-ray14 labels). CKPT: a
                    plain state dict, {"state_dict": ...} (DataParallel "module.", "densenet121.",
                    torchxrayvision ResNet's "model." and pre-0.4 "norm.1"/"conv.1" names accepted) or a
                    whole pickled model (torch.save(model), zip format) whose classes need not be
                    installed: it is read with an unpickler that imports only torch / torchvision classes
                    and tensor rebuilders and holds everything else as inert objects, then the tensors
                    are collected from _parameters / _buffers / _modules (op_threshs too). BatchNorm after
                    a convolution is folded into it, pre-activation BatchNorm stored as scale / shift
                    (eps 1e-5, torchvision's); FORMAT.md "Classifier models". Findings: each labelled
                    output, named by the question lexicon; threshold 0.5 on p, "uncertain" band
                    0.4-0.6 (symmetric around the operating point, as wide as the CLIP models' default
                    band), not calibrated, not validated (val_pos 0, AUC NaN) until a site validates it.

Exit status: 0 written, 1 the checkpoint was refused (message names the key, shape or file),
2 usage error.
"""
import argparse
import gzip
import hashlib
import io
import json
import math
import os
import re
import struct
import sys
import zipfile

import numpy as np

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import gguf  # noqa: E402

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)
# CheXzero (rajpurkarlab/CheXzero): pad to square, 0..255 scale, one mean/std for all channels.
CHEXZERO_MEAN, CHEXZERO_STD = 101.48761, 83.43944
SOT, EOT = "<|startoftext|>", "<|endoftext|>"


class ConvertError(Exception):
    pass


# ----------------------------------------------------------- tensor sources


def _zip_is_torchscript(path):
    try:
        with zipfile.ZipFile(path) as z:
            names = z.namelist()
    except (zipfile.BadZipFile, OSError):
        return False
    return any(n.endswith("/constants.pkl") or "/code/" in n for n in names)


def load_torch(path, trust_pickle=False):
    """State dict of a torch.save'd file or TorchScript archive, "module." stripped."""
    import torch
    if not os.path.isfile(path):
        raise ConvertError("%s: no such file" % path)
    if _zip_is_torchscript(path):
        try:
            obj = torch.jit.load(path, map_location="cpu").state_dict()
        except Exception as e:  # torch raises many kinds
            raise ConvertError("%s: TorchScript archive could not be loaded: %s" % (path, e))
    else:
        try:
            obj = torch.load(path, map_location="cpu", weights_only=not trust_pickle)
        except Exception as e:
            hint = "" if trust_pickle else " (if it holds more than tensors and you trust it: --trust-pickle)"
            raise ConvertError("%s: not a readable PyTorch checkpoint: %s%s" % (path, str(e).splitlines()[0], hint))
        if hasattr(obj, "state_dict") and callable(obj.state_dict):
            obj = obj.state_dict()
    if isinstance(obj, dict) and "state_dict" in obj and isinstance(obj["state_dict"], dict):
        obj = obj["state_dict"]
    if not isinstance(obj, dict):
        raise ConvertError("%s: expected a state dict, found %s" % (path, type(obj).__name__))
    sd = {}
    for k, v in obj.items():
        if not isinstance(k, str) or not hasattr(v, "detach"):
            continue
        while k.startswith("module."):
            k = k[len("module."):]
        sd[k] = v.detach()
    return sd


_ST_DTYPES = {"F32": "<f4", "F16": "<f2", "F64": "<f8", "BF16": "<u2",
              "I64": "<i8", "I32": "<i4", "I16": "<i2", "I8": "i1", "U8": "u1", "BOOL": "u1"}


def load_safetensors(path):
    """Tiny safetensors reader: u64 LE header length, JSON header, raw data."""
    with open(path, "rb") as f:
        data = f.read()
    if len(data) < 8:
        raise ConvertError("%s: truncated safetensors file" % path)
    n = struct.unpack("<Q", data[:8])[0]
    if n > len(data) - 8:
        raise ConvertError("%s: safetensors header length %d beyond the file" % (path, n))
    try:
        header = json.loads(data[8:8 + n].decode("utf-8"))
    except (UnicodeDecodeError, ValueError) as e:
        raise ConvertError("%s: bad safetensors header: %s" % (path, e))
    base = 8 + n
    sd = {}
    for name, info in header.items():
        if name == "__metadata__":
            continue
        dt = info.get("dtype")
        if dt not in _ST_DTYPES:
            raise ConvertError("%s: tensor %r has unsupported dtype %r" % (path, name, dt))
        shape = tuple(int(x) for x in info["shape"])
        a, b = info["data_offsets"]
        if not (0 <= a <= b <= len(data) - base):
            raise ConvertError("%s: tensor %r data offsets %r out of bounds" % (path, name, (a, b)))
        arr = np.frombuffer(data, dtype=_ST_DTYPES[dt], count=(b - a) // np.dtype(_ST_DTYPES[dt]).itemsize,
                            offset=base + a)
        if arr.size != int(np.prod(shape, dtype=np.int64)):
            raise ConvertError("%s: tensor %r has %d values for shape %s" % (path, name, arr.size, shape))
        if dt == "BF16":
            arr = (arr.astype(np.uint32) << 16).view(np.float32)
        sd[name] = arr.reshape(shape)
    return sd


class Source:
    """A checkpoint's tensors by name; take() checks presence and shape and records use."""

    def __init__(self, sd, origin):
        self.sd, self.origin, self.used = sd, origin, set()

    def has(self, key):
        return key in self.sd

    def shape(self, key):
        if key not in self.sd:
            raise ConvertError("%s: missing key '%s'" % (self.origin, key))
        return tuple(self.sd[key].shape)

    def take(self, key, shape=None):
        """float32 NumPy copy of a tensor; shape: expected shape (None = any)."""
        got = self.shape(key)
        if shape is not None and tuple(shape) != got:
            raise ConvertError("%s: key '%s' has shape %s, expected %s" % (self.origin, key, got, tuple(shape)))
        v = self.sd[key]
        if hasattr(v, "numpy"):  # torch tensor (any float dtype, bf16 included)
            if not v.is_floating_point():
                raise ConvertError("%s: key '%s' is %s, not floating point" % (self.origin, key, v.dtype))
            a = v.float().numpy()
        else:
            if not np.issubdtype(v.dtype, np.floating):
                raise ConvertError("%s: key '%s' is %s, not floating point" % (self.origin, key, v.dtype))
            a = np.asarray(v, dtype=np.float32)
        a = np.array(a, dtype=np.float32, copy=True)
        if not np.all(np.isfinite(a)):
            raise ConvertError("%s: key '%s' holds NaN or infinity" % (self.origin, key))
        self.used.add(key)
        return a

    def layer_count(self, prefix):
        """Number of layers prefix.N.* (N must run 0..L-1)."""
        rx = re.compile(re.escape(prefix) + r"(\d+)\.")
        ids = {int(m.group(1)) for k in self.sd for m in [rx.match(k)] if m}
        if not ids:
            raise ConvertError("%s: missing key '%s0.*' (no layers found)" % (self.origin, prefix))
        n = max(ids) + 1
        for i in range(n):
            if i not in ids:
                raise ConvertError("%s: missing layer '%s%d.*'" % (self.origin, prefix, i))
        return n

    def check_unused(self, ignorable, allow):
        rest = sorted(k for k in self.sd if k not in self.used and not any(re.fullmatch(p, k) for p in ignorable))
        if rest:
            msg = "%s: %d key(s) this converter does not map (a different architecture?): %s" % (
                self.origin, len(rest), ", ".join("'%s'" % k for k in rest[:8]) + (" ..." if len(rest) > 8 else ""))
            if not allow:
                raise ConvertError(msg + " (--allow-unused to convert anyway)")
            sys.stderr.write("convert.py: warning: " + msg + "\n")


# ------------------------------------------------------------ the model out


class Model:
    """What gets written: typed keys and named tensors (NumPy shapes, float32)."""

    def __init__(self):
        self.kv = []        # (key, gguf type, value, elem type)
        self.tensors = {}   # name -> float32 ndarray, insertion order kept

    def key(self, key, vtype, value, elem_type=None):
        self.kv.append((key, vtype, value, elem_type))

    def get(self, key):
        for k, _, v, _ in self.kv:
            if k == key:
                return v
        return None

    def tensor(self, name, array, shape=None):
        a = np.ascontiguousarray(array, dtype=np.float32)
        if shape is not None and tuple(a.shape) != tuple(shape):
            raise ConvertError("internal: tensor %s has shape %s, expected %s" % (name, a.shape, tuple(shape)))
        self.tensors[name] = a


def heads_for(width, override, what):
    h = override if override else width // 64
    if h <= 0 or width % h:
        raise ConvertError("%s width %d is not divisible into %d heads (give --%s-heads)" % (what, width, h, what))
    return h


def square_grid(n_pos, key, origin):
    g = int(round(math.sqrt(n_pos - 1)))
    if n_pos < 2 or g * g != n_pos - 1:
        raise ConvertError("%s: key '%s' has %d rows: not class + a square grid of patches" % (origin, key, n_pos))
    return g


def vision_keys(m, *, image_size, patch, width, ff, layers, heads, eps, proj_dim, act):
    m.key("clip.vision.image_size", gguf.UINT32, image_size)
    m.key("clip.vision.patch_size", gguf.UINT32, patch)
    m.key("clip.vision.embedding_length", gguf.UINT32, width)
    m.key("clip.vision.feed_forward_length", gguf.UINT32, ff)
    m.key("clip.vision.block_count", gguf.UINT32, layers)
    m.key("clip.vision.attention.head_count", gguf.UINT32, heads)
    m.key("clip.vision.attention.layer_norm_epsilon", gguf.FLOAT32, eps)
    m.key("clip.vision.projection_dim", gguf.UINT32, proj_dim)
    m.key("clip.vision.activation", gguf.STRING, act)


def text_keys(m, *, arch, ctx, vocab, width, ff, layers, heads, eps, act, proj):
    m.key("clip.text.architecture", gguf.STRING, arch)
    m.key("clip.text.context_length", gguf.UINT32, ctx)
    m.key("clip.text.vocab_size", gguf.UINT32, vocab)
    m.key("clip.text.embedding_length", gguf.UINT32, width)
    m.key("clip.text.feed_forward_length", gguf.UINT32, ff)
    m.key("clip.text.block_count", gguf.UINT32, layers)
    m.key("clip.text.attention.head_count", gguf.UINT32, heads)
    m.key("clip.text.attention.layer_norm_epsilon", gguf.FLOAT32, eps)
    m.key("clip.text.activation", gguf.STRING, act)
    m.key("clip.text.projection", gguf.STRING, proj)


def activation(name, where):
    acts = {"quick_gelu": "quick_gelu", "gelu": "gelu"}
    if name not in acts:
        raise ConvertError("%s: activation %r not supported (quick_gelu or gelu (erf))" % (where, name))
    return acts[name]


# ------------------------------------------------------------- tokenizers


def byte_alphabet():
    """GPT-2 / CLIP byte-level alphabet as (byte, char) pairs in CLIP's vocabulary order: printable
    bytes (! .. ~, \u00a1 .. \u00ac, \u00ae .. \u00ff) map to themselves; the other 68 bytes, in
    byte order, to U+0100 onwards."""
    keep = list(range(0x21, 0x7F)) + list(range(0xA1, 0xAD)) + list(range(0xAE, 0x100))
    pairs = [(b, chr(b)) for b in keep]
    for b in range(256):
        if b not in keep:
            pairs.append((b, chr(0x100 + len(pairs) - len(keep))))
    return pairs


def bytes_to_unicode():
    """The 256 byte-level tokens in vocabulary order."""
    return [c for _, c in byte_alphabet()]


def read_clip_merges(path):
    """Merges (list of (a, b)) of a CLIP gzip BPE file or an HF merges.txt."""
    try:
        if path.endswith(".gz"):
            with gzip.open(path, "rb") as f:
                text = f.read().decode("utf-8")
        else:
            with open(path, "rb") as f:
                text = f.read().decode("utf-8")
    except (OSError, EOFError, UnicodeDecodeError) as e:
        raise ConvertError("%s: cannot read BPE merges: %s" % (path, e))
    lines = text.split("\n")
    if lines and lines[0].startswith("#version"):
        lines = lines[1:]
    merges = []
    for i, line in enumerate(lines):
        if not line.strip():
            continue
        parts = line.split()
        if len(parts) != 2:
            raise ConvertError("%s: line %d is not a merge 'a b': %r" % (path, i + 2, line[:60]))
        merges.append((parts[0], parts[1]))
    return merges


def clip_vocab(merges):
    base = bytes_to_unicode()
    return base + [c + "</w>" for c in base] + [a + b for a, b in merges] + [SOT, EOT]


def check_bpe(tokens, merges, origin):
    index = {}
    for i, t in enumerate(tokens):
        if t in index:
            raise ConvertError("%s: inconsistent vocabulary: token %r appears at ids %d and %d" % (origin, t, index[t], i))
        index[t] = i
    for r, (a, b) in enumerate(merges):
        for part in (a, b, a + b):
            if part not in index:
                raise ConvertError("%s: inconsistent vocabulary: merge %d '%s %s' uses %r, not in the vocabulary"
                                   % (origin, r, a, b, part))
    for s in (SOT, EOT):
        if s not in index:
            raise ConvertError("%s: inconsistent vocabulary: no %s token" % (origin, s))


def tokenizer_clip_bpe(m, tokens, merges):
    m.key("tokenizer.ggml.model", gguf.STRING, "clip-bpe")
    m.key("tokenizer.ggml.tokens", gguf.ARRAY, tokens, gguf.STRING)
    m.key("tokenizer.ggml.merges", gguf.ARRAY, ["%s %s" % mg for mg in merges], gguf.STRING)


# ------------------------------------------------------------- openai-clip


def convert_openai(ckpt, bpe_path, args):
    src = Source(load_torch(ckpt, args.trust_pickle), ckpt)
    if src.has("visual.layer1.0.conv1.weight") or src.has("visual.attnpool.positional_embedding"):
        raise ConvertError("%s: ResNet image tower (visual.layer1...): only ViT image towers are supported" % ckpt)
    m = Model()
    # image tower
    D, C, P, P2 = src.shape("visual.conv1.weight")
    if C != 3 or P != P2:
        raise ConvertError("%s: key 'visual.conv1.weight' has shape %s, expected (width, 3, P, P)" % (ckpt, (D, C, P, P2)))
    npos = src.shape("visual.positional_embedding")[0]
    g = square_grid(npos, "visual.positional_embedding", ckpt)
    E = src.shape("visual.proj")[1]
    L = src.layer_count("visual.transformer.resblocks.")
    H = src.shape("visual.transformer.resblocks.0.mlp.c_fc.weight")[0]
    m.tensor("v.patch_embd.weight", src.take("visual.conv1.weight"))
    m.tensor("v.class_embd", src.take("visual.class_embedding", (D,)))
    m.tensor("v.position_embd.weight", src.take("visual.positional_embedding", (npos, D)))
    m.tensor("v.pre_ln.weight", src.take("visual.ln_pre.weight", (D,)))
    m.tensor("v.pre_ln.bias", src.take("visual.ln_pre.bias", (D,)))
    openai_blocks(src, m, "visual.transformer.resblocks.", "v.blk.", L, D, H)
    m.tensor("v.post_ln.weight", src.take("visual.ln_post.weight", (D,)))
    m.tensor("v.post_ln.bias", src.take("visual.ln_post.bias", (D,)))
    m.tensor("v.proj.weight", src.take("visual.proj", (D, E)).T)
    # text tower
    V, W = src.shape("token_embedding.weight")
    ctx = src.shape("positional_embedding")[0]
    TL = src.layer_count("transformer.resblocks.")
    TH = src.shape("transformer.resblocks.0.mlp.c_fc.weight")[0]
    m.tensor("t.token_embd.weight", src.take("token_embedding.weight"))
    m.tensor("t.position_embd.weight", src.take("positional_embedding", (ctx, W)))
    openai_blocks(src, m, "transformer.resblocks.", "t.blk.", TL, W, TH)
    m.tensor("t.post_ln.weight", src.take("ln_final.weight", (W,)))
    m.tensor("t.post_ln.bias", src.take("ln_final.bias", (W,)))
    m.tensor("t.proj.weight", src.take("text_projection", (W, E)).T)
    if src.shape("logit_scale") not in ((), (1,)):
        raise ConvertError("%s: key 'logit_scale' has shape %s, expected a scalar" % (ckpt, src.shape("logit_scale")))
    logit_scale = float(src.take("logit_scale").reshape(-1)[0])
    src.check_unused([r"input_resolution", r"context_length", r"vocab_size"], args.allow_unused)

    # tokenizer
    n_merges = V - 512 - 2
    merges = read_clip_merges(bpe_path)
    if n_merges < 0 or len(merges) < n_merges:
        raise ConvertError("%s: inconsistent vocabulary: token_embedding.weight has %d rows, which needs %d merges; "
                           "the BPE file has %d" % (bpe_path, V, n_merges, len(merges)))
    merges = merges[:n_merges]
    tokens = clip_vocab(merges)
    if len(tokens) != V:
        raise ConvertError("%s: inconsistent vocabulary: %d tokens built, token_embedding.weight has %d rows"
                           % (bpe_path, len(tokens), V))
    check_bpe(tokens, merges, bpe_path)

    common_keys(m, logit_scale, E)
    vision_keys(m, image_size=g * P, patch=P, width=D, ff=H, layers=L, heads=heads_for(D, args.vision_heads, "vision"),
                eps=1e-5, proj_dim=E, act="quick_gelu")
    text_keys(m, arch="clip", ctx=ctx, vocab=V, width=W, ff=TH, layers=TL, heads=heads_for(W, args.text_heads, "text"),
              eps=1e-5, act="quick_gelu", proj="linear")
    tokenizer_clip_bpe(m, tokens, merges)
    source = "openai-clip:%s sha256:%s bpe:%s sha256:%s" % (os.path.basename(ckpt), sha256(ckpt),
                                                          os.path.basename(bpe_path), sha256(bpe_path))
    return m, g * P, CLIP_MEAN, CLIP_STD, os.path.splitext(os.path.basename(ckpt))[0], source


def openai_blocks(src, m, pre, out, L, D, H):
    for i in range(L):
        p, o = "%s%d." % (pre, i), "%s%d." % (out, i)
        w = src.take(p + "attn.in_proj_weight", (3 * D, D))
        b = src.take(p + "attn.in_proj_bias", (3 * D,))
        for j, n in enumerate(("attn_q", "attn_k", "attn_v")):  # torch MHA packs q, k, v in this order
            m.tensor(o + n + ".weight", w[j * D:(j + 1) * D])
            m.tensor(o + n + ".bias", b[j * D:(j + 1) * D])
        m.tensor(o + "attn_out.weight", src.take(p + "attn.out_proj.weight", (D, D)))
        m.tensor(o + "attn_out.bias", src.take(p + "attn.out_proj.bias", (D,)))
        m.tensor(o + "ln1.weight", src.take(p + "ln_1.weight", (D,)))
        m.tensor(o + "ln1.bias", src.take(p + "ln_1.bias", (D,)))
        m.tensor(o + "ln2.weight", src.take(p + "ln_2.weight", (D,)))
        m.tensor(o + "ln2.bias", src.take(p + "ln_2.bias", (D,)))
        m.tensor(o + "ffn_up.weight", src.take(p + "mlp.c_fc.weight", (H, D)))
        m.tensor(o + "ffn_up.bias", src.take(p + "mlp.c_fc.bias", (H,)))
        m.tensor(o + "ffn_down.weight", src.take(p + "mlp.c_proj.weight", (D, H)))
        m.tensor(o + "ffn_down.bias", src.take(p + "mlp.c_proj.bias", (D,)))


def common_keys(m, logit_scale, E):
    m.key("clip.has_vision_encoder", gguf.BOOL, True)
    m.key("clip.has_text_encoder", gguf.BOOL, True)
    m.key("clip.logit_scale", gguf.FLOAT32, logit_scale)
    m.key("clip.projection_dim", gguf.UINT32, E)


# ----------------------------------------------------------------- hf-clip


def read_json(path):
    try:
        with open(path, "rb") as f:
            return json.loads(f.read().decode("utf-8"))
    except OSError as e:
        raise ConvertError("%s: cannot read: %s" % (path, e.strerror or e))
    except (ValueError, UnicodeDecodeError) as e:
        raise ConvertError("%s: not valid JSON: %s" % (path, e))


def load_hf_weights(d, args):
    for index, loader in (("model.safetensors.index.json", load_safetensors),
                          ("pytorch_model.bin.index.json", lambda p: load_torch(p, args.trust_pickle))):
        ip = os.path.join(d, index)
        if os.path.isfile(ip):
            sd = {}
            for shard in sorted(set(read_json(ip).get("weight_map", {}).values())):
                sd.update(loader(os.path.join(d, shard)))
            return sd, ip
    for name, loader in (("model.safetensors", load_safetensors),
                         ("pytorch_model.bin", lambda p: load_torch(p, args.trust_pickle))):
        p = os.path.join(d, name)
        if os.path.isfile(p):
            return loader(p), p
    raise ConvertError("%s: no model.safetensors or pytorch_model.bin" % d)


# transformers' CLIPTextConfig / CLIPVisionConfig defaults (used when config.json omits a field)
HF_TEXT_DEFAULTS = dict(hidden_size=512, intermediate_size=2048, num_hidden_layers=12, num_attention_heads=8,
                        max_position_embeddings=77, vocab_size=49408, hidden_act="quick_gelu", layer_norm_eps=1e-5)
HF_VISION_DEFAULTS = dict(hidden_size=768, intermediate_size=3072, num_hidden_layers=12, num_attention_heads=12,
                          image_size=224, patch_size=32, hidden_act="quick_gelu", layer_norm_eps=1e-5)


def hf_cfg(cfg, section, defaults, cfg_path):
    c = dict(defaults)
    sub = cfg.get(section) or cfg.get(section + "_dict") or {}
    if not isinstance(sub, dict):
        raise ConvertError("%s: '%s' is not an object" % (cfg_path, section))
    c.update({k: v for k, v in sub.items() if v is not None})
    return c


def convert_hf(d, args):
    cfg_path = os.path.join(d, "config.json")
    cfg = read_json(cfg_path)
    tc = hf_cfg(cfg, "text_config", HF_TEXT_DEFAULTS, cfg_path)
    vc = hf_cfg(cfg, "vision_config", HF_VISION_DEFAULTS, cfg_path)
    sd, wpath = load_hf_weights(d, args)
    src = Source(sd, wpath)
    m = Model()

    def check_cfg(section, field, cfgv, actual):
        if int(cfgv) != int(actual):
            raise ConvertError("%s: %s.%s is %s but the weights say %s" % (cfg_path, section, field, cfgv, actual))

    # image tower
    pv = "vision_model."
    D, C, P, P2 = src.shape(pv + "embeddings.patch_embedding.weight")
    if C != 3 or P != P2:
        raise ConvertError("%s: key '%s' has shape %s, expected (width, 3, P, P)"
                           % (wpath, pv + "embeddings.patch_embedding.weight", (D, C, P, P2)))
    npos = src.shape(pv + "embeddings.position_embedding.weight")[0]
    g = square_grid(npos, pv + "embeddings.position_embedding.weight", wpath)
    L = src.layer_count(pv + "encoder.layers.")
    H = src.shape(pv + "encoder.layers.0.mlp.fc1.weight")[0]
    E = src.shape("visual_projection.weight")[0]
    for field, actual in (("hidden_size", D), ("patch_size", P), ("image_size", g * P), ("num_hidden_layers", L),
                          ("intermediate_size", H)):
        check_cfg("vision_config", field, vc[field], actual)
    if "projection_dim" in cfg:
        check_cfg("config", "projection_dim", cfg["projection_dim"], E)
    m.tensor("v.patch_embd.weight", src.take(pv + "embeddings.patch_embedding.weight"))
    m.tensor("v.class_embd", src.take(pv + "embeddings.class_embedding", (D,)))
    m.tensor("v.position_embd.weight", src.take(pv + "embeddings.position_embedding.weight", (npos, D)))
    m.tensor("v.pre_ln.weight", src.take(pv + "pre_layrnorm.weight", (D,)))
    m.tensor("v.pre_ln.bias", src.take(pv + "pre_layrnorm.bias", (D,)))
    hf_clip_blocks(src, m, pv + "encoder.layers.", "v.blk.", L, D, H)
    m.tensor("v.post_ln.weight", src.take(pv + "post_layernorm.weight", (D,)))
    m.tensor("v.post_ln.bias", src.take(pv + "post_layernorm.bias", (D,)))
    m.tensor("v.proj.weight", src.take("visual_projection.weight", (E, D)))
    # text tower
    pt = "text_model."
    V, W = src.shape(pt + "embeddings.token_embedding.weight")
    ctx = src.shape(pt + "embeddings.position_embedding.weight")[0]
    TL = src.layer_count(pt + "encoder.layers.")
    TH = src.shape(pt + "encoder.layers.0.mlp.fc1.weight")[0]
    for field, actual in (("hidden_size", W), ("max_position_embeddings", ctx), ("vocab_size", V),
                          ("num_hidden_layers", TL), ("intermediate_size", TH)):
        check_cfg("text_config", field, tc[field], actual)
    m.tensor("t.token_embd.weight", src.take(pt + "embeddings.token_embedding.weight"))
    m.tensor("t.position_embd.weight", src.take(pt + "embeddings.position_embedding.weight", (ctx, W)))
    hf_clip_blocks(src, m, pt + "encoder.layers.", "t.blk.", TL, W, TH)
    m.tensor("t.post_ln.weight", src.take(pt + "final_layer_norm.weight", (W,)))
    m.tensor("t.post_ln.bias", src.take(pt + "final_layer_norm.bias", (W,)))
    m.tensor("t.proj.weight", src.take("text_projection.weight", (E, W)))
    if src.shape("logit_scale") not in ((), (1,)):
        raise ConvertError("%s: key 'logit_scale' has shape %s, expected a scalar" % (wpath, src.shape("logit_scale")))
    logit_scale = float(src.take("logit_scale").reshape(-1)[0])
    src.check_unused([r"(text|vision)_model\.embeddings\.position_ids"], args.allow_unused)

    vh, th = int(vc["num_attention_heads"]), int(tc["num_attention_heads"])
    if args.vision_heads:
        vh = args.vision_heads
    if args.text_heads:
        th = args.text_heads
    for what, width, h in (("vision", D, vh), ("text", W, th)):
        if h <= 0 or width % h:
            raise ConvertError("%s: %s width %d is not divisible into %d heads" % (cfg_path, what, width, h))

    # tokenizer: vocab.json gives ids, merges.txt the ranks
    vpath, mpath = os.path.join(d, "vocab.json"), os.path.join(d, "merges.txt")
    vocab = read_json(vpath)
    if not isinstance(vocab, dict):
        raise ConvertError("%s: expected a JSON object token -> id" % vpath)
    tokens = [None] * len(vocab)
    for t, i in vocab.items():
        if not isinstance(i, int) or not 0 <= i < len(vocab) or tokens[i] is not None:
            raise ConvertError("%s: inconsistent vocabulary: ids are not 0..%d each once (token %r -> %r)"
                               % (vpath, len(vocab) - 1, t, i))
        tokens[i] = t
    if len(tokens) != V:
        raise ConvertError("%s: inconsistent vocabulary: %d tokens, %s has %d rows"
                           % (vpath, len(tokens), pt + "embeddings.token_embedding.weight", V))
    merges = read_clip_merges(mpath)
    check_bpe(tokens, merges, mpath)

    common_keys(m, logit_scale, E)
    vision_keys(m, image_size=g * P, patch=P, width=D, ff=H, layers=L, heads=vh, eps=float(vc["layer_norm_eps"]),
                proj_dim=E, act=activation(vc["hidden_act"], cfg_path + " vision_config.hidden_act"))
    text_keys(m, arch="clip", ctx=ctx, vocab=V, width=W, ff=TH, layers=TL, heads=th, eps=float(tc["layer_norm_eps"]),
              act=activation(tc["hidden_act"], cfg_path + " text_config.hidden_act"), proj="linear")
    tokenizer_clip_bpe(m, tokens, merges)
    source = "hf-clip:%s sha256:%s" % (os.path.basename(os.path.normpath(d)), sha256(wpath))
    return m, g * P, CLIP_MEAN, CLIP_STD, os.path.basename(os.path.normpath(d)), source


def hf_clip_blocks(src, m, pre, out, L, D, H):
    for i in range(L):
        p, o = "%s%d." % (pre, i), "%s%d." % (out, i)
        for a, b in (("q_proj", "attn_q"), ("k_proj", "attn_k"), ("v_proj", "attn_v"), ("out_proj", "attn_out")):
            m.tensor(o + b + ".weight", src.take(p + "self_attn." + a + ".weight", (D, D)))
            m.tensor(o + b + ".bias", src.take(p + "self_attn." + a + ".bias", (D,)))
        for a, b in (("layer_norm1", "ln1"), ("layer_norm2", "ln2")):
            m.tensor(o + b + ".weight", src.take(p + a + ".weight", (D,)))
            m.tensor(o + b + ".bias", src.take(p + a + ".bias", (D,)))
        m.tensor(o + "ffn_up.weight", src.take(p + "mlp.fc1.weight", (H, D)))
        m.tensor(o + "ffn_up.bias", src.take(p + "mlp.fc1.bias", (H,)))
        m.tensor(o + "ffn_down.weight", src.take(p + "mlp.fc2.weight", (D, H)))
        m.tensor(o + "ffn_down.bias", src.take(p + "mlp.fc2.bias", (D,)))


# --------------------------------------------------------------- open-clip


def convert_open_clip(d, args):
    cfg_path = os.path.join(d, "open_clip_config.json")
    cfg = read_json(cfg_path)
    mc = cfg.get("model_cfg", cfg)
    vcfg, tcfg = mc.get("vision_cfg") or {}, mc.get("text_cfg") or {}
    pp = cfg.get("preprocess_cfg") or {}
    if "timm_model_name" not in vcfg:
        raise ConvertError("%s: model_cfg.vision_cfg.timm_model_name missing: only timm ViT image towers are supported"
                           % cfg_path)
    if "hf_model_name" not in tcfg:
        raise ConvertError("%s: model_cfg.text_cfg.hf_model_name missing: only HF BERT text towers are supported"
                           % cfg_path)
    proj_type = tcfg.get("hf_proj_type", tcfg.get("proj", "mlp"))
    pooler = tcfg.get("hf_pooler_type", tcfg.get("pooler_type", "cls_last_hidden_state_pooler"))
    if proj_type not in ("mlp", "linear"):
        raise ConvertError("%s: text projection %r not supported (mlp or linear)" % (cfg_path, proj_type))
    if pooler != "cls_last_hidden_state_pooler":
        raise ConvertError("%s: text pooler %r not supported (cls_last_hidden_state_pooler)" % (cfg_path, pooler))
    if vcfg.get("timm_pool", "") not in ("", "token"):
        raise ConvertError("%s: timm_pool %r not supported (class-token pooling only)" % (cfg_path, vcfg["timm_pool"]))
    if vcfg.get("timm_proj", "linear") != "linear":
        raise ConvertError("%s: timm_proj %r not supported (linear only)" % (cfg_path, vcfg["timm_proj"]))
    ctx = int(tcfg.get("context_length", 77))

    wpath = os.path.join(d, "open_clip_pytorch_model.bin")
    src = Source(load_torch(wpath, args.trust_pickle), wpath)
    m = Model()
    # image tower (timm VisionTransformer)
    pv = "visual.trunk."
    D, C, P, P2 = src.shape(pv + "patch_embed.proj.weight")
    if C != 3 or P != P2:
        raise ConvertError("%s: key '%s' has shape %s, expected (width, 3, P, P)"
                           % (wpath, pv + "patch_embed.proj.weight", (D, C, P, P2)))
    pos_shape = src.shape(pv + "pos_embed")
    if len(pos_shape) != 3 or pos_shape[0] != 1 or pos_shape[2] != D:
        raise ConvertError("%s: key '%s' has shape %s, expected (1, N+1, %d)" % (wpath, pv + "pos_embed", pos_shape, D))
    npos = pos_shape[1]
    g = square_grid(npos, pv + "pos_embed", wpath)
    if "image_size" in vcfg and int(vcfg["image_size"]) != g * P:
        raise ConvertError("%s: vision_cfg.image_size is %s but the weights say %d" % (cfg_path, vcfg["image_size"], g * P))
    L = src.layer_count(pv + "blocks.")
    H = src.shape(pv + "blocks.0.mlp.fc1.weight")[0]
    E = src.shape("visual.head.proj.weight")[0]
    if "embed_dim" in mc and int(mc["embed_dim"]) != E:
        raise ConvertError("%s: model_cfg.embed_dim is %s but visual.head.proj.weight says %d" % (cfg_path, mc["embed_dim"], E))
    m.tensor("v.patch_embd.weight", src.take(pv + "patch_embed.proj.weight"))
    m.tensor("v.patch_embd.bias", src.take(pv + "patch_embed.proj.bias", (D,)))
    m.tensor("v.class_embd", src.take(pv + "cls_token", (1, 1, D)).reshape(D))
    m.tensor("v.position_embd.weight", src.take(pv + "pos_embed").reshape(npos, D))
    for i in range(L):
        p, o = "%sblocks.%d." % (pv, i), "v.blk.%d." % i
        w = src.take(p + "attn.qkv.weight", (3 * D, D))
        b = src.take(p + "attn.qkv.bias", (3 * D,))
        for j, n in enumerate(("attn_q", "attn_k", "attn_v")):  # timm reshapes qkv to (3, heads, hd): q, k, v
            m.tensor(o + n + ".weight", w[j * D:(j + 1) * D])
            m.tensor(o + n + ".bias", b[j * D:(j + 1) * D])
        m.tensor(o + "attn_out.weight", src.take(p + "attn.proj.weight", (D, D)))
        m.tensor(o + "attn_out.bias", src.take(p + "attn.proj.bias", (D,)))
        for a, c in (("norm1", "ln1"), ("norm2", "ln2")):
            m.tensor(o + c + ".weight", src.take(p + a + ".weight", (D,)))
            m.tensor(o + c + ".bias", src.take(p + a + ".bias", (D,)))
        m.tensor(o + "ffn_up.weight", src.take(p + "mlp.fc1.weight", (H, D)))
        m.tensor(o + "ffn_up.bias", src.take(p + "mlp.fc1.bias", (H,)))
        m.tensor(o + "ffn_down.weight", src.take(p + "mlp.fc2.weight", (D, H)))
        m.tensor(o + "ffn_down.bias", src.take(p + "mlp.fc2.bias", (D,)))
    m.tensor("v.post_ln.weight", src.take(pv + "norm.weight", (D,)))
    m.tensor("v.post_ln.bias", src.take(pv + "norm.bias", (D,)))
    m.tensor("v.proj.weight", src.take("visual.head.proj.weight", (E, D)))
    # text tower (HF BertModel)
    pt = "text.transformer."
    V, W = src.shape(pt + "embeddings.word_embeddings.weight")
    npos_t = src.shape(pt + "embeddings.position_embeddings.weight")[0]
    if npos_t < ctx:
        raise ConvertError("%s: key '%s' has %d rows, fewer than context_length %d"
                           % (wpath, pt + "embeddings.position_embeddings.weight", npos_t, ctx))
    TL = src.layer_count(pt + "encoder.layer.")
    TH = src.shape(pt + "encoder.layer.0.intermediate.dense.weight")[0]
    m.tensor("t.token_embd.weight", src.take(pt + "embeddings.word_embeddings.weight"))
    # BERT has 512 learned positions; only the first context_length are reachable (FORMAT.md note)
    m.tensor("t.position_embd.weight", src.take(pt + "embeddings.position_embeddings.weight", (npos_t, W))[:ctx])
    ntype = src.shape(pt + "embeddings.token_type_embeddings.weight")[0]
    m.tensor("t.token_type_embd.weight", src.take(pt + "embeddings.token_type_embeddings.weight", (ntype, W)))
    m.tensor("t.embd_ln.weight", src.take(pt + "embeddings.LayerNorm.weight", (W,)))
    m.tensor("t.embd_ln.bias", src.take(pt + "embeddings.LayerNorm.bias", (W,)))
    for i in range(TL):
        p, o = "%sencoder.layer.%d." % (pt, i), "t.blk.%d." % i
        for a, c in (("attention.self.query", "attn_q"), ("attention.self.key", "attn_k"),
                     ("attention.self.value", "attn_v"), ("attention.output.dense", "attn_out")):
            m.tensor(o + c + ".weight", src.take(p + a + ".weight", (W, W)))
            m.tensor(o + c + ".bias", src.take(p + a + ".bias", (W,)))
        for a, c in (("attention.output.LayerNorm", "ln1"), ("output.LayerNorm", "ln2")):
            m.tensor(o + c + ".weight", src.take(p + a + ".weight", (W,)))
            m.tensor(o + c + ".bias", src.take(p + a + ".bias", (W,)))
        m.tensor(o + "ffn_up.weight", src.take(p + "intermediate.dense.weight", (TH, W)))
        m.tensor(o + "ffn_up.bias", src.take(p + "intermediate.dense.bias", (TH,)))
        m.tensor(o + "ffn_down.weight", src.take(p + "output.dense.weight", (W, TH)))
        m.tensor(o + "ffn_down.bias", src.take(p + "output.dense.bias", (W,)))
    if proj_type == "mlp":
        M = src.shape("text.proj.0.weight")[0]
        m.tensor("t.proj.0.weight", src.take("text.proj.0.weight", (M, W)))
        m.tensor("t.proj.2.weight", src.take("text.proj.2.weight", (E, M)))
    else:
        m.tensor("t.proj.weight", src.take("text.proj.weight", (E, W)))
    if src.shape("logit_scale") not in ((), (1,)):
        raise ConvertError("%s: key 'logit_scale' has shape %s, expected a scalar" % (wpath, src.shape("logit_scale")))
    logit_scale = float(src.take("logit_scale").reshape(-1)[0])
    src.check_unused([r"text\.transformer\.embeddings\.(position_ids|token_type_ids)",
                      r"text\.transformer\.pooler\.dense\.(weight|bias)"], args.allow_unused)

    # tokenizer: WordPiece vocab.txt, one token per line, id = line number
    vpath = os.path.join(d, "vocab.txt")
    try:
        with open(vpath, "rb") as f:
            tokens = f.read().decode("utf-8").split("\n")
    except (OSError, UnicodeDecodeError) as e:
        raise ConvertError("%s: cannot read WordPiece vocabulary: %s" % (vpath, e))
    if tokens and tokens[-1] == "":
        tokens.pop()
    tokens = [t.rstrip("\r") for t in tokens]
    if len(tokens) != V:
        raise ConvertError("%s: inconsistent vocabulary: %d tokens, %s has %d rows"
                           % (vpath, len(tokens), pt + "embeddings.word_embeddings.weight", V))
    seen = {}
    for i, t in enumerate(tokens):
        if t in seen:
            raise ConvertError("%s: inconsistent vocabulary: token %r on lines %d and %d" % (vpath, t, seen[t] + 1, i + 1))
        seen[t] = i
    for s in ("[CLS]", "[SEP]", "[UNK]", "[PAD]"):
        if s not in seen:
            raise ConvertError("%s: inconsistent vocabulary: no %s token" % (vpath, s))
    tok_name = str(tcfg.get("hf_tokenizer_name", tcfg.get("hf_model_name", "")))
    lowercase = "uncased" in tok_name.lower() or "cased" not in tok_name.lower()
    if args.lowercase is not None:
        lowercase = args.lowercase == "yes"

    common_keys(m, logit_scale, E)
    vision_keys(m, image_size=g * P, patch=P, width=D, ff=H, layers=L, heads=heads_for(D, args.vision_heads, "vision"),
                eps=1e-6, proj_dim=E, act="gelu")
    text_keys(m, arch="bert", ctx=ctx, vocab=V, width=W, ff=TH, layers=TL, heads=heads_for(W, args.text_heads, "text"),
              eps=1e-12, act="gelu", proj=proj_type)
    m.key("tokenizer.ggml.model", gguf.STRING, "wordpiece")
    m.key("tokenizer.ggml.tokens", gguf.ARRAY, tokens, gguf.STRING)
    m.key("cxr.tokenizer.lowercase", gguf.BOOL, lowercase)
    # BiomedCLIP is called through open_clip, whose HFTokenizer cleans the text first
    m.key("cxr.tokenizer.clean", gguf.STRING, "openclip")
    mean = tuple(float(x) for x in pp.get("mean", CLIP_MEAN))
    std = tuple(float(x) for x in pp.get("std", CLIP_STD))
    source = "open-clip:%s sha256:%s" % (os.path.basename(os.path.normpath(d)), sha256(wpath))
    return m, g * P, mean, std, os.path.basename(os.path.normpath(d)), source


# ------------------------------------------------------- classifier models
#
# txv-densenet / txv-resnet / chexnet-densenet (FORMAT.md "Classifier models"). Unlike the CLIP
# converters these compute with the weights: every BatchNorm that follows a convolution is folded
# into it, the pre-activation ones become scale/shift. BatchNorm eps is not in a checkpoint:
# torchvision's 1e-5 is used (what torchxrayvision and CheXNet build on).

BN_EPS = 1e-5

# torchxrayvision "all" (REFERENCE.md §8) and ChestX-ray14 in CheXNet's order
TXV_ALL_LABELS = ("Atelectasis", "Consolidation", "Infiltration", "Pneumothorax", "Edema", "Emphysema", "Fibrosis",
                  "Effusion", "Pneumonia", "Pleural_Thickening", "Cardiomegaly", "Nodule", "Mass", "Hernia",
                  "Lung Lesion", "Fracture", "Lung Opacity", "Enlarged Cardiomediastinum")
CHEXNET_LABELS = ("Atelectasis", "Cardiomegaly", "Effusion", "Infiltration", "Mass", "Nodule", "Pneumonia",
                  "Pneumothorax", "Consolidation", "Edema", "Emphysema", "Fibrosis", "Pleural_Thickening", "Hernia")

# label (lower case, '_' and ' ' alike) -> (lexicon name, display, SNOMED CT): a copy of the entries of
# plugin/question/lexicon.c that these labels name (tests/model/test_convert_classifier.py checks it
# against that file).
LEXICON = {
    "atelectasis": ("atelectasis", "atelectasis", "46621007"),
    "consolidation": ("consolidation", "consolidation", "95436008"),
    "infiltration": ("infiltration", "infiltration", ""),
    "pneumothorax": ("pneumothorax", "pneumothorax", "36118008"),
    "edema": ("pulmonary_edema", "pulmonary edema", "19242006"),
    "emphysema": ("emphysema", "emphysema", ""),
    "fibrosis": ("fibrosis", "pulmonary fibrosis", ""),
    "effusion": ("pleural_effusion", "pleural effusion", "60046008"),
    "pneumonia": ("pneumonia", "pneumonia", "233604007"),
    "pleural thickening": ("pleural_thickening", "pleural thickening", ""),
    "cardiomegaly": ("cardiomegaly", "cardiomegaly", "8186001"),
    "nodule": ("nodule", "pulmonary nodule", "427359005"),
    "mass": ("mass", "mass", ""),
    "hernia": ("hernia", "hiatal hernia", ""),
    "lung lesion": ("lung_lesion", "lung lesion", ""),
    "fracture": ("fracture", "fracture", ""),
    "lung opacity": ("lung_opacity", "lung opacity", ""),
    "enlarged cardiomediastinum": ("enlarged_cardiomediastinum", "enlarged cardiomediastinum", ""),
    "no finding": ("no_finding", "no finding", ""),
    "covid-19": ("covid19", "COVID-19", "840539006"),
    "covid19": ("covid19", "COVID-19", "840539006"),
    "support devices": ("support_devices", "support devices", ""),
}

CLASSIFIERS = {
    # format: (architecture, channels, default size, default labels, preprocessing)
    "txv-densenet": ("densenet", 1, 224, TXV_ALL_LABELS, "txv"),
    "txv-resnet": ("resnet", 1, 512, TXV_ALL_LABELS, "txv"),
    "chexnet-densenet": ("densenet", 3, 224, CHEXNET_LABELS, "imagenet"),
}
IMAGENET_MEAN, IMAGENET_STD = (0.485, 0.456, 0.406), (0.229, 0.224, 0.225)
UNCERTAIN_LOW, UNCERTAIN_HIGH = 0.4, 0.6


class _Held:
    """Stands in for a class the permissive unpickler will not import (torchxrayvision's models):
    keeps whatever state pickle gives it, executes nothing."""

    def __init__(self, *args, **kw):
        self._args, self._kw = args, kw

    def __setstate__(self, state):
        if isinstance(state, tuple) and len(state) == 2:  # (dict, slots)
            state = dict(state[0] or {}, **(state[1] or {}))
        if isinstance(state, dict):
            self.__dict__.update(state)
        else:
            self._state = state

    def __call__(self, *args, **kw):  # a held function used in a REDUCE
        return _Held(*args, **kw)


def _allowed_global(mod, name):
    """What the permissive unpickler really imports: torch's tensor/storage rebuilders and classes of
    torch / torchvision / collections. Everything else (any function, any other module) is held."""
    if mod == "collections" and name == "OrderedDict":
        return True
    if mod in ("builtins", "__builtin__") and name in ("set", "frozenset", "dict", "list", "tuple", "object"):
        return True
    if mod in ("torch._utils", "torch._tensor") and name.startswith("_rebuild"):
        return True
    if mod == "torch" and name in ("Size", "device"):
        return True
    if mod == "torch.nn.parameter" and name == "Parameter":
        return True
    if mod.startswith(("torch.nn.modules.", "torchvision.models.")):
        return True
    return False


def _rebuild_tensor(storage, offset, size, stride, *rest):
    import torch
    return torch.as_strided(storage, tuple(size), tuple(stride), offset)


def load_pickled_model(path):
    """torch.save(model) of a model whose classes need not be importable: a zip archive's data.pkl read
    with an unpickler that imports only _allowed_global names and holds everything else (_Held); the
    storages are read from the archive (torch 1.13's torch.load ignores a custom pickle_module)."""
    import importlib
    import pickle
    import torch
    try:
        zf = zipfile.ZipFile(path)
    except (zipfile.BadZipFile, OSError) as e:
        raise ConvertError("%s: not a zip-format torch.save file (a whole pickled model must be saved by "
                           "torch >= 1.6): %s" % (path, e))
    with zf:
        pkl = [n for n in zf.namelist() if n.endswith("/data.pkl") or n == "data.pkl"]
        if len(pkl) != 1:
            raise ConvertError("%s: no single data.pkl in the archive" % path)
        base = pkl[0][:-len("data.pkl")]
        storages = {}

        def persistent_load(pid):
            if not (isinstance(pid, tuple) and len(pid) >= 5 and pid[0] == "storage"):
                raise pickle.UnpicklingError("unexpected persistent id %r" % (pid,))
            _, stype, key, _, numel = pid[:5]
            if key not in storages:
                dtype = getattr(stype, "dtype", None)
                if not isinstance(dtype, torch.dtype):
                    raise pickle.UnpicklingError("storage type %r" % (stype,))
                raw = bytearray(zf.read(base + "data/" + str(key)))
                t = torch.frombuffer(raw, dtype=dtype) if raw else torch.empty(0, dtype=dtype)
                if t.numel() != numel:
                    raise pickle.UnpicklingError("storage %s: %d values, %d expected" % (key, t.numel(), numel))
                storages[key] = t
            return storages[key]

        class Unpickler(pickle.Unpickler):
            def find_class(self, mod, name):
                if mod == "torch._utils" and name == "_rebuild_tensor_v2":
                    return _rebuild_tensor
                if mod == "torch" and name.endswith("Storage"):
                    return getattr(torch, name)
                if _allowed_global(mod, name):
                    try:
                        obj = getattr(importlib.import_module(mod), name)
                        if isinstance(obj, type) or mod.startswith("torch._utils"):
                            return obj
                    except (ImportError, AttributeError):
                        pass
                return type(name, (_Held,), {"_held_from": "%s.%s" % (mod, name)})

            def persistent_load(self, pid):
                return persistent_load(pid)

        u = Unpickler(io.BytesIO(zf.read(pkl[0])), encoding="utf-8")
        return u.load()


def _collect_tensors(obj, prefix, out, seen):
    """State-dict-style names of the tensors in a module graph (nn.Module or _Held alike)."""
    import torch
    if id(obj) in seen:
        return
    seen.add(id(obj))
    d = getattr(obj, "__dict__", {})
    for attr in ("_parameters", "_buffers"):
        for k, v in (d.get(attr) or {}).items():
            if isinstance(v, torch.Tensor):
                out[prefix + k] = v.detach()
    for k, v in (d.get("_modules") or {}).items():
        if v is not None:
            _collect_tensors(v, prefix + k + ".", out, seen)
    if not prefix and isinstance(d.get("op_threshs"), torch.Tensor):  # a plain attribute in torchxrayvision
        out.setdefault("op_threshs", d["op_threshs"].detach())


def load_classifier_checkpoint(path):
    """(state dict of tensors, what was found) from a plain state dict, {"state_dict": ...} or a whole
    pickled model (torch.save(model)) whose classes need not be importable."""
    import torch
    if not os.path.isfile(path):
        raise ConvertError("%s: no such file" % path)
    try:
        obj, kind = torch.load(path, map_location="cpu", weights_only=True), "state dict"
    except Exception:
        try:
            obj = load_pickled_model(path)
        except ConvertError:
            raise
        except Exception as e:
            raise ConvertError("%s: not a readable PyTorch checkpoint: %s" % (path, str(e).splitlines()[0]))
        kind = "pickled model"
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj, kind = obj["state_dict"], "dict with state_dict"
    sd = {}
    if isinstance(obj, dict):
        for k, v in obj.items():
            if isinstance(k, str) and isinstance(v, torch.Tensor):
                sd[k] = v.detach()
    else:
        name = getattr(type(obj), "_held_from", type(obj).__module__ + "." + type(obj).__name__)
        _collect_tensors(obj, "", sd, set())
        kind = "pickled %s" % name
    if not sd:
        raise ConvertError("%s: no tensors found (%s)" % (path, kind))
    return sd, kind


_OLD_NAME = re.compile(r"\.(norm|conv|relu)\.(\d)(?=\.)")


def classifier_keys(sd, arch):
    """Normalise key names: DataParallel 'module.', CheXNet 'densenet121.', torchxrayvision ResNet's
    'model.', pre-0.4 torchvision 'norm.1' -> 'norm1', CheXNet's 'classifier.0.' -> 'classifier.'."""
    out = {}
    for k, v in sd.items():
        k0 = k
        changed = True
        while changed:
            changed = False
            for p in ("module.", "densenet121.", "model."):
                if k.startswith(p):
                    k, changed = k[len(p):], True
        k = _OLD_NAME.sub(lambda m: "." + m.group(1) + m.group(2), k)
        if arch == "densenet" and k.startswith("classifier.0."):
            k = "classifier." + k[len("classifier.0."):]
        if k in out:
            raise ConvertError("keys '%s' and another one both map to '%s'" % (k0, k))
        out[k] = v
    return out


def bn_affine(src, p, C):
    """(scale, shift) of an eval-mode BatchNorm: γ/σ, β − μ·γ/σ, σ = √(var + eps); float64."""
    g, b, mu, var = (src.take(p + s, (C,)).astype(np.float64) for s in ("weight", "bias", "running_mean",
                                                                     "running_var"))
    if np.any(var < 0):
        raise ConvertError("%s: key '%srunning_var' has negative values" % (src.origin, p))
    s = g / np.sqrt(var + BN_EPS)
    return s, b - mu * s


def conv_bn(src, conv, bn, shape):
    """Convolution weight (no bias) with the BatchNorm after it folded in: (weight, bias)."""
    w = src.take(conv + "weight", shape).astype(np.float64)
    s, t = bn_affine(src, bn, shape[0])
    return w * s[:, None, None, None], t


def new_writer(architecture, args, default_name, desc, source):
    """A GGUF writer holding the architecture and the provenance keys every converted file carries."""
    w = gguf.Writer()
    w.add_str("general.architecture", architecture)
    w.add_str("general.name", args.name or default_name)
    w.add_str("general.version", args.version or "unspecified")
    w.add_str("general.license", args.license or "unspecified")
    w.add_str("general.description", args.description or desc)
    w.add_str("cxr.provenance.source", args.source or source)
    w.add_str("cxr.provenance.training_data", args.training_data or "unspecified")
    return w


def stem(src, m, conv, bn, out, cin):
    """The 7x7 stem convolution `conv` with the BatchNorm `bn` folded, as `out`; its width."""
    key = conv + "weight"
    w0 = src.shape(key)
    if len(w0) != 4 or w0[2:] != (7, 7):
        raise ConvertError("%s: key '%s' has shape %s, expected (W, C, 7, 7)" % (src.origin, key, w0))
    if w0[1] != cin:
        raise ConvertError("%s: key '%s' has %d input channels, this format takes %d" % (src.origin, key, w0[1], cin))
    w, b = conv_bn(src, conv, bn, (w0[0], cin, 7, 7))
    m.tensor(out + ".weight", w)
    m.tensor(out + ".bias", b)
    return w0[0]


def convert_densenet(src, m, cin):
    F0 = stem(src, m, "features.conv0.", "features.norm0.", "v.conv0", cin)
    blocks, C, G, B = [], F0, None, None
    for bi in range(1, 5):
        n = 0
        while src.has("features.denseblock%d.denselayer%d.conv1.weight" % (bi, n + 1)):
            n += 1
        if n == 0:
            raise ConvertError("%s: missing key 'features.denseblock%d.denselayer1.conv1.weight'" % (src.origin, bi))
        blocks.append(n)
        for li in range(1, n + 1):
            p = "features.denseblock%d.denselayer%d." % (bi, li)
            if G is None:
                B, G = src.shape(p + "conv1.weight")[0], src.shape(p + "conv2.weight")[0]
            s, t = bn_affine(src, p + "norm1.", C)
            q = "v.db%d.l%d." % (bi, li)
            m.tensor(q + "norm1.scale", s)
            m.tensor(q + "norm1.shift", t)
            w, b = conv_bn(src, p + "conv1.", p + "norm2.", (B, C, 1, 1))
            m.tensor(q + "conv1.weight", w)
            m.tensor(q + "conv1.bias", b)
            m.tensor(q + "conv2.weight", src.take(p + "conv2.weight", (G, B, 3, 3)))
            C += G
        if bi < 4:
            p = "features.transition%d." % bi
            s, t = bn_affine(src, p + "norm.", C)
            m.tensor("v.tr%d.norm.scale" % bi, s)
            m.tensor("v.tr%d.norm.shift" % bi, t)
            m.tensor("v.tr%d.conv.weight" % bi, src.take(p + "conv.weight", (C // 2, C, 1, 1)))
            C //= 2
    s, t = bn_affine(src, "features.norm5.", C)
    m.tensor("v.norm5.scale", s)
    m.tensor("v.norm5.shift", t)
    if B % G:
        raise ConvertError("%s: bottleneck width %d is not a multiple of the growth rate %d" % (src.origin, B, G))
    m.key("clip.vision.architecture", gguf.STRING, "densenet")
    m.key("clip.vision.densenet.blocks", gguf.ARRAY, blocks, gguf.UINT32)
    m.key("clip.vision.densenet.growth", gguf.UINT32, G)
    m.key("clip.vision.densenet.init_features", gguf.UINT32, F0)
    m.key("clip.vision.densenet.bn_size", gguf.UINT32, B // G)
    return "classifier.", C, "DenseNet (blocks %s, growth %d, stem %d)" % ("-".join(map(str, blocks)), G, F0)


def convert_resnet(src, m, cin):
    W = stem(src, m, "conv1.", "bn1.", "v.conv1", cin)
    blocks, C = [], W
    for s in range(1, 5):
        n = src.layer_count("layer%d." % s)
        blocks.append(n)
        M = W << (s - 1)
        for j in range(n):
            p, q = "layer%d.%d." % (s, j), "v.layer%d.%d." % (s, j)
            if not src.has(p + "conv3.weight"):
                raise ConvertError("%s: missing key '%sconv3.weight' (only bottleneck ResNets such as "
                                   "ResNet-50 are supported)" % (src.origin, p))
            for name, shape in (("conv1", (M, C, 1, 1)), ("conv2", (M, M, 3, 3)), ("conv3", (4 * M, M, 1, 1))):
                w, b = conv_bn(src, p + name + ".", p + "bn" + name[-1] + ".", shape)
                m.tensor(q + name + ".weight", w)
                m.tensor(q + name + ".bias", b)
            if j == 0:
                w, b = conv_bn(src, p + "downsample.0.", p + "downsample.1.", (4 * M, C, 1, 1))
                m.tensor(q + "downsample.weight", w)
                m.tensor(q + "downsample.bias", b)
            elif src.has(p + "downsample.0.weight"):
                raise ConvertError("%s: key '%sdownsample.0.weight': only a stage's first block has a shortcut "
                                   "convolution here" % (src.origin, p))
            C = 4 * M
    m.key("clip.vision.architecture", gguf.STRING, "resnet")
    m.key("clip.vision.resnet.blocks", gguf.ARRAY, blocks, gguf.UINT32)
    m.key("clip.vision.resnet.width", gguf.UINT32, W)
    return "fc.", C, "ResNet (bottleneck blocks %s, width %d)" % ("-".join(map(str, blocks)), W)


def parse_op_threshs(s, K):
    """--op-threshs: comma-separated numbers (nan for none) or a JSON file holding a list of K numbers
    (null for none) or a {"op_threshs": [...]} object."""
    if os.path.isfile(s):
        try:
            with open(s, encoding="utf-8") as f:
                v = json.load(f)
        except (OSError, ValueError) as e:
            raise ConvertError("--op-threshs %s: %s" % (s, e))
        if isinstance(v, dict):
            v = v.get("op_threshs")
        if not isinstance(v, list):
            raise ConvertError("--op-threshs %s: expected a JSON list (or {\"op_threshs\": [...]})" % s)
        vals = [float("nan") if x is None else x for x in v]
    else:
        vals = s.split(",")
    try:
        t = [float(x) for x in vals]
    except (TypeError, ValueError):
        raise ConvertError("--op-threshs: %r is not a list of numbers (nan for none)" % (s,))
    return check_op_threshs(t, K, "--op-threshs")


def check_op_threshs(t, K, what):
    if len(t) != K:
        raise ConvertError("%s: %d values for %d outputs" % (what, len(t), K))
    for i, x in enumerate(t):
        if not (math.isnan(x) or 0 < x < 1):
            raise ConvertError("%s: value %d (%r) is neither in (0, 1) nor NaN" % (what, i, x))
    return [float(x) for x in t]


def finding_of(label):
    """(name, display, snomed) of a label; None for torchxrayvision's unused output ""."""
    if not label.strip():
        return None
    key = re.sub(r"[_\s]+", " ", label.strip().lower())
    if key in LEXICON:
        return LEXICON[key]
    name = re.sub(r"[^a-z0-9]+", "_", key).strip("_")
    return (name or "output", key, "")


def convert_classifier(ckpt, fmt, args):
    arch, cin, size, labels, pre = CLASSIFIERS[fmt]
    raw, kind = load_classifier_checkpoint(ckpt)
    sd = classifier_keys(raw, arch)
    op = sd.pop("op_threshs", None)
    src = Source(sd, "%s (%s)" % (ckpt, kind))
    m = Model()
    head, C, what = (convert_densenet if arch == "densenet" else convert_resnet)(src, m, cin)
    hw = src.shape(head + "weight")
    if len(hw) != 2 or hw[1] != C:
        raise ConvertError("%s: key '%sweight' has shape %s, expected (K, %d)" % (src.origin, head, hw, C))
    K = hw[0]
    m.tensor("c.head.weight", src.take(head + "weight", (K, C)))
    m.tensor("c.head.bias", src.take(head + "bias", (K,)))
    src.check_unused([r".*num_batches_tracked"], args.allow_unused)
    if args.labels is not None:
        labels = [x.strip() for x in args.labels.split(",")]
    if len(labels) != K:
        raise ConvertError("%s: the head has %d outputs but %d labels were given%s" % (
            src.origin, K, len(labels), "" if args.labels is not None else " (the default list; give --labels)"))
    if args.op_threshs is not None:
        op = parse_op_threshs(args.op_threshs, K)
    elif op is not None:
        op = check_op_threshs([float(x) for x in op.detach().double().flatten().tolist()], K,
                              "%s: op_threshs in the checkpoint" % ckpt)
    m.key("clip.projection_dim", gguf.UINT32, K)
    size = args.size or args.preproc_size or size
    m.key("clip.vision.image_size", gguf.UINT32, size)
    m.key("clip.vision.in_channels", gguf.UINT32, cin)
    m.key("cxr.classifier.labels", gguf.ARRAY, list(labels), gguf.STRING)
    m.key("cxr.classifier.activation", gguf.STRING, "sigmoid")
    # findings: one per labelled output
    outs, names, disp, snomed = [], [], [], []
    for i, lab in enumerate(labels):
        f = finding_of(lab)
        if f is None:
            continue
        if f[0] in names:
            raise ConvertError("labels %r and %r both name the finding '%s'" % (labels[outs[names.index(f[0])]],
                                                                               lab, f[0]))
        outs.append(i)
        names.append(f[0])
        disp.append(f[1])
        snomed.append(f[2])
    F = len(outs)
    if F == 0:
        raise ConvertError("no output has a label: nothing to answer with")
    nan = float("nan")
    thr = [op[i] if op is not None else nan for i in outs]
    rule = ("0.5 on p: the checkpoint's operating point (op_thresh normalisation maps it to 0.5) where op_thresh "
            "is given, else 0.5 of the sigmoid" if op is not None and any(not math.isnan(x) for x in thr)
            else "0.5 of the sigmoid (no operating points given)")
    m.key("cxr.findings.names", gguf.ARRAY, names, gguf.STRING)
    m.key("cxr.findings.display", gguf.ARRAY, disp, gguf.STRING)
    m.key("cxr.findings.snomed", gguf.ARRAY, snomed, gguf.STRING)
    m.key("cxr.findings.output", gguf.ARRAY, outs, gguf.UINT32)
    m.key("cxr.findings.op_thresh", gguf.ARRAY, thr, gguf.FLOAT32)
    for key, val in (("calib_a", 1.0), ("calib_b", 0.0), ("calibrated", 0.0), ("threshold", 0.5),
                     ("uncertain_low", UNCERTAIN_LOW), ("uncertain_high", UNCERTAIN_HIGH), ("val_auc", nan),
                     ("val_auc_lo", nan), ("val_auc_hi", nan), ("val_pos", 0.0), ("val_neg", 0.0)):
        m.key("cxr.findings." + key, gguf.ARRAY, [val] * F, gguf.FLOAT32)
    m.key("cxr.findings.threshold_rule", gguf.STRING, rule)
    pp = dict(size=size, policy="crop", channels=cin)
    if pre == "txv":
        pp.update(interp="area", scale=1.0, mean=(127.5,) * 3, std=(255.0 / 2048.0,) * 3)
    else:
        pp.update(interp="bilinear", scale=1.0 / 255.0, mean=IMAGENET_MEAN, std=IMAGENET_STD)
    desc = ("%s image classifier, %d input channel(s), %d px, %d sigmoid outputs; converted from %s by cxrvqa "
            "model/tools/convert/convert.py" % (what, cin, pp["size"], K, fmt))
    source = "%s:%s sha256:%s" % (fmt, os.path.basename(ckpt), sha256(ckpt))
    default_name = os.path.splitext(os.path.basename(ckpt))[0]
    return m, pp, desc, default_name, source


# ------------------------------------------------------------------ output


def sha256(path):
    h = hashlib.sha256()
    with open(path, "rb") as f:
        for block in iter(lambda: f.read(1 << 20), b""):
            h.update(block)
    return h.hexdigest()


def is_f16_candidate(name, a):
    """--f16 rule (FORMAT.md note): every 2-D tensor named *.weight."""
    return a.ndim == 2 and name.endswith(".weight")


def floats3(s, what):
    try:
        v = [float(x) for x in s.split(",")]
    except ValueError:
        raise ConvertError("%s: %r is not a number or three comma-separated numbers" % (what, s))
    if len(v) == 1:
        v = v * 3
    if len(v) != 3:
        raise ConvertError("%s: one or three values, got %d" % (what, len(v)))
    return tuple(v)


def finish(m, image_size, mean, std, default_name, source, fmt, args):
    """Add provenance and preprocessing keys, write the file."""
    pp = dict(size=image_size, policy="crop", interp="bicubic", channels=3, scale=1.0 / 255.0, mean=mean, std=std)
    if args.preset == "chexzero":
        pp.update(policy="pad", scale=1.0, mean=(CHEXZERO_MEAN,) * 3, std=(CHEXZERO_STD,) * 3)
    elif args.preset == "clip":
        pp.update(mean=CLIP_MEAN, std=CLIP_STD)
    for k in ("size", "policy", "interp", "channels", "scale"):
        v = getattr(args, "preproc_" + k)
        if v is not None:
            pp[k] = v
    if args.preproc_mean is not None:
        pp["mean"] = floats3(args.preproc_mean, "--preproc-mean")
    if args.preproc_std is not None:
        pp["std"] = floats3(args.preproc_std, "--preproc-std")
    if pp["size"] <= 0 or pp["channels"] not in (1, 3) or not pp["scale"] > 0 or min(pp["std"]) <= 0:
        raise ConvertError("preprocessing: size > 0, channels 1 or 3, scale > 0 and std > 0 needed, got %r" % (pp,))

    v = m.get
    desc = ("ViT image tower (width %d, %d layers, patch %d, %d px) + %s text tower (width %d, %d layers), "
            "embedding %d; converted from %s by cxrvqa model/tools/convert/convert.py" %
            (v("clip.vision.embedding_length"), v("clip.vision.block_count"), v("clip.vision.patch_size"),
             v("clip.vision.image_size"), v("clip.text.architecture").upper(), v("clip.text.embedding_length"),
             v("clip.text.block_count"), v("clip.projection_dim"), fmt))
    w = new_writer("clip", args, default_name, desc, source)
    for key, vt, val, et in m.kv:
        w.add(key, vt, val, et)
        if key == "clip.vision.activation":
            w.add_arr("clip.vision.image_mean", gguf.FLOAT32, pp["mean"])
            w.add_arr("clip.vision.image_std", gguf.FLOAT32, pp["std"])
    w.add_u32("cxr.preproc.size", pp["size"])
    w.add_str("cxr.preproc.policy", pp["policy"])
    w.add_str("cxr.preproc.interp", pp["interp"])
    w.add_u32("cxr.preproc.channels", pp["channels"])
    w.add_f32("cxr.preproc.scale", pp["scale"])
    w.add_arr("cxr.preproc.mean", gguf.FLOAT32, pp["mean"])
    w.add_arr("cxr.preproc.std", gguf.FLOAT32, pp["std"])
    return write_model(w, m, args)


def write_model(w, m, args):
    """Tensors (F16 where --f16 says), then the file, atomically. Returns the summary line."""
    n16 = 0
    for name, a in m.tensors.items():
        f16 = args.f16 and is_f16_candidate(name, a)
        try:
            w.add_tensor(name, a, gguf.F16 if f16 else gguf.F32)
        except gguf.GGUFError as e:
            raise ConvertError(str(e))
        n16 += f16
    tmp = args.out + ".tmp"
    try:
        w.write(tmp)
        os.replace(tmp, args.out)
    except OSError as e:
        raise ConvertError("%s: cannot write: %s" % (args.out, e.strerror or e))
    n_params = sum(a.size for a in m.tensors.values())
    return "%s: %d tensors (%d F16), %.1fM parameters, %d keys" % (args.out, len(m.tensors), n16, n_params / 1e6,
                                                                     len(w.kv))


def finish_classifier(m, pp, desc, default_name, source, args):
    """Provenance and preprocessing keys of a classifier (FORMAT.md), then the file."""
    for k in ("policy", "interp", "scale"):
        v = getattr(args, "preproc_" + k)
        if v is not None:
            pp[k] = v
    if args.preproc_channels is not None and args.preproc_channels != pp["channels"]:
        raise ConvertError("--preproc-channels %d: the first convolution takes %d" % (args.preproc_channels,
                                                                                     pp["channels"]))
    if args.preproc_mean is not None:
        pp["mean"] = floats3(args.preproc_mean, "--preproc-mean")
    if args.preproc_std is not None:
        pp["std"] = floats3(args.preproc_std, "--preproc-std")
    if pp["size"] <= 0 or not pp["scale"] > 0 or min(pp["std"]) <= 0:
        raise ConvertError("preprocessing: size > 0, scale > 0 and std > 0 needed, got %r" % (pp,))
    w = new_writer("cxr-classifier", args, default_name, desc, source)
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", False)
    for key, vt, val, et in m.kv:
        w.add(key, vt, val, et)
    w.add_u32("cxr.preproc.size", pp["size"])
    w.add_str("cxr.preproc.policy", pp["policy"])
    w.add_str("cxr.preproc.interp", pp["interp"])
    w.add_u32("cxr.preproc.channels", pp["channels"])
    w.add_f32("cxr.preproc.scale", pp["scale"])
    w.add_arr("cxr.preproc.mean", gguf.FLOAT32, pp["mean"])
    w.add_arr("cxr.preproc.std", gguf.FLOAT32, pp["std"])
    return write_model(w, m, args)


def parse_args(argv):
    ap = argparse.ArgumentParser(prog="convert.py", description="Convert a CLIP-style checkpoint to cxrvqa GGUF "
                                 "(model/FORMAT.md).")
    ap.add_argument("format", choices=("openai-clip", "hf-clip", "open-clip") + tuple(CLASSIFIERS))
    ap.add_argument("inputs", nargs="+", metavar="IN", help="openai-clip: CHECKPOINT.pt BPE_VOCAB.txt.gz; "
                    "hf-clip / open-clip: CHECKPOINT_DIR; txv-densenet / txv-resnet / chexnet-densenet: CKPT")
    ap.add_argument("out", metavar="OUT.gguf")
    ap.add_argument("--f16", action="store_true", help="store 2-D *.weight tensors as F16")
    for k in ("name", "version", "license", "description", "source", "training-data"):
        ap.add_argument("--" + k, help="provenance: " + k)
    ap.add_argument("--preset", choices=("clip", "chexzero"), help="preprocessing preset (default: the format's own)")
    ap.add_argument("--preproc-size", type=int)
    ap.add_argument("--preproc-policy", choices=("pad", "crop", "stretch"))
    ap.add_argument("--preproc-interp", choices=("bicubic", "bilinear", "area"))
    ap.add_argument("--preproc-channels", type=int, choices=(1, 3))
    ap.add_argument("--preproc-scale", type=float)
    ap.add_argument("--preproc-mean")
    ap.add_argument("--preproc-std")
    ap.add_argument("--vision-heads", type=int)
    ap.add_argument("--text-heads", type=int)
    ap.add_argument("--lowercase", choices=("yes", "no"), help="open-clip: WordPiece lower-casing (default from "
                    "the tokenizer name: 'uncased' or unknown -> yes)")
    ap.add_argument("--allow-unused", action="store_true", help="warn instead of refusing unmapped checkpoint keys")
    ap.add_argument("--trust-pickle", action="store_true", help="allow full unpickling of torch checkpoints")
    ap.add_argument("--labels", help="classifiers: output labels A,B,... in output order ('' for an unused output; "
                    "default: the format's list)")
    ap.add_argument("--op-threshs", help="classifiers: per-output operating thresholds t1,t2,... (nan for none) or "
                    "a JSON file with the list (default: the checkpoint's op_threshs, if it has them)")
    ap.add_argument("--size", type=int, help="classifiers: input size S (default 224; 512 for txv-resnet)")
    args = ap.parse_args(argv)
    cls = args.format in CLASSIFIERS
    want = 2 if args.format == "openai-clip" else 1
    if len(args.inputs) != want:
        ap.error("%s takes %s then OUT.gguf" % (args.format, "CHECKPOINT.pt BPE_VOCAB.txt.gz" if want == 2
                                                 else "CKPT" if cls else "CHECKPOINT_DIR"))
    if cls and (args.preset or args.vision_heads or args.text_heads or args.lowercase):
        ap.error("--preset, --vision-heads, --text-heads and --lowercase are for CLIP formats")
    if not cls and (args.labels is not None or args.op_threshs is not None or args.size is not None):
        ap.error("--labels, --op-threshs and --size are for classifier formats")
    return args


def main(argv=None):
    args = parse_args(sys.argv[1:] if argv is None else argv)
    try:
        if args.format in CLASSIFIERS:
            print(finish_classifier(*convert_classifier(args.inputs[0], args.format, args), args))
            return 0
        if args.format == "openai-clip":
            res = convert_openai(args.inputs[0], args.inputs[1], args)
        elif args.format == "hf-clip":
            if not os.path.isdir(args.inputs[0]):
                raise ConvertError("%s: not a directory" % args.inputs[0])
            res = convert_hf(args.inputs[0], args)
        else:
            if not os.path.isdir(args.inputs[0]):
                raise ConvertError("%s: not a directory" % args.inputs[0])
            res = convert_open_clip(args.inputs[0], args)
        print(finish(*res, args.format, args))
    except ConvertError as e:
        sys.stderr.write("convert.py: %s\n" % e)
        return 1
    return 0


if __name__ == "__main__":
    sys.exit(main())
