"""The decision engine, one runbook rule per test, driven the way the operator drives it.

Times are seconds after T0; the runbook policy polls every 15 s, P0 and P1 fire after 1 m, P2 after
2 m, recovery needs 5 m, phases start at 0 s, 5 m and 15 m, escalation comes at 30 m or P0, and
rollback steps are 30 s apart.
"""

from __future__ import annotations

import math

import pytest

from stampede.api.spec import Severity
from stampede.api.status import Breach, ConditionStatus, PolicyStatus, State, StatusCondition
from stampede.engine.decide import decide

from .policies import (
    HEALTHY,
    NEUTRAL,
    P0_READINGS,
    P1_READINGS,
    P2_READINGS,
    Simulation,
    at,
    open_incident,
    readings,
    runbook_spec,
    tiny_spec,
)

PHASE_1 = ["api-circuit-breaker-and-coalescing", "worker-circuit-breaker", "scale-api", "scale-worker"]
"""Phase 1 actions of a P2 or P1 incident (scale-postgres needs P0)."""
PHASE_2 = ["staggered-refresh-and-ttl", "warm-cache"]
PHASE_3 = ["least-connections-and-queueing", "cache-sharding"]
APPLIED_FOR_P2 = PHASE_1 + PHASE_2 + PHASE_3


def names(actions: object) -> list[str]:
    return [a.name for a in actions]  # type: ignore[attr-defined]


def condition(status: PolicyStatus, type_: str) -> StatusCondition:
    return next(c for c in status.conditions if c.type == type_)


def p2_incident(sim: Simulation) -> float:
    """Open a P2 incident (at 120 s) and return its start."""
    start = open_incident(sim, P2_READINGS)
    assert start == 120
    return start


def recover(sim: Simulation, *, start: float, until: float | None = None) -> float:
    """Healthy polls from `start` until the rollback starts (or `until`); return when it started."""
    t = start
    while sim.status.state == State.INCIDENT:
        sim.poll(at(t), HEALTHY)
        if sim.status.state != State.INCIDENT:
            return t
        t += 15
        assert until is None or t <= until
        assert t < start + 3600
    return t


def run_to_rolling_back(sim: Simulation, *, incident_minutes: int = 20) -> float:
    """A P2 incident held for `incident_minutes`, then healthy: return when the rollback started."""
    start = p2_incident(sim)
    end = start + incident_minutes * 60
    sim.run(start=start + 15, until=end, values=P2_READINGS)
    return recover(sim, start=end + 15)


# -- for windows ---------------------------------------------------------------------------------


def test_a_level_fires_only_after_its_condition_held_for_the_whole_for_window() -> None:
    sim = Simulation(runbook_spec())
    for t in range(0, 120, 15):
        sim.poll(at(t), P2_READINGS)
        assert sim.status.state == State.IDLE
        assert sim.status.incident is None
    assert sim.status.breaching == [Breach(level=Severity.P2, condition="hitRate < 0.8", since=at(0))]
    sim.poll(at(120), P2_READINGS)
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.severity == Severity.P2
    assert sim.status.incident.started_at == at(120)
    assert sim.reasons().count("IncidentOpened") == 1


def test_a_single_poll_without_the_breach_restarts_the_for_window() -> None:
    sim = Simulation(runbook_spec())
    sim.run(start=0, until=105, values=lambda t: NEUTRAL if t == 60 else P2_READINGS)
    sim.run(start=120, until=180, values=P2_READINGS)
    assert sim.status.state == State.IDLE
    assert sim.status.breaching[0].since == at(75)
    sim.poll(at(195), P2_READINGS)
    assert sim.status.state == State.INCIDENT


@pytest.mark.parametrize(
    "breach", [readings(missRate=0.85, hitRate=0.85), readings(spikeRatio=4.0)], ids=["missRate", "spikeRatio"]
)
def test_any_one_condition_of_a_level_fires_it_on_its_own(breach: dict[str, float | None]) -> None:
    sim = Simulation(runbook_spec())
    sim.run(start=0, until=45, values=breach)
    assert sim.status.state == State.IDLE
    sim.poll(at(60), breach)
    assert sim.status.incident is not None
    assert sim.status.incident.severity == Severity.P1


