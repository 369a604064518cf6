#!/usr/bin/python3
"""test_convert.py — model/tools/convert/convert.py and gguf.py against model/FORMAT.md.

Builds random checkpoints of every format with make_checkpoints.py (tiny ones; --full adds the
full-size ViT-B/32), converts each through the CLI, reads the GGUF back and checks:
  - the GGUF writer byte for byte against a file laid out by hand, and the reader on every type;
  - every metadata key against the sizes the checkpoints were BUILT with (not what convert read);
  - every tensor against the checkpoint (exact for F32) through a name map written here from
    FORMAT.md, nothing missing and nothing extra;
  - GGUF dims = reversed NumPy shape, proven on raw bytes of non-square tensors;
  - the tokenizer arrays (byte alphabet positions, merges, specials, WordPiece lines);
  - --f16: exactly the 2-D *.weight tensors are F16, equal to NumPy's float16 rounding, and
    within |x - f16(x)| <= max(|x| 2^-11, 2^-25) of the checkpoint;
  - anomalies: missing key, wrong shape, vocabulary mismatches, unmapped key, NaN, F16 overflow,
    bad config, not a checkpoint -> exit 1 with a message naming it; bad usage -> exit 2;
  - meaning: model/tools/convert/gguf_forward.py (FORMAT.md's math on the GGUF) reproduces reference.py's
    embeddings from the original checkpoint (images at the training size and interpolated; text);
  - the reference itself: its OpenAI-CLIP and HF-CLIP implementations agree on the same weights,
    and its BERT and timm towers agree with torch.nn.TransformerEncoderLayer.

    /usr/bin/python3 tests/model/test_convert.py [--full] [--keep DIR]
Exit 0 all passed, 1 a check failed.
"""
import argparse
import collections
import gzip
import json
import os
import shutil
import struct
import subprocess
import sys
import tempfile

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "model", "tools", "convert")
sys.path.insert(0, TOOLS)
import gguf  # noqa: E402
import make_checkpoints  # noqa: E402
import reference  # noqa: E402

PY = sys.executable or "/usr/bin/python3"
CONVERT = os.path.join(TOOLS, "convert.py")
FAILS = []


def check(cond, what):
    if not cond:
        FAILS.append(what)
        print("FAIL: " + what)
    return cond


def run_convert(*args):
    p = subprocess.run([PY, CONVERT] + [str(a) for a in args], capture_output=True, text=True)
    return p.returncode, p.stdout + p.stderr


# ------------------------------------------------------------ writer bytes


def s(x):
    b = x.encode()
    return struct.pack("<Q", len(b)) + b


def test_writer_bytes(tmp):
    """A file laid out by hand from docs/gguf.md must equal the writer's output."""
    w = gguf.Writer(alignment=32)
    w.add_str("a.s", "hi")
    w.add_bool("a.b", True)
    w.add_f32("a.f", 1.5)
    w.add_arr("a.as", gguf.STRING, ["x", "yz"])
    w.add_arr("a.af", gguf.FLOAT32, [1.0, -2.0, 0.25])
    w.add_u32("a.u", 7)
    t = np.arange(6, dtype=np.float32).reshape(2, 3)  # NumPy shape (2, 3) -> GGUF dims [3, 2]
    w.add_tensor("t0", t)
    w.add_tensor("t1", np.array([1.0, 2.0], np.float32), gguf.F16)
    path = os.path.join(tmp, "hand.gguf")
    w.write(path)
    kv = (s("general.alignment") + struct.pack("<II", 4, 32) +
          s("a.s") + struct.pack("<I", 8) + s("hi") +
          s("a.b") + struct.pack("<IB", 7, 1) +
          s("a.f") + struct.pack("<If", 6, 1.5) +
          s("a.as") + struct.pack("<IIQ", 9, 8, 2) + s("x") + s("yz") +
          s("a.af") + struct.pack("<IIQ3f", 9, 6, 3, 1.0, -2.0, 0.25) +
          s("a.u") + struct.pack("<II", 4, 7))
    ti = (s("t0") + struct.pack("<I2QIQ", 2, 3, 2, 0, 0) +
          s("t1") + struct.pack("<I1QIQ", 1, 2, 1, 32))  # t0 is 24 bytes -> t1 at 32
    head = b"GGUF" + struct.pack("<IQQ", 3, 2, 7) + kv + ti
    head += b"\0" * ((-len(head)) % 32)
    data = t.tobytes() + b"\0" * 8 + np.array([1.0, 2.0], "<f2").tobytes() + b"\0" * 28
    got = open(path, "rb").read()
    check(got == head + data, "writer bytes differ from the hand-made layout (%d vs %d bytes)" % (len(got), len(head + data)))
    g = gguf.read(path)
    check(g.tensors["t0"].dims == (3, 2) and g.tensors["t0"].shape == (2, 3), "reader dims of t0")
    check(np.array_equal(g.tensors["t0"].array(), t), "reader values of t0")
    check(g.get("a.as") == ["x", "yz"] and g.get("a.af") == [1.0, -2.0, 0.25] and g.get("a.b") is True,
          "reader arrays / bool")
    # every scalar type round-trips
    w = gguf.Writer(alignment=64)
    vals = [(gguf.UINT8, 255), (gguf.INT8, -128), (gguf.UINT16, 65535), (gguf.INT16, -32768), (gguf.UINT32, 2**32 - 1),
            (gguf.INT32, -2**31), (gguf.FLOAT32, 0.5), (gguf.BOOL, False), (gguf.STRING, "ü€"), (gguf.UINT64, 2**64 - 1),
            (gguf.INT64, -2**63), (gguf.FLOAT64, 1e-300)]
    for i, (vt, v) in enumerate(vals):
        w.add("k%d" % i, vt, v)
    w.add_arr("arr.bool", gguf.BOOL, [True, False, True])
    w.add_arr("arr.u32", gguf.UINT32, [1, 2, 3])
    w.add_tensor("x", np.ones((3, 5, 7), np.float32))
    p2 = os.path.join(tmp, "types.gguf")
    w.write(p2)
    g = gguf.read(p2)
    for i, (vt, v) in enumerate(vals):
        check(g.kv["k%d" % i].type == vt and g.kv["k%d" % i].value == v, "type %s round trip" % gguf.TYPE_NAMES[vt])
    check(g.get("arr.bool") == [True, False, True] and g.get("arr.u32") == [1, 2, 3], "bool/u32 arrays round trip")
    check(g.alignment == 64 and g.data_start % 64 == 0, "alignment 64 honoured")
    check(g.tensors["x"].dims == (7, 5, 3), "3-D dims reversed")
    # the reader refuses broken files
    raw = open(p2, "rb").read()
    for name, bad, msg in (("magic", b"GGUX" + raw[4:], "bad magic"),
                           ("version", raw[:4] + struct.pack("<I", 2) + raw[8:], "version 2"),
                           ("truncated", raw[:-(32 + 448)], "beyond the end"),
                           ("header cut", raw[:g.data_start - 40], "truncated")):
        try:
            gguf.parse(bad)
            check(False, "reader accepted a file with bad %s" % name)
        except gguf.GGUFError as e:
            check(msg in str(e), "reader message for bad %s: %s" % (name, e))


