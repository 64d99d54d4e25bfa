# The two commands of the README: `make install` sets up .venv, `make test` runs the tests.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test lint crds examples

$(VENV)/.installed: pyproject.toml
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	touch $@

install: $(VENV)/.installed

test: install
	$(BIN)/pytest

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

crds: install
	$(BIN)/kliv crds --out crds

examples: install
	for example in examples/*/; do $(BIN)/kliv validate "$$example" || exit 1; done
