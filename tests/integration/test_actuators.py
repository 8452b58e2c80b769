"""The actuators against the emulated API server: every change is exact, idempotent, polite and undoable.

Each test starts its own in-process API server (tens of milliseconds), seeds the objects it needs and
drives `Actuators` through the operator's real `Kube` client, then checks the stored objects and the
server's request log. Crashes are simulated by asking whether a change never recorded landed on its target,
and by harness fault injection between the mark and the change itself.
"""

from __future__ import annotations

import json
import pathlib
import string
import time
from collections.abc import Callable, Iterator
from datetime import UTC, datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stampede.actuators.kube import CONFLICT_ATTEMPTS, JSON, Kube, KubeError, path
from stampede.actuators.memory import MemoryActuator, MemoryTargets
from stampede.actuators.ownership import LEGACY_LEDGER
from stampede.actuators.targets import (
    APPLIED_BY,
    DEFAULT_JOB_TTL,
    INCIDENT_LABEL,
    POLICY_LABEL,
    RESTARTED_AT,
    Actuators,
    Outcome,
    Target,
    job_name,
)
from stampede.api.kinds import ChangeKind
from stampede.api.spec import Action
from stampede.api.status import AppliedChange, WorkloadStatusRef, format_time
from stampede.engine.changes import apply_merge_patch, configmap_apply_patch, configmap_rollback, plan_configmap
from stampede.engine.digests import digest
from tests.harness.server import HarnessThread
from tests.support.kube import make_kube

pytestmark = pytest.mark.timeout(60)

REPO = pathlib.Path(__file__).resolve().parents[2]
NS = "shop"
POLICY = "cache-policy"
OTHER_POLICY = "other-policy"
INCIDENT = "20250101-120000"  # incident ids are the start time, label-safe
MAX_REPLICAS = 10
T0 = datetime(2025, 1, 1, 12, 0, tzinfo=UTC)
T1 = T0 + timedelta(minutes=5)
WRITE_VERBS = ("create", "update", "patch", "delete", "deletecollection")


# -- fixtures and helpers ---------------------------------------------------------------------------


TARGET = Target(namespace=NS, policy=POLICY)


def cm_action(
    data: dict[str, str],
    *,
    name: str = "warm-cache",
    cm: str = "cache-config",
    restart: list[dict[str, str]] | None = None,
) -> Action:
    return Action.model_validate({"name": name, "configMap": {"name": cm, "data": data, "restart": restart or []}})


def scale_action(replicas: int, *, kind: str = "Deployment", name: str = "api", action: str = "scale-api") -> Action:
    return Action.model_validate({"name": action, "scale": {"kind": kind, "name": name, "replicas": replicas}})


def job_action(cronjob: str = "warmer", *, name: str = "run-warmer") -> Action:
    return Action.model_validate({"name": name, "job": {"fromCronJob": cronjob}})


def configmap(
    name: str = "cache-config", *, data: dict[str, str] | None = None, annotations: dict[str, str] | None = None
) -> JSON:
    meta: JSON = {"name": name, "namespace": NS}
    if annotations is not None:
        meta["annotations"] = annotations
    return {"apiVersion": "v1", "kind": "ConfigMap", "metadata": meta, "data": data or {}}


def workload(kind: str = "Deployment", name: str = "api", *, replicas: int | None = 2) -> JSON:
    spec: JSON = {
        "selector": {"matchLabels": {"app": name}},
        "template": {"metadata": {"labels": {"app": name}}, "spec": {"containers": [{"name": "c", "image": "nginx"}]}},
    }
    if replicas is not None:
        spec["replicas"] = replicas
    return {"apiVersion": "apps/v1", "kind": kind, "metadata": {"name": name, "namespace": NS}, "spec": spec}


def hpa(
    target: str = "api",
    *,
    kind: str = "Deployment",
    min_replicas: int | None = 2,
    max_replicas: int = 6,
    name: str = "api-hpa",
) -> JSON:
    spec: JSON = {
        "scaleTargetRef": {"apiVersion": "apps/v1", "kind": kind, "name": target},
        "maxReplicas": max_replicas,
    }
    if min_replicas is not None:
        spec["minReplicas"] = min_replicas
    return {
        "apiVersion": "autoscaling/v2",
        "kind": "HorizontalPodAutoscaler",
        "metadata": {"name": name, "namespace": NS},
        "spec": spec,
    }


def cronjob(name: str = "warmer") -> JSON:
    return {
        "apiVersion": "batch/v1",
        "kind": "CronJob",
        "metadata": {"name": name, "namespace": NS},
        "spec": {
            "schedule": "*/30 * * * *",
            "jobTemplate": {
                "metadata": {"labels": {"app": "warmer", "team": "cache"}, "annotations": {"owner": "cache-team"}},
                "spec": {
                    "backoffLimit": 2,
                    "template": {
                        "spec": {"restartPolicy": "Never", "containers": [{"name": "warm", "image": "busybox"}]}
                    },
                },
            },
        },
    }


def read(kube: Kube, kind: str, name: str) -> JSON:
    return kube.get(path(kind, NS, name))


def annotations(obj: JSON) -> dict[str, str]:
    return dict((obj.get("metadata") or {}).get("annotations") or {})


def writes(h: HarnessThread, since: int = 0, **filters: Any) -> list[Any]:
    return [r for r in h.log.entries(since=since, **filters) if r.verb in WRITE_VERBS]


def other_writer(kube: Kube, kind: str, name: str, patch: JSON, subresource: str | None = None) -> None:
    """Someone else (GitOps, a human with kubectl) changes the object."""
    kube.merge(path(kind, NS, name, subresource), patch)


def ok(outcome: Outcome, reason: str = "ActionApplied") -> AppliedChange:
    assert outcome.ok, outcome.message
    assert outcome.reason == reason, outcome.message
    assert outcome.change is not None
    return outcome.change


# -- ConfigMap ----------------------------------------------------------------------------------------


