"""The whole product on one machine: emulated API server, real Prometheus, real `stampede run`.

Used by the end-to-end tests, `make demo` and the benchmarks, so all three exercise the same
wiring. The Kubernetes API server is the one emulated part (tests/harness); Prometheus is the
Debian server scraping an exporter the caller drives; the operator is the installed console
script in its own process, talking HTTP to both.
"""

from __future__ import annotations

import contextlib
import os
import pathlib
import signal
import subprocess
import sys
import tempfile
import time
from collections.abc import Callable, Iterable, Mapping
from types import TracebackType
from typing import Any, Self

import yaml
from kubernetes import client as k8s
from kubernetes import config as k8s_config

from tests.harness.server import HarnessThread
from tests.harness.store import Strictness
from tests.support.prometheus import Exporter, PrometheusServer

REPO = pathlib.Path(__file__).resolve().parents[2]
GROUP, VERSION, PLURAL = "stampede.aurum.io", "v1alpha1", "stampedepolicies"


def stampede_binary() -> str:
    candidate = pathlib.Path(sys.executable).with_name("stampede")
    return str(candidate) if candidate.exists() else "stampede"


class Operator:
    """`stampede run` as a child process, restartable and killable like a real pod."""

    def __init__(
        self,
        *,
        kubeconfig: pathlib.Path,
        env: Mapping[str, str],
        log_dir: pathlib.Path,
        args: Iterable[str] = ("--standalone", "-A", "--metrics-port", "0"),
    ) -> None:
        self.kubeconfig = kubeconfig
        self.env = dict(env)
        self.args = list(args)
        self.log_dir = log_dir
        self.process: subprocess.Popen[bytes] | None = None
        self.starts = 0

    def start(self) -> None:
        self.starts += 1
        log = (self.log_dir / f"operator-{self.starts}.log").open("wb")
        env = {**os.environ, **self.env, "KUBECONFIG": str(self.kubeconfig)}
        self.process = subprocess.Popen(
            [stampede_binary(), "run", *self.args],
            stdout=log,
            stderr=subprocess.STDOUT,
            env=env,
            start_new_session=True,
        )

    def kill(self) -> None:
        """SIGKILL: no cleanup, no finalizer handling, exactly a crashed pod."""
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGKILL)
            self.process.wait(10)

    def stop(self) -> None:
        if self.process and self.process.poll() is None:
            os.killpg(self.process.pid, signal.SIGTERM)
            try:
                self.process.wait(15)
            except subprocess.TimeoutExpired:
                self.kill()

    def logs(self) -> str:
        return "\n".join(p.read_text(errors="replace") for p in sorted(self.log_dir.glob("operator-*.log")))


JOURNAL_NAMESPACE = "stampede-system"
"""The operator's namespace in these stacks (settings.journal_namespace's default)."""


