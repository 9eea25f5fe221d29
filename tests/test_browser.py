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
    from cifar_nb.site import build_docs
    from cifar_nb.report import render_html
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
    from cifar_nb.report import external_urls
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


# --- the rendered report as its readers see it: anchors, width, print ---------------------------------------------

REPORT = Path(os.environ.get('CIFAR_NB_REPORT', ROOT/'reports'/'report.html'))  # another rendering can be checked the same way
A4_PRINTABLE_PX = round((210 - 2 * 12) / 25.4 * 96)   # A4 less REPORT_CSS's 12 mm side margins, in CSS pixels (703)


@pytest.fixture(scope='module')
def report_page(chromium):
    "reports/report.html opened from disk (it is one self-contained file)."
    if not REPORT.exists(): pytest.skip('reports/report.html does not exist yet (make report writes it)')
    chromium.call('Emulation.setDeviceMetricsOverride', width=1280, height=900, deviceScaleFactor=1, mobile=False)
    chromium.visit(REPORT.as_uri())
    yield chromium
    chromium.call('Emulation.setEmulatedMedia', media='')
    chromium.call('Emulation.clearDeviceMetricsOverride')


def _at_width(b, width, media=''):
    b.call('Emulation.setScrollbarsHidden', hidden=media == 'print')  # a printed page has no scroll bar to take width
    b.call('Emulation.setEmulatedMedia', media=media)
    b.call('Emulation.setDeviceMetricsOverride', width=width, height=900, deviceScaleFactor=1, mobile=False)
    b.js('new Promise(r => requestAnimationFrame(() => requestAnimationFrame(r)))')


def test_report_every_anchor_resolves(report_page):
    "Every in-page link (the table of contents, the headings' own anchors) points at an element that exists."
    r = report_page.js("""(() => { const hrefs = Array.from(document.querySelectorAll('a[href^="#"]')).map(a => a.getAttribute('href'));
        return {n: hrefs.length, toc: document.querySelectorAll('nav.cnb-toc a').length,
                broken: hrefs.filter(h => !document.getElementById(decodeURIComponent(h.slice(1))))}; })()""")
    assert r['toc'] >= 8, f"the table of contents has {r['toc']} links"
    assert not r['broken'], f"{len(r['broken'])} of {r['n']} in-page links lead nowhere: {r['broken'][:10]}"


def test_report_nothing_wider_than_a_1280px_window(report_page):
    _at_width(report_page, 1280)
    r = report_page.js("""(() => { const vw = document.documentElement.clientWidth; const bad = [];
        for (const e of document.body.querySelectorAll('*')) { const b = e.getBoundingClientRect();
            if (b.width && (b.right > vw + 1 || b.left < -1)) bad.push(`${e.tagName}.${e.className} ${Math.round(b.left)}..${Math.round(b.right)}`); }
        return {vw, scroll: document.documentElement.scrollWidth, bad}; })()""")
    assert r['scroll'] <= r['vw'], f"the page scrolls sideways: {r['scroll']} px wide in a {r['vw']} px window"
    assert not r['bad'], f"{len(r['bad'])} elements stick out of the {r['vw']} px window: {r['bad'][:8]}"


def test_report_text_column_is_a_readable_measure(report_page):
    "However wide the window, paragraphs stay in a column of about 900-1,000 px."
    _at_width(report_page, 1920)
    widths = report_page.js("Array.from(document.querySelectorAll('.jp-RenderedMarkdown p')).map(p => p.getBoundingClientRect().width)")
    _at_width(report_page, 1280)
    assert widths and max(widths) <= 1000, f"widest paragraph {max(widths):.0f} px at 1920 px"
    assert max(widths) >= 850, f"the text column is only {max(widths):.0f} px wide at 1920 px"


def test_report_images_have_real_alt_texts_and_captions(report_page):
    r = report_page.js("""Array.from(document.images).map(i => [i.getAttribute('alt') || '', !!i.closest('figure') && !!i.closest('figure').querySelector('figcaption')])""")
    assert len(r) >= 10
    bad = [a for a, _ in r if len(a.strip()) < 20 or 'No description has been provided' in a]
    assert not bad, f"{len(bad)} images without a real alt text: {bad[:3]}"
    assert all(c for _, c in r), f"{sum(not c for _, c in r)} images without a caption"