# ---------------------------------------------------- expected tensor maps


def np_state(path):
    return {k: v.float().numpy() for k, v in reference.torch_state(path).items() if v.is_floating_point()}


def blocks_from_packed(sd, pre, out, L, names):
    """names: packed qkv w/b, out w/b, ln1 w/b, ln2 w/b, up w/b, down w/b (checkpoint suffixes)."""
    e = {}
    for i in range(L):
        p, o = "%s%d." % (pre, i), "%s%d." % (out, i)
        W, B = sd[p + names[0]], sd[p + names[1]]
        D = W.shape[1]
        for j, n in enumerate(("attn_q", "attn_k", "attn_v")):
            e[o + n + ".weight"], e[o + n + ".bias"] = W[j * D:(j + 1) * D], B[j * D:(j + 1) * D]
        for k, n in zip(names[2:], ("attn_out.weight", "attn_out.bias", "ln1.weight", "ln1.bias", "ln2.weight",
                                    "ln2.bias", "ffn_up.weight", "ffn_up.bias", "ffn_down.weight", "ffn_down.bias")):
            e[o + n] = sd[p + k]
    return e


OPENAI_BLK = ["attn.in_proj_weight", "attn.in_proj_bias", "attn.out_proj.weight", "attn.out_proj.bias",
              "ln_1.weight", "ln_1.bias", "ln_2.weight", "ln_2.bias", "mlp.c_fc.weight", "mlp.c_fc.bias",
              "mlp.c_proj.weight", "mlp.c_proj.bias"]


def expect_openai(sd, info):
    e = {"v.patch_embd.weight": sd["visual.conv1.weight"], "v.class_embd": sd["visual.class_embedding"],
         "v.position_embd.weight": sd["visual.positional_embedding"], "v.pre_ln.weight": sd["visual.ln_pre.weight"],
         "v.pre_ln.bias": sd["visual.ln_pre.bias"], "v.post_ln.weight": sd["visual.ln_post.weight"],
         "v.post_ln.bias": sd["visual.ln_post.bias"], "v.proj.weight": sd["visual.proj"].T,
         "t.token_embd.weight": sd["token_embedding.weight"], "t.position_embd.weight": sd["positional_embedding"],
         "t.post_ln.weight": sd["ln_final.weight"], "t.post_ln.bias": sd["ln_final.bias"],
         "t.proj.weight": sd["text_projection"].T}
    e.update(blocks_from_packed(sd, "visual.transformer.resblocks.", "v.blk.", info["vision"]["layers"], OPENAI_BLK))
    e.update(blocks_from_packed(sd, "transformer.resblocks.", "t.blk.", info["text"]["layers"], OPENAI_BLK))
    return e


