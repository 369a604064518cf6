#!/usr/bin/python3
"""test_orthanc.py — the Orthanc plugin end to end: a real Orthanc
(/usr/sbin/Orthanc) on 127.0.0.1 with libcxrvqa_orthanc.so and real
`cxrvqa worker` processes, driven over its REST API (stdlib urllib only).

What it checks, in order (one Orthanc "A", then a crash-and-restart "B1"/"B2"):
  exports      the .so exports exactly the four Orthanc entry points
  auth         /cxrvqa routes answer 401 without credentials (Orthanc's auth)
  status       GET /cxrvqa/status: workers alive, model hash, queue
  errors       400 bad JSON / missing question / bad lang / no finding / no study,
               404 unknown instance and study, 405 wrong method, 413 large body
  ask          POST /cxrvqa/instances/{id}/ask -> answer + sr_orthanc_id; the SR
               is a modality-SR instance of the same study referencing the source
  audit        GET /cxrvqa/audit?study=UID holds the ask's row
  heatmap      GET …/heatmap.png?finding=… is a PNG
  autoscreen   uploaded CR/DX chest instances get one SR per screening question;
               a HAND radiograph and a CT image get none
  job          POST /cxrvqa/studies/{id}/screen -> Orthanc job reaching Success;
               on a fresh study racing the auto-screen, each (instance,
               question) is still screened exactly once
  kill         a worker SIGKILLed mid-request -> 502; Orthanc serves; next ask 200
  poison       __crash__ -> 502, __hang__ -> 504, audit rows "worker-failure";
               Orthanc keeps serving (CXRVQA_TEST_POISON in Orthanc's env)
  poison file  a stored image whose Image Comments carry __crash__ crashes
               every worker that reads it: its auto-screen and three asks are
               502 with audit rows, asks on a good image in between are 200
  concurrency  50 concurrent asks: all 200, no deadlock; p50/p99 latency
  growth       RSS of Orthanc (with the plugin) and of the workers after 100
               warm-up asks and after 400 more: under 5% growth each
  explorer     the injected Orthanc Explorer JS carries the panel
  restart      instances queued but unscreened when Orthanc is killed are
               screened after the restart; nothing is screened twice
  misconfig    a bad "CxrVqa" section disables the plugin (routes 503 with the
               reason) while Orthanc serves; workers that cannot start
               (missing model) leave Orthanc up, routes 503
               (test_orthanc_ops.py: unknown keys, metrics, log lines, modes)
Orthanc and every worker are killed at the end (try/finally).

Exit 0 all passed, 1 a check failed, 77 /usr/sbin/Orthanc not installed.
The sanitizer build does not run this test: Orthanc is not instrumented, so
an ASan plugin would need `LD_PRELOAD=libasan.so.8` in Orthanc's environment
(pass --preload to try it by hand).
"""
import argparse
import base64
import json
import os
import shutil
import signal
import socket
import statistics
import struct
import stat
import subprocess
import sys
import tempfile
import threading
import time
import uuid
import urllib.error
import urllib.request

ORTHANC = '/usr/sbin/Orthanc'
USER, PASSWORD = 'radiologist', 'cxr-test-secret'
SCREEN_QUESTIONS = ['Is there a pleural effusion?', 'Is there a pneumothorax?',
                    'Is there consolidation?', 'Is the heart enlarged?']
# asks use other wordings, so that their SRs never count as screening SRs
UID_ROOT = '1.2.826.0.1.3680043.10.1450.99'  # CxrVqa.UidRoot: the SRs' UIDs must start with it
ASK_QUESTIONS = ['Is there an effusion?', 'Is there cardiomegaly?', 'Any pneumothorax?',
                 'Is there consolidation in the lungs?']

failures = []


def log(msg):
    print(msg, flush=True)


def check(cond, msg):
    if cond:
        log('  ok   ' + msg)
    else:
        log('  FAIL ' + msg)
        failures.append(msg)
    return cond


def free_port():
    s = socket.socket()
    s.bind(('127.0.0.1', 0))
    port = s.getsockname()[1]
    s.close()
    return port


# ------------------------------------------------------------------ HTTP

class Http:
    def __init__(self, port, user=USER, password=PASSWORD):
        self.base = 'http://127.0.0.1:%d' % port
        self.auth = 'Basic ' + base64.b64encode(('%s:%s' % (user, password)).encode()).decode()

    def req(self, method, path, body=None, ctype=None, auth=True, timeout=120):
        """(status, headers, body bytes); never raises for an HTTP status."""
        if isinstance(body, (dict, list)):
            body, ctype = json.dumps(body).encode(), 'application/json'
        elif isinstance(body, str):
            body = body.encode()
        r = urllib.request.Request(self.base + path, data=body, method=method)
        if ctype:
            r.add_header('Content-Type', ctype)
        if auth:
            r.add_header('Authorization', self.auth)
        try:
            with urllib.request.urlopen(r, timeout=timeout) as f:
                return f.status, dict(f.headers), f.read()
        except urllib.error.HTTPError as e:
            return e.code, dict(e.headers), e.read()

    def json(self, method, path, body=None, **kw):
        st, h, b = self.req(method, path, body, **kw)
        try:
            j = json.loads(b) if b else None
        except ValueError:
            j = None
        return st, j

    def get(self, path):
        st, j = self.json('GET', path)
        if st != 200:
            raise RuntimeError('GET %s: HTTP %d %s' % (path, st, j))
        return j


# --------------------------------------------------------------- Orthanc

def children_of(pid):
    """Direct children of pid (from /proc)."""
    out = []
    for d in os.listdir('/proc'):
        if not d.isdigit():
            continue
        try:
            with open('/proc/%s/stat' % d) as f:
                st = f.read()
            ppid = int(st[st.rindex(')') + 2:].split()[1])
        except (OSError, ValueError):
            continue
        if ppid == pid:
            out.append(int(d))
    return out


def alive(pid):
    try:
        with open('/proc/%d/stat' % pid) as f:
            st = f.read()
        return st[st.rindex(')') + 2] != 'Z'
    except OSError:
        return False


