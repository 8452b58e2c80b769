"""`stampede simulate`: replay Prometheus history through the engine to see what a policy would have done.

Tuning thresholds against last week's real stampede is the only honest way to choose `for` windows and
phase timings, and a replay is only worth something if it runs the very code the operator runs. So this
module reads each signal's history with the same Prometheus source, calls the same `decide()` once per
step with `now` set to that step, and plays the operator's caller contract with a perfect actuator:
every change the engine asks for is recorded as applied, every undo removes it. No cluster is read, so
changes are described from the spec (keys and values, scale target, CronJob) rather than from live
objects; mode (DryRun) and `suspend` are honoured exactly as the operator honours them.

It sits at the CLI layer: it may use `api`, `engine` and `sources`, never Kubernetes.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from .api import KIND
from .api.durations import format_duration, parse_duration
from .api.incident import IncidentRecordStatus
from .api.spec import Action, Mode, PolicySpec, StampedePolicyDocument
from .api.status import AppliedChange, PolicyStatus, State, format_time
from .engine import Decision, Event, decide, record_applied, record_undone
from .engine.records import RecordBook, kpi_summary
from .sources.prometheus import Endpoint, PrometheusSource, Reading

__all__ = [
    "IncidentRecord",
    "Replay",
    "SimulateError",
    "SimulatedEvent",
    "load_policy",
    "parse_time",
    "read_history",
    "render_table",
    "replay",
    "rfc3339",
    "summary_lines",
]

MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses range queries of more than 11 000 points per series; longer replays are chunked."""
RANGE_TIMEOUT_FLOOR = 30.0
"""Range queries over hours cost more than one poll's instant query; never give them less than this."""


class SimulateError(Exception):
    """A problem the user must fix (bad file, bad time, no Prometheus URL); printed as is."""


# -- inputs -------------------------------------------------------------------------------------------


def load_policy(path: str) -> tuple[str, PolicySpec]:
    """The `namespace/name` and spec of the first StampedePolicy in a YAML file.

    Validation goes through `stampede lint`, so problems are reported in the same one-line form.
    """
    from .linting import lint_files

    problems = lint_files([path])
    if problems:
        raise SimulateError("\n".join(str(problem) for problem in problems))
    text = Path(path).read_text(encoding="utf-8")
    for document in yaml.safe_load_all(text):
        items = document.get("items") if isinstance(document, dict) and document.get("kind") == "List" else [document]
        for obj in items or []:
            if isinstance(obj, dict) and obj.get("kind") == KIND:
                policy = StampedePolicyDocument.model_validate(obj)
                namespace = policy.metadata.namespace or "default"
                return f"{namespace}/{policy.metadata.name}", policy.spec
    raise SimulateError(f"{path}: no {KIND} document found")


_RELATIVE = re.compile(r"^now\s*(?P<sign>[-+])\s*(?P<duration>\S+)$|^(?P<bare>[-+])(?P<bare_duration>\S+)$")


def parse_time(text: str, *, now: datetime) -> datetime:
    """RFC 3339 (`2026-11-27T10:00:00Z`), `now`, or relative to now (`-1h`, `-90m`, `now-2h30m`)."""
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        sign = match["sign"] or match["bare"]
        duration_text = match["duration"] or match["bare_duration"]
        try:
            offset = parse_duration(duration_text)
        except ValueError as exc:
            raise SimulateError(f"invalid time {text!r}: {exc}") from None
        return now - offset if sign == "-" else now + offset
    try:
        parsed = datetime.fromisoformat(value.replace("Z", "+00:00").replace("z", "+00:00"))
    except ValueError:
        raise SimulateError(f"invalid time {text!r}: use RFC 3339 (2026-11-27T10:00:00Z), now, or -1h") from None
    if parsed.tzinfo is None:
        raise SimulateError(f"invalid time {text!r}: give a time zone, e.g. 2026-11-27T10:00:00Z")
    return parsed.astimezone(UTC)


def rfc3339(value: datetime) -> str:
    """`2026-11-27T10:00:00Z`: UTC, with sub-seconds only when there are some."""
    return format_time(value)


# -- history ------------------------------------------------------------------------------------------

History = list[tuple[datetime, dict[str, float | None], dict[str, str]]]
"""Per step: its time, every signal's value (None = unknown) and the reason of each unknown."""