def test_two_conditions_of_one_level_taking_turns_do_not_add_up_to_a_for_window() -> None:
    sim = Simulation(runbook_spec())
    miss, spike = readings(missRate=0.85, hitRate=0.85), readings(spikeRatio=4.0)
    sim.run(start=0, until=600, values=lambda t: miss if (t // 15) % 2 == 0 else spike)
    assert sim.status.state == State.IDLE
    assert "IncidentOpened" not in sim.reasons()


def test_each_level_measures_its_own_for_window() -> None:
    sim = Simulation(runbook_spec())
    both = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=0, until=75, values=lambda t: P2_READINGS if t < 30 else both)
    assert sim.status.state == State.IDLE
    sim.poll(at(90), both)  # P0 held 60 s (since 30); P2 only 90 s of its 2 m
    assert sim.status.incident is not None
    assert sim.status.incident.severity == Severity.P0


def test_an_unknown_reading_breaks_a_for_window_rather_than_extending_it() -> None:
    sim = Simulation(runbook_spec(onMetricsError="Continue"))
    sim.run(start=0, until=180, values=lambda t: readings(hitRate=None) if t == 60 else P2_READINGS)
    assert sim.status.state == State.IDLE
    sim.poll(at(195), P2_READINGS)
    assert sim.status.state == State.INCIDENT


def test_a_for_window_lives_in_status_and_survives_a_restart() -> None:
    before = Simulation(runbook_spec())
    before.run(start=0, until=105, values=P2_READINGS)
    restarted = Simulation(runbook_spec(), status=PolicyStatus.model_validate(before.status.wire()))
    restarted.poll(at(120), P2_READINGS)
    assert restarted.status.state == State.INCIDENT
    forgetful = Simulation(runbook_spec())
    forgetful.poll(at(120), P2_READINGS)
    assert forgetful.status.state == State.IDLE


def test_recovery_needs_every_condition_to_hold_at_every_poll_for_its_window() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    # hitRate dips below 0.9 once, 4m45s into a healthy run: the recovery window starts over.
    dip = start + 15 + 285
    sim.run(start=start + 15, until=dip + 285, values=lambda t: NEUTRAL if t == dip else HEALTHY)
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since == at(dip + 15)
    sim.poll(at(dip + 300), HEALTHY)
    assert sim.status.state == State.INCIDENT
    sim.poll(at(dip + 315), HEALTHY)
    assert sim.status.state == State.ROLLING_BACK


def test_the_recovery_window_lives_in_status_and_survives_a_restart() -> None:
    before = Simulation(runbook_spec())
    start = p2_incident(before)
    before.run(start=start + 15, until=start + 240, values=HEALTHY)
    restarted = Simulation(runbook_spec(), status=PolicyStatus.model_validate(before.status.wire()))
    restarted.run(start=start + 255, until=start + 300, values=HEALTHY)
    assert restarted.status.state == State.INCIDENT
    restarted.poll(at(start + 315), HEALTHY)
    assert restarted.status.state == State.ROLLING_BACK


def test_recovery_does_not_start_while_a_level_fires() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    # Every recovery condition holds, but queueDepth > 500 makes P2 fire after its 2 m window.
    deep_queue = readings(queueDepth=600.0)
    sim.run(start=start + 15, until=start + 900, values=deep_queue)
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since is None


# -- severity --------------------------------------------------------------------------------------


def test_severity_rises_inside_an_incident_with_a_severity_raised_event() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=start + 15, until=start + 60, values=worse)
    assert sim.status.severity == "P2"
    sim.poll(at(start + 75), worse)
    assert sim.status.severity == "P0"
    assert sim.status.incident is not None
    assert sim.status.incident.severity == Severity.P0
    assert sim.reasons(at(start + 75)) == ["SeverityRaised", "Escalated"]
    sim.run(start=start + 90, until=start + 300, values=worse)
    assert sim.reasons().count("SeverityRaised") == 1


def test_severity_never_falls_inside_an_incident() -> None:
    sim = Simulation(runbook_spec())
    open_incident(sim, P0_READINGS)
    assert sim.status.severity == "P0"
    sim.run(start=75, until=900, values=P2_READINGS)
    assert sim.status.state == State.INCIDENT
    assert sim.status.severity == "P0"
    assert "SeverityRaised" not in sim.reasons()


