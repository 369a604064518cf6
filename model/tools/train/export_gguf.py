#!/usr/bin/python3
"""export_gguf.py — turns a train.py checkpoint into the one GGUF file of
model/FORMAT.md: folds BatchNorm into the convolutions, writes the CNN image
tower, the CLIP text tower, the trained BPE vocabulary, the preprocessing spec
and provenance, then — reading that file back through cnn_forward.py, i.e. the
stored numbers — computes the findings block: prompt-ensemble embeddings,
Platt calibration, thresholds, uncertain bands and validation AUCs with
bootstrap CIs on `val`, and the image-domain prototypes and threshold.
It trains nothing and never touches the test hold-out.

    /usr/bin/python3 model/tools/train/export_gguf.py CKPT.pt OUT.gguf [--data ../shared/data/cxr]
(train.py calls export() at the end of a run.)

Rules written into the file (strings in metrics.py):
  validation subset of a finding: the val images of the datasets whose val split holds both
    positives and negatives of it (other datasets would only add out-of-source negatives);
  calibration: Platt (a, b) on z over that subset when it has >= calib_min_pos positives,
    else calibrated = 0, a = 1, b = 0;
  threshold / uncertain band: metrics.THRESHOLD_RULE / UNCERTAIN_RULE;
  AUC: on that subset, 95% percentile bootstrap CI (1,000 resamples, seeded);
  domain: K spherical k-means centroids of a stratified sample of training images' embeddings;
    threshold = the domain_percentile-th percentile of all val images' max cosine.
"""
import os
# Before numpy/torch load their thread pools: idle OpenMP threads must sleep, not spin (spinning
# threads starve OpenBLAS's and everyone else's: measured 3x slower steps on a loaded 2-core
# machine), and OpenBLAS must not add its own threads on top of torch's.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import datetime
import hashlib
import json
import math
import subprocess
import sys
import tempfile

import numpy as np

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (gguf, ref_tokenizer, …)
import cnn_forward  # noqa: E402
import gguf  # noqa: E402
import metrics  # noqa: E402
import prepare_data  # noqa: E402
import prompts  # noqa: E402
import ref_tokenizer  # noqa: E402

NAME = "cxrvqa-cxr-cnn"
LICENSE = ("weights: research use only, not for clinical use; they derive from NIH ChestX-ray14 (no usage "
           "restrictions; cite Wang et al., CVPR 2017), Kermany et al., Cell 2018 (CC BY 4.0) and the COVID-19 "
           "Radiography Database (Chowdhury et al. 2020, Rahman et al. 2021; research use)")
TRAINING_DATA = (
    "../shared/data/cxr train split ({n_train} images; val {n_val} for model selection and calibration only, "
    "patient-disjoint where patient ids exist): covidrad224 (COVID-19 Radiography Database: COVID-19 positives "
    "from several public sources vs RSNA/NIH radiologist-read normals, adults, COVID era; label shortcut risk: "
    "positives and normals come from different sources), kermany224 (Kermany 2018, Guangzhou, children aged 1-5, "
    "pneumonia vs normal), nih384 (NIH ChestX-ray14 at 384 px, NLP-mined labels, mostly pneumonia and no-finding), "
    "nih64 (NIH ChestX-ray14 at 64 px, all 14 findings, few positives each). Labels: source labels only; "
    "captions generated from them (model/tools/train/prompts.py). Held-out test set not used.")
EPS = 1e-5


def git_commit():
    try:
        sha = subprocess.run(["git", "rev-parse", "HEAD"], cwd=HERE, capture_output=True, text=True,
                             check=True).stdout.strip()
        dirty = subprocess.run(["git", "status", "--porcelain", "--", ".."], cwd=HERE, capture_output=True,
                               text=True).stdout.strip()
        return sha + (" (with uncommitted changes in model/tools)" if dirty else "")
    except (OSError, subprocess.CalledProcessError):
        return "unknown"


# ------------------------------------------------------------- weights

def _np(t):
    return t.detach().cpu().double().numpy()


