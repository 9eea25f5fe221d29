"""compile='yes' on the CPU (issue 12): a compiled run killed after its first epoch resumes through papermill, and the
finished run folder carries the plain model's keys (never `_orig_mod.`) and opens with `load_run`. Slow: torch.compile
takes tens of seconds the first time on a small CPU (inductor caches what it compiled, so the resumed run is quicker)."""
import json, os, shutil, signal, subprocess, sys, textwrap
import pytest
import torch
from safetensors.torch import load_file
from cifar_nb.core import project_root
from cifar_nb.config import split_params
from cifar_nb.runs import load_run, build_model, CHECKPOINT, COMPLETE

ROOT = project_root()
PARAMS = dict(n_train=600, epochs=3, batch_size=50, lr=0.002, seed=1, device='cpu', compile='yes')

# A compiled training process that dies (SIGKILL) right after its first checkpoint: a crash at a known moment.
SCRIPT = textwrap.dedent('''
    import json, os, signal, sys
    import cifar_nb.train.callbacks as learner
    from cifar_nb.config import split_params
    from cifar_nb.runs import train_run
    save = learner.save_checkpoint
    def save_then_die(path, L): save(path, L); os.kill(os.getpid(), signal.SIGKILL)
    learner.save_checkpoint = save_then_die
    cfg, place = split_params({**json.loads(sys.argv[1]), 'out_dir': sys.argv[2]})
    train_run(cfg, place, progress=False)
''')

needs_compiler = pytest.mark.skipif(shutil.which(os.environ.get('CXX', 'g++')) is None,
                                    reason="torch.compile on the CPU needs a C++ compiler (g++ or $CXX)")

@pytest.mark.slow
@needs_compiler
def test_compiled_run_killed_resumes_through_papermill_and_loads(tmp_path):
    import papermill as pm
    d = tmp_path/'run'
    env = {**os.environ, 'PYTHONPATH': os.pathsep.join([str(ROOT), os.environ.get('PYTHONPATH', '')])}
    p = subprocess.run([sys.executable, '-c', SCRIPT, json.dumps(PARAMS), str(d)], env=env, capture_output=True, text=True, timeout=600)
    assert p.returncode == -signal.SIGKILL, p.stderr[-3000:]
    assert (d/CHECKPOINT).exists() and not (d/COMPLETE).exists()
    ck = torch.load(d/CHECKPOINT, map_location='cpu', weights_only=True)
    assert ck['state']['epoch'] == 1
    plain = set(build_model(split_params(PARAMS)[0]).state_dict())
    assert set(ck['model']) == plain, 'the checkpoint carries the compiled wrapper\'s keys'
    # papermill nbs/train.ipynb ... -p compile yes -p out_dir <the killed run>: it resumes and finishes
    out = tmp_path/'train.ipynb'
    pm.execute_notebook(str(ROOT/'nbs'/'train.ipynb'), str(out), parameters={**PARAMS, 'out_dir': str(d)},
                        kernel_name='python3', progress_bar=False, cwd=str(tmp_path))
    assert 'resuming' in out.read_text()
    r = load_run(d)
    assert r.metrics['epochs_run'] == 3 and r.history['val']['epoch'] == [1, 2, 3] and not (d/CHECKPOINT).exists()
    assert r.config['provenance']['compile'] is True and r.placement['compile'] == 'yes'
    assert set(load_file(str(d/'weights.safetensors'))) == plain
    r.model()  # opens as the plain network
    assert r.history['train']['loss'][:len(ck['history']['train']['loss'])] == ck['history']['train']['loss']
