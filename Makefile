# Quick start: `make demo` (install + tiny end-to-end train/test), `make test`.
VENV ?= .venv
PY := $(VENV)/bin/python
export VENV

.PHONY: install demo test test-fast lint benchmark

install:
	@bash tools/setup_env.sh

demo: install
	$(PY) tools/quickstart.py

test: install
	$(PY) -m pytest -q --durations=25 tests

test-fast: install
	$(PY) -m pytest -q -m "not slow" tests

lint: install
	$(VENV)/bin/ruff check vvt_mm tools tests configs
	$(VENV)/bin/lint-imports

benchmark: install
	$(PY) tools/benchmark.py