class Orthanc:
    """One Orthanc process with the plugin; tmp holds storage, index, config, log."""

    def __init__(self, tmp, plugin, cxrvqa, model, cxr_cfg, env=None, preload=None, wrap=None):
        self.tmp, self.plugin, self.cxrvqa, self.model = tmp, plugin, cxrvqa, model
        self.cxr_cfg, self.env, self.preload, self.wrap = cxr_cfg, env or {}, preload, wrap or []
        self.proc, self.port, self.seen = None, None, set()
        self.logpath = None
        self.extra = {}  # more top-level Orthanc configuration (DicomModalities, DicomPort, ...)

    def start(self, tag):
        self.port = free_port()
        cfg = {
            'Name': 'cxrvqa-test',
            'StorageDirectory': os.path.join(self.tmp, 'storage'),
            'IndexDirectory': os.path.join(self.tmp, 'index'),
            'HttpPort': self.port,
            'HttpThreads': 64,
            'DicomServerEnabled': False,
            'DicomPort': free_port(),
            'RemoteAccessAllowed': False,
            'AuthenticationEnabled': True,
            'RegisteredUsers': {USER: PASSWORD},
            'Plugins': [self.plugin],
            'ConcurrentJobs': 2,
            'SaveJobs': False,
            'StableAge': 1,
            # Orthanc 1.10 keeps the files it stores in a 128 MB cache by default: every stored SR
            # then grows its RSS by its size, which the growth check would count against the plugin
            'MaximumStorageCacheSize': 0,
            'CxrVqa': dict({
                'Model': self.model,
                'WorkerCommand': self.cxrvqa,
                'AuditDatabase': os.path.join(self.tmp, 'audit.sqlite'),
                'QueuePath': os.path.join(self.tmp, 'queue.sqlite'),
            }, **self.cxr_cfg),
        }
        cfg.update(self.extra)
        cfgpath = os.path.join(self.tmp, 'orthanc-%s.json' % tag)
        with open(cfgpath, 'w') as f:
            json.dump(cfg, f, indent=1)
        env = dict(os.environ, **self.env)
        if self.preload:
            env['LD_PRELOAD'] = self.preload
            env.setdefault('ASAN_OPTIONS', 'detect_leaks=0')
        self.logpath = os.path.join(self.tmp, 'orthanc-%s.log' % tag)
        self.logf = open(self.logpath, 'w')
        t0 = time.time()
        self.proc = subprocess.Popen(self.wrap + [ORTHANC, cfgpath], stdout=self.logf, stderr=subprocess.STDOUT, env=env,
                                     cwd=self.tmp, start_new_session=True)
        self.http = Http(self.port)
        limit = 300 if self.wrap else 90
        while time.time() - t0 < limit:
            if self.proc.poll() is not None:
                raise RuntimeError('Orthanc exited with %s at start-up:\n%s' % (self.proc.returncode, self.log_tail()))
            try:
                st, _, _ = self.http.req('GET', '/system', timeout=2)
                if st == 200:
                    self.workers()
                    return time.time() - t0
            except (urllib.error.URLError, OSError):
                pass
            time.sleep(0.1)
        raise RuntimeError('Orthanc did not answer within %d s:\n%s' % (limit, self.log_tail()))

    def start_expect_exit(self, tag, timeout=60):
        """Start with the current configuration and expect Orthanc to refuse:
        (exit status or None if it kept running, log text)."""
        try:
            self.start(tag)
        except RuntimeError:
            pass
        rc = self.proc.poll() if self.proc else None
        text = self.log_tail(400)
        if rc is None:
            self.stop()
        else:
            self.logf.close()
            self.proc = None
        return rc, text

    def log_tail(self, n=40):
        try:
            with open(self.logpath, errors='replace') as f:
                return ''.join(f.readlines()[-n:])
        except OSError:
            return ''

    def workers(self):
        """Pids of the worker processes (Orthanc's children), remembered for cleanup."""
        if not self.proc:
            return []
        w = children_of(self.proc.pid)
        self.seen.update(w)
        return w

    def stop(self, hard=False, wait=30):
        """SIGTERM (or SIGKILL) Orthanc; then SIGKILL every worker ever seen."""
        if not self.proc:
            return None
        self.workers()
        t0 = time.time()
        if self.proc.poll() is None:
            self.proc.send_signal(signal.SIGKILL if hard else signal.SIGTERM)
            try:
                self.proc.wait(wait)
            except subprocess.TimeoutExpired:
                self.proc.kill()
                self.proc.wait()
        took = time.time() - t0
        leftover = [p for p in self.seen if alive(p)]
        for p in leftover:
            try:
                os.kill(p, signal.SIGKILL)
            except OSError:
                pass
        self.logf.close()
        self.proc = None
        self.seen = set()
        return took, leftover


# --------------------------------------------------------------- helpers

def upload(http, data):
    st, j = http.json('POST', '/instances', data, ctype='application/dicom')
    if st != 200 or not j or 'ID' not in j:
        raise RuntimeError('upload failed: HTTP %d %s' % (st, j))
    return j


def new_uid():
    return '2.25.%d' % uuid.uuid4().int


def copy_instance(http, instance_id, n, desc, replace=None):
    """n copies of one image, each in a new study (fresh Study, Series and
    SOP Instance UIDs), stored through POST /instances like any upload;
    returns [(study id, instance id)]."""
    out = []
    for i in range(n):
        st, _, data = http.req('POST', '/instances/%s/modify' % instance_id,
                               {'Replace': dict({'StudyInstanceUID': new_uid(), 'SeriesInstanceUID': new_uid(),
                                                 'SOPInstanceUID': new_uid(),
                                                 'StudyDescription': '%s %d' % (desc, i)}, **(replace or {})),
                                'Force': True})
        if st != 200:
            raise RuntimeError('modify failed: %d %s' % (st, data[:200]))
        j = upload(http, data)
        out.append((j['ParentStudy'], j['ID']))
    return out


def walk(node, fn):
    if isinstance(node, dict):
        fn(node)
        for v in node.values():
            walk(v, fn)
    elif isinstance(node, list):
        for v in node:
            walk(v, fn)


def sr_summary(http, sr_id):
    """(question, [referenced SOP Instance UIDs]) of one of our SRs."""
    tags = http.get('/instances/%s/tags?simplify' % sr_id)
    found = {'q': None, 'refs': []}

    def fn(d):
        c = d.get('ConceptNameCodeSequence')
        if isinstance(c, list) and c and isinstance(c[0], dict) and c[0].get('CodeValue') == 'question':
            found['q'] = d.get('TextValue')
        if 'ReferencedSOPInstanceUID' in d:
            found['refs'].append(d['ReferencedSOPInstanceUID'])
    walk(tags, fn)
    return found['q'], found['refs']


class SrIndex:
    """SRs per (source SOP Instance UID, question); each SR is read once."""

    def __init__(self, http):
        self.http, self.known, self.count = http, {}, {}

    def refresh(self, study_ids):
        for sid in study_ids:
            for inst in self.http.get('/studies/%s/instances' % sid):
                iid = inst['ID']
                if iid in self.known:
                    continue
                series = self.http.get('/instances/%s/series' % iid)
                if series['MainDicomTags'].get('Modality') != 'SR':
                    self.known[iid] = None
                    continue
                q, refs = sr_summary(self.http, iid)
                self.known[iid] = (q, refs)
                for r in set(refs):
                    self.count[(r, q)] = self.count.get((r, q), 0) + 1

    def screen_counts(self, sop_uids):
        return {(s, q): self.count.get((s, q), 0) for s in sop_uids for q in SCREEN_QUESTIONS}


def sop_uid(http, instance_id):
    return http.get('/instances/%s' % instance_id)['MainDicomTags']['SOPInstanceUID']


def study_uid_of(http, instance_id):
    return http.get('/instances/%s/study' % instance_id)['MainDicomTags']['StudyInstanceUID']


