"""The shipped Argo CD recipe with the real operator: after a rollback, Git changes the restored fields again.

Argo CD creates the targets (a server-side apply by its manager `argocd-controller`, as with
`ServerSideApply=true`), an incident changes a ConfigMap key, a Deployment's replicas (through `/scale`)
and an HPA's minReplicas, and recovery rolls them back. The Application of
deploy/argocd/example-workloads-application.yaml ignores every field owned by a manager listed in
`managedFieldsManagers` (Argo CD's managedfields.Normalize drops them from the diff, and
`RespectIgnoreDifferences=true` from the sync). Before the hand-back, the operator's manager kept owning what it
restored and a later Git change to those fields was ignored for ever.
"""

from __future__ import annotations

import json
import pathlib
from typing import Any

import yaml

from tests.e2e.conftest import Case
from tests.e2e.stack import REPO
from tests.harness import managed

POLICY = "gitops"
BREACH, HEALTHY = 0.2, 0.95
ARGOCD = "argocd-controller"
CONFIG, API, WEB, WEB_HPA = "gitops-config", "gitops-api", "gitops-web", "gitops-web-hpa"
MODE = ("f:data", "f:MODE")
REPLICAS = ("f:spec", "f:replicas")
MIN_REPLICAS = ("f:spec", "f:minReplicas")


def recipe_managers(kind: str) -> list[str]:
    """The `managedFieldsManagers` the shipped Application lists for a kind."""
    app = yaml.safe_load((REPO / "deploy" / "argocd" / "example-workloads-application.yaml").read_text())
    rules = [d for d in app["spec"]["ignoreDifferences"] if d["kind"] == kind]
    return [manager for rule in rules for manager in rule.get("managedFieldsManagers") or []]


def ignored_by_recipe(obj: dict[str, Any]) -> set[managed.Path]:
    """What Argo CD leaves out of the diff: every field owned by an entry of a listed manager (any operation)."""
    listed = set(recipe_managers(obj["kind"]))
    entries = obj["metadata"].get("managedFields") or []
    return set().union(*(managed.from_fields_v1(e["fieldsV1"]) for e in entries if e["manager"] in listed))


def manifests(ns: str, *, mode: str = "normal", replicas: int = 2, min_replicas: int = 2) -> list[dict[str, Any]]:
    """The team's Git: a ConfigMap, a Deployment scaled by hand and one driven by an HPA."""

    def deployment(name: str, count: int) -> dict[str, Any]:
        template = {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}}
        spec = {"replicas": count, "selector": {"matchLabels": {"app": name}}, "template": template}
        return {
            "apiVersion": "apps/v1",
            "kind": "Deployment",
            "metadata": {"name": name, "namespace": ns},
            "spec": spec,
        }

    hpa_spec = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": WEB},
        "minReplicas": min_replicas,
        "maxReplicas": 8,
    }
    return [
        {
            "apiVersion": "v1",
            "kind": "ConfigMap",
            "metadata": {"name": CONFIG, "namespace": ns},
            "data": {"MODE": mode, "OTHER": "kept"},
        },
        deployment(API, replicas),
        deployment(WEB, 2),
        {
            "apiVersion": "autoscaling/v2",
            "kind": "HorizontalPodAutoscaler",
            "metadata": {"name": WEB_HPA, "namespace": ns},
            "spec": hpa_spec,
        },
    ]


def argocd_sync(case: Case, tmp_path: pathlib.Path, docs: list[dict[str, Any]]) -> None:
    """A sync with ServerSideApply=true: a server-side apply of the manifests under Argo CD's field manager."""
    file = tmp_path / "manifests.yaml"
    file.write_text(yaml.safe_dump_all(docs))
    case.kubectl("apply", "--server-side", f"--field-manager={ARGOCD}", "--force-conflicts", "-f", str(file))


def live(case: Case, kind: str, name: str) -> dict[str, Any]:
    text = case.kubectl("get", kind, name, "-n", case.ns, "-o", "json", "--show-managed-fields")
    found: dict[str, Any] = json.loads(text)
    return found


def phase() -> dict[str, Any]:
    return {
        "name": "immediate",
        "after": "0s",
        "actions": [
            {"name": "mode", "configMap": {"name": CONFIG, "data": {"MODE": "degraded"}}},
            {"name": "scale-api", "scale": {"kind": "Deployment", "name": API, "replicas": 5}},
            {"name": "scale-web", "scale": {"kind": "Deployment", "name": WEB, "replicas": 6}},
        ],
    }


def test_after_a_rollback_a_git_change_to_a_restored_field_is_a_difference_argo_cd_does_not_ignore(
    case: Case, tmp_path: pathlib.Path
) -> None:
    argocd_sync(case, tmp_path, manifests(case.ns))
    case.create_ready(POLICY, phases=[phase()])

    case.set(hit_rate=BREACH)
    case.wait_status(
        POLICY,
        "all applied",
        lambda s: {c["action"] for c in s.get("applied") or []} == {"mode", "scale-api", "scale-web"},
    )
    # During the incident the recipe does what it is for: the mitigations are not a diff.
    assert MODE in ignored_by_recipe(live(case, "configmap", CONFIG))
    assert REPLICAS in ignored_by_recipe(live(case, "deployment", API))
    assert MIN_REPLICAS in ignored_by_recipe(live(case, "hpa", WEB_HPA))

    case.set(hit_rate=HEALTHY)
    case.wait_status(POLICY, "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=60)

    restored = {
        ("ConfigMap", CONFIG): (live(case, "configmap", CONFIG), MODE),
        ("Deployment", API): (live(case, "deployment", API), REPLICAS),
        ("HorizontalPodAutoscaler", WEB_HPA): (live(case, "hpa", WEB_HPA), MIN_REPLICAS),
    }
    assert restored["ConfigMap", CONFIG][0]["data"] == {"MODE": "normal", "OTHER": "kept"}
    assert restored["Deployment", API][0]["spec"]["replicas"] == 2
    assert restored["HorizontalPodAutoscaler", WEB_HPA][0]["spec"]["minReplicas"] == 2
    for (kind, name), (obj, field) in restored.items():
        entries = obj["metadata"].get("managedFields") or []
        # (a) no entry of the operator's manager (main or `subresource: scale`) owns a field it restored
        assert all(
            e["manager"] != "stampede-operator" or field not in managed.from_fields_v1(e["fieldsV1"]) for e in entries
        ), (
            kind,
            name,
            entries,
        )
        # (b) so Git changing it is a difference the recipe does not ignore
        assert field not in ignored_by_recipe(obj), (kind, name, entries)

    # And Git's change lands, owned by Argo CD again.
    argocd_sync(case, tmp_path, manifests(case.ns, mode="from-git", replicas=3, min_replicas=3))
    config = live(case, "configmap", CONFIG)
    assert config["data"]["MODE"] == "from-git"
    assert live(case, "deployment", API)["spec"]["replicas"] == 3
    assert live(case, "hpa", WEB_HPA)["spec"]["minReplicas"] == 3
    argocd = [e for e in config["metadata"]["managedFields"] if e["manager"] == ARGOCD]
    assert any(MODE in managed.from_fields_v1(e["fieldsV1"]) for e in argocd)
