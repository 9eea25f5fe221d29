"""cifar_nb benchmark: numbers printed and written as JSON under bench/results/, not a timed test.

Sections (all by default; `--only a,b` picks some):
  data         decoding the JPEGs once, then loading the decoded cache
  loops        training images/s of three loops on the same data and the same device: a torchvision ImageFolder
               DataLoader loop, a plain loop over in-memory float32 tensors, and cifar_nb's learner (its loaders,
               optimiser and training step, built by `runs.setup` as a run builds them), with their ratios (the report's Base network)
  choices      what the defaults choose here (precision, memory format, threads, step) and why, against a short
               timing of every candidate: is the default the fastest measured?
  concurrency  the study on a CPU: J runs at once with T threads each (J*T = cores), each its own process using the
               learner's step, against one run with every thread; summed images/s and the ratio; the trained
               weights' hashes alone vs concurrently at equal threads (bit-identical) and at other thread counts
  presets      one epoch of each of the study's configurations (the course study file, `reports/course.toml`) with `fit`
  scaling      epoch time against training-set size and batch size
  overhead     the per-run cost around training in a papermill run of nbs/train.ipynb: kernel start, imports,
               data load, the rest

    python bench/bench.py                      # the real measurement (tens of minutes on 2 cores: it prints how long)
    python bench/bench.py --smoke              # every section in seconds, tiny step counts (CI; numbers mean nothing)
    python bench/bench.py --emulate-avx2       # torch and oneDNN limited to AVX2 (no AVX-512, no BF16): an AVX2-only CPU
    python bench/bench.py --device cuda        # the learner and both baselines on the GPU
"""
from __future__ import annotations
import os, sys
if '--emulate-avx2' in sys.argv:  # read by ATen, oneDNN and MKL when torch loads: set before importing it (workers inherit)
    os.environ.update(ATEN_CPU_CAPABILITY='avx2', ONEDNN_MAX_CPU_ISA='AVX2', MKL_ENABLE_INSTRUCTIONS='AVX2')
    # torch.compile's cache does not tell the emulated ISA from the real one: a kernel cached by one crashed or gave
    # garbage indices under the other (measured, torch 2.14.1), so the emulation compiles into a cache of its own
    import tempfile as _t
    os.environ.setdefault('TORCHINDUCTOR_CACHE_DIR',
                          os.path.join(_t.gettempdir(), f'torchinductor_emulated_avx2_{os.getuid()}'))
import argparse, dataclasses, datetime, importlib, itertools, json, re, statistics, subprocess, tempfile, time
from pathlib import Path
import torch
import torch.nn.functional as F

ROOT = Path(__file__).resolve().parents[1]
if str(ROOT) not in sys.path: sys.path.insert(0, str(ROOT))  # `python bench/bench.py` from a clone, installed or not
from cifar_nb.core import machine_info, save_json, get_device, cpu_model, cpu_flags
from cifar_nb.config import TrainConfig, Placement
from cifar_nb.study import course_study
from cifar_nb.train import report_cnn
from cifar_nb.train import resolve_precision, resolve_step, native_bf16_cpu
from cifar_nb.runs import setup
from cifar_nb.study import preset_cfg, endless, measure_concurrency, save_concurrency, choose_jobs

SECTIONS = ('data', 'loops', 'choices', 'concurrency', 'presets', 'scaling', 'overhead')
BS = 128  # the report's batch size: every comparison below uses it
p = lambda *s: print(*s, flush=True)


# --- the machine -----------------------------------------------------------------------------------------------------
def onednn_isa() -> str|None:
    "The instruction set oneDNN reports in a fresh process with this environment (ONEDNN_VERBOSE)."
    code = ("import torch; m = torch.nn.Conv2d(3, 8, 3).to(memory_format=torch.channels_last); "
            "m(torch.randn(4, 3, 16, 16).contiguous(memory_format=torch.channels_last)).sum().backward()")
    r = subprocess.run([sys.executable, '-c', code], env={**os.environ, 'ONEDNN_VERBOSE': '1'},
                       capture_output=True, text=True, timeout=120)
    m = re.search(r'onednn_verbose,(?:v1,)?info,cpu,isa:(.*)', r.stdout)
    return m.group(1).strip() if m else None

