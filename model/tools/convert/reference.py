"""reference.py — the independent PyTorch reference for cxrvqa's CLIP-style
engine. It reads each checkpoint format directly, by its own key names (it
never reads our GGUF and shares no code with convert.py), and computes the
forward passes as the upstream projects define them:

  openai-clip  OpenAI CLIP model.py: conv1 (no bias) -> [class] + positions -> ln_pre -> pre-LN
               residual blocks with torch's nn.MultiheadAttention math and QuickGELU -> ln_post on
               the class token -> @ proj. Text: ids padded with 0 to the context, causal mask,
               ln_final, the row at argmax(ids) (the first end-of-text), @ text_projection.
  hf-clip      transformers CLIPModel: separate q/k/v (q scaled by head_dim^-0.5), hidden_act and
               eps from config.json, pooling at the first eos_token_id (argmax when it is 2).
  open-clip    BiomedCLIP through open_clip: timm VisionTransformer (patch bias, no ln_pre, eps
               1e-6, GELU, qkv reshaped (3, heads, head_dim)), class token after `norm`, head.proj;
               HF BertModel (embeddings + token type 0 + LayerNorm, post-LN layers, eps 1e-12,
               ids padded with [PAD] to the context under an attention mask), row 0, MLP
               projection (Linear, GELU, Linear; no biases).
Embeddings are L2-normalised. For an input size other than the training size, the patch
positions are resized as a (grid, grid) image: bicubic, align_corners=False, class position
untouched (model/FORMAT.md). Computation is in float64 by default.

    /usr/bin/python3 model/tools/convert/reference.py FORMAT CHECKPOINT --image RAW.f32 [--json] [--dump DIR]
    /usr/bin/python3 model/tools/convert/reference.py FORMAT CHECKPOINT --tokens 49406,320,49407 [--json]
    /usr/bin/python3 model/tools/convert/reference.py FORMAT CHECKPOINT --text "no pleural effusion" [--bpe F.gz]
  FORMAT openai-clip (CHECKPOINT = the .pt file; --bpe needed for --text), hf-clip or open-clip
  (CHECKPOINT = the directory). RAW.f32 = little-endian float32, 3 x S x S (or 1 x S x S,
  repeated). --dump DIR writes each stage as DIR/<stage>.f32 plus DIR/manifest.json (name,
  shape, file): v.embd (patch embeddings + class + positions), v.pre_ln, v.blk.N, v.pooled,
  v.proj, v.embedding; t.embd, t.embd_ln (bert), t.blk.N (first n rows), t.pooled, t.proj,
  t.embedding. --round-f16 rounds every 2-D weight to F16 first (what convert.py --f16 stores).
  --json prints {"embedding": [...], "dim": E} like `cxrvqa embed --json`.

Classifier formats (txv-densenet, txv-resnet, chexnet-densenet): load() hands them to
reference_classifier.py (torchvision's own DenseNet-121 / ResNet-50; m.logits(chw)).

Library use: m = load(fmt, path, bpe=None); m.embed_image(chw_array, dump=None) -> np.ndarray;
m.embed_tokens(ids, dump=None); m.tokenize(text) (needs model/tools/convert/ref_tokenizer.py).
"""
import argparse
import json
import math
import os
import struct
import sys
import zipfile

import numpy as np
import torch
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))


class RefError(Exception):
    pass


# ----------------------------------------------------------------- loading


def torch_state(path):
    if not os.path.isfile(path):
        raise RefError("%s: no such file" % path)
    try:
        with zipfile.ZipFile(path) as z:
            scripted = any(n.endswith("/constants.pkl") for n in z.namelist())
    except zipfile.BadZipFile:
        scripted = False
    obj = torch.jit.load(path, map_location="cpu") if scripted else torch.load(path, map_location="cpu",
                                                                              weights_only=True)
    if isinstance(obj, torch.jit.ScriptModule):
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    out = {}
    for k, v in obj.items():
        if isinstance(v, torch.Tensor):
            out[k[7:] if k.startswith("module.") else k] = v
    return out


