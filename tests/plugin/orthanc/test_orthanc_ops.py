#!/usr/bin/python3
"""test_orthanc_ops.py — what an operator sees of the Orthanc plugin, end to
end with a real Orthanc (/usr/sbin/Orthanc) on 127.0.0.1 and real `cxrvqa
worker` processes (the helpers of test_orthanc.py):

  config       a misspelled key (AutoScren, Worker, autoscreen) or a type error
               (Workers: "two") disables the plugin: Orthanc still serves
               /system, every /cxrvqa route answers 503 "disabled" with the
               "did you mean" message, Orthanc's log has the error, and
               /cxrvqa/metrics says cxrvqa_enabled 0
  log lines    at Orthanc's default verbosity: one line per request for an ask
               (W, outcome=ok), a refused question and a worker crash (W,
               outcome=refused / worker_failure), with instance, status,
               latency and user; a user name cannot forge a line
  metrics      GET /cxrvqa/metrics parsed as Prometheus text 0.0.4; the ask
               counters move by exactly one per outcome; the histogram is
               cumulative and its +Inf bucket equals its count; crashes and
               restarts counted; the queue gauge present
  heatmap      a synonym (effusion, Pleural_Effusion) answers as the canonical
               name does; an unknown finding is a 400 "unknown-finding" with a
               refusal audit row and no worker call
  audit        by Orthanc study ID and by Study Instance UID (same rows); all
               studies, newest first, with a limit; 400 / 404 for bad studies
  file modes   the queue and audit databases (and their -wal/-shm) and the
               anchor log are 0600 although Orthanc runs with umask 0
  RequestLog   "off": a successful ask leaves no line, a worker crash still does

Exit 0 all passed, 1 a check failed, 77 /usr/sbin/Orthanc not installed.
"""
import argparse
import os
import re
import shutil
import stat
import sys
import tempfile
import time

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_orthanc as T  # noqa: E402  (Orthanc, Http, upload, check, ...)

check, log = T.check, T.log

METRIC_LINE = re.compile(r'^([a-zA-Z_:][a-zA-Z0-9_:]*)(\{(.*)\})? (\S+)$')
LABEL = re.compile(r'([a-zA-Z_][a-zA-Z0-9_]*)="((?:[^"\\]|\\.)*)"')


def parse_metrics(text):
    """Prometheus text format 0.0.4 -> ({(name, frozenset(labels)): value}, {name: type}, errors)."""
    samples, types, errors = {}, {}, []
    for ln in text.splitlines():
        if not ln:
            continue
        if ln.startswith('# TYPE '):
            parts = ln.split()
            if len(parts) != 4 or parts[3] not in ('counter', 'gauge', 'histogram', 'summary', 'untyped'):
                errors.append('bad TYPE line: ' + ln)
            else:
                types[parts[2]] = parts[3]
            continue
        if ln.startswith('#'):
            continue
        m = METRIC_LINE.match(ln)
        if not m:
            errors.append('bad sample line: ' + ln)
            continue
        name, labels = m.group(1), m.group(3) or ''
        lab = dict(LABEL.findall(labels))
        if labels and ','.join('%s="%s"' % kv for kv in LABEL.findall(labels)) != labels:
            errors.append('bad labels: ' + ln)
        try:
            v = float(m.group(4))
        except ValueError:
            errors.append('bad value: ' + ln)
            continue
        base = re.sub(r'_(bucket|sum|count)$', '', name)
        if name not in types and base not in types:
            errors.append('sample without a TYPE: ' + ln)
        samples[(name, frozenset(lab.items()))] = v
    return samples, types, errors


def metric(samples, name, **labels):
    return samples.get((name, frozenset(labels.items())), 0.0)


def scrape(h):
    st, hd, body = h.req('GET', '/cxrvqa/metrics')
    ctype = {k.lower(): v for k, v in hd.items()}.get('content-type', '')
    return st, ctype, body.decode('utf-8', 'replace')


def log_lines(o, since):
    """The log's lines from byte offset since (log_size) on."""
    with open(o.logpath, 'rb') as f:
        f.seek(since)
        return f.read().decode('utf-8', errors='replace').splitlines()


def log_size(o):
    return os.path.getsize(o.logpath)


