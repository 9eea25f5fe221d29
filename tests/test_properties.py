"""Property-based (Hypothesis), issue 15: `TrainConfig`/`Placement` (through `split_params`) and the OOD API
(`load_ood_set`, `evaluate_ood` on a tiny run folder, the metrics) driven with arbitrary values: ints of any size,
floats with nan and inf, strings, None, bools, lists, bytes, hostile paths. Each call ends in a project error that
names the argument (or the file) or in a correct result; never a raw exception from torch, numpy, PIL or sklearn,
and never a hang (each example runs under an alarm)."""
import contextlib, math, os, signal, traceback
from pathlib import Path
import numpy as np
import pytest
import torch
from hypothesis import given, settings, strategies as st, HealthCheck, event
from PIL import Image
from cifar_nb.core import ArgumentError, DataError, CorruptFileError
from cifar_nb.config import ConfigError, split_params, TRAIN_FIELDS, PLACEMENT_FIELDS, TrainConfig, Placement
from cifar_nb.runs import RunError, train_run, synthetic_cifar
from cifar_nb.ood import load_ood_set, evaluate_ood, NOISE_SETS
from cifar_nb.ood import DETECTORS

PROJECT = (ArgumentError, DataError, RunError, CorruptFileError)  # ConfigError is an ArgumentError
ANY = st.one_of(st.none(), st.booleans(), st.integers(), st.integers(-2**200, 2**200),
                st.sampled_from([10**5000, -10**5000, 2**63, 2**63 - 1, -1, 0, 1, 2]),
                st.floats(allow_nan=True, allow_infinity=True), st.text(max_size=12), st.lists(st.integers(-3, 3), max_size=3),
                st.sampled_from([np.int64(3), np.float32(0.5), np.nan, b'bytes', (1, 2), {}, object()]))
SCALE = int(os.environ.get('CIFAR_NB_HYPOTHESIS_SCALE', '1'))  # more examples for a longer hunt: CIFAR_NB_HYPOTHESIS_SCALE=20
SETTINGS = dict(deadline=None, suppress_health_check=[HealthCheck.too_slow, HealthCheck.filter_too_much, HealthCheck.data_too_large])

@contextlib.contextmanager
def bounded(seconds: int):
    "A hang fails the example: after `seconds` a TimeoutError interrupts the call."
    def boom(*_): raise TimeoutError(f'no answer within {seconds} s')
    old = signal.signal(signal.SIGALRM, boom); signal.alarm(seconds)
    try: yield
    finally: signal.alarm(0); signal.signal(signal.SIGALRM, old)

def check_error(e: BaseException, names) -> None:
    "`e` is the project's (its class, or a ValueError/KeyError raised in cifar_nb) and its message names one of `names`."
    if isinstance(e, TimeoutError): raise e
    where = traceback.extract_tb(e.__traceback__)[-1]
    ours = isinstance(e, PROJECT) or (isinstance(e, (ValueError, KeyError)) and f'{os.sep}cifar_nb{os.sep}' in where.filename)
    assert ours, f"raw {type(e).__name__} from {where.filename}:{where.lineno}: {e}"
    msg = str(e)
    assert '\n' not in msg.strip(), f"a message of several lines: {msg}"
    assert any(n in msg for n in names), f"{type(e).__name__} names none of {names}: {msg}"
    event(f'refused: {type(e).__name__}')

# --- TrainConfig and Placement ------------------------------------------------------------------------------------

GOOD = dict(lr=[1e-4, 0.01, 100], momentum=[0, 0.9], batch_size=[1, 128], epochs=[1, 20], lr_schedule=['piecewise', 'none'],
            lr_drop_factor=[0.1, 1], lr_drop_period=[1, 16], l2=[0, 0.004], batchnorm=[True, False], dropout=[0, 0.2],
            bn_after=['conv1', 'conv3'], dropout_before=['fc1', 'fc2'], init=['glorot', 'torch'], val_fraction=[0.1, 0.5],
            augment=[True, False], patience=[None, 3], seed=[0, 2**63 - 1], n_train=[None, 10, 500], precision=['auto', 'fp32', 'bf16'],
            channels_last=[True, False], compile=['auto', 'no'], step=['auto', 'eager'], device=['cpu', 'auto'], threads=[None, 1],
            data_path=[None, '/somewhere/cifar10-jpeg.tar.gz'], out_dir=[None, 'runs/x'], label_smoothing=[0.0, 0.1])
assert set(GOOD) == set(TRAIN_FIELDS + PLACEMENT_FIELDS)

