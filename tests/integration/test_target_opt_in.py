"""The stricter mode (STAMPEDE_REQUIRE_TARGET_OPT_IN): the operator writes only to objects that name the policy.

Against the emulated API server, through the real `Actuators`: an object whose
`stampede.aurum.io/allowed-policies` annotation does not name the policy is never written (ActionFailed
naming the object, the annotation and the policy), one that names it (or `*`) is changed as usual, and
undo of the operator's own change is never refused.
"""

from __future__ import annotations

import pytest

from stampede.actuators.kube import JSON, Kube
from stampede.actuators.ownership import ALLOWED_POLICIES
from stampede.actuators.targets import Actuators
from tests.harness.server import HarnessThread
from tests.integration.test_actuators import (
    INCIDENT,
    MAX_REPLICAS,
    NS,
    POLICY,
    T0,
    T1,
    TARGET,
    cm_action,
    configmap,
    cronjob,
    hpa,
    job_action,
    ok,
    other_writer,
    read,
    scale_action,
    workload,
    writes,
)

pytestmark = pytest.mark.timeout(60)


@pytest.fixture
def strict(kube: Kube) -> Actuators:
    return Actuators(kube, max_replicas=MAX_REPLICAS, journal_namespace=NS, require_opt_in=True)


def opted(obj: JSON, value: str) -> JSON:
    obj["metadata"].setdefault("annotations", {})[ALLOWED_POLICIES] = value
    return obj


def refusal(kind: str, name: str, action: str) -> str:
    return (
        f"Action {action}: {kind} {NS}/{name} does not allow policy {POLICY}: its annotation {ALLOWED_POLICIES} "
        "must name it (STAMPEDE_REQUIRE_TARGET_OPT_IN is on); nothing written."
    )


@pytest.mark.parametrize("annotation", [None, "other-policy", f"{POLICY}-2, x{POLICY}", ""])
def test_a_configmap_that_does_not_name_the_policy_is_not_written(
    h: HarnessThread, strict: Actuators, annotation: str | None
) -> None:
    cm = configmap(data={"ttl": "60"})
    h.apply([cm if annotation is None else opted(cm, annotation)])
    for dry_run in (False, True):  # DryRun reads the values a policy would override: refused as well
        outcome = strict.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=dry_run)
        assert not outcome.ok
        assert outcome.reason == "ActionFailed"
        assert outcome.message == refusal("ConfigMap", "cache-config", "warm-cache")
        assert outcome.change is None
    assert writes(h) == []


@pytest.mark.parametrize("annotation", [f"other-policy,{POLICY}", f" {POLICY} ", "*"])
def test_a_configmap_that_names_the_policy_is_changed_and_undone_even_after_the_owner_withdraws(
    h: HarnessThread, kube: Kube, strict: Actuators, annotation: str
) -> None:
    h.apply([opted(configmap(data={"ttl": "60"}), annotation)])
    change = ok(strict.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "600"}

    other_writer(kube, "ConfigMap", "cache-config", {"metadata": {"annotations": {ALLOWED_POLICIES: None}}})
    undone = strict.undo(TARGET, change, now=T1, dry_run=False)
    assert undone.reason == "ActionRolledBack", undone.message
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60"}


def test_a_restart_target_that_has_not_opted_in_refuses_the_whole_action(h: HarnessThread, strict: Actuators) -> None:
    h.apply([opted(configmap(data={"ttl": "60"}), POLICY), workload("Deployment", "api")])
    action = cm_action({"ttl": "600"}, restart=[{"kind": "Deployment", "name": "api"}])
    outcome = strict.apply(TARGET, action, incident=INCIDENT, now=T0, dry_run=False)
    assert outcome.message == refusal("Deployment", "api", "warm-cache")
    assert writes(h) == []


def test_a_scale_needs_the_workloads_opt_in_which_also_stands_for_its_hpa(
    h: HarnessThread, kube: Kube, strict: Actuators
) -> None:
    h.apply([workload("Deployment", "api", replicas=2), hpa("api", min_replicas=2)])
    outcome = strict.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False)
    assert outcome.message == refusal("Deployment", "api", "scale-api")
    assert writes(h) == []

    other_writer(kube, "Deployment", "api", {"metadata": {"annotations": {ALLOWED_POLICIES: POLICY}}})
    since = len(h.log.entries())
    ok(strict.apply(TARGET, scale_action(5), incident=INCIDENT, now=T0, dry_run=False))
    assert read(kube, "HorizontalPodAutoscaler", "api-hpa")["spec"]["minReplicas"] == 5
    assert writes(h, since=since)


def test_a_job_needs_the_cronjobs_opt_in(h: HarnessThread, kube: Kube, strict: Actuators) -> None:
    h.apply([cronjob("warmer")])
    outcome = strict.apply(TARGET, job_action("warmer"), incident=INCIDENT, now=T0, dry_run=False)
    assert outcome.message == refusal("CronJob", "warmer", "run-warmer")
    assert writes(h) == []

    other_writer(kube, "CronJob", "warmer", {"metadata": {"annotations": {ALLOWED_POLICIES: POLICY}}})
    ok(strict.apply(TARGET, job_action("warmer"), incident=INCIDENT, now=T0, dry_run=False))
    assert [r.verb for r in writes(h, resource="jobs")] == ["create"]


def test_a_reapply_is_refused_once_the_owner_withdraws_the_opt_in(
    h: HarnessThread, kube: Kube, strict: Actuators
) -> None:
    h.apply([opted(configmap(data={"ttl": "60"}), POLICY)])
    change = ok(strict.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    other_writer(
        kube,
        "ConfigMap",
        "cache-config",
        {"data": {"ttl": "60"}, "metadata": {"annotations": {ALLOWED_POLICIES: "someone-else"}}},
    )
    since = len(h.log.entries())
    outcome = strict.reapply(TARGET, change, now=T1)
    assert not outcome.ok
    assert outcome.reason == "ActionFailed"
    assert ALLOWED_POLICIES in outcome.message
    assert POLICY in outcome.message
    assert writes(h, since=since) == []
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "60"}


def test_without_the_setting_no_annotation_is_needed(h: HarnessThread, kube: Kube, act: Actuators) -> None:
    h.apply([configmap(data={"ttl": "60"})])
    ok(act.apply(TARGET, cm_action({"ttl": "600"}), incident=INCIDENT, now=T0, dry_run=False))
    assert read(kube, "ConfigMap", "cache-config")["data"] == {"ttl": "600"}
