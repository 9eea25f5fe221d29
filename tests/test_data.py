"""Tests of cifar_nb.data.loader still to move beside their code (01c_loader); the rest moved to 01b_cifar10."""
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st

from cifar_nb.core import project_root
from cifar_nb.core import DataError
from cifar_nb.data import load_cifar10
from cifar_nb.data import DeviceLoader, augment_batch, channel_stats, stratified_split, stratified_subset

ARCHIVE = project_root().parent/'shared'/'data'/'cifar10-jpeg.tar.gz'
needs_archive = pytest.mark.skipif(not ARCHIVE.is_file(), reason=f"the CIFAR-10 JPEG archive is not at {ARCHIVE}")


# ---------------------------------------------------------------- fixtures

@pytest.fixture(scope='session')
def real_cache(tmp_path_factory):
    "A cache dir the real archive was decoded into once for the session, with the result."
    if not ARCHIVE.is_file(): pytest.skip(f"the CIFAR-10 JPEG archive is not at {ARCHIVE}")
    cache = tmp_path_factory.mktemp('cifar_cache')
    return cache, load_cifar10(ARCHIVE, cache_dir=cache, progress=False)

@pytest.fixture(scope='session')
def real(real_cache): return real_cache[1]

# ---------------------------------------------------------------- the real archive

@needs_archive
def test_real_split_and_stats(real):
    tr, va = stratified_split(real.train.y, 0.1, seed=0)
    assert real.train.y[va].bincount().tolist() == [500]*10 and real.train.y[tr].bincount().tolist() == [4500]*10
    mean, std = channel_stats(real.train.x[tr])
    assert mean.shape == std.shape == (3,) and ((0.4 < mean) & (mean < 0.5)).all() and ((0.2 < std) & (std < 0.3)).all()


# ---------------------------------------------------------------- bad input

@pytest.mark.parametrize('f', [0, 1, -0.1, 1.5])
def test_val_fraction_out_of_range(f):
    with pytest.raises(DataError, match=r'val_fraction=.* is outside \(0, 1\)'): stratified_split(torch.arange(100) % 10, f)

@pytest.mark.parametrize('n', [0, -3, 101])
def test_subset_n_out_of_range(n):
    with pytest.raises(DataError, match=r'is out of range: stratified_subset needs 1 <= n <= 100'): stratified_subset(torch.arange(100) % 10, n)

# ---------------------------------------------------------------- splits

def test_split_properties():
    y = torch.randint(0, 10, (2000,), generator=torch.Generator().manual_seed(0))
    tr, va = stratified_split(y, 0.2, seed=0)
    assert tr.dtype == va.dtype == torch.int64
    assert len(va) == 400 and len(tr) + len(va) == 2000
    assert torch.equal(tr, tr.sort().values) and torch.equal(va, va.sort().values)
    assert not set(tr.tolist()) & set(va.tolist())
    assert ((y[va].bincount(minlength=10) - 0.2*y.bincount(minlength=10)).abs() <= 1).all()
    assert torch.equal(stratified_split(y, 0.2, seed=0)[1], va)
    assert not torch.equal(stratified_split(y, 0.2, seed=1)[1], va)

def test_subset_balanced():
    y = torch.tensor([0]*100 + [1]*100 + [2]*5 + [3]*100)
    sub = stratified_subset(y, 41, seed=0)
    counts = y[sub].bincount().tolist()
    assert sum(counts) == 41 and counts[2] == 5 and max(counts) - min(c for i, c in enumerate(counts) if i != 2) <= 1
    assert torch.equal(stratified_subset(y, 41, seed=0), sub) and len(sub.unique()) == 41

@settings(max_examples=200, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=60),
       f=st.floats(0.01, 0.99, allow_nan=False), seed=st.integers(0, 2**31))
def test_split_hypothesis(labels, f, seed):
    y = torch.tensor(labels)
    tr, va = stratified_split(y, f, seed=seed)
    assert len(tr) + len(va) == len(y)
    assert abs(len(va) - len(y)*f) <= 0.5 + 1e-9
    assert not set(tr.tolist()) & set(va.tolist())
    assert sorted(tr.tolist() + va.tolist()) == list(range(len(y)))
    for c in set(labels):
        assert abs(int((y[va] == c).sum()) - labels.count(c)*f) < 1 + 1e-9
    assert torch.equal(stratified_split(y, f, seed=seed)[1], va)

