"""A whole P1 incident, observed once and asserted from several angles.

The incident runs in a module fixture (breach → open → phase 1 → phase 2 → recovery → rollback → idle),
recording what a user would see along the way; each test then checks one promise of the API contract.
"""

from __future__ import annotations

import itertools
import re
import time
from collections.abc import Iterator
from dataclasses import dataclass, field
from typing import Any

import pytest

from stampede.engine.digests import digest
from tests.e2e import policies
from tests.e2e.conftest import Case, Event, condition, parse_time
from tests.e2e.stack import Stack

POLICY = "runbook"
FOR_SECONDS = 2.0
POLL_SECONDS = 1.0
STEP_DELAY = 1.0
TARGET_RESOURCES = {"configmaps", "deployments", "jobs", "horizontalpodautoscalers"}


@dataclass
class Observed:
    case: Case
    before: dict[str, Any] = field(default_factory=dict)
    breach_set_at: float = 0.0
    breach_visible_at: float = 0.0
    opened: dict[str, Any] = field(default_factory=dict)
    in_phase_one: dict[str, Any] = field(default_factory=dict)
    in_phase_one_finalizers: list[str] = field(default_factory=list)
    during: dict[str, Any] = field(default_factory=dict)
    during_status: dict[str, Any] = field(default_factory=dict)
    jobs: list[dict[str, Any]] = field(default_factory=list)
    kubectl_get: str = ""
    kubectl_describe: str = ""
    after: dict[str, Any] = field(default_factory=dict)
    final_status: dict[str, Any] = field(default_factory=dict)
    events: list[Event] = field(default_factory=list)
    before_breach: dict[str, Any] = field(default_factory=dict)
    breach_mark: int = 0
    """The harness log id when the breach was set, and when recovery began."""
    recovery_mark: int = 0
    rollback_statuses: list[dict[str, Any]] = field(default_factory=list)
    """Every status read while waiting for the incident to close (a read may miss a write, never invent one)."""
    requests_per_poll: float = 0.0
    writes_per_poll: float = 0.0


@pytest.fixture(scope="module")
def incident(stack: Stack) -> Iterator[Observed]:
    case = Case(stack, "lifecycle")
    seen = Observed(case=case, before=case.snapshot())
    try:
        case.create_ready(POLICY)
        assert case.status(POLICY).get("state") == "Idle"

        seen.before_breach = case.status(POLICY)
        seen.breach_mark = stack.harness.log.last_id
        seen.breach_set_at = time.time()
        seen.breach_visible_at = case.set(hit_rate=0.2)  # Prometheus now shows the breach
        seen.opened = case.wait_status(POLICY, "incident opened", lambda s: s.get("incident"), timeout=30)
        seen.in_phase_one = case.wait_status(
            POLICY,
            "phase one applied",
            lambda s: {c["action"] for c in s.get("applied") or []} >= {"api-config", "scale-api"},
        )
        seen.in_phase_one_finalizers = list(case.policy(POLICY)["metadata"].get("finalizers") or [])
        seen.during_status = case.wait_status(
            POLICY,
            "phase two applied",
            lambda s: s.get("phase") == "stabilization" and len(s.get("applied") or []) == 4,
        )
        seen.during = case.snapshot()
        seen.jobs = case.jobs(POLICY)
        seen.kubectl_get = case.kubectl("get", "stp", "-n", case.ns)

        # Requests per poll while the incident holds (for the report): the window spans whole polls.
        first = stack.harness.log.last_id
        started = time.monotonic()
        time.sleep(3.0)  # a measurement window, not an assertion
        polls = (time.monotonic() - started) / POLL_SECONDS
        window = [r for r in stack.harness.log.entries(since=first, namespace=case.ns) if r.verb != "watch"]
        seen.requests_per_poll = len(window) / polls
        seen.writes_per_poll = len([r for r in window if r.verb in ("create", "patch", "update")]) / polls
        print(
            f"\nduring an incident: {seen.requests_per_poll:.1f} API requests per poll "
            f"({seen.writes_per_poll:.1f} writes): {sorted({(r.verb, r.resource) for r in window})}"
        )

        seen.recovery_mark = stack.harness.log.last_id
        case.set(hit_rate=0.95)

        def closed(status: dict[str, Any]) -> bool:
            seen.rollback_statuses.append(status)
            return status.get("state") == "Idle" and bool(status.get("history"))

        seen.final_status = case.wait_status(POLICY, "incident closed", closed, timeout=40, interval=0.02)
        seen.after = case.snapshot()
        stack.wait_for("rollback finalizer released", lambda: not case.policy(POLICY)["metadata"].get("finalizers"))
        seen.events = case.events(POLICY)
        seen.kubectl_describe = case.kubectl("describe", "stp", POLICY, "-n", case.ns)
        yield seen
    finally:
        case.cleanup()


def timeline(events: list[Event], note: object = "") -> str:
    return f"{note}\n" + "\n".join(f"{e.time:%H:%M:%S.%f} {e.reason}: {e.message}" for e in events)


