# tuneloop — `make help` lists the targets. Everything runs from the repo's .venv, which `make setup`
# creates with uv; package and build caches live outside the repo (~/.cache/uv, ~/.cache/tuneloop).
SHELL := /bin/bash
.DEFAULT_GOAL := help

PYTHON ?= python3
VENV ?= .venv
PY := $(VENV)/bin/python
KUBE_VERSION ?= 1.33.13
PYTEST_ARGS ?=
# pytest exits 5 when a selection is legitimately empty; treat that as success for sub-suites.
pytest_ok5 = $(PY) -m pytest $(1) $(PYTEST_ARGS) || { rc=$$?; [ $$rc -eq 5 ] && echo "(no tests selected)" || exit $$rc; }

export MLFLOW_DISABLE_TELEMETRY := true
export RAY_USAGE_STATS_ENABLED := 0
export KUBE_VERSION

.PHONY: help setup kube-apiserver helm argocd-health crds docs control-plane lint test test-unit test-api test-e2e bench bench-train bench-train-gpu bench-operator bench-serve bench-monitor bench-retrain demo base-model chart clean

help: ## List the targets
	@grep -hE '^[a-zA-Z_-]+:.*?## ' $(MAKEFILE_LIST) | awk 'BEGIN {FS = ":.*?## "}; {printf "  \033[36m%-16s\033[0m %s\n", $$1, $$2}'

setup: $(VENV)/.installed $(VENV)/.compiled ## Create .venv and install tuneloop with its dev tools (idempotent)

# Bytecode is compiled at install: where PYTHONDONTWRITEBYTECODE is set (as on our machines) nothing else
# writes it, and every process — the operator, each Ray job driver and Train worker, each test's helper —
# would compile torch, transformers, peft and ray from source again on import (torch + transformers + peft
# took 17.9 s to import instead of 6.4 s). uv compiles what it installs; compileall catches, once, a venv made
# before this rule (third-party files that are not valid Python 3 fail to compile, and are left as they are).
$(VENV)/.installed: pyproject.toml constraints.txt
	@$(PYTHON) -m uv --version >/dev/null 2>&1 || $(PYTHON) -m pip install --quiet --disable-pip-version-check uv
	$(PYTHON) -m uv venv --allow-existing --python $(PYTHON) $(VENV)
	$(PYTHON) -m uv pip install --python $(PY) --compile-bytecode -e '.[dev]' -c constraints.txt
	@touch $@

$(VENV)/.compiled: | $(VENV)/.installed
	@echo "compiling the venv's bytecode once"
	@$(PY) -m compileall -q -j 0 $$($(PY) -c 'import sysconfig; print(sysconfig.get_paths()["purelib"])') >/dev/null 2>&1 || true
	@touch $@

# demo and test install their prerequisites side by side (a sub-make with -j): on a cold machine the venv
# install waits on the network and the disk while the Go builds use the CPUs; each is a no-op once cached.
demo: ## The whole loop on this machine with live progress and a summary (ARGS=--keep, ARGS=--cluster=current)
	@$(MAKE) --no-print-directory -j2 setup kube-apiserver
	$(PY) -m tuneloop.devenv.demo $(ARGS)

base-model: setup ## Pre-train the small local base model once (cached in ~/.cache/tuneloop/base-model)
	$(PY) -m tuneloop.devenv.basemodel

kube-apiserver: ## Build kube-apiserver v$(KUBE_VERSION) from Go modules once (cached in ~/.cache/tuneloop)
	@bash hack/build-kube-apiserver.sh >/dev/null

promtool: ## Fetch promtool from the pinned Debian prometheus package once (cached in ~/.cache/tuneloop; the rules tests do this too)
	@bash hack/get-promtool.sh

crds: setup ## Regenerate crds/*.yaml from the API models (and what is generated from them: make chart, make docs)
	$(PY) -m tuneloop.api.crdgen crds
	$(PY) -m tuneloop.devenv.chart
	$(PY) -m tuneloop.devenv.docs

docs: setup ## Regenerate docs/reference (CRD fields and operator settings) from the models
	$(PY) -m tuneloop.devenv.docs

chart: setup ## Regenerate the chart's generated files (CRD templates, rules, values schema) and examples/gitops/argocd-cm.yaml
	$(PY) -m tuneloop.devenv.chart

helm: ## Build helm from the Go module proxy once (pinned in hack/build-helm.sh; cached in ~/.cache/tuneloop)
	@bash hack/build-helm.sh >/dev/null

argocd-health: ## Build the Argo CD health-check sandbox (gopher-lua) once (cached in ~/.cache/tuneloop)
	@bash hack/build-argocd-health.sh >/dev/null

control-plane: setup kube-apiserver ## Run a local etcd + kube-apiserver with the CRDs until Ctrl-C
	$(PY) -m tuneloop.devenv.controlplane

lint: setup ## ruff, import-linter (decide/act layering) and mypy
	$(VENV)/bin/ruff check .
	$(VENV)/bin/lint-imports
	$(VENV)/bin/mypy operator/src/tuneloop/api

test: ## Install what is needed and run every suite (unit, real apiserver, e2e)
	@$(MAKE) --no-print-directory -j4 setup kube-apiserver helm argocd-health
	$(PY) -m pytest --durations=40 $(PYTEST_ARGS)

test-unit: setup helm argocd-health ## Unit tests only (no services; helm and the Lua sandbox are built once)
	$(call pytest_ok5,tests/unit)

test-api: setup kube-apiserver helm ## Tests against the real kube-apiserver + etcd
	$(call pytest_ok5,tests/api)

test-e2e: setup kube-apiserver ## Whole-loop stories with real Ray, MLflow and training
	$(call pytest_ok5,tests/e2e)

bench: bench-train bench-operator bench-serve bench-monitor ## All benchmarks (JSON in bench/results/)

bench-train: setup ## Ray Train job vs a plain PEFT loop: tokens/s, start-up, peak memory
	$(PY) bench/bench_train.py --out bench/results/train.json

bench-train-gpu: setup ## GPU machines: 1B Llama, LoRA/QLoRA/full at bf16, Ray vs plain: tokens/s, peak GPU memory, MFU
	$(PY) bench/bench_train_gpu.py --out bench/results/train-gpu.json

bench-serve: setup ## Ray Serve runtime: requests/s and p50/p99 with traffic logging on and off, drops under a burst
	$(PY) bench/bench_serve.py --out bench/results/serve.json

bench-monitor: setup ## A monitor check at 10k and 100k logged rows vs a bare Evidently call on the same frames
	$(PY) bench/bench_monitor.py --out bench/results/monitor.json

bench-retrain: setup ## The demo's retrain in one process over seeds: how Q2 (recovery on drifted invoices) spreads
	$(PY) bench/retrain_spread.py --out bench/results/retrain-spread.json

bench-operator: setup kube-apiserver ## Apply 100 and 500 FineTunes, alone and beside 50 ModelDeployments + 20 monitors: apply->RayJob latency, CPU, RSS; idle cost
	$(PY) bench/bench_operator.py --mixed --idle

clean: ## Remove build outputs (keeps .venv and caches)
	rm -rf bench/results .pytest_cache .mypy_cache .ruff_cache
