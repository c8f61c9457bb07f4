# ltv: `make help` lists the targets. The first two are the README's two commands.
PYTHON ?= python3
VENV   := .venv
BIN    := $(VENV)/bin
STAMP  := $(VENV)/.installed

.DEFAULT_GOAL := help

## demo: create .venv, install, run `ltv demo` (everything that exists, end to end)
demo: $(STAMP)
	$(BIN)/ltv demo

## test: create .venv, install, lint, type-check and run the whole test suite
test: $(STAMP) lint
	$(BIN)/pytest

## install: create .venv with the locked dependency set and the project (editable)
install: $(STAMP)

$(STAMP): pyproject.toml constraints.txt
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade "pip>=24"
	$(BIN)/python -m pip install --quiet -c constraints.txt -e ".[dev]"
	$(BIN)/python -m pip check
	touch $(STAMP)

## lint: ruff (style, docstrings, no print in library code) and mypy
lint: $(STAMP)
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy

## format: apply ruff's formatting and safe fixes
format: $(STAMP)
	$(BIN)/ruff format .
	$(BIN)/ruff check --fix .

## lock: re-resolve constraints.txt from pyproject.toml (run after changing dependencies)
lock:
	rm -rf .venv-lock && $(PYTHON) -m venv .venv-lock
	.venv-lock/bin/python -m pip install --quiet --upgrade "pip>=24"
	.venv-lock/bin/python -m pip install --quiet -e ".[dev]"
	.venv-lock/bin/python -m pip freeze --exclude-editable | grep -v '^-e' > constraints.txt
	rm -rf .venv-lock

## fuzz: the property-based validation tests at full depth (10,000 files per table, R6)
fuzz: $(STAMP)
	HYPOTHESIS_PROFILE=deep $(BIN)/pytest -q tests/features/test_validation_properties.py

## bench-generate: time the synthetic generator at 1M customers (see BENCHMARKS.md)
bench-generate: $(STAMP)
	$(BIN)/python bench/bench_generate.py --customers 1000000

## mlflow-ui: open the MLflow UI on the work directory's store (WORKDIR=ltv-work, PORT=5000)
WORKDIR ?= ltv-work
PORT    ?= 5000
mlflow-ui: $(STAMP)
	$(BIN)/mlflow ui --backend-store-uri sqlite:///$(abspath $(WORKDIR))/mlflow.db \
		--artifacts-destination $(abspath $(WORKDIR))/mlartifacts --port $(PORT)

## clean: remove the work directory and caches (keeps .venv)
clean:
	rm -rf ltv-work .pytest_cache .mypy_cache .ruff_cache

## help: list the targets
help:
	@grep -E '^## ' $(MAKEFILE_LIST) | sed 's/^## /  make /'

: demo test install lint format lock fuzz bench-generate clean help
