#!/usr/bin/python3
"""test_install.py — `cmake --install BUILD --prefix TMP` and what a site
gets from it, used as a site would (README.md, "Deploying at a site"):

  layout      the binary, libcxrvqa.so (+ soname links), cxrvqa.h and the
              headers it includes, the Orthanc plugin, the default model and
              its card, the man page, README/SECURITY, the two examples
  library     a C program built against the installed header and library
              only opens the installed model and asks about a sample image
  cli         every command main.c dispatches is listed by `cxrvqa --help`;
              each `cxrvqa CMD --help` exits 0 with a usage text; the
              installed binary finds the installed model without
              $CXRVQA_MODEL and from another folder; the man page has a
              section per command
  example     deploy/orthanc.json (comments stripped, /usr/local and
              /var/lib moved into TMP, free ports) starts a real Orthanc with
              the installed plugin: the plugin is enabled (every CxrVqa key
              known), and without Model/WorkerCommand it finds the installed
              worker and model by itself; an ask on a sample image is 200;
              the README's audit backup (sqlite3 .backup of the live store)
              passes `cxrvqa audit verify --anchors`
  systemd     deploy/systemd/cxrvqa.conf passes `systemd-analyze verify`
              with no unknown key (skipped without systemd-analyze)

Exit 0 all passed, 1 a check failed.
"""
import argparse
import json
import os
import re
import shutil
import subprocess
import sys
import tempfile
import time

HERE = os.path.dirname(os.path.abspath(__file__))
sys.path.insert(0, os.path.join(HERE, '..', 'plugin', 'orthanc'))
import test_orthanc as T  # noqa: E402  (Http, upload, check, free_port, ...)

check, log = T.check, T.log


def strip_comments(text):
    """JSON with // comments (as Orthanc reads it) -> JSON."""
    out, i, in_str = [], 0, False
    while i < len(text):
        c = text[i]
        if in_str:
            out.append(c)
            if c == '\\':
                out.append(text[i + 1])
                i += 1
            elif c == '"':
                in_str = False
        elif c == '"':
            in_str = True
            out.append(c)
        elif text.startswith('//', i):
            while i < len(text) and text[i] != '\n':
                i += 1
            continue
        else:
            out.append(c)
        i += 1
    return ''.join(out)


def test_layout(prefix):
    log('[layout]')
    want = ['bin/cxrvqa', 'lib/libcxrvqa.so', 'lib/libcxrvqa.so.0', 'include/cxrvqa/cxrvqa.h',
            'include/cxrvqa/cxr_dicom.h', 'include/cxrvqa/cxr_common.h', 'include/cxrvqa/cxr_version.h',
            'share/orthanc/plugins/libcxrvqa_orthanc.so', 'share/cxrvqa/models/cxrvqa-cxr-cnn.gguf',
            'share/cxrvqa/models/MODEL_CARD.md', 'share/man/man1/cxrvqa.1', 'share/doc/cxrvqa/README.md',
            'share/doc/cxrvqa/SECURITY.md', 'share/doc/cxrvqa/examples/orthanc.json',
            'share/doc/cxrvqa/examples/cxrvqa.conf']
    missing = [w for w in want if not os.path.exists(os.path.join(prefix, w))]
    check(not missing, 'installed: %d files (missing %s)' % (len(want), missing))
    check(os.access(os.path.join(prefix, 'bin/cxrvqa'), os.X_OK), 'bin/cxrvqa is executable')
    check(os.path.islink(os.path.join(prefix, 'lib/libcxrvqa.so')), 'lib/libcxrvqa.so is the development link')
    # every header the public one includes (transitively, by "...") is installed beside it
    inc = os.path.join(prefix, 'include/cxrvqa')
    todo, seen = ['cxrvqa.h'], set()
    while todo:
        h = todo.pop()
        if h in seen:
            continue
        seen.add(h)
        p = os.path.join(inc, h)
        if not check(os.path.exists(p), 'include/cxrvqa/%s installed' % h):
            continue
        todo += re.findall(r'#include "([^"]+)"', open(p).read())
    p = subprocess.run(['readelf', '-d', os.path.join(prefix, 'bin/cxrvqa')], capture_output=True, text=True)
    check('RUNPATH' not in p.stdout and 'RPATH' not in p.stdout, 'installed binary has no build-tree RPATH')


