"""Integration tests of cifar_nb.data: the real archive (loaded once per session), bad inputs, splits, the loader."""
import pickle, shutil, socket, tarfile, io
from pathlib import Path

import numpy as np
import pytest
import torch
import torch.nn.functional as F
from hypothesis import given, settings, strategies as st
from PIL import Image

import cifar_nb.data.cifar10 as data
from cifar_nb.core import project_root, file_digest
from cifar_nb.core import DataError
from cifar_nb.data import CLASSES, CIFAR10_JPEG_SHA256, extract_cifar10_jpeg, find_cifar10, load_cifar10, make_fake_cifar10
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

@pytest.fixture
def fake(tmp_path):
    "A tiny image folder shaped like the real one (3 train and 1 test image per class)."
    return make_fake_cifar10(tmp_path/'fake', n_train=3, n_test=1)

@pytest.fixture
def nowhere(tmp_path, monkeypatch):
    "No data anywhere: CIFAR_NB_DATA unset, the shared archive hidden, the network unreachable."
    monkeypatch.delenv('CIFAR_NB_DATA', raising=False)
    monkeypatch.setattr(data, '_shared_archive', lambda: tmp_path/'shared'/'cifar10-jpeg.tar.gz')
    def no_network(*a, **k): raise OSError('network disabled in tests')
    monkeypatch.setattr(socket.socket, 'connect', no_network)
    import torchvision.datasets.cifar as tv_cifar
    monkeypatch.setattr(tv_cifar, 'download_and_extract_archive', no_network)
    return tmp_path


# ---------------------------------------------------------------- the real archive

def test_real_archive_loads(real):
    test_x, train_x = real.test.x, real.train.x
    assert (train_x.shape, test_x.shape) == ((50000, 3, 32, 32), (10000, 3, 32, 32))
    assert train_x.dtype == test_x.dtype == torch.uint8 and real.train.y.dtype == real.test.y.dtype == torch.int64
    assert real.train.y.bincount().tolist() == [5000]*10 and real.test.y.bincount().tolist() == [1000]*10
    assert real.classes == CLASSES
    s = real.source
    assert (s['kind'], s['sha256'], s['from_cache'], s['name']) == ('jpeg-archive', CIFAR10_JPEG_SHA256, False, 'CIFAR-10 (JPEG q75 copy)')
    assert s['path'] == str(ARCHIVE) and Path(s['cache']).is_file()

@needs_archive
def test_real_images_are_in_class_then_name_order(real):
    with tarfile.open(ARCHIVE) as tf:
        for split, cls, i, n in (('train', 'cat', 17, 5000), ('test', 'truck', 999, 1000)):
            raw = tf.extractfile(f'cifar10-jpeg/{split}/{cls}/{i:04d}.jpg').read()
            pix = torch.from_numpy(np.asarray(Image.open(io.BytesIO(raw)).convert('RGB')).transpose(2, 0, 1).copy())
            k = CLASSES.index(cls)*n + i
            got = getattr(real, split)
            assert torch.equal(got.x[k], pix) and got.y[k] == CLASSES.index(cls)

def test_cached_load_is_identical(real_cache):
    cache, first = real_cache
    again = load_cifar10(ARCHIVE, cache_dir=cache, progress=False)
    assert again.source['from_cache'] is True
    assert torch.equal(again.train.x, first.train.x) and torch.equal(again.test.y, first.test.y)

