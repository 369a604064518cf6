#!/usr/bin/python3
"""test_reduced_decode.py — JPEG 2000, JPEG-LS and 8-bit JPEG decoded at a reduced resolution (what `cxrvqa ask` does: the
lowest wavelet level whose short side is still >= the model's input side) against the full decode,
at the model's input and in its answers.

Files: generated chest phantoms (sample_data/generate.py) of 1024 x 960 and 2048 x 1792 pixels, 12-bit
MONOCHROME2 with a window and MONOCHROME1, in JPEG 2000 lossless (.4.90) and lossy (.4.91) code streams
(opj_compress, encapsulated with pydicom as tests/dicom/test_variants.py does); 8-bit grey JPEG baseline
(dcmcjpeg +eb: libjpeg-turbo's scaled IDCT, 1/2 .. 1/8); JPEG-LS lossless (dcmcjpls +el: our decoder
decodes every sample and keeps the mean of each 2^r x 2^r block); and as the control 12-bit JPEG
extended, which has no reduced path (reduce 0, identical answers). With ../shared/data, the real WG04
RG1 CR in JPEG 2000 and in JPEG-LS near-lossless (else skipped, visibly).

Per file:
  - `cxrvqa inspect --model M --decode-min S --json` reports decode_reduce > 0 and an output plane of
    ceil(size / 2^reduce) whose short side is >= S (JPEG-LS: >= 2 S) and the next level's would not be;
  - the model tensor of the reduced decode against the full decode (`inspect --model M --tensor`):
    mean |dx| <= TENSOR_MEAN and max |dx| <= TENSOR_MAX, in the model's normalised units;
  - every finding's probability from `cxrvqa ask --json` against `ask --full-decode`: max |dp| <= DP_MAX;
  - the answer JSON's image.decode_reduce says what was done.
Tolerances (the wavelet low-pass replaces the bicubic resampling of the full frame; measured on the
files above and printed: mean |dx| up to 0.0196, max |dx| 0.49 and max |dp| 0.039, all on the real CR):
TENSOR_MEAN 0.025, TENSOR_MAX 0.6, DP_MAX 0.05.

    /usr/bin/python3 tests/dicom/test_reduced_decode.py --cxrvqa build/cxrvqa [--model M] [--keep DIR]
Exit 0 pass, 1 fail, 77 when opj_compress is missing.
"""
import argparse
import glob
import json
import os
import shutil
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
sys.dont_write_bytecode = True
sys.path.insert(0, HERE)
import test_variants as tv  # noqa: E402  (phantom, data sets, JPEG 2000 encapsulation)

TENSOR_MEAN, TENSOR_MAX, DP_MAX = 0.025, 0.6, 0.05
QUESTION = "What do you see?"


def run(args, check=True):
    p = subprocess.run(args, stdout=subprocess.PIPE, stderr=subprocess.PIPE)
    if check and p.returncode != 0:
        raise RuntimeError("%s: exit %d: %s" % (" ".join(args), p.returncode, p.stderr.decode(errors="replace")))
    return p.stdout.decode()


def generated(tmp):
    files = []
    for rows, cols in ((1024, 960), (2048, 1792)):
        img = tv.phantom(rows, cols, seed=rows)
        stored = np.clip(img * 3400 + 300, 0, 4095).astype(np.uint16)
        for mono in ("MONOCHROME2", "MONOCHROME1"):
            st = stored if mono == "MONOCHROME2" else (4095 - stored)
            ds = tv.make_ds(st, photometric=mono, WindowCenter=2000, WindowWidth=3800)
            for lossy in (False, True):
                name = "%dx%d_%s_%s.dcm" % (cols, rows, mono.lower(), "j2ki" if lossy else "j2kr")
                files.append(tv.j2k_file(ds, st, os.path.join(tmp, name), tmp, lossy))
        # 8-bit grey JPEG baseline (libjpeg-turbo's scaled IDCT), JPEG-LS (block means while
        # decoding), and a codec without a reduced path (12-bit JPEG extended: DCMTK decodes every
        # pixel, so nothing may change)
        st8 = np.clip(img * 230 + 12, 0, 255).astype(np.uint8)
        ds8 = tv.make_ds(st8, bits_stored=8)
        src = tv.save(ds8, os.path.join(tmp, "src8.dcm"))
        out = os.path.join(tmp, "%dx%d_mono2_jpeg8.dcm" % (cols, rows))
        tv.run(["dcmcjpeg", "+eb", "+q", "90", src, out])
        files.append(out)
        ds = tv.make_ds(stored, WindowCenter=2000, WindowWidth=3800)
        src = tv.save(ds, os.path.join(tmp, "src12.dcm"))
        for tag, cmd in (("jpegls", ["dcmcjpls", "+el"]), ("jpeg12_full", ["dcmcjpeg", "+ee", "+q", "90"])):
            out = os.path.join(tmp, "%dx%d_mono2_%s.dcm" % (cols, rows, tag))
            tv.run(cmd + [src, out])
            files.append(out)
    return files


