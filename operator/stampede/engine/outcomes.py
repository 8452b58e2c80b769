"""What one actuator call did, and every sentence the operator says about a change, in one place.

The Kubernetes actuators, the perfect in-memory actuator of `stampede simulate` and the tests' doubles
all build their outcomes with these functions, so a replay prints the operator's own sentences and a
wording fix lands everywhere at once. Pure: the callers pass in what they found on the target.
"""

from __future__ import annotations

from collections.abc import Iterable, Mapping, Sequence
from dataclasses import dataclass, replace
from enum import StrEnum

from ..api.reasons import Reason
from ..api.status import AppliedChange, WorkloadStatusRef
from .digests import shown

CAPPED = " (capped by STAMPEDE_MAX_REPLICAS)"


class Step(StrEnum):
    """Which part of the caller's contract an outcome belongs to (also the `result` of the actions metric)."""

    APPLY = "applied"
    UNDO = "rolled_back"
    REAPPLY = "reapplied"
    ADOPT = "adopted"
    GIVE_UP = "gave_up"
    """Drift: reverted too often; re-applying stopped (a standing conflict)."""
    HOLD = "held"
    """The deletion guard (finalizer) taken before the first change."""
    PLAN = "planned"
    """A shadowed action (`actions[].dryRun`): computed and recorded in status.planned, never made."""
    RESTART = "restarted"
    """One rollout restart of a workload for every change of the poll that asked for it."""


@dataclass(frozen=True)
class Outcome:
    """What happened to one change; `reason` is the event reason to post."""

    ok: bool
    reason: Reason
    message: str
    change: AppliedChange | None = None
    skipped: tuple[str, ...] = ()
    owner: str | None = None
    warnings: tuple[str, ...] = ()
    """Side effects that failed although the change itself succeeded (reported as ActionFailed)."""
    warning: bool = False
    """Post the event as a Warning even though the call succeeded."""
    restarts: tuple[WorkloadStatusRef, ...] = ()
    """Workloads this change asks to be rollout-restarted; the caller restarts each once per poll."""


def values_text(values: Mapping[str, str | None]) -> str:
    """`k=v, k2=(absent)`: originals as a rollback restores them (a ConfigMap's by digest, `k=sha256:0123…`).

    A ConfigMap's originals were read with the operator's rights, not the author's: events name them by
    the short digest of `engine/digests.py`, never by value.
    """
    return ", ".join(f"{k}={'(absent)' if v is None else shown(v)}" for k, v in values.items()) or "nothing"


def keys_text(values: Mapping[str, str]) -> str:
    return ", ".join(f"{k}={v}" for k, v in values.items())


def _restarted(restarted: Sequence[str]) -> str:
    return f"; restarted {', '.join(restarted)}" if restarted else ""


# -- failures common to every kind -----------------------------------------------------------------


def failed(*, action: str, kind: str, where: str, what: str) -> Outcome:
    """An action whose target could not be read or written (`what`: "not found" or the API's answer)."""
    return Outcome(False, Reason.ACTION_FAILED, f"Action {action}: {kind} {where} {what}.")


def conflict(*, action: str, kind: str, name: str, owner: str) -> Outcome:
    return Outcome(
        False,
        Reason.CONFLICT,
        f"Action {action}: {kind} {name} is held by policy {owner}; not applied.",
        owner=owner,
    )


def restart_failed(*, kind: str, name: str, what: str) -> str:
    """One workload that could not be rollout-restarted (a clause of a longer sentence)."""
    return f"rollout restart of {kind} {name} {what}"


def _asked_by(applied: Sequence[str], undone: Sequence[str]) -> str:
    parts = []
    if applied:
        parts.append(f"applied {', '.join(applied)}")
    if undone:
        parts.append(f"rolled back {', '.join(undone)}")
    return "; ".join(parts)


def restarted(workload: WorkloadStatusRef, *, applied: Sequence[str], undone: Sequence[str]) -> Outcome:
    """One rollout restart standing for every action of the poll that asked for it (restart coalescing)."""
    count = len(applied) + len(undone)
    return Outcome(
        True,
        Reason.WORKLOAD_RESTARTED,
        f"Rollout-restarted {workload.kind} {workload.name} once for {count} action(s) ({_asked_by(applied, undone)}).",
    )


def restart_failed_for(
    workload: WorkloadStatusRef, *, applied: Sequence[str], undone: Sequence[str], what: str
) -> Outcome:
    retry = "; the applied action(s) are retried at the next poll" if applied else ""
    return Outcome(
        False,
        Reason.ACTION_FAILED,
        f"{restart_failed(kind=workload.kind, name=workload.name, what=what)} ({_asked_by(applied, undone)}){retry}.",
    )


