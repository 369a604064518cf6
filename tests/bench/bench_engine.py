#!/usr/bin/env python3
"""bench_engine.py — our engine against tuned PyTorch and ONNX Runtime, on identical weights, in
the same run.

For each case (model x batch x threads, and the text tower at the full context) it starts one
long-lived worker per engine, each holding its model open:
  ours   tests/bench/bench_engine.c --serve (the public API: cxr_model_embed_image / _tokens)
  torch  this script with --torch-worker: OpenAI CLIP's model code (export_onnx.py) on the same
         state dict, torch.set_num_threads(T), torch.inference_mode(), OMP_WAIT_POLICY=PASSIVE
         (REFERENCE.md §7: untuned, its OpenMP threads fight Debian's OpenBLAS threads)
  ort    tests/bench/ort_bench.js: onnxruntime-node, the model exported by torch.onnx,
         intraOpNumThreads = T, sequential execution
checks that every engine's embedding matches the float64 reference (model/tools/convert/reference.py:
cosine and max abs error on the L2-normalised embedding), then interleaves them: R rounds of
"run K" to each worker in turn (rotating the order, a pause between), and reports the median of
all R*K times, the ratios, each worker's model open time and peak RSS as a markdown table.

    /usr/bin/python3 tests/bench/bench_engine.py --bin build/tests/bench/bench_engine \\
        [--work /tmp/cxrvqa-bench] [--models b32,b16,densenet121,resnet50-512,cnn] [--batches 1,8] [--threads 1,2] [--text]
        [--rounds 5] [--runs 3] [--engines ours,torch,ort] [--ours NAME=BIN[:f16][:avx2]] ...
        [--ort-modules DIR/node_modules]

Classifier models (densenet121: torchxrayvision-layout DenseNet-121, 1 channel, 224; resnet50-512: its
ResNet-50, 1 channel, 512): the embedding is the K raw logits; torch runs torchvision's model with
torchxrayvision's forward (export_onnx.py ClassifierNet) and OPENBLAS_NUM_THREADS=1; parity is the cosine
of the raw logits and max |Δp| of their sigmoids.

Models are built on first use under --work (random weights, full size): make_checkpoints.py
(ViT-B/32 = openai-clip-vitb32; ViT-B/16 = the same sizes with patch 16), convert.py (F32 and
--f16 GGUF), export_onnx.py. --ours adds further builds of ours as columns (e.g. a baseline
build, :f16 to run the F16 GGUF, :avx2 to keep our GEMM on its AVX2 tile on a CPU with AVX-512). Ratios: "x torch" = torch time / ours (above 1: we are
faster), "/ ort" = ours / ORT time (below 1.2: within the target). Exit status 1 if a parity
check fails.
"""
import argparse
import json
import os
import resource
import select
import statistics
import subprocess
import sys
import time

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
TOOLS = os.path.join(ROOT, "model", "tools", "convert")
PY = "/usr/bin/python3"
PARITY_COS, PARITY_ABS = 0.9999, 1e-4

MODELS = {
    "b32": dict(variant="openai-clip-vitb32", args=["--only", "openai-clip-vitb32"], label="ViT-B/32"),
    "b16": dict(variant="vitb16", label="ViT-B/16",
                args=["--only", "vitb16", "--custom", "vitb16", "--format", "openai-clip", "--vision",
                      "768,12,16,224", "--text", "512,12,77,0", "--embed", "512"]),
    # classifiers (torchxrayvision layout, 1 channel): the embedding is the K raw logits
    "densenet121": dict(variant="txv-densenet", label="DenseNet-121 224", classifier=True, size=224,
                        args=["--only", "txv-densenet"]),
    "resnet50-512": dict(variant="txv-resnet", label="ResNet-50 512", classifier=True, size=512,
                         args=["--only", "txv-resnet"]),
    # the shipped research model's CNN image tower, its own weights (no ONNX export: ours and torch)
    "cnn": dict(label="shipped CNN", shipped=os.path.join(ROOT, "model", "cxrvqa-cxr-cnn.gguf")),
}


def log(*a):
    print(*a, file=sys.stderr, flush=True)


# ------------------------------------------------------------------ models


