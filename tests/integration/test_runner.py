"""The poll loop against the emulated API server, with readings handed in: order of its steps, not timing.

Each tick is driven with an explicit `now`, so a whole incident runs in well under a second; the
Prometheus source is a stand-in that records whether it was asked, because what is tested here is
when the runner reads, writes and reports, not how a query is made (tests/integration/test_prometheus_source.py).
"""

from __future__ import annotations

import pathlib
from collections.abc import Iterator, Mapping
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest

from stampede.actuators.kube import JSON, Kube
from stampede.actuators.policies import FINALIZER, Policies
from stampede.actuators.targets import Actuators
from stampede.handlers import metrics
from stampede.handlers.config import OperatorConfig
from stampede.handlers.runner import PolicyRunner, Shared
from stampede.sources.prometheus import Endpoint, Reading
from tests.harness.server import HarnessThread
from tests.support.kube import harness_with_namespace, make_kube

pytestmark = pytest.mark.timeout(60)

NS = "runner"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
SPEC: JSON = {
    "pollInterval": "15s",
    "prometheus": {"url": "http://prometheus.invalid:9090"},
    "signals": [{"name": "load", "query": "load"}],
    "severities": [{"level": "P2", "any": ["load > 10"], "for": "30s"}],
    "recovery": {"all": ["load < 5"], "for": "30s"},
    "phases": [
        {
            "name": "first",
            "after": "0s",
            "actions": [{"name": "flag", "configMap": {"name": "cfg", "data": {"F": "on"}}}],
        }
    ],
    "rollback": {"stepDelay": "0s"},
}


class Source:
    """Hands out the load the test sets; counts how often it was asked."""

    def __init__(self) -> None:
        self.load = 1.0
        self.reads = 0

    async def read(
        self,
        endpoint: Endpoint,
        queries: Mapping[str, str],
        *,
        timeout: float,  # noqa: ASYNC109 (the signature of PrometheusSource.read)
        round_key: object,
    ) -> dict[str, Reading]:
        self.reads += 1
        return {name: Reading(self.load) for name in queries}

    def close(self) -> None:
        pass


class WatchedPolicies(Policies):
    """Records, at each status write and finalizer release, what the metrics said at that moment."""

    def __init__(self, kube: Kube, *, namespace: str, name: str) -> None:
        super().__init__(kube)
        self.labels = (namespace, name)
        self.seen: list[tuple[str, str, float]] = []

    def _active(self) -> float:
        return metrics.INCIDENT_ACTIVE.labels(*self.labels)._value.get()

    def write_status(self, namespace: str, name: str, *, old: JSON, new: JSON) -> JSON | None:
        self.seen.append(("status", str(new.get("state")), self._active()))
        return super().write_status(namespace, name, old=old, new=new)

    def set_finalizer(self, namespace: str, name: str, *, present: bool) -> None:
        if not present:
            self.seen.append(("release", "", self._active()))
        super().set_finalizer(namespace, name, present=present)


@pytest.fixture
def h(tmp_path: pathlib.Path) -> Iterator[HarnessThread]:
    with harness_with_namespace(tmp_path, NS) as harness:
        harness.apply(
            [{"apiVersion": "v1", "kind": "ConfigMap", "metadata": {"name": "cfg", "namespace": NS}, "data": {}}]
        )
        yield harness


def runner_for(h: HarnessThread, name: str, source: Source) -> tuple[PolicyRunner, WatchedPolicies]:
    kube = make_kube(h)
    h.apply(
        [
            {
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": name, "namespace": NS},
                "spec": SPEC,
            }
        ]
    )
    policies = WatchedPolicies(kube, namespace=NS, name=name)
    emitted: list[tuple[str, str]] = []

    def emit(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        emitted.append((reason, message))

    shared = Shared(
        config=OperatorConfig(),
        actuators=Actuators(kube, max_replicas=10),
        policies=policies,
        source=source,  # type: ignore[arg-type]
        emit=emit,
    )
    return PolicyRunner(shared=shared, namespace=NS, name=name), policies


async def test_a_policy_being_deleted_is_not_polled_at_all(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "leaving", source)
    body = policies.read(NS, "leaving")
    body["metadata"]["deletionTimestamp"] = "2025-01-01T12:00:00Z"

    await runner.tick(body, now=T0)

    assert source.reads == 0, "Prometheus was queried for a policy being deleted"
    assert policies.seen == []


async def test_metrics_are_updated_before_the_status_is_written_and_the_finalizer_released(h: HarnessThread) -> None:
    source = Source()
    runner, policies = runner_for(h, "metered", source)
    source.load = 50.0
    t = T0
    states = []
    for _ in range(12):  # breach long enough to open, then calm long enough to recover and close
        if t >= T0 + timedelta(seconds=60):
            source.load = 1.0
        await runner.tick(policies.read(NS, "metered"), now=t)
        states.append(runner.current.state if runner.current else None)
        t += timedelta(seconds=15)

    assert "Incident" in states and states[-1] == "Idle", states
    assert FINALIZER not in (policies.read(NS, "metered")["metadata"].get("finalizers") or [])
    assert ("release", "", 0.0) in policies.seen
    for what, state, active in policies.seen:
        if what == "status":
            assert active == (0.0 if state == "Idle" else 1.0), policies.seen
        else:
            assert active == 0.0, "the finalizer went while the metrics still showed an incident"


async def test_credentials_for_the_operators_default_http_prometheus_make_the_spec_invalid_and_nothing_is_read(
    h: HarnessThread,
) -> None:
    source = Source()
    runner, policies = runner_for(h, "cleartext", source)
    runner.shared.config = OperatorConfig(prometheus_url="http://prometheus.default:9090")
    body = policies.read(NS, "cleartext")
    body["spec"] = {**SPEC, "prometheus": {"bearerTokenSecretRef": {"name": "token", "key": "token"}}}

    await runner.tick(body, now=T0)

    ready = next(c for c in policies.read(NS, "cleartext")["status"]["conditions"] if c["type"] == "Ready")
    assert (ready["status"], ready["reason"]) == ("False", "InvalidSpec")
    assert "spec.prometheus.bearerTokenSecretRef: credentials are sent over https only" in ready["message"]
    assert "http://prometheus.default:9090" in ready["message"]
    assert source.reads == 0
