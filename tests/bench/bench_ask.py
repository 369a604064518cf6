#!/usr/bin/python3
"""bench_ask.py — end-to-end latency of `cxrvqa ask` on the real 1955x1841
chest CR, with its parts, against a Python/PyTorch stack doing the same work
in the same run.

Ours: `cxrvqa ask --json --no-audit --threads T --heatmap OUT.png FILE Q` (T 0 = auto),
one process per request; the answer's own timings give the parts (decode,
preprocess, image tower, scoring incl. evidence side, heatmap) and
latency_ms their sum as a warm worker pays it; the process wall time adds
start-up (model mmap + SHA-256 of the model file).

Baseline (what a Python service does today, warm, in one process): GDCM
(`gdcmconv --raw`, the decoder Python stacks use for JPEG-LS / JPEG 2000)
to an uncompressed file, pydicom to read it, NumPy for Bits Stored masking,
the VOI window and MONOCHROME1 inversion, Pillow for the aspect-preserving
bicubic resize and padding, torch (OMP_WAIT_POLICY=PASSIVE, T threads) for
the same CNN image tower (model/tools/train/cnn_forward.py TorchCNN), NumPy for
the finding score. No heatmap (it would only add to the baseline).

    /usr/bin/python3 tests/bench/bench_ask.py [--cxrvqa build/cxrvqa] [--data ../shared/data/dicom]
        [--repeats 9] [--threads 2]

Prints a markdown table of medians and the ratio ours / baseline (below 1:
we are faster). Exit 0; 77 when the DICOM files are absent.
"""
import os

os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse  # noqa: E402
import json  # noqa: E402
import statistics  # noqa: E402
import subprocess  # noqa: E402
import sys  # noqa: E402
import tempfile  # noqa: E402
import time  # noqa: E402

import numpy as np  # noqa: E402
import pydicom  # noqa: E402
from PIL import Image  # noqa: E402

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
sys.path[:0] = [os.path.join(ROOT, "model", "tools", d) for d in ("train", "convert")]
MODEL = os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")
FILES = ["chest/WG04_RG1_CR_chest_MONO1_JLSN.dcm", "chest/WG04_RG1_CR_chest_MONO1_J2KI.dcm"]
Q = "Is there a pleural effusion?"


def ours(exe, path, threads, tmp):
    t0 = time.perf_counter()
    p = subprocess.run([exe, "ask", "--json", "--no-audit", "--model", MODEL, "--threads", str(threads),
                        "--heatmap", os.path.join(tmp, "h.png"), path, Q], capture_output=True, text=True)
    wall = (time.perf_counter() - t0) * 1e3
    if p.returncode != 0:
        raise RuntimeError(p.stderr)
    a = json.loads(p.stdout)
    t = a["timings_ms"]
    return dict(decode=t["decode"], preprocess=t["preprocess"], tower=t["image_tower"], scoring=t["scoring"],
                heatmap=t["heatmap"], total=a["latency_ms"], wall=wall, p=a["findings"][0]["probability"])


