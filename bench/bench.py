"""cifar_nb benchmark: prints images/s of three training loops on the same data and machine, seconds per
Base and Improved epoch, data decode and cached-load times, and how the epoch time scales with data and batch
size. Numbers, not a timed test. Writes them as JSON under bench/results/ so later runs can be compared.

    python bench/bench.py [--quick] [--out bench/results/NAME.json]
"""
from __future__ import annotations
import argparse, dataclasses, datetime, json, os, sys, tempfile, time
from pathlib import Path
import torch
import torch.nn.functional as F
from cifar_nb.core import machine_info, save_json, get_device, project_root, seed_everything
from cifar_nb.model import report_cnn
from cifar_nb.learner import TrainConfig, fit, make_optimizer, resolve_precision
from cifar_nb.runs import make_loaders, build_model
from cifar_nb.data import load_cifar10, extract_cifar10_jpeg, default_cache_dir, DeviceLoader, channel_stats

def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def imagefolder_loop(root: Path, steps: int, bs: int = 128) -> float:
    "The naive baseline: torchvision ImageFolder + DataLoader (2 workers, crop+flip), plain float32 model."
    from torchvision import datasets, transforms as T
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    ds = datasets.ImageFolder(str(root/'train'), transform=tf)
    dl = torch.utils.data.DataLoader(ds, batch_size=bs, shuffle=True, num_workers=2, drop_last=True, persistent_workers=True)
    m = report_cnn(); opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    it, n, t0 = iter(dl), 0, None
    for i in range(steps + 3):
        if i == 3: t0 = time.perf_counter()
        x, y = next(it)
        loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
        if i >= 3: n += len(y)
    return n / (time.perf_counter() - t0)

def plain_loop(x, y, steps: int, bs: int = 128) -> float:
    "A plain PyTorch loop over in-memory float32 tensors (pre-normalised), float32, default memory format."
    m = report_cnn(); opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    xf = (x[:steps*bs + 3*bs].float() / 255 - 0.47) / 0.25; yy = y[:len(xf)]
    n, t0 = 0, None
    for i in range(steps + 3):
        if i == 3: t0 = time.perf_counter()
        xb, yb = xf[i*bs:(i+1)*bs], yy[i*bs:(i+1)*bs]
        loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step(); loss.item()
        if i >= 3: n += len(yb)
    return n / (time.perf_counter() - t0)

def learner_epoch(data, cfg: TrainConfig, device) -> dict:
    "One epoch of cifar_nb's learner (fit with validation) from `cfg`; images/s of the training steps."
    seed_everything(cfg.seed)
    L = make_loaders(cfg, data, device)
    m = build_model(cfg).to(device)
    if cfg.channels_last: m = m.to(memory_format=torch.channels_last)
    # warm-up a few steps so one-time costs (allocator, oneDNN primitive creation) are not timed
    warm = dataclasses.replace(cfg, epochs=1, n_train=None)
    fit(m, _Head(L['train'], 5), _Head(L['val'], 1), warm, progress=False)
    _sync(device); t = time.perf_counter()
    r = fit(m, L['train'], L['val'], dataclasses.replace(cfg, epochs=1), progress=False)
    _sync(device)
    return dict(epoch_seconds=time.perf_counter() - t, train_images_per_s=r.images_per_s, n_train=L['train'].n, batch_size=cfg.batch_size)

class _Head:
    "The first `n` batches of a loader (for warm-up)."
    def __init__(self, dl, n): self.dl, self.n, self.batch_size, self.generator = dl, n, dl.batch_size, dl.generator
    def __len__(self): return min(self.n, len(self.dl))
    def __iter__(self):
        for i, b in enumerate(self.dl):
            if i >= self.n: break
            yield b