def test_actions_made_eligible_by_a_raised_severity_are_applied_for_phases_already_entered() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 300, values=P2_READINGS)  # phase 2 entered
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    decisions = sim.run(start=start + 315, until=start + 375, values=worse)
    assert [names(d.apply) for d in decisions] == [[], [], [], [], ["scale-postgres"]]
    assert decisions[-1].phase_by_action["scale-postgres"] == "immediate-mitigation"


# -- phases ----------------------------------------------------------------------------------------


def test_phases_are_cumulative_and_entering_one_keeps_the_earlier_ones_applied() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 1200, values=P2_READINGS)
    applied_at = {when: names(d.apply) for when, d in sim.decisions if d.apply}
    assert applied_at == {at(start): PHASE_1, at(start + 300): PHASE_2, at(start + 900): PHASE_3}
    assert [c.action for c in sim.status.applied] == APPLIED_FOR_P2
    assert sim.status.phase == "load-distribution"


def test_phase_entered_is_emitted_once_per_phase() -> None:
    sim = Simulation(runbook_spec(), roundtrip=True)
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 2400, values=P2_READINGS)
    entered = [(when, e.message) for when, e in sim.events if e.reason == "PhaseEntered"]
    assert [when for when, _ in entered] == [at(start), at(start + 300), at(start + 900)]
    for (_, message), phase in zip(
        entered, ["immediate-mitigation", "cache-stabilization", "load-distribution"], strict=True
    ):
        assert phase in message


def test_min_severity_skips_an_action_for_milder_incidents() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 1200, values=P2_READINGS)
    assert all("scale-postgres" not in names(d.apply) for _, d in sim.decisions)
    p0 = Simulation(runbook_spec())
    open_incident(p0, P0_READINGS)
    assert "scale-postgres" in [c.action for c in p0.status.applied]


def test_next_phase_at_and_wake_at_point_at_the_next_phase() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    opened = sim.decisions[-1][1]
    assert sim.status.incident is not None
    assert sim.status.incident.next_phase_at == at(start + 300)
    assert opened.wake_at == at(start + 300)
    sim.run(start=start + 15, until=start + 300, values=P2_READINGS)
    assert sim.status.incident.next_phase_at == at(start + 900)
    sim.run(start=start + 315, until=start + 900, values=P2_READINGS)
    assert sim.status.incident.next_phase_at is None
    # With no phase left, the next moment of interest is escalation at 30 m.
    assert sim.decisions[-1][1].wake_at == at(start + 1800)


def test_a_late_poll_enters_every_skipped_phase_in_order() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    d = sim.poll(at(start + 960), P2_READINGS)
    assert [e.reason for e in d.events] == ["PhaseEntered", "PhaseEntered"]
    assert "cache-stabilization" in d.events[0].message
    assert "load-distribution" in d.events[1].message
    assert names(d.apply) == PHASE_2 + PHASE_3
    assert sim.status.phase == "load-distribution"


def test_a_restart_inside_a_phase_neither_re_enters_nor_re_applies_it() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 300, values=P2_READINGS)
    restarted = Simulation(runbook_spec(), status=PolicyStatus.model_validate(sim.status.wire()))
    d = restarted.poll(at(start + 315), P2_READINGS)
    assert d.apply == ()
    assert d.events == ()


# -- escalation ------------------------------------------------------------------------------------


def test_an_incident_is_escalated_once_when_it_grows_older_than_escalation_after() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 1785, values=P2_READINGS)
    assert condition(sim.status, "Escalated").status == ConditionStatus.FALSE
    assert sim.decisions[-1][1].wake_at == at(start + 1800)
    sim.run(start=start + 1800, until=start + 3600, values=P2_READINGS)
    assert [when for when, e in sim.events if e.reason == "Escalated"] == [at(start + 1800)]
    assert sim.status.incident is not None
    assert sim.status.incident.escalated
    assert sim.status.incident.escalated_at == at(start + 1800)
    escalated = condition(sim.status, "Escalated")
    assert escalated.status == ConditionStatus.TRUE
    assert escalated.last_transition_time == at(start + 1800)