class Stack:
    """Harness + Prometheus + exporter + operator; a context manager that cleans up everything."""

    def __init__(
        self,
        *,
        seed: Iterable[pathlib.Path] = (),
        operator_env: Mapping[str, str] | None = None,
        start_operator: bool = True,
        operator_args: Iterable[str] | None = None,
        strictness: Strictness | None = None,
    ) -> None:
        self._tmp = tempfile.TemporaryDirectory(prefix="stampede-stack-")
        self.dir = pathlib.Path(self._tmp.name)
        self.harness = HarnessThread(
            crds=[REPO / "crds"], kubeconfig=self.dir / "kubeconfig", seed=list(seed), strictness=strictness
        )
        self.exporter: Exporter | None = None
        self.prometheus: PrometheusServer | None = None
        self.operator: Operator | None = None
        self._operator_env = dict(operator_env or {})
        self._operator_args = operator_args
        self._start_operator = start_operator

    def __enter__(self) -> Self:
        try:
            self.harness.__enter__()
            # The operator's own namespace, where it keeps the originals of ConfigMap changes (journal Secrets):
            # `stampede run` here has no POD_NAMESPACE, so it uses the default, as a Deployment in it would.
            self.harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": JOURNAL_NAMESPACE}}])
            self.exporter = Exporter()
            self.prometheus = PrometheusServer(exporters=[self.exporter])
            env = {"STAMPEDE_PROMETHEUS_URL": self.prometheus.url, **self._operator_env}
            kwargs: dict[str, Any] = {}
            if self._operator_args is not None:
                args = list(self._operator_args)
                # The default metrics port (9102) is one per machine: two stacks at once (two test workers)
                # would have the second operator fail at its start with EADDRINUSE.
                kwargs["args"] = args if "--metrics-port" in args else [*args, "--metrics-port", "0"]
            self.operator = Operator(kubeconfig=self.harness.kubeconfig, env=env, log_dir=self.dir, **kwargs)
            if self._start_operator:
                self.operator.start()
            k8s_config.load_kube_config(config_file=str(self.harness.kubeconfig))
            self.api = k8s.ApiClient()
        except BaseException:
            self.close()
            raise
        return self

    def __exit__(self, *exc: object | TracebackType) -> None:
        self.close()

    def close(self) -> None:
        if self.operator:
            self.operator.stop()
        if self.prometheus:
            self.prometheus.close()
        if self.exporter:
            self.exporter.close()
        with contextlib.suppress(RuntimeError):  # the harness never started
            self.harness.__exit__(None, None, None)
        self._tmp.cleanup()

    # -- object access through the official client ----------------------------------------------
    @property
    def custom(self) -> k8s.CustomObjectsApi:
        return k8s.CustomObjectsApi(self.api)

    @property
    def core(self) -> k8s.CoreV1Api:
        return k8s.CoreV1Api(self.api)

    @property
    def apps(self) -> k8s.AppsV1Api:
        return k8s.AppsV1Api(self.api)

    def apply_policy(self, policy: Mapping[str, Any]) -> None:
        meta = policy["metadata"]
        self.custom.create_namespaced_custom_object(GROUP, VERSION, meta["namespace"], PLURAL, dict(policy))

    def policy(self, namespace: str, name: str) -> dict[str, Any]:
        found: dict[str, Any] = self.custom.get_namespaced_custom_object(GROUP, VERSION, namespace, PLURAL, name)
        return found

    def status(self, namespace: str, name: str) -> dict[str, Any]:
        return dict(self.policy(namespace, name).get("status") or {})

    def configmap_data(self, namespace: str, name: str) -> dict[str, str]:
        return dict(self.core.read_namespaced_config_map(name, namespace).data or {})

    def replicas(self, namespace: str, name: str) -> int:
        return int(self.apps.read_namespaced_deployment(name, namespace).spec.replicas)

    def events(self, namespace: str, name: str) -> list[dict[str, Any]]:
        items = self.core.list_namespaced_event(namespace, field_selector=f"involvedObject.name={name}").items
        return [{"reason": e.reason, "message": e.message, "type": e.type} for e in items]

    def snapshot(self, namespace: str) -> dict[str, Any]:
        """Everything a policy may touch in a namespace, byte for byte: ConfigMap data, labels and annotations,
        workload replicas and annotations, HPA min/maxReplicas and annotations, and the Jobs' names. The API
        server omits empty maps; the harness keeps `{}` after a merge patch removes the last annotation, so
        both spellings count as none."""
        api = self.api
        out: dict[str, Any] = {}
        for cm in self.core.list_namespaced_config_map(namespace).items:
            raw = api.sanitize_for_serialization(cm)
            out[f"ConfigMap/{cm.metadata.name}"] = {
                "data": raw.get("data"),
                "binaryData": raw.get("binaryData"),
                "labels": raw["metadata"].get("labels") or None,
                "annotations": raw["metadata"].get("annotations") or None,
            }
        for deployment in self.apps.list_namespaced_deployment(namespace).items:
            raw = api.sanitize_for_serialization(deployment)
            out[f"Deployment/{deployment.metadata.name}"] = {
                "replicas": raw["spec"].get("replicas"),
                "labels": raw["metadata"].get("labels") or None,
                "annotations": raw["metadata"].get("annotations") or None,
            }
        for hpa in k8s.AutoscalingV2Api(api).list_namespaced_horizontal_pod_autoscaler(namespace).items:
            raw = api.sanitize_for_serialization(hpa)
            out[f"HorizontalPodAutoscaler/{hpa.metadata.name}"] = {
                "minReplicas": raw["spec"].get("minReplicas"),
                "maxReplicas": raw["spec"].get("maxReplicas"),
                "annotations": raw["metadata"].get("annotations") or None,
            }
        out["Jobs"] = sorted(j.metadata.name for j in k8s.BatchV1Api(api).list_namespaced_job(namespace).items)
        return out

    def wait_for(self, what: str, predicate: Callable[[], Any], *, timeout: float = 60.0, interval: float = 0.2) -> Any:
        """Poll until predicate() is truthy; fail with the operator's log tail otherwise."""
        deadline = time.monotonic() + timeout
        last_error: Exception | None = None
        while time.monotonic() < deadline:
            try:
                value = predicate()
                if value:
                    return value
            except Exception as error:  # the object may not exist yet
                last_error = error
            time.sleep(interval)
        tail = self.operator.logs()[-4000:] if self.operator else ""
        raise AssertionError(
            f"timed out after {timeout}s waiting for {what} (last error: {last_error})\n"
            f"--- operator log tail ---\n{tail}"
        )


def load_yaml(path: pathlib.Path) -> list[dict[str, Any]]:
    return [doc for doc in yaml.safe_load_all(path.read_text()) if doc]