def test_configmap_apply_merges_keys_and_records_originals_with_none_for_absent_keys(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60", "mode": "normal", "untouched": "x"})])
    action = cm_action({"ttl": "600", "coalesce": "true", "mode": "normal"})

    change = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))

    assert change.kind == "ConfigMap"
    assert change.name == "cache-config"
    assert change.incident == INCIDENT
    assert change.original == {"ttl": digest("60"), "coalesce": None}  # `mode` already held the value: not a change
    assert change.applied == {"ttl": "600", "coalesce": "true"}
    cm = read(kube, "ConfigMap", "cache-config")
    assert cm["data"] == {"ttl": "600", "coalesce": "true", "mode": "normal", "untouched": "x"}
    assert annotations(cm) == {APPLIED_BY: POLICY}, "only the small mark: no annotation grows with the values"
    patches = writes(h, resource="configmaps")
    assert len(patches) == 1, "data and mark land in one request"
    assert patches[0].field_manager == "stampede-operator"
    assert patches[0].content_type == "application/merge-patch+json"


def test_configmap_rollback_restores_data_and_annotations_byte_for_byte(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60", "other": "keep"}, annotations={"argocd.argoproj.io/tracking-id": "x"})])
    before = read(kube, "ConfigMap", "cache-config")
    action = cm_action({"ttl": "600", "coalesce": "true"})
    change = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.ok
    assert outcome.reason == "ActionRolledBack", outcome.message
    after = read(kube, "ConfigMap", "cache-config")
    assert json.dumps(after["data"], sort_keys=True) == json.dumps(before["data"], sort_keys=True)
    assert json.dumps(annotations(after), sort_keys=True) == json.dumps(annotations(before), sort_keys=True)
    assert "coalesce" not in after["data"]
    assert APPLIED_BY not in annotations(after)


def test_configmap_rollback_of_an_object_without_annotations_leaves_none_behind(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    after = read(kube, "ConfigMap", "cache-config")
    assert after["data"] == {"ttl": "60"}
    assert annotations(after) == {}


def test_each_change_is_journalled_before_its_target_is_written_and_a_refusal_writes_nothing(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}), workload("Deployment", "api", replicas=2)])
    journalled: list[tuple[AppliedChange, list[str]]] = []

    def intend(change: AppliedChange) -> str | None:
        journalled.append((change, [r.resource for r in writes(h)]))
        return None

    made = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False, intend=intend))
    scaled = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False, intend=intend))

    # The originals' journal Secret first, then the intent in status, then the target.
    assert journalled == [(made, ["secrets"]), (scaled, ["secrets", "configmaps"])], "journalled before the target"
    mark = h.log.last_id
    refused = act.apply(
        TARGET, cm_action({"ttl": "900"}, name="more"), incident=INCIDENT, now=T0, dry_run=False, intend=lambda c: "no"
    )
    assert (refused.ok, refused.reason) == (False, "ActionFailed")
    assert [r.resource for r in writes(h, since=mark)] == ["secrets", "secrets"], "a refused change is not made"
    assert [r.verb for r in writes(h, since=mark)] == ["create", "delete"], "and its originals are not kept"


def test_a_journalled_change_is_found_on_its_target_only_if_its_write_landed(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}), workload("Deployment", "api", replicas=2)])
    action = cm_action({"ttl": "600", "coalesce": "true"})
    planned = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=True), "WouldApply")
    assert act.landed(TARGET, planned) is False, "journalled, but the write never happened"
    made = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))  # never reaches status
    mark = h.log.last_id

    assert act.landed(TARGET, made) is True
    assert writes(h, since=mark) == [], "finding only reads"
    assert act.undo(TARGET, made, now=T1, dry_run=False).reason == "ActionRolledBack"
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60"}
    assert act.landed(TARGET, made) is False, "nothing left after the rollback"
    gone = made.model_copy(update={"name": "no-such-config"})
    assert act.landed(TARGET, gone) is False


def test_a_scale_change_under_an_hpa_is_found_on_the_hpa(h: HarnessThread, act: Actuators) -> None:
    h.apply([workload(replicas=2), hpa(min_replicas=2, max_replicas=20)])
    made = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    assert made.kind == "HorizontalPodAutoscaler"
    assert act.landed(TARGET, made) is True
    assert act.landed(TARGET, made.model_copy(update={"applied": {"minReplicas": "7"}})) is False


def test_configmap_key_changed_by_someone_else_is_skipped_while_the_others_are_restored(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60", "size": "1Gi"})])
    change = ok(
        act.apply(
            TARGET,
            cm_action({"ttl": "600", "size": "4Gi", "coalesce": "true"}),
            incident=INCIDENT,
            now=T0,
            dry_run=False,
        )
    )
    other_writer(kube, "ConfigMap", "cache-config", {"data": {"ttl": "900"}})

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.ok
    assert outcome.reason == "RollbackSkipped"
    assert outcome.skipped == ("ttl",)
    assert "ttl" in outcome.message
    after = read(kube, "ConfigMap", "cache-config")
    assert after["data"] == {"ttl": "900", "size": "1Gi"}
    assert APPLIED_BY not in annotations(after)


def test_configmap_apply_and_rollback_name_the_workloads_to_restart_and_restart_stamps_the_pod_template(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}), workload("Deployment", "api")])
    action = cm_action({"ttl": "600"}, restart=[{"kind": "Deployment", "name": "api"}])

    outcome = act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False)
    change = ok(outcome)

    # The caller restarts, once per poll for every action that asks (restart coalescing).
    assert [w.name for w in outcome.restarts] == ["api"]
    assert writes(h, resource="deployments") == []
    assert act.restart(TARGET, outcome.restarts[0], now=T0) is None
    template = read(kube, "Deployment", "api")["spec"]["template"]
    assert template["metadata"]["annotations"][RESTARTED_AT] == format_time(T0)
    assert template["metadata"]["labels"] == {"app": "api"}
    assert [w.name for w in change.restart] == ["api"]

    undone = act.undo(TARGET, change, now=T1, dry_run=False)
    assert undone.reason == "ActionRolledBack"
    assert [w.name for w in undone.restarts] == ["api"]
    assert act.restart(TARGET, undone.restarts[0], now=T1) is None
    template = read(kube, "Deployment", "api")["spec"]["template"]
    assert template["metadata"]["annotations"][RESTARTED_AT] == format_time(T1)
    assert len(writes(h, resource="deployments")) == 2