def reasons(events: list[Event], reason: str) -> list[Event]:
    return [e for e in events if e.reason == reason]


def test_a_p1_incident_opens_once_the_breach_held_for_its_for_window(incident: Observed) -> None:
    # Times compared here are the engine's own (each tick's scheduled time); how soon after the breach
    # the incident opens in wall-clock time is measured by `make bench` (bench/latency.py).
    assert not incident.before_breach.get("breaching"), "a breach was recorded before the gauge was set"
    opened = incident.opened["incident"]
    assert opened["severity"] == "P1"
    assert incident.opened["state"] == "Incident"
    (breach,) = [b for b in incident.opened.get("breaching") or [] if b["level"] == "P1"]
    assert breach["condition"] == "hitRate < 0.5"
    held = (parse_time(opened["startedAt"]) - parse_time(breach["since"])).total_seconds()
    assert held >= FOR_SECONDS, f"opened after the breach held {held}s of its {FOR_SECONDS}s window"
    (event,) = reasons(incident.events, "IncidentOpened")
    assert opened["id"] in event.message and "P1" in event.message and "hitRate < 0.5" in event.message


def test_phases_advance_by_time_and_apply_their_changes(incident: Observed) -> None:
    before, during = incident.before, incident.during
    api_config = during[f"ConfigMap/{policies.API_CONFIG}"]
    assert api_config["data"] == {
        **before[f"ConfigMap/{policies.API_CONFIG}"]["data"],
        "AURUM_API_CIRCUIT_BREAKER_ENABLED": "true",
        policies.NEW_KEY: "added",
    }
    assert api_config["annotations"]["stampede.aurum.io/applied-by"] == POLICY
    assert during[f"ConfigMap/{policies.CACHE_CONFIG}"]["data"] == {
        **before[f"ConfigMap/{policies.CACHE_CONFIG}"]["data"],
        "CACHE_REFRESH_STRATEGY": "lazy",
    }
    assert before[f"Deployment/{policies.API}"]["replicas"] == 3
    assert during[f"Deployment/{policies.API}"]["replicas"] == 6
    # Untouched objects stay untouched.
    for key in ("ConfigMap/aurum-worker-config", "Deployment/aurum-worker", "Deployment/postgres"):
        assert during[key] == before[key]

    status = incident.during_status
    incident_status = status["incident"]
    assert incident_status["id"] == incident.opened["incident"]["id"]
    assert status["severity"] == "P1"
    assert incident_status["phase"] == "stabilization"
    # Phase two starts `after` (3 s) after the incident, not before.
    started = parse_time(incident_status["startedAt"])
    assert (parse_time(incident_status["phaseStartedAt"]) - started).total_seconds() >= 3.0
    assert condition(status, "IncidentActive")["status"] == "True"
    applied = {c["action"]: c for c in status["applied"]}
    assert applied["scale-api"]["original"] == {"replicas": "3"}
    assert applied["scale-api"]["applied"] == {"replicas": "6"}
    # A key that did not exist is named in `absent`: a real merge patch drops a null inside an array.
    assert applied["api-config"]["original"] == {"AURUM_API_CIRCUIT_BREAKER_ENABLED": digest("false")}
    assert applied["api-config"]["absent"] == [policies.NEW_KEY]
    entered = [e.message for e in reasons(incident.events, "PhaseEntered")]
    assert len(entered) == 2 and "immediate" in entered[0] and "stabilization" in entered[1]


def test_replicas_are_raised_and_restored_through_the_scale_subresource(incident: Observed, stack: Stack) -> None:
    ns = incident.case.ns

    def scale_writes(since: int, until: int | None = None) -> list[Any]:
        return [
            r
            for r in stack.harness.log.entries(
                since=since, namespace=ns, resource="deployments", name=policies.API, subresource="scale"
            )
            if r.verb in ("patch", "update")
            and r.status is not None
            and r.status < 300
            and (until is None or r.id <= until)
        ]

    # One write raises the replicas during the incident, one restores them during the rollback.
    assert len(scale_writes(incident.breach_mark, incident.recovery_mark)) == 1
    assert len(scale_writes(incident.recovery_mark)) == 1
    replaced = [
        r
        for r in stack.harness.log.entries(since=incident.breach_mark, namespace=ns, resource="deployments")
        if r.verb == "update"
    ]
    assert not replaced, "a Deployment must never be replaced (PUT), neither to scale it nor to restore it"


def test_the_warming_job_is_created_from_the_cronjob_once_with_labels_and_ttl(incident: Observed) -> None:
    (job,) = incident.jobs
    incident_id = incident.opened["incident"]["id"]
    meta = job["metadata"]
    assert meta["labels"]["stampede.aurum.io/policy"] == POLICY
    assert meta["labels"]["stampede.aurum.io/incident"] == incident_id
    assert meta["annotations"]["cronjob.kubernetes.io/instantiate"] == "manual"
    assert job["spec"]["ttlSecondsAfterFinished"] == 600  # the CronJob's jobTemplate sets it
    assert job["spec"]["template"]["spec"]["containers"][0]["name"] == "warm"
    assert meta["ownerReferences"][0]["kind"] == "CronJob"
    assert meta["ownerReferences"][0]["name"] == policies.CRONJOB


