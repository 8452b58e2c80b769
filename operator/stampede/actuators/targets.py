"""The Kubernetes actuators: one module per target kind behind one protocol, and the door to them.

Each target kind (`configmaps`, `scaling` with its HPA path, `jobs`) says how to apply, find a
journalled change on its target (`landed`), check, re-apply and undo its changes against live objects;
adding a kind is one new module and one line in `Actuators.__init__`. What every kind shares lives
here once: turning API errors into outcomes, retrying conflicts, the dry-run and not-reversible
answers, and binding to one policy (`bind`), which gives the `executing.Actuator` the poll loop hands
to `execute`.
"""

from __future__ import annotations

from collections.abc import Iterable
from dataclasses import dataclass
from datetime import datetime
from typing import ClassVar, Protocol

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange, WorkloadStatusRef
from ..engine import drift, outcomes
from ..engine.outcomes import Outcome
from .configmaps import RESTARTED_AT, ConfigMaps, failure_text
from .jobs import DEFAULT_JOB_TTL, INCIDENT_LABEL, POLICY_LABEL, Jobs, job_name
from .journals import Journals
from .kube import InvalidName, Kube, KubeError, path, retry_conflicts
from .ownership import ALLOWED_POLICIES, APPLIED_BY, Intend, Ownership, not_opted_in, opted_in
from .scaling import Scaling
from .watching import Reader

_NAMED_BY_SPEC = frozenset({ChangeKind.CONFIG_MAP, ChangeKind.DEPLOYMENT, ChangeKind.STATEFUL_SET})
"""Change kinds whose object the spec names (an HPA is found through its workload; a Job is created)."""


@dataclass(frozen=True)
class Target:
    """Where an action's change lands: the policy's namespace, under the policy's name."""

    namespace: str
    policy: str


class TargetKind(Protocol):
    """One kind of target. Errors are raised as `KubeError`; `Actuators` turns them into outcomes."""

    reversible: ClassVar[bool]
    """Whether an undo restores the object (False for Jobs: they are left to finish)."""
    kinds: ClassVar[frozenset[ChangeKind]]
    """The kinds of the changes this module records (and so undoes)."""

    def handles(self, action: Action) -> bool: ...

    def apply(
        self,
        namespace: str,
        owner: Ownership,
        action: Action,
        *,
        incident: str,
        now: datetime,
        dry_run: bool,
        intend: Intend | None = None,
    ) -> Outcome:
        """Make the change; `intend` (when given) records it in the journal before any target write."""

    def landed(self, namespace: str, owner: Ownership, change: AppliedChange) -> bool:
        """Whether a journalled change reached its target (the operator stopped before recording how it went)."""

    def reverted(self, namespace: str, change: AppliedChange) -> list[str]: ...

    def reapply(self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime) -> Outcome | None:
        """None when the change is back in full; an outcome saying what went wrong otherwise."""

    def undo(
        self, namespace: str, owner: Ownership, change: AppliedChange, *, now: datetime, last: bool = True
    ) -> Outcome:
        """Restore the change; `last` when no other change of the policy holds the object (its mark goes)."""


