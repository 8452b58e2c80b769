"""After a rollback the operator's field manager owns nothing it restored (issue 10, ownership handed back).

The targets are created the way Argo CD creates them (an update or a server-side apply by
`argocd-controller`), changed and rolled back by the real actuators through the operator's `Kube`
client, and the stored `metadata.managedFields` are read as Argo CD's `managedFieldsManagers` rule reads
them: every entry whose manager is `stampede-operator`, whatever its operation or subresource.
"""

from __future__ import annotations

import logging
from datetime import UTC, datetime, timedelta

import pytest

from stampede.actuators.handback import released
from stampede.actuators.kube import FIELD_MANAGER, JSON, Kube, KubeError, path
from stampede.actuators.targets import APPLIED_BY, Actuators, Outcome, Target
from stampede.api.spec import Action
from stampede.api.status import AppliedChange, WorkloadStatusRef
from tests.harness import managed
from tests.harness.server import HarnessThread
from tests.support.kube import make_kube

pytestmark = pytest.mark.timeout(60)

NS = "shop"
POLICY = "cache-policy"
INCIDENT = "20250101-120000"
ARGOCD = "argocd-controller"
APPLY = "application/apply-patch+yaml"
MERGE = "application/merge-patch+json"
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
TARGET = Target(namespace=NS, policy=POLICY)
RESOURCES = {
    "ConfigMap": ("", "v1", "configmaps"),
    "Deployment": ("apps", "v1", "deployments"),
    "StatefulSet": ("apps", "v1", "statefulsets"),
    "HorizontalPodAutoscaler": ("autoscaling", "v2", "horizontalpodautoscalers"),
}


def as_argocd(h: HarnessThread, obj: JSON, *, server_side: bool) -> None:
    """Create the object as Argo CD does: a server-side apply, or a create (client-side apply) under its manager."""
    info = h.store.info(*RESOURCES[obj["kind"]])
    if server_side:
        h.call(
            h.store.patch,
            info,
            namespace=NS,
            name=obj["metadata"]["name"],
            body=obj,
            content_type=APPLY,
            field_manager=ARGOCD,
            force=True,
        )
    else:
        h.call(h.store.create, info, namespace=NS, body=obj, field_manager=ARGOCD)


def configmap(data: dict[str, str]) -> JSON:
    return {
        "apiVersion": "v1",
        "kind": "ConfigMap",
        "metadata": {"name": "cache-config", "namespace": NS},
        "data": data,
    }