def wait_for(fn, timeout, step=0.25):
    t0 = time.time()
    while True:
        v = fn()
        if v or time.time() - t0 > timeout:
            return v
        time.sleep(step)


def wait_screened(idx, study_ids, sops, timeout):
    def done():
        idx.refresh(study_ids)
        return all(v >= 1 for v in idx.screen_counts(sops).values())
    t0 = time.time()
    ok = wait_for(done, timeout, 0.5)
    return ok, time.time() - t0


def wait_job(http, job_id, timeout=120):
    def done():
        j = http.get('/jobs/%s' % job_id)
        return j if j.get('State') in ('Success', 'Failure') else None
    return wait_for(done, timeout, 0.25) or http.get('/jobs/%s' % job_id)


def png_size(b):
    if len(b) < 24 or b[:8] != b'\x89PNG\r\n\x1a\n' or b[12:16] != b'IHDR':
        return None
    return struct.unpack('>II', b[16:24])


def ask(http, iid, question, **extra):
    body = dict({'question': question, 'user': 'dr-test'}, **extra)
    t0 = time.time()
    st, j = http.json('POST', '/cxrvqa/instances/%s/ask' % iid, body)
    return st, j, time.time() - t0


def pause_syscall_pids(pids):
    """Workers blocked in pause() (the __hang__ poison): x86-64 syscall 34."""
    out = []
    for p in pids:
        try:
            with open('/proc/%d/syscall' % p) as f:
                if f.read().split()[0] == '34':
                    out.append(p)
        except (OSError, IndexError):
            pass
    return out


# ----------------------------------------------------------------- tests

def test_exports(plugin):
    log('[exports]')
    try:
        out = subprocess.run(['nm', '-D', '--defined-only', plugin], capture_output=True, text=True, check=True).stdout
    except (OSError, subprocess.CalledProcessError) as e:
        check(False, 'nm -D runs on the plugin (%s)' % e)
        return
    syms = sorted(line.split()[-1] for line in out.splitlines() if line.split() and line.split()[-2] in 'TtDdBbRrWwVvi'
                  and not line.split()[-1].startswith('_'))
    check(syms == ['OrthancPluginFinalize', 'OrthancPluginGetName', 'OrthancPluginGetVersion',
                   'OrthancPluginInitialize'], 'exactly the four entry points are exported: %s' % syms)


def test_auth_status(o):
    log('[auth, status]')
    h = o.http
    for m, p in (('GET', '/cxrvqa/status'), ('POST', '/cxrvqa/instances/x/ask'), ('GET', '/cxrvqa/audit?study=1')):
        st, _, _ = h.req(m, p, body=b'{}' if m == 'POST' else None, auth=False)
        check(st == 401, '%s %s without credentials -> 401 (got %d)' % (m, p, st))
    st, _, _ = Http(o.port, USER, 'wrong').req('GET', '/cxrvqa/status')
    check(st == 401, 'wrong password -> 401 (got %d)' % st)
    st, s = h.json('GET', '/cxrvqa/status')
    check(st == 200 and s['workers']['alive'] == o.cxr_cfg['Workers'],
          'status: %s workers alive' % (s and s['workers'].get('alive')))
    check(s and len(s['model']['sha256']) == 64, 'status: model sha256 %s' % (s and s['model']['sha256'][:12]))
    check(s and s['queue']['auto_screen'] is True and 'length' in s['queue'], 'status: auto-screen queue reported')
    check(len(o.workers()) == o.cxr_cfg['Workers'], 'worker processes are children of Orthanc: %s' % o.workers())
    return s


def test_errors(o, iid, study_id):
    log('[errors]')
    h = o.http
    cases = [
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'{not json', 400, 'bad JSON'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'[1,2]', 400, 'JSON not an object'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'{"user":"x"}', 400, 'missing question'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'{"question":""}', 400, 'empty question'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'{"question":"Effusion?","lang":"fr"}', 400, 'bad lang'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid, b'{"question":"Effusion?","user":7}', 400, 'user not a string'),
        ('POST', '/cxrvqa/instances/%s/ask' % iid,
         json.dumps({'question': 'x' * (70 << 10)}).encode(), 413, 'body over 64 KiB'),
        ('POST', '/cxrvqa/instances/00000000-00000000-00000000-00000000-00000000/ask',
         b'{"question":"Effusion?"}', 404, 'unknown instance'),
        ('POST', '/cxrvqa/instances/not-an-orthanc-id!/ask', b'{"question":"Effusion?"}', 404, 'malformed id'),
        ('GET', '/cxrvqa/instances/%s/heatmap.png' % iid, None, 400, 'heatmap without finding'),
        ('GET', '/cxrvqa/instances/00000000-00000000-00000000-00000000-00000000/heatmap.png?finding=pleural_effusion',
         None, 404, 'heatmap of unknown instance'),
        ('GET', '/cxrvqa/audit?study=1.2.x', None, 400, 'audit of a malformed study'),
        ('GET', '/cxrvqa/audit?limit=0', None, 400, 'audit with limit 0'),
        ('POST', '/cxrvqa/studies/00000000-00000000-00000000-00000000-00000000/screen', b'', 404, 'unknown study'),
    ]
    for m, p, body, want, what in cases:
        st, j = h.json(m, p, body, ctype='application/json' if body is not None else None)
        check(st == want and isinstance(j, dict) and 'error' in j and 'code' in j,
              '%s -> %d with {"error","code"} (got %d %s)' % (what, want, st, str(j)[:100]))
    st, _, _ = h.req('GET', '/cxrvqa/instances/%s/ask' % iid)
    check(st == 405, 'GET on ask -> 405 (got %d)' % st)
    st, _, _ = h.req('POST', '/cxrvqa/status', b'')
    check(st == 405, 'POST on status -> 405 (got %d)' % st)


