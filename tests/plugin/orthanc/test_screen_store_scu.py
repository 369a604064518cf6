#!/usr/bin/python3
"""test_screen_store_scu.py — `cxrvqa screen --store-scu` puts its SRs into a real PACS: Orthanc B on
127.0.0.1 (no plugin, its DICOM server on), by DCMTK C-STORE.

  sent      screen over the sample studies with four questions, --sr-out, --store-scu PACS@127.0.0.1:PORT:
            B holds exactly one SR per image (the images screen answered), each with the four
            questions' findings as measurement groups (parsed from B's copy with pydicom), the same SOP
            Instance UIDs as the files in --sr-out; one audit row "forward" outcome 0 per SR
  down      the same to a port nobody listens on: exit 1, "not sent" in the summary, three audit rows
            per SR (retry, retry, failed) spaced by the backoff; the answers themselves are recorded
  usage     --store-scu without --sr-out, a malformed AET@HOST:PORT, a 17-character --calling-aet: exit 2

Exit 0 all passed, 1 a check failed, 77 /usr/sbin/Orthanc not installed.
"""
import argparse
import glob
import io
import os
import shutil
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

import pydicom

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_orthanc as T  # noqa: E402
from test_orthanc_forward import PlainOrthanc  # noqa: E402

check = T.check
QUESTIONS = ["Is there a pleural effusion?", "Is there pneumonia?", "Is the heart enlarged?",
             "Is there a pneumothorax?"]


def rows(db, where):
    con = sqlite3.connect('file:%s?mode=ro' % db, uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute('SELECT * FROM audit WHERE %s ORDER BY seq' % where)]
    finally:
        con.close()


def screen(cx, args, db, srdir, data):
    cmd = [cx, "screen", "--jobs", "2", "--db", db, "--sr-out", srdir] + args
    for q in QUESTIONS:
        cmd += ["--question", q]
    return subprocess.run(cmd + [data], capture_output=True, text=True, timeout=600)


def groups(ds):
    """Measurement groups (CONTAINER items) of a TID 1500 SR, walked recursively."""
    n = 0
    for item in getattr(ds, "ContentSequence", []):
        if item.ValueType == "CONTAINER":
            n += 1
        n += groups(item)
    return n