class Actuators:
    """The operator's hands: every Kubernetes change to a target goes through here.

    Every read-modify-write runs under `retry_conflicts`: a 409 from a controller's write between the
    read and the conditional write is retried at once with a fresh read, never reported.
    """

    def __init__(
        self,
        kube: Kube,
        *,
        max_replicas: int,
        journal_namespace: str,
        reader: Reader | None = None,
        require_opt_in: bool = False,
    ) -> None:
        """`reader`: where drift checks read targets (the operator's watch cache); a GET each when None.
        `journal_namespace`: where the originals of ConfigMap changes are kept (the operator's own namespace).
        `require_opt_in`: the stricter mode (`STAMPEDE_REQUIRE_TARGET_OPT_IN`), see `_refusal`."""
        self.kube = kube
        self.max_replicas = max_replicas
        self.require_opt_in = require_opt_in
        self.journals = Journals(kube, namespace=journal_namespace)
        self.configmaps = ConfigMaps(kube, journals=self.journals, reader=reader)
        self.scaling = Scaling(kube, max_replicas=max_replicas, reader=reader)
        self.kinds: tuple[TargetKind, ...] = (self.configmaps, self.scaling, Jobs(kube))

    def bind(self, target: Target, *, intend: Intend | None = None) -> PolicyActuator:
        """The `executing.Actuator` of one policy; `intend` journals each change before its target write."""
        return PolicyActuator(self, target, intend)

    def _for_action(self, action: Action) -> TargetKind:
        return next(kind for kind in self.kinds if kind.handles(action))

    def _for_change(self, change: AppliedChange) -> TargetKind:
        return next(kind for kind in self.kinds if change.kind in kind.kinds)

    def _refusal(self, target: Target, objects: list[tuple[str, str]]) -> tuple[str, str, str] | None:
        """In the stricter mode, the first object (kind, name) that has not opted in to the policy, and the clause.

        The one place the opt-in is checked: before an apply (DryRun too, which reads values) and a re-apply,
        on every object the spec names for that write (an action's ConfigMap and its restarts, a scale's
        workload, which also stands for the HPA that drives it, a job's CronJob). The restarts that follow
        belong to a checked apply, or to an undo. Undo is never checked: it only takes back the operator's
        own change, which needs the applied-by mark anyway.
        """
        if not self.require_opt_in:
            return None
        for kind, name in objects:
            obj = self.kube.get(path(kind, target.namespace, name))
            if not opted_in(obj, policy=target.policy):
                return kind, name, not_opted_in(target.policy)
        return None

    @staticmethod
    def _named_by(action: Action) -> list[tuple[str, str]]:
        if action.config_map is not None:
            restarts = [(ref.kind.value, ref.name) for ref in action.config_map.restart]
            return [("ConfigMap", action.config_map.name), *restarts]
        if action.scale is not None:
            return [(action.scale.kind.value, action.scale.name)]
        assert action.job is not None
        return [("CronJob", action.job.from_cron_job)]

    def apply(
        self,
        target: Target,
        action: Action,
        *,
        incident: str,
        now: datetime,
        dry_run: bool,
        intend: Intend | None = None,
    ) -> Outcome:
        """Make (or, in DryRun, compute) the change of one action."""
        owner = Ownership(target.policy)
        try:
            refused = self._refusal(target, self._named_by(action))
            if refused is not None:
                kind_name, name, why = refused
                return outcomes.failed(action=action.name, kind=kind_name, where=f"{target.namespace}/{name}", what=why)
            kind = self._for_action(action)
            return retry_conflicts(
                lambda: kind.apply(
                    target.namespace, owner, action, incident=incident, now=now, dry_run=dry_run, intend=intend
                )
            )
        except KubeError as error:
            where = f"{target.namespace}/{action.target}"
            return outcomes.failed(action=action.name, kind=action.kind, where=where, what=failure_text(error))

    def landed(self, target: Target, change: AppliedChange) -> bool | None:
        """Whether a journalled change reached its target; None when that cannot be told now."""
        kind = self._for_change(change)
        if not kind.reversible or not change.applied:
            return False
        try:
            return kind.landed(target.namespace, Ownership(target.policy), change)
        except KubeError as error:
            return False if error.not_found or isinstance(error, InvalidName) else None

    def reverted(self, target: Target, change: AppliedChange) -> list[str] | None:
        """Fields of a change someone else reverted; None when the target cannot be read."""
        kind = self._for_change(change)
        if not kind.reversible or not change.applied:
            return []
        try:
            return kind.reverted(target.namespace, change)
        except KubeError:
            return None

    def reapply(self, target: Target, change: AppliedChange, *, now: datetime) -> Outcome:
        """Put a reverted change back, keeping its recorded originals; conditional, never scaling down."""
        owner = Ownership(target.policy)
        # An HPA's change stands on its workload's opt-in, which the apply checked; the rest is checked again,
        # so an owner who withdraws the annotation mid-incident stops further writes (not the undo).
        named = [(change.kind.value, change.name)] if change.kind in _NAMED_BY_SPEC else []
        try:
            refused = self._refusal(target, [*named, *((ref.kind.value, ref.name) for ref in change.restart)])
            if refused is not None:
                kind_name, name, why = refused
                return outcomes.reapply_failed(change, problem=f"{kind_name} {name} {why}")
            kind = self._for_change(change)
            problem = retry_conflicts(lambda: kind.reapply(target.namespace, owner, change, now=now))
        except KubeError as error:
            return outcomes.reapply_failed(change, problem=error.message)
        return problem or outcomes.reapplied(drift.reverted_once_more(change))

    def undo(
        self, target: Target, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True
    ) -> Outcome:
        """Restore what this policy changed, only where it still holds the value it set and its mark."""
        kind = self._for_change(change)
        owner = Ownership(target.policy)
        if not kind.reversible:
            return kind.undo(target.namespace, owner, change, now=now)
        if dry_run:
            return outcomes.would_roll_back(change)
        try:
            return retry_conflicts(lambda: kind.undo(target.namespace, owner, change, now=now, last=last))
        except KubeError as error:
            if error.not_found:
                return outcomes.target_gone(change)
            if isinstance(error, InvalidName):
                return outcomes.not_rolled_back(change, why=error.message)
            return outcomes.rollback_failed(change, status=error.status, problem=error.message)

    def forget_journals(self, target: Target, actions: Iterable[str]) -> list[str]:
        """Delete the journal Secrets of these actions (the policy is going, nothing of theirs is held).

        A Secret whose status entry never was written (the operator stopped between the two) is found only
        this way: it is read by exact name, never listed. Returns a clause per Secret that could not go.
        """
        problems = []
        for action in actions:
            try:
                self.journals.forget(namespace=target.namespace, policy=target.policy, action=action)
            except KubeError as error:
                where = self.journals.where(namespace=target.namespace, policy=target.policy, action=action)
                problems.append(f"journal Secret {where} could not be deleted ({failure_text(error)})")
        return problems

    def restart(self, target: Target, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        """One rollout restart; None when done, else the clause saying why not."""
        try:
            self.configmaps.restart(target.namespace, workload, now=now)
        except KubeError as error:
            return failure_text(error)
        return None

    def rollout_complete(self, target: Target, workload: WorkloadStatusRef) -> bool | None:
        """Whether the workload's rollout is complete; None when it cannot be read."""
        try:
            return self.scaling.rollout_complete(target.namespace, workload)
        except KubeError:
            return None


@dataclass(frozen=True)
class PolicyActuator:
    """`Actuators` bound to one policy: the `executing.Actuator` of the poll loop."""

    actuators: Actuators
    target: Target
    intend: Intend | None = None

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        return self.actuators.apply(
            self.target, action, incident=incident, now=now, dry_run=dry_run, intend=self.intend
        )

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True) -> Outcome:
        return self.actuators.undo(self.target, change, now=now, dry_run=dry_run, last=last)

    def reverted(self, change: AppliedChange) -> list[str] | None:
        return self.actuators.reverted(self.target, change)

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        return self.actuators.reapply(self.target, change, now=now)

    def landed(self, change: AppliedChange) -> bool | None:
        return self.actuators.landed(self.target, change)

    def restart(self, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        return self.actuators.restart(self.target, workload, now=now)

    def rollout_complete(self, workload: WorkloadStatusRef) -> bool | None:
        return self.actuators.rollout_complete(self.target, workload)


__all__ = [
    "ALLOWED_POLICIES",
    "APPLIED_BY",
    "DEFAULT_JOB_TTL",
    "INCIDENT_LABEL",
    "POLICY_LABEL",
    "RESTARTED_AT",
    "Actuators",
    "Intend",
    "Outcome",
    "PolicyActuator",
    "Target",
    "TargetKind",
    "job_name",
]
