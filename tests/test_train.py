"""The papermill training notebook: a real run on a small subset, its parameters cell, and bad parameters."""
import ast, dataclasses, json, os
from pathlib import Path
import pytest
import papermill as pm
from cifar_nb.core import project_root
from cifar_nb.config import TrainConfig, Placement
from cifar_nb.runs import load_run, RUN_FILES

NB = project_root()/'nbs'/'train.ipynb'

def _params_cell():
    nb = json.loads(NB.read_text())
    cells = [c for c in nb['cells'] if 'parameters' in c.get('metadata', {}).get('tags', [])]
    assert len(cells) == 1, 'train.ipynb must have exactly one cell tagged parameters'
    return ''.join(cells[0]['source'])

def test_parameters_cell_matches_the_config():
    "Every TrainConfig and Placement field is a parameter, with the same default and an annotation; nothing else is."
    src = _params_cell()
    ns = {}; exec(src, {}, ns); ns.pop("__annotations__", None)
    fields = {f.name: f.default for cls in (TrainConfig, Placement) for f in dataclasses.fields(cls)}
    assert set(ns) == set(fields), set(ns) ^ set(fields)
    for k, v in fields.items(): assert ns[k] == v and type(ns[k]) is type(v), (k, ns[k], v)
    # each parameter is annotated and commented (papermill shows these in `papermill --help-notebook`)
    tree = ast.parse(src)
    assert all(isinstance(n, ast.AnnAssign) for n in tree.body)
    assert all('#' in line for line in src.strip().splitlines())
    assert len(tree.body) == len(fields)

def test_issue_defaults_are_the_improved_configuration():
    c, p = TrainConfig(), Placement()
    assert (c.lr, c.momentum, c.batch_size, c.epochs, c.lr_schedule, c.lr_drop_factor, c.lr_drop_period, c.l2,
            c.batchnorm, c.dropout, c.val_fraction, c.augment, c.seed, c.n_train, p.device, p.out_dir) == \
           (0.0002, 0.9, 128, 20, 'piecewise', 0.1, 16, 0.004, True, 0.2, 0.1, False, 0, None, 'auto', None)