def test_library(prefix, tmp, sample):
    log('[library: a program against the installed header and library]')
    src = os.path.join(tmp, 'use.c')
    with open(src, 'w') as f:
        f.write('''#include <cxrvqa.h>
#include <stdio.h>
#include <stdlib.h>
int main(int argc, char **argv) {
    cxr_vqa_params p = cxr_vqa_params_default();
    p.model_path = argv[1];
    cxr_vqa *v = NULL;
    char err[CXR_ERRMSG_MAX];
    if (argc != 3 || cxr_vqa_open(&p, &v, err, sizeof err) != CXR_OK) { fprintf(stderr, "open: %s\\n", err); return 2; }
    cxr_ask_options o = cxr_ask_options_default();
    cxr_answer *a = NULL;
    int rc = cxr_vqa_ask_file(v, argv[2], "Is there a pleural effusion?", &o, &a);
    printf("%s %s\\n", CXRVQA_VERSION, rc == CXR_OK ? cxr_decision_name(a->answer) : a ? a->error : "error");
    cxr_answer_free(a);
    cxr_vqa_close(v);
    return rc == CXR_OK ? 0 : 1;
}
''')
    exe = os.path.join(tmp, 'use')
    p = subprocess.run(['cc', '-std=c11', '-Wall', '-Werror', '-I', os.path.join(prefix, 'include/cxrvqa'), src,
                        '-o', exe, '-L', os.path.join(prefix, 'lib'), '-lcxrvqa'], capture_output=True, text=True)
    if not check(p.returncode == 0, 'compiles and links against include/cxrvqa and lib/libcxrvqa.so: %s' % p.stderr[-300:]):
        return
    env = dict(os.environ, LD_LIBRARY_PATH=os.path.join(prefix, 'lib'))
    p = subprocess.run([exe, os.path.join(prefix, 'share/cxrvqa/models/cxrvqa-cxr-cnn.gguf'), sample],
                       capture_output=True, text=True, env=env, cwd='/')
    check(p.returncode == 0 and re.match(r'^\d+\.\d+\.\d+ (yes|no|uncertain|not-assessed)$', p.stdout.strip()),
          'it asks about a sample image with the installed model: %r %s' % (p.stdout.strip(), p.stderr[-200:]))


def test_cli(prefix, source_dir):
    log('[cli: help lists every command, every command takes --help]')
    exe = os.path.join(prefix, 'bin/cxrvqa')
    env = {k: v for k, v in os.environ.items() if k != 'CXRVQA_MODEL'}
    top = subprocess.run([exe, '--help'], capture_output=True, text=True, env=env)
    check(top.returncode == 0 and top.stdout.startswith('usage: cxrvqa'), 'cxrvqa --help -> 0, usage')
    listed = set(re.findall(r'^  ([a-z]+)', top.stdout, re.M))
    main_c = open(os.path.join(source_dir, 'plugin/cli/main.c')).read()
    dispatched = set(re.findall(r'!strcmp\(argv\[1\], "([a-z]+)"\)', main_c)) - {'help'}
    check(dispatched and dispatched <= listed,
          'every command main.c dispatches is in the help: %s (missing %s)' % (sorted(dispatched), sorted(dispatched - listed)))
    man = open(os.path.join(prefix, 'share/man/man1/cxrvqa.1')).read()
    for c in sorted(dispatched):
        argv = [exe] + (['model', 'info'] if c == 'model' else [c]) + ['--help']
        p = subprocess.run(argv, capture_output=True, text=True, env=env, cwd='/')
        text = p.stdout + p.stderr
        check(p.returncode == 0 and ('usage: cxrvqa' in p.stdout or c == 'version') and 'unknown option' not in text,
              'cxrvqa %s --help -> 0 with a usage (%d %r)' % (c, p.returncode, text[:60]))
        own = p.stdout != top.stdout and c != 'version'
        if own:
            check('.SS cxrvqa %s' % c in man, 'the man page has a section for %s' % c)
    p = subprocess.run([exe, 'model', '--help'], capture_output=True, text=True, env=env)
    check(p.returncode == 0 and p.stdout.startswith('usage: cxrvqa'), '`cxrvqa model --help` -> 0 (%d)' % p.returncode)
    p = subprocess.run([exe, 'model', 'info', '--json'], capture_output=True, text=True, env=env, cwd='/')
    try:
        f = json.loads(p.stdout).get('file')
    except ValueError:
        f = None
    check(p.returncode == 0 and f == os.path.join(prefix, 'share/cxrvqa/models/cxrvqa-cxr-cnn.gguf'),
          'the installed binary uses the installed model by default: %s' % (f or p.stderr[-200:]))
    if shutil.which('man'):
        p = subprocess.run(['man', '-l', '-P', 'cat', os.path.join(prefix, 'share/man/man1/cxrvqa.1')],
                           capture_output=True, text=True, env=dict(env, MANWIDTH='100'))
        check(p.returncode == 0 and 'cxrvqa ask' in p.stdout and 'warning' not in p.stderr.lower(),
              'man -l renders cxrvqa.1 without warnings (%d %s)' % (p.returncode, p.stderr[:200]))