def cpu_facts(dev: torch.device) -> dict:
    "The CPU's model and vector extensions, what torch and oneDNN use of them, and whether that is emulated."
    flags = cpu_flags()
    emulated = os.environ.get('ATEN_CPU_CAPABILITY', '').lower() == 'avx2'
    info = dict(machine_info(dev), flags=sorted(f for f in flags if f.startswith(('avx', 'amx', 'fma'))),
                capability=torch.backends.cpu.get_cpu_capability(), native_bf16_cpu=native_bf16_cpu(),
                onednn_isa=onednn_isa(), emulated_avx2=emulated, default_threads=torch.get_num_threads(),
                omp_wait_policy=os.environ.get('OMP_WAIT_POLICY'))
    info['label'] = f"emulated AVX2 on {cpu_model()}" if emulated else cpu_model()
    return info


# --- training loops ------------------------------------------------------------------------------------------------
def _sync(dev):
    if dev.type == 'cuda': torch.cuda.synchronize(dev)

def imagefolder_loop(root: Path, steps: int, dev: torch.device, workers: int) -> float:
    "The naive baseline: torchvision ImageFolder + DataLoader (crop+flip in workers), plain float32 model on `dev`."
    from torchvision import datasets, transforms as T
    tf = T.Compose([T.RandomCrop(32, padding=4), T.RandomHorizontalFlip(), T.ToTensor(),
                    T.Normalize((0.49, 0.48, 0.45), (0.25, 0.24, 0.26))])
    dl = torch.utils.data.DataLoader(datasets.ImageFolder(str(root/'train'), transform=tf), batch_size=BS, shuffle=True,
                                     num_workers=workers, drop_last=True, persistent_workers=workers > 0,
                                     pin_memory=dev.type == 'cuda')
    m = report_cnn().to(dev); opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    it, n, t0 = endless(dl), 0, None
    for i in range(steps + 3):
        if i == 3: _sync(dev); t0 = time.perf_counter()
        x, y = next(it)
        x, y = x.to(dev, non_blocking=True), y.to(dev, non_blocking=True)
        loss = F.cross_entropy(m(x), y); opt.zero_grad(); loss.backward(); opt.step()
        if i >= 3: n += len(y)
    _sync(dev)
    return n / (time.perf_counter() - t0)

def plain_loop(x: torch.Tensor, y: torch.Tensor, steps: int, dev: torch.device) -> float:
    "A plain PyTorch loop over in-memory float32 tensors (pre-normalised), float32, default memory format, on `dev`."
    m = report_cnn().to(dev); opt = torch.optim.SGD(m.parameters(), lr=1e-3, momentum=0.9)
    xf, n, t0 = (x.float() / 255 - 0.47) / 0.25, 0, None
    if dev.type == 'cuda': xf = xf.pin_memory()
    nb = len(xf) // BS
    for i in range(steps + 3):
        if i == 3: _sync(dev); t0 = time.perf_counter()
        j = i % nb
        xb, yb = xf[j*BS:(j+1)*BS].to(dev, non_blocking=True), y[j*BS:(j+1)*BS].to(dev, non_blocking=True)
        loss = F.cross_entropy(m(xb), yb); opt.zero_grad(); loss.backward(); opt.step(); loss.item()
        if i >= 3: n += len(yb)
    return n / (time.perf_counter() - t0)

def learner_steps(data, cfg: TrainConfig, place: Placement, steps: int, warmup: int = 5) -> float:
    "Training images/s of the learner's own step over its own loader (`runs.setup`, as a run builds them; one read-back at the end)."
    s = setup(cfg, place, data)
    step, batches = s.step(max(steps, warmup)), endless(s.loaders['train'])
    for _ in range(warmup): step(*next(batches))
    step.read()  # waits for the warm-up (allocator, oneDNN primitives; a graph step captures after GraphStep.warmup steps)
    t = time.perf_counter()
    for _ in range(steps): step(*next(batches))
    n = step.read()[2]  # the read-back waits for the device
    return n / (time.perf_counter() - t)