def test_an_incident_reaching_the_escalation_severity_is_escalated_at_once_and_only_once() -> None:
    sim = Simulation(runbook_spec())
    start = open_incident(sim, P0_READINGS)
    assert sim.reasons(at(start)) == ["IncidentOpened", "PhaseEntered", "Escalated"]
    assert condition(sim.status, "Escalated").status == ConditionStatus.TRUE
    sim.run(start=start + 15, until=start + 2400, values=P0_READINGS)
    assert sim.reasons().count("Escalated") == 1


def test_a_severity_raised_to_the_escalation_severity_escalates_the_incident() -> None:
    sim = Simulation(runbook_spec(escalation={"after": "1h", "atSeverity": "P1"}))
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 60, values=P1_READINGS | {"hitRate": 0.7})
    assert sim.status.incident is not None
    assert not sim.status.incident.escalated
    sim.poll(at(start + 75), P1_READINGS | {"hitRate": 0.7})
    assert sim.status.incident.severity == Severity.P1
    assert sim.status.incident.escalated
    assert sim.status.incident.escalated_at == at(start + 75)


# -- recovery and rollback -------------------------------------------------------------------------


def test_recovery_moves_the_incident_to_rolling_back_with_a_recovery_started_event() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 300, values=HEALTHY)
    assert sim.status.state == State.INCIDENT
    sim.poll(at(start + 315), HEALTHY)
    assert sim.status.state == State.ROLLING_BACK
    assert sim.reasons(at(start + 315)) == ["RecoveryStarted"]
    assert sim.status.incident is not None
    assert sim.status.incident.recovered_at == at(start + 315)
    active = condition(sim.status, "IncidentActive")
    assert (active.status, active.reason) == (ConditionStatus.TRUE, "RollingBack")


def test_rollback_undoes_changes_newest_first_one_step_per_step_delay() -> None:
    sim = Simulation(runbook_spec())
    began = run_to_rolling_back(sim)
    sim.run(start=began + 15, until=began + 600, values=HEALTHY)
    assert [action for _, action, _ in sim.undos] == list(reversed(APPLIED_FOR_P2))
    steps = [a for a in reversed(APPLIED_FOR_P2) if a != "warm-cache"]
    expected = {action: at(began + 30 * i) for i, action in enumerate(steps)}
    expected["warm-cache"] = expected["staggered-refresh-and-ttl"]
    assert [when for when, _, _ in sim.undos] == [expected[a] for a in reversed(APPLIED_FOR_P2)]
    assert all(len([c for c in d.undo if c.kind != "Job"]) <= 1 for _, d in sim.decisions)


def test_a_job_costs_no_rollback_step_it_goes_with_the_next_undo() -> None:
    sim = Simulation(runbook_spec())
    began = run_to_rolling_back(sim)
    sim.run(start=began + 15, until=began + 600, values=HEALTHY)
    step = next(d for _, d in sim.decisions if any(c.kind == "Job" for c in d.undo))
    assert [c.action for c in step.undo] == ["warm-cache", "staggered-refresh-and-ttl"]


def test_rollback_asks_to_be_woken_for_the_next_step() -> None:
    sim = Simulation(runbook_spec(rollback={"stepDelay": "20s"}))
    began = run_to_rolling_back(sim)
    assert sim.decisions[-1][1].wake_at == at(began + 20)
    d = sim.poll(at(began + 15), HEALTHY)
    assert d.undo == ()
    assert d.wake_at == at(began + 20)


def test_the_incident_closes_after_the_last_undo_with_a_history_entry() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 1200, values=P2_READINGS)
    began = recover(sim, start=start + 1215)
    sim.run(start=began + 15, until=began + 600, values=HEALTHY, follow_wake=True)
    last_undo = began + 30 * (len(APPLIED_FOR_P2) - 2)  # the warming Job shares a step
    assert sim.status.state == State.IDLE
    assert sim.status.incident is None
    assert (sim.status.severity, sim.status.phase) == ("", "")
    assert [when for when, e in sim.events if e.reason == "IncidentClosed"] == [at(last_undo)]
    [entry] = sim.status.history
    assert entry.id == "20240501-120200"
    assert entry.severity == Severity.P2
    assert entry.started_at == at(start)
    assert entry.recovered_at == at(began)
    assert entry.closed_at == at(last_undo)
    assert entry.duration_seconds == last_undo - start
    assert entry.max_phase == "load-distribution"
    assert entry.escalated is False
    assert condition(sim.status, "IncidentActive").status == ConditionStatus.FALSE


