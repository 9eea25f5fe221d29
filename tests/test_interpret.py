"""Integration tests of cifar_nb.interpret on a tiny synthetic run folder: files written, hand-computed cases, Grad-CAM
against an independent autograd computation, hooks removed, bad inputs."""
import shutil
from collections import OrderedDict

import matplotlib
matplotlib.use('Agg')
import matplotlib.pyplot as plt
import numpy as np
import pytest
import torch
from torch import nn

from cifar_nb.core import load_json, save_json, sha256_file
from cifar_nb.report import (INTERPRET_FIGURES, confusion_matrix, expected_calibration_error, grad_cam,
                             interpret_run, most_confused, per_class_accuracy, plot_confusion, plot_gallery,
                             plot_grad_cam, plot_reliability, reliability_bins, show_predictions, to_probs,
                             top_losses)
from cifar_nb.config import TrainConfig, Placement
from cifar_nb.train import capture
from cifar_nb.runs import COMPLETE, RunError, load_run, synthetic_cifar, train_run


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='module')
def syn(): return synthetic_cifar(n_train=250, n_test=60, seed=1)

@pytest.fixture(scope='module')
def run_dir(tmp_path_factory, syn):
    "A complete run folder trained for one epoch on synthetic data (a few seconds on the CPU)."
    cfg = TrainConfig(n_train=200, epochs=1, batch_size=50, lr=0.01)
    place = Placement(out_dir=str(tmp_path_factory.mktemp('interp')/'run'), device='cpu', precision='fp32')
    return train_run(cfg, place, data=syn, progress=False)

@pytest.fixture
def run_copy(run_dir, tmp_path):
    "A copy of the run folder that a test may damage."
    return shutil.copytree(run_dir, tmp_path/'run')

@pytest.fixture(autouse=True)
def _close_figures():
    yield
    plt.close('all')

def _toy_probs(conf, pred, n_classes=10):
    "Rows whose largest probability is `conf`, on class `pred`; the rest shared equally."
    conf = np.asarray(conf, float)
    p = np.tile(((1 - conf) / (n_classes - 1))[:, None], (1, n_classes))
    p[np.arange(len(conf)), pred] = conf
    return p

def _manual_grad_cam(model, x, layer, target=None):
    "Grad-CAM without hooks: run the Sequential layer by layer, differentiate the score by the layer's output."
    a, A = x, None
    for name, m in model.named_children():
        a = m(a)
        if name == layer: A = a
    logits = a
    tgt = logits.argmax(1) if target is None else torch.as_tensor(target).expand(len(x))
    g, = torch.autograd.grad(logits[torch.arange(len(x)), tgt].sum(), A)
    cams = []
    for i in range(len(x)):                      # one image at a time, by the formula
        alpha = g[i].mean(dim=(1, 2))            # (K,) channel weights
        cam = torch.relu((alpha[:, None, None] * A[i]).sum(0)).detach()
        cam = torch.nn.functional.interpolate(cam[None, None], size=x.shape[-2:], mode='bilinear', align_corners=False)[0, 0]
        cams.append(cam / cam.max() if cam.max() > 0 else cam)
    return torch.stack(cams), tgt


# ---------------------------------------------------------------- one call per run

def test_interpret_run_writes_every_file(run_copy, syn):
    res = interpret_run(run_copy, data=syn, n=4)
    folder = run_copy/'interpret'
    assert sorted(p.name for p in folder.iterdir()) == sorted([f'{f}.png' for f in INTERPRET_FIGURES] + ['interpret.json'])
    for f in INTERPRET_FIGURES:
        assert res['figures'][f] == folder/f'{f}.png'
        assert (folder/f'{f}.png').read_bytes()[:8] == b'\x89PNG\r\n\x1a\n'
    saved = load_json(folder/'interpret.json')
    run = load_run(run_copy)          # the interpret/ folder does not disturb the run's checksums
    assert saved['accuracy'] == pytest.approx(run.metrics['test_acc'])
    assert saved['ece'] == pytest.approx(expected_calibration_error(to_probs(run.logits), run.labels))
    assert list(saved['per_class_accuracy']) == list(run.classes)
    assert saved['most_confused'] == res['most_confused'] and saved['layer'] == 'conv3'
    assert not list(folder.glob('.*.tmp'))        # atomic writes leave no temporary files

def test_interpret_run_without_saving(run_copy, syn):
    res = interpret_run(run_copy, data=syn, save=False, n=2)
    assert not (run_copy/'interpret').exists()
    assert set(res['figures']) == set(INTERPRET_FIGURES) and all(isinstance(f, plt.Figure) for f in res['figures'].values())


# ---------------------------------------------------------------- confusion matrix

