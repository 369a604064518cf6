#!/usr/bin/python3
"""test_orthanc_forward.py — results back to the PACS, with two real Orthancs
on 127.0.0.1: A runs the plugin with "ForwardTo": ["PACS", "DOWN"], where
PACS is Orthanc B (no plugin, its DICOM server on) and DOWN a port nobody
listens on.

  series     a study in A, two asks -> ONE SR series in the study with two
             instances: same Series Instance UID (the documented rule:
             <root>.8.<SHA-256(study, model)>), same Series Number (9100 +
             model hash mod 900) and description naming the model
  forward    both SRs arrive in B by C-STORE (B's own /instances), with the
             same SOP Instance UIDs; one audit row "forward" outcome 0 per SR
             and modality PACS
  down       each SR to DOWN: ForwardAttempts (3) attempts, the first two
             audited as retry (outcome 4), the last as failed (outcome 8),
             spaced by the doubling backoff; A answers /system and
             /cxrvqa/status throughout and after
  config     a ForwardTo name missing from DicomModalities disables the
             plugin with a "did you mean" while Orthanc serves

Exit 0 all passed, 1 a check failed, 77 /usr/sbin/Orthanc not installed.
"""
import argparse
import hashlib
import json
import os
import sqlite3
import subprocess
import sys
import tempfile
import time
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_orthanc as T  # noqa: E402

check, log = T.check, T.log


class PlainOrthanc:
    """Orthanc B, "the PACS": no plugin, DICOM server on, no HTTP auth."""

    def __init__(self, tmp):
        self.tmp = tmp
        os.makedirs(tmp, exist_ok=True)
        self.http_port, self.dicom_port = T.free_port(), T.free_port()
        cfg = {'Name': 'pacs', 'StorageDirectory': os.path.join(tmp, 'storage'),
               'IndexDirectory': os.path.join(tmp, 'index'), 'HttpPort': self.http_port,
               'DicomServerEnabled': True, 'DicomPort': self.dicom_port, 'DicomAet': 'PACS',
               'RemoteAccessAllowed': False, 'AuthenticationEnabled': False, 'Plugins': []}
        p = os.path.join(tmp, 'pacs.json')
        json.dump(cfg, open(p, 'w'))
        self.logf = open(os.path.join(tmp, 'pacs.log'), 'w')
        self.proc = subprocess.Popen([T.ORTHANC, p], stdout=self.logf, stderr=subprocess.STDOUT, cwd=tmp,
                                     start_new_session=True)
        t0 = time.time()
        while time.time() - t0 < 60:
            try:
                self.get('/system')
                return
            except OSError:
                time.sleep(0.1)
        raise RuntimeError('Orthanc B did not start')

    def get(self, uri):
        with urllib.request.urlopen('http://127.0.0.1:%d%s' % (self.http_port, uri), timeout=10) as r:
            return json.loads(r.read())

    def stop(self):
        self.proc.terminate()
        try:
            self.proc.wait(30)
        except subprocess.TimeoutExpired:
            self.proc.kill()
            self.proc.wait()
        self.logf.close()


def audit_rows(db, where):
    con = sqlite3.connect('file:%s?mode=ro' % db, uri=True)
    try:
        con.row_factory = sqlite3.Row
        return [dict(r) for r in con.execute('SELECT * FROM audit WHERE %s ORDER BY seq' % where)]
    finally:
        con.close()


def expected_series(root, study, model_sha):
    md = hashlib.sha256(b'cxrvqa-sr-series\0' + study.encode() + b'\0' + model_sha.lower().encode()).digest()
    return ('%s.8.%d' % (root, int.from_bytes(md[:16], 'big')))[:64]


