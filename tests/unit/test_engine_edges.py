"""Boundaries and corners of the runbook rules that the mutation run (`make mutate`) found unguarded.

Each test states the rule it pins; docs/testing.md lists the mutants that are left and why they are
equivalent. Times are seconds after T0; see test_engine.py for the runbook's windows.
"""

from __future__ import annotations

import dataclasses
from typing import Any

import pytest

from stampede.api.status import PolicyStatus, State
from stampede.engine.decide import Decision, Event, decide

from .policies import HEALTHY, P2_READINGS, Simulation, at, open_incident, readings, runbook_spec, tiny_spec

LOAD = {"load": 20.0}
CALM = {"load": 1.0}


def test_decisions_and_events_are_immutable_values() -> None:
    event = Event("PhaseEntered", "text")
    assert hash(event) == hash(Event("PhaseEntered", "text"))
    with pytest.raises(dataclasses.FrozenInstanceError):
        event.reason = "other"  # type: ignore[misc]
    decision = Decision(status=PolicyStatus())
    with pytest.raises(dataclasses.FrozenInstanceError):
        decision.apply = ()  # type: ignore[misc]


# -- wake-ups ---------------------------------------------------------------------------------------


def test_the_earliest_of_several_wanted_wake_ups_wins() -> None:
    # tiny: phase two 2 m after the start, recovery after 1 m of calm. Opened at 60 s, calm from 75 s:
    # the recovery window ends at 135 s, before phase two is due at 180 s.
    sim = Simulation(tiny_spec())
    assert open_incident(sim, LOAD) == 60
    d = sim.poll(at(75), CALM)
    assert d.status.incident is not None
    assert d.status.incident.next_phase_at == at(180)
    assert d.status.incident.recovering_since == at(75)
    assert d.wake_at == at(135)


def test_a_suspended_incident_still_asks_to_be_woken_for_its_next_phase() -> None:
    sim = Simulation(tiny_spec(suspend=True))
    assert open_incident(sim, LOAD) == 60
    d = sim.poll(at(75), LOAD)
    assert d.wake_at == at(180)


def test_with_no_step_delay_only_the_last_undo_asks_for_an_immediate_call() -> None:
    # Two changes to undo, stepDelay 0: the first undo waits for the next poll like any other step;
    # only after the last one is an immediate call useful (to close the incident).
    sim = Simulation(tiny_spec(rollback={"stepDelay": "0s"}))
    assert open_incident(sim, LOAD) == 60
    sim.run(start=75, until=180, values=LOAD)
    assert [c.action for c in sim.status.applied] == ["flag", "more"]
    sim.run(start=195, until=240, values=CALM)
    first = sim.poll(at(255), CALM)
    assert first.status.state == State.ROLLING_BACK
    assert [c.action for c in first.undo] == ["more"]
    assert first.wake_at is None
    last = sim.poll(at(270), CALM)
    assert [c.action for c in last.undo] == ["flag"]
    assert last.wake_at == at(270)


# -- phases -----------------------------------------------------------------------------------------


def late_first_phase(**overrides: Any) -> Any:
    return tiny_spec(
        phases=[
            {
                "name": "first",
                "after": "1m",
                "actions": [{"name": "flag", "configMap": {"name": "cfg", "data": {"F": "1"}}}],
            },
            {
                "name": "second",
                "after": "3m",
                "actions": [{"name": "more", "scale": {"kind": "Deployment", "name": "api", "replicas": 4}}],
            },
        ],
        **overrides,
    )


def test_an_incident_whose_first_phase_starts_later_enters_no_phase_until_then() -> None:
    sim = Simulation(late_first_phase())
    assert open_incident(sim, LOAD) == 60
    d = sim.decisions[-1][1]
    assert d.status.phase == ""
    assert d.apply == ()
    assert "PhaseEntered" not in sim.reasons()
    assert d.status.incident is not None
    assert d.status.incident.next_phase_at == at(120)
    assert d.wake_at == at(120)
    entered = sim.poll(at(120), LOAD)
    assert entered.status.phase == "first"
    assert [a.name for a in entered.apply] == ["flag"]


def test_a_phase_keeps_the_time_it_was_entered_at() -> None:
    sim = Simulation(tiny_spec())
    assert open_incident(sim, LOAD) == 60
    sim.run(start=75, until=170, values=LOAD)
    assert sim.status.incident is not None
    assert sim.status.incident.phase_started_at == at(60)
    sim.run(start=180, until=400, values=LOAD)
    assert sim.status.incident is not None
    assert sim.status.incident.phase_started_at == at(180)


def test_editing_the_spec_never_moves_an_incident_back_to_an_earlier_phase() -> None:
    sim = Simulation(tiny_spec())
    assert open_incident(sim, LOAD) == 60
    sim.run(start=75, until=200, values=LOAD)
    assert sim.status.phase == "second"
    # Someone pushes phase two further out; the incident has already entered it.
    sim.spec = tiny_spec(
        phases=[
            {
                "name": "first",
                "after": "0s",
                "actions": [{"name": "flag", "configMap": {"name": "cfg", "data": {"FLAG": "on"}}}],
            },
            {
                "name": "second",
                "after": "1h",
                "actions": [{"name": "more", "scale": {"kind": "Deployment", "name": "api", "replicas": 4}}],
            },
        ]
    )
    d = sim.poll(at(215), LOAD)
    assert d.status.phase == "second"
    assert d.apply == ()
    assert sim.reasons().count("PhaseEntered") == 2


