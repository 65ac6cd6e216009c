# `make demo` runs the main job, `make test` the test suite, `make lint` the checks; each installs
# what it needs first (and only that: the slurm and ray extras are for `make test-all`).
VENV   ?= .venv
PY     := $(VENV)/bin/python
BASE   := $(VENV)/.base

# Extras per stamp: $(VENV)/.installed-<name> installs the package with EXTRAS_<name>.
EXTRAS_core :=
EXTRAS_test := test
# lint: mypy checks spherelab.monitor.lightning against lightning itself
EXTRAS_lint := lint,lightning
EXTRAS_all  := test,slurm,ray

.PHONY: install demo test test-all bench lint fuzz clean

install: $(VENV)/.installed-test

# torch==2.13.0 first: it is the CPU build on this disk; a bare `torch` would pull CUDA wheels.
# An existing venv is kept as it is (recreating it over another interpreter would break it).
$(BASE):
	test -x $(PY) || python3 -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q torch==2.13.0
	touch $@

.PRECIOUS: $(VENV)/.installed-%
$(VENV)/.installed-%: pyproject.toml $(BASE)
	$(PY) -m pip install -q -e ".$(if $(EXTRAS_$*),[$(EXTRAS_$*)])"
	touch $@

demo: $(VENV)/.installed-core
	$(VENV)/bin/spherelab demo --out demo_out

test: $(VENV)/.installed-test
	$(PY) -m pytest -q

# Also the slow tests and the submitit / ray executors (skipped by `make test` without them).
test-all: $(VENV)/.installed-all
	$(PY) -m pytest -q -m "not gpu"

# Random bad configs, data and damaged run/sweep files thrown at the CLI: exit 2, no traceback.
FUZZ_SECONDS ?= 120
fuzz: $(VENV)/.installed-test
	$(PY) tests/fuzz_cli.py --seconds $(FUZZ_SECONDS)

bench: $(VENV)/.installed-core
	$(PY) benchmarks/bench_train.py

# Every check runs, so one CI log shows all of them; the target fails if any did.
lint: $(VENV)/.installed-lint
	@status=0; \
	$(VENV)/bin/ruff check src tests benchmarks || status=1; \
	$(VENV)/bin/ruff format --check src tests benchmarks || status=1; \
	$(VENV)/bin/lint-imports || status=1; \
	$(VENV)/bin/mypy || status=1; \
	exit $$status

clean:
	rm -rf demo_out .pytest_cache .mypy_cache .grimp_cache
