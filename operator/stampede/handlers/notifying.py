"""Sending an incident's messages to its notification targets, in the background.

Which target hears what (API.md "Notification targets", "Escalation chain"):
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
import os
import re
from collections.abc import Callable, Mapping, Sequence
from datetime import datetime
from typing import Any

from ..actuators.kube import Kube, KubeError
from ..actuators.policies import Policies
from ..api.spec import NotificationTarget, PolicySpec, WebhookFormat
from ..api.status import IncidentStatus, PolicyStatus
from ..engine import Event
from ..notifiers import formats, messages

log = logging.getLogger("stampede")
NOTIFIED = ("IncidentOpened", "PhaseEntered", "Escalated", "IncidentClosed")
Sink = Callable[[Mapping[str, Any], str, str, str], None]
Noter = Callable[..., Any]
_background: set[asyncio.Task[None]] = set()
SKIPPED = "skipped"


def pagerduty_url() -> str:
    return os.environ.get("STAMPEDE_PAGERDUTY_URL") or formats.PAGERDUTY_DEFAULT_URL


def _level(event: Event) -> str:
    match = re.search(r"escalated to level (\S+) \(", event.message)
    return match.group(1) if match else "escalated"


def notices(
    spec: PolicySpec,
    *,
    namespace: str,
    policy: str,
    status: PolicyStatus,
    closed: IncidentStatus | None,
    events: Sequence[Event],
    now: datetime,
) -> list[formats.Notice]:
    """The messages of one poll's events, in order."""
    out = []
    for event in events:
        if event.reason not in NOTIFIED:
            continue
        # `closed` is the incident as it stood before this poll: the one an IncidentClosed event closes.
        incident = closed if event.reason == "IncidentClosed" else status.incident
        if incident is None:
            continue
        ctx = messages.Context(
            namespace=namespace,
            policy=policy,
            incident=incident.id,
            severity=incident.severity.value,
            phase=incident.phase,
            mode=spec.mode.value,
        )
        level = ""
        if event.reason == "IncidentOpened":
            text = messages.detected(ctx, trigger=event.message)
        elif event.reason == "PhaseEntered":
            text = messages.progress(ctx, detail=event.message)
        elif event.reason == "Escalated":
            level = _level(event)
            text = messages.escalated(ctx, reason=event.message)
        else:
            text = messages.resolved(ctx, summary=event.message, actions=incident.actions)
        out.append(
            formats.Notice(
                namespace=namespace,
                policy=policy,
                incident=incident.id,
                event=event.reason,
                severity=incident.severity.value,
                phase=incident.phase,
                level=level,
                text=text,
                summary=event.message,
                time=now,
            )
        )
    return out


def recipients(spec: PolicySpec, notice: formats.Notice) -> list[NotificationTarget]:
    """The targets `notice` goes to (see the module docstring)."""
    targets = spec.notifications.all_targets() if spec.notifications else []
    chain = spec.escalation.chain()
    own = {level.notify for level in chain if level.notify}
    if notice.event == "Escalated":
        level = next((lv for lv in chain if lv.name == notice.level), None)
        if level is not None and level.notify:
            return [t for t in targets if t.name == level.notify]
        return [t for t in targets if t.name not in own]
    if notice.event == "IncidentClosed":
        return targets
    return [t for t in targets if t.name not in own]


def dispatch(
    kube: Kube,
    body: Mapping[str, Any],
    spec: PolicySpec,
    *,
    status: PolicyStatus,
    closed: IncidentStatus | None,
    events: Sequence[Event],
    emit: Sink | None,
    note: Noter,
    now: datetime,
) -> None:
    """Start sending this poll's messages; returns at once."""
    if spec.notifications is None:
        return
    meta = body.get("metadata") or {}
    namespace, policy = str(meta.get("namespace") or ""), str(meta.get("name") or "")
    queues: dict[str, tuple[NotificationTarget, list[formats.Notice]]] = {}
    for notice in notices(
        spec, namespace=namespace, policy=policy, status=status, closed=closed, events=events, now=now
    ):
        for target in recipients(spec, notice):
            queues.setdefault(target.name, (target, []))[1].append(notice)
    # One task per target: its messages go out in order, and no target waits for another.
    for target, queued in queues.values():
        task = asyncio.create_task(_send_all(kube, body, target, queued, emit=emit, note=note))
        _background.add(task)
        task.add_done_callback(_background.discard)


async def _send_all(
    kube: Kube,
    body: Mapping[str, Any],
    target: NotificationTarget,
    queued: list[formats.Notice],
    *,
    emit: Sink | None,
    note: Noter,
) -> None:
    for notice in queued:
        await _send(kube, body, target, notice, emit=emit, note=note)


async def _send(
    kube: Kube,
    body: Mapping[str, Any],
    target: NotificationTarget,
    notice: formats.Notice,
    *,
    emit: Sink | None,
    note: Noter,
) -> None:
    problem = await _deliver(kube, target, notice)
    if problem == SKIPPED:
        return
    try:
        await note(
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
    if problem is not None and emit is not None:
        emit(
            body,
            "Warning",
            "NotificationFailed",
            f"Notification of {notice.event} for incident {notice.incident} to target {target.name} failed: {problem}.",
        )


async def _deliver(kube: Kube, target: NotificationTarget, notice: formats.Notice) -> str | None:
    """Send to one target: None when accepted, SKIPPED when the target takes no such event, else why not."""
    if target.pagerduty is not None and formats.pagerduty(notice, routing_key="", severity=None) is None:
        return SKIPPED  # PagerDuty hears opens, escalations and closes only: no Secret read for the rest
    if target.webhook is not None:
        ref = target.webhook.secret_ref
    else:
        assert target.pagerduty is not None
        ref = target.pagerduty.routing_key_secret_ref
    try:
        secret = (await asyncio.to_thread(Policies(kube).read_secret, notice.namespace, ref.name, ref.key)).strip()
    except KubeError as error:
        return f"Secret {ref.name} key {ref.key}: {error.message}"
    if target.webhook is not None:
        fmt = target.webhook.format
        payload = (
            formats.teams(notice)
            if fmt == WebhookFormat.TEAMS
            else formats.json_notice(notice)
            if fmt == WebhookFormat.JSON
            else formats.slack(notice)
        )
        return await formats.post_json(secret, payload)
    assert target.pagerduty is not None
    severity = target.pagerduty.severity.value if target.pagerduty.severity else None
    event = formats.pagerduty(notice, routing_key=secret, severity=severity)
    if event is None:
        return SKIPPED
    return await formats.post_json(pagerduty_url(), event)


async def drain() -> None:
    """Wait for messages still being sent (tests, shutdown)."""
    while _background:
        await asyncio.gather(*list(_background), return_exceptions=True)
