#!/usr/bin/python3
"""test_orthanc_browser.py — the "Ask cxrvqa" panel in Orthanc Explorer, in a
real headless Chromium driven over the DevTools protocol (a minimal stdlib
WebSocket client below; no python3-websocket needed).

A real Orthanc with the plugin (test_orthanc.Orthanc) and one real worker;
one CR instance uploaded. In the browser, on explorer.html#instance?uuid=ID:
  - the panel is injected on the instance page (question box, Ask button);
  - typing a question and clicking Ask (real input events) shows the verdict,
    the findings table, the evidence heatmap (an <img> that loaded) and a link
    to the SR, whose target is a modality-SR instance of the same study;
  - following the link opens the SR's instance page (the panel follows);
  - a worker crash (CXRVQA_TEST_POISON) is shown as "Error 502 …";
  - no uncaught JavaScript exception.
Exit 0 passed, 1 failed, 77 when /usr/sbin/Orthanc or Chromium is missing.
"""
import argparse
import base64
import hashlib
import json
import os
import shutil
import signal
import socket
import struct
import subprocess
import sys
import tempfile
import time
import urllib.parse
import urllib.request

sys.path.insert(0, os.path.dirname(os.path.abspath(__file__)))
import test_orthanc as T  # noqa: E402  (the Orthanc harness)

CHROMIUM = [p for p in ('/usr/lib/chromium/chromium', '/usr/bin/chromium', '/usr/bin/chromium-browser')
            if os.path.exists(p)]


class WebSocket:
    """Just enough RFC 6455 for the DevTools protocol: text frames, client
    masking, fragmentation, ping/pong, close."""

    GUID = '258EAFA5-E914-47DA-95CA-C5AB0DC85B11'

    def __init__(self, url, timeout=30):
        u = urllib.parse.urlparse(url)
        self.sock = socket.create_connection((u.hostname, u.port), timeout=timeout)
        key = base64.b64encode(os.urandom(16)).decode()
        self.sock.sendall(('GET %s HTTP/1.1\r\nHost: %s:%d\r\nUpgrade: websocket\r\nConnection: Upgrade\r\n'
                           'Sec-WebSocket-Key: %s\r\nSec-WebSocket-Version: 13\r\n\r\n'
                           % (u.path or '/', u.hostname, u.port, key)).encode())
        head = b''
        while b'\r\n\r\n' not in head:
            chunk = self.sock.recv(4096)
            if not chunk:
                raise ConnectionError('WebSocket handshake: connection closed')
            head += chunk
        head, self.buf = head.split(b'\r\n\r\n', 1)
        lines = head.decode('latin-1').split('\r\n')
        if ' 101 ' not in lines[0] + ' ':
            raise ConnectionError('WebSocket handshake refused: ' + lines[0])
        want = base64.b64encode(hashlib.sha1((key + self.GUID).encode()).digest()).decode()
        hdrs = {l.split(':', 1)[0].strip().lower(): l.split(':', 1)[1].strip() for l in lines[1:] if ':' in l}
        if hdrs.get('sec-websocket-accept') != want:
            raise ConnectionError('WebSocket handshake: bad Sec-WebSocket-Accept')

    def _read(self, n):
        while len(self.buf) < n:
            chunk = self.sock.recv(max(65536, n - len(self.buf)))
            if not chunk:
                raise ConnectionError('WebSocket closed')
            self.buf += chunk
        out, self.buf = self.buf[:n], self.buf[n:]
        return out

    def _send_frame(self, opcode, payload):
        n = len(payload)
        head = bytes([0x80 | opcode])
        if n < 126:
            head += bytes([0x80 | n])
        elif n < 65536:
            head += bytes([0x80 | 126]) + struct.pack('>H', n)
        else:
            head += bytes([0x80 | 127]) + struct.pack('>Q', n)
        mask = os.urandom(4)
        body = bytes(b ^ mask[i & 3] for i, b in enumerate(payload))
        self.sock.sendall(head + mask + body)

    def send(self, text):
        self._send_frame(0x1, text.encode())

    def recv(self):
        parts = []
        while True:
            b0, b1 = self._read(2)
            opcode, n = b0 & 0x0F, b1 & 0x7F
            if n == 126:
                n = struct.unpack('>H', self._read(2))[0]
            elif n == 127:
                n = struct.unpack('>Q', self._read(8))[0]
            mask = self._read(4) if b1 & 0x80 else None
            data = self._read(n)
            if mask:
                data = bytes(b ^ mask[i & 3] for i, b in enumerate(data))
            if opcode == 0x9:
                self._send_frame(0xA, data)
                continue
            if opcode == 0xA:
                continue
            if opcode == 0x8:
                raise ConnectionError('WebSocket closed by the peer')
            parts.append(data)
            if b0 & 0x80:
                return b''.join(parts).decode('utf-8', 'replace')

    def close(self):
        try:
            self._send_frame(0x8, b'')
        except OSError:
            pass
        self.sock.close()