def test_config(tmp, args, model):
    log('[config: unknown keys and type errors disable the plugin, Orthanc serves]')
    cases = [
        ({'AutoScren': True}, 'unknown key CxrVqa.AutoScren (did you mean "AutoScreen"?)'),
        ({'Worker': 2}, 'unknown key CxrVqa.Worker (did you mean "Workers"?)'),
        ({'autoscreen': True}, 'unknown key CxrVqa.autoscreen (did you mean "AutoScreen"?)'),
        ({'Colour': 'blue'}, 'unknown key CxrVqa.Colour (known keys: Model AuditDatabase Workers'),
        ({'Workers': 'two'}, 'CxrVqa.Workers must be an integer in [1, 256]'),
        ({'AutoScreen': 'yes'}, 'CxrVqa.AutoScreen must be true or false'),
    ]
    for i, (bad, msg) in enumerate(cases):
        d = os.path.join(tmp, 'cfg%d' % i)
        os.makedirs(d)
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, dict({'Workers': 1}, **bad))
        try:
            o.start('M%d' % i)
            h = o.http
            st, _, _ = h.req('GET', '/system')
            check(st == 200, '%s: Orthanc is up and serves /system (%d)' % (bad, st))
            st, j = h.json('GET', '/cxrvqa/status')
            check(st == 503 and j and j.get('code') == 'disabled' and msg in j.get('error', ''),
                  '%s: /cxrvqa/status -> 503 disabled with "%s" (%d %s)' % (bad, msg, st, str(j)[:200]))
            st, j = h.json('POST', '/cxrvqa/instances/x/ask', {'question': 'Is there an effusion?'})
            check(st == 503 and j and j.get('code') == 'disabled', '%s: ask -> 503 disabled (%d)' % (bad, st))
            st, ctype, text = scrape(h)
            check(st == 200 and 'cxrvqa_enabled{reason="' in text and re.search(r'^cxrvqa_enabled\{.*\} 0$', text, re.M),
                  '%s: metrics still answer, cxrvqa_enabled 0 (%d)' % (bad, st))
            text = o.log_tail(200)
            line = [l for l in text.splitlines() if 'cxrvqa: disabled: bad configuration' in l]
            check(line and line[0].startswith('E') and msg in line[0],
                  '%s: Orthanc\'s log has the error line: %s' % (bad, (line or ['none'])[0][-160:]))
            check(not T.children_of(o.proc.pid), '%s: no worker started' % bad)
        except RuntimeError as e:
            check(False, '%s: Orthanc did not come up: %s' % (bad, str(e)[-400:]))
        finally:
            if o.proc:
                o.stop()


