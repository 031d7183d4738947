# Theatrum: the two commands of the quick start are `make run` and `make test`. Both are idempotent.
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PYPROJECT_HASH := $(shell sha1sum pyproject.toml | cut -c1-12)
PY_STAMP := $(VENV)/.installed-$(PYPROJECT_HASH)
NODE_STAMP := web-client/node_modules/.installed
SAMPLE := sample_data/phantom

.PHONY: run test install lint bench sample clean

install: $(PY_STAMP) $(NODE_STAMP)

$(PY_STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --disable-pip-version-check --upgrade pip
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test]'
	@rm -f $(VENV)/.installed-* && touch $@

$(NODE_STAMP): web-client/package-lock.json
	cd web-client && npm ci --no-audit --no-fund --loglevel=error
	@touch $@

sample: $(PY_STAMP)
	$(PY) sample_data/phantom.py $(SAMPLE)

run: install sample
	$(VENV)/bin/theatrum serve --import $(SAMPLE)

lint: $(PY_STAMP)
	$(VENV)/bin/ruff check .

test: install lint
	$(VENV)/bin/pytest -q

bench: install
	$(PY) -m pip install -q --disable-pip-version-check -e '.[test,bench]'
	$(PY) bench/reconstruct.py
	$(PY) bench/hub.py
	$(PY) bench/ledger.py
	$(PY) bench/slices.py
	$(PY) bench/voice.py

clean:
	rm -rf $(VENV) web-client/node_modules $(SAMPLE) bench/out .pytest_cache .ruff_cache