class _Head:
    "The first `n` batches of a loader (a warm-up epoch for `fit`)."
    def __init__(self, dl, n): self.dl, self.n, self.batch_size, self.generator = dl, n, dl.batch_size, dl.generator
    def __len__(self): return min(self.n, len(self.dl))
    def __iter__(self): return itertools.islice(iter(self.dl), len(self))

def learner_epoch(data, cfg: TrainConfig, place: Placement) -> dict:
    "One epoch of `fit` (training and validation) after a short warm-up; seconds and training images/s."
    s = setup(cfg, place, data)  # the model, loaders, precision and step of a run (`runs.setup`)
    one = dataclasses.replace(cfg, epochs=1)
    s.fit(_Head(s.loaders['train'], 5), _Head(s.loaders['val'], 1), one, progress=False)
    _sync(s.device); t = time.perf_counter()
    r = s.fit(cfg=one, progress=False)
    _sync(s.device)
    return dict(epoch_seconds=time.perf_counter() - t, train_images_per_s=r.images_per_s, n_train=s.loaders['train'].n,
                batch_size=cfg.batch_size)

# --- sections --------------------------------------------------------------------------------------------------------
def section_data(a, dev, res):
    from cifar_nb.data import load_cifar10
    with tempfile.TemporaryDirectory() as cache:
        t = time.perf_counter(); load_cifar10(a.data, cache_dir=cache, progress=False); dec = time.perf_counter() - t
        t = time.perf_counter(); load_cifar10(a.data, cache_dir=cache, progress=False); cached = time.perf_counter() - t
    res['data_load'] = dict(decode_seconds=dec, cached_load_seconds=cached)
    p(f"data: first load (decode the JPEGs + write the cache) {dec:.1f} s; cached load {cached:.2f} s")

def section_loops(a, dev, res, data):
    from cifar_nb.data import extract_cifar10_jpeg
    steps = a.steps or (5 if a.smoke else 100)
    place = Placement(device=str(dev))
    cfg = preset_cfg('Base')  # the same network as the two loops (no batch norm, no dropout), the same batch size
    workers = min(8, max(2, os.cpu_count() or 2))
    ips = dict(imagefolder_loop=imagefolder_loop(extract_cifar10_jpeg(a.data), steps, dev, workers),
               plain_inmemory_fp32=plain_loop(data.train.x, data.train.y, steps, dev),
               cifar_nb_learner=learner_steps(data, cfg, place, 2 * steps))
    ratios = dict(learner_vs_imagefolder=ips['cifar_nb_learner'] / ips['imagefolder_loop'],
                  learner_vs_plain_fp32=ips['cifar_nb_learner'] / ips['plain_inmemory_fp32'])
    amp = resolve_precision(place.precision, dev)
    chosen = dict(precision=str(amp or torch.float32), channels_last=place.channels_last, threads=torch.get_num_threads(),
                  step=resolve_step(place.step, dev))
    res['loops'] = dict(images_per_s=ips, ratios=ratios, steps=steps, batch_size=BS, device=str(dev),
                        imagefolder_workers=workers, learner=chosen)
    p(f"\ntraining images/s on {dev} (the report's Base network, batch {BS}, {steps} steps each, {2*steps} for the learner):")
    p(f"  {'ImageFolder DataLoader loop':<34} {ips['imagefolder_loop']:9.0f}  ({workers} workers, crop+flip, float32)")
    p(f"  {'plain loop, in-memory float32':<34} {ips['plain_inmemory_fp32']:9.0f}")
    p(f"  {'cifar_nb learner':<34} {ips['cifar_nb_learner']:9.0f}  ({', '.join(f'{k} {v}' for k, v in chosen.items())})")
    p(f"  learner / ImageFolder loop: {ratios['learner_vs_imagefolder']:.2f}x;  learner / plain loop: {ratios['learner_vs_plain_fp32']:.2f}x")

def _thread_counts(cores: int) -> list[int]:
    "1, the powers of two below `cores`, and `cores`."
    return sorted({1, cores, *(2**k for k in range(1, cores.bit_length()) if 2**k < cores)})