def test_a_restart_of_a_missing_workload_says_so(h: HarnessThread, act: Actuators) -> None:
    problem = act.restart(TARGET, WorkloadStatusRef(kind="Deployment", name="nowhere"), now=T0)
    assert problem == "not found"


def test_rollout_complete_reads_the_workload_and_none_when_it_cannot(h: HarnessThread, act: Actuators) -> None:
    h.apply([workload("Deployment", "api")])
    api = WorkloadStatusRef(kind="Deployment", name="api")
    assert act.rollout_complete(TARGET, api) is False  # the harness's controller reports progress over time
    deadline = time.monotonic() + 10
    while not act.rollout_complete(TARGET, api):
        assert time.monotonic() < deadline, "the rollout never completed"
        time.sleep(0.05)
    assert act.rollout_complete(TARGET, WorkloadStatusRef(kind="Deployment", name="nowhere")) is None


def test_configmap_missing_is_an_action_failed_outcome_naming_it(h: HarnessThread, act: Actuators) -> None:
    outcome = act.apply(TARGET, cm_action({"ttl": "600"}, cm="nowhere"), incident=INCIDENT, now=T0, dry_run=False)

    assert not outcome.ok
    assert outcome.reason == "ActionFailed"
    assert "nowhere" in outcome.message
    assert "not found" in outcome.message
    assert writes(h) == []


def test_configmap_dry_run_computes_the_same_change_and_writes_nothing(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}), workload("Deployment", "api")])
    action = cm_action({"ttl": "600", "coalesce": "true"}, restart=[{"kind": "Deployment", "name": "api"}])
    before = read(kube, "ConfigMap", "cache-config")
    mark = h.log.last_id

    planned = act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=True)

    assert planned.ok
    assert planned.reason == "WouldApply"
    assert writes(h, since=mark) == []
    assert read(kube, "ConfigMap", "cache-config") == before
    undo = act.undo(TARGET, ok(planned, "WouldApply"), now=T1, dry_run=True)
    assert undo.reason == "WouldApply"
    assert writes(h, since=mark) == []
    real = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))
    assert planned.change == real


def test_configmap_held_by_another_policy_is_a_conflict_naming_the_owner_and_writes_nothing(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}, annotations={APPLIED_BY: OTHER_POLICY}), workload("Deployment", "api")])
    action = cm_action({"ttl": "600"}, restart=[{"kind": "Deployment", "name": "api"}])

    outcome = act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False)

    assert not outcome.ok
    assert outcome.reason == "Conflict"
    assert outcome.owner == OTHER_POLICY
    assert OTHER_POLICY in outcome.message
    assert writes(h) == []
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60"}


def test_configmap_two_actions_of_one_policy_share_the_target_and_roll_back_newest_first(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}, annotations={"keep": "me"})])
    first = ok(act.apply(TARGET, cm_action({"ttl": "600"}, name="first"), incident=INCIDENT, now=T0, dry_run=False))
    second = ok(
        act.apply(
            TARGET, cm_action({"ttl": "900", "extra": "1"}, name="second"), incident=INCIDENT, now=T0, dry_run=False
        )
    )
    assert second.original == {"ttl": digest("600"), "extra": None}

    assert act.undo(TARGET, second, now=T1, dry_run=False, last=False).reason == "ActionRolledBack"
    middle = read(kube, "ConfigMap", "cache-config")
    assert middle["data"] == {"ttl": "600"}
    assert annotations(middle)[APPLIED_BY] == POLICY, "still changed by the first action"

    assert act.undo(TARGET, first, now=T1, dry_run=False).reason == "ActionRolledBack"
    after = read(kube, "ConfigMap", "cache-config")
    assert after["data"] == {"ttl": "60"}
    assert annotations(after) == {"keep": "me"}


# -- scale --------------------------------------------------------------------------------------------


def test_scale_raises_replicas_through_the_scale_subresource(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])

    change = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))

    assert (change.kind, change.name) == ("Deployment", "api")
    assert change.original == {"replicas": "2"}
    assert change.applied == {"replicas": "5"}
    obj = read(kube, "Deployment", "api")
    assert obj["spec"]["replicas"] == 5
    assert annotations(obj) == {APPLIED_BY: POLICY}
    scale_writes = writes(h, resource="deployments", subresource="scale")
    assert len(scale_writes) == 1
    assert scale_writes[0].method == "PATCH"
    assert scale_writes[0].field_manager == "stampede-operator"


def test_scale_never_scales_down(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=7)])

    outcome = act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False)

    change = ok(outcome)
    assert change.applied == {}
    assert "already 7" in outcome.message
    assert writes(h) == []
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 7
    assert act.undo(TARGET, change, now=T1, dry_run=False).ok
    assert writes(h) == []


def test_scale_is_capped_at_max_replicas(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])

    outcome = act.apply(TARGET, scale_action(50), incident=INCIDENT, now=T0, dry_run=False)

    assert ok(outcome).applied == {"replicas": str(MAX_REPLICAS)}
    assert "capped" in outcome.message
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == MAX_REPLICAS