# -- apply ------------------------------------------------------------------------------------------


def configmap_set(
    change: AppliedChange,
    *,
    configmap: str,
    dry_run: bool,
    restarted: Sequence[str] = (),
    failures: Sequence[str] = (),
    restarts: Sequence[WorkloadStatusRef] = (),
) -> Outcome:
    """`restarts`: workloads the caller is to restart (coalesced); `restarted`: ones already restarted."""
    keys = keys_text(change.applied) or "no key (values already set)"
    if dry_run:
        return Outcome(
            True, Reason.WOULD_APPLY, f"Would set {keys} in ConfigMap {configmap} (action {change.action}).", change
        )
    if failures:
        # The keys are set; the change is recorded only once its workloads restarted, so the next poll retries.
        return Outcome(
            False,
            Reason.ACTION_FAILED,
            f"Set {keys} in ConfigMap {configmap} (action {change.action}), but {'; '.join(failures)}; "
            "retrying at the next poll.",
        )
    return Outcome(
        True,
        Reason.ACTION_APPLIED,
        f"Set {keys} in ConfigMap {configmap} (action {change.action}){_restarted(restarted)}.",
        change,
        restarts=tuple(restarts),
    )


def scale_unchanged(change: AppliedChange, *, field: str, current: int, wanted: int, dry_run: bool) -> Outcome:
    return Outcome(
        True,
        Reason.WOULD_APPLY if dry_run else Reason.ACTION_APPLIED,
        f"{change.kind} {change.name} {field} is already {current} (≥ {wanted}); "
        f"nothing to change (action {change.action}).",
        change,
    )


def scale_raised(
    change: AppliedChange, *, field: str, current: int | None, wanted: int, capped: bool, dry_run: bool
) -> Outcome:
    """`current` is None when the count is not known (a replay without a cluster)."""
    start = f" from {current}" if current is not None else ""
    what = f"{field} of {change.kind} {change.name}{start} to {wanted}{CAPPED if capped else ''}"
    if dry_run:
        return Outcome(True, Reason.WOULD_APPLY, f"Would raise {what} (action {change.action}).", change)
    return Outcome(True, Reason.ACTION_APPLIED, f"Raised {what} (action {change.action}).", change)


def job_created(change: AppliedChange, *, cronjob: str, existed: bool, dry_run: bool) -> Outcome:
    if dry_run:
        return Outcome(
            True,
            Reason.WOULD_APPLY,
            f"Would create Job {change.name} from CronJob {cronjob} (action {change.action}).",
            change,
        )
    verb = "Found existing" if existed else "Created"
    return Outcome(
        True,
        Reason.ACTION_APPLIED,
        f"{verb} Job {change.name} from CronJob {cronjob} for incident {change.incident} (action {change.action}).",
        change,
    )


def adopted(change: AppliedChange) -> Outcome:
    """A change found on its target but missing from status (the operator stopped in between)."""
    return Outcome(
        True,
        Reason.ACTION_APPLIED,
        f"Found action {change.action} applied to {change.kind} {change.name} for incident "
        f"{change.incident or '-'} but not recorded (the operator stopped in between); "
        f"recorded it so it is rolled back exactly.",
        change,
        warning=True,
    )


def hold_failed(*, finalizer: str, problem: str) -> Outcome:
    return Outcome(False, Reason.ACTION_FAILED, f"Cannot add finalizer {finalizer}: {problem}; changes postponed.")


# -- drift ------------------------------------------------------------------------------------------


def reapplied(change: AppliedChange) -> Outcome:
    """`change` is the record after the re-apply (its `reverts` already counted)."""
    return Outcome(
        True,
        Reason.DRIFT_CORRECTED,
        f"{change.kind} {change.name} was reverted by someone else; re-applied {keys_text(change.applied)} "
        f"(action {change.action}).",
        change,
    )


def reapply_failed(change: AppliedChange, *, problem: str) -> Outcome:
    return Outcome(
        False,
        Reason.ACTION_FAILED,
        f"Re-applying action {change.action} to {change.kind} {change.name} failed: {problem}.",
    )


def reapplied_but_restart_failed(change: AppliedChange, *, failures: Sequence[str]) -> Outcome:
    return Outcome(
        False,
        Reason.ACTION_FAILED,
        f"Re-applied action {change.action} to ConfigMap {change.name}, but {'; '.join(failures)}.",
    )