def test_config(tmp, args, model):
    d = os.path.join(tmp, 'typo')
    os.makedirs(d)
    o = T.Orthanc(d, args.plugin, args.cxrvqa, model, {'Workers': 1, 'ForwardTo': ['PACZ']})
    o.extra = {'DicomModalities': {'PACS': ['PACS', '127.0.0.1', 11112]}}
    try:
        o.start('typo')
    except RuntimeError:
        pass
    try:
        st, _, _ = o.http.req('GET', '/system')
        check(st == 200, 'config: Orthanc serves with a bad ForwardTo (%s)' % st)
        st, j = o.http.json('GET', '/cxrvqa/status')
        text = json.dumps(j)
        check(st == 503 and 'did you mean' in text and 'PACS' in text,
              'config: ForwardTo "PACZ" disables the plugin with "did you mean PACS" (%s %s)' % (st, text[:200]))
    finally:
        o.stop()


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--plugin', required=True)
    ap.add_argument('--cxrvqa', required=True)
    ap.add_argument('--sample-data', required=True)
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()
    if not os.path.exists(T.ORTHANC):
        print('SKIP: %s is not installed (Debian package orthanc)' % T.ORTHANC)
        return 77
    args.plugin, args.cxrvqa = os.path.abspath(args.plugin), os.path.abspath(args.cxrvqa)
    model = os.path.join(os.path.dirname(os.path.abspath(args.sample_data)), 'model', 'cxrvqa-cxr-cnn.gguf')
    model_sha = hashlib.sha256(open(model, 'rb').read()).hexdigest()
    tmp = tempfile.mkdtemp(prefix='cxrvqa-orthanc-fwd-')
    t_start = time.time()
    o = b = None
    try:
        b = PlainOrthanc(os.path.join(tmp, 'pacs'))
        d = os.path.join(tmp, 'a')
        os.makedirs(d)
        down_port = T.free_port()  # nobody listens there
        cfg = {'Workers': 1, 'TimeoutSeconds': 20, 'UidRoot': T.UID_ROOT, 'ForwardTo': ['PACS', 'DOWN'],
               'ForwardAttempts': 3, 'ForwardBackoffSeconds': 1}
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, cfg)
        o.extra = {'DicomServerEnabled': True, 'DicomAet': 'CXRVQA',
                   'DicomModalities': {'PACS': ['PACS', '127.0.0.1', b.dicom_port],
                                       'DOWN': ['DOWN', '127.0.0.1', down_port]}}
        log('[start] A up in %.1f s, B (PACS) DICOM port %d' % (o.start('A'), b.dicom_port))
        h = o.http
        up = T.upload(h, open(os.path.join(args.sample_data, 'cr_mono1_jpegls.dcm'), 'rb').read())
        iid, study_id = up['ID'], up['ParentStudy']
        suid = T.study_uid_of(h, iid)
        srs = []
        for q in ('Is there a pleural effusion?', 'Is there a pneumothorax or consolidation?'):
            st, j, dt = T.ask(h, iid, q)
            check(st == 200 and j.get('sr_orthanc_id'), 'ask "%s": 200 with a stored SR (%s)' % (q, st))
            srs.append(j)
        t_asked = time.time()
        # one series in the study, two instances
        series = [h.get('/series/%s' % s) for s in h.get('/studies/%s' % study_id)['Series']]
        sr_series = [s for s in series if s['MainDicomTags'].get('Modality') == 'SR']
        check(len(sr_series) == 1 and len(sr_series[0]['Instances']) == 2,
              'one SR series with two instances in the study (%d series: %s)'
              % (len(sr_series), [len(s['Instances']) for s in sr_series]))
        tags = [h.get('/instances/%s/simplified-tags' % j['sr_orthanc_id']) for j in srs]
        want_uid = expected_series(T.UID_ROOT, suid, model_sha)
        want_num = 9100 + int(model_sha[:8], 16) % 900
        check(all(t['SeriesInstanceUID'] == want_uid for t in tags),
              'series UID from (study, model) by the documented rule (%s, want %s)'
              % ([t['SeriesInstanceUID'] for t in tags], want_uid))
        check(all(int(t['SeriesNumber']) == want_num for t in tags),
              'Series Number %s, rule gives %d' % ([t['SeriesNumber'] for t in tags], want_num))
        check(len({t['SeriesDescription'] for t in tags}) == 1 and model_sha[:12] in tags[0]['SeriesDescription']
              and 'cxrvqa' in tags[0]['SeriesDescription'],
              'one description naming the model (%s)' % [t['SeriesDescription'] for t in tags])
        sops = [t['SOPInstanceUID'] for t in tags]
        check(len(set(sops)) == 2 and all(j['sr']['sop_instance_uid'] in sops for j in srs),
              'two SR instances, the ones the answers name')
        # forwarded to B
        got = T.wait_for(lambda: len(b.get('/instances')) >= 2, 30)
        b_sops = sorted(b.get('/instances/%s' % i)['MainDicomTags']['SOPInstanceUID'] for i in b.get('/instances'))
        check(got and b_sops == sorted(sops), 'B (the PACS) received both SRs by C-STORE (%s)' % b_sops)
        b_series = {b.get('/instances/%s/simplified-tags' % i)['SeriesInstanceUID'] for i in b.get('/instances')}
        check(b_series == {want_uid}, 'in B too: one series (%s)' % b_series)
        db = os.path.join(d, 'audit.sqlite')
        T.wait_for(lambda: len(audit_rows(db, "event_type='forward' AND sr_dest='modality:PACS'")) >= 2, 20)
        ok = audit_rows(db, "event_type='forward' AND sr_dest='modality:PACS'")
        check(len(ok) == 2 and all(r['outcome'] == 0 for r in ok) and sorted(r['sr_uid'] for r in ok) == sorted(sops)
              and all(r['study_uid'] == suid for r in ok),
              'audit: one forward row per SR to PACS, outcome 0, SOP and study UIDs (%s)'
              % [(r['outcome'], r['sr_uid']) for r in ok])
        # DOWN: retried, then failed, while A keeps serving
        served = 0
        t0 = time.time()
        while time.time() - t0 < 20:
            rows = audit_rows(db, "event_type='forward' AND sr_dest='modality:DOWN'")
            st, _, _ = h.req('GET', '/system')
            st2, _ = h.json('GET', '/cxrvqa/status')
            served += st == 200 and st2 == 200
            if len([r for r in rows if r['outcome'] == 8]) >= 2:
                break
            time.sleep(0.2)
        rows = audit_rows(db, "event_type='forward' AND sr_dest='modality:DOWN'")
        for sop in sops:
            mine = [r for r in rows if r['sr_uid'] == sop]
            outc = [r['outcome'] for r in mine]
            check(outc == [4, 4, 8], 'DOWN, SR %s: attempts audited retry, retry, failed (%s)' % (sop[-12:], outc))
            check(all(r['reason'] and 'DOWN' in r['reason'] for r in mine), 'DOWN: the error is in the rows')
            if len(mine) == 3:
                ts = [time.mktime(time.strptime(r['time_utc'][:19], '%Y-%m-%dT%H:%M:%S')) for r in mine]
                check(ts[1] - ts[0] >= 0.0 and ts[2] - ts[0] >= 2.0,
                      'DOWN: backoff 1 s then 2 s between attempts (%s)' % [t - ts[0] for t in ts])
        check(served > 0 and h.req('GET', '/system')[0] == 200, 'A served /system and /cxrvqa/status throughout')
        st, j, _ = T.ask(h, iid, 'Is the heart enlarged?')
        check(st == 200, 'A still answers asks after the failed forwards (%s)' % st)
        st, status = h.json('GET', '/cxrvqa/status')
        c = status.get('counters', {})
        check(c.get('forwards_sent', 0) >= 2 and c.get('forwards_failed', 0) >= 2,
              'status counts forwards sent and failed (%s)' % {k: v for k, v in c.items() if 'forward' in k})
        log('[forward] %.1f s after the asks' % (time.time() - t_asked))
        o.stop()
        test_config(tmp, args, model)
    except Exception as e:
        T.broken_step(o or T.Orthanc(tmp, '', '', '', {}), e)
    finally:
        if o and o.proc and o.proc.poll() is None:
            o.stop()
        if b:
            b.stop()
    return T.finish(tmp, args.keep, t_start)


if __name__ == '__main__':
    sys.exit(main())
