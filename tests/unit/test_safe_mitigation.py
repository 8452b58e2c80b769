"""Safe mitigation in the engine and its caller: restart coalescing, rollout-gated rollback, shadow actions,
the storm breaker and the manual controls (API.md, "Safe mitigation"), against the in-memory cluster."""

from __future__ import annotations

from datetime import timedelta
from pathlib import Path
from typing import Any

import yaml
from click.testing import CliRunner

from stampede.actuators.memory import MemoryActuator, MemoryTargets
from stampede.actuators.scaling import rollout_done
from stampede.api.status import ConditionStatus, PolicyStatus, State, StatusCondition
from stampede.cli import main
from stampede.engine.decide import Controls, Storm, awaited_workloads
from stampede.engine.outcomes import Step
from stampede.executing import roll_back_all
from stampede.handlers import metrics
from stampede.handlers.reporting import count_outcomes
from stampede.handlers.storm import Incidents, index_entry
from stampede.linting import restart_advice

from .policies import Simulation, at, open_incident, tiny_spec

LOAD = {"load": 20.0}
CALM = {"load": 1.0}
API = {"kind": "Deployment", "name": "api"}


def restart_spec(**overrides: Any) -> Any:
    """Two ConfigMap actions restarting `api` in one phase, and a scale of `api` in the second phase."""
    phases = [
        {
            "name": "first",
            "after": "0s",
            "actions": [
                {"name": "breaker", "configMap": {"name": "cfg", "data": {"BREAKER": "on"}, "restart": [API]}},
                {"name": "coalesce", "configMap": {"name": "cfg2", "data": {"COALESCE": "on"}, "restart": [API]}},
            ],
        },
        {
            "name": "second",
            "after": "1m",
            "actions": [{"name": "scale-api", "scale": {"kind": "Deployment", "name": "api", "replicas": 4}}],
        },
    ]
    return tiny_spec(phases=phases, **overrides)


def condition(status: PolicyStatus, type_: str) -> StatusCondition:
    return next(c for c in status.conditions if c.type == type_)


def rolled_back_to_idle(sim: Simulation, *, start: float, until: float) -> None:
    sim.run(start=start, until=until, values=CALM, follow_wake=True, stop=lambda s: s.status.state == State.IDLE)


# -- restart coalescing ------------------------------------------------------------------------------


def test_two_actions_restarting_one_workload_in_one_poll_cause_one_restart_naming_both() -> None:
    sim = Simulation(restart_spec())
    open_incident(sim, LOAD)
    assert sim.cluster.restarts == [("Deployment", "api")]
    restarts = [d for _, d in sim.outcomes if d.step == Step.RESTART]
    assert len(restarts) == 1
    assert restarts[0].outcome.reason == "WorkloadRestarted"
    assert "breaker" in restarts[0].outcome.message and "coalesce" in restarts[0].outcome.message
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce"}


def test_a_failed_coalesced_restart_drops_its_applies_so_the_next_poll_retries_them() -> None:
    sim = Simulation(restart_spec(), fail_restart={"api"})
    opened = open_incident(sim, LOAD)
    assert sim.status.applied == []
    failed = [d for _, d in sim.outcomes if d.step == Step.RESTART]
    assert failed[0].outcome.reason == "ActionFailed" and "retried at the next poll" in failed[0].outcome.message
    sim.fail_restart.clear()
    sim.poll(at(opened + 15), LOAD)
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce"}


def test_deleting_a_policy_undoes_every_change_with_one_restart_per_workload() -> None:
    sim = Simulation(restart_spec())
    open_incident(sim, LOAD)
    targets = MemoryTargets(configmaps=sim.cluster.configmaps)
    execution = roll_back_all(sim.status, MemoryActuator(policy="p", max_replicas=50, targets=targets), now=at(100))
    assert execution.status.applied == []
    assert targets.restarts == [("Deployment", "api")]


# -- rollout-gated rollback --------------------------------------------------------------------------


