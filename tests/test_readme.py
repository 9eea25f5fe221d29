"""README.md is generated from nbs/index.ipynb (`make readme`): the two must agree, and it must give the two commands."""
from pathlib import Path

from cifar_nb.publish import readme_text

ROOT = Path(__file__).resolve().parents[1]


def test_readme_matches_index_notebook():
    readme = (ROOT/'README.md').read_text()
    assert readme == readme_text('nbs/index.ipynb', ROOT), \
        'README.md differs from nbs/index.ipynb: edit the notebook, then run `make readme`'


def test_readme_gives_the_two_commands():
    readme = (ROOT/'README.md').read_text()
    assert readme.startswith('<!-- generated from nbs/index.ipynb by `make readme`; edit the notebook -->')
    for cmd in ('make report', 'make test'): assert cmd in readme, f'README.md does not mention `{cmd}`'


def test_readme_has_no_directives_or_hidden_cells():
    readme = (ROOT/'README.md').read_text()
    assert '#| ' not in readme


# --- the README's findings agree with the report's and with the study's data ------------------------------------

import re
import pytest

STUDY = ROOT/'reports'/'study'
REPORT = ROOT/'reports'/'report.html'
_PM = re.compile(r'([+-]?\d+\.\d+)\s*±\s*(\d+\.\d+)')


def _md_table(text: str, first_header: str) -> dict:
    "{first cell: {header: cell}} of the Markdown table whose first header is `first_header`."
    lines = text.splitlines()
    start = next(i for i, l in enumerate(lines) if l.startswith(f'| {first_header} |'))
    cells = lambda l: [c.strip() for c in l.strip().strip('|').split('|')]
    head, out = cells(lines[start]), {}
    for l in lines[start + 2:]:
        if not l.startswith('|'): break
        row = dict(zip(head, cells(l))); out[row[first_header]] = row
    return out


def _html_table(html: str, header: str) -> dict:
    "{first cell: {header: cell}} of the report's table that has a column called `header`."
    from bs4 import BeautifulSoup
    for t in BeautifulSoup(html, 'html.parser').find_all('table'):
        head = [th.get_text(' ', strip=True) for th in t.find_all('th')]
        if header in head:
            rows = [[td.get_text(' ', strip=True) for td in tr.find_all('td')] for tr in t.find_all('tr')[1:]]
            return {r[0]: dict(zip(head, r)) for r in rows if r}
    raise AssertionError(f'the report has no table with a column {header!r}')


@pytest.fixture(scope='module')
def study_rows():
    if not (STUDY/'runs').exists() or not REPORT.exists(): pytest.skip('no committed study or rendered report')
    from cifar_nb.study import collect_runs
    from cifar_nb.stats import study_table, claim_verdicts
    rows = study_table(collect_runs(STUDY))
    return {r['config']: r for r in rows}, {v['config']: v for v in claim_verdicts(rows)}


def test_readme_findings_agree_with_the_report_and_the_study(study_rows):
    "Every mean ± std, paired difference ± half-width, Holm p and verdict the README quotes is the study's, and the report's tables say the same."
    rows, verdicts = study_rows
    readme = _md_table((ROOT/'README.md').read_text(), 'configuration')
    html = REPORT.read_text()
    acc = _html_table(html, 'accuracy (%), mean ± std')
    cmp_ = _html_table(html, 'Δ vs Improved (pp, ± 95% half-width)')
    assert set(readme) == set(rows), f"README rows {sorted(readme)} vs the study's {sorted(rows)}"
    for n, r in readme.items():
        row = rows[n]
        m, sd = map(float, _PM.search(r['test accuracy (%), mean ± std']).groups())
        assert (m, sd) == (round(row['acc_mean'], 2), round(row['acc_std'], 2)), n
        assert acc[n]['accuracy (%), mean ± std'] == f"{m:.2f} ± {sd:.2f}", n
        if r['the report (%)']: assert float(r['the report (%)']) == row['report_acc'] == float(acc[n]['report (%)']), n
        if n == 'Improved': continue
        d, hw = map(float, _PM.search(r['Δ vs Improved (pp), ± 95% half-width']).groups())
        assert (d, hw) == (round(row['vs_improved_diff'], 2), round(row['vs_improved_diff_ci95'], 2)), n
        assert cmp_[n]['Δ vs Improved (pp, ± 95% half-width)'] == f"{d:+.2f} ± {hw:.2f}", n
        assert float(r['p (Holm)']) == round(row['vs_improved_p_holm'], 3) == float(cmp_[n]['p (Holm)']), n
        if n in verdicts and verdicts[n]['kind'] == 'diff':
            assert f"**{verdicts[n]['verdict']}**" in r["the report's claim"], n
            assert cmp_[n]['verdict'] == verdicts[n]['verdict'], n
    assert "**not comparable**" in readme['Improved']["the report's claim"] and verdicts['Improved']['verdict'] == 'not comparable'


def test_readme_quotes_no_number_the_study_does_not_have(study_rows):
    "The headline numbers in the README's bullet points (the learning-rate run) are the study's."
    rows, _ = study_rows
    text = (ROOT/'README.md').read_text()
    lr = rows['Improved @ lr 0.001']
    assert f"**{lr['acc_mean']:.2f} ± {lr['acc_std']:.2f}%**" in text
    assert f"{lr['vs_improved_diff']:.1f} points above" in text


_NUM = re.compile(r'(?<![\w.])[+-]?\d+(?:\.\d+)?(?=%|\b)')


def _ood_findings(html: str) -> str:
    "The report's OOD paragraph in its Findings (the one that starts 'Out of distribution')."
    from bs4 import BeautifulSoup
    for p in BeautifulSoup(html, 'html.parser').find_all('p'):
        t = p.get_text(' ', strip=True)
        if t.startswith('Out of distribution'): return t
    raise AssertionError("the report's Findings have no paragraph on out-of-distribution detection")


def test_readme_ood_numbers_are_the_reports():
    "Every number in the README's OOD bullet is one the report's OOD findings state (which compute them from the study's tables)."
    if not REPORT.exists(): pytest.skip('no rendered report')
    readme = (ROOT/'README.md').read_text()
    bullet = next((b for b in readme.split('\n- ') if b.startswith('**OOD detection**')), None)
    assert bullet, "the README has no '**OOD detection**' bullet"
    bullet = bullet.split('\n\n')[0]
    report = _ood_findings(REPORT.read_text())
    said = set(_NUM.findall(report))
    quoted = _NUM.findall(bullet)
    missing = [n for n in quoted if n not in said]
    assert quoted and not missing, f"the README's OOD bullet quotes {missing}, which the report's OOD findings do not state: {report[:300]}"