def read_history(spec: PolicySpec, *, url: str, start: datetime, end: datetime, step: float) -> History:
    """Every signal's value at every step from start to end, as the operator would have read them."""
    timeout = max(spec.prometheus.timeout.total_seconds(), RANGE_TIMEOUT_FLOOR)
    endpoint = Endpoint(url=url)
    chunks: list[tuple[datetime, datetime]] = []
    chunk = timedelta(seconds=step * (MAX_POINTS_PER_QUERY - 1))
    first = start
    while first <= end:
        last = min(first + chunk, end)
        chunks.append((first, last))
        first = last + timedelta(seconds=step)

    async def fetch() -> dict[str, list[tuple[datetime, Reading]]]:
        source = PrometheusSource()
        try:

            async def one(query: str) -> list[tuple[datetime, Reading]]:
                out: list[tuple[datetime, Reading]] = []
                for a, b in chunks:
                    out += await source.read_range(endpoint, query, start=a, end=b, step=step, timeout=timeout)
                return out

            results = await asyncio.gather(*(one(signal.query) for signal in spec.signals))
            return {signal.name: result for signal, result in zip(spec.signals, results, strict=True)}
        finally:
            source.close()

    series = asyncio.run(fetch())
    times = sorted({when for points in series.values() for when, _ in points})
    by_time: dict[datetime, tuple[dict[str, float | None], dict[str, str]]] = {when: ({}, {}) for when in times}
    for name, points in series.items():
        for when, reading in points:
            values, errors = by_time[when]
            values[name] = reading.value
            if reading.value is None:
                errors[name] = reading.error or "unknown"
    history: History = []
    for when in times:
        values, errors = by_time[when]
        for signal in spec.signals:  # a step missing from one signal's answer is unknown for it
            if signal.name not in values:
                values[signal.name] = None
                errors[signal.name] = "no sample at this step"
        history.append((when, values, errors))
    return history


# -- replay -------------------------------------------------------------------------------------------


@dataclass(frozen=True)
class SimulatedEvent:
    """An event the operator would have posted, at the poll it would have posted it."""

    time: datetime
    reason: str
    message: str
    warning: bool = False

    def wire(self) -> dict[str, str]:
        return {"time": rfc3339(self.time), "reason": self.reason, "message": self.message}


@dataclass
class IncidentRecord:
    """One incident of the replay; closed_at is None when it was still open at the end of the window."""

    id: str
    severity: str
    opened_at: datetime
    closed_at: datetime | None = None
    max_phase: str = ""
    escalated: bool = False
    first_change_at: datetime | None = None
    record: IncidentRecordStatus | None = None
    """The StampedeIncident status the operator would have written (timeline, changes, KPIs)."""

    def wire(self) -> dict[str, Any]:
        return {
            "id": self.id,
            "severity": self.severity,
            "openedAt": rfc3339(self.opened_at),
            "closedAt": rfc3339(self.closed_at) if self.closed_at else None,
            "maxPhase": self.max_phase,
            "escalated": self.escalated,
            "kpis": [k.model_dump(mode="json", exclude_none=True) for k in self.record.kpis] if self.record else [],
        }


@dataclass
class Replay:
    """What a policy would have done over a window of history."""

    policy: str
    start: datetime
    end: datetime
    step: float
    mode: Mode
    suspended: bool
    incidents: list[IncidentRecord] = field(default_factory=list)
    events: list[SimulatedEvent] = field(default_factory=list)
    false_opening_threshold: timedelta = timedelta(minutes=5)
    steps: int = 0
    unknown_steps: int = 0
    final_state: State = State.IDLE
    held_at_end: list[AppliedChange] = field(default_factory=list)
    records: RecordBook = field(default_factory=RecordBook)
    """The StampedeIncident records the operator would have written, by incident id."""

    def summary(self) -> dict[str, Any]:
        """Counts and durations a person tuning the policy looks at first."""
        mitigate = [
            (i.first_change_at - i.opened_at).total_seconds() for i in self.incidents if i.first_change_at is not None
        ]
        durations = [((i.closed_at or self.end) - i.opened_at).total_seconds() for i in self.incidents]
        false = [
            i.id
            for i in self.incidents
            if i.closed_at is not None and i.closed_at - i.opened_at < self.false_opening_threshold
        ]
        return {
            "policy": self.policy,
            "from": rfc3339(self.start),
            "to": rfc3339(self.end),
            "stepSeconds": self.step,
            "steps": self.steps,
            "unknownSteps": self.unknown_steps,
            "incidents": len(self.incidents),
            "openAtEnd": sum(1 for i in self.incidents if i.closed_at is None),
            "timeToMitigateSeconds": [int(s) for s in mitigate],
            "timeInIncidentSeconds": int(sum(durations)),
            "falseOpenings": len(false),
            "falseOpeningIds": false,
            "falseOpeningThresholdSeconds": int(self.false_opening_threshold.total_seconds()),
            "changesHeldAtEnd": [c.action for c in self.held_at_end],
        }

    def wire(self) -> dict[str, Any]:
        return {
            "incidents": [i.wire() for i in self.incidents],
            "events": [e.wire() for e in self.events],
            "summary": self.summary(),
        }


