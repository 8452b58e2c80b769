"""What people read: every event's and condition's message, word for word where the words are the rule.

Events and conditions are the operator's only voice in `kubectl describe` and the webhook; a message
that names the wrong condition, phase counter or duration misleads the on-call as surely as a wrong
change would. Times are seconds after T0 (12:00:00); see test_engine.py for the runbook's windows.
"""

from __future__ import annotations

import math
import re

import pytest

from stampede.api.status import ConditionStatus, PolicyStatus, State, StatusCondition
from stampede.engine.decide import Event, decide, format_value, incident_id_for

from .policies import (
    HEALTHY,
    P0_READINGS,
    P2_READINGS,
    Simulation,
    at,
    open_incident,
    readings,
    runbook_spec,
    tiny_spec,
)

INCIDENT = "20240501-120200"
"""The id of an incident opened at 120 s (12:02:00)."""


def events(sim: Simulation, reason: str) -> list[Event]:
    return [e for _, e in sim.events if e.reason == reason]


def condition(status: PolicyStatus, type_: str) -> StatusCondition:
    return next(c for c in status.conditions if c.type == type_)


def p2_for(sim: Simulation, *, minutes: int) -> None:
    """A P2 incident opened at 120 s and held for `minutes`."""
    assert open_incident(sim, P2_READINGS) == 120
    sim.run(start=135, until=120 + minutes * 60, values=P2_READINGS)


# -- opening ---------------------------------------------------------------------------------------


def test_incident_opened_names_every_condition_of_the_firing_level_with_its_start_and_readings() -> None:
    sim = Simulation(runbook_spec())
    both_p2 = readings(hitRate=0.7, missRate=0.3, queueDepth=900.0)
    sim.poll(at(0), P2_READINGS)  # hitRate < 0.8 from 12:00:00
    sim.run(start=15, until=105, values=both_p2)  # queueDepth > 500 from 12:00:15
    d = sim.poll(at(120), both_p2)
    opened = [e for e in d.events if e.reason == "IncidentOpened"]
    assert opened == [
        Event(
            "IncidentOpened",
            f"Incident {INCIDENT} opened at P2: hitRate < 0.8 since 12:00:00; queueDepth > 500 since 12:00:15"
            " (hitRate=0.7, queueDepth=900).",
            warning=True,
        )
    ]


def test_incident_opened_names_only_the_conditions_of_the_level_that_fired() -> None:
    sim = Simulation(runbook_spec())
    sim.run(start=0, until=75, values=P2_READINGS)  # P2 (2 m) from 12:00:00
    mixed = readings(hitRate=0.7, missRate=0.9)  # P1 (1 m) from 12:01:30: still short of its window at 120 s
    sim.run(start=90, until=105, values=mixed)
    d = sim.poll(at(120), mixed)
    (opened,) = [e for e in d.events if e.reason == "IncidentOpened"]
    assert opened.message == f"Incident {INCIDENT} opened at P2: hitRate < 0.8 since 12:00:00 (hitRate=0.7)."
    assert "missRate" not in opened.message


def test_incident_opened_at_the_highest_level_that_fired_names_that_level() -> None:
    sim = Simulation(runbook_spec())
    sim.run(start=0, until=60, values=readings(dbConnections=195.0, hitRate=0.7, missRate=0.3))
    (opened,) = events(sim, "IncidentOpened")
    assert (
        opened.message
        == "Incident 20240501-120100 opened at P0: dbConnections >= 190 since 12:00:00 (dbConnections=195)."
    )
    assert sim.status.severity == "P0"


# -- phases ----------------------------------------------------------------------------------------


def test_phase_entered_counts_the_phase_out_of_all_phases_and_says_how_old_the_incident_is() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=20)
    entered = [e.message for e in events(sim, "PhaseEntered")]
    assert [re.sub(r": .*", "", m) for m in entered] == [
        f"Incident {INCIDENT} entered phase immediate-mitigation (1/3) after 0s",
        f"Incident {INCIDENT} entered phase cache-stabilization (2/3) after 5m",
        f"Incident {INCIDENT} entered phase load-distribution (3/3) after 15m",
    ]
    assert entered[1].endswith(": staggered-refresh-and-ttl, warm-cache.")
    assert entered[2].endswith(": least-connections-and-queueing, cache-sharding.")


def test_a_late_poll_enters_each_skipped_phase_with_its_own_counter_and_the_same_age() -> None:
    sim = Simulation(runbook_spec())
    assert open_incident(sim, P2_READINGS) == 120
    sim.poll(at(120 + 16 * 60), P2_READINGS)  # the operator was away for 16 minutes
    entered = [e.message for e in events(sim, "PhaseEntered")][1:]
    assert [re.sub(r": .*", "", m) for m in entered] == [
        f"Incident {INCIDENT} entered phase cache-stabilization (2/3) after 16m",
        f"Incident {INCIDENT} entered phase load-distribution (3/3) after 16m",
    ]
    assert sim.status.phase == "load-distribution"


