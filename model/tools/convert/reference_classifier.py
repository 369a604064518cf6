#!/usr/bin/python3
"""reference_classifier.py — the independent float64 PyTorch reference for cxrvqa's classifier models
(torchxrayvision DenseNet-121 / ResNet-50, CheXNet-style DenseNet-121). It builds torchvision's own
`densenet121` / `resnet50`, loads the ORIGINAL checkpoint into it with load_state_dict(strict=True)
(its own key mapping; it never reads our GGUF and shares no code with convert.py) and runs the
forward the upstream projects define:

  torchxrayvision DenseNet  features -> ReLU -> global average pool -> Linear (txv models.DenseNet)
  CheXNet DenseNet121       torchvision's densenet121 forward (the same math), Sigmoid after the head
  torchxrayvision ResNet    torchvision's resnet50 forward with its fc (txv models.ResNet.model)

Outputs are the raw logits (before the sigmoid). op_norm() is torchxrayvision's operating-point
normalisation (models.op_norm), NaN thresholds giving the plain sigmoid.

Whole pickled models (torch.save(model), how torchxrayvision ships weights) name classes that are
not installed (torchxrayvision.models.DenseNet): this loader lists the GLOBALs of the pickle with
pickletools, and for every module it cannot import installs a stub module whose classes are empty
nn.Module subclasses, so torch.load restores the module tree and .state_dict() works.

Preprocessing written from the upstream documentation and code, not from cxrvqa's C:
  txv_preprocess(u8)   torchxrayvision: normalize(img, 255) = (2 img/255 - 1) * 1024; XRayCenterCrop
                       (crop = min(h, w), start = h // 2 - crop // 2); XRayResizer to S. Its default
                       engine is skimage (not installed here); this uses its "cv2" engine's
                       INTER_AREA, written as exact area-weighted averaging.
  chexnet_preprocess   torchvision Resize + CenterCrop(224) on the RGB image, ToTensor, ImageNet
                       mean/std (arnoweng/CheXNet test transform without the ten-crop).

    /usr/bin/python3 model/tools/convert/reference_classifier.py FORMAT CKPT --tensor RAW.f32 [--json]
"""
import argparse
import io
import json
import math
import pickletools
import sys
import types
import zipfile

import numpy as np
import torch
import torchvision

ARCH = {"txv-densenet": ("densenet", 1), "txv-resnet": ("resnet", 1), "chexnet-densenet": ("densenet", 3)}


class RefError(Exception):
    pass


def _pickle_globals(path):
    """(module, name) of every GLOBAL / STACK_GLOBAL in the archive's data.pkl."""
    with zipfile.ZipFile(path) as z:
        pkl = [n for n in z.namelist() if n.endswith("data.pkl")]
        data = z.read(pkl[0])
    out, strings = set(), []
    for op, arg, _ in pickletools.genops(io.BytesIO(data)):
        if op.name in ("SHORT_BINUNICODE", "BINUNICODE", "UNICODE"):
            strings.append(arg)
        elif op.name == "GLOBAL":
            out.add(tuple(arg.split(" ", 1)))
        elif op.name == "STACK_GLOBAL" and len(strings) >= 2:
            out.add((strings[-2], strings[-1]))
    return out


class _StubModule(types.ModuleType):
    def __getattr__(self, name):
        if name.startswith("__"):
            raise AttributeError(name)
        cls = type(name, (torch.nn.Module,), {"__module__": self.__name__})
        setattr(self, name, cls)
        return cls


def load_state(path):
    """(state dict, op_threshs tensor or None) of a plain / wrapped state dict or a whole pickled model."""
    try:
        obj = torch.load(path, map_location="cpu", weights_only=True)
    except Exception:
        added = []
        for mod, _ in _pickle_globals(path):
            parts = mod.split(".")
            for i in range(1, len(parts) + 1):
                name = ".".join(parts[:i])
                if name in sys.modules:
                    continue
                try:
                    __import__(name)
                except ImportError:
                    sys.modules[name] = _StubModule(name)
                    added.append(name)
        try:
            obj = torch.load(path, map_location="cpu")
        finally:
            for name in added:
                sys.modules.pop(name, None)
    op = None
    if isinstance(obj, torch.nn.Module):
        op = getattr(obj, "op_threshs", None)
        obj = obj.state_dict()
    if isinstance(obj, dict) and isinstance(obj.get("state_dict"), dict):
        obj = obj["state_dict"]
    sd = {k: v for k, v in obj.items() if isinstance(v, torch.Tensor)}
    if "op_threshs" in sd:
        op = sd.pop("op_threshs")
    return sd, op


def torchvision_keys(sd, arch):
    """The checkpoint's names as torchvision's modules name them."""
    out = {}
    for k, v in sd.items():
        for p in ("module.", "densenet121.", "model."):
            if k.startswith(p):
                k = k[len(p):]
        for a, b in (("norm.1", "norm1"), ("norm.2", "norm2"), ("conv.1", "conv1"), ("conv.2", "conv2")):
            k = k.replace("." + a + ".", "." + b + ".")
        if arch == "densenet":
            k = k.replace("classifier.0.", "classifier.")
        out[k] = v
    return out