def _candidates(dev) -> list[dict]:
    "Every placement worth timing on `dev`: precision x memory format x threads (CPU) or x step (CUDA)."
    if dev.type == 'cuda':
        precs = ['bf16', 'fp16', 'fp32'] if torch.cuda.is_bf16_supported() else ['fp16', 'fp32']
        return [dict(precision=pr, channels_last=cl, step=st, threads=None)
                for pr in precs for cl in (True, False) for st in ('graph', 'eager')]
    return [dict(precision=pr, channels_last=cl, step='eager', threads=t)
            for pr in ('bf16', 'fp32') for cl in (True, False) for t in _thread_counts(os.cpu_count() or 1)]

def _why(dev, amp) -> dict:
    "Why the defaults choose what they choose here."
    if dev.type == 'cuda':
        prec = f"precision='auto' on CUDA: {'bf16 (torch.cuda.is_bf16_supported())' if amp == torch.bfloat16 else 'fp16 (no bf16 on this GPU)'}"
    else:
        cap = torch.backends.cpu.get_cpu_capability()
        prec = (f"precision='auto' on a CPU: bf16 only where it is native (AVX512-BF16 or AMX in /proc/cpuinfo and torch "
                f"running AVX-512 kernels); here torch runs {cap} kernels and native_bf16_cpu() is {native_bf16_cpu()}, "
                f"so {'bf16' if amp else 'float32'}")
    return dict(precision=prec, channels_last="Placement.channels_last defaults to True (NHWC), on every device",
                threads=f"threads=None: torch's default, {torch.get_num_threads()} here (one per core)",
                step=f"step='auto': {resolve_step('auto', dev)} on {dev.type}")

def section_choices(a, dev, res, data):
    steps, repeats = (a.steps or (3 if a.smoke else 30)), (1 if a.smoke else 3)
    default_threads = torch.get_num_threads()
    cfg = TrainConfig(n_train=None if a.smoke else 12800)  # the Improved network (batch norm, dropout): most of the study
    amp = resolve_precision('auto', dev)
    auto = dict(precision={None: 'fp32', torch.bfloat16: 'bf16', torch.float16: 'fp16'}[amp], channels_last=Placement.channels_last,
                step=resolve_step('auto', dev), threads=None if dev.type == 'cuda' else default_threads)
    cands = _candidates(dev)
    if a.with_compile:  # the compiled forward (inside the eager step) at the defaults' precision
        cands += [dict(c, compile='yes') for c in cands if c['precision'] == auto['precision'] and c['step'] == 'eager']
    p(f"\nchoices on {dev} (the Improved network, batch {BS}, {steps} steps, median of {repeats} rounds; one round for those under half the best):")
    for k, v in _why(dev, amp).items(): p(f"  default {k}: {v}")
    times = {i: [] for i in range(len(cands))}
    for r in range(repeats):  # rounds, so that a burst of load elsewhere hits every candidate alike
        best_so_far = max((statistics.median(t) for t in times.values() if t), default=0)
        for i, c in enumerate(cands):
            if r and statistics.median(times[i]) < 0.5 * best_so_far: continue  # less than half the best: one round says enough
            if c['threads']: torch.set_num_threads(c['threads'])
            place = Placement(device=str(dev), precision=c['precision'], channels_last=c['channels_last'], step=c['step'],
                              compile=c.get('compile', 'no'))
            times[i].append(learner_steps(data, cfg, place, steps))
    torch.set_num_threads(default_threads)
    rows = [dict(c, images_per_s=statistics.median(times[i]), rounds=times[i]) for i, c in enumerate(cands)]
    rows.sort(key=lambda r: -r['images_per_s'])
    best = rows[0]
    auto_row = next((r for r in rows if all(r.get(k) == v for k, v in auto.items()) and 'compile' not in r), None)
    for r in rows:
        mark = ' <- the defaults' if r is auto_row else ''
        p(f"  {r['precision']:>5} {'channels_last' if r['channels_last'] else 'NCHW':<13} {r['step']:<6} "
          f"{'' if r['threads'] is None else str(r['threads']) + ' threads':<10}{' compiled' if r.get('compile') else ''} "
          f"{r['images_per_s']:8.0f} images/s{mark}")
    ok = auto_row is not None and auto_row['images_per_s'] >= 0.95 * best['images_per_s']
    verdict = ("the defaults are the fastest measured (within 5%)" if ok else
               f"the defaults are NOT the fastest here: {best['precision']}, {'channels_last' if best['channels_last'] else 'NCHW'}, "
               f"step {best['step']}{'' if best['threads'] is None else ', ' + str(best['threads']) + ' threads'} is "
               f"{best['images_per_s'] / auto_row['images_per_s']:.2f}x the defaults' {auto_row['images_per_s']:.0f} images/s")
    fp32 = [r for r in rows if r['precision'] == 'fp32']
    p(f"  -> {verdict}")
    p(f"  fastest in float32: {fp32[0]['images_per_s']:.0f} images/s with {'channels_last' if fp32[0]['channels_last'] else 'NCHW'}"
      f"{'' if fp32[0]['threads'] is None else ', ' + str(fp32[0]['threads']) + ' threads'}")
    res['choices'] = dict(defaults=auto, why=_why(dev, amp), candidates=rows, fastest=best, defaults_are_fastest=ok, verdict=verdict,
                          fastest_fp32=fp32[0], steps=steps, rounds=repeats, network='Improved', batch_size=BS)


