"""Incident records and KPIs, built by the pure record engine from replays of known histories.

The replay (`stampede simulate`'s engine loop, no I/O) plays the operator's caller contract, so a record
built here is the one the operator writes: these tests pin its content to timelines worked out by hand.
"""

from __future__ import annotations

import json
from datetime import datetime, timedelta
from typing import Any

import pytest
from hypothesis import HealthCheck, given, settings
from hypothesis import strategies as st

from stampede.actuators.memory import MemoryActuator
from stampede.api.incident import MAX_TIMELINE, ChangeOutcome, IncidentRecordStatus, RecordState
from stampede.api.spec import MAX_ACTIONS, MAX_PHASES, PolicySpec
from stampede.api.status import PolicyStatus
from stampede.engine.decide import Event, decide
from stampede.engine.records import RecordBook, follow, kpi_summary, measure_kpis, near_misses, new_record
from stampede.executing import execute, read_rollouts
from stampede.simulate import Replay, replay

from .policies import T0, at, tiny_spec

STEP = 15


def history(load: Any, *, until: int = 1200) -> list[tuple[datetime, dict[str, float | None], dict[str, str]]]:
    """One `load` value every 15 s from T0: `load(seconds)` gives the value."""
    return [(at(s), {"load": float(load(s))}, {}) for s in range(0, until + 1, STEP)]


def stampede(s: int) -> float:
    """Load 20 (breaching `load > 10`) from 0 to 10 minutes, then 1 (recovered, `load < 5`)."""
    return 20.0 if s < 600 else 1.0


def run(spec: PolicySpec, load: Any = stampede, *, until: int = 1200) -> Replay:
    return replay(spec, history(load, until=until), policy="aurum/tiny")


def only_record(result: Replay) -> IncidentRecordStatus:
    assert len(result.records.all) == 1, result.records.all
    return next(iter(result.records.all.values()))


def kpis(record: IncidentRecordStatus) -> dict[str, tuple[float | None, bool | None]]:
    return {k.name: (k.seconds, k.met) for k in record.kpis}


def test_kpis_are_measured_from_the_start_of_the_breach_window() -> None:
    # Breach from 0 s; `for: 1m` opens at 60 s and phase `first` applies `flag` then; load falls at 600 s,
    # recovery holds 1m at 660 s; two undos 30 s apart (660, 690), and the engine, woken at 690 s as the
    # operator would be (not at the next 15 s sample), closes the incident there.
    record = only_record(run(tiny_spec(targets={"mttr": "10m"})))

    assert record.first_breach_at == T0
    assert record.started_at == at(60)
    assert kpis(record) == {
        "detection": (60.0, True),
        "mitigation": (60.0, True),
        "stabilization": (600.0, True),
        "mttr": (660.0, False),
        "fullRecovery": (690.0, True),
    }
    assert [k.target for k in record.kpis] == ["2m", "5m", "15m", "10m", "30m"]
    assert record.mttr == "11m"


def test_a_closed_record_holds_phases_changes_timeline_and_peaks() -> None:
    record = only_record(run(tiny_spec(), lambda s: 20.0 + s / 100 if s < 600 else 1.0))

    assert record.state == RecordState.CLOSED
    assert record.closed_at == at(690)
    assert record.recovered_at == at(660)
    assert [(p.name, p.entered_at) for p in record.phases] == [("first", at(60)), ("second", at(180))]
    assert record.phase == "second"
    changes = {c.action: c for c in record.changes}
    assert changes["flag"].outcome == ChangeOutcome.ROLLED_BACK
    assert changes["flag"].applied_at == at(60)
    assert changes["flag"].rolled_back_at == at(690)
    assert changes["more"].rolled_back_at == at(660)
    # A replay has no cluster, so the value before is unknown: shown as absent, and restored as such.
    assert changes["flag"].message == "FLAG: (absent) → on → (absent)"
    reasons = [e.reason for e in record.timeline]
    assert reasons[0] == "IncidentOpened"
    assert reasons[-1] == "IncidentClosed"
    assert reasons.count("ActionRolledBack") == 2
    assert "RecoveryStarted" in reasons
    # The worst load (the highest: its condition fires above the threshold) at the last breaching poll.
    assert [(p.signal, p.value, p.at) for p in record.peaks] == [("load", 20.0 + 585 / 100, at(585))]


def test_the_policy_history_entry_carries_the_kpis_of_its_record() -> None:
    spec = tiny_spec()
    book = RecordBook()
    actuator = MemoryActuator(policy="tiny", max_replicas=50)
    status = PolicyStatus()
    for now, values, _ in history(stampede):
        rollouts = read_rollouts(status, actuator)  # the memory actuator's rollouts are complete at once
        decision = decide(spec=spec, status=status, readings=values, now=now, rollouts=rollouts)
        status = execute(decision, actuator, spec=spec, now=now).status
        status = book.step(
            spec=spec, policy="tiny", decision=decision, after=status, events=decision.events, values=values, now=now
        )
    assert len(status.history) == 1
    entry = status.history[0]
    assert [k.name for k in entry.kpis] == ["detection", "mitigation", "stabilization", "mttr", "fullRecovery"]
    assert kpi_summary(entry.kpis) == "5/5"