def test_ask(o, iid, study_id, suid):
    log('[ask, SR, audit, heatmap]')
    h = o.http
    st, a, dt = ask(h, iid, ASK_QUESTIONS[0])
    if not check(st == 200 and isinstance(a, dict), 'ask -> 200 (got %d %s) in %.0f ms' % (st, str(a)[:200], dt * 1e3)):
        return None
    check(a.get('answer') in ('yes', 'no', 'uncertain', 'not-assessed', 'refused'), 'answer is yes/no/uncertain/not-assessed/refused: %s' % a.get('answer'))
    check(isinstance(a.get('findings'), list), 'findings listed (%d)' % len(a.get('findings') or []))
    check(a.get('model', {}).get('sha256') == o.status['model']['sha256'],
          'answer names the model (sha256 %s)' % a.get('model', {}).get('sha256', '')[:12])
    check(a.get('sop_instance_uid') == sop_uid(h, iid), 'answer names the source SOP Instance UID')
    check(a.get('study_instance_uid') == suid, 'answer names the study')
    sr_id = a.get('sr_orthanc_id')
    if check(isinstance(sr_id, str), 'sr_orthanc_id returned: %s' % sr_id):
        sr_series = h.get('/instances/%s/series' % sr_id)
        check(sr_series['MainDicomTags'].get('Modality') == 'SR', 'the stored SR is modality SR')
        check(h.get('/instances/%s/study' % sr_id)['ID'] == study_id, 'the SR joined the source study')
        in_study = [x['ID'] for x in h.get('/studies/%s/instances' % study_id)]
        check(sr_id in in_study, '/studies/{id}/instances includes the SR instance')
        q, refs = sr_summary(h, sr_id)
        check(q == ASK_QUESTIONS[0], 'the SR carries the question: %r' % q)
        check(sop_uid(h, iid) in refs, 'the SR references the source image')
        check(sop_uid(h, sr_id).startswith(UID_ROOT + '.'), 'the SR UID is under CxrVqa.UidRoot (%s)' % sop_uid(h, sr_id))
        if a.get('sr'):
            check(a['sr'].get('sop_instance_uid') == sop_uid(h, sr_id), 'answer.sr.sop_instance_uid is the stored SR')
        # an instance without an image (our own SR): the worker's error, 422
        st, j, _ = ask(h, sr_id, 'Is there an effusion in this report?')
        check(st == 422 and j and j.get('error') and j.get('code') not in (None, 'internal'),
              'asking about an SR instance -> 422 with the reason (%s %s: %s)'
              % (st, j and j.get('code'), str(j and j.get('error'))[:80]))
    # audit
    st, rows = h.json('GET', '/cxrvqa/audit?study=%s' % suid)
    ok = check(st == 200 and isinstance(rows, list), 'audit query -> 200 list (got %d, %d rows)' % (st, len(rows or [])))
    if ok:
        mine = [r for r in rows if r.get('question') == ASK_QUESTIONS[0] and r.get('sop_uid') == a.get('sop_instance_uid')]
        check(len(mine) == 1, 'one audit row for the ask (found %d)' % len(mine))
        if mine:
            r = mine[0]
            check(r.get('study_uid') == suid and r.get('user') == 'dr-test (via %s)' % USER and r.get('outcome') == 0,
                  'audit row: study, user, outcome 0 (%s)' % {k: r.get(k) for k in ('event_type', 'user', 'outcome')})
            check(str(r.get('source', '')).endswith(iid), 'audit row source names the Orthanc instance: %s' % r.get('source'))
            if a.get('sr'):
                check(r.get('sr_uid') == a['sr'].get('sop_instance_uid'), 'audit row names the SR')
            if isinstance(a.get('audit'), dict):
                check(r.get('seq') == a['audit'].get('seq'), 'the answer names its audit row (seq %s)' % r.get('seq'))
    st, rows = h.json('GET', '/cxrvqa/audit?study=1.2.3.4.5.6.7.8.9')
    check(st == 200 and rows == [], 'audit of an unknown study is an empty list (%d %s)' % (st, rows))
    # explicit language and a refusal
    st, z, _ = ask(h, iid, '这张图像中是否存在胸腔积液?', lang='zh')
    check(st == 200 and z.get('language') == 'zh', 'Chinese question -> 200, language zh (%d %s)' % (st, z and z.get('language')))
    st, r, _ = ask(h, iid, 'What dose of furosemide should I give?')
    check(st == 200 and r.get('answer') == 'refused' and r.get('refused') is True,
          'treatment question is a 200 refusal (%d %s)' % (st, r and r.get('answer')))
    # heatmap
    # evidence is drawn only for a finding answered yes or uncertain; else 404 no-heatmap, saying why
    f0 = next((f for f in a.get('findings', []) if f.get('finding')), {'finding': 'pleural_effusion'})
    finding, drawn = f0['finding'], f0.get('decision') in ('yes', 'uncertain')
    t0 = time.time()
    st, hd, body = h.req('GET', '/cxrvqa/instances/%s/heatmap.png?finding=%s' % (iid, finding))
    ctype = {k.lower(): v for k, v in hd.items()}.get('content-type', '')
    size = png_size(body) if st == 200 else None
    if drawn:
        check(st == 200 and ctype.startswith('image/png') and size and min(size) > 0,
              'heatmap.png?finding=%s -> 200 image/png %s (%d bytes, %.0f ms)' % (finding, size, len(body), (time.time() - t0) * 1e3))
    else:
        check(st == 404 and b'no-heatmap' in body, 'heatmap.png?finding=%s (answered %s) -> 404 no-heatmap (%d %s)'
              % (finding, f0.get('decision'), st, body[:160]))
    # a finding the model cannot assess: never drawn
    st, hd, body = h.req('GET', '/cxrvqa/instances/%s/heatmap.png?finding=cardiomegaly' % iid)
    check(st == 404 and b'not drawn' in body, 'heatmap of a finding not assessed -> 404 (%d %s)' % (st, body[:160]))
    return a


def test_autoscreen(o, idx, studies, sops, label):
    log('[autoscreen: %s]' % label)
    ok, took = wait_screened(idx, studies, sops, 90)
    counts = idx.screen_counts(sops)
    check(ok, 'every (instance, question) screened within 90 s (%.1f s; %d of %d)' %
          (took, sum(1 for v in counts.values() if v), len(counts)))
    return counts


def test_job(o, idx, study_id, sops, fresh):
    h = o.http
    st, j = h.json('POST', '/cxrvqa/studies/%s/screen' % study_id, b'')
    if not check(st == 200 and j and j.get('ID') and j.get('Path') == '/jobs/%s' % (j or {}).get('ID'),
                 'screen -> 200 {"ID","Path"} (%d %s)' % (st, j)):
        return
    job = wait_job(h, j['ID'])
    c = job.get('Content', {})
    check(job.get('State') == 'Success' and job.get('Progress') == 100,
          'job %s reaches Success (State %s, Progress %s, Content %s)' % (j['ID'][:8], job.get('State'), job.get('Progress'), c))
    check(job.get('Type') == 'CxrVqaScreen', 'job type CxrVqaScreen')
    n = len(sops) * len(SCREEN_QUESTIONS)
    if fresh:
        check(c.get('SRs', 0) + c.get('Skipped', 0) == n,
              'job: SRs + Skipped = %d (the job wrote %s, the auto-screen had done %s)'
              % (n, c.get('SRs'), c.get('Skipped')))
    else:
        check(c.get('SRs') == 0 and c.get('Skipped') == n,
              'job on a screened study: nothing new, %d skipped (%s)' % (n, c))


def test_not_eligible(o, idx, iid):
    log('[not eligible: hand, CT]')
    h = o.http
    n0 = h.get('/cxrvqa/status')['counters']['screen_not_eligible']
    other = (copy_instance(h, iid, 1, 'hand', {'BodyPartExamined': 'HAND'}) +
             copy_instance(h, iid, 1, 'ct', {'Modality': 'CT'}))
    wait_for(lambda: h.get('/cxrvqa/status')['counters']['screen_not_eligible'] >= n0 + 2 and
             h.get('/cxrvqa/status')['queue']['length'] == 0, 30)
    idx.refresh([sid for sid, _ in other])
    counts = idx.screen_counts([sop_uid(h, i) for _, i in other])
    check(not any(counts.values()), 'a HAND radiograph and a CT image are not screened (%d SRs)' % sum(counts.values()))
    st, j = h.json('POST', '/cxrvqa/studies/%s/screen' % other[0][0], b'')
    job = wait_job(h, j['ID']) if st == 200 else {}
    c = job.get('Content', {})
    check(job.get('State') == 'Success' and c.get('NotEligible') == 1 and c.get('SRs') == 0,
          'the screening job skips it too (%s)' % c)