def main():
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--quick', action='store_true', help='fewer steps and sizes (a minute or two)')
    ap.add_argument('--device', default='auto')
    ap.add_argument('--out', default=None, help='JSON output path (default bench/results/<date>-<device>.json)')
    a = ap.parse_args()
    dev = get_device(a.device)
    info = machine_info(dev)
    res = dict(machine=info, date=datetime.datetime.now().isoformat(timespec='seconds'), data='CIFAR-10 (JPEG q75 copy)')
    p = lambda *s: print(*s, flush=True)
    p(f"machine: {info['cpu']} ({info['cores']} cores, {info['torch_threads']} torch threads), GPU: {info['gpu']}, torch {info['torch']}")
    p(f"learner precision: {resolve_precision('auto', dev) or 'float32'}, channels_last")

    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter(); data = load_cifar10(cache_dir=cache, progress=False); res['decode_seconds'] = time.perf_counter() - t
        t = time.perf_counter(); data = load_cifar10(cache_dir=cache, progress=False); res['cached_load_seconds'] = time.perf_counter() - t
    p(f"data: first load (decode 60,000 JPEGs + write cache) {res['decode_seconds']:.1f} s; cached load {res['cached_load_seconds']:.2f} s")

    steps = 40 if a.quick else 100
    root = extract_cifar10_jpeg()
    ips = {}
    ips['imagefolder_loop'] = imagefolder_loop(root, steps)
    ips['plain_inmemory_fp32'] = plain_loop(data.train.x, data.train.y, steps)
    # the same network as the two loops above (the report's Base: no batch norm, no dropout), same batch size
    cfg = TrainConfig(device=str(dev), n_train=128*steps*2, val_fraction=0.1, batchnorm=False, dropout=0.0, lr=0.001, l2=0.0, lr_schedule='none')
    ips['cifar_nb_learner'] = learner_epoch(data, cfg, dev)['train_images_per_s']
    res['images_per_s'] = ips
    res['ratios'] = dict(learner_vs_imagefolder=ips['cifar_nb_learner'] / ips['imagefolder_loop'],
                         learner_vs_plain_fp32=ips['cifar_nb_learner'] / ips['plain_inmemory_fp32'])
    p(f"\ntraining images/s (report's Base network, batch 128, {steps} steps each ({2*steps} for the learner), one process, this run):")
    for k, v in ips.items(): p(f"  {k:<22} {v:8.0f}")
    p(f"  ratio learner / ImageFolder loop:   {res['ratios']['learner_vs_imagefolder']:.2f}x")
    p(f"  ratio learner / plain fp32 loop:    {res['ratios']['learner_vs_plain_fp32']:.2f}x")

    ep = {}
    for name, over in [('Base', dict(lr=0.001, lr_schedule='none', l2=0., batchnorm=False, dropout=0., epochs=10)), ('Improved', {})]:
        c = dataclasses.replace(TrainConfig(device=str(dev)), **over, n_train=(12800 if a.quick else None))
        ep[name] = learner_epoch(data, c, dev)
        p(f"{name} epoch ({ep[name]['n_train']} images + validation): {ep[name]['epoch_seconds']:.1f} s "
          f"({ep[name]['train_images_per_s']:.0f} img/s)")
    res['epochs'] = ep

    sizes = [5000, 10000, 25000] + ([] if a.quick else [45000])
    res['scaling_data'] = [learner_epoch(data, TrainConfig(device=str(dev), n_train=n), dev) for n in sizes]
    p("\nepoch seconds vs training-set size (Improved, batch 128):")
    for r in res['scaling_data']: p(f"  {r['n_train']:>6} images: {r['epoch_seconds']:6.2f} s  ({r['train_images_per_s']:.0f} img/s)")
    bss = [32, 64, 128, 256, 512] + ([] if a.quick else [1024])
    res['scaling_batch'] = [learner_epoch(data, TrainConfig(device=str(dev), n_train=10240, batch_size=b), dev) for b in bss]
    p("\nepoch seconds vs batch size (Improved, 10,240 images):")
    for r in res['scaling_batch']: p(f"  batch {r['batch_size']:>5}: {r['epoch_seconds']:6.2f} s  ({r['train_images_per_s']:.0f} img/s)")

    out = Path(a.out) if a.out else project_root()/'bench'/'results'/f"{datetime.date.today()}-{dev.type}{'-quick' if a.quick else ''}.json"
    save_json(out, res)
    p(f"\nwrote {out}")

if __name__ == '__main__': main()
