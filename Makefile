# streamwatch developer tasks. `make help` lists them.
VENV ?= .venv
PY := $(VENV)/bin/python
PYTHON ?= python3

.DEFAULT_GOAL := help
.PHONY: help setup kafka alerting kustomize generate demo test lint unit integration broker clean

help: ## list the targets
	@grep -E '^[a-z-]+:.*## ' $(MAKEFILE_LIST) | awk -F':.*## ' '{printf "  %-12s %s\n", $$1, $$2}'

setup: $(VENV)/.installed ## create .venv and install streamwatch with its dev tools

$(VENV)/.installed: pyproject.toml
	$(PYTHON) -m venv $(VENV)
	$(PY) -m pip install --quiet --upgrade pip
	$(PY) -m pip install --quiet -e '.[dev]'
	touch $@

kafka: ## fetch the Kafka jars for the local broker with mvn (cached outside the repo)
	$(PYTHON) scripts/kafka_local.py fetch

alerting: ## install Prometheus and Alertmanager (Debian packages) for the alerting tests
	@if command -v promtool >/dev/null && command -v amtool >/dev/null \
	    && command -v prometheus-alertmanager >/dev/null; then exit 0; fi; \
	if [ "$$(id -u)" != 0 ]; then \
	  echo "install the Debian packages prometheus and prometheus-alertmanager (or run make alerting as root)"; \
	  exit 1; fi; \
	apt-get update -qq && DEBIAN_FRONTEND=noninteractive apt-get install -y -qq \
	  --no-install-recommends prometheus prometheus-alertmanager >/dev/null

TOOLS := $(HOME)/.cache/streamwatch/bin

kustomize: ## kustomize for the Kubernetes checks: kubectl's, else built with go into TOOLS
	@if command -v kubectl >/dev/null || command -v kustomize >/dev/null \
	    || [ -x $(TOOLS)/kustomize ]; then exit 0; fi; \
	GOBIN=$(TOOLS) go install sigs.k8s.io/kustomize/kustomize/v5@v5.5.0

generate: setup ## render the deploy files derived from others (make test checks they are current)
	$(PY) scripts/render_deploy.py

demo: setup ## set everything up and run the demo (no broker needed)
	$(VENV)/bin/streamwatch demo

lint: setup ## ruff (lint + format check) and mypy strict
	$(PY) -m ruff check .
	$(PY) -m ruff format --check .
	$(PY) -m mypy

unit: setup alerting kustomize ## the fast tests (no broker; promtool and amtool for the rule tests)
	$(PY) -m pytest -m "not integration"

test: setup kafka alerting kustomize lint ## set everything up and run the whole test suite
	$(PY) -m pytest

BROKER_DATA ?= $(HOME)/.cache/streamwatch/broker-data

broker: kafka ## run a local Kafka broker on 127.0.0.1:9092 until Ctrl+C (data kept in BROKER_DATA)
	$(PYTHON) scripts/kafka_local.py start --port 9092 --data-dir $(BROKER_DATA)

clean: ## remove the virtualenv and caches
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
