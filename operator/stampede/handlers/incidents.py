"""Keeping every incident's `StampedeIncident` record current, from the poll loop.

The poll loop awaits `track` once per tick, after the engine decided and `execute` made the changes, and
before its after-tick report and status write (a closed incident's KPIs go into that status). Every
event posted on the policy passes through `capture` (it wraps the operator's event sink), so the
record's timeline holds the outcome events of actions as well as the engine's, in the order they were
posted. The record of an open incident lives in memory
here and is re-read from the cluster after a restart, so a killed operator continues the same record.

A record that cannot be written never stops remediation nor costs the poll its status write: a failed write
is logged and retried at the next tick with the full status (nothing was lost: the record is rebuilt from
the policy's status), and any other failure here is logged and the poll's status kept as it was.
Notifications are sent by `notifying.Notifier` (an after-tick listener), which notes each attempt here.
"""

from __future__ import annotations

import asyncio
import logging
from collections import deque
from collections.abc import Callable, Mapping
from dataclasses import dataclass, field
from datetime import datetime
from typing import Any

from ..actuators.kube import Kube, KubeError
from ..actuators.records import Records
from ..api.incident import IncidentRecordStatus, RecordState, record_name
from ..api.reasons import Reason
from ..api.spec import PolicySpec
from ..api.status import KPI, PolicyStatus
from ..engine import Decision, Event
from ..engine.records import follow, kpi_targets, note_notification, with_history_kpis
from . import metrics

log = logging.getLogger("stampede")
CAPTURE_LIMIT = 500
"""Events kept per policy between two ticks (a policy with an invalid spec is not tracked meanwhile)."""
RECENT_LIMIT = 5
"""Closed records kept in memory per policy, so late notification results still reach them."""

Sink = Callable[[Mapping[str, Any], str, str, str], None]


@dataclass(slots=True)
class _Tracker:
    """One policy's open records and what was last written of each."""

    records: dict[str, IncidentRecordStatus] = field(default_factory=dict)
    written: dict[str, dict[str, Any]] = field(default_factory=dict)
    recent: dict[str, IncidentRecordStatus] = field(default_factory=dict)
    looked_up: set[str] = field(default_factory=set)
    targets_set: bool = False
    lock: asyncio.Lock = field(default_factory=asyncio.Lock)


_captured: dict[tuple[str, str], deque[Event]] = {}
_trackers: dict[tuple[str, str], _Tracker] = {}


def _key(body: Mapping[str, Any]) -> tuple[str, str]:
    meta = body.get("metadata") or {}
    return str(meta.get("namespace") or ""), str(meta.get("name") or "")


def capture(sink: Sink) -> Sink:
    """The event sink, also keeping every event per policy for the next `track`."""

    def emit(body: Mapping[str, Any], type_: str, reason: str, message: str) -> None:
        if reason in Reason.__members__.values():  # kopf's own reasons are not the incident's timeline
            event = Event(reason, message, type_ == "Warning")
            _captured.setdefault(_key(body), deque(maxlen=CAPTURE_LIMIT)).append(event)
        sink(body, type_, reason, message)

    return emit


def forget(namespace: str, policy: str) -> None:
    """Drop what is kept for a deleted policy."""
    _captured.pop((namespace, policy), None)
    _trackers.pop((namespace, policy), None)


async def track(
    kube: Kube,
    body: Mapping[str, Any],
    spec: PolicySpec,
    decision: Decision,
    after: PolicyStatus,
    *,
    readings: Mapping[str, float | None],
    now: datetime,
) -> PolicyStatus:
    """Bring the records of the incidents this tick touched up to date; returns `after` with the KPIs of a
    closed incident in its history entry, or `after` unchanged whatever goes wrong here."""
    try:
        return await _track(kube, body, spec, decision, after, readings=readings, now=now)
    except Exception:  # records and messages are for people: a bug here must never cost the status write
        log.exception("%s/%s: could not keep the incident record current", *_key(body))
        return after


async def _track(
    kube: Kube,
    body: Mapping[str, Any],
    spec: PolicySpec,
    decision: Decision,
    after: PolicyStatus,
    *,
    readings: Mapping[str, float | None],
    now: datetime,
) -> PolicyStatus:
    records = Records(kube)
    key = _key(body)
    namespace, policy = key
    # A policy that never had an incident in this process keeps no tracker (~0.7 KiB each, for every idle policy).
    tracker = _trackers.get(key) or _Tracker()
    captured = list(_captured.pop(key, ()))
    events = captured or list(decision.events)
    if decision.status.incident is not None or events:  # kept from here on, as before a lookup that may fail
        tracker = _trackers.setdefault(key, tracker)
    await _look_up(records, tracker, decision, events, namespace=namespace, policy=policy)
    touched = follow(
        tracker.records,
        spec=spec,
        policy=policy,
        decided=decision.status,
        after=after,
        events=events,
        attempted=[a.name for a in decision.apply],
        values=readings,
        now=now,
    )
    if touched or tracker.records or tracker.looked_up:
        _trackers.setdefault(key, tracker)
    if touched:  # from the first incident on: a target line has nothing to be drawn against before
        _set_targets(tracker, spec, key)
    uid = str((body.get("metadata") or {}).get("uid") or "")
    for incident, record in touched.items():
        _observe(key, tracker.records.get(incident), record)
        # Kept in memory before the write is awaited, so a notification noted meanwhile lands on this version.
        if record.state == RecordState.CLOSED:
            tracker.records.pop(incident, None)
            tracker.recent[incident] = record
            while len(tracker.recent) > RECENT_LIMIT:
                tracker.recent.pop(next(iter(tracker.recent)))
        else:
            tracker.records[incident] = record
        await _write(records, tracker, namespace=namespace, policy=policy, uid=uid, incident=incident)
        if record.state == RecordState.CLOSED:
            after = with_history_kpis(after, record, incident)
            try:
                deleted = await asyncio.to_thread(records.prune, namespace, policy, keep=spec.history_limit)
            except KubeError as error:
                log.warning("%s/%s: could not prune incident records: %s", namespace, policy, error.message)
            else:
                for name in deleted:
                    tracker.written.pop(name, None)
    return after