def test_scale_with_an_hpa_raises_min_replicas_capped_by_max_and_leaves_replicas_alone(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply(
        [
            workload("Deployment", "api", replicas=3),
            hpa("api", min_replicas=2, max_replicas=6),
            hpa("other", min_replicas=1, max_replicas=9, name="other-hpa"),
        ]
    )

    change = ok(act.apply(TARGET, scale_action(8), incident=INCIDENT, now=T0, dry_run=False))

    assert (change.kind, change.name) == ("HorizontalPodAutoscaler", "api-hpa")
    assert change.original == {"minReplicas": "2"}
    assert change.applied == {"minReplicas": "6"}
    assert read(kube, "HorizontalPodAutoscaler", "api-hpa")["spec"]["minReplicas"] == 6
    assert read(kube, "HorizontalPodAutoscaler", "other-hpa")["spec"]["minReplicas"] == 1
    assert annotations(read(kube, "HorizontalPodAutoscaler", "api-hpa"))[APPLIED_BY] == POLICY
    deployment = read(kube, "Deployment", "api")
    assert deployment["spec"]["replicas"] == 3
    assert writes(h, resource="deployments") == []

    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    restored = read(kube, "HorizontalPodAutoscaler", "api-hpa")
    assert restored["spec"]["minReplicas"] == 2
    assert annotations(restored) == {}


def test_scale_with_an_hpa_without_min_replicas_removes_it_again_on_rollback(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([workload("Deployment", "api", replicas=1), hpa("api", min_replicas=None, max_replicas=20)])

    change = ok(act.apply(TARGET, scale_action(4), incident=INCIDENT, now=T0, dry_run=False))
    assert change.original == {"minReplicas": None}
    assert read(kube, "HorizontalPodAutoscaler", "api-hpa")["spec"]["minReplicas"] == 4

    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    assert "minReplicas" not in read(kube, "HorizontalPodAutoscaler", "api-hpa")["spec"]


def test_scale_rollback_restores_replicas_exactly(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.reason == "ActionRolledBack", outcome.message
    obj = read(kube, "Deployment", "api")
    assert obj["spec"]["replicas"] == 2
    assert annotations(obj) == {}
    assert len(writes(h, resource="deployments", subresource="scale")) == 2


def test_scale_rollback_skips_a_workload_someone_scaled_further(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 9}}, subresource="scale")

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.reason == "RollbackSkipped"
    assert outcome.skipped == ("replicas",)
    assert "replicas" in outcome.message
    obj = read(kube, "Deployment", "api")
    assert obj["spec"]["replicas"] == 9
    assert annotations(obj) == {}


def test_scale_hpa_rollback_skips_min_replicas_someone_changed(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api"), hpa("api", min_replicas=2, max_replicas=8)])
    change = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))
    other_writer(kube, "HorizontalPodAutoscaler", "api-hpa", {"spec": {"minReplicas": 7}})

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.reason == "RollbackSkipped"
    assert outcome.skipped == ("minReplicas",)
    assert read(kube, "HorizontalPodAutoscaler", "api-hpa")["spec"]["minReplicas"] == 7


def test_scale_a_failed_scale_write_after_the_mark_leaves_the_count_and_a_later_apply_completes(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    h.faults.add(methods=["PATCH"], resources=["deployments"], subresources=["scale"], status=500, times=1)

    failed = act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False)

    assert (failed.ok, failed.reason) == (False, "ActionFailed")
    half = read(kube, "Deployment", "api")
    assert half["spec"]["replicas"] == 2
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    assert (change.original, change.applied) == ({"replicas": "2"}, {"replicas": "6"})
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 6
    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    after = read(kube, "Deployment", "api")
    assert after["spec"]["replicas"] == 2
    assert annotations(after) == {}


def test_scale_works_for_statefulsets_too(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("StatefulSet", "cache", replicas=3)])
    action = scale_action(5, kind="StatefulSet", name="cache", action="scale-cache")

    change = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))

    assert (change.kind, change.name, change.original, change.applied) == (
        "StatefulSet",
        "cache",
        {"replicas": "3"},
        {"replicas": "5"},
    )
    assert read(kube, "StatefulSet", "cache")["spec"]["replicas"] == 5
    assert len(writes(h, resource="statefulsets", subresource="scale")) == 1
    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    restored = read(kube, "StatefulSet", "cache")
    assert restored["spec"]["replicas"] == 3
    assert annotations(restored) == {}


def test_scale_dry_run_writes_nothing(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])

    planned = act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=True)

    assert ok(planned, "WouldApply").applied == {"replicas": "6"}
    assert writes(h) == []


def test_scale_of_a_workload_held_by_another_policy_is_a_conflict(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    held = workload("Deployment", "api", replicas=2)
    held["metadata"]["annotations"] = {APPLIED_BY: OTHER_POLICY}
    h.apply([held])

    outcome = act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False)

    assert (outcome.ok, outcome.reason, outcome.owner) == (False, "Conflict", OTHER_POLICY)
    assert writes(h) == []


def test_scale_missing_workload_is_action_failed(h: HarnessThread, act: Actuators) -> None:
    outcome = act.apply(TARGET, scale_action(6, name="ghost"), incident=INCIDENT, now=T0, dry_run=False)
    assert (outcome.ok, outcome.reason) == (False, "ActionFailed")
    assert "ghost" in outcome.message


# -- job ----------------------------------------------------------------------------------------------