def test_report_tables_fit_the_printed_page(report_page):
    "Under print media at the printable width of an A4 page, no table (or cell) is wider than its box or the page."
    _at_width(report_page, A4_PRINTABLE_PX, media='print')
    try:
        r = report_page.js("""(() => { const vw = document.documentElement.clientWidth; const bad = [];
            document.querySelectorAll('table').forEach((t, i) => {
                const b = t.getBoundingClientRect(), head = t.querySelector('tr') ? t.querySelector('tr').innerText.slice(0, 50) : '';
                if (t.scrollWidth > t.clientWidth + 1 || b.right > vw + 1) bad.push(`table ${i} (${head}): ${t.scrollWidth} > ${t.clientWidth} or right ${Math.round(b.right)} > ${vw}`);
                t.querySelectorAll('td, th').forEach(c => { if (c.scrollWidth > c.clientWidth + 1) bad.push(`table ${i} cell "${c.innerText.slice(0, 30)}" overflows`); }); });
            document.querySelectorAll('img').forEach(i => { if (i.getBoundingClientRect().right > vw + 1) bad.push(`image ${i.alt.slice(0, 40)} sticks out`); });
            return {vw, n: document.querySelectorAll('table').length, bad}; })()""")
    finally: _at_width(report_page, 1280)
    assert r['n'] >= 8 and r['vw'] == A4_PRINTABLE_PX
    assert not r['bad'], '\n'.join(r['bad'][:10])


def _printed(b, tmp_path) -> tuple[list[str], list[dict]]:
    "The report printed by Chromium (Page.printToPDF with the page's own @page size and margins): its text per page, and every word with its box."
    import html as _html, re
    if not shutil.which('pdftotext'): pytest.skip('pdftotext is missing (apt-get install poppler-utils)')
    b.call('Emulation.setEmulatedMedia', media='')
    pdf = base64.b64decode(b.call('Page.printToPDF', printBackground=True, preferCSSPageSize=True)['data'])
    (tmp_path/'report.pdf').write_bytes(pdf)
    subprocess.run(['pdftotext', '-enc', 'UTF-8', str(tmp_path/'report.pdf'), str(tmp_path/'report.txt')], check=True, timeout=120)
    subprocess.run(['pdftotext', '-enc', 'UTF-8', '-bbox', str(tmp_path/'report.pdf'), str(tmp_path/'words.html')], check=True, timeout=120)
    words, page = [], None
    for line in (tmp_path/'words.html').read_text().splitlines():
        if m := re.search(r'<page width="([\d.]+)" height="([\d.]+)"', line): page = (float(m[1]), float(m[2]))
        elif m := re.search(r'<word xMin="([\d.]+)" yMin="([\d.]+)" xMax="([\d.]+)" yMax="([\d.]+)">(.*)</word>', line):
            words.append(dict(x0=float(m[1]), y0=float(m[2]), x1=float(m[3]), y1=float(m[4]), text=_html.unescape(m[5]), page=page))
    return (tmp_path/'report.txt').read_text().split('\f'), words


def test_report_pdf_clips_no_table_and_strands_no_heading(report_page, tmp_path):
    "In the printed PDF every word lies inside the page's margins, every table header word is there, and no page ends with a heading."
    pages, words = _printed(report_page, tmp_path)
    margin = 12 / 25.4 * 72                                      # REPORT_CSS's side margins (12 mm) in points
    out = [w for w in words if w['x1'] > w['page'][0] - margin + 2 or w['x0'] < margin - 2]
    assert words and not out, f"{len(out)} words outside the printable width, e.g. {[w['text'] for w in out[:10]]}"
    import re
    tokens = lambda s: [x for x in re.split(r'[\s-]+', s) if x]   # a header may wrap at a hyphen ("first-" / "epoch")
    have = {x for w in words for x in tokens(w['text'])}
    heads = report_page.js("Array.from(document.querySelectorAll('table')).map(t => Array.from(t.querySelectorAll('th')).map(h => h.innerText))")
    missing = sorted({x for row in heads for h in row for x in tokens(h) if x not in have})
    assert len(heads) >= 8 and not missing, f"table header words missing from the PDF: {missing[:10]}"
    titles = [t.strip() for t in report_page.js("Array.from(document.querySelectorAll('h1, h2, h3, h4')).map(h => h.innerText)") if t.strip()]
    stranded = []
    for i, page in enumerate(pages[:-1], 1):
        lines = [l.strip() for l in page.splitlines() if l.strip()]
        if not lines: continue
        last, prev = lines[-1], (lines[-2] if len(lines) > 1 else '')
        if any(last == t or (t.endswith(last) and t.startswith(prev) and len(prev) > 3) for t in titles): stranded.append(f'page {i}: {last}')
    assert len(pages) >= 5 and not stranded, f"headings left alone at a page's foot: {stranded}"


