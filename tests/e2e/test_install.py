"""docs/install.md on an empty cluster, as a user runs it: one `kubectl apply -k`, two replicas, one incident.

The real kubectl applies the overlay to an empty emulated API server through its discovery, so the
fresh-cluster behaviour is kubectl's own. kopf's peering object cannot be created in the run that creates
its CRD (kubectl cannot map the kind: "no matches for kind"), so the overlays do not ship it: the
operator creates it. The apply must therefore succeed outright, and the replicas still elect one.
The replicas run the rendered Deployment's args and environment (tests/e2e/deployed.py).

One deviation from the documented command: `--validate=false`, because the harness serves no OpenAPI
v2 document for kubectl's client-side schema check (the apply itself is unchanged).
The prometheus-operator CRDs are installed first, as a cluster that opts into the monitoring component has them.
"""

from __future__ import annotations

import os
import pathlib
import subprocess
import tempfile
from collections.abc import Iterator
from typing import Any

import pytest
from demo.workload import CALM, RECOVERY, STAMPEDE, Workload

from tests.e2e.deployed import KUBECTL, replica
from tests.e2e.stack import REPO, load_yaml
from tests.harness.server import HarnessThread
from tests.support.prometheus import Exporter, PrometheusServer

pytestmark = [pytest.mark.e2e, pytest.mark.prometheus, pytest.mark.timeout(300)]
LIFETIME = 5


def monitoring_crds() -> list[dict[str, Any]]:
    """Stand-ins for the prometheus-operator's CRDs (names and scope only; the harness needs no schema)."""
    return [
        {
            "apiVersion": "apiextensions.k8s.io/v1",
            "kind": "CustomResourceDefinition",
            "metadata": {"name": f"{plural}.monitoring.coreos.com"},
            "spec": {
                "group": "monitoring.coreos.com",
                "scope": "Namespaced",
                "names": {"plural": plural, "kind": kind, "singular": kind.lower()},
                "versions": [
                    {
                        "name": "v1",
                        "served": True,
                        "storage": True,
                        "schema": {"openAPIV3Schema": {"type": "object", "x-kubernetes-preserve-unknown-fields": True}},
                    }
                ],
            },
        }
        for plural, kind in (("servicemonitors", "ServiceMonitor"), ("prometheusrules", "PrometheusRule"))
    ]


class Cluster:
    """An empty emulated cluster (plus the prometheus-operator CRDs), a real Prometheus and kubectl."""

    def __init__(self) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="stampede-install-")
        self.dir = pathlib.Path(self._tmp.name)
        self.harness = HarnessThread(crds=[], kubeconfig=self.dir / "kubeconfig")
        self.harness.__enter__()
        self.harness.apply(monitoring_crds())
        self.exporter = Exporter()
        self.prometheus = PrometheusServer(exporters=[self.exporter])

    def kubectl(self, *args: str) -> subprocess.CompletedProcess[str]:
        env = {**os.environ, "KUBECONFIG": str(self.harness.kubeconfig)}
        return subprocess.run(
            [str(KUBECTL), *args], cwd=REPO, env=env, capture_output=True, text=True, timeout=120, check=False
        )

    def close(self) -> None:
        self.prometheus.close()
        self.exporter.close()
        self.harness.__exit__(None, None, None)
        self._tmp.cleanup()


@pytest.fixture
def cluster() -> Iterator[Cluster]:
    created = Cluster()
    yield created
    created.close()


