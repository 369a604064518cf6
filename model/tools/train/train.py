#!/usr/bin/python3
"""train.py — the one command that trains the cxrvqa default model from
../shared/data/cxr and writes its GGUF file (model/FORMAT.md, CNN image tower).
It owns the training recipe: data mix, augmentation, the two losses, the
schedule and model selection. Preprocessing lives in prepare_data.py, wording
in prompts.py, the file in export_gguf.py, the Python forward of the written
file in cnn_forward.py. Seeded; CPU only; torch.set_num_threads(--threads).

    /usr/bin/python3 model/tools/train/train.py --out build/cxrvqa-cxr-cnn.gguf            # full run
    /usr/bin/python3 model/tools/train/train.py --quick --out /tmp/cxrvqa-quick.gguf       # smoke test, ~2 min

Stages (each logs its time): image cache (prepare_data.build_cache, reused when present) →
BPE vocabulary learned on the generated sentences (ref_tokenizer.train_clip_bpe) → training →
checkpoint (--work-dir) → export (export_gguf.export) → evaluation of the written file on val
(cnn_forward.evaluate: the per-dataset target AUCs with bootstrap CIs).

Model: image tower = FORMAT's residual CNN (BatchNorm while training, folded at export), 1 grey
channel; text tower = CLIP causal transformer (pre-LN, quick_gelu, EOT pooling), context 64.
Losses, per batch of B images with one freshly generated caption each:
  clip: image-text contrastive with multi-positive targets — caption j counts as a match for
        image i unless a known label of image j (anything caption j may state) contradicts a known
        label of image i (many images share a label set, so one-hot CLIP targets would be wrong);
  zero-shot: the deployed score. For each finding f, pos_f / neg_f = re-normalised mean of the
        text tower's embeddings of its standard prompts; z = s*(<img,pos_f> - <img,neg_f>),
        BCE(sigmoid(z), label) over known labels only (empty = unknown = masked); positives of
        finding f weighted min(cap, sqrt(neg_f/pos_f)) from the training counts.
  s = exp(logit_scale), learned, shared by both and stored in the file.
Data: the `split` column as given (patient-disjoint); an epoch draws each dataset's training
images `epoch_mix` times (covidrad224 0.5: a fresh half each epoch; nih384 3x). Model selection:
after each epoch the EMA weights are scored on val (uint8 cache) by the mean of the three target
AUCs (kermany224 pneumonia, covidrad224 COVID-19, nih384 normal vs abnormal); the best is exported.
"""
import os
# Before numpy/torch load their thread pools: idle OpenMP threads must sleep, not spin (spinning
# threads starve OpenBLAS's and everyone else's: measured 3x slower steps on a loaded 2-core
# machine), and OpenBLAS must not add its own threads on top of torch's.
os.environ.setdefault("OMP_WAIT_POLICY", "PASSIVE")
os.environ.setdefault("OPENBLAS_NUM_THREADS", "1")

import argparse
import copy
import json
import math
import random
import sys
import time

import numpy as np
import torch
import torch.nn as nn
import torch.nn.functional as F

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path[:0] = [HERE, os.path.join(HERE, "..", "convert")]  # train/, then convert/ (gguf, ref_tokenizer, …)
import cnn_forward  # noqa: E402
import export_gguf  # noqa: E402
import metrics  # noqa: E402
import prepare_data  # noqa: E402
import prompts  # noqa: E402
import ref_tokenizer  # noqa: E402

REPO = os.path.normpath(os.path.join(HERE, "..", "..", ".."))
DEFAULT_CONFIG = os.path.join(REPO, "model", "train_config.json")
DEFAULT_DATA = os.path.normpath(os.path.join(REPO, "..", "shared", "data", "cxr"))

# --quick: a few hundred images, small sizes, the whole pipeline in about two minutes
QUICK = dict(image_size=96, widths=[16, 32, 64, 96, 128], blocks=[1, 1, 1, 1], embed_dim=64, text_width=64,
             text_layers=2, text_heads=2, text_ff=256, bpe_merges=600, epochs=3, low_res_epochs=0, batch_size=32,
             warmup_steps=10, prototypes=16, prototype_images=200, bootstrap=200, calib_min_pos=20,
             quick_train=640, quick_val=320, epoch_mix={"covidrad224": 1.0, "kermany224": 1.0, "nih384": 1.0,
                                                        "nih64": 1.0})
TARGET_FINDINGS = [("kermany224", "pneumonia"), ("covidrad224", "covid19"), ("nih384", "no_finding")]