def replay(
    spec: PolicySpec,
    history: Sequence[tuple[datetime, Mapping[str, float | None], Mapping[str, str]]],
    *,
    policy: str = "",
    start: datetime | None = None,
    end: datetime | None = None,
    step: float | None = None,
    false_opening_threshold: timedelta = timedelta(minutes=5),
) -> Replay:
    """Run the engine over `history` exactly as the operator's poll loop would, with a perfect actuator."""
    step_seconds = step if step is not None else spec.poll_interval.total_seconds()
    first = start or (history[0][0] if history else datetime.now(UTC))
    last = end or (history[-1][0] if history else first)
    out = Replay(
        policy=policy,
        start=first,
        end=last,
        step=step_seconds,
        mode=spec.mode,
        suspended=spec.suspend,
        false_opening_threshold=false_opening_threshold,
    )
    dry_run = spec.mode == Mode.DRY_RUN
    status = PolicyStatus()
    by_id: dict[str, IncidentRecord] = {}
    for now, readings, errors in history:
        out.steps += 1
        mark = len(out.events)
        if any(readings.get(s.name) is None for s in spec.signals):
            out.unknown_steps += 1
        decision = decide(spec=spec, status=status, readings=readings, now=now, errors=errors)
        status = decision.status
        _track_incidents(status, out, by_id)
        out.events += [SimulatedEvent(now, e.reason, e.message, e.warning) for e in decision.events]
        # The operator's order: engine events, then undos, then applies (see handlers/runner.py).
        for change in decision.undo:
            out.events.append(SimulatedEvent(now, *_undo_event(change, dry_run=dry_run or change in status.planned)))
            status = record_undone(status, change)
        for action in decision.apply:
            incident = decision.incident_id or ""
            change = _change_for(action, incident=incident, now=now)
            out.events.append(SimulatedEvent(now, *_apply_event(action, incident=incident, dry_run=dry_run)))
            status = record_applied(status, change, dry_run=dry_run)
            record = by_id.get(incident)
            if record is not None and record.first_change_at is None:
                record.first_change_at = now
        status = _follow_records(out, spec=spec, decision=decision, after=status, mark=mark, values=readings, now=now)
        if not dry_run and status.state == State.IDLE:
            status = status.model_copy(update={"planned": []})
    out.final_state = status.state
    out.held_at_end = list(status.planned if dry_run else status.applied)
    return out


def _follow_records(
    out: Replay,
    *,
    spec: PolicySpec,
    decision: Decision,
    after: PolicyStatus,
    mark: int,
    values: Mapping[str, float | None],
    now: datetime,
) -> PolicyStatus:
    """Keep the incident records as the operator would (events from `mark` on are this step's)."""
    events = [Event(e.reason, e.message, e.warning) for e in out.events[mark:]]
    name = out.policy.rpartition("/")[2]
    status = out.records.step(
        spec=spec, policy=name, decision=decision, after=after, events=events, values=values, now=now
    )
    for incident in out.incidents:
        incident.record = out.records.all.get(incident.id, incident.record)
    return status


def _track_incidents(status: PolicyStatus, out: Replay, by_id: dict[str, IncidentRecord]) -> None:
    """Keep the incident records in step with the engine's status (its incident and its history)."""
    for entry in status.history:
        record = by_id.get(entry.id)
        if record is not None and record.closed_at is None:
            record.closed_at = entry.closed_at
            record.severity = entry.severity.value
            record.max_phase = entry.max_phase
            record.escalated = entry.escalated
    incident = status.incident
    if incident is None:
        return
    record = by_id.get(incident.id)
    if record is None:
        record = by_id[incident.id] = IncidentRecord(
            id=incident.id, severity=incident.severity.value, opened_at=incident.started_at
        )
        out.incidents.append(record)
    record.severity = incident.severity.value
    record.max_phase = incident.max_phase or incident.phase
    record.escalated = incident.escalated


def _change_for(action: Action, *, incident: str, now: datetime) -> AppliedChange:
    """What a perfect actuator records; originals are unknown without a cluster, so none are invented."""
    if action.config_map is not None:
        applied = dict(action.config_map.data)
    elif action.scale is not None:
        applied = {"replicas": str(action.scale.replicas)}
    else:
        assert action.job is not None
        applied = {"job": f"from CronJob {action.job.from_cron_job}"}
    return AppliedChange(
        action=action.name, kind=action.kind, name=action.target, incident=incident, applied_at=now, applied=applied
    )