def fold_bn(w, bn, prefix):
    """conv weight (O, C, 3, 3) and BatchNorm buffers -> folded (weight, bias), float64."""
    g, b = bn[prefix + "weight"], bn[prefix + "bias"]
    mu, var = bn[prefix + "running_mean"], bn[prefix + "running_var"]
    s = g / np.sqrt(var + EPS)
    return w * s[:, None, None, None], b - mu * s


def tensors_from_state(sd, cfg):
    """FORMAT.md tensors (float64) from a train.py state dict (keys vis.*, txt.*)."""
    sd = {k: _np(v) for k, v in sd.items() if hasattr(v, "detach") and v.dtype.is_floating_point}
    out = {}

    def conv(dst, src):
        w, b = fold_bn(sd[src + ".conv.weight"], sd, src + ".bn.")
        out[dst + ".weight"], out[dst + ".bias"] = w, b

    conv("v.stem", "vis.stem")
    for i in range(1, len(cfg["widths"])):
        conv("v.s%d.down" % i, "vis.stages.%d.down" % (i - 1))
        for j in range(cfg["blocks"][i - 1]):
            for c in ("conv1", "conv2"):
                conv("v.s%d.b%d.%s" % (i, j, c), "vis.stages.%d.blocks.%d.%s" % (i - 1, j, c))
    out["v.post_ln.weight"], out["v.post_ln.bias"] = sd["vis.post_ln.weight"], sd["vis.post_ln.bias"]
    out["v.proj.weight"] = sd["vis.proj.weight"]
    out["t.token_embd.weight"] = sd["txt.token_embd.weight"]
    out["t.position_embd.weight"] = sd["txt.position_embd"]
    for i in range(cfg["text_layers"]):
        p, q = "t.blk.%d." % i, "txt.blocks.%d." % i
        for n in ("ln1", "ln2", "attn_q", "attn_k", "attn_v", "attn_out", "ffn_up", "ffn_down"):
            out[p + n + ".weight"], out[p + n + ".bias"] = sd[q + n + ".weight"], sd[q + n + ".bias"]
    out["t.post_ln.weight"], out["t.post_ln.bias"] = sd["txt.post_ln.weight"], sd["txt.post_ln.bias"]
    out["t.proj.weight"] = sd["txt.proj.weight"]
    return out, float(sd["logit_scale"])


def base_writer(tensors, logit_scale, cfg, merges, norm, meta):
    """Writer with every key and tensor except the findings block and the domain check."""
    tok = ref_tokenizer.ClipBPE(merges)
    E = tensors["v.proj.weight"].shape[0]
    w = gguf.Writer()
    w.add_str("general.architecture", "clip")
    w.add_str("general.name", NAME)
    w.add_str("general.version", meta["version"])
    w.add_str("general.license", LICENSE)
    w.add_str("general.description", meta["description"])
    w.add_str("general.date", meta["date"])
    w.add_str("cxr.provenance.source", meta["source"])
    w.add_str("cxr.provenance.training_data", meta["training_data"])
    w.add_bool("clip.has_vision_encoder", True)
    w.add_bool("clip.has_text_encoder", True)
    w.add_f32("clip.logit_scale", logit_scale)
    w.add_u32("clip.projection_dim", E)
    w.add_str("clip.vision.architecture", "cnn")
    w.add_u32("clip.vision.image_size", cfg["image_size"])
    w.add_u32("clip.vision.in_channels", 1)
    w.add_arr("clip.vision.cnn.widths", gguf.UINT32, cfg["widths"])
    w.add_arr("clip.vision.cnn.blocks", gguf.UINT32, cfg["blocks"])
    w.add_f32("clip.vision.attention.layer_norm_epsilon", EPS)
    w.add_u32("clip.vision.projection_dim", E)
    mean, std = norm
    w.add_arr("clip.vision.image_mean", gguf.FLOAT32, [mean] * 3)
    w.add_arr("clip.vision.image_std", gguf.FLOAT32, [std] * 3)
    w.add_str("clip.text.architecture", "clip")
    w.add_u32("clip.text.context_length", cfg["context_length"])
    w.add_u32("clip.text.vocab_size", len(tok.tokens))
    w.add_u32("clip.text.embedding_length", cfg["text_width"])
    w.add_u32("clip.text.feed_forward_length", cfg["text_ff"])
    w.add_u32("clip.text.block_count", cfg["text_layers"])
    w.add_u32("clip.text.attention.head_count", cfg["text_heads"])
    w.add_f32("clip.text.attention.layer_norm_epsilon", EPS)
    w.add_str("clip.text.activation", "quick_gelu")
    w.add_str("clip.text.projection", "linear")
    w.add_str("tokenizer.ggml.model", "clip-bpe")
    w.add_arr("tokenizer.ggml.tokens", gguf.STRING, tok.tokens)
    w.add_arr("tokenizer.ggml.merges", gguf.STRING, ["%s %s" % m for m in tok.merges])
    w.add_u32("cxr.preproc.size", cfg["image_size"])
    w.add_str("cxr.preproc.policy", cfg["policy"])
    w.add_str("cxr.preproc.interp", cfg["interp"])
    w.add_u32("cxr.preproc.channels", 1)
    w.add_f32("cxr.preproc.scale", 1.0 / 255.0)
    w.add_arr("cxr.preproc.mean", gguf.FLOAT32, [mean] * 3)
    w.add_arr("cxr.preproc.std", gguf.FLOAT32, [std] * 3)
    f16 = bool(cfg.get("f16"))
    for name, a in tensors.items():
        # F16 (when asked): 2-D and 4-D *.weight; biases and LayerNorms stay F32
        half = f16 and name.endswith(".weight") and a.ndim in (2, 4) and "_ln" not in name and ".ln" not in name
        w.add_tensor(name, a.astype(np.float32), gguf.F16 if half else gguf.F32)
    return w


