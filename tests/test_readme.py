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
