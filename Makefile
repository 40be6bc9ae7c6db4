# SafeLadder Studio. Two commands: `make run` and `make test` (see README.md).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(VENV)/bin/pip
EMBEDDED := $(PY) -m webapp.embedded exec --
NPM ?= npm

.PHONY: run test venv lint frontend api-types clean-data

$(VENV)/.installed: requirements.txt requirements-dev.txt
	@echo "==> creating $(VENV) and installing (torch 2.13.0 CPU first, then the rest; about a minute)"
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install --progress-bar on --upgrade pip
	$(PIP) install --progress-bar on torch==2.13.0
	$(PIP) install --progress-bar on -r requirements-dev.txt
	@touch $@

venv: $(VENV)/.installed

frontend/dist/index.html: $(shell find frontend/src -type f 2>/dev/null) frontend/package.json frontend/package-lock.json frontend/index.html
	@echo "==> building the frontend"
	cd frontend && $(NPM) ci --no-audit --no-fund && $(NPM) run build

frontend:
	@if [ -f frontend/package.json ]; then $(MAKE) --no-print-directory frontend/dist/index.html; fi

run: venv frontend
	@$(EMBEDDED) $(PY) -m webapp.devserver

# Tests use their own data folder, so a running `make run` and its data are left alone.
test: venv frontend
	@if [ -f frontend/package.json ]; then echo "==> frontend lint (ESLint, React hook rules)"; cd frontend && $(NPM) run --silent lint; fi
	@if [ -f frontend/package.json ]; then echo "==> frontend unit tests (Vitest)"; cd frontend && $(NPM) test; fi
	@echo "==> import contracts (lint-imports; docs/architecture.md)"
	@$(VENV)/bin/lint-imports --no-cache
	@echo "==> Python tests (pytest: REST, websockets, workers, TRL, browser)"
	@SAFELADDER_DATA_DIR=$(CURDIR)/.data/test $(EMBEDDED) $(PY) -m pytest $(PYTEST_ARGS)

# The browser's REST types, generated from the OpenAPI schema; a test in `make test` fails when the
# committed frontend/src/lib/schema.gen.ts is stale.
api-types: venv frontend
	$(PY) manage.py api_types

lint: venv frontend
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports --no-cache
	cd frontend && $(NPM) run --silent lint

clean-data:
	rm -rf .data
