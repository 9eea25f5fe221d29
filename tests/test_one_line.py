"""Issue 24, item 7: every failure a user can cause is one line naming the file, folder, variable or argument, with what
to do; never a raw traceback from the command line (`--debug` or CIFAR_NB_DEBUG=1 shows it). The command line and the
public entry points are walked with bad inputs of the issue's classes: a test fails on a traceback, on a message of
several lines, on an exception raised outside cifar_nb, or on a message that does not name the culprit."""
import gzip, os, subprocess, sys, traceback
from pathlib import Path
import pytest
from cifar_nb.study import course_study
from cifar_nb.core import DataError, ArgumentError, CorruptFileError, WriteError, save_json, sha256_file
from cifar_nb.runs import RunError, fake_run, load_run, synthetic_cifar, train_run
from cifar_nb.config import TrainConfig, Placement

ROOT = Path(__file__).parents[1]
PROJECT = (DataError, ArgumentError, CorruptFileError, WriteError, RunError)

SMOKE_BASE = ('--scale', 'smoke', '--configurations', 'Base', '--seeds', '1')

def cli(*args, env=None, timeout=240):
    "Run the study's command line (smoke scale, one run) with `args` and `env` added, as its own process."
    env = {**{k: v for k, v in os.environ.items() if k != 'CIFAR_NB_DEBUG'}, 'PYTHONPATH': str(ROOT), **(env or {})}
    return subprocess.run([sys.executable, '-m', 'cifar_nb.study', *SMOKE_BASE, *map(str, args)],
                          capture_output=True, text=True, timeout=timeout, env=env, cwd=ROOT)

@pytest.fixture
def cli_here(study_cli):
    "`cli` in this process (conftest's `study_cli`): the same arguments, exit status and output, without a 5 s Python start."
    return lambda *args, env=None: study_cli(*SMOKE_BASE, *args, env=env)

def one_line(r, *names):
    "The command failed with one line on stderr, no traceback, naming each of `names`."
    assert r.returncode != 0, r.stdout + r.stderr
    assert 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith(('usage:', ' '))]
    assert len(lines) == 1 and 'error: ' in lines[0], r.stderr
    for n in names: assert str(n) in lines[0], (n, lines[0])
    return lines[0]

def raises_one_line(f, *names):
    "`f()` raises a project error whose one-line message names each of `names`; the error comes from cifar_nb."
    with pytest.raises(Exception) as e: f()
    where = traceback.extract_tb(e.value.__traceback__)[-1].filename
    assert isinstance(e.value, PROJECT), f"raw {type(e.value).__name__} from {where}: {e.value}"
    msg = str(e.value)
    assert '\n' not in msg.strip(), msg
    for n in names: assert str(n) in msg, (n, msg)
    return msg

NOUSER = '~nosuchuser42'

@pytest.mark.parametrize('var', ['CIFAR_NB_DATA', 'CIFAR_NB_CACHE'])
def test_cli_home_folder_of_an_unknown_user_names_the_variable(tmp_path, var, cli_here):
    one_line(cli_here('--study-dir', tmp_path/'s', '--plan', env={var: f'{NOUSER}/x'}), var, NOUSER)

def test_cli_data_variable_that_is_a_loop_of_links(tmp_path, cli_here):
    os.symlink(tmp_path/'loop', tmp_path/'loop')
    one_line(cli_here('--study-dir', tmp_path/'s', '--plan', env=dict(CIFAR_NB_DATA=str(tmp_path/'loop'))), 'CIFAR_NB_DATA')

def test_cli_study_json_that_is_not_an_object(tmp_path, cli_here):
    (tmp_path/'s').mkdir(); (tmp_path/'s'/'study.json').write_text('[1, 2]')
    one_line(cli_here('--study-dir', tmp_path/'s', '--plan'), 'study.json')
    assert (tmp_path/'s'/'study.json').read_text() == '[1, 2]'

def test_cli_malformed_dask_address(tmp_path, cli_here):
    pytest.importorskip('distributed')
    one_line(cli_here('--study-dir', tmp_path/'s', '--plan', '--executor', 'dask', '--address', 'foo::bar'), '--address', 'foo::bar')

