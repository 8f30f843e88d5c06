# The two commands that matter: `make demo` and `make test`. Both build the environment first if it is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Put this checkout first on the path even when the cached environment is shared by several clones.
export PYTHONPATH := $(CURDIR)
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/qwen-swe/torch_extensions
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo test clean-env

setup:
	@bash tools/setup_env.sh

demo: setup
	@bash tools/demo.sh

test: setup
	$(PY) -m pytest -q tests

clean-env:
	rm -f $(VENV)

.PHONY: bench
bench: setup
	$(PY) tools/bench_loader.py
	$(PY) tools/bench_step.py