@settings(max_examples=300 * SCALE, **SETTINGS)
@given(data=st.data())
def test_config_gives_a_named_error_or_exactly_what_was_asked(data):
    d = data.draw(st.fixed_dictionaries({}, optional={k: st.sampled_from(v) for k, v in GOOD.items()}), 'valid')
    for k in data.draw(st.lists(st.sampled_from([*GOOD, 'learning_rate', 'Device']), max_size=2, unique=True), 'arbitrary'):
        d[k] = data.draw(ANY, k)
    with bounded(10):
        try: cfg, place = split_params(d)
        except Exception as e:
            check_error(e, [f'parameter {k}' for k in d] + ['unknown parameter'])
            assert isinstance(e, ConfigError)
            return
    event('accepted')
    for k, v in d.items():  # accepted: the config holds the very value, and it obeys the bounds
        got = getattr(cfg if k in TRAIN_FIELDS else place, k)
        assert got is v or (got == v and type(got) is type(v)), (k, v, got)
    assert split_params({**vars(cfg), **vars(place)}) == (cfg, place)

# --- the OOD API ----------------------------------------------------------------------------------------------------

@pytest.fixture(scope='module')
def hostile(tmp_path_factory):
    "A tiny complete run (made once, with train_run on synthetic data), its data, a cache, and image folders good and bad."
    root = tmp_path_factory.mktemp('hostile')
    syn = synthetic_cifar(300, 60)
    run = train_run(TrainConfig(n_train=200, epochs=1, batch_size=50, lr=0.01), Placement(out_dir=str(root/'run'), device='cpu', precision='fp32'),
                    data=syn, progress=False)
    def folder(name, n=3, extra=None):
        d = root/name; d.mkdir()
        for i in range(n): Image.fromarray(np.full((32, 32, 3), 40 * i, np.uint8)).save(d/f'{i}.png')
        if extra: extra(d)
        return d
    good = folder('imgs')
    paths = dict(one=folder('one', 1), fifo=folder('fifo', extra=lambda d: os.mkfifo(d/'pipe.png')),
                 alpha=folder('alpha', extra=lambda d: Image.fromarray(np.zeros((32, 32, 4), np.uint8)).save(d/'a.png')),
                 empty=folder('empty', 0), junk=root/'junk.tar.gz', zero=root/'zero.tar.gz', absent=root/'absent')
    paths['junk'].write_text('not an archive'); paths['zero'].symlink_to('/dev/zero')
    return dict(run=run, syn=syn, cache=root/'cache', good=good, paths=paths)

def _not_a_path(v) -> bool:
    "Arbitrary values other than strings naming something that exists (they would make the test read the file system)."
    try: return not (isinstance(v, str) and v.strip() and Path(v).expanduser().exists())
    except (OSError, RuntimeError, ValueError): return True

OOD_VALID = dict(sets=st.sampled_from(['gaussian', 'uniform,gaussian', ('uniform',)]), n_per_set=st.sampled_from([2, 7, 40]),
                 batch_size=st.sampled_from([1, 33, 1000]), seed=st.integers(0, 3), layer=st.sampled_from(['relu4', 'conv3', 'pool1']),
                 device=st.just('cpu'), detectors=st.sampled_from([DETECTORS, ('msp', 'knn'), 'vim,energy', ()]))

def _quick(v) -> bool:
    "Leave out the valid n_per_set that mean all 5,000 noise images (None, large ints): right, but ten seconds a set here."
    return not (v is None or isinstance(v, (int, np.integer)) and not isinstance(v, bool) and 100 < v <= 10**7)

@settings(max_examples=25 * SCALE, **SETTINGS)
@given(data=st.data())
def test_evaluate_ood_gives_a_named_error_or_a_sound_table(hostile, data):
    kw = {k: data.draw(s, k) for k, s in OOD_VALID.items()}
    for k in data.draw(st.lists(st.sampled_from(sorted(OOD_VALID)), max_size=2, unique=True), 'arbitrary'):
        kw[k] = data.draw(st.one_of(ANY.filter(_not_a_path), st.sampled_from(list(hostile['paths'].values()))) if k == 'sets' else
                          ANY.filter(_quick) if k == 'n_per_set' else ANY, k)
    with bounded(60):
        try: res = evaluate_ood(hostile['run'], data=hostile['syn'], save=False, progress=False, cache_dir=hostile['cache'], **kw)
        except Exception as e:
            check_error(e, [f'{k}=' for k in kw] + ['sets', 'layer', 'detector', *(str(p) for p in hostile['paths'].values())])
            return
    event('accepted')
    sets = [s.strip() for s in kw['sets'].split(',')] if isinstance(kw['sets'], str) else list(kw['sets'])
    from cifar_nb.ood import detector_names
    dets = ([d.strip() for d in kw['detectors'].split(',')] if isinstance(kw['detectors'], str) else
            list(detector_names()) if kw['detectors'] is None else list(kw['detectors']))  # None: every registered one
    assert len(res['ood_table']) == len(sets) * (len(dets) + 1)
    assert set(res['n_sets']) == set(sets) and all(v == min(kw['n_per_set'] or 5000, 5000) for v in res['n_sets'].values())
    for r in res['ood_table']:
        assert all(0 <= r[m] <= 1 for m in ('auroc', 'aupr_in', 'aupr_out', 'fpr95', 'det_acc', 'id_kept', 'ood_flagged')), r
