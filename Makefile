# `make demo` and `make test` are all a newcomer needs (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

UI_STAMP := src/runyard/server/static/index.html
UI_SOURCES := $(wildcard web/src/*.ts web/src/*.tsx web/src/*.css web/src/*/*.tsx) web/index.html web/vite.config.ts web/package-lock.json

.PHONY: install demo test lint typecheck unit ui bench bench-peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[postgres,dev,pandas,examples,ray,notebook,serve]'
	touch $(STAMP)

# The dashboard: web/ built with npm into the package's static files, served by `runyard server`.
web/node_modules/.package-lock.json: web/package-lock.json
	cd web && npm ci --no-audit --no-fund
	touch $@

$(UI_STAMP): web/node_modules/.package-lock.json $(UI_SOURCES)
	cd web && npm run --silent build

ui: $(UI_STAMP)

install: $(STAMP) $(UI_STAMP)

demo: install
	$(BIN)/runyard doctor
	$(BIN)/python examples/demo.py

lint: install
	$(BIN)/ruff check src tests bench examples
	$(BIN)/lint-imports

typecheck: install
	$(BIN)/mypy

unit: install
	scripts/ensure-postgres
	scripts/ensure-chromium
	$(BIN)/pytest

test: lint typecheck unit

bench: install
	scripts/ensure-postgres
	$(BIN)/python bench/store.py
	$(BIN)/python bench/logging.py
	$(BIN)/python bench/launch.py
	$(BIN)/python bench/ingest.py
	$(BIN)/python bench/ui.py
	$(BIN)/python bench/alerts.py
	$(BIN)/python bench/abuse.py
	$(BIN)/python bench/scale.py
	$(BIN)/python bench/notebook.py
	$(BIN)/python bench/serve.py

# Side virtual environments with MLflow, wandb, Aim and tensorboardX, for bench/logging.py (and MLflow for bench/serve.py).
bench-peers:
	PYTHON=$(PYTHON) bench/peers/install.sh

clean:
	rm -rf $(VENV) .venv-peers web/node_modules src/runyard/server/static .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info
