"""What happens after a tick besides the status write: metrics and notifications, off one report.

The runner builds one `TickReport` per poll (spec, status before and after, the engine's events and the
actuators' outcomes) and hands it to every listener. Metrics and notifications are chosen by the
event-reason enum, never by matching strings; a new consumer (an incident record, another notification
target) is one more listener.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass

from ..api.reasons import Reason
from ..api.spec import PolicySpec
from ..api.status import IncidentStatus, PolicyStatus
from ..engine import Event
from ..engine.outcomes import Step
from ..executing import Done
from ..notifiers import messages
from . import metrics


@dataclass(frozen=True)
class TickReport:
    """One poll of one policy, as its listeners see it."""

    namespace: str
    policy: str
    spec: PolicySpec
    old: PolicyStatus
    """The status before the engine decided (its incident is the one a closing event closed)."""
    new: PolicyStatus
    events: tuple[Event, ...]
    done: tuple[Done, ...]
    readings: Mapping[str, float | None]


Listener = Callable[[TickReport], None]

COUNTED = (Step.APPLY, Step.UNDO, Step.REAPPLY, Step.PLAN)
"""Outcomes counted in `stampede_actions_total` (adoption, give-up, the guard and restarts are not actions)."""


def count_outcomes(namespace: str, policy: str, done: Sequence[Done]) -> None:
    """`stampede_actions_total{kind,result}`: the step for a success, the failure's reason otherwise."""
    for item in done:
        if item.step not in COUNTED or item.kind is None:
            continue
        result = item.step.value if item.outcome.ok else item.outcome.reason.lower()
        metrics.ACTIONS_TOTAL.labels(namespace, policy, item.kind, result).inc()


def update_metrics(report: TickReport) -> None:
    labels = (report.namespace, report.policy)
    status = report.new
    count_outcomes(report.namespace, report.policy, report.done)
    for item in report.done:
        if item.step == Step.UNDO and item.outcome.ok:
            metrics.ROLLBACKS_TOTAL.labels(*labels).inc()
    metrics.INCIDENT_ACTIVE.labels(*labels).set(1 if status.incident else 0)
    for name, value in report.readings.items():
        if value is not None:  # unknown readings were counted, by kind, when they were read
            metrics.SIGNAL_VALUE.labels(*labels, name).set(value)
    for event in report.events:
        if event.reason == Reason.INCIDENT_OPENED and status.incident:
            metrics.INCIDENTS_TOTAL.labels(*labels, status.incident.severity.value).inc()
        if event.reason == Reason.INCIDENT_CLOSED and status.history:
            metrics.INCIDENT_DURATION.labels(*labels).observe(status.history[0].duration_seconds)
    for namespace, policy, phase, severity in list(metrics.PHASE_INFO._metrics):
        if (namespace, policy) == labels:
            metrics.PHASE_INFO.remove(namespace, policy, phase, severity)
    if status.incident:
        metrics.PHASE_INFO.labels(*labels, status.incident.phase or "-", status.incident.severity.value).set(1)


Compose = Callable[[messages.Context, Event, IncidentStatus], str]
NOTIFIED: dict[Reason, Compose] = {
    Reason.INCIDENT_OPENED: lambda ctx, event, _: messages.detected(ctx, trigger=event.message),
    Reason.PHASE_ENTERED: lambda ctx, event, _: messages.progress(ctx, detail=event.message),
    Reason.ESCALATED: lambda ctx, event, _: messages.escalated(ctx, reason=event.message),
    Reason.SYSTEM_WIDE_STAMPEDE: lambda ctx, event, _: messages.system_wide(ctx, detail=event.message),
    Reason.INCIDENT_CLOSED: lambda ctx, event, closed: messages.resolved(
        ctx, summary=event.message, actions=closed.actions
    ),
}
"""The runbook's four messages (and the storm breaker's P0), by the reason of the event that calls for them."""


def notification_texts(report: TickReport) -> list[str]:
    """The runbook's messages this poll calls for, in the order of its events."""
    closed = report.old.incident
    texts = []
    for event in report.events:
        incident = report.new.incident or closed
        compose = NOTIFIED.get(event.reason)
        if compose is None or incident is None:
            continue
        if event.reason == Reason.INCIDENT_CLOSED:
            if closed is None:
                continue
            incident_closed = closed
        else:
            incident_closed = incident
        ctx = messages.Context(
            namespace=report.namespace,
            policy=report.policy,
            incident=incident.id,
            severity=incident.severity.value,
            phase=incident.phase,
            mode=report.spec.mode.value,
        )
        texts.append(compose(ctx, event, incident_closed))
    return texts


__all__ = ["Listener", "TickReport", "count_outcomes", "notification_texts", "update_metrics"]