PHONE_PX = 390


def test_report_on_a_phone_only_tables_scroll(report_page):
    "At 390 px nothing is wider than the screen except inside a table's own scroller; captions wrap outside it; every figure opens at full size."
    _at_width(report_page, PHONE_PX)
    try:
        r = report_page.js("""(() => { const vw = document.documentElement.clientWidth; const bad = [];
            for (const e of document.body.querySelectorAll('*')) { const b = e.getBoundingClientRect();
                if (e.closest('div.cnb-table') && e.closest('div.cnb-table') !== e) continue;   // inside a table's own scroller
                if (b.width && (b.right > vw + 1 || b.left < -1)) bad.push(`${e.tagName}.${e.className} ${Math.round(b.left)}..${Math.round(b.right)}`); }
            const caps = Array.from(document.querySelectorAll('p.cnb-caption')).map(p => [p.getBoundingClientRect().width, !!p.closest('div.cnb-table')]);
            const figs = Array.from(document.querySelectorAll('figure.cnb-figure')).map(f => !!f.querySelector('figcaption button.cnb-full'));
            const scrollers = Array.from(document.querySelectorAll('div.cnb-table')).map(d => [d.clientWidth, d.scrollWidth]);
            return {vw, scroll: document.documentElement.scrollWidth, bad, caps, figs, scrollers}; })()""")
    finally: _at_width(report_page, 1280)
    assert r['vw'] <= PHONE_PX and r['scroll'] <= r['vw'], f"the page scrolls sideways at {PHONE_PX} px: {r['scroll']} px in {r['vw']}"
    assert not r['bad'], f"{len(r['bad'])} elements stick out of the {PHONE_PX} px screen: {r['bad'][:8]}"
    assert len(r['caps']) >= 8 and all(w <= r['vw'] and not inside for w, inside in r['caps']), r['caps']
    assert any(sw > cw for cw, sw in r['scrollers'])          # wide tables do scroll, inside their own box
    assert len(r['figs']) >= 10 and all(r['figs']), "a figure without its full-size link"


def test_report_full_size_link_opens_the_picture(report_page):
    "The caption's link opens the figure's own PNG in a new tab, at its full resolution (twice the size it is shown at)."
    _at_width(report_page, PHONE_PX)
    try:
        r = report_page.js("""new Promise(done => { const f = document.querySelector('figure.cnb-figure'); const img = f.querySelector('img');
            const opened = []; window.open = (u, t) => { opened.push(u); return null; };
            f.querySelector('button.cnb-full').click();
            setTimeout(() => { if (!opened.length) return done({opened: 0});
                const im = new Image(); im.onload = () => done({opened: opened.length, blob: opened[0].slice(0, 5), w: im.naturalWidth,
                    shown: img.getBoundingClientRect().width, attr: img.width}); im.onerror = () => done({opened: opened.length, error: true});
                im.src = opened[0]; }, 1000); })""")
    finally: _at_width(report_page, 1280)
    assert r['opened'] == 1 and r['blob'] == 'blob:'
    assert r['w'] >= 2 * r['attr'] - 4 and r['shown'] <= PHONE_PX   # 2x pixels; on the phone shown shrunk, the link gives them all


def test_report_file_is_small(report_page):
    assert REPORT.stat().st_size < 3e6, f"{REPORT} is {REPORT.stat().st_size / 1e6:.2f} MB"


