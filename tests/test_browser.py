"""The documentation site and the report, opened in headless Chromium: every page loads (HTTP 200), every image
renders (naturalWidth > 0), and no request leaves the machine. Chromium is driven over the DevTools protocol;
DNS for any other host is made to fail, so a request that slips through is recorded, never sent."""
import base64, functools, http.server, io, json, os, shutil, subprocess, threading, time, urllib.request
from pathlib import Path
from urllib.parse import urlparse

import pytest

ROOT = Path(__file__).resolve().parents[1]
CHROMIUM = '/usr/bin/chromium'
pytestmark = pytest.mark.skipif(not Path(CHROMIUM).exists(), reason=f'{CHROMIUM} is missing (apt-get install chromium)')
LOCAL_SCHEMES = {'data', 'about', 'blob', 'chrome', 'chrome-extension', 'devtools'}


def _is_local(url: str) -> bool:
    u = urlparse(url)
    return u.scheme in LOCAL_SCHEMES or (u.scheme in ('http', 'https', 'ws') and u.hostname in ('127.0.0.1', 'localhost'))


class _Quiet(http.server.SimpleHTTPRequestHandler):
    def log_message(self, *a): pass


@pytest.fixture(scope='module')
def served(tmp_path_factory):
    "The docs site built into a temporary folder, a tiny rendered report beside it, served on a random local port."
    from cifar_nb.publish import build_docs, render_html
    import nbformat
    from nbformat.v4 import new_notebook, new_code_cell, new_markdown_cell, new_output
    import matplotlib; matplotlib.use('Agg')
    import matplotlib.pyplot as plt
    tmp = tmp_path_factory.mktemp('browser')
    site = build_docs(tmp/'site', root=ROOT)
    fig, ax = plt.subplots(figsize=(2, 2)); ax.plot([0, 1, 4]); buf = io.BytesIO(); fig.savefig(buf, format='png'); plt.close(fig)
    png = new_output('display_data', data={'image/png': base64.b64encode(buf.getvalue()).decode(), 'text/plain': '<Figure>'})
    nb = new_notebook(cells=[new_markdown_cell('# Tiny report\n\nMaths $x^2$ stays text.'), new_code_cell('plot()', outputs=[png])])
    nbformat.write(nb, tmp/'tiny.ipynb')
    render_html(tmp/'tiny.ipynb', site/'tiny_report.html')
    handler = functools.partial(_Quiet, directory=str(site))
    srv = http.server.ThreadingHTTPServer(('127.0.0.1', 0), handler)
    threading.Thread(target=srv.serve_forever, daemon=True).start()
    yield site, f'http://127.0.0.1:{srv.server_address[1]}'
    srv.shutdown(); srv.server_close()


