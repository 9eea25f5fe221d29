"""Executors: a study on a local Dask cluster of two workers equals the local executor bit for bit at one thread per run,
even when a worker is SIGKILLed mid-run (its kernel dies with it, the engine reruns the run, which resumes from its
checkpoint); a second driver fails at once; a worker that cannot see the study folder stops the study before training.
Runs are tiny (300 fake JPEG images, 4 epochs) so that each test takes seconds on 2 cores."""
import hashlib, json, os, shutil, signal, subprocess, sys, threading, time
from pathlib import Path
import pytest
distributed = pytest.importorskip('distributed')  # the cluster extra: pip install -e '.[cluster]' (make installs it with dev)
import psutil
from cifar_nb import study, cli
from cifar_nb.study import course_study, parse_study
from cifar_nb.data import make_fake_cifar10
from cifar_nb.study import DaskExecutor, LocalExecutor, ExecutorError, study_lock
from cifar_nb.runs import COMPLETE, CHECKPOINT

TINY = dict(n_train=300, epochs=4, lr_drop_period=2)  # ~0.5 s an epoch at one thread: a kill after the first checkpoint lands mid-run
# Base and Improved of the course study, at the tiny scale (a scale is part of the study, not a global)
STUDY = parse_study(dict(title='tiny', baseline='Improved', scale=TINY,
                        configurations={n: course_study().configurations[n] for n in ('Base', 'Improved')}))
COMPARED = ('weights.safetensors', 'predictions.npz', 'history.csv.xz', 'split.npz')  # what a run computes (metrics.json also holds timings)

@pytest.fixture(scope='module')
def tiny(tmp_path_factory):
    "A tiny JPEG CIFAR-10 found through CIFAR_NB_DATA (workers and kernels inherit it)."
    d = tmp_path_factory.mktemp('tiny')
    mp = pytest.MonkeyPatch()
    mp.setenv('CIFAR_NB_DATA', str(make_fake_cifar10(d/'data', n_train=40, n_test=10)))
    mp.setenv('CIFAR_NB_CACHE', str(d/'cache'))
    yield d
    mp.undo()

def _digests(study_dir) -> dict:
    return {f"{p.parent.name}/{p.name}/{f}": hashlib.sha256((p/f).read_bytes()).hexdigest()
            for p in sorted(Path(study_dir).glob('runs/*/seed*')) for f in COMPARED}

@pytest.fixture(scope='module')
def reference(tiny):
    "The study with the local executor: two kernels at once, one thread each."
    d = tiny/'local'
    t = time.perf_counter()
    study.run_study(d, STUDY, 1, executor=LocalExecutor(jobs=2, threads=1), log=lambda s: None)
    return _digests(d), time.perf_counter() - t

def _wait(cond, timeout, what):
    t = time.time()
    while not cond():
        if time.time() - t > timeout: raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.02)

@pytest.mark.slow
def test_killed_worker_is_retried_resumes_and_matches_local_bits(tiny, reference):
    "SIGKILL the worker training Improved after its first epoch: its kernel dies, the run resumes elsewhere, both runs equal the local executor's bits."
    d, logs, out = tiny/'dask', [], {}
    run = d/'runs'/'improved'/'seed0'
    with DaskExecutor(jobs=2, threads=1) as ex:
        pids = ex.client.run(os.getpid)                      # worker address -> process id
        def driver():
            try: study.run_study(d, STUDY, 1, executor=ex, log=logs.append, reuse_from=[])
            except BaseException as e: out['error'] = e
        th = threading.Thread(target=driver); th.start()
        _wait(lambda: (run/CHECKPOINT).exists() or not th.is_alive(), 180, 'the first checkpoint of Improved')
        assert not (run/COMPLETE).exists(), 'the run finished before the kill: make TINY longer'
        addr = next(a for a, keys in ex.client.processing().items() if any('improved-seed0' in k for k in keys))
        worker = psutil.Process(pids[addr])
        kernels = [p for p in worker.children(recursive=True) if 'ipykernel' in ' '.join(p.cmdline())]
        assert len(kernels) == 1, kernels
        worker.send_signal(signal.SIGKILL)
        gone, alive = psutil.wait_procs(kernels, timeout=10)
        assert not alive, 'the kernel of the killed worker lives on as an orphan'
        th.join(300)
        assert not th.is_alive() and 'error' not in out, out.get('error')
        _wait(lambda: len(ex.workers()) == 2, 30, 'the nanny to restart the killed worker')
        assert pids[addr] not in ex.client.run(os.getpid).values()
        # a second invocation reuses both runs
        again = []
        study.run_study(d, STUDY, 1, executor=ex, log=again.append, reuse_from=[])
        assert '2 complete and reused, 0 shared from other studies, 0 to train' in again[0], again
    nb = (run/'train.ipynb').read_text()
    assert 'resuming' in nb and CHECKPOINT in nb                # the rerun started from the checkpoint, not from scratch
    assert any('to train on dask local cluster' in l for l in logs), logs
    assert _digests(d) == reference[0]                          # bit-identical to the local executor, killed run included
    assert len(reference[0]) == 2 * len(COMPARED)