def _apply_event(action: Action, *, incident: str, dry_run: bool) -> tuple[str, str]:
    reason = "WouldApply" if dry_run else "ActionApplied"
    if action.config_map is not None:
        keys = ", ".join(f"{k}={v}" for k, v in action.config_map.data.items())
        restart = ", ".join(f"{w.kind.value} {w.name}" for w in action.config_map.restart)
        suffix = f"; restart {restart}" if restart else ""
        return reason, f"Set {keys} in ConfigMap {action.config_map.name} (action {action.name}){suffix}."
    if action.scale is not None:
        s = action.scale
        return reason, (f"Scale {s.kind.value} {s.name} up to at least {s.replicas} replicas (action {action.name}).")
    assert action.job is not None
    return reason, (
        f"Create a Job from CronJob {action.job.from_cron_job} for incident {incident} (action {action.name})."
    )


def _undo_event(change: AppliedChange, *, dry_run: bool) -> tuple[str, str]:
    if change.kind == "Job":
        return "ActionRolledBack", (
            f"Job from CronJob {change.name} (action {change.action}) is left to finish; "
            "it is removed by its ttlSecondsAfterFinished."
        )
    what = ", ".join(change.applied) if change.kind == "ConfigMap" else "replicas"
    verb = "Would roll back" if dry_run else "Rolled back"
    return (
        "WouldApply" if dry_run else "ActionRolledBack",
        f"{verb} action {change.action}: {change.kind} {change.name} {what} restored to the values "
        "before the incident.",
    )


# -- output ---------------------------------------------------------------------------------------------


def _seconds(value: float) -> str:
    return format_duration(timedelta(seconds=value)) if not math.isnan(value) else "-"


def summary_lines(result: Replay) -> list[str]:
    """The summary as `label: value` lines (printed under the table and easy to grep)."""
    s = result.summary()
    mitigate = ", ".join(_seconds(v) for v in s["timeToMitigateSeconds"]) or "-"
    lines = [
        f"Incidents: {s['incidents']}" + (f" ({s['openAtEnd']} still open at the end)" if s["openAtEnd"] else ""),
        f"Time to mitigate (open → first change): {mitigate}",
        f"Time in incident: {_seconds(s['timeInIncidentSeconds'])}",
        f"False openings (closed within {_seconds(s['falseOpeningThresholdSeconds'])}): {s['falseOpenings']}"
        + (f" ({', '.join(s['falseOpeningIds'])})" if s["falseOpeningIds"] else ""),
        f"Steps replayed: {s['steps']} every {_seconds(result.step)}"
        + (f", {s['unknownSteps']} with unknown signals" if s["unknownSteps"] else ""),
    ]
    if result.mode == Mode.DRY_RUN:
        lines.append("Mode DryRun: changes are only planned, as the operator would record them in status.planned.")
    if result.suspended:
        lines.append("spec.suspend is true: incidents are detected but no change and no rollback is made.")
    if s["changesHeldAtEnd"]:
        lines.append(f"Changes still held at the end: {', '.join(s['changesHeldAtEnd'])}")
    return lines


def render_table(result: Replay, *, width: int | None = None) -> str:
    """The timeline as a rich table plus the summary, as text (so the CLI and tests print the same)."""
    from rich.console import Console
    from rich.table import Table

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 160, force_terminal=False, color_system=None)
    title = (
        f"stampede simulate {result.policy}: {rfc3339(result.start)} → {rfc3339(result.end)}, "
        f"step {_seconds(result.step)}"
    )
    table = Table(title=title, show_lines=False, expand=False)
    table.add_column("Time (UTC)", no_wrap=True)
    table.add_column("Reason", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for event in result.events:
        table.add_row(rfc3339(event.time), event.reason, event.message, style="yellow" if event.warning else None)
    if not result.events:
        table.add_row("-", "-", "No incident: the policy would have done nothing in this window.")
    console.print(table)
    if result.incidents:
        incidents = Table(title="Incidents")
        for column in ("ID", "Severity", "Opened", "Closed", "Duration", "Max phase", "Escalated", "KPIs met"):
            incidents.add_column(column, no_wrap=True)
        for i in result.incidents:
            duration = ((i.closed_at or result.end) - i.opened_at).total_seconds()
            incidents.add_row(
                i.id,
                i.severity,
                rfc3339(i.opened_at),
                rfc3339(i.closed_at) if i.closed_at else "(open)",
                _seconds(duration),
                i.max_phase or "-",
                "yes" if i.escalated else "no",
                kpi_summary(i.record.kpis) if i.record else "-",
            )
        console.print(incidents)
    for line in summary_lines(result):
        console.print(line, highlight=False, markup=False)
    return buffer.getvalue()