def log(msg):
    print("[%s] %s" % (time.strftime("%H:%M:%S"), msg), flush=True)


# ------------------------------------------------------------------ model

class ConvBN(nn.Module):
    def __init__(self, cin, cout, stride):
        super().__init__()
        self.conv = nn.Conv2d(cin, cout, 3, stride, 1, bias=False)
        self.bn = nn.BatchNorm2d(cout, eps=1e-5)

    def forward(self, x):
        return self.bn(self.conv(x))


class Block(nn.Module):
    """out = relu(bn2(conv2(relu(bn1(conv1(x))))) + x), FORMAT's block before folding."""

    def __init__(self, c):
        super().__init__()
        self.conv1, self.conv2 = ConvBN(c, c, 1), ConvBN(c, c, 1)
        nn.init.zeros_(self.conv2.bn.weight)  # each block starts as the identity

    def forward(self, x):
        return F.relu(self.conv2(F.relu(self.conv1(x))) + x)


class Stage(nn.Module):
    def __init__(self, cin, cout, n):
        super().__init__()
        self.down = ConvBN(cin, cout, 2)
        self.blocks = nn.ModuleList([Block(cout) for _ in range(n)])

    def forward(self, x):
        x = F.relu(self.down(x))
        for b in self.blocks:
            x = b(x)
        return x


class CNNTower(nn.Module):
    def __init__(self, widths, blocks, E):
        super().__init__()
        self.stem = ConvBN(1, widths[0], 2)
        self.stages = nn.ModuleList([Stage(widths[i], widths[i + 1], blocks[i]) for i in range(len(blocks))])
        self.post_ln = nn.LayerNorm(widths[-1], eps=1e-5)
        self.proj = nn.Linear(widths[-1], E, bias=False)
        for m in self.modules():
            if isinstance(m, nn.Conv2d):
                nn.init.kaiming_normal_(m.weight, mode="fan_out", nonlinearity="relu")
        nn.init.normal_(self.proj.weight, std=widths[-1] ** -0.5)

    def forward(self, x):
        x = F.relu(self.stem(x))
        for s in self.stages:
            x = s(x)
        return self.proj(self.post_ln(x.mean((2, 3))))


