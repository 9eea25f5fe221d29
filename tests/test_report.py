"""`make report`'s pipeline at smoke scale: train (papermill), analyse, render one self-contained HTML report."""
import math, re, subprocess, sys
import pytest
from cifar_nb.report import external_urls
from cifar_nb.study import collect_runs
from cifar_nb.study import course_study, load_study
from cifar_nb.report import check_findings

SECTIONS = ['The answer', 'What held, what did not', 'Verdicts on the claims of the course report', "Verdicts on the course report's Table 2",
            'Method', 'Test accuracy', 'Each configuration against Improved', 'Training curves',
            'Per-class accuracy and confusion', 'Right and wrong predictions', 'Grad-CAM', 'Calibration', 'Out-of-distribution detection',
            'The OOD sets', 'The mean-activation rule, with one threshold fitted on CIFAR-10 alone',
            'Thresholds fitted on each OOD set: an upper bound', 'Standard detectors, per set and near- and far-OOD',
            'Appendix A: every run', 'Appendix B: provenance']

def test_presets_are_the_reports_table_1():
    "Six configurations, the report's accuracies, and each ablation is Improved minus exactly one element."
    c = course_study()
    assert list(c.configurations)[:6] == ['Base', 'Improved', 'No Scheduler', 'No L2', 'No BN', 'No DropOut']
    assert c.reference == {'Base': 60.92, 'Improved': 66.60, 'No Scheduler': 62.10, 'No L2': 61.55, 'No BN': 60.65, 'No DropOut': 62.48}
    preset_params = c.params
    imp = preset_params('Improved', 0)
    assert preset_params('No Scheduler', 0) == {**imp, 'lr_schedule': 'none'}
    assert preset_params('No L2', 0) == {**imp, 'l2': 0.0}
    assert preset_params('No BN', 0) == {**imp, 'batchnorm': False}
    assert preset_params('No DropOut', 0) == {**imp, 'dropout': 0.0}
    assert preset_params('Base', 0) == dict(lr=0.001, lr_schedule='none', l2=0.0, batchnorm=False, dropout=0.0, epochs=10, seed=0)

def _started(cmd) -> subprocess.Popen:
    return subprocess.Popen(cmd, stdout=subprocess.PIPE, stderr=subprocess.PIPE, text=True)

def _finished(p: subprocess.Popen, timeout: int) -> tuple[str, str]:
    try: out, err = p.communicate(timeout=timeout)
    except subprocess.TimeoutExpired: p.kill(); out, err = p.communicate()
    assert p.returncode == 0, out[-3000:] + err[-3000:]
    return out, err

@pytest.fixture(scope='module')
def studies(tmp_path_factory):
    """The module's two end-to-end studies (`smoke`: the course study; `custom`: a study file of the user's), started
    together: each is one process that spends much of its time starting kernels and Python on one core, so on two cores
    the pair takes little longer than the longer one alone. {name: (folder, process)}."""
    d, c = tmp_path_factory.mktemp('smoke'), tmp_path_factory.mktemp('custom')
    (c/'dropout.toml').write_text(CUSTOM_SMOKE)
    ps = {'smoke': (d, _started([sys.executable, '-m', 'cifar_nb.study', '--study-dir', str(d/'study'), '--scale', 'smoke',
                                 '--configurations', 'Base,Improved', '--seeds', '1', '--report', str(d)])),
          'custom': (c, _started([sys.executable, '-m', 'cifar_nb.study', str(c/'dropout.toml'), '--scale', 'smoke',
                                  '--study-dir', str(c/'study'), '--report', str(c/'report'), '--reuse-from', 'none']))}
    yield ps
    for _, p in ps.values():
        if p.poll() is None: p.kill(); p.communicate()

@pytest.fixture(scope='module')
def smoke(studies):
    d, p = studies['smoke']
    return (d, *_finished(p, 1200))

def test_smoke_study_prints_plan_and_progress(smoke):
    d, out, err = smoke
    assert 'estimated' in out and '2 configurations x 1 seeds' in out
    assert re.search(r'\[done 2/2\] .* test accuracy [\d.]+% in .*left', out)
    assert 'WARNING' not in err, err  # no kernel chatter (ipykernel's unencrypted-TCP warning) per run