def test_one_kubectl_apply_on_an_empty_cluster_gives_one_active_replica_that_runs_an_incident(
    cluster: Cluster,
) -> None:
    # docs/install.md: kubectl apply -k deploy/overlays/cluster
    applied = cluster.kubectl("apply", "-k", "deploy/overlays/cluster", "--validate=false")
    # One apply on an empty cluster succeeds outright: nothing in it needs a kind created in the same run.
    assert applied.returncode == 0, applied.stderr
    assert "deployment.apps/stampede-operator created" in applied.stdout
    assert "resource mapping not found" not in applied.stderr, applied.stderr
    assert "clusterkopfpeerings" not in cluster.kubectl("get", "clusterkopfpeerings", "-o", "name").stdout

    # The Deployment's two replicas, as a kubelet would run them.
    env = {"STAMPEDE_PROMETHEUS_URL": cluster.prometheus.url, "STAMPEDE_PEERING_LIFETIME": str(LIFETIME)}
    replicas = [
        replica(overlay="cluster", kubeconfig=cluster.harness.kubeconfig, log_dir=cluster.dir / r, env=env)
        for r in ("a", "b")
    ]
    workload = Workload(cluster.exporter)
    workload.set_stage(CALM)
    workload.start()
    try:
        for r in replicas:
            r.operator.start()
        states = wait(
            "one active and one standby replica, both ready",
            lambda: (
                sorted(str(r.peering_state()) for r in replicas) == ["active", "standby"]
                and all(r.ready() for r in replicas)
            ),
            replicas,
        )
        assert states
        assert "stampede-operator" in cluster.kubectl("get", "clusterkopfpeerings", "-o", "name").stdout

        # docs/install.md: the example workloads and the policy that guards them.
        done = cluster.kubectl("apply", "-f", "examples/demo-cluster.yaml", "-f", "examples/demo-fast.yaml")
        assert done.returncode == 0, done.stderr
        before = {cm["metadata"]["name"]: cm.get("data") for cm in items(cluster, "configmaps", "aurum-demo")}
        wait("the policy polled", lambda: condition(policy(cluster), "Ready") == "True", replicas)

        workload.set_stage(STAMPEDE)
        wait("an incident", lambda: (policy(cluster).get("status") or {}).get("incident"), replicas, timeout=60)
        workload.set_stage(RECOVERY)
        wait(
            "the incident closed",
            lambda: (
                (policy(cluster).get("status") or {}).get("state") == "Idle"
                and (policy(cluster).get("status") or {}).get("history")
            ),
            replicas,
            timeout=150,
        )
        after = {cm["metadata"]["name"]: cm.get("data") for cm in items(cluster, "configmaps", "aurum-demo")}
        assert after == before, "every ConfigMap restored"
        assert len(items(cluster, "jobs", "aurum-demo")) == 1
        acted = [r for r in replicas if "stampede_actions_total{" in r.metrics()]
        assert len(acted) == 1, "exactly one replica acted"
    finally:
        workload.stop()
        for r in replicas:
            r.operator.stop()


def items(cluster: Cluster, resource: str, namespace: str) -> list[dict[str, Any]]:
    import json

    out = cluster.kubectl("get", resource, "-n", namespace, "-o", "json")
    assert out.returncode == 0, out.stderr
    return list(json.loads(out.stdout)["items"])


def policy(cluster: Cluster) -> dict[str, Any]:
    import json

    out = cluster.kubectl("get", "stampedepolicy", "aurum-cache-demo", "-n", "aurum-demo", "-o", "json")
    return dict(json.loads(out.stdout)) if out.returncode == 0 else {}


def condition(body: dict[str, Any], type_: str) -> str | None:
    for cond in (body.get("status") or {}).get("conditions") or []:
        if cond.get("type") == type_:
            return str(cond.get("status"))
    return None


def wait(what: str, predicate: Any, replicas: list[Any], *, timeout: float = 60.0) -> Any:
    import time

    deadline = time.monotonic() + timeout
    while time.monotonic() < deadline:
        try:
            value = predicate()
        except Exception:  # an object or an endpoint not there yet
            value = None
        if value:
            return value
        time.sleep(0.3)
    logs = "\n".join(r.operator.logs()[-3000:] for r in replicas)
    raise AssertionError(f"timed out after {timeout}s waiting for {what}\n{logs}")


def test_examples_are_what_the_install_test_applies() -> None:
    """The files applied above exist and hold what the test expects (a guard against silent renames)."""
    kinds = {doc["kind"] for doc in load_yaml(REPO / "examples" / "demo-fast.yaml")}
    assert kinds == {"StampedePolicy"}