def test_history_keeps_the_ten_newest_incidents_newest_first() -> None:
    sim = Simulation(tiny_spec(), roundtrip=True)
    ids = []
    t = 0.0
    for number in range(12):
        t = open_incident(sim, {"load": 20.0}, start=t)
        assert sim.status.incident is not None
        ids.append(sim.status.incident.id)
        t = recover_tiny(sim, start=t + 15)
        # Every incident is kept until there are ten; then the oldest makes room for the newest.
        assert [h.id for h in sim.status.history] == list(reversed(ids))[: min(number + 1, 10)]
    assert len(set(ids)) == 12
    assert len(sim.status.history) == 10  # the documented cap, written out: the constant itself may be wrong


def recover_tiny(sim: Simulation, *, start: float) -> float:
    t = start
    while sim.status.state != State.IDLE:
        sim.poll(at(t), {"load": 1.0})
        t += 15
    return t


# -- a new incident during rollback ----------------------------------------------------------------


def test_a_level_firing_during_rollback_opens_a_new_incident_keeping_what_is_still_applied() -> None:
    sim = Simulation(runbook_spec(rollback={"stepDelay": "2m"}))
    began = run_to_rolling_back(sim)
    old = sim.status.incident
    assert old is not None
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=began + 15, until=began + 60, values=worse)
    assert sim.status.state == State.ROLLING_BACK
    held_before = [c.action for c in sim.status.applied]
    assert held_before == APPLIED_FOR_P2[:-1]  # cache-sharding was undone at `began`
    d = sim.poll(at(began + 75), worse)
    assert [e.reason for e in d.events][:2] == ["IncidentClosed", "IncidentOpened"]
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.id != old.id
    assert sim.status.incident.severity == Severity.P0
    assert sim.status.history[0].id == old.id
    # Held changes stay held and are not applied again; the P0-only action is new.
    assert names(d.apply) == ["scale-postgres"]
    assert d.undo == ()
    assert [c.action for c in sim.status.applied] == [a for a in held_before if a != "warm-cache"] + ["scale-postgres"]


def test_a_job_action_is_created_again_for_an_incident_opened_during_rollback() -> None:
    sim = Simulation(runbook_spec(rollback={"stepDelay": "2m"}))
    began = run_to_rolling_back(sim)
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=began + 15, until=began + 75, values=worse)
    assert sim.status.incident is not None
    new_id = sim.status.incident.id
    decisions = sim.run(start=began + 90, until=began + 75 + 300, values=worse)
    assert names(decisions[-1].apply) == ["warm-cache"]  # its ConfigMap sibling is still held
    assert decisions[-1].incident_id == new_id
    assert [incident for action, incident in sim.cluster.jobs if action == "warm-cache"] == [
        sim.status.history[0].id,
        new_id,
    ]


# -- modes -----------------------------------------------------------------------------------------


def scripted(sim: Simulation) -> list[tuple[list[str], list[str], list[str], State]]:
    """A whole incident with a severity rise, recovery and rollback; the decisions as plain data."""
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=0, until=600, values=P2_READINGS)
    sim.run(start=615, until=1500, values=worse)
    sim.run(start=1515, until=2400, values=HEALTHY, follow_wake=True)
    return [
        (names(d.apply), [c.action for c in d.undo], [e.reason for e in d.events], d.status.state)
        for _, d in sim.decisions
    ]


def test_dry_run_makes_the_same_decisions_and_holds_its_changes_in_planned() -> None:
    enforce, dry = Simulation(runbook_spec()), Simulation(runbook_spec(mode="DryRun"))
    assert scripted(dry) == scripted(enforce)
    assert enforce.status.state == State.IDLE
    for (_, e), (_, d) in zip(enforce.decisions, dry.decisions, strict=True):
        assert d.status.applied == []
        assert [c.action for c in d.status.planned] == [c.action for c in e.status.applied]
    assert dry.status.history[0].max_phase == "load-distribution"


def test_suspend_asks_for_no_change_but_still_detects_and_reports() -> None:
    sim = Simulation(runbook_spec(suspend=True))
    sim.run(start=0, until=1200, values=P2_READINGS)
    assert all(d.apply == () for _, d in sim.decisions)
    assert sim.status.state == State.INCIDENT
    assert sim.status.phase == "load-distribution"
    assert "IncidentOpened" in sim.reasons()
    assert {s.name: s.value for s in sim.status.signals}["hitRate"] == "0.7"
    suspended = condition(sim.status, "Suspended")
    assert (suspended.status, suspended.reason) == (ConditionStatus.TRUE, "Suspended")


