#!/usr/bin/python3
"""test_preprocess_ref.py — the model-input tensor of `cxrvqa inspect --tensor`
against a Pillow reference.

Two non-square 8-bit planes (portrait and landscape chest phantoms with a
checkerboard patch and fine noise, so that interpolation differences show)
are written as PNG; for a grid of preprocessing specs (size, pad / crop /
stretch, bicubic / bilinear / area, 1 or 3 channels, mean, std, scale)
cxrvqa writes the tensor and this script builds the same tensor with Pillow
(model/tools/convert/preprocess.py, the reference the training code uses too):
mode "F" resize (Image.BICUBIC / BILINEAR / BOX: Pillow's antialiasing
separable convolution) and the geometry cxr_dicom.h documents —
  PAD: long side to S (lround), offsets (S - new) // 2, pad value 0 before
       normalising; CROP: short side to S (lround), offsets (new - S) // 2;
  STRETCH: both sides to S; CHW float32 little endian; (v*scale - mean)/std.

Tolerance: max |cxrvqa - Pillow| <= 1e-3 on the normalised tensor values
(whose magnitude is at most ~4 here), for every spec. Only float32
accumulation order may differ between the two implementations (measured:
about 1e-6); a wrong offset, size rounding, filter or support shows as an
error of 1e-2 or more. The maximum error of every spec is printed.

Usage: test_preprocess_ref.py --cxrvqa BIN
"""
import argparse
import os
import sys
import tempfile

import numpy as np
from PIL import Image

HERE = os.path.dirname(os.path.abspath(__file__))
sys.dont_write_bytecode = True  # keep __pycache__ out of the source tree
sys.path.insert(0, os.path.join(HERE, "..", "ref"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "sample_data"))
sys.path.insert(0, os.path.join(HERE, "..", "..", "model", "tools", "convert"))
import dicomref  # noqa: E402
import preprocess  # noqa: E402  (the one Python preprocessing reference)
import generate  # noqa: E402  (the chest phantom)

CLIP_MEAN = (0.48145466, 0.4578275, 0.40821073)
CLIP_STD = (0.26862954, 0.26130258, 0.27577711)


def make_plane(rows, cols, seed):
    y = generate.chest_phantom(rows, cols, seed)
    p = np.rint(10 + 235 * y)
    r0, c0 = rows // 8, cols // 10
    yy, xx = np.mgrid[0:rows // 6, 0:cols // 6]
    p[r0:r0 + rows // 6, c0:c0 + cols // 6] = np.where(((yy // 3) + (xx // 3)) % 2, 230, 30)
    rng = np.random.default_rng(seed)
    p += rng.integers(-6, 7, size=p.shape)
    return np.clip(p, 0, 255).astype(np.uint8)


def reference(plane, size, policy, interp, channels, mean, std, scale, pad_value=0.0):
    return preprocess.tensor(plane, size, policy, interp, channels, mean, std, scale, pad_value)


def specs():
    """The grid: every policy x interpolation, both channel counts, down- and
    upscaling, [0,1] and 0..255 normalisations."""
    out = []
    for policy in ("pad", "crop", "stretch"):
        for interp in ("bicubic", "bilinear", "area"):
            out.append(dict(size=224, policy=policy, interp=interp, channels=3,
                            mean=CLIP_MEAN, std=CLIP_STD, scale=1 / 255.0))
            out.append(dict(size=97, policy=policy, interp=interp, channels=1,
                            mean=(0.5,), std=(0.25,), scale=1 / 255.0))
            out.append(dict(size=512, policy=policy, interp=interp, channels=1,
                            mean=(128.0,), std=(64.0,), scale=1.0))
    out.append(dict(size=16, policy="pad", interp="area", channels=3,
                    mean=(0.485, 0.456, 0.406), std=(0.229, 0.224, 0.225), scale=1 / 255.0))
    return out


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    args = ap.parse_args()
    ck = dicomref.Checker()
    planes = {"portrait_300x220": make_plane(300, 220, 7), "landscape_180x263": make_plane(180, 263, 8)}
    worst = 0.0
    with tempfile.TemporaryDirectory() as tmp:
        for pname, plane in planes.items():
            src = os.path.join(tmp, pname + ".png")
            Image.fromarray(plane, "L").save(src)
            # the plane must come back unchanged (identity VOI, no polarity flip)
            back = os.path.join(tmp, pname + "_back.png")
            rc, js, err = dicomref.inspect(args.cxrvqa, src, "--png", back)
            if not ck.check(rc == 0 and js, "%s: inspect exit %d: %s" % (pname, rc, err)):
                continue
            ck.eq(js["ingestion"]["voi"], "identity", pname + ": voi")
            ck.eq(js["ingestion"]["inverted"], False, pname + ": inverted")
            ck.check(np.array_equal(dicomref.read_png(back), plane), pname + ": PNG plane not returned unchanged")
            for i, s in enumerate(specs()):
                tpath = os.path.join(tmp, "%s_%d.f32" % (pname, i))
                opts = ["--tensor", tpath, "--size", s["size"], "--policy", s["policy"], "--interp", s["interp"],
                        "--channels", s["channels"], "--mean", ",".join("%.9g" % m for m in s["mean"]),
                        "--std", ",".join("%.9g" % d for d in s["std"]), "--scale", "%.9g" % s["scale"]]
                label = "%s S=%d %s/%s ch=%d scale=%.4g" % (pname, s["size"], s["policy"], s["interp"],
                                                           s["channels"], s["scale"])
                rc, js, err = dicomref.inspect(args.cxrvqa, src, *opts)
                if not ck.check(rc == 0, "%s: exit %d: %s" % (label, rc, err)):
                    continue
                got = np.fromfile(tpath, dtype="<f4")
                n = s["channels"] * s["size"] ** 2
                if not ck.check(got.size == n, "%s: tensor has %d floats, %d expected" % (label, got.size, n)):
                    continue
                got = got.reshape(s["channels"], s["size"], s["size"]).astype(np.float64)
                # the CLI parses --scale as float32: use the same value
                scale = float(np.float32(s["scale"]))
                ref = reference(plane, s["size"], s["policy"], s["interp"], s["channels"],
                                [float(np.float32(m)) for m in s["mean"]],
                                [float(np.float32(d)) for d in s["std"]], scale)
                err_max = float(np.max(np.abs(got - ref)))
                tol = 1e-3
                worst = max(worst, err_max / tol)
                print("%-52s max |err| %.3g (tolerance %.3g)" % (label, err_max, tol))
                if not ck.check(err_max <= tol, "%s: max |err| %.4g above %.3g" % (label, err_max, tol)):
                    idx = np.unravel_index(np.argmax(np.abs(got - ref)), got.shape)
                    print("   first worst at %s: cxrvqa %.6f, Pillow %.6f" % (idx, got[idx], ref[idx]))
    print("worst error / tolerance over all specs: %.3f" % worst)
    return ck.finish("preprocess_vs_pillow")


if __name__ == "__main__":
    sys.exit(main())
