#!/usr/bin/env python3
"""export_onnx.py — the PyTorch side of tests/bench/bench_engine.py: OpenAI CLIP's
own model code (openai/CLIP model.py: VisionTransformer, the text Transformer,
nn.MultiheadAttention, QuickGELU), built from an OpenAI-format state dict so
that PyTorch, ONNX Runtime and our GGUF (model/tools/convert/convert.py) run identical
weights; and its export to ONNX with torch.onnx. It owns no timing.

    /usr/bin/python3 tests/bench/export_onnx.py CKPT.pt OUTDIR [--opset 17]
        writes OUTDIR/vision.onnx (input "image" [batch, 3, S, S], batch dynamic, output
        "embedding" [batch, E], L2-normalised) and OUTDIR/text.onnx (input "ids"
        int64 [1, C], output "embedding" [1, E])

Library use: m = load_clip(CKPT) -> (Clip module in eval mode, its sizes dict).
"""
import argparse
import collections
import math
import os
import sys

import torch
import torch.nn as nn


class QuickGELU(nn.Module):
    def forward(self, x):
        return x * torch.sigmoid(1.702 * x)


class ResidualAttentionBlock(nn.Module):
    """openai/CLIP model.py, unchanged: x is (seq, batch, width)."""

    def __init__(self, d, heads, mask=None):
        super().__init__()
        self.attn = nn.MultiheadAttention(d, heads)
        self.ln_1 = nn.LayerNorm(d)
        self.mlp = nn.Sequential(collections.OrderedDict([
            ("c_fc", nn.Linear(d, d * 4)), ("gelu", QuickGELU()), ("c_proj", nn.Linear(d * 4, d))]))
        self.ln_2 = nn.LayerNorm(d)
        self.attn_mask = mask

    def forward(self, x):
        m = self.attn_mask.to(dtype=x.dtype, device=x.device) if self.attn_mask is not None else None
        h = self.ln_1(x)
        x = x + self.attn(h, h, h, need_weights=False, attn_mask=m)[0]
        return x + self.mlp(self.ln_2(x))


class Transformer(nn.Module):
    def __init__(self, width, layers, heads, mask=None):
        super().__init__()
        self.resblocks = nn.Sequential(*[ResidualAttentionBlock(width, heads, mask) for _ in range(layers)])

    def forward(self, x):
        return self.resblocks(x)


