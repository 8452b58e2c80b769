"""The `StampedePolicy` status: what `kubectl describe` shows and everything needed after a restart.

The operator keeps no state of its own: breach windows, the incident, every applied change with
its original value, and the rollback progress all live here, so a killed operator continues the
same incident and rolls back exactly.
"""

from __future__ import annotations

from datetime import UTC, datetime
from enum import StrEnum
from typing import Annotated, Any

from pydantic import (
    BeforeValidator,
    Field,
    PlainSerializer,
    SerializerFunctionWrapHandler,
    WithJsonSchema,
    model_serializer,
    model_validator,
)

from .kinds import ChangeKind
from .spec import LabelName, Model, Name, Severity, WorkloadKind


def parse_time(value: Any) -> datetime:
    """RFC 3339 text (or a datetime) as an aware UTC datetime; ValueError on anything else."""
    return _parse_time(value)


def _parse_time(value: Any) -> datetime:
    if isinstance(value, datetime):
        parsed = value
    elif isinstance(value, str):
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00"))
    else:
        raise ValueError(f"invalid timestamp {value!r}: expected RFC 3339 text")
    if parsed.tzinfo is None:
        parsed = parsed.replace(tzinfo=UTC)
    return parsed.astimezone(UTC)


def format_time(value: datetime) -> str:
    """RFC 3339 in UTC with a `Z`, keeping sub-second precision only when there is some."""
    text = value.astimezone(UTC).replace(tzinfo=None).isoformat()
    return text + "Z"


Timestamp = Annotated[
    datetime,
    BeforeValidator(_parse_time),
    PlainSerializer(format_time, return_type=str),
    WithJsonSchema({"type": "string", "format": "date-time"}),
]


class State(StrEnum):
    IDLE = "Idle"
    INCIDENT = "Incident"
    ROLLING_BACK = "RollingBack"


class SignalStatus(Model):
    """Last reading of one signal."""

    name: str
    """Signal name."""
    value: str
    """Last value as text, or `unknown`."""
    error: str | None = None
    """Why the value is unknown."""


class Breach(Model):
    """A severity condition that currently holds, and since when (the `for` window)."""

    level: Severity
    """Severity level the condition belongs to."""
    condition: str
    """The condition text."""
    since: Timestamp
    """First poll of the current unbroken run in which the condition held."""


class RolloutKind(StrEnum):
    """Kinds whose rollout is restarted or awaited: the workload kinds, and an HPA for the workload it drives."""

    DEPLOYMENT = WorkloadKind.DEPLOYMENT.value
    STATEFUL_SET = WorkloadKind.STATEFUL_SET.value
    DAEMON_SET = WorkloadKind.DAEMON_SET.value
    HORIZONTAL_POD_AUTOSCALER = ChangeKind.HORIZONTAL_POD_AUTOSCALER.value


class WorkloadStatusRef(Model):
    """A workload restarted with a ConfigMap change, or whose rollout a rollback step waits for."""

    # A restart list is re-derived from the spec before it is used (`engine/trust.py`); a rollout wait
    # may also name the HPA a scale change was recorded on, whose rollout is that of the workload it drives.
    kind: RolloutKind
    """Workload kind."""
    name: Name
    """Workload name."""


class RolloutWait(Model):
    """Workloads whose rollout the next rollback step waits for."""

    workloads: list[WorkloadStatusRef] = Field(default_factory=list)
    """Workloads restarted or scaled by the latest undo."""
    since: Timestamp
    """When the undo ran; the wait ends at the latest rollback.rolloutTimeout after it."""


class IncidentStatus(Model):
    """The incident in progress."""

    id: str
    """Unique per policy and stable across operator restarts."""
    started_at: Timestamp
    """When the incident opened."""
    severity: Severity
    """Highest severity reached (never falls during an incident)."""
    phase: str = ""
    """Latest phase entered."""
    phase_started_at: Timestamp | None = None
    """When the latest phase was entered."""
    next_phase_at: Timestamp | None = None
    """When the next phase is due, if any."""
    escalated: bool = False
    """Whether the incident was escalated."""
    escalated_at: Timestamp | None = None
    """When it was escalated."""
    escalation_level: str = ""
    """Highest escalation level reached (levels are reached in order)."""
    recovering_since: Timestamp | None = None
    """Start of the current unbroken run of polls where every recovery condition held."""
    recovered_at: Timestamp | None = None
    """When recovery was confirmed and rollback started."""
    last_rollback_at: Timestamp | None = None
    """When the latest rollback step ran (for stepDelay)."""
    max_phase: str = ""
    """Furthest phase entered."""
    actions: list[str] = Field(default_factory=list)
    """Actions applied during this incident, in order (for the resolution summary)."""
    rollout_wait: RolloutWait | None = None
    """Rollback is waiting for these workloads' rollouts before its next undo (rollback.waitForRollout)."""
    storm_held: bool = False
    """The storm breaker holds this incident: it is open and reported, but applies nothing new."""
    manual_rollback: bool = False
    """Rollback was started by the stampede.aurum.io/rollback-now annotation, not by recovery."""


