"""DryRun and suspend: detection and reporting run in full, no target is touched."""

from __future__ import annotations

from stampede.engine.digests import digest
from tests.e2e import policies
from tests.e2e.conftest import Case, condition


def test_dry_run_changes_nothing_and_reports_what_it_would_apply(case: Case) -> None:
    before = case.snapshot()
    case.create_ready("dry", mode="DryRun")
    case.set(hit_rate=0.2)
    status = case.wait_status(
        "dry", "phase two planned", lambda s: s.get("phase") == "stabilization" and len(s.get("planned") or []) == 4
    )

    assert status["state"] == "Incident" and status["severity"] == "P1"
    assert not status.get("applied")
    planned = {c["action"]: c for c in status["planned"]}
    assert planned["api-config"]["applied"] == {"AURUM_API_CIRCUIT_BREAKER_ENABLED": "true", policies.NEW_KEY: "added"}
    assert planned["api-config"]["original"] == {"AURUM_API_CIRCUIT_BREAKER_ENABLED": digest("false")}
    assert planned["api-config"]["absent"] == [policies.NEW_KEY], "named, never a null inside an array"
    assert planned["scale-api"]["applied"] == {"replicas": "6"}
    assert planned["cache-lazy"]["applied"] == {"CACHE_REFRESH_STRATEGY": "lazy"}
    assert planned["warm-cache"]["kind"] == "Job"

    would = case.events("dry", "WouldApply")
    for action in ("api-config", "scale-api", "cache-lazy", "warm-cache"):
        assert any(action in e.message for e in would), f"no WouldApply event for {action}: {would}"
    assert not case.events("dry", "ActionApplied")
    assert case.snapshot() == before, "DryRun changed a target"
    assert not case.jobs("dry")
    assert "stampede.aurum.io/rollback" not in (case.policy("dry")["metadata"].get("finalizers") or [])


def test_a_suspended_policy_detects_and_reports_but_changes_nothing(case: Case) -> None:
    before = case.snapshot()
    case.create_ready("paused", suspend=True)
    suspended = condition(case.status("paused"), "Suspended")
    assert suspended["status"] == "True", suspended
    case.set(hit_rate=0.2)
    status = case.wait_status(
        "paused", "incident detected and in phase two", lambda s: s.get("phase") == "stabilization"
    )

    assert status["state"] == "Incident" and status["severity"] == "P1"
    assert {s["name"]: s["value"] for s in status["signals"]}["hitRate"] == "0.2"
    assert condition(status, "Suspended")["status"] == "True"
    assert condition(status, "IncidentActive")["status"] == "True"
    assert not status.get("applied") and not status.get("planned")
    assert case.events("paused", "IncidentOpened")
    assert not case.events("paused", "ActionApplied")
    assert case.snapshot() == before, "a suspended policy changed a target"