class VisionTransformer(nn.Module):
    def __init__(self, size, patch, width, layers, heads, out):
        super().__init__()
        self.conv1 = nn.Conv2d(3, width, kernel_size=patch, stride=patch, bias=False)
        self.class_embedding = nn.Parameter(torch.zeros(width))
        self.positional_embedding = nn.Parameter(torch.zeros((size // patch) ** 2 + 1, width))
        self.ln_pre = nn.LayerNorm(width)
        self.transformer = Transformer(width, layers, heads)
        self.ln_post = nn.LayerNorm(width)
        self.proj = nn.Parameter(torch.zeros(width, out))

    def forward(self, x):
        x = self.conv1(x)
        x = x.reshape(x.shape[0], x.shape[1], -1).permute(0, 2, 1)
        cls = self.class_embedding.to(x.dtype) + torch.zeros(x.shape[0], 1, x.shape[-1], dtype=x.dtype)
        x = torch.cat([cls, x], dim=1) + self.positional_embedding.to(x.dtype)
        x = self.ln_pre(x).permute(1, 0, 2)
        x = self.transformer(x).permute(1, 0, 2)
        return self.ln_post(x[:, 0, :]) @ self.proj


class Clip(nn.Module):
    def __init__(self, sd):
        super().__init__()
        vw = sd["visual.conv1.weight"].shape[0]
        patch = sd["visual.conv1.weight"].shape[-1]
        grid = int(round(math.sqrt(sd["visual.positional_embedding"].shape[0] - 1)))
        vl = len({k.split(".")[3] for k in sd if k.startswith("visual.transformer.resblocks.")})
        E = sd["text_projection"].shape[1]
        tw = sd["ln_final.weight"].shape[0]
        tl = len({k.split(".")[2] for k in sd if k.startswith("transformer.resblocks.")})
        ctx, vocab = sd["positional_embedding"].shape[0], sd["token_embedding.weight"].shape[0]
        self.sizes = dict(vision_width=vw, patch=patch, image_size=grid * patch, vision_layers=vl, embed=E,
                          text_width=tw, text_layers=tl, context=ctx, vocab=vocab)
        self.visual = VisionTransformer(grid * patch, patch, vw, vl, vw // 64, E)
        mask = torch.empty(ctx, ctx).fill_(float("-inf")).triu_(1)
        self.transformer = Transformer(tw, tl, tw // 64, mask)
        self.token_embedding = nn.Embedding(vocab, tw)
        self.positional_embedding = nn.Parameter(torch.empty(ctx, tw))
        self.ln_final = nn.LayerNorm(tw)
        self.text_projection = nn.Parameter(torch.empty(tw, E))
        self.logit_scale = nn.Parameter(torch.ones([]))

    def encode_image(self, x):
        return self.visual(x)

    def encode_text(self, ids):
        x = self.token_embedding(ids) + self.positional_embedding
        x = self.transformer(x.permute(1, 0, 2)).permute(1, 0, 2)
        x = self.ln_final(x)
        return x[torch.arange(x.shape[0]), ids.argmax(dim=-1)] @ self.text_projection


class ImageTower(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, image):
        e = self.clip.encode_image(image)
        return e / e.norm(dim=-1, keepdim=True)


class TextTower(nn.Module):
    def __init__(self, clip):
        super().__init__()
        self.clip = clip

    def forward(self, ids):
        e = self.clip.encode_text(ids)
        return e / e.norm(dim=-1, keepdim=True)


def load_clip(path):
    sd = torch.load(path, map_location="cpu")
    if isinstance(sd, dict) and isinstance(sd.get("state_dict"), dict):
        sd = sd["state_dict"]
    sd = {(k[7:] if k.startswith("module.") else k): v.float() for k, v in sd.items() if torch.is_tensor(v)}
    for k in ("input_resolution", "context_length", "vocab_size"):
        sd.pop(k, None)
    m = Clip(sd)
    missing, unexpected = m.load_state_dict(sd, strict=False)
    missing = [k for k in missing if not k.endswith("attn_mask")]
    if missing or unexpected:
        raise SystemExit("export_onnx: state dict mismatch: missing %s, unexpected %s" % (missing[:5], unexpected[:5]))
    return m.eval(), m.sizes


class ClassifierNet(nn.Module):
    """torchxrayvision's forward on torchvision's DenseNet-121 (features -> ReLU -> average pool ->
    Linear) or ResNet-50 (torchvision's own forward): the raw logits."""

    def __init__(self, net, arch):
        super().__init__()
        self.net, self.arch = net, arch

    def forward(self, x):
        if self.arch == "densenet":
            f = torch.nn.functional.relu(self.net.features(x))
            return self.net.classifier(torch.nn.functional.adaptive_avg_pool2d(f, (1, 1)).flatten(1))
        return self.net(x)


def load_classifier(fmt, checkpoint):
    """(ClassifierNet in float32, channels) from an original checkpoint, loaded by the reference."""
    sys.path.insert(0, os.path.join(os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__)))),
                                    "model", "tools", "convert"))
    import reference_classifier
    ref = reference_classifier.Classifier(fmt, checkpoint, dtype=torch.float32)
    return ClassifierNet(ref.net, ref.arch).eval(), ref.channels


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("checkpoint")
    ap.add_argument("outdir")
    ap.add_argument("--opset", type=int, default=17)
    ap.add_argument("--classifier", metavar="FORMAT", help="txv-densenet, txv-resnet or chexnet-densenet: write "
                    "vision.onnx (logits) only")
    ap.add_argument("--size", type=int, default=224, help="--classifier: input size")
    a = ap.parse_args(argv)
    os.makedirs(a.outdir, exist_ok=True)
    if a.classifier:
        net, C = load_classifier(a.classifier, a.checkpoint)
        with torch.no_grad():
            torch.onnx.export(net, (torch.zeros(1, C, a.size, a.size),), os.path.join(a.outdir, "vision.onnx"),
                              input_names=["image"], output_names=["embedding"],
                              dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
                              opset_version=a.opset, do_constant_folding=True)
        print("export_onnx: wrote %s/vision.onnx" % a.outdir)
        return 0
    m, s = load_clip(a.checkpoint)
    with torch.no_grad():
        img = torch.zeros(1, 3, s["image_size"], s["image_size"])
        torch.onnx.export(ImageTower(m), (img,), os.path.join(a.outdir, "vision.onnx"), input_names=["image"],
                          output_names=["embedding"], dynamic_axes={"image": {0: "batch"}, "embedding": {0: "batch"}},
                          opset_version=a.opset, do_constant_folding=True)
        ids = torch.zeros(1, s["context"], dtype=torch.long)
        ids[0, -1] = s["vocab"] - 1
        torch.onnx.export(TextTower(m), (ids,), os.path.join(a.outdir, "text.onnx"), input_names=["ids"],
                          output_names=["embedding"], opset_version=a.opset, do_constant_folding=True)
    print("export_onnx: wrote %s/{vision,text}.onnx" % a.outdir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