def scaled_and_recovering(sim: Simulation) -> float:
    """Open the incident, reach the second phase (scale), recover; return the time rollback started."""
    opened = open_incident(sim, LOAD)
    sim.run(start=opened + 15, until=opened + 90, values=LOAD)
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce", "scale-api"}
    t = opened + 105
    while sim.status.state != State.ROLLING_BACK:
        sim.poll(at(t), CALM)
        t += 15
    return t - 15


def test_the_next_undo_waits_until_the_previous_undos_rollout_is_complete() -> None:
    sim = Simulation(restart_spec(), roundtrip=True)
    began = scaled_and_recovering(sim)
    assert [a for _, a, _ in sim.undos] == ["scale-api"]
    assert [f"{w.kind}/{w.name}" for w in awaited_workloads(sim.status)] == ["Deployment/api"]
    sim.cluster.rollouts_pending.add("api")
    sim.run(start=began + 15, until=began + 300, values=CALM)  # well past stepDelay (30s), within 10m
    assert [a for _, a, _ in sim.undos] == ["scale-api"]
    sim.cluster.rollouts_pending.clear()
    sim.poll(at(began + 315), CALM)
    assert [a for _, a, _ in sim.undos] == ["scale-api", "coalesce"]


def test_the_rollout_wait_lives_in_status_and_survives_a_restart() -> None:
    sim = Simulation(restart_spec())
    began = scaled_and_recovering(sim)
    sim.cluster.rollouts_pending.add("api")
    restarted = Simulation(
        restart_spec(), status=PolicyStatus.model_validate(sim.status.wire()), cluster=sim.cluster, roundtrip=True
    )
    restarted.poll(at(began + 60), CALM)
    assert restarted.undos == []
    assert restarted.status.incident is not None and restarted.status.incident.rollout_wait is not None


def test_a_rollout_that_never_completes_times_out_with_a_warning_and_rollback_goes_on() -> None:
    sim = Simulation(restart_spec(rollback={"stepDelay": "30s", "rolloutTimeout": "2m"}))
    began = scaled_and_recovering(sim)
    sim.cluster.rollouts_pending.add("api")
    sim.run(start=began + 15, until=began + 105, values=CALM)
    assert "RolloutTimedOut" not in sim.reasons()
    d = sim.poll(at(began + 120), CALM)
    timed_out = [e for e in d.events if e.reason == "RolloutTimedOut"]
    assert timed_out and timed_out[0].warning and "Deployment api" in timed_out[0].message
    assert [a for _, a, _ in sim.undos] == ["scale-api", "coalesce"]


def test_wait_for_rollout_false_spaces_undos_by_step_delay_alone() -> None:
    sim = Simulation(restart_spec(rollback={"stepDelay": "30s", "waitForRollout": False}))
    began = scaled_and_recovering(sim)
    sim.cluster.rollouts_pending.add("api")
    sim.poll(at(began + 30), CALM)
    assert [a for _, a, _ in sim.undos] == ["scale-api", "coalesce"]


def test_the_last_undo_closes_the_incident_without_waiting() -> None:
    sim = Simulation(restart_spec())
    began = scaled_and_recovering(sim)
    rolled_back_to_idle(sim, start=began + 15, until=began + 600)
    assert sim.status.state == State.IDLE
    sim.cluster.rollouts_pending.add("api")  # nothing is left to wait for


# -- per-action shadow -------------------------------------------------------------------------------


def shadow_spec() -> Any:
    phases = [
        {
            "name": "first",
            "after": "0s",
            "actions": [
                {"name": "flag", "configMap": {"name": "cfg", "data": {"FLAG": "on"}}},
                {"name": "trial", "dryRun": True, "scale": {"kind": "Deployment", "name": "api", "replicas": 6}},
            ],
        }
    ]
    return tiny_spec(phases=phases)