def test_suspend_asks_for_no_rollback_and_resuming_rolls_back() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    sim.spec = runbook_spec(suspend=True)
    sim.run(start=start + 15, until=start + 1200, values=HEALTHY)
    assert sim.status.state == State.ROLLING_BACK
    assert all(d.undo == () for _, d in sim.decisions)
    assert [c.action for c in sim.status.applied] == PHASE_1
    sim.spec = runbook_spec()
    sim.run(start=start + 1215, until=start + 1500, values=HEALTHY, follow_wake=True)
    assert sim.status.state == State.IDLE
    assert condition(sim.status, "Suspended").status == ConditionStatus.FALSE


def test_a_suspended_rollback_does_not_ask_to_be_called_again_at_once() -> None:
    # The runner sleeps until wake_at: `now` with stepDelay 0 would be a busy loop for as long as
    # the policy stays suspended, querying Prometheus on every turn.
    sim = Simulation(tiny_spec(rollback={"stepDelay": "0s"}))
    start = open_incident(sim, {"load": 20.0})
    assert [c.action for c in sim.status.applied] == ["flag"]
    sim.spec = tiny_spec(suspend=True, rollback={"stepDelay": "0s"})
    sim.run(start=start + 15, until=start + 600, values={"load": 1.0})
    assert sim.status.state == State.ROLLING_BACK
    for when, d in sim.decisions[-10:]:
        assert d.undo == ()
        assert d.wake_at is None or d.wake_at > when


# -- onMetricsError --------------------------------------------------------------------------------


def test_hold_opens_no_incident_while_any_signal_is_unknown() -> None:
    sim = Simulation(runbook_spec())
    blind = P2_READINGS | {"queueDepth": None}
    sim.run(start=0, until=600, values=blind)
    assert sim.status.state == State.IDLE
    sim.poll(at(615), P2_READINGS)
    assert sim.status.state == State.INCIDENT


def test_hold_advances_no_phase_while_any_signal_is_unknown() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    blind = P2_READINGS | {"queueDepth": None}
    sim.run(start=start + 15, until=start + 600, values=blind)
    assert sim.status.phase == "immediate-mitigation"
    assert all(d.apply == () for when, d in sim.decisions if when > at(start))
    assert sim.reasons().count("PhaseEntered") == 1
    d = sim.poll(at(start + 615), P2_READINGS)
    assert sim.status.phase == "cache-stabilization"
    assert names(d.apply) == PHASE_2


def test_hold_starts_no_recovery_while_any_signal_is_unknown() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    # Every recovery condition holds; only queueDepth (not part of recovery) is unknown.
    sim.run(start=start + 15, until=start + 1200, values=HEALTHY | {"queueDepth": None})
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since is None


def test_hold_resets_the_recovery_window_so_recovery_needs_fresh_healthy_readings_for_the_full_window() -> None:
    sim = Simulation(runbook_spec())
    start = p2_incident(sim)
    outage = start + 240
    sim.run(
        start=start + 15,
        until=outage + 315,
        values=lambda t: HEALTHY | {"queueDepth": None} if outage <= t < outage + 30 else HEALTHY,
    )
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since == at(outage + 30)
    sim.poll(at(outage + 330), HEALTHY)
    assert sim.status.state == State.ROLLING_BACK


def test_continue_advances_phases_by_time_while_a_signal_is_unknown() -> None:
    sim = Simulation(runbook_spec(onMetricsError="Continue"))
    start = p2_incident(sim)
    blind = dict.fromkeys(HEALTHY, None)
    sim.run(start=start + 15, until=start + 900, values=blind)
    assert sim.status.phase == "load-distribution"
    assert [c.action for c in sim.status.applied] == APPLIED_FOR_P2


def test_continue_opens_an_incident_from_the_signals_that_are_known() -> None:
    sim = Simulation(runbook_spec(onMetricsError="Continue"))
    sim.run(start=0, until=120, values=P2_READINGS | {"queueDepth": None})
    assert sim.status.state == State.INCIDENT


