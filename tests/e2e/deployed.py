"""The operator as the rendered deploy/ overlay runs it, turned into local `stampede run` processes.

Why: the HA and install tests must run what users install (the Deployment's args and environment),
not a test-only `--standalone` command line. Only what cannot carry over to one machine changes:
each replica gets its own free ports (two pods each have their own 8080 and 9102; two processes on
one host cannot), and the environment's Prometheus URL points at the test's Prometheus.
"""

from __future__ import annotations

import functools
import pathlib
import re
import subprocess
import sys
import urllib.error
import urllib.request
from collections.abc import Mapping
from dataclasses import dataclass
from typing import Any

import yaml

from tests.e2e.stack import REPO, Operator
from tests.support.prometheus import free_port

KUBECTL = pathlib.Path(sys.executable).with_name("kubectl")


@functools.cache
def render(overlay: str) -> tuple[dict[str, Any], ...]:
    """`kubectl kustomize deploy/overlays/<overlay>`, parsed."""
    out = subprocess.run(
        [str(KUBECTL), "kustomize", str(REPO / "deploy" / "overlays" / overlay)],
        check=True,
        capture_output=True,
        text=True,
        timeout=60,
    )
    return tuple(doc for doc in yaml.safe_load_all(out.stdout) if doc)


def of_kind(docs: tuple[dict[str, Any], ...], kind: str) -> list[dict[str, Any]]:
    return [doc for doc in docs if doc.get("kind") == kind]


def peering_crds(overlay: str = "cluster") -> list[dict[str, Any]]:
    return [crd for crd in of_kind(render(overlay), "CustomResourceDefinition") if crd["spec"]["group"] == "kopf.dev"]


@dataclass(frozen=True)
class Replica:
    """One local stand-in for a pod of the Deployment: its process and the ports its probes use."""

    operator: Operator
    metrics_port: int
    readiness_url: str
    liveness_url: str

    def metrics(self) -> str:
        with urllib.request.urlopen(f"http://127.0.0.1:{self.metrics_port}/metrics", timeout=5) as response:
            text: str = response.read().decode()
            return text

    def sample(self, name: str, **labels: str) -> float | None:
        """One sample of /metrics, or None when the series is absent."""
        wanted = ",".join(f'{k}="{v}"' for k, v in sorted(labels.items()))
        for line in self.metrics().splitlines():
            series, _, value = line.rpartition(" ")
            if series == (f"{name}{{{wanted}}}" if wanted else name):
                return float(value)
        return None

    def peering_state(self) -> str | None:
        for state in ("active", "standby", "stuck"):
            if self.sample("stampede_peering_paused_seconds", state=state) is not None:
                return state
        return None

    def probe(self, url: str) -> int:
        """The HTTP status a kubelet's httpGet probe would see (0: nothing answers)."""
        try:
            with urllib.request.urlopen(url, timeout=5) as response:
                return int(response.status)
        except urllib.error.HTTPError as error:
            return int(error.code)
        except OSError:
            return 0

    def ready(self) -> bool:
        return self.probe(self.readiness_url) == 200


def replica(
    *,
    overlay: str,
    kubeconfig: pathlib.Path,
    log_dir: pathlib.Path,
    env: Mapping[str, str],
) -> Replica:
    """A Replica running the rendered Deployment's args with its envFrom ConfigMap, plus `env` on top."""
    docs = render(overlay)
    (deployment,) = of_kind(docs, "Deployment")
    container = deployment["spec"]["template"]["spec"]["containers"][0]
    assert "command" not in container, "the image's ENTRYPOINT (`stampede run`) is what runs"
    ports = {p["name"]: free_port() for p in container.get("ports", [])}
    by_number = {p["containerPort"]: ports[p["name"]] for p in container.get("ports", [])}
    args = [
        re.sub(r"\b(\d+)\b", lambda m: str(by_number.get(int(m.group(1)), m.group(1))), a) for a in container["args"]
    ]
    environ: dict[str, str] = {}
    configmaps = {cm["metadata"]["name"]: cm for cm in of_kind(docs, "ConfigMap")}
    for source in container.get("envFrom", []):
        environ.update(configmaps[source["configMapRef"]["name"]].get("data") or {})
    for var in container.get("env", []):
        if "value" in var:
            environ[var["name"]] = var["value"]
        elif (var.get("valueFrom") or {}).get("fieldRef", {}).get("fieldPath") == "metadata.namespace":
            environ[var["name"]] = deployment["metadata"]["namespace"]  # the downward API, as the kubelet sets it
    environ.update(env)
    log_dir.mkdir(parents=True, exist_ok=True)

    def url(probe: dict[str, Any]) -> str:
        get = probe["httpGet"]
        port = ports[get["port"]] if isinstance(get["port"], str) else by_number[get["port"]]
        return f"http://127.0.0.1:{port}{get['path']}"

    return Replica(
        operator=Operator(kubeconfig=kubeconfig, env=environ, log_dir=log_dir, args=args),
        metrics_port=ports["metrics"],
        readiness_url=url(container["readinessProbe"]),
        liveness_url=url(container["livenessProbe"]),
    )