@settings(max_examples=100, deadline=None)
@given(labels=st.lists(st.integers(0, 4), min_size=1, max_size=60), data_=st.data())
def test_subset_hypothesis(labels, data_):
    n = data_.draw(st.integers(1, len(labels)))
    y = torch.tensor(labels)
    sub = stratified_subset(y, n)
    assert len(sub) == n == len(sub.unique())
    counts = {c: int((y[sub] == c).sum()) for c in set(labels)}
    full = [c for c in counts if counts[c] < labels.count(c)]  # classes not exhausted
    if full: assert max(counts.values()) - min(counts[c] for c in full) <= 1


# ---------------------------------------------------------------- loader and augmentation

def _asymmetric(n=6):
    x = torch.zeros(n, 3, 32, 32, dtype=torch.uint8)
    x[:, :, 8:24, 2:6] = 255  # a bar near the left edge
    return x

def test_loader_sizes_and_order():
    x, y = torch.randint(0, 256, (103, 3, 32, 32), dtype=torch.uint8), torch.arange(103)
    mean, std = channel_stats(x)
    dl = DeviceLoader(x, y, 10, mean, std, device='cpu', shuffle=True, seed=0)
    assert len(dl) == 11 and dl.n == 103 and len(DeviceLoader(x, y, 10, mean, std, device='cpu', drop_last=True)) == 10
    e1 = [yb for _, yb in dl]
    assert [len(b) for b in e1] == [10]*10 + [3]
    assert sorted(torch.cat(e1).tolist()) == list(range(103))
    e2 = torch.cat([yb for _, yb in dl])
    assert not torch.equal(torch.cat(e1), e2)  # a new permutation each epoch
    same = torch.cat([yb for _, yb in DeviceLoader(x, y, 10, mean, std, device='cpu', shuffle=True, seed=0)])
    other = torch.cat([yb for _, yb in DeviceLoader(x, y, 10, mean, std, device='cpu', shuffle=True, seed=1)])
    assert torch.equal(same, torch.cat(e1)) and not torch.equal(other, same)

def test_loader_normalises_and_resumes():
    x, y = torch.randint(0, 256, (40, 3, 32, 32), dtype=torch.uint8), torch.arange(40)
    mean, std = channel_stats(x)
    dl = DeviceLoader(x, y, 16, mean, std, device='cpu', shuffle=True, augment=True, seed=5)
    state = dl.generator.get_state()
    first = [(xb.clone(), yb) for xb, yb in dl]
    assert all(xb.shape[1:] == (3, 32, 32) and xb.dtype == torch.float32 for xb, _ in first)
    dl.generator.set_state(state)
    assert all(torch.equal(a, b) and torch.equal(ya, yb) for (a, ya), (b, yb) in zip(first, dl))
    plain = next(iter(DeviceLoader(x, y, 40, mean, std, device='cpu')))[0]
    assert torch.allclose(plain*std[:, None, None] + mean[:, None, None], x/255., atol=1e-5)
    assert abs(float(plain.mean())) < 0.05

def test_augment_flip_is_real():
    x = _asymmetric(64).float()/255
    out = augment_batch(x, torch.Generator().manual_seed(0), pad=0)
    flipped = torch.tensor([torch.equal(o, i.flip(2)) for o, i in zip(out, x)])
    kept = torch.tensor([torch.equal(o, i) for o, i in zip(out, x)])
    assert (flipped ^ kept).all() and 10 < int(flipped.sum()) < 54
    assert out[flipped][:, :, 8:24, 26:30].eq(1).all()  # the bar moved to the right edge

def test_augment_crop_is_real():
    x = torch.rand(32, 3, 32, 32)
    out = augment_batch(x, torch.Generator().manual_seed(1), pad=4)
    assert out.shape == x.shape
    xp = F.pad(x, (4, 4, 4, 4))
    offsets = []
    for o, p in zip(out, xp):
        hits = [(i, j) for w in (p, p.flip(2)) for i in range(9) for j in range(9) if torch.equal(o, w[:, i:i+32, j:j+32])]
        assert hits; offsets.append(hits[0])
    assert len(set(offsets)) > 5  # the windows really move
    assert (out == 0).any()  # some padding shows