def test_second_driver_fails_at_once(tmp_path):
    "While one driver holds the study folder, another process's study stops at once, before any run."
    d = tmp_path/'study'
    code = (f"from cifar_nb.study import run_study; from cifar_nb.runs import fake_run; from cifar_nb.study import course_study; "
            f"run_study({str(d)!r}, course_study(), execute=fake_run, only=['Base'], seeds=1)")
    with study_lock(d):
        r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)
    assert r.returncode != 0 and 'in use by another study driver' in r.stderr, r.stderr[-2000:]
    assert not (d/'runs').exists()
    r = subprocess.run([sys.executable, '-c', code], capture_output=True, text=True, timeout=120)  # free again
    assert r.returncode == 0, r.stderr[-2000:]

def _unshare_ok() -> bool:
    return shutil.which('unshare') is not None and subprocess.run(
        ['unshare', '--mount', '--propagation', 'private', 'true'], capture_output=True).returncode == 0

@pytest.mark.skipif(not _unshare_ok(), reason='needs unshare --mount (root) to give a worker its own view of the file system')
def test_worker_that_cannot_see_the_study_folder_stops_the_study(tmp_path):
    "A worker whose file system hides the study folder (an empty tmpfs mounted over it): the study says which and trains nothing."
    d = tmp_path/'study'; d.mkdir()
    with DaskExecutor(jobs=1, threads=1) as ex:
        dask = Path(sys.executable).parent/'dask'
        cmd = (f"mount -t tmpfs none {d} && exec {dask} worker {ex.client.scheduler.address} --nthreads 1 "
               f"--resources CPU=1 --no-nanny --no-dashboard --name blind")
        w = subprocess.Popen(['unshare', '--mount', '--propagation', 'private', 'sh', '-c', cmd],
                             stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
        try:
            _wait(lambda: len(ex.workers()) == 2, 60, 'the blind worker to join')
            calls = []
            with pytest.raises(ExecutorError, match='1 of 2 workers cannot run this study') as e:
                study.run_study(d, course_study(), 1, 'smoke', only=['Base'], executor=ex, execute=lambda p, params: calls.append(p), log=lambda s: None)
            blind = next(a for a, w in ex.workers().items() if w.get('name') == 'blind')
            assert f'{blind}: cannot read' in str(e.value) and 'does not see the study folder' in str(e.value), str(e.value)
            assert calls == [] and not (d/'runs').exists()
        finally:
            w.send_signal(signal.SIGTERM); w.wait(30)

def test_command_line_plans_where_runs_go(tmp_path, monkeypatch, capsys):
    monkeypatch.setattr(study.plan, 'measure_throughput', lambda *a, **k: 1000.)
    assert cli.main(['--study-dir', str(tmp_path), '--configurations', 'Base', '--executor', 'dask', '--jobs', '2', '--threads', '1', '--plan']) == 0
    out = capsys.readouterr().out
    assert 'runs go to: dask local cluster tcp://127.0.0.1:' in out and '2 workers (CPU=1), each run asks for CPU=1 and trains with 1 thread' in out, out
    assert cli.main(['--study-dir', str(tmp_path), '--configurations', 'Base', '--jobs', '2', '--threads', '1', '--plan']) == 0
    assert 'runs go to: 2 local processes x 1 thread' in capsys.readouterr().out
    for bad, msg in ((['--address', 'tcp://127.0.0.1:1'], 'add --executor dask'), (['--threads', '64'], 'exceed the'), (['--threads', '100000'], '--threads must be in [1, 1024]'),
                     (['--executor', 'dask', '--address', 'tcp://127.0.0.1:1', '--jobs', '2'], '--jobs sets the workers of a local cluster')):
        with pytest.raises(SystemExit): cli.main(['--study-dir', str(tmp_path), '--plan', *bad])
        assert msg in capsys.readouterr().err
    assert not (tmp_path/'runs').exists()

def test_jobs_auto_uses_this_machines_measurement(tmp_path, monkeypatch, capsys):
    "A full-scale local study without --jobs or --threads: the split measured on this machine (planted here), and why; --plan never measures."
    from cifar_nb.study import concurrency
    if concurrency.cpu_cores() < 2: pytest.skip('one core: nothing to split')
    monkeypatch.setattr(concurrency, 'default_cache_dir', lambda: tmp_path/'cache')
    monkeypatch.setattr(study.plan, 'measure_throughput', lambda *a, **k: 1000.)
    args = ['--study-dir', str(tmp_path/'s'), '--configurations', 'Base,Improved', '--plan']
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert "runs go to: 1 local process x torch's default threads (--jobs auto: not measured on this machine yet" in out, out
    concurrency.save_concurrency(dict(device='cpu', cores=2, configs=[dict(jobs=2, threads=1, ratio=1.3, bit_identical_to_alone=True)]))
    assert cli.main(args) == 0
    out = capsys.readouterr().out
    assert 'runs go to: 2 local processes x 1 thread (--jobs auto: measured on this machine' in out and '1.30x' in out, out
    for more, expect in ((['--jobs', '1'], "1 local process x torch's default threads\n"), (['--threads', '1'], '1 local process x 1 thread\n'),
                         (['--scale', 'smoke'], "1 local process x torch's default threads\n"), (['--scale', 'smoke', '--jobs', 'auto'], '2 local processes x 1 thread (--jobs auto')):
        assert cli.main([*args, *more]) == 0
        assert f'runs go to: {expect}' in capsys.readouterr().out, more
    assert not (tmp_path/'s'/'runs').exists()

def test_joins_a_running_cluster(tmp_path):
    "`--address`: a scheduler and a worker started with the `dask` command (as on a cluster); runs ask for the worker's CPU share."
    dask = str(Path(sys.executable).parent/'dask')
    sched = subprocess.Popen([dask, 'scheduler', '--host', '127.0.0.1', '--port', '0', '--no-dashboard',
                              '--scheduler-file', str(tmp_path/'s.json')], stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL)
    procs = [sched]
    try:
        def address():  # the scheduler writes its file in place: it may exist before it holds JSON
            try: return json.loads((tmp_path/'s.json').read_text())['address']
            except (OSError, ValueError, KeyError): return None
        _wait(address, 60, 'the scheduler file')
        addr = address()
        with pytest.raises(ExecutorError, match='no Dask scheduler with workers'):
            DaskExecutor(addr, timeout_s=1)                     # no worker yet
        procs.append(subprocess.Popen([dask, 'worker', addr, '--nthreads', '2', '--resources', 'CPU=2', '--no-dashboard'],
                                      stdout=subprocess.DEVNULL, stderr=subprocess.DEVNULL))
        with DaskExecutor(addr) as ex:
            assert ex.describe() == (f"dask cluster {addr}: 1 worker (CPU=2), each run asks for CPU=1 and trains with 1 thread: "
                                     "up to 2 at once"), ex.describe()
            ex.check_folder(tmp_path)
            def run(path, params): (path/'t').write_text(str(params['threads']))
            assert sorted(i for i, _ in ex.map(run, [(tmp_path/f'r{i}', {}) for i in range(3)])) == [0, 1, 2]
            assert {(tmp_path/f'r{i}'/'t').read_text() for i in range(3)} == {'1'}
        with pytest.raises(ExecutorError, match='no worker offers CPU=4'):
            DaskExecutor(addr, threads=4)                       # more threads than any worker offers
    finally:
        for p in reversed(procs): p.terminate(); p.wait(30)
