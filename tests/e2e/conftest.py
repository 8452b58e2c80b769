"""One Stack for the whole e2e session; every test works in its own namespace with its own exporter label.

The stack (emulated API server, real Prometheus, real `stampede run`) is started once: Prometheus alone needs
~6 s to discover its first target. Isolation comes from namespaces and the `case` label instead. A missing
Prometheus raises PrometheusMissing from the session fixture, so every test errors: never a skip.
"""

from __future__ import annotations

import datetime as dt
import itertools
import os
import re
import subprocess
import sys
from collections.abc import Callable, Iterable, Iterator
from dataclasses import dataclass
from pathlib import Path
from typing import Any

import pytest
from kubernetes.client.exceptions import ApiException

from tests.e2e import policies
from tests.e2e.stack import GROUP, PLURAL, VERSION, Stack
from tests.support.prometheus import free_port

STATUS_REFRESH_SECONDS = 5
HEALTHY_HIT_RATE = 0.95
CALM_DB = 10.0
_counter = itertools.count(1)


@pytest.fixture(scope="session")
def metrics_port() -> int:
    return free_port()


@pytest.fixture(scope="session")
def pagerduty_port() -> int:
    """Where the operator sends PagerDuty events (STAMPEDE_PAGERDUTY_URL); a test's receiver listens there."""
    return free_port()


@pytest.fixture(scope="session")
def stack(metrics_port: int, pagerduty_port: int) -> Iterator[Stack]:
    with Stack(
        # Policies of these tests point at stand-in servers on random ports, so the allow-list is opened.
        operator_env={
            "STAMPEDE_STATUS_REFRESH_SECONDS": str(STATUS_REFRESH_SECONDS),
            "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*",
            "STAMPEDE_PAGERDUTY_URL": f"http://127.0.0.1:{pagerduty_port}/v2/enqueue",
        },
        operator_args=["--standalone", "-A", "--metrics-port", str(metrics_port)],
    ) as running:
        yield running
        keep = os.environ.get("STAMPEDE_E2E_KEEP_LOGS")  # a directory to keep the operator's logs in
        if keep and running.operator is not None:
            Path(keep).mkdir(parents=True, exist_ok=True)
            (Path(keep) / "operator.log").write_text(running.operator.logs())


@dataclass(frozen=True)
class Event:
    reason: str
    message: str
    type: str
    time: dt.datetime


