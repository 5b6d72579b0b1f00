# Two entry points: `make demo` (main job) and `make test`. Both create the virtual environment from nothing.
PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.reslab-installed
# Tests run on 2 cores: one torch thread per test keeps the suite's processes from fighting over them.
TEST_ENV := OMP_NUM_THREADS=1 MKL_NUM_THREADS=1

.PHONY: venv demo test lint bench clean cifar10

venv: $(STAMP)

$(STAMP): pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.14.1 torchvision==0.29.1
	$(PY) -m pip install -q -e '.[dev,deploy]'
	touch $(STAMP)

# --overwrite: `make demo` run again replaces the demo's run folder (runs/digits_resnet8) instead of refusing.
demo: venv
	$(VENV)/bin/reslab train --overwrite

test: venv
	$(PY) -m ruff check src tests benchmarks
	$(TEST_ENV) $(PY) -m pytest -n 2 --dist loadgroup -q

# The CIFAR-10 image folder that configs/cifar10_*.yaml read, unpacked from the shared copy (no download).
CIFAR_TAR ?= ../shared/data/cifar10-jpg/cifar10-jpg.tar.gz
cifar10: data/cifar10-jpg/.unpacked

data/cifar10-jpg/.unpacked: $(CIFAR_TAR)
	rm -rf data/cifar10-jpg && mkdir -p data/cifar10-jpg
	tar xzf $(CIFAR_TAR) -C data/cifar10-jpg
	touch $@

lint: venv
	$(PY) -m ruff check src tests benchmarks

bench: venv
	$(PY) benchmarks/bench_resnet50.py

clean:
	rm -rf $(VENV) .pytest_cache .ruff_cache