def prepare(work, key):
    """Checkpoint, GGUF (F32 and F16) and ONNX files of one model, built once under work."""
    spec = MODELS[key]
    if spec.get("shipped"):
        return dict(pt=spec["shipped"], gguf=spec["shipped"], gguf16=spec["shipped"], key=key, onnx_vision=None,
                    onnx_text=None)
    ck = os.path.join(work, "ck")
    pt = os.path.join(ck, spec["variant"] + ".pt")
    bpe = os.path.join(ck, "bpe_simple_vocab.txt.gz")
    if not os.path.isfile(pt):
        log("building checkpoint", pt)
        subprocess.run([PY, os.path.join(TOOLS, "make_checkpoints.py"), ck] + spec["args"], check=True,
                       stdout=subprocess.DEVNULL)
    out = dict(pt=pt, bpe=bpe, key=key)
    if spec.get("classifier"):
        g = os.path.join(work, "%s.gguf" % key)
        if not os.path.isfile(g):
            log("converting", g)
            subprocess.run([PY, os.path.join(TOOLS, "convert.py"), spec["variant"], pt, g, "--size", str(spec["size"])],
                           check=True, stdout=subprocess.DEVNULL)
        out["gguf"] = out["gguf16"] = g  # F16 would only touch the head: one file
        od = os.path.join(work, "onnx-" + key)
        if not os.path.isfile(os.path.join(od, "vision.onnx")):
            log("exporting ONNX", od)
            subprocess.run([PY, os.path.join(HERE, "export_onnx.py"), pt, od, "--classifier", spec["variant"], "--size",
                            str(spec["size"])], check=True, stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        out["onnx_vision"], out["onnx_text"] = os.path.join(od, "vision.onnx"), None
        return out
    for f16 in (0, 1):
        g = os.path.join(work, "%s%s.gguf" % (key, ".f16" if f16 else ""))
        if not os.path.isfile(g):
            log("converting", g)
            subprocess.run([PY, os.path.join(TOOLS, "convert.py"), "openai-clip", pt, bpe, g] + (["--f16"] if f16 else []),
                           check=True, stdout=subprocess.DEVNULL)
        out["gguf16" if f16 else "gguf"] = g
    od = os.path.join(work, "onnx-" + key)
    if not os.path.isfile(os.path.join(od, "text.onnx")):
        log("exporting ONNX", od)
        subprocess.run([PY, os.path.join(HERE, "export_onnx.py"), pt, od], check=True, stdout=subprocess.DEVNULL,
                       stderr=subprocess.DEVNULL)
    out["onnx_vision"], out["onnx_text"] = os.path.join(od, "vision.onnx"), os.path.join(od, "text.onnx")
    return out


def shipped_model(path):
    sys.path[:0] = [os.path.join(ROOT, "model", "tools", "train"), TOOLS]
    import cnn_forward
    return cnn_forward, cnn_forward.Model(path)


def sizes_of(pt, key=None):
    if key and MODELS[key].get("shipped"):
        _, m = shipped_model(pt)
        return dict(image_size=m.preproc()["size"], channels=m.cin, context=0, vocab=0, shipped=True)
    if key and MODELS[key].get("classifier"):
        v = MODELS[key]
        return dict(image_size=v["size"], channels=1, context=0, vocab=0, classifier=v["variant"])
    import torch
    sd = torch.load(pt, map_location="cpu")
    g = sd["visual.conv1.weight"].shape[-1] * int(round((sd["visual.positional_embedding"].shape[0] - 1) ** 0.5))
    return dict(image_size=g, channels=3, context=sd["positional_embedding"].shape[0],
                vocab=sd["token_embedding.weight"].shape[0])


def make_inputs(work, key, sz, batches):
    """Deterministic inputs shared by every engine: images ~ N(0,1) (a normalised tensor), and
    token ids filling the whole context with the end-of-text id last (so all of it is computed)."""
    import numpy as np
    rng = np.random.default_rng(2024)
    S, C, V, ch = sz["image_size"], sz["context"], sz["vocab"], sz["channels"]
    paths = {"key": key}
    for b in batches:
        p = os.path.join(work, "in-%s-b%d.f32" % (key, b))
        x = rng.standard_normal((b, ch, S, S))
        if sz.get("classifier", "").startswith("txv"):
            x = x * 300.0  # torchxrayvision inputs span [-1024, 1024]
        x.astype("<f4").tofile(p)
        paths[b] = p
    if not V:
        return paths
    ids = [(1 + (i * 7919) % (V - 3)) for i in range(C)]
    ids[0], ids[-1] = V - 2, V - 1  # as bench_engine.c builds them
    p = os.path.join(work, "ids-%s.i64" % key)
    np.asarray([ids], dtype="<i8").tofile(p)
    paths["ids"], paths["ids_list"] = p, ids
    return paths


def reference(pt, inputs, batch, text):
    """float64 reference embeddings (model/tools/convert/reference.py), batch x E."""
    import numpy as np
    sys.path.insert(0, TOOLS)
    import reference as ref
    sz = sizes_of(pt, inputs.get("key"))
    if sz.get("shipped"):  # model/tools/train/cnn_forward.py's float64 twin of the tower
        cf, m = shipped_model(pt)
        S, C = sz["image_size"], sz["channels"]
        x = np.fromfile(inputs[batch], dtype="<f4").reshape(batch, C, S, S)
        return np.asarray([cf.image_embedding_ref(m, x[i].astype(np.float64)) for i in range(batch)])
    if sz.get("classifier"):
        import reference_classifier
        m = reference_classifier.Classifier(sz["classifier"], pt)
        S = sz["image_size"]
        x = np.fromfile(inputs[batch], dtype="<f4").reshape(batch, 1, S, S)
        return np.asarray([m.logits(x[i].astype(np.float64)) for i in range(batch)])
    m = ref.OpenAIClip(pt)
    if text:
        return np.asarray([m.embed_tokens(inputs["ids_list"])])
    S = sizes_of(pt)["image_size"]
    x = np.fromfile(inputs[batch], dtype="<f4").reshape(batch, 3, S, S)
    return np.asarray([m.embed_image(x[i]) for i in range(batch)])


# ----------------------------------------------------------------- workers


class Worker:
    def __init__(self, name, cmd, env=None):
        self.name, self.cmd = name, cmd
        self.p = subprocess.Popen(cmd, stdin=subprocess.PIPE, stdout=subprocess.PIPE, stderr=subprocess.PIPE,
                                  env=env, text=True, bufsize=1)
        self.ready = self.read(600)
        self.times = []

    def read(self, timeout=600):
        r, _, _ = select.select([self.p.stdout], [], [], timeout)
        line = self.p.stdout.readline() if r else ""
        if not line:
            err = self.p.stderr.read() if self.p.poll() is not None else ""
            raise RuntimeError("%s: no answer (%s)\n%s" % (self.name, " ".join(self.cmd), err[-2000:]))
        return json.loads(line)

    def ask(self, cmd, timeout=600):
        self.p.stdin.write(cmd + "\n")
        self.p.stdin.flush()
        return self.read(timeout)

    def close(self):
        try:
            r = self.ask("quit", 60)
        except (RuntimeError, BrokenPipeError, ValueError):
            r = {}
        self.p.wait(60)
        return r.get("rss_kb", 0)


def peak_rss_kb():
    """VmHWM of this process image (ru_maxrss also counts the parent's pages across exec)."""
    try:
        with open("/proc/self/status") as f:
            for line in f:
                if line.startswith("VmHWM:"):
                    return int(line.split()[1])
    except OSError:
        pass
    return resource.getrusage(resource.RUSAGE_SELF).ru_maxrss


def torch_worker(a):
    """The --torch-worker process: same protocol as bench_engine.c --serve."""
    import numpy as np
    import torch
    sys.path.insert(0, HERE)
    from export_onnx import ImageTower, TextTower, load_clip, load_classifier
    torch.set_num_threads(a.threads)
    t0 = time.perf_counter()
    if a.cnn:  # the shipped CNN: cnn_forward.TorchCNN, torch.nn.functional on its own weights
        cf, m = shipped_model(a.checkpoint)
        net = cf.TorchCNN(m, threads=a.threads)
        C = m.cin

        def model(t):
            return torch.from_numpy(net.embed(t.numpy()))
    elif a.classifier:
        model, C = load_classifier(a.classifier, a.checkpoint)
        sz = None
    else:
        clip, sz = load_clip(a.checkpoint)
    open_ms = (time.perf_counter() - t0) * 1e3
    if a.classifier or a.cnn:
        x = torch.from_numpy(np.fromfile(a.input, dtype="<f4").reshape(a.batch, C, a.size, a.size).copy())
    elif a.text:
        model = TextTower(clip)
        x = torch.from_numpy(np.fromfile(a.input, dtype="<i8").reshape(1, -1).copy())
    else:
        model = ImageTower(clip)
        S = sz["image_size"]
        x = torch.from_numpy(np.fromfile(a.input, dtype="<f4").reshape(a.batch, 3, S, S).copy())
    rss_open = peak_rss_kb()
    print(json.dumps({"ready": 1, "open_ms": open_ms, "rss_open_kb": rss_open}), flush=True)
    with torch.inference_mode():
        for line in sys.stdin:
            line = line.strip()
            if line.startswith("run "):
                times = []
                for _ in range(int(line[4:])):
                    t0 = time.perf_counter()
                    model(x)
                    times.append((time.perf_counter() - t0) * 1e3)
                print(json.dumps({"times_ms": times}), flush=True)
            elif line.startswith("emb "):
                model(x).numpy().astype("<f4").tofile(line[4:])
                print(json.dumps({"ok": 1}), flush=True)
            elif line == "quit":
                break
            else:
                print(json.dumps({"error": "unknown command"}), flush=True)
    print(json.dumps({"rss_kb": peak_rss_kb()}), flush=True)
    return 0


def start(engine, kind, files, inputs, sz, batch, threads, text, a):
    """kind: 'ours' (bin, f16 flag), 'torch' or 'ort'."""
    env = dict(os.environ)
    if kind == "torch":
        env.update(OMP_WAIT_POLICY="PASSIVE", OMP_NUM_THREADS=str(threads), OPENBLAS_NUM_THREADS="1" if sz.get("classifier") or sz.get("shipped") else str(threads))
        cmd = [PY, os.path.abspath(__file__), "--torch-worker", "--checkpoint", files["pt"], "--threads", str(threads),
               "--batch", str(batch), "--input", inputs["ids"] if text else inputs[batch]] + (["--text"] if text else [])
        if sz.get("classifier"):
            cmd += ["--classifier", sz["classifier"], "--size", str(sz["image_size"])]
        if sz.get("shipped"):
            cmd += ["--cnn", "--size", str(sz["image_size"])]
    elif kind == "ort":
        env["NODE_PATH"] = a.ort_modules
        cmd = ["node", os.path.join(HERE, "ort_bench.js"), "--threads", str(threads)]
        if text:
            cmd += ["--model", files["onnx_text"], "--ids", inputs["ids"], "--ctx", str(sz["context"])]
        else:
            cmd += ["--model", files["onnx_vision"], "--input", inputs[batch], "--batch", str(batch), "--size",
                    str(sz["image_size"]), "--channels", str(sz["channels"])]
    else:
        binpath, f16, avx2 = engine
        if avx2:
            env["CXR_GEMM_ISA"] = "avx2"
        cmd = [binpath, "--serve", "--model", files["gguf16" if f16 else "gguf"], "--threads", str(threads),
               "--batch", str(batch)]
        cmd += ["--text"] if text else ["--input", inputs[batch]]
    return Worker(kind, cmd, env)


def parity(name, emb, ref, logits=False):
    """Cosine and max abs error; classifiers: on the raw logits (not normalised), the abs limit on
    p = sigmoid(logit) (max abs on the logits themselves is reported)."""
    import numpy as np
    cos = min(float(np.dot(e, r) / np.linalg.norm(e) / np.linalg.norm(r)) for e, r in zip(emb, ref))
    mx = float(np.abs(emb - ref).max())
    if logits:
        dp = float(np.abs(1 / (1 + np.exp(-emb.astype(np.float64))) - 1 / (1 + np.exp(-ref))).max())
        return dict(engine=name, cos=cos, maxabs=mx, ok=cos >= PARITY_COS and dp <= PARITY_ABS)
    return dict(engine=name, cos=cos, maxabs=mx, ok=cos >= PARITY_COS and mx <= PARITY_ABS)


REFS = {}


def run_case(key, files, inputs, sz, batch, threads, text, engines, a):
    import numpy as np
    workers = []
    for name, kind, spec in engines:
        if kind == "ort" and not files.get("onnx_vision"):
            continue  # no ONNX export of this model (the shipped CNN)
        log("  starting", name)
        w = start(spec, kind, files, inputs, sz, batch, threads, text, a)
        w.label = name
        workers.append(w)
    checks = []
    if not a.no_parity:
        rk = (files["pt"], batch, text)
        if rk not in REFS:
            REFS[rk] = reference(files["pt"], inputs, batch, text)
        ref = REFS[rk]
        for w in workers:
            p = os.path.join(a.work, "emb-%s.f32" % w.label)
            w.ask("emb " + p)
            e = np.fromfile(p, dtype="<f4").reshape(ref.shape)
            checks.append(parity(w.label, e, ref, logits=bool(sz.get("classifier"))))
    for w in workers:  # warm-up
        w.ask("run %d" % a.warmup)
    for r in range(a.rounds):
        order = workers[r % len(workers):] + workers[:r % len(workers)]
        for w in order:
            time.sleep(a.pause)
            w.times += w.ask("run %d" % a.runs)["times_ms"]
    res = []
    for w in workers:
        rss = w.close()
        res.append(dict(engine=w.label, median=statistics.median(w.times), min=min(w.times),
                        open_ms=w.ready["open_ms"], rss_mb=rss / 1024.0, n=len(w.times)))
    return res, checks


def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__.split("\n\n")[0])
    ap.add_argument("--torch-worker", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--checkpoint", help=argparse.SUPPRESS)
    ap.add_argument("--input", help=argparse.SUPPRESS)
    ap.add_argument("--batch", type=int, default=1, help=argparse.SUPPRESS)
    ap.add_argument("--classifier", help=argparse.SUPPRESS)
    ap.add_argument("--cnn", action="store_true", help=argparse.SUPPRESS)
    ap.add_argument("--size", type=int, default=224, help=argparse.SUPPRESS)
    ap.add_argument("--bin", default=os.path.join(ROOT, "build", "tests", "bench_engine"))
    ap.add_argument("--work", default="/tmp/cxrvqa-bench")
    ap.add_argument("--models", default="b32,b16")
    ap.add_argument("--batches", default="1,8")
    ap.add_argument("--threads", default="1,2")
    ap.add_argument("--text", action="store_true", help="also the text tower (77 tokens, batch 1)")
    ap.add_argument("--text-only", action="store_true")
    ap.add_argument("--engines", default="ours,torch,ort")
    ap.add_argument("--ours", action="append", default=[], metavar="NAME=BIN[:f16][:avx2]",
                    help="further builds of ours to compare (repeatable)")
    ap.add_argument("--f16", action="store_true", help="the default 'ours' runs the F16 GGUF")
    ap.add_argument("--rounds", type=int, default=5)
    ap.add_argument("--runs", type=int, default=3)
    ap.add_argument("--warmup", type=int, default=2)
    ap.add_argument("--pause", type=float, default=0.1)
    ap.add_argument("--no-parity", action="store_true")
    ap.add_argument("--ort-modules", default=None, help="node_modules holding onnxruntime-node")
    ap.add_argument("--json", help="also write the results here")
    a = ap.parse_args(argv)
    if a.torch_worker:
        a.threads = int(a.threads)
        if a.classifier or a.cnn:  # REFERENCE.md §7: OpenBLAS single-threaded for convolutional models
            os.environ["OPENBLAS_NUM_THREADS"] = "1"
        return torch_worker(a)
    if not a.ort_modules:
        for d in (os.path.join(HERE, "node_modules"), os.path.join(ROOT, "build-e-ort", "node_modules")):
            if os.path.isdir(os.path.join(d, "onnxruntime-node")):
                a.ort_modules = d
                break
    os.makedirs(a.work, exist_ok=True)
    kinds = [e for e in a.engines.split(",") if e]
    engines = []
    if "ours" in kinds:
        engines.append(("ours", "ours", (os.path.abspath(a.bin), a.f16, False)))
    for spec in a.ours:
        name, rest = spec.split("=", 1)
        path, *flags = rest.split(":")
        engines.append((name, "ours", (os.path.abspath(path), "f16" in flags, "avx2" in flags)))
    if "torch" in kinds:
        engines.append(("torch", "torch", None))
    if "ort" in kinds:
        if not a.ort_modules:
            log("onnxruntime-node not found: install it with\n  ONNXRUNTIME_NODE_INSTALL_CUDA=skip npm install "
                "--prefix tests/bench onnxruntime-node\nor pass --ort-modules; running without ORT")
        else:
            engines.append(("ort", "ort", None))
    cases = []
    for key in [m for m in a.models.split(",") if m]:
        files = prepare(a.work, key)
        sz = sizes_of(files["pt"], key)
        batches = [int(b) for b in a.batches.split(",")]
        inputs = make_inputs(a.work, key, sz, batches)
        for th in [int(t) for t in a.threads.split(",")]:
            if not a.text_only:
                for b in batches:
                    cases.append((key, files, inputs, sz, b, th, False))
            if (a.text or a.text_only) and key == a.models.split(",")[0] and not sz.get("classifier"):
                cases.append((key, files, inputs, sz, 1, th, True))
    rows, allchecks = [], []
    for key, files, inputs, sz, b, th, text in cases:
        what = "text 77 tok" if text else "%s b%d" % (MODELS[key]["label"], b)
        log("case %s, %d thread(s)" % (what, th))
        res, checks = run_case(key, files, inputs, sz, b, th, text, engines, a)
        rows.append(dict(what=what, batch=b, threads=th, text=text, res=res))
        for c in checks:
            c.update(what=what, threads=th)
        allchecks += checks
    # ---- report
    names = [e[0] for e in engines]
    print("\n| case | threads | " + " | ".join("%s ms" % n for n in names) +
          (" | torch / ours" if "torch" in names else "") + (" | ours / ort" if "ort" in names else "") + " |")
    print("|---|---|" + "---|" * (len(names) + ("torch" in names) + ("ort" in names)))
    for r in rows:
        med = {x["engine"]: x["median"] for x in r["res"]}
        per = r["batch"]
        cells = ["%.1f" % med[n] + (" (%.1f/img)" % (med[n] / per) if per > 1 else "") if n in med else "-"
                 for n in names]
        line = "| %s | %d | %s" % (r["what"], r["threads"], " | ".join(cells))
        if "torch" in names and names[0] != "torch":
            line += " | %.2f×" % (med["torch"] / med[names[0]])
        if "ort" in names and names[0] != "ort":
            line += " | %.2f" % (med[names[0]] / med["ort"]) if "ort" in med else " | -"
        print(line + " |")
    print("\nOpen time (ms) and peak RSS (MB) per worker:\n")
    print("| case | threads | " + " | ".join(names) + " |")
    print("|---|---|" + "---|" * len(names))
    for r in rows:
        d = {x["engine"]: x for x in r["res"]}
        print("| %s | %d | %s |" % (r["what"], r["threads"], " | ".join(
            "%.0f ms, %.0f MB" % (d[n]["open_ms"], d[n]["rss_mb"]) if n in d else "-" for n in names)))
    if allchecks:
        print("\nParity vs the float64 reference (min cosine, max abs error; target cos >= %g, abs <= %g):\n" %
              (PARITY_COS, PARITY_ABS))
        print("| case | threads | engine | cosine | max abs | ok |\n|---|---|---|---|---|---|")
        for c in allchecks:
            print("| %s | %d | %s | %.8f | %.2e | %s |" % (c["what"], c["threads"], c["engine"], c["cos"], c["maxabs"],
                                                         "yes" if c["ok"] else "NO"))
    if a.json:
        with open(a.json, "w") as f:
            json.dump(dict(rows=rows, parity=allchecks), f, indent=1)
    print("\n(medians of %d rounds x %d runs after %d warm-up runs, engines interleaved; min times in --json)" %
          (a.rounds, a.runs, a.warmup))
    # an F16 GGUF cannot meet the F32 tolerance: its parity is reported, not enforced
    f16 = {n for n, kind, spec in engines if kind == "ours" and spec[1]}
    return 1 if any(not c["ok"] and c["engine"] not in f16 for c in allchecks) else 0


if __name__ == "__main__":
    sys.exit(main())