class AppliedChange(Model):
    """One change made to a target, with what is needed to undo it exactly."""

    # Status is not trusted for targets: kind and name carry the spec's own patterns, and are checked
    # against the spec action of the same name (`engine/trust.py`) before anything is written.
    # A key that did not exist before the change is listed in `absent`, never kept as a `null` in
    # `original`: a real API server's merge patch drops `null` members of objects inside arrays. In
    # Python, `original` still maps such a key to None; only the wire form splits it out (and older
    # statuses with nulls still read).

    action: LabelName
    """Action name from the spec."""
    kind: ChangeKind
    """Kind of the changed object (ConfigMap, Deployment, StatefulSet, HorizontalPodAutoscaler, Job)."""
    name: Name
    """Name of the changed object."""
    incident: str = ""
    """Incident the change was made for."""
    applied_at: Timestamp
    """When it was applied."""
    original: Annotated[
        dict[str, str | None],
        WithJsonSchema({"type": "object", "additionalProperties": {"type": "string"}}),
    ] = Field(default_factory=dict)
    """Values before the change, for keys or fields that existed. A ConfigMap's as `sha256:<64 hex>` digests:
    the values are kept in a journal Secret in the operator's namespace, never in status."""
    absent: list[str] = Field(default_factory=list)
    """Keys or fields that did not exist before the change: removed again on rollback."""
    applied: dict[str, str] = Field(default_factory=dict)
    """Values this policy set."""
    restart: list[WorkloadStatusRef] = Field(default_factory=list)
    """Workloads rollout-restarted with this change (and again on rollback)."""
    reverts: int = 0
    """Times someone else reverted this change during the incident (drift)."""

    @property
    def reversible(self) -> bool:
        """Whether undoing this change restores its object (not so for Jobs, which are left to finish)."""
        return self.kind.reversible

    @model_validator(mode="before")
    @classmethod
    def _absent_as_none(cls, data: Any) -> Any:
        """`absent` (and an older status's nulls) become None in `original`, the one form the code reads."""
        if not isinstance(data, dict):
            return data
        absent = data.get("absent") or []
        if not absent:
            return data
        original = dict(data.get("original") or {})
        for key in absent:
            if isinstance(key, str):
                original.setdefault(key, None)
        return {**data, "original": original, "absent": []}

    @model_serializer(mode="wrap")
    def _none_as_absent(self, handler: SerializerFunctionWrapHandler) -> dict[str, Any]:
        out: dict[str, Any] = handler(self)
        original = self.original
        missing = sorted(k for k, v in original.items() if v is None)
        if missing:
            key = "original"
            out[key] = {k: v for k, v in original.items() if v is not None}
            out["absent"] = missing
        else:
            out.pop("absent", None)
        return out


class KPI(Model):
    """One response-time KPI of an incident, measured from the start of the breach window."""

    name: str
    """detection, mitigation, stabilization, mttr or fullRecovery."""
    seconds: float | None = None
    """Seconds from the first breach to the milestone; absent while not reached."""
    target: str
    """The target from spec.targets (Go duration)."""
    met: bool | None = None
    """Whether the milestone was reached within the target; absent while still possible."""


class HistoryEntry(Model):
    """A finished incident."""

    id: str
    """Incident id."""
    severity: Severity
    """Highest severity reached."""
    started_at: Timestamp
    """When it opened."""
    recovered_at: Timestamp | None = None
    """When recovery was confirmed."""
    closed_at: Timestamp
    """When the last change was rolled back."""
    duration_seconds: int
    """From start to close."""
    max_phase: str = ""
    """Furthest phase entered."""
    escalated: bool = False
    """Whether it was escalated."""
    kpis: list[KPI] = Field(default_factory=list)
    """The incident's response-time KPIs against their targets (from its StampedeIncident record)."""
    manual: bool = False
    """Rolled back because of the stampede.aurum.io/rollback-now annotation, not because it recovered."""


class ConditionStatus(StrEnum):
    TRUE = "True"
    FALSE = "False"
    UNKNOWN = "Unknown"


class StatusCondition(Model):
    """A standard Kubernetes condition."""

    type: str
    """Ready, MetricsAvailable, IncidentActive, Escalated, Conflict, Suspended or Held."""
    status: ConditionStatus
    """True, False or Unknown."""
    reason: str = ""
    """CamelCase reason."""
    message: str = ""
    """Human-readable sentence."""
    last_transition_time: Timestamp
    """When status last changed."""
    observed_generation: int | None = None
    """Spec generation the condition was computed from."""


class PolicyStatus(Model):
    """Observed state of a StampedePolicy."""

    observed_generation: int | None = None
    """The spec generation last acted on."""
    state: State = State.IDLE
    """Idle, Incident or RollingBack."""
    severity: str = ""
    """Current incident's severity (empty when idle)."""
    phase: str = ""
    """Current incident's phase (empty when idle)."""
    last_poll_time: Timestamp | None = None
    """Last poll (refreshed sparingly)."""
    signals: list[SignalStatus] = Field(default_factory=list)
    """Last value of every signal."""
    breaching: list[Breach] = Field(default_factory=list)
    """Severity conditions currently holding, with the start of their `for` window."""
    incident: IncidentStatus | None = None
    """The incident in progress."""
    applied: list[AppliedChange] = Field(default_factory=list)
    """Changes applied and not yet rolled back, oldest first."""
    planned: list[AppliedChange] = Field(default_factory=list)
    """DryRun only: the changes that would have been made."""
    journal: list[AppliedChange] = Field(default_factory=list)
    """Changes about to be written to their targets: recorded here before the target write and gone with
    the status write that records how it went. A restarted operator reads only these targets to find
    whether a write landed (then it is held in `applied` and rolled back) or not (then it is dropped)."""
    history: list[HistoryEntry] = Field(default_factory=list)
    """The last 10 incidents."""
    conditions: list[StatusCondition] = Field(default_factory=list)
    """Standard conditions."""
    template_generation: int | None = None
    """metadata.generation of the template (spec.templateRef) in force; empty without a template."""
    mode: str = ""
    """The mode in force (Enforce or DryRun), after defaults and any template: the MODE column shows it,
    since `spec.mode` is empty when the policy leaves it to its default or its template."""

    def wire(self) -> dict[str, Any]:
        """The status as it is written to the API server."""
        return self.model_dump(mode="json", by_alias=True, exclude_none=True)
