"""Shared pieces of the fault-injection suite: one namespace + exporter label per test, snapshots, waits.

Every test works in its own copy of the demo cluster (`tests/e2e/policies.cluster_objects`) and its own
exporter label `case=<namespace>`, so the tests of one module can share one Stack (emulated API server,
real Prometheus, real `stampede run`) without seeing each other's signals or targets.
"""

from __future__ import annotations

import datetime as dt
import itertools
import re
import time
from collections.abc import Callable, Iterable
from dataclasses import dataclass
from typing import Any

from kubernetes import client as k8s

from tests.e2e import policies
from tests.e2e.stack import Stack

HEALTHY = 0.95
UNHEALTHY = 0.2
CALM_DB = 10.0
_counter = itertools.count(1)


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: str
    time: dt.datetime


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


def utc(timestamp: float) -> dt.datetime:
    return dt.datetime.fromtimestamp(timestamp, dt.UTC)


class Case:
    """One test's namespace (a copy of the demo cluster) and exporter label."""

    def __init__(self, stack: Stack, label: str, *, extra: Iterable[dict[str, Any]] = ()) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:36].rstrip("-")
        self.stack = stack
        self.ns = f"f{next(_counter)}-{slug}"
        self.label = self.ns
        objects = policies.cluster_objects(self.ns)
        for obj in extra:
            objects.append({**obj, "metadata": {**obj["metadata"], "namespace": self.ns}})
        stack.harness.apply(objects)
        self.set(hit_rate=HEALTHY, db=CALM_DB)

    @property
    def batch(self) -> k8s.BatchV1Api:
        return k8s.BatchV1Api(self.stack.api)

    # -- signals ------------------------------------------------------------------------------
    def set(self, *, hit_rate: float | None = None, db: float | None = None, wait: bool = True) -> float:
        """Set the gauges and (by default) wait until Prometheus returns them; returns that moment."""
        prometheus, exporter = self.stack.prometheus, self.stack.exporter
        assert prometheus is not None and exporter is not None
        if hit_rate is not None:
            exporter.set("e2e_hit_rate", hit_rate, case=self.label)
        if db is not None:
            exporter.set("e2e_db", db, case=self.label)
        if wait and hit_rate is not None:
            prometheus.wait_for(policies.hit_rate_query(self.label), lambda v: v == hit_rate, timeout=30)
        if wait and db is not None:
            prometheus.wait_for(policies.db_query(self.label), lambda v: v == db, timeout=30)
        return time.time()

    # -- policies -----------------------------------------------------------------------------
    def create(self, name: str, **kwargs: Any) -> dict[str, Any]:
        body = policies.policy(name, self.ns, self.label, **kwargs)
        self.stack.apply_policy(body)
        return body

    def create_ready(self, name: str, *, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
        body = self.create(name, **kwargs)
        self.wait_status(name, "Ready with known signals", lambda s: condition(s, "Ready").get("status") == "True"
                         and condition(s, "MetricsAvailable").get("status") == "True", timeout=timeout)
        return body

    def status(self, name: str) -> dict[str, Any]:
        return self.stack.status(self.ns, name)

    def wait_status(self, name: str, what: str, predicate: Callable[[dict[str, Any]], Any],
                    timeout: float = 60.0, interval: float = 0.1) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def check() -> bool:
            nonlocal found
            found = self.status(name)
            return bool(predicate(found))

        self.stack.wait_for(f"{self.ns}/{name}: {what}", check, timeout=timeout, interval=interval)
        return found

    def events(self, name: str, reason: str | None = None) -> list[Event]:
        items = self.stack.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name}").items
        found = [Event(e.reason, e.message, e.type, e.event_time or e.first_timestamp) for e in items
                 if reason is None or e.reason == reason]
        return sorted(found, key=lambda e: e.time)

    # -- targets ------------------------------------------------------------------------------
    def jobs(self, label_selector: str | None = None) -> list[Any]:
        return list(self.batch.list_namespaced_job(self.ns, label_selector=label_selector).items)

    def snapshot(self) -> dict[str, Any]:
        """Everything a policy may touch, byte for byte (see Stack.snapshot)."""
        return self.stack.snapshot(self.ns)


def assert_restored(before: dict[str, Any], after: dict[str, Any]) -> None:
    """Every target exactly as before the incident (Jobs are compared separately: they are left to finish)."""
    before = {k: v for k, v in before.items() if k != "Jobs"}
    after = {k: v for k, v in after.items() if k != "Jobs"}
    assert after.keys() == before.keys()
    for key, value in before.items():
        assert after[key] == value, f"{key} not restored exactly: before {value}, after {after[key]}"


def phases(*, two_after: str = "3s", worker: bool = False) -> list[dict[str, Any]]:
    """The e2e runbook (api-config + restart, scale-api; then cache-lazy + warm-cache), optionally with a
    third action in phase two scaling aurum-worker (under an HPA when the test seeds one)."""
    two = policies.phase_two(after=two_after)
    if worker:
        two["actions"].append({"name": "scale-worker", "scale": {"kind": "Deployment", "name": "aurum-worker",
                                                                 "replicas": 5}})
    return [policies.phase_one(), two]


WORKER_HPA = {
    "apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler",
    "metadata": {"name": "aurum-worker", "annotations": {"team": "cache"}},
    "spec": {"scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "aurum-worker"},
             "minReplicas": 2, "maxReplicas": 10,
             "metrics": [{"type": "Resource", "resource": {"name": "cpu",
                                                           "target": {"type": "Utilization",
                                                                      "averageUtilization": 70}}}]},
}