def safetensors_state(path):
    raw = open(path, "rb").read()
    (hlen,) = struct.unpack_from("<Q", raw, 0)
    header = json.loads(raw[8:8 + hlen])
    dtypes = {"F32": torch.float32, "F16": torch.float16, "BF16": torch.bfloat16, "F64": torch.float64,
              "I64": torch.int64, "I32": torch.int32}
    out = {}
    for k, h in header.items():
        if k == "__metadata__":
            continue
        a, b = h["data_offsets"]
        buf = bytearray(raw[8 + hlen + a:8 + hlen + b])
        t = torch.frombuffer(buf, dtype=dtypes[h["dtype"]]) if b > a else torch.empty(0, dtype=dtypes[h["dtype"]])
        out[k] = t.reshape(h["shape"])
    return out


def prepare(sd, dtype, round_f16):
    """Float tensors to dtype; with round_f16, 2-D (after dropping leading 1s) weights via F16."""
    out = {}
    for k, v in sd.items():
        if not v.is_floating_point():
            out[k] = v
            continue
        if round_f16 and v.squeeze().dim() == 2:
            v = v.to(torch.float16)
        out[k] = v.to(dtype)
    return out


def n_layers(sd, prefix):
    n = 0
    while any(k.startswith("%s%d." % (prefix, n)) for k in sd):
        n += 1
    return n


def quick_gelu(x):
    return x * torch.sigmoid(1.702 * x)


def gelu_erf(x):
    return F.gelu(x)  # exact (erf) form, torch's default


ACTS = {"quick_gelu": quick_gelu, "gelu": gelu_erf}


def resize_positions(pos, grid, new_grid):
    """pos (1 + grid^2, D) -> (1 + new_grid^2, D): patch positions as a (grid, grid) image, bicubic."""
    if new_grid == grid:
        return pos
    D = pos.shape[1]
    img = pos[1:].reshape(grid, grid, D).permute(2, 0, 1).unsqueeze(0)
    img = F.interpolate(img, size=(new_grid, new_grid), mode="bicubic", align_corners=False)
    return torch.cat([pos[:1], img[0].permute(1, 2, 0).reshape(new_grid * new_grid, D)], 0)


class Dump:
    """Collects named stage outputs; save() writes DIR/<name>.f32 + manifest.json."""

    def __init__(self):
        self.stages = []

    def __call__(self, name, t):
        self.stages.append((name, t.detach().to(torch.float64).cpu().numpy().copy()))

    def save(self, d, extra=None):
        os.makedirs(d, exist_ok=True)
        man = {"stages": [], "dtype": "float32", "byte_order": "little"}
        man.update(extra or {})
        for name, a in self.stages:
            fn = name + ".f32"
            a.astype("<f4").tofile(os.path.join(d, fn))
            man["stages"].append({"name": name, "shape": list(a.shape), "file": fn})
        with open(os.path.join(d, "manifest.json"), "w") as f:
            json.dump(man, f, indent=1)


def _noop(name, t):
    pass


def as_image(x, dtype):
    x = torch.as_tensor(np.asarray(x, dtype=np.float32)).to(dtype)
    if x.dim() == 3:
        x = x.unsqueeze(0)
    if x.dim() != 4 or x.shape[1] not in (1, 3) or x.shape[2] != x.shape[3]:
        raise RefError("image must be 1 or 3 x S x S, got %s" % (tuple(x.shape),))
    if x.shape[1] == 1:
        x = x.repeat(1, 3, 1, 1)
    return x


def l2n(x):
    return x / x.norm(dim=-1, keepdim=True)


class Base:
    tokenizer_kind = None

    def tokenize(self, text):
        """Ids with specials (no padding), via model/tools/convert/ref_tokenizer.py."""
        try:
            sys.path.insert(0, HERE)
            import ref_tokenizer  # noqa: F401
        except ImportError:
            raise RefError("--text needs model/tools/convert/ref_tokenizer.py (not present); give --tokens")
        return tokenize_with(ref_tokenizer, self, text)


def tokenize_with(mod, model, text):
    """Ids with specials, without padding, from ref_tokenizer's ClipBPE (clip.tokenize(truncate=True))
    or BertWordPiece (lower-cased, with open_clip's cleaning, as BiomedCLIP is called)."""
    if model.tokenizer_kind == "clip-bpe":
        tok = mod.ClipBPE([tuple(m.split()) if isinstance(m, str) else tuple(m) for m in model.merges])
        if tok.tokens != list(model.tokens):
            raise RefError("the vocabulary built from the merges differs from the model's token list")
    else:
        tok = mod.BertWordPiece(model.tokens, lowercase=getattr(model, "lowercase", True), openclip_clean=True)
    ids, n = tok.tokenize(text, model.context)
    return [int(i) for i in ids[:n]]


