"""`stampede simulate`: replay Prometheus history through the engine to see what a policy would have done.

Tuning thresholds against last week's real stampede is the only honest way to choose `for` windows and
phase timings, and a replay is only worth something if it runs the very code the operator runs. So this
module reads each signal's history with the same Prometheus source, calls the same `decide()` once per
step with `now` set to that step, and carries each decision out through the operator's own `execute`
with a perfect in-memory actuator: every change succeeds and is worded by the same sentences the
operator posts. No cluster is read, so the current values of targets are unknown and none are
invented ("restored to the values before the incident"); mode (DryRun) and `suspend` are honoured
exactly as the operator honours them.

It sits at the CLI layer: it may use `api`, `engine`, `executing`, `sources` and the in-memory
actuator, never Kubernetes.
"""

from __future__ import annotations

import asyncio
import io
import math
import re
from collections.abc import Iterator, Mapping, Sequence
from dataclasses import dataclass, field
from datetime import UTC, datetime, timedelta
from pathlib import Path
from typing import Any

import yaml

from .actuators.memory import MemoryActuator
from .api import KIND
from .api.durations import format_duration
from .api.incident import IncidentRecordStatus
from .api.spec import Mode, PolicySpec, StampedePolicyDocument
from .api.status import AppliedChange, PolicyStatus, State, format_time
from .engine import Decision, Event, decide
from .engine.outcomes import Step
from .engine.records import RecordBook, kpi_summary
from .executing import execute, read_rollouts
from .sources.prometheus import Endpoint, PrometheusSource, Reading

__all__ = [
    "IncidentRecord",
    "Replay",
    "SimulateError",
    "SimulatedEvent",
    "load_policy",
    "parse_cli_duration",
    "parse_time",
    "read_history",
    "render_table",
    "replay",
    "rfc3339",
    "summary_lines",
]

MAX_POINTS_PER_QUERY = 10_000
"""Prometheus refuses range queries of more than 11 000 points per series; longer replays are chunked."""
DEFAULT_MAX_REPLICAS = 50
"""The operator's default STAMPEDE_MAX_REPLICAS: a replay caps scale-ups as a default install would."""
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


# Prometheus's duration units (`7d`, `2w`, `1y`) as well as Go's, for the CLI's times only: what a policy
# accepts stays the Go form the CRD validates, so `--from -7d` works without `after: 7d` becoming valid.
_CLI_PART = re.compile(r"([0-9]+(?:\.[0-9]+)?)(ms|s|m|h|d|w|y)")
_CLI_DURATION = re.compile(r"^(0|([0-9]+(\.[0-9]+)?(ms|s|m|h|d|w|y))+)$")
_CLI_UNIT_SECONDS = {"ms": 0.001, "s": 1.0, "m": 60.0, "h": 3600.0, "d": 86400.0, "w": 604800.0, "y": 31536000.0}
MAX_CLI_DURATION = timedelta(days=10 * 365)
"""Far beyond any Prometheus retention; keeps `now - offset` clear of datetime's range."""


def parse_cli_duration(text: str) -> timedelta:
    """A duration given on the command line: Go units plus Prometheus's `d`, `w` and `y` (`7d`, `2w`, `1h30m`)."""
    value = text.strip()
    if not _CLI_DURATION.match(value):
        raise ValueError(f"invalid duration {text!r}: use units such as 30s, 15m, 1h30m, 7d or 2w")
    seconds = sum(float(number) * _CLI_UNIT_SECONDS[unit] for number, unit in _CLI_PART.findall(value))
    if seconds > MAX_CLI_DURATION.total_seconds():
        raise ValueError(f"duration {text!r} is longer than the maximum {MAX_CLI_DURATION.days}d")
    return timedelta(seconds=seconds)


_RELATIVE = re.compile(r"^now\s*(?P<sign>[-+])\s*(?P<duration>\S+)$|^(?P<bare>[-+])(?P<bare_duration>\S+)$")