def test_a_dry_run_action_is_only_planned_while_the_others_act() -> None:
    sim = Simulation(shadow_spec(), roundtrip=True)
    opened = open_incident(sim, LOAD)
    assert [c.action for c in sim.status.applied] == ["flag"]
    assert [c.action for c in sim.status.planned] == ["trial"]
    assert sim.cluster.configmaps["cfg"] == {"FLAG": "on"}
    assert "api" not in sim.cluster.replicas
    planned = [d for _, d in sim.outcomes if d.action == "trial"]
    assert [(d.step, d.outcome.reason) for d in planned] == [(Step.PLAN, "WouldApply")]
    sim.run(start=opened + 15, until=opened + 60, values=LOAD)
    assert len([d for _, d in sim.outcomes if d.action == "trial"]) == 1, "planned once, not at every poll"


def test_a_dry_run_action_is_rolled_back_only_in_words() -> None:
    sim = Simulation(shadow_spec())
    opened = open_incident(sim, LOAD)
    rolled_back_to_idle(sim, start=opened + 15, until=opened + 600)
    assert sim.settled()
    undone = [d.outcome.reason for _, d in sim.outcomes if d.action == "trial" and d.step == Step.UNDO]
    assert undone == ["WouldApply"]


# -- storm breaker -----------------------------------------------------------------------------------


def test_an_incident_opening_in_a_storm_is_held_reported_and_applies_nothing() -> None:
    sim = Simulation(restart_spec(), storm=Storm(limit=2, active=2, held=0))
    open_incident(sim, LOAD)
    assert sim.status.state == State.INCIDENT
    assert sim.status.applied == [] and sim.cluster.restarts == []
    held = condition(sim.status, "Held")
    assert (held.status, held.reason) == (ConditionStatus.TRUE, "StormBreaker")
    assert {"IncidentOpened", "StormHold", "SystemWideStampede"} <= set(sim.reasons())
    assert [e.warning for _, e in sim.events if e.reason == "SystemWideStampede"] == [True]


def test_only_the_first_held_policy_of_a_storm_announces_it() -> None:
    sim = Simulation(restart_spec(), storm=Storm(limit=2, active=2, held=1))
    open_incident(sim, LOAD)
    assert "StormHold" in sim.reasons()
    assert "SystemWideStampede" not in sim.reasons()


def test_a_held_policy_acts_when_the_count_falls_below_the_limit() -> None:
    sim = Simulation(restart_spec(), storm=Storm(limit=2, active=2))
    opened = open_incident(sim, LOAD)
    sim.poll(at(opened + 15), LOAD)
    assert sim.status.applied == []
    sim.storm = Storm(limit=2, active=1)
    d = sim.poll(at(opened + 30), LOAD)
    assert "Released" in [e.reason for e in d.events]
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce"}
    assert condition(sim.status, "Held").status == ConditionStatus.FALSE


def test_a_policy_already_acting_is_not_held_when_others_open_incidents() -> None:
    sim = Simulation(restart_spec())
    opened = open_incident(sim, LOAD)
    sim.storm = Storm(limit=1, active=5)
    sim.run(start=opened + 15, until=opened + 90, values=LOAD)
    assert "scale-api" in {c.action for c in sim.status.applied}
    assert "StormHold" not in sim.reasons()


def test_the_storm_hold_lives_in_status_and_survives_a_restart() -> None:
    sim = Simulation(restart_spec(), storm=Storm(limit=1, active=1), roundtrip=True)
    opened = open_incident(sim, LOAD)
    restarted = Simulation(
        restart_spec(), status=PolicyStatus.model_validate(sim.status.wire()), storm=Storm(limit=1, active=1)
    )
    restarted.poll(at(opened + 15), LOAD)
    assert restarted.status.applied == []
    assert condition(restarted.status, "Held").reason == "StormBreaker"


# -- manual controls ---------------------------------------------------------------------------------