def test_kill_mid_request(o, iid):
    log('[worker killed mid-request]')
    h = o.http
    res = {}

    def run():
        res['r'] = ask(h, iid, '__hang__ kill me')
    t = threading.Thread(target=run)
    t.start()
    busy = wait_for(lambda: h.get('/cxrvqa/status')['workers']['busy'] >= 1, 5, 0.05)
    wait_for(lambda: pause_syscall_pids(o.workers()), 1.0, 0.05)
    victims = pause_syscall_pids(o.workers()) or o.workers()
    check(bool(busy), 'a worker is busy with the request (pids in pause(): %s)' % victims)
    t_kill = time.time()
    for p in victims:
        os.kill(p, signal.SIGKILL)
    t.join(60)
    st, j, dt = res.get('r', (None, None, 0))
    check(st == 502 and j and j.get('code') == 'worker-crashed',
          'the request in flight gets 502 worker-crashed %.2f s after the kill (%s %s)' % (time.time() - t_kill, st, j))
    st, _, _ = h.req('GET', '/system')
    check(st == 200, 'Orthanc still serves')
    st, a, dt = ask(h, iid, ASK_QUESTIONS[1])
    check(st == 200, 'the next ask succeeds (%d, %.0f ms)' % (st, dt * 1e3))
    s = h.get('/cxrvqa/status')['workers']
    check(s['alive'] == o.cxr_cfg['Workers'] and s['restarts'] >= 1,
          'the pool replaced the worker (alive %d, restarts %d, crashed %d)' % (s['alive'], s['restarts'], s['crashed']))


def test_poison(o, iid, suid):
    log('[poison: crash, hang]')
    h = o.http
    st, j, dt = ask(h, iid, '__crash__ Is there an effusion?')
    check(st == 502 and j and j.get('code') == 'worker-crashed' and 'error' in j,
          '__crash__ -> 502 worker-crashed (%s %s)' % (st, str(j)[:160]))
    st, j, dt = ask(h, iid, '__hang__ Is there an effusion?')
    tmo = o.cxr_cfg['TimeoutSeconds']
    check(st == 504 and j and j.get('code') == 'worker-timeout' and tmo - 0.5 <= dt <= tmo + 10,
          '__hang__ -> 504 worker-timeout after %.1f s (limit %d s) (%s %s)' % (dt, tmo, st, str(j)[:160]))
    st, _, _ = h.req('GET', '/system')
    check(st == 200, 'Orthanc still serves')
    st, a, dt = ask(h, iid, ASK_QUESTIONS[2])
    check(st == 200, 'the next ask succeeds (%d)' % st)
    st, rows = h.json('GET', '/cxrvqa/audit?study=%s&limit=1000' % suid)
    fails = [r for r in rows or [] if r.get('event_type') == 'worker-failure']
    qs = sorted(r.get('question', '') for r in fails)
    check(any('__crash__' in q for q in qs) and any('__hang__' in q for q in qs),
          'audit rows "worker-failure" for the crash and the hang: %s' % qs)
    check(all(r.get('outcome') == 8 and r.get('study_uid') == suid and r.get('sop_uid') for r in fails),
          'worker-failure rows: outcome 8, study and SOP UIDs from Orthanc')


def test_poison_file(o, idx, good_iid):
    """A poisoned *file*: a copy of the chest image whose Image Comments carry
    the __crash__ marker, so every worker that reads it crashes (test hook
    CXRVQA_TEST_POISON), whatever the question. Auto-screening it and asking
    about it must each be refused with 502 and an audit row naming the
    instance; asks on a good image in between succeed; Orthanc stays up; no
    SR is made for it; the pool keeps its workers."""
    log('[poisoned file]')
    h = o.http
    before = h.get('/cxrvqa/status')['workers']
    (psid, piid), = copy_instance(h, good_iid, 1, 'poisoned', {'ImageComments': '__crash__ test poison'})
    psop, psuid = sop_uid(h, piid), study_uid_of(h, piid)

    def rows():
        st, r = h.json('GET', '/cxrvqa/audit?study=%s&limit=1000' % psuid)
        return [x for x in r or [] if x.get('sop_uid') == psop] if st == 200 else []
    # the auto-screen reaches it first: one refused row per screening question
    screened = wait_for(lambda: len([x for x in rows() if x.get('event_type') == 'worker-failure']) >= len(SCREEN_QUESTIONS), 60, 0.5)
    check(bool(screened), 'auto-screening the poisoned file: %d worker-failure rows for %d questions'
          % (len([x for x in rows() if x.get('event_type') == 'worker-failure']), len(SCREEN_QUESTIONS)))
    asked = ['Is there a pleural effusion on this film?', 'Any pneumothorax?', '有没有肺炎?']
    for q in asked:
        st, j, dt = ask(h, piid, q)
        check(st == 502 and j and j.get('code') == 'worker-crashed',
              'poisoned file, %r -> 502 worker-crashed in %.0f ms (%s %s)' % (q, dt * 1e3, st, str(j)[:120]))
        st, a, dt = ask(h, good_iid, ASK_QUESTIONS[1])
        check(st == 200 and a.get('answer') in ('yes', 'no', 'uncertain', 'not-assessed'),
              '  the next ask on a good image -> 200 (%d, %.0f ms)' % (st, dt * 1e3))
    st, _, _ = h.req('GET', '/system')
    check(st == 200, 'Orthanc still serves')
    mine = rows()
    fails = [x for x in mine if x.get('event_type') == 'worker-failure']
    check(all(any(x.get('question') == q for x in fails) for q in asked),
          'one worker-failure audit row per poisoned ask (%d rows in all)' % len(fails))
    check(all(x.get('outcome') == 8 and x.get('study_uid') == psuid for x in fails),
          'worker-failure rows: outcome 8, the poisoned study and SOP UIDs')
    check(not [x for x in mine if x.get('outcome') == 0], 'no successful row for the poisoned file')
    idx.refresh([psid])
    srs = [k for k, v in idx.count.items() if k[0] == psop and v]
    check(not srs, 'no SR for the poisoned file (%s)' % srs)
    after = h.get('/cxrvqa/status')['workers']
    check(after['alive'] == o.cxr_cfg['Workers'] and after['crashed'] >= before['crashed'] + len(asked) + len(SCREEN_QUESTIONS),
          'the pool replaced every crashed worker (alive %d, crashed %d -> %d)'
          % (after['alive'], before['crashed'], after['crashed']))