def test_requests(o, iid, study_id, suid):
    h = o.http
    log('[log lines and metrics]')
    st, ctype, text = scrape(h)
    before, types, errors = parse_metrics(text)
    check(st == 200 and ctype.startswith('text/plain') and 'version=0.0.4' in ctype,
          'metrics: 200 %s' % ctype)
    check(not errors, 'metrics parse as Prometheus text (%d samples, %d errors %s)' % (len(before), len(errors), errors[:3]))
    for name, kind in (('cxrvqa_requests_total', 'counter'), ('cxrvqa_request_duration_seconds', 'histogram'),
                       ('cxrvqa_worker_restarts_total', 'counter'), ('cxrvqa_worker_crashes_total', 'counter'),
                       ('cxrvqa_queue_length', 'gauge'), ('cxrvqa_workers_alive', 'gauge')):
        check(types.get(name) == kind, 'metrics: %s is a %s (%s)' % (name, kind, types.get(name)))
    check(metric(before, 'cxrvqa_workers_alive') == 1 and metric(before, 'cxrvqa_enabled') == 1,
          'metrics: 1 worker alive, enabled')

    mark = log_size(o)
    st, j, _ = T.ask(h, iid, 'Is there an effusion?', user='dr-ops')
    check(st == 200 and j and not j.get('refused'), 'ask -> 200 answered (%d)' % st)
    st, j, _ = T.ask(h, iid, 'What dose of furosemide should I give?', user='dr-ops')
    check(st == 200 and j and j.get('refused'), 'treatment question -> 200 refused (%d %s)' % (st, j and j.get('reason_code')))
    restarts0 = h.get('/cxrvqa/status')['workers']['restarts']
    st, j, _ = T.ask(h, iid, '__crash__ Is there an effusion?', user='dr-ops')
    check(st == 502 and j and j.get('code') == 'worker-crashed', '__crash__ -> 502 worker-crashed (%d)' % st)
    T.wait_for(lambda: h.get('/cxrvqa/status')['workers']['restarts'] > restarts0 and
               h.get('/cxrvqa/status')['workers']['alive'] == 1, 20)
    T.wait_for(lambda: len([l for l in log_lines(o, mark) if 'cxrvqa: request route=ask' in l]) >= 3, 10)
    lines = [l for l in log_lines(o, mark) if 'cxrvqa: request route=ask' in l]
    want = [('ok', 'W', '200'), ('refused', 'W', '200'), ('worker_failure', 'W', '502')]
    check(len(lines) == 3, 'one log line per ask: %d lines' % len(lines))
    for (outcome, level, status), l in zip(want, lines):
        ok = (l.startswith(level) and ('instance="%s"' % iid) in l and ('status=%s' % status) in l and
              ('outcome=%s' % outcome) in l and 'user="dr-ops (via %s)"' % T.USER in l and re.search(r' ms=\d+', l))
        check(ok, 'log line %s: %s' % (outcome, l[l.find('cxrvqa:'):][:220]))
    if len(lines) == 3:
        check('code="worker-crashed"' in lines[2], 'the crash line names the code')

    st, ctype, text = scrape(h)
    after, _, errors = parse_metrics(text)
    check(not errors, 'metrics parse after the asks (%s)' % errors[:3])
    for outcome in ('ok', 'refused', 'worker_failure'):
        d = metric(after, 'cxrvqa_requests_total', route='ask', outcome=outcome) - \
            metric(before, 'cxrvqa_requests_total', route='ask', outcome=outcome)
        check(d == 1, 'cxrvqa_requests_total{route="ask",outcome="%s"} moved by 1 (%g)' % (outcome, d))
    cnt = lambda s: metric(s, 'cxrvqa_request_duration_seconds_count', route='ask')
    check(cnt(after) - cnt(before) == 3, 'the ask latency histogram counted 3 (%g)' % (cnt(after) - cnt(before)))
    buckets = sorted(((float(dict(k[1])['le']), v) for k, v in after.items()
                      if k[0] == 'cxrvqa_request_duration_seconds_bucket' and dict(k[1]).get('route') == 'ask'),
                     key=lambda x: x[0])
    check(len(buckets) > 2 and buckets[-1][0] == float('inf') and buckets[-1][1] == cnt(after) and
          all(a[1] <= b[1] for a, b in zip(buckets, buckets[1:])),
          'ask histogram: cumulative buckets, +Inf = count (%s)' % [(b[0], b[1]) for b in buckets[-3:]])
    s = metric(after, 'cxrvqa_request_duration_seconds_sum', route='ask') - \
        metric(before, 'cxrvqa_request_duration_seconds_sum', route='ask')
    check(0 < s < 120, 'ask latency sum moved by %.3f s' % s)
    check(metric(after, 'cxrvqa_worker_crashes_total') - metric(before, 'cxrvqa_worker_crashes_total') == 1,
          'cxrvqa_worker_crashes_total moved by 1')
    check(metric(after, 'cxrvqa_worker_restarts_total') > metric(before, 'cxrvqa_worker_restarts_total'),
          'cxrvqa_worker_restarts_total moved (%g)' % metric(after, 'cxrvqa_worker_restarts_total'))
    check(('cxrvqa_queue_length', frozenset()) in after, 'cxrvqa_queue_length present (%g)' % metric(after, 'cxrvqa_queue_length'))

    # a user name cannot forge a log line: quotes and control bytes are escaped
    mark = log_size(o)
    st, j, _ = T.ask(h, iid, 'What dose of furosemide should I give?', user='dr "q"\nW1207 00:00:00.000000 forged] x')
    # Orthanc's log reaches the file when its stream is flushed, not when the answer is sent
    T.wait_for(lambda: any('cxrvqa: request route=ask' in l for l in log_lines(o, mark)), 10)
    lines = log_lines(o, mark)
    mine = [l for l in lines if 'cxrvqa: request route=ask' in l]
    check(st == 200 and len(mine) == 1 and 'user="dr \\"q\\"\\x0aW1207 00:00:00.000000 forged] x (via ' in mine[0] and
          not [l for l in lines if l.startswith('W1207 00:00:00.000000 forged')],
          'a user name with a quote and a newline stays inside its quoted field: %s' % (mine or [''])[0][-120:])

    log('[heatmap: synonyms, unknown finding]')
    res = {}
    for f in ('pleural_effusion', 'effusion', 'Pleural_Effusion'):
        st, hd, body = h.req('GET', '/cxrvqa/instances/%s/heatmap.png?finding=%s' % (iid, f))
        res[f] = (st, body[:8] == b'\x89PNG\r\n\x1a\n' if st == 200 else body[:120])
    check(res['pleural_effusion'][0] in (200, 404) and res['effusion'] == res['pleural_effusion'] and
          res['Pleural_Effusion'] == res['pleural_effusion'],
          'heatmap: effusion and Pleural_Effusion answer as pleural_effusion does (%s)' % res)
    # Orthanc flushes its log when it will: let those three lines land before taking the mark, and
    # pick this request's line by its user below, so that a late line of theirs is never taken for it
    T.wait_for(lambda: len([l for l in log_lines(o, 0) if 'route=heatmap' in l]) >= 3, 10)
    mark = log_size(o)
    st, j = h.json('GET', '/cxrvqa/instances/%s/heatmap.png?finding=bogus_thing&user=dr-ops' % iid)
    check(st == 400 and j and j.get('code') == 'unknown-finding' and 'bogus_thing' in j.get('error', ''),
          'heatmap of an unknown finding -> 400 unknown-finding (%d %s)' % (st, str(j)[:160]))
    st, rows = h.json('GET', '/cxrvqa/audit?study=%s&limit=1000' % suid)
    mine = [r for r in rows or [] if 'bogus' in str(r.get('question', ''))]
    check(len(mine) == 1 and mine[0].get('event_type') == 'refusal' and mine[0].get('outcome') == 4 and
          mine[0].get('question') == 'heatmap finding=bogus_thing' and mine[0].get('answer') == 'refused' and
          mine[0].get('user') == 'dr-ops (via %s)' % T.USER,
          'one refusal audit row for it, as asked: %s' % [{k: r.get(k) for k in ('event_type', 'outcome', 'question', 'answer')} for r in mine])
    heat_lines = lambda: [l for l in log_lines(o, mark) if 'route=heatmap' in l and 'user="dr-ops' in l]
    T.wait_for(heat_lines, 10)
    lines = heat_lines()
    check(len(lines) == 1 and lines[0].startswith('W') and 'status=400 outcome=refused' in lines[0],
          'its log line is a warning, outcome=refused: %s' % (lines or [''])[0][-160:])
    st, j = h.json('GET', '/cxrvqa/instances/00000000-00000000-00000000-00000000-00000000/heatmap.png?finding=bogus')
    check(st == 404, 'unknown finding on an unknown instance -> 404 (%d)' % st)

    log('[audit route: Orthanc or DICOM study ID, recent rows]')
    st1, by_uid = h.json('GET', '/cxrvqa/audit?study=%s&limit=1000' % suid)
    st2, by_id = h.json('GET', '/cxrvqa/audit?study=%s&limit=1000' % study_id)
    check(st1 == 200 and st2 == 200 and by_uid and by_uid == by_id,
          'audit by Orthanc study ID = by Study Instance UID (%d rows)' % len(by_uid or []))
    seqs = [r['seq'] for r in by_uid or []]
    check(seqs == sorted(seqs, reverse=True), 'rows newest first (seq %s)' % seqs[:6])
    st, recent = h.json('GET', '/cxrvqa/audit?limit=2')
    check(st == 200 and len(recent or []) == 2 and recent[0]['seq'] == max(seqs) and recent[1]['seq'] < recent[0]['seq'],
          'audit without a study: the 2 newest rows of all studies (%s)' % [r.get('seq') for r in recent or []])
    st, j = h.json('GET', '/cxrvqa/audit?study=not-a-uid')
    check(st == 400 and j and 'Orthanc study ID' in j.get('error', ''), 'audit?study=not-a-uid -> 400 (%d)' % st)
    st, j = h.json('GET', '/cxrvqa/audit?study=0123abcd-0123abcd-0123abcd-0123abcd-0123abcd')
    check(st == 404 and j and j.get('code') == 'not-found', 'audit of an unknown Orthanc study ID -> 404 (%d)' % st)
    st, j = h.json('GET', '/cxrvqa/audit?since=yesterday')
    check(st == 400, 'audit?since=yesterday -> 400 (%d %s)' % (st, str(j)[:120]))
    st, j = h.json('GET', '/cxrvqa/audit?since=2000-01-01&limit=1')
    check(st == 200 and len(j or []) == 1, 'audit?since=2000-01-01&limit=1 -> 1 row (%d)' % st)


