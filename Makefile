# ChatPop — the two commands: `make run` starts the platform, `make test` runs every test.
SHELL := /bin/bash
.DEFAULT_GOAL := help

VENV ?= .venv
PY := $(VENV)/bin/python
SERVICE_PATHS := services/common:services/identity:services/rooms:services/messaging:services/payments:services/edge
export PYTHONPATH := $(SERVICE_PATHS)$(if $(PYTHONPATH),:$(PYTHONPATH))
STAMP := $(VENV)/.installed

.PHONY: system-deps help install proto proto-check lint typecheck buf-lint web test test-unit test-integration test-deploy test-e2e test-fuzz test-browser run clean

help:
	@echo "make run    start the whole platform on localhost (private Postgres/Redis unless URLs are set)"
	@echo "make test   run every test tier (unit, integration, e2e) and the static checks"
	@echo "make proto  regenerate Python code and stubs from protos/"
	@echo "make web    build the web client (services/edge/web -> services/edge/web/dist)"

# The venv is built from the lock file with uv when it is on PATH (fast); on a fresh machine without
# uv, python3.11's own venv and pip install the same pinned lock.
$(STAMP): requirements-dev.lock
	@command -v python3.11 >/dev/null 2>&1 || test -x $(PY) || { \
		echo "python3.11 is required (Debian/Ubuntu: sudo apt-get install -y python3.11 python3.11-venv)"; exit 1; }
	@if command -v uv >/dev/null 2>&1; then \
		test -x $(PY) || uv venv --quiet --python python3.11 $(VENV) || exit 1; \
		echo "installing requirements-dev.lock into $(VENV) (uv)"; \
		VIRTUAL_ENV=$(VENV) uv pip sync --quiet requirements-dev.lock || exit 1; \
	else \
		test -x $(PY) || python3.11 -m venv $(VENV) || { \
			echo "python3.11 cannot create a venv (Debian/Ubuntu: sudo apt-get install -y python3.11-venv)"; exit 1; }; \
		echo "installing requirements-dev.lock into $(VENV) (pip)"; \
		$(PY) -m pip install --quiet --disable-pip-version-check -r requirements-dev.lock || exit 1; \
	fi
	@touch $(STAMP)

# The web client: npm ci from the lock file (only when it changed), then a Vite build whenever a
# source changed. The edge serves the result from services/edge/web/dist. The build runs on the
# machine's Node.js when it is 20.19 or newer, otherwise on a pinned one fetched with npm
# ($(WEB)/toolchain/node-path says which and installs it on first use).
WEB := services/edge/web
WEB_MODULES := $(WEB)/node_modules/.chatpop-installed
WEB_BUILD := $(WEB)/dist/index.html
WEB_SOURCES := $(shell find $(WEB)/src -type f 2>/dev/null) $(addprefix $(WEB)/,index.html vite.config.ts tsconfig.json package.json)
WITH_NODE = bin="$$($(CURDIR)/$(WEB)/toolchain/node-path)" && PATH="$$bin:$$PATH"

$(WEB_MODULES): $(WEB)/package-lock.json $(WEB)/package.json
	cd $(WEB) && $(WITH_NODE) npm ci --no-audit --no-fund --loglevel=error
	@touch $@

$(WEB_BUILD): $(WEB_MODULES) $(WEB_SOURCES)
	cd $(WEB) && $(WITH_NODE) npm run --silent build

web: $(WEB_BUILD)

# Debian packages (PostgreSQL, Redis, Python venv support, Chromium for the browser tier): installed
# on first use when missing, a quick check otherwise.
system-deps:
	@bash .ci/run --install-only

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

# pytest exits 5 when a tier collects nothing; that is not a failure of the tier. $(2): more options.
define run_tier
	$(PY) -m pytest $(1) -q -p no:cacheprovider $(2); rc=$$?; if [ $$rc -eq 5 ]; then echo "no tests in $(1)"; rc=0; fi; exit $$rc
endef

# The integration, e2e and browser tiers mostly wait (on processes starting, timeouts, the network):
# their test files are spread over worker processes (pytest-xdist), each starting datastores and
# services of its own on free ports, a file's tests kept together in one worker. The browser tier
# keeps the cores busier (Chromium), so it gets fewer. 0 runs a tier in one process.
TEST_WORKERS ?= 3
BROWSER_WORKERS ?= 2
spread = -n $(1) --dist loadfile

test-unit: $(STAMP)
	@$(call run_tier,tests/unit)

test-integration: $(STAMP)
	@$(call run_tier,tests/integration,$(call spread,$(TEST_WORKERS)))

# Images, chart, Tiltfile and protos, checked statically: no cluster, no network.
test-deploy: $(STAMP)
	@$(call run_tier,tests/deploy)

test-e2e: $(STAMP)
	@$(call run_tier,tests/e2e,$(call spread,$(TEST_WORKERS)))

# Requests generated from the OpenAPI document (schemathesis) against all five services as processes.
test-fuzz: $(STAMP)
	@$(call run_tier,tests/fuzz)

# The browser tier joins once tests/browser exists.
test-browser: $(STAMP) web
	@if [ -d tests/browser ]; then $(call run_tier,tests/browser,$(call spread,$(BROWSER_WORKERS))); else echo "no tests/browser yet"; fi

test: system-deps $(STAMP) web buf-lint proto-check lint typecheck test-unit test-deploy test-integration test-e2e test-fuzz test-browser

run: system-deps $(STAMP) web
	$(PY) -m chatpop_common.localrun

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache $(WEB)/node_modules $(WEB)/toolchain/node_modules $(WEB)/dist
