#!/bin/sh
# Copy the generated CRDs (StampedePolicy, StampedeIncident and the two template kinds) into the kustomize base.
#
# kustomize (and so `kubectl apply -k` and Argo CD) refuses files outside the kustomization's
# directory, so deploy/base cannot reference ../../crds/ directly. Run this after `make crds`;
# tests/deploy/test_manifests.py fails while the copy differs from crds/ by a single byte.
set -eu
cd "$(dirname "$0")/.."
for crd in crds/*.stampede.aurum.io.yaml; do
  cp "$crd" "deploy/base/$crd"
  echo "deploy/base/$crd updated from crds/"
done
