# stampede-operator: every target a user or CI needs. `make test` works on a fresh machine:
# it creates ./.venv, installs the package with its test extras, installs Debian's prometheus
# when it is missing, then lints and runs the whole suite.
SHELL := /bin/bash
PY ?= python3
VENV := .venv
BIN := $(VENV)/bin
STAMP := $(VENV)/.installed
PYTEST_ARGS ?=
# The suite mostly waits (real operator processes, real Prometheus, polls): two workers halve its wall
# time on two cores. A whole file goes to one worker, so a file's module-scoped stack stays shared.
# TEST_WORKERS=0 runs it in one process.
TEST_WORKERS ?= 2
XDIST := $(if $(filter 0,$(TEST_WORKERS)),,-n $(TEST_WORKERS) --dist loadfile)

.PHONY: install test lint unit mutate crds verify-crds demo run bench deploy deploy-namespaced prometheus clean

$(STAMP): pyproject.toml
	test -x $(BIN)/python || $(PY) -m venv $(VENV)
	$(BIN)/python -m pip install --quiet --upgrade pip
	$(BIN)/python -m pip install --quiet -e '.[test,report]'
	touch $(STAMP)

install: $(STAMP)

# Debian's prometheus (2.42) is a real server used by the tests and the demo; they start their own on a
# free port. Debian's package would also start and enable a system service on :9090: a policy-rc.d that
# refuses every start keeps it down during the install (only when none exists already), then the unit we
# just installed is disabled. Nothing is killed: a Prometheus the user runs is none of our business.
PROMETHEUS_BIN ?= prometheus
POLICY_RC_D ?= /usr/sbin/policy-rc.d
prometheus:
	@command -v $(PROMETHEUS_BIN) >/dev/null 2>&1 || { \
	  echo "installing Debian's prometheus (its system service is kept from starting)"; \
	  SUDO=$$( [ "$$(id -u)" = 0 ] || echo sudo ); \
	  BLOCKED=; \
	  if [ ! -e $(POLICY_RC_D) ]; then \
	    printf '#!/bin/sh\n# written by make prometheus (stampede-operator) for the install only\nexit 101\n' \
	      | $$SUDO tee $(POLICY_RC_D) >/dev/null && $$SUDO chmod 755 $(POLICY_RC_D) && BLOCKED=1; \
	  fi; \
	  $$SUDO apt-get update -qq && \
	  DEBIAN_FRONTEND=noninteractive $$SUDO apt-get install -y -qq --no-install-recommends prometheus >/dev/null; \
	  rc=$$?; \
	  if [ -n "$$BLOCKED" ]; then $$SUDO rm -f $(POLICY_RC_D); fi; \
	  if [ $$rc = 0 ]; then $$SUDO systemctl disable --now prometheus.service >/dev/null 2>&1 || true; fi; \
	  exit $$rc; }

lint: install
	$(BIN)/ruff check operator tests bench deploy demo
	$(BIN)/ruff format --check operator tests bench deploy demo
	$(BIN)/mypy
	$(BIN)/lint-imports
	$(MAKE) --no-print-directory verify-crds
	$(BIN)/stampede lint $$(grep -l '^kind: StampedePolicy$$' examples/*.yaml)

test: install prometheus lint
	$(BIN)/python -m pytest -q $(XDIST) $(PYTEST_ARGS)

unit: install
	$(BIN)/python -m pytest -q tests/unit $(PYTEST_ARGS)

# Plurals of the generated CRDs: `stampede crd PLURAL` prints crds/PLURAL.stampede.aurum.io.yaml.
CRDS := stampedepolicies stampedeincidents stampedepolicytemplates clusterstampedepolicytemplates

# Mutation testing (cosmic-ray, pinned in the `mutation` extra) of the engine against tests/unit, in a
# copy under .mutate/; MUTATE=api or MUTATE=all widens it. Slow (one unit run per mutant), not in `make test`.
mutate: install
	$(BIN)/python -m pip install --quiet -e '.[test,mutation]'
	MUTATE=$(or $(MUTATE),engine) tests/mutation/run.sh

crds: install
	@for crd in $(CRDS); do $(BIN)/stampede crd $$crd > crds/$$crd.stampede.aurum.io.yaml || exit 1; done
	./deploy/sync-crds.sh

verify-crds: install
	@for crd in $(CRDS); do \
	  $(BIN)/stampede crd $$crd | diff -u crds/$$crd.stampede.aurum.io.yaml - \
	    || { echo "crds/ is stale: run 'make crds' and commit the result"; exit 1; }; \
	  cmp -s crds/$$crd.stampede.aurum.io.yaml deploy/base/crds/$$crd.stampede.aurum.io.yaml \
	    || { echo "deploy/base/crds is stale: run 'make crds' and commit the result"; exit 1; }; \
	done

demo: install prometheus
	$(BIN)/python -m demo

run: install
	$(BIN)/stampede run --standalone -A

bench: install prometheus
	$(BIN)/python bench/run.py

# requirements.lock: the image's runtime dependencies (and setuptools/wheel to build it) pinned with
# hashes; the Dockerfile installs it with --require-hashes. Run after changing [project] dependencies.
.PHONY: lock
lock: install
	$(BIN)/python -m pip install --quiet 'pip-tools>=7.4,<8'
	$(BIN)/pip-compile --generate-hashes --allow-unsafe --all-build-deps --strip-extras \
	  --no-emit-index-url --no-emit-find-links --quiet --output-file requirements.lock pyproject.toml

deploy: install
	$(BIN)/kubectl apply -k deploy/overlays/cluster

deploy-namespaced: install
	$(BIN)/kubectl apply -k deploy/overlays/namespaced

clean:
	rm -rf $(VENV) .pytest_cache .mypy_cache .ruff_cache .hypothesis .mutate