def test_corrupt_real_cache_is_rebuilt(real_cache, tmp_path):
    cache, first = real_cache
    npz = Path(first.source['cache'])
    shutil.copy(npz, tmp_path/npz.name); shutil.copy(npz.with_suffix('.json'), tmp_path/npz.with_suffix('.json').name)
    with open(tmp_path/npz.name, 'r+b') as f: f.truncate(npz.stat().st_size//2)
    with pytest.warns(UserWarning, match=rf'{npz.name} is stale or corrupt.*rebuilding'):
        d = load_cifar10(ARCHIVE, cache_dir=tmp_path, progress=False)
    assert d.source['from_cache'] is False and torch.equal(d.train.x, first.train.x)
    assert load_cifar10(ARCHIVE, cache_dir=tmp_path, progress=False).source['from_cache'] is True

@needs_archive
def test_truncated_archive(tmp_path):
    bad = tmp_path/'cifar10-jpeg.tar.gz'
    with open(ARCHIVE, 'rb') as f: bad.write_bytes(f.read(ARCHIVE.stat().st_size//2))
    with pytest.raises(DataError, match=rf'{bad}.*SHA-256 [0-9a-f]{{64}}, expected {CIFAR10_JPEG_SHA256}.*copy it again'):
        load_cifar10(bad, cache_dir=tmp_path/'c', progress=False)
    assert not (tmp_path/'c').exists() or not any((tmp_path/'c').iterdir())

@needs_archive
def test_tampered_archive(tmp_path):
    raw = bytearray(ARCHIVE.read_bytes()); raw[len(raw)//2] ^= 0xFF
    bad = tmp_path/'cifar10-jpeg.tar.gz'; bad.write_bytes(bytes(raw))
    shutil.copy(ARCHIVE.parent/'SHA256SUMS', tmp_path/'SHA256SUMS')
    with pytest.raises(DataError, match='truncated or altered') as e: load_cifar10(bad, cache_dir=tmp_path/'c', progress=False)
    assert '\n' not in str(e.value)

@needs_archive
def test_real_split_and_stats(real):
    tr, va = stratified_split(real.train.y, 0.1, seed=0)
    assert real.train.y[va].bincount().tolist() == [500]*10 and real.train.y[tr].bincount().tolist() == [4500]*10
    mean, std = channel_stats(real.train.x[tr])
    assert mean.shape == std.shape == (3,) and ((0.4 < mean) & (mean < 0.5)).all() and ((0.2 < std) & (std < 0.3)).all()


# ---------------------------------------------------------------- bad input

def test_missing_classes_named(fake, tmp_path):
    shutil.rmtree(fake/'train'/'dog'); shutil.rmtree(fake/'train'/'ship')
    with pytest.raises(DataError, match='train/ has no images of dog, ship'): load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)

def test_wrong_size_image_named(fake, tmp_path):
    Image.new('RGB', (28, 30)).save(fake/'test'/'bird'/'0009.jpg')
    with pytest.raises(DataError, match=r'test/bird/0009.jpg is 28x30 pixels, not 32x32'):
        load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)

def test_non_image_named(fake, tmp_path):
    (fake/'train'/'horse'/'readme.txt').write_text('not an image')
    with pytest.raises(DataError, match=r'train/horse/readme.txt is not a readable image'):
        load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)
    assert not (tmp_path/'c').exists() or not any((tmp_path/'c').iterdir())  # nothing cached

def test_corrupt_cache_checksum_rebuilt(fake, tmp_path):
    first = load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)
    npz = Path(first.source['cache'])
    raw = bytearray(npz.read_bytes()); raw[len(raw)//2] ^= 0xFF; npz.write_bytes(bytes(raw))
    with pytest.warns(UserWarning, match='is stale or corrupt'): d = load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)
    assert d.source['from_cache'] is False and torch.equal(d.train.x, first.train.x)

def test_folder_change_invalidates_cache(fake, tmp_path):
    first = load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)
    Image.new('RGB', (32, 32), (255, 0, 0)).save(fake/'train'/'cat'/'0099.jpg')
    d = load_cifar10(fake, cache_dir=tmp_path/'c', progress=False)
    assert d.source['from_cache'] is False and len(d.train) == len(first.train) + 1

@pytest.mark.parametrize('f', [0, 1, -0.1, 1.5])
def test_val_fraction_out_of_range(f):
    with pytest.raises(DataError, match=r'val_fraction=.* is outside \(0, 1\)'): stratified_split(torch.arange(100) % 10, f)

@pytest.mark.parametrize('n', [0, -3, 101])
def test_subset_n_out_of_range(n):
    with pytest.raises(DataError, match=r'is out of range: stratified_subset needs 1 <= n <= 100'): stratified_subset(torch.arange(100) % 10, n)

def test_nonexistent_path(tmp_path):
    with pytest.raises(DataError, match=r"path=.*nope.* does not exist"): load_cifar10(tmp_path/'nope', cache_dir=tmp_path/'c')

def test_bad_env_path(tmp_path, monkeypatch):
    monkeypatch.setenv('CIFAR_NB_DATA', str(tmp_path/'gone.tar.gz'))
    with pytest.raises(DataError, match=r"CIFAR_NB_DATA=.*gone.tar.gz.* does not exist"): find_cifar10()

def test_no_data_anywhere(nowhere):
    with pytest.raises(DataError) as e: load_cifar10(cache_dir=nowhere/'cache', progress=False)
    msg = str(e.value)
    for part in ('no CIFAR-10 found', 'CIFAR_NB_DATA unset', str(nowhere/'shared'/'cifar10-jpeg.tar.gz'),
                 str(nowhere/'cache'/'torchvision'/'cifar-10-batches-py'), 'download failed', 'CIFAR_NB_DATA=', 'path='):
        assert part in msg, (part, msg)
    assert '\n' not in msg

