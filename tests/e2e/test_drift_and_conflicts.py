"""Someone else fighting the operator: GitOps reverting a target, or a second policy on the same target."""

from __future__ import annotations

from tests.e2e import policies
from tests.e2e.conftest import Case, condition
from tests.e2e.stack import Stack
from tests.e2e.test_metrics_and_notifications import scrape, value

KEY = "AURUM_API_CIRCUIT_BREAKER_ENABLED"


def revert(case: Case) -> None:
    """What Argo CD self-heal does: put the ConfigMap's declared value back."""
    case.stack.core.patch_namespaced_config_map(policies.API_CONFIG, case.ns, {"data": {KEY: "false"}})


def test_a_reverted_configmap_key_is_reapplied_then_three_reverts_raise_a_gitops_conflict(
    case: Case, stack: Stack, metrics_port: int
) -> None:
    case.create_ready("drift", phases=[policies.phase_one(restart=False)])
    case.set(hit_rate=0.2)
    case.wait_status("drift", "phase one applied", lambda s: len(s.get("applied") or []) == 2)
    assert case.configmap(policies.API_CONFIG)["data"][KEY] == "true"

    for reverts in (1, 2):
        revert(case)
        stack.wait_for(f"DriftCorrected #{reverts}", lambda n=reverts: len(case.events("drift", "DriftCorrected")) == n)
        stack.wait_for("value re-applied", lambda: case.configmap(policies.API_CONFIG)["data"][KEY] == "true")
    corrected = case.events("drift", "DriftCorrected")
    assert all(policies.API_CONFIG in e.message and "api-config" in e.message for e in corrected)

    revert(case)
    status = case.wait_status("drift", "Conflict=True", lambda s: condition(s, "Conflict").get("status") == "True")
    message = condition(status, "Conflict")["message"]
    assert policies.API_CONFIG in message and "3 times" in message
    assert "ignoreDifferences" in message and "RespectIgnoreDifferences" in message
    assert case.events("drift", "Conflict")
    stop = stack.harness.log.last_id

    # No more re-applying: let the loop run three more polls, and the ConfigMap is left alone.
    def polls() -> float:
        return (
            value(scrape(metrics_port), "stampede_poll_duration_seconds_count", namespace=case.ns, policy="drift") or 0
        )

    seen = polls()
    stack.wait_for("three more polls", lambda: polls() >= seen + 3, timeout=60)
    polled = stack.harness.log.last_id
    assert case.configmap(policies.API_CONFIG)["data"][KEY] == "false"
    assert not [
        r for r in stack.harness.log.entries(since=stop, namespace=case.ns, resource="configmaps") if r.verb != "get"
    ], "the ConfigMap was written after the conflict"
    # Drift is seen by watches: polls read no target, whether the change is still watched (the Deployment's
    # scale) or given up on (the ConfigMap).
    reads = [
        r
        for r in stack.harness.log.entries(since=stop, namespace=case.ns, verb="get")
        if r.resource in ("configmaps", "deployments") and r.id <= polled
    ]
    assert reads == [], [(r.resource, r.name) for r in reads]
    assert len(case.events("drift", "DriftCorrected")) == 2
    assert condition(case.status("drift"), "Conflict")["status"] == "True"


def test_a_second_policy_does_not_touch_a_configmap_owned_by_the_first_and_names_the_owner(case: Case) -> None:
    case.create_ready("first", phases=[policies.phase_one(restart=False)])
    case.set(hit_rate=0.2)
    case.wait_status("first", "changes applied", lambda s: len(s.get("applied") or []) == 2)
    owned = case.configmap(policies.API_CONFIG)

    second_phase = {
        "name": "grab",
        "after": "0s",
        "actions": [
            {"name": "grab-config", "configMap": {"name": policies.API_CONFIG, "data": {"SECOND_POLICY_KEY": "mine"}}}
        ],
    }
    case.create("second", phases=[second_phase])
    status = case.wait_status(
        "second", "Conflict=True", lambda s: condition(s, "Conflict").get("status") == "True", timeout=30
    )

    message = condition(status, "Conflict")["message"]
    assert "first" in message and policies.API_CONFIG in message, message
    assert status["state"] == "Incident" and not status.get("applied")
    assert case.events("second", "Conflict") and not case.events("second", "ActionApplied")
    current = case.configmap(policies.API_CONFIG)
    assert current["data"] == owned["data"] and "SECOND_POLICY_KEY" not in current["data"]
    assert current["metadata"]["annotations"]["stampede.aurum.io/applied-by"] == "first"