def test_smoke_report_has_every_section_and_is_self_contained(smoke):
    d, _, _ = smoke
    html = (d/'report.html').read_text()
    for s in SECTIONS: assert s in html, s
    assert 'SMOKE RUN' in html
    assert external_urls(html) == []                          # no script, style, font or image from the network
    imgs = re.findall(r'<img[^>]+src="([^"]{0,30})', html)
    assert len(imgs) >= 13 and all(s.startswith('data:image/') for s in imgs)  # every figure of the full report (13), none missing
    assert 'Not available yet' not in html and 'Reduced precision' not in html  # no float32 twins: the section is left out, no stand-in
    assert 'Traceback' not in html and 'def figure' not in html  # inputs hidden, no errors
    assert not re.search(r'(?<![\w.])/(?:work|home|root|tmp)/', re.sub(r'<[^>]+>', ' ', html))  # no absolute path in the text
    n, bad = check_findings(html)
    assert n >= 3 and bad == [], bad                          # no verdict without a test, no number from nowhere
    for f in ('table1.csv', 'table1.json', 'table1.md'): assert (d/f).stat().st_size > 0

def test_rerun_reuses_every_run(smoke):
    d, _, _ = smoke
    before = {p: p.stat().st_mtime_ns for p in (d/'study').rglob('weights.safetensors')}
    r = subprocess.run([sys.executable, '-m', 'cifar_nb.study', '--study-dir', str(d/'study'), '--scale', 'smoke', '--configurations', 'Base,Improved',
                        '--seeds', '1'], capture_output=True, text=True, timeout=300)
    assert r.returncode == 0 and '2 complete and reused, 0 shared from other studies, 0 to train' in r.stdout, r.stdout + r.stderr
    assert before == {p: p.stat().st_mtime_ns for p in (d/'study').rglob('weights.safetensors')}

def test_bad_command_line_is_refused_before_training(tmp_path, study_cli):
    r = study_cli('--study-dir', tmp_path, '--configurations', 'Improved,No Dropout')  # in this process (the smoke fixture runs the entry point)
    assert r.returncode == 1 and "'No Dropout' not in the study" in r.stderr and not (tmp_path/'runs').exists()

STUDY_SCRIPT = '''
import sys
from cifar_nb import study
from cifar_nb.study import course_study, load_study
from cifar_nb.report import check_sentences
study.run_study(sys.argv[1], course_study(), seeds=1, only=['Base', 'Improved', 'No L2'], log=lambda s: print(s, flush=True),
                scale=dict(n_train=500, epochs=4, lr_drop_period=2))  # killed at its first checkpoint: three epochs to go
'''

def test_killed_study_resumes_only_what_is_missing(tmp_path):
    "kill -9 the whole study (and its kernel) during the second run: the rerun reuses the first, resumes the second, trains the third."
    import os, signal, time
    from cifar_nb.data import make_fake_cifar10
    d = tmp_path/'study'
    # a tiny JPEG CIFAR-10 (600 training, 100 test images) through CIFAR_NB_DATA, which the study's kernels inherit: each run
    # tests 100 images, not 10,000 (what is checked is which runs are reused, resumed and trained, not their accuracy)
    env = {**os.environ, 'CIFAR_NB_DATA': str(make_fake_cifar10(tmp_path/'data', n_train=60, n_test=10)), 'CIFAR_NB_CACHE': str(tmp_path/'cache')}
    p = subprocess.Popen([sys.executable, '-c', STUDY_SCRIPT, str(d)], stdout=subprocess.PIPE, stderr=subprocess.STDOUT, text=True,
                         start_new_session=True, env=env)
    ck = d/'runs'/'improved'/'seed0'/'checkpoint.pt'
    t0 = time.time()
    while not ck.exists() and p.poll() is None and time.time() - t0 < 300: time.sleep(0.05)
    os.killpg(p.pid, signal.SIGKILL); p.wait()
    assert ck.exists(), 'the study ended before the second run wrote a checkpoint'
    assert (d/'runs'/'base'/'seed0'/'COMPLETE.json').exists() and not (d/'runs'/'improved'/'seed0'/'COMPLETE.json').exists()
    base_w = (d/'runs'/'base'/'seed0'/'weights.safetensors').stat().st_mtime_ns
    time.sleep(1)  # the killed kernel's lock goes with its process
    r = subprocess.run([sys.executable, '-c', STUDY_SCRIPT, str(d)], capture_output=True, text=True, timeout=600, env=env)
    assert r.returncode == 0, r.stdout[-2000:] + r.stderr[-2000:]
    assert '1 complete and reused, 0 shared from other studies, 2 to train' in r.stdout and 'Improved seed 0 (resuming)' in r.stdout, r.stdout
    assert (d/'runs'/'base'/'seed0'/'weights.safetensors').stat().st_mtime_ns == base_w
    runs = collect_runs(d)
    assert set(runs) == {'Base', 'Improved', 'No L2'} and all(len(v) == 1 for v in runs.values())
    assert len(runs['Improved'][0].history['val']['loss']) == 4


