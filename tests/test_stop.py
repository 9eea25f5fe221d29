"""Issue 24, item 5: stops are prompt. Ctrl-C (SIGINT) and SIGTERM on `python -m cifar_nb.study` stop the study and every
kernel it started within 5 s with one line and exit status 130/143, and the same command resumes; a decoding worker killed
mid-pool is an error within seconds; a Dask address nobody listens on fails within 15 s with one line naming it.
Each test has a hard timeout (subprocess timeouts), and none leaves a process behind."""
import os, signal, socket, subprocess, sys, time
from pathlib import Path
import pytest
from cifar_nb.data import make_fake_cifar10
from cifar_nb.study import started_processes

ROOT = Path(__file__).parents[1]
STUDY = '''title = "stop"
baseline = "Long"
seeds = 1
scale = { n_train = 300, threads = 1 }
[configurations]
Long = { epochs = 12, lr_drop_period = 6 }   # ~0.5 s an epoch at one thread here (2-core EPYC): the stop, sent at the
                                              # first checkpoint, lands with 11 epochs to go; the resumed run is short
'''

@pytest.fixture(scope='module')
def study(tmp_path_factory):
    "A study file of one long tiny run, and the environment that finds a tiny JPEG CIFAR-10."
    d = tmp_path_factory.mktemp('stop')
    (d/'stop.toml').write_text(STUDY)
    env = {**{k: v for k, v in os.environ.items() if k != 'CIFAR_NB_DEBUG'}, 'PYTHONPATH': str(ROOT),
           'CIFAR_NB_DATA': str(make_fake_cifar10(d/'data', n_train=40, n_test=10)), 'CIFAR_NB_CACHE': str(d/'cache')}
    return d, env

def _start(d, env, sdir):
    return subprocess.Popen([sys.executable, '-m', 'cifar_nb.study', str(d/'stop.toml'), '--study-dir', str(sdir), '--reuse-from', 'none'],
                            stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True, env=env, cwd=ROOT,
                            start_new_session=True)  # its own process group, to look for leftovers

def _wait(cond, timeout, what):
    t = time.monotonic()
    while not cond():
        if time.monotonic() - t > timeout: raise AssertionError(f'timed out after {timeout} s waiting for {what}')
        time.sleep(0.05)

def _alive(pid) -> bool:
    "Running (a zombie, exited but not yet reaped by init, is not)."
    try: return Path(f'/proc/{pid}/stat').read_text().rsplit(')', 1)[1].split()[0] != 'Z'
    except OSError: return False

def _group(pgid) -> list[int]:
    "The live processes of process group `pgid`."
    out = []
    for d in Path('/proc').glob('[0-9]*'):
        try: f = d.joinpath('stat').read_text().rsplit(')', 1)[1].split()
        except OSError: continue
        if int(f[2]) == pgid and f[0] != 'Z': out.append(int(d.name))
    return out

@pytest.mark.slow
@pytest.mark.parametrize('sig', [signal.SIGINT, signal.SIGTERM])
def test_stop_kills_every_kernel_within_5_s_and_the_same_command_resumes(study, sig):
    d, env = study
    sdir = d/f'study-{sig.name}'
    run = sdir/'runs'/'long'/'seed0'
    p = _start(d, env, sdir)
    try:
        _wait(lambda: (run/'checkpoint.pt').exists() or p.poll() is not None, 300, 'the first checkpoint')
        assert p.poll() is None, p.communicate()
        started = started_processes(p.pid)
        assert any('ipykernel' in Path(f'/proc/{k}/cmdline').read_text() for k in started if _alive(k)), started
        t = time.monotonic(); p.send_signal(sig)
        out, err = p.communicate(timeout=30)
        took = time.monotonic() - t
        print(f"{sig.name}: stopped in {took:.2f} s")
        assert p.returncode == 128 + sig, (p.returncode, err)
        assert took < 5, f"{sig.name} took {took:.1f} s to stop the study"
        assert 'Traceback' not in err, err
        lines = [l for l in err.splitlines() if l.strip()]
        assert lines[-1].startswith('stopped: run the same command again to resume'), err
        _wait(lambda: not any(_alive(k) for k in started), 5, f'the processes the study started to end: {started}')
        assert not _group(p.pid), _group(p.pid)
        assert not (run/'COMPLETE.json').exists()
    finally:
        if p.poll() is None: os.killpg(p.pid, signal.SIGKILL); p.wait()
    if sig != signal.SIGINT: return
    # the same command again resumes the interrupted run from its checkpoint
    r = subprocess.run([sys.executable, '-m', 'cifar_nb.study', str(d/'stop.toml'), '--study-dir', str(sdir), '--reuse-from', 'none'],
                       capture_output=True, text=True, env=env, cwd=ROOT, timeout=400)
    assert r.returncode == 0, r.stderr
    assert (run/'COMPLETE.json').exists()
    nb = (run/'train.ipynb').read_text()
    assert 'resuming' in nb and 'checkpoint.pt' in nb, 'the rerun did not start from the checkpoint'

