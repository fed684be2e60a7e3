# ChatPop — the two commands: `make run` starts the platform, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
SERVICE_PATHS := services/common:services/identity:services/rooms:services/messaging:services/payments:services/edge
export PYTHONPATH := $(SERVICE_PATHS)$(if $(PYTHONPATH),:$(PYTHONPATH))
STAMP := $(VENV)/.installed

.PHONY: help install proto proto-check lint typecheck buf-lint test test-unit test-integration test-e2e run clean

help:
	@echo "make run    start the whole platform on localhost (private Postgres/Redis unless URLs are set)"
	@echo "make test   run every test tier (unit, integration, e2e) and the static checks"
	@echo "make proto  regenerate Python code and stubs from protos/"

# The venv is built from the lock file; uv when present (fast), otherwise pip installs uv first.
$(STAMP): requirements-dev.lock
	@command -v uv >/dev/null 2>&1 || python3 -m pip install --quiet uv
	@test -x $(PY) || uv venv --quiet --python python3.11 $(VENV) 2>/dev/null || uv venv --quiet $(VENV)
	VIRTUAL_ENV=$(VENV) uv pip sync --quiet requirements-dev.lock
	@touch $(STAMP)

install: $(STAMP)

proto: $(STAMP)
	$(PY) protos/generate.py

# Regenerating must change nothing that is checked in.
proto-check: $(STAMP)
	$(PY) protos/generate.py
	@git diff --exit-code --stat -- services/common/chatpop || { echo "generated code is stale: run make proto"; exit 1; }
	@test -z "$$(git status --porcelain -- services/common/chatpop)" || { echo "generated code is stale: run make proto"; exit 1; }

buf-lint: $(STAMP)
	cd protos && ../$(VENV)/bin/buf lint

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

typecheck: $(STAMP)
	$(VENV)/bin/mypy services/common/chatpop_common services/identity/chatpop_identity services/rooms/chatpop_rooms services/messaging/chatpop_messaging services/payments/chatpop_payments services/edge/chatpop_edge

# pytest exits 5 when a tier collects nothing; that is not a failure of the tier.
define run_tier
	$(PY) -m pytest $(1) -q -p no:cacheprovider; rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests in $(1)"; rc=0; fi; exit $$rc
endef

test-unit: $(STAMP)
	@$(call run_tier,tests/unit)

test-integration: $(STAMP)
	@$(call run_tier,tests/integration)

test-e2e: $(STAMP)
	@$(call run_tier,tests/e2e)

test: $(STAMP) buf-lint proto-check lint typecheck test-unit test-integration test-e2e

run: $(STAMP)
	$(PY) -m chatpop_common.localrun

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
