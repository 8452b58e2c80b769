"""Runbook rule: a change found on a target but not in status is recorded and rolled back like any other.

It happens when the operator dies between a target write and the status write recording it; the
policy's `status.journal`, written before the target, holds the true originals. Found on an idle
policy, the change belongs to an incident status no longer knows, so one is made up, already
recovered: the policy starts rolling back at once.
"""

from __future__ import annotations

from collections.abc import Sequence
from datetime import datetime

from ..api.spec import Severity
from ..api.status import AppliedChange, IncidentStatus, PolicyStatus, State
from .decide import incident_id_for


def adopt(status: PolicyStatus, found: Sequence[AppliedChange], *, now: datetime) -> PolicyStatus:
    """Hold the changes found; an idle policy gets a made-up, recovered incident so they are rolled back."""
    if not found:
        return status
    status = status.model_copy(update={"applied": [*status.applied, *found]})
    if status.state != State.IDLE:
        return status
    first = min(found, key=lambda c: c.applied_at)
    incident = IncidentStatus(
        id=first.incident or incident_id_for(now),
        started_at=first.applied_at,
        severity=Severity.P2,
        recovered_at=now,
        phase="",
        max_phase="",
    )
    return status.model_copy(update={"state": State.ROLLING_BACK, "incident": incident})


__all__ = ["adopt"]
