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
    WORKLOAD_RESTARTED = "WorkloadRestarted"
    """One rollout restart of a workload for every action applied or undone in one poll that asked for it."""
    ROLLOUT_TIMED_OUT = "RolloutTimedOut"
    """Rollback waited `rollback.rolloutTimeout` for a workload's rollout; it goes on without it."""
    STORM_HOLD = "StormHold"
    """The storm breaker holds this policy's incident: too many policies already have one open."""
    SYSTEM_WIDE_STAMPEDE = "SystemWideStampede"
    """The first policy held by the storm breaker: the runbook's P0, a stampede across services."""
    HELD = "Held"
    """The stampede.aurum.io/hold annotation froze the policy."""
    RELEASED = "Released"
    """A hold (manual or storm breaker) ended; the policy acts again."""
    MANUAL_ROLLBACK = "ManualRollback"
    """The stampede.aurum.io/rollback-now annotation started rollback."""


__all__ = ["Reason"]