# ------------------------------------------------------------ findings

def finding_subset(rows, name):
    """Indices of the val images of datasets holding both classes of `name`."""
    by = {}
    for i, r in enumerate(rows):
        v = r["y"][name]
        if v is not None:
            by.setdefault(r["dataset"], []).append((i, v))
    keep = []
    for ds, lst in sorted(by.items()):
        vals = {v for _, v in lst}
        if vals == {0, 1}:
            keep += [i for i, _ in lst]
    return sorted(keep)


def findings_block(m, names, val_rows, val_emb, cfg, log=print):
    """Dict of arrays for cxr.findings.* and the ensembles."""
    pos, neg = cnn_forward.ensembles(m, prompts.standard_prompt_lines(), names)
    z = cnn_forward.zscores(m, val_emb, pos, neg)
    F = len(names)
    res = {k: np.zeros(F) for k in ("a", "b", "cal", "thr", "low", "high", "auc", "lo", "hi", "npos", "nneg")}
    for j, n in enumerate(names):
        sel = finding_subset(val_rows, n)
        y = np.array([val_rows[i]["y"][n] for i in sel], dtype=bool)
        npos, nneg = int(y.sum()), int((~y).sum())
        zz = z[sel, j]
        a, b, cal = 1.0, 0.0, 0.0
        if npos >= cfg["calib_min_pos"] and nneg >= cfg["calib_min_pos"]:
            a, b = metrics.platt_fit(zz, y)
            cal = 1.0
            if a <= 0:  # the score runs the wrong way on val: do not let calibration flip it
                log("  %s: Platt slope %.3f <= 0, left uncalibrated" % (n, a))
                a, b, cal = 1.0, 0.0, 0.0
        p = metrics.sigmoid(a * zz + b)
        if cal:
            thr, low, high = metrics.operating_point(p, y)
        else:
            thr, low, high = 0.5, 0.35, 0.65
        au, lo, hi = metrics.bootstrap_auc(y, zz, cfg["bootstrap"], cfg["seed"]) if len(sel) else (math.nan,) * 3
        for k, v in zip(res, (a, b, cal, thr, low, high, au, lo, hi, npos, nneg)):
            res[k][j] = v
        log("  %-19s val %4d+ %4d-  AUC %.3f [%.3f, %.3f]  %s a=%.3f b=%.3f thr=%.3f band [%.3f, %.3f]" % (
            n, npos, nneg, au, lo, hi, "calibrated  " if cal else "uncalibrated", a, b, thr, low, high))
    return pos, neg, res