def parse_time(text: str, *, now: datetime) -> datetime:
    """RFC 3339 (`2026-11-27T10:00:00Z`), `now`, or relative to now (`-1h`, `-7d`, `now-2h30m`)."""
    value = text.strip()
    if value == "now":
        return now
    match = _RELATIVE.match(value)
    if match:
        sign = match["sign"] or match["bare"]
        duration_text = match["duration"] or match["bare_duration"]
        try:
            offset = parse_cli_duration(duration_text)
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
    timeout = max(spec.query_timeout.total_seconds(), RANGE_TIMEOUT_FLOOR)
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
    errors: list[str] = field(default_factory=list)
    """Every distinct reason a signal was unknown, in the order first seen (each once)."""
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
            "errors": list(self.errors),
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
    max_replicas: int = DEFAULT_MAX_REPLICAS,
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
    actuator = MemoryActuator(policy=policy.rpartition("/")[2], max_replicas=max_replicas)
    status = PolicyStatus()
    by_id: dict[str, IncidentRecord] = {}
    wake: list[datetime | None] = [None]
    for now, readings, errors, sampled in _evaluations(history, wake=wake, end=last):
        mark = len(out.events)
        if sampled:
            out.steps += 1
            if any(readings.get(s.name) is None for s in spec.signals):
                out.unknown_steps += 1
            out.errors += [error for error in dict.fromkeys(errors.values()) if error not in out.errors]
        # A replay's memory actuator reports every rollout complete: no cluster is there to wait for.
        rollouts = read_rollouts(status, actuator)
        decision = decide(spec=spec, status=status, readings=readings, now=now, errors=errors, rollouts=rollouts)
        wake[0] = decision.wake_at
        _track_incidents(decision.status, out, by_id)
        out.events += [SimulatedEvent(now, e.reason, e.message, e.warning) for e in decision.events]
        # The operator's own caller: undos, applies and their sentences, in the operator's order.
        execution = execute(decision, actuator, spec=spec, now=now)
        for done in execution.done:
            outcome = done.outcome
            out.events.append(SimulatedEvent(now, outcome.reason, outcome.message, outcome.warning or not outcome.ok))
            record = by_id.get(decision.incident_id or "")
            if done.step == Step.APPLY and outcome.ok and record is not None and record.first_change_at is None:
                record.first_change_at = now
        status = _follow_records(
            out, spec=spec, decision=decision, after=execution.status, mark=mark, values=readings, now=now
        )
    out.final_state = status.state
    out.held_at_end = list(status.planned if spec.mode == Mode.DRY_RUN else status.applied)
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


MAX_WAKES_PER_STEP = 1000
"""A bound on engine calls between two samples, so an engine asking to be called again at once cannot spin."""


def _evaluations(
    history: Sequence[tuple[datetime, Mapping[str, float | None], Mapping[str, str]]],
    *,
    wake: list[datetime | None],
    end: datetime,
) -> Iterator[tuple[datetime, Mapping[str, float | None], Mapping[str, str], bool]]:
    """Each sample, then the times the engine asked to be woken before the next one, as the operator does.

    The operator polls on its interval but also wakes at `Decision.wake_at` (a phase's `after`, the next
    rollback step, the end of a `for` window). Replaying only the samples would stretch those durations to
    the `--step` grid (a 30s stepDelay replayed every 1m); so between samples the engine is called again at
    each wake time, with the last sample's values held. `wake` is a cell the caller fills after each call;
    the flag says whether the evaluation is a sample (counted in the summary) or a wake.
    """
    for index, (when, readings, errors) in enumerate(history):
        yield when, readings, errors, True
        bound = history[index + 1][0] if index + 1 < len(history) else end
        now = when
        for _ in range(MAX_WAKES_PER_STEP):
            at = wake[0]
            if at is None or at >= bound:
                break
            now = max(at, now)
            yield now, readings, errors, False


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
    lines += [f"Signals unknown because: {error}" for error in s["errors"]]
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
    from rich.text import Text

    from .sources.readings import printable

    def cell(value: str) -> Text:
        # Plain Text, never markup: a "[/oops]" from Prometheus is shown as written, not parsed.
        return Text(printable(value))

    buffer = io.StringIO()
    console = Console(file=buffer, width=width or 160, force_terminal=False, color_system=None)
    title = (
        f"stampede simulate {result.policy}: {rfc3339(result.start)} → {rfc3339(result.end)}, "
        f"step {_seconds(result.step)}"
    )
    table = Table(title=cell(title), show_lines=False, expand=False)
    table.add_column("Time (UTC)", no_wrap=True)
    table.add_column("Reason", no_wrap=True)
    table.add_column("Message", overflow="fold")
    for event in result.events:
        table.add_row(
            rfc3339(event.time), cell(event.reason), cell(event.message), style="yellow" if event.warning else None
        )
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
                *map(
                    cell,
                    (
                        i.id,
                        i.severity,
                        rfc3339(i.opened_at),
                        rfc3339(i.closed_at) if i.closed_at else "(open)",
                        _seconds(duration),
                        i.max_phase or "-",
                        "yes" if i.escalated else "no",
                        kpi_summary(i.record.kpis) if i.record else "-",
                    ),
                )
            )
        console.print(incidents)
    for line in summary_lines(result):
        console.print(printable(line), highlight=False, markup=False)
    return buffer.getvalue()
