# The two commands that matter: `make demo` and `make test`. Both build the environment first if it is missing.
SHELL := /bin/bash
VENV := .venv
PY := $(VENV)/bin/python
# Put this checkout first on the path even when the cached environment is shared by several clones.
export PYTHONPATH := $(CURDIR)
export TORCH_EXTENSIONS_DIR ?= $(HOME)/.cache/qwen-swe/torch_extensions
export TOKENIZERS_PARALLELISM ?= false
export HF_HUB_OFFLINE ?= 1

.PHONY: setup demo tune-demo test clean-env

setup:
	@bash tools/setup_env.sh

demo: setup
	@bash tools/demo.sh

# The two-phase workflow on the demo corpus: a small hyper-parameter study, then the best config trained in rounds
# with the quality loop (about two minutes on CPU).
tune-demo: setup
	@bash tools/tune_demo.sh

# Two pytest workers, one test file each at a time: most tests wait on launched training processes, so two files
# in flight keep both cores busy (see tests/conftest.py for the order). One math thread per process: two workers
# plus their launched ranks already fill the cores, and oversubscribed threads only slow each other down.
PYTEST_WORKERS ?= 2
test: setup
	OMP_NUM_THREADS=1 $(PY) -m pytest -q -n $(PYTEST_WORKERS) --dist loadfile tests

clean-env:
	rm -f $(VENV)

.PHONY: bench bench-real-shape
bench: setup
	$(PY) tools/bench_loader.py
	$(PY) tools/bench_step.py

# The released widths on this machine (about 10 minutes, up to ~9 GB): sub-talker frame sampling's speed and memory.
bench-real-shape: setup
	$(PY) tools/bench_real_shape.py
