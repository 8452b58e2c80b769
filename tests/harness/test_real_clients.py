"""The official kubernetes client, kubectl and a real `kopf run` process against the threaded harness."""

from __future__ import annotations

import json
import os
import pathlib
import signal
import subprocess
import sys
import textwrap
import time
import urllib.request
from collections.abc import Callable

import kubernetes
import pytest

from .server import HarnessThread

VENV_BIN = pathlib.Path(sys.executable).parent
STP = dict(group="stampede.aurum.io", version="v1alpha1", plural="stampedepolicies")


def api_client(harness: HarnessThread) -> kubernetes.client.ApiClient:
    config = kubernetes.client.Configuration()
    kubernetes.config.load_kube_config(config_file=str(harness.kubeconfig), client_configuration=config)
    return kubernetes.client.ApiClient(config)


def kubectl(harness: HarnessThread, *args: str) -> str:
    env = {**os.environ, "KUBECONFIG": str(harness.kubeconfig)}
    result = subprocess.run([str(VENV_BIN / "kubectl"), *args], env=env, capture_output=True, text=True, timeout=30)
    assert result.returncode == 0, result.stderr
    return result.stdout


def wait_for(predicate: Callable[[], object], *, timeout: float = 10.0) -> None:
    deadline = time.monotonic() + timeout
    while not predicate():
        if time.monotonic() > deadline:
            raise AssertionError("condition not met in time")
        time.sleep(0.1)


def test_kubernetes_client_performs_crud_on_builtins_and_custom_objects(
    k8s_harness_thread: HarnessThread,
) -> None:
    with api_client(k8s_harness_thread) as client:
        core, apps = kubernetes.client.CoreV1Api(client), kubernetes.client.AppsV1Api(client)
        custom = kubernetes.client.CustomObjectsApi(client)
        core.create_namespace({"metadata": {"name": "shop"}})
        cm = core.create_namespaced_config_map("shop", {"metadata": {"name": "c"}, "data": {"a": "1"}})
        assert cm.metadata.uid
        assert cm.metadata.resource_version
        cm.data["a"] = "2"
        assert core.replace_namespaced_config_map("c", "shop", cm).data == {"a": "2"}
        with pytest.raises(kubernetes.client.ApiException) as exc:
            core.replace_namespaced_config_map("c", "shop", cm)  # stale resourceVersion now
        assert exc.value.status == 409
        assert [i.metadata.name for i in core.list_namespaced_config_map("shop").items] == ["c"]
        core.delete_namespaced_config_map("c", "shop")

        apps.create_namespaced_deployment(
            "shop",
            {
                "metadata": {"name": "web"},
                "spec": {
                    "replicas": 1,
                    "selector": {"matchLabels": {"app": "web"}},
                    "template": {
                        "metadata": {"labels": {"app": "web"}},
                        "spec": {"containers": [{"name": "web", "image": "nginx"}]},
                    },
                },
            },
        )
        apps.patch_namespaced_deployment_scale("web", "shop", {"spec": {"replicas": 4}})
        assert apps.read_namespaced_deployment_scale("web", "shop").status.replicas == 4
        assert apps.read_namespaced_deployment("web", "shop").status.ready_replicas == 4

        custom.create_namespaced_custom_object(
            **STP,
            namespace="shop",
            body={
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": "p"},
                "spec": {"target": "web"},
            },
        )
        custom.patch_namespaced_custom_object_status(
            **STP, namespace="shop", name="p", body={"status": {"state": "Armed"}}
        )
        obj = custom.get_namespaced_custom_object(**STP, namespace="shop", name="p")
        assert obj["status"] == {"state": "Armed"}
        assert obj["metadata"]["generation"] == 1
        items = custom.list_cluster_custom_object(**STP)["items"]
        assert [i["metadata"]["name"] for i in items] == ["p"]
        custom.delete_namespaced_custom_object(**STP, namespace="shop", name="p")
        assert custom.list_namespaced_custom_object(**STP, namespace="shop")["items"] == []


def test_kubectl_get_shows_printer_columns_and_describe_shows_events(
    k8s_harness_thread: HarnessThread,
) -> None:
    (obj,) = k8s_harness_thread.apply(
        [
            {
                "apiVersion": "stampede.aurum.io/v1alpha1",
                "kind": "StampedePolicy",
                "metadata": {"name": "checkout", "namespace": "default"},
                "spec": {"target": "web"},
            }
        ]
    )
    kubectl(
        k8s_harness_thread,
        "patch",
        "stp",
        "checkout",
        "--subresource=status",
        "--type=merge",
        "-p",
        '{"status": {"state": "Armed"}}',
    )
    k8s_harness_thread.apply(
        [
            {
                "apiVersion": "v1",
                "kind": "Event",
                "metadata": {"name": "checkout.1"},
                "involvedObject": {
                    "apiVersion": "stampede.aurum.io/v1alpha1",
                    "kind": "StampedePolicy",
                    "name": "checkout",
                    "namespace": "default",
                    "uid": obj["metadata"]["uid"],
                },
                "reason": "StampedeDetected",
                "message": "miss ratio 0.9",
                "type": "Warning",
                "source": {"component": "stampede"},
            }
        ]
    )
    lines = kubectl(k8s_harness_thread, "get", "stp").splitlines()
    assert lines[0].split() == ["NAME", "STATE", "TARGET", "AGE"]
    assert lines[1].split()[:3] == ["checkout", "Armed", "web"]
    described = kubectl(k8s_harness_thread, "describe", "stp", "checkout")
    assert "StampedeDetected" in described
    assert "miss ratio 0.9" in described
    assert "checkout" in kubectl(k8s_harness_thread, "get", "stampede")


