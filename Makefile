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

test: lint
	$(PY) -m pytest

$(VENV)/.bench-installed: $(VENV)/.dev-installed
	$(PY) -m pip install --quiet --disable-pip-version-check -e ".[bench]"
	touch $@

bench: $(VENV)/.bench-installed
	$(PY) benchmarks/engine_speed.py
	$(PY) benchmarks/probe_overhead.py
	$(PY) benchmarks/torch_probe_overhead.py
	$(PY) benchmarks/watch_floor.py
	$(PY) benchmarks/sweep_scaling.py

clean:
	rm -rf $(VENV) $(OUT) .pytest_cache .ruff_cache
