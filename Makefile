# `make demo` and `make test` are all a newcomer needs (see README.md).
PYTHON ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-stamp

.PHONY: install demo test lint typecheck unit bench bench-peers clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --disable-pip-version-check -e '.[postgres,dev,pandas]'
	touch $(STAMP)

install: $(STAMP)

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
	$(BIN)/pytest

test: lint typecheck unit

bench: install
	scripts/ensure-postgres
	$(BIN)/python bench/store.py
	$(BIN)/python bench/logging.py
	$(BIN)/python bench/launch.py
	$(BIN)/python bench/ingest.py

# Side virtual environments with MLflow, wandb, Aim and tensorboardX, for bench/logging.py.
bench-peers:
	PYTHON=$(PYTHON) bench/peers/install.sh

clean:
	rm -rf $(VENV) .venv-peers .pytest_cache .mypy_cache .ruff_cache .hypothesis build dist src/*.egg-info