# -- escalation and rollback timing -------------------------------------------------------------------


def test_a_poll_that_comes_late_for_the_escalation_still_escalates() -> None:
    sim = Simulation(runbook_spec())
    assert open_incident(sim, P2_READINGS) == 120
    sim.run(start=135, until=1905, values=P2_READINGS)
    assert sim.status.incident is not None and not sim.status.incident.escalated
    sim.poll(at(1927), P2_READINGS)  # due at 1920 (30 m after 120); this poll is 7 s late
    assert sim.status.incident is not None
    assert sim.status.incident.escalated
    assert [e.warning for _, e in sim.events if e.reason == "Escalated"] == [True]


def test_rollback_steps_at_the_first_poll_after_the_step_delay_when_polls_do_not_line_up() -> None:
    sim = Simulation(tiny_spec(rollback={"stepDelay": "30s"}))
    assert open_incident(sim, LOAD) == 60
    sim.run(start=75, until=180, values=LOAD)
    undos = [
        (when, [c.action for c in d.undo])
        for when, d in ((t, sim.poll(at(t), CALM)) for t in range(200, 400, 20))
        if d.undo
    ]
    # Recovery at 260 (calm since 200, for 1 m) undoes `more`; 280 is only 20 s later; 300 is 40 s.
    assert undos == [(260, ["more"]), (300, ["flag"])]


def test_a_policy_that_only_creates_jobs_closes_in_one_step() -> None:
    spec = tiny_spec(
        phases=[{"name": "warm", "after": "0s", "actions": [{"name": "warm", "job": {"fromCronJob": "c"}}]}]
    )
    sim = Simulation(spec)
    assert open_incident(sim, LOAD) == 60
    assert [c.kind for c in sim.status.applied] == ["Job"]
    sim.run(start=75, until=600, values=CALM, follow_wake=True, stop=Simulation.settled)
    assert sim.status.state == State.IDLE
    assert [a for _, a, _ in sim.undos] == ["warm"]
    (step,) = [(when, d) for when, d in sim.decisions if d.undo]
    assert step[1].wake_at == step[0]  # the only step is the last: close at the very next call


def test_jobs_that_are_all_that_is_held_go_in_one_last_step_that_asks_for_an_immediate_call() -> None:
    spec = tiny_spec(
        phases=[
            {"name": "warm", "after": "0s", "actions": [{"name": "warm", "job": {"fromCronJob": "c"}}]},
            {"name": "again", "after": "1m", "actions": [{"name": "rewarm", "job": {"fromCronJob": "d"}}]},
        ]
    )
    sim = Simulation(spec)
    assert open_incident(sim, LOAD) == 60
    sim.run(start=75, until=120, values=LOAD)
    assert [c.action for c in sim.status.applied] == ["warm", "rewarm"]
    sim.run(start=135, until=600, values=CALM, follow_wake=True, stop=Simulation.settled)
    steps = [(when, d) for when, d in sim.decisions if d.undo]
    assert [[c.action for c in d.undo] for _, d in steps] == [["rewarm", "warm"]]
    assert steps[0][1].wake_at == steps[0][0]


def test_dry_run_keeps_planned_changes_but_not_jobs_when_an_incident_reopens_during_rollback() -> None:
    sim = Simulation(runbook_spec(mode="DryRun", rollback={"stepDelay": "2m"}))
    assert open_incident(sim, P2_READINGS) == 120
    sim.run(start=135, until=120 + 1200, values=P2_READINGS)
    planned = [c.action for c in sim.status.planned]
    assert "warm-cache" in planned
    t = 120 + 1215
    while sim.status.state != State.ROLLING_BACK:
        sim.poll(at(t), HEALTHY)
        t += 15
    worse = readings(hitRate=0.7, missRate=0.3, dbConnections=195.0)
    sim.run(start=t, until=t + 45, values=worse)
    held = [c.action for c in sim.status.planned]
    d = sim.poll(at(t + 60), worse)
    assert [e.reason for e in d.events][:2] == ["IncidentClosed", "IncidentOpened"]
    kept = [c.action for c in d.status.planned]
    assert kept == [a for a in held if a != "warm-cache"]
    assert kept  # non-Job changes are still held: planned again they would be planned twice
    assert sim.status.applied == []


def test_decide_with_no_status_at_all_is_idle_and_asks_for_nothing() -> None:
    d = decide(spec=tiny_spec(), status=PolicyStatus(), readings=CALM, now=at(0))
    assert (d.status.state, d.apply, d.undo, d.wake_at, d.incident_id) == (State.IDLE, (), (), None, None)