KILL_A_WORKER = '''
import os, signal, sys, time
import cifar_nb.data.sources as s
def _die(chunk, resize=False):
    if chunk[0][0] == 'img1000': os.kill(os.getpid(), signal.SIGKILL)  # the second chunk's worker is killed
    time.sleep(0.5); return s.np.zeros((len(chunk), 3, 32, 32), s.np.uint8)
_die.__qualname__ = _die.__name__ = '_decode_chunk'; _die.__module__ = 'cifar_nb.data.sources'  # pickled by name: the forked workers find it there
s._decode_chunk = _die
t = time.monotonic()
try: s.decode_images([(f'img{i}', b'') for i in range(3000)])
except s.DataError as e: print(f"{time.monotonic() - t:.2f} {e}")
'''

def test_a_killed_decoding_worker_is_an_error_within_seconds():
    if (os.cpu_count() or 1) < 2: pytest.skip('one core: no decoding pool')
    r = subprocess.run([sys.executable, '-c', KILL_A_WORKER], capture_output=True, text=True, timeout=120,
                       env={**os.environ, 'PYTHONPATH': str(ROOT)}, cwd=ROOT)
    assert r.returncode == 0 and r.stdout, r.stderr
    took, msg = r.stdout.split(' ', 1)
    print(f"killed worker: error after {took} s")
    assert float(took) < 10 and 'a decoding worker died' in msg, r.stdout

def test_an_unreachable_dask_address_fails_within_15_s_naming_it(tmp_path):
    pytest.importorskip('distributed')
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]  # closed once the block ends
    addr = f'tcp://127.0.0.1:{port}'
    t = time.monotonic()
    r = subprocess.run([sys.executable, '-m', 'cifar_nb.study', '--scale', 'smoke', '--configurations', 'Base', '--plan',
                        '--study-dir', str(tmp_path/'s'), '--executor', 'dask', '--address', addr],
                       capture_output=True, text=True, timeout=120, env={**os.environ, 'PYTHONPATH': str(ROOT)}, cwd=ROOT)
    took = time.monotonic() - t
    print(f"unreachable address: failed after {took:.1f} s")
    assert r.returncode != 0 and 'Traceback' not in r.stderr, r.stderr
    lines = [l for l in r.stderr.splitlines() if l.strip() and not l.startswith(('usage:', ' '))]
    assert len(lines) == 1 and addr in lines[0], r.stderr
    # the connect timeout (5 s) comes before the plan; the rest is Python importing torch: on a machine whose cores are
    # all busy (a training job beside the tests) that alone took 12-25 s, so the 15 s holds on a machine with a free core
    busy = os.getloadavg()[0] >= (os.cpu_count() or 1)
    assert took < (60 if busy else 15), f"{took:.1f} s"

def test_the_connect_timeout_bounds_the_executor():
    distributed = pytest.importorskip('distributed')
    from cifar_nb.study import DaskExecutor, ExecutorError
    with socket.socket() as s: s.bind(('127.0.0.1', 0)); port = s.getsockname()[1]
    t = time.monotonic()
    with pytest.raises(ExecutorError, match=f'tcp://127.0.0.1:{port}'): DaskExecutor(f'tcp://127.0.0.1:{port}')
    assert time.monotonic() - t < 9, time.monotonic() - t   # connect_s = 5