def test_hold_freezes_phases_and_actions_and_still_reports() -> None:
    sim = Simulation(restart_spec(), controls=Controls(hold=True))
    opened = open_incident(sim, LOAD)
    sim.run(start=opened + 15, until=opened + 120, values=LOAD)
    assert sim.status.applied == [] and sim.status.incident is not None
    assert sim.status.incident.phase == ""
    assert (condition(sim.status, "Held").status, condition(sim.status, "Held").reason) == (
        ConditionStatus.TRUE,
        "Manual",
    )
    assert sim.reasons().count("Held") == 1
    assert sim.status.signals and sim.status.signals[0].value == "20"
    sim.controls = None
    d = sim.poll(at(opened + 135), LOAD)
    assert "Released" in [e.reason for e in d.events]
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce", "scale-api"}


def test_hold_keeps_what_is_applied_even_after_recovery() -> None:
    sim = Simulation(restart_spec())
    opened = open_incident(sim, LOAD)
    sim.controls = Controls(hold=True)
    sim.run(start=opened + 15, until=opened + 600, values=CALM)
    assert sim.undos == []
    assert {c.action for c in sim.status.applied} == {"breaker", "coalesce"}


def test_rollback_now_rolls_back_as_recovery_would_and_leaves_a_manual_history_entry() -> None:
    sim = Simulation(restart_spec())
    opened = open_incident(sim, LOAD)
    sim.run(start=opened + 15, until=opened + 90, values=LOAD)
    d = sim.poll(at(opened + 105), LOAD, controls=Controls(rollback_now=True))
    assert d.rollback_now_done
    assert sim.status.state == State.ROLLING_BACK
    assert [e.reason for e in d.events if e.reason == "ManualRollback"] == ["ManualRollback"]
    # The levels still fire: a manual rollback is not interrupted by a new incident.
    sim.run(
        start=opened + 120,
        until=opened + 900,
        values=LOAD,
        follow_wake=True,
        stop=lambda s: s.status.state == State.IDLE,
    )
    assert [a for _, a, _ in sim.undos] == ["scale-api", "coalesce", "breaker"]
    assert sim.status.history[0].manual is True
    closed = [e for _, e in sim.events if e.reason == "IncidentClosed"][-1]
    assert "rollback-now" in closed.message


def test_rollback_now_while_idle_changes_nothing_and_is_consumed() -> None:
    sim = Simulation(restart_spec())
    d = sim.poll(at(0), CALM, controls=Controls(rollback_now=True))
    assert d.rollback_now_done and sim.status.state == State.IDLE and d.events == ()


def test_rollback_now_wins_over_hold_for_the_rollback_it_starts() -> None:
    sim = Simulation(restart_spec(), controls=Controls(hold=True))
    opened = open_incident(sim, LOAD)
    sim.controls = None
    sim.poll(at(opened + 15), LOAD)
    sim.poll(at(opened + 30), LOAD, controls=Controls(hold=True, rollback_now=True))
    sim.controls = Controls(hold=True)
    sim.run(start=opened + 45, until=opened + 400, values=LOAD, follow_wake=True)
    assert sim.status.state == State.INCIDENT, "a new incident opens after the manual rollback, held"
    assert sim.status.applied == []
    assert sim.status.history[0].manual


def test_rollout_timeout_must_be_positive() -> None:
    import pytest
    from pydantic import ValidationError

    with pytest.raises(ValidationError, match="rolloutTimeout must be positive"):
        restart_spec(rollback={"rolloutTimeout": "0s"})
    assert restart_spec().rollback.rollout_timeout == timedelta(minutes=10)


# -- reading a rollout -------------------------------------------------------------------------------


def deployment(status: dict[str, int], *, generation: int = 2, replicas: int = 3) -> dict[str, Any]:
    return {"metadata": {"generation": generation}, "spec": {"replicas": replicas}, "status": status}


def test_a_rollout_is_complete_only_when_observed_updated_and_available_all_caught_up() -> None:
    done = {"observedGeneration": 2, "updatedReplicas": 3, "availableReplicas": 3, "replicas": 3}
    assert rollout_done(deployment(done))
    assert not rollout_done(deployment(done | {"replicas": 4})), "an old pod is still being scaled away"
    assert not rollout_done(deployment(done | {"observedGeneration": 1}))
    assert not rollout_done(deployment(done | {"updatedReplicas": 2}))
    assert not rollout_done(deployment(done | {"availableReplicas": 2}))
    assert not rollout_done(deployment(done, replicas=4))
    assert not rollout_done(deployment({}))