def test_phase_counters_follow_the_number_of_phases_in_the_spec() -> None:
    sim = Simulation(tiny_spec())
    assert open_incident(sim, {"load": 20.0}) == 60
    sim.run(start=75, until=60 + 120, values={"load": 20.0})
    assert [e.message for e in events(sim, "PhaseEntered")] == [
        "Incident 20240501-120100 entered phase first (1/2) after 0s: flag.",
        "Incident 20240501-120100 entered phase second (2/2) after 2m: more.",
    ]


# -- severity and escalation -----------------------------------------------------------------------


def test_severity_raised_says_from_which_level_to_which() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=1)
    sim.run(start=195, until=255, values=readings(hitRate=0.85, missRate=0.9))
    assert [e.message for e in events(sim, "SeverityRaised")] == [f"Incident {INCIDENT} severity raised from P2 to P1."]
    assert all(e.warning for e in events(sim, "SeverityRaised"))


def test_escalation_by_age_says_how_long_the_incident_was_open_and_in_which_phase() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=31)
    assert [e.message for e in events(sim, "Escalated")] == [
        f"Incident {INCIDENT} escalated: open for more than 30m (phase load-distribution)."
    ]
    assert condition(sim.status, "Escalated").message == f"Incident {INCIDENT} was escalated."


def test_escalation_by_severity_names_the_severity_and_the_threshold() -> None:
    sim = Simulation(runbook_spec())
    open_incident(sim, P0_READINGS)
    assert [e.message for e in events(sim, "Escalated")] == [
        "Incident 20240501-120100 escalated: severity P0 is the escalation severity (phase immediate-mitigation)."
    ]


def test_an_incident_not_escalated_says_so_in_its_condition() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=29)
    escalated = condition(sim.status, "Escalated")
    assert (escalated.status, escalated.reason) == (ConditionStatus.FALSE, "NotEscalated")
    assert escalated.message == f"Incident {INCIDENT} is not escalated."


# -- recovery and closing --------------------------------------------------------------------------


def test_recovery_started_names_the_conditions_the_readings_and_the_rollback_plan() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=20)
    sim.run(start=1335, until=1635, values=HEALTHY)
    assert sim.status.state == State.ROLLING_BACK
    assert [e.message for e in events(sim, "RecoveryStarted")] == [
        f"Incident {INCIDENT} recovered: hitRate > 0.9, spikeRatio < 1.5, dbConnections < 150 held for 5m"
        " (dbConnections=100, hitRate=0.95, spikeRatio=1); rolling back 8 change(s), 30s apart."
    ]


def test_incident_closed_says_how_long_it_lasted_why_it_closed_and_how_far_it_went() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=20)
    sim.run(start=1335, until=3600, values=HEALTHY, follow_wake=True, stop=Simulation.settled)
    assert [e.message for e in events(sim, "IncidentClosed")] == [
        f"Incident {INCIDENT} (P2) closed after 28m15s: every change was rolled back; furthest phase load-distribution."
    ]
    assert not events(sim, "IncidentClosed")[0].warning


def test_an_escalated_incident_says_so_when_it_closes() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=31)
    sim.run(start=120 + 31 * 60 + 15, until=7200, values=HEALTHY, follow_wake=True, stop=Simulation.settled)
    (closed,) = events(sim, "IncidentClosed")
    assert closed.message.endswith("; furthest phase load-distribution, escalated.")


def test_an_incident_closed_by_a_new_one_during_rollback_says_so() -> None:
    sim = Simulation(tiny_spec(rollback={"stepDelay": "10m"}))
    assert open_incident(sim, {"load": 20.0}) == 60
    sim.run(start=75, until=300, values={"load": 20.0})
    sim.run(start=315, until=375, values={"load": 1.0})
    assert sim.status.state == State.ROLLING_BACK
    sim.run(start=390, until=450, values={"load": 20.0})
    (closed,) = events(sim, "IncidentClosed")
    assert closed.message == (
        "Incident 20240501-120100 (P2) closed after 6m30s: a new incident opened during rollback;"
        " furthest phase second."
    )
    assert sim.status.state == State.INCIDENT


# -- conditions ------------------------------------------------------------------------------------


def test_incident_active_names_the_incident_its_severity_phase_and_state() -> None:
    sim = Simulation(runbook_spec())
    p2_for(sim, minutes=6)
    active = condition(sim.status, "IncidentActive")
    assert (active.status, active.reason) == (ConditionStatus.TRUE, "Incident")
    assert active.message == f"Incident {INCIDENT} at P2, phase cache-stabilization (Incident)."
    sim.run(start=120 + 6 * 60 + 15, until=3600, values=HEALTHY, stop=lambda s: s.status.state != State.INCIDENT)
    active = condition(sim.status, "IncidentActive")
    assert (active.status, active.reason) == (ConditionStatus.TRUE, "RollingBack")
    assert active.message == f"Incident {INCIDENT} at P2, phase cache-stabilization (RollingBack)."