ROOT = __import__('pathlib').Path(__file__).resolve().parents[1]

@pytest.mark.parametrize('page', ['report.html', 'lr0001/report.html'])
def test_committed_reports_show_no_verdict_without_a_test(page):
    "Both committed reports: every coloured verdict is a tested finding's, and every number in their prose comes from a finding or a table."
    html = (ROOT/'reports'/page).read_text()
    n, bad = check_findings(html)
    assert n >= 20 and bad == [], bad
    assert 'Not available yet' not in html

CUSTOM = '''title = "Does more dropout help?"
baseline = "Improved"
seeds = 3
[configurations]
Improved = {}
"Dropout 0.5" = { dropout = 0.5 }
[[claims]]
better = "Dropout 0.5"
than = "Improved"
says = "more dropout helps"
'''

def test_report_renders_a_custom_study(tmp_path):
    "A study file with two configurations of its own (fake runs, nothing trained): the report names them, gives the claim its verdict, and says nothing of the course report."
    from cifar_nb.runs import fake_run
    from cifar_nb.study import run_dir, render_report
    d = tmp_path/'study'; d.mkdir(); (d/'study.toml').write_text(CUSTOM)
    st = load_study(d/'study.toml')
    for n, accs in (('Improved', (0.60, 0.62, 0.61)), ('Dropout 0.5', (0.65, 0.68, 0.66))):
        for s, a in zip(st.seeds, accs): fake_run(run_dir(d, n, s), st.params(n, s), acc=a, n=200)
    html = render_report(d, tmp_path/'report', log=lambda *a: None).read_text()
    assert '<title>cifar_nb: Does more dropout help?</title>' in html and 'Each configuration against Improved' in html
    verdict_row = re.search(r"<tr>(?:(?!</tr>).)*more dropout helps(?:(?!</tr>).)*</tr>", html, re.S).group(0)  # the verdict list's row
    assert 'cnb-v-holds' in verdict_row and '+5.33 pp' in verdict_row   # (65+68+66 - 60-62-61)/3 = 5.33, Holm over one comparison
    assert re.search(r"The highest mean test accuracy is Dropout 0\.5", re.sub(r'<[^>]+>', '', html))
    n, bad = check_findings(html)
    assert n >= 3 and bad == [], bad
    # the check is not vacuous: a verdict on a finding no test decided, and a number no finding or table holds, are both caught
    tag = re.search(r'<span class="cnb-finding"[^>]*data-verdict="not tested"[^>]*>', html).group(0)
    key = re.search(r'data-key="([^"]+)"', tag).group(1)
    forged = html.replace('</body>', f'<p><span class="cnb-verdict cnb-v-holds" data-finding="{key}">holds</span></p></body>', 1)
    assert any('whose finding says' in b for b in check_findings(forged)[1])
    assert any('comes from no finding' in b for b in check_findings(html.replace('</body>', '<p>It reaches 99.99%.</p></body>', 1))[1])
    for course in ('60.92', '66.6', 'No DropOut', 'Figure 2f', '"airplane" and "truck"', "deer's legs", 'claims of the course report', "course report's Figure 4", "course report's Figure 6",
                   'Out-of-distribution detection', 'Not available yet: no OOD'):
        assert course not in html, course
    assert 'Traceback' not in html

CUSTOM_SMOKE = '\n' + CUSTOM.replace('seeds = 3\n', 'seeds = 2\nanalyse = ["Improved"]\n')  # two seeds, OOD and interpretation


@pytest.fixture(scope='module')
def custom(studies):
    "A study file of the user's with two configurations and a claim, end to end at smoke scale: train, analyse, report."
    d, p = studies['custom']
    return d, _finished(p, 1500)[0]

def test_custom_study_file_runs_end_to_end_and_its_report_judges_the_claim(custom):
    from cifar_nb.report import VERDICTS
    d, out = custom
    assert '2 configurations x 2 seeds = 4 runs' in out and '[done 4/4]' in out, out[-2000:]
    kept = load_study(d/'study'/'study.toml')                                # the folder keeps the study it ran:
    assert (kept.configurations, kept.claims, kept.scale) == (load_study(d/'dropout.toml').configurations,
                                                              load_study(d/'dropout.toml').claims, 'smoke')  # with --scale
    html = (d/'report'/'report.html').read_text()
    text = re.sub(r'<[^>]+>', ' ', html)
    assert 'Does more dropout help?' in text and 'Dropout 0.5' in text and 'more dropout helps' in text
    # the claim's row carries one of the verdict words
    row = re.search(r'more dropout helps(.{0,600})', text, re.S).group(1)
    assert any(v in row for v in VERDICTS), row
    for course_name in ('No Scheduler', 'No BN', 'No DropOut', '60.92', "course report's Figure 4"):  # nothing of the course report's
        assert course_name not in text, course_name
    assert 'Wrong predictions of Improved, seed 0:' in _text(html)   # the galleries, without the course report's figure numbers
    assert 'Traceback' not in html and external_urls(html) == []


