"""The caller's half of the engine contract, once: carry out a decision through an actuator.

`decide` says what to apply and undo; somebody must do it and record what really happened, or the
engine's status drifts from the targets. That somebody is `execute`, for the operator's poll loop,
for `stampede simulate` (with a perfect in-memory actuator) and for the tests (with a failing double),
so all three undo, apply, re-apply drift, reconcile the journal and record in exactly the same way.

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
from .engine import adoption, drift, outcomes, trust
from .engine.decide import Decision, awaited_workloads, record_applied, record_undone
from .engine.outcomes import Outcome, Step


class Actuator(Protocol):
    """Hands for one policy: each method makes (or, in DryRun, computes) one change and says how it went."""

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        """Make the change of one action; `outcome.change` is what to record."""

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True) -> Outcome:
        """Restore what the change replaced, where it still holds the value it set; `ok` means stop holding it.

        `last`: no other change of the policy is held on the same object (the object's mark goes with it).
        """

    def reverted(self, change: AppliedChange) -> list[str] | None:
        """Fields of the change someone else reverted; None when the target cannot be read."""

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        """Put a reverted change back; `outcome.change` is its record with the revert counted."""

    def landed(self, change: AppliedChange) -> bool | None:
        """Whether a journalled change reached its target; None when that cannot be told now."""

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
        outcome = _undo(change, status, actuator, spec=spec, now=now, dry_run=dry_run or change in status.planned)
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
        status = _correct_drift(status, actuator, spec=spec, now=now, done=done)
    if not dry_run and status.state == State.IDLE:
        status = status.model_copy(update={"planned": []})  # a DryRun plan ends with the policy's DryRun
    return Execution(status, tuple(done), held)


def _undo(
    change: AppliedChange,
    status: PolicyStatus,
    actuator: Actuator,
    *,
    spec: PolicySpec | None,
    now: datetime,
    dry_run: bool,
) -> Outcome:
    """Undo one change on the target its spec action names (status alone is never trusted with a write)."""
    trusted = trust.from_spec(spec, change) if spec is not None else change
    if isinstance(trusted, str):
        return outcomes.not_rolled_back(change, why=trusted)
    others = [c for c in status.applied if c is not change and (c.kind, c.name) == (trusted.kind, trusted.name)]
    return actuator.undo(trusted, now=now, dry_run=dry_run, last=not others)


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

    def perform(
        self, status: PolicyStatus, actuator: Actuator, *, now: datetime, done: list[Done], drop: bool = True
    ) -> PolicyStatus:
        """Restart each workload once; an apply whose restart failed is dropped, so the next poll retries it.

        Dropped from `applied`, its journal entry stays (see `handlers/runner.py`), and the next tick's
        `reconcile` holds it again with its true originals and restarts its workloads once more.
        """
        for workload, applied, undone in self.asked.values():
            problem = actuator.restart(workload, now=now)
            if problem is None:
                outcome = outcomes.restarted(workload, applied=applied, undone=undone)
            else:
                outcome = outcomes.restart_failed_for(workload, applied=applied, undone=undone, what=problem)
                if drop:
                    kept = [c for c in status.applied if c.action not in applied]
                    status = status.model_copy(update={"applied": kept})
            done.append(Done(Step.RESTART, ", ".join(applied + undone), None, outcome))
        return status


def read_rollouts(status: PolicyStatus, actuator: Actuator) -> dict[str, bool | None]:
    """The rollout state of the workloads rollback waits for, keyed `Kind/name` (the engine's input)."""
    return {f"{w.kind}/{w.name}": actuator.rollout_complete(w) for w in awaited_workloads(status)}


def _correct_drift(
    status: PolicyStatus, actuator: Actuator, *, spec: PolicySpec, now: datetime, done: list[Done]
) -> PolicyStatus:
    applied: list[AppliedChange] = []
    for change in status.applied:
        trusted = trust.from_spec(spec, change)
        if isinstance(trusted, str):  # not re-applied, and undone (refused) at rollback
            applied.append(change)
            continue
        reverted = actuator.reverted(trusted) if drift.watched(trusted) else []
        if not reverted:
            applied.append(change)
            continue
        if drift.gives_up(change):
            counted = drift.reverted_once_more(change)
            done.append(Done(Step.GIVE_UP, change.action, change.kind, outcomes.gave_up(counted, fields=reverted)))
            applied.append(counted)
            continue
        outcome = actuator.reapply(trusted, now=now)
        done.append(Done(Step.REAPPLY, change.action, change.kind, outcome))
        applied.append(drift.reverted_once_more(change) if outcome.ok else change)
    return status.model_copy(update={"applied": applied})


def reconcile(spec: PolicySpec, status: PolicyStatus, actuator: Actuator, *, now: datetime) -> Execution:
    """Settle the journal after a restart: hold each journalled change that reached its target, drop the rest.

    Only the targets named in the journal are read, so a restart costs nothing for policies that were
    not in the middle of a write. A target that cannot be read now keeps its entry for the next tick.
    During an incident, the workloads of a change held this way are restarted (coalesced): whether they
    were before the operator stopped, or the restart failed, cannot be told, and a ConfigMap value the
    workloads never read mitigates nothing. A restart failing again is reported; the change stays held,
    since dropping it would have it re-planned against the values it set.
    """
    found: list[AppliedChange] = []
    kept: list[AppliedChange] = []
    done: list[Done] = []
    restarts = _Restarts()
    known = {c.action for c in status.applied}
    for entry in status.journal:
        trusted = trust.from_spec(spec, entry)
        if isinstance(trusted, str) or entry.action in known:
            continue
        landed = actuator.landed(trusted)
        if landed is None:
            kept.append(entry)
        elif landed:
            found.append(trusted)
            done.append(Done(Step.ADOPT, entry.action, entry.kind, outcomes.adopted(trusted)))
            if status.state == State.INCIDENT:
                restarts.ask(tuple(trusted.restart), applied=entry.action)
    status = adoption.adopt(status.model_copy(update={"journal": kept}), found, now=now)
    status = restarts.perform(status, actuator, now=now, done=done, drop=False)
    return Execution(status, tuple(done))


def roll_back_all(
    status: PolicyStatus, actuator: Actuator, *, now: datetime, spec: PolicySpec | None = None
) -> Execution:
    """Undo every applied change at once, newest first (the policy is being deleted).

    The changes that could not be undone stay in `status.applied` for the next try. Without a spec (one
    that no longer parses) the records' own names are used: they carry the spec's patterns, and the
    targets must still carry the policy's mark.
    """
    done: list[Done] = []
    restarts = _Restarts()
    for change in sorted(status.applied, key=lambda c: c.applied_at, reverse=True):
        outcome = _undo(change, status, actuator, spec=spec, now=now, dry_run=False)
        done.append(Done(Step.UNDO, change.action, change.kind, outcome))
        if outcome.ok:
            status = record_undone(status, change)
            restarts.ask(outcome.restarts, undone=change.action)
    status = restarts.perform(status, actuator, now=now, done=done)
    remaining = sorted(status.applied, key=lambda c: c.applied_at)
    return Execution(status.model_copy(update={"applied": remaining}), tuple(done))


__all__ = ["Actuator", "Done", "Execution", "Hold", "execute", "read_rollouts", "reconcile", "roll_back_all"]
