"""The stricter mode through the real operator: STAMPEDE_REQUIRE_TARGET_OPT_IN=true.

One policy acts on two kinds of targets in its namespace: the API's ConfigMap and Deployment carry
`stampede.aurum.io/allowed-policies` naming the policy, the cache ConfigMap does not. The opted-in ones are
mitigated and rolled back; the other is never written (same resourceVersion), and its action is an
ActionFailed event and `Ready=False` naming the object, the annotation and the policy.

This module has its own stack: the setting applies to every policy the operator serves.
"""

from __future__ import annotations

from collections.abc import Iterator

import pytest

from stampede.actuators.ownership import ALLOWED_POLICIES
from tests.e2e import policies
from tests.e2e.conftest import HEALTHY_HIT_RATE, STATUS_REFRESH_SECONDS, Case, condition
from tests.e2e.stack import Stack

POLICY = "guarded"


@pytest.fixture(scope="module")
def strict_stack() -> Iterator[Stack]:
    env = {
        "STAMPEDE_REQUIRE_TARGET_OPT_IN": "true",
        "STAMPEDE_STATUS_REFRESH_SECONDS": str(STATUS_REFRESH_SECONDS),
        "STAMPEDE_ALLOWED_PROMETHEUS_URLS": "*",
    }
    with Stack(operator_env=env, operator_args=["--standalone", "-A"]) as stack:
        yield stack


def test_only_targets_that_name_the_policy_are_mitigated_and_rolled_back(strict_stack: Stack) -> None:
    case = Case(strict_stack, "opt-in", prefix="optin")
    try:
        opt_in = {"metadata": {"annotations": {ALLOWED_POLICIES: f"someone-else, {POLICY}"}}}
        strict_stack.core.patch_namespaced_config_map(policies.API_CONFIG, case.ns, opt_in)
        strict_stack.apps.patch_namespaced_deployment(policies.API, case.ns, opt_in)
        untouched = case.configmap(policies.CACHE_CONFIG)
        api_before = case.configmap(policies.API_CONFIG)["data"]
        replicas_before = strict_stack.replicas(case.ns, policies.API)

        phase = policies.phase_one()  # api-config (restarting aurum-api) and scale-api: both opted in
        phase["actions"].append(
            {"name": "cache-lazy", "configMap": {"name": policies.CACHE_CONFIG, "data": {"CACHE_TTL_REGULAR": "1"}}}
        )
        case.create_ready(POLICY, phases=[phase])
        case.set(hit_rate=0.2)

        status = case.wait_status(
            POLICY,
            "the opted-in actions applied and Ready=False naming the cache ConfigMap",
            lambda s: len(s.get("applied") or []) == 2 and condition(s, "Ready").get("reason") == "ActionFailed",
        )
        assert {c["action"] for c in status["applied"]} == {"api-config", "scale-api"}
        assert case.configmap(policies.API_CONFIG)["data"]["AURUM_API_CIRCUIT_BREAKER_ENABLED"] == "true"
        assert strict_stack.replicas(case.ns, policies.API) == 6
        refused = (
            f"Action cache-lazy: ConfigMap {case.ns}/{policies.CACHE_CONFIG} does not allow policy {POLICY}: "
            f"its annotation {ALLOWED_POLICIES} must name it (STAMPEDE_REQUIRE_TARGET_OPT_IN is on); nothing written."
        )
        assert [e.message for e in case.events(POLICY, "ActionFailed")] == [refused]
        assert refused in condition(status, "Ready")["message"]

        case.set(hit_rate=HEALTHY_HIT_RATE)
        case.wait_status(POLICY, "closed", lambda s: s.get("state") == "Idle" and s.get("history"))
        assert case.configmap(policies.API_CONFIG)["data"] == api_before
        assert strict_stack.replicas(case.ns, policies.API) == replicas_before
        assert len(case.events(POLICY, "ActionRolledBack")) == 2
        after = case.configmap(policies.CACHE_CONFIG)
        assert after["metadata"]["resourceVersion"] == untouched["metadata"]["resourceVersion"]
        assert after["data"] == untouched["data"]
    finally:
        case.set(hit_rate=HEALTHY_HIT_RATE, wait=False)
        case.cleanup()