def test_job_is_created_from_the_cronjob_template_like_kubectl_create_job_from(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([cronjob()])
    cj = read(kube, "CronJob", "warmer")

    change = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))

    jobs = kube.get(path("Job", NS))["items"]
    assert len(jobs) == 1
    job = jobs[0]
    assert job["metadata"]["name"] == change.name == job_name("warmer", policy=POLICY, incident=INCIDENT)
    labels = job["metadata"]["labels"]
    assert labels[POLICY_LABEL] == POLICY
    assert labels[INCIDENT_LABEL] == INCIDENT
    assert labels["app"] == "warmer"
    assert labels["team"] == "cache"
    assert job["metadata"]["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["metadata"]["annotations"]["owner"] == "cache-team"
    assert job["spec"]["ttlSecondsAfterFinished"] == DEFAULT_JOB_TTL
    assert job["spec"]["backoffLimit"] == 2
    assert job["spec"]["template"] == cj["spec"]["jobTemplate"]["spec"]["template"]
    refs = job["metadata"]["ownerReferences"]
    assert [(r["kind"], r["name"], r["uid"]) for r in refs] == [("CronJob", "warmer", cj["metadata"]["uid"])]
    assert refs[0]["apiVersion"] == "batch/v1"
    assert refs[0]["controller"] is True
    assert "blockOwnerDeletion" not in refs[0]  # as kubectl create job --from: no cronjobs/finalizers rights needed
    assert len(job["metadata"]["name"]) <= 63


def test_job_second_apply_for_the_same_incident_finds_the_existing_job(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([cronjob()])
    first = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))
    mark = h.log.last_id

    outcome = act.apply(TARGET, job_action(), incident=INCIDENT, now=T1, dry_run=False)

    assert ok(outcome).name == first.name
    assert "existing" in outcome.message.lower()
    assert [r.status for r in writes(h, since=mark)] == [409]
    assert len(kube.get(path("Job", NS))["items"]) == 1


def test_job_for_a_different_incident_is_a_new_job(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([cronjob()])
    first = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))
    second = ok(act.apply(TARGET, job_action(), incident="20250102-080000", now=T1, dry_run=False))

    assert first.name != second.name
    jobs = kube.get(path("Job", NS))["items"]
    assert sorted(j["metadata"]["labels"][INCIDENT_LABEL] for j in jobs) == [INCIDENT, "20250102-080000"]


def test_job_keeps_a_ttl_set_by_the_template(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    cj = cronjob()
    cj["spec"]["jobTemplate"]["spec"]["ttlSecondsAfterFinished"] = 60
    h.apply([cj])
    change = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))
    assert read(kube, "Job", change.name)["spec"]["ttlSecondsAfterFinished"] == 60


def test_job_from_a_missing_cronjob_is_action_failed(h: HarnessThread, act: Actuators) -> None:
    outcome = act.apply(TARGET, job_action("nope"), incident=INCIDENT, now=T0, dry_run=False)
    assert (outcome.ok, outcome.reason) == (False, "ActionFailed")
    assert "nope" in outcome.message
    assert writes(h) == []


def test_job_dry_run_creates_nothing(h: HarnessThread, act: Actuators) -> None:
    h.apply([cronjob()])
    ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=True), "WouldApply")
    assert writes(h) == []


def test_job_undo_leaves_the_job_to_finish(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([cronjob()])
    change = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))
    mark = h.log.last_id

    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert (outcome.ok, outcome.reason) == (True, "JobLeftToFinish")
    assert "ttlSecondsAfterFinished" in outcome.message
    assert writes(h, since=mark) == []
    assert read(kube, "Job", change.name)["metadata"]["name"] == change.name


# -- drift --------------------------------------------------------------------------------------------


def test_drift_reverted_configmap_keys_are_listed_and_reapplied_keeping_originals(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60", "size": "1Gi"}), workload("Deployment", "api")])
    change = ok(
        act.apply(
            TARGET,
            cm_action({"ttl": "600", "size": "4Gi"}, restart=[{"kind": "Deployment", "name": "api"}]),
            incident=INCIDENT,
            now=T0,
            dry_run=False,
        )
    )
    assert act.reverted(TARGET, change) == []
    other_writer(kube, "ConfigMap", "cache-config", {"data": {"ttl": "60"}})

    assert act.reverted(TARGET, change) == ["ttl"]
    outcome = act.reapply(TARGET, change, now=T1)

    assert (outcome.ok, outcome.reason) == (True, "DriftCorrected")
    assert outcome.change is not None
    assert outcome.change.reverts == 1
    assert outcome.change.original == {"ttl": digest("60"), "size": digest("1Gi")}
    assert outcome.change.applied == change.applied
    cm = read(kube, "ConfigMap", "cache-config")
    assert cm["data"] == {"ttl": "600", "size": "4Gi"}
    assert act.reverted(TARGET, outcome.change) == []
    template = read(kube, "Deployment", "api")["spec"]["template"]
    assert template["metadata"]["annotations"][RESTARTED_AT] == format_time(T1)
    twice = act.reapply(TARGET, outcome.change, now=T1)
    assert twice.change is not None
    assert twice.change.reverts == 2

    assert act.undo(TARGET, outcome.change, now=T1, dry_run=False).reason == "ActionRolledBack"
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60", "size": "1Gi"}


def test_drift_a_gitops_replace_that_dropped_the_mark_is_neither_re_applied_nor_rolled_back(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"}, annotations={"argocd.argoproj.io/tracking-id": "x"})])
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    # A self-heal that replaces the object with the Git manifest drops both data and our mark.
    current = read(kube, "ConfigMap", "cache-config")
    current["data"] = {"ttl": "60"}
    current["metadata"]["annotations"] = {"argocd.argoproj.io/tracking-id": "x"}
    kube.request("PUT", path("ConfigMap", NS, "cache-config"), body=current)
    assert act.reverted(TARGET, change) == ["ttl"]
    mark = h.log.last_id

    refused = act.reapply(TARGET, change, now=T1)
    undone = act.undo(TARGET, change, now=T1, dry_run=False)

    # Undo and re-apply require the policy's mark on the target itself, not only a record in status.
    assert (refused.ok, refused.reason) == (False, "ActionFailed")
    assert APPLIED_BY in refused.message
    assert (undone.ok, undone.reason) == (True, "RollbackSkipped")
    assert writes(h, since=mark) == []


def test_an_object_still_carrying_the_older_ledger_annotation_loses_it_with_the_rollback(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    other_writer(kube, "ConfigMap", "cache-config", {"metadata": {"annotations": {LEGACY_LEDGER: "{}"}}})

    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"

    assert annotations(read(kube, "ConfigMap", "cache-config")) == {}


def test_drift_scaled_down_workload_and_lowered_hpa_are_listed_and_reapplied(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply(
        [
            workload("Deployment", "api", replicas=2),
            workload("Deployment", "web", replicas=1),
            hpa("web", min_replicas=1, max_replicas=9, name="web-hpa"),
        ]
    )
    scale = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    hpa_change = ok(
        act.apply(TARGET, scale_action(4, name="web", action="scale-web"), incident=INCIDENT, now=T0, dry_run=False)
    )
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 2}})
    other_writer(kube, "HorizontalPodAutoscaler", "web-hpa", {"spec": {"minReplicas": 1}})

    assert act.reverted(TARGET, scale) == ["replicas"]
    assert act.reverted(TARGET, hpa_change) == ["minReplicas"]
    mark = h.log.last_id
    fixed = act.reapply(TARGET, scale, now=T1)
    fixed_hpa = act.reapply(TARGET, hpa_change, now=T1)

    assert fixed.reason == fixed_hpa.reason == "DriftCorrected"
    assert fixed.change is not None
    assert fixed_hpa.change is not None
    assert (fixed.change.reverts, fixed.change.original) == (1, {"replicas": "2"})
    assert (fixed_hpa.change.reverts, fixed_hpa.change.original) == (1, {"minReplicas": "1"})
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 6
    assert read(kube, "HorizontalPodAutoscaler", "web-hpa")["spec"]["minReplicas"] == 4
    assert writes(h, since=mark, resource="deployments", subresource="scale")
    assert act.reverted(TARGET, fixed.change) == []
    assert act.reverted(TARGET, fixed_hpa.change) == []


def test_drift_reapply_of_an_hpa_minimum_is_capped_at_its_current_max_replicas(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([workload("Deployment", "web", replicas=1), hpa("web", min_replicas=1, max_replicas=9, name="web-hpa")])
    change = ok(
        act.apply(TARGET, scale_action(8, name="web", action="scale-web"), incident=INCIDENT, now=T0, dry_run=False)
    )
    # Someone lowers both the minimum and the maximum (a real server refuses minReplicas > maxReplicas).
    other_writer(kube, "HorizontalPodAutoscaler", "web-hpa", {"spec": {"minReplicas": 1, "maxReplicas": 5}})

    fixed = act.reapply(TARGET, change, now=T1)

    assert fixed.reason == "DriftCorrected"
    assert read(kube, "HorizontalPodAutoscaler", "web-hpa")["spec"]["minReplicas"] == 5


def test_every_replica_write_is_capped_even_when_status_asks_for_more(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    forged = change.model_copy(update={"applied": {"replicas": "100000"}})
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 1}}, "scale")

    act.reapply(TARGET, forged, now=T1)

    assert read(kube, "Deployment", "api")["spec"]["replicas"] == MAX_REPLICAS