def gave_up(change: AppliedChange, *, fields: Iterable[str]) -> Outcome:
    """Reverted too often: the operator stops fighting and points at the GitOps fix (a standing Conflict)."""
    return Outcome(
        False,
        Reason.CONFLICT,
        f"{change.kind} {change.name} ({', '.join(fields)}) was reverted {change.reverts} times during the "
        f"incident; stopped re-applying action {change.action}. If a GitOps tool (e.g. Argo CD self-heal) "
        f"reverts it, add ignoreDifferences with managedFieldsManagers: [stampede-operator] and the sync "
        f"option RespectIgnoreDifferences=true to that Application.",
        change,
    )


# -- undo -------------------------------------------------------------------------------------------


def job_left_to_finish(change: AppliedChange) -> Outcome:
    return Outcome(
        True,
        Reason.JOB_LEFT_TO_FINISH,
        f"Job {change.name} (action {change.action}) is left to finish; it is removed by its ttlSecondsAfterFinished.",
    )


def _restored(change: AppliedChange, restored: Mapping[str, str | None] | None) -> str:
    """The values a rollback restores; None when they are not known (a replay without a cluster)."""
    if restored is None:
        return f"{', '.join(change.applied) or 'nothing'} restored to the values before the incident"
    return values_text(restored)


def would_roll_back(change: AppliedChange, *, known: bool = True) -> Outcome:
    return Outcome(
        True,
        Reason.WOULD_APPLY,
        f"Would roll back action {change.action} on {change.kind} {change.name} to "
        f"{_restored(change, change.original if known else None)}.",
    )


def rolled_back(
    change: AppliedChange, *, restored: Mapping[str, str | None] | None, restarted: Sequence[str] = ()
) -> Outcome:
    return Outcome(
        True,
        Reason.ACTION_ROLLED_BACK,
        f"Rolled back action {change.action}: {change.kind} {change.name} "
        f"{_restored(change, restored)}{_restarted(restarted)}.",
    )


def rollback_skipped(change: AppliedChange, *, skipped: Sequence[str], restored: Sequence[str]) -> Outcome:
    done = f"; restored {', '.join(restored)}" if restored else ""
    return Outcome(
        True,
        Reason.ROLLBACK_SKIPPED,
        f"{change.kind} {change.name}: {', '.join(skipped)} changed by someone else since action {change.action} set "
        f"it; left as is{done}.",
        skipped=tuple(skipped),
        warning=True,
    )


def target_gone(change: AppliedChange) -> Outcome:
    return Outcome(
        True,
        Reason.ROLLBACK_SKIPPED,
        f"{change.kind} {change.name} no longer exists; nothing to roll back for action {change.action}.",
        warning=True,
    )


def not_rolled_back(change: AppliedChange, *, why: str) -> Outcome:
    """An undo refused because the record is not to be trusted with a write; the record is dropped."""
    return Outcome(
        True,
        Reason.ROLLBACK_SKIPPED,
        f"Action {change.action} not rolled back on {change.kind} {change.name}: {why}.",
        warning=True,
    )


def originals_unavailable(change: AppliedChange, *, why: str) -> Outcome:
    """A ConfigMap rollback refused: its journal Secret is missing or does not match the digests in status.

    The change stays held and is retried at each poll: the target keeps the policy's values and mark, and an
    admin can restore the Secret or the values by hand (docs/reading-incident-state.md).
    """
    return Outcome(
        False,
        Reason.ACTION_FAILED,
        f"Action {change.action} not rolled back on {change.kind} {change.name}: {why}; nothing was written, "
        "retrying at the next poll.",
    )


def rollback_failed(change: AppliedChange, *, status: int, problem: str) -> Outcome:
    return Outcome(
        False,
        Reason.ACTION_FAILED,
        f"Rolling back action {change.action} on {change.kind} {change.name} failed ({status}): {problem}.",
    )


def undo_outcome(
    change: AppliedChange,
    *,
    restored: Sequence[str],
    skipped: Sequence[str],
    restarted: Sequence[str] = (),
    failures: Sequence[str] = (),
    restarts: Sequence[WorkloadStatusRef] = (),
) -> Outcome:
    """The outcome of a rollback that ran: restored fields, and any left alone because someone changed them."""
    if skipped:
        outcome = rollback_skipped(change, skipped=skipped, restored=restored)
    else:
        outcome = rolled_back(change, restored={k: change.original.get(k) for k in restored}, restarted=restarted)
    return replace(outcome, warnings=tuple(failures), restarts=tuple(restarts))


__all__ = ["Outcome", "Step"]
