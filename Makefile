# Every target sets up what it needs, so each works on a fresh machine.
PYTHON ?= python3
VENV   ?= .venv
PY     := $(VENV)/bin/python
STAMP  := $(VENV)/.installed

.PHONY: demo test lint bench soak fuzz docs sysdeps clean phone-latency sip-test test-pythons wheel-check

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

# The unit tests on the oldest and newest supported Pythons (PYTHONS="3.10 3.13"), one venv each.
test-pythons: sysdeps
	bash scripts/pythons.sh

# The wheel in clean venvs: the quickstart app answers a peer; extras work alone (slow: downloads).
wheel-check: sysdeps $(STAMP)
	$(PY) -m pytest -q -m heavy tests/test_wheel.py

bench: sysdeps $(STAMP)
	$(PY) -m bench.run
	$(PY) -m bench.run --offline
	$(PY) -m bench.executors

# 50 calls for 5 minutes with RSS and task counts (DUPLEX_SOAK_S / DUPLEX_SOAK_CALLS to change).
soak: $(STAMP)
	$(PY) -m pytest -m heavy tests/soak -s -q

# Large fuzz budgets (20,000 hostile frames per client); CI runs 2,000 each.
fuzz: sysdeps $(STAMP)
	$(PY) -m pytest -q -m heavy tests/fuzz

docs: $(STAMP)
	$(VENV)/bin/mkdocs build --strict

clean:
	rm -rf $(VENV) .venv-py* site .pytest_cache .mypy_cache .ruff_cache

# Direct SIP against baresip and sipp (also part of `make test`; this runs just those).
sip-test: sysdeps $(STAMP)
	$(PY) -m pytest tests/telephony/test_sip.py -q

# Caller speech end -> first reply audio per phone path (Twilio, Telnyx, direct SIP).
phone-latency: sysdeps $(STAMP)
	$(PY) -m pytest tests/telephony/test_latency.py -m heavy -s -q

# The whole-call conformance suite with its large budgets (long calls, state machine).
.PHONY: conformance
conformance: sysdeps $(STAMP)
	$(PY) -m pytest -q tests/conformance -m 'heavy or not heavy'
