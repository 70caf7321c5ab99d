# The targets .ci/run and the README use. A virtualenv in .venv holds everything.
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin

.PHONY: install run test lint typecheck unit bench bench-smoke clean

$(BIN)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $@

WORKER := deploy/cloudflare/worker

# The Worker's test runtime (miniflare brings workerd); skipped where there is no npm.
$(WORKER)/node_modules/.installed: $(WORKER)/package.json $(WORKER)/package-lock.json
	if command -v npm >/dev/null; then \
		npm ci --prefix $(WORKER) --no-audit --no-fund --loglevel=error && touch $@; fi

install: $(BIN)/.installed

## Run the service on its embedded default: sample images, a development key, URLs printed.
run: install
	$(BIN)/originshield serve

lint: install
	$(BIN)/ruff check proxy tests bench examples
	$(BIN)/ruff format --check proxy tests bench examples

typecheck: install
	$(BIN)/mypy --strict proxy

unit: install $(WORKER)/node_modules/.installed
	$(BIN)/pytest

## Everything CI runs: lint, types, the whole test suite.
test: lint typecheck unit

## The full benchmark (needs wrk); results go to docs/benchmarks.md by hand.
bench: install
	$(BIN)/python bench/run.py

bench-smoke: install
	$(BIN)/python bench/run.py --smoke

clean:
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache
