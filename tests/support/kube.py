"""The operator's real Kubernetes client pointed at an in-process emulated API server, for actuator tests."""

from __future__ import annotations

import pathlib
from collections.abc import Iterable, Iterator
from contextlib import contextmanager

import kubernetes

from stampede.actuators.kube import Kube
from tests.harness.server import HarnessThread

REPO = pathlib.Path(__file__).resolve().parents[2]


def make_kube(harness: HarnessThread, cls: type[Kube] = Kube) -> Kube:
    """A `Kube` on its own client configuration, so the kubernetes client's global default is left alone."""
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(harness.kubeconfig), client_configuration=config)
    return cls(kubernetes.client.ApiClient(config))


@contextmanager
def harness_with_namespace(
    tmp_path: pathlib.Path, namespace: str, *, configmaps: Iterable[str] = ()
) -> Iterator[HarnessThread]:
    """An emulated API server with the repo's CRDs, one namespace and, in it, the empty ConfigMaps named."""
    with HarnessThread(crds=[REPO / "crds"], kubeconfig=tmp_path / "kubeconfig") as harness:
        harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": namespace}}])
        harness.apply(
            [
                {
                    "apiVersion": "v1",
                    "kind": "ConfigMap",
                    "metadata": {"name": name, "namespace": namespace},
                    "data": {},
                }
                for name in configmaps
            ]
        )
        yield harness
