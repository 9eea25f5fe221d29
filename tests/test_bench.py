"""`make bench BENCH_ARGS=--smoke` (bench/bench.py): every section runs in seconds on a tiny image folder and writes a
JSON file of the documented shape. The numbers are not checked (a benchmark prints them; a test cannot time them), except
one fact that holds on any machine: runs trained at the same thread count have the same weights, alone or concurrently."""
import json, os, subprocess, sys
import pytest
from cifar_nb.core import project_root
from cifar_nb.study import course_study
from cifar_nb.data import make_fake_cifar10

ROOT = project_root()

@pytest.mark.slow
def test_smoke_benchmark_writes_every_section(tmp_path):
    folder = make_fake_cifar10(tmp_path/'data', n_train=40, n_test=5)
    out = tmp_path/'bench.json'
    env = {**os.environ, 'CIFAR_NB_CACHE': str(tmp_path/'cache'),
           'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    r = subprocess.run([sys.executable, str(ROOT/'bench'/'bench.py'), '--smoke', '--device', 'cpu', '--data', str(folder), '--out', str(out)],
                       env=env, capture_output=True, text=True, timeout=600)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-3000:]
    assert 'the benchmark took' in r.stdout
    res = json.loads(out.read_text())
    assert res['mode'] == 'smoke' and res['device'] == 'cpu'
    m = res['machine']
    assert {'label', 'cpu', 'cores', 'flags', 'capability', 'native_bf16_cpu', 'onednn_isa', 'emulated_avx2'} <= set(m)
    assert set(res['section_seconds']) == {'data', 'loops', 'choices', 'concurrency', 'presets', 'scaling', 'overhead'}
    loops = res['loops']
    assert set(loops['images_per_s']) == {'imagefolder_loop', 'plain_inmemory_fp32', 'cifar_nb_learner'}
    assert all(v > 0 for v in loops['images_per_s'].values()) and set(loops['ratios']) == {'learner_vs_imagefolder', 'learner_vs_plain_fp32'}
    ch = res['choices']
    assert set(ch['defaults']) == {'precision', 'channels_last', 'step', 'threads'} and set(ch['why']) == set(ch['defaults'])
    assert {(c['precision'], c['channels_last']) for c in ch['candidates']} == {(p, cl) for p in ('bf16', 'fp32') for cl in (True, False)}
    assert all(c['images_per_s'] > 0 for c in ch['candidates']) and isinstance(ch['defaults_are_fastest'], bool) and ch['verdict']
    co = res['concurrency']
    assert co['cores'] == os.cpu_count() and co['one_run']['images_per_s'] > 0 and co['one_run']['same_every_round']
    splits = [j for j in range(2, co['cores'] + 1) if co['cores'] % j == 0]
    assert [c['jobs'] for c in co['configs']] == splits[:1]  # smoke: the first split only
    for c in co['configs']:
        assert c['jobs'] * c['threads'] == co['cores'] and len(c['hashes']) == c['jobs'] * co['rounds'] and c['ratio'] > 0
        assert c['bit_identical_to_alone'], f"runs at {c['threads']} thread(s) differ alone and concurrently: {c}"
    assert set(res['presets']) == set(course_study().configurations) and all(v['epoch_seconds'] > 0 for v in res['presets'].values())
    assert res['scaling_data'] and res['scaling_batch']
    o = res['overhead']
    assert all(o[k] >= 0 for k in ('papermill_wall_seconds', 'kernel_start_seconds', 'import_cell_seconds', 'kernel_stop_seconds',
                                   'cached_load_seconds', 'train_run_seconds', 'first_optimizer_seconds'))
    assert 'torch' in o['imports_fresh_process']['slowest']
