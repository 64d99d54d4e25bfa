# The two commands of the README: `make up` (kliv up examples/blog) and `make test`; `make install` sets up .venv.
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install test up lint crds examples

$(VENV)/.installed: pyproject.toml tests/node/package-lock.json
	python3 -m venv $(VENV)
	$(BIN)/pip install --quiet -e '.[dev]'
	npm ci --prefix tests/node --no-audit --no-fund --loglevel=error  # node-postgres: a client nobody here wrote
	touch $@

# Bytecode of the editable sources, written even under PYTHONDONTWRITEBYTECODE (which otherwise makes
# every `kliv` run compile every changed module again); only changed files are compiled.
install: $(VENV)/.installed
	$(BIN)/python -m compileall -q src

test: install
	$(BIN)/pytest

up: install
	$(BIN)/kliv up examples/blog

lint: install
	$(BIN)/ruff check src tests benchmarks
	$(BIN)/ruff format --check src tests benchmarks
	$(BIN)/mypy src

crds: install
	$(BIN)/kliv crds --out crds

examples: install
	for example in examples/*/; do $(BIN)/kliv validate "$$example" || exit 1; done
