# Two commands on a fresh machine:  `make dev` (install + start the local stack)  and  `make test`.
SHELL := /bin/bash
PYTHON_VERSION := 3.12
# The runtime's Python: pyenv's 3.12 if present, else any python3.12 on PATH.
PY312 := $(shell (command -v pyenv >/dev/null && pyenv root >/dev/null 2>&1 && \
	ls -d "$$(pyenv root)"/versions/3.12*/bin/python3.12 2>/dev/null | sort -V | tail -n1) || command -v python3.12)
VENV := .venv
SAMVENV := .venv-sam
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
SAMSTAMP := $(SAMVENV)/.installed
export AWS_DEFAULT_REGION ?= us-east-1
export SAM_CLI_TELEMETRY := 0

.PHONY: help dev test test-fast lint typecheck format invoke bench install install-sam browser-deps events openapi \
	validate sam-build admin oauth-helper clean
.DEFAULT_GOAL := help

## List the targets (this text): each target's `## ` comment, its first line.
help:
	@awk '/^## / { if (!doc) doc = substr($$0, 4); next } \
	     /^[a-zA-Z][a-zA-Z0-9_-]*:/ { if (doc) { split($$0, t, ":"); printf "  make %-13s %s\n", t[1], doc } } \
	     { doc = "" }' $(MAKEFILE_LIST)

$(STAMP): requirements-dev.txt requirements-translator.txt layers/core/requirements.txt
	@if [ -z "$(PY312)" ]; then echo "error: Python $(PYTHON_VERSION) is required (the Lambda runtime is python3.12)." \
	  "Install it (e.g. 'pyenv install 3.12') and retry." >&2; exit 1; fi
	@test -x $(PY) && $(PY) -c 'import sys; sys.exit(sys.version_info[:2] != (3, 12))' || \
	  { rm -rf $(VENV); "$(PY312)" -m venv $(VENV); }
	$(VENV)/bin/pip install -q --upgrade pip
	$(VENV)/bin/pip install -q -r requirements-dev.txt
	$(VENV)/bin/pip install -q --no-deps -r requirements-translator.txt
	@touch $@

# aws-sam-cli pins its own boto3 and pydantic, so it gets a tool virtualenv of its own.
$(SAMSTAMP): requirements-sam.txt
	@test -x $(SAMVENV)/bin/python || "$(PY312)" -m venv $(SAMVENV)
	$(SAMVENV)/bin/pip install -q --upgrade pip
	$(SAMVENV)/bin/pip install -q -r requirements-sam.txt
	@touch $@

## Create .venv (Python 3.12) and install the app, test and bench requirements.
install: $(STAMP)
## Create .venv-sam, the SAM CLI's own tool virtualenv.
install-sam: $(SAMSTAMP)

## Install Debian's chromium and chromedriver for the browser tests (never a downloaded browser).
browser-deps:
	@command -v chromium >/dev/null && command -v chromedriver >/dev/null || { \
	  SUDO=$$([ "$$(id -u)" -eq 0 ] || echo sudo); \
	  $$SUDO apt-get update && $$SUDO env DEBIAN_FRONTEND=noninteractive apt-get install -y chromium chromium-driver; }

## Install everything and start the local stack (moto + Graph emulator + gateway), seeded with a demo user.
dev: install
	$(PY) -m local.stack

## Install everything and run the whole test suite (unit, service, e2e, template checks, ruff).
test: install install-sam browser-deps
	SAM_BIN=$(abspath $(SAMVENV))/bin/sam $(PY) -m pytest -q

## Get a Microsoft or Google refresh token in your browser (http://localhost:3000; credentials in .env)
oauth-helper: install
	$(PY) -m oauth_helper $(ARGS)

## The quick loop: skip the slow suites.
test-fast: install
	$(PY) -m pytest -q -m "not slow"

## Check the code with ruff (lint and format), as CI does.
lint: install
	$(VENV)/bin/ruff check . && $(VENV)/bin/ruff format --check .