OPERATOR = textwrap.dedent("""
    import kopf

    @kopf.on.startup()
    def configure(settings: kopf.OperatorSettings, **_):
        settings.watching.server_timeout = 5
        settings.posting.level = 0
        settings.persistence.finalizer = 'harness.test/finalizer'

    @kopf.on.create('stampede.aurum.io', 'v1alpha1', 'stampedepolicies')
    def created(body, patch, **_):
        kopf.info(body, reason='Armed', message='policy armed')
        patch.status['state'] = 'Armed'

    @kopf.on.delete('stampede.aurum.io', 'v1alpha1', 'stampedepolicies')
    def deleted(body, **_):
        pass
""")


def test_real_kopf_run_handles_create_and_delete_without_unexpected_errors(
    k8s_harness_thread: HarnessThread, tmp_path: pathlib.Path
) -> None:
    (tmp_path / "operator.py").write_text(OPERATOR)
    env = {**os.environ, "KUBECONFIG": str(k8s_harness_thread.kubeconfig)}
    proc = subprocess.Popen(
        [str(VENV_BIN / "kopf"), "run", "--standalone", "-A", str(tmp_path / "operator.py")],
        env=env,
        stdout=subprocess.PIPE,
        stderr=subprocess.STDOUT,
        text=True,
    )
    try:
        log, store = k8s_harness_thread.log, k8s_harness_thread.store
        wait_for(lambda: log.entries(verb="watch", resource="stampedepolicies"))
        with api_client(k8s_harness_thread) as client:
            custom = kubernetes.client.CustomObjectsApi(client)
            custom.create_namespaced_custom_object(
                **STP,
                namespace="default",
                body={
                    "apiVersion": "stampede.aurum.io/v1alpha1",
                    "kind": "StampedePolicy",
                    "metadata": {"name": "p"},
                    "spec": {"target": "web"},
                },
            )

            def get() -> dict:
                return custom.get_namespaced_custom_object(**STP, namespace="default", name="p")

            wait_for(lambda: get().get("status", {}).get("state") == "Armed")
            assert "harness.test/finalizer" in get()["metadata"]["finalizers"]
            core = kubernetes.client.CoreV1Api(client)
            wait_for(
                lambda: (
                    [
                        e.reason
                        for e in core.list_namespaced_event("default", field_selector="involvedObject.name=p").items
                    ]
                    == ["Armed"]
                )
            )

            custom.delete_namespaced_custom_object(**STP, namespace="default", name="p")

            def gone() -> bool:
                info = store.catalogue.find("stampede.aurum.io", "v1alpha1", "stampedepolicies")
                assert info is not None
                return not k8s_harness_thread.call(store.list, info)

            wait_for(gone)
        errors = [(r.method, r.path, r.status) for r in log.errors()]
        assert errors == [], errors
        kopf_writes = log.entries(resource="stampedepolicies", verb="patch")
        assert any(r.subresource == "status" for r in kopf_writes)
    finally:
        # Only clean up here: an assert in `finally` would replace the failure that brought us here.
        proc.terminate()
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    output = proc.stdout.read() if proc.stdout is not None else ""
    assert "Traceback" not in output, output


def test_standalone_cli_seeds_objects_and_serves_the_request_log(tmp_path: pathlib.Path) -> None:
    here = pathlib.Path(__file__).parent
    kubeconfig = tmp_path / "kubeconfig"
    proc = subprocess.Popen(
        [
            sys.executable,
            "-m",
            "tests.harness",
            "--port",
            "0",
            "--crds",
            str(here / "fixtures"),
            "--seed",
            str(here / "fixtures" / "seed.yaml"),
            "--kubeconfig",
            str(kubeconfig),
        ],
        cwd=here.parents[1],
        stdout=subprocess.PIPE,
        text=True,
    )
    try:
        assert proc.stdout is not None
        url = json.loads(proc.stdout.readline())["url"]
        env = {**os.environ, "KUBECONFIG": str(kubeconfig)}
        out = subprocess.run(
            [str(VENV_BIN / "kubectl"), "-n", "shop", "get", "deploy,cm,cronjobs"],
            env=env,
            capture_output=True,
            text=True,
            timeout=30,
            check=True,
        ).stdout
        for expected in ("deployment.apps/web", "cache-settings", "warmup"):
            assert expected in out
        with urllib.request.urlopen(f"{url}/_harness/requests?verb=list") as rsp:
            listed = {r["resource"] for r in json.load(rsp)["items"]}
        assert {"deployments", "configmaps", "cronjobs"} <= listed
    finally:
        proc.send_signal(signal.SIGTERM)
        try:
            proc.wait(timeout=10)
        except subprocess.TimeoutExpired:
            proc.kill()
            proc.wait()
    assert proc.returncode == 0, "the standalone harness did not exit cleanly on SIGTERM"
