# One entry point for people and CI. Every target sets up what it needs (a .venv, DAGSTER_HOME).
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
STAMP := $(VENV)/.installed
# The exact versions the suite passed with; `make lock` refreshes them.
CONSTRAINTS := constraints.txt
export DAGSTER_HOME := $(CURDIR)/var/dagster
INSTANCE := $(DAGSTER_HOME)/dagster.yaml

.PHONY: install lock demo dev check-defs test lint format profile-check clean train-model image bootstrap

install: $(STAMP)

$(STAMP): pyproject.toml $(CONSTRAINTS)
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PY) -m pip install -q -c $(CONSTRAINTS) --upgrade pip
	$(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[dev]'
	@touch $@

# New pins: the newest versions pyproject.toml allows, resolved in a throwaway venv. Run
# `make test` afterwards and commit constraints.txt only if it passes. setuptools is left out:
# the venv's own copy only bootstraps, and a pin on it blocks the `train` extra's torch.
LOCK_VENV := var/lock-venv
lock:
	rm -rf $(LOCK_VENV) && $(PYTHON) -m venv $(LOCK_VENV)
	$(LOCK_VENV)/bin/python -m pip install -q --upgrade pip
	$(LOCK_VENV)/bin/python -m pip install -q -e '.[dev]'
	{ echo "# The exact versions the whole suite passed with (make test, .ci/run). Refresh: make lock."; \
	  $(LOCK_VENV)/bin/python -m pip freeze --all --exclude-editable | grep -v '^gpu-analysis\|^setuptools=='; \
	} > $(CONSTRAINTS)
	rm -rf $(LOCK_VENV)
	@echo "constraints.txt refreshed: now run make test"

$(INSTANCE): dagster.yaml
	@mkdir -p $(DAGSTER_HOME)
	cp dagster.yaml $@

# Fails in a second on a bad GPU_ANALYSIS_PROFILE, before any install.
profile-check:
	@$(PYTHON) -m gpu_analysis.profile

demo: profile-check $(STAMP) $(INSTANCE)
	$(PY) -m video_assets.demo

# The local profile gets a local AWS (moto + our extensions, python -m devtools.local_aws)
# unless AWS_ENDPOINT_URL already points somewhere, so "Materialize all" on the cluster assets
# shows real plans and results. Its keys are dummies: the emulator accepts anything. The
# emulated EKS cluster has no API server, so the in-cluster units get no kubeconfig either
# (LOCAL_KUBECONFIG=<file> gives them one): never your current kubectl context by accident.
LOCAL_AWS_PORT ?= 5050
# DEV_CLI=dg runs `dg dev` (Dagster 1.13's CLI, configured in pyproject.toml) instead of
# `dagster dev -w workspace.yaml`; both load the code location gpu_analysis.definitions.
DEV_CLI ?= dagster
DEV_UI = $(if $(filter dg,$(DEV_CLI)),$(VENV)/bin/dg dev,$(VENV)/bin/dagster dev -w workspace.yaml)
dev: profile-check $(STAMP) $(INSTANCE)
	$(PY) -m video_assets.pools
	@if [ "$${GPU_ANALYSIS_PROFILE:-local}" = local ] && [ -z "$${AWS_ENDPOINT_URL:-}" ]; then \
	  $(PY) -m devtools.local_aws -H 127.0.0.1 -p $(LOCAL_AWS_PORT) & local_aws=$$!; \
	  trap 'kill $$local_aws 2>/dev/null' EXIT INT TERM; \
	  export AWS_ENDPOINT_URL=http://127.0.0.1:$(LOCAL_AWS_PORT); \
	  export AWS_ACCESS_KEY_ID=local-moto AWS_SECRET_ACCESS_KEY=local-moto; \
	  unset AWS_PROFILE AWS_SESSION_TOKEN; \
	  export KUBECONFIG=$${LOCAL_KUBECONFIG:-/dev/null}; \
	fi; \
	$(DEV_UI) --host 127.0.0.1 --port 3000

# `dg` (Dagster 1.13's CLI) loads the same composition root as `dagster dev -w workspace.yaml`.
check-defs: $(STAMP) $(INSTANCE)
	$(VENV)/bin/dg check defs

lint: $(STAMP)
	$(VENV)/bin/ruff check .
	$(VENV)/bin/ruff format --check .

format: $(STAMP)
	$(VENV)/bin/ruff format .
	$(VENV)/bin/ruff check --fix .

test: lint
	$(PY) -m pytest

# The built-in model, from scratch on the CPU: render a randomized training set to /tmp, train
# (fixed seeds, a fixed number of steps), then render the fine-tune set (crowded scenes from
# low side cameras, pitch-marking hard negatives) and fine-tune from those weights at a low
# learning rate, export gpu_analysis/engine/models/builtin.onnx and record its held-out evaluation
# beside it. Needs the `train` extra (torch); see docs/model.md.
TRAIN_DATA ?= /tmp/footnet-data
TRAIN_STEPS ?= 3500
FINETUNE_DATA ?= /tmp/footnet-ft
FINETUNE_STEPS ?= 1200
train-model: $(STAMP)
	@$(PY) -c 'import torch, onnx' 2>/dev/null || $(PY) -m pip install -q -c $(CONSTRAINTS) -e '.[train]'
	$(PY) -m training.data --out $(TRAIN_DATA) --clips 400
	$(PY) -m training.train --data $(TRAIN_DATA) --steps $(TRAIN_STEPS)
	$(PY) -m training.data --stage finetune --out $(FINETUNE_DATA) --clips 150 --first-seed 200000
	$(PY) -m training.train --data $(FINETUNE_DATA) --init /tmp/footnet.pt --steps $(FINETUNE_STEPS) \
		--lr 3e-4 --warmup 50 --hard-negatives 0.25 --seed 1 \
		--checkpoint /tmp/footnet-ft.pt --summary /tmp/footnet-ft-train.json
	$(PY) -m training.export --checkpoint /tmp/footnet-ft.pt --data-meta $(TRAIN_DATA)/meta.json \
		--finetune-summary /tmp/footnet-ft-train.json --finetune-data-meta $(FINETUNE_DATA)/meta.json
	$(PY) -m training.evaluate --sweep --write
	$(PY) -m training.evaluate --write
	$(PY) -m training.evaluate --looks --write

# The code-location/worker image (deploy/worker.Dockerfile), tagged with the image the profile
# names (IMAGE_PROFILE, staging by default): an immutable tag, refused by the profile if it is
# :latest or missing. Needs a Docker engine; pushing is `docker push <that tag>` after
# `aws ecr get-login-password | docker login` (docs/deploy.md).
IMAGE_PROFILE ?= staging
image:
	@command -v docker >/dev/null 2>&1 || { echo "error: make image needs Docker: no docker command on PATH here; build where a Docker engine runs (docs/deploy.md)" >&2; exit 2; }
	@docker info >/dev/null 2>&1 || { echo "error: make image needs a running Docker engine: 'docker info' gets no answer here (start Docker or set DOCKER_HOST)" >&2; exit 2; }
	@GPU_ANALYSIS_PROFILE=$(IMAGE_PROFILE) $(PYTHON) -m gpu_analysis.profile >/dev/null || exit 2
	@tag=$$(GPU_ANALYSIS_PROFILE=$(IMAGE_PROFILE) $(PYTHON) -c 'from gpu_analysis.profile import load_profile; print(load_profile().image)') || exit 2; \
	  echo "building $$tag"; \
	  docker build -f deploy/worker.Dockerfile -t "$$tag" . && echo "built $$tag; push it with: docker push $$tag"

# The first apply and the teardown through the private EKS endpoint: an SSM port-forward via the
# tunnel instance, a kubeconfig on 127.0.0.1 (var/bootstrap/), then infra_apply / infra_teardown.
# BOOTSTRAP=apply | teardown | tunnel (hold the tunnel for kubectl); BOOTSTRAP_ARGS=--dry-run.
BOOTSTRAP ?= apply
bootstrap: $(STAMP) $(INSTANCE)
	@GPU_ANALYSIS_PROFILE=$${GPU_ANALYSIS_PROFILE:-staging} $(PY) -m gpu_analysis.deploy.bootstrap $(BOOTSTRAP) $(BOOTSTRAP_ARGS)

clean:
	rm -rf var .pytest_cache .ruff_cache
