"""Harness self-tests use their own small CRD fixture instead of the generated repo CRD."""

from __future__ import annotations

import pathlib

import pytest

# Imported rather than listed in `pytest_plugins`, which pytest forbids in non-root conftest files.
from .fixtures import k8s_harness, k8s_harness_thread  # noqa: F401

HERE = pathlib.Path(__file__).parent


@pytest.fixture
def harness_crds() -> list[pathlib.Path]:
    return [HERE / "fixtures" / "stampedepolicies.yaml"]


@pytest.fixture
async def api(k8s_harness):  # type: ignore[no-untyped-def]  # noqa: F811 (the fixture imported above)
    """An aiohttp session pointed at the in-loop harness."""
    import aiohttp

    async with aiohttp.ClientSession(k8s_harness.url) as session:
        yield session