def test_without_an_incident_every_condition_says_so() -> None:
    sim = Simulation(runbook_spec())
    sim.poll(at(0), HEALTHY)
    wanted = {
        "MetricsAvailable": (ConditionStatus.TRUE, "AllSignalsKnown", "All 5 signals have values."),
        "IncidentActive": (ConditionStatus.FALSE, "Idle", "No incident."),
        "Escalated": (ConditionStatus.FALSE, "NotEscalated", "No incident is escalated."),
        "Suspended": (ConditionStatus.FALSE, "Active", "Changes are made as the policy prescribes."),
        "Held": (ConditionStatus.FALSE, "NotHeld", "The policy acts as its runbook says."),
    }
    got = {c.type: (c.status, c.reason, c.message) for c in sim.status.conditions}
    assert got == wanted


def test_a_suspended_policy_says_so_in_its_condition() -> None:
    sim = Simulation(runbook_spec(suspend=True))
    sim.poll(at(0), HEALTHY)
    suspended = condition(sim.status, "Suspended")
    assert (suspended.status, suspended.reason) == (ConditionStatus.TRUE, "Suspended")
    assert suspended.message == "spec.suspend is true: polling and reporting only, no changes and no rollback."


@pytest.mark.parametrize(
    ("on_error", "consequence"), [("Hold", "holding the incident state"), ("Continue", "continuing by time")]
)
def test_metrics_unavailable_names_each_unknown_signal_with_its_error_and_what_the_policy_does(
    on_error: str, consequence: str
) -> None:
    sim = Simulation(runbook_spec(onMetricsError=on_error))
    sim.poll(at(0), readings(queueDepth=None, hitRate=math.inf), errors={"queueDepth": "query timed out"})
    assert [e.message for e in events(sim, "MetricsUnavailable")] == [
        f"Signals unknown: hitRate (no value); queueDepth (query timed out); {consequence}."
    ]
    assert condition(sim.status, "MetricsAvailable").message == (
        "Signals unknown: hitRate (no value); queueDepth (query timed out)."
    )
    sim.poll(at(15), HEALTHY)
    assert [e.message for e in events(sim, "MetricsRestored")] == ["All 5 signals have values again."]


def test_a_condition_records_the_generation_it_was_computed_for() -> None:
    d = decide(spec=tiny_spec(), status=PolicyStatus(), readings={"load": 1.0}, now=at(0), generation=7)
    assert {c.observed_generation for c in d.status.conditions} == {7}


# -- formatting ------------------------------------------------------------------------------------


@pytest.mark.parametrize(
    ("value", "text"),
    [
        (None, "unknown"),
        (math.nan, "unknown"),
        (math.inf, "unknown"),
        (-math.inf, "unknown"),
        (0.7, "0.7"),
        (1234567.0, "1.23457e+06"),
    ],
)
def test_readings_are_written_with_six_significant_digits_and_unknown_for_no_number(
    value: float | None, text: str
) -> None:
    assert format_value(value) == text


def test_an_incident_id_is_its_start_to_the_second() -> None:
    assert incident_id_for(at(3723.9)) == "20240501-130203"


# -- edges the mutation run pointed at ---------------------------------------------------------------


def test_while_holding_on_unknown_data_the_engine_still_asks_to_be_woken_for_the_next_phase() -> None:
    sim = Simulation(runbook_spec())
    assert open_incident(sim, P2_READINGS) == 120
    d = sim.poll(at(135), readings(hitRate=0.7, missRate=0.3, queueDepth=None))
    assert d.status.incident is not None
    assert d.status.incident.next_phase_at == at(420)
    assert d.wake_at == at(420)  # the phase is not entered while holding, but the call is still wanted


def test_a_metrics_available_condition_of_status_unknown_counts_as_never_seen() -> None:
    unknown = StatusCondition(
        type="MetricsAvailable",
        status=ConditionStatus.UNKNOWN,
        reason="Starting",
        message="",
        last_transition_time=at(0),
    )
    d = decide(spec=tiny_spec(), status=PolicyStatus(conditions=[unknown]), readings={"load": None}, now=at(15))
    assert [e.reason for e in d.events] == ["MetricsUnavailable"]
    known = decide(spec=tiny_spec(), status=PolicyStatus(conditions=[unknown]), readings={"load": 1.0}, now=at(15))
    assert [e.reason for e in known.events] == []  # nothing was lost, so nothing is restored
