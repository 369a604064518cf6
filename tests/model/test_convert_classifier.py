#!/usr/bin/python3
"""test_convert_classifier.py — convert.py's classifier formats (txv-densenet, txv-resnet,
chexnet-densenet) without the C engine:
  - every checkpoint layout make_checkpoints.py writes converts: whole pickled model with
    unimportable classes (op_threshs attribute / buffer), plain state dict + --op-threshs JSON (same
    tensors and thresholds as the pickle), CheXNet DataParallel {"state_dict"} with norm.1 names;
  - the GGUF, run by gguf_forward.py (the NumPy reading of FORMAT.md), gives the logits of the
    torchvision float64 reference on the original checkpoint (cos >= 0.99999, max |Δz| <= 1e-4 ·
    max(1, max |z|)): folding and layout are right;
  - findings: names / display / SNOMED of each default label as plugin/question/lexicon.c has them
    (parsed from the C source: the label, lower-cased, looked up among the lexicon's English terms),
    output indices, "" gives no finding, an unknown label keeps a name of its own;
  - refusals: a missing, an unknown and a wrongly shaped tensor, a label count that does not match the
    head, bad op_threshs: exit 1 with a message naming the tensor / option.
Exit 0 passed, 1 failed. About 40 s.
"""
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

import numpy as np
import torch

ROOT = os.path.dirname(os.path.dirname(os.path.dirname(os.path.abspath(__file__))))
TOOLS = os.path.join(ROOT, "model", "tools", "convert")
sys.path.insert(0, TOOLS)
import gguf  # noqa: E402
import gguf_forward  # noqa: E402
import make_checkpoints  # noqa: E402
import reference_classifier as rc  # noqa: E402

PY = sys.executable or "/usr/bin/python3"
FAILS = []


def check(ok, what):
    print("%s %s" % ("ok  " if ok else "FAIL", what))
    if not ok:
        FAILS.append(what)


def convert(args):
    p = subprocess.run([PY, os.path.join(TOOLS, "convert.py")] + [str(a) for a in args], capture_output=True,
                       text=True, timeout=300)
    return p.returncode, p.stdout + p.stderr


def lexicon():
    """English term -> (name, display_en, snomed) from plugin/question/lexicon.c."""
    src = open(os.path.join(ROOT, "plugin", "question", "lexicon.c"), encoding="utf-8").read()
    entries = {m.group(1): (m.group(2), m.group(3), m.group(5)) for m in re.finditer(
        r'\[(E_\w+)\]\s*=\s*ENTRY\("([^"]*)",\s*"([^"]*)",\s*"([^"]*)",\s*"([^"]*)"\)', src)}
    terms = {}
    for m in re.finditer(r'EN\("([^"]*)",\s*(E_\w+)\)', src):
        terms.setdefault(m.group(1), entries[m.group(2)])
    return terms


def smooth_input(C, S, txv, seed):
    x = make_checkpoints.calib_images(1, C, S, txv, seed)[0]
    return x.astype(np.float64)