# --- concurrency: one process per run (cifar_nb.concurrency, which the study's --jobs auto reads) ------------------
def section_concurrency(a, dev, res):
    "J runs x T threads against one run with every core; a full (not smoke) measurement is kept for the study's --jobs auto."
    m = measure_concurrency(os.cpu_count() or 1, steps=4 if a.smoke else (a.steps or 60), rounds=1 if a.smoke else 3,
                            n_train=None if a.smoke else 12800, device=str(dev), data=a.data, max_splits=1 if a.smoke else None, log=p)
    for c in m['configs']: p(f"  {c['jobs']} x {c['threads']}: {c['ratio']:.2f}x one run; target >= 1.4x: {'met' if c['ratio'] >= 1.4 else 'NOT met'}")
    if dev.type == 'cpu' and not a.smoke:
        kept = save_concurrency(m)
        ch = choose_jobs(len(course_study().configurations), measure=False)
        p(f"  kept for the study's --jobs auto in {kept}: a {len(course_study().configurations)}-run study here trains {ch['jobs']} at once ({ch['why']})")
        m['study_choice'] = ch
    res['concurrency'] = m


def section_presets(a, dev, res, data):
    res['presets'] = {}
    p(f"\none epoch of each configuration with `fit` on {dev} (training + validation; the defaults' placement):")
    for name, over in course_study().configurations.items():
        r = learner_epoch(data, preset_cfg(name, n_train=None if not a.smoke else 256),
                          Placement(device=str(dev), precision=over.get('precision', 'auto')))
        res['presets'][name] = r
        p(f"  {name:<19} {r['epoch_seconds']:6.1f} s for {r['n_train']} images + validation ({r['train_images_per_s']:.0f} images/s)")

def section_scaling(a, dev, res, data):
    place = Placement(device=str(dev))
    sizes = [200, 300] if a.smoke else [5000, 10000, 25000, 45000]
    res['scaling_data'] = [learner_epoch(data, TrainConfig(n_train=n), place) for n in sizes]
    p("\nepoch seconds vs training-set size (Improved, batch 128):")
    for r in res['scaling_data']: p(f"  {r['n_train']:>6} images: {r['epoch_seconds']:6.2f} s  ({r['train_images_per_s']:.0f} images/s)")
    bss = [32, 128] if a.smoke else [32, 64, 128, 256, 512, 1024]
    res['scaling_batch'] = [learner_epoch(data, TrainConfig(n_train=256 if a.smoke else 10240, batch_size=b), place) for b in bss]
    p("\nepoch seconds vs batch size (Improved, 10,240 images):")
    for r in res['scaling_batch']: p(f"  batch {r['batch_size']:>5}: {r['epoch_seconds']:6.2f} s  ({r['train_images_per_s']:.0f} images/s)")


# --- per-run overhead ----------------------------------------------------------------------------------------------
FIRST_CELL = "from cifar_nb.config import params_from_namespace; from cifar_nb.runs import train_run, load_run, plot_progress"