def test_concurrency(o, iids, n=50):
    log('[%d concurrent asks]' % n)
    h = o.http
    barrier = threading.Barrier(n)
    res = [None] * n

    def run(i):
        barrier.wait()
        res[i] = ask(h, iids[i % len(iids)], ASK_QUESTIONS[i % len(ASK_QUESTIONS)])
    threads = [threading.Thread(target=run, args=(i,)) for i in range(n)]
    t0 = time.time()
    for t in threads:
        t.start()
    for t in threads:
        t.join(180)
    wall = time.time() - t0
    hung = sum(t.is_alive() for t in threads)
    check(hung == 0, 'no request hangs (deadline 180 s; %d still running)' % hung)
    done = [r for r in res if r]
    codes = {}
    for st, _, _ in done:
        codes[st] = codes.get(st, 0) + 1
    check(codes.get(200, 0) == n, 'all %d answered 200 (%s)' % (n, codes))
    lat = sorted(r[2] * 1e3 for r in done)
    if lat:
        p50 = statistics.median(lat)
        p99 = lat[min(len(lat) - 1, int(round(0.99 * (len(lat) - 1))))]
        log('  latency over %d concurrent asks, %d workers: p50 %.0f ms, p99 %.0f ms, max %.0f ms; wall %.1f s (%.1f asks/s)'
            % (n, o.cxr_cfg['Workers'], p50, p99, lat[-1], wall, n / wall))
        return p50, p99, wall
    return None


def rss_kb(pid):
    try:
        with open('/proc/%d/status' % pid) as f:
            return next(int(l.split()[1]) for l in f if l.startswith('VmRSS:'))
    except (OSError, StopIteration, ValueError):
        return 0


def test_growth(o, iids, warm=100, n=400):
    """Memory growth over many asks: Orthanc's RSS (the plugin lives in it)
    and the workers' after a warm-up, then after n more asks from 2 client
    threads: under 5% each (the workers are not replaced meanwhile)."""
    log('[memory growth: %d warm-up asks, then %d]' % (warm, n))
    h = o.http

    def burst(k):
        bad = []

        def run(t):
            for i in range(t, k, 2):
                st, _, _ = ask(h, iids[i % len(iids)], ASK_QUESTIONS[i % len(ASK_QUESTIONS)])
                if st != 200:
                    bad.append(st)
        ts = [threading.Thread(target=run, args=(t,)) for t in range(2)]
        for t in ts:
            t.start()
        for t in ts:
            t.join(600)
        return bad
    bad = burst(warm)
    w0 = sorted(o.workers())
    r0 = rss_kb(o.proc.pid), sum(rss_kb(p) for p in w0)
    t0 = time.time()
    bad += burst(n)
    w1 = sorted(o.workers())
    r1 = rss_kb(o.proc.pid), sum(rss_kb(p) for p in w1)
    check(not bad, 'all %d asks -> 200 (%d failed: %s)' % (warm + n, len(bad), sorted(set(bad))))
    check(w0 == w1, 'the same workers throughout (%s)' % w1)
    g = [(b - a) / a if a else 1.0 for a, b in zip(r0, r1)]
    check(g[0] < 0.05, 'Orthanc + plugin RSS %d -> %d kB after %d more asks, each storing an SR (%+.2f%%, limit 5%%)'
          % (r0[0], r1[0], n, 100 * g[0]))
    check(g[1] < 0.05, 'workers RSS %d -> %d kB (%+.2f%%, limit 5%%); %.1f asks/s'
          % (r0[1], r1[1], 100 * g[1], n / (time.time() - t0)))
    return g


def test_explorer(o):
    log('[explorer]')
    st, _, body = o.http.req('GET', '/plugins/explorer.js')
    check(st == 200 and b'Ask cxrvqa' in body and b"$('#instance').live('pagebeforeshow'" in body,
          'Orthanc Explorer JS carries the "Ask cxrvqa" panel (%d, %d bytes)' % (st, len(body)))


def test_misconfigured(o, base_cfg, iid):
    log('[misconfigured]')
    # a configuration error disables the plugin, not Orthanc: its routes answer 503 with the reason
    o.cxr_cfg = dict(base_cfg, Workers='two')
    log('[start C1] Orthanc up in %.1f s' % o.start('C1'))
    st, _, _ = o.http.req('GET', '/system')
    st2, j = o.http.json('GET', '/cxrvqa/status')
    check(st == 200 and st2 == 503 and j and 'CxrVqa.Workers must be an integer' in j.get('error', ''),
          'a bad CxrVqa section disables the plugin (503 with the reason), Orthanc serves (%d, %d)' % (st, st2))
    o.stop()
    # workers that cannot start: Orthanc runs, the routes answer 503
    o.cxr_cfg = dict(base_cfg, Model=os.path.join(o.tmp, 'missing.gguf'))
    log('[start C2] Orthanc up in %.1f s' % o.start('C2'))
    h = o.http
    st, _, _ = h.req('GET', '/system')
    check(st == 200, 'Orthanc serves although the workers cannot start')
    s = h.get('/cxrvqa/status')
    check(s['workers']['alive'] == 0 and 'model' in (s['workers'].get('error') or ''),
          'status names the start failure: %s' % (s['workers'].get('error') or '')[:120])
    st, j, _ = ask(h, iid, ASK_QUESTIONS[0])
    check(st == 503 and j and j.get('code') == 'unavailable', 'ask -> 503 unavailable (%s %s)' % (st, str(j)[:120]))
    st, j = h.json('POST', '/cxrvqa/studies/%s/screen' % h.get('/instances/%s/study' % iid)['ID'], b'')
    check(st == 503 and j and j.get('code') == 'unavailable', 'screen -> 503 unavailable (%s)' % st)
    o.stop()


# ------------------------------------------------------------------ main

VALGRIND = ['valgrind', '--tool=memcheck', '--leak-check=full', '--show-leak-kinds=definite,indirect,possible',
            '--errors-for-leak-kinds=definite,indirect', '--num-callers=40', '--child-silent-after-fork=yes',
            '--trace-children=no', '--xml=yes']


def valgrind_report(xml_paths, plugin):
    """Memcheck's XML reports for Orthanc: (errors whose stack passes through
    the plugin, every other error) as lists of one-line summaries. Leaks of
    Orthanc's own start-up state are listed but do not fail the test."""
    import xml.etree.ElementTree as ET
    ours, others = [], []
    name = os.path.basename(plugin)
    for path in xml_paths:
        try:
            root = ET.parse(path).getroot()
        except (ET.ParseError, OSError) as e:
            ours.append('unreadable valgrind report %s: %s' % (path, e))
            continue
        for err in root.iter('error'):
            kind = err.findtext('kind', '?')
            what = err.findtext('what') or err.findtext('xwhat/text') or ''
            frames = [(f.findtext('obj') or '', f.findtext('fn') or '?', f.findtext('file') or '',
                       f.findtext('line') or '') for f in err.iter('frame')]
            in_plugin = [f for f in frames if f[0].endswith(name)]
            where = in_plugin[0] if in_plugin else next((f for f in frames if 'vgpreload' not in f[0]), ('', '?', '', ''))
            line = '%s: %s (at %s %s:%s)' % (kind, what[:120], where[1], where[2], where[3])
            (ours if in_plugin else others).append(line)
    return ours, others