def test_report_folder_equal_to_a_new_study_folder_is_refused_before_the_plan(tmp_path, study_cli):
    "--report naming the (new) study folder: one line before anything is planned, trained or written (it used to fail after the table)."
    d = tmp_path/'new'
    r = study_cli('--scale', 'smoke', '--configurations', 'Base', '--seeds', '1', '--study-dir', d, '--report', d)
    assert r.returncode == 1 and r.stderr.startswith(f'error: report folder {d} is the study folder {d}: give the report a folder of its own'), r.stderr
    assert r.stderr.count('\n') == 1 and r.stdout == '' and not d.exists()   # no plan printed, nothing created


def _text(page: str) -> str:
    "A page's text as a reader sees it: tags dropped, entities read, white space single."
    import html as _html
    return ' '.join(_html.unescape(re.sub(r'<[^>]+>', '', page)).split())

def _fake_study(d, toml: str, accs: dict):
    "A study folder holding `toml` and fake runs (nothing trained) with the given accuracies per seed."
    from cifar_nb.runs import fake_run
    from cifar_nb.study import run_dir
    (d/'study').mkdir(parents=True); (d/'study'/'study.toml').write_text(toml)
    st = load_study(d/'study'/'study.toml')
    for n, a in accs.items():
        for s, x in zip(st.seeds, a): fake_run(run_dir(d/'study', n, s), st.params(n, s), acc=x, n=200)
    return d/'study'

@pytest.mark.parametrize('seeds', ['2', '{ pilot = 2, half_width = 1.0, max = 4 }'])
def test_report_renders_a_study_of_one_configuration(tmp_path, seeds):
    ("One configuration, with two seeds or a seeds plan: nothing to compare, said in one line (it ended in AttributeError: "
     "'DataFrame' object has no attribute 'configuration').")
    from cifar_nb.study import render_report
    s = _fake_study(tmp_path, f'title = "One"\nbaseline = "Only"\nseeds = {seeds}\n[configurations]\nOnly = {{}}\n', {'Only': (0.60, 0.62)})
    html = render_report(s, tmp_path/'report', log=lambda *a: None).read_text()
    text = _text(html)
    assert "Only is this study's only configuration: there is nothing to compare with it." in text
    assert ("Only is its only configuration, so there is nothing to compare and the pilot is all it runs." in text) == ('pilot' in seeds)
    assert "The highest mean test accuracy is Only's (61.00%)" in text and 'Traceback' not in html
    n, bad = check_findings(html)
    assert n >= 1 and bad == [], bad

def test_report_renders_a_reference_with_the_baselines_accuracy_only(tmp_path):
    "[reference] giving only the baseline's accuracy (it ended in KeyError: \"['report's Δ (pp)'] not in index\")."
    from cifar_nb.study import render_report
    s = _fake_study(tmp_path, CUSTOM + '[reference]\nsource = "the paper"\ntest_acc = { Improved = 60.5 }\n',
                    {'Improved': (0.60, 0.62, 0.61), 'Dropout 0.5': (0.65, 0.68, 0.66)})
    html = render_report(s, tmp_path/'report', log=lambda *a: None).read_text()
    text = re.sub(r'<[^>]+>', ' ', html)
    assert 'the paper (%)' in text and '60.50' in text and "the paper's Δ (pp)" not in text   # no published difference to show
    assert 'Traceback' not in html
    n, bad = check_findings(html)
    assert n >= 3 and bad == [], bad

PLANNED = '''title = "Planned"
baseline = "Improved"
seeds = { pilot = 3, half_width = 2.0, max = 5 }

[configurations]
Improved = {}
"No L2" = { l2 = 0.0 }
"Dropout 0.5" = { dropout = 0.5 }

[[claims]]
better = "Dropout 0.5"
than = "Improved"
says = "more dropout helps"
'''

