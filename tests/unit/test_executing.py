"""The caller's half of the engine contract: `execute`, adoption, drift and deletion, with in-memory actuators."""

from __future__ import annotations

from dataclasses import dataclass, field
from datetime import datetime

import pytest

from stampede.actuators.configmaps import ConfigMaps
from stampede.actuators.jobs import Jobs
from stampede.actuators.memory import MemoryActuator, MemoryTargets
from stampede.actuators.scaling import Scaling
from stampede.api.kinds import ChangeKind
from stampede.api.reasons import Reason
from stampede.api.spec import Action, PolicySpec
from stampede.api.status import AppliedChange, IncidentStatus, PolicyStatus, State, WorkloadStatusRef
from stampede.engine import drift, outcomes
from stampede.engine.decide import Decision, decide
from stampede.engine.outcomes import Outcome, Step
from stampede.executing import execute, reconcile, roll_back_all

from .policies import Simulation, at, open_incident, tiny_spec

FLAG = Action.model_validate({"name": "flag", "configMap": {"name": "cfg", "data": {"FLAG": "on"}}})
OLD = Action.model_validate({"name": "old", "configMap": {"name": "cfg", "data": {"FLAG": "on"}}})
LOAD = {"load": 20.0}
"""tiny_spec's one level fires (load > 10)."""
CALM = {"load": 1.0}
"""tiny_spec's recovery holds (load < 5)."""
WARM = Action.model_validate({"name": "warm", "job": {"fromCronJob": "warmer"}})


def spec_with(*actions: Action) -> PolicySpec:
    """tiny_spec with these actions in its one phase."""
    listed = [a.model_dump(by_alias=True, exclude_none=True) for a in actions]
    return tiny_spec(phases=[{"name": "only", "after": "0s", "actions": listed}])


def change(action: str = "flag", *, kind: ChangeKind = ChangeKind.CONFIG_MAP, incident: str = "i-1") -> AppliedChange:
    return AppliedChange(
        action=action,
        kind=kind,
        name="cfg",
        incident=incident,
        applied_at=at(0),
        original={"FLAG": None},
        applied={"FLAG": "on"},
    )


