# Every target sets up what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench docs sysdeps clean

$(STAMP): pyproject.toml
	test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[all,dev,docs,bench]'
	touch $(STAMP)

sysdeps:
	@bash scripts/sysdeps.sh

demo: sysdeps $(STAMP)
	$(VENV)/bin/agent dev examples/assistant.py

test: sysdeps $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy
	$(PY) -m pytest -q

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .
	$(VENV)/bin/mypy

bench: sysdeps $(STAMP)
	$(PY) -m bench.run

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) site .pytest_cache .mypy_cache .ruff_cache

# The whole-call conformance suite with its large budgets (long calls, state machine).
.PHONY: conformance
conformance: sysdeps $(STAMP)
	$(PY) -m pytest -q tests/conformance -m 'heavy or not heavy'