## Type-check the production code with mypy (the packages are listed in pyproject.toml), as CI does.
typecheck: install
	$(VENV)/bin/mypy

## Fix what ruff can fix and format the code.
format: install
	$(VENV)/bin/ruff check --fix . && $(VENV)/bin/ruff format .

## Validate template.yaml with `sam validate --lint` and cfn-lint.
validate: install install-sam
	$(SAMVENV)/bin/sam validate --lint && $(VENV)/bin/cfn-lint template.yaml

## Build the deployable artifacts without containers (.aws-sam/build, what `sam deploy` picks up).
## pip fetches arm64 wheels for the layer. The python3.12 builder must be on PATH; PY312 is the
## same interpreter the venvs are made from.
## make sam-build [BUILD_DIR=/tmp/build]  (default .aws-sam/build, what `sam deploy` picks up)
sam-build: install-sam
	PATH="$(dir $(PY312)):$$PATH" $(SAMVENV)/bin/sam build --template template.yaml \
	  $(if $(BUILD_DIR),--build-dir $(BUILD_DIR))

## Docker-free stand-in for `sam local invoke`: make invoke FN=<LogicalId> [EVENT=events/<file>.json]
invoke: install
	$(PY) -m local.invoke $(FN) $(if $(EVENT),-e $(EVENT))

## Regenerate openapi.json (the OpenAPI 3.1 document) from the models and calbot/openapi.py's table
openapi: install
	PYTHONPATH=layers/core $(PY) -m calbot.openapi openapi.json

## Regenerate events/ from template.yaml
events: install
	$(PY) -m local.gen_events

## Admin CLI against the running local stack, e.g. make admin ARGS="create-user --with-key"
## (STATE_DIR=<dir> for a stack started with --state-dir; default .local)
admin: install
	@stack_env="$$($(PY) -m local.env $(STATE_DIR))" && eval "$$stack_env" && \
	  PYTHONPATH=layers/core $(PY) -m calbot.admin $(ARGS)

BENCH_OUT := .bench
## Run every bench/ script and assemble bench/REPORT.md (~15 minutes; never asserts on timings).
## Each script prints its figures and writes JSON to .bench/; the report adds the machine it ran on.
bench: install
	@rm -rf $(BENCH_OUT) && mkdir -p $(BENCH_OUT)
	$(PY) bench/cold_start.py --repeat 5 --json-out $(BENCH_OUT)/cold_start.json
	$(PY) bench/sync.py --json-out $(BENCH_OUT)/sync.json
	$(PY) bench/auto_schedule.py --users 100 --invite-body --json-out $(BENCH_OUT)/auto_schedule.json
	$(PY) bench/notify_latency.py --json-out $(BENCH_OUT)/notify_latency.json
	$(PY) bench/notify_latency.py --burst --accounts 500 --timeout 300 --json-out $(BENCH_OUT)/notify_burst.json
	$(PY) bench/renewal.py --json-out $(BENCH_OUT)/renewal.json
	$(PY) bench/events_many.py --json-out $(BENCH_OUT)/events_many.json
	$(PY) bench/read_latency.py --json-out $(BENCH_OUT)/read_latency.json
	$(PY) bench/forged_webhook.py --json-out $(BENCH_OUT)/forged_webhook.json
	$(PY) bench/webhooks.py --json-out $(BENCH_OUT)/webhooks.json
	$(PY) bench/credentials.py --json-out $(BENCH_OUT)/credentials.json
	$(PY) bench/launch.py --bots 2000 --json-out $(BENCH_OUT)/launch.json
	$(PY) bench/day.py --meetings 7 --credential-backend dynamodb --night-jobs-from $(BENCH_OUT) --json-out $(BENCH_OUT)/day.json
	$(PY) bench/report.py $(BENCH_OUT) -o bench/REPORT.md

## Remove the virtualenvs, the local stack's state and the caches.
clean:
	rm -rf $(VENV) $(SAMVENV) .local .pytest_cache .ruff_cache .aws-sam
