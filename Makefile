# loan-default: `make run` (set up, train if needed, serve) and `make test` (everything CI runs).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= $(shell command -v python3.11 || command -v python3)
VENV ?= .venv
PY := $(VENV)/bin/python
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed-$(shell cat requirements.txt requirements-dev.txt pyproject.toml 2>/dev/null | sha256sum | cut -c1-16)
DATA := training/Default_Fin.csv
PYTEST_ARGS ?=
# xdist workers for the suite outside tests/containers (0: one process, in order). Modules are the
# unit (--dist loadfile), so a module's servers and fixtures start once; see DESIGN.md.
PYTEST_WORKERS ?= 2
LINT_PATHS := src tests training $(wildcard bench scripts)

.PHONY: help install data model run serve worker lint format test test-fast services deploy-tools bench clean

help: ## list targets
	@grep -E '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN{FS=":.*?## "}{printf "  %-12s %s\n", $$1, $$2}'

$(PY):
	$(PYTHON) -m venv $(VENV)

$(STAMP): $(PY) requirements.txt requirements-dev.txt pyproject.toml
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -r requirements-dev.txt
	$(PY) -m pip install --quiet --no-deps -e .
	rm -f $(VENV)/.installed-* && touch $(STAMP)

install: $(STAMP) ## create .venv and install the pinned runtime + dev requirements and the package

$(DATA): | $(STAMP)
	$(BIN)/loan-default data --output $(DATA)

data: $(STAMP) ## derive training/Default_Fin.csv from the ISLP wheel (checksummed)
	$(BIN)/loan-default data --output $(DATA)

model: $(DATA) ## train + register + promote, unless a model is already promoted
	@if [ "$$($(BIN)/loan-default model current 2>/dev/null | tail -n1)" = "none" ]; then \
		$(BIN)/loan-default train --report reports/train-report.json; \
	else \
		echo "a model is already promoted (v$$($(BIN)/loan-default model current | tail -n1)); 'loan-default train' retrains"; \
	fi

run: model ## set up everything, train if needed, then serve the API (port 8005) and batch worker
	@command -v redis-server >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -qq redis-server >/dev/null || (apt-get update -qq && apt-get install -y -qq redis-server >/dev/null)); } \
		|| { echo "make run starts a private Redis for the batch queue: install redis-server"; exit 1; }
	$(BIN)/loan-default run

serve: $(STAMP) ## the API only
	$(BIN)/loan-default serve

worker: $(STAMP) ## the batch worker only
	$(BIN)/loan-default worker

services: ## start what the tests need (Redis) if nothing answers; report whether a Docker engine answers
	bash .ci/ensure-redis.sh
	@docker info >/dev/null 2>&1 && echo "docker: engine answering; the container tests will run" \
		|| echo "docker: NO ENGINE ANSWERS; the container tests (tests/containers) will be SKIPPED. As root: bash .ci/ensure-docker.sh"

deploy-tools: $(STAMP) ## validators for tests/deploy (hadolint, kubernetes-validate, checkov, dclint, promtool) and chromium
	VENV=$(VENV) PYTHON=$(PYTHON) bash tests/deploy/install-tools.sh

lint: $(STAMP) ## ruff format --check, ruff check, mypy
	$(BIN)/ruff format --check $(LINT_PATHS)
	$(BIN)/ruff check $(LINT_PATHS)
	$(BIN)/mypy

format: $(STAMP)
	$(BIN)/ruff format $(LINT_PATHS)
	$(BIN)/ruff check --fix $(LINT_PATHS)

test: $(STAMP) $(DATA) services deploy-tools lint ## everything CI runs: lint, mypy, the whole test suite
	$(BIN)/pytest -n $(PYTEST_WORKERS) --dist loadfile --ignore=tests/containers $(PYTEST_ARGS)
	$(BIN)/pytest -p no:xdist --no-cov tests/containers $(PYTEST_ARGS)

test-fast: $(STAMP) $(DATA) ## unit tests only
	$(BIN)/pytest -m unit --no-cov $(PYTEST_ARGS)

bench: $(STAMP) $(DATA) ## run the benchmarks in bench/ (prints figures; installs wrk and valgrind if missing)
	@command -v wrk >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -qq wrk >/dev/null || (apt-get update -qq && apt-get install -y -qq wrk >/dev/null)); } \
		|| { echo "bench/bench_api.py needs wrk: apt-get install wrk (as root)"; exit 1; }
	@command -v valgrind >/dev/null || { [ "$$(id -u)" = 0 ] && command -v apt-get >/dev/null \
		&& (apt-get install -y -qq valgrind >/dev/null || (apt-get update -qq && apt-get install -y -qq valgrind >/dev/null)); } \
		|| { echo "bench/bench_instructions.py needs valgrind: apt-get install valgrind (as root)"; exit 1; }
	@for b in bench/bench_*.py; do echo "== $$b"; $(PY) $$b || exit 1; done

clean:
	rm -rf .pytest_cache .mypy_cache .ruff_cache htmlcov .coverage* var reports