@dataclass
class Recording:
    """An actuator that records what it was asked and hands out the outcomes it is given."""

    landed_: dict[str, bool | None] = field(default_factory=dict)
    """Per action: whether its journalled write reached the target (None: the target cannot be read)."""
    undo_fails: set[str] = field(default_factory=set)
    restart_fails: set[str] = field(default_factory=set)
    """Workload names whose restart fails."""
    calls: list[str] = field(default_factory=list)

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        self.calls.append(f"apply {action.name}")
        return outcomes.configmap_set(change(action.name, incident=incident), configmap="cfg", dry_run=dry_run)

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True) -> Outcome:
        self.calls.append(f"undo {change.action}" + ("" if last else " (not last)"))
        if change.action in self.undo_fails:
            return outcomes.rollback_failed(change, status=500, problem="boom")
        return outcomes.rolled_back(change, restored=change.original)

    def reverted(self, change: AppliedChange) -> list[str] | None:
        self.calls.append(f"reverted {change.action}")
        return []

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        self.calls.append(f"reapply {change.action}")
        return outcomes.reapplied(drift.reverted_once_more(change))

    def landed(self, change: AppliedChange) -> bool | None:
        self.calls.append(f"landed {change.action} on {change.kind} {change.name}")
        return self.landed_.get(change.action, False)

    def restart(self, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        self.calls.append(f"restart {workload.kind} {workload.name}")
        return "failed (500): boom" if workload.name in self.restart_fails else None

    def rollout_complete(self, workload: WorkloadStatusRef) -> bool | None:
        return True


def test_a_guard_that_cannot_be_taken_postpones_every_apply_and_says_why() -> None:
    spec = tiny_spec()
    incident = IncidentStatus(id="i-1", started_at=at(0), severity="P2")
    decision = Decision(status=PolicyStatus(state=State.INCIDENT, incident=incident), apply=(FLAG,), incident_id="i-1")
    actuator = Recording()

    execution = execute(
        decision,
        actuator,
        spec=spec,
        now=at(0),
        hold=lambda: outcomes.hold_failed(finalizer="stampede.aurum.io/rollback", problem="forbidden"),
    )

    assert [c for c in actuator.calls if c.startswith("apply")] == []
    assert execution.status.applied == []
    assert not execution.held
    (done,) = execution.done
    assert (done.step, done.outcome.reason, done.outcome.ok) == (Step.HOLD, Reason.ACTION_FAILED, False)
    assert "changes postponed" in done.outcome.message


def test_the_guard_is_taken_once_before_the_first_apply_and_never_in_dry_run() -> None:
    incident = IncidentStatus(id="i-1", started_at=at(0), severity="P2")
    decision = Decision(status=PolicyStatus(state=State.INCIDENT, incident=incident), apply=(FLAG,), incident_id="i-1")
    held: list[str] = []

    def hold() -> Outcome | None:
        held.append("finalizer")
        return None

    enforced = execute(decision, Recording(), spec=tiny_spec(), now=at(0), hold=hold)
    planned = execute(decision, Recording(), spec=tiny_spec(mode="DryRun"), now=at(0), hold=hold)

    assert held == ["finalizer"]
    assert enforced.held and [c.action for c in enforced.status.applied] == ["flag"]
    assert [c.action for c in planned.status.planned] == ["flag"] and planned.status.applied == []


def test_undos_run_before_applies_and_a_failed_undo_keeps_its_change_held() -> None:
    incident = IncidentStatus(id="i-2", started_at=at(0), severity="P2")
    held = change("old", incident="i-1")
    status = PolicyStatus(state=State.INCIDENT, incident=incident, applied=[held])
    decision = Decision(status=status, apply=(FLAG,), undo=(held,), incident_id="i-2")
    actuator = Recording(undo_fails={"old"})

    execution = execute(decision, actuator, spec=spec_with(FLAG, OLD), now=at(0))

    assert actuator.calls[:2] == ["undo old", "apply flag"]
    assert [c.action for c in execution.status.applied] == ["old", "flag"]
    assert [(d.step, d.outcome.ok) for d in execution.done] == [(Step.UNDO, False), (Step.APPLY, True)]


def test_an_undo_keeps_the_objects_mark_while_another_change_of_the_policy_holds_it() -> None:
    first, second = change("old"), change("flag")
    status = PolicyStatus(state=State.ROLLING_BACK, applied=[first, second])
    actuator = Recording()

    execute(Decision(status=status, undo=(second,)), actuator, spec=spec_with(FLAG, OLD), now=at(0))
    execute(Decision(status=PolicyStatus(applied=[first]), undo=(first,)), actuator, spec=spec_with(OLD), now=at(1))

    assert actuator.calls == ["undo flag (not last)", "undo old"]


def test_status_records_the_spec_does_not_account_for_are_never_undone() -> None:
    planted = [
        change("gone"),  # no such action
        change("flag", kind=ChangeKind.DEPLOYMENT),  # the action changes a ConfigMap
        change("flag").model_copy(update={"applied": {"OTHER": "x"}}),  # a key the action does not set
    ]
    for record in planted:
        actuator = Recording()
        status = PolicyStatus(state=State.ROLLING_BACK, applied=[record])

        execution = execute(Decision(status=status, undo=(record,)), actuator, spec=spec_with(FLAG), now=at(0))

        assert actuator.calls == []
        (done,) = execution.done
        assert (done.outcome.reason, done.outcome.ok) == (Reason.ROLLBACK_SKIPPED, True)
        assert "not rolled back" in done.outcome.message
        assert execution.status.applied == []


def test_the_target_of_an_undo_comes_from_the_spec_never_from_status() -> None:
    planted = change("flag").model_copy(update={"name": "other-config", "restart": []})
    actuator = Recording()
    status = PolicyStatus(state=State.ROLLING_BACK, applied=[planted])

    execute(Decision(status=status, undo=(planted,)), actuator, spec=spec_with(FLAG), now=at(0))
    actuator.calls.clear()
    reconcile(spec_with(FLAG), PolicyStatus(journal=[planted]), actuator, now=at(0))

    assert actuator.calls == ["landed flag on ConfigMap cfg"]


def test_a_change_reverted_by_someone_else_is_re_applied_until_the_give_up_count_then_is_a_conflict() -> None:
    sim = Simulation(tiny_spec())
    start = open_incident(sim, LOAD)
    assert sim.cluster.configmaps["cfg"] == {"FLAG": "on"}
    reasons = []
    for poll in range(1, drift.MAX_DRIFT_REVERTS + 3):
        sim.cluster.configmaps["cfg"]["FLAG"] = "off"  # GitOps self-heal puts it back
        sim.poll(at(start + 15 * poll), LOAD)
        reasons += [d.outcome.reason for when, d in sim.outcomes if when == at(start + 15 * poll)]

    assert reasons == [Reason.DRIFT_CORRECTED] * (drift.MAX_DRIFT_REVERTS - 1) + [Reason.CONFLICT]
    (held,) = sim.status.applied
    assert held.reverts == drift.MAX_DRIFT_REVERTS
    assert sim.cluster.configmaps["cfg"]["FLAG"] == "off", "given up: the operator stops fighting"


def test_drift_is_not_corrected_in_dry_run_nor_while_suspended() -> None:
    for spec in (tiny_spec(mode="DryRun"), tiny_spec(suspend=True)):
        sim = Simulation(spec)
        start = open_incident(sim, LOAD)
        sim.cluster.configmaps["cfg"] = {"FLAG": "off"}
        sim.poll(at(start + 15), LOAD)
        assert not [d for _, d in sim.outcomes if d.step in (Step.REAPPLY, Step.GIVE_UP)]


def test_a_journalled_change_that_landed_on_an_idle_policy_is_held_under_a_recovered_incident() -> None:
    spec = tiny_spec()
    found = change("flag", incident="20240501-115500").model_copy(update={"applied_at": at(-300)})
    actuator = Recording(landed_={"flag": True})

    execution = reconcile(spec, PolicyStatus(journal=[found]), actuator, now=at(0))

    status = execution.status
    assert status.state == State.ROLLING_BACK
    assert status.applied == [found] and status.journal == []
    assert status.incident is not None
    assert (status.incident.id, status.incident.started_at, status.incident.recovered_at) == (
        "20240501-115500",
        at(-300),
        at(0),
    )
    (done,) = execution.done
    assert (done.step, done.outcome.reason, done.outcome.warning) == (Step.ADOPT, Reason.ACTION_APPLIED, True)
    decision = decide(spec=spec, status=status, readings=CALM, now=at(0))
    assert [c.action for c in decision.undo] == ["flag"]


def test_a_journalled_change_that_never_landed_is_dropped_and_an_unreadable_one_kept() -> None:
    spec = spec_with(FLAG, OLD)
    entries = [change("flag"), change("old")]
    actuator = Recording(landed_={"flag": False, "old": None})

    execution = reconcile(spec, PolicyStatus(journal=entries), actuator, now=at(0))

    assert execution.status.applied == [] and execution.done == ()
    assert [e.action for e in execution.status.journal] == ["old"], "looked at again next tick"
    assert execution.status.state == State.IDLE


def test_reconciling_keeps_an_open_incident_and_reads_only_the_journalled_targets() -> None:
    spec = tiny_spec()
    incident = IncidentStatus(id="i-1", started_at=at(0), severity="P2")
    actuator = Recording(landed_={"flag": True})
    status = PolicyStatus(state=State.INCIDENT, incident=incident, journal=[change("flag")])

    execution = reconcile(spec, status, actuator, now=at(10))

    assert execution.status.state == State.INCIDENT and execution.status.incident == incident
    assert actuator.calls == ["landed flag on ConfigMap cfg"], "only the journalled target is read"
    assert [c.action for c in execution.status.applied] == ["flag"]
    actuator.calls.clear()
    again = reconcile(spec, execution.status.model_copy(update={"journal": [change("flag")]}), actuator, now=at(20))
    assert actuator.calls == [], "a change status already holds is not looked for again"
    assert again.status.applied == execution.status.applied


RESTARTING = Action.model_validate(
    {
        "name": "flag",
        "configMap": {"name": "cfg", "data": {"FLAG": "on"}, "restart": [{"kind": "Deployment", "name": "api"}]},
    }
)
ALSO = Action.model_validate(
    {
        "name": "also",
        "configMap": {"name": "cfg", "data": {"MORE": "on"}, "restart": [{"kind": "Deployment", "name": "api"}]},
    }
)


def test_a_journalled_change_held_during_an_incident_restarts_its_workloads_once_from_the_spec() -> None:
    spec = spec_with(RESTARTING, ALSO)
    incident = IncidentStatus(id="i-1", started_at=at(0), severity="P2")
    actuator = Recording(landed_={"flag": True, "also": True})
    also = change("also").model_copy(update={"original": {"MORE": None}, "applied": {"MORE": "on"}})
    planted = WorkloadStatusRef(kind="Deployment", name="elsewhere")  # status never names what restarts
    entries = [change("flag").model_copy(update={"restart": [planted]}), also]
    status = PolicyStatus(state=State.INCIDENT, incident=incident, journal=entries)

    execution = reconcile(spec, status, actuator, now=at(10))

    assert [c for c in actuator.calls if c.startswith("restart")] == ["restart Deployment api"]
    assert [c.action for c in execution.status.applied] == ["flag", "also"]
    restart = execution.done[-1]
    assert (restart.step, restart.action) == (Step.RESTART, "flag, also")


def test_a_journalled_change_whose_restart_fails_again_stays_held_and_the_failure_is_reported() -> None:
    spec = spec_with(RESTARTING)
    incident = IncidentStatus(id="i-1", started_at=at(0), severity="P2")
    actuator = Recording(landed_={"flag": True}, restart_fails={"api"})
    status = PolicyStatus(state=State.INCIDENT, incident=incident, journal=[change("flag")])

    execution = reconcile(spec, status, actuator, now=at(10))

    assert [c.action for c in execution.status.applied] == ["flag"], "dropped, it would be re-planned"
    restart = execution.done[-1]
    assert (restart.step, restart.outcome.ok) == (Step.RESTART, False)
    assert "boom" in restart.outcome.message


def test_a_journalled_change_held_on_an_idle_policy_is_not_restarted_since_it_is_rolled_back_at_once() -> None:
    actuator = Recording(landed_={"flag": True})

    execution = reconcile(spec_with(RESTARTING), PolicyStatus(journal=[change("flag")]), actuator, now=at(0))

    assert execution.status.state == State.ROLLING_BACK
    assert not [c for c in actuator.calls if c.startswith("restart")]


def test_rolling_back_everything_keeps_only_what_could_not_be_undone_oldest_first() -> None:
    first = change("first").model_copy(update={"applied_at": at(0)})
    second = change("second").model_copy(update={"applied_at": at(10)})
    third = change("third").model_copy(update={"applied_at": at(20)})
    actuator = Recording(undo_fails={"first", "third"})

    execution = roll_back_all(PolicyStatus(applied=[first, second, third]), actuator, now=at(30))

    assert [c.split(" (")[0] for c in actuator.calls] == ["undo third", "undo second", "undo first"], "newest first"
    assert [c.action for c in execution.status.applied] == ["first", "third"]


def test_planned_changes_are_dropped_once_an_enforced_policy_is_idle() -> None:
    planned = change("flag")
    decision = Decision(status=PolicyStatus(planned=[planned]))

    assert execute(decision, Recording(), spec=tiny_spec(), now=at(0)).status.planned == []
    assert execute(decision, Recording(), spec=tiny_spec(mode="DryRun"), now=at(0)).status.planned == [planned]


@pytest.mark.parametrize("kind", [ConfigMaps, Scaling, Jobs])
def test_each_target_kind_is_reversible_exactly_when_its_change_kinds_are(kind: type) -> None:
    assert kind.kinds
    assert {k.reversible for k in kind.kinds} == {kind.reversible}


def test_the_target_kinds_record_every_change_kind_exactly_once() -> None:
    recorded = [k for kind in (ConfigMaps, Scaling, Jobs) for k in kind.kinds]
    assert sorted(recorded) == sorted(ChangeKind)


def test_a_replay_words_changes_as_the_operator_and_invents_no_current_values() -> None:
    actuator = MemoryActuator(policy="aurum-cache", max_replicas=50)
    scale = Action.model_validate({"name": "scale-api", "scale": {"kind": "Deployment", "name": "api", "replicas": 80}})

    raised = actuator.apply(scale, incident="i-1", now=at(0), dry_run=False)
    flagged = actuator.apply(FLAG, incident="i-1", now=at(0), dry_run=False)
    assert flagged.change is not None

    assert (
        raised.message
        == "Raised replicas of Deployment api to 50 (capped by STAMPEDE_MAX_REPLICAS) (action scale-api)."
    )
    assert flagged.message == "Set FLAG=on in ConfigMap cfg (action flag)."
    assert actuator.undo(flagged.change, now=at(1), dry_run=False).message == (
        "Rolled back action flag: ConfigMap cfg FLAG restored to the values before the incident."
    )


def test_an_in_memory_rollback_restores_the_targets_it_knows_exactly() -> None:
    targets = MemoryTargets(configmaps={"cfg": {"FLAG": "off", "KEEP": "1"}}, replicas={"api": 3})
    before = targets.snapshot()
    sim = Simulation(tiny_spec(), cluster=targets)
    start = open_incident(sim, LOAD)
    sim.run(start=start + 15, until=start + 200, values=LOAD)
    assert targets.snapshot() != before
    sim.run(start=start + 215, until=start + 3600, values=CALM, follow_wake=True, stop=Simulation.settled)

    assert targets.snapshot() == before
    assert sim.status.state == State.IDLE and sim.status.applied == []