def worker_leak_logs(prefix_dir):
    """ASan/LSan reports the sanitizer-built workers wrote (one file per
    process that had something to report): (leak sizes of 'Direct leak of N
    byte(s)' lines, other error lines)."""
    import re
    leaks, other = [], []
    for n in sorted(os.listdir(prefix_dir)):
        if not n.startswith('asan-worker'):
            continue
        with open(os.path.join(prefix_dir, n), errors='replace') as f:
            text = f.read()
        for l in text.splitlines():
            m = re.search(r'(Direct|Indirect) leak of (\d+) byte', l)
            if m:
                leaks.append(int(m.group(2)) if m.group(1) == 'Direct' else -int(m.group(2)))
            elif 'ERROR:' in l and 'LeakSanitizer' not in l:
                other.append('%s: %s' % (n, l[:200]))
    return leaks, other


def first_requests(o, samples):
    """Upload the two sample studies, then the error routes and the first
    ask: (http, cr upload, dx upload, cr study UID, SR index)."""
    h = o.http
    up = {n: upload(h, b) for n, b in samples.items()}
    cr, dx = up['cr_mono1_jpegls.dcm'], up['dx_mono2_rle.dcm']
    cr_suid = study_uid_of(h, cr['ID'])
    idx = SrIndex(h)
    test_errors(o, cr['ID'], cr['ParentStudy'])
    test_ask(o, cr['ID'], cr['ParentStudy'], cr_suid)
    return h, cr, dx, cr_suid, idx


def broken_step(o, e):
    """An exception in a step: a failure, with its traceback and Orthanc's log."""
    import traceback
    traceback.print_exc()
    failures.append('exception: %s' % e)
    if o.logpath:
        log('--- Orthanc log tail ---\n' + o.log_tail(60))


def finish(tmp, keep, t_start, numbers=None):
    """After Orthanc has stopped: keep or remove tmp, print the summary;
    the exit status."""
    if keep or failures:
        log('kept %s' % tmp)
    else:
        shutil.rmtree(tmp, ignore_errors=True)
    log('total %.1f s' % (time.time() - t_start))
    if numbers:
        log('numbers: %s' % json.dumps({k: round(v, 1) for k, v in numbers.items()}))
    if failures:
        log('%d check(s) failed:\n  ' % len(failures) + '\n  '.join(failures))
        return 1
    log('all checks passed')
    return 0


