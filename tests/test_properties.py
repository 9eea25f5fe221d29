"""Property-based (Hypothesis), issue 15: `TrainConfig`/`Placement` (through `split_params`) driven with arbitrary values:
ints of any size, floats with nan and inf, strings, None, bools, lists, bytes. Each call ends in a project error that
names the argument or in exactly what was asked; never a raw exception, and never a hang (each example runs under an
alarm). The OOD API's and the archive reader's property tests live beside their code (nbs/04a_metrics, 04c_ood_sets,
04d_ood_evaluate)."""
import contextlib, os, signal, traceback
import numpy as np
from hypothesis import given, settings, strategies as st, HealthCheck, event
from cifar_nb.core import ArgumentError, DataError, CorruptFileError
from cifar_nb.config import ConfigError, split_params, TRAIN_FIELDS, PLACEMENT_FIELDS, TrainConfig, Placement
from cifar_nb.runs import RunError

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
