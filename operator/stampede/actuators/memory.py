"""A perfect actuator over targets held in memory: every call succeeds, exactly as the arithmetic says.

`stampede simulate` replays history through the operator's own `execute` with this actuator, so a
replay records, rolls back and words each change as the operator would. Without targets (`targets`
None, as in a replay, where no cluster is read) it knows nothing about current values: it invents no
originals and says so ("restored to the values before the incident"). With targets, as the tests use
it, ConfigMap data and replica counts change and roll back through the same pure functions the
Kubernetes actuators use, and a ConfigMap's originals are kept beside the targets (as the operator keeps
them in journal Secrets) while the change's record holds their digests.
"""

from __future__ import annotations

from dataclasses import dataclass, field, replace
from datetime import datetime

from ..api.kinds import ChangeKind
from ..api.spec import Action
from ..api.status import AppliedChange, WorkloadStatusRef
from ..engine import drift, outcomes
from ..engine.changes import (
    apply_merge_patch,
    configmap_rollback,
    job_name,
    plan_configmap,
    plan_scale,
    scale_rollback,
)
from ..engine.digests import digested, matches
from ..engine.outcomes import Outcome

REPLICAS = "replicas"


@dataclass
class MemoryTargets:
    """The targets as flat data: ConfigMap data by name, replicas by workload name, created Jobs."""

    configmaps: dict[str, dict[str, str]] = field(default_factory=dict)
    replicas: dict[str, int] = field(default_factory=dict)
    """A workload missing here has the API server's default of 1 replica."""
    jobs: list[tuple[str, str]] = field(default_factory=list)
    """(action, incident) of every Job created."""
    restarts: list[tuple[str, str]] = field(default_factory=list)
    """(kind, name) of every rollout restart, in order."""
    rollouts_pending: set[str] = field(default_factory=set)
    """Workload names whose rollout is not complete (every other rollout is)."""
    journals: dict[tuple[str, str], dict[str, str]] = field(default_factory=dict)
    """The originals of each ConfigMap change by (policy, action): the operator's journal Secrets."""

    def snapshot(self) -> tuple[dict[str, dict[str, str]], dict[str, int]]:
        """A copy of the ConfigMaps and replica counts, to compare before and after."""
        return {name: dict(data) for name, data in self.configmaps.items()}, dict(self.replicas)


