#!/usr/bin/python3
"""test_orthanc_keyed.py — the Orthanc plugin's keyed audit chain (CxrVqa.AuditKeyFile), end to end
with a real Orthanc on 127.0.0.1 and real `cxrvqa worker` processes (helpers of test_orthanc.py):

  config   AuditKeyFile readable by others (0644), too short, missing, or misspelled
           (AuditKeyfile: "did you mean") disables the plugin with that reason; Orthanc serves
  keyed    with a 0600 key: /cxrvqa/status shows its key id (computed here from the key); an ask and
           a refused question (the plugin's own row) are audited; the store is keyed with that id,
           `audit verify --key` passes, without the key exits 4, with another key exits 1
  rotate   README's key change: Orthanc stopped, `audit rotate-key` to a new key; started again
           still configured with the old key, an ask is refused (not answered) and the reason says the
           key was retired; with AuditKeyFile set to the new key it answers; `audit verify` with both
           keys passes, every row checked under the key it was written with

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

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_orthanc as T  # noqa: E402

check, log = T.check, T.log


def write_key(path, data, mode):
    fd = os.open(path, os.O_WRONLY | os.O_CREAT | os.O_EXCL, 0o600)
    with os.fdopen(fd, 'wb') as f:
        f.write(data)
    os.chmod(path, mode)
    return path


def json_text(j):
    return json.dumps(j) if j is not None else ''


def disabled_with(tmp, args, model, tag, cfg, msg):
    d = os.path.join(tmp, 'cfg-' + tag)
    os.makedirs(d)
    o = T.Orthanc(d, args.plugin, args.cxrvqa, model, dict({'Workers': 1}, **cfg))
    try:
        o.start(tag)
        st, _, _ = o.http.req('GET', '/system')
        st2, j = o.http.json('GET', '/cxrvqa/status')
        check(st == 200 and st2 == 503 and j and j.get('code') == 'disabled' and msg in j.get('error', ''),
              '%s: plugin disabled with "%s", Orthanc serves (%d, %d %s)' % (tag, msg, st, st2, str(j)[:220]))
    except RuntimeError as e:
        check(False, '%s: Orthanc did not come up: %s' % (tag, str(e)[-300:]))
    finally:
        if o.proc:
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
    tmp = tempfile.mkdtemp(prefix='cxrvqa-orthanc-keyed-')
    t_start = time.time()
    key = os.urandom(32)
    key_id = hashlib.sha256(key).hexdigest()[:16]
    good = write_key(os.path.join(tmp, 'chain.key'), key, 0o600)
    loose = write_key(os.path.join(tmp, 'loose.key'), key, 0o644)
    short = write_key(os.path.join(tmp, 'short.key'), key[:20], 0o600)
    other = write_key(os.path.join(tmp, 'other.key'), os.urandom(32), 0o600)
    o = None
    try:
        log('[config: a bad AuditKeyFile disables the plugin with its reason]')
        disabled_with(tmp, args, model, 'loose', {'AuditKeyFile': loose}, '0600 or stricter')
        disabled_with(tmp, args, model, 'short', {'AuditKeyFile': short}, '20 bytes: at least 32 are required')
        disabled_with(tmp, args, model, 'missing', {'AuditKeyFile': os.path.join(tmp, 'none.key')},
                      'CxrVqa.AuditKeyFile: ')
        disabled_with(tmp, args, model, 'typo', {'AuditKeyfile': good}, 'did you mean "AuditKeyFile"?')

        log('[keyed: the workers and the plugin write the keyed chain]')
        d = os.path.join(tmp, 'main')
        os.makedirs(d)
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, {'Workers': 1, 'AuditKeyFile': good})
        log('Orthanc up in %.1f s' % o.start('K'))
        h = o.http
        st, j = h.json('GET', '/cxrvqa/status')
        check(st == 200 and j and j.get('audit_key_id') == key_id, 'status shows the key id %s (%d %s)'
              % (key_id, st, str(j and j.get('audit_key_id'))))
        up = T.upload(h, open(os.path.join(args.sample_data, 'cr_mono1_jpegls.dcm'), 'rb').read())
        st, j = h.json('POST', '/cxrvqa/instances/%s/ask' % up['ID'], {'question': 'Is there a pleural effusion?'})
        check(st == 200 and j and j.get('answer') in ('yes', 'no', 'uncertain', 'not-assessed'),
              'keyed ask answered (%d %s)' % (st, str(j)[:120]))
        st, j = h.json('GET', '/cxrvqa/instances/%s/heatmap.png?finding=bogus_thing' % up['ID'])
        check(st == 400, 'an unknown heatmap finding: 400, audited by the plugin itself (%d)' % st)
        o.stop()
        db = os.path.join(d, 'audit.sqlite')
        c = sqlite3.connect('file:%s?mode=ro' % db, uri=True)
        kid = c.execute("SELECT value FROM meta WHERE key = 'chain_key_id'").fetchone()
        types = [r[0] for r in c.execute('SELECT event_type FROM audit ORDER BY seq')]
        c.close()
        check(kid and kid[0] == key_id and types[:1] == ['audit-keyed'] and len(types) >= 3,
              'the store is keyed with the key id, rows: %s' % types)

        def verify(*extra):
            return subprocess.run([args.cxrvqa, 'audit', 'verify', '--db', db, *extra], capture_output=True, text=True)
        p = verify('--key', good)
        check(p.returncode == 0 and key_id in p.stdout, 'audit verify --key: intact (%d %s)' % (p.returncode, p.stderr[-160:]))
        p = verify()
        check(p.returncode == 4, 'audit verify without the key: exit 4 (%d)' % p.returncode)
        p = verify('--key', other)
        check(p.returncode == 1, 'audit verify with another key: exit 1 (%d)' % p.returncode)

        log('[rotate: the key change of README "Change the audit key"]')
        nxt = write_key(os.path.join(tmp, 'next.key'), os.urandom(32), 0o600)
        p = subprocess.run([args.cxrvqa, 'audit', 'rotate-key', '--db', db, '--key', good, '--new-key', nxt],
                           capture_output=True, text=True)
        check(p.returncode == 0, 'audit rotate-key with Orthanc stopped (%d %s)' % (p.returncode, p.stderr[-160:]))
        n_rows = len(types) + 1
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, {'Workers': 1, 'AuditKeyFile': good})
        o.start('K-old')
        st, j = o.http.json('POST', '/cxrvqa/instances/%s/ask' % up['ID'], {'question': 'Is there pneumonia?'})
        body = json_text(j)
        check(st >= 400 and 'answer' not in (j or {}) and 'retired' in body,
              'still configured with the retired key: the ask is refused, not answered, and the reason says the key '
              'was retired (%d %s)' % (st, body[:160]))
        o.stop()
        o = T.Orthanc(d, args.plugin, args.cxrvqa, model, {'Workers': 1, 'AuditKeyFile': nxt})
        o.start('K-new')
        st, j = o.http.json('POST', '/cxrvqa/instances/%s/ask' % up['ID'], {'question': 'Is there pneumonia?'})
        check(st == 200 and j and j.get('answer') in ('yes', 'no', 'uncertain', 'not-assessed'),
              'AuditKeyFile set to the new key: answered (%d)' % st)
        o.stop()
        p = verify('--key', good, '--key', nxt)
        c = sqlite3.connect('file:%s?mode=ro' % db, uri=True)
        n_now = c.execute('SELECT count(*) FROM audit').fetchone()[0]
        c.close()
        check(p.returncode == 0 and '2 keys in turn' in p.stdout and n_now > n_rows,
              'audit verify with both keys: intact, %d rows (%d %s)' % (n_now, p.returncode, p.stderr[-160:]))
        p = verify('--key', nxt)
        check(p.returncode == 4, 'with the new key alone: exit 4, the rows under the old key not checked (%d)'
              % p.returncode)
    except Exception as e:
        T.broken_step(o or T.Orthanc(tmp, '', '', '', {}), e)
    finally:
        if o and o.proc:
            o.stop()
    return T.finish(tmp, args.keep, t_start)


if __name__ == '__main__':
    sys.exit(main())