def workload(kind: str, replicas: int) -> JSON:
    spec: JSON = {
        "replicas": replicas,
        "selector": {"matchLabels": {"app": "api"}},
        "template": {"metadata": {"labels": {"app": "api"}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": "api", "namespace": NS}, "spec": spec}


def hpa(min_replicas: int) -> JSON:
    spec: JSON = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": "Deployment", "name": "api"},
        "minReplicas": min_replicas,
        "maxReplicas": 8,
    }
    meta = {"name": "api-hpa", "namespace": NS}
    return {"apiVersion": "autoscaling/v2", "kind": "HorizontalPodAutoscaler", "metadata": meta, "spec": spec}


def cm_action(data: dict[str, str], *, name: str = "warm-cache") -> Action:
    return Action.model_validate({"name": name, "configMap": {"name": "cache-config", "data": data}})


def scale_action(replicas: int, *, kind: str = "Deployment") -> Action:
    return Action.model_validate({"name": "scale-api", "scale": {"kind": kind, "name": "api", "replicas": replicas}})


def ok(outcome: Outcome, reason: str) -> AppliedChange:
    assert outcome.reason == reason, outcome.message
    assert outcome.change is not None
    return outcome.change


def rolled_back(outcome: Outcome) -> None:
    assert outcome.reason == "ActionRolledBack", outcome.message


def operator_owns(obj: JSON) -> set[managed.Path]:
    """What Argo CD's `managedFieldsManagers: [stampede-operator]` ignores: every entry of that manager."""
    entries = obj["metadata"].get("managedFields") or []
    return set().union(*(managed.from_fields_v1(e["fieldsV1"]) for e in entries if e["manager"] == FIELD_MANAGER))


def owners_of(obj: JSON, field: managed.Path) -> set[tuple[str, str | None]]:
    entries = obj["metadata"].get("managedFields") or []
    return {(e["manager"], e.get("subresource")) for e in entries if field in managed.from_fields_v1(e["fieldsV1"])}


DATA_TTL = ("f:data", "f:ttl")
REPLICAS = ("f:spec", "f:replicas")
MIN_REPLICAS = ("f:spec", "f:minReplicas")


@pytest.mark.parametrize("server_side", [False, True], ids=["created by update", "server-side applied"])
def test_a_restored_configmap_key_is_no_longer_owned_by_the_operator(
    h: HarnessThread, kube: Kube, act: Actuators, server_side: bool
) -> None:
    as_argocd(h, configmap({"ttl": "60", "other": "x"}), server_side=server_side)
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied")
    assert DATA_TTL in operator_owns(kube.get(path("ConfigMap", NS, "cache-config")))

    rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    after = kube.get(path("ConfigMap", NS, "cache-config"))
    assert after["data"] == {"ttl": "60", "other": "x"}
    assert operator_owns(after) == set()
    assert [e["manager"] for e in after["metadata"]["managedFields"]] == [ARGOCD]
    assert ("f:data", "f:other") in managed.from_fields_v1(after["metadata"]["managedFields"][0]["fieldsV1"])


def test_a_key_restored_to_an_older_changes_value_stays_the_operators_until_the_last_undo(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    as_argocd(h, configmap({"ttl": "60"}), server_side=False)
    first = ok(
        act.apply(TARGET, cm_action({"ttl": "600"}, name="first"), incident=INCIDENT, now=T0, dry_run=False),
        "ActionApplied",
    )
    second = ok(
        act.apply(TARGET, cm_action({"ttl": "900"}, name="second"), incident=INCIDENT, now=T0, dry_run=False),
        "ActionApplied",
    )

    rolled_back(act.undo(TARGET, second, now=T1, dry_run=False, last=False))
    middle = kube.get(path("ConfigMap", NS, "cache-config"))
    assert middle["data"]["ttl"] == "600"
    # still the first change's mitigation, and the mark of the policy: both stay the operator's
    assert {DATA_TTL, ("f:metadata", "f:annotations", f"f:{APPLIED_BY}")} <= operator_owns(middle)

    rolled_back(act.undo(TARGET, first, now=T1, dry_run=False))
    after = kube.get(path("ConfigMap", NS, "cache-config"))
    assert after["data"]["ttl"] == "60"
    assert operator_owns(after) == set()


@pytest.mark.parametrize("kind", ["Deployment", "StatefulSet"])
@pytest.mark.parametrize("server_side", [False, True], ids=["created by update", "server-side applied"])
def test_replicas_restored_through_the_scale_subresource_are_no_longer_owned_by_the_operator(
    h: HarnessThread, kube: Kube, act: Actuators, kind: str, server_side: bool
) -> None:
    as_argocd(h, workload(kind, 2), server_side=server_side)
    change = ok(
        act.apply(TARGET, scale_action(5, kind=kind), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied"
    )
    assert owners_of(kube.get(path(kind, NS, "api")), REPLICAS) == {(FIELD_MANAGER, "scale")}

    rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    after = kube.get(path(kind, NS, "api"))
    assert after["spec"]["replicas"] == 2
    assert operator_owns(after) == set()
    assert all(e["manager"] != FIELD_MANAGER for e in after["metadata"]["managedFields"])


def test_a_restart_stamp_the_operator_wrote_stays_its_own_after_the_replicas_go_back(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    as_argocd(h, workload("Deployment", 2), server_side=True)
    change = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied")
    assert act.restart(TARGET, WorkloadStatusRef(kind="Deployment", name="api"), now=T0) is None

    rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    template_annotations = ("f:spec", "f:template", "f:metadata", "f:annotations")
    stamp = (*template_annotations, "f:kubectl.kubernetes.io/restartedAt")
    assert operator_owns(kube.get(path("Deployment", NS, "api"))) == {template_annotations, stamp}


def test_an_hpas_restored_min_replicas_is_no_longer_owned_by_the_operator(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    as_argocd(h, workload("Deployment", 2), server_side=True)
    as_argocd(h, hpa(2), server_side=True)
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied")
    assert change.kind == "HorizontalPodAutoscaler"
    assert MIN_REPLICAS in operator_owns(kube.get(path("HorizontalPodAutoscaler", NS, "api-hpa")))

    rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    after = kube.get(path("HorizontalPodAutoscaler", NS, "api-hpa"))
    assert after["spec"]["minReplicas"] == 2
    assert operator_owns(after) == set()


class _Failing(Kube):
    """A client whose managedFields writes fail, or meet a concurrent write first (a 409 once)."""

    mode = "fail"
    attempts = 0

    def json_patch(self, path: str, ops: list[JSON]) -> JSON:
        if any(op["path"] == "/metadata/managedFields" for op in ops):
            type(self).attempts += 1
            if self.mode == "fail":
                raise KubeError(500, "etcdserver: request timed out")
            if type(self).attempts == 1:  # someone writes between the hand-back's read and its write
                self.merge(path, {"metadata": {"labels": {"touched": "yes"}}})
        return super().json_patch(path, ops)


def test_a_hand_back_that_fails_is_logged_and_never_fails_or_repeats_the_rollback(
    h: HarnessThread, caplog: pytest.LogCaptureFixture
) -> None:
    _Failing.mode, _Failing.attempts = "fail", 0
    kube = make_kube(h, _Failing)
    act = Actuators(kube, max_replicas=10, journal_namespace=NS)
    as_argocd(h, configmap({"ttl": "60"}), server_side=False)
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied")
    before = len(h.log.entries())

    with caplog.at_level(logging.WARNING, logger="stampede.handback"):
        rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    assert kube.get(path("ConfigMap", NS, "cache-config"))["data"] == {"ttl": "60"}
    restores = [r for r in h.log.entries(since=before) if r.verb == "patch" and r.content_type == MERGE]
    assert len(restores) == 1, "the rollback itself was written once"
    assert _Failing.attempts == 1  # only a 409 is retried
    assert "could not give up field ownership of data" in caplog.text


def test_a_hand_back_that_meets_a_concurrent_write_is_retried_with_a_fresh_read(h: HarnessThread) -> None:
    _Failing.mode, _Failing.attempts = "conflict", 0
    kube = make_kube(h, _Failing)
    act = Actuators(kube, max_replicas=10, journal_namespace=NS)
    as_argocd(h, configmap({"ttl": "60"}), server_side=False)
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False), "ActionApplied")

    rolled_back(act.undo(TARGET, change, now=T1, dry_run=False))

    after = kube.get(path("ConfigMap", NS, "cache-config"))
    assert _Failing.attempts == 2
    assert after["metadata"]["labels"] == {"touched": "yes"}
    # the concurrent write (made by the operator's manager here) is its own
    assert operator_owns(after) == {("f:metadata", "f:labels"), ("f:metadata", "f:labels", "f:touched")}


def test_released_removes_only_the_operators_paths_and_drops_entries_left_empty() -> None:
    entries = [
        {"manager": ARGOCD, "operation": "Apply", "fieldsV1": {"f:spec": {"f:replicas": {}}}},
        {
            "manager": FIELD_MANAGER,
            "operation": "Update",
            "subresource": "scale",
            "fieldsV1": {"f:spec": {"f:replicas": {}}},
        },
        {
            "manager": FIELD_MANAGER,
            "operation": "Update",
            "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:a": {}}}, "f:spec": {"f:replicas": {}}},
        },
    ]
    result = released(entries, [REPLICAS])
    assert result == [
        entries[0],
        {**entries[2], "fieldsV1": {"f:metadata": {"f:annotations": {".": {}, "f:a": {}}}}},
    ]
    assert released(result, [REPLICAS]) is None  # nothing left to give up: no write