@pytest.mark.parametrize('how', ['--debug', 'CIFAR_NB_DEBUG=1'])
def test_debug_shows_the_traceback(tmp_path, how, cli_here):
    "CIFAR_NB_DEBUG=1 through a real `python -m cifar_nb.study` process (the entry point, end to end); --debug in this process."
    env = {'CIFAR_NB_CACHE': f'{NOUSER}/x', **(dict([how.split('=')]) if '=' in how else {})}
    r = (cli if '=' in how else cli_here)('--study-dir', tmp_path/'s', '--plan', *([how] if how.startswith('--') else []), env=env)
    assert r.returncode != 0 and 'Traceback' in r.stderr and 'DataError' in r.stderr, r.stderr
    if '=' in how: one_line(cli('--study-dir', tmp_path/'s', '--plan', env={'CIFAR_NB_CACHE': f'{NOUSER}/x'}), 'CIFAR_NB_CACHE', NOUSER)

# --- the library's public entry points ------------------------------------------------------------------------------

def test_ood_variable_home_folder_of_an_unknown_user(monkeypatch):
    from cifar_nb.ood import load_ood_set
    monkeypatch.setenv('CIFAR_NB_OOD', f'{NOUSER}/ood')
    raises_one_line(lambda: load_ood_set('mnist', n=10), 'CIFAR_NB_OOD')

def test_cache_variable_home_folder_of_an_unknown_user(monkeypatch, tmp_path):
    from cifar_nb.data import load_cifar10, make_fake_cifar10
    src = make_fake_cifar10(tmp_path/'src', n_train=1, n_test=1)
    monkeypatch.setenv('CIFAR_NB_CACHE', f'{NOUSER}/c')
    raises_one_line(lambda: load_cifar10(src, progress=False), 'CIFAR_NB_CACHE')

def test_damaged_config_fields_are_named(tmp_path):
    from cifar_nb.core import load_json
    r = fake_run(tmp_path/'r', dict(lr=0.01))
    c = load_json(r/'config.json'); c['norm'] = 'none'; save_json(r/'config.json', c)
    m = load_json(r/'COMPLETE.json'); m['files']['config.json'] = sha256_file(r/'config.json'); save_json(r/'COMPLETE.json', m)
    raises_one_line(lambda: load_run(r), 'config.json', 'field norm')

def test_stray_seed_folder_is_skipped_and_named(tmp_path, capsys):
    import shutil
    from cifar_nb.study import run_study, finish_study
    run_study(tmp_path/'s', course_study(), seeds=1, only=['Base'], execute=lambda p, params: fake_run(p, params),
              log=lambda *a: None, data_sha=None)
    shutil.copytree(tmp_path/'s'/'runs'/'base'/'seed0', tmp_path/'s'/'runs'/'base'/'seed0.bak')
    assert Path(finish_study(tmp_path/'s')['md']).is_file()
    assert 'seed0.bak' in capsys.readouterr().out

def test_empty_and_non_tar_archives_with_a_matching_checksum_are_one_line(tmp_path):
    from cifar_nb.data import load_cifar10
    for name, raw in (('empty', b''), ('text', b'no tar here ' * 50)):
        d = tmp_path/name; d.mkdir(); a = d/'cifar10-jpeg.tar.gz'; a.write_bytes(gzip.compress(raw))
        (d/'SHA256SUMS').write_text(f'{sha256_file(a)}  cifar10-jpeg.tar.gz\n')
        raises_one_line(lambda: load_cifar10(a, cache_dir=tmp_path/'c', progress=False), str(a))

def test_too_large_n_train_names_n_train(tmp_path):
    raises_one_line(lambda: train_run(TrainConfig(n_train=1000, epochs=1), Placement(device='cpu', out_dir=str(tmp_path/'r')),
                                      data=synthetic_cifar(100, 20), progress=False), 'n_train')

def test_study_folder_below_a_file_is_one_line(tmp_path):
    from cifar_nb.study import run_study
    (tmp_path/'f').write_text('mine')
    raises_one_line(lambda: run_study(tmp_path/'f'/'s', course_study(), seeds=1, only=['Base'], execute=None, log=lambda *a: None,
                                      data_sha=None), str(tmp_path/'f'))