class Cdp:
    def __init__(self, ws_url):
        self.ws, self.n, self.events = WebSocket(ws_url), 0, []

    def call(self, method, **params):
        self.n += 1
        my = self.n
        self.ws.send(json.dumps({'id': my, 'method': method, 'params': params}))
        while True:
            m = json.loads(self.ws.recv())
            if m.get('id') == my:
                if 'error' in m:
                    raise RuntimeError('%s: %s' % (method, m['error']))
                return m.get('result', {})
            if 'method' in m:
                self.events.append(m)

    def eval(self, expr):
        r = self.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)
        if 'exceptionDetails' in r:
            raise RuntimeError('JS %r: %s' % (expr[:80], r['exceptionDetails'].get('text')))
        return r.get('result', {}).get('value')

    def wait(self, expr, timeout=30, step=0.1):
        t0 = time.time()
        while time.time() - t0 < timeout:
            v = self.eval(expr)
            if v:
                return v
            time.sleep(step)
        return None

    def click(self, selector):
        r = self.eval("(function(){var e=document.querySelector(%s); if(!e) return null; e.scrollIntoView();"
                      "var r=e.getBoundingClientRect(); return [r.left+r.width/2, r.top+r.height/2];})()"
                      % json.dumps(selector))
        if not r:
            raise RuntimeError('no element ' + selector)
        for t in ('mousePressed', 'mouseReleased'):
            self.call('Input.dispatchMouseEvent', type=t, x=r[0], y=r[1], button='left', clickCount=1)

    def type_into(self, selector, text):
        self.eval("(function(){var e=document.querySelector(%s); e.focus(); e.select(); e.value='';})()"
                  % json.dumps(selector))
        self.call('Input.insertText', text=text)


