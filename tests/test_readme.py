"""README.md is generated from nbs/index.ipynb and its findings from the committed study (`make readme`): they must agree, and it must give the two commands."""
from pathlib import Path

from cifar_nb.site import readme_with_findings, FINDINGS_MARK

ROOT = Path(__file__).resolve().parents[1]


def test_readme_matches_index_notebook():
    readme = (ROOT/'README.md').read_text()
    assert FINDINGS_MARK in readme
    assert readme == readme_with_findings('nbs/index.ipynb', ROOT), \
        'README.md differs from nbs/index.ipynb and the findings of reports/study: edit the notebook, then run `make readme`'


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
    start = next(i for i, l in enumerate(lines) if re.match(rf'\| {re.escape(first_header)} +\|', l))
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
    from cifar_nb.study import collect_runs, study_of
    from cifar_nb.report import study_table, claim_verdicts
    st = study_of(STUDY)
    rows = study_table(collect_runs(STUDY, st), st.baseline, st.reference)
    return {r['config']: r for r in rows}, {v['config']: v for v in claim_verdicts(rows, st.claims, st.baseline, st.reference) if v['kind'] == 'diff'}


def test_readme_findings_agree_with_the_report(study_rows):
    "The README's findings table (written from the study) gives every configuration's mean ± std, difference and verdict as the report's tables do."
    rows, verdicts = study_rows
    readme = _md_table((ROOT/'README.md').read_text(), 'configuration')
    html = REPORT.read_text()
    acc = _html_table(html, 'accuracy (%), mean ± std')
    cmp_ = _html_table(html, 'Δ vs Improved (pp) [Holm-adjusted interval]')
    assert set(readme) == set(rows) == set(acc), f"README rows {sorted(readme)} vs the study's {sorted(rows)}"
    for n, r in readme.items():
        assert r['test accuracy (%), mean ± std'] == acc[n]['accuracy (%), mean ± std'].strip('*') == f"{rows[n]['acc_mean']:.2f} ± {rows[n]['acc_std']:.2f}", n
        if n == 'Improved': continue
        assert r['Δ vs Improved (pp) [Holm-adjusted interval]'] == cmp_[n]['Δ vs Improved (pp) [Holm-adjusted interval]'].strip('*'), n
        assert r['p (Holm)'] == cmp_[n]['p (Holm)'], n
        if n in verdicts: assert f"**{verdicts[n]['verdict']}**" in r['verdict on the claim'], n


# --- the README's measured numbers (Performance, the course study's times) come from the files they were measured into ---

from collections import Counter

from cifar_nb.site import (Quotes, PERFORMANCE_MARK, STUDY_MARK, readme_performance, readme_study_times, numbers_in,
                           quoted_numbers, check_quotes)


def _section(text: str, start: str, end: str|None = None) -> str:
    "The README from the heading `start` to `end` (or to the next `## ` heading)."
    i = text.index(start)
    j = text.index(end, i) if end else text.find('\n## ', i + len(start))
    return text[i:j if j >= 0 else len(text)]


@pytest.mark.parametrize('heading, end, mark, write', [
    ('## Performance', None, PERFORMANCE_MARK, lambda Q: readme_performance(root=ROOT, quotes=Q)),
    ('## What the report shows', FINDINGS_MARK, STUDY_MARK, lambda Q: readme_study_times(root=ROOT, quotes=Q))])
def test_readme_measurements_come_from_their_files(heading, end, mark, write):
    "The section shows what the function writes from the files, and every number in it (prose included) is one the function quoted from a file."
    Q = Quotes(); md = write(Q)
    sec = _section((ROOT/'README.md').read_text(), heading, end)
    assert mark + '\n\n' + md.strip() in sec, f'{heading}: README.md differs from the files; run `make readme`'
    extra, missing = Counter(numbers_in(sec)) - Counter(quoted_numbers(Q)), Counter(quoted_numbers(Q)) - Counter(numbers_in(sec))
    assert not extra, f'{heading}: numbers in README.md that no file gives (type them into no prose; quote them from a file): {dict(extra)}'
    assert not missing, f'{heading}: quoted numbers missing from README.md: {dict(missing)}'
    assert check_quotes(Q, ROOT) == []


def test_a_typed_number_is_caught():
    "The check above fails on a number typed into the section's prose."
    Q = Quotes(); md = readme_performance(root=ROOT, quotes=Q)
    typed = md + '\nThe learner reached 7,777 images/s.\n'
    assert Counter(numbers_in(typed)) - Counter(quoted_numbers(Q)) == Counter({'7,777': 1})