async def note(
    kube: Kube, *, namespace: str, policy: str, incident: str, target: str, event: str, ok: bool, at: datetime
) -> None:
    """Record one notification attempt in the incident's record (open or recently closed)."""
    tracker = _trackers.get((namespace, policy))
    if tracker is None:
        return
    record = tracker.records.get(incident) or tracker.recent.get(incident)
    if record is None:
        return
    record = note_notification(record, target=target, event=event, ok=ok, at=at)
    if incident in tracker.records:
        tracker.records[incident] = record
    else:
        tracker.recent[incident] = record
    if record_name(policy, incident) not in tracker.written:
        return  # not created yet: the next tick creates it with this note, and with its owner's uid
    await _write(Records(kube), tracker, namespace=namespace, policy=policy, uid="", incident=incident)


def _set_targets(tracker: _Tracker, spec: PolicySpec, key: tuple[str, str]) -> None:
    """The KPI target gauges, once a policy has an incident: 5 series (3.3 KiB) per policy that never had one
    would be most of /metrics and of the operator's own memory per idle policy at 10,000 policies."""
    if tracker.targets_set:
        return
    for name, target in kpi_targets(spec).items():
        metrics.KPI_TARGET.labels(*key, name).set(target.total_seconds())
    tracker.targets_set = True


async def _look_up(
    records: Records,
    tracker: _Tracker,
    decision: Decision,
    events: list[Event],
    *,
    namespace: str,
    policy: str,
) -> None:
    """After a restart, continue the records the cluster holds rather than starting new ones."""
    wanted = []
    if decision.status.incident is not None:
        wanted.append(decision.status.incident.id)
    if any(e.reason == Reason.INCIDENT_CLOSED for e in events) and decision.status.history:
        wanted.append(decision.status.history[0].id)
    for incident in wanted:
        if incident in tracker.records or incident in tracker.looked_up:
            continue
        tracker.looked_up.add(incident)
        try:
            found = await asyncio.to_thread(records.read, namespace, policy, incident)
        except KubeError as error:
            log.warning("%s/%s: could not read incident record %s: %s", namespace, policy, incident, error.message)
            continue
        if found is not None and found.state != RecordState.CLOSED:
            tracker.records[incident] = found
            tracker.written[record_name(policy, incident)] = found.wire()


async def _write(
    records: Records,
    tracker: _Tracker,
    *,
    namespace: str,
    policy: str,
    uid: str,
    incident: str,
) -> None:
    """Write the newest in-memory version of a record; one write at a time per policy, so a late
    notification's write can never put an older timeline back."""
    async with tracker.lock:
        record = tracker.records.get(incident) or tracker.recent.get(incident)
        if record is None:
            return
        name = record_name(policy, incident)
        new = record.wire()
        old = tracker.written.get(name)
        try:
            if old is None:
                await asyncio.to_thread(
                    records.create, namespace, policy=policy, policy_uid=uid, incident=incident, status=record
                )
            else:
                await asyncio.to_thread(records.write_status, namespace, name, old=old, new=new)
        except KubeError as error:
            log.warning("%s/%s: could not write incident record %s: %s", namespace, policy, name, error.message)
            return
        tracker.written[name] = new


def _observe(key: tuple[str, str], before: IncidentRecordStatus | None, record: IncidentRecordStatus) -> None:
    """KPI metrics, each once per incident: the seconds when measured, a miss when decided."""
    old: dict[str, KPI] = {k.name: k for k in (before.kpis if before else [])}
    for kpi in record.kpis:
        previous = old.get(kpi.name)
        if kpi.seconds is not None and (previous is None or previous.seconds is None):
            metrics.KPI_SECONDS.labels(*key, kpi.name).observe(kpi.seconds)
        if kpi.met is False and (previous is None or previous.met is not False):
            metrics.KPI_MISSED.labels(*key, kpi.name).inc()
            log.info("%s/%s: KPI %s missed its target %s", *key, kpi.name, kpi.target)
