"""Incident records and the runbook's KPIs, built from what one poll decided and did.

Pure, like the rest of the engine: the operator (after acting) and `stampede simulate` (after
replaying) hand over the policy's status before and after the poll's changes, the poll's events and
the signal values, and get back the records of the incidents that poll touched. No clock is read
and nothing is written; the caller stores records as `StampedeIncident` objects (or keeps them in
memory for a report).

KPIs are measured from `firstBreachAt`, the start of the breach window that opened the incident,
because the runbook's clock starts when users start suffering, not when a `for` window is full:
- detection → the incident opened;
- mitigation → every action of the first phase applied (or failed for good: still failing when
  recovery is confirmed);
- stabilization → the recovery conditions first held;
- mttr → recovery confirmed (`RecoveryStarted`);
- fullRecovery → the incident closed.
A KPI keeps the first value it measured, so a record survives an operator restart unchanged; a KPI
whose target has passed is `met: false` at once (an open incident can already have missed it).
"""

from __future__ import annotations

import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import datetime, timedelta

from ..api.conditions import Condition
from ..api.durations import format_duration
from ..api.incident import (
    MAX_CHANGES,
    MAX_NOTIFICATIONS,
    MAX_PEAKS,
    MAX_TIMELINE,
    MAX_VALUE,
    ChangeOutcome,
    ChangeRecord,
    EscalationRecord,
    IncidentRecordStatus,
    NotificationRecord,
    Peak,
    PhaseRecord,
    RecordState,
    TimelineEntry,
    cut,
)
from ..api.spec import Mode, PolicySpec, Severity
from ..api.status import KPI, AppliedChange, HistoryEntry, IncidentStatus, PolicyStatus, State
from .decide import Decision, Event
from .digests import shown

KPI_NAMES = ("detection", "mitigation", "stabilization", "mttr", "fullRecovery")
"""In the order the milestones are normally reached."""
NEAR_MISS_MARGIN = 0.10
"""A condition that came within 10 % of its threshold without holding is a near miss."""


def kpi_targets(spec: PolicySpec) -> dict[str, timedelta]:
    t = spec.targets
    return {
        "detection": t.detection,
        "mitigation": t.mitigation,
        "stabilization": t.stabilization,
        "mttr": t.mttr,
        "fullRecovery": t.full_recovery,
    }


# -- building records -----------------------------------------------------------------------------


def new_record(*, spec: PolicySpec, policy: str, status: PolicyStatus, now: datetime) -> IncidentRecordStatus:
    """The record of the incident in `status`, as it opens (or as first seen, after a restart lost it)."""
    incident = status.incident
    assert incident is not None
    windows = [b.since for b in status.breaching if b.level == incident.severity]
    first_breach = min([*windows, incident.started_at]) if windows else incident.started_at
    return IncidentRecordStatus(
        policy=policy,
        severity=incident.severity,
        started_at=incident.started_at,
        first_breach_at=first_breach,
        dry_run=spec.mode == Mode.DRY_RUN,
        kpis=_kpis_pending(spec),
    )


def follow(
    records: Mapping[str, IncidentRecordStatus],
    *,
    spec: PolicySpec,
    policy: str,
    decided: PolicyStatus,
    after: PolicyStatus,
    events: Sequence[Event],
    attempted: Sequence[str] = (),
    values: Mapping[str, float | None],
    now: datetime,
) -> dict[str, IncidentRecordStatus]:
    """The records one poll touched, by incident id.

    `records` are the open records the caller holds; `decided` is the engine's status, `after` the
    status once the poll's changes were made and recorded; `events` every event of the poll (the
    engine's and the actions' outcomes), in order; `attempted` the actions the engine asked to apply.
    A record absent from the result did not change; one whose state is `Closed` is final.
    """
    incident = decided.incident
    closing = [rid for rid in records if incident is None or rid != incident.id]
    opened_at = next((i for i, e in enumerate(events) if e.reason == "IncidentOpened"), None)
    if closing and incident is not None and opened_at is not None:
        old_events, new_events = list(events[:opened_at]), list(events[opened_at:])
    elif closing and incident is None:
        old_events, new_events = list(events), []
    else:
        old_events, new_events = [], list(events)

    out: dict[str, IncidentRecordStatus] = {}
    for rid in closing:
        entry = next((h for h in decided.history if h.id == rid), None)
        record = _append_timeline(records[rid], old_events, now=now)
        out[rid] = close_record(record, spec=spec, entry=entry, now=now)
    if incident is None:
        return out
    record = records.get(incident.id) or new_record(spec=spec, policy=policy, status=decided, now=now)
    record = _append_timeline(record, new_events, now=now)
    record = _track_incident(record, spec=spec, incident=incident, state=decided.state, now=now)
    record = _track_escalations(record, spec=spec, incident=incident, events=new_events, now=now)
    record = _track_changes(
        record,
        decided=decided,
        after=after,
        attempted=attempted,
        events=new_events,
        now=now,
        targets={a.name: (a.kind, a.target) for _, a in spec.actions()},
    )
    record = _track_peaks(record, spec=spec, values=values, now=now)
    stabilized = incident.recovering_since
    record = record.model_copy(update={"kpis": measure_kpis(record, spec=spec, now=now, stabilized_at=stabilized)})
    record = _with_mttr(record)
    if record != records.get(incident.id):
        out[incident.id] = record
    return out