@pytest.mark.parametrize(
    "name", ["../../kube-system/deployments/coredns", "a/b", "..", "", "API", "a..b", "-a", "a" * 254]
)
def test_paths_refuse_anything_that_is_not_a_dns_1123_name(name: str) -> None:
    with pytest.raises(KubeError, match="refused"):
        path("Deployment", NS, name)


def test_a_record_naming_a_path_outside_the_namespace_is_refused_before_any_request(
    h: HarnessThread, act: Actuators
) -> None:
    # Built without validation, as a status edited by hand would be if its schema were missing.
    planted = AppliedChange.model_construct(
        action="scale-api",
        kind=ChangeKind.DEPLOYMENT,
        name="../../kube-system/deployments/coredns",
        incident=INCIDENT,
        applied_at=T0,
        original={"replicas": "0"},
        applied={"replicas": "100000"},
        restart=[],
        reverts=0,
    )
    mark = h.log.last_id

    undone = act.undo(TARGET, planted, now=T1, dry_run=False)
    reapplied = act.reapply(TARGET, planted, now=T1)

    assert (undone.ok, undone.reason) == (True, "RollbackSkipped")
    assert "refused" in undone.message
    assert not reapplied.ok
    assert act.landed(TARGET, planted) is False
    assert h.log.entries(since=mark) == [], "not one request"


def test_paths_refuse_unknown_kinds_subresources_and_namespaces() -> None:
    for call in (
        lambda: path("Secretz", NS, "a"),
        lambda: path("Deployment", "../kube-system", "a"),
        lambda: path("Deployment", NS, "a", "../../x"),
        lambda: path("Deployment", NS, "a", "finalizers"),
    ):
        with pytest.raises(KubeError, match="refused"):
            call()
    assert path("Deployment", NS, "api.v2", "scale") == f"/apis/apps/v1/namespaces/{NS}/deployments/api.v2/scale"


def test_drift_reapply_never_scales_down_what_someone_scaled_up_meanwhile(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 3}}, subresource="scale")
    assert act.reverted(TARGET, change) == ["replicas"]
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 8}}, subresource="scale")
    mark = h.log.last_id

    outcome = act.reapply(TARGET, change, now=T1)

    assert outcome.ok
    assert writes(h, since=mark) == []
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 8


def test_drift_scaled_to_zero_is_a_revert(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([workload("Deployment", "api", replicas=0)])
    change = ok(act.apply(TARGET, scale_action(1), incident=INCIDENT, now=T0, dry_run=False))
    assert change.original == {"replicas": "0"}
    other_writer(kube, "Deployment", "api", {"spec": {"replicas": 0}}, subresource="scale")

    assert act.reverted(TARGET, change) == ["replicas"]


def test_drift_check_of_a_job_or_an_unreadable_target(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([cronjob(), configmap(data={"ttl": "60"})])
    job = ok(act.apply(TARGET, job_action(), incident=INCIDENT, now=T0, dry_run=False))
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    assert act.reverted(TARGET, job) == []
    kube.request("DELETE", path("ConfigMap", NS, "cache-config"))
    assert act.reverted(TARGET, change) is None
    gone = act.undo(TARGET, change, now=T1, dry_run=False)
    assert (gone.ok, gone.reason) == (True, "RollbackSkipped")


# -- faults -------------------------------------------------------------------------------------------


def test_fault_500_on_the_configmap_patch_fails_cleanly_and_a_later_apply_succeeds_once(
    h: HarnessThread, kube: Kube, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    before = read(kube, "ConfigMap", "cache-config")
    rule = h.faults.add(methods=["PATCH"], resources=["configmaps"], status=500, times=1)
    action = cm_action({"ttl": "600", "coalesce": "true"})

    failed = act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False)

    assert (failed.ok, failed.reason) == (False, "ActionFailed")
    assert "500" in failed.message
    assert rule.hits == 1
    assert read(kube, "ConfigMap", "cache-config") == before
    mark = h.log.last_id

    change = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))

    assert change.original == {"ttl": digest("60"), "coalesce": None}
    assert [r.status for r in writes(h, since=mark, resource="configmaps")] == [200]
    # The first attempt's journal Secret is found (409 on create) and replaced in place.
    assert [(r.verb, r.status) for r in writes(h, since=mark, resource="secrets")] == [("create", 409), ("update", 200)]
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "600", "coalesce": "true"}


