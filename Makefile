# One way to set up: `make run` (main job) and `make test` (test suite) install what they need.
PYTHON ?= python3.11
VENV ?= .venv
PY := $(VENV)/bin/python
# The CPU build of torch 2.13.0 first, so the resolver never pulls a multi-GB CUDA build.
# Elsewhere pass e.g. TORCH_PIP_ARGS="--index-url <a CPU wheel index>".
TORCH ?= torch==2.13.0
TORCH_PIP_ARGS ?=

.PHONY: install run test lint bench wheel-check clean

$(VENV)/.installed: setup.cfg pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet $(TORCH_PIP_ARGS) "$(TORCH)"
	$(PY) -m pip install --quiet -e ".[test,encoders]"
	touch $@

install: $(VENV)/.installed

run: install
	$(PY) run_recbole_fitmm.py

test: install
	$(PY) -m pytest -q

lint: install
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .

wheel-check:
	bash .ci/wheel_check.sh

bench: install
	$(PY) benchmarks/bench_fitmm.py

clean:
	rm -rf log log_tensorboard saved results .pytest_cache .ruff_cache
