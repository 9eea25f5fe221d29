"""Reliability: a run killed at any moment resumes to the same result, one writer per folder, write failures keep
earlier results, nothing unsafe is loaded, damaged files are named. Every test trains tiny runs on synthetic data (CPU)."""
import errno, os, signal, subprocess, sys, textwrap, time
from pathlib import Path
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck
from safetensors.torch import load_file
from cifar_nb import core
from cifar_nb.core import atomic_path, atomic_write_text, save_json, load_json, WriteError, CorruptFileError
from cifar_nb.config import TrainConfig, Placement, ConfigError, split_params, TRAIN_FIELDS, PLACEMENT_FIELDS
from cifar_nb.train import CheckpointError
from cifar_nb.runs import train_run, load_run, run_lock, RunError, synthetic_cifar, CHECKPOINT, COMPLETE

# A training process: tiny synthetic data, several epochs, float32 on one thread so two processes agree bit for bit.
SCRIPT = textwrap.dedent('''
    import sys, torch
    torch.set_num_threads(1)
    from cifar_nb.config import TrainConfig, Placement
    from cifar_nb.runs import train_run, synthetic_cifar
    cfg = TrainConfig(n_train=600, epochs=4, batch_size=40, lr=0.01, lr_drop_period=2, seed=3)  # ~2 s of training after ~2 s
                                                                                     # of start-up (2-core EPYC): a drop mid-run
    place = Placement(device='cpu', precision='fp32', compile='no', out_dir=sys.argv[1])
    train_run(cfg, place, data=synthetic_cifar(n_train=1500, n_test=200, seed=1), progress=False)
''')

