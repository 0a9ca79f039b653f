# finetune-operator: every developer and CI entry point.
#   make demo    set up .venv and fine-tune a tiny model on this CPU
#   make test    set up .venv, helm/kubectl, prometheus and an MLflow server, run every test
#   make cluster-up    start the local Kubernetes cluster (builds what it lacks; docs/cluster.md)
#   make e2e           the real-cluster tests only (after make cluster-up)
#   make cluster-down  stop the local cluster and remove its state
SHELL := /bin/bash
PYTHON ?= python3
VENV := .venv
PY := $(VENV)/bin/python
PIP := $(PY) -m pip
STAMP := $(VENV)/.installed
# torch is pinned: an unpinned torch pulls a multi-GB CUDA build.
TORCH_VERSION := 2.13.0

# Caches stay inside the project, never in the home directory.
export HF_HOME := $(CURDIR)/.cache/huggingface
export TORCH_EXTENSIONS_DIR := $(CURDIR)/.cache/torch_extensions
export HF_HUB_OFFLINE := 1
export HF_DATASETS_OFFLINE := 1
export TOKENIZERS_PARALLELISM := false
export DS_BUILD_OPS := 0
export PATH := $(CURDIR)/$(VENV)/bin:$(PATH)

.PHONY: help venv tools demo test test-fast test-reliability bench crd lint \
        cluster-up cluster-down cluster-images e2e kind-up kind-e2e kind-down kind-images clean

help:
	@grep -E '^#   make' Makefile | sed 's/^#   //'

$(STAMP): pyproject.toml
	@test -x $(PY) || $(PYTHON) -m venv $(VENV)
	$(PIP) install -q --upgrade pip
	$(PIP) install -q "torch==$(TORCH_VERSION)"
	$(PIP) install -q -e ".[operator,trainer,dev]"
	@touch $@

venv: $(STAMP)

tools: $(STAMP)
	@bash scripts/install-tools.sh $(VENV)
	@bash scripts/install-prometheus.sh
	@bash scripts/install-mlflow.sh $(VENV)

# The demo trains from scratch each time: `finetune run` would resume the finished run it kept.
demo: $(STAMP)
	rm -rf runs/tiny-chat
	$(VENV)/bin/finetune run examples/tiny-chat.yaml --local

test: tools
	$(PY) -m pytest -p no:cacheprovider $(PYTEST_ARGS)

test-fast: $(STAMP)
	$(PY) -m pytest -p no:cacheprovider -m "not slow and not reliability and not cluster" $(PYTEST_ARGS)

test-reliability: tools
	$(PY) -m pytest -p no:cacheprovider -m reliability $(PYTEST_ARGS)

bench: tools
	$(PY) -m bench

crd: $(STAMP)
	$(VENV)/bin/finetune crd > crds/finetunejob.yaml
	cp crds/finetunejob.yaml charts/finetune-operator/crds/finetunejob.yaml

lint: tools
	$(VENV)/bin/ruff check operator trainer_image tests bench

# The local cluster: processes on this machine (scripts/cluster/, docs/cluster.md). Needs root.
cluster-up: tools
	@bash scripts/cluster/up.sh
	@$(MAKE) --no-print-directory cluster-images

# The operator and CPU trainer images, built with Docker and imported into the cluster.
cluster-images:
	@bash scripts/cluster/images.sh build
	@bash scripts/cluster/images.sh import

cluster-down:
	@bash scripts/cluster/down.sh

e2e: tools
	$(PY) -m pytest -p no:cacheprovider -m cluster $(PYTEST_ARGS)

# The same end to end on kind, for a laptop with Docker and internet (docs/kind.md).
kind-up kind-e2e kind-down:
	@bash scripts/kind.sh $@

kind-images:
	@bash scripts/kind.sh images

clean:
	rm -rf $(VENV) .cache runs .pytest_cache