def test_an_open_incident_misses_a_kpi_as_soon_as_its_target_passes() -> None:
    # Load never recovers: after 15 minutes from the breach, stabilization and mttr are already missed.
    record = only_record(run(tiny_spec(), lambda s: 20.0, until=16 * 60))

    assert record.state == RecordState.OPEN
    assert record.closed_at is None
    assert kpis(record)["stabilization"] == (None, False)
    assert kpis(record)["mttr"] == (None, False)
    assert kpis(record)["fullRecovery"] == (None, None)
    assert record.mttr == ""


def test_a_dry_run_incident_gets_a_record_with_planned_changes() -> None:
    record = only_record(run(tiny_spec(mode="DryRun"), until=400))

    assert record.dry_run is True
    assert {c.action: c.outcome for c in record.changes} == {
        "flag": ChangeOutcome.PLANNED,
        "more": ChangeOutcome.PLANNED,
    }


def test_an_action_that_keeps_failing_counts_for_mitigation_only_once_recovery_is_confirmed() -> None:
    spec = tiny_spec()
    status = PolicyStatus()
    records: dict[str, IncidentRecordStatus] = {}
    # Breach from 0; open at 60 s; `flag` is asked for at every poll and fails every time.
    for s in range(0, 61, STEP):
        decision = decide(spec=spec, status=status, readings={"load": 20.0}, now=at(s))
        status = decision.status
        failed = [
            Event("ActionFailed", f"Action {a.name}: ConfigMap aurum/cfg not found.", True) for a in decision.apply
        ]
        touched = follow(
            records,
            spec=spec,
            policy="tiny",
            decided=status,
            after=status,
            events=[*decision.events, *failed],
            attempted=[a.name for a in decision.apply],
            values={"load": 20.0},
            now=at(s),
        )
        records.update(touched)
    record = next(iter(records.values()))
    assert [(c.action, c.kind, c.name, c.outcome, c.applied_at) for c in record.changes] == [
        ("flag", "ConfigMap", "cfg", ChangeOutcome.FAILED, at(60))
    ]
    assert "ConfigMap aurum/cfg not found" in record.changes[0].message
    assert kpis(record)["mitigation"] == (None, None)

    rolling = record.model_copy(update={"state": RecordState.ROLLING_BACK})
    assert {k.name: k.seconds for k in measure_kpis(rolling, spec=spec, now=at(700))}["mitigation"] == 60.0


def test_the_timeline_keeps_the_newest_200_events_and_cuts_long_messages() -> None:
    spec = tiny_spec()
    decision = decide(spec=spec, status=PolicyStatus(), readings={"load": 20.0}, now=at(0))
    status = decide(spec=spec, status=decision.status, readings={"load": 20.0}, now=at(60)).status
    record = new_record(spec=spec, policy="tiny", status=status, now=at(60))
    events = [Event("ActionApplied", f"event {i} " + "x" * 5000) for i in range(MAX_TIMELINE + 50)]
    touched = follow(
        {status.incident.id: record},  # type: ignore[union-attr]
        spec=spec,
        policy="tiny",
        decided=status,
        after=status,
        events=events,
        values={"load": 20.0},
        now=at(60),
    )
    timeline = next(iter(touched.values())).timeline
    assert len(timeline) == MAX_TIMELINE
    assert timeline[0].message.startswith("event 50 ")
    assert all(len(e.message) <= 512 for e in timeline)


def test_a_record_stays_far_under_the_api_servers_object_limit_whatever_the_policy_holds() -> None:
    # The largest policy the models admit: every phase, every action, each overriding 100 KB values.
    big_value = "v" * 100_000
    per_phase = MAX_ACTIONS // MAX_PHASES
    phases = [
        {
            "name": f"p{i}",
            "after": f"{i}m",
            "actions": [
                {
                    "name": f"a{i}-{j}",
                    "configMap": {"name": "cfg", "data": {f"K{i}-{j}-{k}": big_value for k in range(3)}},
                }
                for j in range(per_phase)
            ],
        }
        for i in range(MAX_PHASES)
    ]
    spec = tiny_spec(phases=phases)
    record = only_record(run(spec, lambda s: 20.0, until=25 * 60))
    size = len(json.dumps(record.wire()))
    assert len(record.changes) == MAX_ACTIONS
    assert size < 512 * 1024, size