# ------------------------------------------------------------- openai-clip


class OpenAIClip(Base):
    tokenizer_kind = "clip-bpe"

    def __init__(self, path, bpe=None, dtype=torch.float64, round_f16=False):
        self.sd = prepare(torch_state(path), dtype, round_f16)
        self.dtype = dtype
        sd = self.sd
        self.width = sd["visual.conv1.weight"].shape[0]
        self.patch = sd["visual.conv1.weight"].shape[-1]
        self.grid = int(round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1)))
        self.v_layers = n_layers(sd, "visual.transformer.resblocks.")
        self.t_width = sd["ln_final.weight"].shape[0]
        self.t_layers = n_layers(sd, "transformer.resblocks.")
        self.context = sd["positional_embedding"].shape[0]
        self.vocab = sd["token_embedding.weight"].shape[0]
        self.eot_id, self.pad_id = self.vocab - 1, 0
        self.bpe = bpe
        self._toks = None

    @property
    def tokens(self):
        self._load_vocab()
        return self._toks[0]

    @property
    def merges(self):
        self._load_vocab()
        return self._toks[1]

    def _load_vocab(self):
        if self._toks is None:
            import gzip
            if not self.bpe:
                raise RefError("openai-clip --text needs --bpe BPE_VOCAB.txt.gz")
            lines = gzip.open(self.bpe).read().decode("utf-8").split("\n")[1:]
            merges = [ln for ln in lines if ln.strip()][:self.vocab - 514]
            bs = list(range(ord("!"), ord("~") + 1)) + list(range(ord("\u00a1"), ord("\u00ac") + 1)) + \
                list(range(ord("\u00ae"), ord("\u00ff") + 1))
            cs = list(bs)
            for b in range(256):
                if b not in bs:
                    bs.append(b)
                    cs.append(256 + len(cs) - 188)
            chars = [chr(c) for c in cs]
            toks = chars + [c + "</w>" for c in chars] + ["".join(m.split()) for m in merges] + \
                ["<|startoftext|>", "<|endoftext|>"]
            self._toks = (toks, merges)

    @staticmethod
    def _ln(x, sd, p, eps=1e-5):
        return F.layer_norm(x, x.shape[-1:], sd[p + ".weight"], sd[p + ".bias"], eps)

    def _blocks(self, x, prefix, L, heads, mask, dump, out):
        """x: (seq, batch, width), as OpenAI's Transformer runs it."""
        sd = self.sd
        D = x.shape[-1]
        for i in range(L):
            p = "%s%d." % (prefix, i)
            h = self._ln(x, sd, p + "ln_1")
            a, _ = F.multi_head_attention_forward(
                h, h, h, D, heads, sd[p + "attn.in_proj_weight"], sd[p + "attn.in_proj_bias"], None, None, False,
                0.0, sd[p + "attn.out_proj.weight"], sd[p + "attn.out_proj.bias"], training=False,
                need_weights=False, attn_mask=mask)
            x = x + a
            h = self._ln(x, sd, p + "ln_2")
            h = quick_gelu(F.linear(h, sd[p + "mlp.c_fc.weight"], sd[p + "mlp.c_fc.bias"]))
            x = x + F.linear(h, sd[p + "mlp.c_proj.weight"], sd[p + "mlp.c_proj.bias"])
            out("%s%d" % (dump, i), x[:, 0])
        return x

    def embed_image(self, img, dump=None):
        out = dump or _noop
        sd = self.sd
        x = as_image(img, self.dtype)
        S = x.shape[-1]
        if S % self.patch:
            raise RefError("image size %d is not a multiple of the patch size %d" % (S, self.patch))
        x = F.conv2d(x, sd["visual.conv1.weight"], stride=self.patch)            # (1, D, g, g)
        x = x.reshape(1, self.width, -1).permute(0, 2, 1)                         # (1, g*g, D)
        cls = sd["visual.class_embedding"] + torch.zeros(1, 1, self.width, dtype=self.dtype)
        x = torch.cat([cls, x], 1)
        x = x + resize_positions(sd["visual.positional_embedding"], self.grid, S // self.patch)
        out("v.embd", x[0])
        x = self._ln(x, sd, "visual.ln_pre")
        out("v.pre_ln", x[0])
        x = self._blocks(x.permute(1, 0, 2), "visual.transformer.resblocks.", self.v_layers, self.width // 64, None,
                         "v.blk.", lambda n, t: out(n, t))
        x = self._ln(x.permute(1, 0, 2)[:, 0, :], sd, "visual.ln_post")
        out("v.pooled", x[0])
        x = x @ sd["visual.proj"]
        out("v.proj", x[0])
        x = l2n(x)
        out("v.embedding", x[0])
        return x[0].numpy()

    def embed_tokens(self, ids, dump=None):
        out = dump or _noop
        sd = self.sd
        ids = [int(i) for i in ids]
        n = len(ids)
        if not 1 <= n <= self.context or min(ids) < 0 or max(ids) >= self.vocab:
            raise RefError("need 1..%d ids in 0..%d" % (self.context, self.vocab - 1))
        text = torch.zeros(1, self.context, dtype=torch.long)                   # clip.tokenize pads with 0
        text[0, :n] = torch.tensor(ids)
        x = sd["token_embedding.weight"][text] + sd["positional_embedding"]
        out("t.embd", x[0, :n])
        mask = torch.empty(self.context, self.context, dtype=self.dtype).fill_(float("-inf")).triu_(1)
        x = self._blocks(x.permute(1, 0, 2), "transformer.resblocks.", self.t_layers, self.t_width // 64, mask,
                         "t.blk.", lambda nm, t: out(nm, t[:n]))
        x = self._ln(x.permute(1, 0, 2), sd, "ln_final")
        x = x[torch.arange(1), text.argmax(dim=-1)]
        out("t.pooled", x[0])
        x = x @ sd["text_projection"]
        out("t.proj", x[0])
        x = l2n(x)
        out("t.embedding", x[0])
        return x[0].numpy()


# ----------------------------------------------------------------- hf-clip


class HFClip(Base):
    tokenizer_kind = "clip-bpe"

    def __init__(self, d, dtype=torch.float64, round_f16=False, **_):
        cfg = json.load(open(os.path.join(d, "config.json")))
        st = os.path.join(d, "model.safetensors")
        sd = safetensors_state(st) if os.path.isfile(st) else torch_state(os.path.join(d, "pytorch_model.bin"))
        self.sd, self.dtype = prepare(sd, dtype, round_f16), dtype
        self.tc, self.vc = cfg.get("text_config", {}), cfg.get("vision_config", {})
        vocab = json.load(open(os.path.join(d, "vocab.json")))
        self.tokens = [t for t, _ in sorted(vocab.items(), key=lambda kv: kv[1])]
        ml = open(os.path.join(d, "merges.txt"), encoding="utf-8").read().split("\n")
        self.merges = [m for m in ml[1:] if m.strip()]
        self.context = self.sd["text_model.embeddings.position_embedding.weight"].shape[0]
        self.eot_id = int(self.tc.get("eos_token_id", 2))
        if self.eot_id == 2:
            self.eot_id = len(self.tokens) - 1
        self.pad_id = 0

    def _encoder(self, x, prefix, cfg, causal, dump, out):
        sd = self.sd
        heads = int(cfg.get("num_attention_heads"))
        act = ACTS[cfg.get("hidden_act", "quick_gelu")]
        eps = float(cfg.get("layer_norm_eps", 1e-5))
        B, N, D = x.shape
        hd = D // heads
        mask = None
        if causal:
            mask = torch.full((N, N), float("-inf"), dtype=self.dtype).triu(1)
        for i in range(n_layers(sd, prefix)):
            p = "%s%d." % (prefix, i)
            h = F.layer_norm(x, (D,), sd[p + "layer_norm1.weight"], sd[p + "layer_norm1.bias"], eps)
            q = F.linear(h, sd[p + "self_attn.q_proj.weight"], sd[p + "self_attn.q_proj.bias"]) * hd ** -0.5
            k = F.linear(h, sd[p + "self_attn.k_proj.weight"], sd[p + "self_attn.k_proj.bias"])
            v = F.linear(h, sd[p + "self_attn.v_proj.weight"], sd[p + "self_attn.v_proj.bias"])
            q, k, v = (t.reshape(B, N, heads, hd).transpose(1, 2) for t in (q, k, v))
            w = q @ k.transpose(-1, -2)
            if mask is not None:
                w = w + mask
            a = (torch.softmax(w, -1) @ v).transpose(1, 2).reshape(B, N, D)
            x = x + F.linear(a, sd[p + "self_attn.out_proj.weight"], sd[p + "self_attn.out_proj.bias"])
            h = F.layer_norm(x, (D,), sd[p + "layer_norm2.weight"], sd[p + "layer_norm2.bias"], eps)
            h = act(F.linear(h, sd[p + "mlp.fc1.weight"], sd[p + "mlp.fc1.bias"]))
            x = x + F.linear(h, sd[p + "mlp.fc2.weight"], sd[p + "mlp.fc2.bias"])
            out("%s%d" % (dump, i), x[0])
        return x

    def embed_image(self, img, dump=None):
        out = dump or _noop
        sd, p = self.sd, "vision_model."
        eps = float(self.vc.get("layer_norm_eps", 1e-5))
        x = as_image(img, self.dtype)
        w = sd[p + "embeddings.patch_embedding.weight"]
        P, D = w.shape[-1], w.shape[0]
        S = x.shape[-1]
        if S % P:
            raise RefError("image size %d is not a multiple of the patch size %d" % (S, P))
        pos = sd[p + "embeddings.position_embedding.weight"]
        grid = int(round(math.sqrt(pos.shape[0] - 1)))
        x = F.conv2d(x, w, stride=P).flatten(2).transpose(1, 2)
        x = torch.cat([sd[p + "embeddings.class_embedding"].expand(1, 1, -1), x], 1)
        x = x + resize_positions(pos, grid, S // P)
        out("v.embd", x[0])
        x = F.layer_norm(x, (D,), sd[p + "pre_layrnorm.weight"], sd[p + "pre_layrnorm.bias"], eps)
        out("v.pre_ln", x[0])
        x = self._encoder(x, p + "encoder.layers.", self.vc, False, "v.blk.", out)
        x = F.layer_norm(x[:, 0], (D,), sd[p + "post_layernorm.weight"], sd[p + "post_layernorm.bias"], eps)
        out("v.pooled", x[0])
        x = F.linear(x, sd["visual_projection.weight"])
        out("v.proj", x[0])
        x = l2n(x)
        out("v.embedding", x[0])
        return x[0].numpy()

    def embed_tokens(self, ids, dump=None):
        out = dump or _noop
        sd, p = self.sd, "text_model."
        ids = torch.tensor([[int(i) for i in ids]])
        n = ids.shape[1]
        if not 1 <= n <= self.context:
            raise RefError("need 1..%d ids" % self.context)
        x = sd[p + "embeddings.token_embedding.weight"][ids] + sd[p + "embeddings.position_embedding.weight"][:n]
        out("t.embd", x[0])
        x = self._encoder(x, p + "encoder.layers.", self.tc, True, "t.blk.", out)
        W = x.shape[-1]
        x = F.layer_norm(x, (W,), sd[p + "final_layer_norm.weight"], sd[p + "final_layer_norm.bias"],
                         float(self.tc.get("layer_norm_eps", 1e-5)))
        eos = int(self.tc.get("eos_token_id", 2))
        if eos == 2:
            at = int(ids[0].argmax())
        else:
            hits = (ids[0] == eos).nonzero()
            at = int(hits[0]) if len(hits) else n - 1
        x = x[:, at]
        out("t.pooled", x[0])
        x = F.linear(x, sd["text_projection.weight"])
        out("t.proj", x[0])
        x = l2n(x)
        out("t.embedding", x[0])
        return x[0].numpy()


# --------------------------------------------------------------- open-clip


class OpenClipBiomed(Base):
    tokenizer_kind = "wordpiece"

    def __init__(self, d, dtype=torch.float64, round_f16=False, **_):
        cfg = json.load(open(os.path.join(d, "open_clip_config.json")))["model_cfg"]
        self.sd = prepare(torch_state(os.path.join(d, "open_clip_pytorch_model.bin")), dtype, round_f16)
        self.dtype = dtype
        self.context = int(cfg["text_cfg"].get("context_length", 77))
        self.tokens = open(os.path.join(d, "vocab.txt"), encoding="utf-8").read().split("\n")
        if self.tokens and self.tokens[-1] == "":
            self.tokens.pop()
        self.merges = None
        self.pad_id = self.tokens.index("[PAD]")
        self.eot_id = self.tokens.index("[SEP]")

    def embed_image(self, img, dump=None):
        out = dump or _noop
        sd, p = self.sd, "visual.trunk."
        x = as_image(img, self.dtype)
        w = sd[p + "patch_embed.proj.weight"]
        P, D = w.shape[-1], w.shape[0]
        heads = D // 64
        S = x.shape[-1]
        if S % P:
            raise RefError("image size %d is not a multiple of the patch size %d" % (S, P))
        x = F.conv2d(x, w, sd[p + "patch_embed.proj.bias"], stride=P).flatten(2).transpose(1, 2)
        x = torch.cat([sd[p + "cls_token"].expand(1, -1, -1), x], 1)
        pos = sd[p + "pos_embed"][0]
        x = x + resize_positions(pos, int(round(math.sqrt(pos.shape[0] - 1))), S // P).unsqueeze(0)
        out("v.embd", x[0])
        B, N, _ = x.shape
        for i in range(n_layers(sd, p + "blocks.")):
            b = "%sblocks.%d." % (p, i)
            h = F.layer_norm(x, (D,), sd[b + "norm1.weight"], sd[b + "norm1.bias"], 1e-6)
            qkv = F.linear(h, sd[b + "attn.qkv.weight"], sd[b + "attn.qkv.bias"])
            qkv = qkv.reshape(B, N, 3, heads, D // heads).permute(2, 0, 3, 1, 4)
            q, k, v = qkv.unbind(0)
            a = torch.softmax((q * (D // heads) ** -0.5) @ k.transpose(-2, -1), -1) @ v
            a = a.transpose(1, 2).reshape(B, N, D)
            x = x + F.linear(a, sd[b + "attn.proj.weight"], sd[b + "attn.proj.bias"])
            h = F.layer_norm(x, (D,), sd[b + "norm2.weight"], sd[b + "norm2.bias"], 1e-6)
            h = gelu_erf(F.linear(h, sd[b + "mlp.fc1.weight"], sd[b + "mlp.fc1.bias"]))
            x = x + F.linear(h, sd[b + "mlp.fc2.weight"], sd[b + "mlp.fc2.bias"])
            out("v.blk.%d" % i, x[0])
        x = F.layer_norm(x, (D,), sd[p + "norm.weight"], sd[p + "norm.bias"], 1e-6)[:, 0]
        out("v.pooled", x[0])
        x = F.linear(x, sd["visual.head.proj.weight"])
        out("v.proj", x[0])
        x = l2n(x)
        out("v.embedding", x[0])
        return x[0].numpy()

    def embed_tokens(self, ids, dump=None):
        out = dump or _noop
        sd, p = self.sd, "text.transformer."
        ids = [int(i) for i in ids]
        n, C = len(ids), self.context
        if not 1 <= n <= C:
            raise RefError("need 1..%d ids" % C)
        x_ids = torch.full((1, C), self.pad_id, dtype=torch.long)                # open_clip pads to the context
        x_ids[0, :n] = torch.tensor(ids)
        attn = (x_ids != self.pad_id).to(self.dtype)                              # ... and masks the padding
        e = sd[p + "embeddings.word_embeddings.weight"][x_ids] + sd[p + "embeddings.position_embeddings.weight"][:C] \
            + sd[p + "embeddings.token_type_embeddings.weight"][0]
        out("t.embd", e[0, :n])
        W = e.shape[-1]
        x = F.layer_norm(e, (W,), sd[p + "embeddings.LayerNorm.weight"], sd[p + "embeddings.LayerNorm.bias"], 1e-12)
        out("t.embd_ln", x[0, :n])
        heads, hd = W // 64, 64
        ext = (1.0 - attn)[:, None, None, :] * torch.finfo(self.dtype).min
        for i in range(n_layers(sd, p + "encoder.layer.")):
            b = "%sencoder.layer.%d." % (p, i)

            def proj(name, t):
                return F.linear(t, sd[b + name + ".weight"], sd[b + name + ".bias"])

            q, k, v = (proj("attention.self." + nm, x).reshape(1, C, heads, hd).permute(0, 2, 1, 3)
                       for nm in ("query", "key", "value"))
            s = q @ k.transpose(-1, -2) / math.sqrt(hd) + ext
            ctx = (torch.softmax(s, -1) @ v).permute(0, 2, 1, 3).reshape(1, C, W)
            x = F.layer_norm(proj("attention.output.dense", ctx) + x, (W,),
                             sd[b + "attention.output.LayerNorm.weight"], sd[b + "attention.output.LayerNorm.bias"],
                             1e-12)
            h = gelu_erf(proj("intermediate.dense", x))
            x = F.layer_norm(proj("output.dense", h) + x, (W,), sd[b + "output.LayerNorm.weight"],
                             sd[b + "output.LayerNorm.bias"], 1e-12)
            out("t.blk.%d" % i, x[0, :n])
        x = x[:, 0]
        out("t.pooled", x[0])
        if "text.proj.0.weight" in sd:
            x = F.linear(gelu_erf(F.linear(x, sd["text.proj.0.weight"])), sd["text.proj.2.weight"])
        else:
            x = F.linear(x, sd["text.proj.weight"])
        out("t.proj", x[0])
        x = l2n(x)
        out("t.embedding", x[0])
        return x[0].numpy()


# -------------------------------------------------------------------- entry


def load(fmt, path, bpe=None, dtype=torch.float64, round_f16=False):
    if fmt == "openai-clip":
        return OpenAIClip(path, bpe=bpe, dtype=dtype, round_f16=round_f16)
    if fmt == "hf-clip":
        return HFClip(path, dtype=dtype, round_f16=round_f16)
    if fmt == "open-clip":
        return OpenClipBiomed(path, dtype=dtype, round_f16=round_f16)
    if fmt in ("txv-densenet", "txv-resnet", "chexnet-densenet"):  # classifiers: their own file
        import reference_classifier
        return reference_classifier.Classifier(fmt, path, dtype=dtype)
    raise RefError("unknown format %r" % fmt)


def read_raw_image(path):
    a = np.fromfile(path, dtype="<f4")
    for c in (3, 1):
        s = int(round(math.sqrt(a.size / c)))
        if s > 0 and c * s * s == a.size:
            return a.reshape(c, s, s)
    raise RefError("%s: %d floats is not 3 x S x S or 1 x S x S" % (path, a.size))


def main(argv=None):
    ap = argparse.ArgumentParser(prog="reference.py", description="Independent PyTorch reference embeddings.")
    ap.add_argument("format", choices=("openai-clip", "hf-clip", "open-clip"))
    ap.add_argument("checkpoint")
    g = ap.add_mutually_exclusive_group(required=True)
    g.add_argument("--image", metavar="RAW.f32")
    g.add_argument("--tokens", metavar="ID,ID,...")
    g.add_argument("--text")
    ap.add_argument("--bpe", help="openai-clip: CLIP merges file (for --text)")
    ap.add_argument("--dump", metavar="DIR")
    ap.add_argument("--json", action="store_true")
    ap.add_argument("--dtype", choices=("float64", "float32"), default="float64")
    ap.add_argument("--round-f16", action="store_true")
    ap.add_argument("--threads", type=int, default=1)
    a = ap.parse_args(argv)
    torch.set_num_threads(a.threads)
    try:
        m = load(a.format, a.checkpoint, bpe=a.bpe, dtype=getattr(torch, a.dtype), round_f16=a.round_f16)
        d = Dump() if a.dump else None
        if a.image:
            e = m.embed_image(read_raw_image(a.image), d)
            extra = {"input": "image", "file": a.image}
        else:
            ids = [int(x) for x in a.tokens.split(",")] if a.tokens else m.tokenize(a.text)
            e = m.embed_tokens(ids, d)
            extra = {"input": "tokens", "ids": ids}
        if d:
            d.save(a.dump, extra)
    except (RefError, OSError, KeyError, ValueError) as ex:
        sys.stderr.write("reference.py: %s\n" % ex)
        return 1
    if a.json:
        print(json.dumps({"embedding": [float(x) for x in e], "dim": len(e)}))
    else:
        print("dim %d norm %.6f first %s" % (len(e), float(np.linalg.norm(e)), np.array2string(e[:6], precision=6)))
    return 0


if __name__ == "__main__":
    sys.exit(main())