class ConcurrentKube(Kube):
    """A client after whose next `times` `method` requests to `victim` someone else writes the object."""

    victim: tuple[str, str] = ("", "")
    interfere: Callable[[], None] | None = None
    times: int = 1

    def request(self, method: str, path: str, **kwargs: Any) -> JSON:
        result = super().request(method, path, **kwargs)
        if (method, path) == self.victim and self.interfere is not None:
            interfere = self.interfere
            self.times -= 1
            if self.times <= 0:
                self.interfere = None
            interfere()
        return result


def racing_actuators(
    h: HarnessThread, victim: tuple[str, str], interfere: Callable[[], None], *, times: int = 1
) -> Actuators:
    racing = make_kube(h, ConcurrentKube)
    assert isinstance(racing, ConcurrentKube)
    racing.victim, racing.interfere, racing.times = victim, interfere, times
    return Actuators(racing, max_replicas=MAX_REPLICAS, journal_namespace=NS)


def race(act: Actuators, victim: tuple[str, str], interfere: Callable[[], None], *, times: int = 1) -> None:
    assert isinstance(act.kube, ConcurrentKube)
    act.kube.victim, act.kube.interfere, act.kube.times = victim, interfere, times


def test_fault_409_from_a_concurrent_writer_between_get_and_patch_is_retried_at_once_with_a_fresh_read(
    h: HarnessThread, kube: Kube
) -> None:
    h.apply([configmap(data={"ttl": "60", "size": "1Gi"})])
    cm_path = path("ConfigMap", NS, "cache-config")
    act = racing_actuators(
        h, ("GET", cm_path), lambda: other_writer(kube, "ConfigMap", "cache-config", {"data": {"size": "2Gi"}})
    )

    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))

    # The concurrent writer's PATCH (200), ours with the resourceVersion it read (409), ours again (200).
    assert [r.status for r in writes(h, resource="configmaps")] == [200, 409, 200]
    assert change.original == {"ttl": digest("60")}
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "600", "size": "2Gi"}


def test_fault_a_conflict_that_persists_through_every_attempt_fails_and_nothing_lands(
    h: HarnessThread, kube: Kube
) -> None:
    h.apply([configmap(data={"ttl": "60", "size": "1Gi"})])
    sizes = iter(range(100))
    act = racing_actuators(
        h,
        ("GET", path("ConfigMap", NS, "cache-config")),
        lambda: other_writer(kube, "ConfigMap", "cache-config", {"data": {"size": f"{next(sizes)}Gi"}}),
        times=CONFLICT_ATTEMPTS,
    )

    failed = act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False)

    assert (failed.ok, failed.reason) == (False, "ActionFailed")
    assert "409" in failed.message
    ours = [r.status for r in writes(h, resource="configmaps")][1::2]
    assert ours == [409] * CONFLICT_ATTEMPTS
    assert read(kube, "ConfigMap", "cache-config")["data"]["ttl"] == "60", "nothing of ours landed"


def test_fault_409_on_rollback_is_retried_with_a_fresh_read(h: HarnessThread, kube: Kube) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    act = racing_actuators(h, ("", ""), lambda: None)
    change = ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    race(
        act,
        ("GET", path("ConfigMap", NS, "cache-config")),
        lambda: other_writer(kube, "ConfigMap", "cache-config", {"data": {"unrelated": "1"}}),
    )

    assert act.undo(TARGET, change, now=T1, dry_run=False).reason == "ActionRolledBack"
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60", "unrelated": "1"}


def test_fault_a_controller_status_write_between_read_and_scale_write_is_no_failure(
    h: HarnessThread, kube: Kube
) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    act = racing_actuators(
        h,
        ("GET", path("Deployment", NS, "api")),
        lambda: other_writer(kube, "Deployment", "api", {"status": {"observedGeneration": 7}}, "status"),
    )

    change = ok(act.apply(TARGET, scale_action(6), incident=INCIDENT, now=T0, dry_run=False))

    assert change.original == {"replicas": "2"}
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 6


def test_fault_a_concurrent_scale_up_before_the_ledger_write_is_never_scaled_down(h: HarnessThread, kube: Kube) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    act = racing_actuators(
        h,
        ("GET", path("Deployment", NS, "api")),
        lambda: other_writer(kube, "Deployment", "api", {"spec": {"replicas": 9}}, "scale"),
    )

    retried = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))

    assert retried.applied == {}, "the retry's fresh read sees 9: nothing to raise"
    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 9


def test_fault_a_concurrent_scale_up_between_mark_and_scale_write_is_never_scaled_down(
    h: HarnessThread, kube: Kube
) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    act = racing_actuators(
        h,
        ("PATCH", path("Deployment", NS, "api")),
        lambda: other_writer(kube, "Deployment", "api", {"spec": {"replicas": 9}}, "scale"),
    )

    retried = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))

    assert read(kube, "Deployment", "api")["spec"]["replicas"] == 9, "never scale down what someone scaled up"
    assert retried.applied == {}, "the retry's fresh read sees 9: nothing to raise"
    # The mark of the first attempt goes with the (empty) change's rollback.
    assert act.undo(TARGET, retried, now=T1, dry_run=False).reason == "ActionRolledBack"
    obj = read(kube, "Deployment", "api")
    assert obj["spec"]["replicas"] == 9
    assert annotations(obj) == {}


