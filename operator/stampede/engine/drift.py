"""Runbook rule: a change someone else reverts during an incident is put back, but not for ever.

GitOps self-heal (Argo CD) reverts a mitigation within seconds; re-applying it without end would be a
fight nobody wins. After `MAX_DRIFT_REVERTS` reverts of the same change the operator stops and reports
a standing `Conflict` pointing at the GitOps fix. The count lives in the change's status record, so it
survives restarts.
"""

from __future__ import annotations

from ..api.spec import Mode, PolicySpec
from ..api.status import AppliedChange, PolicyStatus, State

MAX_DRIFT_REVERTS = 3


def corrects_drift(spec: PolicySpec, status: PolicyStatus) -> bool:
    """Drift is corrected only while an incident is open and changes are really made."""
    return status.state == State.INCIDENT and spec.mode == Mode.ENFORCE and not spec.suspend


def watched(change: AppliedChange) -> bool:
    """Whether a change is still checked for reverts: a change of a reversible kind not yet given up on."""
    return change.reversible and bool(change.applied) and change.reverts < MAX_DRIFT_REVERTS


def reverted_once_more(change: AppliedChange) -> AppliedChange:
    """The record of a change after one more revert by someone else."""
    return change.model_copy(update={"reverts": change.reverts + 1})


def gives_up(change: AppliedChange) -> bool:
    """Whether this revert (not yet counted in `change`) is the one at which re-applying stops."""
    return change.reverts + 1 >= MAX_DRIFT_REVERTS


__all__ = ["MAX_DRIFT_REVERTS", "corrects_drift", "gives_up", "reverted_once_more", "watched"]
