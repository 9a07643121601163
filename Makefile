# depthlab: two commands on a fresh machine —
#   make demo   creates .venv, installs depthlab, trains on built-in data, writes a report
#   make test   installs the dev dependencies (torch==2.13.0 CPU, pytest, ruff) and runs the suite
PYTHON ?= python3
VENV   := .venv
PY     := $(VENV)/bin/python
OUT    ?= demo-out

.PHONY: demo test lint bench clean

$(VENV)/.installed: pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --disable-pip-version-check -e .
	touch $@

$(VENV)/.dev-installed: $(VENV)/.installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[dev]"
	touch $@

demo: $(VENV)/.installed
	$(VENV)/bin/depthlab demo --out $(OUT)

lint: $(VENV)/.dev-installed
	$(VENV)/bin/ruff check src tests benchmarks

# pytest-xdist workers: one per core this process may run on (2 in CI), at most 4; none (one
# process) on a single core. The files are shared out whole (--dist loadfile): a module's
# fixtures (a Dask cluster, a browser, a server) are set up once.
WORKERS ?= $(shell $(PY) -c "import os; n = len(os.sched_getaffinity(0)); print(min(n, 4) if n > 1 else 0)")

# The package's bytecode is written first: with PYTHONDONTWRITEBYTECODE set (as on these hosts)
# every `python -m depthlab` subprocess, sweep worker and Dask worker the tests start would
# otherwise compile the modules it imports from source (~0.6 s of CPU for the engine, store and
# report).
test: lint
	$(PY) -m compileall -q src tests/helpers
	$(PY) -m pytest -n $(WORKERS) --dist loadfile

$(VENV)/.bench-installed: $(VENV)/.dev-installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	touch $@

# a host's OPENBLAS_CORETYPE / OPENBLAS_L2_SIZE (set on some machines for older OpenBLAS builds)
# make a current NumPy run slower kernels: the benchmarks run without them (benchmarks/host_blas.py)
BENCH = env -u OPENBLAS_CORETYPE -u OPENBLAS_L2_SIZE $(PY)

bench: $(VENV)/.bench-installed
	$(BENCH) benchmarks/engine_speed.py
	$(BENCH) benchmarks/probe_overhead.py
	$(BENCH) benchmarks/torch_probe_overhead.py
	$(BENCH) benchmarks/watch_floor.py
	$(BENCH) benchmarks/sweep_scaling.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
