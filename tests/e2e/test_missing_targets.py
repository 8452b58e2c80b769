"""A missing target fails its action loudly, the other actions still proceed, and it is retried each poll."""

from __future__ import annotations

import copy

from tests.e2e import policies
from tests.e2e.conftest import HEALTHY_HIT_RATE, Case, condition


def test_a_missing_workload_fails_its_action_others_proceed_and_it_is_retried(case: Case) -> None:
    phase = policies.phase_one(restart=False)
    phase["actions"].append({"name": "scale-ghost", "scale": {"kind": "Deployment", "name": "ghost", "replicas": 4}})
    case.create_ready("ghostly", phases=[phase])
    case.set(hit_rate=0.2)

    status = case.wait_status(
        "ghostly",
        "the other actions applied and Ready=False naming the ghost",
        lambda s: len(s.get("applied") or []) == 2 and condition(s, "Ready").get("reason") == "ActionFailed",
    )
    ready = condition(status, "Ready")
    assert ready["status"] == "False"
    assert "Deployment" in ready["message"] and "ghost" in ready["message"]
    failures = case.events("ghostly", "ActionFailed")
    assert len(failures) == 1, "a failure that repeats every poll is reported once"
    assert "ghost" in failures[0].message and "not found" in failures[0].message

    ghost = copy.deepcopy(
        next(
            d
            for d in policies.cluster_objects(case.ns)
            if d["kind"] == "Deployment" and d["metadata"]["name"] == policies.API
        )
    )
    ghost["metadata"] = {"name": "ghost", "namespace": case.ns}
    ghost["spec"]["replicas"] = 1
    case.stack.harness.apply([ghost])
    status = case.wait_status(
        "ghostly",
        "retried and applied once the workload exists",
        lambda s: len(s.get("applied") or []) == 3 and condition(s, "Ready").get("status") == "True",
    )
    assert case.stack.replicas(case.ns, "ghost") == 4

    case.set(hit_rate=HEALTHY_HIT_RATE)
    case.wait_status("ghostly", "closed", lambda s: s.get("state") == "Idle" and s.get("history"))
    assert case.stack.replicas(case.ns, "ghost") == 1