def close_record(
    record: IncidentRecordStatus, *, spec: PolicySpec, entry: HistoryEntry | None, now: datetime
) -> IncidentRecordStatus:
    """The record made final: closed at the history entry's time (or now), every KPI decided."""
    closed_at = entry.closed_at if entry is not None else now
    update: dict[str, object] = {"state": RecordState.CLOSED, "closed_at": closed_at}
    if entry is not None:
        update["severity"] = entry.severity
        if entry.recovered_at is not None:
            update["recovered_at"] = entry.recovered_at
    record = record.model_copy(update=update)
    record = record.model_copy(update={"kpis": measure_kpis(record, spec=spec, now=now)})
    return _with_mttr(record)


def note_notification(
    record: IncidentRecordStatus, *, target: str, event: str, ok: bool, at: datetime
) -> IncidentRecordStatus:
    """The record with one more notification attempt (the oldest dropped beyond the limit)."""
    notes = [*record.notifications, NotificationRecord(target=cut(target, 63), event=event, at=at, ok=ok)]
    return record.model_copy(update={"notifications": notes[-MAX_NOTIFICATIONS:]})


def with_history_kpis(status: PolicyStatus, record: IncidentRecordStatus, incident: str) -> PolicyStatus:
    """The policy status whose history entry for `incident` carries the record's KPIs."""
    history = [
        h.model_copy(update={"kpis": list(record.kpis)}) if h.id == incident and h.kpis != record.kpis else h
        for h in status.history
    ]
    if history == status.history:
        return status
    return status.model_copy(update={"history": history})


def _append_timeline(record: IncidentRecordStatus, events: Sequence[Event], *, now: datetime) -> IncidentRecordStatus:
    if not events:
        return record
    added = [TimelineEntry(time=now, reason=e.reason, message=cut(e.message)) for e in events]
    return record.model_copy(update={"timeline": [*record.timeline, *added][-MAX_TIMELINE:]})


def _track_incident(
    record: IncidentRecordStatus, *, spec: PolicySpec, incident: IncidentStatus, state: State, now: datetime
) -> IncidentRecordStatus:
    furthest = incident.max_phase or incident.phase
    names = [p.name for p in spec.phases]
    reached = names[: names.index(furthest) + 1] if furthest in names else []
    known = {p.name for p in record.phases}
    phases = [*record.phases, *(PhaseRecord(name=n, entered_at=now) for n in reached if n not in known)]
    severity = incident.severity if incident.severity.rank > record.severity.rank else record.severity
    return record.model_copy(
        update={
            "state": RecordState.ROLLING_BACK if state == State.ROLLING_BACK else RecordState.OPEN,
            "severity": severity,
            "phase": furthest or record.phase,
            "phases": phases,
            "recovered_at": incident.recovered_at or record.recovered_at,
        }
    )


