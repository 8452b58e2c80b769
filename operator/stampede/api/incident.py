"""The `StampedeIncident` record: one object per incident, the cluster's incident log.

A policy's status says what is happening now and keeps ten one-line summaries; events expire after
an hour. The runbook's post-incident tasks need more: the timeline, every change with its outcome,
the peaks, the KPIs against their targets. Argo Rollouts keeps each analysis run as its own object
with its own status; a record does the same for an incident, so `kubectl get stpi -A` lists them
and `stampede report` can write a postmortem draft long after the events are gone.

The record is written only by the operator, so everything lives in `status`; `spec` only names the
policy and the incident. Size is bounded whatever the policy holds (see the `MAX_*` limits), far
under the API server's ~1.5 MiB per object.
"""

from __future__ import annotations

from enum import StrEnum
from typing import Any

from pydantic import Field

from .spec import Model, Severity
from .status import KPI, Timestamp

INCIDENT_KIND = "StampedeIncident"
INCIDENT_PLURAL = "stampedeincidents"
INCIDENT_SINGULAR = "stampedeincident"
INCIDENT_SHORT_NAME = "stpi"
POLICY_LABEL = "stampede.aurum.io/policy"

MAX_TIMELINE = 200
"""Timeline entries kept; the oldest are dropped first."""
MAX_CHANGES = 200
MAX_NOTIFICATIONS = 100
MAX_PEAKS = 100
MAX_MESSAGE = 512
"""Characters kept of one timeline or change message (event messages are ≤ 1024 bytes anyway)."""
MAX_VALUE = 80
"""Characters kept of one value quoted in a change message (ConfigMap values may be huge)."""


def cut(text: str, limit: int = MAX_MESSAGE) -> str:
    """`text` shortened to `limit` characters, marked with an ellipsis when cut."""
    return text if len(text) <= limit else text[: limit - 1] + "…"


class RecordState(StrEnum):
    OPEN = "Open"
    ROLLING_BACK = "RollingBack"
    CLOSED = "Closed"


class ChangeOutcome(StrEnum):
    APPLIED = "Applied"
    ROLLED_BACK = "RolledBack"
    SKIPPED = "Skipped"
    FAILED = "Failed"
    PLANNED = "Planned"


class PhaseRecord(Model):
    """A phase the incident entered."""

    name: str
    """Phase name from the policy."""
    entered_at: Timestamp
    """When it was entered."""


class EscalationRecord(Model):
    """An escalation level the incident reached."""

    level: str
    """Level name."""
    at: Timestamp
    """When it was reached."""
    reason: str = ""
    """Why (the Escalated event's message)."""


class ChangeRecord(Model):
    """One change the incident made (or would have made, or failed to make), with its outcome."""

    action: str
    """Action name from the policy."""
    kind: str
    """Kind of the changed object."""
    name: str
    """Name of the changed object."""
    applied_at: Timestamp | None = None
    """When it was applied (or planned, or first failed)."""
    rolled_back_at: Timestamp | None = None
    """When it was rolled back (or skipped at rollback)."""
    outcome: ChangeOutcome
    """Applied, RolledBack, Skipped, Failed or Planned."""
    message: str = ""
    """Values before → during → after, or why it failed or was skipped."""


class TimelineEntry(Model):
    """One event of the incident."""

    time: Timestamp
    """When it was posted."""
    reason: str
    """Event reason."""
    message: str
    """Event message (cut to 512 characters)."""


class Peak(Model):
    """The worst value a signal reached during the incident."""

    signal: str
    """Signal name."""
    value: float
    """Worst value: the lowest for signals whose severity conditions fire below a threshold, else the highest."""
    at: Timestamp
    """When it was read."""


class NotificationRecord(Model):
    """One message sent (or attempted) to a notification target."""

    target: str
    """Target name."""
    event: str
    """The event it announced (IncidentOpened, PhaseEntered, Escalated, IncidentClosed)."""
    at: Timestamp
    """When it was sent."""
    ok: bool
    """Whether the target accepted it."""


class IncidentSpec(Model):
    """Which policy and incident the record belongs to (written once by the operator)."""

    policy: str
    """Name of the StampedePolicy (same namespace)."""
    incident: str
    """Incident id (unique per policy)."""


class IncidentRecordStatus(Model):
    """What happened during one incident, kept current by the operator until it closes."""

    policy: str
    """Name of the StampedePolicy."""
    state: RecordState = RecordState.OPEN
    """Open, RollingBack or Closed."""
    severity: Severity
    """Highest severity reached."""
    phase: str = ""
    """Furthest phase entered."""
    escalation_level: str = ""
    """Highest escalation level reached (empty when not escalated)."""
    mttr: str = ""
    """Time from the first breach to recovery confirmed (Go duration), once recovered."""
    dry_run: bool = False
    """The policy was in DryRun: changes were only planned."""
    started_at: Timestamp
    """When the incident opened."""
    first_breach_at: Timestamp
    """Start of the breach window that opened it; KPIs are measured from here."""
    recovered_at: Timestamp | None = None
    """When recovery was confirmed and rollback started."""
    closed_at: Timestamp | None = None
    """When the last change was rolled back."""
    phases: list[PhaseRecord] = Field(default_factory=list)
    """Phases entered, in order."""
    escalations: list[EscalationRecord] = Field(default_factory=list)
    """Escalation levels reached, in order."""
    changes: list[ChangeRecord] = Field(default_factory=list)
    """Every change with its outcome (at most 200)."""
    timeline: list[TimelineEntry] = Field(default_factory=list)
    """Every event of the incident (at most 200, the oldest dropped first)."""
    peaks: list[Peak] = Field(default_factory=list)
    """Worst value of every signal."""
    kpis: list[KPI] = Field(default_factory=list)
    """Response-time KPIs against spec.targets."""
    notifications: list[NotificationRecord] = Field(default_factory=list)
    """Messages sent to notification targets (at most 100, the oldest dropped first)."""

    def wire(self) -> dict[str, Any]:
        """The status as written to the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)

    def kpi(self, name: str) -> KPI | None:
        return next((k for k in self.kpis if k.name == name), None)


def record_name(policy: str, incident: str) -> str:
    """`<policy>-<incident id>`; policy names are ≤ 253 characters, so the result is cut to fit."""
    return f"{policy[: 253 - len(incident) - 1]}-{incident}"