def test_report_pdf_has_no_page_more_than_half_blank(report_page, tmp_path):
    "Printed to A4, every page but the last is at least half filled (text or pictures), measured on the rendered pages."
    import numpy as np
    from PIL import Image
    if not shutil.which('pdftoppm'): pytest.skip('pdftoppm is missing (apt-get install poppler-utils)')
    report_page.call('Emulation.setEmulatedMedia', media='')
    pdf = base64.b64decode(report_page.call('Page.printToPDF', printBackground=True, preferCSSPageSize=True)['data'])
    (tmp_path/'r.pdf').write_bytes(pdf)
    subprocess.run(['pdftoppm', '-r', '24', '-gray', str(tmp_path/'r.pdf'), str(tmp_path/'p')], check=True, timeout=300)
    pages = sorted(tmp_path.glob('p-*.pgm'))
    blank = []
    for i, p in enumerate(pages[:-1], 1):
        a = np.asarray(Image.open(p), dtype=float)
        top, bottom = round(a.shape[0] * 14 / 297), round(a.shape[0] * (1 - 15 / 297))   # REPORT_CSS's @page margins
        inked = np.flatnonzero((a[top:bottom] < 200).any(1))
        filled = (inked[-1] + 1) / (bottom - top) if len(inked) else 0.
        if filled < 0.5: blank.append(f"page {i}: {100 * (1 - filled):.0f}% blank")
    assert len(pages) >= 5 and not blank, f"{len(blank)} of {len(pages)} pages more than half blank: {blank}"


# --- a report built from a hostile study file: its text is shown as text, nothing of it runs ---------------------

_PAYLOAD = "<img src=x onerror=\\\"window.PWNED='{0}'\\\"> <script>window.PWNED='{0}-script'</script>"
HOSTILE = (
    f'title = "Title {_PAYLOAD.format("title")} <svg onload=\\\"document.title=\'PWNED\'\\\"></svg>\\n\\n## Injected title heading"\n'
    f'description = "Desc {_PAYLOAD.format("desc")} [click](javascript:window.PWNED=\'desc-link\')\\n\\n## Injected description heading"\n'
    f'baseline = "Base {_PAYLOAD.format("base")}"\n'
    'seeds = 3\n[configurations]\n'
    f'"Base {_PAYLOAD.format("base")}" = {{}}\n'
    f'"Drop <a href=\\\"javascript:window.PWNED=\'conf-link\'\\\">x</a> [y](javascript:window.PWNED=\'conf-md\') $\\\\alpha$ | pipe {_PAYLOAD.format("conf")}" = {{ dropout = 0.5 }}\n'
    '[[claims]]\n'
    f'better = "Drop <a href=\\\"javascript:window.PWNED=\'conf-link\'\\\">x</a> [y](javascript:window.PWNED=\'conf-md\') $\\\\alpha$ | pipe {_PAYLOAD.format("conf")}"\n'
    f'than = "Base {_PAYLOAD.format("base")}"\n'
    f'says = "Says {_PAYLOAD.format("says")} <body onload=\\\"window.PWNED=\'says-body\'\\\">\\n\\n## Injected claim heading"\n'
    'reported = 2.0\n'
    '[reference]\n'
    f'source = "Source {_PAYLOAD.format("source")} [s](javascript:window.PWNED=\'source-link\')\\n\\n## Injected source heading"\n'
    f'test_acc = {{ "Base {_PAYLOAD.format("base")}" = 60.0 }}\n')   # the baseline's accuracy only: a partial reference


@pytest.fixture(scope='module')
def hostile_report(tmp_path_factory):
    "A report rendered from fake runs (nothing trained) of a study file whose every piece of text is an attack."
    from cifar_nb.runs import fake_run
    from cifar_nb.study import run_dir, render_report
    from cifar_nb.study import load_study
    d = tmp_path_factory.mktemp('hostile'); (d/'study').mkdir(); (d/'study'/'study.toml').write_text(HOSTILE)
    st = load_study(d/'study'/'study.toml')
    assert all('<' in x for x in (st.title, st.description, *st.configurations, st.claims[0].says, st.reference_source))
    for n, accs in zip(st.configurations, ((0.60, 0.62, 0.61), (0.65, 0.68, 0.66))):
        for s, a in zip(st.seeds, accs): fake_run(run_dir(d/'study', n, s), st.params(n, s), acc=a, n=200)
    return render_report(d/'study', d/'report', log=lambda *a: None), st