class _Chromium:
    "Headless Chromium with one page, driven over the DevTools protocol."
    def __init__(self, profile: Path):
        import websocket
        self.proc = subprocess.Popen(
            [CHROMIUM, '--headless=new', '--no-sandbox', '--disable-gpu', '--disable-quic', '--no-first-run',
             '--no-default-browser-check', '--disable-background-networking', '--disable-component-update',
             '--disable-sync', '--disable-extensions', '--disable-dev-shm-usage', '--remote-debugging-port=0',
             '--host-resolver-rules=MAP * ~NOTFOUND, EXCLUDE 127.0.0.1', f'--user-data-dir={profile}', 'about:blank'],
            stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        port_file, t0 = profile/'DevToolsActivePort', time.time()
        while not (port_file.exists() and len(port_file.read_text().split()) >= 2):
            if self.proc.poll() is not None or time.time() - t0 > 30: raise RuntimeError('Chromium did not start')
            time.sleep(0.1)
        port = int(port_file.read_text().split()[0])
        targets = json.load(urllib.request.urlopen(f'http://127.0.0.1:{port}/json/list', timeout=10))
        page = next(t for t in targets if t['type'] == 'page')
        self.ws = websocket.create_connection(page['webSocketDebuggerUrl'], timeout=20, suppress_origin=True)
        self.id, self.events = 0, []
        for m in ('Page.enable', 'Network.enable', 'Runtime.enable'): self.call(m)
        self.call('Network.setCacheDisabled', cacheDisabled=True)

    def call(self, method, **params):
        self.id += 1; self.ws.send(json.dumps(dict(id=self.id, method=method, params=params)))
        while True:
            msg = json.loads(self.ws.recv())
            if msg.get('id') == self.id:
                if 'error' in msg: raise RuntimeError(f"{method}: {msg['error']}")
                return msg.get('result', {})
            self.events.append(msg)

    def wait_for(self, method, timeout=20):
        t0 = time.time()
        while time.time() - t0 < timeout:
            if any(e.get('method') == method for e in self.events): return
            self.events.append(json.loads(self.ws.recv()))
        raise TimeoutError(method)

    def js(self, expr):
        return self.call('Runtime.evaluate', expression=expr, returnByValue=True, awaitPromise=True)['result'].get('value')

    def visit(self, url) -> dict:
        "Load `url`; return the document's status, every requested URL, failed requests and the images."
        self.events = []
        self.call('Page.navigate', url=url)
        self.wait_for('Page.loadEventFired')
        images = self.js("""new Promise(done => { const t0 = Date.now(); (function check() {
            const imgs = Array.from(document.images);
            if (imgs.every(i => i.complete) || Date.now() - t0 > 5000)
                done(imgs.map(i => [i.currentSrc || i.src, i.complete, i.naturalWidth]));
            else setTimeout(check, 50); })(); })""")
        self.js('new Promise(r => setTimeout(r, 300))')  # late requests (search index, fonts) get recorded too
        ev = [e for e in self.events if 'method' in e]
        requests = [e['params']['request']['url'] for e in ev if e['method'] == 'Network.requestWillBeSent']
        status = next((e['params']['response']['status'] for e in ev if e['method'] == 'Network.responseReceived'
                       and e['params'].get('type') == 'Document'), None)
        failed = [e['params'].get('errorText') for e in ev if e['method'] == 'Network.loadingFailed']
        return dict(status=status, requests=requests, failed=failed, images=images)

    def close(self):
        try: self.ws.close()
        finally:
            self.proc.terminate()
            try: self.proc.wait(10)
            except subprocess.TimeoutExpired: self.proc.kill()


@pytest.fixture(scope='module')
def chromium(tmp_path_factory):
    b = _Chromium(tmp_path_factory.mktemp('chromium-profile'))
    yield b
    b.close()


def _pages(site: Path) -> list[str]:
    pages = sorted(p.relative_to(site).as_posix() for p in site.rglob('*.html') if p.name != '404.html')
    report = ROOT/'reports'/'report.html'
    if report.exists(): assert 'report.html' in pages, 'reports/report.html exists but the site lacks report.html'
    return pages


def test_every_page_loads_renders_its_images_and_stays_local(served, chromium):
    site, base = served
    pages = _pages(site)
    assert 'index.html' in pages and 'tiny_report.html' in pages and '99_troubleshooting/index.html' in pages
    problems, n_images = [], 0
    for page in pages:
        r = chromium.visit(f'{base}/{page}')
        if r['status'] != 200: problems.append(f"{page}: HTTP status {r['status']}")
        problems += [f'{page}: request to {u}' for u in r['requests'] if not _is_local(u)]
        problems += [f'{page}: image {src[:80]} did not render (complete={c}, naturalWidth={w})'
                     for src, c, w in r['images'] if not (c and w > 0)]
        n_images += len(r['images'])
    assert not problems, '\n'.join(problems)
    assert n_images >= 1  # the tiny report's figure at least


def test_report_figure_is_inline(served, chromium):
    site, base = served
    r = chromium.visit(f'{base}/tiny_report.html')
    assert r['status'] == 200 and len(r['images']) == 1
    src, complete, width = r['images'][0]
    assert src.startswith('data:image/png;base64,') and complete and width > 0
    assert all(_is_local(u) for u in r['requests']), r['requests']


def test_real_report_when_present(served, chromium):
    report = ROOT/'reports'/'report.html'
    if not report.exists(): pytest.skip('reports/report.html does not exist yet (make report writes it)')
    from cifar_nb.publish import external_urls
    assert external_urls(report.read_text()) == []
    site, base = served
    r = chromium.visit(f'{base}/report.html')
    assert r['status'] == 200
    assert all(_is_local(u) for u in r['requests']), [u for u in r['requests'] if not _is_local(u)]
    assert r['images'] and all(c and w > 0 for _, c, w in r['images'])


def test_the_check_sees_a_request_that_would_leave(served, chromium):
    "A page that fetches from another host is caught: the request is recorded (and fails), the image is broken."
    site, base = served
    (site/'leaky.html').write_text('<html><body><img src="https://example.org/x.png"></body></html>')
    try: r = chromium.visit(f'{base}/leaky.html')
    finally: (site/'leaky.html').unlink()
    assert 'https://example.org/x.png' in r['requests']
    assert r['images'] and r['images'][0][2] == 0
