# stampede-operator: every target a user or CI needs. `make test` works on a fresh machine:
# it creates ./.venv, installs the package with its test extras, installs Debian's prometheus
# when it is missing, then lints and runs the whole suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=

.PHONY: install test lint unit mutate crds verify-crds demo run bench deploy deploy-namespaced prometheus clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test]'
	touch $(STAMP)

install: $(STAMP)

# Debian's prometheus (2.42) is a real server used by the tests and the demo.
prometheus:
	@command -v prometheus >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  $$SUDO systemctl stop prometheus >/dev/null 2>&1 || true; \
	  $$SUDO pkill -x prometheus >/dev/null 2>&1 || true; }

lint: install
	$(BIN)/ruff check operator tests bench deploy demo
	$(BIN)/ruff format --check operator tests bench deploy demo
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory verify-crds
	$(BIN)/stampede lint examples/*.yaml

test: install prometheus lint
	$(BIN)/python -m pytest -q $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# Mutation testing (cosmic-ray, pinned in the `mutation` extra) of the engine against tests/unit, in a
# copy under .mutate/; MUTATE=api or MUTATE=all widens it. Slow (one unit run per mutant), not in `make test`.
mutate: install
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	MUTATE=$(or $(MUTATE),engine) tests/mutation/run.sh

crds: install
	$(BIN)/stampede crd > crds/stampedepolicies.stampede.aurum.io.yaml
	./deploy/sync-crds.sh

verify-crds: install
	@$(BIN)/stampede crd | diff -u crds/stampedepolicies.stampede.aurum.io.yaml - \
	  || { echo "crds/ is stale: run 'make crds' and commit the result"; exit 1; }
	@cmp -s crds/stampedepolicies.stampede.aurum.io.yaml deploy/base/crds/stampedepolicies.stampede.aurum.io.yaml \
	  || { echo "deploy/base/crds is stale: run 'make crds' and commit the result"; exit 1; }

demo: install prometheus
	$(BIN)/python -m demo

run: install
	$(BIN)/stampede run --standalone -A

bench: install prometheus
	$(BIN)/python bench/run.py

deploy: install
	$(BIN)/kubectl apply -k deploy/overlays/cluster

deploy-namespaced: install
	$(BIN)/kubectl apply -k deploy/overlays/namespaced

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .mutate