def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--plugin', required=True)
    ap.add_argument('--cxrvqa', required=True)
    ap.add_argument('--sample-data', required=True)
    ap.add_argument('--model', default=None)
    ap.add_argument('--keep', action='store_true')
    ap.add_argument('--shots', default=None, help='write the panel screenshots (English, Chinese) here')
    args = ap.parse_args()
    if not os.path.exists(T.ORTHANC):
        print('SKIP: %s is not installed (Debian package orthanc)' % T.ORTHANC)
        return 77
    if not CHROMIUM:
        print('SKIP: Chromium is not installed (Debian package chromium)')
        return 77
    model = args.model or os.path.join(os.path.dirname(os.path.abspath(args.sample_data)), 'model',
                                       'cxrvqa-cxr-cnn.gguf')
    tmp = tempfile.mkdtemp(prefix='cxrvqa-browser-')
    o = T.Orthanc(tmp, os.path.abspath(args.plugin), os.path.abspath(args.cxrvqa), model,
                  {'Workers': 1, 'AutoScreen': False, 'TimeoutSeconds': 30}, {'CXRVQA_TEST_POISON': '1'})
    chrome = None
    cdp = None
    t_start = time.time()
    try:
        T.log('[start] Orthanc up in %.1f s' % o.start('browser'))
        h = o.http
        with open(os.path.join(args.sample_data, 'cr_mono1_jpegls.dcm'), 'rb') as f:
            cr = T.upload(h, f.read())
        iid, study = cr['ID'], cr['ParentStudy']

        profile = os.path.join(tmp, 'chromium')
        os.makedirs(profile)
        chrome = subprocess.Popen([CHROMIUM[0], '--headless=new', '--no-sandbox', '--disable-gpu',
                                   '--disable-dev-shm-usage', '--no-first-run', '--no-default-browser-check',
                                   '--disable-extensions', '--window-size=1400,1000',
                                   '--user-data-dir=' + profile, '--remote-debugging-port=0',
                                   '--remote-allow-origins=*', 'about:blank'],
                                  stdout=subprocess.DEVNULL, stderr=open(os.path.join(tmp, 'chromium.log'), 'w'),
                                  start_new_session=True)
        portfile = os.path.join(profile, 'DevToolsActivePort')
        if not T.wait_for(lambda: os.path.exists(portfile) and open(portfile).read().count('\n') >= 1, 30):
            raise RuntimeError('Chromium did not open its DevTools port')
        dport = int(open(portfile).read().split()[0])
        with urllib.request.urlopen('http://127.0.0.1:%d/json/list' % dport, timeout=10) as f:
            pages = [t for t in json.load(f) if t.get('type') == 'page']
        cdp = Cdp(pages[0]['webSocketDebuggerUrl'])
        cdp.call('Runtime.enable')
        cdp.call('Page.enable')
        cdp.call('Network.enable')
        cdp.call('Network.setExtraHTTPHeaders', headers={'Authorization': h.auth})

        url = '%s/app/explorer.html#instance?uuid=%s' % (h.base, iid)
        cdp.call('Page.navigate', url=url)
        panel = cdp.wait("!!(window.$ && $('#instance').hasClass('ui-page-active') && $('#cxrvqa-panel').length"
                         " && $('#cxrvqa-question').length && $('#cxrvqa-ask').length)", 30)
        T.check(bool(panel), 'the "Ask cxrvqa" panel is on the instance page')
        T.check(cdp.eval("$('#cxrvqa-panel').index() < $('#instance .ui-block-b .ui-body').not('#cxrvqa-panel').index()"
                         " || $('#cxrvqa-panel').closest('#instance').length === 1"),
                'the panel sits inside the instance page')

        q = 'Is there an effusion?'
        cdp.type_into('#cxrvqa-question', q)
        t0 = time.time()
        cdp.click('#cxrvqa-ask')
        got = cdp.wait("$('#cxrvqa-verdict').text() || ($('#cxrvqa-status').text().indexOf('Error') === 0 &&"
                       " $('#cxrvqa-status').text())", 60)
        dt = time.time() - t0
        verdict = cdp.eval("$('#cxrvqa-verdict').text()")
        T.check(verdict in ('yes', 'no', 'uncertain', 'not-assessed', 'refused'),
                'clicking Ask shows a verdict: %r in %.0f ms (%r)' % (verdict, dt * 1e3, got))
        T.check(bool(cdp.eval("$('#cxrvqa-text').text().length > 0")), 'the answer text is shown: %r'
                % cdp.eval("$('#cxrvqa-text').text()"))
        rows = cdp.eval("$('#cxrvqa-findings tr').length")
        T.check(rows and rows >= 2, 'the findings table has rows (%s)' % rows)
        img = cdp.wait("(function(){var i=document.getElementById('cxrvqa-heatmap');"
                       "return i && i.complete && i.naturalWidth > 0 && $(i).is(':visible') ?"
                       " [i.naturalWidth, i.naturalHeight, i.src] : null;})()", 60)
        T.check(bool(img), 'the heatmap image loaded: %s' % (img and img[:2]))
        if img:
            T.check('/cxrvqa/instances/%s/heatmap.png?finding=' % iid in img[2], 'heatmap src is the plugin route')
        cdp.eval("document.getElementById('cxrvqa-panel').scrollIntoView(); 1")
        # the findings table: display names (not snake_case), the tier and the validation AUC
        names = cdp.eval("$('#cxrvqa-findings tr').slice(1).map(function(){return $(this).find('td').eq(0).text();}).get()")
        T.check(bool(names) and all('_' not in n for n in names), 'findings shown by display name: %s' % names)
        tiers = cdp.eval("$('#cxrvqa-findings td.cxrvqa-tier').map(function(){return $(this).text();}).get()")
        T.check(bool(tiers) and all(t in ('assessable', 'limited evidence', 'not assessed') for t in tiers),
                'each finding shows its tier: %s' % tiers)
        aucs = cdp.eval("$('#cxrvqa-findings td.cxrvqa-auc').map(function(){return $(this).text();}).get()")
        T.check(bool(aucs) and all('n=' in x or 'not validated' in x for x in aucs), 'and its validation AUC: %s' % aucs)
        shot = cdp.call('Page.captureScreenshot', format='png')
        png = base64.b64decode(shot.get('data', ''))
        with open(os.path.join(args.shots or tmp, 'explorer.png'), 'wb') as f:
            f.write(png)
        T.check(T.png_size(png) is not None, 'screenshot of the panel (%s; kept with --keep)' % (T.png_size(png),))
        # a Chinese question: the sentence, the names and the tiers in Chinese
        cdp.eval("$('#cxrvqa-question').val(''); 1")
        cdp.type_into('#cxrvqa-question', '这张胸片正常吗？')
        cdp.click('#cxrvqa-ask')
        got = cdp.wait("$('#cxrvqa-text').text().indexOf('模型') >= 0 || $('#cxrvqa-text').text().indexOf('正常') >= 0"
                       " ? $('#cxrvqa-text').text() : null", 60)
        T.check(bool(got), 'a Chinese question is answered in Chinese: %r' % got)
        tiers = cdp.eval("$('#cxrvqa-findings td.cxrvqa-tier').map(function(){return $(this).text();}).get()")
        T.check(bool(tiers) and all(t in ('可评估', '证据有限', '无法评估') for t in tiers), 'tiers in Chinese: %s' % tiers)
        cdp.eval("document.getElementById('cxrvqa-panel').scrollIntoView(); 1")
        shot = cdp.call('Page.captureScreenshot', format='png')
        with open(os.path.join(args.shots or tmp, 'explorer_zh.png'), 'wb') as f:
            f.write(base64.b64decode(shot.get('data', '')))
        # back to the English answer for the SR link below
        cdp.eval("$('#cxrvqa-question').val(''); 1")
        cdp.type_into('#cxrvqa-question', q)
        cdp.click('#cxrvqa-ask')
        cdp.wait("$('#cxrvqa-text').text().indexOf('effusion') >= 0 ? 1 : null", 60)
        href = cdp.eval("$('#cxrvqa-sr').is(':visible') ? $('#cxrvqa-sr').attr('href') : null")
        sr_id = href.split('uuid=')[-1] if href else None
        T.check(bool(href) and href.startswith('explorer.html#instance?uuid='), 'the SR link is shown: %s' % href)
        if sr_id:
            st, sr = h.json('GET', '/instances/%s/series' % sr_id)
            T.check(st == 200 and sr['MainDicomTags'].get('Modality') == 'SR', 'the link targets a modality-SR instance')
            T.check(h.get('/instances/%s/study' % sr_id)['ID'] == study, 'the SR is in the same study')
            cdp.click('#cxrvqa-sr')
            moved = cdp.wait("$.mobile.pageData && $.mobile.pageData.uuid === %s && $('#cxrvqa-panel').length === 1"
                             " && $('#cxrvqa-answer').text() === ''" % json.dumps(sr_id), 30)
            T.check(bool(moved), 'following the link opens the SR instance page (fresh panel)')

        # an error is shown, not swallowed
        cdp.call('Page.navigate', url=url + '&again=1')
        cdp.wait("!!($('#instance').hasClass('ui-page-active') && $('#cxrvqa-panel').length &&"
                 " $.mobile.pageData.uuid === %s)" % json.dumps(iid), 30)
        cdp.type_into('#cxrvqa-question', '__crash__ Is there an effusion?')
        cdp.click('#cxrvqa-ask')
        err = cdp.wait("$('#cxrvqa-status').text().indexOf('Error') === 0 && $('#cxrvqa-status').text()", 60)
        T.check(bool(err) and '502' in err and 'worker-crashed' in err, 'a worker crash is shown: %r' % err)

        exc = [e for e in cdp.events if e.get('method') == 'Runtime.exceptionThrown']
        T.check(not exc, 'no uncaught JavaScript exception (%s)' %
                [e['params']['exceptionDetails'].get('text') for e in exc][:3])
    except Exception as e:
        import traceback
        traceback.print_exc()
        T.failures.append('exception: %s' % e)
        if o.logpath:
            T.log('--- Orthanc log tail ---\n' + o.log_tail(40))
    finally:
        if cdp:
            cdp.ws.close()
        if chrome:
            try:
                os.killpg(chrome.pid, signal.SIGKILL)  # the browser and its helpers
            except OSError:
                pass
            chrome.wait()
        if o.proc:
            o.stop()
        if args.keep or T.failures:
            T.log('kept %s' % tmp)
        else:
            shutil.rmtree(tmp, ignore_errors=True)
    T.log('total %.1f s' % (time.time() - t_start))
    if T.failures:
        T.log('%d check(s) failed:\n  ' % len(T.failures) + '\n  '.join(T.failures))
        return 1
    T.log('all checks passed')
    return 0


if __name__ == '__main__':
    sys.exit(main())
