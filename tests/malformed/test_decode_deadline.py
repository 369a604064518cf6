#!/usr/bin/python3
"""test_decode_deadline.py — the decode deadline through the real CLI.

A decode that does not finish in time must fail with code "decode-timeout",
write its audit row, and, in a `cxrvqa worker`, end that worker after its
response so that the pool starts a clean one before the next request. No
file here makes a codec loop (the structural checks refuse those), so the
deadline is set to 1 ms (CXRVQA_DECODE_TIMEOUT_MS), which no compressed
decode of the sample files meets:

  1. `cxrvqa ask --json` on sample_data/cr_mono1_jpegls.dcm: exit 1, code
     decode-timeout, the message says the decoder was abandoned, one audit
     row with error decode-timeout (-21, read from common/cxr_common.h);
  2. `cxrvqa screen --jobs 1` over three copies of the JPEG-LS chest: every file gets its own decode-timeout (none
     is lost to a worker on its way out: "worker-crashed"), and each of the
     three workers says it exits;
  3. the same ask with the default deadline answers (no timeout).
Each process must exit normally (a tainted CLI leaves with _exit, so no
static destructor runs under the abandoned decoder).

Usage: /usr/bin/python3 tests/malformed/test_decode_deadline.py --cxrvqa build/cxrvqa
"""
import argparse
import csv
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile

HERE = os.path.dirname(os.path.abspath(__file__))
ROOT = os.path.dirname(os.path.dirname(HERE))
Q = "Is there a pleural effusion?"


def main():
    ap = argparse.ArgumentParser(description=__doc__.split("\n")[0])
    ap.add_argument("--cxrvqa", required=True)
    a = ap.parse_args()
    exe = os.path.abspath(a.cxrvqa)
    with open(os.path.join(ROOT, "common", "cxr_common.h")) as f:
        code_value = int(re.search(r"CXR_ERR_DECODE_TIMEOUT\s*=\s*(-\d+)", f.read()).group(1))
    failures = []
    tmp = tempfile.mkdtemp(prefix="cxr-deadline-")
    env = {k: v for k, v in os.environ.items() if not k.startswith("CXRVQA_")}
    env_fast = dict(env, CXRVQA_DECODE_TIMEOUT_MS="1")
    try:
        # 1. ask
        jls = os.path.join(ROOT, "sample_data", "cr_mono1_jpegls.dcm")
        db = os.path.join(tmp, "ask.sqlite")
        p = subprocess.run([exe, "ask", "--json", "--db", db, jls, Q], env=env_fast, capture_output=True, text=True,
                           timeout=120)
        j = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
        print(f"ask (1 ms): exit {p.returncode}, code {j.get('code')}: {j.get('error')}")
        if p.returncode != 1 or j.get("code") != "decode-timeout" or "abandoned" not in (j.get("error") or ""):
            failures.append(f"ask: expected exit 1 and decode-timeout, got exit {p.returncode}: {p.stdout[:300]}")
        ex = subprocess.run([exe, "audit", "export", "--format", "jsonl", "--db", db], env=env, capture_output=True,
                            text=True, timeout=60)
        rows = [json.loads(x) for x in ex.stdout.splitlines() if x.strip()]
        if len(rows) != 1 or rows[0].get("error") != "decode-timeout" or rows[0].get("error_code") != code_value \
                or rows[0].get("outcome") != 8:
            failures.append(f"ask audit: {[{k: r.get(k) for k in ('outcome', 'error', 'error_code')} for r in rows]}")

        # 2. screen: one worker, three compressed files in a row
        ind = os.path.join(tmp, "in")
        os.makedirs(ind)
        srcs = [jls, jls, jls]  # an RLE decode can finish within 1 ms
        names = ["a.dcm", "b.dcm", "c.dcm"]
        for s, n in zip(srcs, names):
            shutil.copy(s, os.path.join(ind, n))
        out = os.path.join(tmp, "screen.csv")
        p = subprocess.run([exe, "screen", "--db", os.path.join(tmp, "screen.sqlite"), "--csv", out, "--question", Q,
                            "--jobs", "1", "--timeout", "60", ind], env=env_fast, capture_output=True, text=True,
                           timeout=300)
        with open(out, newline="") as f:
            got = {os.path.basename(r["path"]): (r["status"], r["reason"].split(":")[0]) for r in csv.DictReader(f)}
        print(f"screen (1 ms, 1 worker): exit {p.returncode}: {got}")
        exiting = p.stderr.count("exiting after the response")
        for n in names:
            if got.get(n) != ("error", "decode-timeout"):
                failures.append(f"screen: {n}: {got.get(n)} (expected an error decode-timeout)")
        if exiting != 3:
            failures.append(f"screen: {exiting} workers said they exit after a timeout (expected 3)")

        # 3. the default deadline: answered
        p = subprocess.run([exe, "ask", "--json", "--no-audit", jls, Q], env=env, capture_output=True, text=True,
                           timeout=120)
        j = json.loads(p.stdout) if p.stdout.strip().startswith("{") else {}
        print(f"ask (default deadline): exit {p.returncode}, code {j.get('code')}")
        if p.returncode != 0 or j.get("code"):
            failures.append(f"ask with the default deadline: exit {p.returncode}: {p.stdout[:300]}")
    finally:
        shutil.rmtree(tmp, ignore_errors=True)
    for f in failures:
        print("FAIL " + f)
    print("test_decode_deadline: " + ("all checks passed" if not failures else f"{len(failures)} failure(s)"))
    return 1 if failures else 0


if __name__ == "__main__":
    sys.exit(main())