def _track_escalations(
    record: IncidentRecordStatus, *, spec: PolicySpec, incident: IncidentStatus, events: Sequence[Event], now: datetime
) -> IncidentRecordStatus:
    level = incident.escalation_level or ("escalated" if incident.escalated else "")
    if not level:
        return record
    chain = [lv.name for lv in spec.escalation.chain()]
    reached = chain[: chain.index(level) + 1] if level in chain else [level]
    known = {e.level for e in record.escalations}
    reasons = [e.message for e in events if e.reason == "Escalated"]
    added: list[EscalationRecord] = []
    for name in reached:
        if name in known:
            continue
        reason = next((m for m in reasons if f"level {name}" in m), reasons[0] if reasons else "")
        if reason in reasons:
            reasons.remove(reason)
        # The first level's time is the incident's own record of it (exact across restarts); later ones are
        # reached at the poll that reports them.
        first = not record.escalations and not added
        at = incident.escalated_at if first and incident.escalated_at is not None else now
        added.append(EscalationRecord(level=name, at=at, reason=cut(reason)))
    if not added:
        return record
    return record.model_copy(update={"escalations": [*record.escalations, *added], "escalation_level": level})


def _values(values: Mapping[str, str | None]) -> dict[str, str]:
    return {key: cut(shown(value), MAX_VALUE) if value is not None else "(absent)" for key, value in values.items()}


def describe_change(change: AppliedChange, *, after: str | None = None) -> str:
    """`key: before → during[ → after]` per value changed, values cut to a readable length."""
    before = _values(change.original)
    during = _values(dict(change.applied))
    parts = []
    for key, value in during.items():
        text = f"{key}: {before.get(key, '(absent)')} → {value}"
        if after == "restored":
            text += f" → {before.get(key, '(absent)')}"
        elif after is not None:
            text += f" → {after}"
        parts.append(text)
    return cut("; ".join(parts) or f"{change.kind} {change.name}")


def _mentions(message: str, action: str) -> bool:
    return re.search(rf"\baction {re.escape(action)}\b", message, flags=re.IGNORECASE) is not None


def _track_changes(
    record: IncidentRecordStatus,
    *,
    decided: PolicyStatus,
    after: PolicyStatus,
    attempted: Sequence[str],
    events: Sequence[Event],
    now: datetime,
    targets: Mapping[str, tuple[str, str]],
) -> IncidentRecordStatus:
    changes = list(record.changes)
    planned_after = {c.action for c in after.planned}
    held_before = {c.action: c for c in decided.applied + decided.planned}
    held_after = {c.action: c for c in after.applied + after.planned}

    def latest(action: str) -> int | None:
        return next((i for i in range(len(changes) - 1, -1, -1) if changes[i].action == action), None)

    for action, change in held_after.items():
        outcome = ChangeOutcome.PLANNED if action in planned_after else ChangeOutcome.APPLIED
        index = latest(action)
        current = changes[index] if index is not None else None
        if current is not None and current.outcome == outcome and current.applied_at == change.applied_at:
            continue
        if current is not None and current.outcome in (ChangeOutcome.ROLLED_BACK, ChangeOutcome.SKIPPED):
            index = None  # applied again after an earlier rollback: a new line
        entry = ChangeRecord(
            action=action,
            kind=change.kind,
            name=change.name,
            applied_at=change.applied_at,
            outcome=outcome,
            message=describe_change(change),
        )
        if index is None:
            changes.append(entry)
        else:
            changes[index] = entry
    for action, change in held_before.items():
        if action in held_after:
            continue
        index = latest(action)
        skipped = next((e for e in events if e.reason == "RollbackSkipped" and _mentions(e.message, action)), None)
        if skipped is not None:
            entry = ChangeRecord(
                action=action,
                kind=change.kind,
                name=change.name,
                applied_at=change.applied_at,
                rolled_back_at=now,
                outcome=ChangeOutcome.SKIPPED,
                message=cut(f"{describe_change(change)}; rollback skipped: {skipped.message}"),
            )
        else:
            left = "left to finish" if change.kind == "Job" else "restored"
            entry = ChangeRecord(
                action=action,
                kind=change.kind,
                name=change.name,
                applied_at=change.applied_at,
                rolled_back_at=now,
                outcome=ChangeOutcome.ROLLED_BACK,
                message=describe_change(change, after=left),
            )
        if index is None:
            changes.append(entry)
        else:
            changes[index] = entry
    for action in attempted:
        if action in held_after:
            continue
        index = latest(action)
        current = changes[index] if index is not None else None
        why = next(
            (e.message for e in events if e.reason in ("ActionFailed", "Conflict") and _mentions(e.message, action)),
            "not applied",
        )
        first_failed = current.applied_at if current is not None and current.outcome == ChangeOutcome.FAILED else now
        kind, name = targets.get(action, ("", ""))
        entry = ChangeRecord(
            action=action,
            kind=current.kind if current is not None and current.kind else kind,
            name=current.name if current is not None and current.name else name,
            applied_at=first_failed,
            outcome=ChangeOutcome.FAILED,
            message=cut(why),
        )
        if current is not None and current.outcome == ChangeOutcome.FAILED:
            changes[index] = entry  # type: ignore[index]
        else:
            changes.append(entry)
    if changes == record.changes:
        return record
    return record.model_copy(update={"changes": changes[-MAX_CHANGES:]})


