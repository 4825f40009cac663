# One task runner for developers and CI alike (.ci/run calls `make test`).
SHELL := /bin/bash
PYTHON ?= python3
VENV ?= .venv
BIN := $(VENV)/bin
export PULSESEAL_HOME ?= .pulseseal

.PHONY: help install lock services services-down lint format typecheck test test-fast demo soak docs docs-check bench clean

help:  ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-14s %s\n", $$1, $$2}'

$(BIN)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -c 'import sys; sys.exit(sys.version_info < (3, 11))' || \
		{ echo "PulseSeal needs Python >= 3.11 as '$(PYTHON)' (set PYTHON=...)"; exit 2; }
	@test -x $(BIN)/python || $(PYTHON) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -c constraints.txt -e '.[dev]'
	@touch $@

install: $(BIN)/.installed  ## create the virtualenv and install PulseSeal with its dev extras (pinned by constraints.txt)

lock: install  ## re-resolve constraints.txt (every pinned version) from pyproject.toml's ranges
	$(BIN)/uv pip compile pyproject.toml --extra dev --python-version 3.11 --upgrade --quiet -o constraints.txt

services: install  ## install (if missing) and start RabbitMQ, the key-store Redis and FerretDB
	$(BIN)/pulseseal services up

services-down: install  ## stop the local servers
	$(BIN)/pulseseal services down

lint: install  ## ruff lint and format check, bandit
	$(BIN)/ruff check .
	$(BIN)/ruff format --check .
	$(BIN)/bandit -q -c pyproject.toml -r schemas pulseseal producers consumers keyservice shell bench tests

format: install  ## apply ruff's formatting and safe fixes
	$(BIN)/ruff check --fix .
	$(BIN)/ruff format .

typecheck: install  ## mypy --strict over code and tests
	$(BIN)/mypy

test: install lint typecheck docs-check services  ## the full suite, real servers included
	$(BIN)/pytest

test-fast: install  ## only the tests that need no server
	$(BIN)/pytest -m "not integration"

demo: install services  ## the main job on local defaults
	$(BIN)/pulseseal demo

bench: install services  ## the full benchmark (docs/benchmarks.md); `pulseseal bench --quick` for a short run
	$(BIN)/pulseseal bench --json $(PULSESEAL_HOME)/bench/last-run.json

soak: install  ## 10 minutes of traffic under faults on its own servers, then loss checks and a plaintext hunt
	$(BIN)/pulseseal soak --duration $(or $(SOAK_DURATION),600) --json $(PULSESEAL_HOME)/soak/last-report.json

docs: install  ## regenerate the generated documents (README settings table, JSON Schema, OpenAPI, AsyncAPI)
	$(BIN)/python -m shell.docgen

docs-check: install  ## fail when a generated document is stale (part of `make test`)
	$(BIN)/python -m shell.docgen --check

clean:  ## remove the virtualenv and caches (service data in $(PULSESEAL_HOME) stays)
	rm -rf $(VENV) .mypy_cache .ruff_cache .pytest_cache .hypothesis
