"""Run folders are portable: where a run was trained (device, precision, compile, step, threads, data location) is
provenance. A folder whose config says it ran on CUDA opens, is interpreted, OOD-evaluated and reported on a CPU-only
machine. The folder is built on the CPU and then given the placement and provenance a GPU run writes."""
import json
from pathlib import Path

import numpy as np
import pytest
import torch

from cifar_nb.config import TrainConfig, Placement
from cifar_nb.core import save_json, sha256_file
from cifar_nb.report import interpret_run
from cifar_nb.ood import evaluate_ood
from cifar_nb.runs import COMPLETE, RUN_FILES, load_run, run_state, synthetic_cifar, train_run
from cifar_nb.study import collect_runs
from cifar_nb.report import study_table


def _as_if_trained_on_a_gpu(path: Path):
    "Rewrite a CPU run's placement and provenance as a GPU run records them, with consistent checksums."
    c = json.loads((path/'config.json').read_text())
    c['placement'].update(device='cuda', precision='auto', compile='auto', step='auto', data_path='/gpu-box/data/cifar10-jpeg.tar.gz')
    c['provenance'].update(precision='torch.bfloat16', step='graph', compile=False,
                           machine={**c['provenance']['machine'], 'device': 'cuda:0', 'gpu': 'NVIDIA H100 80GB HBM3'})
    save_json(path/'config.json', c)
    marker = json.loads((path/COMPLETE).read_text())
    marker['files'] = {f: sha256_file(path/f) for f in RUN_FILES}
    save_json(path/COMPLETE, marker)
    return path


@pytest.fixture(scope='module')
def gpu_run(tmp_path_factory):
    syn = synthetic_cifar(n_train=300, n_test=60)
    d = tmp_path_factory.mktemp('portable')/'runs'/'improved'/'seed0'
    train_run(TrainConfig(n_train=200, epochs=1, batch_size=50, lr=0.01), Placement(device='cpu', out_dir=str(d)), data=syn, progress=False)
    return _as_if_trained_on_a_gpu(d), syn


def test_opens_and_rebuilds_on_the_cpu(gpu_run):
    d, syn = gpu_run
    run = load_run(d)
    assert run.placement['device'] == 'cuda' and run.config['provenance']['machine']['gpu'].startswith('NVIDIA')
    assert not torch.cuda.is_available() or True  # whatever this machine has, the run opens on the CPU
    model = run.model()  # default device: the CPU
    assert next(model.parameters()).device.type == 'cpu'
    with torch.no_grad(): out = model(run.normalise(syn.test.x[:8]))
    np.testing.assert_allclose(out.numpy(), run.logits[:8], rtol=0.05, atol=0.05)  # the saved logits (bf16 or fp32 there)
    # the placement never decides reuse: the same computation on the same data is this run, wherever it ran
    assert run_state(d, run.cfg, syn.source['arrays_sha256']).state == 'complete'


def test_interprets_and_evaluates_ood_on_the_cpu(gpu_run):
    d, syn = gpu_run
    res = interpret_run(d, data=syn, n=4, save=False)
    assert 0 <= res['accuracy'] <= 1
    ood = evaluate_ood(d, sets='gaussian', data=syn, n_per_set=40, save=False, progress=False)
    assert ood['ood_table'] and all(np.isfinite(r['auroc']) for r in ood['ood_table'])


def test_study_tables_read_it(gpu_run):
    d, _ = gpu_run
    study = d.parents[2]
    # the study file the run is counted against: a tiny Improved (a run is counted only as what it computed)
    (study/'study.toml').write_text('title = "tiny"\nbaseline = "Improved"\n[configurations]\n'
                                    'Improved = { n_train = 200, epochs = 1, batch_size = 50, lr = 0.01 }\n')
    runs = collect_runs(study)
    assert list(runs) == ['Improved'] and study_table(runs)[0]['n_seeds'] == 1
