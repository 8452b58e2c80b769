"""The caller's half of the engine contract, once: carry out a decision through an actuator.

`decide` says what to apply and undo; somebody must do it and record what really happened, or the
engine's status drifts from the targets. That somebody is `execute`, for the operator's poll loop,
for `stampede simulate` (with a perfect in-memory actuator) and for the tests (with a failing double),
so all three undo, apply, re-apply drift, adopt and record in exactly the same way.

An `Actuator` is bound to one policy and blocking; the operator runs a whole `execute` in a worker
thread. Every call returns an `Outcome` built by `engine.outcomes`, the one place messages come from;
`execute` collects them for the caller to post as events and count in metrics.
"""

from __future__ import annotations

from collections.abc import Callable
from dataclasses import dataclass
from datetime import datetime
from typing import Protocol

from .api.kinds import ChangeKind
from .api.spec import Action, Mode, PolicySpec
from .api.status import AppliedChange, PolicyStatus, State, WorkloadStatusRef
from .engine import adoption, drift, outcomes
from .engine.decide import Decision, awaited_workloads, record_applied, record_undone
from .engine.outcomes import Outcome, Step


class Actuator(Protocol):
    """Hands for one policy: each method makes (or, in DryRun, computes) one change and says how it went."""

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        """Make the change of one action; `outcome.change` is what to record."""

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool) -> Outcome:
        """Restore what the change replaced, where it still holds the value it set; `ok` means stop holding it."""

    def reverted(self, change: AppliedChange) -> list[str] | None:
        """Fields of the change someone else reverted; None when the target cannot be read."""

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        """Put a reverted change back; `outcome.change` is its record with the revert counted."""

    def adopt(self, action: Action, *, now: datetime) -> Outcome | None:
        """A change of this action found on its target but never recorded; None when there is none."""

    def restart(self, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        """One rollout restart of a workload; None when done, else a clause saying why not."""

    def rollout_complete(self, workload: WorkloadStatusRef) -> bool | None:
        """Whether the workload's rollout is complete; None when it cannot be read."""


Hold = Callable[[], Outcome | None]
"""Takes the deletion guard before the first real change; returns an outcome only when that failed."""


@dataclass(frozen=True)
class Done:
    """One actuator call (or the guard) and its outcome, with what it was about."""

    step: Step
    action: str
    kind: ChangeKind | None
    outcome: Outcome


@dataclass(frozen=True)
class Execution:
    """The status with every outcome recorded, and the outcomes to report, in the order they happened."""

    status: PolicyStatus
    done: tuple[Done, ...] = ()
    held: bool = False
    """The deletion guard was taken in this call."""


def execute(
    decision: Decision, actuator: Actuator, *, spec: PolicySpec, now: datetime, hold: Hold | None = None
) -> Execution:
    """Undo, then apply, then correct drift, recording each outcome in the decision's status."""
    status = decision.status
    dry_run = spec.mode == Mode.DRY_RUN
    done: list[Done] = []
    restarts = _Restarts()
    for change in decision.undo:
        outcome = actuator.undo(change, now=now, dry_run=dry_run or change in status.planned)
        done.append(Done(Step.UNDO, change.action, change.kind, outcome))
        if outcome.ok:
            status = record_undone(status, change)
            restarts.ask(outcome.restarts, undone=change.action)
    held = False
    acting = [a for a in decision.apply if not a.dry_run]
    if acting and not dry_run and hold is not None:
        problem = hold()
        if problem is not None:
            done.append(Done(Step.HOLD, "", None, problem))
        held = problem is None
    for action in decision.apply:
        shadow = dry_run or action.dry_run
        if not shadow and hold is not None and not held:
            continue
        outcome = actuator.apply(action, incident=decision.incident_id or "", now=now, dry_run=shadow)
        step = Step.PLAN if action.dry_run and not dry_run else Step.APPLY
        done.append(Done(step, action.name, action.kind, outcome))
        if outcome.ok and outcome.change is not None:
            status = record_applied(status, outcome.change, dry_run=shadow)
            restarts.ask(outcome.restarts, applied=action.name)
    status = restarts.perform(status, actuator, now=now, done=done)
    if drift.corrects_drift(spec, status):
        status = _correct_drift(status, actuator, now=now, done=done)
    if not dry_run and status.state == State.IDLE:
        status = status.model_copy(update={"planned": []})  # a DryRun plan ends with the policy's DryRun
    return Execution(status, tuple(done), held)


class _Restarts:
    """The rollout restarts a poll's changes ask for, gathered so each workload restarts once.

    Every restarted pod comes back with a cold cache and opens new connections: restarting the same
    workload for each of several actions would feed the very stampede the policy fights.
    """

    def __init__(self) -> None:
        self.asked: dict[tuple[str, str], tuple[WorkloadStatusRef, list[str], list[str]]] = {}

    def ask(self, workloads: tuple[WorkloadStatusRef, ...], *, applied: str = "", undone: str = "") -> None:
        for workload in workloads:
            _, apply_names, undo_names = self.asked.setdefault((workload.kind, workload.name), (workload, [], []))
            if applied:
                apply_names.append(applied)
            if undone:
                undo_names.append(undone)

    def perform(self, status: PolicyStatus, actuator: Actuator, *, now: datetime, done: list[Done]) -> PolicyStatus:
        """Restart each workload once; an apply whose restart failed is dropped, so the next poll retries it."""
        for workload, applied, undone in self.asked.values():
            problem = actuator.restart(workload, now=now)
            if problem is None:
                outcome = outcomes.restarted(workload, applied=applied, undone=undone)
            else:
                outcome = outcomes.restart_failed_for(workload, applied=applied, undone=undone, what=problem)
                status = status.model_copy(update={"applied": [c for c in status.applied if c.action not in applied]})
            done.append(Done(Step.RESTART, ", ".join(applied + undone), None, outcome))
        return status


def read_rollouts(status: PolicyStatus, actuator: Actuator) -> dict[str, bool | None]:
    """The rollout state of the workloads rollback waits for, keyed `Kind/name` (the engine's input)."""
    return {f"{w.kind}/{w.name}": actuator.rollout_complete(w) for w in awaited_workloads(status)}


def _correct_drift(status: PolicyStatus, actuator: Actuator, *, now: datetime, done: list[Done]) -> PolicyStatus:
    applied: list[AppliedChange] = []
    for change in status.applied:
        reverted = actuator.reverted(change) if drift.watched(change) else []
        if not reverted:
            applied.append(change)
            continue
        if drift.gives_up(change):
            counted = drift.reverted_once_more(change)
            done.append(Done(Step.GIVE_UP, change.action, change.kind, outcomes.gave_up(counted, fields=reverted)))
            applied.append(counted)
            continue
        outcome = actuator.reapply(change, now=now)
        done.append(Done(Step.REAPPLY, change.action, change.kind, outcome))
        applied.append(outcome.change if outcome.ok and outcome.change else change)
    return status.model_copy(update={"applied": applied})


def adopt(spec: PolicySpec, status: PolicyStatus, actuator: Actuator, *, now: datetime) -> Execution:
    """Record the changes targets hold but status does not know (the operator died between write and record)."""
    found: list[AppliedChange] = []
    done: list[Done] = []
    for action in adoption.adoptable(spec, status):
        outcome = actuator.adopt(action, now=now)
        if outcome is None or outcome.change is None:
            continue
        found.append(outcome.change)
        done.append(Done(Step.ADOPT, action.name, outcome.change.kind, outcome))
    return Execution(adoption.adopt(status, found, now=now), tuple(done))


def roll_back_all(status: PolicyStatus, actuator: Actuator, *, now: datetime) -> Execution:
    """Undo every applied change at once, newest first (the policy is being deleted).

    The changes that could not be undone stay in `status.applied` for the next try.
    """
    done: list[Done] = []
    restarts = _Restarts()
    for change in sorted(status.applied, key=lambda c: c.applied_at, reverse=True):
        outcome = actuator.undo(change, now=now, dry_run=False)
        done.append(Done(Step.UNDO, change.action, change.kind, outcome))
        if outcome.ok:
            status = record_undone(status, change)
            restarts.ask(outcome.restarts, undone=change.action)
    status = restarts.perform(status, actuator, now=now, done=done)
    remaining = sorted(status.applied, key=lambda c: c.applied_at)
    return Execution(status.model_copy(update={"applied": remaining}), tuple(done))


__all__ = ["Actuator", "Done", "Execution", "Hold", "adopt", "execute", "read_rollouts", "roll_back_all"]
