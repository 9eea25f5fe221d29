# cifar_nb: the README's two commands are `make report` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: test test-nb test-py test-gpu report lab docs serve-docs bench export clean-nbs env

# make report: a study (default: the course study, reports/course.toml) then its rendered report.
#   STUDY=FILE  your own study file (see the documentation's "Your own ablation"); its report goes to reports/<name>/
#   SEEDS=n     seeds per configuration (default: the study file's)
#   SCALE=smoke the same pipeline on 2,000 images and 2 epochs (minutes), into reports/smoke/ (or reports/<name>-smoke/)
#   STUDY_DIR=, REPORT_DIR= other folders for the runs and the report
STUDY ?=
SCALE ?= full
SEEDS ?=
STUDY_DIR ?=
REPORT_DIR ?=
# OpenMP threads sleep instead of spinning while they wait: on a shared 2-core machine spinning threads of
# two processes starve each other (measured: 225 vs 665 images/s with ACTIVE vs PASSIVE under load; not measured alone).
export OMP_WAIT_POLICY ?= PASSIVE

# Create the environment when it is missing or pyproject/constraints changed.
# pip's cache (~/.cache/pip) is reused between clones, so a fresh clone installs in minutes.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c constraints.txt 'pip>=24'
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cifar_nb)" >/dev/null
	@# every kernel of this venv logs at ERROR, papermill's on the command line too (ipykernel 7 otherwise warns at each
	@# start that its local TCP sockets are not encrypted); a config file, so that KERNEL_ARGS on a kernel's command line agree
	mkdir -p $(VENV)/etc/ipython && echo '{"IPKernelApp": {"log_level": "ERROR"}}' > $(VENV)/etc/ipython/ipython_kernel_config.json
	@touch $(STAMP)

env: $(STAMP)

export: $(STAMP)
	$(BIN)/nbdev_export

# the whole suite: notebook tests (slow-flagged cells included) and pytest, side by side, one core each: pytest runs one
# test at a time, so the notebooks take one worker beside it (each target's output is printed when it ends)
NB_WORKERS ?= 2
test: $(STAMP)
	$(MAKE) --no-print-directory -j2 --output-sync=target test-nb test-py NB_WORKERS=1

test-nb: $(STAMP)
	$(BIN)/nbdev_test --flags slow --n_workers $(NB_WORKERS) --skip_file_re '^[_.]|^(train|ood|report)\.ipynb$$'

test-py: $(STAMP)
	$(BIN)/pytest -q tests

# the GPU tests (tests/test_gpu.py; each is skipped without CUDA). The GPU machine has no venv: see the README's
# developer section for the same commands there.
test-gpu: $(STAMP)
	$(BIN)/pytest -q -ra tests/test_gpu.py

# each argument single-quoted for the shell (a path with spaces or quotes stays one argument)
quote = '$(subst ','\'',$(1))'

report: $(STAMP)
	$(PY) -m cifar_nb.study $(if $(STUDY),$(call quote,$(STUDY))) --scale $(call quote,$(SCALE)) \
		$(if $(SEEDS),--seeds $(call quote,$(SEEDS))) $(if $(STUDY_DIR),--study-dir $(call quote,$(STUDY_DIR))) \
		--report $(if $(REPORT_DIR),$(call quote,$(REPORT_DIR)))

# JupyterLab in the project's environment, with its kernel (python3 = this venv), on 127.0.0.1 only.
# As root (containers) JupyterLab refuses to start without --allow-root. LAB_ARGS: more options (--port=..., --no-browser).
LAB_ARGS ?=
lab: $(STAMP)
	$(BIN)/jupyter lab --notebook-dir=nbs --ip=127.0.0.1 $(if $(filter 0,$(shell id -u)),--allow-root) $(LAB_ARGS)

# benchmarks: numbers printed and written to bench/results/ (not a timed test).
# BENCH_ARGS: --smoke (seconds, CI), --emulate-avx2, --device cuda, --only loops,choices, ... (bench/bench.py --help)
BENCH_ARGS ?=
bench: $(STAMP)
	$(PY) bench/bench.py $(BENCH_ARGS)

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean

# documentation: the site from the notebooks, offline (MkDocs + mkdocs-jupyter; no Quarto), into _site/
DOCS_PORT ?= 8000
.PHONY: readme
BUILD_DOCS = $(PY) -c "from cifar_nb.site import build_docs; print('site:', build_docs('_site', execute=True))"
docs: $(STAMP)
	$(BUILD_DOCS)

# serve the site on http://127.0.0.1:$(DOCS_PORT) (Ctrl-C stops it), building it first when it is missing or older
# than a notebook, mkdocs.yml or the environment
_site/index.html: $(STAMP) $(wildcard nbs/*.ipynb) mkdocs.yml
	$(BUILD_DOCS)

serve-docs: _site/index.html
	$(PY) -m http.server --directory _site --bind 127.0.0.1 $(DOCS_PORT)

# README.md is generated from nbs/index.ipynb: its findings and the course study's times from reports/study, its Performance
# figures from bench/results (tests/test_readme.py checks that they agree and that those sections quote no other number)
readme: $(STAMP)
	$(PY) -c "from cifar_nb.site import write_readme; print('wrote', write_readme())"