def test_example(prefix, tmp, source_dir, sample):
    log('[example configuration with the installed plugin]')
    text = open(os.path.join(source_dir, 'deploy/orthanc.json')).read()
    try:
        cfg = json.loads(strip_comments(text))
    except ValueError as e:
        check(False, 'deploy/orthanc.json parses (comments stripped): %s' % e)
        return
    check(True, 'deploy/orthanc.json parses (comments stripped)')
    cx = cfg.get('CxrVqa', {})
    check(cx.get('Model') == '/usr/local/share/cxrvqa/models/cxrvqa-cxr-cnn.gguf' and
          cx.get('WorkerCommand') == '/usr/local/bin/cxrvqa' and
          cfg.get('Plugins') == ['/usr/local/share/orthanc/plugins/libcxrvqa_orthanc.so'],
          'its paths are the --prefix /usr/local layout')
    # the same file in a sandbox: paths into tmp, free ports, a test user; the plugin's own defaults for
    # Model and WorkerCommand (relative to the installed plugin)
    s = json.dumps(cfg).replace('/usr/local', prefix).replace('/var/lib/orthanc', os.path.join(tmp, 'orthanc')) \
        .replace('/var/lib/cxrvqa', os.path.join(tmp, 'cxrvqa'))
    cfg = json.loads(s)
    os.makedirs(os.path.join(tmp, 'cxrvqa'), mode=0o700)
    port = T.free_port()
    cfg.update(HttpPort=port, DicomPort=T.free_port(), RemoteAccessAllowed=False, DicomServerEnabled=False,
               RegisteredUsers={T.USER: T.PASSWORD}, StableAge=1)
    del cfg['CxrVqa']['Model'], cfg['CxrVqa']['WorkerCommand']
    cfg['CxrVqa']['Workers'] = 1
    path = os.path.join(tmp, 'orthanc.json')
    with open(path, 'w') as f:
        json.dump(cfg, f, indent=1)
    logpath = os.path.join(tmp, 'orthanc.log')
    logf = open(logpath, 'w')
    proc = subprocess.Popen([T.ORTHANC, path], stdout=logf, stderr=subprocess.STDOUT, cwd=tmp, start_new_session=True)
    h = T.Http(port)
    try:
        up = T.wait_for(lambda: proc.poll() is None and h.req('GET', '/system', timeout=2)[0] == 200
                        if _reachable(port) else False, 60, step=0.1)
        if not check(up, 'Orthanc starts with the example configuration'):
            log(open(logpath).read()[-2000:])
            return
        st, s = h.json('GET', '/cxrvqa/status')
        ok = st == 200 and s['workers']['alive'] == 1
        check(ok, 'the plugin is enabled and its worker alive (%d %s)' % (st, str(s)[:200]))
        if ok:
            check(s['model']['path'] == os.path.join(prefix, 'share/cxrvqa/models/cxrvqa-cxr-cnn.gguf') and
                  s['workers']['command'] == os.path.join(prefix, 'bin/cxrvqa'),
                  'without Model/WorkerCommand the installed plugin uses the installed model and binary (%s, %s)'
                  % (s['model']['path'], s['workers']['command']))
            iid = T.upload(h, open(sample, 'rb').read())['ID']
            st, j, _ = T.ask(h, iid, 'Is there a pleural effusion?')
            check(st == 200 and j and j.get('answer') in ('yes', 'no', 'uncertain', 'not-assessed'),
                  'an ask through the installed plugin -> 200 (%d %s)' % (st, str(j)[:120]))
            backup_audit(prefix, tmp, h)
    finally:
        try:
            os.killpg(proc.pid, 15)
            proc.wait(30)
        except (OSError, subprocess.TimeoutExpired):
            os.killpg(proc.pid, 9)
        logf.close()
    text = open(logpath).read()
    check('cxrvqa: disabled' not in text and 'worker(s) started' in text, 'Orthanc\'s log: the plugin started its worker')


