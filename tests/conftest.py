"""Shared test helpers. `study_cli` runs the study's command line (`cifar_nb.cli.main`, what `python -m cifar_nb.study`
executes) in the test's own process: a refusal is checked in milliseconds instead of the 4-5 s a fresh Python spends
importing torch. Each test file that checks the
command line keeps at least one real `python -m cifar_nb.study` subprocess for the entry point itself."""
import subprocess
from pathlib import Path
import pytest

ROOT = Path(__file__).resolve().parents[1]


@pytest.fixture
def study_cli(capsys, monkeypatch):
    """`study_cli(*args, env={...})`: the command line run in this process, from the project folder, with CIFAR_NB_DEBUG
    unset and `env` added; returns a `subprocess.CompletedProcess` (exit status, stdout, stderr) like `subprocess.run`."""
    from cifar_nb.cli import main
    def run(*args, env=None):
        with monkeypatch.context() as mp:
            mp.delenv('CIFAR_NB_DEBUG', raising=False)
            for k, v in (env or {}).items(): mp.setenv(k, v)
            mp.chdir(ROOT)
            capsys.readouterr()
            try: code = main([str(a) for a in args])
            except SystemExit as e: code = e.code if isinstance(e.code, int) else 1  # argparse's errors: status 2
            out, err = capsys.readouterr()
        return subprocess.CompletedProcess(['python', '-m', 'cifar_nb.study', *map(str, args)], code, out, err)
    return run
