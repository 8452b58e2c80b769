"""The KPI target gauges cost nothing for policies that never had an incident (most of them, at scale)."""

from __future__ import annotations

import pathlib
from collections.abc import Iterator
from datetime import timedelta

import pytest

from stampede.api.status import State
from stampede.handlers import metrics
from tests.harness.server import HarnessThread
from tests.integration.test_runner import NS, T0, Source, runner_for
from tests.support.kube import harness_with_namespace


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS, configmaps=["cfg"]) as harness:
        yield harness


def target(policy: str) -> float | None:
    labels = {"namespace": NS, "policy": policy, "kpi": "mttr"}
    return metrics.REGISTRY.get_sample_value("stampede_incident_kpi_target_seconds", labels)


async def test_kpi_targets_are_exported_from_a_policys_first_incident_and_not_before(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "kpi-targets", source)
    t = T0
    for _ in range(3):
        await runner.tick(policies.read(NS, "kpi-targets"), now=t)
        t += timedelta(seconds=15)
    assert target("kpi-targets") is None, "an idle policy exports KPI targets"
    source.load = 50.0
    for _ in range(6):
        await runner.tick(policies.read(NS, "kpi-targets"), now=t)
        t += timedelta(seconds=15)
        if runner.current is not None and runner.current.state != State.IDLE and target("kpi-targets"):
            break
    assert runner.current is not None and runner.current.state != State.IDLE
    assert target("kpi-targets") == 900