def _run(tmp_path, **params):
    out = tmp_path/'executed.ipynb'
    pm.execute_notebook(str(NB), str(out), parameters=params, kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    return out

@pytest.mark.slow
def test_papermill_run_writes_a_complete_run_folder(tmp_path):
    "papermill nbs/train.ipynb out.ipynb -p n_train 500 -p epochs 2 -p dropout 0 -p out_dir ... on the real data."
    run_dir = tmp_path/'run'
    out = _run(tmp_path, n_train=500, epochs=2, dropout=0.0, batch_size=50, out_dir=str(run_dir))
    run = load_run(run_dir)
    for f in RUN_FILES: assert (run_dir/f).stat().st_size > 0, f
    assert run.params['dropout'] == 0.0 and run.params['n_train'] == 500 and run.params['epochs'] == 2
    assert run.logits.shape == (10_000, 10) and run.metrics['n_train'] == 500
    assert len(run.history['val']['loss']) == 2  # a 2-epoch run at lr 2e-4 is near chance: its accuracy is not asserted, only consistent
    assert run.metrics['test_acc'] == float((run.logits.argmax(1) == run.labels).mean())
    assert 'dropout' not in dict(run.model().named_children())  # dropout 0 removes the layer
    nb = json.loads(out.read_text())
    assert any(o.get('output_type') == 'display_data' and 'image/png' in o.get('data', {}) for c in nb['cells'] for o in c.get('outputs', []))
    # a second execution with the same parameters reuses the folder instead of training again
    before = (run_dir/'weights.safetensors').stat().st_mtime_ns
    _run(tmp_path, n_train=500, epochs=2, dropout=0.0, batch_size=50, out_dir=str(run_dir))
    assert (run_dir/'weights.safetensors').stat().st_mtime_ns == before

def _before_validation(params) -> tuple[dict, str]:
    """The notebook as papermill parameterizes it (its injected-parameters cell included), its cells before the validation
    cell executed in this process in a namespace of their own, as a fresh kernel's; (that namespace, the validation cell)."""
    from papermill.iorw import load_notebook_node
    from papermill.parameterize import parameterize_notebook
    nb = parameterize_notebook(load_notebook_node(str(NB)), params, kernel_name='python3', language='python')
    assert any('injected-parameters' in c.metadata.get('tags', []) for c in nb.cells)
    code = [''.join(c.source) for c in nb.cells if c.cell_type == 'code']
    val = next(i for i, c in enumerate(code) if 'params_from_namespace(' in c and 'import' not in c)
    ns = {'__name__': '__main__'}
    for c in code[:val]: exec(compile(c, 'train.ipynb', 'exec'), ns)
    return ns, code[val]

@pytest.mark.parametrize('params,expect', [
    (dict(dropout=1.5), 'dropout=1.5'),
    (dict(lr_schedule='cosine'), "lr_schedule='cosine'"),
    (dict(epochs=0), 'epochs=0'),
    (dict(batch_size='128'), 'batch_size'),
    (dict(drop_out=0.0), "unknown parameter(s) 'drop_out'"),
])
def test_bad_parameters_stop_before_training(tmp_path, params, expect):
    """A bad value or an unknown name stops in the validation cell with a message naming the parameter; no run folder appears.
    The unknown name goes through a real papermill kernel; the bad values through the same parameterized cells in this
    process (a kernel start is 3 s each), which must reach the validation cell and stop there."""
    if 'drop_out' in params:
        with pytest.raises(pm.PapermillExecutionError) as e:
            _run(tmp_path, out_dir=str(tmp_path/'run'), **params)
        ename, evalue = e.value.ename, e.value.evalue
    else:
        from cifar_nb.config import ConfigError
        ns, validation = _before_validation({**params, 'out_dir': str(tmp_path/'run')})  # the cells before it pass
        with pytest.raises(ConfigError) as e: exec(compile(validation, 'train.ipynb', 'exec'), ns)
        ename, evalue = type(e.value).__name__, str(e.value)
    assert ename == 'ConfigError' and expect in evalue, evalue
    assert not (tmp_path/'run').exists()

def test_good_parameters_pass_the_validation_cell(tmp_path):
    "The in-process check above is not vacuous: valid parameters pass the same cells and give the config they name."
    ns, validation = _before_validation(dict(dropout=0.0, epochs=3, out_dir=str(tmp_path/'run')))
    exec(compile(validation, 'train.ipynb', 'exec'), ns)
    assert ns['cfg'] == TrainConfig(dropout=0.0, epochs=3) and ns['place'].out_dir == str(tmp_path/'run')
    assert not (tmp_path/'run').exists()

def test_papermill_command_line_shows_each_epoch_in_the_terminal(tmp_path):
    "`papermill nbs/train.ipynb out.ipynb -p ...` in a terminal: a line per epoch (loss, accuracy, time left), no kernel warning."
    import subprocess, sys
    from cifar_nb.data import make_fake_cifar10
    data = make_fake_cifar10(tmp_path/'data', n_train=20, n_test=5)
    papermill = Path(sys.executable).parent/'papermill'
    r = subprocess.run([str(papermill), str(NB), str(tmp_path/'out.ipynb'), '-p', 'epochs', '3', '-p', 'n_train', '100',
                        '-p', 'batch_size', '50', '-p', 'device', 'cpu', '-p', 'out_dir', str(tmp_path/'run'),
                        '-p', 'data_path', str(data)],
                       capture_output=True, text=True, timeout=300, env={**os.environ, 'CIFAR_NB_CACHE': str(tmp_path/'cache')})
    assert r.returncode == 0, r.stderr[-3000:]
    lines = [l for l in r.stderr.splitlines() if l.startswith('epoch ')]
    assert [l.split(':')[0] for l in lines] == ['epoch 1/3', 'epoch 2/3', 'epoch 3/3'], r.stderr[-3000:]
    assert all('validation loss' in l and 'accuracy' in l and 'left' in l for l in lines), lines
    assert 'WARNING' not in r.stderr and 'not encrypted' not in r.stderr, r.stderr[-3000:]
    out = (tmp_path/'out.ipynb').read_text()
    assert 'epoch 1/3: loss' not in out  # the terminal's lines; the notebook keeps its progress bar


# --- a stored run stays what it was when TrainConfig learns a new field (issue 28, items 1 and 4) -----------------
import shutil
from dataclasses import asdict
from cifar_nb.core import load_json, save_json, sha256_file
from cifar_nb.runs import run_state, identity, COMPLETE, train_run, synthetic_cifar
from cifar_nb.runs.rundir import _recorded_identity

COMMITTED = project_root()/'reports'/'study'/'runs'/'improved'/'seed0'

def _copy_without(tmp_path, *names) -> Path:
    "A copy of a committed run whose config.json lacks the parameters `names`, its checksum in COMPLETE.json fixed."
    d = tmp_path/'run'
    shutil.copytree(COMMITTED, d, ignore=shutil.ignore_patterns('interpret', 'ood', '.lock'))
    c = load_json(d/'config.json')
    for n in names: del c['params'][n]
    save_json(d/'config.json', c)
    m = load_json(d/COMPLETE); m['files']['config.json'] = sha256_file(d/'config.json'); save_json(d/COMPLETE, m)
    return d

def test_a_run_missing_a_recorded_parameter_is_still_complete_and_the_same(tmp_path):
    "A parameter missing from a run's record reads as its default: the run keeps its identity and stays complete."
    orig = load_run(COMMITTED)
    assert orig.cfg.augment is False and orig.cfg.patience is None  # the defaults: what a run recorded before them did
    d = _copy_without(tmp_path, 'augment', 'patience')
    assert 'augment' not in load_json(d/'config.json')['params']
    run = load_run(d)  # checksums, shapes, parameters
    assert run.cfg == orig.cfg and run.params == orig.params
    assert _recorded_identity(run.config) == _recorded_identity(orig.config) == identity(orig.cfg, orig.data_sha256)
    assert run_state(d, orig.cfg, orig.data_sha256).state == 'complete'
    assert run_state(d, dataclasses.replace(orig.cfg, augment=True), orig.data_sha256).state == 'other'

def test_committed_runs_predate_label_smoothing_and_read_it_as_its_default():
    "The committed runs were recorded before `label_smoothing` existed; they read it as 0.0 and stay complete."
    c = load_json(COMMITTED/'config.json')
    assert 'label_smoothing' not in c['params'] and TrainConfig().label_smoothing == 0.0
    run = load_run(COMMITTED, verify=False)
    assert run.cfg.label_smoothing == 0.0 and run.params['label_smoothing'] == 0.0
    assert run_state(COMMITTED, run.cfg, run.data_sha256).state == 'complete'

@pytest.mark.parametrize('study', ['study', 'lr0001/study'])
def test_committed_studies_have_every_run_complete(study):
    "Each committed study's plan trains nothing: every run (shared ones included) is complete with today's TrainConfig."
    from cifar_nb.study import plan_study, study_of, collect_runs
    sd = project_root()/'reports'/study
    st = study_of(sd)
    runs = collect_runs(sd, st, log=lambda *a: None)
    sha = next(iter(next(iter(runs.values())).values())).data_sha256
    plan = plan_study(sd, st, images_per_s=1.0, data_sha=sha)
    assert plan['n_runs'] > 0 and plan['n_todo'] == 0, plan['todo']
    assert sum(len(by) for by in runs.values()) == plan['n_runs']
    assert all(r.cfg.label_smoothing == 0.0 for by in runs.values() for r in by.values())

def test_a_run_with_label_smoothing_trains_and_records_it(tmp_path):
    "label_smoothing=0.1 trains a tiny synthetic run, is recorded in config.json and is part of the run's identity."
    data = synthetic_cifar()
    cfg, place = TrainConfig(epochs=2, lr=0.01, batch_size=50, label_smoothing=0.1), Placement(device='cpu', out_dir=str(tmp_path/'r'))
    run = load_run(train_run(cfg, place, data=data, progress=False))
    assert load_json(run.path/'config.json')['params']['label_smoothing'] == 0.1 and run.cfg == cfg
    assert run_state(run.path, dataclasses.replace(cfg, label_smoothing=0.0), data.source['arrays_sha256']).state == 'other'
    assert run_state(run.path, cfg, data.source['arrays_sha256']).state == 'complete'


# --- one setup (issue 28, item 3) -----------------------------------------------------------------------------------
import importlib.util
import numpy as np
import cifar_nb.runs.builder as runs_setup, cifar_nb.runs.training as runs_mod, cifar_nb.study.concurrency as concurrency, cifar_nb.study.plan as study_mod

def _bench():
    spec = importlib.util.spec_from_file_location('bench_for_test', project_root()/'bench'/'bench.py')
    m = importlib.util.module_from_spec(spec); spec.loader.exec_module(m)
    return m

def test_training_the_probes_and_the_bench_use_one_setup(tmp_path, monkeypatch):
    "train_run, the concurrency probe, the study's throughput estimate and the benchmark's loops all build through runs.setup."
    bench, calls, real = _bench(), [], runs_setup.setup
    assert concurrency.setup is real and bench.setup is real
    def spy(cfg, place, data):
        calls.append(cfg); return real(cfg, place, data)
    for m in (runs_setup, runs_mod, concurrency, bench): monkeypatch.setattr(m, 'setup', spy)
    data, cfg = synthetic_cifar(n_train=300, n_test=50), TrainConfig(epochs=1, lr=0.01, batch_size=30)
    place = Placement(device='cpu', precision='fp32')
    train_run(cfg, dataclasses.replace(place, out_dir=str(tmp_path/'r')), data=data, progress=False)
    concurrency.learner_setup(data, cfg, place, 3)
    assert study_mod.measure_throughput('cpu', batch_size=30, steps=1) > 0
    bench.learner_steps(data, cfg, place, steps=2, warmup=1)
    bench.learner_epoch(data, cfg, place)
    assert len(calls) == 5, calls

def test_the_setup_step_trains_what_train_run_trains(tmp_path):
    "One epoch of `setup(...).step()` over the setup's loader gives exactly the training losses train_run records."
    data = synthetic_cifar(n_train=300, n_test=50)
    cfg, place = TrainConfig(epochs=1, lr=0.01, batch_size=30), Placement(device='cpu', precision='fp32', threads=1)
    import torch
    before = torch.get_num_threads()
    try:
        run = load_run(train_run(cfg, dataclasses.replace(place, out_dir=str(tmp_path/'r')), data=data, progress=False))
        s = runs_setup.setup(cfg, place, data); step = s.step()
        for xb, yb in s.loaders['train']: step(xb, yb)
        losses = step.read()[0]
    finally: torch.set_num_threads(before)
    assert run.history['train']['loss'] == [float(np.float32(l)) for l in losses]
