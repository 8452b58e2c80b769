"""Pytest fixtures that start the emulated API server for a test, async or threaded.

Other test packages opt in with `pytest_plugins = ['tests.harness.fixtures']` in their conftest.
The CRD directory defaults to the repo's `crds/`; override the `harness_crds` fixture to change it.
"""

from __future__ import annotations

import pathlib
from collections.abc import AsyncIterator, Iterator

import pytest

from .server import Harness, HarnessThread
from .store import Strictness

REPO_ROOT = pathlib.Path(__file__).resolve().parents[2]


@pytest.fixture
def harness_crds() -> list[pathlib.Path]:
    crds = REPO_ROOT / "crds"
    return [crds] if crds.is_dir() else []


@pytest.fixture
def harness_strictness() -> Strictness:
    """The real server's rules as the suite runs on them (Strictness.from_env: the defaults plus HARNESS_STRICT)."""
    return Strictness.from_env()


@pytest.fixture
async def k8s_harness(
    tmp_path: pathlib.Path, harness_crds: list[pathlib.Path], harness_strictness: Strictness
) -> AsyncIterator[Harness]:
    """An in-loop server; `k8s_harness.url`, `.kubeconfig`, `.store`, `.log`, `.faults`."""
    async with Harness(crds=harness_crds, kubeconfig=tmp_path / "kubeconfig", strictness=harness_strictness) as harness:
        yield harness


@pytest.fixture
def k8s_harness_thread(
    tmp_path: pathlib.Path, harness_crds: list[pathlib.Path], harness_strictness: Strictness
) -> Iterator[HarnessThread]:
    """A server on a background thread, for sync tests that drive subprocesses and sync clients."""
    with HarnessThread(crds=harness_crds, kubeconfig=tmp_path / "kubeconfig", strictness=harness_strictness) as harness:
        yield harness