@pytest.mark.parametrize(
    ("peak", "expected"),
    [(9.5, [("P2", "load > 10", 9.5)]), (8.0, []), (11.0, [])],
)
def test_a_condition_within_ten_percent_of_its_threshold_that_never_held_is_a_near_miss(
    peak: float, expected: list[tuple[str, str, float]]
) -> None:
    series = {"load": [(at(s), (peak if s == 60 else 1.0)) for s in range(0, 300, STEP)]}
    misses = near_misses(tiny_spec(), series)
    assert [(m.level, m.condition, m.value) for m in misses] == expected
    assert all(m.at == at(60) for m in misses)


def test_the_escalation_chain_reaches_its_levels_in_order_each_once() -> None:
    spec = tiny_spec(
        escalation={
            "levels": [
                {"name": "primary", "after": "1m"},
                {"name": "secondary", "after": "3m"},
                {"name": "emergency", "atSeverity": "P0"},
            ]
        }
    )
    result = run(spec, lambda s: 20.0, until=10 * 60)

    escalations = [(e.time, e.message) for e in result.events if e.reason == "Escalated"]
    assert [t for t, _ in escalations] == [at(120), at(240)]
    assert "level primary (1/3)" in escalations[0][1]
    assert "level secondary (2/3)" in escalations[1][1]
    record = only_record(result)
    assert [(e.level, e.at) for e in record.escalations] == [("primary", at(120)), ("secondary", at(240))]
    assert record.escalation_level == "secondary"


def test_levels_reached_at_once_are_each_announced_in_order() -> None:
    spec = tiny_spec(
        severities=[{"level": "P0", "any": ["load > 10"], "for": "1m"}],
        escalation={"levels": [{"name": "primary", "after": "0s"}, {"name": "emergency", "atSeverity": "P0"}]},
    )
    result = run(spec, lambda s: 20.0, until=120)

    escalations = [(e.time, e.message) for e in result.events if e.reason == "Escalated"]
    assert [t for t, _ in escalations] == [at(60), at(60)]
    assert ["primary" in escalations[0][1], "emergency" in escalations[1][1]] == [True, True]
    assert [e.level for e in only_record(result).escalations] == ["primary", "emergency"]


def test_the_old_escalation_form_is_one_level_named_escalated() -> None:
    result = run(tiny_spec(escalation={"after": "2m", "atSeverity": "P0"}), lambda s: 20.0, until=10 * 60)

    escalations = [e for e in result.events if e.reason == "Escalated"]
    assert len(escalations) == 1
    assert escalations[0].time == at(180)
    assert escalations[0].message.startswith("Incident 20240501-120100 escalated: open for more than 2m")
    assert only_record(result).escalation_level == "escalated"
    assert result.incidents[0].escalated is True


def test_an_escalation_level_naming_an_undeclared_target_is_invalid() -> None:
    with pytest.raises(ValueError, match=r"escalation.levels\[0\].notify: names undeclared notification target"):
        tiny_spec(escalation={"levels": [{"name": "primary", "after": "1m", "notify": "pager"}]})


def test_an_escalation_level_needs_a_way_to_be_reached() -> None:
    with pytest.raises(ValueError, match="must set after, atSeverity or both"):
        tiny_spec(escalation={"levels": [{"name": "primary"}]})


def test_kpi_targets_default_to_the_runbooks() -> None:
    t = tiny_spec().targets
    assert (t.detection, t.mitigation, t.stabilization, t.full_recovery, t.mttr) == (
        timedelta(minutes=2),
        timedelta(minutes=5),
        timedelta(minutes=15),
        timedelta(minutes=30),
        timedelta(minutes=15),
    )
    assert tiny_spec().history_limit == 10


@settings(max_examples=40, deadline=None, suppress_health_check=[HealthCheck.too_slow])
@given(st.lists(st.sampled_from([1.0, 7.0, 12.0, 30.0, None]), min_size=10, max_size=120))
def test_records_stay_bounded_and_their_milestones_in_order_whatever_the_signal_does(
    loads: list[float | None],
) -> None:
    spec = tiny_spec(recovery={"all": ["load < 5"], "for": "15s"}, severities=[{"level": "P2", "any": ["load > 10"]}])
    history = [(at(i * STEP), {"load": v}, {} if v is not None else {"load": "no data"}) for i, v in enumerate(loads)]
    result = replay(spec, history, policy="aurum/tiny")
    assert len(result.records.all) == len(result.incidents)
    for record in result.records.all.values():
        assert len(record.timeline) <= MAX_TIMELINE
        assert record.first_breach_at <= record.started_at
        times = [p.entered_at for p in record.phases]
        assert times == sorted(times)
        measured = {k.name: k.seconds for k in record.kpis if k.seconds is not None}
        assert all(seconds >= 0 for seconds in measured.values())
        order = [measured[name] for name in ("detection", "mttr", "fullRecovery") if name in measured]
        assert order == sorted(order)
        if record.state == RecordState.CLOSED:
            assert all(k.met is not None for k in record.kpis), record.kpis
            assert record.closed_at is not None