def test_confusion_hand_case():
    labels, preds = [0, 0, 0, 1, 1, 2, 2, 2, 2], [0, 1, 1, 1, 1, 2, 0, 2, 2]
    cm = confusion_matrix(labels, preds, 3)
    np.testing.assert_array_equal(cm, [[1, 2, 0], [0, 2, 0], [1, 0, 3]])
    np.testing.assert_allclose(per_class_accuracy(cm), [1/3, 1, 3/4])
    assert most_confused(cm, ['cat', 'dog', 'frog']) == [('cat', 'dog', 2), ('frog', 'cat', 1)]
    cm4 = confusion_matrix(torch.tensor([0, 3]), np.array([0, 3]), 4)       # tensors and arrays alike; empty classes
    assert cm4.sum() == 2 and np.isnan(per_class_accuracy(cm4)[1])

def test_plot_confusion_from_arrays_and_folder(run_dir, tmp_path):
    run = load_run(run_dir)
    fig = plot_confusion((run.logits, run.labels, run.classes), normalize=True, save=tmp_path/'cm.png')
    assert (tmp_path/'cm.png').exists()
    ax = fig.axes[0]
    assert [t.get_text() for t in ax.get_yticklabels()] == list(run.classes)
    fig2, ax2 = plt.subplots()
    assert plot_confusion(str(run_dir), ax=ax2) is fig2


# ---------------------------------------------------------------- galleries

def test_top_losses_hand_case():
    probs = np.array([[0.9, 0.1], [0.2, 0.8], [0.6, 0.4], [0.3, 0.7], [0.55, 0.45]])
    labels = [1, 1, 1, 0, 0]
    assert top_losses(np.log(probs), labels, k=10).tolist() == [0, 3, 2]      # wrong ones, most confident first
    assert top_losses(probs, labels, k=2).tolist() == [0, 3]

def test_galleries(run_dir, syn):
    run = load_run(run_dir)
    wrong = show_predictions(run, correct=False, n=4, data=syn)
    titles = [a.get_title() for a in wrong.axes if a.images]
    assert len(titles) == min(4, int((run.logits.argmax(1) != run.labels).sum()))
    for t in titles:
        true, pred = t.split('\n')
        assert true.split(': ')[1] != pred.split(': ')[1].rsplit(' ', 1)[0]
    fig = plot_gallery(syn.test.x, None, run.logits, run.classes, [0, 1])   # unknown labels: prediction only
    assert fig.axes[0].get_title().startswith('pred: ')


# ---------------------------------------------------------------- Grad-CAM

def test_grad_cam_shape_range_and_manual_agreement(run_dir, syn):
    run = load_run(run_dir)
    model, x = run.model(), run.normalise(syn.test.x[:8])
    for layer, target in (('conv3', None), ('conv2', 4), ('conv1', None)):
        res = grad_cam(model, x, layer, target)
        assert res.cam.shape == (8, 32, 32) and res.logits.shape == (8, 10)
        assert res.cam.min() >= 0 and res.cam.max() <= 1
        manual, tgt = _manual_grad_cam(model, x, layer, target)
        assert torch.equal(res.target, tgt)
        torch.testing.assert_close(res.cam, manual, atol=1e-5, rtol=0)
    torch.testing.assert_close(res.logits, model(x).detach(), atol=1e-5, rtol=0)

def test_grad_cam_hand_model():
    "1x1 identity conv -> average pool -> class 0 = +mean, class 1 = -mean: the map is the input / its max, or nothing."
    m = nn.Sequential(OrderedDict(conv=nn.Conv2d(1, 1, 1, bias=False), pool=nn.AdaptiveAvgPool2d(1),
                                  flatten=nn.Flatten(), fc=nn.Linear(1, 2, bias=False)))
    with torch.no_grad(): m.conv.weight.fill_(1.); m.fc.weight.copy_(torch.tensor([[1.], [-1.]]))
    x = torch.zeros(2, 1, 5, 5); x[0, 0, 2, 3] = 4.; x[0, 0, 0, 0] = 1.; x[1, 0, 4, 4] = 3.
    res = grad_cam(m, x, 'conv', target=0)
    torch.testing.assert_close(res.cam, x[:, 0] / x[:, 0].amax((1, 2), keepdim=True))
    assert grad_cam(m, x, 'conv', target=[1, 1]).cam.abs().sum() == 0

def _no_hooks(model):
    return all(not m._forward_hooks and not m._backward_hooks and not m._forward_pre_hooks for m in model.modules())

def test_hooks_removed_also_on_error(run_dir, syn):
    run = load_run(run_dir)
    model = run.model().train()
    x = run.normalise(syn.test.x[:2])
    grad_cam(model, x)
    assert _no_hooks(model) and model.training           # mode restored
    with pytest.raises(RuntimeError, match='channels'): grad_cam(model, x[:, :2])      # fails inside the forward pass
    assert _no_hooks(model) and model.training
    with pytest.raises(ValueError, match='one class per image'): grad_cam(model, x, target=[1, 2, 3])
    assert _no_hooks(model)
    with pytest.raises(ZeroDivisionError):
        with capture(model, ['conv3']): 1/0
    assert _no_hooks(model)