@dataclass
class MemoryActuator:
    """Satisfies `executing.Actuator` for one policy."""

    policy: str
    max_replicas: int
    targets: MemoryTargets | None = None
    """None: nothing is known about the targets (a replay); changes are recorded, not computed against values."""

    def apply(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        if action.config_map is not None:
            return self._apply_configmap(action, incident=incident, now=now, dry_run=dry_run)
        if action.scale is not None:
            return self._apply_scale(action, incident=incident, now=now, dry_run=dry_run)
        assert action.job is not None
        name = job_name(action.job.from_cron_job, policy=self.policy, incident=incident)
        change = _change(action, kind=ChangeKind.JOB, name=name, incident=incident, now=now, applied={"job": name})
        existed = self.targets is not None and (action.name, incident) in self.targets.jobs
        if self.targets is not None and not dry_run and not existed:
            self.targets.jobs.append((action.name, incident))
        return outcomes.job_created(change, cronjob=action.job.from_cron_job, existed=existed, dry_run=dry_run)

    def _apply_configmap(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        spec = action.config_map
        assert spec is not None
        restart = [WorkloadStatusRef(kind=w.kind.value, name=w.name) for w in spec.restart]
        if self.targets is None:
            original: dict[str, str | None] = {}
            applied = dict(spec.data)
        else:
            current = self.targets.configmaps.get(spec.name, {})
            original, applied = plan_configmap(current, spec.data)
            if not dry_run and applied:
                present = {key: value for key, value in original.items() if value is not None}
                self.targets.journals[(self.policy, action.name)] = present
                self.targets.configmaps[spec.name] = apply_merge_patch(current, applied)
        change = _change(
            action,
            kind=ChangeKind.CONFIG_MAP,
            name=spec.name,
            incident=incident,
            now=now,
            original=digested(original),
            applied=applied,
            restart=restart,
        )
        restarts = restart if applied and not dry_run else []
        return outcomes.configmap_set(change, configmap=spec.name, dry_run=dry_run, restarts=restarts)

    def _apply_scale(self, action: Action, *, incident: str, now: datetime, dry_run: bool) -> Outcome:
        spec = action.scale
        assert spec is not None
        kind = ChangeKind(spec.kind.value)
        cap = self.max_replicas
        if self.targets is None:
            current = None
            wanted = min(spec.replicas, cap)
            original: dict[str, str | None] = {}
            applied = {REPLICAS: str(wanted)}
        else:
            current = self.targets.replicas.get(spec.name, 1)
            original, applied = plan_scale(field=REPLICAS, current=current, wanted=spec.replicas, cap=cap)
        change = _change(
            action, kind=kind, name=spec.name, incident=incident, now=now, original=original, applied=applied
        )
        if not applied:
            assert current is not None
            return outcomes.scale_unchanged(
                change, field=REPLICAS, current=current, wanted=spec.replicas, dry_run=dry_run
            )
        wanted = int(applied[REPLICAS])
        if self.targets is not None and not dry_run:
            self.targets.replicas[spec.name] = wanted
        return outcomes.scale_raised(
            change, field=REPLICAS, current=current, wanted=wanted, capped=spec.replicas > cap, dry_run=dry_run
        )

    def undo(self, change: AppliedChange, *, now: datetime, dry_run: bool, last: bool = True) -> Outcome:
        if not change.reversible:
            return outcomes.job_left_to_finish(change)
        if dry_run:
            return outcomes.would_roll_back(change, known=self.targets is not None)
        if self.targets is None:
            return replace(outcomes.rolled_back(change, restored=None), restarts=tuple(change.restart))
        if change.kind == ChangeKind.CONFIG_MAP:
            current = self.targets.configmaps.get(change.name, {})
            kept = self.targets.journals.get((self.policy, change.action), {})
            originals = {key: kept.get(key) for key in change.original}
            if any(not matches(recorded, originals[key]) for key, recorded in change.original.items()):
                return outcomes.originals_unavailable(change, why="the journal does not hold the originals recorded")
            patch, skipped = configmap_rollback(current, originals, change.applied)
            self.targets.configmaps[change.name] = apply_merge_patch(current, patch)
            self.targets.journals.pop((self.policy, change.action), None)
            return outcomes.undo_outcome(
                change, restored=list(patch), skipped=skipped, restarts=change.restart if patch else []
            )
        counts: dict[str, int | None] = {REPLICAS: self.targets.replicas.get(change.name, 1)}
        counted, skipped = scale_rollback(counts, change.original, change.applied)
        if REPLICAS in counted:
            restored = counted[REPLICAS]
            self.targets.replicas[change.name] = restored if restored is not None else 1
        return outcomes.undo_outcome(change, restored=list(counted), skipped=skipped)

    def reverted(self, change: AppliedChange) -> list[str] | None:
        if self.targets is None or not change.reversible:
            return []
        if change.kind == ChangeKind.CONFIG_MAP:
            data = self.targets.configmaps.get(change.name, {})
            return [k for k, v in change.applied.items() if data.get(k) != v]
        replicas = self.targets.replicas.get(change.name, 1)
        return [f for f, v in change.applied.items() if replicas < int(v)]

    def reapply(self, change: AppliedChange, *, now: datetime) -> Outcome:
        if self.targets is not None and change.kind == ChangeKind.CONFIG_MAP:
            current = self.targets.configmaps.get(change.name, {})
            self.targets.configmaps[change.name] = apply_merge_patch(current, change.applied)
        elif self.targets is not None and REPLICAS in change.applied:
            wanted = int(change.applied[REPLICAS])
            self.targets.replicas[change.name] = max(self.targets.replicas.get(change.name, 1), wanted)
        return outcomes.reapplied(drift.reverted_once_more(change))

    def landed(self, change: AppliedChange) -> bool | None:
        """Memory never loses a record between a write and its status: nothing journalled is left to find."""
        return False

    def restart(self, workload: WorkloadStatusRef, *, now: datetime) -> str | None:
        if self.targets is not None:
            self.targets.restarts.append((workload.kind, workload.name))
        return None

    def rollout_complete(self, workload: WorkloadStatusRef) -> bool | None:
        return self.targets is None or workload.name not in self.targets.rollouts_pending


def _change(
    action: Action,
    *,
    kind: ChangeKind,
    name: str,
    incident: str,
    now: datetime,
    original: dict[str, str | None] | None = None,
    applied: dict[str, str],
    restart: list[WorkloadStatusRef] | None = None,
) -> AppliedChange:
    return AppliedChange(
        action=action.name,
        kind=kind,
        name=name,
        incident=incident,
        applied_at=now,
        original=original or {},
        applied=applied,
        restart=restart or [],
    )


__all__ = ["MemoryActuator", "MemoryTargets"]