def backup_audit(prefix, tmp, h):
    """README's backup, while Orthanc runs: sqlite3 .backup, then audit verify --anchors on the copy."""
    if not shutil.which('sqlite3'):
        log('  skip sqlite3 not installed: audit backup not tried')
        return
    db, anchors = os.path.join(tmp, 'cxrvqa', 'audit.sqlite'), os.path.join(tmp, 'cxrvqa', 'anchors.log')
    T.wait_for(lambda: os.path.exists(anchors), 15)  # the plugin anchors a few seconds after start
    copy = os.path.join(tmp, 'audit-backup.sqlite')
    p = subprocess.run(['sqlite3', db, ".backup '%s'" % copy], capture_output=True, text=True)
    check(p.returncode == 0 and os.path.exists(copy), 'sqlite3 .backup of the live audit store (%s)' % p.stderr[:120])
    p = subprocess.run([os.path.join(prefix, 'bin/cxrvqa'), 'audit', 'verify', '--db', copy, '--anchors', anchors],
                       capture_output=True, text=True)
    check(p.returncode == 0 and 'extends all' in p.stdout,
          'the backup verifies against the anchor log: %s' % (p.stdout + p.stderr).strip()[:160])


def _reachable(port):
    import socket
    try:
        socket.create_connection(('127.0.0.1', port), 0.2).close()
        return True
    except OSError:
        return False


def test_systemd(source_dir, tmp):
    log('[systemd drop-in]')
    if not shutil.which('systemd-analyze'):
        log('  skip systemd-analyze not installed')
        return
    # the drop-in merged into a copy of the unit it extends (Debian's ExecStart and User)
    unit = os.path.join(tmp, 'orthanc-cxrvqa.service')
    dropin = open(os.path.join(source_dir, 'deploy/systemd/cxrvqa.conf')).read()
    with open(unit, 'w') as f:
        f.write('[Unit]\nDescription=Orthanc with cxrvqa\n' +
                dropin.replace('[Service]\n', '[Service]\nUser=root\nExecStart=%s /etc/orthanc\n' % T.ORTHANC, 1))
    p = subprocess.run(['systemd-analyze', 'verify', unit], capture_output=True, text=True)
    bad = [l for l in (p.stdout + p.stderr).splitlines() if 'orthanc-cxrvqa' in l or 'Unknown' in l or 'ignoring' in l]
    check(p.returncode == 0 and not bad, 'systemd-analyze verify: no error, no unknown key (%d %s)' % (p.returncode, bad[:3]))


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--build', required=True)
    ap.add_argument('--source', required=True)
    ap.add_argument('--keep', action='store_true')
    args = ap.parse_args()
    args.build, args.source = os.path.abspath(args.build), os.path.abspath(args.source)
    tmp = tempfile.mkdtemp(prefix='cxrvqa-install-')
    prefix = os.path.join(tmp, 'prefix')
    t0 = time.time()
    sample = os.path.join(args.source, 'sample_data', 'cr_mono1_jpegls.dcm')
    p = subprocess.run(['cmake', '--install', args.build, '--prefix', prefix], capture_output=True, text=True)
    if check(p.returncode == 0, 'cmake --install --prefix TMP -> 0 %s' % p.stderr[-300:]):
        test_layout(prefix)
        test_library(prefix, tmp, sample)
        test_cli(prefix, args.source)
        if os.path.exists(T.ORTHANC) and os.path.exists(os.path.join(prefix, 'share/orthanc/plugins/libcxrvqa_orthanc.so')):
            test_example(prefix, tmp, args.source, sample)
        else:
            log('  skip Orthanc or the plugin is not installed: example configuration not started')
    test_systemd(args.source, tmp)
    return T.finish(tmp, args.keep, t0)


if __name__ == '__main__':
    sys.exit(main())