def test_unknown_layer_lists_names(run_dir, syn):
    run = load_run(run_dir)
    model, x = run.model(), run.normalise(syn.test.x[:2])
    with pytest.raises(KeyError, match="no layer named 'conv4'; the layers are: conv1, bn1, relu1, pool1, conv2"):
        grad_cam(model, x, 'conv4')
    with pytest.raises(ValueError, match='try one of conv1, conv2, conv3'): grad_cam(model, x, 'fc2')
    with pytest.raises(KeyError, match='the layers are'): plot_grad_cam(run, [0], layer='nope', data=syn)
    assert _no_hooks(model)

def test_plot_grad_cam_saves(run_copy, syn):
    fig = plot_grad_cam(run_copy, correct=True, n=3, data=syn, save=True)
    assert (run_copy/'interpret'/'gradcam_correct.png').exists()
    assert sum(len(a.images) == 2 for a in fig.axes) == sum(1 for a in fig.axes if a.get_title())  # an overlay per image


# ---------------------------------------------------------------- calibration

def test_ece_perfectly_calibrated_is_zero():
    # in each bin the share of right answers equals the confidence: 0.1 (1 of 10), 0.5 (2 of 4), 0.75 (3 of 4), 1.0
    conf = [0.1]*10 + [0.5]*4 + [0.75]*4 + [1.0]*3
    right = [1] + [0]*9 + [1, 1, 0, 0] + [1, 1, 1, 0] + [1, 1, 1]
    probs, labels = _toy_probs(conf, np.zeros(21, int)), np.where(right, 0, 1)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(0, abs=1e-12)
    assert expected_calibration_error(probs, labels) == pytest.approx(0, abs=1e-12)

def test_ece_hand_case():
    # bin (0.8, 0.9]: 3 predictions at 0.85, 1 right -> |1/3 - 0.85|; bin (0.3, 0.4]: 1 at 0.35, right -> |1 - 0.35|
    probs = _toy_probs([0.85, 0.85, 0.85, 0.35], [2, 2, 2, 5])
    labels = [2, 0, 0, 5]
    expected = 3/4 * abs(1/3 - 0.85) + 1/4 * abs(1 - 0.35)
    assert expected_calibration_error(probs, labels, n_bins=10) == pytest.approx(expected, abs=1e-12)
    r = reliability_bins(probs, labels, n_bins=10)
    assert r['count'].tolist() == [0, 0, 0, 1, 0, 0, 0, 0, 3, 0]
    assert r['acc'][8] == pytest.approx(1/3) and r['conf'][3] == pytest.approx(0.35)

def test_ece_bin_edges_are_right_closed():
    # confidence exactly 0.5 belongs to (0.4, 0.5] with 10 bins, not to (0.5, 0.6]
    r = reliability_bins(_toy_probs([0.5], [0], n_classes=2), [0], n_bins=10)
    assert r['count'][4] == 1

def test_plot_reliability(run_dir):
    fig = plot_reliability(run_dir, n_bins=10)
    assert 'ECE = ' in fig.axes[0].get_title()


# ---------------------------------------------------------------- bad input

def test_missing_file_is_named(run_copy, syn):
    (run_copy/'predictions.npz').unlink()
    with pytest.raises(RunError, match='predictions.npz is missing'): interpret_run(run_copy, data=syn)

def test_mismatched_class_count_is_named(run_copy, syn):
    with np.load(run_copy/'predictions.npz') as z: labels = z['labels']
    np.savez(run_copy/'predictions.npz', logits=np.zeros((len(labels), 7), np.float32), labels=labels)
    sums = load_json(run_copy/COMPLETE)
    sums['files']['predictions.npz'] = sha256_file(run_copy/'predictions.npz')     # consistent checksums, wrong shape
    save_json(run_copy/COMPLETE, sums)
    with pytest.raises(RunError, match=r'predictions.npz holds logits \(60, 7\).*expected \(N, 10\)'):
        interpret_run(run_copy, data=syn)

def test_images_of_other_data_are_refused(run_dir):
    with pytest.raises(RunError, match='is not the data .* was trained on'):
        plot_grad_cam(run_dir, [0], data=synthetic_cifar(n_train=20, n_test=30))

def test_mismatched_arrays_raise_value_error():
    logits, labels = np.zeros((5, 10), np.float32), np.zeros(5, int)
    with pytest.raises(ValueError, match=r'labels must have shape \(5,\) to match logits \(5, 10\); got \(4,\)'):
        plot_confusion((logits, labels[:4]))
    with pytest.raises(ValueError, match='logits must be \\(N, C\\)'): plot_reliability((logits[0], labels))
    with pytest.raises(ValueError, match='classes has 3 names but logits have 10 columns'): plot_confusion((logits, labels, ['a', 'b', 'c']))
    with pytest.raises(ValueError, match='labels must be integer'): top_losses(logits, labels.astype(float))
    with pytest.raises(ValueError, match='must both have shape'): confusion_matrix([0, 1], [0], 3)
    with pytest.raises(ValueError, match='pass to_probs'): expected_calibration_error(logits - 1, labels)
    with pytest.raises(ValueError, match='pass images='): show_predictions((logits, labels))
    with pytest.raises(ValueError, match="pass save="): plot_confusion((logits, labels), save=True)
    with pytest.raises(TypeError, match='expected a run folder'): plot_confusion(42)
