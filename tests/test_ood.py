"""OOD: metric conventions cross-checked against scikit-learn and hand cases, detectors on a network with planted
features (known outputs, no training), loaders on the real archives, no threshold fitted on evaluation images."""
import math

import numpy as np
import pytest
import torch
from PIL import Image
from sklearn.metrics import average_precision_score, roc_auc_score, roc_curve

from collections import OrderedDict
from torch import nn
from cifar_nb.core import DataError
from cifar_nb.train import RELUS, report_cnn, capture
from cifar_nb.ood import aupr_in, aupr_out, auroc, detection_accuracy, fit_threshold, fpr_at_tpr, threshold_accuracy
from cifar_nb.ood import DETECTORS, detector_scores, fit_detectors, layer_activations, mean_activation_scores
from cifar_nb.ood import OOD_ARCHIVES, TIN_CIFAR_OVERLAP, FitEval, evaluate_ood, fit_eval_split, load_ood_set, ood_data_dir, score_table
from cifar_nb.config import TrainConfig, Placement
from cifar_nb.runs import synthetic_cifar, train_run, load_run


def test_threshold_never_sees_evaluation_scores():
    rng = np.random.default_rng(1)
    fit_id, fit_ood = rng.normal(1, 1, 50), rng.normal(-1, 1, 50)
    r1 = threshold_accuracy(fit_id, fit_ood, rng.normal(1, 1, 30), rng.normal(-1, 1, 30))
    r2 = threshold_accuracy(fit_id, fit_ood, np.full(30, -5.), np.full(30, 5.))  # adversarial evaluation scores
    assert r1['threshold'] == r2['threshold'] == fit_threshold(fit_id, fit_ood)
    assert r2['det_acc'] == 0.0
    fi, ei = fit_eval_split(101, seed=3)
    assert len(np.intersect1d(fi, ei)) == 0 and np.array_equal(np.union1d(fi, ei), np.arange(101))
    rows = score_table({'s': FitEval(fit_id, np.full(30, -5.))}, {'o': {'s': FitEval(fit_ood, np.full(30, 5.))}})
    assert rows[0]['threshold'] == r1['threshold'] and rows[0]['auroc'] == 0.0


def test_evaluate_ood_writes_files(tmp_path):
    syn = synthetic_cifar(n_train=300, n_test=60)
    run_dir = train_run(TrainConfig(n_train=200, epochs=1, batch_size=50, lr=0.01),
                        Placement(device='cpu', precision='fp32', out_dir=str(tmp_path/'run')), data=syn, progress=False)
    with pytest.raises(KeyError, match='relu4, fc2'): evaluate_ood(run_dir, sets='gaussian', data=syn, layer='relu_10')
    res = evaluate_ood(run_dir, sets=('gaussian', 'uniform'), data=syn, n_per_set=40, progress=False)
    names = {'ood_table.json', 'ood_table.csv', 'layer_table.json', 'layer_table.csv', 'summaries.json'}
    assert {p.name for p in (run_dir/'ood').iterdir()} == names
    assert not [p for p in (run_dir/'ood').iterdir() if p.name.startswith('.')]  # no temporary files left
    assert len(res['ood_table']) == 2 * (len(DETECTORS) + 1) and len(res['layer_table']) == 2 * len(RELUS)
    tr, va = load_run(run_dir).split()
    assert len(np.intersect1d(tr, va)) == 0  # detectors fit on train, thresholds on validation
    for s_ in ('gaussian', 'uniform'):
        fi, ei = fit_eval_split(res['n_sets'][s_], 0)
        assert len(np.intersect1d(fi, ei)) == 0 and len(fi) + len(ei) == 40
    for r in res['ood_table']:
        assert all(np.isfinite(r[k]) for k in ('auroc', 'aupr_in', 'aupr_out', 'fpr95', 'det_acc', 'id_kept', 'ood_flagged'))