class Case:
    """One test's namespace (a copy of the demo cluster) and exporter label, with the helpers tests need."""

    def __init__(self, stack: Stack, label: str, *, prefix: str = "e2e", extra: Iterable[dict[str, Any]] = ()) -> None:
        slug = re.sub(r"[^a-z0-9]+", "-", label.lower()).strip("-")[:36].rstrip("-")
        self.stack = stack
        self.ns = f"{prefix}-{next(_counter)}-{slug}"
        self.label = self.ns  # the exporter's `case` label
        self.policies: list[str] = []
        objects = policies.cluster_objects(self.ns)
        objects += [{**obj, "metadata": {**obj["metadata"], "namespace": self.ns}} for obj in extra]
        stack.harness.apply(objects)
        self.set(hit_rate=HEALTHY_HIT_RATE, db=CALM_DB)

    # -- signals ------------------------------------------------------------------------------
    def set(self, *, hit_rate: float | None = None, db: float | None = None, wait: bool = True) -> float:
        """Set the gauges and (by default) wait until Prometheus returns them; returns that wall-clock time."""
        prometheus = self.stack.prometheus
        assert self.stack.exporter is not None and prometheus is not None
        if hit_rate is not None:
            self.stack.exporter.set("e2e_hit_rate", hit_rate, case=self.label)
        if db is not None:
            self.stack.exporter.set("e2e_db", db, case=self.label)
        if wait and hit_rate is not None:
            prometheus.wait_for(policies.hit_rate_query(self.label), lambda v: v == hit_rate, timeout=30)
        if wait and db is not None:
            prometheus.wait_for(policies.db_query(self.label), lambda v: v == db, timeout=30)
        return dt.datetime.now(dt.UTC).timestamp()

    # -- policies -----------------------------------------------------------------------------
    def create(self, name: str, **kwargs: Any) -> dict[str, Any]:
        body = policies.policy(name, self.ns, self.label, **kwargs)
        self.stack.apply_policy(body)
        self.policies.append(name)
        return body

    def create_ready(self, name: str, *, timeout: float = 60.0, **kwargs: Any) -> dict[str, Any]:
        """Create a policy and wait until the operator has polled it (Ready=True, every signal known)."""
        body = self.create(name, **kwargs)
        self.wait_status(
            name,
            "Ready with known signals",
            lambda s: (
                condition(s, "Ready").get("status") == "True"
                and condition(s, "MetricsAvailable").get("status") == "True"
            ),
            timeout=timeout,
        )
        return body

    def policy(self, name: str) -> dict[str, Any]:
        return self.stack.policy(self.ns, name)

    def status(self, name: str) -> dict[str, Any]:
        return self.stack.status(self.ns, name)

    def wait_status(
        self,
        name: str,
        what: str,
        predicate: Callable[[dict[str, Any]], Any],
        timeout: float = 60.0,
        interval: float = 0.1,
    ) -> dict[str, Any]:
        found: dict[str, Any] = {}

        def check() -> bool:
            nonlocal found
            found = self.status(name)
            return bool(predicate(found))

        self.stack.wait_for(f"{self.ns}/{name}: {what}", check, timeout=timeout, interval=interval)
        return found

    def delete(self, name: str) -> None:
        self.stack.custom.delete_namespaced_custom_object(GROUP, VERSION, self.ns, PLURAL, name)

    def exists(self, name: str) -> bool:
        try:
            self.policy(name)
        except ApiException as error:
            if error.status == 404:
                return False
            raise
        return True

    def events(self, name: str, reason: str | None = None) -> list[Event]:
        items = self.stack.core.list_namespaced_event(self.ns, field_selector=f"involvedObject.name={name}").items
        found = [
            Event(e.reason, e.message, e.type, e.event_time or e.first_timestamp)
            for e in items
            if reason is None or e.reason == reason
        ]
        return sorted(found, key=lambda e: e.time)

    # -- targets ------------------------------------------------------------------------------
    def jobs(self, policy: str) -> list[dict[str, Any]]:
        jobs = self.stack.api.sanitize_for_serialization(
            _batch(self.stack).list_namespaced_job(self.ns, label_selector=f"stampede.aurum.io/policy={policy}")
        )
        return list(jobs.get("items") or [])

    def snapshot(self) -> dict[str, Any]:
        """Everything the policies may touch in this case's namespace (see Stack.snapshot)."""
        return self.stack.snapshot(self.ns)

    def configmap(self, name: str) -> dict[str, Any]:
        raw: dict[str, Any] = self.stack.api.sanitize_for_serialization(
            self.stack.core.read_namespaced_config_map(name, self.ns)
        )
        return raw

    def kubectl(self, *args: str) -> str:
        kubectl = Path(sys.executable).with_name("kubectl")
        env = {**os.environ, "KUBECONFIG": str(self.stack.harness.kubeconfig)}
        done = subprocess.run([str(kubectl), *args], env=env, capture_output=True, text=True, timeout=60, check=False)
        assert done.returncode == 0, f"kubectl {' '.join(args)} failed: {done.stderr}"
        return done.stdout

    def cleanup(self) -> None:
        """Delete this case's policies (rolling back whatever they hold) so the operator stops polling them."""
        for name in self.policies:
            try:
                self.delete(name)
            except ApiException as error:
                if error.status != 404:
                    raise
        for name in self.policies:
            self.stack.wait_for(f"{self.ns}/{name} deleted", lambda n=name: not self.exists(n), timeout=60)


def _batch(stack: Stack) -> Any:
    from kubernetes import client as k8s

    return k8s.BatchV1Api(stack.api)


def condition(status: dict[str, Any], type_: str) -> dict[str, Any]:
    return next((c for c in status.get("conditions") or [] if c.get("type") == type_), {})


def parse_time(text: str) -> dt.datetime:
    return dt.datetime.fromisoformat(text.replace("Z", "+00:00"))


@pytest.fixture
def case(stack: Stack, request: pytest.FixtureRequest) -> Iterator[Case]:
    created = Case(stack, request.node.name.removeprefix("test_"))
    yield created
    created.cleanup()
