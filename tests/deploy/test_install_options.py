"""What a user changes in their own overlay works: the image, the namespace, the optional pieces
(monitoring, kopf's peering CRDs), and the Prometheus allow-list is closed in what ships.

Each test renders a user's overlay over a shipped one with the real `kubectl kustomize`, as the issue's
trial did: a rename that silently did nothing, a namespace hardcoded in three files, monitoring forced
on, and kopf's shared CRDs owned by this install.
"""

from __future__ import annotations

from typing import Any

import pytest
import yaml

from stampede.settings import load_settings
from stampede.sources.prometheus import check_url_allowed
from tests.deploy.rendering import DEPLOY, needs_kubectl, of_kind, only, render, render_user_overlay

pytestmark = needs_kubectl

OVERLAYS = ("cluster", "namespaced")
PEERING_CRDS = {"kopfpeerings.kopf.dev", "clusterkopfpeerings.kopf.dev"}


def _container(rendered: tuple[dict[str, Any], ...]) -> dict[str, Any]:
    container: dict[str, Any] = only(rendered, "Deployment")["spec"]["template"]["spec"]["containers"][0]
    return container


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_a_users_overlay_renames_the_image(overlay: str) -> None:
    extra = "images:\n  - name: ghcr.io/aurum/stampede-operator\n    newName: registry.example.com/ops/stampede\n"
    extra += "    newTag: 0.2.0-custom\n"
    rendered = render_user_overlay(overlay, extra=extra)
    assert _container(rendered)["image"] == "registry.example.com/ops/stampede:0.2.0-custom"


def test_the_shipped_kustomizations_set_tags_but_never_rename_the_image() -> None:
    for path in DEPLOY.rglob("kustomization.yaml"):
        for image in yaml.safe_load(path.read_text()).get("images", []):
            assert image["name"] == "ghcr.io/aurum/stampede-operator", path
            assert "newName" not in image, f"{path}: a rename here hides the image from users' overlays"


def test_the_namespaced_overlay_moves_entirely_with_kustomizes_namespace_alone() -> None:
    rendered = render_user_overlay("namespaced", extra="namespace: team-a\n")
    namespaced = [obj for obj in rendered if obj["kind"] not in ("CustomResourceDefinition",)]
    assert namespaced
    for obj in namespaced:
        assert obj["metadata"]["namespace"] == "team-a", (obj["kind"], obj["metadata"])
    assert only(rendered, "RoleBinding")["subjects"][0]["namespace"] == "team-a"
    assert _container(rendered)["args"][:2] == ["-n", "$(POD_NAMESPACE)"]
    assert "aurum-dev" not in yaml.safe_dump_all(rendered)


def test_the_watched_namespace_is_named_in_one_place_only() -> None:
    files = [path for path in (DEPLOY / "overlays" / "namespaced").iterdir() if "aurum-dev" in path.read_text()]
    assert [path.name for path in files] == ["kustomization.yaml"]
    lines = [line for line in files[0].read_text().splitlines() if "aurum-dev" in line and not line.startswith("#")]
    assert lines == ["namespace: aurum-dev"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_kopfs_peering_crds_ship_in_their_own_base_and_can_be_left_out(overlay: str) -> None:
    assert not (DEPLOY / "base" / "crds" / "kopf-peerings.yaml").exists()
    assert "kopf" not in (DEPLOY / "base" / "kustomization.yaml").read_text().split("resources:")[1].split("\n\n")[0]
    shipped = {crd["metadata"]["name"] for crd in of_kind(render(overlay), "CustomResourceDefinition")}
    assert shipped >= PEERING_CRDS
    without = render_user_overlay(overlay, components=("without-kopf-peering-crds",))
    left = {crd["metadata"]["name"] for crd in of_kind(without, "CustomResourceDefinition")}
    assert (
        left
        == shipped - PEERING_CRDS
        == {
            "stampedepolicies.stampede.aurum.io",
            "stampedeincidents.stampede.aurum.io",
            "stampedepolicytemplates.stampede.aurum.io",
            "clusterstampedepolicytemplates.stampede.aurum.io",
        }
    )
    assert len(without) == len(render(overlay)) - 2


def test_kopfs_peering_crds_are_never_pruned_by_argo_cd() -> None:
    for crd in of_kind(render("cluster"), "CustomResourceDefinition"):
        annotations = crd["metadata"]["annotations"]
        assert annotations["argocd.argoproj.io/sync-wave"] == "-1"
        assert "Delete=false" in annotations["argocd.argoproj.io/sync-options"]


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_monitoring_is_opt_in(overlay: str) -> None:
    kinds = {obj["kind"] for obj in render(overlay)}
    assert not {"ServiceMonitor", "PrometheusRule"} & kinds
    with_monitoring = render_user_overlay(overlay, components=("monitoring",))
    assert {"ServiceMonitor", "PrometheusRule"} <= {obj["kind"] for obj in with_monitoring}


def test_monitoring_carries_the_label_kube_prometheus_stack_selects_and_a_patch_changes_it() -> None:
    rendered = render_user_overlay("cluster", components=("monitoring",))
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(rendered, kind)["metadata"]["labels"]["release"] == "kube-prometheus-stack"
    # The patch documented in deploy/components/monitoring/kustomization.yaml and docs/install.md.
    patch = (
        "patches:\n  - target: {group: monitoring.coreos.com}\n"
        '    patch: \'[{"op": "replace", "path": "/metadata/labels/release", "value": "prometheus"}]\'\n'
    )
    patched = render_user_overlay("cluster", components=("monitoring",), extra=patch)
    for kind in ("ServiceMonitor", "PrometheusRule"):
        assert only(patched, kind)["metadata"]["labels"]["release"] == "prometheus"


@pytest.mark.parametrize("overlay", OVERLAYS)
def test_the_shipped_configuration_keeps_policies_on_the_configured_prometheus(
    overlay: str, monkeypatch: pytest.MonkeyPatch
) -> None:
    container = _container(render(overlay))
    env = only(render(overlay), "ConfigMap", container["envFrom"][0]["configMapRef"]["name"])["data"]
    assert env["STAMPEDE_ALLOWED_PROMETHEUS_URLS"] == ""
    for name, value in env.items():
        monkeypatch.setenv(name, value)
    config = load_settings()
    assert config.allowed_prometheus_urls == (env["STAMPEDE_PROMETHEUS_URL"],)
    allowed = list(config.allowed_prometheus_urls)
    assert check_url_allowed("http://169.254.169.254/latest/meta-data/", allowed)
    assert check_url_allowed(env["STAMPEDE_PROMETHEUS_URL"], allowed) is None
