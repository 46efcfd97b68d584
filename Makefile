# Two commands for a newcomer: `make run` and `make test`. Everything else is optional.
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
HOST ?= 127.0.0.1
PORT ?= 8000

.PHONY: run test install dev train migrate bytecode lint bench clean browser-deps rasa-deps rasa-env compare-rasa

$(BIN)/python:
	$(PY) -m venv $(VENV)
	$(BIN)/pip install -q --upgrade pip

$(VENV)/.stamp-install: pyproject.toml | $(BIN)/python
	$(BIN)/pip install -q -e .
	touch $@

$(VENV)/.stamp-dev: pyproject.toml $(VENV)/.stamp-install
	$(BIN)/pip install -q -e '.[dev]'
	touch $@

install: $(VENV)/.stamp-install

dev: $(VENV)/.stamp-dev

train: install
	$(BIN)/pcrm train

migrate: install
	$(BIN)/pcrm db upgrade

## The app's bytecode, compiled once (as deploy/Dockerfile does): where PYTHONDONTWRITEBYTECODE is
## set, every `pcrm serve` would otherwise compile ≈ 1 MB of source again (≈ 0.1–0.25 CPU s of its start).
bytecode: install
	$(BIN)/python -m compileall -q bot crm_store channels actions

## Install, train, migrate and serve on http://$(HOST):$(PORT) with SQLite and in-process stores.
run: install train migrate bytecode
	$(BIN)/pcrm serve --host $(HOST) --port $(PORT)

## Browser-test prerequisites: Debian's chromium and axe-core from npm (never a downloaded browser).
browser-deps:
	@command -v chromium >/dev/null 2>&1 || (apt-get update -qq && apt-get install -y -qq chromium >/dev/null) || echo "chromium not installed: browser tests will skip"
	@[ -f node_modules/axe-core/axe.min.js ] || npm install --no-audit --no-fund --silent || echo "axe-core not installed: browser tests will skip"

## Optional Rasa 3.6 toolchain for the interop tests: built when a Python 3.10 exists (pyenv), else they skip.
rasa-deps:
	@bash bench/rasa_env.sh || echo "Rasa toolchain not built: the Rasa interop tests will skip"

## Check the layers (import-linter contracts in pyproject.toml), then run the whole test suite
## (real PostgreSQL and Redis when reachable).
test: dev browser-deps rasa-deps
	$(BIN)/lint-imports
	$(BIN)/python -m pytest -q -p no:cacheprovider tests

lint: dev
	$(BIN)/ruff check .
	$(BIN)/lint-imports

bench: install
	$(BIN)/python bench/nlu_latency.py
	$(BIN)/pcrm evaluate bench/heldout.jsonl

## Optional: Rasa Open Source 3.6.21 in a Python 3.10 venv (var/rasa-venv) for the interop tests and the comparison.
rasa-env:
	bash bench/rasa_env.sh

compare-rasa: install rasa-env
	$(BIN)/python bench/compare_rasa.py

clean:
	rm -rf $(VENV) var node_modules