class Baseline:
    def __init__(self, threads):
        import cnn_forward
        self.m = cnn_forward.Model(MODEL)
        self.net = cnn_forward.TorchCNN(self.m, threads=threads)
        pp = self.m.preproc()
        self.S, self.mean, self.std, self.scale = pp["size"], pp["mean"][0], pp["std"][0], pp["scale"]
        names = self.m.k("cxr.findings.names")
        self.i = list(names).index("pleural_effusion")
        self.a = float(self.m.w("f.calib")[self.i][0]) if self.m.has("f.calib") else 1.0
        self.net.embed(np.zeros((1, 1, self.S, self.S), np.float32))  # warm

    def __call__(self, path, tmp):
        t = {}
        t0 = time.perf_counter()
        raw = os.path.join(tmp, "raw.dcm")
        subprocess.run(["gdcmconv", "--raw", path, raw], check=True, capture_output=True)
        ds = pydicom.dcmread(raw)
        px = ds.pixel_array.astype(np.float32)
        t["decode"] = (time.perf_counter() - t0) * 1e3
        t1 = time.perf_counter()
        bs = int(ds.BitsStored)
        px = np.minimum(px, (1 << bs) - 1)
        if "WindowCenter" in ds:
            c = float(ds.WindowCenter[0] if ds["WindowCenter"].VM > 1 else ds.WindowCenter)
            w = float(ds.WindowWidth[0] if ds["WindowWidth"].VM > 1 else ds.WindowWidth)
        else:
            lo, hi = np.percentile(px, [0.5, 99.5])
            c, w = (lo + hi) / 2, max(hi - lo, 1)
        y = np.clip(((px - (c - 0.5)) / (w - 1) + 0.5) * 255, 0, 255)
        if ds.PhotometricInterpretation == "MONOCHROME1":
            y = 255 - y
        im = Image.fromarray(y.astype(np.uint8))
        r = self.S / max(im.size)
        im = im.resize((max(1, round(im.size[0] * r)), max(1, round(im.size[1] * r))), Image.BICUBIC)
        canvas = Image.new("L", (self.S, self.S), 0)
        canvas.paste(im, ((self.S - im.size[0]) // 2, (self.S - im.size[1]) // 2))
        x = (np.asarray(canvas, np.float32) * self.scale - self.mean) / self.std
        t["preprocess"] = (time.perf_counter() - t1) * 1e3
        t2 = time.perf_counter()
        e = self.net.embed(x[None, None])
        t["tower"] = (time.perf_counter() - t2) * 1e3
        t3 = time.perf_counter()
        import cnn_forward
        z = cnn_forward.zscores(self.m, e)[0, self.i]
        _ = 1 / (1 + np.exp(-z))
        t["scoring"] = (time.perf_counter() - t3) * 1e3
        t["total"] = (time.perf_counter() - t0) * 1e3
        return t


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", default=os.path.join(ROOT, "build", "cxrvqa"))
    ap.add_argument("--data", default=os.path.join(ROOT, "..", "shared", "data", "dicom"))
    ap.add_argument("--repeats", type=int, default=9)
    ap.add_argument("--threads", type=int, default=2, help="threads of the torch baseline")
    ap.add_argument("--our-threads", type=int, default=0, help="cxrvqa --threads (0: auto, 1 for the CNN)")
    a = ap.parse_args()
    files = [os.path.join(a.data, f) for f in FILES if os.path.isfile(os.path.join(a.data, f))]
    if not files:
        print("bench_ask: SKIP: %s has none of %s" % (a.data, ", ".join(FILES)))
        return 77
    base = Baseline(a.threads)
    tmp = tempfile.mkdtemp(prefix="cxrvqa-bench-ask-")
    print("| file | | decode | preprocess | image tower | scoring | heatmap | **latency** | process wall |")
    print("|---|---|---|---|---|---|---|---|---|")
    for f in files:
        ours(a.cxrvqa, f, a.our_threads, tmp)
        base(f, tmp)  # warm-up of each
        O, B = [], []
        for _ in range(a.repeats):  # interleaved: A B A B
            O.append(ours(a.cxrvqa, f, a.our_threads, tmp))
            B.append(base(f, tmp))

        def med(rows, k):
            return statistics.median(r[k] for r in rows) if rows and k in rows[0] else float("nan")
        name = os.path.basename(f).replace("WG04_RG1_CR_chest_MONO1_", "")
        print("| %s | cxrvqa | %.1f | %.1f | %.1f | %.1f | %.1f | **%.1f** | %.1f |" % (
            name, med(O, "decode"), med(O, "preprocess"), med(O, "tower"), med(O, "scoring"), med(O, "heatmap"),
            med(O, "total"), med(O, "wall")))
        print("| | python+torch | %.1f | %.1f | %.1f | %.1f | - | **%.1f** | |" % (
            med(B, "decode"), med(B, "preprocess"), med(B, "tower"), med(B, "scoring"), med(B, "total")))
        print("| | ratio ours/baseline | %.2f | %.2f | %.2f | | | **%.2f** | |" % (
            med(O, "decode") / med(B, "decode"), med(O, "preprocess") / med(B, "preprocess"),
            med(O, "tower") / med(B, "tower"), med(O, "total") / med(B, "total")))
    print("\n%d repeats, medians in ms; torch on %d threads, cxrvqa --threads %d (0 = auto). 2 cores.\n"
          "Target: ask latency under 400 ms on 2 threads." % (a.repeats, a.threads, a.our_threads))
    return 0


if __name__ == "__main__":
    sys.exit(main())
