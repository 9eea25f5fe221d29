"""`cifar_nb/` is generated from the notebooks: exporting again must change nothing."""
import hashlib, shutil, subprocess, sys
from pathlib import Path

import pytest

ROOT = Path(__file__).resolve().parents[1]
PKG = ROOT/'cifar_nb'


def _git_status() -> str:
    return subprocess.run(['git', 'status', '--porcelain', '--untracked-files=all', '--', 'cifar_nb'],
                          cwd=ROOT, capture_output=True, text=True, check=True, timeout=60).stdout

def _snapshot() -> dict:
    return {p.relative_to(PKG).as_posix(): hashlib.sha256(p.read_bytes()).hexdigest()
            for p in sorted(PKG.rglob('*.py')) if '__pycache__' not in p.parts}

@pytest.fixture
def git_ok():
    if shutil.which('git') is None: pytest.skip('git is not installed')
    r = subprocess.run(['git', 'rev-parse', '--is-inside-work-tree'], cwd=ROOT, capture_output=True, text=True)
    if r.returncode or r.stdout.strip() != 'true': pytest.skip(f'{ROOT} is not a git work tree')

def test_export_leaves_package_unchanged(git_ok):
    exe = Path(sys.executable).parent/'nbdev_export'
    if not exe.exists(): pytest.skip(f'nbdev_export is not installed beside {sys.executable}')
    status, files = _git_status(), _snapshot()
    r = subprocess.run([str(exe)], cwd=ROOT, capture_output=True, text=True, timeout=300)
    assert r.returncode == 0, r.stderr
    after = _snapshot()
    changed = sorted(k for k in files.keys() | after.keys() if files.get(k) != after.get(k))
    assert not changed, f'nbdev_export changed {changed}: run nbdev_export and commit cifar_nb/ with the notebooks'
    assert _git_status() == status

def _imports(path) -> set:
    "The cifar_nb modules a module imports, at any depth (functions included), except under `if __name__ == '__main__'`."
    import ast
    tree, out = ast.parse(path.read_text()), set()
    def walk(node):
        for ch in ast.iter_child_nodes(node):
            if (isinstance(ch, ast.If) and isinstance(ch.test, ast.BoolOp) or isinstance(ch, ast.If)) and '__main__' in ast.unparse(ch.test):
                continue  # an entry point, not a dependency
            if isinstance(ch, ast.ImportFrom):
                mod = ch.module or ''
                if ch.level == 1: out.add(mod.split('.')[0] if mod else None)
                elif mod.startswith('cifar_nb.'): out.add(mod.split('.')[1])
                elif mod == 'cifar_nb': out.update(a.name for a in ch.names)
            elif isinstance(ch, ast.Import):
                out.update(a.name.split('.')[1] for a in ch.names if a.name.startswith('cifar_nb.'))
            walk(ch)
    walk(tree)
    return out - {None, path.stem}

def test_no_import_circle():
    "The modules form layers: no module imports (at any depth, lazily or not) one that imports it back."
    from cifar_nb.core import project_root
    mods = {p.stem: p for p in (project_root()/'cifar_nb').glob('*.py') if not p.stem.startswith('_')}
    graph = {m: _imports(p) & set(mods) for m, p in mods.items()}
    state, stack = {}, []
    def visit(m):
        state[m] = 'open'; stack.append(m)
        for n in sorted(graph[m]):
            if state.get(n) == 'open': raise AssertionError('import circle: ' + ' -> '.join(stack[stack.index(n):] + [n]))
            if n not in state: visit(n)
        state[m] = 'done'; stack.pop()
    for m in sorted(graph):
        if m not in state: visit(m)
    assert graph['study'] and 'cli' in graph and 'study' not in graph['interpret']  # the graph was read
