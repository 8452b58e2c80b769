"""What happens after a tick besides the status write: metrics and notifications, off one report.

The runner builds one `TickReport` per poll (spec, status before and after, the engine's events and the
actuators' outcomes) and hands it to every listener: `update_metrics` here, and the runner's notifier
(`notifying.Notifier`, every notification target). Metrics and notifications are chosen by the event-reason
enum, never by matching strings. The incident record is not a listener: it is awaited before the report
is made, because a closed incident's KPIs go into the status written after it.
"""

from __future__ import annotations

from collections.abc import Callable, Mapping, Sequence
from dataclasses import dataclass
from datetime import datetime

from ..api.reasons import Reason
from ..api.spec import PolicySpec
from ..api.status import PolicyStatus
from ..engine import Event
from ..engine.outcomes import Step
from ..executing import Done
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
    now: datetime
    """The tick's time (what notifications and the incident record are stamped with)."""


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
            metrics.set_signal_value(report.namespace, report.policy, name, value)
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


__all__ = ["Listener", "TickReport", "count_outcomes", "update_metrics"]
