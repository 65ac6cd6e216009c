# `make demo` runs the main job, `make test` the test suite; both install first.
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: install demo test test-all bench lint clean

install: $(STAMP)

# torch==2.13.0 first: it is the CPU build on this disk; a bare `torch` would pull CUDA wheels.
$(STAMP): pyproject.toml
	python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	$(PY) -m pip install -q -e ".[dev,slurm,ray]"
	touch $(STAMP)

demo: install
	$(VENV)/bin/spherelab demo --out demo_out

test: install
	$(PY) -m pytest -q

test-all: install
	$(PY) -m pytest -q -m "not gpu"

bench: install
	$(PY) benchmarks/bench_train.py

lint: install
	$(VENV)/bin/ruff check src tests benchmarks

clean:
	rm -rf demo_out .pytest_cache