def _train(out_dir, wait=True):
    p = subprocess.Popen([sys.executable, '-c', SCRIPT, str(out_dir)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True)
    if wait:
        out, _ = p.communicate(timeout=300)
        assert p.returncode == 0, out
    return p

def _result(d):
    r = load_run(d)
    w = load_file(str(Path(d)/'weights.safetensors'))
    keep = ('test_acc', 'test_loss', 'best_epoch', 'best_val_loss', 'epochs_run', 'n_train')
    return r.history, {k: r.metrics[k] for k in keep}, w, r.logits

def _same(a, b):
    (ha, ma, wa, la), (hb, mb, wb, lb) = a, b
    assert ha == hb and ma == mb
    assert wa.keys() == wb.keys() and all(torch.equal(wa[k], wb[k]) for k in wa)
    assert np.array_equal(la, lb)

@pytest.fixture(scope='module')
def reference(tmp_path_factory):
    "One uninterrupted run (in its own process) and how long it took."
    d = tmp_path_factory.mktemp('ref')/'run'
    t = time.time(); _train(d)
    return _result(d), time.time() - t

def test_side_by_side_processes_are_bit_identical(reference, tmp_path):
    "Two processes with the same seed in different folders, at the same time: both equal the reference bit for bit."
    ps = [_train(tmp_path/f'run{i}', wait=False) for i in range(2)]
    for p in ps:
        out, _ = p.communicate(timeout=300); assert p.returncode == 0, out
    for i in range(2): _same(_result(tmp_path/f'run{i}'), reference[0])

def _kill_after(d, seconds=None, after_checkpoints=None):
    "Start a run, SIGKILL it after some time or once a checkpoint has been written `after_checkpoints` times."
    p = _train(d, wait=False)
    t0, seen, last = time.time(), 0, None
    while p.poll() is None and time.time() - t0 < 120:
        ck = d/CHECKPOINT
        if ck.exists() and ck.stat().st_mtime_ns != last: last = ck.stat().st_mtime_ns; seen += 1
        if (seconds is not None and time.time() - t0 >= seconds) or (after_checkpoints is not None and seen >= after_checkpoints): break
        time.sleep(0.005)
    p.send_signal(signal.SIGKILL); p.wait()

def test_killed_after_an_epoch_resumes_to_the_same_result(reference, tmp_path):
    d = tmp_path/'run'
    _kill_after(d, after_checkpoints=2)
    assert not (d/COMPLETE).exists() and (d/CHECKPOINT).exists()
    with pytest.raises(RunError, match='incomplete'): load_run(d)  # readers refuse the half-done folder
    _train(d)
    assert not (d/CHECKPOINT).exists()
    _same(_result(d), reference[0])

@pytest.mark.parametrize('frac', [0.35, 0.75])
def test_killed_at_any_moment_resumes_to_the_same_result(reference, tmp_path, frac):
    "Kills at moments that fall in start-up, mid-epoch or a checkpoint write; the rerun always ends identical."
    d = tmp_path/'run'
    _kill_after(d, seconds=frac*reference[1])
    _train(d)
    _same(_result(d), reference[0])
    assert not list(d.glob('.*.tmp')), 'a killed write left a temporary file that the rerun did not clean up'

def test_second_writer_fails_at_once(tmp_path):
    d = tmp_path/'run'
    with run_lock(d):
        p = subprocess.run([sys.executable, '-c', SCRIPT, str(d)], capture_output=True, text=True, timeout=120)
    assert p.returncode != 0 and 'RunLocked' in p.stderr and 'in use by another training process' in p.stderr

def _interrupted(d):
    "A run folder that looks like an interrupted run: its config.json, as train_run wrote it, and no results."
    import dataclasses
    cfg, place = TrainConfig(n_train=100, epochs=2, batch_size=50), Placement(device='cpu', precision='fp32', out_dir=str(d))
    syn = synthetic_cifar(200, 50)
    d.mkdir()
    save_json(d/'config.json', dict(format=2, params=dataclasses.asdict(cfg), classes=list(syn.classes),
                                     norm=dict(mean=[0.5]*3, std=[0.25]*3),
                                     data=dict(arrays_sha256=syn.source['arrays_sha256'])))
    return cfg, place

def test_pickle_carrying_code_is_refused(tmp_path):
    "A checkpoint whose pickle would run code is refused (weights_only=True) and the code never runs."
    marker = tmp_path/'pwned'
    class Evil:
        def __reduce__(self): return (os.system, (f'touch {marker}',))
    d = tmp_path/'run'
    cfg, place = _interrupted(d)
    torch.save({'model': Evil()}, d/CHECKPOINT)  # a poisoned checkpoint
    with pytest.raises(CheckpointError, match='checkpoint.pt cannot be loaded'):
        train_run(cfg, place, data=synthetic_cifar(200, 50), progress=False)
    assert not marker.exists()

def test_truncated_checkpoint_is_named(tmp_path):
    d = tmp_path/'run'
    cfg, place = _interrupted(d)
    (d/CHECKPOINT).write_bytes(b'PK\x03\x04 truncated')
    with pytest.raises(CheckpointError, match='delete it'): train_run(cfg, place, data=synthetic_cifar(200, 50), progress=False)

@pytest.fixture(scope='module')
def small_run(tmp_path_factory):
    d = tmp_path_factory.mktemp('small')/'run'
    train_run(TrainConfig(n_train=100, epochs=1, batch_size=50), Placement(device='cpu', precision='fp32', out_dir=str(d)),
              data=synthetic_cifar(200, 50), progress=False)
    return d

@pytest.mark.parametrize('name,damage', [
    ('weights.safetensors', lambda b: b[:len(b)//2]),
    ('predictions.npz', lambda b: b[:100]),
    ('history.csv.xz', lambda b: b[:-8]),
    ('split.npz', lambda b: b[:50]),
    ('metrics.json', lambda b: b[:-5]),
])
def test_damaged_run_files_are_named(small_run, tmp_path, name, damage):
    import shutil
    d = tmp_path/'copy'; shutil.copytree(small_run, d)
    (d/name).write_bytes(damage((d/name).read_bytes()))
    with pytest.raises(RunError, match=name) as e: load_run(d)
    assert 'delete' in str(e.value)

def test_corrupt_json_is_named(tmp_path):
    p = tmp_path/'x.json'; p.write_text('{"a": 1')
    with pytest.raises(CorruptFileError, match='x.json'): load_json(p)

def test_full_disk_keeps_the_old_file(tmp_path, monkeypatch):
    "A write that fails half-way (ENOSPC) raises WriteError naming the path; the earlier file is intact, no temp file left."
    p = tmp_path/'table.csv'; atomic_write_text(p, 'old results\n')
    def failing_write(*a, **k):
        raise OSError(errno.ENOSPC, 'No space left on device')
    with pytest.raises((WriteError, OSError)) as e:
        with atomic_path(p) as tmp:
            Path(tmp).write_text('half of the new ')
            failing_write()
    assert str(p) in str(e.value) or e.value.errno == errno.ENOSPC
    assert p.read_text() == 'old results\n' and not list(tmp_path.glob('.*.tmp'))

def test_unwritable_folder_names_the_path(tmp_path, monkeypatch):
    "A folder where no file can be created (read-only, full): WriteError names the path; nothing earlier is touched."
    p = tmp_path/'ro'/'metrics.json'; save_json(p, {'acc': 0.6})
    def deny(*a, **k): raise PermissionError(errno.EROFS, 'Read-only file system')
    monkeypatch.setattr(core.tempfile, 'mkstemp', deny)
    with pytest.raises(WriteError, match='ro/metrics.json') as e: save_json(p, {'acc': 0.7})
    assert 'Read-only' in str(e.value)
    monkeypatch.undo()
    assert load_json(p) == {'acc': 0.6}

@pytest.mark.skipif(os.geteuid() == 0, reason='root ignores permission bits')
def test_read_only_folder_real(tmp_path):
    d = tmp_path/'ro'; d.mkdir(); save_json(d/'m.json', {'a': 1}); d.chmod(0o555)
    try:
        with pytest.raises(WriteError, match='m.json'): save_json(d/'m.json', {'a': 2})
        assert load_json(d/'m.json') == {'a': 1}
    finally: d.chmod(0o755)

# --- configuration validation, property-based -------------------------------------------------------------
GOOD = dict(lr=st.floats(1e-6, 10), momentum=st.floats(0, 0.99), batch_size=st.integers(1, 4096), epochs=st.integers(1, 500),
            lr_schedule=st.sampled_from(['piecewise', 'none']), lr_drop_factor=st.floats(1e-3, 1), lr_drop_period=st.integers(1, 100),
            l2=st.floats(0, 1), batchnorm=st.booleans(), dropout=st.floats(0, 0.99), val_fraction=st.floats(0.01, 0.99),
            augment=st.booleans(), patience=st.none() | st.integers(1, 50), seed=st.integers(0, 2**31), n_train=st.none() | st.integers(10, 45000),
            precision=st.sampled_from(['auto', 'bf16', 'fp32']), channels_last=st.booleans(), compile=st.sampled_from(['auto', 'yes', 'no']))
BAD = dict(lr=st.sampled_from([0, -1e-3, float('inf'), float('nan'), '0.1', True]), momentum=st.sampled_from([-0.1, 1, 1.5, None]),
           batch_size=st.sampled_from([0, -1, 1.5, '128', True]), epochs=st.sampled_from([0, -3, 2.0]),
           lr_schedule=st.sampled_from(['cosine', '', None, 1]), lr_drop_factor=st.sampled_from([0, 1.5, -0.1]),
           lr_drop_period=st.sampled_from([0, -1, 1.0]), l2=st.sampled_from([-0.1, float('nan'), float('inf')]),
           batchnorm=st.sampled_from([1, 'yes', None]), dropout=st.sampled_from([1, 1.0, -0.2, 2]),
           val_fraction=st.sampled_from([0, 1, 1.5, -0.1]), patience=st.sampled_from([0, -1, 1.5]), seed=st.sampled_from([-1, 1.0, None]),
           n_train=st.sampled_from([0, 5, -10, 100.0]), precision=st.sampled_from(['fp64', 'half', None]), compile=st.sampled_from(['maybe', True]))

@settings(max_examples=60, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.fixed_dictionaries({}, optional=GOOD))
def test_every_good_config_is_accepted(d):
    cfg, place = split_params({**d, 'device': 'cpu'})
    assert all(getattr(cfg if k in TRAIN_FIELDS else place, k) == v or (v != v) for k, v in d.items())

@settings(max_examples=80, deadline=None)
@given(st.sampled_from(sorted(BAD)).flatmap(lambda k: st.tuples(st.just(k), BAD[k])))
def test_every_bad_value_is_rejected_with_its_name(kv):
    k, v = kv
    with pytest.raises(ConfigError, match=f'parameter {k}='): split_params({k: v, 'device': 'cpu'})

@settings(max_examples=30, deadline=None)
@given(st.text(min_size=1, max_size=12).filter(lambda s: s not in TRAIN_FIELDS + PLACEMENT_FIELDS))
def test_unknown_names_are_rejected_listing_the_known_ones(name):
    with pytest.raises(ConfigError, match='unknown parameter') as e: split_params({name: 1})
    assert 'lr, momentum' in str(e.value)