def expect_hf(sd, info):
    v, t = "vision_model.", "text_model."
    e = {"v.patch_embd.weight": sd[v + "embeddings.patch_embedding.weight"],
         "v.class_embd": sd[v + "embeddings.class_embedding"],
         "v.position_embd.weight": sd[v + "embeddings.position_embedding.weight"],
         "v.pre_ln.weight": sd[v + "pre_layrnorm.weight"], "v.pre_ln.bias": sd[v + "pre_layrnorm.bias"],
         "v.post_ln.weight": sd[v + "post_layernorm.weight"], "v.post_ln.bias": sd[v + "post_layernorm.bias"],
         "v.proj.weight": sd["visual_projection.weight"],
         "t.token_embd.weight": sd[t + "embeddings.token_embedding.weight"],
         "t.position_embd.weight": sd[t + "embeddings.position_embedding.weight"],
         "t.post_ln.weight": sd[t + "final_layer_norm.weight"], "t.post_ln.bias": sd[t + "final_layer_norm.bias"],
         "t.proj.weight": sd["text_projection.weight"]}
    for pre, out, L in ((v + "encoder.layers.", "v.blk.", info["vision"]["layers"]),
                        (t + "encoder.layers.", "t.blk.", info["text"]["layers"])):
        for i in range(L):
            p, o = "%s%d." % (pre, i), "%s%d." % (out, i)
            for a, b in (("self_attn.q_proj", "attn_q"), ("self_attn.k_proj", "attn_k"), ("self_attn.v_proj", "attn_v"),
                         ("self_attn.out_proj", "attn_out"), ("layer_norm1", "ln1"), ("layer_norm2", "ln2"),
                         ("mlp.fc1", "ffn_up"), ("mlp.fc2", "ffn_down")):
                e[o + b + ".weight"], e[o + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
    return e


def expect_open_clip(sd, info):
    v, t = "visual.trunk.", "text.transformer."
    C = info["text"]["context"]
    e = {"v.patch_embd.weight": sd[v + "patch_embed.proj.weight"], "v.patch_embd.bias": sd[v + "patch_embed.proj.bias"],
         "v.class_embd": sd[v + "cls_token"][0, 0], "v.position_embd.weight": sd[v + "pos_embed"][0],
         "v.post_ln.weight": sd[v + "norm.weight"], "v.post_ln.bias": sd[v + "norm.bias"],
         "v.proj.weight": sd["visual.head.proj.weight"],
         "t.token_embd.weight": sd[t + "embeddings.word_embeddings.weight"],
         "t.position_embd.weight": sd[t + "embeddings.position_embeddings.weight"][:C],
         "t.token_type_embd.weight": sd[t + "embeddings.token_type_embeddings.weight"],
         "t.embd_ln.weight": sd[t + "embeddings.LayerNorm.weight"], "t.embd_ln.bias": sd[t + "embeddings.LayerNorm.bias"],
         "t.proj.0.weight": sd["text.proj.0.weight"], "t.proj.2.weight": sd["text.proj.2.weight"]}
    e.update(blocks_from_packed(sd, v + "blocks.", "v.blk.", info["vision"]["layers"],
                                ["attn.qkv.weight", "attn.qkv.bias", "attn.proj.weight", "attn.proj.bias",
                                 "norm1.weight", "norm1.bias", "norm2.weight", "norm2.bias", "mlp.fc1.weight",
                                 "mlp.fc1.bias", "mlp.fc2.weight", "mlp.fc2.bias"]))
    for i in range(info["text"]["layers"]):
        p, o = "%sencoder.layer.%d." % (t, i), "t.blk.%d." % i
        for a, b in (("attention.self.query", "attn_q"), ("attention.self.key", "attn_k"),
                     ("attention.self.value", "attn_v"), ("attention.output.dense", "attn_out"),
                     ("attention.output.LayerNorm", "ln1"), ("output.LayerNorm", "ln2"),
                     ("intermediate.dense", "ffn_up"), ("output.dense", "ffn_down")):
            e[o + b + ".weight"], e[o + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
    return e


# ------------------------------------------------------- metadata + tensors


CLIP_MEAN = [0.48145466, 0.4578275, 0.40821073]
CLIP_STD = [0.26862954, 0.26130258, 0.27577711]


def f32(x):
    return float(np.float32(x))


def check_metadata(g, name, info):
    vi, ti = info["vision"], info["text"]
    bert = info["format"] == "open-clip"
    want = {
        "general.architecture": "clip", "clip.has_vision_encoder": True, "clip.has_text_encoder": True,
        "clip.logit_scale": f32(info["logit_scale"]), "clip.projection_dim": info["embed"],
        "clip.vision.image_size": vi["image_size"], "clip.vision.patch_size": vi["patch"],
        "clip.vision.embedding_length": vi["width"], "clip.vision.feed_forward_length": vi["ff"],
        "clip.vision.block_count": vi["layers"], "clip.vision.attention.head_count": vi["heads"],
        "clip.vision.attention.layer_norm_epsilon": f32(info["eps"]["vision"]),
        "clip.vision.projection_dim": info["embed"], "clip.vision.activation": info["activation"]["vision"],
        "clip.vision.image_mean": [f32(x) for x in CLIP_MEAN], "clip.vision.image_std": [f32(x) for x in CLIP_STD],
        "clip.text.architecture": "bert" if bert else "clip", "clip.text.context_length": ti["context"],
        "clip.text.vocab_size": ti["vocab"], "clip.text.embedding_length": ti["width"],
        "clip.text.feed_forward_length": ti["ff"], "clip.text.block_count": ti["layers"],
        "clip.text.attention.head_count": ti["heads"],
        "clip.text.attention.layer_norm_epsilon": f32(info["eps"]["text"]),
        "clip.text.activation": info["activation"]["text"], "clip.text.projection": "mlp" if bert else "linear",
        "tokenizer.ggml.model": "wordpiece" if bert else "clip-bpe",
        "cxr.preproc.size": vi["image_size"], "cxr.preproc.policy": "crop", "cxr.preproc.interp": "bicubic",
        "cxr.preproc.channels": 3, "cxr.preproc.scale": f32(1 / 255), "cxr.preproc.mean": [f32(x) for x in CLIP_MEAN],
        "cxr.preproc.std": [f32(x) for x in CLIP_STD], "general.alignment": 32,
    }
    types = {"clip.logit_scale": gguf.FLOAT32, "clip.has_vision_encoder": gguf.BOOL, "clip.projection_dim": gguf.UINT32,
             "clip.vision.attention.layer_norm_epsilon": gguf.FLOAT32, "clip.text.context_length": gguf.UINT32,
             "cxr.preproc.scale": gguf.FLOAT32, "general.alignment": gguf.UINT32}
    if bert:
        want["cxr.tokenizer.lowercase"] = True
    for k, v in want.items():
        got = g.get(k)
        if isinstance(v, float):
            ok = got is not None and np.float32(got) == np.float32(v)
        else:
            ok = got == v
        check(ok, "%s: %s = %r, expected %r" % (name, k, got, v))
    for k, vt in types.items():
        check(g.kv[k].type == vt, "%s: %s has type %s" % (name, k, gguf.TYPE_NAMES[g.kv[k].type]))
    for k in ("general.name", "general.version", "general.license", "general.description", "cxr.provenance.source",
              "cxr.provenance.training_data"):
        check(isinstance(g.get(k), str) and g.get(k) != "", "%s: provenance key %s present" % (name, k))
    check(g.kv["tokenizer.ggml.tokens"].elem_type == gguf.STRING, "%s: tokens are a string array" % name)


def check_tensors(g, name, expected, path, f16=False):
    names = set(g.tensors)
    check(names == set(expected), "%s: tensor set differs: missing %s, extra %s" % (
        name, sorted(set(expected) - names)[:5], sorted(names - set(expected))[:5]))
    worst = 0.0
    for n in sorted(names & set(expected)):
        t, e = g.tensors[n], np.ascontiguousarray(expected[n], dtype=np.float32)
        if not check(t.dims == tuple(reversed(e.shape)), "%s: %s dims %s, expected reversed NumPy shape %s"
                     % (name, n, t.dims, e.shape)):
            continue
        is16 = f16 and e.ndim == 2 and n.endswith(".weight")
        check(t.type == (gguf.F16 if is16 else gguf.F32), "%s: %s stored as type %d" % (name, n, t.type))
        a = t.array(np.float64)
        if t.type == gguf.F32:
            check(np.array_equal(a, e), "%s: %s values differ from the checkpoint" % (name, n))
        else:
            check(np.array_equal(a, e.astype(np.float16).astype(np.float64)), "%s: %s is not float16 rounding" % (name, n))
            err = np.abs(a - e)
            bound = np.maximum(np.abs(e.astype(np.float64)) * 2.0 ** -11, 2.0 ** -25)
            check(np.all(err <= bound), "%s: %s F16 error above max(|x| 2^-11, 2^-25)" % (name, n))
            normal = np.abs(e) >= 2.0 ** -14
            if normal.any():
                worst = max(worst, float((err[normal] / np.abs(e[normal])).max()))
    # raw bytes: element [r, c] of a non-square (rows, cols) tensor sits at (r * dims[0] + c) * itemsize,
    # i.e. dims[0] is the fastest-varying (columns) and dims = (cols, rows)
    with open(path, "rb") as f:
        raw = f.read()
    for n in ("v.blk.0.ffn_up.weight", "t.blk.0.ffn_down.weight", "v.proj.weight"):
        t, e = g.tensors[n], np.asarray(expected[n], np.float32)
        rows, cols = e.shape
        if not check(rows != cols and t.dims == (cols, rows), "%s: %s dims %s for NumPy shape %s" % (name, n, t.dims, e.shape)):
            continue
        size, fmt = (4, "<f") if t.type == gguf.F32 else (2, "<e")
        for r, c in ((0, 1), (1, 0), (rows - 1, cols - 2), (rows // 2, cols // 3)):
            off = g.data_start + t.offset + (r * t.dims[0] + c) * size
            v = struct.unpack_from(fmt, raw, off)[0]
            check(v == float(np.float32(e[r, c]).astype(np.float16 if size == 2 else np.float32)),
                  "%s: %s raw element [%d,%d] = %r, expected %r" % (name, n, r, c, v, e[r, c]))
    return worst


def check_clip_tokens(g, name, merges_all, V):
    toks, merges = g.get("tokenizer.ggml.tokens"), g.get("tokenizer.ggml.merges")
    check(len(toks) == V, "%s: %d tokens, expected %d" % (name, len(toks), V))
    check(len(merges) == V - 514, "%s: %d merges, expected %d" % (name, len(merges), V - 514))
    # GPT-2/CLIP byte alphabet facts: '!' (0x21) first, 'ÿ' at 187, byte 0x00 -> U+0100 at 188,
    # space 0x20 -> U+0120 'Ġ' at 220, byte 0xAD -> U+0143 last
    check(toks[0] == "!" and toks[93] == "~" and toks[94] == "\u00a1" and toks[187] == "\u00ff", "%s: printable bytes" % name)
    check(toks[188] == "\u0100" and toks[220] == "\u0120" and toks[255] == "\u0143", "%s: remapped bytes" % name)
    check(toks[256] == "!</w>" and toks[511] == "\u0143</w>", "%s: </w> tokens" % name)
    check(toks[-2:] == ["<|startoftext|>", "<|endoftext|>"], "%s: specials last" % name)
    check(merges == ["%s %s" % m for m in merges_all[:V - 514]], "%s: merges are the file's first %d" % (name, V - 514))
    check(all(toks[512 + i] == m.replace(" ", "") for i, m in enumerate(merges)), "%s: merge tokens" % name)


def read_merges(path):
    with gzip.open(path, "rt", encoding="utf-8") as f:
        return [tuple(ln.split()) for ln in f.read().split("\n")[1:] if ln.strip()]


def check_semantics(path, label, info, src, f16):
    """The converted file, run by gguf_forward.py (FORMAT.md read literally), must give the embeddings
    reference.py computes from the original checkpoint: right numbers under the right meaning."""
    import gguf_forward
    m = gguf_forward.Model(path)
    ref = reference.load(info["format"], src, round_f16=f16)
    rng = np.random.default_rng(3)
    S, P, V = info["vision"]["image_size"], info["vision"]["patch"], info["text"]["vocab"]
    worst = 0.0
    for size in (S, S + 2 * P):
        img = rng.standard_normal((3, size, size)).astype(np.float32)
        worst = max(worst, float(np.abs(gguf_forward.image_embedding(m, img.astype(np.float64)) - ref.embed_image(img)).max()))
    if info["format"] == "open-clip":
        ids = [2] + rng.integers(5, V, size=12).tolist() + [3]
    else:
        ids = [V - 2] + rng.integers(0, V - 2, size=12).tolist() + [V - 1]
    worst = max(worst, float(np.abs(gguf_forward.text_embedding(m, ids) - ref.embed_tokens(ids)).max()))
    check(worst < 1e-7, "%s: FORMAT.md forward on the GGUF differs from the checkpoint reference by %.3g" % (label, worst))
    return worst


# ---------------------------------------------------------------- anomalies


def convert_inproc(*args):
    """convert.main() in this process (saves a torch import per case); same exit codes and messages."""
    import contextlib
    import io
    import convert
    err = io.StringIO()
    with contextlib.redirect_stderr(err), contextlib.redirect_stdout(err):
        try:
            rc = convert.main([str(x) for x in args])
        except SystemExit as e:  # argparse usage errors
            rc = e.code
    return rc, err.getvalue()


def anomaly(name, args, want_rc, want_msg):
    rc, out = convert_inproc(*args)
    ok = check(rc == want_rc and want_msg in out, "anomaly %s: exit %d (want %d), output %r (want %r)"
               % (name, rc, want_rc, out.strip()[-300:], want_msg))
    if ok:
        print("ok   anomaly %-28s -> exit %d: %s" % (name, rc, out.strip().splitlines()[-1][:150]))


def test_anomalies(tmp, man):
    o = man["variants"]["openai-clip-tiny"]
    bpe = man["bpe"]
    base = reference.torch_state(o["checkpoint"])
    out = os.path.join(tmp, "anomaly.gguf")

    def variant(fn, edit):
        sd = collections.OrderedDict(base)
        edit(sd)
        p = os.path.join(tmp, fn)
        torch.save(sd, p)
        return p

    D, L = o["vision"]["width"], o["vision"]["layers"]
    anomaly("missing key", ["openai-clip", variant("m1.pt", lambda sd: sd.pop("visual.ln_pre.bias")), bpe, out],
            1, "missing key 'visual.ln_pre.bias'")
    k = "visual.transformer.resblocks.%d.mlp.c_fc.bias" % (L - 1)
    anomaly("wrong shape", ["openai-clip", variant("m2.pt", lambda sd: sd.__setitem__(k, torch.zeros(4 * D + 1))), bpe, out],
            1, "key '%s' has shape (%d,), expected (%d,)" % (k, 4 * D + 1, 4 * D))
    anomaly("wrong proj shape", ["openai-clip", variant("m3.pt", lambda sd: sd.__setitem__("text_projection",
            sd["text_projection"][:, :-1])), bpe, out], 1, "key 'text_projection' has shape")
    nm = man["bpe_merges"]
    anomaly("vocab larger than merges", ["openai-clip", variant("m4.pt", lambda sd: sd.__setitem__(
        "token_embedding.weight", torch.zeros(514 + nm + 3, o["text"]["width"]))), bpe, out],
        1, "inconsistent vocabulary: token_embedding.weight has %d rows, which needs %d merges; the BPE file has %d"
        % (514 + nm + 3, nm + 3, nm))
    anomaly("unmapped key", ["openai-clip", variant("m5.pt", lambda sd: sd.__setitem__(
        "visual.transformer.resblocks.0.ls_1.gamma", torch.ones(D))), bpe, out],
        1, "'visual.transformer.resblocks.0.ls_1.gamma'")
    anomaly("resnet tower", ["openai-clip", variant("m6.pt", lambda sd: sd.__setitem__(
        "visual.layer1.0.conv1.weight", torch.ones(4, 4, 1, 1))), bpe, out], 1, "ResNet image tower")

    def nan(sd):
        t = sd["visual.proj"].clone()
        t[1, 2] = float("nan")
        sd["visual.proj"] = t
    anomaly("NaN weight", ["openai-clip", variant("m7.pt", nan), bpe, out], 1, "key 'visual.proj' holds NaN")

    def big(sd):
        t = sd["visual.transformer.resblocks.0.attn.out_proj.weight"].clone()
        t[0, 0] = 1e5
        sd["visual.transformer.resblocks.0.attn.out_proj.weight"] = t
    anomaly("F16 overflow", ["openai-clip", variant("m8.pt", big), bpe, out, "--f16"], 1,
            "tensor 'v.blk.0.attn_out.weight': values up to 100000 overflow F16")
    garbage = os.path.join(tmp, "garbage.pt")
    with open(garbage, "wb") as f:
        f.write(b"this is not a checkpoint" * 10)
    anomaly("not a checkpoint", ["openai-clip", garbage, bpe, out], 1, "not a readable PyTorch checkpoint")
    anomaly("no such file", ["openai-clip", os.path.join(tmp, "nope.pt"), bpe, out], 1, "no such file")
    short = os.path.join(tmp, "short.txt.gz")
    with gzip.open(short, "wt") as f:
        f.write("#version: 0.2\nt h\n")
    anomaly("short BPE file", ["openai-clip", o["checkpoint"], short, out], 1, "the BPE file has 1")
    anomaly("usage", ["openai-clip", o["checkpoint"], out], 2, "usage")

    # hf-clip
    h = man["variants"]["hf-clip-tiny"]

    def hf_copy(fn, edit):
        d = os.path.join(tmp, fn)
        shutil.copytree(h["checkpoint"], d)
        edit(d)
        return d

    def drop_vocab(d):
        p = os.path.join(d, "vocab.json")
        v = json.load(open(p))
        v.pop("<|endoftext|>")
        json.dump(v, open(p, "w"))
    anomaly("hf vocab mismatch", ["hf-clip", hf_copy("h1", drop_vocab), out], 1,
            "inconsistent vocabulary: %d tokens, text_model.embeddings.token_embedding.weight has %d rows"
            % (h["text"]["vocab"] - 1, h["text"]["vocab"]))

    def hole_vocab(d):
        p = os.path.join(d, "vocab.json")
        v = json.load(open(p))
        v["zz-extra"] = v.pop("a")
        v["zz-extra"] = len(v) + 5
        json.dump(v, open(p, "w"))
    anomaly("hf vocab ids", ["hf-clip", hf_copy("h0", hole_vocab), out], 1,
            "inconsistent vocabulary: ids are not 0..%d each once (token 'zz-extra'" % (h["text"]["vocab"] - 1))

    def bad_merge(d):
        p = os.path.join(d, "merges.txt")
        lines = open(p, encoding="utf-8").read().split("\n")
        lines[5] = "q zzzz"
        open(p, "w", encoding="utf-8").write("\n".join(lines))
    anomaly("hf merge not in vocab", ["hf-clip", hf_copy("h2", bad_merge), out], 1,
            "inconsistent vocabulary: merge 4 'q zzzz' uses 'zzzz'")

    def bad_cfg(d):
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        c["vision_config"]["hidden_size"] += 1
        json.dump(c, open(p, "w"))
    anomaly("hf config mismatch", ["hf-clip", hf_copy("h3", bad_cfg), out], 1,
            "vision_config.hidden_size is %d but the weights say %d" % (h["vision"]["width"] + 1, h["vision"]["width"]))

    def to_bin(d):  # pytorch_model.bin instead of safetensors, one key missing
        sd = reference.safetensors_state(os.path.join(d, "model.safetensors"))
        os.remove(os.path.join(d, "model.safetensors"))
        sd.pop("text_model.encoder.layers.1.self_attn.k_proj.bias")
        torch.save(sd, os.path.join(d, "pytorch_model.bin"))
    anomaly("hf missing key (.bin)", ["hf-clip", hf_copy("h4", to_bin), out], 1,
            "missing key 'text_model.encoder.layers.1.self_attn.k_proj.bias'")

    def bad_act(d):
        p = os.path.join(d, "config.json")
        c = json.load(open(p))
        c["text_config"]["hidden_act"] = "relu"
        json.dump(c, open(p, "w"))
    anomaly("hf activation", ["hf-clip", hf_copy("h5", bad_act), out], 1, "activation 'relu' not supported")

    # open-clip
    oc = man["variants"]["open-clip-tiny"]

    def oc_copy(fn, edit):
        d = os.path.join(tmp, fn)
        shutil.copytree(oc["checkpoint"], d)
        edit(d)
        return d

    def short_vocab(d):
        p = os.path.join(d, "vocab.txt")
        lines = open(p, encoding="utf-8").read().split("\n")
        open(p, "w", encoding="utf-8").write("\n".join(lines[:-2]) + "\n")
    V = oc["text"]["vocab"]
    anomaly("wordpiece vocab mismatch", ["open-clip", oc_copy("o1", short_vocab), out], 1,
            "inconsistent vocabulary: %d tokens, text.transformer.embeddings.word_embeddings.weight has %d rows" % (V - 1, V))

    def dup_vocab(d):
        p = os.path.join(d, "vocab.txt")
        lines = open(p, encoding="utf-8").read().split("\n")
        lines[10] = lines[9]
        open(p, "w", encoding="utf-8").write("\n".join(lines))
    anomaly("wordpiece duplicate", ["open-clip", oc_copy("o2", dup_vocab), out], 1,
            "inconsistent vocabulary: token %r on lines 10 and 11" % open(os.path.join(oc["checkpoint"], "vocab.txt"),
                                                                         encoding="utf-8").read().split("\n")[9])

    def drop_proj(d):
        p = os.path.join(d, "open_clip_pytorch_model.bin")
        sd = torch.load(p)
        sd.pop("text.proj.2.weight")
        torch.save(sd, p)
    anomaly("open-clip missing key", ["open-clip", oc_copy("o3", drop_proj), out], 1, "missing key 'text.proj.2.weight'")

    def bad_pooler(d):
        p = os.path.join(d, "open_clip_config.json")
        c = json.load(open(p))
        c["model_cfg"]["text_cfg"]["hf_pooler_type"] = "mean_pooler"
        json.dump(c, open(p, "w"))
    anomaly("open-clip pooler", ["open-clip", oc_copy("o4", bad_pooler), out], 1, "text pooler 'mean_pooler' not supported")

    def bad_pos(d):
        p = os.path.join(d, "open_clip_pytorch_model.bin")
        sd = torch.load(p)
        sd["visual.trunk.pos_embed"] = sd["visual.trunk.pos_embed"][:, :-1]
        torch.save(sd, p)
    g2 = (oc["vision"]["image_size"] // oc["vision"]["patch"]) ** 2
    anomaly("open-clip position grid", ["open-clip", oc_copy("o5", bad_pos), out], 1,
            "key 'visual.trunk.pos_embed' has %d rows: not class + a square grid" % g2)
    check(not os.path.exists(out), "no output file left behind by refused conversions")


# ----------------------------------------------------- reference cross-check


def test_reference(tmp, man):
    """Two independent implementations inside reference.py must agree: OpenAI-CLIP (torch MHA) vs HF-CLIP
    (hand-written attention) on the same weights; BERT and timm towers vs torch.nn.TransformerEncoderLayer."""
    o = man["variants"]["openai-clip-tiny"]
    sd = reference.torch_state(o["checkpoint"])
    D, W = o["vision"]["width"], o["text"]["width"]
    V = o["text"]["vocab"]
    hf = collections.OrderedDict()
    hf["vision_model.embeddings.patch_embedding.weight"] = sd["visual.conv1.weight"]
    hf["vision_model.embeddings.class_embedding"] = sd["visual.class_embedding"]
    hf["vision_model.embeddings.position_embedding.weight"] = sd["visual.positional_embedding"]
    for a, b in (("ln_pre", "pre_layrnorm"), ("ln_post", "post_layernorm")):
        for x in ("weight", "bias"):
            hf["vision_model.%s.%s" % (b, x)] = sd["visual.%s.%s" % (a, x)]
    hf["visual_projection.weight"] = sd["visual.proj"].T.contiguous()
    hf["text_model.embeddings.token_embedding.weight"] = sd["token_embedding.weight"]
    hf["text_model.embeddings.position_embedding.weight"] = sd["positional_embedding"]
    hf["text_model.final_layer_norm.weight"], hf["text_model.final_layer_norm.bias"] = sd["ln_final.weight"], sd["ln_final.bias"]
    hf["text_projection.weight"] = sd["text_projection"].T.contiguous()
    hf["logit_scale"] = sd["logit_scale"]
    for src, dst, L, w in (("visual.transformer.resblocks.", "vision_model.encoder.layers.", o["vision"]["layers"], D),
                           ("transformer.resblocks.", "text_model.encoder.layers.", o["text"]["layers"], W)):
        for i in range(L):
            p, q = "%s%d." % (src, i), "%s%d." % (dst, i)
            for j, n in enumerate(("q_proj", "k_proj", "v_proj")):
                hf[q + "self_attn.%s.weight" % n] = sd[p + "attn.in_proj_weight"][j * w:(j + 1) * w]
                hf[q + "self_attn.%s.bias" % n] = sd[p + "attn.in_proj_bias"][j * w:(j + 1) * w]
            for a, b in (("attn.out_proj", "self_attn.out_proj"), ("ln_1", "layer_norm1"), ("ln_2", "layer_norm2"),
                         ("mlp.c_fc", "mlp.fc1"), ("mlp.c_proj", "mlp.fc2")):
                hf[q + b + ".weight"], hf[q + b + ".bias"] = sd[p + a + ".weight"], sd[p + a + ".bias"]
    d = os.path.join(tmp, "hf-from-openai")
    os.makedirs(d)
    torch.save(hf, os.path.join(d, "pytorch_model.bin"))
    json.dump({"text_config": {"num_attention_heads": W // 64, "hidden_act": "quick_gelu", "eos_token_id": V - 1},
               "vision_config": {"num_attention_heads": D // 64, "hidden_act": "quick_gelu"}},
              open(os.path.join(d, "config.json"), "w"))
    json.dump({"a": 0}, open(os.path.join(d, "vocab.json"), "w"))
    open(os.path.join(d, "merges.txt"), "w").write("#version: 0.2\n")
    ra = reference.load("openai-clip", o["checkpoint"])
    rb = reference.load("hf-clip", d)
    rng = np.random.default_rng(7)
    S = o["vision"]["image_size"]
    for size in (S, S + o["vision"]["patch"] * 2):
        img = rng.standard_normal((3, size, size)).astype(np.float32)
        da, db = reference.Dump(), reference.Dump()
        ea, eb = ra.embed_image(img, da), rb.embed_image(img, db)
        err = np.abs(ea - eb).max()
        check(err < 1e-10, "reference: OpenAI vs HF image embedding at %d px differ by %.3g" % (size, err))
        stages = dict(db.stages)
        for n, a in da.stages:
            check(np.abs(a - stages[n]).max() < 1e-9, "reference: stage %s differs between implementations" % n)
        print("ok   reference openai-clip == hf-clip implementation, image %d px: max |diff| %.2g" % (size, err))
    ids = [V - 2, 5, 300, 17, V - 3, V - 1]
    err = np.abs(ra.embed_tokens(ids) - rb.embed_tokens(ids)).max()
    check(err < 1e-10, "reference: OpenAI vs HF text embedding differ by %.3g" % err)
    print("ok   reference openai-clip == hf-clip implementation, text: max |diff| %.2g" % err)

    # BERT tower vs torch.nn.TransformerEncoderLayer (post-LN, GELU, eps 1e-12, key padding mask)
    oc = man["variants"]["open-clip-tiny"]
    rc = reference.load("open-clip", oc["checkpoint"])
    s = rc.sd
    Wt, C = oc["text"]["width"], oc["text"]["context"]
    ids = [2, 40, 300, 77, 500, 3]
    n = len(ids)
    t = "text.transformer."
    x = s[t + "embeddings.word_embeddings.weight"][ids] + s[t + "embeddings.position_embeddings.weight"][:n] \
        + s[t + "embeddings.token_type_embeddings.weight"][0]
    x = torch.nn.functional.layer_norm(x, (Wt,), s[t + "embeddings.LayerNorm.weight"], s[t + "embeddings.LayerNorm.bias"],
                                       1e-12)[None]
    for i in range(oc["text"]["layers"]):
        b = "%sencoder.layer.%d." % (t, i)
        layer = torch.nn.TransformerEncoderLayer(Wt, Wt // 64, 4 * Wt, dropout=0.0, activation="gelu",
                                                 layer_norm_eps=1e-12, batch_first=True, norm_first=False).double().eval()
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(torch.cat([s[b + "attention.self.%s.weight" % k]
                                                            for k in ("query", "key", "value")]))
            layer.self_attn.in_proj_bias.copy_(torch.cat([s[b + "attention.self.%s.bias" % k]
                                                          for k in ("query", "key", "value")]))
            for mod, key in ((layer.self_attn.out_proj, "attention.output.dense"), (layer.linear1, "intermediate.dense"),
                             (layer.linear2, "output.dense"), (layer.norm1, "attention.output.LayerNorm"),
                             (layer.norm2, "output.LayerNorm")):
                mod.weight.copy_(s[b + key + ".weight"])
                mod.bias.copy_(s[b + key + ".bias"])
            x = layer(x)
    x = x[0, 0]
    x = torch.nn.functional.linear(torch.nn.functional.gelu(torch.nn.functional.linear(x, s["text.proj.0.weight"])),
                                   s["text.proj.2.weight"])
    want = (x / x.norm()).numpy()
    err = np.abs(rc.embed_tokens(ids) - want).max()
    check(err < 1e-10, "reference: BERT tower vs nn.TransformerEncoderLayer differ by %.3g" % err)
    print("ok   reference BERT tower == torch.nn.TransformerEncoderLayer (padding to %d masked): max |diff| %.2g" % (C, err))

    # timm ViT vs torch.nn.TransformerEncoderLayer (pre-LN, GELU, eps 1e-6)
    v = "visual.trunk."
    Dv, P = oc["vision"]["width"], oc["vision"]["patch"]
    img = rng.standard_normal((1, 3, oc["vision"]["image_size"], oc["vision"]["image_size"])).astype(np.float32)
    img = img.astype(np.float64)
    x = torch.nn.functional.conv2d(torch.tensor(img), s[v + "patch_embed.proj.weight"], s[v + "patch_embed.proj.bias"],
                                   stride=P).flatten(2).transpose(1, 2)
    x = torch.cat([s[v + "cls_token"], x], 1) + s[v + "pos_embed"]
    for i in range(oc["vision"]["layers"]):
        b = "%sblocks.%d." % (v, i)
        layer = torch.nn.TransformerEncoderLayer(Dv, Dv // 64, 4 * Dv, dropout=0.0, activation="gelu",
                                                 layer_norm_eps=1e-6, batch_first=True, norm_first=True).double().eval()
        with torch.no_grad():
            layer.self_attn.in_proj_weight.copy_(s[b + "attn.qkv.weight"])
            layer.self_attn.in_proj_bias.copy_(s[b + "attn.qkv.bias"])
            for mod, key in ((layer.self_attn.out_proj, "attn.proj"), (layer.linear1, "mlp.fc1"),
                             (layer.linear2, "mlp.fc2"), (layer.norm1, "norm1"), (layer.norm2, "norm2")):
                mod.weight.copy_(s[b + key + ".weight"])
                mod.bias.copy_(s[b + key + ".bias"])
            x = layer(x)
    x = torch.nn.functional.layer_norm(x[0, 0], (Dv,), s[v + "norm.weight"], s[v + "norm.bias"], 1e-6)
    x = torch.nn.functional.linear(x, s["visual.head.proj.weight"])
    want = (x / x.norm()).numpy()
    err = np.abs(rc.embed_image(img[0].astype(np.float32)) - want).max()
    check(err < 1e-10, "reference: timm tower vs nn.TransformerEncoderLayer differ by %.3g" % err)
    print("ok   reference timm ViT == torch.nn.TransformerEncoderLayer: max |diff| %.2g" % err)


# --------------------------------------------------------------------- main


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--full", action="store_true", help="also the full-size ViT-B/32 (about 500 MB, +20 s)")
    ap.add_argument("--keep", metavar="DIR", help="work in DIR and keep it")
    a = ap.parse_args()
    torch.set_num_threads(1)
    tmp = a.keep or tempfile.mkdtemp(prefix="cxr_test_convert_")
    os.makedirs(tmp, exist_ok=True)
    try:
        test_writer_bytes(tmp)
        print("ok   GGUF writer bytes, reader types and refusals")
        ck = os.path.join(tmp, "ck")
        names = ["openai-clip-tiny", "hf-clip-tiny", "open-clip-tiny"] + (["openai-clip-vitb32"] if a.full else [])
        p = subprocess.run([PY, os.path.join(TOOLS, "make_checkpoints.py"), ck, "--only", ",".join(names)],
                           capture_output=True, text=True)
        if not check(p.returncode == 0, "make_checkpoints.py failed: %s" % p.stderr[-2000:]):
            return 1
        man = make_checkpoints.load_manifest(ck)
        # seeded: a second run gives the same bytes (tokenizer files, every checkpoint file, manifest)
        ck2 = os.path.join(tmp, "ck2")
        p = subprocess.run([PY, os.path.join(TOOLS, "make_checkpoints.py"), ck2, "--only",
                            "openai-clip-tiny,hf-clip-tiny,open-clip-tiny"], capture_output=True, text=True)
        same = []
        for dp, _, fns in os.walk(ck2):
            for fn in fns:
                rel = os.path.relpath(os.path.join(dp, fn), ck2)
                with open(os.path.join(ck2, rel), "rb") as f1, open(os.path.join(ck, rel), "rb") as f2:
                    same.append((rel, f1.read() == f2.read()))
        if check(p.returncode == 0 and len(same) >= 12 and all(ok for _, ok in same),
                 "make_checkpoints.py is not reproducible: %s" % [r for r, ok in same if not ok]):
            print("ok   make_checkpoints.py reproducible: %d files byte-identical across runs" % len(same))
        shutil.rmtree(ck2, ignore_errors=True)
        merges_all = read_merges(man["bpe"])
        check(len(merges_all) == man["bpe_merges"] and len(merges_all) > 1000, "BPE file has the trained merges")
        jobs = []
        for n in names:
            info = man["variants"][n]
            if info["format"] == "openai-clip":
                jobs.append((n, info, info["checkpoint"], False))
                for extra in ("checkpoint_jit", "checkpoint_wrapped"):
                    if extra in info:
                        jobs.append((n + ":" + extra[11:], info, info[extra], False))
                jobs.append((n + ":f16", info, info["checkpoint"], True))
            else:
                jobs.append((n, info, info["checkpoint"], False))
                jobs.append((n + ":f16", info, info["checkpoint"], True))
        for label, info, src, f16 in jobs:
            out = os.path.join(tmp, label.replace(":", "_") + ".gguf")
            args = [info["format"], src] + ([man["bpe"]] if info["format"] == "openai-clip" else []) + [out]
            rc, msg = run_convert(*(args + (["--f16"] if f16 else [])))
            if not check(rc == 0, "%s: convert exit %d: %s" % (label, rc, msg.strip()[-500:])):
                continue
            g = gguf.read(out)
            check_metadata(g, label, info)
            if info["format"] == "openai-clip":
                sd = np_state(src)
                exp = expect_openai(sd, info)
                check_clip_tokens(g, label, merges_all, info["text"]["vocab"])
            elif info["format"] == "hf-clip":
                sd = {k: v.float().numpy() for k, v in reference.safetensors_state(
                    os.path.join(src, "model.safetensors")).items() if v.is_floating_point()}
                exp = expect_hf(sd, info)
                check_clip_tokens(g, label, merges_all, info["text"]["vocab"])
                vocab = json.load(open(os.path.join(src, "vocab.json")))
                check(g.get("tokenizer.ggml.tokens") == sorted(vocab, key=vocab.get), "%s: tokens in vocab.json id order" % label)
            else:
                sd = np_state(os.path.join(src, "open_clip_pytorch_model.bin"))
                exp = expect_open_clip(sd, info)
                lines = open(os.path.join(src, "vocab.txt"), encoding="utf-8").read().split("\n")[:-1]
                check(g.get("tokenizer.ggml.tokens") == lines, "%s: tokens = vocab.txt lines" % label)
                check("tokenizer.ggml.merges" not in g.kv, "%s: no merges for wordpiece" % label)
                check(g.tensors["t.position_embd.weight"].shape[0] == info["text"]["context"] <
                      info["text"]["bert_positions"], "%s: BERT positions cut to the context" % label)
            worst = check_tensors(g, label, exp, out, f16)
            sem = check_semantics(out, label, info, src, f16) if "vitb32" not in label else None
            n16 = sum(t.type == gguf.F16 for t in g.tensors.values())
            print("ok   %-26s %3d tensors (%d F16%s), %d keys%s" % (
                label, len(g.tensors), n16, ", worst rel. F16 error %.3g <= 2^-11" % worst if f16 else "", len(g.kv),
                "; GGUF forward vs checkpoint reference %.1e" % sem if sem is not None else ""))
        # provenance and preprocessing overrides
        o = man["variants"]["openai-clip-tiny"]
        out = os.path.join(tmp, "chexzero.gguf")
        rc, msg = run_convert("openai-clip", o["checkpoint"], man["bpe"], out, "--preset", "chexzero", "--name",
                              "CheXzero test", "--version", "1.2", "--license", "MIT", "--training-data", "none",
                              "--preproc-size", "320", "--preproc-channels", "1")
        if check(rc == 0, "overrides: convert exit %d: %s" % (rc, msg)):
            g = gguf.read(out)
            want = {"general.name": "CheXzero test", "general.version": "1.2", "general.license": "MIT",
                    "cxr.provenance.training_data": "none", "cxr.preproc.size": 320, "cxr.preproc.policy": "pad",
                    "cxr.preproc.channels": 1, "cxr.preproc.scale": 1.0,
                    "cxr.preproc.mean": [f32(101.48761)] * 3, "cxr.preproc.std": [f32(83.43944)] * 3,
                    "clip.vision.image_mean": [f32(101.48761)] * 3}
            for k, v in want.items():
                check(g.get(k) == v, "overrides: %s = %r, expected %r" % (k, g.get(k), v))
            check("sha256:" in g.get("cxr.provenance.source"), "provenance source carries the checkpoint hash")
            print("ok   provenance / preprocessing overrides")
        test_anomalies(tmp, man)
        test_reference(tmp, man)
    finally:
        if not a.keep:
            shutil.rmtree(tmp, ignore_errors=True)
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
