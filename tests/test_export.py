"""`cifar_nb/` is generated from the notebooks: exporting again must change nothing."""
import hashlib, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'cifar_nb'


def _snapshot() -> dict:
    return {p.relative_to(PKG).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(PKG.rglob('*.py')) if '__pycache__' not in p.parts}

@pytest.fixture
def git_ok():
    if shutil.which('git') is None: pytest.skip('git is not installed')
    r = subprocess.run(['git', 'rev-parse', '--is-inside-work-tree'], cwd=ROOT, capture_output=True, text=True)
    if r.returncode or r.stdout.strip() != 'true': pytest.skip(f'{ROOT} is not a git work tree')

def test_export_leaves_package_unchanged(git_ok, tmp_path):
    "Exporting the notebooks again (into a copy of the project, so that nothing running beside the test is disturbed) gives `cifar_nb/` byte for byte."
    exe = Path(sys.executable).parent/'nbdev_export'
    if not exe.exists(): pytest.skip(f'nbdev_export is not installed beside {sys.executable}')
    copy = tmp_path/'project'
    copy.mkdir()
    for name in ('settings.ini', 'pyproject.toml'): shutil.copy2(ROOT/name, copy/name)
    shutil.copytree(ROOT/'nbs', copy/'nbs', ignore=shutil.ignore_patterns('.ipynb_checkpoints'))
    shutil.copytree(PKG, copy/'cifar_nb', ignore=shutil.ignore_patterns('__pycache__'))
    files = _snapshot()
    r = subprocess.run([str(exe)], cwd=copy, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = {p.relative_to(copy/'cifar_nb').as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
             for p in sorted((copy/'cifar_nb').rglob('*.py')) if '__pycache__' not in p.parts}
    changed = sorted(k for k in files.keys() | after.keys() if files.get(k) != after.get(k))
    import difflib
    first = ''.join(difflib.unified_diff((PKG/changed[0]).read_text().splitlines(True) if (PKG/changed[0]).exists() else [],
                                         (copy/'cifar_nb'/changed[0]).read_text().splitlines(True) if (copy/'cifar_nb'/changed[0]).exists() else [],
                                         'committed', 'exported', n=1))[:3000] if changed else ''
    assert not changed, f'nbdev_export changes {changed}: run nbdev_export and commit cifar_nb/ with the notebooks\n{first}'

# The import-circle and layer checks live beside the layout they check: nbs/00b_layout.ipynb (cifar_nb.layout).