def test_continue_never_counts_an_unknown_signal_as_recovered() -> None:
    sim = Simulation(runbook_spec(onMetricsError="Continue"))
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 1200, values=HEALTHY | {"spikeRatio": None})
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since is None


# -- unknown readings ------------------------------------------------------------------------------

UNKNOWN_VALUES = [None, math.nan, math.inf, -math.inf]


@pytest.mark.parametrize("value", UNKNOWN_VALUES, ids=["None", "nan", "inf", "-inf"])
def test_an_unknown_reading_never_counts_as_breaching(value: float | None) -> None:
    spec = runbook_spec(
        onMetricsError="Continue",
        severities=[{"level": "P2", "any": ["hitRate < 0.8", "hitRate > 2", "hitRate != 0.95"], "for": "0s"}],
    )
    sim = Simulation(spec)
    sim.run(start=0, until=300, values=readings(hitRate=value))
    assert sim.status.breaching == []
    assert sim.status.state == State.IDLE


@pytest.mark.parametrize("value", UNKNOWN_VALUES, ids=["None", "nan", "inf", "-inf"])
def test_an_unknown_reading_never_counts_as_healthy(value: float | None) -> None:
    spec = runbook_spec(
        onMetricsError="Continue", recovery={"all": ["hitRate > 0.9", "hitRate < 2", "hitRate != 0.5"], "for": "0s"}
    )
    sim = Simulation(spec)
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 600, values=readings(hitRate=value))
    assert sim.status.state == State.INCIDENT
    assert sim.status.incident is not None
    assert sim.status.incident.recovering_since is None


def test_metrics_available_is_false_and_names_the_failing_signals() -> None:
    sim = Simulation(runbook_spec())
    sim.poll(at(0), readings(queueDepth=None, hitRate=math.nan), errors={"queueDepth": "query timed out"})
    available = condition(sim.status, "MetricsAvailable")
    assert available.status == ConditionStatus.FALSE
    assert "queueDepth" in available.message
    assert "hitRate" in available.message
    assert "query timed out" in available.message
    assert "missRate" not in available.message
    signals = {s.name: s for s in sim.status.signals}
    assert (signals["queueDepth"].value, signals["queueDepth"].error) == ("unknown", "query timed out")
    assert signals["hitRate"].value == "unknown"
    assert signals["hitRate"].error
    assert (signals["missRate"].value, signals["missRate"].error) == ("0.05", None)


def test_metrics_unavailable_and_restored_are_emitted_only_on_transitions() -> None:
    sim = Simulation(runbook_spec(), roundtrip=True)
    sim.run(start=0, until=300, values=HEALTHY)
    sim.run(start=315, until=3600, values=readings(dbConnections=None))
    sim.run(start=3615, until=4000, values=HEALTHY)
    metrics = [
        (when, e.reason, e.warning) for when, e in sim.events if e.reason in ("MetricsUnavailable", "MetricsRestored")
    ]
    assert metrics == [(at(315), "MetricsUnavailable", True), (at(3615), "MetricsRestored", False)]
    assert condition(sim.status, "MetricsAvailable").status == ConditionStatus.TRUE


# -- failures of the caller --------------------------------------------------------------------------


def test_a_failed_apply_is_planned_again_at_the_next_poll() -> None:
    sim = Simulation(runbook_spec(), fail_apply={"scale-api"})
    start = p2_incident(sim)
    assert "scale-api" in names(sim.decisions[-1][1].apply)
    d = sim.poll(at(start + 15), P2_READINGS)
    assert names(d.apply) == ["scale-api"]
    sim.fail_apply.clear()
    d = sim.poll(at(start + 30), P2_READINGS)
    assert names(d.apply) == ["scale-api"]
    d = sim.poll(at(start + 45), P2_READINGS)
    assert d.apply == ()
    assert sorted(c.action for c in sim.status.applied) == sorted(PHASE_1)


def test_a_failed_undo_is_retried_after_step_delay() -> None:
    sim = Simulation(runbook_spec(), fail_undo={"cache-sharding"})
    began = run_to_rolling_back(sim)
    assert [c.action for c in sim.decisions[-1][1].undo] == ["cache-sharding"]
    assert sim.poll(at(began + 15), HEALTHY).undo == ()
    sim.fail_undo.clear()
    assert [c.action for c in sim.poll(at(began + 30), HEALTHY).undo] == ["cache-sharding"]
    assert sim.poll(at(began + 45), HEALTHY).undo == ()
    assert [c.action for c in sim.poll(at(began + 60), HEALTHY).undo] == ["least-connections-and-queueing"]