class TextBlock(nn.Module):
    def __init__(self, W, heads, ff):
        super().__init__()
        self.heads = heads
        self.ln1, self.ln2 = nn.LayerNorm(W, eps=1e-5), nn.LayerNorm(W, eps=1e-5)
        self.attn_q, self.attn_k, self.attn_v, self.attn_out = (nn.Linear(W, W) for _ in range(4))
        self.ffn_up, self.ffn_down = nn.Linear(W, ff), nn.Linear(ff, W)

    def forward(self, x, mask):
        B, T, W = x.shape
        h = self.ln1(x)
        q, k, v = (l(h).view(B, T, self.heads, W // self.heads).transpose(1, 2)
                   for l in (self.attn_q, self.attn_k, self.attn_v))
        a = (q @ k.transpose(-1, -2)) / math.sqrt(W // self.heads) + mask
        o = (a.softmax(-1) @ v).transpose(1, 2).reshape(B, T, W)
        x = x + self.attn_out(o)
        h = self.ffn_up(self.ln2(x))
        return x + self.ffn_down(h * torch.sigmoid(1.702 * h))  # quick_gelu


class TextTower(nn.Module):
    def __init__(self, V, ctx, W, layers, heads, ff, E):
        super().__init__()
        self.token_embd = nn.Embedding(V, W)
        self.position_embd = nn.Parameter(torch.randn(ctx, W) * 0.01)
        self.blocks = nn.ModuleList([TextBlock(W, heads, ff) for _ in range(layers)])
        self.post_ln = nn.LayerNorm(W, eps=1e-5)
        self.proj = nn.Linear(W, E, bias=False)
        nn.init.normal_(self.token_embd.weight, std=0.02)
        for b in self.blocks:
            for l in (b.attn_q, b.attn_k, b.attn_v, b.ffn_up):
                nn.init.normal_(l.weight, std=W ** -0.5)
            for l in (b.attn_out, b.ffn_down):
                nn.init.normal_(l.weight, std=(2 * layers * W) ** -0.5)
        nn.init.normal_(self.proj.weight, std=W ** -0.5)

    def forward(self, ids):
        """ids (B, T) padded with 0 after the EOT (the highest id): pooled at the first EOT."""
        T = ids.shape[1]
        x = self.token_embd(ids) + self.position_embd[:T]
        mask = torch.full((T, T), float("-inf")).triu(1)
        for b in self.blocks:
            x = b(x, mask)
        x = self.post_ln(x)
        return self.proj(x[torch.arange(len(ids)), ids.argmax(1)])


class CLIP(nn.Module):
    def __init__(self, cfg, V):
        super().__init__()
        E = cfg["embed_dim"]
        self.vis = CNNTower(cfg["widths"], cfg["blocks"], E)
        self.txt = TextTower(V, cfg["context_length"], cfg["text_width"], cfg["text_layers"], cfg["text_heads"],
                             cfg["text_ff"], E)
        self.logit_scale = nn.Parameter(torch.tensor(math.log(1 / 0.07)))


# ------------------------------------------------------------- tokenizer

class Tokenizer:
    """ref_tokenizer.ClipBPE with a word cache; batches padded to their longest caption."""

    def __init__(self, merges, ctx):
        self.bpe = ref_tokenizer.ClipBPE(merges)
        self.ctx = ctx
        self.cache = {}

    def ids(self, text):
        out = []
        for piece in ref_tokenizer.clip_pretokens(text):
            ids = self.cache.get(piece)
            if ids is None:
                ids = self.cache[piece] = [self.bpe.ids[s] for s in self.bpe.bpe(piece)]
            out += ids
        ids = [self.bpe.sot] + out + [self.bpe.eot]
        if len(ids) > self.ctx:
            ids = ids[:self.ctx]
            ids[-1] = self.bpe.eot
        return ids

    def batch(self, texts):
        seqs = [self.ids(t) for t in texts]
        T = max(len(s) for s in seqs)
        return torch.tensor([s + [0] * (T - len(s)) for s in seqs], dtype=torch.long)


def fit_caption(labels, rng, tok, source_label, max_tokens=None):
    """A caption of at most max_tokens tokens (default: the context), with fewer negations until it fits
    (the tokenizer truncates what still does not)."""
    limit = min(tok.ctx, max_tokens or tok.ctx)
    for max_absent in (4, 2, 0):
        text = prompts.caption(labels, rng, source_label, max_absent)
        if len(tok.ids(text)) <= limit:
            return text
    return text


# ----------------------------------------------------------- augmentation

def augment(u8, size, aug, gen, mean, std):
    """uint8 (B, 1, S, S) -> normalised float (B, 1, size, size): intensity jitter, then a random affine
    (rotation, zoom, shift, and sometimes a squeeze of one axis that leaves black borders like the
    engine's pad policy on a non-square image), bilinear, zeros (= black, the pad value) outside."""
    B = u8.shape[0]
    x = u8.float() / 255.0
    U = lambda lo, hi: torch.rand(B, generator=gen) * (hi - lo) + lo  # noqa: E731
    g = torch.exp(U(-aug["gamma"], aug["gamma"])).view(B, 1, 1, 1)
    x = x.clamp(1e-6, 1) ** g
    c = (1 + U(-aug["contrast"], aug["contrast"])).view(B, 1, 1, 1)
    br = U(-aug["brightness"], aug["brightness"]).view(B, 1, 1, 1)
    x = ((x - 0.5) * c + 0.5 + br).clamp(0, 1)
    ang = U(-aug["rotate_deg"], aug["rotate_deg"]) * math.pi / 180
    zoom = U(*aug["zoom"])
    sq = torch.where(torch.rand(B, generator=gen) < aug["squeeze_p"], U(*aug["squeeze"]), torch.ones(B))
    sq_x = torch.rand(B, generator=gen) < 0.5
    sx = torch.where(sq_x, sq, torch.ones(B)) * zoom
    sy = torch.where(sq_x, torch.ones(B), sq) * zoom
    tx, ty = U(-aug["shift"], aug["shift"]) * 2, U(-aug["shift"], aug["shift"]) * 2
    cos, sin = torch.cos(ang), torch.sin(ang)
    # theta maps output coords to input coords: inverse of (scale then rotate)
    theta = torch.stack([torch.stack([cos / sx, sin / sx, tx], 1), torch.stack([-sin / sy, cos / sy, ty], 1)], 1)
    grid = F.affine_grid(theta, (B, 1, size, size), align_corners=False)
    x = F.grid_sample(x, grid, mode="bilinear", padding_mode="zeros", align_corners=False)
    if aug["noise"] > 0:
        x = x + torch.randn(x.shape, generator=gen) * aug["noise"] * (torch.rand(B, 1, 1, 1, generator=gen) < 0.3)
    return (x - mean) / std


def plain(u8, mean, std):
    return (u8.float() / 255.0 - mean) / std


# ---------------------------------------------------------------- losses

def prompt_tables(tok):
    """Token ids of all standard prompts and the (F, P) averaging matrices of pos and neg."""
    lines = prompts.standard_prompt_lines()
    texts = [l.split("\t", 2)[2] for l in lines]
    Fn = len(prompts.NAMES)
    A = {k: torch.zeros(Fn, len(lines)) for k in ("pos", "neg")}
    for i, l in enumerate(lines):
        n, kind, _ = l.split("\t", 2)
        A[kind][prompts.NAMES.index(n), i] = 1
    for k in A:
        A[k] /= A[k].sum(1, keepdim=True)
    return tok.batch(texts), A["pos"], A["neg"]


def ensembles(model, pids, Apos, Aneg):
    P = F.normalize(model.txt(pids), dim=-1)
    return F.normalize(Apos @ P, dim=-1), F.normalize(Aneg @ P, dim=-1)


def clip_loss(img, txt, scale, compat):
    logits = scale * img @ txt.T
    ti = compat / compat.sum(1, keepdim=True)
    tt = compat.T / compat.T.sum(1, keepdim=True)
    return 0.5 * (-(ti * logits.log_softmax(1)).sum(1).mean() - (tt * logits.T.log_softmax(1)).sum(1).mean())


def compat_matrix(Y, M):
    """Y (B, F) image labels, M (B, F) what caption j says (NaN = not mentioned). compat[i, j] = no
    finding mentioned by caption j contradicts a known label of image i."""
    known = ~torch.isnan(Y)[:, None, :] & ~torch.isnan(M)[None, :, :]
    clash = known & (torch.nan_to_num(Y)[:, None, :] != torch.nan_to_num(M)[None, :, :])
    return (~clash.any(-1)).float()


def mentions(labels):
    """What a caption built from these labels may state: every known label (a caption states a subset
    of them, never a contradiction, so the known labels are the right thing to compare against)."""
    return [np.nan if labels[n] is None else float(labels[n]) for n in prompts.NAMES]


# ------------------------------------------------------------- evaluation

@torch.no_grad()
def embed_u8(model, u8, mean, std, batch=256):
    model.eval()
    out = []
    for s in range(0, len(u8), batch):
        out.append(F.normalize(model.vis(plain(torch.from_numpy(u8[s:s + batch, None]), mean, std)), dim=-1))
    return torch.cat(out)


@torch.no_grad()
def val_scores(model, val_u8, val_rows, Yv, pids, Apos, Aneg, mean, std):
    model.eval()
    emb = embed_u8(model, val_u8, mean, std)
    pos, neg = ensembles(model, pids, Apos, Aneg)
    z = model.logit_scale.exp().clamp(max=100) * (emb @ pos.T - emb @ neg.T)
    z = z.numpy()
    res = {}
    for ds, fname in TARGET_FINDINGS:
        j = prompts.NAMES.index(fname)
        sel = [i for i, r in enumerate(val_rows) if r["dataset"] == ds and r["y"][fname] is not None]
        res["%s/%s" % (ds, fname)] = metrics.auc(Yv[sel, j] == 1, z[sel, j]) if sel else float("nan")
    for fname in ("pleural_effusion", "atelectasis"):
        j = prompts.NAMES.index(fname)
        sel = [i for i, r in enumerate(val_rows) if r["dataset"] in ("nih384", "nih64") and r["y"][fname] is not None]
        res["nih/%s" % fname] = metrics.auc(Yv[sel, j] == 1, z[sel, j]) if sel else float("nan")
    vals = [res["%s/%s" % t] for t in TARGET_FINDINGS]
    vals = [v for v in vals if not math.isnan(v)]
    res["score"] = float(np.mean(vals)) if vals else 0.0
    return res


# --------------------------------------------------------------- training

def epoch_indices(train_rows, mix, rng):
    by = {}
    for i, r in enumerate(train_rows):
        by.setdefault(r["dataset"], []).append(i)
    out = []
    for ds, idx in sorted(by.items()):
        k = int(round(len(idx) * mix.get(ds, 1.0)))
        out += list(idx) * (k // len(idx)) + list(rng.choice(idx, k % len(idx), replace=False))
    rng.shuffle(out)
    return out


def param_groups(model, cfg):
    groups = {"vd": [], "vn": [], "td": [], "tn": []}
    for n, p in model.named_parameters():
        tower = "v" if n.startswith("vis.") else "t"
        decay = p.ndim >= 2 and "position_embd" not in n and "token_embd" not in n
        groups[tower + ("d" if decay else "n")].append(p)
    wd = cfg["weight_decay"]
    return [dict(params=groups["vd"], lr=cfg["lr"], weight_decay=wd), dict(params=groups["vn"], lr=cfg["lr"],
            weight_decay=0.0), dict(params=groups["td"], lr=cfg["text_lr"], weight_decay=wd),
            dict(params=groups["tn"], lr=cfg["text_lr"], weight_decay=0.0)]


def select_quick(rows, n, seed):
    """A stratified subset (each dataset and class represented) for --quick."""
    rng = random.Random(seed)
    by = {}
    for r in rows:
        by.setdefault((r["dataset"], r["no_finding"]), []).append(r)
    keys = sorted(by)
    out = []
    for k in keys:
        lst = by[k][:]
        rng.shuffle(lst)
        out += lst[:max(1, n // len(keys))]
    return sorted(out, key=lambda r: r["path"])


def train(cfg, data_dir, work_dir, out_path, threads, cache_dir):
    t_start = time.time()
    torch.set_num_threads(threads)
    seed = cfg["seed"]
    random.seed(seed)
    np.random.seed(seed)
    torch.manual_seed(seed)
    os.makedirs(work_dir, exist_ok=True)

    rows = prepare_data.read_labels(data_dir)
    train_rows = [r for r in rows if r["split"] == "train"]
    val_rows = [r for r in rows if r["split"] == "val"]
    if cfg.get("quick"):
        train_rows = select_quick(train_rows, cfg["quick_train"], seed)
        val_rows = select_quick(val_rows, cfg["quick_val"], seed)
    tag = "quick" if cfg.get("quick") else "all"
    log("data: %d train, %d val images (%s)" % (len(train_rows), len(val_rows), data_dir))
    for ds, names in sorted(cfg.get("mask_labels", {}).items()):
        # labels a dataset's training rows do not teach (treated as unknown in both losses); val keeps them
        hit = [r for r in train_rows if r["dataset"] == ds]
        for r in hit:
            for n in names:
                r["y"][n] = None
        log("labels masked in training: %s of %d %s images" % (", ".join(names), len(hit), ds))
    S = cfg["image_size"]
    u8 = prepare_data.build_cache(data_dir, train_rows + val_rows, S, cfg["interp"], cache_dir, tag, threads, log)
    tr_u8, val_u8 = u8[:len(train_rows)], u8[len(train_rows):]
    # normalisation measured on the training images (pixel values / 255), rounded
    sample = tr_u8[::max(1, len(tr_u8) // 2000)].astype(np.float64) / 255.0
    mean, std = round(float(sample.mean()), 4), round(float(sample.std()), 4)
    log("normalisation: mean %.4f std %.4f (training images, 0..1 scale)" % (mean, std))

    t0 = time.time()
    merges = ref_tokenizer.train_clip_bpe(prompts.corpus(20000 if not cfg.get("quick") else 3000, seed),
                                          cfg["bpe_merges"])
    tok = Tokenizer(merges, cfg["context_length"])
    V = len(tok.bpe.tokens)
    log("tokenizer: %d merges, vocabulary %d (%.1f s)" % (len(merges), V, time.time() - t0))

    model = CLIP(cfg, V)
    ema = copy.deepcopy(model)
    for p in ema.parameters():
        p.requires_grad_(False)
    nv = sum(p.numel() for p in model.vis.parameters())
    nt = sum(p.numel() for p in model.txt.parameters())
    log("model: image tower %.2fM parameters, text tower %.2fM" % (nv / 1e6, nt / 1e6))

    Ytr = prepare_data.label_matrix(train_rows)
    Yv = prepare_data.label_matrix(val_rows)
    npos = np.nansum(Ytr == 1, 0)
    nneg = np.nansum(Ytr == 0, 0)
    pw = np.minimum(cfg["zs_pos_weight_cap"], np.sqrt(nneg / np.maximum(npos, 1)))
    pw = torch.tensor(np.where(npos > 0, pw, 1.0), dtype=torch.float32)
    pids, Apos, Aneg = prompt_tables(tok)

    opt = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, foreach=True)
    base_lrs = [g["lr"] for g in opt.param_groups]
    rng = np.random.default_rng(seed)
    crng = random.Random(seed + 1)
    gen = torch.Generator().manual_seed(seed + 2)
    B = cfg["batch_size"]
    per_epoch = len(epoch_indices(train_rows, cfg["epoch_mix"], np.random.default_rng(0))) // B
    total = per_epoch * cfg["epochs"]
    mean_t, std_t = torch.tensor(mean), torch.tensor(std)
    best, best_state, best_epoch, history = -1.0, None, -1, []
    pairs = list(zip(ema.state_dict().values(), model.state_dict().values()))
    ema_f = [e for e, m in pairs if e.dtype.is_floating_point]
    model_f = [m for e, m in pairs if e.dtype.is_floating_point]
    ema_i = [(e, m) for e, m in pairs if not e.dtype.is_floating_point]
    step = 0
    log("training: %d epochs x %d steps of %d images (%d images), %d px%s" % (
        cfg["epochs"], per_epoch, B, total * B, S,
        " (first %d epochs at %d px)" % (cfg["low_res_epochs"], cfg["low_res_size"]) if cfg["low_res_epochs"] else ""))
    for epoch in range(cfg["epochs"]):
        t_ep = time.time()
        size = cfg["low_res_size"] if epoch < cfg["low_res_epochs"] else S
        model.train()
        idx = epoch_indices(train_rows, cfg["epoch_mix"], rng)
        sums = np.zeros(3)
        for b in range(per_epoch):
            bi = idx[b * B:(b + 1) * B]
            lr_f = min(1.0, (step + 1) / cfg["warmup_steps"]) * (0.02 + 0.98 * 0.5 * (1 + math.cos(math.pi * step / total)))
            for g, lr in zip(opt.param_groups, base_lrs):
                g["lr"] = lr * lr_f
            x = augment(torch.from_numpy(tr_u8[bi][:, None]), size, cfg["augment"], gen, mean_t, std_t)
            caps = [fit_caption(train_rows[i]["y"], crng, tok, train_rows[i]["source_labels"],
                                cfg["caption_max_tokens"]) for i in bi]
            Y = torch.from_numpy(Ytr[bi])
            M = torch.tensor([mentions(train_rows[i]["y"]) for i in bi], dtype=torch.float32)
            img = F.normalize(model.vis(x), dim=-1)
            txt = F.normalize(model.txt(tok.batch(caps)), dim=-1)
            scale = model.logit_scale.exp().clamp(max=100)
            l_clip = clip_loss(img, txt, scale, compat_matrix(Y, M))
            pos, neg = ensembles(model, pids, Apos, Aneg)
            z = scale * (img @ pos.T - img @ neg.T)
            known = ~torch.isnan(Y)
            y = torch.nan_to_num(Y)
            w = torch.where(y > 0, pw.expand_as(y), torch.ones_like(y)) * known
            l_zs = (F.binary_cross_entropy_with_logits(z, y, reduction="none") * w).sum() / known.sum().clamp(min=1)
            loss = cfg["clip_weight"] * l_clip + cfg["zs_weight"] * l_zs
            opt.zero_grad(set_to_none=True)
            loss.backward()
            opt.step()
            with torch.no_grad():
                model.logit_scale.clamp_(0, math.log(100))
                d = min(cfg["ema_decay"], (1 + step) / (10 + step))
                torch._foreach_mul_(ema_f, d)
                torch._foreach_add_(ema_f, model_f, alpha=1 - d)
                for pe, pm in ema_i:
                    pe.copy_(pm)
            sums += [loss.item(), l_clip.item(), l_zs.item()]
            step += 1
            if (b + 1) % max(1, per_epoch // 4) == 0:
                log("  epoch %d step %d/%d loss %.4f (clip %.4f, zero-shot %.4f) scale %.1f lr %.2e %.1f img/s" % (
                    epoch + 1, b + 1, per_epoch, *(sums / (b + 1)), scale.item(), base_lrs[0] * lr_f,
                    (b + 1) * B / (time.time() - t_ep)))
        t_train = time.time() - t_ep
        res = val_scores(ema, val_u8, val_rows, Yv, pids, Apos, Aneg, mean_t, std_t)
        t_all = time.time() - t_ep
        history.append(dict(epoch=epoch + 1, size=size, train_s=round(t_train, 1), epoch_s=round(t_all, 1),
                            loss=float(sums[0] / per_epoch), **res))
        log("epoch %d: %.0f s train + %.0f s val; val AUC kermany pneumonia %.3f, covid %.3f, nih384 normal %.3f, "
            "nih effusion %.3f, nih atelectasis %.3f; score %.4f" % (
                epoch + 1, t_train, t_all - t_train, res["kermany224/pneumonia"], res["covidrad224/covid19"],
                res["nih384/no_finding"], res["nih/pleural_effusion"], res["nih/atelectasis"], res["score"]))
        if res["score"] > best:
            best, best_epoch = res["score"], epoch + 1
            best_state = copy.deepcopy(ema.state_dict())
            # the best state so far is on disk after every epoch: an interrupted run can
            # still be exported (export_gguf.py CKPT OUT)
            torch.save(dict(config=cfg, state=best_state, merges=[list(m) for m in merges], norm=[mean, std],
                            history=history, info="EMA weights after epoch %d (interrupted run)" % best_epoch,
                            train_paths=[r["path"] for r in train_rows], val_paths=[r["path"] for r in val_rows]),
                       os.path.join(work_dir, "ckpt.pt"))
    info = "EMA weights after epoch %d of %d (best val mean target AUC %.4f)" % (best_epoch, cfg["epochs"], best)
    log("selected: " + info)
    ckpt = os.path.join(work_dir, "ckpt.pt")
    torch.save(dict(config=cfg, state=best_state, merges=[list(m) for m in merges], norm=[mean, std],
                    history=history, info=info, train_paths=[r["path"] for r in train_rows],
                    val_paths=[r["path"] for r in val_rows]), ckpt)
    with open(os.path.join(work_dir, "history.json"), "w") as f:
        json.dump(history, f, indent=1)
    log("checkpoint: %s (training took %.1f min)" % (ckpt, (time.time() - t_start) / 60))

    # export, holding the folded file to the training model on a few val images
    ema.load_state_dict(best_state)
    pp_chk = np.stack([prepare_data.normalise(prepare_data.preprocess_float(prepare_data.load_plane(
        os.path.join(data_dir, r["path"])), S, cfg["interp"], cfg["policy"]), 1 / 255.0, mean, std)
        for r in val_rows[:8]])[:, None]
    with torch.no_grad():
        ema.eval()
        e_train = F.normalize(ema.vis(torch.from_numpy(pp_chk)), dim=-1).double().numpy()
        chk_texts = [l.split("\t", 2)[2] for l in prompts.standard_prompt_lines()[:16]] + [
            "small left pleural effusion. no pneumothorax. heart size is normal.", "Is there a pneumothorax?"]
        t_train = F.normalize(ema.txt(tok.batch(chk_texts)), dim=-1).double().numpy()
    meta = export_gguf.make_meta(cfg, info, train_rows, val_rows)
    export_gguf.export(best_state, cfg, merges, (mean, std), data_dir, out_path, meta, train_rows, val_rows,
                       threads, log, check_emb=(pp_chk, e_train), check_txt=(chk_texts, t_train))
    log("evaluation of %s on val (Python forward of the written file):" % out_path)
    paths = {r["path"] for r in val_rows} if cfg.get("quick") else None
    cnn_forward.evaluate(out_path, data_dir, "val", 2, cfg["bootstrap"], seed, threads, log, paths)
    log("total %.1f min" % ((time.time() - t_start) / 60))
    return out_path


def measure(cfg, threads, steps=8):
    """Seconds per training step and per epoch of this config, on random images (no data needed beyond
    the label table for captions)."""
    torch.set_num_threads(threads)
    torch.manual_seed(0)
    merges = ref_tokenizer.train_clip_bpe(prompts.corpus(3000, 0), cfg["bpe_merges"])
    tok = Tokenizer(merges, cfg["context_length"])
    model = CLIP(cfg, len(tok.bpe.tokens))
    opt = torch.optim.AdamW(param_groups(model, cfg), betas=(0.9, 0.98), eps=1e-6, foreach=True)
    pids, Apos, Aneg = prompt_tables(tok)
    B, S = cfg["batch_size"], cfg["image_size"]
    rng = random.Random(0)
    gen = torch.Generator().manual_seed(0)
    lab = {n: (1 if n == "pneumonia" else 0) for n in prompts.NAMES}
    lab["no_finding"] = 0
    out = {}
    for size in sorted({S, cfg["low_res_size"] if cfg["low_res_epochs"] else S}):
        times, cpu = [], []
        for it in range(steps + 2):
            u8 = torch.randint(0, 256, (B, 1, S, S), dtype=torch.uint8, generator=gen)
            t0, c0 = time.time(), time.process_time()
            x = augment(u8, size, cfg["augment"], gen, torch.tensor(0.5), torch.tensor(0.25))
            caps = [fit_caption(lab, rng, tok, "", cfg["caption_max_tokens"]) for _ in range(B)]
            img = F.normalize(model.vis(x), dim=-1)
            txt = F.normalize(model.txt(tok.batch(caps)), dim=-1)
            scale = model.logit_scale.exp()
            pos, neg = ensembles(model, pids, Apos, Aneg)
            z = scale * (img @ pos.T - img @ neg.T)
            loss = clip_loss(img, txt, scale, torch.ones(B, B)) + F.binary_cross_entropy_with_logits(
                z, torch.zeros_like(z))
            opt.zero_grad()
            loss.backward()
            opt.step()
            if it >= 2:
                times.append(time.time() - t0)
                cpu.append(time.process_time() - c0)
        model.eval()
        with torch.no_grad():
            x = torch.randn(128, 1, size, size)
            t0 = time.time()
            model.vis(x)
            t_eval = (time.time() - t0) / 128
            x1 = torch.randn(1, 1, size, size)
            t0 = time.time()
            for _ in range(10):
                model.vis(x1)
            t_one = (time.time() - t0) / 10
        model.train()
        out[size] = dict(step_s=float(np.median(times)), img_ms=1000 * float(np.median(times)) / B,
                         cpu_step_s=float(np.median(cpu)), load=os.getloadavg()[0],
                         eval_img_ms=1000 * t_eval, batch1_ms=1000 * t_one)
    return out


def main(argv=None):
    ap = argparse.ArgumentParser(description="train the cxrvqa default model and write its GGUF")
    ap.add_argument("--config", default=DEFAULT_CONFIG)
    ap.add_argument("--data", default=DEFAULT_DATA)
    ap.add_argument("--out", default=os.path.join(REPO, "build", "cxrvqa-cxr-cnn.gguf"))
    ap.add_argument("--work-dir", default="/tmp/cxrvqa-train")
    ap.add_argument("--cache-dir", default=prepare_data.DEFAULT_CACHE)
    ap.add_argument("--threads", type=int, default=2)
    ap.add_argument("--quick", action="store_true", help="a few hundred images, small model, ~2 minutes")
    ap.add_argument("--epochs", type=int, help="override the config")
    ap.add_argument("--measure", action="store_true", help="time training steps of this config on random "
                    "images and print seconds per epoch; trains nothing")
    ap.add_argument("--set", action="append", default=[], metavar="KEY=JSON", help="override a config value")
    a = ap.parse_args(argv)
    with open(a.config) as f:
        cfg = json.load(f)
    cfg.pop("_comment", None)
    if a.quick:
        cfg.update(QUICK)
        cfg["quick"] = True
    for kv in a.set:
        k, v = kv.split("=", 1)
        cfg[k] = json.loads(v)
    if a.epochs:
        cfg["epochs"] = a.epochs
    if a.measure:
        rows = prepare_data.read_labels(a.data)
        n_epoch = len(epoch_indices([r for r in rows if r["split"] == "train"], cfg["epoch_mix"],
                                    np.random.default_rng(0)))
        res = measure(cfg, a.threads)
        steps = n_epoch // cfg["batch_size"]
        for size, r in res.items():
            log("measure %d px, widths %s blocks %s, batch %d: %.3f s/step = %.1f ms/image (train), %.2f CPU-s/step "
                "(%d threads; load average %.2f); eval %.1f ms/image at batch 128, %.1f ms at batch 1 (torch); "
                "epoch of %d images = %.0f s wall as measured, %.0f s if the %d threads had the cores to "
                "themselves" % (size, cfg["widths"], cfg["blocks"], cfg["batch_size"], r["step_s"], r["img_ms"],
                                r["cpu_step_s"], a.threads, r["load"], r["eval_img_ms"], r["batch1_ms"],
                                steps * cfg["batch_size"], steps * r["step_s"], steps * r["cpu_step_s"] / a.threads,
                                a.threads))
        return 0
    if not os.path.exists(os.path.join(a.data, "labels.csv")):
        sys.stderr.write("train.py: %s/labels.csv not found (expected ../shared/data/cxr beside the repo)\n" % a.data)
        return 1
    log("config: " + json.dumps(cfg, sort_keys=True))
    train(cfg, a.data, a.work_dir, a.out, a.threads, a.cache_dir)
    return 0


if __name__ == "__main__":
    sys.exit(main())