def test_damaged_kept_concurrency_measurement_is_ignored_with_one_warning(tmp_path, monkeypatch):
    import warnings
    from cifar_nb.study import concurrency
    monkeypatch.setattr(concurrency, 'cpu_cores', lambda: 2)  # the file is read only where there are cores to split
    f = concurrency.concurrency_file('cpu', tmp_path); f.parent.mkdir(parents=True)
    for damaged in ('{"configs": [', '{"configs": [{"jobs": "two"}]}', '[1, 2]'):
        f.write_text(damaged)
        with warnings.catch_warnings(record=True) as w:
            warnings.simplefilter('always')
            ch = concurrency.choose_jobs(4, measure=False, cache_dir=tmp_path)
        assert ch['jobs'] == 1 and 'not measured' in ch['why'], ch
        assert len(w) == 1 and str(f) in str(w[0].message) and 'measured again' in str(w[0].message), [str(x.message) for x in w]
        assert '\n' not in str(w[0].message)

def test_report_of_a_study_without_its_baseline_names_it(tmp_path):
    from cifar_nb.study import run_study, render_report
    run_study(tmp_path/'s', course_study(), seeds=1, only=['Base'], execute=lambda p, params: fake_run(p, params),
              log=lambda *a: None, data_sha=None)
    msg = raises_one_line(lambda: render_report(tmp_path/'s', tmp_path/'r', log=lambda *a: None),
                          "'Improved'", '--configurations Improved', tmp_path/'s')
    assert not (tmp_path/'r').exists(), 'the report folder was created before the check'

WRITE_WITH_A_FILE_SIZE_LIMIT = '''
import resource, sys
from cifar_nb.runs import synthetic_cifar, train_run
from cifar_nb.config import TrainConfig, Placement
resource.setrlimit(resource.RLIMIT_FSIZE, (200_000, 200_000))  # a disk that is full after 200 kB a file
train_run(TrainConfig(n_train=200, batch_size=32, epochs=1), Placement(device='cpu', out_dir=sys.argv[1]),
          data=synthetic_cifar(300, 20), progress=False)
'''

def test_disk_full_is_recorded_as_cannot_write_file_too_large(tmp_path):
    import json
    r = subprocess.run([sys.executable, '-c', WRITE_WITH_A_FILE_SIZE_LIMIT, str(tmp_path/'r')], capture_output=True,
                       text=True, timeout=240, env={**os.environ, 'PYTHONPATH': str(ROOT)}, cwd=ROOT)
    assert r.returncode != 0
    last = r.stderr.strip().splitlines()[-1]
    assert last.startswith('cifar_nb.core.WriteError: cannot write ') and 'File too large' in last, r.stderr[-2000:]
    assert 'enforce fail' not in r.stderr
    failed = json.loads((tmp_path/'r'/'FAILED.json').read_text())
    assert failed['kind'] == 'WriteError' and 'File too large' in failed['error'] and str(tmp_path/'r') in failed['error'], failed

def test_make_report_keeps_a_path_with_spaces_and_quotes_one_argument(tmp_path):
    "`make report STUDY=...` quotes what it passes: a path with a space and a quote reaches the study command whole."
    venv = Path(sys.executable).parents[1]
    if not (venv/'bin'/'python').exists(): pytest.skip('not run from a virtual environment')
    f = tmp_path/'my studies'/"it's mine.toml"; f.parent.mkdir(); f.write_text('title = "t"\n')  # refused at once
    r = subprocess.run(['make', '--no-print-directory', '-o', str(venv/'.installed-stamp'), 'report', f'VENV={venv}',
                        f'STUDY={f}', 'SCALE=smoke', f"STUDY_DIR={tmp_path/'a folder'}", f"REPORT_DIR={tmp_path/'a report'}"],
                       capture_output=True, text=True, timeout=240, cwd=ROOT,
                       env={**os.environ, 'PYTHONPATH': str(ROOT), 'CIFAR_NB_DEBUG': ''})
    ours = [l for l in r.stderr.splitlines() if not l.startswith('make')]  # make adds its own line on a failure
    assert r.returncode != 0 and ours == [f'error: {f}: baseline: is missing (a study file needs title, baseline and '
                                          'configurations)'], r.stdout + r.stderr
    assert not (tmp_path/'a folder').exists() and not (tmp_path/'a report').exists()
