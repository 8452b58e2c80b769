"""Safe mitigation with the real operator on the strict harness: coalesced restarts, rollout-gated
rollback, a shadowed action and the manual controls (the storm breaker has its own operator: test_storm.py).

The harness's deployment controller reports rollout progress over about 1.5 s after every template
or replica change, as a real one does; `harness.k8s.io/rollout-stalls` on a Deployment keeps its
rollouts short of complete (a crash-looping image).
"""

from __future__ import annotations

from typing import Any

from tests.e2e import policies
from tests.e2e.conftest import Case, condition
from tests.harness.controllers import DEPLOYMENT_CONTROLLER, ROLLOUT_STALLS

BREACH = 0.2
HEALTHY = 0.95


def restart_twice_phase() -> dict[str, Any]:
    """Two ConfigMap actions in one phase, both restarting aurum-api."""
    api = [{"kind": "Deployment", "name": policies.API}]
    return {
        "name": "immediate",
        "after": "0s",
        "actions": [
            {
                "name": "api-config",
                "configMap": {"name": policies.API_CONFIG, "data": {"BREAKER": "on"}, "restart": api},
            },
            {
                "name": "cache-config",
                "configMap": {"name": policies.CACHE_CONFIG, "data": {"TTL": "60"}, "restart": api},
            },
        ],
    }


def restarts(case: Case, *, since: int) -> int:
    """The operator's writes to aurum-api's object itself: each is a `restartedAt` stamp (nothing else writes it)."""
    log = case.stack.harness.log
    return len(log.entries(since=since, resource="deployments", namespace=case.ns, name=policies.API, subresource=None))


def restarted_at(case: Case) -> str | None:
    deployment = case.stack.apps.read_namespaced_deployment(policies.API, case.ns)
    annotations = deployment.spec.template.metadata.annotations or {}
    return annotations.get("kubectl.kubernetes.io/restartedAt")


def test_two_actions_restarting_one_workload_cause_one_restart_at_apply_and_one_at_deletion(case: Case) -> None:
    case.create_ready("coalesce", phases=[restart_twice_phase()])
    first = case.stack.harness.log.last_id
    case.set(hit_rate=BREACH)
    case.wait_status(
        "coalesce",
        "both applied",
        lambda s: {c["action"] for c in s.get("applied") or []} == {"api-config", "cache-config"},
    )
    assert restarts(case, since=first) == 1
    assert restarted_at(case) is not None
    restarted = case.events("coalesce", "WorkloadRestarted")
    assert len(restarted) == 1
    assert "api-config" in restarted[0].message and "cache-config" in restarted[0].message

    before_delete = case.stack.harness.log.last_id
    case.delete("coalesce")  # both undone at once: one more restart, not two
    case.stack.wait_for("policy gone", lambda: not case.exists("coalesce"), timeout=60)
    assert restarts(case, since=before_delete) == 1
    case.policies.remove("coalesce")


def gated_phase() -> dict[str, Any]:
    """A scale of aurum-api (undone first) and a ConfigMap change without restarts (undone next)."""
    return {
        "name": "immediate",
        "after": "0s",
        "actions": [
            {
                "name": "cache-lazy",
                "configMap": {"name": policies.CACHE_CONFIG, "data": {"CACHE_REFRESH_STRATEGY": "lazy"}},
            },
            {"name": "scale-api", "scale": {"kind": "Deployment", "name": policies.API, "replicas": 5}},
        ],
    }


def run_to_rollback(case: Case, name: str, **spec: Any) -> int:
    """Create, breach, apply both, recover; the request-log id just before recovery."""
    case.create_ready(name, phases=[gated_phase()], step_delay="0s", **spec)
    case.set(hit_rate=BREACH)
    case.wait_status(name, "both applied", lambda s: len(s.get("applied") or []) == 2)
    mark = case.stack.harness.log.last_id
    case.set(hit_rate=HEALTHY)
    return mark