def import_times(code: str = FIRST_CELL, top: int = 6) -> dict:
    "`python -X importtime -c code` in a fresh process: total seconds and the top-level packages that take longest (own time)."
    r = subprocess.run([sys.executable, '-X', 'importtime', '-c', code], capture_output=True, text=True, timeout=300,
                       env={**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])})
    pkgs = {}
    for line in r.stderr.splitlines():
        if m := re.match(r'import time:\s+(\d+) \|\s+\d+ \| +(\S+)', line):  # self time of each module, by its package
            pkgs[m.group(2).split('.')[0]] = pkgs.get(m.group(2).split('.')[0], 0) + int(m.group(1)) / 1e6
    return dict(total_seconds=sum(pkgs.values()), slowest=dict(sorted(pkgs.items(), key=lambda kv: -kv[1])[:top]))

FIRST_OPTIMIZER = ("import time, torch; m = torch.nn.Linear(2, 2); t = time.perf_counter(); "
                   "torch.optim.SGD(m.parameters(), lr=0.1); print(time.perf_counter() - t)")

def first_optimizer_seconds() -> float:
    ("Seconds of the first `torch.optim.SGD` in a fresh process that has imported torch: torch.optim's methods are "
     "wrapped by `torch._disable_dynamo`, whose first call imports `torch._dynamo`, in every run, compiled or not.")
    r = subprocess.run([sys.executable, '-c', FIRST_OPTIMIZER], capture_output=True, text=True, timeout=300, check=True)
    return float(r.stdout.split()[-1])

def section_overhead(a, dev, res):
    from cifar_nb.data import load_cifar10
    from cifar_nb.study import execute_run
    # imported once per study, not per run: not timed
    for mod in ('papermill', 'nbformat'): importlib.import_module(mod)
    imp = import_times()
    loads = []
    for _ in range(3):
        t = time.perf_counter(); load_cifar10(a.data, progress=False); loads.append(time.perf_counter() - t)
    params = dict(course_study().params('Base', 0, 'smoke'), device=str(dev), data_path=a.data)
    if a.smoke: params.update(n_train=300, epochs=1)
    with tempfile.TemporaryDirectory() as d:
        t = time.perf_counter(); execute_run(Path(d)/'run', params, log=lambda *s: None); wall = time.perf_counter() - t
        nb = json.loads((Path(d)/'run'/'train.ipynb').read_text())
        metrics = json.loads((Path(d)/'run'/'metrics.json').read_text())
    ts = lambda s: datetime.datetime.fromisoformat(s.replace('Z', '+00:00')).timestamp()
    cells = [c['metadata']['papermill'] for c in nb['cells'] if c['cell_type'] == 'code']
    nbm = nb['metadata']['papermill']
    o = dict(papermill_wall_seconds=wall, kernel_start_seconds=ts(cells[0]['start_time']) - ts(nbm['start_time']),
             import_cell_seconds=cells[0]['duration'], kernel_stop_seconds=wall - (ts(cells[-1]['end_time']) - ts(nbm['start_time'])),
             train_run_seconds=metrics['total_seconds'], train_seconds=metrics['train_seconds'], val_seconds=metrics['val_seconds'],
             cached_load_seconds=statistics.median(loads), imports_fresh_process=imp, params=params,
             first_optimizer_seconds=first_optimizer_seconds())
    o['train_run_other_seconds'] = o['train_run_seconds'] - o['train_seconds'] - o['val_seconds']
    o['overhead_seconds'] = wall - o['train_seconds'] - o['val_seconds']
    res['overhead'] = o
    p(f"\nper-run overhead: one papermill run of nbs/train.ipynb as the study runs it (Base, {params['n_train']} images, "
      f"{params['epochs']} epoch(s)): {wall:.1f} s in all, {o['train_seconds'] + o['val_seconds']:.1f} s of it training and validation")
    p(f"  kernel start {o['kernel_start_seconds']:.2f} s; import cell {o['import_cell_seconds']:.2f} s; train_run around training "
      f"{o['train_run_other_seconds']:.2f} s (data load from the cache {o['cached_load_seconds']:.2f} s, test evaluation, writing); "
      f"after the last cell (kernel stop, notebook written) {o['kernel_stop_seconds']:.2f} s")
    p(f"  imports of train.ipynb's first cell in a fresh process (python -X importtime): {imp['total_seconds']:.2f} s; slowest: "
      + ', '.join(f"{k} {v:.2f} s" for k, v in imp['slowest'].items()))
    p(f"  the first torch.optim.SGD of a process would add {o['first_optimizer_seconds']:.2f} s (it imports torch._dynamo, "
      "compiled or not); the learner's FusedSGD does not")