def test_report_states_a_seeds_plan_and_names_runs_of_other_arithmetic(tmp_path):
    ("A study with a seeds plan (Stein's design), one of whose configurations is shared from a sibling study trained on another "
     "machine (--share-mixed), run with fake runs: the report judges by the design's intervals, states the plan from the data "
     "(the cap cut one comparison) and names the mixed runs with their differences.")
    from cifar_nb.runs import fake_run
    from cifar_nb.study import run_study, render_report
    from cifar_nb.study import parse_study
    from cifar_nb.core import load_json
    SHA, quiet = 'a' * 64, lambda *a: None
    base = [60.0, 61.0, 62.0, 60.0, 61.0]   # % per seed; No L2 differs by about +5 with a tiny spread (the pilot suffices),
    acc = {'improved': base, 'no-l2': [b + x for b, x in zip(base, (5.0, 5.2, 4.8, 5.0, 5.0))],   # Dropout by +2 with a spread
           'dropout-0-5': [b + x for b, x in zip(base, (1.0, 3.0, 2.0, 2.0, 2.0))]}              # of 1 (more seeds than the cap)
    def fake_exec(p, params, provenance=None):   # exactly k of 1,000 test images right
        fake_run(p, params, acc=(round(10 * acc[p.parent.name][params['seed']]) - 0.5) / 1000, n=1000, data_sha=SHA, provenance=provenance)
    odd = dict(machine=dict(cpu='Odd <b>CPU</b> 9000', isa=['avx2']), threads=3)   # another machine, its name with markup
    sib = parse_study(dict(title='sibling', baseline='No L2', seeds=3, configurations={'No L2': dict(l2=0.0)}))
    run_study(tmp_path/'sib', sib, execute=lambda p, params: fake_exec(p, params, odd), log=quiet, data_sha=SHA)
    (tmp_path/'planned.toml').write_text(PLANNED)
    run_study(tmp_path/'study', load_study(tmp_path/'planned.toml'), execute=fake_exec, log=quiet, data_sha=SHA,
              share_mixed=True, reuse_from=[tmp_path/'sib'])
    mixed = load_json(tmp_path/'study'/'study.json')['mixed']
    assert sorted((m['configuration'], m['seed']) for m in mixed) == [('No L2', 0), ('No L2', 1), ('No L2', 2)], mixed
    html = render_report(tmp_path/'study', tmp_path/'report', log=quiet).read_text()
    text = _text(html)
    # the plan, from the data: Stein asks 10 seeds of Dropout 0.5 (capped at 5) and 3 of No L2
    assert "a pilot of 3 seeds per configuration" in text and "± 2.0 pp" in text and "at most 5" in text, text[:3000]
    assert "The cap cut the seeds of Dropout 0.5: its interval is wider than ± 2.0 pp, with the same coverage." in text
    from scipy import stats as sst
    t = sst.t.ppf(1 - 0.05 / 4, 2)   # Bonferroni over 2 comparisons, the pilot's 2 degrees of freedom
    plan = re.search(r'data-key="seeds_plan".*?</table>', html, re.S).group(0)
    assert [_text(r) for r in re.findall(r'<tr>.*?</tr>', plan, re.S)[1:]] == [   # spread, asked, planned, run, half-width
        'Improved (baseline) 5 5',                                                # the baseline: the most any comparison needs
        f'No L2 0.20 {max(3, math.ceil((t * 0.2 / 2) ** 2))} 3 3 {t * 0.2 / 3 ** 0.5:.2f} yes',
        f'Dropout 0.5 1.00 {math.ceil((t * 1.0 / 2) ** 2)} 5 5 {t * 1.0 / 5 ** 0.5:.2f} no: the cap'], plan
    # the verdict follows Stein's interval (Holm's over all 5 seeds would say "holds"), and the sentence says which
    verdict_row = re.search(r"<tr>(?:(?!</tr>).)*more dropout helps(?:(?!</tr>).)*</tr>", html, re.S).group(0)
    assert 'cnb-v-no-effect-detected' in verdict_row, verdict_row
    assert "Stein's two-stage interval, Bonferroni over 2, 5 seeds paired" in text and 'p (Stein, Bonferroni)' in text
    assert 'p (adjusted)' in _text(re.search(r'data-key="verdict_list".*?</table>', html, re.S).group(0))
    # the runs of other arithmetic, named with their differences, the machine's name as text
    assert "3 of the 13 runs were shared from another study although trained with other arithmetic" in text
    assert 'machine Odd <b>CPU</b> 9000 (avx2) there' in text and '<b>CPU</b>' not in html
    n, bad = check_findings(html)
    assert n >= 3 and bad == [], bad
    assert 'Traceback' not in html