def worse_is_lower(spec: PolicySpec, signal: str) -> bool:
    """Whether a lower value of `signal` is worse (its severity conditions fire below a threshold)."""
    ops = [c.op for s in spec.severities for c in s.parsed() if c.signal == signal]
    return bool(ops) and all(op in ("<", "<=") for op in ops)


def _track_peaks(
    record: IncidentRecordStatus, *, spec: PolicySpec, values: Mapping[str, float | None], now: datetime
) -> IncidentRecordStatus:
    peaks = {p.signal: p for p in record.peaks}
    changed = False
    for name, value in values.items():
        if value is None:
            continue
        known = peaks.get(name)
        lower = worse_is_lower(spec, name)
        if known is None or (value < known.value if lower else value > known.value):
            if known is None and len(peaks) >= MAX_PEAKS:
                continue
            peaks[name] = Peak(signal=name, value=value, at=now)
            changed = True
    if not changed:
        return record
    return record.model_copy(update={"peaks": list(peaks.values())})


@dataclass
class RecordBook:
    """Records kept in memory across a sequence of polls: the operator's bookkeeping without a cluster.

    `stampede simulate` and the tests use it; the operator does the same with StampedeIncident objects.
    """

    open: dict[str, IncidentRecordStatus] = field(default_factory=dict)
    """Records of incidents not yet closed."""
    all: dict[str, IncidentRecordStatus] = field(default_factory=dict)
    """Every record, by incident id, in the order the incidents opened."""

    def step(
        self,
        *,
        spec: PolicySpec,
        policy: str,
        decision: Decision,
        after: PolicyStatus,
        events: Sequence[Event],
        values: Mapping[str, float | None],
        now: datetime,
    ) -> PolicyStatus:
        """Follow one poll; returns `after` with the KPIs of an incident closed in it in its history entry."""
        touched = follow(
            self.open,
            spec=spec,
            policy=policy,
            decided=decision.status,
            after=after,
            events=events,
            attempted=[a.name for a in decision.apply],
            values=values,
            now=now,
        )
        for rid, record in touched.items():
            self.all[rid] = record
            if record.state == RecordState.CLOSED:
                self.open.pop(rid, None)
                after = with_history_kpis(after, record, rid)
            else:
                self.open[rid] = record
        return after


def kpi_summary(kpis: Sequence[KPI]) -> str:
    """`3/5` KPIs met, or `-` while none is decided."""
    decided = [k for k in kpis if k.met is not None]
    return f"{sum(1 for k in decided if k.met)}/{len(kpis)}" if decided else "-"


# -- KPIs -----------------------------------------------------------------------------------------


def _kpis_pending(spec: PolicySpec) -> list[KPI]:
    return [KPI(name=name, target=format_duration(target)) for name, target in kpi_targets(spec).items()]


def _first_phase_actions(spec: PolicySpec, severity: Severity) -> list[str]:
    return [a.name for a in spec.phases[0].actions if severity.at_least(a.min_severity)]