def test_modes(o, tmp, anchors):
    log('[file modes]')
    files = sorted(n for n in os.listdir(tmp) if n.startswith(('queue.sqlite', 'audit.sqlite')))
    check(any(n.endswith('-wal') for n in files) and 'queue.sqlite' in files and 'audit.sqlite' in files,
          'the plugin created its files: %s' % files)
    T.wait_for(lambda: os.path.exists(anchors), 15)
    files.append(os.path.basename(anchors))
    modes = {n: oct(stat.S_IMODE(os.stat(os.path.join(tmp, n)).st_mode)) for n in files if os.path.exists(os.path.join(tmp, n))}
    check(len(modes) == len(files) and all(m == '0o600' for m in modes.values()),
          'every file the plugin created is 0600 although Orthanc runs with umask 0: %s' % modes)


def test_request_log_off(o, iid):
    log('[RequestLog "off": successes unlogged, failures still warnings]')
    o.cxr_cfg = dict(o.cxr_cfg, RequestLog='off')
    log('[restart] Orthanc up in %.1f s' % o.start('B'))
    h = o.http
    st1, _, _ = T.ask(h, iid, 'Is there an effusion?')
    st2, _, _ = T.ask(h, iid, '__crash__ Is there an effusion?')
    T.wait_for(lambda: any('cxrvqa: request' in l for l in log_lines(o, 0)), 10)
    lines = [l for l in log_lines(o, 0) if 'cxrvqa: request' in l]
    check(st1 == 200 and st2 == 502 and len(lines) == 1 and 'outcome=worker_failure' in lines[0] and lines[0].startswith('W'),
          'only the crash is logged (%d, %d: %s)' % (st1, st2, [l[l.find('cxrvqa:'):][:80] for l in lines]))
    st, j = h.json('GET', '/cxrvqa/status')
    check(st == 200, 'RequestLog "off" is a valid value (%d)' % st)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--plugin', required=True)
    ap.add_argument('--cxrvqa', required=True)
    ap.add_argument('--sample-data', required=True)
    ap.add_argument('--model', default=None)
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()
    if not os.path.exists(T.ORTHANC):
        print('SKIP: %s is not installed (Debian package orthanc)' % T.ORTHANC)
        return 77
    args.plugin, args.cxrvqa = os.path.abspath(args.plugin), os.path.abspath(args.cxrvqa)
    model = args.model or os.path.join(os.path.dirname(os.path.abspath(args.sample_data)), 'model', 'cxrvqa-cxr-cnn.gguf')
    tmp = tempfile.mkdtemp(prefix='cxrvqa-orthanc-ops-')
    t_start = time.time()
    o = None
    try:
        test_config(tmp, args, model)
        d = os.path.join(tmp, 'main')
        os.makedirs(d)
        anchors = os.path.join(d, 'anchors.log')
        cfg = {'Workers': 1, 'AutoScreen': True, 'TimeoutSeconds': 20, 'AuditAnchorLog': anchors,
               'ScreeningQuestions': ['Is there a pleural effusion?'], 'UidRoot': T.UID_ROOT}
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, cfg, {'CXRVQA_TEST_POISON': '1'})
        old = os.umask(0)  # Orthanc and its workers inherit it: the plugin's files must be 0600 anyway
        try:
            log('[start] Orthanc up in %.1f s (port %d)' % (o.start('A'), o.port))
        finally:
            os.umask(old)
        h = o.http
        up = T.upload(h, open(os.path.join(args.sample_data, 'cr_mono1_jpegls.dcm'), 'rb').read())
        iid, study_id = up['ID'], up['ParentStudy']
        suid = T.study_uid_of(h, iid)
        T.wait_for(lambda: h.get('/cxrvqa/status')['queue']['length'] == 0 and
                   h.get('/cxrvqa/status')['counters']['screened'] >= 1, 60)
        test_requests(o, iid, study_id, suid)
        test_modes(o, d, anchors)
        o.stop()
        test_request_log_off(o, iid)
    except Exception as e:
        T.broken_step(o or T.Orthanc(tmp, '', '', '', {}), e)
    finally:
        if o and o.proc:
            o.stop()
    return T.finish(tmp, args.keep, t_start)


if __name__ == '__main__':
    sys.exit(main())