def _fake_batches(folder, n=3, monkeypatch=None):
    "A tiny cifar-10-batches-py; with `monkeypatch`, its MD5s stand in for the canonical ones."
    folder.mkdir(parents=True)
    for name in [f'data_batch_{i}' for i in range(1, 6)] + ['test_batch']:
        with open(folder/name, 'wb') as f:
            pickle.dump({'data': np.random.randint(0, 256, (n, 3072), dtype=np.uint8), 'labels': list(range(n))}, f)
    if monkeypatch: monkeypatch.setattr(data, 'CIFAR10_BATCH_MD5', {p.name: file_digest(p, 'md5') for p in folder.iterdir()})

class _Planted:
    "A pickle whose loading would run code: it creates the file `path`."
    def __init__(self, path): self.path = str(path)
    def __reduce__(self): return (exec, (f"import pathlib; pathlib.Path({self.path!r}).touch()",))

def test_a_pickle_carrying_code_is_never_unpickled(tmp_path, monkeypatch):
    "CIFAR_NB_DATA names a batches folder whose data_batch_1 carries code: it is refused by its MD5 before pickle sees it."
    folder = tmp_path/'cifar-10-batches-py'
    _fake_batches(folder)  # not the canonical files: their checksums are the canonical ones (no monkeypatch)
    marker = tmp_path/'code-ran'
    with open(folder/'data_batch_1', 'wb') as f: pickle.dump(_Planted(marker), f)
    assert pickle.loads(pickle.dumps(_Planted(tmp_path/'probe'))) is None and (tmp_path/'probe').exists()  # the plant works
    monkeypatch.setenv('CIFAR_NB_DATA', str(folder))
    with pytest.raises(DataError, match='data_batch_1 has MD5 .* is not unpickled'): load_cifar10(cache_dir=tmp_path/'c')
    assert not marker.exists()

def test_torchvision_copy_used_without_download(nowhere, monkeypatch):
    _fake_batches(nowhere/'cache'/'torchvision'/'cifar-10-batches-py', monkeypatch=monkeypatch)
    monkeypatch.setattr(data, '_download_torchvision', lambda root: pytest.fail('tried to download'))
    d = load_cifar10(cache_dir=nowhere/'cache', progress=False)
    assert (d.source['kind'], d.source['name'], len(d.train), len(d.test)) == ('torchvision', 'CIFAR-10', 15, 3)
    assert d.train.x.shape == (15, 3, 32, 32) and d.train.x.dtype == torch.uint8

def test_python_batches_path(tmp_path, monkeypatch):
    _fake_batches(tmp_path/'cifar-10-batches-py', monkeypatch=monkeypatch)
    for p in (tmp_path, tmp_path/'cifar-10-batches-py'):
        assert load_cifar10(p, cache_dir=tmp_path/'c').source['kind'] == 'python-batches'
    (tmp_path/'cifar-10-batches-py'/'data_batch_3').unlink()
    with pytest.raises(DataError, match='lacks data_batch_3'): load_cifar10(tmp_path, cache_dir=tmp_path/'c')

def test_fake_archive_and_extract(tmp_path):
    tgz = make_fake_cifar10(tmp_path/'f', archive=True)
    d = load_cifar10(tgz, cache_dir=tmp_path/'c', progress=False)
    root = extract_cifar10_jpeg(tgz, dest=tmp_path/'x')
    assert sorted(p.name for p in root.iterdir()) == ['test', 'train']
    assert torch.equal(load_cifar10(root, cache_dir=tmp_path/'c', progress=False).train.x, d.train.x)
    assert extract_cifar10_jpeg(tgz, dest=tmp_path/'x') == root


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

def test_bad_image_found_by_the_pool(tmp_path):
    root = make_fake_cifar10(tmp_path/'big', n_train=101, n_test=1)  # 1,020 images: two chunks, decoded by the pool
    (root/'train'/'truck'/'0100.jpg').write_bytes(b'\xff\xd8 not really a jpeg')
    with pytest.raises(DataError, match=r'train/truck/0100.jpg is not a readable image'):
        load_cifar10(root, cache_dir=tmp_path/'c', progress=False)
    (root/'train'/'truck'/'0100.jpg').unlink()
    d = load_cifar10(root, cache_dir=tmp_path/'c', progress=False)
    assert d.train.y.bincount().tolist() == [101]*9 + [100]