def main():
    ap = argparse.ArgumentParser()
    ap.add_argument("--cxrvqa", required=True)
    ap.add_argument("--sample-data", required=True)
    a = ap.parse_args()
    if not os.path.exists(T.ORTHANC):
        print("SKIP: %s not installed" % T.ORTHANC)
        return 77
    cx = os.path.abspath(a.cxrvqa)
    tmp = tempfile.mkdtemp(prefix="cxr_scu_")
    data = os.path.join(tmp, "data")
    os.makedirs(data)
    for f in glob.glob(os.path.join(a.sample_data, "*.dcm")):
        shutil.copy(f, data)
    pacs = PlainOrthanc(os.path.join(tmp, "pacs"))
    try:
        # usage
        for args, what in ((["--store-scu", "PACS@127.0.0.1:%d" % pacs.dicom_port], "no --sr-out"),):
            p = subprocess.run([cx, "screen", "--db", os.path.join(tmp, "u.sqlite")] + args + [data],
                               capture_output=True, text=True)
            check(p.returncode == 2 and "--sr-out" in p.stderr, "usage: %s refused (exit %d)" % (what, p.returncode))
        for spec, what in (("PACS127.0.0.1:104", "no @"), ("PACS@127.0.0.1:0", "port 0"),
                           ("A_VERY_LONG_AE_TITLE@h:104", "AE title of 20")):
            p = subprocess.run([cx, "screen", "--db", os.path.join(tmp, "u.sqlite"), "--sr-out", tmp,
                                "--store-scu", spec, data], capture_output=True, text=True)
            check(p.returncode == 2 and ("AET@HOST:PORT" in p.stderr or "AE title" in p.stderr or "port" in p.stderr),
                  "usage: %s refused (exit %d: %s)" % (what, p.returncode, p.stderr.strip()[:90]))
        p = subprocess.run([cx, "screen", "--db", os.path.join(tmp, "u.sqlite"), "--sr-out", tmp, "--store-scu",
                            "PACS@127.0.0.1:104", "--calling-aet", "X" * 17, data], capture_output=True, text=True)
        check(p.returncode == 2 and "calling-aet" in p.stderr, "usage: 17-character calling AE refused")

        # sent
        db, srdir = os.path.join(tmp, "sent.sqlite"), os.path.join(tmp, "sr-sent")
        p = screen(cx, ["--store-scu", "PACS@127.0.0.1:%d" % pacs.dicom_port], db, srdir, data)
        check(p.returncode == 0, "sent: screen exit 0 (%d: %s)" % (p.returncode, p.stderr.strip()[-300:]))
        written = sorted(glob.glob(os.path.join(srdir, "**", "*.dcm"), recursive=True))
        uids = sorted(pydicom.dcmread(f).SOPInstanceUID for f in written)
        answered_images = {r["source"] for r in rows(db, "event_type = 'ask' AND sr_uid IS NOT NULL")}
        check(len(written) == len(answered_images) and written,
              "sent: one SR file per answered image (%d files, %d images)" % (len(written), len(answered_images)))
        received = []
        for inst in pacs.get("/instances"):
            with urllib.request.urlopen("http://127.0.0.1:%d/instances/%s/file" % (pacs.http_port, inst)) as r:
                received.append(pydicom.dcmread(io.BytesIO(r.read())))
        got = sorted(d.SOPInstanceUID for d in received)
        check(got == uids, "sent: the PACS holds exactly the SRs written (%d received, %d written)" % (len(got), len(uids)))
        for d in received:
            check(d.Modality == "SR" and groups(d) >= len(QUESTIONS),
                  "sent: SR %s…: %d measurement groups for %d questions" % (d.SOPInstanceUID[-12:], groups(d), len(QUESTIONS)))
        fw = rows(db, "event_type = 'forward'")
        check(len(fw) == len(uids) and all(r["outcome"] == 0 for r in fw) and sorted(r["sr_uid"] for r in fw) == uids,
              "sent: one audit row 'forward' outcome 0 per SR (%d rows)" % len(fw))
        check(all(("store-scu:PACS@127.0.0.1:%d" % pacs.dicom_port) == r["sr_dest"] for r in fw),
              "sent: the rows name the destination")
        v = subprocess.run([cx, "audit", "verify", "--db", db], capture_output=True, text=True)
        check(v.returncode == 0, "sent: audit verify passes")

        # down
        down = T.free_port()
        db2, srdir2 = os.path.join(tmp, "down.sqlite"), os.path.join(tmp, "sr-down")
        t0 = time.time()
        p = screen(cx, ["--store-scu", "PACS@127.0.0.1:%d" % down], db2, srdir2, data)
        el = time.time() - t0
        check(p.returncode == 1 and "not sent" in p.stderr, "down: exit 1 and the SRs reported not sent (%d)" % p.returncode)
        n_sr = len(glob.glob(os.path.join(srdir2, "**", "*.dcm"), recursive=True))
        fw = rows(db2, "event_type = 'forward'")
        outs = {}
        for r in fw:
            outs.setdefault(r["sr_uid"], []).append(r["outcome"])
        check(n_sr > 0 and len(outs) == n_sr and all(o == [4, 4, 8] for o in outs.values()),
              "down: per SR three attempts audited retry, retry, failed (%s)" % list(outs.values())[:2])
        check(el >= 3.0, "down: the backoff (1 s + 2 s) was waited (%.1f s)" % el)
        answered = rows(db2, "event_type = 'ask'")
        check(len(answered) >= n_sr * len(QUESTIONS), "down: the answers themselves are recorded (%d rows)" % len(answered))
    finally:
        pacs.stop()
    shutil.rmtree(tmp, ignore_errors=True)
    print("%d failed" % len(T.failures))
    return 1 if T.failures else 0


if __name__ == "__main__":
    sys.exit(main())