def main_valgrind(args, model, samples):
    """Orthanc with the plugin under valgrind memcheck (the workers are
    separate processes, run natively or as the ASan + LSan build given by
    --worker-cxrvqa): start, the request mix of run A (asks, SR, audit,
    heatmap, errors, auto-screen, job, a worker killed mid-request, poisoned
    question and file, concurrent asks), a clean SIGTERM stop; then no memory
    error and no leak through the plugin, and no worker leak."""
    tmp = tempfile.mkdtemp(prefix='cxrvqa-orthanc-vg-')
    env = {'CXRVQA_TEST_POISON': '1',
           # workers built with ASan: leak check at exit, a report file per process;
           # the poison's SIGSEGV must kill the worker, not become an ASan report
           'ASAN_OPTIONS': 'detect_leaks=1:handle_segv=0:log_path=%s/asan-worker' % tmp}
    cfg = {'Workers': args.workers, 'AutoScreen': True, 'TimeoutSeconds': 20,
           'MemoryLimitMB': 0,  # no RLIMIT_AS: ASan workers reserve terabytes of address space
           'ScreeningQuestions': SCREEN_QUESTIONS, 'UidRoot': UID_ROOT}
    wrap = VALGRIND + ['--xml-file=%s/valgrind-%%p.xml' % tmp]
    o = Orthanc(tmp, os.path.abspath(args.plugin), os.path.abspath(args.worker_cxrvqa or args.cxrvqa), model, cfg,
                env, wrap=wrap)
    t_start = time.time()
    try:
        log('[start, under valgrind] Orthanc up in %.1f s (port %d, %s)' % (o.start('V'), o.port, tmp))
        o.status = test_auth_status(o)
        h, cr, dx, cr_suid, idx = first_requests(o, samples)
        sops = [sop_uid(h, cr['ID']), sop_uid(h, dx['ID'])]
        test_autoscreen(o, idx, [cr['ParentStudy'], dx['ParentStudy']], sops, 'sample studies')
        test_job(o, idx, cr['ParentStudy'], sops[:1], fresh=False)
        test_kill_mid_request(o, cr['ID'])
        test_poison(o, cr['ID'], cr_suid)
        test_poison_file(o, idx, cr['ID'])
        test_concurrency(o, [cr['ID'], dx['ID']], n=20)
        # the control: one ask whose worker leaks a 4242-byte block on purpose
        # (test hook), to show that a worker's leak is seen
        st, _, _ = ask(h, cr['ID'], '__leak__ Is there an effusion?')
        check(st == 200, 'control ask with a deliberate 4242-byte worker leak -> 200 (%d)' % st)
        log('[stop]')
        took, left = o.stop(wait=300)
        check(not left, 'Orthanc stopped on SIGTERM in %.1f s (valgrind leak check included), workers gone (%s)'
              % (took, left))
        xmls = [os.path.join(tmp, n) for n in os.listdir(tmp) if n.startswith('valgrind-') and n.endswith('.xml')]
        ours, others = valgrind_report(xmls, args.plugin)
        check(xmls, 'valgrind wrote its report (%d file(s))' % len(xmls))
        check(not ours, 'valgrind: no memory error and no leak through the plugin (%d): %s' % (len(ours), ours[:8]))
        log('  info valgrind: %d report(s) outside the plugin (Orthanc, DCMTK, libc start-up state)%s'
            % (len(others), ''.join('\n         ' + x for x in others[:12])))
        if args.worker_cxrvqa:
            leaks, other = worker_leak_logs(tmp)
            check(leaks == [4242], 'workers (ASan + LSan at exit): the control leak and no other leak (%s)' % leaks)
            check(not other, 'workers: no other ASan/UBSan report: %s' % other[:4])
    except Exception as e:
        broken_step(o, e)
    finally:  # also on Ctrl-C
        if o.proc:
            o.stop(wait=300)
    return finish(tmp, args.keep, t_start)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--plugin', required=True)
    ap.add_argument('--cxrvqa', required=True)
    ap.add_argument('--sample-data', required=True)
    ap.add_argument('--model', default=None, help='default: model/cxrvqa-cxr-cnn.gguf next to sample_data')
    ap.add_argument('--workers', type=int, default=2)
    ap.add_argument('--keep', action='store_true', help='keep the temporary directory (logs, storage)')
    ap.add_argument('--preload', default=None, help='LD_PRELOAD for Orthanc (e.g. libasan.so.8 for an ASan plugin)')
    ap.add_argument('--valgrind', action='store_true',
                    help='leak-check run: Orthanc and the (non-sanitized) plugin under valgrind memcheck')
    ap.add_argument('--worker-cxrvqa', default=None,
                    help='with --valgrind: the workers\' binary, e.g. the ASan build (LSan at exit)')
    args = ap.parse_args()

    if not os.path.exists(ORTHANC):
        print('SKIP: %s is not installed (Debian package orthanc)' % ORTHANC)
        return 77
    model = args.model or os.path.join(os.path.dirname(os.path.abspath(args.sample_data)), 'model',
                                       'cxrvqa-cxr-cnn.gguf')
    for p in (args.plugin, args.cxrvqa, model):
        if not os.path.exists(p):
            print('FAIL: %s does not exist' % p)
            return 1
    samples = {n: open(os.path.join(args.sample_data, n), 'rb').read()
               for n in ('cr_mono1_jpegls.dcm', 'dx_mono2_rle.dcm')}
    if args.valgrind:
        if not shutil.which('valgrind'):
            print('SKIP: valgrind is not installed (Debian package valgrind)')
            return 77
        return main_valgrind(args, model, samples)

    tmp = tempfile.mkdtemp(prefix='cxrvqa-orthanc-')
    env = {'CXRVQA_TEST_POISON': '1'}
    anchors = os.path.join(tmp, 'anchors.log')
    base_cfg = {'Workers': args.workers, 'AutoScreen': True, 'TimeoutSeconds': 8, 'MemoryLimitMB': 4096,
                'ScreeningQuestions': SCREEN_QUESTIONS, 'UidRoot': UID_ROOT, 'AuditAnchorLog': anchors}
    o = Orthanc(tmp, os.path.abspath(args.plugin), os.path.abspath(args.cxrvqa), model, base_cfg, env, args.preload)
    t_start = time.time()
    numbers = {}
    try:
        test_exports(args.plugin)
        log('[start A] Orthanc up in %.1f s (port %d, %s)' % (o.start('A'), o.port, tmp))
        o.status = test_auth_status(o)
        h, cr, dx, cr_suid, idx = first_requests(o, samples)

        sops_a = [sop_uid(h, cr['ID']), sop_uid(h, dx['ID'])]
        studies_a = [cr['ParentStudy'], dx['ParentStudy']]
        counts = test_autoscreen(o, idx, studies_a, sops_a, 'sample studies')
        log('[job]')
        test_job(o, idx, cr['ParentStudy'], sops_a[:1], fresh=False)
        # a fresh study: the job races the auto-screen of the same instance
        # a fresh study of three images: the job races the auto-screen of them
        race = copy_instance(h, cr['ID'], 3, 'job race', {'StudyInstanceUID': new_uid()})
        s3 = race[0][0]
        sops_3 = [sop_uid(h, i) for _, i in race]
        test_job(o, idx, s3, sops_3, fresh=True)
        test_autoscreen(o, idx, [s3], sops_3, 'copied study')
        test_not_eligible(o, idx, cr['ID'])

        test_kill_mid_request(o, cr['ID'])
        test_poison(o, cr['ID'], cr_suid)
        test_poison_file(o, idx, cr['ID'])
        idx.refresh(studies_a + [s3])
        r = test_concurrency(o, [cr['ID'], dx['ID']])
        if r:
            numbers['p50_ms'], numbers['p99_ms'], numbers['wall_s'] = r
        g = test_growth(o, [cr['ID'], dx['ID']])
        numbers['rss_growth_orthanc_pct'], numbers['rss_growth_workers_pct'] = 100 * g[0], 100 * g[1]
        test_explorer(o)
        # the audit head, anchored by the plugin a few seconds after start (AuditAnchorLog); the store
        # extends it (cxrvqa audit verify --anchors)
        line = open(anchors).read() if os.path.exists(anchors) else ''
        check(line.startswith('cxrvqa-anchor v1 ') and stat.S_IMODE(os.stat(anchors).st_mode) == 0o600,
              'the plugin anchored the audit head: %s' % line.strip()[:100])
        p = subprocess.run([os.path.abspath(args.cxrvqa), 'audit', 'verify', '--db', os.path.join(tmp, 'audit.sqlite'),
                            '--anchors', anchors], capture_output=True, text=True)
        check(p.returncode == 0 and 'extends all' in p.stdout, 'the store extends its anchors: %s' % p.stdout.strip()[:100])

        idx.refresh(studies_a + [s3])
        before = idx.screen_counts(sops_a + sops_3)
        check(all(v == 1 for v in before.values()),
              'each (instance, screening question) has exactly one SR so far (%d pairs, counts %s)'
              % (len(before), sorted(set(before.values()))))
        log('[restart]')
        took, left = o.stop()
        check(took < 25 and not left, 'Orthanc stops on SIGTERM in %.1f s, workers gone (%s)' % (took, left))

        # B1: screening wedged on a hanging question; queue new instances; kill Orthanc
        o.cxr_cfg = dict(base_cfg, Workers=1, TimeoutSeconds=300, ScreeningQuestions=['__hang__ wedge the queue'])
        log('[start B1] Orthanc up in %.1f s' % o.start('B1'))
        h = o.http
        copies = copy_instance(h, dx['ID'], 3, 'restart')
        new_studies = [s for s, _ in copies]
        new_sops = [sop_uid(h, i) for _, i in copies]
        qlen = wait_for(lambda: h.get('/cxrvqa/status')['queue']['length'] >= 3 and
                        h.get('/cxrvqa/status')['workers']['busy'] == 1, 20)
        s = h.get('/cxrvqa/status')
        check(bool(qlen), 'B1: %d instances queued, screening wedged (busy %d)' % (s['queue']['length'], s['workers']['busy']))
        o.stop(hard=True)
        # B2: normal configuration again: the queue is drained after the restart
        o.cxr_cfg = dict(base_cfg)
        log('[start B2] Orthanc up in %.1f s' % o.start('B2'))
        h = o.http
        idx.http = h
        counts = test_autoscreen(o, idx, new_studies, new_sops, 'queued before the crash')
        wait_for(lambda: h.get('/cxrvqa/status')['queue']['length'] == 0, 30)
        check(h.get('/cxrvqa/status')['queue']['length'] == 0, 'B2: the queue is empty')
        for sid in new_studies[:1]:
            test_job(o, idx, sid, [sop_uid(h, copies[0][1])], fresh=False)
        time.sleep(1.0)
        idx.refresh(studies_a + [s3] + new_studies)
        after = idx.screen_counts(sops_a + sops_3 + new_sops)
        twice = {k: v for k, v in after.items() if v != 1}
        check(not twice, 'nothing screened twice or missed: one SR per (instance, question) over %d pairs %s'
              % (len(after), dict(list(twice.items())[:6]) or ''))
        o.stop()
        test_misconfigured(o, base_cfg, cr['ID'])
    except Exception as e:
        broken_step(o, e)
    finally:  # also on Ctrl-C
        if o.proc:
            o.stop()
    return finish(tmp, args.keep, t_start, numbers)


if __name__ == '__main__':
    sys.exit(main())