def main():
    t0 = time.time()
    tmp = tempfile.mkdtemp(prefix="cxr_test_convert_cls_")
    try:
        ck = os.path.join(tmp, "ck")
        names = ["txv-densenet", "txv-resnet", "chexnet-densenet"]
        p = subprocess.run([PY, os.path.join(TOOLS, "make_checkpoints.py"), ck, "--only", ",".join(names)],
                           capture_output=True, text=True, timeout=600)
        if p.returncode:
            print("FAIL: make_checkpoints.py: " + p.stderr[-1000:])
            return 1
        man = make_checkpoints.load_manifest(ck)
        lex = lexicon()
        out = {}
        for n in names:
            info = man["variants"][n]
            gg = os.path.join(tmp, n + ".gguf")
            extra = ["--size", "224"] if n == "txv-resnet" else []  # keeps the NumPy forward quick
            rc_, msg = convert([n, info["checkpoint"], gg] + extra)
            check(rc_ == 0, "%s converts (%s)" % (n, msg.strip().splitlines()[-1][:100]))
            if rc_:
                continue
            g = out[n] = gguf.read(gg)
            C, S = info["channels"], g.get("cxr.preproc.size")
            check(g.get("general.architecture") == "cxr-classifier" and g.get("clip.vision.in_channels") == C,
                  "%s: architecture and %d input channel(s)" % (n, C))
            ref = rc.Classifier(n, info["checkpoint"])
            m = gguf_forward.Model(gg)
            x = smooth_input(C, S, n.startswith("txv"), 5)
            zr, zg = ref.logits(x), gguf_forward.classifier_logits(m, x)
            cos = float(zr @ zg / np.linalg.norm(zr) / np.linalg.norm(zg))
            err, lim = float(np.abs(zr - zg).max()), 1e-4 * max(1.0, float(np.abs(zr).max()))
            check(cos >= 0.99999 and err <= lim, "%s: GGUF forward vs torchvision reference: max|dz| %.2e (limit %.1e), "
                  "1-cos %.1e, logits in [%.1f, %.1f]" % (n, err, lim, 1 - cos, zr.min(), zr.max()))
            # findings
            labels = g.get("cxr.classifier.labels")
            want = [lex[lab.lower().replace("_", " ")] for lab in labels]
            check(g.get("cxr.findings.names") == [w[0] for w in want] and
                  g.get("cxr.findings.display") == [w[1] for w in want] and
                  g.get("cxr.findings.snomed") == [w[2] for w in want] and
                  g.get("cxr.findings.output") == list(range(len(labels))),
                  "%s: %d findings named, displayed and coded as lexicon.c has them" % (n, len(labels)))
            opw = info.get("op_threshs")
            opg = g.get("cxr.findings.op_thresh")
            if opw is None:
                check(all(np.isnan(opg)), "%s: no op_threshs -> op_thresh NaN" % n)
            else:
                same = all((w is None and np.isnan(v)) or (w is not None and abs(v - w) < 1e-7) for w, v in zip(opw, opg))
                check(same, "%s: op_threshs from the checkpoint's %s" % (n, info["op_threshs_in"]))
            check("sha256:" in g.get("cxr.provenance.source"),
                  "%s: provenance names the checkpoint's sha256" % n)
        # plain state dict + --op-threshs JSON == the whole pickled model
        info = man["variants"]["txv-densenet"]
        gsd = os.path.join(tmp, "sd.gguf")
        rc_, msg = convert(["txv-densenet", info["checkpoint_sd"], gsd, "--op-threshs", info["op_threshs_file"]])
        if rc_ == 0 and "txv-densenet" in out:
            a, b = out["txv-densenet"], gguf.read(gsd)
            same = set(a.tensors) == set(b.tensors) and all(
                np.array_equal(a.tensors[k].array(), b.tensors[k].array()) for k in a.tensors)
            eqop = np.array_equal(np.nan_to_num(a.get("cxr.findings.op_thresh"), nan=-1),
                                  np.nan_to_num(b.get("cxr.findings.op_thresh"), nan=-1))
            check(same and eqop, "txv-densenet: plain state dict + --op-threshs FILE.json == the pickled model")
        else:
            check(False, "txv-densenet plain state dict converts: " + msg[-300:])
        # labels: "" (unused output) and an unknown one
        labels = ["Effusion", "", "Foo Bar"] + ["Mass%d" % i for i in range(11)]
        gl = os.path.join(tmp, "labels.gguf")
        rc_, msg = convert(["chexnet-densenet", man["variants"]["chexnet-densenet"]["checkpoint"], gl, "--labels",
                            ",".join(labels), "--op-threshs", ",".join(["0.3", "nan", "0.7"] + ["nan"] * 11)])
        g = gguf.read(gl) if rc_ == 0 else None
        check(g is not None and g.get("cxr.findings.output")[:2] == [0, 2] and len(g.get("cxr.findings.names")) == 13
              and g.get("cxr.findings.names")[:2] == ["pleural_effusion", "foo_bar"]
              and abs(g.get("cxr.findings.op_thresh")[1] - 0.7) < 1e-7,
              "--labels with '' and an unknown label; --op-threshs list (%s)" % msg.strip()[-120:])
        # refusals
        sd = torch.load(info["checkpoint_sd"])

        def refused(mod, args, needle, what):
            path = os.path.join(tmp, "bad.pt")
            s2 = dict(sd)
            mod(s2)
            torch.save(s2, path)
            rc_, msg = convert(["txv-densenet", path, os.path.join(tmp, "bad.gguf")] + args)
            check(rc_ == 1 and needle in msg, "refused: %s -> exit %d %r" % (what, rc_, msg.strip()[-150:]))

        k = "features.denseblock2.denselayer3.norm1.running_var"
        refused(lambda s: s.pop(k), [], k, "missing tensor")
        refused(lambda s: s.__setitem__("features.extra.weight", torch.zeros(3)), [], "features.extra.weight",
                "unknown tensor")
        k2 = "features.denseblock3.denselayer1.conv2.weight"
        refused(lambda s: s.__setitem__(k2, s[k2].transpose(0, 1).contiguous()), [], k2, "wrong shape")
        refused(lambda s: None, ["--labels", "A,B"], "18 outputs but 2 labels", "label count")
        refused(lambda s: None, ["--op-threshs", "0.5,0.5"], "2 values for 18 outputs", "op_threshs count")
        refused(lambda s: None, ["--op-threshs", ",".join(["0.5"] * 17 + ["1.5"])], "neither in (0, 1) nor NaN",
                "op_thresh out of range")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    print("%.1f s" % (time.time() - t0))
    if FAILS:
        print("%d check(s) failed" % len(FAILS))
        return 1
    print("all passed")
    return 0


if __name__ == "__main__":
    sys.exit(main())