class Classifier:
    def __init__(self, fmt, path, dtype=torch.float64):
        if fmt not in ARCH:
            raise RefError("unknown format %r" % fmt)
        self.arch, self.channels = ARCH[fmt]
        sd, op = load_state(path)
        sd = torchvision_keys(sd, self.arch)
        head = "classifier.weight" if self.arch == "densenet" else "fc.weight"
        K = sd[head].shape[0]
        if self.arch == "densenet":
            net = torchvision.models.densenet121(num_classes=K)
            net.features.conv0 = torch.nn.Conv2d(self.channels, 64, 7, 2, 3, bias=False)
        else:
            net = torchvision.models.resnet50(num_classes=K)
            net.conv1 = torch.nn.Conv2d(self.channels, 64, 7, 2, 3, bias=False)
        net.load_state_dict(sd, strict=True)
        self.net = net.to(dtype).eval()
        self.dtype, self.K = dtype, K
        self.op_threshs = None if op is None else op.detach().double().numpy()

    @torch.no_grad()
    def logits(self, chw):
        x = torch.as_tensor(np.asarray(chw), dtype=self.dtype)
        if x.dim() == 3:
            x = x[None]
        if x.shape[1] != self.channels:
            raise RefError("input has %d channels, the model takes %d" % (x.shape[1], self.channels))
        if self.arch == "densenet":  # torchxrayvision DenseNet.features2 + classifier
            f = torch.nn.functional.relu(self.net.features(x))
            z = self.net.classifier(torch.nn.functional.adaptive_avg_pool2d(f, (1, 1)).flatten(1))
        else:
            z = self.net(x)
        return z.numpy()[0] if np.asarray(chw).ndim == 3 else z.numpy()


def sigmoid(z):
    return 1.0 / (1.0 + np.exp(-np.asarray(z, dtype=np.float64)))


def op_norm(p, t):
    """torchxrayvision models.op_norm on probabilities p with thresholds t (NaN: p unchanged)."""
    p, t = np.asarray(p, np.float64), np.asarray(t, np.float64)
    out = np.where(p < t, p / (2 * t), 1.0 - (1.0 - p) / (2 * (1 - t)))
    return np.where(np.isnan(t), p, out)


def area_matrix(n_in, n_out):
    """(n_out, n_in) exact area-weighted averaging (cv2 INTER_AREA when shrinking)."""
    R = np.zeros((n_out, n_in))
    s = n_in / n_out
    for o in range(n_out):
        a, b = o * s, (o + 1) * s
        for i in range(int(math.floor(a)), min(n_in, int(math.ceil(b)))):
            R[o, i] = max(0.0, min(b, i + 1) - max(a, i))
    return R / R.sum(1, keepdims=True)


def txv_preprocess(u8, size):
    """torchxrayvision: (1, S, S) float64 from an 8-bit (H, W) image."""
    img = (2.0 * (np.asarray(u8, np.float64) / 255.0) - 1.0) * 1024.0
    h, w = img.shape
    crop = min(h, w)
    y0, x0 = h // 2 - crop // 2, w // 2 - crop // 2
    img = img[y0:y0 + crop, x0:x0 + crop]
    R = area_matrix(crop, size)
    return (R @ img @ R.T)[None]


def chexnet_preprocess(u8, size=224):
    """CheXNet: grey repeated to RGB, Resize(size) (bilinear, antialiased like PIL), CenterCrop(size),
    ToTensor, ImageNet mean / std: (3, S, S) float64."""
    from PIL import Image
    im = Image.fromarray(np.asarray(u8, np.uint8), "L").convert("RGB")
    h, w = im.height, im.width
    if h <= w:
        nh, nw = size, int(size * w / h)
    else:
        nh, nw = int(size * h / w), size
    im = im.resize((nw, nh), Image.BILINEAR)
    top, left = int(round((nh - size) / 2.0)), int(round((nw - size) / 2.0))
    a = np.asarray(im.crop((left, top, left + size, top + size)), np.float64).transpose(2, 0, 1) / 255.0
    mean, std = np.array([0.485, 0.456, 0.406]), np.array([0.229, 0.224, 0.225])
    return (a - mean[:, None, None]) / std[:, None, None]


def main(argv=None):
    ap = argparse.ArgumentParser(prog="reference_classifier.py")
    ap.add_argument("format", choices=tuple(ARCH))
    ap.add_argument("checkpoint")
    ap.add_argument("--tensor", required=True, metavar="RAW.f32", help="C x S x S float32")
    ap.add_argument("--json", action="store_true")
    a = ap.parse_args(argv)
    m = Classifier(a.format, a.checkpoint)
    v = np.fromfile(a.tensor, dtype="<f4")
    S = int(round(math.sqrt(v.size / m.channels)))
    if m.channels * S * S != v.size:
        raise SystemExit("reference_classifier.py: %s: not %d x S x S floats" % (a.tensor, m.channels))
    z = m.logits(v.reshape(m.channels, S, S))
    if a.json:
        print(json.dumps({"dim": len(z), "embedding": [float(x) for x in z], "logits": True}))
    else:
        print(" ".join("%.10g" % x for x in z))
    return 0


if __name__ == "__main__":
    sys.exit(main())
