"""An invalid policy is reported on itself and never stops the operator from running the valid ones."""

from __future__ import annotations

from tests.e2e.conftest import Case, condition


def test_an_invalid_spec_is_not_ready_naming_the_field_and_a_valid_policy_keeps_working(case: Case) -> None:
    before = case.snapshot()
    case.create(
        "broken",
        severities=[
            {"level": "P1", "any": ["hitRate < 0.5"], "for": "2s"},
            {"level": "P2", "any": ["latency > 1"], "for": "2s"},
        ],
    )
    status = case.wait_status(
        "broken", "Ready=False InvalidSpec", lambda s: condition(s, "Ready").get("reason") == "InvalidSpec"
    )
    ready = condition(status, "Ready")
    assert ready["status"] == "False"
    assert "severities[1].any[0]" in ready["message"] and "latency > 1" in ready["message"], ready
    (event,) = case.events("broken", "InvalidSpec")
    assert "latency" in event.message

    case.create_ready("valid")
    case.set(hit_rate=0.2)
    valid = case.wait_status("valid", "valid policy applies its changes", lambda s: len(s.get("applied") or []) >= 2)
    assert valid["state"] == "Incident"
    assert case.snapshot() != before
    assert case.status("broken").get("state") in (None, "", "Idle")
    assert condition(case.status("broken"), "Ready")["reason"] == "InvalidSpec"
