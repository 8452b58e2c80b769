"""Sending an incident's messages to its notification targets, in the background: the operator's one
notification path, fed by the runner's after-tick report (`TickReport`).

Which messages a poll calls for is decided by its events' reasons (`NOTIFIED`, keyed by the `Reason` enum,
so a misspelt reason is a type error rather than a message that never goes out). Which target hears what
(API.md "Notification targets", "Escalation chain"):
- a target named by an escalation level's `notify` is that level's own target: it receives that
  level's escalation and the close (PagerDuty resolves what the escalation triggered), nothing else;
- every other target receives every message: opened, each phase, escalations of levels without their
  own target, closed. PagerDuty only triggers (open, escalation) and resolves (close).

Every target is sent to in its own task: a slow or failing target never delays remediation or another
target. A failure becomes a `NotificationFailed` event naming the target (never its URL or key), and
every attempt is noted in the incident's record.
"""

from __future__ import annotations

import asyncio
import logging
import re
from collections.abc import Awaitable, Callable, Mapping
from dataclasses import dataclass
from typing import Any

from ..actuators.kube import KubeError
from ..actuators.policies import Policies
from ..api.reasons import Reason
from ..api.spec import NotificationTarget, PolicySpec, WebhookFormat
from ..api.status import IncidentStatus
from ..engine import Event
from ..notifiers import formats, messages
from .problems import EventSink
from .reporting import TickReport

log = logging.getLogger("stampede")
Noter = Callable[..., Awaitable[None]]
"""Records one notification attempt in the incident's record (`incidents.note` bound to a client)."""
SKIPPED = "skipped"

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


def _level(event: Event) -> str:
    match = re.search(r"escalated to level (\S+) \(", event.message)
    return match.group(1) if match else "escalated"


def notices(report: TickReport) -> list[formats.Notice]:
    """The messages of one poll's events, in order."""
    # `old` is the status before this poll: its incident is the one an IncidentClosed event closes.
    closed = report.old.incident
    out = []
    for event in report.events:
        compose = NOTIFIED.get(event.reason)
        if compose is None:
            continue
        incident = closed if event.reason == Reason.INCIDENT_CLOSED else (report.new.incident or closed)
        if incident is None:
            continue
        ctx = messages.Context(
            namespace=report.namespace,
            policy=report.policy,
            incident=incident.id,
            severity=incident.severity.value,
            phase=incident.phase,
            mode=report.spec.mode.value,
        )
        out.append(
            formats.Notice(
                namespace=report.namespace,
                policy=report.policy,
                incident=incident.id,
                event=event.reason,
                severity=incident.severity.value,
                phase=incident.phase,
                level=_level(event) if event.reason == Reason.ESCALATED else "",
                text=compose(ctx, event, incident),
                summary=event.message,
                time=report.now,
            )
        )
    return out


def recipients(spec: PolicySpec, notice: formats.Notice) -> list[NotificationTarget]:
    """The targets `notice` goes to (see the module docstring)."""
    targets = spec.notifications.all_targets() if spec.notifications else []
    chain = spec.escalation.chain()
    own = {level.notify for level in chain if level.notify}
    if notice.event == Reason.ESCALATED:
        level = next((lv for lv in chain if lv.name == notice.level), None)
        if level is not None and level.notify:
            return [t for t in targets if t.name == level.notify]
        return [t for t in targets if t.name not in own]
    if notice.event == Reason.INCIDENT_CLOSED:
        return targets
    return [t for t in targets if t.name not in own]


@dataclass(slots=True)
class Notifier:
    """One policy loop's sender: where Secrets are read, failures posted, attempts noted, tasks kept."""

    policies: Policies
    emit: EventSink
    note: Noter
    pagerduty_url: str
    """Where PagerDuty targets send (the `STAMPEDE_PAGERDUTY_URL` setting)."""
    allowed_webhook_urls: tuple[str, ...]
    """Prefixes webhook URLs from Secrets must be under (`STAMPEDE_ALLOWED_WEBHOOK_URLS`; empty: any)."""
    background: set[asyncio.Task[None]]
    """The loop's background tasks (kept referenced until done, so none is garbage-collected mid-send)."""

    def dispatch(self, report: TickReport, body: Mapping[str, Any]) -> None:
        """Start sending this poll's messages; returns at once (remediation never waits for people)."""
        if report.spec.notifications is None:
            return
        queues: dict[str, tuple[NotificationTarget, list[formats.Notice]]] = {}
        for notice in notices(report):
            for target in recipients(report.spec, notice):
                queues.setdefault(target.name, (target, []))[1].append(notice)
        # One task per target: its messages go out in order, and no target waits for another.
        for target, queued in queues.values():
            task = asyncio.create_task(self._send_all(body, target, queued))
            self.background.add(task)
            task.add_done_callback(self.background.discard)

    async def _send_all(
        self, body: Mapping[str, Any], target: NotificationTarget, queued: list[formats.Notice]
    ) -> None:
        for notice in queued:
            await self._send(body, target, notice)

    async def _send(self, body: Mapping[str, Any], target: NotificationTarget, notice: formats.Notice) -> None:
        problem = await self._deliver(target, notice)
        if problem == SKIPPED:
            return
        try:
            await self.note(
                namespace=notice.namespace,
                policy=notice.policy,
                incident=notice.incident,
                target=target.name,
                event=notice.event,
                ok=problem is None,
                at=notice.time,
            )
        except Exception:  # the record is a courtesy too: never let it hide the failure below
            log.exception("%s/%s: could not note a notification", notice.namespace, notice.policy)
        if problem is not None:
            self.emit(
                body,
                "Warning",
                Reason.NOTIFICATION_FAILED,
                f"Notification of {notice.event} for incident {notice.incident} to target {target.name} "
                f"failed: {problem}.",
            )

    async def _deliver(self, target: NotificationTarget, notice: formats.Notice) -> str | None:
        """Send to one target: None when accepted, SKIPPED when the target takes no such event, else why not."""
        if target.pagerduty is not None and formats.pagerduty(notice, routing_key="", severity=None) is None:
            return SKIPPED  # PagerDuty hears opens, escalations and closes only: no Secret read for the rest
        if target.webhook is not None:
            ref = target.webhook.secret_ref
        else:
            assert target.pagerduty is not None
            ref = target.pagerduty.routing_key_secret_ref
        try:
            secret = await asyncio.to_thread(self.policies.read_secret, notice.namespace, ref.name, ref.key)
        except KubeError as error:
            return f"Secret {ref.name} key {ref.key}: {error.message}"
        secret = secret.strip()
        if target.webhook is not None:
            fmt = target.webhook.format
            payload = (
                formats.teams(notice)
                if fmt == WebhookFormat.TEAMS
                else formats.json_notice(notice)
                if fmt == WebhookFormat.JSON
                else formats.slack(notice)
            )
            return await formats.post_json(secret, payload, allowed_prefixes=self.allowed_webhook_urls)
        assert target.pagerduty is not None
        severity = target.pagerduty.severity.value if target.pagerduty.severity else None
        event = formats.pagerduty(notice, routing_key=secret, severity=severity)
        if event is None:
            return SKIPPED
        return await formats.post_json(self.pagerduty_url, event)


__all__ = ["NOTIFIED", "Notifier", "notices", "recipients"]
