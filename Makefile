# cifar_nb: the README's two commands are `make report` and `make test`.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp
PYTHON ?= python3

.PHONY: test test-nb test-py report lab docs serve-docs bench export clean-nbs

# Create the environment when it is missing or pyproject/constraints changed.
# pip's cache (~/.cache/pip) is reused between clones, so a fresh clone installs in minutes.
$(STAMP): pyproject.toml constraints.txt
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade -c constraints.txt 'pip>=24'
	$(PY) -m pip install -q -c constraints.txt -e '.[dev]'
	$(PY) -m ipykernel install --sys-prefix --name python3 --display-name "Python 3 (cifar_nb)" >/dev/null
	@touch $(STAMP)

env: $(STAMP)

export: $(STAMP)
	$(BIN)/nbdev_export

# the whole suite: notebook tests (slow-flagged cells included) and pytest
test: $(STAMP)
	$(MAKE) --no-print-directory test-nb test-py

test-nb: $(STAMP)
	$(BIN)/nbdev_test --flags slow --n_workers 2 --skip_file_re '^[_.]|^(train|ood|report)\.ipynb$$'

test-py: $(STAMP)
	$(BIN)/pytest -q tests

clean-nbs: $(STAMP)
	$(BIN)/nbdev_clean
