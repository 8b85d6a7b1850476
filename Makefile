# One entry point for people and CI. Every target sets up what it needs (a .venv, DAGSTER_HOME).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
export DAGSTER_HOME := $(CURDIR)/var/dagster
INSTANCE := $(DAGSTER_HOME)/dagster.yaml

.PHONY: install demo dev test lint format profile-check clean

install: $(STAMP)

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q --upgrade pip
	$(PY) -m pip install -q -e '.[dev]'
	@touch $@

$(INSTANCE): dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Fails in a second on a bad GPU_ANALYSIS_PROFILE, before any install.
profile-check:
	@$(PYTHON) -m gpu_analysis.profile

demo: profile-check $(STAMP) $(INSTANCE)
	$(PY) -m gpu_analysis.demo

dev: profile-check $(STAMP) $(INSTANCE)
	$(VENV)/bin/dagster dev -w workspace.yaml -h 127.0.0.1 -p 3000

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest

clean:
	rm -rf var .pytest_cache .ruff_cache