def test_the_next_undo_starts_only_after_the_scaled_workloads_rollout_completes(case: Case) -> None:
    mark = run_to_rollback(case, "gated")
    case.wait_status("gated", "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=60)
    log = case.stack.harness.log.entries(since=mark, controllers=True, namespace=case.ns)
    scaled = next(r.id for r in log if r.resource == "deployments" and r.subresource == "scale" and r.actor == "client")
    undone = next(r.id for r in log if r.resource == "configmaps" and r.name == policies.CACHE_CONFIG and r.id > scaled)
    controller = [r.id for r in log if r.field_manager == DEPLOYMENT_CONTROLLER and r.name == policies.API]
    between = [i for i in controller if scaled < i < undone]
    assert len(between) >= 3, "the ConfigMap was restored before aurum-api's rollout reported complete"
    assert not case.events("gated", "RolloutTimedOut")


def test_a_rollout_that_never_completes_times_out_with_a_warning_and_rollback_goes_on(case: Case) -> None:
    case.stack.apps.patch_namespaced_deployment(
        policies.API, case.ns, {"metadata": {"annotations": {ROLLOUT_STALLS: "true"}}}
    )
    run_to_rollback(case, "stalled", rollback={"stepDelay": "0s", "rolloutTimeout": "3s"})
    case.wait_status("stalled", "rolled back", lambda s: s.get("state") == "Idle" and not s.get("applied"), timeout=60)
    timed_out = case.events("stalled", "RolloutTimedOut")
    assert len(timed_out) == 1 and timed_out[0].type == "Warning"
    assert f"Deployment {policies.API}" in timed_out[0].message


def test_a_dry_run_action_is_planned_while_the_other_acts(case: Case) -> None:
    phase = gated_phase()
    phase["actions"][1]["dryRun"] = True
    before = case.stack.replicas(case.ns, policies.API)
    case.create_ready("shadow", phases=[phase])
    case.set(hit_rate=BREACH)
    status = case.wait_status(
        "shadow", "one applied, one planned", lambda s: len(s.get("applied") or []) == 1 and s.get("planned")
    )
    assert [c["action"] for c in status["applied"]] == ["cache-lazy"]
    assert [c["action"] for c in status["planned"]] == ["scale-api"]
    assert case.stack.replicas(case.ns, policies.API) == before
    assert case.configmap(policies.CACHE_CONFIG)["data"]["CACHE_REFRESH_STRATEGY"] == "lazy"
    assert any("scale-api" in e.message for e in case.events("shadow", "WouldApply"))


def annotate(case: Case, name: str, key: str, value: str | None) -> None:
    case.stack.custom.patch_namespaced_custom_object(
        "stampede.aurum.io", "v1alpha1", case.ns, "stampedepolicies", name, {"metadata": {"annotations": {key: value}}}
    )


def test_hold_freezes_the_policy_and_still_reports_and_release_lets_it_act(case: Case) -> None:
    case.create_ready("held")
    annotate(case, "held", "stampede.aurum.io/hold", "true")
    case.wait_status("held", "Held=True Manual", lambda s: condition(s, "Held").get("reason") == "Manual")
    case.set(hit_rate=BREACH)
    status = case.wait_status("held", "incident open", lambda s: s.get("incident"))
    status = case.wait_status("held", "signals reported", lambda s: s["signals"][0]["value"] == str(BREACH))
    assert not status.get("applied")
    assert condition(status, "Held").get("status") == "True"
    annotate(case, "held", "stampede.aurum.io/hold", None)
    case.wait_status("held", "phase one applied", lambda s: len(s.get("applied") or []) >= 2)
    assert case.events("held", "Released")


def test_rollback_now_rolls_back_the_open_incident_and_removes_its_annotation(case: Case) -> None:
    case.create_ready("manual")
    case.set(hit_rate=BREACH)
    case.wait_status("manual", "phase one applied", lambda s: len(s.get("applied") or []) >= 2)
    annotate(case, "manual", "stampede.aurum.io/rollback-now", "true")
    status = case.wait_status(
        "manual", "rolled back by hand", lambda s: s.get("history") and s["history"][0].get("manual"), timeout=60
    )
    assert not status.get("applied")
    assert case.events("manual", "ManualRollback")
    annotations = case.policy("manual")["metadata"].get("annotations") or {}
    assert "stampede.aurum.io/rollback-now" not in annotations
    case.set(hit_rate=HEALTHY)


def test_hold_and_rollback_now_together_roll_back_and_keep_the_next_incident_from_acting(case: Case) -> None:
    case.create_ready("both")
    case.set(hit_rate=BREACH)
    case.wait_status("both", "applied", lambda s: len(s.get("applied") or []) >= 2)
    annotate(case, "both", "stampede.aurum.io/hold", "true")
    annotate(case, "both", "stampede.aurum.io/rollback-now", "true")
    case.wait_status(
        "both", "rolled back by hand", lambda s: s.get("history") and s["history"][0].get("manual"), timeout=60
    )
    status = case.wait_status("both", "a new incident, held", lambda s: s.get("incident"), timeout=30)
    assert not status.get("applied")
    assert condition(status, "Held").get("reason") == "Manual"
