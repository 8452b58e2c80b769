# syntax=docker/dockerfile:1
# stampede-operator image: a virtualenv built in one stage, copied alone into a clean one.
#   docker build -t ghcr.io/aurum/stampede-operator:0.1.0 .
# Pin the base image by digest for reproducible builds (docs/security.md, "Supply chain"):
#   docker build --build-arg PYTHON_IMAGE=python:3.11-slim@sha256:<digest> -t ... .
# Both stages use it, so the venv runs on the interpreter it was built with.
ARG PYTHON_IMAGE=python:3.11-slim

FROM ${PYTHON_IMAGE} AS builder
ENV PIP_NO_CACHE_DIR=1 \
    PIP_DISABLE_PIP_VERSION_CHECK=1 \
    PYTHONDONTWRITEBYTECODE=1
RUN python -m venv /opt/venv
WORKDIR /src
# Every dependency at the version of requirements.lock, checked against its hashes (`make lock`
# regenerates it from pyproject.toml). Build dependencies (setuptools, wheel) come from it too.
COPY requirements.lock ./
RUN /opt/venv/bin/pip install --require-hashes --no-deps -r requirements.lock
# Only what the package build needs (.dockerignore keeps the rest out of the context).
COPY pyproject.toml README.md ./
COPY operator ./operator
# The package itself: no index, no further dependency, built with the locked setuptools. Then pip,
# setuptools and wheel leave the venv: the final image installs nothing, and carries no installer.
RUN /opt/venv/bin/pip install --no-deps --no-build-isolation --no-index . \
 && /opt/venv/bin/pip check \
 && /opt/venv/bin/python -m compileall -q /opt/venv/lib \
 && /opt/venv/bin/pip uninstall --yes pip setuptools wheel \
 && /opt/venv/bin/stampede --version

FROM ${PYTHON_IMAGE}
LABEL org.opencontainers.image.title="stampede-operator" \
      org.opencontainers.image.description="Detects cache stampedes from Prometheus and runs the mitigation runbook (StampedePolicy)" \
      org.opencontainers.image.licenses="Apache-2.0"
ENV PATH=/opt/venv/bin:$PATH \
    PYTHONDONTWRITEBYTECODE=1 \
    PYTHONUNBUFFERED=1
# The venv only: no compiler, no pip cache, no sources.
COPY --from=builder /opt/venv /opt/venv
# Numeric so that Kubernetes' runAsNonRoot can verify it without /etc/passwd.
USER 10001:10001
# 9102: /metrics; 8080: kopf's /healthz when run with --liveness=http://0.0.0.0:8080/healthz
EXPOSE 9102 8080
ENTRYPOINT ["/opt/venv/bin/stampede", "run"]
CMD ["-A"]
