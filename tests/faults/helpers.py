"""Shared pieces of the fault-injection suite: one namespace + exporter label per test, snapshots, waits.

Every test works in its own copy of the demo cluster (`tests/e2e/policies.cluster_objects`) and its own
exporter label `case=<namespace>`, so the tests of one module can share one Stack (emulated API server,
real Prometheus, real `stampede run`) without seeing each other's signals or targets.
"""

from __future__ import annotations

import datetime as dt
from collections.abc import Iterable
from typing import Any

from kubernetes import client as k8s

from tests.e2e import policies
from tests.e2e.conftest import HEALTHY_HIT_RATE, condition, parse_time
from tests.e2e.conftest import Case as E2ECase
from tests.e2e.stack import Stack

__all__ = [
    "HEALTHY",
    "UNHEALTHY",
    "Case",
    "assert_phase_one_applied",
    "assert_restored",
    "condition",
    "parse_time",
    "phases",
    "utc",
]

HEALTHY = HEALTHY_HIT_RATE
UNHEALTHY = 0.2


def utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


class Case(E2ECase):
    """The e2e test case (its own copy of the demo cluster and exporter label), under an `f` prefix."""

    def __init__(self, stack: Stack, label: str, *, extra: Iterable[dict[str, Any]] = ()) -> None:
        super().__init__(stack, label, prefix="f", extra=extra)

    def jobs_labelled(self, label_selector: str | None = None) -> list[Any]:
        return list(k8s.BatchV1Api(self.stack.api).list_namespaced_job(self.ns, label_selector=label_selector).items)


def assert_restored(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every target exactly as before the incident (Jobs are compared separately: they are left to finish)."""
    before = {k: v for k, v in before.items() if k != "Jobs"}
    after = {k: v for k, v in after.items() if k != "Jobs"}
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == value, f"{key} not restored exactly: before {value}, after {after[key]}"


def assert_phase_one_applied(before: dict[str, Any], during: dict[str, Any]) -> None:
    """The targets of phase one (tests/e2e/policies.phase_one) carry its changes in the middle of an incident.

    A restore check alone passes for an operator that never changed anything; this checks the change in
    between on the targets themselves, not through status. Objects it created count too: whatever the
    snapshot holds beyond the changed ones must be as before, and nothing may be missing.
    """
    api_config = f"ConfigMap/{policies.API_CONFIG}"
    api = f"Deployment/{policies.API}"
    assert during[api_config]["data"]["AURUM_API_CIRCUIT_BREAKER_ENABLED"] == "true", during[api_config]
    assert during[api_config]["data"][policies.NEW_KEY] == "added", during[api_config]
    assert policies.NEW_KEY not in (before[api_config]["data"] or {})
    assert during[api]["replicas"] == 6, during[api]
    assert during.keys() == before.keys(), sorted(set(during) ^ set(before))


def phases(*, two_after: str = "3s", worker: bool = False) -> list[dict[str, Any]]:
    """The e2e runbook (api-config + restart, scale-api; then cache-lazy + warm-cache), optionally with a
    third action in phase two scaling aurum-worker (under an HPA when the test seeds one)."""
    two = policies.phase_two(after=two_after)
    if worker:
        two["actions"].append(
            {"name": "scale-worker", "scale": {"kind": "Deployment", "name": "aurum-worker", "replicas": 5}}
        )
    return [policies.phase_one(), two]


WORKER_HPA = {
    "apiVersion": "autoscaling/v2",
    "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "aurum-worker", "annotations": {"team": "cache"}},
    "spec": {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "aurum-worker"},
        "minReplicas": 2,
        "maxReplicas": 10,
        "metrics": [
            {
                "type": "Resource",
                "resource": {"name": "cpu", "target": {"type": "Utilization", "averageUtilization": 70}},
            }
        ],
    },
}