def _mitigated_at(record: IncidentRecordStatus, spec: PolicySpec) -> datetime | None:
    wanted = _first_phase_actions(spec, record.severity)
    if not wanted:
        return record.phases[0].entered_at if record.phases else None
    settled: list[datetime] = []
    for action in wanted:
        entries = [c for c in record.changes if c.action == action and c.applied_at is not None]
        done = [c for c in entries if c.outcome != ChangeOutcome.FAILED]
        if done:
            settled.append(min(c.applied_at for c in done if c.applied_at is not None))
        elif entries and record.state != RecordState.OPEN:
            # Still failing once recovery is confirmed: failed for good, counted at its first failure.
            settled.append(min(c.applied_at for c in entries if c.applied_at is not None))
        else:
            return None
    return max(settled)


def measure_kpis(
    record: IncidentRecordStatus, *, spec: PolicySpec, now: datetime, stabilized_at: datetime | None = None
) -> list[KPI]:
    """Every KPI of the record: measured once reached, `met: false` as soon as its target has passed."""
    milestones: dict[str, datetime | None] = {
        "detection": record.started_at,
        "mitigation": _mitigated_at(record, spec),
        "stabilization": stabilized_at or record.recovered_at,
        "mttr": record.recovered_at,
        "fullRecovery": record.closed_at,
    }
    out = []
    for name, target in kpi_targets(spec).items():
        known = record.kpi(name)
        if known is not None and known.seconds is not None:
            out.append(known)
            continue
        reached = milestones[name]
        target_text = format_duration(target)
        if reached is not None:
            seconds = round(max(0.0, (reached - record.first_breach_at).total_seconds()), 1)
            out.append(KPI(name=name, seconds=seconds, target=target_text, met=seconds <= target.total_seconds()))
        elif record.state == RecordState.CLOSED or now - record.first_breach_at > target:
            out.append(KPI(name=name, target=target_text, met=False))
        else:
            out.append(KPI(name=name, target=target_text))
    return out


def _with_mttr(record: IncidentRecordStatus) -> IncidentRecordStatus:
    mttr = record.kpi("mttr")
    text = format_duration(timedelta(seconds=int(mttr.seconds))) if mttr and mttr.seconds is not None else ""
    return record if text == record.mttr else record.model_copy(update={"mttr": text})


def finish(record: IncidentRecordStatus) -> IncidentRecordStatus:
    """The record with its derived columns (MTTR) brought up to date."""
    return _with_mttr(record)


# -- near misses ----------------------------------------------------------------------------------


@dataclass(frozen=True)
class NearMiss:
    """A severity condition that came within 10 % of its threshold without ever holding."""

    level: str
    condition: str
    value: float
    at: datetime
    threshold: float

    @property
    def margin(self) -> float:
        """How far from the threshold, as a fraction of it."""
        return abs(self.value - self.threshold) / abs(self.threshold) if self.threshold else abs(self.value)


def _close_to(condition: Condition, value: float) -> bool:
    reach = abs(condition.threshold) * NEAR_MISS_MARGIN if condition.threshold else NEAR_MISS_MARGIN
    return abs(value - condition.threshold) <= reach * (1 + 1e-9)  # 0.55 vs 0.5 is within 10 % despite binary floats


def near_misses(spec: PolicySpec, series: Mapping[str, Sequence[tuple[datetime, float | None]]]) -> list[NearMiss]:
    """Conditions of every severity that came within 10 % of their threshold and never held in `series`.

    These are the thresholds the runbook's "update thresholds" task is about: a stampede that almost
    fired a level, or fired a milder one while a stricter level stayed quiet.
    """
    out: list[NearMiss] = []
    for severity in spec.severities:
        for condition in severity.parsed():
            points = [(t, v) for t, v in series.get(condition.signal, ()) if v is not None]
            if not points or any(condition.holds(v) for _, v in points):
                continue
            close = [(t, v) for t, v in points if _close_to(condition, v)]
            if not close:
                continue
            when, value = min(close, key=lambda p: abs(p[1] - condition.threshold))
            out.append(
                NearMiss(
                    level=severity.level.value,
                    condition=condition.text,
                    value=value,
                    at=when,
                    threshold=condition.threshold,
                )
            )
    return out


__all__ = [
    "KPI_NAMES",
    "NearMiss",
    "RecordBook",
    "close_record",
    "describe_change",
    "finish",
    "follow",
    "kpi_summary",
    "kpi_targets",
    "measure_kpis",
    "near_misses",
    "new_record",
    "note_notification",
    "with_history_kpis",
    "worse_is_lower",
]