def tensor(cx, f, model, tmp, decode_min):
    out = os.path.join(tmp, "t.f32")
    args = [cx, "inspect", f, "--model", model, "--tensor", out, "--json"]
    if decode_min:
        args += ["--decode-min", str(decode_min)]
    js = json.loads(run(args))
    return np.fromfile(out, dtype="<f4"), js


def probs(cx, f, model, full):
    args = [cx, "ask", "--json", "--no-audit", "--model", model, f, QUESTION] + (["--full-decode"] if full else [])
    d = json.loads(run(args))
    return {x["finding"]: x["probability"] for x in d["findings"]}, d


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--model", default=os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dicom"))
    ap.add_argument("--keep")
    a = ap.parse_args()
    missing = [t for t in ("opj_compress", "dcmcjpeg", "dcmcjpls") if not shutil.which(t)]
    if missing:
        print("SKIP: %s missing" % ", ".join(missing))
        return 77
    cx = os.path.abspath(a.cxrvqa)
    info = json.loads(run([cx, "model", "info", "--model", a.model, "--json"]))
    S = info["preprocessing"]["size"]
    tmp = a.keep or tempfile.mkdtemp(prefix="cxr_reduced_")
    os.makedirs(tmp, exist_ok=True)
    files = generated(tmp)
    real = sorted(glob.glob(os.path.join(a.data, "chest", "*J2K*.dcm")) +
                  glob.glob(os.path.join(a.data, "chest", "*JLS*.dcm")))
    if real:
        files += real
    else:
        print("SKIP (visible): %s absent: the real JPEG 2000 and JPEG-LS chest CRs are not checked" % a.data)
    fails, worst = 0, {"tmean": 0, "tmax": 0, "dp": 0}
    for f in files:
        name = os.path.basename(f)
        full_t, fj = tensor(cx, f, a.model, tmp, 0)
        red_t, rj = tensor(cx, f, a.model, tmp, S)
        ing = rj["ingestion"]
        rows, cols = fj["ingestion"]["output_rows"], fj["ingestion"]["output_columns"]
        r = ing["decode_reduce"]
        q = (1 << r) - 1
        # JPEG-LS block means keep twice the model's side (the model's resize does the last halving)
        need = 2 * S if ("jpegls" in name or "JLS" in name) else S
        if name.endswith("_full.dcm"):  # no reduced path for this codec: every pixel, the same answers
            shape_ok = r == 0 and ing["output_rows"] == rows and ing["output_columns"] == cols
        else:
            shape_ok = (r > 0 and ing["output_rows"] == (rows + q) >> r and ing["output_columns"] == (cols + q) >> r
                        and min(ing["output_rows"], ing["output_columns"]) >= need
                        and (r == 3 or min((rows + 2 * q + 1) >> (r + 1), (cols + 2 * q + 1) >> (r + 1)) < need))
        d = np.abs(full_t - red_t)
        pr, dr = probs(cx, f, a.model, False)
        pf, df = probs(cx, f, a.model, True)
        dp = max(abs(pr[k] - pf[k]) for k in pf)
        json_ok = dr["image"].get("decode_reduce") == r and df["image"].get("decode_reduce") == 0
        ok = shape_ok and d.mean() <= TENSOR_MEAN and d.max() <= TENSOR_MAX and dp <= DP_MAX and json_ok
        worst["tmean"] = max(worst["tmean"], d.mean())
        worst["tmax"] = max(worst["tmax"], d.max())
        worst["dp"] = max(worst["dp"], dp)
        print("%s %-42s reduce %d (%dx%d of %dx%d)  tensor mean|dx| %.4f max %.3f  max|dp| %.4f%s" % (
            "ok  " if ok else "FAIL", name, r, ing["output_columns"], ing["output_rows"], cols, rows, d.mean(),
            d.max(), dp, "" if shape_ok and json_ok else "  (level or JSON wrong)"))
        fails += not ok
    print("worst: tensor mean |dx| %.4f (limit %g), max |dx| %.3f (limit %g), max |dp| %.4f (limit %g)" % (
        worst["tmean"], TENSOR_MEAN, worst["tmax"], TENSOR_MAX, worst["dp"], DP_MAX))
    print("%d passed, %d failed" % (len(files) - fails, fails))
    if not a.keep:
        shutil.rmtree(tmp, ignore_errors=True)
    return 1 if fails else 0


if __name__ == "__main__":
    sys.exit(main())
