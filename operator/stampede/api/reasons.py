"""The reasons of the events the operator posts on a policy, as one enum.

Event reasons are part of the user-facing contract (`kubectl get events --field-selector reason=…`),
and the operator's metrics and notifications are chosen by reason: an enum makes a misspelt reason a
type error instead of a notification that silently never fires.
"""

from __future__ import annotations

from enum import StrEnum


class Reason(StrEnum):
    """Every event reason the operator posts."""

    INCIDENT_OPENED = "IncidentOpened"
    SEVERITY_RAISED = "SeverityRaised"
    PHASE_ENTERED = "PhaseEntered"
    ESCALATED = "Escalated"
    RECOVERY_STARTED = "RecoveryStarted"
    INCIDENT_CLOSED = "IncidentClosed"
    METRICS_UNAVAILABLE = "MetricsUnavailable"
    METRICS_RESTORED = "MetricsRestored"
    ACTION_APPLIED = "ActionApplied"
    ACTION_FAILED = "ActionFailed"
    WOULD_APPLY = "WouldApply"
    ACTION_ROLLED_BACK = "ActionRolledBack"
    ROLLBACK_SKIPPED = "RollbackSkipped"
    JOB_LEFT_TO_FINISH = "JobLeftToFinish"
    """A Job at the end of its incident: not rolled back, left to finish and removed by its TTL."""
    DRIFT_CORRECTED = "DriftCorrected"
    CONFLICT = "Conflict"
    INVALID_SPEC = "InvalidSpec"
    NOTIFICATION_FAILED = "NotificationFailed"


__all__ = ["Reason"]