# -- identity and conditions -------------------------------------------------------------------------


def test_the_incident_id_is_stable_through_an_incident_and_restarts_and_unique_per_incident() -> None:
    sim = Simulation(runbook_spec(), roundtrip=True)
    t = 0.0
    for _ in range(3):
        start = open_incident(sim, P2_READINGS, start=t)
        t = start + 600
        sim.run(start=start + 15, until=t, values=P2_READINGS)
        t = recover(sim, start=t + 15)
        sim.run(start=t + 15, until=t + 600, values=HEALTHY, follow_wake=True)
        assert sim.status.state == State.IDLE
        t += 615
    by_incident: dict[str, set[str | None]] = {}
    for _, d in sim.decisions:
        if d.status.incident is not None:
            by_incident.setdefault(d.status.incident.started_at.isoformat(), set()).add(d.incident_id)
    assert all(len(ids) == 1 for ids in by_incident.values())
    ids = [h.id for h in sim.status.history]
    assert len(ids) == len(set(ids)) == 3


def test_a_condition_keeps_its_last_transition_time_while_its_status_does_not_flip() -> None:
    sim = Simulation(runbook_spec(), roundtrip=True)
    sim.run(start=0, until=105, values=P2_READINGS)
    assert {c.type: c.last_transition_time for c in sim.status.conditions} == {
        "MetricsAvailable": at(0),
        "IncidentActive": at(0),
        "Escalated": at(0),
        "Suspended": at(0),
        "Held": at(0),
    }
    sim.run(start=120, until=600, values=P2_READINGS)
    times = {c.type: c.last_transition_time for c in sim.status.conditions}
    assert times == {
        "MetricsAvailable": at(0),
        "IncidentActive": at(120),
        "Escalated": at(0),
        "Suspended": at(0),
        "Held": at(0),
    }
    incident_active = condition(sim.status, "IncidentActive")
    assert incident_active.status == ConditionStatus.TRUE
    assert "cache-stabilization" in incident_active.message


def test_status_round_trips_through_its_wire_form_at_every_poll_of_a_whole_incident() -> None:
    sim = Simulation(runbook_spec(), roundtrip=True)  # asserts model_validate(wire()) == status
    start = p2_incident(sim)
    sim.run(start=start + 15, until=start + 2000, values=lambda t: P2_READINGS if t < start + 1900 else HEALTHY)
    sim.run(start=start + 2015, until=start + 3000, values=HEALTHY, follow_wake=True)
    assert sim.status.state == State.IDLE
    wire = sim.status.wire()
    assert PolicyStatus.model_validate(wire) == sim.status
    assert wire["history"][0]["durationSeconds"] == sim.status.history[0].duration_seconds


def test_decide_is_deterministic_for_the_same_inputs() -> None:
    spec = runbook_spec()
    status = PolicyStatus()
    first = decide(spec=spec, status=status, readings=P2_READINGS, now=at(0))
    second = decide(spec=spec, status=status, readings=P2_READINGS, now=at(0))
    assert first == second
    assert status == PolicyStatus()
    assert first.status.breaching[0].since == at(0)


def test_recording_a_change_holds_it_in_the_mode_s_list_and_names_it_once_in_the_incident() -> None:
    from stampede.api.status import AppliedChange, IncidentStatus
    from stampede.engine import record_applied, record_undone

    status = PolicyStatus(state=State.INCIDENT, incident=IncidentStatus(id="i", started_at=at(0), severity=Severity.P1))
    change = AppliedChange(action="scale-api", kind="Deployment", name="api", incident="i", applied_at=at(0))
    status = record_applied(status, change, dry_run=False)
    status = record_applied(status, change.model_copy(update={"applied_at": at(5)}), dry_run=True)
    assert [c.action for c in status.applied] == ["scale-api"]
    assert [c.action for c in status.planned] == ["scale-api"]
    assert status.incident is not None
    assert status.incident.actions == ["scale-api"]
    status = record_undone(status, change)
    assert (status.applied, status.planned) == ([], [])
