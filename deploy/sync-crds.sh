#!/bin/sh
# Copy the generated CRDs into the kustomize base.
#
# kustomize (and so `kubectl apply -k` and Argo CD) refuses files outside the kustomization's
# directory, so deploy/base cannot reference ../../crds/ directly. Run this after `make crds`;
# tests/deploy/test_manifests.py fails while the copy differs from crds/ by a single byte.
set -eu
cd "$(dirname "$0")/.."
for crd in stampedepolicies stampedeincidents; do
  cp "crds/$crd.stampede.aurum.io.yaml" "deploy/base/crds/$crd.stampede.aurum.io.yaml"
  echo "deploy/base/crds/$crd.stampede.aurum.io.yaml updated from crds/"
done