def embed_rows(m, data_dir, rows, threads=2):
    pp = m.preproc()
    imgs = np.zeros((len(rows), 1, pp["size"], pp["size"]), np.float32)
    for i, r in enumerate(rows):
        c = prepare_data.preprocess_float(prepare_data.load_plane(os.path.join(data_dir, r["path"])), pp["size"],
                                          pp["interp"], pp["policy"])
        imgs[i, 0] = prepare_data.normalise(c, pp["scale"], pp["mean"][0], pp["std"][0])
    return imgs, cnn_forward.TorchCNN(m, threads).embed(imgs)


def prototype_rows(train_rows, n, seed):
    """A stratified sample of training images: each dataset in proportion, at least 1/8 of n each."""
    rng = np.random.default_rng(seed)
    by = {}
    for i, r in enumerate(train_rows):
        by.setdefault(r["dataset"], []).append(i)
    total = len(train_rows)
    pick = []
    for ds, idx in sorted(by.items()):
        k = min(len(idx), max(n // 8, int(round(n * len(idx) / total))))
        pick += list(rng.choice(idx, k, replace=False))
    return [train_rows[i] for i in sorted(pick)]


def export(state, cfg, merges, norm, data_dir, out_path, meta, train_rows, val_rows, threads=2, log=print,
           check_emb=None, check_txt=None):
    """Write out_path. check_emb: optional (normalised val inputs, embeddings by the training model) and
    check_txt (texts, their embeddings by the training model) to hold the written file to."""
    tensors, logit_scale = tensors_from_state(state, cfg)
    w = base_writer(tensors, logit_scale, cfg, merges, norm, meta)
    with tempfile.TemporaryDirectory() as tmp:
        stage = os.path.join(tmp, "stage1.gguf")
        w.write(stage)
        m = cnn_forward.Model(stage)
        names = list(prompts.NAMES)
        log("export: embedding %d val images with the folded file" % len(val_rows))
        val_imgs, val_emb = embed_rows(m, data_dir, val_rows, threads)
        if check_emb is not None:
            x, e_train = check_emb
            e_file = cnn_forward.TorchCNN(m, threads).embed(x)
            log("export: folded file vs training model (eval mode) on %d images: max |diff| %.2e" % (
                len(x), float(np.abs(e_file - e_train).max())))
        if check_txt is not None:
            texts, t_train = check_txt
            t_file = cnn_forward.text_embeddings(m, texts)
            log("export: text tower of the file (gguf_forward.py, float64) vs training model on %d prompts: "
                "max |diff| %.2e" % (len(texts), float(np.abs(t_file - t_train).max())))
        ref = cnn_forward.image_embedding_ref(m, val_imgs[0])
        log("export: NumPy float64 reference vs torch float32 (1 image): max |diff| %.2e" % float(
            np.abs(ref - val_emb[0]).max()))
        pos, neg, res = findings_block(m, names, val_rows, val_emb, cfg, log)
        prow = prototype_rows(train_rows, cfg["prototype_images"], cfg["seed"])
        log("export: embedding %d training images for %d domain prototypes" % (len(prow), cfg["prototypes"]))
        _, pemb = embed_rows(m, data_dir, prow, threads)
        proto = metrics.spherical_kmeans(pemb, cfg["prototypes"], seed=cfg["seed"])
        vcos = (val_emb @ proto.T).max(1)
        dthr = float(np.percentile(vcos, cfg["domain_percentile"]))
        log("export: domain threshold %.4f (%.1fth percentile of val max-cos; val min %.4f median %.4f)" % (
            dthr, cfg["domain_percentile"], vcos.min(), np.median(vcos)))
    display = [f[2] for f in prompts.FINDINGS]
    snomed = [f[3] for f in prompts.FINDINGS]
    w.add_arr("cxr.findings.names", gguf.STRING, names)
    w.add_arr("cxr.findings.display", gguf.STRING, display)
    w.add_arr("cxr.findings.snomed", gguf.STRING, snomed)
    w.add_str("cxr.findings.prompt_set_version", prompts.PROMPT_SET_VERSION)
    w.add_arr("cxr.findings.prompts", gguf.STRING, prompts.standard_prompt_lines())
    for key, k in (("calib_a", "a"), ("calib_b", "b"), ("calibrated", "cal"), ("threshold", "thr"),
                   ("uncertain_low", "low"), ("uncertain_high", "high"), ("val_auc", "auc"), ("val_auc_lo", "lo"),
                   ("val_auc_hi", "hi"), ("val_pos", "npos"), ("val_neg", "nneg")):
        w.add_arr("cxr.findings." + key, gguf.FLOAT32, [float(v) for v in res[k]])
    w.add_str("cxr.findings.threshold_rule", metrics.THRESHOLD_RULE)
    w.add_str("cxr.findings.uncertain_rule", metrics.UNCERTAIN_RULE.format(min_pos=cfg["calib_min_pos"]))
    w.add_str("cxr.findings.validation", (
        "val split of ../shared/data/cxr; per finding the val images of the datasets whose val split holds both "
        "positives and negatives of it; AUC of z with a 95%% percentile bootstrap CI (%d resamples, seed %d); "
        "Platt calibration when >= %d val positives" % (cfg["bootstrap"], cfg["seed"], cfg["calib_min_pos"])))
    w.add_tensor("f.pos_embd", pos.astype(np.float32))
    w.add_tensor("f.neg_embd", neg.astype(np.float32))
    w.add_tensor("d.prototypes", proto.astype(np.float32))
    w.add_f32("cxr.domain.threshold", dthr)
    w.add_str("cxr.domain.rule", "max cosine to %d spherical k-means centroids of %d training images' embeddings; "
              "threshold = %.1fth percentile of the val images' max cosine" % (
                  len(proto), len(prow), cfg["domain_percentile"]))
    os.makedirs(os.path.dirname(os.path.abspath(out_path)), exist_ok=True)
    tmp = out_path + ".part"
    w.write(tmp)
    os.replace(tmp, out_path)
    log("export: wrote %s (%.1f MB)" % (out_path, os.path.getsize(out_path) / 1e6))
    return out_path


def make_meta(cfg, ckpt_info, train_rows, val_rows, version="1.0"):
    date = os.environ.get("SOURCE_DATE_EPOCH")
    d = (datetime.datetime.utcfromtimestamp(int(date)) if date else datetime.datetime.utcnow()).strftime("%Y-%m-%d")
    cfg_hash = hashlib.sha256(json.dumps(cfg, sort_keys=True).encode()).hexdigest()[:12]
    return dict(
        version=version + ("-quick" if cfg.get("quick") else ""),
        date=d,
        description=("CLIP-style dual encoder for chest radiographs: residual CNN image tower (1 channel, %d px, "
                     "widths %s, blocks %s) and a %d-layer CLIP text transformer (width %d, BPE vocabulary trained "
                     "on the generated report sentences), trained from scratch with an image-text contrastive loss "
                     "plus a zero-shot loss on the standard prompt pairs. Research use only, not a medical device." % (
                         cfg["image_size"], cfg["widths"], cfg["blocks"], cfg["text_layers"], cfg["text_width"])),
        source=("trained by model/tools/train/train.py%s, git %s, config sha256 %s, seed %d; %s" % (
            " --quick" if cfg.get("quick") else "", git_commit(), cfg_hash, cfg["seed"], ckpt_info)),
        training_data=TRAINING_DATA.format(n_train=len(train_rows), n_val=len(val_rows)),
    )


def main(argv=None):
    import torch
    ap = argparse.ArgumentParser(description="train.py checkpoint -> GGUF")
    ap.add_argument("ckpt")
    ap.add_argument("out")
    ap.add_argument("--data", default=cnn_forward.DEFAULT_DATA)
    ap.add_argument("--threads", type=int, default=2)
    a = ap.parse_args(argv)
    ck = torch.load(a.ckpt, map_location="cpu")
    cfg = ck["config"]
    rows = prepare_data.read_labels(a.data)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    if cfg.get("quick"):
        train_rows = [r for r in train_rows if r["path"] in set(ck["train_paths"])]
        val_rows = [r for r in val_rows if r["path"] in set(ck["val_paths"])]
    meta = make_meta(cfg, ck["info"], train_rows, val_rows)
    export(ck["state"], cfg, [tuple(x) for x in ck["merges"]], tuple(ck["norm"]), a.data, a.out, meta, train_rows,
           val_rows, a.threads)
    return 0


if __name__ == "__main__":
    sys.exit(main())