def test_fault_a_concurrent_scale_between_read_and_scale_rollback_is_left_alone(h: HarnessThread, kube: Kube) -> None:
    h.apply([workload("Deployment", "api", replicas=2)])
    act = racing_actuators(h, ("", ""), lambda: None)
    change = ok(act.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))
    race(
        act,
        ("GET", path("Deployment", NS, "api")),
        lambda: other_writer(kube, "Deployment", "api", {"spec": {"replicas": 9}}, "scale"),
    )

    skipped = act.undo(TARGET, change, now=T1, dry_run=False)

    assert skipped.reason == "RollbackSkipped", "the 409's fresh read shows someone else's count"
    obj = read(kube, "Deployment", "api")
    assert obj["spec"]["replicas"] == 9, "rollback must not undo someone else's scale"
    assert annotations(obj) == {}


def test_fault_an_api_server_that_does_not_answer_in_time_is_an_action_failed_outcome(
    h: HarnessThread, act: Actuators
) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    act.kube.timeout = 0.2
    h.faults.add(methods=["GET"], resources=["configmaps"], status=None, delay=0.5)  # every retry too

    outcome = act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False)

    assert (outcome.ok, outcome.reason) == (False, "ActionFailed")
    assert "unreachable" in outcome.message or "cannot reach" in outcome.message


# -- the pure helpers ---------------------------------------------------------------------------------


def test_pure_helpers_plan_apply_and_roll_back_a_flat_map() -> None:
    current = {"a": "1", "b": "2"}
    original, applied = plan_configmap(current, {"a": "1", "b": "3", "c": "4"})
    assert (original, applied) == ({"b": "2", "c": None}, {"b": "3", "c": "4"})
    changed = apply_merge_patch(current, configmap_apply_patch(applied))
    assert changed == {"a": "1", "b": "3", "c": "4"}
    patch, skipped = configmap_rollback({**changed, "c": "5"}, original, applied)
    assert (patch, skipped) == ({"b": "2"}, ["c"])


# -- property: apply then undo is the identity ------------------------------------------------------


@pytest.fixture(scope="module")
def shared_harness(tmp_path_factory: pytest.TempPathFactory) -> Iterator[tuple[HarnessThread, Actuators]]:
    kubeconfig = tmp_path_factory.mktemp("actuators") / "kubeconfig"
    with HarnessThread(crds=[REPO / "crds"], kubeconfig=kubeconfig) as harness:
        harness.apply([{"apiVersion": "v1", "kind": "Namespace", "metadata": {"name": NS}}])
        yield harness, Actuators(make_kube(harness), max_replicas=MAX_REPLICAS, journal_namespace=NS)


# Keys a real API server accepts in a ConfigMap (IsConfigMapKey: not `.`, `..`, or a leading `..`).
KEYS = st.text(alphabet="ab.-_" + string.digits, min_size=1, max_size=3).filter(lambda key: not key.startswith(".."))
KEYS = KEYS.filter(lambda key: key != ".")
VALUES = st.text(st.characters(blacklist_categories=("Cs",)), max_size=8)
_counter = iter(range(10**6))


@settings(max_examples=25, deadline=None, suppress_health_check=[HealthCheck.function_scoped_fixture])
@given(before=st.dictionaries(KEYS, VALUES, max_size=6), wanted=st.dictionaries(KEYS, VALUES, min_size=1, max_size=6))
def test_property_apply_then_undo_restores_any_configmap_exactly(
    shared_harness: tuple[HarnessThread, Actuators], before: dict[str, str], wanted: dict[str, str]
) -> None:
    harness, act = shared_harness
    name = f"prop-{next(_counter)}"
    harness.apply([configmap(name, data=before, annotations={"keep": "me"})])
    action = cm_action(wanted, cm=name)

    change = ok(act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False))
    assert read(act.kube, "ConfigMap", name)["data"] == {**before, **wanted}
    outcome = act.undo(TARGET, change, now=T1, dry_run=False)

    assert outcome.reason == "ActionRolledBack", outcome.message
    after = read(act.kube, "ConfigMap", name)
    assert (after.get("data") or {}) == before
    assert annotations(after) == {"keep": "me"}


# -- one wording -------------------------------------------------------------------------------------


@pytest.mark.parametrize("dry_run", [False, True])
def test_the_in_memory_actuator_of_simulate_words_and_records_every_change_as_the_kubernetes_one(
    h: HarnessThread, act: Actuators, dry_run: bool
) -> None:
    h.apply([configmap(data={"ttl": "60", "size": "1Gi"}), workload("Deployment", "api", replicas=2), cronjob()])
    memory = MemoryActuator(
        policy=POLICY,
        max_replicas=MAX_REPLICAS,
        targets=MemoryTargets(configmaps={"cache-config": {"ttl": "60", "size": "1Gi"}}, replicas={"api": 2}),
    )
    for action in (
        cm_action({"ttl": "600", "new": "on"}),
        scale_action(50),
        scale_action(1, action="no-op"),
        job_action(),
    ):
        real = act.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=dry_run)
        replayed = memory.apply(action, incident=INCIDENT, now=T0, dry_run=dry_run)
        assert (real.ok, real.reason, real.message) == (replayed.ok, replayed.reason, replayed.message)
        assert real.change == replayed.change
        assert real.change is not None
        undone = act.undo(TARGET, real.change, now=T1, dry_run=dry_run)
        replayed_undo = memory.undo(real.change, now=T1, dry_run=dry_run)
        assert (undone.reason, undone.message) == (replayed_undo.reason, replayed_undo.message)