_PAGE_FACTS = """(() => { const els = Array.from(document.querySelectorAll('*'));
    return {pwned: window.PWNED === undefined ? null : String(window.PWNED), title: document.title,
            scripts: document.scripts.length,
            handlers: els.flatMap(e => Array.from(e.attributes).filter(a => a.name.startsWith('on'))
                                   .map(a => `${e.tagName}.${e.className} ${a.name}`)),
            js_links: Array.from(document.querySelectorAll('[href], [src], [action]')).map(e => e.getAttribute('href') || e.getAttribute('src') || e.getAttribute('action'))
                           .filter(u => /^\\s*(javascript|vbscript|data:text)/i.test(u)),
            stray: els.filter(e => ['SVG', 'IFRAME', 'OBJECT', 'EMBED', 'FORM', 'BASE', 'svg'].includes(e.tagName)).length,
            imgs: document.images.length, figure_imgs: document.querySelectorAll('figure.cnb-figure > img').length,
            links: Array.from(document.querySelectorAll('a[href]')).map(a => a.getAttribute('href')).filter(h => !h.startsWith('#')),
            headings: Array.from(document.querySelectorAll('h1, h2, h3, h4, h5, h6')).map(h => [h.tagName, h.innerText.trim()]),
            cells: Array.from(document.querySelectorAll('td')).map(c => c.innerText.trim())}; })()"""


def test_hostile_study_file_runs_nothing_in_its_report(hostile_report, chromium, tmp_path):
    "No script of the study file's runs, and the page has no element the renderer did not create; the text reads as typed."
    from cifar_nb.core import plain_text
    page, st = hostile_report
    r = chromium.visit(page.as_uri())
    f = chromium.js(_PAGE_FACTS)
    one = lambda s: ' '.join(s.split())                                        # as a browser lays out text
    assert f['pwned'] is None and f['title'] == one(f'cifar_nb: {plain_text(st.title)}'), (f['pwned'], f['title'])
    assert f['scripts'] == 0 and f['js_links'] == [] and f['stray'] == 0 and f['links'] == [], f
    assert set(f['handlers']) == {'BUTTON.cnb-full onclick'}                  # the figures' own "open full size" buttons
    assert f['imgs'] == f['figure_imgs'] >= 5                                  # every picture is a figure the report drew
    assert [one(t) for h, t in f['headings'] if h == 'H1'] == [one(plain_text(st.title))]
    injected = [(h, t) for h, t in f['headings'] if 'Injected' in t]          # a user's "## ..." is text inside its own line
    assert all(t.startswith(('Title', 'Verdicts on the claims of Source')) for _, t in injected), injected
    names = set(st.configurations)
    cells = {one(c) for c in f['cells']}
    assert {one(n) for n in names} <= cells and one(plain_text(st.claims[0].says)) in cells  # shown as typed, in one line
    assert [u for u in r['requests'] if not _is_local(u) and u != page.as_uri()] == []   # nothing fetched (an <img src=x> would be)
    # the check is not vacuous: the same payload, unescaped, runs in this browser
    other = next(n for n in names if n != st.baseline)
    (tmp_path/'control.html').write_text(f"<html><body><p>{other}</p></body></html>")
    chromium.visit((tmp_path/'control.html').as_uri())
    assert chromium.js('window.PWNED') in ('conf', 'conf-script')


def test_hostile_report_sentences_agree_and_the_verdict_shows_on_a_phone(hostile_report, chromium):
    "The escaped names still tie each sentence to its table; at 390 px every verdict label of a table is on the screen."
    from cifar_nb.report import check_findings
    page, _ = hostile_report
    n, bad = check_findings(page.read_text())
    assert n >= 3 and bad == [], bad
    chromium.visit(page.as_uri())
    _at_width(chromium, PHONE_PX)
    try:
        r = chromium.js("""(() => ({vw: document.documentElement.clientWidth,
            verdicts: Array.from(document.querySelectorAll('td .cnb-verdict')).map(v => [v.innerText, Math.round(v.getBoundingClientRect().right)]),
            split: Array.from(document.querySelectorAll('.cnb-ci')).filter(s => s.getClientRects().length > 1).map(s => s.innerText)}))()""")
    finally: _at_width(chromium, 1280)
    assert len(r['verdicts']) >= 2, r
    assert all(right <= r['vw'] for _, right in r['verdicts']), f"verdict labels off the {r['vw']} px screen: {r['verdicts']}"
    assert r['split'] == [], f"intervals broken across lines: {r['split']}"