# --- main ------------------------------------------------------------------------------------------------------------
def main(argv=None):
    ap = argparse.ArgumentParser(description=__doc__, formatter_class=argparse.RawDescriptionHelpFormatter)
    ap.add_argument('--smoke', action='store_true', help='every section with tiny step counts, in seconds (CI; the numbers mean nothing)')
    ap.add_argument('--device', default='auto', help="'auto', 'cpu' or 'cuda': the learner and both baselines run there")
    ap.add_argument('--emulate-avx2', action='store_true', help='limit torch, oneDNN and MKL to AVX2 (an AVX2-only CPU without BF16)')
    ap.add_argument('--only', default=','.join(SECTIONS), help=f"comma-separated sections: {', '.join(SECTIONS)}")
    ap.add_argument('--steps', type=int, default=None, help='timed steps per measurement (default: 100 loops, 30 choices, 60 concurrency)')
    ap.add_argument('--with-compile', action='store_true', help='also time compile=yes among the choices (compiles each candidate: minutes)')
    ap.add_argument('--data', default=None, help='CIFAR-10 source (archive or image folder); default: the project search')
    ap.add_argument('--out', default=None, help='JSON path (default bench/results/<date>-<time>-<device>[-emulated-avx2][-smoke].json)')
    a = ap.parse_args(argv)
    only = [s.strip() for s in a.only.split(',') if s.strip()]
    if bad := [s for s in only if s not in SECTIONS]: ap.error(f"unknown section(s) {bad}; choose from {', '.join(SECTIONS)}")
    t_start, dev = time.perf_counter(), get_device(a.device)
    info = cpu_facts(dev)
    if a.emulate_avx2 and (info['capability'] != 'AVX2' or info['native_bf16_cpu'] or 'AVX2' not in str(info['onednn_isa'])):
        sys.exit(f"--emulate-avx2 did not take: torch reports {info['capability']}, native_bf16_cpu() {info['native_bf16_cpu']}, "
                 f"oneDNN {info['onednn_isa']}")
    res = dict(machine=info, date=datetime.datetime.now().isoformat(timespec='seconds'), mode='smoke' if a.smoke else 'full',
               device=str(dev), sections=only, argv=sys.argv[1:])
    p(f"machine: {info['label']} ({info['cores']} cores; torch {info['torch']} runs {info['capability']} kernels; oneDNN: "
      f"{info['onednn_isa']}; native bf16: {info['native_bf16_cpu']}), GPU: {info['gpu']}, OMP_WAIT_POLICY={info['omp_wait_policy']}")
    p(f"flags: {' '.join(info['flags'])}")
    data = None
    if {'loops', 'choices', 'presets', 'scaling'} & set(only):
        from cifar_nb.data import load_cifar10
        data = load_cifar10(a.data, progress=False)
        res['data'] = data.source.get('name')
    for s in only:
        t = time.perf_counter()
        fn = globals()[f'section_{s}']
        fn(a, dev, res, data) if s in ('loops', 'choices', 'presets', 'scaling') else fn(a, dev, res)
        res.setdefault('section_seconds', {})[s] = time.perf_counter() - t
    res['seconds_total'] = time.perf_counter() - t_start
    tag = f"{dev.type}{'-emulated-avx2' if info['emulated_avx2'] else ''}{'-smoke' if a.smoke else ''}"
    out = Path(a.out) if a.out else ROOT/'bench'/'results'/f"{datetime.datetime.now():%Y-%m-%d-%H%M}-{tag}.json"
    save_json(out, res)
    p(f"\nthe benchmark took {res['seconds_total']/60:.1f} min ({', '.join(f'{k} {v:.0f} s' for k, v in res['section_seconds'].items())})")
    p(f"wrote {out}")

if __name__ == '__main__': main()
