"""Harness self-tests use their own small CRD fixture instead of the generated repo CRD."""

from __future__ import annotations

import dataclasses
import pathlib

import pytest

# Imported rather than listed in `pytest_plugins`, which pytest forbids in non-root conftest files.
from .fixtures import k8s_harness, k8s_harness_thread  # noqa: F401
from .store import Strictness

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def harness_crds() -> list[pathlib.Path]:
    return [HERE / "fixtures" / "stampedepolicies.yaml"]


@pytest.fixture
def harness_strictness() -> Strictness:
    """Every rule, but status written at once (the store's instant simulation) instead of by the
    asynchronous rollout and HPA controllers: the storage-semantics tests here read status right
    after a write. The controllers have their own tests (test_controllers.py)."""
    return dataclasses.replace(Strictness.from_env(), rollout_controller=False, hpa_controller=False)


@pytest.fixture
async def api(k8s_harness):  # type: ignore[no-untyped-def]  # noqa: F811 (the fixture imported above)
    """An aiohttp session pointed at the in-loop harness."""
    import aiohttp

    async with aiohttp.ClientSession(k8s_harness.url) as session:
        yield session