def test_recovery_rolls_every_change_back_exactly(incident: Observed) -> None:
    before, after = incident.before, incident.after
    # Nothing created and left behind, nothing deleted: the same objects, the warming Job aside.
    assert after.keys() == before.keys(), sorted(set(after) ^ set(before))
    assert [job for job in after["Jobs"] if job not in before["Jobs"]] == [j["metadata"]["name"] for j in incident.jobs]
    for key, value in before.items():
        if key.startswith("ConfigMap/"):
            assert after[key] == value, f"{key} not restored byte for byte"
            assert policies.NEW_KEY not in (after[key]["data"] or {})
            assert not any(k.startswith("stampede.aurum.io") for k in after[key]["annotations"] or {})
        elif key.startswith("Deployment/"):
            assert after[key]["replicas"] == value["replicas"], f"{key} replicas not restored"
            assert not any(k.startswith("stampede.aurum.io") for k in after[key]["annotations"] or {})
    assert "stampede.aurum.io/rollback" in incident.in_phase_one_finalizers
    status = incident.final_status
    assert status["state"] == "Idle" and not status.get("applied") and not status.get("incident")
    (history,) = status["history"]
    assert history["id"] == incident.opened["incident"]["id"]
    assert history["maxPhase"] == "stabilization"
    assert reasons(incident.events, "RecoveryStarted") and reasons(incident.events, "IncidentClosed")
    assert not reasons(incident.events, "RollbackSkipped")


def test_rollback_goes_newest_first_with_the_step_delay_between_steps(incident: Observed) -> None:
    # The Job is not rolled back: it is left to finish, with its own reason.
    (job,) = reasons(incident.events, "JobLeftToFinish")
    assert "warm-cache" in job.message
    assert "ttlSecondsAfterFinished" in job.message
    rolled = reasons(incident.events, "ActionRolledBack")
    order = []
    for event in rolled:
        action = next(a for a in ("warm-cache", "cache-lazy", "scale-api", "api-config") if a in event.message)
        order.append(action)
    # Phase two before phase one; inside a phase, the reverse of the runbook order.
    assert order == ["cache-lazy", "scale-api", "api-config"]
    (recovery,) = reasons(incident.events, "RecoveryStarted")
    assert job.time >= recovery.time

    # The steps, from the statuses read during the rollback, in the engine's own times: a missed read
    # can only hide a step, never make one look too early or two look like one.
    newest_first = ["warm-cache", "cache-lazy", "scale-api", "api-config"]
    steps: list[str] = []
    for status in incident.rollback_statuses:
        held = [c["action"] for c in status.get("applied") or []]
        gone = [a for a in newest_first if a not in held]
        assert gone == newest_first[: len(gone)], f"undone out of order: {held}"
        # The Job is left to finish, so it costs no step (engine rule): it goes with the first real undo.
        assert not ("warm-cache" in gone and "cache-lazy" not in gone), held
        last = (status.get("incident") or {}).get("lastRollbackAt")
        if last and (not steps or steps[-1] != last):
            steps.append(last)
    assert steps, "no rollback step was seen"
    times = [parse_time(step) for step in steps]
    gaps = [(b - a).total_seconds() for a, b in itertools.pairwise(times)]
    assert all(gap >= STEP_DELAY for gap in gaps), (steps, gaps)


def table_rows(text: str) -> list[dict[str, str]]:
    """kubectl's table by header offsets (an empty cell, e.g. an unset Mode, would shift a split())."""
    header, *lines = text.rstrip().splitlines()
    starts = [m.start() for m in re.finditer(r"\S+", header)]
    names = header.split()
    bounds = [*starts[1:], None]
    return [{n: line[a:b].strip() for n, a, b in zip(names, starts, bounds, strict=True)} for line in lines]


def test_kubectl_get_shows_state_severity_and_phase_columns(incident: Observed) -> None:
    rows = table_rows(incident.kubectl_get)
    for column in ("NAME", "MODE", "STATE", "SEVERITY", "PHASE", "INCIDENT", "AGE"):
        assert column in rows[0], incident.kubectl_get
    row = next(r for r in rows if r["NAME"] == POLICY)
    assert row["STATE"] == "Incident"
    assert row["SEVERITY"] == "P1"
    assert row["PHASE"] == "stabilization"
    assert re.fullmatch(r"\d+s", row["INCIDENT"]), row


def test_kubectl_describe_shows_the_incident_events(incident: Observed) -> None:
    text = incident.kubectl_describe
    assert "Events:" in text
    for reason in (
        "IncidentOpened",
        "PhaseEntered",
        "ActionApplied",
        "RecoveryStarted",
        "ActionRolledBack",
        "IncidentClosed",
    ):
        assert reason in text, f"{reason} missing from kubectl describe:\n{text}"