# -- lint advice -------------------------------------------------------------------------------------


def test_lint_advises_on_a_workload_restarted_by_several_actions_and_on_first_phase_restarts() -> None:
    advice = restart_advice(restart_spec())
    paths = [where for where, _ in advice]
    assert paths == [
        "spec.phases[0].actions[0].configMap.restart[0]",
        "spec.phases[0].actions[1].configMap.restart[0]",
        "spec.phases[0].actions[1].configMap.restart[0]",
    ]
    assert "also restarted by action(s) breaker" in advice[1][1]
    assert "first phase (first)" in advice[0][1]


def test_lint_gives_no_advice_for_a_restart_in_a_later_phase_only() -> None:
    phases = [
        {"name": "first", "after": "0s", "actions": [{"name": "flag", "configMap": {"name": "c", "data": {"A": "1"}}}]},
        {
            "name": "later",
            "after": "5m",
            "actions": [{"name": "cfg", "configMap": {"name": "c2", "data": {"B": "1"}, "restart": [API]}}],
        },
    ]
    assert restart_advice(tiny_spec(phases=phases)) == []


def test_the_lint_cli_prints_advice_as_warning_lines_and_exits_0(tmp_path: Path) -> None:
    body = {
        "apiVersion": "stampede.aurum.io/v1alpha1",
        "kind": "StampedePolicy",
        "metadata": {"name": "p", "namespace": "ns"},
        "spec": restart_spec().model_dump(mode="json", by_alias=True, exclude_none=True),
    }
    path = tmp_path / "p.yaml"
    path.write_text(yaml.safe_dump(body))
    result = CliRunner().invoke(main, ["lint", str(path)])
    assert result.exit_code == 0, result.output
    warnings = [line for line in result.stderr.splitlines() if line.startswith("warning: ")]
    assert len(warnings) == 3 and all("Deployment api" in line for line in warnings)
    assert "1 file(s) OK" in result.stdout


# -- the storm count ---------------------------------------------------------------------------------


def test_the_storm_count_leaves_out_the_asking_policy_and_prefers_the_loops_latest_decision() -> None:
    incidents = Incidents()
    incidents.index = {
        ("a", "p"): ["active"],
        ("b", "p"): ["active"],
        ("c", "p"): ["held"],
        ("d", "p"): ["idle"],
    }
    assert incidents.view(("a", "p"), limit=2) == Storm(limit=2, active=1, held=1)
    incidents.note(("b", "p"), PolicyStatus())  # b closed a moment ago; the index has not caught up
    assert incidents.view(("c", "p"), limit=2) == Storm(limit=2, active=1, held=0)
    assert incidents.view(("c", "p"), limit=0) == Storm()
    incidents.forget(("b", "p"))
    assert incidents.view(("c", "p"), limit=2).active == 2


def test_the_index_holds_an_entry_for_every_policy_so_a_closed_incident_replaces_an_open_one() -> None:
    assert index_entry(namespace="a", name="p", status={}) == {("a", "p"): "idle"}
    assert index_entry(namespace="a", name="p", status={"incident": {"id": "x"}}) == {("a", "p"): "active"}
    assert index_entry(namespace="a", name="p", status={"incident": {"stormHeld": True}}) == {("a", "p"): "held"}


def test_a_shadowed_action_counts_as_planned_in_the_actions_metric() -> None:
    sim = Simulation(shadow_spec())
    open_incident(sim, LOAD)
    labels = ("metric-ns", "shadow-policy")
    planned = metrics.ACTIONS_TOTAL.labels(*labels, "Deployment", "planned")
    before = planned._value.get()
    count_outcomes(*labels, [d for _, d in sim.outcomes])
    assert planned._value.get() == before + 1
